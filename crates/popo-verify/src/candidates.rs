//! Candidates: the places in a response where an answer can stand, in order of position (a
//! math span, LaTeX written in the prose, a number standing as a word of its own).

use crate::lex::braced;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The content of `$...$`, `$$...$$`, `\(...\)`, `\[...\]`.
    Math,
    /// LaTeX written in the prose without delimiters: `so x is \frac{7}{3}`.
    Latex,
    /// A number standing as a word of its own: not `7` in `XK7Q` nor `12` in `w12`.
    Number,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate<'a> {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
    pub text: &'a str,
}

impl Candidate<'_> {
    /// Whether it only names something (`$n$`, `$ABCD$`, `$f(x)$`): such a candidate is the
    /// answer only when the response offers nothing else.
    pub fn is_name(&self) -> bool {
        self.kind != Kind::Number && crate::lex::is_name(self.text)
    }
}

/// Every candidate in order of position. Numbers inside a span or a LaTeX formula are part of
/// it, not candidates of their own.
pub(crate) fn candidates(text: &str) -> Vec<Candidate<'_>> {
    let b = text.as_bytes();
    let mut out: Vec<Candidate> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                let next = b.get(i + 1).copied().unwrap_or(b' ');
                if next == b'(' || next == b'[' {
                    let close = if next == b'(' { "\\)" } else { "\\]" };
                    if let Some(e) = text[i + 2..].find(close) {
                        let end = i + 2 + e;
                        out.push(Candidate {
                            start: i,
                            end: end + 2,
                            kind: Kind::Math,
                            text: text[i + 2..end].trim(),
                        });
                        i = end + 2;
                        continue;
                    }
                    i += 2;
                } else if next.is_ascii_alphabetic() {
                    let name_end = i
                        + 1
                        + text[i + 1..]
                            .bytes()
                            .take_while(u8::is_ascii_alphabetic)
                            .count();
                    if starts_formula(&text[i + 1..name_end]) {
                        let (s, e) = latex_run(text, i);
                        // The number glued before it (`2\sqrt{3}`) is part of it.
                        while out.last().is_some_and(|c| c.end > s) {
                            out.pop();
                        }
                        out.push(Candidate {
                            start: s,
                            end: e,
                            kind: Kind::Latex,
                            text: &text[s..e],
                        });
                        i = e.max(name_end);
                    } else {
                        i = name_end;
                    }
                } else {
                    // `\$`, `\,`, `\\`: an escaped character or spacing.
                    i = past_escape(text, i);
                }
            }
            b'$' => match dollar_span(text, i) {
                Some((content, end)) => {
                    out.push(Candidate {
                        start: i,
                        end,
                        kind: Kind::Math,
                        text: content.trim(),
                    });
                    i = end;
                }
                None => i += 1,
            },
            c if c.is_ascii_digit()
                || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                i = prose_number(text, i, &mut out);
            }
            _ => i += 1,
        }
    }
    out.retain(|c| !c.text.is_empty());
    out
}

/// The `$...$` or `$$...$$` span opening at `i`: its content and the index past it; an
/// unclosed span runs to the end of the text. A `$` that opens no span is a dollar sign: closed
/// only after a blank line (TeX ends inline math at a paragraph), or a price (`$5 and $3`:
/// digits then words, no command).
fn dollar_span(text: &str, i: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    let display = b.get(i + 1) == Some(&b'$');
    let open = if display { 2 } else { 1 };
    let delim: &[u8] = if display { b"$$" } else { b"$" };
    let mut j = i + open;
    while j < b.len() {
        if b[j] == b'\\' {
            j += 2;
            continue;
        }
        if b[j..].starts_with(delim) {
            let content = &text[i + open..j];
            if !display && !is_inline_math(content) {
                return None;
            }
            return Some((content, j + open));
        }
        j += 1;
    }
    // Nothing closes it. On the last line and inside one sentence, that is a response cut off
    // by the token limit inside a formula: its content is one unfinished formula, not prose
    // whose last number would be the answer. A dollar sign in prose (`costs $5 per apple`, or
    // a stray `$` sentences before the end) stays a dollar sign.
    let rest = &text[i + open..];
    let one_sentence = !rest.contains('\n') && ![". ", "? ", "! "].iter().any(|e| rest.contains(e));
    (one_sentence && (display || is_inline_math(rest))).then_some((rest, b.len()))
}

