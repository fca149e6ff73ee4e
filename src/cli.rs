//! The command line: subcommands, the runtime for `serve`, and the
//! control-client side of operator commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::answer::Role;
use crate::api::{
    ErrorBody, Fault, HistoryResponse, OkResponse, ReloadResponse, StatusResponse,
    TransitionRequest, TransitionResponse,
};
use crate::config::source::ConfigErrors;
use crate::config::{Config, LogFormat};
use crate::zone;

mod args;
pub use args::{Args, Command, EndpointAction, ServeArgs, TransitionArgs};

/// Longest a `status --watch` runs: a forgotten terminal stops polling.
const WATCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Clears the terminal and moves the cursor home (ANSI).
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// Runs a parsed command line; returns the process exit code.
pub fn main(args: Args) -> ExitCode {
    let result = match args.command {
        Command::Serve(s) => serve(args.config.as_deref(), s),
        Command::Check { path } => check(args.config.as_deref(), path.as_deref()),
        command => Client::new(args.config.as_deref(), args.control, args.token_file)
            .and_then(|c| c.run(command)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if let Some(msg) = f.message() {
                eprintln!("dnsshift: {msg}");
            }
            ExitCode::from(f.code())
        }
    }
}

/// Why a command failed; each kind has its own exit code ([`EXIT_CODES_HELP`]).
#[derive(Debug)]
pub enum Failure {
    /// Exit 1: the daemon refused the command (hold, health, drain,
    /// conflict) or failed to carry it out; also a server that stopped on
    /// an error after starting.
    Refused(String),
    /// Exit 2: a usage error (unknown service, phase, endpoint) or an
    /// invalid config or zone. An empty message: already reported.
    Usage(String),
    /// Exit 3: the daemon cannot be reached, or it rejected the token.
    Unreachable(String),
}

impl Failure {
    /// The process exit code.
    pub fn code(&self) -> u8 {
        match self {
            Failure::Refused(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Unreachable(_) => 3,
        }
    }

    fn message(&self) -> Option<&str> {
        let (Failure::Refused(m) | Failure::Usage(m) | Failure::Unreachable(m)) = self;
        Some(m.as_str()).filter(|m| !m.is_empty())
    }
}

fn serve(config: Option<&Path>, args: ServeArgs) -> Result<(), Failure> {
    let mut config = Config::discover(config).map_err(|e| Failure::Usage(e.to_string()))?;
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    if let Some(z) = args.zones {
        config.zones_dir = z;
    }
    if let Some(f) = args.log_format {
        config.log_format = f;
    }
    init_tracing(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Refused(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(signal_shutdown(shutdown.clone()));
        crate::daemon::run(config, shutdown).await.map_err(|e| {
            tracing::error!(error = %e, "cannot start");
            match e {
                crate::daemon::StartError::Config(_) => Failure::Usage(e.to_string()),
                _ => Failure::Refused(e.to_string()),
            }
        })
    })
}

async fn signal_shutdown(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
    }
    token.cancel();
}

fn init_tracing(config: &Config) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter(&config.log_level)));
    // Colour only for a person at a terminal: a redirected log or journald
    // gets plain text, without escape sequences.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The configured level for our logs; hickory's own per-request lines stay
/// at warn so that queries are not logged at info. hickory's warning per
/// packet with malformed EDNS options is off: a spoofed source could flood
/// the log with it; `dns` logs those at most once per interval instead.
fn default_filter(level: &str) -> String {
    format!(
        "{level},hickory_server=warn,hickory_proto=warn,hickory_net=warn,hickory_proto::rr::rdata::opt=error"
    )
}

