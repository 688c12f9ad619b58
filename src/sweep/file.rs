//! The sweep file: a base training config, the grid of train keys to vary, the export and the
//! eval suites of every run, and the Slurm resources per stage. `Sweep::load` expands the grid
//! into runs with deterministic, readable names and checks every run's training config, so a
//! mistake in any cell of the grid is reported before anything starts.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::run_dir::RunDir;
use crate::train::TrainConfig;

/// The file as written. Paths are relative to the directory `toolkit sweep` runs in, like the
/// paths of the training configs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepToml {
    /// Prefix of every run name.
    name: String,
    /// The base training config (`scripts/configs/*.toml`): its `[per_schedule.*]` and
    /// `[per_train_subset.N]` tables apply per run as with `toolkit train --config`.
    config: PathBuf,
    /// The sweep's folder: runs/, exports/, results/, logs/, slurm/, report/.
    out: PathBuf,
    /// Train keys set for every run, over the base config.
    #[serde(default)]
    set: toml::Table,
    /// Train keys to vary, each a list: every combination is one run.
    #[serde(default)]
    grid: toml::Table,
    #[serde(default)]
    export: ExportSpec,
    eval: EvalSpec,
    #[serde(default)]
    slurm: SlurmSpec,
}

/// How each run is exported (`toolkit export`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSpec {
    /// Folder with one language adapter per language (or a TOML list); none exports one model
    /// without a language adapter.
    pub lang_adapters: Option<PathBuf>,
    /// Target languages, comma-separated, or `all` (default) with `lang_adapters`.
    pub lang: Option<String>,
}

/// How each run is scored (`toolkit eval`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// Suite names (`eval-suites/NAME.toml`) or suite files.
    pub suites: Vec<String>,
    /// Folder the suites' data paths are relative to.
    pub data_dir: PathBuf,
    /// ONNX Runtime threads per operator [default: one per core].
    pub threads: Option<usize>,
}

/// Slurm settings: array throttle and resources per stage.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSpec {
    /// Array tasks running at once (`--array=...%M`); none = no limit.
    pub throttle: Option<usize>,
    #[serde(default)]
    pub train: Resources,
    #[serde(default)]
    pub score: Resources,
    #[serde(default)]
    pub report: Resources,
}

/// One stage's `#SBATCH` resources; unset ones are left to the cluster's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub partition: Option<String>,
    /// GPUs per task (`--gres=gpu:N`).
    pub gpus: Option<u32>,
    pub cpus: Option<u32>,
    /// Memory per task, Slurm syntax (`16G`).
    pub mem: Option<String>,
    /// Time limit, Slurm syntax (`1-00:00:00`, `02:00:00`).
    pub time: Option<String>,
    /// Further `#SBATCH` options as written after `#SBATCH ` (`--account=nlp`, `--qos=long`).
    #[serde(default)]
    pub extra: Vec<String>,
}

/// An expanded sweep.
#[derive(Debug)]
pub struct Sweep {
    /// The sweep file, as given.
    pub file: PathBuf,
    pub name: String,
    pub out: PathBuf,
    pub export: ExportSpec,
    pub eval: EvalSpec,
    pub slurm: SlurmSpec,
    pub runs: Vec<Run>,
}

/// One cell of the grid.
#[derive(Debug)]
pub struct Run {
    pub index: usize,
    /// `{sweep name}-{schedule}[-n{subset}][-{key}{value}...]-s{seed}`.
    pub name: String,
    /// The run name without the sweep name and the seed: the method label of the results, so
    /// that the report averages over seeds.
    pub method: String,
    pub config: TrainConfig,
}

/// Runs a sweep may have: far beyond any experiment's grid, small enough to expand.
const MAX_RUNS: usize = 100_000;

/// Grid keys that the sweep sets itself.
const RESERVED: [&str; 1] = ["out"];

