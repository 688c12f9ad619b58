//! AdamW with PyTorch's semantics (decoupled weight decay, bias correction per parameter),
//! written out so that a parameter that is unfrozen joins with fresh state, and so that the
//! state can be saved and restored exactly for resumed runs.
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use tch::Tensor;

use crate::model::weights::{Tensor as Stored, Weights};

#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

struct Moments {
    m: Tensor,
    v: Tensor,
    step: i64,
}

pub struct AdamW {
    config: AdamWConfig,
    state: BTreeMap<String, Moments>,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        Self { config, state: BTreeMap::new() }
    }

    /// One update of every parameter in `params` that has a gradient. Biases and LayerNorm
    /// weights get no weight decay, as in the Hugging Face trainer.
    pub fn step(&mut self, params: &[(String, Tensor)], lr: f64) {
        let c = self.config;
        tch::no_grad(|| {
            for (name, p) in params {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let s = self.state.entry(name.clone()).or_insert_with(|| Moments {
                    m: p.zeros_like(),
                    v: p.zeros_like(),
                    step: 0,
                });
                s.step += 1;
                let mut p = p.shallow_clone();
                if c.weight_decay != 0.0 && !(name.ends_with("bias") || name.contains("LayerNorm")) {
                    let _ = p.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                let _ = s.m.g_mul_scalar_(c.beta1).g_add_(&(&g * (1.0 - c.beta1)));
                let _ = s.v.g_mul_scalar_(c.beta2).g_add_(&(&g * &g * (1.0 - c.beta2)));
                let bias1 = 1.0 - c.beta1.powi(s.step as i32);
                let bias2 = 1.0 - c.beta2.powi(s.step as i32);
                let denom = s.v.sqrt() / bias2.sqrt() + c.eps;
                let _ = p.g_add_(&(&s.m / denom * (-lr / bias1)));
            }
        });
    }

    /// The state as named tensors (`NAME.exp_avg`, `NAME.exp_avg_sq`) and steps.
    pub fn state_tensors(&self) -> (Vec<(String, Stored)>, BTreeMap<String, i64>) {
        let mut tensors = Vec::new();
        let mut steps = BTreeMap::new();
        for (name, s) in &self.state {
            tensors.push((format!("{name}.exp_avg"), to_stored(&s.m)));
            tensors.push((format!("{name}.exp_avg_sq"), to_stored(&s.v)));
            steps.insert(name.clone(), s.step);
        }
        (tensors, steps)
    }

    /// Restores what `state_tensors` produced.
    pub fn restore(&mut self, weights: &Weights, steps: &BTreeMap<String, i64>, device: tch::Device) -> Result<()> {
        self.state.clear();
        for (name, &step) in steps {
            let load = |suffix: &str| -> Result<Tensor> {
                let key = format!("{name}.{suffix}");
                let e = weights.entry(&key).with_context(|| format!("optimizer state lacks `{key}`"))?;
                let t = e.tensor()?;
                let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
                Ok(Tensor::from_slice(&t.data).reshape(shape).to_device(device))
            };
            self.state.insert(name.clone(), Moments { m: load("exp_avg")?, v: load("exp_avg_sq")?, step });
        }
        Ok(())
    }
}

pub fn to_stored(t: &Tensor) -> Stored {
    let t = t.detach().to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).contiguous();
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let data = Vec::<f32>::try_from(t.flatten(0, -1)).expect("float tensor");
    Stored::new(shape, data)
}

/// Scales the gradients of `params` so that their joint L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does; returns the norm before clipping.
pub fn clip_grad_norm(params: &[(String, Tensor)], max_norm: f64) -> f64 {
    tch::no_grad(|| {
        let grads: Vec<Tensor> = params.iter().map(|(_, p)| p.grad()).filter(|g| g.defined()).collect();
        if grads.is_empty() {
            return 0.0;
        }
        let total: f64 = grads.iter().map(|g| g.square().sum(tch::Kind::Double).double_value(&[])).sum::<f64>().sqrt();
        if max_norm > 0.0 {
            let coef = (max_norm / (total + 1e-6)).min(1.0);
            if coef < 1.0 {
                for mut g in grads {
                    let _ = g.g_mul_scalar_(coef);
                }
            }
        }
        total
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// Two AdamW steps on f(p) = sum(p^2 * w), compared with PyTorch's formulas computed by hand.
    #[test]
    fn matches_pytorch_adamw_formulas() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let params = vec![("w".to_string(), p.shallow_clone())];
        let cfg = AdamWConfig { weight_decay: 0.1, ..Default::default() };
        let mut opt = AdamW::new(cfg);
        let (lr, mut expected, mut m, mut v) = (0.1f64, vec![1.0f64, -2.0], [0.0f64; 2], [0.0f64; 2]);
        for t in 1..=2 {
            p.shallow_clone().zero_grad();
            (&p * &p).sum(Kind::Float).backward();
            opt.step(&params, lr);
            for i in 0..2 {
                let g = 2.0 * expected[i];
                expected[i] *= 1.0 - lr * cfg.weight_decay;
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let mh = m[i] / (1.0 - 0.9f64.powi(t));
                let vh = v[i] / (1.0 - 0.999f64.powi(t));
                expected[i] -= lr * mh / (vh.sqrt() + 1e-8);
            }
        }
        let got = Vec::<f64>::try_from(p.to_kind(Kind::Double)).unwrap();
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() < 1e-6, "{got:?} vs {expected:?}");
        }
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let p = Tensor::from_slice(&[3.0f32, 4.0]).set_requires_grad(true);
        (&p * 1.0).sum(Kind::Float).backward();
        let params = vec![("p".to_string(), p.shallow_clone())];
        // grad = [1, 1], norm sqrt(2)
        let norm = clip_grad_norm(&params, 1.0);
        assert!((norm - 2f64.sqrt()).abs() < 1e-6);
        let g = Vec::<f64>::try_from(p.grad().to_kind(Kind::Double)).unwrap();
        assert!(((g[0] * g[0] + g[1] * g[1]).sqrt() - 1.0).abs() < 1e-5);
    }
}
