//! The closed list of operations the twin serves. Their names are a wire contract:
//! fault rules select them, and the request log reports them.

use std::fmt;

/// Which service an operation belongs to; decides the shape of error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Entra,
    Msi,
    Arm,
    KeyVault,
    Blob,
    Databricks,
    LogAnalytics,
}

macro_rules! ops {
    ($($variant:ident = $name:literal / $service:ident,)*) => {
        /// One operation of the twin.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub(crate) enum Op { $($variant,)* }

        impl Op {
            pub const ALL: &'static [Op] = &[$(Op::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(Op::$variant => $name,)* }
            }

            pub fn service(self) -> Service {
                match self { $(Op::$variant => Service::$service,)* }
            }

            pub fn parse(s: &str) -> Option<Op> {
                match s { $($name => Some(Op::$variant),)* _ => None }
            }
        }
    };
}

ops! {
    EntraToken = "entra.token" / Entra,
    EntraDiscovery = "entra.discovery" / Entra,
    MsiToken = "msi.token" / Msi,
    ArmMetadata = "arm.metadata" / Arm,
    ArmSubscriptions = "arm.subscriptions" / Arm,
    ArmTenants = "arm.tenants" / Arm,
    StorageGet = "storage.get" / Arm,
    StorageList = "storage.list" / Arm,
    StoragePatch = "storage.patch" / Arm,
    StorageListKeys = "storage.listKeys" / Arm,
    StorageRegenerateKey = "storage.regenerateKey" / Arm,
    MlWorkspaceGet = "ml.workspace.get" / Arm,
    MlWorkspaceList = "ml.workspace.list" / Arm,
    MlWorkspaceListKeys = "ml.workspace.listKeys" / Arm,
    MlWorkspaceResyncKeys = "ml.workspace.resyncKeys" / Arm,
    MlOperationPoll = "ml.operation.poll" / Arm,
    MlDatastoreList = "ml.datastore.list" / Arm,
    MlDatastoreGet = "ml.datastore.get" / Arm,
    MlDatastorePut = "ml.datastore.put" / Arm,
    MlDatastoreListSecrets = "ml.datastore.listSecrets" / Arm,
    AuthzPermissions = "authz.permissions" / Arm,
    AuthzRoleDefinition = "authz.roleDefinition" / Arm,
    KeyVaultVaultList = "keyvault.vault.list" / Arm,
    KeyVaultSet = "keyvault.set" / KeyVault,
    KeyVaultGet = "keyvault.get" / KeyVault,
    KeyVaultVersions = "keyvault.versions" / KeyVault,
    KeyVaultUpdate = "keyvault.update" / KeyVault,
    KeyVaultList = "keyvault.list" / KeyVault,
    BlobAccountInfo = "blob.accountInfo" / Blob,
    BlobListContainers = "blob.listContainers" / Blob,
    DatabricksScopes = "databricks.scopes" / Databricks,
    DatabricksPut = "databricks.put" / Databricks,
    DatabricksList = "databricks.list" / Databricks,
    WebSiteGet = "web.site.get" / Arm,
    WebSiteList = "web.site.list" / Arm,
    WebSlotList = "web.slot.list" / Arm,
    WebAppSettingsList = "web.appSettings.list" / Arm,
    WebAppSettingsPut = "web.appSettings.put" / Arm,
    WebConnectionStringsList = "web.connectionStrings.list" / Arm,
    WebConnectionStringsPut = "web.connectionStrings.put" / Arm,
    WebSlotConfigNamesGet = "web.slotConfigNames.get" / Arm,
    WebSlotConfigNamesPut = "web.slotConfigNames.put" / Arm,
    DataFactoryGet = "datafactory.factory.get" / Arm,
    DataFactoryList = "datafactory.factory.list" / Arm,
    LinkedServiceList = "datafactory.linkedService.list" / Arm,
    LinkedServiceGet = "datafactory.linkedService.get" / Arm,
    LinkedServicePut = "datafactory.linkedService.put" / Arm,
    DiagnosticSettingsList = "monitor.diagnosticSettings.list" / Arm,
    DiagnosticSettingsGet = "monitor.diagnosticSettings.get" / Arm,
    DiagnosticSettingsPut = "monitor.diagnosticSettings.put" / Arm,
    DiagnosticSettingsDelete = "monitor.diagnosticSettings.delete" / Arm,
    LogAnalyticsQuery = "loganalytics.query" / LogAnalytics,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for op in Op::ALL {
            assert_eq!(Op::parse(op.as_str()), Some(*op));
        }
        assert_eq!(Op::parse("storage.listkeys"), None);
    }
}
