//! Training forward: gradients reach every weight, padding does not leak between rows, the
//! chunked log-softmax matches a plain reference, and the KV-cache path equals a full forward.

mod common;

use candle_core::{DType, Device, Tensor};
use popo_model::{Model, TokenBatch};

fn batch(vocab: usize) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let prompts = vec![
        common::tokens(1, 5, vocab),
        common::tokens(2, 3, vocab),
        common::tokens(3, 7, vocab),
    ];
    let completions = vec![
        common::tokens(4, 4, vocab),
        common::tokens(5, 6, vocab),
        common::tokens(6, 1, vocab),
    ];
    (prompts, completions)
}

fn make_batch(p: &[Vec<u32>], c: &[Vec<u32>]) -> TokenBatch {
    let p: Vec<&[u32]> = p.iter().map(|x| x.as_slice()).collect();
    let c: Vec<&[u32]> = c.iter().map(|x| x.as_slice()).collect();
    TokenBatch::new(&p, &c, 0, &Device::Cpu).unwrap()
}

#[test]
fn every_parameter_gets_a_nonzero_gradient() {
    for (name, cfg) in common::all_configs() {
        let (varmap, model) = common::build(&cfg, DType::F32, 7);
        let (p, c) = batch(cfg.vocab_size);
        let b = make_batch(&p, &c);
        let out = model.forward_train(&b, 0.7).unwrap();
        // Log-probs alone reach every weight (the entropy term is checked separately below).
        let loss = out
            .logprobs
            .mul(&b.completion_mask)
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let vars = varmap.data().lock().unwrap();
        assert!(!vars.is_empty());
        for (vname, var) in vars.iter() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient for {vname}"));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                norm > 0.0 && norm.is_finite(),
                "{name}: gradient of {vname} is {norm}"
            );
        }
        // Entropy is differentiable too.
        let ent = out
            .entropy
            .mul(&b.completion_mask)
            .unwrap()
            .sum_all()
            .unwrap();
        let g = ent.backward().unwrap();
        let lm = if cfg.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        let gl = g
            .get(vars[lm].as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        assert!(
            gl.to_scalar::<f32>().unwrap() > 0.0,
            "{name}: entropy has no gradient"
        );
    }
}

/// log p and entropy computed from the full logits with plain f64 code.
fn reference(model: &Model, ids: &[u32], temperature: f64) -> (Vec<f64>, Vec<f64>) {
    let t = ids.len();
    let x = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let m = Tensor::ones((1, t), DType::F32, &Device::Cpu).unwrap();
    let logits = model
        .forward_logits(&x, &m)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let logits: Vec<Vec<f64>> = logits.to_vec2().unwrap();
    let mut lp = vec![0.0];
    let mut ent = vec![0.0];
    for i in 1..t {
        let z: Vec<f64> = logits[i - 1].iter().map(|v| v / temperature).collect();
        let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = mx + z.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
        lp.push(z[ids[i] as usize] - lse);
        ent.push(-z.iter().map(|v| (v - lse).exp() * (v - lse)).sum::<f64>());
    }
    (lp, ent)
}

#[test]
fn padded_batch_rows_match_single_sequences_and_reference() {
    for (name, cfg) in common::all_configs() {
        let (_vm, model) = common::build(&cfg, DType::F32, 11);
        let (p, c) = batch(cfg.vocab_size);
        let b = make_batch(&p, &c);
        let out = model.forward_train(&b, 0.8).unwrap();
        let lps: Vec<Vec<f32>> = out.logprobs.to_vec2().unwrap();
        let ents: Vec<Vec<f32>> = out.entropy.to_vec2().unwrap();
        for r in 0..p.len() {
            let ids: Vec<u32> = p[r].iter().chain(&c[r]).copied().collect();
            let (lp, ent) = reference(&model, &ids, 0.8);
            for i in 0..b.seq_len() {
                let (want_lp, want_ent) = if i < ids.len() {
                    (lp[i], ent[i])
                } else {
                    (0.0, 0.0)
                };
                assert!(
                    (lps[r][i] as f64 - want_lp).abs() < 1e-4,
                    "{name} row {r} pos {i}: logprob {} vs {want_lp}",
                    lps[r][i]
                );
                assert!(
                    (ents[r][i] as f64 - want_ent).abs() < 1e-4,
                    "{name} row {r} pos {i}: entropy {} vs {want_ent}",
                    ents[r][i]
                );
            }
        }
        assert_eq!(out.hidden.dims(), &[3, b.seq_len(), cfg.hidden_size]);
    }
}

