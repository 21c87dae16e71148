//! The MCP server (DESIGN §7): nanovm's checker, runtime and store as MCP tools, over stdio
//! or Streamable HTTP. A thin surface: no checking or execution logic lives here.

mod args;
pub mod http;
mod sampling;
mod server;

pub use args::{CheckResult, EvalResult, RunResult, VerifyResult};
pub use sampling::Sampling;
pub use server::{NanovmServer, ServerOptions};

use rmcp::ServiceExt;

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the MCP session could not start: {0}")]
    Start(String),
    #[error("the MCP session failed: {0}")]
    Session(String),
}

/// Serve one client over standard input and output until it disconnects.
pub async fn serve_stdio(server: NanovmServer) -> Result<(), ServeError> {
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| ServeError::Start(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| ServeError::Session(e.to_string()))?;
    Ok(())
}
