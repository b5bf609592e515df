//! Benchmark data as published: a Hugging Face hub cache laid out here by hand (JSONL and
//! parquet files, the parquet written with the parquet crate), found, converted into popo's copy
//! and resolved by `popo eval`'s benchmark lookup; the errors for everything that can be wrong
//! with it. Nothing here touches the network: every `Places` has `download: false`.

use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use popo_eval::bench::resolve_bench_in;
use popo_eval::datasets::{find, source, Places};
use popo_model::data::{load_jsonl, JsonlFormat};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Writes `file` of dataset `repo` into the hub cache `hub` as `hf download` lays it out:
/// `datasets--org--name/refs/main` naming a revision, the file under `snapshots/<rev>/`.
fn publish(hub: &Path, repo: &str, file: &str, bytes: &[u8]) -> PathBuf {
    let dir = hub.join(format!("datasets--{}", repo.replace('/', "--")));
    let snap = dir.join("snapshots/0123abcd");
    let path = snap.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    std::fs::create_dir_all(dir.join("refs")).unwrap();
    std::fs::write(dir.join("refs/main"), "0123abcd\n").unwrap();
    path
}

/// One parquet column's values.
enum Col {
    /// An optional UTF-8 column (`None` is a null).
    Text(Vec<Option<&'static str>>),
    Long(Vec<i64>),
    Double(Vec<f64>),
    Bool(Vec<bool>),
}

/// A one-row-group parquet file with `schema` (a parquet message type) and `cols` in its order.
fn parquet_bytes(schema: &str, cols: Vec<Col>, compression: Compression) -> Vec<u8> {
    let schema = Arc::new(parse_message_type(schema).unwrap());
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(compression)
            .build(),
    );
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut out, schema, props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    for col in cols {
        let mut w = group.next_column().unwrap().unwrap();
        match col {
            Col::Text(values) => {
                let present: Vec<ByteArray> = values
                    .iter()
                    .flatten()
                    .map(|s| ByteArray::from(*s))
                    .collect();
                let defs: Vec<i16> = values.iter().map(|v| i16::from(v.is_some())).collect();
                w.typed::<ByteArrayType>()
                    .write_batch(&present, Some(&defs), None)
                    .unwrap();
            }
            Col::Long(v) => {
                w.typed::<Int64Type>().write_batch(&v, None, None).unwrap();
            }
            Col::Double(v) => {
                w.typed::<DoubleType>().write_batch(&v, None, None).unwrap();
            }
            Col::Bool(v) => {
                w.typed::<BoolType>().write_batch(&v, None, None).unwrap();
            }
        }
        w.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
    out
}

/// GSM8K as openai/gsm8k publishes it: `question`, and `answer` a solution ending `#### N`.
fn gsm8k_parquet() -> Vec<u8> {
    parquet_bytes(
        "message schema { OPTIONAL BYTE_ARRAY question (UTF8);
                          OPTIONAL BYTE_ARRAY answer (UTF8); }",
        vec![
            Col::Text(vec![
                Some("Janet has 3 eggs and buys 15. How many?"),
                Some("2+2?"),
            ]),
            Col::Text(vec![
                Some("3 + 15 = <<3+15=18>>18\n#### 18"),
                Some("Add them.\n#### 1,004 "),
            ]),
        ],
        Compression::SNAPPY,
    )
}

/// Places under `root` with nothing downloaded and no download.
fn places(root: &Path) -> Places {
    Places {
        data_dir: None,
        converted: Some(root.join("popo/data")),
        hf_cache: Some(root.join("hub")),
        download: false,
    }
}

fn pairs(path: &Path) -> Vec<(String, String)> {
    let (ex, _) = load_jsonl(path, &JsonlFormat::default()).unwrap();
    ex.into_iter().map(|e| (e.problem, e.answer)).collect()
}

fn err(name: &str, places: &Places) -> String {
    format!("{:#}", find(name, places).unwrap_err())
}

