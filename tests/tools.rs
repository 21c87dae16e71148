//! `nanovm.toml` and the tool adapters: parsing and validation, the catalog, and the registry
//! calling command, HTTP and mock tools (with schemas, timeouts, output caps and the policy).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use nanovm::exec::adapter::{CallError, Tools};
use nanovm::exec::tools::{Config, ConfigError, LlmConfig, MockConfig, ToolKind};
use nanovm::expr::types::Type;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tools")
}

/// A config text as if it were a file in the fixtures directory.
fn config(text: &str) -> Config {
    Config::from_toml_str(text, fixtures().join("test.toml"))
        .unwrap_or_else(|e| panic!("config does not load:\n{e}"))
}

fn config_err(text: &str) -> ConfigError {
    match Config::from_toml_str(text, fixtures().join("test.toml")) {
        Ok(c) => panic!("config loads: {c:?}"),
        Err(e) => e,
    }
}

fn failed(r: Result<Value, CallError>) -> String {
    match r {
        Err(CallError::Failed(m)) => m,
        other => panic!("expected CallError::Failed, got {other:?}"),
    }
}

// ---- config --------------------------------------------------------------------------------

#[test]
fn example_config_loads() {
    let c = Config::load(fixtures().join("nanovm.toml")).unwrap();
    assert_eq!(
        c.tools.keys().collect::<Vec<_>>(),
        ["broken", "lookup", "order_status", "poll", "refund"]
    );
    let Some(LlmConfig::Mock(m)) = &c.llm else {
        panic!("{:?}", c.llm)
    };
    assert_eq!(m.replies["*"], json!("other"));

    let lookup = &c.tools["lookup"];
    let ToolKind::Command(cmd) = &lookup.kind else {
        panic!()
    };
    assert_eq!(cmd.program, fixtures().join("./echo.sh"));
    assert!(cmd.args.is_empty());
    assert_eq!(cmd.env["LOOKUP_REGION"], "eu");
    assert_eq!(cmd.cwd, fixtures().join("."));
    assert_eq!(lookup.timeout, Duration::from_secs(5));
    assert_eq!(lookup.max_output_bytes, 65536);
    assert_eq!(lookup.capabilities, ["filesystem"]);
    assert_eq!(lookup.description.as_deref(), Some("Look an order up"));
    assert_eq!(
        lookup.input_schema.as_ref().unwrap()["required"],
        json!(["order_id"])
    );

    let refund = &c.tools["refund"];
    let ToolKind::Http(h) = &refund.kind else {
        panic!()
    };
    assert_eq!(h.url.as_str(), "https://payments.example.com/v1/refund");
    assert_eq!(
        h.headers["Authorization"],
        "Bearer ${NANOVM_EXAMPLE_PAYMENTS_TOKEN}"
    );
    assert_eq!(
        c.tools["broken"].kind,
        ToolKind::Mock(MockConfig::Error("connection refused".into()))
    );
    // Defaults.
    assert_eq!(c.tools["broken"].timeout, Duration::from_secs(30));
    assert_eq!(c.tools["broken"].max_output_bytes, 1024 * 1024);

    let policy = &c.policy;
    assert!(policy.allow.as_ref().unwrap().contains("poll"));
    assert!(policy.deny_capabilities.contains("payments"));
}

