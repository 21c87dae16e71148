//! The MCP tools. Each is a thin surface over the library: `check` decides, `exec` runs,
//! `store` persists; this file turns arguments into calls and results into MCP results.
//!
//! Results are structured content (with the same JSON as text, for clients that only read
//! text). A program that fails the checks is rejected before anything runs: `isError: true`,
//! the ariadne report (no ANSI) as text, the diagnostics as structured content. Anything a
//! caller got wrong (a missing run, a bad argument) is a tool error with a message that says
//! what to do, never a protocol error; only an unknown tool name is a protocol error
//! (`-32602`, listing the tools).

use super::args::{
    CheckArgs, CheckResult, EraseArgs, EvalArgs, EvalResult, ListArgs, ProgramIdArgs, ResumeArgs,
    ResumeSource, RunArgs, RunResult, TraceArgs, VerifyArgs, VerifyResult,
};
use super::sampling::Sampling;
use crate::check::{Options, check_source};
use crate::diagnostics::render_json::to_json_all;
use crate::diagnostics::render_text::{TextOptions, render};
use crate::diagnostics::{Diagnostic, Severity, has_errors};
use crate::exec::adapter::Llm;
use crate::exec::setup::Adapters;
use crate::exec::{RunOptions, Runnable, Runtime, Source, Trace};
use crate::expr::names::Context;
use crate::expr::{Limits, analyze, class_of, env_from_context, runtime_diagnostic};
use crate::source::SourceFile;
use crate::store::{Content, Deletion, Erasure, Persisted, RunRequest, Store, StoreError};
use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, tool, tool_router};
use serde::Serialize;
use serde_json::{Value, json};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What the server tells a client about itself at initialisation.
const INSTRUCTIONS: &str = "nanovm checks and runs Programs: JSON workflows of `llm`, `tool`, \
`condition` and `parallel` steps. Call `check_program` to get precise diagnostics (code, step, \
JSON pointer, help) without running anything; `run_program` checks too and runs only a program \
without errors, persisting its trace and a hash-chained audit log. The `program` argument's \
JSON Schema describes the format. Conditions are a small sandboxed language \
(`$step.output == 'yes' and $amount > 100`); `evaluate_expression` tries one.";

/// How `NV0036` tells a client to give llm steps a model.
const NO_LLM_HELP: &str = "the server has no [llm] section in its nanovm.toml and this client \
does not offer MCP sampling: configure an LLM for the server (provider = \"openai\"), or use a \
client that supports sampling";

/// The longest list `list_programs` returns.
const MAX_LIST: u32 = 1000;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Delay before the first retry of a step with `on_error: retry`; doubling, at most 30×.
    pub retry_backoff: Duration,
    /// Largest program accepted, as pretty-printed JSON.
    pub max_program_bytes: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            retry_backoff: Duration::from_secs(1),
            max_program_bytes: crate::json::Limits::default().max_bytes,
        }
    }
}

/// Programs larger than this (as pretty JSON) are checked on every call, not cached.
const CACHED_PROGRAM_BYTES: usize = 64 * 1024;
/// How many checked programs the cache keeps (it is emptied when full).
const CACHED_PROGRAMS: usize = 256;

/// A program that passed the checks, ready to run, with its warnings.
struct Admitted {
    runnable: Runnable,
    warnings: Vec<Value>,
    /// The program's canonical text and id, made at its first run.
    content: std::sync::OnceLock<Content>,
}

/// Checked programs by text and LLM availability: agents send the same program again and
/// again, and the check's result depends only on these (the catalog is fixed for the server's
/// life). At most [`CACHED_PROGRAMS`] programs of at most [`CACHED_PROGRAM_BYTES`] each.
type CheckCache = std::sync::Mutex<std::collections::HashMap<(String, bool), Arc<Admitted>>>;

/// What every session shares.
struct Engine {
    store: Store,
    adapters: Adapters,
    policy: Content,
    opts: ServerOptions,
    checked: CheckCache,
}

/// The nanovm MCP server: one value per session, sharing one store and one tool catalog.
#[derive(Clone)]
pub struct NanovmServer {
    engine: Arc<Engine>,
    tool_router: ToolRouter<Self>,
}

