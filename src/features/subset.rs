//! `--train-subset N`: a seeded uniform sample of training examples, so that runs on a subset
//! are reproducible and comparable across methods with the same seed.
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// `n` distinct indices below `len` drawn uniformly with `seed`, in ascending order (the
/// file's order); all of `0..len` when `n >= len`.
pub fn train_subset(len: usize, n: usize, seed: u64) -> Vec<usize> {
    if n >= len {
        return (0..len).collect();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut chosen = rand::seq::index::sample(&mut rng, len, n).into_vec();
    chosen.sort_unstable();
    chosen
}
