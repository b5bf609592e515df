//! AFL++ entry point of the `config` target: see `popo_fuzz_harness::config`.
fn main() {
    afl::fuzz!(|data: &[u8]| popo_fuzz_harness::config::run(data));
}
