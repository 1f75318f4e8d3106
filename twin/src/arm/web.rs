//! Microsoft.Web (App Service and Functions): a site or deployment slot (GET), its
//! app settings and connection strings (`POST .../config/{appsettings|connectionstrings}/list`,
//! `PUT .../config/{appsettings|connectionstrings}`), and the app's slotConfigNames
//! (`GET`/`PUT .../config/slotConfigNames`).
//!
//! A PUT replaces the whole collection, and Azure offers no concurrency control on it:
//! the spec declares no `If-Match`, and `StringDictionary` carries no etag, so the
//! last writer wins. The twin ignores `If-Match` like the service. Every successful
//! settings PUT restarts the site or slot (counted in the state snapshot) and makes
//! it refetch its Key Vault references. Validation errors use App Service's own
//! error shape (`{"Code", "Message", "Target", "Details", "Innererror"}`).

use std::collections::BTreeMap;

use axum::http::Method;
use serde_json::{Map, Value, json};

use super::{authorize, check_group, json_body, resource_not_found, throttle};
use crate::auth::Caller;
use crate::ops::Op;
use crate::server::Shared;
use crate::state::web::{ConnString, SiteConfig, WebApp};
use crate::wire::{self, Req, Resp};
use crate::world::CONNECTION_STRING_TYPES;

const SITES: &str = "Microsoft.Web/sites";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WebAction {
    Get,
    ListAppSettings,
    PutAppSettings,
    ListConnectionStrings,
    PutConnectionStrings,
    GetSlotConfigNames,
    PutSlotConfigNames,
    /// `GET {site}/slots` (`WebApps_ListSlots`).
    ListSlots,
}

#[derive(Debug, Clone)]
pub(crate) struct WebRoute {
    pub sub: String,
    pub rg: String,
    pub site: String,
    pub slot: Option<String>,
    pub action: WebAction,
}

impl WebRoute {
    pub fn op(&self) -> Op {
        match self.action {
            WebAction::Get => Op::WebSiteGet,
            WebAction::ListAppSettings => Op::WebAppSettingsList,
            WebAction::PutAppSettings => Op::WebAppSettingsPut,
            WebAction::ListConnectionStrings => Op::WebConnectionStringsList,
            WebAction::PutConnectionStrings => Op::WebConnectionStringsPut,
            WebAction::GetSlotConfigNames => Op::WebSlotConfigNamesGet,
            WebAction::PutSlotConfigNames => Op::WebSlotConfigNamesPut,
            WebAction::ListSlots => Op::WebSlotList,
        }
    }
}

/// Routes what follows `.../providers/Microsoft.Web/sites/{site}`: `rest` as sent and
/// `low` lower-cased. `None` when the path is not one the twin serves.
pub(super) fn route(
    req: &Req,
    (sub, rg, site): (String, String, String),
    rest: &[&str],
    low: &[&str],
) -> Option<Result<WebRoute, Resp>> {
    let (slot, low) = match low {
        ["slots", _, tail @ ..] => (Some(rest[1].to_string()), tail),
        other => (None, other),
    };
    let m = &req.method;
    let action = match (low, slot.is_some()) {
        ([], _) => (*m == Method::GET).then_some(WebAction::Get),
        (["config", "appsettings", "list"], _) => {
            (*m == Method::POST).then_some(WebAction::ListAppSettings)
        }
        (["config", "appsettings"], _) => (*m == Method::PUT).then_some(WebAction::PutAppSettings),
        (["config", "connectionstrings", "list"], _) => {
            (*m == Method::POST).then_some(WebAction::ListConnectionStrings)
        }
        (["config", "connectionstrings"], _) => {
            (*m == Method::PUT).then_some(WebAction::PutConnectionStrings)
        }
        (["slots"], false) => (*m == Method::GET).then_some(WebAction::ListSlots),
        (["config", "slotconfignames"], false) => match *m {
            Method::GET => Some(WebAction::GetSlotConfigNames),
            Method::PUT => Some(WebAction::PutSlotConfigNames),
            _ => None,
        },
        _ => return None,
    };
    Some(match action {
        Some(action) => Ok(WebRoute {
            sub,
            rg,
            site,
            slot,
            action,
        }),
        None => Err(super::route::method_not_allowed(req)),
    })
}

/// App Service's own error body (observed in real responses; not the ARM envelope).
fn app_service_error(
    status: u16,
    code: &str,
    extended: &str,
    template: &str,
    params: &[&str],
) -> Resp {
    let mut message = template.to_string();
    for (i, p) in params.iter().enumerate() {
        message = message.replace(&format!("{{{i}}}"), p);
    }
    wire::json(
        status,
        &json!({
            "Code": code,
            "Message": message,
            "Target": null,
            "Details": [
                {"Message": message},
                {"Code": code},
                {"ErrorEntity": {"ExtendedCode": extended, "MessageTemplate": template, "Parameters": params, "Code": code, "Message": message}},
            ],
            "Innererror": null,
        }),
    )
}