#[test]
fn example_config_catalog() {
    let c = Config::load(fixtures().join("nanovm.toml")).unwrap();
    let cat = c.catalog();
    assert_eq!(cat.len(), 5);
    assert_eq!(cat.get("lookup").unwrap().allowed, Ok(()));
    assert_eq!(cat.get("lookup").unwrap().output, Type::Any);
    assert_eq!(
        cat.get("order_status").unwrap().output.to_string(),
        r#"{amount: int, note: any, status: "open" | "refunded"}"#
    );
    assert_eq!(
        cat.get("poll").unwrap().output,
        Type::Enum(std::sync::Arc::new(
            ["DONE".to_owned(), "PENDING".to_owned()]
                .into_iter()
                .collect()
        ))
    );
    let broken = cat.get("broken").unwrap().allowed.clone().unwrap_err();
    assert!(broken.contains("`[policy] allow`"), "{broken}");
    let refund = cat.get("refund").unwrap().allowed.clone().unwrap_err();
    assert!(
        refund.contains("`payments`") && refund.contains("deny_capabilities"),
        "{refund}"
    );
    assert_eq!(c.verdict("lookup"), Ok(()));
    assert!(c.verdict("ghost").is_err());
}

#[test]
fn example_registry_needs_its_header_variable() {
    let c = Config::load(fixtures().join("nanovm.toml")).unwrap();
    let e = c.registry().unwrap_err().to_string();
    assert!(
        e.contains("NANOVM_EXAMPLE_PAYMENTS_TOKEN") && e.contains("not set"),
        "{e}"
    );
}

#[test]
fn unknown_field_names_the_field_and_line() {
    let e = config_err("[tools.a]\nkind = \"mock\"\nvalue = 1\ncomand = [\"x\"]\n");
    let msg = e.to_string();
    assert!(msg.contains("unknown field `comand`"), "{msg}");
    assert!(msg.contains("did you mean `command`?"), "{msg}");
    assert!(msg.contains("line 4"), "{msg}");
    assert!(msg.contains("test.toml"), "{msg}");
    assert_eq!(e.line(), Some(4));
    assert_eq!(e.path(), fixtures().join("test.toml"));

    let msg = config_err("[polcy]\nallow = []\n").to_string();
    assert!(msg.contains("unknown field `polcy`"), "{msg}");

    let e = config_err("[llm]\nprovider = \"openai\"\nbase_url = \"http://x\"\nmodle = \"m\"\n");
    assert!(e.to_string().contains("unknown field `modle`"), "{e}");
    assert_eq!(e.line(), Some(4));
    let e = config_err("[llm]\nprovider = \"mock\"\nreply = \"x\"\nreplys = {}\n");
    assert!(e.to_string().contains("unknown field `replys`"), "{e}");
    assert_eq!(e.line(), Some(4));

    let msg = config_err("[tools.a]\nkind = \"shell\"\n").to_string();
    assert!(msg.contains("unknown variant `shell`"), "{msg}");
    assert!(msg.contains("line 2"), "{msg}");

    let msg =
        config_err("[tools.a]\nkind = \"mock\"\nvalue = 1\ntimeout_seconds = \"5\"\n").to_string();
    assert!(msg.contains("line 4"), "{msg}");

    let msg = config_err("[tools.a]\nvalue = 1\n").to_string();
    assert!(msg.contains("missing field `kind`"), "{msg}");

    let msg = config_err("[tools.a\n").to_string();
    assert!(msg.contains("TOML parse error at line 1"), "{msg}");
}

#[test]
fn fields_of_another_kind_are_errors() {
    let e = config_err("[tools.a]\nkind = \"command\"\ncommand = [\"x\"]\nurl = \"http://h\"\n");
    let msg = e.to_string();
    assert!(
        msg.contains("`url` belongs to `kind = \"http\"`")
            && msg.contains("`command`, `env`, `cwd`"),
        "{msg}"
    );
    assert_eq!(e.line(), Some(4));
    // The line is quoted and the value underlined.
    assert!(msg.contains("4 | url = \"http://h\""), "{msg}");
    assert!(msg.contains("      ^^^^^^^^^^"), "{msg}");
}

