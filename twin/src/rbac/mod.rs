//! Azure RBAC as the twin enforces it: role definitions (the built-ins keyflip meets
//! plus the world's custom roles), role assignments at scopes, and the allow decision.
//!
//! The rules are Azure's: an assignment at a scope covers that scope and everything
//! below it; a role allows an action when one of its `actions` patterns matches and
//! none of its `notActions` does (the same for data actions); patterns use `*` as a
//! wildcard and match case-insensitively; the union of a principal's roles decides.
//! There are no deny assignments, groups or conditions.

pub(crate) mod builtin;

use std::collections::HashMap;

use serde_json::{Value, json};

/// A normalised scope for comparisons: lower case, no empty segments, no trailing
/// slash (`/subscriptions/x/resourcegroups/y`).
pub(crate) fn scope_key(scope: &str) -> String {
    let mut out = String::with_capacity(scope.len());
    for seg in scope.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.extend(seg.chars().map(|c| c.to_ascii_lowercase()));
    }
    out
}

/// Whether an assignment at `outer` covers `inner` (both scope keys).
pub(crate) fn covers(outer: &str, inner: &str) -> bool {
    inner == outer
        || (inner.len() > outer.len()
            && inner.starts_with(outer)
            && inner.as_bytes().get(outer.len()) == Some(&b'/'))
}

/// Case-insensitive wildcard match; `pattern` must already be lower case.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let tc = text[t].to_ascii_lowercase();
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == tc {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// One role definition.
#[derive(Debug, Clone)]
pub(crate) struct RoleDef {
    pub id: String,
    pub name: String,
    pub description: String,
    pub builtin: bool,
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
    pub data_actions: Vec<String>,
    pub not_data_actions: Vec<String>,
    pub assignable_scopes: Vec<String>,
    lower: [Vec<Vec<u8>>; 4],
}

impl RoleDef {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: &str,
        name: &str,
        description: &str,
        builtin: bool,
        actions: Vec<String>,
        not_actions: Vec<String>,
        data_actions: Vec<String>,
        not_data_actions: Vec<String>,
        assignable_scopes: Vec<String>,
    ) -> Self {
        let low = |v: &Vec<String>| -> Vec<Vec<u8>> {
            v.iter()
                .map(|s| s.to_ascii_lowercase().into_bytes())
                .collect()
        };
        let lower = [
            low(&actions),
            low(&not_actions),
            low(&data_actions),
            low(&not_data_actions),
        ];
        Self {
            id: id.to_ascii_lowercase(),
            name: name.to_string(),
            description: description.to_string(),
            builtin,
            actions,
            not_actions,
            data_actions,
            not_data_actions,
            assignable_scopes,
            lower,
        }
    }

    /// Whether this role alone allows `action` (a data action when `data`).
    pub fn allows(&self, action: &str, data: bool) -> bool {
        let (yes, no) = if data {
            (&self.lower[2], &self.lower[3])
        } else {
            (&self.lower[0], &self.lower[1])
        };
        let a = action.as_bytes();
        yes.iter().any(|p| wildcard(p, a)) && !no.iter().any(|p| wildcard(p, a))
    }

    /// The `Permission` object of Microsoft.Authorization.
    pub fn permission_json(&self) -> Value {
        json!({
            "actions": self.actions,
            "notActions": self.not_actions,
            "dataActions": self.data_actions,
            "notDataActions": self.not_data_actions,
        })
    }

    /// The `RoleDefinition` resource, as `GET .../roleDefinitions/{id}` returns it.
    pub fn definition_json(&self, id_prefix: &str) -> Value {
        json!({
            "id": format!("{id_prefix}/providers/Microsoft.Authorization/roleDefinitions/{}", self.id),
            "type": "Microsoft.Authorization/roleDefinitions",
            "name": self.id,
            "properties": {
                "roleName": self.name,
                "type": if self.builtin { "BuiltInRole" } else { "CustomRole" },
                "description": self.description,
                "assignableScopes": self.assignable_scopes,
                "permissions": [self.permission_json()],
                "createdOn": "2015-02-02T21:55:09.8806423Z",
                "updatedOn": "2024-01-01T00:00:00.0000000Z",
                "createdBy": null,
                "updatedBy": null,
            }
        })
    }
}

