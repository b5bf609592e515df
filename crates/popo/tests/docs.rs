//! docs/guide.md against the code, so that the user guide cannot drift from it.
//!
//! - Config: the reference lists every key of `popo train`'s config (the dotted keys of
//!   `TrainConfig::default()` serialized to TOML, `task.*` and `tiny_model.*` included) with its
//!   type, default and built-in-run value, and lists no other; every dotted config key the guide
//!   names anywhere (prose, examples, TOML blocks) exists; the presets table lists every preset
//!   and the keys it sets.
//! - Flags: every subcommand of the `popo` binary (read from its clap `Command`) has a
//!   `## popo <name>` section naming each of its long flags, and every flag the guide gives a
//!   command (in a `popo <name> ...` example, or in prose of that command's section) exists.
//! - The experiment files the guide shows parse.

use clap::CommandFactory;
use popo_train::config::{preset_overrides, ConfigBuilder, TrainConfig, PRESETS};
use std::collections::{BTreeMap, BTreeSet};
use toml::Value;

// The binary's root module, for its `Cli` type: clap describes every subcommand and flag.
#[allow(dead_code)]
#[path = "../src/main.rs"]
mod popo_main;

const REFERENCE: &str = "## Config reference";

fn guide() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/guide.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn fail_on(errors: Vec<String>) {
    assert!(
        errors.is_empty(),
        "docs/guide.md disagrees with the code:\n  {}",
        errors.join("\n  ")
    );
}

// ---------------------------------------------------------------- markdown structure

/// One line of the guide: its 1-based number, whether it sits in a fenced code block (and the
/// fence's language), and the `## ` section it belongs to.
struct Line<'a> {
    number: usize,
    text: &'a str,
    fence: Option<&'a str>,
    section: &'a str,
}

fn lines(text: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    let mut section = "";
    for (i, text) in text.lines().enumerate() {
        let trimmed = text.trim_start();
        if let Some(lang) = trimmed.strip_prefix("```") {
            fence = if fence.is_some() {
                None
            } else {
                Some(lang.trim())
            };
            continue;
        }
        if fence.is_none() && text.starts_with("## ") {
            section = text.trim_end();
        }
        out.push(Line {
            number: i + 1,
            text,
            fence,
            section,
        });
    }
    out
}

/// The text of the `## ` section `heading`, without code fences' markers.
fn section_lines<'a>(all: &'a [Line<'a>], heading: &str) -> Vec<&'a Line<'a>> {
    all.iter().filter(|l| l.section == heading).collect()
}

/// Cells of a markdown table row (`| a | b |`), trimmed; None for other lines.
fn cells(line: &str) -> Option<Vec<&str>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(str::trim).collect())
}

fn unquote(cell: &str) -> Option<&str> {
    cell.strip_prefix('`')?.strip_suffix('`')
}

// ---------------------------------------------------------------- config keys

/// Dotted key -> value of every leaf of a config.
fn flatten(cfg: &TrainConfig) -> BTreeMap<String, Value> {
    fn walk(v: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Table(t) => {
                for (k, child) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(child, &key, out);
                }
            }
            leaf => {
                out.insert(prefix.to_string(), leaf.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&Value::try_from(cfg).unwrap(), "", &mut out);
    out
}

fn defaults() -> BTreeMap<String, Value> {
    flatten(&TrainConfig::default())
}

/// The config of `popo train` with neither a model nor a dataset: the built-in run.
fn builtin() -> BTreeMap<String, Value> {
    flatten(&ConfigBuilder::new().build().unwrap())
}

/// The first segments of the dotted keys: `run`, `algo`, `task`, ...
fn config_sections(keys: &BTreeMap<String, Value>) -> BTreeSet<String> {
    keys.keys()
        .filter_map(|k| k.split_once('.').map(|(s, _)| s.to_string()))
        .collect()
}

/// A key, or a table holding keys (`task.sft`).
fn is_config_path(keys: &BTreeMap<String, Value>, path: &str) -> bool {
    keys.contains_key(path) || keys.keys().any(|k| k.starts_with(&format!("{path}.")))
}

/// One row of the config reference: key, type, default, built-in run's value.
struct KeyRow<'a> {
    line: usize,
    key: &'a str,
    ty: &'a str,
    default: &'a str,
    builtin: &'a str,
}

