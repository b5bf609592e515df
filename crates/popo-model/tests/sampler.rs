//! Rollout engine: batching must not change results, seeds reproduce, sampler log-probs agree
//! with the training forward, and the truncation filters do what they say.

mod common;

use candle_core::{DType, Device};
use popo_model::{
    generate, generate_parts, generate_requests, FinishReason, Request, SamplingParams, TokenBatch,
};
use rand::SeedableRng;

fn prompts(vocab: usize) -> Vec<Vec<u32>> {
    vec![
        common::tokens(21, 3, vocab),
        common::tokens(22, 11, vocab),
        common::tokens(23, 1, vocab),
        common::tokens(24, 6, vocab),
    ]
}

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

/// Asserts that two decodes agree row by row: the same tokens and finish reasons, log-probs
/// within `tol`.
fn assert_same_rows(
    got: &[popo_model::Completion],
    want: &[popo_model::Completion],
    tol: f32,
    what: &str,
) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        let at = format!(
            "{what}, request {} sample {}",
            w.prompt_index, w.sample_index
        );
        assert_eq!(g.tokens, w.tokens, "{at}");
        assert_eq!(g.finish_reason, w.finish_reason, "{at}");
        for (a, b) in g.logprobs.iter().zip(&w.logprobs) {
            assert!((a - b).abs() < tol, "{at}: {a} vs {b}");
        }
    }
}

/// Runs `generate_requests` and returns its rows ordered by (request, sample), checking that each
/// row is reported exactly once.
fn requests(
    model: &popo_model::Model,
    reqs: &[Request],
    params: &SamplingParams,
    max_rows: usize,
) -> Vec<popo_model::Completion> {
    let mut got = Vec::new();
    generate_requests(model, reqs, params, None, max_rows, &mut |c| {
        got.push(c);
        Ok(())
    })
    .unwrap();
    got.sort_by_key(|c| (c.prompt_index, c.sample_index));
    let want: Vec<(usize, usize)> = reqs
        .iter()
        .enumerate()
        .flat_map(|(q, r)| (0..r.n + r.greedy_row as usize).map(move |s| (q, s)))
        .collect();
    let keys: Vec<(usize, usize)> = got
        .iter()
        .map(|c| (c.prompt_index, c.sample_index))
        .collect();
    assert_eq!(keys, want);
    got
}

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

/// Reproducible logits in roughly [-scale, scale].
fn random_logits(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    use rand::Rng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| scale * (2.0 * rng.random::<f32>() - 1.0))
        .collect()
}

/// Exact softmax(logits / t), in f64.
fn softmax(logits: &[f32], t: f64) -> Vec<f64> {
    let z: Vec<f64> = logits.iter().map(|&x| x as f64 / t).collect();
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|&x| (x - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|x| x / sum).collect()
}

