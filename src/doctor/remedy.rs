//! What to paste to fix missing permissions: one `az role assignment create` per
//! built-in role and scope, for the identity doctor ran as, and where the narrowest
//! built-in role is broader than keyflip needs (it can delete the resource it is
//! assigned at: `Contributor` for an ML workspace's `listKeys`), a custom role with
//! exactly the missing actions instead, as the JSON `az role definition create`
//! takes.
//!
//! Custom roles are assignable at resource groups (and above), not at one resource,
//! so the role's `AssignableScopes` is the resource's group and the assignment is made
//! at the resource itself.

use serde_json::{Value, json};

use super::report::{Facts, MissingAction, PlanReport, Resource};
use crate::azure::Principal;
use crate::azure::roles::{Action, BUILTIN_ROLES, BuiltinRole};

/// The action that deletes the resource an ARM id names
/// (`Microsoft.MachineLearningServices/workspaces/delete`); `None` for other text.
fn delete_action(scope: &str) -> Option<String> {
    let at = scope.rfind("/providers/")?;
    let parts: Vec<&str> = scope[at + "/providers/".len()..].split('/').collect();
    // The namespace, then type/name pairs: the types make the action.
    let (namespace, rest) = parts.split_first()?;
    let types: Vec<&str> = rest.iter().step_by(2).copied().collect();
    (!types.is_empty()).then(|| format!("{namespace}/{}/delete", types.join("/")))
}

/// Whether `role`, assigned at `scope`, could delete what it names: broader than a
/// key rotator should hold.
pub fn is_broad(role: &BuiltinRole, scope: &str) -> bool {
    delete_action(scope).is_some_and(|a| role.grants(&Action::Control(std::borrow::Cow::Owned(a))))
}

/// `--assignee-object-id … --assignee-principal-type …` when the object id is known
/// (no Microsoft Graph lookup needed), else `--assignee <app id>`.
pub fn assignee(identity: Option<&Principal>) -> String {
    match identity {
        Some(Principal {
            object_id: Some(oid),
            principal_type,
            ..
        }) => format!(
            "--assignee-object-id {oid} --assignee-principal-type {}",
            principal_type.as_deref().unwrap_or("ServicePrincipal")
        ),
        Some(Principal {
            app_id: Some(app), ..
        }) => format!("--assignee {app}"),
        _ => "--assignee <keyflip's app or object id>".to_owned(),
    }
}

/// The resource group part of an ARM id, when there is one.
fn resource_group(scope: &str) -> Option<&str> {
    let lower = scope.to_ascii_lowercase();
    let at = lower.find("/resourcegroups/")?;
    let rest = &scope[at + "/resourcegroups/".len()..];
    let end = rest
        .find('/')
        .map_or(scope.len(), |e| at + "/resourcegroups/".len() + e);
    Some(&scope[..end])
}

/// The custom role's name: stable, so pasting twice updates rather than duplicates.
pub fn custom_role_name(resource: Resource) -> String {
    format!("keyflip {} key rotation", resource.label)
}

/// The file name the instructions write the custom role to.
pub fn custom_role_file(resource: Resource) -> String {
    format!("keyflip-{}.json", resource.name.replace('_', "-"))
}

