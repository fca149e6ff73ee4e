//! The daemon's HTTP+JSON server for the operator protocol ([`crate::api`])
//! and `/metrics`: routes find the command and call the [`Operator`]; a
//! typed error becomes an HTTP status in one place (`status_of`). Every
//! route but `/metrics` needs the bearer token.
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
//! | POST | /v1/services/{S}/auto/{start,pause,resume} | [`ReasonRequest`] | [`OkResponse`] |
//! | GET  | /v1/services/{S}/analysis | | [`AnalysisResponse`] (a dry run, queries now) |
//! | GET  | /v1/services/{S}/history | | [`HistoryResponse`] |
//! | GET  | /v1/history | | [`HistoryResponse`] of every service |
//! | POST | /v1/reload | | [`ReloadResponse`] |
//! | POST | /v1/reload/dry-run | | [`ReloadResponse`]: what would change, nothing applied |
//! | GET  | /v1/dnssec | | [`DnssecStatusResponse`](crate::api::DnssecStatusResponse) |
//! | POST | /v1/cookies/rotate | | [`CookieStatus`](crate::api::CookieStatus): a new DNS cookie secret now |
//! | GET  | /metrics | | Prometheus text |
//! | GET, POST | /ui... | form | the status page ([`crate::ui`]; session cookie, not the token) |
//!
//! Errors come back as [`ErrorBody`] with a 4xx/5xx status.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, Query, Request, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::api::{
    AnalysisResponse, ApiError, AutoAction, AutoError, CheckStatus, DecommissionRequest,
    EndpointRequest, ErrorBody, Fault, HistoryQuery, HistoryResponse, OkResponse, ReasonRequest,
    ReloadResponse, StatusResponse, TransitionRequest, TransitionResponse,
};
use crate::config::ControlLimits;
use crate::dns::fast::Counters;
use crate::operator::Operator;
use crate::sync::lock;

mod token;
pub use token::load_or_create_token;
use token::same;

