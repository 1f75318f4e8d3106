//! Azure RBAC actions keyflip needs, how Azure matches them against role permissions,
//! and which built-in role to suggest when one is missing.
//!
//! Matching follows Azure's rules: an action is granted by a permission entry (one per
//! role assignment) when it matches one of the entry's `actions` and none of the same
//! entry's `notActions` (data actions likewise with `dataActions`/`notDataActions`);
//! `*` matches any run of characters, `/` included; comparison ignores ASCII case.
//! `notActions` only subtract from their own entry: another role can still grant the
//! action. The role table lists least-privileged roles first, so the hint is the
//! narrowest built-in role that grants the action.

use std::borrow::Cow;
use std::fmt;

/// An RBAC action (control plane, ARM) or data action (data plane, e.g. Key Vault).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Control(Cow<'static, str>),
    Data(Cow<'static, str>),
}

impl Action {
    pub const fn control(name: &'static str) -> Self {
        Action::Control(Cow::Borrowed(name))
    }
    pub const fn data(name: &'static str) -> Self {
        Action::Data(Cow::Borrowed(name))
    }
    pub fn name(&self) -> &str {
        match self {
            Action::Control(n) | Action::Data(n) => n,
        }
    }
    pub fn is_data(&self) -> bool {
        matches!(self, Action::Data(_))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Control(n) => f.write_str(n),
            Action::Data(n) => write!(f, "{n} (data action)"),
        }
    }
}

/// The actions behind each keyflip operation. `doctor` checks exactly these.
pub mod actions {
    use super::Action;

    pub const STORAGE_READ: Action = Action::control("Microsoft.Storage/storageAccounts/read");
    pub const STORAGE_WRITE: Action = Action::control("Microsoft.Storage/storageAccounts/write");
    pub const STORAGE_LIST_KEYS: Action =
        Action::control("Microsoft.Storage/storageAccounts/listkeys/action");
    pub const STORAGE_REGENERATE_KEY: Action =
        Action::control("Microsoft.Storage/storageAccounts/regeneratekey/action");
    pub const ML_WORKSPACE_READ: Action =
        Action::control("Microsoft.MachineLearningServices/workspaces/read");
    pub const ML_WORKSPACE_LIST_KEYS: Action =
        Action::control("Microsoft.MachineLearningServices/workspaces/listKeys/action");
    pub const ML_WORKSPACE_RESYNC_KEYS: Action =
        Action::control("Microsoft.MachineLearningServices/workspaces/resynckeys/action");
    pub const ML_DATASTORE_READ: Action =
        Action::control("Microsoft.MachineLearningServices/workspaces/datastores/read");
    pub const ML_DATASTORE_WRITE: Action =
        Action::control("Microsoft.MachineLearningServices/workspaces/datastores/write");
    pub const ML_DATASTORE_LIST_SECRETS: Action = Action::control(
        "Microsoft.MachineLearningServices/workspaces/datastores/listsecrets/action",
    );
    pub const KV_SECRET_GET: Action =
        Action::data("Microsoft.KeyVault/vaults/secrets/getSecret/action");
    pub const KV_SECRET_SET: Action =
        Action::data("Microsoft.KeyVault/vaults/secrets/setSecret/action");
    pub const KV_SECRET_READ_METADATA: Action =
        Action::data("Microsoft.KeyVault/vaults/secrets/readMetadata/action");
    pub const KV_SECRET_UPDATE: Action =
        Action::data("Microsoft.KeyVault/vaults/secrets/update/action");
    // Discovery and the usage gate: reads only.
    pub const SUBSCRIPTIONS_READ: Action =
        Action::control("Microsoft.Resources/subscriptions/read");
    pub const KV_VAULT_READ: Action = Action::control("Microsoft.KeyVault/vaults/read");
    pub const DIAGNOSTIC_SETTINGS_READ: Action =
        Action::control("Microsoft.Insights/diagnosticSettings/read");
    /// A Log Analytics table's rows, per table: `.../query/StorageBlobLogs/read`.
    pub const LOG_QUERY_BLOB: Action =
        Action::control("Microsoft.OperationalInsights/workspaces/query/StorageBlobLogs/read");
    pub const LOG_QUERY_FILE: Action =
        Action::control("Microsoft.OperationalInsights/workspaces/query/StorageFileLogs/read");
    pub const LOG_QUERY_QUEUE: Action =
        Action::control("Microsoft.OperationalInsights/workspaces/query/StorageQueueLogs/read");
    pub const LOG_QUERY_TABLE: Action =
        Action::control("Microsoft.OperationalInsights/workspaces/query/StorageTableLogs/read");
    /// Listing a site's app settings or connection strings (`config/.../list`).
    pub const WEB_CONFIG_LIST: Action = Action::control("Microsoft.Web/sites/config/list/action");
    /// Replacing them (`PUT config/appsettings`, `config/connectionstrings`).
    pub const WEB_CONFIG_WRITE: Action = Action::control("Microsoft.Web/sites/config/write");
    pub const WEB_SLOT_CONFIG_LIST: Action =
        Action::control("Microsoft.Web/sites/slots/config/list/action");
    pub const WEB_SLOT_CONFIG_WRITE: Action =
        Action::control("Microsoft.Web/sites/slots/config/write");
    pub const WEB_SITE_READ: Action = Action::control("Microsoft.Web/sites/read");
    pub const WEB_SLOT_READ: Action = Action::control("Microsoft.Web/sites/slots/read");
    pub const DF_FACTORY_READ: Action = Action::control("Microsoft.DataFactory/factories/read");
    pub const DF_LINKED_READ: Action =
        Action::control("Microsoft.DataFactory/factories/linkedServices/read");
    pub const DF_LINKED_WRITE: Action =
        Action::control("Microsoft.DataFactory/factories/linkedServices/write");
}

