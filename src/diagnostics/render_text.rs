//! Human rendering with ariadne: byte-indexed spans, colour on request.

use super::{Diagnostic, Severity};
use crate::source::SourceFile;
use ariadne::{Color, Config, IndexType, Label, Report, ReportKind};

/// Options for the text renderer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextOptions {
    /// ANSI colours (use on a TTY only).
    pub color: bool,
}

/// Render diagnostics for one source text as a report, in the order given.
pub fn render(diags: &[Diagnostic], source: &SourceFile, opts: TextOptions) -> String {
    let mut out = Vec::new();
    for d in diags {
        render_one(d, source, opts, &mut out);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn clamp(source: &SourceFile, span: crate::source::Span) -> std::ops::Range<usize> {
    let len = source.text().len();
    let start = span.start.min(len);
    let end = span.end.clamp(start, len);
    start..end
}

fn render_one(d: &Diagnostic, source: &SourceFile, opts: TextOptions, out: &mut Vec<u8>) {
    let name = source.name().to_owned();
    let kind = match d.severity {
        Severity::Error => ReportKind::Error,
        Severity::Warning => ReportKind::Warning,
        Severity::Note => ReportKind::Advice,
    };
    let color = match d.severity {
        Severity::Error => Color::Red,
        Severity::Warning => Color::Yellow,
        Severity::Note => Color::Cyan,
    };
    let primary = clamp(source, d.span);
    let mut label = Label::new((name.clone(), primary.clone()))
        .with_message(d.label.as_deref().unwrap_or(&d.message))
        .with_order(0);
    if opts.color {
        label = label.with_color(color);
    }
    let mut report = Report::build(kind, (name.clone(), primary))
        .with_config(
            Config::new()
                .with_index_type(IndexType::Byte)
                .with_color(opts.color),
        )
        .with_code(d.code)
        .with_message(&d.message)
        .with_label(label);
    for (i, l) in d.labels.iter().enumerate() {
        let mut sec = Label::new((name.clone(), clamp(source, l.span)))
            .with_message(&l.message)
            .with_order(i32::try_from(i + 1).unwrap_or(i32::MAX));
        if opts.color {
            sec = sec.with_color(Color::Blue);
        }
        report = report.with_label(sec);
    }
    for n in &d.notes {
        report = report.with_note(n);
    }
    if let Some(h) = &d.help {
        report = report.with_help(h);
    }
    let cache = ariadne::sources([(name, source.text())]);
    if report.finish().write(cache, &mut *out).is_err() {
        // Writing to a Vec cannot fail; keep a plain line if it ever does.
        out.extend_from_slice(
            format!("{}[{}]: {}\n", d.severity.as_str(), d.code, d.message).as_bytes(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::Code;
    use crate::source::Span;

    #[test]
    fn plain_has_no_ansi_and_points_at_bytes() {
        let src = SourceFile::new("cond", "$città === 1");
        let d = Diagnostic::new(Code::UnexpectedChar, Span::new(9, 10), "unexpected `=`")
            .with_help("write `==`");
        let text = render(&[d], &src, TextOptions { color: false });
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains("NV0101"), "{text}");
        assert!(text.contains("write `==`"), "{text}");
        let colored = render(
            &[Diagnostic::new(Code::UnexpectedChar, Span::new(0, 1), "x")],
            &src,
            TextOptions { color: true },
        );
        assert!(colored.contains('\u{1b}'));
    }
}
