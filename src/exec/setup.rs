//! What a run is given from outside: its LLM, its tools and the catalog the checker sees.
//! Shared by `nanovm run` and the MCP server, so both check against the same catalog and
//! govern runs by the same policy snapshot.

use crate::check::catalog::{Catalog, ToolInfo};
use crate::exec::adapter::{Llm, Tools};
use crate::exec::mock::Mocks;
use crate::exec::native::NativeTools;
use crate::exec::openai::OpenAi;
use crate::exec::tools::{Config, ConfigError, LlmConfig};
use crate::program::{Program, StepType};
use serde_json::{Map, Value, json};
use std::fmt;
use std::sync::Arc;

/// Why the adapters of a config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The `[llm]` section names an LLM that cannot be built (a bad URL, a missing key).
    #[error("[llm] in `{path}`: {message}")]
    Llm { path: String, message: String },
    /// A tool of the config cannot be built.
    #[error(transparent)]
    Tools(#[from] ConfigError),
}

/// The LLM (if any), the tools and the catalog of a run.
#[derive(Clone)]
pub struct Adapters {
    /// `None`: no LLM is configured (a program with llm steps cannot run).
    pub llm: Option<Arc<dyn Llm>>,
    pub tools: Arc<dyn Tools>,
    /// What the checker knows about the tools: names, policy verdicts, output types.
    pub catalog: Arc<Catalog>,
    /// A config or mocks file provided these (otherwise: no tools, no LLM).
    pub configured: bool,
}

impl fmt::Debug for Adapters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adapters")
            .field("llm", &self.llm.is_some())
            .field("tools", &self.catalog.len())
            .field("configured", &self.configured)
            .finish()
    }
}

impl Adapters {
    /// No config: no LLM, no tools (an empty catalog).
    pub fn none() -> Self {
        Self {
            llm: None,
            tools: Arc::new(NativeTools::new()),
            catalog: Arc::new(Catalog::new()),
            configured: false,
        }
    }

    /// Scripted tools and LLM replies (the conformance `mocks` format).
    pub fn from_mocks(mocks: &Mocks) -> Self {
        let mut catalog = Catalog::new();
        for name in mocks.tools.names() {
            catalog.insert(name, ToolInfo::default());
        }
        Self {
            llm: Some(mocks.llm.clone()),
            tools: mocks.tools.clone(),
            catalog: Arc::new(catalog),
            configured: true,
        }
    }

    /// The LLM, tools and policy of a `nanovm.toml`.
    pub fn from_config(config: &Config) -> Result<Self, SetupError> {
        let llm_error = |message: String| SetupError::Llm {
            path: config.path.display().to_string(),
            message,
        };
        let llm: Option<Arc<dyn Llm>> = match &config.llm {
            None => None,
            Some(LlmConfig::OpenAi(c)) => Some(Arc::new(
                OpenAi::new(c.clone()).map_err(|e| llm_error(e.to_string()))?,
            )),
            Some(LlmConfig::Mock(m)) => Some(m.build().map_err(|e| llm_error(e.to_string()))?),
        };
        Ok(Self {
            llm,
            tools: Arc::new(config.registry()?),
            catalog: Arc::new(config.catalog()),
            configured: true,
        })
    }

    /// The policy snapshot a run is governed by: which tools it may call, and why not. Its
    /// hash is in every envelope of the run.
    pub fn policy_snapshot(&self) -> Value {
        let mut tools = Map::new();
        for name in self.catalog.names() {
            let verdict = match self.catalog.get(name).map(|t| &t.allowed) {
                Some(Err(reason)) => json!({"allowed": false, "reason": reason}),
                _ => json!({"allowed": true}),
            };
            tools.insert(name.to_owned(), verdict);
        }
        json!({"tools": tools})
    }
}

/// Whether a program has an llm step (parallel sub-steps included).
pub fn has_llm_steps(program: &Program) -> bool {
    program.steps.iter().any(|s| {
        s.step_type() == Some(StepType::Llm)
            || s.parallel_steps
                .iter()
                .any(|c| c.step_type() == Some(StepType::Llm))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_snapshot_names_every_tool_and_why_it_is_denied() {
        let config = Config::from_toml_str(
            "[tools.a]\nkind = \"mock\"\nvalue = 1\n[tools.b]\nkind = \"mock\"\nvalue = 2\n[policy]\nallow = [\"a\"]\n",
            "nanovm.toml",
        );
        let adapters = Adapters::from_config(&config.unwrap()).unwrap();
        let snap = adapters.policy_snapshot();
        assert_eq!(snap["tools"]["a"], json!({"allowed": true}));
        assert_eq!(snap["tools"]["b"]["allowed"], json!(false));
        assert!(snap["tools"]["b"]["reason"].is_string());
        assert!(adapters.llm.is_none() && adapters.configured);
        let none = Adapters::none();
        assert_eq!(none.policy_snapshot(), json!({"tools": {}}));
    }
}
