//! The fuzz targets of popo: one module per parser, each a `run(&[u8])` that AFL++ calls with
//! every input (the entry points are `fuzz/src/bin/<target>.rs`, built by `scripts/fuzz.sh`). A
//! target fails by panicking: a panic inside popo on user data, or a broken property asserted
//! here. Every target checks more than "no panic":
//!
//! - errors name the file (and line, where there is one);
//! - what parses, printed and parsed again, is the same (a stable round trip);
//! - target-specific properties: the verifier's work stays within its step budget and an
//!   answer that parses matches itself; truncating metrics.jsonl for a resume never fails and
//!   leaves a log that reads back.
//!
//! Files go to a scratch directory per target (`$TMPDIR/popo-fuzz/<target>`), overwritten by
//! every input: run one instance per target at a time. The targets that write files also have a
//! `run_in(dir, data)` with the directory given, which `tests/replay.rs` uses to run every saved
//! input of `fuzz/crashes/<target>/` through the same code as part of `cargo test --workspace`.
//! Each target is behind the feature of its name (all on by default).

#[cfg(any(
    feature = "jsonl",
    feature = "config",
    feature = "safetensors",
    feature = "metrics",
    feature = "chat_template"
))]
fn scratch(target: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("popo-fuzz").join(target);
    std::fs::create_dir_all(&dir).expect("creating the scratch directory");
    dir
}

/// Equal JSON values, numbers within a relative 1e-15: serde_json's default float parser is
/// best-effort, so a float printed and read back may move by one unit in the last place.
#[cfg(feature = "jsonl")]
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || close(x.as_f64(), y.as_f64()),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, x), (ky, y))| kx == ky && same_json(x, y))
        }
        _ => a == b,
    }
}

