//! Runs every `run-*` case of the conformance corpus through the library, as
//! `nanovm run --mocks` does: check (with the mocks' tools as the catalog), then run with the
//! scripted adapters on a paused tokio clock (delays and retry backoffs take no real time),
//! then resume when the case resumes.
//!
//! Compared per case: `status`, `final_output`, `executed`, `error` (class and step),
//! `steps` (id, status, output, retries), `calls` (those inside the parallel step as a
//! multiset when `unordered_calls`), and
//! `suspended_step_id`; the same for `resumed`. Where a rule of DESIGN §3/§8 changes the
//! result, `tests/conformance/overrides/<case>.json` names it: `check.rejected` (the checker
//! rejects the program) or `run` (fields of `expect` that nanovm replaces, `resumed` merged
//! field by field).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use nanovm::check::catalog::{Catalog, ToolInfo};
use nanovm::check::{Options, check_source};
use nanovm::exec::mock::Mocks;
use nanovm::exec::{Outcome, RunOptions, Runnable, Runtime, Source, Trace};

type Observed = (Value, Option<Value>, Option<(usize, usize)>);
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

fn load(dir: &str, prefix: &str) -> BTreeMap<String, Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let id = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if !id.starts_with(prefix) || path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        out.insert(id, serde_json::from_str(&text).unwrap());
    }
    out
}

/// The comparable part of a trace, in the corpus's shape.
fn observed(trace: &Trace, calls: Vec<Value>) -> Value {
    let steps: Vec<Value> = trace
        .steps
        .iter()
        .map(|s| json!({"id": s.step_id, "status": s.status.as_str(), "output": s.output, "retries": s.retries}))
        .collect();
    let mut v = json!({
        "status": trace.status.as_str(),
        "final_output": trace.final_output,
        "executed": trace.executed().collect::<Vec<_>>(),
        "steps": steps,
        "calls": calls,
        "error": trace.failure.as_ref().map(|f| json!({"class": f.class.as_str(), "step_id": f.step_id})),
    });
    if let Some(s) = &trace.suspended_step_id {
        v["suspended_step_id"] = json!(s);
    }
    v
}

/// The reference's expectation, reduced to what is compared.
fn expected(e: &Value) -> Value {
    let mut v = json!({
        "status": e["status"],
        "final_output": e["final_output"],
        "executed": e["executed"],
        "steps": e["steps"],
        "calls": e["calls"],
        "error": match &e["error"] {
            Value::Null => Value::Null,
            err => json!({"class": err["class"], "step_id": err["step_id"]}),
        },
    });
    if let Some(s) = e.get("suspended_step_id") {
        v["suspended_step_id"] = s.clone();
    }
    v
}

