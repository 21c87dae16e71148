//! MCP benchmarks: `run_program` round-trips from a real rmcp client to `NanovmServer` over an
//! in-process duplex pipe, persisted (program, run, envelopes and trace written to a WAL
//! file): one call at a time, and 32 and 128 in flight on one connection (a sliding window:
//! a call starts as soon as another returns).
//!
//! Beside them, the floor: the same calls (the same arguments, and the result `run_program`
//! returned) to a server that answers every call with that stored result and does nothing
//! else. What rmcp itself costs per call (framing, parsing and serialising both messages on
//! both sides, its tasks and channels) is what the floor measures; `run_program`'s figure minus
//! the floor's is what checking, running and persisting add. Both again over two channels of
//! typed messages instead of the pipe (`_typed`): rmcp's sessions, ids and dispatch with
//! nothing serialised or parsed between client and server.
//!
//! The program is the reference's `mcp_router` scenario made valid for nanovm's checker (the
//! reference's version loops on itself and puts `is_terminal` on condition steps, both check
//! errors): the same four conditions, then a mock tool step, five step records as in the
//! reference's trace. Compare with the reference's `mcp_run_program`
//! (`../shared/bench/bench_ref.py --only mcp_run_program`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{bench_dir, load, remove_bench_dirs};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nanovm::exec::setup::Adapters;
use nanovm::exec::tools::Config;
use nanovm::mcp::{NanovmServer, ServerOptions};
use nanovm::store::{Store, StoreOptions};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RunningService};
use rmcp::{ErrorData, RoleClient, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Map, Value, json};
use std::hint::black_box;
use std::sync::Arc;

const CONFIG: &str = "[tools.done]\nkind = \"mock\"\nvalue = \"approved\"\n";

fn server(tag: &str) -> NanovmServer {
    let dir = bench_dir(&format!("mcp-{tag}"));
    let config = Config::from_toml_str(CONFIG, dir.join("nanovm.toml")).unwrap();
    let adapters = Adapters::from_config(&config).unwrap();
    let store = Store::open(dir.join("bench.db"), StoreOptions::default()).unwrap();
    NanovmServer::new(store, adapters, ServerOptions::default())
}

/// The floor's server: every call is answered with the stored result.
#[derive(Clone)]
struct Canned(Arc<CallToolResult>);

impl ServerHandler for Canned {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn call_tool(
        &self,
        _request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        Ok(CallToolResponse::Complete((*self.0).clone()))
    }
}

/// A client connected to `server` by two channels of typed messages: an in-process transport
/// with no bytes at all, nothing serialised or parsed between the two (what a Rust program that
/// embeds the server would use; the reference's figure is a direct call).
async fn connect_typed<S: ServerHandler>(server: S) -> RunningService<RoleClient, ()> {
    use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
    use tokio_util::sync::PollSender;
    let (to_server, mut server_rx) = tokio::sync::mpsc::channel::<ClientJsonRpcMessage>(1024);
    let (to_client, mut client_rx) = tokio::sync::mpsc::channel::<ServerJsonRpcMessage>(1024);
    let server_side = (
        PollSender::new(to_client),
        futures_util::stream::poll_fn(move |cx| server_rx.poll_recv(cx)),
    );
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_side).await {
            let _ = running.waiting().await;
        }
    });
    let client_side = (
        PollSender::new(to_server),
        futures_util::stream::poll_fn(move |cx| client_rx.poll_recv(cx)),
    );
    ().serve(client_side).await.unwrap()
}

/// A client connected to `server` by an in-process byte pipe: JSON-RPC lines, as over stdio.
async fn connect<S: ServerHandler>(server: S) -> RunningService<RoleClient, ()> {
    let (s, c) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(s).await {
            let _ = running.waiting().await;
        }
    });
    ().serve(c).await.unwrap()
}

async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &'static str,
    args: &Map<String, Value>,
) -> CallToolResult {
    let r = client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(args.clone()))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{r:?}");
    r
}

