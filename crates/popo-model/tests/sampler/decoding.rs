//! One batch of prompts: batching and shared prefill change nothing, seeds reproduce, log-probs
//! agree with the training forward, truncation filters, bad inputs, stop strings.

use crate::common;
use crate::prompts;
use candle_core::{DType, Device};
use popo_model::{generate, FinishReason, SamplingParams, TokenBatch};
use rand::SeedableRng;

#[test]
fn batched_mixed_length_greedy_equals_one_at_a_time() {
    for (name, cfg) in common::all_configs() {
        let (_vm, model) = common::build(&cfg, DType::F32, 13);
        let ps = prompts(cfg.vocab_size);
        let params = SamplingParams {
            greedy: true,
            max_new_tokens: 12,
            stop_token_ids: vec![5],
            ..Default::default()
        };
        let batched = generate(&model, &ps, &params, None).unwrap();
        assert_eq!(batched.len(), ps.len());
        for (i, p) in ps.iter().enumerate() {
            let alone = generate(&model, std::slice::from_ref(p), &params, None).unwrap();
            assert_eq!(batched[i].tokens, alone[0].tokens, "{name} prompt {i}");
            assert_eq!(batched[i].finish_reason, alone[0].finish_reason);
            for (a, b) in batched[i].logprobs.iter().zip(&alone[0].logprobs) {
                assert!((a - b).abs() < 1e-4, "{name}: {a} vs {b}");
            }
            let c = &batched[i];
            match c.finish_reason {
                FinishReason::Stop => assert_eq!(*c.tokens.last().unwrap(), 5),
                FinishReason::Length => assert_eq!(c.tokens.len(), 12),
            }
        }
    }
}

#[test]
fn shared_prefill_samples_equal_separate_runs_and_seeds_reproduce() {
    let cfg = common::qwen2();
    let (_vm, model) = common::build(&cfg, DType::F32, 17);
    let ps = prompts(cfg.vocab_size);
    // Stop id 3 makes rows finish at different steps, so the active batch shrinks mid-run.
    let params = SamplingParams {
        n: 3,
        temperature: 1.3,
        max_new_tokens: 10,
        stop_token_ids: vec![3, 9],
        seed: 42,
        ..Default::default()
    };
    let all = generate(&model, &ps, &params, None).unwrap();
    assert_eq!(all.len(), 12);
    for (k, c) in all.iter().enumerate() {
        assert_eq!((c.prompt_index, c.sample_index), (k / 3, k % 3));
        assert_eq!(c.tokens.len(), c.logprobs.len());
    }
    assert_eq!(
        all,
        generate(&model, &ps, &params, None).unwrap(),
        "same seed, same tokens"
    );
    let other = generate(
        &model,
        &ps,
        &SamplingParams {
            seed: 43,
            ..params.clone()
        },
        None,
    )
    .unwrap();
    assert_ne!(all, other, "a different seed should change something");
    // Batch composition does not matter: with every other prompt replaced by a one-token filler
    // (other padding, other finish times), prompt i's samples are unchanged.
    for i in 0..ps.len() {
        let mut mixed = vec![vec![1u32]; ps.len()];
        mixed[i] = ps[i].clone();
        let got = generate(&model, &mixed, &params, None).unwrap();
        for s in 0..3 {
            assert_eq!(
                got[i * 3 + s].tokens,
                all[i * 3 + s].tokens,
                "prompt {i} sample {s}"
            );
        }
    }
    let finished_early = all
        .iter()
        .filter(|c| c.finish_reason == FinishReason::Stop)
        .count();
    assert!(
        finished_early > 0 && finished_early < 12,
        "test needs a mix of finish reasons, got {finished_early}"
    );
}

#[test]
fn sampler_logprobs_match_training_forward() {
    let cfg = common::qwen3();
    let (_vm, model) = common::build(&cfg, DType::F32, 19);
    let ps = prompts(cfg.vocab_size);
    let params = SamplingParams {
        n: 2,
        temperature: 0.7,
        max_new_tokens: 8,
        seed: 1,
        ..Default::default()
    };
    let comps = generate(&model, &ps, &params, None).unwrap();
    let p: Vec<&[u32]> = comps
        .iter()
        .map(|c| ps[c.prompt_index].as_slice())
        .collect();
    let c: Vec<&[u32]> = comps.iter().map(|c| c.tokens.as_slice()).collect();
    let batch = TokenBatch::new(&p, &c, 0, &Device::Cpu).unwrap();
    let lp: Vec<Vec<f32>> = model
        .forward_train(&batch, 0.7)
        .unwrap()
        .logprobs
        .to_vec2()
        .unwrap();
    for (r, comp) in comps.iter().enumerate() {
        let start = p[r].len();
        for (k, &want) in comp.logprobs.iter().enumerate() {
            let got = lp[r][start + k];
            assert!(
                (got - want).abs() < 1e-4,
                "row {r} token {k}: train {got} vs sampler {want}"
            );
        }
    }
}

