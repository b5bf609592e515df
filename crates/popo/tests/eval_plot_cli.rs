//! `popo eval` and `popo plot` end to end through the binary, on a tiny checkpoint built here.

use std::path::Path;
use std::process::Command;

fn popo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_popo"))
}

fn tiny_checkpoint(dir: &Path) {
    popo_train::tiny::TinyModel::micro()
        .save_random(dir, 1, 0.5)
        .unwrap();
}

#[test]
fn eval_writes_results_samples_and_a_table() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    tiny_checkpoint(&model);
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("mini.jsonl"),
        "{\"problem\":\"Compute 1+1.\",\"answer\":\"2\"}\n{\"problem\":\"Compute 2*3.\",\"answer\":\"6\"}\n",
    )
    .unwrap();
    let out = tmp.path().join("eval");
    let o = popo()
        .args(["eval", "--model"])
        .arg(&model)
        .args([
            "--bench",
            "mini",
            "--n",
            "2",
            "--greedy",
            "--template",
            "plain",
        ])
        .args(["--max-new-tokens", "6", "--seed", "5", "--out"])
        .arg(&out)
        .env("POPO_DATA", &data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("| benchmark | problems | avg@2 | pass@1 | pass@2 | maj@2 | greedy |"),
        "{stdout}"
    );
    assert!(stdout.contains("| mini | 2 |"), "{stdout}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(r["n"], 2);
    assert_eq!(r["seed"], 5);
    assert_eq!(r["template"], "plain");
    assert_eq!(r["max_new_tokens"], 6);
    assert_eq!(r["benchmarks"][0]["name"], "mini");
    let samples = std::fs::read_to_string(out.join("samples.jsonl")).unwrap();
    assert_eq!(samples.lines().count(), 2 * 3);

    // A benchmark found nowhere fails before loading anything, naming where it looked (empty
    // caches of the test's own; HF_HUB_OFFLINE keeps a `hub` build from downloading it).
    let o = popo()
        .args(["eval", "--model"])
        .arg(&model)
        .args(["--bench", "aime24"])
        .env("POPO_DATA", &data)
        .env("POPO_CACHE", tmp.path().join("cache"))
        .env("HF_HUB_CACHE", tmp.path().join("hub"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("aime24.jsonl"));
}

/// `--batch-size` only changes speed: one row at a time and the default batch write the same
/// samples.jsonl and the same results.json (wall time aside); 0 is refused before any work.
#[test]
fn eval_batch_size_changes_nothing_but_speed() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    tiny_checkpoint(&model);
    let bench =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../popo-eval/tests/fixtures/arith_bench.jsonl");
    let eval = |out: &Path, extra: &[&str]| {
        let o = popo()
            .args(["eval", "--model"])
            .arg(&model)
            .arg("--bench")
            .arg(&bench)
            .args([
                "--n",
                "3",
                "--greedy",
                "--temperature",
                "1.0",
                "--template",
                "plain",
            ])
            .args(["--max-new-tokens", "10", "--seed", "9", "--out"])
            .arg(out)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains("tok/s"), "{stderr}");
        let mut r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap())
                .unwrap();
        let b = r["benchmarks"][0].as_object_mut().unwrap();
        assert!(b.remove("wall_time_s").unwrap().as_f64().unwrap() > 0.0);
        let samples = std::fs::read_to_string(out.join("samples.jsonl")).unwrap();
        (r, samples)
    };
    let (one, one_samples) = eval(&tmp.path().join("one"), &["--batch-size", "1"]);
    let (all, all_samples) = eval(&tmp.path().join("all"), &[]);
    assert_eq!(one_samples.lines().count(), 5 * 4);
    assert_eq!(all_samples, one_samples);
    assert_eq!(all, one);
    assert!(one["benchmarks"][0]["generated_tokens"].as_u64().unwrap() >= 20);

    let o = popo()
        .args(["eval", "--model"])
        .arg(&model)
        .arg("--bench")
        .arg(&bench)
        .args(["--batch-size", "0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("--batch-size must be at least 1"),
        "{stderr}"
    );
}

#[test]
fn plot_draws_svg_and_png_from_metrics_jsonl() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let lines: String = (1..=10)
        .map(|s| {
            format!(
                "{{\"step\":{s},\"train/reward_mean\":{}}}\n",
                s as f64 / 10.0
            )
        })
        .collect();
    std::fs::write(run.join("metrics.jsonl"), lines).unwrap();
    let o = popo().arg("plot").arg(&run).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for ext in ["svg", "png"] {
        let f = run.join("plots").join(format!("train_reward_mean.{ext}"));
        assert!(
            std::fs::metadata(&f).unwrap().len() > 1000,
            "{}",
            f.display()
        );
    }
}

/// The committed experiment files stay valid: every run's config resolves (keys, presets), and
/// each seed has its base cell (the runs end with pass@k).
#[test]
fn committed_experiment_files_resolve() {
    for (file, variants, names) in [
        (
            "experiment.toml",
            11,
            &[
                "popo",
                "grpo",
                "dr_grpo",
                "dapo",
                "raft",
                "popo-tau0",
                "popo-no-predictor",
            ][..],
        ),
        (
            "experiment-400.toml",
            15,
            &[
                "popo",
                "raft",
                "grpo",
                "dr_grpo",
                "dapo",
                "nsr",
                "w_reinforce",
                "nsr-lr2e-5",
                "w_reinforce-lr2e-5",
                "popo-beta-ent0",
            ][..],
        ),
    ] {
        let path = format!("{}/../../results/{file}", env!("CARGO_MANIFEST_DIR"));
        let o = popo()
            .args(["experiment", &path, "--dry-run"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(stdout.lines().count(), (variants + 1) * 3, "{stdout}");
        for name in names.iter().chain(&["base"]) {
            assert!(
                stdout.contains(&format!("{name} seed 2:")),
                "{file}: {name}"
            );
        }
    }
}

/// `popo bench --json` on a tiny checkpoint: the stable keys, one figure per decode batch, and
/// a batch that is not a whole number of groups refused by name.
#[test]
fn bench_reports_every_batch_and_checks_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    tiny_checkpoint(&model);
    let common = [
        "--prompt-len",
        "6",
        "--new-tokens",
        "4",
        "--train-batch",
        "2",
        "--train-len",
        "12",
        "--micro-batch",
        "1",
        "--repeats",
        "1",
        "--json",
    ];
    let bench = |shape: [&str; 4]| {
        popo()
            .args(["bench", "--model"])
            .arg(&model)
            .args(shape)
            .args(common)
            .output()
            .unwrap()
    };
    let o = bench(["--batch", "1,4", "--group-size", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["group_size"], 2);
    for b in ["1", "4"] {
        let tps = r["decode_tokens_per_s"][b].as_f64().unwrap();
        assert!(tps.is_finite() && tps > 0.0, "batch {b}: {tps}");
        assert!(r["decode_host_bytes_per_step"][b].as_f64().unwrap() > 0.0);
    }
    assert!(r["train_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["peak_mem_mb"].as_f64().unwrap() > 0.0);

    let o = bench(["--batch", "6", "--group-size", "4"]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("decode batch 6 is not a whole number of groups of 4"),
        "{stderr}"
    );
}
