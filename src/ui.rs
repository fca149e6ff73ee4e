//! The status page on the control listener (`/ui`): login by the control
//! token into a session cookie, the page rendered on the server from the
//! same `status` the CLI prints, live updates over Server-Sent Events, and
//! the CLI's actions behind confirmed, CSRF-protected POST forms that call
//! the same [`Operator`] functions as the control API.
//!
//! Routes (none needs the bearer token; each checks `Host`):
//!
//! | method | path | does |
//! |---|---|---|
//! | GET  | /ui | the page, or the login form without a session |
//! | POST | /ui/login | token → session cookie, then back to /ui |
//! | POST | /ui/logout | ends the session |
//! | POST | /ui/action | confirm, then run an action; back to /ui with its outcome |
//! | GET  | /ui/events | the page's live part, once a second (SSE) |
//! | GET  | /ui/assets/ui.css, /ui/assets/ui.js | the two assets, from the binary |
//!
//! Everything runs on the control runtime; operator commands on the
//! daemon's blocking pool, as the control API runs them.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::api::{
    ApiError, AutoAction, EndpointRequest, OkResponse, ReasonRequest, TransitionRequest,
};
use crate::config::ui::UiMode;
use crate::operator::Operator;
use crate::phase::Direction;
use crate::stats::series::SplitSeries;
use crate::sync::lock;

mod chart;
mod page;
mod sampler;
mod session;

use session::{Session, Sessions};

/// The session cookie's name.
const COOKIE: &str = "dnsshift_ui";
/// The page's stylesheet, compiled in.
const CSS: &str = include_str!("ui/assets/ui.css");
/// The page's script (live updates, the pause/live toggle), compiled in.
const JS: &str = include_str!("ui/assets/ui.js");
/// The Content-Security-Policy of every `/ui` response: nothing inline,
/// nothing from elsewhere, never in a frame.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/// An event stream ends after this long (the browser reconnects at once),
/// well inside the control server's connection lifetime.
const STREAM_LIFETIME: Duration = Duration::from_secs(45);
/// Longest reason accepted from a form (the operator bounds it too).
const MAX_FIELD: usize = 4096;

/// What the daemon tells the page at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `ui` in dnsshift.toml.
    pub mode: UiMode,
    /// `Host` values the page answers to (lowercase, with port where a
    /// browser sends one).
    pub hosts: Vec<String>,
}

impl Settings {
    /// The settings for a control listener on `addr` with the configured
    /// extra names: the address itself, `localhost` on its port, and each
    /// `ui_hosts` name (as written, and on the control port).
    pub fn new(mode: UiMode, addr: std::net::SocketAddr, extra: &[String]) -> Settings {
        let port = addr.port();
        let mut hosts = vec![addr.to_string(), format!("localhost:{port}")];
        for h in extra {
            hosts.push(h.clone());
            hosts.push(format!("{h}:{port}"));
        }
        Settings { mode, hosts }
    }
}

/// The page's shared state.
pub struct Ui {
    op: Arc<Operator>,
    token: Arc<str>,
    settings: Settings,
    sessions: std::sync::Mutex<Sessions>,
    /// The 24-hour split series the sampler fills.
    series: SplitSeries,
    /// The live part of the page as last rendered, for every event stream.
    feed: tokio::sync::watch::Sender<Arc<str>>,
    /// The daemon's runtime, whose blocking pool runs operator commands.
    daemon: tokio::runtime::Handle,
    shutdown: CancellationToken,
}

