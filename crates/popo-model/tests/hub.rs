//! HF layout round trips and the errors users see for bad checkpoints.

mod common;

use candle_core::{DType, Device, Tensor};
use popo_model::{load_pretrained, save_pretrained, save_pretrained_sharded, ModelConfig};
use std::collections::BTreeMap;

fn weights(varmap: &candle_nn::VarMap) -> BTreeMap<String, Vec<u8>> {
    let data = varmap.data().lock().unwrap();
    data.iter()
        .map(|(k, v)| {
            let t = v.as_tensor().flatten_all().unwrap();
            let bytes = match t.dtype() {
                DType::F32 => t
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                DType::BF16 => t
                    .to_vec1::<half::bf16>()
                    .unwrap()
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                _ => unreachable!(),
            };
            (k.clone(), bytes)
        })
        .collect()
}

#[test]
fn save_load_round_trip_is_bit_exact_single_and_sharded() {
    for (name, cfg) in common::all_configs() {
        let (vm, _model) = common::build(&cfg, DType::F32, 2);
        let gen = serde_json::json!({"eos_token_id": 3, "do_sample": true});
        for shard_bytes in [usize::MAX, 20_000] {
            let dir = tempfile::tempdir().unwrap();
            save_pretrained_sharded(
                dir.path(),
                &cfg,
                &vm,
                DType::F32,
                None,
                Some(&gen),
                shard_bytes,
            )
            .unwrap();
            let sharded = dir.path().join("model.safetensors.index.json").exists();
            assert_eq!(sharded, shard_bytes != usize::MAX, "{name}");
            let p = load_pretrained(dir.path(), &Device::Cpu, DType::F32).unwrap();
            assert_eq!(weights(&vm), weights(&p.varmap), "{name} sharded={sharded}");
            let mut want = cfg.clone();
            want.torch_dtype = Some("float32".into());
            assert_eq!(p.config, want);
            assert_eq!(p.generation_config.as_ref(), Some(&gen));
            // Same function: identical logits.
            let x = Tensor::new(&[[1u32, 5, 7, 2]], &Device::Cpu).unwrap();
            let m = Tensor::ones((1, 4), DType::F32, &Device::Cpu).unwrap();
            let a = _model.forward_logits(&x, &m).unwrap();
            let b = p.model.forward_logits(&x, &m).unwrap();
            let d = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_keepdim(2)
                .unwrap()
                .max_keepdim(1)
                .unwrap();
            assert_eq!(
                d.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                vec![0.0]
            );
        }
    }
}

