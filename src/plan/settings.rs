//! The plan's settings besides its consumers: `unlisted`, `[schedule]`, `[rotation]`,
//! `[usage_gate]`, `[[notify]]` and `[drift]`, with their defaults and limits.

use std::time::Duration;

use chrono::{NaiveTime, TimeDelta, Weekday, WeekdaySet};
use chrono_tz::Tz;
use toml::Spanned;
use url::Url;

use super::fields::closest;
use super::parse::Diagnostics;
use super::raw::{RawDrift, RawNotify, RawRotation, RawSchedule, RawUsageGate, RawWindow, Text};
use super::values::{Invalid, arm_id, duration_in, integer_in, optional, required, webhook_url};
use crate::azure::monitor::StorageService;
use crate::resource_id::ResourceId;
use crate::schedule::{CronSpec, CronSpecError, Schedule, ScheduleError, Window, WindowError};

/// How a rotation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// Wait between commit and retiring the old key, so clients holding it finish.
    pub grace: Duration,
    /// How long to keep probing a new key on the data plane before giving up.
    pub verify_budget: Duration,
    /// Failed retire attempts before the rotation is parked as needs-attention.
    pub retire_attempts: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            grace: Duration::from_secs(3_600),
            verify_budget: Duration::from_secs(60),
            retire_attempts: 8,
        }
    }
}

/// What a rotation does about consumers of the account the plan does not list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnlistedPolicy {
    /// The precheck warns and the rotation goes on.
    #[default]
    Warn,
    /// The precheck refuses; nothing is changed.
    Refuse,
}

pub(super) fn unlisted(value: &Text, d: &mut Diagnostics<'_>) -> Option<UnlistedPolicy> {
    match value.get_ref().as_str() {
        "warn" => Some(UnlistedPolicy::Warn),
        "refuse" => Some(UnlistedPolicy::Refuse),
        other => {
            d.error(
                value.span(),
                format!("unknown unlisted policy `{other}`"),
                "unlisted is \"warn\" (the precheck warns, the default) or \"refuse\" (it refuses)",
            );
            None
        }
    }
}

/// Microsoft's documented average latency of Azure Monitor log ingestion is "between 20
/// seconds and 3 minutes" (Microsoft Learn, "Log data ingestion time in Azure
/// Monitor"): the usage gate never trusts logs younger than its upper end.
pub const MIN_INGESTION_LATENCY: Duration = Duration::from_secs(180);

/// The usage gate: before retiring the old key, ask the account's resource logs in a
/// Log Analytics workspace whether anyone still signs with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageGate {
    /// The workspace's ARM id (what the account's diagnostic settings name).
    pub workspace: ResourceId,
    /// Its workspace id (GUID), which the query API takes.
    pub workspace_id: String,
    /// The storage services whose request logs are asked (their tables).
    pub services: Vec<StorageService>,
    /// How far back a query looks at most (incidents and the pre-stage check look
    /// back this far; the retire gate from the swap on).
    pub lookback: Duration,
    /// No request signed with the old key for this long (in logs old enough to be
    /// complete) lets the retire go.
    pub quiet_period: Duration,
    /// How often a held retire checks again.
    pub recheck: Duration,
    /// How long after the swap the gate may hold before the rotation parks.
    pub deadline: Duration,
    /// How old a log row must be before it is trusted to be there; at least
    /// [`MIN_INGESTION_LATENCY`].
    pub ingestion_latency: Duration,
}

impl UsageGate {
    pub const DEFAULT_QUIET: Duration = Duration::from_secs(30 * 60);
    pub const DEFAULT_RECHECK: Duration = Duration::from_secs(10 * 60);
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(24 * 3_600);
    pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(7 * 86_400);
    pub const DEFAULT_LATENCY: Duration = Duration::from_secs(5 * 60);
}

