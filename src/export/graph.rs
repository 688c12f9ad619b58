//! The composed MAD-X encoder as an ONNX graph: embeddings, the invertible adapter, the
//! transformer layers with their bottleneck adapters, and the head, with the semantics of
//! Hugging Face `transformers` + the `adapters` library in eval mode.
//!
//! The graph uses the op patterns ONNX Runtime fuses. Its session optimizer turns the residual
//! `Add` + native `LayerNormalization` into `SkipLayerNormalization` (CUDA sessions only: on
//! the CPU that kernel is slower, see `runtime`), the bias `Add` + erf GELU
//! (`Div -> Erf -> Add -> Mul -> Mul`) into `BiasGelu`, and `MatMul` + `Div` by sqrt(head size)
//! into `FusedMatMul`. The attention block (per-head Reshape/Transpose, the
//! `Unsqueeze -> Unsqueeze -> Cast -> Sub -> Mul` additive mask, `Softmax`) is the BERT pattern
//! that `onnxruntime.transformers.optimizer` fuses into `Attention`; the session optimizer only
//! matches it in opset 13 or older models, and `LayerNormalization` needs opset 17.
use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use toolkit_onnx::onnx::tensor_proto::DataType;
use toolkit_onnx::onnx::{GraphProto, TensorProto};
use toolkit_onnx::{Attr, Dim, ElemType, GraphBuilder};

use crate::model::config::HiddenAct;
use crate::model::head::HeadInput;
use crate::model::weights::Entry;
use crate::model::{Activation, AdapterSpec, Arch, ComposedModel, Head, HeadType};

/// Storage and compute type of the exported float tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// Float32 everywhere: matches the reference within 1e-4.
    #[default]
    Fp32,
    /// Float16 weights and activations, for GPU inference; LayerNorm statistics, the attention
    /// softmax and the outputs stay in float32.
    Fp16,
    /// For CPU scoring: the projections of the encoder and of the adapters run as integer
    /// MatMuls, 8-bit weights (one scale per output feature) times uint8 activations quantised
    /// at run time, one scale and zero point per token (see `Builder::integer_linear`);
    /// everything else (embeddings, LayerNorm, attention scores and weighted sums, the pooler
    /// and the head) stays float32. `Int8Cpu` says which integer kernels.
    Int8,
}

/// The CPUs an int8 export's integer MatMuls are made for (`toolkit export --int8-cpu`). Both
/// kinds quantise the same way (8-bit activations, 8-bit weights) and give the same products;
/// they differ in the weights' type, which picks ONNX Runtime's kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Int8Cpu {
    /// `vnni` where this CPU multiplies uint8 by int8 exactly (x86-64 with AVX512-VNNI or
    /// AVX-VNNI, which every AMX CPU has; Arm), else `any`.
    #[default]
    Auto,
    /// int8 weights: ONNX Runtime's uint8 x int8 kernels (VNNI, AMX). An x86-64 CPU without
    /// VNNI adds each pair of these products in 16 bits with saturation, which 255 x 127 x 2
    /// overflows, so `toolkit eval` refuses such an export there.
    Vnni,
    /// uint8 weights (the int8 values plus 128, zero point 128): ONNX Runtime's uint8 x uint8
    /// kernels, which widen to 16 bits before they multiply: exact on every CPU, but they do not
    /// use VNNI.
    Any,
}

/// How an int8 export quantises the activations of its integer MatMuls (`toolkit export
/// --int8-activations`). Both round to 8 bits with a zero point, as ONNX's DynamicQuantizeLinear
/// does; they differ in what one scale and zero point cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Int8Activations {
    /// One scale and zero point per token (see `Builder::quantize_rows`): a token's steps do
    /// not depend on the other tokens of its batch, at the cost of passes over each product's
    /// output that ONNX Runtime cannot fuse.
    #[default]
    Token,
    /// Per token for the feed-forward block's two projections, per tensor for the others
    /// (attention and adapters). The inputs of those two (the attention block's LayerNorm
    /// output and the activation's output) are where a tensor-wide scale loses most: on a
    /// trained QA model, per tensor for all moved the logits 4x as far from fp32 as per token,
    /// per tensor for all but these two 1.15x.
    Mixed,
    /// One scale and zero point per projection input, that is per batch (DynamicQuantizeLinear,
    /// which ONNX Runtime fuses with the integer product, its scaling and bias into one
    /// operator): faster, but padding and outlier tokens widen every token's steps, and a
    /// text's scores depend on the batch it is scored in.
    Tensor,
}

impl Int8Activations {
    /// Whether the input of projection `prefix` gets one scale for the whole tensor.
    fn per_tensor(self, prefix: &str) -> bool {
        match self {
            Int8Activations::Token => false,
            Int8Activations::Mixed => !is_feed_forward(prefix),
            Int8Activations::Tensor => true,
        }
    }
}

/// The feed-forward block's two projections, under `encoder.layer.{i}.`.
const FFN_UP: &str = "intermediate.dense";
const FFN_DOWN: &str = "output.dense";

fn is_feed_forward(prefix: &str) -> bool {
    let Some(rest) = prefix.strip_prefix("encoder.layer.") else {
        return false;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    matches!(rest.strip_prefix('.'), Some(FFN_UP | FFN_DOWN))
}

impl Int8Cpu {
    /// `Auto` decided for this CPU; the others as they are.
    pub fn resolve(self) -> Int8Cpu {
        match self {
            Int8Cpu::Auto if crate::device::cpu_u8s8_exact() => Int8Cpu::Vnni,
            Int8Cpu::Auto => Int8Cpu::Any,
            chosen => chosen,
        }
    }
}

impl Dtype {
    /// The type of the float weights and activations (an int8 export's are float32).
    pub fn elem(self) -> ElemType {
        match self {
            Dtype::Fp32 | Dtype::Int8 => ElemType::F32,
            Dtype::Fp16 => ElemType::F16,
        }
    }

    /// fp32 values as the little-endian bytes of `elem()`.
    pub fn bytes(self, values: &[f32]) -> Vec<u8> {
        match self {
            Dtype::Fp32 | Dtype::Int8 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::Fp16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        }
    }
}

/// Decides where each weight is stored (inline, or in a shared external data file) and
/// returns the initializer to add. `bytes` is called only when the data must be written, so
/// weights already in the shared file are not read again for the next language.
pub trait WeightSink {
    fn tensor(&mut self, name: &str, elem: ElemType, dims: &[i64], bytes: &dyn Fn() -> Result<Vec<u8>>) -> Result<TensorProto>;
}

/// Graph input names, in the order of the model's inputs.
pub fn input_names(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::Bert => &["input_ids", "attention_mask", "token_type_ids"],
        Arch::XlmRoberta => &["input_ids", "attention_mask"],
    }
}

