//! AFL++ entry point of the `model_config` target: see `popo_fuzz_harness::model_config`.
fn main() {
    afl::fuzz!(|data: &[u8]| popo_fuzz_harness::model_config::run(data));
}