pub(super) fn usage_gate(
    raw: &Spanned<RawUsageGate>,
    d: &mut Diagnostics<'_>,
) -> Option<UsageGate> {
    let (span, r) = (raw.span(), raw.get_ref());
    let section = "[usage_gate]";
    let workspace = required(
        &r.workspace,
        "workspace",
        section,
        &span,
        "\"/subscriptions/…/providers/Microsoft.OperationalInsights/workspaces/<name>\"",
        d,
    )
    .and_then(|v| {
        arm_id(
            v,
            "workspace",
            "Microsoft.OperationalInsights/workspaces",
            d,
        )
    });
    let workspace_id = required(
        &r.workspace_id,
        "workspace_id",
        section,
        &span,
        "\"<the workspace's GUID: az monitor log-analytics workspace show --query customerId>\"",
        d,
    )
    .and_then(|v| {
        let text = v.get_ref();
        let ok = text.len() == 36
            && text.chars().enumerate().all(|(i, c)| {
                if [8, 13, 18, 23].contains(&i) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit()
                }
            });
        if !ok {
            d.error(
                v.span(),
                format!("workspace_id `{text}` is not a GUID"),
                "the workspace id is the GUID the query API takes (customerId), e.g. \"4e1d2c3b-5a6f-4b7c-8d9e-0f1a2b3c4d5e\"",
            );
            return None;
        }
        Some(text.to_ascii_lowercase())
    });
    let services = match &r.services {
        None => Some(StorageService::ALL.to_vec()),
        Some(list) => services(list, d),
    };
    let day = 86_400;
    let dur = |v: &Option<Text>,
               key: &str,
               min: u64,
               max: u64,
               default: Duration,
               d: &mut Diagnostics<'_>| {
        optional(v, |v| {
            duration_in(
                v,
                key,
                Duration::from_secs(min),
                Duration::from_secs(max),
                d,
            )
        })
        .map(|o| o.unwrap_or(default))
    };
    let lookback = dur(
        &r.lookback,
        "lookback",
        60,
        30 * day,
        UsageGate::DEFAULT_LOOKBACK,
        d,
    );
    let quiet = dur(
        &r.quiet_period,
        "quiet_period",
        60,
        7 * day,
        UsageGate::DEFAULT_QUIET,
        d,
    );
    let recheck = dur(
        &r.recheck,
        "recheck",
        60,
        day,
        UsageGate::DEFAULT_RECHECK,
        d,
    );
    let deadline = dur(
        &r.deadline,
        "deadline",
        60,
        30 * day,
        UsageGate::DEFAULT_DEADLINE,
        d,
    );
    let latency = dur(
        &r.ingestion_latency,
        "ingestion_latency",
        MIN_INGESTION_LATENCY.as_secs(),
        day,
        UsageGate::DEFAULT_LATENCY,
        d,
    );
    let (Ok(lookback), Ok(quiet), Ok(recheck), Ok(deadline), Ok(latency)) =
        (lookback, quiet, recheck, deadline, latency)
    else {
        return None;
    };
    // The first check comes after the latency and the quiet period; a deadline
    // before it could never pass, and a lookback shorter than it would miss callers.
    let first = latency + quiet;
    let needed = duration_of(first);
    if deadline < first {
        let at = r.deadline.as_ref().map_or(span.clone(), |v| v.span());
        d.error(
            at,
            format!("deadline {} comes before the first check", duration_of(deadline)),
            format!("the first check is ingestion_latency + quiet_period = {needed} after the swap; make deadline at least that"),
        );
        return None;
    }
    if lookback < first {
        let at = r.lookback.as_ref().map_or(span.clone(), |v| v.span());
        d.error(
            at,
            format!(
                "lookback {} is shorter than ingestion_latency + quiet_period",
                duration_of(lookback)
            ),
            format!("make lookback at least {needed}"),
        );
        return None;
    }
    Some(UsageGate {
        workspace: workspace?,
        workspace_id: workspace_id?,
        services: services?,
        lookback,
        quiet_period: quiet,
        recheck,
        deadline,
        ingestion_latency: latency,
    })
}

