//! `--train-subset N`: a seeded uniform sample of training examples, so that runs on a subset
//! are reproducible and comparable across methods with the same seed.
use crate::seed::{stream_seed, subset, Purpose};

/// `n` distinct indices below `len` drawn uniformly with the run's `seed`, in ascending order
/// (the file's order); all of `0..len` when `n >= len`.
pub fn train_subset(len: usize, n: usize, seed: u64) -> Vec<usize> {
    subset(len, n, stream_seed(seed, Purpose::Subset, 0))
}
