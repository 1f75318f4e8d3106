//! Diagnostic settings on a storage account's services (Microsoft.Insights
//! `diagnosticSettings`, shaped like `DiagnosticSettingsResource` in
//! specification/monitor/resource-manager/Microsoft.Insights/preview/2021-05-01-preview/
//! diagnosticsSettings_API.json): which log categories go to which workspace.
//!
//! Validation follows Azure Monitor's documented rules: at least one destination,
//! categories the resource type has (storage services log `StorageRead`,
//! `StorageWrite`, `StorageDelete`; category groups `allLogs`, `audit`; metrics
//! `Transaction`, `Capacity`), at most five settings per resource, and one data sink
//! never receives the same category from two settings of one resource.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::{LaWorkspace, Monitor, group_categories};
use crate::state::StorageAccount;
use crate::world::DiagnosticSettingSpec;

const METRIC_CATEGORIES: &[&str] = &["Transaction", "Capacity"];
const LOG_CATEGORIES: &[&str] = &["StorageRead", "StorageWrite", "StorageDelete"];
const MAX_PER_RESOURCE: usize = 5;

/// One diagnostic setting.
#[derive(Debug, Clone)]
pub(crate) struct Setting {
    pub account: String,
    /// `blob`, `file`, `queue` or `table`.
    pub service: String,
    pub name: String,
    /// The workspace (lower-case name) its `workspaceId` names, if the twin has it.
    pub workspace: Option<String>,
    /// The enabled log categories, groups expanded.
    pub categories: BTreeSet<String>,
    /// `properties` as returned on GET.
    pub properties: Map<String, Value>,
}

/// A refused PUT: status, code, message (Insights' flat error body).
pub(crate) type Refusal = (u16, &'static str, String);

/// The ARM id of a storage service (`.../storageAccounts/{a}/blobServices/default`).
pub(crate) fn service_id(account: &StorageAccount, service: &str) -> String {
    format!("{}/{service}Services/default", account.id)
}

impl Setting {
    pub fn sends(&self, category: &str) -> bool {
        self.categories.contains(category)
    }

    /// The `DiagnosticSettingsResource` of this setting. Its id spells the provider
    /// in lower case, as Azure's answers (and the spec's examples) do.
    pub fn to_json(&self, account: &StorageAccount) -> Value {
        json!({
            "id": format!("{}/providers/microsoft.insights/diagnosticSettings/{}", service_id(account, &self.service), self.name),
            "type": "Microsoft.Insights/diagnosticSettings",
            "name": self.name,
            "properties": self.properties,
        })
    }

    pub fn from_world(
        d: &DiagnosticSettingSpec,
        account: &StorageAccount,
        ws: &LaWorkspace,
    ) -> Self {
        let mut logs: Vec<Value> = d
            .categories
            .iter()
            .map(|c| json!({"category": c.get_ref(), "categoryGroup": null, "enabled": true, "retentionPolicy": {"enabled": false, "days": 0}}))
            .collect();
        logs.extend(d.category_groups.iter().map(|g| {
            json!({"category": null, "categoryGroup": g.get_ref(), "enabled": true, "retentionPolicy": {"enabled": false, "days": 0}})
        }));
        let mut categories: BTreeSet<String> =
            d.categories.iter().map(|c| c.get_ref().clone()).collect();
        for g in &d.category_groups {
            if let Some(cats) = group_categories(g.get_ref()) {
                categories.extend(cats.iter().map(|c| c.to_string()));
            }
        }
        let mut properties = Map::new();
        properties.insert("workspaceId".into(), json!(ws.id));
        properties.insert("logs".into(), Value::Array(logs));
        properties.insert("metrics".into(), json!([]));
        Setting {
            account: account.name.clone(),
            service: d.service.get_ref().clone(),
            name: d.name.get_ref().clone(),
            workspace: Some(ws.name.to_ascii_lowercase()),
            categories,
            properties,
        }
    }

    /// Checks a PUT body against Azure Monitor's rules and the other settings of the
    /// same resource (`others`, without the one being replaced).
    pub fn from_put(
        monitor: &Monitor,
        account: &StorageAccount,
        service: &str,
        name: &str,
        body: &Map<String, Value>,
        others: &[&Setting],
    ) -> Result<Setting, Refusal> {
        let bad = |m: String| -> Refusal { (400, "BadRequest", m) };
        let props = match body.get("properties") {
            Some(Value::Object(p)) => p.clone(),
            _ => {
                return Err(bad(
                    "The request body needs a 'properties' object with the setting's destinations and categories.".into(),
                ));
            }
        };
        let text = |k: &str| -> Result<Option<String>, Refusal> {
            match props.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(bad(format!("The property '{k}' must be a string."))),
            }
        };
        let workspace_id = text("workspaceId")?;
        let destinations = [
            workspace_id.clone(),
            text("storageAccountId")?,
            text("eventHubAuthorizationRuleId")?,
            text("marketplacePartnerId")?,
            text("serviceBusRuleId")?,
        ];
        if destinations.iter().all(Option::is_none) {
            return Err(bad(
                "A diagnostic setting needs at least one destination: workspaceId, storageAccountId, eventHubAuthorizationRuleId or marketplacePartnerId.".into(),
            ));
        }
        let workspace = match &workspace_id {
            Some(id) => match monitor.workspace_by_arm_id(id) {
                Some(ws) => Some(ws.name.to_ascii_lowercase()),
                None => {
                    return Err(bad(format!(
                        "The Log Analytics workspace '{id}' was not found."
                    )));
                }
            },
            None => None,
        };
        let mut categories = BTreeSet::new();
        let mut logs = Vec::new();
        for item in array(&props, "logs").map_err(bad)? {
            let (cat, group, enabled, retention) = log_item(item).map_err(bad)?;
            match (&cat, &group) {
                (Some(c), None) if LOG_CATEGORIES.contains(&c.as_str()) => {
                    if enabled {
                        categories.insert(c.clone());
                    }
                }
                (None, Some(g)) if group_categories(g).is_some() => {
                    if enabled {
                        categories.extend(
                            group_categories(g)
                                .unwrap_or_default()
                                .iter()
                                .map(|c| c.to_string()),
                        );
                    }
                }
                (Some(c), None) | (None, Some(c)) => {
                    return Err(bad(format!("Category '{c}' is not supported.")));
                }
                _ => {
                    return Err(bad(
                        "Each log setting names exactly one of 'category' and 'categoryGroup'."
                            .into(),
                    ));
                }
            }
            logs.push(json!({"category": cat, "categoryGroup": group, "enabled": enabled, "retentionPolicy": retention}));
        }
        let mut metrics = Vec::new();
        for item in array(&props, "metrics").map_err(bad)? {
            let Value::Object(m) = item else {
                return Err(bad("Each metric setting must be an object.".into()));
            };
            let cat = m.get("category").and_then(Value::as_str).unwrap_or("");
            if !METRIC_CATEGORIES.contains(&cat) {
                return Err(bad(format!("Category '{cat}' is not supported.")));
            }
            let enabled = m
                .get("enabled")
                .and_then(Value::as_bool)
                .ok_or_else(|| bad("Each metric setting needs 'enabled' (a boolean).".into()))?;
            let mut out = json!({"category": cat, "enabled": enabled, "retentionPolicy": retention_of(m.get("retentionPolicy")).map_err(bad)?});
            if let (Some(tg), Some(o)) = (m.get("timeGrain"), out.as_object_mut()) {
                o.insert("timeGrain".into(), tg.clone());
            }
            metrics.push(out);
        }
        if others.len() >= MAX_PER_RESOURCE {
            return Err(bad(format!(
                "The resource already has {MAX_PER_RESOURCE} diagnostic settings, the most Azure allows."
            )));
        }
        if let Some(ws) = &workspace {
            for other in others {
                if other.workspace.as_ref() == Some(ws)
                    && let Some(c) = other.categories.intersection(&categories).next()
                {
                    // 409 Conflict, as Azure answers (Azure/bicep-registry-modules#3407).
                    return Err((
                        409,
                        "Conflict",
                        format!(
                            "Data sink '{}' is already used in diagnostic setting '{}' for category '{c}'. Data sinks can't be reused in different settings on the same category for the same resource.",
                            workspace_id.clone().unwrap_or_default(),
                            other.name
                        ),
                    ));
                }
            }
        }
        let mut properties = Map::new();
        for k in [
            "storageAccountId",
            "serviceBusRuleId",
            "eventHubAuthorizationRuleId",
            "eventHubName",
            "workspaceId",
            "marketplacePartnerId",
            "logAnalyticsDestinationType",
        ] {
            if let Some(v) = props.get(k)
                && !v.is_null()
            {
                properties.insert(k.into(), v.clone());
            }
        }
        properties.insert("logs".into(), Value::Array(logs));
        properties.insert("metrics".into(), Value::Array(metrics));
        Ok(Setting {
            account: account.name.clone(),
            service: service.to_string(),
            name: name.to_string(),
            workspace,
            categories,
            properties,
        })
    }
}

