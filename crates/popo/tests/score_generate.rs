//! `popo score` and `popo generate` end to end: the binary on a tiny checkpoint (random Qwen2 +
//! character tokenizer with a chat template) that the test writes with `save_pretrained`.

use candle_core::{DType, Device};
use popo_model::{Model, ModelConfig, Tokenizer};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

fn checkpoint(dir: &Path) -> (Model, Tokenizer) {
    checkpoint_tied(dir, false)
}

fn checkpoint_tied(dir: &Path, tied: bool) -> (Model, Tokenizer) {
    let tok = Tokenizer::char_level(
        "abcdefghijklmnopqrstuvwxyz0123456789 +=\n",
        &["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        Some(TEMPLATE.into()),
    )
    .unwrap();
    let mut cfg = ModelConfig::qwen2_tiny(tok.vocab_size(), 32, 2, 4, 2, 64);
    cfg.eos_token_id = vec![tok.eos_token_id().unwrap()];
    cfg.tie_word_embeddings = tied;
    let (vm, model) = Model::new_seeded(&cfg, &Device::Cpu, DType::F32, 9, 0.3).unwrap();
    popo_model::save_pretrained(dir, &cfg, &vm, DType::F32, Some(&tok), None).unwrap();
    (model, tok)
}

fn popo(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_popo"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn jsonl(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn score_ids_and_text_match_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let (model, tok) = checkpoint(dir.path());
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"prompt_ids\": [1, 2, 3], \"completion_ids\": [4, 5], \"id\": 7}\n\n{\"prompt\": \"1+1=\", \"completion\": \"2\\n\"}\n",
    )
    .unwrap();
    let m = dir.path().to_str().unwrap();
    let (code, stdout, stderr) = popo(&[
        "score",
        "--model",
        m,
        "--input",
        input.to_str().unwrap(),
        "--temperature",
        "0.5",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let rows = jsonl(&stdout);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], 7);
    let items = vec![
        (vec![1, 2, 3], vec![4, 5]),
        (
            tok.encode("1+1=", true).unwrap(),
            tok.encode("2\n", false).unwrap(),
        ),
    ];
    let want = popo_model::score(&model, &items, 0.5, 1, &mut |_| {}).unwrap();
    for (row, w) in rows.iter().zip(&want) {
        let got: Vec<f32> = serde_json::from_value(row["logprobs"].clone()).unwrap();
        assert_eq!(got.len(), w.len());
        for (a, b) in got.iter().zip(w) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            assert!(*a < 0.0);
        }
    }
}

