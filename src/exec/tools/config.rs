//! `nanovm.toml`: parsing (serde + `toml`, every table `deny_unknown_fields`) and validation
//! into a [`Config`] whose paths are resolved, schemas loaded and compiled once, and policy
//! names checked. Every error names the file and, when it comes from a value of the file, the
//! line and column with the line quoted.

use crate::check::catalog::{Catalog, ToolInfo, type_from_schema};
use crate::diagnostics::did_you_mean;
use crate::exec::mock::{MockError, MockLlm, Mocks};
use crate::exec::openai::OpenAiConfig;
use reqwest::Url;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;
use toml::de::{DeTable, DeValue, Deserializer, ValueDeserializer};

/// `timeout_seconds` when a tool has none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// `max_output_bytes` when a tool has none (1 MiB).
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// The longest `timeout_seconds` accepted (one day).
pub const MAX_TIMEOUT_SECONDS: f64 = 86_400.0;

/// A config file that cannot be read or is not a valid config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file (or a schema file it names, or a `cwd`) cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown or mistyped field, or a value breaks a rule.
    /// `message` is toml's message (or one in the same layout: `… at line L, column C`, the
    /// line quoted and underlined, then what is wrong); `line` and `column` count from 1.
    #[error("{}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
}

impl ConfigError {
    /// The config file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. } | Self::Invalid { path, .. } => path,
        }
    }

    /// The line (from 1) of the value at fault, when the error has one.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Read { .. } => None,
            Self::Invalid { line, .. } => *line,
        }
    }
}

/// A loaded, validated `nanovm.toml`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// Where the config came from (error messages; relative paths resolve against its
    /// directory).
    pub path: PathBuf,
    /// The `[llm]` section.
    pub llm: Option<LlmConfig>,
    /// The `[tools.NAME]` sections, by name.
    pub tools: BTreeMap<String, ToolConfig>,
    /// The `[policy]` section (allow everything when absent).
    pub policy: Policy,
}

/// The `[llm]` section.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmConfig {
    /// `provider = "openai"`: the [`OpenAiConfig`] fields sit in `[llm]` itself.
    OpenAi(OpenAiConfig),
    /// `provider = "mock"`.
    Mock(MockLlmConfig),
}

/// `provider = "mock"`: replies by exact prompt, `"*"` for any other prompt (`reply = "…"` is
/// `"*" = "…"`). An entry is a reply string or any LLM entry of the mocks format
/// (`{sequence = [...]}`, `{error = "msg"}`, `{reply = "…", usage = {…}, delay_s = 0.5}`).
#[derive(Debug, Clone, PartialEq)]
pub struct MockLlmConfig {
    pub replies: BTreeMap<String, Value>,
}

impl MockLlmConfig {
    /// The scripted LLM (its scripts start over at each call of `build`).
    pub fn build(&self) -> Result<Arc<MockLlm>, MockError> {
        let replies: Map<String, Value> = self
            .replies
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut llm = Map::new();
        llm.insert("llm".to_owned(), Value::Object(replies));
        Ok(Mocks::from_value(Value::Object(llm))?.llm)
    }
}

/// One `[tools.NAME]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolConfig {
    pub kind: ToolKind,
    pub description: Option<String>,
    /// The JSON Schema the arguments must match (inline or loaded from `input_schema_file`).
    pub input_schema: Option<Value>,
    /// The JSON Schema the result must match; the checker types the tool's output by it.
    pub output_schema: Option<Value>,
    pub capabilities: Vec<String>,
    pub timeout: Duration,
    pub max_output_bytes: usize,
}

/// What a tool is.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolKind {
    Command(CommandConfig),
    Http(HttpConfig),
    Mock(MockConfig),
    Mcp(McpConfig),
}

impl ToolKind {
    /// `command`, `http`, `mock` or `mcp`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Command(_) => "command",
            Self::Http(_) => "http",
            Self::Mock(_) => "mock",
            Self::Mcp(_) => "mcp",
        }
    }
}

/// `kind = "command"`: a process, started without a shell.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandConfig {
    /// The program: a bare name is looked up in `PATH`; a relative path with a `/` has been
    /// resolved against the config file's directory.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Added to (or overriding) the inherited environment.
    pub env: BTreeMap<String, String>,
    /// The working directory (resolved; default: the config file's directory).
    pub cwd: PathBuf,
}

/// `kind = "http"`: a JSON endpoint that takes the args as a POST body.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    pub url: Url,
    /// Header values as written: `${NAME}` is expanded from the environment when the registry
    /// is built (`$$` is a literal `$`).
    pub headers: BTreeMap<String, String>,
}

/// `kind = "mcp"`: a tool of a downstream MCP server.
#[derive(Debug, Clone, PartialEq)]
pub struct McpConfig {
    /// How the server is reached.
    pub server: McpServer,
    /// The downstream tool's name (default: the name of the `[tools.NAME]` section).
    pub tool: String,
}

