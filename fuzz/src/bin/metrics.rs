//! AFL++ entry point of the `metrics` target: see `popo_fuzz::metrics`.
fn main() {
    afl::fuzz!(|data: &[u8]| popo_fuzz::metrics::run(data));
}
