//! Writing exports: the shared external data file that every per-language model references,
//! and the choice of which weights are inline.
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
}
