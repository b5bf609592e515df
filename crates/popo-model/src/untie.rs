//! Writing a tied output layer out as a layer of its own, for inference servers that reload
//! weights in place.
//!
//! Why: vLLM's CPU build keeps a prepacked copy of every linear layer's weight, the LM head's
//! included, and its `reload_weights` repacks only the layers the new checkpoint names. With tied
//! embeddings the checkpoint names no `lm_head.weight`, so after a reload the server samples
//! through the head it started with (measured with popo's sync probe: a log-prob difference of
//! 1.5e-3 after one update of SmolLM2 at lr 1e-5, against 1e-5 from a fresh server). Untied, the
//! head is reloaded and repacked like every other layer. The untied model computes the same
//! function; it costs the server one more vocab x hidden matrix.

use crate::config::ModelConfig;
use crate::hub::{is_weight_file, map_weights, save_weights, write_new_dir, DEFAULT_SHARD_BYTES};
use anyhow::{anyhow, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::path::Path;

const EMBED: &str = "model.embed_tokens.weight";
const HEAD: &str = "lm_head.weight";

/// The same model with its head written out: for a tied `config`, an untied copy of it, and
/// `weights` gain `lm_head.weight`, a copy of the embeddings. An untied config is returned as it is.
pub fn untie_head(
    config: &ModelConfig,
    weights: &mut Vec<(String, Tensor)>,
) -> Result<ModelConfig> {
    let mut cfg = config.clone();
    if !cfg.tie_word_embeddings {
        return Ok(cfg);
    }
    let embed = weights
        .iter()
        .find(|(n, _)| n == EMBED)
        .map(|(_, t)| t.clone())
        .ok_or_else(|| anyhow!("no tensor {EMBED} to write the tied head from"))?;
    weights.retain(|(n, _)| n != HEAD);
    weights.push((HEAD.to_string(), embed));
    cfg.tie_word_embeddings = false;
    Ok(cfg)
}

/// Whether `dir/config.json` says `"tie_word_embeddings": true` (false for a missing or
/// unreadable file: only a readable tied config is untied).
pub fn ties_head(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("tie_word_embeddings")?.as_bool())
        .unwrap_or(false)
}

/// Rewrites the HF checkpoint in `dir` untied (`untie_head`), when its config ties the head;
/// returns whether it did. Other files (tokenizer, generation config) are left alone. Not atomic:
/// write into a directory no reader uses yet.
pub fn untie_checkpoint(dir: &Path) -> Result<bool> {
    write_untied(dir, dir)
}

/// Copies the HF model in `model_dir` (its top-level files) to `out`, which must not exist yet,
/// untied (`copy_untied`): the directory to start vLLM servers on for popo's weight sync.
/// Written whole or not at all (through a temporary sibling); returns whether the head was tied.
pub fn export_untied(model_dir: &Path, out: &Path) -> Result<bool> {
    write_new_dir(out, |tmp| copy_untied(model_dir, tmp))
}

/// Copies the top-level files of `model_dir` into the directory `to` (made if missing), a tied
/// model's weights written untied (`untie_head`) rather than copied; returns whether the head
/// was tied.
pub fn copy_untied(model_dir: &Path, to: &Path) -> Result<bool> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let tied = ties_head(model_dir);
    let entries =
        std::fs::read_dir(model_dir).with_context(|| format!("reading {}", model_dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default();
        // A tied model's weights are written once, by `write_untied`, not copied and rewritten.
        if path.is_file() && !(tied && is_weight_file(&name.to_string_lossy())) {
            let dest = to.join(name);
            std::fs::copy(&path, &dest)
                .with_context(|| format!("copying {} -> {}", path.display(), dest.display()))?;
        }
    }
    write_untied(model_dir, to)
}

/// When `from` holds a tied model: writes its config and weights into `to` untied, every tensor
/// in the checkpoint's common dtype (f32 when it mixes dtypes, so no value changes), and returns
/// true. `from` may be `to`: the weights are in memory before any file is replaced.
fn write_untied(from: &Path, to: &Path) -> Result<bool> {
    if !ties_head(from) {
        return Ok(false);
    }
    let config = ModelConfig::from_file(&from.join("config.json"))?;
    let mut weights = read_all(from)?;
    let mut dtypes = weights.iter().map(|(_, t)| t.dtype());
    let first = dtypes.next().unwrap_or(DType::F32);
    let dtype = if dtypes.all(|d| d == first) {
        first
    } else {
        DType::F32
    };
    let cfg = untie_head(&config, &mut weights)
        .with_context(|| format!("untying the checkpoint in {}", from.display()))?;
    save_weights(to, &cfg, &weights, dtype, None, None, DEFAULT_SHARD_BYTES)?;
    Ok(true)
}

/// Every tensor of the checkpoint in `dir`, in memory, in its file's dtype.
fn read_all(dir: &Path) -> Result<Vec<(String, Tensor)>> {
    // Copied into memory here, before the files are replaced.
    let st = map_weights(dir)?;
    st.tensors()
        .into_iter()
        .map(|(name, _)| {
            let t = st
                .load(&name, &Device::Cpu)
                .map_err(|e| anyhow!("cannot read tensor {name} in {}: {e}", dir.display()))?;
            Ok((name, t))
        })
        .collect()
}
