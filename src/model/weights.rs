//! Named fp32 tensors read from safetensors files, without libtorch: the one place where
//! checkpoint tensors enter the toolkit, shared by the tch model and the ONNX exporter.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use std::io::{Read, Seek, SeekFrom};

use safetensors::Dtype;

/// A dense row-major fp32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "shape and data length disagree");
        Self { shape, data }
    }
}

/// A tensor together with the file and the name it had there, for error messages.
#[derive(Debug, Clone)]
pub struct Entry {
    pub tensor: Tensor,
    pub file: Arc<PathBuf>,
    pub stored_name: String,
}

/// Tensors by canonical name (the encoder's Hugging Face names without the `bert.`/`roberta.`
/// prefix, e.g. `encoder.layer.0.output.adapters.task.adapter_up.weight`).
#[derive(Debug, Clone, Default)]
pub struct Weights {
    entries: BTreeMap<String, Entry>,
}

impl Weights {
    /// Reads every tensor of a safetensors file, renaming each with `rename` (return `None` to
    /// skip a tensor). Two tensors that land on one name are an error. Tensors are read from
    /// the file straight into their buffers: a model is held once in memory, not twice.
    pub fn read_safetensors(path: &Path, rename: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let corrupt = || format!("{}: not a valid safetensors file", path.display());
        let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let size = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
        let mut len = [0u8; 8];
        file.read_exact(&mut len).with_context(corrupt)?;
        let header_len = u64::from_le_bytes(len);
        if header_len > 100_000_000 || 8 + header_len > size {
            bail!("{}: header length {header_len} does not fit the file", corrupt());
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).with_context(corrupt)?;
        let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header).with_context(corrupt)?;
        let data_start = 8 + header_len;
        let shared = Arc::new(path.to_path_buf());
        let mut weights = Self::default();
        for (name, info) in header {
            if name == "__metadata__" {
                continue;
            }
            let Some(canonical) = rename(&name) else { continue };
            let at = || format!("{}: tensor `{name}`", path.display());
            let info: TensorInfo = serde_json::from_value(info).with_context(|| format!("{}: bad header entry", at()))?;
            let [begin, end] = info.data_offsets;
            let elements: usize = info.shape.iter().product();
            let width = dtype_width(&info.dtype).with_context(|| format!("{}: dtype {} is not a float type", at(), info.dtype))?;
            if end < begin || end - begin != (elements * width) as u64 || data_start + end > size {
                bail!("{}: data offsets {begin}..{end} do not fit shape {:?} of {} in a file of {size} bytes", at(), info.shape, info.dtype);
            }
            file.seek(SeekFrom::Start(data_start + begin)).with_context(at)?;
            let data = read_f32(&mut file, &info.dtype, elements).with_context(at)?;
            let entry = Entry { tensor: Tensor::new(info.shape, data), file: shared.clone(), stored_name: name.clone() };
            weights.insert(canonical, entry)?;
        }
        Ok(weights)
    }

    pub fn insert(&mut self, name: String, entry: Entry) -> Result<()> {
        if let Some(old) = self.entries.get(&name) {
            bail!(
                "tensor `{}` in {} and `{}` in {} both map to `{name}`",
                old.stored_name,
                old.file.display(),
                entry.stored_name,
                entry.file.display()
            );
        }
        self.entries.insert(name, entry);
        Ok(())
    }

    /// Moves all tensors of `other` in; a name present in both is an error.
    pub fn merge(&mut self, other: Weights) -> Result<()> {
        for (name, entry) in other.entries {
            self.insert(name, entry)?;
        }
        Ok(())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// The tensor `name` with exactly `shape`, or an error naming the tensor and its file.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<&Tensor> {
        let Some(entry) = self.entries.get(name) else {
            bail!("missing tensor `{name}`{}", self.where_hint(name));
        };
        if entry.tensor.shape != shape {
            bail!(
                "{}: tensor `{}` has shape {:?}, expected {:?}",
                entry.file.display(),
                entry.stored_name,
                entry.tensor.shape,
                shape
            );
        }
        Ok(&entry.tensor)
    }

    /// Removes the tensor `name`, which must have exactly `shape`.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get(name, shape)?;
        Ok(self.entries.remove(name).expect("checked above").tensor)
    }

    fn where_hint(&self, name: &str) -> String {
        // Name the files that were searched, so the user knows which checkpoint lacks it.
        let mut files: Vec<String> = self.entries.values().map(|e| e.file.display().to_string()).collect();
        files.sort();
        files.dedup();
        let near: Vec<&str> = self
            .names()
            .filter(|n| n.rsplit_once('.').map(|(a, _)| a) == name.rsplit_once('.').map(|(a, _)| a))
            .take(4)
            .collect();
        let mut hint = String::new();
        if !files.is_empty() {
            hint.push_str(&format!(" (searched {})", files.join(", ")));
        }
        if !near.is_empty() {
            hint.push_str(&format!("; found nearby: {}", near.join(", ")));
        }
        hint
    }
}

#[derive(serde::Deserialize)]
struct TensorInfo {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

fn dtype_width(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "F32" => 4,
        "F64" => 8,
        "F16" | "BF16" => 2,
        _ => return None,
    })
}

/// Reads `n` values of `dtype` at the file's position as f32.
fn read_f32(file: &mut std::fs::File, dtype: &str, n: usize) -> Result<Vec<f32>> {
    if dtype == "F32" {
        let mut data = vec![0f32; n];
        // SAFETY: any byte pattern is a valid f32, and the target is little-endian like the file.
        let bytes = unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<u8>(), n * 4) };
        file.read_exact(bytes)?;
        return Ok(data);
    }
    let width = dtype_width(dtype).expect("checked by the caller");
    let mut bytes = vec![0u8; n * width];
    file.read_exact(&mut bytes)?;
    Ok(match dtype {
        "F64" => bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
        "F16" => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect(),
        _ => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect(),
    })
}

/// Writes tensors to a safetensors file atomically (a temporary file renamed into place), so
/// an interrupted write never leaves a truncated checkpoint.
pub fn write_safetensors(path: &Path, tensors: &[(String, &Tensor)], metadata: Option<BTreeMap<String, String>>) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, t)| {
            let bytes: &[u8] = bytemuck_f32(&t.data);
            safetensors::tensor::TensorView::new(Dtype::F32, t.shape.clone(), bytes).map(|v| (name.clone(), v))
        })
        .collect::<Result<_, _>>()
        .with_context(|| format!("preparing {}", path.display()))?;
    let metadata = metadata.map(|m| m.into_iter().collect());
    let bytes = safetensors::serialize(views, metadata).with_context(|| format!("serialising {}", path.display()))?;
    crate::fsx::write_atomic(path, &bytes)
}

fn bytemuck_f32(data: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte pattern is a valid u8; the target is little-endian
    // (safetensors stores little-endian, and the toolkit only builds for little-endian targets).
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}

#[cfg(target_endian = "big")]
compile_error!("safetensors I/O here assumes a little-endian target");
