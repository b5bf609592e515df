//! AFL++ entry point of the `metrics` target: see `popo_fuzz_harness::metrics`.
fn main() {
    afl::fuzz!(|data: &[u8]| popo_fuzz_harness::metrics::run(data));
}
