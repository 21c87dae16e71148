//! The `openai` LLM adapter: any OpenAI-compatible `/v1/chat/completions` endpoint (OpenAI,
//! a local Ollama or vLLM server, a gateway).
//!
//! One call is one `POST {base_url}/chat/completions` with
//! `{"model", "messages": [{"role": "system", …}?, {"role": "user", …}], "temperature"?,
//! "max_tokens"?}`; the reply is `choices[0].message.content` and `usage`. Every failure is a
//! [`CallError`]: a non-success status is [`CallError::Http`] with an excerpt of the body, the
//! configured timeout is [`CallError::Timeout`], anything else (unreachable server, a body that
//! is not a completion, a body past the size limit) is [`CallError::Failed`]. The API key is
//! read once, at construction, and never appears in an error or in `Debug` output.

use super::adapter::{BoxFuture, CallError, Llm, LlmReply, LlmRequest, Usage, excerpt};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use reqwest::{Client, Response, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::env::VarError;
use std::fmt;
use std::time::Duration;

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

/// The largest response body read by default (8 MiB); a longer one fails the call.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// How much of an error response (non-success status) is read, at most, for its excerpt.
const ERROR_BODY_BYTES: usize = 64 * 1024;

/// How many bytes of a body an error message quotes.
const HTTP_EXCERPT: usize = 300;
const BODY_EXCERPT: usize = 200;

/// Why an [`OpenAi`] adapter cannot be built from its configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpenAiError {
    #[error("the API key environment variable `{var}` (api_key_env) is not set")]
    ApiKeyNotSet { var: String },
    #[error("the API key environment variable `{var}` (api_key_env) is empty")]
    ApiKeyEmpty { var: String },
    #[error("the API key environment variable `{var}` (api_key_env) is not valid UTF-8")]
    ApiKeyNotUnicode { var: String },
    /// The key given to [`OpenAi::with_api_key`] is empty.
    #[error("the API key is empty")]
    EmptyApiKey,
    /// The key has characters an HTTP header cannot carry (`from` says where it came from).
    #[error("the API key {from} cannot be sent in an HTTP header (it has control characters)")]
    ApiKeyInvalid { from: String },
    #[error("invalid base_url `{url}`: {why}")]
    InvalidBaseUrl { url: String, why: String },
    #[error("invalid timeout_seconds {0}: it must be a positive, finite number of seconds")]
    InvalidTimeout(f64),
    #[error("invalid {field} {value}: it must be {why}")]
    InvalidNumber {
        field: &'static str,
        value: f64,
        why: &'static str,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The API key: never printed.
#[derive(Clone)]
struct Secret {
    text: String,
    header: HeaderValue,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The `openai` LLM adapter (see the module documentation).
#[derive(Clone)]
pub struct OpenAi {
    client: Client,
    endpoint: Url,
    /// The endpoint as error messages show it (a password in the URL masked).
    shown: String,
    model: String,
    key: Option<Secret>,
    timeout: Duration,
    temperature: Option<f64>,
    max_tokens: Option<u64>,
    input_cost: Option<f64>,
    output_cost: Option<f64>,
    max_response_bytes: usize,
}

impl fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAi")
            .field("endpoint", &self.shown)
            .field("model", &self.model)
            .field("api_key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

impl OpenAi {
    /// An adapter for `config`, reading the API key from the environment variable
    /// `api_key_env` (when set; it must then exist and not be empty).
    pub fn new(config: OpenAiConfig) -> Result<OpenAi, OpenAiError> {
        let key = match &config.api_key_env {
            Some(var) => Some(key_from_env(var, std::env::var(var))?),
            None => None,
        };
        let from = config
            .api_key_env
            .as_ref()
            .map(|var| format!("in environment variable `{var}`"))
            .unwrap_or_default();
        Self::build(config, key, &from)
    }

    /// An adapter for `config` with the given API key (none: no `Authorization` header),
    /// ignoring `api_key_env`: for tests and embedders that hold the key themselves.
    pub fn with_api_key(config: OpenAiConfig, key: Option<String>) -> Result<OpenAi, OpenAiError> {
        let key = match key {
            Some(k) if k.trim().is_empty() => return Err(OpenAiError::EmptyApiKey),
            other => other,
        };
        Self::build(config, key, "given")
    }

    /// The same adapter with another limit on the size of a response body, in bytes
    /// (default [`DEFAULT_MAX_RESPONSE_BYTES`]).
    #[must_use]
    pub fn with_max_response_bytes(mut self, bytes: usize) -> OpenAi {
        self.max_response_bytes = bytes;
        self
    }

    /// Where requests go: `{base_url}/chat/completions`.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// The configured whole-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn build(config: OpenAiConfig, key: Option<String>, from: &str) -> Result<OpenAi, OpenAiError> {
        let endpoint = endpoint(&config.base_url)?;
        let shown = shown_url(&endpoint);
        let timeout = timeout(config.timeout_seconds)?;
        if let Some(t) = config.temperature
            && !t.is_finite()
        {
            return Err(OpenAiError::InvalidNumber {
                field: "temperature",
                value: t,
                why: "a finite number",
            });
        }
        for (field, price) in [
            ("input_cost_per_mtok", config.input_cost_per_mtok),
            ("output_cost_per_mtok", config.output_cost_per_mtok),
        ] {
            if let Some(p) = price
                && !(p.is_finite() && p >= 0.0)
            {
                return Err(OpenAiError::InvalidNumber {
                    field,
                    value: p,
                    why: "a finite number of USD, zero or more",
                });
            }
        }
        let key = match key {
            Some(text) => {
                let text = text.trim().to_owned();
                let mut header = HeaderValue::try_from(format!("Bearer {text}")).map_err(|_| {
                    OpenAiError::ApiKeyInvalid {
                        from: from.to_owned(),
                    }
                })?;
                header.set_sensitive(true);
                Some(Secret { text, header })
            }
            None => None,
        };
        let client = Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("nanovm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OpenAiError::Client(error_chain(&e.without_url())))?;
        Ok(OpenAi {
            client,
            endpoint,
            shown,
            model: config.model,
            key,
            timeout,
            temperature: config.temperature,
            max_tokens: config.max_completion_tokens,
            input_cost: config.input_cost_per_mtok,
            output_cost: config.output_cost_per_mtok,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        })
    }

    async fn call(&self, req: LlmRequest<'_>) -> Result<LlmReply, CallError> {
        let mut messages = Vec::with_capacity(2);
        if let Some(system) = req.system {
            messages.push(ChatMessage {
                role: "system",
                content: system,
            });
        }
        messages.push(ChatMessage {
            role: "user",
            content: req.prompt,
        });
        let body = ChatRequest {
            model: &self.model,
            messages,
            temperature: self.temperature,
            max_tokens: self.max_tokens,
        };
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .header(ACCEPT, "application/json")
            .json(&body);
        if let Some(key) = &self.key {
            request = request.header(AUTHORIZATION, key.header.clone());
        }
        let mut response = request.send().await.map_err(|e| self.transport(e))?;

        let status = response.status();
        if !status.is_success() {
            let (bytes, _) =
                read_body(&mut response, self.max_response_bytes.min(ERROR_BODY_BYTES)).await;
            return Err(CallError::Http {
                status: status.as_u16(),
                excerpt: self.scrub(excerpt(&String::from_utf8_lossy(&bytes), HTTP_EXCERPT)),
            });
        }

        let limit = self.max_response_bytes;
        let too_large = || {
            CallError::Failed(format!(
                "the response of {} is larger than the limit of {limit} bytes",
                self.shown
            ))
        };
        if response
            .content_length()
            .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
        {
            return Err(too_large());
        }
        let bytes = match read_body(&mut response, limit).await {
            (bytes, BodyEnd::Complete) => bytes,
            (_, BodyEnd::TooLarge) => return Err(too_large()),
            (_, BodyEnd::Error(e)) => return Err(self.transport(e)),
        };
        self.parse(&bytes)
    }

    /// The reply in a success response body.
    fn parse(&self, bytes: &[u8]) -> Result<LlmReply, CallError> {
        let quote = || self.scrub(excerpt(&String::from_utf8_lossy(bytes), BODY_EXCERPT));
        let json: Value = serde_json::from_slice(bytes).map_err(|e| {
            CallError::Failed(format!(
                "the response is not JSON ({e}): {}",
                quote_or_empty(quote())
            ))
        })?;
        let Some(choice) = json
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            let why = match json.get("error") {
                Some(err) => {
                    let msg = err
                        .get("message")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .unwrap_or_else(|| err.to_string());
                    format!(
                        "the response has no choices; the server says: {}",
                        self.scrub(excerpt(&msg, BODY_EXCERPT))
                    )
                }
                None => format!(
                    "the response has no `choices[0]`: {}",
                    quote_or_empty(quote())
                ),
            };
            return Err(CallError::Failed(why));
        };
        let Some(message) = choice.get("message").filter(|m| m.is_object()) else {
            return Err(CallError::Failed(format!(
                "the response has no `choices[0].message`: {}",
                quote_or_empty(quote())
            )));
        };
        let text = content_text(message).ok_or_else(|| {
            let mut why = "the completion has no text content (`choices[0].message.content` is \
                           null or missing)"
                .to_owned();
            if let Some(refusal) = message.get("refusal").and_then(Value::as_str) {
                why.push_str(&format!(
                    "; the model refused: {}",
                    self.scrub(excerpt(refusal, BODY_EXCERPT))
                ));
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                why.push_str(&format!("; finish_reason `{}`", excerpt(reason, 40)));
            }
            CallError::Failed(why)
        })?;
        let usage = json
            .get("usage")
            .filter(|u| u.is_object())
            .map(|u| self.usage(u));
        Ok(LlmReply { text, usage })
    }

    fn usage(&self, u: &Value) -> Usage {
        let count = |name: &str| u.get(name).and_then(Value::as_u64);
        let prompt_tokens = count("prompt_tokens").unwrap_or(0);
        let completion_tokens = count("completion_tokens").unwrap_or(0);
        let total_tokens = count("total_tokens")
            .unwrap_or_else(|| prompt_tokens.saturating_add(completion_tokens));
        let cost_usd = (self.input_cost.is_some() || self.output_cost.is_some()).then(|| {
            (prompt_tokens as f64 * self.input_cost.unwrap_or(0.0)
                + completion_tokens as f64 * self.output_cost.unwrap_or(0.0))
                / 1_000_000.0
        });
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens,
            cost_usd,
        }
    }

    /// A failed send or body read.
    fn transport(&self, e: reqwest::Error) -> CallError {
        if e.is_timeout() {
            return CallError::Timeout(self.timeout);
        }
        let e = e.without_url();
        if e.is_connect() {
            // `error sending request` says no more than `cannot reach`: start at the cause.
            let why = match std::error::Error::source(&e) {
                Some(cause) => error_chain(cause),
                None => error_chain(&e),
            };
            CallError::Failed(format!("cannot reach {}: {}", self.shown, self.scrub(why)))
        } else {
            let why = self.scrub(error_chain(&e));
            CallError::Failed(format!("request to {} failed: {why}", self.shown))
        }
    }

    /// Mask the API key, should a server echo it.
    fn scrub(&self, text: String) -> String {
        match &self.key {
            Some(key) if key.text.len() >= 4 && text.contains(&key.text) => {
                text.replace(&key.text, "<redacted>")
            }
            _ => text,
        }
    }
}

impl Llm for OpenAi {
    fn complete<'a>(&'a self, req: LlmRequest<'a>) -> BoxFuture<'a, Result<LlmReply, CallError>> {
        Box::pin(self.call(req))
    }
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<ChatMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
}

/// The API key in an environment variable (`value` is what `std::env::var` returned).
fn key_from_env(var: &str, value: Result<String, VarError>) -> Result<String, OpenAiError> {
    match value {
        Ok(key) if key.trim().is_empty() => Err(OpenAiError::ApiKeyEmpty {
            var: var.to_owned(),
        }),
        Ok(key) => Ok(key),
        Err(VarError::NotPresent) => Err(OpenAiError::ApiKeyNotSet {
            var: var.to_owned(),
        }),
        Err(VarError::NotUnicode(_)) => Err(OpenAiError::ApiKeyNotUnicode {
            var: var.to_owned(),
        }),
    }
}

/// `{base_url}/chat/completions` (a trailing `/` of the base trimmed, a query kept).
fn endpoint(base_url: &str) -> Result<Url, OpenAiError> {
    let bad = |why: String| OpenAiError::InvalidBaseUrl {
        url: excerpt(base_url, 200),
        why,
    };
    let mut url = Url::parse(base_url.trim()).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "the scheme must be http or https, not `{}`",
            url.scheme()
        )));
    }
    if url.cannot_be_a_base() || url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host".to_owned()));
    }
    if url.fragment().is_some() {
        return Err(bad("it must not have a `#fragment`".to_owned()));
    }
    let path = format!("{}/chat/completions", url.path().trim_end_matches('/'));
    url.set_path(&path);
    Ok(url)
}

