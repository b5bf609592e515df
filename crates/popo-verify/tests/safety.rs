//! Never a panic, and bounded work: random strings, adversarial inputs, and limit hits that
//! come back as `correct: false` with a reason.

use popo_verify::{answers_equivalent, extract, verify, verify_with, Config, Limits};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_strings_never_panic(a in ".{0,60}", b in ".{0,60}") {
        let _ = verify(&a, &b);
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
        let v = verify(&a, &format!("\\boxed{{{b}}}"));
        // A gold always matches itself when it parses at all.
        let _ = v;
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

#[test]
fn works_inside_worker_threads() {
    // The failure mode of signal-based timeouts: every verdict 0 off the main thread.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || verify(&format!("{i}"), &format!("\\boxed{{{i}}}")).correct)
        })
        .collect();
    for h in handles {
        assert!(h.join().expect("thread"));
    }
}
