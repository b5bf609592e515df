//! LoRA against PEFT (fixtures from tools/make_lora_fixtures.py): popo loads the adapter PEFT
//! saved and reproduces PEFT's log-probs; popo's merge equals `merge_and_unload()`; what popo
//! writes is what PEFT wrote; gradients reach the adapters only, and match finite differences.
//!
//! The PEFT checks also run on SmolLM2-135M-Instruct with r = 16 on every projection, ignored by
//! default (the model and its fixture live outside the repo; `tools/check-lora-smollm2.sh` makes
//! both and runs them):
//!
//! ```text
//! tools/.venv/bin/python tools/make_lora_fixtures.py --base SMOLLM2 --out DIR
//! POPO_SMOLLM2_LORA=DIR cargo test --release -p popo-model --test lora -- --ignored
//! ```

mod common;

use candle_core::{DType, Device, Tensor, Var};
use popo_model::adapter::{self, LoraSpec};
use popo_model::{load_pretrained, load_with_adapter, LoraWeights, Model, TokenBatch};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;

const TOL: f64 = 1e-4;

#[derive(Deserialize)]
struct Expected {
    r: usize,
    lora_alpha: f64,
    sequences: Vec<Sequence>,
}

#[derive(Deserialize)]
struct Sequence {
    input_ids: Vec<u32>,
    adapted: Vec<f64>,
    merged: Vec<f64>,
    base: Vec<f64>,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A PEFT adapter with what PEFT computed from it: `peft/`, `expected.json` and
/// `merged.safetensors` in `dir` (tools/make_lora_fixtures.py), over the base model `base`.
struct Fixture {
    base: PathBuf,
    dir: PathBuf,
    expected: Expected,
}

impl Fixture {
    /// The committed one, over the tiny Qwen2 fixture.
    fn tiny() -> Self {
        Self::read(fixtures().join("qwen2"), fixtures().join("lora"))
    }

    /// SmolLM2's, made outside the repo; its expected.json names its base.
    fn smollm2() -> Self {
        let dir = std::env::var_os("POPO_SMOLLM2_LORA")
            .map(PathBuf::from)
            .expect("POPO_SMOLLM2_LORA: a fixture from make_lora_fixtures.py --base SMOLLM2");
        let e: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("expected.json")).expect("expected.json"),
        )
        .expect("expected.json is JSON");
        let base = PathBuf::from(e["base"].as_str().expect("expected.json: base"));
        Self::read(base, dir)
    }

    fn read(base: PathBuf, dir: PathBuf) -> Self {
        let path = dir.join("expected.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let expected =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self {
            base,
            dir,
            expected,
        }
    }

    fn peft(&self) -> PathBuf {
        self.dir.join("peft")
    }

    fn check(&self, what: &str, model: &Model, pick: impl Fn(&Sequence) -> &Vec<f64>) {
        for (i, s) in self.expected.sequences.iter().enumerate() {
            let d = max_diff(&logprobs(model, &s.input_ids), pick(s));
            assert!(d < TOL, "{what}, sequence {i}: max |diff| {d} vs PEFT");
        }
    }
}

fn logprobs(model: &Model, ids: &[u32]) -> Vec<f64> {
    let batch = TokenBatch::new(&[&ids[..1]], &[&ids[1..]], 0, &Device::Cpu).unwrap();
    let out = model.forward_train(&batch, 1.0).unwrap();
    out.logprobs
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec2::<f64>()
        .unwrap()[0]
        .clone()
}

fn max_diff(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max)
}

#[test]
fn a_peft_adapter_gives_pefts_log_probs() {
    peft_adapter_log_probs(&Fixture::tiny());
}

#[test]
#[ignore = "needs POPO_SMOLLM2_LORA (tools/check-lora-smollm2.sh)"]
fn smollm2_a_peft_adapter_gives_pefts_log_probs() {
    peft_adapter_log_probs(&Fixture::smollm2());
}

