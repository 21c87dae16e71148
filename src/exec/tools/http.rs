//! `kind = "http"` tools: `POST url` with the arguments as a JSON body; a 2xx answer's body
//! (at most `max_output_bytes`) must be one JSON value.

use crate::exec::adapter::{CallError, excerpt};
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue};
use reqwest::{Client, Url};
use serde_json::Value;
use std::time::Duration;

/// How many bytes of a body an error message quotes.
const EXCERPT: usize = 500;

#[derive(Debug)]
pub(super) struct HttpTool {
    client: Client,
    url: Url,
    headers: HeaderMap,
    timeout: Duration,
    max_output: usize,
}

impl HttpTool {
    pub(super) fn new(
        client: Client,
        url: Url,
        mut headers: HeaderMap,
        timeout: Duration,
        max_output: usize,
    ) -> Self {
        headers
            .entry(ACCEPT)
            .or_insert(HeaderValue::from_static("application/json"));
        Self {
            client,
            url,
            headers,
            timeout,
            max_output,
        }
    }

    pub(super) async fn call(&self, args: &Value) -> Result<Value, CallError> {
        match tokio::time::timeout(self.timeout, self.post(args)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }

    async fn post(&self, args: &Value) -> Result<Value, CallError> {
        let mut resp = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .json(args)
            .send()
            .await
            .map_err(|e| failed("the request failed", &e))?;
        let status = resp.status();
        let cap = self.max_output;
        if status.is_success()
            && resp
                .content_length()
                .is_some_and(|n| usize::try_from(n).map_or(true, |n| n > cap))
        {
            return Err(CallError::Failed(format!("output exceeds {cap} bytes")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| failed("reading the response failed", &e))?
        {
            if body.len().saturating_add(chunk.len()) > cap {
                if status.is_success() {
                    return Err(CallError::Failed(format!("output exceeds {cap} bytes")));
                }
                // An error body is only quoted: its head is enough.
                break;
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            return Err(CallError::Http {
                status: status.as_u16(),
                excerpt: excerpt(&text, EXCERPT),
            });
        }
        serde_json::from_slice(&body).map_err(|e| {
            if text.trim().is_empty() {
                CallError::Failed("answered invalid JSON: an empty body".to_owned())
            } else {
                CallError::Failed(format!(
                    "answered invalid JSON: {} ({e})",
                    excerpt(&text, EXCERPT)
                ))
            }
        })
    }
}

/// A transport error with its causes (reqwest's own message names no cause).
fn failed(what: &str, e: &reqwest::Error) -> CallError {
    let mut msg = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    CallError::Failed(msg)
}
