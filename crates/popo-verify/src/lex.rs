//! LaTeX / plain-math answer string -> tokens. One pass over the bytes; formatting commands
//! (`\left`, `\,`, `\displaystyle`, ...) vanish here so the parser only sees mathematics.

use crate::expr::{Fun, NumLit};

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Num(NumLit),
    /// A single-letter or named (Greek) variable.
    Ident(Box<str>),
    /// A run of two or more plain letters (`cm`, `xy`, `sin`, `Monday`).
    Word(Box<str>),
    /// `\text{...}` content.
    Text(Box<str>),
    /// Raw subscript content (`_2`, `_{10}`), spaces removed.
    Sub(Box<str>),
    Func(Fun),
    Log,
    Frac,
    Sqrt,
    Binom,
    Pi,
    Infty,
    Plus,
    Minus,
    Pm,
    Mp,
    Star,
    Slash,
    Caret,
    Bang,
    Percent,
    Degree,
    Eq,
    /// `\approx`, `≈`: an approximation of what comes before.
    Approx,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Cup,
    LParen,
    RParen,
    LBrack,
    RBrack,
    LBrace,
    RBrace,
    LSet,
    RSet,
    Bar,
    LFloor,
    RFloor,
    LCeil,
    RCeil,
    Comma,
    /// A list separator written as a word: `or`, `;`.
    Or,
    /// `and`, `\land`: a list separator too, except between two bounds on one variable
    /// (`x > -2 and x < 3` is `-2 < x < 3`).
    And,
    Amp,
    RowSep,
    Begin(Box<str>),
    End,
    Emptyset,
    Colon,
}

pub(crate) struct LexError;

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphabetic()
}

/// Tokenize. A plain comma or space between digit groups (`2,125`, `7 425 000`) makes one
/// number only at bracket depth 0 and not right after a list comma (inside `(1,000)` a comma
/// separates coordinates); TeX's own separators (`12,\!500`, `1{,}000`, `1\,000`) always do,
/// since nobody writes them between list items.
pub(crate) fn lex(s: &str, out: &mut Vec<Tok>) -> Result<(), LexError> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut depth: i32 = 0;
    while i < b.len() {
        let c = b[i];
        i = match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'~' | b'$' => i + 1,
            // A stray period (sentence end, `\cdots` leftovers): ignore.
            b'.' if !(i + 1 < b.len() && b[i + 1].is_ascii_digit()) => i + 1,
            b'0'..=b'9' | b'.' => {
                let after_comma = matches!(out.last(), Some(Tok::Comma));
                let (lit, next) = lex_number(s, i, depth == 0 && !after_comma);
                out.push(Tok::Num(lit));
                next
            }
            b'a'..=b'z' | b'A'..=b'Z' => lex_word(s, i, out),
            b'\\' => lex_command(s, i, out, &mut depth)?,
            b'_' => lex_subscript(s, i + 1, out),
            b'^' => lex_caret(s, i, out),
            _ => lex_symbol(s, i, out, &mut depth)?,
        };
    }
    Ok(())
}

/// The run of letters at `start`: a variable, a list separator (`or`, `and`) or a word.
/// Returns the index after it.
fn lex_word(s: &str, start: usize, out: &mut Vec<Tok>) -> usize {
    let b = s.as_bytes();
    let mut i = start;
    while i < b.len() && is_word_byte(b[i]) {
        i += 1;
    }
    let w = &s[start..i];
    if w.len() == 1 {
        out.push(Tok::Ident(w.into()));
    } else {
        match w {
            "or" | "OR" => out.push(Tok::Or),
            "and" | "AND" => out.push(Tok::And),
            _ => out.push(Tok::Word(w.into())),
        }
    }
    i
}

/// The subscript whose argument starts at `i` (just after the `_`), spaces removed.
fn lex_subscript(s: &str, i: usize, out: &mut Vec<Tok>) -> usize {
    let (sub, next) = raw_arg(s, i);
    out.push(Tok::Sub(
        sub.chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .into(),
    ));
    next
}