/// Greedy on the device: the host sampler's argmax (lowest id on ties) and log-prob, for
/// vocabularies that fill their blocks exactly or not, a one-token vocabulary, f32 and bf16.
#[test]
fn device_greedy_equals_the_host_sampler() {
    use candle_core::Tensor;
    use popo_model::sampler::{sample_rows, sample_token, Filter, Pick};
    let greedy = SamplingParams {
        greedy: true,
        ..Default::default()
    };
    for v in [1usize, 7, 48, 1000] {
        let rows = 5;
        let mut flat = random_logits(v as u64, rows * v, 6.0);
        if v > 3 {
            // A tie at the maximum: the lowest id wins.
            flat[v - 1] = 9.0;
            flat[2] = 9.0;
        }
        for dtype in [DType::F32, DType::BF16] {
            let t = Tensor::from_vec(flat.clone(), (rows, v), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let host = t.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
            let got = sample_rows(&t, &vec![Pick::Greedy; rows], &Filter::default()).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(0);
            for (r, row) in host.iter().enumerate() {
                let (want, want_lp) = sample_token(row, &greedy, &mut rng);
                let (tok, lp) = got[r].unwrap();
                assert_eq!(tok, want, "vocab {v} {dtype:?} row {r}");
                assert!((lp - want_lp).abs() < 1e-5, "{lp} vs {want_lp}");
            }
            if v > 3 {
                assert_eq!(got[0].unwrap().0, 2);
            }
        }
    }
}

/// Sampling on the device against the host sampler, over many draws of a 37-token vocabulary
/// (6 blocks of 7 ids, the last one padded): the same token for the same uniform (the two differ
/// only where rounding moves a boundary), frequencies that pass a chi-square test against the
/// exact softmax, log-probs of the drawn tokens equal to the exact ones within 1e-5, the same
/// draws again for the same uniforms, and greedy and finished rows mixed into the batch.
#[test]
fn device_sampling_follows_the_softmax_and_the_host_sampler() {
    use candle_core::Tensor;
    use popo_model::sampler::{sample_rows, sample_token, Filter, Pick};
    use rand::Rng;
    let v = 37;
    let logits = random_logits(5, v, 4.0);
    let (rows, calls) = (50, 400);
    let flat: Vec<f32> = (0..rows).flat_map(|_| logits.clone()).collect();
    let t = Tensor::from_vec(flat, (rows, v), &Device::Cpu).unwrap();
    for temperature in [1.0, 0.7, 1.6] {
        let exact = softmax(&logits, temperature);
        let params = SamplingParams {
            temperature,
            ..Default::default()
        };
        // The host sampler consumes one uniform per draw, as the device path does.
        let mut dev_rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut host_rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut counts = vec![0usize; v];
        let mut same = 0;
        for call in 0..calls {
            let picks: Vec<Pick> = (0..rows)
                .map(|_| Pick::Sample {
                    temperature,
                    u: dev_rng.random::<f64>(),
                })
                .collect();
            let got = sample_rows(&t, &picks, &Filter::default()).unwrap();
            if call == 0 {
                assert_eq!(
                    got,
                    sample_rows(&t, &picks, &Filter::default()).unwrap(),
                    "reproducible"
                );
            }
            for g in got {
                let (tok, lp) = g.unwrap();
                counts[tok as usize] += 1;
                let want_lp = exact[tok as usize].ln();
                assert!((lp as f64 - want_lp).abs() < 1e-5, "{lp} vs {want_lp}");
                same += (sample_token(&logits, &params, &mut host_rng).0 == tok) as usize;
            }
        }
        let n = (rows * calls) as f64;
        eprintln!("T={temperature}: {same} of {n} draws equal the host sampler's");
        assert!(
            same as f64 >= 0.999 * n,
            "T={temperature}: {same} of {n} draws equal the host sampler's"
        );
        assert_chi_square(&counts, &exact, &format!("T={temperature}"));
    }
    // Greedy, sampled and finished rows in one call.
    let picks = [
        Pick::Skip,
        Pick::Greedy,
        Pick::Sample {
            temperature: 1.0,
            u: 0.5,
        },
    ];
    let got = sample_rows(&t.narrow(0, 0, 3).unwrap(), &picks, &Filter::default()).unwrap();
    assert!(got[0].is_none());
    let argmax = (0..v)
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap();
    assert_eq!(got[1].unwrap().0 as usize, argmax);
    assert!(got[2].is_some());
    assert!(
        sample_rows(&t, &picks, &Filter::default()).is_err(),
        "picks must match rows"
    );
    let one = t.narrow(0, 0, 1).unwrap();
    for (temperature, u) in [(0.0, 0.5), (f64::NAN, 0.5), (1.0, 1.0)] {
        let bad = [Pick::Sample { temperature, u }];
        assert!(
            sample_rows(&one, &bad, &Filter::default()).is_err(),
            "T={temperature} u={u}"
        );
    }
}

/// Chi-square of draw counts against expected probabilities, over bins expecting at least 5
/// draws (the rest pooled into one bin), below about the 1e-6 tail.
fn assert_chi_square(counts: &[usize], exact: &[f64], what: &str) {
    let n = counts.iter().sum::<usize>() as f64;
    let (mut chi2, mut df, mut pool_obs, mut pool_exp) = (0.0, 0usize, 0.0, 0.0);
    for (c, p) in counts.iter().zip(exact) {
        let e = p * n;
        if e >= 5.0 {
            chi2 += (*c as f64 - e).powi(2) / e;
            df += 1;
        } else {
            pool_obs += *c as f64;
            pool_exp += e;
        }
    }
    if pool_exp > 0.0 || pool_obs > 0.0 {
        chi2 += (pool_obs - pool_exp).powi(2) / pool_exp.max(1e-12);
        df += 1;
    }
    let bound = (df - 1) as f64 + 7.0 * (2.0 * (df - 1) as f64).sqrt();
    eprintln!("{what}: chi2 {chi2:.1} on {} df (bound {bound:.0})", df - 1);
    assert!(chi2 <= bound, "{what}: chi2 {chi2:.1} on {} df", df - 1);
}

/// The filtered distribution, written independently of both samplers: sort by probability,
/// keep min-p, then the k largest, then the shortest prefix holding top_p of their mass;
/// renormalise.
fn filtered_softmax(logits: &[f32], t: f64, top_k: usize, top_p: f64, min_p: f64) -> Vec<f64> {
    let p = softmax(logits, t);
    let pmax = p.iter().cloned().fold(0.0, f64::max);
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| p[i] >= min_p * pmax).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    if top_k > 0 {
        order.truncate(top_k);
    }
    let mass: f64 = order.iter().map(|&i| p[i]).sum();
    let mut acc = 0.0;
    let mut keep = order.len();
    for (j, &i) in order.iter().enumerate() {
        acc += p[i];
        if acc >= top_p * mass {
            keep = j + 1;
            break;
        }
    }
    let kept: f64 = order[..keep].iter().map(|&i| p[i]).sum();
    let mut out = vec![0.0; p.len()];
    for &i in &order[..keep] {
        out[i] = p[i] / kept;
    }
    out
}