#[test]
fn kv_cache_decode_equals_full_forward_with_left_padding() {
    for (name, cfg) in common::all_configs() {
        let (_vm, model) = common::build(&cfg, DType::F32, 3);
        let model = model.detached();
        let seqs = [
            common::tokens(7, 9, cfg.vocab_size),
            common::tokens(8, 9, cfg.vocab_size),
        ];
        let prompt_lens = [4usize, 2];
        let max_prompt = 4;
        // Prefill the left-padded prompts, then feed the rest one token at a time.
        let mut ids = vec![];
        let mut mask = vec![];
        for (s, &pl) in seqs.iter().zip(&prompt_lens) {
            ids.extend(std::iter::repeat_n(0u32, max_prompt - pl));
            ids.extend_from_slice(&s[..pl]);
            let mut m = vec![0u8; max_prompt - pl];
            m.extend(std::iter::repeat_n(1u8, pl));
            mask.push(m);
        }
        let mut cache = model.new_cache(2, 2).unwrap(); // small capacity: exercises growth
        let ids = Tensor::from_vec(ids, (2, max_prompt), &Device::Cpu).unwrap();
        let h = model.forward_cached(&ids, &mask, &mut cache).unwrap();
        let mut last: Vec<Tensor> = vec![model
            .lm_head(&h.narrow(1, max_prompt - 1, 1).unwrap())
            .unwrap()];
        let steps = 5;
        for step in 0..steps {
            let next: Vec<u32> = (0..2).map(|r| seqs[r][prompt_lens[r] + step]).collect();
            let x = Tensor::from_vec(next, (2, 1), &Device::Cpu).unwrap();
            let h = model
                .forward_cached(&x, &[vec![1], vec![1]], &mut cache)
                .unwrap();
            last.push(model.lm_head(&h).unwrap());
        }
        for r in 0..2 {
            let full_ids = &seqs[r][..prompt_lens[r] + steps];
            let x = Tensor::new(full_ids, &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let m = Tensor::ones((1, full_ids.len()), DType::F32, &Device::Cpu).unwrap();
            let full = model.forward_logits(&x, &m).unwrap(); // [1, t, v]
            for (k, l) in last.iter().enumerate() {
                let pos = prompt_lens[r] - 1 + k;
                let want = full.get(0).unwrap().get(pos).unwrap();
                let got = l.get(r).unwrap().squeeze(0).unwrap();
                let diff = common::max_abs_diff(&want, &got);
                assert!(diff < 1e-4, "{name} row {r} step {k}: max |diff| {diff}");
            }
        }
    }
}

#[test]
fn f64_gradient_matches_finite_differences() {
    for (name, cfg) in common::all_configs() {
        let (varmap, model) = common::build(&cfg, DType::F64, 5);
        let (p, c) = batch(cfg.vocab_size);
        let b = make_batch(&p, &c);
        let mask = b.completion_mask.to_dtype(DType::F64).unwrap();
        let loss_of = |m: &Model| -> Tensor {
            let out = m.forward_train(&b, 0.9).unwrap();
            let lp = out.logprobs.mul(&mask).unwrap().sum_all().unwrap();
            let ent = out.entropy.mul(&mask).unwrap().sum_all().unwrap();
            (lp + (ent * 0.3).unwrap()).unwrap()
        };
        let grads = loss_of(&model).backward().unwrap();
        let vars = varmap.data().lock().unwrap();
        let mut checked = 0;
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for vname in names.iter().filter(|n| {
            n.contains("embed")
                || n.contains("layers.0.self_attn.q_proj")
                || n.contains("layers.1.self_attn.k_")
                || n.contains("norm") && n.contains("layers.1")
                || n.contains("mlp.down")
                || n.contains("lm_head")
                || n.as_str() == "model.norm.weight"
        }) {
            let var = &vars[*vname];
            let g = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let orig = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            // the coordinate with the largest gradient, so the relative error is meaningful
            let idx = (0..g.len())
                .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
                .unwrap();
            let h = 1e-5;
            let eval = |delta: f64| {
                let mut v = orig.clone();
                v[idx] += delta;
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                loss_of(&model.detached()).to_scalar::<f64>().unwrap()
            };
            let num = (eval(h) - eval(-h)) / (2.0 * h);
            var.set(&Tensor::from_vec(orig.clone(), var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let rel = (num - g[idx]).abs() / num.abs().max(1e-8);
            assert!(
                rel < 1e-5,
                "{name} {vname}[{idx}]: analytic {} numeric {num} rel {rel}",
                g[idx]
            );
            checked += 1;
        }
        assert!(checked >= 5, "{name}: only {checked} parameters checked");
    }
}

#[test]
fn bf16_compute_tracks_f32_and_returns_f32() {
    let cfg = common::qwen3();
    let (vm, m32) = common::build(&cfg, DType::F32, 31);
    let dir = tempfile::tempdir().unwrap();
    popo_model::save_pretrained(dir.path(), &cfg, &vm, DType::F32, None, None).unwrap();
    let m16 = popo_model::load_pretrained(dir.path(), &Device::Cpu, DType::BF16)
        .unwrap()
        .model;
    assert_eq!(m16.dtype(), DType::BF16);
    let (p, c) = batch(cfg.vocab_size);
    let b = make_batch(&p, &c);
    let a = m32.forward_train(&b, 1.0).unwrap();
    let o = m16.forward_train(&b, 1.0).unwrap();
    assert_eq!(o.logprobs.dtype(), DType::F32);
    assert_eq!(o.entropy.dtype(), DType::F32);
    let diff = (a.logprobs - o.logprobs).unwrap().abs().unwrap();
    let mean = diff.mean_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(mean < 0.1, "mean |logprob diff| bf16 vs f32: {mean}");
    let out = popo_model::generate(
        &m16,
        &p,
        &popo_model::SamplingParams {
            max_new_tokens: 4,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    assert!(out
        .iter()
        .all(|c| c.tokens.len() == 4 && c.logprobs.iter().all(|l| l.is_finite() && *l <= 0.0)));
}

#[test]
fn stacked_and_reselected_caches_decode_like_one_cache() {
    use popo_model::KvCache;
    let cfg = common::llama();
    let (_vm, model) = common::build(&cfg, DType::F32, 37);
    let model = model.detached();
    let rows = [
        common::tokens(41, 6, cfg.vocab_size),
        common::tokens(42, 6, cfg.vocab_size),
        common::tokens(43, 6, cfg.vocab_size),
    ];
    let masks = [vec![1u8; 6], vec![0, 0, 1, 1, 1, 1], vec![0, 1, 1, 1, 1, 1]];
    let prefill = |idx: &[usize]| -> (KvCache, Tensor) {
        let ids: Vec<u32> = idx.iter().flat_map(|&i| rows[i].clone()).collect();
        let ids = Tensor::from_vec(ids, (idx.len(), 6), &Device::Cpu).unwrap();
        let m: Vec<Vec<u8>> = idx.iter().map(|&i| masks[i].clone()).collect();
        let mut c = model.new_cache(idx.len(), 6).unwrap();
        let h = model.forward_cached(&ids, &m, &mut c).unwrap();
        (c, h)
    };
    let (whole, _) = prefill(&[0, 1, 2]);
    let (a, _) = prefill(&[0]);
    let (b, _) = prefill(&[1, 2]);
    // Stack, then keep rows 2 and 0 (twice), as the sampler does for n samples / finished rows.
    let mut stacked = KvCache::cat(&[a, b])
        .unwrap()
        .select_rows(&[2, 0, 0])
        .unwrap();
    let mut reference = whole.select_rows(&[2, 0, 0]).unwrap();
    assert_eq!(stacked.real_lengths(), &[5, 6, 6]);
    for step in 0..3u32 {
        let x = Tensor::new(&[[step + 1], [step + 2], [step + 2]], &Device::Cpu).unwrap();
        let m = vec![vec![1u8]; 3];
        let h1 = model.forward_cached(&x, &m, &mut stacked).unwrap();
        let h2 = model.forward_cached(&x, &m, &mut reference).unwrap();
        let d = common::max_abs_diff(&h1, &h2);
        assert!(d < 1e-5, "step {step}: {d}");
    }
}

/// The no-graph copy (`detached()`: candle's fused RMSNorm, softmax and RoPE kernels, no
/// gradient carriers) computes what the differentiable training path computes: log-probs,
/// entropies and hidden states within float rounding, for every architecture, in f32 and bf16,
/// and the sampler's log-probs (the decode path) agree with both.
#[test]
fn the_no_graph_path_matches_the_training_path() {
    for (name, cfg) in common::all_configs() {
        // bf16: measured identical; allow one bf16 step of a log-prob near -5 (0.03).
        for (dtype, tol) in [(DType::F32, 1e-5f32), (DType::BF16, 0.05)] {
            let (_varmap, model) = common::build(&cfg, dtype, 11);
            let (p, c) = batch(cfg.vocab_size);
            let b = make_batch(&p, &c);
            let train = model.forward_train(&b, 0.8).unwrap();
            let fast = model.detached().forward_train(&b, 0.8).unwrap();
            for (what, a, f) in [
                ("logprobs", &train.logprobs, &fast.logprobs),
                ("entropy", &train.entropy, &fast.entropy),
                ("hidden", &train.hidden, &fast.hidden),
            ] {
                let d = common::max_abs_diff(a, f);
                eprintln!("{name} {dtype:?} {what}: max |diff| {d:.2e}");
                assert!(d <= tol, "{name} {dtype:?} {what}: {d}");
            }
        }
        // Decode path: greedy tokens' sampler log-probs (T = 1) against the training forward.
        let (_varmap, model) = common::build(&cfg, DType::F32, 11);
        let prompts = vec![
            common::tokens(8, 5, cfg.vocab_size),
            common::tokens(9, 9, cfg.vocab_size),
        ];
        let params = popo_model::SamplingParams {
            n: 1,
            greedy: true,
            max_new_tokens: 6,
            ..Default::default()
        };
        let out = popo_model::generate(&model, &prompts, &params, None).unwrap();
        for o in &out {
            let p = &prompts[o.prompt_index];
            let b = make_batch(std::slice::from_ref(p), std::slice::from_ref(&o.tokens));
            let lp = model
                .forward_train(&b, 1.0)
                .unwrap()
                .logprobs
                .to_vec2::<f32>()
                .unwrap();
            for (k, &s) in o.logprobs.iter().enumerate() {
                let t = lp[0][p.len() + k];
                assert!((s - t).abs() < 1e-4, "{name}: decode {s} vs training {t}");
            }
        }
    }
}

/// Gradient checkpointing gives the gradients of the ordinary backward, for a loss that reads
/// log-probs, entropies and hidden states, for every architecture (tied embeddings included).
#[test]
fn checkpointed_backward_matches_the_ordinary_backward() {
    for (name, cfg) in common::all_configs() {
        let (varmap, model) = common::build(&cfg, DType::F32, 5);
        let (p, c) = batch(cfg.vocab_size);
        let b = make_batch(&p, &c);
        let loss_of = |out: &popo_model::TrainOutput| -> anyhow::Result<Tensor> {
            let m = &b.completion_mask;
            let lp = out.logprobs.mul(m)?.sum_all()?;
            let ent = (out.entropy.mul(m)?.sum_all()? * 0.1)?;
            let feat = (out.hidden.sqr()?.mean_all()? * 0.5)?;
            Ok(((lp + ent)? + feat)?)
        };
        let plain = loss_of(&model.forward_train(&b, 0.9).unwrap())
            .unwrap()
            .backward()
            .unwrap();
        let mut stores = Vec::new();
        model
            .backward_checkpointed(&b, 0.9, &mut |out| loss_of(out), &mut |s| {
                stores.push(s);
                Ok(())
            })
            .unwrap();
        let vars = varmap.data().lock().unwrap();
        for (vname, var) in vars.iter() {
            let want = plain.get(var.as_tensor()).unwrap();
            let mut got: Option<Tensor> = None;
            for s in &stores {
                if let Some(g) = s.get(var.as_tensor()) {
                    got = Some(match got {
                        Some(acc) => (acc + g).unwrap(),
                        None => g.clone(),
                    });
                }
            }
            let got = got.unwrap_or_else(|| panic!("{name}: no gradient for {vname}"));
            let scale = want
                .abs()
                .unwrap()
                .max_keepdim(0)
                .unwrap()
                .flatten_all()
                .unwrap();
            let scale = scale.max(0).unwrap().to_scalar::<f32>().unwrap().max(1e-6);
            let diff = common::max_abs_diff(&got, want);
            assert!(
                diff <= 1e-4 * scale,
                "{name} {vname}: max |diff| {diff} (scale {scale})"
            );
        }
    }
}

/// The decoding copies (stacked q/k/v and gate/up; transposed matrices on the CPU) compute what
/// the plain no-graph model computes, and a row's floats do not depend on the rows decoded
/// beside it (so `popo eval` gives the same samples at any batch size).
#[test]
fn decoding_copies_match_and_rows_stay_independent() {
    for (name, cfg) in common::all_configs() {
        for dtype in [DType::F32, DType::BF16] {
            let (_varmap, model) = common::build(&cfg, dtype, 5);
            let (plain, fast) = (model.detached(), model.for_decoding().unwrap());
            let rows: Vec<Vec<u32>> = (0..5)
                .map(|r| common::tokens(3 + r, 6, cfg.vocab_size))
                .collect();
            // Hidden states [b, 6, d] of the first `b` rows: a prefill, then one decode step.
            let hidden = |m: &Model, b: usize| {
                let ids = Tensor::from_vec(rows[..b].concat(), (b, 6), &Device::Cpu).unwrap();
                let mut cache = m.new_cache(b, 8).unwrap();
                let h = m
                    .forward_cached(
                        &ids.narrow(1, 0, 5).unwrap(),
                        &vec![vec![1u8; 5]; b],
                        &mut cache,
                    )
                    .unwrap();
                let next = m
                    .forward_cached(
                        &ids.narrow(1, 5, 1).unwrap(),
                        &vec![vec![1u8]; b],
                        &mut cache,
                    )
                    .unwrap();
                Tensor::cat(&[h, next], 1)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
            };
            let tol = if dtype == DType::F32 { 1e-5 } else { 0.05 };
            let d = common::max_abs_diff(&hidden(&plain, 5), &hidden(&fast, 5));
            eprintln!("{name} {dtype:?}: decoding copies vs plain: max |diff| {d:.2e}");
            assert!(d <= tol, "{name} {dtype:?}: {d}");
            let all = hidden(&fast, 5);
            for b in [1, 2] {
                let d = common::max_abs_diff(&all.narrow(0, 0, b).unwrap(), &hidden(&fast, b));
                assert!(
                    d == 0.0,
                    "{name} {dtype:?}: rows 0..{b} alone differ by {d}"
                );
            }
        }
    }
}

/// `completion_only` computes the same log-probs and entropies at completion tokens, zeros at
/// prompt tokens, and the same gradients for a loss over completion tokens.
#[test]
fn completion_only_matches_the_full_head_on_completions() {
    for (name, cfg) in common::all_configs() {
        let (varmap, model) = common::build(&cfg, DType::F32, 13);
        let (p, c) = batch(cfg.vocab_size);
        let full = make_batch(&p, &c);
        let mut only = full.clone();
        only.completion_only = true;
        let m = &full.completion_mask;
        let run = |b: &TokenBatch| {
            let out = model.forward_train(b, 0.9).unwrap();
            let loss = ((&out.logprobs * m).unwrap().sum_all().unwrap()
                + (&out.entropy * m).unwrap().sum_all().unwrap())
            .unwrap();
            (out, loss.backward().unwrap())
        };
        let ((a, ga), (b, gb)) = (run(&full), run(&only));
        for (what, x, y) in [
            ("logprobs", &a.logprobs, &b.logprobs),
            ("entropy", &a.entropy, &b.entropy),
        ] {
            let d = common::max_abs_diff(&(x * m).unwrap(), y);
            assert!(d <= 1e-6, "{name} {what}: {d}");
        }
        for (vname, var) in varmap.data().lock().unwrap().iter() {
            let (x, y) = (ga.get(var.as_tensor()), gb.get(var.as_tensor()));
            let d = common::max_abs_diff(x.unwrap(), y.unwrap());
            assert!(d <= 1e-5, "{name} gradient of {vname}: {d}");
        }
    }
}
