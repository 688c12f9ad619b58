//! Files from elsewhere (issue 13, item 5): a pickle that would run code, manifests whose paths
//! lead out of their folder, and headers that claim sizes the file does not have. Each is an
//! error naming the file and the offending entry, raised before any file outside the folder
//! is opened and before anything is allocated for the claimed size.
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Cursor, Write};
use std::path::Path;

use toolkit::export::lang_adapters::LangAdapters;
use toolkit::export::ExportManifest;
use toolkit::model::{torch_pickle, Weights};

/// The global allocator with a record of the largest block each thread asked for, so a test
/// can tell that a claimed size was never allocated.
struct Recording;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    // `try_with`: the allocator also runs while a thread's locals are torn down.
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Recording = Recording;

/// `f`'s result and the largest block allocated on this thread meanwhile.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let result = f();
    (result, LARGEST.with(|l| l.get()))
}

/// `f`'s error, as the user sees it, and the largest block allocated on this thread meanwhile.
fn error_and_largest_allocation<T>(f: impl FnOnce() -> anyhow::Result<T>) -> (String, usize) {
    let (result, largest) = largest_allocation(f);
    match result {
        Ok(_) => panic!("accepted"),
        Err(err) => (format!("{err:#}"), largest),
    }
}

const MB: usize = 1 << 20;

fn assert_mentions(msg: &str, parts: &[&str]) {
    for part in parts {
        assert!(msg.contains(part), "`{part}` is not in: {msg}");
    }
}

// ---- pickles ---------------------------------------------------------------------------------

/// A `torch.save` zip archive whose `data.pkl` is `pickle`.
fn zip_checkpoint(path: &Path, pickle: &[u8]) {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in [("archive/data.pkl", pickle), ("archive/version", b"3\n".as_slice())] {
        zip.start_file(name, stored).unwrap();
        zip.write_all(bytes).unwrap();
    }
    std::fs::write(path, zip.finish().unwrap().into_inner()).unwrap();
}

/// The legacy `torch.save` stream: magic number, protocol 1001, system info, then `pickle`
/// as the state dict and `rest`.
fn legacy_checkpoint(path: &Path, pickle: &[u8], rest: &[u8]) {
    let mut bytes = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.".to_vec();
    bytes.extend_from_slice(b"\x80\x02M\xe9\x03.");
    bytes.extend_from_slice(b"\x80\x02}q\x00(X\x0d\x00\x00\x00little_endian\x88u.");
    bytes.extend_from_slice(pickle);
    bytes.extend_from_slice(rest);
    std::fs::write(path, bytes).unwrap();
}

/// `os.system(command)` as a pickle builds it: GLOBAL, the argument tuple, REDUCE.
fn system_call(command: &str) -> Vec<u8> {
    let mut p = b"cos\nsystem\n(X".to_vec();
    p.extend_from_slice(&(command.len() as u32).to_le_bytes());
    p.extend_from_slice(command.as_bytes());
    p.extend_from_slice(b"tR");
    p
}

#[test]
fn pickles_that_would_run_code_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let command = format!("touch {}", marker.display());
    let eval = b"cbuiltins\neval\n(X\x0e\x00\x00\x00__import__('os')tR".to_vec();
    // The same call through STACK_GLOBAL (protocol 4) and inside an otherwise real state dict.
    let stack_global = b"\x8c\x08builtins\x8c\x04exec\x93(X\x04\x00\x00\x00passtR".to_vec();
    let in_state_dict = [b"ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00a".to_vec(), system_call(&command), b"u".to_vec()].concat();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("os_system", system_call(&command), "os.system"),
        ("eval", eval, "builtins.eval"),
        ("stack_global", stack_global, "builtins.exec"),
        ("in_state_dict", in_state_dict, "os.system"),
    ];
    for (name, body, global) in cases {
        let pickle = [b"\x80\x02".as_slice(), &body, b"."].concat();
        let zipped = dir.path().join(format!("{name}.bin"));
        zip_checkpoint(&zipped, &pickle);
        let legacy = dir.path().join(format!("{name}_legacy.bin"));
        legacy_checkpoint(&legacy, &pickle, b"\x80\x02]q\x00.");
        for path in [&zipped, &legacy] {
            let err = format!("{:#}", torch_pickle::read(path, |n| Some(n.to_string())).unwrap_err());
            assert_mentions(&err, &[&path.display().to_string(), &format!("unsupported global `{global}`")]);
        }
    }
    assert!(!marker.exists(), "a pickle ran a command");
}

