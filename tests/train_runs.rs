//! Whole training runs on a tiny BERT and a synthetic two-choice task: schedules, frozen
//! adapters untouched, learning, and resume equivalence.
#![cfg(feature = "train")]

mod common;

use std::path::{Path, PathBuf};

use toolkit::model::head::HeadType;
use toolkit::model::{ComposedModel, ModelFiles, Weights};
use toolkit::train::{Trainer, TrainConfig};

/// A model directory (the tiny fixture BERT plus a WordPiece vocabulary of its size), its
/// language adapter, and COPA-style files where the right choice is the one saying "yes".
struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        common::tiny::write_model_and_data(&root);
        Self { _tmp: tmp, root }
    }

    fn config(&self, out: &str, extra: &str) -> TrainConfig {
        self.config_for(out, "copa", "train.jsonl", "val.jsonl", extra)
    }

    /// A run of `task` on `train` and `validation` (files in the setup's folder).
    fn config_for(&self, out: &str, task: &str, train: &str, validation: &str, extra: &str) -> TrainConfig {
        let fixture = common::tiny::lang_adapter();
        let text = format!(
            "model = {:?}\nlang_adapter = {:?}\ntask = {task:?}\ntrain_file = {:?}\nvalidation_file = {:?}\nout = {:?}\n\
             max_length = 16\nbatch_size = 16\nseed = 5\nthreads = 1\n{extra}",
            self.root.join("model"),
            fixture,
            self.root.join(train),
            self.root.join(validation),
            self.root.join(out),
        );
        let path = self.root.join(format!("{out}.toml"));
        std::fs::write(&path, text).unwrap();
        TrainConfig::resolve(Some(&path), toml::Table::new()).unwrap()
    }
}

/// Filler words of the tiny vocabulary (`common::tiny`), none of them a marker below.
const FILLERS: [&str; 17] = ["dog", "ran", "sat", "ate", "rain", "sun", "cold", "hot", "big", "old", "new", "red", "blue", "tree", "house", "car", "food"];

/// A small linear congruential generator, so the files are the same on every run.
fn lcg(seed: u64) -> impl FnMut(usize) -> usize {
    let mut state = seed;
    move |m| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % m
    }
}

/// MultiNLI-format pairs whose label is the hypothesis' first word: "yes" entailment, "man"
/// neutral, "no" contradiction.
fn write_nli(path: &Path, n: usize, seed: u64) {
    let mut next = lcg(seed);
    let mut lines = String::new();
    for i in 0..n {
        let premise: Vec<&str> = (0..3).map(|_| FILLERS[next(FILLERS.len())]).collect();
        let (marker, label) = [("yes", "entailment"), ("man", "neutral"), ("no", "contradiction")][next(3)];
        let hypothesis = format!("{marker} {}", FILLERS[next(FILLERS.len())]);
        let record = serde_json::json!({"sentence1": premise.join(" "), "sentence2": hypothesis, "gold_label": label, "pairID": format!("p{i}")});
        lines.push_str(&format!("{record}\n"));
    }
    std::fs::write(path, lines).unwrap();
}

/// SQuAD-format questions whose answer is the one "yes" among six context words.
fn write_qa(path: &Path, n: usize, seed: u64) {
    let mut next = lcg(seed);
    let mut articles = Vec::new();
    for i in 0..n {
        let mut words: Vec<&str> = (0..5).map(|_| FILLERS[next(FILLERS.len())]).collect();
        words.insert(next(6), "yes");
        let context = words.join(" ");
        let start = context.find("yes").unwrap();
        articles.push(serde_json::json!({"title": format!("t{i}"), "paragraphs": [{"context": context, "qas": [
            {"id": format!("q{i}"), "question": "what was the cause?", "answers": [{"text": "yes", "answer_start": start}]}
        ]}]}));
    }
    std::fs::write(path, serde_json::json!({"version": "1.1", "data": articles}).to_string()).unwrap();
}

fn tensors(dir: &Path, file: &str) -> Weights {
    Weights::read_safetensors(&dir.join(file), |n| Some(n.to_string())).unwrap()
}

