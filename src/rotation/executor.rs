//! Placeholder while the executor is written.
use tokio_util::sync::CancellationToken;

use super::engine::{EngineError, Inner, RotateRequest};
use super::progress::Progress;
use super::report::RotationReport;
use crate::plan::Plan;

fn not_yet(plan: &Plan) -> EngineError {
    EngineError::Plan {
        plan: plan.name.clone(),
        detail: "the executor is not built yet".into(),
    }
}

pub(super) async fn rotate(
    _inner: &Inner,
    plan: &Plan,
    _request: RotateRequest,
    _progress: &dyn Progress,
    _cancel: CancellationToken,
) -> Result<RotationReport, EngineError> {
    Err(not_yet(plan))
}

pub(super) async fn resume(
    _inner: &Inner,
    _plans: &[Plan],
    _progress: &dyn Progress,
    _cancel: CancellationToken,
) -> Result<Vec<RotationReport>, EngineError> {
    Ok(Vec::new())
}