fn check(config: Option<&Path>, path: Option<&Path>) -> Result<(), Failure> {
    let config = Config::discover(config).map_err(|e| Failure::Usage(e.to_string()))?;
    let path = path.unwrap_or(&config.zones_dir);
    let zones = if path.is_dir() {
        zone::load_dir(path)
    } else {
        zone::load_file(path).map(|z| vec![z])
    };
    let zones = match zones {
        Ok(z) => z,
        Err(ConfigErrors(errs)) => {
            for e in &errs {
                eprintln!("{e}");
            }
            return Err(Failure::Usage(format!("{} error(s)", errs.len())));
        }
    };
    // Persisted state must still fit the zones (phases, pools, endpoints).
    let store = crate::state::FileStore::new(&config.state_dir);
    match crate::state::StateStore::load(&store) {
        Ok(loaded) => {
            let v = loaded
                .state
                .validate(&zones, &crate::state::StateStore::origin(&store));
            for w in &v.warnings {
                eprintln!("warning: {w}");
            }
            if !v.errors.is_empty() {
                for p in &v.errors {
                    eprintln!("{p}");
                }
                return Err(Failure::Usage(format!("{} error(s)", v.errors.len())));
            }
        }
        Err(e) => return Err(Failure::Usage(e.to_string())),
    }
    let services: usize = zones.iter().map(|z| z.services.len()).sum();
    println!("ok: {} zone(s), {services} service(s)", zones.len());
    Ok(())
}

// ------------------------------------------------------------ control client

/// Bound on one control request.
const CONTROL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Talks to the daemon's control API.
struct Client {
    base: String,
    token: String,
    /// Where the address came from, for "cannot reach" messages.
    origin: String,
}

