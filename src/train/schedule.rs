//! Scheduled unfreezing of the task adapters (Algorithm 1 of Liu et al., 2024): which task
//! adapters are trainable at each optimisation step. Layers are numbered bottom-up, so the
//! top adapter is `num_layers - 1`. The head is always trainable and not part of this.
use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Schedule {
    /// Every task adapter trainable from step 0.
    Standard,
    /// Linear probing, then fine-tuning: the head alone for k steps, then every adapter.
    Lpft,
    /// Gradual unfreezing: the top adapter from step 0, the next lower one every k steps.
    GradualUnfreezing,
    /// Reverse gradual unfreezing: the bottom adapter first, upwards.
    ReverseGradualUnfreezing,
    /// A uniformly random still-frozen adapter every k steps (seeded), starting from the top.
    Random,
    /// An explicit order of layers; layers not named are unfrozen when the order is spent.
    Order(Vec<usize>),
    /// FUN: the top adapter from step 0, then every k steps the still-frozen adapter with the
    /// largest trace of the Fisher information.
    Fisher,
}

/// What the schedule does at a step, before that step's update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Unfreeze(usize),
    UnfreezeAll,
    /// A uniformly random still-frozen adapter, drawn by the caller's seeded generator.
    UnfreezeRandom,
    /// FUN: measure tr(F) of the frozen adapters and unfreeze the largest.
    UnfreezeLargestFisher,
}

impl Schedule {
    /// Adapters trainable before the first update.
    pub fn initial(&self, num_layers: usize) -> Vec<usize> {
        let top = num_layers - 1;
        match self {
            Schedule::Standard => (0..num_layers).collect(),
            Schedule::Lpft => Vec::new(),
            Schedule::GradualUnfreezing | Schedule::Random | Schedule::Fisher => vec![top],
            Schedule::ReverseGradualUnfreezing => vec![0],
            Schedule::Order(order) => order.first().copied().into_iter().collect(),
        }
    }

    /// The event at `step` (0-based count of updates done), given every `k` steps. Events
    /// happen at steps k, 2k, ...; once everything is trainable there are none. (The paper's
    /// released code fires after k-1, 2k-1, ... updates, so its top adapter trains alone one
    /// update less.)
    pub fn event(&self, step: usize, k: usize, trainable: &[usize], num_layers: usize) -> Option<Event> {
        if step == 0 || k == 0 || !step.is_multiple_of(k) || trainable.len() >= num_layers {
            return None;
        }
        let frozen = |l: &usize| !trainable.contains(l);
        Some(match self {
            Schedule::Standard => return None,
            Schedule::Lpft => Event::UnfreezeAll,
            Schedule::GradualUnfreezing => Event::Unfreeze((0..num_layers).rev().find(frozen)?),
            Schedule::ReverseGradualUnfreezing => Event::Unfreeze((0..num_layers).find(frozen)?),
            Schedule::Order(order) => match order.iter().copied().find(frozen) {
                Some(l) => Event::Unfreeze(l),
                None => Event::UnfreezeAll,
            },
            Schedule::Random => Event::UnfreezeRandom,
            Schedule::Fisher => Event::UnfreezeLargestFisher,
        })
    }

    pub fn validate(&self, num_layers: usize) -> Result<()> {
        if let Schedule::Order(order) = self {
            let mut seen = vec![false; num_layers];
            for &l in order {
                if l >= num_layers {
                    bail!("schedule order names layer {l}, but the model has layers 0..{}", num_layers - 1);
                }
                if std::mem::replace(&mut seen[l], true) {
                    bail!("schedule order names layer {l} twice");
                }
            }
        }
        Ok(())
    }
}

/// The frozen layer a `Random` event unfreezes: a uniform draw from `frozen` (sorted).
pub fn pick_random(frozen: &[usize], draw: u64) -> usize {
    frozen[(draw % frozen.len() as u64) as usize]
}

impl FromStr for Schedule {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "standard" => Schedule::Standard,
            "lpft" => Schedule::Lpft,
            "gu" => Schedule::GradualUnfreezing,
            "gu-rev" => Schedule::ReverseGradualUnfreezing,
            "rand" => Schedule::Random,
            "fun" => Schedule::Fisher,
            _ => match s.strip_prefix("order:") {
                Some(list) => Schedule::Order(
                    list.split(',')
                        .map(|x| x.trim().parse::<usize>().with_context(|| format!("`{x}` in `{s}` is not a layer index")))
                        .collect::<Result<_>>()?,
                ),
                None => bail!("unknown schedule `{s}` (standard, lpft, gu, gu-rev, rand, fun, order:L1,L2,...)"),
            },
        })
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Standard => f.write_str("standard"),
            Schedule::Lpft => f.write_str("lpft"),
            Schedule::GradualUnfreezing => f.write_str("gu"),
            Schedule::ReverseGradualUnfreezing => f.write_str("gu-rev"),
            Schedule::Random => f.write_str("rand"),
            Schedule::Fisher => f.write_str("fun"),
            Schedule::Order(order) => {
                let list: Vec<String> = order.iter().map(|l| l.to_string()).collect();
                write!(f, "order:{}", list.join(","))
            }
        }
    }
}