/// The rows of the config reference's tables whose first cell is a backticked name that is not a
/// preset (the presets table shares the section).
fn key_rows<'a>(all: &'a [Line<'a>]) -> Vec<KeyRow<'a>> {
    section_lines(all, REFERENCE)
        .into_iter()
        .filter(|l| l.fence.is_none())
        .filter_map(|l| {
            let c = cells(l.text)?;
            let key = unquote(c.first()?)?;
            if PRESETS.contains(&key) || c.len() < 5 {
                return None;
            }
            Some(KeyRow {
                line: l.number,
                key,
                ty: c[1],
                default: c[2],
                builtin: c[3],
            })
        })
        .collect()
}

/// A table cell holding a TOML value in backticks.
fn cell_value(cell: &str) -> Result<Value, String> {
    let inner = unquote(cell).ok_or_else(|| format!("`{cell}` is not a value in backticks"))?;
    toml::from_str::<toml::Table>(&format!("v = {inner}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .ok_or_else(|| format!("{cell} is not a TOML value"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Integer(_) => "int",
        Value::Float(_) => "float",
        Value::Boolean(_) => "bool",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        _ => "other",
    }
}

/// Dotted names `a.b(.c)*` standing as words of their own, with the guide's line numbers.
fn dotted_names(all: &[Line]) -> Vec<(usize, String)> {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    for l in all {
        let b = l.text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if !word(b[i]) {
                i += 1;
                continue;
            }
            let standalone = i == 0 || !b"./-~$:\\".contains(&b[i - 1]);
            let start = i;
            let mut end = i;
            loop {
                while end < b.len() && word(b[end]) {
                    end += 1;
                }
                if end + 1 < b.len() && b[end] == b'.' && word(b[end + 1]) {
                    end += 1;
                } else {
                    break;
                }
            }
            let name = &l.text[start..end];
            if standalone && name.contains('.') {
                out.push((l.number, name.to_string()));
            }
            i = end;
        }
    }
    out
}

/// `section.key` of every `key = value` line under a `[section]` header in the guide's TOML
/// blocks (top-level keys and `[[runs]]` entries belong to experiment files, not configs).
fn toml_block_keys(all: &[Line]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut header: Option<String> = None;
    for l in all {
        if l.fence != Some("toml") {
            header = None;
            continue;
        }
        let t = l.text.trim();
        if t.starts_with("[[") {
            header = None;
        } else if let Some(h) = t.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            header = Some(h.trim().to_string());
        } else if let (Some(h), Some((k, _))) = (&header, t.split_once('=')) {
            if !t.starts_with('#') {
                out.push((l.number, format!("{h}.{}", k.trim())));
            }
        }
    }
    out
}

#[test]
fn the_config_reference_lists_every_key_and_no_other() {
    let text = guide();
    let all = lines(&text);
    let keys = defaults();
    let rows = key_rows(&all);
    assert!(!rows.is_empty(), "no `{REFERENCE}` section with key rows");
    let listed: BTreeSet<&str> = rows.iter().map(|r| r.key).collect();
    let mut errors = Vec::new();
    for key in keys.keys() {
        if !listed.contains(key.as_str()) {
            errors.push(format!("`{key}` is missing from the config reference"));
        }
    }
    let mut seen = BTreeSet::new();
    for r in &rows {
        if !keys.contains_key(r.key) {
            errors.push(format!("line {}: `{}` is not a config key", r.line, r.key));
        }
        if !seen.insert(r.key) {
            errors.push(format!("line {}: `{}` is listed twice", r.line, r.key));
        }
    }
    fail_on(errors);
}

#[test]
fn the_config_reference_has_each_keys_type_default_and_builtin_value() {
    let text = guide();
    let all = lines(&text);
    let (defaults, builtin) = (defaults(), builtin());
    let mut errors = Vec::new();
    for r in key_rows(&all) {
        let (Some(default), Some(demo)) = (defaults.get(r.key), builtin.get(r.key)) else {
            continue; // reported by the_config_reference_lists_every_key_and_no_other
        };
        let at = format!("line {}: `{}`", r.line, r.key);
        let ty = match r.ty {
            "enum" | "path" => "string",
            t => t,
        };
        if ty != kind(default) {
            errors.push(format!(
                "{at}: type {} but the code has {}",
                r.ty,
                kind(default)
            ));
        }
        match cell_value(r.default) {
            Ok(v) if &v == default => {}
            Ok(v) => errors.push(format!("{at}: default {v} but the code has {default}")),
            Err(e) => errors.push(format!("{at}: default: {e}")),
        }
        if r.builtin.is_empty() {
            if demo != default {
                errors.push(format!("{at}: the built-in run uses {demo}; say so"));
            }
        } else {
            match cell_value(r.builtin) {
                Ok(v) if &v == demo => {}
                Ok(v) => errors.push(format!("{at}: built-in run {v} but the code has {demo}")),
                Err(e) => errors.push(format!("{at}: built-in run: {e}")),
            }
        }
    }
    fail_on(errors);
}

