//! Differential: a generated well-formed condition and context, VM vs AST interpreter.
//!
//! The input bytes drive a small recursive generator (`arbitrary::Unstructured`) of a
//! condition over a fixed set of names and literals, printed to text by this file's own
//! printer (parenthesizing nested logic and non-atomic comparison operands), plus a context
//! whose roots hold small nested JSON values. The text is analyzed with
//! `env_from_context(&ctx)`. Invariants:
//! - generated text never has a syntax (NV01xx) error;
//! - when a condition results, `Condition::eval` (lazy slots), `vm::run` with slots resolved
//!   up front, and `interp::eval` give exactly the same `Result` (value or `RuntimeError`,
//!   span included), and `fuel_used <= cost()`.
#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use nanovm::expr::names::Context;
use nanovm::expr::vm::{self, Resolved, RuntimeError};
use nanovm::expr::{Limits, analyze, env_from_context, interp};
use serde_json::{Map, Number, Value};
use std::fmt::Write as _;

const NAMES: &[&str] = &[
    "a",
    "b",
    "n",
    "s",
    "s.output",
    "s.output.x",
    "s.x",
    "s.output.output",
    "s.output.tags",
    "l",
    "l.0",
    "l.1",
    "l.output.0",
    "d",
    "d.k",
    "d.output.k",
    "d.x.k",
    "missing",
    "missing.output",
];

const ROOTS: &[&str] = &["a", "b", "n", "s", "l", "d"];

const STRINGS: &[&str] = &[
    "",
    "a",
    "b",
    "ab",
    "abc",
    "yes",
    "no",
    "k",
    "x",
    "output",
    "tags",
    "0",
    "1",
    "it's \"q\" \\ \n\t",
    "Málaga €",
    "\u{0}",
    "\u{7f}\u{1f600}",
];

const KEYS: &[&str] = &["k", "x", "output", "tags", "0", "1", "a", ""];

#[derive(Debug, Clone)]
enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Debug, Clone, Copy)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Contains,
}

impl CmpOp {
    const ALL: [CmpOp; 9] = [
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
        CmpOp::In,
        CmpOp::NotIn,
        CmpOp::Contains,
    ];

    fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::In => "in",
            CmpOp::NotIn => "not in",
            CmpOp::Contains => "contains",
        }
    }
}

