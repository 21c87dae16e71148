//! Python value semantics over JSON values, shared by the VM and the interpreter:
//! truthiness, `==` (`1 == 1.0`, `True == 1`), ordering (numbers, strings, lists; anything
//! else is a type error) and `in` (substring, list membership, object key).

use serde_json::{Number, Value};
use std::cmp::Ordering;

pub static NULL: Value = Value::Null;
pub static TRUE: Value = Value::Bool(true);
pub static FALSE: Value = Value::Bool(false);

pub fn bool_ref(b: bool) -> &'static Value {
    if b { &TRUE } else { &FALSE }
}

/// The type name of a value in nanovm's type vocabulary (as the checker prints types).
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => match num(n) {
            N::I(i) => i != 0,
            N::U(u) => u != 0,
            N::F(f) => f != 0.0,
        },
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[derive(Clone, Copy)]
enum N {
    I(i64),
    U(u64),
    F(f64),
}

fn num(n: &Number) -> N {
    if let Some(i) = n.as_i64() {
        N::I(i)
    } else if let Some(u) = n.as_u64() {
        N::U(u)
    } else {
        N::F(n.as_f64().unwrap_or(0.0))
    }
}

fn as_num(v: &Value) -> Option<N> {
    match v {
        Value::Bool(b) => Some(N::I(i64::from(*b))),
        Value::Number(n) => Some(num(n)),
        _ => None,
    }
}

/// Exact comparison of an integer with a float, as Python does it.
fn int_float(i: i128, f: f64) -> Ordering {
    if f.is_nan() {
        return Ordering::Less;
    }
    if f >= 18_446_744_073_709_551_616.0 {
        return Ordering::Less;
    }
    if f < -9_223_372_036_854_775_808.0 {
        return Ordering::Greater;
    }
    let t = f.trunc();
    // |t| < 2^64, so the cast is exact.
    #[allow(clippy::cast_possible_truncation)]
    let ti = t as i128;
    match i.cmp(&ti) {
        Ordering::Equal => {
            let frac = f - t;
            if frac > 0.0 {
                Ordering::Less
            } else if frac < 0.0 {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        }
        o => o,
    }
}

fn num_cmp(a: N, b: N) -> Ordering {
    match (a, b) {
        (N::I(x), N::I(y)) => x.cmp(&y),
        (N::U(x), N::U(y)) => x.cmp(&y),
        (N::I(x), N::U(y)) => i128::from(x).cmp(&i128::from(y)),
        (N::U(x), N::I(y)) => i128::from(x).cmp(&i128::from(y)),
        (N::F(x), N::F(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        (N::I(x), N::F(y)) => int_float(i128::from(x), y),
        (N::U(x), N::F(y)) => int_float(i128::from(x), y),
        (N::F(x), N::I(y)) => int_float(i128::from(y), x).reverse(),
        (N::F(x), N::U(y)) => int_float(i128::from(y), x).reverse(),
    }
}

/// Python `==`.
pub fn py_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
        }
        _ => match (as_num(a), as_num(b)) {
            (Some(x), Some(y)) => num_cmp(x, y) == Ordering::Equal,
            _ => false,
        },
    }
}

/// A type error: the operator is not defined for these values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    pub left: &'static str,
    pub right: &'static str,
}

fn mismatch(a: &Value, b: &Value) -> Mismatch {
    Mismatch {
        left: type_name(a),
        right: type_name(b),
    }
}

/// Python ordering of two values.
pub fn py_cmp(a: &Value, b: &Value) -> Result<Ordering, Mismatch> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Ok(x.as_str().cmp(y.as_str())),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                if !py_eq(p, q) {
                    return py_cmp(p, q);
                }
            }
            Ok(x.len().cmp(&y.len()))
        }
        _ => match (as_num(a), as_num(b)) {
            (Some(x), Some(y)) => Ok(num_cmp(x, y)),
            _ => Err(mismatch(a, b)),
        },
    }
}

/// Python `item in container`.
pub fn py_in(item: &Value, container: &Value) -> Result<bool, Mismatch> {
    match container {
        Value::String(s) => match item {
            Value::String(i) => Ok(s.contains(i.as_str())),
            _ => Err(mismatch(item, container)),
        },
        Value::Array(xs) => Ok(xs.iter().any(|x| py_eq(item, x))),
        Value::Object(m) => match item {
            Value::String(k) => Ok(m.contains_key(k)),
            Value::Array(_) | Value::Object(_) => Err(mismatch(item, container)),
            _ => Ok(false),
        },
        _ => Err(mismatch(item, container)),
    }
}

/// A comparison as the VM executes it (`contains` is compiled to `In` with swapped operands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpKind {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
}

impl CmpKind {
    pub const ALL: [CmpKind; 8] = [
        CmpKind::Eq,
        CmpKind::Ne,
        CmpKind::Lt,
        CmpKind::Le,
        CmpKind::Gt,
        CmpKind::Ge,
        CmpKind::In,
        CmpKind::NotIn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CmpKind::Eq => "==",
            CmpKind::Ne => "!=",
            CmpKind::Lt => "<",
            CmpKind::Le => "<=",
            CmpKind::Gt => ">",
            CmpKind::Ge => ">=",
            CmpKind::In => "in",
            CmpKind::NotIn => "not in",
        }
    }
}

