//! How a CPU's cores are shared out. candle can split each op across the cores, or ops can run on
//! one core each while micro-batches run side by side. The first suits large models, whose ops are
//! long; the second suits small ones, whose ops are too short to split (the built-in demo model:
//! two cores splitting ops ran a step no faster than one, BENCHMARKS.md). Either way the update is
//! the same: micro-batch results are folded in order.

use crate::config::{CpuParallel, TrainConfig};
use anyhow::{bail, Result};
use candle_core::Device;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether `configure_process` set `RAYON_NUM_THREADS` to 1 (see there).
static MATMULS_ON_ONE_CORE: AtomicBool = AtomicBool::new(false);

/// Sets up the process for a training config. Call it before the first candle op (candle sizes its
/// op thread pool once, from `CANDLE_NUM_THREADS`) and before other threads read the environment. With
/// `auto`, the built-in tiny model on CPU runs its ops on one core each; a `CANDLE_NUM_THREADS`
/// set by the user always wins.
pub fn configure_process(cfg: &TrainConfig) {
    let mode = cfg.run.cpu_parallel;
    let small_on_cpu =
        cfg.model.path.is_empty() && cfg.run.device == crate::config::DeviceName::Cpu;
    let one_core_ops =
        mode == CpuParallel::MicroBatches || (mode == CpuParallel::Auto && small_on_cpu);
    if one_core_ops && std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
        // candle's matmuls split over `RAYON_NUM_THREADS` rayon threads, read at every call:
        // size rayon's pool by the cores first (micro-batches go side by side by that count),
        // then keep each matmul on its caller's core. Without this each micro-batch thread's
        // matmuls woke rayon's workers, two threads per core.
        let cores = candle_core::utils::get_num_threads();
        // An error means the pool exists already, with its size.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(cores)
            .build_global();
        std::env::set_var("RAYON_NUM_THREADS", "1");
        MATMULS_ON_ONE_CORE.store(true, Ordering::SeqCst);
    } else if !one_core_ops && MATMULS_ON_ONE_CORE.swap(false, Ordering::SeqCst) {
        // A later run of the same process (`popo experiment`) that splits ops: give its
        // matmuls the cores back. (candle's op pool keeps the size it was first given.)
        std::env::set_var(
            "RAYON_NUM_THREADS",
            rayon::current_num_threads().to_string(),
        );
    }
}

/// candle asks how many threads to use at every matmul and, unless `RAYON_NUM_THREADS` is set,
/// counts the physical cores anew each time by reading /proc/cpuinfo (2.5% of a step of the
/// built-in run went to the kernel formatting that file). Setting the variable once, to the
/// count candle finds, answers it from the environment. Call first thing in `main`, before any
/// thread exists.
pub fn fix_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// Whether ops run on one core each on `device` while micro-batches (and decode runs) go side
/// by side: micro-batch mode on a CPU, or `auto` where candle will not split the ops itself
/// (both at once contend for candle's op pool, which takes one caller at a time).
fn ops_on_one_core(mode: CpuParallel, device: &Device) -> bool {
    device.is_cpu()
        && match mode {
            CpuParallel::Ops => false,
            CpuParallel::MicroBatches => true,
            CpuParallel::Auto => candle_core::utils::barrier_pool().n_workers() == 0,
        }
}

/// Into how many runs a step's prompts are cut for decoding side by side: 2 where ops run on
/// one core each, else 1. A constant rather than the core count, because the cut changes a
/// row's floats in the last bits and a run must not depend on the machine; two runs are what
/// the project's 2-core machine can use (BENCHMARKS.md).
pub fn rollout_parts(mode: CpuParallel, device: &Device) -> usize {
    if ops_on_one_core(mode, device) {
        2
    } else {
        1
    }
}

/// How many micro-batches run at once on `device`.
pub fn micro_batch_width(mode: CpuParallel, device: &Device) -> usize {
    if ops_on_one_core(mode, device) {
        rayon::current_num_threads().max(1)
    } else {
        1
    }
}

const WORKER_STACK: usize = 8 << 20;

/// Runs `work(k)` for `k in 0..n`, `width` at a time on their own threads, and hands the results
/// to `fold` in index order. Each `work` call is independent and `fold` sees the same sequence
/// whatever `width` is, so results do not depend on the thread count; memory is bounded by `width`
/// results (a micro-batch's gradients, say) at a time.
pub fn in_waves<T: Send>(
    n: usize,
    width: usize,
    work: impl Fn(usize) -> Result<T> + Sync,
    mut fold: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    let width = width.clamp(1, n.max(1));
    for start in (0..n).step_by(width) {
        let end = (start + width).min(n);
        let results: Vec<Result<T>> = if end - start == 1 {
            vec![work(start)]
        } else {
            std::thread::scope(|s| {
                let work = &work;
                // candle's backward walks the graph recursively: give deep models the main
                // thread's stack size rather than a spawned thread's 2 MiB.
                let spawn = |k: usize| {
                    std::thread::Builder::new()
                        .stack_size(WORKER_STACK)
                        .spawn_scoped(s, move || work(k))
                };
                let handles: Vec<_> = (start..end).map(spawn).collect();
                handles
                    .into_iter()
                    .map(|h| match h {
                        Ok(h) => h
                            .join()
                            .unwrap_or_else(|_| bail!("a micro-batch worker thread panicked")),
                        Err(e) => bail!("starting a micro-batch worker thread: {e}"),
                    })
                    .collect()
            })
        };
        for r in results {
            fold(r?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_fold_in_index_order_at_any_width() {
        for width in [1, 2, 3, 7, 20] {
            let mut seen = Vec::new();
            in_waves(
                7,
                width,
                |k| Ok(k * 10),
                |v| {
                    seen.push(v);
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(seen, vec![0, 10, 20, 30, 40, 50, 60], "width {width}");
        }
    }

    #[test]
    fn a_failing_call_is_an_error_and_later_waves_do_not_run() {
        let mut folded = Vec::new();
        let err = in_waves(
            6,
            2,
            |k| {
                if k == 3 {
                    bail!("row {k} failed")
                } else {
                    Ok(k)
                }
            },
            |v| {
                folded.push(v);
                Ok(())
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "row 3 failed");
        assert_eq!(folded, vec![0, 1, 2]);
    }

    #[test]
    fn ops_mode_runs_one_micro_batch_at_a_time() {
        assert_eq!(micro_batch_width(CpuParallel::Ops, &Device::Cpu), 1);
    }
}