#[test]
fn pickle_sizes_are_checked_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pytorch_model.bin");
    // A string claiming 4 GiB, and one claiming 2^64 - 1 bytes, in a file of a few bytes.
    for claim in [b"X\xff\xff\xff\xff".to_vec(), b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff".to_vec()] {
        zip_checkpoint(&path, &[b"\x80\x02".as_slice(), &claim, b"abc."].concat());
        let (err, largest) = error_and_largest_allocation(|| torch_pickle::read(&path, |n| Some(n.to_string())));
        assert_mentions(&err, &[&path.display().to_string(), "the pickle ends inside an opcode"]);
        assert!(largest < MB, "allocated {largest} bytes for a claimed string");
    }
    // A legacy storage of 2^40 float elements in a file of a few hundred bytes.
    let state_dict = b"\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n\
        ((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00K\x04\x85K\x01\x85\x89)tRu.";
    let keys = b"\x80\x02]q\x00X\x01\x00\x00\x000a.";
    legacy_checkpoint(&path, state_dict, &[keys.as_slice(), &(1u64 << 40).to_le_bytes()].concat());
    let (err, largest) = error_and_largest_allocation(|| torch_pickle::read(&path, |n| Some(n.to_string())));
    assert_mentions(&err, &[&path.display().to_string(), "storage `0`", "1099511627776 elements do not fit"]);
    assert!(largest < MB, "allocated {largest} bytes for a claimed storage");
    // The same tensor claiming 2^40 elements of a 4-element storage.
    let huge_view = [
        state_dict.split(|&b| b == b'Q').next().unwrap(),
        b"QK\x00\x8a\x06\x00\x00\x00\x00\x00\x01\x85K\x01\x85\x89)tRu.",
    ]
    .concat();
    legacy_checkpoint(&path, &huge_view, &[keys.as_slice(), &4u64.to_le_bytes(), &[0u8; 16]].concat());
    let (err, largest) = error_and_largest_allocation(|| torch_pickle::read(&path, |n| Some(n.to_string())));
    assert_mentions(&err, &[&path.display().to_string(), "tensor `w`", "does not fit its storage of 4"]);
    assert!(largest < MB, "allocated {largest} bytes for a claimed shape");
    // A zip archive whose directory claims a 4 GB `data.pkl` (the real one is an empty state
    // dict of a few bytes).
    zip_checkpoint(&path, b"\x80\x02ccollections\nOrderedDict\n)R.");
    let mut bytes = std::fs::read(&path).unwrap();
    let directory = bytes.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    bytes[directory + 24..directory + 28].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let (result, largest) = largest_allocation(|| torch_pickle::read(&path, |n| Some(n.to_string())));
    if let Err(err) = result {
        assert_mentions(&format!("{err:#}"), &[&path.display().to_string()]);
    }
    assert!(largest < MB, "allocated {largest} bytes for a claimed zip entry");
}

/// A million lists, each inside the next: refused (not a state dict) without the recursion of
/// dropping them overflowing the stack, which would abort the process.
#[test]
fn deeply_nested_pickles_do_not_overflow_the_stack() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested.bin");
    let depth = 1_000_000;
    let pickle = [b"\x80\x02".as_slice(), &vec![b']'; depth], &vec![b'a'; depth - 1], b"."].concat();
    zip_checkpoint(&path, &pickle);
    let err = format!("{:#}", torch_pickle::read(&path, |n| Some(n.to_string())).unwrap_err());
    assert_mentions(&err, &[&path.display().to_string(), "expected a dict of tensors"]);
}

// ---- safetensors -----------------------------------------------------------------------------

