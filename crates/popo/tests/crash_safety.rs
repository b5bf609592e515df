//! A kill at any moment loses nothing: `popo train` (the binary, on the built-in task at test
//! scale, a checkpoint every step) is killed with SIGKILL at pseudo-random moments under several
//! seeds, half of them inside checkpoint writes (widened by the test hook
//! `POPO_TEST_CHECKPOINT_DELAY_MS`). Each kill must hit a live process. After each kill every
//! `checkpoints/step-*` is complete, and `--resume` finishes the run with metrics, samples and
//! final checkpoint identical to an uninterrupted run's (`perf/*` timings aside), also when the
//! kill left a torn line at the end of metrics.jsonl and samples.jsonl. A kill inside the first
//! checkpoint leaves no resume point: a fresh run and `--resume` into that directory are refused.
//! A full disk (a size-limited tmpfs under `checkpoints/`; skipped where mounting is not allowed,
//! a failure under `CI=true`) stops the run with an error naming the checkpoint, and leaves the
//! previous checkpoint intact and resumable.
//!
//! The moments come from the seeds in `POPO_CRASH_SEED` (a comma-separated list, default
//! 16,17,18,19,20); a failure prints the seed and moment.

use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const STEPS: u64 = 6;
/// Sleep after each checkpoint file in the killed runs: a checkpoint write takes 4 x this.
const DELAY_MS: u64 = 15;
/// The least time a checkpoint write takes in a killed run (its four sleeps).
const WRITE_MS: u64 = 4 * DELAY_MS;
const DEFAULT_SEEDS: [u64; 5] = [16, 17, 18, 19, 20];
/// Kills per seed: two inside a checkpoint write, two at any moment, one at a rename.
const KILLS_PER_SEED: usize = 5;
/// What `checkpoint::save` writes: the HF model (`LmPolicy::save_pretrained`) and the trainer
/// state.
const CHECKPOINT_FILES: [&str; 7] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "trainer_state.json",
    "optimizer.safetensors",
    "algo_state.safetensors",
];
/// The files of the final checkpoint that a resumed run must reproduce byte for byte.
const REPRODUCED_FILES: [&str; 4] = [
    "model.safetensors",
    "optimizer.safetensors",
    "algo_state.safetensors",
    "trainer_state.json",
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

fn resume_args(run_dir: &Path) -> Vec<String> {
    vec![
        "train".into(),
        "--resume".into(),
        run_dir.display().to_string(),
    ]
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

/// A run that must be refused: exit code 2 and an error containing `message`.
fn must_be_refused(o: &Output, message: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(2) && stderr.contains(message),
        "{what}: expected exit code 2 and an error containing {message:?}, got {}\n{stderr}",
        o.status
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

/// A file's bytes as runs are compared: trainer_state.json without its wall clock (`wall_s`,
/// seconds, which no two runs share).
fn comparable_bytes(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    if !path.ends_with("trainer_state.json") {
        return bytes;
    }
    let mut v: Value = serde_json::from_slice(&bytes).unwrap();
    v.as_object_mut().unwrap().remove("wall_s");
    serde_json::to_vec_pretty(&v).unwrap()
}

/// `got` holds the same bytes as `want` (`comparable_bytes`); for text, the first differing line
/// is named.
fn assert_same_file(got: &Path, want: &Path, context: &str) {
    let (g, w) = (comparable_bytes(got), comparable_bytes(want));
    if g == w {
        return;
    }
    let (gt, wt) = (String::from_utf8_lossy(&g), String::from_utf8_lossy(&w));
    let line = gt.lines().zip(wt.lines()).position(|(a, b)| a != b);
    let detail = match line {
        Some(i) => format!(
            "line {} differs:\n  got  {}\n  want {}",
            i + 1,
            gt.lines().nth(i).unwrap(),
            wt.lines().nth(i).unwrap()
        ),
        None => format!("{} bytes against {}", g.len(), w.len()),
    };
    panic!(
        "{context}: {} differs from the uninterrupted run's {}: {detail}",
        got.display(),
        want.display()
    );
}

/// The resumed run `got` ended as the uninterrupted `want`: metrics (timings aside),
/// samples.jsonl, and the final checkpoint's weights, optimizer moments, algorithm and trainer
/// state, byte for byte.
fn assert_same_run(got: &Path, want: &Path, want_metrics: &[Value], context: &str) {
    assert_same_metrics(&comparable_metrics(got), want_metrics, context);
    assert_same_file(
        &got.join("samples.jsonl"),
        &want.join("samples.jsonl"),
        context,
    );
    let last = format!("checkpoints/step-{STEPS:06}");
    for f in REPRODUCED_FILES {
        let (g, w) = (got.join(&last).join(f), want.join(&last).join(f));
        assert_same_file(&g, &w, context);
    }
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

fn step_dir(run: &Path, step: u64) -> PathBuf {
    run.join(format!("checkpoints/step-{step:06}"))
}

fn tmp_dir(run: &Path, step: u64) -> PathBuf {
    run.join(format!("checkpoints/.tmp-step-{step:06}"))
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

/// Polls until `path` exists; the child exiting first is a failure.
fn wait_for(path: &Path, child: &mut Child, context: &str) {
    let (start, limit) = (Instant::now(), Duration::from_secs(120));
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            if path.exists() {
                break;
            }
            panic!(
                "{context}: the run ended ({status}) before {} appeared",
                path.display()
            );
        }
        assert!(
            start.elapsed() < limit,
            "waited {limit:?} for {}",
            path.display()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// SIGKILLs the child and asserts that it was still running: killed by signal 9.
fn kill(child: &mut Child, context: &str) -> ExitStatus {
    let sent = child.kill();
    let status = child.wait().unwrap();
    assert!(
        sent.is_ok() && status.signal() == Some(9),
        "{context}: the kill did not hit a live process ({sent:?}, exit status {status})"
    );
    status
}

fn spawn_killable(run_dir: &Path) -> Child {
    popo()
        .args(train_args(run_dir))
        .env("POPO_TEST_CHECKPOINT_DELAY_MS", DELAY_MS.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
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

/// When a run is killed.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// `wait` ms after the write of checkpoint `step` (2..=STEPS) began: each write takes at
    /// least `WRITE_MS`, so the kill falls inside it unless the test is descheduled.
    Inside { step: u64, wait: u64 },
    /// `wait` ms after the first checkpoint; below the `STEPS - 2` writes still to come, so
    /// the run is still going.
    After { wait: u64 },
    /// As soon as checkpoint `step` (1..STEPS) is renamed into place: it must be complete then.
    AtRename { step: u64 },
}

/// What one kill left and the resume made of it.
struct Killed {
    /// The kill came before the rename of the checkpoint it was inside.
    before_rename: bool,
    /// The checkpoint the run resumed from.
    resumed_from: u64,
}

/// Kills a run at `moment`, checks what it left, resumes it and compares it with `reference`.
fn kill_and_resume(
    run_dir: &Path,
    moment: Moment,
    torn: bool,
    reference: &Path,
    want: &[Value],
    context: &str,
) -> Killed {
    let mut child = spawn_killable(run_dir);
    let (waited_for, wait) = match moment {
        Moment::Inside { step, wait } => (tmp_dir(run_dir, step), wait),
        Moment::After { wait } => (step_dir(run_dir, 1), wait),
        Moment::AtRename { step } => (step_dir(run_dir, step), 0),
    };
    wait_for(&waited_for, &mut child, context);
    std::thread::sleep(Duration::from_millis(wait));
    kill(&mut child, context);

    let cks = checkpoints(run_dir);
    assert!(!cks.is_empty(), "{context}: no checkpoint");
    for ck in &cks {
        assert_complete(ck, context);
    }
    let newest = cks.last().unwrap().clone();
    let resumed_from: u64 = newest
        .to_string_lossy()
        .rsplit('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let before_rename = match moment {
        Moment::Inside { step, .. } => {
            let inside = tmp_dir(run_dir, step).exists() && !step_dir(run_dir, step).exists();
            if inside {
                assert_eq!(newest, step_dir(run_dir, step - 1), "{context}: newest");
            }
            inside
        }
        Moment::After { .. } | Moment::AtRename { .. } => false,
    };
    if torn {
        tear(&run_dir.join("metrics.jsonl"));
        tear(&run_dir.join("samples.jsonl"));
    }
    must_succeed(&run(&resume_args(run_dir)), context);
    assert_same_run(run_dir, reference, want, context);
    for ck in checkpoints(run_dir) {
        assert_complete(&ck, context);
    }
    Killed {
        before_rename,
        resumed_from,
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("POPO_CRASH_SEED") {
        Ok(s) => s
            .split(',')
            .map(|x| {
                x.trim()
                    .parse()
                    .expect("POPO_CRASH_SEED: comma-separated integers")
            })
            .collect(),
        Err(_) => DEFAULT_SEEDS.to_vec(),
    }
}

/// The kill moments of one seed. The j-th kill inside a write is inside checkpoint
/// 2 + (seed + j) % (STEPS - 1), and the kill at a rename at checkpoint 1 + seed % (STEPS - 1),
/// so the default seeds hit each of checkpoints 2..=STEPS twice inside its write and each of
/// 1..STEPS once at its rename; the moments themselves are drawn.
fn moments(seed: u64) -> Vec<Moment> {
    let mut rng = Rng(seed);
    (0..KILLS_PER_SEED as u64)
        .map(|i| match i {
            0 | 2 => Moment::Inside {
                step: 2 + (seed + i / 2) % (STEPS - 1),
                wait: rng.below(WRITE_MS),
            },
            1 | 3 => Moment::After {
                wait: rng.below((STEPS - 2) * WRITE_MS),
            },
            _ => Moment::AtRename {
                step: 1 + seed % (STEPS - 1),
            },
        })
        .collect()
}

/// Copies what a finished run must keep: its logs and its final checkpoint's files.
fn copy_outputs(from: &Path, to: &Path) {
    let last = format!("checkpoints/step-{STEPS:06}");
    std::fs::create_dir_all(to.join(&last)).unwrap();
    for f in ["metrics.jsonl", "samples.jsonl"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    for f in REPRODUCED_FILES {
        std::fs::copy(from.join(&last).join(f), to.join(&last).join(f)).unwrap();
    }
}

#[test]
fn kill_at_any_moment_then_resume_matches_an_uninterrupted_run() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    must_succeed(&run(&train_args(&reference)), "uninterrupted run");
    let want = comparable_metrics(&reference);
    assert_eq!(want.len() as u64, STEPS + 2, "steps + eval before/after");
    for ck in checkpoints(&reference) {
        assert_complete(&ck, "uninterrupted run");
    }

    let (mut inside, mut before_rename, mut log) = (0, 0, Vec::new());
    for seed in seeds() {
        for (i, moment) in moments(seed).into_iter().enumerate() {
            let run_dir = tmp.path().join(format!("seed-{seed}-kill-{i}"));
            let torn = i % 4 == 1;
            let context = format!("seed {seed}, kill {i}: {moment:?}, torn logs {torn}");
            let k = kill_and_resume(&run_dir, moment, torn, &reference, &want, &context);
            if matches!(moment, Moment::Inside { .. }) {
                inside += 1;
                before_rename += usize::from(k.before_rename);
            }
            log.push(format!("{seed}/{i}: {moment:?} -> step {}", k.resumed_from));
        }
    }
    // A kill after the final checkpoint: resuming the finished run changes nothing.
    let finished = tmp.path().join("finished");
    copy_outputs(&reference, &finished);
    must_succeed(&run(&resume_args(&reference)), "resuming a finished run");
    assert_same_run(&reference, &finished, &want, "a finished run");
    println!(
        "{} kills ({inside} inside checkpoint writes, {before_rename} of them before the \
         rename) in {:.1} s:\n  {}",
        log.len(),
        started.elapsed().as_secs_f64(),
        log.join("\n  ")
    );
    assert!(
        before_rename * 2 >= inside,
        "only {before_rename} of {inside} kills inside checkpoint writes came before the rename"
    );
}

/// A kill inside the first checkpoint leaves no resume point: as RELIABILITY.md documents, the
/// directory is refused both as a fresh run (its metrics.jsonl is kept) and by `--resume`.
#[test]
fn a_kill_inside_the_first_checkpoint_leaves_a_run_that_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let context = "a kill inside checkpoint 1";
    let mut child = spawn_killable(&run_dir);
    wait_for(&tmp_dir(&run_dir, 1), &mut child, context);
    std::thread::sleep(Duration::from_millis(WRITE_MS / 4));
    kill(&mut child, context);
    assert!(
        tmp_dir(&run_dir, 1).exists() && checkpoints(&run_dir).is_empty(),
        "{context}: the kill came after the rename: {:?}",
        checkpoints(&run_dir)
    );
    let metrics = std::fs::read(run_dir.join("metrics.jsonl")).unwrap();
    must_be_refused(
        &run(&train_args(&run_dir)),
        "already holds a run (metrics.jsonl): choose another run.out_dir",
        "a fresh run into it",
    );
    assert_eq!(
        std::fs::read(run_dir.join("metrics.jsonl")).unwrap(),
        metrics,
        "the refused fresh run left metrics.jsonl as it was"
    );
    must_be_refused(
        &run(&resume_args(&run_dir)),
        "no checkpoint found",
        "--resume",
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
        // CI runs as root, where mounting works: there a refusal is a failure, not a skip.
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but the disk-full test cannot mount a tmpfs: {e}")
        }
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
    let want = comparable_metrics(&reference);
    assert_same_run(&run_dir, &reference, &want, "resume after a full disk");
}