fn column(path: &Path, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let i = header.iter().position(|h| *h == name).unwrap();
    lines.map(|l| l.split(',').nth(i).unwrap().to_string()).collect()
}

#[test]
fn gradual_unfreezing_trains_only_unfrozen_adapters() {
    let _guard = common::exclusive();
    let s = Setup::new();
    let short = s.config("gu1", "schedule = \"gu\"\nunfreeze_every = 2\nmax_steps = 1\n");
    Trainer::new(short, true).unwrap().run().unwrap();
    let long = s.config("gu3", "schedule = \"gu\"\nunfreeze_every = 2\nmax_steps = 3\n");
    Trainer::new(long, true).unwrap().run().unwrap();

    assert_eq!(column(&s.root.join("gu3/metrics.csv"), "trainable_adapters"), ["1", "1", "2"]);
    assert_eq!(std::fs::read_to_string(s.root.join("gu3/schedule.csv")).unwrap(), "layer,from_top,unfreeze_step\n0,1,2\n1,0,0\n");

    let a = tensors(&s.root.join("gu1/last"), "adapter.safetensors");
    let b = tensors(&s.root.join("gu3/last"), "adapter.safetensors");
    let (mut frozen, mut trained) = (0, 0);
    for name in a.names() {
        let (x, y) = (a.entry(name).unwrap().tensor().unwrap(), b.entry(name).unwrap().tensor().unwrap());
        if name.contains("layer.0.") {
            // layer 0 was frozen in the 1-step run; in the 3-step run it trained only at step
            // 2, so it differs there, while the 1-step run must still hold its initial values:
            // compare with a 2-step run below.
            continue;
        }
        assert!(name.contains("layer.1."), "{name}");
        assert_ne!(x.data, y.data, "{name}: the top adapter trains");
        trained += 1;
    }
    let two = s.config("gu2", "schedule = \"gu\"\nunfreeze_every = 2\nmax_steps = 2\n");
    Trainer::new(two, true).unwrap().run().unwrap();
    let c = tensors(&s.root.join("gu2/last"), "adapter.safetensors");
    for name in a.names().filter(|n| n.contains("layer.0.")) {
        assert_eq!(a.entry(name).unwrap().tensor().unwrap().data, c.entry(name).unwrap().tensor().unwrap().data, "{name}: frozen, bitwise unchanged");
        assert_ne!(c.entry(name).unwrap().tensor().unwrap().data, b.entry(name).unwrap().tensor().unwrap().data, "{name}: trains once unfrozen");
        frozen += 1;
    }
    assert_eq!((frozen, trained), (4, 4));
}

#[test]
fn loss_falls_on_a_learnable_task() {
    let _guard = common::exclusive();
    let s = Setup::new();
    let config = s.config("learn", "schedule = \"standard\"\nepochs = 20\neval_every = 12\nlr = 0.03\n");
    let summary = Trainer::new(config, true).unwrap().run().unwrap();
    let losses: Vec<f64> = column(&s.root.join("learn/metrics.csv"), "loss").iter().map(|x| x.parse().unwrap()).collect();
    let head: f64 = losses[..6].iter().sum::<f64>() / 6.0;
    let tail: f64 = losses[losses.len() - 6..].iter().sum::<f64>() / 6.0;
    assert!(tail < 0.2 * head, "loss {head:.3} -> {tail:.3}");
    let best = summary.best_score.unwrap();
    assert!(best >= 0.95, "validation accuracy {best}");
    assert!(s.root.join("learn/best/head_config.json").exists());
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let _guard = common::exclusive();
    let s = Setup::new();
    let extra = "schedule = \"fun\"\nunfreeze_every = 3\nfisher_every = 2\nfisher_batches = 2\nmax_steps = 6\nsave_every = 3\n";
    Trainer::new(s.config("full", extra), true).unwrap().run().unwrap();
    // Killed after step 5, with the last checkpoint at step 3: the resumed run starts with
    // FUN's measurement for step 3, while layer 0 is still frozen.
    let cut = s.config("cut", extra);
    Trainer::new(cut.clone(), true).unwrap().run_until(Some(5)).unwrap();
    Trainer::new(cut, true).unwrap().run().unwrap();
    for file in ["adapter.safetensors", "model_head.safetensors", "optimizer.safetensors"] {
        let full = std::fs::read(s.root.join("full/last").join(file)).unwrap();
        let cut = std::fs::read(s.root.join("cut/last").join(file)).unwrap();
        assert!(full == cut, "{file} differs after resume");
    }
    for file in ["metrics.csv", "fisher.csv", "fun_selection.csv", "validation.csv", "schedule.csv"] {
        let full = std::fs::read_to_string(s.root.join("full").join(file)).unwrap();
        let cut = std::fs::read_to_string(s.root.join("cut").join(file)).unwrap();
        assert_eq!(full, cut, "{file} differs after resume");
    }
    assert_eq!(column(&s.root.join("full/metrics.csv"), "step").len(), 6);
}

