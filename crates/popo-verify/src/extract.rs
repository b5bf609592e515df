//! Response -> candidate answer string.
//!
//! Each [`Strategy`] looks for one kind of answer marker; an [`Extractor`] tries them in its
//! priority order and returns the first hit. Everything works on byte offsets of ASCII markers,
//! so arbitrary UTF-8 in the response is safe.

/// One way of locating the final answer in a model response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The last `\boxed{...}` / `\fbox{...}` (nested braces allowed).
    Boxed,
    /// The content of the last `<answer>...</answer>` (a box inside it wins).
    AnswerTag,
    /// Text after the last "final answer is" (up to the end of the sentence).
    FinalAnswerIs,
    /// GSM8K's `#### N`.
    Hashes,
    /// The last `$...$`, `$$...$$`, `\(...\)` or `\[...\]`.
    LastMath,
    /// The last number in the text.
    LastNumber,
}

impl Strategy {
    /// All strategies in the default priority order.
    pub const DEFAULT_ORDER: [Strategy; 6] = [
        Strategy::Boxed,
        Strategy::AnswerTag,
        Strategy::FinalAnswerIs,
        Strategy::Hashes,
        Strategy::LastMath,
        Strategy::LastNumber,
    ];

    fn find(self, text: &str) -> Option<String> {
        match self {
            Strategy::Boxed => last_boxed(text).map(str::to_string),
            Strategy::AnswerTag => answer_tag(text),
            Strategy::FinalAnswerIs => final_answer_is(text),
            Strategy::Hashes => hashes(text),
            Strategy::LastMath => last_math(text).map(str::to_string),
            Strategy::LastNumber => last_number(text).map(str::to_string),
        }
    }
}

/// Extraction with a configurable priority order.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Extractor {
    pub order: Vec<Strategy>,
}

impl Default for Extractor {
    fn default() -> Self {
        Extractor {
            order: Strategy::DEFAULT_ORDER.to_vec(),
        }
    }
}

impl Extractor {
    pub fn new(order: Vec<Strategy>) -> Self {
        Extractor { order }
    }

    /// The candidate answer of a response, trimmed; `None` when no strategy finds one.
    pub fn extract(&self, response: &str) -> Option<String> {
        self.order.iter().find_map(|s| {
            s.find(response)
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
        })
    }
}

/// The answer part of a gold string: its last box if it has one, otherwise the whole string.
pub fn gold_answer(gold: &str) -> String {
    match last_boxed(gold) {
        Some(b) => b.trim().to_string(),
        None => gold.trim().to_string(),
    }
}

/// Content of the balanced `{...}` group starting at byte `open` (which must be `{`).
/// Returns the content and the index just past the closing brace.
pub(crate) fn braced(s: &str, open: usize) -> Option<(&str, usize)> {
    let b = s.as_bytes();
    if b.get(open) != Some(&b'{') {
        return None;
    }
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                // `\{` and `\}` are literal braces and do not nest.
                i += 2;
                continue;
            }
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((&s[open + 1..i], i + 1));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The last `\boxed{...}` or `\fbox{...}`; also `\boxed 5` without braces.
pub fn last_boxed(text: &str) -> Option<&str> {
    let mut best: Option<(usize, &str)> = None;
    for marker in ["\\boxed", "\\fbox"] {
        let mut from = 0;
        while let Some(p) = text[from..].find(marker) {
            let start = from + p;
            from = start + marker.len();
            let rest = &text[from..];
            let skip = rest.len() - rest.trim_start().len();
            let content = if rest.trim_start().starts_with('{') {
                braced(text, from + skip).map(|(c, _)| c)
            } else if skip > 0 {
                // `\boxed 5`: the next whitespace-delimited token.
                let t = rest.trim_start();
                let end = t
                    .find(|c: char| c.is_whitespace() || c == '$')
                    .unwrap_or(t.len());
                Some(&t[..end])
            } else {
                None
            };
            if let Some(c) = content {
                if best.is_none_or(|(s, _)| start > s) {
                    best = Some((start, c));
                }
            }
        }
    }
    best.map(|(_, c)| c)
}

fn answer_tag(text: &str) -> Option<String> {
    let start = text.rfind("<answer>")? + "<answer>".len();
    let end = text[start..]
        .find("</answer>")
        .map(|e| start + e)
        .unwrap_or(text.len());
    let inner = &text[start..end];
    Some(match last_boxed(inner) {
        Some(b) => b.to_string(),
        None => strip_math_delims(inner.trim()).to_string(),
    })
}

