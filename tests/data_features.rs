//! Features: NLI pairs, COPA choices, QA windows, padding, the token-budget batcher and the
//! seeded training subset, on a small WordPiece vocabulary written by the test.
use std::path::Path;
use std::sync::Arc;

use tokenizers::Tokenizer;
use toolkit::data::nli::NliLabel;
use toolkit::data::{Answer, CopaExample, CopaQuestion, NliExample, QaExample};
use toolkit::features::{
    copa_context, copa_features, nli_features, pad_id, qa_features, tokenizer, train_subset, BatchPlan, FeatureBatch,
    Sequence, CLS_INDEX,
};

const WORDS: &str = "the a man dog cat turned on faucet water flowed what was cause effect ? . , \
    paris is in france where capital of city river big small very old new";

fn small_tokenizer() -> (tempfile::TempDir, Tokenizer) {
    let dir = tempfile::tempdir().unwrap();
    let vocab: Vec<&str> =
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].into_iter().chain(WORDS.split_whitespace()).collect();
    std::fs::write(dir.path().join("vocab.txt"), vocab.join("\n")).unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), r#"{"do_lower_case": true}"#).unwrap();
    let tokenizer = tokenizer::load(dir.path()).unwrap();
    (dir, tokenizer)
}

fn ids(tokenizer: &Tokenizer, words: &str) -> Vec<i64> {
    words.split_whitespace().map(|w| i64::from(tokenizer.token_to_id(w).unwrap())).collect()
}

#[test]
fn nli_pairs_are_cut_longest_first() {
    let (_dir, tokenizer) = small_tokenizer();
    let example = NliExample {
        id: "1".into(),
        premise: "The man turned on the faucet".into(),
        hypothesis: "Water flowed".into(),
        label: NliLabel::Entailment,
    };
    let full = &nli_features(&tokenizer, std::slice::from_ref(&example), 128).unwrap()[0];
    let expected = ids(&tokenizer, "[CLS] the man turned on the faucet [SEP] water flowed [SEP]");
    assert_eq!(full.input_ids, expected);
    assert_eq!(full.token_type_ids, [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]);
    // Longest first: the premise (6 tokens) loses tokens until it is no longer the longer one.
    let cut = &nli_features(&tokenizer, &[example], 8).unwrap()[0];
    assert_eq!(cut.input_ids, ids(&tokenizer, "[CLS] the man turned [SEP] water flowed [SEP]"));
}

#[test]
fn copa_pairs_each_choice_with_premise_and_question() {
    let (_dir, tokenizer) = small_tokenizer();
    let example = CopaExample {
        idx: 0,
        premise: "The man turned on the faucet.".into(),
        choices: ["Water flowed.".into(), "The dog is old.".into()],
        question: CopaQuestion::Effect,
        label: 0,
    };
    assert_eq!(copa_context(&example), "The man turned on the faucet. What was the effect?");
    let features = copa_features(&tokenizer, &[example], 512).unwrap();
    let [first, second] = &features[0];
    let context = "[CLS] the man turned on the faucet . what was the effect ? [SEP]";
    assert_eq!(first.input_ids, ids(&tokenizer, &format!("{context} water flowed . [SEP]")));
    assert_eq!(second.input_ids, ids(&tokenizer, &format!("{context} the dog is old . [SEP]")));
    assert_eq!(second.token_type_ids.iter().filter(|&&t| t == 1).count(), 6);
}

