//! Microsoft.Authorization: `permissions` at any scope (what the caller may do there:
//! one entry per distinct role that applies, the union deciding) and role
//! definitions by id. Both are open to every authenticated caller, as in Azure.

use serde_json::{Value, json};

use super::{check_group, error, throttle};
use crate::auth::Caller;
use crate::rbac::scope_key;
use crate::server::Shared;
use crate::wire::{self, Req, Resp};

pub(super) fn permissions(sh: &Shared, _req: &Req, caller: &Caller, scope: &str) -> Resp {
    let key = scope_key(scope);
    let parts: Vec<&str> = key.split('/').filter(|s| !s.is_empty()).collect();
    let sub = match parts.as_slice() {
        ["subscriptions", sub, ..] => Some(*sub),
        _ => None,
    };
    if let Some(sub) = sub {
        let mut core = sh.core();
        if let Err(r) = throttle(sh, &mut core, sub, false, caller) {
            return r;
        }
        drop(core);
        if sh.topology.subscription(sub).is_none() {
            return error(
                404,
                "SubscriptionNotFound",
                &format!("The subscription '{sub}' could not be found."),
            );
        }
        if let ["subscriptions", _, "resourcegroups", rg, ..] = parts.as_slice() {
            // Report the group name as sent.
            let sent = scope
                .split('/')
                .filter(|s| !s.is_empty())
                .nth(3)
                .unwrap_or(rg);
            if let Err(r) = check_group(sh, sub, sent) {
                return r;
            }
        }
    }
    let value: Vec<Value> = sh
        .rbac
        .effective_roles(&caller.object_id, &key)
        .iter()
        .map(|r| r.permission_json())
        .collect();
    wire::json(200, &json!({"value": value, "nextLink": null}))
}

pub(super) fn role_definition(sh: &Shared, scope: &str, id: &str) -> Resp {
    match sh.rbac.role_by_id(id) {
        Some(role) => wire::json(200, &role.definition_json(scope.trim_end_matches('/'))),
        None => error(
            404,
            "RoleDefinitionDoesNotExist",
            &format!("The specified role definition with ID '{id}' does not exist."),
        ),
    }
}
