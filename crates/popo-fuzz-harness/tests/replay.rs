//! Every input the fuzzers saved (`fuzz/crashes/<target>/`: the crashes and hangs that
//! `scripts/fuzz.sh` copied there, each fixed since) goes through the same target code that
//! AFL++ runs (`popo_fuzz_harness`), with the fuzzer's time limit, so that a regression fails
//! `cargo test --workspace`.
//!
//! `SAVED` pins the files, name and size: a deleted, emptied or truncated input fails
//! `saved_inputs_are_all_there`, and so does a missing folder, or a new input until it is listed
//! (list it once what it found is fixed, with the test that keeps it fixed).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The saved inputs of each target: file name and size in bytes.
const SAVED: &[(&str, &[(&str, u64)])] = &[
    (
        "chat_template",
        &[
            ("crashes-1fd996f3476e62c6", 347),
            ("crashes-50812452e798325c", 259),
            ("crashes-81022e1343dbe9b3", 237),
            ("crashes-adfa5508b4216f85", 297),
        ],
    ),
    (
        "config",
        &[
            ("crashes-2b67bf2ea46fce05", 1550),
            ("crashes-9ba6122373d7e33f", 11437),
            ("crashes-a73aa8d775002b70", 1574),
            ("crashes-bde6e7254575bab0", 1185),
            ("crashes-fc8ba78fe7e215f8", 674),
        ],
    ),
    (
        "jsonl",
        &[
            ("hangs-9155d0c30882181b", 219),
            ("hangs-e575a1582ddda12e", 214),
            ("hangs-e70942b158751ca9", 226),
        ],
    ),
    ("model_config", &[("crashes-e557e6d50c07f2ff", 541)]),
    (
        "verify",
        &[
            ("hangs-17bf17a4a668f3e1", 139),
            ("hangs-3628502af4007104", 141),
            ("hangs-3d68085f472743db", 139),
            ("hangs-414059dddc6c8dff", 79),
            ("hangs-437567c27beb641f", 57),
            ("hangs-676619f8e1db15e1", 135),
            ("hangs-8b66267cb73799e7", 114),
            ("hangs-dcfd42393fe3ce37", 87),
            ("slow-sqrt-1", 553),
            ("slow-sqrt-2", 553),
        ],
    ),
];

/// The time one input may take: `scripts/fuzz.sh`'s default AFL++ timeout, beyond which an input
/// is saved as a hang. The fixed inputs take milliseconds here.
const TIME_LIMIT: Duration = Duration::from_secs(2);

fn crashes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/crashes")
}

/// The names of the entries of `dir`, sorted; a missing directory fails the test.
fn names(dir: &Path, what: &str) -> Vec<String> {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e} ({what} must be there)", dir.display()));
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The files of `fuzz/crashes/<target>/` with their sizes, sorted by name.
fn saved_files(target: &str) -> Vec<(String, u64)> {
    let dir = crashes().join(target);
    names(
        &dir,
        &format!("the saved inputs of the `{target}` fuzz target"),
    )
    .into_iter()
    .map(|name| {
        let size = std::fs::metadata(dir.join(&name)).unwrap().len();
        (name, size)
    })
    .collect()
}

#[test]
fn saved_inputs_are_all_there() {
    let mut targets: Vec<&str> = SAVED.iter().map(|(t, _)| *t).collect();
    targets.sort();
    assert_eq!(
        names(&crashes(), "the fuzzers' saved inputs"),
        targets,
        "the folders of fuzz/crashes/ are not the targets listed in SAVED"
    );
    let mut replayed = REPLAYED.to_vec();
    replayed.sort();
    assert_eq!(
        replayed, targets,
        "every folder of SAVED needs a replay test"
    );
    let mut problems = Vec::new();
    for (target, want) in SAVED {
        let found = saved_files(target);
        for (name, size) in *want {
            match found.iter().find(|(n, _)| n == name) {
                None => problems.push(format!("fuzz/crashes/{target}/{name} was deleted")),
                Some((_, s)) if s != size => problems.push(format!(
                    "fuzz/crashes/{target}/{name} has {s} bytes, not the {size} saved"
                )),
                Some(_) => {}
            }
        }
        for (name, size) in &found {
            if !want.iter().any(|(n, _)| n == name) {
                problems.push(format!(
                    "fuzz/crashes/{target}/{name} ({size} bytes) is not listed in SAVED"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Runs every file of `fuzz/crashes/<target>/` through `run` (each in a fresh scratch
/// directory), and fails with the list of inputs that panic or take longer than `TIME_LIMIT`.
fn replay(target: &str, run: fn(&Path, &[u8])) {
    let files = saved_files(target);
    assert!(!files.is_empty(), "fuzz/crashes/{target}/ is empty");
    let mut failures = Vec::new();
    for (name, _) in &files {
        let data = std::fs::read(crashes().join(target).join(name)).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| run(scratch.path(), &data)));
        let took = start.elapsed();
        match result {
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(not a string)");
                failures.push(format!("{name}: panicked: {msg}"));
            }
            Ok(()) if took > TIME_LIMIT => {
                failures.push(format!("{name}: took {took:?}, over {TIME_LIMIT:?}"));
            }
            Ok(()) => {}
        }
    }
    println!("{target}: {} saved inputs replayed", files.len());
    assert!(
        failures.is_empty(),
        "{} of the {} inputs of fuzz/crashes/{target}/ fail through the `{target}` target:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// One test per folder of `fuzz/crashes/`, and the list of them (`REPLAYED`).
macro_rules! replay {
    ($($target:ident: $run:expr),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                replay(stringify!($target), $run);
            }
        )*
        const REPLAYED: &[&str] = &[$(stringify!($target)),*];
    };
}

replay!(
    verify: |_, data| popo_fuzz_harness::verify::run(data),
    jsonl: popo_fuzz_harness::jsonl::run_in,
    config: popo_fuzz_harness::config::run_in,
    model_config: |_, data| popo_fuzz_harness::model_config::run(data),
    chat_template: popo_fuzz_harness::chat_template::run_in,
);