#[test]
fn qa_windows_cover_the_context_and_label_the_answer() {
    let (_dir, tokenizer) = small_tokenizer();
    let context = "paris is a big old city , paris is the capital of france , the river is very old .";
    let start = context.find("the capital of france").unwrap();
    let example = QaExample {
        id: "q".into(),
        title: String::new(),
        context: Arc::from(context),
        question: "  where is the capital".into(),
        answers: vec![Answer { text: "the capital of france".into(), start }],
    };
    // 4 question tokens + 3 special tokens leave 7 context tokens per window, 3 shared.
    let features = qa_features(&tokenizer, &[example], 14, 3).unwrap();
    assert!(features.len() > 1);
    let context_words: Vec<&str> = context.split(' ').collect();
    let mut windows: Vec<Vec<(usize, usize)>> = Vec::new();
    for feature in &features {
        let sequence = &feature.sequence;
        assert!(sequence.len() <= 14);
        assert_eq!(&sequence.input_ids[..6], ids(&tokenizer, "[CLS] where is the capital [SEP]"));
        assert_eq!(sequence.input_ids.last(), ids(&tokenizer, "[SEP]").last());
        // Context tokens are exactly the positions between the two [SEP]s, and each one's
        // offsets cut its own word out of the context.
        let n = sequence.len();
        for (i, offset) in feature.context_offsets.iter().enumerate() {
            assert_eq!(offset.is_some(), (6..n - 1).contains(&i), "position {i}");
            if let Some((from, to)) = *offset {
                assert_eq!(ids(&tokenizer, &context[from..to]), [sequence.input_ids[i]], "position {i}");
            }
        }
        windows.push(feature.context_offsets.iter().flatten().copied().collect());
        if feature.start_position != CLS_INDEX {
            let (s, e) = (feature.start_position, feature.end_position);
            let (from, to) = (feature.context_offsets[s].unwrap().0, feature.context_offsets[e].unwrap().1);
            assert_eq!(&context[from..to], "the capital of france");
        }
    }
    // 7 context tokens per window but the last; consecutive windows share exactly 3; together
    // they are the context's words in order, each once.
    assert!(windows[..windows.len() - 1].iter().all(|w| w.len() == 7), "{windows:?}");
    for pair in windows.windows(2) {
        assert_eq!(pair[0][4..], pair[1][..3], "the stride");
    }
    let mut covered: Vec<(usize, usize)> = windows[0].clone();
    for w in &windows[1..] {
        covered.extend(&w[3..]);
    }
    let words: Vec<&str> = covered.iter().map(|&(from, to)| &context[from..to]).collect();
    assert_eq!(words, context_words);
    assert!(features.iter().any(|f| f.start_position != CLS_INDEX));
    assert!(features.iter().any(|f| f.start_position == CLS_INDEX), "a window without the answer points at CLS");
}

#[test]
fn every_qa_window_has_the_first_windows_token_types() {
    // An XLM-R-style template: both sequences typed 0, as e5's tokenizer.json has it.
    let (_dir, mut tokenizer) = small_tokenizer();
    let template = tokenizers::processors::template::TemplateProcessing::builder()
        .try_single("[CLS] $A [SEP]")
        .unwrap()
        .try_pair("[CLS] $A [SEP] [SEP] $B:0 [SEP]")
        .unwrap()
        .special_tokens(vec![("[CLS]", 2), ("[SEP]", 3)])
        .build()
        .unwrap();
    tokenizer.with_post_processor(Some(template));
    let context = "paris is a big old city , paris is the capital of france , the river is very old .";
    let example = QaExample {
        id: "q".into(),
        title: String::new(),
        context: Arc::from(context),
        question: "where is the capital".into(),
        answers: vec![],
    };
    let features = qa_features(&tokenizer, &[example], 14, 3).unwrap();
    assert!(features.len() > 2);
    for feature in &features {
        assert!(feature.sequence.token_type_ids.iter().all(|&t| t == 0), "{:?}", feature.sequence.token_type_ids);
        assert_eq!(feature.sequence.input_ids[..7], ids(&tokenizer, "[CLS] where is the capital [SEP] [SEP]")[..]);
    }
}

fn seq(ids: &[i64]) -> Sequence {
    Sequence { input_ids: ids.to_vec(), token_type_ids: vec![0; ids.len()] }
}