/// The URL with a password masked, for messages.
fn shown_url(url: &Url) -> String {
    if url.password().is_some() {
        let mut shown = url.clone();
        if shown.set_password(Some("***")).is_ok() {
            return shown.to_string();
        }
    }
    url.to_string()
}

fn timeout(seconds: f64) -> Result<Duration, OpenAiError> {
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(OpenAiError::InvalidTimeout(seconds));
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(OpenAiError::InvalidTimeout(seconds)),
    }
}

/// How reading a body ended.
#[derive(Debug)]
enum BodyEnd {
    Complete,
    /// The body is longer than the limit; what was read is the first `limit` bytes.
    TooLarge,
    Error(reqwest::Error),
}

/// Read a body in chunks, never holding more than `limit` bytes.
async fn read_body(response: &mut Response, limit: usize) -> (Vec<u8>, BodyEnd) {
    let mut buf = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit.saturating_sub(buf.len());
                if chunk.len() > room {
                    buf.extend_from_slice(chunk.get(..room).unwrap_or_default());
                    return (buf, BodyEnd::TooLarge);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return (buf, BodyEnd::Complete),
            Err(e) => return (buf, BodyEnd::Error(e)),
        }
    }
}

/// The text of a message: `content` as a string, or the `text` of its parts when it is a
/// list of content parts; none when it is null or missing.
fn content_text(message: &Value) -> Option<String> {
    match message.get("content")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter(|p| {
                    p.get("type")
                        .and_then(Value::as_str)
                        .is_none_or(|t| t == "text")
                })
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            (!texts.is_empty()).then(|| texts.concat())
        }
        _ => None,
    }
}