#[cfg(any(feature = "jsonl", feature = "metrics"))]
fn close(x: Option<f64>, y: Option<f64>) -> bool {
    match (x, y) {
        (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-15 * x.abs().max(y.abs()),
        (x, y) => x == y,
    }
}

/// `popo_verify::verify(gold, response)` with both sides fuzzed (split at the first `\x01`;
/// without one, the input is both), and `extract`.
#[cfg(feature = "verify")]
pub mod verify {
    use popo_verify::{answers_equivalent, extract, normalize, verify_counted, Config};

    pub fn run(data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        let (gold, response) = text.split_once('\u{1}').unwrap_or((&text, &text));
        let cfg = Config::default();
        let (v, spent) = verify_counted(&cfg, gold, response);
        assert!(
            spent <= cfg.limits.steps,
            "spent {spent} steps, over the budget of {}",
            cfg.limits.steps
        );
        assert!(!v.reason.is_empty(), "a verdict always says why");
        let pred = extract(response);
        assert_eq!(v.pred_answer.is_some(), pred.is_some());
        for answer in std::iter::once(gold).chain(pred.as_deref()) {
            answer_properties(answer);
        }
    }

    /// An answer that parses matches itself. (Its printed normal form is for people, not a
    /// serialization: `\\te` prints as `te`, which reads back as `t*e`; RELIABILITY.md.)
    fn answer_properties(answer: &str) {
        if let Some(normal) = normalize(answer) {
            assert!(
                answers_equivalent(answer, answer),
                "{answer:?} (read as {normal:?}) does not match itself"
            );
        }
    }
}

/// The JSONL readers: training data (`popo_model::data::load_jsonl`), `popo verify --input`, and
/// the inputs of `popo score` / `popo generate`.
#[cfg(feature = "jsonl")]
pub mod jsonl {
    use super::{same_json, scratch};
    use popo_model::data::{load_jsonl, JsonlFormat};
    use std::path::Path;

    pub fn run(data: &[u8]) {
        run_in(&scratch("jsonl"), data);
    }

    /// `run` with its files in `dir`.
    pub fn run_in(dir: &Path, data: &[u8]) {
        let path = dir.join("data.jsonl");
        std::fs::write(&path, data).expect("writing the input");
        training_data(&path, &dir.join("again.jsonl"));
        verify_input(data);
        model_inputs(data);
    }

    fn training_data(path: &Path, again: &Path) {
        for skip_invalid in [false, true] {
            let fmt = JsonlFormat {
                skip_invalid,
                ..JsonlFormat::default()
            };
            match load_jsonl(path, &fmt) {
                Ok((examples, stats)) => {
                    assert_eq!(examples.len(), stats.loaded);
                    assert_eq!(stats.loaded + stats.skipped_invalid, stats.lines);
                    let text: String = examples
                        .iter()
                        .map(|e| serde_json::to_string(e).expect("serializing") + "\n")
                        .collect();
                    std::fs::write(again, text).expect("writing");
                    let (back, _) = load_jsonl(again, &JsonlFormat::default())
                        .expect("loaded examples, written out, load again");
                    assert_eq!(back, examples);
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    assert!(msg.contains(&path.display().to_string()), "{msg}");
                }
            }
        }
    }

    fn verify_input(data: &[u8]) {
        for skip_invalid in [false, true] {
            let mut out = Vec::new();
            match popo::input::verify_jsonl(data, &mut out, 1, skip_invalid) {
                Ok((pairs, correct)) => {
                    assert!(correct <= pairs);
                    if !skip_invalid {
                        // The output holds the input fields: verifying it again changes nothing.
                        let mut again = Vec::new();
                        let counts = popo::input::verify_jsonl(&out[..], &mut again, 1, false)
                            .expect("the output of verify --input is valid input");
                        assert_eq!(counts, (pairs, correct));
                        assert_eq!(again, out);
                    }
                }
                Err(e) => {
                    assert!(
                        !skip_invalid || format!("{e:#}").contains("reading"),
                        "{e:#}"
                    );
                    assert!(format!("{e:#}").starts_with("line "), "{e:#}");
                }
            }
        }
    }

    fn model_inputs(data: &[u8]) {
        match popo::input::read_objects(data, "input.jsonl") {
            Ok(objects) => {
                let mut text = String::new();
                for (_, obj) in &objects {
                    for key in ["prompt_ids", "completion_ids"] {
                        if let Err(e) = popo::input::token_ids(obj, key) {
                            assert!(format!("{e}").contains(key), "{e}");
                        }
                    }
                    text.push_str(&serde_json::to_string(obj).expect("serializing"));
                    text.push('\n');
                }
                let back = popo::input::read_objects(text.as_bytes(), "again.jsonl")
                    .expect("objects, written out, read again");
                assert_eq!(back.len(), objects.len());
                for ((_, a), (_, b)) in objects.iter().zip(&back) {
                    let (a, b) = (a.clone().into(), b.clone().into());
                    assert!(same_json(&a, &b), "{a} != {b}");
                }
            }
            Err(e) => assert!(format!("{e:#}").starts_with("input.jsonl:"), "{e:#}"),
        }
    }
}

/// The training config: a TOML file (the input up to the first NUL) and `--set` values (the
/// NUL-separated rest), resolved by `popo_train::config::ConfigBuilder`.
#[cfg(feature = "config")]
pub mod config {
    use super::scratch;
    use popo_train::config::{ConfigBuilder, TrainConfig};
    use std::path::Path;

    pub fn run(data: &[u8]) {
        run_in(&scratch("config"), data);
    }

    /// `run` with its files in `dir`.
    pub fn run_in(dir: &Path, data: &[u8]) {
        let mut parts = data.split(|&b| b == 0);
        let file = dir.join("config.toml");
        std::fs::write(&file, parts.next().unwrap_or_default()).expect("writing the input");
        let mut builder = match ConfigBuilder::new().file(&file) {
            Ok(b) => b,
            Err(e) => {
                assert!(
                    format!("{e:#}").contains(&file.display().to_string()),
                    "{e:#}"
                );
                return;
            }
        };
        for set in parts {
            let set = String::from_utf8_lossy(set);
            builder = match builder.set(&set) {
                Ok(b) => b,
                Err(e) => {
                    assert!(format!("{e:#}").contains("--set"), "{e:#}");
                    return;
                }
            };
        }
        let Ok(cfg) = builder.build() else {
            return;
        };
        // A resolved config is saved as the run's config.toml and read back on --resume.
        let text = cfg.to_toml().expect("a built config serializes");
        let saved = dir.join("resolved.toml");
        std::fs::write(&saved, &text).expect("writing");
        let back = TrainConfig::from_file(&saved).expect("a saved config reads back");
        assert_eq!(back.to_toml().expect("serializes"), text);
    }
}

/// A Hugging Face config.json through `popo_model::ModelConfig`.
#[cfg(feature = "model_config")]
pub mod model_config {
    use popo_model::ModelConfig;

    pub fn run(data: &[u8]) {
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
            return;
        };
        let Ok(cfg) = ModelConfig::from_hf_json(&json) else {
            return;
        };
        // An accepted config can be asked its shape without overflowing.
        let _ = cfg.head_dim();
        let _ = cfg.num_parameters();
        let back =
            ModelConfig::from_hf_json(&cfg.to_hf_json()).expect("a written config reads back");
        assert_eq!(back, cfg);
    }
}

/// Fuzzed bytes as `model.safetensors` next to a valid tiny config.json, through the loader
/// (`popo_model::load_pretrained`), and as a checkpoint's optimizer state.
#[cfg(feature = "safetensors")]
pub mod safetensors {
    use super::scratch;
    use candle_core::{DType, Device};
    use std::path::Path;

    /// The config.json of the built-in micro model (`popo train` on the tiny test task).
    const CONFIG: &str = include_str!("../../../fuzz/fixtures/run/config.json");

    pub fn run(data: &[u8]) {
        run_in(&scratch("safetensors"), data);
    }

