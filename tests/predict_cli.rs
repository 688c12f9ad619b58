//! `toolkit predict` end to end: JSONL in, JSONL out, equal to the reference logits.
#![cfg(feature = "train")]

mod common;

use common::{max_abs_diff, Case};
use serde_json::{json, Value};

#[test]
fn predict_writes_reference_logits_for_unpadded_inputs() {
    reference_logits_through_predict(false);
}

#[test]
fn predict_honours_the_attention_mask_of_padded_inputs() {
    // Rows as Hugging Face tokenizers pad them, with their mask: the same logits.
    reference_logits_through_predict(true);
}

fn reference_logits_through_predict(padded: bool) {
    // Heads in the model, saved as flex heads, saved as Hugging Face heads with the adapter.
    for name in ["bert_stack_mc_hf", "xlmr_stack_cls_flex", "bert_stack_qa_hf", "bert_stack_cls_static", "xlmr_stack_qa_static", "xlmr_stack_mc_static"] {
        let case = Case::load(&common::repo().join("tests/fixtures/parity").join(name));
        let (ids, shape) = case.input("input_ids").unwrap();
        let (mask, _) = case.input("attention_mask").unwrap();
        let types = case.input("token_type_ids").map(|(t, _)| t);
        let seq = *shape.last().unwrap();
        // One line per example: pads stripped (predict pads each batch itself), or kept with
        // the mask that marks them.
        let row = |r: usize| {
            let real = mask[r * seq..(r + 1) * seq].iter().filter(|&&m| m == 1).count();
            let len = if padded { seq } else { real };
            let mut v = json!({"input_ids": ids[r * seq..r * seq + len], "id": format!("row{r}")});
            if padded {
                v["attention_mask"] = json!(mask[r * seq..r * seq + len]);
            }
            if let Some(t) = &types {
                v["token_type_ids"] = json!(t[r * seq..r * seq + len]);
            }
            v
        };
        let lines: Vec<Value> = if shape.len() == 3 {
            let choice = |r: usize| {
                let mut v = row(r);
                v.as_object_mut().unwrap().remove("id");
                v
            };
            (0..shape[0]).map(|b| json!({"choices": (0..shape[1]).map(|c| choice(b * shape[1] + c)).collect::<Vec<_>>(), "id": format!("row{b}")})).collect()
        } else {
            (0..shape[0]).map(row).collect()
        };
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        let output = dir.path().join("out.jsonl");
        std::fs::write(&input, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        let files = case.files();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_toolkit"));
        cmd.args(["predict", "--device", &common::test_device_arg(), "--batch-size", "2", "--model"]).arg(&files.model_dir);
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
                assert_eq!(line["id"], format!("row{r}"), "{name}: the id comes back");
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

#[test]
fn predict_refuses_what_it_would_otherwise_ignore() {
    let case = Case::load(&common::repo().join("tests/fixtures/parity/bert_stack_cls_hf"));
    let files = case.files();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    for (line, message) in [
        (r#"{"input_ids": [101, 5, 102], "position_ids": [0, 1, 2]}"#, "unknown key `position_ids`"),
        (r#"{"input_ids": [0, 101, 5, 102], "attention_mask": [0, 1, 1, 1]}"#, "ones followed by zeros"),
        (r#"{"input_ids": [101, 5, 102], "attention_mask": [1, 1]}"#, "`attention_mask` has 2 entries"),
    ] {
        std::fs::write(&input, format!("{line}\n")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_toolkit"))
            .args(["predict", "--device", "cpu", "--model"])
            .arg(&files.model_dir)
            .arg("--input")
            .arg(&input)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("in.jsonl:1") && err.contains(message), "{line}: {err}");
    }
}
