//! A head as described by `model::head::Head`, on tch variables named like its checkpoint.
use tch::nn;
use tch::Tensor;

use super::dropout::dropout;

use super::adapter::activate;
use crate::model::head::{Head, HeadInput};

#[derive(Debug)]
pub struct HeadModule {
    pub spec: Head,
    layers: Vec<nn::Linear>,
}

impl HeadModule {
    /// New weights are drawn as Hugging Face's `_init_weights` draws them, for its heads and
    /// the `adapters` library's alike: N(0, `init_std`²), biases zero.
    pub fn new(root: &nn::Path, spec: &Head, init_std: f64) -> Self {
        let layers = spec
            .layers
            .iter()
            .map(|l| {
                let cfg = nn::LinearConfig {
                    ws_init: nn::Init::Randn { mean: 0.0, stdev: init_std },
                    bs_init: Some(nn::Init::Const(0.0)),
                    bias: l.bias,
                };
                nn::linear(super::sub_path(root, &l.prefix), l.in_dim as i64, l.out_dim as i64, cfg)
            })
            .collect();
        Self { spec: spec.clone(), layers }
    }

    /// `hidden` is the encoder output [n, seq, hidden]; `pooled` the pooler output when the
    /// head reads it. Dropout precedes every linear layer, as in both head families.
    pub fn forward(&self, hidden: &Tensor, pooled: Option<&Tensor>, train: bool) -> Tensor {
        let mut x = match self.spec.input {
            HeadInput::Tokens => hidden.shallow_clone(),
            HeadInput::FirstToken => hidden.select(1, 0),
            HeadInput::Pooler => pooled.expect("pooler output for a pooled head").shallow_clone(),
        };
        for (i, layer) in self.layers.iter().enumerate() {
            if i > 0 {
                if let Some(act) = self.spec.activation {
                    x = activate(&x, act);
                }
            }
            x = super::linear(layer, &dropout(&x, self.spec.dropout, train));
        }
        x
    }
}
