//! The run loop. Control flow comes only from the checker's [`Graph`](crate::check::graph::Graph)
//! (`after`, `branch`, `skipped_condition`); this file decides what a step does, not where the
//! run goes next.

use super::adapter::{BoxFuture, CallError, Llm, LlmRequest, Tools, Usage, fmt_duration};
use super::canon::{hex, merkle_root};
use super::plan::{Runnable, StepPlan, render_arg, render_text};
use super::state::{CanonState, Section, State};
use super::trace::{
    ErrorClass, Failure, Metrics, Status, StepRecord, StepStatus, Trace, new_trace_id,
    timestamp_now,
};
use crate::check::graph::{Entry, Next};
use crate::expr::names::{Root, Scope};
use crate::program::{OnError, OnTimeout, StepType};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Sees steps as they run (the CLI's progress line).
pub trait Observer: Send + Sync + Debug {
    fn step_started(&self, _step_id: &str, _number: u64) {}
    fn step_finished(&self, _record: &StepRecord) {}
}

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Delay before the first retry; each further retry doubles it (the reference: 1 s).
    pub backoff_base: Duration,
    /// Upper bound of one retry delay (the reference: 30 s).
    pub backoff_max: Duration,
    pub observer: Option<Arc<dyn Observer>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            observer: None,
        }
    }
}

/// Who resumes a suspended run (the reference's `WebhookEvent.source`); the payload and the
/// source are data keys `__webhook__` and `__webhook_source__` of the resumed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Source {
    #[default]
    Webhook,
    Operator,
    Timer,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "WEBHOOK",
            Source::Operator => "OPERATOR",
            Source::Timer => "TIMER",
        }
    }
}

/// Where a suspended run continues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Continue {
    pub index: usize,
    pub step_id: String,
    /// Entered from a condition branch (the branch-leaf rule applies after it).
    pub branch: bool,
}

/// Everything needed to resume a suspended run (serialisable; the store persists it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    pub version: u32,
    pub program_name: String,
    pub suspended_step_id: String,
    /// `None`: the suspended step was the last one; resuming ends the run with success.
    pub next: Option<Continue>,
    pub state: State,
    pub trace: Trace,
    /// Top-level steps executed so far (for `max_steps`).
    pub executed: u64,
}

const CURSOR_VERSION: u32 = 1;

/// Why a cursor cannot be resumed with a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("the cursor has version {0}; this nanovm reads version {CURSOR_VERSION}")]
    Version(u32),
    #[error("the cursor belongs to program `{cursor}`, not `{program}`")]
    ProgramMismatch { cursor: String, program: String },
    #[error("the run is not suspended (status {0})")]
    NotSuspended(&'static str),
}

/// The result of a run: the trace, and a cursor when the run is suspended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub trace: Trace,
    pub cursor: Option<Cursor>,
}

/// Runs programs with one LLM and one tool registry.
#[derive(Debug, Clone)]
pub struct Runtime {
    llm: Arc<dyn Llm>,
    tools: Arc<dyn Tools>,
    opts: RunOptions,
}

impl Runtime {
    pub fn new(llm: Arc<dyn Llm>, tools: Arc<dyn Tools>) -> Self {
        Self {
            llm,
            tools,
            opts: RunOptions::default(),
        }
    }

    pub fn with_options(mut self, opts: RunOptions) -> Self {
        self.opts = opts;
        self
    }

    /// The same runtime with another tool registry.
    pub fn with_tools(mut self, tools: Arc<dyn Tools>) -> Self {
        self.tools = tools;
        self
    }

    pub fn tools(&self) -> &Arc<dyn Tools> {
        &self.tools
    }

    pub fn options(&self) -> &RunOptions {
        &self.opts
    }

    /// Run a program from its first step with a fresh random trace id.
    pub async fn run(&self, prog: &Runnable, context: Map<String, Value>) -> Outcome {
        self.run_as(prog, context, new_trace_id()).await
    }

