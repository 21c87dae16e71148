//! The two things a run talks to: an LLM and a tool registry, both behind traits so the
//! runtime never knows whether a reply came from a script, a local model server or a process.
//!
//! Adapters are async (tokio) and object-safe: a call returns a boxed future borrowing the
//! adapter and the request. An adapter never panics; every failure is a [`CallError`], which
//! the runtime turns into a step error (and retries, skips or fails per `on_error`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed, sendable future (what adapter methods return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One LLM call: the interpolated system text (when the step has one) and prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlmRequest<'a> {
    pub step_id: &'a str,
    pub system: Option<&'a str>,
    pub prompt: &'a str,
}

/// Token usage and cost of one LLM call (the reference's `LLMUsage`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// What an LLM answered.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmReply {
    pub text: String,
    pub usage: Option<Usage>,
}

/// Why a call failed. The message is what the trace records as the step's error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The registry has no tool of that name.
    #[error("tool `{0}` is not registered")]
    NotRegistered(String),
    /// The call did not finish in time.
    #[error("timed out after {}", fmt_duration(*.0))]
    Timeout(Duration),
    /// An HTTP endpoint answered with a non-success status.
    #[error("HTTP {status}: {excerpt}")]
    Http { status: u16, excerpt: String },
    /// Anything else: a transport error, a process that exited non-zero or printed something
    /// that is not JSON, a mock scripted to fail, an output that breaks its schema.
    #[error("{0}")]
    Failed(String),
}

/// `1.5s`, `50ms`.
pub fn fmt_duration(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else {
        let s = d.as_secs_f64();
        if s.fract() == 0.0 {
            format!("{s:.0}s")
        } else {
            format!("{s}s")
        }
    }
}

/// A language model.
pub trait Llm: Send + Sync + Debug {
    fn complete<'a>(&'a self, req: LlmRequest<'a>) -> BoxFuture<'a, Result<LlmReply, CallError>>;
}

/// A registry of tools, by name.
pub trait Tools: Send + Sync + Debug {
    /// Whether a tool of this name is registered.
    fn contains(&self, name: &str) -> bool;

    /// Call a tool with its resolved arguments (a JSON object).
    fn call<'a>(&'a self, name: &'a str, args: Value) -> BoxFuture<'a, Result<Value, CallError>>;
}

/// Cut a text to at most `max` bytes (at a char boundary), marking the cut: for error
/// messages that quote a response body or a process's stderr.
pub fn excerpt(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} bytes)",
        text.get(..end).unwrap_or_default(),
        text.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_excerpts() {
        assert_eq!(fmt_duration(Duration::from_millis(50)), "50ms");
        assert_eq!(fmt_duration(Duration::from_secs(2)), "2s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(excerpt("  short ", 10), "short");
        assert_eq!(excerpt("ééééé", 3), "é… (10 bytes)");
        assert_eq!(
            CallError::Http {
                status: 502,
                excerpt: "bad gateway".into()
            }
            .to_string(),
            "HTTP 502: bad gateway"
        );
    }
}
