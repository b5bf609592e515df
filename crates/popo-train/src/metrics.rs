//! The run directory's logs: `metrics.jsonl` (one object per step), `samples.jsonl` (a few
//! completions per step) and TensorBoard event files, plus the reader that plots and the
//! experiment runner use.
//!
//! `metrics.jsonl` lines look like `{"step": 3, "train/reward_mean": 0.25, ...}`. Names are stable
//! (see [`names`]); a value that is not finite is written as `null`, because JSON has no NaN.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::tensorboard::EventWriter;

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const SAMPLES_FILE: &str = "samples.jsonl";
pub const TENSORBOARD_DIR: &str = "tensorboard";

/// Stable metric names (docs/algorithms.md, "Diagnostics"). Plots, the experiment report and tests
/// refer to these constants, so renaming one is a breaking change.
pub mod names {
    pub const STEP: &str = "step";
    // rewards and groups
    pub const REWARD_MEAN: &str = "train/reward_mean";
    pub const POSITIVE_RATIO: &str = "train/positive_ratio";
    pub const GROUPS_NO_POSITIVE: &str = "train/groups_no_positive";
    pub const GROUPS_ALL_POSITIVE: &str = "train/groups_all_positive";
    // completions
    pub const RESPONSE_LEN_MEAN: &str = "train/response_len_mean";
    pub const RESPONSE_LEN_MAX: &str = "train/response_len_max";
    pub const TRUNCATED_RATIO: &str = "train/truncated_ratio";
    // losses and policy
    pub const ENTROPY: &str = "train/entropy";
    pub const LOSS: &str = "loss/total";
    pub const LOSS_NLL: &str = "loss/nll";
    pub const LOSS_SIM: &str = "loss/sim";
    pub const LOSS_ENT: &str = "loss/ent";
    pub const LOSS_PG: &str = "loss/pg";
    pub const LOSS_KL: &str = "loss/kl";
    pub const SIM_COS: &str = "popo/sim_cos";
    pub const KL_TARGET: &str = "popo/kl_target";
    pub const WEIGHT_MAX: &str = "popo/weight_max";
    pub const ESS: &str = "popo/ess";
    /// 1 for a step with no positive completion (what POPO does then: `algo.entropy_scope`).
    pub const NO_POSITIVE_STEP: &str = "popo/no_positive_step";
    pub const CLIP_RATIO: &str = "train/clip_ratio";
    // optimisation
    pub const GRAD_NORM: &str = "optim/grad_norm";
    pub const LR: &str = "optim/lr";
    pub const TAU: &str = "popo/tau";
    pub const SKIPPED_STEPS: &str = "optim/skipped_steps";
    /// f16 only: the dynamic loss scale after the step.
    pub const LOSS_SCALE: &str = "optim/loss_scale";
    // throughput
    pub const ROLLOUT_TOKENS_PER_S: &str = "perf/rollout_tokens_per_s";
    pub const TRAIN_TOKENS_PER_S: &str = "perf/train_tokens_per_s";
    pub const TIME_ROLLOUT: &str = "perf/time_rollout_s";
    /// `Algorithm::prepare`: the no-graph old / reference / target forwards.
    pub const TIME_PREPARE: &str = "perf/time_prepare_s";
    pub const TIME_TRAIN: &str = "perf/time_train_s";
    pub const TIME_STEP: &str = "perf/time_step_s";
    pub const TOKENS_BACKPROP: &str = "perf/tokens_backprop";
    /// The training phase's positions (rows x padded length, prompts included) per second: the
    /// figure `popo bench` reports for an update.
    pub const TRAIN_SEQ_TOKENS_PER_S: &str = "perf/train_seq_tokens_per_s";
    // DAPO dynamic sampling
    /// Rollouts from another engine (vLLM): |log pi_engine - log pi_old| per completion token,
    /// its mean and max over the step; the truncated importance weights' mean and the share of
    /// tokens their cap truncated; the sync probe's difference (the worst server's mean) and the
    /// sync's time.
    pub const ENGINE_LOGPROB_ABS_DIFF: &str = "rollout/engine_logprob_abs_diff";
    pub const ENGINE_LOGPROB_ABS_DIFF_MAX: &str = "rollout/engine_logprob_abs_diff_max";
    pub const TIS_WEIGHT_MEAN: &str = "rollout/tis_weight_mean";
    pub const TIS_CLIP_RATIO: &str = "rollout/tis_clip_ratio";
    pub const SYNC_CHECK_ABS_DIFF: &str = "rollout/sync_check_abs_diff";
    pub const TIME_SYNC: &str = "perf/time_sync_s";
    pub const DAPO_SAMPLING_TRIES: &str = "dapo/sampling_tries";
    pub const DAPO_GROUPS_KEPT: &str = "dapo/groups_kept";
    // implicit-negative probe
    pub const DELTA_NEG: &str = "probe/delta_neg";
    pub const DELTA_POS: &str = "probe/delta_pos";
    // evaluation
    pub const EVAL_ACCURACY: &str = "eval/accuracy";
    /// End of a run (`run.final_pass_at_k_samples`): `eval/pass@1`, `eval/pass@2`, ...
    pub const PASS_AT_PREFIX: &str = "eval/pass@";
    /// End of a run: `eval/avg@n`, the mean share of correct samples.
    pub const AVG_AT_PREFIX: &str = "eval/avg@";