    /// Run a program under a given trace id.
    pub async fn run_as(
        &self,
        prog: &Runnable,
        context: Map<String, Value>,
        trace_id: String,
    ) -> Outcome {
        let trace = Trace {
            trace_id,
            program_name: prog.name.clone(),
            status: Status::Suspended,
            steps: Vec::with_capacity(prog.records_hint),
            final_output: Value::Null,
            error: None,
            failure: None,
            started_at: now(),
            finished_at: None,
            duration_ms: 0.0,
            state_snapshots: Vec::with_capacity(prog.steps.len()),
            snapshot_root: String::new(),
            suspended_step_id: None,
            step_metrics: Metrics::default(),
            total_tokens: 0,
            cost_usd: None,
        };
        let start = (!prog.steps.is_empty()).then_some((0, Entry::Sequence));
        Run::new(self, prog, State::new(context), trace, 0)
            .drive(start)
            .await
    }

    /// Continue a suspended run: the payload and its source become data keys `__webhook__`
    /// and `__webhook_source__`, and the run goes on where the suspended step's own
    /// continuation leads (Q37).
    pub async fn resume(
        &self,
        prog: &Runnable,
        cursor: Cursor,
        payload: Value,
        source: Source,
    ) -> Result<Outcome, ResumeError> {
        if cursor.version != CURSOR_VERSION {
            return Err(ResumeError::Version(cursor.version));
        }
        if cursor.program_name != prog.name {
            return Err(ResumeError::ProgramMismatch {
                cursor: cursor.program_name,
                program: prog.name.clone(),
            });
        }
        if cursor.trace.status != Status::Suspended {
            return Err(ResumeError::NotSuspended(cursor.trace.status.as_str()));
        }
        let mut state = cursor.state;
        state.data.insert("__webhook__".to_owned(), payload);
        state.data.insert(
            "__webhook_source__".to_owned(),
            Value::String(source.as_str().to_owned()),
        );
        let mut trace = cursor.trace;
        trace.suspended_step_id = None;
        let run = Run::new(self, prog, state, trace, cursor.executed);
        let start = match cursor.next {
            None => None,
            Some(c) => {
                if prog.steps.get(c.index).map(|s| s.id.as_str()) != Some(c.step_id.as_str()) {
                    let msg = format!("resume: step_id '{}' not found in program", c.step_id);
                    return Ok(run.finish(
                        Status::Failed,
                        Some(Failure {
                            class: ErrorClass::ResumeTargetMissing,
                            step_id: Some(cursor.suspended_step_id),
                            target: Some(c.step_id),
                        }),
                        Some(msg),
                    ));
                }
                let entry = if c.branch {
                    Entry::Branch
                } else {
                    Entry::Sequence
                };
                Some((c.index, entry))
            }
        };
        Ok(run.drive(start).await)
    }
}

/// The sum of two usages (`None` when neither has one).
fn add_usage(a: Option<Usage>, b: Option<Usage>) -> Option<Usage> {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) => Some(Usage {
            prompt_tokens: a.prompt_tokens.saturating_add(b.prompt_tokens),
            completion_tokens: a.completion_tokens.saturating_add(b.completion_tokens),
            total_tokens: a.total_tokens.saturating_add(b.total_tokens),
            cost_usd: match (a.cost_usd, b.cost_usd) {
                (None, None) => None,
                (x, y) => Some(x.unwrap_or(0.0) + y.unwrap_or(0.0)),
            },
        }),
    }
}

fn now() -> String {
    timestamp_now()
}

/// A step failure before `on_error` is applied.
#[derive(Debug)]
struct Fail {
    class: ErrorClass,
    message: String,
    subs: Vec<StepRecord>,
    /// Tokens the failed attempt used (an LLM reply outside `allowed_outputs`): they count
    /// toward the step's usage and `max_tokens` like any others.
    usage: Option<Usage>,
}

impl Fail {
    fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            subs: Vec::new(),
            usage: None,
        }
    }

    fn call(e: CallError) -> Self {
        let class = match e {
            CallError::NotRegistered(_) => ErrorClass::ToolNotRegistered,
            _ => ErrorClass::StepError,
        };
        Self::new(class, e.to_string())
    }
}

/// What one attempt of a step produced.
#[derive(Debug)]
struct Done {
    output: Value,
    usage: Option<Usage>,
    subs: Vec<StepRecord>,
    fuel: Option<u32>,
    /// A condition's value.
    branch: Option<bool>,
}

