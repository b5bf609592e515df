//! The learner: one optimizer update from a batch split into micro-batches, shared by the SFT
//! warm-up and RL. Each micro-batch's loss is back-propagated on its own (side by side on CPU,
//! `crate::parallel`), the gradients are summed in index order, unscaled (f16), checked, clipped
//! and applied by AdamW to the parameters' full-precision values.

use crate::algo::LossOutput;
use crate::config::OptimConfig;
use crate::metrics::{names, StepMetrics};
use crate::optim::{AdamW, GradAccum, LossScale};
use crate::parallel::in_waves;
use crate::params::Params;
use crate::policy::{Policy, PolicyOutput, SeqBatch};
use crate::state::{Outcome, TrainerState};
use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

/// What one micro-batch hands the learner: its gradients.
pub struct MicroLoss {
    /// The micro-batch's gradients of the learner's parameters (everything else a backward
    /// computes is dropped as soon as it is done).
    pub grads: GradAccum,
    /// Diagnostics, additive over micro-batches.
    pub stats: Vec<(&'static str, f64)>,
    /// Completion tokens back-propagated.
    pub tokens: usize,
    /// Positions through the forward and backward: rows x padded length, prompts included (what
    /// `popo bench` counts for its update figure).
    pub seq_tokens: usize,
}

impl MicroLoss {
    /// Back-propagates `loss(policy(mb))` (a scalar whose sum over the micro-batches is the batch
    /// loss), multiplied by the loss scale `factor`, recomputing activations layer by layer with
    /// `checkpoint` (`optim.gradient_checkpointing`).
    pub fn backward(
        view: &LearnerView,
        policy: &dyn Policy,
        mb: &SeqBatch,
        temperature: f64,
        checkpoint: bool,
        mut loss: impl FnMut(&PolicyOutput) -> Result<LossOutput>,
    ) -> Result<Self> {
        let factor = view.factor;
        let mut grads = GradAccum::new(view.vars);
        let mut stats = Vec::new();
        let mut scaled = |out: &PolicyOutput| -> Result<Tensor> {
            let l = loss(out)?;
            stats = l.stats;
            // f16: the scale keeps small gradients above f16's underflow on the way back.
            Ok(if factor == 1.0 {
                l.loss
            } else {
                (l.loss * factor)?
            })
        };
        let mut keep = |store: GradStore| grads.add(&store);
        policy.backward(mb, temperature, checkpoint, &mut scaled, &mut keep)?;
        Ok(Self {
            grads,
            stats,
            tokens: mb.completion_lens.iter().sum(),
            seq_tokens: mb.tokens.input_ids.elem_count(),
        })
    }
}

/// What a micro-batch's backward needs from the learner: the parameters to keep gradients for
/// and the loss scale (f16; 1 otherwise).
pub struct LearnerView<'a> {
    vars: &'a [Var],
    factor: f64,
}

/// One update's summary.
pub struct Update {
    pub outcome: Outcome,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Micro-batch stats summed, in first-seen order.
    pub stats: Vec<(&'static str, f64)>,
    pub tokens: usize,
    pub seq_tokens: usize,
}

pub struct Learner {
    pub params: Params,
    opt: AdamW,
    grad_clip: f64,
    /// Micro-batches back-propagated at once (`run.cpu_parallel`).
    width: usize,
    /// f16 only.
    pub loss_scale: Option<LossScale>,
}

impl Learner {
    /// A learner with fresh AdamW moments over `params`; `dtype` is the compute dtype (f16 adds
    /// a loss scale starting at `optim.init_loss_scale`).
    pub fn new(params: Params, optim: &OptimConfig, width: usize, dtype: DType) -> Result<Self> {
        Ok(Self {
            opt: AdamW::new(&params, optim)?,
            params,
            grad_clip: optim.grad_clip,
            width,
            loss_scale: LossScale::for_dtype(dtype, optim.init_loss_scale),
        })
    }

    pub fn into_params(self) -> Params {
        self.params
    }

    /// Optimizer updates taken (AdamW's bias-correction step).
    pub fn updates(&self) -> u64 {
        self.opt.t
    }

    /// Moments and masters by name, for a checkpoint's optimizer file.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = self.opt.state();
        out.extend(self.params.state());
        out
    }

    /// Restores what [`Learner::state`] saved, with AdamW's step count and the f16 loss scale
    /// from the checkpoint's trainer state.
    pub fn load_state(
        &mut self,
        tensors: &std::collections::HashMap<String, Tensor>,
        state: &TrainerState,
    ) -> Result<()> {
        self.params.load_state(tensors)?;
        self.loss_scale = state.loss_scale.clone();
        self.opt.load_state(tensors, state.optimizer_updates)
    }

    /// An update's diagnostics: the summed micro-batch stats, the gradient norm and (f16) the
    /// loss scale.
    pub fn log(&self, u: &Update, m: &mut StepMetrics) {
        m.set_all(&u.stats);
        m.set(names::GRAD_NORM, u.grad_norm);
        if let Some(ls) = &self.loss_scale {
            m.set(names::LOSS_SCALE, ls.scale);
        }
    }

    /// Runs `micro(k, view)` for the `n` micro-batches (each back-propagates its loss with
    /// `MicroLoss::backward` and the view), sums their gradients in index order, then takes one
    /// AdamW step at `lr` unless the gradients are not finite.
    pub fn update(
        &mut self,
        n: usize,
        lr: f64,
        micro: impl Fn(usize, &LearnerView) -> Result<MicroLoss> + Sync,
    ) -> Result<Update> {
        let view = LearnerView {
            vars: self.params.vars(),
            factor: self.loss_scale.as_ref().map_or(1.0, |s| s.scale),
        };
        let factor = view.factor;
        let mut acc = GradAccum::new(self.params.vars());
        let mut stats: Vec<(&'static str, f64)> = Vec::new();
        let (mut tokens, mut seq_tokens) = (0, 0);
        in_waves(
            n,
            self.width,
            |k| micro(k, &view),
            |m| {
                tokens += m.tokens;
                seq_tokens += m.seq_tokens;
                for (k, v) in m.stats {
                    match stats.iter_mut().find(|(name, _)| *name == k) {
                        Some(e) => e.1 += v,
                        None => stats.push((k, v)),
                    }
                }
                acc.add_accum(m.grads)
            },
        )?;
        acc.unscale(factor)?;
        let loss_ok = stats.iter().all(|(_, v)| v.is_finite());
        let grad_norm = acc.global_norm()?;
        let mut outcome = if loss_ok && grad_norm.is_finite() {
            Outcome::Applied
        } else {
            Outcome::NonFinite
        };
        if let Some(ls) = &mut self.loss_scale {
            let overflow = loss_ok && !grad_norm.is_finite();
            // An overflow at scale 1 is the model's, not the scale's: it stays NonFinite.
            if ls.update(!overflow) && overflow {
                outcome = Outcome::Overflow;
            }
        }
        if outcome == Outcome::Applied {
            acc.clip(self.grad_clip)?;
            self.opt.step(&mut self.params, &acc, lr)?;
        }
        Ok(Update {
            outcome,
            grad_norm,
            stats,
            tokens,
            seq_tokens,
        })
    }
}
