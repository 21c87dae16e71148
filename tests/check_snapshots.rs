//! Snapshot tests of the rendered diagnostics of bad programs.
//!
//! Every case is one program under `tests/fixtures/programs/<name>.json` (one, `too_many_steps`,
//! is generated: it is megabytes long), checked the way `nanovm check` checks a file. Each case
//! becomes its own test that snapshots the plain ariadne rendering into
//! `snapshots/check_<name>.snap`; a few are also snapshotted as JSON (`check_json_<name>`) and
//! SARIF (`check_sarif_<name>`). [`every_code_is_covered`] checks that the cases together
//! produce every program code (`NV00xx`) in [`Code::ALL`].
//!
//! A case is checked with a tool catalog when a sidecar `<name>.catalog.json` sits next to its
//! program: `{"<tool>": {"output_schema": <JSON Schema>, "denied": "<reason>"}, …}` (both
//! keys optional; a tool without `denied` is allowed, one without a schema has output `any`).
//!
//! Update with `INSTA_UPDATE=always cargo test --test check_snapshots` (or `cargo insta review`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use nanovm::check::catalog::{Catalog, ToolInfo, type_from_schema};
use nanovm::check::{Options, check_bytes, check_source};
use nanovm::diagnostics::render_json::to_json_all;
use nanovm::diagnostics::render_sarif::to_sarif;
use nanovm::diagnostics::render_text::{TextOptions, render};
use nanovm::diagnostics::{Code, Diagnostic};
use nanovm::json;
use nanovm::source::SourceFile;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// How a case's program is read and checked.
#[derive(Debug, Clone, Copy)]
enum How {
    /// The fixture's text through `check_source` with default options.
    Text,
    /// The fixture's bytes through `check_bytes` (for bytes that are not UTF-8).
    Bytes,
    /// The fixture's text through `check_source` with this file-size limit.
    MaxBytes(usize),
    /// A program too large to keep as a fixture, built by this function.
    Generated(fn() -> String),
    /// The fixture's text through `check_source` for a run without an LLM (NV0036).
    NoLlm,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    how: How,
}

/// The path shown in renderings (relative to the crate, as a user would type it).
fn display_path(case: &Case) -> String {
    format!("tests/fixtures/programs/{}.json", case.name)
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/programs")
        .join(format!("{name}.json"))
}

fn catalog_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/programs")
        .join(format!("{name}.catalog.json"))
}

/// The case's tool catalog, from its sidecar file when it has one.
fn load_catalog(name: &str) -> Option<Catalog> {
    let text = std::fs::read_to_string(catalog_path(name)).ok()?;
    let tools: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}.catalog.json: {e}"));
    let mut catalog = Catalog::new();
    for (tool, spec) in tools {
        let spec = spec
            .as_object()
            .unwrap_or_else(|| panic!("{tool}: not an object"));
        for key in spec.keys() {
            assert!(
                ["output_schema", "denied"].contains(&key.as_str()),
                "{name}.catalog.json: unknown key {key} in tool {tool}"
            );
        }
        let allowed = match spec.get("denied") {
            None => Ok(()),
            Some(reason) => Err(reason.as_str().unwrap().to_owned()),
        };
        let output = spec
            .get("output_schema")
            .map_or(nanovm::expr::types::Type::Any, type_from_schema);
        catalog.insert(tool, ToolInfo { allowed, output });
    }
    Some(catalog)
}

/// 100,001 tool steps, one per line: one more than a program may have.
fn generate_too_many_steps() -> String {
    const N: usize = 100_001;
    let mut s = String::with_capacity(N * 52);
    s.push_str("{\n  \"name\": \"generated\",\n  \"steps\": [\n");
    for i in 1..=N {
        let comma = if i < N { "," } else { "" };
        s.push_str(&format!(
            "    {{\"id\": \"s{i:06}\", \"type\": \"tool\", \"tool\": \"t\"}}{comma}\n"
        ));
    }
    s.push_str("  ]\n}\n");
    s
}

