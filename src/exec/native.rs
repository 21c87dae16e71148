//! Tools written in Rust, for embedding nanovm in a Rust program (and for benchmarks): a
//! name → function registry.

use super::adapter::{BoxFuture, CallError, Tools};
use super::plan::FxHasher;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

type ToolFn = Arc<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;

/// Synchronous Rust functions as tools. A function gets the resolved args object and
/// returns the output, or an error message.
#[derive(Clone, Default)]
pub struct NativeTools {
    tools: HashMap<String, ToolFn, BuildHasherDefault<FxHasher>>,
}

impl fmt::Debug for NativeTools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.tools.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("NativeTools")
            .field("tools", &names)
            .finish()
    }
}

impl NativeTools {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(
        mut self,
        name: impl Into<String>,
        f: impl Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        self.tools.insert(name.into(), Arc::new(f));
        self
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }
}

impl Tools for NativeTools {
    fn contains(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    fn call<'a>(&'a self, name: &'a str, args: Value) -> BoxFuture<'a, Result<Value, CallError>> {
        let result = match self.tools.get(name) {
            Some(f) => f(args).map_err(CallError::Failed),
            None => Err(CallError::NotRegistered(name.to_owned())),
        };
        Box::pin(std::future::ready(result))
    }
}
