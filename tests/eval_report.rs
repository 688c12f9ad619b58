//! The results CSV and `toolkit report`: summary rows, the paper's tables over seeds, and the
//! tr(F) and schedule figures.
use std::path::Path;

use toolkit::report::plots::{self, smoothed_traces, FisherRow};
use toolkit::report::results::{read_csv, summary_rows, to_csv, ResultRow};
use toolkit::report::tables::{build_tables, language_table, summary_table, Format, Stat};
use toolkit::report::{run, ReportArgs};

fn row(method: &str, seed: u64, language: &str, metric: &str, value: f64) -> ResultRow {
    ResultRow {
        run: format!("{method}-s{seed}"),
        base_model: "mbert".into(),
        method: method.into(),
        seed: Some(seed),
        suite: "xcopa".into(),
        language: language.into(),
        metric: metric.into(),
        value,
        lowest_language: None,
    }
}

/// Two methods, two seeds, three languages (en and two targets) of accuracy.
fn runs() -> Vec<ResultRow> {
    let mut rows = Vec::new();
    for (method, seed, en, qu, th) in [
        ("fun", 1, 70.0, 50.0, 60.0),
        ("fun", 2, 72.0, 52.0, 58.0),
        ("gu", 1, 68.0, 49.0, 55.0),
        ("gu", 2, 66.0, 51.0, 57.0),
    ] {
        let per_language = vec![
            row(method, seed, "en", "accuracy", en),
            row(method, seed, "qu", "accuracy", qu),
            row(method, seed, "th", "accuracy", th),
        ];
        rows.extend(summary_rows(&per_language, "en"));
        rows.extend(per_language);
    }
    rows
}

#[test]
fn summary_rows_average_targets_without_the_source_language() {
    let rows = vec![
        row("fun", 1, "en", "f1", 80.0),
        row("fun", 1, "en", "exact_match", 70.0),
        row("fun", 1, "de", "f1", 60.0),
        row("fun", 1, "de", "exact_match", 45.0),
        row("fun", 1, "zh", "f1", 50.0),
        row("fun", 1, "zh", "exact_match", 48.0),
    ];
    let summary = summary_rows(&rows, "en");
    let get =
        |language: &str, metric: &str| summary.iter().find(|r| r.language == language && r.metric == metric).unwrap();
    assert_eq!(get("avg", "f1").value, 55.0);
    assert_eq!(get("avg", "exact_match").value, 46.5);
    assert_eq!((get("lowest", "f1").value, get("lowest", "f1").lowest_language.as_deref()), (50.0, Some("zh")));
    assert_eq!(get("lowest", "exact_match").lowest_language.as_deref(), Some("de"));
    assert_eq!(summary.len(), 4);
}