fn invalid_parameter(name: &str) -> Resp {
    app_service_error(
        400,
        "BadRequest",
        "51008",
        "The parameter {0} has an invalid value.",
        &[name],
    )
}

pub(super) fn run(sh: &Shared, req: &Req, caller: &Caller, r: &WebRoute) -> Resp {
    let site_id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/{SITES}/{}",
        r.sub, r.rg, r.site
    );
    let (resource_id, kind) = match &r.slot {
        Some(slot) => (
            format!("{site_id}/slots/{slot}"),
            "Microsoft.Web/sites/slots",
        ),
        None => (site_id.clone(), SITES),
    };
    let (verb, write, scope) = match r.action {
        WebAction::Get => ("read", false, resource_id.clone()),
        WebAction::ListAppSettings => (
            "config/list/action",
            true,
            format!("{resource_id}/config/appsettings"),
        ),
        WebAction::PutAppSettings => (
            "config/write",
            true,
            format!("{resource_id}/config/appsettings"),
        ),
        WebAction::ListConnectionStrings => (
            "config/list/action",
            true,
            format!("{resource_id}/config/connectionstrings"),
        ),
        WebAction::PutConnectionStrings => (
            "config/write",
            true,
            format!("{resource_id}/config/connectionstrings"),
        ),
        WebAction::GetSlotConfigNames => (
            "config/read",
            false,
            format!("{site_id}/config/slotConfigNames"),
        ),
        WebAction::PutSlotConfigNames => (
            "config/write",
            true,
            format!("{site_id}/config/slotConfigNames"),
        ),
        WebAction::ListSlots => ("slots/read", false, site_id.clone()),
    };
    let now = sh.clock.now();
    let mut core = sh.core();
    if let Err(resp) = throttle(sh, &mut core, &r.sub, write, caller) {
        return resp;
    }
    if let Err(resp) = authorize(sh, caller, &format!("{kind}/{verb}"), &scope) {
        return resp;
    }
    if let Err(resp) = check_group(sh, &r.sub, &r.rg) {
        return resp;
    }
    let core = &mut *core;
    let Some(app) = core
        .web_apps
        .get_mut(&r.site.to_ascii_lowercase())
        .filter(|a| {
            a.subscription.eq_ignore_ascii_case(&r.sub) && a.group.eq_ignore_ascii_case(&r.rg)
        })
    else {
        return resource_not_found(SITES, &r.site, &r.rg);
    };
    if app.config(r.slot.as_deref()).is_none() {
        let slot = r.slot.as_deref().unwrap_or_default();
        return resource_not_found(SITES, &format!("{}/slots/{slot}", r.site), &r.rg);
    }
    let config_type = format!("{kind}/config");
    let config_id = |name: &str| format!("{}/config/{name}", app_id(app, r.slot.as_deref()));
    let dictionary = |name: &str, properties: Value| {
        json!({
            "id": config_id(name),
            "name": name,
            "type": config_type,
            "kind": app.kind,
            "properties": properties,
        })
    };
    match r.action {
        WebAction::Get => wire::json(200, &site_json(app, r.slot.as_deref())),
        WebAction::ListAppSettings => {
            let c = config_of(app, r.slot.as_deref());
            wire::json(200, &dictionary("appsettings", json!(c.app_settings)))
        }
        WebAction::ListConnectionStrings => {
            let c = config_of(app, r.slot.as_deref());
            wire::json(
                200,
                &dictionary("connectionstrings", connection_strings_json(c)),
            )
        }
        WebAction::GetSlotConfigNames => wire::json(200, &slot_config_names_json(app)),
        WebAction::ListSlots => {
            let slots: Vec<Value> = app
                .slots
                .values()
                .map(|s| site_json(app, Some(&s.name)))
                .collect();
            wire::json(200, &json!({ "value": slots }))
        }
        WebAction::PutAppSettings | WebAction::PutConnectionStrings => {
            let body = match json_body(req) {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let Some(Value::Object(props)) = body.get("properties") else {
                return invalid_parameter("properties");
            };
            let new_app = match r.action {
                WebAction::PutAppSettings => match app_settings_of(props) {
                    Ok(s) => Some(s),
                    Err(resp) => return resp,
                },
                _ => None,
            };
            let new_conn = match r.action {
                WebAction::PutConnectionStrings => match connection_strings_of(props) {
                    Ok(s) => Some(s),
                    Err(resp) => return resp,
                },
                _ => None,
            };
            let (vaults, base) = (&core.vaults, core.base_url.as_str());
            let Some(c) = app.config_mut(r.slot.as_deref()) else {
                return resource_not_found(SITES, &r.site, &r.rg);
            };
            if let Some(s) = new_app {
                c.app_settings = s;
            }
            if let Some(s) = new_conn {
                c.connection_strings = s;
            }
            // "Any configuration change to the app causes an app restart."
            c.restart(now, vaults, base);
            let (name, properties) = match r.action {
                WebAction::PutAppSettings => ("appsettings", json!(c.app_settings)),
                _ => ("connectionstrings", connection_strings_json(c)),
            };
            let app = &*app;
            let out = json!({
                "id": format!("{}/config/{name}", app_id(app, r.slot.as_deref())),
                "name": name,
                "type": format!("{kind}/config"),
                "kind": app.kind,
                "properties": properties,
            });
            wire::json(200, &out)
        }
        WebAction::PutSlotConfigNames => {
            let body = match json_body(req) {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let Some(Value::Object(props)) = body.get("properties") else {
                return invalid_parameter("properties");
            };
            let list = |field: &str| -> Result<Vec<String>, Resp> {
                match props.get(field) {
                    None | Some(Value::Null) => Ok(Vec::new()),
                    Some(Value::Array(a)) => a
                        .iter()
                        .map(|v| v.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| invalid_parameter(field)),
                    Some(_) => Err(invalid_parameter(field)),
                }
            };
            let (a, c, s) = match (
                list("appSettingNames"),
                list("connectionStringNames"),
                list("azureStorageConfigNames"),
            ) {
                (Ok(a), Ok(c), Ok(s)) => (a, c, s),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
            };
            app.slot_config_names.app_setting_names = a;
            app.slot_config_names.connection_string_names = c;
            app.slot_config_names.azure_storage_config_names = s;
            wire::json(200, &slot_config_names_json(app))
        }
    }
}

fn config_of<'a>(app: &'a WebApp, slot: Option<&str>) -> &'a SiteConfig {
    app.config(slot).unwrap_or(&app.production)
}