#[test]
fn resuming_with_another_config_is_refused() {
    let _guard = common::exclusive();
    let s = Setup::new();
    Trainer::new(s.config("x", "max_steps = 2\nsave_every = 1\n"), true).unwrap().run_until(Some(1)).unwrap();
    let err = Trainer::new(s.config("x", "max_steps = 2\nsave_every = 1\nreduction_factor = 8.0\n"), true).err().unwrap();
    assert!(format!("{err:#}").contains("different configuration (differing in reduction_factor,"), "{err:#}");
    // Nor is the spelling of a file's path: the same training file named through `.`.
    let mut respelled = s.config("x", "max_steps = 2\nsave_every = 1\n");
    let file = respelled.train_file.clone();
    respelled.train_file = file.parent().unwrap().join(".").join(file.file_name().unwrap());
    assert_ne!(respelled.train_file.to_str(), file.to_str());
    Trainer::new(respelled, true).unwrap();
    // The thread count is not part of a run's identity: a run may finish on more cores.
    let mut more_threads = s.config("x", "max_steps = 2\nsave_every = 1\n");
    more_threads.threads = Some(2);
    Trainer::new(more_threads, true).unwrap().run().unwrap();
    assert_eq!(column(&s.root.join("x/metrics.csv"), "step").len(), 2);
}

/// (layer, unfreeze step) rows of schedule.csv.
fn unfrozen(run: &Path) -> Vec<(usize, usize)> {
    let layers = column(&run.join("schedule.csv"), "layer");
    let steps = column(&run.join("schedule.csv"), "unfreeze_step");
    layers.iter().zip(&steps).map(|(l, s)| (l.parse().unwrap(), s.parse().unwrap())).collect()
}

