//! Condition-language benchmarks, mirroring the reference's `expr_eval` scenario
//! (`/work/shared/bench/scenarios/expr_eval.json`, `bench_ref.py --only expr`).
//!
//! * `expr/compile/<i>`, `expr/compile_all5`: [`analyze`] (lex + parse + check + compile +
//!   verify) of each expression; the type environment is built once, outside the loop.
//! * `expr/eval/<i>`, `expr/eval_all5`: [`Condition::eval`], `$paths` resolved in the loop
//!   (compare with the reference's `expr_eval_preparsed`).
//! * `expr/eval_resolved_all5`: the VM over slots resolved ahead of time.
//! * `expr/interp_all5`: the AST interpreter, for reference.
//! * `expr/parse_eval_all5`: `analyze` + `eval` per op (compare with the reference's
//!   `expr_eval`, which parses on every call).
//! * `expr/native_all5`, `expr/native_resolved_all5`: the five conditions written by hand in
//!   Rust over the same context (names looked up in the loop, or beforehand). Not nanovm: a
//!   floor for what any evaluator of these conditions can cost on this machine.
//!
//! `*_all5` variants time one batch of all five expressions (round robin) per iteration and
//! report throughput as 5 elements, so criterion's `elem/s` is directly ops/s and
//! `time / 5` is the per-op time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nanovm::expr::names::Context;
use nanovm::expr::types::TypeEnv;
use nanovm::expr::{Condition, Limits, analyze, env_from_context, interp, vm};
use std::hint::black_box;
use std::time::Duration;

/// The reference's five expressions. The fifth, `$a >= 10 or $b != 'x' and $c < 3`, is
/// rejected by nanovm on purpose (mixing `and`/`or` without parentheses is NV0110), so it is
/// benchmarked with the reference's own strictly left-to-right grouping made explicit:
/// `($a >= 10 or $b != 'x') and $c < 3` = (F or F) and T = False.
const EXPRS: [&str; 5] = [
    "$classify.output == 'yes'",
    "$amount > 100 and $tier == 'gold'",
    "'urgent' in $ticket.output.tags",
    "not $flag",
    "($a >= 10 or $b != 'x') and $c < 3",
];

const EXPECTED: [bool; 5] = [true, true, true, true, false];

/// The reference's flat context in nanovm's shape: the reference wraps each step output as
/// `{"output": v}`; here `classify` and `ticket` are step outputs (so `$classify.output` is
/// the step's output itself) and the rest is data.
const CONTEXT: &str = r#"{
    "step_outputs": {
        "classify": "yes",
        "ticket": {"tags": ["urgent", "billing"], "priority": 2}
    },
    "data": {"amount": 250, "tier": "gold", "flag": false, "a": 7, "b": "x", "c": 2}
}"#;

struct Fixture {
    ctx: Context,
    env: TypeEnv,
    limits: Limits,
    conds: Vec<Condition>,
    asts: Vec<nanovm::expr::ast::Expr>,
}

fn fixture() -> Fixture {
    let ctx: Context = serde_json::from_str(CONTEXT).expect("context parses");
    let env = env_from_context(&ctx);
    let limits = Limits::default();
    let mut conds = Vec::new();
    let mut asts = Vec::new();
    for src in EXPRS {
        let a = analyze(src, &env, &limits);
        assert!(
            a.diagnostics.is_empty(),
            "{src}: unexpected diagnostics {:?}",
            a.diagnostics
        );
        conds.push(a.condition.expect("compiles"));
        asts.push(a.ast.expect("parses"));
    }

    // Every path must give the reference's results.
    let lazy: Vec<bool> = conds.iter().map(|c| c.eval(&ctx).unwrap().value).collect();
    assert_eq!(lazy, EXPECTED, "Condition::eval");
    let resolved: Vec<bool> = conds
        .iter()
        .map(|c| {
            let slots = vm::resolve_slots(c.chunk(), &ctx);
            vm::run(c.chunk(), &vm::Resolved(&slots)).unwrap().value
        })
        .collect();
    assert_eq!(resolved, EXPECTED, "vm::run over resolved slots");
    let interpreted: Vec<bool> = asts
        .iter()
        .map(|e| interp::eval(e, &ctx).unwrap())
        .collect();
    assert_eq!(interpreted, EXPECTED, "interp::eval");
    let fresh: Vec<bool> = EXPRS
        .iter()
        .map(|src| {
            analyze(src, &env, &limits)
                .condition
                .unwrap()
                .eval(&ctx)
                .unwrap()
                .value
        })
        .collect();
    assert_eq!(fresh, EXPECTED, "analyze + eval");

    Fixture {
        ctx,
        env,
        limits,
        conds,
        asts,
    }
}