impl Done {
    fn output(output: Value) -> Self {
        Self {
            output,
            usage: None,
            subs: Vec::new(),
            fuel: None,
            branch: None,
        }
    }
}

/// How a top-level step ended, after retries and `on_error`.
#[derive(Debug)]
enum Ended {
    Success { branch: Option<bool> },
    Skipped,
    Pending,
    Failed(ErrorClass),
}

/// What a run's names resolve to: the state it started with, and the outputs bound since,
/// by reference to the records that hold them (outputs are not copied into the state).
#[derive(Debug, Clone, Copy)]
struct Env<'a> {
    base: &'a State,
    prog: &'a Runnable,
    outs: &'a [Option<usize>],
    aliases: &'a [Option<usize>],
    records: &'a [StepRecord],
}

impl Env<'_> {
    fn bound(&self, slots: &[Option<usize>], slot: Option<usize>) -> Option<&Value> {
        let r = slots.get(slot?).copied().flatten()?;
        self.records.get(r).map(|r| &r.output)
    }
}

impl Scope for Env<'_> {
    /// The state's rule (a step id first, then a data key), with outputs bound in this run
    /// over the starting state's.
    fn root(&self, name: &str) -> Root<'_> {
        let slots = self.prog.names.get(name).copied().unwrap_or_default();
        if let Some(v) = self.bound(self.outs, slots.step) {
            Root::Step(v)
        } else if let Some(v) = self.base.step_outputs.get(name) {
            Root::Step(v)
        } else if let Some(v) = self.bound(self.aliases, slots.alias) {
            Root::Data(v)
        } else if let Some(v) = self.base.data.get(name) {
            Root::Data(v)
        } else {
            Root::Missing
        }
    }
}

/// A binding made by a successful step, in order (to rebuild the state for a cursor).
#[derive(Debug, Clone, Copy)]
struct Bound {
    section: Section,
    slot: usize,
    record: usize,
}

/// A run's working buffers, kept per thread between runs (their allocations are reused).
#[derive(Debug, Default)]
struct Scratch {
    /// The state's canonical JSON, kept in step with the bindings (every change goes
    /// through [`Run::apply`]).
    canon: CanonState,
    /// Per step-id slot, per alias slot: the record whose output is bound there.
    outs: Vec<Option<usize>>,
    aliases: Vec<Option<usize>>,
    bound: Vec<Bound>,
}

thread_local! {
    static SCRATCH: RefCell<Vec<Scratch>> = const { RefCell::new(Vec::new()) };
}

/// A [`Scratch`] that goes back to its thread's pool when the run ends.
#[derive(Debug)]
struct Pooled(Scratch);

impl Pooled {
    fn take(prog: &Runnable, state: &State) -> Self {
        let mut s = SCRATCH
            .try_with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.pop()))
            .ok()
            .flatten()
            .unwrap_or_default();
        s.canon.reset(state);
        s.outs.clear();
        s.outs.resize(prog.step_names.len(), None);
        s.aliases.clear();
        s.aliases.resize(prog.alias_names.len(), None);
        s.bound.clear();
        Self(s)
    }
}

impl Drop for Pooled {
    /// Back to this thread's pool: at most 32 sets of at most 16 KiB each are kept.
    fn drop(&mut self) {
        const KEEP: usize = 32;
        const KEEP_BYTES: usize = 16 * 1024;
        let s = std::mem::take(&mut self.0);
        if s.canon.capacity() > KEEP_BYTES {
            return;
        }
        let _ = SCRATCH.try_with(|p| {
            if let Ok(mut p) = p.try_borrow_mut()
                && p.len() < KEEP
            {
                p.push(s);
            }
        });
    }
}

struct Run<'r> {
    rt: &'r Runtime,
    prog: &'r Runnable,
    /// The state the run started with; never changed (see [`Env`]).
    base: State,
    scratch: Pooled,
    trace: Trace,
    executed: u64,
    last_hash: Option<[u8; 32]>,
    stalled: u64,
    clock: Instant,
    /// When the last step's attempt ended (see [`Run::step`]).
    mark: Instant,
    elapsed_before: f64,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

