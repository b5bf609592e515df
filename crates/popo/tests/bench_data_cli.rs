//! `popo eval --bench math500` through the binary with the places set by the environment: the
//! published file in a Hugging Face cache laid out here (`HF_HUB_CACHE`) is converted into
//! popo's copy (`POPO_CACHE`) and evaluated; `POPO_DATA` comes before both and `--data-dir`
//! before `POPO_DATA`; with nothing anywhere the error prints the download command.
//! `HF_HUB_OFFLINE=1` keeps a `hub` build from ever downloading here.

use std::path::{Path, PathBuf};
use std::process::Command;

fn jsonl(dir: &Path, name: &str, problems: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    let text: String = problems
        .iter()
        .map(|(p, a)| format!("{}\n", serde_json::json!({"problem": p, "answer": a})))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// `popo eval --model model --bench math500` with the test's own caches and `env`; the
/// process's output and the benchmark's entry of results.json (if it ran).
fn eval(
    root: &Path,
    model: &Path,
    extra: &[&str],
    env: &[(&str, &Path)],
) -> (std::process::Output, serde_json::Value) {
    let out = root.join("eval-out");
    let _ = std::fs::remove_dir_all(&out);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_popo"));
    cmd.args(["eval", "--model"])
        .arg(model)
        .args(["--bench", "math500", "--n", "1", "--template", "plain"])
        .args(["--max-new-tokens", "2", "--out"])
        .arg(&out)
        .args(extra)
        .env_remove("POPO_DATA")
        .env_remove("HF_HOME")
        .env("HOME", root)
        .env("HF_HUB_CACHE", root.join("hub"))
        .env("POPO_CACHE", root.join("popo"))
        .env("HF_HUB_OFFLINE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    let results = std::fs::read_to_string(out.join("results.json"))
        .map(|t| serde_json::from_str::<serde_json::Value>(&t).unwrap()["benchmarks"][0].clone())
        .unwrap_or_default();
    (o, results)
}

#[test]
fn eval_finds_math500_in_the_hub_cache_and_the_data_dirs_win() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let model = root.join("m");
    popo_train::tiny::TinyModel::micro()
        .save_random(&model, 1, 0.5)
        .unwrap();

    // Nothing anywhere: the error names the command that fetches the file into the cache.
    let (o, _) = eval(root, &model, &[], &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("hf download --repo-type dataset HuggingFaceH4/MATH-500 test.jsonl"),
        "{stderr}"
    );

    // As `hf download` leaves it: converted into popo's copy and evaluated.
    let repo = root.join("hub/datasets--HuggingFaceH4--MATH-500");
    jsonl(
        &repo.join("snapshots/0123abcd"),
        "test.jsonl",
        &[("1+1?", "2"), ("2+2?", "4"), ("3+3?", "6")],
    );
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    let (o, r) = eval(root, &model, &[], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let copy = root.join("popo/data/math500.jsonl");
    assert_eq!(r["path"], copy.display().to_string());
    assert_eq!(r["num_problems"], 3);

    // POPO_DATA comes first, --data-dir before it.
    let env_dir = root.join("env-data");
    let env_file = jsonl(&env_dir, "math500.jsonl", &[("5+5?", "10")]);
    let (o, r) = eval(root, &model, &[], &[("POPO_DATA", &env_dir)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(r["path"], env_file.display().to_string());
    assert_eq!(r["num_problems"], 1);
    let flag_dir = root.join("flag-data");
    let flag_file = jsonl(&flag_dir, "math500.jsonl", &[("1?", "1"), ("2?", "2")]);
    let flag = flag_dir.to_str().unwrap();
    let (o, r) = eval(
        root,
        &model,
        &["--data-dir", flag],
        &[("POPO_DATA", &env_dir)],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(r["path"], flag_file.display().to_string());
    assert_eq!(r["num_problems"], 2);
}
