//! Runtime integration tests: programs are checked the way `nanovm run` checks them (with a
//! tool catalog), prepared with [`Runnable::new`] and run by a [`Runtime`] with scripted
//! adapters (the mocks format), a small counting tool registry, or the `openai` adapter
//! against a local axum server.
//!
//! Everything that sleeps (mock LLM delays, retry backoffs, step timeouts, slow tools) runs on a
//! paused tokio clock, so no test waits for real time and elapsed virtual time can be asserted
//! exactly. Trace snapshots live in `snapshots/exec_*.snap` with the volatile fields
//! (`trace_id`, `started_at`, `finished_at`, every `duration_ms`) redacted; state hashes and
//! the snapshot Merkle root are kept: they are deterministic.
//!
//! Update snapshots with `INSTA_UPDATE=always cargo test --test exec_runtime`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use nanovm::check::catalog::{Catalog, ToolInfo};
use nanovm::check::{Options, check_source};
use nanovm::exec::adapter::{BoxFuture, CallError, Tools};
use nanovm::exec::mock::{MockLlm, Mocks};
use nanovm::exec::openai::{OpenAi, OpenAiConfig};
use nanovm::exec::{
    ErrorClass, Observer, Outcome, ResumeError, RunOptions, Runnable, Runtime, Source, Status,
    StepRecord, StepStatus, Trace,
};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A current-thread runtime on a paused clock: sleeps and timeouts take no real time.
fn block<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}

/// Check a program with a catalog of `tools` (every one allowed, output `any`), as
/// `nanovm run` does; panics with the errors when the checker rejects it.
fn prepare<'a>(program: &Value, tools: impl IntoIterator<Item = &'a str>) -> Runnable {
    let mut catalog = Catalog::new();
    for name in tools {
        catalog.insert(name, ToolInfo::default());
    }
    let opts = Options {
        catalog: Some(Arc::new(catalog)),
        ..Options::default()
    };
    let text = serde_json::to_string_pretty(program).unwrap();
    let report = check_source(&text, &opts);
    match report.checked {
        Some(checked) => Runnable::new(checked),
        None => {
            let errors: Vec<String> = report
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| format!("{} {}", d.code, d.message))
                .collect();
            panic!("the checker rejects the program: {errors:#?}")
        }
    }
}

/// Scripted adapters from the mocks format, and the program checked with the mocks' tools as
/// the catalog.
fn mocked(program: &Value, mocks: Value) -> (Runnable, Mocks) {
    let mocks = Mocks::from_value(mocks).unwrap();
    let prog = prepare(program, mocks.tools.names());
    (prog, mocks)
}

fn runtime(mocks: &Mocks) -> Runtime {
    Runtime::new(mocks.llm.clone(), mocks.tools.clone())
}

fn ctx(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("context must be an object, not {other}"),
    }
}

