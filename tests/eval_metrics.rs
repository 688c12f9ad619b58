//! The official metrics' rules, each on hand-checked cases (the expected values were worked
//! out from the scripts' text: `evaluate-v1.1.py`, `mlqa_evaluation_v1.py`, FUN's zh variant).
use std::collections::HashMap;
use std::sync::Arc;

use toolkit::data::{Answer, QaExample};
use toolkit::scoring::{accuracy, exact_match, f1, score_predictions, AnswerNormalization, AnswerScheme};

fn mlqa(lang: &str) -> AnswerNormalization {
    AnswerScheme::MlqaV1.for_language(lang).unwrap()
}

const SQUAD: AnswerNormalization = AnswerNormalization::SQUAD;

#[test]
fn squad_lowercases_drops_ascii_punctuation_and_articles() {
    assert_eq!(SQUAD.normalize("The Quick, Brown Fox!"), "quick brown fox");
    assert_eq!(SQUAD.normalize("an apple a day"), "apple day");
    assert_eq!(SQUAD.normalize("theater another anthem"), "theater another anthem");
    assert_eq!(SQUAD.normalize("Ángel's  café"), "ángels café");
    assert_eq!(SQUAD.normalize("A_B"), "ab", "underscore is ASCII punctuation");
    assert_eq!(SQUAD.normalize("the 1st"), "1st");
}

#[test]
fn squad_keeps_non_ascii_punctuation() {
    // «» and — are not in string.punctuation; "the" between guillemets is still a word.
    assert_eq!(SQUAD.tokens("«The» Paris—France"), ["«", "»", "paris—france"]);
    assert_eq!(SQUAD.normalize("北京，中国。"), "北京，中国。");
}

#[test]
fn article_boundaries_follow_python_unicode_word_characters() {
    // Letters of any script are word characters: "ñthe" is one word, not an article.
    assert_eq!(SQUAD.normalize("ñthe a"), "ñthe");
    // Digits too.
    assert_eq!(SQUAD.normalize("2the the2 the"), "2the the2");
    // Combining marks are not word characters in Python's `re`, so "the" + U+0301 still
    // ends at a word boundary and is removed, leaving the mark.
    assert_eq!(SQUAD.normalize("the\u{301} end"), "\u{301} end");
}

#[test]
fn whitespace_is_python_str_split() {
    assert_eq!(SQUAD.tokens("x\u{3000}y\u{a0}z"), ["x", "y", "z"]);
    assert_eq!(SQUAD.tokens("x\u{1f}y"), ["x", "y"], "Python splits on the U+001C-U+001F separators");
    assert_eq!(SQUAD.tokens("x\u{200b}y"), ["x\u{200b}y"], "zero-width space is not whitespace");
    assert!(SQUAD.tokens("  \t\n").is_empty());
}

#[test]
fn greek_final_sigma_lowercases_as_python() {
    assert_eq!(SQUAD.normalize("ΟΔΟΣ ΑΘΗΝΑΣ"), "οδο\u{3c2} αθηνα\u{3c2}", "final sigma");
}

