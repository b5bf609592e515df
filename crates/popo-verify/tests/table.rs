//! The equivalence table (`table.txt`): every line is `gold @@ prediction @@ Y|N`, and the
//! prediction is given to `verify` inside `\boxed{}` as a model would write it.

mod common;

#[test]
fn equivalence_table() {
    let table = include_str!("table.txt");
    let cases = common::cases("table.txt", table, |pred| {
        format!("The answer is $\\boxed{{{pred}}}$.")
    });
    let n = cases.len();
    let failures = common::failures(&cases);
    assert!(
        n >= 400,
        "the table should have at least 400 cases, has {n}"
    );
    assert!(
        failures.is_empty(),
        "{} of {n} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
