//! `grammar/program.schema.json` stays true to the decoder: every program the checker accepts
//! without schema errors (NV001x) validates against it, the schema errors of the decoder are
//! schema violations too, and the schema names exactly the decoder's fields and enum values.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use nanovm::check::{Options, check_source};
use nanovm::program::{FIELDS_PROGRAM, FIELDS_STEP, INPUT_TYPES, OnError, OnTimeout, StepType};
use serde_json::{Value, json};
use std::path::Path;

fn schema() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/grammar/program.schema.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(&schema()).unwrap()
}

/// The schema errors (NV001x) nanovm reports for a program.
fn schema_codes(program: &Value) -> Vec<&'static str> {
    let text = serde_json::to_string_pretty(program).unwrap();
    check_source(&text, &Options::default())
        .diagnostics
        .iter()
        .filter(|d| d.is_error() && d.code.as_str().starts_with("NV001"))
        .map(|d| d.code.as_str())
        .collect()
}

fn violations(v: &jsonschema::Validator, program: &Value) -> Vec<String> {
    v.iter_errors(program)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// `(case file name, kind, program)` of every check and run conformance case.
fn conformance_programs() -> Vec<(String, &'static str, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let kind = match name.split('-').next() {
            Some("check") => "check",
            Some("run") => "run",
            _ => continue,
        };
        let case: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        out.push((name, kind, case["program"].clone()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn schema_is_valid_draft_2020_12() {
    let s = schema();
    assert_eq!(
        s["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "the schema declares draft 2020-12"
    );
    assert!(s["$id"].is_string() && s["title"].is_string());
    if let Err(e) = jsonschema::meta::validate(&s) {
        panic!("the schema is not a valid JSON Schema: {e}");
    }
}

#[test]
fn conformance_programs_validate() {
    let v = validator();
    let mut checked = 0;
    let mut skipped = Vec::new();
    let mut runs = 0;
    for (name, kind, program) in conformance_programs() {
        // A few run programs (which the reference runs) are rejected by nanovm's decoder on
        // purpose, e.g. `is_terminal` with `next_step` (NV0019); the schema follows the decoder.
        if !schema_codes(&program).is_empty() {
            skipped.push(name);
            continue;
        }
        let errors = violations(&v, &program);
        assert!(
            errors.is_empty(),
            "{name}: nanovm finds no schema error but the schema rejects it:\n{}",
            errors.join("\n")
        );
        checked += 1;
        runs += usize::from(kind == "run");
    }
    println!("validated {checked} programs ({runs} run programs); schema errors in {skipped:?}");
    assert!(
        checked >= 80 && runs >= 65,
        "only {checked} programs ({runs} run programs) validated"
    );
    // The programs with schema errors are rejected by the schema too.
    for (name, _, program) in conformance_programs() {
        if skipped.contains(&name) {
            assert!(
                !v.is_valid(&program),
                "{name}: nanovm reports schema errors but the schema accepts it"
            );
        }
    }
}

/// Programs the decoder rejects, each with the schema code it must report.
fn rejected() -> Vec<(&'static str, Value)> {
    let tool = json!({"id": "a", "type": "tool", "tool": "t"});
    vec![
        // NV0010 wrong type
        ("NV0010", json!({"name": 1, "steps": [tool]})),
        ("NV0010", json!({"steps": {"a": tool}})),
        ("NV0010", json!({"max_steps": "5", "steps": [tool]})),
        ("NV0010", json!({"max_steps": 2.5, "steps": [tool]})),
        (
            "NV0010",
            json!({"steps": [{"id": "a", "type": "tool", "tool": "t", "is_terminal": "true"}]}),
        ),
        (
            "NV0010",
            json!({"steps": [{"id": "a", "type": "tool", "tool": "t", "args": ["x"]}]}),
        ),
        (
            "NV0010",
            json!({"steps": [{"id": "a", "type": "llm", "prompt": "p", "allowed_outputs": ["x", 1]}]}),
        ),
        ("NV0010", json!({"steps": [tool, 7]})),
        ("NV0010", json!([tool])),
        ("NV0010", json!({"inputs": {"amount": 1}, "steps": [tool]})),
        // NV0011 unknown field
        ("NV0011", json!({"nmae": "p", "steps": [tool]})),
        (
            "NV0011",
            json!({"steps": [{"id": "a", "type": "tool", "tool": "t", "Tool": "u"}]}),
        ),
        (
            "NV0011",
            json!({"steps": [{"id": "p", "type": "parallel", "parallel_steps": [
                {"id": "s", "type": "tool", "tool": "t", "retries": 2}
            ]}]}),
        ),
        // NV0012 missing field
        ("NV0012", json!({"name": "p"})),
        ("NV0012", json!({"steps": [{"type": "tool", "tool": "t"}]})),
        ("NV0012", json!({"steps": [{"id": "a", "tool": "t"}]})),
        ("NV0012", json!({"steps": [{"id": "a", "type": "llm"}]})),
        ("NV0012", json!({"steps": [{"id": "a", "type": "tool"}]})),
        (
            "NV0012",
            json!({"steps": [{"id": "c", "type": "condition", "then": "a"}, tool]}),
        ),
        (
            "NV0012",
            json!({"steps": [{"id": "c", "type": "condition", "condition": "$x == 1"}, tool]}),
        ),
        (
            "NV0012",
            json!({"steps": [{"id": "p", "type": "parallel"}]}),
        ),
        // NV0013 invalid enum value
        (
            "NV0013",
            json!({"steps": [{"id": "a", "type": "LLM", "prompt": "p"}]}),
        ),
        (
            "NV0013",
            json!({"steps": [{"id": "a", "type": "tool", "tool": "t", "on_error": "ignore"}]}),
        ),
        (
            "NV0013",
            json!({"steps": [{"id": "a", "type": "llm", "prompt": "p", "on_timeout": "retry"}]}),
        ),
        (
            "NV0013",
            json!({"inputs": {"amount": "integer"}, "steps": [tool]}),
        ),
        // NV0014 empty value
        ("NV0014", json!({"steps": []})),
        (
            "NV0014",
            json!({"steps": [{"id": " ", "type": "tool", "tool": "t"}]}),
        ),
        (
            "NV0014",
            json!({"steps": [{"id": "a", "type": "llm", "prompt": ""}]}),
        ),
        (
            "NV0014",
            json!({"steps": [{"id": "a", "type": "tool", "tool": "t", "next_step": "\t\n"}]}),
        ),
        (
            "NV0014",
            json!({"steps": [{"id": "a", "type": "llm", "prompt": "p", "allowed_outputs": []}]}),
        ),
        (
            "NV0014",
            json!({"steps": [{"id": "p", "type": "parallel", "parallel_steps": []}]}),
        ),
        // NV0015 number out of range
        ("NV0015", json!({"max_steps": 0, "steps": [tool]})),
        ("NV0015", json!({"max_stalled_steps": 0, "steps": [tool]})),
        ("NV0015", json!({"max_tokens": -3, "steps": [tool]})),
        (
            "NV0015",
            json!({"steps": [{"id": "a", "type": "tool", "tool": "t", "max_retries": 101}]}),
        ),
        (
            "NV0015",
            json!({"steps": [{"id": "a", "type": "llm", "prompt": "p", "timeout_seconds": 0}]}),
        ),
        (
            "NV0015",
            json!({"steps": [{"id": "a", "type": "llm", "prompt": "p", "timeout_seconds": 86400.5}]}),
        ),
        (
            "NV0015",
            json!({"steps": [{"id": "p", "type": "parallel", "max_concurrency": 0,
                "parallel_steps": [tool]}]}),
        ),
        // NV0016 field not for the step type
        (
            "NV0016",
            json!({"steps": [{"id": "a", "type": "tool", "tool": "t", "then": "a"}]}),
        ),
        (
            "NV0016",
            json!({"steps": [{"id": "c", "type": "condition", "condition": "$x == 1",
                "then": "a", "otherwise": "a", "next_step": "a"}, tool]}),
        ),
        (
            "NV0016",
            json!({"steps": [{"id": "c", "type": "condition", "condition": "$x == 1",
                "then": "a", "otherwise": "a", "is_terminal": false}, tool]}),
        ),
        (
            "NV0016",
            json!({"steps": [{"id": "a", "type": "tool", "tool": "t", "allowed_outputs": ["x"]}]}),
        ),
        (
            "NV0016",
            json!({"steps": [{"id": "p", "type": "parallel", "parallel_steps": [
                {"id": "s", "type": "tool", "tool": "t", "is_terminal": true}
            ]}]}),
        ),
        // NV0018 sub-step type
        (
            "NV0018",
            json!({"steps": [{"id": "p", "type": "parallel", "parallel_steps": [
                {"id": "s", "type": "condition", "condition": "$x == 1", "then": "p"}
            ]}]}),
        ),
        // NV0019 is_terminal with next_step
        (
            "NV0019",
            json!({"steps": [{"id": "a", "type": "tool", "tool": "t", "is_terminal": true,
                "next_step": "a"}]}),
        ),
    ]
}

#[test]
fn decoder_schema_errors_are_schema_violations() {
    let v = validator();
    let mut covered = Vec::new();
    for (code, program) in rejected() {
        let text = serde_json::to_string(&program).unwrap();
        let diags = check_source(&text, &Options::default()).diagnostics;
        assert!(
            diags
                .iter()
                .any(|d| d.is_error() && d.code.as_str() == code),
            "nanovm does not report {code} for {text}: {diags:#?}"
        );
        assert!(
            !v.is_valid(&program),
            "nanovm reports {code} but the schema accepts {text}"
        );
        covered.push(code);
    }
    for code in [
        "NV0010", "NV0011", "NV0012", "NV0013", "NV0014", "NV0015", "NV0016", "NV0018", "NV0019",
    ] {
        assert!(covered.contains(&code), "no case for {code}");
    }
}

/// The valid neighbours of the rejected programs stay valid for both.
#[test]
fn small_valid_programs_agree() {
    let v = validator();
    let programs = [
        json!({"steps": [{"id": "a", "type": "tool", "tool": "t", "is_terminal": false, "next_step": "a"}],
            "max_steps": 3}),
        json!({"name": "", "description": "", "version": "1", "steps": [
            {"id": "a", "type": "llm", "prompt": "p", "system": "s", "allowed_outputs": [""],
             "timeout_seconds": 86400, "on_timeout": "fallback", "max_retries": 0,
             "on_error": "retry", "output_key": "k"}
        ], "max_tokens": 1, "max_stalled_steps": 1, "inputs": {"x": "int", "y": "object"}}),
        json!({"steps": [
            {"id": "c", "type": "condition", "condition": "$x == 1", "otherwise": "p"},
            {"id": "p", "type": "parallel", "max_concurrency": 2, "on_error": "skip", "parallel_steps": [
                {"id": "s1", "type": "tool", "tool": "t", "args": {"q": "$x"}},
                {"id": "s2", "type": "llm", "prompt": "p", "timeout_seconds": 0.5}
            ]}
        ], "inputs": {"x": "int"}}),
    ];
    for program in programs {
        let codes = schema_codes(&program);
        assert!(codes.is_empty(), "{program}: {codes:?}");
        let errors = violations(&v, &program);
        assert!(errors.is_empty(), "{program}: {errors:?}");
    }
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

#[test]
fn field_names_and_enums_match_the_decoder() {
    let s = schema();
    let step = &s["$defs"]["step"];
    assert_eq!(keys(&s["properties"]), FIELDS_PROGRAM);
    assert_eq!(keys(&step["properties"]), FIELDS_STEP);
    assert_eq!(s["additionalProperties"], false);
    assert_eq!(step["additionalProperties"], false);

    let names = |all: &[&'static str]| all.to_vec();
    assert_eq!(
        strings(&step["properties"]["type"]["enum"]),
        names(&StepType::ALL.map(|(n, _)| n))
    );
    assert_eq!(
        strings(&step["properties"]["on_error"]["enum"]),
        names(&OnError::ALL.map(|(n, _)| n))
    );
    assert_eq!(
        strings(&step["properties"]["on_timeout"]["enum"]),
        names(&OnTimeout::ALL.map(|(n, _)| n))
    );
    assert_eq!(
        strings(&s["properties"]["inputs"]["additionalProperties"]["enum"]),
        INPUT_TYPES
    );
    // Sub-steps are steps of the two kinds a parallel step may hold.
    assert_eq!(
        strings(&s["$defs"]["subStep"]["properties"]["type"]["enum"]),
        ["llm", "tool"]
    );
}

#[test]
fn every_property_is_described() {
    let s = schema();
    for (what, props) in [
        ("program", &s["properties"]),
        ("step", &s["$defs"]["step"]["properties"]),
    ] {
        for (name, p) in props.as_object().unwrap() {
            let d = p["description"].as_str().unwrap_or_default();
            assert!(
                !d.trim().is_empty(),
                "{what} property `{name}` has no description"
            );
        }
    }
}
