#!/usr/bin/env bash
# Starts a single-node Slurm cluster on this machine from Debian's packages (munge, slurmctld,
# slurmd; no systemd, no cgroups), all state in DIR, for testing `toolkit sweep --backend slurm`
# against a real Slurm. Needs root (the daemons run as SlurmUser=root) and the packages:
#   apt-get install -y --no-install-recommends slurmctld slurmd
# Usage: scripts/slurm/start.sh DIR     then   export SLURM_CONF=DIR/slurm.conf
# Stop with scripts/slurm/stop.sh DIR. Ports 16817/16818 are fixed: one cluster at a time.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 STATE_DIR" >&2; exit 2; }
for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || { echo "$0: $tool not found (apt-get install slurmctld slurmd)" >&2; exit 1; }
done
mkdir -p "$1"
T=$(cd "$1" && pwd)
chmod 755 "$T"   # munged refuses a socket in a 700 directory
mkdir -p "$T/state" "$T/spool"
H=$(hostname -s)
NCPU=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
if [ ! -f "$T/munge.key" ]; then
    head -c 1024 /dev/urandom > "$T/munge.key"
    chmod 400 "$T/munge.key"
fi
cat > "$T/slurm.conf" <<CONF
ClusterName=test
SlurmctldHost=$H(127.0.0.1)
SlurmUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$T/munge.sock,cred_expire=5
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$T/jobcomp.log
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerParameters=batch_sched_delay=0,bf_interval=1,sched_interval=1
DependencyParameters=kill_invalid_depend
NodeName=$H NodeAddr=127.0.0.1 CPUs=$NCPU Sockets=1 CoresPerSocket=$NCPU ThreadsPerCore=1 RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$T/slurm.conf
munged -f --key-file="$T/munge.key" --socket="$T/munge.sock" --pid-file="$T/munged.pid" \
    --log-file="$T/munged.log" --seed-file="$T/munged.seed"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do
    if [ "$(sinfo -h -n "$H" -o %t 2>/dev/null)" = idle ]; then
        echo "[slurm] up: node $H, $NCPU CPUs, $MEM MiB; export SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.2
done
echo "$0: the node did not become idle in 20 s; logs in $T" >&2
exit 1
