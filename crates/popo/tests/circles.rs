//! No two source files of a crate import each other, directly or through a loop of other files.
//!
//! A circle means neither file can be read, tested or moved without the other; the fix is a
//! neutral module that both import. This test reads every crate under `crates/*/src` from its
//! roots (`lib.rs`, `main.rs`), follows the `mod` declarations (`#[path]` included) to map module
//! paths to files, and takes an edge from file a to file b wherever a names b's module: a `use`
//! tree or an inline path through `crate::`, `super::`, `self::` or a child module's name, in test
//! modules too. Any strongly connected set of two or more files fails, with the lines that close it.
//!
//! It works on tokens, not on a full parse: comments and literals are skipped, braces are counted
//! to know which inline `mod` a path sits in. Names a module re-exports are attributed to the
//! module that re-exports them, which is the file a reader opens.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

mod common;
use common::tokens::{tokens, Tok};
use common::workspace;

/// One path a file names: its segments as written and the line it is on.
struct Named {
    segments: Vec<String>,
    line: usize,
    /// The module (absolute path from the crate root) the path is written in.
    scope: Vec<String>,
}

/// What one file says: the paths it names and the `mod NAME;` it declares (name, `#[path]`).
#[derive(Default)]
struct Scan {
    named: Vec<Named>,
    mods: Vec<(String, Option<String>)>,
}

fn ident(toks: &[(Tok, usize)], i: usize) -> Option<&str> {
    match toks.get(i) {
        Some((Tok::Ident(s), _)) => Some(s),
        _ => None,
    }
}

