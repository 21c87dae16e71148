//! Store benchmarks: `run_refund` persisted (the runtime's `run_refund` scenario with every
//! envelope, the run row and the trace written to a WAL file), one at a time and with 64 and
//! 256 runs in flight (a sliding window: a run starts as soon as another ends, so the count in
//! flight never drops between batches);
//! the floor: the same rows written by SQLite alone (see [`RowsFloor`]); `get_trace` (read and
//! parse a stored trace, on a blocking thread from async code, and on the calling thread);
//! `audit_verify` (envelopes checked per second).
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
    // The floor: the same rows, and SQLite alone.
    let mut floor = rows_floor(&rt, &refund, &req, &tokio);
    g.bench_function("floor_sqlite_rows_64_per_commit", |b| {
        b.iter_custom(|iters| floor.insert(iters))
    });
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

/// The floor of a persisted run: what SQLite alone costs for the rows a persisted `run_refund`
/// writes (its run row with the trace, its four envelopes; copied from a real run, each run
/// under a fresh id), inserted on one connection with the store's settings (WAL, `synchronous
/// = NORMAL`, 8 KiB pages, the same schema and statements), 64 runs per transaction, SQLite's
/// own checkpoints inside its commits. No runtime, hashing, canonical JSON, threads or channels.
struct RowsFloor {
    conn: rusqlite::Connection,
    insert_run: String,
    run: Vec<rusqlite::types::Value>,
    envelopes: Vec<Vec<rusqlite::types::Value>>,
}

fn rows_floor(
    rt: &Runtime,
    refund: &Runnable,
    req: &RunRequest,
    tokio: &tokio::runtime::Runtime,
) -> RowsFloor {
    let path = bench_dir("floor").join("bench.db");
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    let run_id = tokio
        .block_on(store.run(rt, refund, req.clone()))
        .unwrap()
        .run_id;
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -16384;
         PRAGMA foreign_keys = OFF;",
    )
    .unwrap();
    let rows = |sql: &str| -> (Vec<String>, Vec<Vec<rusqlite::types::Value>>) {
        let mut st = conn.prepare(sql).unwrap();
        let names = st
            .column_names()
            .iter()
            .map(|n| (*n).to_owned())
            .collect::<Vec<_>>();
        let n = names.len();
        let rows = st
            .query_map([&run_id], |r| (0..n).map(|i| r.get(i)).collect())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        (names, rows)
    };
    let (names, mut run) = rows("SELECT * FROM runs WHERE run_id = ?1");
    let (_, envelopes) = rows("SELECT * FROM envelopes WHERE run_id = ?1 ORDER BY idx");
    assert_eq!((names[0].as_str(), envelopes.len()), ("run_id", 4));
    let insert_run = format!(
        "INSERT INTO runs ({}) VALUES ({})",
        names.join(", "),
        vec!["?"; names.len()].join(", ")
    );
    RowsFloor {
        conn,
        insert_run,
        run: run.pop().unwrap(),
        envelopes,
    }
}

impl RowsFloor {
    /// Insert `n` runs' rows; the time it took.
    fn insert(&mut self, n: u64) -> std::time::Duration {
        use rusqlite::ToSql;
        let ids: Vec<rusqlite::types::Value> = (0..n)
            .map(|_| uuid::Uuid::now_v7().hyphenated().to_string().into())
            .collect();
        let start = std::time::Instant::now();
        for batch in ids.chunks(64) {
            let tx = self.conn.transaction().unwrap();
            for id in batch {
                let mut run: Vec<&dyn ToSql> = self.run.iter().map(|v| v as &dyn ToSql).collect();
                run[0] = id;
                tx.prepare_cached(&self.insert_run)
                    .unwrap()
                    .execute(rusqlite::params_from_iter(run))
                    .unwrap();
                let mut st = tx
                    .prepare_cached(
                        "INSERT INTO envelopes (run_id, idx, step_id, policy_hash, state_hash, prev_hash, hash, payload)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )
                    .unwrap();
                for e in &self.envelopes {
                    let mut env: Vec<&dyn ToSql> = e.iter().map(|v| v as &dyn ToSql).collect();
                    env[0] = id;
                    st.execute(rusqlite::params_from_iter(env)).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        start.elapsed()
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
