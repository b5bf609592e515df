//! A kill at any moment loses nothing: `popo train` (the binary, on the built-in task at test
//! scale, a checkpoint every step) is killed with SIGKILL at 20 pseudo-random moments, half of
//! them inside checkpoint writes (widened by the test hook `POPO_TEST_CHECKPOINT_DELAY_MS`). After
//! each kill every `checkpoints/step-*` is complete, and `--resume` finishes the run with
//! metrics identical to an uninterrupted run's (`perf/*` timings aside), also when the kill
//! left a torn line at the end of metrics.jsonl and samples.jsonl. A full disk (a size-limited
//! tmpfs under `checkpoints/`, skipped where mounting is not allowed) stops the run with an error
//! naming the checkpoint, and leaves the previous checkpoint intact and resumable.
//!
//! The moments come from `POPO_CRASH_SEED` (default 16); a failure prints the seed and moment.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const STEPS: u64 = 6;
/// Sleep after each checkpoint file in the killed runs: a checkpoint write takes 4 x this.
const DELAY_MS: u64 = 15;
const KILLS: usize = 20;
const CHECKPOINT_FILES: [&str; 5] = [
    "config.json",
    "model.safetensors",
    "trainer_state.json",
    "optimizer.safetensors",
    "algo_state.safetensors",
];

/// The built-in task at test scale (as `ConfigBuilder::tiny_for_tests`), checkpointing every step.
fn train_args(out: &Path) -> Vec<String> {
    let mut a: Vec<String> = ["train", "--out", &out.display().to_string()]
        .map(String::from)
        .into();
    a.extend(["--steps".into(), STEPS.to_string()]);
    for s in [
        "tiny_model.hidden_size=32",
        "tiny_model.num_layers=1",
        "tiny_model.num_heads=2",
        "tiny_model.num_kv_heads=1",
        "tiny_model.intermediate_size=64",
        "task.n_sft=64",
        "task.n_rl=64",
        "task.n_eval=16",
        "run.eval_size=8",
        "run.probe_every=2",
        "run.probe_size=2",
        "run.save_every=1",
        "rollout.batch_prompts=3",
        "rollout.group_size=4",
        "rollout.max_completion_len=12",
        "optim.micro_batch_size=5",
        "algo.predictor_hidden=16",
        "sft.steps=0",
    ] {
        a.extend(["--set".into(), s.into()]);
    }
    a
}

fn popo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_popo"));
    c.env("RAYON_NUM_THREADS", "1").env("POPO_LOG", "warn");
    c
}

fn run(args: &[String]) -> Output {
    popo().args(args).output().unwrap()
}

fn must_succeed(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// metrics.jsonl without the timings, which differ from run to run.
fn comparable_metrics(run: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut()
                .unwrap()
                .retain(|k, _| !k.starts_with("perf/"));
            v
        })
        .collect()
}

fn assert_same_metrics(got: &[Value], want: &[Value], context: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "{context}: metrics.jsonl line {} differs", i + 1);
    }
    assert_eq!(
        got.len(),
        want.len(),
        "{context}: metrics.jsonl has {} lines, the uninterrupted run's {}; extra: {:?}",
        got.len(),
        want.len(),
        &got[want.len().min(got.len())..]
    );
}

fn checkpoints(run: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(run.join("checkpoints")) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("step-")
        })
        .collect();
    v.sort();
    v
}

/// Every file of a checkpoint is there, and its state names its step.
fn assert_complete(ck: &Path, context: &str) {
    for f in CHECKPOINT_FILES {
        assert!(
            ck.join(f).is_file(),
            "{context}: {} lacks {f}",
            ck.display()
        );
    }
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("trainer_state.json")).unwrap())
            .unwrap_or_else(|e| panic!("{context}: {}: {e}", ck.display()));
    let name = format!("step-{:06}", state["step"].as_u64().unwrap());
    assert!(
        ck.ends_with(&name),
        "{context}: {} holds {name}",
        ck.display()
    );
}

/// SplitMix64: the kill moments, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

/// Polls until `path` exists or the child has exited; true if it exists.
fn wait_for(path: &Path, child: &mut Child, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if path.exists() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return path.exists();
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    panic!("waited {limit:?} for {}", path.display());
}

/// Appends half a line, cut inside a multi-byte character, as a crash mid-write leaves it.
fn tear(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(
        "{\"step\":99,\"completion\":\"é"
            .as_bytes()
            .split_last()
            .unwrap()
            .1,
    )
    .unwrap();
}

