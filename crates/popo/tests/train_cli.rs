//! `popo train` end to end through the binary: the README's main command at CI scale, its run
//! directory, and the errors a user meets first.

use std::path::Path;
use std::process::{Command, Output};

fn popo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_popo"))
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The built-in demo shrunk to seconds: same task, reward and algorithm; a smaller model and budget.
const TINY: &[&str] = &[
    "tiny_model.hidden_size=32",
    "tiny_model.num_layers=1",
    "tiny_model.num_heads=2",
    "tiny_model.num_kv_heads=1",
    "tiny_model.intermediate_size=64",
    "task.n_sft=64",
    "task.n_rl=64",
    "task.n_eval=8",
    "run.eval_size=8",
    "sft.steps=5",
    "rollout.batch_prompts=4",
    "rollout.group_size=4",
    "rollout.max_completion_len=16",
    "algo.predictor_hidden=16",
];

fn train_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["train", "--out", out, "--steps", "2"];
    for s in TINY.iter().chain(extra) {
        a.extend(["--set", s]);
    }
    a
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn builtin_run_prints_accuracies_and_writes_its_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let out_s = out.display().to_string();
    let o = popo(&train_args(&out_s, &[]));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    for want in [
        "held-out accuracy before: ",
        "held-out accuracy after:  ",
        &format!("run directory: {out_s}"),
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    // The printed accuracies are the logged ones.
    let metrics = lines(&out.join("metrics.jsonl"));
    let evals: Vec<f64> = metrics
        .iter()
        .filter_map(|r| r.get("eval/accuracy").and_then(|v| v.as_f64()))
        .collect();
    assert_eq!(evals.len(), 2, "{metrics:?}");
    let before = format!("held-out accuracy before: {:.1}%", 100.0 * evals[0]);
    assert!(stdout.contains(&before), "{before:?} not in:\n{stdout}");
    let steps: Vec<u64> = metrics
        .iter()
        .filter(|r| r.get("train/reward_mean").is_some())
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2]);
    // The resolved config is the demo's: POPO, checked-work reward, the overrides given.
    let cfg: toml::Value =
        toml::from_str(&std::fs::read_to_string(out.join("config.toml")).unwrap()).unwrap();
    assert_eq!(cfg["algo"]["name"].as_str(), Some("popo"));
    assert_eq!(cfg["reward"]["check_work"].as_bool(), Some(true));
    assert_eq!(cfg["tiny_model"]["hidden_size"].as_integer(), Some(32));
    assert!(!lines(&out.join("samples.jsonl")).is_empty());
    let tb = std::fs::read_dir(out.join("tensorboard")).unwrap().count();
    assert!(tb > 0, "no TensorBoard event file");
    // The final checkpoint is a loadable HF directory.
    let ckpts: Vec<_> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        ckpts
            .iter()
            .any(|c| c.join("config.json").exists() && c.join("model.safetensors").exists()),
        "{ckpts:?}"
    );

    // A second run into the same directory would mix two runs' files: refused, nothing lost.
    let before_bytes = std::fs::read(out.join("metrics.jsonl")).unwrap();
    let o = popo(&train_args(&out_s, &[]));
    let (_, stderr) = text(&o);
    assert!(!o.status.success());
    assert!(stderr.contains(&out_s), "{stderr}");
    assert_eq!(
        std::fs::read(out.join("metrics.jsonl")).unwrap(),
        before_bytes
    );
}

#[test]
fn config_errors_name_the_key_and_presets_beat_a_resolved_file() {
    let o = popo(&["train", "--set", "algo.nope=1", "--print-config"]);
    let (_, stderr) = text(&o);
    assert!(!o.status.success());
    assert!(stderr.contains("algo.nope"), "{stderr}");

    let o = popo(&["train", "--preset", "ppo", "--print-config"]);
    let (_, stderr) = text(&o);
    assert!(!o.status.success());
    assert!(
        stderr.contains("ppo") && stderr.contains("raft"),
        "{stderr}"
    );

    // A run's resolved config pins every key; `--preset raft` over it is still RAFT.
    let tmp = tempfile::tempdir().unwrap();
    let o = popo(&["train", "--print-config"]);
    assert!(o.status.success());
    let file = tmp.path().join("config.toml");
    std::fs::write(&file, &o.stdout).unwrap();
    let file_s = file.display().to_string();
    let o = popo(&[
        "train",
        "--config",
        &file_s,
        "--preset",
        "raft",
        "--print-config",
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    let cfg: toml::Value = toml::from_str(&stdout).unwrap();
    assert_eq!(cfg["algo"]["name"].as_str(), Some("raft"));
    assert_eq!(cfg["algo"]["alpha"].as_float(), Some(0.0));
}

#[test]
fn resume_refuses_the_flags_that_would_change_the_run() {
    for flag in [
        "--steps=5",
        "--out=elsewhere",
        "--eval-data=x.jsonl",
        "--skip-invalid",
    ] {
        let o = popo(&["train", "--resume", "no-such-run", flag]);
        let (_, stderr) = text(&o);
        assert!(!o.status.success(), "{flag} was accepted");
        let name = flag.split('=').next().unwrap();
        assert!(stderr.contains(name), "{flag}: {stderr}");
    }
}
