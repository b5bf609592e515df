//! AFL++ entry point of the `jsonl` target: see `popo_fuzz_harness::jsonl`.
fn main() {
    afl::fuzz!(|data: &[u8]| popo_fuzz_harness::jsonl::run(data));
}
