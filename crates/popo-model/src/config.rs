//! `ModelConfig`: the parts of a Hugging Face `config.json` that the transformer needs.
//!
//! Parsing is explicit rather than a plain serde derive so that every unsupported field value is a
//! clear error naming the file and the field, and so that unknown keys survive a load/save round trip.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};
use std::path::Path;

/// The model families popo implements; they share one transformer (see `model.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Qwen2 / Qwen2.5 (incl. Math): q/k/v projections carry a bias.
    Qwen2,
    /// Qwen3 dense: RMS norms on q and k per head, explicit `head_dim`.
    Qwen3,
    /// Llama 3 / 3.1 / 3.2: optional `llama3` rope scaling.
    Llama,
}

impl Arch {
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Llama => "llama",
        }
    }
    pub fn architecture(self) -> &'static str {
        match self {
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
            Arch::Llama => "LlamaForCausalLM",
        }
    }
    fn from_names(model_type: Option<&str>, architectures: &[String]) -> Result<Arch> {
        if let Some(mt) = model_type {
            return match mt {
                "qwen2" => Ok(Arch::Qwen2),
                "qwen3" => Ok(Arch::Qwen3),
                "llama" => Ok(Arch::Llama),
                other => bail!("unsupported model_type {other:?} (supported: qwen2, qwen3, llama)"),
            };
        }
        for a in architectures {
            match a.as_str() {
                "Qwen2ForCausalLM" => return Ok(Arch::Qwen2),
                "Qwen3ForCausalLM" => return Ok(Arch::Qwen3),
                "LlamaForCausalLM" => return Ok(Arch::Llama),
                _ => {}
            }
        }
        bail!("unsupported or missing model_type/architectures {architectures:?} (supported: Qwen2ForCausalLM, Qwen3ForCausalLM, LlamaForCausalLM)")
    }
}

/// Rotary-embedding frequency scaling (`rope_scaling` / `rope_parameters` in config.json).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Llama 3.x: long wavelengths divided by `factor`, a smooth ramp in between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Explicit per-head width (Qwen3, some Llamas); `None` means hidden_size / num_attention_heads.
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on the q/k/v projections (always on for Qwen2).
    pub attention_bias: bool,
    /// Bias on o_proj (Llama/Qwen3 with `attention_bias: true`; never for Qwen2).
    pub o_proj_bias: bool,
    pub rope_scaling: Option<RopeScaling>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Vec<u32>,
    /// dtype recorded in config.json (`torch_dtype`), e.g. "bfloat16".
    pub torch_dtype: Option<String>,
    /// Every other key of config.json, written back unchanged by `to_hf_json`.
    pub extra: Map<String, Value>,
}

fn get_usize(m: &Map<String, Value>, k: &str) -> Result<Option<usize>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|x| Some(x as usize))
            .ok_or_else(|| anyhow!("field {k:?} must be a non-negative integer, got {v}")),
    }
}
fn req_usize(m: &Map<String, Value>, k: &str) -> Result<usize> {
    get_usize(m, k)?.ok_or_else(|| anyhow!("missing required field {k:?}"))
}
fn get_f64(m: &Map<String, Value>, k: &str) -> Result<Option<f64>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| anyhow!("field {k:?} must be a number, got {v}")),
    }
}
fn get_bool(m: &Map<String, Value>, k: &str) -> Result<Option<bool>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| anyhow!("field {k:?} must be a boolean, got {v}")),
    }
}
fn token_ids(v: Option<&Value>, k: &str) -> Result<Vec<u32>> {
    match v {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Number(n)) => Ok(vec![n
            .as_u64()
            .ok_or_else(|| anyhow!("field {k:?} must be a token id"))?
            as u32]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_u64()
                    .map(|x| x as u32)
                    .ok_or_else(|| anyhow!("field {k:?} must hold token ids, got {x}"))
            })
            .collect(),
        Some(other) => bail!("field {k:?} must be a token id or a list of them, got {other}"),
    }
}

