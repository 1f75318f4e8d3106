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
    out
}

pub(super) fn check_settings(s: &Settings) -> Result<(), Failure> {
    let secs = [
        ("propagation_delay_secs", s.propagation_delay_secs),
        ("resync_duration_secs", s.resync_duration_secs),
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
    for (name, v) in secs {
        if !v.is_finite() || v < 0.0 {
            return Err((
                0..0,
                format!("settings.{name} must be a finite number >= 0, found {v}"),
            ));
        }
    }
    // Durations beyond a day overflow nothing, but no test needs them and a huge one
    // (1e308) would overflow the clock arithmetic.
    for (name, v) in [
        ("propagation_delay_secs", s.propagation_delay_secs),
        ("resync_duration_secs", s.resync_duration_secs),
    ] {
        if v > 86_400.0 {
            return Err((
                0..0,
                format!("settings.{name} must be at most 86400 (a day), found {v}"),
            ));
        }
    }
    // A burst of 0 would refuse every request; a token lifetime of 0 issues tokens
    // that are already expired.
    for (name, v) in [
        ("token_lifetime_secs", s.token_lifetime_secs),
        ("arm_write_burst", s.arm_write_burst),
        ("arm_read_burst", s.arm_read_burst),
        ("keyvault_write_burst", s.keyvault_write_burst),
        ("keyvault_read_burst", s.keyvault_read_burst),
    ] {
        if v == 0 {
            return Err((0..0, format!("settings.{name} must be at least 1, found 0")));
        }
    }
    Ok(())
}

/// Checks a settings change made at run time (same rules as the world file).
pub(crate) fn check_runtime_settings(s: &Settings) -> Result<(), String> {
    check_settings(s).map_err(|(_, m)| m)
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
