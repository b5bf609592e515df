//! The house rules on size, checked on every Rust file under `crates/`: no file over 800 lines
//! and no function over 100 (ARCHITECTURE.md). A file or function past the
//! limit holds more than one job; the failure names it, so it is split rather than let grow.

use std::path::{Path, PathBuf};

mod common;
use common::tokens::{tokens, Tok};
use common::workspace;

const MAX_FILE_LINES: usize = 800;
const MAX_FN_LINES: usize = 100;

/// Every `.rs` file under `dir`, build outputs left out.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() && !matches!(name, "target" | "fixtures" | ".venv") {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The functions of a file with a body: (name, first line, lines from `fn` to the closing
/// brace). A function's signature ends at its first `{` (the body) or `;` (no body).
fn functions(src: &str) -> Vec<(String, usize, usize)> {
    let toks = tokens(src);
    let mut found = Vec::new();
    for (i, (tok, line)) in toks.iter().enumerate() {
        let (Tok::Ident(kw), Some((Tok::Ident(name), _))) = (tok, toks.get(i + 1)) else {
            continue;
        };
        if kw != "fn" {
            continue;
        }
        let Some(open) = (i + 2..toks.len()).find(|&j| matches!(toks[j].0, Tok::Open | Tok::Semi))
        else {
            continue;
        };
        if toks[open].0 == Tok::Semi {
            continue;
        }
        let mut depth = 0usize;
        for (tok, end) in &toks[open..] {
            match tok {
                Tok::Open => depth += 1,
                Tok::Close => depth -= 1,
                _ => continue,
            }
            if depth == 0 {
                found.push((name.clone(), *line, end - line + 1));
                break;
            }
        }
    }
    found
}

/// What breaks the rules in `files`, one line each.
fn violations(files: &[PathBuf], base: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for file in files {
        let src = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let show = file.strip_prefix(base).unwrap_or(file).display();
        let lines = src.lines().count();
        if lines > MAX_FILE_LINES {
            out.push(format!("{show}: {lines} lines (at most {MAX_FILE_LINES})"));
        }
        for (name, line, len) in functions(&src) {
            if len > MAX_FN_LINES {
                out.push(format!(
                    "{show}:{line}: fn {name} is {len} lines (at most {MAX_FN_LINES})"
                ));
            }
        }
    }
    out
}

#[test]
fn no_file_over_800_lines_and_no_function_over_100() {
    let base = workspace();
    let mut files = Vec::new();
    rust_files(&base.join("crates"), &mut files);
    assert!(files.len() > 100, "found only {} Rust files", files.len());
    let bad = violations(&files, &base);
    assert!(bad.is_empty(), "over the house limits:\n{}", bad.join("\n"));
}

/// The measure itself, on code written here: a body's braces inside strings, chars and comments
/// do not count, a signature without a body is no function, nested functions count apart.
#[test]
fn function_lengths_count_from_fn_to_the_closing_brace() {
    let src = "trait T { fn decl(&self); }\n\
               fn outer() -> Vec<u8> where u8: Copy {\n\
                   let s = \"}}}\"; let c = '}'; // }\n\
                   fn inner() {\n\
                   }\n\
                   /* } */ vec![]\n\
               }\n";
    let got = functions(src);
    assert_eq!(
        got,
        vec![("outer".to_string(), 2, 6), ("inner".to_string(), 4, 2)]
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    let long = dir.path().join("long.rs");
    let body = "    let _ = 1;\n".repeat(MAX_FN_LINES - 1);
    std::fs::write(&long, format!("fn long() {{\n{body}}}\nfn ok() {{}}\n")).expect("write");
    let bad = violations(&[long], dir.path());
    assert_eq!(
        bad,
        vec![format!(
            "long.rs:1: fn long is {} lines (at most 100)",
            MAX_FN_LINES + 1
        )]
    );
}