#[test]
fn every_schedule_unfreezes_as_its_switches_say() {
    let _guard = common::exclusive();
    let s = Setup::new();
    // The fixture model has 2 layers: 1 = top, 0 = bottom. k = 2, 5 updates.
    // (run, config, schedule.csv rows, trainable adapters per update)
    type Case<'a> = (&'a str, &'a str, &'a [(usize, usize)], [&'a str; 5]);
    let cases: [Case; 8] = [
        ("lpft", "schedule = \"lpft\"", &[(0, 2), (1, 2)], ["0", "0", "2", "2", "2"]),
        ("gurev", "schedule = \"gu-rev\"", &[(0, 0), (1, 2)], ["1", "1", "2", "2", "2"]),
        ("gurev_top", "schedule = \"gu-rev\"\ntop_first = true", &[(0, 2), (1, 0)], ["1", "1", "2", "2", "2"]),
        ("order_code", "schedule = \"order:0,1\"\nevent_timing = \"code\"", &[(0, 0), (1, 1)], ["1", "2", "2", "2", "2"]),
        ("gu_code", "schedule = \"gu\"\nevent_timing = \"code\"", &[(0, 3), (1, 0)], ["1", "1", "1", "2", "2"]),
        ("gu_at", "schedule = \"gu\"\nunfreeze_at = [4]", &[(0, 4), (1, 0)], ["1", "1", "1", "1", "2"]),
        ("fun", "schedule = \"fun\"\nfisher_batches = 2", &[(0, 2), (1, 0)], ["1", "1", "2", "2", "2"]),
        ("standard", "schedule = \"standard\"", &[(0, 0), (1, 0)], ["2", "2", "2", "2", "2"]),
    ];
    for (name, extra, expected, trainable) in cases {
        let config = s.config(name, &format!("{extra}\nunfreeze_every = 2\nmax_steps = 5\n"));
        Trainer::new(config, true).unwrap().run().unwrap();
        let run = s.root.join(name);
        assert_eq!(unfrozen(&run), expected, "{name}: schedule.csv");
        assert_eq!(column(&run.join("metrics.csv"), "trainable_adapters"), trainable, "{name}: metrics.csv");
        let plan = std::fs::read_to_string(run.join("plan.txt")).unwrap();
        assert!(plan.contains("total updates: 5"), "{name}: {plan}");
    }
    // FUN logged the traces it compared and the one it chose.
    assert_eq!(column(&s.root.join("fun/fun_selection.csv"), "layer"), ["0"]);
    assert_eq!(column(&s.root.join("fun/fun_selection.csv"), "chosen"), ["1"]);
    // rand: both layers, one from the start, the other at k.
    let config = s.config("rand", "schedule = \"rand\"\nunfreeze_every = 2\nmax_steps = 3\n");
    Trainer::new(config, true).unwrap().run().unwrap();
    let mut steps: Vec<usize> = unfrozen(&s.root.join("rand")).iter().map(|r| r.1).collect();
    steps.sort();
    assert_eq!(steps, [0, 2]);
}

#[test]
fn validation_runs_every_n_steps_and_at_epoch_ends_as_configured() {
    let _guard = common::exclusive();
    let s = Setup::new();
    // 96 rows at batch 16: 6 updates an epoch, 14 updates in all.
    let steps = |name: &str| column(&s.root.join(name).join("validation.csv"), "step");
    Trainer::new(s.config("epochs", "max_steps = 14\n"), true).unwrap().run().unwrap();
    assert_eq!(steps("epochs"), ["6", "12", "14"]);
    Trainer::new(s.config("both", "max_steps = 14\neval_every = 4\n"), true).unwrap().run().unwrap();
    assert_eq!(steps("both"), ["4", "6", "8", "12", "14"]);
    Trainer::new(s.config("code", "max_steps = 14\neval_every = 4\neval_each_epoch = false\n"), true).unwrap().run().unwrap();
    assert_eq!(steps("code"), ["4", "8", "12", "14"]);
}

#[test]
fn a_schedule_that_cannot_finish_is_recorded() {
    let _guard = common::exclusive();
    let s = Setup::new();
    let config = s.config("short", "schedule = \"gu\"\nunfreeze_every = 3\nmax_steps = 3\n");
    Trainer::new(config, true).unwrap().run().unwrap();
    let plan = std::fs::read_to_string(s.root.join("short/plan.txt")).unwrap();
    assert!(plan.contains("warning: the schedule cannot finish: 1 of 2 task adapters"), "{plan}");
    assert_eq!(unfrozen(&s.root.join("short")), [(1, 0)]);
}

#[test]
fn training_starts_from_a_given_task_adapter_and_head() {
    let _guard = common::exclusive();
    let s = Setup::new();
    // A static Hugging Face head saved by the `adapters` library (BertForMultipleChoice), with
    // its task adapter; lr 0 keeps the starting weights, so the checkpoint shows what loaded.
    let init = common::repo().join("tests/fixtures/parity/bert_stack_mc_static/task");
    let config = s.config("init", &format!("init_adapter = {init:?}\nlr = 0.0\nmax_steps = 1\n"));
    Trainer::new(config, true).unwrap().run().unwrap();
    let saved = tensors(&s.root.join("init/last"), "adapter.safetensors");
    let given = tensors(&init, "adapter.safetensors");
    let mut names: Vec<&str> = given.names().collect();
    names.sort();
    assert_eq!(names.len(), 8);
    for name in names {
        assert_eq!(saved.entry(name).unwrap().tensor().unwrap().data, given.entry(name).unwrap().tensor().unwrap().data, "{name}");
    }
    // The static head comes back as the library's flex head of the adapter's name.
    let head = tensors(&s.root.join("init/last"), "model_head.safetensors");
    let static_head = tensors(&init, "model_head.safetensors");
    assert_eq!(head.entry("heads.task.1.weight").unwrap().tensor().unwrap().data, static_head.entry("classifier.weight").unwrap().tensor().unwrap().data);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(s.root.join("init/last/head_config.json")).unwrap()).unwrap();
    assert_eq!(json["config"]["head_type"], "multiple_choice");
    assert_eq!(json["config"]["use_pooler"], true);

    // A head of another task is refused, naming the directory.
    let nli_head = common::repo().join("tests/fixtures/parity/bert_stack_cls_static/task");
    let err = Trainer::new(s.config("wrong", &format!("init_adapter = {nli_head:?}\nmax_steps = 1\n")), true).err().unwrap();
    assert!(format!("{err:#}").contains("bert_stack_cls_static/task: the head is for Classification"), "{err:#}");
}

