//! The TOML files a user writes: training configs, sweep files and eval suites, damaged as
//! text and as tables, and built from their real keys with values of any type.
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::Index;
use toolkit::eval::Suite;

use super::kit::{self, Edit};
use crate::common;

/// A damaged TOML file: bytes, or one of its keys set to any value or removed.
#[derive(Debug, Clone)]
enum Damage {
    Bytes(Vec<Edit>),
    Set(Vec<Index>, toml::Value),
    Remove(Vec<Index>),
}

fn damage() -> impl Strategy<Value = Damage> {
    let path = proptest::collection::vec(any::<Index>(), 1..3);
    prop_oneof![
        kit::edits().prop_map(Damage::Bytes),
        (path.clone(), kit::toml_value()).prop_map(|(p, v)| Damage::Set(p, v)),
        path.prop_map(Damage::Remove),
    ]
}

fn apply(seed: &str, damage: &Damage) -> Vec<u8> {
    let (path, new) = match damage {
        Damage::Bytes(edits) => return kit::apply(seed.as_bytes(), edits),
        Damage::Set(path, v) => (path, Some(v)),
        Damage::Remove(path) => (path, None),
    };
    let mut table: toml::Table = seed.parse().expect("the seeds are valid TOML");
    let mut at = &mut table;
    for (depth, i) in path.iter().enumerate() {
        if at.is_empty() {
            break;
        }
        let key = at.keys().nth(i.index(at.len())).cloned().expect("in range");
        let last = depth + 1 == path.len();
        if last || !at[&key].is_table() {
            match new {
                Some(v) => drop(at.insert(key, v.clone())),
                None => drop(at.remove(&key)),
            }
            break;
        }
        at = at.get_mut(&key).and_then(toml::Value::as_table_mut).expect("a table");
    }
    toml::to_string(&table).expect("serialises").into_bytes()
}

/// The `.toml` files of a folder of the repository.
fn seeds(folder: &str) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(common::repo().join(folder))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {folder}");
    out
}

/// A TOML error names the file, and a syntax error its line.
fn check(err: &anyhow::Error, path: &Path) {
    kit::assert_names(err, path);
    if format!("{err:#}").contains("TOML parse error") {
        kit::assert_names_position(err, path);
    }
}

#[cfg(feature = "train")]
mod train {
    use super::*;
    use toolkit::sweep::file::Sweep;
    use toolkit::train::TrainConfig;

    #[test]
    fn train_configs_damaged() {
        let seeds = seeds("scripts/configs");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        kit::run("train_configs_damaged", 800, (0..seeds.len(), damage()), |(seed, damage)| {
            kit::write(&path, &apply(&seeds[seed].1, &damage));
            if let Err(err) = TrainConfig::resolve(Some(&path), toml::Table::new()) {
                check(&err, &path);
            }
            Ok(())
        });
    }

    const TRAIN_KEYS: &[&str] = &[
        "model", "task", "train_file", "out", "schedule", "unfreeze_every", "unfreeze_at", "unfreeze_count", "train_subset",
        "per_schedule", "per_train_subset", "head", "head_layers", "init_adapter", "lr", "epochs", "batch_size",
        "grad_accumulation", "seed", "max_length", "adapter_dropout", "fisher_qa_reduction", "validation_language",
        "validation_file", "event_timing", "device", "threads",
    ];

    #[test]
    fn train_configs_generated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        kit::run("train_configs_generated", 800, kit::toml_table(TRAIN_KEYS), |table| {
            kit::write(&path, toml::to_string(&table).unwrap().as_bytes());
            if let Err(err) = TrainConfig::resolve(Some(&path), toml::Table::new()) {
                check(&err, &path);
            }
            Ok(())
        });
    }

    /// Sweep files damaged; their base configs are the repository's, relative to its root,
    /// where cargo runs the tests.
    #[test]
    fn sweeps_damaged() {
        let mut seeds = seeds("scripts/sweeps");
        seeds.extend(super::seeds("scripts/sweeps/paper"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.toml");
        kit::run("sweeps_damaged", 400, (0..seeds.len(), damage()), |(seed, damage)| {
            kit::write(&path, &apply(&seeds[seed].1, &damage));
            if let Err(err) = Sweep::load(&path) {
                check(&err, &path);
            }
            Ok(())
        });
    }

    const SWEEP_KEYS: &[&str] = &["name", "config", "out", "set", "grid", "export", "eval", "slurm"];

    /// Sweeps of the real base config with generated grids: any number of keys, values of any
    /// type.
    #[test]
    fn sweeps_generated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.toml");
        let grid = proptest::collection::btree_map(
            proptest::sample::select(TRAIN_KEYS).prop_map(str::to_string),
            proptest::collection::vec(kit::toml_value(), 0..5).prop_map(toml::Value::Array),
            0..5,
        );
        let strategy = (kit::toml_table(SWEEP_KEYS), grid);
        kit::run("sweeps_generated", 400, strategy, |(mut table, grid)| {
            table.entry("name").or_insert("g".into());
            table.entry("config").or_insert("scripts/configs/copa-e5.toml".into());
            table.entry("out").or_insert("unused".into());
            table.entry("grid").or_insert(toml::Value::Table(grid.into_iter().collect()));
            let eval: toml::Table = toml::from_str("suites = [\"xcopa\"]\ndata_dir = \"d\"").unwrap();
            table.entry("eval").or_insert(toml::Value::Table(eval));
            kit::write(&path, toml::to_string(&table).unwrap().as_bytes());
            if let Err(err) = Sweep::load(&path) {
                check(&err, &path);
            }
            Ok(())
        });
    }
}

#[test]
fn suites_damaged() {
    let seeds = seeds("eval-suites");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("suite.toml");
    kit::run("suites_damaged", 800, (0..seeds.len(), damage()), |(seed, damage)| {
        kit::write(&path, &apply(&seeds[seed].1, &damage));
        if let Err(err) = Suite::load(path.to_str().unwrap()) {
            check(&err, &path);
        }
        Ok(())
    });
}

const SUITE_KEYS: &[&str] = &[
    "name", "description", "task", "source_language", "languages", "split", "metrics", "primary_metric", "labels",
    "answer_normalization", "features", "data", "overrides",
];

/// The shipped suites with a few of their keys set to generated values.
#[test]
fn suites_generated() {
    let seeds = seeds("eval-suites");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("suite.toml");
    kit::run("suites_generated", 600, (0..seeds.len(), kit::toml_table(SUITE_KEYS)), |(seed, keys)| {
        let mut table: toml::Table = seeds[seed].1.parse().unwrap();
        table.extend(keys);
        kit::write(&path, toml::to_string(&table).unwrap().as_bytes());
        if let Err(err) = Suite::load(path.to_str().unwrap()) {
            check(&err, &path);
        }
        Ok(())
    });
}