#[derive(Debug, Clone)]
enum E {
    Lit(Lit),
    Var(&'static str),
    Not(Box<E>),
    Cmp(CmpOp, Box<E>, Box<E>),
    /// `true` is `and`.
    Logic(bool, Box<E>, Box<E>),
    /// Redundant parentheses.
    Paren(Box<E>),
}

const MAX_DEPTH: u32 = 7;

fn gen_float(u: &mut Unstructured<'_>) -> Result<f64> {
    Ok(match u.int_in_range(0u8..=5)? {
        0 => f64::from(u.int_in_range(-40i32..=40)?) / 4.0,
        1 => -0.0,
        2 => 0.0,
        3 => {
            let f = f64::arbitrary(u)?;
            if f.is_finite() { f } else { 1.5 }
        }
        4 => i64::arbitrary(u)? as f64,
        _ => 9_223_372_036_854_775_808.0,
    })
}

fn gen_int(u: &mut Unstructured<'_>) -> Result<i64> {
    Ok(match u.int_in_range(0u8..=3)? {
        0 | 1 => i64::from(u.int_in_range(-3i8..=4)?),
        2 => *u.choose(&[i64::MIN, i64::MAX, i64::MIN + 1, i64::MAX - 1])?,
        _ => i64::arbitrary(u)?,
    })
}

fn gen_lit(u: &mut Unstructured<'_>) -> Result<Lit> {
    Ok(match u.int_in_range(0u8..=5)? {
        0 => Lit::Null,
        1 => Lit::Bool(bool::arbitrary(u)?),
        2 => Lit::Int(gen_int(u)?),
        3 => Lit::Float(gen_float(u)?),
        4 => Lit::Str((*u.choose(STRINGS)?).to_owned()),
        _ => {
            let s = String::arbitrary(u)?;
            Lit::Str(s.chars().take(12).collect())
        }
    })
}

fn gen_expr(u: &mut Unstructured<'_>, depth: u32) -> Result<E> {
    let leaf_only = depth >= MAX_DEPTH || u.is_empty();
    let pick = if leaf_only {
        u.int_in_range(0u8..=1)?
    } else {
        u.int_in_range(0u8..=6)?
    };
    Ok(match pick {
        0 => E::Lit(gen_lit(u)?),
        1 => E::Var(u.choose(NAMES)?),
        2 => E::Not(Box::new(gen_expr(u, depth + 1)?)),
        3 | 4 => E::Cmp(
            *u.choose(&CmpOp::ALL)?,
            Box::new(gen_expr(u, depth + 1)?),
            Box::new(gen_expr(u, depth + 1)?),
        ),
        5 => E::Logic(
            bool::arbitrary(u)?,
            Box::new(gen_expr(u, depth + 1)?),
            Box::new(gen_expr(u, depth + 1)?),
        ),
        _ => E::Paren(Box::new(gen_expr(u, depth + 1)?)),
    })
}

fn gen_value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let max = if depth >= 3 { 5 } else { 7 };
    Ok(match u.int_in_range(0u8..=max)? {
        0 => Value::Null,
        1 => Value::Bool(bool::arbitrary(u)?),
        2 => Value::from(gen_int(u)?),
        3 => Number::from_f64(gen_float(u)?).map_or(Value::Null, Value::Number),
        4 => Value::from(*u.choose(&[u64::MAX, 1u64 << 63, (1u64 << 63) + 1])?),
        5 => Value::from(*u.choose(STRINGS)?),
        6 => {
            let n = u.int_in_range(0usize..=3)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(gen_value(u, depth + 1)?);
            }
            Value::Array(v)
        }
        _ => {
            let n = u.int_in_range(0usize..=3)?;
            let mut m = Map::new();
            for _ in 0..n {
                let k = *u.choose(KEYS)?;
                m.insert(k.to_owned(), gen_value(u, depth + 1)?);
            }
            Value::Object(m)
        }
    })
}

fn gen_context(u: &mut Unstructured<'_>) -> Result<Context> {
    let mut ctx = Context::default();
    for root in ROOTS {
        match u.int_in_range(0u8..=2)? {
            0 => {
                ctx.step_outputs
                    .insert((*root).to_owned(), gen_value(u, 0)?);
            }
            1 => {
                ctx.data.insert((*root).to_owned(), gen_value(u, 0)?);
            }
            _ => {}
        }
        // Occasionally the same root in both (step outputs win).
        if u.ratio(1u8, 8u8)? {
            ctx.data.insert((*root).to_owned(), gen_value(u, 0)?);
        }
    }
    Ok(ctx)
}

/// Spelling choices of the printer.
#[derive(Debug, Clone, Copy, Arbitrary)]
struct Style {
    lower_keywords: bool,
    double_quotes: bool,
    unicode_escapes: bool,
    ws: u8,
    not_in_spaces: u8,
}

impl Style {
    fn ws(&self) -> &'static str {
        match self.ws % 5 {
            0 | 1 => " ",
            2 => "  ",
            3 => "\t",
            _ => "\n ",
        }
    }
}

fn print_lit(out: &mut String, l: &Lit, st: Style) {
    match l {
        Lit::Null => out.push_str(if st.lower_keywords { "null" } else { "None" }),
        Lit::Bool(true) => out.push_str(if st.lower_keywords { "true" } else { "True" }),
        Lit::Bool(false) => out.push_str(if st.lower_keywords { "false" } else { "False" }),
        Lit::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Lit::Float(x) => {
            // Rust's `Display` for f64 never uses an exponent.
            let s = format!("{x}");
            out.push_str(&s);
            if !s.contains('.') {
                out.push_str(".0");
            }
        }
        Lit::Str(s) => {
            let q = if st.double_quotes { '"' } else { '\'' };
            out.push(q);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == q => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if c.is_control() || (st.unicode_escapes && !c.is_ascii()) => {
                        let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
                    }
                    c => out.push(c),
                }
            }
            out.push(q);
        }
    }
}

