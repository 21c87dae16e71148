//! The `openai` LLM adapter against a real HTTP server on 127.0.0.1 (axum): the request it
//! sends, the replies it understands and every way a call fails. Nothing reaches the internet.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures_util::stream;
use nanovm::exec::adapter::{CallError, Llm, LlmReply, LlmRequest, Usage};
use nanovm::exec::openai::{DEFAULT_MAX_RESPONSE_BYTES, OpenAi, OpenAiConfig, OpenAiError};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the server received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Value,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Serve `reply` for every request (any method, any path; each one is logged) on a fresh
/// port of 127.0.0.1; returns the base URL (`http://127.0.0.1:PORT/v1/`) and the log.
async fn serve<F, Fut>(reply: F) -> (String, Log)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let log = Log::default();
    let seen = log.clone();
    let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let reply = reply.clone();
        let seen = seen.clone();
        async move {
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            seen.lock().unwrap().push(Seen {
                method,
                uri,
                headers,
                body,
            });
            reply().await
        }
    };
    let app = Router::new()
        .route("/{*path}", any(handler.clone()))
        .route("/", any(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/v1/"), log)
}

fn config(base_url: &str) -> OpenAiConfig {
    OpenAiConfig {
        base_url: base_url.to_owned(),
        model: "gpt-test".to_owned(),
        api_key_env: None,
        timeout_seconds: 5.0,
        temperature: None,
        max_completion_tokens: None,
        input_cost_per_mtok: None,
        output_cost_per_mtok: None,
    }
}

fn adapter(base_url: &str) -> OpenAi {
    OpenAi::with_api_key(config(base_url), Some("sk-test-key-0123".to_owned())).unwrap()
}

async fn ask(llm: &OpenAi, prompt: &str) -> Result<LlmReply, CallError> {
    llm.complete(LlmRequest {
        step_id: "s",
        system: None,
        prompt,
    })
    .await
}

fn completion(content: Value) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
    })
}

fn failed(result: Result<LlmReply, CallError>) -> String {
    match result {
        Err(CallError::Failed(why)) => why,
        other => panic!("expected CallError::Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_completion_with_usage_and_cost() {
    let (base, log) = serve(|| async {
        let mut body = completion(json!("refund"));
        body["usage"] =
            json!({"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500});
        axum::Json(body).into_response()
    })
    .await;
    let mut c = config(&base);
    c.temperature = Some(0.25);
    c.max_completion_tokens = Some(64);
    c.input_cost_per_mtok = Some(2.5);
    c.output_cost_per_mtok = Some(10.0);
    let llm = OpenAi::with_api_key(c, Some("sk-test-key-0123".to_owned())).unwrap();
    assert_eq!(
        llm.endpoint().as_str(),
        format!("{base}chat/completions").as_str()
    );

    let reply = llm
        .complete(LlmRequest {
            step_id: "classify",
            system: Some("You sort tickets."),
            prompt: "Classify: hello",
        })
        .await
        .unwrap();
    assert_eq!(reply.text, "refund");
    let usage = reply.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (1200, 300, 1500)
    );
    let cost = usage.cost_usd.unwrap();
    assert!((cost - 0.006).abs() < 1e-12, "{cost}");

    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.uri.path(), "/v1/chat/completions");
    assert_eq!(
        req.headers.get(header::AUTHORIZATION).unwrap(),
        "Bearer sk-test-key-0123"
    );
    assert!(
        req.headers
            .get(header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(
        req.body,
        json!({
            "model": "gpt-test",
            "messages": [
                {"role": "system", "content": "You sort tickets."},
                {"role": "user", "content": "Classify: hello"},
            ],
            "temperature": 0.25,
            "max_tokens": 64,
        })
    );
}

#[tokio::test]
async fn no_key_no_system_no_options() {
    let (base, log) = serve(|| async {
        let mut body = completion(json!("yes"));
        body["usage"] = json!({"prompt_tokens": 3, "completion_tokens": 4});
        axum::Json(body).into_response()
    })
    .await;
    // No trailing slash on the base URL this time.
    let llm = OpenAi::with_api_key(config(base.trim_end_matches('/')), None).unwrap();
    let reply = ask(&llm, "hi").await.unwrap();
    assert_eq!(
        reply,
        LlmReply {
            text: "yes".to_owned(),
            usage: Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: 7,
                cost_usd: None,
            }),
        }
    );
    let req = log.lock().unwrap()[0].clone();
    assert_eq!(req.uri.path(), "/v1/chat/completions");
    assert!(req.headers.get(header::AUTHORIZATION).is_none());
    assert_eq!(
        req.body,
        json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]})
    );
}

#[tokio::test]
async fn a_completion_without_usage() {
    let (base, _) = serve(|| async { axum::Json(completion(json!(""))).into_response() }).await;
    let reply = ask(&adapter(&base), "hi").await.unwrap();
    assert_eq!(
        reply,
        LlmReply {
            text: String::new(),
            usage: None
        }
    );
}

