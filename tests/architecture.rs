//! The folder tree is the data flow (ARCHITECTURE.md): the import graph drawn from the code
//! has no cycle between the crate's modules nor between the trainer's files, and the trainer
//! does not reach into the evaluator.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

mod common;

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Names following `prefix` in `text` (`crate::train::x` with prefix `crate::` gives `train`).
fn referenced(text: &str, prefix: &str) -> BTreeSet<String> {
    text.match_indices(prefix)
        .map(|(at, _)| text[at + prefix.len()..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect::<String>())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Edges between the top-level modules of src/ (a file `x.rs` or a folder `x/`).
fn module_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        let files = if path.is_dir() { rust_files(&path) } else { vec![path.clone()] };
        let deps = graph.entry(name.clone()).or_default();
        for file in files {
            deps.extend(referenced(&std::fs::read_to_string(&file).unwrap(), "crate::"));
        }
        deps.remove(&name);
    }
    graph
}

/// A cycle of `graph`, if it has one (depth-first search).
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(node: &str, graph: &Graph, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            return Some(path[start..].iter().cloned().chain([node.to_string()]).collect());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten().filter(|n| graph.contains_key(*n)) {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn modules_form_no_cycle_and_train_does_not_import_eval() {
    let graph = module_graph(&common::repo().join("src"));
    assert!(graph.len() > 10, "{graph:?}");
    assert_eq!(cycle(&graph), None, "{graph:#?}");
    assert!(!graph["train"].contains("eval"), "train imports eval: {:?}", graph["train"]);
    // Scoring sits below both of its users.
    assert!(graph["train"].contains("scoring") && graph["eval"].contains("scoring"));
    for below in ["data", "features", "model", "scoring", "seed", "task"] {
        assert!(!graph[below].contains("train") && !graph[below].contains("eval"), "{below}: {:?}", graph[below]);
    }
}

#[test]
fn the_trainers_files_form_no_cycle() {
    let mut graph = Graph::new();
    for file in rust_files(&common::repo().join("src/train")) {
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        // Only the code, not its unit tests (which may use anything of the module).
        let code = text.split("#[cfg(test)]").next().unwrap();
        let mut deps = referenced(code, "super::");
        deps.extend(referenced(code, "crate::train::"));
        deps.remove(&name);
        graph.insert(name, deps);
    }
    assert_eq!(cycle(&graph), None, "{graph:#?}");
}

#[test]
fn the_onnx_layer_and_the_exporter_share_no_file_name() {
    let names = |dir: &str| -> BTreeSet<String> {
        rust_files(&common::repo().join(dir)).iter().map(|p| p.file_name().unwrap().to_string_lossy().to_string()).collect()
    };
    let shared: Vec<String> = names("export/src").intersection(&names("src/export")).filter(|n| *n != "mod.rs" && *n != "lib.rs").cloned().collect();
    assert!(shared.is_empty(), "{shared:?}");
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph: Graph = [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"])]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
        .collect();
    assert_eq!(cycle(&graph), Some(vec!["a".to_string(), "b".into(), "c".into(), "a".into()]));
}