async fn run(client: &RunningService<RoleClient, ()>, args: &Map<String, Value>) -> CallToolResult {
    call(client, "run_program", args).await
}

fn bench_mcp(c: &mut Criterion) {
    let program = load("mcp_router_nanovm.json");
    let args: Map<String, Value> = json!({"program": program}).as_object().cloned().unwrap();
    let eval: Map<String, Value> = json!({
        "expression": "$route.output == 'check_a' and not $missing",
        "context": {"step_outputs": {"route": "check_a"}, "data": {"missing": false}}
    })
    .as_object()
    .cloned()
    .unwrap();

    // Client, server and their tasks on one thread (the store's writer has its own): what the
    // reference's single asyncio loop is compared with.
    {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = tokio.block_on(connect(server("ct")));
        let mut g = c.benchmark_group("mcp_current_thread");
        g.throughput(Throughput::Elements(1));
        g.bench_function("evaluate_expression_roundtrip", |b| {
            b.iter(|| black_box(tokio.block_on(call(&client, "evaluate_expression", &eval))));
        });
        g.bench_function("run_program_roundtrip", |b| {
            b.iter(|| black_box(tokio.block_on(run(&client, &args))));
        });
        g.finish();
        tokio.block_on(async { client.cancel().await.unwrap() });
    }

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let nanovm = server("rt");
    let client = tokio.block_on(connect(nanovm.clone()));
    let first = tokio.block_on(run(&client, &args));
    let out = first.structured_content.as_ref().unwrap();
    assert_eq!(out["status"], "success", "{out}");
    assert_eq!(out["steps"], 5);
    assert_eq!(out["final_output"], "approved");

    // The floor, on its own connection: the same request and response, nothing else.
    let canned_server = Canned(Arc::new(first));
    let canned = tokio.block_on(connect(canned_server.clone()));
    // The same two over typed channels.
    let typed = tokio.block_on(connect_typed(nanovm));
    let canned_typed = tokio.block_on(connect_typed(canned_server));
    let servers = [
        ("run_program_roundtrip", &client),
        ("floor_canned_roundtrip", &canned),
        ("run_program_typed", &typed),
        ("floor_canned_typed", &canned_typed),
    ];

    let mut g = c.benchmark_group("mcp");
    g.throughput(Throughput::Elements(1));
    for (name, server) in servers {
        g.bench_function(name, |b| {
            b.iter(|| black_box(tokio.block_on(run(server, &args))));
        });
    }
    // One element per call: criterion's time is per call, its throughput calls per second. Ten
    // samples, so that each has thousands of calls: the window is full for almost all of them.
    g.sample_size(10);
    for (name, server) in servers {
        for width in [32usize, 128] {
            g.bench_function(format!("{name}_{width}_in_flight"), |b| {
                b.iter_custom(|iters| tokio.block_on(in_flight(server, &args, iters, width)))
            });
        }
    }
    for connection in [canned, typed, canned_typed] {
        tokio.block_on(async { connection.cancel().await.unwrap() });
    }
    g.finish();
    tokio.block_on(async { client.cancel().await.unwrap() });
    remove_bench_dirs();
}

/// `n` `run_program` calls with `width` of them in flight at all times (until the last ones);
/// the time they took.
async fn in_flight(
    client: &RunningService<RoleClient, ()>,
    args: &Map<String, Value>,
    n: u64,
    width: usize,
) -> std::time::Duration {
    use futures_util::StreamExt;
    let n = usize::try_from(n).unwrap();
    let start = std::time::Instant::now();
    let mut calls = futures_util::stream::FuturesUnordered::new();
    let mut started = 0;
    while started < n.min(width) {
        calls.push(run(client, args));
        started += 1;
    }
    while let Some(r) = calls.next().await {
        assert_ne!(r.is_error, Some(true));
        if started < n {
            calls.push(run(client, args));
            started += 1;
        }
    }
    start.elapsed()
}

criterion_group!(benches, bench_mcp);
criterion_main!(benches);
