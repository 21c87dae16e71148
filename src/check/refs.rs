//! References: every condition and every `$path` in prompts, system texts and args, typed
//! against what the program's steps produce and whether they have run at that point.

use super::HashMap;
use super::catalog::Catalog;
use super::graph::{Analysis, NodeId, RanCache};
use super::{Checker, all_steps};
use crate::diagnostics::{Code, Diagnostic};
use crate::expr::ast::{Expr, ExprKind, Path};
use crate::expr::names::{SlotPath, TemplateRef, template_refs};
use crate::expr::types::{self, Binding, NameKind, Ran, Type, TypeEnv};
use crate::expr::{self, Condition};
use crate::json::{Kind, Node, Str};
use crate::program::{OnError, Step, StepType};
use crate::source::Span;
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// A prompt, system text or argument string split at its `$path` references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Lit(String),
    /// A reference and its text as written (kept verbatim when it does not resolve, Q19).
    Ref {
        path: SlotPath,
        raw: String,
    },
}

impl Template {
    pub fn parse(text: &str) -> Self {
        let mut parts = Vec::new();
        let mut at = 0;
        for r in template_refs(text) {
            if r.start > at {
                parts.push(Part::Lit(
                    text.get(at..r.start).unwrap_or_default().to_owned(),
                ));
            }
            parts.push(Part::Ref {
                path: SlotPath::new(&r.path),
                raw: text.get(r.start..r.end).unwrap_or_default().to_owned(),
            });
            at = r.end;
        }
        if at < text.len() || parts.is_empty() {
            parts.push(Part::Lit(text.get(at..).unwrap_or_default().to_owned()));
        }
        Self { parts }
    }

    /// The reference, when the whole text is exactly one `$path` (its value is passed as is,
    /// typed, Q17).
    pub fn single(&self) -> Option<&SlotPath> {
        match self.parts.as_slice() {
            [Part::Ref { path, .. }] => Some(path),
            _ => None,
        }
    }
}

/// The most sub-steps whose outputs type a parallel step's output. Every reference binds a
/// copy of the type it reads, so a record as large as the program would make the check
/// quadratic; a larger parallel step's output is `any` (its sub-steps' own outputs stay typed).
const MAX_TYPED_SUBSTEPS: usize = 64;

/// What a step's output is, as far as the checker knows. `parent` is the parallel step of a
/// sub-step: a failing sub-step of a parent with `on_error: skip` reads `None` (Q33). A tool's
/// output has the type of its output schema in the catalog (`any` without a catalog, for a
/// tool the catalog lacks, or without a schema). A parallel step's output is an object of its
/// sub-steps' outputs by sub-step id (up to [`MAX_TYPED_SUBSTEPS`]).
fn output_type(s: &Step, parent: Option<&Step>, catalog: Option<&Catalog>) -> Type {
    let skips = |x: &Step| x.on_error() == OnError::Skip;
    if skips(s) || parent.is_some_and(skips) {
        return Type::Any;
    }
    match s.step_type() {
        Some(StepType::Llm) => match &s.allowed_outputs {
            Some(a) => Type::Enum(Arc::new(a.value.iter().map(|v| v.value.clone()).collect())),
            None => Type::Str,
        },
        Some(StepType::Condition) => Type::Str,
        Some(StepType::Tool) => s
            .tool
            .as_ref()
            .and_then(|t| catalog?.get(&t.value))
            .map_or(Type::Any, |info| info.output.clone()),
        Some(StepType::Parallel) if s.parallel_steps.len() <= MAX_TYPED_SUBSTEPS => {
            let mut fields = BTreeMap::new();
            for sub in &s.parallel_steps {
                let Some(id) = sub.id_str() else {
                    return Type::Any;
                };
                if !fields.contains_key(id) {
                    fields.insert(id.to_owned(), output_type(sub, Some(s), catalog));
                }
            }
            if fields.is_empty() {
                Type::Any
            } else {
                Type::Record(fields)
            }
        }
        Some(StepType::Parallel) | None => Type::Any,
    }
}

/// A step a name refers to: its top-level index (a sub-step's parent's), the step and the type
/// of its output.
type Named<'p> = (usize, &'p Step, Type);

struct Names<'p> {
    /// id → the step.
    steps: HashMap<&'p str, Named<'p>>,
    output_keys: HashMap<&'p str, Named<'p>>,
    inputs: Option<HashMap<&'p str, &'p Type>>,
    candidates: Arc<types::Suggestions>,
}

struct Ctx<'a, 'p> {
    names: &'a Names<'p>,
    analysis: Option<&'a Analysis>,
    cache: RanCache,
}

impl Ctx<'_, '_> {
    fn ran(&mut self, s: usize, site: &[NodeId]) -> Ran {
        let Some(a) = self.analysis else {
            return Ran::Always;
        };
        let mut all = true;
        let mut none = true;
        for &x in site {
            match a.ran_before(s, x, &mut self.cache) {
                Some(true) => none = false,
                Some(false) => all = false,
                None => {
                    all = false;
                    none = false;
                }
            }
        }
        match (all, none) {
            (true, _) => Ran::Always,
            (false, true) => Ran::Never,
            _ => Ran::Sometimes,
        }
    }