impl Client {
    fn new(
        config: Option<&Path>,
        control: Option<String>,
        token_file: Option<PathBuf>,
    ) -> Result<Client, Failure> {
        let cfg = Config::discover(config).map_err(|e| Failure::Usage(e.to_string()))?;
        let from = cfg
            .file
            .as_ref()
            .map(|f| format!("control_listen in {}", f.display()))
            .unwrap_or_else(|| "the default control address".into());
        let (base, origin) = match control {
            Some(url) => (
                url.trim_end_matches('/').to_string(),
                "--control / DNSSHIFT_CONTROL".to_string(),
            ),
            None => {
                let mut addr = cfg.control_listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(if addr.is_ipv4() {
                        std::net::Ipv4Addr::LOCALHOST.into()
                    } else {
                        std::net::Ipv6Addr::LOCALHOST.into()
                    });
                }
                (format!("http://{addr}"), from)
            }
        };
        let token_path = token_file.unwrap_or(cfg.control_token_file);
        let token = std::fs::read_to_string(&token_path)
            .map_err(|e| {
                Failure::Unreachable(format!(
                    "cannot read the control token {}: {e}; the daemon, expected at {base} ({origin}), creates it when it starts: is `dnsshift serve` running with this config, and can this user read the file? (or pass --token-file)",
                    token_path.display()
                ))
            })?
            .trim()
            .to_string();
        Ok(Client {
            base,
            token,
            origin,
        })
    }

    fn run(&self, command: Command) -> Result<(), Failure> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::Refused(format!("cannot start the async runtime: {e}")))?;
        rt.block_on(self.dispatch(command))
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, Failure> {
        let client = reqwest::Client::builder()
            .timeout(CONTROL_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| Failure::Refused(format!("cannot build the HTTP client: {e}")))?;
        let url = format!("{}{path}", self.base);
        let mut req = client.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let unreachable = |e: reqwest::Error| {
            Failure::Unreachable(format!(
                "cannot reach the dnsshift daemon at {} ({}): {}; is `dnsshift serve` running?",
                self.base,
                self.origin,
                crate::health::describe_reqwest(&e)
            ))
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let text = resp.text().await.map_err(unreachable)?;
        if !status.is_success() {
            let body = serde_json::from_str::<ErrorBody>(&text).unwrap_or_else(|_| ErrorBody {
                error: format!(
                    "the daemon at {} answered status {} without an explanation",
                    self.base,
                    status.as_u16()
                ),
                fault: None,
            });
            return Err(failure_for(status, body));
        }
        serde_json::from_str(&text)
            .map_err(|e| Failure::Refused(format!("unexpected answer from the daemon: {e}")))
    }

    async fn dispatch(&self, command: Command) -> Result<(), Failure> {
        use reqwest::Method;
        let seg = |s: &str| percent(s);
        match command {
            Command::Serve(_) | Command::Check { .. } => Ok(()),
            Command::Status {
                service,
                json,
                watch,
                interval,
                count,
            } => {
                let path = match &service {
                    Some(s) => format!("/v1/status?service={}", seg(s)),
                    None => "/v1/status".into(),
                };
                if watch {
                    return self.watch(&path, interval, count).await;
                }
                let st: StatusResponse = self.call(Method::GET, &path, None).await?;
                if json {
                    print_json(&st)
                } else {
                    print!("{}", render_status(&st));
                    Ok(())
                }
            }
            Command::Advance(a) => self.transition("advance", a).await,
            Command::Rollback(a) => self.transition("rollback", a).await,
            Command::Endpoint { action } => {
                let (service, endpoint, reason, force, verb) = match action {
                    EndpointAction::Disable {
                        service,
                        endpoint,
                        force,
                        reason,
                    } => (service, endpoint, reason, force, "disable"),
                    EndpointAction::Enable {
                        service,
                        endpoint,
                        reason,
                    } => (service, endpoint, reason, false, "enable"),
                };
                let ok: OkResponse = self
                    .call(
                        Method::POST,
                        &format!(
                            "/v1/services/{}/endpoints/{}/{verb}",
                            seg(&service),
                            seg(&endpoint)
                        ),
                        Some(serde_json::json!({ "force": force, "reason": reason })),
                    )
                    .await?;
                println!("{}", ok.message);
                Ok(())
            }
            Command::History { service, json } => {
                let path = match &service {
                    Some(s) => format!("/v1/services/{}/history", seg(s)),
                    None => "/v1/history".into(),
                };
                let h: HistoryResponse = self.call(Method::GET, &path, None).await?;
                if json {
                    return print_json(&h);
                }
                print!("{}", render_history(&h));
                Ok(())
            }
            Command::Decommission {
                service,
                pool,
                force,
                reason,
            } => {
                let body = serde_json::json!({ "force": force, "reason": reason });
                self.pool_action(&service, &pool, "decommission", body)
                    .await
            }
            Command::Recommission {
                service,
                pool,
                reason,
            } => {
                let body = serde_json::json!({ "reason": reason });
                self.pool_action(&service, &pool, "recommission", body)
                    .await
            }
            Command::Reload => {
                let r: ReloadResponse = self.call(Method::POST, "/v1/reload", None).await?;
                println!(
                    "reloaded: {} zone(s), {} service(s), serial {}",
                    r.zones, r.services, r.serial
                );
                Ok(())
            }
        }
    }

    /// `decommission` / `recommission`: POSTs `body` and prints the answer.
    async fn pool_action(
        &self,
        service: &str,
        pool: &str,
        verb: &str,
        body: serde_json::Value,
    ) -> Result<(), Failure> {
        let path = format!(
            "/v1/services/{}/pools/{}/{verb}",
            percent(service),
            percent(pool)
        );
        let ok: OkResponse = self.call(reqwest::Method::POST, &path, Some(body)).await?;
        println!("{}", ok.message);
        Ok(())
    }

    /// `status --watch`: clears the screen and redraws every `interval`,
    /// `count` times or until Ctrl-C (at most [`WATCH_LIMIT`]). A failed
    /// request is shown in place and retried at the next redraw.
    async fn watch(
        &self,
        path: &str,
        interval: std::time::Duration,
        count: Option<u64>,
    ) -> Result<(), Failure> {
        use std::io::Write;
        let start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drawn = 0u64;
        while count.is_none_or(|c| drawn < c) && start.elapsed() < WATCH_LIMIT {
            tick.tick().await;
            let body = match self
                .call::<StatusResponse>(reqwest::Method::GET, path, None)
                .await
            {
                Ok(st) => render_status(&st),
                Err(e) => format!("dnsshift: {}\n", e.message().unwrap_or("request failed")),
            };
            let mut out = std::io::stdout().lock();
            write!(
                out,
                "{CLEAR_SCREEN}every {}, Ctrl-C to stop\n\n{body}",
                humantime::format_duration(interval)
            )
            .and_then(|()| out.flush())
            .map_err(|e| Failure::Refused(format!("cannot write to the terminal: {e}")))?;
            drawn += 1;
        }
        Ok(())
    }

    async fn transition(&self, verb: &str, a: TransitionArgs) -> Result<(), Failure> {
        let body = TransitionRequest {
            to: a.to,
            force: a.force,
            dry_run: a.dry_run,
            reason: a.reason,
        };
        let r: TransitionResponse = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/services/{}/{verb}", percent(&a.service)),
                serde_json::to_value(&body).ok(),
            )
            .await?;
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
        if a.json {
            return print_json(&r);
        }
        let weights = r
            .weights
            .iter()
            .map(|(p, w)| format!("{p}={w}"))
            .collect::<Vec<_>>()
            .join(" ");
        if r.applied {
            println!(
                "{}: {} -> {} (weights {weights}, ttl {}s)",
                r.service, r.from, r.to, r.ttl
            );
        } else {
            println!(
                "dry run, nothing changed: {}: {} -> {} would serve weights {weights} with ttl {}s",
                r.service, r.from, r.to, r.ttl
            );
        }
        Ok(())
    }
}