/// top-k, top-p and min-p on the device against the host sampler and an f64 reference, over
/// many draws of a 37-token vocabulary: only kept ids are drawn, with the reference's
/// frequencies (chi-square), the same token as the host for the same uniform, and the
/// unfiltered log-prob, as `sample_token` returns.
#[test]
fn device_filters_follow_the_host_sampler() {
    use candle_core::Tensor;
    use popo_model::sampler::{sample_rows, sample_token, Filter, Pick};
    use rand::Rng;
    let v = 37;
    let logits = random_logits(9, v, 3.0);
    let (rows, calls) = (40, 250);
    let flat: Vec<f32> = (0..rows).flat_map(|_| logits.clone()).collect();
    let t = Tensor::from_vec(flat, (rows, v), &Device::Cpu).unwrap();
    for (top_k, top_p, min_p, temperature) in [
        (5, 1.0, 0.0, 1.0),
        (0, 0.8, 0.0, 1.0),
        (0, 1.0, 0.05, 1.3),
        (12, 0.9, 0.01, 0.8),
        (1, 1.0, 0.0, 1.0),
    ] {
        let what = format!("top_k={top_k} top_p={top_p} min_p={min_p} T={temperature}");
        let filter = Filter {
            top_k,
            top_p,
            min_p,
        };
        let params = SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            ..Default::default()
        };
        let exact = filtered_softmax(&logits, temperature, top_k, top_p, min_p);
        let unfiltered = softmax(&logits, temperature);
        let mut dev_rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut host_rng = rand::rngs::StdRng::seed_from_u64(3);
        let (mut counts, mut same) = (vec![0usize; v], 0);
        for _ in 0..calls {
            let picks: Vec<Pick> = (0..rows)
                .map(|_| Pick::Sample {
                    temperature,
                    u: dev_rng.random::<f64>(),
                })
                .collect();
            for g in sample_rows(&t, &picks, &filter).unwrap() {
                let (tok, lp) = g.unwrap();
                assert!(
                    exact[tok as usize] > 0.0,
                    "{what}: drew {tok}, outside the filter"
                );
                counts[tok as usize] += 1;
                let want = unfiltered[tok as usize].ln();
                assert!((lp as f64 - want).abs() < 1e-5, "{what}: {lp} vs {want}");
                same += (sample_token(&logits, &params, &mut host_rng).0 == tok) as usize;
            }
        }
        let n = rows * calls;
        eprintln!("{what}: {same} of {n} draws equal the host sampler's");
        assert!(same as f64 >= 0.999 * n as f64, "{what}: {same} of {n}");
        assert_chi_square(&counts, &exact, &what);
    }
    let bad = Filter {
        top_p: 0.0,
        ..Default::default()
    };
    let one = [Pick::Sample {
        temperature: 1.0,
        u: 0.5,
    }];
    assert!(sample_rows(&t.narrow(0, 0, 1).unwrap(), &one, &bad).is_err());
}

/// The on-device path decodes what the host sampler decodes: same seeds, same tokens, log-probs
/// within 1e-5, for sampled rows, greedy rows and both in one continuous batch.
#[test]
fn device_and_host_sampling_decode_the_same_rows() {
    use popo_model::sampler::with_host_sampling;
    for (name, cfg) in common::all_configs() {
        let (_vm, model) = common::build(&cfg, DType::F32, 31);
        let params = SamplingParams {
            n: 3,
            temperature: 0.9,
            max_new_tokens: 10,
            stop_token_ids: vec![3, 9],
            seed: 7,
            ..Default::default()
        };
        let reqs: Vec<Request> = prompts(cfg.vocab_size)
            .into_iter()
            .enumerate()
            .map(|(q, prompt)| Request {
                prompt,
                n: 2,
                seed: 50 + q as u64,
                greedy_row: q % 2 == 0,
            })
            .collect();
        let ps = prompts(cfg.vocab_size);
        let greedy = SamplingParams {
            greedy: true,
            ..params.clone()
        };
        let cases: Vec<(Vec<popo_model::Completion>, Vec<popo_model::Completion>)> = vec![
            (
                generate(&model, &ps, &params, None).unwrap(),
                with_host_sampling(|| generate(&model, &ps, &params, None).unwrap()),
            ),
            (
                generate(&model, &ps, &greedy, None).unwrap(),
                with_host_sampling(|| generate(&model, &ps, &greedy, None).unwrap()),
            ),
            (
                requests(&model, &reqs, &params, 4),
                with_host_sampling(|| requests(&model, &reqs, &params, 4)),
            ),
        ];
        for (case, (dev, host)) in cases.iter().enumerate() {
            assert_same_rows(dev, host, 1e-5, &format!("{name} case {case}"));
        }
    }
}