/// Generated cases, checked once per process: name → (text, diagnostics).
type Generated = Mutex<HashMap<&'static str, (String, Vec<Diagnostic>)>>;

/// Check a case: the text the diagnostics point into, and the diagnostics in order.
fn diagnose(case: &Case) -> (String, Vec<Diagnostic>) {
    match case.how {
        How::Generated(make) => {
            // Several tests need it and it is large: check it once per process.
            static GENERATED: OnceLock<Generated> = OnceLock::new();
            let mut done = GENERATED
                .get_or_init(Mutex::default)
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            done.entry(case.name)
                .or_insert_with(|| {
                    let text = make();
                    let report = check_source(&text, &Options::default());
                    (text, report.diagnostics)
                })
                .clone()
        }
        How::Bytes => {
            let bytes = std::fs::read(fixture_path(case.name)).unwrap();
            let (report, lossy) = check_bytes(&bytes, &Options::default());
            let text = lossy.unwrap_or_else(|| String::from_utf8(bytes).unwrap());
            (text, report.diagnostics)
        }
        How::Text | How::MaxBytes(_) | How::NoLlm => {
            let text = std::fs::read_to_string(fixture_path(case.name)).unwrap();
            let mut opts = Options {
                catalog: load_catalog(case.name).map(Arc::new),
                ..Options::default()
            };
            if let How::NoLlm = case.how {
                opts.no_llm = Some("add an [llm] section to nanovm.toml".to_owned());
            }
            if let How::MaxBytes(max) = case.how {
                opts.json = json::Limits {
                    max_bytes: max,
                    ..json::Limits::default()
                };
            }
            let report = check_source(&text, &opts);
            (text, report.diagnostics)
        }
    }
}

fn describe(case: &Case) -> String {
    let how = match case.how {
        How::Text => "check_source, default options".to_owned(),
        How::Bytes => "check_bytes, default options".to_owned(),
        How::MaxBytes(n) => format!("check_source, max_bytes = {n}"),
        How::Generated(_) => "check_source of a generated program (see the test)".to_owned(),
        How::NoLlm => "check_source for a run without an LLM (no_llm set)".to_owned(),
    };
    let catalog = if catalog_path(case.name).exists() {
        format!(
            ", tool catalog tests/fixtures/programs/{}.catalog.json",
            case.name
        )
    } else {
        String::new()
    };
    format!(
        "program: {}\nchecked with: {how}{catalog}",
        display_path(case)
    )
}

fn snapshot(case: &Case, name: String, body: String) {
    insta::with_settings!({
        snapshot_path => "../snapshots",
        prepend_module_to_snapshot => false,
        description => describe(case),
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, body);
    });
}

fn snapshot_text(case: &Case) {
    let (text, diags) = diagnose(case);
    assert!(!diags.is_empty(), "{}: no diagnostics", case.name);
    let rendered = render(
        &diags,
        &SourceFile::new(display_path(case), text),
        TextOptions { color: false },
    );
    assert!(
        !rendered.contains('\u{1b}'),
        "{}: ANSI escapes in plain text",
        case.name
    );
    for debug in ["Some(", "Spanned", "Kind::", "\\u{"] {
        assert!(
            !rendered.contains(debug),
            "{}: a Rust debug string ({debug}) in the rendering",
            case.name
        );
    }
    snapshot(case, format!("check_{}", case.name), rendered);
}

fn snapshot_json(case: &Case) {
    let (text, diags) = diagnose(case);
    let source = SourceFile::new(display_path(case), text);
    let json = serde_json::to_string_pretty(&to_json_all(&diags, &source)).unwrap();
    snapshot(case, format!("check_json_{}", case.name), json);
}

