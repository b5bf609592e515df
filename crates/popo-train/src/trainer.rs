//! The training loop. One straight pass per step (`Trainer::step`):
//! prompts -> rollouts and rewards (`rollout::Actor`, no graph) -> probe hold-out ->
//! `Algorithm::prepare` (no-graph forwards) -> per micro-batch: forward, loss, backward ->
//! clip + AdamW (`learner::Learner`) -> `Algorithm::after_step` (EMA) -> metrics.
//! Construction (`setup`, `sft`) and checkpoints live beside it; model internals stay behind
//! `lm::LmPolicy` and `Policy`.

use crate::algo::{self, Algorithm, PrepareCtx, Prepared};
use crate::checkpoint::{self, TrainerState};
use crate::config::TrainConfig;
use crate::data::{DataCursor, Prompt, Shuffler, SplitMix64};
use crate::learner::{Learner, MicroLoss, Outcome};
use crate::lm::{LmPolicy, Tokenizer};
use crate::metrics::{names, RunLogger, StepMetrics};
use crate::optim::lr_at;
use crate::parallel::micro_batch_width;
use crate::params::Params;
use crate::policy::Policy;
use crate::probe::Probe;
use crate::reward::{self, Reward};
use crate::rollout::Actor;
use crate::setup::{setup, Setup};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Independent random streams, all derived from (seed, step) so that resuming is exact.
#[derive(Clone, Copy)]
enum Stream {
    Rollout = 1,
    Noise = 2,
    Probe = 3,
    Refill = 4,
}

fn stream_seed(seed: u64, step: u64, stream: Stream, extra: u64) -> u64 {
    let mut s = SplitMix64(
        seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((stream as u64) << 56) ^ (extra << 40),
    );
    s.next_u64()
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub steps_done: u64,
    pub eval_before: Option<f64>,
    pub eval_after: Option<f64>,
    pub interrupted: bool,
    pub wall_s: f64,
}

pub struct Trainer {
    cfg: TrainConfig,
    run_dir: PathBuf,
    device: Device,
    policy: LmPolicy,
    tokenizer: Tokenizer,
    pad_id: u32,
    stop_ids: Vec<u32>,
    generation_config: Option<serde_json::Value>,
    algo: Box<dyn Algorithm>,
    /// Policy and predictor weights (with f32 masters in mixed precision) and AdamW.
    learner: Learner,
    reward: Box<dyn Reward>,
    train: Vec<Prompt>,
    eval: Vec<Prompt>,
    shuffler: Shuffler,
    state: TrainerState,
    logger: RunLogger,
    stop: Arc<AtomicBool>,
    quiet: bool,
    /// Micro-batches run at once (`run.cpu_parallel`), fixed when the trainer is built.
    width: usize,
}

