//! A run's plan, known before any weight is loaded: the number of updates and the unfreezing
//! events of the schedule, with a warning when the schedule cannot finish inside the run.
//! `toolkit train --dry-run` prints it; every new run writes it to `plan.txt`.
use std::fmt::Write as _;

use super::config::TrainConfig;
use super::schedule::Event;

pub struct Plan {
    pub num_layers: usize,
    /// Feature rows of the training set, when known.
    pub train_len: Option<usize>,
    pub total_steps: Option<usize>,
    /// (step, what happens before that update).
    pub events: Vec<(usize, String)>,
    pub warnings: Vec<String>,
}

impl Plan {
    /// Plays the schedule of `config` on a model of `num_layers` layers. Events that depend on
    /// the run (random draws, tr(F)) are named, not decided.
    pub fn new(config: &TrainConfig, num_layers: usize, train_len: Option<usize>) -> Plan {
        let unfreezing = config.unfreezing(num_layers);
        let total_steps = train_len.map(|n| config.total_steps(n));
        // Every event of any timing falls before this step, so the loop ends.
        let horizon = unfreezing.at.last().copied().unwrap_or(0).max(config.unfreeze_every * (num_layers + 2)) + 1;
        let mut trainable: Vec<usize> = Vec::new();
        let mut events = Vec::new();
        let mut never = Vec::new();
        for step in 0..horizon {
            let Some(event) = unfreezing.event(step, &trainable) else { continue };
            let frozen: Vec<usize> = (0..num_layers).filter(|l| !trainable.contains(l)).collect();
            let (what, added) = match event {
                Event::Unfreeze(layers) => (format!("unfreeze {}", layer_list(&layers, num_layers)), layers),
                Event::UnfreezeAll => (format!("unfreeze all remaining ({})", layer_list(&frozen, num_layers)), frozen.clone()),
                // Which layers does not matter for the plan, only how many: take any.
                Event::UnfreezeRandom(n) => (format!("unfreeze {n} chosen at random"), frozen[..n].to_vec()),
                Event::UnfreezeLargestFisher(n) => (format!("unfreeze {n} chosen by tr(F)"), frozen[..n].to_vec()),
            };
            if total_steps.is_some_and(|total| step >= total) {
                never.extend(added.iter().copied());
                events.push((step, format!("{what}  (after the last update: never happens)")));
            } else {
                events.push((step, what));
            }
            trainable.extend(added);
        }
        let mut warnings = Vec::new();
        if let (Some(total), false) = (total_steps, never.is_empty()) {
            warnings.push(format!(
                "the schedule cannot finish: {} of {num_layers} task adapters would be unfrozen at or after step {total}, the run's end, and never train (schedule `{}`, k = {}); raise epochs or lower unfreeze_every",
                never.len(),
                config.schedule,
                config.unfreeze_every,
            ));
        }
        Plan { num_layers, train_len, total_steps, events, warnings }
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "task adapters: {} layers (0 = bottom, {} = top)", self.num_layers, self.num_layers.saturating_sub(1));
        match (self.train_len, self.total_steps) {
            (Some(n), Some(total)) => {
                let _ = writeln!(text, "training rows: {n}");
                let _ = writeln!(text, "total updates: {total}");
            }
            _ => {
                let _ = writeln!(text, "total updates: unknown (the training file could not be read)");
            }
        }
        let _ = writeln!(text, "unfreezing events (before the update at step; steps count updates done):");
        if self.events.is_empty() {
            let _ = writeln!(text, "  none: only the head trains");
        }
        for (step, what) in &self.events {
            let _ = writeln!(text, "  step {step:>7}: {what}");
        }
        for warning in &self.warnings {
            let _ = writeln!(text, "warning: {warning}");
        }
        text
    }
}

/// "layer 11 (top)", "layers 3, 2".
fn layer_list(layers: &[usize], num_layers: usize) -> String {
    let names: Vec<String> = layers
        .iter()
        .map(|&l| if l + 1 == num_layers { format!("{l} (top)") } else { l.to_string() })
        .collect();
    match names.len() {
        1 => format!("layer {}", names[0]),
        _ => format!("layers {}", names.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> TrainConfig {
        let text = format!("task = \"copa\"\ntrain_file = \"t\"\nout = \"o\"\n{extra}");
        TrainConfig::resolve(None, toml::from_str(&text).unwrap()).unwrap()
    }

    #[test]
    fn gu_plan_lists_every_event_and_fits() {
        let plan = Plan::new(&config("schedule = \"gu\"\nunfreeze_every = 5\nepochs = 2\nbatch_size = 10"), 4, Some(100));
        assert_eq!(plan.total_steps, Some(20));
        let steps: Vec<usize> = plan.events.iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, vec![0, 5, 10, 15]);
        assert_eq!(plan.events[0].1, "unfreeze layer 3 (top)");
        assert!(plan.warnings.is_empty());
    }

    #[test]
    fn a_schedule_longer_than_the_run_is_a_warning() {
        // k = 50 with the 390 updates of 30 epochs at batch 32 (the old COPA config): events
        // at 400, 450, 500 and 550 never happen, so layers 3..0 never train.
        let c = config("schedule = \"fun\"\nunfreeze_every = 50\nepochs = 30\nbatch_size = 32");
        let plan = Plan::new(&c, 12, Some(400));
        assert_eq!(plan.total_steps, Some(390));
        assert_eq!(plan.warnings.len(), 1);
        assert!(plan.warnings[0].contains("4 of 12"), "{}", plan.warnings[0]);
        assert!(plan.render().contains("step     400: unfreeze 1 chosen by tr(F)  (after the last update: never happens)"));
    }

    #[test]
    fn unknown_size_plans_without_a_total() {
        let plan = Plan::new(&config("schedule = \"lpft\"\nunfreeze_every = 800"), 12, None);
        assert_eq!(plan.events, vec![(800, "unfreeze all remaining (layers 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 (top))".to_string())]);
        assert!(plan.render().contains("total updates: unknown"));
    }
}
