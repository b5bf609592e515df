//! Math problem datasets and prompts, shared by training and evaluation: JSONL problem files,
//! prompt templates (Qwen's math chat prompt, R1-Zero, the tokenizer's own, plain) and a small
//! portable seeded RNG.

use crate::tokenizer::{ChatMessage, Tokenizer};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One problem with its gold answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub problem: String,
    pub answer: String,
}

/// How to read a JSONL dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonlFormat {
    pub problem_field: String,
    pub answer_field: String,
    /// Count and skip lines that don't parse (or lack a field) instead of failing.
    pub skip_invalid: bool,
}

impl Default for JsonlFormat {
    fn default() -> Self {
        JsonlFormat {
            problem_field: "problem".into(),
            answer_field: "answer".into(),
            skip_invalid: false,
        }
    }
}

/// What loading skipped, for the run log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadStats {
    pub lines: usize,
    pub loaded: usize,
    pub skipped_invalid: usize,
    pub skipped_too_long: usize,
}

/// Loads `problem`/`answer` pairs from a JSONL file. Blank lines are ignored. A numeric answer
/// (as in GSM8K-style files) is taken as its JSON text.
pub fn load_jsonl(path: &Path, fmt: &JsonlFormat) -> Result<(Vec<Example>, LoadStats)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut stats = LoadStats::default();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        stats.lines += 1;
        match parse_line(line, fmt) {
            Ok(ex) => out.push(ex),
            Err(e) if fmt.skip_invalid => {
                tracing::debug!("{}:{}: skipped: {e}", path.display(), i + 1);
                stats.skipped_invalid += 1;
            }
            Err(e) => bail!(
                "{}:{}: {e} (pass --skip-invalid to count and skip such lines)",
                path.display(),
                i + 1
            ),
        }
    }
    stats.loaded = out.len();
    Ok((out, stats))
}

fn parse_line(line: &str, fmt: &JsonlFormat) -> Result<Example> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| anyhow::anyhow!("invalid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("expected a JSON object"))?;
    let field = |name: &str| -> Result<String> {
        match obj.get(name) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
            Some(other) => bail!("field `{name}` must be a string, found {other}"),
            None => bail!("missing field `{name}`"),
        }
    };
    let problem = field(&fmt.problem_field)?;
    if problem.trim().is_empty() {
        bail!("field `{}` is empty", fmt.problem_field);
    }
    Ok(Example {
        problem,
        answer: field(&fmt.answer_field)?,
    })
}

/// The system prompt of Qwen's math chat template.
pub const QWEN_MATH_SYSTEM: &str =
    "Please reason step by step, and put your final answer within \\boxed{}.";

/// The R1-Zero plain (no chat markup) template from the DeepSeek-R1 paper; `{problem}` is replaced.
pub const R1_ZERO_TEMPLATE: &str = "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. \
The Assistant first thinks about the reasoning process in the mind and then provides the User with the answer. \
The reasoning process is enclosed within <think> </think> and answer is enclosed within <answer> </answer> tags, \
respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. \
User: {problem}. Assistant:";

/// How a problem becomes a prompt string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptTemplate {
    /// System "Please reason step by step, ..." + user problem, rendered by the tokenizer's chat
    /// template when it has one, else by built-in ChatML (Qwen's own markup).
    #[serde(alias = "qwen-math", alias = "qwen")]
    QwenMath,
    /// Plain text, no chat markup.
    #[serde(alias = "r1-zero", alias = "r1")]
    R1Zero,
    /// The tokenizer's chat template with a single user message (an error if it has none).
    #[serde(alias = "tokenizer")]
    Chat,
    /// The problem text as it is (the built-in task's format).
    #[serde(alias = "raw", alias = "none")]
    Plain,
}

/// The names `--template` and `data.template` accept, aliases included (serde's list).
impl std::str::FromStr for PromptTemplate {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
            anyhow::anyhow!(
                "unknown prompt template `{s}` (expected qwen_math, r1_zero, chat or plain)"
            )
        })
    }
}

impl std::fmt::Display for PromptTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PromptTemplate::QwenMath => "qwen_math",
            PromptTemplate::R1Zero => "r1_zero",
            PromptTemplate::Chat => "chat",
            PromptTemplate::Plain => "plain",
        })
    }
}

/// What a prompt template needs from a tokenizer. Implemented for [`Tokenizer`];
/// kept as a trait so that data handling does not depend on how a tokenizer is stored.
pub trait ChatTemplater {
    /// Renders `(role, content)` messages with the tokenizer's chat template and the generation
    /// prompt appended; `None` when the tokenizer has no chat template.
    fn render_chat(&self, messages: &[(&str, &str)]) -> Option<Result<String>>;
}

/// A tokenizer that can also encode prompts.
pub trait PromptTokenizer: ChatTemplater {
    fn encode_prompt(&self, text: &str) -> Result<Vec<u32>>;
}

impl ChatTemplater for Tokenizer {
    fn render_chat(&self, messages: &[(&str, &str)]) -> Option<Result<String>> {
        self.chat_template()?;
        let msgs: Vec<ChatMessage> = messages
            .iter()
            .map(|(role, content)| ChatMessage::new(role, content))
            .collect();
        Some(self.apply_chat_template(&msgs, true))
    }
}

