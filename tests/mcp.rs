//! The MCP server in process: a real rmcp client talks to `NanovmServer` over an in-memory
//! duplex pipe, through every tool and error path. The tools' config is a real `nanovm.toml`
//! (mock tools), the store a real SQLite file in a temporary directory.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    deprecated // sampling (SEP-2577) is what the sampling test client speaks
)]

mod common;

use common::{TempDir, tempdir};
use nanovm::exec::setup::Adapters;
use nanovm::exec::tools::Config;
use nanovm::mcp::{NanovmServer, ServerOptions};
use nanovm::store::{Store, StoreOptions};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig,
    CreateMessageRequestParams, CreateMessageResult, Implementation, ProtocolVersion,
    SamplingMessage,
};
use rmcp::service::{RequestContext, RunningService};
use rmcp::{ClientHandler, ErrorData, RoleClient, ServiceExt};
use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CONFIG: &str = r#"
[tools.lookup]
kind = "mock"
value = {amount = 42, currency = "EUR"}
output_schema = {type = "object", required = ["amount", "currency"], properties = {amount = {type = "integer"}, currency = {type = "string"}}}

[tools.refund]
kind = "mock"
value = {refunded = true}

[tools.approval]
kind = "mock"
value = "PENDING"

[tools.echo]
kind = "mock"
value = "ok"

[tools.wire]
kind = "mock"
value = {sent = true}
capabilities = ["payments"]

[policy]
deny_capabilities = ["payments"]
"#;

fn server(dir: &std::path::Path, config: &str) -> NanovmServer {
    server_with(dir, config, ServerOptions::default())
}

fn server_with(dir: &std::path::Path, config: &str, opts: ServerOptions) -> NanovmServer {
    let config = Config::from_toml_str(config, dir.join("nanovm.toml")).unwrap();
    let adapters = Adapters::from_config(&config).unwrap();
    let store = Store::open(dir.join("nanovm.db"), StoreOptions::default()).unwrap();
    let opts = ServerOptions {
        retry_backoff: Duration::from_millis(1),
        ..opts
    };
    NanovmServer::new(store, adapters, opts)
}

/// A client connected to a fresh server over a duplex pipe.
async fn connect<C: ClientHandler + Send + 'static>(
    server: NanovmServer,
    client: C,
) -> RunningService<RoleClient, C> {
    let (s, c) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(s).await {
            let _ = running.waiting().await;
        }
    });
    client.serve(c).await.unwrap()
}

async fn start(name: &str) -> (RunningService<RoleClient, ()>, TempDir) {
    let dir = tempdir(name);
    let client = connect(server(&dir, CONFIG), ()).await;
    (client, dir)
}

fn args(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("arguments must be an object"),
    }
}

async fn call<C: ClientHandler>(
    client: &RunningService<RoleClient, C>,
    tool: &'static str,
    arguments: Value,
) -> CallToolResult {
    client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(args(arguments)))
        .await
        .unwrap_or_else(|e| panic!("{tool}: protocol error {e}"))
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ok(r: &CallToolResult) -> &Value {
    assert_ne!(r.is_error, Some(true), "tool error: {}", text(r));
    r.structured_content.as_ref().expect("structured content")
}

fn err(r: &CallToolResult) -> &Value {
    assert_eq!(r.is_error, Some(true), "expected a tool error: {}", text(r));
    r.structured_content.as_ref().expect("structured content")
}

fn has_code(out: &Value, code: &str) -> bool {
    out["diagnostics"]
        .as_array()
        .is_some_and(|ds| ds.iter().any(|d| d["code"] == code))
}

