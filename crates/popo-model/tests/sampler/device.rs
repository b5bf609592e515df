//! Tokens chosen on the logits' device: greedy, sampling and the filters against exact
//! distributions and the host sampler.

use crate::common;
use crate::{assert_same_rows, prompts, requests};
use candle_core::{DType, Device};
use popo_model::{generate, Request, SamplingParams};
use rand::SeedableRng;

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
