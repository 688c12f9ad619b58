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

impl Schedule {
    /// The schedules' names without arguments, as config sections name them.
    pub const KINDS: [&'static str; 7] = ["standard", "lpft", "gu", "gu-rev", "rand", "order", "fun"];

    pub fn kind(&self) -> &'static str {
        match self {
            Schedule::Standard => "standard",
            Schedule::Lpft => "lpft",
            Schedule::GradualUnfreezing => "gu",
            Schedule::ReverseGradualUnfreezing => "gu-rev",
            Schedule::Random => "rand",
            Schedule::Order(_) => "order",
            Schedule::Fisher => "fun",
        }
    }
}

/// When unfreezing events fire, relative to the updates done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EventTiming {
    /// Algorithm 1 as the paper writes it, with the first adapter trainable from the start:
    /// events after k, 2k, 3k, ... updates.
    #[default]
    Paper,
    /// The paper's released code: FUN, LPFT, rand, reverse GU and explicit orders (its
    /// `--use_schedule` loop) fire after k-1, 2k-1, ... updates; GU (its `--use_gu` loop) one
    /// interval later, after 2k-1, 3k-1, ..., so GU's first adapter trains alone for 2k-1.
    Code,
}

/// What the schedule does before an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Unfreeze(Vec<usize>),
    UnfreezeAll,
    /// This many uniformly random still-frozen adapters, drawn by the caller's seeded
    /// generator.
    UnfreezeRandom(usize),
    /// FUN: measure tr(F) of the frozen adapters and unfreeze this many with the largest.
    UnfreezeLargestFisher(usize),
}

/// A schedule with everything that decides when it acts: the interval k (or explicit steps),
/// adapters per event, event timing and whether the top adapter trains from the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfreezing {
    pub schedule: Schedule,
    /// k of Algorithm 1.
    pub every: usize,
    /// Explicit event steps (updates done), replacing the uniform k when not empty.
    pub at: Vec<usize>,
    /// Adapters unfrozen per event after the first.
    pub per_event: usize,
    pub timing: EventTiming,
    /// gu-rev, rand and orders train the top adapter from step 0, as the released code does.
    pub top_first: bool,
    pub num_layers: usize,
}

impl Unfreezing {
    /// The event before update `step` (0-based count of updates done), given the adapters
    /// trainable now. Step 0 sets the starting set.
    pub fn event(&self, step: usize, trainable: &[usize]) -> Option<Event> {
        let layers = self.num_layers;
        let top = layers - 1;
        if step == 0 {
            return match &self.schedule {
                Schedule::Standard => Some(Event::UnfreezeAll),
                Schedule::Lpft => None,
                Schedule::GradualUnfreezing | Schedule::Fisher => Some(Event::Unfreeze(vec![top])),
                _ if self.top_first => Some(Event::Unfreeze(vec![top])),
                Schedule::ReverseGradualUnfreezing => Some(Event::Unfreeze(vec![0])),
                Schedule::Random => Some(Event::UnfreezeRandom(1)),
                Schedule::Order(order) => Some(Event::Unfreeze(vec![order[0]])),
            };
        }
        if trainable.len() >= layers || !self.is_event_step(step) {
            return None;
        }
        let frozen: Vec<usize> = (0..layers).filter(|l| !trainable.contains(l)).collect();
        let n = self.per_event.min(frozen.len());
        Some(match &self.schedule {
            Schedule::Standard => return None,
            Schedule::Lpft => Event::UnfreezeAll,
            Schedule::GradualUnfreezing => Event::Unfreeze(frozen.iter().rev().take(n).copied().collect()),
            Schedule::ReverseGradualUnfreezing => Event::Unfreeze(frozen.iter().take(n).copied().collect()),
            Schedule::Order(order) => {
                let next: Vec<usize> = order.iter().copied().filter(|l| frozen.contains(l)).take(n).collect();
                if next.is_empty() {
                    Event::UnfreezeAll
                } else {
                    Event::Unfreeze(next)
                }
            }
            Schedule::Random => Event::UnfreezeRandom(n),
            Schedule::Fisher => Event::UnfreezeLargestFisher(n),
        })
    }

