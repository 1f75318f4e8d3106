//! What can go wrong talking to the coordination container, typed so callers decide on
//! the variant (lost the lease: stop; someone else holds it: wait; unreachable: retry
//! later), never on message text.

use crate::azure;

/// An error of the coordination store.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// Another replica holds the lease (409 `LeaseAlreadyPresent`).
    #[error(
        "the lease on {blob} is held by another keyflip replica; it is released when that replica finishes, or expires at most one lease length after it stops renewing"
    )]
    Held { blob: String },
    /// The lease this replica held is gone: expired and taken, broken, or released
    /// (412 `LeaseLost`, `LeaseIdMismatch…`, `LeaseNotPresent…`, 409 `LeaseIsBroken…`),
    /// or it could not be renewed in time.
    #[error(
        "lost the lease on {blob} ({why}); this replica stops before its next step and another replica (or `keyflip rotate resume`) finishes the rotation from the shared journal"
    )]
    Lost { blob: String, why: String },
    /// The blob changed since it was read (412 `ConditionNotMet`, or 409
    /// `BlobAlreadyExists` on a create).
    #[error(
        "{blob} was changed by another writer since this replica read it ({code}); nothing was written"
    )]
    Changed { blob: String, code: String },
    /// The identity may not use the container (403).
    #[error(
        "{call}: HTTP 403, keyflip's identity may not use the coordination container{}; assign it the built-in role Storage Blob Data Contributor on the container (or account) named in [coordination]",
        code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
    )]
    Denied {
        call: Box<azure::Call>,
        code: Option<String>,
    },
    /// The shared journal was written under another fingerprint key.
    #[error(
        "{blob} was written by a replica with another fingerprint key, so fingerprints would never match; give every replica the same fingerprint.key (docs/operations.md, \"Running replicas\")"
    )]
    FingerprintKey { blob: String },
    /// A plan would rotate the coordination account's own keys.
    #[error("{0}")]
    CoordinationAccount(String),
    /// A local journal cannot be imported over what the shared journal holds.
    #[error(
        "cannot import the local journal's rotations of {account}: {detail}; finish that rotation first (`keyflip rotate resume` on a replica), then import again"
    )]
    Import { account: String, detail: String },
    /// A blob's content is not a document this keyflip can read.
    #[error("{blob} is not a keyflip coordination document: {detail}")]
    Format { blob: String, detail: String },
    /// The coordinator's own thread is gone (it could not start, or is shutting down).
    #[error(
        "keyflip's coordination thread is not running, so the shared journal cannot be written; see the earlier error in the log"
    )]
    Runtime,
    /// Everything else from the Azure boundary (network, throttling, 5xx, 401...).
    #[error(transparent)]
    Azure(#[from] azure::Error),
}

impl CoordError {
    /// True when trying again later may help without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            CoordError::Azure(e) => e.is_transient(),
            CoordError::Held { .. } => true,
            _ => false,
        }
    }

    /// True when this replica no longer holds (or never held) the lease.
    pub fn is_lease_loss(&self) -> bool {
        matches!(self, CoordError::Lost { .. })
    }
}

/// Lease error codes that mean "the lease this replica named is not the blob's lease".
/// From the Blob service error codes (Microsoft Learn, "Blob Storage error codes").
pub(crate) const LOST_CODES: &[&str] = &[
    "LeaseLost",
    "LeaseIdMismatchWithLeaseOperation",
    "LeaseIdMismatchWithBlobOperation",
    "LeaseNotPresentWithLeaseOperation",
    "LeaseNotPresentWithBlobOperation",
    "LeaseIdMissing",
    "LeaseIsBrokenAndCannotBeRenewed",
    "LeaseIsBreakingAndCannotBeAcquired",
    "LeaseIsBreakingAndCannotBeChanged",
];

/// Maps an Azure error of a call on `blob` to the typed error.
pub(crate) fn classify(blob: &str, error: azure::Error) -> CoordError {
    match error {
        azure::Error::Forbidden { call, denial } => CoordError::Denied {
            call,
            code: denial.code.clone(),
        },
        azure::Error::Rejected {
            status, ref code, ..
        } => {
            let code_text = code.clone().unwrap_or_default();
            let is = |c: &str| code_text.eq_ignore_ascii_case(c);
            if status == 409 && is("LeaseAlreadyPresent") {
                CoordError::Held {
                    blob: blob.to_owned(),
                }
            } else if LOST_CODES.iter().any(|c| is(c)) {
                CoordError::Lost {
                    blob: blob.to_owned(),
                    why: code_text,
                }
            } else if (status == 412 && (is("ConditionNotMet") || code.is_none()))
                || (status == 409 && is("BlobAlreadyExists"))
            {
                CoordError::Changed {
                    blob: blob.to_owned(),
                    code: if code_text.is_empty() {
                        format!("HTTP {status}")
                    } else {
                        code_text
                    },
                }
            } else {
                CoordError::Azure(error)
            }
        }
        other => CoordError::Azure(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: u16, code: Option<&str>) -> azure::Error {
        azure::Error::Rejected {
            call: Box::new(azure::Call {
                operation: "blob.put",
                target: "c/b".into(),
                request_id: None,
            }),
            status,
            code: code.map(str::to_owned),
            message: None,
        }
    }

    #[test]
    fn lease_answers_become_typed_errors() {
        assert!(matches!(
            classify("b", rejected(409, Some("LeaseAlreadyPresent"))),
            CoordError::Held { .. }
        ));
        for code in [
            "LeaseLost",
            "LeaseIdMismatchWithBlobOperation",
            "LeaseIsBrokenAndCannotBeRenewed",
        ] {
            let e = classify("b", rejected(412, Some(code)));
            assert!(e.is_lease_loss(), "{code}: {e}");
            assert!(e.to_string().contains(code));
        }
        assert!(matches!(
            classify("b", rejected(412, Some("ConditionNotMet"))),
            CoordError::Changed { .. }
        ));
        assert!(matches!(
            classify("b", rejected(409, Some("BlobAlreadyExists"))),
            CoordError::Changed { .. }
        ));
        // A 412 with no body (HEAD-like answers) is a failed condition too.
        assert!(matches!(
            classify("b", rejected(412, None)),
            CoordError::Changed { .. }
        ));
        // Anything else stays the Azure error, with its own advice.
        assert!(matches!(
            classify("b", rejected(400, Some("InvalidHeaderValue"))),
            CoordError::Azure(_)
        ));
        assert!(!classify("b", rejected(400, None)).is_transient());
    }
}
