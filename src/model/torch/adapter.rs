//! Bottleneck adapters and the NICE invertible adapter, with the `adapters` library's
//! parameter names so that AdapterHub checkpoints load onto these variables as they are.
use tch::nn::{self, Module};
use tch::Tensor;

use super::dropout::dropout;
use super::linear;

use crate::model::adapter_config::{Activation, AdapterConfig};

pub fn activate(x: &Tensor, act: Activation) -> Tensor {
    match act {
        Activation::Relu => x.relu(),
        Activation::Gelu => x.gelu("none"),
        Activation::GeluTanh => x.gelu("tanh"),
        Activation::Tanh => x.tanh(),
        Activation::Silu => x.silu(),
    }
}

/// The `adapters` library's "bert" init: N(0, 0.02) weights, zero biases.
fn bert_init() -> nn::LinearConfig {
    nn::LinearConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.02 }, bs_init: Some(nn::Init::Const(0.0)), bias: true }
}

/// down-projection, non-linearity, up-projection, scaled (`seq_bn`).
#[derive(Debug)]
pub struct Bottleneck {
    down: nn::Linear,
    up: nn::Linear,
    config: AdapterConfig,
}

impl Bottleneck {
    /// `path` is `.../output/adapters/NAME`; `bottleneck` comes from the checkpoint's shapes
    /// (or hidden / reduction_factor for a new adapter).
    pub fn new(path: &nn::Path, hidden: i64, bottleneck: i64, config: &AdapterConfig) -> Self {
        let init = bert_init();
        let down = nn::linear(path / "adapter_down" / "0", hidden, bottleneck, init);
        let up = nn::linear(path / "adapter_up", bottleneck, hidden, init);
        Self { down, up, config: config.clone() }
    }

    /// One adapter of a stack: `h` is the FFN output (or the previous adapter's), `attn` the
    /// attention block's output, `ln` the layer's output LayerNorm. With `tap`, the adapter's
    /// inner activations are recorded for per-example gradients (Fisher information).
    pub fn forward(&self, h: &Tensor, attn: &Tensor, ln: &nn::LayerNorm, train: bool, tap: Option<&mut Option<Tap>>) -> Tensor {
        let c = &self.config;
        let z = if c.original_ln_before { ln.forward(&(h + attn)) } else { h + attn };
        let residual = if c.residual_before_ln { h.shallow_clone() } else { z.shallow_clone() };
        let u = linear(&self.down, &z);
        let a = activate(&u, c.non_linearity);
        let y = linear(&self.up, &a);
        // A scaling of 1 (MAD-X's) would cost a full multiply forward and backward for nothing.
        let scaled = if c.scaling == 1.0 { y.shallow_clone() } else { &y * c.scaling };
        let up = dropout(&scaled, c.dropout, train);
        if let Some(slot) = tap {
            *slot = Some(Tap { z, u, a, y });
        }
        up + residual
    }
}

/// Inputs and outputs of an adapter's two linear maps: the gradient of a loss with respect to
/// `u` and `y`, together with `z` and `a`, gives each example's parameter gradient.
#[derive(Debug)]
pub struct Tap {
    /// input of the down-projection [n, seq, hidden]
    pub z: Tensor,
    /// output of the down-projection [n, seq, bottleneck]
    pub u: Tensor,
    /// input of the up-projection
    pub a: Tensor,
    /// output of the up-projection, before scaling [n, seq, hidden]
    pub y: Tensor,
}

/// The NICE coupling block MAD-X puts on the embedding output of a language adapter.
#[derive(Debug)]
pub struct Invertible {
    f: (nn::Linear, nn::Linear),
    g: (nn::Linear, nn::Linear),
    act: Activation,
    split: i64,
}

impl Invertible {
    pub fn new(path: &nn::Path, hidden: i64, reduction_factor: f64, act: Activation) -> Self {
        let split = hidden / 2;
        let rest = hidden - split;
        // Each subnet's bottleneck is its input width divided by the reduction factor.
        let f_mid = (rest as f64 / reduction_factor) as i64;
        let g_mid = (split as f64 / reduction_factor) as i64;
        let init = bert_init();
        let f = (nn::linear(path / "F" / "0", rest, f_mid, init), nn::linear(path / "F" / "2", f_mid, split, init));
        let g = (nn::linear(path / "G" / "0", split, g_mid, init), nn::linear(path / "G" / "2", g_mid, rest, init));
        Self { f, g, act, split }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let hidden = x.size()[x.dim() - 1];
        let x1 = x.narrow(-1, 0, self.split);
        let x2 = x.narrow(-1, self.split, hidden - self.split);
        let y1 = &x1 + linear(&self.f.1, &activate(&linear(&self.f.0, &x2), self.act));
        let y2 = &x2 + linear(&self.g.1, &activate(&linear(&self.g.0, &y1), self.act));
        Tensor::cat(&[y1, y2], -1)
    }

    /// The inverse of `forward` (`rev=True`), which MAD-X applies before the output embeddings.
    pub fn inverse(&self, y: &Tensor) -> Tensor {
        let hidden = y.size()[y.dim() - 1];
        let y1 = y.narrow(-1, 0, self.split);
        let y2 = y.narrow(-1, self.split, hidden - self.split);
        let x2 = &y2 - linear(&self.g.1, &activate(&linear(&self.g.0, &y1), self.act));
        let x1 = &y1 - linear(&self.f.1, &activate(&linear(&self.f.0, &x2), self.act));
        Tensor::cat(&[x1, x2], -1)
    }
}