    fn is_event_step(&self, step: usize) -> bool {
        if !self.at.is_empty() {
            return self.at.contains(&step);
        }
        let k = self.every;
        match self.timing {
            EventTiming::Paper => step.is_multiple_of(k),
            EventTiming::Code => {
                let first = if self.schedule == Schedule::GradualUnfreezing { 2 * k - 1 } else { k - 1 };
                step >= first && (step + 1).is_multiple_of(k)
            }
        }
    }

    pub fn validate(&self) -> Result<()> {
        let layers = self.num_layers;
        if let Schedule::Order(order) = &self.schedule {
            if order.is_empty() {
                bail!("schedule order names no layer");
            }
            let mut seen = vec![false; layers];
            for &l in order {
                if l >= layers {
                    bail!("schedule order names layer {l}, but the model has layers 0..{}", layers - 1);
                }
                if std::mem::replace(&mut seen[l], true) {
                    bail!("schedule order names layer {l} twice");
                }
            }
        }
        if self.at.first() == Some(&0) || self.at.windows(2).any(|w| w[0] >= w[1]) {
            bail!("unfreeze_at must list increasing steps after step 0, found {:?}", self.at);
        }
        if self.per_event == 0 {
            bail!("unfreeze_count must be at least 1");
        }
        Ok(())
    }
}