/// The `^` at `i`: a power, or degrees when `\circ` is its argument (`^\circ`, `^{\circ}`).
fn lex_caret(s: &str, i: usize, out: &mut Vec<Tok>) -> usize {
    let b = s.as_bytes();
    let rest = s[i + 1..].trim_start();
    if let Some(r) = rest.strip_prefix("\\circ") {
        out.push(Tok::Degree);
        b.len() - r.len()
    } else if let Some(r) = rest
        .strip_prefix('{')
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix("\\circ"))
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix('}'))
    {
        out.push(Tok::Degree);
        b.len() - r.len()
    } else {
        out.push(Tok::Caret);
        i + 1
    }
}

/// The operator, bracket or punctuation at `i`, or a non-ASCII character (`×`, `≤`, `π`).
/// Returns the index after it.
fn lex_symbol(s: &str, i: usize, out: &mut Vec<Tok>, depth: &mut i32) -> Result<usize, LexError> {
    let b = s.as_bytes();
    if let Some((t, len)) = operator(b, i) {
        out.push(t);
        return Ok(i + len);
    }
    let c = b[i];
    let t = match c {
        b'(' => {
            *depth += 1;
            Tok::LParen
        }
        b')' => {
            *depth -= 1;
            Tok::RParen
        }
        b'[' => {
            *depth += 1;
            Tok::LBrack
        }
        b']' => {
            *depth -= 1;
            Tok::RBrack
        }
        // `{,}` is a thousands separator in TeX; handled in lex_number.
        b'{' => Tok::LBrace,
        b'}' => Tok::RBrace,
        b'|' => Tok::Bar,
        b',' => Tok::Comma,
        b';' => Tok::Or,
        b'&' => Tok::Amp,
        b':' => Tok::Colon,
        b'\'' | b'"' | b'?' | b'`' => return Ok(i + 1),
        _ if c >= 0x80 => {
            let ch = s[i..].chars().next().unwrap_or(' ');
            if let Some(t) = unicode_tok(ch) {
                out.push(t);
            }
            return Ok(i + ch.len_utf8());
        }
        _ => return Err(LexError),
    };
    out.push(t);
    Ok(i + 1)
}

