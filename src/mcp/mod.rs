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

/// `GET /health` for a store: its path, schema version and row counts, or the error.
#[derive(Debug, Clone)]
pub struct StoreHealth(pub crate::store::Store);

impl http::Health for StoreHealth {
    fn health(&self) -> futures_util::future::BoxFuture<'_, Result<serde_json::Value, String>> {
        Box::pin(async move {
            let h = self.0.health().await.map_err(|e| e.to_string())?;
            serde_json::to_value(h).map_err(|e| e.to_string())
        })
    }
}
