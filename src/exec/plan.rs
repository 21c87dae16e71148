//! A checked program prepared for running: every step's texts and args split into literal
//! parts and `$references` once (from the checker's templates), so a run only looks values up.

use crate::check::{CheckedProgram, Part, Template};
use crate::expr::names::{Scope, lookup};
use crate::json::{Kind, Node};
use crate::program::{OnError, OnTimeout, Step, StepType};
use serde_json::{Map, Value};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

/// A prompt or system text.
#[derive(Debug, Clone)]
pub(crate) enum Text {
    Lit(String),
    Tpl(Template),
}

/// An `args` value: constant subtrees stay as they are.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Const(Value),
    Tpl(Template),
    Array(Vec<Arg>),
    /// The keys with `null` values (cloning it copies the keys and the hash table without
    /// hashing anything), and the values in the map's iteration order.
    Object(Map<String, Value>, Vec<Arg>),
}

#[derive(Debug, Clone)]
pub(crate) struct StepPlan {
    pub id: String,
    pub kind: StepType,
    pub prompt: Option<Text>,
    pub system: Option<Text>,
    pub tool: String,
    pub args: Option<Arg>,
    pub output_key: Option<String>,
    pub on_error: OnError,
    pub max_retries: u32,
    pub allowed: Option<Vec<String>>,
    pub timeout: Option<Duration>,
    pub on_timeout: OnTimeout,
    pub max_concurrency: Option<usize>,
    /// The condition as written (for messages).
    pub condition: String,
    pub subs: Vec<StepPlan>,
    /// This step id's output slot (see [`Slots`]).
    pub slot: usize,
    /// The alias slot of `output_key` (top-level steps).
    pub alias: Option<usize>,
}

/// Where a name can be bound during a run: as a step id (its output slot) and as an
/// `output_key` (its alias slot). Slots number the program's step ids and output keys, so a
/// run keeps its bindings in two small vectors instead of cloning outputs into maps.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Slots {
    pub step: Option<usize>,
    pub alias: Option<usize>,
}

/// FxHash (rustc's hasher): names are program identifiers, not adversarial input.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let (words, rest) = bytes.as_chunks::<8>();
        for w in words {
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(*w)).wrapping_mul(K);
        }
        // The last 1 to 7 bytes, zero-padded, little-endian (no memcpy call for them).
        let last = rest
            .iter()
            .enumerate()
            .fold(0u64, |w, (i, &b)| w | u64::from(b) << (8 * i));
        self.0 = (self.0.rotate_left(5) ^ last).wrapping_mul(K);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type Names = HashMap<Box<str>, Slots, BuildHasherDefault<FxHasher>>;

/// A checked program ready to run (build once, run many times).
#[derive(Debug, Clone)]
pub struct Runnable {
    checked: CheckedProgram,
    pub(crate) steps: Vec<StepPlan>,
    pub(crate) name: String,
    pub(crate) max_steps: Option<u64>,
    pub(crate) max_stalled_steps: Option<u64>,
    pub(crate) max_tokens: Option<u64>,
    /// Step ids and output keys → their slots.
    pub(crate) names: Names,
    /// Slot → step id, slot → output key.
    pub(crate) step_names: Vec<String>,
    pub(crate) alias_names: Vec<String>,
    /// Records of a run through every step once (a first capacity for the trace).
    pub(crate) records_hint: usize,
}

impl Runnable {
    pub fn new(checked: CheckedProgram) -> Self {
        let p = checked.program();
        let mut steps: Vec<StepPlan> = p.steps.iter().map(|s| step_plan(&checked, s)).collect();
        let mut names = Names::default();
        let (mut step_names, mut alias_names) = (Vec::new(), Vec::new());
        for s in &mut steps {
            assign_slots(s, &mut names, &mut step_names);
            if let Some(k) = &s.output_key {
                let slots = names.entry(k.as_str().into()).or_default();
                s.alias = Some(*slots.alias.get_or_insert_with(|| {
                    alias_names.push(k.clone());
                    alias_names.len() - 1
                }));
            }
        }
        Self {
            records_hint: steps.iter().map(|s| 1 + s.subs.len()).sum(),
            names,
            step_names,
            alias_names,
            name: p.name.as_ref().map(|n| n.value.clone()).unwrap_or_default(),
            max_steps: p.max_steps.as_ref().map(|v| v.value),
            max_stalled_steps: p.max_stalled_steps.as_ref().map(|v| v.value),
            max_tokens: p.max_tokens.as_ref().map(|v| v.value),
            steps,
            checked,
        }
    }