fn peft_adapter_log_probs(f: &Fixture) {
    let ad = f.peft();
    let pre = load_with_adapter(&f.base, Some(&ad), None, &Device::Cpu, DType::F32).unwrap();
    f.check("adapted (detached)", &pre.model.detached(), |s| &s.adapted);
    // The adapter directory as the model: its base found through base_model_name_or_path.
    let pre = load_with_adapter(&ad, None, None, &Device::Cpu, DType::F32).unwrap();
    f.check("adapter dir as model", &pre.model.detached(), |s| {
        &s.adapted
    });
    // Without the adapter, the base's own (a check of the fixture itself).
    let plain = load_pretrained(&f.base, &Device::Cpu, DType::F32).unwrap();
    f.check("base", &plain.model.detached(), |s| &s.base);
    let read = adapter::read_adapter(&ad, &Device::Cpu, DType::F32).unwrap();
    let spec = read.spec;
    assert_eq!((spec.r, spec.alpha), (f.expected.r, f.expected.lora_alpha));
    // With the adapters as Vars the forward records a graph, and each adapted projection runs as
    // one op (popo-model's lora_train.rs): the same log-probs.
    let trainable: LoraWeights = read
        .weights
        .iter()
        .map(|(k, (a, b))| {
            let var = |t: &Tensor| Var::from_tensor(t).unwrap().as_tensor().clone();
            (k.clone(), (var(a), var(b)))
        })
        .collect();
    let training = plain
        .model
        .with_lora(&trainable, spec.scale(), 0.0)
        .unwrap();
    f.check("adapted (training forward)", &training, |s| &s.adapted);
}

#[test]
fn the_decoding_copy_merges_the_adapters() {
    decoding_copy_merges(&Fixture::tiny());
}

#[test]
#[ignore = "needs POPO_SMOLLM2_LORA (tools/check-lora-smollm2.sh)"]
fn smollm2_the_decoding_copy_merges_the_adapters() {
    decoding_copy_merges(&Fixture::smollm2());
}

fn decoding_copy_merges(f: &Fixture) {
    let ad = f.peft();
    let pre = load_with_adapter(&f.base, Some(&ad), None, &Device::Cpu, DType::F32).unwrap();
    let dec = pre.model.for_decoding().unwrap();
    let mut side = pre.model.clone();
    side.set_lora_side_decoding(true);
    let side = side.for_decoding().unwrap();
    for s in &f.expected.sequences {
        let ids = Tensor::new(&s.input_ids[..], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mask = ids.ones_like().unwrap();
        // The sequence's log-probs, as the other checks: SmolLM2's logits reach the tens, where
        // f32 rounding of W + BA against x W + (x A) B alone moves them by 2e-4 (1.2e-4 in
        // the log-probs of the vocabulary's far tail).
        let logp = |m: &Model| -> Vec<f64> {
            let logits = m.forward_logits(&ids, &mask).unwrap();
            let lp = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1).unwrap();
            let lp = lp.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
            let next = s.input_ids[1..].iter().enumerate();
            next.map(|(i, &t)| f64::from(lp[i][t as usize])).collect()
        };
        let plain = logp(&pre.model.detached());
        let d = max_diff(&plain, &logp(&dec));
        assert!(d < TOL, "merged decoding log-probs differ by {d}");
        let d = max_diff(&plain, &logp(&side));
        assert!(d < TOL, "side-path decoding log-probs differ by {d}");
    }
}

#[test]
fn merging_equals_peft_merge_and_unload() {
    merging_equals_peft(&Fixture::tiny());
}

#[test]
#[ignore = "needs POPO_SMOLLM2_LORA (tools/check-lora-smollm2.sh)"]
fn smollm2_merging_equals_peft_merge_and_unload() {
    merging_equals_peft(&Fixture::smollm2());
}

fn merging_equals_peft(f: &Fixture) {
    let ad = adapter::read_adapter(&f.peft(), &Device::Cpu, DType::F32).unwrap();
    let pre = load_pretrained(&f.base, &Device::Cpu, DType::F32).unwrap();
    let mut weights: Vec<(String, Tensor)> = {
        let data = pre.varmap.data().lock().unwrap();
        data.iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect()
    };
    adapter::merge_weights(&mut weights, &ad.spec, &ad.weights).unwrap();
    let want =
        candle_core::safetensors::load(f.dir.join("merged.safetensors"), &Device::Cpu).unwrap();
    let n_weights = want.keys().filter(|k| k.ends_with(".weight")).count();
    assert_eq!(n_weights, ad.weights.len());
    let got: HashMap<String, Tensor> = weights.into_iter().collect();
    for (name, w) in &want {
        let d = common::max_abs_diff(&got[name], w);
        assert!(d < 1e-6, "{name}: merged weight differs from PEFT's by {d}");
    }
    // And the merged model scores as PEFT's merged model does.
    let tmp = tempfile::tempdir().unwrap();
    let merged: Vec<(String, Tensor)> = got.into_iter().collect();
    popo_model::save_weights(
        tmp.path(),
        &pre.config,
        &merged,
        DType::F32,
        pre.tokenizer.as_ref(),
        None,
        1 << 30,
    )
    .unwrap();
    let m = load_pretrained(tmp.path(), &Device::Cpu, DType::F32).unwrap();
    f.check("merged model", &m.model.detached(), |s| &s.merged);
}

