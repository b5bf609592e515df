//! `vllm.rs`'s tests: request and answer formats, the sync (reload and LoRA) against fake
//! servers on real sockets.

use super::super::http::fake::hung_server;
use super::*;

/// One prompt's answer as vLLM 0.32 gives it (fields popo does not read left out).
fn answer(samples: &[(&[u32], &[f64], &str)]) -> String {
    let choices: Vec<Value> = samples
        .iter()
        .enumerate()
        .map(|(k, (ids, lps, why))| {
            let tokens: Vec<String> = ids.iter().map(|i| format!("token_id:{i}")).collect();
            json!({"index": k, "text": "x", "finish_reason": why,
                   "logprobs": {"tokens": tokens, "token_logprobs": lps}})
        })
        .collect();
    json!({"object": "text_completion", "choices": choices}).to_string()
}

fn params(n: usize) -> SamplingParams {
    SamplingParams {
        n,
        max_new_tokens: 3,
        stop_token_ids: vec![2],
        ..Default::default()
    }
}

#[test]
fn completions_come_back_as_token_ids_with_their_log_probs() {
    let v: Value = serde_json::from_str(&answer(&[
        (&[5, 2], &[-0.5, -0.25], "stop"),
        (&[7, 8, 9], &[-1.0, -2.0, -3.0], "length"),
    ]))
    .unwrap();
    let c = parse_completions(&v, 3, 2).unwrap();
    assert_eq!((c[0].prompt_index, c[0].sample_index), (3, 0));
    assert_eq!(c[0].tokens, [5, 2]);
    assert_eq!(c[0].logprobs, [-0.5, -0.25]);
    assert_eq!(c[0].finish_reason, FinishReason::Stop);
    assert_eq!(c[1].tokens, [7, 8, 9]);
    assert_eq!(c[1].finish_reason, FinishReason::Length);
    assert!(parse_completions(&v, 3, 3)
        .unwrap_err()
        .contains("2 choices"));
    let text: Value = json!({"choices": [{"finish_reason": "stop",
        "logprobs": {"tokens": ["hello"], "token_logprobs": [-1.0]}}]});
    assert!(parse_completions(&text, 0, 1)
        .unwrap_err()
        .contains("token_id"));
}

#[test]
fn the_request_carries_popos_sampling_and_stop_ids() {
    let p = SamplingParams {
        temperature: 0.7,
        top_k: 0,
        ..params(4)
    };
    let b = completion_body("m", &[1, 2, 3], &p, 9);
    assert_eq!(b["prompt"], json!([1, 2, 3]));
    assert_eq!(
        (b["n"].clone(), b["max_tokens"].clone()),
        (json!(4), json!(3))
    );
    assert_eq!(b["temperature"], json!(0.7));
    assert_eq!(b["top_k"], json!(-1));
    assert_eq!(b["stop_token_ids"], json!([2]));
    assert_eq!(b["ignore_eos"], json!(true));
    assert_eq!(b["return_tokens_as_token_ids"], json!(true));
    let greedy = completion_body("m", &[1], &SamplingParams { greedy: true, ..p }, 9);
    assert_eq!(greedy["temperature"], json!(0.0));
    assert!(prompt_seed(u64::MAX, 3) <= i64::MAX as u64);
    assert_ne!(prompt_seed(1, 0), prompt_seed(1, 1));
}

#[test]
fn prompt_log_probs_are_read_per_probe_token() {
    let v = json!({"choices": [{"prompt_logprobs": [null,
        {"7": {"logprob": -1.5, "rank": 3}},
        {"9": {"logprob": -0.5, "rank": 1}, "4": {"logprob": -1.0, "rank": 2}}]}]});
    assert_eq!(parse_prompt_logprobs(&v, &[1, 7, 9]).unwrap(), [-1.5, -0.5]);
    assert!(parse_prompt_logprobs(&v, &[1, 7, 8])
        .unwrap_err()
        .contains("token 8"));
    assert!(parse_prompt_logprobs(&v, &[1, 7]).is_err());
}

