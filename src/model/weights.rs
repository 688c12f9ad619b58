//! Named fp32 tensors read from safetensors files, without libtorch: the one place where
//! checkpoint tensors enter the toolkit, shared by the tch model and the ONNX exporter.
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context, Result};

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

/// A tensor together with the file and the name it had there, for error messages. Tensors
/// of a safetensors file are read on first use (or straight into a destination with
/// `read_into`), so loading a model never holds its weights twice.
#[derive(Debug, Clone)]
pub struct Entry {
    pub shape: Vec<usize>,
    pub file: Arc<PathBuf>,
    pub stored_name: String,
    stored: Option<Stored>,
    tensor: OnceLock<Tensor>,
}

/// Where an entry's values lie. The open file is kept, so replacing the file on disk (an
/// atomic checkpoint write) cannot change what a loaded entry reads.
#[derive(Debug, Clone)]
struct Stored {
    handle: Arc<std::fs::File>,
    offset: u64,
    dtype: String,
}

impl Entry {
    /// An entry whose values are already in memory.
    pub fn in_memory(tensor: Tensor, file: Arc<PathBuf>, stored_name: String) -> Self {
        Self { shape: tensor.shape.clone(), file, stored_name, stored: None, tensor: OnceLock::from(tensor) }
    }

    /// The values, read from the file on first use.
    pub fn tensor(&self) -> Result<&Tensor> {
        if let Some(t) = self.tensor.get() {
            return Ok(t);
        }
        let mut data = vec![0f32; self.shape.iter().product()];
        self.read_into(&mut data)?;
        Ok(self.tensor.get_or_init(|| Tensor::new(self.shape.clone(), data)))
    }

    /// Copies the values into `dst` (exactly as many elements), reading them from the file
    /// without an intermediate buffer when they are not in memory yet.
    pub fn read_into(&self, dst: &mut [f32]) -> Result<()> {
        assert_eq!(dst.len(), self.shape.iter().product::<usize>(), "destination size");
        if let Some(t) = self.tensor.get() {
            dst.copy_from_slice(&t.data);
            return Ok(());
        }
        let stored = self.stored.as_ref().expect("an entry holds its values or where they are");
        read_f32_at(&stored.handle, stored.offset, &stored.dtype, dst)
            .with_context(|| format!("{}: reading tensor `{}`", self.file.display(), self.stored_name))
    }
}

/// Tensors by canonical name (the encoder's Hugging Face names without the `bert.`/`roberta.`
/// prefix, e.g. `encoder.layer.0.output.adapters.task.adapter_up.weight`).
#[derive(Debug, Clone, Default)]
pub struct Weights {
    entries: BTreeMap<String, Entry>,
}

impl Weights {
    /// Indexes every tensor of a safetensors file, renaming each with `rename` (return `None`
    /// to skip a tensor). Two tensors that land on one name are an error. Only the header is
    /// read here and checked against the file's size; values are read when used.
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
        let handle = Arc::new(file);
        let mut weights = Self::default();
        for (name, info) in header {
            if name == "__metadata__" {
                continue;
            }
            let Some(canonical) = rename(&name) else { continue };
            let at = || format!("{}: tensor `{name}`", path.display());
            let info: TensorInfo = serde_json::from_value(info).with_context(|| format!("{}: bad header entry", at()))?;
            let [begin, end] = info.data_offsets;
            let width = dtype_width(&info.dtype).with_context(|| format!("{}: dtype {} is not a float type", at(), info.dtype))?;
            // Every number here is the file's claim: checked arithmetic, and the data must lie
            // inside the file, before anything is allocated for it.
            let bytes = info.shape.iter().try_fold(width as u64, |n, &d| n.checked_mul(d as u64));
            if end < begin || bytes != Some(end - begin) || end > size - data_start {
                bail!("{}: data offsets {begin}..{end} do not fit shape {:?} of {} in a file of {size} bytes", at(), info.shape, info.dtype);
            }
            let stored = Stored { handle: handle.clone(), offset: data_start + begin, dtype: info.dtype };
            let entry = Entry { shape: info.shape, file: shared.clone(), stored_name: name.clone(), stored: Some(stored), tensor: OnceLock::new() };
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
        self.entry_with_shape(name, shape)?.tensor()
    }

