//! The `openai` LLM adapter: any OpenAI-compatible `/v1/chat/completions` endpoint (OpenAI,
//! a local Ollama or vLLM server, a gateway).

use serde::Deserialize;

/// The `[llm]` section of `nanovm.toml` with `provider = "openai"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// The API root, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`;
    /// requests go to `{base_url}/chat/completions`.
    pub base_url: String,
    pub model: String,
    /// The environment variable holding the API key (sent as `Authorization: Bearer`);
    /// none for a local server without auth.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Whole-request timeout, in seconds (default 60).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
    #[serde(default)]
    pub temperature: Option<f64>,
    /// `max_tokens` of each completion.
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    /// USD per million prompt tokens, for `cost_usd` in the trace.
    #[serde(default)]
    pub input_cost_per_mtok: Option<f64>,
    /// USD per million completion tokens.
    #[serde(default)]
    pub output_cost_per_mtok: Option<f64>,
}

fn default_timeout() -> f64 {
    60.0
}
