//! Strict decoding of the spanned JSON tree into a [`Program`]: no coercion, unknown fields
//! with "did you mean", per-type rules, every error of the file in one pass.

use super::{Input, OnError, OnTimeout, Program, Spanned, Step, StepType};
use crate::diagnostics::{Code, Diagnostic, did_you_mean};
use crate::expr::types::Type;
use crate::json::{Kind, Member, Node, Str, is_integer_text};
use crate::source::Span;
use smallvec::SmallVec;

/// Top-level fields, in the reference's order (plus the `inputs` extension).
pub const FIELDS_PROGRAM: &[&str] = &[
    "name",
    "description",
    "version",
    "steps",
    "max_steps",
    "max_stalled_steps",
    "max_tokens",
    "inputs",
];

/// Step fields, in the reference's order.
pub const FIELDS_STEP: &[&str] = &[
    "id",
    "type",
    "prompt",
    "system",
    "output_key",
    "tool",
    "args",
    "condition",
    "then",
    "otherwise",
    "parallel_steps",
    "max_concurrency",
    "on_error",
    "max_retries",
    "is_terminal",
    "next_step",
    "allowed_outputs",
    "timeout_seconds",
    "on_timeout",
];

/// The index of a step field in [`FIELDS_STEP`] (one `match` instead of a scan: steps are
/// most of a program).
fn step_field_index(key: &str) -> Option<usize> {
    Some(match key {
        "id" => 0,
        "type" => 1,
        "prompt" => 2,
        "system" => 3,
        "output_key" => 4,
        "tool" => 5,
        "args" => 6,
        "condition" => 7,
        "then" => 8,
        "otherwise" => 9,
        "parallel_steps" => 10,
        "max_concurrency" => 11,
        "on_error" => 12,
        "max_retries" => 13,
        "is_terminal" => 14,
        "next_step" => 15,
        "allowed_outputs" => 16,
        "timeout_seconds" => 17,
        "on_timeout" => 18,
        _ => return None,
    })
}

/// Type names an `inputs` declaration may use.
pub const INPUT_TYPES: &[&str] = &[
    "any", "null", "bool", "int", "float", "str", "list", "object",
];

/// Steps (sub-steps included) a program may have.
pub const MAX_STEPS: usize = 100_000;

/// Decode a program. Returns the model (absent only when the root is not an object) and every
/// diagnostic, each with its JSON pointer and step id. The model owns its text: it copies the
/// few strings it keeps (ids, targets, texts, `args` trees) out of a copy of the tree.
pub fn decode(root: &Node<'_>) -> (Option<Program>, Vec<Diagnostic>) {
    decode_owned(root.clone())
}

/// [`decode`] from a tree it may take apart: each step's `args` object moves out of the tree
/// into the model (its text copied, its vectors reused) instead of being copied whole.
pub fn decode_owned(mut root: Node<'_>) -> (Option<Program>, Vec<Diagnostic>) {
    let mut d = Decoder {
        diags: Vec::new(),
        errors: 0,
        count: 0,
    };
    let mut p = d.program(&root);
    if let (Some(p), Kind::Object(members)) = (&mut p, &mut root.kind)
        && let Some(steps) = members.iter_mut().find(|m| m.key.value == "steps")
        && let Kind::Array(items) = &mut steps.value.kind
    {
        take_args(&mut p.steps, items);
    }
    (p, d.diags)
}

