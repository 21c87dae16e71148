//! The condition type checker. It reports what is certainly wrong as errors and what may be
//! wrong as warnings; `any` defers to run time. The environment (name → type, and whether a
//! step has run on every path to the condition) comes from the caller: `nanovm eval` builds it
//! from a context file, the program checker from the step graph.

use super::ast::{CmpOp, Expr, ExprKind, Lit, LogicOp};
use super::names::{Segment, SlotPath};
use crate::diagnostics::{Code, Diagnostic, did_you_mean, edit_distance};
use crate::source::Span;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

/// A static type (DESIGN §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    /// Unknown: checked at run time.
    Any,
    Null,
    Bool,
    Int,
    Float,
    Str,
    /// One of a fixed set of strings (from `allowed_outputs`). Shared: every reference to a
    /// step binds its output type, and a program can list many thousands of outputs.
    Enum(Arc<BTreeSet<String>>),
    List(Box<Type>),
    /// An object with exactly these fields.
    Record(BTreeMap<String, Type>),
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Any => f.write_str("any"),
            Type::Null => f.write_str("null"),
            Type::Bool => f.write_str("bool"),
            Type::Int => f.write_str("int"),
            Type::Float => f.write_str("float"),
            Type::Str => f.write_str("str"),
            Type::Enum(vs) => {
                let parts: Vec<String> = vs.iter().map(|v| format!("{v:?}")).collect();
                f.write_str(&parts.join(" | "))
            }
            Type::List(t) => write!(f, "list<{t}>"),
            Type::Record(fs) => {
                let parts: Vec<String> = fs.iter().map(|(k, t)| format!("{k}: {t}")).collect();
                write!(f, "{{{}}}", parts.join(", "))
            }
        }
    }
}

/// Broad value classes for deciding what an operator can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Null,
    Num,
    Str,
    List,
    Record,
}

impl Type {
    fn class(&self) -> Option<Class> {
        Some(match self {
            Type::Any => return None,
            Type::Null => Class::Null,
            Type::Bool | Type::Int | Type::Float => Class::Num,
            Type::Str | Type::Enum(_) => Class::Str,
            Type::List(_) => Class::List,
            Type::Record(_) => Class::Record,
        })
    }

    /// True when no part of the type is `any`.
    pub fn is_known(&self) -> bool {
        match self {
            Type::Any => false,
            Type::List(t) => t.is_known(),
            Type::Record(fs) => fs.values().all(Type::is_known),
            _ => true,
        }
    }
}

/// What provides a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Step,
    OutputKey,
    Input,
    Context,
}

/// Whether a step (or its `output_key`) has run when the condition is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    Always,
    Sometimes,
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub kind: NameKind,
    pub ty: Type,
    pub ran: Ran,
}

/// The names a condition may refer to.
#[derive(Debug, Clone, Default)]
pub struct TypeEnv {
    names: HashMap<String, Binding>,
    /// When closed (a program declares `inputs`), unknown names are errors.
    pub closed: bool,
    /// Names offered as "did you mean" suggestions, when wider than the bound names (the
    /// program checker binds only the names a condition uses).
    candidates: Option<Arc<Suggestions>>,
}

/// A shared, memoised "did you mean" over a fixed set of names: each unknown name is looked up
/// once per check, however many times it occurs (the check stays linear).
#[derive(Debug, Default)]
pub struct Suggestions {
    /// Every name, one after another (one allocation for thousands of step ids), in no
    /// particular order: ties go to the smallest name, as if sorted.
    text: String,
    /// Where each name ends in `text`.
    ends: Vec<usize>,
    cache: std::sync::Mutex<HashMap<String, Option<String>>>,
}

impl Suggestions {
    pub fn new<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Self {
        let mut text = String::new();
        let mut ends = Vec::new();
        for n in names {
            text.push_str(n.as_ref());
            ends.push(text.len());
        }
        Self {
            text,
            ends,
            cache: std::sync::Mutex::default(),
        }
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let name = self.text.get(start..end).unwrap_or_default();
            start = end;
            name
        })
    }

    /// The closest name within the edit budget for `name`'s length (none for names of one or
    /// two characters: `$b` is not a typo of `$a`).
    pub fn suggest(&self, name: &str) -> Option<String> {
        let max = suggestion_budget(name);
        if max == 0 {
            return None;
        }
        // `did_you_mean` over the sorted names: the closest, the first in order among equals.
        let compute = || {
            let chars = name.chars().count();
            self.names()
                .filter(|c| *c != name)
                .filter(|c| c.len().abs_diff(name.len()) <= 4 * max)
                .filter(|c| c.chars().count().abs_diff(chars) <= max)
                .map(|c| (edit_distance(name, c), c))
                .filter(|(d, _)| *d <= max)
                .min()
                .map(|(_, c)| c.to_owned())
        };
        match self.cache.lock() {
            Ok(mut cache) => {
                if let Some(hit) = cache.get(name) {
                    return hit.clone();
                }
                let found = compute();
                cache.insert(name.to_owned(), found.clone());
                found
            }
            Err(_) => compute(),
        }
    }
}

