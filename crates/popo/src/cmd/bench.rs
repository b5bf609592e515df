//! `popo bench`: decode and training throughput of a model (`popo_train::bench`).

use anyhow::Result;
use popo_train::bench::{self, BenchConfig};
use popo_train::config::ConfigBuilder;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Decode batch sizes, comma-separated; each row samples at T = 1 to the full length.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256")]
    pub batch: Vec<usize>,
    /// Samples per prompt in a decode batch: a batch of B rows is B / G prompts with G samples
    /// each, as an RL step's rollouts are (their prompt is prefilled once). 1: B distinct prompts.
    #[arg(long, default_value_t = 1)]
    pub group_size: usize,
    /// Prompt tokens per row (random ids).
    #[arg(long, default_value_t = 128)]
    pub prompt_len: usize,
    /// Tokens generated per row.
    #[arg(long, default_value_t = 256)]
    pub new_tokens: usize,
    /// Sequences in the timed training update (0: no training measurement).
    #[arg(long, default_value_t = 16)]
    pub train_batch: usize,
    /// Tokens per training sequence (a quarter prompt, the rest completion).
    #[arg(long, default_value_t = 512)]
    pub train_len: usize,
    /// Sequences per forward/backward inside the update.
    #[arg(long, default_value_t = 8)]
    pub micro_batch: usize,
    /// Train fresh rank-R LoRA adapters in the update instead of the whole model (`model.lora.r`,
    /// on every projection, alpha 32); 0: full fine-tuning. Decoding runs on the base.
    #[arg(long, default_value_t = 0)]
    pub lora_r: usize,
    /// With --lora-r: decode with the adapters applied on the side of each projection instead of
    /// merged into the decoding copy (the default), to compare the two.
    #[arg(long, requires = "lora_r")]
    pub lora_side_decoding: bool,
    /// Recompute activations layer by layer in the update (`optim.gradient_checkpointing`).
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Choose decode tokens on the host from copied logits, as top-k / top-p / min-p sampling
    /// does, instead of on the logits' device: measures what on-device sampling saves.
    #[arg(long)]
    pub host_sampling: bool,
    /// How the CPU's cores are shared in the update, as `run.cpu_parallel` in a run: `ops`
    /// (candle splits each op across the cores), `micro_batches` (one core per micro-batch,
    /// several at once; ops of decoding on one core each) or `auto` (what `popo train` picks
    /// for this model: ops, unless CANDLE_NUM_THREADS=1).
    #[arg(long, default_value = "auto", value_parser = ["auto", "ops", "micro_batches"])]
    pub cpu_parallel: String,
    /// Timed runs per measurement (the median is reported), after one warm-up run.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Seed of the random prompts and of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object (stable keys) instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<i32> {
    let device = popo_model::device_from_str(&args.model.device)?;
    // Read as the config reads `run.cpu_parallel`, and the process set up as `popo train` sets
    // it, before the first candle op sizes candle's thread pool.
    let mut process = ConfigBuilder::new()
        .set(&format!("run.cpu_parallel={}", args.cpu_parallel))?
        .build()?;
    process.model.path = args.model.model.clone();
    popo_train::parallel::configure_process(&process);
    let cpu_parallel = process.run.cpu_parallel;
    let pre = args.model.load()?;
    let loaded = popo_train::lm::Loaded::from(pre)?;
    let lora = popo_train::lora::LoraSection {
        r: args.lora_r,
        ..Default::default()
    };
    let mut policy =
        popo_train::lora::apply(&lora, &args.model.model, args.seed, loaded.policy, None)?;
    policy.set_lora_side_decoding(args.lora_side_decoding);
    let cfg = BenchConfig {
        batches: args.batch.clone(),
        group_size: args.group_size,
        prompt_len: args.prompt_len,
        new_tokens: args.new_tokens,
        train_batch: args.train_batch,
        train_len: args.train_len,
        micro_batch: args.micro_batch,
        checkpoint: args.gradient_checkpointing,
        cpu_parallel,
        host_sampling: args.host_sampling,
        repeats: args.repeats,
        seed: args.seed,
    };
    let mut report = bench::run(&policy, &loaded.tokenizer, &device, &cfg, &mut |what| {
        eprintln!("bench: {what}")
    })?;
    report.model = args.model.model.clone();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(0)
}
