//! Any bytes through the whole program checker (`check_bytes`, default options).
//!
//! Invariants:
//! - `check_bytes` never panics;
//! - a `CheckedProgram` comes out exactly when there is no error diagnostic;
//! - for UTF-8 input, every diagnostic span (primary and secondary) lies within the text and
//!   on character boundaries (so renderers can slice it); for other input, the one diagnostic
//!   lies within the lossily decoded text `check_bytes` returns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanovm::check::{Options, check_bytes};
use nanovm::diagnostics::{Diagnostic, has_errors};

fn check_spans(text: &str, d: &Diagnostic) {
    let len = text.len();
    let spans = std::iter::once(d.span).chain(d.labels.iter().map(|l| l.span));
    for s in spans {
        assert!(
            s.start <= s.end && s.end <= len,
            "span {s:?} outside the text of {len} bytes: {d:?}\ntext: {text:?}"
        );
        assert!(
            text.is_char_boundary(s.start) && text.is_char_boundary(s.end),
            "span {s:?} not on char boundaries: {d:?}\ntext: {text:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let (report, lossy) = check_bytes(data, &Options::default());

    assert_eq!(
        report.checked.is_some(),
        !has_errors(&report.diagnostics),
        "checked program present iff no errors: {:?}",
        report.diagnostics
    );
    if report.checked.is_some() {
        assert!(
            report.graph.is_some(),
            "a checked program without a graph view"
        );
    }

    match (std::str::from_utf8(data), lossy) {
        (Ok(text), None) => {
            for d in &report.diagnostics {
                check_spans(text, d);
            }
            if let Some(g) = &report.graph {
                for e in &g.edges {
                    assert!(
                        e.from < g.steps.len() && e.to < g.steps.len(),
                        "edge {e:?} outside {} steps",
                        g.steps.len()
                    );
                }
            }
        }
        (Ok(_), Some(_)) => {
            // Too large: refused before decoding, one diagnostic at offset 0.
            assert!(report.checked.is_none() && report.diagnostics.len() == 1);
        }
        (Err(_), Some(text)) => {
            assert!(report.checked.is_none());
            for d in &report.diagnostics {
                let s = d.span;
                assert!(s.start <= s.end && s.end <= text.len(), "{d:?}");
            }
        }
        (Err(_), None) => panic!("invalid UTF-8 checked as text"),
    }
});
