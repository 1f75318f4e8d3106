//! Cron expressions (parsed by `croner` 4) and their occurrences in a time zone.
//!
//! Accepted syntax: 5 fields (minute precision) or 6 (leading seconds), POSIX
//! day-of-month OR day-of-week, plus croner's `L` (last day, `5#L` last Friday), `#`
//! (`MON#1` first Monday), `W` (nearest weekday) and the `@daily`-style aliases. Steps
//! need a range or `*` (`5-59/10`, not `5/10`).
//!
//! **Occurrences are wall-clock times.** keyflip asks croner for matching local times
//! and turns each into an instant by the rule in [`super::wall_clock`]: a repeated
//! time runs once (its first instant), a skipped time runs at the end of the gap, and
//! several skipped times collapse into that one instant. croner on its own, given a
//! zoned time, does the same for *fixed-time* patterns (single second, minute and
//! hour, like `30 2 * * *`), but treats *interval* patterns (`*/30 * * * *`,
//! `15,45 2 * * *`) as elapsed time: it fires in both halves of a repeated hour and
//! drops every match inside a gap, which can skip a whole day's rotation. keyflip's
//! rule is the same for both kinds, and the tests pin both behaviours.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use super::wall_clock;

/// A validated cron expression and the text it came from.
///
/// Parsed expressions are shared: plans of a fleet mostly repeat a handful of
/// expressions, so [`CronSpec::parse`] hands out one copy per distinct text (with its
/// validation done once), and each copy remembers its latest occurrences, so ten
/// thousand plans asking for the occurrence after the same instant cost one search.
#[derive(Clone)]
pub struct CronSpec {
    inner: Arc<Inner>,
}

/// One remembered `next_after` answer: (zone, after, occurrence).
type Answer = (Tz, DateTime<Utc>, Option<DateTime<Utc>>);

struct Inner {
    source: String,
    cron: Cron,
    shortest: Option<TimeDelta>,
    /// Recent `next_after` answers: (zone, after) → occurrence.
    recent: Mutex<VecDeque<Answer>>,
}

impl PartialEq for CronSpec {
    fn eq(&self, other: &Self) -> bool {
        self.inner.source == other.inner.source
    }
}

impl Eq for CronSpec {}

impl fmt::Debug for CronSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CronSpec").field(&self.inner.source).finish()
    }
}

/// Why a cron expression was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CronSpecError {
    /// croner's own complaint, verbatim.
    #[error("invalid cron expression `{pattern}`: {reason}")]
    Invalid { pattern: String, reason: String },
    #[error("cron expression `{pattern}` never fires")]
    Never { pattern: String },
}

impl CronSpecError {
    pub const HINT: &'static str = "five fields `minute hour day-of-month month day-of-week` (a sixth, leading field for seconds), e.g. \"0 3 * * SUN\" (Sundays 03:00), \"*/10 * * * *\", \"0 2 L * *\" (last day of the month), \"0 4 * * MON#1\" (first Monday)";
}

/// How many future occurrences [`CronSpec::shortest_interval`] looks at.
const SAMPLE: usize = 16;

/// Skipping past a repeated hour takes one step per occurrence inside it; a pattern
/// matching every second needs 3,600. Past this bound the search gives up.
const MAX_STEPS: usize = 20_000;

/// `next_after` answers each expression remembers (a plan check asks for three
/// chained occurrences per plan).
const RECENT: usize = 8;

/// Distinct expressions kept parsed; past this the cache starts afresh (a plans
/// directory with more distinct expressions only loses the sharing).
const CACHE_LIMIT: usize = 4_096;

static CACHE: Mutex<Option<HashMap<String, Result<CronSpec, CronSpecError>>>> = Mutex::new(None);

impl CronSpec {
    pub fn parse(text: &str) -> Result<CronSpec, CronSpecError> {
        let source = text.trim();
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let cache = cache.get_or_insert_with(HashMap::new);
        if let Some(found) = cache.get(source) {
            return found.clone();
        }
        let parsed = Self::parse_uncached(source);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(source.to_owned(), parsed.clone());
        parsed
    }

    fn parse_uncached(source: &str) -> Result<CronSpec, CronSpecError> {
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(source).map_err(|e| CronSpecError::Invalid {
            pattern: source.to_owned(),
            reason: e.to_string(),
        })?;
        // A pattern such as `0 0 30 2 *` parses but can never match.
        let Some(first) = next_local(&cron, reference()) else {
            return Err(CronSpecError::Never {
                pattern: source.to_owned(),
            });
        };
        let mut previous = first;
        let mut shortest: Option<TimeDelta> = None;
        for _ in 1..SAMPLE {
            let Some(next) = next_local(&cron, previous) else {
                break;
            };
            let gap = next - previous;
            shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
            previous = next;
        }
        Ok(CronSpec {
            inner: Arc::new(Inner {
                source: source.to_owned(),
                cron,
                shortest,
                recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            }),
        })
    }

