//! `[model]`: the policy's weights, the dtype checkpoints are saved in, LoRA.

use candle_core::DType;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// HF model directory (or hub id). Empty: the built-in tiny model.
    pub path: String,
    /// dtype of saved checkpoints: `same` (the compute dtype), `f32`, `bf16`, `f16`.
    pub save_dtype: SaveDtype,
    /// LoRA adapters (`r = 0`: off, full fine-tuning).
    pub lora: crate::lora::LoraSection,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            path: String::new(),
            save_dtype: SaveDtype::Same,
            lora: Default::default(),
        }
    }
}

/// `model.save_dtype`: the dtype of the HF weights in checkpoints.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SaveDtype {
    /// The compute dtype.
    Same,
    F32,
    Bf16,
    F16,
}

impl SaveDtype {
    pub fn resolve(self, compute: DType) -> DType {
        match self {
            SaveDtype::Same => compute,
            SaveDtype::F32 => DType::F32,
            SaveDtype::Bf16 => DType::BF16,
            SaveDtype::F16 => DType::F16,
        }
    }
}
