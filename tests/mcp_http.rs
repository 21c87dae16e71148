//! The MCP HTTP server (`nanovm::mcp::http`) on a real socket, driven by rmcp's Streamable
//! HTTP client and by raw reqwest for status codes, with a tiny test handler.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use nanovm::mcp::http::{Health, HttpError, HttpOptions, serve};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolRequestParams, ServerCapabilities, ServerConfig};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const KEY: &str = "test-key-0123456789";
const INIT_BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"raw","version":"1.0"}}}"#;
/// Generous bound for anything that should happen "soon".
const SOON: Duration = Duration::from_secs(10);

// ---- the test handler -------------------------------------------------------------------

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    text: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct SlowArgs {
    /// Milliseconds to wait, unless released earlier.
    ms: u64,
}

#[derive(Debug, Clone)]
struct TestHandler {
    #[allow(dead_code)]
    tool_router: ToolRouter<Self>,
    /// Notified when a `slow` call starts.
    started: Arc<Notify>,
    /// Cancelled to let every `slow` call finish at once.
    release: CancellationToken,
}

#[tool_router]
impl TestHandler {
    #[tool(description = "Returns its text")]
    fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    #[tool(description = "Waits `ms` milliseconds (or until released), then answers")]
    async fn slow(&self, Parameters(SlowArgs { ms }): Parameters<SlowArgs>) -> String {
        self.started.notify_one();
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms)) => {}
            () = self.release.cancelled() => {}
        }
        "slept".to_owned()
    }
}

#[tool_handler]
impl ServerHandler for TestHandler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

struct FixedHealth(Result<Value, String>);

impl Health for FixedHealth {
    fn health(&self) -> BoxFuture<'_, Result<Value, String>> {
        Box::pin(async move { self.0.clone() })
    }
}

// ---- harness ----------------------------------------------------------------------------

struct Server {
    addr: SocketAddr,
    started: Arc<Notify>,
    release: CancellationToken,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), HttpError>>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn client(&self, key: Option<&str>) -> RunningService<RoleClient, ()> {
        self.try_client(key).await.expect("client connects")
    }

    async fn try_client(
        &self,
        key: Option<&str>,
    ) -> Result<RunningService<RoleClient, ()>, rmcp::service::ClientInitializeError> {
        let mut config = StreamableHttpClientTransportConfig::with_uri(self.url("/mcp"));
        if let Some(key) = key {
            config = config.auth_header(key);
        }
        ().serve(StreamableHttpClientTransport::from_config(config))
            .await
    }

    /// Fires the shutdown future and waits for `serve` to return.
    async fn stop(mut self) {
        self.release.cancel();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(SOON, self.task)
            .await
            .expect("serve returns")
            .unwrap()
            .unwrap();
    }
}

async fn start(opts: HttpOptions) -> Server {
    start_with_health(opts, Ok(json!({"ok": true}))).await
}

async fn start_with_health(opts: HttpOptions, health: Result<Value, String>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let started = Arc::new(Notify::new());
    let release = CancellationToken::new();
    let (tx, rx) = oneshot::channel::<()>();
    let factory = {
        let (started, release) = (started.clone(), release.clone());
        move || {
            Ok(TestHandler {
                tool_router: TestHandler::tool_router(),
                started: started.clone(),
                release: release.clone(),
            })
        }
    };
    let task = tokio::spawn(serve(
        listener,
        factory,
        Arc::new(FixedHealth(health)),
        opts,
        async move {
            let _ = rx.await;
        },
    ));
    Server {
        addr,
        started,
        release,
        shutdown: Some(tx),
        task,
    }
}

fn with_key() -> HttpOptions {
    HttpOptions {
        api_key: Some(KEY.to_owned()),
        ..HttpOptions::default()
    }
}

fn raw_init(http: &reqwest::Client, server: &Server) -> reqwest::RequestBuilder {
    http.post(server.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(INIT_BODY)
}

async fn json_body(response: reqwest::Response) -> Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &'static str,
    args: Value,
) -> Result<String, rmcp::ServiceError> {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    let result = client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(args))
        .await?;
    Ok(serde_json::to_string(&result).unwrap())
}

