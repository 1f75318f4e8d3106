//! Placeholder while repair is written.
use tokio_util::sync::CancellationToken;

use super::engine::{EngineError, Inner};
use super::progress::Progress;
use super::report::RotationReport;
use crate::key::KeyName;
use crate::plan::{ConsumerId, Plan};

pub(super) async fn repair(
    _inner: &Inner,
    plan: &Plan,
    _consumer: &ConsumerId,
    _key: KeyName,
    _progress: &dyn Progress,
    _cancel: CancellationToken,
) -> Result<RotationReport, EngineError> {
    Err(EngineError::Plan {
        plan: plan.name.clone(),
        detail: "repair is not built yet".into(),
    })
}
