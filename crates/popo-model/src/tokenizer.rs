//! Tokenizer: `tokenizers` for tokenizer.json plus tokenizer_config.json (special tokens and the
//! chat template). Chat templates render with minijinja configured the way transformers configures
//! Jinja2: trim_blocks + lstrip_blocks, `raise_exception`, a Python-style `tojson`, and the common
//! Python string/dict methods (`strip`, `split`, `startswith`, `items`, ...).

use anyhow::{anyhow, bail, Context, Result};
use minijinja::value::{Kwargs, Value as JValue, ValueKind};
use minijinja::{Environment, Error as JError, ErrorKind as JErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;

mod namespaces;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

#[derive(Clone)]
pub struct Tokenizer {
    tok: tokenizers::Tokenizer,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    pad_token: Option<String>,
    /// tokenizer_config.json as loaded (written back by `save`, with our fields updated).
    config: Map<String, Value>,
}

/// A special token in tokenizer_config.json is a string or an AddedToken object with "content".
fn token_str(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(String::from),
        _ => None,
    }
}

impl Tokenizer {
    /// Loads tokenizer.json, tokenizer_config.json (optional) and chat_template.jinja (optional).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tj = dir.join("tokenizer.json");
        let tok = tokenizers::Tokenizer::from_file(&tj)
            .map_err(|e| anyhow!("cannot load tokenizer {}: {e}", tj.display()))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let config: Map<String, Value> = if cfg_path.exists() {
            let text = std::fs::read_to_string(&cfg_path)
                .with_context(|| format!("cannot read {}", cfg_path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a valid JSON object", cfg_path.display()))?
        } else {
            Map::new()
        };
        let mut chat_template = match config.get("chat_template") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: use "default".
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(String::from),
            Some(other) => bail!(
                "{}: field \"chat_template\" must be a string, got {other}",
                cfg_path.display()
            ),
        };
        let jinja = dir.join("chat_template.jinja");
        if chat_template.is_none() && jinja.exists() {
            chat_template = Some(
                std::fs::read_to_string(&jinja)
                    .with_context(|| format!("cannot read {}", jinja.display()))?,
            );
        }
        let mut t = Self::from_parts(
            tok,
            chat_template,
            token_str(config.get("eos_token")),
            token_str(config.get("pad_token")),
        )?;
        t.bos_token = token_str(config.get("bos_token"));
        t.config = config;
        Ok(t)
    }

    pub fn from_parts(
        tok: tokenizers::Tokenizer,
        chat_template: Option<String>,
        eos_token: Option<String>,
        pad_token: Option<String>,
    ) -> Result<Self> {
        for (what, t) in [("eos_token", &eos_token), ("pad_token", &pad_token)] {
            if let Some(t) = t {
                if tok.token_to_id(t).is_none() {
                    bail!("{what} {t:?} is not in the tokenizer's vocabulary");
                }
            }
        }
        if let Some(src) = &chat_template {
            template_env()
                .template_from_str(src)
                .map_err(|e| anyhow!("chat template does not parse: {}", jinja_error(&e)))?;
        }
        Ok(Self {
            tok,
            chat_template,
            bos_token: None,
            eos_token,
            pad_token,
            config: Map::new(),
        })
    }

