//! AFL++ entry point of the `config` target: see `popo_fuzz::config`.
fn main() {
    afl::fuzz!(|data: &[u8]| popo_fuzz::config::run(data));
}
