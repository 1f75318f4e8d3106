//! Placeholder while status is written.
use super::engine::{EngineError, Inner};
use super::report::{PlanStatus, RotationReport};
use crate::plan::Plan;

pub(super) async fn status(
    _inner: &Inner,
    _plans: &[Plan],
) -> Result<Vec<PlanStatus>, EngineError> {
    Ok(Vec::new())
}

pub(super) fn history(
    inner: &Inner,
    plan: Option<&str>,
    limit: usize,
) -> Result<Vec<RotationReport>, EngineError> {
    let records = inner.journal().history(plan, limit)?;
    Ok(records
        .iter()
        .map(|r| RotationReport::build(r, None, None, false, None))
        .collect())
}
