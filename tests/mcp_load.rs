//! Load measurement of the MCP server over Streamable HTTP, for the MCP issue's acceptance
//! criterion: 1,000 `run_program` requests at 32 concurrent complete with no errors and p99
//! under 50 ms on the reference machine.
//!
//! The real `NanovmServer` is served in process by `nanovm::mcp::http::serve` on
//! 127.0.0.1:0 with an API key (rate limit off, 64 in flight), over a WAL store file and a mock
//! tool. 32 rmcp Streamable HTTP clients (like 32 agents) each make sequential `run_program`
//! calls of the `mcp_router` bench scenario, pulling from one shared counter until 1,000 are
//! done, after a 50-call warm-up; then the same with raw JSON-RPC POSTs from reqwest, one
//! initialized session per worker. Latency is measured around each call and printed
//! (p50/p95/p99/max); only correctness is asserted, never timing:
//!
//! ```text
//! cargo test --release --test mcp_load -- --ignored --nocapture
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nanovm::exec::setup::Adapters;
use nanovm::exec::tools::Config;
use nanovm::mcp::http::{HttpOptions, serve};
use nanovm::mcp::{NanovmServer, ServerOptions, StoreHealth};
use nanovm::store::{Store, StoreOptions};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

const KEY: &str = "load-test-key-5b2e8a71";
const CONFIG: &str = "[tools.done]\nkind = \"mock\"\nvalue = \"approved\"\n";
const PROGRAM: &str = include_str!("../benches/scenarios/mcp_router_nanovm.json");
const INIT_BODY: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"mcp_load","version":"1.0"}}}"#;
const INITIALIZED_BODY: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// Measured requests per round.
const REQUESTS: usize = 1_000;
/// Clients, each with one call in flight at a time.
const CONCURRENCY: usize = 32;
/// Unmeasured calls before each round.
const WARMUP: usize = 50;

type Client = Arc<RunningService<RoleClient, ()>>;

/// One round's results.
#[derive(Debug, Default)]
struct Round {
    latencies: Vec<Duration>,
    errors: Vec<String>,
    trace_ids: BTreeSet<String>,
    successes: usize,
    wall: Duration,
}

impl Round {
    fn report(&self, name: &str) {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let pct = |p: f64| -> f64 {
            if sorted.is_empty() {
                return f64::NAN;
            }
            // Nearest rank.
            let rank = (p * sorted.len() as f64).ceil() as usize;
            sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
        };
        let wall = self.wall.as_secs_f64();
        println!(
            "mcp_load {name}: {} requests, {} errors, {CONCURRENCY} concurrent, wall {:.3} s, \
             {:.1} req/s, latency ms p50 {:.2} p95 {:.2} p99 {:.2} max {:.2}",
            self.latencies.len(),
            self.errors.len(),
            wall,
            self.latencies.len() as f64 / wall,
            pct(0.50),
            pct(0.95),
            pct(0.99),
            pct(1.0),
        );
        for e in self.errors.iter().take(5) {
            println!("mcp_load {name}: error: {e}");
        }
    }

    fn assert_correct(&self, name: &str) {
        assert!(
            self.errors.is_empty(),
            "{name}: {} errors, first: {:?}",
            self.errors.len(),
            self.errors.first()
        );
        assert_eq!(self.successes, REQUESTS, "{name}: successes");
        assert_eq!(
            self.trace_ids.len(),
            REQUESTS,
            "{name}: every call is its own run"
        );
    }
}

/// A `run_program` result's structured content: a successful run answering "approved".
fn trace_id(out: &Value) -> Result<String, String> {
    if out["status"] != "success" || out["final_output"] != "approved" {
        return Err(format!("unexpected result: {out}"));
    }
    out["trace_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no trace_id: {out}"))
}

/// Runs `total` calls over `callers`, each caller one call at a time, pulling work from a shared
/// counter; each call is timed from start to its answer.
async fn drive<C, F, Fut>(callers: &[C], total: usize, call: F) -> Round
where
    C: Clone + Send + 'static,
    F: Fn(C) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Value, String>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = callers
        .iter()
        .cloned()
        .map(|caller| {
            let (next, call) = (next.clone(), call.clone());
            tokio::spawn(async move {
                let mut done = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let t = Instant::now();
                    let result = call(caller.clone()).await;
                    done.push((t.elapsed(), result));
                }
                done
            })
        })
        .collect();
    let mut round = Round::default();
    for task in tasks {
        for (latency, result) in task.await.unwrap() {
            round.latencies.push(latency);
            match result.and_then(|out| trace_id(&out)) {
                Ok(id) => {
                    round.successes += 1;
                    round.trace_ids.insert(id);
                }
                Err(e) => round.errors.push(e),
            }
        }
    }
    round.wall = start.elapsed();
    round
}

// ---- rmcp clients -----------------------------------------------------------------------

async fn rmcp_client(addr: SocketAddr) -> Client {
    let config = StreamableHttpClientTransportConfig::with_uri(format!("http://{addr}/mcp"))
        .auth_header(KEY);
    Arc::new(
        ().serve(StreamableHttpClientTransport::from_config(config))
            .await
            .expect("client connects"),
    )
}

