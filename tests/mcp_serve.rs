//! `nanovm serve` as users start it: the real binary on 127.0.0.1:0 with an API key from the
//! environment, a `nanovm.toml` and a database file, exercised by rmcp's Streamable HTTP client
//! (auth, health, 50 concurrent `run_program` calls, a rejected program) and stopped with
//! SIGTERM; and over stdio, as Claude Desktop starts it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::tempdir;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "serve-test-key-9f8e7d";

const CONFIG: &str = r#"
[tools.lookup]
kind = "mock"
value = {amount = 42}

[tools.done]
kind = "mock"
value = "approved"
"#;

/// A running `nanovm serve --transport http`, killed when dropped.
struct Server {
    child: Child,
    base: String,
    stderr: std::thread::JoinHandle<Vec<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_http(dir: &std::path::Path) -> Server {
    std::fs::write(dir.join("nanovm.toml"), CONFIG).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nanovm"))
        .args(["serve", "--transport", "http", "--port", "0", "--config"])
        .arg(dir.join("nanovm.toml"))
        .arg("--db")
        .arg(dir.join("serve.db"))
        .env("NANO_VM_MCP_API_KEY", KEY) // the reference's name, accepted as an alias
        .env_remove("NANOVM_API_KEY")
        .env("NANOVM_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("nanovm: MCP server at http://") {
                let addr = rest.split('/').next().unwrap_or_default().to_owned();
                let _ = tx.send(addr);
            }
            lines.push(line);
        }
        lines
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server prints its address");
    Server {
        child,
        base: format!("http://{addr}"),
        stderr: reader,
    }
}

async fn client(base: &str, key: &str) -> RunningService<RoleClient, ()> {
    let config =
        StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp")).auth_header(key);
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .unwrap()
}

fn program() -> Value {
    json!({"name": "router", "steps": [
        {"id": "route", "type": "condition", "condition": "$tier == None", "then": "find", "otherwise": "no"},
        {"id": "find", "type": "tool", "tool": "lookup", "next_step": "check"},
        {"id": "check", "type": "condition", "condition": "$find.output.amount > 10", "then": "yes", "otherwise": "no"},
        {"id": "yes", "type": "tool", "tool": "done", "is_terminal": true},
        {"id": "no", "type": "tool", "tool": "done", "is_terminal": true}
    ]})
}

async fn run(c: &RunningService<RoleClient, ()>, program: Value) -> CallToolResult {
    let mut args = Map::new();
    args.insert("program".into(), program);
    c.call_tool(CallToolRequestParams::new("run_program").with_arguments(args))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_over_http_with_a_key_runs_fifty_concurrent_programs_and_stops_on_sigterm() {
    let dir = tempdir("http");
    let mut server = start_http(&dir);
    let http = reqwest::Client::new();

    // Health needs no key and reports the database.
    let health: Value = http
        .get(format!("{}/health", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(
        health["database"]["schema_version"],
        nanovm::store::SCHEMA_VERSION,
        "{health}"
    );

    // No key, a wrong key: 401 with a JSON body.
    for auth in [None, Some("Bearer wrong")] {
        let mut req = http
            .post(format!("{}/mcp", server.base))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
    }

    // The right key: 50 concurrent run_program calls over 5 clients, all persisted.
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(client(&server.base, KEY).await);
    }
    let calls = (0..50).map(|i| run(&clients[i % 5], program()));
    let results = futures_util::future::join_all(calls).await;
    let mut ids = std::collections::BTreeSet::new();
    for r in &results {
        assert_ne!(r.is_error, Some(true), "{r:?}");
        let out = r.structured_content.as_ref().unwrap();
        assert_eq!(out["status"], "success", "{out}");
        assert_eq!(out["final_output"], "approved");
        ids.insert(out["trace_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 50, "every call is its own run");

    // A broken program is rejected with the rendered diagnostics, over HTTP too.
    let mut bad = program();
    bad["steps"][1]["tool"] = json!("lokup");
    let r = run(&clients[0], bad).await;
    assert_eq!(r.is_error, Some(true));
    let body = r.structured_content.as_ref().unwrap();
    let unknown = body["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == "NV0034")
        .unwrap_or_else(|| panic!("no NV0034: {body}"));
    assert_eq!(unknown["pointer"], "/steps/1/tool");
    assert_eq!(unknown["help"], "did you mean `lookup`?");

    let health: Value = http
        .get(format!("{}/health", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["database"]["runs"], 50, "{health}");
    for c in clients {
        let _ = c.cancel().await;
    }

    // SIGTERM: a graceful exit with status 0, and the chains verify afterwards.
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
    let verify = Command::new(env!("CARGO_BIN_EXE_nanovm"))
        .args(["audit", "verify", "--all", "--db"])
        .arg(dir.join("serve.db"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let stderr = std::mem::replace(&mut server.stderr, std::thread::spawn(Vec::new));
    let log = stderr.join().unwrap().join("\n");
    assert!(log.contains("shutting down"), "{log}");
    assert!(!log.contains(KEY), "the key must never be logged");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn serve_over_stdio_speaks_mcp_on_stdout() {
    let dir = tempdir("stdio");
    std::fs::write(dir.join("nanovm.toml"), CONFIG).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_nanovm"));
    cmd.args(["serve", "--config"])
        .arg(dir.join("nanovm.toml"))
        .arg("--db")
        .arg(dir.join("stdio.db"))
        .env_remove("NANOVM_TRANSPORT");
    let transport = rmcp::transport::TokioChildProcess::new(cmd).unwrap();
    let c = ().serve(transport).await.unwrap();
    let info = c.peer_info().unwrap();
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("nanovm")
    );
    let r = run(&c, program()).await;
    assert_eq!(r.structured_content.as_ref().unwrap()["status"], "success");
    c.cancel().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
