//! Which training rows a micro-batch holds: a seeded shuffle per epoch, walked in batches, so a
//! resumed run takes the same batches as an uninterrupted one. Both trainers use it.
use crate::seed::{permutation, stream_seed, Purpose};

pub struct EpochOrder {
    seed: u64,
    rows: usize,
    batch_size: usize,
    epoch: usize,
    order: Vec<usize>,
}

impl EpochOrder {
    pub fn new(seed: u64, rows: usize, batch_size: usize) -> Self {
        Self { seed, rows, batch_size, epoch: usize::MAX, order: Vec::new() }
    }

    /// Micro-batches per epoch (the last one may be short).
    pub fn batches_per_epoch(&self) -> usize {
        self.rows.div_ceil(self.batch_size)
    }

    /// The epoch of micro-batch `micro` (counted from the run's start) and its row indices.
    pub fn batch(&mut self, micro: usize) -> (usize, &[usize]) {
        let per_epoch = self.batches_per_epoch();
        let epoch = micro / per_epoch;
        if epoch != self.epoch {
            self.order = permutation(self.rows, stream_seed(self.seed, Purpose::Order, epoch as u64));
            self.epoch = epoch;
        }
        let pos = (micro % per_epoch) * self.batch_size;
        (epoch, &self.order[pos..(pos + self.batch_size).min(self.rows)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_once_per_epoch_and_a_new_order_each_epoch() {
        let mut order = EpochOrder::new(3, 10, 4);
        assert_eq!(order.batches_per_epoch(), 3);
        let epoch0: Vec<usize> = (0..3).flat_map(|m| order.batch(m).1.to_vec()).collect();
        let mut sorted = epoch0.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(order.batch(2).1.len(), 2, "the last batch is short");
        let (epoch, first) = order.batch(3);
        assert_eq!(epoch, 1);
        assert_ne!(first, &epoch0[..4]);
        // Asking out of order (a resume) gives the same rows.
        assert_eq!(EpochOrder::new(3, 10, 4).batch(4).1, order.batch(4).1);
    }
}
