//! Never a panic, and bounded work: random strings, adversarial inputs, and limit hits that
//! come back as `correct: false` with a reason.

use popo_verify::{
    answers_equivalent, extract, verify, verify_batch, verify_with, Config, Limits, Verdict,
};
use proptest::prelude::*;

// The tables of `table.rs` and `classes.rs` (this file uses only `cases`).
#[allow(dead_code)]
mod common;

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_strings_never_panic(a in ".{0,60}", b in ".{0,60}") {
        let v = verify(&a, &b);
        prop_assert!(!v.reason.is_empty());
        let _ = extract(&a);
        let _ = answers_equivalent(&a, &b);
    }

    #[test]
    fn random_math_soup_never_panics(
        a in proptest::collection::vec(prop_oneof![
            Just("\\frac"), Just("{"), Just("}"), Just("("), Just(")"), Just("["), Just("]"),
            Just("\\sqrt"), Just("^"), Just("_"), Just("1"), Just("23"), Just("x"), Just(","),
            Just("\\pm"), Just("="), Just("<"), Just("\\left("), Just("\\right)"), Just("!"),
            Just("\\begin{pmatrix}"), Just("&"), Just("\\\\"), Just("\\end{pmatrix}"), Just("|"),
            Just("\\text{cm}"), Just("."), Just("e"), Just("i"), Just("\\pi"), Just("\\infty"),
            Just("\\log_"), Just("\\sin"), Just("\\%"), Just("^\\circ"), Just("\\{"), Just("\\}"),
            Just("\\cup"), Just("-"), Just("/"), Just("0"), Just("9999"), Just("\\binom"),
        ], 0..30),
        b in proptest::collection::vec(prop_oneof![
            Just("1"), Just("x"), Just("\\frac12"), Just("("), Just(")"), Just(","), Just("^"),
            Just("{"), Just("}"), Just("!"), Just("\\sqrt"), Just("2"), Just("-"),
        ], 0..20),
    ) {
        let a: String = a.concat();
        let b: String = b.concat();
        let response = format!("\\boxed{{{b}}}");
        let v = verify(&a, &response);
        // Deterministic, and always with a reason.
        prop_assert_eq!(&v, &verify(&a, &response));
        prop_assert!(!v.reason.is_empty());
        let _ = answers_equivalent(&a, &a);
    }

    #[test]
    fn integers_match_themselves_and_not_neighbours(n in -1_000_000i64..1_000_000) {
        let same = verify(&n.to_string(), &format!("\\boxed{{{n}}}"));
        prop_assert!(same.correct);
        let m = n + 1;
        let next = verify(&n.to_string(), &format!("\\boxed{{{m}}}"));
        prop_assert!(!next.correct);
    }

    #[test]
    fn fractions_match_their_decimal_form(p in 1u32..1000, q in 1u32..64) {
        // q = 2^a 5^b gives a terminating decimal.
        let q = [1u32, 2, 4, 5, 8, 10, 16, 20, 25, 32, 40, 50][q as usize % 12];
        let dec = format!("{}", p as f64 / q as f64);
        let v = verify(&format!("\\frac{{{p}}}{{{q}}}"), &format!("\\boxed{{{dec}}}"));
        prop_assert!(v.correct, "{:?}", v);
    }
}

#[test]
fn huge_powers_hit_a_limit_not_a_hang() {
    let v = verify("2^{2^{2^{2^{2^{10}}}}}", "\\boxed{2^{2^{2^{2^{2^{10}}}}}}");
    // Identical trees match structurally without evaluating them.
    assert!(v.correct);
    let v = verify("2^{2^{2^{2^{2^{10}}}}}", "\\boxed{3^{2^{2^{2^{2^{10}}}}}}");
    assert!(!v.correct);
    let v = verify("10^{10^{10}}", "\\boxed{10^{10^{10}} + 1}");
    assert!(!v.correct);
    assert!(
        v.reason.contains("too large") || v.reason.contains("budget"),
        "{}",
        v.reason
    );
}

#[test]
fn huge_factorials_hit_a_limit() {
    let v = verify("99999999!", "\\boxed{99999998!}");
    assert!(!v.correct);
    assert!(
        v.reason.contains("too large") || v.reason.contains("budget"),
        "{}",
        v.reason
    );
}