fn refund_program() -> Value {
    json!({
        "name": "refund",
        "steps": [
            {"id": "find", "type": "tool", "tool": "lookup", "args": {"order": "$order_id"}},
            {"id": "big", "type": "condition", "condition": "$find.output.amount > 10",
             "then": "pay", "otherwise": "done"},
            {"id": "pay", "type": "tool", "tool": "refund", "args": {"amount": "$find.output.amount"}},
            {"id": "done", "type": "tool", "tool": "echo", "is_terminal": true}
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// The tool list
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_tool_list_is_stable() {
    let (client, _dir) = start("list").await;
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            "check_program",
            "delete_program",
            "erase_secret",
            "evaluate_expression",
            "get_program",
            "get_trace",
            "list_programs",
            "resume_program",
            "run_program",
            "verify_trace"
        ]
    );
    for t in &tools {
        assert!(
            t.description.as_deref().is_some_and(|d| d.len() > 40),
            "{} needs a precise description",
            t.name
        );
        assert!(t.annotations.is_some(), "{} needs annotations", t.name);
    }
    let listed = serde_json::to_value(&tools).unwrap();
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_json_snapshot!("mcp_tools", listed);
    });
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn the_program_argument_schema_is_the_program_schema() {
    let (client, _dir) = start("schema").await;
    let tools = client.list_all_tools().await.unwrap();
    let run = tools.iter().find(|t| t.name == "run_program").unwrap();
    let schema = Value::Object((*run.input_schema).clone());
    let file: Value = serde_json::from_str(include_str!("../grammar/program.schema.json")).unwrap();
    // The program property is the file's root; the file's definitions are the tool schema's.
    let program = &schema["properties"]["program"];
    for key in ["type", "properties", "required", "additionalProperties"] {
        assert_eq!(program[key], file[key], "{key}");
    }
    for (name, def) in file["$defs"].as_object().unwrap() {
        assert_eq!(&schema["$defs"][name], def, "$defs/{name}");
    }
    // A real validator accepts a valid call and refuses a program without steps.
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&json!({"program": refund_program()})));
    assert!(!validator.is_valid(&json!({"program": {"name": "x"}})));
    assert!(!validator.is_valid(&json!({"program": refund_program(), "extra": 1})));
    client.cancel().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The done-when flow: a client that knows nothing about nanovm
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_naive_client_fixes_a_broken_program_from_the_diagnostics_and_runs_it() {
    let (client, _dir) = start("naive").await;
    // It lists the tools and reads the Program format from run_program's schema.
    let tools = client.list_all_tools().await.unwrap();
    let run = tools.iter().find(|t| t.name == "run_program").unwrap();
    let steps = &run.input_schema["properties"]["program"]["properties"]["steps"];
    assert_eq!(steps["type"], "array");

    // It sends a program with a typo in a jump target and in a field of a tool's output.
    let mut program = refund_program();
    program["steps"][1]["then"] = json!("pya");
    program["steps"][1]["condition"] = json!("$find.output.amout > 10");
    let r = call(&client, "run_program", json!({"program": program})).await;
    let body = err(&r);
    assert_eq!(body["error"], "invalid_program");
    let diags = body["diagnostics"].as_array().unwrap();
    let target = diags
        .iter()
        .find(|d| d["pointer"] == "/steps/1/then")
        .unwrap_or_else(|| panic!("no diagnostic at /steps/1/then: {diags:#?}"));
    assert_eq!(target["step_id"], "big");
    assert!(target["help"].as_str().unwrap().contains("pay"), "{target}");
    let field = diags
        .iter()
        .find(|d| d["pointer"] == "/steps/1/condition")
        .unwrap_or_else(|| panic!("no diagnostic at /steps/1/condition: {diags:#?}"));
    assert!(
        field["help"].as_str().unwrap().contains("amount"),
        "{field}"
    );
    // The text is the rendered report, without ANSI escapes, and says nothing ran.
    let report = text(&r);
    assert!(
        report.contains("/steps/1/then") || report.contains("pya"),
        "{report}"
    );
    assert!(report.contains("nothing ran"), "{report}");
    assert!(!report.contains('\u{1b}'), "ANSI in {report}");

    // It applies the fixes the help gives and runs the program.
    program["steps"][1]["then"] = json!("pay");
    program["steps"][1]["condition"] = json!("$find.output.amount > 10");
    let checked = call(
        &client,
        "check_program",
        json!({"program": program.clone()}),
    )
    .await;
    assert_eq!(ok(&checked)["valid"], true);
    let r = call(
        &client,
        "run_program",
        json!({"program": program, "context": {"order_id": "A-1"}}),
    )
    .await;
    let out = ok(&r);
    assert_eq!(out["status"], "success");
    // `pay` is entered from a branch, so the run ends after it (the branch-leaf rule).
    assert_eq!(out["final_output"], json!({"refunded": true}));
    assert_eq!(out["steps"], 3);
    assert!(out["trace_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(out["program_id"].as_str().is_some_and(|s| !s.is_empty()));
    client.cancel().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Each tool
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn check_program_reports_without_running() {
    let (client, _dir) = start("check").await;
    let r = call(
        &client,
        "check_program",
        json!({"program": {"steps": [{"id": "a", "type": "tool", "tool": "wire"}]}}),
    )
    .await;
    // An invalid program is a successful check whose verdict is `valid: false`.
    let out = ok(&r);
    assert_eq!(out["valid"], false);
    assert_eq!(out["errors"], 1);
    assert!(has_code(out, "NV0035"), "{out}");
    assert!(text(&r).contains("NV0035"));
    assert!(text(&r).contains("invalid: 1 error"));
    let r = call(
        &client,
        "check_program",
        json!({"program": refund_program()}),
    )
    .await;
    assert_eq!(ok(&r)["valid"], true);
    assert!(text(&r).contains("valid"));
    // Nothing ran: no runs in the store.
    let r = call(&client, "verify_trace", json!({})).await;
    assert_eq!(ok(&r)["runs"], json!([]));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn saved_programs_can_be_listed_read_and_deleted_while_traces_stay() {
    let (client, _dir) = start("programs").await;
    let r = call(
        &client,
        "run_program",
        json!({"program": refund_program(), "context": {"order_id": "A-1"}, "save_as": "refunds"}),
    )
    .await;
    let run = ok(&r).clone();
    let (trace_id, program_id) = (
        run["trace_id"].as_str().unwrap().to_owned(),
        run["program_id"].as_str().unwrap().to_owned(),
    );

    let listed = call(&client, "list_programs", json!({})).await;
    let programs = ok(&listed)["programs"].as_array().unwrap().clone();
    assert_eq!(programs.len(), 1);
    assert_eq!(programs[0]["program_id"], program_id.as_str());
    assert_eq!(programs[0]["name"], "refunds");

    let got = call(&client, "get_program", json!({"program_id": program_id})).await;
    assert_eq!(ok(&got)["program"], refund_program());
    assert_eq!(ok(&got)["name"], "refunds");

    let trace = call(&client, "get_trace", json!({"trace_id": trace_id})).await;
    assert_eq!(ok(&trace)["status"], "success");
    assert_eq!(ok(&trace)["steps"].as_array().unwrap().len(), 3);

    let deleted = call(&client, "delete_program", json!({"program_id": program_id})).await;
    assert_eq!(ok(&deleted)["deleted"], true);
    assert_eq!(ok(&deleted)["runs_kept"], 1);
    let listed = call(&client, "list_programs", json!({})).await;
    assert_eq!(ok(&listed)["programs"], json!([]));
    let got = call(&client, "get_program", json!({"program_id": program_id})).await;
    assert_eq!(err(&got)["error"], "not_found");
    let again = call(&client, "delete_program", json!({"program_id": program_id})).await;
    assert_eq!(err(&again)["error"], "not_found");

    // The trace and its audit chain stay.
    let trace = call(&client, "get_trace", json!({"trace_id": trace_id})).await;
    assert_eq!(ok(&trace)["status"], "success");
    let verified = call(&client, "verify_trace", json!({"trace_id": trace_id})).await;
    assert_eq!(ok(&verified)["ok"], true);
    assert_eq!(ok(&verified)["runs"][0]["envelopes"], 3);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn an_idempotency_key_runs_once() {
    let (client, _dir) = start("idem").await;
    let a = call(
        &client,
        "run_program",
        json!({"program": refund_program(), "context": {"order_id": "A"}, "idempotency_key": "k-1"}),
    )
    .await;
    let b = call(
        &client,
        "run_program",
        json!({"program": refund_program(), "context": {"order_id": "A"}, "idempotency_key": "k-1"}),
    )
    .await;
    assert_eq!(ok(&a)["replayed"], false);
    assert_eq!(ok(&b)["replayed"], true);
    assert_eq!(ok(&a)["trace_id"], ok(&b)["trace_id"]);
    // The same key with another program is refused, clearly.
    let other = json!({"steps": [{"id": "x", "type": "tool", "tool": "echo"}]});
    let c = call(
        &client,
        "run_program",
        json!({"program": other, "idempotency_key": "k-1"}),
    )
    .await;
    assert_eq!(err(&c)["error"], "invalid_argument");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn secrets_reach_tools_only_and_can_be_erased() {
    let (client, _dir) = start("secrets").await;
    let program = json!({"steps": [
        {"id": "pay", "type": "tool", "tool": "refund", "args": {"card": "$card"}}
    ]});
    let r = call(
        &client,
        "run_program",
        json!({"program": program, "context": {"card": {"$secret": "4111-1111", "id": "card-1"}}}),
    )
    .await;
    let trace_id = ok(&r)["trace_id"].as_str().unwrap().to_owned();
    let trace = call(&client, "get_trace", json!({"trace_id": trace_id})).await;
    let dump = ok(&trace).to_string();
    assert!(!dump.contains("4111-1111"), "{dump}");
    let erased = call(
        &client,
        "erase_secret",
        json!({"reference": "vault://secret/card-1"}),
    )
    .await;
    assert_eq!(ok(&erased)["erased"], true);
    assert_eq!(ok(&erased)["already_erased"], false);
    let twice = call(&client, "erase_secret", json!({"reference": "card-1"})).await;
    assert_eq!(ok(&twice)["already_erased"], true);
    let missing = call(&client, "erase_secret", json!({"reference": "nope"})).await;
    assert_eq!(err(&missing)["error"], "not_found");
    let verified = call(&client, "verify_trace", json!({})).await;
    assert_eq!(ok(&verified)["ok"], true);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_suspended_run_resumes_with_its_payload() {
    let (client, _dir) = start("resume").await;
    let program = json!({"name": "approve", "steps": [
        {"id": "ask", "type": "tool", "tool": "approval"},
        {"id": "decide", "type": "condition", "condition": "$__webhook__.approved == true",
         "then": "pay", "otherwise": "deny"},
        {"id": "pay", "type": "tool", "tool": "refund", "is_terminal": true},
        {"id": "deny", "type": "tool", "tool": "echo", "is_terminal": true}
    ]});
    let r = call(&client, "run_program", json!({"program": program})).await;
    assert_eq!(ok(&r)["status"], "suspended");
    assert_eq!(ok(&r)["suspended_step_id"], "ask");
    let trace_id = ok(&r)["trace_id"].as_str().unwrap().to_owned();
    let resumed = call(
        &client,
        "resume_program",
        json!({"trace_id": trace_id, "payload": {"approved": true}, "source": "operator"}),
    )
    .await;
    assert_eq!(ok(&resumed)["status"], "success");
    assert_eq!(ok(&resumed)["trace_id"], trace_id.as_str());
    // The payload is `$__webhook__`, as the tool's description says: it chose `pay`.
    assert_eq!(ok(&resumed)["final_output"], json!({"refunded": true}));
    // A run that is not suspended cannot be resumed.
    let again = call(&client, "resume_program", json!({"trace_id": trace_id})).await;
    assert_eq!(err(&again)["error"], "invalid_state");
    let missing = call(&client, "resume_program", json!({"trace_id": "nope"})).await;
    assert_eq!(err(&missing)["error"], "not_found");
    let verified = call(&client, "verify_trace", json!({"trace_id": trace_id})).await;
    assert_eq!(ok(&verified)["ok"], true);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn evaluate_expression_runs_the_sandboxed_vm() {
    let (client, _dir) = start("eval").await;
    let r = call(
        &client,
        "evaluate_expression",
        json!({"expression": "$classify.output == 'refund' and $amount > 100",
               "context": {"step_outputs": {"classify": "refund"}, "data": {"amount": 250}}}),
    )
    .await;
    let out = ok(&r);
    assert_eq!(out["value"], true);
    let (used, bound) = (
        out["fuel_used"].as_u64().unwrap(),
        out["fuel_bound"].as_u64().unwrap(),
    );
    assert!(used > 0 && used <= bound, "{out}");
    // A syntax error is pointed at, inside the expression.
    let r = call(
        &client,
        "evaluate_expression",
        json!({"expression": "$a === 1"}),
    )
    .await;
    let body = err(&r);
    assert_eq!(body["error"], "syntax");
    assert_eq!(body["diagnostics"][0]["code"], "NV0101");
    assert!(text(&r).contains("==="), "{}", text(&r));
    // A call is not part of the language.
    let r = call(
        &client,
        "evaluate_expression",
        json!({"expression": "len($a) > 1"}),
    )
    .await;
    err(&r);
    client.cancel().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Error paths: never a protocol crash
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_calls_are_clear_errors() {
    let (client, _dir) = start("errors").await;
    // Unknown tool: a protocol error (-32602) that lists the tools.
    let e = client
        .call_tool(CallToolRequestParams::new("run_programme").with_arguments(Map::new()))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("unknown tool `run_programme`") && msg.contains("run_program"),
        "{msg}"
    );
    // Missing and mistyped arguments: tool errors the model can read.
    let r = call(&client, "run_program", json!({})).await;
    assert_eq!(err(&r)["error"], "invalid_argument");
    assert!(text(&r).contains("program"), "{}", text(&r));
    let r = call(
        &client,
        "run_program",
        json!({"program": refund_program(), "save_as": ""}),
    )
    .await;
    assert_eq!(err(&r)["error"], "invalid_argument");
    let r = call(&client, "get_trace", json!({"trace_id": 7})).await;
    assert_eq!(r.is_error, Some(true));
    let r = call(
        &client,
        "run_program",
        json!({"program": refund_program(), "contxt": {}}),
    )
    .await;
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("contxt"), "{}", text(&r));
    let r = call(&client, "run_program", json!({"program": "steps: []"})).await;
    assert_eq!(err(&r)["error"], "invalid_argument");
    assert!(text(&r).contains("must be a JSON object"), "{}", text(&r));
    let r = call(&client, "get_trace", json!({"trace_id": "nope"})).await;
    assert_eq!(err(&r)["error"], "not_found");
    let r = call(&client, "verify_trace", json!({"trace_id": "nope"})).await;
    assert_eq!(r.is_error, Some(true));
    // The session still works after all that.
    let r = call(
        &client,
        "check_program",
        json!({"program": refund_program()}),
    )
    .await;
    assert_eq!(ok(&r)["valid"], true);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_program_over_the_size_limit_is_refused_before_checking() {
    let dir = tempdir("too-large");
    let opts = ServerOptions {
        max_program_bytes: 200,
        ..ServerOptions::default()
    };
    let client = connect(server_with(&dir, CONFIG, opts), ()).await;
    for tool in ["check_program", "run_program"] {
        let r = call(&client, tool, json!({"program": refund_program()})).await;
        assert_eq!(err(&r)["error"], "too_large", "{tool}");
        assert!(
            text(&r).contains("over the server's limit of 200"),
            "{}",
            text(&r)
        );
    }
    let small = json!({"steps": [{"id": "a", "type": "tool", "tool": "echo"}]});
    let r = call(&client, "run_program", json!({"program": small})).await;
    assert_eq!(ok(&r)["status"], "success");
    client.cancel().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// llm steps: configured, sampled from the client, or a check error
// ---------------------------------------------------------------------------------------------

fn llm_program() -> Value {
    json!({"name": "triage", "steps": [
        {"id": "classify", "type": "llm", "prompt": "Classify: $ticket",
         "allowed_outputs": ["bug", "question"]},
        {"id": "route", "type": "condition", "condition": "$classify.output == 'bug'",
         "then": "file", "otherwise": "answer"},
        {"id": "file", "type": "tool", "tool": "echo", "is_terminal": true},
        {"id": "answer", "type": "tool", "tool": "refund"}
    ]})
}

#[tokio::test]
async fn without_an_llm_or_sampling_llm_steps_are_rejected_before_anything_runs() {
    let (client, _dir) = start("nollm").await;
    let r = call(
        &client,
        "run_program",
        json!({"program": llm_program(), "context": {"ticket": "crash"}}),
    )
    .await;
    let body = err(&r);
    let d = body["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == "NV0036")
        .unwrap_or_else(|| panic!("no NV0036: {body}"));
    assert_eq!(d["step_id"], "classify");
    assert_eq!(d["pointer"], "/steps/0/type");
    assert!(text(&r).contains("sampling"), "{}", text(&r));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_configured_llm_answers_llm_steps() {
    let dir = tempdir("llm");
    let config = format!("[llm]\nprovider = \"mock\"\nreply = \"bug\"\n{CONFIG}");
    let client = connect(server(&dir, &config), ()).await;
    let r = call(
        &client,
        "run_program",
        json!({"program": llm_program(), "context": {"ticket": "crash"}}),
    )
    .await;
    assert_eq!(ok(&r)["status"], "success");
    assert_eq!(ok(&r)["final_output"], "ok");
    client.cancel().await.unwrap();
}

/// A client whose model answers sampling requests, on a protocol that has them.
#[derive(Debug, Clone, Default)]
struct SamplingClient {
    prompts: Arc<Mutex<Vec<String>>>,
}

impl ClientHandler for SamplingClient {
    fn get_info(&self) -> ClientConfig {
        let mut caps = ClientCapabilities::default();
        caps.sampling = Some(Default::default());
        ClientConfig::new(caps, Implementation::new("sampling-test-client", "1.0"))
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }

    #[allow(deprecated)]
    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let prompt = params
            .messages
            .iter()
            .filter_map(|m| {
                m.content
                    .first()
                    .and_then(|c| c.as_text())
                    .map(|t| t.text.clone())
            })
            .collect::<Vec<_>>()
            .join("\n");
        self.prompts.lock().unwrap().push(prompt);
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text(" question\n"),
            "test-model".to_owned(),
        ))
    }
}

#[tokio::test]
async fn without_an_llm_the_clients_model_answers_through_sampling() {
    let dir = tempdir("sampling");
    let handler = SamplingClient::default();
    let prompts = handler.prompts.clone();
    let client = connect(server(&dir, CONFIG), handler).await;
    let r = call(
        &client,
        "run_program",
        json!({"program": llm_program(), "context": {"ticket": "how do I log in?"}}),
    )
    .await;
    let out = ok(&r);
    assert_eq!(out["status"], "success", "{out}");
    assert_eq!(out["final_output"], json!({"refunded": true}));
    assert_eq!(
        prompts.lock().unwrap().as_slice(),
        ["Classify: how do I log in?"]
    );
    client.cancel().await.unwrap();
}