#[test]
fn policy_naming_a_missing_tool() {
    let e = config_err(
        "[tools.lookup]\nkind = \"mock\"\nvalue = 1\n\n[policy]\nallow = [\"lookup\", \"lokup\"]\n",
    );
    let msg = e.to_string();
    assert!(
        msg.contains("`[policy] allow` names `lokup`, which is not a tool")
            && msg.contains("did you mean `lookup`?"),
        "{msg}"
    );
    assert_eq!(e.line(), Some(6));

    let msg = config_err("[policy]\nallow = [\"x\"]\n").to_string();
    assert!(msg.contains("no `[tools.NAME]` section"), "{msg}");

    // A near miss of a declared capability denies nothing: an error.
    let msg = config_err(
        "[tools.a]\nkind = \"mock\"\nvalue = 1\ncapabilities = [\"network\"]\n[policy]\ndeny_capabilities = [\"netwrok\"]\n",
    )
    .to_string();
    assert!(msg.contains("did you mean `network`?"), "{msg}");
    // A capability no tool has (and no near miss) is fine.
    config("[policy]\ndeny_capabilities = [\"payments\"]\n");
}

#[test]
fn policy_allows_everything_without_allow() {
    let c = config(
        "[tools.a]\nkind = \"mock\"\nvalue = 1\ncapabilities = [\"net\"]\n[tools.b]\nkind = \"mock\"\nvalue = 2\n[policy]\ndeny_capabilities = [\"net\"]\n",
    );
    let cat = c.catalog();
    assert!(cat.get("a").unwrap().allowed.is_err());
    assert_eq!(cat.get("b").unwrap().allowed, Ok(()));
    let c = config("[tools.a]\nkind = \"mock\"\nvalue = 1\n");
    assert_eq!(c.catalog().get("a").unwrap().allowed, Ok(()));
    let c = config("[tools.a]\nkind = \"mock\"\nvalue = 1\n[policy]\nallow = []\n");
    assert!(c.catalog().get("a").unwrap().allowed.is_err());
}

#[test]
fn schema_files() {
    let c = config(
        "[tools.a]\nkind = \"mock\"\nvalue = 1\ninput_schema_file = \"schemas/lookup.in.json\"\noutput_schema_file = \"schemas/lookup.out.json\"\n",
    );
    let a = &c.tools["a"];
    assert_eq!(a.input_schema.as_ref().unwrap()["type"], json!("object"));
    assert_eq!(
        c.catalog().get("a").unwrap().output.to_string(),
        r#"{amount: int, note: any, status: "open" | "refunded"}"#
    );

    let e = config_err(
        "[tools.a]\nkind = \"mock\"\nvalue = 1\ninput_schema_file = \"schemas/nope.json\"\n",
    );
    assert!(
        e.to_string().contains("cannot read `input_schema_file`"),
        "{e}"
    );
    assert_eq!(e.line(), Some(4));

    let e = config_err(
        "[tools.a]\nkind = \"mock\"\nvalue = 1\noutput_schema_file = \"schemas/broken.json\"\n",
    );
    assert!(e.to_string().contains("is not valid JSON"), "{e}");

    let e = config_err(
        "[tools.a]\nkind = \"mock\"\nvalue = 1\noutput_schema = {type = \"object\"}\noutput_schema_file = \"schemas/lookup.out.json\"\n",
    );
    assert!(e.to_string().contains("keep one"), "{e}");

    let e = config_err("[tools.a]\nkind = \"mock\"\nvalue = 1\ninput_schema = {type = 5}\n");
    assert!(e.to_string().contains("not a valid JSON Schema"), "{e}");
}