/// The `/ui` routes, or none when the page is off. Starts the sampler on
/// the current (control) runtime.
pub fn router(
    op: Arc<Operator>,
    token: Arc<str>,
    settings: Settings,
    daemon: tokio::runtime::Handle,
    shutdown: CancellationToken,
) -> Option<Router> {
    if settings.mode == UiMode::Off {
        return None;
    }
    let ui = Arc::new(Ui {
        op,
        token,
        settings,
        sessions: std::sync::Mutex::new(Sessions::default()),
        series: SplitSeries::default(),
        feed: tokio::sync::watch::Sender::new(Arc::from("")),
        daemon,
        shutdown,
    });
    tokio::spawn(sampler::run(ui.clone()));
    Some(
        Router::new()
            .route("/ui", get(index))
            .route("/ui/", get(index))
            .route("/ui/login", post(login))
            .route("/ui/logout", post(logout))
            .route("/ui/action", post(action))
            .route("/ui/events", get(events))
            .route("/ui/assets/ui.css", get(css))
            .route("/ui/assets/ui.js", get(js))
            .route_layer(middleware::from_fn_with_state(ui.clone(), guard))
            .with_state(ui),
    )
}

/// Why a request is refused before its handler.
fn forbidden(why: &str) -> Response {
    (StatusCode::FORBIDDEN, format!("forbidden: {why}\n")).into_response()
}

/// Every `/ui` request: `Host` must be one of ours (DNS rebinding); a POST
/// must come from our own origin; every response gets the security headers.
async fn guard(AxState(ui): AxState<Arc<Ui>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    let mut response = match host {
        Some(h) if ui.settings.hosts.contains(&h) => {
            if req.method() == Method::POST && !same_origin(headers, &h) {
                forbidden("the request comes from another site")
            } else {
                next.run(req).await
            }
        }
        _ => forbidden("this page answers only to its configured host names"),
    };
    let h = response.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A POST from this page: `Origin`, when sent, is this host; so is
/// `Sec-Fetch-Site`. A client that sends neither (curl) is let through to
/// the CSRF check.
fn same_origin(headers: &HeaderMap, host: &str) -> bool {
    let origin_ok = match headers.get(header::ORIGIN).map(|o| o.to_str()) {
        None => true,
        Some(Ok(o)) => o.eq_ignore_ascii_case(&format!("http://{host}")),
        Some(Err(_)) => false,
    };
    let site_ok = match headers.get("sec-fetch-site").map(|s| s.to_str()) {
        None => true,
        Some(Ok(s)) => s == "same-origin" || s == "none",
        Some(Err(_)) => false,
    };
    origin_ok && site_ok
}

impl Ui {
    /// The live session the request's cookie names, if any.
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, COOKIE)?;
        lock(&self.sessions).get(&id, std::time::Instant::now())
    }

    /// The session and the form's CSRF token checked; why not, for a 403.
    fn checked(&self, headers: &HeaderMap, csrf: &str) -> Result<Session, &'static str> {
        let Some(s) = self.session(headers) else {
            return Err("not logged in (or the session expired)");
        };
        if !crate::control::same_secret(csrf.as_bytes(), s.csrf.as_bytes()) {
            return Err("the form's CSRF token is missing or wrong");
        }
        Ok(s)
    }
}

/// The value of cookie `name` in the request.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn html(status: StatusCode, markup: maud::Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        JS,
    )
        .into_response()
}