impl fmt::Debug for NanovmServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NanovmServer")
            .field("store", &self.engine.store.path())
            .field("adapters", &self.engine.adapters)
            .finish()
    }
}

/// A tool error: the message as text, and `{"error": kind, "message": …}` as structured
/// content.
fn failure(kind: &str, message: impl Into<String>) -> CallToolResult {
    let message = message.into();
    let mut r = CallToolResult::error(vec![ContentBlock::text(message.clone())]);
    r.structured_content = Some(json!({"error": kind, "message": message}));
    r
}

/// A structured success: the value as structured content and as JSON text.
fn success(value: &impl Serialize) -> CallToolResult {
    match serde_json::to_value(value) {
        Ok(v) => CallToolResult::structured(v),
        Err(e) => failure("internal", format!("cannot encode the result: {e}")),
    }
}

/// A store error as a tool error: what the caller can act on says so.
fn store_failure(e: StoreError) -> CallToolResult {
    let kind = match &e {
        StoreError::NoRun(_) | StoreError::NoSecret(_) => "not_found",
        StoreError::KeyConflict { .. }
        | StoreError::BadKey(_)
        | StoreError::BadName(_)
        | StoreError::SecretConflict(_) => "invalid_argument",
        StoreError::Secret(_) => "invalid_argument",
        StoreError::NotSuspended { .. } | StoreError::ProgramDeleted { .. } => "invalid_state",
        _ => "store",
    };
    failure(kind, e.to_string())
}

fn count(diags: &[Diagnostic], severity: Severity) -> usize {
    diags.iter().filter(|d| d.severity == severity).count()
}

/// The JSON of diagnostics, as a list of values.
fn diagnostics_json(diags: &[Diagnostic], source: &SourceFile) -> Vec<Value> {
    to_json_all(diags, source)
        .into_iter()
        .filter_map(|d| serde_json::to_value(d).ok())
        .collect()
}

/// A program that failed the checks: the plain report as text, the diagnostics as data.
fn rejected(diags: &[Diagnostic], source: &SourceFile) -> CallToolResult {
    let errors = count(diags, Severity::Error);
    let mut text = render(diags, source, TextOptions { color: false });
    text.push_str(&format!(
        "\nrejected: the program has {errors} error{}; nothing ran. Fix them and call the tool again (`check_program` checks without running).\n",
        if errors == 1 { "" } else { "s" }
    ));
    let mut r = CallToolResult::error(vec![ContentBlock::text(text)]);
    r.structured_content = Some(json!({
        "error": "invalid_program",
        "valid": false,
        "errors": errors,
        "warnings": count(diags, Severity::Warning),
        "diagnostics": diagnostics_json(diags, source),
    }));
    r
}

fn run_result(p: Persisted, warnings: Vec<Value>) -> RunResult {
    let Trace {
        trace_id,
        status,
        steps,
        final_output,
        error,
        suspended_step_id,
        total_tokens,
        cost_usd,
        ..
    } = p.trace;
    RunResult {
        trace_id,
        program_id: p.program_id,
        status: status.as_str().to_owned(),
        steps: steps.len(),
        cost: cost_usd,
        total_tokens,
        final_output,
        error,
        suspended_step_id,
        replayed: p.replayed,
        warnings,
    }
}

#[tool_router]
impl NanovmServer {
    /// A server over a store, with the LLM, tools and policy of `adapters`.
    pub fn new(store: Store, adapters: Adapters, opts: ServerOptions) -> Self {
        let policy = Content::of(&adapters.policy_snapshot());
        Self {
            engine: Arc::new(Engine {
                store,
                adapters,
                policy,
                opts,
                checked: CheckCache::default(),
            }),
            tool_router: Self::tool_router(),
        }
    }

    /// The store this server persists runs in.
    pub fn store(&self) -> &Store {
        &self.engine.store
    }

    /// The LLM llm steps use with this client: the configured one, else the client's model
    /// through sampling, else none.
    fn llm_for(&self, peer: &Peer<RoleServer>) -> Option<Arc<dyn Llm>> {
        if let Some(llm) = &self.engine.adapters.llm {
            return Some(llm.clone());
        }
        Sampling::of(peer).map(|s| Arc::new(s) as Arc<dyn Llm>)
    }