/// Move the `args` objects of `steps`, decoded from `items` with placeholders (same span,
/// `null`) for their args, out of the tree. Steps come from the items in order (an item that
/// is not an object makes no step; the step limit stops early); each step's fields are the
/// first members with their keys, as [`Decoder::fields`] takes them.
fn take_args(steps: &mut [Step], items: &mut [Node<'_>]) {
    let mut items = items.iter_mut();
    for s in steps {
        let Some(item) = items.find(|n| n.span == s.span) else {
            return;
        };
        let Kind::Object(members) = &mut item.kind else {
            continue;
        };
        if let Some(args) = &mut s.args
            && let Some(m) = members.iter_mut().find(|m| m.key.value == "args")
        {
            let span = m.value.span;
            *args = std::mem::replace(
                &mut m.value,
                Node {
                    span,
                    kind: Kind::Null,
                },
            )
            .into_static();
        }
        if !s.parallel_steps.is_empty()
            && let Some(m) = members.iter_mut().find(|m| m.key.value == "parallel_steps")
            && let Kind::Array(subs) = &mut m.value.kind
        {
            take_args(&mut s.parallel_steps, subs);
        }
    }
}

struct Decoder {
    diags: Vec<Diagnostic>,
    /// Errors among `diags`.
    errors: usize,
    count: usize,
}

/// Where a value sits: its pointer (`ptr`, then `/field` when there is one; only a
/// diagnostic spells it out) and the step it belongs to.
#[derive(Clone, Copy)]
struct At<'a> {
    ptr: &'a str,
    field: Option<&'a str>,
    step: Option<&'a str>,
}

impl At<'_> {
    fn pointer(&self) -> String {
        match self.field {
            Some(f) => child(self.ptr, f),
            None => self.ptr.to_owned(),
        }
    }
}

fn child(ptr: &str, key: &str) -> String {
    let mut s = String::with_capacity(ptr.len() + key.len() + 1);
    s.push_str(ptr);
    crate::json::push_pointer_segment(&mut s, key);
    s
}

impl Decoder {
    fn push(&mut self, at: At<'_>, d: Diagnostic) {
        if d.is_error() {
            self.errors += 1;
        }
        self.diags
            .push(d.with_pointer(at.pointer()).with_step_id(at.step));
    }

    fn wrong_type(&mut self, at: At<'_>, node: &Node, field: &str, want: &str) {
        let got = node.type_name();
        let mut d = Diagnostic::new(
            Code::WrongType,
            node.span,
            format!("`{field}` must be {want}, not {} {got}", article(got)),
        )
        .with_label(format!("this is {} {got}", article(got)));
        if let Kind::String(s) = &node.kind {
            let t = s.value.trim();
            if want.contains("integer") && t.parse::<i64>().is_ok() {
                d = d.with_help(format!("write the number without quotes: {t}"));
            } else if want.contains("boolean") && matches!(t, "true" | "false") {
                d = d.with_help(format!("write the boolean without quotes: {t}"));
            } else if want.contains("boolean") {
                d = d.with_help("nothing is coerced: write true or false");
            }
        }
        self.push(at, d);
    }

