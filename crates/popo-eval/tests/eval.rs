//! `popo eval` on a tiny checkpoint built here and a fixture benchmark.

use candle_core::{DType, Device};
use popo_eval::bench::{
    evaluate_bench, markdown_table, EvalConfig, EvalResults, EvalSample, ModelInfo,
};
use popo_train::data::PromptTemplate;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/arith_bench.jsonl")
}

/// A randomly initialised built-in tiny model, saved in HF layout.
fn tiny_checkpoint(dir: &Path) {
    popo_train::tiny::TinyModel::micro()
        .save_random(dir, 7, 0.5)
        .unwrap();
}

fn run(dir: &Path, cfg: &EvalConfig) -> (popo_eval::bench::BenchResult, Vec<EvalSample>) {
    run_batched(dir, cfg, 64, "")
}

/// Evaluates on the fixture benchmark; the characters of `stop_chars` also end a completion.
fn run_batched(
    dir: &Path,
    cfg: &EvalConfig,
    batch_size: usize,
    stop_chars: &str,
) -> (popo_eval::bench::BenchResult, Vec<EvalSample>) {
    let pre = popo_model::load_pretrained(dir, &Device::Cpu, DType::F32).unwrap();
    let tok = pre.tokenizer.as_ref().unwrap();
    let mut stops = pre.stop_ids().unwrap();
    stops.extend(tok.encode(stop_chars, false).unwrap());
    let mut out = Vec::new();
    let mut calls = Vec::new();
    let r = evaluate_bench(
        &pre.model,
        tok,
        &stops,
        "arith",
        &fixture(),
        cfg,
        batch_size,
        &mut out,
        &mut |d, t| calls.push((d, t)),
    )
    .unwrap();
    let total = cfg.limit.unwrap_or(5).min(5);
    assert_eq!(calls, (1..=total).map(|d| (d, total)).collect::<Vec<_>>());
    let samples = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (r, samples)
}