    pub fn pass_at(k: usize) -> String {
        format!("{PASS_AT_PREFIX}{k}")
    }

    pub fn avg_at(n: usize) -> String {
        format!("{AVG_AT_PREFIX}{n}")
    }
}

/// One step's scalars, in insertion order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepMetrics {
    pub step: u64,
    pub values: Vec<(String, f64)>,
}

impl StepMetrics {
    pub fn new(step: u64) -> Self {
        StepMetrics {
            step,
            values: Vec::new(),
        }
    }

    /// Adds or replaces a value.
    pub fn set(&mut self, name: &str, value: f64) -> &mut Self {
        match self.values.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.values.push((name.to_string(), value)),
        }
        self
    }

    /// Adds or replaces every `(name, value)` (an algorithm's or an update's stats).
    pub fn set_all(&mut self, stats: &[(&str, f64)]) {
        for (k, v) in stats {
            self.set(k, *v);
        }
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    fn to_json_line(&self) -> Result<String> {
        let mut obj = serde_json::Map::new();
        obj.insert(names::STEP.into(), self.step.into());
        for (name, v) in &self.values {
            if name == names::STEP {
                bail!("metric name `step` is reserved");
            }
            // from_f64 gives None for NaN/Inf: they become null.
            let value = serde_json::Number::from_f64(*v)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null);
            obj.insert(name.clone(), value);
        }
        Ok(serde_json::to_string(&serde_json::Value::Object(obj))?)
    }
}

/// Appends JSON lines to a file, flushing after each one so a crash loses at most a line.
struct JsonlAppender {
    out: BufWriter<File>,
    path: PathBuf,
}

impl JsonlAppender {
    fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(JsonlAppender {
            out: BufWriter::new(file),
            path: path.to_path_buf(),
        })
    }

    fn write_line(&mut self, line: &str) -> Result<()> {
        writeln!(self.out, "{line}")
            .and_then(|_| self.out.flush())
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Keeps only the lines of a JSONL log whose `step` is at most `last_step`, so that a resumed
/// run continues a log identical to the one an uninterrupted run would have written.
pub fn truncate_after_step(path: &Path, last_step: u64) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    // Bytes, not text: a line torn by a crash may end inside a multi-byte character.
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut kept = Vec::new();
    for line in bytes.split(|&b| b == b'\n') {
        let step = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get(names::STEP).and_then(|s| s.as_u64()));
        // A torn last line (crash mid-write) has no step and is dropped.
        if let Some(s) = step {
            if s <= last_step {
                kept.extend_from_slice(line);
                kept.push(b'\n');
            }
        }
    }
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, kept).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// One sampled completion, as logged in a run's `samples.jsonl` (and by `popo eval`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SampleRecord {
    pub step: u64,
    pub prompt_index: usize,
    pub sample_index: usize,
    pub prompt: String,
    pub completion: String,
    pub gold: String,
    pub extracted: Option<String>,
    pub reward: f64,
    pub correct: bool,
    pub num_tokens: usize,
    pub truncated: bool,
}

