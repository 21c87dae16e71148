//! The HTTP side of nanovm's MCP server: rmcp's Streamable HTTP transport at `/mcp`, behind
//! bearer authentication, a per-client rate limit, an in-flight limit and a body-size limit,
//! plus an unauthenticated `GET /health`, with graceful shutdown.
//!
//! The server is generic over the MCP handler: [`router`] and [`serve`] take a factory that
//! builds one handler per MCP session (`Fn() -> Result<S, std::io::Error>`).
//!
//! Order of checks on `/mcp`: rate limit (429) → bearer token (401) → declared body size
//! (413) → in-flight limit (429) → rmcp (Host/Origin 403, streamed body size 413, protocol).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long `GET /health` waits for [`Health::health`] before answering 503.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// After rmcp's cancellation token is cancelled, how long [`serve`] waits for the remaining
/// connections to close before returning anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// `Retry-After` (seconds) sent when a request is shed by the in-flight limit.
const SHED_RETRY_AFTER_SECS: u64 = 1;
/// The rate limiter forgets idle clients once it tracks more than this many.
const RATE_PRUNE_THRESHOLD: usize = 4096;

/// Options of the MCP HTTP server. Build with struct-update syntax over [`Default`].
#[derive(Clone)]
pub struct HttpOptions {
    /// Address to bind (used by [`HttpOptions::bind`]). Default `127.0.0.1`.
    pub host: String,
    /// Port to bind (used by [`HttpOptions::bind`]); 0 picks a free port. Default 8080.
    pub port: u16,
    /// When set, `/mcp` requires `Authorization: Bearer <api_key>`. Must not be empty.
    /// Default: none (no authentication; a warning is logged if the bind address is not
    /// loopback).
    pub api_key: Option<String>,
    /// Accepted `Host` header values on `/mcp` (`name` matches any port, `name:port` only
    /// that port); other hosts get 403 (DNS-rebinding protection). Default: `localhost`,
    /// `127.0.0.1`, `::1`. An empty list accepts any host (a warning is logged); `*` is
    /// rejected.
    pub allowed_hosts: Vec<String>,
    /// Accepted browser `Origin` values on `/mcp`, with scheme (`https://app.example`,
    /// `http://localhost:*`). Requests without an `Origin` header (non-browser clients)
    /// always pass. Default empty: every request carrying an `Origin` header gets 403.
    /// `*` is rejected.
    pub allowed_origins: Vec<String>,
    /// Largest accepted request body on `/mcp`, in bytes; larger bodies get 413. Default 16 MiB.
    pub max_body_bytes: usize,
    /// Most `/mcp` requests processed at once (POST and DELETE, until their response body
    /// is fully sent; long-lived `GET` event streams are not counted). Requests beyond it
    /// are shed at once with 429 and `Retry-After: 1`, never queued. Default 64.
    pub max_in_flight: usize,
    /// Requests per minute per client IP on `/mcp` (token bucket holding up to this many,
    /// refilled continuously); beyond it 429 with `Retry-After`. 0 disables the limit.
    /// Default 600. Behind a reverse proxy all clients share the proxy's IP.
    pub rate_per_minute: u32,
    /// On shutdown, how long in-flight requests (tool calls) may take to finish before rmcp's
    /// sessions are cancelled. Default 30 s.
    pub shutdown_grace: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 8080,
            api_key: None,
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            allowed_origins: Vec::new(),
            max_body_bytes: 16 * 1024 * 1024,
            max_in_flight: 64,
            rate_per_minute: 600,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for HttpOptions {
    // Hand-written so the API key never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("allowed_hosts", &self.allowed_hosts)
            .field("allowed_origins", &self.allowed_origins)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_in_flight", &self.max_in_flight)
            .field("rate_per_minute", &self.rate_per_minute)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish()
    }
}

impl HttpOptions {
    /// Binds a listener on `host:port`.
    pub async fn bind(&self) -> Result<TcpListener, HttpError> {
        TcpListener::bind((self.host.as_str(), self.port))
            .await
            .map_err(|source| HttpError::Bind {
                address: format!("{}:{}", self.host, self.port),
                source,
            })
    }