    /// The expression as written (trimmed).
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// The parsed expression, for callers that want croner's other views.
    pub fn cron(&self) -> &Cron {
        &self.inner.cron
    }

    /// The first occurrence strictly after `after`, in `tz`, by the wall-clock rule
    /// described in the module docs. `None` when the pattern has no further match.
    pub fn next_after(&self, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        {
            let recent = self.inner.recent.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, _, found)) = recent.iter().find(|(z, a, _)| *z == tz && *a == after) {
                return *found;
            }
        }
        let found = self.search_after(tz, after);
        let mut recent = self.inner.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back((tz, after, found));
        found
    }

    fn search_after(&self, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut local = after.with_timezone(&tz).naive_local();
        for _ in 0..MAX_STEPS {
            local = next_local(&self.inner.cron, local)?;
            let at = wall_clock::resolve(tz, local)?;
            // Inside the second half of a repeated hour, the next local matches resolve
            // to their first instants, which lie before `after`: they already ran.
            // Matches inside a gap collapse onto its end, which may be `after` itself.
            if at > after {
                return Some(at);
            }
        }
        None
    }

    /// The shortest wall-clock distance between consecutive occurrences among the
    /// first few after a fixed reference date. Used to refuse schedules that would
    /// rotate every few seconds, and jitter that would overlap the next occurrence.
    pub fn shortest_interval(&self) -> Option<TimeDelta> {
        self.inner.shortest
    }
}

fn next_local(cron: &Cron, after: NaiveDateTime) -> Option<NaiveDateTime> {
    cron.find_next_occurrence(&after, false).ok()
}

impl fmt::Display for CronSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.source)
    }
}