    /// `run` with its files in `dir`.
    pub fn run_in(dir: &Path, data: &[u8]) {
        std::fs::write(dir.join("config.json"), CONFIG).expect("writing config.json");
        let weights = dir.join("model.safetensors");
        std::fs::write(&weights, data).expect("writing the input");
        if let Err(e) = popo_model::load_pretrained(dir, &Device::Cpu, DType::F32) {
            let msg = format!("{e:#}");
            assert!(
                msg.contains(&dir.display().to_string()) || msg.contains("tensor"),
                "{msg}"
            );
        }
        if let Err(e) = popo_train::checkpoint::load_tensors(&weights, &Device::Cpu) {
            let msg = format!("{e:#}");
            assert!(msg.contains(&weights.display().to_string()), "{msg}");
        }
    }
}

/// `metrics.jsonl` as read on resume: `read_metrics`, and `truncate_after_step` (the first
/// input byte is the step resumed from).
#[cfg(feature = "metrics")]
pub mod metrics {
    use super::{close, scratch};
    use popo_train::metrics::{
        read_metrics, truncate_after_step, MetricRecord, RunLogger, StepMetrics,
    };

    pub fn run(data: &[u8]) {
        run_in(&scratch("metrics"), data);
    }

    /// `run` with its files in `dir`.
    pub fn run_in(dir: &std::path::Path, data: &[u8]) {
        let path = dir.join("metrics.jsonl");
        let last_step = u64::from(data.first().copied().unwrap_or(0) % 16);
        std::fs::write(&path, data).expect("writing the input");
        let before = match read_metrics(&path) {
            Ok(records) => {
                round_trip(&records, &dir.join("again"));
                Some(records)
            }
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(msg.contains(&format!("{}:", path.display())), "{msg}");
                None
            }
        };
        // A resume must go on whatever a crash left in the log: truncation never fails, and
        // what it keeps reads back.
        truncate_after_step(&path, last_step).expect("truncating metrics.jsonl for a resume");
        let after = read_metrics(&path).expect("a truncated log reads back");
        assert!(after.iter().all(|r| r.step <= last_step));
        if let Some(before) = before {
            let kept: Vec<&MetricRecord> = before.iter().filter(|r| r.step <= last_step).collect();
            assert_eq!(after.iter().collect::<Vec<_>>(), kept);
        }
    }

    /// Records written by the run logger read back the same.
    fn round_trip(records: &[MetricRecord], again: &std::path::Path) {
        let _ = std::fs::remove_dir_all(again);
        let mut log = RunLogger::create(again, false).expect("creating a run log");
        for r in records {
            let mut m = StepMetrics::new(r.step);
            for (name, v) in &r.values {
                m.set(name, v.unwrap_or(f64::NAN));
            }
            log.log(&m).expect("a metric record is written");
        }
        drop(log);
        let back = read_metrics(again).expect("written metrics read back");
        assert_eq!(back.len(), records.len());
        for (a, b) in records.iter().zip(&back) {
            assert_eq!(a.step, b.step);
            assert!(a.values.keys().eq(b.values.keys()));
            for (x, y) in a.values.values().zip(b.values.values()) {
                // Infinities are written as null, like NaN.
                let x = x.filter(|x| x.is_finite());
                assert!(close(x, *y), "{x:?} != {y:?}");
            }
        }
    }
}

/// The chat-template renderer with fuzzed templates: an input starting with `{` is a
/// tokenizer_config.json next to a fixed character tokenizer.json (through
/// `Tokenizer::from_dir`), anything else is the template text itself.
#[cfg(feature = "chat_template")]
pub mod chat_template {
    use super::scratch;
    use popo_model::tokenizer::render_chat_template;
    use popo_model::{ChatMessage, Tokenizer};

    const TOKENIZER: &str = include_str!("../../../fuzz/fixtures/run/tokenizer.json");

    pub fn run(data: &[u8]) {
        run_in(&scratch("chat_template"), data);
    }

    /// `run` with its files (for an input that is a tokenizer_config.json) in `dir`.
    pub fn run_in(dir: &std::path::Path, data: &[u8]) {
        let messages = [
            ChatMessage::new("system", "Reason step by step."),
            ChatMessage::new("user", "What is 1+1?"),
            ChatMessage::new("assistant", "\\boxed{2}"),
        ];
        if data.first() == Some(&b'{') {
            std::fs::write(dir.join("tokenizer.json"), TOKENIZER).expect("writing");
            std::fs::write(dir.join("tokenizer_config.json"), data).expect("writing the input");
            let Ok(tok) = Tokenizer::from_dir(dir) else {
                return;
            };
            if tok.chat_template().is_some() {
                for add_generation_prompt in [false, true] {
                    let _ = tok.apply_chat_template(&messages, add_generation_prompt);
                }
            }
        } else {
            let src = String::from_utf8_lossy(data);
            for add_generation_prompt in [false, true] {
                let _ = render_chat_template(
                    &src,
                    &messages,
                    add_generation_prompt,
                    Some("<s>"),
                    Some("</s>"),
                    None,
                );
            }
        }
    }
}