/// A hub cache with a JSONL and a parquet publication of each kind popo reads: plain text
/// fields, GSM8K's `####` solutions (snappy), an int64 answer (zstd), a float answer (gzip) and
/// a list answer.
fn publish_one_of_each(hub: &Path) {
    publish(
        hub,
        "HuggingFaceH4/MATH-500",
        "test.jsonl",
        b"{\"problem\": \"1+1?\", \"answer\": \"2\", \"level\": 1}\n\n\
          {\"problem\": \"2+2?\", \"answer\": \"4\"}\n",
    );
    publish(
        hub,
        "openai/gsm8k",
        "main/test-00000-of-00001.parquet",
        &gsm8k_parquet(),
    );
    // MathArena's AIME sets store the answer as int64; zstd, as polars writes.
    let aime = parquet_bytes(
        "message schema { REQUIRED INT64 problem_idx; OPTIONAL BYTE_ARRAY problem (UTF8);
                          REQUIRED INT64 answer; }",
        vec![
            Col::Long(vec![1, 2]),
            Col::Text(vec![Some("Find b."), Some("Find c.")]),
            Col::Long(vec![70, 588]),
        ],
        Compression::ZSTD(ZstdLevel::default()),
    );
    publish(
        hub,
        "MathArena/aime_2025",
        "data/train-00000-of-00001.parquet",
        &aime,
    );
    // A float answer (Qwen's AMC copy writes 27.0), gzip-compressed.
    let amc = parquet_bytes(
        "message schema { OPTIONAL BYTE_ARRAY question (UTF8); REQUIRED DOUBLE answer; }",
        vec![Col::Text(vec![Some("How far?")]), Col::Double(vec![27.0])],
        Compression::GZIP(GzipLevel::default()),
    );
    publish(hub, "math-ai/amc23", "test-00000-of-00001.parquet", &amc);
    // OlympiadBench's `final_answer` is a list.
    publish(
        hub,
        "math-ai/olympiadbench",
        "test.jsonl",
        b"{\"question\": \"Find all n.\", \"final_answer\": [\"$3$\"]}\n\
          {\"question\": \"Both?\", \"final_answer\": [\"1\", \"2\"]}\n",
    );
}

#[test]
fn published_jsonl_and_parquet_convert_once_and_resolve_for_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    let p = places(tmp.path());
    publish_one_of_each(&hub);
    let converted = tmp.path().join("popo/data");
    let expect = [
        ("math500", vec![("1+1?", "2"), ("2+2?", "4")]),
        (
            "gsm8k_test",
            vec![
                ("Janet has 3 eggs and buys 15. How many?", "18"),
                ("2+2?", "1,004"),
            ],
        ),
        ("aime25", vec![("Find b.", "70"), ("Find c.", "588")]),
        ("amc23", vec![("How far?", "27.0")]),
        (
            "olympiadbench",
            vec![("Find all n.", "$3$"), ("Both?", "1, 2")],
        ),
    ];
    for (name, rows) in &expect {
        let got = find(name, &p).unwrap();
        assert_eq!(got, converted.join(format!("{name}.jsonl")));
        let want: Vec<(String, String)> = rows
            .iter()
            .map(|(q, a)| (q.to_string(), a.to_string()))
            .collect();
        assert_eq!(pairs(&got), want, "{name}");
        // Each line has an id of its own.
        let first: serde_json::Value = serde_json::from_str(
            std::fs::read_to_string(&got)
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(first["id"], format!("{name}-0"));
        // `popo eval --bench NAME` resolves to the same copy.
        assert_eq!(
            resolve_bench_in(name, &p).unwrap(),
            (name.to_string(), got.clone())
        );
    }
    // No temporary file is left beside the copies.
    let mut left: Vec<String> = std::fs::read_dir(&converted)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "aime25.jsonl",
            "amc23.jsonl",
            "gsm8k_test.jsonl",
            "math500.jsonl",
            "olympiadbench.jsonl"
        ]
    );
    // Found again without the hub cache: the copy is what is read from now on.
    std::fs::remove_dir_all(&hub).unwrap();
    assert_eq!(
        find("gsm8k_test", &p).unwrap(),
        converted.join("gsm8k_test.jsonl")
    );
}

