//! The stack VM. It runs only [`Verified`] chunks, executes at most [`Verified::cost`]
//! instructions (fuel), never calls anything, and allocates nothing unless an expression
//! nests deeper than the inline stack.

use super::bytecode::{Op, Verified};
use super::names::{Scope, resolve};
use super::value::{CmpKind, Mismatch, bool_ref, compare, truthy};
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
            None => &super::value::NULL,
        }
    }
}

/// Slots resolved ahead of time, in slot order.
#[derive(Debug)]
pub struct Resolved<'a>(pub &'a [&'a Value]);

impl<'a> Slots<'a> for Resolved<'a> {
    #[inline]
    fn slot(&self, _: &'a Verified, index: u16) -> &'a Value {
        self.0
            .get(usize::from(index))
            .copied()
            .unwrap_or(&super::value::NULL)
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
pub fn run_with_fuel<'a>(
    chunk: &'a Verified,
    slots: &impl Slots<'a>,
    fuel: u32,
) -> Result<Outcome, RuntimeError> {
    let c = chunk.chunk();
    let code = c.code.as_slice();
    let consts = c.consts.as_slice();
    let konst = |i: u16| consts.get(usize::from(i)).unwrap_or(&super::value::NULL);
    let mut stack: SmallVec<[&'a Value; 8]> = SmallVec::new();
    let mut pc = 0usize;
    let mut used = 0u32;
    let type_err = |op, mismatch, pc: usize| RuntimeError::Type {
        op,
        mismatch,
        span: chunk.span_of(pc),
    };
    loop {
        if used >= fuel {
            return Err(RuntimeError::FuelExhausted {
                used,
                span: chunk.span_of(pc),
            });
        }
        used += 1;
        let Some(op) = code.get(pc).copied() else {
            return Err(RuntimeError::Internal { pc });
        };
        pc += 1;
        match op {
            Op::LoadSlot(i) => stack.push(slots.slot(chunk, i)),
            Op::LoadConst(i) => stack.push(konst(i)),
            Op::CmpSlotConst(k, s, i) => {
                let r = compare(k, slots.slot(chunk, s), konst(i))
                    .map_err(|m| type_err(k, m, pc - 1))?;
                stack.push(bool_ref(r));
            }
            Op::CmpConstSlot(k, i, s) => {
                let r = compare(k, konst(i), slots.slot(chunk, s))
                    .map_err(|m| type_err(k, m, pc - 1))?;
                stack.push(bool_ref(r));
            }
            Op::Cmp(k) => {
                let (Some(rhs), Some(lhs)) = (stack.pop(), stack.pop()) else {
                    return Err(RuntimeError::Internal { pc: pc - 1 });
                };
                let r = compare(k, lhs, rhs).map_err(|m| type_err(k, m, pc - 1))?;
                stack.push(bool_ref(r));
            }
            Op::Not => {
                let Some(v) = stack.pop() else {
                    return Err(RuntimeError::Internal { pc: pc - 1 });
                };
                stack.push(bool_ref(!truthy(v)));
            }
            Op::ToBool => {
                let Some(v) = stack.pop() else {
                    return Err(RuntimeError::Internal { pc: pc - 1 });
                };
                stack.push(bool_ref(truthy(v)));
            }
            Op::JumpIfFalseOrPop(t) | Op::JumpIfTrueOrPop(t) => {
                let Some(v) = stack.last() else {
                    return Err(RuntimeError::Internal { pc: pc - 1 });
                };
                let jump_when = matches!(op, Op::JumpIfTrueOrPop(_));
                if truthy(v) == jump_when {
                    pc = usize::from(t);
                } else {
                    stack.pop();
                }
            }
            Op::Return => {
                let Some(v) = stack.pop() else {
                    return Err(RuntimeError::Internal { pc: pc - 1 });
                };
                return Ok(Outcome {
                    value: truthy(v),
                    fuel_used: used,
                });
            }
        }
    }
}
