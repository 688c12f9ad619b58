//! Writing exports: the shared external data file that every per-language model references,
//! the choice of which weights are inline, and the staging directory that makes a whole
//! export appear at once or not at all.
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use toolkit_onnx::onnx::{ModelProto, TensorProto};
use toolkit_onnx::prost::Message;
use toolkit_onnx::{tensor, ElemType};

use super::graph::WeightSink;

/// Tensors at least this large start at a multiple of `LARGE_ALIGN` so ONNX Runtime can
/// memory-map them (64 KiB is the allocation granularity on every platform it supports).
const LARGE_TENSOR: u64 = 1 << 20;
const LARGE_ALIGN: u64 = 1 << 16;
const SMALL_ALIGN: u64 = 64;

/// One external data file, written once: a tensor name seen again is referenced, not rewritten.
pub struct SharedData {
    location: String,
    path: PathBuf,
    out: BufWriter<File>,
    len: u64,
    placed: HashMap<String, Placed>,
}

#[derive(Debug, Clone, PartialEq)]
struct Placed {
    elem: ElemType,
    dims: Vec<i64>,
    offset: u64,
    length: u64,
}

impl SharedData {
    /// Creates `dir/location`.
    pub fn create(dir: &Path, location: &str) -> Result<Self> {
        let path = dir.join(location);
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { location: location.to_string(), path, out: BufWriter::new(file), len: 0, placed: HashMap::new() })
    }

    /// The initializer `name`, its bytes appended to the file the first time the name is seen.
    pub fn place(
        &mut self,
        name: &str,
        elem: ElemType,
        dims: &[i64],
        bytes: &dyn Fn() -> Result<Vec<u8>>,
    ) -> Result<TensorProto> {
        if let Some(p) = self.placed.get(name) {
            if p.elem != elem || p.dims != dims {
                bail!(
                    "shared tensor `{name}` is {:?} {:?} in one model and {elem:?} {dims:?} in another",
                    p.elem,
                    p.dims
                );
            }
            return Ok(tensor::external(name, elem, dims, &self.location, p.offset, p.length));
        }
        let data = bytes()?;
        let length = data.len() as u64;
        let align = if length >= LARGE_TENSOR { LARGE_ALIGN } else { SMALL_ALIGN };
        let offset = self.len.div_ceil(align) * align;
        let write = |out: &mut BufWriter<File>| -> std::io::Result<()> {
            out.write_all(&vec![0u8; (offset - self.len) as usize])?;
            out.write_all(&data)
        };
        write(&mut self.out).with_context(|| format!("writing {}", self.path.display()))?;
        self.len = offset + length;
        self.placed.insert(name.to_string(), Placed { elem, dims: dims.to_vec(), offset, length });
        Ok(tensor::external(name, elem, dims, &self.location, offset, length))
    }

    /// Flushes and syncs the file; returns its size in bytes.
    pub fn finish(self) -> Result<u64> {
        let file = self
            .out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", self.path.display()))?;
        file.sync_all().with_context(|| format!("syncing {}", self.path.display()))?;
        Ok(self.len)
    }
}

/// Weights under one of `inline_prefixes` (the language adapter's) go into the model file; all
/// others into the shared data file.
pub struct Placement<'a> {
    pub shared: &'a mut SharedData,
    pub inline_prefixes: Vec<String>,
}

impl WeightSink for Placement<'_> {
    fn tensor(&mut self, name: &str, elem: ElemType, dims: &[i64], bytes: &dyn Fn() -> Result<Vec<u8>>) -> Result<TensorProto> {
        if self.inline_prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            Ok(tensor::inline(name, elem, dims, bytes()?))
        } else {
            self.shared.place(name, elem, dims, bytes)
        }
    }
}

/// Protobuf messages cannot exceed 2 GiB; weights beyond that belong in external data.
const PROTOBUF_LIMIT: usize = (1 << 31) - 1;

/// Serialises `model` to `path`; returns the file size.
pub fn write_model(path: &Path, model: &ModelProto) -> Result<u64> {
    let len = model.encoded_len();
    if len > PROTOBUF_LIMIT {
        bail!(
            "{} would be {len} bytes, over protobuf's 2 GiB limit (its inline weights are too large)",
            path.display()
        );
    }
    let bytes = model.encode_to_vec();
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(&bytes).and_then(|_| file.sync_all()).with_context(|| format!("writing {}", path.display()))?;
    Ok(bytes.len() as u64)
}

/// A directory an export is built in, beside its destination. Dropped without `commit`, it
/// is removed, so a failed export leaves nothing behind.
pub struct Staging {
    dir: PathBuf,
    committed: bool,
}

impl Staging {
    /// Creates the staging directory for `out`. An existing `out` must be an earlier export
    /// (it has `marker`), so that a mistyped `--out` never replaces unrelated files.
    pub fn new(out: &Path, marker: &str) -> Result<Self> {
        if out.exists() {
            let is_empty_dir = out.is_dir() && std::fs::read_dir(out)?.next().is_none();
            if !out.join(marker).exists() && !is_empty_dir {
                bail!(
                    "{} exists and is not an earlier export (no {marker}); choose another --out or remove it",
                    out.display()
                );
            }
        }
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
        let name = out.file_name().with_context(|| format!("--out {} has no directory name", out.display()))?;
        let mut staging_name = std::ffi::OsString::from(".");
        staging_name.push(name);
        staging_name.push(format!(".staging-{}", std::process::id()));
        let dir = parent.join(staging_name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing stale {}", dir.display()))?;
        }
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir, committed: false })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves the finished export to `out`, replacing an earlier one.
    pub fn commit(mut self, out: &Path) -> Result<()> {
        crate::fsx::replace_dir(&self.dir, out)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_tensors_are_written_once_and_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let mut shared = SharedData::create(dir.path(), "shared.bin").unwrap();
        let a = shared.place("a", ElemType::F32, &[3], &|| Ok(vec![1u8; 12])).unwrap();
        let b = shared.place("b", ElemType::F32, &[1], &|| Ok(vec![2u8; 4])).unwrap();
        let again = shared.place("a", ElemType::F32, &[3], &|| panic!("not recomputed")).unwrap();
        assert_eq!(a, again);
        let offset = |t: &TensorProto| {
            t.external_data.iter().find(|e| e.key.as_deref() == Some("offset")).unwrap().value.clone()
        };
        assert_eq!(offset(&a).as_deref(), Some("0"));
        assert_eq!(offset(&b).as_deref(), Some("64"));
        assert!(shared.place("a", ElemType::F16, &[3], &|| Ok(vec![0u8; 6])).is_err());
        assert_eq!(shared.finish().unwrap(), 68);
        assert_eq!(std::fs::metadata(dir.path().join("shared.bin")).unwrap().len(), 68);
    }

    #[test]
    fn staging_is_removed_unless_committed_and_unrelated_dirs_are_kept() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("exp");
        {
            let staging = Staging::new(&out, "export.json").unwrap();
            std::fs::write(staging.dir().join("x"), b"half").unwrap();
        }
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0, "failed export left files");

        let staging = Staging::new(&out, "export.json").unwrap();
        std::fs::write(staging.dir().join("export.json"), b"{}").unwrap();
        staging.commit(&out).unwrap();
        assert!(out.join("export.json").exists());
        assert!(Staging::new(&out, "export.json").is_ok(), "an earlier export may be replaced");

        let other = root.path().join("notes");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("keep.txt"), b"mine").unwrap();
        let err = Staging::new(&other, "export.json").err().unwrap();
        assert!(format!("{err:#}").contains("not an earlier export"), "{err:#}");
    }
}
