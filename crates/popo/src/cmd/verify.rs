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

/// A malformed input line: the message, and the input's own object when it was one.
struct BadLine {
    msg: String,
    obj: Option<Map<String, Value>>,
}

type Pair = (String, String);

fn read_pair(line: &str) -> Result<(Map<String, Value>, Pair), BadLine> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(obj)) => {
            let gold = field(&obj, &["gold", "answer"]).map(str::to_string);
            let pred = field(&obj, &["pred", "response"]).map(str::to_string);
            match (gold, pred) {
                (Ok(g), Ok(p)) => Ok((obj, (g, p))),
                (Err(msg), _) | (_, Err(msg)) => Err(BadLine {
                    msg,
                    obj: Some(obj),
                }),
            }
        }
        Ok(_) => Err(BadLine {
            msg: "not a JSON object".into(),
            obj: None,
        }),
        Err(e) => Err(BadLine {
            msg: format!("invalid JSON: {e}"),
            obj: None,
        }),
    }
}

enum Line {
    Pair(Map<String, Value>, usize),
    Invalid(Map<String, Value>, String),
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

/// Verify every line of a JSONL stream, writing each input object back in order with the
/// verdict fields added. Returns (pairs verified, correct). Errors name the line number.
fn verify_jsonl(
    input: impl BufRead,
    mut out: impl Write,
    threads: usize,
    skip_invalid: bool,
) -> anyhow::Result<(usize, usize)> {
    let mut lines = Vec::new();
    let mut pairs = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("line {}: reading", i + 1))?;
        match read_pair(&line) {
            Ok((obj, pair)) => {
                lines.push(Line::Pair(obj, pairs.len()));
                pairs.push(pair);
            }
            Err(BadLine { msg, obj }) if skip_invalid => {
                let obj = obj.unwrap_or_else(|| {
                    let mut obj = Map::new();
                    obj.insert("line".into(), Value::from(i + 1));
                    obj.insert("input".into(), Value::String(line));
                    obj
                });
                lines.push(Line::Invalid(obj, format!("line {}: {msg}", i + 1)));
            }
            Err(BadLine { msg, .. }) => {
                bail!("line {}: {msg} (use --skip-invalid to keep going)", i + 1)
            }
        }
    }
    let verdicts: Vec<Verdict> = verify_batch(&pairs, threads);
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
    Ok((pairs.len(), correct))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run_lines(input: &str, skip_invalid: bool) -> anyhow::Result<(Vec<Value>, usize, usize)> {
        let mut out = Vec::new();
        let (n, c) = verify_jsonl(input.as_bytes(), &mut out, 2, skip_invalid)?;
        let text = String::from_utf8(out)?;
        let vals = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<Vec<Value>, _>>()?;
        Ok((vals, n, c))
    }

    #[test]
    fn every_line_comes_back_in_order_with_verdicts() {
        let input = concat!(
            r#"{"id": 1, "gold": "\\frac12", "pred": "so \\boxed{0.5}"}"#,
            "\n",
            "{\"id\": 2, \"answer\": \"3\", \"response\": \"#### 4\"}",
            "\n",
            r#"{"id": 3, "gold": "(1,2)", "pred": "\\boxed{\\left(1, 2\\right)}"}"#,
            "\n",
        );
        let (out, n, correct) = run_lines(input, false).expect("valid input");
        assert_eq!((n, correct), (3, 2));
        let ids: Vec<i64> = out.iter().map(|v| v["id"].as_i64().unwrap_or(-1)).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(out[0]["correct"], Value::Bool(true));
        assert_eq!(out[0]["gold_answer"], Value::String("1/2".into()));
        assert_eq!(out[0]["pred_answer"], Value::String("0.5".into()));
        assert_eq!(out[1]["correct"], Value::Bool(false));
        assert_eq!(out[1]["pred_answer"], Value::String("4".into()));
        // Input fields are kept.
        assert_eq!(out[1]["response"], Value::String("#### 4".into()));
    }

    #[test]
    fn a_malformed_line_is_an_error_naming_it() {
        let input = "{\"gold\": \"1\", \"pred\": \"1\"}\nnot json\n";
        let err = run_lines(input, false).expect_err("malformed line");
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        let input = "{\"gold\": \"1\"}\n";
        let err = run_lines(input, false).expect_err("missing pred");
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
    }

    #[test]
    fn skip_invalid_keeps_every_line() {
        let input = "{\"gold\": \"1\", \"pred\": \"\\\\boxed{1}\"}\nnot json\n{\"gold\": 5, \"pred\": \"5\"}\n\n{\"gold\": \"2\", \"pred\": \"2\"}\n";
        let (out, n, correct) = run_lines(input, true).expect("skip-invalid never fails");
        assert_eq!(out.len(), 5);
        assert_eq!((n, correct), (2, 2));
        assert_eq!(out[0]["correct"], Value::Bool(true));
        for bad in &out[1..4] {
            assert_eq!(bad["correct"], Value::Bool(false));
            assert!(
                bad["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("line ")),
                "{bad}"
            );
        }
        assert_eq!(out[1]["input"], Value::String("not json".into()));
        assert_eq!(out[2]["gold"], Value::from(5));
        assert_eq!(out[4]["correct"], Value::Bool(true));
    }
}
