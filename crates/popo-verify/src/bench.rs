//! The benchmark pair set: 2,000 (gold, response) pairs from MATH500's answers. Half are a gold
//! against itself boxed in a sentence, half a gold against another problem's answer. Built
//! deterministically so `popo verify --bench` and the math-verify comparison see the same pairs.

const SENTENCES: [&str; 4] = [
    "Putting the pieces together, the answer is $\\boxed{{}}$.",
    "We simplify and check the result.\n\nTherefore the final answer is $\\boxed{{}}$. I hope it is correct.",
    "So the value we want is \\boxed{{}}.",
    "Combining both cases gives \\[\\boxed{{}}\\]",
];

fn sentence(k: usize, answer: &str) -> String {
    SENTENCES[k % SENTENCES.len()].replace("{}", answer)
}

/// Two self pairs and two cross pairs per gold (2,000 for MATH500's 500 golds).
pub fn benchmark_pairs(golds: &[String]) -> Vec<(String, String)> {
    let n = golds.len();
    let mut out = Vec::with_capacity(4 * n);
    for (i, g) in golds.iter().enumerate() {
        for c in 0..2 {
            out.push((g.clone(), sentence(i + c, g)));
        }
        for c in 0..2 {
            let mut j = (i + 1 + c * n / 2 + (i * 7) % 17) % n.max(1);
            if j == i {
                j = (j + 1) % n.max(1);
            }
            out.push((g.clone(), sentence(i + c + 2, &golds[j])));
        }
    }
    out
}