/// Reads a file's tokens: `module` is the file's own module path.
fn scan(toks: &[(Tok, usize)], module: &[String]) -> Scan {
    let mut out = Scan::default();
    let mut inline: Vec<(String, usize)> = Vec::new();
    let (mut depth, mut path_attr, mut i) = (0usize, None, 0);
    let scope = |inline: &[(String, usize)]| -> Vec<String> {
        let mut s = module.to_vec();
        s.extend(inline.iter().map(|(n, _)| n.clone()));
        s
    };
    while i < toks.len() {
        match &toks[i].0 {
            Tok::Open => depth += 1,
            Tok::Close => {
                if inline.last().is_some_and(|&(_, d)| d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Punct('#') if ident(toks, i + 2) == Some("path") => {
                if let Some((Tok::Str(p), _)) = toks.get(i + 4) {
                    path_attr = Some(p.clone());
                }
            }
            Tok::Ident(w) if w == "mod" => {
                if let Some(name) = ident(toks, i + 1) {
                    match toks.get(i + 2).map(|t| &t.0) {
                        Some(Tok::Open) => {
                            inline.push((name.to_string(), depth + 1));
                        }
                        Some(Tok::Semi) if inline.is_empty() => {
                            out.mods.push((name.to_string(), path_attr.take()));
                        }
                        _ => {}
                    }
                    path_attr = None;
                    i += 2;
                    continue;
                }
            }
            Tok::Ident(w) if w == "use" => {
                let here = scope(&inline);
                let mut trees = Vec::new();
                let line = toks[i].1;
                i += 1;
                use_tree(toks, &mut i, Vec::new(), &mut trees);
                for segments in trees {
                    out.named.push(Named {
                        segments,
                        line,
                        scope: here.clone(),
                    });
                }
                continue;
            }
            Tok::Ident(w) if toks.get(i + 1).map(|t| &t.0) == Some(&Tok::Sep) => {
                let after_sep = i > 0 && toks[i - 1].0 == Tok::Sep;
                if !after_sep && w != "Self" {
                    let line = toks[i].1;
                    let mut segments = vec![w.clone()];
                    let mut j = i + 1;
                    while toks.get(j).map(|t| &t.0) == Some(&Tok::Sep) {
                        match ident(toks, j + 1) {
                            Some(s) => segments.push(s.to_string()),
                            None => break,
                        }
                        j += 2;
                    }
                    out.named.push(Named {
                        segments,
                        line,
                        scope: scope(&inline),
                    });
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The paths of one `use` tree, from just after `use` (or a group's `{` / `,`) to its end.
fn use_tree(toks: &[(Tok, usize)], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        match toks.get(*i).map(|t| &t.0) {
            Some(Tok::Ident(w)) if w == "as" => *i += 2,
            Some(Tok::Ident(w)) => {
                if w != "self" {
                    path.push(w.clone());
                }
                *i += 1;
            }
            Some(Tok::Sep) | Some(Tok::Punct('*')) => *i += 1,
            Some(Tok::Open) => {
                *i += 1;
                loop {
                    use_tree(toks, i, path.clone(), out);
                    match toks.get(*i).map(|t| &t.0) {
                        Some(Tok::Comma) => *i += 1,
                        Some(Tok::Close) => {
                            *i += 1;
                            break;
                        }
                        _ => break,
                    }
                }
                // A group ends its tree: `use a::{b, c};`.
                if toks.get(*i).map(|t| &t.0) == Some(&Tok::Semi) {
                    *i += 1;
                }
                return;
            }
            Some(Tok::Semi) => {
                *i += 1;
                out.push(path);
                return;
            }
            Some(Tok::Comma) | Some(Tok::Close) | None => {
                out.push(path);
                return;
            }
            Some(_) => *i += 1,
        }
    }
}

/// One crate's files: module path -> file, and each file's scan.
struct Crate {
    files: BTreeMap<Vec<String>, PathBuf>,
    scans: BTreeMap<PathBuf, Scan>,
}

fn is_mod_rs(file: &Path) -> bool {
    matches!(
        file.file_name().and_then(|n| n.to_str()),
        Some("mod.rs" | "lib.rs" | "main.rs")
    )
}

/// Reads the crate rooted at `root`, following `mod NAME;` declarations.
fn read_crate(root: &Path) -> Crate {
    let mut krate = Crate {
        files: BTreeMap::new(),
        scans: BTreeMap::new(),
    };
    let mut todo = vec![(Vec::<String>::new(), root.to_path_buf())];
    while let Some((module, file)) = todo.pop() {
        let src = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let scan = scan(&tokens(&src), &module);
        let dir = file.parent().expect("a source file has a directory");
        for (name, path) in &scan.mods {
            let child_file = match path {
                Some(p) => dir.join(p),
                None => {
                    let base = if is_mod_rs(&file) {
                        dir.to_path_buf()
                    } else {
                        dir.join(file.file_stem().expect("a .rs file has a stem"))
                    };
                    let flat = base.join(format!("{name}.rs"));
                    if flat.exists() {
                        flat
                    } else {
                        base.join(name).join("mod.rs")
                    }
                }
            };
            let mut child = module.clone();
            child.push(name.clone());
            todo.push((child, child_file));
        }
        krate.files.insert(module, file.clone());
        krate.scans.insert(file, scan);
    }
    krate
}

impl Crate {
    /// The file a path written in `scope` names, if it names a module of this crate.
    fn target(&self, named: &Named) -> Option<&PathBuf> {
        let s = &named.segments;
        let first = s.first()?;
        let mut absolute = match first.as_str() {
            "crate" => Vec::new(),
            "self" => named.scope.clone(),
            "super" => {
                let ups = s.iter().take_while(|w| *w == "super").count();
                let keep = named.scope.len().checked_sub(ups)?;
                named.scope[..keep].to_vec()
            }
            _ => {
                let mut child = named.scope.clone();
                child.push(first.clone());
                if !self.files.contains_key(&child) {
                    return None;
                }
                named.scope.clone()
            }
        };
        absolute.extend(
            s.iter()
                .skip_while(|w| matches!(w.as_str(), "crate" | "self" | "super"))
                .cloned(),
        );
        (0..=absolute.len())
            .rev()
            .find_map(|n| self.files.get(&absolute[..n]))
    }

    /// Edges file -> file, each with the first line that makes it.
    fn edges(&self) -> BTreeMap<(PathBuf, PathBuf), usize> {
        let mut edges = BTreeMap::new();
        for (file, scan) in &self.scans {
            for named in &scan.named {
                if let Some(to) = self.target(named) {
                    if to != file {
                        edges
                            .entry((file.clone(), to.clone()))
                            .or_insert(named.line);
                    }
                }
            }
        }
        edges
    }
}

/// The strongly connected sets of two or more files (Tarjan).
fn circles(edges: &BTreeMap<(PathBuf, PathBuf), usize>) -> Vec<BTreeSet<PathBuf>> {
    let mut next: BTreeMap<&PathBuf, Vec<&PathBuf>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        next.entry(a).or_default().push(b);
        next.entry(b).or_default();
    }
    let nodes: Vec<&PathBuf> = next.keys().copied().collect();
    let mut index: BTreeMap<&PathBuf, (usize, usize)> = BTreeMap::new();
    let (mut stack, mut on_stack, mut found) = (Vec::new(), BTreeSet::new(), Vec::new());
    // Iterative Tarjan: (node, position in its successor list).
    for &start in &nodes {
        if index.contains_key(start) {
            continue;
        }
        let mut work = vec![(start, 0usize)];
        while let Some((v, pos)) = work.pop() {
            if pos == 0 {
                let n = index.len();
                index.insert(v, (n, n));
                stack.push(v);
                on_stack.insert(v);
            }
            if let Some(&w) = next[v].get(pos) {
                work.push((v, pos + 1));
                if !index.contains_key(w) {
                    work.push((w, 0));
                } else if on_stack.contains(w) {
                    let low = index[v].1.min(index[w].0);
                    index.get_mut(v).expect("indexed").1 = low;
                }
                continue;
            }
            if let Some(&(parent, _)) = work.last() {
                let low = index[parent].1.min(index[v].1);
                index.get_mut(parent).expect("indexed").1 = low;
            }
            if index[v].0 == index[v].1 {
                let mut set = BTreeSet::new();
                while let Some(w) = stack.pop() {
                    on_stack.remove(w);
                    set.insert(w.clone());
                    if w == v {
                        break;
                    }
                }
                if set.len() > 1 {
                    found.push(set);
                }
            }
        }
    }
    found
}

/// Every crate root under `crates/*/src`.
fn roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    let crates = workspace().join("crates");
    for entry in std::fs::read_dir(&crates).expect("crates/ exists") {
        let src = entry.expect("a directory entry").path().join("src");
        for root in ["lib.rs", "main.rs"] {
            if src.join(root).exists() {
                roots.push(src.join(root));
            }
        }
    }
    roots.sort();
    roots
}

fn describe(set: &BTreeSet<PathBuf>, edges: &BTreeMap<(PathBuf, PathBuf), usize>) -> String {
    let base = workspace();
    let show = |p: &Path| {
        let p = p.strip_prefix(&base).unwrap_or(p).display().to_string();
        p.replace("crates/", "")
    };
    let lines: Vec<String> = edges
        .iter()
        .filter(|((a, b), _)| set.contains(a) && set.contains(b))
        .map(|((a, b), line)| format!("    {}:{line} -> {}", show(a), show(b)))
        .collect();
    format!("files that import each other:\n{}", lines.join("\n"))
}

#[test]
fn no_two_files_import_each_other() {
    let mut failures = Vec::new();
    for root in roots() {
        let krate = read_crate(&root);
        let edges = krate.edges();
        for set in circles(&edges) {
            failures.push(describe(&set, &edges));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The scanner itself, on a crate written here: a pair through `super::` and an inline path, a
/// test module's `use super::*` that is no edge, and a loop of three.
#[test]
fn the_scanner_finds_pairs_and_loops_and_nothing_else() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let src = dir.path();
    let write = |name: &str, text: &str| {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    write("lib.rs", "mod a; mod b; mod c; mod d; pub mod e;\n");
    write(
        "a.rs",
        "use crate::b::X; // crate::d is a comment\nconst S: &str = \"crate::d::Y\";\n",
    );
    write("b.rs", "pub struct X;\nfn f() { let _ = crate::a::g(); }\n#[cfg(test)]\nmod tests { use super::*; }\n");
    write("c.rs", "use crate::{d::{self, Y as Z}, e::f};\n");
    write(
        "d.rs",
        "pub struct Y; fn g() -> char { '{' }\nfn h<'a>(x: &'a str) { let _ = crate::e::f; }\n",
    );
    write("e/mod.rs", "mod inner;\npub fn f() { inner::k(); }\n");
    write("e/inner.rs", "pub fn k() { super::super::c::m(); }\n");
    let krate = read_crate(&src.join("lib.rs"));
    let edges = krate.edges();
    let mut found: Vec<Vec<String>> = circles(&edges)
        .into_iter()
        .map(|set| {
            set.iter()
                .map(|p| p.strip_prefix(src).expect("inside").display().to_string())
                .collect()
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            vec!["a.rs".to_string(), "b.rs".into()],
            vec![
                "c.rs".to_string(),
                "d.rs".into(),
                "e/inner.rs".into(),
                "e/mod.rs".into()
            ],
        ]
    );
}
