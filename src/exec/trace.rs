//! The trace of a run. Its JSON keeps the reference's field names (`trace_id`,
//! `program_name`, `status`, `steps[]` with `step_id status output error retries usage
//! duration_ms`, `final_output`, `error`, `state_snapshots`, `suspended_step_id`,
//! `step_metrics`) and adds nanovm's own: a structured `failure`, per-step `fuel` and
//! `state_hash`, the snapshots' Merkle root, token and cost totals.

use super::adapter::Usage;
use super::canon;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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

impl StepRecord {
    /// The record's fields in the order the trace format writes them (serde's order; a test
    /// keeps them equal).
    pub const FIELDS: [&'static str; 10] = [
        "step_id",
        "status",
        "output",
        "error",
        "retries",
        "usage",
        "duration_ms",
        "parent",
        "fuel",
        "state_hash",
    ];

    /// The record as canonical JSON (an audit envelope's payload), written directly: the
    /// same text as `canon::to_string(&serde_json::to_value(record))` (a test compares
    /// them), without building the value tree.
    pub fn canonical(&self) -> String {
        // Every field, so that a new one cannot be forgotten here.
        let StepRecord {
            step_id,
            status,
            output,
            error,
            retries,
            usage,
            duration_ms,
            parent,
            fuel,
            state_hash,
        } = self;
        let mut out = Vec::with_capacity(192);
        // Keys in byte order.
        out.extend_from_slice(b"{\"duration_ms\":");
        put_f64(*duration_ms, &mut out);
        out.extend_from_slice(b",\"error\":");
        put_opt_str(error.as_deref(), &mut out);
        if let Some(f) = fuel {
            out.extend_from_slice(b",\"fuel\":");
            canon::put_u64(u64::from(*f), &mut out);
        }
        out.extend_from_slice(b",\"output\":");
        canon::put(output, &mut out);
        if let Some(p) = parent {
            out.extend_from_slice(b",\"parent\":");
            canon::put_str(p, &mut out);
        }
        out.extend_from_slice(b",\"retries\":");
        canon::put_u64(u64::from(*retries), &mut out);
        if let Some(h) = state_hash {
            out.extend_from_slice(b",\"state_hash\":");
            canon::put_str(h, &mut out);
        }
        out.extend_from_slice(b",\"status\":\"");
        out.extend_from_slice(status.as_str().as_bytes());
        out.extend_from_slice(b"\",\"step_id\":");
        canon::put_str(step_id, &mut out);
        out.extend_from_slice(b",\"usage\":");
        match usage {
            None => out.extend_from_slice(b"null"),
            Some(Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens,
                cost_usd,
            }) => {
                out.extend_from_slice(b"{\"completion_tokens\":");
                canon::put_u64(*completion_tokens, &mut out);
                if let Some(c) = cost_usd {
                    out.extend_from_slice(b",\"cost_usd\":");
                    put_f64(*c, &mut out);
                }
                out.extend_from_slice(b",\"prompt_tokens\":");
                canon::put_u64(*prompt_tokens, &mut out);
                out.extend_from_slice(b",\"total_tokens\":");
                canon::put_u64(*total_tokens, &mut out);
                out.push(b'}');
            }
        }
        out.push(b'}');
        // Only UTF-8 was written (string fields are escaped from `&str`).
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

/// A float as serde_json serialises it into a value: a number, or `null` when not finite.
fn put_f64(x: f64, out: &mut Vec<u8>) {
    match serde_json::Number::from_f64(x) {
        Some(n) => canon::put(&Value::Number(n), out),
        None => out.extend_from_slice(b"null"),
    }
}

fn put_opt_str(s: Option<&str>, out: &mut Vec<u8>) {
    match s {
        Some(s) => canon::put_str(s, out),
        None => out.extend_from_slice(b"null"),
    }
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

/// A fresh trace id: an RFC 4122 version-4 UUID (lower-case, hyphenated).
///
/// Drawing 122 random bits from the OS per run costs a system call; instead 128 bits are
/// drawn once per process and mixed with a process-wide counter through bijections, so ids
/// are unique within a process (for 2^62 runs: the low 62 bits are a permutation of the
/// counter), unrelated across processes (the seed), and look random. They are identifiers,
/// not secrets.
pub(crate) fn new_trace_id() -> String {
    static SEED: OnceLock<(u64, u64)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (seed_hi, seed_lo) = *SEED.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    const LOW62: u64 = (1 << 62) - 1;
    // A permutation of [0, 2^62): xor with a constant, xorshift, multiply by an odd number.
    let mut lo = (n ^ seed_lo) & LOW62;
    lo ^= lo >> 29;
    lo = lo.wrapping_mul(0xbf58_476d_1ce4_e5b9) & LOW62;
    lo ^= lo >> 32;
    let hi = seed_hi ^ mix64(n ^ seed_lo.rotate_left(17));
    // The variant takes the two bits above the 62, the version a nibble of `hi`.
    let bytes = uuid::Uuid::from_u64_pair(hi, lo).into_bytes();
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut buf).to_owned()
}

/// The splitmix64 finaliser.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Now, as RFC 3339 UTC with milliseconds: `2024-05-01T12:00:00.123Z`.
pub(crate) fn timestamp_now() -> String {
    rfc3339_millis(SystemTime::now())
}

/// RFC 3339 UTC with milliseconds, the format of `humantime::format_rfc3339_millis` (times
/// before 1970 print as the epoch, after 9999 as its last millisecond).
fn rfc3339_millis(t: SystemTime) -> String {
    const MAX_SECS: u64 = 253_402_300_799; // 9999-12-31T23:59:59
    let (secs, millis) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.as_secs() <= MAX_SECS => (d.as_secs(), d.subsec_millis()),
        Ok(_) => (MAX_SECS, 999),
        Err(_) => (0, 0),
    };
    let (y, m, d) = civil_from_days(secs / 86_400);
    let s = secs % 86_400;
    let mut out = String::with_capacity(24);
    let put = |o: &mut String, n: u64, width: u32, sep: char| {
        for k in (0..width).rev() {
            o.push(char::from(b'0' + (n / 10u64.pow(k) % 10) as u8));
        }
        o.push(sep);
    };
    put(&mut out, y, 4, '-');
    put(&mut out, m, 2, '-');
    put(&mut out, d, 2, 'T');
    put(&mut out, s / 3600, 2, ':');
    put(&mut out, s / 60 % 60, 2, ':');
    put(&mut out, s % 60, 2, '.');
    put(&mut out, u64::from(millis), 3, 'Z');
    out
}