fn duration_of(d: Duration) -> String {
    super::duration::Display(d).to_string()
}

fn services(list: &Spanned<Vec<Text>>, d: &mut Diagnostics<'_>) -> Option<Vec<StorageService>> {
    if list.get_ref().is_empty() {
        d.error(
            list.span(),
            "services is empty",
            "list some of \"blob\", \"file\", \"queue\", \"table\", or omit services for all four",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for item in list.get_ref() {
        match StorageService::ALL
            .iter()
            .find(|s| s.as_str() == item.get_ref())
        {
            Some(s) if !out.contains(s) => out.push(*s),
            Some(_) => {}
            None => {
                d.error(
                    item.span(),
                    format!("unknown storage service `{}`", item.get_ref()),
                    "services are \"blob\", \"file\", \"queue\" and \"table\"",
                );
                ok = false;
            }
        }
    }
    out.sort();
    ok.then_some(out)
}

/// The drift watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drift {
    pub interval: Duration,
    /// Move drifted consumers back onto the active key, instead of only reporting.
    pub repair: bool,
}

impl Default for Drift {
    fn default() -> Self {
        Drift {
            interval: Duration::from_secs(15 * 60),
            repair: false,
        }
    }
}

/// A webhook, the events it receives, the body it wants and how it is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub url: Url,
    /// Sorted, without repeats.
    pub events: Vec<NotifyEvent>,
    pub format: WebhookFormat,
    /// A file holding the HMAC-SHA256 key the body is signed with
    /// (`X-Keyflip-Signature`); read when a notification is sent, never at load.
    pub secret_file: Option<std::path::PathBuf>,
}

/// The body a webhook receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WebhookFormat {
    /// keyflip's own JSON, `keyflip.notification/v1`.
    #[default]
    Json,
    /// A Slack incoming-webhook message (text and Block Kit blocks).
    Slack,
    /// A Microsoft Teams message with an Adaptive Card, for a Workflows webhook.
    Teams,
}

impl WebhookFormat {
    pub const ALL: [WebhookFormat; 3] = [
        WebhookFormat::Json,
        WebhookFormat::Slack,
        WebhookFormat::Teams,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Json => "json",
            WebhookFormat::Slack => "slack",
            WebhookFormat::Teams => "teams",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NotifyEvent {
    /// A rotation completed (not sent unless listed: a fleet rotates often).
    Completed,
    /// A rotation cycle failed: refused, or could not start. Also the umbrella for
    /// `rolled-back`: a webhook listing `failure` receives rollbacks too.
    Failure,
    /// A rotation failed before commit and was rolled back.
    RolledBack,
    NeedsAttention,
    Incident,
    Drift,
    /// The usage gate parked a rotation: callers still sign with the old key.
    UsageGateHold,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 7] = [
        NotifyEvent::Completed,
        NotifyEvent::Failure,
        NotifyEvent::RolledBack,
        NotifyEvent::NeedsAttention,
        NotifyEvent::Incident,
        NotifyEvent::Drift,
        NotifyEvent::UsageGateHold,
    ];

    /// What a webhook without `events` receives: everything but `completed`.
    pub fn defaults() -> Vec<NotifyEvent> {
        NotifyEvent::ALL
            .into_iter()
            .filter(|e| *e != NotifyEvent::Completed)
            .collect()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Completed => "completed",
            NotifyEvent::Failure => "failure",
            NotifyEvent::RolledBack => "rolled-back",
            NotifyEvent::NeedsAttention => "needs-attention",
            NotifyEvent::Incident => "incident",
            NotifyEvent::Drift => "drift",
            NotifyEvent::UsageGateHold => "usage-gate-hold",
        }
    }
}

