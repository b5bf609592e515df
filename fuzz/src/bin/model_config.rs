//! AFL++ entry point of the `model_config` target: see `popo_fuzz::model_config`.
fn main() {
    afl::fuzz!(|data: &[u8]| popo_fuzz::model_config::run(data));
}