fn bench_compile(c: &mut Criterion) {
    let f = fixture();
    let mut g = c.benchmark_group("expr/compile");
    g.throughput(Throughput::Elements(1));
    for (i, src) in EXPRS.iter().enumerate() {
        g.bench_function(i.to_string(), |b| {
            b.iter(|| analyze(black_box(src), &f.env, &f.limits));
        });
    }
    g.finish();

    let mut g = c.benchmark_group("expr");
    g.throughput(Throughput::Elements(EXPRS.len() as u64));
    g.bench_function("compile_all5", |b| {
        b.iter(|| {
            for src in EXPRS {
                black_box(analyze(black_box(src), &f.env, &f.limits));
            }
        });
    });
    g.finish();
}

fn bench_eval(c: &mut Criterion) {
    let f = fixture();
    let mut g = c.benchmark_group("expr/eval");
    g.throughput(Throughput::Elements(1));
    for (i, cond) in f.conds.iter().enumerate() {
        g.bench_function(i.to_string(), |b| {
            b.iter(|| black_box(cond).eval(black_box(&f.ctx)).unwrap().value);
        });
    }
    g.finish();

    let mut g = c.benchmark_group("expr");
    g.throughput(Throughput::Elements(EXPRS.len() as u64));
    g.bench_function("eval_all5", |b| {
        b.iter(|| {
            for cond in &f.conds {
                black_box(black_box(cond).eval(black_box(&f.ctx)).unwrap().value);
            }
        });
    });

    let slots: Vec<Vec<&serde_json::Value>> = f
        .conds
        .iter()
        .map(|c| vm::resolve_slots(c.chunk(), &f.ctx))
        .collect();
    g.bench_function("eval_resolved_all5", |b| {
        b.iter(|| {
            for (cond, s) in f.conds.iter().zip(&slots) {
                let r = vm::run(black_box(cond).chunk(), &vm::Resolved(black_box(s)));
                black_box(r.unwrap().value);
            }
        });
    });

    g.bench_function("interp_all5", |b| {
        b.iter(|| {
            for e in &f.asts {
                black_box(interp::eval(black_box(e), black_box(&f.ctx)).unwrap());
            }
        });
    });

    g.bench_function("parse_eval_all5", |b| {
        b.iter(|| {
            for src in EXPRS {
                let a = analyze(black_box(src), &f.env, &f.limits);
                black_box(a.condition.unwrap().eval(black_box(&f.ctx)).unwrap().value);
            }
        });
    });
    g.finish();
}

/// The five conditions as Rust, names looked up in the context like `Condition::eval` does
/// (a step output first, then data). Python's rules where they matter: `==` on a string is
/// string equality, `in` on a list is membership.
fn native(ctx: &Context) -> [bool; 5] {
    use serde_json::Value;
    let root = |name: &str| ctx.step_outputs.get(name).or_else(|| ctx.data.get(name));
    let int = |name: &str| root(name).and_then(Value::as_i64);
    let text = |name: &str| root(name).and_then(Value::as_str);
    [
        text("classify") == Some("yes"),
        int("amount").is_some_and(|a| a > 100) && text("tier") == Some("gold"),
        root("ticket")
            .and_then(|t| t.get("tags"))
            .and_then(Value::as_array)
            .is_some_and(|tags| tags.iter().any(|t| t.as_str() == Some("urgent"))),
        !root("flag").and_then(Value::as_bool).unwrap_or(false),
        (int("a").is_some_and(|a| a >= 10) || text("b") != Some("x"))
            && int("c").is_some_and(|c| c < 3),
    ]
}

/// The values the five conditions read, looked up once.
struct Resolved<'a> {
    classify: &'a str,
    amount: i64,
    tier: &'a str,
    tags: &'a [serde_json::Value],
    flag: bool,
    a: i64,
    b: &'a str,
    c: i64,
}

fn native_resolved(r: &Resolved<'_>) -> [bool; 5] {
    [
        r.classify == "yes",
        r.amount > 100 && r.tier == "gold",
        r.tags.iter().any(|t| t.as_str() == Some("urgent")),
        !r.flag,
        (r.a >= 10 || r.b != "x") && r.c < 3,
    ]
}

fn bench_floor(c: &mut Criterion) {
    let f = fixture();
    assert_eq!(native(&f.ctx), EXPECTED);
    let v = |name: &str| {
        f.ctx
            .step_outputs
            .get(name)
            .or_else(|| f.ctx.data.get(name))
            .unwrap()
    };
    let r = Resolved {
        classify: v("classify").as_str().unwrap(),
        amount: v("amount").as_i64().unwrap(),
        tier: v("tier").as_str().unwrap(),
        tags: v("ticket")["tags"].as_array().unwrap(),
        flag: v("flag").as_bool().unwrap(),
        a: v("a").as_i64().unwrap(),
        b: v("b").as_str().unwrap(),
        c: v("c").as_i64().unwrap(),
    };
    assert_eq!(native_resolved(&r), EXPECTED);
    let mut g = c.benchmark_group("expr");
    g.throughput(Throughput::Elements(EXPRS.len() as u64));
    g.bench_function("native_all5", |b| {
        b.iter(|| black_box(native(black_box(&f.ctx))));
    });
    g.bench_function("native_resolved_all5", |b| {
        b.iter(|| black_box(native_resolved(black_box(&r))));
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_compile, bench_eval, bench_floor
}
criterion_main!(benches);
