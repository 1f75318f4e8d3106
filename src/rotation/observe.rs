//! Placeholder while observation is written.
use super::engine::{EngineError, Inner};
use super::report::Inventory;
use crate::plan::Plan;

pub(super) async fn inventory(_inner: &Inner, plan: &Plan) -> Result<Inventory, EngineError> {
    Err(EngineError::Plan {
        plan: plan.name.clone(),
        detail: "observation is not built yet".into(),
    })
}
