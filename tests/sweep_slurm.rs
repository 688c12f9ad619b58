//! `toolkit sweep --backend slurm` against a real single-node Slurm (scripts/slurm/start.sh):
//! four runs of the tiny model as sbatch arrays (train, score after each training task, report
//! after all), one training task requeued mid-training, and the same weights, metrics and
//! tables as the local backend. Skips with a message where Slurm is not installed or the test
//! is not root (scripts/test.sh installs it as root, as CI runs it).
#![cfg(feature = "train")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The cluster, stopped again when the test ends, passed or not.
struct Cluster {
    state: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Self {
        let state = tempfile::tempdir().unwrap();
        let status = Command::new(common::repo().join("scripts/slurm/start.sh")).arg(state.path()).status().unwrap();
        assert!(status.success(), "scripts/slurm/start.sh failed; logs in {}", state.path().display());
        Self { state }
    }

    fn conf(&self) -> PathBuf {
        self.state.path().join("slurm.conf")
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.env("SLURM_CONF", self.conf());
        command
    }

    fn output(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(common::repo().join("scripts/slurm/stop.sh")).arg(self.state.path()).status();
    }
}

fn slurm_available() -> bool {
    let found = ["munged", "slurmctld", "slurmd", "sbatch"]
        .iter()
        .all(|tool| Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success()));
    if !found {
        eprintln!("skipped: Slurm is not installed (apt-get install slurmctld slurmd; scripts/test.sh does it)");
        return false;
    }
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        eprintln!("skipped: the single-node Slurm of scripts/slurm/start.sh runs its daemons as root");
    }
    root
}

fn step(run: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(run.join("last/trainer_state.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?.get("step")?.as_u64()
}

#[test]
fn a_slurm_sweep_with_a_requeued_task_matches_the_local_backend() {
    if !slurm_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    common::tiny::write_model_and_data(root);
    // 40 epochs of 6 updates, a checkpoint after each: long enough to requeue mid-training.
    let on_slurm = common::tiny::write_sweep(root, "slurm", 40, "");
    let here = common::tiny::write_sweep(root, "local", 40, "");
    let cluster = Cluster::start();
    let exe = env!("CARGO_BIN_EXE_toolkit");

    let dry = cluster.output(exe, &["sweep", "run", on_slurm.to_str().unwrap(), "--backend", "slurm", "--dry-run"]);
    assert!(dry.contains("#SBATCH --array=0-3%2") && dry.contains("--dependency=aftercorr:TRAIN_JOB"), "{dry}");
    let submitted = cluster.output(exe, &["sweep", "run", on_slurm.to_str().unwrap(), "--backend", "slurm"]);
    assert!(submitted.contains("submitted report"), "{submitted}");
    let jobs: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("slurm/slurm/jobs.json")).unwrap()).unwrap();
    let train = jobs["train"].as_str().unwrap().to_string();

    // Requeue run 0 once it has checkpointed a few updates of its 240.
    let run0 = root.join("slurm/runs/tiny-standard-s1");
    let started = Instant::now();
    let requeued_at = loop {
        assert!(started.elapsed() < Duration::from_secs(120), "run 0 never checkpointed mid-training");
        if let Some(s) = step(&run0) {
            if s >= 5 {
                assert!(s < 200, "run 0 got too far ({s} updates) before the requeue");
                let out = cluster.output("scontrol", &["requeue", &format!("{train}_0")]);
                assert!(out.trim().is_empty(), "scontrol requeue: {out}");
                break s;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };

    let report = root.join("slurm/report/tables.md");
    let started = Instant::now();
    while !(report.is_file() && cluster.output("squeue", &["-h"]).trim().is_empty()) {
        assert!(started.elapsed() < Duration::from_secs(300), "the sweep did not finish: {}", cluster.output("squeue", &[]));
        std::thread::sleep(Duration::from_millis(500));
    }
    let status = cluster.output(exe, &["sweep", "status", on_slurm.to_str().unwrap()]);
    assert!(status.contains("4 runs: 4 done"), "{status}");
    let log = std::fs::read_to_string(root.join("slurm/logs/tiny-standard-s1.train.log")).unwrap();
    assert!(log.contains("restart 0") && log.contains("restart 1"), "run 0 ran twice: {log}");
    eprintln!("requeued run 0 after {requeued_at} updates");

    let local = Command::new(exe).args(["sweep", "run", here.to_str().unwrap(), "--backend", "local", "--jobs", "2"]).output().unwrap();
    assert!(local.status.success(), "{}", String::from_utf8_lossy(&local.stderr));
    for run in ["tiny-standard-s1", "tiny-standard-s2", "tiny-gu-s1", "tiny-gu-s2"] {
        for file in ["best/adapter.safetensors", "last/adapter.safetensors", "best/model_head.safetensors", "metrics.csv", "validation.csv"] {
            let a = std::fs::read(root.join("slurm/runs").join(run).join(file)).unwrap();
            let b = std::fs::read(root.join("local/runs").join(run).join(file)).unwrap();
            assert!(a == b, "{run}/{file} differs between the Slurm and the local sweep");
        }
    }
    let a = std::fs::read_to_string(report).unwrap();
    let b = std::fs::read_to_string(root.join("local/report/tables.md")).unwrap();
    assert_eq!(a, b, "the same tables");
}
