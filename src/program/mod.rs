//! The typed Program model (every field of the reference format, DESIGN §3), decoded strictly
//! from the spanned JSON tree by [`decode`]. Nothing here evaluates anything.

mod decode;

pub use decode::{FIELDS_PROGRAM, FIELDS_STEP, INPUT_TYPES, decode, decode_owned};

use crate::json::{Node, Str};
use crate::source::Span;

/// A value with the span of the JSON value it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Self { value, span }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepType {
    Llm,
    Tool,
    Condition,
    Parallel,
}

impl StepType {
    pub const ALL: [(&'static str, StepType); 4] = [
        ("llm", StepType::Llm),
        ("tool", StepType::Tool),
        ("condition", StepType::Condition),
        ("parallel", StepType::Parallel),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepType::Llm => "llm",
            StepType::Tool => "tool",
            StepType::Condition => "condition",
            StepType::Parallel => "parallel",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    #[default]
    Fail,
    Skip,
    Retry,
}

impl OnError {
    pub const ALL: [(&'static str, OnError); 3] = [
        ("fail", OnError::Fail),
        ("skip", OnError::Skip),
        ("retry", OnError::Retry),
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTimeout {
    #[default]
    Fail,
    Fallback,
}

impl OnTimeout {
    pub const ALL: [(&'static str, OnTimeout); 2] =
        [("fail", OnTimeout::Fail), ("fallback", OnTimeout::Fallback)];
}

/// A whole program. Fields that failed to decode are absent; the decoder reported them.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    pub name: Option<Spanned<String>>,
    pub description: Option<Spanned<String>>,
    pub version: Option<Spanned<String>>,
    pub steps: Vec<Step>,
    /// The `steps` array (or the whole program when it is missing).
    pub steps_span: Span,
    pub max_steps: Option<Spanned<u64>>,
    pub max_stalled_steps: Option<Spanned<u64>>,
    pub max_tokens: Option<Spanned<u64>>,
    /// Extension: declared context keys and their types. When present, every `$name` must be
    /// a step id, an `output_key` or one of these.
    pub inputs: Option<Vec<Input>>,
    pub span: Span,
}

/// One declared input: `"inputs": {"amount": "int"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub name: Spanned<String>,
    pub ty: crate::expr::types::Type,
}

/// One step. `ok` is false when any field of the step (or of its sub-steps) failed to decode;
/// `flow_ok` is false when a field the step graph needs failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// JSON pointer of the step object, e.g. `/steps/3` or `/steps/2/parallel_steps/0`.
    pub pointer: String,
    pub span: Span,
    pub id: Option<Spanned<String>>,
    pub kind: Option<Spanned<StepType>>,
    pub prompt: Option<Str<'static>>,
    pub system: Option<Str<'static>>,
    pub output_key: Option<Spanned<String>>,
    pub tool: Option<Spanned<String>>,
    /// The `args` object, kept as a spanned tree (its strings are interpolated).
    pub args: Option<Node<'static>>,
    pub condition: Option<Str<'static>>,
    pub then: Option<Spanned<String>>,
    pub otherwise: Option<Spanned<String>>,
    pub parallel_steps: Vec<Step>,
    pub max_concurrency: Option<Spanned<u64>>,
    pub on_error: Option<Spanned<OnError>>,
    pub max_retries: Option<Spanned<u32>>,
    pub is_terminal: Option<Spanned<bool>>,
    pub next_step: Option<Spanned<String>>,
    pub allowed_outputs: Option<Spanned<Vec<Spanned<String>>>>,
    pub timeout_seconds: Option<Spanned<f64>>,
    pub on_timeout: Option<Spanned<OnTimeout>>,
    pub ok: bool,
    pub flow_ok: bool,
}

impl Step {
    pub fn id_str(&self) -> Option<&str> {
        self.id.as_ref().map(|s| s.value.as_str())
    }

    pub fn step_type(&self) -> Option<StepType> {
        self.kind.as_ref().map(|k| k.value)
    }

    pub fn on_error(&self) -> OnError {
        self.on_error.as_ref().map(|s| s.value).unwrap_or_default()
    }

    pub fn on_timeout(&self) -> OnTimeout {
        self.on_timeout
            .as_ref()
            .map(|s| s.value)
            .unwrap_or_default()
    }

    /// Attempts (the reference's `max_retries`, default 3, Q29).
    pub fn max_retries(&self) -> u32 {
        self.max_retries.as_ref().map_or(3, |s| s.value)
    }

    pub fn is_terminal(&self) -> bool {
        self.is_terminal.as_ref().is_some_and(|s| s.value)
    }
}
