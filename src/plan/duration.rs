//! Human durations such as `90s`, `10m`, `1h30m` and `90d`, shared by plan files and
//! the command line (`--grace 10m`).
//!
//! A duration is one or more `<number><unit>` parts, largest unit first, with units
//! `d` (24 hours), `h`, `m` and `s`; `0` alone means zero. Parsing never panics and
//! every error says what was found and what is expected. [`format`] writes the
//! canonical form back, so `parse(&format(d)) == Ok(d)` for whole seconds.

use std::fmt;
use std::time::Duration;

/// The longest duration accepted: about 100 years. Keeps every sum and every
/// conversion to `chrono::TimeDelta` far from overflow.
pub const MAX: Duration = Duration::from_secs(100 * 365 * 86_400);

/// What is wrong with a duration string. The message names the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("`{input}`: expected a number at `{rest}`")]
    ExpectedNumber { input: String, rest: String },
    #[error("`{input}`: the number {number} has no unit")]
    MissingUnit { input: String, number: u64 },
    #[error("`{input}`: fractions are not supported (write 1h30m, not 1.5h)")]
    Fraction { input: String },
    #[error("`{input}`: unknown unit `{unit}`")]
    UnknownUnit { input: String, unit: String },
    #[error("`{input}`: units must go from largest to smallest, each at most once")]
    UnitOrder { input: String },
    #[error("`{input}` is longer than the maximum of 100 years")]
    TooLong { input: String },
}

impl DurationError {
    /// What to write instead, for diagnostics.
    pub(crate) const HINT: &'static str =
        "write a number followed by a unit (s, m, h, d), largest first: 30s, 10m, 1h30m, 90d";
}

/// Parses `1h30m`-style durations. Whitespace between parts is allowed (`1h 30m`).
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let owned = || input.to_owned();
    let too_long = || DurationError::TooLong { input: owned() };
    let mut rest = text;
    let mut total: u64 = 0;
    // Index into UNITS of the last unit seen; the next must be strictly smaller.
    let mut last_unit: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(DurationError::ExpectedNumber {
                input: owned(),
                rest: rest.to_owned(),
            });
        }
        let number: u64 = rest[..digits].parse().map_err(|_| too_long())?;
        rest = &rest[digits..];
        if rest.starts_with(['.', ',']) {
            return Err(DurationError::Fraction { input: owned() });
        }
        // `90 d` reads as `90d`; it also makes `3 months` an unknown unit, not a bare number.
        rest = rest.trim_start();
        let letters = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        if letters == 0 {
            return Err(DurationError::MissingUnit {
                input: owned(),
                number,
            });
        }
        let unit = &rest[..letters];
        rest = rest[letters..].trim_start();
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(DurationError::UnknownUnit {
                input: owned(),
                unit: unit.to_owned(),
            });
        };
        if last_unit.is_some_and(|last| index <= last) {
            return Err(DurationError::UnitOrder { input: owned() });
        }
        last_unit = Some(index);
        let seconds = number.checked_mul(UNITS[index].1).ok_or_else(too_long)?;
        total = total.checked_add(seconds).ok_or_else(too_long)?;
    }
    let duration = Duration::from_secs(total);
    if duration > MAX {
        return Err(too_long());
    }
    Ok(duration)
}

/// Units, largest first, with their length in seconds.
const UNITS: [(&str, u64); 4] = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];

/// Writes a duration the way plans spell it: `1h30m`, `90d`, `0s`. Sub-second parts
/// are dropped (plans have whole seconds).
pub fn format(duration: Duration) -> String {
    Display(duration).to_string()
}

/// A `Display` adapter for [`format`], for use inside `format!` without allocating.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Display(pub Duration);

impl fmt::Display for Display {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut left = self.0.as_secs();
        if left == 0 {
            return f.write_str("0s");
        }
        for (name, size) in UNITS {
            if left >= size {
                write!(f, "{}{name}", left / size)?;
                left %= size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_compound_units() {
        let cases = [
            ("0", 0),
            ("0s", 0),
            ("45s", 45),
            ("10m", 600),
            ("1h30m", 5_400),
            ("1h 30m", 5_400),
            ("90d", 90 * 86_400),
            ("1d2h3m4s", 86_400 + 7_200 + 180 + 4),
            ("  2h ", 7_200),
            ("90 d", 90 * 86_400),
        ];
        for (text, seconds) in cases {
            assert_eq!(parse(text), Ok(Duration::from_secs(seconds)), "{text}");
        }
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert!(matches!(
            parse("90"),
            Err(DurationError::MissingUnit { number: 90, .. })
        ));
        assert!(
            matches!(parse("5ms"), Err(DurationError::UnknownUnit { unit, .. }) if unit == "ms")
        );
        assert!(matches!(parse("1w"), Err(DurationError::UnknownUnit { unit, .. }) if unit == "w"));
        assert!(
            matches!(parse("3 months"), Err(DurationError::UnknownUnit { unit, .. }) if unit == "months")
        );
        assert!(matches!(
            parse("30m1h"),
            Err(DurationError::UnitOrder { .. })
        ));
        assert!(matches!(
            parse("1h1h"),
            Err(DurationError::UnitOrder { .. })
        ));
        assert!(matches!(
            parse("h"),
            Err(DurationError::ExpectedNumber { .. })
        ));
        assert!(matches!(
            parse("-1h"),
            Err(DurationError::ExpectedNumber { .. })
        ));
        assert!(matches!(parse("1.5h"), Err(DurationError::Fraction { .. })));
        assert!(matches!(
            parse("99999999999999999999d"),
            Err(DurationError::TooLong { .. })
        ));
        assert!(matches!(
            parse("36501d"),
            Err(DurationError::TooLong { .. })
        ));
        let message = parse("30m1h").unwrap_err().to_string();
        assert!(message.contains("`30m1h`"), "{message}");
    }

    #[test]
    fn format_round_trips() {
        for seconds in [0, 1, 59, 60, 61, 3_600, 5_400, 86_400, 90 * 86_400 + 1] {
            let d = Duration::from_secs(seconds);
            assert_eq!(parse(&format(d)), Ok(d), "{}", format(d));
        }
        assert_eq!(format(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(format(Duration::from_secs(90 * 86_400)), "90d");
        assert_eq!(format(Duration::ZERO), "0s");
    }
}
