//! LoRA adapters in PEFT's on-disk format: `adapter_model.safetensors` (keys
//! `base_model.model.<module>.lora_A.weight` [r, in] and `.lora_B.weight` [out, r]) and
//! `adapter_config.json`. What popo writes, PEFT, transformers and vLLM load as it is; what PEFT
//! writes for a LoRA on the layers' projections, popo loads. Anything popo cannot reproduce
//! (DoRA, per-module ranks, a bias, saved full modules) is refused by name rather than ignored.

use crate::hub::{load_pretrained, resolve_model_path, Pretrained};
use crate::model::{lora_target_matches, LoraWeights, Model, LORA_MODULES};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
const KEY_PREFIX: &str = "base_model.model.";

/// The hyper-parameters of a LoRA, as in PEFT's `LoraConfig`.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Module names (`q_proj`) or dotted path suffixes; see [`lora_target_matches`].
    pub target_modules: Vec<String>,
    /// rsLoRA: scale alpha / sqrt(r) instead of alpha / r.
    pub use_rslora: bool,
}

impl LoraSpec {
    /// The factor on the adapter's output.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }
}

/// An adapter read from disk.
pub struct Adapter {
    pub spec: LoraSpec,
    /// `base_model_name_or_path` (may be empty).
    pub base_model: String,
    pub weights: LoraWeights,
}

/// The dtype adapters are kept in: f32 over a bf16 / f16 / f32 base, f64 over an f64 base.
pub fn adapter_dtype(base: DType) -> DType {
    if base == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Fresh adapters as PEFT initialises them by default: A Kaiming-uniform with a = sqrt(5)
/// (uniform in +-1/sqrt(in)), B zero, so the adapted model starts equal to the base. Drawn
/// from `seed` in module order.
pub fn init_adapters(model: &Model, spec: &LoraSpec, seed: u64) -> Result<LoraWeights> {
    let dt = adapter_dtype(model.dtype());
    let mut rng = crate::data::SplitMix64(seed);
    let mut out = HashMap::new();
    for (path, n_in, n_out) in model.lora_modules()? {
        if !lora_target_matches(&path, &spec.target_modules) {
            continue;
        }
        let bound = 1.0 / (n_in as f64).sqrt();
        let a: Vec<f64> = (0..spec.r * n_in)
            .map(|_| {
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                (2.0 * u - 1.0) * bound
            })
            .collect();
        let a = Tensor::from_vec(a, (spec.r, n_in), model.device())?.to_dtype(dt)?;
        let b = Tensor::zeros((n_out, spec.r), dt, model.device())?;
        out.insert(path, (a, b));
    }
    if out.is_empty() {
        bail!(
            "model.lora.target_modules {:?} matches no projection (choose from {})",
            spec.target_modules,
            LORA_MODULES.join(", ")
        );
    }
    Ok(out)
}

/// `adapter_config.json` of `spec`, in PEFT's field names.
pub fn adapter_config_json(spec: &LoraSpec, base_model: &str) -> Value {
    // PEFT types lora_alpha as an int; keep whole values integral so its loader is content.
    let alpha = if spec.alpha.fract() == 0.0 && spec.alpha.abs() < 1e15 {
        json!(spec.alpha as i64)
    } else {
        json!(spec.alpha)
    };
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": spec.r,
        "lora_alpha": alpha,
        "lora_dropout": spec.dropout,
        "target_modules": spec.target_modules,
        "bias": "none",
        "use_rslora": spec.use_rslora,
        "use_dora": false,
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "rank_pattern": {},
        "alpha_pattern": {},
    })
}

