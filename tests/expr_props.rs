//! Property tests of the condition language:
//! - printing an AST and parsing it back gives the same AST;
//! - the VM and the AST interpreter agree on every well-formed expression and context;
//! - fuel used never exceeds the chunk's static cost;
//! - an expression accepted with fully known types never fails with a type error at run time;
//! - arbitrary input never panics the front end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use nanovm::expr::ast::{CmpOp, Expr, ExprKind, Lit, LogicOp, Path};
use nanovm::expr::names::Context;
use nanovm::expr::types::{Binding, NameKind, Ran, Type, TypeEnv};
use nanovm::expr::vm::RuntimeError;
use nanovm::expr::{Limits, analyze, env_from_context, interp, parse};
use nanovm::source::Span;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn e(kind: ExprKind) -> Expr {
    Expr::new(kind, Span::default())
}

fn lit() -> impl Strategy<Value = Lit> {
    prop_oneof![
        Just(Lit::Null),
        any::<bool>().prop_map(Lit::Bool),
        prop_oneof![-3i64..4, any::<i64>()].prop_map(Lit::Int),
        prop_oneof![(-40i32..40).prop_map(|x| f64::from(x) / 4.0), -1e6f64..1e6]
            .prop_map(Lit::Float),
        prop_oneof![
            Just(String::new()),
            Just("yes".to_owned()),
            Just("a".to_owned()),
            Just("it's \"q\" \\ \n\t".to_owned()),
            Just("Málaga €".to_owned()),
            "[a-c]{0,3}",
        ]
        .prop_map(Lit::Str),
    ]
}

fn var(names: &'static [&'static str]) -> impl Strategy<Value = Path> {
    proptest::sample::select(names).prop_map(Path::parse)
}

const NAMES: &[&str] = &[
    "a",
    "b",
    "n",
    "s",
    "s.output",
    "s.output.x",
    "s.x",
    "s.output.output",
    "l",
    "l.0",
    "l.1",
    "d",
    "d.k",
    "d.output.k",
    "missing",
    "t",
    "t.output.tags",
];

fn cmp_op() -> impl Strategy<Value = CmpOp> {
    proptest::sample::select(vec![
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
        CmpOp::In,
        CmpOp::NotIn,
        CmpOp::Contains,
    ])
}

fn expr_with(leaf: BoxedStrategy<Expr>) -> impl Strategy<Value = Expr> {
    leaf.prop_recursive(5, 40, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|x| e(ExprKind::Not(Box::new(x)))),
            (cmp_op(), inner.clone(), inner.clone()).prop_map(|(op, l, r)| e(ExprKind::Cmp(
                op,
                Box::new(l),
                Box::new(r)
            ))),
            (
                prop_oneof![Just(LogicOp::And), Just(LogicOp::Or)],
                inner.clone(),
                inner
            )
                .prop_map(|(op, l, r)| e(ExprKind::Logic(
                    op,
                    Box::new(l),
                    Box::new(r)
                ))),
        ]
    })
}