fn find_ascii_ci(hay: &str, needle: &str) -> Option<usize> {
    let h = hay.as_bytes();
    let n = needle.as_bytes();
    if n.len() > h.len() {
        return None;
    }
    (0..=h.len() - n.len())
        .rev()
        .find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

fn final_answer_is(text: &str) -> Option<String> {
    let p = find_ascii_ci(text, "final answer is")? + "final answer is".len();
    let mut rest = text[p..].trim_start();
    rest = rest.strip_prefix(':').unwrap_or(rest).trim_start();
    if let Some(b) = last_boxed(rest) {
        return Some(b.to_string());
    }
    if let Some(m) = first_math(rest) {
        return Some(m.to_string());
    }
    // Up to the end of the line or sentence ("... is 42. I hope").
    let line = rest.lines().next().unwrap_or("");
    let mut end = line.len();
    let b = line.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'.'
            && (i + 1 == b.len() || b[i + 1] == b' ')
            && !(i > 0 && i + 1 < b.len() && b[i - 1].is_ascii_digit() && b[i + 1].is_ascii_digit())
        {
            end = i;
            break;
        }
    }
    Some(line[..end].trim().to_string())
}

fn hashes(text: &str) -> Option<String> {
    let p = text.rfind("####")? + 4;
    let line = text[p..].lines().next().unwrap_or("").trim();
    Some(line.trim_end_matches('.').to_string())
}

/// Strip one layer of `$`, `$$`, `\(`..`\)`, `\[`..`\]`.
pub(crate) fn strip_math_delims(s: &str) -> &str {
    let t = s.trim();
    for (a, b) in [("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")] {
        if t.len() >= a.len() + b.len() && t.starts_with(a) && t.ends_with(b) {
            return t[a.len()..t.len() - b.len()].trim();
        }
    }
    t
}

/// All math spans `(start, content)` in order.
fn math_spans(text: &str) -> Vec<&str> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() && (b[i + 1] == b'(' || b[i + 1] == b'[') {
            let close = if b[i + 1] == b'(' { "\\)" } else { "\\]" };
            if let Some(e) = text[i + 2..].find(close) {
                out.push(&text[i + 2..i + 2 + e]);
                i = i + 2 + e + 2;
                continue;
            }
            i += 2;
            continue;
        }
        if b[i] == b'\\' {
            i += 2; // `\$` is a literal dollar
            continue;
        }
        if b[i] == b'$' {
            let dd = i + 1 < b.len() && b[i + 1] == b'$';
            let open = if dd { 2 } else { 1 };
            let delim = if dd { "$$" } else { "$" };
            let mut j = i + open;
            let mut found = None;
            while j < b.len() {
                if b[j] == b'\\' {
                    j += 2;
                    continue;
                }
                if b[j..].starts_with(delim.as_bytes()) {
                    found = Some(j);
                    break;
                }
                j += 1;
            }
            if let Some(e) = found {
                out.push(&text[i + open..e]);
                i = e + open;
                continue;
            }
            i += open;
            continue;
        }
        i += 1;
    }
    out
}

fn first_math(text: &str) -> Option<&str> {
    math_spans(text).into_iter().find(|m| !m.trim().is_empty())
}

fn last_math(text: &str) -> Option<&str> {
    math_spans(text)
        .into_iter()
        .rev()
        .find(|m| !m.trim().is_empty())
}

/// The last number (optional sign, digits with `,` groups, decimals, fraction `a/b`).
pub fn last_number(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    let mut i = b.len();
    while i > 0 {
        i -= 1;
        if b[i].is_ascii_digit() {
            let end = i + 1;
            let mut s = i;
            while s > 0 {
                let c = b[s - 1];
                if c.is_ascii_digit() || c == b'.' || c == b'/' {
                    s -= 1;
                } else if c == b',' && s >= 2 && b[s - 2].is_ascii_digit() && end - s >= 3 {
                    s -= 1;
                } else {
                    break;
                }
            }
            while s < end && !b[s].is_ascii_digit() && b[s] != b'.' {
                s += 1;
            }
            if s > 0 && b[s - 1] == b'-' {
                s -= 1;
            }
            return Some(text[s..end].trim_start_matches(['/', ',']));
        }
    }
    None
}