/// The SARIF log, with the rule table (every code's full explanation, the same in every log)
/// cut down to the rule ids so the snapshot shows the results, and the version redacted.
fn snapshot_sarif(case: &Case) {
    let (text, diags) = diagnose(case);
    let source = SourceFile::new(display_path(case), text);
    let mut log = to_sarif(&[(&source, diags.as_slice())]);
    let driver = &mut log["runs"][0]["tool"]["driver"];
    let rules = driver["rules"].as_array().unwrap().clone();
    for r in log["runs"][0]["results"].as_array().unwrap() {
        let i = usize::try_from(r["ruleIndex"].as_u64().unwrap()).unwrap();
        assert_eq!(rules[i]["id"], r["ruleId"], "{}: ruleIndex", case.name);
    }
    let driver = &mut log["runs"][0]["tool"]["driver"];
    driver["version"] = "[version]".into();
    assert_eq!(rules.len(), Code::ALL.len(), "one rule per code");
    driver["rules"] = "[one rule per code]".into();
    let json = serde_json::to_string_pretty(&log).unwrap();
    snapshot(case, format!("check_sarif_{}", case.name), json);
}

macro_rules! cases {
    ($( $name:ident $(: $how:expr)?; )*) => {
        fn all_cases() -> Vec<Case> {
            vec![$( Case {
                name: stringify!($name),
                how: cases!(@how $($how)?),
            }, )*]
        }

        fn case(name: &str) -> Case {
            all_cases()
                .into_iter()
                .find(|c| c.name == name)
                .unwrap_or_else(|| panic!("no case {name}"))
        }

        $(
            #[test]
            fn $name() {
                snapshot_text(&case(stringify!($name)));
            }
        )*
    };
    (@how) => { How::Text };
    (@how $how:expr) => { $how };
}

cases! {
    // ---- NV000x: the file and its JSON ----
    not_json_trailing_comma;
    not_json_comment;
    not_json_single_quotes;
    not_json_missing_comma;
    not_json_unterminated;
    empty_file;
    duplicate_key;
    nesting_too_deep;
    file_too_large: How::MaxBytes(64);
    invalid_utf8: How::Bytes;
    too_many_steps: How::Generated(generate_too_many_steps);

    // ---- NV001x: the schema ----
    root_not_an_object;
    wrong_types;
    unknown_fields;
    missing_fields;
    missing_steps;
    invalid_enums;
    invalid_input_type;
    empty_values;
    empty_steps;
    numbers_out_of_range;
    misplaced_fields;
    ignored_fields;
    substep_types;
    substep_control_flow;
    terminal_with_next;

    // ---- NV002x, NV003x: the step graph and step fields ----
    duplicate_step_ids;
    missing_targets;
    jump_to_substep;
    unicode_ids_and_targets;
    unreachable_branch_leaf;
    unreachable_after_terminal;
    unbounded_cycle;
    bounded_cycle;
    budget_never_finishes;
    budget_below_longest;
    one_sided_condition;
    no_failure_terminal;
    skip_on_condition;
    output_key_clash;
    substep_no_effect;
    portability_bare_step;
    unknown_tool;
    tool_not_allowed;
    no_llm: How::NoLlm;

    // ---- NV01xx–NV03xx inside a program: conditions, prompts, args ----
    condition_syntax_after_escapes;
    condition_escaped_quotes;
    condition_unterminated_after_tab;
    condition_mixed_and_or;
    conditions_in_several_steps;
    condition_empty_whitespace;
    condition_too_long;
    unknown_variable_did_you_mean;
    possibly_misspelled;
    unknown_step_closed;
    step_not_yet_run;
    step_may_not_have_run;
    no_such_field;
    operator_types;
    literal_not_in_allowed_outputs;
    constant_comparison;
    sibling_reference_in_parallel;
    references_in_prompts_and_args;
    tool_output_types;
    errors_everywhere;
}

/// Cases also snapshotted as JSON (`check_json_<name>.snap`).
const JSON_CASES: &[&str] = &[
    "condition_syntax_after_escapes",
    "duplicate_step_ids",
    "errors_everywhere",
    "invalid_utf8",
];

/// Cases also snapshotted as SARIF (`check_sarif_<name>.snap`).
const SARIF_CASES: &[&str] = &[
    "condition_syntax_after_escapes",
    "output_key_clash",
    "unreachable_branch_leaf",
];