fn is_atom(e: &E) -> bool {
    matches!(e, E::Lit(_) | E::Var(_) | E::Paren(_))
}

/// Print in `logic` position (the whole condition, or inside parentheses).
fn print(out: &mut String, e: &E, st: Style) {
    let ws = st.ws();
    match e {
        E::Lit(l) => print_lit(out, l, st),
        E::Var(p) => {
            out.push('$');
            out.push_str(p);
        }
        E::Paren(inner) => {
            out.push('(');
            print(out, inner, st);
            out.push(')');
        }
        E::Not(inner) => {
            out.push_str("not");
            out.push_str(ws);
            if matches!(**inner, E::Logic(..)) {
                out.push('(');
                print(out, inner, st);
                out.push(')');
            } else {
                print(out, inner, st);
            }
        }
        E::Cmp(op, l, r) => {
            print_operand(out, l, st);
            out.push_str(ws);
            match op {
                CmpOp::NotIn => {
                    out.push_str("not");
                    out.push_str(if st.not_in_spaces % 2 == 0 { " " } else { ws });
                    out.push_str("in");
                }
                _ => out.push_str(op.as_str()),
            }
            out.push_str(ws);
            print_operand(out, r, st);
        }
        E::Logic(and, l, r) => {
            match &**l {
                E::Logic(lop, ..) if lop != and => {
                    out.push('(');
                    print(out, l, st);
                    out.push(')');
                }
                _ => print(out, l, st),
            }
            out.push_str(ws);
            out.push_str(if *and { "and" } else { "or" });
            out.push_str(ws);
            if matches!(**r, E::Logic(..)) {
                out.push('(');
                print(out, r, st);
                out.push(')');
            } else {
                print(out, r, st);
            }
        }
    }
}

/// Print as a comparison operand: atoms bare, anything else in parentheses.
fn print_operand(out: &mut String, e: &E, st: Style) {
    if is_atom(e) {
        print(out, e, st);
    } else {
        out.push('(');
        print(out, e, st);
        out.push(')');
    }
}

fn generate(data: &[u8]) -> Result<(String, Context)> {
    let mut u = Unstructured::new(data);
    let e = gen_expr(&mut u, 0)?;
    let ctx = gen_context(&mut u)?;
    let st = Style::arbitrary(&mut u)?;
    let mut text = String::new();
    print(&mut text, &e, st);
    Ok((text, ctx))
}

fuzz_target!(|data: &[u8]| {
    let Ok((text, ctx)) = generate(data) else {
        return;
    };
    let analysis = analyze(&text, &env_from_context(&ctx), &Limits::default());
    if let Some(d) = analysis
        .diagnostics
        .iter()
        .find(|d| d.is_error() && d.code.as_str().starts_with("NV01"))
    {
        panic!("generated text has a syntax error: {text:?}\n{d:?}");
    }
    let Some(cond) = analysis.condition else {
        return;
    };
    let Some(ast) = analysis.ast else {
        panic!("condition without AST for {text:?}");
    };

    let lazy = cond.eval(&ctx);
    let values = vm::resolve_slots(cond.chunk(), &ctx);
    let eager = vm::run(cond.chunk(), &Resolved(&values));
    let oracle = interp::eval(&ast, &ctx);

    assert_eq!(
        lazy.map(|o| o.value),
        oracle,
        "VM != interpreter\ntext: {text:?}\ncontext: {ctx:?}\n{}",
        cond.disassemble()
    );
    assert_eq!(
        lazy, eager,
        "lazy vs resolved slots differ\ntext: {text:?}\ncontext: {ctx:?}"
    );
    match lazy {
        Ok(o) => assert!(
            o.fuel_used <= cond.cost(),
            "fuel {} > cost {} for {text:?}",
            o.fuel_used,
            cond.cost()
        ),
        Err(e @ (RuntimeError::FuelExhausted { .. } | RuntimeError::Internal { .. })) => {
            panic!("{e:?} at fuel = cost {} for {text:?}", cond.cost())
        }
        Err(RuntimeError::Type { .. }) => {}
    }
});
