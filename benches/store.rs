//! Store benchmarks: `run_refund` persisted (the runtime's `run_refund` scenario with every
//! envelope, the run row and the trace written to a WAL file), one at a time and 64 in flight;
//! `get_trace` (read and parse a stored trace, on a blocking thread from async code, and on the
//! calling thread); `audit_verify` (envelopes checked per second).
//! Compare with the reference's `mcp_run_program` and `store_get_trace`
//! (`../shared/bench/bench_ref.py --only mcp_run_program,store_get_trace`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{YesNo, bench_dir, load, refund_tools, remove_bench_dirs};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nanovm::check::{Options, check_source};
use nanovm::exec::{Runnable, Runtime, Status};
use nanovm::store::{Content, RunRequest, Store, StoreOptions};
use serde_json::{Map, Value, json};
use std::hint::black_box;
use std::sync::Arc;

fn fresh_store(tag: &str) -> Store {
    Store::open(bench_dir(tag).join("bench.db"), StoreOptions::default()).unwrap()
}

fn bench_store(c: &mut Criterion) {
    let program = load("refund_pipeline.json");
    let ctx: Map<String, Value> = load("refund_ctx.json").as_object().cloned().unwrap();
    let report = check_source(&program.to_string(), &Options::default());
    let refund = Runnable::new(report.checked.expect("the scenario program checks"));
    let rt = Runtime::new(Arc::new(YesNo::default()), Arc::new(refund_tools()));
    let req = RunRequest {
        program: Content::of(&program),
        context: ctx.clone(),
        policy: Content::of(&json!({"tools": {}})),
        idempotency_key: None,
        save_as: None,
    };
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1));
    let store = fresh_store("run");
    let p = tokio
        .block_on(store.run(&rt, &refund, req.clone()))
        .unwrap();
    assert_eq!(p.trace.status, Status::Success);
    assert_eq!(p.trace.steps.len(), 4);
    g.bench_function("run_refund_persisted", |b| {
        b.iter(|| {
            black_box(
                tokio
                    .block_on(store.run(&rt, &refund, req.clone()))
                    .unwrap(),
            )
        })
    });

    const WIDTH: u64 = 64;
    g.throughput(Throughput::Elements(WIDTH));
    let batch =
        || futures_util::future::join_all((0..WIDTH).map(|_| store.run(&rt, &refund, req.clone())));
    g.bench_function("run_refund_persisted_64_in_flight", |b| {
        b.iter(|| {
            for r in tokio.block_on(batch()) {
                black_box(r.unwrap());
            }
        })
    });

    g.throughput(Throughput::Elements(1));
    let ids: Vec<String> = (0..100)
        .map(|_| {
            tokio
                .block_on(store.run(&rt, &refund, req.clone()))
                .unwrap()
                .run_id
        })
        .collect();
    let mut i = 0;
    g.bench_function("get_trace", |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            black_box(tokio.block_on(store.get_trace(&ids[i])).unwrap().unwrap())
        })
    });
    g.bench_function("get_trace_blocking", |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            black_box(store.get_trace_blocking(&ids[i]).unwrap().unwrap())
        })
    });

    // audit verify over a file of 20,000 envelopes (5,000 runs of 4 steps).
    let audit = fresh_store("audit");
    tokio.block_on(async {
        for _ in 0..50 {
            let runs = (0..100).map(|_| audit.run(&rt, &refund, req.clone()));
            for r in futures_util::future::join_all(runs).await {
                r.unwrap();
            }
        }
    });
    let verdicts = tokio.block_on(audit.verify(None)).unwrap();
    let envelopes: u64 = verdicts.iter().map(|v| v.envelopes).sum();
    assert_eq!(envelopes, 20_000);
    assert!(verdicts.iter().all(|v| v.broken.is_none()));
    g.throughput(Throughput::Elements(envelopes));
    g.sample_size(10);
    g.bench_function("audit_verify_20k_envelopes", |b| {
        b.iter(|| black_box(tokio.block_on(audit.verify(None)).unwrap()))
    });
    g.finish();
    drop((store, audit));
    remove_bench_dirs();
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
