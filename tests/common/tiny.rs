//! The tiny fixture BERT with a WordPiece vocabulary of its size and COPA-style files where
//! the right choice is the one saying "yes": whole training runs in seconds.
use std::path::{Path, PathBuf};

const WORDS: [&str; 20] = [
    "yes", "no", "man", "dog", "ran", "sat", "ate", "rain", "sun", "cold", "hot", "big", "old", "new", "red", "blue",
    "tree", "house", "car", "food",
];

/// In `root`: model/ (config.json, model.safetensors, vocab.txt), train.jsonl (96 items),
/// val.jsonl (32 items).
pub fn write_model_and_data(root: &Path) {
    let fixture = super::repo().join("tests/fixtures/parity/bert_stack_cls_flex");
    std::fs::create_dir_all(root.join("model")).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join("model").join(f), root.join("model").join(f)).unwrap();
    }
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "was", "the", "cause", "effect", "?", "."]
        .iter()
        .map(|s| s.to_string())
        .collect();
    vocab.extend(WORDS.iter().map(|s| s.to_string()));
    while vocab.len() < 120 {
        vocab.push(format!("unused{}", vocab.len()));
    }
    std::fs::write(root.join("model/vocab.txt"), vocab.join("\n") + "\n").unwrap();
    write_copa(&root.join("train.jsonl"), 96, 1);
    write_copa(&root.join("val.jsonl"), 32, 2);
}

/// The fixture's language adapter.
pub fn lang_adapter() -> PathBuf {
    super::repo().join("tests/fixtures/parity/bert_stack_cls_flex/lang")
}

pub fn write_copa(path: &Path, n: usize, seed: u64) {
    let mut state = seed;
    let mut next = |m: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % m
    };
    let mut lines = String::new();
    for i in 0..n {
        let mut words = |k: usize| (0..k).map(|_| WORDS[2 + next(WORDS.len() - 2)]).collect::<Vec<_>>().join(" ");
        let premise = words(3);
        let right = format!("yes {}", words(1));
        let wrong = format!("no {}", words(1));
        let label = next(2);
        let (c1, c2) = if label == 0 { (right, wrong) } else { (wrong, right) };
        let question = if next(2) == 0 { "cause" } else { "effect" };
        lines.push_str(&format!(
            "{{\"premise\": \"{premise}.\", \"choice1\": \"{c1}.\", \"choice2\": \"{c2}.\", \"question\": \"{question}\", \"label\": {label}, \"idx\": {i}}}\n"
        ));
    }
    std::fs::write(path, lines).unwrap();
}

/// A sweep over the tiny model in `root` (after `write_model_and_data`): schedule standard /
/// gu x seeds 1, 2 (plus `grid_extra` lines under [grid]), `epochs` epochs of 6 updates, a
/// checkpoint after every update, scored on a two-language COPA suite. Returns the file.
pub fn write_sweep(root: &Path, name: &str, epochs: usize, grid_extra: &str) -> PathBuf {
    std::fs::write(
        root.join("base.toml"),
        format!(
            "model = {:?}\ntask = \"copa\"\ntrain_file = {:?}\nvalidation_file = {:?}\nout = \"unused\"\n\
             max_length = 16\nbatch_size = 16\nthreads = 1\nepochs = {epochs}\nsave_every = 1\nunfreeze_every = 20\n",
            root.join("model"),
            root.join("train.jsonl"),
            root.join("val.jsonl"),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("eval")).unwrap();
    write_copa(&root.join("eval/en.jsonl"), 24, 3);
    write_copa(&root.join("eval/xx.jsonl"), 24, 4);
    std::fs::write(
        root.join("tiny-copa.toml"),
        "name = \"tiny-copa\"\ndescription = \"COPA-style fixtures\"\ntask = \"copa\"\nsource_language = \"en\"\n\
         languages = [\"en\", \"xx\"]\nsplit = \"test\"\nmetrics = [\"accuracy\"]\nprimary_metric = \"accuracy\"\n\
         [features]\nmax_length = 16\n[data]\npath = \"eval/{lang}.jsonl\"\n",
    )
    .unwrap();
    let file = root.join(format!("{name}.toml"));
    std::fs::write(
        &file,
        format!(
            "name = \"tiny\"\nconfig = {:?}\nout = {:?}\n[grid]\nschedule = [\"standard\", \"gu\"]\nseed = [1, 2]\n{grid_extra}\n\
             [eval]\nsuites = [{:?}]\ndata_dir = {:?}\nthreads = 1\n[slurm]\nthrottle = 2\n[slurm.train]\ncpus = 1\nmem = \"1G\"\n\
             [slurm.score]\ncpus = 1\nmem = \"1G\"\n",
            root.join("base.toml"),
            root.join(name),
            root.join("tiny-copa.toml"),
            root,
        ),
    )
    .unwrap();
    file
}