fn array<'a>(props: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], String> {
    match props.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(format!("The property '{key}' must be an array.")),
    }
}

type LogItem = (Option<String>, Option<String>, bool, Value);

fn log_item(item: &Value) -> Result<LogItem, String> {
    let Value::Object(m) = item else {
        return Err("Each log setting must be an object.".into());
    };
    let s = |k: &str| -> Result<Option<String>, String> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(v)) if v.is_empty() => Ok(None),
            Some(Value::String(v)) => Ok(Some(v.clone())),
            Some(_) => Err(format!("The property 'logs[].{k}' must be a string.")),
        }
    };
    let enabled = m
        .get("enabled")
        .and_then(Value::as_bool)
        .ok_or("Each log setting needs 'enabled' (a boolean).")?;
    Ok((
        s("category")?,
        s("categoryGroup")?,
        enabled,
        retention_of(m.get("retentionPolicy"))?,
    ))
}

fn retention_of(v: Option<&Value>) -> Result<Value, String> {
    match v {
        None | Some(Value::Null) => Ok(json!({"enabled": false, "days": 0})),
        Some(Value::Object(r)) => {
            let enabled = r.get("enabled").and_then(Value::as_bool);
            let days = r.get("days").and_then(Value::as_u64);
            match (enabled, days) {
                (Some(e), Some(d)) if d <= 365 => Ok(json!({"enabled": e, "days": d})),
                _ => {
                    Err("retentionPolicy needs 'enabled' (a boolean) and 'days' (0 to 365).".into())
                }
            }
        }
        Some(_) => Err("retentionPolicy must be an object.".into()),
    }
}
