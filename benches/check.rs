//! Program-check benchmarks, mirroring the reference's `validate_N` scenarios
//! (`/work/shared/bench/bench_ref.py`, `make_validate_program`): N tool steps, 3 conditions
//! and a failure exit, N + 4 steps in all. One op is [`check_source`] on the program's JSON
//! text: strict spanned parse, decode, graph, references, conditions compiled (the reference's
//! `Program.model_validate` + `ProgramValidator.validate` starts from an already parsed dict).
//!
//! `check/json_skim/N` and `check/json_value/N` are floors, not nanovm: serde_json reading the
//! same text without keeping anything (`IgnoredAny`), and into a `serde_json::Value`. No
//! checker that starts from the text can take less than the first.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use nanovm::check::{Options, check_source};
use serde_json::{Value, json};
use std::hint::black_box;
use std::time::Duration;

/// The reference's generator, step for step.
fn validate_program(n: usize) -> Value {
    let ks: Vec<usize> = [1, 2, 3].iter().map(|j| j * n / 4).collect();
    let then_targets: Vec<usize> = ks.iter().map(|k| k + 1).collect();
    let mut steps = Vec::with_capacity(n + 4);
    for i in 0..n {
        let mut st = json!({
            "id": format!("t{i}"), "type": "tool", "tool": "check",
            "args": {"item": i, "order_id": "$order_id"},
        });
        if then_targets.contains(&i) {
            st["next_step"] = json!(format!("t{}", i + 1));
        }
        if i == n - 1 {
            st["is_terminal"] = json!(true);
        }
        steps.push(st);
        if let Some(j) = ks.iter().position(|k| *k == i) {
            steps.push(json!({
                "id": format!("c{}", j + 1), "type": "condition",
                "condition": format!("$t{i}.output.ok == True"),
                "then": format!("t{}", i + 1), "otherwise": "fail_exit",
            }));
        }
    }
    steps.push(json!({
        "id": "fail_exit", "type": "tool", "tool": "fail",
        "args": {"reason": "check failed"}, "is_terminal": true,
    }));
    json!({"name": format!("validate_{n}"), "steps": steps})
}

fn bench(c: &mut Criterion) {
    let opts = Options::default();
    let mut g = c.benchmark_group("check");
    for n in [10usize, 100, 1_000, 10_000] {
        let text = serde_json::to_string(&validate_program(n)).unwrap();
        let report = check_source(&text, &opts);
        assert!(report.valid(), "{:?}", report.diagnostics);
        assert!(report.checked.is_some());
        g.throughput(Throughput::Elements(1));
        if n >= 1_000 {
            g.sample_size(20);
        }
        g.bench_with_input(BenchmarkId::new("validate", n), &text, |b, t| {
            b.iter(|| black_box(check_source(black_box(t), &opts)))
        });
        g.bench_with_input(BenchmarkId::new("json_skim", n), &text, |b, t| {
            b.iter(|| {
                serde_json::from_str::<serde::de::IgnoredAny>(black_box(t)).unwrap();
            })
        });
        g.bench_with_input(BenchmarkId::new("json_value", n), &text, |b, t| {
            b.iter(|| black_box(serde_json::from_str::<Value>(black_box(t)).unwrap()))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench
}
/// One op as criterion times it: the check and dropping its report.
#[inline(never)]
fn check_once(text: &str, opts: &Options) -> bool {
    let report = check_source(black_box(text), opts);
    black_box(&report);
    report.valid()
}

/// `NANOVM_CHECK_ONCE=N cargo bench --bench check`: one check of `validate_N` and nothing
/// else, for callgrind (`--toggle-collect='*check_once*'`); criterion otherwise.
fn main() {
    if let Some(n) = std::env::var("NANOVM_CHECK_ONCE")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        let text = serde_json::to_string(&validate_program(n)).unwrap();
        assert!(check_once(&text, &Options::default()));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
