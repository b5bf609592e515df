//! Mixed precision (docs/algorithms.md, "Optimisation"): with bf16 compute, the optimizer updates
//! f32 master weights, so the spec's small learning rates train the whole model; f32 runs are
//! untouched; checkpoints keep the masters and resume exactly.

use candle_core::{DType, Device, Tensor, Var};
use popo_train::config::{ConfigBuilder, OptimConfig, TrainConfig};
use popo_train::metrics::{names, read_metrics};
use popo_train::optim::{AdamW, GradAccum};
use popo_train::params::Params;
use popo_train::reward::{Reward, RewardOut};
use popo_train::trainer::Trainer;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

/// Every completion is correct: POPO's NLL, similarity and entropy terms all reach the weights.
struct AllCorrect;
impl Reward for AllCorrect {
    fn score(&self, _c: &str, _g: &str) -> RewardOut {
        RewardOut {
            reward: 1.0,
            correct: true,
            extracted: None,
        }
    }
}

fn cfg(dir: &Path, sets: &[&str]) -> TrainConfig {
    let mut b = ConfigBuilder::tiny_for_tests(dir).preset(Some("popo"));
    for s in [
        "optim.lr=1e-6", // the spec's learning rate
        "run.steps=3",
        "run.save_every=1",
        "run.keep_last=3",
        "run.eval_size=0",
        "run.probe_every=0",
    ]
    .iter()
    .chain(sets)
    {
        b = b.set(s).unwrap();
    }
    b.build().unwrap()
}

fn train(dir: &Path, sets: &[&str]) {
    let mut t = Trainer::new(cfg(dir, sets), flag()).unwrap();
    t.set_quiet(true);
    t.set_reward(Box::new(AllCorrect));
    t.run().unwrap();
}

/// A checkpoint's HF weights as f32 values, by tensor name.
fn hf_weights(ck: &Path) -> HashMap<String, Vec<f32>> {
    candle_core::safetensors::load(ck.join("model.safetensors"), &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(n, t)| {
            let v = t
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (n, v)
        })
        .collect()
}

fn checkpoint(dir: &Path, step: u64) -> std::path::PathBuf {
    dir.join("checkpoints")
        .join(popo_train::checkpoint::step_dir_name(step))
}

/// Share of weights that differ between two checkpoints.
fn moved(a: &HashMap<String, Vec<f32>>, b: &HashMap<String, Vec<f32>>) -> f64 {
    let (mut diff, mut all) = (0usize, 0usize);
    for (n, x) in a {
        let y = &b[n];
        all += x.len();
        diff += x.iter().zip(y).filter(|(p, q)| p != q).count();
    }
    diff as f64 / all as f64
}

