//! What the decode loop counts (steps, bytes sent to the host, KV compactions), and the switch
//! that makes a thread choose every token on the host: diagnostics and the tests' reference,
//! shared by the loop and the device sampler.

/// What the decode loop moved, counted per thread (the engine runs on its caller's thread, so
/// tests running side by side do not mix their counts). A diagnostic: `popo bench`, the tests
/// and BENCHMARKS.md read it; nothing depends on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Token choices made, one per batch of rows (the step after a prefill included).
    pub steps: u64,
    /// Bytes of logits, block sums and ids copied to the host to choose tokens.
    pub host_bytes: u64,
    /// Times finished rows were dropped from the KV cache (each copies the rows kept).
    pub kv_compactions: u64,
    /// Bytes those compactions wrote.
    pub kv_bytes_copied: u64,
}

thread_local! {
    static STATS: std::cell::Cell<DecodeStats> = const {
        std::cell::Cell::new(DecodeStats {
            steps: 0,
            host_bytes: 0,
            kv_compactions: 0,
            kv_bytes_copied: 0,
        })
    };
}

/// This thread's decode counters since it started (subtract two readings for one call).
pub fn decode_stats() -> DecodeStats {
    STATS.with(|s| s.get())
}

pub(super) fn count(f: impl FnOnce(&mut DecodeStats)) {
    STATS.with(|s| {
        let mut v = s.get();
        f(&mut v);
        s.set(v);
    });
}

thread_local! {
    static HOST_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every token of this thread's decodes chosen by the host sampler
/// (`sample_token` over copied logits), as before on-device sampling: the reference the tests
/// compare the device path with, and the "before" of BENCHMARKS.md's transfer counts.
pub fn with_host_sampling<R>(f: impl FnOnce() -> R) -> R {
    // Restores the flag even if `f` unwinds.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            HOST_ONLY.with(|h| h.set(self.0));
        }
    }
    let _restore = Restore(HOST_ONLY.with(|h| h.replace(true)));
    f()
}

pub(super) fn note_host_bytes(n: usize) {
    count(|s| s.host_bytes += n as u64);
}

/// Whether this thread is inside [`with_host_sampling`].
pub(super) fn host_only() -> bool {
    HOST_ONLY.with(|h| h.get())
}
