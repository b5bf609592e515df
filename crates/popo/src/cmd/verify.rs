//! `popo verify`: check math answers.
//!
//! - `popo verify GOLD RESPONSE`: print the verdict; exit 0 if correct, 1 if not, 2 on error.
//! - `popo verify --input FILE.jsonl`: every input line comes back on stdout, in order, with
//!   `correct`, `gold_answer` and `pred_answer` added; a summary goes to stderr.
//! - `popo verify --bench`: pairs/s on the 2,000 MATH500 benchmark pairs.

use anyhow::{bail, Context};
use popo::input::verify_jsonl;
use popo_verify::{bench::benchmark_pairs, verify, verify_batch};
use serde_json::Value;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The gold answer (its `\boxed{}` if it has one, otherwise the whole string).
    pub gold: Option<String>,
    /// The model response to extract the answer from.
    pub response: Option<String>,
    /// JSONL file of pairs: one object per line with `gold` (or `answer`) and `pred` (or `response`).
    #[arg(long, conflicts_with_all = ["gold", "response", "bench"])]
    pub input: Option<PathBuf>,
    /// Worker threads for `--input` / `--bench` (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Report a malformed input line as an output line with `correct: false` and an `error`
    /// field instead of stopping.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Print the verdict of `GOLD RESPONSE` as JSON.
    #[arg(long)]
    pub json: bool,
    /// Benchmark on the 2,000 MATH500 pairs (see BENCHMARKS.md).
    #[arg(long, conflicts_with_all = ["gold", "response"])]
    pub bench: bool,
    /// Directory holding `math500.jsonl` for `--bench` (without one: popo's converted copy, or
    /// the Hugging Face cache's, as for `popo eval --bench math500`).
    #[arg(long, env = "POPO_DATA")]
    pub data_dir: Option<PathBuf>,
    /// With `--bench`: also write the pairs as JSONL (`gold`, `pred`) to this file.
    #[arg(long, requires = "bench")]
    pub write_pairs: Option<PathBuf>,
    /// With `--bench`: repeat the pass this many times and report the best.
    #[arg(long, default_value_t = 5, requires = "bench")]
    pub repeat: usize,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    if args.bench {
        return bench(&args);
    }
    if let Some(path) = &args.input {
        return run_file(path, args.threads, args.skip_invalid);
    }
    let (Some(gold), Some(response)) = (&args.gold, &args.response) else {
        bail!("give GOLD and RESPONSE, or --input FILE.jsonl, or --bench");
    };
    let v = verify(gold, response);
    if args.json {
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!("correct: {}", v.correct);
        println!("gold:    {}", v.gold_answer.as_deref().unwrap_or("(none)"));
        println!("pred:    {}", v.pred_answer.as_deref().unwrap_or("(none)"));
        println!("reason:  {}", v.reason);
    }
    Ok(if v.correct { 0 } else { 1 })
}

fn run_file(path: &Path, threads: usize, skip_invalid: bool) -> anyhow::Result<i32> {
    let start = Instant::now();
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let (pairs, correct) = verify_jsonl(
        std::io::BufReader::new(file),
        &mut out,
        threads,
        skip_invalid,
    )
    .with_context(|| path.display().to_string())?;
    out.flush()?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "pairs: {}, correct: {} ({:.1}%), {:.0} pairs/s",
        pairs,
        correct,
        100.0 * correct as f64 / pairs.max(1) as f64,
        pairs as f64 / secs.max(1e-9)
    );
    Ok(0)
}

fn bench(args: &Args) -> anyhow::Result<i32> {
    let places = popo_eval::datasets::Places::from_env(args.data_dir.as_deref());
    let path = popo_eval::datasets::find("math500", &places)?;
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut golds = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value =
            serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), i + 1))?;
        let g = v["answer"]
            .as_str()
            .with_context(|| format!("{}:{}: no string `answer`", path.display(), i + 1))?;
        golds.push(g.to_string());
    }
    let pairs = benchmark_pairs(&golds);
    if let Some(out) = &args.write_pairs {
        let mut w = BufWriter::new(
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
        );
        for (g, p) in &pairs {
            serde_json::to_writer(&mut w, &serde_json::json!({"gold": g, "pred": p}))?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    let mut best = f64::INFINITY;
    let mut correct = 0;
    for _ in 0..args.repeat.max(1) {
        let t = Instant::now();
        let v = verify_batch(&pairs, args.threads);
        best = best.min(t.elapsed().as_secs_f64());
        correct = v.iter().filter(|v| v.correct).count();
    }
    println!(
        "{} pairs, {} correct, best of {}: {:.2} ms, {:.0} pairs/s ({} threads)",
        pairs.len(),
        correct,
        args.repeat.max(1),
        best * 1e3,
        pairs.len() as f64 / best,
        if args.threads == 0 {
            "all".to_string()
        } else {
            args.threads.to_string()
        }
    );
    Ok(0)
}
