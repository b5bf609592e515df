//! Fuzz target: any bytes, split into a gold and a response, must give a verdict without
//! panicking, and within the step budget (libFuzzer's own timeout catches a hang).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (gold, response) = s.split_once('\u{1}').unwrap_or((s, s));
    let v = popo_verify::verify(gold, response);
    let _ = popo_verify::answers_equivalent(gold, response);
    let _ = popo_verify::extract(response);
    // A verdict always says why.
    assert!(!v.reason.is_empty());
});