impl TryFrom<String> for Schedule {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Schedule> for String {
    fn from(s: Schedule) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays a deterministic schedule for `steps` and returns the trainable set per step.
    fn play(schedule: &Schedule, layers: usize, k: usize, steps: usize) -> Vec<Vec<usize>> {
        let mut trainable = schedule.initial(layers);
        let mut out = Vec::new();
        for step in 0..steps {
            match schedule.event(step, k, &trainable, layers) {
                Some(Event::Unfreeze(l)) => trainable.push(l),
                Some(Event::UnfreezeAll) => trainable = (0..layers).collect(),
                Some(other) => panic!("{other:?} needs the trainer"),
                None => {}
            }
            let mut t = trainable.clone();
            t.sort();
            out.push(t);
        }
        out
    }

    #[test]
    fn standard_trains_everything_from_the_start() {
        let steps = play(&Schedule::Standard, 4, 2, 5);
        assert!(steps.iter().all(|t| t == &vec![0, 1, 2, 3]));
    }

    #[test]
    fn lpft_trains_the_head_alone_for_k_steps() {
        let steps = play(&Schedule::Lpft, 4, 3, 5);
        assert_eq!(steps[0], Vec::<usize>::new());
        assert_eq!(steps[2], Vec::<usize>::new());
        assert_eq!(steps[3], vec![0, 1, 2, 3]);
    }

    #[test]
    fn gradual_unfreezing_goes_top_down_every_k_steps() {
        let steps = play(&Schedule::GradualUnfreezing, 4, 2, 8);
        assert_eq!(steps[0], vec![3]);
        assert_eq!(steps[1], vec![3]);
        assert_eq!(steps[2], vec![2, 3]);
        assert_eq!(steps[4], vec![1, 2, 3]);
        assert_eq!(steps[6], vec![0, 1, 2, 3]);
        assert_eq!(steps[7], vec![0, 1, 2, 3]);
    }

    #[test]
    fn reverse_gradual_unfreezing_goes_bottom_up() {
        let steps = play(&Schedule::ReverseGradualUnfreezing, 3, 1, 3);
        assert_eq!(steps, vec![vec![0], vec![0, 1], vec![0, 1, 2]]);
    }

    #[test]
    fn explicit_order_then_the_rest() {
        let s: Schedule = "order:1,3".parse().unwrap();
        let steps = play(&s, 4, 1, 4);
        assert_eq!(steps, vec![vec![1], vec![1, 3], vec![0, 1, 2, 3], vec![0, 1, 2, 3]]);
    }

    #[test]
    fn order_validation_names_the_layer() {
        let s: Schedule = "order:1,7".parse().unwrap();
        assert!(format!("{:#}", s.validate(4).unwrap_err()).contains("layer 7"));
        let s: Schedule = "order:1,1".parse().unwrap();
        assert!(format!("{:#}", s.validate(4).unwrap_err()).contains("twice"));
    }

    #[test]
    fn fun_and_random_ask_the_caller() {
        assert_eq!(Schedule::Fisher.initial(12), vec![11]);
        assert_eq!(Schedule::Fisher.event(5, 5, &[11], 12), Some(Event::UnfreezeLargestFisher));
        assert_eq!(Schedule::Fisher.event(4, 5, &[11], 12), None);
        let all: Vec<usize> = (0..12).collect();
        assert_eq!(Schedule::Fisher.event(60, 5, &all, 12), None);
        assert_eq!(Schedule::Random.event(5, 5, &[11], 12), Some(Event::UnfreezeRandom));
        assert_eq!(pick_random(&[0, 4, 7], 5), 7);
    }

    #[test]
    fn names_round_trip() {
        for name in ["standard", "lpft", "gu", "gu-rev", "rand", "fun", "order:10,1,0"] {
            assert_eq!(name.parse::<Schedule>().unwrap().to_string(), name);
        }
        assert!("bogus".parse::<Schedule>().is_err());
    }
}
