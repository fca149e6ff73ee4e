//! The operator protocol: request and response types shared by the daemon
//! and the CLI, and the daemon's HTTP+JSON server for them (plus
//! `/metrics`). Every route but `/metrics` needs the bearer token.
//!
//! Routes (all JSON):
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET  | /v1/status[?service=S] | | [`StatusResponse`] |
//! | POST | /v1/services/{S}/advance | [`TransitionRequest`] | [`TransitionResponse`] |
//! | POST | /v1/services/{S}/rollback | [`TransitionRequest`] | [`TransitionResponse`] |
//! | POST | /v1/services/{S}/endpoints/{E}/disable | [`EndpointRequest`] | [`OkResponse`] |
//! | POST | /v1/services/{S}/endpoints/{E}/enable | [`EndpointRequest`] | [`OkResponse`] |
//! | POST | /v1/services/{S}/pools/{P}/decommission | [`DecommissionRequest`] | [`OkResponse`] |
//! | POST | /v1/services/{S}/pools/{P}/recommission | [`ReasonRequest`] | [`OkResponse`] |
//! | GET  | /v1/services/{S}/history | | [`HistoryResponse`] |
//! | GET  | /v1/history | | [`HistoryResponse`] of every service |
//! | POST | /v1/reload | | [`ReloadResponse`] |
//! | GET  | /metrics | | Prometheus text |
//!
//! Errors come back as [`ErrorBody`] with a 4xx/5xx status.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, Request, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::answer::Role;
use crate::daemon::Shared;
use crate::health::Probe;
use crate::state::Event;

/// Longest `--reason` accepted: it is stored in every history event.
pub const MAX_REASON: usize = 1024;

/// Bytes of randomness in a generated control token.
const TOKEN_BYTES: usize = 32;

/// `advance` / `rollback` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    /// Target phase; default the next (advance) or previous (rollback).
    #[serde(default)]
    pub to: Option<String>,
    /// Skip the health and hold checks (advance only).
    #[serde(default)]
    pub force: bool,
    /// Report what would be served without changing anything.
    #[serde(default)]
    pub dry_run: bool,
    /// Operator's reason, recorded in history.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Result of a transition (or of a dry run).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransitionResponse {
    /// Service key.
    pub service: String,
    /// Phase before.
    pub from: String,
    /// Phase after (or that would be entered).
    pub to: String,
    /// False for a dry run.
    pub applied: bool,
    /// Weights of the target phase by pool.
    pub weights: BTreeMap<String, u32>,
    /// TTL answered in the target phase.
    pub ttl: u32,
    /// Things the operator should know (longer TTL, forced, ...).
    pub warnings: Vec<String>,
}

/// Body of endpoint enable/disable.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// Operator's reason.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Body of endpoint enable/disable.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointRequest {
    /// Disable even if that leaves a pool that answers now without a
    /// usable endpoint (ignored by enable).
    #[serde(default)]
    pub force: bool,
    /// Operator's reason.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Body of decommission.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecommissionRequest {
    /// Decommission even before the pool's drain deadline plus grace.
    #[serde(default)]
    pub force: bool,
    /// Operator's reason.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A plain acknowledgement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OkResponse {
    /// What was done, for humans.
    pub message: String,
}

/// Status of every (or one) service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    /// Unix milliseconds at which this was taken.
    pub now_ms: u64,
    /// SOA serial currently served.
    pub serial: u32,
    /// Services.
    pub services: Vec<ServiceStatus>,
}

/// Status of one service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Service key (FQDN).
    pub service: String,
    /// Name as written in the zone file.
    pub short: String,
    /// Staging name, if any.
    pub staging: Option<String>,
    /// Current phase.
    pub phase: String,
    /// All phases in order.
    pub phases: Vec<String>,
    /// Unix seconds when the current phase was entered (0: since start-up, never changed).
    pub since: u64,
    /// TTL answered now.
    pub ttl: u32,
    /// Unix ms when the current phase's `hold` ends (advancing earlier
    /// needs `--force`); `None` when the phase has no hold.
    pub hold_until_ms: Option<u64>,
    /// No pool has a usable endpoint for the main name (for some record
    /// family) and its answers fail open: as if every endpoint were usable.
    pub fail_open: bool,
    /// The same for the staging name.
    pub staging_fail_open: bool,
    /// No pool has a usable endpoint (for some record family) and the
    /// service answers SERVFAIL (`on_all_down = "servfail"`).
    pub servfail: bool,
    /// Pools, in configuration order.
    pub pools: Vec<PoolStatus>,
}