impl<'r> Run<'r> {
    /// Boxed: the run future then holds a pointer, not the run twice over (an async fn's
    /// by-value `self` is stored as argument and as local), and stays small to move.
    fn new(
        rt: &'r Runtime,
        prog: &'r Runnable,
        state: State,
        trace: Trace,
        executed: u64,
    ) -> Box<Self> {
        let elapsed_before = trace.duration_ms;
        let now = Instant::now();
        Box::new(Self {
            rt,
            prog,
            scratch: Pooled::take(prog, &state),
            base: state,
            trace,
            executed,
            last_hash: None,
            stalled: 0,
            clock: now,
            mark: now,
            elapsed_before,
        })
    }

    async fn drive(mut self: Box<Self>, start: Option<(usize, Entry)>) -> Outcome {
        let graph = self.prog.checked().graph();
        let mut at = start;
        while let Some((i, entry)) = at {
            let Some(step) = self.prog.steps.get(i) else {
                return self.fail(ErrorClass::NextStepMissing, None, None, "no such step");
            };
            if let Some(max) = self.prog.max_steps
                && self.executed >= max
            {
                let msg = format!(
                    "max_steps={max} exceeded after {} step(s), before step '{}'",
                    self.executed, step.id
                );
                return self.budget(ErrorClass::MaxSteps, &step.id, msg);
            }
            if let Some(max) = self.prog.max_tokens
                && self.trace.total_tokens >= max
            {
                let msg = format!(
                    "max_tokens={max} exceeded: {} tokens consumed, before step '{}'",
                    self.trace.total_tokens, step.id
                );
                return self.budget(ErrorClass::MaxTokens, &step.id, msg);
            }
            if let Some(o) = &self.rt.opts.observer {
                o.step_started(&step.id, self.executed + 1);
                // The observer's time is not the step's.
                self.mark = Instant::now();
            }
            let first = self.trace.steps.len();
            let ended = self.step(step, i).await;
            self.executed += 1;
            if matches!(ended, Ended::Success { .. }) {
                self.apply(step, first);
            }

            let digest = self.scratch.0.canon.digest();
            if self.last_hash == Some(digest) {
                self.stalled += 1;
            } else {
                self.stalled = 0;
            }
            self.last_hash = Some(digest);
            let hash = hex(&digest);
            if let Some(r) = self.trace.steps.last_mut() {
                r.state_hash = Some(hash.clone());
            }
            self.trace.state_snapshots.push((self.executed - 1, hash));
            if let Some(o) = &self.rt.opts.observer {
                for r in self.trace.steps.get(first..).unwrap_or_default() {
                    o.step_finished(r);
                }
            }

            if let Some(max) = self.prog.max_stalled_steps
                && self.stalled >= max
                && !matches!(ended, Ended::Pending | Ended::Failed(_))
            {
                let msg = format!(
                    "max_stalled_steps={max} exceeded: {} consecutive step(s) left the state unchanged, the last one '{}'",
                    self.stalled, step.id
                );
                return self
                    .fail(ErrorClass::Stalled, Some(&step.id), None, msg)
                    .with_status(Status::Stalled);
            }

            let next = match ended {
                Ended::Pending => return self.suspend(step, graph.after(i, entry)),
                Ended::Failed(class) => {
                    let msg = format!(
                        "Step '{}' failed: {}",
                        step.id,
                        self.trace
                            .steps
                            .last()
                            .and_then(|r| r.error.clone())
                            .unwrap_or_default()
                    );
                    return self.fail(class, Some(&step.id), None, msg);
                }
                Ended::Success { branch: Some(b) } => match graph.branch(i, b) {
                    Next::NoTarget => {
                        let msg = format!(
                            "Step '{}': condition is {}, and the step has no `{}` branch",
                            step.id,
                            if b { "true" } else { "false" },
                            if b { "then" } else { "otherwise" }
                        );
                        return self.fail(ErrorClass::ConditionNoTarget, Some(&step.id), None, msg);
                    }
                    other => other,
                },
                Ended::Skipped if step.kind == StepType::Condition => graph.skipped_condition(i),
                Ended::Success { .. } | Ended::Skipped => graph.after(i, entry),
            };
            at = match next {
                Next::Step(j, e) => Some((j, e)),
                Next::End => None,
                Next::NoTarget | Next::TargetMissing => {
                    return self.fail(
                        ErrorClass::NextStepMissing,
                        Some(&step.id),
                        None,
                        format!("Step '{}': its jump target is not in the program", step.id),
                    );
                }
            };
        }
        self.finish(Status::Success, None, None)
    }

