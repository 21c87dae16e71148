//! The stack VM. It runs only [`Verified`] chunks, executes at most [`Verified::cost`]
//! instructions (fuel), never calls anything, and allocates nothing unless an expression
//! nests deeper than the inline stack.

use super::bytecode::{Op, Verified};
use super::names::{Scope, resolve};
use super::value::{CmpKind, Mismatch, NULL, bool_ref, compare, truthy};
use crate::source::Span;
use serde_json::Value;
use smallvec::SmallVec;

/// Where slot values come from.
pub trait Slots<'a> {
    fn slot(&self, chunk: &'a Verified, index: u16) -> &'a Value;
}

/// Resolve slots lazily from a scope with the one name-resolution rule.
#[derive(Debug)]
pub struct FromScope<'a, S: Scope + ?Sized>(pub &'a S);

impl<'a, S: Scope + ?Sized> Slots<'a> for FromScope<'a, S> {
    #[inline]
    fn slot(&self, chunk: &'a Verified, index: u16) -> &'a Value {
        match chunk.chunk().slots.get(usize::from(index)) {
            Some(path) => resolve(self.0, path),
            None => &NULL,
        }
    }
}

/// Slots resolved ahead of time, in slot order.
#[derive(Debug)]
pub struct Resolved<'a>(pub &'a [&'a Value]);

impl<'a> Slots<'a> for Resolved<'a> {
    #[inline]
    fn slot(&self, _: &'a Verified, index: u16) -> &'a Value {
        self.0.get(usize::from(index)).copied().unwrap_or(&NULL)
    }
}

/// Resolve every slot of a chunk up front (for [`Resolved`]).
pub fn resolve_slots<'a, S: Scope + ?Sized>(chunk: &Verified, scope: &'a S) -> Vec<&'a Value> {
    chunk
        .chunk()
        .slots
        .iter()
        .map(|p| resolve(scope, p))
        .collect()
}

/// A run-time failure of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error("`{op}` is not defined for ({left}, {right})", op = op.as_str(), left = mismatch.left, right = mismatch.right)]
    Type {
        op: CmpKind,
        mismatch: Mismatch,
        span: Span,
    },
    #[error("fuel exhausted after {used} instructions")]
    FuelExhausted { used: u32, span: Span },
    /// Unreachable for verified chunks; reported instead of panicking.
    #[error("internal VM error at instruction {pc}")]
    Internal { pc: usize },
}

/// The result of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub value: bool,
    pub fuel_used: u32,
}

/// Run a verified chunk with fuel = its static cost.
#[inline]
pub fn run<'a>(chunk: &'a Verified, slots: &impl Slots<'a>) -> Result<Outcome, RuntimeError> {
    run_with_fuel(chunk, slots, chunk.cost())
}

/// Run with an explicit fuel limit (instructions).
///
/// Forward-only jumps make [`Verified::cost`] an upper bound on the instructions any run
/// executes, so with at least that much fuel the per-instruction fuel check is compiled out.
#[inline]
pub fn run_with_fuel<'a>(
    chunk: &'a Verified,
    slots: &impl Slots<'a>,
    fuel: u32,
) -> Result<Outcome, RuntimeError> {
    if fuel >= chunk.cost() {
        exec::<false>(chunk, slots, fuel)
    } else {
        exec::<true>(chunk, slots, fuel)
    }
}