    /// Moves the tensor `name`, which must have exactly `shape`, into `dst` and forgets it.
    pub fn take_into(&mut self, name: &str, shape: &[usize], dst: &mut [f32]) -> Result<()> {
        self.entry_with_shape(name, shape)?.read_into(dst)?;
        self.entries.remove(name);
        Ok(())
    }

    /// The entry `name`, which must have exactly `shape` (its values are not read here).
    pub fn entry_with_shape(&self, name: &str, shape: &[usize]) -> Result<&Entry> {
        let Some(entry) = self.entries.get(name) else {
            bail!("missing tensor `{name}`{}", self.where_hint(name));
        };
        if entry.shape != shape {
            bail!(
                "{}: tensor `{}` has shape {:?}, expected {:?}",
                entry.file.display(),
                entry.stored_name,
                entry.shape,
                shape
            );
        }
        Ok(entry)
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

/// Reads `dst.len()` values of `dtype` at `offset` of `file` as f32.
fn read_f32_at(file: &std::fs::File, offset: u64, dtype: &str, dst: &mut [f32]) -> Result<()> {
    if dtype == "F32" {
        // SAFETY: any byte pattern is a valid f32, and the target is little-endian like the file.
        let bytes = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(dst)) };
        file.read_exact_at(bytes, offset)?;
        return Ok(());
    }
    let width = dtype_width(dtype).expect("checked when indexed");
    let mut bytes = vec![0u8; dst.len() * width];
    file.read_exact_at(&mut bytes, offset)?;
    let chunks = bytes.chunks_exact(width);
    match dtype {
        "F64" => dst.iter_mut().zip(chunks).for_each(|(d, b)| *d = f64::from_le_bytes(b.try_into().unwrap()) as f32),
        "F16" => dst.iter_mut().zip(chunks).for_each(|(d, b)| *d = half::f16::from_le_bytes(b.try_into().unwrap()).to_f32()),
        _ => dst.iter_mut().zip(chunks).for_each(|(d, b)| *d = half::bf16::from_le_bytes(b.try_into().unwrap()).to_f32()),
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexed_tensors_read_the_file_they_were_indexed_from() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let (a, b) = (Tensor::new(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]), Tensor::new(vec![3], vec![5.0, 6.0, 7.0]));
        write_safetensors(&path, &[("a".into(), &a), ("b".into(), &b)], None).unwrap();
        let mut weights = Weights::read_safetensors(&path, |n| Some(n.to_string())).unwrap();
        assert_eq!(weights.entry("b").unwrap().shape, vec![3]);

        // An atomic checkpoint write replaces the file; what was indexed keeps its values.
        let zeros = Tensor::new(vec![2, 2], vec![0.0; 4]);
        write_safetensors(&path, &[("a".into(), &zeros)], None).unwrap();
        let mut got = vec![0f32; 4];
        weights.take_into("a", &[2, 2], &mut got).unwrap();
        assert_eq!(got, a.data);
        assert!(!weights.contains("a"), "taken tensors are forgotten");
        assert_eq!(weights.get("b", &[3]).unwrap(), &b);
        let err = weights.get("b", &[1, 3]).unwrap_err().to_string();
        assert!(err.contains("tensor `b` has shape [3], expected [1, 3]"), "{err}");
    }

    #[test]
    fn half_and_double_tensors_are_read_as_f32() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let values = [1.5f32, -2.25, 0.125];
        let f16: Vec<u8> = values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
        let bf16: Vec<u8> = values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
        let f64: Vec<u8> = values.iter().flat_map(|v| (*v as f64).to_le_bytes()).collect();
        let view = |dtype, bytes: &'static [u8]| safetensors::tensor::TensorView::new(dtype, vec![3], bytes).unwrap();
        let tensors = vec![
            ("h".to_string(), view(Dtype::F16, f16.leak())),
            ("b".to_string(), view(Dtype::BF16, bf16.leak())),
            ("d".to_string(), view(Dtype::F64, f64.leak())),
        ];
        std::fs::write(&path, safetensors::serialize(tensors, None).unwrap()).unwrap();
        let weights = Weights::read_safetensors(&path, |n| Some(n.to_string())).unwrap();
        for name in ["h", "b", "d"] {
            assert_eq!(weights.get(name, &[3]).unwrap().data, values, "{name}");
        }
    }
}