fn merge(base: &mut Value, over: &Value) {
    if let (Value::Object(b), Value::Object(o)) = (base, over) {
        for (k, v) in o {
            if k == "resumed" {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            } else {
                b.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Where the calls made inside the (one) parallel step of a trace are in its call log:
/// after the calls of the steps before it (an llm or tool step makes one call per attempt), one
/// per sub-step.
fn parallel_window(trace: &Trace, program: &Value) -> Option<(usize, usize)> {
    let kinds: BTreeMap<&str, &str> = program["steps"]
        .as_array()?
        .iter()
        .filter_map(|s| Some((s["id"].as_str()?, s["type"].as_str()?)))
        .collect();
    let mut start = 0;
    for r in trace.steps.iter().filter(|r| r.parent.is_none()) {
        match kinds.get(r.step_id.as_str()).copied() {
            Some("parallel") => {
                let subs = trace
                    .steps
                    .iter()
                    .filter(|c| c.parent.as_deref() == Some(r.step_id.as_str()))
                    .count();
                return Some((start, subs));
            }
            Some("llm" | "tool") => start += r.retries as usize + 1,
            _ => {}
        }
    }
    None
}

/// Compare the calls inside the parallel step as a multiset: sort that window.
fn sort_calls(v: &mut Value, window: Option<(usize, usize)>) {
    if let (Some(Value::Array(calls)), Some((start, len))) = (v.get_mut("calls"), window)
        && let Some(w) = calls.get_mut(start..start + len)
    {
        w.sort_by_key(Value::to_string);
    }
}

fn block<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}

/// Check and run one case; `Err(codes)` when the checker rejects the program.
fn run_case(case: &Value) -> Result<Observed, Vec<String>> {
    let mocks = Mocks::from_value(case["mocks"].clone()).unwrap();
    let mut catalog = Catalog::new();
    for name in mocks.tools.names() {
        catalog.insert(name, ToolInfo::default());
    }
    let opts = Options {
        catalog: Some(Arc::new(catalog)),
        ..Options::default()
    };
    let text = serde_json::to_string_pretty(&case["program"]).unwrap();
    let report = check_source(&text, &opts);
    let Some(checked) = report.checked else {
        let mut codes: Vec<String> = report
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.code.to_string())
            .collect();
        codes.sort();
        codes.dedup();
        return Err(codes);
    };
    let prog = Runnable::new(checked);
    let rt =
        Runtime::new(mocks.llm.clone(), mocks.tools.clone()).with_options(RunOptions::default());
    let context: Map<String, Value> = case["context"].as_object().cloned().unwrap_or_default();
    block(async {
        let Outcome { trace, cursor } = rt.run_as(&prog, context, "t".into()).await;
        let first = observed(&trace, mocks.log.take());
        let window = parallel_window(&trace, &case["program"]);
        let resumed = match (case.get("resume"), cursor) {
            (Some(r), Some(cursor)) => {
                let source = serde_json::from_value::<Source>(r["source"].clone()).unwrap();
                let out = rt
                    .resume(&prog, cursor, r["payload"].clone(), source)
                    .await
                    .unwrap();
                Some(observed(&out.trace, mocks.log.take()))
            }
            (Some(_), None) => Some(json!("not suspended")),
            (None, _) => None,
        };
        Ok((first, resumed, window))
    })
}

#[test]
fn run_cases() {
    let cases = load("tests/conformance/cases", "run-");
    let overrides = load("tests/conformance/overrides", "run-");
    assert!(cases.len() >= 73, "only {} run cases", cases.len());
    let mut failures = Vec::new();
    let (mut ran, mut rejected, mut overridden) = (0, 0, 0);
    for (id, case) in &cases {
        let o = overrides.get(id);
        let want_rejected: Vec<String> = o
            .and_then(|o| {
                o["check"]["rejected"]
                    .as_array()
                    .or(o["run"]["rejected"].as_array())
            })
            .map(|a| a.iter().map(|c| c.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        match run_case(case) {
            Err(codes) => {
                rejected += 1;
                if codes != want_rejected {
                    failures.push(format!(
                        "{id}: rejected with {codes:?}, override says {want_rejected:?}"
                    ));
                }
            }
            Ok(_) if !want_rejected.is_empty() => {
                failures.push(format!(
                    "{id}: runs, but the override says rejected {want_rejected:?}"
                ));
            }
            Ok((first, resumed, window)) => {
                ran += 1;
                let mut got = first;
                if let Some(r) = resumed {
                    got["resumed"] = r;
                }
                let mut want = expected(&case["expect"]);
                if let Some(r) = case["expect"].get("resumed") {
                    want["resumed"] = expected(r);
                }
                let reference = want.clone();
                let run_override = o
                    .and_then(|o| o.get("run"))
                    .filter(|r| r.get("rejected").is_none());
                if let Some(r) = run_override {
                    overridden += 1;
                    assert!(
                        o.unwrap()["rule"].as_str().is_some_and(|s| !s.is_empty()),
                        "{id}: override without rule"
                    );
                    merge(&mut want, r);
                    if want == reference {
                        failures.push(format!("{id}: the run override changes nothing"));
                    }
                }
                // nanovm names the step at which a budget ran out or the run stalled
                // (DESIGN §3); the reference gives none.
                if let (Some(class), Value::Null) =
                    (want["error"]["class"].as_str(), &want["error"]["step_id"])
                    && ["max_steps", "max_tokens", "stalled"].contains(&class)
                {
                    want["error"]["step_id"] = got["error"]["step_id"].clone();
                }
                if case["unordered_calls"] == json!(true) {
                    assert!(
                        window.is_some(),
                        "{id}: unordered calls without a parallel step"
                    );
                    for v in [&mut got, &mut want] {
                        sort_calls(v, window);
                    }
                }
                if got != want {
                    failures.push(format!(
                        "{id}:\n   want {}\n   got  {}",
                        serde_json::to_string(&want).unwrap(),
                        serde_json::to_string(&got).unwrap()
                    ));
                } else if run_override.is_some() && got == reference {
                    failures.push(format!("{id}: override no longer needed"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!(
        "{ran} run cases ran ({overridden} with a §8 override), {rejected} rejected by the checker"
    );
}