#[test]
fn every_config_key_the_guide_names_exists() {
    let text = guide();
    let all = lines(&text);
    let keys = defaults();
    let sections = config_sections(&keys);
    // File names such as model.safetensors or data.jsonl are not keys.
    let files = [
        "json",
        "jsonl",
        "toml",
        "safetensors",
        "md",
        "rs",
        "py",
        "sh",
        "svg",
        "png",
    ];
    let mut errors = Vec::new();
    for (line, name) in dotted_names(&all).into_iter().chain(toml_block_keys(&all)) {
        let first = name.split('.').next().unwrap_or_default();
        let last = name.rsplit('.').next().unwrap_or_default();
        if sections.contains(first) && !files.contains(&last) && !is_config_path(&keys, &name) {
            errors.push(format!("line {line}: `{name}` is not a config key"));
        }
    }
    fail_on(errors);
}

#[test]
fn the_presets_table_lists_every_preset_and_what_it_sets() {
    let text = guide();
    let all = lines(&text);
    let mut rows = BTreeMap::new();
    for l in section_lines(&all, REFERENCE) {
        if let Some(name) = cells(l.text).and_then(|c| c.first().copied().and_then(unquote)) {
            if PRESETS.contains(&name) {
                rows.insert(name, (l.number, l.text));
            }
        }
    }
    let mut errors = Vec::new();
    for preset in PRESETS {
        let Some((line, row)) = rows.get(preset) else {
            errors.push(format!(
                "preset `{preset}` is missing from the presets table"
            ));
            continue;
        };
        let sets = preset_overrides(preset).unwrap();
        // Everything the preset sets must be in its row, as `key = value`: applied over a config
        // file, it resets even the keys whose value is the default.
        for (k, v) in &sets {
            if !row.contains(&format!("`{k} = {v}`")) {
                errors.push(format!("line {line}: preset `{preset}` sets `{k} = {v}`"));
            }
        }
        // And every `key = value` of the row must be something the preset sets.
        for span in row.split('`').skip(1).step_by(2) {
            let Some((k, v)) = span.split_once(" = ") else {
                continue;
            };
            if !sets.iter().any(|(sk, sv)| *sk == k && sv.to_string() == v) {
                errors.push(format!(
                    "line {line}: preset `{preset}` does not set `{span}`"
                ));
            }
        }
    }
    fail_on(errors);
}

// ---------------------------------------------------------------- flags

struct Flags {
    /// Subcommand -> its long flags (globals, --help and --version aside).
    commands: BTreeMap<String, BTreeSet<String>>,
    /// Flags every subcommand accepts (`--log`, `--help`, `--version`).
    everywhere: BTreeSet<String>,
    globals: BTreeSet<String>,
}

fn flags() -> Flags {
    let mut cli = popo_main::Cli::command();
    cli.build();
    let longs = |c: &clap::Command| -> BTreeSet<String> {
        c.get_arguments()
            .filter_map(|a| a.get_long())
            .map(str::to_string)
            .collect()
    };
    let globals: BTreeSet<String> = cli
        .get_arguments()
        .filter(|a| a.is_global_set())
        .filter_map(|a| a.get_long())
        .map(str::to_string)
        .collect();
    let mut everywhere = globals.clone();
    everywhere.extend(["help".to_string(), "version".to_string()]);
    let commands = cli
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .map(|s| {
            let own = longs(s).difference(&everywhere).cloned().collect();
            (s.get_name().to_string(), own)
        })
        .collect();
    Flags {
        commands,
        everywhere,
        globals,
    }
}

/// A flag the guide gives a command: the command, the flag (without `--`), where it stands.
struct Mention {
    command: String,
    flag: String,
    line: usize,
    /// The command whose `## popo <name>` section holds the line, if any.
    section: Option<String>,
}

fn section_command(heading: &str, commands: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    let name = heading
        .strip_prefix("## popo ")?
        .split_whitespace()
        .next()?;
    commands.contains_key(name).then(|| name.to_string())
}

fn flag_name(word: &str) -> Option<&str> {
    let rest = word
        .trim_start_matches(['[', '(', '"', '\''])
        .strip_prefix("--")?;
    let end = rest
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        .unwrap_or(rest.len());
    let name = rest[..end].trim_end_matches('-');
    name.starts_with(|c: char| c.is_ascii_lowercase())
        .then_some(name)
}

