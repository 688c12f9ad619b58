//! Matrix products in the type of the activations. Under bf16 training on a CPU without
//! bfloat16 instructions (AVX2-only x86-64), libtorch's bf16 matrix product is a scalar
//! fallback: a 2048^3 product ran at 0.3 GFLOP/s against 168 in float32 on an AVX2-only AMD
//! EPYC, so a bf16 training step would take hours. There the product runs as a float32 kernel
//! on the operands' exact float32 values, rounded back to bf16: what a bf16 kernel that
//! accumulates in float32 computes (AVX512-BF16, AMX and oneDNN's kernels do), up to the order
//! of the float32 sums. bf16's numbers at about float32's speed (a standard step took 1.15x
//! fp32's on that EPYC), so a bf16 recipe can be checked there.
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Whether a product of `t` runs as float32 kernels (see the module's comment).
fn via_float32(t: &Tensor) -> bool {
    t.kind() == Kind::BFloat16 && t.device() == Device::Cpu && !crate::device::cpu_has_bf16()
}

/// `a.matmul(b)`, with bf16 operands multiplied by float32 kernels where bf16 ones are emulated.
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Tensor {
    if via_float32(a) {
        return matmul_in_float32(a, b);
    }
    a.matmul(b)
}

/// `x W^T + b` in the type of `x`: under bf16 training the float32 master weights are cast on
/// the way in (rounded to bf16, as a bf16 kernel sees them), so gradients of trained weights
/// reach them in float32 (as autocast does).
pub(crate) fn linear(lin: &nn::Linear, x: &Tensor) -> Tensor {
    let kind = x.kind();
    if lin.ws.kind() == kind {
        return lin.forward(x);
    }
    let w = lin.ws.to_kind(kind);
    let b = lin.bs.as_ref().map(|b| b.to_kind(kind));
    if via_float32(x) {
        return linear_in_float32(x, &w, b.as_ref());
    }
    x.linear(&w, b)
}

fn matmul_in_float32(a: &Tensor, b: &Tensor) -> Tensor {
    a.to_kind(Kind::Float).matmul(&b.to_kind(Kind::Float)).to_kind(a.kind())
}

fn linear_in_float32(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
    let float = |t: &Tensor| t.to_kind(Kind::Float);
    // libtorch's linear adds the bias inside the product (one rounding) except for an input of
    // three or more dimensions that is not contiguous (a slice of the invertible adapter, say),
    // where it adds it to the rounded product: the same here, so both round alike.
    if x.dim() >= 3 && !x.is_contiguous() {
        let y = float(x).matmul(&float(w).tr()).to_kind(x.kind());
        return match b {
            Some(b) => y + b,
            None => y,
        };
    }
    float(x).linear(&float(w), b.map(float)).to_kind(x.kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random bf16 values of `shape` that require gradients.
    fn leaf(shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16).set_requires_grad(true)
    }

    /// The share of elements in which bf16 tensors `a` and `b` differ.
    fn share_differing(a: &Tensor, b: &Tensor) -> f64 {
        a.ne_tensor(b).to_kind(Kind::Float).mean(Kind::Float).double_value(&[])
    }

    /// Gradients of `sum(out * g)` for a fixed random `g` with respect to `inputs`.
    fn grads(out: &Tensor, inputs: &[&Tensor]) -> Vec<Tensor> {
        tch::manual_seed(11);
        let g = Tensor::randn(out.size(), (Kind::Float, Device::Cpu));
        let loss = (out.to_kind(Kind::Float) * g).sum(Kind::Float);
        Tensor::run_backward(&[loss], inputs, false, false)
    }

    /// The float32-kernel products and libtorch's bf16 ones (emulated here or not) are the
    /// same bf16 numbers, forward and backward, also where libtorch's linear rounds twice (a
    /// non-contiguous input): a sum in a different order may round the other way in a few
    /// elements, a second rounding in far more (a tenth of them and up).
    #[test]
    fn float32_kernels_compute_bf16_products() {
        tch::manual_seed(7);
        let (a, b) = (leaf(&[3, 17, 40]), leaf(&[40, 23]));
        let (w, bias) = (leaf(&[23, 40]), leaf(&[23]));
        let wide = leaf(&[3, 17, 80]);
        let slice = wide.narrow(2, 0, 40);
        let cases = [
            ("matmul", matmul_in_float32(&a, &b), a.matmul(&b), vec![&a, &b]),
            ("linear", linear_in_float32(&a, &w, Some(&bias)), a.linear(&w, Some(&bias)), vec![&a, &w, &bias]),
            ("linear of a slice", linear_in_float32(&slice, &w, Some(&bias)), slice.linear(&w, Some(&bias)), vec![&wide, &w, &bias]),
        ];
        for (name, ours, native, inputs) in &cases {
            assert_eq!(ours.kind(), Kind::BFloat16, "{name}");
            let share = share_differing(ours, native);
            assert!(share <= 0.01, "{name}: {:.1}% of the products differ", 100.0 * share);
            for (i, (o, n)) in grads(ours, inputs).iter().zip(grads(native, inputs)).enumerate() {
                assert_eq!(o.kind(), Kind::BFloat16, "{name}: gradient of operand {i}");
                let share = share_differing(o, &n);
                assert!(share <= 0.01, "{name}: {:.1}% of the gradients of operand {i} differ", 100.0 * share);
            }
        }
    }
}