#[test]
fn score_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(dir.path());
    let input = dir.path().join("bad.jsonl");
    std::fs::write(
        &input,
        "{\"prompt_ids\": [1], \"completion_ids\": [2]}\n{\"prompt_ids\": [1]}\n",
    )
    .unwrap();
    let (code, _, stderr) = popo(&[
        "score",
        "--model",
        dir.path().to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("bad.jsonl:2"), "{stderr}");
    std::fs::write(&input, "{not json\n").unwrap();
    let (_, _, stderr) = popo(&[
        "score",
        "--model",
        dir.path().to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("bad.jsonl:1") && stderr.contains("invalid JSON"),
        "{stderr}"
    );
    std::fs::write(&input, "{\"prompt_ids\": [1], \"completion_ids\": [2]}\n").unwrap();
    let (code, _, stderr) = popo(&[
        "score",
        "--model",
        "/nonexistent/dir",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("does not exist") || stderr.contains("nonexistent"),
        "{stderr}"
    );
}

#[test]
fn generate_prompt_and_jsonl_with_chat_template() {
    let dir = tempfile::tempdir().unwrap();
    let (model, tok) = checkpoint(dir.path());
    let m = dir.path().to_str().unwrap();
    // Greedy CLI output equals the library's greedy output on the chat-rendered prompt.
    let (code, stdout, stderr) = popo(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "2+2=",
        "--chat",
        "--greedy",
        "--max-new-tokens",
        "6",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let rows = jsonl(&stdout);
    assert_eq!(rows.len(), 1);
    let rendered = tok
        .apply_chat_template(&[popo_model::ChatMessage::new("user", "2+2=")], true)
        .unwrap();
    assert_eq!(
        rendered,
        "<|im_start|>user\n2+2=<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = tok.encode(&rendered, false).unwrap();
    let params = popo_model::SamplingParams {
        greedy: true,
        max_new_tokens: 6,
        stop_token_ids: vec![tok.eos_token_id().unwrap()],
        ..Default::default()
    };
    let want = popo_model::generate(&model, &[ids], &params, None).unwrap();
    let c = &rows[0]["completions"][0];
    let got: Vec<u32> = serde_json::from_value(c["token_ids"].clone()).unwrap();
    assert_eq!(got, want[0].tokens);
    assert_eq!(c["num_tokens"], got.len());
    assert_eq!(c["text"], tok.decode(&got, true).unwrap());
    assert!(c["finish_reason"] == "stop" || c["finish_reason"] == "length");

    // JSONL input with n samples, seeded: reproducible.
    let input = dir.path().join("p.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\": \"ab\"}\n{\"prompt_ids\": [3, 4, 5], \"k\": 1}\n",
    )
    .unwrap();
    let args = [
        "generate",
        "--model",
        m,
        "--input",
        input.to_str().unwrap(),
        "--n",
        "3",
        "--temperature",
        "1.2",
        "--top-p",
        "0.9",
        "--top-k",
        "20",
        "--max-new-tokens",
        "5",
        "--seed",
        "4",
    ];
    let (code, out1, stderr) = popo(&args);
    assert_eq!(code, 0, "{stderr}");
    let (_, out2, _) = popo(&args);
    assert_eq!(out1, out2);
    let rows = jsonl(&out1);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["k"], 1);
    for r in &rows {
        let comps = r["completions"].as_array().unwrap();
        assert_eq!(comps.len(), 3);
        for c in comps {
            let n = c["num_tokens"].as_u64().unwrap();
            assert!((1..=5).contains(&n));
            assert_eq!(c["logprobs"].as_array().unwrap().len() as u64, n);
        }
    }
}

/// `popo export --untie`: the copy has its head written out and scores every token as the model
/// does; an untied model is copied as it is; an existing --out is refused by name.
#[test]
fn export_untie_writes_the_same_model_with_its_head_out() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    checkpoint_tied(&model, true);
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\": \"1+1=\", \"completion\": \"2 and 3\\n\"}\n",
    )
    .unwrap();
    let out = dir.path().join("served");
    let (m, o) = (model.to_str().unwrap(), out.to_str().unwrap());
    let (code, stdout, stderr) = popo(&["export", "--untie", m, "--out", o]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("tied LM head written out"), "{stdout}");
    assert!(popo_model::ties_head(&model) && !popo_model::ties_head(&out));
    assert!(out.join("tokenizer.json").is_file());
    let score = |d: &str| {
        let (code, stdout, stderr) =
            popo(&["score", "--model", d, "--input", input.to_str().unwrap()]);
        assert_eq!(code, 0, "{stderr}");
        jsonl(&stdout)[0]["logprobs"].clone()
    };
    assert_eq!(score(m), score(o));

    let (code, _, stderr) = popo(&["export", "--untie", m, "--out", o]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("already exists") && stderr.contains(o),
        "{stderr}"
    );

    let untied = dir.path().join("untied");
    checkpoint(&untied);
    let copy = dir.path().join("copy");
    let (code, stdout, stderr) = popo(&[
        "export",
        "--untie",
        untied.to_str().unwrap(),
        "--out",
        copy.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("copied as it is"), "{stdout}");
    assert_eq!(
        std::fs::read(untied.join("model.safetensors")).unwrap(),
        std::fs::read(copy.join("model.safetensors")).unwrap()
    );
}
