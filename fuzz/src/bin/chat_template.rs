//! AFL++ entry point of the `chat_template` target: see `popo_fuzz_harness::chat_template`.
fn main() {
    afl::fuzz!(|data: &[u8]| popo_fuzz_harness::chat_template::run(data));
}
