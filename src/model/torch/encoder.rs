//! The BERT / XLM-R encoder with Hugging Face numerics (erf GELU, LayerNorm eps from the
//! config, additive attention mask, RoBERTa position ids) and MAD-X adapters after the FFN.
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::adapter::{Bottleneck, Invertible, Tap};
use super::dropout::dropout;
use super::{linear, matmul};
use crate::model::config::{Arch, HiddenAct, ModelConfig};

#[derive(Debug)]
pub struct Embeddings {
    word: nn::Embedding,
    position: nn::Embedding,
    token_type: nn::Embedding,
    layer_norm: nn::LayerNorm,
    arch: Arch,
    pad: i64,
    dropout: f64,
}

impl Embeddings {
    pub fn new(path: &nn::Path, c: &ModelConfig) -> Self {
        let h = c.hidden_size as i64;
        let emb = nn::EmbeddingConfig::default();
        Self {
            word: nn::embedding(path / "word_embeddings", c.vocab_size as i64, h, emb),
            position: nn::embedding(path / "position_embeddings", c.max_position_embeddings as i64, h, emb),
            token_type: nn::embedding(path / "token_type_embeddings", c.type_vocab_size as i64, h, emb),
            layer_norm: layer_norm(path / "LayerNorm", c),
            arch: c.arch,
            pad: c.pad_token_id,
            dropout: c.hidden_dropout_prob,
        }
    }

    /// The word embedding matrix [vocab, hidden], which MLM decoders are tied to.
    pub fn word_embeddings(&self) -> &Tensor {
        &self.word.ws
    }

    pub fn forward(&self, ids: &Tensor, token_types: Option<&Tensor>, train: bool) -> Tensor {
        let positions = if self.arch.offsets_positions() {
            // RoBERTa numbers real tokens from pad + 1 and gives pads the pad position.
            let real = ids.ne(self.pad).to_kind(Kind::Int64);
            real.cumsum(1, Kind::Int64) * &real + self.pad
        } else {
            let seq = ids.size()[1];
            Tensor::arange(seq, (Kind::Int64, ids.device())).unsqueeze(0).expand_as(ids)
        };
        let types = match token_types {
            Some(t) => t.shallow_clone(),
            None => ids.zeros_like(),
        };
        let x = self.word.forward(ids) + self.position.forward(&positions) + self.token_type.forward(&types);
        dropout(&self.layer_norm.forward(&x), self.dropout, train)
    }
}

#[derive(Debug)]
struct SelfAttention {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    heads: i64,
    head_dim: i64,
    dropout: f64,
}

impl SelfAttention {
    /// `queries` are the tokens whose outputs are wanted: `x` itself, or its first token.
    fn forward(&self, queries: &Tensor, x: &Tensor, mask: Option<&Tensor>, train: bool) -> Tensor {
        let (b, s, _) = x.size3().expect("hidden states are [batch, seq, hidden]");
        let sq = queries.size()[1];
        let split = |t: Tensor, len: i64| t.view([b, len, self.heads, self.head_dim]).transpose(1, 2);
        let q = split(linear(&self.query, queries), sq);
        let k = split(linear(&self.key, x), s);
        let v = split(linear(&self.value, x), s);
        let merge = |t: Tensor| t.transpose(1, 2).contiguous().view([b, sq, self.heads * self.head_dim]);
        if !train || self.dropout <= 0.0 {
            // Without dropout on the probabilities, libtorch's fused attention (one pass over
            // blocks of keys, forward and backward) does the same computation in less time.
            // Under bf16 it runs in float32: libtorch's fused bf16 kernel took 107 ms per layer
            // (forward + backward, 32 x 12 heads x 128 x 32, 2 threads, AMD EPYC) against
            // 40 ms for the float32 one with the casts, and float32 is the more accurate.
            let scale = 1.0 / (self.head_dim as f64).sqrt();
            let kind = q.kind();
            let float = |t: &Tensor| t.to_kind(Kind::Float);
            let mask = mask.map(float);
            let out = Tensor::scaled_dot_product_attention(&float(&q), &float(&k), &float(&v), mask.as_ref(), 0.0, false, scale, false);
            return merge(out.to_kind(kind));
        }
        // Scaling q (not the scores) and adding the mask in place keeps one seq x seq tensor
        // alive per layer instead of three; matmul's backward does not need its output.
        let mut scores = matmul(&(q * (1.0 / (self.head_dim as f64).sqrt())), &k.transpose(-1, -2));
        if let Some(mask) = mask {
            let _ = scores.g_add_(mask);
        }
        // libtorch's CPU softmax accumulates bf16 scores in float32 and only rounds its output:
        // a float32 output would cost four times as long and a cast back. (The whole core in
        // float32 for bf16 training cost 20% of a step and 0.6 GiB more: bench-train, AMD EPYC.)
        let probs = dropout(&scores.softmax(-1, scores.kind()), self.dropout, train);
        merge(matmul(&probs, &v))
    }
}

/// One transformer layer; `adapters` is the stack at its output, bottom first.
#[derive(Debug)]
pub struct Layer {
    attention: SelfAttention,
    attention_dense: nn::Linear,
    attention_ln: nn::LayerNorm,
    intermediate: nn::Linear,
    output_dense: nn::Linear,
    output_ln: nn::LayerNorm,
    act: HiddenAct,
    dropout: f64,
    pub adapters: Vec<(String, Bottleneck)>,
    /// `original_ln_after` of the last adapter of the stack.
    ln_after: bool,
}

