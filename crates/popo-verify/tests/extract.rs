//! Answer extraction from model responses, and verdict plumbing.

use popo_verify::{
    answers_equivalent, extract, verify, verify_batch, verify_batch_with, verify_with, Config,
    Extractor, Strategy,
};

#[test]
fn boxed_is_last_and_nested() {
    assert_eq!(
        extract("first \\boxed{1}\nthen \\boxed{\\frac{1}{2}}").as_deref(),
        Some("\\frac{1}{2}")
    );
    assert_eq!(
        extract("\\boxed{\\frac{a}{\\sqrt{b^{2}}}}").as_deref(),
        Some("\\frac{a}{\\sqrt{b^{2}}}")
    );
    assert_eq!(extract("so \\fbox{42} done").as_deref(), Some("42"));
    assert_eq!(extract("\\boxed 7 is it").as_deref(), Some("7"));
    assert_eq!(extract("\\boxed{\\{1,2\\}}").as_deref(), Some("\\{1,2\\}"));
    // An unclosed box is not an answer; the last number is.
    assert_eq!(extract("\\boxed{12 and then 13").as_deref(), Some("13"));
}

#[test]
fn final_answer_is() {
    assert_eq!(
        extract("Thus, the final answer is 42. I hope it is correct.").as_deref(),
        Some("42")
    );
    assert_eq!(
        extract("The final answer is $\\frac{3}{4}$. Done").as_deref(),
        Some("\\frac{3}{4}")
    );
    assert_eq!(
        extract("Final Answer: The final answer is 3.5.").as_deref(),
        Some("3.5")
    );
}

#[test]
fn gsm8k_hashes_and_answer_tags() {
    assert_eq!(extract("18 - 3 = 15\n#### 15").as_deref(), Some("15"));
    assert_eq!(
        extract("<think>2+2</think><answer>4</answer>").as_deref(),
        Some("4")
    );
    assert_eq!(
        extract("<answer>The result is \\boxed{9}</answer>").as_deref(),
        Some("9")
    );
    assert_eq!(
        extract("<answer> $x = 2$ </answer>").as_deref(),
        Some("x = 2")
    );
}

#[test]
fn last_math_then_last_number() {
    assert_eq!(
        extract("we get $x=1$ and then $y = 7$").as_deref(),
        Some("y = 7")
    );
    assert_eq!(
        extract("so \\[ \\frac{1}{2} \\] ok").as_deref(),
        Some("\\frac{1}{2}")
    );
    assert_eq!(extract("so \\( 3 \\) ok").as_deref(), Some("3"));
    assert_eq!(
        extract("it costs \\$5 and then 7,500 people came").as_deref(),
        Some("7,500")
    );
    assert_eq!(
        extract("the value is -3.25 today").as_deref(),
        Some("-3.25")
    );
    assert_eq!(extract("nothing here"), None);
    assert_eq!(extract(""), None);
}

#[test]
fn priority_order_is_configurable() {
    let text = "$5$ #### 6 \\boxed{7}";
    assert_eq!(Extractor::default().extract(text).as_deref(), Some("7"));
    let e = Extractor::new(vec![Strategy::Hashes, Strategy::Boxed]);
    assert_eq!(
        e.extract(text).as_deref(),
        Some("6 \\boxed{7}").map(|_| "6 \\boxed{7}")
    );
    let e = Extractor::new(vec![Strategy::LastMath]);
    assert_eq!(e.extract(text).as_deref(), Some("5"));
    let e = Extractor::new(vec![Strategy::Boxed]);
    assert_eq!(e.extract("no box, 12"), None);
}

#[test]
fn verdict_fields() {
    let v = verify("\\frac{1}{2}", "Hence $\\boxed{\\dfrac{2}{4}}$.");
    assert!(v.correct);
    assert_eq!(v.gold_answer.as_deref(), Some("1/2"));
    assert_eq!(v.pred_answer.as_deref(), Some("2/4"));
    assert_eq!(v.reason, "exact");
    let v = verify("3", "no digits at all");
    assert!(!v.correct);
    assert_eq!(v.pred_answer, None);
    assert_eq!(v.reason, "no answer found");
    // The gold's own box is used when it has one.
    assert!(verify("The answer is \\boxed{12}.", "\\boxed{12}").correct);
    let json = serde_json::to_value(&v).expect("Verdict serializes");
    assert_eq!(json["correct"], serde_json::Value::Bool(false));
}