/// Writes `adapter_model.safetensors` (f32, or f64 adapters as they are) and
/// `adapter_config.json` into `dir` (which the caller makes atomic, as checkpoints do).
pub fn save_adapter(
    dir: &Path,
    spec: &LoraSpec,
    base_model: &str,
    weights: &LoraWeights,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tensors = HashMap::new();
    for (path, (a, b)) in weights {
        let cpu = |t: &Tensor| -> Result<Tensor> {
            let dt = if t.dtype() == DType::F64 {
                DType::F64
            } else {
                DType::F32
            };
            Ok(t.to_dtype(dt)?.to_device(&Device::Cpu)?)
        };
        tensors.insert(format!("{KEY_PREFIX}{path}.lora_A.weight"), cpu(a)?);
        tensors.insert(format!("{KEY_PREFIX}{path}.lora_B.weight"), cpu(b)?);
    }
    let wpath = dir.join(ADAPTER_WEIGHTS);
    candle_core::safetensors::save(&tensors, &wpath)
        .with_context(|| format!("cannot write {}", wpath.display()))?;
    let cpath = dir.join(ADAPTER_CONFIG);
    let text = serde_json::to_string_pretty(&adapter_config_json(spec, base_model))?;
    std::fs::write(&cpath, text).with_context(|| format!("cannot write {}", cpath.display()))
}

/// Whether `dir` holds a PEFT adapter.
pub fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
}

/// Reads a PEFT LoRA adapter onto `device`, its tensors in [`adapter_dtype`]`(base_dtype)`.
pub fn read_adapter(dir: &Path, device: &Device, base_dtype: DType) -> Result<Adapter> {
    let cpath = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&cpath)
        .with_context(|| format!("cannot read {}", cpath.display()))?;
    let cfg: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", cpath.display()))?;
    let (spec, base_model) =
        parse_config(&cfg).with_context(|| format!("in {}", cpath.display()))?;
    let wpath = dir.join(ADAPTER_WEIGHTS);
    if !wpath.is_file() {
        bail!(
            "{}: no {ADAPTER_WEIGHTS} (adapter_model.bin, PyTorch's pickle format, is not read: save with safe_serialization=True)",
            dir.display()
        );
    }
    let raw = candle_core::safetensors::load(&wpath, device)
        .with_context(|| format!("cannot read {}", wpath.display()))?;
    let weights = pair_tensors(raw, adapter_dtype(base_dtype))
        .with_context(|| format!("in {}", wpath.display()))?;
    for path in weights.keys() {
        if !lora_target_matches(path, &spec.target_modules) {
            bail!(
                "{}: tensor for {path}, which target_modules {:?} does not name",
                wpath.display(),
                spec.target_modules
            );
        }
    }
    Ok(Adapter {
        spec,
        base_model,
        weights,
    })
}

