//! What the terminal a command prints to can show: how wide it is, whether it can
//! draw `✓ ✗ →` (a UTF-8 locale) or needs ASCII, and whether colour is welcome. Every
//! renderer takes a [`Term`] instead of asking the process, so tests render at any
//! width and both command paths (standalone, daemon) print the same for the same
//! terminal.
//!
//! Rules: the width is `COLUMNS` when set, else the terminal's own when the stream is
//! one, else 80 (never below 40). Symbols are Unicode only when `LC_ALL`, `LC_CTYPE`
//! or `LANG` (the first one set) names UTF-8. Colour only on a terminal, never with
//! `NO_COLOR` set (<https://no-color.org>) or `TERM=dumb`.

use std::io::IsTerminal as _;

/// The width when nothing says otherwise.
pub const DEFAULT_WIDTH: usize = 80;
/// Narrower than this and tables stop making sense; wrap as if this wide.
pub const MIN_WIDTH: usize = 40;

/// One output stream's abilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Term {
    pub width: usize,
    pub unicode: bool,
    pub color: bool,
}

/// The marks a person scans for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Ok,
    Fail,
    Warn,
    Skip,
    Arrow,
    InDoubt,
}

/// Colours, used sparingly: status only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    Green,
    Red,
    Yellow,
    Bold,
    Dim,
}

impl Term {
    /// 80 columns, ASCII, no colour: what a pipe gets when the locale says nothing.
    pub const PLAIN: Term = Term {
        width: DEFAULT_WIDTH,
        unicode: false,
        color: false,
    };

    /// For stdout, from the process environment.
    pub fn stdout() -> Term {
        let out = console::Term::stdout();
        let tty = std::io::stdout().is_terminal();
        let size = tty
            .then(|| out.size_checked().map(|(_, w)| usize::from(w)))
            .flatten();
        Term::detect(&crate::config::process_env, tty, size)
    }

    /// For stderr (prompts, the dry run shown before asking).
    pub fn stderr() -> Term {
        let err = console::Term::stderr();
        let tty = std::io::stderr().is_terminal();
        let size = tty
            .then(|| err.size_checked().map(|(_, w)| usize::from(w)))
            .flatten();
        Term::detect(&crate::config::process_env, tty, size)
    }

    /// The rules above, from an environment, whether the stream is a terminal and
    /// the terminal's own width.
    pub fn detect(env: crate::config::Env, tty: bool, size: Option<usize>) -> Term {
        let width = env("COLUMNS")
            .and_then(|c| c.trim().parse::<usize>().ok())
            .filter(|w| *w > 0)
            .or(size)
            .unwrap_or(DEFAULT_WIDTH)
            .max(MIN_WIDTH);
        let locale = ["LC_ALL", "LC_CTYPE", "LANG"]
            .iter()
            .find_map(|name| env(name))
            .unwrap_or_default()
            .to_ascii_lowercase();
        let unicode = locale.contains("utf-8") || locale.contains("utf8");
        let color = tty && env("NO_COLOR").is_none() && env("TERM").as_deref() != Some("dumb");
        Term {
            width,
            unicode,
            color,
        }
    }

    /// This terminal at another width (tests, nested blocks).
    pub fn with_width(self, width: usize) -> Term {
        Term {
            width: width.max(MIN_WIDTH),
            ..self
        }
    }