impl Webhook {
    pub fn wants(&self, event: NotifyEvent) -> bool {
        self.events.contains(&event)
            || (event == NotifyEvent::RolledBack && self.events.contains(&NotifyEvent::Failure))
    }
}

pub(super) fn schedule(raw: &Spanned<RawSchedule>, d: &mut Diagnostics<'_>) -> Option<Schedule> {
    let r = raw.get_ref();
    let cron = optional(&r.cron, |v| cron(v, d));
    let timezone = optional(&r.timezone, |v| timezone(v, d));
    let max_key_age = optional(&r.max_key_age, |v| {
        let age = duration_in(v, "max_key_age", Duration::ZERO, super::duration::MAX, d)?;
        TimeDelta::from_std(age).ok()
    });
    let jitter = optional(&r.jitter, |v| {
        let jitter = duration_in(v, "jitter", Duration::ZERO, Duration::from_secs(86_400), d)?;
        TimeDelta::from_std(jitter).ok()
    });
    let window = optional(&r.window, |v| window(v, d));
    let (Ok(cron), Ok(timezone), Ok(max_key_age), Ok(jitter), Ok(window)) =
        (cron, timezone, max_key_age, jitter, window)
    else {
        return None;
    };
    let result = Schedule::new(
        cron,
        timezone.unwrap_or(Tz::UTC),
        max_key_age,
        window,
        jitter.unwrap_or_default(),
    );
    let err = match result {
        Ok(schedule) => return Some(schedule),
        Err(err) => err,
    };
    let span_of = |field: &Option<Text>| field.as_ref().map_or(raw.span(), Spanned::span);
    let (span, hint) = match &err {
        ScheduleError::NoTrigger => (
            raw.span(),
            "add cron = \"0 3 * * SUN\" or max_key_age = \"90d\"; remove [schedule] to rotate only on demand",
        ),
        ScheduleError::TooFrequent(_) => (
            span_of(&r.cron),
            "rotate at most every minute, e.g. \"*/10 * * * *\"",
        ),
        ScheduleError::MaxKeyAgeTooShort(_) => (
            span_of(&r.max_key_age),
            "use a key age of hours or days, e.g. \"90d\"",
        ),
        ScheduleError::JitterExceedsCron { .. } | ScheduleError::NegativeJitter => (
            span_of(&r.jitter),
            "shorten the jitter or space the cron occurrences further apart",
        ),
        ScheduleError::JitterExceedsWindow { .. } => {
            (span_of(&r.jitter), "shorten the jitter or widen the window")
        }
    };
    d.error(span, err.to_string(), hint);
    None
}

fn cron(value: &Text, d: &mut Diagnostics<'_>) -> Option<CronSpec> {
    match CronSpec::parse(value.get_ref()) {
        Ok(spec) => Some(spec),
        Err(err) => {
            d.error(value.span(), err.to_string(), CronSpecError::HINT);
            None
        }
    }
}

fn timezone(value: &Text, d: &mut Diagnostics<'_>) -> Option<Tz> {
    let text = value.get_ref().trim();
    if let Ok(tz) = text.parse::<Tz>() {
        return Some(tz);
    }
    let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect();
    let hint = match names
        .iter()
        .find(|n| n.eq_ignore_ascii_case(text))
        .copied()
        .or_else(|| closest(text, &names))
    {
        Some(guess) => format!("did you mean \"{guess}\"? Time zones are IANA names"),
        None => {
            "use an IANA time zone name such as \"Europe/Berlin\", \"America/New_York\" or \"UTC\""
                .to_owned()
        }
    };
    d.error(value.span(), format!("unknown time zone `{text}`"), hint);
    None
}

