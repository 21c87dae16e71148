//! A plain AST interpreter: the test oracle for the compiler and the VM. It shares the value
//! semantics ([`super::value`]) and the name rule ([`super::names`]) and nothing else.

use super::ast::{Expr, ExprKind, LogicOp};
use super::names::{Scope, SlotPath, resolve};
use super::value::{bool_ref, compare, truthy};
use super::vm::RuntimeError;
use serde_json::Value;
use std::borrow::Cow;

/// Evaluate a condition's truth value. An AST with error nodes evaluates to an internal error.
pub fn eval<S: Scope + ?Sized>(expr: &Expr, scope: &S) -> Result<bool, RuntimeError> {
    Ok(truthy(value(expr, scope)?.as_ref()))
}

fn value<'a, S: Scope + ?Sized>(e: &Expr, scope: &'a S) -> Result<Cow<'a, Value>, RuntimeError> {
    Ok(match &e.kind {
        ExprKind::Error => return Err(RuntimeError::Internal { pc: 0 }),
        ExprKind::Lit(l) => Cow::Owned(l.to_value()),
        ExprKind::Var(p) => Cow::Borrowed(resolve(scope, &SlotPath::new(p))),
        ExprKind::Not(inner) => Cow::Borrowed(bool_ref(!truthy(value(inner, scope)?.as_ref()))),
        ExprKind::Logic(op, l, r) => {
            let left = truthy(value(l, scope)?.as_ref());
            let result = match op {
                LogicOp::And => left && truthy(value(r, scope)?.as_ref()),
                LogicOp::Or => left || truthy(value(r, scope)?.as_ref()),
            };
            Cow::Borrowed(bool_ref(result))
        }
        ExprKind::Cmp(op, l, r) => {
            let lv = value(l, scope)?;
            let rv = value(r, scope)?;
            let (k, swapped) = op.kind();
            let (lhs, rhs) = if swapped { (&rv, &lv) } else { (&lv, &rv) };
            let r = compare(k, lhs, rhs).map_err(|mismatch| RuntimeError::Type {
                op: k,
                mismatch,
                span: e.span,
            })?;
            Cow::Borrowed(bool_ref(r))
        }
    })
}