/// Where an MCP server is: `command = [...]` or `url = "…"`.
#[derive(Debug, Clone, PartialEq)]
pub enum McpServer {
    /// A child process speaking MCP over its stdin and stdout (`command`, `env`, `cwd` as for
    /// `kind = "command"`).
    Stdio(CommandConfig),
    /// A Streamable HTTP endpoint (`url`, `headers` as for `kind = "http"`).
    Http(HttpConfig),
}

/// `kind = "mock"`.
#[derive(Debug, Clone, PartialEq)]
pub enum MockConfig {
    /// `value = …`: every call returns this.
    Value(Value),
    /// `sequence = [...]`: one item per call, the last one repeating; `{error = "msg"}` fails.
    Sequence(Vec<Value>),
    /// `error = "msg"`: every call fails with this.
    Error(String),
}

/// The `[policy]` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// `allow = [...]`: when present, only these tools may be called.
    pub allow: Option<BTreeSet<String>>,
    /// A tool with any of these capabilities is denied.
    pub deny_capabilities: BTreeSet<String>,
}

impl Policy {
    /// Whether the policy lets a tool with these capabilities be called; `Err` gives the reason,
    /// naming the rule (it reads after "denied by the policy: ").
    pub fn verdict(&self, name: &str, capabilities: &[String]) -> Result<(), String> {
        if let Some(allow) = &self.allow
            && !allow.contains(name)
        {
            return Err(format!("`{name}` is not in `[policy] allow`"));
        }
        if let Some(c) = capabilities
            .iter()
            .find(|c| self.deny_capabilities.contains(c.as_str()))
        {
            return Err(format!(
                "it has the capability `{c}`, which `[policy] deny_capabilities` denies"
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Validate a config text; `origin` names it in errors, and relative paths in it (schema
    /// files, programs, `cwd`) resolve against `origin`'s directory.
    pub fn from_toml_str(text: &str, origin: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let origin = origin.as_ref();
        let base = match origin.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let cx = Cx {
            text,
            path: origin,
            base,
        };
        // `[llm]` is taken out and read by its `provider` (so its errors keep their spans,
        // which serde's internally tagged enums lose).
        let root = DeTable::parse(text).map_err(|e| cx.toml_error(e))?;
        let span = root.span();
        let mut table = root.into_inner();
        let llm = table.remove("llm");
        let raw = RawConfig::deserialize(Deserializer::from(Spanned::new(span, table)))
            .map_err(|e| cx.toml_error(e))?;
        let llm = llm.map(|v| cx.raw_llm(v)).transpose()?;
        cx.config(raw, llm)
    }

    /// The policy's verdict on a tool of this config (`Err` also for an unknown tool).
    pub fn verdict(&self, name: &str) -> Result<(), String> {
        match self.tools.get(name) {
            Some(t) => self.policy.verdict(name, &t.capabilities),
            None => Err(format!("no tool `{name}` is configured")),
        }
    }

    /// What the checker knows of the tools: each tool, allowed or denied (with the rule), and
    /// its output type (from `output_schema`, `any` without one).
    pub fn catalog(&self) -> Catalog {
        let mut c = Catalog::new();
        for (name, t) in &self.tools {
            c.insert(
                name.clone(),
                ToolInfo {
                    allowed: self.policy.verdict(name, &t.capabilities),
                    output: t
                        .output_schema
                        .as_ref()
                        .map_or(crate::expr::types::Type::Any, type_from_schema),
                },
            );
        }
        c
    }
}

// ---- the file as written ------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    tools: BTreeMap<String, Spanned<RawTool>>,
    #[serde(default)]
    policy: Option<RawPolicy>,
}

/// `[llm]` as written, by `provider`.
enum RawLlm {
    OpenAi(OpenAiConfig),
    Mock(RawMockLlm),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMockLlm {
    #[serde(default)]
    reply: Option<String>,
    #[serde(default)]
    replies: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Command,
    Http,
    Mock,
    Mcp,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Http => "http",
            Self::Mock => "mock",
            Self::Mcp => "mcp",
        }
    }

    fn fields(self) -> &'static str {
        match self {
            Self::Command => "`command`, `env`, `cwd`",
            Self::Http => "`url`, `headers`",
            Self::Mock => "`value`, `sequence`, `error`",
            Self::Mcp => "`command`, `env`, `cwd` or `url`, `headers`, and `tool`",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTool {
    kind: Spanned<Kind>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input_schema: Option<Spanned<Value>>,
    #[serde(default)]
    input_schema_file: Option<Spanned<String>>,
    #[serde(default)]
    output_schema: Option<Spanned<Value>>,
    #[serde(default)]
    output_schema_file: Option<Spanned<String>>,
    #[serde(default)]
    capabilities: Vec<Spanned<String>>,
    #[serde(default)]
    timeout_seconds: Option<Spanned<f64>>,
    #[serde(default)]
    max_output_bytes: Option<Spanned<u64>>,
    // command
    #[serde(default)]
    command: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    env: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    #[serde(default)]
    cwd: Option<Spanned<String>>,
    // http
    #[serde(default)]
    url: Option<Spanned<String>>,
    #[serde(default)]
    headers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    // mcp
    #[serde(default)]
    tool: Option<Spanned<String>>,
    // mock
    #[serde(default)]
    value: Option<Spanned<Value>>,
    #[serde(default)]
    sequence: Option<Spanned<Vec<Value>>>,
    #[serde(default)]
    error: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    allow: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    deny_capabilities: Vec<Spanned<String>>,
}

/// The fields of a `kind = "mcp"` tool, as written.
struct McpFields {
    command: Option<Spanned<Vec<Spanned<String>>>>,
    env: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    cwd: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    headers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    tool: Option<Spanned<String>>,
}

// ---- validation ---------------------------------------------------------------------------

/// The text being validated, for errors at spans and for resolving paths.
struct Cx<'a> {
    text: &'a str,
    path: &'a Path,
    base: PathBuf,
}

impl Cx<'_> {
    fn toml_error(&self, mut e: toml::de::Error) -> ConfigError {
        e.set_input(Some(self.text));
        let (line, column) = match e.span() {
            Some(s) => {
                let (l, c) = line_column(self.text, s.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        let mut message = e.to_string().trim_end().to_owned();
        // "unknown field `comand`, expected one of `kind`, `command`, …": say which one.
        if let Some(rest) = e.message().strip_prefix("unknown field `")
            && let Some((field, expected)) = rest.split_once('`')
        {
            let known = expected.split('`').skip(1).step_by(2);
            if let Some(m) = did_you_mean(field, known, 3) {
                message.push_str(&format!("\nhelp: did you mean `{m}`?"));
            }
        }
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            column,
            message,
        }
    }

    /// An error at a span of the file, laid out like toml's.
    fn err(&self, span: Range<usize>, msg: impl Display) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        let content = self
            .text
            .split('\n')
            .nth(line.saturating_sub(1))
            .unwrap_or_default()
            .trim_end_matches('\r');
        let gutter = " ".repeat(line.to_string().len());
        let width = self
            .text
            .get(span.clone())
            .map_or(1, |s| {
                s.split('\n').next().unwrap_or_default().chars().count()
            })
            .clamp(1, content.chars().count().saturating_sub(column - 1).max(1));
        let message = format!(
            "invalid config at line {line}, column {column}\n{gutter} |\n{line} | {content}\n{gutter} | {}{}\n{msg}",
            " ".repeat(column - 1),
            "^".repeat(width),
        );
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line: Some(line),
            column: Some(column),
            message,
        }
    }

    /// `[llm]`: `provider` says which fields the rest of the table has.
    fn raw_llm(&self, v: Spanned<DeValue<'_>>) -> Result<Spanned<RawLlm>, ConfigError> {
        let span = v.span();
        let DeValue::Table(mut t) = v.into_inner() else {
            return Err(self.err(span, "`llm` must be a table: `[llm]`"));
        };
        let Some(p) = t.remove("provider") else {
            return Err(self.err(
                span,
                "[llm] needs `provider = \"openai\"` or `provider = \"mock\"`",
            ));
        };
        let at = p.span();
        let DeValue::String(provider) = p.into_inner() else {
            return Err(self.err(at, "`provider` must be \"openai\" or \"mock\""));
        };
        let de = ValueDeserializer::from(Spanned::new(span.clone(), DeValue::Table(t)));
        let llm = match provider.as_ref() {
            "openai" => {
                RawLlm::OpenAi(OpenAiConfig::deserialize(de).map_err(|e| self.toml_error(e))?)
            }
            "mock" => RawLlm::Mock(RawMockLlm::deserialize(de).map_err(|e| self.toml_error(e))?),
            other => {
                let mut msg = format!("unknown provider `{other}`, expected `openai` or `mock`");
                if let Some(m) = did_you_mean(other, ["openai", "mock"], 2) {
                    msg.push_str(&format!(" (did you mean `{m}`?)"));
                }
                return Err(self.err(at, msg));
            }
        };
        Ok(Spanned::new(span, llm))
    }

    fn config(&self, raw: RawConfig, llm: Option<Spanned<RawLlm>>) -> Result<Config, ConfigError> {
        let llm = llm.map(|l| self.llm(l)).transpose()?;
        let mut tools = BTreeMap::new();
        for (name, t) in raw.tools {
            let tool = self.tool(&name, t)?;
            tools.insert(name, tool);
        }
        let policy = match raw.policy {
            None => Policy::default(),
            Some(p) => self.policy(p, &tools)?,
        };
        Ok(Config {
            path: self.path.to_owned(),
            llm,
            tools,
            policy,
        })
    }

    fn llm(&self, raw: Spanned<RawLlm>) -> Result<LlmConfig, ConfigError> {
        let span = raw.span();
        match raw.into_inner() {
            RawLlm::OpenAi(c) => {
                if !(c.timeout_seconds.is_finite()
                    && c.timeout_seconds > 0.0
                    && c.timeout_seconds <= MAX_TIMEOUT_SECONDS)
                {
                    return Err(self.err(
                        span,
                        format!(
                            "[llm] `timeout_seconds` must be a number of seconds in (0, {MAX_TIMEOUT_SECONDS}], not {}",
                            c.timeout_seconds
                        ),
                    ));
                }
                check_url(&c.base_url)
                    .map_err(|why| self.err(span.clone(), format!("[llm] `base_url` {why}")))?;
                Ok(LlmConfig::OpenAi(c))
            }
            RawLlm::Mock(m) => {
                let mut replies = m.replies;
                if let Some(r) = m.reply {
                    if replies.contains_key("*") {
                        return Err(self.err(
                            span,
                            "[llm] has both `reply` and a `\"*\"` entry in `replies`: keep one",
                        ));
                    }
                    replies.insert("*".to_owned(), Value::String(r));
                }
                if replies.is_empty() {
                    return Err(self.err(
                        span,
                        "a mock LLM needs `reply = \"…\"` or `replies = {\"prompt\" = \"reply\", \"*\" = \"…\"}`",
                    ));
                }
                let c = MockLlmConfig { replies };
                c.build()
                    .map_err(|e| self.err(span, format!("[llm] {e}")))?;
                Ok(LlmConfig::Mock(c))
            }
        }
    }

    fn tool(&self, name: &str, raw: Spanned<RawTool>) -> Result<ToolConfig, ConfigError> {
        let span = raw.span();
        let t = raw.into_inner();
        if name.trim().is_empty() {
            return Err(self.err(span, "a tool name must not be empty"));
        }
        let kind = *t.kind.get_ref();
        const COMMAND: &[Kind] = &[Kind::Command, Kind::Mcp];
        const HTTP: &[Kind] = &[Kind::Http, Kind::Mcp];
        const MCP: &[Kind] = &[Kind::Mcp];
        const MOCK: &[Kind] = &[Kind::Mock];
        let foreign = [
            ("command", t.command.as_ref().map(Spanned::span), COMMAND),
            ("env", t.env.as_ref().map(Spanned::span), COMMAND),
            ("cwd", t.cwd.as_ref().map(Spanned::span), COMMAND),
            ("url", t.url.as_ref().map(Spanned::span), HTTP),
            ("headers", t.headers.as_ref().map(Spanned::span), HTTP),
            ("tool", t.tool.as_ref().map(Spanned::span), MCP),
            ("value", t.value.as_ref().map(Spanned::span), MOCK),
            ("sequence", t.sequence.as_ref().map(Spanned::span), MOCK),
            ("error", t.error.as_ref().map(Spanned::span), MOCK),
        ];
        for (field, at, owners) in foreign {
            if let Some(at) = at
                && !owners.contains(&kind)
            {
                let owners: Vec<String> = owners
                    .iter()
                    .map(|o| format!("`kind = \"{}\"`", o.name()))
                    .collect();
                return Err(self.err(
                    at,
                    format!(
                        "tool `{name}`: `{field}` belongs to {}, but this tool is `kind = \"{}\"` (which takes {})",
                        owners.join(" or "),
                        kind.name(),
                        kind.fields()
                    ),
                ));
            }
        }
        let timeout = match &t.timeout_seconds {
            None => DEFAULT_TIMEOUT,
            Some(s) => {
                let secs = *s.get_ref();
                if !(secs.is_finite() && secs > 0.0 && secs <= MAX_TIMEOUT_SECONDS) {
                    return Err(self.err(
                        s.span(),
                        format!(
                            "tool `{name}`: `timeout_seconds` must be a number of seconds in (0, {MAX_TIMEOUT_SECONDS}]"
                        ),
                    ));
                }
                Duration::try_from_secs_f64(secs).map_err(|e| {
                    self.err(s.span(), format!("tool `{name}`: `timeout_seconds`: {e}"))
                })?
            }
        };
        let max_output_bytes = match &t.max_output_bytes {
            None => DEFAULT_MAX_OUTPUT_BYTES,
            Some(m) => match usize::try_from(*m.get_ref()) {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(self.err(
                        m.span(),
                        format!("tool `{name}`: `max_output_bytes` must be a positive number"),
                    ));
                }
            },
        };
        let mut capabilities = Vec::new();
        for c in &t.capabilities {
            let v = c.get_ref();
            if v.is_empty() || v.chars().any(char::is_whitespace) {
                return Err(self.err(
                    c.span(),
                    format!(
                        "tool `{name}`: a capability is a non-empty word without spaces, like \"network\""
                    ),
                ));
            }
            capabilities.push(v.clone());
        }
        let input_schema = self.schema(name, "input", t.input_schema, t.input_schema_file)?;
        let output_schema = self.schema(name, "output", t.output_schema, t.output_schema_file)?;
        let kind = match kind {
            Kind::Command => ToolKind::Command(self.command(name, span, t.command, t.env, t.cwd)?),
            Kind::Http => ToolKind::Http(self.http(name, span, t.url, t.headers)?),
            Kind::Mock => ToolKind::Mock(self.mock(name, span, t.value, t.sequence, t.error)?),
            Kind::Mcp => ToolKind::Mcp(self.mcp(
                name,
                span,
                McpFields {
                    command: t.command,
                    env: t.env,
                    cwd: t.cwd,
                    url: t.url,
                    headers: t.headers,
                    tool: t.tool,
                },
            )?),
        };
        Ok(ToolConfig {
            kind,
            description: t.description,
            input_schema,
            output_schema,
            capabilities,
            timeout,
            max_output_bytes,
        })
    }

    fn schema(
        &self,
        name: &str,
        which: &str,
        inline: Option<Spanned<Value>>,
        file: Option<Spanned<String>>,
    ) -> Result<Option<Value>, ConfigError> {
        let (schema, span) = match (inline, file) {
            (None, None) => return Ok(None),
            (Some(_), Some(f)) => {
                return Err(self.err(
                    f.span(),
                    format!(
                        "tool `{name}` has both `{which}_schema` and `{which}_schema_file`: keep one"
                    ),
                ));
            }
            (Some(s), None) => {
                let span = s.span();
                (s.into_inner(), span)
            }
            (None, Some(f)) => {
                let span = f.span();
                let path = self.base.join(f.get_ref());
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    self.err(
                        span.clone(),
                        format!(
                            "tool `{name}`: cannot read `{which}_schema_file` {}: {e}",
                            path.display()
                        ),
                    )
                })?;
                let v: Value = serde_json::from_str(&text).map_err(|e| {
                    self.err(
                        span.clone(),
                        format!(
                            "tool `{name}`: `{which}_schema_file` {} is not valid JSON: {e}",
                            path.display()
                        ),
                    )
                })?;
                (v, span)
            }
        };
        if let Err(e) = jsonschema::validator_for(&schema) {
            return Err(self.err(
                span,
                format!("tool `{name}`: `{which}_schema` is not a valid JSON Schema: {e}"),
            ));
        }
        Ok(Some(schema))
    }

