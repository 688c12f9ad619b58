//! The composed MAD-X model in tch: encoder, Stack(lang, task) adapters, head. Variables are
//! created under the checkpoints' canonical names, so loading is a name-by-name copy and
//! freezing works by path.
mod adapter;
pub mod dropout;
mod encoder;
mod head;
mod matmul;
mod mlm;
mod omp;

use anyhow::{bail, Context, Result};
use tch::nn;
use tch::{Device, Tensor};

use crate::model::composed::{AdapterSpec, ComposedModel};
use crate::model::head::HeadType;
use crate::model::weights::Weights;
pub use adapter::Tap;
pub use encoder::Encoder;
pub use head::HeadModule;
pub(crate) use matmul::{linear, matmul};
pub use mlm::MlmHead;

/// Model inputs: [batch, seq] (or [batch, choices, seq] for multiple choice) int64 tensors.
#[derive(Debug)]
pub struct Inputs {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub token_type_ids: Option<Tensor>,
}

/// What the head produces.
#[derive(Debug)]
pub enum Logits {
    /// [batch, labels] for classification, [batch, choices] for multiple choice.
    Classes(Tensor),
    /// [batch, seq] each.
    Span { start: Tensor, end: Tensor },
}

impl Logits {
    /// (output name, tensor) pairs, named as in the ONNX export and the fixtures.
    pub fn named(&self) -> Vec<(&'static str, &Tensor)> {
        match self {
            Logits::Classes(t) => vec![("logits", t)],
            Logits::Span { start, end } => vec![("start_logits", start), ("end_logits", end)],
        }
    }
}

pub struct MadxModel {
    pub vs: nn::VarStore,
    pub encoder: Encoder,
    pooler: Option<nn::Linear>,
    pub head: Option<HeadModule>,
    pub lang: Option<AdapterSpec>,
    pub task: Option<AdapterSpec>,
    pub num_layers: usize,
    pub hidden_size: usize,
}

impl MadxModel {
    /// Builds the model's variables and fills every one from the loaded checkpoints.
    /// Consumes `composed` so that each checkpoint tensor is freed as soon as it is copied.
    pub fn load(composed: ComposedModel, device: Device) -> Result<Self> {
        let model = Self::build(&composed, device, &composed.weights)?;
        model.copy_weights(composed.weights, &[])?;
        Ok(model)
    }