    /// Refuse options that cannot be served (a wildcard origin, zero limits, an empty key);
    /// [`serve`] and [`router`] check them too.
    pub fn validate(&self) -> Result<(), HttpError> {
        let bad = |option: &'static str, reason: &str| {
            Err(HttpError::BadOption {
                option,
                reason: reason.to_owned(),
            })
        };
        if self.api_key.as_deref().is_some_and(str::is_empty) {
            return bad("api_key", "must not be empty");
        }
        if self.allowed_hosts.iter().any(|h| h.trim() == "*") {
            return bad(
                "allowed_hosts",
                "`*` is not supported; list the host names (an empty list accepts any host)",
            );
        }
        if self.allowed_origins.iter().any(|o| o.trim() == "*") {
            return bad(
                "allowed_origins",
                "a wildcard origin is not allowed; list each origin with its scheme",
            );
        }
        if self.max_body_bytes == 0 {
            return bad("max_body_bytes", "must be at least 1");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", "must be at least 1");
        }
        if u32::try_from(self.max_in_flight).is_err() || self.max_in_flight > Semaphore::MAX_PERMITS
        {
            return bad("max_in_flight", "is too large");
        }
        Ok(())
    }
}

/// Errors starting the MCP HTTP server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// `host:port` as configured.
        address: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An [`HttpOptions`] value is invalid.
    #[error("invalid HTTP option `{option}`: {reason}")]
    BadOption {
        /// The option's field name.
        option: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// The server failed while running.
    #[error("HTTP server error: {0}")]
    Serve(#[source] std::io::Error),
}

/// Reports the health of what the MCP server depends on (the database), for `GET /health`.
///
/// `Ok(value)` answers 200 `{"status":"ok","version":…,"database":value}`;
/// `Err(message)` answers 503 `{"status":"degraded","version":…,"database":{"error":message}}`.
/// A check that takes longer than 5 s counts as `Err`.
pub trait Health: Send + Sync {
    /// Checks the database (or whatever the server depends on).
    fn health(&self) -> BoxFuture<'_, Result<Value, String>>;
}

/// Builds the server's router: `GET /health` and `/mcp`.
///
/// `shutdown` is rmcp's cancellation token: cancelling it ends every MCP session. The router
/// needs `ConnectInfo<SocketAddr>` for per-client rate limiting (serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`); without it, all clients share one
/// rate-limit bucket. Fails on invalid options.
pub fn router<S, F>(
    factory: F,
    health: Arc<dyn Health>,
    opts: &HttpOptions,
    shutdown: CancellationToken,
) -> Result<Router, HttpError>
where
    S: rmcp::ServerHandler + Send + 'static,
    F: Fn() -> Result<S, std::io::Error> + Send + Sync + 'static,
{
    build(factory, health, opts, shutdown).map(|(router, _)| router)
}

/// Serves [`router`] on `listener` until `shutdown` completes, then shuts down gracefully:
/// stops accepting connections, lets in-flight `/mcp` requests (tool calls) finish for up to
/// `opts.shutdown_grace`, then cancels every MCP session and returns once the connections
/// have closed (waiting at most 5 s more).
pub async fn serve<S, F>(
    listener: TcpListener,
    factory: F,
    health: Arc<dyn Health>,
    opts: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError>
where
    S: rmcp::ServerHandler + Send + 'static,
    F: Fn() -> Result<S, std::io::Error> + Send + Sync + 'static,
{
    let sessions = CancellationToken::new();
    let (app, in_flight) = build(factory, health, &opts, sessions.clone())?;
    let local = listener.local_addr().map_err(HttpError::Serve)?;
    if opts.api_key.is_none() && !local.ip().is_loopback() {
        tracing::warn!(
            address = %local,
            "MCP HTTP server listens on a non-loopback address without an API key: anyone who can reach it can run programs"
        );
    }
    tracing::info!(address = %local, "MCP HTTP server listening");

    let stop_accepting = CancellationToken::new();
    // Without TCP_NODELAY, the last chunk of a streamed response can wait for the client's
    // delayed ACK (about 40 ms per request on Linux).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop_accepting.clone().cancelled_owned());
    // Spawned so that it keeps running (and drops the listener) while we drain below.
    let mut server = tokio::spawn(async move { server.await });

    tokio::select! {
        joined = &mut server => {
            // The server stopped on its own: an accept loop error.
            sessions.cancel();
            return flatten(joined);
        }
        () = shutdown => {}
    }

    tracing::info!("MCP HTTP server shutting down: no new connections");
    stop_accepting.cancel();
    let busy = in_flight.busy();
    if busy > 0 {
        tracing::info!(
            requests = busy,
            grace = ?opts.shutdown_grace,
            "waiting for in-flight requests"
        );
    }
    if tokio::time::timeout(opts.shutdown_grace, in_flight.drained())
        .await
        .is_err()
    {
        tracing::warn!(
            requests = in_flight.busy(),
            "shutdown grace elapsed; cancelling the remaining requests"
        );
    }
    sessions.cancel();
    match tokio::time::timeout(CLOSE_TIMEOUT, &mut server).await {
        Ok(joined) => flatten(joined),
        Err(_) => {
            tracing::warn!("connections still open after shutdown; leaving them");
            server.abort();
            Ok(())
        }
    }
}

fn flatten(joined: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<(), HttpError> {
    match joined {
        Ok(result) => result.map_err(HttpError::Serve),
        Err(e) => Err(HttpError::Serve(std::io::Error::other(e.to_string()))),
    }
}

fn build<S, F>(
    factory: F,
    health: Arc<dyn Health>,
    opts: &HttpOptions,
    shutdown: CancellationToken,
) -> Result<(Router, InFlight), HttpError>
where
    S: rmcp::ServerHandler + Send + 'static,
    F: Fn() -> Result<S, std::io::Error> + Send + Sync + 'static,
{
    opts.validate()?;
    if opts.allowed_hosts.is_empty() {
        tracing::warn!(
            "MCP HTTP server accepts any Host header (allowed_hosts is empty): no DNS-rebinding protection"
        );
    }

    let mut config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(opts.allowed_hosts.iter().cloned())
        .with_allowed_origins(opts.allowed_origins.iter().cloned())
        .with_max_request_body_bytes(opts.max_body_bytes)
        .with_cancellation_token(shutdown);
    if opts.allowed_origins.is_empty() {
        // rmcp skips Origin checks for an empty list; we refuse browsers instead.
        config = config.enforce_origin_validation();
    }
    let mcp = StreamableHttpService::new(factory, Arc::new(LocalSessionManager::default()), config);

    let in_flight = InFlight::new(opts.max_in_flight)?;
    let guard = Guard {
        key_digest: opts.api_key.as_deref().map(digest),
        limiter: (opts.rate_per_minute > 0)
            .then(|| Arc::new(RateLimiter::new(opts.rate_per_minute))),
        in_flight: in_flight.clone(),
        max_body_bytes: opts.max_body_bytes,
    };

    let mcp_routes =
        Router::new()
            .route_service("/mcp", mcp)
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(guard),
                guard_mcp,
            ));
    let health_routes = Router::new()
        .route("/health", axum::routing::get(health_handler))
        .with_state(health);
    Ok((health_routes.merge(mcp_routes), in_flight))
}

async fn health_handler(State(health): State<Arc<dyn Health>>) -> Response {
    let checked = tokio::time::timeout(HEALTH_TIMEOUT, health.health())
        .await
        .unwrap_or_else(|_| Err("health check timed out".to_owned()));
    let version = env!("CARGO_PKG_VERSION");
    match checked {
        Ok(database) => (
            StatusCode::OK,
            axum::Json(json!({"status": "ok", "version": version, "database": database})),
        )
            .into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "status": "degraded",
                "version": version,
                "database": {"error": error},
            })),
        )
            .into_response(),
    }
}

