//! Machine rendering: a stable JSON shape per diagnostic, with line and column resolved.

use super::{Diagnostic, Severity};
use crate::source::{SourceFile, Span};
use serde::Serialize;

/// A span with its 1-based start line and column (columns count characters).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct JsonSpan {
    pub start: usize,
    pub end: usize,
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct JsonLabel {
    pub span: JsonSpan,
    pub message: String,
}

/// The JSON form of a [`Diagnostic`]; field names are part of the public contract.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct JsonDiagnostic {
    pub code: &'static str,
    pub name: &'static str,
    pub severity: Severity,
    pub message: String,
    /// The text shown at the primary span.
    pub label: Option<String>,
    pub pointer: Option<String>,
    pub step_id: Option<String>,
    pub span: JsonSpan,
    pub labels: Vec<JsonLabel>,
    pub notes: Vec<String>,
    pub help: Option<String>,
}

fn json_span(source: &SourceFile, span: Span) -> JsonSpan {
    let lc = source.line_col(span.start);
    JsonSpan {
        start: span.start,
        end: span.end,
        line: lc.line,
        column: lc.column,
    }
}

pub fn to_json(d: &Diagnostic, source: &SourceFile) -> JsonDiagnostic {
    let info = d.code.info();
    JsonDiagnostic {
        code: info.code,
        name: info.name,
        severity: d.severity,
        message: d.message.clone(),
        label: d.label.clone(),
        pointer: d.pointer.clone(),
        step_id: d.step_id.clone(),
        span: json_span(source, d.span),
        labels: d
            .labels
            .iter()
            .map(|l| JsonLabel {
                span: json_span(source, l.span),
                message: l.message.clone(),
            })
            .collect(),
        notes: d.notes.clone(),
        help: d.help.clone(),
    }
}

pub fn to_json_all(diags: &[Diagnostic], source: &SourceFile) -> Vec<JsonDiagnostic> {
    diags.iter().map(|d| to_json(d, source)).collect()
}