    fn check_options(&self, has_llm: bool) -> Options {
        Options {
            catalog: Some(self.engine.adapters.catalog.clone()),
            no_llm: (!has_llm).then(|| NO_LLM_HELP.to_owned()),
            ..Options::default()
        }
    }

    fn runtime(&self, llm: Option<Arc<dyn Llm>>) -> Runtime {
        // Without an LLM the check rejected every llm step, so this one is never asked.
        let llm = llm.unwrap_or_else(|| Arc::new(crate::exec::mock::MockLlm::default()));
        let base = self.engine.opts.retry_backoff;
        Runtime::new(llm, self.engine.adapters.tools.clone()).with_options(RunOptions {
            backoff_base: base,
            backoff_max: base.saturating_mul(30),
            observer: None,
        })
    }

    /// The program argument as a source file the checker reads and diagnostics point into:
    /// pretty-printed, keys in the order the client sent them; a tool error when it is not an
    /// object or is over the server's size limit.
    fn program_source(&self, program: &Value) -> Result<SourceFile, Box<CallToolResult>> {
        if !program.is_object() {
            return Err(Box::new(failure(
                "invalid_argument",
                format!(
                    "`program` must be a JSON object (a Program with a `steps` array), not {}",
                    crate::json::describe(program)
                ),
            )));
        }
        let text = serde_json::to_string_pretty(program).map_err(|e| {
            Box::new(failure(
                "invalid_argument",
                format!("cannot read the program: {e}"),
            ))
        })?;
        let (len, max) = (text.len(), self.engine.opts.max_program_bytes);
        if len > max {
            return Err(Box::new(failure(
                "too_large",
                format!("the program is {len} bytes as JSON, over the server's limit of {max}"),
            )));
        }
        Ok(SourceFile::new("program.json", text))
    }

    /// Check a program's text: the checked program and its warnings, or the rejection.
    fn admit(
        &self,
        source: &SourceFile,
        has_llm: bool,
    ) -> Result<Arc<Admitted>, Box<CallToolResult>> {
        let text = source.text();
        let cacheable = text.len() <= CACHED_PROGRAM_BYTES;
        let key = (text.to_owned(), has_llm);
        if cacheable && let Some(hit) = self.cache().get(&key) {
            return Ok(hit.clone());
        }
        let report = check_source(text, &self.check_options(has_llm));
        let Some(checked) = report.checked.filter(|_| !has_errors(&report.diagnostics)) else {
            return Err(Box::new(rejected(&report.diagnostics, source)));
        };
        let warnings: Vec<Diagnostic> = report
            .diagnostics
            .into_iter()
            .filter(|d| d.severity == Severity::Warning)
            .collect();
        let admitted = Arc::new(Admitted {
            runnable: Runnable::new(checked),
            warnings: diagnostics_json(&warnings, source),
            content: std::sync::OnceLock::new(),
        });
        if cacheable {
            let mut cache = self.cache();
            if cache.len() >= CACHED_PROGRAMS {
                cache.clear();
            }
            cache.insert(key, admitted.clone());
        }
        Ok(admitted)
    }

