//! `popo score`: per-token log-probs of given completions under a model.
//!
//! Input lines (JSONL) carry `prompt_ids` + `completion_ids`, or `prompt` + `completion` as text
//! (the prompt is encoded with special tokens, the completion without). Output lines are the input
//! objects plus `logprobs`, one float per completion token.

use anyhow::{anyhow, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use popo::input::{read_objects, token_ids};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// JSONL input: `prompt_ids` + `completion_ids`, or `prompt` + `completion` text.
    #[arg(long)]
    pub input: PathBuf,
    /// Output JSONL (default: stdout).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Temperature the log-probs are computed at.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
}

pub fn run(args: Args) -> Result<i32> {
    let lines = read_jsonl(&args.input)?;
    let pre = args.model.load()?;
    let mut items = Vec::with_capacity(lines.len());
    for (lineno, obj) in &lines {
        let at = || format!("{}:{lineno}", args.input.display());
        items.push(item_ids(obj, pre.tokenizer.as_ref()).with_context(at)?);
    }
    let pb = progress(items.len() as u64, "scoring");
    let logprobs = popo_model::score(
        &pre.model,
        &items,
        args.temperature,
        args.batch_size,
        &mut |k| pb.inc(k as u64),
    )?;
    pb.finish_and_clear();
    let mut out = open_output(args.output.as_ref())?;
    for ((_, mut obj), lp) in lines.into_iter().zip(logprobs) {
        obj.insert("logprobs".into(), serde_json::to_value(lp)?);
        writeln!(out, "{}", Value::Object(obj))?;
    }
    out.flush()?;
    Ok(0)
}

fn item_ids(
    obj: &Map<String, Value>,
    tok: Option<&popo_model::Tokenizer>,
) -> Result<(Vec<u32>, Vec<u32>)> {
    if let (Some(p), Some(c)) = (
        token_ids(obj, "prompt_ids")?,
        token_ids(obj, "completion_ids")?,
    ) {
        return Ok((p, c));
    }
    let text = |k: &str| -> Result<&str> {
        obj.get(k)
            .and_then(|v| v.as_str())
            .ok_or_else(|| anyhow!("needs `prompt_ids` + `completion_ids`, or `prompt` + `completion` strings (missing {k:?})"))
    };
    let (p, c) = (text("prompt")?, text("completion")?);
    let tok = tok.context("text input needs a tokenizer.json in the model directory")?;
    Ok((tok.encode(p, true)?, tok.encode(c, false)?))
}

/// Parses a JSONL file into (line number, object) pairs; blank lines are skipped.
pub(crate) fn read_jsonl(path: &PathBuf) -> Result<Vec<(usize, Map<String, Value>)>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    read_objects(std::io::BufReader::new(f), &path.display().to_string())
}

pub(crate) fn open_output(path: Option<&PathBuf>) -> Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    })
}

pub(crate) fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(what.to_string());
    pb
}