fn suggestion_budget(name: &str) -> usize {
    match name.chars().count() {
        0..=2 => 0,
        3..=5 => 1,
        _ => 2,
    }
}

impl TypeEnv {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bind(&mut self, name: impl Into<String>, binding: Binding) -> &mut Self {
        self.names.insert(name.into(), binding);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Binding> {
        self.names.get(name)
    }

    /// Offer these names as suggestions instead of the bound ones.
    pub fn with_candidates(&mut self, names: Arc<Suggestions>) -> &mut Self {
        self.candidates = Some(names);
        self
    }

    fn suggest(&self, name: &str) -> Option<String> {
        if let Some(c) = &self.candidates {
            return c.suggest(name);
        }
        let max = suggestion_budget(name);
        if max == 0 {
            return None;
        }
        let mut names: Vec<&str> = self.names.keys().map(String::as_str).collect();
        names.sort_unstable();
        did_you_mean(name, names, max).map(str::to_owned)
    }
}

/// The checker's verdict on one condition.
#[derive(Debug, Clone, Default)]
pub struct TypeReport {
    pub diagnostics: Vec<Diagnostic>,
    /// Every value the condition reads has a fully known type (no `any`, no maybe-missing step).
    pub fully_known: bool,
}

/// The type of an operand, with its literal value when it is one.
struct Typed<'e> {
    ty: Type,
    lit: Option<&'e Lit>,
}

struct Checker<'a> {
    env: &'a TypeEnv,
    diags: Vec<Diagnostic>,
    known: bool,
}

/// Type-check a parsed condition against an environment.
pub fn check(expr: &Expr, env: &TypeEnv) -> TypeReport {
    let mut c = Checker {
        env,
        diags: Vec::new(),
        known: true,
    };
    c.expr(expr);
    TypeReport {
        diagnostics: c.diags,
        fully_known: c.known,
    }
}

fn lit_type(l: &Lit) -> Type {
    match l {
        Lit::Null => Type::Null,
        Lit::Bool(_) => Type::Bool,
        Lit::Int(_) => Type::Int,
        Lit::Float(_) => Type::Float,
        Lit::Str(_) => Type::Str,
    }
}