    /// Writes tokenizer.json and tokenizer_config.json into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tj = dir.join("tokenizer.json");
        self.tok
            .save(&tj, false)
            .map_err(|e| anyhow!("cannot write {}: {e}", tj.display()))?;
        let mut cfg = self.config.clone();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                cfg.insert(k.into(), Value::String(v.clone()));
            }
        };
        put("chat_template", &self.chat_template);
        put("eos_token", &self.eos_token);
        put("pad_token", &self.pad_token);
        put("bos_token", &self.bos_token);
        cfg.entry("tokenizer_class")
            .or_insert_with(|| Value::String("PreTrainedTokenizerFast".into()));
        let path = dir.join("tokenizer_config.json");
        std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(cfg))?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// A character-level tokenizer over `alphabet` (ids 0.. in order, `<unk>` next, then the special
    /// tokens), for tests and small built-in tasks. The first special token is EOS and pad.
    pub fn char_level(
        alphabet: &str,
        special_tokens: &[&str],
        chat_template: Option<String>,
    ) -> Result<Self> {
        let mut vocab = serde_json::Map::new();
        let mut chars: Vec<char> = Vec::new();
        for c in alphabet.chars() {
            if !chars.contains(&c) {
                chars.push(c);
            }
        }
        for (i, c) in chars.iter().enumerate() {
            vocab.insert(c.to_string(), i.into());
        }
        let unk = chars.len();
        vocab.insert("<unk>".into(), unk.into());
        let added: Vec<Value> = special_tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                vocab.insert(t.to_string(), (unk + 1 + i).into());
                serde_json::json!({"id": unk + 1 + i, "content": t, "single_word": false,
                    "lstrip": false, "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added, "normalizer": null,
            "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "[\\s\\S]"},
                              "behavior": "Isolated", "invert": false},
            "post_processor": null,
            "decoder": {"type": "Fuse"},
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
        });
        let tok: tokenizers::Tokenizer = json
            .to_string()
            .parse()
            .map_err(|e| anyhow!("cannot build char tokenizer: {e}"))?;
        let eos = special_tokens.first().map(|s| s.to_string());
        Self::from_parts(tok, chat_template, eos.clone(), eos)
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .tok
            .encode(text, add_special_tokens)
            .map_err(|e| anyhow!("tokenizer failed to encode: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.tok
            .decode(ids, skip_special_tokens)
            .map_err(|e| anyhow!("tokenizer failed to decode: {e}"))
    }

    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token
            .as_deref()
            .and_then(|t| self.tok.token_to_id(t))
    }
    /// The pad token, falling back to EOS (as most chat models are trained).
    pub fn pad_token_id(&self) -> Option<u32> {
        self.pad_token
            .as_deref()
            .and_then(|t| self.tok.token_to_id(t))
            .or_else(|| self.eos_token_id())
    }
    pub fn token_to_id(&self, tok: &str) -> Option<u32> {
        self.tok.token_to_id(tok)
    }
    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.tok
    }

    /// messages: [{"role": "system"|"user"|"assistant", "content": ...}], rendered with minijinja exactly like transformers.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let src = self
            .chat_template
            .as_deref()
            .context("this tokenizer has no chat_template (tokenizer_config.json)")?;
        render_chat_template(
            src,
            messages,
            add_generation_prompt,
            self.bos_token.as_deref(),
            self.eos_token.as_deref(),
            self.pad_token.as_deref(),
        )
    }
}

/// Renders a chat template with the variables transformers passes.
pub fn render_chat_template(
    src: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: Option<&str>,
    eos_token: Option<&str>,
    pad_token: Option<&str>,
) -> Result<String> {
    namespaces::check(src).map_err(|r| anyhow!("chat template refused: {r}"))?;
    let env = template_env();
    let tmpl = env
        .template_from_str(src)
        .map_err(|e| anyhow!("chat template does not parse: {}", jinja_error(&e)))?;
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token.unwrap_or(""),
        eos_token => eos_token.unwrap_or(""),
        pad_token => pad_token,
    };
    tmpl.render(ctx)
        .map_err(|e| anyhow!("chat template failed to render: {}", jinja_error(&e)))
}

/// A minijinja error and its causes, one line: kind, detail and template line (`{e}`), without
/// the source excerpt of the alternate form `{e:#}`, which minijinja 2.24 renders by subtracting
/// span columns that can be reversed: `{% for in messages %}{% endfor %}` panicked with an
/// overflow (found by fuzzing, fuzz/crashes/chat_template/).
fn jinja_error(e: &JError) -> String {
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        msg.push_str(&format!(": {c}"));
        cause = c.source();
    }
    msg
}

/// Instructions a chat template may run per render: a real template spends a few hundred a
/// message; a hostile one (`range(10000)` nested three deep, found while fuzzing) stops within
/// milliseconds with "engine ran out of fuel" instead of running for hours.
pub const TEMPLATE_FUEL: u64 = 1_000_000;

fn template_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_function("raise_exception", |msg: String| -> Result<String, JError> {
        Err(JError::new(JErrorKind::InvalidOperation, msg))
    });
    env.add_filter("tojson", tojson);
    env.set_unknown_method_callback(py_method);
    env
}

/// Python's `json.dumps(x, ensure_ascii=False, indent=indent)`, as transformers' `tojson`.
fn tojson(v: JValue, kwargs: Kwargs) -> Result<JValue, JError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let _: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&v)
        .map_err(|e| JError::new(JErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    py_dumps(&json, indent, 0, &mut out);
    Ok(JValue::from_safe_string(out))
}

fn py_dumps(v: &Value, indent: Option<usize>, level: usize, out: &mut String) {
    let (item_sep, newline) = match indent {
        Some(_) => (",", true),
        None => (", ", false),
    };
    let pad = |out: &mut String, l: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * l));
        }
    };
    match v {
        Value::Array(a) if !a.is_empty() => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                pad(out, level + 1);
                py_dumps(x, indent, level + 1, out);
            }
            if newline {
                pad(out, level);
            }
            out.push(']');
        }
        Value::Object(m) if !m.is_empty() => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                pad(out, level + 1);
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push_str(": ");
                py_dumps(x, indent, level + 1, out);
            }
            if newline {
                pad(out, level);
            }
            out.push('}');
        }
        other => out.push_str(&serde_json::to_string(other).unwrap_or_default()),
    }
}