impl Sweep {
    pub fn load(file: &Path) -> Result<Self> {
        let text = crate::data::read_text(file)?;
        let spec: SweepToml = toml::from_str(&text).with_context(|| format!("{}: not a valid sweep file", file.display()))?;
        let where_ = file.display();
        if spec.name.is_empty() || spec.name.contains(|c: char| !is_name_char(c)) {
            bail!("{where_}: name = {:?}: use letters, digits, '.', '_' and '-'", spec.name);
        }
        if spec.eval.suites.is_empty() {
            bail!("{where_}: [eval] suites is empty");
        }
        if spec.slurm.throttle == Some(0) {
            bail!("{where_}: [slurm] throttle must be at least 1");
        }
        for key in RESERVED {
            if spec.grid.contains_key(key) || spec.set.contains_key(key) {
                bail!("{where_}: `{key}` is set by the sweep (runs go to {}/runs/NAME)", spec.out.display());
            }
        }
        let mut axes: Vec<(String, Vec<toml::Value>)> = Vec::new();
        for (key, values) in &spec.grid {
            let toml::Value::Array(values) = values else { bail!("{where_}: [grid] {key} must be a list of values") };
            if values.is_empty() {
                bail!("{where_}: [grid] {key} is an empty list");
            }
            if spec.set.contains_key(key) {
                bail!("{where_}: `{key}` is both in [set] and in [grid]");
            }
            axes.push((key.clone(), values.clone()));
        }
        // Name order: schedule, train subset, the other keys alphabetically, seed last.
        axes.sort_by_key(|(key, _)| (name_rank(key), key.clone()));
        // Every run is expanded and checked up front, so the grid's size is checked first.
        let count = axes.iter().try_fold(1usize, |n, (_, values)| n.checked_mul(values.len())).filter(|&n| n <= MAX_RUNS);
        if count.is_none() {
            let sizes: Vec<String> = axes.iter().map(|(key, values)| format!("{key}: {}", values.len())).collect();
            bail!("{where_}: [grid] has more than {MAX_RUNS} runs ({})", sizes.join(" x "));
        }

        let mut runs = Vec::new();
        let mut names = BTreeMap::new();
        for (index, cell) in product(&axes).into_iter().enumerate() {
            let parts: Vec<(String, String)> = cell.iter().map(|(k, v)| (k.clone(), name_part(k, v))).collect();
            let method_parts: Vec<&str> = parts.iter().filter(|(k, _)| k != "seed").map(|(_, p)| p.as_str()).collect();
            let all_parts: Vec<&str> = parts.iter().map(|(_, p)| p.as_str()).collect();
            let name = std::iter::once(spec.name.as_str()).chain(all_parts).collect::<Vec<_>>().join("-");
            if let Some(other) = names.insert(name.clone(), index) {
                bail!("{where_}: runs {other} and {index} are both named {name}: grid values that differ only in punctuation");
            }
            let mut overrides = spec.set.clone();
            overrides.extend(cell.iter().map(|(k, v)| (k.clone(), v.clone())));
            overrides.insert("out".into(), spec.out.join("runs").join(&name).to_string_lossy().into_owned().into());
            let config = TrainConfig::resolve(Some(&spec.config), overrides)
                .with_context(|| format!("{where_}: run {name} ({})", describe(&cell)))?;
            let method = if method_parts.is_empty() { config.schedule.to_string() } else { method_parts.join("-") };
            runs.push(Run { index, name, method, config });
        }
        Ok(Self {
            file: file.to_path_buf(),
            name: spec.name,
            out: spec.out,
            export: spec.export,
            eval: spec.eval,
            slurm: spec.slurm,
            runs,
        })
    }

    pub fn run_dir(&self, run: &Run) -> RunDir {
        RunDir::new(&run.config.out)
    }

    pub fn export_dir(&self, run: &Run) -> PathBuf {
        self.out.join("exports").join(&run.name)
    }

    /// The results CSV of `suite` (a name or a suite file: its file stem).
    pub fn results_csv(&self, run: &Run, suite: &str) -> PathBuf {
        let stem = Path::new(suite).file_stem().map_or(suite.to_string(), |s| s.to_string_lossy().into_owned());
        self.out.join("results").join(&run.name).join(format!("{stem}.csv"))
    }

    pub fn log(&self, run: &Run, stage: &str) -> PathBuf {
        self.out.join("logs").join(format!("{}.{stage}.log", run.name))
    }

    pub fn report_dir(&self) -> PathBuf {
        self.out.join("report")
    }

