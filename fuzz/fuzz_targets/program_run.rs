//! Any bytes through check and, when the program passes, through the runtime with tools and
//! an LLM that answer everything (a tool whose name starts with `p` answers `"PENDING"` once,
//! one starting with `e` fails), on a paused clock.
//!
//! Invariants:
//! - neither the checker nor the runtime panics; a suspended run resumes without panicking;
//! - one state snapshot per top-level step record, in order;
//! - `final_output` is null unless the run succeeded; a failure is present exactly when the
//!   run did not succeed and is not suspended; a cursor exactly when suspended;
//! - the trace round-trips through JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanovm::check::{Options, check_bytes};
use nanovm::exec::adapter::{BoxFuture, CallError, Llm, LlmReply, LlmRequest, Tools, Usage};
use nanovm::exec::{Outcome, Runnable, Runtime, Source, Status, Trace};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Default)]
struct Everything(AtomicUsize);

impl Tools for Everything {
    fn contains(&self, _: &str) -> bool {
        true
    }

    fn call<'a>(&'a self, name: &'a str, args: Value) -> BoxFuture<'a, Result<Value, CallError>> {
        let k = self.0.fetch_add(1, Ordering::Relaxed);
        let out = if name.starts_with('p') && k % 2 == 0 {
            Ok(json!("PENDING"))
        } else if name.starts_with('e') {
            Err(CallError::Failed("scripted failure".into()))
        } else {
            Ok(json!({"name": name, "args": args, "k": k % 3}))
        };
        Box::pin(std::future::ready(out))
    }
}

#[derive(Debug, Default)]
struct Echo;

impl Llm for Echo {
    fn complete<'a>(&'a self, req: LlmRequest<'a>) -> BoxFuture<'a, Result<LlmReply, CallError>> {
        let text = req.prompt.split_whitespace().next().unwrap_or("").to_owned();
        Box::pin(std::future::ready(Ok(LlmReply {
            text,
            usage: Some(Usage {
                total_tokens: req.prompt.len() as u64,
                ..Usage::default()
            }),
        })))
    }
}

fn check_trace(t: &Trace, suspended_cursor: bool) {
    let top = t.steps.iter().filter(|s| s.parent.is_none()).count();
    assert_eq!(top, t.state_snapshots.len(), "{t:?}");
    for (i, (n, _)) in t.state_snapshots.iter().enumerate() {
        assert_eq!(*n, i as u64);
    }
    if t.status != Status::Success {
        assert_eq!(t.final_output, Value::Null);
    }
    let failing = !matches!(t.status, Status::Success | Status::Suspended);
    assert_eq!(t.failure.is_some(), failing, "{t:?}");
    assert_eq!(suspended_cursor, t.status == Status::Suspended);
    let text = serde_json::to_string(t).unwrap();
    let back: Trace = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, t);
}

fuzz_target!(|data: &[u8]| {
    let (report, _) = check_bytes(data, &Options::default());
    let Some(checked) = report.checked else {
        return;
    };
    if checked
        .program()
        .max_steps
        .as_ref()
        .is_some_and(|m| m.value > 1000)
    {
        return;
    }
    let prog = Runnable::new(checked);
    let rt = Runtime::new(Arc::new(Echo), Arc::new(Everything::default()));
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    tokio.block_on(async {
        let Outcome { trace, cursor } = rt.run(&prog, Map::new()).await;
        check_trace(&trace, cursor.is_some());
        if let Some(c) = cursor {
            let out = rt
                .resume(&prog, c, json!({"ok": true}), Source::Webhook)
                .await
                .unwrap();
            check_trace(&out.trace, out.cursor.is_some());
        }
    });
});