fn window(raw: &Spanned<RawWindow>, d: &mut Diagnostics<'_>) -> Option<Window> {
    let r = raw.get_ref();
    let mut missing = |key: &str| {
        d.error(
            raw.span(),
            format!("window is missing `{key}`"),
            "write window = { start = \"01:00\", end = \"05:00\" } in local time of `timezone`",
        );
    };
    if r.start.is_none() {
        missing("start");
    }
    if r.end.is_none() {
        missing("end");
    }
    let start = r.start.as_ref().map(|v| time_of_day(v, "start", d));
    let end = r.end.as_ref().map(|v| time_of_day(v, "end", d));
    let days = optional(&r.days, |v| days(v, d));
    let (Some(Some(start)), Some(Some(end)), Ok(days)) = (start, end, days) else {
        return None;
    };
    match Window::new(start, end, days.unwrap_or(WeekdaySet::ALL)) {
        Ok(window) => Some(window),
        Err(err) => {
            let hint = match err {
                WindowError::Empty(_) => {
                    "a window needs start and end apart; omit window to allow any time"
                }
                WindowError::NoDays => "list at least one day, or omit days for every day",
            };
            d.error(raw.span(), format!("window: {err}"), hint);
            None
        }
    }
}

fn time_of_day(value: &Text, key: &str, d: &mut Diagnostics<'_>) -> Option<NaiveTime> {
    match NaiveTime::parse_from_str(value.get_ref().trim(), "%H:%M") {
        Ok(time) => Some(time),
        Err(_) => {
            d.error(
                value.span(),
                format!("window {key} `{}` is not a time of day", value.get_ref()),
                "write 24-hour local time as \"HH:MM\", e.g. \"01:00\" or \"22:30\"",
            );
            None
        }
    }
}

const DAY_NAMES: [(&str, &str, Weekday); 7] = [
    ("mon", "monday", Weekday::Mon),
    ("tue", "tuesday", Weekday::Tue),
    ("wed", "wednesday", Weekday::Wed),
    ("thu", "thursday", Weekday::Thu),
    ("fri", "friday", Weekday::Fri),
    ("sat", "saturday", Weekday::Sat),
    ("sun", "sunday", Weekday::Sun),
];

fn days(list: &Spanned<Vec<Text>>, d: &mut Diagnostics<'_>) -> Option<WeekdaySet> {
    if list.get_ref().is_empty() {
        d.error(
            list.span(),
            "window days is empty",
            "list days such as [\"sat\", \"sun\"], or omit days for every day",
        );
        return None;
    }
    let mut set = WeekdaySet::EMPTY;
    let mut ok = true;
    for item in list.get_ref() {
        let text = item.get_ref().trim().to_ascii_lowercase();
        match DAY_NAMES
            .iter()
            .find(|(short, long, _)| text == *short || text == *long)
        {
            Some((_, _, day)) => {
                set.insert(*day);
            }
            None => {
                d.error(
                    item.span(),
                    format!("unknown day `{}`", item.get_ref()),
                    "days are mon, tue, wed, thu, fri, sat, sun",
                );
                ok = false;
            }
        }
    }
    ok.then_some(set)
}

/// The longest grace period: a plan's `grace` and `rotate now --grace` alike.
pub const MAX_GRACE: Duration = Duration::from_secs(30 * 86_400);

pub(super) fn rotation(raw: &Spanned<RawRotation>, d: &mut Diagnostics<'_>) -> Option<Rotation> {
    let r = raw.get_ref();
    let defaults = Rotation::default();
    let grace = optional(&r.grace, |v| {
        duration_in(v, "grace", Duration::ZERO, MAX_GRACE, d)
    });
    let verify_budget = optional(&r.verify_budget, |v| {
        duration_in(
            v,
            "verify_budget",
            Duration::from_secs(1),
            Duration::from_secs(3_600),
            d,
        )
    });
    let retire_attempts = optional(&r.retire_attempts, |v| {
        integer_in(v, "retire_attempts", 1, 100, d)
    });
    let (Ok(grace), Ok(verify_budget), Ok(retire_attempts)) =
        (grace, verify_budget, retire_attempts)
    else {
        return None;
    };
    Some(Rotation {
        grace: grace.unwrap_or(defaults.grace),
        verify_budget: verify_budget.unwrap_or(defaults.verify_budget),
        retire_attempts: retire_attempts.unwrap_or(defaults.retire_attempts),
    })
}

