//! The list of every Azure operation keyflip can call, by keyflip's name (the one in
//! logs and errors). The fault matrix (`tests/it/faults.rs`) is generated from it: each
//! operation meets each fault kind, once and persistently, so an operation added
//! without a place in the matrix fails that test, and one added here without being
//! declared fails this module's test.
//!
//! Invariant: every `Operation` constant under `src/azure/` is named here (checked by
//! reading the sources), plus the token request, which is not an `Operation`.

/// One operation and what the fault matrix needs to know of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed {
    /// keyflip's name (`Operation::name`).
    pub name: &'static str,
    /// Answers 202 and is polled (`Location`/`Azure-AsyncOperation`).
    pub long_running: bool,
    /// Not idempotent: sent once and reconciled, never retried.
    pub(crate) sent_once: bool,
}

const fn op(name: &'static str) -> Listed {
    Listed {
        name,
        long_running: false,
        sent_once: false,
    }
}

/// Every operation.
pub const ALL: &[Listed] = &[
    // Entra ID: the token request behind every other call.
    op("entra.token"),
    op("storage.get"),
    op("storage.listKeys"),
    Listed {
        sent_once: true,
        ..op("storage.regenerateKey")
    },
    op("storage.patch"),
    op("blob.getAccountInformation"),
    op("authorization.permissions"),
    op("ml.workspace.get"),
    op("ml.workspace.listKeys"),
    Listed {
        long_running: true,
        ..op("ml.workspace.resyncKeys")
    },
    op("arm.pollOperation"),
    op("ml.datastore.list"),
    op("ml.datastore.get"),
    op("ml.datastore.put"),
    op("ml.datastore.listSecrets"),
    op("keyvault.setSecret"),
    op("keyvault.getSecret"),
    op("keyvault.listVersions"),
    op("keyvault.disableVersion"),
    op("databricks.scopes.list"),
    op("databricks.secrets.put"),
    op("databricks.secrets.list"),
    op("web.appSettings.list"),
    Listed {
        sent_once: true,
        ..op("web.appSettings.put")
    },
    op("web.connectionStrings.list"),
    Listed {
        sent_once: true,
        ..op("web.connectionStrings.put")
    },
    op("datafactory.linkedService.get"),
    op("datafactory.linkedService.list"),
    op("datafactory.linkedService.put"),
    // Discovery (`plan discover`, the unlisted-consumer check before every rotation).
    op("arm.subscriptions.list"),
    op("storage.list"),
    op("ml.workspace.list"),
    op("keyvault.vault.list"),
    op("keyvault.listSecrets"),
    op("web.site.list"),
    op("web.slot.list"),
    op("datafactory.factory.list"),
    // The usage gate: where the account's resource logs go, and who signs with a key.
    op("monitor.diagnosticSettings.list"),
    op("loganalytics.workspace.get"),
    op("loganalytics.query"),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The operation names declared in a source file: `Operation::read("x"`,
    /// `Operation::write("x"` and `name: "x"` inside an `Operation {` literal.
    fn declared(source: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut in_literal = false;
        let mut read_args = false;
        for line in source.lines() {
            let line = line.trim();
            if line.starts_with("//") {
                continue;
            }
            let quoted = |s: &str| {
                s.trim()
                    .strip_prefix('"')
                    .and_then(|r| r.split('"').next())
                    .map(str::to_owned)
            };
            if read_args {
                names.extend(quoted(line));
                read_args = false;
            }
            let call = line
                .split("Operation::read(")
                .nth(1)
                .or_else(|| line.split("Operation::write(").nth(1));
            if let Some(rest) = call {
                match quoted(rest) {
                    Some(name) => names.push(name),
                    // The name on the next line (rustfmt wraps long calls).
                    None => read_args = true,
                }
            }
            if line.ends_with("Operation {") {
                in_literal = true;
            } else if in_literal && let Some(rest) = line.strip_prefix("name: \"") {
                names.push(rest.split('"').next().unwrap_or_default().to_owned());
                in_literal = false;
            } else if in_literal && line.starts_with('}') {
                in_literal = false;
            }
        }
        names
    }

    #[test]
    fn every_operation_in_the_sources_is_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/azure");
        let mut files = vec![];
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap().flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "rs") {
                    files.push(p);
                }
            }
        }
        let mut found = 0;
        for file in files {
            let source = std::fs::read_to_string(&file).unwrap();
            // Unit tests declare throwaway operations after `mod tests`.
            let source = source.split("mod tests").next().unwrap_or_default();
            for name in declared(source) {
                assert!(
                    ALL.iter().any(|l| l.name == name),
                    "{} declares operation {name}, which azure::operations::ALL does not list (so the fault matrix would not cover it)",
                    file.display()
                );
                found += 1;
            }
        }
        // Every listed operation but the token request is declared somewhere.
        assert_eq!(
            found,
            ALL.len() - 1,
            "ALL lists an operation no source declares"
        );
    }
}