/// Keys this struct owns; everything else goes to `extra`.
const KNOWN: &[&str] = &[
    "model_type",
    "architectures",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "rope_theta",
    "max_position_embeddings",
    "tie_word_embeddings",
    "attention_bias",
    "rope_scaling",
    "rope_parameters",
    "bos_token_id",
    "eos_token_id",
    "torch_dtype",
    "dtype",
    "hidden_act",
];

fn parse_rope(v: &Value) -> Result<(Option<RopeScaling>, Option<f64>)> {
    let m = match v {
        Value::Null => return Ok((None, None)),
        Value::Object(m) => m,
        other => bail!("field \"rope_scaling\" must be an object, got {other}"),
    };
    let theta = get_f64(m, "rope_theta")?;
    let ty = m
        .get("rope_type")
        .or_else(|| m.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("default");
    let factor = || -> Result<f64> {
        get_f64(m, "factor")?.ok_or_else(|| anyhow!("rope_scaling of type {ty:?} needs \"factor\""))
    };
    let scaling = match ty {
        "default" => None,
        "linear" => Some(RopeScaling::Linear { factor: factor()? }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: get_f64(m, "low_freq_factor")?.unwrap_or(1.0),
            high_freq_factor: get_f64(m, "high_freq_factor")?.unwrap_or(4.0),
            original_max_position_embeddings: get_usize(m, "original_max_position_embeddings")?
                .unwrap_or(8192),
        }),
        other => {
            bail!("unsupported rope_scaling type {other:?} (supported: default, linear, llama3)")
        }
    };
    Ok((scaling, theta))
}

/// The architecture named by `model_type` and `architectures`.
fn arch_of(m: &Map<String, Value>) -> Result<Arch> {
    let architectures: Vec<String> = m
        .get("architectures")
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Arch::from_names(m.get("model_type").and_then(|x| x.as_str()), &architectures)
}

/// Refuses the fields that would change the model into one this transformer does not compute
/// (another activation, sliding windows, MLP biases, other layer types), rather than load it and
/// give wrong log-probs.
fn refuse_unsupported(m: &Map<String, Value>) -> Result<()> {
    if let Some(act) = m.get("hidden_act").and_then(|x| x.as_str()) {
        if act != "silu" {
            bail!("unsupported hidden_act {act:?} (only silu)");
        }
    }
    if get_bool(m, "use_sliding_window")?.unwrap_or(false) {
        bail!("unsupported field use_sliding_window=true (sliding-window attention is not implemented)");
    }
    if get_bool(m, "mlp_bias")?.unwrap_or(false) {
        bail!("unsupported field mlp_bias=true");
    }
    if let Some(Value::Array(layers)) = m.get("layer_types") {
        if layers.iter().any(|l| l.as_str() != Some("full_attention")) {
            bail!("unsupported field layer_types: only full_attention layers are implemented");
        }
    }
    Ok(())
}

/// The attention's shape, checked: heads a multiple of the KV heads, an even head width.
struct Heads {
    hidden_size: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    /// As written in config.json (None: hidden_size / num_attention_heads).
    head_dim: Option<usize>,
}