/// State of the `/mcp` guard middleware.
struct Guard {
    key_digest: Option<[u8; 32]>,
    limiter: Option<Arc<RateLimiter>>,
    in_flight: InFlight,
    max_body_bytes: usize,
}

async fn guard_mcp(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    if let Some(limiter) = &guard.limiter {
        let ip = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| {
                addr.ip()
            });
        if let Err(retry_after) = limiter.check(ip, Instant::now()) {
            tracing::debug!(%ip, "rate limited");
            return error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                &format!("too many requests from this client; retry after {retry_after} s"),
                Some(retry_after),
            );
        }
    }

    if let Some(expected) = &guard.key_digest
        && let Err(message) = check_bearer(request.headers(), expected)
    {
        let mut response = error_response(StatusCode::UNAUTHORIZED, "unauthorized", message, None);
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }

    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > guard.max_body_bytes as u64) {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &format!("request body exceeds {} bytes", guard.max_body_bytes),
            None,
        );
    }

    // A GET opens a long-lived event stream; counting it would let idle clients starve
    // the server, so only requests that do work hold a slot.
    if request.method() == Method::GET {
        return next.run(request).await;
    }
    let Some(permit) = guard.in_flight.try_acquire() else {
        return error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            "too many requests in flight; retry shortly",
            Some(SHED_RETRY_AFTER_SECS),
        );
    };
    let response = next.run(request).await;
    // Hold the slot until the response body (possibly an event stream) has been sent.
    response.map(|body| {
        Body::new(PermitBody {
            inner: body,
            _permit: permit,
        })
    })
}

