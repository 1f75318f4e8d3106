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
            excerpt: source[line_start..line_end]
                .trim_end_matches('\r')
                .to_owned(),
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
}

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
    fn span_past_the_end_is_clamped() {
        let e = SourceError::at("f", "x", 50..60, "m");
        assert_eq!((e.line, e.column), (1, 2));
    }
}