    /// Add a top-level step (after its sub-steps) to the trace; the observer hears of them
    /// once the state hash is set.
    fn record(&mut self, step: &StepPlan, subs: Vec<StepRecord>, record: StepRecord) {
        let m = &mut self.trace.step_metrics;
        match step.kind {
            StepType::Llm => m.llm_calls += 1,
            StepType::Tool => m.tool_calls += 1,
            StepType::Condition => m.condition_evals += 1,
            StepType::Parallel => m.parallel_steps += 1,
        }
        m.retries_total += u64::from(record.retries);
        // Sub-steps first, then the step; each record is moved once (they are large).
        for r in subs.iter().chain(std::iter::once(&record)) {
            if let Some(u) = &r.usage {
                self.trace.total_tokens = self.trace.total_tokens.saturating_add(u.total_tokens);
                if let Some(c) = u.cost_usd {
                    self.trace.cost_usd = Some(self.trace.cost_usd.unwrap_or(0.0) + c);
                }
            }
        }
        if !subs.is_empty() {
            self.trace.steps.extend(subs);
        }
        self.trace.steps.push(record);
    }

    fn budget(self: Box<Self>, class: ErrorClass, step_id: &str, msg: String) -> Outcome {
        self.fail(class, Some(step_id), None, msg)
            .with_status(Status::BudgetExceeded)
    }

    fn fail(
        self: Box<Self>,
        class: ErrorClass,
        step_id: Option<&str>,
        target: Option<String>,
        msg: impl Into<String>,
    ) -> Outcome {
        let failure = Failure {
            class,
            step_id: step_id.map(str::to_owned),
            target,
        };
        self.finish(Status::Failed, Some(failure), Some(msg.into()))
    }

    /// Milliseconds since `started`; the end of this step is the start of the next one.
    fn lap(&mut self, started: Instant) -> f64 {
        self.mark = Instant::now();
        ms(self.mark.saturating_duration_since(started))
    }

    fn seal(&mut self) {
        self.trace.duration_ms = self.elapsed_before + ms(self.clock.elapsed());
        self.trace.snapshot_root = merkle_root(
            self.trace
                .state_snapshots
                .iter()
                .map(|(i, h)| (*i, h.as_str())),
        );
    }