/// Checks `Authorization: Bearer <token>` against the API key's digest, in constant time.
fn check_bearer(headers: &axum::http::HeaderMap, expected: &[u8; 32]) -> Result<(), &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err("missing bearer token: send `Authorization: Bearer <api key>`");
    };
    let value = value.as_bytes();
    let token = match value.split_first_chunk::<7>() {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest.trim_ascii(),
        _ => return Err("the Authorization header must use the Bearer scheme"),
    };
    if token.is_empty() {
        return Err("missing bearer token: send `Authorization: Bearer <api key>`");
    }
    // Comparing fixed-size digests keeps the comparison's time independent of the token.
    if bool::from(digest_bytes(token).ct_eq(expected)) {
        Ok(())
    } else {
        Err("invalid bearer token")
    }
}

fn digest(key: &str) -> [u8; 32] {
    digest_bytes(key.as_bytes())
}

fn digest_bytes(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn error_response(
    status: StatusCode,
    error: &str,
    message: &str,
    retry_after: Option<u64>,
) -> Response {
    let mut response = (
        status,
        axum::Json(json!({"error": error, "message": message})),
    )
        .into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// The in-flight limit: a semaphore of `max` slots. Shutdown drains it by taking every slot.
#[derive(Clone)]
struct InFlight {
    slots: Arc<Semaphore>,
    max: u32,
}

impl InFlight {
    fn new(max: usize) -> Result<Self, HttpError> {
        let max_u32 = u32::try_from(max).map_err(|_| HttpError::BadOption {
            option: "max_in_flight",
            reason: "is too large".to_owned(),
        })?;
        Ok(Self {
            slots: Arc::new(Semaphore::new(max)),
            max: max_u32,
        })
    }

    fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.slots).try_acquire_owned().ok()
    }

    fn busy(&self) -> usize {
        (self.max as usize).saturating_sub(self.slots.available_permits())
    }

    /// Completes once no request holds a slot (and keeps them all, so none starts).
    async fn drained(&self) {
        if let Ok(all) = Arc::clone(&self.slots).acquire_many_owned(self.max).await {
            all.forget();
        }
    }
}

/// A response body that releases its in-flight slot when dropped (sent or abandoned).
struct PermitBody {
    inner: Body,
    _permit: OwnedSemaphorePermit,
}

impl HttpBody for PermitBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A token bucket per client IP: each holds up to `capacity` tokens, refilled at
/// `capacity` per minute; a request takes one.
struct RateLimiter {
    capacity: f64,
    per_second: f64,
    state: Mutex<RateState>,
}

struct RateState {
    buckets: HashMap<IpAddr, Bucket>,
    prune_at: usize,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    fn new(per_minute: u32) -> Self {
        let capacity = f64::from(per_minute.max(1));
        Self {
            capacity,
            per_second: capacity / 60.0,
            state: Mutex::new(RateState {
                buckets: HashMap::new(),
                prune_at: RATE_PRUNE_THRESHOLD,
            }),
        }
    }

