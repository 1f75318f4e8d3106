//! Placeholder while the dry run is written.
use super::engine::{EngineError, Inner, RotateRequest};
use super::report::DryRun;
use crate::plan::Plan;

pub(super) async fn dry_run(
    _inner: &Inner,
    plan: &Plan,
    _request: &RotateRequest,
) -> Result<DryRun, EngineError> {
    Err(EngineError::Plan {
        plan: plan.name.clone(),
        detail: "the dry run is not built yet".into(),
    })
}
