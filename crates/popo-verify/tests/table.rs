//! The equivalence table (`table.txt`): every line is `gold @@ prediction @@ Y|N`, and the
//! prediction is given to `verify` inside `\boxed{}` as a model would write it.

use popo_verify::verify;

#[test]
fn equivalence_table() {
    let table = include_str!("table.txt");
    let mut failures = Vec::new();
    let mut n = 0;
    for (i, line) in table.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split(" @@ ").collect();
        assert_eq!(
            parts.len(),
            3,
            "table.txt line {}: expected `gold @@ pred @@ Y|N`",
            i + 1
        );
        let (gold, pred, want) = (parts[0], parts[1], parts[2] == "Y");
        let v = verify(gold, &format!("The answer is $\\boxed{{{pred}}}$."));
        n += 1;
        if v.correct != want {
            failures.push(format!(
                "line {}: {gold:?} vs {pred:?}: expected {want}, got {} ({}; gold {:?}, pred {:?})",
                i + 1,
                v.correct,
                v.reason,
                v.gold_answer,
                v.pred_answer
            ));
        }
    }
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