// ---- tests ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_needs_no_auth_and_reports_degraded() {
    let server = start(with_key()).await;
    let http = reqwest::Client::new();
    let response = http.get(server.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = json_body(response).await;
    assert_eq!(
        body,
        json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"), "database": {"ok": true}})
    );
    server.stop().await;

    let server = start_with_health(with_key(), Err("database is locked".into())).await;
    let response = http.get(server.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body = json_body(response).await;
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["database"]["error"], "database is locked");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_auth_missing_wrong_and_right() {
    let server = start(with_key()).await;
    let http = reqwest::Client::new();

    let missing = raw_init(&http, &server).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    let body = json_body(missing).await;
    assert_eq!(body["error"], "unauthorized");
    assert!(
        body["message"].as_str().unwrap().contains("missing"),
        "{body}"
    );

    let wrong_token = "not-the-key-but-a-guess";
    let wrong = raw_init(&http, &server)
        .bearer_auth(wrong_token)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.headers()["www-authenticate"], "Bearer");
    let text = wrong.text().await.unwrap();
    assert!(!text.contains(wrong_token), "token echoed: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"], "unauthorized");
    assert!(
        body["message"].as_str().unwrap().contains("invalid"),
        "{body}"
    );

    // A same-length wrong key and a prefix of the key are refused too.
    for guess in ["test-key-0123456788", "test-key-012345678"] {
        let response = raw_init(&http, &server)
            .bearer_auth(guess)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }

    // The rmcp client without the key cannot initialise.
    assert!(server.try_client(None).await.is_err());

    let client = server.client(Some(KEY)).await;
    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["echo", "slow"]);
    let echoed = call(&client, "echo", json!({"text": "hello over http"}))
        .await
        .unwrap();
    assert!(echoed.contains("hello over http"), "{echoed}");
    client.cancel().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_host_and_origin_are_rejected() {
    let server = start(HttpOptions::default()).await;
    let http = reqwest::Client::new();
    let response = raw_init(&http, &server)
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    // With no allowed origins, any browser Origin is refused.
    let response = raw_init(&http, &server)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    // The loopback host itself works (no key configured).
    let response = raw_init(&http, &server).send().await.unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;

    let server = start(HttpOptions {
        allowed_origins: vec!["https://app.example".into()],
        ..HttpOptions::default()
    })
    .await;
    let response = raw_init(&http, &server)
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_origin_is_refused_at_start() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let opts = HttpOptions {
        allowed_origins: vec!["*".into()],
        ..with_key()
    };
    let result = serve(
        listener,
        || -> Result<TestHandler, std::io::Error> { Err(std::io::Error::other("unused")) },
        Arc::new(FixedHealth(Ok(Value::Null))),
        opts,
        std::future::pending(),
    )
    .await;
    assert!(
        matches!(
            result,
            Err(HttpError::BadOption {
                option: "allowed_origins",
                ..
            })
        ),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_413() {
    let server = start(HttpOptions {
        max_body_bytes: 1024,
        ..with_key()
    })
    .await;
    let http = reqwest::Client::new();
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(2048)
    );
    let response = http
        .post(server.url("/mcp"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // A normal request still fits.
    let response = raw_init(&http, &server)
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_in_flight_limit_are_shed() {
    let server = start(HttpOptions {
        max_in_flight: 1,
        ..with_key()
    })
    .await;
    let client = Arc::new(server.client(Some(KEY)).await);
    let slow = tokio::spawn({
        let client = client.clone();
        async move { call(&client, "slow", json!({"ms": 60_000})).await }
    });
    tokio::time::timeout(SOON, server.started.notified())
        .await
        .expect("slow call starts");

    let http = reqwest::Client::new();
    let shed = tokio::time::timeout(SOON, raw_init(&http, &server).bearer_auth(KEY).send())
        .await
        .expect("shed at once, not queued")
        .unwrap();
    assert_eq!(shed.status(), 429);
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_eq!(json_body(shed).await["error"], "overloaded");

    server.release.cancel();
    let done = slow.await.unwrap().unwrap();
    assert!(done.contains("slept"), "{done}");
    // The slot is free again.
    let echoed = call(&client, "echo", json!({"text": "after"}))
        .await
        .unwrap();
    assert!(echoed.contains("after"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_429_with_retry_after() {
    let server = start(HttpOptions {
        rate_per_minute: 3,
        ..with_key()
    })
    .await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let response = raw_init(&http, &server)
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let limited = raw_init(&http, &server)
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    let body = json_body(limited).await;
    assert_eq!(body["error"], "rate_limited");
    // Unauthenticated requests count too, and /health is not limited.
    let limited = raw_init(&http, &server).send().await.unwrap();
    assert_eq!(limited.status(), 429);
    let health = http.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_tool_calls_succeed() {
    let server = start(with_key()).await;

    // One client, fifty calls at once.
    let client = Arc::new(server.client(Some(KEY)).await);
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let tool = if i % 2 == 0 { "slow" } else { "echo" };
                let args = if i % 2 == 0 {
                    json!({"ms": 20})
                } else {
                    json!({"text": format!("call {i}")})
                };
                call(&client, tool, args).await
            })
        })
        .collect();
    for (i, handle) in calls.into_iter().enumerate() {
        let out = handle.await.unwrap().unwrap();
        let expected = if i % 2 == 0 {
            "slept".to_owned()
        } else {
            format!("call {i}")
        };
        assert!(out.contains(&expected), "{out}");
    }

    // Five clients, ten calls each, all at once.
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(Arc::new(server.client(Some(KEY)).await));
    }
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let client = clients[i % 5].clone();
            tokio::spawn(async move {
                call(&client, "echo", json!({"text": format!("multi {i}")})).await
            })
        })
        .collect();
    for (i, handle) in calls.into_iter().enumerate() {
        let out = handle.await.unwrap().unwrap();
        assert!(out.contains(&format!("multi {i}")), "{out}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_call_and_refuses_new_connections() {
    let mut server = start(with_key()).await;
    let client = Arc::new(server.client(Some(KEY)).await);
    let slow = tokio::spawn({
        let client = client.clone();
        async move { call(&client, "slow", json!({"ms": 60_000})).await }
    });
    tokio::time::timeout(SOON, server.started.notified())
        .await
        .expect("slow call starts");

    server.shutdown.take().unwrap().send(()).unwrap();

    // The listener closes while the call is still running.
    let refused = tokio::time::timeout(SOON, async {
        loop {
            match tokio::net::TcpStream::connect(server.addr).await {
                Err(_) => break,
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    assert!(refused.is_ok(), "listener still accepting after shutdown");
    assert!(!slow.is_finished());
    assert!(
        !server.task.is_finished(),
        "serve returned before the call finished"
    );

    server.release.cancel();
    let done = tokio::time::timeout(SOON, slow)
        .await
        .expect("slow call completes")
        .unwrap()
        .unwrap();
    assert!(done.contains("slept"), "{done}");

    tokio::time::timeout(SOON, &mut server.task)
        .await
        .expect("serve returns after the drain")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_bounds_the_wait() {
    let mut server = start(HttpOptions {
        shutdown_grace: Duration::from_millis(100),
        ..with_key()
    })
    .await;
    let client = Arc::new(server.client(Some(KEY)).await);
    let slow = tokio::spawn({
        let client = client.clone();
        async move { call(&client, "slow", json!({"ms": 60_000})).await }
    });
    tokio::time::timeout(SOON, server.started.notified())
        .await
        .expect("slow call starts");
    server.shutdown.take().unwrap().send(()).unwrap();
    // Never released: serve still returns once the grace has passed.
    tokio::time::timeout(SOON, &mut server.task)
        .await
        .expect("serve returns after the grace")
        .unwrap()
        .unwrap();
    // The cancelled call never succeeds. (rmcp's client keeps retrying the event stream
    // of a call whose server went away rather than failing it, so it may still be pending.)
    if slow.is_finished() {
        let result = slow.await.unwrap();
        assert!(result.is_err(), "{result:?}");
    } else {
        slow.abort();
    }
}