#[test]
fn bf16_files_load_into_f32_and_back() {
    let cfg = common::qwen2();
    let (vm, _m) = common::build(&cfg, DType::BF16, 4);
    let dir = tempfile::tempdir().unwrap();
    save_pretrained(dir.path(), &cfg, &vm, DType::BF16, None, None).unwrap();
    let p = load_pretrained(dir.path(), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(p.model.dtype(), DType::F32);
    let dir2 = tempfile::tempdir().unwrap();
    save_pretrained(dir2.path(), &p.config, &p.varmap, DType::BF16, None, None).unwrap();
    let q = load_pretrained(dir2.path(), &Device::Cpu, DType::BF16).unwrap();
    assert_eq!(
        weights(&vm),
        weights(&q.varmap),
        "bf16 -> f32 -> bf16 is exact"
    );
}

#[test]
fn bad_checkpoints_give_clear_errors() {
    let cfg = common::qwen2();
    let (vm, _m) = common::build(&cfg, DType::F32, 4);
    let err = |dir: &std::path::Path| {
        format!(
            "{:#}",
            load_pretrained(dir, &Device::Cpu, DType::F32)
                .err()
                .expect("should fail")
        )
    };

    let dir = tempfile::tempdir().unwrap();
    assert!(err(dir.path()).contains("config.json"));
    save_pretrained(dir.path(), &cfg, &vm, DType::F32, None, None).unwrap();

    // Wrong shape: a config with a bigger hidden size names the tensor.
    let mut big = cfg.clone();
    big.intermediate_size = 65;
    std::fs::write(dir.path().join("config.json"), big.to_hf_json().to_string()).unwrap();
    let e = err(dir.path());
    assert!(e.contains("mlp") && e.contains("shape"), "{e}");

    // Unsupported architecture / field.
    let mut j = cfg.to_hf_json();
    j["model_type"] = "gpt2".into();
    std::fs::write(dir.path().join("config.json"), j.to_string()).unwrap();
    assert!(err(dir.path()).contains("gpt2"));
    let mut j = cfg.to_hf_json();
    j["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
    std::fs::write(dir.path().join("config.json"), j.to_string()).unwrap();
    assert!(err(dir.path()).contains("yarn"));
    std::fs::write(dir.path().join("config.json"), cfg.to_hf_json().to_string()).unwrap();

    // Missing tensor.
    let mut t =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    t.remove("model.layers.1.mlp.up_proj.weight");
    candle_core::safetensors::save(&t, dir.path().join("model.safetensors")).unwrap();
    assert!(err(dir.path()).contains("model.layers.1.mlp.up_proj.weight"));

    // Unsupported dtype.
    let mut t2 = t.clone();
    t2.insert(
        "model.layers.1.mlp.up_proj.weight".into(),
        Tensor::zeros((64, 32), DType::U8, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&t2, dir.path().join("model.safetensors")).unwrap();
    let e = err(dir.path());
    assert!(e.contains("dtype") && e.contains("up_proj"), "{e}");

    // Corrupt (truncated) file.
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    assert!(err(dir.path()).contains("safetensors"));

    // No weights at all.
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    assert!(err(dir.path()).contains("model.safetensors"));
}

#[test]
fn sequences_longer_than_max_positions_are_errors() {
    let mut cfg: ModelConfig = common::qwen2();
    cfg.max_position_embeddings = 8;
    let (_vm, model) = common::build(&cfg, DType::F32, 4);
    let x = Tensor::zeros((1, 9), DType::U32, &Device::Cpu).unwrap();
    let m = Tensor::ones((1, 9), DType::F32, &Device::Cpu).unwrap();
    let e = model.forward_logits(&x, &m).unwrap_err().to_string();
    assert!(e.contains("max_position_embeddings"), "{e}");
}

#[test]
fn resolve_model_path_local_dir_and_hf_cache() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_str().unwrap();
    assert_eq!(popo_model::resolve_model_path(p).unwrap(), dir.path());
    // A hub id found in the standard cache layout resolves to its snapshot.
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--org--tiny");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
    std::fs::write(repo.join("refs/main"), "abc123").unwrap();
    std::fs::write(repo.join("snapshots/abc123/config.json"), "{}").unwrap();
    // Only this test touches HF_HUB_CACHE.
    std::env::set_var("HF_HUB_CACHE", cache.path());
    assert_eq!(
        popo_model::resolve_model_path("org/tiny").unwrap(),
        repo.join("snapshots/abc123")
    );
    if !cfg!(feature = "hub") {
        let e = popo_model::resolve_model_path("org/missing")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot download") && e.contains("--features hub"),
            "{e}"
        );
    }
    assert!(popo_model::resolve_model_path("./no/such/dir").is_err());
}

/// The largest |a - b| of two models' logits on one sequence.
fn logits_gap(a: &popo_model::Model, b: &popo_model::Model) -> f32 {
    let x = Tensor::new(&[[1u32, 5, 7, 2, 9]], &Device::Cpu).unwrap();
    let m = Tensor::ones((1, 5), DType::F32, &Device::Cpu).unwrap();
    let (la, lb) = (
        a.forward_logits(&x, &m).unwrap(),
        b.forward_logits(&x, &m).unwrap(),
    );
    common::max_abs_diff(&la, &lb)
}

#[test]
fn untying_a_tied_checkpoint_writes_the_head_out_and_keeps_its_function() {
    use popo_model::{ties_head, untie_checkpoint};
    for dtype in [DType::F32, DType::BF16] {
        let cfg = common::qwen3(); // tied
        let (vm, model) = common::build(&cfg, dtype, 7);
        let dir = tempfile::tempdir().unwrap();
        let gen = serde_json::json!({"eos_token_id": 3});
        save_pretrained(dir.path(), &cfg, &vm, dtype, None, Some(&gen)).unwrap();
        let gen_file = std::fs::read(dir.path().join("generation_config.json")).unwrap();
        assert!(ties_head(dir.path()));

        assert!(untie_checkpoint(dir.path()).unwrap(), "{dtype:?}");
        assert!(!ties_head(dir.path()));
        let p = load_pretrained(dir.path(), &Device::Cpu, dtype).unwrap();
        assert!(!p.config.tie_word_embeddings);
        let mut want = cfg.clone();
        want.tie_word_embeddings = false;
        want.torch_dtype = p.config.torch_dtype.clone();
        assert_eq!(p.config, want, "only the tie changes");
        let w = weights(&p.varmap);
        assert_eq!(w["lm_head.weight"], w["model.embed_tokens.weight"]);
        let mut before = weights(&vm);
        before.insert(
            "lm_head.weight".into(),
            before["model.embed_tokens.weight"].clone(),
        );
        assert_eq!(w, before, "every tensor keeps its bits ({dtype:?})");
        assert_eq!(logits_gap(&model, &p.model), 0.0, "{dtype:?}");
        assert_eq!(
            std::fs::read(dir.path().join("generation_config.json")).unwrap(),
            gen_file
        );
        // Once untied, nothing more to do.
        assert!(!untie_checkpoint(dir.path()).unwrap());
    }
    // An untied checkpoint, and a config that is not a model's, are left alone.
    let cfg = common::qwen2();
    let (vm, _) = common::build(&cfg, DType::F32, 8);
    let dir = tempfile::tempdir().unwrap();
    save_pretrained(dir.path(), &cfg, &vm, DType::F32, None, None).unwrap();
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    assert!(!untie_checkpoint(dir.path()).unwrap());
    assert_eq!(
        std::fs::read(dir.path().join("model.safetensors")).unwrap(),
        bytes
    );
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    assert!(!untie_checkpoint(dir.path()).unwrap());
}

#[test]
fn untying_a_tied_checkpoint_without_embeddings_is_a_clear_error() {
    let cfg = common::qwen3();
    let (vm, _) = common::build(&cfg, DType::F32, 9);
    let dir = tempfile::tempdir().unwrap();
    save_pretrained(dir.path(), &cfg, &vm, DType::F32, None, None).unwrap();
    // Keep every tensor but the embeddings.
    let path = dir.path().join("model.safetensors");
    let kept: Vec<(String, Tensor)> = candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n != "model.embed_tokens.weight")
        .collect();
    candle_core::safetensors::save(&kept.into_iter().collect(), &path).unwrap();
    let e = format!(
        "{:#}",
        popo_model::untie_checkpoint(dir.path()).unwrap_err()
    );
    assert!(e.contains("model.embed_tokens.weight"), "{e}");
    assert!(e.contains(&dir.path().display().to_string()), "{e}");
}
