//! Azure Resource Manager resource ids, parsed once and validated.
//!
//! An id looks like `/subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/{type}/{name}`,
//! optionally with child types (`.../workspaces/{ws}/datastores/{name}`). ARM treats
//! the fixed segments case-insensitively, so parsing does too, but the id keeps its
//! original spelling for display and URLs.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceId {
    raw: String,
    subscription: String,
    resource_group: String,
    namespace: String,
    /// `(type, name)` pairs from the top-level resource down.
    types: Vec<(String, String)>,
}

impl ResourceId {
    pub fn subscription(&self) -> &str {
        &self.subscription
    }
    pub fn resource_group(&self) -> &str {
        &self.resource_group
    }
    /// The resource's own name (the last segment).
    pub fn name(&self) -> &str {
        self.types
            .last()
            .map(|(_, n)| n.as_str())
            .unwrap_or_default()
    }
    /// The full type, e.g. `Microsoft.Storage/storageAccounts`.
    pub(crate) fn resource_type(&self) -> String {
        let types: Vec<&str> = self.types.iter().map(|(t, _)| t.as_str()).collect();
        format!("{}/{}", self.namespace, types.join("/"))
    }
    /// True when the type matches `namespace/type[/child]` case-insensitively.
    pub(crate) fn is_type(&self, full_type: &str) -> bool {
        self.resource_type().eq_ignore_ascii_case(full_type)
    }
    /// The resource group's own id: the scope that contains this resource.
    #[cfg(test)]
    pub(crate) fn resource_group_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}",
            self.subscription, self.resource_group
        )
    }
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "'{id}' is not an Azure resource id: {why}; expected /subscriptions/<id>/resourceGroups/<group>/providers/<Namespace>/<type>/<name>"
)]
pub struct ResourceIdError {
    pub id: String,
    pub why: &'static str,
}

impl FromStr for ResourceId {
    type Err = ResourceIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |why| ResourceIdError {
            id: s.to_owned(),
            why,
        };
        let trimmed = s.trim_end_matches('/');
        let rest = trimmed
            .strip_prefix('/')
            .ok_or_else(|| fail("it does not start with '/'"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(fail("it has an empty segment"));
        }
        if parts.len() < 8 {
            return Err(fail("it is too short"));
        }
        let fixed = |i: usize, word: &str| parts[i].eq_ignore_ascii_case(word);
        if !fixed(0, "subscriptions") || !fixed(2, "resourceGroups") || !fixed(4, "providers") {
            return Err(fail(
                "the fixed segments are not subscriptions/…/resourceGroups/…/providers",
            ));
        }
        let tail = &parts[6..];
        if !tail.len().is_multiple_of(2) {
            return Err(fail("a resource type has no name"));
        }
        Ok(ResourceId {
            raw: trimmed.to_owned(),
            subscription: parts[1].to_owned(),
            resource_group: parts[3].to_owned(),
            namespace: parts[5].to_owned(),
            types: tail
                .chunks(2)
                .map(|c| (c[0].to_owned(), c[1].to_owned()))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_storage_and_child_ids() {
        let id: ResourceId =
            "/subscriptions/s1/resourcegroups/rg/providers/Microsoft.Storage/storageAccounts/acct/"
                .parse()
                .unwrap();
        assert_eq!(
            (id.subscription(), id.resource_group(), id.name()),
            ("s1", "rg", "acct")
        );
        assert!(id.is_type("microsoft.storage/storageaccounts"));
        assert_eq!(
            id.as_str(),
            "/subscriptions/s1/resourcegroups/rg/providers/Microsoft.Storage/storageAccounts/acct"
        );
        assert_eq!(
            id.resource_group_id(),
            "/subscriptions/s1/resourceGroups/rg"
        );

        let ds: ResourceId =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w/datastores/d"
                .parse()
                .unwrap();
        assert_eq!(
            ds.resource_type(),
            "Microsoft.MachineLearningServices/workspaces/datastores"
        );
        assert_eq!(ds.name(), "d");
    }

    #[test]
    fn rejects_malformed_ids_with_a_reason() {
        for bad in [
            "",
            "subscriptions/s",
            "/subscriptions/s/resourceGroups/rg",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts",
            "/subscriptions//resourceGroups/rg/providers/N/t/n",
            "/tenants/s/resourceGroups/rg/providers/N/t/n",
        ] {
            let err = bad.parse::<ResourceId>().unwrap_err();
            assert!(
                err.to_string().contains("expected /subscriptions/"),
                "{bad}: {err}"
            );
        }
    }
}