    fn command(
        &self,
        name: &str,
        span: Range<usize>,
        command: Option<Spanned<Vec<Spanned<String>>>>,
        env: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
        cwd: Option<Spanned<String>>,
    ) -> Result<CommandConfig, ConfigError> {
        let Some(command) = command else {
            return Err(self.err(
                span,
                format!(
                    "tool `{name}` (kind = \"command\") needs `command = [\"program\", \"arg\", ...]`"
                ),
            ));
        };
        let at = command.span();
        let mut argv = command.into_inner().into_iter();
        let Some(program) = argv.next() else {
            return Err(self.err(
                at,
                format!(
                    "tool `{name}`: `command` is empty: write the program and its arguments, like [\"python3\", \"tool.py\"]"
                ),
            ));
        };
        if program.get_ref().trim().is_empty() {
            return Err(self.err(
                program.span(),
                format!("tool `{name}`: the program of `command` is empty"),
            ));
        }
        let mut args = Vec::new();
        for a in std::iter::once(&program).chain(argv.as_slice()) {
            if a.get_ref().contains('\0') {
                return Err(self.err(
                    a.span(),
                    format!("tool `{name}`: `command` has a NUL character"),
                ));
            }
        }
        for a in argv {
            args.push(a.into_inner());
        }
        let program = program.into_inner();
        let program = if program.contains('/') && Path::new(&program).is_relative() {
            self.base.join(program)
        } else {
            PathBuf::from(program)
        };
        let mut vars = BTreeMap::new();
        if let Some(env) = env {
            let at = env.span();
            for (k, v) in env.into_inner() {
                if k.is_empty() || k.contains('=') || k.contains('\0') {
                    return Err(self.err(
                        at,
                        format!("tool `{name}`: `{k}` is not an environment variable name"),
                    ));
                }
                if v.get_ref().contains('\0') {
                    return Err(self.err(
                        v.span(),
                        format!("tool `{name}`: the value of `{k}` has a NUL character"),
                    ));
                }
                vars.insert(k, v.into_inner());
            }
        }
        let cwd = match cwd {
            None => self.base.clone(),
            Some(c) => self.base.join(c.get_ref()),
        };
        Ok(CommandConfig {
            program,
            args,
            env: vars,
            cwd,
        })
    }