/// Status of one pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Pool name.
    pub pool: String,
    /// Weight in the current phase.
    pub weight: u32,
    /// Decommissioned by the operator.
    pub decommissioned: bool,
    /// What the pool does for the main name right now, when that is the
    /// same for every record family it has endpoints of; else `None` and
    /// see `roles`.
    pub role: Option<Role>,
    /// What the pool does for the main name right now, by record family
    /// ("A", "AAAA"; "*" for a service with a host-name pool, decided for
    /// every type at once). Families the pool has no endpoint of are absent.
    pub roles: BTreeMap<String, Role>,
    /// Main-name answers carrying this pool in the last minute.
    pub answers_last_minute: u64,
    /// Share of main-name answers in the last minute (0..1).
    pub share_last_minute: f64,
    /// Unix ms of the last main-name answer carrying this pool.
    pub last_answered_ms: Option<u64>,
    /// TTL of that answer.
    pub last_ttl: Option<u32>,
    /// For a pool the main name does not answer now: last answer + its
    /// TTL; no resolver that honours TTLs holds the pool after this.
    pub drained_at_ms: Option<u64>,
    /// `drained_at_ms` has passed.
    pub drained: bool,
    /// `drained_at_ms` plus the service's drain grace.
    pub safe_to_decommission_after_ms: Option<u64>,
    /// Endpoints.
    pub endpoints: Vec<EndpointStatus>,
}

/// Status of one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointStatus {
    /// Endpoint as written.
    pub endpoint: String,
    /// Health verdict (true until the first result, and when not checked).
    pub healthy: bool,
    /// Whether a health check is configured.
    pub checked: bool,
    /// Taken out by the operator.
    pub disabled: bool,
    /// Unix seconds of the last verdict change.
    pub since: u64,
    /// Last probe.
    pub last_check: Option<Probe>,
}

/// History of one service, or of every service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryResponse {
    /// Service key; absent when the history covers every service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Oldest first (newest last).
    pub events: Vec<Event>,
}

/// Result of a reload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadResponse {
    /// Zones now served.
    pub zones: usize,
    /// Services now served.
    pub services: usize,
    /// SOA serial now served.
    pub serial: u32,
}

/// An error from the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// An error with its HTTP status, as returned by daemon operations.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Message for the operator.
    pub message: String,
}

impl ApiError {
    /// 404.
    pub fn not_found(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: m.into(),
        }
    }
    /// 409: refused in the current state.
    pub fn conflict(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            message: m.into(),
        }
    }
    /// 400.
    pub fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: m.into(),
        }
    }
    /// 500.
    pub fn internal(m: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: m.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    token: Arc<str>,
}

/// Reads the control token, or creates it (mode 0600) if missing. The new
/// file is written beside it and renamed into place, so a crash while it is
/// created never leaves an empty token file that would stop the next start.
pub fn load_or_create_token(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {
            return Err(std::io::Error::other(
                "the file is empty (remove it to have a new token generated)",
            ));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    // A leftover from a crash is ours to replace.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(token)
}

/// Compares without an early exit, so timing does not leak the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same(given.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or wrong bearer token".into(),
        })
    }
}

/// Serves the control API on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    token: String,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let ctx = Ctx {
        shared,
        token: token.into(),
    };
    // Every API route checks the token before anything else, the body
    // included: a request without it gets 401 whatever it carries.
    let api = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/services/{service}/advance", post(advance))
        .route("/v1/services/{service}/rollback", post(rollback))
        .route(
            "/v1/services/{service}/endpoints/{endpoint}/{action}",
            post(endpoint),
        )
        .route(
            "/v1/services/{service}/pools/{pool}/decommission",
            post(decommission),
        )
        .route(
            "/v1/services/{service}/pools/{pool}/recommission",
            post(recommission),
        )
        .route("/v1/services/{service}/history", get(history))
        .route("/v1/history", get(history_all))
        .route("/v1/reload", post(reload))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_token));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .merge(api)
        .with_state(ctx);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Rejects a request without the right bearer token before its handler