/// Days since 1970-01-01 → (year, month, day) of the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`, for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    #[test]
    fn timestamps_are_humantimes() {
        let mut secs: u64 = 0;
        while secs < 253_402_300_799 {
            for ms in [0, 7, 999] {
                let t = UNIX_EPOCH + Duration::new(secs, ms * 1_000_000 + 123);
                assert_eq!(
                    rfc3339_millis(t),
                    humantime::format_rfc3339_millis(t).to_string()
                );
            }
            secs = secs * 3 / 2 + 86_399;
        }
        for day in 0..(3 * 146_097) {
            let t = UNIX_EPOCH + Duration::from_secs(day * 86_400 + 86_399);
            assert_eq!(
                rfc3339_millis(t),
                humantime::format_rfc3339_millis(t).to_string()
            );
        }
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH + Duration::from_secs(u64::MAX / 4)),
            "9999-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn trace_ids_are_unique_v4_uuids() {
        let ids: Vec<String> = (0..10_000).map(|_| new_trace_id()).collect();
        let distinct: HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        for id in &ids {
            let u = uuid::Uuid::parse_str(id).unwrap_or_default();
            assert_eq!(u.get_version_num(), 4, "{id}");
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(&u.hyphenated().to_string(), id);
        }
    }

    #[test]
    fn fields_are_in_serdes_order() {
        let record = StepRecord {
            step_id: "s".into(),
            status: StepStatus::Success,
            output: Value::Null,
            error: None,
            retries: 0,
            usage: None,
            duration_ms: 0.0,
            parent: Some("p".into()),
            fuel: Some(1),
            state_hash: Some("h".into()),
        };
        let v = serde_json::to_value(&record).unwrap_or_default();
        let keys: Vec<&str> = v
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(keys, StepRecord::FIELDS);
    }

    #[test]
    fn canonical_records_match_the_value_path() {
        let usage = |cost| Usage {
            prompt_tokens: 12,
            completion_tokens: 3,
            total_tokens: 15,
            cost_usd: cost,
        };
        let base = StepRecord {
            step_id: "s\u{e9}p \"1\"".into(),
            status: StepStatus::Success,
            output: serde_json::json!({"b": [1, 1.5, "x\n", null], "a": {"z": true, "é": -7}}),
            error: None,
            retries: 0,
            usage: None,
            duration_ms: 0.0,
            parent: None,
            fuel: None,
            state_hash: None,
        };
        let records = [
            base.clone(),
            StepRecord {
                status: StepStatus::Failed,
                output: Value::Null,
                error: Some("boom\t\u{1}".into()),
                retries: 3,
                usage: Some(usage(None)),
                duration_ms: 12.34,
                parent: Some("par".into()),
                fuel: Some(7),
                state_hash: Some("ab".repeat(32)),
                ..base.clone()
            },
            StepRecord {
                status: StepStatus::Skipped,
                usage: Some(usage(Some(0.000_125))),
                duration_ms: 1e-7,
                output: Value::String("yes".into()),
                ..base.clone()
            },
            StepRecord {
                status: StepStatus::Pending,
                duration_ms: f64::NAN,
                usage: Some(usage(Some(f64::INFINITY))),
                output: serde_json::json!(u64::MAX),
                ..base
            },
        ];
        for r in &records {
            let via_value = serde_json::to_value(r).map(|v| canon::to_string(&v));
            assert_eq!(via_value.ok(), Some(r.canonical()), "{r:?}");
        }
    }
}