fn app_id(app: &WebApp, slot: Option<&str>) -> String {
    match slot.and_then(|s| app.slots.get(&s.to_ascii_lowercase())) {
        Some(s) => format!("{}/slots/{}", app.id, s.name),
        None => app.id.clone(),
    }
}

fn connection_strings_json(c: &SiteConfig) -> Value {
    let m: Map<String, Value> = c
        .connection_strings
        .iter()
        .map(|(k, v)| (k.clone(), json!({"value": v.value, "type": v.conn_type})))
        .collect();
    Value::Object(m)
}

fn slot_config_names_json(app: &WebApp) -> Value {
    let n = &app.slot_config_names;
    json!({
        "id": format!("{}/config/slotConfigNames", app.id),
        "name": "slotConfigNames",
        "type": "Microsoft.Web/sites/config",
        "properties": {
            "connectionStringNames": n.connection_string_names,
            "appSettingNames": n.app_setting_names,
            "azureStorageConfigNames": n.azure_storage_config_names,
        },
    })
}

fn app_settings_of(props: &Map<String, Value>) -> Result<BTreeMap<String, String>, Resp> {
    props
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) if !k.is_empty() => Ok((k.clone(), s.clone())),
            _ => Err(invalid_parameter(&format!("properties.{k}"))),
        })
        .collect()
}

fn connection_strings_of(props: &Map<String, Value>) -> Result<BTreeMap<String, ConnString>, Resp> {
    props
        .iter()
        .map(|(k, v)| {
            let value = v.get("value").and_then(Value::as_str);
            let ty = v.get("type").and_then(Value::as_str).and_then(|t| {
                CONNECTION_STRING_TYPES
                    .iter()
                    .find(|known| known.eq_ignore_ascii_case(t))
            });
            match (value, ty) {
                (Some(value), Some(ty)) if !k.is_empty() => Ok((
                    k.clone(),
                    ConnString {
                        value: value.to_string(),
                        conn_type: ty.to_string(),
                    },
                )),
                _ => Err(invalid_parameter(&format!("properties.{k}"))),
            }
        })
        .collect()
}

/// Azure's display name of a region, as App Service reports `location`.
pub(crate) fn display_location(location: &str) -> String {
    const NAMES: &[(&str, &str)] = &[
        ("westeurope", "West Europe"),
        ("northeurope", "North Europe"),
        ("eastus", "East US"),
        ("eastus2", "East US 2"),
        ("westus", "West US"),
        ("westus2", "West US 2"),
        ("centralus", "Central US"),
        ("uksouth", "UK South"),
        ("francecentral", "France Central"),
        ("germanywestcentral", "Germany West Central"),
        ("swedencentral", "Sweden Central"),
    ];
    NAMES
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(location))
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| location.to_string())
}

