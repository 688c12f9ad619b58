//! Every seeded random number of the toolkit comes from here, so a run's seed reproduces it
//! on every machine and a resumed run draws the same numbers as an uninterrupted one.
//!
//! One derivation: [`derive_seed`] turns (run seed, purpose, step) into the seed of one
//! independent stream. Two generators: splitmix64 for shuffles, subsets and sampling, and a
//! cheaper counter-based mixer for dropout masks, the one hot path (millions of draws per
//! step, filled by several threads at once).

/// What a derived stream is for; each purpose gets its own numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The order of training examples in an epoch.
    Order = 1,
    Dropout = 2,
    /// The batches and sampled labels of a tr(F) measurement.
    Fisher = 3,
    /// The draws of the `rand` schedule.
    RandomSchedule = 4,
    /// libtorch's generator, which initialises new adapters and heads.
    Init = 5,
    /// `--train-subset`.
    Subset = 6,
    /// The tokens masked for masked language modelling (a block's masks in an epoch).
    Masking = 7,
    /// Which lines of a text corpus are held out for perplexity.
    HeldOut = 8,
}

/// A 64-bit seed for one purpose at one step (or epoch, or index), derived from `seed`.
pub fn derive_seed(seed: u64, purpose: u64, step: u64) -> u64 {
    mix(seed ^ purpose.wrapping_mul(GOLDEN) ^ step.wrapping_mul(0xc2b2_ae3d_27d4_eb4f))
}

/// [`derive_seed`] for a named purpose.
pub fn stream_seed(seed: u64, purpose: Purpose, step: u64) -> u64 {
    derive_seed(seed, purpose as u64, step)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A splitmix64 stream.
pub struct SeedStream(u64);

impl SeedStream {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// A uniform draw in [0, 1).
    pub fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A seeded permutation of 0..n (Fisher-Yates over a splitmix64 stream).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut stream = SeedStream::new(seed);
    for i in (1..n).rev() {
        order.swap(i, (stream.next_u64() % (i as u64 + 1)) as usize);
    }
    order
}

/// `n` distinct indices below `len` drawn uniformly with `seed`, in ascending order; all of
/// `0..len` when `n >= len`.
pub fn subset(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut chosen = permutation(len, seed);
    chosen.truncate(n);
    chosen.sort_unstable();
    chosen
}

/// The dropout generator's distance between consecutive counter values.
pub const COUNTER_STEP: u64 = 0xa076_1d64_78bd_642f;

/// The dropout generator: 64 random bits from a counter value (one 128-bit multiply), so draw
/// k depends only on start + k * [`COUNTER_STEP`] and chunks of a mask fill in parallel.
pub fn counter_bits(state: u64) -> u64 {
    let t = (state as u128).wrapping_mul((state ^ 0xe703_7ed1_a0b4_28db) as u128);
    ((t >> 64) as u64) ^ (t as u64)
}

/// The starting counter of the dropout stream for `seed`.
pub fn counter_start(seed: u64) -> u64 {
    seed ^ GOLDEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_seeded_shuffle() {
        let p = permutation(100, 1);
        let mut sorted = p.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(p, permutation(100, 1));
        assert_ne!(p, permutation(100, 2));
    }

    #[test]
    fn subsets_are_seeded_distinct_and_in_file_order() {
        let a = subset(1000, 50, 7);
        assert_eq!(a.len(), 50);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, subset(1000, 50, 7));
        assert_ne!(a, subset(1000, 50, 8));
        assert_eq!(subset(5, 50, 7), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn purposes_give_independent_streams() {
        let seeds: Vec<u64> = [Purpose::Order, Purpose::Dropout, Purpose::Fisher, Purpose::Init].iter().map(|&p| stream_seed(42, p, 0)).collect();
        for (i, a) in seeds.iter().enumerate() {
            assert!(seeds[i + 1..].iter().all(|b| a != b));
        }
    }
}
