//! The training loop. One straight pass per step (`Trainer::step`):
//! prompts -> rollouts and rewards (`rollout::Actor`, no graph) -> probe hold-out ->
//! `Algorithm::prepare` (no-graph forwards) -> per micro-batch: forward, loss, backward ->
//! clip + AdamW (`learner::Learner`) -> `Algorithm::after_step` (EMA) -> metrics.
//! Construction (`setup`, `sft`) and checkpoints live beside it; model internals stay behind
//! `lm::LmPolicy` and `Policy`.

use crate::algo::{Algorithm, PrepareCtx, Prepared, RolloutBatch};
use crate::checkpoint::{self, TrainerState};
use crate::config::TrainConfig;
use crate::data::{stream_seed, Prompt, Shuffler, Stream};
use crate::learner::{Learner, LearnerView, MicroLoss};
use crate::lm::{LmPolicy, Tokenizer};
use crate::metrics::{names, Clock, RunLogger, SampleRecord, StepMetrics};
use crate::optim::lr_at;
use crate::probe::Probe;
use crate::reward::{self, Reward};
use crate::rollout::Actor;
use crate::setup::{setup, Setup};
use anyhow::{bail, Result};
use candle_core::Device;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

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
        let device = cfg.run.device.open()?;
        let run_dir = crate::setup::new_run_dir(&cfg)?;
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
        let device = cfg.run.device.open()?;
        let s = setup(&cfg, &device, Some(&ck))?;
        let state = checkpoint::load_state(&ck)?;
        let logger = RunLogger::resume(&run_dir, state.step, cfg.run.tensorboard)?;
        let mut t = Self::assemble(cfg, run_dir, device, s, logger, stop, false)?;
        let algo_state = checkpoint::load_tensors(&ck.join(checkpoint::ALGO_FILE), &t.device)?;
        t.algo.load_state(&algo_state)?;
        let opt_state = checkpoint::load_tensors(&ck.join(checkpoint::OPTIMIZER_FILE), &t.device)?;
        t.learner.load_state(&opt_state, state.optimizer_updates)?;
        t.learner.loss_scale = state.loss_scale.clone();
        t.shuffler = crate::setup::shuffler(&t.cfg, t.train.len(), Some(state.data_cursor))?;
        t.state = state;
        tracing::info!("resumed {} at step {}", ck.display(), t.state.step);
        Ok(t)
    }

    /// Builds everything once, in order (`setup::build_learner`): the policy's parameters, the
    /// SFT warm-up when `warm_up` (a fresh run), then the algorithm and the learner.
    fn assemble(
        cfg: TrainConfig,
        run_dir: PathBuf,
        device: Device,
        s: Setup,
        logger: RunLogger,
        stop: Arc<AtomicBool>,
        warm_up: bool,
    ) -> Result<Self> {
        let (learner, algo, width) = crate::setup::build_learner(&cfg, &s, &device, warm_up)?;
        let shuffler = crate::setup::shuffler(&cfg, s.train.len(), None)?;
        let state = TrainerState {
            step: 0,
            optimizer_updates: 0,
            data_cursor: shuffler.cursor(),
            rng_seed: cfg.run.seed,
            nonfinite_in_row: 0,
            skipped_steps: 0,
            eval_before: None,
            eval_after: None,
            loss_scale: learner.loss_scale.clone(),
        };
        Ok(Self {
            reward: reward::from_config(&cfg)?,
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
        let mut m = StepMetrics::new(step);
        let mut clock = Clock::start();

        // 1-3. prompts -> rollouts (policy, no graph) -> rewards; DAPO refills flat groups.
        let mut shuffler = self.shuffler.clone();
        let mut sampled = self.actor().sample_step(
            &self.train,
            &mut shuffler,
            step,
            self.seed(step, Stream::Rollout, 0),
            |k| self.seed(step, Stream::Refill, k),
        )?;
        self.shuffler = shuffler;
        sampled.log(&mut m);
        clock.lap(names::TIME_ROLLOUT);

        // The implicit-negative probe holds some rollouts out of training.
        let ctx = self.prepare_ctx(step);
        let (run, threshold) = (&self.cfg.run, self.cfg.reward.positive_threshold);
        let probe = if run.probe_every > 0 && step.is_multiple_of(run.probe_every as u64) {
            let seed = self.seed(step, Stream::Probe, 0);
            Some(Probe::hold_out(
                &mut sampled.batch,
                run.probe_size,
                threshold,
                seed,
                &ctx,
            )?)
        } else {
            None
        };

        // 4. algorithm.prepare (no graph: old / reference / target forwards).
        let prep = if sampled.batch.is_empty() {
            Prepared::default()
        } else {
            self.algo.prepare(&sampled.batch, &ctx)?
        };
        for (k, v) in &prep.stats {
            m.set(k, *v);
        }
        clock.lap(names::TIME_PREPARE);

        // 5-6. per micro-batch: forward -> loss -> backward; clip + AdamW; after_step (EMA).
        let train_tokens = self.train_on(&sampled.batch, &prep, &mut m)?;
        clock.lap(names::TIME_TRAIN);
        if let Some(p) = probe {
            p.finish(&self.policy, &mut m)?;
        }

        // 7. metrics.
        clock.log(&mut m, sampled.tokens, train_tokens);
        self.end_step(m, &sampled.records)
    }

    /// `algo.num_iterations` updates on the prepared batch. Returns the tokens back-propagated.
    fn train_on(
        &mut self,
        batch: &RolloutBatch,
        prep: &Prepared,
        m: &mut StepMetrics,
    ) -> Result<usize> {
        let rows = prep.included();
        let chunks: Vec<&[usize]> = rows.chunks(self.cfg.optim.micro_batch_size).collect();
        let (temp, pad) = (self.cfg.rollout.temperature, self.pad_id);
        let total = self.cfg.run.steps * self.cfg.algo.num_iterations;
        let mut tokens = 0;
        for _ in 0..self.cfg.algo.num_iterations {
            if rows.is_empty() {
                break;
            }
            let (policy, algo, dev) = (&self.policy, &*self.algo, &self.device);
            let ckpt = self.cfg.optim.gradient_checkpointing;
            let micro = |k: usize, view: &LearnerView| -> Result<MicroLoss> {
                let mb = batch.seq_batch(chunks[k], pad, dev)?;
                MicroLoss::backward(view, policy, &mb, temp, ckpt, |out| {
                    algo.loss(out, &mb, prep, chunks[k])
                })
            };
            let done = self.state.optimizer_updates as usize;
            let lr = lr_at(&self.cfg.optim, done, total);
            let u = self.learner.update(chunks.len(), lr, micro)?;
            tokens += u.tokens;
            self.learner.log(&u, m);
            if !self.state.record(u.outcome, m.step) {
                break;
            }
            m.set(names::LR, lr);
            for (k, v) in self.algo.after_step(&self.learner.params.full_named()?)? {
                m.set(k, v);
            }
        }
        Ok(tokens)
    }

    /// Advances the state, logs the step and its samples, and stops the run after
    /// `run.max_nonfinite_in_row` skipped updates in a row (with a checkpoint).
    fn end_step(&mut self, mut m: StepMetrics, records: &[SampleRecord]) -> Result<StepMetrics> {
        m.set(names::SKIPPED_STEPS, self.state.skipped_steps as f64);
        self.state.step = m.step;
        self.state.data_cursor = self.shuffler.cursor();
        self.state.loss_scale = self.learner.loss_scale.clone();
        self.logger.log(&m)?;
        let n = self.cfg.run.samples_per_step.min(records.len());
        self.logger.log_samples(&records[..n])?;
        let in_row = self.state.nonfinite_in_row;
        if in_row > 0 && in_row >= self.cfg.run.max_nonfinite_in_row as u64 {
            let ck = self.save_checkpoint()?;
            bail!(
                "stopping at step {}: {in_row} consecutive steps with NaN/Inf loss or gradients \
                 (run.max_nonfinite_in_row); checkpoint written to {}",
                m.step,
                ck.display()
            );
        }
        Ok(m)
    }

    fn seed(&self, step: u64, stream: Stream, extra: u64) -> u64 {
        stream_seed(self.state.rng_seed, step, stream, extra)
    }

    /// What `prepare` and the probe forwards need from the trainer.
    fn prepare_ctx(&self, step: u64) -> PrepareCtx<'_> {
        PrepareCtx {
            policy: &self.policy,
            temperature: self.cfg.rollout.temperature,
            chunk: self.cfg.optim.micro_batch_size,
            width: self.width,
            pad_id: self.pad_id,
            device: &self.device,
            seed: self.seed(step, Stream::Noise, 0),
            max_completion_len: self.cfg.rollout.max_completion_len,
        }
    }

    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        let save_dtype = self.cfg.model.save_dtype.resolve(self.policy.dtype());
        let (policy, params) = (&self.policy, &self.learner.params);
        let (tok, gen) = (&self.tokenizer, self.generation_config.as_ref());
        checkpoint::save(
            &self.run_dir,
            &self.state,
            &self.learner.state(),
            &self.algo.state()?,
            self.cfg.run.keep_last,
            |dir| policy.save_pretrained(dir, params, save_dtype, tok, gen),
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
        let eval_after = if interrupted || self.eval.is_empty() {
            None
        } else if let Some(acc) = self.state.eval_after {
            // Resumed from the final checkpoint: this evaluation is already logged.
            Some(acc)
        } else {
            let acc = self.evaluate()?;
            self.log_eval(acc)?;
            self.state.eval_after = Some(acc);
            Some(acc)
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
