//! Inputs the fuzzer found (`scripts/fuzz.sh model_config`, fuzz/crashes/model_config/), kept
//! as tests: whatever config.json says, reading it is a config or an error, never a panic.

use popo_model::ModelConfig;

/// `vocab_size: 10000000000000000000` parsed, then `num_parameters` overflowed (a panic with
/// overflow checks, a wrong count without). A shape whose parameter count overflows is now an
/// error, and counting never overflows.
#[test]
fn a_config_too_large_to_count_is_an_error() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/crashes/model_config"
    );
    // Also replayed through the fuzz target itself by popo-fuzz-harness/tests/replay.rs.
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!inputs.is_empty(), "the fuzzer's inputs are in {dir}");
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

/// A chat template (from a model's tokenizer_config.json) with nested loops ran for hours: every
/// render now has an instruction budget (`TEMPLATE_FUEL`).
#[test]
fn a_template_that_loops_for_ever_runs_out_of_fuel() {
    use popo_model::tokenizer::render_chat_template;
    use popo_model::ChatMessage;
    let messages = [ChatMessage::new("user", "What is 1+1?")];
    let src = "{% for i in range(10000) %}{% for j in range(10000) %}{% for k in range(10000) %}\
               {% endfor %}{% endfor %}{% endfor %}";
    let start = std::time::Instant::now();
    let err = render_chat_template(src, &messages, true, None, None, None).unwrap_err();
    assert!(format!("{err:#}").contains("fuel"), "{err:#}");
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    // A real template is far from the limit.
    let qwen = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n\
                {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let long: Vec<ChatMessage> = (0..500)
        .map(|i| ChatMessage::new("user", &format!("message {i}")))
        .collect();
    assert!(render_chat_template(qwen, &long, true, None, None, None).is_ok());
}

/// A template whose error minijinja 2.24 cannot point at: `{% for in messages %}` (no loop
/// variable) fails to render, and printing the error with its source excerpt (`{e:#}`)
/// subtracted reversed span columns, a panic with overflow checks. Errors are now printed
/// without the excerpt. The fuzzer's inputs: a tokenizer_config.json (starting with `{`) next to
/// the fixture's tokenizer.json, or a raw template, as the `chat_template` target reads them.
#[test]
fn a_template_error_without_a_clean_span_is_an_error() {
    use popo_model::tokenizer::render_chat_template;
    use popo_model::{ChatMessage, Tokenizer};
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz");
    let messages = [
        ChatMessage::new("system", "Reason step by step."),
        ChatMessage::new("user", "What is 1+1?"),
    ];
    let inputs: Vec<Vec<u8>> = std::fs::read_dir(format!("{root}/crashes/chat_template"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(inputs.len() >= 2);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        format!("{root}/fixtures/run/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    for input in &inputs {
        if input.first() == Some(&b'{') {
            std::fs::write(dir.path().join("tokenizer_config.json"), input).unwrap();
            if let Ok(tok) = Tokenizer::from_dir(dir.path()) {
                for add_generation_prompt in [false, true] {
                    let _ = tok.apply_chat_template(&messages, add_generation_prompt);
                }
            }
        } else {
            let src = String::from_utf8_lossy(input);
            if let Err(err) = render_chat_template(&src, &messages, true, None, None, None) {
                let msg = format!("{err:#}");
                assert!(msg.starts_with("chat template "), "{msg}");
                assert!(msg.contains("(in <string>:"), "{msg}");
            }
        }
    }
    for src in [
        "{% for in messages %}{% endfor %}",
        "{% for  in messages %}x{% endfor %}",
    ] {
        let err = render_chat_template(src, &messages, true, None, None, None).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.starts_with("chat template failed to render: "), "{msg}");
        assert!(msg.contains("(in <string>:1)"), "{msg}");
    }
}

/// A namespace that held itself (`{% set ns.n = [ns] %}`, found as `ns.n = ns, 9 / 1`) made
/// printing it recurse until the stack overflowed, which aborts the process. popo refuses, before
/// rendering, a template that may assign a namespace-holding value to a namespace attribute
/// (`tokenizer/namespaces.rs`); ordinary namespace use is unchanged.
#[test]
fn a_namespace_cannot_hold_itself() {
    use popo_model::tokenizer::render_chat_template;
    use popo_model::ChatMessage;
    let messages = [ChatMessage::new("user", "What is 1+1?")];
    let render = |src: &str| render_chat_template(src, &messages, true, None, None, None);
    let ns = "{% set ns = namespace(n=1) %}";
    for cycle in [
        "{% set ns.n = ns %}{{ ns }}",
        "{% set ns.n = [ns] %}{{ ns }}",
        "{% set ns.n = (ns, 9 / 1) %}{{ ns.n }}",
        "{% set ns.n = {'a': [1, ns]} %}{{ ns | tojson }}",
        "{% set other = namespace(inner=[ns]) %}{% set ns.n = other %}{{ ns.n | string }}",
        "{% set a = namespace() %}{% set ns.a = a %}{% set a.b = [ns] %}{{ ns == a }}",
        "{% for m in messages %}{% set ns.n = ns, 9 / 1 %}{% endfor %}{{ ns.n | sort }}",
    ] {
        let err = render(&format!("{ns}{cycle}")).unwrap_err();
        assert!(
            format!("{err:#}").contains("may store a namespace inside a namespace"),
            "{cycle}: {err:#}"
        );
    }
    let ok = render(
        "{% set ns = namespace(n=0, seen=[], last=none) %}{% set other = namespace(inner=ns, k=5) %}\
         {% for m in messages %}{% set ns.n = ns.n + 1 %}{% set ns.seen = ns.seen + [m] %}\
         {% set ns.last = m %}{% endfor %}{{ ns.n }} {{ ns.seen | length }} {{ ns.last.role }}\
         {% set ns.copy = other.k %} {{ ns.copy }} {{ other.inner.n }}",
    )
    .unwrap();
    assert_eq!(ok, "1 1 user 5 1");
}
