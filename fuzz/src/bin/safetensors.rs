//! AFL++ entry point of the `safetensors` target: see `popo_fuzz_harness::safetensors`.
fn main() {
    afl::fuzz!(|data: &[u8]| popo_fuzz_harness::safetensors::run(data));
}