/// Errors the HTTP layer itself answers with.
#[derive(Debug, thiserror::Error)]
enum ControlError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("cannot read the request body (at most {MAX_BODY} bytes): {0}")]
    TooLarge(String),
    #[error("the request body did not arrive within {0:?}")]
    Slow(Duration),
    #[error("unknown endpoint action {0:?}")]
    UnknownAction(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError for ControlError {
    fn fault(&self) -> Fault {
        match self {
            ControlError::Unauthorized => Fault::Unauthorized,
            ControlError::TooLarge(_) => Fault::TooLarge,
            ControlError::Slow(_) => Fault::Timeout,
            ControlError::UnknownAction(_) => Fault::NotFound,
            ControlError::Internal(_) => Fault::Internal,
        }
    }
}

/// The HTTP status of an error: the one place faults meet HTTP.
fn status_of(fault: Option<Fault>) -> StatusCode {
    match fault {
        Some(Fault::NotFound) => StatusCode::NOT_FOUND,
        Some(Fault::Usage) => StatusCode::BAD_REQUEST,
        Some(Fault::Refused) => StatusCode::CONFLICT,
        Some(Fault::Unauthorized) => StatusCode::UNAUTHORIZED,
        Some(Fault::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
        Some(Fault::Timeout) => StatusCode::REQUEST_TIMEOUT,
        Some(Fault::Internal) | None => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error answer: any command's typed error, as it travels.
#[derive(Debug)]
struct Rejection(ErrorBody);

impl<E: ApiError> From<E> for Rejection {
    fn from(e: E) -> Rejection {
        Rejection(e.body())
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        (status_of(self.0.fault), Json(self.0)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, Rejection>;

#[derive(Clone)]
struct Ctx {
    op: Arc<Operator>,
    /// The data path's counters, for `/metrics`.
    datapath: Arc<Counters>,
    token: Arc<str>,
    /// The last `/metrics` rendering and when it was made.
    metrics: Arc<tokio::sync::Mutex<Option<(Instant, axum::body::Bytes)>>>,
    limits: ControlLimits,
    /// The daemon's runtime, whose blocking pool runs operator commands.
    daemon: tokio::runtime::Handle,
}

/// Compares two secrets (the token, a CSRF token) in constant time.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    same(a, b)
}

fn authorized(headers: &HeaderMap, token: &str) -> Result<(), ControlError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same(given.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ControlError::Unauthorized)
    }
}

/// Largest request body accepted; every command's body is a few hundred
/// bytes (a reason is at most [`MAX_REASON`]).
const MAX_BODY: usize = 64 * 1024;
/// A connection is closed after this long whatever it does, so that a
/// client that stops reading a response cannot hold a slot for ever.
const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// A rendered `/metrics` page is served again for this long: scrapers
/// share one rendering, and rendering runs at most once per period.
const METRICS_CACHE: Duration = Duration::from_secs(1);
/// Pause after an accept error such as EMFILE before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Runs [`serve`] on a runtime of its own, on a thread of its own, so that
/// control traffic (a storm of scrapes included) never occupies the
/// workers that answer DNS. Operator commands still run on the daemon's
/// blocking pool (the runtime this is called from). The receiver reports
/// when the server has stopped.
pub fn spawn(
    listener: tokio::net::TcpListener,
    op: Arc<Operator>,
    datapath: Arc<Counters>,
    token: String,
    limits: ControlLimits,
    ui: crate::ui::Settings,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>> {
    let daemon = tokio::runtime::Handle::current();
    let listener = listener.into_std()?;
    let runtime = crate::background::runtime("control")?;
    let (done, stopped) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            // Control work, `/metrics` rendering above all, waits for DNS.
            crate::background::lower_priority();
            let result = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                serve(listener, op, datapath, token, limits, ui, daemon, shutdown).await
            });
            let _ = done.send(result);
        })?;
    Ok(stopped)
}

/// Serves the control API on `listener` until `shutdown`; daemon
/// operations run on `daemon`'s blocking pool.
///
/// Every connection is bounded: its headers (and, on a kept-alive
/// connection, the next request's) must arrive within
/// `limits.header_timeout`, a body within `limits.body_timeout`, and it is
/// closed after [`MAX_CONNECTION_LIFETIME`] in any case. At most
/// `limits.max_connections` are open; a new connection beyond that closes
/// the oldest idle one (as nginx reuses keep-alive connections), so idle
/// or slow clients cannot lock out the operator.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: tokio::net::TcpListener,
    op: Arc<Operator>,
    datapath: Arc<Counters>,
    token: String,
    limits: ControlLimits,
    ui: crate::ui::Settings,
    daemon: tokio::runtime::Handle,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let ctx = Ctx {
        op,
        datapath,
        token: token.into(),
        metrics: Arc::default(),
        limits,
        daemon,
    };
    let mut app = router(ctx.clone());
    if let Some(page) = status_page(&ctx, ui, shutdown.clone()) {
        app = app.merge(page);
    }
    let open = Arc::new(Mutex::new(Open::default()));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "control: cannot accept a connection");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Some(conn) = lock(&open).admit(limits.max_connections) else {
            debug!(%peer, "control: every connection is busy; refusing a new one");
            continue;
        };
        tasks.spawn(connection(
            stream,
            app.clone(),
            limits,
            conn,
            open.clone(),
            shutdown.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The routes, with the token and body bounds applied.
fn router(ctx: Ctx) -> Router {
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
        .route("/v1/services/{service}/auto/{action}", post(auto))
        .route("/v1/services/{service}/analysis", get(analysis))
        .route("/v1/services/{service}/history", get(history))
        .route("/v1/history", get(history_all))
        .route("/v1/reload", post(reload))
        .route("/v1/reload/dry-run", post(reload_dry_run))
        .route("/v1/dnssec", get(dnssec_status))
        .route("/v1/cookies/rotate", post(cookies_rotate))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), bounded_body))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_token));
    // /metrics never reads a body: hyper closes a connection whose request
    // body was left unread.
    Router::new()
        .route("/metrics", get(metrics))
        .merge(api)
        .with_state(ctx)
}

/// The status page's routes ([`crate::ui`]), under the same body bounds
/// as the API; `None` when `ui = "off"`.
fn status_page(ctx: &Ctx, ui: crate::ui::Settings, shutdown: CancellationToken) -> Option<Router> {
    let page = crate::ui::router(
        ctx.op.clone(),
        ctx.token.clone(),
        ui,
        ctx.daemon.clone(),
        shutdown,
    )?;
    Some(page.route_layer(middleware::from_fn_with_state(ctx.clone(), bounded_body)))
}

/// One open control connection, as the accept loop sees it.
struct Slot {
    /// Requests being handled on it now; 0 means idle (between requests or
    /// still sending headers).
    busy: Arc<AtomicUsize>,
    /// Closes it at once.
    evict: CancellationToken,
}

/// The open control connections, oldest first.
#[derive(Default)]
struct Open {
    next: u64,
    slots: BTreeMap<u64, Slot>,
}

/// What a connection task needs to know about its own slot.
struct Admitted {
    id: u64,
    busy: Arc<AtomicUsize>,
    evict: CancellationToken,
}

