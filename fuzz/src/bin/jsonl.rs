//! AFL++ entry point of the `jsonl` target: see `popo_fuzz::jsonl`.
fn main() {
    afl::fuzz!(|data: &[u8]| popo_fuzz::jsonl::run(data));
}
