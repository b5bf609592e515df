//! Continuous batching across problems (`generate_requests`) and runs of prompts decoded side by
//! side (`generate_parts`): each sample is what it would be alone.

use crate::common;
use crate::{assert_same_rows, requests};
use candle_core::DType;
use popo_model::{
    generate, generate_parts, generate_requests, FinishReason, Request, SamplingParams,
};

/// Continuous batching: a request's samples are those of a one-prompt `generate` call with its
/// seed, and its greedy row that of a greedy call, whatever the batch size. Prompts of lengths 1
/// to 11 with different row counts, stop ids that end rows at different steps, and batch sizes
/// that split requests across admissions and merge caches of different lengths.
#[test]
fn requests_sample_as_they_would_alone_whatever_the_batch() {
    for (name, cfg) in common::all_configs() {
        let (_vm, model) = common::build(&cfg, DType::F32, 23);
        let params = SamplingParams {
            temperature: 1.1,
            top_p: 0.9,
            max_new_tokens: 9,
            stop_token_ids: vec![3, 9, 17],
            ..Default::default()
        };
        let reqs: Vec<Request> = [
            (3, 2, false),
            (11, 1, true),
            (1, 3, true),
            (6, 0, true),
            (5, 2, false),
        ]
        .iter()
        .enumerate()
        .map(|(q, &(len, n, greedy_row))| Request {
            prompt: common::tokens(40 + q as u64, len, cfg.vocab_size),
            n,
            seed: 1000 + 7 * q as u64,
            greedy_row,
        })
        .collect();
        // Each request alone: its samples from a one-prompt call with its seed, then its greedy row.
        let mut want = Vec::new();
        for (q, r) in reqs.iter().enumerate() {
            let one = std::slice::from_ref(&r.prompt);
            let mut alone = Vec::new();
            if r.n > 0 {
                let p = SamplingParams {
                    n: r.n,
                    seed: r.seed,
                    ..params.clone()
                };
                alone.extend(generate(&model, one, &p, None).unwrap());
            }
            if r.greedy_row {
                let p = SamplingParams {
                    greedy: true,
                    ..params.clone()
                };
                let mut g = generate(&model, one, &p, None).unwrap().remove(0);
                g.sample_index = r.n;
                alone.push(g);
            }
            for c in &mut alone {
                c.prompt_index = q;
            }
            want.extend(alone);
        }
        let stops = want
            .iter()
            .filter(|c| c.finish_reason == FinishReason::Stop)
            .count();
        assert!(
            stops > 0 && stops < want.len(),
            "{name}: want a mix of finish steps, got {stops} stops"
        );
        for max_rows in [1, 2, 3, 5, 100] {
            let got = requests(&model, &reqs, &params, max_rows);
            assert_same_rows(&got, &want, 1e-4, &format!("{name}, batch {max_rows}"));
        }
    }
}

#[test]
fn request_errors_name_the_problem() {
    let cfg = common::qwen2();
    let (_vm, model) = common::build(&cfg, DType::F32, 1);
    let p = SamplingParams::default();
    let ok = Request {
        prompt: vec![1, 2],
        n: 1,
        seed: 0,
        greedy_row: false,
    };
    let run = |reqs: &[Request], max_rows: usize| {
        generate_requests(&model, reqs, &p, None, max_rows, &mut |_| Ok(()))
            .unwrap_err()
            .to_string()
    };
    assert!(run(std::slice::from_ref(&ok), 0).contains("at least one row"));
    let none = Request { n: 0, ..ok.clone() };
    assert!(run(&[ok.clone(), none], 4).contains("prompt 1 asks for no rows"));
    let long = Request {
        prompt: vec![1; cfg.max_position_embeddings],
        ..ok.clone()
    };
    assert!(run(&[ok.clone(), ok.clone(), long], 4).contains("prompt 2 has"));
    // A failing callback stops the run with its error.
    let err = generate_requests(&model, &[ok], &p, None, 4, &mut |_| {
        anyhow::bail!("disk full")
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "disk full");
}

/// `generate_parts` gives every prompt the seeds it has in one `generate` call: with prompts of
/// one length (the same padding either way) the tokens are identical, in the same order, and the
/// log-probs equal up to the LM head's rounding at another row count.
#[test]
fn generation_in_parts_keeps_each_prompts_samples() {
    for (name, cfg) in common::all_configs() {
        let (_vm, model) = common::build(&cfg, DType::F32, 17);
        let ps: Vec<Vec<u32>> = (0..5)
            .map(|i| common::tokens(40 + i, 4, cfg.vocab_size))
            .collect();
        let params = SamplingParams {
            n: 3,
            temperature: 1.3,
            max_new_tokens: 8,
            stop_token_ids: vec![5],
            seed: 9,
            ..Default::default()
        };
        let one = generate(&model, &ps, &params, None).unwrap();
        for parts in [1, 2, 3, 7] {
            let split = generate_parts(&model, &ps, &params, None, parts).unwrap();
            assert_eq!(split.len(), one.len(), "{name} parts {parts}");
            for (a, b) in one.iter().zip(&split) {
                assert_eq!(
                    (a.prompt_index, a.sample_index, &a.tokens),
                    (b.prompt_index, b.sample_index, &b.tokens),
                    "{name} parts {parts}"
                );
                for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
                    assert!((x - y).abs() < 1e-5, "{name} parts {parts}: {x} vs {y}");
                }
            }
        }
    }
}