#[test]
fn popo_writes_what_peft_wrote() {
    let dir = fixtures().join("lora/peft");
    let ad = adapter::read_adapter(&dir, &Device::Cpu, DType::F32).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    adapter::save_adapter(tmp.path(), &ad.spec, "some/base", &ad.weights).unwrap();
    let theirs =
        candle_core::safetensors::load(dir.join(adapter::ADAPTER_WEIGHTS), &Device::Cpu).unwrap();
    let ours =
        candle_core::safetensors::load(tmp.path().join(adapter::ADAPTER_WEIGHTS), &Device::Cpu)
            .unwrap();
    let mut keys: Vec<&String> = ours.keys().collect();
    keys.sort();
    let mut want: Vec<&String> = theirs.keys().collect();
    want.sort();
    assert_eq!(keys, want, "PEFT's key names");
    for (k, t) in &theirs {
        assert_eq!(ours[k].dtype(), t.dtype(), "{k}");
        assert_eq!(ours[k].dims(), t.dims(), "{k}");
        assert_eq!(common::max_abs_diff(&ours[k], t), 0.0, "{k}");
    }
    let read = |p: PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (o, t) = (
        read(tmp.path().join(adapter::ADAPTER_CONFIG)),
        read(dir.join(adapter::ADAPTER_CONFIG)),
    );
    for k in [
        "peft_type",
        "task_type",
        "r",
        "lora_alpha",
        "lora_dropout",
        "bias",
        "use_rslora",
        "use_dora",
        "fan_in_fan_out",
    ] {
        assert_eq!(o[k], t[k], "adapter_config.json field {k}");
    }
    let set = |v: &serde_json::Value| {
        let mut s: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        s.sort();
        s
    };
    assert_eq!(set(&o["target_modules"]), set(&t["target_modules"]));
    assert_eq!(o["base_model_name_or_path"], "some/base");
    // And it reads back as what was written.
    let back = adapter::read_adapter(tmp.path(), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(back.spec, ad.spec);
}

/// Writes a copy of the PEFT adapter with `edit` applied to its config or tensors.
fn broken(
    edit_cfg: impl Fn(&mut serde_json::Value),
    edit_w: impl Fn(&mut HashMap<String, Tensor>),
) -> tempfile::TempDir {
    let dir = fixtures().join("lora/peft");
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(adapter::ADAPTER_CONFIG)).unwrap())
            .unwrap();
    edit_cfg(&mut cfg);
    std::fs::write(tmp.path().join(adapter::ADAPTER_CONFIG), cfg.to_string()).unwrap();
    let mut w =
        candle_core::safetensors::load(dir.join(adapter::ADAPTER_WEIGHTS), &Device::Cpu).unwrap();
    edit_w(&mut w);
    candle_core::safetensors::save(&w, tmp.path().join(adapter::ADAPTER_WEIGHTS)).unwrap();
    tmp
}

