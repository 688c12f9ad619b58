#!/usr/bin/env bash
# Stops the cluster that scripts/slurm/start.sh DIR started: cancels every job and waits for
# the queue to empty first (daemons killed under running jobs leave slurmstepd and the jobs'
# processes behind), then ends the daemons by the PIDs in DIR. DIR itself is left in place.
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: $0 STATE_DIR" >&2; exit 2; }
T=$(cd "$1" && pwd) || exit 1
export SLURM_CONF=$T/slurm.conf
if [ -f "$T/slurmctld.pid" ] && kill -0 "$(cat "$T/slurmctld.pid")" 2>/dev/null; then
    scancel --full --quiet --user="$(id -un)" 2>/dev/null
    for _ in $(seq 150); do
        [ -z "$(squeue -h 2>/dev/null)" ] && break
        sleep 0.2
    done
fi
for daemon in slurmd slurmctld munged; do
    pidfile=$T/$daemon.pid
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$pidfile"
done
echo "[slurm] stopped ($T)"
