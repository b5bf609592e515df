//! The `gold @@ response @@ Y|N` tables shared by `table.rs` and `classes.rs`.

use popo_verify::verify;

/// One table line: the expected verdict of `verify(gold, response)`.
pub struct Case {
    pub line: usize,
    pub gold: String,
    pub response: String,
    pub want: bool,
}

/// The cases of `table` (named `name` in messages); `response` turns a line's middle field into
/// what `verify` gets. Blank lines and `#` comments are skipped; a malformed line fails the test.
pub fn cases(name: &str, table: &str, response: impl Fn(&str) -> String) -> Vec<Case> {
    let mut out = Vec::new();
    for (i, line) in table.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split(" @@ ").collect();
        assert!(
            parts.len() == 3 && matches!(parts[2], "Y" | "N"),
            "{name} line {}: expected `gold @@ response @@ Y|N`",
            i + 1
        );
        out.push(Case {
            line: i + 1,
            gold: parts[0].to_string(),
            response: response(parts[1]),
            want: parts[2] == "Y",
        });
    }
    out
}

/// A line per case whose verdict is not the expected one.
pub fn failures(cases: &[Case]) -> Vec<String> {
    cases
        .iter()
        .filter_map(|c| {
            let v = verify(&c.gold, &c.response);
            (v.correct != c.want).then(|| {
                format!(
                    "line {}: {:?} vs {:?}: expected {}, got {} ({}; gold {:?}, pred {:?})",
                    c.line,
                    c.gold,
                    c.response,
                    c.want,
                    v.correct,
                    v.reason,
                    v.gold_answer,
                    v.pred_answer
                )
            })
        })
        .collect()
}