impl Trainer {
    /// A fresh run: writes config.toml, runs the SFT warm-up if configured, measures held-out
    /// accuracy, and builds the algorithm and optimizer.
    pub fn new(cfg: TrainConfig, stop: Arc<AtomicBool>) -> Result<Self> {
        let device = crate::lm::device(&cfg.run.device)?;
        let run_dir = if cfg.run.out_dir.is_empty() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            PathBuf::from(format!("runs/{}-{t}", cfg.preset))
        } else {
            PathBuf::from(&cfg.run.out_dir)
        };
        if checkpoint::list(&run_dir)?.last().is_some() {
            bail!(
                "{} already holds checkpoints: use --resume {0} or another run.out_dir",
                run_dir.display()
            );
        }
        // A run that died before its first checkpoint still has logs worth keeping.
        if run_dir.join("metrics.jsonl").exists() {
            bail!(
                "{} already holds a run (metrics.jsonl): choose another run.out_dir",
                run_dir.display()
            );
        }
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        cfg.save(&run_dir.join("config.toml"))?;
        let s = setup(&cfg, &device, None)?;
        let logger = RunLogger::create(&run_dir, cfg.run.tensorboard)?;
        let mut t = Self::assemble(cfg, run_dir, device, s, logger, stop, true)?;
        if !t.eval.is_empty() {
            let acc = t.actor().evaluate(&t.eval)?;
            t.state.eval_before = Some(acc);
            t.log_eval(acc)?;
        }
        if t.cfg.sft.steps > 0 {
            // step-000000: the warmed-up policy, reusable as `--model` and resumable.
            t.save_checkpoint()?;
        }
        Ok(t)
    }

    /// The config of the run that `resume(dir)` would continue.
    pub fn resumed_config(dir: &Path) -> Result<TrainConfig> {
        let (run_dir, _) = checkpoint::resolve_resume(dir)?;
        TrainConfig::from_file(&run_dir.join("config.toml"))
    }

    /// Continues a run from `dir` (a run directory or one of its checkpoints).
    pub fn resume(dir: &Path, stop: Arc<AtomicBool>) -> Result<Self> {
        let (run_dir, ck) = checkpoint::resolve_resume(dir)?;
        let cfg = TrainConfig::from_file(&run_dir.join("config.toml"))?;
        let device = crate::lm::device(&cfg.run.device)?;
        let s = setup(&cfg, &device, Some(&ck))?;
        let state = checkpoint::load_state(&ck)?;
        let logger = RunLogger::resume(&run_dir, state.step, cfg.run.tensorboard)?;
        let mut t = Self::assemble(cfg, run_dir, device, s, logger, stop, false)?;
        let algo_state = checkpoint::load_tensors(&ck.join(checkpoint::ALGO_FILE), &t.device)?;
        t.algo.load_state(&algo_state)?;
        let opt_state = checkpoint::load_tensors(&ck.join(checkpoint::OPTIMIZER_FILE), &t.device)?;
        t.learner.load_state(&opt_state, state.optimizer_updates)?;
        t.learner.loss_scale = state.loss_scale.clone();
        t.shuffler = Shuffler::from_cursor(t.train.len(), state.data_cursor)?;
        t.state = state;
        tracing::info!("resumed {} at step {}", ck.display(), t.state.step);
        Ok(t)
    }

    /// Builds everything once, in order: the policy's parameters (with f32 masters in mixed
    /// precision), the SFT warm-up when `warm_up` (a fresh run), then the algorithm (its target /
    /// reference forked from the warmed-up policy) and the learner over policy + predictor.
    fn assemble(
        cfg: TrainConfig,
        run_dir: PathBuf,
        device: Device,
        s: Setup,
        logger: RunLogger,
        stop: Arc<AtomicBool>,
        warm_up: bool,
    ) -> Result<Self> {
        let width = micro_batch_width(cfg.run.cpu_parallel, &device);
        if width > 1 {
            tracing::info!("{width} micro-batches at a time, one core each (run.cpu_parallel)");
        }
        let dtype = s.policy.dtype();
        let keep_master = cfg.run.master_weights.keeps_master();
        if !keep_master && dtype != DType::F32 {
            tracing::warn!(
                "run.master_weights = \"none\" with {dtype:?} weights: updates below half a \
                 {dtype:?} ULP of a weight are rounded away (at lr 1e-6, most of them)"
            );
        }
        let mut params = Params::new(s.policy.named_vars(), keep_master)?;
        if warm_up {
            let ctx = crate::sft::SftCtx {
                cfg: &cfg,
                policy: &s.policy,
                tokenizer: &s.tokenizer,
                pad_id: s.pad_id,
                device: &device,
                width,
            };
            params = crate::sft::warm_up(&ctx, params)?;
        }
        let algo = algo::build(&cfg, &s.policy, &device)?;
        params.extend(algo.extra_vars())?;
        let learner = Learner::new(params, &cfg.optim, width, dtype)?;
        let reward = reward::from_config(&cfg)?;
        let shuffler = if cfg.data.shuffle {
            Shuffler::new(s.train.len(), cfg.run.seed)?
        } else {
            let start = DataCursor {
                seed: cfg.run.seed,
                epoch: 0,
                index: 0,
            };
            Shuffler::from_cursor(s.train.len(), start)?
        };
        let state = TrainerState {
            step: 0,
            optimizer_updates: 0,
            data_cursor: shuffler.cursor(),
            rng_seed: cfg.run.seed,
            nonfinite_in_row: 0,
            skipped_steps: 0,
            eval_before: None,
            loss_scale: learner.loss_scale.clone(),
        };
        Ok(Self {
            quiet: false,
            width,
            cfg,
            run_dir,
            device,
            policy: s.policy,
            tokenizer: s.tokenizer,
            pad_id: s.pad_id,
            stop_ids: s.stop_ids,
            generation_config: s.generation_config,
            algo,
            learner,
            reward,
            train: s.train,
            eval: s.eval,
            shuffler,
            state,
            logger,
            stop,
        })
    }

    /// Replaces the reward (the default is the math verifier).
    pub fn set_reward(&mut self, reward: Box<dyn Reward>) {
        self.reward = reward;
    }

    /// No progress output (tests).
    pub fn set_quiet(&mut self, quiet: bool) {
        self.quiet = quiet;
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn policy(&self) -> &LmPolicy {
        &self.policy
    }

    fn actor(&self) -> Actor<'_> {
        Actor {
            cfg: &self.cfg,
            policy: &self.policy,
            tokenizer: &self.tokenizer,
            reward: self.reward.as_ref(),
            stop_ids: &self.stop_ids,
        }
    }

    /// Greedy accuracy on the held-out prompts.
    pub fn evaluate(&self) -> Result<f64> {
        self.actor().evaluate(&self.eval)
    }

    fn log_eval(&mut self, acc: f64) -> Result<()> {
        let mut m = StepMetrics::new(self.state.step);
        m.set(names::EVAL_ACCURACY, acc);
        self.logger.log(&m)
    }

    /// One rollout step and its optimizer update(s). Returns the step's metrics.
    pub fn step(&mut self) -> Result<StepMetrics> {
        let step = self.state.step + 1;
        let seed = self.state.rng_seed;
        let mut m = StepMetrics::new(step);
        let t_step = Instant::now();

        // 1-3. prompts -> rollouts -> rewards (DAPO: refill groups whose rewards are all equal).
        let t0 = Instant::now();
        let actor = Actor {
            cfg: &self.cfg,
            policy: &self.policy,
            tokenizer: &self.tokenizer,
            reward: self.reward.as_ref(),
            stop_ids: &self.stop_ids,
        };
        let mut sampled = actor.sample_step(
            &self.train,
            &mut self.shuffler,
            step,
            stream_seed(seed, step, Stream::Rollout, 0),
            |k| stream_seed(seed, step, Stream::Refill, k),
        )?;
        let time_rollout = t0.elapsed().as_secs_f64();
        sampled.stats.log(&mut m);
        if let Some((tries, kept)) = sampled.refill {
            m.set(names::DAPO_SAMPLING_TRIES, tries as f64);
            m.set(names::DAPO_GROUPS_KEPT, kept as f64);
        }
        let batch = &mut sampled.batch;
        let ctx = PrepareCtx {
            policy: &self.policy,
            temperature: self.cfg.rollout.temperature,
            chunk: self.cfg.optim.micro_batch_size,
            width: self.width,
            pad_id: self.pad_id,
            device: &self.device,
            seed: stream_seed(seed, step, Stream::Noise, 0),
            max_completion_len: self.cfg.rollout.max_completion_len,
        };

        // Implicit-negative probe: hold some negatives (and positives) out of training.
        let run = &self.cfg.run;
        let probe = if run.probe_every > 0 && step.is_multiple_of(run.probe_every as u64) {
            let probe_seed = stream_seed(seed, step, Stream::Probe, 0);
            let threshold = self.cfg.reward.positive_threshold;
            Some(Probe::hold_out(batch, run.probe_size, threshold, probe_seed, &ctx)?)
        } else {
            None
        };

        // 4. prepare (no-graph forwards: old / reference / target).
        let t1 = Instant::now();
        let prep = if batch.is_empty() {
            Prepared::default()
        } else {
            self.algo.prepare(batch, &ctx)?
        };
        let time_prepare = t1.elapsed().as_secs_f64();
        for (k, v) in &prep.stats {
            m.set(k, *v);
        }

        // 5-6. micro-batched loss + backward, clip, AdamW, after_step; num_iterations updates.
        let t2 = Instant::now();
        let rows = prep.included();
        let chunks: Vec<&[usize]> = rows.chunks(self.cfg.optim.micro_batch_size).collect();
        let mut train_tokens = 0;
        for _ in 0..self.cfg.algo.num_iterations {
            if rows.is_empty() {
                break;
            }
            let (policy, algo, prep, batch) = (&self.policy, &*self.algo, &prep, &*batch);
            let (temp, pad, dev) = (ctx.temperature, self.pad_id, &self.device);
            let micro = |k: usize| -> Result<MicroLoss> {
                let mb = batch.seq_batch(chunks[k], pad, dev)?;
                let l = algo.loss(&policy.forward(&mb, temp)?, &mb, prep, chunks[k])?;
                let tokens = mb.completion_lens.iter().sum();
                Ok(MicroLoss {
                    loss: l.loss,
                    stats: l.stats,
                    tokens,
                })
            };
            let total = self.cfg.run.steps * self.cfg.algo.num_iterations;
            let lr = lr_at(&self.cfg.optim, self.state.optimizer_updates as usize, total);
            let u = self.learner.update(chunks.len(), lr, micro)?;
            train_tokens += u.tokens;
            for (k, v) in &u.stats {
                m.set(k, *v);
            }
            m.set(names::GRAD_NORM, u.grad_norm);
            if let Some(ls) = &self.learner.loss_scale {
                m.set(names::LOSS_SCALE, ls.scale);
            }
            if u.outcome != Outcome::Applied {
                self.state.skipped_steps += 1;
                if u.outcome == Outcome::NonFinite {
                    self.state.nonfinite_in_row += 1;
                    tracing::warn!(
                        "step {step}: non-finite loss or gradient; update skipped ({} in a row)",
                        self.state.nonfinite_in_row
                    );
                }
                break;
            }
            self.state.nonfinite_in_row = 0;
            self.state.optimizer_updates += 1;
            m.set(names::LR, lr);
            for (k, v) in self.algo.after_step(&self.learner.params.full_named()?)? {
                m.set(k, v);
            }
        }
        let time_train = t2.elapsed().as_secs_f64();
        if let Some(p) = probe {
            p.finish(&self.policy, &mut m)?;
        }

        // 7. metrics.
        m.set(names::SKIPPED_STEPS, self.state.skipped_steps as f64);
        let per_s = |n: usize, t: f64| n as f64 / t.max(1e-9);
        m.set(names::ROLLOUT_TOKENS_PER_S, per_s(sampled.tokens, time_rollout));
        m.set(names::TRAIN_TOKENS_PER_S, per_s(train_tokens, time_train));
        m.set(names::TOKENS_BACKPROP, train_tokens as f64);
        m.set(names::TIME_ROLLOUT, time_rollout);
        m.set(names::TIME_PREPARE, time_prepare);
        m.set(names::TIME_TRAIN, time_train);
        m.set(names::TIME_STEP, t_step.elapsed().as_secs_f64());
        self.state.step = step;
        self.state.data_cursor = self.shuffler.cursor();
        self.state.loss_scale = self.learner.loss_scale.clone();
        self.logger.log(&m)?;
        let n = self.cfg.run.samples_per_step.min(sampled.records.len());
        self.logger.log_samples(&sampled.records[..n])?;
        let in_row = self.state.nonfinite_in_row;
        if in_row > 0 && in_row >= self.cfg.run.max_nonfinite_in_row as u64 {
            let ck = self.save_checkpoint()?;
            bail!(
                "stopping at step {step}: {} consecutive steps with NaN/Inf loss or gradients \
                 (run.max_nonfinite_in_row); checkpoint written to {}",
                self.state.nonfinite_in_row,
                ck.display()
            );
        }
        Ok(m)
    }

    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        let save_dtype = match self.cfg.model.save_dtype.as_str() {
            "same" => self.policy.dtype(),
            s => crate::lm::dtype(s)?,
        };
        // The HF weights are the full-precision ones (the f32 masters in mixed precision), rounded
        // once to save_dtype: `save_dtype = "f32"` after bf16 training keeps every update.
        let policy_names: HashSet<String> = self
            .policy
            .named_vars()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let weights: Vec<_> = self
            .learner
            .params
            .full_named()?
            .into_iter()
            .filter(|(n, _)| policy_names.contains(n))
            .collect();
        let (policy, tok, gen) = (
            &self.policy,
            &self.tokenizer,
            self.generation_config.as_ref(),
        );
        checkpoint::save(
            &self.run_dir,
            &self.state,
            &self.learner.state(),
            &self.algo.state()?,
            self.cfg.run.keep_last,
            |dir| policy.save_pretrained(dir, &weights, save_dtype, tok, gen),
        )
    }

    /// Runs to `run.steps` (or until the stop flag), checkpointing every `run.save_every` steps,
    /// at the end and on interrupt. Evaluates after training.
    pub fn run(&mut self) -> Result<RunSummary> {
        let start = Instant::now();
        let total = self.cfg.run.steps as u64;
        let mut progress = crate::progress::Progress::new(total, self.state.step, self.quiet);
        let mut interrupted = false;
        while self.state.step < total {
            if self.stop.load(Ordering::SeqCst) {
                interrupted = true;
                break;
            }
            let m = self.step()?;
            progress.step(&m);
            let (every, at) = (self.cfg.run.save_every as u64, self.state.step);
            if every > 0 && at.is_multiple_of(every) && at < total {
                self.save_checkpoint()?;
            }
            let every = self.cfg.run.eval_every as u64;
            if every > 0 && at.is_multiple_of(every) && at < total && !self.eval.is_empty() {
                let acc = self.evaluate()?;
                self.log_eval(acc)?;
            }
        }
        progress.finish();
        let eval_after = if !interrupted && !self.eval.is_empty() {
            let acc = self.evaluate()?;
            self.log_eval(acc)?;
            Some(acc)
        } else {
            None
        };
        if self.state.step > 0 || interrupted {
            let ck = self.save_checkpoint()?;
            tracing::info!("checkpoint {}", ck.display());
        }
        Ok(RunSummary {
            run_dir: self.run_dir.clone(),
            steps_done: self.state.step,
            eval_before: self.state.eval_before,
            eval_after,
            interrupted,
            wall_s: start.elapsed().as_secs_f64(),
        })
    }
}
