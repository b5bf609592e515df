//! One table per class of real-response behaviour (issues 12 and 31), in `classes/*.txt`: every line is
//! `gold @@ response @@ Y|N`, the response given to `verify` as written (`⏎` stands for a line
//! break). Each class keeps at least 15 cases, with both verdicts.

mod common;

const MIN_CASES: usize = 15;

fn check(name: &str, table: &str) {
    let cases = common::cases(name, table, |r| r.replace('⏎', "\n"));
    let yes = cases.iter().filter(|c| c.want).count();
    println!(
        "{name}: {} cases ({yes} Y, {} N)",
        cases.len(),
        cases.len() - yes
    );
    assert!(
        cases.len() >= MIN_CASES && yes > 0 && yes < cases.len(),
        "{name}: needs at least {MIN_CASES} cases with both verdicts ({} cases, {yes} Y)",
        cases.len()
    );
    let failures = common::failures(&cases);
    assert!(
        failures.is_empty(),
        "{name}: {} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
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
    truncated,
    thin_space_groups,
    final_statement,
    repeated_elements,
    expression_variable,
    assignment_lists,
    radical_powers,
    approximations,
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