fn read_json(path: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Keys whose values change from run to run (wall-clock times and the random trace id).
const VOLATILE: [&str; 4] = ["trace_id", "started_at", "finished_at", "duration_ms"];

/// Replace every volatile field, at any depth (the trace, each step record, a cursor's trace).
fn redact(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    if VOLATILE.contains(&k.as_str()) {
                        // `finished_at: null` (a suspended run) stays visible.
                        if !v.is_null() {
                            *v = Value::String(format!("[{k}]"));
                        }
                    } else {
                        walk(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

fn redacted(trace: &Trace) -> Value {
    redact(serde_json::to_value(trace).unwrap())
}

fn snapshot(name: &str, description: &str, value: &Value) {
    insta::with_settings!({
        snapshot_path => "../snapshots",
        prepend_module_to_snapshot => false,
        description => description,
        omit_expression => true,
    }, {
        insta::assert_json_snapshot!(name, value);
    });
}

fn class(trace: &Trace) -> Option<ErrorClass> {
    trace.failure.as_ref().map(|f| f.class)
}

fn failed_step(trace: &Trace) -> Option<&str> {
    trace.failure.as_ref().and_then(|f| f.step_id.as_deref())
}

fn executed(trace: &Trace) -> Vec<&str> {
    trace.executed().collect()
}

fn step<'t>(trace: &'t Trace, id: &str) -> &'t StepRecord {
    trace
        .steps
        .iter()
        .find(|s| s.step_id == id)
        .unwrap_or_else(|| panic!("no step `{id}` in the trace"))
}

/// Sanity checks every trace must pass: one snapshot per top-level record, numbered in order,
/// each equal to the record's own `state_hash`; sub-step records carry no hash.
fn assert_consistent(trace: &Trace) {
    let top: Vec<&StepRecord> = trace.steps.iter().filter(|s| s.parent.is_none()).collect();
    assert_eq!(top.len(), trace.state_snapshots.len(), "{trace:#?}");
    for (k, (record, (n, hash))) in top.iter().zip(&trace.state_snapshots).enumerate() {
        assert_eq!(*n, k as u64);
        assert_eq!(record.state_hash.as_deref(), Some(hash.as_str()));
        assert_eq!(hash.len(), 64);
    }
    for s in trace.steps.iter().filter(|s| s.parent.is_some()) {
        assert_eq!(
            s.state_hash, None,
            "sub-step {} has a state hash",
            s.step_id
        );
    }
    assert_eq!(trace.snapshot_root.len(), 64);
}

// ---------------------------------------------------------------------------------------------
// Programs
// ---------------------------------------------------------------------------------------------

fn refund() -> (Value, Value, Value) {
    (
        read_json("examples/refund.json"),
        read_json("examples/refund.context.json"),
        read_json("examples/refund.mocks.json"),
    )
}

fn fanout_program() -> Value {
    json!({
        "name": "fanout",
        "steps": [
            {"id": "start", "type": "tool", "tool": "fetch", "args": {"q": "$query"}},
            {"id": "gather", "type": "parallel", "parallel_steps": [
                {"id": "a", "type": "tool", "tool": "fetch", "args": {"q": "$start.output.id"}},
                {"id": "b", "type": "tool", "tool": "broken"},
                {"id": "c", "type": "llm", "prompt": "Summarise $query"}
            ]},
            {"id": "after", "type": "tool", "tool": "fetch"}
        ]
    })
}

fn fanout_mocks() -> Value {
    json!({
        "tools": {"fetch": {"id": 7}, "broken": {"error": "connection refused"}},
        "llm": {"*": {"reply": "a summary", "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}}
    })
}

fn payment_program(name: &str) -> Value {
    json!({
        "name": name,
        "steps": [
            {"id": "init_payment", "type": "tool", "tool": "init_payment",
             "args": {"amount": "$amount"}, "output_key": "init"},
            {"id": "confirm", "type": "tool", "tool": "confirm",
             "args": {"hook": "$__webhook__", "src": "$__webhook_source__", "amount": "$amount"}},
            {"id": "paid", "type": "condition", "condition": "$__webhook__.status == 'paid'",
             "then": "ship", "otherwise": "cancel"},
            {"id": "ship", "type": "tool", "tool": "ship",
             "args": {"ref": "$__webhook__.ref", "by": "$__webhook_source__"}, "is_terminal": true},
            {"id": "cancel", "type": "tool", "tool": "cancel", "is_terminal": true}
        ]
    })
}

fn payment_mocks() -> Value {
    json!({
        "tools": {
            "init_payment": "PENDING",
            "confirm": {"confirmed": true},
            "ship": {"shipment": "S-1"},
            "cancel": {"cancelled": true}
        }
    })
}

fn tokens_program() -> Value {
    json!({
        "name": "tokens",
        "max_tokens": 15,
        "steps": [
            {"id": "a", "type": "llm", "prompt": "one"},
            {"id": "b", "type": "llm", "prompt": "two"},
            {"id": "c", "type": "llm", "prompt": "three"}
        ]
    })
}

fn tokens_mocks() -> Value {
    json!({"llm": {"*": {"reply": "ok", "usage":
        {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10, "cost_usd": 0.25}}}})
}

/// A poll loop whose tool keeps answering the same thing.
fn poller_program() -> Value {
    json!({
        "name": "poller",
        "max_steps": 20,
        "max_stalled_steps": 2,
        "steps": [
            {"id": "poll", "type": "tool", "tool": "status", "output_key": "status",
             "next_step": "check"},
            {"id": "check", "type": "condition", "condition": "$status.state == 'done'",
             "then": "finish", "otherwise": "poll"},
            {"id": "finish", "type": "tool", "tool": "notify", "is_terminal": true}
        ]
    })
}

fn poller_mocks() -> Value {
    json!({"tools": {"status": {"state": "running"}, "notify": "sent"}})
}

// ---------------------------------------------------------------------------------------------
// 1. Trace snapshots
// ---------------------------------------------------------------------------------------------

#[test]
fn snapshot_refund_example() {
    let (program, context, mocks) = refund();
    let (prog, mocks) = mocked(&program, mocks);
    let out = block(runtime(&mocks).run_as(&prog, ctx(context), "refund".into()));
    let t = &out.trace;
    assert_eq!(t.status, Status::Success, "{t:#?}");
    assert!(out.cursor.is_none());
    assert_eq!(
        executed(t),
        ["lookup", "classify", "route", "issue_refund"],
        "the first reply ' maybe' is retried, the second one is 'refund'"
    );
    assert_eq!(step(t, "classify").retries, 1);
    assert_eq!(step(t, "classify").output, json!("refund"));
    assert_eq!(
        t.final_output,
        json!({"refund_id": "R-A-1001", "status": "processed"})
    );
    assert_consistent(t);
    snapshot(
        "exec_refund",
        "examples/refund.json with refund.context.json and refund.mocks.json",
        &json!({"trace": redacted(t), "calls": mocks.log.calls()}),
    );
}

#[test]
fn snapshot_parallel_with_a_failed_sub_step() {
    let (prog, mocks) = mocked(&fanout_program(), fanout_mocks());
    let out = block(runtime(&mocks).run_as(&prog, ctx(json!({"query": "q1"})), "fanout".into()));
    let t = &out.trace;
    assert_eq!(t.status, Status::Failed);
    assert_eq!(class(t), Some(ErrorClass::ParallelFailed));
    assert_eq!(failed_step(t), Some("gather"));
    // Q32: the sub-step results are kept, before their parent, in array order.
    assert_eq!(executed(t), ["start", "a", "b", "c", "gather"]);
    assert_eq!(step(t, "a").status, StepStatus::Success);
    assert_eq!(step(t, "a").output, json!({"id": 7}));
    assert_eq!(step(t, "b").status, StepStatus::Failed);
    assert_eq!(step(t, "b").error.as_deref(), Some("connection refused"));
    assert_eq!(step(t, "c").status, StepStatus::Success);
    assert_eq!(step(t, "gather").status, StepStatus::Failed);
    assert_eq!(step(t, "gather").parent, None);
    for sub in ["a", "b", "c"] {
        assert_eq!(step(t, sub).parent.as_deref(), Some("gather"));
    }
    // The successful LLM sub-step's usage still counts.
    assert_eq!(t.total_tokens, 5);
    assert_consistent(t);
    snapshot(
        "exec_parallel_failed_sub_step",
        "a parallel step whose sub-step `b` fails (parent on_error: fail)",
        &json!({"trace": redacted(t), "calls": mocks.log.calls()}),
    );
}

#[test]
fn snapshot_suspend_and_resume() {
    let (prog, mocks) = mocked(&payment_program("payment"), payment_mocks());
    let rt = runtime(&mocks);
    let (first, first_calls, cursor, resumed, resumed_calls) = block(async {
        let out = rt
            .run_as(&prog, ctx(json!({"amount": 42})), "pay".into())
            .await;
        let first_calls = mocks.log.take();
        let cursor = out.cursor.clone().expect("a suspended run has a cursor");
        let resumed = rt
            .resume(
                &prog,
                cursor.clone(),
                json!({"status": "paid", "ref": "R-9"}),
                Source::Operator,
            )
            .await
            .unwrap();
        (out.trace, first_calls, cursor, resumed, mocks.log.take())
    });
    assert_eq!(first.status, Status::Suspended);
    assert_eq!(first.suspended_step_id.as_deref(), Some("init_payment"));
    assert_eq!(first.final_output, Value::Null);
    assert_eq!(first.finished_at, None);
    assert_consistent(&first);
    assert!(resumed.cursor.is_none());
    let r = &resumed.trace;
    assert_eq!(r.status, Status::Success, "{r:#?}");
    assert_eq!(r.trace_id, "pay", "a resumed run keeps its trace id");
    assert_eq!(r.suspended_step_id, None);
    assert_eq!(
        executed(r),
        ["init_payment", "confirm", "paid", "ship"],
        "the resumed trace continues the suspended one"
    );
    assert_eq!(
        r.state_snapshots.first(),
        first.state_snapshots.first(),
        "the snapshots before the suspension are kept"
    );
    assert_consistent(r);
    snapshot(
        "exec_suspend_resume",
        "payment: a tool answers PENDING; resumed by OPERATOR with {status: paid, ref: R-9}",
        &json!({
            "suspended": redacted(&first),
            "suspended_calls": first_calls,
            "cursor": redact(serde_json::to_value(&cursor).unwrap()),
            "resumed": redacted(r),
            "resumed_calls": resumed_calls,
        }),
    );
}

#[test]
fn snapshot_budget_exceeded() {
    let (prog, mocks) = mocked(&tokens_program(), tokens_mocks());
    let out = block(runtime(&mocks).run_as(&prog, Map::new(), "tokens".into()));
    let t = &out.trace;
    assert_eq!(t.status, Status::BudgetExceeded);
    assert_eq!(class(t), Some(ErrorClass::MaxTokens));
    assert_consistent(t);
    snapshot(
        "exec_budget_exceeded",
        "max_tokens 15, each LLM call uses 10 tokens and costs 0.25 USD",
        &json!({"trace": redacted(t), "calls": mocks.log.calls()}),
    );
}

#[test]
fn snapshot_stalled() {
    let (prog, mocks) = mocked(&poller_program(), poller_mocks());
    let out = block(runtime(&mocks).run_as(&prog, Map::new(), "poller".into()));
    let t = &out.trace;
    assert_eq!(t.status, Status::Stalled);
    assert_eq!(class(t), Some(ErrorClass::Stalled));
    // poll (new), check (new), poll (same state: 1), check (same state: 2) trips the limit.
    assert_eq!(executed(t), ["poll", "check", "poll", "check"]);
    assert_eq!(
        failed_step(t),
        Some("check"),
        "the step that tripped the limit"
    );
    assert_eq!(t.state_snapshots[1].1, t.state_snapshots[2].1);
    assert_eq!(t.state_snapshots[2].1, t.state_snapshots[3].1);
    assert_consistent(t);
    snapshot(
        "exec_stalled",
        "a poll loop with max_stalled_steps 2 whose tool always answers {state: running}",
        &json!({"trace": redacted(t), "calls": mocks.log.calls()}),
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Determinism
// ---------------------------------------------------------------------------------------------

/// Run a program twice with fresh mocks under different trace ids.
fn twice(program: &Value, context: &Value, mocks: &Value) -> (Trace, Trace) {
    let run = |id: &str| {
        let (prog, m) = mocked(program, mocks.clone());
        block(runtime(&m).run_as(&prog, ctx(context.clone()), id.into())).trace
    };
    (run("first"), run("second"))
}

#[test]
fn the_same_run_twice_gives_the_same_trace() {
    let (program, context, mocks) = refund();
    let cases = [
        (program, context, mocks),
        (fanout_program(), json!({"query": "q"}), fanout_mocks()),
        (tokens_program(), json!({}), tokens_mocks()),
        (poller_program(), json!({}), poller_mocks()),
    ];
    for (program, context, mocks) in &cases {
        let (a, b) = twice(program, context, mocks);
        assert_ne!(a.trace_id, b.trace_id);
        assert!(!a.state_snapshots.is_empty());
        assert_eq!(a.state_snapshots, b.state_snapshots);
        assert_eq!(a.snapshot_root, b.snapshot_root);
        assert_eq!(redacted(&a), redacted(&b));
    }
}

#[test]
fn a_different_context_gives_different_hashes() {
    let (program, context, mocks) = refund();
    let (a, _) = twice(&program, &context, &mocks);
    let mut other = context.clone();
    other["ticket"] = json!("Where is my parcel?");
    let (b, _) = twice(&program, &other, &mocks);
    assert_eq!(executed(&a), executed(&b));
    assert_ne!(a.state_snapshots[0].1, b.state_snapshots[0].1);
    assert_ne!(a.snapshot_root, b.snapshot_root);
}

// ---------------------------------------------------------------------------------------------
// 3. Retries and backoff
// ---------------------------------------------------------------------------------------------

fn flaky_program(max_retries: u64) -> Value {
    json!({
        "name": "flaky",
        "steps": [
            {"id": "call", "type": "tool", "tool": "flaky", "on_error": "retry",
             "max_retries": max_retries}
        ]
    })
}

fn flaky_mocks() -> Value {
    json!({"tools": {"flaky": {"sequence": [{"error": "e1"}, {"error": "e2"}, {"ok": true}]}}})
}

fn backoff(base_ms: u64, max_ms: u64) -> RunOptions {
    RunOptions {
        backoff_base: Duration::from_millis(base_ms),
        backoff_max: Duration::from_millis(max_ms),
        ..RunOptions::default()
    }
}

#[test]
fn retry_until_success_with_capped_backoff() {
    let (prog, mocks) = mocked(&flaky_program(3), flaky_mocks());
    let rt = runtime(&mocks).with_options(backoff(10, 15));
    let (out, elapsed) = block(async {
        let start = Instant::now();
        let out = rt.run_as(&prog, Map::new(), "t".into()).await;
        (out, start.elapsed())
    });
    let t = &out.trace;
    assert_eq!(t.status, Status::Success, "{t:#?}");
    assert_eq!(step(t, "call").retries, 2);
    assert_eq!(step(t, "call").output, json!({"ok": true}));
    assert_eq!(t.step_metrics.retries_total, 2);
    assert_eq!(t.step_metrics.tool_calls, 1, "one top-level step");
    assert_eq!(mocks.log.calls().len(), 3, "three attempts");
    // First retry after the base (10 ms), the second after 20 ms capped at 15 ms.
    assert_eq!(elapsed, Duration::from_millis(10 + 15));
}

#[test]
fn backoff_doubles_below_the_cap() {
    let (prog, mocks) = mocked(&flaky_program(3), flaky_mocks());
    let rt = runtime(&mocks).with_options(backoff(10, 1000));
    let elapsed = block(async {
        let start = Instant::now();
        let out = rt.run_as(&prog, Map::new(), "t".into()).await;
        assert_eq!(out.trace.status, Status::Success);
        start.elapsed()
    });
    assert_eq!(elapsed, Duration::from_millis(10 + 20));
}

#[test]
fn retries_exhausted_fails_with_the_last_error() {
    let mocks = json!({"tools": {"flaky": {"sequence": [{"error": "e1"}, {"error": "e2"}, {"error": "e3"}, "late"]}}});
    let (prog, mocks) = mocked(&flaky_program(3), mocks);
    let rt = runtime(&mocks).with_options(backoff(10, 15));
    let out = block(rt.run_as(&prog, Map::new(), "t".into()));
    let t = &out.trace;
    assert_eq!(t.status, Status::Failed);
    assert_eq!(class(t), Some(ErrorClass::StepError));
    assert_eq!(failed_step(t), Some("call"));
    // Q29: max_retries is the number of attempts.
    assert_eq!(mocks.log.calls().len(), 3);
    assert_eq!(step(t, "call").retries, 2);
    assert_eq!(step(t, "call").error.as_deref(), Some("e3"));
    assert_eq!(t.error.as_deref(), Some("Step 'call' failed: e3"));
}

#[test]
fn max_retries_one_means_no_retry() {
    let (prog, mocks) = mocked(&flaky_program(1), flaky_mocks());
    let rt = runtime(&mocks).with_options(backoff(10, 15));
    let (out, elapsed) = block(async {
        let start = Instant::now();
        let out = rt.run_as(&prog, Map::new(), "t".into()).await;
        (out, start.elapsed())
    });
    let t = &out.trace;
    assert_eq!(t.status, Status::Failed);
    assert_eq!(step(t, "call").retries, 0);
    assert_eq!(step(t, "call").error.as_deref(), Some("e1"));
    assert_eq!(mocks.log.calls().len(), 1);
    assert_eq!(t.step_metrics.retries_total, 0);
    assert_eq!(elapsed, Duration::ZERO, "no backoff without a retry");
}

// ---------------------------------------------------------------------------------------------
// 4. Timeouts
// ---------------------------------------------------------------------------------------------

fn slow_llm_program(extra: Value) -> Value {
    let mut s = json!({"id": "slow", "type": "llm", "prompt": "think", "timeout_seconds": 0.05});
    if let (Value::Object(s), Value::Object(extra)) = (&mut s, extra) {
        s.extend(extra);
    }
    json!({"name": "timeouts", "steps": [s]})
}

fn run_timed(program: &Value, reply: Value) -> (Trace, Duration) {
    let (prog, mocks) = mocked(program, json!({"llm": {"think": reply}}));
    let rt = runtime(&mocks);
    block(async {
        let start = Instant::now();
        let out = rt.run_as(&prog, Map::new(), "t".into()).await;
        (out.trace, start.elapsed())
    })
}

#[test]
fn a_slow_llm_reply_times_out() {
    let (t, elapsed) = run_timed(
        &slow_llm_program(json!({})),
        json!({"reply": "x", "delay_s": 1}),
    );
    assert_eq!(t.status, Status::Failed);
    assert_eq!(class(&t), Some(ErrorClass::LlmTimeout));
    assert_eq!(failed_step(&t), Some("slow"));
    assert_eq!(
        step(&t, "slow").error.as_deref(),
        Some("LLM call timed out after 50ms")
    );
    assert_eq!(elapsed, Duration::from_millis(50), "the call is abandoned");
}

#[test]
fn a_timeout_with_fallback_yields_the_first_allowed_output() {
    let program = slow_llm_program(json!({
        "on_timeout": "fallback", "allowed_outputs": ["unknown", "x"]
    }));
    let (t, elapsed) = run_timed(&program, json!({"reply": "x", "delay_s": 1}));
    assert_eq!(t.status, Status::Success, "{t:#?}");
    assert_eq!(step(&t, "slow").output, json!("unknown"));
    assert_eq!(step(&t, "slow").usage, None);
    assert_eq!(t.final_output, json!("unknown"));
    assert_eq!(elapsed, Duration::from_millis(50));
}

#[test]
fn a_fast_reply_beats_the_timeout() {
    let program = slow_llm_program(json!({
        "on_timeout": "fallback", "allowed_outputs": ["unknown", "x"]
    }));
    let (t, elapsed) = run_timed(&program, json!({"reply": "x", "delay_s": 0.01}));
    assert_eq!(t.status, Status::Success);
    assert_eq!(t.final_output, json!("x"));
    assert_eq!(elapsed, Duration::from_millis(10));

    let (t, _) = run_timed(
        &slow_llm_program(json!({})),
        json!({"reply": "x", "delay_s": 0.01}),
    );
    assert_eq!(t.status, Status::Success);
    assert_eq!(t.final_output, json!("x"));
}

#[test]
fn a_timeout_is_retried_like_any_step_error() {
    let program = slow_llm_program(json!({"on_error": "retry", "max_retries": 2}));
    let (prog, mocks) = mocked(
        &program,
        json!({"llm": {"think": {"sequence": [{"reply": "late", "delay_s": 1}, "quick"]}}}),
    );
    let rt = runtime(&mocks).with_options(backoff(100, 1000));
    let (t, elapsed) = block(async {
        let start = Instant::now();
        let out = rt.run_as(&prog, Map::new(), "t".into()).await;
        (out.trace, start.elapsed())
    });
    assert_eq!(t.status, Status::Success, "{t:#?}");
    assert_eq!(t.final_output, json!("quick"));
    assert_eq!(step(&t, "slow").retries, 1);
    assert_eq!(elapsed, Duration::from_millis(50 + 100));
}

// ---------------------------------------------------------------------------------------------
// 5. max_concurrency
// ---------------------------------------------------------------------------------------------

/// A tool registry with one tool, `slow`, that sleeps (virtual time: `args.ms`, default
/// 10 ms) and echoes its args, counting the calls in flight.
#[derive(Debug, Default)]
struct Slow {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    calls: AtomicUsize,
}

impl Tools for Slow {
    fn contains(&self, name: &str) -> bool {
        name == "slow"
    }

    fn call<'a>(&'a self, _name: &'a str, args: Value) -> BoxFuture<'a, Result<Value, CallError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(10);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(args)
        })
    }
}

fn six_slow(max_concurrency: Option<u64>) -> Value {
    let subs: Vec<Value> = (1..=6)
        .map(|n| json!({"id": format!("s{n}"), "type": "tool", "tool": "slow", "args": {"n": n}}))
        .collect();
    let mut par = json!({"id": "fan", "type": "parallel", "parallel_steps": subs});
    if let Some(n) = max_concurrency {
        par["max_concurrency"] = json!(n);
    }
    json!({"name": "six", "steps": [par]})
}

fn run_six(max_concurrency: Option<u64>) -> (Trace, Arc<Slow>, Duration) {
    let prog = prepare(&six_slow(max_concurrency), ["slow"]);
    let tools = Arc::new(Slow::default());
    let rt = Runtime::new(Arc::new(MockLlm::constant("unused")), tools.clone());
    let (trace, elapsed) = block(async {
        let start = Instant::now();
        let out = rt.run_as(&prog, Map::new(), "t".into()).await;
        (out.trace, start.elapsed())
    });
    (trace, tools, elapsed)
}

#[test]
fn max_concurrency_limits_calls_in_flight() {
    let (t, tools, elapsed) = run_six(Some(2));
    assert_eq!(t.status, Status::Success, "{t:#?}");
    assert_eq!(tools.calls.load(Ordering::SeqCst), 6);
    assert_eq!(tools.peak.load(Ordering::SeqCst), 2);
    assert_eq!(tools.in_flight.load(Ordering::SeqCst), 0);
    assert_eq!(elapsed, Duration::from_millis(30), "three waves of two");
    assert_eq!(executed(&t), ["s1", "s2", "s3", "s4", "s5", "s6", "fan"]);
    let outputs: Vec<Value> = t.steps.iter().take(6).map(|s| s.output.clone()).collect();
    let want: Vec<Value> = (1..=6).map(|n| json!({"n": n})).collect();
    assert_eq!(outputs, want, "sub-step records in array order");
    assert_eq!(
        t.final_output,
        json!({"s1": {"n": 1}, "s2": {"n": 2}, "s3": {"n": 3},
               "s4": {"n": 4}, "s5": {"n": 5}, "s6": {"n": 6}})
    );
}

#[test]
fn without_max_concurrency_all_sub_steps_overlap() {
    let (t, tools, elapsed) = run_six(None);
    assert_eq!(t.status, Status::Success);
    assert_eq!(tools.peak.load(Ordering::SeqCst), 6);
    assert_eq!(elapsed, Duration::from_millis(10));
    assert_eq!(executed(&t), ["s1", "s2", "s3", "s4", "s5", "s6", "fan"]);

    // A limit at or above the number of sub-steps is no limit.
    let (_, tools, elapsed) = run_six(Some(6));
    assert_eq!(tools.peak.load(Ordering::SeqCst), 6);
    assert_eq!(elapsed, Duration::from_millis(10));
}

#[test]
fn max_concurrency_one_runs_sub_steps_one_by_one() {
    let (t, tools, elapsed) = run_six(Some(1));
    assert_eq!(t.status, Status::Success);
    assert_eq!(tools.peak.load(Ordering::SeqCst), 1);
    assert_eq!(elapsed, Duration::from_millis(60));
}

#[test]
fn max_concurrency_keeps_every_slot_busy() {
    // s1 takes 100 ms, s2..s6 10 ms each, at most 2 at a time: with a semaphore, s2..s6 run
    // one after the other in the second slot while s1 runs (100 ms in all). `buffered(2)`
    // starts s3 only once s1 is done (120 ms), with one call in flight from 10 ms to 100 ms.
    let mut program = six_slow(Some(2));
    program["steps"][0]["parallel_steps"][0]["args"]["ms"] = json!(100);
    let prog = prepare(&program, ["slow"]);
    let tools = Arc::new(Slow::default());
    let rt = Runtime::new(Arc::new(MockLlm::constant("unused")), tools.clone());
    let (t, elapsed) = block(async {
        let start = Instant::now();
        let out = rt.run_as(&prog, Map::new(), "t".into()).await;
        (out.trace, start.elapsed())
    });
    assert_eq!(t.status, Status::Success);
    assert_eq!(tools.peak.load(Ordering::SeqCst), 2);
    assert_eq!(executed(&t), ["s1", "s2", "s3", "s4", "s5", "s6", "fan"]);
    assert_eq!(elapsed, Duration::from_millis(100));
}

// ---------------------------------------------------------------------------------------------
// 6. Suspend and resume
// ---------------------------------------------------------------------------------------------

/// The payment program suspended at `init_payment`, with its runtime and mocks.
fn suspended_payment() -> (Runnable, Mocks, Outcome) {
    let (prog, mocks) = mocked(&payment_program("payment"), payment_mocks());
    let out = block(runtime(&mocks).run_as(&prog, ctx(json!({"amount": 42})), "pay".into()));
    assert_eq!(out.trace.status, Status::Suspended);
    mocks.log.take();
    (prog, mocks, out)
}

#[test]
fn a_cursor_round_trips_through_json() {
    let (prog, mocks, out) = suspended_payment();
    let cursor = out.cursor.unwrap();
    let text = serde_json::to_string(&cursor).unwrap();
    let copy: nanovm::exec::Cursor = serde_json::from_str(&text).unwrap();
    assert_eq!(copy, cursor);
    assert_eq!(copy.suspended_step_id, "init_payment");
    assert_eq!(
        copy.next.as_ref().map(|c| c.step_id.as_str()),
        Some("confirm")
    );
    assert_eq!(copy.executed, 1);

    let payload = json!({"status": "paid", "ref": "R-1"});
    let rt = runtime(&mocks);
    let from_original = block(rt.resume(&prog, cursor, payload.clone(), Source::Webhook)).unwrap();
    let original_calls = mocks.log.take();
    // The copy resumes in a fresh process: new mocks, new runtime.
    let (prog2, mocks2) = mocked(&payment_program("payment"), payment_mocks());
    let from_copy = block(runtime(&mocks2).resume(&prog2, copy, payload, Source::Webhook)).unwrap();
    assert_eq!(from_original.trace.status, Status::Success);
    assert_eq!(redacted(&from_copy.trace), redacted(&from_original.trace));
    assert_eq!(from_copy.trace.trace_id, "pay");
    assert_eq!(mocks2.log.calls(), original_calls);
}

#[test]
fn a_cursor_with_a_cost_round_trips_through_json() {
    // Costs are sums of floats; the cursor must come back equal.
    let program = json!({
        "name": "costly",
        "steps": [
            {"id": "a", "type": "llm", "prompt": "one"},
            {"id": "b", "type": "llm", "prompt": "two"},
            {"id": "wait", "type": "tool", "tool": "wait"},
            {"id": "c", "type": "llm", "prompt": "three"}
        ]
    });
    let mocks = json!({
        "tools": {"wait": "PENDING"},
        "llm": {
            "one": {"reply": "1", "usage": {"prompt_tokens": 1234, "completion_tokens": 567, "total_tokens": 1801, "cost_usd": 0.0048}},
            "two": {"reply": "2", "usage": {"prompt_tokens": 89, "completion_tokens": 13, "total_tokens": 102, "cost_usd": 0.0031}},
            "three": "3"
        }
    });
    let (prog, mocks) = mocked(&program, mocks);
    let rt = runtime(&mocks);
    let out = block(rt.run_as(&prog, Map::new(), "c".into()));
    let cursor = out.cursor.unwrap();
    assert_eq!(cursor.trace.total_tokens, 1903);
    assert!(cursor.trace.cost_usd.is_some());
    let copy: nanovm::exec::Cursor =
        serde_json::from_str(&serde_json::to_string(&cursor).unwrap()).unwrap();
    assert_eq!(copy, cursor);
    let done = block(rt.resume(&prog, copy, Value::Null, Source::Timer)).unwrap();
    assert_eq!(done.trace.status, Status::Success);
    assert_eq!(done.trace.final_output, json!("3"));
    assert_eq!(done.trace.total_tokens, 1903);
}

#[test]
fn resume_with_another_programs_cursor_is_refused() {
    let (_, mocks, out) = suspended_payment();
    let other = prepare(
        &payment_program("another"),
        ["init_payment", "confirm", "ship", "cancel"],
    );
    let err =
        block(runtime(&mocks).resume(&other, out.cursor.unwrap(), Value::Null, Source::Webhook))
            .unwrap_err();
    assert_eq!(
        err,
        ResumeError::ProgramMismatch {
            cursor: "payment".into(),
            program: "another".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "the cursor belongs to program `payment`, not `another`"
    );
    assert!(mocks.log.calls().is_empty(), "nothing ran");
}

#[test]
fn resume_of_a_cursor_that_is_not_suspended_is_refused() {
    let (prog, mocks, out) = suspended_payment();
    let rt = runtime(&mocks);
    let mut cursor = out.cursor.unwrap();
    // A cursor for a run that has finished since (e.g. resumed by someone else).
    let finished = block(rt.resume(
        &prog,
        cursor.clone(),
        json!({"status": "paid"}),
        Source::Webhook,
    ))
    .unwrap();
    mocks.log.take();
    cursor.trace = finished.trace;
    let err = block(rt.resume(&prog, cursor.clone(), Value::Null, Source::Webhook)).unwrap_err();
    assert_eq!(err, ResumeError::NotSuspended("success"));
    assert_eq!(err.to_string(), "the run is not suspended (status success)");

    cursor.trace.status = Status::Failed;
    let err = block(rt.resume(&prog, cursor.clone(), Value::Null, Source::Webhook)).unwrap_err();
    assert_eq!(err, ResumeError::NotSuspended("failed"));

    cursor.trace.status = Status::Suspended;
    cursor.version = 99;
    let err = block(rt.resume(&prog, cursor, Value::Null, Source::Webhook)).unwrap_err();
    assert_eq!(err, ResumeError::Version(99));
    assert!(mocks.log.calls().is_empty(), "nothing ran");
}

#[test]
fn the_webhook_payload_and_source_are_visible_to_later_steps() {
    for (payload, source, path) in [
        (
            json!({"status": "paid", "ref": "R-7"}),
            Source::Webhook,
            "ship",
        ),
        (json!({"status": "declined"}), Source::Timer, "cancel"),
    ] {
        let (prog, mocks, out) = suspended_payment();
        let done =
            block(runtime(&mocks).resume(&prog, out.cursor.unwrap(), payload.clone(), source))
                .unwrap();
        let t = &done.trace;
        assert_eq!(t.status, Status::Success, "{t:#?}");
        assert_eq!(executed(t), ["init_payment", "confirm", "paid", path]);
        let calls = mocks.log.calls();
        assert_eq!(
            calls[0],
            json!({"tool": "confirm", "args": {"hook": payload, "src": source.as_str(), "amount": 42}})
        );
        if path == "ship" {
            assert_eq!(
                calls[1],
                json!({"tool": "ship", "args": {"ref": "R-7", "by": "WEBHOOK"}})
            );
        }
    }
}

#[test]
fn resume_of_a_run_suspended_at_its_last_step_ends_it() {
    let program = json!({"name": "last", "steps": [
        {"id": "a", "type": "tool", "tool": "a"},
        {"id": "wait", "type": "tool", "tool": "wait"}
    ]});
    let (prog, mocks) = mocked(&program, json!({"tools": {"a": 1, "wait": "PENDING"}}));
    let rt = runtime(&mocks);
    let out = block(rt.run_as(&prog, Map::new(), "t".into()));
    let cursor = out.cursor.unwrap();
    assert_eq!(cursor.next, None);
    let done = block(rt.resume(&prog, cursor, json!("ok"), Source::Webhook)).unwrap();
    assert_eq!(done.trace.status, Status::Success);
    assert_eq!(executed(&done.trace), ["a", "wait"]);
    // The pending step's output is not a success; the last successful output is `a`'s.
    assert_eq!(done.trace.final_output, json!(1));
}

#[test]
fn resume_into_a_step_the_program_no_longer_has_fails_the_run() {
    let (prog, mocks, out) = suspended_payment();
    let mut cursor = out.cursor.unwrap();
    if let Some(next) = cursor.next.as_mut() {
        next.step_id = "ghost".into();
    }
    let done = block(runtime(&mocks).resume(&prog, cursor, Value::Null, Source::Webhook)).unwrap();
    let t = &done.trace;
    assert_eq!(t.status, Status::Failed);
    assert_eq!(class(t), Some(ErrorClass::ResumeTargetMissing));
    assert_eq!(failed_step(t), Some("init_payment"));
    assert_eq!(
        t.failure.as_ref().and_then(|f| f.target.as_deref()),
        Some("ghost")
    );
    assert_eq!(
        t.error.as_deref(),
        Some("resume: step_id 'ghost' not found in program")
    );
    assert!(mocks.log.calls().is_empty(), "nothing ran");
}

// ---------------------------------------------------------------------------------------------
// 7. Budgets
// ---------------------------------------------------------------------------------------------

#[test]
fn max_tokens_stops_before_the_step_after_the_one_that_crossed_it() {
    let (prog, mocks) = mocked(&tokens_program(), tokens_mocks());
    let out = block(runtime(&mocks).run_as(&prog, Map::new(), "t".into()));
    let t = &out.trace;
    assert_eq!(t.status, Status::BudgetExceeded);
    assert_eq!(class(t), Some(ErrorClass::MaxTokens));
    // a: 10 (< 15, b runs); b: 20 (>= 15): c never runs.
    assert_eq!(executed(t), ["a", "b"]);
    assert_eq!(failed_step(t), Some("c"), "the step that was about to run");
    assert_eq!(
        t.error.as_deref(),
        Some("max_tokens=15 exceeded: 20 tokens consumed, before step 'c'")
    );
    assert_eq!(t.total_tokens, 20);
    assert_eq!(t.cost_usd, Some(0.5));
    assert_eq!(t.final_output, Value::Null);
    assert_eq!(mocks.log.calls().len(), 2);
}

#[test]
fn max_tokens_exactly_reached_by_the_last_step_is_no_error() {
    let program = json!({"name": "t", "max_tokens": 20, "steps": [
        {"id": "a", "type": "llm", "prompt": "one"},
        {"id": "b", "type": "llm", "prompt": "two"}
    ]});
    let (prog, mocks) = mocked(&program, tokens_mocks());
    let out = block(runtime(&mocks).run_as(&prog, Map::new(), "t".into()));
    assert_eq!(out.trace.status, Status::Success);
    assert_eq!(out.trace.total_tokens, 20);
}

#[test]
fn tokens_of_rejected_llm_replies_count() {
    let program = json!({"name": "t", "max_tokens": 15, "steps": [
        {"id": "classify", "type": "llm", "prompt": "q", "allowed_outputs": ["yes", "no"],
         "on_error": "retry", "max_retries": 3},
        {"id": "next", "type": "llm", "prompt": "again"}
    ]});
    let reply = |text: &str| json!({"reply": text, "usage": {"total_tokens": 10, "cost_usd": 0.5}});
    let mocks = json!({"llm": {"q": {"sequence": [reply("maybe"), reply("yes")]}, "again": "x"}});
    let (prog, mocks) = mocked(&program, mocks);
    let out = block(runtime(&mocks).run_as(&prog, Map::new(), "t".into()));
    let t = &out.trace;
    assert_eq!(step(t, "classify").retries, 1);
    // Two replies of 10 tokens each were consumed (a parallel step's failed run counts the
    // usage of its successful sub-steps; a top-level step's rejected attempts should too).
    assert_eq!(t.total_tokens, 20);
    assert_eq!(t.cost_usd, Some(1.0));
    assert_eq!(
        t.status,
        Status::BudgetExceeded,
        "20 tokens >= max_tokens 15"
    );
}

/// tick → check → (tick → check)* → done: tick answers 1, 2, 3, …; the loop ends at 3.
fn counter_program(max_steps: u64) -> Value {
    json!({
        "name": "counter",
        "max_steps": max_steps,
        "steps": [
            {"id": "tick", "type": "tool", "tool": "tick", "next_step": "check"},
            {"id": "check", "type": "condition", "condition": "$tick < 3",
             "then": "tick", "otherwise": "done"},
            {"id": "done", "type": "tool", "tool": "done", "is_terminal": true}
        ]
    })
}

fn counter_mocks() -> Value {
    json!({"tools": {"tick": {"sequence": [1, 2, 3, 4, 5, 6]}, "done": "finished"}})
}

#[test]
fn max_steps_is_exact_on_a_bounded_loop() {
    // tick check tick check tick check done: 7 steps.
    let (prog, mocks) = mocked(&counter_program(7), counter_mocks());
    let out = block(runtime(&mocks).run_as(&prog, Map::new(), "t".into()));
    let t = &out.trace;
    assert_eq!(t.status, Status::Success, "{t:#?}");
    assert_eq!(
        executed(t),
        ["tick", "check", "tick", "check", "tick", "check", "done"]
    );
    assert_eq!(t.final_output, json!("finished"));
    assert_eq!(t.state_snapshots.len(), 7);

    let (prog, mocks) = mocked(&counter_program(6), counter_mocks());
    let out = block(runtime(&mocks).run_as(&prog, Map::new(), "t".into()));
    let t = &out.trace;
    assert_eq!(t.status, Status::BudgetExceeded);
    assert_eq!(class(t), Some(ErrorClass::MaxSteps));
    assert_eq!(t.steps.len(), 6);
    assert_eq!(failed_step(t), Some("done"));
    assert_eq!(
        t.error.as_deref(),
        Some("max_steps=6 exceeded after 6 step(s), before step 'done'")
    );
    assert!(
        !mocks
            .log
            .calls()
            .contains(&json!({"tool": "done", "args": {}}))
    );
}

#[test]
fn max_steps_counts_parallel_steps_once() {
    let program = json!({"name": "p", "max_steps": 2, "steps": [
        {"id": "fan", "type": "parallel", "parallel_steps": [
            {"id": "x", "type": "tool", "tool": "t"},
            {"id": "y", "type": "tool", "tool": "t"},
            {"id": "z", "type": "tool", "tool": "t"}
        ]},
        {"id": "last", "type": "tool", "tool": "t"}
    ]});
    let (prog, mocks) = mocked(&program, json!({"tools": {"t": 1}}));
    let out = block(runtime(&mocks).run_as(&prog, Map::new(), "t".into()));
    assert_eq!(out.trace.status, Status::Success, "{:#?}", out.trace);
    assert_eq!(executed(&out.trace), ["x", "y", "z", "fan", "last"]);
}

// ---------------------------------------------------------------------------------------------
// 8. The OpenAI adapter through the runtime
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Seen {
    headers: HeaderMap,
    body: Value,
}

/// Serve `/v1/chat/completions` on a fresh port of 127.0.0.1 with a fixed status and body;
/// returns the base URL and the log of requests.
async fn serve(status: StatusCode, body: Value) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let seen = log.clone();
    let handler = move |headers: HeaderMap, bytes: Bytes| {
        let seen = seen.clone();
        let body = body.clone();
        async move {
            seen.lock().unwrap().push(Seen {
                headers,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            });
            let r: Response = (status, axum::Json(body)).into_response();
            r
        }
    };
    let app = Router::new().route("/v1/chat/completions", post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/v1"), log)
}

fn openai(base_url: &str) -> OpenAi {
    let config = OpenAiConfig {
        base_url: base_url.to_owned(),
        model: "gpt-test".to_owned(),
        api_key_env: None,
        timeout_seconds: 10.0,
        temperature: Some(0.0),
        max_completion_tokens: Some(5),
        input_cost_per_mtok: Some(2.0),
        output_cost_per_mtok: Some(8.0),
    };
    OpenAi::with_api_key(config, Some("sk-test-0123456789".to_owned())).unwrap()
}

fn triage_program() -> Value {
    json!({
        "name": "triage",
        "steps": [
            {"id": "classify", "type": "llm",
             "system": "You triage tickets for $shop. Answer with one word.",
             "prompt": "Ticket: $ticket",
             "allowed_outputs": ["refund", "other"]},
            {"id": "file", "type": "tool", "tool": "file", "args": {"kind": "$classify"}}
        ]
    })
}

fn triage_context() -> Map<String, Value> {
    ctx(json!({"shop": "Blendr", "ticket": "My blender broke, money back please"}))
}

#[tokio::test]
async fn an_llm_step_against_an_openai_compatible_server() {
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": " refund\n"}}],
        "usage": {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500}
    });
    let (base, log) = serve(StatusCode::OK, body).await;
    let tools = Mocks::from_value(json!({"tools": {"file": {"filed": true}}})).unwrap();
    let prog = prepare(&triage_program(), ["file"]);
    let rt = Runtime::new(Arc::new(openai(&base)), tools.tools.clone());
    let out = rt.run_as(&prog, triage_context(), "oa".into()).await;
    let t = &out.trace;
    assert_eq!(t.status, Status::Success, "{t:#?}");
    assert_eq!(step(t, "classify").output, json!("refund"), "stripped");
    assert_eq!(
        tools.log.calls(),
        [json!({"tool": "file", "args": {"kind": "refund"}})]
    );

    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body,
        json!({
            "model": "gpt-test",
            "messages": [
                {"role": "system", "content": "You triage tickets for Blendr. Answer with one word."},
                {"role": "user", "content": "Ticket: My blender broke, money back please"}
            ],
            "temperature": 0.0,
            "max_tokens": 5
        })
    );
    assert_eq!(
        seen[0].headers["authorization"].to_str().unwrap(),
        "Bearer sk-test-0123456789"
    );

    let usage = step(t, "classify").usage.clone().unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (1200, 300, 1500)
    );
    // 1200 × 2 $/Mtok + 300 × 8 $/Mtok = 0.0024 + 0.0024.
    let cost = usage.cost_usd.unwrap();
    assert!((cost - 0.0048).abs() < 1e-12, "{cost}");
    assert_eq!(t.total_tokens, 1500);
    assert!((t.cost_usd.unwrap() - 0.0048).abs() < 1e-12);
    assert_eq!(t.step_metrics.llm_calls, 1);
}

