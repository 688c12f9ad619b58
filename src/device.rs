//! Where computation runs, as users choose it on the command line.
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