/// The failure for a daemon's error answer: its [`Fault`] says whose fault
/// it is; an answer without one (the HTTP layer's own, or an older daemon)
/// goes by its HTTP status, which is never shown.
fn failure_for(status: reqwest::StatusCode, body: ErrorBody) -> Failure {
    use reqwest::StatusCode as S;
    let fault = body.fault.unwrap_or(match status {
        S::UNAUTHORIZED | S::FORBIDDEN => Fault::Unauthorized,
        S::CONFLICT => Fault::Refused,
        s if s.is_client_error() => Fault::Usage,
        _ => Fault::Internal,
    });
    let msg = body.error;
    match fault {
        Fault::Unauthorized => Failure::Unreachable(format!(
            "the daemon rejected the control token: {msg} (is --token-file the daemon's?)"
        )),
        Fault::NotFound | Fault::Usage | Fault::TooLarge | Fault::Timeout => Failure::Usage(msg),
        Fault::Refused | Fault::Internal => Failure::Refused(msg),
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), Failure> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Failure::Refused(e.to_string()))?;
    println!("{s}");
    Ok(())
}

/// Percent-encodes one URL path segment.
fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn ago(now_ms: u64, at_ms: u64) -> String {
    let secs = now_ms.saturating_sub(at_ms) / 1000;
    format!(
        "{} ago",
        humantime::format_duration(std::time::Duration::from_secs(secs))
    )
}

/// A Unix-ms time with how far it is from now: "2026-01-01T12:00:00Z (in 28s)".
fn when(now_ms: u64, at_ms: u64) -> String {
    let rel = if at_ms > now_ms {
        let secs = (at_ms - now_ms).div_ceil(1000);
        format!(
            "in {}",
            humantime::format_duration(std::time::Duration::from_secs(secs))
        )
    } else {
        ago(now_ms, at_ms)
    };
    format!("{} ({rel})", crate::clock::format_ms(at_ms))
}

/// The human-readable history, oldest first; with a SERVICE column when it
/// covers every service.
pub fn render_history(h: &HistoryResponse) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let all = h.service.is_none();
    let service_col = |s: &str| {
        if all {
            format!("{s:<28} ")
        } else {
            String::new()
        }
    };
    let _ = writeln!(
        o,
        "{:<22} {}{:<13} {:<18} {:<18} {:<6} REASON",
        "WHEN (UTC)",
        service_col("SERVICE"),
        "ACTION",
        "FROM",
        "TO",
        "FORCED"
    );
    for e in &h.events {
        let _ = writeln!(
            o,
            "{:<22} {}{:<13} {:<18} {:<18} {:<6} {}",
            crate::clock::format_ms(e.at * 1000),
            service_col(&e.service),
            e.change.action(),
            e.change.from().unwrap_or("-"),
            e.change.to(),
            if e.forced { "yes" } else { "" },
            e.reason.as_deref().unwrap_or("")
        );
    }
    o
}

/// What a pool's role means, for the status table.
fn role_text(role: Role) -> &'static str {
    match role {
        Role::Weighted => "receiving its weight",
        Role::StandbyAnswering => "STANDBY ANSWERING: the weighted pools have no usable endpoint",
        Role::FailOpen => "FAIL-OPEN: answered though no endpoint is usable",
        Role::Standby => "standby",
        Role::Unusable => "not answered: no usable endpoint",
        Role::Servfail => "not answered: nothing usable, SERVFAIL",
        Role::Decommissioned => "decommissioned: never answered",
    }
}