#[tokio::test]
async fn a_reply_outside_allowed_outputs_from_the_server_fails_the_step() {
    let body = json!({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Refund!"}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    });
    let (base, _) = serve(StatusCode::OK, body).await;
    let tools = Mocks::from_value(json!({"tools": {"file": 1}})).unwrap();
    let prog = prepare(&triage_program(), ["file"]);
    let rt = Runtime::new(Arc::new(openai(&base)), tools.tools.clone());
    let t = rt.run_as(&prog, triage_context(), "oa".into()).await.trace;
    assert_eq!(t.status, Status::Failed);
    assert_eq!(class(&t), Some(ErrorClass::AllowedOutputs));
    assert_eq!(
        step(&t, "classify").error.as_deref(),
        Some(r#"LLM output "Refund!" is not one of allowed_outputs ["refund","other"]"#)
    );
    assert!(tools.log.calls().is_empty());
}

#[tokio::test]
async fn a_server_error_fails_the_step_with_its_status() {
    let (base, log) = serve(
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"error": {"message": "the model is overloaded"}}),
    )
    .await;
    let tools = Mocks::from_value(json!({"tools": {"file": 1}})).unwrap();
    let prog = prepare(&triage_program(), ["file"]);
    let rt = Runtime::new(Arc::new(openai(&base)), tools.tools.clone());
    let t = rt.run_as(&prog, triage_context(), "oa".into()).await.trace;
    assert_eq!(t.status, Status::Failed);
    assert_eq!(class(&t), Some(ErrorClass::StepError));
    assert_eq!(failed_step(&t), Some("classify"));
    let error = step(&t, "classify").error.clone().unwrap();
    assert!(error.starts_with("HTTP 500"), "{error}");
    assert!(error.contains("the model is overloaded"), "{error}");
    assert!(t.error.as_deref().unwrap().contains("HTTP 500"));
    assert_eq!(step(&t, "classify").usage, None);
    assert_eq!(t.total_tokens, 0);
    assert_eq!(
        log.lock().unwrap().len(),
        1,
        "no retry without on_error: retry"
    );
    assert!(tools.log.calls().is_empty());
}

// ---------------------------------------------------------------------------------------------
// 9. Runs are Send
// ---------------------------------------------------------------------------------------------

fn assert_send<T: Send>(t: T) -> T {
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_can_be_spawned_on_a_multi_thread_runtime() {
    let (program, context, _) = refund();
    let mocks = Mocks::from_value(json!({
        "tools": {
            "lookup_order": {"order_id": "A-1001", "amount": 250},
            "issue_refund": {"refund_id": "R-1"},
            "open_ticket": {"ticket": "T-1"},
            "fetch": {"id": 7},
            "broken": 1
        },
        "llm": {"*": "refund"}
    }))
    .unwrap();
    let tools: Vec<&str> = mocks.tools.names().collect();
    let refund_prog = Arc::new(prepare(&program, tools.iter().copied()));
    let fanout_prog = Arc::new(prepare(&fanout_program(), tools.iter().copied()));
    let rt = Arc::new(runtime(&mocks));
    let context = ctx(context);

    let mut handles = Vec::new();
    for k in 0..50 {
        let rt = rt.clone();
        let prog = if k % 2 == 0 {
            refund_prog.clone()
        } else {
            fanout_prog.clone()
        };
        let context = if k % 2 == 0 {
            context.clone()
        } else {
            ctx(json!({"query": format!("q{k}")}))
        };
        let run = assert_send(async move { rt.run(&prog, context).await });
        handles.push(tokio::spawn(run));
    }
    let mut ids = HashSet::new();
    for h in handles {
        let out = h.await.unwrap();
        assert_eq!(out.trace.status, Status::Success, "{:#?}", out.trace);
        assert!(
            ids.insert(out.trace.trace_id.clone()),
            "a repeated trace id"
        );
    }
    assert_eq!(ids.len(), 50);
    assert_eq!(mocks.log.calls().len(), 25 * 3 + 25 * 5);
}

// ---------------------------------------------------------------------------------------------
// 10. Observer
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<String>>);

impl Observer for Recorder {
    fn step_started(&self, step_id: &str, number: u64) {
        self.0
            .lock()
            .unwrap()
            .push(format!("started {step_id} #{number}"));
    }

    fn step_finished(&self, record: &StepRecord) {
        let parent = record
            .parent
            .as_ref()
            .map(|p| format!(" (in {p})"))
            .unwrap_or_default();
        self.0.lock().unwrap().push(format!(
            "finished {} {}{parent}",
            record.step_id,
            record.status.as_str()
        ));
    }
}

#[test]
fn an_observer_sees_steps_start_and_finish_in_order() {
    let program = json!({
        "name": "observed",
        "steps": [
            {"id": "fetch", "type": "tool", "tool": "fetch"},
            {"id": "fan", "type": "parallel", "parallel_steps": [
                {"id": "x", "type": "tool", "tool": "fetch"},
                {"id": "y", "type": "llm", "prompt": "go?"}
            ]},
            {"id": "gate", "type": "condition", "condition": "$y == 'go'",
             "then": "done", "otherwise": "stop"},
            {"id": "done", "type": "tool", "tool": "fetch", "is_terminal": true},
            {"id": "stop", "type": "tool", "tool": "fetch", "is_terminal": true}
        ]
    });
    let (prog, mocks) = mocked(&program, json!({"tools": {"fetch": 1}, "llm": {"*": "go"}}));
    let recorder = Arc::new(Recorder::default());
    let rt = runtime(&mocks).with_options(RunOptions {
        observer: Some(recorder.clone()),
        ..RunOptions::default()
    });
    let out = block(rt.run_as(&prog, Map::new(), "t".into()));
    assert_eq!(out.trace.status, Status::Success, "{:#?}", out.trace);
    let events = recorder.0.lock().unwrap().clone();
    assert_eq!(
        events,
        [
            "started fetch #1",
            "finished fetch success",
            "started fan #2",
            "finished x success (in fan)",
            "finished y success (in fan)",
            "finished fan success",
            "started gate #3",
            "finished gate success",
            "started done #4",
            "finished done success",
        ]
    );
    // The finished events are the trace's records, in the same order.
    let finished: Vec<&str> = events
        .iter()
        .filter_map(|e| e.strip_prefix("finished "))
        .map(|e| e.split(' ').next().unwrap())
        .collect();
    assert_eq!(finished, executed(&out.trace));
}

#[test]
fn an_observer_sees_no_start_for_a_step_a_budget_stops() {
    let (prog, mocks) = mocked(&tokens_program(), tokens_mocks());
    let recorder = Arc::new(Recorder::default());
    let rt = runtime(&mocks).with_options(RunOptions {
        observer: Some(recorder.clone()),
        ..RunOptions::default()
    });
    let out = block(rt.run_as(&prog, Map::new(), "t".into()));
    assert_eq!(out.trace.status, Status::BudgetExceeded);
    assert_eq!(
        recorder.0.lock().unwrap().clone(),
        [
            "started a #1",
            "finished a success",
            "started b #2",
            "finished b success"
        ]
    );
}