fn is_inline_math(content: &str) -> bool {
    if content.contains("\n\n") {
        return false;
    }
    let price = content
        .trim_start()
        .starts_with(|c: char| c.is_ascii_digit())
        && !content.contains('\\')
        && content
            .split(|c: char| !c.is_ascii_alphabetic())
            .any(|w| w.len() >= 3);
    !price
}

/// The index past the backslash at `i` and the one character it escapes.
fn past_escape(text: &str, i: usize) -> usize {
    i + 1 + text[i + 1..].chars().next().map_or(0, char::len_utf8)
}

/// Commands that are prose or layout rather than the start of a formula.
fn starts_formula(name: &str) -> bool {
    !matches!(
        name,
        "text"
            | "textbf"
            | "textit"
            | "texttt"
            | "textrm"
            | "emph"
            | "mbox"
            | "mathrm"
            | "boxed"
            | "fbox"
            | "item"
            | "section"
            | "subsection"
            | "label"
            | "ref"
            | "cite"
            | "end"
            | "newline"
            | "noindent"
            | "quad"
            | "qquad"
            | "hline"
            | "hfill"
            | "vspace"
            | "hspace"
            | "par"
            | "therefore"
            | "because"
            | "implies"
            | "Rightarrow"
            | "rightarrow"
    )
}

/// The extent of a LaTeX formula written in prose, from the command at `cmd` (`\frac`,
/// `\sqrt`, `\pi`, ...): back over a number or sign glued to it (`2\sqrt{3}`, `-\frac12`,
/// `3 + \sqrt2`), forward over arguments, operators, numbers and single-letter variables,
/// stopping at a word of prose, a sentence end or a delimiter.
fn latex_run(text: &str, cmd: usize) -> (usize, usize) {
    let s = run_start(text.as_bytes(), cmd);
    let j = run_end(text, cmd);
    let e = s + text[s..j]
        .trim_end_matches([' ', ',', '=', '+', '-', '*', '/', '^', '_'])
        .len();
    (s, e.max(s))
}

/// Where a formula whose command is at `cmd` starts: back over the number, sign or operator
/// glued before it, then forward past leading spaces and operators other than a minus sign.
fn run_start(b: &[u8], cmd: usize) -> usize {
    let mut s = cmd;
    while s > 0 {
        let ok = match b[s - 1] {
            b'0'..=b'9' | b'+' | b'-' | b'*' | b'/' => true,
            // A decimal point, not a full stop; one space, not a paragraph.
            b'.' => b[s].is_ascii_digit(),
            b' ' => s < 2 || b[s - 2] != b' ',
            _ => false,
        };
        if !ok {
            break;
        }
        s -= 1;
    }
    while s < cmd && matches!(b[s], b' ' | b'+' | b'*' | b'/') {
        s += 1;
    }
    s
}

/// Where a formula whose command is at `cmd` ends (before trimming trailing operators): at a
/// word of prose, a sentence end, an unmatched closing bracket, a delimiter or a box.
fn run_end(text: &str, cmd: usize) -> usize {
    let b = text.as_bytes();
    let mut j = cmd;
    let mut parens = 0u32;
    while j < b.len() {
        let c = b[j];
        match c {
            b'\\' => match past_command(text, j) {
                Some(end) => j = end,
                None => break,
            },
            b'{' => match braced(text, j) {
                Some((_, end)) => j = end,
                None => break,
            },
            b'0'..=b'9'
            | b'+'
            | b'-'
            | b'*'
            | b'/'
            | b'='
            | b'^'
            | b'_'
            | b'<'
            | b'>'
            | b'|'
            | b'!'
            | b'\'' => j += 1,
            b'(' | b'[' => {
                parens += 1;
                j += 1;
            }
            b')' | b']' => {
                if parens == 0 {
                    break;
                }
                parens -= 1;
                j += 1;
            }
            b'.' if b.get(j + 1).is_some_and(u8::is_ascii_digit) => j += 1,
            b'a'..=b'z' | b'A'..=b'Z' => {
                // A variable, not a word: `\frac{7}{3}x`, but not `\frac{7}{3} because`.
                let run = text[j..]
                    .bytes()
                    .take_while(u8::is_ascii_alphabetic)
                    .count();
                if run > 1 {
                    break;
                }
                j += 1;
            }
            b' ' | b',' => {
                let k = j + text[j..]
                    .bytes()
                    .take_while(|&x| x == b' ' || x == b',')
                    .count();
                if text[j..k].matches(',').count() > 1 || !continues_formula(text, k) {
                    break;
                }
                j = k;
            }
            _ => break,
        }
    }
    j
}

