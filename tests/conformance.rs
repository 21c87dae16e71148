//! Runs the vendored conformance corpus (`tests/conformance/cases`, copied from the Python
//! reference's results). Where DESIGN §8 gives nanovm a different result, an override file in
//! `tests/conformance/overrides/<case>.json` names the rule and nanovm's expectation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use nanovm::expr::names::Context;
use nanovm::expr::{ErrorClass, Limits, analyze, class_of, env_from_context, runtime_diagnostic};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn load_dir(dir: &str) -> BTreeMap<String, Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let id = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        out.insert(
            id,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        );
    }
    out
}

/// What nanovm did with one expression case.
#[derive(Debug, PartialEq)]
enum Outcome {
    Value(bool),
    Rejected {
        class: ErrorClass,
        codes: Vec<String>,
    },
    RuntimeError {
        class: ErrorClass,
        code: String,
    },
}

fn run_expr(case: &Value) -> Outcome {
    let src = case["expr"].as_str().unwrap();
    let ctx: Context = serde_json::from_value(case["context"].clone()).unwrap();
    let analysis = analyze(src, &env_from_context(&ctx), &Limits::default());
    match analysis.condition {
        None => Outcome::Rejected {
            class: class_of(&analysis.diagnostics).unwrap(),
            codes: analysis
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| d.code.to_string())
                .collect(),
        },
        Some(cond) => {
            // The oracle must agree with the VM on every corpus case.
            let oracle = nanovm::expr::interp::eval(analysis.ast.as_ref().unwrap(), &ctx);
            match cond.eval(&ctx) {
                Ok(out) => {
                    assert_eq!(oracle, Ok(out.value), "interpreter disagrees on {src}");
                    assert!(out.fuel_used <= cond.cost());
                    Outcome::Value(out.value)
                }
                Err(e) => {
                    assert_eq!(oracle, Err(e), "interpreter disagrees on {src}");
                    let d = runtime_diagnostic(&e);
                    Outcome::RuntimeError {
                        class: class_of(std::slice::from_ref(&d)).unwrap(),
                        code: d.code.to_string(),
                    }
                }
            }
        }
    }
}

fn class_name(c: ErrorClass) -> &'static str {
    match c {
        ErrorClass::Syntax => "syntax",
        ErrorClass::Type => "type",
        ErrorClass::Limit => "limit",
        ErrorClass::Runtime => "runtime",
    }
}

/// Does nanovm's outcome satisfy a reference `expect` block (reference error classes)?
fn matches_reference(out: &Outcome, expect: &Value) -> bool {
    if let Some(v) = expect.get("value") {
        return *out == Outcome::Value(v.as_bool().unwrap());
    }
    match (expect["error"].as_str().unwrap(), out) {
        // parse, empty, method_call: rejected before evaluation as a syntax error.
        ("parse" | "empty" | "method_call", Outcome::Rejected { class, .. }) => {
            *class == ErrorClass::Syntax
        }
        // type: a run-time type error, or rejected before evaluation when types prove it.
        ("type", Outcome::Rejected { class, .. }) => *class == ErrorClass::Type,
        ("type", Outcome::RuntimeError { code, .. }) => code == "NV0401",
        _ => false,
    }
}

/// Does nanovm's outcome satisfy an override (nanovm error classes and codes)?
fn matches_override(out: &Outcome, expect: &Value) -> bool {
    if let Some(v) = expect.get("value") {
        return *out == Outcome::Value(v.as_bool().unwrap());
    }
    let want_class = expect["error"].as_str().unwrap();
    let want_codes: Vec<&str> = expect
        .get("codes")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|c| c.as_str().unwrap()).collect())
        .unwrap_or_default();
    match out {
        Outcome::Rejected { class, codes } => {
            class_name(*class) == want_class
                && want_codes.iter().all(|w| codes.iter().any(|c| c == w))
        }
        Outcome::RuntimeError { class, code } => {
            class_name(*class) == want_class && want_codes.iter().all(|w| w == code)
        }
        Outcome::Value(_) => false,
    }
}

#[test]
fn expr_cases() {
    let cases = load_dir("tests/conformance/cases");
    let overrides = load_dir("tests/conformance/overrides");
    let mut failures = Vec::new();
    let mut ran = 0;
    for (id, case) in cases.iter().filter(|(_, c)| c["kind"] == "expr") {
        ran += 1;
        let out = run_expr(case);
        let ok = match overrides.get(id) {
            Some(ov) => {
                let rule = ov["rule"].as_str().unwrap_or("");
                assert!(
                    rule.split(", ")
                        .all(|r| r.starts_with('Q') || r.starts_with('§')),
                    "{id}: override must name a DESIGN §8 rule (Qn) or section (§n), got {rule:?}"
                );
                assert!(
                    !matches_reference(&out, &case["expect"]),
                    "{id}: override is not needed, nanovm matches the reference"
                );
                matches_override(&out, &ov["expect"])
            }
            None => matches_reference(&out, &case["expect"]),
        };
        if !ok {
            failures.push(format!(
                "{id}: {:?}\n    expected {} (override: {})\n    nanovm   {out:?}",
                case["expr"],
                case["expect"],
                overrides
                    .get(id)
                    .map_or("none".to_owned(), |o| o["expect"].to_string())
            ));
        }
    }
    assert!(ran >= 60, "only {ran} expr cases found");
    assert!(
        failures.is_empty(),
        "{} of {ran} expr cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_override_names_a_case() {
    let cases = load_dir("tests/conformance/cases");
    for (id, ov) in load_dir("tests/conformance/overrides") {
        assert!(cases.contains_key(&id), "override {id} has no case");
        assert!(
            ov["why"].as_str().is_some_and(|w| !w.is_empty()),
            "override {id} needs a `why`"
        );
    }
}