/// The tiny checkpoint resolves to itself and stops at its tokenizer's EOS.
fn assert_tiny_checkpoint_loads(model_dir: &Path) {
    assert_eq!(
        popo_train::checkpoint::resolve_model_dir(model_dir).unwrap(),
        (model_dir.to_path_buf(), None)
    );
    let pre = popo_model::load_pretrained(model_dir, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(
        pre.stop_ids().unwrap(),
        vec![pre.tokenizer.as_ref().unwrap().eos_token_id().unwrap()]
    );
}

/// The metrics of 5 problems x (4 samples + greedy) are what the written samples say, and every
/// sample is scored by the verifier.
fn assert_metrics_match_samples(r: &popo_eval::bench::BenchResult, samples: &[EvalSample]) {
    assert_eq!(samples.len(), 5 * (4 + 1));
    let m = &r.metrics;
    assert_eq!((m.num_problems, m.n), (5, 4));
    assert_eq!(
        m.pass_at_k.keys().cloned().collect::<Vec<_>>(),
        ["pass@1", "pass@2", "pass@4"]
    );
    // The aggregate is what the written samples say.
    let sampled: Vec<&EvalSample> = samples
        .iter()
        .filter(|s| s.sample_index.is_some())
        .collect();
    let acc = sampled.iter().filter(|s| s.correct).count() as f64 / 20.0;
    assert!((m.avg_at_n - acc).abs() < 1e-12);
    let greedy: Vec<&EvalSample> = samples
        .iter()
        .filter(|s| s.sample_index.is_none())
        .collect();
    assert_eq!(greedy.len(), 5);
    let gacc = greedy.iter().filter(|s| s.correct).count() as f64 / 5.0;
    assert_eq!(m.greedy_accuracy, Some(gacc));
    for s in samples {
        assert!(s.num_tokens >= 1 && s.num_tokens <= 12, "{s:?}");
        assert_eq!(
            s.correct,
            popo_verify::verify(&s.gold, &s.completion).correct
        );
    }
    assert_eq!(samples[0].gold, "5");
    assert_eq!(samples[5].problem, "Compute 7*8.");
}

/// Same seed: identical samples. Another seed: different samples, same greedy ones.
fn assert_seeds_reproduce(model_dir: &Path, cfg: &EvalConfig, samples: &[EvalSample]) {
    let (_, again) = run(model_dir, cfg);
    assert_eq!(again, samples);
    let (_, other) = run(
        model_dir,
        &EvalConfig {
            seed: 4,
            ..cfg.clone()
        },
    );
    let texts = |v: &[EvalSample], greedy: bool| -> Vec<String> {
        v.iter()
            .filter(|s| s.sample_index.is_none() == greedy)
            .map(|s| s.completion.clone())
            .collect()
    };
    assert_ne!(texts(&other, false), texts(samples, false));
    assert_eq!(texts(&other, true), texts(samples, true));
}

/// results.md's table and results.json's keys.
fn assert_results_written(results: &EvalResults) {
    let table = markdown_table(results);
    assert!(table.starts_with(
        "| benchmark | problems | avg@4 | pass@1 | pass@2 | pass@4 | maj@4 | greedy |"
    ));
    assert!(table.contains("| arith | 5 |"), "{table}");
    let json = serde_json::to_value(results).unwrap();
    for key in [
        "model",
        "checkpoint",
        "template",
        "temperature",
        "top_p",
        "n",
        "max_new_tokens",
        "seed",
    ] {
        assert!(json.get(key).is_some(), "results.json lacks {key}");
    }
    assert!(json["benchmarks"][0]["pass@k"].is_null());
    assert!(json["benchmarks"][0]["pass_at_k"]["pass@4"].is_number());
}

#[test]
fn eval_on_a_tiny_checkpoint_is_consistent_and_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("tiny");
    tiny_checkpoint(&model_dir);
    assert_tiny_checkpoint_loads(&model_dir);

    let cfg = EvalConfig {
        n: 4,
        temperature: 1.0,
        top_p: 0.95,
        max_new_tokens: 12,
        template: PromptTemplate::Plain,
        seed: 3,
        greedy: true,
        ..Default::default()
    };
    let (r, samples) = run(&model_dir, &cfg);
    assert_metrics_match_samples(&r, &samples);
    assert_seeds_reproduce(&model_dir, &cfg, &samples);

    let results = EvalResults {
        model: ModelInfo {
            model: "tiny".into(),
            checkpoint: model_dir.display().to_string(),
            step: None,
        },
        config: cfg,
        benchmarks: vec![r],
    };
    assert_results_written(&results);
}

/// An HF directory made by transformers (the model crate's parity fixtures): the default
/// `qwen_math` template goes through its own chat template, and generation_config's EOS ids stop.
#[test]
fn eval_runs_on_hf_fixture_directories_with_their_chat_templates() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../popo-model/tests/fixtures");
    for name in ["qwen2", "llama3"] {
        let dir = fixtures.join(name);
        let pre = popo_model::load_pretrained(&dir, &Device::Cpu, DType::F32).unwrap();
        let tok = pre.tokenizer.as_ref().unwrap();
        assert!(tok.chat_template().is_some(), "{name}");
        let prompt = PromptTemplate::QwenMath
            .render("Compute 2+3.", Some(tok))
            .unwrap();
        assert!(
            prompt.contains(popo_train::data::QWEN_MATH_SYSTEM) && prompt.contains("Compute 2+3."),
            "{name}: {prompt}"
        );
        if name == "qwen2" {
            assert_eq!(
                prompt,
                popo_train::data::chatml(&[
                    ("system", popo_train::data::QWEN_MATH_SYSTEM),
                    ("user", "Compute 2+3."),
                ])
            );
        }
        let stops = pre.stop_ids().unwrap();
        assert!(!stops.is_empty(), "{name}");
        let cfg = EvalConfig {
            n: 2,
            max_new_tokens: 4,
            limit: Some(2),
            greedy: true,
            ..Default::default()
        };
        let (r, lines) = run_batched(&dir, &cfg, 64, "");
        assert_eq!(r.metrics.num_problems, 2);
        assert_eq!(lines.len(), 2 * 3);
        assert!(lines.iter().all(|s| s.num_tokens <= 4));
    }
}

