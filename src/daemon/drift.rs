//! Drift watch: on each plan's `drift.interval`, compare what Azure holds with what
//! keyflip expects, and say so when they differ.
//!
//! Three kinds of finding:
//! - **consumer**: a consumer not on the active key (the key keyflip last moved
//!   consumers to, from the journal) or on neither key, from the engine's
//!   [`Inventory`];
//! - **key regenerated**: a key whose fingerprint or `keyCreationTime` changed since
//!   the last observation while no keyflip rotation ran (someone regenerated it in the
//!   portal, or a script did);
//! - **unknown version**: a Key Vault version nobody at keyflip wrote: no `keyflip-*`
//!   tag (keyflip tags every version it writes) and newer than keyflip's last write.
//!
//! [`assess`] is pure: the scheduler gathers the observation and acts on the findings
//! (logs, metrics, webhook, and repair when the plan opts in). Findings name keys,
//! consumers and versions, never a value.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::azure::keyvault::SecretVersion;
use crate::journal::ObservedKeys;
use crate::key::KeyName;
use crate::rotation::Inventory;
use crate::rotation::machine::Holding;

/// Tags keyflip writes on every secret version start with this.
pub const KEYFLIP_TAG_PREFIX: &str = "keyflip-";

/// What one drift check saw: the engine's inventory plus every version of each Key
/// Vault secret of the plan (no values).
#[derive(Clone, Debug)]
pub struct Observation {
    pub inventory: Inventory,
    /// Per consumer that keeps versions (Key Vault), its id and its versions oldest
    /// first.
    pub versions: Vec<(String, Vec<SecretVersion>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    Consumer {
        consumer: String,
        holding: String,
        active: Option<KeyName>,
    },
    KeyRegenerated {
        key: KeyName,
    },
    UnknownVersion {
        consumer: String,
        version: String,
        created: Option<DateTime<Utc>>,
    },
}

impl Finding {
    /// A stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::Consumer { .. } => "consumer",
            Finding::KeyRegenerated { .. } => "key_regenerated",
            Finding::UnknownVersion { .. } => "unknown_version",
        }
    }

    /// The consumer to move back onto the active key, when repair applies.
    pub fn repairable(&self) -> Option<&str> {
        match self {
            Finding::Consumer { consumer, .. } => Some(consumer),
            _ => None,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Consumer {
                consumer,
                holding,
                active: Some(active),
            } => write!(f, "{consumer} holds {holding}, not the active {active}"),
            Finding::Consumer {
                consumer, holding, ..
            } => write!(
                f,
                "{consumer} holds {holding}; consumers do not agree on an active key"
            ),
            Finding::KeyRegenerated { key } => write!(
                f,
                "{key} was regenerated outside keyflip (its fingerprint or creation time changed while no rotation ran)"
            ),
            Finding::UnknownVersion {
                consumer,
                version,
                created,
            } => {
                write!(f, "{consumer} has version {version}")?;
                if let Some(created) = created {
                    write!(f, " (created {})", created.format("%Y-%m-%dT%H:%M:%SZ"))?;
                }
                f.write_str(" that keyflip did not write, newer than keyflip's last write")
            }
        }
    }
}

/// How many consumers hold neither key: an outage when above zero.
pub fn consumers_down(findings: &[Finding]) -> usize {
    findings
        .iter()
        .filter(|f| matches!(f, Finding::Consumer { holding, .. } if holding == "neither key"))
        .count()
}

/// The first line of a drift alert. Consumers on neither key are an outage, not
/// drift: then it says so first and names the command that mends it.
pub fn headline(plan: &str, findings: &[Finding], first_new: &Finding) -> String {
    let down = consumers_down(findings);
    if down == 0 {
        return format!("drift on {plan}: {first_new}");
    }
    let regenerated: Vec<String> = findings
        .iter()
        .filter_map(|f| match f {
            Finding::KeyRegenerated { key } => Some(key.to_string()),
            _ => None,
        })
        .collect();
    let why = if regenerated.is_empty() {
        String::new()
    } else {
        format!(
            " ({} regenerated outside keyflip)",
            regenerated.join(" and ")
        )
    };
    format!(
        "consumers are down on {plan}: {down} consumer(s) hold neither key{why}; run `keyflip rotate now {plan} --adopt` to move every consumer to a key that works now"
    )
}