/// The human-readable status table.
pub fn render_status(st: &StatusResponse) -> String {
    use std::fmt::Write;
    let fmt = crate::clock::format_ms;
    let mut o = String::new();
    for s in &st.services {
        let _ = writeln!(o, "{}", s.service);
        if s.fail_open {
            let _ = writeln!(
                o,
                "  FAIL-OPEN  no endpoint is usable: answering them all as if they were"
            );
        }
        if s.servfail {
            let _ = writeln!(
                o,
                "  SERVFAIL   no endpoint is usable (on_all_down = \"servfail\")"
            );
        }
        if let Some(stg) = &s.staging {
            let mark = if s.staging_fail_open {
                "  FAIL-OPEN: no usable endpoint, answering them all"
            } else {
                ""
            };
            let _ = writeln!(o, "  staging  {stg}{mark}");
        }
        let phases = s
            .phases
            .iter()
            .map(|p| {
                if *p == s.phase {
                    format!("[{p}]")
                } else {
                    p.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" > ");
        let since = if s.since > 0 {
            format!(", since {}", when(st.now_ms, s.since * 1000))
        } else {
            " (initial phase, never changed)".to_string()
        };
        let _ = writeln!(o, "  phase    {}{since}  ttl {}s", s.phase, s.ttl);
        let _ = writeln!(o, "  phases   {phases}");
        if let Some(until) = s.hold_until_ms {
            let left = if until > st.now_ms {
                format!(
                    "{} left, until {}",
                    humantime::format_duration(std::time::Duration::from_secs(
                        (until - st.now_ms).div_ceil(1000)
                    )),
                    fmt(until)
                )
            } else {
                format!("passed at {}", fmt(until))
            };
            let _ = writeln!(o, "  hold     {left}");
        }
        let _ = writeln!(
            o,
            "  {:<10} {:>6}  {:>16}  STATE",
            "POOL", "WEIGHT", "SERVED (1 MIN)"
        );
        for p in &s.pools {
            let role = match p.role {
                Some(r) => role_text(r).to_string(),
                None => p
                    .roles
                    .iter()
                    .map(|(family, r)| format!("{family}: {}", role_text(*r)))
                    .collect::<Vec<_>>()
                    .join("; "),
            };
            let state = match (
                p.decommissioned,
                p.drained_at_ms,
                p.safe_to_decommission_after_ms,
            ) {
                (true, _, _) | (_, None, _) => role,
                (false, Some(d), Some(safe)) if p.drained => format!(
                    "{role}, drained at {}; safe to decommission after {}",
                    fmt(d),
                    when(st.now_ms, safe)
                ),
                (false, Some(d), _) => format!(
                    "{role}, draining: caches may hold it until {}",
                    when(st.now_ms, d)
                ),
            };
            let served = format!(
                "{:.1}% ({})",
                p.share_last_minute * 100.0,
                p.answers_last_minute
            );
            let _ = writeln!(
                o,
                "  {:<10} {:>6}  {:>16}  {state}",
                p.pool, p.weight, served
            );
        }
        let _ = writeln!(
            o,
            "  {:<28} {:<10} {:<10} {:<9} LAST CHECK",
            "ENDPOINT", "POOL", "HEALTH", "OVERRIDE"
        );
        for p in &s.pools {
            for e in &p.endpoints {
                let health = match (e.checked, e.healthy) {
                    (false, _) => "unchecked",
                    (true, true) => "healthy",
                    (true, false) => "DOWN",
                };
                let over = if e.disabled { "disabled" } else { "-" };
                let last = e
                    .last_check
                    .as_ref()
                    .map(|c| {
                        format!(
                            "{} ({} ms) {}",
                            c.detail,
                            c.duration_ms,
                            ago(st.now_ms, c.at_ms)
                        )
                    })
                    .unwrap_or_else(|| "-".into());
                let _ = writeln!(
                    o,
                    "  {:<28} {:<10} {:<10} {over:<9} {last}",
                    e.endpoint, p.pool, health
                );
            }
        }
        let _ = writeln!(o);
    }
    o
}
