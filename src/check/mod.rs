//! The program checker: step graph, flow, references and conditions (DESIGN §3).
//!
//! [`check_source`] runs the whole pipeline (JSON → Program → checks) and returns every
//! diagnostic of the file in one pass; a [`CheckedProgram`] comes out only when there is no
//! error, and only this module can build one.

pub mod catalog;
pub mod graph;
mod refs;
mod tools;

use crate::diagnostics::{Code, Diagnostic, did_you_mean, has_errors};
use crate::expr::{self, Condition};
use crate::json;
use crate::program::{self, Program, Step, StepType};
use crate::source::Span;
use graph::{Entry, Graph};
use std::sync::Arc;

/// The checker's maps (keys are step ids and names from the program): foldhash, seeded per
/// process, instead of SipHash.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;

pub use refs::{Part, Template};

/// Step id → index of its first occurrence (a sub-step's parent's index) and the span of
/// that id.
pub(crate) type IdMap<'p> = HashMap<&'p str, (usize, Span)>;

/// Input limits of one check, and the tool catalog when there is one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub json: json::Limits,
    pub expr: expr::Limits,
    /// The tools a run can call. When present, a tool step naming a tool the catalog lacks
    /// or the policy denies is an error, and tool outputs are typed by their schemas.
    pub catalog: Option<Arc<catalog::Catalog>>,
    /// When set, the run will have no LLM: every llm step is an error (NV0036) whose help is
    /// this text (what to configure).
    pub no_llm: Option<String>,
}

/// A program that passed every check: its graph, verified conditions and parsed templates.
#[derive(Debug, Clone)]
pub struct CheckedProgram {
    program: Program,
    graph: Graph,
    /// Per top-level step: the compiled condition of a condition step (boxed: few steps
    /// are conditions).
    conditions: Vec<Option<Box<Condition>>>,
    /// Every prompt, system text and argument string that holds a `$`, split at its
    /// `$references`, by where the string starts in the file (each string literal starts at
    /// its own byte), sorted.
    texts: Vec<(usize, Arc<Template>)>,
}