#[test]
fn f1_and_exact_match() {
    assert!(exact_match(&SQUAD, "The Eiffel Tower.", "eiffel tower"));
    assert!(!exact_match(&SQUAD, "Eiffel Tower in Paris", "eiffel tower"));
    assert!((f1(&SQUAD, "the cat sat", "a cat sat down") - 0.8).abs() < 1e-12);
    // Shared tokens are counted as a multiset: x once, y once.
    assert!((f1(&SQUAD, "x x y", "x y y") - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(f1(&SQUAD, "", "paris"), 0.0);
    // Both normalise to nothing: exact match, but F1 0 (no shared token), as in the script.
    assert!(exact_match(&SQUAD, "the", "a"));
    assert_eq!(f1(&SQUAD, "the", "a"), 0.0);
}

#[test]
fn mlqa_removes_all_unicode_punctuation() {
    assert_eq!(mlqa("en").tokens("«The» Paris—France"), ["parisfrance"]);
    assert_eq!(mlqa("hi").normalize("दिल्ली।"), "दिल्ली", "the danda is punctuation");
    // ASCII symbols are in string.punctuation even though they are not category P.
    assert_eq!(mlqa("en").normalize("$5 + 3 = 8"), "5 3 8");
}

#[test]
fn mlqa_articles_per_language() {
    assert_eq!(mlqa("en").normalize("The Nile is a river"), "nile is river");
    assert_eq!(mlqa("es").normalize("La casa de los Pérez y unas flores"), "casa de pérez y flores");
    assert_eq!(mlqa("de").normalize("Der Rhein und die Donau, dieser Fluss"), "rhein und donau dieser fluss");
    assert_eq!(mlqa("vi").normalize("Thủ đô của Việt Nam là Hà Nội"), "thủ đô việt nam hà nội");
    assert_eq!(mlqa("hi").normalize("एक लड़का"), "एक लड़का", "Hindi has no articles to drop");
    // English articles mean nothing to German.
    assert_eq!(mlqa("de").normalize("the Rhein"), "the rhein");
}

#[test]
fn mlqa_arabic_removes_every_al_even_inside_words() {
    assert_eq!(mlqa("ar").normalize("القاهرة"), "قاهرة");
    // الهلال = ال + هل + ال: both occurrences go.
    assert_eq!(mlqa("ar").normalize("الهلال"), "هل");
    assert_eq!(mlqa("ar").normalize("نهر النيل."), "نهر نيل");
}

#[test]
fn mlqa_chinese_mixed_segmentation() {
    assert_eq!(mlqa("zh").normalize("北京是首都。"), "北 京 是 首 都");
    assert_eq!(mlqa("zh").tokens("北京2008年Olympics Games"), ["北", "京", "2008", "年", "olympics", "games"]);
    // Outside U+4E00-U+9FA5 (here U+9FA6) a character stays in its run.
    assert_eq!(mlqa("zh").tokens("\u{9fa6}x 北"), ["\u{9fa6}x", "北"]);
    assert!((f1(&mlqa("zh"), "北京大学", "北京") - 2.0 / 3.0).abs() < 1e-12);
    assert!(!exact_match(&mlqa("zh"), "北京大学", "北京"));
    assert!(exact_match(&mlqa("zh"), "北京。", "北 京"));
}

#[test]
fn fun_zh_variant_keeps_full_width_punctuation_as_tokens() {
    let fun = AnswerScheme::FunZh.for_language("zh").unwrap();
    assert_eq!(fun.normalize("北京，中国"), "北 京 ， 中 国");
    assert_eq!(fun.normalize("The 北京!"), "the 北 京", "no article removal; ASCII punctuation dropped");
    assert!(!exact_match(&fun, "北京。", "北京"));
    assert!(exact_match(&mlqa("zh"), "北京。", "北京"));
}

#[test]
fn mlqa_rejects_languages_its_script_does_not_know() {
    let err = AnswerScheme::MlqaV1.for_language("fr").unwrap_err();
    assert!(err.to_string().contains("\"fr\""), "{err}");
    assert!(AnswerScheme::SquadV11.for_language("fr").is_ok());
}

fn example(id: &str, golds: &[&str]) -> QaExample {
    QaExample {
        id: id.into(),
        title: String::new(),
        context: Arc::from(golds.join(" ")),
        question: "?".into(),
        answers: golds.iter().map(|g| Answer { text: g.to_string(), start: 0 }).collect(),
    }
}

#[test]
fn totals_take_the_best_gold_and_count_unanswered_questions() {
    let examples = [
        example("q1", &["Denver Broncos", "the Broncos"]),
        example("q2", &["a cat sat down", "dog"]),
        example("q3", &["Paris"]),
    ];
    let predictions: HashMap<String, String> =
        [("q1", "Broncos"), ("q2", "the cat sat")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let scores = score_predictions(&SQUAD, &examples, &predictions);
    // q1: EM 1 against "the Broncos"; q2: F1 0.8; q3: unanswered, 0.
    assert!((scores.exact_match - 100.0 / 3.0).abs() < 1e-9);
    assert!((scores.f1 - 100.0 * 1.8 / 3.0).abs() < 1e-9);
    assert_eq!((scores.total, scores.unanswered), (3, 1));
}

#[test]
fn accuracy_is_a_percentage() {
    assert_eq!(accuracy(&[0, 1, 1, 0], &[0, 1, 0, 0]), 75.0);
    assert_eq!(accuracy::<usize>(&[], &[]), 0.0);
}

mod answer_extraction {
    use toolkit::scoring::qa_answers::{best_answer, WindowLogits, MAX_ANSWER_TOKENS, N_BEST, NO_ANSWER};

    /// A window whose tokens are the whitespace-separated words of `context` after `question`
    /// tokens outside the context (offsets `None`), as a QA window is laid out.
    fn offsets(context: &str, question: usize) -> Vec<Option<(usize, usize)>> {
        let chars: Vec<char> = context.chars().collect();
        let mut out = vec![None; question];
        let mut i = 0;
        while i < chars.len() {
            if chars[i].is_whitespace() {
                i += 1;
                continue;
            }
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() {
                i += 1;
            }
            out.push(Some((start, i)));
        }
        out
    }

    fn words(n: usize) -> String {
        (0..n).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn answers_are_at_most_max_answer_tokens_long() {
        assert_eq!(MAX_ANSWER_TOKENS, 30);
        let context = words(40);
        let offsets = offsets(&context, 0);
        let mut start = vec![0.0; 40];
        let mut end = vec![0.0; 40];
        start[0] = 5.0;
        end[30] = 5.0; // a 31-token span: not allowed
        end[29] = 4.0; // 30 tokens: the longest allowed
        let answer = best_answer(&context, &[WindowLogits { offsets: &offsets, start: &start, end: &end }]);
        assert_eq!(answer, words(30));
    }

    #[test]
    fn only_the_n_best_starts_and_ends_are_paired() {
        assert_eq!(N_BEST, 20);
        // Starts 5..25 take the 20 best places; start 0 comes 21st, so its pair with the far
        // best end (0, 0) is never formed, and the answer is the best pair among the 20.
        let context = words(25);
        let offsets = offsets(&context, 0);
        let mut start: Vec<f32> = (0..25).map(|i| if i >= 5 { 10.0 - 0.01 * i as f32 } else { 0.0 }).collect();
        start[0] = 9.0;
        let mut end: Vec<f32> = (0..25).map(|i| -0.001 * i as f32).collect();
        end[0] = 100.0;
        let answer = best_answer(&context, &[WindowLogits { offsets: &offsets, start: &start, end: &end }]);
        assert_eq!(answer, "w5");
    }

    #[test]
    fn answers_are_cut_from_the_context_by_character_offsets() {
        // Offsets count characters: the multi-byte ü and ö come before and inside the
        // answer, and the context's own spacing between the two tokens is kept.
        let context = "Zürich  liegt   schön am See";
        let offsets = offsets(context, 3);
        let mut start = vec![0.0; offsets.len()];
        let mut end = vec![0.0; offsets.len()];
        start[4] = 2.0; // "liegt"
        end[5] = 2.0; // "schön"
        // Higher logits on question tokens (no offsets) never make an answer.
        start[1] = 50.0;
        end[1] = 50.0;
        let answer = best_answer(context, &[WindowLogits { offsets: &offsets, start: &start, end: &end }]);
        assert_eq!(answer, "liegt   schön");
    }

    #[test]
    fn the_best_span_over_all_windows_wins_and_no_span_gives_the_fallback() {
        let context = "a b c d e f";
        // Window 1 covers a b c d, window 2 c d e f (shared tokens c, d).
        let all = offsets(context, 0);
        let (first, second) = (all[..4].to_vec(), all[2..].to_vec());
        let windows = [
            (first, vec![1.0, 0.0, 0.0, 0.0], vec![0.0, 1.5, 0.0, 0.0]), // "a b": 2.5
            (second, vec![0.0, 0.0, 2.0, 0.0], vec![0.0, 0.0, 0.0, 1.0]), // "e f": 3.0
        ];
        let logits: Vec<WindowLogits> =
            windows.iter().map(|(o, s, e)| WindowLogits { offsets: o, start: s, end: e }).collect();
        assert_eq!(best_answer(context, &logits), "e f");
        assert_eq!(best_answer(context, &logits[..1]), "a b");
        // An end before its start is not a span: (b, a) would score 10.
        let (o, s, e) = (all[..2].to_vec(), vec![0.0, 5.0], vec![5.0, 0.5]);
        assert_eq!(best_answer(context, &[WindowLogits { offsets: &o, start: &s, end: &e }]), "b");
        // A window without context tokens has no span at all.
        let none = vec![None; 4];
        let zeros = vec![0.0; 4];
        assert_eq!(best_answer(context, &[WindowLogits { offsets: &none, start: &zeros, end: &zeros }]), NO_ANSWER);
    }
}
