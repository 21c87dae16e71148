//! Runtime benchmarks mirroring `../shared/bench/README.md`: `run_refund` (tool → llm with
//! allowed_outputs → condition → terminal tool; the mock LLM alternates yes/no), `run_30step`
//! (a 30-step `inc` chain) and `run_parallel` (100 concurrent refund runs; one op = one
//! program), all in memory with Rust-native tools, on a current-thread tokio runtime (the
//! reference's asyncio has no real concurrency either), plus a multi-thread figure.
//!
//! `run/floor_*` are floors, not runs: the SHA-256 work every trace carries whatever the
//! runtime does (the reference's Merkle root over the state snapshots, 4 for `run_refund` and 30
//! for `run_30step`), and one SHA-256 block.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{SCENARIOS, YesNo, load, refund_tools};
use criterion::{Criterion, Throughput, criterion_group};
use nanovm::check::{Options, check_source};
use nanovm::exec::native::NativeTools;
use nanovm::exec::{Runnable, Runtime, Status};
use serde_json::{Map, Value, json};
use std::hint::black_box;
use std::sync::Arc;

fn runnable(name: &str) -> Runnable {
    let text = std::fs::read_to_string(format!("{SCENARIOS}/{name}")).unwrap();
    let report = check_source(&text, &Options::default());
    Runnable::new(report.checked.expect("the scenario program checks"))
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn inc_runtime() -> Runtime {
    Runtime::new(
        Arc::new(YesNo::default()),
        Arc::new(NativeTools::new().register("inc", |a| {
            let x = a
                .get("x")
                .and_then(Value::as_i64)
                .ok_or("x is not an int")?;
            Ok(json!(x + 1))
        })),
    )
}

fn bench_run(c: &mut Criterion) {
    let ctx: Map<String, Value> = load("refund_ctx.json").as_object().cloned().unwrap();
    let refund = runnable("refund_pipeline.json");
    let rt = Runtime::new(Arc::new(YesNo::default()), Arc::new(refund_tools()));
    let tokio = current_thread();

    // Sanity: the reference's checks.
    for k in 0u32..4 {
        let out = tokio.block_on(rt.run(&refund, ctx.clone()));
        assert_eq!(out.trace.status, Status::Success);
        let last = if k.is_multiple_of(2) {
            "refund"
        } else {
            "reject"
        };
        assert_eq!(
            out.trace.executed().collect::<Vec<_>>(),
            ["validate", "classify", "route", last]
        );
        assert_eq!(out.trace.state_snapshots.len(), 4);
    }

    let mut g = c.benchmark_group("run");
    g.throughput(Throughput::Elements(1));
    g.bench_function("run_refund", |b| {
        b.iter(|| black_box(tokio.block_on(rt.run(&refund, ctx.clone()))))
    });

    let chain = runnable("chain_30.json");
    let inc = inc_runtime();
    let start: Map<String, Value> = json!({"start": 0}).as_object().cloned().unwrap();
    let out = tokio.block_on(inc.run(&chain, start.clone()));
    assert_eq!(out.trace.final_output, json!(30));
    g.bench_function("run_30step", |b| {
        b.iter(|| black_box(tokio.block_on(inc.run(&chain, start.clone()))))
    });

    const WIDTH: u64 = 100;
    g.throughput(Throughput::Elements(WIDTH));
    let batch = || futures_util::future::join_all((0..WIDTH).map(|_| rt.run(&refund, ctx.clone())));
    let outs = tokio.block_on(batch());
    assert!(outs.iter().all(|o| o.trace.status == Status::Success));
    g.bench_function("run_parallel", |b| {
        b.iter(|| black_box(tokio.block_on(batch())))
    });

    // Multi-thread: 100 runs spawned as tasks on a 2-worker runtime.
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let shared = Arc::new((rt.clone(), refund.clone(), ctx.clone()));
    g.bench_function("run_parallel_multi_thread", |b| {
        b.iter(|| {
            multi.block_on(async {
                let tasks: Vec<_> = (0..WIDTH)
                    .map(|_| {
                        let s = shared.clone();
                        tokio::spawn(async move { s.0.run(&s.1, s.2.clone()).await.trace.status })
                    })
                    .collect();
                for t in tasks {
                    black_box(t.await.unwrap());
                }
            })
        })
    });
    g.finish();
}

fn bench_floor(c: &mut Criterion) {
    let mut g = c.benchmark_group("run");
    g.throughput(Throughput::Elements(1));
    for n in [4u64, 30] {
        let snapshots: Vec<(u64, String)> = (0..n)
            .map(|i| (i, nanovm::exec::canon::sha256_hex(&json!(i))))
            .collect();
        g.bench_function(format!("floor_merkle_{n}"), |b| {
            b.iter(|| {
                black_box(nanovm::exec::canon::merkle_root(
                    black_box(&snapshots).iter().map(|(i, h)| (*i, h.as_str())),
                ))
            })
        });
    }
    let block = [7u8; 55];
    g.bench_function("floor_sha256_one_block", |b| {
        b.iter(|| {
            black_box(<sha2::Sha256 as sha2::Digest>::digest(black_box(
                &block[..],
            )))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_run, bench_floor);

/// `NANOVM_RUN_ONCE=refund:N` (or `30step:N`) runs the scenario N times and nothing else, for
/// callgrind (instructions per run: the difference between two N divided by their difference);
/// criterion otherwise.
fn main() {
    if let Some((name, n)) = std::env::var("NANOVM_RUN_ONCE").ok().and_then(|v| {
        let (name, n) = v.split_once(':')?;
        Some((name.to_owned(), n.parse::<usize>().ok()?))
    }) {
        let tokio = current_thread();
        let (rt, program, ctx) = match name.as_str() {
            "refund" => (
                Runtime::new(Arc::new(YesNo::default()), Arc::new(refund_tools())),
                runnable("refund_pipeline.json"),
                load("refund_ctx.json").as_object().cloned().unwrap(),
            ),
            _ => (
                inc_runtime(),
                runnable("chain_30.json"),
                json!({"start": 0}).as_object().cloned().unwrap(),
            ),
        };
        for _ in 0..n {
            black_box(tokio.block_on(rt.run(&program, ctx.clone())));
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
