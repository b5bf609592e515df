//! A benchmark's file as published (JSONL or parquet) -> problems with their gold answers, by
//! the same rules for both formats. Errors name the file, the line or row, and the field.

use super::parquet_rows;
use super::sources::{Format, Gold, Source};
use anyhow::{anyhow, bail, Context, Result};
use popo_model::data::Example;
use serde_json::{Map, Value};
use std::path::Path;

/// The problems of `src`'s published file `path`, in file order.
pub fn read(src: &Source, path: &Path) -> Result<Vec<Example>> {
    let examples = match src.format {
        Format::Jsonl => read_jsonl(src, path)?,
        Format::Parquet => {
            parquet_rows::read_columns(path, &[src.problem_field, src.answer_field])?
                .iter()
                .enumerate()
                .map(|(i, row)| {
                    example(src, row).map_err(|e| anyhow!("{}: row {}: {e}", path.display(), i + 1))
                })
                .collect::<Result<_>>()?
        }
    };
    if examples.is_empty() {
        bail!("{}: no problems in it", path.display());
    }
    Ok(examples)
}

fn read_jsonl(src: &Source, path: &Path) -> Result<Vec<Example>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(row)) => Ok(row),
            Ok(_) => Err("expected a JSON object".to_string()),
            Err(e) => Err(format!("invalid JSON: {e}")),
        };
        let ex = row.and_then(|row| example(src, &row));
        out.push(ex.map_err(|e| anyhow!("{}:{}: {e}", path.display(), i + 1))?);
    }
    Ok(out)
}

/// One row's problem and gold answer.
fn example(src: &Source, row: &Map<String, Value>) -> std::result::Result<Example, String> {
    let problem = text(row, src.problem_field)?;
    if problem.trim().is_empty() {
        return Err(format!("field `{}` is empty", src.problem_field));
    }
    let answer = text(row, src.answer_field)?;
    let answer = match src.gold {
        Gold::Whole => answer,
        Gold::AfterHashes => match answer.rsplit_once("####") {
            Some((_, gold)) if !gold.trim().is_empty() => gold.trim().to_string(),
            _ => {
                return Err(format!(
                    "field `{}` has no final answer after `####`",
                    src.answer_field
                ))
            }
        },
    };
    if answer.trim().is_empty() {
        return Err(format!("field `{}` is empty", src.answer_field));
    }
    Ok(Example { problem, answer })
}

/// A field's value as text: a string as it is, a number as its JSON text, a list of those
/// joined by ", " (OlympiadBench's `final_answer` is a list, one answer in nearly every row).
fn text(row: &Map<String, Value>, field: &str) -> std::result::Result<String, String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match row.get(field) {
        None => Err(format!("missing field `{field}`")),
        Some(Value::Null) => Err(format!("field `{field}` is null")),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()
            .map(|parts| parts.join(", "))
            .ok_or_else(|| format!("field `{field}` must be a list of text or numbers")),
        Some(v) => scalar(v).ok_or_else(|| {
            let found = match v {
                Value::Bool(_) => "a boolean",
                Value::Object(_) => "an object",
                _ => "an empty list",
            };
            format!("field `{field}` must be text, a number or a list of them, found {found}")
        }),
    }
}
