//! `popo eval --model DIR --bench NAME_OR_PATH[,...]`: avg@n, pass@k, maj@n and greedy accuracy.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;

use popo_eval::bench::{
    default_batch_size, evaluate_bench, markdown_table, resolve_bench, EvalConfig, EvalResults,
    ModelInfo,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// HF model directory, a checkpoint written by `popo train`, or a run directory (its latest checkpoint).
    #[arg(long)]
    pub model: PathBuf,
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
    let batch_size = args
        .batch_size
        .unwrap_or_else(|| default_batch_size(&device));
    let pre = popo_model::load_pretrained(&checkpoint, &device, dtype)?;
    let tokenizer = pre
        .tokenizer
        .as_ref()
        .with_context(|| format!("{}: no tokenizer.json", checkpoint.display()))?;
    let stops = pre.stop_ids()?;

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let samples_path = args.out.join("samples.jsonl");
    let mut samples = std::io::BufWriter::new(
        std::fs::File::create(&samples_path)
            .with_context(|| format!("creating {}", samples_path.display()))?,
    );
    let tty = std::io::stderr().is_terminal();
    let mut results = EvalResults {
        model: ModelInfo {
            model: args.model.display().to_string(),
            checkpoint: checkpoint.display().to_string(),
            step,
        },
        config: cfg.clone(),
        benchmarks: Vec::new(),
    };
    for (name, path) in &benches {
        let pb = ProgressBar::new(0);
        pb.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} problems, eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb.set_message(name.clone());
        if !tty {
            pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let started = std::time::Instant::now();
        let mut progress = |done: usize, total: usize| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
            if !tty {
                let elapsed = started.elapsed().as_secs_f64();
                let eta = elapsed / done as f64 * (total - done) as f64;
                eprintln!("{name}: {done}/{total} problems, {elapsed:.0}s elapsed, eta {eta:.0}s");
            }
        };
        let r = evaluate_bench(
            &pre.model,
            tokenizer,
            &stops,
            name,
            path,
            &cfg,
            batch_size,
            &mut samples,
            &mut progress,
        )?;
        pb.finish_and_clear();
        eprintln!(
            "{name}: {} problems in {:.1}s ({:.2} problems/s), {} tokens generated ({:.1} tok/s), batch size {batch_size}",
            r.metrics.num_problems,
            r.wall_time_s,
            r.metrics.num_problems as f64 / r.wall_time_s,
            r.generated_tokens,
            r.generated_tokens as f64 / r.wall_time_s
        );
        results.benchmarks.push(r);
    }
    let json_path = args.out.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let table = markdown_table(&results);
    std::fs::write(args.out.join("results.md"), &table)?;
    println!("{table}");
    println!(
        "model {} (checkpoint {}), template {}, temperature {}, top_p {}, n {}, max tokens {}, seed {}",
        results.model.model,
        results.model.checkpoint,
        cfg.template,
        cfg.temperature,
        cfg.top_p,
        cfg.n,
        cfg.max_new_tokens,
        cfg.seed
    );
    println!("wrote {}, {}", json_path.display(), samples_path.display());
    Ok(0)
}
