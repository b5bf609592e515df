//! The training loop. One straight pass per step:
//! prompts -> rollouts (`popo_model::generate`, no graph) -> rewards (`Reward`) -> DAPO filtering
//! -> `Algorithm::prepare` (no-graph forwards) -> per micro-batch: forward, loss, backward
//! (gradients accumulated) -> clip + AdamW -> `Algorithm::after_step` (EMA) -> metrics.
//! Each arrow carries a plain data type; model internals stay behind `Policy`.

use crate::algo::{self, Algorithm, PrepareCtx, Prepared, Rollout, RolloutBatch};
use crate::checkpoint::{self, TrainerState};
use crate::config::TrainConfig;
use crate::data::{
    self, DataCursor, JsonlFormat, LoadStats, Prompt, PromptTemplate, Shuffler, SplitMix64,
};
use crate::lm::{mean_token_logprob, LmPolicy};
use crate::metrics::{names, RunLogger, SampleRecord, StepMetrics};
use crate::optim::{lr_at, AdamW, GradAccum, LossScale};
use crate::parallel::{in_waves, micro_batch_width};
use crate::params::Params;
use crate::policy::{Policy, SeqBatch};
use crate::reward::{self, MathReward, Reward};
use crate::task;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use popo_model::{FinishReason, SamplingParams, Tokenizer};
use std::collections::HashSet;
use std::io::IsTerminal;
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

/// Where the policy comes from and what it trains on, after config resolution.
pub struct Setup {
    pub policy: LmPolicy,
    pub tokenizer: Tokenizer,
    pub train: Vec<Prompt>,
    pub eval: Vec<Prompt>,
    pub generation_config: Option<serde_json::Value>,
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
    /// Policy and predictor weights, with their f32 masters in mixed precision.
    params: Params,
    opt: AdamW,
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

fn compute_dtype(cfg: &TrainConfig, device: &Device) -> Result<DType> {
    match cfg.run.dtype.as_str() {
        "auto" => Ok(if device.is_cuda() {
            DType::BF16
        } else {
            DType::F32
        }),
        s => popo_model::hub::dtype_from_str(s),
    }
}

fn prompt_template(cfg: &TrainConfig) -> Result<PromptTemplate> {
    cfg.data.template.parse()
}

/// Builds the policy, tokenizer and prompt sets from the config (the built-in task and model when
/// `model.path` / `data.path` are empty). `checkpoint` overrides the weights (resume).
pub fn setup(cfg: &TrainConfig, device: &Device, checkpoint: Option<&Path>) -> Result<Setup> {
    let dtype = compute_dtype(cfg, device)?;
    let (policy, tokenizer, generation_config) = match (checkpoint, cfg.model.path.as_str()) {
        (Some(dir), _) => load_model(dir, device, dtype)?,
        (None, "") => {
            let tok = task::tokenizer()?;
            let mcfg = cfg.tiny_model.config(&tok)?;
            let (varmap, model) =
                popo_model::Model::new_seeded(&mcfg, device, dtype, cfg.run.seed, 0.02)?;
            (LmPolicy::new(model, varmap), tok, None)
        }
        (None, p) => load_model(&popo_model::hub::resolve_model_path(p)?, device, dtype)?,
    };
    let template = prompt_template(cfg)?;
    let mut stats = LoadStats::default();
    let (train, eval) = if cfg.data.path.is_empty() {
        let t = &cfg.task;
        let ex = |split| -> Result<Vec<data::Example>> {
            Ok(t.generate(split)?.iter().map(|p| p.example()).collect())
        };
        let train = data::prepare_prompts(
            &ex(task::Split::Rl)?,
            template,
            &tokenizer,
            cfg.data.max_prompt_len,
            &mut stats,
        )?;
        let eval = data::prepare_prompts(
            &ex(task::Split::Eval)?,
            template,
            &tokenizer,
            cfg.data.max_prompt_len,
            &mut stats,
        )?;
        (train, eval)
    } else {
        let fmt = JsonlFormat {
            problem_field: cfg.data.problem_field.clone(),
            answer_field: cfg.data.answer_field.clone(),
            skip_invalid: cfg.data.skip_invalid,
        };
        let (ex, st) = data::load_jsonl(Path::new(&cfg.data.path), &fmt)?;
        stats.skipped_invalid += st.skipped_invalid;
        let train = data::prepare_prompts(
            &ex,
            template,
            &tokenizer,
            cfg.data.max_prompt_len,
            &mut stats,
        )?;
        let eval = if cfg.data.eval_path.is_empty() {
            Vec::new()
        } else {
            let (ex, _) = data::load_jsonl(Path::new(&cfg.data.eval_path), &fmt)?;
            data::prepare_prompts(
                &ex,
                template,
                &tokenizer,
                cfg.data.max_prompt_len,
                &mut stats,
            )?
        };
        (train, eval)
    };
    if stats.skipped_invalid + stats.skipped_too_long > 0 {
        tracing::warn!(
            "skipped {} invalid lines and {} prompts over data.max_prompt_len = {}",
            stats.skipped_invalid,
            stats.skipped_too_long,
            cfg.data.max_prompt_len
        );
    }
    if train.is_empty() {
        bail!("no training prompts left (check data.path and data.max_prompt_len)");
    }
    let eval = eval.into_iter().take(cfg.run.eval_size).collect();
    Ok(Setup {
        policy,
        tokenizer,
        train,
        eval,
        generation_config,
    })
}

fn load_model(
    dir: &Path,
    device: &Device,
    dtype: DType,
) -> Result<(LmPolicy, Tokenizer, Option<serde_json::Value>)> {
    let p = popo_model::hub::load_pretrained(dir, device, dtype)?;
    let tok = p
        .tokenizer
        .with_context(|| format!("{}: no tokenizer.json", dir.display()))?;
    Ok((LmPolicy::new(p.model, p.varmap), tok, p.generation_config))
}

impl Trainer {
    /// A fresh run: writes config.toml, runs the SFT warm-up if configured, measures held-out
    /// accuracy, and builds the algorithm and optimizer.
    pub fn new(cfg: TrainConfig, stop: Arc<AtomicBool>) -> Result<Self> {
        let device = popo_model::hub::device_from_str(&cfg.run.device)?;
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
        let device = popo_model::hub::device_from_str(&cfg.run.device)?;
        let s = setup(&cfg, &device, Some(&ck))?;
        let state = checkpoint::load_state(&ck)?;
        let logger = RunLogger::resume(&run_dir, state.step, cfg.run.tensorboard)?;
        let mut t = Self::assemble(cfg, run_dir, device, s, logger, stop, false)?;
        t.algo.load_state(&checkpoint::load_tensors(
            &ck.join(checkpoint::ALGO_FILE),
            &t.device,
        )?)?;
        let opt_state = checkpoint::load_tensors(&ck.join(checkpoint::OPTIMIZER_FILE), &t.device)?;
        t.params.load_state(&opt_state)?;
        t.opt.load_state(&opt_state, state.optimizer_updates)?;
        t.shuffler = Shuffler::from_cursor(t.train.len(), state.data_cursor)?;
        t.state = state;
        tracing::info!("resumed {} at step {}", ck.display(), t.state.step);
        Ok(t)
    }

