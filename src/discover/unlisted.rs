//! What a plan leaves out: the consumers discovery found for its account that the
//! plan does not list (nor find at rotation time, like `discover = true` datastores).
//! `doctor` reports them and a rotation's precheck warns about them (or refuses, with
//! `unlisted = "refuse"`).

use serde::{Deserialize, Serialize};

use super::report::AccountDiscovery;
use super::{Finding, Verdict};
use crate::consumer;
use crate::plan::Plan;

/// A consumer of the plan's account that the plan does not list. Journaled inside an
/// observation (ids, key names and words only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unlisted {
    /// Its consumer id, as a plan would list it.
    pub consumer: String,
    /// What it is, in words.
    pub subject: String,
    /// Which key it holds: `key1`, `key2`, `neither`, `unknown`.
    pub holds: String,
    /// How discovery found it.
    pub how: String,
    /// Its value could not be read back: tied to the account by name or by keyflip's
    /// own earlier write only.
    #[serde(default)]
    pub probable: bool,
}

impl std::fmt::Display for Unlisted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (holds {}; {}", self.subject, self.holds, self.how)?;
        if self.probable {
            f.write_str("; probable only")?;
        }
        f.write_str(")")
    }
}

/// The consumers in `found` that `plan` does not cover, in discovery's order.
pub fn unlisted(plan: &Plan, found: &AccountDiscovery) -> Vec<Unlisted> {
    let listed = plan.consumer_ids();
    found
        .consumers
        .iter()
        .filter(|f| {
            let Some(id) = &f.consumer else { return false };
            let key = id.same_target_key();
            consumer::listed(plan, &id.to_string()).is_none()
                && !listed.iter().any(|l| l.same_target_key() == key)
        })
        .map(of)
        .collect()
}

fn of(f: &Finding) -> Unlisted {
    Unlisted {
        consumer: f
            .consumer
            .as_ref()
            .map_or_else(String::new, ToString::to_string),
        subject: f.subject.clone(),
        holds: f.holds.to_string(),
        how: f.how.clone(),
        probable: matches!(f.verdict, Verdict::Probable { .. }),
    }
}
