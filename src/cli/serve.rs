//! `nanovm serve`: the MCP server over stdio or Streamable HTTP.

use super::EXIT_USAGE;
use super::run::{AdapterArgs, setup};
use crate::mcp::{NanovmServer, ServerOptions, serve_stdio};
use clap::{Args, ValueEnum};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// One client on standard input/output (Claude Desktop, Claude Code).
    Stdio,
    /// Streamable HTTP at `/mcp`, plus `GET /health`.
    Http,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// How clients connect (default: `$NANOVM_TRANSPORT`, else stdio).
    #[arg(long, value_enum)]
    transport: Option<Transport>,
    /// HTTP bind address (default: `$NANOVM_HOST` / `$NANO_VM_MCP_HOST`, else 127.0.0.1).
    #[arg(long)]
    host: Option<String>,
    /// HTTP port (default: `$NANOVM_PORT` / `$NANO_VM_MCP_PORT`, else 8080; 0 picks a free one).
    #[arg(long)]
    port: Option<u16>,
    #[command(flatten)]
    adapters: AdapterArgs,
    #[command(flatten)]
    db: super::store::DbArgs,
}

/// The first non-empty value among environment variables (nanovm's name, then the
/// reference's alias).
pub(super) fn env_any(names: &[&str]) -> Option<String> {
    names
        .iter()
        .filter_map(|n| std::env::var(n).ok())
        .find(|v| !v.trim().is_empty())
}

pub fn run(args: &ServeArgs) -> u8 {
    match serve(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_USAGE
        }
    }
}

fn init_logging() {
    // Logs go to stderr: on stdio, stdout is the protocol.
    let filter = tracing_subscriber::EnvFilter::try_from_env("NANOVM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,nanovm=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn serve(args: &ServeArgs) -> Result<(), String> {
    init_logging();
    let transport = match args.transport {
        Some(t) => t,
        None => match env_any(&["NANOVM_TRANSPORT", "NANO_VM_MCP_TRANSPORT"]).as_deref() {
            None | Some("stdio") => Transport::Stdio,
            Some("http" | "streamable-http") => Transport::Http,
            Some(other) => {
                return Err(format!(
                    "NANOVM_TRANSPORT is `{other}`; it can be `stdio` or `http` (the reference's `sse` transport is not supported: use `http`, Streamable HTTP)"
                ));
            }
        },
    };
    if env_any(&["NANOVM_LLM_MODEL", "NANO_VM_MCP_LLM_MODEL"]).is_some() {
        tracing::warn!(
            "NANO_VM_MCP_LLM_MODEL is ignored: configure the LLM in nanovm.toml ([llm] provider = \"openai\", any OpenAI-compatible endpoint)"
        );
    }
    let adapters = setup(&args.adapters)?;
    let store = super::store::open(args.db.db_path_flag(), true)?;
    let opts = ServerOptions {
        retry_backoff: Duration::from_millis(args.adapters.retry_backoff_ms),
        ..ServerOptions::default()
    };
    tracing::info!(
        db = %store.path().display(),
        tools = adapters.catalog.len(),
        llm = adapters.llm.is_some(),
        "nanovm MCP server starting"
    );
    let server = NanovmServer::new(store.clone(), adapters, opts);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let out = rt.block_on(async {
        match transport {
            Transport::Stdio => serve_stdio(server).await.map_err(|e| e.to_string()),
            Transport::Http => http(args, server).await,
        }
    });
    store.close();
    out
}