    pub fn slurm_dir(&self) -> PathBuf {
        self.out.join("slurm")
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn name_rank(key: &str) -> u8 {
    match key {
        "schedule" => 0,
        "train_subset" => 1,
        "seed" => 3,
        _ => 2,
    }
}

/// `fun`, `order-11-10`, `n1000`, `s1`, `lr0.0005`, `unfreeze_every800`.
fn name_part(key: &str, value: &toml::Value) -> String {
    let value = match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let prefix = match key {
        "schedule" => "",
        "train_subset" => "n",
        "seed" => "s",
        other => other,
    };
    let text: String = format!("{prefix}{value}").chars().map(|c| if is_name_char(c) { c } else { '-' }).collect();
    text.trim_matches('-').to_string()
}

/// Every combination of the axes' values, the last axis varying fastest.
fn product(axes: &[(String, Vec<toml::Value>)]) -> Vec<Vec<(String, toml::Value)>> {
    let mut cells = vec![Vec::new()];
    for (key, values) in axes {
        cells = cells
            .into_iter()
            .flat_map(|cell: Vec<(String, toml::Value)>| {
                values.iter().map(move |v| {
                    let mut next = cell.clone();
                    next.push((key.clone(), v.clone()));
                    next
                })
            })
            .collect();
    }
    cells
}

fn describe(cell: &[(String, toml::Value)]) -> String {
    cell.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, sweep: &str) -> PathBuf {
        std::fs::write(dir.join("base.toml"), "model = \"m\"\ntask = \"copa\"\ntrain_file = \"t.jsonl\"\nout = \"x\"\n[per_schedule.gu]\nunfreeze_every = 7\n").unwrap();
        let path = dir.join("sweep.toml");
        std::fs::write(&path, sweep.replace("BASE", &dir.join("base.toml").to_string_lossy())).unwrap();
        path
    }

    #[test]
    fn the_grid_expands_to_named_runs_seed_last() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "name = \"copa\"\nconfig = \"BASE\"\nout = \"sw\"\n[grid]\nseed = [1, 2]\nschedule = [\"standard\", \"gu\", \"order:11,10\"]\n\
             [eval]\nsuites = [\"xcopa\"]\ndata_dir = \"d\"\n",
        );
        let sweep = Sweep::load(&file).unwrap();
        let names: Vec<&str> = sweep.runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["copa-standard-s1", "copa-standard-s2", "copa-gu-s1", "copa-gu-s2", "copa-order-11-10-s1", "copa-order-11-10-s2"]
        );
        assert_eq!(sweep.runs[2].method, "gu");
        assert_eq!(sweep.runs[2].config.unfreeze_every, 7, "the base config's [per_schedule.gu] applies");
        assert_eq!(sweep.runs[3].config.seed, 2);
        assert_eq!(sweep.runs[3].config.out, PathBuf::from("sw/runs/copa-gu-s2"));
    }

    #[test]
    fn mistakes_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("name = \"c\"\nconfig = \"BASE\"\nout = \"sw\"\nlanguages = 1\n[eval]\nsuites = [\"x\"]\ndata_dir = \"d\"\n", "unknown field `languages`"),
            ("name = \"c\"\nconfig = \"BASE\"\nout = \"sw\"\n[grid]\nseed = 1\n[eval]\nsuites = [\"x\"]\ndata_dir = \"d\"\n", "seed must be a list"),
            ("name = \"c\"\nconfig = \"BASE\"\nout = \"sw\"\n[grid]\nlearning_rate = [1]\n[eval]\nsuites = [\"x\"]\ndata_dir = \"d\"\n", "unknown field `learning_rate`"),
            ("name = \"c\"\nconfig = \"BASE\"\nout = \"sw\"\n[set]\nout = \"y\"\n[eval]\nsuites = [\"x\"]\ndata_dir = \"d\"\n", "`out` is set by the sweep"),
            ("name = \"c\"\nconfig = \"BASE\"\nout = \"sw\"\n[eval]\nsuites = [\"x\"]\ndata_dir = \"d\"\n[slurm.train]\ngpu = 1\n", "unknown field `gpu`"),
        ];
        for (text, expected) in cases {
            let file = write(dir.path(), text);
            let err = format!("{:#}", Sweep::load(&file).unwrap_err());
            assert!(err.contains(expected) && err.contains("sweep.toml"), "{err}");
        }
    }
}
