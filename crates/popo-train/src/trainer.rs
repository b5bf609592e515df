//! The training loop. One straight pass per step (`Trainer::step`):
//! prompts -> rollouts and rewards (`rollout::Actor`, no graph) -> probe hold-out ->
//! `Algorithm::prepare` (no-graph forwards) -> per micro-batch: forward, loss, backward ->
//! clip + AdamW (`learner::Learner`) -> `Algorithm::after_step` (EMA) -> metrics.
//! Construction (`setup`, `sft`) and checkpoints live beside it; model internals stay behind
//! `lm::LmPolicy` and `Policy`.

use crate::algo::{Algorithm, MicroBatch, PrepareCtx, Prepared};
use crate::checkpoint::{self, FinalEval, TrainerState};
use crate::config::TrainConfig;
use crate::data::{stream_seed, Prompt, Shuffler, Stream};
use crate::engine::http::ServerError;
use crate::engine::remote::Remote;
use crate::engine::{Engine, InProcess};
use crate::learner::{Learner, LearnerView, MicroLoss};
use crate::lm::{Head, LmPolicy, Tokenizer};
use crate::metrics::{names, RunLogger, SampleRecord, StepMetrics};
use crate::optim::lr_at;
use crate::probe::Probe;
use crate::progress::Clock;
use crate::reward::{self, Reward};
use crate::rollout::Actor;
use crate::rollouts::RolloutBatch;
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
    /// pass@k and avg@n after training (`run.final_pass_at_k_samples` > 0).
    pub pass_at_k: Option<popo_model::passk::PassAtK>,
    pub interrupted: bool,
    /// Seconds of this session's RL loop (`run`).
    pub wall_s: f64,
    /// Seconds the run had taken in earlier sessions, as of the checkpoint it resumed from.
    pub wall_before_s: f64,
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
    /// `rollout.engine = "vllm"`: the servers, kept on the policy's weights; None: in-process.
    remote: Option<Remote>,
    /// When this session built the trainer, and the run's seconds before it (`TrainerState::wall_s`
    /// of the checkpoint resumed from): what checkpoints record as the run's wall time.
    started: Instant,
    wall_before: f64,
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
            let acc = t.evaluate()?;
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
        t.learner.load_state(&opt_state, &state)?;
        t.shuffler = crate::setup::shuffler(&t.cfg, t.train.len(), Some(state.data_cursor))?;
        t.wall_before = state.wall_s;
        t.state = state;
        tracing::info!("resumed {} at step {}", ck.display(), t.state.step);
        Ok(t)
    }

    /// Builds everything once, in order: the policy's parameters, the SFT warm-up when
    /// `warm_up` (a fresh run), then the algorithm (forked from the warmed-up policy) and the
    /// learner.
    fn assemble(
        cfg: TrainConfig,
        run_dir: PathBuf,
        device: Device,
        s: Setup,
        logger: RunLogger,
        stop: Arc<AtomicBool>,
        warm_up: bool,
    ) -> Result<Self> {
        let started = Instant::now(); // before the warm-up, which is part of the run's time
        let (mut params, width) = crate::setup::policy_params(&cfg, &s, &device)?;
        if warm_up {
            params =
                crate::sft::warm_up(&crate::sft::SftCtx::new(&cfg, &s, &device, width), params)?;
        }
        let (learner, algo) = crate::setup::build_learner(&cfg, &s, &device, params, width)?;
        let shuffler = crate::setup::shuffler(&cfg, s.train.len(), None)?;
        let state =
            TrainerState::fresh(shuffler.cursor(), cfg.run.seed, learner.loss_scale.clone());
        let probe = s
            .train
            .first()
            .map(|p| p.ids.as_slice())
            .unwrap_or_default();
        let remote = Remote::open(&cfg, probe)?;
        Ok(Self {
            remote,
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
            started,
            wall_before: 0.0,
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

    /// Runs `f` with the actor on the configured engine: the vLLM servers, or popo's own
    /// sampler on the policy. Callers sync the servers first (`sync_engine`).
    fn with_actor<R>(&self, f: impl FnOnce(&Actor) -> R) -> R {
        let local = InProcess {
            policy: &self.policy,
            tokenizer: &self.tokenizer,
            parts: crate::parallel::rollout_parts(self.cfg.run.cpu_parallel, &self.device),
        };
        let engine: &dyn Engine = match &self.remote {
            Some(r) => &r.vllm,
            None => &local,
        };
        f(&Actor {
            cfg: &self.cfg,
            engine,
            tokenizer: &self.tokenizer,
            reward: self.reward.as_ref(),
            stop_ids: &self.stop_ids,
        })
    }

    /// With the vLLM engine, puts every server on the policy's current weights (a no-op when
    /// they already are): the barrier before any rollout.
    fn sync_engine(&mut self) -> Result<()> {
        let Some(remote) = self.remote.as_mut() else {
            return Ok(());
        };
        let (policy, params) = (&self.policy, &self.learner.params);
        let (tok, gen) = (&self.tokenizer, self.generation_config.as_ref());
        // The compute dtype: the servers run exactly the weights popo's own forwards use.
        let dtype = policy.dtype();
        remote.ensure_synced(
            self.learner.updates(),
            policy,
            self.pad_id,
            &self.device,
            |dir| policy.save_pretrained(dir, params, dtype, tok, gen, Head::WrittenOut),
        )
    }

    /// Held-out greedy accuracy, on the engine's current weights.
    fn evaluate(&mut self) -> Result<f64> {
        self.sync_engine()?;
        self.with_actor(|a| a.evaluate(&self.eval))
    }

    /// An error of the rollout engine (a server that failed past its retries, or a sync that
    /// did not take) stops the run after a checkpoint of the last finished step, so that
    /// `--resume` continues it; any other error passes through.
    fn stop_on_engine_fault(&mut self, e: anyhow::Error) -> anyhow::Error {
        if e.downcast_ref::<ServerError>().is_none() {
            return e;
        }
        match self.save_checkpoint() {
            Ok(ck) => e.context(format!(
                "the rollout engine failed at step {}: checkpoint {} written; `popo train --resume {}` continues the run",
                self.state.step + 1,
                ck.display(),
                self.run_dir.display()
            )),
            Err(ck) => e.context(format!("the rollout engine failed, and so did the checkpoint: {ck:#}")),
        }
    }

    fn log_eval(&mut self, acc: f64) -> Result<()> {
        let step = self.state.step;
        self.logger
            .log(StepMetrics::new(step).set(names::EVAL_ACCURACY, acc))
    }

    /// One rollout step and its optimizer update(s). Returns the step's metrics.
    pub fn step(&mut self) -> Result<StepMetrics> {
        let step = self.state.step + 1;
        let mut m = StepMetrics::new(step);
        let mut clock = Clock::start();

        // 0. The vLLM servers on the policy's weights (a barrier); perf/time_sync_s is this step's
        // share (0 when the sync came earlier, before an evaluation).
        self.sync_engine()?;
        if let Some(r) = self.remote.as_mut().and_then(Remote::take_report) {
            m.set(names::SYNC_CHECK_ABS_DIFF, r.abs_diff);
        }
        clock.lap(names::TIME_SYNC);

        // 1-3. prompts -> rollouts (policy, no graph) -> rewards; DAPO refills flat groups.
        let mut shuffler = self.shuffler.clone();
        let mut sampled = self.with_actor(|a| {
            a.sample_step(
                &self.train,
                &mut shuffler,
                step,
                self.seed(step, Stream::Rollout, 0),
                |k| self.seed(step, Stream::Refill, k),
            )
        })?;
        self.shuffler = shuffler;
        sampled.log(&mut m);
        clock.lap(names::TIME_ROLLOUT);

        // The implicit-negative probe holds some rollouts out of training.
        let ctx = self.prepare_ctx(step);
        let (run, threshold) = (&self.cfg.run, self.cfg.reward.positive_threshold);
        let seed = self.seed(step, Stream::Probe, 0);
        let probe = Probe::at_step(run, step, &mut sampled.batch, threshold, seed, &ctx)?;

        // Another engine's log-probs: popo's own become pi_old; TIS weights for the losses.
        let tis = match &self.remote {
            Some(_) if !sampled.batch.is_empty() => {
                let cap = self.cfg.rollout.engine.tis_cap;
                let read = self.algo.rows_read(&sampled.batch);
                let c = crate::correction::correct(&mut sampled.batch, &ctx, cap, read.as_deref())?;
                m.set_all(&c.stats);
                c.tis
            }
            _ => None,
        };

        // 4. algorithm.prepare (no graph: old / reference / target forwards).
        let prep = if sampled.batch.is_empty() {
            Prepared::default()
        } else {
            self.algo.prepare(&sampled.batch, &ctx)?
        };
        m.set_all(&prep.stats);
        clock.lap(names::TIME_PREPARE);

        // 5-6. per micro-batch: forward -> loss -> backward; clip + AdamW; after_step (EMA).
        let trained = self.train_on(&sampled.batch, &prep, tis.as_deref(), &mut m)?;
        clock.lap(names::TIME_TRAIN);
        if let Some(p) = probe {
            p.finish(&self.policy, &mut m)?;
        }

        // 7. metrics.
        clock.log(&mut m, sampled.tokens, trained);
        self.end_step(m, &sampled.records)
    }

    /// `algo.num_iterations` updates on the prepared batch. Returns the tokens back-propagated:
    /// completion tokens, and positions through the forward.
    fn train_on(
        &mut self,
        batch: &RolloutBatch,
        prep: &Prepared,
        tis: Option<&[Vec<f32>]>,
        m: &mut StepMetrics,
    ) -> Result<(usize, usize)> {
        let rows = prep.included();
        let chunks: Vec<&[usize]> = rows.chunks(self.cfg.optim.micro_batch_size).collect();
        let (temp, pad) = (self.cfg.rollout.temperature, self.pad_id);
        let total = self.cfg.run.steps * self.cfg.algo.num_iterations;
        let (mut tokens, mut seq_tokens) = (0, 0);
        for _ in 0..self.cfg.algo.num_iterations {
            if rows.is_empty() {
                break;
            }
            let (policy, algo, dev) = (&self.policy, &*self.algo, &self.device);
            let ckpt = self.cfg.optim.gradient_checkpointing;
            let micro = |k: usize, view: &LearnerView| -> Result<MicroLoss> {
                let mb = batch.seq_batch(chunks[k], pad, dev)?;
                MicroLoss::backward(view, policy, &mb, temp, ckpt, |out| {
                    algo.loss(out, &MicroBatch::new(&mb, prep, chunks[k]).with_tis(tis))
                })
            };
            let done = self.state.optimizer_updates as usize;
            let lr = lr_at(&self.cfg.optim, done, total);
            let u = self.learner.update(chunks.len(), lr, micro)?;
            tokens += u.tokens;
            seq_tokens += u.seq_tokens;
            self.learner.log(&u, m);
            if !self.state.record(u.outcome, m.step) {
                break;
            }
            m.set(names::LR, lr);
            m.set_all(&self.algo.after_step(&self.learner.params.full_named()?)?);
        }
        Ok((tokens, seq_tokens))
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
        self.state.wall_s = self.wall_before + self.started.elapsed().as_secs_f64();
        let save_dtype = self.cfg.model.save_dtype.resolve(self.policy.dtype());
        let (policy, params) = (&self.policy, &self.learner.params);
        let (tok, gen) = (&self.tokenizer, self.generation_config.as_ref());
        checkpoint::save(
            &self.run_dir,
            &self.state,
            &self.learner.state(),
            &self.algo.state()?,
            self.cfg.run.keep_last,
            |dir| policy.save_pretrained(dir, params, save_dtype, tok, gen, Head::AsTrained),
        )
    }

    /// The end-of-run evaluation: greedy held-out accuracy and, with
    /// `run.final_pass_at_k_samples` > 0, pass@k and avg@n, logged in one record at the last step
    /// and kept in the trainer state (rewritten into the checkpoint `ck`). A resumed run that had
    /// already finished reports the recorded values and samples nothing.
    fn final_eval(&mut self, ck: Option<&Path>) -> Result<FinalEval> {
        let step = self.state.step;
        if let Some(done) = self.state.final_eval.clone().filter(|f| f.step == step) {
            return Ok(done);
        }
        // No step taken: the policy is the one measured before training.
        let before = self.state.eval_before.filter(|_| step == 0);
        let n = self.cfg.run.final_pass_at_k_samples;
        self.sync_engine()?;
        let seed = |k| self.seed(step, Stream::PassAtK, k);
        let done = self.with_actor(|a| a.final_eval(&self.eval, step, before, n, seed))?;
        let m = done.metrics();
        if !m.values.is_empty() {
            self.logger.log(&m)?;
        }
        self.state.final_eval = Some(done.clone());
        if let Some(ck) = ck {
            checkpoint::update_state(ck, &self.state)?;
        }
        Ok(done)
    }

    /// Runs to `run.steps` (or until the stop flag), checkpointing every `run.save_every` steps,
    /// at the end and on interrupt, then evaluates (`final_eval`).
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
            let m = self.step().map_err(|e| self.stop_on_engine_fault(e))?;
            progress.step(&m);
            // Every `every` steps, except the last (the end of the run does both).
            let due =
                |every: usize| every > 0 && m.step.is_multiple_of(every as u64) && m.step < total;
            if due(self.cfg.run.save_every) {
                self.save_checkpoint()?;
            }
            if due(self.cfg.run.eval_every) && !self.eval.is_empty() {
                let acc = self.evaluate().map_err(|e| self.stop_on_engine_fault(e))?;
                self.log_eval(acc)?;
            }
        }
        progress.finish();
        // The checkpoint comes before the final evaluation, so a crash during that long sampling
        // loses no training; the evaluation is then added to its state.
        let ck = if self.state.step > 0 || interrupted {
            let ck = self.save_checkpoint()?;
            tracing::info!("checkpoint {}", ck.display());
            Some(ck)
        } else {
            None
        };
        let done = if interrupted {
            None
        } else {
            Some(self.final_eval(ck.as_deref())?)
        };
        Ok(RunSummary {
            run_dir: self.run_dir.clone(),
            steps_done: self.state.step,
            eval_before: self.state.eval_before,
            eval_after: done.as_ref().and_then(|f| f.accuracy),
            pass_at_k: done.and_then(|f| f.pass_at_k),
            interrupted,
            wall_s: start.elapsed().as_secs_f64(),
            wall_before_s: self.wall_before,
        })
    }
}