impl Heads {
    fn of(m: &Map<String, Value>) -> Result<Self> {
        let hidden_size = req_usize(m, "hidden_size")?;
        let num_attention_heads = req_usize(m, "num_attention_heads")?;
        let num_key_value_heads =
            get_usize(m, "num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_attention_heads == 0
            || num_key_value_heads == 0
            || num_attention_heads % num_key_value_heads != 0
        {
            bail!("num_attention_heads ({num_attention_heads}) must be a positive multiple of num_key_value_heads ({num_key_value_heads})");
        }
        let head_dim = get_usize(m, "head_dim")?;
        let hd = head_dim.unwrap_or(hidden_size / num_attention_heads);
        if head_dim.is_none() && hidden_size % num_attention_heads != 0 {
            bail!("hidden_size ({hidden_size}) is not divisible by num_attention_heads ({num_attention_heads}) and head_dim is missing");
        }
        if hd % 2 != 0 {
            bail!("head_dim ({hd}) must be even for rotary embeddings");
        }
        Ok(Self {
            hidden_size,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
        })
    }
}

/// RoPE scaling and theta from `rope_scaling` or (newer transformers) `rope_parameters`; the
/// first field that gives one wins.
fn rope_fields(m: &Map<String, Value>) -> Result<(Option<RopeScaling>, Option<f64>)> {
    let (mut rope_scaling, mut theta_in_params) = (None, None);
    for key in ["rope_scaling", "rope_parameters"] {
        if let Some(r) = m.get(key) {
            let (s, t) = parse_rope(r).with_context(|| format!("in field {key:?}"))?;
            rope_scaling = rope_scaling.or(s);
            theta_in_params = theta_in_params.or(t);
        }
    }
    Ok((rope_scaling, theta_in_params))
}

impl ModelConfig {
    /// Reads and validates a Hugging Face config.json.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        Self::from_hf_json(&v).with_context(|| format!("in model config {}", path.display()))
    }

    /// Parses the JSON value of a config.json.
    pub fn from_hf_json(v: &Value) -> Result<Self> {
        let m = v
            .as_object()
            .ok_or_else(|| anyhow!("config must be a JSON object"))?;
        let arch = arch_of(m)?;
        refuse_unsupported(m)?;
        let heads = Heads::of(m)?;
        let (rope_scaling, theta_in_params) = rope_fields(m)?;
        let attention_bias_field = get_bool(m, "attention_bias")?.unwrap_or(false);
        let (attention_bias, o_proj_bias) = match arch {
            Arch::Qwen2 => (true, false),
            Arch::Qwen3 | Arch::Llama => (attention_bias_field, attention_bias_field),
        };
        let torch_dtype = m
            .get("torch_dtype")
            .or_else(|| m.get("dtype"))
            .and_then(|x| x.as_str())
            .map(String::from);
        let extra = m
            .iter()
            .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let cfg = ModelConfig {
            arch,
            vocab_size: req_usize(m, "vocab_size")?,
            hidden_size: heads.hidden_size,
            intermediate_size: req_usize(m, "intermediate_size")?,
            num_hidden_layers: req_usize(m, "num_hidden_layers")?,
            num_attention_heads: heads.num_attention_heads,
            num_key_value_heads: heads.num_key_value_heads,
            head_dim: heads.head_dim,
            rms_norm_eps: get_f64(m, "rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: get_f64(m, "rope_theta")?
                .or(theta_in_params)
                .unwrap_or(10_000.0),
            max_position_embeddings: get_usize(m, "max_position_embeddings")?.unwrap_or(32768),
            tie_word_embeddings: get_bool(m, "tie_word_embeddings")?.unwrap_or(false),
            attention_bias,
            o_proj_bias,
            rope_scaling,
            bos_token_id: token_ids(m.get("bos_token_id"), "bos_token_id")?
                .first()
                .copied(),
            eos_token_id: token_ids(m.get("eos_token_id"), "eos_token_id")?,
            torch_dtype,
            extra,
        };
        if cfg.checked_num_parameters().is_none() {
            bail!("the model's shape is too large: its parameter count overflows (vocab_size, hidden_size, intermediate_size, num_hidden_layers)");
        }
        Ok(cfg)
    }

    /// The config.json that transformers/vLLM expect for this model.
    pub fn to_hf_json(&self) -> Value {
        let mut m = self.extra.clone();
        m.insert("model_type".into(), json!(self.arch.model_type()));
        m.insert("architectures".into(), json!([self.arch.architecture()]));
        m.insert("vocab_size".into(), json!(self.vocab_size));
        m.insert("hidden_size".into(), json!(self.hidden_size));
        m.insert("intermediate_size".into(), json!(self.intermediate_size));
        m.insert("num_hidden_layers".into(), json!(self.num_hidden_layers));
        m.insert(
            "num_attention_heads".into(),
            json!(self.num_attention_heads),
        );
        m.insert(
            "num_key_value_heads".into(),
            json!(self.num_key_value_heads),
        );
        if let Some(hd) = self.head_dim {
            m.insert("head_dim".into(), json!(hd));
        }
        m.insert("rms_norm_eps".into(), json!(self.rms_norm_eps));
        m.insert("rope_theta".into(), json!(self.rope_theta));
        m.insert(
            "max_position_embeddings".into(),
            json!(self.max_position_embeddings),
        );
        m.insert(
            "tie_word_embeddings".into(),
            json!(self.tie_word_embeddings),
        );
        if self.arch != Arch::Qwen2 {
            m.insert("attention_bias".into(), json!(self.attention_bias));
        }
        m.insert("hidden_act".into(), json!("silu"));
        let rs = match &self.rope_scaling {
            None => Value::Null,
            Some(RopeScaling::Linear { factor }) => {
                json!({"rope_type": "linear", "factor": factor})
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings,
            }),
        };
        m.insert("rope_scaling".into(), rs);
        if let Some(b) = self.bos_token_id {
            m.insert("bos_token_id".into(), json!(b));
        }
        match self.eos_token_id.as_slice() {
            [] => {}
            [one] => {
                m.insert("eos_token_id".into(), json!(one));
            }
            many => {
                m.insert("eos_token_id".into(), json!(many));
            }
        }
        if let Some(d) = &self.torch_dtype {
            m.insert("torch_dtype".into(), json!(d));
        }
        Value::Object(m)
    }

