//! `kind = "mcp"` tools: a tool of a downstream MCP server, called through rmcp's client.
//!
//! The server is a child process speaking MCP over its stdin and stdout (`command`, started
//! from an argv, never a shell, as the leader of a new process group), or a Streamable HTTP
//! endpoint (`url`). The connection is made on the first call and shared by every later call
//! (and by every tool of the registry naming the same server); calls run concurrently over it.
//! A connection found closed (the child exited, the HTTP session ended) is replaced on the
//! next call, which connects once more; a failed call is not retried (it may have acted).
//!
//! A call sends the arguments object as the tool's arguments. The result is the tool's
//! `structuredContent` when it has one, else its text content (text blocks joined with
//! newlines) parsed as JSON when it parses, else that text as a JSON string. A result with
//! `isError: true` fails the call, quoting its text. The timeout covers connecting and the
//! call; a call that runs out of time (or is dropped) is cancelled on the server
//! (`notifications/cancelled`), the connection stays.
//!
//! A child's stderr is kept (its last [`STDERR_KEEP`] bytes) for the error messages of a
//! connection that fails or closes. A child and its process group are killed when the
//! registry is dropped (or when a dead connection is replaced), so none outlives a run.

use super::command::{GroupGuard, group_command};
use super::config::{CommandConfig, McpServer};
use crate::exec::adapter::{CallError, excerpt};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Url};
use rmcp::ServiceExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ContentBlock,
    Implementation,
};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// How many bytes of a child's stderr are kept (the last ones).
const STDERR_KEEP: usize = 4096;
/// How many bytes of an error text a message quotes.
const EXCERPT: usize = 500;

/// A downstream MCP server: how to reach it and the connection, once made.
pub(super) struct Server {
    /// `MCP server `…``: the program or the URL (without its query), for messages.
    label: String,
    target: Target,
    conn: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

enum Target {
    Stdio(CommandConfig),
    Http {
        client: Client,
        url: Url,
        headers: HashMap<HeaderName, HeaderValue>,
    },
}

/// A live connection.
struct Connection {
    service: RunningService<RoleClient, ClientConfig>,
    /// The child's process group (stdio), killed when the connection is dropped. Declared
    /// after `service`: the service is cancelled first.
    _group: Option<GroupGuard>,
    stderr: Option<Arc<Mutex<Vec<u8>>>>,
}

impl Connection {
    fn is_closed(&self) -> bool {
        self.service.is_closed() || self.service.is_transport_closed()
    }

    /// `; stderr: …` when the child wrote something.
    fn stderr_note(&self) -> String {
        stderr_note(self.stderr.as_ref())
    }
}

impl Server {
    /// The server of `kind = "mcp"` tools; `client` and `headers` (already expanded) serve a
    /// `url` server.
    pub(super) fn new(server: &McpServer, client: Option<Client>, headers: HeaderMap) -> Self {
        match server {
            McpServer::Stdio(c) => Self {
                label: format!("MCP server `{}`", c.program.display()),
                target: Target::Stdio(c.clone()),
                conn: tokio::sync::Mutex::new(None),
            },
            McpServer::Http(h) => {
                let mut shown = h.url.clone();
                shown.set_query(None);
                shown.set_fragment(None);
                let _ = shown.set_username("");
                let _ = shown.set_password(None);
                Self {
                    label: format!("MCP server `{shown}`"),
                    target: Target::Http {
                        client: client.unwrap_or_default(),
                        url: h.url.clone(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    },
                    conn: tokio::sync::Mutex::new(None),
                }
            }
        }
    }

    /// The live connection, made now when there is none or the last one has closed.
    async fn connection(&self) -> Result<Arc<Connection>, CallError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        // A closed connection is dropped (its process group killed) before the next one.
        *slot = None;
        let c = Arc::new(self.connect().await?);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Forget `conn` (when it is still the current one): the next call reconnects.
    async fn forget(&self, conn: &Arc<Connection>) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }

    async fn connect(&self) -> Result<Connection, CallError> {
        let info = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("nanovm", env!("CARGO_PKG_VERSION")),
        );
        match &self.target {
            Target::Stdio(c) => {
                let cmd = group_command(c);
                let (transport, stderr) = TokioChildProcess::builder(cmd)
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| {
                        CallError::Failed(format!("cannot start `{}`: {e}", c.program.display()))
                    })?;
                // From here on, a failure (or a cancelled call) kills the group.
                let group = GroupGuard::new(transport.id());
                let tail = stderr.map(|mut r| {
                    let tail = Arc::new(Mutex::new(Vec::new()));
                    let keep = tail.clone();
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = r.read(&mut buf).await {
                            let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
                                break;
                            };
                            let mut t = keep.lock().unwrap_or_else(|p| p.into_inner());
                            t.extend_from_slice(chunk);
                            let extra = t.len().saturating_sub(STDERR_KEEP);
                            t.drain(..extra);
                        }
                    });
                    tail
                });
                let service = info.serve(transport).await.map_err(|e| {
                    CallError::Failed(format!(
                        "cannot connect to the {}: {}{}",
                        self.label,
                        excerpt(&chain(&e), EXCERPT),
                        stderr_note(tail.as_ref())
                    ))
                })?;
                Ok(Connection {
                    service,
                    _group: Some(group),
                    stderr: tail,
                })
            }
            Target::Http {
                client,
                url,
                headers,
            } => {
                let config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
                    .custom_headers(headers.clone())
                    .reinit_on_expired_session(true);
                let transport = StreamableHttpClientTransport::with_client(client.clone(), config);
                let service = info.serve(transport).await.map_err(|e| {
                    CallError::Failed(format!(
                        "cannot connect to the {}: {}",
                        self.label,
                        excerpt(&chain(&e), EXCERPT)
                    ))
                })?;
                Ok(Connection {
                    service,
                    _group: None,
                    stderr: None,
                })
            }
        }
    }
}