    /// A mark, in Unicode or ASCII.
    pub fn mark(&self, mark: Mark) -> &'static str {
        match (mark, self.unicode) {
            (Mark::Ok, true) => "✓",
            (Mark::Ok, false) => "ok",
            (Mark::Fail, true) => "✗",
            (Mark::Fail, false) => "x",
            (Mark::Warn, _) => "!",
            (Mark::Skip, _) => "-",
            (Mark::Arrow, true) => "→",
            (Mark::Arrow, false) => "->",
            (Mark::InDoubt, _) => "?",
        }
    }

    /// `text` in `color` when colour is on.
    pub fn paint(&self, text: &str, color: Color) -> String {
        if !self.color {
            return text.to_owned();
        }
        let code = match color {
            Color::Green => "32",
            Color::Red => "31",
            Color::Yellow => "33",
            Color::Bold => "1",
            Color::Dim => "2",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    /// A mark, coloured for what it means.
    pub fn status(&self, mark: Mark) -> String {
        let color = match mark {
            Mark::Ok => Color::Green,
            Mark::Fail => Color::Red,
            Mark::Warn | Mark::InDoubt => Color::Yellow,
            Mark::Skip | Mark::Arrow => Color::Dim,
        };
        self.paint(self.mark(mark), color)
    }

    /// `text` wrapped at the width: the first line after `first`, the others after
    /// `rest` (a hanging indent). Words longer than a line (an ARM id) stay whole.
    pub fn wrap(&self, first: &str, rest: &str, text: &str) -> String {
        wrap(self.width, first, rest, text)
    }
}

/// Characters as a terminal counts them (every mark keyflip prints is one cell).
pub fn cells(text: &str) -> usize {
    let mut n = 0;
    let mut escape = false;
    for c in text.chars() {
        match (escape, c) {
            (false, '\x1b') => escape = true,
            (true, 'm') => escape = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

/// `text` padded with spaces to `width` cells.
pub fn pad(text: &str, width: usize) -> String {
    let n = cells(text);
    if n >= width {
        text.to_owned()
    } else {
        format!("{text}{}", " ".repeat(width - n))
    }
}

/// `text` cut to `width` cells, ending in `…` (or `~` in ASCII) when cut.
pub fn truncate(text: &str, width: usize, unicode: bool) -> String {
    if cells(text) <= width {
        return text.to_owned();
    }
    let keep: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{keep}{}", if unicode { "…" } else { "~" })
}

/// See [`Term::wrap`]. Each line of `text` is wrapped on its own; runs of spaces
/// between words are kept (aligned text stays aligned) except where a line breaks.
pub fn wrap(width: usize, first: &str, rest: &str, text: &str) -> String {
    let mut out = String::new();
    let mut indent = first;
    for paragraph in text.split('\n') {
        let mut line = indent.to_owned();
        let mut has_word = false;
        let mut left = paragraph.trim_start_matches(' ');
        let mut spaces = "";
        while !left.is_empty() {
            let end = left.find(' ').unwrap_or(left.len());
            let word = &left[..end];
            let after = &left[end..];
            if has_word && cells(&line) + spaces.len() + cells(word) > width {
                out.push_str(line.trim_end());
                out.push('\n');
                line = rest.to_owned();
                has_word = false;
            }
            if has_word {
                line.push_str(spaces);
            }
            line.push_str(word);
            has_word = true;
            let gap = after.len() - after.trim_start_matches(' ').len();
            spaces = &after[..gap];
            left = &after[gap..];
        }
        out.push_str(line.trim_end());
        out.push('\n');
        indent = rest;
    }
    out
}

/// One column of a [`table`].
#[derive(Clone, Debug, Default)]
pub struct Column {
    pub header: String,
    pub cells: Vec<String>,
    /// Shorter cells to switch to when the table is too wide (times without the year).
    pub compact: Option<Vec<String>>,
    /// May be cut (with `…`) down to this many cells when the table is too wide.
    pub min: Option<usize>,
    /// Dropped when the table is still too wide: lowest rank first.
    pub drop_rank: Option<u8>,
}

impl Column {
    pub fn new(header: &str, cells: Vec<String>) -> Column {
        Column {
            header: header.to_owned(),
            cells,
            ..Column::default()
        }
    }
}

/// Columns side by side, two spaces apart, fitted to `width`: compact cells first,
/// then cutting the columns that may be cut, then dropping columns by rank. The last
/// column is never padded (it may run past the width rather than lose its words).
pub fn table(mut columns: Vec<Column>, width: usize, unicode: bool) -> String {
    let natural = |c: &Column| {
        c.cells
            .iter()
            .map(|s| cells(s))
            .chain([cells(&c.header)])
            .max()
            .unwrap_or(0)
    };
    let total = |cols: &[Column], widths: &[usize]| {
        widths.iter().sum::<usize>() + 2 * cols.len().saturating_sub(1)
    };
    let mut widths: Vec<usize> = columns.iter().map(natural).collect();
    if total(&columns, &widths) > width {
        for c in &mut columns {
            if let Some(compact) = c.compact.take() {
                c.cells = compact;
            }
        }
        widths = columns.iter().map(natural).collect();
    }
    loop {
        if total(&columns, &widths) <= width {
            break;
        }
        let cuttable = |i: usize| {
            columns[i]
                .min
                .is_some_and(|m| widths[i] > m.max(cells(&columns[i].header)))
        };
        // First cut what may be dropped anyway, then drop it, and only then cut the
        // columns that always stay.
        let cut = (0..columns.len())
            .filter(|&i| cuttable(i) && columns[i].drop_rank.is_some())
            .min_by_key(|&i| columns[i].drop_rank);
        if let Some(i) = cut {
            widths[i] -= 1;
            continue;
        }
        let drop = (0..columns.len())
            .filter(|&i| columns[i].drop_rank.is_some())
            .min_by_key(|&i| columns[i].drop_rank);
        if let Some(i) = drop {
            columns.remove(i);
            widths.remove(i);
            continue;
        }
        match (0..columns.len())
            .filter(|&i| cuttable(i))
            .max_by_key(|&i| widths[i])
        {
            Some(i) => widths[i] -= 1,
            None => break,
        }
    }
    let rows = columns.first().map_or(0, |c| c.cells.len());
    let mut out = String::new();
    let line = |out: &mut String, cell: &dyn Fn(&Column) -> String| {
        let mut text = String::new();
        for (i, (c, w)) in columns.iter().zip(&widths).enumerate() {
            let value = truncate(&cell(c), *w, unicode);
            if i + 1 == columns.len() {
                text.push_str(&value);
            } else {
                text.push_str(&pad(&value, *w));
                text.push_str("  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut out, &|c| c.header.clone());
    for r in 0..rows {
        line(&mut out, &|c| c.cells.get(r).cloned().unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn width_comes_from_columns_then_the_terminal_then_80() {
        let t = Term::detect(&env(&[("COLUMNS", "60")]), true, Some(120));
        assert_eq!(t.width, 60);
        let t = Term::detect(&env(&[]), true, Some(120));
        assert_eq!(t.width, 120);
        let t = Term::detect(&env(&[("COLUMNS", "wide")]), false, None);
        assert_eq!(t.width, 80);
        let t = Term::detect(&env(&[("COLUMNS", "10")]), false, None);
        assert_eq!(t.width, MIN_WIDTH);
    }

    #[test]
    fn symbols_need_a_utf8_locale_and_the_first_variable_set_decides() {
        let t = Term::detect(&env(&[("LANG", "en_US.UTF-8")]), false, None);
        assert_eq!(t.mark(Mark::Ok), "✓");
        let t = Term::detect(&env(&[("LC_ALL", "C"), ("LANG", "C.UTF-8")]), false, None);
        assert_eq!((t.mark(Mark::Ok), t.mark(Mark::Arrow)), ("ok", "->"));
        let t = Term::detect(&env(&[]), false, None);
        assert!(!t.unicode, "no locale is the C locale: ASCII");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(Term::detect(&env(&[]), true, None).color);
        assert!(!Term::detect(&env(&[]), false, None).color);
        assert!(!Term::detect(&env(&[("NO_COLOR", "1")]), true, None).color);
        assert!(!Term::detect(&env(&[("TERM", "dumb")]), true, None).color);
        let plain = Term::PLAIN.paint("x", Color::Red);
        assert_eq!(plain, "x");
        let coloured = Term {
            color: true,
            ..Term::PLAIN
        }
        .paint("x", Color::Red);
        assert_eq!(coloured, "\x1b[31mx\x1b[0m");
        assert_eq!(cells(&coloured), 1);
    }

    #[test]
    fn tables_go_compact_then_cut_then_drop_columns_to_fit() {
        let cols = || {
            vec![
                Column {
                    min: Some(6),
                    ..Column::new("PLAN", vec!["lakehouse-prod".into(), "demo".into()])
                },
                Column {
                    drop_rank: Some(1),
                    min: Some(10),
                    ..Column::new("ACCOUNT", vec!["stlakehouseprod01".into(), "st1".into()])
                },
                Column {
                    compact: Some(vec!["03-01 00:00:00".into(), "-".into()]),
                    ..Column::new("NEXT", vec!["2026-03-01 00:00:00".into(), "-".into()])
                },
                Column::new("STATE", vec!["NEEDS ATTENTION".into(), "ok".into()]),
            ]
        };
        let wide = table(cols(), 80, true);
        assert!(
            wide.contains(
                "lakehouse-prod  stlakehouseprod01  2026-03-01 00:00:00  NEEDS ATTENTION"
            ),
            "{wide}"
        );
        let narrow = table(cols(), 60, true);
        assert!(
            narrow.contains("03-01 00:00:00") && narrow.contains("ACCOUNT"),
            "{narrow}"
        );
        assert!(narrow.lines().all(|l| cells(l) <= 60), "{narrow}");
        let tight = table(cols(), 40, false);
        assert!(!tight.contains("ACCOUNT"), "{tight}");
        assert!(tight.contains("lakeho~ "), "{tight}");
        assert!(tight.lines().all(|l| cells(l) <= 40), "{tight}");
    }

    #[test]
    fn wrapping_keeps_a_hanging_indent_and_long_words_whole() {
        let text = "rolled back after step 4 failed: /subscriptions/00000000-0000-0000-0000-000000000000/x and more words here";
        let out = wrap(40, "  ", "      ", text);
        for line in out.lines() {
            assert!(
                cells(line) <= 40 || !line.trim().contains(' '),
                "{line:?} in\n{out}"
            );
        }
        assert!(out.starts_with("  rolled back"), "{out}");
        assert!(
            out.lines().skip(1).all(|l| l.starts_with("      ")),
            "{out}"
        );
        assert_eq!(truncate("abcdef", 4, true), "abc…");
        assert_eq!(wrap(80, "", "", "ok  demo  account"), "ok  demo  account\n");
        assert_eq!(truncate("abc", 4, false), "abc");
    }
}
