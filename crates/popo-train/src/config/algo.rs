//! `[algo]`: the loss family and every knob of POPO, the GRPO family and NSR / W-REINFORCE.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlgoConfig {
    /// Loss family: `popo`, `grpo` (also dr_grpo / dapo through options), `raft` or `reinforce`
    /// (nsr / w_reinforce through `psr_weight`).
    pub name: AlgoName,
    /// Optimizer updates per rollout batch.
    pub num_iterations: usize,
    // --- POPO ---
    /// Weights over a group's positives: `softmax` (of length-normalised log-probs) or `uniform`.
    pub weight_mode: WeightMode,
    /// T_w of the softmax weights.
    pub weight_temperature: f64,
    /// Divide each weight by its completion's length, then renormalise.
    pub length_normalize_weights: bool,
    /// Weight of the similarity term.
    pub alpha: f64,
    /// Weight of the entropy bonus.
    pub beta_ent: f64,
    /// Tokens the entropy bonus covers: `all` (the spec), `positive_groups` (groups with a
    /// positive; the reference code's rule, which skips a micro-batch without a positive, made
    /// independent of the micro-batch split) or `positives`.
    pub entropy_scope: EntropyScope,
    /// EMA momentum of the target: xi <- tau xi + (1 - tau) theta.
    pub tau: f64,
    /// BYOL predictor on the online branch (false: identity).
    pub predictor: bool,
    /// L: number of Linear layers of the predictor.
    pub predictor_layers: usize,
    /// Hidden width of the predictor.
    pub predictor_hidden: usize,
    /// sigma of the N(0, sigma^2) noise added to target features.
    pub sim_noise_std: f64,
    /// Features pooled over the completion tokens: `mean` or `last`.
    pub feature_pool: FeaturePool,
    /// c of the truncated ratio sg(min(rho, c)) used when num_iterations > 1.
    pub ratio_clip: f64,
    // --- GRPO family ---
    /// `grpo` (group-normalised) or `dr_grpo` (centred) advantages.
    pub advantage: AdvantageMode,
    /// `token-mean`, `seq-mean-token-mean` or `seq-mean-token-sum-norm`.
    pub loss_agg: LossAgg,
    /// Lower clip range of the ratio: clip(rho, 1 - eps_low, 1 + eps_high).
    pub eps_low: f64,
    /// Upper clip range of the ratio (DAPO's clip-higher raises it).
    pub eps_high: f64,
    /// k3 KL to a frozen reference; 0 means no reference model at all.
    pub beta_kl: f64,
    // --- NSR / W-REINFORCE ---
    /// lambda: the REINFORCE coefficient of positives (negatives have -1). 0 is `nsr`
    /// (negatives only), 0.1 is `w_reinforce`.
    pub psr_weight: f64,
}

impl Default for AlgoConfig {
    fn default() -> Self {
        Self {
            name: AlgoName::Popo,
            num_iterations: 1,
            weight_mode: WeightMode::Softmax,
            weight_temperature: 1.0,
            length_normalize_weights: false,
            alpha: 0.1,
            beta_ent: 0.01,
            entropy_scope: EntropyScope::All,
            tau: 0.995,
            predictor: true,
            predictor_layers: 2,
            predictor_hidden: 1024,
            sim_noise_std: 0.02,
            feature_pool: FeaturePool::Mean,
            ratio_clip: 1.28,
            advantage: AdvantageMode::Grpo,
            loss_agg: LossAgg::SeqMeanTokenMean,
            eps_low: 0.2,
            eps_high: 0.2,
            beta_kl: 0.0,
            psr_weight: 0.1,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AlgoName {
    Popo,
    Grpo,
    Raft,
    /// REINFORCE with a per-completion coefficient (the `nsr` and `w_reinforce` presets).
    Reinforce,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WeightMode {
    Softmax,
    Uniform,
}

/// `algo.entropy_scope`: which completion tokens POPO's entropy bonus averages over.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EntropyScope {
    /// Every completion token of the step, positives and negatives (the spec's item 7); a step
    /// with no positive trains on the entropy bonus alone.
    All,
    /// The tokens of the groups that hold at least one positive: a group (and a step) with no
    /// positive contributes nothing and is left out of the training forward.
    PositiveGroups,
    /// The positive completions' tokens only.
    Positives,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FeaturePool {
    Mean,
    Last,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageMode {
    Grpo,
    DrGrpo,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum LossAgg {
    #[serde(rename = "token-mean")]
    TokenMean,
    #[serde(rename = "seq-mean-token-mean")]
    SeqMeanTokenMean,
    #[serde(rename = "seq-mean-token-sum-norm")]
    SeqMeanTokenSumNorm,
}