    fn finish(
        mut self: Box<Self>,
        status: Status,
        failure: Option<Failure>,
        error: Option<String>,
    ) -> Outcome {
        self.seal();
        let t = &mut self.trace;
        t.status = status;
        t.final_output = if status == Status::Success {
            t.steps
                .iter()
                .rev()
                .find(|s| s.status == StepStatus::Success)
                .map(|s| s.output.clone())
                .unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        t.failure = failure;
        t.error = error;
        t.finished_at = Some(now());
        Outcome {
            trace: self.trace,
            cursor: None,
        }
    }

    fn suspend(mut self: Box<Self>, step: &StepPlan, next: Next) -> Outcome {
        self.seal();
        self.trace.status = Status::Suspended;
        self.trace.suspended_step_id = Some(step.id.clone());
        let next = match next {
            Next::Step(index, entry) => Some(Continue {
                index,
                step_id: self
                    .prog
                    .steps
                    .get(index)
                    .map(|s| s.id.clone())
                    .unwrap_or_default(),
                branch: entry == Entry::Branch,
            }),
            Next::End | Next::NoTarget | Next::TargetMissing => None,
        };
        let mut state = self.base;
        for b in &self.scratch.0.bound {
            let v = self
                .trace
                .steps
                .get(b.record)
                .map_or(Value::Null, |r| r.output.clone());
            let map = match b.section {
                Section::Data => &mut state.data,
                Section::StepOutputs => &mut state.step_outputs,
            };
            let names = match b.section {
                Section::Data => &self.prog.alias_names,
                Section::StepOutputs => &self.prog.step_names,
            };
            map.insert(names.get(b.slot).cloned().unwrap_or_default(), v);
        }
        let cursor = Cursor {
            version: CURSOR_VERSION,
            program_name: self.prog.name.clone(),
            suspended_step_id: step.id.clone(),
            next,
            state,
            trace: self.trace.clone(),
            executed: self.executed,
        };
        Outcome {
            trace: self.trace,
            cursor: Some(cursor),
        }
    }

    /// Run one top-level step with its retries and `on_error`, and record it (after its
    /// sub-steps).
    ///
    /// The step's time runs from the end of the previous step's attempt (or the start of
    /// the run, or the observer's `step_started`) to the end of its own: one clock read per
    /// step; the runtime's bookkeeping between two steps (hashing, recording: well under a
    /// microsecond) counts to the second.
    async fn step(&mut self, step: &StepPlan, index: usize) -> Ended {
        let started = self.mark;
        let mut attempt: u32 = 0;
        // Usage of failed attempts, added to the step's.
        let mut spent: Option<Usage> = None;
        loop {
            let env = Env {
                base: &self.base,
                prog: self.prog,
                outs: &self.scratch.0.outs,
                aliases: &self.scratch.0.aliases,
                records: &self.trace.steps,
            };
            let result = self.rt.attempt(self.prog, step, index, &env).await;
            match result {
                Ok(done) => {
                    let pending = step.kind == StepType::Tool
                        && matches!(&done.output, Value::String(s) if s == "PENDING");
                    let record = StepRecord {
                        step_id: step.id.clone(),
                        status: if pending {
                            StepStatus::Pending
                        } else {
                            StepStatus::Success
                        },
                        output: done.output,
                        error: None,
                        retries: attempt,
                        usage: add_usage(spent, done.usage),
                        duration_ms: self.lap(started),
                        parent: None,
                        fuel: done.fuel,
                        state_hash: None,
                    };
                    self.record(step, done.subs, record);
                    return if pending {
                        Ended::Pending
                    } else {
                        Ended::Success {
                            branch: done.branch,
                        }
                    };
                }
                Err(mut fail) => {
                    spent = add_usage(spent, fail.usage.take());
                    attempt += 1;
                    if step.on_error == OnError::Retry && attempt < step.max_retries {
                        // Boxed, as the other rare paths: the step future stays small.
                        Box::pin(tokio::time::sleep(self.rt.backoff(attempt))).await;
                        continue;
                    }
                    let skipped = step.on_error == OnError::Skip;
                    let record = StepRecord {
                        step_id: step.id.clone(),
                        status: if skipped {
                            StepStatus::Skipped
                        } else {
                            StepStatus::Failed
                        },
                        output: Value::Null,
                        error: Some(fail.message),
                        retries: attempt - 1,
                        usage: spent,
                        duration_ms: self.lap(started),
                        parent: None,
                        fuel: None,
                        state_hash: None,
                    };
                    let ended = if skipped {
                        Ended::Skipped
                    } else {
                        Ended::Failed(fail.class)
                    };
                    self.record(step, fail.subs, record);
                    return ended;
                }
            }
        }
    }

    /// A successful step's output goes into the state: under its id, its `output_key`, and
    /// for a parallel step each sub-step's output under the sub-step's id. The step's
    /// records are `first..` of the trace, the step's own last; the state binds to them.
    fn apply(&mut self, step: &StepPlan, first: usize) {
        let last = self.trace.steps.len().saturating_sub(1);
        let Some(record) = self.trace.steps.get(last) else {
            return;
        };
        let Scratch {
            canon,
            outs,
            aliases,
            bound,
        } = &mut self.scratch.0;
        let mut bind = |section: Section, slot: Option<usize>, record: usize| {
            let slots = match section {
                Section::Data => &mut *aliases,
                Section::StepOutputs => &mut *outs,
            };
            if let Some(slot) = slot {
                if let Some(s) = slots.get_mut(slot) {
                    *s = Some(record);
                }
                bound.push(Bound {
                    section,
                    slot,
                    record,
                });
            }
        };
        if let Some(k) = &step.output_key {
            canon.insert(Section::Data, k, &record.output);
            bind(Section::Data, step.alias, last);
        }
        canon.insert(Section::StepOutputs, &step.id, &record.output);
        bind(Section::StepOutputs, Some(step.slot), last);
        if step.kind == StepType::Parallel {
            // The sub-steps' records, in plan order, right before the parent's; each one's
            // output is the parent's output under its id (null when skipped).
            for (sub, k) in step.subs.iter().zip(first..last) {
                if let Some(r) = self.trace.steps.get(k) {
                    canon.insert(Section::StepOutputs, &sub.id, &r.output);
                }
                bind(Section::StepOutputs, Some(sub.slot), k);
            }
        }
    }
}

impl Outcome {
    fn with_status(mut self, status: Status) -> Self {
        self.trace.status = status;
        self
    }
}

impl Runtime {
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.opts
            .backoff_base
            .saturating_mul(factor)
            .min(self.opts.backoff_max)
    }

