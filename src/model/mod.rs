//! The MAD-X encoder: configs, checkpoints and (with the `train` feature) the tch model.
pub mod adapter_config;
pub mod composed;
pub mod config;
pub mod head;
pub mod hub;
#[cfg(feature = "train")]
pub mod torch;
pub mod torch_pickle;
pub mod weights;

pub use adapter_config::{Activation, AdapterConfig};
pub use composed::{AdapterSpec, ComposedModel, ModelFiles};
pub use config::{Arch, ModelConfig};
pub use head::{Head, HeadType};
pub use weights::{Tensor, Weights};