    fn http(
        &self,
        name: &str,
        span: Range<usize>,
        url: Option<Spanned<String>>,
        headers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    ) -> Result<HttpConfig, ConfigError> {
        let Some(url) = url else {
            return Err(self.err(
                span,
                format!("tool `{name}` (kind = \"http\") needs `url = \"http://…\"`"),
            ));
        };
        let parsed = check_url(url.get_ref())
            .map_err(|why| self.err(url.span(), format!("tool `{name}`: `url` {why}")))?;
        let mut hs = BTreeMap::new();
        if let Some(headers) = headers {
            let at = headers.span();
            for (k, v) in headers.into_inner() {
                if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                    return Err(self.err(
                        at,
                        format!("tool `{name}`: `{k}` is not a valid HTTP header name"),
                    ));
                }
                expand_env(v.get_ref(), |_| Some(String::new())).map_err(|why| {
                    self.err(v.span(), format!("tool `{name}`: header `{k}`: {why}"))
                })?;
                hs.insert(k, v.into_inner());
            }
        }
        Ok(HttpConfig {
            url: parsed,
            headers: hs,
        })
    }

    fn mcp(&self, name: &str, span: Range<usize>, f: McpFields) -> Result<McpConfig, ConfigError> {
        let tool = match f.tool {
            None => name.to_owned(),
            Some(t) => {
                if t.get_ref().trim().is_empty() {
                    return Err(self.err(
                        t.span(),
                        format!("tool `{name}`: `tool` (the downstream tool's name) is empty"),
                    ));
                }
                t.into_inner()
            }
        };
        let server = match (f.command, f.url) {
            (Some(_), Some(url)) => {
                return Err(self.err(
                    url.span(),
                    format!(
                        "tool `{name}` (kind = \"mcp\") has both `command` and `url`: keep one (a server started as a child process over stdio, or a Streamable HTTP endpoint)"
                    ),
                ));
            }
            (None, None) => {
                return Err(self.err(
                    span,
                    format!(
                        "tool `{name}` (kind = \"mcp\") needs its server: `command = [\"program\", \"arg\", ...]` (stdio) or `url = \"http://…\"` (Streamable HTTP)"
                    ),
                ));
            }
            (Some(command), None) => {
                if let Some(h) = f.headers {
                    return Err(self.err(
                        h.span(),
                        format!(
                            "tool `{name}`: `headers` is for an MCP server at a `url`, not one started by `command`"
                        ),
                    ));
                }
                McpServer::Stdio(self.command(name, span, Some(command), f.env, f.cwd)?)
            }
            (None, Some(url)) => {
                for (field, at) in [
                    ("env", f.env.map(|e| e.span())),
                    ("cwd", f.cwd.map(|c| c.span())),
                ] {
                    if let Some(at) = at {
                        return Err(self.err(
                            at,
                            format!(
                                "tool `{name}`: `{field}` is for an MCP server started by `command`, not one at a `url`"
                            ),
                        ));
                    }
                }
                if let Some(h) = &f.headers {
                    // rmcp sets these itself and refuses a request that overrides them.
                    if let Some(k) = h.get_ref().keys().find(|k| {
                        ["accept", "mcp-session-id", "last-event-id"]
                            .iter()
                            .any(|r| k.eq_ignore_ascii_case(r))
                    }) {
                        return Err(self.err(
                            h.span(),
                            format!(
                                "tool `{name}`: the header `{k}` is set by the MCP client itself"
                            ),
                        ));
                    }
                }
                McpServer::Http(self.http(name, span, Some(url), f.headers)?)
            }
        };
        Ok(McpConfig { server, tool })
    }

    fn mock(
        &self,
        name: &str,
        span: Range<usize>,
        value: Option<Spanned<Value>>,
        sequence: Option<Spanned<Vec<Value>>>,
        error: Option<Spanned<String>>,
    ) -> Result<MockConfig, ConfigError> {
        match (value, sequence, error) {
            (Some(v), None, None) => Ok(MockConfig::Value(v.into_inner())),
            (None, Some(s), None) => {
                if s.get_ref().is_empty() {
                    return Err(self.err(
                        s.span(),
                        format!("tool `{name}`: `sequence` is empty"),
                    ));
                }
                Ok(MockConfig::Sequence(s.into_inner()))
            }
            (None, None, Some(e)) => Ok(MockConfig::Error(e.into_inner())),
            _ => Err(self.err(
                span,
                format!(
                    "tool `{name}` (kind = \"mock\") needs exactly one of `value = …`, `sequence = [...]`, `error = \"msg\"`"
                ),
            )),
        }
    }

    fn policy(
        &self,
        raw: RawPolicy,
        tools: &BTreeMap<String, ToolConfig>,
    ) -> Result<Policy, ConfigError> {
        let allow = match raw.allow {
            None => None,
            Some(names) => {
                let mut set = BTreeSet::new();
                for n in names {
                    if !tools.contains_key(n.get_ref()) {
                        let mut msg = format!(
                            "`[policy] allow` names `{}`, which is not a tool",
                            n.get_ref()
                        );
                        if let Some(m) =
                            did_you_mean(n.get_ref(), tools.keys().map(String::as_str), 2)
                        {
                            msg.push_str(&format!(" (did you mean `{m}`?)"));
                        } else if tools.is_empty() {
                            msg.push_str(" (no `[tools.NAME]` section is configured)");
                        }
                        return Err(self.err(n.span(), msg));
                    }
                    set.insert(n.into_inner());
                }
                Some(set)
            }
        };
        let declared: BTreeSet<&str> = tools
            .values()
            .flat_map(|t| t.capabilities.iter().map(String::as_str))
            .collect();
        let mut deny = BTreeSet::new();
        for c in raw.deny_capabilities {
            let v = c.get_ref();
            if v.is_empty() || v.chars().any(char::is_whitespace) {
                return Err(self.err(
                    c.span(),
                    "a capability is a non-empty word without spaces, like \"network\"",
                ));
            }
            // A near miss of a declared capability would deny nothing: that is a typo.
            if !declared.contains(v.as_str())
                && let Some(m) = did_you_mean(v, declared.iter().copied(), 2)
            {
                return Err(self.err(
                    c.span(),
                    format!(
                        "`[policy] deny_capabilities` names `{v}`, which no tool declares (did you mean `{m}`?)"
                    ),
                ));
            }
            deny.insert(c.into_inner());
        }
        Ok(Policy {
            allow,
            deny_capabilities: deny,
        })
    }
}