    /// One attempt of a top-level step.
    async fn attempt(
        &self,
        prog: &Runnable,
        step: &StepPlan,
        index: usize,
        state: &Env<'_>,
    ) -> Result<Done, Fail> {
        match step.kind {
            StepType::Llm => {
                let (text, usage) = self.llm(step, state).await?;
                let mut d = Done::output(Value::String(text));
                d.usage = usage;
                Ok(d)
            }
            StepType::Tool => self.tool(step, state).await.map(Done::output),
            StepType::Condition => {
                let Some(cond) = prog.checked().condition(index) else {
                    return Err(Fail::new(
                        ErrorClass::ConditionEval,
                        "the condition was not compiled",
                    ));
                };
                match cond.eval(state) {
                    Ok(o) => {
                        let target = prog
                            .checked()
                            .program()
                            .steps
                            .get(index)
                            .and_then(|s| if o.value { &s.then } else { &s.otherwise }.as_ref())
                            .map_or(Value::Null, |t| Value::String(t.value.clone()));
                        let mut d = Done::output(target);
                        d.fuel = Some(o.fuel_used);
                        d.branch = Some(o.value);
                        Ok(d)
                    }
                    Err(e) => Err(Fail::new(
                        ErrorClass::ConditionEval,
                        format!("condition `{}` failed: {e}", step.condition),
                    )),
                }
            }
            StepType::Parallel => Box::pin(self.parallel(step, state)).await,
        }
    }

    async fn parallel(&self, step: &StepPlan, state: &Env<'_>) -> Result<Done, Fail> {
        // Boxed one by one (not through an iterator adapter): the run future stays `Send`
        // for any lifetime, so runs can be spawned on a multi-thread runtime.
        let results: Vec<(StepRecord, Value)> = match step.max_concurrency {
            Some(n) if n < step.subs.len() => {
                // A finished sub-step frees its slot at once (unordered); the results are put
                // back in array order.
                let mut runs: Vec<BoxFuture<'_, (usize, (StepRecord, Value))>> =
                    Vec::with_capacity(step.subs.len());
                for (i, sub) in step.subs.iter().enumerate() {
                    let run = self.leaf(step, sub, state);
                    runs.push(Box::pin(async move { (i, run.await) }));
                }
                let mut done: Vec<(usize, (StepRecord, Value))> = futures_util::stream::iter(runs)
                    .buffer_unordered(n)
                    .collect()
                    .await;
                done.sort_unstable_by_key(|(i, _)| *i);
                done.into_iter().map(|(_, r)| r).collect()
            }
            _ => {
                let mut runs: Vec<BoxFuture<'_, (StepRecord, Value)>> =
                    Vec::with_capacity(step.subs.len());
                for sub in &step.subs {
                    runs.push(Box::pin(self.leaf(step, sub, state)));
                }
                futures_util::future::join_all(runs).await
            }
        };
        let mut outputs = Map::new();
        let mut failed = Vec::new();
        let mut subs = Vec::with_capacity(results.len());
        for (record, output) in results {
            match record.status {
                StepStatus::Failed => failed.push(record.step_id.clone()),
                StepStatus::Success => {
                    outputs.insert(record.step_id.clone(), output);
                }
                StepStatus::Skipped | StepStatus::Pending => {
                    outputs.insert(record.step_id.clone(), Value::Null);
                }
            }
            subs.push(record);
        }
        if !failed.is_empty() && step.on_error != OnError::Skip {
            return Err(Fail {
                class: ErrorClass::ParallelFailed,
                message: format!(
                    "Parallel step '{}': sub-steps failed: {}",
                    step.id,
                    failed.join(", ")
                ),
                subs,
                usage: None,
            });
        }
        let mut d = Done::output(Value::Object(outputs));
        d.subs = subs;
        Ok(d)
    }

