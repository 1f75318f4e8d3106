//! Checks of single values in a world file (GUIDs, names, keys, settings) and the
//! set of scopes a role assignment may name. Each failure carries the span of the
//! value at fault.

use std::collections::HashSet;
use std::ops::Range;

use toml::Spanned;

use super::{Settings, World};
use crate::rbac::scope_key;

pub(super) type Failure = (Range<usize>, String);

pub(super) fn fail<T>(at: &Spanned<String>, message: String) -> Result<T, Failure> {
    Err((at.span(), message))
}

/// The scope keys (see [`scope_key`]) of everything in the world that can hold a
/// role assignment.
pub(super) fn world_scopes(w: &World) -> HashSet<String> {
    let mut out = HashSet::new();
    let sub_of = |rg: &str| -> String {
        w.resource_groups
            .iter()
            .find(|g| g.name.get_ref().eq_ignore_ascii_case(rg))
            .and_then(|g| g.subscription.as_ref().map(|s| s.get_ref().clone()))
            .or_else(|| w.subscriptions.first().map(|s| s.id.get_ref().clone()))
            .unwrap_or_default()
    };
    for s in &w.subscriptions {
        out.insert(scope_key(&format!("/subscriptions/{}", s.id.get_ref())));
    }
    for g in &w.resource_groups {
        let sub = sub_of(g.name.get_ref());
        out.insert(scope_key(&format!(
            "/subscriptions/{sub}/resourceGroups/{}",
            g.name.get_ref()
        )));
    }
    let mut add = |rg: &str, ty: &str, name: &str| {
        let sub = sub_of(rg);
        out.insert(scope_key(&format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/{ty}/{name}"
        )));
    };
    for a in &w.storage_accounts {
        add(
            a.resource_group.get_ref(),
            "Microsoft.Storage/storageAccounts",
            a.name.get_ref(),
        );
    }
    for v in &w.key_vaults {
        add(
            v.resource_group.get_ref(),
            "Microsoft.KeyVault/vaults",
            v.name.get_ref(),
        );
    }
    for m in &w.ml_workspaces {
        add(
            m.resource_group.get_ref(),
            "Microsoft.MachineLearningServices/workspaces",
            m.name.get_ref(),
        );
    }
    for d in &w.databricks_workspaces {
        add(
            d.resource_group.get_ref(),
            "Microsoft.Databricks/workspaces",
            d.name.get_ref(),
        );
    }
    for s in &w.web_apps {
        add(
            s.resource_group.get_ref(),
            "Microsoft.Web/sites",
            s.name.get_ref(),
        );
        for slot in &s.slots {
            let site_and_slot = format!("{}/slots/{}", s.name.get_ref(), slot.name.get_ref());
            add(
                s.resource_group.get_ref(),
                "Microsoft.Web/sites",
                &site_and_slot,
            );
        }
    }
    for f in &w.data_factories {
        add(
            f.resource_group.get_ref(),
            "Microsoft.DataFactory/factories",
            f.name.get_ref(),
        );
    }
    for l in &w.log_analytics_workspaces {
        add(
            l.resource_group.get_ref(),
            "Microsoft.OperationalInsights/workspaces",
            l.name.get_ref(),
        );
    }
    out
}

/// The longest delay a setting may ask for: a week. Azure's own delays are seconds to
/// minutes; anything longer is a typo (and 1e308 seconds would overflow the clock).
pub(super) const MAX_DELAY_SECS: f64 = 7.0 * 24.0 * 3600.0;
/// The highest refill rate and burst: far above any Azure limit, low enough for
/// the bucket arithmetic to stay exact.
const MAX_RATE: f64 = 1.0e9;
const MAX_BURST: u32 = 1_000_000_000;
/// Entra issues access tokens for at most a day.
const MAX_TOKEN_LIFETIME_SECS: u32 = 86_400;
const MAX_RETRY_AFTER_SECS: u32 = 3_600;

/// A settings value that cannot be used: the field (its TOML key under
/// `[settings]`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SettingsError {
    pub field: &'static str,
    pub message: String,
}

