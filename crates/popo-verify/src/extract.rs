//! Response -> candidate answer string.
//!
//! Each [`Strategy`] looks for one kind of answer marker; an [`Extractor`] tries them in its
//! priority order and returns the first hit. Without a marker, the answer is the last
//! *candidate* by position: a math span, LaTeX written in the prose, or a number standing as a
//! word. Everything works on byte offsets of ASCII markers, so arbitrary UTF-8 in the response
//! is safe.

use crate::candidates::{candidates, Candidate, Kind};
use crate::lex::braced;

/// One way of locating the final answer in a model response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The last `\boxed{...}` / `\fbox{...}` (nested braces allowed); several boxes joined only
    /// by punctuation or "and"/"or" are one answer list.
    Boxed,
    /// The content of the last `<answer>...</answer>` (a box inside it wins).
    AnswerTag,
    /// Text after the last "final answer is": its first candidate, else the phrase up to the
    /// end of the sentence. Written after every box, and giving a value, it also wins over
    /// [`Strategy::Boxed`] when that comes first in the order.
    FinalAnswerIs,
    /// GSM8K's `#### N`.
    Hashes,
    /// The first candidate in the sentence after the last "answer is" / "Answer:".
    AnswerIs,
    /// The whole response, when it is a formula and nothing else (`\frac{7}{3}`, `(1, 2)`).
    Bare,
    /// The last candidate by position: a math span, a LaTeX formula written without
    /// delimiters, or a number standing in the prose as a word of its own; the value before an
    /// approximation of it (`$\frac{2}{7}$, approximately $0.29$`) rather than the approximation.
    LastCandidate,
    /// The last `$...$`, `$$...$$`, `\(...\)` or `\[...\]` (not in the default order).
    LastMath,
    /// The last number in the prose (not in the default order).
    LastNumber,
}

impl Strategy {
    /// The default priority order: explicit answer markers, then a response that is only the
    /// answer, then whatever candidate comes last.
    pub const DEFAULT_ORDER: [Strategy; 7] = [
        Strategy::Boxed,
        Strategy::AnswerTag,
        Strategy::FinalAnswerIs,
        Strategy::Hashes,
        Strategy::AnswerIs,
        Strategy::Bare,
        Strategy::LastCandidate,
    ];

