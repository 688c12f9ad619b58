//! The MLM head in tch: transform (dense, activation, LayerNorm), the language adapter's
//! invertible adapter run backwards (the `adapters` library's pre-hook on the output
//! embeddings), and the decoder tied to the word embeddings.
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::adapter::Invertible;
use super::sub_path;
use crate::model::config::{Arch, HiddenAct, ModelConfig};
use crate::model::mlm_head::MlmHeadNames;

#[derive(Debug)]
pub struct MlmHead {
    dense: nn::Linear,
    layer_norm: nn::LayerNorm,
    bias: Tensor,
    act: HiddenAct,
}

impl MlmHead {
    /// Variables under the checkpoint's names; a new head gets Hugging Face's initialisation
    /// (N(0, initializer_range) weights, zero biases, unit LayerNorm).
    pub fn new(root: &nn::Path, c: &ModelConfig) -> Self {
        let names = MlmHeadNames::of(c.arch);
        let h = c.hidden_size as i64;
        let init = nn::LinearConfig {
            ws_init: nn::Init::Randn { mean: 0.0, stdev: c.initializer_range },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let ln = nn::LayerNormConfig { eps: c.layer_norm_eps, ..Default::default() };
        Self {
            dense: nn::linear(sub_path(root, names.dense), h, h, init),
            layer_norm: nn::layer_norm(sub_path(root, names.layer_norm), vec![h], ln),
            bias: sub_path(root, names.bias_owner).zeros("bias", &[c.vocab_size as i64]),
            // RobertaLMHead always uses the exact GELU; BERT's transform the config's act.
            act: match c.arch {
                Arch::Bert => c.hidden_act,
                Arch::XlmRoberta => HiddenAct::Gelu,
            },
        }
    }

    /// Vocabulary logits [n, vocab] for hidden states [n, hidden].
    pub fn forward(&self, hidden: &Tensor, word_embeddings: &Tensor, invertible: Option<&Invertible>) -> Tensor {
        let x = super::linear(&self.dense, hidden);
        let x = match self.act {
            HiddenAct::Gelu => x.gelu("none"),
            HiddenAct::Relu => x.relu(),
        };
        let mut x = self.layer_norm.forward(&x);
        if let Some(inv) = invertible {
            x = inv.inverse(&x);
        }
        // Adding the float32 bias makes the logits float32 for the loss under bf16 training.
        super::matmul(&x, &word_embeddings.to_kind(x.kind()).tr()) + &self.bias
    }

    /// Mean cross-entropy over the positions whose label is not -100, computing logits for
    /// those positions only (15% of the tokens: the [tokens, vocab] logits of all positions
    /// would be the largest tensor of a step by far). `hidden` is [batch, seq, hidden].
    pub fn loss(&self, hidden: &Tensor, labels: &Tensor, word_embeddings: &Tensor, invertible: Option<&Invertible>) -> Tensor {
        let flat_labels = labels.reshape([-1]);
        let picked = flat_labels.ne(crate::model::mlm_head::IGNORED).nonzero().squeeze_dim(1);
        let h = hidden.size()[hidden.dim() - 1];
        let selected = hidden.reshape([-1, h]).index_select(0, &picked);
        let logits = self.forward(&selected, word_embeddings, invertible);
        logits.cross_entropy_for_logits(&flat_labels.index_select(0, &picked).to_kind(Kind::Int64))
    }
}