    pub fn checked(&self) -> &CheckedProgram {
        &self.checked
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Top-level step ids, in order.
    pub fn step_ids(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(|s| s.id.as_str())
    }
}

fn step_plan(checked: &CheckedProgram, s: &Step) -> StepPlan {
    let text = |t: &Option<crate::json::Str>| {
        t.as_ref().map(|t| match checked.text(t) {
            Some(tpl) => Text::Tpl(tpl.clone()),
            None => Text::Lit(t.as_str().to_owned()),
        })
    };
    let args = s.args.as_ref().map(|a| arg_plan(checked, a));
    StepPlan {
        id: s.id_str().unwrap_or_default().to_owned(),
        kind: s.step_type().unwrap_or(StepType::Tool),
        prompt: text(&s.prompt),
        system: text(&s.system),
        tool: s.tool.as_ref().map(|t| t.value.clone()).unwrap_or_default(),
        args,
        output_key: s.output_key.as_ref().map(|k| k.value.clone()),
        on_error: s.on_error(),
        max_retries: s.max_retries(),
        allowed: s
            .allowed_outputs
            .as_ref()
            .map(|a| a.value.iter().map(|v| v.value.clone()).collect()),
        timeout: s
            .timeout_seconds
            .as_ref()
            .and_then(|t| Duration::try_from_secs_f64(t.value).ok()),
        on_timeout: s.on_timeout(),
        max_concurrency: s
            .max_concurrency
            .as_ref()
            .map(|m| usize::try_from(m.value).unwrap_or(usize::MAX).max(1)),
        condition: s
            .condition
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default(),
        subs: s
            .parallel_steps
            .iter()
            .map(|c| step_plan(checked, c))
            .collect(),
        slot: 0,
        alias: None,
    }
}

/// Give a step and its sub-steps the output slots of their ids (one slot per distinct id).
fn assign_slots(s: &mut StepPlan, names: &mut Names, slot_names: &mut Vec<String>) {
    let slots = names.entry(s.id.as_str().into()).or_default();
    s.slot = *slots.step.get_or_insert_with(|| {
        slot_names.push(s.id.clone());
        slot_names.len() - 1
    });
    for sub in &mut s.subs {
        assign_slots(sub, names, slot_names);
    }
}

fn arg_plan(checked: &CheckedProgram, node: &Node) -> Arg {
    match &node.kind {
        Kind::String(s) => match checked.text(s) {
            Some(t) => Arg::Tpl(t.clone()),
            None => Arg::Const(node.to_value()),
        },
        Kind::Array(items) => {
            let plans: Vec<Arg> = items.iter().map(|x| arg_plan(checked, x)).collect();
            if plans.iter().all(|p| matches!(p, Arg::Const(_))) {
                Arg::Const(node.to_value())
            } else {
                Arg::Array(plans)
            }
        }
        Kind::Object(ms) => {
            let mut plans: Vec<(String, Arg)> = Vec::with_capacity(ms.len());
            for m in ms {
                // Duplicate keys: the first wins, as everywhere in nanovm.
                if plans.iter().any(|(k, _)| *k == m.key.value) {
                    continue;
                }
                plans.push((m.key.as_str().to_owned(), arg_plan(checked, &m.value)));
            }
            if plans.iter().all(|(_, p)| matches!(p, Arg::Const(_))) {
                Arg::Const(node.to_value())
            } else {
                let shape: Map<String, Value> = plans
                    .iter()
                    .map(|(k, _)| (k.clone(), Value::Null))
                    .collect();
                let values = shape
                    .keys()
                    .map(|k| {
                        plans
                            .iter()
                            .position(|(p, _)| p == k)
                            .map_or(Arg::Const(Value::Null), |i| plans.swap_remove(i).1)
                    })
                    .collect();
                Arg::Object(shape, values)
            }
        }
        _ => Arg::Const(node.to_value()),
    }
}

/// Write a value into text: a string as itself, anything else as compact JSON in the key
/// order it has (Q16).
fn push_value(out: &mut String, v: &Value) {
    use std::fmt::Write as _;
    match v {
        Value::String(s) => out.push_str(s),
        // `Value`'s `Display` is compact JSON; writing cannot fail.
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// Interpolate a template into text. An unresolvable `$path` stays as written (Q19).
pub(crate) fn render_template<S: Scope + ?Sized>(t: &Template, state: &S) -> String {
    if let [Part::Ref { path, raw }] = t.parts.as_slice() {
        return match lookup(state, path) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => raw.clone(),
        };
    }
    // Resolve first, so the text is allocated once.
    let mut found: SmallVec<[Option<&Value>; 8]> = SmallVec::new();
    let mut len = 0;
    for part in &t.parts {
        match part {
            Part::Lit(s) => len += s.len(),
            Part::Ref { path, raw } => {
                let v = lookup(state, path);
                len += match v {
                    Some(Value::String(s)) => s.len(),
                    Some(_) => 16,
                    None => raw.len(),
                };
                found.push(v);
            }
        }
    }
    let mut out = String::with_capacity(len);
    let mut found = found.into_iter();
    for part in &t.parts {
        match part {
            Part::Lit(s) => out.push_str(s),
            Part::Ref { raw, .. } => match found.next().flatten() {
                Some(v) => push_value(&mut out, v),
                None => out.push_str(raw),
            },
        }
    }
    out
}

pub(crate) fn render_text<S: Scope + ?Sized>(t: &Text, state: &S) -> String {
    match t {
        Text::Lit(s) => s.clone(),
        Text::Tpl(t) => render_template(t, state),
    }
}

/// Resolve an `args` value: a string that is exactly one `$path` takes the referenced
/// value with its type (Q17); any other string is interpolated; nested objects and lists
/// are resolved too (Q15).
pub(crate) fn render_arg<S: Scope + ?Sized>(a: &Arg, state: &S) -> Value {
    match a {
        Arg::Const(v) => v.clone(),
        Arg::Tpl(t) => match t.single() {
            Some(path) => match lookup(state, path) {
                Some(v) => v.clone(),
                None => Value::String(render_template(t, state)),
            },
            None => Value::String(render_template(t, state)),
        },
        Arg::Array(items) => Value::Array(items.iter().map(|x| render_arg(x, state)).collect()),
        Arg::Object(shape, values) => {
            let mut m = shape.clone();
            for (slot, x) in m.values_mut().zip(values) {
                *slot = render_arg(x, state);
            }
            Value::Object(m)
        }
    }
}