impl CheckedProgram {
    pub fn program(&self) -> &Program {
        &self.program
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn condition(&self, index: usize) -> Option<&Condition> {
        self.conditions.get(index).and_then(Option::as_deref)
    }

    /// The parsed template of a prompt, system text or argument string of the program (see
    /// [`program_texts`]); `None` for a text without `$`, which is used verbatim.
    pub fn text(&self, text: &json::Str<'_>) -> Option<&Template> {
        let at = text.span.start;
        self.texts
            .binary_search_by_key(&at, |(start, _)| *start)
            .ok()
            .and_then(|i| self.texts.get(i))
            .map(|(_, t)| &**t)
    }
}

/// The verdict on one file.
#[derive(Debug, Clone)]
pub struct Report {
    /// Every diagnostic, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
    /// Present exactly when there is no error.
    pub checked: Option<CheckedProgram>,
    /// The decoded step graph, when the flow fields decoded (also for invalid programs, for
    /// `nanovm graph`).
    pub graph: Option<GraphView>,
}

impl Report {
    pub fn valid(&self) -> bool {
        !has_errors(&self.diagnostics)
    }
}

/// What `nanovm graph` draws: steps, edges and reachability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphView {
    pub steps: Vec<ViewStep>,
    pub edges: Vec<ViewEdge>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewStep {
    pub id: String,
    pub kind: &'static str,
    pub reachable: bool,
    pub terminal: bool,
    /// The run can end after this step.
    pub ends: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewEdge {
    pub from: usize,
    pub to: usize,
    /// `then`, `otherwise`, `next_step`, `next` (in sequence) or `on error` (a skipped
    /// condition falls through).
    pub label: &'static str,
}

/// Check a file's bytes: UTF-8 first, then [`check_source`].
pub fn check_bytes(bytes: &[u8], opts: &Options) -> (Report, Option<String>) {
    if bytes.len() > opts.json.max_bytes {
        let d = json::too_large("the file", bytes.len() as u64, opts.json.max_bytes);
        return (
            Report {
                diagnostics: vec![d],
                checked: None,
                graph: None,
            },
            Some(String::new()),
        );
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => (check_source(text, opts), None),
        Err(e) => {
            let at = e.valid_up_to();
            // The lossy text is what gets rendered; its first `at` bytes are the valid prefix,
            // so the replacement character starts at `at`.
            let text = String::from_utf8_lossy(bytes).into_owned();
            let start = at;
            let d = Diagnostic::new(
                Code::InvalidUtf8,
                Span::new(start, start + '\u{FFFD}'.len_utf8()),
                format!("the file is not UTF-8: invalid byte at offset {at}"),
            )
            .with_label("not UTF-8")
            .with_help("save the file as UTF-8");
            (
                Report {
                    diagnostics: vec![d],
                    checked: None,
                    graph: None,
                },
                Some(text),
            )
        }
    }
}

/// Check a program's text.
pub fn check_source(text: &str, opts: &Options) -> Report {
    let parsed = json::parse(text, &opts.json);
    let mut diagnostics = parsed.diagnostics;
    let Some(root) = parsed.root else {
        return Report {
            diagnostics,
            checked: None,
            graph: None,
        };
    };
    let (program, decoded) = program::decode_owned(root);
    diagnostics.extend(decoded);
    let Some(program) = program else {
        return Report {
            diagnostics,
            checked: None,
            graph: None,
        };
    };
    check_program(program, opts, diagnostics)
}

/// Check a decoded program; `diagnostics` are those found so far (decoding).
pub fn check_program(program: Program, opts: &Options, mut diagnostics: Vec<Diagnostic>) -> Report {
    let decoded_cleanly = !has_errors(&diagnostics);
    let mut c = Checker {
        p: &program,
        opts,
        diags: Vec::new(),
        decoded_cleanly,
    };
    let (graph, view, conditions) = c.run();
    diagnostics.append(&mut c.diags);
    diagnostics.sort_by_key(|d| (d.span.start, d.span.end));
    let checked = match graph {
        Some(graph) if !has_errors(&diagnostics) => {
            // Equal texts (`$order_id` in every step) share one parse.
            let mut parsed: HashMap<&str, Arc<Template>> = HashMap::default();
            let mut texts: Vec<(usize, Arc<Template>)> = program_texts(&program)
                .into_iter()
                .map(|text| {
                    let t = parsed
                        .entry(text.as_str())
                        .or_insert_with(|| Arc::new(Template::parse(text.as_str())));
                    (text.span.start, Arc::clone(t))
                })
                .collect();
            drop(parsed);
            texts.sort_unstable_by_key(|(start, _)| *start);
            Some(CheckedProgram {
                program,
                graph,
                conditions,
                texts,
            })
        }
        _ => None,
    };
    Report {
        diagnostics,
        checked,
        graph: view,
    }
}

struct Checker<'p> {
    p: &'p Program,
    opts: &'p Options,
    diags: Vec<Diagnostic>,
    /// No schema error: whole-program judgements (the failure-exit note) are meaningful.
    decoded_cleanly: bool,
}

/// Every interpolated text of a program that holds a `$`: prompts, system texts and every
/// such string inside `args` (nested objects and lists too, Q15). Texts without a `$` are
/// used verbatim.
pub fn program_texts(p: &Program) -> Vec<&json::Str<'static>> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    for (_, s) in all_steps(p) {
        for t in [&s.prompt, &s.system].into_iter().flatten() {
            if t.value.contains('$') {
                out.push(t);
            }
        }
        if let Some(args) = &s.args {
            refs::visit_strings(args, &mut path, &mut |_, t| out.push(t));
        }
    }
    out
}

/// Every step with its top-level index (sub-steps carry their parent's).
fn all_steps(p: &Program) -> impl Iterator<Item = (usize, &Step)> {
    p.steps.iter().enumerate().flat_map(|(i, s)| {
        std::iter::once((i, s)).chain(s.parallel_steps.iter().map(move |c| (i, c)))
    })
}

