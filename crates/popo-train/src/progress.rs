//! Progress of a training run on stderr: a bar on a terminal, a line per step otherwise; and the
//! wall time of each phase of a step (`Clock`, the `perf/*` metrics).

use crate::metrics::{names, StepMetrics};
use std::io::IsTerminal;
use std::time::Instant;

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    /// The step the run (re)started at, for the ETA.
    first: u64,
    quiet: bool,
    start: Instant,
}

impl Progress {
    pub fn new(total: u64, done: u64, quiet: bool) -> Self {
        let bar = (std::io::stderr().is_terminal() && !quiet)
            .then(|| resumed_bar(total, done, indicatif::ProgressDrawTarget::stderr()));
        Self {
            bar,
            total,
            first: done,
            quiet,
            start: Instant::now(),
        }
    }

    pub fn step(&mut self, m: &StepMetrics) {
        let get = |k| m.get(k).unwrap_or(f64::NAN);
        // A step with nothing to train on (POPO with no positive outside `entropy_scope = all`,
        // GRPO with only flat groups) has no loss.
        let loss = m
            .get(names::LOSS)
            .map_or_else(|| "none".to_string(), |l| format!("{l:.4}"));
        let line = format!(
            "step {}/{}  reward {:.3}  pos {:.3}  loss {loss}  tok/s {:.0}/{:.0}  {:.1}s",
            m.step,
            self.total,
            get(names::REWARD_MEAN),
            get(names::POSITIVE_RATIO),
            get(names::ROLLOUT_TOKENS_PER_S),
            get(names::TRAIN_TOKENS_PER_S),
            get(names::TIME_STEP)
        );
        match &self.bar {
            Some(pb) => {
                pb.set_position(m.step);
                pb.set_message(line);
            }
            None if !self.quiet => {
                let elapsed = self.start.elapsed().as_secs_f64();
                let eta = eta_secs(elapsed, self.first, m.step, self.total);
                eprintln!("{line}  eta {eta:.0}s");
            }
            None => {}
        }
    }

    pub fn finish(self) {
        if let Some(pb) = self.bar {
            pb.finish_and_clear();
        }
    }
}

/// Wall time per phase of a step, for the `perf/*` metrics.
pub struct Clock {
    start: Instant,
    last: Instant,
    laps: Vec<(&'static str, f64)>,
}

impl Clock {
    pub fn start() -> Self {
        let now = Instant::now();
        Self {
            start: now,
            last: now,
            laps: Vec::new(),
        }
    }

    /// Ends the phase `name` (a `perf/time_*` metric).
    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.laps.push((name, (now - self.last).as_secs_f64()));
        self.last = now;
    }

    /// `trained`: completion tokens back-propagated, and positions through the training forward.
    pub fn log(&self, m: &mut StepMetrics, rollout_tokens: usize, trained: (usize, usize)) {
        let (train_tokens, seq_tokens) = trained;
        let time = |n| self.laps.iter().find(|(k, _)| *k == n).map_or(0.0, |l| l.1);
        let per_s = |tokens: usize, t: f64| tokens as f64 / t.max(1e-9);
        m.set(
            names::ROLLOUT_TOKENS_PER_S,
            per_s(rollout_tokens, time(names::TIME_ROLLOUT)),
        );
        m.set(
            names::TRAIN_TOKENS_PER_S,
            per_s(train_tokens, time(names::TIME_TRAIN)),
        );
        m.set(
            names::TRAIN_SEQ_TOKENS_PER_S,
            per_s(seq_tokens, time(names::TIME_TRAIN)),
        );
        m.set(names::TOKENS_BACKPROP, train_tokens as f64);
        m.set_all(&self.laps);
        m.set(names::TIME_STEP, self.start.elapsed().as_secs_f64());
    }
}

/// A bar at step `done` of `total`. The jump from 0 to `done` (a resumed run) is no progress:
/// indicatif would read it as steps done in no time and show an ETA of seconds that then grows,
/// so the estimate starts after it.
fn resumed_bar(
    total: u64,
    done: u64,
    target: indicatif::ProgressDrawTarget,
) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::with_draw_target(Some(total), target);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_position(done);
    pb.tick();
    pb.reset_eta();
    pb
}

/// Seconds left at `step` of `total`, from the pace of the steps since the run (re)started at
/// step `first`, `elapsed` seconds ago.
fn eta_secs(elapsed: f64, first: u64, step: u64, total: u64) -> f64 {
    let done = step.saturating_sub(first).max(1) as f64;
    elapsed / done * total.saturating_sub(step) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_of_a_resumed_run_counts_its_own_steps() {
        // Resumed at step 150 of 300: 10 steps in 20 s leave 140 steps of 2 s.
        assert_eq!(eta_secs(20.0, 150, 160, 300), 280.0);
        let pb = resumed_bar(300, 150, indicatif::ProgressDrawTarget::hidden());
        std::thread::sleep(std::time::Duration::from_millis(50));
        pb.set_position(151);
        pb.tick();
        // One step in >= 50 ms: >= 7 s for the 149 left (before the fix: well under a second).
        let eta = pb.eta().as_secs_f64();
        assert!(eta > 5.0, "eta {eta} s");
    }
}