#[test]
fn invalid_values() {
    for (text, needle) in [
        (
            "[tools.a]\nkind = \"command\"\ncommand = []\n",
            "`command` is empty",
        ),
        ("[tools.a]\nkind = \"command\"\n", "needs `command = ["),
        (
            "[tools.a]\nkind = \"command\"\ncommand = [\"\"]\n",
            "program of `command` is empty",
        ),
        (
            "[tools.a]\nkind = \"http\"\nurl = \"ftp://h/x\"\n",
            "must be an http:// or https:// URL",
        ),
        (
            "[tools.a]\nkind = \"http\"\nurl = \"not a url\"\n",
            "is not a valid URL",
        ),
        ("[tools.a]\nkind = \"http\"\n", "needs `url ="),
        (
            "[tools.a]\nkind = \"http\"\nurl = \"http://h\"\nheaders = {A = \"${OOPS\"}\n",
            "not closed",
        ),
        (
            "[tools.a]\nkind = \"http\"\nurl = \"http://h\"\nheaders = {\"bad header\" = \"x\"}\n",
            "not a valid HTTP header name",
        ),
        (
            "[tools.a]\nkind = \"mock\"\nvalue = 1\ntimeout_seconds = 0\n",
            "`timeout_seconds` must be",
        ),
        (
            "[tools.a]\nkind = \"mock\"\nvalue = 1\ntimeout_seconds = -1.5\n",
            "`timeout_seconds` must be",
        ),
        (
            "[tools.a]\nkind = \"mock\"\nvalue = 1\ntimeout_seconds = inf\n",
            "`timeout_seconds` must be",
        ),
        (
            "[tools.a]\nkind = \"mock\"\nvalue = 1\nmax_output_bytes = 0\n",
            "`max_output_bytes` must be",
        ),
        (
            "[tools.a]\nkind = \"mock\"\nvalue = 1\ncapabilities = [\"\"]\n",
            "a capability is",
        ),
        ("[tools.a]\nkind = \"mock\"\n", "exactly one of"),
        (
            "[tools.a]\nkind = \"mock\"\nvalue = 1\nerror = \"x\"\n",
            "exactly one of",
        ),
        (
            "[tools.a]\nkind = \"mock\"\nsequence = []\n",
            "`sequence` is empty",
        ),
        ("[llm]\nprovider = \"mock\"\n", "needs `reply"),
        (
            "[llm]\nprovider = \"mock\"\nreply = \"a\"\nreplies = {\"*\" = \"b\"}\n",
            "keep one",
        ),
        (
            "[llm]\nprovider = \"mock\"\nreplies = {\"*\" = 5}\n",
            "[llm]",
        ),
        (
            "[llm]\nprovider = \"openai\"\nbase_url = \"http://h/v1\"\nmodel = \"m\"\ntimeout_seconds = 0\n",
            "timeout_seconds",
        ),
        (
            "[llm]\nprovider = \"claude\"\n",
            "unknown provider `claude`",
        ),
        (
            "[llm]\nprovider = \"mok\"\nreply = \"x\"\n",
            "did you mean `mock`?",
        ),
        ("[llm]\nreply = \"x\"\n", "needs `provider"),
        ("llm = 5\n", "must be a table"),
    ] {
        let msg = config_err(text).to_string();
        assert!(
            msg.contains(needle),
            "{text:?}: expected {needle:?} in\n{msg}"
        );
    }
}

#[test]
fn llm_sections() {
    let c = config(
        "[llm]\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:11434/v1\"\nmodel = \"llama3\"\ntimeout_seconds = 20\n",
    );
    let Some(LlmConfig::OpenAi(o)) = &c.llm else {
        panic!()
    };
    assert_eq!((o.model.as_str(), o.timeout_seconds), ("llama3", 20.0));
    let c = config("[llm]\nprovider = \"mock\"\nreply = \"yes\"\n");
    let Some(LlmConfig::Mock(m)) = &c.llm else {
        panic!()
    };
    assert_eq!(m.replies["*"], json!("yes"));
    assert!(m.build().is_ok());
    assert!(config("").llm.is_none());
}

