//! Tools from the config file (`nanovm.toml`): `command`, `http`, `mcp` and `mock` tools, the
//! `[policy]` section, and the catalog the checker uses.
//!
//! [`Config::load`] reads and validates the file; [`Config::catalog`] is what the checker
//! knows (names, the policy's verdicts, output types from the output schemas);
//! [`Config::registry`] builds the [`Registry`] a run calls tools through.
//!
//! A call of the registry: an unknown name is [`CallError::NotRegistered`]; a tool the policy
//! denies fails (`tool `x` is denied by the policy: …`) without running — the checker rejects
//! such programs too, this is defence in depth; the arguments are validated against the input
//! schema, the tool runs (within its timeout and output cap), and its result is validated
//! against the output schema.
//!
//! An `mcp` tool connects to its server on its first call and keeps the connection (shared by
//! the tools naming the same server) for later calls; a connection found closed is made again
//! on the next call. The result is the tool's `structuredContent`, else its text parsed as
//! JSON, else the text as a string; `isError: true` fails the call. A server process is killed
//! (with its process group) when the registry is dropped. See `mcp.rs`.
//!
//! The file format:
//!
//! ```toml
//! [llm]
//! provider = "mock"            # or "openai", with the OpenAiConfig fields in this table
//! reply = "refund"             # or replies = {"Classify: hi" = "refund", "*" = "other"}
//!
//! [tools.lookup]
//! kind = "command"             # "command" | "http" | "mcp" | "mock"
//! command = ["python3", "tools/lookup.py"]   # argv, never a shell
//! env = {LOOKUP_DB = "db.sqlite"}            # added to the inherited environment
//! cwd = "."                    # relative to this file's directory (the default)
//! description = "Look an order up"
//! input_schema = {type = "object", required = ["id"], properties = {id = {type = "string"}}}
//! output_schema_file = "schemas/lookup.out.json"  # JSON, relative to this file
//! capabilities = ["filesystem"]
//! timeout_seconds = 10         # default 30
//! max_output_bytes = 65536     # default 1 MiB
//!
//! [tools.refund]
//! kind = "http"
//! url = "https://payments.example/refund"
//! headers = {Authorization = "Bearer ${PAYMENTS_TOKEN}"}  # ${VAR} from the environment
//! capabilities = ["network", "payments"]
//!
//! [tools.search]
//! kind = "mcp"                 # a tool of a downstream MCP server
//! command = ["search-server", "--stdio"]  # a child process speaking MCP over stdio (argv;
//!                              # `env`, `cwd` as for command tools), or:
//! # url = "http://127.0.0.1:9000/mcp"     # Streamable HTTP (`headers` as for http tools)
//! tool = "web_search"          # the downstream tool's name (default: this tool's name)
//!
//! [tools.weather]
//! kind = "mock"
//! value = {temp = 21}          # or sequence = [1, {error = "busy"}, 3] or error = "msg"
//!
//! [policy]
//! allow = ["lookup", "weather"]          # absent: every tool
//! deny_capabilities = ["payments"]
//! ```

mod command;
mod config;
mod http;
mod mcp;

pub use config::{
    CommandConfig, Config, ConfigError, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_TIMEOUT, HttpConfig,
    LlmConfig, MAX_TIMEOUT_SECONDS, McpConfig, McpServer, MockConfig, MockLlmConfig, Policy,
    ToolConfig, ToolKind,
};

use crate::exec::adapter::{BoxFuture, CallError, Tools};
use crate::exec::mock::MockTool;
use command::CommandTool;
use http::HttpTool;
use mcp::McpTool;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// How many schema violations a failed validation quotes.
const MAX_VIOLATIONS: usize = 3;

/// The tools of a config, ready to call.
#[derive(Debug)]
pub struct Registry {
    tools: BTreeMap<String, Entry>,
}

#[derive(Debug)]
struct Entry {
    allowed: Result<(), String>,
    input: Option<Schema>,
    output: Option<Schema>,
    adapter: Adapter,
}

#[derive(Debug)]
enum Adapter {
    Command(CommandTool),
    Http(HttpTool),
    Mock(MockTool),
    Mcp(McpTool),
}

/// A compiled JSON Schema.
struct Schema(jsonschema::Validator);

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Schema")
    }
}

impl Schema {
    /// The first few violations, joined, when `v` does not match.
    fn check(&self, v: &Value) -> Result<(), String> {
        let mut errors = self.0.iter_errors(v);
        let mut msgs = Vec::new();
        let mut more = 0usize;
        for e in errors.by_ref() {
            if msgs.len() < MAX_VIOLATIONS {
                let at = e.instance_path().as_str();
                let at = if at.is_empty() { "/" } else { at };
                msgs.push(format!("at `{at}`: {e}"));
            } else {
                more += 1;
            }
        }
        if msgs.is_empty() {
            return Ok(());
        }
        let mut s = msgs.join("; ");
        if more > 0 {
            s.push_str(&format!(" (and {more} more)"));
        }
        Err(s)
    }
}