/// Builds the graph of `model` (with whatever adapters it holds) and its head. With
/// `int8_lang_adapter`, the language adapter's linear weights are stored as int8 (see
/// `quantized_weight`); an int8 `dtype` makes them integer projections in any case, with the
/// weights of `int8_cpu` (resolved: not `Auto`).
pub fn encoder_graph(
    model: &ComposedModel,
    dtype: Dtype,
    int8_lang_adapter: bool,
    int8_cpu: Int8Cpu,
    int8_activations: Int8Activations,
    sink: &mut dyn WeightSink,
) -> Result<GraphProto> {
    let head = model.head.as_ref().context(
        "the model has no prediction head: give a task adapter saved with its head, or a checkpoint of a \
         *ForSequenceClassification / *ForQuestionAnswering / *ForMultipleChoice model",
    )?;
    let mut b = Builder {
        g: GraphBuilder::new("toolkit_encoder"),
        model,
        sink,
        dtype,
        int8_cpu,
        int8_activations,
        ft: dtype.elem(),
        added: HashSet::new(),
        rows_quantized: HashMap::new(),
        tensor_quantized: HashMap::new(),
        nonnegative: HashSet::new(),
        rows: "batch",
        sequence: Dim::named("sequence"),
        int8_prefixes: match (&model.lang, int8_lang_adapter) {
            (Some(lang), true) => lang_adapter_prefixes(model, lang),
            _ => Vec::new(),
        },
    };
    let inputs = b.inputs(head.head_type);
    if inputs.choice_shape.is_some() {
        b.rows = ROWS;
    }
    let mut hidden = b.embeddings(&inputs)?;
    if let Some(adapter) = model.invertible() {
        hidden = b.invertible_adapter(&hidden, adapter)?;
    }
    let mask = b.additive_mask(&inputs.attention_mask);
    // A head that reads only the first token needs only that token's output of the last
    // layer (see `Encoder::forward`).
    let last = model.config.num_hidden_layers.saturating_sub(1);
    for layer in 0..model.config.num_hidden_layers {
        let first_token_only = layer == last && head.input.first_token_only();
        hidden = b.layer(&hidden, &mask, layer, first_token_only)?;
    }
    b.head(&hidden, head, &inputs)?;
    Ok(b.g.finish())
}

/// The symbolic first dimension of multiple-choice inputs flattened to `[batch * choices, sequence]`.
const ROWS: &str = "batch_x_choices";

/// The flattened `[rows, sequence]` inputs the encoder runs on, and what the head needs to
/// restore the batch shape.
struct Inputs {
    input_ids: String,
    attention_mask: String,
    token_type_ids: Option<String>,
    /// `[batch, choices]` of multiple-choice inputs.
    choice_shape: Option<String>,
}

struct Builder<'a> {
    g: GraphBuilder,
    model: &'a ComposedModel,
    sink: &'a mut dyn WeightSink,
    dtype: Dtype,
    /// The integer projections' weight type (int8 export).
    int8_cpu: Int8Cpu,
    /// What one activation scale covers in the integer projections (int8 export).
    int8_activations: Int8Activations,
    /// The float type of weights and activations.
    ft: ElemType,
    /// Initializers added so far (a LayerNorm may be used more than once).
    added: HashSet<String>,
    /// Activations already quantised for integer projections, by tensor name (Q, K and V
    /// share their input).
    rows_quantized: HashMap<String, RowsQuantized>,
    /// The same for inputs quantised per tensor (`Int8Activations::per_tensor`):
    /// DynamicQuantizeLinear's values, scale and zero point.
    tensor_quantized: HashMap<String, [String; 3]>,
    /// Activations that cannot be negative (ReLU outputs): quantised without a zero point.
    nonnegative: HashSet<String>,
    /// The symbolic first dimension of the encoder's activations.
    rows: &'static str,
    /// The sequence axis of the activations `linear` projects: `sequence`, or 1 in a layer
    /// that computes only the first token's output (but for its keys and values).
    sequence: Dim,
    /// Linear weights under these prefixes are stored as int8.
    int8_prefixes: Vec<String>,
}

/// An activation `[rows, sequence, in]` quantised per token for integer MatMuls (see
/// `Builder::quantize_rows`): the names of its uint8 values, of its `[rows, sequence, 1]`
/// scales and of the scales times the zero points (none where the zero point is always 0).
#[derive(Clone)]
struct RowsQuantized {
    values: String,
    scale: String,
    scaled_zero_point: Option<String>,
}

/// Name prefixes of the tensors of language adapter `lang` (bottleneck and invertible).
pub fn lang_adapter_prefixes(model: &ComposedModel, lang: &AdapterSpec) -> Vec<String> {
    (0..model.config.num_hidden_layers)
        .map(|i| format!("{}.", lang.layer_prefix(i)))
        .chain([format!("{}.", lang.invertible_prefix())])
        .collect()
}

/// The `[out, in]` weight of `entry` transposed to `[in, out]`.
fn transpose(entry: &Entry, out_dim: usize, in_dim: usize) -> Result<Vec<f32>> {
    let data = &entry.tensor()?.data;
    let mut t = vec![0f32; data.len()];
    for (o, row) in data.chunks_exact(in_dim).enumerate() {
        for (i, v) in row.iter().enumerate() {
            t[i * out_dim + o] = *v;
        }
    }
    Ok(t)
}

/// Steps of an int8 export's activation quantisation: all 8 bits. (Exports before `Int8Cpu`
/// used 7 bits with int8 weights, so that ONNX Runtime's u8 x s8 kernel could not saturate on
/// CPUs without VNNI; on a trained COPA model the 8-bit activations with uint8 weights moved
/// the logits 1.7x less and kept the same argmax in 100% of 128 sampled rows against 99.2%.)
const ACTIVATION_STEPS: f32 = 255.0;

/// The zero point of uint8 weights (`Int8Cpu::Any`): int8 value + 128.
const WEIGHT_ZERO_POINT: i16 = 128;

/// The domain of ONNX Runtime's contrib ops (MatMulIntegerToFloat).
const MS_DOMAIN: &str = "com.microsoft";

/// An `[in, out]` weight as int8 with one float32 scale per output feature (column),
/// symmetric: scale = max |w| / 127 over the column, q = round(w / scale), as onnxruntime's
/// `quantize_dynamic` does per channel. The error of each weight is at most half a step,
/// scale / 2 = max |w| / 254. Returns the int8 values (as bytes, row-major) and the scales.
fn quantize_columns(w: &[f32], out_dim: usize) -> (Vec<u8>, Vec<f32>) {
    let mut scales = vec![0f32; out_dim];
    for row in w.chunks_exact(out_dim) {
        for (s, v) in scales.iter_mut().zip(row) {
            *s = s.max(v.abs());
        }
    }
    // An all-zero column (e.g. a freshly initialised up-projection) keeps scale 1.
    scales.iter_mut().for_each(|s| *s = if *s > 0.0 { *s / 127.0 } else { 1.0 });
    let q = w
        .chunks_exact(out_dim)
        .flat_map(|row| row.iter().zip(&scales).map(|(v, s)| (v / s).round().clamp(-127.0, 127.0) as i8 as u8))
        .collect();
    (q, scales)
}