    fn env<'r>(&mut self, roots: impl Iterator<Item = &'r str>, site: &[NodeId]) -> TypeEnv {
        let mut env = TypeEnv::new();
        env.with_candidates(self.names.candidates.clone());
        env.closed = self.names.inputs.is_some();
        for root in roots {
            if env.get(root).is_some() {
                continue;
            }
            let (kind, (index, _, ty)) = if let Some(x) = self.names.steps.get(root) {
                (NameKind::Step, x)
            } else if let Some(x) = self.names.output_keys.get(root) {
                (NameKind::OutputKey, x)
            } else if let Some(ty) = self.names.inputs.as_ref().and_then(|i| i.get(root)) {
                env.bind(
                    root,
                    Binding {
                        kind: NameKind::Input,
                        ty: (*ty).clone(),
                        ran: Ran::Always,
                    },
                );
                continue;
            } else {
                continue;
            };
            let ty = ty.clone();
            let ran = self.ran(*index, site);
            env.bind(root, Binding { kind, ty, ran });
        }
        env
    }
}

fn vars<'e>(e: &'e Expr, out: &mut Vec<(&'e Path, Span)>) {
    match &e.kind {
        ExprKind::Var(p) => out.push((p, e.span)),
        ExprKind::Not(x) => vars(x, out),
        ExprKind::Cmp(_, l, r) | ExprKind::Logic(_, l, r) => {
            vars(l, out);
            vars(r, out);
        }
        ExprKind::Lit(_) | ExprKind::Error => {}
    }
}

/// Check every reference of the program; returns the compiled condition of each top-level
/// condition step.
pub(super) fn check_references(
    c: &mut Checker<'_>,
    ids: &super::IdMap<'_>,
    analysis: Option<&Analysis>,
) -> Vec<Option<Box<Condition>>> {
    let p = c.p;
    let catalog = c.opts.catalog.as_deref();
    let mut steps = HashMap::with_capacity_and_hasher(p.steps.len(), Default::default());
    let mut output_keys = HashMap::default();
    for (i, s) in all_steps(p) {
        let parent = p.steps.get(i).filter(|t| !std::ptr::eq(*t, s));
        let mut ty = None;
        let mut typed = || {
            ty.get_or_insert_with(|| output_type(s, parent, catalog))
                .clone()
        };
        if let Some(id) = s.id_str()
            && ids.get(id).map(|(j, _)| *j) == Some(i)
            && !steps.contains_key(id)
        {
            steps.insert(id, (i, s, typed()));
        }
        if let Some(k) = &s.output_key
            && !output_keys.contains_key(k.value.as_str())
        {
            output_keys.insert(k.value.as_str(), (i, s, typed()));
        }
    }
    let inputs: Option<HashMap<&str, &Type>> = p
        .inputs
        .as_ref()
        .map(|is| is.iter().map(|i| (i.name.value.as_str(), &i.ty)).collect());
    let candidates = steps
        .keys()
        .chain(output_keys.keys())
        .chain(inputs.iter().flat_map(|i| i.keys()))
        .copied();
    let candidates = Arc::new(types::Suggestions::new(candidates));
    let names = Names {
        steps,
        output_keys,
        inputs,
        candidates,
    };
    let mut ctx = Ctx {
        names: &names,
        analysis,
        cache: RanCache::default(),
    };
    let mut conditions = vec![None; p.steps.len()];
    // The references of each distinct argument string worth checking (`$order_id` in every
    // step is split once): none when every reference is a context name that looks like no
    // known name (nothing to say, wherever the string is).
    let mut arg_refs: HashMap<&str, Option<Vec<TemplateRef>>> = HashMap::default();
    let mut path = Vec::new();
    for (i, s) in all_steps(p) {
        let top_level = p.steps.get(i).is_some_and(|t| std::ptr::eq(t, s));
        // A condition or parallel sub-step is reported by its parent (NV0018); its fields are
        // not judged again.
        if !top_level
            && matches!(
                s.step_type(),
                Some(StepType::Condition | StepType::Parallel)
            )
        {
            continue;
        }
        let site: SmallVec<[NodeId; 2]> = analysis
            .map(|a| a.reachable_nodes(i).collect())
            .unwrap_or_default();
        // Unreachable steps (reported) have no sites: every step counts as run there, so only
        // name and type errors remain.
        if s.step_type() == Some(StepType::Condition)
            && let Some(cond) = &s.condition
        {
            let a = expr::analyze_with(&cond.value, &c.opts.expr, |e| {
                let mut vs = Vec::new();
                vars(e, &mut vs);
                ctx.env(vs.iter().map(|(p, _)| p.root.as_str()), &site)
            });
            for d in a.diagnostics {
                push_in(c, s, "condition", cond, d);
            }
            if let Some(ast) = &a.ast {
                let mut vs = Vec::new();
                vars(ast, &mut vs);
                for (path, span) in vs {
                    let Some((_, target, _)) = names.steps.get(path.root.as_str()) else {
                        continue;
                    };
                    let bare = path.segments.is_empty();
                    if bare || path.segments.first().is_some_and(|s| s != "output") {
                        let tid = target.id_str().unwrap_or("?");
                        let right = if bare {
                            format!("${tid}.output")
                        } else {
                            format!("${tid}.output.{}", path.segments.join("."))
                        };
                        let d = Diagnostic::new(
                            Code::Portability,
                            span,
                            format!("`{path}` reads step `{tid}`'s output; the reference reads it differently"),
                        )
                        .with_label(if bare {
                            "the reference reads a bare step id as an always-true wrapper (Q9)"
                        } else {
                            "the reference reads `None` here (Q12)"
                        })
                        .with_help(format!("write `{right}` to mean the same in both"));
                        push_in(c, s, "condition", cond, d);
                    }
                }
            }
            if let Some(slot) = conditions.get_mut(i)
                && top_level
            {
                *slot = a.condition.map(Box::new);
            }
        }
        for (field, text) in [("prompt", &s.prompt), ("system", &s.system)] {
            if let Some(text) = text {
                check_text(c, &mut ctx, s, field, text, &site);
            }
        }
        if let Some(args) = &s.args {
            visit_strings(args, &mut path, &mut |rel, text| {
                let refs = arg_refs.entry(text.as_str()).or_insert_with(|| {
                    let refs = template_refs(text.as_str());
                    refs.iter().any(|r| !quiet(&names, r)).then_some(refs)
                });
                let Some(refs) = refs else {
                    return;
                };
                for d in ref_diagnostics(&mut ctx, refs, &site) {
                    let mut ptr = format!("{}/args", s.pointer);
                    push_path(&mut ptr, rel);
                    let d = d
                        .map_spans(|sp| text.source_span(sp))
                        .with_pointer(ptr)
                        .with_step_id(s.id_str());
                    c.diags.push(d);
                }
            });
        }
    }
    conditions
}

