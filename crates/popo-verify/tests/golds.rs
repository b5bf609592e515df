//! Every gold answer in the shared benchmark data verifies against itself, boxed and
//! rewritten the usual ways, and never against another problem's (different) gold.

use popo_verify::{answers_equivalent, verify};
use std::path::PathBuf;

/// The shared benchmark data: `POPO_DATA` (as for `popo eval`), else `../shared/data` next to the
/// repository. Without it these tests check nothing, which is right for a user's clone; under CI
/// (`CI=true`) that would be a silent pass, so it fails.
fn data_dir() -> Option<PathBuf> {
    let d = std::env::var_os("POPO_DATA").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data")),
        PathBuf::from,
    );
    if d.is_dir() {
        return Some(d);
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
        "CI is set but the shared data ({}) is missing: the gold tests would check nothing \
         (set POPO_DATA to the directory of math500.jsonl and the other benchmark files)",
        d.display()
    );
    println!(
        "notice: {} is missing; skipping the shared-data gold tests",
        d.display()
    );
    None
}

fn golds(file: &str) -> Vec<String> {
    let Some(dir) = data_dir() else {
        return Vec::new();
    };
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1));
            match &v["answer"] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            }
        })
        .collect()
}

const FILES: [&str; 10] = [
    "math500.jsonl",
    "aime24.jsonl",
    "aime25.jsonl",
    "amc23.jsonl",
    "minerva_math.jsonl",
    "olympiadbench.jsonl",
    "gsm8k_test.jsonl",
    "gsm8k_train.jsonl",
    "math_train.jsonl",
    "math_lvl3to5_reconstructed.jsonl",
];

/// The rewrites a correct model answer commonly differs by.
fn rewrites(g: &str) -> Vec<String> {
    let mut v = vec![
        format!("The final answer is $\\boxed{{{g}}}$."),
        format!("\\boxed{{{}}}", g.replace("\\dfrac", "\\frac")),
        format!(
            "\\boxed{{ {} }}",
            g.replace('+', " + ")
                .replace('=', " = ")
                .replace("\\cdot", " \\cdot ")
        ),
        format!("\\boxed{{{g}.}}"),
        format!("so $\\boxed{{${g}$}}$"),
    ];
    // `\left( ... \right)` around a parenthesised answer.
    if g.starts_with('(') && g.ends_with(')') && !g.contains('$') {
        v.push(format!("\\boxed{{\\left({}\\right)}}", &g[1..g.len() - 1]));
    }
    v
}

#[test]
fn every_gold_matches_itself_and_its_rewrites() {
    let mut failures = Vec::new();
    let mut n = 0;
    for file in FILES {
        for g in golds(file) {
            for r in rewrites(&g) {
                n += 1;
                let v = verify(&g, &r);
                if !v.correct {
                    failures.push(format!(
                        "{file}: {g:?} vs {r:?}: {} ({:?} / {:?})",
                        v.reason, v.gold_answer, v.pred_answer
                    ));
                }
            }
        }
    }
    if n > 0 {
        println!("{n} gold self-checks");
    }
    assert!(
        failures.is_empty(),
        "{} of {n} gold self-checks failed:\n{}",
        failures.len(),
        failures
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// No gold verifies against a different problem's gold unless the two are mathematically
/// equal; equal ones are only allowed when both read as the same exact value.
#[test]
fn no_gold_matches_a_different_gold() {
    let mut failures = Vec::new();
    for file in [
        "math500.jsonl",
        "aime24.jsonl",
        "aime25.jsonl",
        "amc23.jsonl",
        "minerva_math.jsonl",
        "olympiadbench.jsonl",
    ] {
        let gs = golds(file);
        let mut distinct: Vec<&String> = Vec::new();
        for g in &gs {
            if !distinct.contains(&g) {
                distinct.push(g);
            }
        }
        for (i, a) in distinct.iter().enumerate() {
            for b in distinct.iter().skip(i + 1) {
                if answers_equivalent(a, b) || answers_equivalent(b, a) {
                    failures.push(format!("{file}: {a:?} ~ {b:?}"));
                }
            }
        }
    }
    // Genuinely equal answers written differently: the same value with a unit (degrees,
    // dollars, cm^2, percent), with a variable name (`k=3`, `f(x)=1`), with other spacing,
    // or the same unordered list in another order.
    let allowed: &[(&str, &str)] = &[
        ("90^\\circ", "90"),
        ("5", "x=5"),
        ("1,-2", "-2,1"),
        ("(-2,1)", "-2,1"),
        ("120^\\circ", "120"),
        ("36", "36^\\circ"),
        ("36", "\\$36"),
        ("\\frac{1}{4}", "\\frac14"),
        ("30^\\circ", "30"),
        ("10,\\!080", "10080"),
        ("15", "15\\mbox{ cm}^2"),
        ("36^\\circ", "\\$36"),
        ("2 \\sqrt{5}", "2\\sqrt{5}"),
        ("2", "+2"),
        ("$2n$", "$2 n$"),
        ("$k=1$", "1"),
        ("3", "$k=3$"),
        ("1", "$f(x)=1$"),
        ("4", "$4^{\\circ}$"),
        ("8", "$8 \\%$"),
        ("2,3,4", "2,4,3"),
        ("45", "$45^{\\circ}$"),
        ("$1/3$", "$\\frac{1}{3}$"),
        ("$44^{\\circ}$", "44"),
    ];
    failures.retain(|f| {
        !allowed
            .iter()
            .any(|(a, b)| f.ends_with(&format!("{a:?} ~ {b:?}")))
    });
    assert!(
        failures.is_empty(),
        "{} cross matches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