#[test]
fn kill_at_any_moment_then_resume_matches_an_uninterrupted_run() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let o = run(&train_args(&reference));
    must_succeed(&o, "uninterrupted run");
    let want = comparable_metrics(&reference);
    assert_eq!(want.len() as u64, STEPS + 2, "steps + eval before/after");

    let seed: u64 = std::env::var("POPO_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let mut rng = Rng(seed);
    let (mut inside_writes, mut resumed_from) = (0, Vec::new());
    for i in 0..KILLS {
        let run_dir = tmp.path().join(format!("kill-{i}"));
        let mut child = popo()
            .args(train_args(&run_dir))
            .env("POPO_TEST_CHECKPOINT_DELAY_MS", DELAY_MS.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ckdir = run_dir.join("checkpoints");
        // Even kills: inside the write of checkpoint `step` (the last one follows the final
        // evaluation). Odd kills: any moment after the first checkpoint.
        let moment = if i % 2 == 0 {
            let step = 1 + rng.below(STEPS);
            let wait = rng.below(4 * DELAY_MS + 2);
            let tmp_dir = ckdir.join(format!(".tmp-step-{step:06}"));
            if wait_for(&tmp_dir, &mut child, Duration::from_secs(120)) {
                inside_writes += 1;
            }
            std::thread::sleep(Duration::from_millis(wait));
            format!("{wait} ms into the write of checkpoint {step}")
        } else {
            let first = ckdir.join("step-000001");
            wait_for(&first, &mut child, Duration::from_secs(120));
            let wait = rng.below(STEPS * 5 * DELAY_MS);
            std::thread::sleep(Duration::from_millis(wait));
            format!("{wait} ms after the first checkpoint")
        };
        let context = format!("seed {seed}, kill {i}: {moment}");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let cks = checkpoints(&run_dir);
        assert!(!cks.is_empty(), "{context}: no checkpoint");
        for ck in &cks {
            assert_complete(ck, &context);
        }
        if i % 4 == 1 {
            tear(&run_dir.join("metrics.jsonl"));
            tear(&run_dir.join("samples.jsonl"));
        }
        let o = run(&[
            "train".into(),
            "--resume".into(),
            run_dir.display().to_string(),
        ]);
        must_succeed(&o, &context);
        assert_same_metrics(&comparable_metrics(&run_dir), &want, &context);
        for ck in checkpoints(&run_dir) {
            assert_complete(&ck, &context);
        }
        let last = cks.last().unwrap().file_name().unwrap().to_owned();
        resumed_from.push(last.to_string_lossy().into_owned());
    }
    // A kill after the final checkpoint: resuming the finished run changes nothing.
    let o = run(&[
        "train".into(),
        "--resume".into(),
        reference.display().to_string(),
    ]);
    must_succeed(&o, "resuming a finished run");
    assert_same_metrics(&comparable_metrics(&reference), &want, "a finished run");
    println!(
        "{KILLS} kills ({inside_writes} inside checkpoint writes), resumed from {resumed_from:?} \
         in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        inside_writes >= KILLS / 4,
        "too few kills inside checkpoint writes"
    );
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
        }
        Ok(Mount(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_the_run_with_the_previous_checkpoint_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    // One checkpoint of the tiny model is about 280 KB: the first fits, the second does not.
    let mount = match Mount::tmpfs(&run_dir.join("checkpoints"), "400k") {
        Ok(m) => m,
        Err(e) => {
            println!("skipping the disk-full test: cannot mount a tmpfs here ({e})");
            return;
        }
    };
    let o = run(&train_args(&run_dir));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    let tmp_ck = run_dir.join("checkpoints/.tmp-step-000002");
    assert!(
        stderr.contains(&format!("writing checkpoint {}", tmp_ck.display()))
            && stderr.contains("No space left on device"),
        "the error names the checkpoint and the cause: {stderr}"
    );
    assert!(!tmp_ck.exists(), "the failed write is cleaned up");
    let cks = checkpoints(&run_dir);
    assert_eq!(cks.len(), 1, "{cks:?}");
    assert_complete(&cks[0], "disk full");

    // With room again, the run resumes from that checkpoint and ends as if nothing happened.
    mount.resize("4m");
    let o = run(&[
        "train".into(),
        "--resume".into(),
        run_dir.display().to_string(),
    ]);
    must_succeed(&o, "resume after a full disk");
    let reference = tmp.path().join("reference");
    must_succeed(&run(&train_args(&reference)), "uninterrupted run");
    assert_eq!(comparable_metrics(&run_dir), comparable_metrics(&reference));
}
