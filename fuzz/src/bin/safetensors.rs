//! AFL++ entry point of the `safetensors` target: see `popo_fuzz::safetensors`.
fn main() {
    afl::fuzz!(|data: &[u8]| popo_fuzz::safetensors::run(data));
}