/// `count` distinct layers drawn uniformly from `frozen` (sorted), the j-th with `draw(j)`.
pub fn pick_random(frozen: &[usize], count: usize, draw: impl Fn(usize) -> u64) -> Vec<usize> {
    let mut left = frozen.to_vec();
    (0..count.min(left.len())).map(|j| left.remove((draw(j) % left.len() as u64) as usize)).collect()
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
            Schedule::Order(order) => {
                let list: Vec<String> = order.iter().map(|l| l.to_string()).collect();
                write!(f, "order:{}", list.join(","))
            }
            other => f.write_str(other.kind()),
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

    fn plan(schedule: &str, layers: usize, k: usize) -> Unfreezing {
        Unfreezing {
            schedule: schedule.parse().unwrap(),
            every: k,
            at: Vec::new(),
            per_event: 1,
            timing: EventTiming::Paper,
            top_first: false,
            num_layers: layers,
        }
    }

    /// Plays a deterministic schedule for `steps` and returns the trainable set per step.
    fn play(u: &Unfreezing, steps: usize) -> Vec<Vec<usize>> {
        let mut trainable = Vec::new();
        let mut out = Vec::new();
        for step in 0..steps {
            match u.event(step, &trainable) {
                Some(Event::Unfreeze(ls)) => trainable.extend(ls),
                Some(Event::UnfreezeAll) => trainable = (0..u.num_layers).collect(),
                Some(other) => panic!("{other:?} needs the trainer"),
                None => {}
            }
            let mut t = trainable.clone();
            t.sort();
            out.push(t);
        }
        out
    }

    /// The first step at which each count of trainable adapters is reached.
    fn event_steps(u: &Unfreezing, steps: usize) -> Vec<usize> {
        let sets = play(u, steps);
        (1..sets.len()).filter(|&s| sets[s].len() != sets[s - 1].len()).collect()
    }

    #[test]
    fn standard_trains_everything_from_the_start() {
        let steps = play(&plan("standard", 4, 2), 5);
        assert!(steps.iter().all(|t| t == &vec![0, 1, 2, 3]));
    }

    #[test]
    fn lpft_trains_the_head_alone_for_k_steps() {
        let steps = play(&plan("lpft", 4, 3), 5);
        assert_eq!(steps[0], Vec::<usize>::new());
        assert_eq!(steps[2], Vec::<usize>::new());
        assert_eq!(steps[3], vec![0, 1, 2, 3]);
    }

    #[test]
    fn gradual_unfreezing_goes_top_down_every_k_steps() {
        let steps = play(&plan("gu", 4, 2), 8);
        assert_eq!(steps[0], vec![3]);
        assert_eq!(steps[1], vec![3]);
        assert_eq!(steps[2], vec![2, 3]);
        assert_eq!(steps[4], vec![1, 2, 3]);
        assert_eq!(steps[6], vec![0, 1, 2, 3]);
        assert_eq!(steps[7], vec![0, 1, 2, 3]);
    }

    #[test]
    fn reverse_gradual_unfreezing_goes_bottom_up() {
        let steps = play(&plan("gu-rev", 3, 1), 3);
        assert_eq!(steps, vec![vec![0], vec![0, 1], vec![0, 1, 2]]);
    }

    #[test]
    fn top_first_starts_reverse_gu_and_orders_at_the_top() {
        let mut u = plan("gu-rev", 4, 1);
        u.top_first = true;
        assert_eq!(play(&u, 4), vec![vec![3], vec![0, 3], vec![0, 1, 3], vec![0, 1, 2, 3]]);
        let mut u = plan("order:1,3,0", 4, 1);
        u.top_first = true;
        assert_eq!(play(&u, 4), vec![vec![3], vec![1, 3], vec![0, 1, 3], vec![0, 1, 2, 3]]);
        let mut u = plan("rand", 4, 1);
        assert_eq!(u.event(0, &[]), Some(Event::UnfreezeRandom(1)));
        u.top_first = true;
        assert_eq!(u.event(0, &[]), Some(Event::Unfreeze(vec![3])));
    }

    #[test]
    fn explicit_order_then_the_rest() {
        assert_eq!(play(&plan("order:1,3", 4, 1), 4), vec![vec![1], vec![1, 3], vec![0, 1, 2, 3], vec![0, 1, 2, 3]]);
    }

    #[test]
    fn order_validation_names_the_layer() {
        assert!(format!("{:#}", plan("order:1,7", 4, 1).validate().unwrap_err()).contains("layer 7"));
        assert!(format!("{:#}", plan("order:1,1", 4, 1).validate().unwrap_err()).contains("twice"));
    }

    #[test]
    fn released_code_timing_delays_gu_by_one_interval() {
        // Paper: events after k, 2k, 3k updates. Code: GU after 2k-1, 3k-1, 4k-1; the others
        // after k-1, 2k-1, ...
        let k = 5;
        assert_eq!(event_steps(&plan("gu", 4, k), 40), vec![5, 10, 15]);
        let mut u = plan("gu", 4, k);
        u.timing = EventTiming::Code;
        assert_eq!(event_steps(&u, 40), vec![9, 14, 19]);
        let mut u = plan("gu-rev", 4, k);
        u.timing = EventTiming::Code;
        assert_eq!(event_steps(&u, 40), vec![4, 9, 14]);
        let mut u = plan("lpft", 4, k);
        u.timing = EventTiming::Code;
        assert_eq!(event_steps(&u, 40), vec![4]);
        let mut u = plan("order:3,2,1,0", 4, k);
        u.timing = EventTiming::Code;
        assert_eq!(event_steps(&u, 40), vec![4, 9, 14]);
        let mut u = plan("fun", 4, k);
        u.timing = EventTiming::Code;
        let fires: Vec<usize> = (1..40).filter(|&s| u.event(s, &[3]).is_some()).collect();
        assert_eq!(fires, vec![4, 9, 14, 19, 24, 29, 34, 39]);
    }

    #[test]
    fn explicit_steps_replace_the_uniform_interval() {
        let mut u = plan("gu", 4, 100);
        u.at = vec![2, 3, 7];
        assert_eq!(event_steps(&u, 10), vec![2, 3, 7]);
        assert_eq!(play(&u, 8)[7], vec![0, 1, 2, 3]);
        u.at = vec![3, 3];
        assert!(u.validate().is_err());
        u.at = vec![0, 3];
        assert!(u.validate().is_err());
    }

    #[test]
    fn several_adapters_per_event() {
        let mut u = plan("gu", 5, 2);
        u.per_event = 2;
        let steps = play(&u, 6);
        assert_eq!(steps[0], vec![4]);
        assert_eq!(steps[2], vec![2, 3, 4]);
        assert_eq!(steps[4], vec![0, 1, 2, 3, 4]);
        let mut u = plan("fun", 5, 2);
        u.per_event = 3;
        assert_eq!(u.event(2, &[4]), Some(Event::UnfreezeLargestFisher(3)));
        assert_eq!(u.event(4, &[4, 0, 1, 2]), Some(Event::UnfreezeLargestFisher(1)));
        assert_eq!(u.event(6, &[0, 1, 2, 3, 4]), None);
    }

    #[test]
    fn fun_and_random_ask_the_caller() {
        let u = plan("fun", 12, 5);
        assert_eq!(u.event(0, &[]), Some(Event::Unfreeze(vec![11])));
        assert_eq!(u.event(5, &[11]), Some(Event::UnfreezeLargestFisher(1)));
        assert_eq!(u.event(4, &[11]), None);
        let all: Vec<usize> = (0..12).collect();
        assert_eq!(u.event(60, &all), None);
        assert_eq!(plan("rand", 12, 5).event(5, &[11]), Some(Event::UnfreezeRandom(1)));
    }

    #[test]
    fn random_picks_are_distinct_and_follow_the_draws() {
        assert_eq!(pick_random(&[0, 4, 7], 1, |_| 5), vec![7]);
        // Draws index into what is left: 5 % 3 = 2 -> 7, then 5 % 2 = 1 -> 4.
        assert_eq!(pick_random(&[0, 4, 7], 2, |_| 5), vec![7, 4]);
        assert_eq!(pick_random(&[0, 4, 7], 5, |j| j as u64), vec![0, 7, 4]);
    }

    /// Plays `rand` as the trainer does (its draws: the run seed's `RandomSchedule` stream at
    /// the event's step) and returns (step, layer) per unfreezing.
    fn play_random(u: &Unfreezing, seed: u64, steps: usize) -> Vec<(usize, usize)> {
        use crate::seed::{derive_seed, stream_seed, Purpose};
        let mut trainable: Vec<usize> = Vec::new();
        let mut events = Vec::new();
        for step in 0..steps {
            let Some(event) = u.event(step, &trainable) else { continue };
            let Event::UnfreezeRandom(n) = event else { panic!("rand asked for {event:?}") };
            let frozen: Vec<usize> = (0..u.num_layers).filter(|l| !trainable.contains(l)).collect();
            let draw = stream_seed(seed, Purpose::RandomSchedule, step as u64);
            let picks = pick_random(&frozen, n, |j| derive_seed(draw, 0, j as u64));
            assert_eq!(picks.len(), n.min(frozen.len()));
            for l in picks {
                assert!(frozen.contains(&l), "step {step}: layer {l} was already trainable");
                trainable.push(l);
                events.push((step, l));
            }
        }
        events
    }

    #[test]
    fn random_schedule_unfreezes_a_seeded_permutation_of_all_adapters() {
        let (layers, k) = (12, 5);
        let u = plan("rand", layers, k);
        let mut orders = std::collections::HashSet::new();
        let mut first_counts = vec![0usize; layers];
        for seed in 0..600 {
            let events = play_random(&u, seed, layers * k + 10);
            // Algorithm 1: one adapter at step 0, then one more every k steps, each layer once.
            let steps: Vec<usize> = events.iter().map(|e| e.0).collect();
            assert_eq!(steps, (0..layers).map(|i| i * k).collect::<Vec<_>>(), "seed {seed}");
            let order: Vec<usize> = events.iter().map(|e| e.1).collect();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, (0..layers).collect::<Vec<_>>(), "seed {seed}: a permutation of all adapters");
            assert_eq!(events, play_random(&u, seed, layers * k + 10), "seed {seed}: reproducible");
            first_counts[order[0]] += 1;
            orders.insert(order);
        }
        assert_eq!(orders.len(), 600, "different seeds give different orders");
        // The first pick is uniform over the 12 layers: 50 expected each; a 5-sigma band.
        assert!(first_counts.iter().all(|&c| (15..=85).contains(&c)), "{first_counts:?}");
        // Two per event: still each layer once, events every k steps.
        let mut two = plan("rand", 5, 3);
        two.per_event = 2;
        for seed in 0..50 {
            let events = play_random(&two, seed, 20);
            assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), [0, 3, 3, 6, 6]);
            let mut layers: Vec<usize> = events.iter().map(|e| e.1).collect();
            layers.sort();
            assert_eq!(layers, [0, 1, 2, 3, 4], "seed {seed}");
        }
    }

    #[test]
    fn names_round_trip() {
        for name in ["standard", "lpft", "gu", "gu-rev", "rand", "fun", "order:10,1,0"] {
            assert_eq!(name.parse::<Schedule>().unwrap().to_string(), name);
        }
        assert!("bogus".parse::<Schedule>().is_err());
    }
}