/// The arithmetic or comparison operator at `i` and its length in bytes: `**` is a power
/// (Python's), `<=` and `>=` are `\le` and `\ge`.
fn operator(b: &[u8], i: usize) -> Option<(Tok, usize)> {
    let next_is = |x: u8| b.get(i + 1) == Some(&x);
    Some(match b[i] {
        b'+' => (Tok::Plus, 1),
        b'-' => (Tok::Minus, 1),
        b'*' if next_is(b'*') => (Tok::Caret, 2),
        b'*' => (Tok::Star, 1),
        b'/' => (Tok::Slash, 1),
        // `!=` is how plain text writes `\neq`; `5! = 120` keeps its space.
        b'!' if next_is(b'=') => (Tok::Ne, 2),
        b'!' => (Tok::Bang, 1),
        b'%' => (Tok::Percent, 1),
        b'=' => (Tok::Eq, 1),
        b'<' if next_is(b'=') => (Tok::Le, 2),
        b'<' => (Tok::Lt, 1),
        b'>' if next_is(b'=') => (Tok::Ge, 2),
        b'>' => (Tok::Gt, 1),
        _ => return None,
    })
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

/// Whether `s` is a formula and nothing else: it lexes, every run of letters is a variable or
/// a function name (no prose), and no two numbers stand side by side (`3 4` is no answer).
pub(crate) fn is_formula(s: &str) -> bool {
    // Letters of other scripts lex one by one as variables; a sentence in them is still prose.
    if s.chars()
        .any(|c| !c.is_ascii() && c.is_alphabetic() && !('\u{370}'..='\u{3ff}').contains(&c))
    {
        return false;
    }
    let mut toks = Vec::new();
    if lex(s, &mut toks).is_err() || toks.is_empty() {
        return false;
    }
    let math_word = |w: &str| {
        Fun::from_name(w).is_some()
            || matches!(w, "pi" | "inf" | "infty" | "infinity" | "sqrt" | "oo")
    };
    toks.windows(2)
        .all(|w| !matches!(w, [Tok::Num(_), Tok::Num(_)]))
        && toks.iter().all(|t| match t {
            Tok::Word(w) => math_word(w),
            _ => true,
        })
}

/// Whether `s` only names something: variables, points and function values of variables
/// (`n`, `ABCD`, `x_1`, `f(x)`, `\triangle ABC`), with no number, operator or constant.
pub(crate) fn is_name(s: &str) -> bool {
    let mut toks = Vec::new();
    lex(s, &mut toks).is_ok()
        && toks
            .iter()
            .any(|t| matches!(t, Tok::Ident(_) | Tok::Word(_)))
        && toks.iter().all(|t| {
            matches!(
                t,
                Tok::Ident(_) | Tok::Word(_) | Tok::Sub(_) | Tok::LParen | Tok::RParen | Tok::Comma
            )
        })
}

/// Where the number starting at byte `start` ends, read as the lexer reads a number
/// (thousands groups, decimals, `e5` exponents).
pub(crate) fn number_end(s: &str, start: usize) -> usize {
    lex_number(s, start, true).1
}

/// Byte length of the character starting at `i` (1 if `i` is not a boundary).
fn char_len(s: &str, i: usize) -> usize {
    s.get(i..)
        .and_then(|t| t.chars().next())
        .map(char::len_utf8)
        .unwrap_or(1)
}

fn unicode_tok(ch: char) -> Option<Tok> {
    Some(match ch {
        '−' | '–' => Tok::Minus,
        '×' | '·' | '⋅' => Tok::Star,
        '÷' => Tok::Slash,
        '±' => Tok::Pm,
        '∓' => Tok::Mp,
        '≤' | '⩽' => Tok::Le,
        '≥' | '⩾' => Tok::Ge,
        '≠' => Tok::Ne,
        '≈' => Tok::Approx,
        '∞' => Tok::Infty,
        'π' => Tok::Pi,
        '°' => Tok::Degree,
        '√' => Tok::Sqrt,
        '∪' => Tok::Cup,
        '∈' => Tok::In,
        '∅' => Tok::Emptyset,
        c if c.is_alphabetic() => Tok::Ident(c.to_string().into()),
        c if c.is_whitespace() => return None,
        // Other symbols (quotes, ellipses, dashes) carry no mathematics.
        _ => return None,
    })
}

/// Number starting at `i`. Returns the literal and the index after it.
fn lex_number(s: &str, start: usize, plain_groups: bool) -> (NumLit, usize) {
    let b = s.as_bytes();
    let mut digits = String::new();
    let mut i = start;
    let mut int_len = 0usize;
    while i < b.len() && b[i].is_ascii_digit() {
        digits.push(b[i] as char);
        i += 1;
        int_len += 1;
    }
    // Thousands groups: `7,425,000`, `1{,}000`, `32,\!000`, `1 000` (first group 1-3 digits,
    // not starting with 0, every later group exactly three digits).
    if (1..=3).contains(&int_len) && b[start] != b'0' {
        loop {
            let (sep_len, explicit) = group_sep(&b[i..]);
            if sep_len == 0 || !(explicit || plain_groups) {
                break;
            }
            let g = i + sep_len;
            let three = g + 3 <= b.len() && b[g..g + 3].iter().all(u8::is_ascii_digit);
            let ends = three && (g + 3 == b.len() || !b[g + 3].is_ascii_digit());
            if !(three && ends) {
                break;
            }
            // A bare space only groups when another group or the end follows (`1 000`), not
            // in `2 345` inside longer text... which we cannot tell apart; accept it.
            digits.push_str(&s[g..g + 3]);
            i = g + 3;
        }
    }
    let mut frac_digits = 0u32;
    let mut has_point = false;
    if i < b.len() && b[i] == b'.' && i + 1 < b.len() && b[i + 1].is_ascii_digit() {
        has_point = true;
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            digits.push(b[i] as char);
            frac_digits += 1;
            i += 1;
        }
    } else if i < b.len() && b[i] == b'.' && start < i && (i + 1 == b.len() || b[i + 1] != b'.') {
        // `27.` : a trailing point; treat as the integer (sentence end or `27.` style).
        i += 1;
    }
    let mut exp10 = 0i64;
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        let neg = j < b.len() && b[j] == b'-';
        if j < b.len() && (b[j] == b'-' || b[j] == b'+') {
            j += 1;
        }
        let ds = j;
        while j < b.len() && b[j].is_ascii_digit() && j - ds < 7 {
            j += 1;
        }
        if j > ds && (j == b.len() || !b[j].is_ascii_alphanumeric()) {
            let v: i64 = s[ds..j].parse().unwrap_or(0);
            exp10 = if neg { -v } else { v };
            i = j;
        }
    }
    if digits.is_empty() {
        digits.push('0');
    }
    (
        NumLit {
            digits,
            frac_digits,
            exp10,
            has_point,
        },
        i,
    )
}