pub(crate) fn check_settings(s: &Settings) -> Result<(), SettingsError> {
    let err = |field: &'static str, message: String| Err(SettingsError { field, message });
    let delays = [
        ("propagation_delay_secs", s.propagation_delay_secs),
        ("resync_duration_secs", s.resync_duration_secs),
        ("log_ingestion_delay_secs", s.log_ingestion_delay_secs),
    ];
    for (name, v) in delays {
        if !v.is_finite() || !(0.0..=MAX_DELAY_SECS).contains(&v) {
            return err(
                name,
                format!(
                    "settings.{name} must be a number of seconds from 0 to {MAX_DELAY_SECS} (a week), found {v}"
                ),
            );
        }
    }
    let rates = [
        ("arm_write_refill_per_sec", s.arm_write_refill_per_sec),
        ("arm_read_refill_per_sec", s.arm_read_refill_per_sec),
        (
            "keyvault_write_refill_per_sec",
            s.keyvault_write_refill_per_sec,
        ),
        (
            "keyvault_read_refill_per_sec",
            s.keyvault_read_refill_per_sec,
        ),
    ];
    for (name, v) in rates {
        if !v.is_finite() || !(0.0..=MAX_RATE).contains(&v) {
            return err(
                name,
                format!(
                    "settings.{name} must be a rate from 0 to {MAX_RATE} tokens per second, found {v}"
                ),
            );
        }
    }
    let bursts = [
        ("arm_write_burst", s.arm_write_burst),
        ("arm_read_burst", s.arm_read_burst),
        ("keyvault_write_burst", s.keyvault_write_burst),
        ("keyvault_read_burst", s.keyvault_read_burst),
    ];
    for (name, v) in bursts {
        if !(1..=MAX_BURST).contains(&v) {
            return err(
                name,
                format!(
                    "settings.{name} must be from 1 to {MAX_BURST} requests (a bucket of 0 would refuse every request), found {v}"
                ),
            );
        }
    }
    if !(1..=MAX_TOKEN_LIFETIME_SECS).contains(&s.token_lifetime_secs) {
        return err(
            "token_lifetime_secs",
            format!(
                "settings.token_lifetime_secs must be from 1 to {MAX_TOKEN_LIFETIME_SECS} seconds (Entra issues tokens for at most a day; 0 would issue tokens that are already expired), found {}",
                s.token_lifetime_secs
            ),
        );
    }
    if s.lro_retry_after_secs > MAX_RETRY_AFTER_SECS {
        return err(
            "lro_retry_after_secs",
            format!(
                "settings.lro_retry_after_secs must be from 0 to {MAX_RETRY_AFTER_SECS} seconds, found {}",
                s.lro_retry_after_secs
            ),
        );
    }
    Ok(())
}

/// Checks a settings change made at run time (same rules as the world file).
pub(crate) fn check_runtime_settings(s: &Settings) -> Result<(), String> {
    check_settings(s).map_err(|e| e.message)
}

/// The SKUs of Microsoft.Storage's `SkuName` (storage 2025-06-01 adds the V2 ones).
pub(super) const STORAGE_SKUS: &[&str] = &[
    "Standard_LRS",
    "Standard_GRS",
    "Standard_RAGRS",
    "Standard_ZRS",
    "Premium_LRS",
    "Premium_ZRS",
    "Standard_GZRS",
    "Standard_RAGZRS",
    "StandardV2_LRS",
    "StandardV2_GRS",
    "StandardV2_ZRS",
    "StandardV2_GZRS",
    "PremiumV2_LRS",
    "PremiumV2_ZRS",
];

/// The values of Microsoft.Storage's `Kind`.
pub(super) const STORAGE_KINDS: &[&str] = &[
    "Storage",
    "StorageV2",
    "BlobStorage",
    "FileStorage",
    "BlockBlobStorage",
];

/// Refuses a value that is not one of `allowed` (exact spelling, as Azure returns it).
pub(super) fn check_one_of(
    v: &Spanned<String>,
    what: &str,
    allowed: &[&str],
) -> Result<(), Failure> {
    if allowed.contains(&v.get_ref().as_str()) {
        return Ok(());
    }
    fail(
        v,
        format!(
            "{what} {:?} is not one Azure knows; expected one of {}",
            v.get_ref(),
            allowed.join(", ")
        ),
    )
}

pub(super) fn check_guid(v: &Spanned<String>, what: &str) -> Result<(), Failure> {
    if uuid::Uuid::parse_str(v.get_ref()).is_ok() && v.get_ref().len() == 36 {
        Ok(())
    } else {
        fail(
            v,
            format!(
                "{what} must be a GUID such as 7f3c1a2e-4b5d-4c6e-8f90-1a2b3c4d5e6f, found {:?}",
                v.get_ref()
            ),
        )
    }
}

pub(super) fn check_name(
    v: &Spanned<String>,
    what: &str,
    min: usize,
    max: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<(), Failure> {
    let n = v.get_ref();
    let len = n.chars().count();
    if len < min || len > max || !n.chars().all(allowed) {
        return fail(
            v,
            format!(
                "{what} name {n:?} is not valid: Azure allows {min} to {max} characters of a restricted set"
            ),
        );
    }
    Ok(())
}

pub(super) fn check_base64(v: &Spanned<String>) -> Result<(), Failure> {
    use base64::Engine as _;
    match base64::engine::general_purpose::STANDARD.decode(v.get_ref()) {
        Ok(bytes) if !bytes.is_empty() => Ok(()),
        _ => fail(
            v,
            "a storage key must be base64 (Azure keys are 64 random bytes, 88 characters)".into(),
        ),
    }
}

pub(super) fn check_one_value(
    at: &Spanned<String>,
    has_value: bool,
    from: Option<&Spanned<String>>,
) -> Result<(), Failure> {
    match (has_value, from) {
        (true, None) | (false, Some(_)) => Ok(()),
        _ => fail(
            at,
            format!(
                "{} needs exactly one of `value` and `value_from`",
                at.get_ref()
            ),
        ),
    }
}