/// (and its body extractor) runs.
async fn require_token(AxState(ctx): AxState<Ctx>, req: Request, next: Next) -> Response {
    match authorized(req.headers(), &ctx.token) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn metrics(AxState(ctx): AxState<Ctx>) -> Response {
    match crate::metrics::render(&ctx.shared) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("cannot encode metrics: {e}")).into_response(),
    }
}

#[derive(Deserialize)]
struct StatusQuery {
    service: Option<String>,
}

async fn status(
    AxState(ctx): AxState<Ctx>,
    Query(q): Query<StatusQuery>,
) -> ApiResult<StatusResponse> {
    ctx.shared.status(q.service.as_deref()).map(Json)
}

/// Runs a blocking daemon operation (state file fsync) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("operation failed: {e}")))?
        .map(Json)
}

async fn advance(
    AxState(ctx): AxState<Ctx>,
    UrlPath(service): UrlPath<String>,
    Json(req): Json<TransitionRequest>,
) -> ApiResult<TransitionResponse> {
    transition(ctx, service, req, crate::phase::Direction::Advance).await
}

async fn rollback(
    AxState(ctx): AxState<Ctx>,
    UrlPath(service): UrlPath<String>,
    Json(req): Json<TransitionRequest>,
) -> ApiResult<TransitionResponse> {
    transition(ctx, service, req, crate::phase::Direction::Rollback).await
}

async fn transition(
    ctx: Ctx,
    service: String,
    req: TransitionRequest,
    direction: crate::phase::Direction,
) -> ApiResult<TransitionResponse> {
    blocking(move || ctx.shared.transition(&service, direction, req)).await
}

async fn endpoint(
    AxState(ctx): AxState<Ctx>,
    UrlPath((service, endpoint, action)): UrlPath<(String, String, String)>,
    Json(req): Json<EndpointRequest>,
) -> ApiResult<OkResponse> {
    let enable = match action.as_str() {
        "enable" => true,
        "disable" => false,
        other => {
            return Err(ApiError::not_found(format!(
                "unknown endpoint action {other:?}"
            )));
        }
    };
    blocking(move || ctx.shared.set_endpoint(&service, &endpoint, enable, req)).await
}

async fn decommission(
    AxState(ctx): AxState<Ctx>,
    UrlPath((service, pool)): UrlPath<(String, String)>,
    Json(req): Json<DecommissionRequest>,
) -> ApiResult<OkResponse> {
    blocking(move || ctx.shared.decommission(&service, &pool, req)).await
}

async fn recommission(
    AxState(ctx): AxState<Ctx>,
    UrlPath((service, pool)): UrlPath<(String, String)>,
    Json(req): Json<ReasonRequest>,
) -> ApiResult<OkResponse> {
    blocking(move || ctx.shared.recommission(&service, &pool, req.reason)).await
}

async fn history(
    AxState(ctx): AxState<Ctx>,
    UrlPath(service): UrlPath<String>,
) -> ApiResult<HistoryResponse> {
    ctx.shared.history(Some(&service)).map(Json)
}

async fn history_all(AxState(ctx): AxState<Ctx>) -> ApiResult<HistoryResponse> {
    ctx.shared.history(None).map(Json)
}

async fn reload(AxState(ctx): AxState<Ctx>) -> ApiResult<ReloadResponse> {
    let shared = ctx.shared.clone();
    blocking(move || shared.reload().map_err(ApiError::bad_request)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/control.token");
        let t1 = load_or_create_token(&p).unwrap();
        assert_eq!(t1.len(), TOKEN_BYTES * 2);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create_token(&p).unwrap(), t1);
        assert!(!dir.path().join("sub/control.token.tmp").exists());
        // An empty file is an error, never silently replaced.
        std::fs::write(&p, "").unwrap();
        assert!(load_or_create_token(&p).is_err());
    }

    #[test]
    fn bearer_check() {
        let mut h = HeaderMap::new();
        assert!(authorized(&h, "abc").is_err());
        h.insert(header::AUTHORIZATION, "Bearer abd".parse().unwrap());
        assert!(authorized(&h, "abc").is_err());
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(authorized(&h, "abc").is_ok());
    }
}
