//! `toolkit sweep` with the local backend on the tiny model: every stage of every run, the
//! tables at the end, a failing run that does not stop the others and is named with its log,
//! and a second `run` that finds everything complete.
#![cfg(feature = "train")]

mod common;

use std::process::Command;

fn toolkit(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_toolkit")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_local_sweep_trains_scores_reports_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    common::tiny::write_model_and_data(root);
    // The third train file does not exist: the runs on it fail, the others complete.
    let missing = root.join("missing.jsonl");
    let grid = format!("train_file = [{:?}, {:?}]", root.join("train.jsonl"), missing);
    let file = common::tiny::write_sweep(root, "sweep", 2, &grid);
    let file = file.to_str().unwrap();

    let (ok, plan) = toolkit(&["sweep", "plan", file]);
    assert!(ok, "{plan}");
    assert!(plan.contains("8 runs") && plan.contains("not started"), "{plan}");

    let (ok, out) = toolkit(&["sweep", "run", file, "--backend", "local", "--jobs", "2"]);
    assert!(!ok, "four runs have no training file: {out}");
    assert!(out.contains("4 of 8 runs failed"), "{out}");
    let failed_log = root.join("sweep/logs").join(format!("tiny-gu-train_file-{}-s1.train.log", missing.to_string_lossy().replace('/', "-").trim_matches('-')));
    assert!(out.contains(&failed_log.display().to_string()), "the failure names its log {}: {out}", failed_log.display());
    assert!(std::fs::read_to_string(&failed_log).unwrap().contains("missing.jsonl"), "the log says why");

    let tables = std::fs::read_to_string(root.join("sweep/report/tables.md")).unwrap();
    for method in ["standard-train_file", "gu-train_file"] {
        assert!(tables.contains(method), "{tables}");
    }
    assert!(tables.contains('±'), "mean +- std over the two seeds: {tables}");
    let (ok, status) = toolkit(&["sweep", "status", file]);
    assert!(ok && status.contains("4 done") && status.contains("4 not started"), "{status}");

    // Again: the complete runs are skipped, the failing ones fail again.
    let started = std::time::Instant::now();
    let (ok, out) = toolkit(&["sweep", "run", file, "--backend", "local", "--jobs", "2"]);
    assert!(!ok && out.contains("4 of 8 runs already complete"), "{out}");
    assert!(started.elapsed().as_secs() < 30);
}