fn parse_config(cfg: &Value) -> Result<(LoraSpec, String)> {
    let field = |k: &str| cfg.get(k).filter(|v| !v.is_null());
    let peft_type = field("peft_type").and_then(Value::as_str).unwrap_or("");
    if peft_type != "LORA" {
        bail!("peft_type is {peft_type:?}: only \"LORA\" adapters are supported");
    }
    let r = field("r")
        .and_then(Value::as_u64)
        .filter(|&r| r > 0)
        .context("`r` must be a positive integer")? as usize;
    let alpha = field("lora_alpha")
        .and_then(Value::as_f64)
        .context("`lora_alpha` must be a number")?;
    let dropout = field("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0);
    if !(0.0..1.0).contains(&dropout) {
        bail!("`lora_dropout` must be in [0, 1), got {dropout}");
    }
    let target_modules = match field("target_modules") {
        Some(Value::String(s)) if s == "all-linear" => {
            LORA_MODULES.iter().map(|s| s.to_string()).collect()
        }
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .context("`target_modules` must be a list of module names")?,
        other => bail!(
            "`target_modules` {other:?} is not supported: use a list of module names or \"all-linear\""
        ),
    };
    let refuse = |k: &str, ok: &dyn Fn(&Value) -> bool| -> Result<()> {
        match field(k) {
            Some(v) if !ok(v) => bail!("`{k}` = {v} is not supported"),
            _ => Ok(()),
        }
    };
    let empty = |v: &Value| {
        v.as_object().is_some_and(|o| o.is_empty()) || v.as_array().is_some_and(|a| a.is_empty())
    };
    refuse("bias", &|v| v == "none")?;
    refuse("use_dora", &|v| v == false)?;
    refuse("fan_in_fan_out", &|v| v == false)?;
    refuse("rank_pattern", &empty)?;
    refuse("alpha_pattern", &empty)?;
    refuse("modules_to_save", &empty)?;
    refuse("layers_to_transform", &empty)?;
    refuse("layer_replication", &empty)?;
    refuse("exclude_modules", &empty)?;
    refuse("target_parameters", &empty)?;
    refuse("trainable_token_indices", &empty)?;
    refuse("alora_invocation_tokens", &empty)?;
    refuse("lora_bias", &|v| v == false)?;
    refuse("use_qalora", &|v| v == false)?;
    let use_rslora = field("use_rslora")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let base = field("base_model_name_or_path")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let spec = LoraSpec {
        r,
        alpha,
        dropout,
        target_modules,
        use_rslora,
    };
    Ok((spec, base))
}

/// `base_model.model.<module>.lora_{A,B}[.default].weight` -> module -> (A, B).
fn pair_tensors(raw: HashMap<String, Tensor>, dt: DType) -> Result<LoraWeights> {
    let mut a_of: HashMap<String, Tensor> = HashMap::new();
    let mut b_of: HashMap<String, Tensor> = HashMap::new();
    for (key, t) in raw {
        let k = key.replace(".default.weight", ".weight");
        let path = k.strip_prefix(KEY_PREFIX);
        let (path, is_a) = match path {
            Some(p) if p.ends_with(".lora_A.weight") => (&p[..p.len() - 14], true),
            Some(p) if p.ends_with(".lora_B.weight") => (&p[..p.len() - 14], false),
            _ => bail!(
                "unexpected tensor `{key}` (expected {KEY_PREFIX}<module>.lora_A.weight / .lora_B.weight)"
            ),
        };
        let t = t.to_dtype(dt)?;
        let map = if is_a { &mut a_of } else { &mut b_of };
        map.insert(path.to_string(), t);
    }
    let mut out = HashMap::new();
    for (path, a) in a_of {
        let b = b_of
            .remove(&path)
            .ok_or_else(|| anyhow!("`{KEY_PREFIX}{path}.lora_A.weight` has no lora_B"))?;
        out.insert(path, (a, b));
    }
    if let Some(path) = b_of.keys().next() {
        bail!("`{KEY_PREFIX}{path}.lora_B.weight` has no lora_A");
    }
    if out.is_empty() {
        bail!("no LoRA tensors");
    }
    Ok(out)
}

/// Where an adapter's base model is: `base` when given, else its `base_model_name_or_path`.
pub fn adapter_base_dir(
    adapter_dir: &Path,
    adapter: &Adapter,
    base: Option<&str>,
) -> Result<std::path::PathBuf> {
    let name = base.unwrap_or(&adapter.base_model);
    if name.is_empty() {
        bail!(
            "{}: adapter_config.json names no base_model_name_or_path; give the base model (--base)",
            adapter_dir.display()
        );
    }
    // A relative path is tried from the adapter's own directory first (an adapter kept beside
    // its base), then as resolve_model_path reads it (the working directory, the hub cache).
    let beside = adapter_dir.join(name);
    if Path::new(name).is_relative() && beside.join("config.json").is_file() {
        return Ok(beside);
    }
    resolve_model_path(name).with_context(|| {
        format!(
            "base model of the adapter in {} (from {})",
            adapter_dir.display(),
            if base.is_some() {
                "--base"
            } else {
                "base_model_name_or_path"
            }
        )
    })
}

/// Loads a model for inference, with an adapter: `dir` is an HF model directory (then `adapter`,
/// if any, is put on it), or an adapter directory such as a LoRA checkpoint (then its base is
/// `base`, or the adapter's `base_model_name_or_path`). The tokenizer is the base's, or the
/// adapter directory's when the base has none.
pub fn load_with_adapter(
    dir: &Path,
    adapter: Option<&Path>,
    base: Option<&str>,
    device: &Device,
    dtype: DType,
) -> Result<Pretrained> {
    let (base_dir, adapter_dir) = match adapter {
        Some(a) => (dir.to_path_buf(), Some(a)),
        None if is_adapter_dir(dir) && !dir.join("config.json").is_file() => {
            let ad = read_adapter(dir, device, dtype)?;
            let base_dir = adapter_base_dir(dir, &ad, base)?;
            return attach(load_pretrained(&base_dir, device, dtype)?, dir, ad);
        }
        None => (dir.to_path_buf(), None),
    };
    let pre = load_pretrained(&base_dir, device, dtype)?;
    match adapter_dir {
        None => Ok(pre),
        Some(a) => attach(pre, a, read_adapter(a, device, dtype)?),
    }
}

fn attach(mut pre: Pretrained, dir: &Path, ad: Adapter) -> Result<Pretrained> {
    pre.model = pre
        .model
        .with_lora(&ad.weights, ad.spec.scale(), ad.spec.dropout)
        .with_context(|| format!("adapter in {} does not fit the base model", dir.display()))?;
    if pre.tokenizer.is_none() && dir.join("tokenizer.json").is_file() {
        pre.tokenizer = Some(crate::tokenizer::Tokenizer::from_dir(dir)?);
    }
    Ok(pre)
}

/// The base weights (HF names) with every adapter merged: W + s B A, summed in f32 (f64 for
/// f64 weights) and rounded once to the weight's dtype, as PEFT's `merge_and_unload` computes.
pub fn merge_weights(
    weights: &mut [(String, Tensor)],
    spec: &LoraSpec,
    adapters: &LoraWeights,
) -> Result<()> {
    let mut left: Vec<&String> = adapters.keys().collect();
    for (name, w) in weights.iter_mut() {
        let Some(path) = name.strip_suffix(".weight") else {
            continue;
        };
        let Some((a, b)) = adapters.get(path) else {
            continue;
        };
        let dt = adapter_dtype(w.dtype());
        let delta = (b.to_dtype(dt)?.matmul(&a.to_dtype(dt)?)? * spec.scale())?;
        if delta.dims() != w.dims() {
            bail!(
                "adapter for {path} gives a [{}] update, the base weight {name} is {:?}",
                delta
                    .dims()
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                w.dims()
            );
        }
        *w = (w.to_dtype(dt)? + delta.to_device(w.device())?)?.to_dtype(w.dtype())?;
        left.retain(|p| *p != path);
    }
    if let Some(p) = left.first() {
        bail!("adapter for {p}, which the base model does not have");
    }
    Ok(())
}

/// Writes the adapter in `adapter_dir` merged into its base (`base`, or its
/// base_model_name_or_path) as a plain HF model in `out`, weights in `save_dtype` (`None`: the
/// base's torch_dtype, f32 when it names none). Merged in f32 from the base as stored, so
/// the only rounding is the final one. Written into a temporary sibling and renamed, so `out`
/// is complete or absent; an existing `out` is refused.
pub fn export_merged(
    adapter_dir: &Path,
    base: Option<&str>,
    out: &Path,
    save_dtype: Option<DType>,
) -> Result<()> {
    crate::hub::write_new_dir(out, |tmp| {
        let dev = Device::Cpu;
        let ad = read_adapter(adapter_dir, &dev, DType::F32)?;
        let base_dir = adapter_base_dir(adapter_dir, &ad, base)?;
        let pre = load_pretrained(&base_dir, &dev, DType::F32)?;
        let mut weights: Vec<(String, Tensor)> = {
            let data = pre.varmap.data().lock().unwrap_or_else(|e| e.into_inner());
            data.iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                .collect()
        };
        merge_weights(&mut weights, &ad.spec, &ad.weights).with_context(|| {
            format!(
                "merging {} into {}",
                adapter_dir.display(),
                base_dir.display()
            )
        })?;
        let dtype = match save_dtype {
            Some(d) => d,
            None => match pre.config.torch_dtype.as_deref() {
                Some("bfloat16") => DType::BF16,
                Some("float16") => DType::F16,
                _ => DType::F32,
            },
        };
        crate::hub::save_weights(
            tmp,
            &pre.config,
            &weights,
            dtype,
            pre.tokenizer.as_ref(),
            pre.generation_config.as_ref(),
            crate::hub::DEFAULT_SHARD_BYTES,
        )
    })
}