impl Config {
    /// The registry of this config's tools: schemas compiled, `${VAR}` header values expanded
    /// from the environment (an unset variable is an error here), `cwd`s checked, mock scripts
    /// at their start.
    pub fn registry(&self) -> Result<Registry, ConfigError> {
        // Two HTTP clients, made when needed: for `http` tools, and for MCP servers (which
        // follow no redirect: one would replay the session and the headers elsewhere).
        let (mut plain, mut mcp) = (None::<reqwest::Client>, None::<reqwest::Client>);
        let mut http_client = |for_mcp: bool| -> Result<reqwest::Client, ConfigError> {
            let slot = if for_mcp { &mut mcp } else { &mut plain };
            if let Some(c) = slot {
                return Ok(c.clone());
            }
            let mut b = reqwest::Client::builder()
                .user_agent(concat!("nanovm/", env!("CARGO_PKG_VERSION")));
            if for_mcp {
                b = b.redirect(reqwest::redirect::Policy::none());
            }
            let c = b
                .build()
                .map_err(|e| self.error(format!("cannot set up the HTTP client: {e}")))?;
            *slot = Some(c.clone());
            Ok(c)
        };
        // One connection per MCP server, shared by the tools naming the same one.
        let mut servers: Vec<(&McpServer, Arc<mcp::Server>)> = Vec::new();
        let mut tools = BTreeMap::new();
        for (name, t) in &self.tools {
            let compile = |which: &str, s: &Option<Value>| {
                s.as_ref()
                    .map(|s| {
                        jsonschema::validator_for(s).map(Schema).map_err(|e| {
                            self.error(format!(
                                "tool `{name}`: `{which}_schema` is not a valid JSON Schema: {e}"
                            ))
                        })
                    })
                    .transpose()
            };
            let input = compile("input", &t.input_schema)?;
            let output = compile("output", &t.output_schema)?;
            let adapter = match &t.kind {
                ToolKind::Command(c) => {
                    self.check_cwd(name, c)?;
                    Adapter::Command(CommandTool::new(c.clone(), t.timeout, t.max_output_bytes))
                }
                ToolKind::Http(h) => Adapter::Http(HttpTool::new(
                    http_client(false)?,
                    h.url.clone(),
                    self.headers(name, h)?,
                    t.timeout,
                    t.max_output_bytes,
                )),
                ToolKind::Mcp(m) => {
                    let server = match servers.iter().find(|(s, _)| *s == &m.server) {
                        Some((_, s)) => s.clone(),
                        None => {
                            let s = Arc::new(match &m.server {
                                McpServer::Stdio(c) => {
                                    self.check_cwd(name, c)?;
                                    mcp::Server::new(&m.server, None, HeaderMap::new())
                                }
                                McpServer::Http(h) => mcp::Server::new(
                                    &m.server,
                                    Some(http_client(true)?),
                                    self.headers(name, h)?,
                                ),
                            });
                            servers.push((&m.server, s.clone()));
                            s
                        }
                    };
                    Adapter::Mcp(McpTool::new(
                        server,
                        m.tool.clone(),
                        t.timeout,
                        t.max_output_bytes,
                    ))
                }
                ToolKind::Mock(m) => Adapter::Mock(match m {
                    MockConfig::Value(v) => MockTool::fixed(v.clone()),
                    MockConfig::Sequence(items) => {
                        MockTool::from_value(json!({ "sequence": items }))
                    }
                    MockConfig::Error(e) => MockTool::error(e.clone()),
                }),
            };
            tools.insert(
                name.clone(),
                Entry {
                    allowed: self.policy.verdict(name, &t.capabilities),
                    input,
                    output,
                    adapter,
                },
            );
        }
        Ok(Registry { tools })
    }

    fn check_cwd(&self, name: &str, c: &CommandConfig) -> Result<(), ConfigError> {
        if c.cwd.is_dir() {
            Ok(())
        } else {
            Err(self.error(format!(
                "tool `{name}`: `cwd` {} is not a directory",
                c.cwd.display()
            )))
        }
    }

    /// The headers of an `http` tool or server, `${VAR}`s expanded from the environment.
    fn headers(&self, name: &str, h: &HttpConfig) -> Result<HeaderMap, ConfigError> {
        let mut headers = HeaderMap::new();
        for (k, v) in &h.headers {
            let value = config::expand_env(v, |var| std::env::var(var).ok())
                .map_err(|why| self.error(format!("tool `{name}`: header `{k}`: {why}")))?;
            let key = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| self.error(format!("tool `{name}`: header `{k}`: {e}")))?;
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                self.error(format!(
                    "tool `{name}`: header `{k}`: the value (after expansion) is not a valid header value"
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(key, value);
        }
        Ok(headers)
    }
}

impl Registry {
    /// The registered tool names, sorted (denied tools included).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

impl Tools for Registry {
    fn contains(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    fn call<'a>(&'a self, name: &'a str, args: Value) -> BoxFuture<'a, Result<Value, CallError>> {
        Box::pin(async move {
            let Some(entry) = self.tools.get(name) else {
                return Err(CallError::NotRegistered(name.to_owned()));
            };
            if let Err(why) = &entry.allowed {
                return Err(CallError::Failed(format!(
                    "tool `{name}` is denied by the policy: {why}"
                )));
            }
            if let Some(s) = &entry.input {
                s.check(&args).map_err(|m| {
                    CallError::Failed(format!(
                        "the arguments of tool `{name}` do not match its input schema: {m}"
                    ))
                })?;
            }
            let out = match &entry.adapter {
                Adapter::Command(c) => c.call(&args).await?,
                Adapter::Http(h) => h.call(&args).await?,
                Adapter::Mock(m) => m.next_result()?,
                Adapter::Mcp(m) => m.call(&args).await?,
            };
            if let Some(s) = &entry.output {
                s.check(&out).map_err(|m| {
                    CallError::Failed(format!(
                        "the output of tool `{name}` does not match its output schema: {m}"
                    ))
                })?;
            }
            Ok(out)
        })
    }
}