/// The interpreter loop. The top of the stack lives in `top` (a register); `below` holds the
/// rest and is touched only by expressions that need two values at once (a comparison of two
/// non-fused operands, or a logic result compared as a value).
#[inline]
fn exec<'a, const METERED: bool>(
    chunk: &'a Verified,
    slots: &impl Slots<'a>,
    fuel: u32,
) -> Result<Outcome, RuntimeError> {
    let c = chunk.chunk();
    let code = c.code.as_slice();
    let consts = c.consts.as_slice();
    let konst = |i: u16| consts.get(usize::from(i)).unwrap_or(&NULL);
    let type_err = |op, mismatch, pc: usize| RuntimeError::Type {
        op,
        mismatch,
        span: chunk.span_of(pc),
    };
    let mut top: &'a Value = &NULL;
    let mut depth = 0usize;
    let mut below: SmallVec<[&'a Value; 8]> = SmallVec::new();
    let mut pc = 0usize;
    let mut used = 0u32;
    // Push a value: the old top (if any) moves below.
    macro_rules! push {
        ($v:expr) => {{
            let v = $v;
            if depth > 0 {
                below.push(top);
            }
            top = v;
            depth += 1;
        }};
    }
    loop {
        if METERED && used >= fuel {
            return Err(RuntimeError::FuelExhausted {
                used,
                span: chunk.span_of(pc),
            });
        }
        used += 1;
        let Some(&op) = code.get(pc) else {
            return Err(RuntimeError::Internal { pc });
        };
        match op {
            Op::CmpSlotConst(k, s, i) => {
                let r =
                    compare(k, slots.slot(chunk, s), konst(i)).map_err(|m| type_err(k, m, pc))?;
                push!(bool_ref(r));
            }
            Op::JumpIfFalseOrPop(t) | Op::JumpIfTrueOrPop(t) => {
                if depth == 0 {
                    return Err(RuntimeError::Internal { pc });
                }
                if truthy(top) == matches!(op, Op::JumpIfTrueOrPop(_)) {
                    pc = usize::from(t);
                    continue;
                }
                depth -= 1;
                if depth > 0 {
                    top = below.pop().unwrap_or(&NULL);
                }
            }
            Op::Return => {
                if depth != 1 {
                    return Err(RuntimeError::Internal { pc });
                }
                return Ok(Outcome {
                    value: truthy(top),
                    fuel_used: used,
                });
            }
            Op::LoadSlot(i) => push!(slots.slot(chunk, i)),
            Op::LoadConst(i) => push!(konst(i)),
            Op::CmpConstSlot(k, i, s) => {
                let r =
                    compare(k, konst(i), slots.slot(chunk, s)).map_err(|m| type_err(k, m, pc))?;
                push!(bool_ref(r));
            }
            Op::Cmp(k) => {
                let (true, Some(lhs)) = (depth >= 2, below.pop()) else {
                    return Err(RuntimeError::Internal { pc });
                };
                depth -= 1;
                let r = compare(k, lhs, top).map_err(|m| type_err(k, m, pc))?;
                top = bool_ref(r);
            }
            Op::Not | Op::ToBool => {
                if depth == 0 {
                    return Err(RuntimeError::Internal { pc });
                }
                top = bool_ref(truthy(top) == (op == Op::ToBool));
            }
        }
        pc += 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::expr::names::Context;
    use crate::expr::{Limits, analyze, env_from_context, interp};

    /// The metered and unmetered loops agree, and a starved run stops exactly at its fuel.
    #[test]
    fn fuel_and_stack_paths() {
        let ctx: Context = serde_json::from_value(serde_json::json!({
            "step_outputs": {"s": {"tags": ["a", "b"]}, "n": 3},
            "data": {"a": 7, "b": "x", "c": 2, "t": true, "z": 0}
        }))
        .unwrap();
        let env = env_from_context(&ctx);
        for src in [
            "$a == 7",
            "($a >= 10 or $b != 'x') and $c < 3",
            "not $z",
            "($t and $z) == ($z or $t)",
            "(not $a) in $s.tags",
            "'a' in $s.tags and $n > 2.5",
            "($a < 1 or $c < 1) == False or $missing == None",
            "$b contains 'x' and not not $t",
        ] {
            let a = analyze(src, &env, &Limits::default());
            let cond = a
                .condition
                .unwrap_or_else(|| panic!("{src}: {:?}", a.diagnostics));
            let chunk = cond.chunk();
            let full = run(chunk, &FromScope(&ctx));
            let oracle = interp::eval(a.ast.as_ref().unwrap(), &ctx);
            assert_eq!(full.map(|o| o.value), oracle, "{src}");
            let values = resolve_slots(chunk, &ctx);
            assert_eq!(run(chunk, &Resolved(&values)), full, "{src}");
            for fuel in 0..=chunk.cost() + 1 {
                match run_with_fuel(chunk, &FromScope(&ctx), fuel) {
                    Err(RuntimeError::FuelExhausted { used, .. }) => {
                        assert_eq!(used, fuel, "{src}");
                        assert!(full.is_ok_and(|o| o.fuel_used > fuel), "{src}");
                    }
                    other => assert_eq!(other, full, "{src} with fuel {fuel}"),
                }
            }
        }
    }
}
