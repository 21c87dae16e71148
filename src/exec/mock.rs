//! Scripted adapters in the format of the conformance cases' `mocks` field (the format of
//! `nanovm run --mocks FILE`):
//!
//! ```json
//! {"tools": {"lookup": {"amount": 5},
//!            "poll":   {"sequence": ["PENDING", {"status": "done"}]},
//!            "broken": {"error": "connection refused"}},
//!  "llm":   {"Classify: hello": "refund",
//!            "*": {"reply": "yes", "usage": {"total_tokens": 12}, "delay_s": 0.5}}}
//! ```
//!
//! A tool entry is a fixed value, `{"sequence": [...]}` (one item per call, the last one
//! repeats; an item may be `{"error": "msg"}`) or `{"error": "msg"}`. An LLM reply is looked
//! up by the exact prompt, else under `"*"`; an entry is a string, `{"sequence": [...]}`,
//! `{"error": "msg"}` or `{"reply", "usage"?, "delay_s"?}`. Every call is appended to one log,
//! in order (`{"tool", "args"}` or `{"llm": {"prompt", "system"?}}`), which tests compare.

use super::adapter::{BoxFuture, CallError, Llm, LlmReply, LlmRequest, Tools, Usage};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A malformed mocks file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MockError {
    #[error("the mocks must be a JSON object with optional `tools` and `llm` objects")]
    NotAnObject,
    #[error("unknown field `{0}` in the mocks (expected `tools` or `llm`)")]
    UnknownField(String),
    #[error("`{0}` in the mocks must be an object")]
    NotAnObjectField(&'static str),
    #[error("mock LLM reply `{key}`: {why}")]
    BadReply { key: String, why: String },
}

/// One scripted result.
#[derive(Debug, Clone, PartialEq)]
enum Outcome<T> {
    Ok(T),
    Error(String),
}

/// A scripted sequence: one outcome per call, the last one repeating.
#[derive(Debug)]
struct Script<T> {
    items: Vec<Outcome<T>>,
    next: AtomicUsize,
}

impl<T: Clone> Script<T> {
    fn new(items: Vec<Outcome<T>>) -> Self {
        Self {
            items,
            next: AtomicUsize::new(0),
        }
    }

    fn take(&self) -> Outcome<T> {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let last = self.items.len().saturating_sub(1);
        self.items
            .get(k.min(last))
            .cloned()
            .unwrap_or(Outcome::Error("the mock script is empty".to_owned()))
    }
}

/// A scripted tool: a fixed value, a sequence, or an error.
#[derive(Debug)]
pub struct MockTool {
    script: Script<Value>,
}

impl MockTool {
    /// A tool entry of the mocks format.
    pub fn from_value(v: Value) -> Self {
        match v {
            Value::Object(m) if m.len() == 1 && m.contains_key("sequence") => {
                match m.into_iter().next() {
                    Some((_, Value::Array(items))) => {
                        Self::sequence(items.into_iter().map(tool_outcome).collect())
                    }
                    Some((k, other)) => Self::fixed(Value::Object(Map::from_iter([(k, other)]))),
                    None => Self::fixed(Value::Null),
                }
            }
            other => Self::sequence(vec![tool_outcome(other)]),
        }
    }

    pub fn fixed(v: Value) -> Self {
        Self {
            script: Script::new(vec![Outcome::Ok(v)]),
        }
    }

    pub fn error(msg: impl Into<String>) -> Self {
        Self {
            script: Script::new(vec![Outcome::Error(msg.into())]),
        }
    }

    /// Successive results (`Err` items fail that call); the last one repeats.
    pub fn sequence(items: Vec<Result<Value, String>>) -> Self {
        let items = if items.is_empty() {
            vec![Outcome::Ok(Value::Null)]
        } else {
            items
                .into_iter()
                .map(|r| match r {
                    Ok(v) => Outcome::Ok(v),
                    Err(e) => Outcome::Error(e),
                })
                .collect()
        };
        Self {
            script: Script::new(items),
        }
    }

    /// The next scripted result.
    pub fn next_result(&self) -> Result<Value, CallError> {
        match self.script.take() {
            Outcome::Ok(v) => Ok(v),
            Outcome::Error(e) => Err(CallError::Failed(e)),
        }
    }
}

/// `{"error": "msg"}` is an error, anything else a value.
fn tool_outcome(v: Value) -> Result<Value, String> {
    match v {
        Value::Object(m) if m.len() == 1 && m.get("error").is_some_and(Value::is_string) => {
            match m.into_iter().next() {
                Some((_, Value::String(e))) => Err(e),
                _ => Err(String::new()),
            }
        }
        other => Ok(other),
    }
}

/// The shared, ordered log of calls.
#[derive(Debug, Clone, Default)]
pub struct CallLog(Arc<Mutex<Vec<Value>>>);

impl CallLog {
    fn push(&self, v: Value) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(v);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Value> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Remove and return every call so far.
    pub fn take(&self) -> Vec<Value> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Scripted tools, by name.
#[derive(Debug, Default)]
pub struct MockTools {
    tools: HashMap<String, MockTool>,
    log: CallLog,
}

impl MockTools {
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }
}

impl Tools for MockTools {
    fn contains(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    fn call<'a>(&'a self, name: &'a str, args: Value) -> BoxFuture<'a, Result<Value, CallError>> {
        Box::pin(async move {
            let Some(tool) = self.tools.get(name) else {
                return Err(CallError::NotRegistered(name.to_owned()));
            };
            self.log.push(json!({"tool": name, "args": args}));
            tool.next_result()
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Reply {
    text: String,
    usage: Option<Usage>,
    delay: Option<Duration>,
}

/// A scripted LLM.
#[derive(Debug, Default)]
pub struct MockLlm {
    replies: HashMap<String, Script<Reply>>,
    log: CallLog,
}

impl MockLlm {
    /// Every prompt gets this reply.
    pub fn constant(text: impl Into<String>) -> Self {
        let mut replies = HashMap::new();
        replies.insert(
            "*".to_owned(),
            Script::new(vec![Outcome::Ok(Reply {
                text: text.into(),
                usage: None,
                delay: None,
            })]),
        );
        Self {
            replies,
            log: CallLog::default(),
        }
    }
}

fn reply_outcome(key: &str, v: Value) -> Result<Outcome<Reply>, MockError> {
    let bad = |why: &str| MockError::BadReply {
        key: key.to_owned(),
        why: why.to_owned(),
    };
    match v {
        Value::String(text) => Ok(Outcome::Ok(Reply {
            text,
            usage: None,
            delay: None,
        })),
        Value::Object(mut m) => {
            if m.len() == 1
                && let Some(Value::String(e)) = m.get("error")
            {
                return Ok(Outcome::Error(e.clone()));
            }
            let Some(Value::String(text)) = m.remove("reply") else {
                return Err(bad(
                    "expected a string, {\"sequence\": [...]}, {\"error\": \"msg\"} or {\"reply\": \"text\", ...}",
                ));
            };
            let usage = match m.remove("usage") {
                None | Some(Value::Null) => None,
                Some(u) => Some(
                    serde_json::from_value::<Usage>(u)
                        .map_err(|e| bad(&format!("bad `usage`: {e}")))?,
                ),
            };
            let delay = match m.remove("delay_s") {
                None => None,
                Some(d) => {
                    let secs = d
                        .as_f64()
                        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 3600.0)
                        .ok_or_else(|| bad("`delay_s` must be a number of seconds in 0..=3600"))?;
                    Some(Duration::from_secs_f64(secs))
                }
            };
            if let Some(k) = m.keys().next() {
                return Err(bad(&format!(
                    "unknown field `{k}` (expected `reply`, `usage`, `delay_s`)"
                )));
            }
            Ok(Outcome::Ok(Reply { text, usage, delay }))
        }
        _ => Err(bad("expected a string or an object")),
    }
}

impl Llm for MockLlm {
    fn complete<'a>(&'a self, req: LlmRequest<'a>) -> BoxFuture<'a, Result<LlmReply, CallError>> {
        Box::pin(async move {
            let mut call = Map::new();
            call.insert("prompt".to_owned(), Value::String(req.prompt.to_owned()));
            if let Some(s) = req.system {
                call.insert("system".to_owned(), Value::String(s.to_owned()));
            }
            self.log.push(json!({"llm": call}));
            let script = self
                .replies
                .get(req.prompt)
                .or_else(|| self.replies.get("*"))
                .ok_or_else(|| {
                    CallError::Failed(
                        "the mock LLM has no reply for this prompt and no \"*\" entry".to_owned(),
                    )
                })?;
            match script.take() {
                Outcome::Error(e) => Err(CallError::Failed(e)),
                Outcome::Ok(r) => {
                    if let Some(d) = r.delay {
                        tokio::time::sleep(d).await;
                    }
                    Ok(LlmReply {
                        text: r.text,
                        usage: r.usage,
                    })
                }
            }
        })
    }
}

/// A mocks file: scripted tools and LLM sharing one call log.
#[derive(Debug)]
pub struct Mocks {
    pub tools: Arc<MockTools>,
    pub llm: Arc<MockLlm>,
    pub log: CallLog,
}

impl Mocks {
    pub fn from_value(v: Value) -> Result<Self, MockError> {
        let Value::Object(m) = v else {
            return Err(MockError::NotAnObject);
        };
        let log = CallLog::default();
        let mut tools = HashMap::new();
        let mut replies = HashMap::new();
        for (k, v) in m {
            match (k.as_str(), v) {
                ("tools", Value::Object(t)) => {
                    for (name, entry) in t {
                        tools.insert(name, MockTool::from_value(entry));
                    }
                }
                ("llm", Value::Object(l)) => {
                    for (key, entry) in l {
                        let items = match entry {
                            Value::Object(mut s)
                                if s.len() == 1
                                    && s.get("sequence").is_some_and(Value::is_array) =>
                            {
                                match s.remove("sequence") {
                                    Some(Value::Array(items)) => items,
                                    _ => Vec::new(),
                                }
                            }
                            other => vec![other],
                        };
                        if items.is_empty() {
                            return Err(MockError::BadReply {
                                key,
                                why: "the sequence is empty".to_owned(),
                            });
                        }
                        let outcomes = items
                            .into_iter()
                            .map(|i| reply_outcome(&key, i))
                            .collect::<Result<Vec<_>, _>>()?;
                        replies.insert(key, Script::new(outcomes));
                    }
                }
                ("tools", _) => return Err(MockError::NotAnObjectField("tools")),
                ("llm", _) => return Err(MockError::NotAnObjectField("llm")),
                (other, _) => return Err(MockError::UnknownField(other.to_owned())),
            }
        }
        Ok(Self {
            tools: Arc::new(MockTools {
                tools,
                log: log.clone(),
            }),
            llm: Arc::new(MockLlm {
                replies,
                log: log.clone(),
            }),
            log,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn block<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn scripts() {
        let m = Mocks::from_value(json!({
            "tools": {"t": {"sequence": [1, {"error": "boom"}, 3]}, "f": {"a": 1}, "e": {"error": "no"}},
            "llm": {"hi": "there", "*": {"sequence": ["a", {"reply": "b", "usage": {"total_tokens": 7}}]}}
        }))
        .unwrap();
        block(async {
            let t = &m.tools;
            assert_eq!(t.call("t", json!({})).await, Ok(json!(1)));
            assert_eq!(
                t.call("t", json!({})).await,
                Err(CallError::Failed("boom".into()))
            );
            assert_eq!(t.call("t", json!({})).await, Ok(json!(3)));
            assert_eq!(t.call("t", json!({})).await, Ok(json!(3)));
            assert_eq!(t.call("f", json!({"x": 1})).await, Ok(json!({"a": 1})));
            assert_eq!(
                t.call("e", json!({})).await,
                Err(CallError::Failed("no".into()))
            );
            assert_eq!(
                t.call("ghost", json!({})).await,
                Err(CallError::NotRegistered("ghost".into()))
            );
            let req = |p| LlmRequest {
                step_id: "s",
                system: None,
                prompt: p,
            };
            assert_eq!(m.llm.complete(req("hi")).await.unwrap().text, "there");
            assert_eq!(m.llm.complete(req("x")).await.unwrap().text, "a");
            let r = m.llm.complete(req("y")).await.unwrap();
            assert_eq!((r.text.as_str(), r.usage.unwrap().total_tokens), ("b", 7));
        });
        assert_eq!(m.log.calls().len(), 9);
        assert_eq!(m.log.calls()[4], json!({"tool": "f", "args": {"x": 1}}));
    }

    #[test]
    fn bad_mocks() {
        assert_eq!(
            Mocks::from_value(json!({"tool": {}})).unwrap_err(),
            MockError::UnknownField("tool".into())
        );
        assert!(Mocks::from_value(json!({"llm": {"*": 5}})).is_err());
        assert!(Mocks::from_value(json!({"llm": {"*": {"reply": "x", "delay": 1}}})).is_err());
        assert!(Mocks::from_value(json!([])).is_err());
    }
}
