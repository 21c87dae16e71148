//! `nanovm check` and `nanovm graph` end to end: bad inputs, formats and exit codes
//! (DESIGN §4: 0 valid, 1 errors or denied warnings, 2 usage or I/O error).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn nanovm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nanovm"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// This test binary's directory under cargo's `target/tmp`, emptied once per process.
fn dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nanovm-cli-check");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
    .clone()
}

fn file(name: &str, bytes: &[u8]) -> String {
    let p = dir().join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// One clear diagnostic, no panic, no Rust debug text.
fn assert_one_clear(o: &Output, code: &str, exit: i32) {
    let out = stdout(o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(exit), "{out}\n{err}");
    assert_eq!(out.matches(code).count(), 1, "{out}");
    assert!(
        !err.contains("panicked") && !out.contains("panicked"),
        "{err}"
    );
    assert!(!out.contains("Error {") && !out.contains("Os {"), "{out}");
}

const VALID: &str = r#"{
  "name": "triage",
  "steps": [
    {"id": "classify", "type": "llm", "prompt": "Classify: $ticket", "allowed_outputs": ["refund", "other"]},
    {"id": "route", "type": "condition", "condition": "$classify.output == 'refund'", "then": "refund", "otherwise": "escalate_to_human"},
    {"id": "refund", "type": "tool", "tool": "refund", "args": {"ticket": "$ticket"}, "is_terminal": true},
    {"id": "escalate_to_human", "type": "tool", "tool": "page", "is_terminal": true}
  ]
}"#;

#[test]
fn bad_inputs_give_one_clear_diagnostic() {
    assert_one_clear(&nanovm(&["check", "/nonexistent/p.json"]), "NV0006", 2);
    assert_one_clear(&nanovm(&["check", dir().to_str().unwrap()]), "NV0006", 2);
    let latin1 = file("latin1.json", b"{\"steps\": [{\"id\": \"caf\xe9\"}]}");
    assert_one_clear(&nanovm(&["check", &latin1]), "NV0005", 1);
    let array = file("array.json", b"[1, 2]");
    assert_one_clear(&nanovm(&["check", &array]), "NV0010", 1);
    let deep = file("deep.json", "[".repeat(100_000).as_bytes());
    let o = nanovm(&["check", &deep]);
    assert_one_clear(&o, "NV0003", 1);
    assert!(o.stdout.len() < 4000, "a long line must be excerpted");
    // 100 MB, sparse: never read whole.
    let big = dir().join("big.json");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(100 * 1024 * 1024)
        .unwrap();
    assert_one_clear(&nanovm(&["check", big.to_str().unwrap()]), "NV0004", 1);
    let empty = file("empty.json", b"");
    assert_one_clear(&nanovm(&["check", &empty]), "NV0001", 1);
    let trailing = file("trailing.json", b"{\"steps\": [],}");
    assert_one_clear(&nanovm(&["check", &trailing]), "NV0001", 1);
}

#[test]
fn valid_program_and_formats() {
    let p = file("valid.json", VALID.as_bytes());
    let o = nanovm(&["check", &p]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("valid (0 errors, 0 warnings"),
        "{}",
        stdout(&o)
    );

    let o = nanovm(&["check", "--format", "json", &p]);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["errors"], 0);
    assert!(doc["file"].as_str().unwrap().ends_with("valid.json"));

    let bad = file(
        "bad.json",
        br#"{"steps": [{"id": "a", "type": "tool", "tool": "t", "nextstep": "b"}, {"id": "b", "type": "tool", "tool": "t"}]}"#,
    );
    let o = nanovm(&["check", "--format", "json", &bad]);
    assert_eq!(o.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["valid"], false);
    let d = &doc["diagnostics"][0];
    assert_eq!(d["code"], "NV0011");
    assert_eq!(d["pointer"], "/steps/0/nextstep");
    assert_eq!(d["step_id"], "a");
    assert_eq!(d["help"], "did you mean `next_step`?");
    assert_eq!(d["span"]["line"], 1);

    // Two files: JSON Lines, one document each; the worst exit code wins.
    let o = nanovm(&["check", "--format", "json", &p, &bad]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o).lines().count(), 2);

    let o = nanovm(&["check", "--format", "sarif", &p, &bad]);
    let log: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(log["version"], "2.1.0");
    let results = log["runs"][0]["results"].as_array().unwrap();
    assert!(results.iter().any(|r| r["ruleId"] == "NV0011"));
    let rules = log["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap();
    for r in results {
        let i = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[i]["id"], r["ruleId"]);
    }

    let o = nanovm(&["check", "--format", "github", &bad]);
    let out = stdout(&o);
    assert!(out.starts_with("::error file="), "{out}");
    assert!(out.contains("line=1,col="), "{out}");
}

#[test]
fn deny_warnings() {
    let p = file(
        "warn.json",
        br#"{"steps": [{"id": "c", "type": "condition", "condition": "$x == 1", "then": "done"}, {"id": "done", "type": "tool", "tool": "t"}]}"#,
    );
    let o = nanovm(&["check", &p]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("NV0027"));
    let o = nanovm(&["check", "--deny-warnings", &p]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn graph_formats() {
    let p = file("graph.json", VALID.as_bytes());
    let o = nanovm(&["graph", &p]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(out.starts_with("flowchart TD"), "{out}");
    assert!(out.contains("s1 -->|then| s2"), "{out}");
    assert!(out.contains("s1 -->|otherwise| s3"), "{out}");
    let o = nanovm(&["graph", "--format", "dot", &p]);
    let out = stdout(&o);
    assert!(out.starts_with("digraph program {"), "{out}");
    assert!(out.contains("s1 -> s2 [label=\"then\"];"), "{out}");
    // Unreachable steps are drawn dashed.
    let dead = file(
        "dead.json",
        br#"{"steps": [{"id": "a", "type": "tool", "tool": "t", "is_terminal": true}, {"id": "b", "type": "tool", "tool": "t"}]}"#,
    );
    let o = nanovm(&["graph", "--format", "dot", &dead]);
    assert!(stdout(&o).contains("style=dashed"), "{}", stdout(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 error"));
}

#[test]
fn explain_every_code() {
    for code in nanovm::diagnostics::Code::ALL {
        let o = nanovm(&["explain", code.as_str()]);
        assert_eq!(o.status.code(), Some(0));
        let out = stdout(&o);
        assert!(
            out.contains("Wrong:") && out.contains("Right:"),
            "{code}: {out}"
        );
    }
}
