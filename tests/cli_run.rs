//! `nanovm run` end to end: mocks, a config file with a real command tool, rejection with
//! diagnostics before anything runs, missing configuration, bad inputs and exit codes
//! (0 success or suspended, 1 rejected or the run did not succeed, 2 usage or I/O error).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn nanovm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nanovm"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("NANOVM_CONFIG")
        .env("NANOVM_DB", dir().join("runs.db"))
        .output()
        .unwrap()
}

/// This test binary's directory under cargo's `target/tmp`, emptied once per process.
fn dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nanovm-cli-run");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
    .clone()
}

fn file(name: &str, text: &str) -> String {
    let p = dir().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_example_runs_with_its_mocks() {
    let o = nanovm(&[
        "run",
        &example("refund.json"),
        "--context",
        &example("refund.context.json"),
        "--mocks",
        &example("refund.mocks.json"),
        "--retry-backoff-ms",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    let text = out(&o);
    for want in [
        "lookup",
        "classify",
        "(after 1 retry)",
        "issue_refund",
        "refund_triage: success",
        "final output: {\"refund_id\":\"R-A-1001\",\"status\":\"processed\"}",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }

    let o = nanovm(&[
        "run",
        &example("refund.json"),
        "--context",
        &example("refund.context.json"),
        "--mocks",
        &example("refund.mocks.json"),
        "--retry-backoff-ms",
        "1",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let t: Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(t["status"], "success");
    assert_eq!(t["program_name"], "refund_triage");
    let ids: Vec<&str> = t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["lookup", "classify", "route", "issue_refund"]);
    assert_eq!(t["steps"][1]["retries"], 1);
    assert_eq!(t["steps"][2]["output"], "issue_refund");
    assert!(t["steps"][2]["fuel"].as_u64().unwrap() > 0);
    assert_eq!(t["state_snapshots"].as_array().unwrap().len(), 4);
    assert_eq!(t["snapshot_root"].as_str().unwrap().len(), 64);
    assert_eq!(
        t["final_output"],
        json!({"refund_id": "R-A-1001", "status": "processed"})
    );
}

#[test]
fn a_program_that_fails_the_check_never_runs() {
    let marker = dir().join("ran");
    let _ = std::fs::remove_file(&marker);
    let prog = file(
        "bad.json",
        r#"{"name": "p", "steps": [
  {"id": "a", "type": "tool", "tool": "touch", "args": {}},
  {"id": "b", "type": "condition", "condition": "$a.output ==", "then": "a"}
]}"#,
    );
    let mocks = file("m.json", r#"{"tools": {"touch": 1}}"#);
    let o = nanovm(&["run", &prog, "--mocks", &mocks]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("nothing ran"), "{}", err(&o));
    assert!(err(&o).contains("NV01"), "{}", err(&o));
    let o = nanovm(&["run", &prog, "--mocks", &mocks, "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let doc: Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(doc["valid"], false);
    assert!(!doc["diagnostics"].as_array().unwrap().is_empty());
}

#[test]
fn tools_must_be_in_the_catalog() {
    let o = nanovm(&["run", &example("refund.json"), "--config", "none"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("NV0034"), "{}", err(&o));
    assert!(err(&o).contains("--mocks"), "{}", err(&o));
}

#[test]
fn llm_steps_need_an_llm() {
    let prog = file(
        "llm.json",
        r#"{"name": "p", "steps": [{"id": "a", "type": "llm", "prompt": "hi"}]}"#,
    );
    let o = nanovm(&["run", &prog, "--config", "none"]);
    // A check error (NV0036) at the step, before anything runs.
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("NV0036"), "{}", err(&o));
    assert!(err(&o).contains("no LLM is configured"), "{}", err(&o));
    assert!(err(&o).contains("[llm] section"), "{}", err(&o));
}

#[test]
fn bad_inputs_are_usage_errors() {
    let prog = example("refund.json");
    let mocks = example("refund.mocks.json");
    let o = nanovm(&[
        "run",
        &prog,
        "--mocks",
        &mocks,
        "--context",
        &file("c.json", "[1]"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("must hold a JSON object, not an array"),
        "{}",
        err(&o)
    );
    let o = nanovm(&[
        "run",
        &prog,
        "--mocks",
        &mocks,
        "--context",
        &file("c2.json", "{"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("not valid JSON"), "{}", err(&o));
    let o = nanovm(&["run", &prog, "--mocks", &file("m2.json", r#"{"tool": {}}"#)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("unknown field `tool`"), "{}", err(&o));
    let o = nanovm(&["run", "/no/such/program.json", "--mocks", &mocks]);
    assert_eq!(o.status.code(), Some(2));
    let o = nanovm(&["run", &prog, "--config", "/no/such/nanovm.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("nanovm.toml"), "{}", err(&o));
}

#[test]
fn a_failed_run_exits_1_with_the_error() {
    let prog = file(
        "fail.json",
        r#"{"name": "p", "steps": [{"id": "a", "type": "tool", "tool": "boom"}]}"#,
    );
    let mocks = file(
        "boom.json",
        r#"{"tools": {"boom": {"error": "disk full"}}}"#,
    );
    let o = nanovm(&["run", &prog, "--mocks", &mocks]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o).contains("error: Step 'a' failed: disk full"),
        "{}",
        out(&o)
    );
}

#[test]
fn a_config_with_a_command_tool() {
    let echo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tools/echo.sh");
    let config = file(
        "nanovm.toml",
        &format!(
            r#"
[llm]
provider = "mock"
replies = {{ "*" = "yes" }}

[tools.echo]
kind = "command"
command = ["{}"]
timeout_seconds = 5
output_schema = {{ type = "object", required = ["args"], properties = {{ args = {{ type = "object" }} }} }}
"#,
            echo.display()
        ),
    );
    let prog = file(
        "cmd.json",
        r#"{"name": "p", "steps": [
  {"id": "e", "type": "tool", "tool": "echo", "args": {"n": "$n", "list": ["$n"]}},
  {"id": "ask", "type": "llm", "prompt": "Echoed $e.output.args"},
  {"id": "c", "type": "condition", "condition": "$ask.output == 'yes'", "then": "done", "otherwise": "done"},
  {"id": "done", "type": "tool", "tool": "echo", "args": {"answer": "$ask.output"}}
]}"#,
    );
    let ctx = file("ctx.json", r#"{"n": 7}"#);
    let o = nanovm(&[
        "run",
        &prog,
        "--config",
        &config,
        "--context",
        &ctx,
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    let t: Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(
        t["steps"][0]["output"],
        json!({"args": {"n": 7, "list": [7]}})
    );
    assert_eq!(t["final_output"], json!({"args": {"answer": "yes"}}));

    // The catalog types tool outputs: a typo in a field is a check error.
    let typo = file(
        "typo.json",
        r#"{"name": "p", "steps": [
  {"id": "e", "type": "tool", "tool": "echo", "args": {}},
  {"id": "f", "type": "tool", "tool": "echo", "args": {"x": "$e.output.argz"}}
]}"#,
    );
    let o = nanovm(&["run", &typo, "--config", &config]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("did you mean"), "{}", err(&o));
    let o = nanovm(&["check", &typo, "--config", &config]);
    assert_eq!(o.status.code(), Some(1));
}