/// An error and its sources, `outer: inner: …`, with repeats and hyper's generic
/// `client error (…)` layer dropped.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        let generic = text.starts_with("client error (") && err.source().is_some();
        if !generic && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

fn quote_or_empty(quote: String) -> String {
    if quote.is_empty() {
        "(empty body)".to_owned()
    } else {
        quote
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;
    use std::ffi::OsString;

    fn config(base_url: &str) -> OpenAiConfig {
        OpenAiConfig {
            base_url: base_url.to_owned(),
            model: "m".to_owned(),
            api_key_env: None,
            timeout_seconds: 60.0,
            temperature: None,
            max_completion_tokens: None,
            input_cost_per_mtok: None,
            output_cost_per_mtok: None,
        }
    }

    #[test]
    fn keys_from_the_environment() {
        assert_eq!(
            key_from_env("K", Err(VarError::NotPresent)),
            Err(OpenAiError::ApiKeyNotSet { var: "K".into() })
        );
        assert_eq!(
            key_from_env("K", Ok("  ".into())),
            Err(OpenAiError::ApiKeyEmpty { var: "K".into() })
        );
        assert_eq!(
            key_from_env("K", Err(VarError::NotUnicode(OsString::from("x")))),
            Err(OpenAiError::ApiKeyNotUnicode { var: "K".into() })
        );
        assert_eq!(key_from_env("K", Ok("sk-1".into())), Ok("sk-1".to_owned()));
        assert_eq!(
            OpenAiError::ApiKeyEmpty {
                var: "OPENAI_API_KEY".into()
            }
            .to_string(),
            "the API key environment variable `OPENAI_API_KEY` (api_key_env) is empty"
        );
    }

    #[test]
    fn endpoints() {
        let e = |b: &str| endpoint(b).map(|u| u.to_string());
        assert_eq!(
            e("https://api.openai.com/v1").as_deref(),
            Ok("https://api.openai.com/v1/chat/completions")
        );
        assert_eq!(
            e("http://127.0.0.1:11434/v1/").as_deref(),
            Ok("http://127.0.0.1:11434/v1/chat/completions")
        );
        assert_eq!(
            e("http://localhost:8000").as_deref(),
            Ok("http://localhost:8000/chat/completions")
        );
        assert_eq!(
            e("https://x.example/openai?api-version=1").as_deref(),
            Ok("https://x.example/openai/chat/completions?api-version=1")
        );
        for bad in [
            "",
            "api.openai.com/v1",
            "ftp://x/v1",
            "mailto:a@b",
            "http://x/v1#f",
        ] {
            assert!(
                matches!(endpoint(bad), Err(OpenAiError::InvalidBaseUrl { .. })),
                "{bad}"
            );
        }
        let shown = shown_url(&endpoint("http://u:pw@h/v1").unwrap());
        assert_eq!(shown, "http://u:***@h/v1/chat/completions");
    }

    #[test]
    fn numbers() {
        assert_eq!(timeout(1.5), Ok(Duration::from_millis(1500)));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300, 1e-12] {
            assert!(timeout(bad).is_err(), "{bad}");
        }
        let mut c = config("http://h/v1");
        c.temperature = Some(f64::NAN);
        assert!(matches!(
            OpenAi::with_api_key(c, None),
            Err(OpenAiError::InvalidNumber {
                field: "temperature",
                ..
            })
        ));
        let mut c = config("http://h/v1");
        c.output_cost_per_mtok = Some(-1.0);
        assert!(matches!(
            OpenAi::with_api_key(c, None),
            Err(OpenAiError::InvalidNumber {
                field: "output_cost_per_mtok",
                ..
            })
        ));
    }

    #[test]
    fn keys_stay_secret() {
        let Ok(llm) = OpenAi::with_api_key(config("http://h/v1"), Some("sk-secret-123".into()))
        else {
            unreachable!()
        };
        assert!(!format!("{llm:?}").contains("sk-secret-123"));
        assert_eq!(
            llm.scrub("bad key sk-secret-123!".to_owned()),
            "bad key <redacted>!"
        );
        assert!(matches!(
            OpenAi::with_api_key(config("http://h/v1"), Some("a\nb".into())),
            Err(OpenAiError::ApiKeyInvalid { .. })
        ));
        assert_eq!(
            OpenAi::with_api_key(config("http://h/v1"), Some(String::new())).err(),
            Some(OpenAiError::EmptyApiKey)
        );
    }

    #[test]
    fn replies() {
        let Ok(llm) = OpenAi::with_api_key(config("http://h/v1"), None) else {
            unreachable!()
        };
        let parts = br#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"image_url"},{"type":"text","text":"b"}]}}]}"#;
        assert_eq!(llm.parse(parts).map(|r| r.text), Ok("ab".to_owned()));
        let refused =
            br#"{"choices":[{"message":{"content":null,"refusal":"no"},"finish_reason":"stop"}]}"#;
        let Err(CallError::Failed(why)) = llm.parse(refused) else {
            unreachable!()
        };
        assert!(
            why.contains("null or missing") && why.contains("refused: no"),
            "{why}"
        );
        let error = br#"{"error":{"message":"model not found"}}"#;
        let Err(CallError::Failed(why)) = llm.parse(error) else {
            unreachable!()
        };
        assert!(why.ends_with("the server says: model not found"), "{why}");
        let Err(CallError::Failed(why)) = llm.parse(b"") else {
            unreachable!()
        };
        assert!(why.ends_with("(empty body)"), "{why}");
        let no_total = br#"{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        assert_eq!(
            llm.parse(no_total).ok().and_then(|r| r.usage),
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: 7,
                cost_usd: None
            })
        );
    }
}
