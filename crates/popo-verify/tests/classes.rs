//! One table per class of real-response behaviour (issue 12), in `classes/*.txt`: every line is
//! `gold @@ response @@ Y|N`, the response given to `verify` as written (`⏎` stands for a line
//! break). Each class keeps at least 15 cases, with both verdicts.

use popo_verify::verify;

const MIN_CASES: usize = 15;

struct Outcome {
    cases: usize,
    yes: usize,
    failures: Vec<String>,
}

fn run(table: &str) -> Outcome {
    let mut out = Outcome {
        cases: 0,
        yes: 0,
        failures: Vec::new(),
    };
    for (i, line) in table.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split(" @@ ").collect();
        assert_eq!(
            parts.len(),
            3,
            "line {}: expected `gold @@ response @@ Y|N`",
            i + 1
        );
        assert!(
            matches!(parts[2], "Y" | "N"),
            "line {}: verdict must be Y or N",
            i + 1
        );
        let (gold, response, want) = (parts[0], parts[1].replace('⏎', "\n"), parts[2] == "Y");
        out.cases += 1;
        out.yes += usize::from(want);
        let v = verify(gold, &response);
        if v.correct != want {
            out.failures.push(format!(
                "line {}: {gold:?} vs {response:?}: expected {want}, got {} ({}; gold {:?}, pred {:?})",
                i + 1,
                v.correct,
                v.reason,
                v.gold_answer,
                v.pred_answer
            ));
        }
    }
    out
}

fn check(name: &str, table: &str) {
    let o = run(table);
    println!(
        "{name}: {} cases ({} Y, {} N)",
        o.cases,
        o.yes,
        o.cases - o.yes
    );
    assert!(
        o.cases >= MIN_CASES && o.yes > 0 && o.yes < o.cases,
        "{name}: needs at least {MIN_CASES} cases with both verdicts ({} cases, {} Y)",
        o.cases,
        o.yes
    );
    assert!(
        o.failures.is_empty(),
        "{name}: {} of {} cases failed:\n{}",
        o.failures.len(),
        o.cases,
        o.failures.join("\n")
    );
}

/// One test per class table, and the list of them.
macro_rules! classes {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check(
                    stringify!($name),
                    include_str!(concat!("classes/", stringify!($name), ".txt")),
                );
            }
        )*
        const CLASSES: &[&str] = &[$(stringify!($name)),*];
    };
}

classes!(
    last_candidate,
    bare_answer,
    thousands,
    several_boxes,
    relations,
    chains_assignments,
    matrix_arithmetic,
    digits_in_words,
);

/// A table added to `classes/` without a test above would silently never run.
#[test]
fn every_table_has_a_test() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/classes");
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .expect("tests/classes")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".txt").map(str::to_string))
        .collect();
    found.sort();
    let mut listed: Vec<&str> = CLASSES.to_vec();
    listed.sort();
    assert_eq!(found, listed);
}
