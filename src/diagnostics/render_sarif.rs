//! SARIF 2.1.0: one run of the `nanovm` tool over any number of files, every code as a rule.

use super::{Code, Diagnostic, Severity};
use crate::source::SourceFile;
use serde_json::{Value, json};

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    }
}

fn region(source: &SourceFile, start: usize, end: usize) -> Value {
    let a = source.line_col(start);
    let b = source.line_col(end.max(start));
    json!({
        "startLine": a.line, "startColumn": a.column,
        "endLine": b.line, "endColumn": b.column,
        "byteOffset": start, "byteLength": end.saturating_sub(start),
    })
}

/// A complete SARIF log for the diagnostics of several files.
pub fn to_sarif(files: &[(&SourceFile, &[Diagnostic])]) -> Value {
    let rules: Vec<Value> = Code::ALL
        .iter()
        .map(|c| {
            let i = c.info();
            json!({
                "id": i.code,
                "name": i.name,
                "shortDescription": {"text": i.summary},
                "fullDescription": {"text": i.explanation},
                "defaultConfiguration": {"level": level(i.severity)},
                "help": {"text": format!("nanovm explain {}", i.code)},
            })
        })
        .collect();
    let mut results = Vec::new();
    for (source, diags) in files {
        for d in *diags {
            let mut message = d.message.clone();
            if let Some(h) = &d.help {
                message.push_str("\nhelp: ");
                message.push_str(h);
            }
            for n in &d.notes {
                message.push_str("\nnote: ");
                message.push_str(n);
            }
            let related: Vec<Value> = d
                .labels
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    json!({
                        "id": i,
                        "message": {"text": l.message},
                        "physicalLocation": {
                            "artifactLocation": {"uri": source.name()},
                            "region": region(source, l.span.start, l.span.end),
                        }
                    })
                })
                .collect();
            let rule_index = Code::ALL.iter().position(|c| *c == d.code).unwrap_or(0);
            let mut result = json!({
                "ruleId": d.code.as_str(),
                "ruleIndex": rule_index,
                "level": level(d.severity),
                "message": {"text": message},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": source.name()},
                        "region": region(source, d.span.start, d.span.end),
                    }
                }],
                "relatedLocations": related,
            });
            if let (Some(obj), Some(ptr)) = (result.as_object_mut(), &d.pointer) {
                obj.insert(
                    "properties".into(),
                    json!({"pointer": ptr, "step_id": d.step_id}),
                );
            }
            results.push(result);
        }
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "nanovm",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/nanovm/nanovm",
                "rules": rules,
            }},
            "results": results,
        }]
    })
}
