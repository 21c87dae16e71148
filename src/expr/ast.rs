//! The spanned syntax tree of a condition, and a printer whose output parses back to the
//! same tree (a property test holds the two together).

use crate::source::Span;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Lit(Lit),
    Var(Path),
    Not(Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    Logic(LogicOp, Box<Expr>, Box<Expr>),
    /// A part whose error was already reported; never reaches the compiler.
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

/// A `$root.seg.seg` reference (without the `$`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    pub root: String,
    pub segments: Vec<String>,
}

impl Path {
    pub fn parse(text: &str) -> Path {
        let mut parts = text.split('.');
        let root = parts.next().unwrap_or_default().to_owned();
        Path {
            root,
            segments: parts.map(str::to_owned).collect(),
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.root)?;
        for s in &self.segments {
            write!(f, ".{s}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    /// `A contains B` means `B in A`.
    Contains,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
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

    /// The VM comparison and whether the operands swap (`A contains B` is `B in A`).
    pub fn kind(self) -> (crate::expr::value::CmpKind, bool) {
        use crate::expr::value::CmpKind;
        match self {
            CmpOp::Eq => (CmpKind::Eq, false),
            CmpOp::Ne => (CmpKind::Ne, false),
            CmpOp::Lt => (CmpKind::Lt, false),
            CmpOp::Le => (CmpKind::Le, false),
            CmpOp::Gt => (CmpKind::Gt, false),
            CmpOp::Ge => (CmpKind::Ge, false),
            CmpOp::In => (CmpKind::In, false),
            CmpOp::NotIn => (CmpKind::NotIn, false),
            CmpOp::Contains => (CmpKind::In, true),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogicOp {
    And,
    Or,
}

impl LogicOp {
    pub fn as_str(self) -> &'static str {
        match self {
            LogicOp::And => "and",
            LogicOp::Or => "or",
        }
    }
}

impl Expr {
    pub fn new(kind: ExprKind, span: Span) -> Self {
        Self { kind, span }
    }

    /// Structural equality, ignoring spans (floats compare by bits, so `-0.0 != 0.0`).
    pub fn same_shape(&self, other: &Expr) -> bool {
        match (&self.kind, &other.kind) {
            (ExprKind::Lit(Lit::Float(a)), ExprKind::Lit(Lit::Float(b))) => {
                a.to_bits() == b.to_bits()
            }
            (ExprKind::Lit(a), ExprKind::Lit(b)) => a == b,
            (ExprKind::Var(a), ExprKind::Var(b)) => a == b,
            (ExprKind::Not(a), ExprKind::Not(b)) => a.same_shape(b),
            (ExprKind::Cmp(o1, l1, r1), ExprKind::Cmp(o2, l2, r2)) => {
                o1 == o2 && l1.same_shape(l2) && r1.same_shape(r2)
            }
            (ExprKind::Logic(o1, l1, r1), ExprKind::Logic(o2, l2, r2)) => {
                o1 == o2 && l1.same_shape(l2) && r1.same_shape(r2)
            }
            (ExprKind::Error, ExprKind::Error) => true,
            _ => false,
        }
    }
}

impl Lit {
    /// The literal as a JSON value.
    pub fn to_value(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Lit::Null => Value::Null,
            Lit::Bool(b) => Value::Bool(*b),
            Lit::Int(i) => Value::from(*i),
            Lit::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Lit::Str(s) => Value::String(s.clone()),
        }
    }
}

impl fmt::Display for Lit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lit::Null => f.write_str("None"),
            Lit::Bool(true) => f.write_str("True"),
            Lit::Bool(false) => f.write_str("False"),
            Lit::Int(i) => write!(f, "{i}"),
            Lit::Float(x) => {
                // Plain decimal notation (the language has no exponent), always with a point.
                let s = format!("{x}");
                if s.contains('.') {
                    f.write_str(&s)
                } else {
                    write!(f, "{s}.0")
                }
            }
            Lit::Str(s) => {
                f.write_str("'")?;
                for c in s.chars() {
                    match c {
                        '\\' => f.write_str("\\\\")?,
                        '\'' => f.write_str("\\'")?,
                        '\n' => f.write_str("\\n")?,
                        '\r' => f.write_str("\\r")?,
                        '\t' => f.write_str("\\t")?,
                        c if c.is_control() => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                        c => write!(f, "{c}")?,
                    }
                }
                f.write_str("'")
            }
        }
    }
}

impl fmt::Display for Expr {
    /// Prints a condition that parses back to the same tree: logic is left-associative and
    /// never mixes `and`/`or` without parentheses; `not` is looser than comparisons.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Lit(l) => write!(f, "{l}"),
            ExprKind::Var(p) => write!(f, "{p}"),
            ExprKind::Error => f.write_str("<error>"),
            ExprKind::Not(e) => match e.kind {
                ExprKind::Logic(..) => write!(f, "not ({e})"),
                _ => write!(f, "not {e}"),
            },
            ExprKind::Cmp(op, l, r) => {
                let operand = |e: &Expr, f: &mut fmt::Formatter<'_>| match e.kind {
                    ExprKind::Lit(_) | ExprKind::Var(_) | ExprKind::Error => write!(f, "{e}"),
                    _ => write!(f, "({e})"),
                };
                operand(l, f)?;
                write!(f, " {} ", op.as_str())?;
                operand(r, f)
            }
            ExprKind::Logic(op, l, r) => {
                match &l.kind {
                    ExprKind::Logic(lop, ..) if lop != op => write!(f, "({l})")?,
                    _ => write!(f, "{l}")?,
                }
                write!(f, " {} ", op.as_str())?;
                match &r.kind {
                    ExprKind::Logic(..) => write!(f, "({r})"),
                    _ => write!(f, "{r}"),
                }
            }
        }
    }
}
