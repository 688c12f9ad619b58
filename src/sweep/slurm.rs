//! `--backend slurm`: three `sbatch` scripts in SWEEP_OUT/slurm/ and their job ids in
//! jobs.json. Training is one array (one task per run, throttled); scoring is a second array
//! whose task i starts when training task i succeeded (`aftercorr`), so it can ask for other
//! resources (a CPU partition); the report job runs when every scoring task has ended. Array
//! tasks are `--requeue` safe: a requeued task starts `toolkit sweep task` again, which skips
//! what is complete and resumes training from last/.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::file::{Resources, Sweep};
use super::stage::{complete, Stage};
use crate::fsx::write_atomic;

/// The jobs of the last submission, kept for `status` and `cancel`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Jobs {
    pub train: String,
    pub score: String,
    pub report: String,
    /// Run indices submitted.
    pub indices: Vec<usize>,
}

/// One script to submit, with the dependency flag that chains it to the previous job.
pub struct Script {
    pub stage: &'static str,
    pub path: PathBuf,
    pub text: String,
}

/// The train, score and report scripts for the runs that are not complete.
pub fn scripts(sweep: &Sweep) -> Result<(Vec<usize>, Vec<Script>)> {
    let indices: Vec<usize> = sweep.runs.iter().filter(|r| !complete(sweep, r, Stage::Score)).map(|r| r.index).collect();
    let exe = std::env::current_exe().context("finding the toolkit executable")?;
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let array = {
        let list = compress(&indices);
        match sweep.slurm.throttle {
            Some(m) => format!("{list}%{m}"),
            None => list,
        }
    };
    let names: Vec<&str> = sweep.runs.iter().map(|r| r.name.as_str()).collect();
    let mut out = Vec::new();
    for (stage, resources) in [(Stage::Train, &sweep.slurm.train), (Stage::Score, &sweep.slurm.score)] {
        let name = stage.as_str();
        let mut text = header(sweep, name, resources, &cwd);
        text.push_str(&format!("#SBATCH --array={array}\n#SBATCH --output={}\n", quote_path(&sweep.out.join("logs").join(format!("slurm-{name}-%a.out")))));
        text.push_str("#SBATCH --requeue\n#SBATCH --open-mode=append\n\nset -euo pipefail\n");
        text.push_str(&format!("names=({})\n", names.join(" ")));
        text.push_str("name=${names[$SLURM_ARRAY_TASK_ID]}\n");
        text.push_str(&format!("exec >>{}/\"$name.{name}.log\" 2>&1\n", quote_path(&sweep.out.join("logs"))));
        text.push_str(&format!(
            "echo \"[sweep] $name {name}: job ${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}} on $(hostname), restart ${{SLURM_RESTART_COUNT:-0}}, $(date -Is)\"\n"
        ));
        text.push_str(&format!(
            "exec {} sweep task {} --stage {name} --index \"$SLURM_ARRAY_TASK_ID\"\n",
            quote_path(&exe),
            quote_path(&sweep.file)
        ));
        out.push(Script { stage: name, path: sweep.slurm_dir().join(format!("{name}.sh")), text });
    }
    let mut text = header(sweep, "report", &sweep.slurm.report, &cwd);
    text.push_str(&format!("#SBATCH --output={}\n\nset -euo pipefail\n", quote_path(&sweep.out.join("logs").join("report.log"))));
    text.push_str(&format!("exec {} sweep report {}\n", quote_path(&exe), quote_path(&sweep.file)));
    out.push(Script { stage: "report", path: sweep.slurm_dir().join("report.sh"), text });
    Ok((indices, out))
}

fn header(sweep: &Sweep, stage: &str, r: &Resources, cwd: &Path) -> String {
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("# toolkit sweep {}: {stage} (written by `toolkit sweep run --backend slurm`)", sweep.file.display()),
        format!("#SBATCH --job-name={}-{stage}", sweep.name),
        format!("#SBATCH --chdir={}", quote_path(cwd)),
    ];
    if let Some(p) = &r.partition {
        lines.push(format!("#SBATCH --partition={p}"));
    }
    if let Some(g) = r.gpus {
        lines.push(format!("#SBATCH --gres=gpu:{g}"));
    }
    if let Some(c) = r.cpus {
        lines.push(format!("#SBATCH --cpus-per-task={c}"));
    }
    if let Some(m) = &r.mem {
        lines.push(format!("#SBATCH --mem={m}"));
    }
    if let Some(t) = &r.time {
        lines.push(format!("#SBATCH --time={t}"));
    }
    lines.extend(r.extra.iter().map(|e| format!("#SBATCH {e}")));
    lines.join("\n") + "\n"
}

/// `0-3,7,9-10`: array indices as Slurm writes ranges.
fn compress(indices: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let mut j = i;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { indices[i].to_string() } else { format!("{}-{}", indices[i], indices[j]) });
        i = j + 1;
    }
    parts.join(",")
}

