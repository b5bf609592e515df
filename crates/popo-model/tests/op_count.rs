//! Ops per layer per decode step, counted. Every candle op writes a fresh output buffer, so the
//! number of tensor-sized allocations in one decode step is the number of ops that ran (on a GPU,
//! kernel launches). The count per layer is the difference between a 2-layer and a 1-layer model.
//! `cargo test -p popo-model --test op_count -- --nocapture` prints it (BENCHMARKS.md).

use candle_core::{DType, Device, Tensor};
use popo_model::{Model, ModelConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Counts allocations of at least `MIN_BYTES` while `ON` is set (tensor buffers of the test
/// model; graph nodes and small bookkeeping are smaller).
struct Counting;
static ON: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicUsize = AtomicUsize::new(0);
const MIN_BYTES: usize = 1024;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= MIN_BYTES && ON.load(Ordering::Relaxed) {
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Buffers allocated by one decode step (batch 4, 16 cached tokens) of a model with `layers`.
fn buffers_per_step(layers: usize, fused: bool) -> usize {
    // Wide enough that every per-token tensor is at least MIN_BYTES (256 f32).
    let cfg = ModelConfig::qwen2_tiny(512, 256, layers, 4, 2, 512);
    let (_vm, model) = Model::new_seeded(&cfg, &Device::Cpu, DType::F32, 1, 0.02).unwrap();
    // The sampler decodes with `for_decoding()`: fused kernels and stacked projections.
    let b = 4;
    let model = if fused {
        model.for_decoding().unwrap()
    } else {
        model
    };
    let ids = Tensor::from_vec(
        (0..b * 16).map(|i| (i % 500) as u32).collect(),
        (b, 16),
        &Device::Cpu,
    )
    .unwrap();
    let mut cache = model.new_cache(b, 64).unwrap();
    model
        .forward_cached(&ids, &vec![vec![1u8; 16]; b], &mut cache)
        .unwrap();
    let next = Tensor::from_vec(vec![7u32; b], (b, 1), &Device::Cpu).unwrap();
    COUNT.store(0, Ordering::SeqCst);
    ON.store(true, Ordering::SeqCst);
    let h = model
        .forward_cached(&next, &vec![vec![1u8]; b], &mut cache)
        .unwrap();
    let _logits = model.lm_head(&h).unwrap();
    ON.store(false, Ordering::SeqCst);
    COUNT.load(Ordering::SeqCst)
}

#[test]
fn ops_per_layer_per_decode_step() {
    // One thread: candle's op pool would otherwise allocate per worker.
    std::env::set_var("CANDLE_NUM_THREADS", "1");
    // A warm-up first: the training path's ops start rayon's worker threads, whose own start-up
    // allocations must not land in a measured step.
    buffers_per_step(1, false);
    let per_layer = |fused| buffers_per_step(2, fused) - buffers_per_step(1, fused);
    let (primitive, fused) = (per_layer(false), per_layer(true));
    let rest = buffers_per_step(1, true) - fused;
    eprintln!(
        "ops per layer per decode step: {primitive} on the differentiable path, {fused} on the \
         no-graph (fused) decode path; {rest} outside the layers"
    );
    assert!(fused < primitive, "{fused} vs {primitive}");
    // A regression guard: the decode layer stays lean (35 with stacked q/k/v and gate/up).
    assert!(fused <= 35, "{fused} ops per layer");
}
