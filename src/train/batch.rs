//! Training batches as tensors, and the likelihood every loss and Fisher estimate uses.
use tch::{Kind, Tensor};

use crate::model::torch::{Inputs, Logits};

/// Gold labels: a class (or choice) per example, or answer start/end token positions.
#[derive(Debug)]
pub enum Labels {
    Class(Tensor),
    Span { start: Tensor, end: Tensor },
}

impl Labels {
    pub fn to_device(&self, device: tch::Device) -> Labels {
        match self {
            Labels::Class(t) => Labels::Class(t.to_device(device)),
            Labels::Span { start, end } => Labels::Span { start: start.to_device(device), end: end.to_device(device) },
        }
    }
}

#[derive(Debug)]
pub struct TrainBatch {
    pub inputs: Inputs,
    pub labels: Labels,
}

impl TrainBatch {
    pub fn len(&self) -> usize {
        self.inputs.input_ids.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// log p(y | x) per example. For spans, start and end are independent, so the two
/// log-probabilities add.
pub fn log_likelihood(logits: &Logits, labels: &Labels) -> Tensor {
    let pick = |scores: &Tensor, y: &Tensor| scores.log_softmax(-1, Kind::Float).gather(1, &y.unsqueeze(1), false).squeeze_dim(1);
    match (logits, labels) {
        (Logits::Classes(l), Labels::Class(y)) => pick(l, y),
        (Logits::Span { start, end }, Labels::Span { start: ys, end: ye }) => pick(start, ys) + pick(end, ye),
        _ => panic!("labels do not fit the head's outputs"),
    }
}

/// The training loss: mean cross-entropy; for spans the mean of the start and end losses, as
/// Hugging Face's question-answering models compute it.
pub fn loss(logits: &Logits, labels: &Labels) -> Tensor {
    let nll = -log_likelihood(logits, labels).mean(Kind::Float);
    match labels {
        Labels::Class(_) => nll,
        Labels::Span { .. } => nll / 2.0,
    }
}

/// Labels drawn from the model's own predictive distribution (with `sample_seed`) or its mode.
/// Sampling uses its own seeded stream, not libtorch's global generator, so a measurement
/// neither depends on nor disturbs anything else that draws random numbers.
pub fn model_labels(logits: &Logits, sample_seed: Option<u64>) -> Labels {
    let mut stream = sample_seed.map(crate::seed::SeedStream::new);
    let mut draw = |scores: &Tensor| match stream.as_mut() {
        None => scores.argmax(-1, false),
        Some(stream) => {
            let probs = Vec::<Vec<f64>>::try_from(scores.softmax(-1, Kind::Double).to_device(tch::Device::Cpu))
                .expect("2-d scores");
            let picks: Vec<i64> = probs
                .iter()
                .map(|row| {
                    // Inverse CDF; rounding can leave the total a hair under u, hence the last index.
                    let u = stream.next_unit();
                    let mut acc = 0.0;
                    row.iter().position(|p| {
                        acc += p;
                        u < acc
                    })
                    .unwrap_or(row.len() - 1) as i64
                })
                .collect();
            Tensor::from_slice(&picks).to_device(scores.device())
        }
    };
    tch::no_grad(|| match logits {
        Logits::Classes(l) => Labels::Class(draw(l)),
        Logits::Span { start, end } => {
            let start = draw(start);
            Labels::Span { start, end: draw(end) }
        }
    })
}