    /// The members of an object, or a wrong-type diagnostic.
    fn object<'n, 's>(
        &mut self,
        node: &'n Node<'s>,
        at: At<'_>,
        field: &str,
    ) -> Option<&'n [Member<'s>]> {
        match &node.kind {
            Kind::Object(ms) => Some(ms),
            _ => {
                self.wrong_type(at, node, field, "an object");
                None
            }
        }
    }

    /// Known fields in order; unknown ones reported. Duplicate keys (already reported by the
    /// JSON layer) keep their first value.
    fn fields<'n>(
        &mut self,
        members: &'n [Member<'_>],
        known: &[&'static str],
        at: At<'_>,
        what: &str,
    ) -> SmallVec<[(&'static str, &'n Member<'n>); 8]> {
        // Known fields are fewer than 64: a bit per field.
        let mut seen = 0u64;
        let mut out = SmallVec::with_capacity(members.len());
        let by_match = std::ptr::eq(known, FIELDS_STEP);
        for m in members {
            let key = m.key.as_str();
            let index = if by_match {
                step_field_index(key)
            } else {
                known.iter().position(|k| *k == key)
            };
            match index {
                Some(i) => {
                    let bit = 1u64 << (i % 64);
                    if seen & bit == 0 {
                        seen |= bit;
                        if let Some(k) = known.get(i) {
                            out.push((*k, m));
                        }
                    }
                }
                None => {
                    let mut d = Diagnostic::new(
                        Code::UnknownField,
                        m.key.span,
                        format!("unknown field `{key}` in {what}"),
                    )
                    .with_label("not a field of the Program format");
                    d = match did_you_mean(key, known.iter().copied(), 3)
                        .or_else(|| case_match(key, known))
                        .or_else(|| part_of_one(key, known))
                    {
                        Some(s) => d.with_help(format!("did you mean `{s}`?")),
                        None => {
                            d.with_help(format!("the fields of {what} are: {}", known.join(", ")))
                        }
                    };
                    self.push(
                        At {
                            ptr: &child(&at.pointer(), key),
                            field: None,
                            ..at
                        },
                        d,
                    );
                }
            }
        }
        out
    }

    fn string(&mut self, node: &Node, at: At<'_>, field: &str) -> Option<Spanned<String>> {
        match &node.kind {
            Kind::String(s) => Some(Spanned::new(s.as_str().to_owned(), node.span)),
            _ => {
                self.wrong_type(at, node, field, "a string");
                None
            }
        }
    }

    fn nonempty(&mut self, node: &Node, at: At<'_>, field: &str) -> Option<Spanned<String>> {
        let s = self.string(node, at, field)?;
        if s.value.trim().is_empty() {
            self.push(
                at,
                Diagnostic::new(Code::EmptyValue, node.span, format!("`{field}` is empty"))
                    .with_label("empty")
                    .with_help(format!("give `{field}` a value, or remove it")),
            );
            return None;
        }
        Some(s)
    }

    fn bool(&mut self, node: &Node, at: At<'_>, field: &str) -> Option<Spanned<bool>> {
        match node.kind {
            Kind::Bool(b) => Some(Spanned::new(b, node.span)),
            _ => {
                self.wrong_type(at, node, field, "a boolean");
                None
            }
        }
    }

    /// An integer in `min..=max`.
    fn int(
        &mut self,
        node: &Node,
        at: At<'_>,
        field: &str,
        min: u64,
        max: u64,
    ) -> Option<Spanned<u64>> {
        let Kind::Number(text) = &node.kind else {
            self.wrong_type(at, node, field, "an integer");
            return None;
        };
        if !is_integer_text(text) {
            self.wrong_type(at, node, field, "an integer");
            return None;
        }
        match text.parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => Some(Spanned::new(v, node.span)),
            _ => {
                let range = if max == u64::MAX {
                    format!("at least {min}")
                } else {
                    format!("from {min} to {max}")
                };
                let mut d = Diagnostic::new(
                    Code::NumberRange,
                    node.span,
                    format!("`{field}` must be an integer {range}"),
                )
                .with_label(format!("{text} is out of range"));
                if field == "max_stalled_steps" && text.as_ref() == "0" {
                    d = d.with_help("0 would stop every run after its first step; use 1 or more, or remove the field");
                }
                self.push(at, d);
                None
            }
        }
    }

    fn enumeration<T: Copy>(
        &mut self,
        node: &Node,
        at: At<'_>,
        field: &str,
        all: &[(&'static str, T)],
    ) -> Option<Spanned<T>> {
        let s = self.string(node, at, field)?;
        if let Some((_, v)) = all.iter().find(|(n, _)| *n == s.value) {
            return Some(Spanned::new(*v, node.span));
        }
        let names: Vec<&str> = all.iter().map(|(n, _)| *n).collect();
        let mut d = Diagnostic::new(
            Code::InvalidEnum,
            node.span,
            format!("`{field}` must be one of {}", names.join(", ")),
        )
        .with_label(format!("\"{}\" is not one of them", s.value));
        if let Some(m) = did_you_mean(&s.value, names.iter().copied(), 2)
            .or_else(|| case_match(&s.value, &names))
        {
            d = d.with_help(format!("did you mean \"{m}\"?"));
        }
        self.push(at, d);
        None
    }

    fn program(&mut self, root: &Node) -> Option<Program> {
        let at = At {
            ptr: "",
            field: None,
            step: None,
        };
        let Kind::Object(members) = &root.kind else {
            self.push(
                at,
                Diagnostic::new(
                    Code::WrongType,
                    root.span,
                    format!("a program must be a JSON object, not {}", root.type_name()),
                )
                .with_label(format!(
                    "this is {} {}",
                    article(root.type_name()),
                    root.type_name()
                ))
                .with_help("write {\"name\": \"...\", \"steps\": [ ... ]}"),
            );
            return None;
        };
        let mut p = Program {
            name: None,
            description: None,
            version: None,
            steps: Vec::new(),
            steps_span: root.span,
            max_steps: None,
            max_stalled_steps: None,
            max_tokens: None,
            inputs: None,
            span: root.span,
        };
        let mut has_steps = false;
        for (field, m) in self.fields(members, FIELDS_PROGRAM, at, "a program") {
            let ptr = child("", field);
            let fat = At {
                ptr: &ptr,
                field: None,
                step: None,
            };
            let v = &m.value;
            match field {
                "name" => p.name = self.string(v, fat, field),
                "description" => p.description = self.string(v, fat, field),
                "version" => p.version = self.string(v, fat, field),
                "max_steps" => p.max_steps = self.int(v, fat, field, 1, u64::MAX),
                "max_stalled_steps" => p.max_stalled_steps = self.int(v, fat, field, 1, u64::MAX),
                "max_tokens" => p.max_tokens = self.int(v, fat, field, 1, u64::MAX),
                "inputs" => p.inputs = self.inputs(v, fat),
                _ => {
                    has_steps = true;
                    p.steps_span = v.span;
                    let Kind::Array(items) = &v.kind else {
                        self.wrong_type(fat, v, field, "an array of steps");
                        continue;
                    };
                    if items.is_empty() {
                        self.push(
                            fat,
                            Diagnostic::new(Code::EmptyValue, v.span, "`steps` is empty")
                                .with_label("a program needs at least one step")
                                .with_help("add a step such as {\"id\": \"a\", \"type\": \"tool\", \"tool\": \"t\"}"),
                        );
                    }
                    p.steps = self.steps(items, &ptr, false);
                }
            }
        }
        if !has_steps {
            self.push(
                At {
                    ptr: "/steps",
                    field: None,
                    step: None,
                },
                Diagnostic::new(
                    Code::MissingField,
                    Span::new(root.span.start, root.span.start + 1),
                    "a program needs `steps`",
                )
                .with_label("this object has no `steps`")
                .with_help("add \"steps\": [ ... ] with at least one step"),
            );
        }
        Some(p)
    }

    fn inputs(&mut self, node: &Node, at: At<'_>) -> Option<Vec<Input>> {
        let members = self.object(node, at, "inputs")?;
        let mut out = Vec::with_capacity(members.len());
        let mut ok = true;
        let base = at.pointer();
        for m in members {
            let ptr = child(&base, &m.key.value);
            let iat = At {
                ptr: &ptr,
                field: None,
                step: None,
            };
            let Some(t) = self.string(&m.value, iat, &format!("inputs.{}", m.key.value)) else {
                ok = false;
                continue;
            };
            let ty = match t.value.as_str() {
                "any" => Type::Any,
                "null" => Type::Null,
                "bool" => Type::Bool,
                "int" => Type::Int,
                "float" => Type::Float,
                "str" => Type::Str,
                "list" => Type::List(Box::new(Type::Any)),
                // Fields unknown: reads are checked at run time.
                "object" => Type::Any,
                other => {
                    let mut d = Diagnostic::new(
                        Code::InvalidEnum,
                        m.value.span,
                        format!("an input type must be one of {}", INPUT_TYPES.join(", ")),
                    )
                    .with_label(format!("\"{other}\" is not one of them"));
                    // JSON Schema and Python spellings of the same types.
                    let alias = match other {
                        "integer" => Some("int"),
                        "string" => Some("str"),
                        "boolean" => Some("bool"),
                        "number" => Some("float"),
                        "array" => Some("list"),
                        "dict" => Some("object"),
                        _ => None,
                    };
                    if let Some(s) =
                        alias.or_else(|| did_you_mean(other, INPUT_TYPES.iter().copied(), 2))
                    {
                        d = d.with_help(format!("did you mean \"{s}\"?"));
                    }
                    self.push(iat, d);
                    ok = false;
                    continue;
                }
            };
            out.push(Input {
                name: Spanned::new(m.key.as_str().to_owned(), m.key.span),
                ty,
            });
        }
        ok.then_some(out)
    }

    fn steps(&mut self, items: &[Node], ptr: &str, sub: bool) -> Vec<Step> {
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            self.count += 1;
            if self.count == MAX_STEPS + 1 {
                self.push(
                    At {
                        ptr,
                        field: None,
                        step: None,
                    },
                    Diagnostic::new(
                        Code::TooManySteps,
                        item.span,
                        format!("the program has more than {MAX_STEPS} steps"),
                    )
                    .with_label("this step is one too many"),
                );
            }
            if self.count > MAX_STEPS {
                break;
            }
            let mut sptr = String::with_capacity(ptr.len() + 6);
            sptr.push_str(ptr);
            sptr.push('/');
            push_decimal(&mut sptr, i);
            if let Some(s) = self.step(item, sptr, sub) {
                out.push(s);
            }
        }
        out
    }

    fn step(&mut self, node: &Node, ptr: String, sub: bool) -> Option<Step> {
        let members = self.object(
            node,
            At {
                ptr: &ptr,
                field: None,
                step: None,
            },
            "a step",
        )?;
        let errors_before = self.errors;
        // The id first: every other diagnostic of the step names it.
        let id_member = members.iter().find(|m| m.key.value == "id");
        let sid = id_member.and_then(|m| m.value.as_str()).map(Str::as_str);
        let at = At {
            ptr: &ptr,
            field: None,
            step: sid,
        };
        let mut s = Step {
            // Set at the end (`ptr` is borrowed until then).
            pointer: String::new(),
            span: node.span,
            id: None,
            kind: None,
            prompt: None,
            system: None,
            output_key: None,
            tool: None,
            args: None,
            condition: None,
            then: None,
            otherwise: None,
            parallel_steps: Vec::new(),
            max_concurrency: None,
            on_error: None,
            max_retries: None,
            is_terminal: None,
            next_step: None,
            allowed_outputs: None,
            timeout_seconds: None,
            on_timeout: None,
            ok: true,
            flow_ok: true,
        };
        let mut flow_broken = false;
        let mut present: SmallVec<[(&'static str, Span); 8]> = SmallVec::new();
        let mut parallel_node = None;
        for (field, m) in self.fields(members, FIELDS_STEP, at, "a step") {
            let fat = At {
                field: Some(field),
                ..at
            };
            let v = &m.value;
            let before = self.diags.len();
            present.push((field, m.key.span));
            match field {
                "id" => s.id = self.nonempty(v, fat, field),
                "type" => s.kind = self.enumeration(v, fat, field, &StepType::ALL),
                "prompt" => s.prompt = self.text(v, fat, field),
                "system" => s.system = self.text(v, fat, field),
                "output_key" => s.output_key = self.nonempty(v, fat, field),
                "tool" => s.tool = self.nonempty(v, fat, field),
                "args" => {
                    if self.object(v, fat, field).is_some() {
                        // A placeholder: `take_args` moves the object in.
                        s.args = Some(Node {
                            span: v.span,
                            kind: Kind::Null,
                        });
                    }
                }
                "condition" => s.condition = self.text(v, fat, field),
                "then" => s.then = self.nonempty(v, fat, field),
                "otherwise" => s.otherwise = self.nonempty(v, fat, field),
                "parallel_steps" => parallel_node = Some(v),
                "max_concurrency" => s.max_concurrency = self.int(v, fat, field, 1, u64::MAX),
                "on_error" => s.on_error = self.enumeration(v, fat, field, &OnError::ALL),
                "max_retries" => {
                    s.max_retries = self
                        .int(v, fat, field, 0, 100)
                        .map(|n| Spanned::new(u32::try_from(n.value).unwrap_or(100), n.span));
                }
                "is_terminal" => s.is_terminal = self.bool(v, fat, field),
                "next_step" => s.next_step = self.nonempty(v, fat, field),
                "allowed_outputs" => s.allowed_outputs = self.allowed(v, fat),
                "timeout_seconds" => s.timeout_seconds = self.seconds(v, fat),
                _ => s.on_timeout = self.enumeration(v, fat, field, &OnTimeout::ALL),
            }
            if self.diags.len() > before
                && matches!(
                    field,
                    "id" | "type" | "then" | "otherwise" | "next_step" | "is_terminal"
                )
            {
                flow_broken = true;
            }
        }
        if let Some(v) = parallel_node {
            let pptr = child(&ptr, "parallel_steps");
            match &v.kind {
                Kind::Array(items) => {
                    s.parallel_steps = self.steps(items, &pptr, true);
                }
                _ => {
                    self.wrong_type(
                        At {
                            ptr: &pptr,
                            field: None,
                            ..at
                        },
                        v,
                        "parallel_steps",
                        "an array of steps",
                    );
                }
            }
        }
        if s.id.is_none() && id_member.is_none() {
            self.missing(
                at,
                &ptr,
                node,
                "id",
                "a step needs an `id`",
                "add \"id\": \"a_unique_name\"",
            );
            flow_broken = true;
        }
        match s.kind.as_ref().map(|k| k.value) {
            None if !present.iter().any(|(f, _)| *f == "type") => {
                self.missing(
                    at,
                    &ptr,
                    node,
                    "type",
                    "a step needs a `type`",
                    "add \"type\": one of llm, tool, condition, parallel",
                );
                flow_broken = true;
            }
            None => flow_broken = true,
            Some(t) => self.type_rules(&mut s, t, &present, at, node, sub),
        }
        s.flow_ok = !flow_broken && s.flow_ok && s.parallel_steps.iter().all(|p| p.flow_ok);
        s.ok = self.errors == errors_before;
        s.pointer = ptr;
        Some(s)
    }

    fn missing(&mut self, at: At<'_>, ptr: &str, node: &Node, field: &str, msg: &str, help: &str) {
        self.push(
            At {
                ptr,
                field: Some(field),
                ..at
            },
            Diagnostic::new(Code::MissingField, open_brace(node), msg)
                .with_label(format!("this step has no `{field}`"))
                .with_help(help),
        );
    }

    fn type_rules(
        &mut self,
        s: &mut Step,
        t: StepType,
        present: &[(&'static str, Span)],
        at: At<'_>,
        node: &Node,
        sub: bool,
    ) {
        let has = |f: &str| present.iter().any(|(p, _)| *p == f);
        let ptr = at.ptr;
        match t {
            StepType::Llm if !has("prompt") => {
                self.missing(
                    at,
                    ptr,
                    node,
                    "prompt",
                    "an llm step needs a `prompt`",
                    "add \"prompt\": \"...\"",
                );
            }
            StepType::Tool if !has("tool") => {
                self.missing(
                    at,
                    ptr,
                    node,
                    "tool",
                    "a tool step needs a `tool`",
                    "add \"tool\": \"tool_name\"",
                );
            }
            StepType::Condition => {
                if !has("condition") {
                    self.missing(
                        at,
                        ptr,
                        node,
                        "condition",
                        "a condition step needs a `condition`",
                        "add \"condition\": \"$step.output == 'yes'\"",
                    );
                }
                if !has("then") && !has("otherwise") {
                    s.flow_ok = false;
                    self.missing(
                        at,
                        ptr,
                        node,
                        "then",
                        "a condition step needs `then` or `otherwise`",
                        "add \"then\": \"step_id\" and \"otherwise\": \"step_id\"",
                    );
                }
            }
            StepType::Parallel if !has("parallel_steps") => {
                self.missing(
                    at,
                    ptr,
                    node,
                    "parallel_steps",
                    "a parallel step needs `parallel_steps`",
                    "add \"parallel_steps\": [ ... llm or tool steps ... ]",
                );
            }
            StepType::Parallel if s.parallel_steps.is_empty() => {
                if let Some((_, span)) = present.iter().find(|(f, _)| *f == "parallel_steps") {
                    self.push(
                        At {
                            field: Some("parallel_steps"),
                            ..at
                        },
                        Diagnostic::new(Code::EmptyValue, *span, "`parallel_steps` is empty")
                            .with_label("a parallel step needs at least one sub-step"),
                    );
                }
            }
            _ => {}
        }
        if t == StepType::Parallel {
            for sub_step in &s.parallel_steps {
                if let Some(k) = &sub_step.kind
                    && matches!(k.value, StepType::Condition | StepType::Parallel)
                {
                    self.push(
                        At {
                            ptr: &sub_step.pointer,
                            field: Some("type"),
                            step: at.step,
                        },
                        Diagnostic::new(
                            Code::SubstepType,
                            k.span,
                            format!("a parallel sub-step cannot be a {} step", k.value.as_str()),
                        )
                        .with_label("only llm and tool sub-steps are allowed")
                        .with_help("move it out of `parallel_steps`, after the parallel step"),
                    );
                }
            }
        }
        // A condition or parallel sub-step is reported by its parent (NV0018); its own fields
        // are not judged again.
        if sub && matches!(t, StepType::Condition | StepType::Parallel) {
            return;
        }
        // Fields the type cannot use: errors for control flow and validation, warnings otherwise.
        for (field, span) in present {
            let misplaced = match *field {
                "then" | "otherwise" => t != StepType::Condition || sub,
                "next_step" => t == StepType::Condition || sub,
                "is_terminal" => t == StepType::Condition || sub,
                "allowed_outputs" => t != StepType::Llm,
                _ => false,
            };
            let ignored = match *field {
                "prompt" | "system" | "timeout_seconds" | "on_timeout" => t != StepType::Llm,
                "tool" | "args" => t != StepType::Tool,
                "condition" => t != StepType::Condition,
                "parallel_steps" | "max_concurrency" => t != StepType::Parallel,
                _ => false,
            };
            if !misplaced && !ignored {
                continue;
            }
            let fat = At {
                field: Some(field),
                ..at
            };
            let where_ = if sub {
                "a parallel sub-step".to_owned()
            } else {
                format!("{} {} step", article(t.as_str()), t.as_str())
            };
            if misplaced {
                let help = match *field {
                    "then" | "otherwise" if sub => {
                        "sub-steps have no control flow; put the branch on a condition step after the parallel step"
                    }
                    "then" | "otherwise" => "only condition steps branch; use `next_step` to jump",
                    "next_step" | "is_terminal" if sub => {
                        "sub-steps have no control flow; put it on the parallel step"
                    }
                    "next_step" => {
                        "a condition always jumps to `then` or `otherwise`; the reference ignores its `next_step` (Q45)"
                    }
                    "is_terminal" => {
                        "a condition always jumps; make its branch target terminal instead"
                    }
                    _ => "`allowed_outputs` validates an llm reply; remove it here",
                };
                self.push(
                    fat,
                    Diagnostic::new(
                        Code::MisplacedField,
                        *span,
                        format!("`{field}` is not allowed on {where_}"),
                    )
                    .with_label("misplaced field")
                    .with_help(help),
                );
            } else if ignored {
                self.push(
                    fat,
                    Diagnostic::new(
                        Code::IgnoredField,
                        *span,
                        format!("`{field}` has no effect on {where_}"),
                    )
                    .with_label("ignored at run time")
                    .with_help("remove it, or change the step's `type`"),
                );
            }
        }
        if s.is_terminal() && s.next_step.is_some() && !sub && t != StepType::Condition {
            let (tspan, nspan) = (
                s.is_terminal.as_ref().map_or(s.span, |x| x.span),
                s.next_step.as_ref().map_or(s.span, |x| x.span),
            );
            self.push(
                At {
                    field: Some("next_step"),
                    ..at
                },
                Diagnostic::new(Code::TerminalWithNext, nspan, "`is_terminal` and `next_step` on one step")
                    .with_label("`next_step` here")
                    .with_secondary(tspan, "`is_terminal` here")
                    .with_help("the reference honours one or the other depending on how the step is reached (Q22); keep one"),
            );
        }
        if sub {
            let no_effect = |f: &str| match f {
                "output_key" => true,
                "on_error" => s.allowed_outputs.is_none(),
                _ => false,
            };
            for (field, span) in present.iter().filter(|(f, _)| no_effect(f)) {
                let msg = if *field == "output_key" {
                    "`output_key` on a parallel sub-step has no effect (Q34)"
                } else {
                    "`on_error` on a parallel sub-step has no effect: the parent's decides (Q33)"
                };
                self.push(
                    At {
                        field: Some(field),
                        ..at
                    },
                    Diagnostic::new(Code::SubstepNoEffect, *span, msg)
                        .with_label("ignored at run time")
                        .with_help("read sub-step outputs as `$parent.output.sub_id`; set `on_error` on the parallel step"),
                );
            }
        }
    }

    /// A prompt, system text or condition: a non-empty string, kept with its source map.
    fn text(&mut self, node: &Node, at: At<'_>, field: &str) -> Option<Str<'static>> {
        self.nonempty(node, at, field)?;
        node.as_str().cloned().map(Str::into_static)
    }

    fn allowed(&mut self, node: &Node, at: At<'_>) -> Option<Spanned<Vec<Spanned<String>>>> {
        let Kind::Array(items) = &node.kind else {
            self.wrong_type(at, node, "allowed_outputs", "an array of strings");
            return None;
        };
        if items.is_empty() {
            self.push(
                at,
                Diagnostic::new(Code::EmptyValue, node.span, "`allowed_outputs` is empty")
                    .with_label("no reply could ever be accepted")
                    .with_help("list the accepted replies, or remove the field"),
            );
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if let Kind::String(s) = &item.kind {
                out.push(Spanned::new(s.as_str().to_owned(), item.span));
                continue;
            }
            let iptr = child(&at.pointer(), &i.to_string());
            out.push(self.string(
                item,
                At {
                    ptr: &iptr,
                    field: None,
                    ..at
                },
                &format!("allowed_outputs[{i}]"),
            )?);
        }
        Some(Spanned::new(out, node.span))
    }

    fn seconds(&mut self, node: &Node, at: At<'_>) -> Option<Spanned<f64>> {
        let Kind::Number(text) = &node.kind else {
            self.wrong_type(at, node, "timeout_seconds", "a number");
            return None;
        };
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Some(Spanned::new(v, node.span)),
            _ => {
                self.push(
                    at,
                    Diagnostic::new(
                        Code::NumberRange,
                        node.span,
                        "`timeout_seconds` must be a number above 0 and at most 86400",
                    )
                    .with_label(format!("{text} is out of range")),
                );
                None
            }
        }
    }
}

/// Append `n` in decimal (what `write!(s, "{n}")` writes, without the formatting machinery).
fn push_decimal(s: &mut String, n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        if let Some(d) = digits.get_mut(at) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in digits.get(at..).unwrap_or_default() {
        s.push(char::from(d));
    }
}

fn open_brace(node: &Node) -> Span {
    Span::new(node.span.start, node.span.start + 1)
}

/// `a` or `an` before a type name or step type (`an llm step`: said "el-el-em").
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) || word == "llm" {
        "an"
    } else {
        "a"
    }
}

/// The only known name that contains `name`, case-insensitively (`retries` for
/// `max_retries`); none for short names or when several do (`timeout`).
fn part_of_one<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    if name.chars().count() < 4 {
        return None;
    }
    let lower = name.to_lowercase();
    let mut hits = known.iter().copied().filter(|k| k.contains(lower.as_str()));
    match (hits.next(), hits.next()) {
        (Some(k), None) => Some(k),
        _ => None,
    }
}

/// A case-insensitive exact match (`Type` for `type`, `LLM` for `llm`).
fn case_match<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known.iter().copied().find(|k| k.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_as_formatted() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, usize::MAX] {
            let mut s = String::from("/steps/");
            push_decimal(&mut s, n);
            assert_eq!(s, format!("/steps/{n}"));
        }
    }

    #[test]
    fn step_field_index_matches_the_field_list() {
        for (i, f) in FIELDS_STEP.iter().enumerate() {
            assert_eq!(step_field_index(f), Some(i), "{f}");
        }
        for other in ["", "ID", "Id", "types", "arg", "name", "steps"] {
            assert_eq!(step_field_index(other), None, "{other}");
        }
    }
}