#[test]
fn deep_nesting_hits_the_depth_limit() {
    let deep = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
    let v = verify(&deep, "\\boxed{1}");
    assert!(!v.correct);
    assert!(
        v.reason.contains("nested") || v.reason.contains("long"),
        "{}",
        v.reason
    );
    let braces = format!("{}1{}", "{".repeat(3000), "}".repeat(3000));
    assert!(!verify(&braces, "\\boxed{2}").correct);
    let minus = format!("{}1", "-".repeat(3000));
    let _ = verify(&minus, "\\boxed{1}");
}

#[test]
fn the_step_budget_is_deterministic() {
    let cfg = Config {
        limits: Limits {
            steps: 50,
            ..Limits::default()
        },
        ..Config::default()
    };
    let gold =
        "\\frac{1}{2} + \\frac{1}{3} + \\frac{1}{4} + \\frac{1}{5} + \\frac{1}{6} + \\frac{1}{7}";
    let a = verify_with(&cfg, gold, "\\boxed{\\frac{223}{140}}");
    let b = verify_with(&cfg, gold, "\\boxed{\\frac{223}{140}}");
    assert_eq!(a, b);
    assert!(!a.correct);
    assert!(a.reason.contains("budget"), "{}", a.reason);
    // With the default budget the same pair is correct.
    assert!(verify(gold, "\\boxed{\\frac{223}{140}}").correct);
}

#[test]
fn long_answers_are_refused() {
    let long = "1+".repeat(5000) + "1";
    let v = verify(&long, "\\boxed{5001}");
    assert!(!v.correct);
    assert!(v.reason.contains("too long"), "{}", v.reason);
}

/// The pairs of the verifier's own tables (`table.txt` and every `classes/*.txt`), and each gold
/// against the next case's response, which is mostly wrong.
fn table_pairs() -> Vec<(String, String)> {
    let mut cases = common::cases("table.txt", include_str!("table.txt"), |pred| {
        format!("The answer is $\\boxed{{{pred}}}$.")
    });
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/classes");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("tests/classes")
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let table = std::fs::read_to_string(&f).unwrap();
        let name = f.display().to_string();
        cases.extend(common::cases(&name, &table, |r| r.replace('⏎', "\n")));
    }
    let n = cases.len();
    let mut pairs: Vec<(String, String)> = cases
        .iter()
        .map(|c| (c.gold.clone(), c.response.clone()))
        .collect();
    pairs.extend((0..n).map(|i| (cases[i].gold.clone(), cases[(i + 1) % n].response.clone())));
    pairs
}

#[test]
fn works_inside_worker_threads() {
    // The failure mode of signal-based timeouts or thread-local state: verdicts that change with
    // the thread. Every verdict on several threads at once (each starting at a different pair)
    // and through `verify_batch`'s pool must equal the verdict of a run on one thread.
    let pairs = std::sync::Arc::new(table_pairs());
    let want: Vec<Verdict> = pairs.iter().map(|(g, r)| verify(g, r)).collect();
    let correct = want.iter().filter(|v| v.correct).count();
    assert!(
        pairs.len() >= 1000 && correct >= 300 && pairs.len() - correct >= 300,
        "{} pairs, {correct} correct: too few of either verdict to compare",
        pairs.len()
    );
    const THREADS: usize = 4;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let pairs = pairs.clone();
            std::thread::spawn(move || {
                let n = pairs.len();
                let start = t * n / THREADS;
                (0..n)
                    .map(|k| (start + k) % n)
                    .map(|i| (i, verify(&pairs[i].0, &pairs[i].1)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for (t, h) in handles.into_iter().enumerate() {
        for (i, got) in h.join().expect("a worker thread panicked") {
            assert_eq!(got, want[i], "thread {t}, pair {i}: {:?}", pairs[i]);
        }
    }
    for (i, got) in verify_batch(&pairs, THREADS).into_iter().enumerate() {
        assert_eq!(got, want[i], "verify_batch, pair {i}: {:?}", pairs[i]);
    }
    println!(
        "{} pairs ({correct} correct): the same verdicts on {THREADS} threads and through \
         verify_batch as on one",
        pairs.len()
    );
}