#[test]
fn load_reports_unreadable_files() {
    let e = Config::load(fixtures().join("missing.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().contains("missing.toml"), "{e}");
}

// ---- command tools --------------------------------------------------------------------------

fn command_tool(command: &str, extra: &str) -> nanovm::exec::tools::Registry {
    config(&format!(
        "[tools.t]\nkind = \"command\"\ncommand = {command}\n{extra}\n"
    ))
    .registry()
    .unwrap()
}

#[tokio::test]
async fn command_echoes_its_arguments() {
    let r = command_tool(r#"["./echo.sh"]"#, "");
    let out = r.call("t", json!({"order_id": "A-1", "n": [1, 2]})).await;
    assert_eq!(out, Ok(json!({"args": {"order_id": "A-1", "n": [1, 2]}})));
    assert!(r.contains("t") && !r.contains("u"));
    assert_eq!(
        r.call("u", json!({})).await,
        Err(CallError::NotRegistered("u".into()))
    );
}

#[tokio::test]
async fn command_env_and_cwd() {
    let r = command_tool(
        r#"["./env.sh"]"#,
        "env = {GREETING = \"hi there\"}\ncwd = \"schemas\"",
    );
    let out = r.call("t", json!({})).await.unwrap();
    assert_eq!(out["greeting"], "hi there");
    let cwd = PathBuf::from(out["cwd"].as_str().unwrap());
    assert_eq!(
        cwd.canonicalize().unwrap(),
        fixtures().join("schemas").canonicalize().unwrap()
    );
    // A bare program name is looked up in PATH; arguments pass through unchanged (no shell).
    let r = command_tool(
        r#"["sh", "-c", "printf '%s' \"$0\"", "[1, \"$HOME\"]"]"#,
        "",
    );
    assert_eq!(r.call("t", json!({})).await, Ok(json!([1, "$HOME"])));
}

#[tokio::test]
async fn command_nonzero_exit_quotes_stderr() {
    let r = command_tool(r#"["./fail.sh"]"#, "");
    assert_eq!(
        failed(r.call("t", json!({})).await),
        "exited with status 3: lookup failed: no such order"
    );
}

#[tokio::test]
async fn command_invalid_json() {
    let r = command_tool(r#"["./bad_json.sh"]"#, "");
    let m = failed(r.call("t", json!({})).await);
    assert!(
        m.starts_with("printed invalid JSON: hello, not json"),
        "{m}"
    );
    let r = command_tool(r#"["true"]"#, "");
    let m = failed(r.call("t", json!({})).await);
    assert!(
        m.contains("printed invalid JSON") && m.contains("nothing"),
        "{m}"
    );
}

#[tokio::test]
async fn command_missing_program() {
    let r = command_tool(r#"["./no-such-tool.sh"]"#, "");
    let m = failed(r.call("t", json!({})).await);
    assert!(
        m.starts_with("cannot start `") && m.contains("no-such-tool.sh"),
        "{m}"
    );
}

/// Whether a process is gone (or a zombie waiting for a reaper that is not us).
#[cfg(target_os = "linux")]
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn command_timeout_kills_the_process_group() {
    let pidfile = std::env::temp_dir().join(format!("nanovm-hang-{}.pid", std::process::id()));
    let _ = std::fs::remove_file(&pidfile);
    let r = command_tool(
        &format!("[\"./hang.sh\", {:?}]", pidfile.to_str().unwrap()),
        "timeout_seconds = 0.2",
    );
    let t0 = Instant::now();
    let out = r.call("t", json!({})).await;
    let took = t0.elapsed();
    assert_eq!(out, Err(CallError::Timeout(Duration::from_millis(200))));
    assert_eq!(out.unwrap_err().to_string(), "timed out after 200ms");
    assert!(took < Duration::from_millis(800), "took {took:?}");
    // The shell's child (`sleep 30`) went with it.
    #[cfg(target_os = "linux")]
    {
        // (No pid file: the shell was killed before it wrote one.)
        let pid = std::fs::read_to_string(&pidfile).unwrap_or_default();
        let pid = pid.trim();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !pid.is_empty() && !gone(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(pid.is_empty() || gone(pid), "sleep {pid} is still running");
    }
    let _ = std::fs::remove_file(&pidfile);
}

#[tokio::test]
async fn command_output_cap() {
    let r = command_tool(r#"["./huge.sh"]"#, "max_output_bytes = 1000");
    let t0 = Instant::now();
    assert_eq!(
        failed(r.call("t", json!({})).await),
        "output exceeds 1000 bytes"
    );
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // Exactly at the cap is fine.
    let r = command_tool(r#"["sh", "-c", "printf 12345"]"#, "max_output_bytes = 5");
    assert_eq!(r.call("t", json!({})).await, Ok(json!(12345)));
    let r = command_tool(r#"["sh", "-c", "printf 123456"]"#, "max_output_bytes = 5");
    assert_eq!(
        failed(r.call("t", json!({})).await),
        "output exceeds 5 bytes"
    );
}

#[tokio::test]
async fn command_large_stderr_and_stdin_do_not_deadlock() {
    // 1 MB on stderr before reading a large stdin, then success.
    let r = command_tool(
        r#"["sh", "-c", "head -c 1000000 /dev/zero >&2; cat >/dev/null; echo true"]"#,
        "",
    );
    let big = "x".repeat(2_000_000);
    assert_eq!(r.call("t", json!({ "big": big })).await, Ok(json!(true)));
    // A tool that never reads its stdin.
    let r = command_tool(r#"["sh", "-c", "echo 7"]"#, "");
    assert_eq!(r.call("t", json!({ "big": big })).await, Ok(json!(7)));
}

#[tokio::test]
async fn slow_command_calls_run_concurrently() {
    let r = command_tool(r#"["./slow.sh"]"#, "");
    let t0 = Instant::now();
    let calls = (0..6).map(|i| r.call("t", json!({ "i": i })));
    let outs = futures_util::future::join_all(calls).await;
    let took = t0.elapsed();
    for (i, out) in outs.into_iter().enumerate() {
        assert_eq!(out, Ok(json!({"slow": {"i": i}})));
    }
    // Each call sleeps 0.4 s; in sequence they would take 2.4 s.
    assert!(took < Duration::from_millis(1500), "took {took:?}");
}

#[tokio::test]
async fn dropped_call_kills_the_process() {
    let pidfile = std::env::temp_dir().join(format!("nanovm-drop-{}.pid", std::process::id()));
    let _ = std::fs::remove_file(&pidfile);
    let r = command_tool(
        &format!("[\"./hang.sh\", {:?}]", pidfile.to_str().unwrap()),
        "",
    );
    // Cancel the call from outside (like a step cancelled by its run).
    let out = tokio::time::timeout(Duration::from_millis(300), r.call("t", json!({}))).await;
    assert!(out.is_err());
    #[cfg(target_os = "linux")]
    {
        // (No pid file: the shell was killed before it wrote one.)
        let pid = std::fs::read_to_string(&pidfile).unwrap_or_default();
        let pid = pid.trim();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !pid.is_empty() && !gone(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(pid.is_empty() || gone(pid), "sleep {pid} is still running");
    }
    let _ = std::fs::remove_file(&pidfile);
}

// ---- schemas, mocks, policy -----------------------------------------------------------------

#[tokio::test]
async fn input_and_output_schemas() {
    let r = config(
        r#"
[tools.lookup]
kind = "command"
command = ["./echo.sh"]
input_schema_file = "schemas/lookup.in.json"
output_schema = {type = "object", required = ["args"], properties = {args = {type = "object", required = ["order_id"]}}}

[tools.weather]
kind = "mock"
value = {temp = "warm"}
output_schema = {type = "object", properties = {temp = {type = "integer"}}}
"#,
    )
    .registry()
    .unwrap();
    assert_eq!(
        r.call("lookup", json!({"order_id": "A"})).await,
        Ok(json!({"args": {"order_id": "A"}}))
    );
    let m = failed(
        r.call("lookup", json!({"order_id": 5, "x": 1, "y": 2}))
            .await,
    );
    assert!(
        m.starts_with("the arguments of tool `lookup` do not match its input schema: at `/order_id`: 5 is not of type \"string\""),
        "{m}"
    );
    assert!(m.contains("Additional properties are not allowed"), "{m}");
    let m = failed(r.call("lookup", json!({})).await);
    assert!(
        m.contains("at `/`") && m.contains("\"order_id\" is a required property"),
        "{m}"
    );

    let m = failed(r.call("weather", json!({})).await);
    assert!(
        m.starts_with("the output of tool `weather` does not match its output schema: at `/temp`: \"warm\" is not of type \"integer\""),
        "{m}"
    );
}

#[tokio::test]
async fn many_violations_are_cut() {
    let r = config(
        "[tools.t]\nkind = \"mock\"\nvalue = 1\ninput_schema = {type = \"object\", additionalProperties = {type = \"string\"}}\n",
    )
    .registry()
    .unwrap();
    let m = failed(
        r.call("t", json!({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}))
            .await,
    );
    assert_eq!(m.matches("is not of type").count(), 3, "{m}");
    assert!(m.ends_with("(and 2 more)"), "{m}");
}

#[tokio::test]
async fn mock_tools() {
    let r = config(
        r#"
[tools.fixed]
kind = "mock"
value = {amount = 5, tags = ["a"]}

[tools.seq]
kind = "mock"
sequence = ["PENDING", {error = "busy"}, {status = "done"}]

[tools.err]
kind = "mock"
error = "connection refused"
"#,
    )
    .registry()
    .unwrap();
    for _ in 0..2 {
        assert_eq!(
            r.call("fixed", json!({})).await,
            Ok(json!({"amount": 5, "tags": ["a"]}))
        );
    }
    assert_eq!(r.call("seq", json!({})).await, Ok(json!("PENDING")));
    assert_eq!(failed(r.call("seq", json!({})).await), "busy");
    assert_eq!(
        r.call("seq", json!({})).await,
        Ok(json!({"status": "done"}))
    );
    assert_eq!(
        r.call("seq", json!({})).await,
        Ok(json!({"status": "done"}))
    );
    assert_eq!(failed(r.call("err", json!({})).await), "connection refused");
    assert_eq!(r.names().collect::<Vec<_>>(), ["err", "fixed", "seq"]);
    assert_eq!(r.len(), 3);
}

#[tokio::test]
async fn denied_tools_do_not_run() {
    let c = config(
        r#"
[tools.ok]
kind = "mock"
value = 1

[tools.unlisted]
kind = "mock"
value = 2

[tools.fetch]
kind = "command"
command = ["./hang.sh"]
capabilities = ["network"]

[policy]
allow = ["ok", "fetch"]
deny_capabilities = ["network"]
"#,
    );
    let r = c.registry().unwrap();
    assert!(r.contains("unlisted"));
    assert_eq!(r.call("ok", json!({})).await, Ok(json!(1)));
    assert_eq!(
        failed(r.call("unlisted", json!({})).await),
        "tool `unlisted` is denied by the policy: `unlisted` is not in `[policy] allow`"
    );
    let t0 = Instant::now();
    assert_eq!(
        failed(r.call("fetch", json!({})).await),
        "tool `fetch` is denied by the policy: it has the capability `network`, which `[policy] deny_capabilities` denies"
    );
    // Denied before it starts: hang.sh would take 30 s.
    assert!(t0.elapsed() < Duration::from_secs(1));
    let cat = c.catalog();
    assert_eq!(
        cat.get("unlisted").unwrap().allowed,
        Err("`unlisted` is not in `[policy] allow`".to_owned())
    );
}

#[test]
fn registry_checks_cwd() {
    let c = config("[tools.t]\nkind = \"command\"\ncommand = [\"true\"]\ncwd = \"no-such-dir\"\n");
    let e = c.registry().unwrap_err().to_string();
    assert!(e.contains("`cwd`") && e.contains("not a directory"), "{e}");
}

// ---- http tools -----------------------------------------------------------------------------

mod http {
    use super::*;
    use axum::Json;
    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    async fn serve() -> String {
        let app = Router::new()
            .route(
                "/echo",
                post(|headers: HeaderMap, Json(body): Json<Value>| async move {
                    let h = |k: &str| {
                        headers
                            .get(k)
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default()
                    };
                    Json(json!({
                        "got": body,
                        "path": h("x-path"),
                        "content_type": h("content-type"),
                        "literal": h("x-literal"),
                    }))
                }),
            )
            .route(
                "/fail",
                post(|| async { (StatusCode::SERVICE_UNAVAILABLE, "upstream down") }),
            )
            .route("/text", post(|| async { "this is not json" }))
            .route(
                "/slow",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "{}"
                }),
            )
            .route(
                "/big",
                post(|| async { format!("\"{}\"", "x".repeat(100_000)) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn registry(base: &str) -> nanovm::exec::tools::Registry {
        config(&format!(
            r#"
[tools.echo]
kind = "http"
url = "{base}/echo"
headers = {{X-Path = "${{PATH}}", X-Literal = "$${{NOT_EXPANDED}}"}}
input_schema = {{type = "object", required = ["q"]}}

[tools.fail]
kind = "http"
url = "{base}/fail"

[tools.text]
kind = "http"
url = "{base}/text"

[tools.slow]
kind = "http"
url = "{base}/slow"
timeout_seconds = 0.2

[tools.big]
kind = "http"
url = "{base}/big"
max_output_bytes = 1000

[tools.down]
kind = "http"
url = "http://127.0.0.1:9/nothing"
"#
        ))
        .registry()
        .unwrap()
    }

    #[tokio::test]
    async fn posts_json_and_reads_json() {
        let base = serve().await;
        let r = registry(&base);
        let out = r
            .call("echo", json!({"q": "refund", "n": 2}))
            .await
            .unwrap();
        assert_eq!(out["got"], json!({"q": "refund", "n": 2}));
        assert_eq!(out["path"], std::env::var("PATH").unwrap());
        assert_eq!(out["literal"], "${NOT_EXPANDED}");
        assert_eq!(out["content_type"], "application/json");
        // The input schema applies to HTTP tools too.
        assert!(failed(r.call("echo", json!({})).await).contains("input schema"));
    }

    #[tokio::test]
    async fn http_errors() {
        let base = serve().await;
        let r = registry(&base);
        assert_eq!(
            r.call("fail", json!({})).await,
            Err(CallError::Http {
                status: 503,
                excerpt: "upstream down".into()
            })
        );
        let m = failed(r.call("text", json!({})).await);
        assert!(
            m.starts_with("answered invalid JSON: this is not json"),
            "{m}"
        );
        let t0 = Instant::now();
        assert_eq!(
            r.call("slow", json!({})).await,
            Err(CallError::Timeout(Duration::from_millis(200)))
        );
        assert!(t0.elapsed() < Duration::from_millis(900));
        assert_eq!(
            failed(r.call("big", json!({})).await),
            "output exceeds 1000 bytes"
        );
        let m = failed(r.call("down", json!({})).await);
        assert!(m.starts_with("the request failed"), "{m}");
    }

    #[tokio::test]
    async fn concurrent_http_calls() {
        let base = serve().await;
        let r = registry(&base);
        let t0 = Instant::now();
        let outs = futures_util::future::join_all((0..4).map(|_| r.call("slow", json!({})))).await;
        assert!(outs.iter().all(|o| matches!(o, Err(CallError::Timeout(_)))));
        assert!(
            t0.elapsed() < Duration::from_millis(900),
            "{:?}",
            t0.elapsed()
        );
    }
}