#[test]
fn a_stale_or_distant_server_fails_the_sync() {
    let popo = [-1.0f32, -2.0];
    let ok = check_probe("s", &[-1.001, -2.001], &popo, None, None, 0.1).unwrap();
    assert!((ok - 0.001).abs() < 1e-6);
    let far = check_probe("s", &[-1.5, -2.5], &popo, None, None, 0.1).unwrap_err();
    assert!(far.cause.contains("other weights") && far.server == "s");
    // The server answers what it answered last time, popo moved: old weights.
    let old = [-1.1f32, -2.1];
    let stale = check_probe("s", &old, &popo, Some(&old), Some(&[-1.1, -2.1]), 1.0);
    assert!(stale.unwrap_err().cause.contains("old weights"));
    // Neither moved (no update took): fine.
    assert!(check_probe("s", &popo, &popo, Some(&popo), Some(&popo), 0.1).is_ok());
}

#[test]
fn publishing_replaces_the_weights_and_seeding_copies_only_into_an_empty_dir() {
    let d = tempfile::tempdir().unwrap();
    let (model, weights) = (d.path().join("model"), d.path().join("weights"));
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("config.json"), "{}").unwrap();
    std::fs::write(model.join("model.safetensors"), "v0").unwrap();
    assert!(seed_weights_dir(&weights, &model).unwrap());
    assert_eq!(
        std::fs::read(weights.join("model.safetensors")).unwrap(),
        b"v0"
    );
    assert!(!seed_weights_dir(&weights, &model).unwrap());
    // A sharded layout replaces the single file; --model's directory is never written.
    publish(&weights, |tmp| {
        std::fs::write(tmp.join("model-00001-of-00002.safetensors"), "a")?;
        std::fs::write(tmp.join("model-00002-of-00002.safetensors"), "b")?;
        std::fs::write(tmp.join("model.safetensors.index.json"), "{}")?;
        Ok(())
    })
    .unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&weights)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json"
        ]
    );
    assert_eq!(
        std::fs::read(model.join("model.safetensors")).unwrap(),
        b"v0"
    );
    // A failed write leaves the published weights as they were.
    let e = publish(&weights, |_| anyhow::bail!("disk full")).unwrap_err();
    assert!(format!("{e:#}").contains("disk full"));
    assert!(weights.join("model-00001-of-00002.safetensors").exists());
    assert!(!weights.join(SYNC_TMP).exists());
}

/// A model with tied embeddings reaches the servers' directory with its head written out, the
/// same function; `--model`'s directory keeps its files.
#[test]
fn seeding_writes_a_tied_head_out() {
    use candle_core::{DType, Device, Tensor};
    let d = tempfile::tempdir().unwrap();
    let (model, weights) = (d.path().join("model"), d.path().join("weights"));
    let mut cfg = popo_model::ModelConfig::qwen2_tiny(40, 16, 1, 2, 1, 32);
    cfg.tie_word_embeddings = true;
    let (vm, m) = popo_model::Model::new_seeded(&cfg, &Device::Cpu, DType::F32, 3, 0.3).unwrap();
    popo_model::save_pretrained(&model, &cfg, &vm, DType::F32, None, None).unwrap();
    let original = std::fs::read(model.join("model.safetensors")).unwrap();

    assert!(seed_weights_dir(&weights, &model).unwrap());
    assert!(popo_model::ties_head(&model));
    assert!(!popo_model::ties_head(&weights));
    assert_eq!(
        std::fs::read(model.join("model.safetensors")).unwrap(),
        original
    );
    let p = popo_model::load_pretrained(&weights, &Device::Cpu, DType::F32).unwrap();
    let x = Tensor::new(&[[1u32, 4, 9]], &Device::Cpu).unwrap();
    let mask = Tensor::ones((1, 3), DType::F32, &Device::Cpu).unwrap();
    let logits = |model: &popo_model::Model| {
        let l = model.forward_logits(&x, &mask).unwrap();
        l.to_vec3::<f32>().unwrap()
    };
    assert_eq!(logits(&m), logits(&p.model), "the same function");
}

/// A fake vLLM with runtime LoRA loading: it records every request, answers the adapter
/// load in plain text as vLLM does, and scores the probe `[1, 7, 9]` as `probe_lp`.
fn lora_server(log: std::sync::Arc<Mutex<Vec<String>>>, probe_lp: [f64; 2]) -> String {
    crate::engine::http::fake::fake(move |mut s| {
        let req = crate::engine::http::fake::read_request(&mut s);
        let body = if req.starts_with("GET") {
            json!({"data": [{"id": "base"}]}).to_string()
        } else if req.contains("/v1/load_lora_adapter") {
            "Success: LoRA adapter 'popo-policy' added successfully.".to_string()
        } else {
            json!({"choices": [{"prompt_logprobs": [null,
                {"7": {"logprob": probe_lp[0]}}, {"9": {"logprob": probe_lp[1]}}]}]})
            .to_string()
        };
        log.lock().unwrap().push(req);
        use std::io::Write;
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    })
}