/// Apply a comparison to `lhs OP rhs`.
#[inline(always)]
pub fn compare(op: CmpKind, lhs: &Value, rhs: &Value) -> Result<bool, Mismatch> {
    // Fast paths for the shapes conditions compare most (string with string, integer with
    // integer); they give exactly what the general rules below give.
    match (lhs, rhs) {
        (Value::String(a), Value::String(b)) => {
            let (a, b) = (a.as_str(), b.as_str());
            return Ok(match op {
                CmpKind::Eq => a == b,
                CmpKind::Ne => a != b,
                CmpKind::Lt => a < b,
                CmpKind::Le => a <= b,
                CmpKind::Gt => a > b,
                CmpKind::Ge => a >= b,
                CmpKind::In => b.contains(a),
                CmpKind::NotIn => !b.contains(a),
            });
        }
        (Value::Number(a), Value::Number(b)) => {
            if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
                match op {
                    CmpKind::Eq => return Ok(x == y),
                    CmpKind::Ne => return Ok(x != y),
                    CmpKind::Lt => return Ok(x < y),
                    CmpKind::Le => return Ok(x <= y),
                    CmpKind::Gt => return Ok(x > y),
                    CmpKind::Ge => return Ok(x >= y),
                    CmpKind::In | CmpKind::NotIn => {}
                }
            }
        }
        _ => {}
    }
    compare_general(op, lhs, rhs)
}

#[inline(never)]
fn compare_general(op: CmpKind, lhs: &Value, rhs: &Value) -> Result<bool, Mismatch> {
    Ok(match op {
        CmpKind::Eq => py_eq(lhs, rhs),
        CmpKind::Ne => !py_eq(lhs, rhs),
        CmpKind::Lt => py_cmp(lhs, rhs)? == Ordering::Less,
        CmpKind::Le => py_cmp(lhs, rhs)? != Ordering::Greater,
        CmpKind::Gt => py_cmp(lhs, rhs)? == Ordering::Greater,
        CmpKind::Ge => py_cmp(lhs, rhs)? != Ordering::Less,
        CmpKind::In => py_in(lhs, rhs)?,
        CmpKind::NotIn => !py_in(lhs, rhs)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn fast_paths_match_the_general_rules() {
        let vals = [
            json!("a"),
            json!(""),
            json!("ab"),
            json!("b"),
            json!("é"),
            json!(0),
            json!(-1),
            json!(7),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(1.5),
            json!(true),
            json!(null),
        ];
        for op in CmpKind::ALL {
            for a in &vals {
                for b in &vals {
                    assert_eq!(
                        compare(op, a, b),
                        compare_general(op, a, b),
                        "{a} {} {b}",
                        op.as_str()
                    );
                }
            }
        }
    }

    #[test]
    fn python_rules() {
        assert!(py_eq(&json!(1), &json!(1.0)));
        assert!(py_eq(&json!(true), &json!(1)));
        assert!(!py_eq(&json!("1"), &json!(1)));
        assert!(py_eq(&json!([1, {"a": 2.0}]), &json!([1.0, {"a": 2}])));
        assert!(!py_eq(
            &json!(9007199254740993i64),
            &json!(9007199254740992.0)
        ));
        assert!(py_eq(&json!(u64::MAX), &json!(u64::MAX)));
        assert_eq!(py_cmp(&json!(2), &json!(1.5)), Ok(Ordering::Greater));
        assert_eq!(py_cmp(&json!(-1), &json!(u64::MAX)), Ok(Ordering::Less));
        assert_eq!(py_cmp(&json!(true), &json!(0.5)), Ok(Ordering::Greater));
        assert_eq!(py_cmp(&json!("b"), &json!("a")), Ok(Ordering::Greater));
        assert_eq!(py_cmp(&json!([1, 2]), &json!([1, 3])), Ok(Ordering::Less));
        assert_eq!(py_cmp(&json!([1]), &json!([1, 0])), Ok(Ordering::Less));
        assert!(py_cmp(&json!([1]), &json!(["a"])).is_err());
        assert!(py_cmp(&json!(null), &json!(1)).is_err());
        assert!(py_cmp(&json!("200"), &json!(100)).is_err());
        assert!(py_cmp(&json!({}), &json!({})).is_err());
        assert_eq!(py_in(&json!("ef"), &json!("refund")), Ok(true));
        assert!(py_in(&json!(5), &json!("abc5")).is_err());
        assert!(py_in(&json!("x"), &json!(null)).is_err());
        assert_eq!(py_in(&json!("id"), &json!({"id": 1})), Ok(true));
        assert_eq!(py_in(&json!(1), &json!({"1": 1})), Ok(false));
        assert!(py_in(&json!([1]), &json!({})).is_err());
        assert_eq!(py_in(&json!(1.0), &json!([true, 1])), Ok(true));
        assert!(
            !truthy(&json!(0.0))
                && !truthy(&json!(""))
                && !truthy(&json!({}))
                && truthy(&json!([0]))
        );
    }
}