/// One effective permission entry, as the Authorization permissions API returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permission {
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
    pub data_actions: Vec<String>,
    pub not_data_actions: Vec<String>,
}

impl Permission {
    /// Whether this entry alone grants `action`.
    pub fn grants(&self, action: &Action) -> bool {
        let (allow, deny) = if action.is_data() {
            (&self.data_actions, &self.not_data_actions)
        } else {
            (&self.actions, &self.not_actions)
        };
        let name = action.name();
        allow.iter().any(|p| pattern_matches(p, name))
            && !deny.iter().any(|p| pattern_matches(p, name))
    }
}

/// The required actions no entry grants, in the order given.
pub fn missing_actions<'a>(permissions: &[Permission], required: &'a [Action]) -> Vec<&'a Action> {
    required
        .iter()
        .filter(|a| !permissions.iter().any(|p| p.grants(a)))
        .collect()
}

/// Azure's action pattern match: `*` is any run (possibly empty), ASCII case ignored.
pub fn pattern_matches(pattern: &str, action: &str) -> bool {
    let (p, a) = (pattern.as_bytes(), action.as_bytes());
    // Iterative glob with single-star backtracking: linear in practice, no recursion.
    let (mut pi, mut ai) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ai < a.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ai));
            pi += 1;
        } else if pi < p.len() && p[pi].eq_ignore_ascii_case(&a[ai]) {
            pi += 1;
            ai += 1;
        } else if let Some((sp, sa)) = star {
            pi = sp + 1;
            ai = sa + 1;
            star = Some((sp, sa + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A built-in Azure role: its name, its role definition id, and its permissions.
#[derive(Debug, PartialEq, Eq)]
pub struct BuiltinRole {
    pub name: &'static str,
    pub id: &'static str,
    actions: &'static [&'static str],
    not_actions: &'static [&'static str],
    data_actions: &'static [&'static str],
}

impl BuiltinRole {
    pub fn grants(&self, action: &Action) -> bool {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        Permission {
            actions: owned(self.actions),
            not_actions: owned(self.not_actions),
            data_actions: owned(self.data_actions),
            not_data_actions: Vec::new(),
        }
        .grants(action)
    }
}

impl fmt::Display for BuiltinRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' ({})", self.name, self.id)
    }
}

/// The narrowest built-in role that grants `action`, if keyflip knows one.
pub fn role_granting(action: &Action) -> Option<&'static BuiltinRole> {
    BUILTIN_ROLES.iter().find(|r| r.grants(action))
}