/// Host traffic per decode step: the host sampler copies every row's logits (rows x vocab f32,
/// what every step did before on-device sampling); the device path copies block sums and one
/// block per row (about 2 sqrt(vocab) floats) plus nothing else. Printed for BENCHMARKS.md.
#[test]
fn decode_steps_move_ids_not_logits_to_the_host() {
    use popo_model::sampler::{block_size, decode_stats, with_host_sampling};
    let vocab = 4096;
    let cfg = popo_model::ModelConfig::qwen2_tiny(vocab, 32, 1, 4, 2, 64);
    let (_vm, model) = common::build(&cfg, DType::F32, 3);
    let ps = prompts(vocab);
    let rows = ps.len() * 2;
    let per_step = |params: &SamplingParams, host: bool| {
        let before = decode_stats();
        let run = || generate(&model, &ps, params, None).unwrap();
        let out = if host { with_host_sampling(run) } else { run() };
        assert!(out.iter().all(|c| c.tokens.len() == 8));
        let after = decode_stats();
        assert_eq!(after.steps - before.steps, 8, "one choice per step");
        (after.host_bytes - before.host_bytes) / 8
    };
    let sampled = SamplingParams {
        n: 2,
        max_new_tokens: 8,
        ..Default::default()
    };
    let greedy = SamplingParams {
        greedy: true,
        ..sampled.clone()
    };
    let logits_bytes = (rows * vocab * 4) as u64;
    let (bs, nb) = (block_size(vocab), vocab.div_ceil(block_size(vocab)));
    assert_eq!(per_step(&sampled, true), logits_bytes);
    assert_eq!(per_step(&sampled, false), (rows * (nb + bs) * 4) as u64);
    // Greedy: one sum and one id per row.
    assert_eq!(per_step(&greedy, false), (rows * 8) as u64);
    eprintln!(
        "host bytes per decode step, {rows} rows, vocab {vocab}: {logits_bytes} (host sampler) \
         -> {} sampled, {} greedy (device); vocab 151,936: {} -> {} per row",
        rows * (nb + bs) * 4,
        rows * 8,
        151_936 * 4,
        (block_size(151_936) + 151_936usize.div_ceil(block_size(151_936))) * 4
    );
}

/// Finished rows stay in the batch, masked, until a quarter of it has finished; then they leave
/// in one compaction. Far fewer copies of the cache than one per step in which a row ends, and
/// every row decodes as it does alone.
#[test]
fn finished_rows_leave_the_cache_in_few_compactions() {
    use popo_model::sampler::decode_stats;
    let cfg = common::qwen2();
    let (_vm, model) = common::build(&cfg, DType::F32, 37);
    let ps = prompts(cfg.vocab_size);
    let params = SamplingParams {
        n: 8,
        temperature: 1.2,
        max_new_tokens: 24,
        stop_token_ids: vec![1, 3, 9, 17],
        seed: 3,
        ..Default::default()
    };
    let before = decode_stats();
    let all = generate(&model, &ps, &params, None).unwrap();
    let stats = decode_stats();
    let compactions = stats.kv_compactions - before.kv_compactions;
    // What the old engine did: one compaction in every step where a row ended and others ran on.
    let longest = all.iter().map(|c| c.tokens.len()).max().unwrap();
    let mut ends: Vec<usize> = all
        .iter()
        .map(|c| c.tokens.len())
        .filter(|&n| n < longest)
        .collect();
    ends.sort();
    ends.dedup();
    eprintln!(
        "32 rows: {compactions} compactions ({} bytes), one per finishing step would be {}",
        stats.kv_bytes_copied - before.kv_bytes_copied,
        ends.len()
    );
    assert!(ends.len() >= 6, "test needs rows ending at many steps");
    assert!(compactions < ends.len() as u64 && compactions <= 12);
    for (i, p) in ps.iter().enumerate() {
        // Prompt i of a call draws from the streams of a one-prompt call with this seed.
        let seed = params
            .seed
            .wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let one = SamplingParams {
            seed,
            ..params.clone()
        };
        let alone = generate(&model, std::slice::from_ref(p), &one, None).unwrap();
        assert_same_rows(
            &all[i * 8..(i + 1) * 8],
            &alone,
            1e-4,
            &format!("prompt {i}"),
        );
    }
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