#[test]
fn truncation_filters() {
    let logits = [2.0f32, 1.0, 0.5, 3.0, -1.0];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let sample = |params: &SamplingParams, rng: &mut rand::rngs::StdRng| -> Vec<u32> {
        (0..2000)
            .map(|_| popo_model::sampler::sample_token(&logits, params, rng).0)
            .collect()
    };
    let base = SamplingParams::default();
    // top_k = 1 and a tiny top_p are argmax.
    assert!(sample(
        &SamplingParams {
            top_k: 1,
            ..base.clone()
        },
        &mut rng
    )
    .iter()
    .all(|&t| t == 3));
    assert!(sample(
        &SamplingParams {
            top_p: 0.1,
            ..base.clone()
        },
        &mut rng
    )
    .iter()
    .all(|&t| t == 3));
    // top_k = 2 keeps {3, 0}, with probabilities e^3 : e^2.
    let s = sample(
        &SamplingParams {
            top_k: 2,
            ..base.clone()
        },
        &mut rng,
    );
    assert!(s.iter().all(|&t| t == 3 || t == 0));
    let frac0 = s.iter().filter(|&&t| t == 0).count() as f64 / s.len() as f64;
    let want = 1.0 / (1.0 + 1f64.exp());
    assert!(
        (frac0 - want).abs() < 0.04,
        "top_k=2 frequency {frac0} vs {want}"
    );
    // p = softmax: [0.2369, 0.0871, 0.0528, 0.6439, 0.0118]; top_p 0.85 keeps {3, 0}; 0.9 adds 1.
    let s = sample(
        &SamplingParams {
            top_p: 0.85,
            ..base.clone()
        },
        &mut rng,
    );
    assert!(s.iter().all(|&t| t == 3 || t == 0));
    let s = sample(
        &SamplingParams {
            top_p: 0.9,
            ..base.clone()
        },
        &mut rng,
    );
    assert!(s.iter().all(|&t| t != 2 && t != 4) && s.contains(&1));
    // min_p 0.1: keeps tokens with p >= 0.0644 -> {3, 0, 1}.
    let s = sample(
        &SamplingParams {
            min_p: 0.1,
            ..base.clone()
        },
        &mut rng,
    );
    assert!(s.iter().all(|&t| t == 3 || t == 0 || t == 1) && s.contains(&1));
    // Unfiltered sampling follows softmax(logits / T): check one frequency at T = 2.
    let s = sample(
        &SamplingParams {
            temperature: 2.0,
            ..base.clone()
        },
        &mut rng,
    );
    let z: Vec<f64> = logits.iter().map(|&l| (l as f64 / 2.0).exp()).collect();
    let want4 = z[4] / z.iter().sum::<f64>();
    let frac4 = s.iter().filter(|&&t| t == 4).count() as f64 / s.len() as f64;
    assert!(
        (frac4 - want4).abs() < 0.03,
        "T=2 frequency {frac4} vs {want4}"
    );
    // The returned log-prob is the pre-truncation log-softmax at temperature.
    let (t, lp) = popo_model::sampler::sample_token(
        &logits,
        &SamplingParams {
            greedy: true,
            ..base
        },
        &mut rng,
    );
    let lse = logits.iter().map(|&l| (l as f64).exp()).sum::<f64>().ln();
    assert_eq!(t, 3);
    assert!((lp as f64 - (3.0 - lse)).abs() < 1e-6);
}

#[test]
fn bad_inputs_are_errors() {
    let cfg = common::qwen2();
    let (_vm, model) = common::build(&cfg, DType::F32, 1);
    let p = SamplingParams::default();
    assert!(generate(&model, &[vec![]], &p, None).is_err());
    assert!(generate(&model, &[vec![1000]], &p, None)
        .unwrap_err()
        .to_string()
        .contains("vocab_size"));
    let long = vec![1u32; cfg.max_position_embeddings];
    assert!(generate(&model, &[long], &p, None)
        .unwrap_err()
        .to_string()
        .contains("max_position_embeddings"));
    let s = SamplingParams {
        stop_strings: vec!["x".into()],
        ..Default::default()
    };
    assert!(generate(&model, &[vec![1]], &s, None).is_err());
}

#[test]
fn stop_strings_end_a_sequence_at_their_first_occurrence() {
    let tok = popo_model::Tokenizer::char_level("abcdefgh", &["<eos>"], None).unwrap();
    let mut cfg = common::qwen2();
    cfg.vocab_size = tok.vocab_size();
    let (_vm, model) = common::build(&cfg, DType::F32, 29);
    let prompts = vec![vec![0u32, 1, 2]];
    let free = SamplingParams {
        greedy: true,
        max_new_tokens: 16,
        ..Default::default()
    };
    let base = generate(&model, &prompts, &free, Some(&tok)).unwrap()[0].clone();
    let text = tok.decode(&base.tokens, false).unwrap();
    // Stop at the two characters produced by tokens 3 and 4 (greedy output is the same prefix).
    let stop: String = tok.decode(&base.tokens[3..5], false).unwrap();
    let first = text.find(&stop).unwrap();
    let want_len = text[..first + stop.len()].chars().count();
    let params = SamplingParams {
        stop_strings: vec!["never".into(), stop.clone()],
        ..free
    };
    let got = generate(&model, &prompts, &params, Some(&tok)).unwrap()[0].clone();
    assert_eq!(
        got.finish_reason,
        FinishReason::Stop,
        "stop {stop:?} in {text:?}"
    );
    assert_eq!(got.tokens, base.tokens[..want_len].to_vec());
    // max_new_tokens = 0 gives empty completions.
    let none = generate(
        &model,
        &prompts,
        &SamplingParams {
            max_new_tokens: 0,
            n: 2,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    assert_eq!(none.len(), 2);
    assert!(none
        .iter()
        .all(|c| c.tokens.is_empty() && c.finish_reason == FinishReason::Length));
}