/// Least privileged first. Definitions from Microsoft's built-in role catalogue,
/// trimmed to what matters for keyflip's actions (learn.microsoft.com/azure/role-based-access-control/built-in-roles).
pub static BUILTIN_ROLES: &[BuiltinRole] = &[
    BuiltinRole {
        name: "Reader",
        id: "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        actions: &["*/read"],
        not_actions: &[],
        data_actions: &[],
    },
    BuiltinRole {
        name: "Storage Account Key Operator Service Role",
        id: "81a9662b-bebf-436f-a333-f67b29880f12",
        actions: &[
            "Microsoft.Storage/storageAccounts/listkeys/action",
            "Microsoft.Storage/storageAccounts/regeneratekey/action",
        ],
        not_actions: &[],
        data_actions: &[],
    },
    BuiltinRole {
        name: "Key Vault Secrets User",
        id: "4633458b-17de-408a-b874-0445c86b69e6",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ],
    },
    BuiltinRole {
        name: "Key Vault Secrets Officer",
        id: "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
        actions: &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Support/*",
            "Microsoft.KeyVault/checkNameAvailability/read",
            "Microsoft.KeyVault/deletedVaults/read",
            "Microsoft.KeyVault/locations/*/read",
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/operations/read",
        ],
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/secrets/*"],
    },
    BuiltinRole {
        name: "AzureML Data Scientist",
        id: "f6c7c914-8db3-469d-8ca1-694a8f32e121",
        actions: &[
            "Microsoft.MachineLearningServices/workspaces/*/read",
            "Microsoft.MachineLearningServices/workspaces/*/action",
            "Microsoft.MachineLearningServices/workspaces/*/delete",
            "Microsoft.MachineLearningServices/workspaces/*/write",
        ],
        not_actions: &[
            "Microsoft.MachineLearningServices/workspaces/delete",
            "Microsoft.MachineLearningServices/workspaces/write",
            "Microsoft.MachineLearningServices/workspaces/computes/*/write",
            "Microsoft.MachineLearningServices/workspaces/computes/*/delete",
            "Microsoft.MachineLearningServices/workspaces/computes/listKeys/action",
            "Microsoft.MachineLearningServices/workspaces/listKeys/action",
            "Microsoft.MachineLearningServices/workspaces/hubs/write",
            "Microsoft.MachineLearningServices/workspaces/hubs/delete",
            "Microsoft.MachineLearningServices/workspaces/featurestores/write",
            "Microsoft.MachineLearningServices/workspaces/featurestores/delete",
        ],
        data_actions: &[],
    },
    BuiltinRole {
        name: "Storage Account Contributor",
        id: "17d1049b-9a84-46fb-8f53-869881c3d3ab",
        actions: &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Insights/diagnosticSettings/*",
            "Microsoft.Network/virtualNetworks/subnets/joinViaServiceEndpoint/action",
            "Microsoft.ResourceHealth/availabilityStatuses/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Storage/storageAccounts/*",
            "Microsoft.Support/*",
        ],
        not_actions: &[],
        data_actions: &[],
    },
    // Microsoft Learn, "Azure built-in roles for Web and Mobile".
    BuiltinRole {
        name: "Website Contributor",
        id: "de139f84-1756-47ae-9be6-808fbbe84772",
        actions: &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Insights/components/*",
            "Microsoft.ResourceHealth/availabilityStatuses/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Support/*",
            "Microsoft.Web/certificates/*",
            "Microsoft.Web/listSitesAssignedToHostName/read",
            "Microsoft.Web/register/action",
            "Microsoft.Web/serverFarms/join/action",
            "Microsoft.Web/serverFarms/read",
            "Microsoft.Web/sites/*",
        ],
        not_actions: &[],
        data_actions: &[],
    },
    // Microsoft Learn, "Azure built-in roles for Analytics".
    BuiltinRole {
        name: "Data Factory Contributor",
        id: "673868aa-7521-48a0-acc6-0f60742d39f5",
        actions: &[
            "Microsoft.Authorization/*/read",
            "Microsoft.DataFactory/dataFactories/*",
            "Microsoft.DataFactory/factories/*",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.ResourceHealth/availabilityStatuses/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Support/*",
            "Microsoft.EventGrid/eventSubscriptions/write",
        ],
        not_actions: &[],
        data_actions: &[],
    },
    BuiltinRole {
        name: "Contributor",
        id: "b24988ac-6180-42a0-ab88-20f7382dd24c",
        actions: &["*"],
        not_actions: &[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
            "Microsoft.Blueprint/blueprintAssignments/write",
            "Microsoft.Blueprint/blueprintAssignments/delete",
            "Microsoft.Compute/galleries/share/action",
            "Microsoft.Purview/consents/write",
            "Microsoft.Purview/consents/delete",
        ],
        data_actions: &[],
    },
    BuiltinRole {
        name: "Key Vault Administrator",
        id: "00482a5a-887f-4fb3-b363-3b7fe8e74483",
        actions: &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Support/*",
            "Microsoft.KeyVault/checkNameAvailability/read",
            "Microsoft.KeyVault/deletedVaults/read",
            "Microsoft.KeyVault/locations/*/read",
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/operations/read",
        ],
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/*"],
    },
    BuiltinRole {
        name: "Owner",
        id: "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        actions: &["*"],
        not_actions: &[],
        data_actions: &[],
    },
];

#[cfg(test)]
mod tests {
    use super::actions::*;
    use super::*;

    fn perm(actions: &[&str], not_actions: &[&str], data: &[&str]) -> Permission {
        let v = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        Permission {
            actions: v(actions),
            not_actions: v(not_actions),
            data_actions: v(data),
            not_data_actions: Vec::new(),
        }
    }

    #[test]
    fn wildcards_match_any_run_and_ignore_case() {
        assert!(pattern_matches(
            "*",
            "Microsoft.Storage/storageAccounts/read"
        ));
        assert!(pattern_matches(
            "*/read",
            "microsoft.storage/STORAGEACCOUNTS/read"
        ));
        assert!(pattern_matches(
            "Microsoft.MachineLearningServices/workspaces/*/action",
            "Microsoft.MachineLearningServices/workspaces/datastores/listsecrets/action"
        ));
        assert!(!pattern_matches(
            "Microsoft.MachineLearningServices/workspaces/*/read",
            "Microsoft.MachineLearningServices/workspaces/read"
        ));
        assert!(!pattern_matches(
            "*/read",
            "Microsoft.Storage/storageAccounts/listkeys/action"
        ));
        assert!(pattern_matches("a*b*c", "aXXbYYbc"));
        assert!(!pattern_matches("a*b*c", "aXXbYYbcd"));
    }

    #[test]
    fn not_actions_subtract_only_within_their_own_entry() {
        let data_scientist = perm(
            &["Microsoft.MachineLearningServices/workspaces/*/action"],
            &["Microsoft.MachineLearningServices/workspaces/listKeys/action"],
            &[],
        );
        let required = [ML_WORKSPACE_LIST_KEYS, ML_WORKSPACE_RESYNC_KEYS];
        let missing = missing_actions(std::slice::from_ref(&data_scientist), &required);
        assert_eq!(missing, vec![&ML_WORKSPACE_LIST_KEYS]);
        // A second assignment that grants everything fills the gap.
        let contributor = perm(&["*"], &["Microsoft.Authorization/*/Write"], &[]);
        assert!(missing_actions(&[data_scientist, contributor], &required).is_empty());
    }

    #[test]
    fn data_actions_are_checked_separately() {
        let owner = perm(&["*"], &[], &[]);
        let officer = perm(&[], &[], &["Microsoft.KeyVault/vaults/secrets/*"]);
        assert_eq!(
            missing_actions(std::slice::from_ref(&owner), &[KV_SECRET_SET]),
            vec![&KV_SECRET_SET]
        );
        assert!(missing_actions(&[owner, officer], &[KV_SECRET_SET, STORAGE_READ]).is_empty());
    }

    #[test]
    fn hints_name_the_narrowest_builtin_role() {
        let name = |a: &Action| role_granting(a).map(|r| r.name);
        assert_eq!(name(&STORAGE_READ), Some("Reader"));
        assert_eq!(
            name(&STORAGE_REGENERATE_KEY),
            Some("Storage Account Key Operator Service Role")
        );
        assert_eq!(name(&STORAGE_WRITE), Some("Storage Account Contributor"));
        assert_eq!(name(&KV_SECRET_GET), Some("Key Vault Secrets User"));
        assert_eq!(name(&KV_SECRET_SET), Some("Key Vault Secrets Officer"));
        assert_eq!(
            name(&ML_WORKSPACE_RESYNC_KEYS),
            Some("AzureML Data Scientist")
        );
        assert_eq!(name(&ML_DATASTORE_WRITE), Some("AzureML Data Scientist"));
        // AzureML Data Scientist explicitly excludes workspace listKeys.
        assert_eq!(name(&ML_WORKSPACE_LIST_KEYS), Some("Contributor"));
        assert_eq!(name(&ML_WORKSPACE_READ), Some("Reader"));
        assert_eq!(name(&WEB_CONFIG_LIST), Some("Website Contributor"));
        assert_eq!(name(&WEB_SLOT_CONFIG_WRITE), Some("Website Contributor"));
        assert_eq!(name(&DF_LINKED_READ), Some("Reader"));
        assert_eq!(name(&DF_LINKED_WRITE), Some("Data Factory Contributor"));
        assert_eq!(name(&Action::data("Microsoft.Nothing/thing/act")), None);
    }
}