#[test]
fn batch_keeps_order_and_matches_single() {
    let pairs: Vec<(String, String)> = (0..200)
        .map(|i| (format!("{}", i % 7), format!("\\boxed{{{}}}", i % 5)))
        .collect();
    for threads in [1, 2, 0] {
        let out = verify_batch(&pairs, threads);
        assert_eq!(out.len(), pairs.len());
        for ((g, r), v) in pairs.iter().zip(&out) {
            assert_eq!(*v, verify(g, r));
        }
    }
}

#[test]
fn answers_equivalent_groups_majority_votes() {
    assert!(answers_equivalent("\\frac{1}{2}", "0.5"));
    assert!(answers_equivalent("x = 3", "3"));
    assert!(answers_equivalent("\\{1, 2\\}", "\\{2, 1\\}"));
    assert!(!answers_equivalent("1, 2", "1"));
    assert!(!answers_equivalent("2", "3"));
}

#[test]
fn several_boxes_on_the_final_line_are_a_hedge() {
    assert_eq!(
        extract("It is \\boxed{3} or \\boxed{4}.").as_deref(),
        Some("3, 4")
    );
    assert!(!verify("3", "It is \\boxed{3} or \\boxed{4}.").correct);
    assert!(verify("1, 2", "So $x = \\boxed{1}$ and $x = \\boxed{2}$.").correct);
    // Earlier lines are work, not answers.
    assert_eq!(
        extract("try \\boxed{3}\nno: \\boxed{4}").as_deref(),
        Some("4")
    );
    // The same answer boxed twice is one answer; a box inside a box is part of it.
    assert_eq!(extract("\\boxed{5} so \\boxed{5}").as_deref(), Some("5"));
    assert_eq!(
        extract("\\boxed{\\boxed{7}}").as_deref(),
        Some("\\boxed{7}")
    );
    assert!(verify("7", "\\boxed{\\boxed{7}}").correct);
}

#[test]
fn gold_extraction_can_be_switched_off() {
    let solution = "Adding, we get $2 + 3 = \\boxed{5}$.";
    assert!(verify(solution, "\\boxed{5}").correct);
    let whole = Config {
        extract_gold: false,
        ..Config::default()
    };
    // Compared whole, a worked solution is not the answer `5`; a plain answer still is.
    let v = verify_with(&whole, solution, "\\boxed{5}");
    assert!(!v.correct, "{v:?}");
    assert!(verify_with(&whole, "$\\frac{1}{2}$", "\\boxed{0.5}").correct);
    let pairs = vec![(solution.to_string(), "\\boxed{5}".to_string())];
    assert!(!verify_batch_with(&whole, &pairs, 2)[0].correct);
    // An old serialised config without the field keeps the default.
    let mut json = serde_json::to_value(Config::default()).expect("serialise");
    json.as_object_mut().expect("object").remove("extract_gold");
    let back: Config = serde_json::from_value(json).expect("deserialise");
    assert!(back.extract_gold);
}

/// With `literal_numbers`, a number gold takes only a number written out: RL policies learn to
/// restate the question's arithmetic, which is right by value.
#[test]
fn literal_numbers_refuse_expressions_for_a_number() {
    let strict = Config {
        literal_numbers: true,
        ..Config::default()
    };
    for (gold, pred) in [
        ("123", "24 + 65 + 34"),
        ("-103", "15 - 43 - 75"),
        ("10", "2 \\cdot 5"),
        ("9", "3^2"),
        ("2", "\\sqrt{4}"),
        ("0.5", "\\frac{1}{4} + \\frac{1}{4}"),
        ("123", "x = 24 + 65 + 34"),
    ] {
        assert!(verify(gold, pred).correct, "{gold} {pred}: right by value");
        let v = verify_with(&strict, gold, pred);
        assert!(!v.correct, "{gold} {pred}: {v:?}");
        assert_eq!(v.reason, "not a number written out");
    }
    for (gold, pred) in [
        ("123", "123"),
        ("-103", "-103"),
        ("-103", "The answer is -103."),
        ("1234", "1,234"),
        ("12", "12.0"),
        ("\\frac{1}{2}", "0.5"),
        ("0.5", "\\frac{1}{2}"),
        ("0.5", "1/2"),
        ("-\\frac{3}{4}", "\\frac{-3}{4}"),
        ("50\\%", "50\\%"),
        ("123", "24 + 65 + 34 = 123"),
        ("123", "x = 123"),
        // A gold that is not a number written out keeps the comparison by value.
        ("2\\sqrt{5}", "\\sqrt{20}"),
        ("\\frac{\\pi}{2}", "\\pi/2"),
    ] {
        let v = verify_with(&strict, gold, pred);
        assert!(v.correct, "{gold} {pred}: {v:?}");
    }
}