    /// Builds everything once, in order: the policy's parameters (with f32 masters in mixed
    /// precision), the SFT warm-up when `warm_up` (a fresh run), then the algorithm (its target /
    /// reference forked from the warmed-up policy) and the optimizer over policy + predictor.
    fn assemble(
        cfg: TrainConfig,
        run_dir: PathBuf,
        device: Device,
        s: Setup,
        logger: RunLogger,
        stop: Arc<AtomicBool>,
        warm_up: bool,
    ) -> Result<Self> {
        let eos = s.tokenizer.eos_token_id();
        let stop_ids = popo_model::stop_ids(
            s.policy.model().config(),
            s.generation_config.as_ref(),
            Some(&s.tokenizer),
        )?;
        let pad_id = s.tokenizer.pad_token_id().or(eos).unwrap_or(0);
        let width = micro_batch_width(cfg.run.cpu_parallel, &device);
        if width > 1 {
            tracing::info!("{width} micro-batches at a time, one core each (run.cpu_parallel)");
        }
        let dtype = s.policy.model().dtype();
        let keep_master = cfg.run.master_weights.keeps_master();
        if !keep_master && dtype != DType::F32 {
            tracing::warn!(
                "run.master_weights = \"none\" with {dtype:?} weights: updates below half a \
                 {dtype:?} ULP of a weight are rounded away (at lr 1e-6, most of them)"
            );
        }
        let mut params = Params::new(s.policy.named_vars(), keep_master)?;
        if warm_up && cfg.sft.steps > 0 {
            let sft = SftCtx {
                cfg: &cfg,
                policy: &s.policy,
                tokenizer: &s.tokenizer,
                pad_id,
                device: &device,
                width,
            };
            sft.run(&mut params)?;
        }
        let algo = algo::build(&cfg, &s.policy, &device)?;
        params.extend(algo.extra_vars())?;
        let opt = AdamW::new(&params, &cfg.optim)?;
        let math = if cfg.reward.format_weight > 0.0 {
            MathReward::with_format(reward::FormatRule::Boxed, cfg.reward.format_weight as f32)
        } else {
            MathReward::new()
        };
        if cfg.reward.check_work && !cfg.data.path.is_empty() {
            bail!("reward.check_work checks the built-in task's worked steps; it needs no --data");
        }
        let mut reward: Box<dyn Reward> = if cfg.reward.require_boxed {
            Box::new(BoxedAnswer(math))
        } else {
            Box::new(math)
        };
        if cfg.reward.check_work {
            reward = Box::new(task::CheckedWork(reward));
        }
        let shuffler = if cfg.data.shuffle {
            Shuffler::new(s.train.len(), cfg.run.seed)?
        } else {
            Shuffler::from_cursor(
                s.train.len(),
                DataCursor {
                    seed: cfg.run.seed,
                    epoch: 0,
                    index: 0,
                },
            )?
        };
        let state = TrainerState {
            step: 0,
            optimizer_updates: 0,
            data_cursor: shuffler.cursor(),
            rng_seed: cfg.run.seed,
            nonfinite_in_row: 0,
            skipped_steps: 0,
            eval_before: None,
            loss_scale: LossScale::for_dtype(dtype, cfg.optim.init_loss_scale),
        };
        Ok(Self {
            quiet: false,
            width,
            cfg,
            run_dir,
            device,
            policy: s.policy,
            tokenizer: s.tokenizer,
            pad_id,
            stop_ids,
            generation_config: s.generation_config,
            algo,
            params,
            opt,
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

    /// Greedy accuracy on the held-out prompts.
    pub fn evaluate(&self) -> Result<f64> {
        let ids: Vec<Vec<u32>> = self.eval.iter().map(|p| p.ids.clone()).collect();
        let params = SamplingParams {
            n: 1,
            greedy: true,
            temperature: 1.0,
            max_new_tokens: self.cfg.rollout.max_completion_len,
            stop_token_ids: self.stop_ids.clone(),
            ..Default::default()
        };
        let mut correct = 0usize;
        for (chunk_p, chunk_ids) in self.eval.chunks(256).zip(ids.chunks(256)) {
            let out = popo_model::generate(
                self.policy.model(),
                chunk_ids,
                &params,
                Some(&self.tokenizer),
            )?;
            let texts: Vec<String> = out
                .iter()
                .map(|c| self.tokenizer.decode(&c.tokens, true))
                .collect::<Result<_>>()?;
            let items: Vec<(&str, &str)> = texts
                .iter()
                .zip(chunk_p)
                .map(|(t, p)| (t.as_str(), p.answer.as_str()))
                .collect();
            correct += reward::score_batch(self.reward.as_ref(), &items)
                .iter()
                .filter(|r| r.correct)
                .count();
        }
        Ok(correct as f64 / self.eval.len().max(1) as f64)
    }

    fn log_eval(&mut self, acc: f64) -> Result<()> {
        let mut m = StepMetrics::new(self.state.step);
        m.set(names::EVAL_ACCURACY, acc);
        self.logger.log(&m)
    }

    /// Samples `prompts` x G completions and scores them. Returns rollouts grouped by prompt.
    fn rollout(
        &self,
        prompts: &[Prompt],
        seed: u64,
        group_offset: usize,
    ) -> Result<(Vec<Rollout>, Vec<SampleRecord>, usize)> {
        let r = &self.cfg.rollout;
        let params = SamplingParams {
            n: r.group_size,
            temperature: r.temperature,
            top_p: r.top_p,
            top_k: r.top_k,
            max_new_tokens: r.max_completion_len,
            stop_token_ids: self.stop_ids.clone(),
            seed,
            ..Default::default()
        };
        let ids: Vec<Vec<u32>> = prompts.iter().map(|p| p.ids.clone()).collect();
        let comps =
            popo_model::generate(self.policy.model(), &ids, &params, Some(&self.tokenizer))?;
        let texts: Vec<String> = comps
            .iter()
            .map(|c| self.tokenizer.decode(&c.tokens, true))
            .collect::<Result<_>>()?;
        let items: Vec<(&str, &str)> = comps
            .iter()
            .zip(&texts)
            .map(|(c, t)| (t.as_str(), prompts[c.prompt_index].answer.as_str()))
            .collect();
        let scores = reward::score_batch(self.reward.as_ref(), &items);
        let mut rollouts = Vec::with_capacity(comps.len());
        let mut records = Vec::with_capacity(comps.len());
        let mut tokens = 0;
        for ((c, text), s) in comps.into_iter().zip(texts).zip(scores) {
            let truncated = c.finish_reason == FinishReason::Length;
            let mut reward = s.reward as f64;
            let rw = &self.cfg.reward;
            if rw.overlong_shaping {
                reward += overlong_penalty(
                    c.tokens.len(),
                    r.max_completion_len,
                    rw.overlong_cache_len,
                    rw.overlong_penalty,
                );
            }
            tokens += c.tokens.len();
            let p = &prompts[c.prompt_index];
            records.push(SampleRecord {
                step: self.state.step + 1,
                prompt_index: group_offset + c.prompt_index,
                sample_index: c.sample_index,
                prompt: p.text.clone(),
                completion: text,
                gold: p.answer.clone(),
                extracted: s.extracted,
                reward,
                correct: s.correct,
                num_tokens: c.tokens.len(),
                truncated,
            });
            // An empty completion (max_new_tokens = 0) carries no token to train on.
            if c.tokens.is_empty() {
                continue;
            }
            rollouts.push(Rollout {
                group: group_offset + c.prompt_index,
                prompt: p.ids.clone(),
                completion: c.tokens,
                sampler_logprobs: c.logprobs,
                reward,
                truncated,
            });
        }
        Ok((rollouts, records, tokens))
    }

    /// One rollout step and its optimizer update(s). Returns the step's metrics.
    pub fn step(&mut self) -> Result<StepMetrics> {
        let step = self.state.step + 1;
        let seed = self.state.rng_seed;
        let b = self.cfg.rollout.batch_prompts;
        let g = self.cfg.rollout.group_size;
        let threshold = self.cfg.reward.positive_threshold;
        let mut m = StepMetrics::new(step);
        let t_step = Instant::now();

        // 1-3. prompts -> rollouts -> rewards (DAPO: refill groups whose rewards are all equal).
        let t0 = Instant::now();
        let idx = self.shuffler.next_batch(b);
        let prompts: Vec<Prompt> = idx.iter().map(|&i| self.train[i].clone()).collect();
        let (mut rollouts, mut records, mut rollout_tokens) =
            self.rollout(&prompts, stream_seed(seed, step, Stream::Rollout, 0), 0)?;
        let all_rollouts_stats = group_stats(&rollouts, threshold);
        if self.cfg.rollout.dynamic_sampling {
            let informative = |rs: &[Rollout], gid: usize| {
                let v: Vec<f64> = rs
                    .iter()
                    .filter(|r| r.group == gid)
                    .map(|r| r.reward)
                    .collect();
                v.iter().any(|&x| x != v[0])
            };
            let keep_groups = |rs: Vec<Rollout>| -> Vec<Rollout> {
                let ok: Vec<usize> = {
                    let mut gs: Vec<usize> = rs.iter().map(|r| r.group).collect();
                    gs.dedup();
                    gs.into_iter()
                        .filter(|&gid| informative(&rs, gid))
                        .collect()
                };
                rs.into_iter().filter(|r| ok.contains(&r.group)).collect()
            };
            rollouts = keep_groups(rollouts);
            let mut next_group = b;
            let mut tries = 0;
            while count_groups(&rollouts) < b && tries < self.cfg.rollout.max_sampling_tries {
                tries += 1;
                let idx = self.shuffler.next_batch(b);
                let more: Vec<Prompt> = idx.iter().map(|&i| self.train[i].clone()).collect();
                let (r2, rec2, tok2) = self.rollout(
                    &more,
                    stream_seed(seed, step, Stream::Refill, tries as u64),
                    next_group,
                )?;
                next_group += b;
                rollout_tokens += tok2;
                records.extend(rec2);
                rollouts.extend(keep_groups(r2));
            }
            // Keep exactly B groups when more were drawn.
            let mut kept: Vec<usize> = rollouts.iter().map(|r| r.group).collect();
            kept.dedup();
            kept.truncate(b);
            rollouts.retain(|r| kept.contains(&r.group));
            m.set("dapo/sampling_tries", tries as f64);
            m.set("dapo/groups_kept", count_groups(&rollouts) as f64);
        }
        let time_rollout = t0.elapsed().as_secs_f64();
        let (reward_mean, pos_ratio, g_none, g_all, len_mean, len_max, trunc) = all_rollouts_stats;
        m.set(names::REWARD_MEAN, reward_mean);
        m.set(names::POSITIVE_RATIO, pos_ratio);
        m.set(names::GROUPS_NO_POSITIVE, g_none);
        m.set(names::GROUPS_ALL_POSITIVE, g_all);
        m.set(names::RESPONSE_LEN_MEAN, len_mean);
        m.set(names::RESPONSE_LEN_MAX, len_max);
        m.set(names::TRUNCATED_RATIO, trunc);

        // Implicit-negative probe: hold out some negatives (and positives), never trained on.
        let probe_on =
            self.cfg.run.probe_every > 0 && step.is_multiple_of(self.cfg.run.probe_every as u64);
        let (probe_neg, probe_pos) = if probe_on {
            select_probe(
                &mut rollouts,
                threshold,
                self.cfg.run.probe_size,
                stream_seed(seed, step, Stream::Probe, 0),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let probe_batch = |rs: &[Rollout]| -> Result<Option<SeqBatch>> {
            if rs.is_empty() {
                return Ok(None);
            }
            let p: Vec<&[u32]> = rs.iter().map(|r| r.prompt.as_slice()).collect();
            let c: Vec<&[u32]> = rs.iter().map(|r| r.completion.as_slice()).collect();
            Ok(Some(SeqBatch::new(&p, &c, self.pad_id, &self.device)?))
        };
        let (neg_b, pos_b) = (probe_batch(&probe_neg)?, probe_batch(&probe_pos)?);
        let temp = self.cfg.rollout.temperature;
        let measure = |pol: &dyn Policy, bt: &Option<SeqBatch>| -> Result<Option<f64>> {
            bt.as_ref()
                .map(|b| mean_token_logprob(pol, b, temp))
                .transpose()
        };
        let neg_before = measure(&self.policy, &neg_b)?;
        let pos_before = measure(&self.policy, &pos_b)?;

        // 4. prepare (no-graph forwards: old / reference / target).
        let t1 = Instant::now();
        let batch = RolloutBatch { rollouts };
        let prep = if batch.is_empty() {
            Prepared::default()
        } else {
            let ctx = PrepareCtx {
                policy: &self.policy,
                temperature: temp,
                chunk: self.cfg.optim.micro_batch_size,
                width: self.width,
                pad_id: self.pad_id,
                device: &self.device,
                seed: stream_seed(seed, step, Stream::Noise, 0),
                max_completion_len: self.cfg.rollout.max_completion_len,
            };
            self.algo.prepare(&batch, &ctx)?
        };
        let time_prepare = t1.elapsed().as_secs_f64();
        for (k, v) in &prep.stats {
            m.set(k, *v);
        }

        // 5-6. micro-batched loss + backward, clip, AdamW, after_step; num_iterations updates.
        let t2 = Instant::now();
        let rows = prep.included();
        let mut train_tokens = 0usize;
        let mut fatal = false;
        let total_updates = self.cfg.run.steps * self.cfg.algo.num_iterations;
        for _ in 0..self.cfg.algo.num_iterations {
            if rows.is_empty() {
                break;
            }
            let mut acc = GradAccum::new(self.params.vars());
            let mut stats: Vec<(&'static str, f64)> = Vec::new();
            let factor = self.state.loss_scale.as_ref().map_or(1.0, |s| s.scale);
            let chunks: Vec<&[usize]> = rows.chunks(self.cfg.optim.micro_batch_size).collect();
            let (policy, algo, prep) = (&self.policy, &*self.algo, &prep);
            // Micro-batches run side by side on CPU; their gradients are summed in order, so the
            // update is the one a sequential loop would make.
            let micro_step = |k: usize| -> Result<_> {
                let chunk = chunks[k];
                let p: Vec<&[u32]> = chunk
                    .iter()
                    .map(|&i| batch.rollouts[i].prompt.as_slice())
                    .collect();
                let c: Vec<&[u32]> = chunk
                    .iter()
                    .map(|&i| batch.rollouts[i].completion.as_slice())
                    .collect();
                let tokens = c.iter().map(|c| c.len()).sum::<usize>();
                let mb = SeqBatch::new(&p, &c, self.pad_id, &self.device)?;
                let out = policy.forward(&mb, temp)?;
                let l = algo.loss(&out, &mb, prep, chunk)?;
                Ok((scaled(&l.loss, factor)?.backward()?, l.stats, tokens))
            };
            in_waves(
                chunks.len(),
                self.width,
                micro_step,
                |(grads, l_stats, tokens)| {
                    train_tokens += tokens;
                    for (k, v) in l_stats {
                        match stats.iter_mut().find(|(n, _)| *n == k) {
                            Some(s) => s.1 += v,
                            None => stats.push((k, v)),
                        }
                    }
                    acc.add(&grads)
                },
            )?;
            acc.unscale(factor)?;
            let loss_ok = stats.iter().all(|(_, v)| v.is_finite());
            let norm = acc.global_norm()?;
            for (k, v) in &stats {
                m.set(k, *v);
            }
            m.set(names::GRAD_NORM, norm);
            if let Some(ls) = &mut self.state.loss_scale {
                // f16: an overflow under a large scale only means the scale was too large.
                let overflow = loss_ok && !norm.is_finite();
                let scale_at_fault = ls.update(!overflow);
                m.set(names::LOSS_SCALE, ls.scale);
                if overflow && scale_at_fault {
                    self.state.skipped_steps += 1;
                    tracing::debug!(
                        "step {step}: f16 gradients overflowed; scale now {}",
                        ls.scale
                    );
                    break;
                }
            }
            if !loss_ok || !norm.is_finite() {
                self.state.nonfinite_in_row += 1;
                self.state.skipped_steps += 1;
                tracing::warn!(
                    "step {step}: non-finite loss or gradient; update skipped ({} in a row)",
                    self.state.nonfinite_in_row
                );
                fatal = self.state.nonfinite_in_row >= self.cfg.run.max_nonfinite_in_row as u64;
                break;
            }
            self.state.nonfinite_in_row = 0;
            acc.clip(self.cfg.optim.grad_clip)?;
            let lr = lr_at(
                &self.cfg.optim,
                self.state.optimizer_updates as usize,
                total_updates,
            );
            self.opt.step(&mut self.params, &acc, lr)?;
            self.state.optimizer_updates += 1;
            m.set(names::LR, lr);
            for (k, v) in self.algo.after_step(&self.params.full_named()?)? {
                m.set(k, v);
            }
        }
        let time_train = t2.elapsed().as_secs_f64();
        m.set(names::SKIPPED_STEPS, self.state.skipped_steps as f64);

        if let (Some(before), Some(after)) = (neg_before, measure(&self.policy, &neg_b)?) {
            m.set(names::DELTA_NEG, after - before);
        }
        if let (Some(before), Some(after)) = (pos_before, measure(&self.policy, &pos_b)?) {
            m.set(names::DELTA_POS, after - before);
        }

        m.set(
            names::ROLLOUT_TOKENS_PER_S,
            rollout_tokens as f64 / time_rollout.max(1e-9),
        );
        m.set(
            names::TRAIN_TOKENS_PER_S,
            train_tokens as f64 / time_train.max(1e-9),
        );
        m.set(names::TOKENS_BACKPROP, train_tokens as f64);
        m.set(names::TIME_ROLLOUT, time_rollout);
        m.set("perf/time_prepare_s", time_prepare);
        m.set(names::TIME_REF, time_prepare);
        m.set(names::TIME_TRAIN, time_train);
        m.set(names::TIME_STEP, t_step.elapsed().as_secs_f64());
        let _ = g;

        self.state.step = step;
        self.state.data_cursor = self.shuffler.cursor();
        self.logger.log(&m)?;
        let n = self.cfg.run.samples_per_step.min(records.len());
        self.logger.log_samples(&records[..n])?;
        if fatal {
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
            "same" => self.policy.model().dtype(),
            s => popo_model::hub::dtype_from_str(s)?,
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
            .params
            .full_named()?
            .into_iter()
            .filter(|(n, _)| policy_names.contains(n))
            .collect();
        let mut optimizer = self.opt.state();
        optimizer.extend(self.params.state());
        let (policy, tok, gen) = (
            &self.policy,
            &self.tokenizer,
            self.generation_config.as_ref(),
        );
        checkpoint::save(
            &self.run_dir,
            &self.state,
            &optimizer,
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
        let tty = std::io::stderr().is_terminal() && !self.quiet;
        let bar = if tty {
            let pb = indicatif::ProgressBar::new(total);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            pb.set_position(self.state.step);
            Some(pb)
        } else {
            None
        };
        let mut interrupted = false;
        while self.state.step < total {
            if self.stop.load(Ordering::SeqCst) {
                interrupted = true;
                break;
            }
            let m = self.step()?;
            let get = |k| m.get(k).unwrap_or(f64::NAN);
            let line = format!(
                "step {}/{total}  reward {:.3}  pos {:.3}  loss {:.4}  tok/s {:.0}/{:.0}  {:.1}s",
                m.step,
                get(names::REWARD_MEAN),
                get(names::POSITIVE_RATIO),
                get(names::LOSS),
                get(names::ROLLOUT_TOKENS_PER_S),
                get(names::TRAIN_TOKENS_PER_S),
                get(names::TIME_STEP)
            );
            match &bar {
                Some(pb) => {
                    pb.set_position(m.step);
                    pb.set_message(line);
                }
                None if !self.quiet => {
                    let eta =
                        start.elapsed().as_secs_f64() / (m.step as f64) * (total - m.step) as f64;
                    eprintln!("{line}  eta {eta:.0}s");
                }
                None => {}
            }
            let every = self.cfg.run.save_every as u64;
            if every > 0 && self.state.step.is_multiple_of(every) && self.state.step < total {
                self.save_checkpoint()?;
            }
            if self.cfg.run.eval_every > 0
                && self
                    .state
                    .step
                    .is_multiple_of(self.cfg.run.eval_every as u64)
                && self.state.step < total
                && !self.eval.is_empty()
            {
                let acc = self.evaluate()?;
                self.log_eval(acc)?;
            }
        }
        if let Some(pb) = bar {
            pb.finish_and_clear();
        }
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

/// What the SFT warm-up needs from the trainer being built.
struct SftCtx<'a> {
    cfg: &'a TrainConfig,
    policy: &'a LmPolicy,
    tokenizer: &'a Tokenizer,
    pad_id: u32,
    device: &'a Device,
    width: usize,
}

impl SftCtx<'_> {
    /// Supervised warm-up on (prompt, worked answer) pairs: token-mean NLL, its own AdamW over
    /// the policy's `params` (so their f32 masters carry over into RL).
    fn run(&self, params: &mut Params) -> Result<()> {
        let cfg = self.cfg;
        let pairs = sft_pairs(cfg, self.tokenizer)?;
        if pairs.is_empty() {
            return Ok(());
        }
        let ocfg = crate::config::OptimConfig {
            lr: cfg.sft.lr,
            min_lr_ratio: 0.1,
            ..cfg.optim.clone()
        };
        let mut opt = AdamW::new(params, &ocfg)?;
        let mut scale =
            LossScale::for_dtype(self.policy.model().dtype(), cfg.optim.init_loss_scale);
        let mut order = Shuffler::new(pairs.len(), cfg.run.seed ^ 0x5f7)?;
        let start = Instant::now();
        let steps = cfg.sft.steps;
        for step in 0..steps {
            let idx = order.next_batch(cfg.sft.batch_size.min(pairs.len()));
            // Token-mean NLL over the whole batch, computed in micro-batches (run side by side on
            // CPU) whose sums share the batch's token count as denominator.
            let n_tokens: usize = idx.iter().map(|&i| pairs[i].1.len()).sum();
            let chunks: Vec<&[usize]> = idx.chunks(cfg.optim.micro_batch_size).collect();
            let factor = scale.as_ref().map_or(1.0, |s| s.scale);
            let micro_step = |k: usize| -> Result<_> {
                let p: Vec<&[u32]> = chunks[k].iter().map(|&i| pairs[i].0.as_slice()).collect();
                let c: Vec<&[u32]> = chunks[k].iter().map(|&i| pairs[i].1.as_slice()).collect();
                let mb = SeqBatch::new(&p, &c, self.pad_id, self.device)?;
                let out = self.policy.forward(&mb, 1.0)?;
                let m = mb.completion_mask.to_dtype(out.logprobs.dtype())?;
                let loss = ((out.logprobs * &m)?.sum_all()?.neg()? / n_tokens.max(1) as f64)?;
                let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                Ok((scaled(&loss, factor)?.backward()?, l))
            };
            let mut acc = GradAccum::new(params.vars());
            let mut loss = 0.0;
            in_waves(chunks.len(), self.width, micro_step, |(grads, l)| {
                loss += l;
                acc.add(&grads)
            })?;
            acc.unscale(factor)?;
            if let Some(s) = &mut scale {
                let finite = acc.global_norm()?.is_finite();
                if !s.update(finite) {
                    bail!("SFT step {step}: non-finite gradients in f16 at loss scale 1");
                }
                if !finite {
                    continue;
                }
            }
            acc.clip(cfg.optim.grad_clip)?;
            opt.step(params, &acc, lr_at(&ocfg, step, steps))?;
            if (step + 1) % 50 == 0 {
                eprintln!(
                    "sft {:>4}/{steps}  loss {loss:.4}  ({:.0}s)",
                    step + 1,
                    start.elapsed().as_secs_f64()
                );
            }
        }
        Ok(())
    }
}

/// `loss * factor` for backward under loss scaling; the loss itself when the factor is 1.
fn scaled(loss: &candle_core::Tensor, factor: f64) -> Result<candle_core::Tensor> {
    Ok(if factor == 1.0 {
        loss.clone()
    } else {
        (loss * factor)?
    })
}

/// (prompt ids, worked-answer ids + EOS) of the built-in task's easy split, for the warm-up.
fn sft_pairs(cfg: &TrainConfig, tokenizer: &Tokenizer) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
    if !cfg.data.path.is_empty() {
        return Ok(Vec::new());
    }
    let template = prompt_template(cfg)?;
    let eos = tokenizer.eos_token_id();
    let mut out = Vec::new();
    for p in cfg.task.generate(task::Split::Sft)? {
        let text = template.render(&p.problem, Some(tokenizer as &dyn data::ChatTemplater))?;
        let mut c = tokenizer.encode(&p.solution, false)?;
        c.extend(eos);
        out.push((tokenizer.encode(&text, false)?, c));
    }
    Ok(out)
}

/// The spec's answer reward reads the last `\boxed{}`: a completion without one scores 0. (The
/// verifier's fallbacks, such as "the last number", would reward unformatted text, which RL then
/// reinforces.)
struct BoxedAnswer(MathReward);

impl Reward for BoxedAnswer {
    fn score(&self, completion_text: &str, gold: &str) -> reward::RewardOut {
        if popo_verify::last_boxed(completion_text).is_none() {
            return reward::RewardOut {
                reward: 0.0,
                correct: false,
                extracted: None,
            };
        }
        self.0.score(completion_text, gold)
    }

    fn name(&self) -> &str {
        "math_boxed"
    }
}

/// DAPO's soft overlong punishment: 0 up to `max_len - cache`, then linear down to `-penalty` at
/// `max_len`.
pub fn overlong_penalty(len: usize, max_len: usize, cache: usize, penalty: f64) -> f64 {
    let start = max_len.saturating_sub(cache);
    if len <= start || cache == 0 {
        0.0
    } else {
        -penalty * ((len - start) as f64 / cache as f64).min(1.0)
    }
}

fn count_groups(rs: &[Rollout]) -> usize {
    let mut g: Vec<usize> = rs.iter().map(|r| r.group).collect();
    g.dedup();
    g.len()
}

/// (reward mean, positive ratio, share of groups with no positive, share all positive,
/// response length mean, max, truncated share).
fn group_stats(rs: &[Rollout], threshold: f64) -> (f64, f64, f64, f64, f64, f64, f64) {
    let n = rs.len().max(1) as f64;
    let groups = RolloutBatch {
        rollouts: rs.to_vec(),
    }
    .groups();
    let ng = groups.len().max(1) as f64;
    let pos = |i: &usize| rs[*i].reward > threshold;
    (
        rs.iter().map(|r| r.reward).sum::<f64>() / n,
        rs.iter().filter(|r| r.reward > threshold).count() as f64 / n,
        groups.iter().filter(|g| !g.iter().any(pos)).count() as f64 / ng,
        groups.iter().filter(|g| g.iter().all(pos)).count() as f64 / ng,
        rs.iter().map(|r| r.completion.len() as f64).sum::<f64>() / n,
        rs.iter().map(|r| r.completion.len()).max().unwrap_or(0) as f64,
        rs.iter().filter(|r| r.truncated).count() as f64 / n,
    )
}

/// Removes up to `k` negatives and `k` positives (at most one per group, from groups keeping at
/// least one positive) from the batch and returns them.
fn select_probe(
    rs: &mut Vec<Rollout>,
    threshold: f64,
    k: usize,
    seed: u64,
) -> (Vec<Rollout>, Vec<Rollout>) {
    let mut rng = SplitMix64(seed);
    let mut shuffled: Vec<usize> = (0..rs.len()).collect();
    for i in (1..shuffled.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        shuffled.swap(i, j);
    }
    let mut take = Vec::new();
    let mut neg = 0;
    let mut pos_groups: Vec<usize> = Vec::new();
    for &i in &shuffled {
        let r = &rs[i];
        if r.reward > threshold {
            let positives = rs
                .iter()
                .filter(|x| x.group == r.group && x.reward > threshold)
                .count();
            if pos_groups.len() < k && positives >= 2 && !pos_groups.contains(&r.group) {
                pos_groups.push(r.group);
                take.push(i);
            }
        } else if neg < k {
            neg += 1;
            take.push(i);
        }
    }
    take.sort_unstable();
    let (mut negs, mut poss) = (Vec::new(), Vec::new());
    for &i in take.iter().rev() {
        let r = rs.remove(i);
        if r.reward > threshold {
            poss.push(r);
        } else {
            negs.push(r);
        }
    }
    (negs, poss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_must_be_boxed() {
        let r = BoxedAnswer(MathReward::new());
        assert!(r.score(" 3+4=7. \\boxed{7}", "7").correct);
        assert!(!r.score(" 3+4=7. the answer is 7", "7").correct);
        assert_eq!(r.score("garbage 7", "7").reward, 0.0);
        assert!(
            MathReward::new().score("garbage 7", "7").correct,
            "the fallback this guards against"
        );
    }

    #[test]
    fn overlong_penalty_is_linear_in_the_cache() {
        assert_eq!(overlong_penalty(10, 100, 20, 1.0), 0.0);
        assert_eq!(overlong_penalty(80, 100, 20, 1.0), 0.0);
        assert!((overlong_penalty(90, 100, 20, 1.0) + 0.5).abs() < 1e-12);
        assert!((overlong_penalty(100, 100, 20, 1.0) + 1.0).abs() < 1e-12);
    }

    #[test]
    fn probe_holds_out_without_emptying_groups() {
        let mk = |group, reward| Rollout {
            group,
            prompt: vec![1],
            completion: vec![2],
            sampler_logprobs: vec![-1.0],
            reward,
            truncated: false,
        };
        let mut rs = vec![
            mk(0, 1.0),
            mk(0, 0.0),
            mk(0, 1.0),
            mk(1, 1.0),
            mk(1, 0.0),
            mk(2, 0.0),
        ];
        let (neg, pos) = select_probe(&mut rs, 0.0, 2, 7);
        assert_eq!(neg.len(), 2);
        assert_eq!(pos.len(), 1); // group 1 has a single positive: it is kept for training
        assert_eq!(pos[0].group, 0);
        assert_eq!(rs.len(), 3);
        assert!(rs.iter().any(|r| r.group == 1 && r.reward > 0.0));
        let (a, b, c, d, e, f, g) = group_stats(&rs, 0.0);
        assert!(a >= 0.0 && b >= 0.0 && c >= 0.0 && d >= 0.0 && e == 1.0 && f == 1.0 && g == 0.0);
    }
}