#[tokio::test]
async fn a_server_error_is_http_500_with_the_body() {
    let (base, _) = serve(|| async {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "upstream model crashed\n",
        )
            .into_response()
    })
    .await;
    let err = ask(&adapter(&base), "hi").await.unwrap_err();
    assert_eq!(
        err,
        CallError::Http {
            status: 500,
            excerpt: "upstream model crashed".to_owned()
        }
    );
    assert_eq!(err.to_string(), "HTTP 500: upstream model crashed");
}

#[tokio::test]
async fn rate_limited_is_http_429_with_the_body() {
    let body = json!({"error": {"message": "Rate limit reached", "type": "requests"}});
    let text = body.to_string();
    let (base, _) = serve(move || {
        let body = body.clone();
        async move { (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response() }
    })
    .await;
    let err = ask(&adapter(&base), "hi").await.unwrap_err();
    assert_eq!(
        err,
        CallError::Http {
            status: 429,
            excerpt: text
        }
    );
}

#[tokio::test]
async fn a_long_error_body_is_cut_and_the_key_is_never_quoted() {
    let (base, _) = serve(|| async {
        let echo = format!(
            "Incorrect API key provided: sk-test-key-0123. {}",
            "x".repeat(100_000)
        );
        (StatusCode::UNAUTHORIZED, echo).into_response()
    })
    .await;
    let Err(CallError::Http { status, excerpt }) = ask(&adapter(&base), "hi").await else {
        panic!("expected an HTTP error")
    };
    assert_eq!(status, 401);
    assert!(
        excerpt.starts_with("Incorrect API key provided: <redacted>. xxx"),
        "{excerpt}"
    );
    assert!(!excerpt.contains("sk-test-key-0123"));
    assert!(excerpt.len() < 400, "{}", excerpt.len());
}

#[tokio::test]
async fn a_slow_response_times_out() {
    let (base, _) = serve(|| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        axum::Json(completion(json!("late"))).into_response()
    })
    .await;
    let mut c = config(&base);
    c.timeout_seconds = 0.1;
    let llm = OpenAi::with_api_key(c, None).unwrap();
    let start = Instant::now();
    let err = ask(&llm, "hi").await.unwrap_err();
    assert_eq!(err, CallError::Timeout(Duration::from_millis(100)));
    assert_eq!(err.to_string(), "timed out after 100ms");
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_body_that_stalls_times_out() {
    // The headers and the first byte come at once, the rest never does.
    let (base, _) = serve(|| async {
        let chunks = stream::unfold(0u32, |i| async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            Some((Ok::<_, Infallible>(Bytes::from_static(b"{")), i + 1))
        });
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(chunks))
            .unwrap()
    })
    .await;
    let mut c = config(&base);
    c.timeout_seconds = 0.1;
    let llm = OpenAi::with_api_key(c, None).unwrap();
    assert_eq!(
        ask(&llm, "hi").await,
        Err(CallError::Timeout(Duration::from_millis(100)))
    );
}

#[tokio::test]
async fn malformed_json() {
    let (base, _) = serve(|| async {
        (
            [(header::CONTENT_TYPE, "application/json")],
            "{\"choices\": [oops",
        )
            .into_response()
    })
    .await;
    let why = failed(ask(&adapter(&base), "hi").await);
    assert!(why.starts_with("the response is not JSON ("), "{why}");
    assert!(why.ends_with(": {\"choices\": [oops"), "{why}");
}

#[tokio::test]
async fn missing_choices() {
    let (base, _) = serve(|| async {
        axum::Json(json!({"id": "x", "object": "chat.completion"})).into_response()
    })
    .await;
    let why = failed(ask(&adapter(&base), "hi").await);
    assert_eq!(
        why,
        r#"the response has no `choices[0]`: {"id":"x","object":"chat.completion"}"#
    );

    let (base, _) = serve(|| async { axum::Json(json!({"choices": []})).into_response() }).await;
    let why = failed(ask(&adapter(&base), "hi").await);
    assert!(why.starts_with("the response has no `choices[0]`"), "{why}");
}

#[tokio::test]
async fn null_content() {
    let (base, _) = serve(|| async {
        let mut body = completion(Value::Null);
        body["choices"][0]["finish_reason"] = json!("content_filter");
        axum::Json(body).into_response()
    })
    .await;
    let why = failed(ask(&adapter(&base), "hi").await);
    assert_eq!(
        why,
        "the completion has no text content (`choices[0].message.content` is null or missing); \
         finish_reason `content_filter`"
    );
}

