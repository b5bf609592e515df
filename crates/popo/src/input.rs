//! JSONL inputs of `popo verify --input`, `popo score` and `popo generate`. Whatever the bytes,
//! the answer is a value or an error naming the line; never a panic.

use anyhow::{anyhow, bail, Context, Result};
use popo_verify::{verify_batch, Verdict};
use serde_json::{Map, Value};
use std::io::{BufRead, Write};

/// Parses JSONL into (line number, object) pairs; blank lines are skipped. Errors name
/// `name:line`.
pub fn read_objects(input: impl BufRead, name: &str) -> Result<Vec<(usize, Map<String, Value>)>> {
    let mut out = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("{name}:{}: cannot read", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(m)) => out.push((i + 1, m)),
            Ok(_) => bail!("{name}:{}: expected a JSON object", i + 1),
            Err(e) => bail!("{name}:{}: invalid JSON: {e}", i + 1),
        }
    }
    Ok(out)
}

/// The token ids in field `key`, if present (absent and `null` give `None`).
pub fn token_ids(obj: &Map<String, Value>, key: &str) -> Result<Option<Vec<u32>>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| anyhow!("field {key:?} must hold token ids, got {x}"))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(other) => bail!("field {key:?} must be an array of token ids, got {other}"),
    }
}

fn field<'a>(obj: &'a Map<String, Value>, names: &[&str]) -> Result<&'a str, String> {
    for n in names {
        match obj.get(*n) {
            Some(Value::String(s)) => return Ok(s),
            Some(Value::Null) | None => continue,
            Some(_) => return Err(format!("field `{n}` is not a string")),
        }
    }
    Err(format!("missing field `{}`", names.join("` / `")))
}

/// A malformed input line: the message, and the input's own object when it was one.
struct BadLine {
    msg: String,
    obj: Option<Map<String, Value>>,
}

type Pair = (String, String);

fn read_pair(line: &str) -> Result<(Map<String, Value>, Pair), BadLine> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(obj)) => {
            let gold = field(&obj, &["gold", "answer"]).map(str::to_string);
            let pred = field(&obj, &["pred", "response"]).map(str::to_string);
            match (gold, pred) {
                (Ok(g), Ok(p)) => Ok((obj, (g, p))),
                (Err(msg), _) | (_, Err(msg)) => Err(BadLine {
                    msg,
                    obj: Some(obj),
                }),
            }
        }
        Ok(_) => Err(BadLine {
            msg: "not a JSON object".into(),
            obj: None,
        }),
        Err(e) => Err(BadLine {
            msg: format!("invalid JSON: {e}"),
            obj: None,
        }),
    }
}

enum Line {
    Pair(Map<String, Value>, usize),
    Invalid(Map<String, Value>, String),
}