impl Open {
    /// Takes a slot for a new connection, closing the oldest idle one if
    /// all are taken; None if every connection is busy.
    fn admit(&mut self, max: usize) -> Option<Admitted> {
        if self.slots.len() >= max {
            let idle = self
                .slots
                .iter()
                .find(|(_, s)| s.busy.load(Ordering::Acquire) == 0)
                .map(|(id, _)| *id)?;
            if let Some(s) = self.slots.remove(&idle) {
                s.evict.cancel();
            }
        }
        let id = self.next;
        self.next += 1;
        let slot = Slot {
            busy: Arc::default(),
            evict: CancellationToken::new(),
        };
        let admitted = Admitted {
            id,
            busy: slot.busy.clone(),
            evict: slot.evict.clone(),
        };
        self.slots.insert(id, slot);
        Some(admitted)
    }
}

/// Counts a request as in flight on its connection while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(busy: &Arc<AtomicUsize>) -> InFlight {
        busy.fetch_add(1, Ordering::AcqRel);
        InFlight(busy.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one connection within its bounds, then frees its slot.
async fn connection(
    stream: tokio::net::TcpStream,
    app: Router,
    limits: ControlLimits,
    me: Admitted,
    open: Arc<Mutex<Open>>,
    shutdown: CancellationToken,
) {
    let tower = hyper_util::service::TowerToHyperService::new(app);
    let busy = me.busy.clone();
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let in_flight = InFlight::new(&busy);
        let fut = hyper::service::Service::call(&tower, req.map(axum::body::Body::new));
        async move {
            let response = fut.await;
            drop(in_flight);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
    let mut conn = std::pin::pin!(conn);
    let deadline = tokio::time::sleep(MAX_CONNECTION_LIFETIME);
    let mut deadline = std::pin::pin!(deadline);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(error = %e, "control connection closed");
            }
        }
        _ = me.evict.cancelled() => debug!("control: idle connection closed to make room"),
        _ = deadline.as_mut() => debug!("control: connection closed at its lifetime limit"),
        _ = shutdown.cancelled() => {
            // Finish the request in flight, if any, within the lifetime.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = deadline.as_mut() => {}
            }
        }
    }
    lock(&open).slots.remove(&me.id);
}

/// Reads the whole request body within the body timeout and size bound,
/// so that a client trickling a body cannot hold a handler (or a
/// connection) for long.
async fn bounded_body(AxState(ctx): AxState<Ctx>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, MAX_BODY);
    let bytes = match tokio::time::timeout(ctx.limits.body_timeout, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return closing(ControlError::TooLarge(e.to_string()).into());
        }
        Err(_) => {
            return closing(ControlError::Slow(ctx.limits.body_timeout).into());
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// An error response that also closes the connection (its body was not
/// read to the end).
fn closing(e: Rejection) -> Response {
    let mut r = e.into_response();
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    r
}

/// Rejects a request without the right bearer token before its handler
/// (and its body extractor) runs.
async fn require_token(AxState(ctx): AxState<Ctx>, req: Request, next: Next) -> Response {
    match authorized(req.headers(), &ctx.token) {
        Ok(()) => next.run(req).await,
        Err(e) => Rejection::from(e).into_response(),
    }
}

/// Serves `/metrics` from a rendering at most [`METRICS_CACHE`] old. The
/// rendering runs on the blocking pool, never on the workers that answer
/// DNS, and one at a time: concurrent scrapers wait for it and share it.
async fn metrics(AxState(ctx): AxState<Ctx>) -> Response {
    let mut cache = ctx.metrics.lock().await;
    let body = match &*cache {
        Some((at, body)) if at.elapsed() < METRICS_CACHE => body.clone(),
        _ => {
            let (op, datapath) = (ctx.op.clone(), ctx.datapath.clone());
            let render = move || {
                crate::metrics::render(&crate::metrics::Sources {
                    zones: &op.zones(),
                    state: &op.state(),
                    health: &op.health,
                    stats: &op.stats,
                    serial: op.plan.load().serial,
                    datapath: &datapath,
                    etcd_reachable: op.etcd_status().map(|e| e.reachable),
                    epoch: op.etcd_status().map(|_| op.applied_epoch()),
                    checks: crate::analysis::runner::check_metrics(&op.board),
                })
            };
            match tokio::task::spawn_blocking(render).await {
                Ok(Ok(text)) => {
                    let body = axum::body::Bytes::from(text);
                    *cache = Some((Instant::now(), body.clone()));
                    body
                }
                Ok(Err(e)) => {
                    return Rejection::from(ControlError::Internal(format!(
                        "cannot encode metrics: {e}"
                    )))
                    .into_response();
                }
                Err(e) => {
                    return Rejection::from(ControlError::Internal(format!(
                        "metrics rendering failed: {e}"
                    )))
                    .into_response();
                }
            }
        }
    };
    drop(cache);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[derive(Deserialize)]
struct StatusQuery {
    service: Option<String>,
}

async fn status(
    AxState(ctx): AxState<Ctx>,
    Query(q): Query<StatusQuery>,
) -> ApiResult<StatusResponse> {
    Ok(Json(ctx.op.status(q.service.as_deref())?))
}

/// Runs a blocking daemon operation (state file fsync) on the daemon's
/// blocking pool.
async fn blocking<T: Send + 'static, E: ApiError + Send + 'static>(
    ctx: &Ctx,
    f: impl FnOnce(&Operator) -> Result<T, E> + Send + 'static,
) -> ApiResult<T> {
    let op = ctx.op.clone();
    let result = ctx
        .daemon
        .spawn_blocking(move || f(&op))
        .await
        .map_err(|e| ControlError::Internal(format!("operation failed: {e}")))?;
    Ok(Json(result?))
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
    blocking(&ctx, move |op| op.transition(&service, direction, req)).await
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
            return Err(ControlError::UnknownAction(other.to_string()).into());
        }
    };
    blocking(&ctx, move |op| {
        op.set_endpoint(&service, &endpoint, enable, req)
    })
    .await
}

