//! Checkpoints: the policy in HF layout (config.json, model.safetensors, tokenizer) plus the trainer
//! state (step, data cursor, RNG seed, optimizer moments, algorithm state such as the EMA target and
//! the predictor). Written to a temporary directory and renamed into place, so a crash never
//! leaves a half-written checkpoint; only the last N are kept.

// The state is defined beside the learner's outcome it counts (`crate::state`); checkpoints
// store and load it.
pub use crate::state::{FinalEval, TrainerState};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const CHECKPOINTS_DIR: &str = "checkpoints";
pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const ALGO_FILE: &str = "algo_state.safetensors";

pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:06}")
}

/// Writes `<run_dir>/checkpoints/step-NNNNNN` atomically. `write_model` writes the HF files into
/// the directory it is given.
///
/// Every file goes into `checkpoints/.tmp-step-NNNNNN`, is fsynced, and the directory is renamed
/// into place (and the rename fsynced), so a checkpoint directory is either complete and on disk
/// or absent, whatever the moment of a crash or power loss; [`list`] never returns a temporary
/// directory. A failed write (a full disk) removes its temporary directory, leaves the earlier
/// checkpoints as they were, and is an error naming the checkpoint.
pub fn save(
    run_dir: &Path,
    state: &TrainerState,
    optimizer: &[(String, Tensor)],
    algo: &[(String, Tensor)],
    keep_last: usize,
    write_model: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let root = run_dir.join(CHECKPOINTS_DIR);
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let name = step_dir_name(state.step);
    let tmp = root.join(format!(".tmp-{name}"));
    remove_leftovers(&root);
    let written = write_files(&tmp, state, optimizer, algo, write_model);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("writing checkpoint {}", tmp.display())));
    }
    let dest = root.join(&name);
    if dest.exists() {
        std::fs::remove_dir_all(&dest)
            .with_context(|| format!("replacing checkpoint {}", dest.display()))?;
    }
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("renaming {} -> {}", tmp.display(), dest.display()))?;
    sync_dir(&root)?;
    let mut all = list(run_dir)?;
    while all.len() > keep_last.max(1) {
        // Renamed out of `list`'s sight first: a crash mid-removal leaves no partial step-*.
        let old = all.remove(0);
        let doomed = root.join(format!(
            ".old-{}",
            old.file_name().unwrap_or_default().to_string_lossy()
        ));
        std::fs::rename(&old, &doomed)
            .and_then(|()| std::fs::remove_dir_all(&doomed))
            .with_context(|| format!("removing old checkpoint {}", old.display()))?;
    }
    Ok(dest)
}

/// Removes what a crash may have left in `checkpoints/`: temporary directories of writes and
/// removals that did not finish.
fn remove_leftovers(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".tmp-step-") || name.starts_with(".old-step-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Test hook: `POPO_TEST_CHECKPOINT_DELAY_MS=N` sleeps N ms after each file of a checkpoint, so
/// that a test can kill the process inside a checkpoint write (crates/popo/tests/crash_safety.rs).
fn test_delay() {
    if let Some(ms) = std::env::var("POPO_TEST_CHECKPOINT_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Writes a checkpoint's files into `tmp` (replacing a leftover of an earlier crash) and
/// fsyncs them and the directory.
fn write_files(
    tmp: &Path,
    state: &TrainerState,
    optimizer: &[(String, Tensor)],
    algo: &[(String, Tensor)],
    write_model: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    if tmp.exists() {
        std::fs::remove_dir_all(tmp)?;
    }
    std::fs::create_dir_all(tmp)?;
    write_model(tmp)?;
    test_delay();
    let state_path = tmp.join(STATE_FILE);
    std::fs::write(&state_path, serde_json::to_string_pretty(state)?)
        .with_context(|| format!("writing {}", state_path.display()))?;
    test_delay();
    save_tensors(&tmp.join(OPTIMIZER_FILE), optimizer)?;
    test_delay();
    save_tensors(&tmp.join(ALGO_FILE), algo)?;
    test_delay();
    for entry in std::fs::read_dir(tmp)? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", path.display()))?;
        }
    }
    sync_dir(tmp)
}

/// fsync of a directory, so that the entries created or renamed in it are on disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

fn save_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let map: HashMap<String, Tensor> = tensors.iter().cloned().collect();
    candle_core::safetensors::save(&map, path)
        .with_context(|| format!("writing {}", path.display()))
}

pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        bail!("checkpoint file {} is missing", path.display());
    }
    candle_core::safetensors::load(path, device)
        .with_context(|| format!("reading {}", path.display()))
}