impl Checker<'_> {
    fn push(&mut self, step: &Step, field: Option<&str>, d: Diagnostic) {
        let ptr = match field {
            Some(f) => format!("{}/{f}", step.pointer),
            None => step.pointer.clone(),
        };
        self.diags
            .push(d.with_pointer(ptr).with_step_id(step.id_str()));
    }

    fn id_span(step: &Step) -> Span {
        step.id.as_ref().map_or(step.span, |i| i.span)
    }

    fn run(
        &mut self,
    ) -> (
        Option<Graph>,
        Option<GraphView>,
        Vec<Option<Box<Condition>>>,
    ) {
        let p = self.p;
        // Ids: the first occurrence is the one references go to. `ids`: every id (sub-steps
        // map to their parent's index) with the span of its first use; `top`: top-level ids,
        // the jump targets (the same map when there are no sub-steps).
        let n = p.steps.len();
        let mut ids: IdMap<'_> = HashMap::with_capacity_and_hasher(n, Default::default());
        for (i, s) in all_steps(p) {
            let Some(id) = &s.id else { continue };
            if let Some((_, first)) = ids.get(id.value.as_str()) {
                let d = Diagnostic::new(
                    Code::DuplicateStepId,
                    id.span,
                    format!("duplicate step id `{}`", id.value),
                )
                .with_label("used again here")
                .with_secondary(*first, "first used here")
                .with_help("step ids must be unique; references go to the first step with this id");
                self.push(s, Some("id"), d);
                continue;
            }
            ids.insert(&id.value, (i, id.span));
        }
        let top_only: Option<IdMap<'_>> = p
            .steps
            .iter()
            .any(|s| !s.parallel_steps.is_empty())
            .then(|| {
                let mut top: IdMap<'_> = HashMap::with_capacity_and_hasher(n, Default::default());
                for (i, s) in p.steps.iter().enumerate() {
                    if let Some(id) = &s.id {
                        top.entry(id.value.as_str()).or_insert((i, id.span));
                    }
                }
                top
            });
        let top = top_only.as_ref().unwrap_or(&ids);
        let guesses = self.targets(top, &ids);
        self.output_keys(&ids);
        self.per_step_warnings();
        let opts = self.opts;
        if let Some(catalog) = opts.catalog.as_deref() {
            tools::check_tools(self, catalog);
        }
        if let Some(help) = opts.no_llm.as_deref() {
            tools::check_llm(self, help);
        }

        let flow_ok = p.steps.iter().all(|s| s.flow_ok) && !p.steps.is_empty();
        let mut graph = None;
        let mut analysis = None;
        let mut view = None;
        if flow_ok {
            let g = Graph::build(p, top);
            let mut a = g.analyze();
            view = Some(self.view(&g, &a));
            if !guesses.is_empty() {
                // A jump that names no step but is a likely typo of one (NV0021's "did you
                // mean") goes to that step for the flow and reference checks, so the typo is
                // not reported again as unreachable steps (no knock-on errors, DESIGN §3).
                let mut jumps = top.clone();
                jumps.extend(
                    guesses
                        .iter()
                        .map(|(name, i)| (name.as_str(), (*i, Span::point(0)))),
                );
                a = Graph::build(p, &jumps).analyze();
            }
            self.flow(&g, &a);
            analysis = Some(a);
            graph = Some(g);
        }
        let conditions = refs::check_references(self, &ids, analysis.as_ref());
        (graph, view, conditions)
    }

    /// Missing `then`/`otherwise`/`next_step` targets. Returns the likely typos: each missing
    /// target with a "did you mean" and the index of the step it suggests.
    fn targets(&mut self, top: &IdMap<'_>, ids: &IdMap<'_>) -> Vec<(String, usize)> {
        let p = self.p;
        let mut guesses = Vec::new();
        // Sorted when a target is missing.
        let mut names: Option<Vec<&str>> = None;
        for s in &p.steps {
            for (field, t) in [
                ("then", &s.then),
                ("otherwise", &s.otherwise),
                ("next_step", &s.next_step),
            ] {
                let Some(t) = t else { continue };
                if top.contains_key(t.value.as_str()) {
                    continue;
                }
                let mut d = Diagnostic::new(
                    Code::MissingTarget,
                    t.span,
                    format!("`{field}` names no step: `{}`", t.value),
                )
                .with_label("no step has this id");
                if ids.contains_key(t.value.as_str()) {
                    d = d.with_note(format!(
                        "`{}` is a parallel sub-step; only top-level steps can be jumped to",
                        t.value
                    ));
                } else if let Some(m) = did_you_mean(
                    &t.value,
                    names
                        .get_or_insert_with(|| {
                            let mut v: Vec<&str> = top.keys().copied().collect();
                            v.sort_unstable();
                            v
                        })
                        .iter()
                        .copied(),
                    3,
                ) {
                    d = d.with_help(format!("did you mean `{m}`?"));
                    if let Some((i, _)) = top.get(m) {
                        guesses.push((t.value.clone(), *i));
                    }
                }
                self.push(s, Some(field), d);
            }
        }
        guesses
    }

    /// `output_key` equal to a step id or to another `output_key`.
    fn output_keys(&mut self, ids: &IdMap<'_>) {
        let p = self.p;
        let mut keys: HashMap<&str, Span> = HashMap::default();
        for (_, s) in all_steps(p) {
            let Some(k) = &s.output_key else { continue };
            if let Some((_, id_span)) = ids.get(k.value.as_str()) {
                let d = Diagnostic::new(
                    Code::OutputKeyClash,
                    k.span,
                    format!("`output_key` `{}` is also a step id", k.value),
                )
                .with_label("clashes with a step id")
                .with_secondary(*id_span, "the step with this id")
                .with_help("`$name` would mean two things; rename the output_key");
                self.push(s, Some("output_key"), d);
            } else if let Some(first) = keys.get(k.value.as_str()) {
                let d = Diagnostic::new(
                    Code::OutputKeyClash,
                    k.span,
                    format!("`output_key` `{}` is used by two steps", k.value),
                )
                .with_label("used again here")
                .with_secondary(*first, "first used here")
                .with_help("the later step overwrites the earlier value; use distinct keys");
                self.push(s, Some("output_key"), d);
            } else {
                keys.insert(&k.value, k.span);
            }
        }
    }

    fn per_step_warnings(&mut self) {
        let p = self.p;
        for s in &p.steps {
            if s.step_type() != Some(StepType::Condition) {
                continue;
            }
            if (s.then.is_some()) != (s.otherwise.is_some()) {
                let (has, missing) = if s.then.is_some() {
                    ("then", "otherwise")
                } else {
                    ("otherwise", "then")
                };
                let d = Diagnostic::new(
                    Code::OneSidedCondition,
                    Self::id_span(s),
                    format!(
                        "condition `{}` has `{has}` but no `{missing}`",
                        s.id_str().unwrap_or("?")
                    ),
                )
                .with_label(format!(
                    "when the condition is {}, the run fails",
                    missing == "then"
                ))
                .with_help(format!("add \"{missing}\": \"step_id\""));
                self.push(s, None, d);
            }
            if s.on_error() == program::OnError::Skip {
                let span = s.on_error.as_ref().map_or(s.span, |o| o.span);
                let d = Diagnostic::new(
                    Code::SkipOnCondition,
                    span,
                    "`on_error: skip` on a condition ignores both branches when it fails",
                )
                .with_label("a failing condition falls through to the next step (Q25)")
                .with_help("remove it, and guard the values instead: `$x != None and $x > 1`");
                self.push(s, Some("on_error"), d);
            }
        }
    }

    fn path_names(&self, path: &[graph::NodeId]) -> String {
        path.iter()
            .map(|n| {
                self.p
                    .steps
                    .get(graph::step_of(*n))
                    .and_then(Step::id_str)
                    .unwrap_or("?")
            })
            .collect::<Vec<_>>()
            .join(" → ")
    }

    /// Unreachable steps, cycles, budgets, failure exits.
    fn flow(&mut self, g: &Graph, a: &graph::Analysis) {
        let p = self.p;
        for (i, s) in p.steps.iter().enumerate() {
            if a.step_reachable(i) {
                continue;
            }
            let mut d = Diagnostic::new(
                Code::Unreachable,
                Self::id_span(s),
                format!("step `{}` is never executed", s.id_str().unwrap_or("?")),
            )
            .with_label("no run reaches this step");
            if let Some(prev) = i.checked_sub(1).and_then(|j| p.steps.get(j)) {
                let leaf = a
                    .reachable
                    .get(graph::node(i - 1, Entry::Branch))
                    .copied()
                    .unwrap_or(false)
                    && prev.step_type() != Some(StepType::Condition)
                    && prev.next_step.is_none()
                    && !prev.is_terminal();
                if leaf {
                    d = d
                        .with_secondary(Self::id_span(prev), "entered from a condition branch, this step ends the run")
                        .with_note("a step entered from a condition branch ends the run after it unless it has `next_step` (the branch-leaf rule, DESIGN §3); the reference's checker assumes it falls through, its VM does not")
                        .with_help(format!(
                            "give `{}` a \"next_step\": \"{}\" if the run should continue here",
                            prev.id_str().unwrap_or("?"),
                            s.id_str().unwrap_or("?")
                        ));
                } else if prev.is_terminal() || prev.next_step.is_some() {
                    d = d.with_help("the step before it ends the run or jumps elsewhere; jump here with `next_step` or a branch, or remove the step");
                }
            }
            self.push(s, None, d);
        }
        // Cycles: one diagnostic per step holding a back edge.
        let mut seen = Vec::new();
        for (from, to) in &a.back_edges {
            let (fs, ts) = (graph::step_of(*from), graph::step_of(*to));
            if seen.contains(&fs) {
                continue;
            }
            seen.push(fs);
            let (Some(step), Some(target)) = (p.steps.get(fs), p.steps.get(ts)) else {
                continue;
            };
            let (code, msg) = match &p.max_steps {
                Some(m) => (
                    Code::BoundedCycle,
                    format!(
                        "loop back to `{}`, bounded by max_steps = {}",
                        target.id_str().unwrap_or("?"),
                        m.value
                    ),
                ),
                None => (
                    Code::UnboundedCycle,
                    format!(
                        "loop back to `{}` with nothing to bound it",
                        target.id_str().unwrap_or("?")
                    ),
                ),
            };
            let field = jump_field(step, target.id_str());
            let span = field
                .and_then(|f| match f {
                    "then" => step.then.as_ref(),
                    "otherwise" => step.otherwise.as_ref(),
                    "next_step" => step.next_step.as_ref(),
                    _ => None,
                })
                .map_or(Self::id_span(step), |t| t.span);
            let mut d = Diagnostic::new(code, span, msg)
                .with_label("jumps back here")
                .with_secondary(Self::id_span(target), "the loop starts here");
            if code == Code::UnboundedCycle {
                d = d.with_help("set \"max_steps\" on the program to bound the loop (and consider \"max_stalled_steps\")");
            }
            self.push(step, field, d);
        }
        // Budget.
        if let Some(max) = &p.max_steps {
            let over = |path: &Vec<graph::NodeId>| path.len() as u64 > max.value;
            if let Some(short) = a.shortest.as_ref().filter(|s| over(s)) {
                let d = Diagnostic::new(
                    Code::BudgetNeverFinishes,
                    max.span,
                    format!(
                        "max_steps = {} but the shortest way through runs {} steps",
                        max.value,
                        short.len()
                    ),
                )
                .with_label("every run ends with budget_exceeded")
                .with_note(format!("shortest path: {}", self.path_names(short)))
                .with_help(format!("raise \"max_steps\" to at least {}", short.len()));
                self.diags.push(d.with_pointer("/max_steps"));
            } else if let Some(long) = a.longest.as_ref().filter(|l| over(l)) {
                let d = Diagnostic::new(
                    Code::BudgetBelowLongest,
                    max.span,
                    format!(
                        "max_steps = {} but the longest path runs {} steps",
                        max.value,
                        long.len()
                    ),
                )
                .with_label("runs on this path end with budget_exceeded")
                .with_note(format!("longest path: {}", self.path_names(long)))
                .with_help(format!("raise \"max_steps\" to {}", long.len()));
                self.diags.push(d.with_pointer("/max_steps"));
            }
        }
        // Failure exits (a note).
        let has_failure_exit = (0..g.len()).any(|i| {
            let ends = a
                .reachable_nodes(i)
                .any(|n| a.ends.get(n).copied().unwrap_or(false));
            ends && p.steps.get(i).is_some_and(is_failure_exit)
        });
        if !has_failure_exit
            && self.decoded_cleanly
            && let Some(first) = p.steps.first()
        {
            let d = Diagnostic::new(
                Code::NoFailureTerminal,
                Self::id_span(first),
                "no step that ends the run reads as a failure exit",
            )
            .with_label("the program starts here")
            .with_help("add an ending step such as `escalate_to_human` or `reject` for input the program cannot handle");
            self.push(first, None, d);
        }
    }

    fn view(&self, g: &Graph, a: &graph::Analysis) -> GraphView {
        let p = self.p;
        let mut steps = Vec::with_capacity(p.steps.len());
        let mut edges = Vec::new();
        for (i, s) in p.steps.iter().enumerate() {
            steps.push(ViewStep {
                id: s.id_str().unwrap_or("?").to_owned(),
                kind: s.step_type().map_or("?", StepType::as_str),
                reachable: a.step_reachable(i),
                terminal: s.is_terminal(),
                ends: a
                    .reachable_nodes(i)
                    .any(|n| a.ends.get(n).copied().unwrap_or(false)),
            });
            let mut add = |to: Option<usize>, label: &'static str| {
                // Edges are added step by step: only this step's, at the end, can repeat.
                if let Some(to) = to
                    && !edges
                        .iter()
                        .rev()
                        .take_while(|e: &&ViewEdge| e.from == i)
                        .any(|e| e.to == to && e.label == label)
                {
                    edges.push(ViewEdge { from: i, to, label });
                }
            };
            if s.step_type() == Some(StepType::Condition) {
                for (v, label) in [(true, "then"), (false, "otherwise")] {
                    if let graph::Next::Step(t, _) = g.branch(i, v) {
                        add(Some(t), label);
                    }
                }
                if s.on_error() == program::OnError::Skip
                    && let graph::Next::Step(t, _) = g.skipped_condition(i)
                {
                    add(Some(t), "on error");
                }
            } else {
                for e in [Entry::Sequence, Entry::Branch] {
                    if !a.reachable.get(graph::node(i, e)).copied().unwrap_or(false)
                        && a.step_reachable(i)
                    {
                        continue;
                    }
                    if let graph::Next::Step(t, _) = g.after(i, e) {
                        add(
                            Some(t),
                            if s.next_step.is_some() {
                                "next_step"
                            } else {
                                "next"
                            },
                        );
                    }
                }
            }
        }
        GraphView { steps, edges }
    }
}

