//! `nanovm eval` and `nanovm explain` end to end: output shapes and exit codes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::Value;
use std::process::{Command, Output};

fn nanovm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nanovm"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn context_file(name: &str, text: &str) -> String {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nanovm-cli-eval");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    });
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

#[test]
fn value_and_json() {
    let ctx = context_file(
        "ok.json",
        r#"{"step_outputs":{"classify":"yes"},"data":{"amount":150}}"#,
    );
    let o = nanovm(&[
        "eval",
        "$classify.output == 'yes' and $amount > 100",
        "--context",
        &ctx,
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "true");

    let o = nanovm(&["eval", "$amount > 200", "-c", &ctx, "--format", "json"]);
    assert_eq!(o.status.code(), Some(0));
    let v = json_out(&o);
    assert_eq!(v["value"], false);
    assert_eq!(v["fuel"], 2);
    assert_eq!(v["cost"], 2);
}

#[test]
fn disasm() {
    let o = nanovm(&["eval", "not $flag", "--disasm"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("load_slot") && out.contains("not") && out.contains("return"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("true"), "{out}");
}

#[test]
fn error_classes_and_exit_codes() {
    let cases = [
        ("$a == 1 or $b == 1 and $c == 1", "syntax", "NV0110"),
        ("5 in 'abc5'", "type", "NV0207"),
        ("", "syntax", "NV0108"),
    ];
    for (expr, class, code) in cases {
        let o = nanovm(&["eval", expr, "--format", "json"]);
        assert_eq!(o.status.code(), Some(1), "{expr}");
        let v = json_out(&o);
        assert_eq!(v["error"], class, "{expr}: {v}");
        assert_eq!(v["diagnostics"][0]["code"], code, "{expr}: {v}");
        assert!(v["diagnostics"][0]["span"]["line"].is_number());
    }
    let long = "$a == 1 and ".repeat(400) + "$a";
    let v = json_out(&nanovm(&["eval", &long, "--format", "json"]));
    assert_eq!(v["error"], "limit");

    let ctx = context_file("rt.json", r#"{"data":{"code":"200"}}"#);
    let o = nanovm(&["eval", "$code > 100", "-c", &ctx, "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json_out(&o);
    assert_eq!(v["error"], "runtime");
    assert_eq!(v["diagnostics"][0]["code"], "NV0401");

    // Human output goes to stderr with the code and the caret line.
    let o = nanovm(&["eval", "$a === 1"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("NV0101") && err.contains("write `==`"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(nanovm(&["eval"]).status.code(), Some(2));
    assert_eq!(
        nanovm(&["eval", "$a", "-c", "/nonexistent/ctx.json"])
            .status
            .code(),
        Some(2)
    );
    let bad = context_file("bad.json", r#"{"step_outputs": [1]}"#);
    let o = nanovm(&["eval", "$a", "-c", &bad]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("step_outputs"));
    assert_eq!(nanovm(&["explain", "NV9999"]).status.code(), Some(2));
}

#[test]
fn explain() {
    let o = nanovm(&["explain", "NV0110"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Wrong:") && out.contains("Right:"), "{out}");
    let all = String::from_utf8_lossy(&nanovm(&["explain"]).stdout).into_owned();
    assert!(all.contains("NV0101") && all.contains("NV0402"));
}