#[test]
fn a_lora_sync_loads_the_adapter_in_place_and_requests_then_name_it() {
    let log = std::sync::Arc::new(Mutex::new(Vec::new()));
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("adapter");
    let cfg = EngineConfig {
        kind: super::super::config::EngineKind::Vllm,
        servers: vec![lora_server(log.clone(), [-1.5, -0.5])],
        request_timeout_s: 5.0,
        sync: SyncMode::Lora,
        weights_dir: weights.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let mut v = Vllm::connect(&cfg).unwrap();
    assert_eq!(v.served(), "base");
    let write = |d: &Path| Ok(std::fs::write(d.join("adapter_config.json"), "{}")?);
    let report = v.sync(&[1, 7, 9], &[-1.5, -0.5], write).unwrap();
    assert!(report.abs_diff < 1e-6);
    assert!(weights.join("adapter_config.json").is_file());
    let reqs = log.lock().unwrap().clone();
    let load = reqs
        .iter()
        .find(|r| r.contains("load_lora_adapter"))
        .unwrap();
    let body: Value = serde_json::from_str(&load[load.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    let canon = std::fs::canonicalize(&weights).unwrap();
    assert_eq!(body["lora_name"], json!(ADAPTER_NAME));
    assert_eq!(body["lora_path"], json!(canon.to_string_lossy()));
    assert_eq!(body["load_inplace"], json!(true));
    assert!(!reqs.iter().any(|r| r.contains("reload_weights")));
    // The probe already names the adapter, and so does every rollout request after it.
    let probe = reqs.iter().find(|r| r.contains("prompt_logprobs")).unwrap();
    assert!(probe.contains("\"model\":\"popo-policy\""), "{probe}");
    assert_eq!(v.served(), ADAPTER_NAME);
    // A server whose probe does not match popo's fails the sync, naming it.
    v.servers = Servers::new(&[lora_server(log, [-3.0, -3.0])], cfg.timeout(), 0);
    let e = v.sync(&[1, 7, 9], &[-1.5, -0.5], write).unwrap_err();
    assert!(format!("{e:#}").contains("other weights"), "{e:#}");
}

#[test]
fn a_steps_prompts_spread_over_servers_and_survive_a_hung_one() {
    let models = json!({"data": [{"id": "m"}]}).to_string();
    let good = crate::engine::http::fake::fake(move |mut s| {
        let req = crate::engine::http::fake::read_request(&mut s);
        let body = if req.starts_with("GET") {
            models.clone()
        } else {
            answer(&[
                (&[4, 2], &[-0.1, -0.2], "stop"),
                (&[5, 6, 7], &[-1.0; 3], "length"),
            ])
        };
        use std::io::Write;
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    });
    let cfg = EngineConfig {
        kind: super::super::config::EngineKind::Vllm,
        servers: vec![good.clone()],
        request_timeout_s: 0.5,
        max_retries: 1,
        ..Default::default()
    };
    let mut v = Vllm::connect(&cfg).unwrap();
    assert_eq!(v.model(), "m");
    // A second server that accepts and never answers: its prompts go to the first.
    v.servers = Servers::new(&[good, hung_server()], cfg.timeout(), 1);
    let prompts = vec![vec![1u32], vec![2], vec![3]];
    let out = v.generate(&prompts, &params(2)).unwrap();
    assert_eq!(out.len(), 6);
    let order: Vec<(usize, usize)> = out
        .iter()
        .map(|c| (c.prompt_index, c.sample_index))
        .collect();
    assert_eq!(order, [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]);
    // With no retry left the step fails, naming the server and the prompt.
    v.servers = Servers::new(&[hung_server()], cfg.timeout(), 0);
    let e = v.generate(&prompts, &params(2)).unwrap_err();
    let e = e.downcast_ref::<ServerError>().unwrap();
    assert!(e.request.starts_with("generate prompt"), "{e}");
    let dead = EngineConfig {
        servers: vec![crate::engine::http::fake::dead_url()],
        ..cfg
    };
    let msg = format!("{:#}", Vllm::connect(&dead).err().unwrap());
    assert!(
        msg.contains(&dead.servers[0]) && msg.contains("does not answer"),
        "{msg}"
    );
}
