//! Rust source as tokens with their line numbers, for the tests that read the workspace's own
//! code (`circles.rs`, `house.rs`): comments and literals skipped, braces kept, so both can tell
//! what a path names and where a block ends without a full parse.

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    Str(String),
    Sep,
    Open,
    Close,
    Comma,
    Semi,
    Punct(char),
}

/// The tokens of a source file with their 1-based line numbers; comments, char literals and
/// lifetimes dropped.
pub fn tokens(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if ch == '"' {
            let start = line;
            let s = string(&c, &mut i, &mut line, None);
            out.push((Tok::Str(s), start));
        } else if ch == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a), which is skipped.
            if at(i + 1) == '\\' {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let raw = matches!(word.as_str(), "r" | "br" | "cr") && matches!(at(i), '"' | '#');
            if raw {
                let hashes = (i..c.len()).take_while(|&j| c[j] == '#').count();
                i += hashes;
                let start_line = line;
                let s = string(&c, &mut i, &mut line, Some(hashes));
                out.push((Tok::Str(s), start_line));
            } else if matches!(word.as_str(), "b" | "c") && at(i) == '"' {
                let start_line = line;
                let s = string(&c, &mut i, &mut line, None);
                out.push((Tok::Str(s), start_line));
            } else {
                out.push((Tok::Ident(word), line));
            }
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
        } else {
            let tok = match ch {
                ':' if at(i + 1) == ':' => {
                    i += 1;
                    Tok::Sep
                }
                '{' => Tok::Open,
                '}' => Tok::Close,
                ',' => Tok::Comma,
                ';' => Tok::Semi,
                other => Tok::Punct(other),
            };
            out.push((tok, line));
            i += 1;
        }
    }
    out
}

/// A string literal from its opening quote at `c[*i]`; `raw` is a raw string's count of `#`
/// (no escapes), `None` an ordinary or byte string.
fn string(c: &[char], i: &mut usize, line: &mut usize, raw: Option<usize>) -> String {
    let hashes = raw.unwrap_or(0);
    *i += 1;
    let mut s = String::new();
    while *i < c.len() {
        let ch = c[*i];
        if ch == '\\' && raw.is_none() {
            let escaped = c.get(*i + 1).copied().unwrap_or('\\');
            *line += usize::from(escaped == '\n');
            s.push(escaped);
            *i += 2;
            continue;
        }
        if ch == '"' && (*i + 1..*i + 1 + hashes).all(|j| c.get(j) == Some(&'#')) {
            *i += 1 + hashes;
            return s;
        }
        *line += usize::from(ch == '\n');
        s.push(ch);
        *i += 1;
    }
    s
}