#[test]
fn json_renderings() {
    for name in JSON_CASES {
        snapshot_json(&case(name));
    }
}

#[test]
fn sarif_renderings() {
    for name in SARIF_CASES {
        snapshot_sarif(&case(name));
    }
}

/// Program codes no case can produce: NV0006 (io-error) comes from the CLI reading a file.
const NOT_FROM_A_PROGRAM: &[Code] = &[Code::Io];

#[test]
fn every_code_is_covered() {
    let cases = all_cases();
    assert!(cases.len() >= 45, "only {} cases", cases.len());
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), cases.len(), "duplicate case names");

    let seen: BTreeSet<Code> = cases
        .iter()
        .flat_map(|c| diagnose(c).1)
        .map(|d| d.code)
        .collect();
    let all: BTreeSet<Code> = Code::ALL
        .iter()
        .copied()
        .filter(|c| c.as_str().starts_with("NV00") && !NOT_FROM_A_PROGRAM.contains(c))
        .collect();
    let missing: Vec<&str> = all.difference(&seen).map(|c| c.as_str()).collect();
    assert!(missing.is_empty(), "codes without a snapshot: {missing:?}");
    // The condition codes a program reaches through its conditions, prompts and args.
    for code in [
        Code::UnknownVariable,
        Code::PossiblyMisspelled,
        Code::UnknownStep,
        Code::StepNeverRan,
        Code::StepMaybeNotRan,
        Code::NoSuchField,
        Code::OperatorTypes,
        Code::NotInEnum,
        Code::ConstantComparison,
    ] {
        assert!(seen.contains(&code), "no program produces {code}");
    }
}

/// Every fixture belongs to a case (a renamed case leaves none behind).
#[test]
fn every_fixture_is_a_case() {
    let names: BTreeSet<String> = all_cases().iter().map(|c| c.name.to_owned()).collect();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/programs");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        // A `<case>.catalog.json` sidecar belongs to its case.
        let stem = stem
            .strip_suffix(".catalog")
            .map_or(stem.clone(), str::to_owned);
        assert!(
            names.contains(&stem),
            "fixture without a case: {}",
            path.display()
        );
    }
    for c in all_cases() {
        assert!(
            !catalog_path(c.name).exists() || matches!(c.how, How::Text | How::MaxBytes(_)),
            "{}: a catalog sidecar is read only for text cases",
            c.name
        );
    }
    for c in all_cases() {
        let generated = matches!(c.how, How::Generated(_));
        assert_eq!(
            fixture_path(c.name).exists(),
            !generated,
            "{}: a fixture file exactly when the program is not generated",
            c.name
        );
    }
}

/// Every span of every diagnostic (primary and secondary) lies inside the text and on its
/// character boundaries, so every renderer underlines whole characters.
#[test]
fn spans_are_on_character_boundaries() {
    for c in all_cases() {
        let (text, diags) = diagnose(&c);
        for d in &diags {
            let spans = std::iter::once(d.span).chain(d.labels.iter().map(|l| l.span));
            for span in spans {
                assert!(
                    span.start <= span.end
                        && span.end <= text.len()
                        && text.is_char_boundary(span.start)
                        && text.is_char_boundary(span.end),
                    "{}: {} span {:?} is not on character boundaries",
                    c.name,
                    d.code,
                    span
                );
            }
        }
    }
}

/// Every snapshot this file wrote belongs to a current case (renamed cases leave none behind).
#[test]
fn no_orphan_snapshots() {
    let mut expected: BTreeSet<String> = all_cases()
        .iter()
        .map(|c| format!("check_{}", c.name))
        .collect();
    expected.extend(JSON_CASES.iter().map(|n| format!("check_json_{n}")));
    expected.extend(SARIF_CASES.iter().map(|n| format!("check_sarif_{n}")));
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("snapshots");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(stem) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(name) = stem.strip_suffix(".snap") else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("source: tests/check_snapshots.rs") {
            assert!(
                expected.contains(name),
                "orphan snapshot {}",
                path.display()
            );
        }
    }
}
