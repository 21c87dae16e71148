//! Human rendering with ariadne: byte-indexed spans, colour on request.

use super::{Diagnostic, Severity};
use crate::source::SourceFile;
use ariadne::{Color, Config, IndexType, Label, Report, ReportKind};
use std::ops::Range;

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

/// A span clamped into the text and widened to character boundaries (a renderer must never
/// slice inside a character, whatever span it is given).
fn clamp(text: &str, span: crate::source::Span) -> Range<usize> {
    let len = text.len();
    let mut start = span.start.min(len);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = span.end.clamp(start, len);
    while !text.is_char_boundary(end) {
        end += 1;
    }
    start..end
}

/// Lines longer than this are shown as an excerpt around the labels (minified JSON can put a
/// whole program on one line).
const MAX_LINE: usize = 240;
const CONTEXT: usize = 60;

/// The text with every over-long labelled line cut down to windows around its labels, and a
/// function mapping offsets of the original text into it. Line numbers are unchanged.
/// A piece of the original text copied into an excerpt: `(old_start, old_end, new_start)`.
type Piece = (usize, usize, usize);

fn excerpt(text: &str, spans: &[Range<usize>]) -> Option<(String, Vec<Piece>)> {
    let mut long = false;
    let mut out = String::with_capacity(text.len().min(64 * 1024));
    // (old_start, old_end, new_start) of every copied piece.
    let mut pieces = Vec::new();
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let line_end = line_start + line.len();
        let inside: Vec<&Range<usize>> = spans
            .iter()
            .filter(|s| s.start >= line_start && s.start <= line_end)
            .collect();
        if line.len() > MAX_LINE && !inside.is_empty() {
            long = true;
            let from = inside.iter().map(|s| s.start).min().unwrap_or(line_start);
            let to = inside
                .iter()
                .map(|s| s.end.min(s.start + 2 * CONTEXT))
                .max()
                .unwrap_or(from);
            let mut ws = from.saturating_sub(CONTEXT).max(line_start);
            while !text.is_char_boundary(ws) {
                ws -= 1;
            }
            let mut we = (to + CONTEXT).min(line_end);
            while !text.is_char_boundary(we) {
                we += 1;
            }
            if ws > line_start {
                out.push('…');
            }
            pieces.push((ws, we, out.len()));
            out.push_str(text.get(ws..we).unwrap_or_default());
            if we < line_end {
                out.push('…');
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
        } else {
            pieces.push((line_start, line_end, out.len()));
            out.push_str(line);
        }
        line_start = line_end;
    }
    long.then_some((out, pieces))
}

fn map_offset(pieces: &[Piece], pos: usize) -> usize {
    let mut last = 0;
    for &(os, oe, ns) in pieces {
        if pos < os {
            return ns;
        }
        if pos <= oe {
            return ns + (pos - os);
        }
        last = ns + (oe - os);
    }
    last
}

fn render_one(d: &Diagnostic, source: &SourceFile, opts: TextOptions, out: &mut Vec<u8>) {
    let spans: Vec<Range<usize>> = std::iter::once(d.span)
        .chain(d.labels.iter().map(|l| l.span))
        .map(|s| clamp(source.text(), s))
        .collect();
    if let Some((text, pieces)) = excerpt(source.text(), &spans) {
        let at = source.line_col(d.span.start);
        let mut short = d.clone();
        let map = |s: crate::source::Span| {
            let r = clamp(source.text(), s);
            crate::source::Span::new(map_offset(&pieces, r.start), map_offset(&pieces, r.end))
        };
        short = short.map_spans(map);
        short.notes.push(format!(
            "line {} is long; shown as an excerpt (the problem is at line {}, column {}, byte {})",
            at.line, at.line, at.column, d.span.start
        ));
        let excerpt_source = SourceFile::new(source.name(), text);
        render_plain(&short, &excerpt_source, opts, out);
        return;
    }
    render_plain(d, source, opts, out);
}

fn render_plain(d: &Diagnostic, source: &SourceFile, opts: TextOptions, out: &mut Vec<u8>) {
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
    let primary = clamp(source.text(), d.span);
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
        let mut sec = Label::new((name.clone(), clamp(source.text(), l.span)))
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

    #[test]
    fn long_lines_are_excerpted_and_odd_spans_never_panic() {
        let text = format!("{{\"a\": [{}1]}}", "0, ".repeat(2000));
        let src = SourceFile::new("min.json", text.clone());
        let at = text.len() - 3;
        let d = Diagnostic::new(Code::UnexpectedChar, Span::new(at, at + 1), "here");
        let out = render(&[d], &src, TextOptions { color: false });
        assert!(out.len() < 2000, "{out}");
        assert!(out.contains("excerpt"), "{out}");
        let src = SourceFile::new("u", "aé😀b");
        for (a, b) in [(2, 3), (3, 5), (0, 99), (99, 100)] {
            let _ = render(
                &[Diagnostic::new(Code::UnexpectedChar, Span::new(a, b), "x")],
                &src,
                TextOptions { color: false },
            );
        }
    }
}