fn push_in(c: &mut Checker<'_>, s: &Step, field: &str, text: &Str, d: Diagnostic) {
    let d = d
        .map_spans(|sp| text.source_span(sp))
        .with_pointer(format!("{}/{field}", s.pointer))
        .with_step_id(s.id_str());
    c.diags.push(d);
}

fn check_text(
    c: &mut Checker<'_>,
    ctx: &mut Ctx<'_, '_>,
    s: &Step,
    field: &str,
    text: &Str,
    site: &[NodeId],
) {
    let refs = template_refs(&text.value);
    for d in ref_diagnostics(ctx, &refs, site) {
        push_in(c, s, field, text, d);
    }
}

/// A context name (no `inputs` declared) that looks like no known name: nothing to say.
fn quiet(names: &Names<'_>, r: &TemplateRef) -> bool {
    let root = r.path.root.as_str();
    names.inputs.is_none()
        && !names.steps.contains_key(root)
        && !names.output_keys.contains_key(root)
        && names.candidates.suggest(root).is_none()
}

fn ref_diagnostics(
    ctx: &mut Ctx<'_, '_>,
    refs: &[TemplateRef],
    site: &[NodeId],
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for r in refs {
        if quiet(ctx.names, r) {
            continue;
        }
        let root = r.path.root.as_str();
        let env = ctx.env(std::iter::once(root), site);
        let e = Expr {
            kind: ExprKind::Var(r.path.clone()),
            span: Span::new(r.start, r.end),
        };
        out.extend(types::check(&e, &env).diagnostics);
    }
    out
}

/// One step down an args tree: a member's key or an item's index.
#[derive(Debug, Clone, Copy)]
pub(super) enum Segment<'n> {
    Key(&'n str),
    Index(usize),
}

/// Append a path below an args tree to a JSON pointer.
pub(super) fn push_path(ptr: &mut String, path: &[Segment<'_>]) {
    for seg in path {
        match seg {
            Segment::Key(k) => crate::json::push_pointer_segment(ptr, k),
            Segment::Index(i) => {
                let _ = write!(ptr, "/{i}");
            }
        }
    }
}

/// Call `f` with every string of an args tree that contains a `$` and its path below the
/// tree (kept in one stack, so nothing is formatted unless `f` needs the pointer).
pub(super) fn visit_strings<'n, 's>(
    node: &'n Node<'s>,
    path: &mut Vec<Segment<'n>>,
    f: &mut impl FnMut(&[Segment<'n>], &'n Str<'s>),
) {
    match &node.kind {
        Kind::String(s) if s.value.contains('$') => f(path, s),
        Kind::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                path.push(Segment::Index(i));
                visit_strings(x, path, f);
                path.pop();
            }
        }
        Kind::Object(ms) => {
            for m in ms {
                path.push(Segment::Key(&m.key.value));
                visit_strings(&m.value, path, f);
                path.pop();
            }
        }
        _ => {}
    }
}