/// The commands (and custom role) for one permissions check.
pub fn remedy(
    scope: &str,
    resource: Resource,
    missing: &[MissingAction],
    identity: Option<&Principal>,
) -> (Vec<String>, Option<Value>) {
    let who = assignee(identity);
    let mut commands = Vec::new();
    let mut narrow: Vec<&str> = Vec::new();
    let mut custom: Vec<&MissingAction> = Vec::new();
    for m in missing {
        let role = m
            .role_id
            .as_deref()
            .and_then(|id| BUILTIN_ROLES.iter().find(|r| r.id == id));
        match role {
            Some(r) if is_broad(r, scope) => custom.push(m),
            Some(r) if !narrow.contains(&r.id) => narrow.push(r.id),
            _ => {}
        }
    }
    for id in narrow {
        commands.push(format!(
            "az role assignment create {who} --role {id} --scope {scope}"
        ));
    }
    if custom.is_empty() {
        return (commands, None);
    }
    let name = custom_role_name(resource);
    let (data, control): (Vec<&MissingAction>, Vec<&MissingAction>) =
        custom.iter().partition(|m| m.data_action);
    let role = json!({
        "Name": name,
        "IsCustom": true,
        "Description": "Storage key rotation by keyflip",
        "Actions": control.iter().map(|m| m.action.as_str()).collect::<Vec<_>>(),
        "NotActions": [],
        "DataActions": data.iter().map(|m| m.action.as_str()).collect::<Vec<_>>(),
        "NotDataActions": [],
        "AssignableScopes": [resource_group(scope).unwrap_or(scope)],
    });
    let file = custom_role_file(resource);
    commands.push(format!(
        "az role definition create --role-definition @{file}"
    ));
    commands.push(format!(
        "az role assignment create {who} --role \"{name}\" --scope {scope}"
    ));
    (commands, Some(role))
}

/// Fills in every permissions check's commands and custom role.
pub fn fill(plans: &mut [PlanReport], identity: Option<&Principal>) {
    for plan in plans {
        for check in &mut plan.checks {
            if let Facts::Permissions {
                scope,
                resource,
                missing: Some(missing),
                commands,
                custom_role,
                ..
            } = &mut check.facts
            {
                let (c, role) = remedy(scope, *resource, missing, identity);
                *commands = c;
                *custom_role = role;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing(action: &str, role: &str) -> MissingAction {
        let r = BUILTIN_ROLES.iter().find(|r| r.name == role).unwrap();
        MissingAction {
            action: action.to_owned(),
            data_action: action.contains("/secrets/"),
            role: Some(r.name.to_owned()),
            role_id: Some(r.id.to_owned()),
        }
    }

    const WS: &str = "/subscriptions/s/resourceGroups/rg-ds/providers/Microsoft.MachineLearningServices/workspaces/mlw";

    #[test]
    fn narrow_roles_are_assigned_and_broad_ones_become_a_custom_role() {
        let id = Principal {
            object_id: Some("oid-1".into()),
            principal_type: Some("ServicePrincipal".into()),
            ..Principal::default()
        };
        let (commands, role) = remedy(
            WS,
            crate::consumer::workspace::RESOURCE,
            &[
                missing(
                    "Microsoft.MachineLearningServices/workspaces/listKeys/action",
                    "Contributor",
                ),
                missing(
                    "Microsoft.MachineLearningServices/workspaces/datastores/write",
                    "AzureML Data Scientist",
                ),
            ],
            Some(&id),
        );
        assert_eq!(
            commands[0],
            format!(
                "az role assignment create --assignee-object-id oid-1 --assignee-principal-type ServicePrincipal --role f6c7c914-8db3-469d-8ca1-694a8f32e121 --scope {WS}"
            )
        );
        assert_eq!(
            commands[1],
            "az role definition create --role-definition @keyflip-ml-workspace.json"
        );
        assert!(
            commands[2].contains("--role \"keyflip ML workspace key rotation\""),
            "{commands:?}"
        );
        let role = role.expect("Contributor is broader than listKeys");
        assert_eq!(
            role["Actions"],
            json!(["Microsoft.MachineLearningServices/workspaces/listKeys/action"])
        );
        assert_eq!(
            role["AssignableScopes"],
            json!(["/subscriptions/s/resourceGroups/rg-ds"])
        );
        let contributor = BUILTIN_ROLES
            .iter()
            .find(|r| r.name == "Contributor")
            .unwrap();
        let operator = BUILTIN_ROLES
            .iter()
            .find(|r| r.name == "Storage Account Key Operator Service Role")
            .unwrap();
        assert!(is_broad(contributor, WS) && !is_broad(operator, WS));
        let account =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st";
        assert_eq!(
            delete_action(account).as_deref(),
            Some("Microsoft.Storage/storageAccounts/delete")
        );
        assert_eq!(assignee(None), "--assignee <keyflip's app or object id>");
    }
}