/// A fixed starting point for checks that must not depend on the clock.
fn reference() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2024, 1, 1)
        .unwrap_or_default()
        .and_time(NaiveTime::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America::New_York, Europe::Berlin, UTC};

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn spec(text: &str) -> CronSpec {
        CronSpec::parse(text).unwrap()
    }

    /// The next `n` occurrences after `from`, chained.
    fn occurrences(spec: &CronSpec, tz: Tz, from: &str, n: usize) -> Vec<DateTime<Utc>> {
        let mut at = utc(from);
        (0..n)
            .map(|_| {
                at = spec.next_after(tz, at).unwrap();
                at
            })
            .collect()
    }

    #[test]
    fn rejects_bad_patterns_with_croners_reason() {
        let err = CronSpec::parse("61 * * * *").unwrap_err();
        assert!(matches!(&err, CronSpecError::Invalid { reason, .. } if !reason.is_empty()));
        assert!(CronSpec::parse("* * *").is_err());
        assert!(
            CronSpec::parse("5/10 * * * *").is_err(),
            "croner 4 wants 5-59/10"
        );
        assert!(
            CronSpec::parse("0 0 0 1 1 * 2030").is_err(),
            "no year field"
        );
        assert_eq!(
            CronSpec::parse("0 0 30 2 *"),
            Err(CronSpecError::Never {
                pattern: "0 0 30 2 *".into()
            })
        );
    }

    #[test]
    fn last_day_nth_weekday_and_nearest_weekday() {
        // Last day of the month, in February of a leap year and after.
        assert_eq!(
            occurrences(&spec("0 3 L * *"), UTC, "2024-02-01T00:00:00Z", 2),
            [utc("2024-02-29T03:00:00Z"), utc("2024-03-31T03:00:00Z")]
        );
        // Last Friday of the month.
        assert_eq!(
            occurrences(&spec("0 3 * * 5#L"), UTC, "2025-05-01T00:00:00Z", 2),
            [utc("2025-05-30T03:00:00Z"), utc("2025-06-27T03:00:00Z")]
        );
        // First Monday of the month.
        assert_eq!(
            occurrences(&spec("0 4 * * MON#1"), UTC, "2025-05-10T00:00:00Z", 2),
            [utc("2025-06-02T04:00:00Z"), utc("2025-07-07T04:00:00Z")]
        );
        // Nearest weekday to the 15th: 2025-06-15 is a Sunday, so Monday the 16th.
        assert_eq!(
            occurrences(&spec("0 1 15W * *"), UTC, "2025-06-01T00:00:00Z", 1),
            [utc("2025-06-16T01:00:00Z")]
        );
    }

    #[test]
    fn aliases_and_names_are_accepted() {
        assert_eq!(
            occurrences(&spec("@daily"), UTC, "2025-06-01T12:00:00Z", 1),
            [utc("2025-06-02T00:00:00Z")]
        );
        assert_eq!(
            occurrences(&spec("0 6 * JAN mon"), UTC, "2025-06-01T12:00:00Z", 1),
            [utc("2026-01-05T06:00:00Z")]
        );
    }

    #[test]
    fn six_fields_carry_seconds_and_time_zone_shifts_the_instant() {
        assert_eq!(
            occurrences(&spec("30 0 3 * * SUN"), Berlin, "2025-06-01T12:00:00Z", 1),
            [utc("2025-06-08T01:00:30Z")]
        );
    }

    #[test]
    fn fall_back_runs_a_repeated_time_once() {
        // Berlin, 2025-10-26: 03:00 CEST becomes 02:00 CET, 02:30 happens twice.
        assert_eq!(
            occurrences(&spec("30 2 * * *"), Berlin, "2025-10-25T12:00:00Z", 2),
            [utc("2025-10-26T00:30:00Z"), utc("2025-10-27T01:30:00Z")]
        );
        // New York, 2025-11-02: 02:00 EDT becomes 01:00 EST, 01:30 happens twice.
        assert_eq!(
            occurrences(&spec("30 1 * * *"), New_York, "2025-11-01T12:00:00Z", 2),
            [utc("2025-11-02T05:30:00Z"), utc("2025-11-03T06:30:00Z")]
        );
        // An interval pattern visits each wall-clock time once as well: after
        // 02:30 CEST comes 03:00 CET, an hour and a half later.
        assert_eq!(
            occurrences(&spec("*/30 * * * *"), Berlin, "2025-10-25T23:45:00Z", 3),
            [
                utc("2025-10-26T00:00:00Z"),
                utc("2025-10-26T00:30:00Z"),
                utc("2025-10-26T02:00:00Z")
            ]
        );
    }

    #[test]
    fn fall_back_from_inside_the_second_pass_does_not_repeat() {
        // Asked at 02:10 CET (the second pass), the 02:30 slot already ran at 02:30 CEST.
        let next = spec("30 2 * * *").next_after(Berlin, utc("2025-10-26T01:10:00Z"));
        assert_eq!(next, Some(utc("2025-10-27T01:30:00Z")));
    }

    #[test]
    fn spring_forward_runs_at_the_end_of_the_gap() {
        // Berlin, 2025-03-30: 02:00 CET becomes 03:00 CEST (01:00Z); 02:30 never happens.
        assert_eq!(
            occurrences(&spec("30 2 * * *"), Berlin, "2025-03-29T12:00:00Z", 2),
            [utc("2025-03-30T01:00:00Z"), utc("2025-03-31T00:30:00Z")]
        );
        // New York, 2025-03-09: 02:00 EST becomes 03:00 EDT (07:00Z). Two matches in the
        // gap run once, at its end, and the day's later match still runs.
        assert_eq!(
            occurrences(
                &spec("15,45 2,4 * * *"),
                New_York,
                "2025-03-09T05:00:00Z",
                3
            ),
            [
                utc("2025-03-09T07:00:00Z"),
                utc("2025-03-09T08:15:00Z"),
                utc("2025-03-09T08:45:00Z")
            ]
        );
    }

    /// Pins what croner does on its own with zoned times, which is why keyflip asks it
    /// for wall-clock matches instead (see the module docs). If croner changes, this
    /// test says so.
    #[test]
    fn croner_alone_skips_interval_matches_in_a_gap() {
        let cron = spec("15,45 2 * * *").cron().clone();
        let start = utc("2025-03-09T05:00:00Z").with_timezone(&New_York);
        let next = cron.find_next_occurrence(&start, false).unwrap();
        assert_eq!(next.with_timezone(&Utc), utc("2025-03-10T06:15:00Z"));
        // A fixed-time pattern is carried past the gap, like keyflip's rule.
        let cron = spec("30 2 * * *").cron().clone();
        let next = cron.find_next_occurrence(&start, false).unwrap();
        assert_eq!(next.with_timezone(&Utc), utc("2025-03-09T07:00:00Z"));
    }

    #[test]
    fn shortest_interval_is_sampled_from_the_pattern() {
        assert_eq!(
            spec("*/10 * * * *").shortest_interval(),
            Some(TimeDelta::minutes(10))
        );
        assert_eq!(
            spec("0 3 * * SUN").shortest_interval(),
            Some(TimeDelta::weeks(1))
        );
        assert_eq!(
            spec("0 3 1,2 * *").shortest_interval(),
            Some(TimeDelta::days(1))
        );
        assert_eq!(
            spec("*/5 * * * * *").shortest_interval(),
            Some(TimeDelta::seconds(5))
        );
    }
}
