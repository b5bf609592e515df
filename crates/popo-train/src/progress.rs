//! Progress of a training run on stderr: a bar on a terminal, a line per step otherwise.

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
        let bar = (std::io::stderr().is_terminal() && !quiet).then(|| {
            let pb = indicatif::ProgressBar::new(total);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            pb.set_position(done);
            pb
        });
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
        let line = format!(
            "step {}/{}  reward {:.3}  pos {:.3}  loss {:.4}  tok/s {:.0}/{:.0}  {:.1}s",
            m.step,
            self.total,
            get(names::REWARD_MEAN),
            get(names::POSITIVE_RATIO),
            get(names::LOSS),
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
                let done = m.step.saturating_sub(self.first).max(1) as f64;
                let eta = self.start.elapsed().as_secs_f64() / done
                    * self.total.saturating_sub(m.step) as f64;
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