#[test]
fn batches_are_padded_to_their_longest_sequence() {
    let rows = [seq(&[5, 6, 7]), seq(&[8])];
    let refs: Vec<&[Sequence]> = rows.iter().map(std::slice::from_ref).collect();
    let batch = FeatureBatch::pad(&refs, 0);
    assert_eq!(batch.shape, [2, 3]);
    assert_eq!(batch.input_ids, [5, 6, 7, 8, 0, 0]);
    assert_eq!(batch.attention_mask, [1, 1, 1, 1, 0, 0]);
    assert_eq!((batch.real_tokens(), batch.padded_tokens()), (4, 6));

    let choices = [[seq(&[1, 2]), seq(&[3])], [seq(&[4]), seq(&[5])]];
    let refs: Vec<&[Sequence]> = choices.iter().map(|c| &c[..]).collect();
    let batch = FeatureBatch::pad(&refs, 9);
    assert_eq!(batch.shape, [2, 2, 2]);
    assert_eq!(batch.input_ids, [1, 2, 3, 9, 4, 9, 5, 9]);
}

#[test]
fn pad_id_comes_from_the_vocabulary() {
    let (_dir, tokenizer) = small_tokenizer();
    assert_eq!(pad_id(&tokenizer).unwrap(), 0);
}

#[test]
fn length_sorted_batches_stay_within_the_token_budget() {
    let lengths = [30, 5, 12, 7, 30, 6, 100, 11, 29, 8];
    let rows: Vec<Sequence> = lengths.iter().map(|&n| seq(&vec![1; n])).collect();
    let items: Vec<&[Sequence]> = rows.iter().map(std::slice::from_ref).collect();
    let plan = BatchPlan::length_sorted(&items, 64, None);
    let mut seen: Vec<usize> = plan.batches.iter().flatten().copied().collect();
    seen.sort();
    assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
    for batch in &plan.batches {
        let longest = batch.iter().map(|&i| lengths[i]).max().unwrap();
        assert!(batch.len() * longest <= 64 || batch.len() == 1, "{batch:?}");
    }
    assert!(plan.batches.contains(&vec![6]), "the 100-token item is alone");
    assert_eq!(plan.real_tokens, lengths.iter().sum::<usize>());
    let padded: usize = plan.batches.iter().map(|b| b.len() * b.iter().map(|&i| lengths[i]).max().unwrap()).sum();
    assert_eq!(plan.padded_tokens, padded);
    assert!((plan.padding_fraction() - (1.0 - plan.real_tokens as f64 / padded as f64)).abs() < 1e-12);

    let capped = BatchPlan::length_sorted(&items, 10_000, Some(3));
    assert_eq!(capped.batches.len(), 4);
}

#[test]
fn multiple_choice_items_count_every_choice() {
    let choices = [[seq(&[1; 10]), seq(&[1; 4])], [seq(&[1; 9]), seq(&[1; 9])]];
    let items: Vec<&[Sequence]> = choices.iter().map(|c| &c[..]).collect();
    let plan = BatchPlan::length_sorted(&items, 40, None);
    assert_eq!(plan.batches.len(), 1, "2 items x 2 choices x 10 tokens = 40");
    assert_eq!((plan.real_tokens, plan.padded_tokens), (32, 40));
    assert_eq!(BatchPlan::length_sorted(&items, 39, None).batches.len(), 2);
}

#[test]
fn train_subset_is_seeded_uniform_and_in_file_order() {
    let a = train_subset(1000, 50, 7);
    assert_eq!(a, train_subset(1000, 50, 7));
    assert_ne!(a, train_subset(1000, 50, 8));
    assert_eq!(a.len(), 50);
    assert!(a.windows(2).all(|w| w[0] < w[1]));
    assert!(a.iter().all(|&i| i < 1000));
    assert_eq!(train_subset(5, 50, 7), [0, 1, 2, 3, 4]);
}

#[test]
fn tokenizer_dir_without_files_is_an_error() {
    let empty = tempfile::tempdir().unwrap();
    let err = tokenizer::load(empty.path()).unwrap_err();
    assert!(err.to_string().contains("neither tokenizer.json nor vocab.txt"), "{err:#}");
    let err = tokenizer::load(Path::new("/nonexistent")).unwrap_err();
    assert!(format!("{err:#}").contains("no such model directory"), "{err:#}");
}