#[test]
fn the_data_directory_comes_before_the_copy_and_the_hub_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let mine = tmp.path().join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(
        mine.join("gsm8k_test.jsonl"),
        "{\"problem\": \"p\", \"answer\": \"a\"}\n",
    )
    .unwrap();
    publish(
        &tmp.path().join("hub"),
        "openai/gsm8k",
        "main/test-00000-of-00001.parquet",
        &gsm8k_parquet(),
    );
    let p = places(tmp.path());
    let copy = find("gsm8k_test", &p).unwrap();
    let with_dir = Places {
        data_dir: Some(mine.clone()),
        ..p.clone()
    };
    assert_eq!(
        find("gsm8k_test", &with_dir).unwrap(),
        mine.join("gsm8k_test.jsonl")
    );
    assert_eq!(
        resolve_bench_in("gsm8k_test", &with_dir).unwrap().1,
        mine.join("gsm8k_test.jsonl")
    );
    // Without it, popo's copy comes before the hub cache.
    assert_eq!(find("gsm8k_test", &p).unwrap(), copy);
}

#[test]
fn a_missing_download_prints_the_command_that_fetches_it() {
    let tmp = tempfile::tempdir().unwrap();
    let p = places(tmp.path());
    for name in popo_eval::bench::KNOWN_BENCHMARKS {
        let src = source(name).unwrap_or_else(|| panic!("{name} has no public source"));
        let msg = err(name, &p);
        let cmd = format!("hf download --repo-type dataset {} {}", src.repo, src.file);
        assert!(msg.contains(&cmd), "{msg}");
        let old = format!(
            "huggingface-cli download --repo-type dataset {} {}",
            src.repo, src.file
        );
        assert!(msg.contains(&old), "{msg}");
        assert!(
            msg.contains(&format!("{name}.jsonl")) && msg.contains("POPO_DATA"),
            "{msg}"
        );
        assert!(
            msg.contains(&tmp.path().join("hub").display().to_string()),
            "{msg}"
        );
        if !cfg!(feature = "hub") {
            assert!(msg.contains("--features hub"), "{msg}");
        }
    }
    // The repository is there, the file is not (another file of it was fetched).
    publish(
        &tmp.path().join("hub"),
        "openai/gsm8k",
        "main/train-00000-of-00001.parquet",
        b"x",
    );
    assert!(err("gsm8k_test", &p).contains("hf download --repo-type dataset openai/gsm8k"));
    // No hub cache at all.
    let none = Places {
        hf_cache: None,
        ..p.clone()
    };
    assert!(err("math500", &none).contains("HF_HUB_CACHE"));
    // A name with no source and no file.
    assert!(err("mine", &p).contains("no public source"));
    let msg = err(
        "mine",
        &Places {
            data_dir: Some(tmp.path().into()),
            ..p
        },
    );
    assert!(
        msg.contains("mine.jsonl") && msg.contains("does not exist"),
        "{msg}"
    );
}