impl Checker<'_> {
    fn expr<'e>(&mut self, e: &'e Expr) -> Typed<'e> {
        match &e.kind {
            ExprKind::Lit(l) => Typed {
                ty: lit_type(l),
                lit: Some(l),
            },
            ExprKind::Var(p) => {
                let ty = self.path(&SlotPath::new(p), e.span);
                if !ty.is_known() {
                    self.known = false;
                }
                Typed { ty, lit: None }
            }
            ExprKind::Not(inner) => {
                self.expr(inner);
                Typed {
                    ty: Type::Bool,
                    lit: None,
                }
            }
            ExprKind::Logic(LogicOp::And | LogicOp::Or, l, r) => {
                self.expr(l);
                self.expr(r);
                Typed {
                    ty: Type::Bool,
                    lit: None,
                }
            }
            ExprKind::Cmp(op, l, r) => {
                let lt = self.expr(l);
                let rt = self.expr(r);
                self.cmp(*op, e, (&lt, l.span), (&rt, r.span));
                Typed {
                    ty: Type::Bool,
                    lit: None,
                }
            }
            ExprKind::Error => {
                self.known = false;
                Typed {
                    ty: Type::Any,
                    lit: None,
                }
            }
        }
    }

    /// The type a `$path` reads, applying the name-resolution rule of [`super::names`].
    /// `span` covers the `$path` token exactly, so segment spans are computed from it.
    fn path(&mut self, path: &SlotPath, span: Span) -> Type {
        let root_span = Span::new(span.start, (span.start + 1 + path.root.len()).min(span.end));
        let Some(b) = self.env.get(&path.root) else {
            let via_output = path.segments.first().is_some_and(|s| s.is_output);
            let suggestion = self.env.suggest(&path.root);
            if self.env.closed {
                let (code, what) = if via_output {
                    (Code::UnknownStep, "step")
                } else {
                    (Code::UnknownVariable, "variable")
                };
                let mut d =
                    Diagnostic::new(code, root_span, format!("unknown {what} `{}`", path.root))
                        .with_label(format!(
                            "no step, output_key or declared input is named `{}`",
                            path.root
                        ));
                d = match suggestion {
                    Some(s) => d.with_help(format!("did you mean `${s}`?")),
                    None if via_output => d.with_help(
                        "`$name.output` reads the output of the step whose `id` is `name`",
                    ),
                    None => d.with_help("declare it in the program's `inputs`"),
                };
                self.diags.push(d);
            } else if let Some(s) = suggestion {
                self.diags.push(
                    Diagnostic::new(
                        Code::PossiblyMisspelled,
                        root_span,
                        format!("unknown name `{}`", path.root),
                    )
                    .with_label("read from the run context; `None` if it is not there")
                    .with_help(format!("did you mean `${s}`?")),
                );
            }
            return Type::Any;
        };
        match b.ran {
            Ran::Always => {}
            Ran::Never => {
                self.diags.push(
                    Diagnostic::new(
                        Code::StepNeverRan,
                        root_span,
                        format!("step `{}` has not run on any path to this point", path.root),
                    )
                    .with_label("always reads `None` here")
                    .with_help(format!(
                        "move this after step `{}`, or refer to a step that runs before it",
                        path.root
                    )),
                );
                return Type::Any;
            }
            Ran::Sometimes => {
                self.known = false;
                self.diags.push(
                    Diagnostic::new(
                        Code::StepMaybeNotRan,
                        root_span,
                        format!(
                            "step `{}` may not have run on some path to this point",
                            path.root
                        ),
                    )
                    .with_label("reads `None` on those paths")
                    .with_help(format!(
                        "if that is expected, test `${} != None and …` first",
                        path.root
                    )),
                );
            }
        }
        let is_step = b.kind == NameKind::Step;
        let mut ty = &b.ty;
        // Walk every segment as written, so messages keep the user's spelling.
        let mut offset = root_span.end;
        let skip_first = path.first_is_step_output(is_step);
        for (i, seg) in path.segments.iter().enumerate() {
            let seg_span = Span::new(offset + 1, offset + 1 + seg.key.len());
            let written = span.start..offset;
            offset = seg_span.end;
            if i == 0 && skip_first {
                continue;
            }
            match self.segment(ty, seg) {
                SegType::Into(t) => ty = t,
                SegType::Skip => {}
                SegType::Unknown => return Type::Any,
                SegType::NoField(suggest) => {
                    let prefix = path.to_string();
                    let prefix = prefix.get(..written.len()).unwrap_or(&prefix);
                    let mut d = Diagnostic::new(
                        Code::NoSuchField,
                        seg_span,
                        format!(
                            "`{prefix}` has type `{ty}`, which has no field `{}`",
                            seg.key
                        ),
                    )
                    .with_label("this always reads `None`");
                    if let Some(s) = suggest {
                        d = d.with_help(format!("did you mean `{prefix}.{s}`?"));
                    }
                    self.diags.push(d);
                    return Type::Any;
                }
            }
        }
        ty.clone()
    }

    fn segment<'t>(&self, ty: &'t Type, seg: &Segment) -> SegType<'t> {
        match ty {
            Type::Any => SegType::Unknown,
            Type::Record(fields) => match fields.get(&*seg.key) {
                Some(t) => SegType::Into(t),
                None if seg.is_output => SegType::Skip,
                None => SegType::NoField(
                    did_you_mean(&seg.key, fields.keys().map(String::as_str), 2).map(str::to_owned),
                ),
            },
            // An index may be out of range: the element may be missing.
            Type::List(_) if seg.index.is_some() => SegType::Unknown,
            _ if seg.is_output => SegType::Skip,
            _ => SegType::NoField(None),
        }
    }

    fn cmp(&mut self, op: CmpOp, e: &Expr, l: (&Typed<'_>, Span), r: (&Typed<'_>, Span)) {
        let (item, container) = if op.kind().1 { (r, l) } else { (l, r) };
        match op {
            CmpOp::Eq | CmpOp::Ne => self.equality(op, e, l, r),
            CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => {
                if !orderable(&l.0.ty, &r.0.ty) {
                    self.diags.push(
                        Diagnostic::new(
                            Code::OperatorTypes,
                            e.span,
                            format!(
                                "`{}` is not defined for ({}, {})",
                                op.as_str(),
                                l.0.ty,
                                r.0.ty
                            ),
                        )
                        .with_label("fails whenever it runs")
                        .with_secondary(l.1, format!("this is `{}`", l.0.ty))
                        .with_secondary(r.1, format!("this is `{}`", r.0.ty))
                        .with_help(ordering_help(&l.0.ty, &r.0.ty)),
                    );
                }
            }
            CmpOp::In | CmpOp::NotIn | CmpOp::Contains => {
                if let Some(why) = membership_error(&item.0.ty, &container.0.ty) {
                    self.diags.push(
                        Diagnostic::new(
                            Code::OperatorTypes,
                            e.span,
                            format!(
                                "`{}` is not defined for ({}, {})",
                                op.as_str(),
                                l.0.ty,
                                r.0.ty
                            ),
                        )
                        .with_label("fails whenever it runs")
                        .with_secondary(container.1, why)
                        .with_help("`in` tests a substring of a string, an element of a list or a key of an object"),
                    );
                }
            }
        }
    }

    fn equality(&mut self, op: CmpOp, e: &Expr, l: (&Typed<'_>, Span), r: (&Typed<'_>, Span)) {
        let always = if op == CmpOp::Eq { "false" } else { "true" };
        // An allowed_outputs enum compared with a string outside it.
        for (a, b) in [(l, r), (r, l)] {
            if let (Type::Enum(set), Some(Lit::Str(s))) = (&a.0.ty, b.0.lit) {
                if !set.contains(s) {
                    let listed: Vec<String> = set.iter().map(|v| format!("'{v}'")).collect();
                    let mut d = Diagnostic::new(
                        Code::NotInEnum,
                        b.1,
                        format!("'{s}' is not one of the allowed outputs"),
                    )
                    .with_label(format!("this comparison is always {always}"))
                    .with_secondary(a.1, format!("this is one of {}", listed.join(", ")));
                    if let Some(close) = did_you_mean(s, set.iter().map(String::as_str), 2) {
                        d = d.with_help(format!("did you mean '{close}'?"));
                    }
                    self.diags.push(d);
                }
                return;
            }
        }
        if let (Some(a), Some(b)) = (l.0.lit, r.0.lit) {
            let eq = lit_eq(a, b);
            let result = if op == CmpOp::Eq { eq } else { !eq };
            self.diags.push(
                Diagnostic::new(
                    Code::ConstantComparison,
                    e.span,
                    format!("this comparison of two literals is always {result}"),
                )
                .with_label(format!("always {result}")),
            );
            return;
        }
        let never = match (&l.0.ty, &r.0.ty) {
            (Type::Enum(a), Type::Enum(b)) => a.is_disjoint(b),
            (a, b) => match (a.class(), b.class()) {
                (Some(x), Some(y)) => x != y,
                _ => false,
            },
        };
        if never {
            self.diags.push(
                Diagnostic::new(
                    Code::ConstantComparison,
                    e.span,
                    format!(
                        "`{}` compares `{}` with `{}`: always {always}",
                        op.as_str(),
                        l.0.ty,
                        r.0.ty
                    ),
                )
                .with_label(format!("always {always}"))
                .with_secondary(l.1, format!("this is `{}`", l.0.ty))
                .with_secondary(r.1, format!("this is `{}`", r.0.ty))
                .with_note("values of different types are never equal (`'1' != 1`); numbers compare by value (`1 == 1.0` and `1 == True`)"),
            );
        }
    }
}