/// GET /ui: the page, or the login form.
async fn index(AxState(ui): AxState<Arc<Ui>>, headers: HeaderMap) -> Response {
    let Some(session) = ui.session(&headers) else {
        return html(StatusCode::OK, page::login(None));
    };
    let flash = lock(&ui.sessions).take_flash(&session.id);
    match page::View::gather(&ui, Some(&session.csrf)) {
        Ok(view) => html(StatusCode::OK, page::full(&view, flash.as_ref())),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    /// Who is acting, for history (like the CLI's login name).
    #[serde(default)]
    name: String,
}

/// POST /ui/login: the token for a session cookie.
async fn login(AxState(ui): AxState<Arc<Ui>>, Form(f): Form<LoginForm>) -> Response {
    if !crate::control::same_secret(f.token.trim().as_bytes(), ui.token.as_bytes()) {
        return html(
            StatusCode::UNAUTHORIZED,
            page::login(Some("wrong token: use the one in the control token file")),
        );
    }
    let actor = Some(f.name.trim())
        .filter(|n| !n.is_empty())
        .unwrap_or("ui")
        .chars()
        .take(64)
        .collect::<String>();
    let s = match lock(&ui.sessions).create(actor, std::time::Instant::now()) {
        Ok(s) => s,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    };
    let cookie = format!(
        "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
        s.id,
        session::LIFETIME.as_secs()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui")).into_response()
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// POST /ui/logout.
async fn logout(
    AxState(ui): AxState<Arc<Ui>>,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Response {
    let s = match ui.checked(&headers, &f.csrf) {
        Ok(s) => s,
        Err(why) => return forbidden(why),
    };
    lock(&ui.sessions).remove(&s.id);
    let clear = format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, clear)], Redirect::to("/ui")).into_response()
}

/// An action form, as posted (first without `confirm`, then with it).
#[derive(Deserialize, Debug, Clone, Default)]
pub(crate) struct ActionForm {
    #[serde(default)]
    pub csrf: String,
    /// advance, rollback, disable, enable, pause, resume.
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub service: String,
    /// The endpoint ("pool/endpoint" or the endpoint) for disable/enable.
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub reason: String,
    /// "on" when ticked (advance's and disable's `--force`).
    #[serde(default)]
    pub force: String,
    /// "yes" once confirmed.
    #[serde(default)]
    pub confirm: String,
}

/// What an action came to, shown once on the page after the redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Flash {
    pub ok: bool,
    pub text: String,
}

/// POST /ui/action: the confirmation page, or (confirmed) the action, then
/// back to the page with its outcome.
async fn action(
    AxState(ui): AxState<Arc<Ui>>,
    headers: HeaderMap,
    Form(f): Form<ActionForm>,
) -> Response {
    if ui.settings.mode != UiMode::On {
        return forbidden("the page is read-only (ui = \"read-only\")");
    }
    let session = match ui.checked(&headers, &f.csrf) {
        Ok(s) => s,
        Err(why) => return forbidden(why),
    };
    if f.reason.len() > MAX_FIELD || f.endpoint.len() > MAX_FIELD || f.service.len() > MAX_FIELD {
        return (StatusCode::BAD_REQUEST, "a form field is too long").into_response();
    }
    if !matches!(
        f.action.as_str(),
        "advance" | "rollback" | "disable" | "enable" | "pause" | "resume"
    ) {
        return (
            StatusCode::BAD_REQUEST,
            format!("unknown action {:?}", f.action),
        )
            .into_response();
    }
    if f.confirm != "yes" {
        return html(StatusCode::OK, page::confirm(&f, &session.csrf));
    }
    let flash = run_action(&ui, f, session.actor.clone()).await;
    lock(&ui.sessions).set_flash(&session.id, flash);
    Redirect::to("/ui").into_response()
}

