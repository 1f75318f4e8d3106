//! Microsoft.Insights diagnostic settings on a storage account's services, over ARM:
//! `GET/PUT/DELETE {service}/providers/Microsoft.Insights/diagnosticSettings/{name}`
//! and the list, where `{service}` is
//! `.../storageAccounts/{a}/{blob|file|queue|table}Services/default`.
//!
//! ARM's front door (token, api-version, throttling, `AuthorizationFailed`) answers
//! as for every ARM call; the RBAC actions are Azure's
//! `Microsoft.Insights/diagnosticSettings/read|write|delete` at the service's scope
//! (an assignment on the account or above covers it). The resource provider's own
//! errors use the spec's flat `ErrorResponse`, `{"code", "message"}`: 404
//! `ResourceNotFound` "The diagnostic setting '{name}' doesn't exist." (as Azure
//! answers), 400 `BadRequest` for a setting Azure Monitor would refuse
//! (`monitor::diagnostics`).

use axum::http::Method;
use serde_json::{Value, json};

use super::{authorize, check_group, json_body, resource_not_found, throttle};
use crate::auth::Caller;
use crate::monitor::diagnostics::Setting;
use crate::ops::Op;
use crate::server::Shared;
use crate::wire::{self, Req, Resp};

const TYPE: &str = "Microsoft.Storage/storageAccounts";

#[derive(Debug, Clone)]
pub(crate) enum Action {
    List,
    Get(String),
    Put(String),
    Delete(String),
}

#[derive(Debug, Clone)]
pub(crate) struct DiagRoute {
    pub sub: String,
    pub rg: String,
    pub account: String,
    /// `blob`, `file`, `queue` or `table`.
    pub service: String,
    pub action: Action,
}

impl DiagRoute {
    pub fn op(&self) -> Op {
        match self.action {
            Action::List => Op::DiagnosticSettingsList,
            Action::Get(_) => Op::DiagnosticSettingsGet,
            Action::Put(_) => Op::DiagnosticSettingsPut,
            Action::Delete(_) => Op::DiagnosticSettingsDelete,
        }
    }
}

/// Recognises a diagnostic-settings path (`l`: lower-case segments, `segs`: as
/// sent). `None` when the path is something else.
pub(crate) fn parse(l: &[&str], segs: &[&str], method: &Method) -> Option<Result<DiagRoute, ()>> {
    let [
        "subscriptions",
        _,
        "resourcegroups",
        _,
        "providers",
        "microsoft.storage",
        "storageaccounts",
        _,
        svc,
        "default",
        "providers",
        "microsoft.insights",
        "diagnosticsettings",
        rest @ ..,
    ] = l
    else {
        return None;
    };
    let service = match *svc {
        "blobservices" => "blob",
        "fileservices" => "file",
        "queueservices" => "queue",
        "tableservices" => "table",
        _ => return None,
    };
    let action = match (rest, method) {
        ([], &Method::GET) => Action::List,
        ([_], &Method::GET) => Action::Get(segs[13].to_string()),
        ([_], &Method::PUT) => Action::Put(segs[13].to_string()),
        ([_], &Method::DELETE) => Action::Delete(segs[13].to_string()),
        ([] | [_], _) => return Some(Err(())),
        _ => return None,
    };
    Some(Ok(DiagRoute {
        sub: segs[1].to_string(),
        rg: segs[3].to_string(),
        account: segs[7].to_string(),
        service: service.to_string(),
        action,
    }))
}

/// The Insights resource provider's flat error body.
fn insights_error(status: u16, code: &str, message: &str) -> Resp {
    wire::json(status, &json!({"code": code, "message": message}))
}

pub(crate) fn run(sh: &Shared, req: &Req, caller: &Caller, r: &DiagRoute) -> Resp {
    let (verb, write) = match r.action {
        Action::List | Action::Get(_) => ("read", false),
        Action::Put(_) => ("write", true),
        Action::Delete(_) => ("delete", true),
    };
    let account_scope = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/{TYPE}/{}",
        r.sub, r.rg, r.account
    );
    let scope = format!("{account_scope}/{}Services/default", r.service);
    let mut core = sh.core();
    if let Err(e) = throttle(sh, &mut core, &r.sub, write, caller) {
        return e;
    }
    if let Err(e) = authorize(
        sh,
        caller,
        &format!("Microsoft.Insights/diagnosticSettings/{verb}"),
        &scope,
    ) {
        return e;
    }
    if let Err(e) = check_group(sh, &r.sub, &r.rg) {
        return e;
    }
    let found = core.accounts.get(&r.account).filter(|a| {
        a.subscription.eq_ignore_ascii_case(&r.sub) && a.group.eq_ignore_ascii_case(&r.rg)
    });
    let Some(account) = found.cloned() else {
        return resource_not_found(TYPE, &r.account, &r.rg);
    };
    let here = |s: &&Setting| s.account == account.name && s.service == r.service;
    let missing = |name: &str| {
        insights_error(
            404,
            "ResourceNotFound",
            &format!("The diagnostic setting '{name}' doesn't exist."),
        )
    };
    match &r.action {
        Action::List => {
            let value: Vec<Value> = core
                .monitor
                .settings
                .iter()
                .filter(here)
                .map(|s| s.to_json(&account))
                .collect();
            wire::json(200, &json!({"value": value}))
        }
        Action::Get(name) => match core
            .monitor
            .settings
            .iter()
            .filter(here)
            .find(|s| s.name.eq_ignore_ascii_case(name))
        {
            Some(s) => wire::json(200, &s.to_json(&account)),
            None => missing(name),
        },
        Action::Delete(name) => {
            let before = core.monitor.settings.len();
            core.monitor.settings.retain(|s| {
                !(s.account == account.name
                    && s.service == r.service
                    && s.name.eq_ignore_ascii_case(name))
            });
            wire::empty(if core.monitor.settings.len() < before {
                200
            } else {
                204
            })
        }
        Action::Put(name) => {
            let body = match json_body(req) {
                Ok(b) => b,
                Err(e) => return e,
            };
            let others: Vec<&Setting> = core
                .monitor
                .settings
                .iter()
                .filter(here)
                .filter(|s| !s.name.eq_ignore_ascii_case(name))
                .collect();
            let setting = match Setting::from_put(
                &core.monitor,
                &account,
                &r.service,
                name,
                &body,
                &others,
            ) {
                Ok(s) => s,
                Err((status, code, message)) => return insights_error(status, code, &message),
            };
            let out = setting.to_json(&account);
            match core.monitor.settings.iter_mut().find(|s| {
                s.account == account.name
                    && s.service == r.service
                    && s.name.eq_ignore_ascii_case(name)
            }) {
                // An update keeps the name as first written.
                Some(old) => {
                    let keep = old.name.clone();
                    *old = Setting {
                        name: keep,
                        ..setting
                    };
                    wire::json(200, &old.to_json(&account))
                }
                None => {
                    core.monitor.settings.push(setting);
                    wire::json(200, &out)
                }
            }
        }
    }
}