/// Past the command or escape at `j` inside a formula, a whole environment included; `None`
/// where the formula ends there (a box, an `\end`, a math delimiter, a line break).
fn past_command(text: &str, j: usize) -> Option<usize> {
    let b = text.as_bytes();
    let next = b.get(j + 1).copied().unwrap_or(b' ');
    if next.is_ascii_alphabetic() {
        let name_end = j
            + 1
            + text[j + 1..]
                .bytes()
                .take_while(u8::is_ascii_alphabetic)
                .count();
        let name = &text[j + 1..name_end];
        if matches!(name, "boxed" | "fbox" | "end") {
            return None;
        }
        if name == "begin" {
            // A whole environment (`pmatrix`): through its `\end{...}`.
            let e = text[name_end..].find("\\end{")?;
            let close = name_end + e + 4;
            return Some(braced(text, close).map_or(b.len(), |(_, end)| end));
        }
        Some(name_end)
    } else if matches!(next, b'(' | b')' | b'[' | b']' | b'\\' | b'$') {
        None
    } else {
        Some(past_escape(text, j))
    }
}

/// Whether the formula continues at `k` after a space or comma: an operator, a number, a
/// command, a bracket, or a single-letter variable.
fn continues_formula(text: &str, k: usize) -> bool {
    let b = text.as_bytes();
    match b.get(k) {
        Some(b'0'..=b'9' | b'+' | b'-' | b'*' | b'/' | b'=' | b'^' | b'<' | b'>' | b'(') => true,
        Some(b'\\') => b.get(k + 1).is_some_and(|&n| {
            let name: String = text[k + 1..]
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect();
            n == b'{' || n == b',' || n == b'!' || (!name.is_empty() && starts_formula(&name))
        }),
        Some(c) if c.is_ascii_alphabetic() => !b.get(k + 1).is_some_and(u8::is_ascii_alphanumeric),
        _ => false,
    }
}

/// A number in prose at `i` (a digit, or `.` before one): pushed as a candidate when it stands
/// as a word of its own. Returns where scanning goes on.
fn prose_number<'a>(text: &'a str, i: usize, out: &mut Vec<Candidate<'a>>) -> usize {
    let b = text.as_bytes();
    let glued = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'^' | b'{' | b'\\');
    let word_end = |from: usize| {
        from + text[from..]
            .bytes()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
            .count()
    };
    if i > 0 && glued(b[i - 1]) {
        // Digits inside a word (`XK7Q`, `w12`) or a LaTeX argument (`x^{2}`).
        return word_end(i).max(i + 1);
    }
    // An operand of a product or quotient with a variable (`x/3`, `(a+b)*2`): the number is part
    // of an expression, and the last number of a response cut off after "costs x/3." is not 3.
    if i > 1
        && matches!(b[i - 1], b'/' | b'*')
        && (b[i - 2].is_ascii_alphabetic() || b[i - 2] == b')')
    {
        return crate::lex::number_end(text, i).max(i + 1);
    }
    let mut s = i;
    if i > 0 && b[i - 1] == b'-' && (i < 2 || !(glued(b[i - 2]) || matches!(b[i - 2], b')' | b'}')))
    {
        s = i - 1;
    }
    let mut e = crate::lex::number_end(text, i);
    // `3/4`, `2^5`: one number written with an operator and no spaces.
    while matches!(b.get(e), Some(b'/' | b'^')) && b.get(e + 1).is_some_and(u8::is_ascii_digit) {
        e = crate::lex::number_end(text, e + 1);
    }
    if matches!(b.get(e), Some(b'/' | b'*')) && b.get(e + 1).is_some_and(u8::is_ascii_alphabetic) {
        return e; // `3/x`, `2*n`
    }
    if b.get(e).is_some_and(u8::is_ascii_alphabetic) {
        // A unit or an ordinal (`5cm`, `3rd`) ends the number; letters then digits (`7Q9`) are
        // a code, not a number.
        let w = word_end(e);
        if b[w - 1].is_ascii_digit() {
            return w;
        }
    }
    let pct = text[e..].trim_start_matches(' ');
    if pct.starts_with('%') {
        e = text.len() - pct.len() + 1;
    } else if pct.starts_with("\\%") {
        e = text.len() - pct.len() + 2;
    }
    out.push(Candidate {
        start: s,
        end: e,
        kind: Kind::Number,
        text: text[s..e].trim_end_matches('.'),
    });
    e.max(i + 1)
}