/// Runs one confirmed action through the Operator, on the daemon's
/// blocking pool, as the control API does; the outcome in the CLI's words.
async fn run_action(ui: &Ui, f: ActionForm, actor: String) -> Flash {
    let op = ui.op.clone();
    let reason = Some(f.reason.trim().to_string()).filter(|r| !r.is_empty());
    let force = f.force == "on";
    let work = move || -> Result<String, String> {
        let msg = |e: &dyn ApiError| e.body().error;
        match f.action.as_str() {
            "advance" | "rollback" => {
                let direction = if f.action == "advance" {
                    Direction::Advance
                } else {
                    Direction::Rollback
                };
                let req = TransitionRequest {
                    to: None,
                    force: force && direction == Direction::Advance,
                    dry_run: false,
                    reason,
                    actor: Some(actor),
                };
                op.transition(&f.service, direction, req)
                    .map(|r| {
                        let mut text = format!("{}: {} → {}", f.service, r.from, r.to);
                        for w in &r.warnings {
                            text.push_str(&format!("; warning: {w}"));
                        }
                        text
                    })
                    .map_err(|e| msg(&e))
            }
            "disable" | "enable" => {
                let enable = f.action == "enable";
                let req = EndpointRequest {
                    force: force && !enable,
                    reason,
                    actor: Some(actor),
                };
                op.set_endpoint(&f.service, &f.endpoint, enable, req)
                    .map(|r| said(&r))
                    .map_err(|e| msg(&e))
            }
            "pause" | "resume" => {
                let verb = if f.action == "pause" {
                    AutoAction::Pause
                } else {
                    AutoAction::Resume
                };
                let req = ReasonRequest {
                    reason,
                    actor: Some(actor),
                };
                op.auto(&f.service, verb, req)
                    .map(|r| said(&r))
                    .map_err(|e| msg(&e))
            }
            other => Err(format!("unknown action {other:?}")),
        }
    };
    match ui.daemon.spawn_blocking(work).await {
        Ok(Ok(text)) => Flash { ok: true, text },
        Ok(Err(text)) => Flash { ok: false, text },
        Err(e) => Flash {
            ok: false,
            text: format!("the action failed: {e}"),
        },
    }
}

/// An acknowledgement as the CLI prints it: its message, then its warnings.
fn said(ok: &OkResponse) -> String {
    let mut text = ok.message.clone();
    for w in &ok.warnings {
        text.push_str(&format!("; warning: {w}"));
    }
    text
}

/// GET /ui/events: the live part of the page as it changes (at most once a
/// second), until [`STREAM_LIFETIME`] or shutdown; the browser reconnects.
async fn events(AxState(ui): AxState<Arc<Ui>>, headers: HeaderMap) -> Response {
    if ui.session(&headers).is_none() {
        return (StatusCode::UNAUTHORIZED, "not logged in\n").into_response();
    }
    let mut rx = ui.feed.subscribe();
    rx.mark_changed();
    let shutdown = ui.shutdown.clone();
    let end = tokio::time::Instant::now() + STREAM_LIFETIME;
    let stream = futures_util::stream::unfold(Some(rx), move |rx| {
        let shutdown = shutdown.clone();
        async move {
            let mut rx = rx?;
            tokio::select! {
                changed = rx.changed() => {
                    changed.ok()?;
                    let frame = sse_frame(&rx.borrow_and_update());
                    Some((Ok::<_, std::convert::Infallible>(frame), Some(rx)))
                }
                _ = tokio::time::sleep_until(end) => None,
                _ = shutdown.cancelled() => None,
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// One SSE message carrying `html`: a `data:` line per line of it.
fn sse_frame(html: &str) -> String {
    let mut out = String::with_capacity(html.len() + 64);
    out.push_str("retry: 1000\nevent: live\n");
    for line in html.lines() {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_and_fetch_site_must_be_ours_when_sent() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h, "127.0.0.1:5380"), "curl sends neither");
        h.insert(header::ORIGIN, "http://127.0.0.1:5380".parse().unwrap());
        assert!(same_origin(&h, "127.0.0.1:5380"));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h, "127.0.0.1:5380"));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&h, "127.0.0.1:5380"));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; dnsshift_ui=abc; b=2".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn an_sse_frame_has_a_data_line_per_line() {
        assert_eq!(
            sse_frame("<p>\n</p>"),
            "retry: 1000\nevent: live\ndata: <p>\ndata: </p>\n\n"
        );
    }

    #[test]
    fn the_hosts_are_the_address_localhost_and_the_extra_names() {
        let s = Settings::new(
            UiMode::On,
            "127.0.0.1:5380".parse().unwrap(),
            &["ns1.example".into()],
        );
        assert_eq!(
            s.hosts,
            [
                "127.0.0.1:5380",
                "localhost:5380",
                "ns1.example",
                "ns1.example:5380"
            ]
        );
    }
}
