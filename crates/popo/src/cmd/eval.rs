//! `popo eval --model DIR --bench NAME_OR_PATH[,...]`: avg@n, pass@k, maj@n and greedy accuracy.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

use popo_eval::bench::{default_batch_size, resolve_bench, EvalConfig, ModelInfo};
use popo_eval::job::EvalJob;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// HF model directory, a checkpoint written by `popo train`, or a run directory (its latest checkpoint).
    #[arg(long)]
    pub model: PathBuf,
    /// A PEFT LoRA adapter directory to apply to --model (a LoRA run's checkpoint given as
    /// --model needs none: it is one).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// The base model of an adapter given as --model (default: its base_model_name_or_path).
    #[arg(long)]
    pub base: Option<String>,
    /// Benchmarks: names (math500, aime24, aime25, amc23, minerva_math, olympiadbench, gsm8k_test)
    /// looked up in the data directory, or JSONL paths; comma-separated.
    #[arg(long, required = true, value_delimiter = ',')]
    pub bench: Vec<String>,
    /// Samples per problem (0 with --greedy: greedy only).
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    /// Sampling temperature of the n samples (the greedy row ignores it).
    #[arg(long, default_value_t = 0.6)]
    pub temperature: f64,
    /// Nucleus sampling: draw from the most likely tokens holding this share of the mass (1 = off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Most tokens generated per sample.
    #[arg(long, default_value_t = 4096)]
    pub max_new_tokens: usize,
    /// qwen_math | r1_zero | chat | plain.
    #[arg(long, default_value = "qwen_math")]
    pub template: String,
    /// Problem i's samples are seeded from (seed, i) alone, whatever the batch or subset.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also decode greedily and report greedy accuracy.
    #[arg(long)]
    pub greedy: bool,
    /// When the gold is a number, count only a number written out (`24 + 65 + 34` is wrong for
    /// 123), as the trainer's reward does by default (`reward.literal_numbers`); `false` accepts
    /// any expression of equal value, as math-verify does.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub literal_numbers: bool,
    /// Where benchmark names resolve.
    #[arg(long, env = "POPO_DATA")]
    pub data_dir: Option<PathBuf>,
    /// Output directory for samples.jsonl, results.json and results.md.
    #[arg(long, default_value = "eval-out")]
    pub out: PathBuf,
    /// Only the first N problems of each benchmark.
    #[arg(long)]
    pub limit: Option<usize>,
    /// The JSONL field holding the problem text.
    #[arg(long, default_value = "problem")]
    pub problem_field: String,
    /// The JSONL field holding the gold answer.
    #[arg(long, default_value = "answer")]
    pub answer_field: String,
    /// cpu | cuda | cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Rows (samples and greedy decodes, of many problems) decoding at once; problems join the
    /// batch as rows finish. Default 64 on CPU, 256 on GPU. Samples do not depend on it (float
    /// rounding aside).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// f32 | bf16 | f16
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

pub fn run(args: Args) -> Result<i32> {
    let cfg = EvalConfig {
        n: args.n,
        temperature: args.temperature,
        top_p: args.top_p,
        max_new_tokens: args.max_new_tokens,
        template: args.template.parse()?,
        seed: args.seed,
        greedy: args.greedy,
        literal_numbers: args.literal_numbers,
        limit: args.limit,
        problem_field: args.problem_field.clone(),
        answer_field: args.answer_field.clone(),
    };
    if args.batch_size == Some(0) {
        bail!("--batch-size must be at least 1");
    }
    if args.n == 0 && !args.greedy {
        bail!("nothing to do: --n 0 without --greedy");
    }
    // Resolve every benchmark before loading the model: a typo fails fast.
    let benches = args
        .bench
        .iter()
        .map(|b| resolve_bench(b, args.data_dir.as_deref()))
        .collect::<Result<Vec<_>>>()?;
    let (checkpoint, step) = popo_train::checkpoint::resolve_model_dir(&args.model)?;
    let device = popo_model::device_from_str(&args.device)?;
    let dtype = popo_model::dtype_from_str(&args.dtype)?;
    let pre = popo_model::load_with_adapter(
        &checkpoint,
        args.adapter.as_deref(),
        args.base.as_deref(),
        &device,
        dtype,
    )?;
    let tokenizer = pre
        .tokenizer
        .as_ref()
        .with_context(|| format!("{}: no tokenizer.json", checkpoint.display()))?;
    let job = EvalJob {
        model: &pre.model,
        tokenizer,
        stop_token_ids: &pre.stop_ids()?,
        info: ModelInfo {
            model: args.model.display().to_string(),
            checkpoint: checkpoint.display().to_string(),
            step,
        },
        cfg,
        benches,
        batch_size: args
            .batch_size
            .unwrap_or_else(|| default_batch_size(&device)),
        out: args.out,
    };
    let (_, summary) = popo_eval::job::run(&job)?;
    println!("{summary}");
    Ok(0)
}