/// `popo verify --input`: verifies every line of a JSONL stream of objects with `gold` (or
/// `answer`) and `pred` (or `response`), writing each input object back in order with
/// `correct`, `gold_answer` and `pred_answer` added. Returns (pairs verified, correct). Errors
/// name the line number; with `skip_invalid` a malformed line comes back with an `error` field.
pub fn verify_jsonl(
    input: impl BufRead,
    mut out: impl Write,
    threads: usize,
    skip_invalid: bool,
) -> Result<(usize, usize)> {
    let mut lines = Vec::new();
    let mut pairs = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("line {}: reading", i + 1))?;
        match read_pair(&line) {
            Ok((obj, pair)) => {
                lines.push(Line::Pair(obj, pairs.len()));
                pairs.push(pair);
            }
            Err(BadLine { msg, obj }) if skip_invalid => {
                let obj = obj.unwrap_or_else(|| {
                    let mut obj = Map::new();
                    obj.insert("line".into(), Value::from(i + 1));
                    obj.insert("input".into(), Value::String(line));
                    obj
                });
                lines.push(Line::Invalid(obj, format!("line {}: {msg}", i + 1)));
            }
            Err(BadLine { msg, .. }) => {
                bail!("line {}: {msg} (use --skip-invalid to keep going)", i + 1)
            }
        }
    }
    let verdicts: Vec<Verdict> = verify_batch(&pairs, threads);
    let mut correct = 0usize;
    for line in lines {
        let obj = match line {
            Line::Pair(mut obj, k) => {
                let v = &verdicts[k];
                correct += v.correct as usize;
                obj.insert("correct".into(), Value::Bool(v.correct));
                obj.insert(
                    "gold_answer".into(),
                    v.gold_answer.clone().map_or(Value::Null, Value::String),
                );
                obj.insert(
                    "pred_answer".into(),
                    v.pred_answer.clone().map_or(Value::Null, Value::String),
                );
                obj
            }
            Line::Invalid(mut obj, e) => {
                obj.insert("correct".into(), Value::Bool(false));
                obj.insert("gold_answer".into(), Value::Null);
                obj.insert("pred_answer".into(), Value::Null);
                obj.insert("error".into(), Value::String(e));
                obj
            }
        };
        serde_json::to_writer(&mut out, &obj)?;
        out.write_all(b"\n")?;
    }
    Ok((pairs.len(), correct))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_lines(input: &str, skip_invalid: bool) -> anyhow::Result<(Vec<Value>, usize, usize)> {
        let mut out = Vec::new();
        let (n, c) = verify_jsonl(input.as_bytes(), &mut out, 2, skip_invalid)?;
        let text = String::from_utf8(out)?;
        let vals = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<Vec<Value>, _>>()?;
        Ok((vals, n, c))
    }

    #[test]
    fn every_line_comes_back_in_order_with_verdicts() {
        let input = concat!(
            r#"{"id": 1, "gold": "\\frac12", "pred": "so \\boxed{0.5}"}"#,
            "\n",
            "{\"id\": 2, \"answer\": \"3\", \"response\": \"#### 4\"}",
            "\n",
            r#"{"id": 3, "gold": "(1,2)", "pred": "\\boxed{\\left(1, 2\\right)}"}"#,
            "\n",
        );
        let (out, n, correct) = run_lines(input, false).expect("valid input");
        assert_eq!((n, correct), (3, 2));
        let ids: Vec<i64> = out.iter().map(|v| v["id"].as_i64().unwrap_or(-1)).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(out[0]["correct"], Value::Bool(true));
        assert_eq!(out[0]["gold_answer"], Value::String("1/2".into()));
        assert_eq!(out[0]["pred_answer"], Value::String("0.5".into()));
        assert_eq!(out[1]["correct"], Value::Bool(false));
        assert_eq!(out[1]["pred_answer"], Value::String("4".into()));
        // Input fields are kept.
        assert_eq!(out[1]["response"], Value::String("#### 4".into()));
    }

    #[test]
    fn a_malformed_line_is_an_error_naming_it() {
        let input = "{\"gold\": \"1\", \"pred\": \"1\"}\nnot json\n";
        let err = run_lines(input, false).expect_err("malformed line");
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        let input = "{\"gold\": \"1\"}\n";
        let err = run_lines(input, false).expect_err("missing pred");
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
    }

    #[test]
    fn skip_invalid_keeps_every_line() {
        let input = "{\"gold\": \"1\", \"pred\": \"\\\\boxed{1}\"}\nnot json\n{\"gold\": 5, \"pred\": \"5\"}\n\n{\"gold\": \"2\", \"pred\": \"2\"}\n";
        let (out, n, correct) = run_lines(input, true).expect("skip-invalid never fails");
        assert_eq!(out.len(), 5);
        assert_eq!((n, correct), (2, 2));
        assert_eq!(out[0]["correct"], Value::Bool(true));
        for bad in &out[1..4] {
            assert_eq!(bad["correct"], Value::Bool(false));
            assert!(
                bad["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("line ")),
                "{bad}"
            );
        }
        assert_eq!(out[1]["input"], Value::String("not json".into()));
        assert_eq!(out[2]["gold"], Value::from(5));
        assert_eq!(out[4]["correct"], Value::Bool(true));
    }
}
