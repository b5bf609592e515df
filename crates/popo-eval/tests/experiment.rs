//! A real (tiny) experiment grid through the trainer: runs, skip-on-rerun, report, summary, plots.

use popo_eval::experiment::{run_grid, ExperimentSpec, RunRecord, RUN_DONE_FILE};
use popo_eval::report::write_report;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The `set` entries every test grid shares: two steps of a one-layer model on short completions,
/// pass@1, 2, 4 at the end.
const TINY: &str = r#""run.steps=2", "rollout.batch_prompts=2", "rollout.group_size=2",
    "rollout.max_completion_len=8", "tiny_model.hidden_size=32", "tiny_model.num_layers=1",
    "tiny_model.num_heads=2", "tiny_model.num_kv_heads=1", "tiny_model.intermediate_size=64",
    "task.n_eval=20", "run.probe_every=1", "run.tensorboard=false", "algo.predictor_hidden=16",
    "run.final_pass_at_k_samples=4""#;

#[test]
fn tiny_grid_runs_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("exp.toml");
    std::fs::write(
        &file,
        format!(
            r#"
out_dir = "{}"
seeds = [0, 1]
set = [{TINY}, "sft.steps=2", "run.eval_size=8", "task.n_sft=50", "task.n_rl=50"]
[[runs]]
name = "popo"
preset = "popo"
[[runs]]
name = "grpo"
preset = "grpo"
[[runs]]
name = "nsr"
preset = "nsr"
[[runs]]
name = "popo-tau1"
preset = "popo"
group = "ablations"
set = ["algo.tau=1.0"]
"#,
            tmp.path().join("out").display()
        ),
    )
    .unwrap();
    let mut spec = ExperimentSpec::from_file(&file).unwrap();
    spec.build = "popo 0.1.0 (test)".into(); // what the binary sets from `popo --version`
    let stop = Arc::new(AtomicBool::new(false));
    run_grid(&spec, false, stop.clone()).unwrap();
    for r in &spec.runs {
        for &s in &spec.seeds {
            let d = spec.run_dir(r, s);
            let rec = RunRecord::read(&d).unwrap().expect("finished");
            assert_eq!(rec.popo, "popo 0.1.0 (test)", "{}", d.display());
            assert!(d.join("metrics.jsonl").is_file());
        }
    }
    // The base cells: the starting model, 0 steps, pass@k measured.
    for &s in &spec.seeds {
        let text = std::fs::read_to_string(spec.base_dir(s).join(RUN_DONE_FILE)).unwrap();
        let rec: popo_eval::experiment::RunRecord = serde_json::from_str(&text).unwrap();
        assert_eq!((rec.steps, rec.eval_after), (0, rec.eval_before));
        assert_eq!(rec.pass_at_k.unwrap().n, 4);
    }
    // A rerun skips finished runs (and base cells): their files stay untouched.
    let marker = spec.run_dir(&spec.runs[0], 0).join(RUN_DONE_FILE);
    let base_marker = spec.base_dir(1).join(RUN_DONE_FILE);
    let before = std::fs::read_to_string(&marker).unwrap();
    let base_before = std::fs::read_to_string(&base_marker).unwrap();
    run_grid(&spec, false, stop).unwrap();
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), before);
    assert_eq!(std::fs::read_to_string(&base_marker).unwrap(), base_before);

    let summary = write_report(&spec, "popo experiment exp.toml").unwrap();
    assert_eq!(summary.variants.len(), 4);
    for v in summary.variants.iter().chain(&summary.base) {
        assert_eq!(v.seeds, vec![0, 1]);
        assert!(v.accuracy_after.is_some(), "{v:?}");
        assert!(v.wall_s.unwrap().mean > 0.0);
        let p = v.pass_at_k.as_ref().unwrap();
        let ks: Vec<usize> = p.pass_at_k.iter().map(|x| x.0).collect();
        assert_eq!((p.n, ks), (4, vec![1, 2, 4]), "{}", v.name);
    }
    // One verdict per claim; with two seeds, claim 1 compares popo and grpo seed by seed but
    // gives no verdict.
    assert_eq!(summary.verdicts.len(), 5, "{:?}", summary.verdicts);
    assert!(
        summary.verdicts[0].starts_with(
            "**1. POPO matches or beats the GRPO family (GRPO, Dr. GRPO, DAPO): too few seeds"
        ) && summary.verdicts[0].contains("vs `grpo`: endpoint POPO - grpo: "),
        "{}",
        summary.verdicts[0]
    );
    let out = tmp.path().join("out");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## algorithms") && md.contains("## ablations"));
    let builds = "Builds of the finished cells: `popo 0.1.0 (test)` made 10."; // 2 x (4 + base)
    assert!(md.contains(builds), "{md}");
    assert!(
        md.contains("| popo-tau1 | popo | `algo.tau=1.0` | 2 |"),
        "{md}"
    );
    assert!(
        md.contains("## pass@k") && md.contains("| base | base | 2 |"),
        "{md}"
    );
    assert!(md.contains("| nsr | algorithms | 2 |"), "{md}");
    assert!(out.join("summary.json").is_file());
    assert!(out.join("plots/algorithms_train_reward_mean.png").is_file());
    assert!(out.join("plots/algorithms_pass_at_k.png").is_file());
    assert!(out.join("plots/ablations_pass_at_k.svg").is_file());

    popo_eval_reads_a_run_dir(&spec);
}

