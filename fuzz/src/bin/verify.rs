//! AFL++ entry point of the `verify` target: see `popo_fuzz_harness::verify`.
fn main() {
    afl::fuzz!(|data: &[u8]| popo_fuzz_harness::verify::run(data));
}