    /// Builds the variables; adapter bottleneck sizes come from `weights` where present, so
    /// per-layer reduction factors of Hub checkpoints need no special case.
    pub fn build(composed: &ComposedModel, device: Device, weights: &Weights) -> Result<Self> {
        let c = &composed.config;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let h = c.hidden_size as i64;
        let stack: Vec<&AdapterSpec> = composed.stack();
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let path = &root / "encoder" / "layer" / i;
            let mut adapters = Vec::new();
            for spec in &stack {
                if !spec.in_layer(i) {
                    continue;
                }
                let down = format!("{}.adapter_down.0.weight", spec.layer_prefix(i));
                let bottleneck = match weights.entry(&down) {
                    Some(e) => e.shape[0] as i64,
                    None => (c.hidden_size as f64 / spec.config.reduction_factor) as i64,
                };
                let apath = &path / "output" / "adapters" / spec.name.as_str();
                adapters.push((spec.name.clone(), adapter::Bottleneck::new(&apath, h, bottleneck, &spec.config)));
            }
            let ln_after = stack.iter().rev().find(|s| s.in_layer(i)).is_none_or(|s| s.config.original_ln_after);
            layers.push(encoder::Layer::new(&path, c, adapters, ln_after));
        }
        // Every adapter's invertible adapter is built (so it is saved with its adapter), but
        // only the first of the stack runs, as in the `adapters` library.
        let mut invertible = None;
        for (k, spec) in stack.iter().enumerate() {
            if let Some(inv) = &spec.config.inv_adapter {
                let path = &root / "invertible_adapters" / spec.name.as_str();
                let module = adapter::Invertible::new(&path, h, inv.reduction_factor, inv.non_linearity);
                if k == 0 {
                    invertible = Some(module);
                }
            }
        }
        let embeddings = encoder::Embeddings::new(&(&root / "embeddings"), c);
        let encoder = Encoder { embeddings, invertible, layers, compute: tch::Kind::Float };
        let head = composed.head.as_ref().map(|spec| HeadModule::new(&root, spec, c.initializer_range));
        let pooler = head
            .as_ref()
            .filter(|hd| hd.spec.needs_pooler())
            .map(|_| nn::linear(&root / "pooler" / "dense", h, h, Default::default()));
        Ok(Self {
            vs,
            encoder,
            pooler,
            head,
            lang: composed.lang.clone(),
            task: composed.task.clone(),
            num_layers: c.num_hidden_layers,
            hidden_size: c.hidden_size,
        })
    }

    /// Copies each variable from `weights`, checking shapes; a checkpoint tensor that belongs
    /// to an adapter or head but has no variable is an error (e.g. a layer index too large).
    /// Variables under one of the `fresh` prefixes (a new task adapter and head) keep their
    /// initialisation.
    pub fn copy_weights(&self, mut weights: Weights, fresh: &[String]) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for (name, mut var) in self.vs.variables() {
                if fresh.iter().any(|p| name.starts_with(p.as_str())) && !weights.contains(&name) {
                    continue;
                }
                let shape: Vec<usize> = var.size().iter().map(|&d| d as usize).collect();
                let elements = shape.iter().product();
                if var.device() == Device::Cpu && var.is_contiguous() && var.kind() == tch::Kind::Float {
                    // SAFETY: a contiguous f32 CPU variable of exactly this many elements.
                    let dst = unsafe { std::slice::from_raw_parts_mut(var.data_ptr() as *mut f32, elements) };
                    weights.take_into(&name, &shape, dst)?;
                } else {
                    let mut data = vec![0f32; elements];
                    weights.take_into(&name, &shape, &mut data)?;
                    let src = Tensor::from_slice(&data).reshape(var.size()).to_device(var.device());
                    var.f_copy_(&src).with_context(|| format!("copying `{name}`"))?;
                }
            }
            Ok(())
        })?;
        let left: Vec<&str> = weights.names().collect();
        if let Some(name) = left.iter().find(|n| n.contains(".adapters.") || n.starts_with("invertible_adapters.") || n.starts_with("heads.")) {
            let e = weights.entry(name).expect("listed name");
            bail!(
                "{}: tensor `{}` does not fit the model ({} layers, hidden size {})",
                e.file.display(),
                e.stored_name,
                self.num_layers,
                self.hidden_size
            );
        }
        Ok(())
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn forward(&self, inputs: &Inputs, train: bool) -> Result<Logits> {
        self.forward_tapped(inputs, train, None)
    }

    /// `forward`, recording the task adapter's activations in every layer into `taps`.
    pub fn forward_tapped(&self, inputs: &Inputs, train: bool, taps: Option<&mut Vec<Option<Tap>>>) -> Result<Logits> {
        let head = self.head.as_ref().context("the model has no head")?;
        let shape = inputs.input_ids.size();
        let flat = |t: &Tensor| t.reshape([-1, *shape.last().expect("non-empty shape")]);
        let ids = flat(&inputs.input_ids);
        let mask = flat(&inputs.attention_mask);
        let types = inputs.token_type_ids.as_ref().map(flat);
        let task = self.task.as_ref().map(|t| t.name.as_str());
        let taps = match (task, taps) {
            (Some(name), Some(slots)) => Some((name, slots)),
            (None, Some(_)) => bail!("the model has no task adapter to record"),
            _ => None,
        };
        let first_token_only = head.spec.input.first_token_only();
        let hidden = self.encoder.forward(&ids, &mask, types.as_ref(), train, taps, first_token_only);
        let pooled = self.pooler.as_ref().map(|p| linear(p, &hidden.select(1, 0)).tanh());
        // Losses, softmax and tr(F) read float32 logits whatever the compute type.
        let out = head.forward(&hidden, pooled.as_ref(), train).to_kind(tch::Kind::Float);
        Ok(match head.spec.head_type {
            HeadType::Classification => Logits::Classes(out),
            HeadType::MultipleChoice => Logits::Classes(out.reshape([shape[0], -1])),
            HeadType::QuestionAnswering => {
                let parts = out.split(1, -1);
                Logits::Span { start: parts[0].squeeze_dim(-1), end: parts[1].squeeze_dim(-1) }
            }
        })
    }

    /// The encoder's last hidden states, flattened over choices.
    pub fn encode(&self, inputs: &Inputs) -> Tensor {
        let shape = inputs.input_ids.size();
        let flat = |t: &Tensor| t.reshape([-1, *shape.last().expect("non-empty shape")]);
        let types = inputs.token_type_ids.as_ref().map(flat);
        self.encoder.forward(&flat(&inputs.input_ids), &flat(&inputs.attention_mask), types.as_ref(), false, None, false)
    }

    /// Variables of the task adapter in `layer`.
    pub fn task_adapter_vars(&self, layer: usize) -> Vec<(String, Tensor)> {
        let Some(task) = &self.task else { return Vec::new() };
        let prefix = format!("{}.", task.layer_prefix(layer));
        self.vs.variables().into_iter().filter(|(n, _)| n.starts_with(&prefix)).collect()
    }

    /// Variables of the adapter `spec` in every layer and of its invertible adapter.
    pub fn adapter_vars(&self, spec: &AdapterSpec) -> Vec<(String, Tensor)> {
        let prefixes: Vec<String> =
            (0..self.num_layers).map(|l| spec.layer_prefix(l)).chain([spec.invertible_prefix()]).map(|p| p + ".").collect();
        self.vs.variables().into_iter().filter(|(n, _)| prefixes.iter().any(|p| n.starts_with(p))).collect()
    }

    /// Requires-grad on exactly `params` and off on every other variable, so that backward
    /// computes only what they need. Returns each variable's flag before, for
    /// `restore_requires_grad`.
    pub fn require_grad_only(&self, params: &[(String, Tensor)]) -> Vec<(Tensor, bool)> {
        let before: Vec<(Tensor, bool)> = self
            .vs
            .variables()
            .into_values()
            .map(|v| {
                let flag = v.requires_grad();
                (v, flag)
            })
            .collect();
        for (v, _) in &before {
            let _ = v.set_requires_grad(false);
        }
        for (_, v) in params {
            let _ = v.set_requires_grad(true);
        }
        before
    }

    pub fn restore_requires_grad(flags: Vec<(Tensor, bool)>) {
        for (v, f) in flags {
            let _ = v.set_requires_grad(f);
        }
    }

    /// Variables of the head.
    pub fn head_vars(&self) -> Vec<(String, Tensor)> {
        let Some(head) = &self.head else { return Vec::new() };
        let prefixes: Vec<String> = head.spec.layers.iter().map(|l| format!("{}.", l.prefix)).collect();
        self.vs.variables().into_iter().filter(|(n, _)| prefixes.iter().any(|p| n.starts_with(p))).collect()
    }
}

/// `a.b.c` as nested tch paths (tch forbids dots inside one path component).
pub(crate) fn sub_path<'a>(root: &nn::Path<'a>, dotted: &str) -> nn::Path<'a> {
    let mut parts = dotted.split('.');
    let first = root.sub(parts.next().unwrap_or_default());
    parts.fold(first, |p, part| p.sub(part))
}
