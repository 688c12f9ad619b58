//! One copy of an export's projection weights for every language's session. The models of an
//! export differ only in their inline language adapter; the base model's and the task
//! adapter's weights live once in the export's external data file. Given to each session as
//! the same initializers with one `PrepackedWeights` container, they are packed for ONNX
//! Runtime's GEMM once per evaluation instead of once per language, and the packed copy is
//! held once.
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;
use ort::session::builder::PrepackedWeights;
use ort::value::{DynValue, Tensor};
use toolkit_onnx::onnx::tensor_proto::{DataLocation, DataType};
use toolkit_onnx::onnx::{ModelProto, TensorProto};
use toolkit_onnx::prost::Message;

#[derive(Debug, Clone)]
pub struct SharedWeights {
    pub prepacked: PrepackedWeights,
    /// Initializer name and value.
    pub initializers: Vec<(String, Arc<DynValue>)>,
}

impl SharedWeights {
    /// The right-hand operands of `model`'s MatMuls (float32, or int8 / uint8 in an int8 export) that
    /// are stored in an external data file; the others stay with each model.
    pub fn load(model: &Path) -> Result<Self> {
        // Values and the container come from the ONNX Runtime library, loaded with it.
        super::environment()?;
        let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
        let proto = ModelProto::decode(bytes.as_slice()).with_context(|| format!("{} is not an ONNX model", model.display()))?;
        let graph = proto.graph.ok_or_else(|| anyhow!("{} has no graph", model.display()))?;
        let rhs: HashSet<&str> = graph
            .node
            .iter()
            .filter(|n| matches!(n.op_type.as_deref(), Some("MatMul" | "MatMulInteger" | "MatMulIntegerToFloat")))
            .filter_map(|n| n.input.get(1).map(String::as_str))
            .collect();
        let dir = model.parent().unwrap_or(Path::new("."));
        let mut files: HashMap<String, Mmap> = HashMap::new();
        let mut initializers = Vec::new();
        for t in &graph.initializer {
            let name = t.name.as_deref().unwrap_or_default();
            if !rhs.contains(name) || t.data_location != Some(DataLocation::External as i32) {
                continue;
            }
            let (location, offset, length) = external_location(t).with_context(|| format!("{}: tensor `{name}`", model.display()))?;
            if !files.contains_key(&location) {
                let path = dir.join(&location);
                let file = File::open(&path).with_context(|| format!("opening {} (external data of {})", path.display(), model.display()))?;
                // SAFETY: the export's data file is only read; a file changed while mapped
                // would give wrong weights, as it would to ONNX Runtime reading it itself.
                let map = unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
                files.insert(location.clone(), map);
            }
            let file = &files[&location];
            let end = length.map_or(file.len(), |l| offset.saturating_add(l));
            let data = file.get(offset..end).ok_or_else(|| anyhow!("{location} is too short for tensor `{name}` (bytes {offset}..{end})"))?;
            let dims = t.dims.clone();
            let count: i64 = dims.iter().product();
            let value = match DataType::try_from(t.data_type.unwrap_or_default()) {
                Ok(DataType::Float) => {
                    check_length(name, data, count, 4)?;
                    let floats: Vec<f32> = data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                    Tensor::from_array((dims, floats))?.into_dyn()
                }
                Ok(DataType::Int8) => {
                    check_length(name, data, count, 1)?;
                    Tensor::from_array((dims, data.iter().map(|b| *b as i8).collect::<Vec<i8>>()))?.into_dyn()
                }
                Ok(DataType::Uint8) => {
                    check_length(name, data, count, 1)?;
                    Tensor::from_array((dims, data.to_vec()))?.into_dyn()
                }
                // Other types (an fp16 export's) stay with each model.
                _ => continue,
            };
            initializers.push((name.to_string(), Arc::new(value)));
        }
        Ok(Self { prepacked: PrepackedWeights::new(), initializers })
    }
}

/// Where `t`'s bytes are: file, offset, and length (`None`: to the end of the file).
fn external_location(t: &TensorProto) -> Result<(String, usize, Option<usize>)> {
    let get = |key: &str| t.external_data.iter().find(|e| e.key.as_deref() == Some(key)).and_then(|e| e.value.clone());
    let location = get("location").ok_or_else(|| anyhow!("external data without a location"))?;
    let number = |key: &str| -> Result<Option<usize>> {
        get(key).map(|v| v.parse().map_err(|e| anyhow!("external data {key} `{v}`: {e}"))).transpose()
    };
    Ok((location, number("offset")?.unwrap_or(0), number("length")?))
}

fn check_length(name: &str, data: &[u8], count: i64, size: usize) -> Result<()> {
    if data.len() != count as usize * size {
        bail!("tensor `{name}` has {} bytes of external data for {count} values of {size} bytes", data.len());
    }
    Ok(())
}