/// Length of a thousands separator at the start of `b` (0 if none), and whether it is TeX's
/// explicit kind, which never separates list items. Spaces after an explicit one are layout
/// (`45,\\! 600`, `7,\\! 250,\\! 000`): still one number.
fn group_sep(b: &[u8]) -> (usize, bool) {
    for (sep, explicit) in [
        (&b",\\!"[..], true),
        (b"{,}", true),
        (b"\\,", true),
        (b"\\ ", true),
        (b",", false),
        (b" ", false),
    ] {
        if b.starts_with(sep) {
            let pad = if explicit {
                b[sep.len()..].iter().take_while(|&&c| c == b' ').count()
            } else {
                0
            };
            return (sep.len() + pad, explicit);
        }
    }
    (0, false)
}

/// A TeX argument: `{...}` (balanced) or a single character / command. Returns content and end.
pub(crate) fn raw_arg(s: &str, mut i: usize) -> (&str, usize) {
    let b = s.as_bytes();
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    if i >= b.len() {
        return ("", i);
    }
    if b[i] == b'{' {
        if let Some((c, end)) = braced(s, i) {
            return (c, end);
        }
        return (&s[i + 1..], b.len());
    }
    if b[i] == b'\\' {
        let mut j = i + 1;
        while j < b.len() && b[j].is_ascii_alphabetic() {
            j += 1;
        }
        if j == i + 1 && j < b.len() {
            j += char_len(s, j);
        }
        return (&s[i..j], j);
    }
    let ch = s[i..].chars().next().map(char::len_utf8).unwrap_or(1);
    (&s[i..i + ch], i + ch)
}

