//! Runs every `check-*` case of the conformance corpus through `nanovm check`, and checks the
//! program of every `run-*` case. nanovm's codes map to the reference's issue kinds through
//! [`reference_kind`], one table. Where nanovm deliberately differs (DESIGN §3, §8), an override
//! in `tests/conformance/overrides/<case>.json` names the rule and gives nanovm's result:
//! `{"rule", "why", "check": {"errors": [[kind, step_id, reason?]...], "warnings": [...]}}`
//! for check cases, `{"rule", "why", "check": {"rejected": [codes]}}` for run cases.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use nanovm::check::{Options, check_source};
use nanovm::diagnostics::{Code, Diagnostic, Severity};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

fn load(dir: &str, prefix: &str) -> BTreeMap<String, Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let id = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if !id.starts_with(prefix) || path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        out.insert(id, serde_json::from_str(&text).unwrap());
    }
    out
}

/// The reference's issue kind (and schema reason) for a nanovm diagnostic; `None` for
/// diagnostics the reference has no counterpart of and that are not errors.
fn reference_kind(d: &Diagnostic) -> Option<(String, Option<&'static str>)> {
    let field = d
        .pointer
        .as_deref()
        .and_then(|p| p.rsplit('/').next())
        .unwrap_or("");
    let schema = |reason: &'static str| Some(("schema".to_owned(), Some(reason)));
    match d.code {
        Code::MissingTarget => Some(("missing_target".to_owned(), None)),
        Code::Unreachable => Some(("unreachable_step".to_owned(), None)),
        Code::UnboundedCycle => Some(("cycle_detected".to_owned(), None)),
        Code::NoFailureTerminal => Some(("no_failure_terminal".to_owned(), None)),
        Code::MissingField | Code::EmptyValue => match field {
            "prompt" => schema("llm_requires_prompt"),
            "tool" => schema("tool_requires_tool"),
            "condition" => schema("condition_requires_expression"),
            "then" | "otherwise" if d.code == Code::MissingField => {
                schema("condition_requires_branch")
            }
            "parallel_steps" => schema("parallel_requires_substeps"),
            "steps" if d.code == Code::EmptyValue => schema("steps_empty"),
            "allowed_outputs" => schema("allowed_outputs_empty"),
            _ if d.code == Code::MissingField => schema("missing_field"),
            _ => Some((format!("nanovm:{}", d.code), None)),
        },
        Code::SubstepType => schema("parallel_substep_type"),
        Code::MisplacedField if field == "allowed_outputs" => schema("allowed_outputs_non_llm"),
        Code::InvalidEnum => schema("invalid_enum"),
        Code::WrongType => schema("invalid_type"),
        _ if d.severity == Severity::Error => Some((format!("nanovm:{}", d.code), None)),
        _ => None,
    }
}

/// nanovm's result in the reference's shape: sorted `[kind, step_id, reason?]` triples.
fn outcome(program: &Value) -> (Value, Value, Vec<Diagnostic>) {
    let text = serde_json::to_string_pretty(program).unwrap();
    let report = check_source(&text, &Options::default());
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for d in &report.diagnostics {
        let Some((kind, reason)) = reference_kind(d) else {
            continue;
        };
        let mut entry = vec![json!(kind), json!(d.step_id)];
        if let Some(r) = reason {
            entry.push(json!(r));
        }
        if d.is_error() {
            errors.push(Value::Array(entry));
        } else {
            warnings.push(Value::Array(entry));
        }
    }
    errors.sort_by_key(Value::to_string);
    warnings.sort_by_key(Value::to_string);
    (
        Value::Array(errors),
        Value::Array(warnings),
        report.diagnostics,
    )
}

fn reference_expect(expect: &Value, key: &str) -> Value {
    let mut v: Vec<Value> = expect[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut t = vec![e["kind"].clone(), e["step_id"].clone()];
            if let Some(r) = e.get("reason") {
                t.push(r.clone());
            }
            Value::Array(t)
        })
        .collect();
    v.sort_by_key(Value::to_string);
    Value::Array(v)
}

fn codes(diags: &[Diagnostic]) -> Vec<String> {
    diags
        .iter()
        .map(|d| format!("{} {:?} {}", d.code, d.step_id, d.message))
        .collect()
}

#[test]
fn check_cases() {
    let cases = load("tests/conformance/cases", "check-");
    let overrides = load("tests/conformance/overrides", "check-");
    assert!(cases.len() >= 36, "only {} check cases", cases.len());
    let mut failures = Vec::new();
    for (id, case) in &cases {
        let (errors, warnings, diags) = outcome(&case["program"]);
        let want_e = reference_expect(&case["expect"], "errors");
        let want_w = reference_expect(&case["expect"], "warnings");
        let same = errors == want_e && warnings == want_w;
        match overrides.get(id) {
            None if same => {}
            None => failures.push(format!(
                "{id}: reference errors {want_e} warnings {want_w}\n   nanovm errors {errors} warnings {warnings}\n   {:#?}",
                codes(&diags)
            )),
            Some(_) if same => failures.push(format!("{id}: override no longer needed")),
            Some(o) => {
                assert!(o["rule"].as_str().is_some_and(|r| !r.is_empty()), "{id}: override without rule");
                let mut oe = o["check"]["errors"].clone();
                let mut ow = o["check"]["warnings"].clone();
                for v in [&mut oe, &mut ow] {
                    if let Value::Array(a) = v {
                        a.sort_by_key(Value::to_string);
                    }
                }
                if oe != errors || ow != warnings {
                    failures.push(format!(
                        "{id}: override expects errors {oe} warnings {ow}\n   nanovm errors {errors} warnings {warnings}\n   {:#?}",
                        codes(&diags)
                    ));
                }
            }
        }
    }
    for o in overrides.keys() {
        assert!(cases.contains_key(o), "override {o} has no case");
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn run_case_programs() {
    let cases = load("tests/conformance/cases", "run-");
    let overrides = load("tests/conformance/overrides", "run-");
    assert!(cases.len() >= 73, "only {} run cases", cases.len());
    let mut failures = Vec::new();
    let mut rejected = 0;
    for (id, case) in &cases {
        let text = serde_json::to_string_pretty(&case["program"]).unwrap();
        let report = check_source(&text, &Options::default());
        let mut got: Vec<String> = report
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.code.to_string())
            .collect();
        got.sort();
        got.dedup();
        let want: Vec<String> = overrides
            .get(id)
            .and_then(|o| o["check"]["rejected"].as_array())
            .map(|a| a.iter().map(|c| c.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        if !got.is_empty() {
            rejected += 1;
        }
        if got != want {
            failures.push(format!(
                "{id}: nanovm rejects with {got:?}, override says {want:?}\n   {:#?}",
                codes(&report.diagnostics)
            ));
        }
        if let Some(o) = overrides.get(id)
            && o.get("check").is_some()
        {
            assert!(
                o["rule"].as_str().is_some_and(|r| !r.is_empty()),
                "{id}: override without rule"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{rejected} of {} run programs are rejected by the checker, each with an override",
        cases.len()
    );
}
