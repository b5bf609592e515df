//! The `popo` binary: a thin command-line layer over the popo crates.
//! Each subcommand lives in `cmd/<name>.rs` and only parses flags and calls library code.

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(
    name = "popo",
    version = env!("POPO_BUILD"),
    about = "Positive-Only Policy Optimization (and GRPO, Dr. GRPO, DAPO, RAFT) for language models",
    long_about = None
)]
// pub: tests/docs.rs includes this file to check the user guide against every flag.
pub struct Cli {
    /// Log filter, as in RUST_LOG (e.g. `info`, `popo_train=debug`).
    #[arg(long, global = true, default_value = "info", env = "POPO_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a policy with POPO or a baseline (with no arguments: the built-in CPU demo run).
    Train(cmd::train::Args),
    /// Check math answers: `popo verify GOLD RESPONSE` or `popo verify --input FILE.jsonl`.
    Verify(cmd::verify::Args),
    /// Per-token log-probs of given completions under a model.
    Score(cmd::score::Args),
    /// Sample completions from a model.
    Generate(cmd::generate::Args),
    /// Evaluate a model on math benchmarks (avg@n, pass@k, maj@k, greedy).
    Eval(cmd::eval::Args),
    /// Run a grid of training runs (algorithms x seeds x overrides) and write a report.
    Experiment(cmd::experiment::Args),
    /// Write a model out: a LoRA checkpoint merged into its base (--merge), or a model with its
    /// tied LM head written out for vLLM servers (--untie).
    Export(cmd::export::Args),
    /// Plot metric curves of one or more run directories.
    Plot(cmd::plot::Args),
    /// Measure decode and training throughput of a model (tokens/s, peak memory).
    Bench(cmd::bench::Args),
}

fn main() {
    restore_sigpipe();
    tune_allocator();
    popo_train::parallel::fix_thread_count();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let result = match cli.command {
        Command::Train(a) => cmd::train::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Score(a) => cmd::score::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Experiment(a) => cmd::experiment::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Plot(a) => cmd::plot::run(a),
        Command::Bench(a) => cmd::bench::run(a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

/// candle allocates a fresh buffer for every op. glibc's defaults give large freed buffers back to
/// the kernel and fault them in again on the next op, and with threads each arena does it, so a
/// CPU step spends much of its time in the kernel (BENCHMARKS.md has the figures). Keeping freed
/// memory for reuse costs no more than the peak a step needs anyway.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called first thing, on one thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        // Buffers above 32 MiB (a prefill's attention scores, a grown KV cache) would still be
        // mapped and unmapped each time, their pages faulted in again.
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
}

/// Rust ignores SIGPIPE, so `popo verify ... | head` would panic on the closed pipe.
/// Command-line tools conventionally just stop; restore that.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; resets one signal disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