    fn cache(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, bool), Arc<Admitted>>> {
        // A panic while holding the lock cannot leave the map inconsistent: keep using it.
        self.engine
            .checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[tool(
        description = "Check a Program without running it. Returns every problem as a diagnostic: \
stable code (NV…), severity, message, the step id, the JSON pointer into the program \
(e.g. /steps/2/condition), line and column in the program as pretty-printed JSON, and a help \
text with the fix. The text content is the same report rendered for reading. A program with \
no errors (`valid: true`) is what run_program accepts; warnings do not block a run.",
        output_schema = schema_for_output::<CheckResult>(),
        annotations(
            title = "Check a program",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn check_program(
        &self,
        Parameters(args): Parameters<CheckArgs>,
        peer: Peer<RoleServer>,
    ) -> CallToolResult {
        let source = match self.program_source(&args.program.0) {
            Ok(s) => s,
            Err(e) => return *e,
        };
        let has_llm = self.llm_for(&peer).is_some();
        let report = check_source(source.text(), &self.check_options(has_llm));
        let diags = &report.diagnostics;
        let result = CheckResult {
            valid: !has_errors(diags),
            errors: count(diags, Severity::Error),
            warnings: count(diags, Severity::Warning),
            diagnostics: diagnostics_json(diags, &source),
        };
        let mut text = render(diags, &source, TextOptions { color: false });
        text.push_str(&match (result.valid, result.warnings) {
            (true, 0) => "valid: no problems found\n".to_owned(),
            (true, w) => format!("valid, with {w} warning(s)\n"),
            (false, _) => format!("invalid: {} error(s)\n", result.errors),
        });
        let mut r = success(&result);
        r.content = vec![ContentBlock::text(text)];
        r
    }

    #[tool(
        description = "Check and run a Program, persisting its trace and a hash-chained audit log. \
A program with check errors is rejected before anything runs (isError: true, the rendered \
report as text, the diagnostics as structured content: fix and call again). Otherwise returns \
trace_id, program_id, status (success, failed, suspended, budget_exceeded, stalled), steps, \
cost, total_tokens and final_output. `context` is the run's data ($name reads context.name); a \
value {\"$secret\": \"...\"} is kept in the vault and only tools see it. `save_as` names the \
program for list_programs. With `idempotency_key`, a repeated call returns the first run's \
result instead of running again.",
        output_schema = schema_for_output::<RunResult>(),
        annotations(
            title = "Run a program",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn run_program(
        &self,
        Parameters(args): Parameters<RunArgs>,
        peer: Peer<RoleServer>,
    ) -> CallToolResult {
        let source = match self.program_source(&args.program.0) {
            Ok(s) => s,
            Err(e) => return *e,
        };
        let llm = self.llm_for(&peer);
        let admitted = match self.admit(&source, llm.is_some()) {
            Ok(ok) => ok,
            Err(rejection) => return *rejection,
        };
        let runtime = self.runtime(llm);
        let req = RunRequest {
            // The cache's key is the program's text, so an admitted program's content is
            // this program's.
            program: admitted
                .content
                .get_or_init(|| Content::of(&args.program.0))
                .clone(),
            context: args.context.unwrap_or_default(),
            policy: self.engine.policy.clone(),
            idempotency_key: args.idempotency_key,
            save_as: args.save_as,
        };
        match self
            .engine
            .store
            .run(&runtime, &admitted.runnable, req)
            .await
        {
            Ok(p) => success(&run_result(p, admitted.warnings.clone())),
            Err(e) => store_failure(e),
        }
    }

    #[tool(
        description = "The full trace of a run: every step record (status, output, error, \
duration, retries, fuel, state hash), final_output, tokens, cost, state snapshots. Secrets \
appear as vault://secret/<id> tokens, erased ones as [REDACTED_TOMBSTONE].",
        annotations(
            title = "Get a trace",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_trace(&self, Parameters(args): Parameters<TraceArgs>) -> CallToolResult {
        match self.engine.store.get_trace(&args.trace_id).await {
            Ok(Some(trace)) => CallToolResult::structured(trace),
            Ok(None) => failure(
                "not_found",
                format!(
                    "no run `{}` in the store (a trace_id comes from run_program's result)",
                    args.trace_id
                ),
            ),
            Err(e) => store_failure(e),
        }
    }

    #[tool(
        description = "The saved programs, newest first: program_id, name, created_at, the \
number of runs and the last run's time. Every program run is saved; save_as names it.",
        annotations(
            title = "List programs",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_programs(&self, Parameters(args): Parameters<ListArgs>) -> CallToolResult {
        let limit = args.limit.unwrap_or(100).min(MAX_LIST) as usize;
        match self.engine.store.list_programs(limit).await {
            Ok(programs) => success(&json!({ "programs": programs })),
            Err(e) => store_failure(e),
        }
    }

    #[tool(
        description = "A saved program's JSON, with its id, name and creation time.",
        annotations(
            title = "Get a program",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_program(&self, Parameters(args): Parameters<ProgramIdArgs>) -> CallToolResult {
        match self.engine.store.get_program(&args.program_id).await {
            Ok(Some(p)) => {
                let program: Value = match serde_json::from_str(&p.source) {
                    Ok(v) => v,
                    Err(e) => {
                        return failure(
                            "store",
                            format!("the stored program `{}` is not valid JSON: {e}", p.hash),
                        );
                    }
                };
                success(&json!({
                    "program_id": p.hash,
                    "name": p.name,
                    "created_at": p.created_at,
                    "program": program,
                }))
            }
            Ok(None) => failure(
                "not_found",
                format!(
                    "no program `{}` (list_programs shows the saved ones)",
                    args.program_id
                ),
            ),
            Err(e) => store_failure(e),
        }
    }

    #[tool(
        description = "Delete a saved program: its JSON is removed and list_programs no longer \
shows it. Its runs stay in the audit log (get_trace and verify_trace still work); running the \
same program again saves it again.",
        annotations(
            title = "Delete a program",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn delete_program(&self, Parameters(args): Parameters<ProgramIdArgs>) -> CallToolResult {
        match self.engine.store.delete_program(&args.program_id).await {
            Ok(Deletion::Deleted { runs_kept }) => success(&json!({
                "program_id": args.program_id,
                "deleted": true,
                "runs_kept": runs_kept,
            })),
            Ok(Deletion::NotFound) => failure(
                "not_found",
                format!(
                    "no program `{}` (list_programs shows the saved ones)",
                    args.program_id
                ),
            ),
            Err(e) => store_failure(e),
        }
    }

    #[tool(
        description = "Resume a suspended run (status `suspended`: a tool answered PENDING) with \
the payload it was waiting for. The run continues where the suspended step leads (its \
next_step, or the next step); the payload is readable as `$__webhook__` (e.g. \
`$__webhook__.approved`) and the source as `$__webhook_source__`, while the suspended step's \
own output stays \"PENDING\". The program is checked again against the current tools and \
policy. Returns the same fields as run_program.",
        output_schema = schema_for_output::<RunResult>(),
        annotations(
            title = "Resume a run",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn resume_program(
        &self,
        Parameters(args): Parameters<ResumeArgs>,
        peer: Peer<RoleServer>,
    ) -> CallToolResult {
        let stored = match self.engine.store.program_of_run(&args.trace_id).await {
            Ok(p) => p,
            Err(e) => return store_failure(e),
        };
        let source = SourceFile::new(
            format!("program {} of run {}", stored.name, args.trace_id),
            stored.source,
        );
        let llm = self.llm_for(&peer);
        let admitted = match self.admit(&source, llm.is_some()) {
            Ok(ok) => ok,
            Err(rejection) => return *rejection,
        };
        let runtime = self.runtime(llm);
        let from = match args.source.unwrap_or_default() {
            ResumeSource::Webhook => Source::Webhook,
            ResumeSource::Operator => Source::Operator,
            ResumeSource::Timer => Source::Timer,
        };
        let payload = args.payload.unwrap_or(Value::Null);
        match self
            .engine
            .store
            .resume(&runtime, &admitted.runnable, &args.trace_id, payload, from)
            .await
        {
            Ok(p) => success(&run_result(p, admitted.warnings.clone())),
            Err(e) => store_failure(e),
        }
    }

    #[tool(
        description = "Recompute a run's audit chain (or every run's, without trace_id) and \
report the first broken link: each envelope's hash covers its index, step, policy hash, state \
hash, payload and the previous hash. `ok: true` means every chain is intact.",
        output_schema = schema_for_output::<VerifyResult>(),
        annotations(
            title = "Verify audit chains",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn verify_trace(&self, Parameters(args): Parameters<VerifyArgs>) -> CallToolResult {
        match self.engine.store.verify(args.trace_id.as_deref()).await {
            Ok(verdicts) => {
                let ok = verdicts.iter().all(|v| v.broken.is_none());
                let runs = verdicts
                    .iter()
                    .map(|v| {
                        json!({
                            "run_id": v.run_id,
                            "envelopes": v.envelopes,
                            "ok": v.broken.is_none(),
                            "break": v.broken,
                        })
                    })
                    .collect();
                success(&VerifyResult { ok, runs })
            }
            Err(e) => store_failure(e),
        }
    }

    #[tool(
        description = "Erase a secret's value from the vault (GDPR erasure). Traces then show \
[REDACTED_TOMBSTONE] where the value was; the audit log only ever held the vault:// token, so \
every chain still verifies. The reference is vault://secret/<id> (or the id).",
        annotations(
            title = "Erase a secret",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn erase_secret(&self, Parameters(args): Parameters<EraseArgs>) -> CallToolResult {
        match self.engine.store.erase(&args.reference).await {
            Ok(e) => success(&json!({
                "reference": args.reference,
                "erased": true,
                "already_erased": e == Erasure::AlreadyErased,
            })),
            Err(e) => store_failure(e),
        }
    }

    #[tool(
        description = "Evaluate one condition expression in nanovm's sandboxed VM (no calls, no \
loops, bounded fuel) against a context {step_outputs: {...}, data: {...}}. Returns the boolean \
value and the fuel used with its static bound, or diagnostics pointing into the expression. \
Syntax: $name, $step.output.field, 'strings', numbers, true/false/null, == != < <= > >=, in, \
not in, contains, not, and, or (parenthesise when mixing and/or).",
        output_schema = schema_for_output::<EvalResult>(),
        annotations(
            title = "Evaluate an expression",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn evaluate_expression(&self, Parameters(args): Parameters<EvalArgs>) -> CallToolResult {
        let ctx = args.context.unwrap_or_default();
        let ctx = Context {
            step_outputs: ctx.step_outputs,
            data: ctx.data,
        };
        let source = SourceFile::new("<expression>", args.expression.clone());
        let analysis = analyze(
            &args.expression,
            &env_from_context(&ctx),
            &Limits::default(),
        );
        let invalid = |diags: &[Diagnostic]| {
            let mut text = render(diags, &source, TextOptions { color: false });
            text.push_str("the expression was not evaluated\n");
            let mut r = CallToolResult::error(vec![ContentBlock::text(text)]);
            r.structured_content = Some(json!({
                "error": class_of(diags),
                "diagnostics": diagnostics_json(diags, &source),
            }));
            r
        };
        let Some(cond) = analysis.condition else {
            return invalid(&analysis.diagnostics);
        };
        match cond.eval(&ctx) {
            Ok(out) => success(&EvalResult {
                value: out.value,
                fuel_used: out.fuel_used,
                fuel_bound: cond.cost(),
                warnings: diagnostics_json(&analysis.diagnostics, &source),
            }),
            Err(err) => {
                let mut diags = analysis.diagnostics;
                diags.push(runtime_diagnostic(&err));
                invalid(&diags)
            }
        }
    }
}

impl ServerHandler for NanovmServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("nanovm", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if self.tool_router.get(&request.name).is_none() {
            let names: Vec<String> = self
                .tool_router
                .list_all()
                .into_iter()
                .map(|t| t.name.into_owned())
                .collect();
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown tool `{}`; this server's tools: {}",
                    request.name,
                    names.join(", ")
                ),
                None,
            ));
        }
        let tcc = ToolCallContext::new(self, request, context);
        match self.tool_router.call(tcc).await? {
            // rmcp answers arguments that do not deserialize with a text-only error: give it
            // the structured form every other tool error has.
            CallToolResponse::Complete(mut r)
                if r.is_error == Some(true) && r.structured_content.is_none() =>
            {
                let message = r
                    .content
                    .iter()
                    .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
                    .collect::<Vec<_>>()
                    .join("\n");
                r.structured_content =
                    Some(json!({"error": "invalid_argument", "message": message}));
                Ok(CallToolResponse::Complete(r))
            }
            other => Ok(other),
        }
    }

    async fn list_tools(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, ErrorData> {
        Ok(rmcp::model::ListToolsResult::with_all_items(
            self.tool_router.list_all(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<rmcp::model::Tool> {
        self.tool_router.get(name).cloned()
    }
}