/// One `kind = "mcp"` tool: a server (maybe shared) and the downstream tool's name.
#[derive(Debug)]
pub(super) struct McpTool {
    server: Arc<Server>,
    tool: String,
    timeout: Duration,
    max_output: usize,
}

impl McpTool {
    pub(super) fn new(
        server: Arc<Server>,
        tool: String,
        timeout: Duration,
        max_output: usize,
    ) -> Self {
        Self {
            server,
            tool,
            timeout,
            max_output,
        }
    }

    pub(super) async fn call(&self, args: &Value) -> Result<Value, CallError> {
        let Value::Object(args) = args else {
            return Err(CallError::Failed(format!(
                "the arguments of an MCP tool must be an object, not {}",
                excerpt(&args.to_string(), EXCERPT)
            )));
        };
        match tokio::time::timeout(self.timeout, self.run(args.clone())).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }

    async fn run(&self, args: Map<String, Value>) -> Result<Value, CallError> {
        let server = &self.server;
        let conn = server.connection().await?;
        let params = CallToolRequestParams::new(self.tool.clone()).with_arguments(args);
        let tool = &self.tool;
        let result = match conn.service.call_tool(params).await {
            Ok(r) => r,
            Err(e) => {
                let closed = matches!(
                    e,
                    ServiceError::TransportClosed | ServiceError::TransportSend(_)
                ) || conn.is_closed();
                let msg = match &e {
                    ServiceError::McpError(d) => format!(
                        "the {} refused the call of tool `{tool}`: {} (error {})",
                        server.label,
                        excerpt(&d.message, EXCERPT),
                        d.code.0
                    ),
                    _ if closed => format!(
                        "the connection to the {} closed during the call of tool `{tool}`: {}{}",
                        server.label,
                        excerpt(&chain(&e), EXCERPT),
                        conn.stderr_note()
                    ),
                    _ => format!(
                        "calling tool `{tool}` of the {} failed: {}",
                        server.label,
                        excerpt(&chain(&e), EXCERPT)
                    ),
                };
                if closed {
                    server.forget(&conn).await;
                }
                return Err(CallError::Failed(msg));
            }
        };
        let value = result_value(result).map_err(|text| {
            CallError::Failed(format!(
                "{} tool `{tool}` failed: {}",
                server.label,
                excerpt(&text, EXCERPT)
            ))
        })?;
        let size = serde_json::to_vec(&value).map_or(0, |v| v.len());
        if size > self.max_output {
            return Err(CallError::Failed(format!(
                "output exceeds {} bytes",
                self.max_output
            )));
        }
        Ok(value)
    }
}

/// The value of a tool's result, or (for `isError: true`) the error text.
fn result_value(r: CallToolResult) -> Result<Value, String> {
    let texts: Vec<&str> = r
        .content
        .iter()
        .filter_map(|c| match c {
            ContentBlock::Text(t) => Some(t.text.as_str()),
            _ => None,
        })
        .collect();
    let text = texts.join("\n");
    if r.is_error == Some(true) {
        return Err(if !text.trim().is_empty() {
            text
        } else if let Some(v) = &r.structured_content {
            v.to_string()
        } else {
            "(no message)".to_owned()
        });
    }
    if let Some(v) = r.structured_content {
        return Ok(v);
    }
    if texts.is_empty() {
        if r.content.is_empty() {
            return Ok(Value::Null);
        }
        return Err(
            "the result has no text or structured content (only images, audio or resources)"
                .to_owned(),
        );
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// An error's message with its causes.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        source = s.source();
    }
    msg
}

/// `; stderr: …` when a child wrote something on stderr.
fn stderr_note(tail: Option<&Arc<Mutex<Vec<u8>>>>) -> String {
    let Some(tail) = tail else {
        return String::new();
    };
    let t = tail.lock().unwrap_or_else(|p| p.into_inner());
    let text = String::from_utf8_lossy(&t);
    if text.trim().is_empty() {
        String::new()
    } else {
        format!("; stderr: {}", excerpt(&text, EXCERPT))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rmcp::model::ContentBlock;
    use serde_json::json;

    fn result(
        content: Vec<ContentBlock>,
        structured: Option<Value>,
        error: bool,
    ) -> CallToolResult {
        let mut r = if error {
            CallToolResult::error(content)
        } else {
            CallToolResult::success(content)
        };
        r.structured_content = structured;
        r
    }

    #[test]
    fn result_values() {
        let t = ContentBlock::text;
        assert_eq!(
            result_value(result(vec![t("ignored")], Some(json!({"a": 1})), false)),
            Ok(json!({"a": 1}))
        );
        assert_eq!(
            result_value(result(vec![t("{\"a\": [1, 2]}")], None, false)),
            Ok(json!({"a": [1, 2]}))
        );
        assert_eq!(
            result_value(result(vec![t("hello")], None, false)),
            Ok(json!("hello"))
        );
        assert_eq!(
            result_value(result(vec![t("[1,"), t("2]")], None, false)),
            Ok(json!([1, 2]))
        );
        assert_eq!(
            result_value(result(vec![t("a"), t("b")], None, false)),
            Ok(json!("a\nb"))
        );
        assert_eq!(result_value(result(vec![], None, false)), Ok(Value::Null));
        assert_eq!(
            result_value(result(vec![t("boom")], None, true)),
            Err("boom".to_owned())
        );
        assert_eq!(
            result_value(result(vec![], None, true)),
            Err("(no message)".to_owned())
        );
        assert!(
            result_value(result(
                vec![ContentBlock::image("AAAA", "image/png")],
                None,
                false
            ))
            .is_err()
        );
    }
}