#[derive(Debug, Clone)]
struct Assignment {
    role: usize,
    scope_key: String,
}

/// Roles and assignments; immutable once the twin runs.
#[derive(Debug, Default)]
pub(crate) struct Rbac {
    roles: Vec<RoleDef>,
    by_id: HashMap<String, usize>,
    /// Object id (lower case) → assignments.
    assignments: HashMap<String, Vec<Assignment>>,
}

impl Rbac {
    pub fn new(roles: Vec<RoleDef>) -> Self {
        let by_id = roles
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
        Self {
            roles,
            by_id,
            assignments: HashMap::new(),
        }
    }

    /// Finds a role by name (case-insensitive) or id.
    pub fn find(&self, name_or_id: &str) -> Option<usize> {
        let low = name_or_id.to_ascii_lowercase();
        self.by_id.get(&low).copied().or_else(|| {
            self.roles
                .iter()
                .position(|r| r.name.eq_ignore_ascii_case(name_or_id))
        })
    }

    pub fn role_by_id(&self, id: &str) -> Option<&RoleDef> {
        self.by_id
            .get(&id.to_ascii_lowercase())
            .and_then(|&i| self.roles.get(i))
    }

    pub fn assign(&mut self, object_id: &str, role: usize, scope: &str) {
        self.assignments
            .entry(object_id.to_ascii_lowercase())
            .or_default()
            .push(Assignment {
                role,
                scope_key: scope_key(scope),
            });
    }