fn arg_str(args: &[JValue], i: usize) -> Option<String> {
    args.get(i)
        .filter(|v| !v.is_none() && !v.is_undefined())
        .map(|v| v.to_string())
}

/// The Python methods chat templates call on strings and dicts.
fn py_method(
    _state: &minijinja::State,
    value: &JValue,
    method: &str,
    args: &[JValue],
) -> Result<JValue, JError> {
    let unknown = || JError::new(JErrorKind::UnknownMethod, format!("no method {method:?}"));
    if let Some(s) = value.as_str() {
        let chars = arg_str(args, 0);
        let strip_set = |c: char| match &chars {
            Some(set) => set.contains(c),
            None => c.is_whitespace(),
        };
        return Ok(match method {
            "strip" => JValue::from(s.trim_matches(strip_set)),
            "lstrip" => JValue::from(s.trim_start_matches(strip_set)),
            "rstrip" => JValue::from(s.trim_end_matches(strip_set)),
            "startswith" => JValue::from(s.starts_with(chars.as_deref().unwrap_or(""))),
            "endswith" => JValue::from(s.ends_with(chars.as_deref().unwrap_or(""))),
            "upper" => JValue::from(s.to_uppercase()),
            "lower" => JValue::from(s.to_lowercase()),
            "replace" => {
                let (from, to) = (
                    arg_str(args, 0).unwrap_or_default(),
                    arg_str(args, 1).unwrap_or_default(),
                );
                JValue::from(s.replace(&from, &to))
            }
            "split" => {
                let parts: Vec<JValue> = match &chars {
                    Some(sep) => s.split(sep.as_str()).map(JValue::from).collect(),
                    None => s.split_whitespace().map(JValue::from).collect(),
                };
                JValue::from(parts)
            }
            "find" => JValue::from(
                s.find(chars.as_deref().unwrap_or(""))
                    .map(|i| s[..i].chars().count() as i64)
                    .unwrap_or(-1),
            ),
            "count" => JValue::from(s.matches(chars.as_deref().unwrap_or("")).count()),
            _ => return Err(unknown()),
        });
    }
    if value.kind() == ValueKind::Map {
        let keys: Vec<JValue> = value.try_iter()?.collect();
        return Ok(match method {
            "items" => JValue::from(
                keys.into_iter()
                    .map(|k| {
                        let v = value.get_item(&k).unwrap_or_default();
                        JValue::from(vec![k, v])
                    })
                    .collect::<Vec<_>>(),
            ),
            "keys" => JValue::from(keys),
            "values" => JValue::from(
                keys.iter()
                    .map(|k| value.get_item(k).unwrap_or_default())
                    .collect::<Vec<_>>(),
            ),
            "get" => {
                let key = args.first().cloned().unwrap_or_default();
                match value.get_item(&key) {
                    Ok(v) if !v.is_undefined() => v,
                    _ => args.get(1).cloned().unwrap_or(JValue::from(())),
                }
            }
            _ => return Err(unknown()),
        });
    }
    Err(unknown())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_methods_and_tojson() {
        let src = "{{ ' a b '.strip() }}|{{ 'x</think>y'.split('</think>')[-1] }}|{{ 'abc'.startswith('ab') }}|{{ {'k': [1, 'é']} | tojson }}|{{ d.get('z', 3) }}";
        let env = template_env();
        let out = env
            .render_str(
                src,
                minijinja::context! { d => minijinja::context!{ a => 1 } },
            )
            .unwrap();
        assert_eq!(out, "a b|y|True|{\"k\": [1, \"é\"]}|3");
    }

    #[test]
    fn char_level_round_trip_and_save() {
        let t =
            Tokenizer::char_level("ab c\n", &["<eos>"], Some("{{ bos_token }}x".into())).unwrap();
        assert_eq!(t.encode("z", false).unwrap(), vec![5]);
        let ids = t.encode("ab\nc<eos>", false).unwrap();
        assert_eq!(ids, vec![0, 1, 4, 3, 6]);
        assert_eq!(t.decode(&ids, true).unwrap(), "ab\nc");
        assert_eq!(t.eos_token_id(), Some(6));
        assert_eq!(t.vocab_size(), 7);
        let dir = tempfile::tempdir().unwrap();
        t.save(dir.path()).unwrap();
        let u = Tokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(u.encode("ab\nc<eos>", false).unwrap(), ids);
        assert_eq!(u.chat_template(), t.chat_template());
        assert_eq!(u.pad_token_id(), Some(6));
    }

    #[test]
    fn raise_exception_is_an_error() {
        let err = render_chat_template(
            "{{ raise_exception('no system role') }}",
            &[],
            false,
            None,
            None,
            None,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("no system role"));
    }
}