/// Every `--flag` of the guide with the command it belongs to: the command of the
/// `popo <name>` before it in the same code span or shell line (continued by `\`), else the
/// command whose section it is in. Flags in other sections outside a `popo` command line (cargo's,
/// pip's) are not the binary's.
fn mentions(text: &str, commands: &BTreeMap<String, BTreeSet<String>>) -> Vec<Mention> {
    let mut out = Vec::new();
    let mut carry: Option<String> = None;
    for l in lines(text) {
        let section = section_command(l.section, commands);
        let segments: Vec<(bool, &str)> = if l.fence.is_some() {
            vec![(true, l.text)]
        } else {
            l.text
                .split('`')
                .enumerate()
                .map(|(i, s)| (i % 2 == 1, s))
                .collect()
        };
        let mut next_carry = None;
        for (k, (code, seg)) in segments.iter().enumerate() {
            let mut ctx = if k == 0 { carry.take() } else { None };
            let words: Vec<&str> = seg.split_whitespace().collect();
            let mut w = 0;
            while w < words.len() {
                let word = words[w];
                if *code
                    && word == "popo"
                    && words.get(w + 1).is_some_and(|n| commands.contains_key(*n))
                {
                    ctx = Some(words[w + 1].to_string());
                    w += 2;
                    continue;
                }
                if *code && (word.starts_with('#') || ["|", "&&", ";"].contains(&word)) {
                    ctx = None;
                    if word.starts_with('#') {
                        break;
                    }
                }
                if let (Some(flag), Some(command)) =
                    (flag_name(word), ctx.clone().or(section.clone()))
                {
                    out.push(Mention {
                        command,
                        flag: flag.to_string(),
                        line: l.number,
                        section: section.clone(),
                    });
                }
                w += 1;
            }
            if l.fence.is_some() && seg.trim_end().ends_with('\\') {
                next_carry = ctx;
            }
        }
        carry = next_carry;
    }
    out
}

#[test]
fn every_subcommand_section_names_each_of_its_flags() {
    let text = guide();
    let f = flags();
    let found = mentions(&text, &f.commands);
    let mut errors = Vec::new();
    for (command, own) in &f.commands {
        let heading = format!("## popo {command}");
        if !text.lines().any(|l| l.trim_end() == heading) {
            errors.push(format!("no `{heading}` section"));
            continue;
        }
        for flag in own {
            let named = found.iter().any(|m| {
                &m.command == command && &m.flag == flag && m.section.as_ref() == Some(command)
            });
            if !named {
                errors.push(format!(
                    "`--{flag}` of popo {command} is not in `{heading}`"
                ));
            }
        }
    }
    // Global flags work with every command: named anywhere in the guide.
    for g in &f.globals {
        if !text
            .split_whitespace()
            .any(|w| flag_name(w.trim_start_matches('`')) == Some(g))
        {
            errors.push(format!("the global flag `--{g}` is not in the guide"));
        }
    }
    fail_on(errors);
}

#[test]
fn the_guide_names_no_flag_a_command_lacks() {
    let text = guide();
    let f = flags();
    let mut errors = Vec::new();
    for m in mentions(&text, &f.commands) {
        let own = &f.commands[&m.command];
        if !own.contains(&m.flag) && !f.everywhere.contains(&m.flag) {
            errors.push(format!(
                "line {}: `--{}` is not a flag of popo {}",
                m.line, m.flag, m.command
            ));
        }
    }
    fail_on(errors);
}

// ---------------------------------------------------------------- experiment files

#[test]
fn the_guides_experiment_files_parse() {
    let text = guide();
    let all = lines(&text);
    let mut blocks: Vec<(usize, String)> = Vec::new();
    let mut prev_fenced = false;
    for l in section_lines(&all, "## popo experiment") {
        if l.fence == Some("toml") {
            if !prev_fenced {
                blocks.push((l.number, String::new()));
            }
            let b = &mut blocks.last_mut().unwrap().1;
            b.push_str(l.text);
            b.push('\n');
        }
        prev_fenced = l.fence == Some("toml");
    }
    assert!(
        !blocks.is_empty(),
        "no TOML example in `## popo experiment`"
    );
    let mut errors = Vec::new();
    for (line, block) in blocks {
        let parsed = toml::from_str::<popo_eval::experiment::ExperimentSpec>(&block)
            .map_err(|e| e.to_string())
            .and_then(|s| s.validate().map_err(|e| format!("{e:#}")));
        if let Err(e) = parsed {
            errors.push(format!("the experiment file at line {line}: {e}"));
        }
    }
    fail_on(errors);
}