    /// A small Qwen2 for tests and the built-in CPU model (untied embeddings, rope_theta 10000).
    pub fn qwen2_tiny(
        vocab_size: usize,
        hidden: usize,
        layers: usize,
        heads: usize,
        kv_heads: usize,
        intermediate: usize,
    ) -> Self {
        ModelConfig {
            arch: Arch::Qwen2,
            vocab_size,
            hidden_size: hidden,
            intermediate_size: intermediate,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim: None,
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            max_position_embeddings: 4096,
            tie_word_embeddings: false,
            attention_bias: true,
            o_proj_bias: false,
            rope_scaling: None,
            bos_token_id: None,
            eos_token_id: vec![],
            torch_dtype: Some("float32".into()),
            extra: Map::new(),
        }
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Number of scalar parameters (embeddings counted once when tied); `usize::MAX` for a
    /// shape too large to count, which `from_hf_json` refuses.
    pub fn num_parameters(&self) -> usize {
        self.checked_num_parameters().unwrap_or(usize::MAX)
    }

    fn checked_num_parameters(&self) -> Option<usize> {
        let n = |x: usize| x as u128;
        let (d, hd) = (n(self.hidden_size), n(self.head_dim()));
        let (h, kv) = (n(self.num_attention_heads), n(self.num_key_value_heads));
        let prod = |xs: &[u128]| xs.iter().try_fold(1u128, |a, &x| a.checked_mul(x));
        let sum = |xs: &[Option<u128>]| xs.iter().try_fold(0u128, |a, &x| a.checked_add(x?));
        let attn = sum(&[
            prod(&[d, h, hd]),
            prod(&[2, d, kv, hd]),
            prod(&[h, hd, d]),
            if self.attention_bias {
                prod(&[h + 2 * kv, hd])
            } else {
                Some(0)
            },
            Some(if self.o_proj_bias { d } else { 0 }),
            Some(if self.arch == Arch::Qwen3 { 2 * hd } else { 0 }),
        ]);
        let layer = sum(&[attn, prod(&[3, d, n(self.intermediate_size)]), Some(2 * d)]);
        let tied = if self.tie_word_embeddings { 1 } else { 2 };
        let emb = prod(&[n(self.vocab_size), d, tied]);
        let total = sum(&[prod(&[n(self.num_hidden_layers), layer?]), emb, Some(d)])?;
        usize::try_from(total).ok()
    }
}