    /// Takes a token for `ip`, or returns the seconds (at least 1) until one is available.
    fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        // A poisoned lock only means another request panicked mid-update; the map is
        // still usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.buckets.len() >= state.prune_at {
            let (capacity, per_second) = (self.capacity, self.per_second);
            state
                .buckets
                .retain(|_, b| refilled(b, now, capacity, per_second) < capacity);
            state.prune_at = RATE_PRUNE_THRESHOLD.max(state.buckets.len().saturating_mul(2));
        }
        let bucket = state.buckets.entry(ip).or_insert(Bucket {
            tokens: self.capacity,
            updated: now,
        });
        let tokens = refilled(bucket, now, self.capacity, self.per_second);
        bucket.updated = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            let wait = ((1.0 - tokens) / self.per_second).ceil();
            // `wait` is finite and positive: per_second > 0 and tokens < 1.
            Err((wait as u64).max(1))
        }
    }
}

fn refilled(bucket: &Bucket, now: Instant, capacity: f64, per_second: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    (bucket.tokens + elapsed * per_second).min(capacity)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_capacity_then_refuses_with_retry_after() {
        let limiter = RateLimiter::new(3);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(ip, t0).is_ok());
        }
        assert_eq!(limiter.check(ip, t0), Err(20));
        // Another client has its own bucket.
        assert!(
            limiter
                .check(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), t0)
                .is_ok()
        );
        // A token is back after 20 s.
        assert!(limiter.check(ip, t0 + Duration::from_secs(20)).is_ok());
        assert!(limiter.check(ip, t0 + Duration::from_secs(20)).is_err());
    }

    #[test]
    fn bucket_prunes_idle_clients() {
        let limiter = RateLimiter::new(60);
        let t0 = Instant::now();
        for i in 0..RATE_PRUNE_THRESHOLD as u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(i));
            limiter.check(ip, t0).unwrap();
        }
        // One minute later every bucket is full again, so all but the new one are pruned.
        limiter
            .check(
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                t0 + Duration::from_secs(61),
            )
            .unwrap();
        assert_eq!(limiter.state.lock().unwrap().buckets.len(), 1);
    }

    #[test]
    fn bearer_check_distinguishes_missing_malformed_and_wrong() {
        let expected = digest("s3cret");
        let mut headers = axum::http::HeaderMap::new();
        assert!(
            check_bearer(&headers, &expected)
                .unwrap_err()
                .starts_with("missing")
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(
            check_bearer(&headers, &expected)
                .unwrap_err()
                .contains("Bearer scheme")
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(
            check_bearer(&headers, &expected)
                .unwrap_err()
                .starts_with("missing")
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cre"),
        );
        assert_eq!(
            check_bearer(&headers, &expected),
            Err("invalid bearer token")
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer s3cret"),
        );
        assert_eq!(check_bearer(&headers, &expected), Ok(()));
    }

    #[test]
    fn options_are_validated() {
        let ok = HttpOptions::default();
        assert!(ok.validate().is_ok());
        for bad in [
            HttpOptions {
                api_key: Some(String::new()),
                ..HttpOptions::default()
            },
            HttpOptions {
                allowed_origins: vec!["*".into()],
                ..HttpOptions::default()
            },
            HttpOptions {
                allowed_hosts: vec!["*".into()],
                ..HttpOptions::default()
            },
            HttpOptions {
                max_in_flight: 0,
                ..HttpOptions::default()
            },
            HttpOptions {
                max_body_bytes: 0,
                ..HttpOptions::default()
            },
        ] {
            assert!(matches!(bad.validate(), Err(HttpError::BadOption { .. })));
        }
    }

    #[test]
    fn debug_redacts_the_api_key() {
        let opts = HttpOptions {
            api_key: Some("s3cret".into()),
            ..HttpOptions::default()
        };
        let shown = format!("{opts:?}");
        assert!(!shown.contains("s3cret"));
        assert!(shown.contains("<redacted>"));
    }
}
