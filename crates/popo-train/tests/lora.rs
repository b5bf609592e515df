//! LoRA runs of the trainer on the built-in task: only the adapters train (the base stays
//! bit-identical), checkpoints hold PEFT adapters and not the base, POPO's EMA target is the
//! adapters' alone, and an interrupted + resumed run equals the uninterrupted one.

mod common;

use popo_train::config::{ConfigBuilder, TrainConfig};
use popo_train::metrics::read_metrics;
use popo_train::policy::Policy;
use popo_train::trainer::Trainer;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn cfg(dir: &Path, dtype: &str) -> TrainConfig {
    let dt = format!("run.dtype={dtype}");
    let sets = [
        "model.lora.r=4",
        "model.lora.alpha=8",
        "model.lora.dropout=0.1",
        "algo.num_iterations=2",
        "run.save_every=0",
        &dt,
    ];
    let mut b = ConfigBuilder::tiny_for_tests(dir).preset(Some("popo"));
    for s in sets {
        b = b.set(s).unwrap();
    }
    b.build().unwrap()
}

fn quiet(t: anyhow::Result<Trainer>) -> Trainer {
    let mut t = t.unwrap();
    t.set_quiet(true);
    t
}

fn new(c: TrainConfig) -> Trainer {
    quiet(Trainer::new(c, Arc::new(AtomicBool::new(false))))
}

fn bits(t: &Trainer) -> Vec<(String, Vec<u8>)> {
    let vars = t.policy().frozen_vars();
    assert!(!vars.is_empty(), "a LoRA policy keeps its base");
    vars.iter()
        .map(|(n, v)| {
            let f = v.as_tensor().to_dtype(candle_core::DType::F32).unwrap();
            let f: Vec<f32> = f.flatten_all().unwrap().to_vec1().unwrap();
            (n.clone(), f.iter().flat_map(|x| x.to_le_bytes()).collect())
        })
        .collect()
}

/// A straight run of `dtype` into `a`: only the adapters are trainable, A and B on every
/// projection, and the frozen base ends bit-identical. Returns the trainable names.
fn straight_run_trains_adapters_only(a: &Path, dtype: &str) -> Vec<String> {
    let mut t = new(cfg(a, dtype));
    let names: Vec<String> = t
        .policy()
        .named_vars()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        names.iter().all(|n| n.contains(".lora_")),
        "only adapters train: {names:?}"
    );
    assert!(
        !names.is_empty() && names.len().is_multiple_of(14),
        "A and B on the 7 projections of each layer"
    );
    let before = bits(&t);
    t.run().unwrap();
    assert!(before == bits(&t), "{dtype}: the frozen base changed");
    names
}

/// The same run into `b`, checkpointed after two steps, abandoned after three, resumed to the end.
fn interrupted_and_resumed_run(b: &Path, dtype: &str) {
    let mut t = new(cfg(b, dtype));
    t.step().unwrap();
    t.step().unwrap();
    t.save_checkpoint().unwrap();
    t.step().unwrap();
    drop(t);
    let mut t = quiet(Trainer::resume(b, Arc::new(AtomicBool::new(false))));
    assert_eq!(t.run().unwrap().steps_done, 4);
}

fn last_checkpoint(run: &Path) -> PathBuf {
    popo_train::checkpoint::list(run).unwrap().pop().unwrap()
}

/// The straight run `a` and the resumed run `b` logged the same metrics and wrote the same
/// adapters, optimizer, algorithm and trainer state and adapter config.
fn assert_resumed_run_equals_straight(a: &Path, b: &Path, dtype: &str) {
    let strip = |recs: Vec<popo_train::metrics::MetricRecord>| -> Vec<String> {
        recs.iter()
            .map(|r| {
                let v: Vec<_> = r
                    .values
                    .iter()
                    .filter(|(k, _)| !k.starts_with("perf/"))
                    .collect();
                format!("{} {v:?}", r.step)
            })
            .collect()
    };
    assert_eq!(
        strip(read_metrics(a).unwrap()),
        strip(read_metrics(b).unwrap()),
        "{dtype}: resumed run diverged"
    );
    let (ca, cb) = (last_checkpoint(a), last_checkpoint(b));
    for f in [
        "adapter_model.safetensors",
        "optimizer.safetensors",
        "algo_state.safetensors",
        "trainer_state.json",
    ] {
        let read = |p: PathBuf| common::checkpoint_file_bytes(&p);
        assert!(
            read(ca.join(f)) == read(cb.join(f)),
            "{dtype}: {f} differs after resume"
        );
    }
    // The same config, each naming its own run's copy of the tiny base.
    let config = |ck: &Path, run: &Path| {
        let text = std::fs::read_to_string(ck.join("adapter_config.json")).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let base = v["base_model_name_or_path"].as_str().unwrap().to_string();
        let own = std::fs::canonicalize(run.join(popo_train::lm::TINY_BASE_DIR)).unwrap();
        assert_eq!(Path::new(&base), own);
        v["base_model_name_or_path"] = "".into();
        v
    };
    assert_eq!(config(&ca, a), config(&cb, b));
}

/// Run `a`'s last checkpoint holds trained adapters and not the base, POPO's target covers the
/// adapters (`names`) alone, and it loads as a model through its adapter_config.json.
fn assert_checkpoint_holds_adapters_only(a: &Path, names: &[String], dtype: &str) {
    let ca = last_checkpoint(a);
    // Adapters, not the base: no model weights in a checkpoint, the base once beside them.
    assert!(!ca.join("model.safetensors").exists() && !ca.join("config.json").exists());
    assert!(a
        .join(popo_train::lm::TINY_BASE_DIR)
        .join("config.json")
        .is_file());
    let dev = candle_core::Device::Cpu;
    let w = candle_core::safetensors::load(ca.join("adapter_model.safetensors"), &dev).unwrap();
    let key = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";
    let b0 = w[key]
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(b0 > 0.0, "{dtype}: B of q_proj never moved from zero");
    // POPO's target: an EMA of the adapters alone.
    let algo = candle_core::safetensors::load(ca.join("algo_state.safetensors"), &dev).unwrap();
    let target: Vec<&String> = algo.keys().filter(|k| k.starts_with("target.")).collect();
    assert_eq!(target.len(), names.len(), "{target:?}");
    assert!(target.iter().all(|k| k.contains(".lora_")));
    // The checkpoint works as a model: its base found through adapter_config.json.
    let pre =
        popo_model::load_with_adapter(&ca, None, None, &dev, candle_core::DType::F32).unwrap();
    assert_eq!(2 * pre.model.lora_modules().unwrap().len(), names.len());
}

#[test]
fn lora_runs_train_adapters_only_and_resume_exactly() {
    let root = tempfile::tempdir().unwrap();
    for dtype in ["f32", "bf16"] {
        let (a, b) = (
            root.path().join(format!("a-{dtype}")),
            root.path().join(format!("b-{dtype}")),
        );
        let names = straight_run_trains_adapters_only(&a, dtype);
        interrupted_and_resumed_run(&b, dtype);
        assert_resumed_run_equals_straight(&a, &b, dtype);
        assert_checkpoint_holds_adapters_only(&a, &names, dtype);
    }
}