fn load_err(dir: &std::path::Path) -> String {
    let base = fixtures().join("qwen2");
    match load_with_adapter(&base, Some(dir), None, &Device::Cpu, DType::F32) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn bad_adapters_are_named_errors() {
    let key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    let d = broken(
        |_| {},
        |w| {
            let t = Tensor::zeros((4, 7), DType::F32, &Device::Cpu).unwrap();
            w.insert(key.into(), t);
        },
    );
    let e = load_err(d.path());
    assert!(
        e.contains("model.layers.0.self_attn.q_proj.lora_A.weight")
            && e.contains("[4, 7]")
            && e.contains("[r, 64]"),
        "{e}"
    );
    let d = broken(
        |_| {},
        |w| {
            w.remove("base_model.model.model.layers.0.mlp.up_proj.lora_B.weight");
        },
    );
    let e = load_err(d.path());
    assert!(
        e.contains("model.layers.0.mlp.up_proj.lora_A.weight") && e.contains("no lora_B"),
        "{e}"
    );
    let d = broken(
        |_| {},
        |w| {
            let t = Tensor::zeros((4, 64), DType::F32, &Device::Cpu).unwrap();
            w.insert(
                "base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight".into(),
                t.clone(),
            );
            w.insert(
                "base_model.model.model.layers.9.self_attn.q_proj.lora_B.weight".into(),
                t.t().unwrap().contiguous().unwrap(),
            );
        },
    );
    let e = load_err(d.path());
    assert!(
        e.contains("model.layers.9.self_attn.q_proj") && e.contains("does not have"),
        "{e}"
    );
    let d = broken(|c| c["use_dora"] = true.into(), |_| {});
    assert!(load_err(d.path()).contains("use_dora"));
    let d = broken(|c| c["peft_type"] = "IA3".into(), |_| {});
    assert!(load_err(d.path()).contains("IA3"));
    let d = broken(
        |c| c["target_modules"] = serde_json::json!(["q_proj"]),
        |_| {},
    );
    assert!(load_err(d.path()).contains("does not name"));
    let d = broken(
        |_| {},
        |w| {
            let t = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
            w.insert("base_model.model.model.embed_tokens.weight".into(), t);
        },
    );
    assert!(load_err(d.path())
        .contains("unexpected tensor `base_model.model.model.embed_tokens.weight`"));
}

/// f64 model, adapters as Vars: gradients reach A and B only, match central differences, and the
/// checkpointed backward gives the same ones.
#[test]
fn adapter_gradients_match_finite_differences() {
    let cfg = common::qwen2();
    let (_vm, base) = common::build(&cfg, DType::F64, 3);
    let spec = LoraSpec {
        r: 2,
        alpha: 4.0,
        dropout: 0.0,
        target_modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
        use_rslora: false,
    };
    let init = adapter::init_adapters(&base, &spec, 7).unwrap();
    // B non-zero so that A has a gradient too.
    let mut vars: Vec<(String, Var, Var)> = Vec::new();
    let mut w = LoraWeights::new();
    for (i, (p, (a, b))) in init.iter().enumerate() {
        let b = (b.ones_like().unwrap() * (0.05 * (i + 1) as f64)).unwrap();
        let (va, vb) = (Var::from_tensor(a).unwrap(), Var::from_tensor(&b).unwrap());
        w.insert(p.clone(), (va.as_tensor().clone(), vb.as_tensor().clone()));
        vars.push((p.clone(), va, vb));
    }
    let model = base.with_lora(&w, spec.scale(), 0.0).unwrap();
    let ids = common::tokens(5, 9, cfg.vocab_size);
    let batch = TokenBatch::new(&[&ids[..3]], &[&ids[3..]], 0, &Device::Cpu).unwrap();
    let loss = |m: &Model| {
        m.forward_train(&batch, 0.8)
            .unwrap()
            .logprobs
            .sum_all()
            .unwrap()
    };
    let grads = loss(&model).backward().unwrap();
    let mut stores = Vec::new();
    model
        .backward_checkpointed(&batch, 0.8, &mut |o| Ok(o.logprobs.sum_all()?), &mut |g| {
            stores.push(g);
            Ok(())
        })
        .unwrap();
    for (p, va, vb) in &vars {
        for v in [va, vb] {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{p}: no gradient"));
            let g_ck: Tensor = stores
                .iter()
                .filter_map(|s| s.get(v.as_tensor()).cloned())
                .reduce(|a, b| (a + b).unwrap())
                .unwrap();
            assert!(
                common::max_abs_diff(g, &g_ck) < 1e-10,
                "{p}: checkpointed gradient differs"
            );
            let flat = v
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let gv = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            assert!(gv.iter().any(|x| x.abs() > 1e-8), "{p}: zero gradient");
            for j in [0, flat.len() / 2, flat.len() - 1] {
                let at = |d: f64| {
                    let mut f = flat.clone();
                    f[j] += d;
                    v.set(&Tensor::from_vec(f, v.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    loss(&model).to_scalar::<f64>().unwrap()
                };
                let h = 1e-5;
                let fd = (at(h) - at(-h)) / (2.0 * h);
                at(0.0);
                // The floor: a difference quotient of a loss of order 1 at h = 1e-5 carries about
                // 1e-10 of rounding, and candle's parallel sums may round differently from one
                // call to the next, so a coordinate whose gradient is near 1e-5 could fail at
                // 1e-6 (it did, once in 45 runs); a wrong gradient is wrong by far more.
                let rel = (fd - gv[j]).abs() / fd.abs().max(1e-4);
                assert!(
                    rel < 1e-5,
                    "{p}[{j}]: autograd {} vs finite difference {fd}",
                    gv[j]
                );
            }
        }
    }
    // The base is frozen: no gradient for any of its weights.
    let n_adapter = vars.len() * 2;
    let with_grad = _vm
        .all_vars()
        .iter()
        .filter(|v| grads.get(v.as_tensor()).is_some())
        .count();
    assert_eq!(
        with_grad, 0,
        "base weights got gradients ({n_adapter} adapter tensors)"
    );
}

/// Dropout masks come from the batch: the same batch gets the same outputs, dropout changes them,
/// and the no-graph copy has none.
#[test]
fn dropout_is_a_function_of_the_batch() {
    let cfg = common::qwen2();
    let (_vm, base) = common::build(&cfg, DType::F32, 3);
    let spec = LoraSpec {
        r: 4,
        alpha: 8.0,
        dropout: 0.3,
        target_modules: popo_model::LORA_MODULES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        use_rslora: false,
    };
    let mut w = adapter::init_adapters(&base, &spec, 1).unwrap();
    for (a, b) in w.values_mut() {
        *b = (b.ones_like().unwrap() * 0.1).unwrap();
        let _ = a;
    }
    let drop = base.with_lora(&w, spec.scale(), 0.3).unwrap();
    let plain = base.with_lora(&w, spec.scale(), 0.0).unwrap();
    let ids = common::tokens(2, 12, cfg.vocab_size);
    let (a, b) = (logprobs(&drop, &ids), logprobs(&drop, &ids));
    assert_eq!(a, b, "same batch, same mask");
    assert!(
        max_diff(&a, &logprobs(&plain, &ids)) > 1e-4,
        "dropout changes the training forward"
    );
    assert_eq!(
        logprobs(&drop.detached(), &ids),
        logprobs(&plain.detached(), &ids),
        "no dropout without a graph"
    );
}

/// In f32 and over a bf16 base (adapters f32), every adapter gets a non-zero gradient: the
/// frozen model must not keep any fused (graph-dropping) kernel of the no-graph copy.
#[test]
fn every_adapter_gets_a_gradient_in_f32_and_over_bf16() {
    for dtype in [DType::F32, DType::BF16] {
        let cfg = common::qwen3();
        let (_vm, base) = common::build(&cfg, dtype, 4);
        let spec = LoraSpec {
            r: 2,
            alpha: 4.0,
            dropout: 0.1,
            target_modules: popo_model::LORA_MODULES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            use_rslora: false,
        };
        let mut w = LoraWeights::new();
        let mut vars = Vec::new();
        for (p, (a, b)) in adapter::init_adapters(&base, &spec, 2).unwrap() {
            assert_eq!((a.dtype(), b.dtype()), (DType::F32, DType::F32));
            let b = (b.ones_like().unwrap() * 0.05).unwrap();
            let (va, vb) = (Var::from_tensor(&a).unwrap(), Var::from_tensor(&b).unwrap());
            w.insert(p.clone(), (va.as_tensor().clone(), vb.as_tensor().clone()));
            vars.push((p, va, vb));
        }
        let model = base.with_lora(&w, spec.scale(), spec.dropout).unwrap();
        let ids = common::tokens(9, 10, cfg.vocab_size);
        let batch = TokenBatch::new(&[&ids[..4]], &[&ids[4..]], 0, &Device::Cpu).unwrap();
        let out = model.forward_train(&batch, 1.0).unwrap();
        let loss = (out.logprobs.sum_all().unwrap() + out.entropy.sum_all().unwrap()).unwrap();
        let g = loss.backward().unwrap();
        for (p, va, vb) in &vars {
            for v in [va, vb] {
                let n = g
                    .get(v.as_tensor())
                    .unwrap_or_else(|| panic!("{dtype:?} {p}: no gradient"))
                    .abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(n > 0.0, "{dtype:?} {p}: zero gradient");
            }
        }
    }
}