enum SegType<'t> {
    Into(&'t Type),
    Skip,
    Unknown,
    NoField(Option<String>),
}

fn lit_eq(a: &Lit, b: &Lit) -> bool {
    use super::value::py_eq;
    py_eq(&a.to_value(), &b.to_value())
}

/// Can ordering between these types succeed? `None` and objects never order; with `any`
/// on one side it is decided at run time; lists order when their elements do.
fn orderable(a: &Type, b: &Type) -> bool {
    match (a, b) {
        (Type::Null | Type::Record(_), _) | (_, Type::Null | Type::Record(_)) => false,
        (Type::Any, _) | (_, Type::Any) => true,
        (Type::List(x), Type::List(y)) => orderable(x, y),
        _ => matches!(
            (a.class(), b.class()),
            (Some(Class::Num), Some(Class::Num)) | (Some(Class::Str), Some(Class::Str))
        ),
    }
}

fn ordering_help(a: &Type, b: &Type) -> String {
    if matches!(a, Type::Null) || matches!(b, Type::Null) {
        "`None` has no order; test `$x != None and $x > …`".to_owned()
    } else {
        "ordering is defined between numbers, between strings, and between lists of those"
            .to_owned()
    }
}

/// Why `item in container` certainly fails, if it does.
fn membership_error(item: &Type, container: &Type) -> Option<String> {
    match container.class() {
        None => None,
        Some(Class::Null | Class::Num) => Some(format!("`{container}` is not a container")),
        Some(Class::Str) => match item.class() {
            None | Some(Class::Str) => None,
            Some(_) => Some(format!("only a string can be in a string, not `{item}`")),
        },
        Some(Class::List) => None,
        Some(Class::Record) => match item.class() {
            Some(Class::List | Class::Record) => {
                Some(format!("an object's keys cannot be `{item}`"))
            }
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::expr::{Limits, parse};

    fn env() -> TypeEnv {
        let mut env = TypeEnv::new();
        let yes_no: BTreeSet<String> = ["yes", "no"].into_iter().map(String::from).collect();
        env.bind(
            "classify",
            Binding {
                kind: NameKind::Step,
                ty: Type::Enum(Arc::new(yes_no)),
                ran: Ran::Always,
            },
        )
        .bind(
            "lookup",
            Binding {
                kind: NameKind::Step,
                ty: Type::Record([("amount".to_owned(), Type::Int)].into_iter().collect()),
                ran: Ran::Always,
            },
        )
        .bind(
            "later",
            Binding {
                kind: NameKind::Step,
                ty: Type::Any,
                ran: Ran::Never,
            },
        )
        .bind(
            "maybe",
            Binding {
                kind: NameKind::Step,
                ty: Type::Int,
                ran: Ran::Sometimes,
            },
        )
        .bind(
            "amount",
            Binding {
                kind: NameKind::Input,
                ty: Type::Int,
                ran: Ran::Always,
            },
        );
        env
    }

    fn codes(src: &str, env: &TypeEnv) -> (Vec<Code>, bool) {
        let (ast, d) = parse(src, &Limits::default());
        assert!(d.is_empty(), "{src}: {d:?}");
        let r = check(&ast.unwrap(), env);
        (
            r.diagnostics.iter().map(|d| d.code).collect(),
            r.fully_known,
        )
    }

    #[test]
    fn certain_errors_and_warnings() {
        let env = env();
        assert_eq!(codes("$classify == 'yes'", &env), (vec![], true));
        assert_eq!(
            codes("$classify.output == 'Yes'", &env).0,
            vec![Code::NotInEnum]
        );
        assert_eq!(
            codes("$lookup.output.amout > 1", &env).0,
            vec![Code::NoSuchField]
        );
        assert_eq!(codes("$lookup.amount > 1", &env), (vec![], true));
        assert_eq!(codes("$amount > 'x'", &env).0, vec![Code::OperatorTypes]);
        assert_eq!(codes("5 in 'abc5'", &env).0, vec![Code::OperatorTypes]);
        assert_eq!(codes("None < $amount", &env).0, vec![Code::OperatorTypes]);
        assert_eq!(
            codes("$amount == 'x'", &env).0,
            vec![Code::ConstantComparison]
        );
        assert_eq!(codes("1 == 1", &env).0, vec![Code::ConstantComparison]);
        assert_eq!(codes("$later.output", &env).0, vec![Code::StepNeverRan]);
        assert_eq!(
            codes("$maybe > 1", &env),
            (vec![Code::StepMaybeNotRan], false)
        );
        assert_eq!(
            codes("$amont > 1", &env),
            (vec![Code::PossiblyMisspelled], false)
        );
        assert_eq!(codes("$whatever > 1", &env), (vec![], false));
        let mut closed = env.clone();
        closed.closed = true;
        assert_eq!(
            codes("$whatever > 1", &closed).0,
            vec![Code::UnknownVariable]
        );
        assert_eq!(
            codes("$clasify.output == 'yes'", &closed).0,
            vec![Code::UnknownStep]
        );
    }

    #[test]
    fn type_display() {
        let t = Type::List(Box::new(Type::Record(
            [(
                "a".to_owned(),
                Type::Enum(Arc::new(["x".to_owned()].into())),
            )]
            .into(),
        )));
        assert_eq!(t.to_string(), "list<{a: \"x\"}>");
    }
}