/// `popo eval` reads what `popo train` wrote: a run directory means its latest checkpoint.
fn popo_eval_reads_a_run_dir(spec: &ExperimentSpec) {
    let run_dir = spec.run_dir(&spec.runs[0], 1);
    let (ckpt, step) = popo_train::checkpoint::resolve_model_dir(&run_dir).unwrap();
    assert_eq!(step, Some(2));
    assert!(ckpt.starts_with(&run_dir));
    let pre =
        popo_model::load_pretrained(&ckpt, &candle_core::Device::Cpu, candle_core::DType::F32)
            .unwrap();
    let tok = pre
        .tokenizer
        .as_ref()
        .expect("checkpoints carry their tokenizer");
    let stops = pre.stop_ids().unwrap();
    let cfg = popo_eval::bench::EvalConfig {
        n: 2,
        max_new_tokens: 8,
        template: popo_train::data::PromptTemplate::Plain,
        ..Default::default()
    };
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/arith_bench.jsonl");
    let mut samples = Vec::new();
    let r = popo_eval::bench::evaluate_bench(
        &pre.model,
        tok,
        &stops,
        "arith",
        &fixture,
        &cfg,
        64,
        &mut samples,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(r.metrics.num_problems, 5);
    assert_eq!(String::from_utf8(samples).unwrap().lines().count(), 10);
}

/// Sharing the warm-up only saves time: a run started from the shared warm-up checkpoint logs the
/// same training metrics as one that does its own warm-up.
#[test]
fn shared_warmup_gives_the_same_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, shared: bool| {
        let file = tmp.path().join(format!("{name}.toml"));
        std::fs::write(
            &file,
            format!(
                r#"
out_dir = "{}"
seeds = [3]
shared_warmup = {shared}
set = [{TINY}, "sft.steps=3", "run.eval_size=6", "task.n_sft=40", "task.n_rl=40"]
[[runs]]
name = "popo"
preset = "popo"
[[runs]]
name = "raft"
preset = "raft"
"#,
                tmp.path().join(name).display()
            ),
        )
        .unwrap();
        ExperimentSpec::from_file(&file).unwrap()
    };
    let own = write("own", false);
    let shared = write("shared", true);
    let stop = Arc::new(AtomicBool::new(false));
    run_grid(&own, false, stop.clone()).unwrap();
    run_grid(&shared, false, stop).unwrap();
    assert_eq!(
        popo_train::checkpoint::list(&tmp.path().join("shared/warmup/s3"))
            .unwrap()
            .len(),
        1
    );
    for (a, b) in own.runs.iter().zip(&shared.runs) {
        let strip = |spec: &ExperimentSpec, r| -> Vec<Vec<(String, Option<f64>)>> {
            popo_train::metrics::read_metrics(&spec.run_dir(r, 3))
                .unwrap()
                .into_iter()
                .map(|rec| {
                    rec.values
                        .into_iter()
                        .filter(|(k, _)| !k.starts_with("perf/"))
                        .collect()
                })
                .collect()
        };
        let (x, y) = (strip(&own, a), strip(&shared, b));
        assert!(x.len() >= 3, "{x:?}");
        assert_eq!(x, y, "{}", a.name);
        // The sampled completions and the final weights agree too.
        let samples = |spec: &ExperimentSpec, r| {
            popo_train::metrics::read_samples(&spec.run_dir(r, 3).join("samples.jsonl"))
                .unwrap()
                .into_iter()
                .map(|s| s.completion)
                .collect::<Vec<_>>()
        };
        let sa = samples(&own, a);
        assert!(!sa.is_empty());
        assert_eq!(sa, samples(&shared, b));
        let weights = |spec: &ExperimentSpec, r| {
            let ck = popo_train::checkpoint::list(&spec.run_dir(r, 3))
                .unwrap()
                .pop()
                .unwrap();
            std::fs::read(ck.join("model.safetensors")).unwrap()
        };
        assert!(
            weights(&own, a) == weights(&shared, b),
            "{}: final weights differ",
            a.name
        );
    }
    // The base cell measures the same starting model either way.
    let base = |spec: &ExperimentSpec| {
        let text = std::fs::read_to_string(spec.base_dir(3).join(RUN_DONE_FILE)).unwrap();
        let rec: popo_eval::experiment::RunRecord = serde_json::from_str(&text).unwrap();
        (rec.eval_after, rec.pass_at_k)
    };
    assert!(base(&own).1.is_some());
    assert_eq!(base(&own), base(&shared));
    let mut bad = shared.clone();
    bad.runs[1].set = vec!["sft.steps=5".into()];
    assert!(bad.validate().is_err());
    warmup_is_checked_against_finished_cells(&shared);
}

