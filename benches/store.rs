//! Store benchmarks: `run_refund` persisted (the runtime's `run_refund` scenario with every
//! envelope, the run row and the trace written to a WAL file), one at a time and with 64 and
//! 256 runs in flight (a sliding window: a run starts as soon as another ends, so the count in
//! flight never drops between batches);
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
use criterion::{Criterion, Throughput, criterion_group};
use nanovm::check::{Options, check_source};
use nanovm::exec::{Runnable, Runtime, Status};
use nanovm::store::{Content, RunRequest, Store, StoreOptions};
use serde_json::{Map, Value, json};
use std::hint::black_box;
use std::sync::Arc;

fn fresh_store(tag: &str) -> Store {
    Store::open(bench_dir(tag).join("bench.db"), StoreOptions::default()).unwrap()
}

/// The `run_refund` scenario, ready to run persisted on a current-thread runtime.
struct Refund {
    refund: Runnable,
    rt: Runtime,
    req: RunRequest,
    tokio: tokio::runtime::Runtime,
}

fn refund_setup() -> Refund {
    let program = load("refund_pipeline.json");
    let ctx: Map<String, Value> = load("refund_ctx.json").as_object().cloned().unwrap();
    let report = check_source(&program.to_string(), &Options::default());
    Refund {
        refund: Runnable::new(report.checked.expect("the scenario program checks")),
        rt: Runtime::new(Arc::new(YesNo::default()), Arc::new(refund_tools())),
        req: RunRequest {
            program: Content::of(&program),
            context: ctx,
            policy: Content::of(&json!({"tools": {}})),
            idempotency_key: None,
            save_as: None,
        },
        tokio: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    }
}

fn bench_store(c: &mut Criterion) {
    let Refund {
        refund,
        rt,
        req,
        tokio,
    } = refund_setup();

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

    // One element per run: criterion's time is per run, its throughput runs per second. Ten
    // samples, so that each has thousands of runs: the window is full for almost all of them.
    g.sample_size(10);
    for width in [64, 256] {
        g.bench_function(format!("run_refund_persisted_{width}_in_flight"), |b| {
            b.iter_custom(|iters| {
                let start = std::time::Instant::now();
                let n = usize::try_from(iters).unwrap();
                tokio.block_on(in_flight(&store, &refund, &rt, &req, n, width));
                start.elapsed()
            })
        });
    }
    g.sample_size(100);

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

/// Run `n` persisted runs with `width` of them in flight at all times (until the last ones).
async fn in_flight(
    store: &Store,
    refund: &Runnable,
    rt: &Runtime,
    req: &RunRequest,
    n: usize,
    width: usize,
) {
    use futures_util::StreamExt;
    let mut running = futures_util::stream::FuturesUnordered::new();
    let mut started = 0;
    while started < n.min(width) {
        running.push(store.run(rt, refund, req.clone()));
        started += 1;
    }
    while let Some(r) = running.next().await {
        black_box(r.unwrap());
        if started < n {
            running.push(store.run(rt, refund, req.clone()));
            started += 1;
        }
    }
}

/// CPU time each thread of this process has used, by thread name (`/proc/self/task/*/schedstat`,
/// nanoseconds on a CPU).
fn thread_cpu() -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(e.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        *out.entry(name.trim().to_owned()).or_insert(0) += ns;
    }
    out
}

/// `NANOVM_STORE_LOAD=N cargo bench --bench store`: N persisted `run_refund` runs, 64 in
/// flight (`NANOVM_STORE_WIDTH` to change), on a fresh file; prints wall time and each
/// thread's CPU time per run (to see which thread bounds the throughput). Criterion otherwise.
fn load_mode(n: usize) {
    let Refund {
        refund,
        rt,
        req,
        tokio,
    } = refund_setup();
    let store = fresh_store("load");
    let width = std::env::var("NANOVM_STORE_WIDTH")
        .ok()
        .and_then(|w| w.parse::<usize>().ok())
        .filter(|w| *w > 0)
        .unwrap_or(64);
    // Warm up: the file's first pages, the statement caches.
    tokio.block_on(in_flight(&store, &refund, &rt, &req, width, width));
    let before = thread_cpu();
    let start = std::time::Instant::now();
    tokio.block_on(in_flight(&store, &refund, &rt, &req, n, width));
    let wall = start.elapsed();
    let after = thread_cpu();
    let runs = n as f64;
    println!(
        "{n} runs, {width} in flight: {:.1} µs/run wall ({:.0} runs/s)",
        wall.as_secs_f64() * 1e6 / runs,
        runs / wall.as_secs_f64()
    );
    let mut total = 0.0;
    for (name, ns) in &after {
        let used = ns.saturating_sub(before.get(name).copied().unwrap_or(0)) as f64 / 1e3 / runs;
        total += used;
        if used >= 0.05 {
            println!("  {name:<24} {used:6.1} µs CPU/run");
        }
    }
    println!("  {:<24} {total:6.1} µs CPU/run", "all threads");
    drop(store);
    remove_bench_dirs();
}

fn main() {
    if let Some(n) = std::env::var("NANOVM_STORE_LOAD")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        load_mode(n);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
