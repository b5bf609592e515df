//! AFL++ entry point of the `verify` target: see `popo_fuzz::verify`.
fn main() {
    afl::fuzz!(|data: &[u8]| popo_fuzz::verify::run(data));
}
