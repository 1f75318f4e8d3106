//! The two-phase safe swap: a pure state machine that decides ([`machine`]) and an
//! engine that acts ([`engine`]): it observes Azure, performs each command, journals
//! intent before and result after, and resumes what a crash interrupted.

mod consumer;
pub mod describe;
mod dry_run;
pub mod engine;
mod executor;
mod incident;
mod lifecycle;
pub(crate) mod observe;
pub mod origin;
pub mod progress;
mod repair;
mod replicas;
pub mod report;
mod status;
pub(crate) mod step;
pub mod usage;

pub mod machine;

pub use engine::{Engine, EngineError, EngineOptions, RotateRequest};
pub use incident::{SAS_WARNING, SHARED_KEY_ADVICE};
pub use observe::required_permissions;
pub use origin::{Origin, Requester, Trigger};
pub use progress::{NoProgress, Progress, ProgressEvent};
pub use report::{
    CallService, DecisionReport, DryRun, IncidentReportPaths, Inventory, KeyPair, LastRotation,
    LeaseStatus, ParkedStatus, PlanStatus, PlannedCall, PlannedEffect, PlannedStep, RotationReport,
    RunningJob, ScheduleStatus, StepReport,
};
