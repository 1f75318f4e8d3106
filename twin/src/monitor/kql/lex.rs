//! Tokens of the KQL subset: identifiers, string/number/timespan literals, the raw
//! text of `datetime(...)`, and operators. Every token keeps its line (1-based) and
//! position (0-based, in characters), which Log Analytics reports in `SYN0002`.

use super::QueryError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    /// `!has`, `!contains`, `!in`, `!between`, ...: the word after `!`.
    NotWord(String),
    Str(String),
    Long(i64),
    Real(f64),
    /// A timespan literal such as `1h`, `30m`, `1.5d`, in 100 ns ticks.
    Timespan(i64),
    /// The raw argument of `datetime(...)`.
    DateTime(String),
    Sym(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: usize,
    pub pos: usize,
    /// The text of the token as written, for error messages.
    pub text: String,
}

/// 100 ns ticks per unit, by the unit names Kusto accepts.
pub(crate) fn unit_ticks(unit: &str) -> Option<i64> {
    Some(match unit {
        "d" | "day" | "days" => 864_000_000_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 36_000_000_000,
        "m" | "min" | "minute" | "minutes" => 600_000_000,
        "s" | "sec" | "second" | "seconds" => 10_000_000,
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 10_000,
        "microsecond" | "microseconds" => 10,
        "tick" | "ticks" => 1,
        _ => return None,
    })
}

const SYMBOLS: &[&str] = &[
    "==", "!=", "<=", ">=", "=~", "!~", "..", "|", ",", "(", ")", "[", "]", "=", "<", ">", "+",
    "-", "*", "/", ";", "~", ".", "%",
];

pub(crate) fn lex(src: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut line_start) = (0usize, 1usize, 0usize);
    while i < chars.len() {
        let c = chars[i];
        let pos = i - line_start;
        if c == '\n' {
            i += 1;
            line += 1;
            line_start = i;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        let push = |out: &mut Vec<Token>, tok: Tok, end: usize| {
            out.push(Token {
                tok,
                line,
                pos,
                text: chars[start..end].iter().collect(),
            })
        };
        // Strings: "..." and '...' with backslash escapes; @"..." verbatim; an `h`
        // prefix (an obfuscated literal) changes nothing here.
        let (verbatim, quote_at) = match c {
            '@' if matches!(chars.get(i + 1), Some('"' | '\'')) => (true, i + 1),
            'h' | 'H' if matches!(chars.get(i + 1), Some('"' | '\'')) => (false, i + 1),
            '"' | '\'' => (false, i),
            _ => (false, usize::MAX),
        };
        if quote_at != usize::MAX {
            let quote = chars[quote_at];
            let mut j = quote_at + 1;
            let mut s = String::new();
            loop {
                match chars.get(j) {
                    None | Some('\n') => {
                        return Err(QueryError::syntax(
                            line,
                            pos,
                            &chars[start..j.min(chars.len())].iter().collect::<String>(),
                        ));
                    }
                    Some(&q) if q == quote => {
                        j += 1;
                        break;
                    }
                    Some('\\') if !verbatim => {
                        let e = chars.get(j + 1).copied();
                        s.push(match e {
                            Some('n') => '\n',
                            Some('t') => '\t',
                            Some('r') => '\r',
                            Some('\\') => '\\',
                            Some('"') => '"',
                            Some('\'') => '\'',
                            _ => return Err(QueryError::syntax(line, pos + (j - start), "\\")),
                        });
                        j += 2;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        j += 1;
                    }
                }
            }
            push(&mut out, Tok::Str(s), j);
            i = j;
            continue;
        }
        if c.is_ascii_digit() {
            let mut j = i;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            let mut real = false;
            // `1.5` is a number; `1..5` is a range.
            if chars.get(j) == Some(&'.') && chars.get(j + 1).is_some_and(|d| d.is_ascii_digit()) {
                real = true;
                j += 1;
                while j < chars.len() && chars[j].is_ascii_digit() {
                    j += 1;
                }
            }
            let number: String = chars[i..j].iter().collect();
            let mut k = j;
            while k < chars.len() && chars[k].is_ascii_alphabetic() {
                k += 1;
            }
            let unit: String = chars[j..k].iter().collect();
            if !unit.is_empty() {
                let ticks = unit_ticks(&unit)
                    .ok_or_else(|| QueryError::syntax(line, pos, &format!("{number}{unit}")))?;
                let value: f64 = number
                    .parse()
                    .map_err(|_| QueryError::syntax(line, pos, &number))?;
                let total = value * ticks as f64;
                if !total.is_finite() || total.abs() > i64::MAX as f64 {
                    return Err(QueryError::syntax(line, pos, &format!("{number}{unit}")));
                }
                push(&mut out, Tok::Timespan(total.round() as i64), k);
                i = k;
                continue;
            }
            let tok = if real {
                Tok::Real(
                    number
                        .parse()
                        .map_err(|_| QueryError::syntax(line, pos, &number))?,
                )
            } else {
                Tok::Long(
                    number
                        .parse()
                        .map_err(|_| QueryError::syntax(line, pos, &number))?,
                )
            };
            push(&mut out, tok, j);
            i = j;
            continue;
        }
        if c.is_alphabetic() || c == '_' || c == '$' {
            let mut j = i;
            while j < chars.len()
                && (chars[j].is_alphanumeric() || chars[j] == '_' || chars[j] == '-')
            {
                // A hyphen belongs to a word only inside the operator names that
                // have one (`project-away`, `mv-expand`), never before a space/number.
                if chars[j] == '-' && !chars.get(j + 1).is_some_and(|n| n.is_alphabetic()) {
                    break;
                }
                j += 1;
            }
            let word: String = chars[i..j].iter().collect();
            // `a-b` where `a` is a column would be subtraction; only the known
            // hyphenated operators keep their hyphen.
            let word = if word.contains('-') && !HYPHENATED.contains(&word.as_str()) {
                let first = word.split('-').next().unwrap_or_default().to_string();
                j = i + first.chars().count();
                first
            } else {
                word
            };
            if word == "datetime" && chars.get(j) == Some(&'(') {
                let mut k = j + 1;
                while k < chars.len() && chars[k] != ')' && chars[k] != '\n' {
                    k += 1;
                }
                if chars.get(k) != Some(&')') {
                    return Err(QueryError::syntax(line, pos, &word));
                }
                let raw: String = chars[j + 1..k].iter().collect();
                push(&mut out, Tok::DateTime(raw.trim().to_string()), k + 1);
                i = k + 1;
                continue;
            }
            push(&mut out, Tok::Ident(word), j);
            i = j;
            continue;
        }
        if c == '!' && chars.get(i + 1).is_some_and(|n| n.is_alphabetic()) {
            let mut j = i + 1;
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            let word: String = chars[i + 1..j].iter().collect();
            push(&mut out, Tok::NotWord(word), j);
            i = j;
            continue;
        }
        let rest: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let sym = SYMBOLS
            .iter()
            .find(|s| rest.starts_with(**s))
            .copied()
            .ok_or_else(|| QueryError::syntax(line, pos, &c.to_string()))?;
        let end = i + sym.chars().count();
        push(&mut out, Tok::Sym(sym), end);
        i = end;
    }
    Ok(out)
}

