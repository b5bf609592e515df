//! Inputs the fuzzer found (`scripts/fuzz.sh config`, fuzz/crashes/config/), kept as tests:
//! whatever a config file and `--set` say, building the config is a config or an error, never
//! a panic, and a built config saved as config.toml reads back the same.

use popo_train::config::{ConfigBuilder, TrainConfig};

/// What the `config` fuzz target does with one input: the config file is the input up to the
/// first NUL, each further NUL-separated part a `--set`. (The saved files also go through the
/// target itself, `popo_fuzz_harness::config`, in popo-fuzz-harness/tests/replay.rs; this copy
/// keeps the inline cases below in this crate's tests.)
fn build_and_round_trip(input: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let mut parts = input.split(|&b| b == 0);
    let file = dir.path().join("config.toml");
    std::fs::write(&file, parts.next().unwrap_or_default()).unwrap();
    let Ok(mut builder) = ConfigBuilder::new().file(&file) else {
        return;
    };
    for set in parts {
        match builder.set(&String::from_utf8_lossy(set)) {
            Ok(b) => builder = b,
            Err(_) => return,
        }
    }
    let Ok(cfg) = builder.build() else {
        return;
    };
    let text = cfg.to_toml().unwrap();
    let saved = dir.path().join("resolved.toml");
    std::fs::write(&saved, &text).unwrap();
    let back = TrainConfig::from_file(&saved).unwrap();
    assert_eq!(back.to_toml().unwrap(), text);
}

/// A string of 256 or more `"` in a row (here the value of an unknown key, or of `run.out_dir`)
/// overflowed a `u8` counter in toml 0.8's writer (toml_write 0.1.2, toml-rs/toml#1188): a panic
/// in builds with overflow checks, while building the config and while saving it. Fixed by
/// toml 1.2 (toml_writer 1.2 saturates the counter).
#[test]
fn a_long_run_of_quotes_in_a_string_serializes() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/crashes/config");
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(inputs.len() >= 5, "the fuzzer's inputs are in {dir}");
    for quote in ["\"", "'"] {
        let run = quote.repeat(300);
        inputs.push(format!("[run]\nsteps = 4\nnote = {run:?}\n").into_bytes());
        inputs.push(format!("[run]\nsteps = 4\n\0run.out_dir={run:?}").into_bytes());
    }
    for input in &inputs {
        build_and_round_trip(input);
    }
    // The string itself survives the round trip.
    let out_dir = "\"".repeat(300) + &"'".repeat(300);
    let cfg = ConfigBuilder::new()
        .set(&format!("run.out_dir={out_dir:?}"))
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(cfg.run.out_dir, out_dir);
    let back: TrainConfig = toml::from_str(&cfg.to_toml().unwrap()).unwrap();
    assert_eq!(back.run.out_dir, out_dir);
}
