//! A small, explicit ONNX graph builder: typed graph inputs and outputs, initializers (inline
//! or in an external data file), nodes with attributes, and the model wrapper. It knows
//! nothing about transformers; `toolkit::export` builds the encoder with it.
use std::collections::HashMap;

use crate::onnx::{
    attribute_proto::AttributeType, tensor_proto, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// Element types the toolkit writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElemType {
    F32,
    F16,
    I64,
    I32,
    I8,
    U8,
    Bool,
}

impl ElemType {
    pub fn onnx(self) -> i32 {
        use tensor_proto::DataType;
        (match self {
            ElemType::F32 => DataType::Float,
            ElemType::F16 => DataType::Float16,
            ElemType::I64 => DataType::Int64,
            ElemType::I32 => DataType::Int32,
            ElemType::I8 => DataType::Int8,
            ElemType::U8 => DataType::Uint8,
            ElemType::Bool => DataType::Bool,
        }) as i32
    }

    pub fn size(self) -> usize {
        match self {
            ElemType::F32 | ElemType::I32 => 4,
            ElemType::F16 => 2,
            ElemType::I64 => 8,
            ElemType::I8 | ElemType::U8 | ElemType::Bool => 1,
        }
    }
}

/// One dimension of a graph input or output: fixed, or symbolic (dynamic) by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    Named(String),
}

impl Dim {
    pub fn named(name: &str) -> Self {
        Dim::Named(name.to_string())
    }
}

/// A node attribute.
#[derive(Debug, Clone)]
pub struct Attr(AttributeProto);

impl Attr {
    fn base(name: &str, kind: AttributeType) -> AttributeProto {
        AttributeProto { name: Some(name.to_string()), r#type: Some(kind as i32), ..Default::default() }
    }

    pub fn int(name: &str, value: i64) -> Self {
        Attr(AttributeProto { i: Some(value), ..Self::base(name, AttributeType::Int) })
    }

    pub fn float(name: &str, value: f32) -> Self {
        Attr(AttributeProto { f: Some(value), ..Self::base(name, AttributeType::Float) })
    }

    pub fn ints(name: &str, values: &[i64]) -> Self {
        Attr(AttributeProto { ints: values.to_vec(), ..Self::base(name, AttributeType::Ints) })
    }

    pub fn string(name: &str, value: &str) -> Self {
        Attr(AttributeProto { s: Some(value.as_bytes().to_vec()), ..Self::base(name, AttributeType::String) })
    }

    pub fn tensor(name: &str, value: TensorProto) -> Self {
        Attr(AttributeProto { t: Some(value), ..Self::base(name, AttributeType::Tensor) })
    }
}

/// Tensor constructors.
pub mod tensor {
    use super::*;

    /// A tensor whose little-endian bytes are stored in the model itself.
    pub fn inline(name: &str, elem: ElemType, dims: &[i64], raw: Vec<u8>) -> TensorProto {
        debug_assert_eq!(raw.len(), dims.iter().product::<i64>() as usize * elem.size(), "tensor `{name}`");
        TensorProto {
            name: Some(name.to_string()),
            data_type: Some(elem.onnx()),
            dims: dims.to_vec(),
            raw_data: Some(raw),
            ..Default::default()
        }
    }

    /// A tensor whose bytes live in `location` (a file name relative to the model) at
    /// `offset`, `length` bytes long.
    pub fn external(name: &str, elem: ElemType, dims: &[i64], location: &str, offset: u64, length: u64) -> TensorProto {
        let entry = |k: &str, v: String| StringStringEntryProto { key: Some(k.to_string()), value: Some(v) };
        TensorProto {
            name: Some(name.to_string()),
            data_type: Some(elem.onnx()),
            dims: dims.to_vec(),
            data_location: Some(tensor_proto::DataLocation::External as i32),
            external_data: vec![
                entry("location", location.to_string()),
                entry("offset", offset.to_string()),
                entry("length", length.to_string()),
            ],
            ..Default::default()
        }
    }

