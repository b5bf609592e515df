//! `popo generate`: sample completions from a model.
//!
//! Prompts come from `--prompt TEXT` or a JSONL `--input` whose lines carry `prompt` (text) or
//! `prompt_ids`. With `--chat` a text prompt becomes one user message rendered by the model's chat
//! template. Output: one JSONL line per prompt, the input plus `completions`
//! (`text`, `token_ids`, `num_tokens`, `finish_reason`, `logprobs`).

use super::score::{open_output, progress, read_jsonl};
use anyhow::{anyhow, bail, Context, Result};
use popo::input::token_ids;
use popo_model::{ChatMessage, SamplingParams};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// One prompt as text.
    #[arg(long, conflicts_with = "input", required_unless_present = "input")]
    pub prompt: Option<String>,
    /// JSONL prompts: `prompt` (text) or `prompt_ids` per line.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Output JSONL (default: stdout).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Render text prompts as a user turn with the chat template (plus the generation prompt).
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Samples per prompt.
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Nucleus sampling: the most likely tokens holding this share of the mass (1 = off); applied
    /// after top-k and min-p.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Only tokens at least this share of the most likely one's probability (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f64,
    /// Most tokens generated per sample.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Stop string (repeatable). EOS ids from the config/tokenizer always stop.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Argmax decoding.
    #[arg(long)]
    pub greedy: bool,
    /// Sampler seed: every sampled row draws from its own stream derived from it.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Prompts per sampling batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
}

pub fn run(args: Args) -> Result<i32> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let lines: Vec<(String, Map<String, Value>)> = match (&args.prompt, &args.input) {
        (Some(p), _) => vec![("--prompt".into(), {
            let mut m = Map::new();
            m.insert("prompt".into(), json!(p));
            m
        })],
        (None, Some(path)) => read_jsonl(path)?
            .into_iter()
            .map(|(i, m)| (format!("{}:{i}", path.display()), m))
            .collect(),
        (None, None) => bail!("give --prompt or --input"),
    };
    let pre = args.model.load()?;
    let tok = pre.tokenizer.as_ref();

    let mut prompts = Vec::with_capacity(lines.len());
    for (at, obj) in &lines {
        prompts.push(prompt_ids(obj, tok, &args).with_context(|| at.clone())?);
    }
    let stop_ids = pre.stop_ids()?;
    let params = SamplingParams {
        n: args.n,
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        min_p: args.min_p,
        max_new_tokens: args.max_new_tokens,
        stop_token_ids: stop_ids,
        stop_strings: args.stop.clone(),
        greedy: args.greedy,
        seed: args.seed,
    };

    let pb = progress((prompts.len() * args.n) as u64, "generating");
    let mut out = open_output(args.output.as_ref())?;
    let mut line_iter = lines.into_iter();
    for (chunk_idx, chunk) in prompts.chunks(args.batch_size).enumerate() {
        // Chunks get distinct seeds so that two chunks never repeat each other's samples.
        let p = SamplingParams {
            seed: params.seed.wrapping_add(chunk_idx as u64),
            ..params.clone()
        };
        let comps = popo_model::generate_with_progress(&pre.model, chunk, &p, tok, &mut |k| {
            pb.inc(k as u64)
        })?;
        for (i, group) in comps.chunks(args.n).enumerate() {
            let (_, mut obj) = line_iter.next().expect("one line per prompt");
            let list = group
                .iter()
                .map(|c| {
                    let text = match tok {
                        Some(t) => Value::String(t.decode(&c.tokens, true)?),
                        None => Value::Null,
                    };
                    Ok(json!({
                        "text": text,
                        "token_ids": c.tokens,
                        "num_tokens": c.tokens.len(),
                        "finish_reason": c.finish_reason,
                        "logprobs": c.logprobs,
                    }))
                })
                .collect::<Result<Vec<_>>>()?;
            if !obj.contains_key("prompt_ids") {
                obj.insert("prompt_num_tokens".into(), json!(chunk[i].len()));
            }
            obj.insert("completions".into(), Value::Array(list));
            writeln!(out, "{}", Value::Object(obj))?;
        }
    }
    pb.finish_and_clear();
    out.flush()?;
    Ok(0)
}

fn prompt_ids(
    obj: &Map<String, Value>,
    tok: Option<&popo_model::Tokenizer>,
    args: &Args,
) -> Result<Vec<u32>> {
    if let Some(ids) = token_ids(obj, "prompt_ids")? {
        return Ok(ids);
    }
    let text = obj
        .get("prompt")
        .and_then(|p| p.as_str())
        .ok_or_else(|| anyhow!("needs a `prompt` string or `prompt_ids`"))?;
    let tok = tok.context("text prompts need a tokenizer.json in the model directory")?;
    if args.chat {
        let mut msgs = Vec::new();
        if let Some(s) = &args.system {
            msgs.push(ChatMessage::new("system", s));
        }
        msgs.push(ChatMessage::new("user", text));
        let rendered = tok.apply_chat_template(&msgs, true)?;
        // The template already holds any BOS token.
        tok.encode(&rendered, false)
    } else {
        tok.encode(text, true)
    }
}
