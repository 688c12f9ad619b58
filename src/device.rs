//! Where computation runs and in which precision, as users choose it on the command line.
/// `--device`: `auto` takes CUDA when it really works and says so, else the CPU; an explicit
/// `cuda` that cannot run is an error, never a silent fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

/// The libtorch device for a choice.
#[cfg(feature = "train")]
pub fn torch_device(choice: Device) -> anyhow::Result<tch::Device> {
    let available = tch::Cuda::is_available();
    match choice {
        Device::Cpu => Ok(tch::Device::Cpu),
        Device::Cuda if !available => anyhow::bail!("--device cuda: libtorch sees no usable CUDA device"),
        Device::Cuda => Ok(tch::Device::Cuda(0)),
        Device::Auto => Ok(if available { tch::Device::Cuda(0) } else { tch::Device::Cpu }),
    }
}

/// `--precision`: the type of the training computation. `bf16` is mixed precision in the
/// manner of autocast: matmuls and the activations between them in bfloat16, while master
/// weights, gradients of the trained weights, optimizer state, softmax, LayerNorm statistics,
/// the loss and tr(F) sums stay in float32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
}

#[cfg(feature = "train")]
impl Precision {
    /// The libtorch type activations are computed in.
    pub fn kind(self) -> tch::Kind {
        match self {
            Precision::Fp32 => tch::Kind::Float,
            Precision::Bf16 => tch::Kind::BFloat16,
        }
    }
}

/// A warning for `bf16` on a CPU without bfloat16 instructions (AVX512-BF16 or AMX-BF16 on
/// x86-64, BF16 on aarch64), where matrix products run as float32 kernels on bf16 values
/// (src/model/torch/matmul.rs). None for fp32 and for CUDA.
#[cfg(feature = "train")]
pub fn bf16_warning(precision: Precision, device: tch::Device) -> Option<String> {
    if precision != Precision::Bf16 || device != tch::Device::Cpu || cpu_has_bf16() {
        return None;
    }
    Some(
        "--precision bf16 on a CPU without bfloat16 instructions (AVX512-BF16 or AMX): the matrix products run \
         as float32 kernels on the bf16 values (libtorch's own bf16 kernels are emulated here, 500x slower), so \
         this trains with bf16's numbers but is no faster than fp32; use it to check a bf16 recipe"
            .to_string(),
    )
}

// Every x86-64 CPU with AMX-BF16 (Intel Sapphire Rapids and later) also has AVX512-BF16.
/// Whether this CPU has bfloat16 instructions.
#[cfg(all(feature = "train", target_arch = "x86_64"))]
pub fn cpu_has_bf16() -> bool {
    std::arch::is_x86_feature_detected!("avx512bf16")
}

#[cfg(all(feature = "train", target_arch = "aarch64"))]
pub fn cpu_has_bf16() -> bool {
    std::arch::is_aarch64_feature_detected!("bf16")
}

#[cfg(all(feature = "train", not(any(target_arch = "x86_64", target_arch = "aarch64"))))]
pub fn cpu_has_bf16() -> bool {
    true
}

/// Whether ONNX Runtime multiplies uint8 activations by int8 weights exactly on this CPU. On
/// x86-64 only with VNNI (AVX512-VNNI or AVX-VNNI; every AMX CPU has AVX512-VNNI): without it
/// its kernel adds each pair of products in 16 bits with saturation. Arm's kernels widen first.
#[cfg(target_arch = "x86_64")]
pub fn cpu_u8s8_exact() -> bool {
    std::arch::is_x86_feature_detected!("avx512vnni") || std::arch::is_x86_feature_detected!("avxvnni")
}

#[cfg(not(target_arch = "x86_64"))]
pub fn cpu_u8s8_exact() -> bool {
    true
}