fn expr() -> impl Strategy<Value = Expr> {
    expr_with(
        prop_oneof![
            lit().prop_map(|l| e(ExprKind::Lit(l))),
            var(NAMES).prop_map(|p| e(ExprKind::Var(p))),
        ]
        .boxed(),
    )
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..4).prop_map(Value::from),
        (-8i32..8).prop_map(|x| json!(f64::from(x) / 2.0)),
        prop_oneof![
            Just(""),
            Just("yes"),
            Just("a"),
            Just("abc"),
            Just("k"),
            Just("x")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::vec(
                (
                    prop_oneof![Just("k"), Just("x"), Just("output"), Just("tags")],
                    inner
                ),
                0..3
            )
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

fn context() -> impl Strategy<Value = Context> {
    let roots = ["a", "b", "n", "s", "l", "d", "t"];
    proptest::collection::vec((any::<u8>(), json_value()), roots.len()).prop_map(move |vals| {
        let mut step_outputs = Map::new();
        let mut data = Map::new();
        for (name, (pick, v)) in roots.iter().zip(vals) {
            match pick % 3 {
                0 => {
                    step_outputs.insert((*name).to_owned(), v);
                }
                1 => {
                    data.insert((*name).to_owned(), v);
                }
                _ => {}
            }
        }
        Context { step_outputs, data }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn print_then_parse_is_identity(x in expr()) {
        let text = x.to_string();
        let (parsed, diags) = parse(&text, &Limits::default());
        prop_assert!(diags.is_empty(), "{text}: {diags:#?}");
        let parsed = parsed.unwrap();
        prop_assert!(parsed.same_shape(&x), "{text}\n{parsed:#?}\n!=\n{x:#?}");
    }

    #[test]
    fn vm_matches_interpreter(x in expr(), ctx in context()) {
        let text = x.to_string();
        let analysis = analyze(&text, &env_from_context(&ctx), &Limits::default());
        if let Some(cond) = analysis.condition {
            let ast = analysis.ast.unwrap();
            let vm = cond.eval(&ctx);
            let oracle = interp::eval(&ast, &ctx);
            prop_assert_eq!(vm.map(|o| o.value), oracle, "{}", text);
            if let Ok(o) = vm {
                prop_assert!(o.fuel_used <= cond.cost(), "{text}: fuel {} > cost {}", o.fuel_used, cond.cost());
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,80}") {
        let a = analyze(&s, &TypeEnv::new(), &Limits::default());
        for d in &a.diagnostics {
            prop_assert!(d.span.start <= d.span.end && d.span.end <= s.len(), "{s:?}: {d:?}");
        }
        if let Some(cond) = a.condition {
            let out = cond.eval(&Context::default());
            if let Ok(o) = out {
                prop_assert!(o.fuel_used <= cond.cost());
            }
        }
    }

    #[test]
    fn token_soup_never_panics(parts in proptest::collection::vec(prop_oneof![
        Just("$a"), Just("$s.output.x"), Just("'x'"), Just("\"y\""), Just("1"), Just("-2.5"), Just("True"),
        Just("None"), Just("=="), Just("!="), Just("<"), Just(">="), Just("in"), Just("not"), Just("contains"),
        Just("and"), Just("or"), Just("("), Just(")"), Just(","), Just("lower"), Just("!"), Just("&&"),
        Just("="), Just(".5"), Just("'unterminated"), Just("\\"), Just("$"), Just("é"), Just(" ")
    ], 0..30)) {
        let s = parts.join(" ");
        let a = analyze(&s, &TypeEnv::new(), &Limits::default());
        prop_assert_eq!(a.condition.is_some(), !nanovm::diagnostics::has_errors(&a.diagnostics));
    }
}

// ---- soundness: fully known types never fail at run time with a type error ----------------

#[derive(Debug, Clone)]
enum Ty {
    Null,
    Bool,
    Int,
    Float,
    Str,
    YesNo,
    ListInt,
    ListStr,
    Rec,
}

fn ty() -> impl Strategy<Value = Ty> {
    proptest::sample::select(vec![
        Ty::Null,
        Ty::Bool,
        Ty::Int,
        Ty::Float,
        Ty::Str,
        Ty::YesNo,
        Ty::ListInt,
        Ty::ListStr,
        Ty::Rec,
    ])
}

fn to_type(t: &Ty) -> Type {
    match t {
        Ty::Null => Type::Null,
        Ty::Bool => Type::Bool,
        Ty::Int => Type::Int,
        Ty::Float => Type::Float,
        Ty::Str => Type::Str,
        Ty::YesNo => Type::Enum(std::sync::Arc::new(
            ["yes".to_owned(), "no".to_owned()].into_iter().collect(),
        )),
        Ty::ListInt => Type::List(Box::new(Type::Int)),
        Ty::ListStr => Type::List(Box::new(Type::Str)),
        Ty::Rec => Type::Record(
            [("a".to_owned(), Type::Int), ("b".to_owned(), Type::Str)]
                .into_iter()
                .collect(),
        ),
    }
}

fn value_of(t: &Ty) -> BoxedStrategy<Value> {
    match t {
        Ty::Null => Just(Value::Null).boxed(),
        Ty::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Ty::Int => (-3i64..4).prop_map(Value::from).boxed(),
        Ty::Float => (-8i32..8).prop_map(|x| json!(f64::from(x) / 2.0)).boxed(),
        Ty::Str => prop_oneof![Just(""), Just("a"), Just("yes"), Just("abc")]
            .prop_map(Value::from)
            .boxed(),
        Ty::YesNo => prop_oneof![Just("yes"), Just("no")]
            .prop_map(Value::from)
            .boxed(),
        Ty::ListInt => proptest::collection::vec((-2i64..3).prop_map(Value::from), 0..3)
            .prop_map(Value::Array)
            .boxed(),
        Ty::ListStr => proptest::collection::vec(
            prop_oneof![Just("a"), Just("yes")].prop_map(Value::from),
            0..3,
        )
        .prop_map(Value::Array)
        .boxed(),
        Ty::Rec => ((-2i64..3), prop_oneof![Just("a"), Just("b")])
            .prop_map(|(a, b)| json!({"a": a, "b": b}))
            .boxed(),
    }
}

const TYPED_NAMES: &[&str] = &[
    "x0",
    "x1",
    "x2",
    "x3",
    "x0.a",
    "x1.b",
    "x2.output",
    "x3.output.a",
];

fn typed_case() -> impl Strategy<Value = (Vec<Ty>, Vec<Value>, Expr)> {
    proptest::collection::vec(ty(), 4)
        .prop_flat_map(|tys| {
            let vals: Vec<BoxedStrategy<Value>> = tys.iter().map(value_of).collect();
            (Just(tys), vals)
        })
        .prop_flat_map(|(tys, vals)| {
            let leaf = prop_oneof![
                lit().prop_map(|l| e(ExprKind::Lit(l))),
                var(TYPED_NAMES).prop_map(|p| e(ExprKind::Var(p))),
            ]
            .boxed();
            (Just(tys), Just(vals), expr_with(leaf))
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn fully_known_types_never_fail_at_run_time((tys, vals, x) in typed_case()) {
        let mut env = TypeEnv::new();
        let mut data = Map::new();
        for (i, (t, v)) in tys.iter().zip(vals).enumerate() {
            let name = format!("x{i}");
            env.bind(name.clone(), Binding { kind: NameKind::Context, ty: to_type(t), ran: Ran::Always });
            data.insert(name, v);
        }
        let ctx = Context { step_outputs: Map::new(), data };
        let text = x.to_string();
        let analysis = analyze(&text, &env, &Limits::default());
        if let (Some(cond), true) = (analysis.condition, analysis.fully_known) {
            let out = cond.eval(&ctx);
            prop_assert!(
                !matches!(out, Err(RuntimeError::Type { .. })),
                "{text} accepted with types {tys:?} but failed: {out:?} in {ctx:?}"
            );
        }
    }
}