/// Writes a run's `metrics.jsonl`, `samples.jsonl` and TensorBoard events.
pub struct RunLogger {
    metrics: JsonlAppender,
    samples: JsonlAppender,
    tensorboard: Option<EventWriter>,
}

impl RunLogger {
    /// Starts the logs of a fresh run in `run_dir` (appending if files exist).
    pub fn create(run_dir: &Path, tensorboard: bool) -> Result<Self> {
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("creating run dir {}", run_dir.display()))?;
        Ok(RunLogger {
            metrics: JsonlAppender::open(&run_dir.join(METRICS_FILE))?,
            samples: JsonlAppender::open(&run_dir.join(SAMPLES_FILE))?,
            tensorboard: if tensorboard {
                Some(EventWriter::create(&run_dir.join(TENSORBOARD_DIR))?)
            } else {
                None
            },
        })
    }

    /// Continues the logs of a run resumed from a checkpoint taken after `last_step`:
    /// records of later steps (written before the interruption) are dropped first.
    pub fn resume(run_dir: &Path, last_step: u64, tensorboard: bool) -> Result<Self> {
        truncate_after_step(&run_dir.join(METRICS_FILE), last_step)?;
        truncate_after_step(&run_dir.join(SAMPLES_FILE), last_step)?;
        Self::create(run_dir, tensorboard)
    }

    pub fn log(&mut self, m: &StepMetrics) -> Result<()> {
        self.metrics.write_line(&m.to_json_line()?)?;
        if let Some(tb) = &mut self.tensorboard {
            tb.add_scalars(m.step as i64, &m.values)?;
            tb.flush()?;
        }
        Ok(())
    }

    pub fn log_samples(&mut self, samples: &[SampleRecord]) -> Result<()> {
        for s in samples {
            self.samples.write_line(&serde_json::to_string(s)?)?;
        }
        Ok(())
    }
}

/// One line of `metrics.jsonl` read back: `None` for a `null` value.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRecord {
    pub step: u64,
    pub values: BTreeMap<String, Option<f64>>,
}

/// Reads a `metrics.jsonl` (a file, or a run directory holding one).
/// A line that is not a JSON object with an integer `step` is an error naming file:line;
/// non-numeric fields are ignored.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricRecord>> {
    let path = if path.is_dir() {
        path.join(METRICS_FILE)
    } else {
        path.to_path_buf()
    };
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: read error", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not valid JSON", path.display(), i + 1))?;
        let obj = v
            .as_object()
            .with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))?;
        let step = obj
            .get(names::STEP)
            .and_then(|s| s.as_u64())
            .with_context(|| {
                format!(
                    "{}:{}: missing non-negative integer `step`",
                    path.display(),
                    i + 1
                )
            })?;
        let mut values = BTreeMap::new();
        for (k, val) in obj {
            if k == names::STEP {
                continue;
            }
            match val {
                serde_json::Value::Number(n) => {
                    values.insert(k.clone(), n.as_f64());
                }
                serde_json::Value::Null => {
                    values.insert(k.clone(), None);
                }
                _ => {}
            }
        }
        out.push(MetricRecord { step, values });
    }
    Ok(out)
}

/// The `(step, value)` points of one metric, skipping records without a finite value.
pub fn series(records: &[MetricRecord], name: &str) -> Vec<(u64, f64)> {
    records
        .iter()
        .filter_map(|r| match r.values.get(name) {
            Some(Some(v)) if v.is_finite() => Some((r.step, *v)),
            _ => None,
        })
        .collect()
}

/// Every metric name present in the records, sorted.
pub fn metric_names(records: &[MetricRecord]) -> Vec<String> {
    let mut set = std::collections::BTreeSet::new();
    for r in records {
        set.extend(r.values.keys().cloned());
    }
    set.into_iter().collect()
}