    /// One sub-step of a parallel step: no retries; the parent's `on_error` decides between
    /// failed and skipped (Q33).
    async fn leaf(
        &self,
        parent: &StepPlan,
        sub: &StepPlan,
        state: &Env<'_>,
    ) -> (StepRecord, Value) {
        let started = Instant::now();
        let result = match sub.kind {
            StepType::Llm => self
                .llm(sub, state)
                .await
                .map(|(t, u)| (Value::String(t), u)),
            StepType::Tool => self.tool(sub, state).await.map(|v| (v, None)),
            StepType::Condition | StepType::Parallel => Err(Fail::new(
                ErrorClass::StepError,
                format!(
                    "a {} step cannot run inside a parallel step",
                    sub.kind.as_str()
                ),
            )),
        };
        let (status, output, error, usage) = match result {
            Ok((v, usage)) => (StepStatus::Success, v, None, usage),
            Err(f) if parent.on_error == OnError::Skip => {
                (StepStatus::Skipped, Value::Null, Some(f.message), None)
            }
            Err(f) => (StepStatus::Failed, Value::Null, Some(f.message), None),
        };
        let record = StepRecord {
            step_id: sub.id.clone(),
            status,
            output: output.clone(),
            error,
            retries: 0,
            usage,
            duration_ms: ms(started.elapsed()),
            parent: Some(parent.id.clone()),
            fuel: None,
            state_hash: None,
        };
        (record, output)
    }

    async fn llm(&self, step: &StepPlan, state: &Env<'_>) -> Result<(String, Option<Usage>), Fail> {
        let prompt = step
            .prompt
            .as_ref()
            .map(|p| render_text(p, state))
            .unwrap_or_default();
        let system = step.system.as_ref().map(|s| render_text(s, state));
        let req = LlmRequest {
            step_id: &step.id,
            system: system.as_deref(),
            prompt: &prompt,
        };
        let call = self.llm.complete(req);
        let result = match step.timeout {
            Some(d) => match Box::pin(tokio::time::timeout(d, call)).await {
                Ok(r) => r,
                Err(_) => Err(CallError::Timeout(d)),
            },
            None => call.await,
        };
        let (text, usage) = match result {
            Ok(reply) => (reply.text, reply.usage),
            Err(CallError::Timeout(d)) => {
                if step.on_timeout == OnTimeout::Fallback {
                    let text = step
                        .allowed
                        .as_ref()
                        .and_then(|a| a.first().cloned())
                        .unwrap_or_default();
                    (text, None)
                } else {
                    return Err(Fail::new(
                        ErrorClass::LlmTimeout,
                        format!("LLM call timed out after {}", fmt_duration(d)),
                    ));
                }
            }
            Err(e) => return Err(Fail::call(e)),
        };
        let Some(allowed) = &step.allowed else {
            return Ok((text, usage));
        };
        let stripped = text.trim();
        if allowed.iter().any(|a| a == stripped) {
            return Ok((stripped.to_owned(), usage));
        }
        if step.on_error == OnError::Skip
            && let Some(first) = allowed.first()
        {
            return Ok((first.clone(), usage));
        }
        let mut fail = Fail::new(
            ErrorClass::AllowedOutputs,
            format!(
                "LLM output {} is not one of allowed_outputs {}",
                Value::String(stripped.to_owned()),
                Value::from(allowed.clone())
            ),
        );
        fail.usage = usage;
        Err(fail)
    }

    async fn tool(&self, step: &StepPlan, state: &Env<'_>) -> Result<Value, Fail> {
        if !self.tools.contains(&step.tool) {
            return Err(Fail::call(CallError::NotRegistered(step.tool.clone())));
        }
        let args = match &step.args {
            Some(a) => render_arg(a, state),
            None => Value::Object(Map::new()),
        };
        self.tools.call(&step.tool, args).await.map_err(Fail::call)
    }
}