/// The command at `i` (a backslash): its token, if it has one. Returns the index after the
/// command and whatever argument it consumed.
fn lex_command(s: &str, i: usize, out: &mut Vec<Tok>, depth: &mut i32) -> Result<usize, LexError> {
    let b = s.as_bytes();
    let mut j = i + 1;
    if j >= b.len() {
        return Ok(j);
    }
    if !b[j].is_ascii_alphabetic() {
        if let Some(t) = one_char_command(b[j], depth) {
            out.push(t);
        }
        return Ok(j + char_len(s, j));
    }
    while j < b.len() && b[j].is_ascii_alphabetic() {
        j += 1;
    }
    let name = &s[i + 1..j];
    if let Some(t) = relation_command(name).or_else(|| symbol_command(name)) {
        out.push(t);
        return Ok(j);
    }
    match name {
        "text" | "textbf" | "textit" | "textrm" | "mbox" | "textnormal" | "texttt" => {
            let (c, end) = raw_arg(s, j);
            push_text(c, out);
            Ok(end)
        }
        "mathrm" | "operatorname" | "rm" | "mathsf" | "mathtt" => upright(s, j, out),
        "begin" => {
            let (env, mut end) = raw_arg(s, j);
            if env == "array" || env == "tabular" {
                // Column spec `{cc}`.
                end = raw_arg(s, end).1;
            }
            out.push(Tok::Begin(env.trim().into()));
            Ok(end)
        }
        "end" => {
            let (_, end) = raw_arg(s, j);
            out.push(Tok::End);
            Ok(end)
        }
        "left" | "right" | "bigl" | "bigr" | "Bigl" | "Bigr" | "biggl" | "biggr" | "Biggl"
        | "Biggr" | "big" | "Big" | "bigg" | "Bigg" | "middle" => Ok(past_sizing(b, j)),
        "dot" | "ddot" | "hat" | "bar" | "vec" | "tilde" | "overline" | "widehat" => {
            Ok(accented(name, s, j, out))
        }
        "mathbb" => blackboard(s, j, out),
        "displaystyle" | "textstyle" | "scriptstyle" | "limits" | "nolimits" | "mathbf"
        | "boldsymbol" | "bm" | "mathit" | "mathcal" | "mathscr" | "mathfrak" | "quad"
        | "qquad" | "hline" | "not" | "dots" | "ldots" | "cdots" | "vdots" | "ddots" | "dotsc"
        | "dotsb" | "enspace" | "thinspace" | "negthinspace" | "hspace" | "underline"
        | "overrightarrow" | "therefore" | "boxed" | "fbox" | "color" | "textcolor" | "phantom" => {
            // Layout, style or decoration: gone, with the argument of those that take one
            // that is no mathematics (`\hspace{1em}`, `\color{red}`).
            if matches!(name, "hspace" | "color" | "phantom" | "textcolor") {
                return Ok(raw_arg(s, j).1);
            }
            Ok(j)
        }
        "prime" => Ok(j),
        _ => {
            out.push(match Fun::from_name(name) {
                Some(f) => Tok::Func(f),
                None => Tok::Ident(name.into()),
            });
            Ok(j)
        }
    }
}

/// The token of a one-character command (`\\`, `\{`, `\%`, `\|`...); `None` for spacing and
/// decoration (`\,` `\;` `\:` `\!` `\ ` `\$` `\#` and the like).
fn one_char_command(c: u8, depth: &mut i32) -> Option<Tok> {
    match c {
        b'\\' => Some(Tok::RowSep),
        b'{' => {
            *depth += 1;
            Some(Tok::LSet)
        }
        b'}' => {
            *depth -= 1;
            Some(Tok::RSet)
        }
        b'%' => Some(Tok::Percent),
        b'|' => Some(Tok::Bar),
        b'(' => Some(Tok::LParen),
        b')' => Some(Tok::RParen),
        b'[' => Some(Tok::LBrack),
        b']' => Some(Tok::RBrack),
        _ => None,
    }
}

/// The token a command without an argument stands for: `\frac`, `\pi`, `\cdot`, `\lfloor`...
fn symbol_command(name: &str) -> Option<Tok> {
    Some(match name {
        "frac" | "dfrac" | "tfrac" | "cfrac" => Tok::Frac,
        "sqrt" => Tok::Sqrt,
        "binom" | "dbinom" | "tbinom" => Tok::Binom,
        "pi" | "uppi" => Tok::Pi,
        "infty" | "infin" | "infinity" => Tok::Infty,
        "cdot" | "times" | "ast" | "cdotp" => Tok::Star,
        "div" => Tok::Slash,
        "pm" => Tok::Pm,
        "mp" => Tok::Mp,
        "cup" => Tok::Cup,
        "circ" | "degree" => Tok::Degree,
        "log" => Tok::Log,
        "emptyset" | "varnothing" => Tok::Emptyset,
        "lfloor" => Tok::LFloor,
        "rfloor" => Tok::RFloor,
        "lceil" => Tok::LCeil,
        "rceil" => Tok::RCeil,
        "lvert" | "rvert" | "vert" | "mid" => Tok::Bar,
        "lbrace" => Tok::LSet,
        "rbrace" => Tok::RSet,
        "langle" => Tok::LParen,
        "rangle" => Tok::RParen,
        "colon" => Tok::Colon,
        "lor" | "vee" => Tok::Or,
        "land" | "wedge" => Tok::And,
        _ => return None,
    })
}