/// Reads a `samples.jsonl` written by [`RunLogger`].
pub fn read_samples(path: &Path) -> Result<Vec<SampleRecord>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a sample record", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensorboard::{event_files, read_events};

    fn sample(step: u64) -> SampleRecord {
        SampleRecord {
            step,
            prompt_index: 0,
            sample_index: 1,
            prompt: "Compute 1+1.".into(),
            completion: "1+1=2. \\boxed{2}".into(),
            gold: "2".into(),
            extracted: Some("2".into()),
            reward: 1.0,
            correct: true,
            num_tokens: 16,
            truncated: false,
        }
    }

    #[test]
    fn metrics_round_trip_with_stable_names_and_null_for_nan() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RunLogger::create(dir.path(), true).unwrap();
        for step in 1..=3u64 {
            let mut m = StepMetrics::new(step);
            m.set(names::REWARD_MEAN, step as f64 / 4.0)
                .set(names::ESS, 2.5)
                .set(names::DELTA_NEG, if step == 2 { f64::NAN } else { -0.1 });
            m.set(names::ESS, 3.5); // replaces, keeps position
            log.log(&m).unwrap();
        }
        log.log_samples(&[sample(1), sample(2)]).unwrap();
        drop(log);

        let text = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            r#"{"step":1,"train/reward_mean":0.25,"popo/ess":3.5,"probe/delta_neg":-0.1}"#
        );
        let recs = read_metrics(dir.path()).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].values["probe/delta_neg"], None);
        assert_eq!(series(&recs, names::DELTA_NEG), vec![(1, -0.1), (3, -0.1)]);
        assert_eq!(
            series(&recs, names::REWARD_MEAN),
            vec![(1, 0.25), (2, 0.5), (3, 0.75)]
        );
        assert_eq!(
            metric_names(&recs),
            vec!["popo/ess", "probe/delta_neg", "train/reward_mean"]
        );
        assert_eq!(
            read_samples(&dir.path().join(SAMPLES_FILE)).unwrap(),
            vec![sample(1), sample(2)]
        );

        // The same scalars went to TensorBoard.
        let files = event_files(&dir.path().join(TENSORBOARD_DIR)).unwrap();
        let events = read_events(&files[0]).unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(events[3].step, 3);
        assert_eq!(events[3].scalars[0], ("train/reward_mean".into(), 0.75));
    }

    #[test]
    fn resume_drops_records_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RunLogger::create(dir.path(), false).unwrap();
        for step in 1..=5u64 {
            let mut m = StepMetrics::new(step);
            m.set(names::LR, step as f64);
            log.log(&m).unwrap();
            log.log_samples(&[sample(step)]).unwrap();
        }
        drop(log);
        // A torn final line from a crash.
        let p = dir.path().join(METRICS_FILE);
        let mut t = std::fs::read_to_string(&p).unwrap();
        t.push_str("{\"step\":6,\"optim/l");
        std::fs::write(&p, t).unwrap();

        let mut log = RunLogger::resume(dir.path(), 3, false).unwrap();
        let mut m = StepMetrics::new(4);
        m.set(names::LR, 40.0);
        log.log(&m).unwrap();
        drop(log);
        let recs = read_metrics(dir.path()).unwrap();
        assert_eq!(
            series(&recs, names::LR),
            vec![(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]
        );
        let samples = read_samples(&dir.path().join(SAMPLES_FILE)).unwrap();
        assert_eq!(
            samples.iter().map(|s| s.step).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }

    #[test]
    fn bad_lines_are_errors_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        std::fs::write(&p, "{\"step\":1,\"a\":1}\n\n{\"a\":2}\n").unwrap();
        let err = format!("{:#}", read_metrics(&p).unwrap_err());
        assert!(err.contains("m.jsonl:3") && err.contains("step"), "{err}");
        std::fs::write(&p, "{\"step\":1}\nnot json\n").unwrap();
        let err = format!("{:#}", read_metrics(&p).unwrap_err());
        assert!(err.contains("m.jsonl:2"), "{err}");
        let mut m = StepMetrics::new(1);
        m.set("step", 1.0);
        assert!(m.to_json_line().is_err());
    }
}
