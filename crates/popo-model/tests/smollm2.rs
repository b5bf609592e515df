//! A real pretrained model against transformers: SmolLM2-135M-Instruct (Llama architecture, 30
//! layers, tied embeddings, byte-level BPE, ChatML). Ignored by default: the model is fetched and
//! converted outside the repo by `tools/get-smollm2.sh`, then
//!
//! ```text
//! POPO_SMOLLM2=$(tools/get-smollm2.sh | tail -n1) cargo test -p popo-model --test smollm2 -- --ignored
//! ```
//!
//! The expected values come from `tools/make_smollm2_fixtures.py` (transformers, f32, CPU).

use candle_core::{DType, Device};
use popo_model::{generate, load_pretrained, ChatMessage, Pretrained, SamplingParams};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Expected {
    tokenize: Vec<TokenizeCase>,
    chat: Vec<ChatCase>,
    scored: Vec<Scored>,
    greedy: Vec<Greedy>,
}

#[derive(Deserialize)]
struct TokenizeCase {
    file: String,
    line: usize,
    field: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct ChatCase {
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    text: String,
}

#[derive(Deserialize)]
struct Scored {
    ids: Vec<u32>,
    logprobs: Vec<f64>,
}

#[derive(Deserialize)]
struct Greedy {
    prompt: String,
    prompt_ids: Vec<u32>,
    new_ids: Vec<u32>,
}

fn expected() -> Expected {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2/expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn model() -> Pretrained {
    let dir = std::env::var_os("POPO_SMOLLM2")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "set POPO_SMOLLM2 to the directory printed by tools/get-smollm2.sh \
             (these tests are ignored by default for that reason)"
            )
        });
    load_pretrained(&dir, &Device::Cpu, DType::F32)
        .unwrap_or_else(|e| panic!("{}: {e:#}", dir.display()))
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
}

#[test]
#[ignore = "needs POPO_SMOLLM2 (tools/get-smollm2.sh)"]
fn tokenization_of_benchmark_text_matches_transformers() {
    let pre = model();
    let tok = pre.tokenizer.as_ref().unwrap();
    let exp = expected();
    assert_eq!(exp.tokenize.len(), 200);
    let mut files = std::collections::HashMap::new();
    for case in &exp.tokenize {
        let lines = files.entry(case.file.clone()).or_insert_with(|| {
            let p = data_dir().join(&case.file);
            std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        });
        let row: serde_json::Value = serde_json::from_str(&lines[case.line]).unwrap();
        let text = row[&case.field].as_str().unwrap();
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(
            ids,
            case.ids,
            "{}:{} {}",
            case.file,
            case.line + 1,
            case.field
        );
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }
}

#[test]
#[ignore = "needs POPO_SMOLLM2 (tools/get-smollm2.sh)"]
fn chat_template_matches_transformers() {
    let pre = model();
    let tok = pre.tokenizer.as_ref().unwrap();
    let exp = expected();
    assert!(exp.chat.iter().any(|c| c.messages[0].role == "system"));
    assert!(exp.chat.iter().any(|c| c.messages[0].role == "user"));
    for case in &exp.chat {
        let text = tok
            .apply_chat_template(&case.messages, case.add_generation_prompt)
            .unwrap();
        assert_eq!(text, case.text);
    }
}

/// f32 log-probs of chat-rendered (prompt, answer) sequences, within 1e-4 of transformers.
#[test]
#[ignore = "needs POPO_SMOLLM2 (tools/get-smollm2.sh)"]
fn logprobs_match_transformers() {
    let pre = model();
    let exp = expected();
    let items: Vec<(Vec<u32>, Vec<u32>)> = exp
        .scored
        .iter()
        .map(|s| (s.ids[..1].to_vec(), s.ids[1..].to_vec()))
        .collect();
    let got = popo_model::score(&pre.model, &items, 1.0, 2, &mut |_| {}).unwrap();
    let mut worst = 0.0f64;
    for (g, s) in got.iter().zip(&exp.scored) {
        assert_eq!(g.len(), s.logprobs.len());
        for (a, b) in g.iter().zip(&s.logprobs) {
            worst = worst.max((*a as f64 - b).abs());
        }
    }
    eprintln!("max |log-prob difference| vs transformers: {worst:.2e}");
    assert!(worst < 1e-4, "{worst}");
}

/// Greedy 64-token continuations of 8 chat prompts, one batch, identical ids.
#[test]
#[ignore = "needs POPO_SMOLLM2 (tools/get-smollm2.sh)"]
fn greedy_continuations_match_transformers() {
    let pre = model();
    let tok = pre.tokenizer.as_ref().unwrap();
    let exp = expected();
    assert_eq!(exp.greedy.len(), 8);
    let prompts: Vec<Vec<u32>> = exp.greedy.iter().map(|g| g.prompt_ids.clone()).collect();
    for (g, p) in exp.greedy.iter().zip(&prompts) {
        let rendered = tok
            .apply_chat_template(&[ChatMessage::new("user", &g.prompt)], true)
            .unwrap();
        assert_eq!(&tok.encode(&rendered, false).unwrap(), p, "{}", g.prompt);
    }
    let params = SamplingParams {
        n: 1,
        greedy: true,
        max_new_tokens: 64,
        stop_token_ids: pre.stop_ids().unwrap(),
        ..Default::default()
    };
    let out = generate(&pre.model, &prompts, &params, Some(tok)).unwrap();
    for c in &out {
        let want = &exp.greedy[c.prompt_index];
        assert_eq!(
            c.tokens,
            want.new_ids,
            "{:?}: popo {:?} vs transformers {:?}",
            want.prompt,
            tok.decode(&c.tokens, false).unwrap(),
            tok.decode(&want.new_ids, false).unwrap()
        );
    }
}