impl PromptTokenizer for Tokenizer {
    fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        // Templates already spell out any special tokens they need.
        self.encode(text, false)
    }
}

/// ChatML as Qwen models use it, with the generation prompt.
pub fn chatml(messages: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (role, content) in messages {
        s.push_str("<|im_start|>");
        s.push_str(role);
        s.push('\n');
        s.push_str(content);
        s.push_str("<|im_end|>\n");
    }
    s.push_str("<|im_start|>assistant\n");
    s
}

impl PromptTemplate {
    pub fn render(&self, problem: &str, tokenizer: Option<&dyn ChatTemplater>) -> Result<String> {
        match self {
            PromptTemplate::QwenMath => {
                let msgs = [("system", QWEN_MATH_SYSTEM), ("user", problem)];
                match tokenizer.and_then(|t| t.render_chat(&msgs)) {
                    Some(r) => r.context("rendering the tokenizer's chat template"),
                    None => Ok(chatml(&msgs)),
                }
            }
            PromptTemplate::R1Zero => Ok(R1_ZERO_TEMPLATE.replace("{problem}", problem)),
            PromptTemplate::Chat => {
                let t = tokenizer
                    .context("the `chat` template needs a tokenizer with a chat template")?;
                t.render_chat(&[("user", problem)])
                    .context("the tokenizer has no chat template (tokenizer_config.json `chat_template`); use the qwen_math, r1_zero or plain template")?
            }
            PromptTemplate::Plain => Ok(problem.to_string()),
        }
    }
}

/// SplitMix64 (Steele, Lea and Flood 2014): a tiny, well-mixed, portable generator.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by rejection so there is no modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    }

    #[test]
    fn loads_fields_and_numeric_answers() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "d.jsonl",
            "{\"problem\":\"1+1?\",\"answer\":\"2\",\"extra\":1}\n\n{\"problem\":\"2*3?\",\"answer\":6}\n",
        );
        let (ex, st) = load_jsonl(&p, &JsonlFormat::default()).unwrap();
        assert_eq!(
            ex,
            vec![
                Example {
                    problem: "1+1?".into(),
                    answer: "2".into()
                },
                Example {
                    problem: "2*3?".into(),
                    answer: "6".into()
                }
            ]
        );
        assert_eq!(st.lines, 2);
        assert_eq!(st.loaded, 2);

        let p = write(dir.path(), "q.jsonl", "{\"question\":\"q\",\"gt\":\"a\"}\n");
        let fmt = JsonlFormat {
            problem_field: "question".into(),
            answer_field: "gt".into(),
            skip_invalid: false,
        };
        assert_eq!(load_jsonl(&p, &fmt).unwrap().0[0].answer, "a");
    }

    #[test]
    fn invalid_lines_name_file_and_line_or_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "bad.jsonl",
            "{\"problem\":\"a\",\"answer\":\"1\"}\n{\"problem\":\"b\"}\n{oops\n[1]\n{\"problem\":\"c\",\"answer\":\"3\"}\n",
        );
        let err = format!("{:#}", load_jsonl(&p, &JsonlFormat::default()).unwrap_err());
        assert!(
            err.contains("bad.jsonl:2") && err.contains("missing field `answer`"),
            "{err}"
        );
        let fmt = JsonlFormat {
            skip_invalid: true,
            ..Default::default()
        };
        let (ex, st) = load_jsonl(&p, &fmt).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(st.skipped_invalid, 3);
        assert_eq!(st.lines, 5);
        let err = format!(
            "{:#}",
            load_jsonl(&dir.path().join("none.jsonl"), &fmt).unwrap_err()
        );
        assert!(err.contains("none.jsonl"), "{err}");
    }

    #[test]
    fn templates_render() {
        let q = PromptTemplate::QwenMath
            .render("What is 2+2?", None)
            .unwrap();
        assert_eq!(
            q,
            "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n\
             <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        let r = PromptTemplate::R1Zero.render("What is 2+2?", None).unwrap();
        assert!(r.starts_with("A conversation between User and Assistant."));
        assert!(r.ends_with("User: What is 2+2?. Assistant:"));
        assert_eq!(PromptTemplate::Plain.render("x", None).unwrap(), "x");
        let err = format!("{:#}", PromptTemplate::Chat.render("x", None).unwrap_err());
        assert!(err.contains("chat template"), "{err}");
        for t in [
            PromptTemplate::QwenMath,
            PromptTemplate::R1Zero,
            PromptTemplate::Chat,
            PromptTemplate::Plain,
        ] {
            assert_eq!(t.to_string().parse::<PromptTemplate>().unwrap(), t);
        }
        assert!("qwen3".parse::<PromptTemplate>().is_err());
    }

    #[test]
    fn splitmix_matches_reference_values() {
        // Reference outputs of SplitMix64 seeded with 0 (from the algorithm's C reference).
        let mut r = SplitMix64(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        let mut r = SplitMix64(1);
        for _ in 0..1000 {
            assert!(r.below(3) < 3);
        }
    }
}