async fn rmcp_call(client: Client, args: Arc<Map<String, Value>>) -> Result<Value, String> {
    let result = client
        .call_tool(CallToolRequestParams::new("run_program").with_arguments((*args).clone()))
        .await
        .map_err(|e| format!("protocol error: {e}"))?;
    if result.is_error == Some(true) {
        return Err(format!("isError result: {result:?}"));
    }
    match result.structured_content {
        Some(out) => Ok(out),
        None => Err(format!("no structured content: {:?}", result.content)),
    }
}

// ---- raw JSON-RPC over reqwest ----------------------------------------------------------

/// One initialized MCP session driven by hand-written JSON-RPC POSTs.
#[derive(Debug, Clone)]
struct RawSession {
    http: reqwest::Client,
    url: Arc<str>,
    session: Arc<str>,
    protocol: Arc<str>,
    next_id: Arc<AtomicU64>,
    program: Arc<Value>,
}

/// The JSON-RPC response in a POST's body: plain JSON, or the `data:` of an SSE event.
fn response_message(body: &str) -> Result<Value, String> {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        return Ok(v);
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some())
        .ok_or_else(|| format!("no JSON-RPC response in body: {body:?}"))
}

fn post(http: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    http.post(url)
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
}

async fn raw_session(http: &reqwest::Client, url: &str, program: Arc<Value>) -> RawSession {
    let init = post(http, url).body(INIT_BODY).send().await.unwrap();
    assert_eq!(init.status(), 200);
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let message = response_message(&init.text().await.unwrap()).unwrap();
    let protocol = message["result"]["protocolVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("no protocol version: {message}"))
        .to_owned();
    let initialized = post(http, url)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", &protocol)
        .body(INITIALIZED_BODY)
        .send()
        .await
        .unwrap();
    assert!(
        initialized.status().is_success(),
        "{}",
        initialized.status()
    );
    RawSession {
        http: http.clone(),
        url: url.into(),
        session: session.into(),
        protocol: protocol.into(),
        next_id: Arc::new(AtomicU64::new(1)),
        program,
    }
}

async fn raw_call(s: RawSession) -> Result<Value, String> {
    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
    let body = json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {"name": "run_program", "arguments": {"program": &*s.program}},
    });
    let response = post(&s.http, &s.url)
        .header("mcp-session-id", &*s.session)
        .header("mcp-protocol-version", &*s.protocol)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("body failed: {e}"))?;
    if status != 200 {
        return Err(format!("HTTP {status}: {text}"));
    }
    let mut message = response_message(&text)?;
    if message["id"] != id {
        return Err(format!("response to another request: {message}"));
    }
    if let Some(error) = message.get("error") {
        return Err(format!("JSON-RPC error: {error}"));
    }
    let result = message["result"].take();
    if result["isError"] == true {
        return Err(format!("isError result: {result}"));
    }
    result
        .get("structuredContent")
        .cloned()
        .ok_or_else(|| format!("no structured content: {result}"))
}

// ---- the measurement --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load measurement: cargo test --release --test mcp_load -- --ignored --nocapture"]
async fn http_1000_run_program_at_32_concurrent() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nanovm-mcp-load");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = Config::from_toml_str(CONFIG, dir.join("nanovm.toml")).unwrap();
    let adapters = Adapters::from_config(&config).unwrap();
    let store = Store::open(dir.join("load.db"), StoreOptions::default()).unwrap();
    let server = NanovmServer::new(store.clone(), adapters, ServerOptions::default());
    let opts = HttpOptions {
        port: 0,
        api_key: Some(KEY.to_owned()),
        rate_per_minute: 0,
        max_in_flight: 64,
        ..HttpOptions::default()
    };
    let listener = opts.bind().await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        move || Ok(server.clone()),
        Arc::new(StoreHealth(store.clone())),
        opts,
        async move {
            let _ = stopped.await;
        },
    ));

    let program: Value = serde_json::from_str(PROGRAM).unwrap();

    // Round 1: 32 rmcp clients.
    let mut clients = Vec::new();
    for _ in 0..CONCURRENCY {
        clients.push(rmcp_client(addr).await);
    }
    let args = Arc::new(json!({"program": program}).as_object().cloned().unwrap());
    let call = move |c: Client| rmcp_call(c, args.clone());
    let warmup = drive(&clients, WARMUP, call.clone()).await;
    assert!(warmup.errors.is_empty(), "warm-up: {:?}", warmup.errors);
    let rmcp_round = drive(&clients, REQUESTS, call).await;
    rmcp_round.report("rmcp client");

    // Round 2: raw JSON-RPC POSTs, one session per worker.
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/mcp");
    let program = Arc::new(program);
    let mut sessions = Vec::new();
    for _ in 0..CONCURRENCY {
        sessions.push(raw_session(&http, &url, program.clone()).await);
    }
    let warmup = drive(&sessions, WARMUP, raw_call).await;
    assert!(warmup.errors.is_empty(), "warm-up: {:?}", warmup.errors);
    let raw_round = drive(&sessions, REQUESTS, raw_call).await;
    raw_round.report("raw reqwest");

    let health: Value = http
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    println!("mcp_load: /health database: {}", health["database"]);

    for c in clients {
        if let Ok(c) = Arc::try_unwrap(c) {
            let _ = c.cancel().await;
        }
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);

    rmcp_round.assert_correct("rmcp client");
    raw_round.assert_correct("raw reqwest");
}
