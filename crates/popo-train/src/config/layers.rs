//! TOML helpers for stacking config layers: parsing `--set` values, merging tables, checking keys
//! against the defaults, and naming the key of a value serde rejects. A file of its own, so that
//! the builder in `mod.rs` and nothing else imports it.

use anyhow::{bail, Result};
use toml::Value;

/// The dotted key of the `key = value` line holding byte `offset` of a serialized config, so that
/// a value serde rejects (an unknown enum variant, a wrong type) is reported with its key.
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let key = text[line_start..].lines().next()?.split_once('=')?.0.trim();
    let section = text[..line_start]
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[')?.strip_suffix(']'));
    Some(match section {
        Some(sec) => format!("{sec}.{key}"),
        None => key.to_string(),
    })
}

/// Where the value a serde error quotes (`unknown variant `x``) is assigned: errors inside the
/// flattened `[rollout]` engine keys come with the whole table's span, not the key's.
pub(super) fn value_offset(text: &str, message: &str) -> Option<usize> {
    let value = message.split('`').nth(1)?;
    text.find(&format!("= \"{value}\""))
}

/// `1e-5` -> float, `true` -> bool, `[1, 2]` -> array, `foo.jsonl` -> string.
pub(super) fn parse_value(raw: &str) -> Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or(Value::String(raw.into())),
        Err(_) => Value::String(raw.trim_matches('"').to_string()),
    }
}

/// `--set model.path=123` means the string "123"; `--set optim.lr=1` means the float 1.0.
pub(super) fn coerce_to_default(defaults: &Value, key: &str, v: Value) -> Value {
    let mut cur = defaults;
    for part in key.split('.') {
        match cur.get(part) {
            Some(next) => cur = next,
            None => return v,
        }
    }
    match (cur, v) {
        (Value::String(_), Value::Integer(i)) => Value::String(i.to_string()),
        (Value::String(_), Value::Float(f)) => Value::String(f.to_string()),
        (Value::String(_), Value::Boolean(b)) => Value::String(b.to_string()),
        (Value::Float(_), Value::Integer(i)) => Value::Float(i as f64),
        (_, v) => v,
    }
}

/// What a config may set: the defaults' keys, and `task.eval`, which the defaults leave out (the
/// held-out split follows `task.rl` unless told otherwise) but which takes `task.rl`'s keys.
pub(super) fn settable(defaults: &Value) -> Value {
    let mut keys = defaults.clone();
    if let Some(rl) = defaults.get("task").and_then(|t| t.get("rl")) {
        merge(&mut keys, dotted("task.eval", rl.clone()));
    }
    keys
}

/// A `task.eval` given in part takes its other keys from `task.rl`.
pub(super) fn complete_task_eval(merged: &mut Value) {
    let Some(task) = merged.get_mut("task").and_then(Value::as_table_mut) else {
        return;
    };
    if let (Some(rl), Some(eval)) = (task.get("rl").cloned(), task.get("eval").cloned()) {
        let mut full = rl;
        merge(&mut full, eval);
        task.insert("eval".to_string(), full);
    }
}

pub(super) fn dotted(key: &str, v: Value) -> Value {
    key.rsplit('.').fold(v, |acc, part| {
        let mut t = toml::Table::new();
        t.insert(part.to_string(), acc);
        Value::Table(t)
    })
}

pub(super) fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Table(b), Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

pub(super) fn check_keys(
    defaults: &Value,
    layer: &Value,
    prefix: &str,
    origin: &str,
) -> Result<()> {
    let (Value::Table(d), Value::Table(l)) = (defaults, layer) else {
        return Ok(());
    };
    for (k, v) in l {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match d.get(k) {
            None => {
                let known: Vec<&str> = d.keys().map(String::as_str).collect();
                bail!(
                    "{origin}: unknown config key `{path}` (known keys here: {})",
                    known.join(", ")
                )
            }
            Some(dv @ Value::Table(_)) => {
                if !v.is_table() {
                    bail!("{origin}: `{path}` is a section, not a value");
                }
                check_keys(dv, v, &path, origin)?;
            }
            Some(_) => {
                if v.is_table() {
                    bail!("{origin}: `{path}` is a value, not a section");
                }
            }
        }
    }
    Ok(())
}
