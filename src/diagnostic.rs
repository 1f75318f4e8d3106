//! Errors in TOML files (plans and configuration), rendered the way compilers do:
//! `file:line:column: message`, the offending line with a caret, and a hint that says
//! what to do. Both the `plan` and the configuration loader produce these.

use std::fmt;
use std::ops::Range;

/// An error at a place in a source file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceError {
    pub file: String,
    /// 1-based line and column (in characters).
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
    /// The source line the error points into, for display.
    pub excerpt: String,
}

impl SourceError {
    /// An error at byte `span` of `source`. A span past the end points at the end.
    pub fn at(file: &str, source: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        let start = span.start.min(source.len());
        let start = (0..=start)
            .rev()
            .find(|&i| source.is_char_boundary(i))
            .unwrap_or(0);
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        SourceError {
            file: file.to_owned(),
            line: source[..start].matches('\n').count() + 1,
            column: source[line_start..start].chars().count() + 1,
            message: message.into(),
            hint: None,
            // Control characters (a terminal escape sequence in a file) are never
            // printed: one replacement character each, so columns stay right.
            excerpt: source[line_start..line_end]
                .trim_end_matches('\r')
                .chars()
                .map(|c| {
                    if c.is_control() && c != '\t' {
                        '\u{FFFD}'
                    } else {
                        c
                    }
                })
                .collect(),
        }
    }

    /// An error from the TOML parser or serde, which carries its own span and message.
    pub fn from_toml(file: &str, source: &str, err: &toml::de::Error) -> Self {
        let span = err.span().unwrap_or(0..0);
        Self::at(file, source, span, err.message().trim_end())
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Hides the value of the excerpt's `key = value` line when `hide(key)` says so
    /// and the value is text (numbers and booleans cannot be secrets and stay), and
    /// a quoted string the message repeats (the caret moves to where the value starts
    /// if it pointed into it). A line that is neither `key = value` nor a `[table]`
    /// header is hidden whole when `hide("")` is true: it may be a pasted secret.
    /// Errors in files that can name secrets (keyflip.toml: a mistyped
    /// `client_secret = "..."`) must not echo them to a terminal or a log.
    pub fn masked(mut self, hide: impl Fn(&str) -> bool) -> Self {
        let line = self.excerpt.clone();
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') || trimmed.starts_with('#') || trimmed.is_empty() {
            return self;
        }
        match line.split_once('=') {
            Some((key, value)) => {
                let name = key.trim().trim_matches(|c| c == '"' || c == '\'');
                if hide(name) && !is_plain_value(value) {
                    let prefix = format!("{} = ", key.trim_end());
                    let value_column = prefix.chars().count() + 1;
                    self.excerpt = format!("{prefix}{HIDDEN}");
                    self.column = self.column.min(value_column);
                    self.message = without_quoted_strings(&self.message);
                }
            }
            None if hide("") => {
                self.excerpt = HIDDEN_LINE.to_owned();
                self.column = 1;
                self.message = without_quoted_strings(&self.message);
            }
            None => {}
        }
        self
    }
}

/// A value made only of numbers and booleans (`50`, `true`, `[1000, -5]`).
fn is_plain_value(value: &str) -> bool {
    let value = value.split('#').next().unwrap_or_default().trim();
    !value.is_empty()
        && value
            .split(|c: char| c == '[' || c == ']' || c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .all(|t| t == "true" || t == "false" || t.replace('_', "").parse::<f64>().is_ok())
}

/// `message` with the value serde quotes in type errors replaced (`invalid type:
/// string "...", expected i64`); keyflip's own quoted words stay.
fn without_quoted_strings(message: &str) -> String {
    const MARK: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(MARK) {
        out.push_str(&rest[..i + MARK.len()]);
        rest = &rest[i + MARK.len()..];
        match rest.find('"') {
            Some(end) => {
                out.push_str("…\"");
                rest = &rest[end + 1..];
            }
            None => {
                out.push('…');
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// What a hidden value or line is shown as.
pub const HIDDEN: &str = "<value hidden>";
const HIDDEN_LINE: &str = "<line hidden>";

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        let gutter = self.line.to_string().len();
        writeln!(f, "{:gutter$} |", "")?;
        writeln!(f, "{} | {}", self.line, self.excerpt)?;
        write!(f, "{:gutter$} | {:>col$}", "", "^", col = self.column)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SourceError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_at_line_and_column() {
        let src = "a = 1\nbee = \"x\"\n";
        let e = SourceError::at("p.toml", src, 6..9, "unknown field `bee`")
            .with_hint("did you mean `be`?");
        assert_eq!((e.line, e.column), (2, 1));
        let shown = e.to_string();
        assert!(
            shown.starts_with("p.toml:2:1: unknown field `bee`"),
            "{shown}"
        );
        assert!(shown.contains("2 | bee = \"x\""), "{shown}");
        assert!(shown.ends_with("hint: did you mean `be`?"), "{shown}");
    }

    #[test]
    fn toml_errors_keep_their_position() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        let src = "a = 1\nb = 2\n";
        let err = toml::from_str::<T>(src).unwrap_err();
        let e = SourceError::from_toml("t.toml", src, &err);
        assert_eq!(e.line, 2);
        assert!(e.message.contains("unknown field"), "{}", e.message);
    }

    #[test]
    fn masked_excerpts_keep_the_key_and_hide_the_value() {
        let src = "[credential]\nclient_secret = \"s3cr3t-Value~42\"\npasted-s3cr3t-Value~42\n";
        let e = SourceError::at("k.toml", src, 13..26, "unknown field `client_secret`")
            .masked(|_| true);
        let shown = e.to_string();
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.contains("2 | client_secret = <value hidden>"),
            "{shown}"
        );
        assert_eq!(e.column, 1);
        let e = SourceError::at("k.toml", src, 30..31, "invalid").masked(|_| true);
        assert_eq!(e.column, "client_secret = ".len() + 1, "{e}");
        let e = SourceError::at("k.toml", src, 50..51, "expected `=`").masked(|_| true);
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        assert!(e.to_string().contains("<line hidden>"), "{e}");
        let e = SourceError::at("k.toml", src, 1..2, "x").masked(|_| true);
        assert_eq!(e.excerpt, "[credential]");
        // Numbers and booleans stay; a message quoting the value does not.
        let e = SourceError::at("k.toml", "n = [1_000, -5]\n", 4..5, "bad").masked(|_| true);
        assert_eq!(e.excerpt, "n = [1_000, -5]");
        let e = SourceError::at(
            "k.toml",
            "n = \"s3cr3t\"\n",
            4..5,
            "invalid type: string \"s3cr3t\", expected i64",
        )
        .masked(|_| true);
        assert_eq!(e.message, "invalid type: string \"…\", expected i64");
        // Control characters in a file never reach the terminal.
        let e = SourceError::at("k.toml", "a = 1\x1b[31m\n", 0..1, "bad");
        assert_eq!(e.excerpt, "a = 1\u{FFFD}[31m");
        // Only the keys asked for.
        let e =
            SourceError::at("p.toml", "grace = \"soon\"\n", 8..14, "bad").masked(|k| k == "url");
        assert_eq!(e.excerpt, "grace = \"soon\"");
    }

    #[test]
    fn span_past_the_end_is_clamped() {
        let e = SourceError::at("f", "x", 50..60, "m");
        assert_eq!((e.line, e.column), (1, 2));
    }
}
