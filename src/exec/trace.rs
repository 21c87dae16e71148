//! The trace of a run. Its JSON keeps the reference's field names (`trace_id`,
//! `program_name`, `status`, `steps[]` with `step_id status output error retries usage
//! duration_ms`, `final_output`, `error`, `state_snapshots`, `suspended_step_id`,
//! `step_metrics`) and adds nanovm's own: a structured `failure`, per-step `fuel` and
//! `state_hash`, the snapshots' Merkle root, token and cost totals.

use super::adapter::Usage;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a run ended (or that it is suspended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Success,
    Failed,
    BudgetExceeded,
    Stalled,
    Suspended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failed => "failed",
            Status::BudgetExceeded => "budget_exceeded",
            Status::Stalled => "stalled",
            Status::Suspended => "suspended",
        }
    }
}

/// How one step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Success,
    Failed,
    Skipped,
    /// A tool answered `"PENDING"`: the run is suspended at this step.
    Pending,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Success => "success",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Pending => "pending",
        }
    }
}

/// Why a run did not succeed, as data. The classes are those of the conformance corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// `max_steps` reached before a step.
    MaxSteps,
    /// `max_tokens` reached before a step.
    MaxTokens,
    /// `max_stalled_steps` consecutive steps left the state unchanged.
    Stalled,
    /// A condition's chosen branch (`then` or `otherwise`) is absent.
    ConditionNoTarget,
    /// A jump names no step (the checker rejects such programs; kept for safety).
    ConditionTargetMissing,
    NextStepMissing,
    /// A resume cursor points at a step the program does not have.
    ResumeTargetMissing,
    ToolNotRegistered,
    /// An LLM reply outside `allowed_outputs`.
    AllowedOutputs,
    /// A condition failed at run time (a type error).
    ConditionEval,
    LlmTimeout,
    /// Sub-steps of a parallel step failed.
    ParallelFailed,
    /// The tool or the LLM failed.
    StepError,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::MaxSteps => "max_steps",
            ErrorClass::MaxTokens => "max_tokens",
            ErrorClass::Stalled => "stalled",
            ErrorClass::ConditionNoTarget => "condition_no_target",
            ErrorClass::ConditionTargetMissing => "condition_target_missing",
            ErrorClass::NextStepMissing => "next_step_missing",
            ErrorClass::ResumeTargetMissing => "resume_target_missing",
            ErrorClass::ToolNotRegistered => "tool_not_registered",
            ErrorClass::AllowedOutputs => "allowed_outputs",
            ErrorClass::ConditionEval => "condition_eval",
            ErrorClass::LlmTimeout => "llm_timeout",
            ErrorClass::ParallelFailed => "parallel_failed",
            ErrorClass::StepError => "step_error",
        }
    }
}

/// The structured form of a run's `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub class: ErrorClass,
    /// The step that failed, or that was about to run when a budget ran out.
    pub step_id: Option<String>,
    /// The missing jump target, for the `*_missing` classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// One executed step (or parallel sub-step: sub-steps come right before their parent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step_id: String,
    pub status: StepStatus,
    pub output: Value,
    pub error: Option<String>,
    /// Attempts beyond the first (the reference's `retries`).
    pub retries: u32,
    pub usage: Option<Usage>,
    pub duration_ms: f64,
    /// The parallel step this sub-step belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Instructions a condition executed (at most its static cost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u32>,
    /// SHA-256 of the canonical state after this top-level step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_hash: Option<String>,
}

/// Per-run counters (the reference's `StepMetrics`): one per top-level step by type, and
/// the retries of all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    pub llm_calls: u64,
    pub tool_calls: u64,
    pub condition_evals: u64,
    pub parallel_steps: u64,
    pub retries_total: u64,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub trace_id: String,
    pub program_name: String,
    pub status: Status,
    pub steps: Vec<StepRecord>,
    /// The output of the last successful step, for a successful run; `null` otherwise.
    pub final_output: Value,
    /// A one-line message (the reference's `error`).
    pub error: Option<String>,
    pub failure: Option<Failure>,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Wall time of the run so far (all resumptions included).
    pub duration_ms: f64,
    /// `[executed step number, state hash]` after each top-level step.
    pub state_snapshots: Vec<(u64, String)>,
    /// Merkle root over `state_snapshots` (the reference's `canonical_snapshot_hash`).
    pub snapshot_root: String,
    pub suspended_step_id: Option<String>,
    pub step_metrics: Metrics,
    pub total_tokens: u64,
    pub cost_usd: Option<f64>,
}

impl Trace {
    /// Step ids in trace order.
    pub fn executed(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(|s| s.step_id.as_str())
    }
}