#[test]
fn results_csv_is_tidy_and_reads_back() {
    let rows = runs();
    let text = String::from_utf8(to_csv(&rows).unwrap()).unwrap();
    assert_eq!(text.lines().next().unwrap(), "run,base_model,method,seed,suite,language,metric,value,lowest_language");
    assert!(text.contains("fun-s1,mbert,fun,1,xcopa,lowest,accuracy,50.0,qu"), "{text}");
    assert!(text.contains("fun-s1,mbert,fun,1,xcopa,qu,accuracy,50.0,\n"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.csv");
    std::fs::write(&path, &text).unwrap();
    assert_eq!(read_csv(&path).unwrap(), rows);
    std::fs::write(&path, text.replace("50.0,qu", "fifty,qu")).unwrap();
    let err = format!("{:#}", read_csv(&path).unwrap_err());
    assert!(err.contains("r.csv:") && err.contains("not a results row"), "{err}");
}

#[test]
fn tables_report_mean_and_std_over_seeds() {
    let tables = build_tables(&runs());
    assert_eq!(tables.len(), 1);
    let table = &tables[0];
    assert_eq!(table.languages, ["en", "qu", "th"]);
    let fun = &table.methods[0];
    assert_eq!(fun.language("en"), Some(Stat { mean: 71.0, std: 2f64.sqrt(), n: 2 }));
    let (lowest, stat) = fun.lowest().unwrap();
    assert_eq!((lowest.as_str(), stat.mean), ("qu", 51.0));
    assert_eq!(Stat::of(&fun.averages).unwrap().mean, 55.0);

    let markdown = summary_table(table, Format::Markdown);
    assert!(markdown.contains("| Model | Method | En | Lowest | Average |"), "{markdown}");
    assert!(markdown.contains("| mbert | fun | 71.0 ± 1.4 | 51.0 ± 1.4 (qu) | 55.0 ± 0.0 |"), "{markdown}");
    assert!(markdown.contains("| mbert | gu | 67.0 ± 1.4 | 50.0 ± 1.4 (qu) | 53.0 ± 1.4 |"), "{markdown}");
    let latex = language_table(table, Format::Latex);
    assert!(
        latex.contains("\\toprule")
            && latex
                .contains("mbert & fun & 71.0 $\\pm$ 1.4 & 51.0 $\\pm$ 1.4 & 59.0 $\\pm$ 1.4 & 55.0 $\\pm$ 0.0 \\\\"),
        "{latex}"
    );
}

#[test]
fn latex_escapes_names() {
    let mut rows = runs();
    for r in &mut rows {
        r.method = "fun_50%".into();
    }
    let latex = summary_table(&build_tables(&rows)[0], Format::Latex);
    assert!(latex.contains("fun\\_50\\%"), "{latex}");
}

#[test]
fn moving_average_smooths_each_layer() {
    let rows: Vec<FisherRow> = [(0, 1.0), (10, 3.0), (20, 5.0), (30, 7.0)]
        .iter()
        .flat_map(|&(step, trace)| {
            [
                FisherRow { step, layer: 0, trainable: true, trace },
                FisherRow { step, layer: 1, trainable: false, trace: 2.0 * trace },
            ]
        })
        .collect();
    let traces = smoothed_traces(&rows, 2);
    assert_eq!(traces[&0], [(0, 1.0), (10, 2.0), (20, 4.0), (30, 6.0)]);
    assert_eq!(traces[&1], [(0, 2.0), (10, 4.0), (20, 8.0), (30, 12.0)]);
}

fn write_run(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut fisher = String::from("step,layer,trainable,trace\n");
    for step in (0..=400).step_by(50) {
        for layer in 0..12 {
            let trace = (1.0 + layer as f64) * 1e-4 * (1.0 + (step as f64 / 100.0).sin().abs());
            fisher.push_str(&format!("{step},{layer},{},{trace:e}\n", layer >= 11 - step / 50));
        }
    }
    std::fs::write(dir.join("fisher.csv"), fisher).unwrap();
    let schedule: String = (0..12).map(|layer| format!("{layer},{}\n", 50 * (11 - layer))).collect();
    std::fs::write(dir.join("schedule.csv"), format!("layer,unfreeze_step\n{schedule}")).unwrap();
}

#[test]
fn report_writes_tables_and_figures() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.csv");
    std::fs::write(&results, to_csv(&runs()).unwrap()).unwrap();
    let run_dir = dir.path().join("runs/copa-fun-s1");
    write_run(&run_dir);
    let out = dir.path().join("report");
    let args = ReportArgs { results: vec![results], run_dirs: vec![run_dir], out: out.clone(), smooth: 3 };
    if let Err(err) = plots::load_font() {
        eprintln!("skipped the figures: {err:#}");
        run(&ReportArgs { run_dirs: Vec::new(), ..args }).unwrap();
        assert!(out.join("tables.md").is_file() && out.join("tables.tex").is_file());
        return;
    }
    run(&args).unwrap();
    assert!(std::fs::read_to_string(out.join("tables.md")).unwrap().contains("xcopa: accuracy per language"));
    for stem in ["fisher-copa-fun-s1", "schedules"] {
        let svg = std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{stem}.svg");
        let png = std::fs::read(out.join(format!("{stem}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{stem}.png");
        assert!(png.len() > 10_000, "{stem}.png has content");
    }
    let svg = std::fs::read_to_string(out.join("fisher-copa-fun-s1.svg")).unwrap();
    assert!(svg.contains("layer 11") && svg.contains("training step"));
}
