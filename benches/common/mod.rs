//! What the runtime and store benches share: the scenario files, the reference's alternating
//! mock LLM and the refund pipeline's tools. Not every bench uses every item.
#![allow(dead_code)]

/// The allocator of the `nanovm` binary (src/main.rs), so that the benches measure what it runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use nanovm::exec::adapter::{BoxFuture, CallError, Llm, LlmReply, LlmRequest};
use nanovm::exec::native::NativeTools;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/scenarios");

/// The k-th call answers `yes` when k is even (the reference's `MockLLMAdapter(["yes", "no"])`).
#[derive(Debug, Default)]
pub struct YesNo(AtomicUsize);

impl Llm for YesNo {
    fn complete<'a>(&'a self, _: LlmRequest<'a>) -> BoxFuture<'a, Result<LlmReply, CallError>> {
        let k = self.0.fetch_add(1, Ordering::Relaxed);
        let text = if k.is_multiple_of(2) { "yes" } else { "no" };
        Box::pin(std::future::ready(Ok(LlmReply {
            text: text.to_owned(),
            usage: None,
        })))
    }
}

pub fn load(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{SCENARIOS}/{name}")).unwrap()).unwrap()
}

pub fn refund_tools() -> NativeTools {
    let s = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    NativeTools::new()
        .register("validate_order", move |a| {
            Ok(json!({"ok": true, "order_id": s(&a, "order_id"), "amount": s(&a, "amount")}))
        })
        .register("issue_refund", move |a| {
            let id = a.get("order_id").and_then(Value::as_str).unwrap_or_default();
            Ok(json!({"refund_id": format!("R-{id}"), "amount": s(&a, "amount"), "status": "processed"}))
        })
        .register("send_rejection", move |a| {
            Ok(json!({"rejected": true, "order_id": s(&a, "order_id"), "reason": s(&a, "reason")}))
        })
}

/// A fresh directory for one bench's database: `nanovm-bench-{pid}-{tag}` in the temp dir.
pub fn bench_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nanovm-bench-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Remove this process's bench directories (their databases grow to hundreds of MB).
pub fn remove_bench_dirs() {
    let prefix = format!("nanovm-bench-{}-", std::process::id());
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
