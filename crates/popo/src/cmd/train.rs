//! `popo train`: resolve the config, run the trainer, print the result.
//! With no arguments: the built-in CPU demo (arithmetic task, tiny model, SFT warm-up, POPO).

use anyhow::Result;
use popo_train::config::ConfigBuilder;
use popo_train::trainer::Trainer;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// TOML config file (any subset of the keys; see config.toml in a run directory).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// popo | grpo | dr_grpo | dapo | raft | nsr | w_reinforce (nsr: REINFORCE on negatives only;
    /// w_reinforce: negatives plus positives weighted by algo.psr_weight = 0.1). Applied over
    /// --config (so it wins over a run's resolved config.toml) and under --set.
    #[arg(long)]
    pub preset: Option<String>,
    /// HF model directory (default: the built-in tiny model).
    #[arg(long)]
    pub model: Option<String>,
    /// A PEFT LoRA adapter directory to continue training (sets model.lora.adapter; its r,
    /// alpha, dropout and target_modules are used; the base is --model).
    #[arg(long)]
    pub adapter: Option<String>,
    /// JSONL training set with `problem` and `answer` (default: the built-in arithmetic task).
    #[arg(long)]
    pub data: Option<String>,
    /// JSONL held-out set for evaluation (without one, a run on --data has no held-out evaluation).
    #[arg(long)]
    pub eval_data: Option<String>,
    /// Run directory (default: runs/<preset>-<unix time>).
    #[arg(long)]
    pub out: Option<String>,
    /// Number of rollout steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Count and skip JSONL lines that do not parse.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Override any config key, e.g. `--set optim.lr=1e-5 --set algo.alpha=0` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue a run: its directory or one of its checkpoints. The run's own config.toml holds,
    /// so every flag that would change it is refused (a new --steps would also move the learning
    /// rate schedule of the steps already taken); --print-config prints it.
    #[arg(long, conflicts_with_all = [
        "config", "preset", "model", "adapter", "data", "eval_data", "out", "steps", "skip_invalid", "set",
    ])]
    pub resume: Option<PathBuf>,
    /// Print the resolved config and exit.
    #[arg(long)]
    pub print_config: bool,
}

pub fn run(args: Args) -> Result<i32> {
    let start = std::time::Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // SIGINT / SIGTERM: finish the current step, checkpoint, exit.
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\ninterrupt: writing a checkpoint after this step (again to abort)");
        });
    }
    let mut trainer = match &args.resume {
        Some(dir) => {
            let cfg = Trainer::resumed_config(dir)?;
            if args.print_config {
                print!("{}", cfg.to_toml()?);
                return Ok(0);
            }
            popo_train::parallel::configure_process(&cfg);
            Trainer::resume(dir, stop)?
        }
        None => {
            let mut b = ConfigBuilder::new().preset(args.preset.as_deref());
            if let Some(p) = &args.config {
                b = b.file(p)?;
            }
            let s = |v: &str| toml::Value::String(v.to_string());
            if let Some(m) = &args.model {
                b = b.set_value("model.path", s(m));
            }
            if let Some(a) = &args.adapter {
                b = b.set_value("model.lora.adapter", s(a));
            }
            if let Some(d) = &args.data {
                b = b.set_value("data.path", s(d));
            }
            if let Some(d) = &args.eval_data {
                b = b.set_value("data.eval_path", s(d));
            }
            if let Some(o) = &args.out {
                b = b.set_value("run.out_dir", s(o));
            }
            if let Some(n) = args.steps {
                b = b.set_value("run.steps", toml::Value::Integer(n as i64));
            }
            if args.skip_invalid {
                b = b.set_value("data.skip_invalid", toml::Value::Boolean(true));
            }
            for kv in &args.set {
                b = b.set(kv)?;
            }
            let cfg = b.build()?;
            if args.print_config {
                print!("{}", cfg.to_toml()?);
                return Ok(0);
            }
            popo_train::parallel::configure_process(&cfg);
            Trainer::new(cfg, stop)?
        }
    };
    let summary = trainer.run()?;
    let pct = |v: Option<f64>| {
        v.map(|a| format!("{:.1}%", 100.0 * a))
            .unwrap_or_else(|| "n/a".into())
    };
    println!("held-out accuracy before: {}", pct(summary.eval_before));
    println!("held-out accuracy after:  {}", pct(summary.eval_after));
    if let Some(p) = &summary.pass_at_k {
        let ks: Vec<String> = p
            .pass_at_k
            .iter()
            .map(|(k, v)| format!("pass@{k} {:.1}%", 100.0 * v))
            .collect();
        println!(
            "held-out, {} samples at T = 1: avg@{} {:.1}%, {}",
            p.n,
            p.n,
            100.0 * p.avg_at_n,
            ks.join(", ")
        );
    }
    println!(
        "steps: {}  wall: {:.0}s (RL loop {:.0}s)",
        summary.steps_done,
        start.elapsed().as_secs_f64(),
        summary.wall_s
    );
    println!("run directory: {}", summary.run_dir.display());
    if summary.interrupted {
        println!(
            "interrupted: resume with `popo train --resume {}`",
            summary.run_dir.display()
        );
        return Ok(130);
    }
    Ok(0)
}
