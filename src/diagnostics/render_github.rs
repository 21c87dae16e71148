//! GitHub Actions workflow commands: one `::error file=…,line=…::message` line per diagnostic.

use super::{Diagnostic, Severity};
use crate::source::SourceFile;

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// One annotation line per diagnostic.
pub fn to_github(diags: &[Diagnostic], source: &SourceFile) -> String {
    let mut out = String::new();
    for d in diags {
        let kind = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "notice",
        };
        let a = source.line_col(d.span.start);
        let b = source.line_col(d.span.end.max(d.span.start));
        let mut msg = d.message.clone();
        if let Some(h) = &d.help {
            msg.push_str("\nhelp: ");
            msg.push_str(h);
        }
        let mut props = format!(
            "file={},line={},col={}",
            escape_property(source.name()),
            a.line,
            a.column
        );
        if b.line == a.line {
            props.push_str(&format!(",endColumn={}", b.column));
        } else {
            props.push_str(&format!(",endLine={}", b.line));
        }
        props.push_str(&format!(
            ",title={}",
            escape_property(&format!("{} {}", d.code, d.code.info().name))
        ));
        out.push_str(&format!("::{kind} {props}::{}\n", escape_data(&msg)));
    }
    out
}