    fn applicable<'a>(
        &'a self,
        object_id: &str,
        scope: &'a str,
    ) -> impl Iterator<Item = &'a RoleDef> + 'a {
        self.assignments
            .get(&object_id.to_ascii_lowercase())
            .into_iter()
            .flatten()
            .filter(move |a| covers(&a.scope_key, scope))
            .filter_map(|a| self.roles.get(a.role))
    }

    /// Whether `object_id` may perform `action` at `scope` (a scope key).
    pub fn allowed(&self, object_id: &str, action: &str, scope: &str, data: bool) -> bool {
        self.applicable(object_id, scope)
            .any(|r| r.allows(action, data))
    }

    /// The distinct roles of `object_id` that apply at `scope` (a scope key).
    pub fn effective_roles<'a>(&'a self, object_id: &str, scope: &'a str) -> Vec<&'a RoleDef> {
        let mut out: Vec<&RoleDef> = Vec::new();
        for r in self.applicable(object_id, scope) {
            if !out.iter().any(|o| o.id == r.id) {
                out.push(r);
            }
        }
        out
    }

    /// Whether `object_id` holds any assignment inside or above `scope`.
    pub fn has_any_under(&self, object_id: &str, scope: &str) -> bool {
        self.assignments
            .get(&object_id.to_ascii_lowercase())
            .into_iter()
            .flatten()
            .any(|a| covers(scope, &a.scope_key) || covers(&a.scope_key, scope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(actions: &[&str], not: &[&str]) -> RoleDef {
        RoleDef::new(
            "00000000-0000-0000-0000-000000000001",
            "t",
            "",
            false,
            actions.iter().map(|s| s.to_string()).collect(),
            not.iter().map(|s| s.to_string()).collect(),
            vec![],
            vec![],
            vec![],
        )
    }

    #[test]
    fn reader_reads_but_cannot_list_keys() {
        let r = builtin::find("Reader").expect("built-in");
        assert!(r.allows("Microsoft.Storage/storageAccounts/read", false));
        assert!(!r.allows("Microsoft.Storage/storageAccounts/listkeys/action", false));
    }

    #[test]
    fn data_scientist_cannot_list_workspace_keys_but_can_resync_and_list_secrets() {
        let r = builtin::find("AzureML Data Scientist").expect("built-in");
        assert!(!r.allows(
            "Microsoft.MachineLearningServices/workspaces/listKeys/action",
            false
        ));
        assert!(r.allows(
            "Microsoft.MachineLearningServices/workspaces/resynckeys/action",
            false
        ));
        assert!(r.allows(
            "Microsoft.MachineLearningServices/workspaces/datastores/listsecrets/action",
            false
        ));
        assert!(r.allows(
            "Microsoft.MachineLearningServices/workspaces/datastores/write",
            false
        ));
    }

    #[test]
    fn monitor_roles_read_logs_and_only_contributors_write_diagnostic_settings() {
        let query = "Microsoft.OperationalInsights/workspaces/query/StorageBlobLogs/read";
        let write = "Microsoft.Insights/diagnosticSettings/write";
        for (name, can_write) in [
            ("Reader", false),
            ("Log Analytics Reader", false),
            ("Monitoring Reader", false),
            ("Log Analytics Contributor", true),
            ("Monitoring Contributor", true),
            ("Storage Account Contributor", true),
        ] {
            let r = builtin::find(name).expect("built-in");
            assert!(
                r.allows(query, false) || name == "Storage Account Contributor",
                "{name}"
            );
            assert_eq!(r.allows(write, false), can_write, "{name}");
        }
        let la = builtin::find("Log Analytics Reader").expect("built-in");
        assert!(!la.allows(
            "Microsoft.OperationalInsights/workspaces/sharedKeys/read",
            false
        ));
    }

    #[test]
    fn matching_ignores_case_and_not_actions_win() {
        let r = role(
            &["Microsoft.Storage/*"],
            &["microsoft.storage/storageaccounts/listkeys/action"],
        );
        assert!(r.allows("MICROSOFT.STORAGE/storageAccounts/read", false));
        assert!(!r.allows("Microsoft.Storage/storageAccounts/listKeys/action", false));
        assert!(!r.allows("Microsoft.Storage/storageAccounts/read", true));
    }

    #[test]
    fn wildcards_in_the_middle() {
        let r = role(&["Microsoft.KeyVault/vaults/*/read"], &[]);
        assert!(r.allows("Microsoft.KeyVault/vaults/secrets/read", false));
        assert!(!r.allows("Microsoft.KeyVault/vaults/read", false));
    }

    #[test]
    fn scopes_cover_descendants_only_at_segment_boundaries() {
        let rg = scope_key("/subscriptions/S/resourceGroups/rg");
        assert!(covers(
            &rg,
            &scope_key("/subscriptions/s/resourcegroups/RG/providers/x/y/z")
        ));
        assert!(covers(&rg, &rg));
        assert!(!covers(
            &rg,
            &scope_key("/subscriptions/s/resourceGroups/rg2")
        ));
        assert!(!covers(
            &scope_key("/subscriptions/s/resourceGroups/rg/providers/x/y/z"),
            &rg
        ));
        assert_eq!(scope_key("//a//B/"), "/a/b");
    }

    #[test]
    fn assignments_apply_at_and_below_their_scope() {
        let mut rbac = Rbac::new(builtin::all());
        let op = builtin::find("Storage Account Key Operator Service Role")
            .and_then(|r| rbac.find(&r.id))
            .expect("role");
        rbac.assign(
            "OID",
            op,
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a",
        );
        let a = scope_key(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a",
        );
        let b = scope_key(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/b",
        );
        let action = "Microsoft.Storage/storageAccounts/listkeys/action";
        assert!(rbac.allowed("oid", action, &a, false));
        assert!(!rbac.allowed("oid", action, &b, false));
        assert!(!rbac.allowed("other", action, &a, false));
    }
}