/// NLI and QA through the trainer, as COPA above: the loss falls, validation scores the
/// learnt rule, the run's files are written, and the best checkpoint loads with its task's head.
#[test]
fn nli_and_qa_runs_learn_write_their_files_and_load_back() {
    let _guard = common::exclusive();
    let s = Setup::new();
    write_nli(&s.root.join("nli-train.jsonl"), 96, 11);
    write_nli(&s.root.join("nli-val.jsonl"), 32, 12);
    write_qa(&s.root.join("qa-train.json"), 96, 13);
    write_qa(&s.root.join("qa-val.json"), 32, 14);
    // (task, files, head type, lowest validation score: accuracy is a fraction, F1 a percentage)
    let runs = [
        ("nli", "nli-train.jsonl", "nli-val.jsonl", HeadType::Classification, 0.9),
        ("qa", "qa-train.json", "qa-val.json", HeadType::QuestionAnswering, 90.0),
    ];
    for (task, train, validation, head_type, lowest) in runs {
        let extra = "schedule = \"standard\"\nepochs = 40\nlr = 0.1\ndoc_stride = 4\n";
        let summary = Trainer::new(s.config_for(task, task, train, validation, extra), true).unwrap().run().unwrap();
        let run = s.root.join(task);
        let losses: Vec<f64> = column(&run.join("metrics.csv"), "loss").iter().map(|x| x.parse().unwrap()).collect();
        assert_eq!(losses.len(), 240, "{task}: 40 epochs of 6 updates");
        let head: f64 = losses[..6].iter().sum::<f64>() / 6.0;
        let tail: f64 = losses[losses.len() - 6..].iter().sum::<f64>() / 6.0;
        eprintln!("{task}: loss {head:.3} -> {tail:.3}, best {:?}", summary.best_score);
        assert!(tail < 0.5 * head, "{task}: loss {head:.3} -> {tail:.3}");
        let best = summary.best_score.unwrap();
        assert!(best >= lowest, "{task}: best validation score {best}");
        assert_eq!(column(&run.join("validation.csv"), "step").len(), 40, "{task}: validated after each epoch");
        for file in ["adapter.safetensors", "adapter_config.json", "head_config.json", "model_head.safetensors"] {
            assert!(run.join("best").join(file).is_file() && run.join("last").join(file).is_file(), "{task}: {file}");
        }
        let files = ModelFiles {
            model_dir: s.root.join("model"),
            lang_adapter: Some(common::tiny::lang_adapter()),
            task_adapter: Some(run.join("best")),
        };
        let model = ComposedModel::load(&files).unwrap_or_else(|e| panic!("{task}: {e:#}"));
        let head = model.head.as_ref().unwrap_or_else(|| panic!("{task}: the checkpoint has no head"));
        assert_eq!(head.head_type, head_type, "{task}");
        let labels = if head_type == HeadType::Classification { 3 } else { 2 };
        assert_eq!(head.num_outputs(), labels, "{task}: head outputs");
    }
}