/// Rewrites the trainer state of the finished checkpoint `dir` (the run's final evaluation came
/// after it was saved), through a temporary file so that a crash leaves the old state whole.
pub fn update_state(dir: &Path, state: &TrainerState) -> Result<()> {
    let (tmp, dest) = (dir.join(".tmp-state.json"), dir.join(STATE_FILE));
    std::fs::write(&tmp, serde_json::to_string_pretty(state)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("renaming {} -> {}", tmp.display(), dest.display()))
}

pub fn load_state(dir: &Path) -> Result<TrainerState> {
    let p = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

/// Completed checkpoints of a run, oldest first.
pub fn list(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let root = run_dir.join(CHECKPOINTS_DIR);
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-"))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// A run directory of `popo train` means its latest checkpoint; anything else is an HF directory.
pub fn resolve_model_dir(dir: &Path) -> Result<(PathBuf, Option<u64>)> {
    let step_of = |d: &Path| -> Option<u64> { load_state(d).ok().map(|s| s.step) };
    if dir.join("config.json").is_file() || popo_model::adapter::is_adapter_dir(dir) {
        return Ok((dir.to_path_buf(), step_of(dir)));
    }
    if let Some(last) = list(dir)?.pop() {
        let step = step_of(&last);
        return Ok((last, step));
    }
    bail!(
        "{}: no config.json (not an HF model directory), no adapter_config.json (not a LoRA adapter) and no checkpoints/step-* (not a popo run directory)",
        dir.display()
    )
}

/// `dir` is a checkpoint (has trainer_state.json) or a run directory (its latest checkpoint).
/// Returns (run dir, checkpoint dir).
pub fn resolve_resume(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    if dir.join(STATE_FILE).exists() {
        let run = dir.parent().and_then(Path::parent).with_context(|| {
            format!(
                "checkpoint {} is not inside <run>/checkpoints/",
                dir.display()
            )
        })?;
        return Ok((run.to_path_buf(), dir.to_path_buf()));
    }
    let last = list(dir)?.pop().with_context(|| {
        format!(
            "--resume {}: no checkpoint found (expected {}/step-*)",
            dir.display(),
            CHECKPOINTS_DIR
        )
    })?;
    Ok((dir.to_path_buf(), last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DataCursor;

    #[test]
    fn atomic_save_keeps_last_n_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let t = Tensor::new(&[1.0f32, 2.0], &dev).unwrap();
        let mut state = TrainerState {
            step: 0,
            optimizer_updates: 0,
            data_cursor: DataCursor {
                seed: 1,
                epoch: 0,
                index: 3,
            },
            rng_seed: 1,
            nonfinite_in_row: 0,
            skipped_steps: 0,
            eval_before: Some(0.25),
            loss_scale: None,
            final_eval: None,
            wall_s: 0.0,
        };
        for step in 1..=3 {
            state.step = step;
            save(
                dir.path(),
                &state,
                &[("m.a".into(), t.clone())],
                &[],
                2,
                |d| {
                    std::fs::write(d.join("config.json"), "{}")?;
                    Ok(())
                },
            )
            .unwrap();
        }
        let all = list(dir.path()).unwrap();
        assert_eq!(all.len(), 2);
        assert!(all[1].ends_with("step-000003"));
        let (run, ck) = resolve_resume(dir.path()).unwrap();
        assert_eq!(
            (run.as_path(), ck.as_path()),
            (dir.path(), all[1].as_path())
        );
        assert_eq!(load_state(&ck).unwrap(), state);
        state.final_eval = Some(FinalEval {
            step: 3,
            accuracy: Some(0.5),
            pass_at_k: Some(popo_model::passk::PassAtK::from_counts(2, &[1, 2])),
        });
        update_state(&ck, &state).unwrap();
        assert_eq!(load_state(&ck).unwrap(), state);
        // Older checkpoints have no final_eval.
        let old = r#"{"step": 1, "optimizer_updates": 1, "data_cursor": {"seed": 1, "epoch": 0, "index": 0},
            "rng_seed": 1, "nonfinite_in_row": 0, "skipped_steps": 0, "eval_before": null}"#;
        assert_eq!(
            serde_json::from_str::<TrainerState>(old)
                .unwrap()
                .final_eval,
            None
        );
        let opt = load_tensors(&ck.join(OPTIMIZER_FILE), &dev).unwrap();
        assert_eq!(opt["m.a"].to_vec1::<f32>().unwrap(), vec![1.0, 2.0]);
        assert!(ck.join("config.json").exists());
        assert!(std::fs::read_dir(dir.path().join(CHECKPOINTS_DIR))
            .unwrap()
            .all(|e| !e.unwrap().file_name().to_string_lossy().starts_with(".tmp")));
        let e = resolve_resume(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no checkpoint"), "{e}");
    }
}