    fn find(self, text: &str) -> Option<String> {
        let last_of = |kind: Option<Kind>| {
            candidates(text)
                .into_iter()
                .rev()
                .find(|c| kind.is_none_or(|k| c.kind == k))
                .map(|c| c.text.to_string())
        };
        match self {
            Strategy::Boxed => final_boxes(text),
            Strategy::AnswerTag => answer_tag(text),
            Strategy::FinalAnswerIs => final_answer_is(text),
            Strategy::Hashes => hashes(text),
            Strategy::AnswerIs => answer_is(text),
            Strategy::Bare => bare(text).map(str::to_string),
            Strategy::LastCandidate => last_value(text, &candidates(text)),
            Strategy::LastMath => last_of(Some(Kind::Math)),
            Strategy::LastNumber => last_of(Some(Kind::Number)),
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
        let tidy = |a: String| Some(a.trim().to_string()).filter(|a| !a.is_empty());
        if let Some(a) = self.closing_statement(response).and_then(tidy) {
            return Some(a);
        }
        self.order
            .iter()
            .find_map(|s| s.find(response).and_then(tidy))
    }

    /// A closing "The final answer is X" written after every box is the response's last word:
    /// it wins over a box of an intermediate result earlier on, when the order tries boxes
    /// first and the statement gives a value (a phrase such as "the boxed one above" does not).
    fn closing_statement(&self, text: &str) -> Option<String> {
        let rank = |s: Strategy| self.order.iter().position(|&o| o == s);
        if rank(Strategy::Boxed)? > rank(Strategy::FinalAnswerIs)? {
            return None;
        }
        let marker = rfind_all_ci(text, FINAL_ANSWER_IS).next()?;
        if marker < boxes(text).last()?.1 {
            return None;
        }
        after_marker(text, marker + FINAL_ANSWER_IS.len())
            .ok()
            .filter(|a| !crate::lex::is_name(a))
    }
}

const FINAL_ANSWER_IS: &str = "final answer is";

/// The answer part of a gold string: its final box (or boxes, see [`Strategy::Boxed`]) if it
/// has one, otherwise the whole string.
pub fn gold_answer(gold: &str) -> String {
    match final_boxes(gold) {
        Some(b) => b.trim().to_string(),
        None => gold.trim().to_string(),
    }
}

/// Every top-level `\boxed{...}` / `\fbox{...}` (also `\boxed 5`): `(start, end, content)`,
/// in order. Boxes nested inside another box are part of it.
fn boxes(text: &str) -> Vec<(usize, usize, &str)> {
    let mut out: Vec<(usize, usize, &str)> = Vec::new();
    for marker in ["\\boxed", "\\fbox"] {
        let mut from = 0;
        while let Some(p) = text[from..].find(marker) {
            let start = from + p;
            from = start + marker.len();
            let rest = &text[from..];
            let skip = rest.len() - rest.trim_start().len();
            let found = if rest.trim_start().starts_with('{') {
                braced(text, from + skip)
            } else if skip > 0 {
                // `\boxed 5`: the next whitespace-delimited token.
                let t = rest.trim_start();
                let len = t
                    .find(|c: char| c.is_whitespace() || c == '$')
                    .unwrap_or(t.len());
                Some((&t[..len], from + skip + len))
            } else {
                None
            };
            if let Some((content, end)) = found {
                out.push((start, end, content));
            }
        }
    }
    out.sort_unstable_by_key(|b| b.0);
    let mut top: Vec<(usize, usize, &str)> = Vec::with_capacity(out.len());
    for b in out {
        if top.last().is_none_or(|last| b.0 >= last.1) {
            top.push(b);
        }
    }
    top
}

/// The last `\boxed{...}` or `\fbox{...}`; also `\boxed 5` without braces.
pub fn last_boxed(text: &str) -> Option<&str> {
    boxes(text).last().map(|b| b.2)
}

/// Whether the text between two boxes only joins them: on one line anything does (`x =
/// \boxed{1}, y = \boxed{2}`); across lines only delimiters, punctuation, numbering, "and"/"or"
/// and variable names do (`$x = \boxed{1}$\n$x = \boxed{2}$`), not a word of working ("no:").
fn joins_boxes(between: &str) -> bool {
    !between.contains('\n')
        || between
            .split(|c: char| !c.is_ascii_alphabetic())
            .all(|w| w.len() <= 1 || matches!(w, "and" | "or" | "text" | "quad" | "qquad"))
}

/// The last box; when the boxes before it are joined to it (see [`joins_boxes`]), all of them
/// as one list: `\boxed{3} and \boxed{5}` is the answer `3, 5`, and `\boxed{3} or \boxed{4}`
/// is a hedge that never passes for a single answer.
fn final_boxes(text: &str) -> Option<String> {
    let all = boxes(text);
    let last = *all.last()?;
    let mut joined = vec![last.2];
    let mut start = last.0;
    for b in all.iter().rev().skip(1) {
        if !joins_boxes(&text[b.1..start]) {
            break;
        }
        start = b.0;
        if !joined.contains(&b.2) {
            joined.push(b.2);
        }
    }
    if joined.len() == 1 {
        return Some(last.2.to_string());
    }
    joined.reverse();
    Some(joined.join(", "))
}

/// The content of the last `<answer>` tag (to its end tag, or the end of the text). A box
/// inside wins; prose inside is searched like a response.
fn answer_tag(text: &str) -> Option<String> {
    let start = text.rfind("<answer>")? + "<answer>".len();
    let end = text[start..]
        .find("</answer>")
        .map(|e| start + e)
        .unwrap_or(text.len());
    let inner = &text[start..end];
    last_boxed(inner)
        .map(str::to_string)
        .or_else(|| bare(inner).map(str::to_string))
        .or_else(|| answer_is(inner))
        .or_else(|| last_value(inner, &candidates(inner)))
        .or_else(|| Some(strip_math_delims(inner.trim()).to_string()))
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

/// The whole response when it is nothing but a formula: `\frac{7}{3}`, `2 500`, `(1, 2)`,
/// `x = 5`, `3 or 4` (a hedge, kept whole so it is seen as one). A trailing period is dropped.
fn bare(text: &str) -> Option<&str> {
    let t = text.trim();
    let t = t.strip_suffix('.').unwrap_or(t).trim_end();
    let multiline = t.contains('\n') && !t.contains("\\begin");
    // A response with math delimiters is read by its spans.
    let delimited = t.contains("\\(") || t.contains("\\[") || unescaped_dollar(t);
    if t.is_empty() || t.len() > 1000 || multiline || delimited {
        return None;
    }
    crate::lex::is_formula(t).then_some(t)
}

fn unescaped_dollar(t: &str) -> bool {
    let b = t.as_bytes();
    (0..b.len()).any(|i| b[i] == b'$' && (i == 0 || b[i - 1] != b'\\'))
}

// ---------------------------------------------------------------------------------------------
// Markers in prose: "final answer is", "answer is", "Answer:".

/// Byte offsets of `needle` in `hay`, ASCII case-insensitive, last first.
fn rfind_all_ci<'a>(hay: &'a str, needle: &'a str) -> impl Iterator<Item = usize> + 'a {
    let h = hay.as_bytes();
    let n = needle.as_bytes();
    (0..(h.len() + 1).saturating_sub(n.len()))
        .rev()
        .filter(move |&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// After an answer marker: skip `:`, `*` (Markdown bold) and spaces.
fn skip_marker_tail(text: &str, mut p: usize) -> usize {
    let b = text.as_bytes();
    while p < b.len() && (b[p].is_ascii_whitespace() || matches!(b[p], b':' | b'*')) {
        p += 1;
    }
    p
}

/// The end of the sentence that starts at `from`: the first line break, or `.`/`?`/`!`
/// followed by a space (not a decimal point), outside math spans.
fn sentence_end(text: &str, from: usize, cands: &[Candidate]) -> usize {
    let b = text.as_bytes();
    let mut i = from;
    let mut spans = cands.iter().filter(|c| c.end > from).peekable();
    while i < b.len() {
        if let Some(c) = spans.peek() {
            if i >= c.start {
                i = i.max(c.end);
                spans.next();
                continue;
            }
        }
        let stop = b[i] == b'\n'
            || (matches!(b[i], b'.' | b'?' | b'!')
                && b.get(i + 1).is_none_or(|n| n.is_ascii_whitespace()));
        if stop {
            return i;
        }
        i += 1;
    }
    b.len()
}

/// What follows a marker ending at `p`: a box there, else the first candidate of its
/// sentence. `None` with the sentence's bounds when the sentence has no candidate.
fn after_marker(text: &str, p: usize) -> Result<String, (usize, usize)> {
    let rest = &text[p..];
    if let Some(b) = last_boxed(rest) {
        return Ok(b.to_string());
    }
    let from = skip_marker_tail(text, p);
    let cands = candidates(text);
    let end = sentence_end(text, from, &cands);
    let in_sentence: Vec<Candidate> = cands
        .into_iter()
        .filter(|c| c.start >= from && c.start < end.max(from + 1))
        .collect();
    let Some(first) = in_sentence
        .iter()
        .position(|c| !c.is_name())
        .or((!in_sentence.is_empty()).then_some(0))
    else {
        return Err((from, end));
    };
    // "the answer is 3 or 4" is a hedge, "the answer is 3 and 5" a list: keep them whole.
    let mut answer = in_sentence[first].text.to_string();
    for w in in_sentence[first..].windows(2) {
        let between = &text[w[0].end..w[1].start];
        if !joins_answers(between, true) {
            break;
        }
        answer.push_str(separator(between));
        answer.push_str(w[1].text);
    }
    Ok(answer)
}

/// Whether the prose between two candidates only lists them: a comma (if `comma` may list
/// them) or "and"/"or", Markdown bold, and the next one's variable (`x = 2 or x = 3`); not
/// `24 = 72` nor `2 to 5`.
fn joins_answers(between: &str, comma: bool) -> bool {
    let t = between.trim_end();
    // The next candidate's `x =`.
    let t = match t.strip_suffix('=').map(str::trim_end) {
        Some(r) if r.ends_with(|c: char| c.is_ascii_alphabetic()) => {
            let r = &r[..r.len() - 1];
            if r.ends_with(|c: char| c.is_ascii_alphanumeric()) {
                return false;
            }
            r
        }
        Some(_) => return false,
        None => t,
    };
    let words_ok = t
        .split(|c: char| !c.is_ascii_alphabetic())
        .all(|w| w.is_empty() || matches!(w, "and" | "or"));
    let chars_ok = t
        .chars()
        .all(|c| c.is_ascii_alphabetic() || c.is_whitespace() || matches!(c, ',' | ';' | '*'));
    let separated = (comma && t.contains([',', ';'])) || t.contains("and") || t.contains("or");
    words_ok && chars_ok && separated
}

fn final_answer_is(text: &str) -> Option<String> {
    let p = rfind_all_ci(text, FINAL_ANSWER_IS).next()? + FINAL_ANSWER_IS.len();
    match after_marker(text, p) {
        Ok(a) => Some(a),
        // A phrase answer: "The final answer is Monday."
        Err((from, end)) => Some(text[from..end].trim().to_string()),
    }
}

/// "the answer is 35", "**Answer:** $\frac12$", "the answer would be 7": the last such marker.
fn answer_is(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let p = rfind_all_ci(text, "answer").find_map(|i| {
        let word_start = i == 0 || !b[i - 1].is_ascii_alphabetic();
        let after = i + "answer".len();
        if !word_start || b.get(after).is_some_and(u8::is_ascii_alphabetic) {
            return None;
        }
        let rest = text[after..].trim_start_matches([' ', '*']);
        let verb = [
            "is",
            "would be",
            "will be",
            "should be",
            "must be",
            "equals",
        ]
        .iter()
        .find(|v| {
            rest.len() >= v.len()
                && rest.as_bytes()[..v.len()].eq_ignore_ascii_case(v.as_bytes())
                && !rest
                    .as_bytes()
                    .get(v.len())
                    .is_some_and(u8::is_ascii_alphabetic)
        });
        match (verb, rest.as_bytes().first()) {
            (Some(v), _) => Some(text.len() - rest.len() + v.len()),
            (None, Some(b':' | b'=')) => Some(text.len() - rest.len() + 1),
            _ => None,
        }
    })?;
    match after_marker(text, p) {
        Ok(a) => Some(a),
        // A phrase answer ("The answer is Monday.") only when no candidate follows at all:
        // otherwise "the answer is not obvious" would hide the working's result.
        Err((from, end)) => {
            let later = candidates(text).iter().any(|c| c.start >= from);
            let phrase = text[from..end].trim();
            (!later && !phrase.is_empty()).then(|| phrase.to_string())
        }
    }
}

/// The last candidate that states a value, else the last one; with the candidates listed
/// right before it (`... are $3$ and $5$`, `x = 3 or x = 4`: a list, or a hedge). In prose a
/// comma alone does not list numbers: "after step 2, 15 remain".
fn last_value(text: &str, cands: &[Candidate]) -> Option<String> {
    let mut last = cands
        .iter()
        .rposition(|c| !c.is_name())
        .or(cands.len().checked_sub(1))?;
    // `$\frac{2}{7}$, approximately $0.29$`: the exact value is the answer, as inside a formula
    // (`approx::settle`).
    while last > 0
        && !cands[last - 1].is_name()
        && approximates(&text[cands[last - 1].end..cands[last].start])
    {
        last -= 1;
    }
    let mut first = last;
    while first > 0 {
        let (a, b) = (&cands[first - 1], &cands[first]);
        let comma = a.kind != Kind::Number && b.kind != Kind::Number;
        if !joins_answers(&text[a.end..b.start], comma) {
            break;
        }
        first -= 1;
    }
    let mut answer = cands[first].text.to_string();
    for w in cands[first..=last].windows(2) {
        answer.push_str(separator(&text[w[0].end..w[1].start]));
        answer.push_str(w[1].text);
    }
    Some(answer)
}

/// Whether the prose between two candidates only says that the second approximates the first:
/// `, approximately `, ` which is about `, ` ≈ `, `, or roughly `.
fn approximates(between: &str) -> bool {
    const FILLER: [&str; 6] = ["which", "is", "or", "that", "i", "e"];
    const APPROX: [&str; 7] = [
        "approximately",
        "approx",
        "about",
        "roughly",
        "around",
        "nearly",
        "approximate",
    ];
    let t = between.trim();
    let (t, sign) = match t.strip_suffix('≈').or_else(|| t.strip_suffix("\\approx")) {
        Some(r) => (r, true),
        None => (t, false),
    };
    let only_prose = t.chars().all(|c| {
        c.is_ascii_alphabetic() || c.is_whitespace() || matches!(c, ',' | ';' | '(' | '.')
    });
    let words: Vec<&str> = t
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .collect();
    let known = |w: &&str| {
        let w = w.to_ascii_lowercase();
        FILLER.contains(&w.as_str()) || APPROX.contains(&w.as_str())
    };
    let last_says_approx = words
        .last()
        .is_some_and(|w| APPROX.contains(&w.to_ascii_lowercase().as_str()));
    only_prose && words.iter().all(known) && (sign || last_says_approx)
}

/// How joined candidates are written for the parser: "and" alone is kept (`$x > -2$ and
/// $x < 3$` is one interval), any other list becomes commas.
fn separator(between: &str) -> &'static str {
    let mut words = between.split(|c: char| !c.is_ascii_alphabetic());
    let and = words.clone().any(|w| w == "and");
    if and && !words.any(|w| w == "or") && !between.contains([',', ';']) {
        " and "
    } else {
        ", "
    }
}

/// The last number in prose, as [`Strategy::LastCandidate`] reads numbers: `-3.25`, `7,500`,
/// `3/4`, `50%`; never the digits of a word (`XK7Q`, `w12`).
pub fn last_number(text: &str) -> Option<&str> {
    candidates(text)
        .into_iter()
        .rev()
        .find(|c| c.kind == Kind::Number)
        .map(|c| c.text)
}