/// `\mathrm{...}` and its kin at `j` (after the name): a unit spaced away from its number, a
/// function or other word, or mathematics set upright. Returns the index after the argument.
fn upright(s: &str, j: usize, out: &mut Vec<Tok>) -> Result<usize, LexError> {
    let (c, end) = raw_arg(s, j);
    // `\mathrm{~m}`, `\mathrm{ kg}`: a unit, spaced away from its number.
    if c.starts_with(['~', ' ']) || c.starts_with("\\,") || c.contains('/') {
        push_text(c.trim_start_matches(['~', ' ', '\\', ',']), out);
        return Ok(end);
    }
    let c = c.trim();
    if c.len() > 1 && c.bytes().all(|x| x.is_ascii_alphabetic()) {
        match Fun::from_name(c) {
            Some(f) => out.push(Tok::Func(f)),
            None if c == "log" => out.push(Tok::Log),
            None => push_text(c, out),
        }
    } else {
        lex(c, out)?;
    }
    Ok(end)
}

/// After a sizing command (`\left`, `\big`...) at `j`: the delimiter that follows is what
/// counts, and `\left.` is no delimiter, so its period goes too.
fn past_sizing(b: &[u8], j: usize) -> usize {
    let mut k = j;
    while k < b.len() && b[k] == b' ' {
        k += 1;
    }
    if k < b.len() && b[k] == b'.' {
        return k + 1;
    }
    j
}

/// An accent (`\dot`, `\hat`, `\overline`...) whose argument starts at `j`: `\dot{x}` is its
/// own variable, not x. Anything but letters under it leaves the argument to be read.
fn accented(name: &str, s: &str, j: usize, out: &mut Vec<Tok>) -> usize {
    let (c, end) = raw_arg(s, j);
    let c = c.trim().trim_start_matches('\\');
    if !c.is_empty() && c.bytes().all(|x| x.is_ascii_alphabetic()) {
        out.push(Tok::Ident(format!("{name}{c}").into()));
        return end;
    }
    j
}

/// `\mathbb{...}` at `j`: `\mathbb{R}` is the real line; other letters are read as written.
fn blackboard(s: &str, j: usize, out: &mut Vec<Tok>) -> Result<usize, LexError> {
    let (c, end) = raw_arg(s, j);
    if c.trim() == "R" {
        // The real line.
        out.extend([
            Tok::LParen,
            Tok::Minus,
            Tok::Infty,
            Tok::Comma,
            Tok::Infty,
            Tok::RParen,
        ]);
    } else {
        lex(c, out)?;
    }
    Ok(end)
}

/// The relation a command names: `\le`, `\neq`, `\approx`, `\in`...
fn relation_command(name: &str) -> Option<Tok> {
    Some(match name {
        "le" | "leq" | "leqslant" | "leqq" => Tok::Le,
        "ge" | "geq" | "geqslant" | "geqq" => Tok::Ge,
        "lt" => Tok::Lt,
        "gt" => Tok::Gt,
        "ne" | "neq" => Tok::Ne,
        "approx" | "simeq" => Tok::Approx,
        "equiv" | "doteq" => Tok::Eq,
        "in" => Tok::In,
        _ => return None,
    })
}

fn push_text(c: &str, out: &mut Vec<Tok>) {
    let t = c.trim();
    match t {
        "" | "," => {
            if t == "," {
                out.push(Tok::Comma);
            }
        }
        "or" | "OR" | "and/or" => out.push(Tok::Or),
        "and" | "AND" => out.push(Tok::And),
        _ => out.push(Tok::Text(t.into())),
    }
}
