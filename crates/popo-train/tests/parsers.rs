//! Property tests of everything that reads user data: datasets, configs, metrics files and the
//! task's work checker. Whatever the bytes, the answer is a value or an error that names where
//! the problem is; never a panic.

use popo_train::config::ConfigBuilder;
use popo_train::data::{load_jsonl, JsonlFormat};
use popo_train::metrics::read_metrics;
use popo_train::reward::work_is_valid;
use proptest::prelude::*;

/// Lines that look like JSONL datasets often do: valid rows, near misses and noise.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        ("[a-z0-9+*/ ]{1,12}", "-?[0-9]{1,4}")
            .prop_map(|(p, a)| format!(r#"{{"problem": "{p}", "answer": "{a}"}}"#)),
        "-?[0-9]{1,6}".prop_map(|a| format!(r#"{{"problem": "x", "answer": {a}}}"#)),
        Just(r#"{"problem": "x"}"#.to_string()),
        Just(r#"{"problem": "", "answer": "1"}"#.to_string()),
        Just(r#"{"problem": ["x"], "answer": "1"}"#.to_string()),
        Just("[1, 2]".to_string()),
        "\\PC{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn jsonl_loading_is_a_value_or_an_error_naming_file_and_line(
        lines in prop::collection::vec(line(), 0..12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.jsonl");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let strict = JsonlFormat::default();
        match load_jsonl(&path, &strict) {
            Ok((ex, stats)) => {
                prop_assert_eq!(ex.len(), stats.loaded);
                prop_assert_eq!(stats.skipped_invalid, 0);
            }
            Err(e) => {
                let msg = format!("{e:#}");
                let named = format!("{}:", path.display());
                prop_assert!(msg.contains(&named), "{}", msg);
            }
        }
        let lenient = JsonlFormat { skip_invalid: true, ..Default::default() };
        let (ex, stats) = load_jsonl(&path, &lenient).unwrap();
        prop_assert_eq!(ex.len() + stats.skipped_invalid, stats.lines);
        prop_assert!(ex.iter().all(|e| !e.problem.trim().is_empty()));
    }

    #[test]
    fn config_files_parse_or_name_the_problem(text in "\\PC{0,80}", key in "[a-z_.]{1,20}") {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, &text).unwrap();
        if let Err(e) = ConfigBuilder::new().file(&path).and_then(|b| b.build()) {
            prop_assert!(format!("{e:#}").contains("c.toml"), "{:#}", e);
        }
        // Any --set key: accepted only if it exists; an error names it otherwise.
        let r = ConfigBuilder::new()
            .set(&format!("{key}=1"))
            .and_then(|b| b.build());
        if let Err(e) = r {
            let msg = format!("{e:#}");
            prop_assert!(msg.contains(key.trim()) || msg.contains("invalid"), "{}", msg);
        }
    }

    #[test]
    fn metrics_files_read_or_name_the_line(lines in prop::collection::vec(
        prop_oneof![
            "[0-9]{1,3}".prop_map(|s| format!(r#"{{"step": {s}, "train/reward_mean": 0.5}}"#)),
            Just(r#"{"step": 1, "x": null}"#.to_string()),
            "\\PC{0,30}",
        ],
        0..8,
    )) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("metrics.jsonl"), lines.join("\n")).unwrap();
        if let Err(e) = read_metrics(dir.path()) {
            prop_assert!(format!("{e:#}").contains("metrics.jsonl:"), "{:#}", e);
        }
    }

    #[test]
    fn the_work_checker_never_panics(s in "\\PC{0,60}", a in -99i64..99, b in 0i64..9) {
        let _ = work_is_valid(&s);
        // A true one-step answer passes; the same with the result off by one does not.
        let good = format!(" {a}+{b}={}. \\boxed{{{}}}", a + b, a + b);
        let bad = format!(" {a}+{b}={}. \\boxed{{{}}}", a + b + 1, a + b + 1);
        prop_assert!(work_is_valid(&good), "{}", good);
        prop_assert!(!work_is_valid(&bad), "{}", bad);
    }
}