/// KQL operators whose names contain a hyphen (all outside the subset, but they
/// must lex as one word to be recognised and refused as such).
const HYPHENATED: &[&str] = &[
    "project-away",
    "project-keep",
    "project-rename",
    "project-reorder",
    "mv-expand",
    "mv-apply",
    "make-series",
    "top-nested",
    "top-hitters",
    "parse-where",
    "parse-kv",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s).expect("lexes").into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn literals_words_and_symbols() {
        assert_eq!(
            toks(r#"T | where A == "x\"y" and B !has 'z' // comment"#),
            vec![
                Tok::Ident("T".into()),
                Tok::Sym("|"),
                Tok::Ident("where".into()),
                Tok::Ident("A".into()),
                Tok::Sym("=="),
                Tok::Str("x\"y".into()),
                Tok::Ident("and".into()),
                Tok::Ident("B".into()),
                Tok::NotWord("has".into()),
                Tok::Str("z".into()),
            ]
        );
        assert_eq!(
            toks("ago(1.5h) 30m 7d 100ms 2 2.5 @'a\\b'"),
            vec![
                Tok::Ident("ago".into()),
                Tok::Sym("("),
                Tok::Timespan(54_000_000_000),
                Tok::Sym(")"),
                Tok::Timespan(18_000_000_000),
                Tok::Timespan(6_048_000_000_000),
                Tok::Timespan(1_000_000),
                Tok::Long(2),
                Tok::Real(2.5),
                Tok::Str("a\\b".into()),
            ]
        );
        assert_eq!(
            toks("datetime(2026-01-01T00:00:00Z)..datetime( 2026-01-02 )"),
            vec![
                Tok::DateTime("2026-01-01T00:00:00Z".into()),
                Tok::Sym(".."),
                Tok::DateTime("2026-01-02".into()),
            ]
        );
        assert_eq!(
            toks("project-away x mv-expand a-b"),
            vec![
                Tok::Ident("project-away".into()),
                Tok::Ident("x".into()),
                Tok::Ident("mv-expand".into()),
                Tok::Ident("a".into()),
                Tok::Sym("-"),
                Tok::Ident("b".into()),
            ]
        );
    }

    #[test]
    fn positions_are_line_and_column() {
        let t = lex("T\n| where x").expect("lexes");
        assert_eq!((t[2].line, t[2].pos), (2, 2));
    }

    #[test]
    fn bad_input_is_a_syntax_error_at_its_position() {
        for (q, line, pos) in [
            ("T | where A == \"open", 1, 15),
            ("T\n  | #", 2, 4),
            ("5q", 1, 0),
        ] {
            match lex(q) {
                Err(QueryError::Syntax {
                    line: l, pos: p, ..
                }) => {
                    assert_eq!((l, p), (line, pos), "{q}")
                }
                other => panic!("{q}: {other:?}"),
            }
        }
    }
}
