//! Response -> candidate answer string.
//!
//! Each [`Strategy`] looks for one kind of answer marker; an [`Extractor`] tries them in its
//! priority order and returns the first hit. Without a marker, the answer is the last
//! *candidate* by position: a math span, LaTeX written in the prose, or a number standing as a
//! word. Everything works on byte offsets of ASCII markers, so arbitrary UTF-8 in the response
//! is safe.

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
    /// end of the sentence.
    FinalAnswerIs,
    /// GSM8K's `#### N`.
    Hashes,
    /// The first candidate in the sentence after the last "answer is" / "Answer:".
    AnswerIs,
    /// The whole response, when it is a formula and nothing else (`\frac{7}{3}`, `(1, 2)`).
    Bare,
    /// The last candidate by position: a math span, a LaTeX formula written without
    /// delimiters, or a number standing in the prose as a word of its own.
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
        self.order.iter().find_map(|s| {
            s.find(response)
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
        })
    }
}

/// The answer part of a gold string: its final box (or boxes, see [`Strategy::Boxed`]) if it
/// has one, otherwise the whole string.
pub fn gold_answer(gold: &str) -> String {
    match final_boxes(gold) {
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
    let p = rfind_all_ci(text, "final answer is").next()? + "final answer is".len();
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

// ---------------------------------------------------------------------------------------------
// Candidates: the places in a response where an answer can stand, in order of position.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The content of `$...$`, `$$...$$`, `\(...\)`, `\[...\]`.
    Math,
    /// LaTeX written in the prose without delimiters: `so x is \frac{7}{3}`.
    Latex,
    /// A number standing as a word of its own: not `7` in `XK7Q` nor `12` in `w12`.
    Number,
}

#[derive(Clone, Copy, Debug)]
struct Candidate<'a> {
    start: usize,
    end: usize,
    kind: Kind,
    text: &'a str,
}

impl Candidate<'_> {
    /// Whether it only names something (`$n$`, `$ABCD$`, `$f(x)$`): such a candidate is the
    /// answer only when the response offers nothing else.
    fn is_name(&self) -> bool {
        self.kind != Kind::Number && crate::lex::is_name(self.text)
    }
}

/// The last candidate that states a value, else the last one; with the candidates listed
/// right before it (`... are $3$ and $5$`, `x = 3 or x = 4`: a list, or a hedge). In prose a
/// comma alone does not list numbers: "after step 2, 15 remain".
fn last_value(text: &str, cands: &[Candidate]) -> Option<String> {
    let last = cands
        .iter()
        .rposition(|c| !c.is_name())
        .or(cands.len().checked_sub(1))?;
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

/// Every candidate in order of position. Numbers inside a span or a LaTeX formula are part of
/// it, not candidates of their own.
fn candidates(text: &str) -> Vec<Candidate<'_>> {
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
    let b = text.as_bytes();
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
    let mut j = cmd;
    let mut parens = 0u32;
    while j < b.len() {
        let c = b[j];
        match c {
            b'\\' => {
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
                        break;
                    }
                    if name == "begin" {
                        // A whole environment (`pmatrix`): through its `\end{...}`.
                        match text[name_end..].find("\\end{") {
                            Some(e) => {
                                let close = name_end + e + 4;
                                j = braced(text, close).map_or(b.len(), |(_, end)| end);
                            }
                            None => break,
                        }
                        continue;
                    }
                    j = name_end;
                } else if matches!(next, b'(' | b')' | b'[' | b']' | b'\\' | b'$') {
                    break;
                } else {
                    j = past_escape(text, j);
                }
            }
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
    let e = s + text[s..j]
        .trim_end_matches([' ', ',', '=', '+', '-', '*', '/', '^', '_'])
        .len();
    (s, e.max(s))
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

/// The last number in prose, as [`Strategy::LastCandidate`] reads numbers: `-3.25`, `7,500`,
/// `3/4`, `50%`; never the digits of a word (`XK7Q`, `w12`).
pub fn last_number(text: &str) -> Option<&str> {
    candidates(text)
        .into_iter()
        .rev()
        .find(|c| c.kind == Kind::Number)
        .map(|c| c.text)
}
