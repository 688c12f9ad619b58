//! Dropout with masks drawn by a fast counter-based generator instead of libtorch's
//! per-element Bernoulli sampling, which is about half of a CPU training step at BERT sizes.
//! The stream is reseeded by the trainer at every step, so a resumed run draws the same masks.
use std::cell::Cell;

use tch::{Kind, Tensor};

use crate::seed::{counter_bits, counter_start, COUNTER_STEP as STEP};

thread_local! {
    static STATE: Cell<u64> = const { Cell::new(0x853c_49e6_748f_ea9b) };
}

/// Restarts the mask stream of this thread.
pub fn reseed(seed: u64) {
    STATE.with(|s| s.set(counter_start(seed)));
}

/// Inverted dropout: keeps each element with probability 1 - p and scales kept ones by
/// 1 / (1 - p), as `torch.nn.functional.dropout` does.
pub fn dropout(x: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return x.shallow_clone();
    }
    let n = x.numel();
    let keep_scale = (1.0 / (1.0 - p)) as f32;
    // Compare 16-bit draws with the threshold: p is resolved to 1/65536.
    let threshold = (p * 65536.0).round() as u32;
    let draws = n.div_ceil(4) as u64;
    let start = STATE.with(|s| {
        let start = s.get();
        s.set(start.wrapping_add(draws.wrapping_mul(STEP)));
        start
    });
    // The mask has the input's type, so that bf16 activations stay bf16.
    let kind = if x.kind() == Kind::BFloat16 { Kind::BFloat16 } else { Kind::Float };
    let mask = Tensor::empty(x.size(), (kind, tch::Device::Cpu));
    // SAFETY: `mask` is a fresh contiguous CPU tensor of exactly n elements of the matching
    // type, written only here, before anything else can see it.
    unsafe {
        match kind {
            Kind::BFloat16 => {
                let out = std::slice::from_raw_parts_mut(mask.data_ptr() as *mut half::bf16, n);
                fill_mask(out, half::bf16::from_f32(keep_scale), half::bf16::ZERO, start, threshold);
            }
            _ => {
                let out = std::slice::from_raw_parts_mut(mask.data_ptr() as *mut f32, n);
                fill_mask(out, keep_scale, 0.0, start, threshold);
            }
        }
    }
    x * mask.to_device(x.device())
}

/// Writes `keep` where the draw is at or above `threshold`, else `zero`.
fn fill_mask<T: Copy + Send + Sync>(out: &mut [T], keep: T, zero: T, start: u64, threshold: u32) {
    // The generator is counter-based (draw k depends only on start + k * STEP), so halves of
    // the mask are filled in parallel and the result does not depend on the thread count.
    let fill = |chunk: &mut [T], first_draw: u64| {
        let mut state = start.wrapping_add(first_draw.wrapping_mul(STEP));
        for four in chunk.chunks_mut(4) {
            state = state.wrapping_add(STEP);
            let r = counter_bits(state);
            for (k, m) in four.iter_mut().enumerate() {
                let draw = ((r >> (16 * k)) & 0xffff) as u32;
                *m = if draw >= threshold { keep } else { zero };
            }
        }
    };
    let n = out.len();
    if n >= 1 << 16 {
        let half = (n / 8) * 4;
        let (a, b) = out.split_at_mut(half);
        std::thread::scope(|scope| {
            scope.spawn(|| fill(a, 0));
            fill(b, (half / 4) as u64);
        });
    } else {
        fill(out, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_expected_fraction_and_scale() {
        reseed(7);
        let x = Tensor::ones([100_000], (tch::Kind::Float, tch::Device::Cpu));
        let y = dropout(&x, 0.1, true);
        let kept = f64::try_from(y.ne(0.0).to_kind(tch::Kind::Double).mean(tch::Kind::Double)).unwrap();
        assert!((kept - 0.9).abs() < 0.005, "kept {kept}");
        let mean = f64::try_from(y.mean(tch::Kind::Double)).unwrap();
        assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
        assert!(dropout(&x, 0.1, false).equal(&x));
    }

    #[test]
    fn same_seed_same_mask() {
        let x = Tensor::ones([1000], (tch::Kind::Float, tch::Device::Cpu));
        reseed(3);
        let a = dropout(&x, 0.5, true);
        reseed(3);
        let b = dropout(&x, 0.5, true);
        assert!(a.equal(&b));
        assert!(!a.equal(&dropout(&x, 0.5, true)));
    }
}