impl Config {
    /// An error about this config with no place in the file (used when building the registry).
    pub(super) fn error(&self, msg: impl Display) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            line: None,
            column: None,
            message: msg.to_string(),
        }
    }
}

/// Line and column (both from 1, the column in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = text.get(..offset).unwrap_or_default();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before.get(line_start..).unwrap_or_default().chars().count() + 1;
    (line, column)
}

/// An absolute http(s) URL with a host.
fn check_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("is not a valid URL ({e}): `{s}`"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "must be an http:// or https:// URL, not `{}:`",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("has no host: `{s}`"));
    }
    Ok(url)
}

/// Expand `${NAME}` from `lookup` (`$$` is a literal `$`; any other `$` is itself).
pub(super) fn expand_env(
    template: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(rest.get(..i).unwrap_or_default());
        let after = rest.get(i + 1..).unwrap_or_default();
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else {
                return Err("`${` is not closed by `}` (write `$$` for a literal `$`)".to_owned());
            };
            let var = tail.get(..end).unwrap_or_default();
            let valid = var
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("`${{{var}}}` is not an environment variable name"));
            }
            let value = lookup(var)
                .ok_or_else(|| format!("the environment variable `{var}` is not set"))?;
            out.push_str(&value);
            rest = tail.get(end + 1..).unwrap_or_default();
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn env_expansion() {
        let env = |k: &str| (k == "TOKEN").then(|| "s3cret".to_owned());
        assert_eq!(expand_env("Bearer ${TOKEN}", env).unwrap(), "Bearer s3cret");
        assert_eq!(expand_env("a$$b$c", env).unwrap(), "a$b$c");
        assert_eq!(expand_env("", env).unwrap(), "");
        assert!(
            expand_env("${MISSING}", env)
                .unwrap_err()
                .contains("`MISSING`")
        );
        assert!(
            expand_env("${TOKEN", env)
                .unwrap_err()
                .contains("not closed")
        );
        assert!(expand_env("${1X}", env).is_err());
    }

    #[test]
    fn positions() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 3), (2, 1));
        assert_eq!(line_column("ab", 99), (1, 3));
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "dir/nanovm.toml")
    }

    fn parse_err(text: &str) -> (String, Option<usize>) {
        let e = parse(text).unwrap_err();
        (e.to_string(), e.line())
    }

    #[test]
    fn mcp_tools() {
        let c = parse(
            "[tools.search]\nkind = \"mcp\"\ncommand = [\"bin/server\", \"--stdio\"]\nenv = {A = \"1\"}\ntool = \"web_search\"\ntimeout_seconds = 5\n\n[tools.calc]\nkind = \"mcp\"\nurl = \"http://127.0.0.1:9000/mcp\"\nheaders = {Authorization = \"Bearer ${TOKEN}\"}\n",
        )
        .unwrap();
        let ToolKind::Mcp(m) = &c.tools["search"].kind else {
            unreachable!("{c:?}")
        };
        assert_eq!(m.tool, "web_search");
        let McpServer::Stdio(cmd) = &m.server else {
            unreachable!("{m:?}")
        };
        assert_eq!(cmd.program, Path::new("dir/bin/server"));
        assert_eq!(cmd.args, ["--stdio"]);
        assert_eq!(cmd.env["A"], "1");
        assert_eq!(cmd.cwd, Path::new("dir"));
        assert_eq!(c.tools["search"].timeout, Duration::from_secs(5));
        assert_eq!(c.tools["search"].kind.name(), "mcp");
        let ToolKind::Mcp(m) = &c.tools["calc"].kind else {
            unreachable!("{c:?}")
        };
        // The downstream name defaults to the tool's own.
        assert_eq!(m.tool, "calc");
        let McpServer::Http(h) = &m.server else {
            unreachable!("{m:?}")
        };
        assert_eq!(h.url.as_str(), "http://127.0.0.1:9000/mcp");
        assert_eq!(h.headers["Authorization"], "Bearer ${TOKEN}");
    }

    #[test]
    fn mcp_tool_errors() {
        // Both `command` and `url`.
        let (msg, line) =
            parse_err("[tools.s]\nkind = \"mcp\"\ncommand = [\"srv\"]\nurl = \"http://h/mcp\"\n");
        assert!(msg.contains("has both `command` and `url`"), "{msg}");
        assert_eq!(line, Some(4));
        // Neither.
        let (msg, line) = parse_err("[tools.s]\nkind = \"mcp\"\ntool = \"x\"\n");
        assert!(msg.contains("needs its server"), "{msg}");
        assert_eq!(line, Some(1));
        // `tool` on another kind.
        let (msg, line) =
            parse_err("[tools.s]\nkind = \"command\"\ncommand = [\"x\"]\ntool = \"y\"\n");
        assert!(
            msg.contains(
                "`tool` belongs to `kind = \"mcp\"`, but this tool is `kind = \"command\"`"
            ),
            "{msg}"
        );
        assert_eq!(line, Some(4));
        let (msg, _) = parse_err("[tools.s]\nkind = \"mock\"\nvalue = 1\ntool = \"y\"\n");
        assert!(msg.contains("`tool` belongs to"), "{msg}");
        // A field of command/http tools on a mock tool names both owners.
        let (msg, _) = parse_err("[tools.s]\nkind = \"mock\"\nvalue = 1\nurl = \"http://h\"\n");
        assert!(
            msg.contains("`url` belongs to `kind = \"http\"` or `kind = \"mcp\"`"),
            "{msg}"
        );
        // A mock field on an mcp tool.
        let (msg, line) =
            parse_err("[tools.s]\nkind = \"mcp\"\nurl = \"http://h/mcp\"\nvalue = 1\n");
        assert!(
            msg.contains("`value` belongs to `kind = \"mock\"`"),
            "{msg}"
        );
        assert!(msg.contains("`tool`"), "{msg}");
        assert_eq!(line, Some(4));
        // Process fields with a URL, headers with a command.
        let (msg, line) =
            parse_err("[tools.s]\nkind = \"mcp\"\nurl = \"http://h/mcp\"\ncwd = \"x\"\n");
        assert!(
            msg.contains("`cwd` is for an MCP server started by `command`"),
            "{msg}"
        );
        assert_eq!(line, Some(4));
        let (msg, line) =
            parse_err("[tools.s]\nkind = \"mcp\"\ncommand = [\"srv\"]\nheaders = {A = \"b\"}\n");
        assert!(
            msg.contains("`headers` is for an MCP server at a `url`"),
            "{msg}"
        );
        assert_eq!(line, Some(4));
        // Headers the MCP client sets itself.
        let (msg, _) = parse_err(
            "[tools.s]\nkind = \"mcp\"\nurl = \"http://h/mcp\"\nheaders = {Mcp-Session-Id = \"1\"}\n",
        );
        assert!(msg.contains("set by the MCP client itself"), "{msg}");
        // The URL and the command are checked as for http and command tools.
        let (msg, _) = parse_err("[tools.s]\nkind = \"mcp\"\nurl = \"ftp://h/mcp\"\n");
        assert!(msg.contains("must be an http:// or https:// URL"), "{msg}");
        let (msg, _) = parse_err("[tools.s]\nkind = \"mcp\"\ncommand = []\n");
        assert!(msg.contains("`command` is empty"), "{msg}");
        let (msg, line) =
            parse_err("[tools.s]\nkind = \"mcp\"\ncommand = [\"srv\"]\ntool = \" \"\n");
        assert!(
            msg.contains("`tool` (the downstream tool's name) is empty"),
            "{msg}"
        );
        assert_eq!(line, Some(4));
        // An unknown field, with a suggestion.
        let (msg, _) = parse_err("[tools.s]\nkind = \"mcp\"\ncommand = [\"srv\"]\ntol = \"x\"\n");
        assert!(msg.contains("did you mean `tool`?"), "{msg}");
    }

    #[test]
    fn policy_verdicts() {
        let p = Policy {
            allow: Some(["a".to_owned(), "b".to_owned()].into()),
            deny_capabilities: ["network".to_owned()].into(),
        };
        assert!(p.verdict("a", &[]).is_ok());
        assert!(p.verdict("c", &[]).unwrap_err().contains("allow"));
        assert!(
            p.verdict("b", &["network".to_owned()])
                .unwrap_err()
                .contains("`network`")
        );
        assert!(
            Policy::default()
                .verdict("x", &["network".to_owned()])
                .is_ok()
        );
    }
}
