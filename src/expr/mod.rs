//! The condition language: lex → parse → type → compile → verify → run.
//!
//! [`analyze`] runs the whole front end and returns every diagnostic of one condition plus,
//! when there is no error, a [`Condition`]: verified bytecode that [`Condition::eval`] runs in
//! the VM. The stages are public for tests, fuzzing and the program checker.

pub mod ast;
pub mod bytecode;
pub mod compile;
pub mod interp;
pub mod lexer;
pub mod names;
pub mod parser;
pub mod types;
pub mod value;
pub mod vm;

use crate::diagnostics::{Code, Diagnostic, has_errors};
use crate::source::Span;
use ast::Expr;
use bytecode::Verified;
use names::Scope;
use types::{Binding, NameKind, Ran, Type, TypeEnv};
use vm::{FromScope, Outcome, RuntimeError};

/// Input limits of one condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of condition text.
    pub max_len: usize,
    /// Open parentheses plus stacked `not`s.
    pub max_depth: usize,
    /// Operators (`and or not == != < <= > >= in contains`).
    pub max_operators: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_len: 4096,
            max_depth: 64,
            max_operators: 256,
        }
    }
}

/// Lex and parse; every syntax and limit diagnostic, sorted by position.
pub fn parse(src: &str, limits: &Limits) -> (Option<Expr>, Vec<Diagnostic>) {
    let lexed = lexer::lex(src, limits);
    let mut diags = lexed.diagnostics;
    if lexed.limit_exceeded {
        return (None, diags);
    }
    if lexed.tokens.is_empty() {
        if diags.is_empty() {
            diags.push(
                Diagnostic::new(Code::EmptyCondition, Span::point(0), "empty condition")
                    .with_label(if src.is_empty() {
                        "a condition needs at least one value"
                    } else {
                        "only whitespace"
                    })
                    .with_help("write a comparison such as `$ready == True`"),
            );
        }
        return (None, diags);
    }
    let (expr, parse_diags) = parser::parse(src, &lexed.tokens);
    // A token the lexer already reported (and repaired) is not reported twice.
    let lexed_spans: Vec<Span> = diags.iter().map(|d| d.span).collect();
    diags.extend(
        parse_diags
            .into_iter()
            .filter(|d| !lexed_spans.contains(&d.span)),
    );
    diags.sort_by_key(|d| (d.span.start, d.span.end));
    (expr, diags)
}

/// A compiled, verified condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    chunk: Verified,
}

impl Condition {
    /// Evaluate against a scope (names resolved lazily, only on the path taken).
    #[inline]
    pub fn eval<S: Scope + ?Sized>(&self, scope: &S) -> Result<Outcome, RuntimeError> {
        vm::run(&self.chunk, &FromScope(scope))
    }

    pub fn chunk(&self) -> &Verified {
        &self.chunk
    }

    /// Exact static cost: instructions on the longest path.
    pub fn cost(&self) -> u32 {
        self.chunk.cost()
    }

    pub fn disassemble(&self) -> String {
        bytecode::disassemble(&self.chunk)
    }
}

/// Everything the front end learned about one condition.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub ast: Option<Expr>,
    /// Errors and warnings, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
    /// Present exactly when there is no error.
    pub condition: Option<Condition>,
    /// Every value read has a fully known type.
    pub fully_known: bool,
}

/// Lex, parse, type-check, compile and verify one condition.
pub fn analyze(src: &str, env: &TypeEnv, limits: &Limits) -> Analysis {
    let (ast, diagnostics) = parse(src, limits);
    finish(src, ast, diagnostics, env)
}

/// [`analyze`], with the type environment built from the parsed tree (so a caller can bind
/// just the names the condition uses).
pub fn analyze_with(
    src: &str,
    limits: &Limits,
    env_for: impl FnOnce(&Expr) -> TypeEnv,
) -> Analysis {
    let (ast, diagnostics) = parse(src, limits);
    let env = ast.as_ref().map(env_for).unwrap_or_default();
    finish(src, ast, diagnostics, &env)
}

