//! The decode loop's traffic and memory: ids, not logits, reach the host; finished rows leave the
//! cache in few compactions.

use crate::common;
use crate::{assert_same_rows, prompts};
use candle_core::DType;
use popo_model::{generate, SamplingParams};

/// Host traffic per decode step: the host sampler copies every row's logits (rows x vocab f32,
/// what every step did before on-device sampling); the device path copies block sums and one
/// block per row (about 2 sqrt(vocab) floats) plus nothing else. Printed for BENCHMARKS.md.
#[test]
fn decode_steps_move_ids_not_logits_to_the_host() {
    use popo_model::sampler::{block_size, decode_stats, with_host_sampling};
    let vocab = 4096;
    let cfg = popo_model::ModelConfig::qwen2_tiny(vocab, 32, 1, 4, 2, 64);
    let (_vm, model) = common::build(&cfg, DType::F32, 3);
    let ps = prompts(vocab);
    let rows = ps.len() * 2;
    let per_step = |params: &SamplingParams, host: bool| {
        let before = decode_stats();
        let run = || generate(&model, &ps, params, None).unwrap();
        let out = if host { with_host_sampling(run) } else { run() };
        assert!(out.iter().all(|c| c.tokens.len() == 8));
        let after = decode_stats();
        assert_eq!(after.steps - before.steps, 8, "one choice per step");
        (after.host_bytes - before.host_bytes) / 8
    };
    let sampled = SamplingParams {
        n: 2,
        max_new_tokens: 8,
        ..Default::default()
    };
    let greedy = SamplingParams {
        greedy: true,
        ..sampled.clone()
    };
    let logits_bytes = (rows * vocab * 4) as u64;
    let (bs, nb) = (block_size(vocab), vocab.div_ceil(block_size(vocab)));
    assert_eq!(per_step(&sampled, true), logits_bytes);
    assert_eq!(per_step(&sampled, false), (rows * (nb + bs) * 4) as u64);
    // Greedy: one sum and one id per row.
    assert_eq!(per_step(&greedy, false), (rows * 8) as u64);
    eprintln!(
        "host bytes per decode step, {rows} rows, vocab {vocab}: {logits_bytes} (host sampler) \
         -> {} sampled, {} greedy (device); vocab 151,936: {} -> {} per row",
        rows * (nb + bs) * 4,
        rows * 8,
        151_936 * 4,
        (block_size(151_936) + 151_936usize.div_ceil(block_size(151_936))) * 4
    );
}

/// Finished rows stay in the batch, masked, until a quarter of it has finished; then they leave
/// in one compaction. Far fewer copies of the cache than one per step in which a row ends, and
/// every row decodes as it does alone.
#[test]
fn finished_rows_leave_the_cache_in_few_compactions() {
    use popo_model::sampler::decode_stats;
    let cfg = common::qwen2();
    let (_vm, model) = common::build(&cfg, DType::F32, 37);
    let ps = prompts(cfg.vocab_size);
    let params = SamplingParams {
        n: 8,
        temperature: 1.2,
        max_new_tokens: 24,
        stop_token_ids: vec![1, 3, 9, 17],
        seed: 3,
        ..Default::default()
    };
    let before = decode_stats();
    let all = generate(&model, &ps, &params, None).unwrap();
    let stats = decode_stats();
    let compactions = stats.kv_compactions - before.kv_compactions;
    // What the old engine did: one compaction in every step where a row ended and others ran on.
    let longest = all.iter().map(|c| c.tokens.len()).max().unwrap();
    let mut ends: Vec<usize> = all
        .iter()
        .map(|c| c.tokens.len())
        .filter(|&n| n < longest)
        .collect();
    ends.sort();
    ends.dedup();
    eprintln!(
        "32 rows: {compactions} compactions ({} bytes), one per finishing step would be {}",
        stats.kv_bytes_copied - before.kv_bytes_copied,
        ends.len()
    );
    assert!(ends.len() >= 6, "test needs rows ending at many steps");
    assert!(compactions < ends.len() as u64 && compactions <= 12);
    for (i, p) in ps.iter().enumerate() {
        // Prompt i of a call draws from the streams of a one-prompt call with this seed.
        let seed = params
            .seed
            .wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let one = SamplingParams {
            seed,
            ..params.clone()
        };
        let alone = generate(&model, std::slice::from_ref(p), &one, None).unwrap();
        assert_same_rows(
            &all[i * 8..(i + 1) * 8],
            &alone,
            1e-4,
            &format!("prompt {i}"),
        );
    }
}