/// The measurement: POPO at lr 1e-6 in bf16, step 1 vs step 3. With f32 masters (saved as
/// the f32 HF weights) nearly every weight moves; without them (`master_weights = "none"`) the
/// updates round away and only a few percent do.
#[test]
fn bf16_training_at_the_spec_lr_moves_every_weight() {
    let root = tempfile::tempdir().unwrap();
    let with = root.path().join("master");
    train(&with, &["run.dtype=bf16", "model.save_dtype=f32"]);
    let share = moved(
        &hf_weights(&checkpoint(&with, 1)),
        &hf_weights(&checkpoint(&with, 3)),
    );
    eprintln!("bf16 with f32 masters: {share:.4} of the weights moved between steps 1 and 3");
    assert!(
        share >= 0.99,
        "f32 masters: {share:.4} of the weights moved"
    );

    // The compute weights are the masters rounded to bf16, and the optimizer file holds them.
    let master = candle_core::safetensors::load(
        checkpoint(&with, 3).join("optimizer.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let f32_hf = hf_weights(&checkpoint(&with, 3));
    let mut n_master = 0;
    for (name, t) in &master {
        let Some(param) = name.strip_prefix("master.") else {
            continue;
        };
        n_master += 1;
        assert_eq!(t.dtype(), DType::F32, "{name}");
        assert_eq!(
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            f32_hf[param],
            "{name}: model.save_dtype = f32 writes the master itself"
        );
    }
    assert_eq!(n_master, f32_hf.len(), "a master for every policy weight");

    let without = root.path().join("none");
    train(&without, &["run.dtype=bf16", "run.master_weights=none"]);
    let share_none = moved(
        &hf_weights(&checkpoint(&without, 1)),
        &hf_weights(&checkpoint(&without, 3)),
    );
    eprintln!("bf16 without masters: {share_none:.4} moved");
    assert!(
        share_none < 0.2,
        "without masters {share_none:.4} of the weights moved"
    );
}

/// bf16 compute tracks the f32 run: at lr 1e-6 the runs sample (nearly) the same completions and
/// their weights stay within bf16 rounding of each other; the bf16 run's masters move with the
/// f32 run's weights.
#[test]
fn bf16_weights_track_the_f32_run() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("f32"), root.path().join("bf16"));
    train(&a, &["run.dtype=f32"]);
    train(&b, &["run.dtype=bf16", "model.save_dtype=f32"]);
    let w32 = hf_weights(&checkpoint(&a, 3));
    let w32_start = hf_weights(&checkpoint(&a, 1));
    let masters = hf_weights(&checkpoint(&b, 3));
    let masters_start = hf_weights(&checkpoint(&b, 1));
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (name, x) in &w32 {
        for (i, (&w, &m)) in x.iter().zip(&masters[name]).enumerate() {
            // Within one bf16 ULP (2^-7 relative) of the f32 run's weight, plus three updates
            // of each run (weights that start at 0, such as biases, are all update). Both runs
            // count: k_proj's bias has a gradient of zero up to rounding (a shift of every key
            // leaves the softmax unchanged), so AdamW moves it by about lr a step on rounding
            // noise alone, in each run its own way.
            let tol = w.abs() as f64 * 2f64.powi(-7) + 2.0 * 3.0 * 1e-6;
            let bf = half::bf16::from_f32(m).to_f32();
            assert!(
                ((bf - w) as f64).abs() <= tol,
                "{name}[{i}]: bf16 run {bf} vs f32 run {w}"
            );
            let d32 = (w - w32_start[name][i]) as f64;
            let dm = (m - masters_start[name][i]) as f64;
            dot += d32 * dm;
            na += d32 * d32;
            nb += dm * dm;
        }
    }
    let cos = dot / (na.sqrt() * nb.sqrt());
    eprintln!("update direction cosine, bf16 masters vs the f32 run: {cos:.4}");
    assert!(
        cos > 0.9,
        "update direction cosine bf16 masters vs f32 run: {cos:.4}"
    );
}