/// Batching across problems changes nothing. One row at a time, batches that split a problem's
/// rows across admissions (3 and 5 rows for 4 rows per problem), and every row at once write the
/// same samples.jsonl lines and the same metrics, with sampling and greedy rows together; the
/// first problems evaluated alone (`limit`) get the same samples as in the full run. On the
/// built-in tiny model (rows stop at EOS at different steps) and on an HF fixture whose chat
/// template and BPE tokenizer give prompts of different lengths.
#[test]
fn batched_and_one_at_a_time_evaluations_are_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = tmp.path().join("tiny");
    tiny_checkpoint(&tiny);
    let qwen2 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../popo-model/tests/fixtures/qwen2");
    // On the tiny model, some frequent characters also stop, so that rows finish at different steps.
    let cases = [
        (
            tiny,
            "D$3",
            EvalConfig {
                n: 3,
                temperature: 1.0,
                top_p: 0.95,
                max_new_tokens: 16,
                template: PromptTemplate::Plain,
                seed: 11,
                greedy: true,
                ..Default::default()
            },
        ),
        (
            qwen2,
            "",
            EvalConfig {
                n: 3,
                temperature: 1.0,
                max_new_tokens: 6,
                seed: 2,
                greedy: true,
                ..Default::default()
            },
        ),
    ];
    for (dir, stop_chars, cfg) in cases {
        let (want, samples) = run_batched(&dir, &cfg, 1, stop_chars);
        assert_eq!(samples.len(), 5 * 4);
        let order: Vec<(usize, Option<usize>)> = samples
            .iter()
            .map(|s| (s.problem_index, s.sample_index))
            .collect();
        let expected: Vec<(usize, Option<usize>)> = (0..5)
            .flat_map(|i| [Some(0), Some(1), Some(2), None].map(|s| (i, s)))
            .collect();
        assert_eq!(order, expected, "by problem, then sample, greedy last");
        if !stop_chars.is_empty() {
            let lengths: std::collections::BTreeSet<usize> =
                samples.iter().map(|s| s.num_tokens).collect();
            assert!(
                lengths.len() > 3,
                "rows should finish at different steps: {lengths:?}"
            );
        }
        for batch in [3, 5, 64] {
            let (got, again) = run_batched(&dir, &cfg, batch, stop_chars);
            assert_eq!(again, samples, "{}: batch size {batch}", dir.display());
            assert_eq!(
                got.metrics,
                want.metrics,
                "{}: batch size {batch}",
                dir.display()
            );
            assert_eq!(got.generated_tokens, want.generated_tokens);
        }
        let (_, first) = run_batched(
            &dir,
            &EvalConfig {
                limit: Some(2),
                ..cfg.clone()
            },
            64,
            stop_chars,
        );
        assert_eq!(first[..], samples[..2 * 4]);
        assert_eq!(
            want.generated_tokens,
            samples.iter().map(|s| s.num_tokens).sum::<usize>()
        );
    }
}

#[test]
fn bad_batch_sizes_and_empty_work_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    tiny_checkpoint(&dir);
    let pre = popo_model::load_pretrained(&dir, &Device::Cpu, DType::F32).unwrap();
    let tok = pre.tokenizer.as_ref().unwrap();
    let eval = |cfg: &EvalConfig, batch: usize| {
        let err = evaluate_bench(
            &pre.model,
            tok,
            &[],
            "arith",
            &fixture(),
            cfg,
            batch,
            &mut Vec::new(),
            &mut |_, _| {},
        )
        .unwrap_err();
        format!("{err:#}")
    };
    let cfg = EvalConfig {
        n: 1,
        max_new_tokens: 2,
        ..Default::default()
    };
    assert!(eval(&cfg, 0).contains("batch size"));
    let none = EvalConfig { n: 0, ..cfg };
    assert!(eval(&none, 4).contains("--n 0 without --greedy"));
}
