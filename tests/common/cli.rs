//! The `toolkit` binary as a user runs it, on the tiny model: a train config, language
//! adapters, an eval suite, and the checks every failing command must pass.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn toolkit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_toolkit"))
}

/// Runs `toolkit ARGS...` to its end.
pub fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    toolkit().args(args).output().expect("the toolkit binary runs")
}

/// A user-facing failure: a nonzero exit, a message naming each of `needles`, no panic.
pub fn assert_fails(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "succeeded, expected an error naming {needles:?}; stderr: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "the message does not name `{needle}`: {stderr}");
    }
    for panic_text in ["panicked", "RUST_BACKTRACE"] {
        assert!(!stderr.contains(panic_text), "a panic, not an error: {stderr}");
    }
    stderr
}

/// Hidden entries (`.NAME.tmp-PID`, `.NAME.staging-PID`, `.NAME.old-PID`) in `dir`: what an
/// interrupted write leaves behind.
pub fn leftovers(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> =
        entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with('.')).collect();
    names.sort();
    names
}

/// The tiny model and its data in a temporary folder (see `tiny::write_model_and_data`), with
/// language adapters en/ and xx/ (the fixture's) and a two-language COPA suite.
pub struct Tiny {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl Tiny {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        super::tiny::write_model_and_data(&root);
        for lang in ["en", "xx"] {
            let dir = root.join("langs").join(lang);
            std::fs::create_dir_all(&dir).unwrap();
            for entry in std::fs::read_dir(super::tiny::lang_adapter()).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
            }
        }
        std::fs::create_dir_all(root.join("eval")).unwrap();
        super::tiny::write_copa(&root.join("eval/en.jsonl"), 24, 3);
        super::tiny::write_copa(&root.join("eval/xx.jsonl"), 24, 4);
        std::fs::write(
            root.join("suite.toml"),
            "name = \"tiny-copa\"\ndescription = \"COPA-style fixtures\"\ntask = \"copa\"\nsource_language = \"en\"\n\
             languages = [\"en\", \"xx\"]\nsplit = \"test\"\nmetrics = [\"accuracy\"]\nprimary_metric = \"accuracy\"\n\
             [features]\nmax_length = 16\n[data]\npath = \"eval/{lang}.jsonl\"\n",
        )
        .unwrap();
        Self { _tmp: tmp, root }
    }

    /// `NAME.toml`: a COPA run on the tiny model with the fixture's language adapter, one
    /// thread, plus `extra` lines. Its runs go wherever `--out` says.
    pub fn train_config(&self, name: &str, extra: &str) -> PathBuf {
        let path = self.root.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "model = {:?}\nlang_adapter = {:?}\ntask = \"copa\"\ntrain_file = {:?}\nvalidation_file = {:?}\n\
                 max_length = 16\nbatch_size = 16\nseed = 5\nthreads = 1\n{extra}",
                self.root.join("model"),
                super::tiny::lang_adapter(),
                self.root.join("train.jsonl"),
                self.root.join("val.jsonl"),
            ),
        )
        .unwrap();
        path
    }

    /// `toolkit train --quiet --config CONFIG --out OUT`.
    pub fn train(&self, config: &Path, out: &Path) -> Command {
        let mut cmd = toolkit();
        cmd.arg("train").arg("--quiet").arg("--config").arg(config).arg("--out").arg(out);
        cmd
    }

    /// `toolkit export --run RUN --lang-adapters langs --lang all --out OUT`.
    pub fn export(&self, run: &Path, out: &Path) -> Command {
        let mut cmd = toolkit();
        cmd.arg("export").arg("--run").arg(run).arg("--lang-adapters").arg(self.root.join("langs"));
        cmd.args(["--lang", "all", "--out"]).arg(out);
        cmd
    }

    /// `toolkit eval` of the export `models` on the tiny suite, results to `out`.
    pub fn eval(&self, models: &Path, out: &Path) -> Command {
        let mut cmd = toolkit();
        cmd.arg("eval").arg("--suite").arg(self.root.join("suite.toml")).arg("--models").arg(models);
        cmd.arg("--data-dir").arg(&self.root).args(["--device", "cpu", "--threads", "1", "--run-name", "tiny", "--out"]).arg(out);
        cmd
    }
}

/// Runs `cmd` to its end and requires success.
pub fn succeed(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the toolkit binary runs");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}
