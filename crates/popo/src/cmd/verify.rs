//! `popo verify`: check math answers.
//!
//! - `popo verify GOLD RESPONSE`: print the verdict; exit 0 if correct, 1 if not, 2 on error.
//! - `popo verify --input FILE.jsonl`: every input line comes back on stdout, in order, with
//!   `correct`, `gold_answer` and `pred_answer` added; a summary goes to stderr.
//! - `popo verify --bench`: pairs/s on the 2,000 MATH500 benchmark pairs.

use anyhow::{bail, Context};
use popo_verify::{bench::benchmark_pairs, verify, verify_batch, Verdict};
use serde_json::{Map, Value};
use std::io::{BufRead, BufWriter, Write};
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
    /// Directory holding `math500.jsonl` for `--bench`.
    #[arg(long, default_value = "../shared/data")]
    pub data_dir: PathBuf,
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

fn field<'a>(obj: &'a Map<String, Value>, names: &[&str]) -> Result<&'a str, String> {
    for n in names {
        match obj.get(*n) {
            Some(Value::String(s)) => return Ok(s),
            Some(Value::Null) | None => continue,
            Some(_) => return Err(format!("field `{n}` is not a string")),
        }
    }
    Err(format!("missing field `{}`", names.join("` / `")))
}

enum Line {
    Pair(Map<String, Value>, usize),
    Invalid(Map<String, Value>, String),
}

fn run_file(path: &Path, threads: usize, skip_invalid: bool) -> anyhow::Result<i32> {
    let start = Instant::now();
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut lines = Vec::new();
    let mut pairs = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: reading", path.display(), i + 1))?;
        // On error: the message, and the object to report it in (the input's own object
        // when it was one).
        let parsed: Result<
            (Map<String, Value>, (String, String)),
            (String, Option<Map<String, Value>>),
        > = match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(obj)) => {
                match (
                    field(&obj, &["gold", "answer"]),
                    field(&obj, &["pred", "response"]),
                ) {
                    (Ok(g), Ok(p)) => {
                        let pair = (g.to_string(), p.to_string());
                        Ok((obj, pair))
                    }
                    (Err(e), _) | (_, Err(e)) => Err((e, Some(obj))),
                }
            }
            Ok(_) => Err(("not a JSON object".into(), None)),
            Err(e) => Err((format!("invalid JSON: {e}"), None)),
        };
        match parsed {
            Ok((obj, pair)) => {
                lines.push(Line::Pair(obj, pairs.len()));
                pairs.push(pair);
            }
            Err((e, obj)) if skip_invalid => {
                let obj = obj.unwrap_or_else(|| {
                    let mut obj = Map::new();
                    obj.insert("line".into(), Value::from(i + 1));
                    obj.insert("input".into(), Value::String(line));
                    obj
                });
                lines.push(Line::Invalid(obj, format!("line {}: {e}", i + 1)));
            }
            Err((e, _)) => bail!(
                "{}:{}: {e} (use --skip-invalid to keep going)",
                path.display(),
                i + 1
            ),
        }
    }
    let verdicts: Vec<Verdict> = verify_batch(&pairs, threads);
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut correct = 0usize;
    for line in lines {
        let obj = match line {
            Line::Pair(mut obj, k) => {
                let v = &verdicts[k];
                correct += v.correct as usize;
                obj.insert("correct".into(), Value::Bool(v.correct));
                obj.insert(
                    "gold_answer".into(),
                    v.gold_answer.clone().map_or(Value::Null, Value::String),
                );
                obj.insert(
                    "pred_answer".into(),
                    v.pred_answer.clone().map_or(Value::Null, Value::String),
                );
                obj
            }
            Line::Invalid(mut obj, e) => {
                obj.insert("correct".into(), Value::Bool(false));
                obj.insert("gold_answer".into(), Value::Null);
                obj.insert("pred_answer".into(), Value::Null);
                obj.insert("error".into(), Value::String(e));
                obj
            }
        };
        serde_json::to_writer(&mut out, &obj)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "pairs: {}, correct: {} ({:.1}%), {:.0} pairs/s",
        pairs.len(),
        correct,
        100.0 * correct as f64 / pairs.len().max(1) as f64,
        pairs.len() as f64 / secs.max(1e-9)
    );
    Ok(0)
}

fn bench(args: &Args) -> anyhow::Result<i32> {
    let path = args.data_dir.join("math500.jsonl");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (set --data-dir)", path.display()))?;
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