/// With the same gradients, AdamW on bf16 weights with f32 masters computes exactly what it
/// computes on f32 weights, and its bf16 weights are the f32 weights rounded.
#[test]
fn bf16_optimizer_with_masters_equals_the_f32_optimizer() {
    let dev = Device::Cpu;
    let init: Vec<f32> = (0..64).map(|i| ((i as f32) * 0.37).sin() * 0.05).collect();
    let mk = |dtype| {
        let t = Tensor::from_vec(init.clone(), (8, 8), &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        Var::from_tensor(&t).unwrap()
    };
    // Start both from bf16-representable values so only the updates can differ.
    let v16 = mk(DType::BF16);
    let v32 = Var::from_tensor(&v16.as_tensor().to_dtype(DType::F32).unwrap()).unwrap();
    let mut p16 = Params::new(vec![("w".into(), v16.clone())], true).unwrap();
    let mut p32 = Params::new(vec![("w".into(), v32.clone())], true).unwrap();
    let ocfg = OptimConfig::default();
    let (mut o16, mut o32) = (
        AdamW::new(&p16, &ocfg).unwrap(),
        AdamW::new(&p32, &ocfg).unwrap(),
    );
    for step in 0..10 {
        let g: Vec<f32> = (0..64)
            .map(|i| (((i * 7 + step * 3) % 11) as f32 - 5.0) * 1e-3)
            .collect();
        let g = Tensor::from_vec(g, (8, 8), &dev).unwrap();
        for (p, o) in [(&mut p16, &mut o16), (&mut p32, &mut o32)] {
            let mut acc = GradAccum::new(p.vars());
            acc.grads[0] = Some(g.clone());
            o.step(p, &acc, 1e-6).unwrap();
        }
    }
    let m = p16
        .full(0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let w = v32
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(m, w, "the master is the f32 run's weight, bit for bit");
    let got = v16
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<half::bf16>()
        .unwrap();
    let want: Vec<half::bf16> = w.iter().map(|&x| half::bf16::from_f32(x)).collect();
    assert_eq!(got, want);
    assert!(
        m.iter().zip(&init).filter(|(a, b)| a != b).count() >= 63,
        "10 updates of ~1e-6 move the masters"
    );
}

/// An f32 run does not depend on `run.master_weights`: f32 weights are their own masters, so
/// the metrics and the weights are identical bit for bit.
#[test]
fn an_f32_run_is_unchanged_by_master_weights() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("auto"), root.path().join("none"));
    train(&a, &["run.dtype=f32", "run.master_weights=auto"]);
    train(&b, &["run.dtype=f32", "run.master_weights=none"]);
    let strip = |d: &Path| -> Vec<Vec<(String, Option<f64>)>> {
        read_metrics(d)
            .unwrap()
            .into_iter()
            .map(|r| {
                r.values
                    .into_iter()
                    .filter(|(k, _)| !k.starts_with("perf/"))
                    .collect()
            })
            .collect()
    };
    assert_eq!(strip(&a), strip(&b));
    assert_eq!(
        hf_weights(&checkpoint(&a, 3)),
        hf_weights(&checkpoint(&b, 3))
    );
    let opt = candle_core::safetensors::load(
        checkpoint(&a, 3).join("optimizer.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert!(!opt.keys().any(|k| k.starts_with("master.")));
}

/// f16 compute trains with dynamic loss scaling: the scale is logged every update, and a step
/// whose gradients overflow is skipped (counted) and halves the scale.
#[test]
fn f16_training_scales_the_loss() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("f16");
    // 2^24 overflows this model's f16 gradients (f16 tops out near 2^16): the first updates are
    // skipped until the scale has come down.
    train(
        &dir,
        &[
            "run.dtype=f16",
            "run.steps=8",
            "run.keep_last=8",
            "model.save_dtype=f32",
            "optim.init_loss_scale=16777216",
        ],
    );
    let recs = read_metrics(&dir).unwrap();
    let scales: Vec<f64> = recs
        .iter()
        .filter_map(|r| r.values.get(names::LOSS_SCALE).copied().flatten())
        .collect();
    assert_eq!(scales.len(), 8, "{recs:?}");
    let skipped = recs
        .last()
        .unwrap()
        .values
        .get(names::SKIPPED_STEPS)
        .copied()
        .flatten()
        .unwrap();
    eprintln!("f16 loss scale per step: {scales:?}");
    // Every halving is one skipped update.
    let halvings = (16777216.0 / scales[7]).log2().round();
    assert_eq!(skipped, halvings, "scales {scales:?}");
    assert!(
        (1.0..6.0).contains(&skipped),
        "some updates overflowed, later ones applied: {scales:?}"
    );
    let share = moved(
        &hf_weights(&checkpoint(&dir, 1)),
        &hf_weights(&checkpoint(&dir, 8)),
    );
    eprintln!("f16: {share:.4} of the weights moved");
    assert!(
        share >= 0.9,
        "f16 with masters: {share:.4} of the weights moved"
    );
}