/// The Site model (`WebApps_Get` / `WebApps_GetSlot`).
pub(super) fn site_json(app: &WebApp, slot: Option<&str>) -> Value {
    let slot = slot.and_then(|s| app.slots.get(&s.to_ascii_lowercase()));
    let (name, ty, host_prefix) = match slot {
        Some(s) => (
            format!("{}/{}", app.name, s.name),
            "Microsoft.Web/sites/slots",
            format!("{}-{}", app.name, s.name).to_ascii_lowercase(),
        ),
        None => (app.name.clone(), SITES, app.name.to_ascii_lowercase()),
    };
    let config = slot.map(|s| &s.config).unwrap_or(&app.production);
    let host = format!("{host_prefix}.azurewebsites.net");
    let scm = format!("{host_prefix}.scm.azurewebsites.net");
    let linux = app.kind.split(',').any(|k| k == "linux");
    let plan = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/serverfarms/ASP-{}",
        app.subscription, app.group, app.group
    );
    let site_config = json!({
        "numberOfWorkers": 1,
        "defaultDocuments": ["Default.htm", "Default.html", "index.html", "hostingstart.html"],
        "netFrameworkVersion": "v4.0",
        "phpVersion": "",
        "pythonVersion": "",
        "nodeVersion": "",
        "powerShellVersion": "",
        "linuxFxVersion": "",
        "requestTracingEnabled": false,
        "remoteDebuggingEnabled": false,
        "httpLoggingEnabled": false,
        "acrUseManagedIdentityCreds": false,
        "logsDirectorySizeLimit": 35,
        "detailedErrorLoggingEnabled": false,
        "use32BitWorkerProcess": true,
        "webSocketsEnabled": false,
        "alwaysOn": false,
        "appCommandLine": "",
        "managedPipelineMode": "Integrated",
        "virtualApplications": [{"virtualPath": "/", "physicalPath": "site\\wwwroot", "preloadEnabled": false}],
        "loadBalancing": "LeastRequests",
        "autoHealEnabled": false,
        "vnetName": "",
        "vnetRouteAllEnabled": false,
        "vnetPrivatePortsCount": 0,
        "http20Enabled": false,
        "minTlsVersion": "1.2",
        "scmMinTlsVersion": "1.2",
        "ftpsState": "FtpsOnly",
        "functionAppScaleLimit": 0,
        "functionsRuntimeScaleMonitoringEnabled": false,
        "minimumElasticInstanceCount": 0,
        "azureStorageAccounts": {},
    });
    let mut properties = json!({
        "state": "Running",
        "hostNames": [host],
        "repositorySiteName": app.name,
        "usageState": "Normal",
        "enabled": true,
        "enabledHostNames": [host, scm],
        "availabilityState": "Normal",
        "hostNameSslStates": [
            {"name": host, "sslState": "Disabled", "hostType": "Standard"},
            {"name": scm, "sslState": "Disabled", "hostType": "Repository"},
        ],
        "serverFarmId": plan,
        "reserved": linux,
        "isXenon": false,
        "hyperV": false,
        "lastModifiedTimeUtc": config.last_modified.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "vnetRouteAllEnabled": false,
        "vnetImagePullEnabled": false,
        "vnetContentShareEnabled": false,
        "siteConfig": site_config,
        "scmSiteAlsoStopped": false,
        "clientAffinityEnabled": false,
        "clientCertEnabled": false,
        "clientCertMode": "Required",
        "hostNamesDisabled": false,
    });
    if let Some(p) = properties.as_object_mut() {
        let more = json!({
            "customDomainVerificationId": "7F3BB652450EF7AD0B6AA33064586E4A9CE823A46DF0B2EC6443A68086E84153",
            "outboundIpAddresses": "127.0.0.1",
            "possibleOutboundIpAddresses": "127.0.0.1",
            "containerSize": 1536,
            "dailyMemoryTimeQuota": 0,
            "resourceGroup": app.group,
            "defaultHostName": host,
            "httpsOnly": true,
            "redundancyMode": "None",
            "storageAccountRequired": false,
            "keyVaultReferenceIdentity": "SystemAssigned",
            "sku": app.sku,
            "managedEnvironmentId": null,
        });
        if let Value::Object(more) = more {
            p.extend(more);
        }
    }
    json!({
        "id": app_id(app, slot.map(|s| s.name.as_str())),
        "name": name,
        "type": ty,
        "kind": app.kind,
        "location": display_location(&app.location),
        "tags": {},
        "properties": properties,
    })
}