/// A seed's cells pair only if they start from one warm-up: every cell records the fingerprint
/// of its warm-up weights, and a new cell may not start from another warm-up than the finished
/// ones did (the weights are not committed, and another machine rounds differently).
fn warmup_is_checked_against_finished_cells(shared: &ExperimentSpec) {
    let record_path = |r| shared.run_dir(r, 3).join(RUN_DONE_FILE);
    let read = |r| {
        RunRecord::read(&shared.run_dir(r, 3))
            .unwrap()
            .expect("a finished cell")
    };
    let fingerprint = read(&shared.runs[0]).warmup.expect("a fingerprint");
    assert_eq!(read(&shared.runs[1]).warmup.as_ref(), Some(&fingerprint));
    let stop = Arc::new(AtomicBool::new(false));
    let mut grown = shared.clone();
    grown.runs.push(grown.runs[0].clone());
    grown.runs[2].name = "popo-again".into();
    let warmup_dir = shared.out_dir.join("warmup");
    let rewrite = |r, warmup: Option<&str>| {
        let mut rec = read(r);
        rec.warmup = warmup.map(str::to_string);
        std::fs::write(record_path(r), serde_json::to_string(&rec).unwrap()).unwrap();
    };
    // Made again on the same machine and build, the warm-up is the same: the new cell runs.
    std::fs::remove_dir_all(&warmup_dir).unwrap();
    run_grid(&grown, false, stop.clone()).unwrap();
    assert_eq!(read(&grown.runs[2]).warmup, Some(fingerprint.clone()));
    // A finished cell that started from other weights stops the grid, naming it.
    std::fs::remove_dir_all(grown.run_dir(&grown.runs[2], 3)).unwrap();
    rewrite(&shared.runs[1], Some("fnv1a64:0000000000000000"));
    let err = format!("{:#}", run_grid(&grown, false, stop.clone()).unwrap_err());
    assert!(
        err.contains("raft-s3") && err.contains("fnv1a64:0000"),
        "{err}"
    );
    assert!(!grown.run_dir(&grown.runs[2], 3).exists());
    // One with no fingerprint cannot vouch for a warm-up made again, but can for the same one.
    rewrite(&shared.runs[1], None);
    run_grid(&grown, false, stop.clone()).unwrap();
    std::fs::remove_dir_all(grown.run_dir(&grown.runs[2], 3)).unwrap();
    std::fs::remove_dir_all(&warmup_dir).unwrap();
    let err = format!("{:#}", run_grid(&grown, false, stop.clone()).unwrap_err());
    assert!(
        err.contains("raft-s3") && err.contains("no fingerprint"),
        "{err}"
    );
    // `--force` runs every cell again, from the warm-up made now.
    run_grid(&grown, true, stop).unwrap();
    assert_eq!(read(&shared.runs[1]).warmup, Some(fingerprint));
}
