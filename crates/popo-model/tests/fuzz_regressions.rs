//! Inputs the fuzzer found (`scripts/fuzz.sh model_config`, fuzz/crashes/model_config/), kept
//! as tests: whatever config.json says, reading it is a config or an error, never a panic.

use popo_model::ModelConfig;

/// `vocab_size: 10000000000000000000` parsed, then `num_parameters` overflowed (a panic with
/// overflow checks, a wrong count without). A shape whose parameter count overflows is now an
/// error, and counting never overflows.
#[test]
fn a_config_too_large_to_count_is_an_error() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/crashes/model_config");
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect())
        .unwrap_or_default();
    inputs.push(
        br#"{"model_type": "qwen2", "vocab_size": 10000000000000000000, "hidden_size": 8,
            "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 1}"#
            .to_vec(),
    );
    for input in &inputs {
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(input) else {
            continue;
        };
        match ModelConfig::from_hf_json(&json) {
            Ok(cfg) => {
                let _ = cfg.num_parameters();
                assert_eq!(ModelConfig::from_hf_json(&cfg.to_hf_json()).unwrap(), cfg);
            }
            Err(e) => assert!(format!("{e:#}").contains("too large"), "{e:#}"),
        }
    }
}
