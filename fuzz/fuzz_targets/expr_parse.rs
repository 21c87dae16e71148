//! Any bytes (decoded lossily as UTF-8) through the whole front end with the default limits.
//!
//! Invariants:
//! - `analyze` never panics;
//! - input longer than `max_len` gives an NV0301 error, no AST and no condition;
//! - every diagnostic span (primary and secondary) lies within the input;
//! - a condition is present exactly when there is no error diagnostic;
//! - a condition evaluates without panicking against an empty context and a fixed one, uses
//!   no more fuel than its static cost, never reports `FuelExhausted`/`Internal` at fuel = cost,
//!   and agrees with the AST interpreter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanovm::diagnostics::{Diagnostic, has_errors};
use nanovm::expr::names::Context;
use nanovm::expr::types::TypeEnv;
use nanovm::expr::vm::RuntimeError;
use nanovm::expr::{Condition, Limits, analyze, ast::Expr, interp};
use serde_json::json;
use std::sync::OnceLock;

fn fixed_context() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        serde_json::from_value(json!({
            "step_outputs": {
                "s": {"output": "inner", "x": 1, "tags": ["a", "b"]},
                "classify": "yes",
                "l": [10, 2.5, "x", null, [1]],
                "n": 18446744073709551615u64
            },
            "data": {
                "a": true,
                "b": 0,
                "d": {"k": "v", "output": {"k": -1.5}},
                "str": "hello wörld",
                "e": {},
                "z": null
            }
        }))
        .unwrap_or_default()
    })
}

fn check_spans(src: &str, d: &Diagnostic) {
    let len = src.len();
    let s = d.span;
    assert!(
        s.start <= s.end && s.end <= len,
        "diagnostic span {s:?} outside input of {len} bytes: {d:?}\ninput: {src:?}"
    );
    for l in &d.labels {
        let s = l.span;
        assert!(
            s.start <= s.end && s.end <= len,
            "secondary span {s:?} outside input of {len} bytes: {d:?}\ninput: {src:?}"
        );
    }
}

fn check_eval(src: &str, cond: &Condition, ast: &Expr, ctx: &Context) {
    let vm = cond.eval(ctx);
    match &vm {
        Ok(o) => assert!(
            o.fuel_used <= cond.cost(),
            "fuel {} > cost {} for {src:?}",
            o.fuel_used,
            cond.cost()
        ),
        Err(e @ (RuntimeError::FuelExhausted { .. } | RuntimeError::Internal { .. })) => {
            panic!("{e:?} at fuel = cost {} for {src:?}", cond.cost())
        }
        Err(RuntimeError::Type { .. }) => {}
    }
    let oracle = interp::eval(ast, ctx);
    assert_eq!(
        vm.map(|o| o.value),
        oracle,
        "VM != interpreter for {src:?}\n{}",
        cond.disassemble()
    );
}

fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data);
    let src: &str = &src;
    let limits = Limits::default();
    let a = analyze(src, &TypeEnv::new(), &limits);

    for d in &a.diagnostics {
        check_spans(src, d);
    }

    if src.len() > limits.max_len {
        assert!(
            a.diagnostics
                .iter()
                .any(|d| d.is_error() && d.code.as_str() == "NV0301"),
            "no NV0301 for {} bytes: {:?}",
            src.len(),
            a.diagnostics
        );
        assert!(a.condition.is_none(), "condition for over-long input");
        assert!(a.ast.is_none(), "AST for over-long input");
        return;
    }

    assert_eq!(
        a.condition.is_some(),
        !has_errors(&a.diagnostics),
        "condition present iff no errors, for {src:?}: {:?}",
        a.diagnostics
    );

    if let Some(cond) = &a.condition {
        let Some(ast) = &a.ast else {
            panic!("condition without AST for {src:?}");
        };
        check_eval(src, cond, ast, &Context::default());
        check_eval(src, cond, ast, fixed_context());
    }
});
