//! `toolkit predict` end to end: JSONL in, JSONL out, equal to the reference logits.
#![cfg(feature = "train")]

mod common;

use common::{max_abs_diff, Case};
use serde_json::{json, Value};

#[test]
fn predict_writes_reference_logits_for_unpadded_inputs() {
    // Heads in the model, saved as flex heads, saved as Hugging Face heads with the adapter.
    for name in ["bert_stack_mc_hf", "xlmr_stack_cls_flex", "bert_stack_qa_hf", "bert_stack_cls_static", "xlmr_stack_qa_static", "xlmr_stack_mc_static"] {
        let case = Case::load(&common::repo().join("tests/fixtures/parity").join(name));
        let (ids, shape) = case.input("input_ids").unwrap();
        let (mask, _) = case.input("attention_mask").unwrap();
        let types = case.input("token_type_ids").map(|(t, _)| t);
        let seq = *shape.last().unwrap();
        // One line per example, pads stripped: predict pads each batch itself.
        let row = |r: usize| {
            let len = mask[r * seq..(r + 1) * seq].iter().filter(|&&m| m == 1).count();
            let mut v = json!({"input_ids": ids[r * seq..r * seq + len]});
            if let Some(t) = &types {
                v["token_type_ids"] = json!(t[r * seq..r * seq + len]);
            }
            v
        };
        let lines: Vec<Value> = if shape.len() == 3 {
            (0..shape[0]).map(|b| json!({"choices": (0..shape[1]).map(|c| row(b * shape[1] + c)).collect::<Vec<_>>()})).collect()
        } else {
            (0..shape[0]).map(row).collect()
        };
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        let output = dir.path().join("out.jsonl");
        std::fs::write(&input, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        let files = case.files();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_toolkit"));
        cmd.args(["predict", "--device", "cpu", "--batch-size", "2", "--model"]).arg(&files.model_dir);
        if let Some(l) = &files.lang_adapter {
            cmd.arg("--lang-adapter").arg(l);
        }
        if let Some(t) = &files.task_adapter {
            cmd.arg("--task-adapter").arg(t);
        }
        let status = cmd.arg("--input").arg(&input).arg("--output").arg(&output).status().unwrap();
        assert!(status.success(), "{name}: predict failed");
        let got: Vec<Value> = std::fs::read_to_string(&output).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(got.len(), lines.len());
        for (out_name, expected, eshape) in case.outputs() {
            let width = eshape[1];
            for (r, line) in got.iter().enumerate() {
                let ours: Vec<f64> = line[&out_name].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
                // Span logits come back without the pad positions.
                let reference = &expected[r * width..r * width + ours.len()];
                let diff = max_abs_diff(&ours, reference);
                assert!(diff < 1e-5, "{name} {out_name} row {r}: {diff:e}");
            }
        }
    }
}

#[test]
fn predict_names_the_bad_line() {
    let case = Case::load(&common::repo().join("tests/fixtures/parity/bert_stack_cls_hf"));
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"input_ids\": [2, 5, 3]}\n{\"input_ids\": \"oops\"}\n").unwrap();
    let files = case.files();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_toolkit"))
        .args(["predict", "--device", "cpu", "--model"])
        .arg(&files.model_dir)
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in.jsonl:2") && err.contains("input_ids"), "{err}");
}