/// Compares an observation with what keyflip expects. `previous` is the last
/// observation's keys; `keyflip_changed_keys` says a keyflip rotation ran since, so
/// key changes are keyflip's own; `active` is the key keyflip last moved consumers to
/// (from the journal), or `None` to go by what the consumers agree on.
pub fn assess(
    previous: Option<&ObservedKeys>,
    keyflip_changed_keys: bool,
    active: Option<KeyName>,
    observation: &Observation,
) -> Vec<Finding> {
    let inv = &observation.inventory;
    let active = active.or(inv.active);
    let mut findings: Vec<Finding> = inv
        .consumers
        .iter()
        .filter_map(|c| {
            let holding = match &c.holding {
                Holding::Key(k) if Some(*k) == active => return None,
                Holding::Key(k) => k.to_string(),
                Holding::Neither => "neither key".to_owned(),
                // Values keyflip cannot read or manage are reported by `status`, not
                // as drift: nothing changed behind keyflip's back.
                Holding::Unknown { .. } | Holding::Unusable { .. } => return None,
            };
            Some(Finding::Consumer {
                consumer: c.consumer.id.to_string(),
                holding,
                active,
            })
        })
        .collect();
    if let (Some(before), false) = (previous, keyflip_changed_keys) {
        for (key, then, now) in [
            (KeyName::Key1, &before.key1, &inv.key1),
            (KeyName::Key2, &before.key2, &inv.key2),
        ] {
            if then.fingerprint != now.fingerprint
                || (then.created.is_some() && then.created != now.created)
            {
                findings.push(Finding::KeyRegenerated { key });
            }
        }
    }
    for (consumer, versions) in &observation.versions {
        let ours = |v: &SecretVersion| {
            v.tags
                .keys()
                .any(|t| t.to_ascii_lowercase().starts_with(KEYFLIP_TAG_PREFIX))
        };
        // Versions come oldest first (Key Vault keeps creation times to the second,
        // and versions of one second keep the service's order), so "newer than
        // keyflip's last write" is "after it in the list". Before keyflip's first
        // write there is nothing to be newer than.
        let Some(last_ours) = versions.iter().rposition(ours) else {
            continue;
        };
        for v in &versions[last_ours + 1..] {
            if v.enabled && !ours(v) {
                findings.push(Finding::UnknownVersion {
                    consumer: consumer.clone(),
                    version: v.version.clone(),
                    created: v.created,
                });
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{TimeDelta, TimeZone as _};

    use super::*;
    use crate::rotation::machine::{ConsumerRef, KeyState, ObservedConsumer};
    use crate::secret::Fingerprint;

    fn fp(n: u8) -> Fingerprint {
        Fingerprint::from_hex(&format!("{n:02x}").repeat(16)).unwrap()
    }

    fn t(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + TimeDelta::hours(h)
    }

    fn inventory(k1: u8, k2: u8, drift: Vec<ObservedConsumer>) -> Inventory {
        Inventory {
            plan: "demo".into(),
            account: "/subscriptions/s/x".into(),
            observed_at: t(5),
            key1: KeyState {
                fingerprint: fp(k1),
                created: Some(t(k1.into())),
            },
            key2: KeyState {
                fingerprint: fp(k2),
                created: Some(t(k2.into())),
            },
            shared_key_access: true,
            missing_permissions: Vec::new(),
            consumers: drift.clone(),
            active: Some(KeyName::Key1),
            drift,
        }
    }

    fn version(id: &str, hour: i64, ours: bool) -> SecretVersion {
        let mut tags = BTreeMap::new();
        if ours {
            tags.insert("keyflip-rotation".to_owned(), "r1".to_owned());
        }
        SecretVersion {
            name: "s".into(),
            version: id.into(),
            enabled: true,
            created: Some(t(hour)),
            updated: None,
            expires: None,
            content_type: None,
            tags,
        }
    }

    #[test]
    fn a_key_changed_without_a_rotation_is_drift_and_with_one_is_not() {
        let before = ObservedKeys {
            at: t(1),
            key1: KeyState {
                fingerprint: fp(1),
                created: Some(t(1)),
            },
            key2: KeyState {
                fingerprint: fp(2),
                created: Some(t(2)),
            },
        };
        let obs = Observation {
            inventory: inventory(1, 3, Vec::new()),
            versions: Vec::new(),
        };
        let findings = assess(Some(&before), false, None, &obs);
        assert_eq!(
            findings,
            vec![Finding::KeyRegenerated { key: KeyName::Key2 }]
        );
        assert!(
            findings[0]
                .to_string()
                .contains("key2 was regenerated outside keyflip")
        );
        assert!(assess(Some(&before), true, None, &obs).is_empty());
        assert!(
            assess(None, false, None, &obs).is_empty(),
            "nothing to compare with on the first look"
        );
    }

    #[test]
    fn consumers_off_the_active_key_and_foreign_versions_are_drift() {
        let off = ObservedConsumer {
            consumer: ConsumerRef::new("keyvault:https://v/secrets/s".parse().unwrap()),
            holding: Holding::Key(KeyName::Key2),
        };
        let obs = Observation {
            inventory: inventory(1, 2, vec![off]),
            versions: vec![(
                "keyvault:https://v/secrets/s".into(),
                vec![
                    version("a", 1, false),
                    version("b", 2, true),
                    version("c", 3, false),
                ],
            )],
        };
        let findings = assess(None, false, None, &obs);
        assert_eq!(findings.len(), 2, "{findings:?}");
        assert_eq!(
            findings[0].repairable(),
            Some("keyvault:https://v/secrets/s")
        );
        assert_eq!(
            findings[0].to_string(),
            "keyvault:https://v/secrets/s holds key2, not the active key1"
        );
        assert!(matches!(&findings[1], Finding::UnknownVersion { version, .. } if version == "c"));

        // All consumers agree on key1, but keyflip last moved them to key2: someone
        // put the old key back. A version written in the same second as keyflip's
        // counts by its place in the list.
        let back = ObservedConsumer {
            consumer: ConsumerRef::new("keyvault:https://v/secrets/s".parse().unwrap()),
            holding: Holding::Key(KeyName::Key1),
        };
        let mut inv = inventory(1, 2, Vec::new());
        inv.consumers = vec![back];
        let obs = Observation {
            inventory: inv,
            versions: vec![(
                "keyvault:https://v/secrets/s".into(),
                vec![version("b", 2, true), version("d", 2, false)],
            )],
        };
        let findings = assess(None, false, Some(KeyName::Key2), &obs);
        assert_eq!(findings.len(), 2, "{findings:?}");
        assert_eq!(
            findings[0].to_string(),
            "keyvault:https://v/secrets/s holds key1, not the active key2"
        );
        assert!(matches!(&findings[1], Finding::UnknownVersion { version, .. } if version == "d"));

        // Before keyflip ever wrote the secret, older versions are not drift.
        let obs = Observation {
            inventory: inventory(1, 2, Vec::new()),
            versions: vec![(
                "x".into(),
                vec![version("a", 1, false), version("c", 3, false)],
            )],
        };
        assert!(assess(None, false, None, &obs).is_empty());
    }
}
