//! Config -> what a run trains: the policy (loaded, or the built-in tiny model), its tokenizer and
//! stop ids, the training and held-out prompts (JSONL files, or the built-in task), the run
//! directory, and the learner and algorithm, each built once.

use crate::algo::{self, Algorithm};
use crate::checkpoint;
use crate::config::{AlgoName, TrainConfig};
use crate::data::{self, DataCursor, JsonlFormat, LoadStats, Prompt, Shuffler};
use crate::learner::Learner;
use crate::lm::{self, LmPolicy, Tokenizer};
use crate::parallel::micro_batch_width;
use crate::params::Params;
use crate::policy::Policy;
use crate::task;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};

/// Where the policy comes from and what it trains on, after config resolution.
pub struct Setup {
    pub policy: LmPolicy,
    pub tokenizer: Tokenizer,
    pub generation_config: Option<serde_json::Value>,
    /// Every EOS id of config.json, generation_config.json and the tokenizer.
    pub stop_ids: Vec<u32>,
    /// The id rows are padded with in training batches.
    pub pad_id: u32,
    pub train: Vec<Prompt>,
    pub eval: Vec<Prompt>,
}

/// Builds the policy, tokenizer and prompt sets from the config (the built-in task and model when
/// `model.path` / `data.path` are empty). `checkpoint` overrides the weights (resume).
pub fn setup(cfg: &TrainConfig, device: &Device, checkpoint: Option<&Path>) -> Result<Setup> {
    let dtype = cfg.run.dtype.resolve(device);
    // A LoRA checkpoint holds adapters only: its base is loaded as at the start.
    let weights_from = checkpoint.filter(|_| !cfg.model.lora.enabled());
    let loaded = match (weights_from, cfg.model.path.as_str()) {
        (Some(dir), _) => LmPolicy::load(dir, device, dtype)?,
        (None, "") => {
            let tokenizer = crate::tiny::tokenizer()?;
            let mcfg = cfg.tiny_model.config(&tokenizer)?;
            lm::Loaded {
                policy: LmPolicy::seeded(&mcfg, device, dtype, cfg.run.seed, 0.02)?,
                tokenizer,
                generation_config: None,
            }
        }
        (None, p) => LmPolicy::load(&lm::resolve(p)?, device, dtype)?,
    };
    let lm::Loaded {
        policy,
        tokenizer,
        generation_config,
    } = loaded;
    let (lora, path) = (&cfg.model.lora, cfg.model.path.as_str());
    let policy = crate::lora::apply(lora, path, cfg.run.seed, policy, checkpoint)?;
    let stop_ids = policy.stop_ids(generation_config.as_ref(), &tokenizer)?;
    let eos = tokenizer.eos_token_id();
    let pad_id = tokenizer.pad_token_id().or(eos).unwrap_or(0);
    let (train, eval) = prompts(cfg, &tokenizer)?;
    Ok(Setup {
        policy,
        tokenizer,
        generation_config,
        stop_ids,
        pad_id,
        train,
        eval,
    })
}

/// The training and held-out prompts, rendered with the prompt template and tokenized.
fn prompts(cfg: &TrainConfig, tokenizer: &Tokenizer) -> Result<(Vec<Prompt>, Vec<Prompt>)> {
    let template = cfg.data.template;
    let mut stats = LoadStats::default();
    let mut prepare = |examples: &[data::Example]| {
        data::prepare_prompts(
            examples,
            template,
            tokenizer,
            cfg.data.max_prompt_len,
            &mut stats,
        )
    };
    let (train, eval) = if cfg.data.path.is_empty() {
        let examples = |split| -> Result<Vec<data::Example>> {
            Ok(cfg
                .task
                .generate(split)?
                .iter()
                .map(|p| p.example())
                .collect())
        };
        (
            prepare(&examples(task::Split::Rl)?)?,
            prepare(&examples(task::Split::Eval)?)?,
        )
    } else {
        let fmt = JsonlFormat {
            problem_field: cfg.data.problem_field.clone(),
            answer_field: cfg.data.answer_field.clone(),
            skip_invalid: cfg.data.skip_invalid,
        };
        let (examples, st) = data::load_jsonl(&popo_model::expand_home(&cfg.data.path), &fmt)?;
        let train = prepare(&examples)?;
        let eval = if cfg.data.eval_path.is_empty() {
            Vec::new()
        } else {
            prepare(&data::load_jsonl(&popo_model::expand_home(&cfg.data.eval_path), &fmt)?.0)?
        };
        stats.skipped_invalid += st.skipped_invalid;
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
    Ok((train, eval.into_iter().take(cfg.run.eval_size).collect()))
}

/// The run directory of a fresh run (`run.out_dir`, or `runs/<preset>-<unix time>`), created;
/// refused when it already holds a run, so that no log or checkpoint is ever overwritten.
pub fn new_run_dir(cfg: &TrainConfig) -> Result<PathBuf> {
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
    if run_dir.join(crate::metrics::METRICS_FILE).exists() {
        bail!(
            "{} already holds a run (metrics.jsonl): choose another run.out_dir",
            run_dir.display()
        );
    }
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    Ok(run_dir)
}

/// The policy's trainable parameters (with f32 masters in mixed precision), and the
/// micro-batches run at once (`run.cpu_parallel`). What the SFT warm-up (`sft::warm_up`) trains
/// before [`build_learner`] takes them.
pub fn policy_params(cfg: &TrainConfig, s: &Setup, device: &Device) -> Result<(Params, usize)> {
    let width = micro_batch_width(cfg.run.cpu_parallel, device);
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
    Ok((Params::new(s.policy.named_vars(), keep_master)?, width))
}

/// The algorithm, its target / reference forked from the policy as it is now (after any
/// warm-up), and a learner over `params` (the policy's) plus the algorithm's own (a predictor).
pub fn build_learner(
    cfg: &TrainConfig,
    s: &Setup,
    device: &Device,
    mut params: Params,
    width: usize,
) -> Result<(Learner, Box<dyn Algorithm>)> {
    let algo = algorithm(cfg, &s.policy, device)?;
    params.extend(algo.extra_vars())?;
    let learner = Learner::new(params, &cfg.optim, width, s.policy.dtype())?;
    Ok((learner, algo))
}

/// Builds the configured algorithm; the policy is needed to fork a target / reference copy.
/// Here rather than in `algo`, whose algorithms import `algo` for the trait they implement.
pub fn algorithm(
    cfg: &TrainConfig,
    policy: &dyn Policy,
    device: &Device,
) -> Result<Box<dyn Algorithm>> {
    Ok(match cfg.algo.name {
        AlgoName::Popo => Box::new(algo::positive_only::Popo::new(cfg, policy, device)?),
        AlgoName::Grpo => Box::new(algo::grpo::Grpo::new(cfg, policy)?),
        AlgoName::Raft => Box::new(algo::raft::Raft::new(cfg)),
        AlgoName::Reinforce => Box::new(algo::reinforce::Reinforce::new(cfg)),
    })
}

/// The order prompts are drawn in: a fresh permutation each epoch, or file order with
/// `data.shuffle = false`; from `cursor` when resuming.
pub fn shuffler(cfg: &TrainConfig, len: usize, cursor: Option<DataCursor>) -> Result<Shuffler> {
    let s = match cursor {
        Some(c) => Shuffler::from_cursor(len, c)?,
        None => Shuffler::new(len, cfg.run.seed)?,
    };
    Ok(if cfg.data.shuffle { s } else { s.in_order() })
}