impl Layer {
    pub fn new(path: &nn::Path, c: &ModelConfig, adapters: Vec<(String, Bottleneck)>, ln_after: bool) -> Self {
        let h = c.hidden_size as i64;
        let lin = nn::LinearConfig::default();
        let att = path / "attention";
        let attention = SelfAttention {
            query: nn::linear(&att / "self" / "query", h, h, lin),
            key: nn::linear(&att / "self" / "key", h, h, lin),
            value: nn::linear(&att / "self" / "value", h, h, lin),
            heads: c.num_attention_heads as i64,
            head_dim: c.head_dim() as i64,
            dropout: c.attention_probs_dropout_prob,
        };
        Self {
            attention,
            attention_dense: nn::linear(&att / "output" / "dense", h, h, lin),
            attention_ln: layer_norm(&att / "output" / "LayerNorm", c),
            intermediate: nn::linear(path / "intermediate" / "dense", h, c.intermediate_size as i64, lin),
            output_dense: nn::linear(path / "output" / "dense", c.intermediate_size as i64, h, lin),
            output_ln: layer_norm(path / "output" / "LayerNorm", c),
            act: c.hidden_act,
            dropout: c.hidden_dropout_prob,
            adapters,
            ln_after,
        }
    }

    /// `tap` names the adapter whose activations to record into the given slot.
    /// `mask` is the additive attention mask, `None` where every token is attended. With
    /// `first_token_only`, only the first token's output is computed ([batch, 1, hidden]):
    /// every token still serves as a key and value.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        train: bool,
        mut tap: Option<(&str, &mut Option<Tap>)>,
        first_token_only: bool,
    ) -> Tensor {
        let queries = if first_token_only { x.narrow(1, 0, 1) } else { x.shallow_clone() };
        let context = self.attention.forward(&queries, x, mask, train);
        let attn = self
            .attention_ln
            .forward(&(dropout(&linear(&self.attention_dense, &context), self.dropout, train) + &queries));
        let inter = linear(&self.intermediate, &attn);
        let inter = match self.act {
            HiddenAct::Gelu => inter.gelu("none"),
            HiddenAct::Relu => inter.relu(),
        };
        let mut h = dropout(&linear(&self.output_dense, &inter), self.dropout, train);
        for (name, adapter) in &self.adapters {
            let slot = match &mut tap {
                Some((wanted, slot)) if *wanted == name => Some(&mut **slot),
                _ => None,
            };
            h = adapter.forward(&h, &attn, &self.output_ln, train, slot);
        }
        if self.adapters.is_empty() || self.ln_after {
            self.output_ln.forward(&(h + attn))
        } else {
            h + attn
        }
    }
}

/// Embeddings, the optional invertible adapter, and the layers.
#[derive(Debug)]
pub struct Encoder {
    pub embeddings: Embeddings,
    pub invertible: Option<Invertible>,
    pub layers: Vec<Layer>,
    /// The type of the activations after the embeddings (float32, or bfloat16 for mixed
    /// precision); the embeddings and their LayerNorm always run in float32.
    pub compute: Kind,
}

impl Encoder {
    /// `ids` and `mask` are [batch, seq]; returns the last hidden states [batch, seq, hidden].
    /// With `taps`, records the activations of the adapter named `taps.0` in every layer
    /// (`None` where the layer has none). With `first_token_only` (for a head that reads
    /// nothing else) the last layer computes only the first token's output, [batch, 1,
    /// hidden]: the others' would be thrown away. Only the last layer's keys and values need
    /// every token, so this saves 10/12 of its multiply-adds (7% of a 12-layer encoder).
    pub fn forward(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        token_types: Option<&Tensor>,
        train: bool,
        mut taps: Option<(&str, &mut Vec<Option<Tap>>)>,
        first_token_only: bool,
    ) -> Tensor {
        let mut x = self.embeddings.forward(ids, token_types, train).to_kind(self.compute);
        if let Some(inv) = &self.invertible {
            x = inv.forward(&x);
        }
        // Hugging Face's additive mask: 0 where attended, the dtype's minimum where masked.
        let lowest = if self.compute == Kind::BFloat16 { BF16_MIN } else { f32::MIN as f64 };
        // Without padding it adds nothing: skip it, as Hugging Face does for SDPA, which saves
        // a pass over every layer's scores.
        let padded = mask.min().int64_value(&[]) == 0;
        let additive = padded.then(|| {
            let keep = mask.to_kind(self.compute);
            ((keep.ones_like() - keep) * lowest).unsqueeze(1).unsqueeze(1)
        });
        if let Some((_, slots)) = &mut taps {
            slots.clear();
            slots.resize_with(self.layers.len(), || None);
        }
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            let tap = taps.as_mut().map(|(name, slots)| (*name, &mut slots[i]));
            x = layer.forward(&x, additive.as_ref(), train, tap, first_token_only && i == last);
        }
        x
    }
}

/// The most negative finite bfloat16 (`torch.finfo(torch.bfloat16).min`); float32's minimum
/// would round to -inf.
const BF16_MIN: f64 = -3.3895313892515355e38;

fn layer_norm(path: nn::Path, c: &ModelConfig) -> nn::LayerNorm {
    let cfg = nn::LayerNormConfig { eps: c.layer_norm_eps, ..Default::default() };
    nn::layer_norm(path, vec![c.hidden_size as i64], cfg)
}