fn finish(
    src: &str,
    ast: Option<Expr>,
    mut diagnostics: Vec<Diagnostic>,
    env: &TypeEnv,
) -> Analysis {
    let mut fully_known = false;
    let mut condition = None;
    if let Some(expr) = &ast {
        let report = types::check(expr, env);
        fully_known = report.fully_known;
        diagnostics.extend(report.diagnostics);
        diagnostics.sort_by_key(|d| (d.span.start, d.span.end));
        if !has_errors(&diagnostics) {
            match compile::compile(expr) {
                Ok(chunk) => condition = Some(Condition { chunk }),
                Err(e) => diagnostics.push(
                    Diagnostic::new(
                        Code::TooLong,
                        Span::new(0, src.len()),
                        "condition is too large to compile",
                    )
                    .with_note(e.to_string()),
                ),
            }
        }
    }
    Analysis {
        ast,
        diagnostics,
        condition,
        fully_known,
    }
}

/// The class of the first error, as `nanovm eval --format json` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    Syntax,
    Type,
    Limit,
    Runtime,
}

pub fn error_class(code: Code) -> ErrorClass {
    match code.as_str().get(..4) {
        Some("NV01") => ErrorClass::Syntax,
        Some("NV02") => ErrorClass::Type,
        Some("NV03") => ErrorClass::Limit,
        _ if code == Code::FuelExhausted => ErrorClass::Limit,
        _ => ErrorClass::Runtime,
    }
}

/// The class of a set of diagnostics: limits first, then syntax, then types.
pub fn class_of(diags: &[Diagnostic]) -> Option<ErrorClass> {
    let classes: Vec<ErrorClass> = diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| error_class(d.code))
        .collect();
    [
        ErrorClass::Limit,
        ErrorClass::Syntax,
        ErrorClass::Type,
        ErrorClass::Runtime,
    ]
    .into_iter()
    .find(|c| classes.contains(c))
}

/// A run-time error as a diagnostic at its operator's span.
pub fn runtime_diagnostic(err: &RuntimeError) -> Diagnostic {
    match err {
        RuntimeError::Type { op, mismatch, span } => {
            let (l, r) = (mismatch.left, mismatch.right);
            let d = Diagnostic::new(
                Code::RuntimeType,
                *span,
                format!("`{}` is not defined for ({l}, {r})", op.as_str()),
            );
            let membership = matches!(op, value::CmpKind::In | value::CmpKind::NotIn);
            let d = if membership {
                d.with_label(format!("`{l}` in `{r}` fails at run time"))
            } else {
                d.with_label(format!("`{l}` and `{r}` cannot be ordered"))
            };
            d.with_help(if l == "null" || r == "null" {
                "a missing value reads as `None`; test `$x != None and …` first"
            } else if membership {
                "`in` tests a substring of a string (both strings), an element of a list or a key of an object"
            } else {
                "ordering is defined between numbers, between strings and between lists; compare values of one kind"
            })
        }
        RuntimeError::FuelExhausted { used, span } => Diagnostic::new(
            Code::FuelExhausted,
            *span,
            format!(
                "fuel exhausted after {used} instruction{}",
                if *used == 1 { "" } else { "s" }
            ),
        )
        .with_label("evaluation stopped here")
        .with_help("the fuel limit is below this condition's static cost; raise it"),
        RuntimeError::Internal { pc } => Diagnostic::new(
            Code::FuelExhausted,
            Span::default(),
            format!("internal VM error at instruction {pc}"),
        ),
    }
}

/// The type environment of a conformance-shaped context: its step ids (steps that ran) and
/// data keys, all `any`; unknown names are allowed (they read `None`).
pub fn env_from_context(ctx: &names::Context) -> TypeEnv {
    let mut env = TypeEnv::new();
    for k in ctx.data.keys() {
        env.bind(
            k.clone(),
            Binding {
                kind: NameKind::Context,
                ty: Type::Any,
                ran: Ran::Always,
            },
        );
    }
    for k in ctx.step_outputs.keys() {
        env.bind(
            k.clone(),
            Binding {
                kind: NameKind::Step,
                ty: Type::Any,
                ran: Ran::Always,
            },
        );
    }
    env
}