pub(super) fn drift(raw: &Spanned<RawDrift>, d: &mut Diagnostics<'_>) -> Option<Drift> {
    let r = raw.get_ref();
    let defaults = Drift::default();
    let interval = optional(&r.interval, |v| {
        duration_in(
            v,
            "interval",
            Duration::from_secs(60),
            Duration::from_secs(7 * 86_400),
            d,
        )
    })
    .ok()?;
    Some(Drift {
        interval: interval.unwrap_or(defaults.interval),
        repair: r.repair.as_ref().is_some_and(|v| *v.get_ref()),
    })
}

pub(super) fn notify(raw: &Spanned<RawNotify>, d: &mut Diagnostics<'_>) -> Option<Webhook> {
    let r = raw.get_ref();
    let url = match &r.webhook {
        Some(v) => webhook_url(v, d),
        None => {
            d.error(
                raw.span(),
                "[[notify]] is missing `webhook`",
                "add webhook = \"https://hooks.example.com/keyflip\"",
            );
            None
        }
    };
    let events = match &r.events {
        None => Ok(NotifyEvent::defaults()),
        Some(list) => events(list, d),
    };
    let format = match &r.format {
        None => Ok(WebhookFormat::Json),
        Some(v) => match WebhookFormat::ALL
            .iter()
            .find(|f| f.as_str() == v.get_ref())
        {
            Some(f) => Ok(*f),
            None => {
                d.error(
                    v.span(),
                    format!("unknown webhook format `{}`", v.get_ref()),
                    "format is \"json\" (keyflip's own), \"slack\" (an incoming webhook) or \"teams\" (a Workflows webhook)",
                );
                Err(Invalid)
            }
        },
    };
    let secret_file = match &r.secret_file {
        None => Ok(None),
        Some(v) => {
            let path = std::path::PathBuf::from(v.get_ref().trim());
            if path.is_absolute() {
                Ok(Some(path))
            } else {
                d.error(
                    v.span(),
                    format!("secret_file `{}` is not an absolute path", v.get_ref()),
                    "name the file holding the signing key by its full path, e.g. \"/etc/keyflip/webhook.secret\" or \"/run/credentials/keyflip.service/webhook-secret\"",
                );
                Err(Invalid)
            }
        }
    };
    Some(Webhook {
        url: url?,
        events: events.ok()?,
        format: format.ok()?,
        secret_file: secret_file.ok()?,
    })
}

fn events(list: &Spanned<Vec<Text>>, d: &mut Diagnostics<'_>) -> Result<Vec<NotifyEvent>, Invalid> {
    let valid: Vec<&str> = NotifyEvent::ALL.iter().map(|e| e.as_str()).collect();
    if list.get_ref().is_empty() {
        d.error(
            list.span(),
            "events is empty",
            format!("list some of {}, or omit events for all", valid.join(", ")),
        );
        return Err(Invalid);
    }
    let mut events = Vec::new();
    let mut ok = true;
    for item in list.get_ref() {
        match NotifyEvent::ALL
            .iter()
            .find(|e| e.as_str() == item.get_ref())
        {
            Some(event) => events.push(*event),
            None => {
                let hint = match closest(item.get_ref(), &valid) {
                    Some(guess) => {
                        format!("did you mean \"{guess}\"? Events: {}", valid.join(", "))
                    }
                    None => format!("events: {}", valid.join(", ")),
                };
                d.error(
                    item.span(),
                    format!("unknown event `{}`", item.get_ref()),
                    hint,
                );
                ok = false;
            }
        }
    }
    events.sort_unstable();
    events.dedup();
    if ok { Ok(events) } else { Err(Invalid) }
}