    pub fn i64s(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
        inline(name, ElemType::I64, dims, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    pub fn f32s(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
        inline(name, ElemType::F32, dims, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

/// Builds one `GraphProto`. Value names are unique: `node` derives each output's name from
/// the node's name, which callers choose to mirror the checkpoint's module paths.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    name: String,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    value_info: Vec<ValueInfoProto>,
    used_names: HashMap<String, usize>,
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        Self { name: name.to_string(), ..Default::default() }
    }

    /// A fresh name: `base`, or `base_2`, `base_3`, ... when taken.
    pub fn unique(&mut self, base: &str) -> String {
        let n = self.used_names.entry(base.to_string()).or_insert(0);
        *n += 1;
        if *n == 1 {
            base.to_string()
        } else {
            format!("{base}_{n}")
        }
    }

    /// Declares a graph input and returns its value name.
    pub fn input(&mut self, name: &str, elem: ElemType, dims: &[Dim]) -> String {
        let name = self.unique(name);
        self.inputs.push(value_info(&name, elem, dims));
        name
    }

    /// Declares `value` (produced by a node) a graph output.
    pub fn output(&mut self, value: &str, elem: ElemType, dims: &[Dim]) {
        self.outputs.push(value_info(value, elem, dims));
    }

    /// Declares the type and shape of an intermediate value, where shape inference alone
    /// cannot know it (a symbolic dimension that passed through `Slice` or `Reshape`); the
    /// runtime's fusions check shapes.
    pub fn value_info(&mut self, value: &str, elem: ElemType, dims: &[Dim]) {
        self.value_info.push(value_info(value, elem, dims));
    }

    /// Adds an initializer and returns its name (which must be unique).
    pub fn initializer(&mut self, tensor: TensorProto) -> String {
        let name = tensor.name.clone().unwrap_or_default();
        let unique = self.unique(&name);
        assert_eq!(unique, name, "initializer `{name}` added twice");
        self.initializers.push(tensor);
        name
    }

    /// An inline int64 constant (shapes, axes, indices).
    pub fn const_i64(&mut self, name: &str, dims: &[i64], values: &[i64]) -> String {
        let name = self.unique(name);
        self.initializers.push(tensor::i64s(&name, dims, values));
        name
    }

    /// An inline constant of any type from its little-endian bytes.
    pub fn constant(&mut self, name: &str, elem: ElemType, dims: &[i64], raw: Vec<u8>) -> String {
        let name = self.unique(name);
        self.initializers.push(tensor::inline(&name, elem, dims, raw));
        name
    }

    /// Starts a node of `op_type` named `name` (made unique) over `inputs`.
    pub fn node(&mut self, op_type: &str, name: &str, inputs: &[&str]) -> NodeSpec<'_> {
        let name = self.unique(name);
        let node = NodeProto {
            op_type: Some(op_type.to_string()),
            name: Some(name),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        NodeSpec { graph: self, node }
    }

    /// Renames the value `old` (a node output) to `new` everywhere, e.g. to make the last node's
    /// output a graph output without an `Identity`.
    pub fn rename(&mut self, old: &str, new: &str) -> String {
        let new = self.unique(new);
        for node in &mut self.nodes {
            for name in node.input.iter_mut().chain(node.output.iter_mut()) {
                if name == old {
                    *name = new.clone();
                }
            }
        }
        new
    }

    pub fn finish(self) -> GraphProto {
        GraphProto {
            name: Some(self.name),
            node: self.nodes,
            initializer: self.initializers,
            input: self.inputs,
            output: self.outputs,
            value_info: self.value_info,
            ..Default::default()
        }
    }
}

/// A node being built; finish it with `out`, `outs` or `out_as`.
pub struct NodeSpec<'g> {
    graph: &'g mut GraphBuilder,
    node: NodeProto,
}

impl NodeSpec<'_> {
    pub fn attr(mut self, attr: Attr) -> Self {
        self.node.attribute.push(attr.0);
        self
    }

    pub fn domain(mut self, domain: &str) -> Self {
        self.node.domain = Some(domain.to_string());
        self
    }

    /// Finishes with one output, named after the node.
    pub fn out(self) -> String {
        let name = format!("{}/out", self.node.name.as_deref().unwrap_or_default());
        self.out_as(&name)
    }

    /// Finishes with one output named `name` (e.g. a graph output).
    pub fn out_as(self, name: &str) -> String {
        let name = self.graph.unique(name);
        self.push(vec![name.clone()]);
        name
    }

    /// Finishes with `n` outputs.
    pub fn outs(self, n: usize) -> Vec<String> {
        let base = self.node.name.clone().unwrap_or_default();
        let names: Vec<String> = (0..n).map(|i| self.graph.unique(&format!("{base}/out{i}"))).collect();
        self.push(names.clone());
        names
    }

    /// Finishes with the given output names.
    pub fn outs_as(self, names: &[&str]) -> Vec<String> {
        let names: Vec<String> = names.iter().map(|n| self.graph.unique(n)).collect();
        self.push(names.clone());
        names
    }

    fn push(mut self, outputs: Vec<String>) {
        self.node.output = outputs;
        self.graph.nodes.push(self.node);
    }
}

fn value_info(name: &str, elem: ElemType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                Dim::Named(n) => tensor_shape_proto::dimension::Value::DimParam(n.clone()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem.onnx()),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What goes around the graph in the model file.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Default-domain opset; 17 is the first with `LayerNormalization`.
    pub opset: i64,
    /// IR version; 8 pairs with opset 17 and loads in every ONNX Runtime since 1.10.
    pub ir_version: i64,
    pub producer_name: String,
    pub producer_version: String,
    pub doc_string: Option<String>,
    /// `metadata_props`, in order.
    pub metadata: Vec<(String, String)>,
}

impl Default for ModelInfo {
    fn default() -> Self {
        Self {
            opset: 17,
            ir_version: 8,
            producer_name: String::new(),
            producer_version: String::new(),
            doc_string: None,
            metadata: Vec::new(),
        }
    }
}

/// The model around `graph`. Every other domain its nodes use is imported at version 1 (ONNX
/// Runtime's contrib ops, `com.microsoft`, all are).
pub fn model(graph: GraphProto, info: &ModelInfo) -> ModelProto {
    let mut opset_import = vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(info.opset) }];
    for node in &graph.node {
        let domain = node.domain();
        if !domain.is_empty() && !opset_import.iter().any(|o| o.domain() == domain) {
            opset_import.push(OperatorSetIdProto { domain: Some(domain.to_string()), version: Some(1) });
        }
    }
    ModelProto {
        ir_version: Some(info.ir_version),
        opset_import,
        producer_name: Some(info.producer_name.clone()),
        producer_version: Some(info.producer_version.clone()),
        doc_string: info.doc_string.clone(),
        graph: Some(graph),
        metadata_props: info
            .metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto { key: Some(k.clone()), value: Some(v.clone()) })
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_outputs_follow_nodes() {
        let mut g = GraphBuilder::new("g");
        let x = g.input("x", ElemType::F32, &[Dim::named("batch"), Dim::Fixed(4)]);
        let a = g.node("Relu", "act", &[&x]).out();
        let b = g.node("Relu", "act", &[&a]).out_as("y");
        g.output(&b, ElemType::F32, &[Dim::named("batch"), Dim::Fixed(4)]);
        let graph = g.finish();
        assert_eq!(graph.node[0].name.as_deref(), Some("act"));
        assert_eq!(graph.node[1].name.as_deref(), Some("act_2"));
        assert_eq!(graph.node[1].input, vec!["act/out".to_string()]);
        assert_eq!(graph.output[0].name.as_deref(), Some("y"));
    }
}