/// The field of `step` that jumps to the step with id `to`.
fn jump_field(step: &Step, to: Option<&str>) -> Option<&'static str> {
    let names = |t: &Option<program::Spanned<String>>| {
        t.as_ref().map(|t| t.value.as_str()) == to && to.is_some()
    };
    if step.step_type() == Some(StepType::Condition) {
        if names(&step.then) {
            Some("then")
        } else if names(&step.otherwise) {
            Some("otherwise")
        } else {
            // A skipped failing condition falls through in sequence (Q25).
            Some("on_error")
        }
    } else if step.next_step.is_some() {
        Some("next_step")
    } else {
        None
    }
}

const FAILURE_WORDS: &[&str] = &[
    "FAIL",
    "FAILED",
    "FAILURE",
    "ERROR",
    "REJECT",
    "REJECTED",
    "INSUFFICIENT",
    "BLOCK",
    "BLOCKED",
    "ESCALATE",
    "ESCALATED",
    "ESCALATION",
    "HELP",
    "ABORT",
    "DENY",
    "DENIED",
    "REFUSE",
    "REFUSED",
    "HUMAN",
];

/// Whether a step reads as a failure exit: a whole word of its id or of an allowed output is
/// a failure word (words split at non-alphanumerics and lower→upper case changes).
fn is_failure_exit(s: &Step) -> bool {
    let mut texts: Vec<&str> = s.id_str().into_iter().collect();
    if let Some(a) = &s.allowed_outputs {
        texts.extend(a.value.iter().map(|v| v.value.as_str()));
    }
    texts
        .iter()
        .any(|t| words(t).any(|w| FAILURE_WORDS.contains(&w.to_uppercase().as_str())))
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in text.chars() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase();
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out.into_iter()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::graph::Next;
    use super::*;

    const PROGRAM: &str = r#"{"steps": [
        {"id": "classify", "type": "llm", "prompt": "Classify $ticket for $user.name", "allowed_outputs": ["yes", "no"]},
        {"id": "route", "type": "condition", "condition": "$classify.output == 'yes'", "then": "act", "otherwise": "reject"},
        {"id": "act", "type": "tool", "tool": "do", "args": {"who": "$classify", "nested": ["x $ticket"]}},
        {"id": "reject", "type": "tool", "tool": "no", "is_terminal": true}
    ]}"#;

    #[test]
    fn checked_program_carries_graph_conditions_and_templates() {
        let r = check_source(PROGRAM, &Options::default());
        assert!(r.valid(), "{:?}", r.diagnostics);
        let c = r.checked.unwrap();
        let g = c.graph();
        assert_eq!(g.after(0, Entry::Sequence), Next::Step(1, Entry::Sequence));
        assert_eq!(g.branch(1, true), Next::Step(2, Entry::Branch));
        assert_eq!(g.branch(1, false), Next::Step(3, Entry::Branch));
        // Branch leaf: `act` ends the run when entered from the branch.
        assert_eq!(g.after(2, Entry::Branch), Next::End);
        assert_eq!(g.after(3, Entry::Branch), Next::End);
        assert!(c.condition(1).is_some());
        assert!(c.condition(0).is_none());
        let p = c.program();
        let t = c.text(p.steps[0].prompt.as_ref().unwrap()).unwrap();
        assert_eq!(t.parts.len(), 4);
        let args = p.steps[2].args.as_ref().unwrap();
        let who = args.get("who").unwrap().as_str().unwrap();
        assert!(c.text(who).unwrap().single().is_some());
        let nested = match &args.get("nested").unwrap().kind {
            json::Kind::Array(items) => items[0].as_str().unwrap(),
            _ => unreachable!(),
        };
        assert!(c.text(nested).unwrap().single().is_none());
        // Texts without `$` have no template.
        assert!(c.text(p.steps[1].condition.as_ref().unwrap()).is_none());
    }

    /// 20,000 allowed outputs read by 4,000 references: each reference binds the step's
    /// output type, which is shared, not copied (copies made this take over a minute).
    #[test]
    fn a_large_output_enum_is_shared_by_every_reference() {
        let outs: Vec<String> = (0..20_000).map(|i| format!("\"v{i}\"")).collect();
        let cond = vec!["$a == 'v1'"; 20].join(" or ");
        let mut steps = vec![format!(
            r#"{{"id": "a", "type": "llm", "prompt": "x", "allowed_outputs": [{}]}}"#,
            outs.join(",")
        )];
        for i in 0..200 {
            let next = if i < 199 {
                format!("c{}", i + 1)
            } else {
                "end".to_owned()
            };
            steps.push(format!(
                r#"{{"id": "c{i}", "type": "condition", "condition": "{cond}", "then": "{next}", "otherwise": "end"}}"#
            ));
        }
        steps.push(format!(
            r#"{{"id": "end", "type": "llm", "prompt": "{}"}}"#,
            vec!["$a"; 2_000].join(" ")
        ));
        let text = format!(r#"{{"name": "wide", "steps": [{}]}}"#, steps.join(","));
        let r = check_source(&text, &Options::default());
        let errors: Vec<_> = r.diagnostics.iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        assert!(r.checked.as_ref().and_then(|c| c.condition(1)).is_some());
    }

    #[test]
    fn invalid_programs_have_no_checked_program() {
        let bad = PROGRAM.replace("\"then\": \"act\"", "\"then\": \"acts\"");
        let r = check_source(&bad, &Options::default());
        assert!(!r.valid());
        assert!(r.checked.is_none());
        assert!(
            r.diagnostics.iter().any(|d| d.code == Code::MissingTarget
                && d.help.as_deref() == Some("did you mean `act`?"))
        );
    }

    #[test]
    fn failure_words() {
        let step = |id: &str| {
            let text = format!(r#"{{"steps": [{{"id": "{id}", "type": "tool", "tool": "t"}}]}}"#);
            let (p, _) = program::decode(&json::parse(&text, &Default::default()).root.unwrap());
            p.unwrap().steps.remove(0)
        };
        assert!(is_failure_exit(&step("escalate_to_human")));
        assert!(
            is_failure_exit(&step("sendRejectionMail")) || is_failure_exit(&step("reject-order"))
        );
        assert!(is_failure_exit(&step("reject-order")));
        assert!(!is_failure_exit(&step("helpdesk")));
        assert!(!is_failure_exit(&step("errands")));
    }
}