impl Builder<'_> {
    fn inputs(&mut self, head_type: HeadType) -> Inputs {
        let mc = head_type == HeadType::MultipleChoice;
        let dims: Vec<Dim> = if mc {
            vec![Dim::named("batch"), Dim::named("choices"), Dim::named("sequence")]
        } else {
            vec![Dim::named("batch"), Dim::named("sequence")]
        };
        let names = input_names(self.model.config.arch);
        let raw: Vec<String> = names.iter().map(|n| self.g.input(n, ElemType::I64, &dims)).collect();
        if !mc {
            return Inputs {
                input_ids: raw[0].clone(),
                attention_mask: raw[1].clone(),
                token_type_ids: raw.get(2).cloned(),
                choice_shape: None,
            };
        }
        // [batch, choices, sequence] -> [batch * choices, sequence].
        let seq = self.g.node("Shape", "choices/sequence_length", &[&raw[0]]).attr(Attr::int("start", -1)).out();
        let minus_one = self.g.const_i64("choices/minus_one", &[1], &[-1]);
        let flat_shape =
            self.g.node("Concat", "choices/flat_shape", &[&minus_one, &seq]).attr(Attr::int("axis", 0)).out();
        let choice_shape = self
            .g
            .node("Shape", "choices/batch_and_choices", &[&raw[0]])
            .attr(Attr::int("start", 0))
            .attr(Attr::int("end", 2))
            .out();
        let flat: Vec<String> = raw
            .iter()
            .zip(names)
            .map(|(input, name)| {
                let flat = self.g.node("Reshape", &format!("choices/flat_{name}"), &[input, &flat_shape]).out();
                self.g.value_info(&flat, ElemType::I64, &[Dim::named(ROWS), Dim::named("sequence")]);
                flat
            })
            .collect();
        Inputs {
            input_ids: flat[0].clone(),
            attention_mask: flat[1].clone(),
            token_type_ids: flat.get(2).cloned(),
            choice_shape: Some(choice_shape),
        }
    }

    // ---- weights ------------------------------------------------------------------------

    fn shape_of(&self, name: &str) -> Result<Vec<usize>> {
        match self.model.weights.entry(name) {
            Some(e) => Ok(e.shape.clone()),
            None => self.model.weights.get(name, &[]).map(|t| t.shape.clone()), // the error names what is missing
        }
    }

    /// A checkpoint tensor as it is stored.
    fn weight(&mut self, name: &str, shape: &[usize]) -> Result<String> {
        if self.added.contains(name) {
            return Ok(name.to_string());
        }
        let entry = self.model.weights.entry_with_shape(name, shape)?;
        let dtype = self.dtype;
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let proto = self.sink.tensor(name, self.ft, &dims, &|| Ok(dtype.bytes(&entry.tensor()?.data)))?;
        self.added.insert(name.to_string());
        Ok(self.g.initializer(proto))
    }

    /// The `[out, in]` weight of a `torch.nn.Linear` as the `[in, out]` right operand of MatMul.
    fn weight_transposed(&mut self, name: &str, out_dim: usize, in_dim: usize) -> Result<String> {
        let transposed = format!("{name}.T");
        if self.added.contains(&transposed) {
            return Ok(transposed);
        }
        let entry = self.model.weights.entry_with_shape(name, &[out_dim, in_dim])?;
        self.added.insert(transposed.clone());
        if self.int8_prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            return self.quantized_weight(&transposed, &transpose(entry, out_dim, in_dim)?, in_dim, out_dim);
        }
        let dtype = self.dtype;
        let bytes = || Ok(dtype.bytes(&transpose(entry, out_dim, in_dim)?));
        let proto = self.sink.tensor(&transposed, self.ft, &[in_dim as i64, out_dim as i64], &bytes)?;
        Ok(self.g.initializer(proto))
    }

    /// An `[in, out]` weight stored as int8 (see `quantize_columns`) and turned back into
    /// floats by DequantizeLinear in the graph. Four times smaller than float32.
    fn quantized_weight(&mut self, name: &str, w: &[f32], in_dim: usize, out_dim: usize) -> Result<String> {
        let (q, scales) = quantize_columns(w, out_dim);
        let dims = [in_dim as i64, out_dim as i64];
        let q_proto = self.sink.tensor(&format!("{name}.int8"), ElemType::I8, &dims, &|| Ok(q.clone()))?;
        let q_name = self.g.initializer(q_proto);
        let s_proto = self.sink.tensor(&format!("{name}.scale"), ElemType::F32, &[out_dim as i64], &|| Ok(Dtype::Fp32.bytes(&scales)))?;
        let s_name = self.g.initializer(s_proto);
        let dequantize = self.g.node("DequantizeLinear", &format!("{name}/DequantizeLinear"), &[&q_name, &s_name]).attr(Attr::int("axis", 1));
        if self.ft == ElemType::F32 {
            return Ok(dequantize.out_as(name));
        }
        let w = dequantize.out();
        Ok(self.g.node("Cast", &format!("{name}/Cast"), &[&w]).attr(Attr::int("to", self.ft.onnx() as i64)).out_as(name))
    }

    /// The right operand of an integer MatMul: the transposed weight `name` as int8 (see
    /// `quantize_columns`; for `Int8Cpu::Any` as uint8, each value plus 128) and its
    /// per-column float32 scales. Returns their names. The weight is quantised only when the
    /// sink needs its bytes (once per tensor then: cheap next to reading it).
    fn integer_weight(&mut self, name: &str, out_dim: usize, in_dim: usize) -> Result<[String; 2]> {
        let (suffix, elem) = match self.int8_cpu {
            Int8Cpu::Any => ("uint8", ElemType::U8),
            _ => ("int8", ElemType::I8),
        };
        let names = [format!("{name}.T.{suffix}"), format!("{name}.T.scale")];
        if self.added.contains(&names[0]) {
            return Ok(names);
        }
        let entry = self.model.weights.entry_with_shape(name, &[out_dim, in_dim])?;
        let quantized = || -> Result<(Vec<u8>, Vec<f32>)> { Ok(quantize_columns(&transpose(entry, out_dim, in_dim)?, out_dim)) };
        let values = || -> Result<Vec<u8>> {
            let q = quantized()?.0;
            Ok(match elem {
                ElemType::U8 => q.into_iter().map(|v| (v as i8 as i16 + WEIGHT_ZERO_POINT) as u8).collect(),
                _ => q,
            })
        };
        let dims = [in_dim as i64, out_dim as i64];
        let q = self.sink.tensor(&names[0], elem, &dims, &values)?;
        let s = self.sink.tensor(&names[1], ElemType::F32, &[out_dim as i64], &|| Ok(Dtype::Fp32.bytes(&quantized()?.1)))?;
        for proto in [q, s] {
            self.g.initializer(proto);
        }
        self.added.insert(names[0].clone());
        Ok(names)
    }

    /// Per column of the int8 weight of `integer_weight`, its scale times the sum of the
    /// column's int8 values (for the activations' zero points, see `integer_linear`).
    fn scaled_column_sums(&mut self, name: &str, out_dim: usize, in_dim: usize) -> Result<String> {
        let sums_name = format!("{name}.T.scaled_column_sum");
        if self.added.contains(&sums_name) {
            return Ok(sums_name);
        }
        let entry = self.model.weights.entry_with_shape(name, &[out_dim, in_dim])?;
        let scaled_column_sums = || -> Result<Vec<u8>> {
            let (q, scales) = quantize_columns(&transpose(entry, out_dim, in_dim)?, out_dim);
            let mut sums = vec![0i32; out_dim];
            for row in q.chunks_exact(out_dim) {
                sums.iter_mut().zip(row).for_each(|(sum, v)| *sum += i32::from(*v as i8));
            }
            let scaled: Vec<f32> = sums.iter().zip(&scales).map(|(sum, s)| *sum as f32 * s).collect();
            Ok(Dtype::Fp32.bytes(&scaled))
        };
        let proto = self.sink.tensor(&sums_name, ElemType::F32, &[out_dim as i64], &scaled_column_sums)?;
        self.g.initializer(proto);
        self.added.insert(sums_name.clone());
        Ok(sums_name)
    }

    /// A float scalar constant in the graph's float type.
    fn scalar(&mut self, name: &str, value: f32) -> String {
        self.scalar_of(name, self.ft, value)
    }

    fn scalar_of(&mut self, name: &str, elem: ElemType, value: f32) -> String {
        let bytes = if elem == ElemType::F16 { Dtype::Fp16.bytes(&[value]) } else { Dtype::Fp32.bytes(&[value]) };
        self.g.constant(name, elem, &[], bytes)
    }

    // ---- building blocks ----------------------------------------------------------------

    /// `x @ W^T + b` of the `torch.nn.Linear` under `prefix`, a projection of the encoder or
    /// of an adapter: an integer MatMul in an int8 export.
    fn linear(&mut self, x: &str, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<String> {
        if self.dtype == Dtype::Int8 {
            return self.integer_linear(x, prefix, in_dim, out_dim, bias);
        }
        self.float_linear(x, prefix, in_dim, out_dim, bias)
    }

    /// `x @ W^T + b` as a float MatMul, in every export (the pooler and the head: too small
    /// to gain from integers, and closest to the logits).
    fn float_linear(&mut self, x: &str, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<String> {
        let w = self.weight_transposed(&format!("{prefix}.weight"), out_dim, in_dim)?;
        let y = self.g.node("MatMul", &format!("{prefix}/MatMul"), &[x, &w]).out();
        self.add_bias(&y, prefix, out_dim, bias)
    }

    /// `x @ W^T + b` with int8 weights and uint8 activations quantised per token (see
    /// `quantize_rows`): with activation scale s and zero point z of a token, weight scale
    /// w_n and integer column sum c_n = sum_k Wq[k, n] of output feature n,
    /// y = s * (w_n * (xq @ Wq)) - (s * z) * (w_n * c_n) + b_n, which is s * w_n * ((xq - z) @ Wq) + b_n.
    /// The integer product and its scaling by w_n are one ONNX Runtime MatMulIntegerToFloat: its
    /// integer GEMM (VNNI where the CPU has it and the weights are int8) scales each tile while it is in cache, where a
    /// MatMulInteger would write int32 and take a Cast and a Mul over the output (measured 4.5%
    /// of an e5-small int8 run on an AVX2 EPYC). The zero-point term is skipped for ReLU outputs,
    /// whose zero point is always 0. A scale per token instead of one over the whole batch keeps
    /// padding and outlier tokens from widening every token's steps (on real XCOPA inputs: 2.4x
    /// fewer flipped predictions), at a cost: the per-token scale and zero point are passes over
    /// the output that ONNX Runtime's fused ops cannot do (they take one activation scale and
    /// zero point per tensor). A zero point fixed per input instead of per token would drop two
    /// of the four passes (measured 1.2x faster on the AVX2 EPYC) but moved the XCOPA and
    /// XQuAD logits 1.4x further from fp32.
    fn integer_linear(&mut self, x: &str, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<String> {
        if self.int8_activations.per_tensor(prefix) {
            return self.tensor_quantized_linear(x, prefix, in_dim, out_dim, bias);
        }
        let weight = format!("{prefix}.weight");
        let [w, w_scale] = self.integer_weight(&weight, out_dim, in_dim)?;
        let xq = self.quantize_rows(x, prefix, in_dim);
        let one = self.scalar_of(&format!("{prefix}/unit_scale"), ElemType::F32, 1.0);
        // No activation zero point here (it is per token, see above).
        let y = self.integer_product(prefix, out_dim, [xq.values.clone(), w, one, w_scale, String::new()], None);
        let mut y = self.g.node("Mul", &format!("{prefix}/Mul_token_scale"), &[&y, &xq.scale]).out();
        if let Some(scaled_zero_point) = &xq.scaled_zero_point {
            let w_sum = self.scaled_column_sums(&weight, out_dim, in_dim)?;
            let zero_point = self.g.node("Mul", &format!("{prefix}/zero_point_term"), &[scaled_zero_point, &w_sum]).out();
            y = self.g.node("Sub", &format!("{prefix}/Sub_zero_point"), &[&y, &zero_point]).out();
        }
        self.add_bias(&y, prefix, out_dim, bias)
    }

    /// `x @ W^T + b` with int8 weights and `x` quantised by one scale and zero point for the
    /// whole tensor (`Int8Activations::per_tensor`): one MatMulIntegerToFloat takes the activation
    /// scale and zero point and the bias itself, and ONNX Runtime fuses it with the
    /// DynamicQuantizeLinear before it.
    fn tensor_quantized_linear(&mut self, x: &str, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<String> {
        let [w, w_scale] = self.integer_weight(&format!("{prefix}.weight"), out_dim, in_dim)?;
        let [xq, scale, zero_point] = match self.tensor_quantized.get(x) {
            Some(done) => done.clone(),
            None => {
                let outputs = self.g.node("DynamicQuantizeLinear", &format!("{prefix}/DynamicQuantizeLinear"), &[x]).outs(3);
                let done: [String; 3] = outputs.try_into().expect("three outputs");
                self.tensor_quantized.insert(x.to_string(), done.clone());
                done
            }
        };
        let bias = if bias { Some(self.weight(&format!("{prefix}.bias"), &[out_dim])?) } else { None };
        Ok(self.integer_product(prefix, out_dim, [xq, w, scale, w_scale, zero_point], bias))
    }

    /// The MatMulIntegerToFloat of `inputs` (activations, weights, activation scale, weight
    /// scales, activation zero point or ""), with the weights' zero point where they are
    /// uint8 and `bias` added by it.
    fn integer_product(&mut self, prefix: &str, out_dim: usize, inputs: [String; 5], bias: Option<String>) -> String {
        let mut inputs = inputs.to_vec();
        if self.int8_cpu == Int8Cpu::Any {
            inputs.push(self.g.constant(&format!("{prefix}/weight_zero_point"), ElemType::U8, &[], vec![WEIGHT_ZERO_POINT as u8]));
        }
        if let Some(bias) = bias {
            inputs.resize(6, String::new());
            inputs.push(bias);
        }
        // ONNX leaves out optional inputs at the end by omitting them.
        while inputs.last().is_some_and(String::is_empty) {
            inputs.pop();
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let y = self.g.node("MatMulIntegerToFloat", &format!("{prefix}/MatMulIntegerToFloat"), &inputs).domain(MS_DOMAIN).out();
        // Its shape, which ONNX Runtime cannot infer through the Reshape back from the
        // flattened tokens, lets its optimizer fuse the residual Adds into SkipLayerNormalization
        // where that fusion is on (CUDA).
        let dims = [Dim::named(self.rows), self.sequence.clone(), Dim::Fixed(out_dim as i64)];
        self.g.value_info(&y, ElemType::F32, &dims);
        y
    }

    /// Quantises `x` `[rows, sequence, in_dim]` to uint8 with one scale and zero point per
    /// token, over its `in_dim` features, as ONNX's DynamicQuantizeLinear does over a whole
    /// tensor: scale = (max(0, max x) - min(0, min x)) / 255 (`ACTIVATION_STEPS`),
    /// zero point z = round(-min(0, min x) / scale), xq = round(x / scale) + z (0 to 255), so its
    /// error is at most scale / 2. An all-zero token gets the smallest positive scale. For a
    /// ReLU output min(0, min x) is 0, so z is 0 and neither is computed. QuantizeLinear takes
    /// one scale per index of one axis, so it runs on `x` flattened to `[tokens, in_dim]`. Done
    /// once per tensor; `prefix` names the nodes after the first projection using it.
    fn quantize_rows(&mut self, x: &str, prefix: &str, in_dim: usize) -> RowsQuantized {
        if let Some(done) = self.rows_quantized.get(x) {
            return done.clone();
        }
        let p = format!("{prefix}/quantize_tokens");
        let nonnegative = self.nonnegative.contains(x);
        let hi = self.g.node("ReduceMax", &format!("{p}/ReduceMax"), &[x]).attr(Attr::ints("axes", &[-1])).out();
        let zero = self.scalar_of(&format!("{p}/zero"), ElemType::F32, 0.0);
        let hi = self.g.node("Max", &format!("{p}/Max_zero"), &[&hi, &zero]).out();
        let lo = (!nonnegative).then(|| {
            let lo = self.g.node("ReduceMin", &format!("{p}/ReduceMin"), &[x]).attr(Attr::ints("axes", &[-1])).out();
            self.g.node("Min", &format!("{p}/Min_zero"), &[&lo, &zero]).out()
        });
        let range = match &lo {
            Some(lo) => self.g.node("Sub", &format!("{p}/range"), &[&hi, lo]).out(),
            None => hi,
        };
        let steps = self.scalar_of(&format!("{p}/steps"), ElemType::F32, ACTIVATION_STEPS);
        let scale = self.g.node("Div", &format!("{p}/Div_steps"), &[&range, &steps]).out();
        let smallest = self.scalar_of(&format!("{p}/smallest_scale"), ElemType::F32, f32::MIN_POSITIVE);
        let scale = self.g.node("Max", &format!("{p}/scale"), &[&scale, &smallest]).out();

        let tokens = self.g.const_i64(&format!("{p}/tokens_shape"), &[1], &[-1]);
        let matrix = self.g.const_i64(&format!("{p}/matrix_shape"), &[2], &[-1, in_dim as i64]);
        let x2 = self.g.node("Reshape", &format!("{p}/Reshape_x"), &[x, &matrix]).out();
        let scale1 = self.g.node("Reshape", &format!("{p}/Reshape_scale"), &[&scale, &tokens]).out();
        let mut quantize_inputs = vec![x2, scale1];
        let mut scaled_zero_point = None;
        if let Some(lo) = &lo {
            let minus_lo = self.g.node("Neg", &format!("{p}/Neg_min"), &[lo]).out();
            let zero_point = self.g.node("Div", &format!("{p}/Div_scale"), &[&minus_lo, &scale]).out();
            let zero_point = self.g.node("Round", &format!("{p}/zero_point"), &[&zero_point]).out();
            scaled_zero_point = Some(self.g.node("Mul", &format!("{p}/scaled_zero_point"), &[&scale, &zero_point]).out());
            let zero_point_u8 = self
                .g
                .node("Cast", &format!("{p}/zero_point_u8"), &[&zero_point])
                .attr(Attr::int("to", DataType::Uint8 as i64))
                .out();
            quantize_inputs.push(self.g.node("Reshape", &format!("{p}/Reshape_zero_point"), &[&zero_point_u8, &tokens]).out());
        }
        // Without a zero point input QuantizeLinear writes uint8 with zero point 0.
        let quantize_inputs: Vec<&str> = quantize_inputs.iter().map(String::as_str).collect();
        let q = self.g.node("QuantizeLinear", &format!("{p}/QuantizeLinear"), &quantize_inputs).attr(Attr::int("axis", 0)).out();
        let shape = self.g.node("Shape", &format!("{p}/Shape"), &[x]).out();
        let values = self.g.node("Reshape", &format!("{p}/Reshape_back"), &[&q, &shape]).out();
        let done = RowsQuantized { values, scale, scaled_zero_point };
        self.rows_quantized.insert(x.to_string(), done.clone());
        done
    }

    fn add_bias(&mut self, y: &str, prefix: &str, out_dim: usize, bias: bool) -> Result<String> {
        if !bias {
            return Ok(y.to_string());
        }
        let b = self.weight(&format!("{prefix}.bias"), &[out_dim])?;
        Ok(self.g.node("Add", &format!("{prefix}/Add"), &[y, &b]).out())
    }

    /// A linear layer whose sizes are read from its stored weight.
    fn linear_auto(&mut self, x: &str, prefix: &str) -> Result<(String, usize)> {
        let shape = self.shape_of(&format!("{prefix}.weight"))?;
        let [out_dim, in_dim] = shape[..] else {
            bail!("`{prefix}.weight` has shape {shape:?}, expected 2 dimensions")
        };
        Ok((self.linear(x, prefix, in_dim, out_dim, true)?, out_dim))
    }

    fn layer_norm(&mut self, x: &str, prefix: &str) -> Result<String> {
        let h = self.model.config.hidden_size;
        let w = self.weight(&format!("{prefix}.weight"), &[h])?;
        let b = self.weight(&format!("{prefix}.bias"), &[h])?;
        Ok(self
            .g
            .node("LayerNormalization", prefix, &[x, &w, &b])
            .attr(Attr::int("axis", -1))
            .attr(Attr::float("epsilon", self.model.config.layer_norm_eps as f32))
            // Mean and variance in float32 also for fp16 inputs.
            .attr(Attr::int("stash_type", 1))
            .out())
    }

    /// `x * 0.5 * (1 + erf(x / sqrt(2)))`, the exact GELU of `torch.nn.functional.gelu`.
    fn gelu(&mut self, x: &str, name: &str) -> String {
        let sqrt2 = self.scalar(&format!("{name}/sqrt2"), std::f32::consts::SQRT_2);
        let one = self.scalar(&format!("{name}/one"), 1.0);
        let half = self.scalar(&format!("{name}/half"), 0.5);
        let d = self.g.node("Div", &format!("{name}/Div"), &[x, &sqrt2]).out();
        let e = self.g.node("Erf", &format!("{name}/Erf"), &[&d]).out();
        let a = self.g.node("Add", &format!("{name}/Add"), &[&e, &one]).out();
        let m = self.g.node("Mul", &format!("{name}/Mul"), &[x, &a]).out();
        self.g.node("Mul", &format!("{name}/Mul_half"), &[&m, &half]).out()
    }

    /// `0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))`, the tanh approximation
    /// (`transformers`' `gelu_new`); opset 17 has no `Gelu` op.
    fn gelu_tanh(&mut self, x: &str, name: &str) -> String {
        let k = self.scalar(&format!("{name}/sqrt_2_over_pi"), (2.0 / std::f32::consts::PI).sqrt());
        let c = self.scalar(&format!("{name}/coefficient"), 0.044715);
        let one = self.scalar(&format!("{name}/one"), 1.0);
        let half = self.scalar(&format!("{name}/half"), 0.5);
        let x2 = self.g.node("Mul", &format!("{name}/Mul_square"), &[x, x]).out();
        let x3 = self.g.node("Mul", &format!("{name}/Mul_cube"), &[&x2, x]).out();
        let cx3 = self.g.node("Mul", &format!("{name}/Mul_coefficient"), &[&x3, &c]).out();
        let inner = self.g.node("Add", &format!("{name}/Add_inner"), &[x, &cx3]).out();
        let scaled = self.g.node("Mul", &format!("{name}/Mul_scale"), &[&inner, &k]).out();
        let t = self.g.node("Tanh", &format!("{name}/Tanh"), &[&scaled]).out();
        let a = self.g.node("Add", &format!("{name}/Add"), &[&t, &one]).out();
        let m = self.g.node("Mul", &format!("{name}/Mul"), &[x, &a]).out();
        self.g.node("Mul", &format!("{name}/Mul_half"), &[&m, &half]).out()
    }

    fn relu(&mut self, x: &str, name: &str) -> String {
        let y = self.g.node("Relu", name, &[x]).out();
        self.nonnegative.insert(y.clone());
        y
    }

    fn activation(&mut self, x: &str, act: Activation, name: &str) -> String {
        match act {
            Activation::Relu => self.relu(x, &format!("{name}/Relu")),
            Activation::Tanh => self.g.node("Tanh", &format!("{name}/Tanh"), &[x]).out(),
            Activation::Gelu => self.gelu(x, &format!("{name}/Gelu")),
            Activation::GeluTanh => self.gelu_tanh(x, &format!("{name}/GeluTanh")),
            Activation::Silu => {
                let s = self.g.node("Sigmoid", &format!("{name}/Sigmoid"), &[x]).out();
                self.g.node("Mul", &format!("{name}/Mul"), &[x, &s]).out()
            }
        }
    }

    // ---- embeddings -----------------------------------------------------------------------

    fn embeddings(&mut self, inputs: &Inputs) -> Result<String> {
        let cfg = &self.model.config;
        let (h, vocab, max_pos, types) =
            (cfg.hidden_size, cfg.vocab_size, cfg.max_position_embeddings, cfg.type_vocab_size);
        let word = self.weight("embeddings.word_embeddings.weight", &[vocab, h])?;
        let pos_table = self.weight("embeddings.position_embeddings.weight", &[max_pos, h])?;
        let type_table = self.weight("embeddings.token_type_embeddings.weight", &[types, h])?;
        let ids = &inputs.input_ids;

        let words = self.g.node("Gather", "embeddings.word_embeddings", &[&word, ids]).out();
        // Token types: the input for BERT; type 0 everywhere for XLM-R.
        let type_ids = match &inputs.token_type_ids {
            Some(tt) => tt.clone(),
            None => self.g.const_i64("embeddings.token_type_ids", &[], &[0]),
        };
        let types = self.g.node("Gather", "embeddings.token_type_embeddings", &[&type_table, &type_ids]).out();
        let x = self.g.node("Add", "embeddings/Add_token_type", &[&words, &types]).out();

        let positions = if self.model.config.arch.offsets_positions() {
            // RoBERTa: cumsum(ids != pad) * (ids != pad) + pad.
            let pad = self.g.const_i64("embeddings.padding_idx", &[], &[self.model.config.pad_token_id]);
            let eq = self.g.node("Equal", "embeddings/is_pad", &[ids, &pad]).out();
            let not_pad = self.g.node("Not", "embeddings/not_pad", &[&eq]).out();
            let mask = self
                .g
                .node("Cast", "embeddings/not_pad_i64", &[&not_pad])
                .attr(Attr::int("to", ElemType::I64.onnx() as i64))
                .out();
            let axis = self.g.const_i64("embeddings/cumsum_axis", &[], &[1]);
            let cum = self.g.node("CumSum", "embeddings/CumSum", &[&mask, &axis]).out();
            let masked = self.g.node("Mul", "embeddings/position_mask", &[&cum, &mask]).out();
            let pos_ids = self.g.node("Add", "embeddings/position_ids", &[&masked, &pad]).out();
            self.g.node("Gather", "embeddings.position_embeddings", &[&pos_table, &pos_ids]).out()
        } else {
            // BERT: positions 0..sequence, the first rows of the table.
            let len = self
                .g
                .node("Shape", "embeddings/sequence_length", &[ids])
                .attr(Attr::int("start", 1))
                .attr(Attr::int("end", 2))
                .out();
            let zero = self.g.const_i64("embeddings/zero", &[1], &[0]);
            let axis = self.g.const_i64("embeddings/axis0", &[1], &[0]);
            self.g.node("Slice", "embeddings.position_embeddings", &[&pos_table, &zero, &len, &axis]).out()
        };
        let x = self.g.node("Add", "embeddings/Add_position", &[&x, &positions]).out();
        self.g.value_info(&x, self.ft, &[Dim::named(self.rows), Dim::named("sequence"), Dim::Fixed(h as i64)]);
        self.layer_norm(&x, "embeddings.LayerNorm")
    }

    /// The NICE coupling block of a MAD-X language adapter on the embedding output:
    /// y1 = x1 + F(x2), y2 = x2 + G(y1), out = [y1, y2].
    fn invertible_adapter(&mut self, x: &str, adapter: &AdapterSpec) -> Result<String> {
        let prefix = adapter.invertible_prefix();
        let act = adapter.config.inv_adapter.as_ref().map_or(Activation::Relu, |inv| inv.non_linearity);
        let h = self.model.config.hidden_size;
        let (h1, h2) = (h / 2, h - h / 2);
        let split = self.g.const_i64(&format!("{prefix}/split"), &[2], &[h1 as i64, h2 as i64]);
        let halves = self.g.node("Split", &format!("{prefix}/Split"), &[x, &split]).attr(Attr::int("axis", -1)).outs(2);
        let f = self.coupling_mlp(&halves[1], &format!("{prefix}.F"), act, h1)?;
        let y1 = self.g.node("Add", &format!("{prefix}/y1"), &[&halves[0], &f]).out();
        let g = self.coupling_mlp(&y1, &format!("{prefix}.G"), act, h2)?;
        let y2 = self.g.node("Add", &format!("{prefix}/y2"), &[&halves[1], &g]).out();
        Ok(self.g.node("Concat", &format!("{prefix}/Concat"), &[&y1, &y2]).attr(Attr::int("axis", -1)).out())
    }

    /// `Linear(.0) -> activation -> Linear(.2)` of a coupling block, checked to map to `out_dim`.
    fn coupling_mlp(&mut self, x: &str, prefix: &str, act: Activation, out_dim: usize) -> Result<String> {
        let (y, _) = self.linear_auto(x, &format!("{prefix}.0"))?;
        let y = self.activation(&y, act, &format!("{prefix}.1"));
        let (y, out) = self.linear_auto(&y, &format!("{prefix}.2"))?;
        if out != out_dim {
            bail!("`{prefix}.2.weight` maps to {out} features, expected {out_dim}");
        }
        Ok(y)
    }

    // ---- transformer layers ---------------------------------------------------------------

    /// `(1 - mask) * min` as `[rows, 1, 1, sequence]` float32, added to the attention scores
    /// (two single-axis `Unsqueeze`s, as the attention fusions expect).
    fn additive_mask(&mut self, mask: &str) -> String {
        let axis1 = self.g.const_i64("attention_mask/axis1", &[1], &[1]);
        let axis2 = self.g.const_i64("attention_mask/axis2", &[1], &[2]);
        let m = self.g.node("Unsqueeze", "attention_mask/Unsqueeze_1", &[mask, &axis1]).out();
        let m = self.g.node("Unsqueeze", "attention_mask/Unsqueeze_2", &[&m, &axis2]).out();
        let m =
            self.g.node("Cast", "attention_mask/Cast", &[&m]).attr(Attr::int("to", ElemType::F32.onnx() as i64)).out();
        let one = self.scalar_of("attention_mask/one", ElemType::F32, 1.0);
        let inv = self.g.node("Sub", "attention_mask/Sub", &[&one, &m]).out();
        let min = self.scalar_of("attention_mask/min", ElemType::F32, f32::MIN);
        self.g.node("Mul", "attention_mask/Mul", &[&inv, &min]).out()
    }

    /// With `first_token_only`, the layer's output is the first token's alone, `[rows, 1, hidden]`.
    fn layer(&mut self, x: &str, mask: &str, layer: usize, first_token_only: bool) -> Result<String> {
        let cfg = &self.model.config;
        let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
        let p = format!("encoder.layer.{layer}");
        self.sequence = if first_token_only { Dim::Fixed(1) } else { Dim::named("sequence") };
        let queries = if first_token_only {
            // Gather with indices [0] (not Slice) gives shape inference a static 1, which ONNX
            // Runtime's residual + LayerNorm fusions need.
            let zero = self.g.const_i64(&format!("{p}/first_token_index"), &[1], &[0]);
            self.g.node("Gather", &format!("{p}/first_token"), &[x, &zero]).attr(Attr::int("axis", 1)).out()
        } else {
            x.to_string()
        };
        let context = self.self_attention(&queries, x, mask, &format!("{p}.attention.self"))?;
        let dense = self.linear(&context, &format!("{p}.attention.output.dense"), h, h, true)?;
        let sum = self.g.node("Add", &format!("{p}.attention.output/residual"), &[&dense, &queries]).out();
        let attn = self.layer_norm(&sum, &format!("{p}.attention.output.LayerNorm"))?;

        let up = self.linear(&attn, &format!("{p}.{FFN_UP}"), h, inter, true)?;
        let act = match self.model.config.hidden_act {
            HiddenAct::Gelu => self.gelu(&up, &format!("{p}.intermediate.intermediate_act_fn")),
            HiddenAct::Relu => self.relu(&up, &format!("{p}.intermediate/Relu")),
        };
        let out = self.linear(&act, &format!("{p}.{FFN_DOWN}"), inter, h, true)?;
        self.adapters_and_output(&out, &attn, layer)
    }

    /// Attention of the `queries` tokens (`x` itself, or its first token) over all of `x`.
    fn self_attention(&mut self, queries: &str, x: &str, mask: &str, p: &str) -> Result<String> {
        let cfg = &self.model.config;
        let (h, heads, d) = (cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim());
        let split_shape = self.g.const_i64(&format!("{p}/heads_shape"), &[4], &[0, 0, heads as i64, d as i64]);
        let project = |b: &mut Self, input: &str, which: &str, perm: &[i64]| -> Result<String> {
            let y = b.linear(input, &format!("{p}.{which}"), h, h, true)?;
            let y = b.g.node("Reshape", &format!("{p}.{which}/Reshape"), &[&y, &split_shape]).out();
            Ok(b.g.node("Transpose", &format!("{p}.{which}/Transpose"), &[&y]).attr(Attr::ints("perm", perm)).out())
        };
        let q = project(self, queries, "query", &[0, 2, 1, 3])?;
        // Keys and values are every token's, whatever the queries.
        let query_sequence = std::mem::replace(&mut self.sequence, Dim::named("sequence"));
        let k = project(self, x, "key", &[0, 2, 3, 1])?;
        let v = project(self, x, "value", &[0, 2, 1, 3])?;
        self.sequence = query_sequence;

        let scores = self.g.node("MatMul", &format!("{p}/scores"), &[&q, &k]).out();
        let scale = self.scalar(&format!("{p}/sqrt_head_size"), (d as f32).sqrt());
        let scores = self.g.node("Div", &format!("{p}/scaled_scores"), &[&scores, &scale]).out();
        let scores = self.cast_to_f32(&scores, &format!("{p}/scores_f32"));
        let scores = self.g.node("Add", &format!("{p}/masked_scores"), &[&scores, mask]).out();
        let probs = self.g.node("Softmax", &format!("{p}/Softmax"), &[&scores]).attr(Attr::int("axis", -1)).out();
        let probs = self.cast_to_compute(&probs, &format!("{p}/probs"));
        let ctx = self.g.node("MatMul", &format!("{p}/context"), &[&probs, &v]).out();
        let ctx = self
            .g
            .node("Transpose", &format!("{p}/context/Transpose"), &[&ctx])
            .attr(Attr::ints("perm", &[0, 2, 1, 3]))
            .out();
        let merged = self.g.const_i64(&format!("{p}/merged_shape"), &[3], &[0, 0, h as i64]);
        Ok(self.g.node("Reshape", &format!("{p}/context/Reshape"), &[&ctx, &merged]).out())
    }

    /// The stack's bottleneck adapters after the feed-forward block, then the output LayerNorm:
    /// for each adapter, z = LN(h + a) (original_ln_before), residual = h (residual_before_ln)
    /// or z, h = up(act(down(z))) * scaling + residual; finally LN(h + a) (original_ln_after of
    /// the last adapter applied).
    fn adapters_and_output(&mut self, ffn: &str, attn: &str, layer: usize) -> Result<String> {
        let out_ln = format!("encoder.layer.{layer}.output.LayerNorm");
        let stack: Vec<AdapterSpec> = self.model.stack().into_iter().filter(|a| a.in_layer(layer)).cloned().collect();
        let mut h = ffn.to_string();
        for adapter in &stack {
            let p = adapter.layer_prefix(layer);
            let cfg = &adapter.config;
            let sum = self.g.node("Add", &format!("{p}/input_residual"), &[&h, attn]).out();
            let z = if cfg.original_ln_before { self.layer_norm(&sum, &out_ln)? } else { sum };
            let residual = if cfg.residual_before_ln { h.clone() } else { z.clone() };
            let (down, _) = self.linear_auto(&z, &format!("{p}.adapter_down.0"))?;
            let down = self.activation(&down, cfg.non_linearity, &format!("{p}.adapter_down.1"));
            let (up, out_dim) = self.linear_auto(&down, &format!("{p}.adapter_up"))?;
            if out_dim != self.model.config.hidden_size {
                bail!(
                    "`{p}.adapter_up.weight` maps to {out_dim} features, expected the hidden size {}",
                    self.model.config.hidden_size
                );
            }
            let up = if cfg.scaling != 1.0 {
                let s = self.scalar(&format!("{p}/scaling"), cfg.scaling as f32);
                self.g.node("Mul", &format!("{p}/Mul_scaling"), &[&up, &s]).out()
            } else {
                up
            };
            h = self.g.node("Add", &format!("{p}/Add_residual"), &[&up, &residual]).out();
        }
        let sum = self.g.node("Add", &format!("encoder.layer.{layer}.output/residual"), &[&h, attn]).out();
        match stack.last() {
            Some(last) if !last.config.original_ln_after => Ok(sum),
            _ => self.layer_norm(&sum, &out_ln),
        }
    }

    // ---- head ---------------------------------------------------------------------------

    fn head(&mut self, hidden: &str, head: &Head, inputs: &Inputs) -> Result<()> {
        let h = self.model.config.hidden_size;
        let mut x = match head.input {
            HeadInput::Tokens => hidden.to_string(),
            HeadInput::FirstToken | HeadInput::Pooler => {
                let zero = self.g.const_i64("head/first_token_index", &[], &[0]);
                let first =
                    self.g.node("Gather", "head/first_token", &[hidden, &zero]).attr(Attr::int("axis", 1)).out();
                if head.input == HeadInput::Pooler {
                    let pooled = self.float_linear(&first, "pooler.dense", h, h, true)?;
                    self.g.node("Tanh", "pooler.activation", &[&pooled]).out()
                } else {
                    first
                }
            }
        };
        for (i, lin) in head.layers.iter().enumerate() {
            if i > 0 {
                if let Some(act) = head.activation {
                    x = self.activation(&x, act, &format!("{}/activation", lin.prefix));
                }
            }
            x = self.float_linear(&x, &lin.prefix, lin.in_dim, lin.out_dim, lin.bias)?;
        }

        let batch = Dim::named("batch");
        match head.head_type {
            HeadType::Classification => {
                let logits = self.output(&x, "logits");
                self.g.output(&logits, ElemType::F32, &[batch, Dim::Fixed(head.num_outputs() as i64)]);
            }
            HeadType::MultipleChoice => {
                let shape = inputs.choice_shape.as_deref().context("multiple-choice inputs were not flattened")?;
                let x = self.g.node("Reshape", "head/choices", &[&x, shape]).out();
                let logits = self.output(&x, "logits");
                self.g.output(&logits, ElemType::F32, &[batch, Dim::named("choices")]);
            }
            HeadType::QuestionAnswering => {
                if head.num_outputs() != 2 {
                    bail!(
                        "a question-answering head needs 2 outputs (start, end), this one has {}",
                        head.num_outputs()
                    );
                }
                let split = self.g.const_i64("head/split", &[2], &[1, 1]);
                let parts = self.g.node("Split", "head/Split", &[&x, &split]).attr(Attr::int("axis", -1)).outs(2);
                let axes = self.g.const_i64("head/squeeze_axes", &[1], &[-1]);
                for (part, name) in parts.iter().zip(["start_logits", "end_logits"]) {
                    let y = self.g.node("Squeeze", &format!("head/{name}"), &[part, &axes]).out();
                    let y = self.output(&y, name);
                    self.g.output(&y, ElemType::F32, &[batch.clone(), Dim::named("sequence")]);
                }
            }
        }
        Ok(())
    }

    /// Names `x` as the graph output `name`, in float32.
    fn output(&mut self, x: &str, name: &str) -> String {
        if self.ft == ElemType::F32 {
            return self.g.rename(x, name);
        }
        self.g
            .node("Cast", &format!("head/{name}"), &[x])
            .attr(Attr::int("to", ElemType::F32.onnx() as i64))
            .out_as(name)
    }

    fn cast_to_f32(&mut self, x: &str, name: &str) -> String {
        if self.ft == ElemType::F32 {
            return x.to_string();
        }
        self.g.node("Cast", name, &[x]).attr(Attr::int("to", ElemType::F32.onnx() as i64)).out()
    }

    fn cast_to_compute(&mut self, x: &str, name: &str) -> String {
        if self.ft == ElemType::F32 {
            return x.to_string();
        }
        self.g.node("Cast", name, &[x]).attr(Attr::int("to", self.ft.onnx() as i64)).out()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_activations_keep_the_feed_forward_projections_per_token() {
        for (prefix, per_tensor) in [
            ("encoder.layer.0.intermediate.dense", false),
            ("encoder.layer.11.output.dense", false),
            ("encoder.layer.3.attention.output.dense", true),
            ("encoder.layer.3.attention.self.query", true),
            ("encoder.layer.3.output.adapters.nli.adapter_down.0", true),
            ("invertible_adapters.en.F.0", true),
        ] {
            assert_eq!(Int8Activations::Mixed.per_tensor(prefix), per_tensor, "{prefix}");
            assert!(Int8Activations::Tensor.per_tensor(prefix), "{prefix}");
            assert!(!Int8Activations::Token.per_tensor(prefix), "{prefix}");
        }
    }
}