#[tokio::test]
async fn a_huge_body_fails_at_the_limit() {
    // With a Content-Length: refused before reading.
    let (base, _) = serve(|| async {
        let mut body = completion(json!("x".repeat(64 * 1024)));
        body["usage"] = json!({"total_tokens": 1});
        axum::Json(body).into_response()
    })
    .await;
    let llm = adapter(&base).with_max_response_bytes(4096);
    let why = failed(ask(&llm, "hi").await);
    assert_eq!(
        why,
        format!("the response of {base}chat/completions is larger than the limit of 4096 bytes")
    );
    // The same body is fine under the default limit.
    assert_eq!(DEFAULT_MAX_RESPONSE_BYTES, 8 * 1024 * 1024);
    assert_eq!(
        ask(&adapter(&base), "hi").await.unwrap().text.len(),
        64 * 1024
    );

    // Streamed without a length: read chunk by chunk, stopped past the limit.
    let (base, _) = serve(|| async {
        let chunks =
            stream::iter((0..1024).map(|_| Ok::<_, Infallible>(Bytes::from(vec![b' '; 1024]))));
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(chunks))
            .unwrap()
    })
    .await;
    let llm = adapter(&base).with_max_response_bytes(4096);
    let why = failed(ask(&llm, "hi").await);
    assert!(
        why.ends_with("is larger than the limit of 4096 bytes"),
        "{why}"
    );
}

#[tokio::test]
async fn connection_refused() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}/v1");
    let why = failed(ask(&adapter(&base), "hi").await);
    let prefix = format!("cannot reach http://127.0.0.1:{port}/v1/chat/completions: ");
    assert!(why.starts_with(&prefix), "{why}");
    assert!(why.to_lowercase().contains("refused"), "{why}");
    assert!(!why.contains("sk-test-key-0123"));
}

#[tokio::test]
async fn a_connection_cut_mid_body() {
    // A raw server that promises 100 bytes, sends a few and hangs up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let _ = sock
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"cho")
            .await;
    });
    let base = format!("http://{addr}/v1");
    let why = failed(ask(&adapter(&base), "hi").await);
    assert!(
        why.starts_with(&format!("request to {base}/chat/completions failed: ")),
        "{why}"
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let (base, log) = serve(|| async {
        (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, "http://127.0.0.1:1/elsewhere")],
            "",
        )
            .into_response()
    })
    .await;
    assert_eq!(
        ask(&adapter(&base), "hi").await,
        Err(CallError::Http {
            status: 307,
            excerpt: String::new()
        })
    );
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[test]
fn a_missing_key_variable_is_named() {
    let var = "NANOVM_TEST_OPENAI_KEY_THAT_IS_NEVER_SET_7F3A";
    let mut c = config("http://127.0.0.1:9/v1");
    c.api_key_env = Some(var.to_owned());
    let err = OpenAi::new(c).unwrap_err();
    assert_eq!(
        err,
        OpenAiError::ApiKeyNotSet {
            var: var.to_owned()
        }
    );
    assert_eq!(
        err.to_string(),
        format!("the API key environment variable `{var}` (api_key_env) is not set")
    );
    // Without api_key_env, no key is needed.
    assert!(OpenAi::new(config("http://127.0.0.1:9/v1")).is_ok());
}

#[test]
fn bad_configurations() {
    for url in ["", "127.0.0.1:8000/v1", "file:///tmp/x", "http://h/v1#x"] {
        let err = OpenAi::new(config(url)).unwrap_err();
        assert!(
            matches!(err, OpenAiError::InvalidBaseUrl { .. }),
            "{url}: {err:?}"
        );
        assert!(err.to_string().starts_with("invalid base_url `"), "{err}");
    }
    for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let mut c = config("http://127.0.0.1:9/v1");
        c.timeout_seconds = t;
        assert!(
            matches!(OpenAi::new(c), Err(OpenAiError::InvalidTimeout(_))),
            "{t}"
        );
    }
    assert_eq!(
        OpenAi::with_api_key(config("http://127.0.0.1:9/v1"), Some(" ".to_owned())).unwrap_err(),
        OpenAiError::EmptyApiKey
    );
}

#[test]
fn the_config_section_and_its_defaults() {
    let c: OpenAiConfig =
        toml::from_str("base_url = \"http://127.0.0.1:11434/v1\"\nmodel = \"llama3\"\n").unwrap();
    assert_eq!(c.timeout_seconds, 60.0);
    assert_eq!(c.api_key_env, None);
    assert_eq!(c.max_completion_tokens, None);
    let llm = OpenAi::new(c).unwrap();
    assert_eq!(llm.timeout(), Duration::from_secs(60));
    assert!(!format!("{llm:?}").is_empty());
    assert!(toml::from_str::<OpenAiConfig>("base_url = \"x\"\nmodel = \"m\"\nkey = 1\n").is_err());
}

#[test]
fn debug_output_hides_the_key() {
    let llm = adapter("http://127.0.0.1:9/v1");
    let shown = format!("{llm:?}");
    assert!(!shown.contains("sk-test-key-0123"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}