async fn decommission(
    AxState(ctx): AxState<Ctx>,
    UrlPath((service, pool)): UrlPath<(String, String)>,
    Json(req): Json<DecommissionRequest>,
) -> ApiResult<OkResponse> {
    blocking(&ctx, move |op| op.decommission(&service, &pool, req)).await
}

async fn recommission(
    AxState(ctx): AxState<Ctx>,
    UrlPath((service, pool)): UrlPath<(String, String)>,
    Json(req): Json<ReasonRequest>,
) -> ApiResult<OkResponse> {
    blocking(&ctx, move |op| op.recommission(&service, &pool, req)).await
}

async fn auto(
    AxState(ctx): AxState<Ctx>,
    UrlPath((service, action)): UrlPath<(String, String)>,
    Json(req): Json<ReasonRequest>,
) -> ApiResult<OkResponse> {
    let action = match action.as_str() {
        "start" => AutoAction::Start,
        "pause" => AutoAction::Pause,
        "resume" => AutoAction::Resume,
        other => return Err(ControlError::UnknownAction(other.to_string()).into()),
    };
    blocking(&ctx, move |op| op.auto(&service, action, req)).await
}

/// `analysis SERVICE`: every check asked now, against the real provider.
async fn analysis(
    AxState(ctx): AxState<Ctx>,
    UrlPath(service): UrlPath<String>,
) -> ApiResult<AnalysisResponse> {
    use crate::analysis::{machine, runner};
    let (svc, phase) = ctx.op.analysis_target(&service).map_err(Rejection::from)?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| ControlError::Internal(format!("cannot build the HTTP client: {e}")))?;
    let outcomes = runner::evaluate(&http, &svc, phase, std::time::SystemTime::now()).await;
    let Some(a) = &svc.analysis else {
        return Err(AutoError::NoAnalysis { service: svc.key() }.into());
    };
    Ok(Json(AnalysisResponse {
        service: svc.key(),
        pool: svc.pools[a.pool].name.clone(),
        phase: svc.phases[phase].name.clone(),
        provider: a.url.clone(),
        verdict: machine::overall(&outcomes).as_str().into(),
        checks: outcomes.iter().map(CheckStatus::from).collect(),
    }))
}

async fn history(
    AxState(ctx): AxState<Ctx>,
    UrlPath(service): UrlPath<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<HistoryResponse> {
    blocking(&ctx, move |op| op.history(Some(&service), q.all)).await
}

async fn history_all(
    AxState(ctx): AxState<Ctx>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<HistoryResponse> {
    blocking(&ctx, move |op| op.history(None, q.all)).await
}

async fn reload(AxState(ctx): AxState<Ctx>) -> ApiResult<ReloadResponse> {
    blocking(&ctx, Operator::reload).await
}

async fn reload_dry_run(AxState(ctx): AxState<Ctx>) -> ApiResult<ReloadResponse> {
    blocking(&ctx, Operator::reload_dry_run).await
}

async fn cookies_rotate(AxState(ctx): AxState<Ctx>) -> ApiResult<crate::api::CookieStatus> {
    blocking(&ctx, Operator::rotate_cookies).await
}

async fn dnssec_status(AxState(ctx): AxState<Ctx>) -> ApiResult<crate::api::DnssecStatusResponse> {
    Ok(Json(ctx.op.dnssec_status()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
