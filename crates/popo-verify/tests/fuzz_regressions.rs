//! Inputs the fuzzer found (`scripts/fuzz.sh verify`, fuzz/crashes/verify/), kept as tests.
//! Each pair is the input split at its first `\x01` (gold, then response), as the fuzz target
//! splits it.

use popo_verify::{verify_counted, Config};
use std::time::{Duration, Instant};

fn pair(input: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(input);
    let (g, r) = text.split_once('\u{1}').unwrap_or((&text, &text));
    (g.to_string(), r.to_string())
}

/// Huge integers (`9999^{9999}`, ~133,000 bits) in an inequality took 2-5 s within the step
/// budget: `Ratio`'s arithmetic reduces by gcds even against a denominator of 1, and
/// num-bigint's binary gcd is quadratic in the size, while the budget charged only linear
/// steps. Integer arithmetic now skips the gcds and rational arithmetic is charged quadratic
/// steps (quadratic in the larger operand), so these hit the budget (or finish) in milliseconds.
#[test]
fn huge_integers_in_inequalities_stay_within_the_budget_in_time() {
    let mut cases: Vec<(String, String)> = [
        &b"1\x01\\boxed{x 9999^{9999} > 68}"[..],
        b"r \\neq 1\x01\\boxed{r \\neq 1111^{11111}}",
        b"2\x01\\boxed{9999^{9999}}",
        // From `jsonl` hangs (fuzz/crashes/jsonl/): a tiny rational against small integers,
        // 0.1-1 s within the budget while the gcds were charged the product of the sizes.
        b"\\0000<811111111111111^001000/3V\x01\\boxed{40sm8g-trarn-1968",
        b"\\0000<811111111121111^-1963I2_{2000000000000000000btxee{36}\x01\\boxed{40sm8g-trarn-1963",
        b"x<811111111121111^-1963\x01\\boxed{x<40}",
        // A decimal literal's reduction took a gcd with 10^60000: 70 ms for 7,500 steps.
        b"3e-60000\x01\\boxed{7e-60000}",
        // A percent of a huge number divided with `Ratio`'s binary gcd: 0.2 s per `%`, 5 s here.
        b"1\x01\\boxed{3E33333%%%%%%%%%%%%%%%%%%%%%%%%}",
        b"r \\neq 3\x01\\boxed{1 < 3E33333%%%%%%%%%%%%%%%%%%%%%%%% r \\neq 3}",
        // A square root of a 110,000-bit integer, charged linear steps, recomputed against a
        // gold of 198 percents: 0.9 s a pair (fuzz/crashes/verify/slow-*, the fuzzer's form).
        b"IHHj%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%\x01\\boxed{\\sqrt83e33353 D/2}",
    ]
    .iter()
    .map(|i| pair(i))
    .collect();
    // Every input the fuzzer saved (crashes and hangs), as found. These files also go through
    // the fuzz target itself in popo-fuzz-harness/tests/replay.rs, which pins their list.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/crashes/verify");
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
    for e in entries {
        cases.push(pair(&std::fs::read(e.unwrap().path()).unwrap()));
    }
    assert!(cases.len() >= 20, "the fuzzer's inputs are in {dir}");
    let cfg = Config::default();
    for (gold, response) in &cases {
        let start = Instant::now();
        let (v, spent) = verify_counted(&cfg, gold, response);
        let took = start.elapsed();
        assert!(spent <= cfg.limits.steps);
        assert!(!v.correct, "{v:?}");
        assert!(
            took < Duration::from_secs(1),
            "{gold:?} vs {response:?}: {took:?} ({spent} steps, {})",
            v.reason
        );
    }
}
