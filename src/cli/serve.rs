//! `nanovm serve`: the MCP server over stdio or Streamable HTTP.

use super::EXIT_USAGE;
use super::run::{AdapterArgs, setup};
use crate::mcp::http::HttpOptions;
use crate::mcp::{NanovmServer, ServerOptions, StoreHealth, serve_stdio};
use clap::{Args, ValueEnum};
use std::sync::Arc;
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
    /// A `Host` name clients may use (repeatable; default: `$NANOVM_ALLOWED_HOSTS`, comma-separated,
    /// else localhost, 127.0.0.1 and ::1). Needed when clients reach the server by another name.
    #[arg(long = "allow-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// A browser origin allowed to call the server, with its scheme (repeatable; default:
    /// `$NANOVM_ALLOWED_ORIGINS`, else none: requests with an `Origin` header are refused).
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
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

/// A list from the environment: comma-separated, blanks dropped.
fn env_list(names: &[&str]) -> Option<Vec<String>> {
    env_any(names).map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

/// A number from the environment, or a clear error.
fn env_number<T: std::str::FromStr>(names: &[&str]) -> Result<Option<T>, String> {
    match env_any(names) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            format!(
                "{} is `{v}`; it must be a non-negative integer",
                names.first().copied().unwrap_or_default()
            )
        }),
    }
}

/// The HTTP options from the flags, then the environment, then the defaults.
fn http_options(args: &ServeArgs) -> Result<HttpOptions, String> {
    let mut opts = HttpOptions::default();
    if let Some(host) = args
        .host
        .clone()
        .or_else(|| env_any(&["NANOVM_HOST", "NANO_VM_MCP_HOST"]))
    {
        opts.host = host;
    }
    match args.port {
        Some(p) => opts.port = p,
        None => {
            if let Some(p) = env_number(&["NANOVM_PORT", "NANO_VM_MCP_PORT"])? {
                opts.port = p;
            }
        }
    }
    opts.api_key = env_any(&["NANOVM_API_KEY", "NANO_VM_MCP_API_KEY"]);
    if !args.allowed_hosts.is_empty() {
        opts.allowed_hosts = args.allowed_hosts.clone();
    } else if let Some(hosts) = env_list(&["NANOVM_ALLOWED_HOSTS"]) {
        opts.allowed_hosts = hosts;
    }
    if !args.allowed_origins.is_empty() {
        opts.allowed_origins = args.allowed_origins.clone();
    } else if let Some(origins) = env_list(&["NANOVM_ALLOWED_ORIGINS"]) {
        opts.allowed_origins = origins;
    }
    if let Some(n) = env_number(&["NANOVM_MAX_BODY_BYTES"])? {
        opts.max_body_bytes = n;
    }
    if let Some(n) = env_number(&["NANOVM_MAX_IN_FLIGHT"])? {
        opts.max_in_flight = n;
    }
    if let Some(n) = env_number(&["NANOVM_RATE_PER_MINUTE"])? {
        opts.rate_per_minute = n;
    }
    if let Some(s) = env_number::<u64>(&["NANOVM_SHUTDOWN_GRACE_SECONDS"])? {
        opts.shutdown_grace = Duration::from_secs(s);
    }
    Ok(opts)
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn http(args: &ServeArgs, server: NanovmServer) -> Result<(), String> {
    let opts = http_options(args)?;
    // Refuse bad options before announcing anything.
    opts.validate().map_err(|e| e.to_string())?;
    let listener = opts.bind().await.map_err(|e| e.to_string())?;
    if let Ok(addr) = listener.local_addr() {
        // The one line a deployment script waits for (stderr, like every log).
        eprintln!("nanovm: MCP server at http://{addr}/mcp (health: http://{addr}/health)");
    }
    let health = Arc::new(StoreHealth(server.store().clone()));
    crate::mcp::http::serve(
        listener,
        move || Ok(server.clone()),
        health,
        opts,
        shutdown_signal(),
    )
    .await
    .map_err(|e| e.to_string())
}