/// A path for a bash script: single-quoted unless it is plain.
fn quote_path(path: &Path) -> String {
    let s = path.to_string_lossy();
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-%+=:".contains(c)) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The sbatch command line for each script, chained by dependencies on the job ids before it.
fn sbatch_args(stage: &str, previous: Option<&str>) -> Vec<String> {
    let mut args = vec!["--parsable".to_string()];
    match (stage, previous) {
        ("score", Some(train)) => args.push(format!("--dependency=aftercorr:{train}")),
        ("report", Some(score)) => args.push(format!("--dependency=afterany:{score}")),
        _ => {}
    }
    args
}

/// Writes the scripts and, unless `dry_run`, submits them; prints what it does.
pub fn submit(sweep: &Sweep, dry_run: bool) -> Result<()> {
    let (indices, scripts) = scripts(sweep)?;
    if indices.is_empty() {
        println!("every run of {} is complete; `toolkit sweep report {}` writes the tables", sweep.file.display(), sweep.file.display());
        return Ok(());
    }
    if dry_run {
        for (i, script) in scripts.iter().enumerate() {
            let previous = i.checked_sub(1).map(|p| ["TRAIN_JOB", "SCORE_JOB"][p]);
            println!("# sbatch {} {}", sbatch_args(script.stage, previous).join(" "), script.path.display());
            println!("{}", script.text);
        }
        return Ok(());
    }
    std::fs::create_dir_all(sweep.slurm_dir()).with_context(|| format!("creating {}", sweep.slurm_dir().display()))?;
    std::fs::create_dir_all(sweep.out.join("logs")).with_context(|| format!("creating {}/logs", sweep.out.display()))?;
    let mut ids: Vec<String> = Vec::new();
    for script in &scripts {
        write_atomic(&script.path, script.text.as_bytes())?;
        let args = sbatch_args(script.stage, ids.last().map(String::as_str));
        let output = Command::new("sbatch")
            .args(&args)
            .arg(&script.path)
            .output()
            .context("running sbatch (is Slurm installed, and SLURM_CONF set where needed?)")?;
        if !output.status.success() {
            bail!("sbatch {} {}: {}", args.join(" "), script.path.display(), String::from_utf8_lossy(&output.stderr).trim());
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let id = stdout.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            bail!("sbatch {}: unexpected output {stdout:?}", script.path.display());
        }
        println!("submitted {} as job {id} ({})", script.stage, script.path.display());
        ids.push(id);
    }
    let jobs = Jobs { train: ids[0].clone(), score: ids[1].clone(), report: ids[2].clone(), indices };
    write_atomic(&jobs_json(sweep), &serde_json::to_vec_pretty(&jobs)?)?;
    println!("{} runs in array {} (train) and {} (score), report {}; `toolkit sweep status {}` follows them", jobs.indices.len(), jobs.train, jobs.score, jobs.report, sweep.file.display());
    Ok(())
}

fn jobs_json(sweep: &Sweep) -> PathBuf {
    sweep.slurm_dir().join("jobs.json")
}

/// The last submission's jobs, if any.
pub fn read_jobs(sweep: &Sweep) -> Result<Option<Jobs>> {
    let path = jobs_json(sweep);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| format!("{}: not a jobs record", path.display()))?))
}

/// Queue states of the submission's tasks: (job id, array index or None) -> "RUNNING", ...
pub type QueueStates = BTreeMap<(String, Option<usize>), String>;

/// What `squeue` says about `jobs` (finished jobs are no longer listed).
pub fn queue_states(jobs: &Jobs) -> Result<QueueStates> {
    let output = Command::new("squeue").args(["-h", "-o", "%i|%T|%r"]).output().context("running squeue")?;
    if !output.status.success() {
        bail!("squeue: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let ours = [&jobs.train, &jobs.score, &jobs.report];
    let mut states = QueueStates::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let mut fields = line.split('|');
        let (Some(id), Some(state), reason) = (fields.next(), fields.next(), fields.next()) else { continue };
        let (job, tasks) = id.split_once('_').map_or((id, None), |(j, t)| (j, Some(t)));
        if !ours.contains(&&job.to_string()) {
            continue;
        }
        let state = match reason {
            Some(r) if state == "PENDING" && r != "None" => format!("PENDING ({r})"),
            _ => state.to_string(),
        };
        match tasks {
            None => {
                states.insert((job.to_string(), None), state);
            }
            Some(tasks) => {
                for index in expand(tasks) {
                    states.insert((job.to_string(), Some(index)), state.clone());
                }
            }
        }
    }
    Ok(states)
}

/// `4`, `[5-7,9%2]` -> the indices.
fn expand(tasks: &str) -> Vec<usize> {
    let list = tasks.trim_start_matches('[').trim_end_matches(']');
    let list = list.split('%').next().unwrap_or("");
    let mut out = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<usize>().ok()),
        }
    }
    out
}

/// `scancel` the submission's jobs.
pub fn cancel(sweep: &Sweep) -> Result<()> {
    let Some(jobs) = read_jobs(sweep)? else {
        bail!("{}: no Slurm submission recorded ({} is absent)", sweep.file.display(), jobs_json(sweep).display());
    };
    let status = Command::new("scancel").args([&jobs.train, &jobs.score, &jobs.report]).status().context("running scancel")?;
    if !status.success() {
        bail!("scancel {} {} {} failed ({status})", jobs.train, jobs.score, jobs.report);
    }
    println!("cancelled jobs {} (train), {} (score), {} (report)", jobs.train, jobs.score, jobs.report);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_indices_round_trip_through_slurm_notation() {
        assert_eq!(compress(&[0, 1, 2, 3, 7, 9, 10]), "0-3,7,9-10");
        assert_eq!(expand("[0-3,7,9-10%2]"), vec![0, 1, 2, 3, 7, 9, 10]);
        assert_eq!(expand("4"), vec![4]);
    }
}