/// Each broken parquet publication fails with the file, the row and the field, and leaves no
/// copy behind (a half copy would be read as the benchmark next time).
#[test]
fn broken_parquet_publications_name_file_row_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    let p = places(tmp.path());
    let gsm = "main/test-00000-of-00001.parquet";
    let text2 = |a: Vec<Option<&'static str>>, b: Vec<Option<&'static str>>| {
        parquet_bytes(
            "message schema { OPTIONAL BYTE_ARRAY question (UTF8);
                          OPTIONAL BYTE_ARRAY answer (UTF8); }",
            vec![Col::Text(a), Col::Text(b)],
            Compression::UNCOMPRESSED,
        )
    };
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        // The answer column is missing: its name and the columns there are.
        (
            "missing column",
            parquet_bytes(
                "message schema { OPTIONAL BYTE_ARRAY question (UTF8);
                                  OPTIONAL BYTE_ARRAY solution (UTF8); }",
                vec![Col::Text(vec![Some("q")]), Col::Text(vec![Some("#### 1")])],
                Compression::SNAPPY,
            ),
            &["no column `answer`", "`question`, `solution`"],
        ),
        // A boolean where the answer should be.
        (
            "wrong type",
            parquet_bytes(
                "message schema { OPTIONAL BYTE_ARRAY question (UTF8);
                                  REQUIRED BOOLEAN answer; }",
                vec![Col::Text(vec![Some("q")]), Col::Bool(vec![true])],
                Compression::SNAPPY,
            ),
            &["row 1", "field `answer` must be text"],
        ),
        (
            "null",
            text2(vec![Some("q"), Some("r")], vec![Some("#### 1"), None]),
            &["row 2", "field `answer` is null"],
        ),
        (
            "no ####",
            text2(vec![Some("q")], vec![Some("the answer is 5")]),
            &["row 1", "no final answer after `####`"],
        ),
        (
            "empty problem",
            text2(vec![Some("  ")], vec![Some("#### 5")]),
            &["row 1", "field `question` is empty"],
        ),
        ("no rows", text2(vec![], vec![]), &["no problems"]),
        (
            "not parquet",
            b"{\"question\": \"q\"}\n".to_vec(),
            &["not a parquet file"],
        ),
        (
            "truncated",
            gsm8k_parquet()[..gsm8k_parquet().len() / 2].to_vec(),
            &["parquet"],
        ),
    ];
    for (what, bytes, want) in cases {
        let path = publish(&hub, "openai/gsm8k", gsm, &bytes);
        let msg = err("gsm8k_test", &p);
        assert!(msg.contains(&path.display().to_string()), "{what}: {msg}");
        for w in want {
            assert!(msg.contains(w), "{what}: {msg}");
        }
    }
    assert_nothing_converted(tmp.path());
}

/// Each broken JSONL publication fails with the file, the line and the field.
#[test]
fn broken_jsonl_publications_name_file_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    let p = places(tmp.path());
    let mat = "test.jsonl";
    let jsonl_cases: [(&str, &str, &[&str]); 4] = [
        (
            "missing field",
            "{\"problem\": \"p\", \"answer\": \"1\"}\n{\"problem\": \"q\"}\n",
            &[":2:", "missing field `answer`"],
        ),
        (
            "wrong type",
            "{\"problem\": \"p\", \"answer\": {\"x\": 1}}\n",
            &[":1:", "field `answer` must be text", "an object"],
        ),
        (
            "not JSON",
            "{\"problem\": \"p\",\n",
            &[":1:", "invalid JSON"],
        ),
        (
            "not an object",
            "[1, 2]\n",
            &[":1:", "expected a JSON object"],
        ),
    ];
    for (what, text, want) in jsonl_cases {
        let path = publish(&hub, "HuggingFaceH4/MATH-500", mat, text.as_bytes());
        let msg = err("math500", &p);
        assert!(msg.contains(&path.display().to_string()), "{what}: {msg}");
        for w in want {
            assert!(msg.contains(w), "{what}: {msg}");
        }
    }
    assert_nothing_converted(tmp.path());
}

/// No copy and no temporary file under `root`'s popo cache.
fn assert_nothing_converted(root: &Path) {
    let converted = root.join("popo/data");
    let left = std::fs::read_dir(&converted).map_or(0, |d| d.count());
    assert_eq!(
        left,
        0,
        "a failed conversion left files in {}",
        converted.display()
    );
}

#[test]
fn places_from_nothing_never_download() {
    assert!(!Places::default().download);
}

/// A download cut short or damaged anywhere is an error or, where the damage falls inside a
/// text value, a converted copy; never a panic (the reader's panics become errors).
#[test]
fn damaged_parquet_files_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let p = places(tmp.path());
    let good = gsm8k_parquet();
    let mut failed = 0;
    for i in (0..good.len()).step_by(3) {
        let mut bytes = good.clone();
        bytes[i] ^= 0x5a;
        let path = publish(
            &tmp.path().join("hub"),
            "openai/gsm8k",
            "main/test-00000-of-00001.parquet",
            &bytes,
        );
        let _ = std::fs::remove_dir_all(tmp.path().join("popo"));
        if let Err(e) = find("gsm8k_test", &p) {
            let msg = format!("{e:#}");
            assert!(msg.contains(&path.display().to_string()), "byte {i}: {msg}");
            failed += 1;
        }
    }
    assert!(failed > 0);
}
