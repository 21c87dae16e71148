//! `kind = "mcp"` tools against real MCP servers: an in-process server built with rmcp's
//! server macros behind axum (Streamable HTTP), a small stdio server script
//! (`tests/fixtures/tools/mcp_server.py`), and `nanovm serve --transport stdio` itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::tempdir;
use nanovm::check::{Options, check_source};
use nanovm::exec::adapter::{CallError, Llm, Tools};
use nanovm::exec::tools::{Config, LlmConfig, Registry};
use nanovm::exec::{Runnable, Runtime, Status};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{Json, ServerHandler, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tools")
}

fn config(text: &str) -> Config {
    Config::from_toml_str(text, fixtures().join("test.toml"))
        .unwrap_or_else(|e| panic!("config does not load:\n{e}"))
}

fn failed(r: Result<Value, CallError>) -> String {
    match r {
        Err(CallError::Failed(m)) => m,
        other => panic!("expected CallError::Failed, got {other:?}"),
    }
}

// ---- the downstream server -----------------------------------------------------------------

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct LookupArgs {
    id: String,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
struct Order {
    id: String,
    status: String,
    total: f64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    text: String,
}

#[derive(Debug, Clone)]
struct Downstream {
    tool_router: ToolRouter<Self>,
    calls: Arc<AtomicUsize>,
}

#[tool_router(router = tool_router)]
impl Downstream {
    fn new(calls: Arc<AtomicUsize>) -> Self {
        Self {
            tool_router: Self::tool_router(),
            calls,
        }
    }

    #[tool(description = "Look an order up (structured output)")]
    async fn lookup(
        &self,
        Parameters(LookupArgs { id }): Parameters<LookupArgs>,
    ) -> Result<Json<Order>, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if id == "missing" {
            return Err(format!("no order `{id}`"));
        }
        Ok(Json(Order {
            id,
            status: "shipped".into(),
            total: 12.5,
        }))
    }

    #[tool(description = "Answers its text as text content")]
    async fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        self.calls.fetch_add(1, Ordering::SeqCst);
        text
    }

    #[tool(description = "Always fails")]
    async fn broken(&self) -> Result<String, String> {
        Err("the database is down".into())
    }

    #[tool(description = "Answers after two seconds")]
    async fn slow(&self) -> String {
        tokio::time::sleep(Duration::from_secs(2)).await;
        "late".into()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Downstream {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// Serve a [`Downstream`] at `http://127.0.0.1:PORT/mcp`; requests without the header
/// `x-path: $PATH` are refused (401), to check that the configured headers are sent.
async fn serve(calls: Arc<AtomicUsize>) -> String {
    let service: StreamableHttpService<Downstream, LocalSessionManager> =
        StreamableHttpService::new(
            move || Ok(Downstream::new(calls.clone())),
            Default::default(),
            StreamableHttpServerConfig::default(),
        );
    let router =
        axum::Router::new()
            .nest_service("/mcp", service)
            .layer(axum::middleware::from_fn(
                |req: axum::extract::Request, next: axum::middleware::Next| async move {
                    let path = std::env::var("PATH").unwrap();
                    let ok = req
                        .headers()
                        .get("x-path")
                        .is_some_and(|v| v.as_bytes() == path.as_bytes());
                    if ok {
                        next.run(req).await
                    } else {
                        axum::response::IntoResponse::into_response((
                            axum::http::StatusCode::UNAUTHORIZED,
                            "no x-path header",
                        ))
                    }
                },
            ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}/mcp")
}

fn http_config(url: &str) -> Config {
    config(&format!(
        r#"
[llm]
provider = "mock"
reply = "ok"

[tools.lookup]
kind = "mcp"
url = "{url}"
headers = {{X-Path = "${{PATH}}"}}
input_schema = {{type = "object", required = ["id"]}}
output_schema = {{type = "object", required = ["id", "status", "total"], properties = {{id = {{type = "string"}}, status = {{type = "string"}}, total = {{type = "number"}}}}}}

[tools.say]
kind = "mcp"
url = "{url}"
headers = {{X-Path = "${{PATH}}"}}
tool = "echo"

[tools.broken]
kind = "mcp"
url = "{url}"
headers = {{X-Path = "${{PATH}}"}}

[tools.slow]
kind = "mcp"
url = "{url}"
headers = {{X-Path = "${{PATH}}"}}
timeout_seconds = 0.3

[tools.nosuch]
kind = "mcp"
url = "{url}"
headers = {{X-Path = "${{PATH}}"}}
tool = "no_such_tool"

[tools.big]
kind = "mcp"
url = "{url}"
headers = {{X-Path = "${{PATH}}"}}
tool = "echo"
max_output_bytes = 100

[tools.noauth]
kind = "mcp"
url = "{url}"
tool = "echo"

[tools.down]
kind = "mcp"
url = "http://127.0.0.1:9/mcp"

[tools.denied]
kind = "mcp"
url = "{url}"
headers = {{X-Path = "${{PATH}}"}}
tool = "echo"
capabilities = ["payments"]

[policy]
deny_capabilities = ["payments"]
"#
    ))
}

// ---- Streamable HTTP -----------------------------------------------------------------------

#[tokio::test]
async fn http_server_tools() {
    let calls = Arc::new(AtomicUsize::new(0));
    let url = serve(calls.clone()).await;
    let r = http_config(&url).registry().unwrap();

    // Structured content is the value.
    assert_eq!(
        r.call("lookup", json!({"id": "A7"})).await.unwrap(),
        json!({"id": "A7", "status": "shipped", "total": 12.5})
    );
    // Text that parses as JSON is that JSON; other text is a string.
    assert_eq!(
        r.call("say", json!({"text": "{\"n\": [1, 2]}"}))
            .await
            .unwrap(),
        json!({"n": [1, 2]})
    );
    assert_eq!(
        r.call("say", json!({"text": "plain words"})).await.unwrap(),
        json!("plain words")
    );

    // isError: true.
    let m = failed(r.call("broken", json!({})).await);
    assert_eq!(
        m,
        format!("MCP server `{url}` tool `broken` failed: the database is down")
    );
    let m = failed(r.call("lookup", json!({"id": "missing"})).await);
    assert!(
        m.ends_with("tool `lookup` failed: no order `missing`"),
        "{m}"
    );

    // A JSON-RPC error (an unknown tool).
    let m = failed(r.call("nosuch", json!({})).await);
    assert!(
        m.starts_with(&format!(
            "the MCP server `{url}` refused the call of tool `no_such_tool`"
        )),
        "{m}"
    );

    // The schemas, the output cap and the policy apply as to the other kinds.
    let m = failed(r.call("lookup", json!({"key": 1})).await);
    assert!(m.contains("input schema"), "{m}");
    let m = failed(r.call("big", json!({"text": "x".repeat(200)})).await);
    assert_eq!(m, "output exceeds 100 bytes");
    let before = calls.load(Ordering::SeqCst);
    let m = failed(r.call("denied", json!({"text": "x"})).await);
    assert!(m.contains("denied by the policy"), "{m}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "a denied tool does not run"
    );

    // The configured headers are sent: without them the server refuses to connect.
    let m = failed(r.call("noauth", json!({"text": "x"})).await);
    assert!(
        m.starts_with(&format!("cannot connect to the MCP server `{url}`")),
        "{m}"
    );
    let m = failed(r.call("down", json!({})).await);
    assert!(
        m.starts_with("cannot connect to the MCP server `http://127.0.0.1:9/mcp`"),
        "{m}"
    );

    // The timeout; the connection stays usable.
    let t0 = Instant::now();
    assert_eq!(
        r.call("slow", json!({})).await,
        Err(CallError::Timeout(Duration::from_millis(300)))
    );
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        r.call("say", json!({"text": "still here"})).await.unwrap(),
        json!("still here")
    );
}

#[tokio::test]
async fn http_calls_share_a_connection_and_run_concurrently() {
    let calls = Arc::new(AtomicUsize::new(0));
    let url = serve(calls.clone()).await;
    let r = config(&format!(
        r#"
[tools.slow]
kind = "mcp"
url = "{url}"
headers = {{X-Path = "${{PATH}}"}}
timeout_seconds = 10

[tools.say]
kind = "mcp"
url = "{url}"
headers = {{X-Path = "${{PATH}}"}}
tool = "echo"
"#
    ))
    .registry()
    .unwrap();
    let t0 = Instant::now();
    let outs = futures_util::future::join_all((0..4).map(|_| r.call("slow", json!({})))).await;
    for o in outs {
        assert_eq!(o.unwrap(), json!("late"));
    }
    assert!(
        t0.elapsed() < Duration::from_millis(3500),
        "{:?}",
        t0.elapsed()
    );
    let outs = futures_util::future::join_all(
        (0..8).map(|i| r.call("say", json!({"text": format!("{i}")}))),
    )
    .await;
    for (i, o) in outs.into_iter().enumerate() {
        assert_eq!(o.unwrap(), json!(i));
    }
}

/// Check a program against the config's catalog (as `nanovm run` does) and run it.
async fn run_program(config: &Config, program: Value, context: Value) -> nanovm::exec::Trace {
    let opts = Options {
        catalog: Some(Arc::new(config.catalog())),
        ..Options::default()
    };
    let report = check_source(&program.to_string(), &opts);
    let Some(checked) = report.checked else {
        panic!(
            "the checker rejects the program: {:#?}",
            report
                .diagnostics
                .iter()
                .map(|d| format!("{} {}", d.code, d.message))
                .collect::<Vec<_>>()
        )
    };
    let llm: Arc<dyn Llm> = match &config.llm {
        Some(LlmConfig::Mock(m)) => m.build().unwrap(),
        other => panic!("expected a mock LLM, got {other:?}"),
    };
    let tools: Registry = config.registry().unwrap();
    let Value::Object(context) = context else {
        panic!("the context must be an object")
    };
    Runtime::new(llm, Arc::new(tools))
        .run(&Runnable::new(checked), context)
        .await
        .trace
}

#[tokio::test]
async fn a_program_calls_mcp_tools() {
    let calls = Arc::new(AtomicUsize::new(0));
    let url = serve(calls.clone()).await;
    let c = http_config(&url);
    let trace = run_program(
        &c,
        json!({"name": "p", "steps": [
            {"id": "order", "type": "tool", "tool": "lookup", "args": {"id": "$id"}},
            {"id": "ask", "type": "llm", "prompt": "Status: $order.output.status"},
            {"id": "done", "type": "tool", "tool": "say", "args": {"text": "$order.output.status"}}
        ]}),
        json!({"id": "A7"}),
    )
    .await;
    assert_eq!(trace.status, Status::Success, "{trace:#?}");
    assert_eq!(
        trace.steps[0].output,
        json!({"id": "A7", "status": "shipped", "total": 12.5})
    );
    assert_eq!(trace.final_output, json!("shipped"));

    // The output schema types the tool's output: a typo is a check error.
    let opts = Options {
        catalog: Some(Arc::new(c.catalog())),
        ..Options::default()
    };
    let typo = json!({"name": "p", "steps": [
        {"id": "order", "type": "tool", "tool": "lookup", "args": {"id": "x"}},
        {"id": "done", "type": "tool", "tool": "say", "args": {"text": "$order.output.stauts"}}
    ]});
    assert!(check_source(&typo.to_string(), &opts).checked.is_none());

    // A failing MCP tool fails its step with the server's message.
    let trace = run_program(
        &c,
        json!({"name": "p", "steps": [
            {"id": "b", "type": "tool", "tool": "broken", "args": {}}
        ]}),
        json!({}),
    )
    .await;
    assert_eq!(trace.status, Status::Failed);
    let e = trace.steps[0].error.clone().unwrap();
    assert!(
        e.contains("tool `broken` failed: the database is down"),
        "{e}"
    );
}

// ---- stdio ---------------------------------------------------------------------------------

/// Whether a process is gone (or a zombie waiting for a reaper that is not us).
fn gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

async fn wait_gone(pid: u64) -> bool {
    for _ in 0..100 {
        if gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn stdio_registry() -> Registry {
    config(
        r#"
[tools.info]
kind = "mcp"
command = ["python3", "mcp_server.py"]
env = {MCP_FIXTURE = "set"}
timeout_seconds = 20

[tools.quit]
kind = "mcp"
command = ["python3", "mcp_server.py"]
env = {MCP_FIXTURE = "set"}
tool = "exit"
timeout_seconds = 20

[tools.other]
kind = "mcp"
command = ["python3", "mcp_server.py"]
tool = "nope"
timeout_seconds = 20

[tools.missing]
kind = "mcp"
command = ["./no-such-server"]
"#,
    )
    .registry()
    .unwrap()
}

#[tokio::test]
async fn stdio_server_tools() {
    let r = stdio_registry();
    let out = r.call("info", json!({"q": [1, "two"]})).await.unwrap();
    assert_eq!(out["args"], json!({"q": [1, "two"]}));
    assert_eq!(out["env"], "set");
    assert_eq!(
        Path::new(out["cwd"].as_str().unwrap())
            .canonicalize()
            .unwrap(),
        fixtures().canonicalize().unwrap()
    );
    let pid = out["pid"].as_u64().unwrap();
    // Later calls share the process.
    let again = r.call("info", json!({})).await.unwrap();
    assert_eq!(again["pid"].as_u64(), Some(pid));

    // A server that dies mid-call: the call fails (quoting its stderr), the next call
    // starts it again (`quit` names the same server as `info`: one process).
    let m = failed(r.call("quit", json!({})).await);
    assert!(m.contains("closed"), "{m}");
    assert!(m.contains("fixture: exiting on request"), "{m}");
    assert!(wait_gone(pid).await, "the old server is still running");
    let out = r.call("info", json!({})).await.unwrap();
    let pid2 = out["pid"].as_u64().unwrap();
    assert_ne!(pid2, pid);

    // A JSON-RPC error; a program that cannot start.
    let m = failed(r.call("other", json!({})).await);
    assert!(m.contains("refused the call of tool `nope`"), "{m}");
    let m = failed(r.call("missing", json!({})).await);
    assert!(m.starts_with("cannot start `"), "{m}");
    let other_pid = {
        // `other` has no env: another server process.
        let r2 = stdio_registry();
        let out = r2.call("info", json!({})).await.unwrap();
        let p = out["pid"].as_u64().unwrap();
        drop(r2);
        p
    };
    // Dropping a registry kills its servers.
    assert!(
        wait_gone(other_pid).await,
        "dropped registry left {other_pid}"
    );
    drop(r);
    assert!(wait_gone(pid2).await, "dropped registry left {pid2}");
}

#[test]
fn stdio_servers_are_killed_when_the_registry_outlives_the_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let r = stdio_registry();
    let out = rt.block_on(r.call("info", json!({}))).unwrap();
    let pid = out["pid"].as_u64().unwrap();
    drop(rt);
    drop(r);
    let t0 = Instant::now();
    while !gone(pid) && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone(pid), "the server {pid} outlived the registry");
}

/// `nanovm serve --transport stdio` as the downstream server: nanovm calls a second nanovm's
/// `evaluate_expression` as a tool, and a whole program reads its structured result.
#[tokio::test]
async fn nanovm_serve_over_stdio() {
    let exe = env!("CARGO_BIN_EXE_nanovm");
    let dir = tempdir("serve");
    let db = dir.join("downstream.db");
    let cfg = config(&format!(
        r#"
[tools.eval]
kind = "mcp"
command = [{exe:?}, "serve", "--transport", "stdio", "--config", "none", "--db", {db:?}]
tool = "evaluate_expression"
timeout_seconds = 20
output_schema = {{type = "object", required = ["value", "fuel_used", "fuel_bound"], properties = {{value = {{type = "boolean"}}, fuel_used = {{type = "integer"}}, fuel_bound = {{type = "integer"}}}}}}
"#
    ));
    let r = cfg.registry().unwrap();
    let out = r
        .call(
            "eval",
            json!({"expression": "$n > 10 and $who == 'ops'", "context": {"data": {"n": 20, "who": "ops"}}}),
        )
        .await
        .unwrap();
    assert_eq!(out["value"], json!(true), "{out}");
    assert!(out["fuel_used"].as_u64().unwrap() <= out["fuel_bound"].as_u64().unwrap());
    // A bad expression is the downstream tool's error, quoted.
    let err = r
        .call("eval", json!({"expression": "$n === 1"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("evaluate_expression") && err.contains("==="),
        "{err}"
    );
    drop(r);
    let _ = std::fs::remove_dir_all(&dir);
}