fn safetensors(path: &Path, length: u64, header: &str, data: &[u8]) {
    let bytes = [length.to_le_bytes().as_slice(), header.as_bytes(), data].concat();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn safetensors_sizes_are_checked_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapter.safetensors");
    let header = r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    // A header length of 1 TB.
    safetensors(&path, 1 << 40, header, &[0; 8]);
    let (err, largest) = error_and_largest_allocation(|| Weights::read_safetensors(&path, |n| Some(n.to_string())));
    assert_mentions(&err, &[&path.display().to_string(), "header length 1099511627776 does not fit the file"]);
    assert!(largest < MB, "allocated {largest} bytes for a claimed header");
    // A header that claims a 1 TB tensor (2^38 floats) in a file of 8 data bytes.
    let huge = r#"{"w":{"dtype":"F32","shape":[274877906944],"data_offsets":[0,1099511627776]}}"#;
    safetensors(&path, huge.len() as u64, huge, &[0; 8]);
    let (err, largest) = error_and_largest_allocation(|| {
        let w = Weights::read_safetensors(&path, |n| Some(n.to_string()))?;
        w.entry("w").unwrap().tensor().map(|_| ())
    });
    assert_mentions(&err, &[&path.display().to_string(), "tensor `w`", "data offsets 0..1099511627776 do not fit"]);
    assert!(largest < MB, "allocated {largest} bytes for a claimed tensor");
    // Offsets that fit the shape but point past the end of the file.
    let past = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#;
    safetensors(&path, past.len() as u64, past, &[0; 12]);
    let err = format!("{:#}", Weights::read_safetensors(&path, |n| Some(n.to_string())).unwrap_err());
    assert_mentions(&err, &[&path.display().to_string(), "tensor `b`", "data offsets 8..16 do not fit"]);
    // A shape whose element count overflows 64 bits.
    let overflow = r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,2],"data_offsets":[0,0]}}"#;
    safetensors(&path, overflow.len() as u64, overflow, &[]);
    let err = format!("{:#}", Weights::read_safetensors(&path, |n| Some(n.to_string())).unwrap_err());
    assert_mentions(&err, &[&path.display().to_string(), "tensor `w`", "do not fit shape [4294967296, 4294967296, 2]"]);
}

// ---- manifests -------------------------------------------------------------------------------

const MANIFEST: &str = r#"{
  "format_version": 1, "toolkit_version": "0.1.0", "arch": "bert", "head_type": "multiple_choice", "labels": [],
  "inputs": ["input_ids", "attention_mask", "token_type_ids"], "outputs": ["logits"], "dtype": "fp32",
  "max_seq_len": 128, "tokenizer": "tokenizer.json", "shared_data": "shared.bin", "base_model": "/models/mbert",
  "task_adapter": "../runs/copa/best",
  "models": [{"language": "th", "file": "th.onnx", "lang_adapter": "/adapters/th", "adapters": ["th", "copa"]}]
}"#;

#[test]
fn export_manifest_paths_cannot_leave_the_export_folder() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("export");
    std::fs::create_dir_all(&dir).unwrap();
    // Files the paths below would reach, so that only the check can stop them.
    std::fs::write(root.path().join("outside.onnx"), b"not a model").unwrap();
    let path = dir.join("export.json");
    // Where the export came from (base_model, task_adapter, lang_adapter) is never opened, and
    // may be anywhere.
    std::fs::write(&path, MANIFEST).unwrap();
    ExportManifest::load(&dir).unwrap();
    let outside = root.path().join("outside.onnx").display().to_string();
    for (entry, value) in [
        ("models[0].file", "../outside.onnx"),
        ("models[0].file", outside.as_str()),
        ("models[0].file", "sub/../../outside.onnx"),
        ("models[0].file", "sub/th.onnx"),
        ("models[0].file", ""),
        ("tokenizer", "../tokenizer.json"),
        ("tokenizer", "/etc/passwd"),
        ("shared_data", ".."),
        ("shared_data", "../outside.onnx"),
    ] {
        let mut manifest: serde_json::Value = serde_json::from_str(MANIFEST).unwrap();
        match entry {
            "models[0].file" => manifest["models"][0]["file"] = value.into(),
            key => manifest[key] = value.into(),
        }
        std::fs::write(&path, manifest.to_string()).unwrap();
        let err = format!("{:#}", ExportManifest::load(&dir).unwrap_err());
        assert_mentions(&err, &[&path.display().to_string(), &format!("{entry} = {value:?}"), "inside the export folder"]);
    }
}

#[test]
fn lang_adapter_map_paths_cannot_leave_the_map_folder() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("maps");
    // Real adapters both inside and outside the map's folder: only the check stops the outside one.
    for adapter in [dir.join("adapters/th"), root.path().join("elsewhere/th")] {
        std::fs::create_dir_all(&adapter).unwrap();
        std::fs::write(adapter.join("adapter_config.json"), "{}").unwrap();
    }
    let path = dir.join("lang-adapters.toml");
    std::fs::write(&path, "th = \"adapters/th\"\nsw = \"./adapters/th\"\n").unwrap();
    assert_eq!(LangAdapters::load(&path).unwrap().adapters["sw"], dir.join("./adapters/th"));
    let absolute = root.path().join("elsewhere/th").display().to_string();
    for value in ["../elsewhere/th", absolute.as_str(), "adapters/../../elsewhere/th"] {
        std::fs::write(&path, format!("th = {value:?}\n")).unwrap();
        let err = format!("{:#}", LangAdapters::load(&path).unwrap_err());
        assert_mentions(&err, &[&path.display().to_string(), &format!("the adapter of `th`, {value:?}"), "refused"]);
    }
}
