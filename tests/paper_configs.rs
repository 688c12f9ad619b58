//! The shipped configs are the paper's Appendix B: every number of Tables 3 and 4 for every
//! (task, model, method), as `toolkit train --config FILE --schedule NAME --dry-run` prints them.
#![cfg(feature = "train")]

use std::path::PathBuf;

use toolkit::train::config::LrSchedule;
use toolkit::train::TrainConfig;

/// `toolkit train --config FILE [--KEY VALUE ...] --dry-run`, as a user runs it: the resolved
/// config it prints, and the steps of the unfreezing events it plans.
fn resolve(file: &str, settings: &[(&str, toml::Value)]) -> TrainConfig {
    let (config, _) = dry_run(file, settings);
    config
}

fn dry_run(file: &str, settings: &[(&str, toml::Value)]) -> (TrainConfig, Vec<usize>) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_toolkit"));
    command.current_dir(&root).args(["train", "--config"]).arg(root.join("scripts/configs").join(file)).arg("--dry-run");
    for (key, value) in settings {
        let value = match value {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        command.arg(format!("--{}", key.replace('_', "-"))).arg(value);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{file} {settings:?}: {}", String::from_utf8_lossy(&output.stderr));
    let (resolved, plan) = stdout.split_once("# Plan:").unwrap_or_else(|| panic!("no plan in:\n{stdout}"));
    let toml_text: String = resolved.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    let config: TrainConfig = toml::from_str(&toml_text).unwrap_or_else(|e| panic!("{file}: {e}\n{toml_text}"));
    let steps = plan
        .lines()
        .filter_map(|l| l.trim().strip_prefix("step "))
        .map(|l| l.split(':').next().unwrap().trim().parse().unwrap())
        .collect();
    (config, steps)
}

/// A row of Table 3: file, epochs standard / scheduled, lr standard / scheduled, batch, k-LPFT,
/// k-GU, k-Fish, constant LR.
type Table3Row = (&'static str, [usize; 2], [f64; 2], usize, [usize; 3], bool);

const TABLE_3: [Table3Row; 6] = [
    ("qa-mbert.toml", [5, 5], [5e-4, 5e-4], 32, [800, 800, 800], true),
    ("qa-xlmr.toml", [15, 15], [2e-4, 5e-4], 32, [800, 800, 100], true),
    ("copa-mbert.toml", [500, 5000], [1e-4, 1e-5], 64, [800, 50, 50], true),
    ("copa-xlmr.toml", [500, 5000], [1e-4, 1e-5], 64, [800, 1000, 1000], true),
    ("nli-mbert.toml", [15, 15], [5e-4, 5e-4], 128, [25, 800, 50], false),
    ("nli-xlmr.toml", [15, 15], [5e-4, 5e-4], 128, [800, 800, 800], false),
];

/// Table 4: (file, epochs, lr, batch, k for 1k, 5k, 10k examples).
const TABLE_4: [(&str, usize, f64, usize, [usize; 3]); 4] = [
    ("qa-mbert.toml", 20, 5e-4, 32, [10, 50, 50]),
    ("qa-xlmr.toml", 20, 5e-4, 32, [10, 50, 50]),
    ("nli-mbert.toml", 50, 5e-4, 128, [1, 25, 25]),
    ("nli-xlmr.toml", 50, 5e-4, 128, [1, 25, 10]),
];

fn schedule(name: &str) -> (&'static str, toml::Value) {
    ("schedule", toml::Value::String(name.to_string()))
}

#[test]
fn table_3_for_every_method() {
    for (file, epochs, lr, batch, [k_lpft, k_gu, k_fun], constant) in TABLE_3 {
        for (method, k) in
            [("standard", None), ("lpft", Some(k_lpft)), ("gu", Some(k_gu)), ("fun", Some(k_fun)), ("gu-rev", Some(k_gu)), ("rand", Some(k_fun)), ("order:11,10,9,8,7,6,5,4,3,2,1,0", Some(k_gu))]
        {
            let (c, events) = dry_run(file, &[schedule(method)]);
            let which = usize::from(method != "standard");
            let at = format!("{file} --schedule {method}");
            assert_eq!(c.epochs, epochs[which], "{at}: epochs");
            assert_eq!(c.lr, lr[which], "{at}: lr");
            assert_eq!(c.batch_size, batch, "{at}: batch size");
            if let Some(k) = k {
                assert_eq!(c.unfreeze_every, k, "{at}: k");
                // The plan's first event after the start comes after k updates.
                let first = if method == "lpft" { events[0] } else { events[1] };
                assert_eq!(first, k, "{at}: planned events {events:?}");
            } else {
                assert_eq!(events, [0], "{at}: every adapter from the start");
            }
            let expected = if constant { LrSchedule::Constant } else { LrSchedule::Linear };
            assert_eq!(c.lr_schedule, expected, "{at}: LR schedule");
            assert_eq!(c.warmup_steps, 0, "{at}: no warm-up");
            assert_eq!(c.max_grad_norm, 1.0, "{at}: gradient norm");
            assert_eq!(c.weight_decay, 0.0, "{at}");
            assert_eq!(c.reduction_factor, 16.0, "{at}: MAD-X task adapters");
            assert_eq!(c.fisher_batches, 40, "{at}: tr(F) batches");
            assert!(c.lang_adapter.is_some(), "{at}: MAD-X stacks the task adapter on a language adapter");
            assert_eq!(c.train_subset, None);
        }
    }
}

#[test]
fn table_4_by_subset_size() {
    for (file, epochs, lr, batch, ks) in TABLE_4 {
        for (n, k) in [1000, 5000, 10000].into_iter().zip(ks) {
            for method in ["standard", "gu", "fun", "lpft"] {
                let c = resolve(file, &[schedule(method), ("train_subset", toml::Value::Integer(n))]);
                let at = format!("{file} --schedule {method} --train-subset {n}");
                assert_eq!((c.epochs, c.lr, c.batch_size), (epochs, lr, batch), "{at}");
                assert_eq!(c.unfreeze_every, k, "{at}: k");
                assert_eq!(c.train_subset, Some(n as usize));
            }
        }
    }
}

#[test]
fn command_line_wins_and_run_directories_differ_by_method_and_seed() {
    let c = resolve("copa-xlmr.toml", &[schedule("gu"), ("lr", toml::Value::Float(3e-5))]);
    assert_eq!((c.epochs, c.lr, c.unfreeze_every), (5000, 3e-5, 1000));
    assert_eq!(c.out, PathBuf::from("runs/copa-xlmr-gu-s1"));
    let c = resolve("copa-xlmr.toml", &[schedule("fun"), ("seed", toml::Value::Integer(3))]);
    assert_eq!(c.out, PathBuf::from("runs/copa-xlmr-fun-s3"));
}

#[test]
fn nli_selects_on_english_xnli_dev() {
    for file in ["nli-mbert.toml", "nli-xlmr.toml"] {
        let c = resolve(file, &[]);
        assert!(c.validation_file.as_ref().unwrap().ends_with("xnli.dev.tsv"), "{file}");
        assert_eq!(c.source_language(), "en");
    }
}

#[test]
fn per_method_tables_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    let base = "task = \"copa\"\ntrain_file = \"t\"\nout = \"o\"\n";
    for (extra, message) in [
        ("[per_schedule.gradual]\nlr = 1.0\n", "[per_schedule.gradual]: no such schedule"),
        ("[per_schedule.gu]\nschedule = \"fun\"\n", "[per_schedule.gu] cannot set `schedule`"),
        ("[per_schedule.gu]\nlearning_rate = 1.0\n", "unknown field `learning_rate`"),
        ("[per_train_subset.10]\ntrain_subset = 5\n", "[per_train_subset.10] cannot set `train_subset`"),
        ("per_schedule = 3\n", "`per_schedule` must be a table of tables"),
    ] {
        std::fs::write(&file, format!("{base}schedule = \"gu\"\ntrain_subset = 10\n{extra}")).unwrap();
        let err = TrainConfig::resolve(Some(&file), toml::Table::new()).unwrap_err();
        assert!(format!("{err:#}").contains(message), "{extra}: {err:#}");
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_toolkit"))
        .current_dir(&root)
        .args(["train", "--config", "scripts/configs/copa-xlmr.toml", "--schedule", "gu", "--dry-run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end before the first line is printed, as `| head -0` would.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
}
