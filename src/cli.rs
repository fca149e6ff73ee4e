//! The command line: subcommands, the runtime for `serve`, and the
//! control-client side of operator commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, LogFormat};
use crate::control::{
    ErrorBody, HistoryResponse, OkResponse, ReloadResponse, StatusResponse, TransitionRequest,
    TransitionResponse,
};
use crate::spec::ConfigErrors;
use crate::zone;

mod args;
pub use args::{Args, Command, EndpointAction, ServeArgs, TransitionArgs};

/// Runs a parsed command line; returns the process exit code.
pub fn main(args: Args) -> ExitCode {
    match args.command {
        Command::Serve(s) => serve(args.config.as_deref(), s),
        Command::Check { path } => check(args.config.as_deref(), path.as_deref()),
        command => match Client::new(args.config.as_deref(), args.control, args.token_file) {
            Ok(c) => c.run(command),
            Err(e) => fail(e),
        },
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("dnsshift: {msg}");
    ExitCode::FAILURE
}

fn serve(config: Option<&Path>, args: ServeArgs) -> ExitCode {
    let mut config = match Config::discover(config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(signal_shutdown(shutdown.clone()));
        match crate::daemon::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                fail(e)
            }
        }
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
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter(&config.log_level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The configured level for our logs; hickory's own per-request lines stay
/// at warn so that queries are not logged at info.
fn default_filter(level: &str) -> String {
    format!("{level},hickory_server=warn,hickory_proto=warn,hickory_net=warn")
}

fn check(config: Option<&Path>, path: Option<&Path>) -> ExitCode {
    let config = match Config::discover(config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
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
            eprintln!("dnsshift: {} error(s)", errs.len());
            return ExitCode::FAILURE;
        }
    };
    // Persisted state must still fit the zones (phases, pools, endpoints).
    let store = crate::state::Store::new(&config.state_dir);
    match store.load() {
        Ok(state) => {
            let v = state.validate(&zones, &store.path());
            for w in &v.warnings {
                eprintln!("warning: {w}");
            }
            if !v.errors.is_empty() {
                for p in &v.errors {
                    eprintln!("{p}");
                }
                eprintln!("dnsshift: {} error(s)", v.errors.len());
                return ExitCode::FAILURE;
            }
        }
        Err(e) => return fail(e),
    }
    let services: usize = zones.iter().map(|z| z.services.len()).sum();
    println!("ok: {} zone(s), {services} service(s)", zones.len());
    ExitCode::SUCCESS
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
    ) -> Result<Client, String> {
        let cfg = Config::discover(config).map_err(|e| e.to_string())?;
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
                format!(
                    "cannot read the control token {}: {e}; the daemon, expected at {base} ({origin}), creates it when it starts: is `dnsshift serve` running with this config, and can this user read the file? (or pass --token-file)",
                    token_path.display()
                )
            })?
            .trim()
            .to_string();
        Ok(Client {
            base,
            token,
            origin,
        })
    }

    fn run(&self, command: Command) -> ExitCode {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => return fail(format!("cannot start the async runtime: {e}")),
        };
        match rt.block_on(self.dispatch(command)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, String> {
        let client = reqwest::Client::builder()
            .timeout(CONTROL_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let url = format!("{}{path}", self.base);
        let mut req = client.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            format!(
                "cannot reach the dnsshift daemon at {} ({}): {e}; is `dnsshift serve` running?",
                self.base, self.origin
            )
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("cannot read the daemon's answer: {e}"))?;
        if !status.is_success() {
            let msg = serde_json::from_str::<ErrorBody>(&text)
                .map(|e| e.error)
                .unwrap_or(text);
            return Err(format!("{msg} ({status})"));
        }
        serde_json::from_str(&text).map_err(|e| format!("unexpected answer from the daemon: {e}"))
    }

    async fn dispatch(&self, command: Command) -> Result<(), String> {
        use reqwest::Method;
        let seg = |s: &str| percent(s);
        match command {
            Command::Serve(_) | Command::Check { .. } => Ok(()),
            Command::Status { service, json } => {
                let path = match &service {
                    Some(s) => format!("/v1/status?service={}", seg(s)),
                    None => "/v1/status".into(),
                };
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
                let (service, endpoint, reason, verb) = match action {
                    EndpointAction::Disable {
                        service,
                        endpoint,
                        reason,
                    } => (service, endpoint, reason, "disable"),
                    EndpointAction::Enable {
                        service,
                        endpoint,
                        reason,
                    } => (service, endpoint, reason, "enable"),
                };
                let ok: OkResponse = self
                    .call(
                        Method::POST,
                        &format!(
                            "/v1/services/{}/endpoints/{}/{verb}",
                            seg(&service),
                            seg(&endpoint)
                        ),
                        Some(serde_json::json!({ "reason": reason })),
                    )
                    .await?;
                println!("{}", ok.message);
                Ok(())
            }
            Command::History { service, json } => {
                let h: HistoryResponse = self
                    .call(
                        Method::GET,
                        &format!("/v1/services/{}/history", seg(&service)),
                        None,
                    )
                    .await?;
                if json {
                    return print_json(&h);
                }
                println!(
                    "{:<22} {:<13} {:<18} {:<18} {:<6} REASON",
                    "WHEN (UTC)", "ACTION", "FROM", "TO", "FORCED"
                );
                for e in &h.events {
                    println!(
                        "{:<22} {:<13} {:<18} {:<18} {:<6} {}",
                        crate::daemon::format_ms(e.at * 1000),
                        e.action,
                        e.from.as_deref().unwrap_or("-"),
                        e.to.as_deref().unwrap_or("-"),
                        if e.forced { "yes" } else { "" },
                        e.reason.as_deref().unwrap_or("")
                    );
                }
                Ok(())
            }
            Command::Decommission {
                service,
                pool,
                force,
                reason,
            } => {
                let ok: OkResponse = self
                    .call(
                        Method::POST,
                        &format!(
                            "/v1/services/{}/pools/{}/decommission",
                            seg(&service),
                            seg(&pool)
                        ),
                        Some(serde_json::json!({ "force": force, "reason": reason })),
                    )
                    .await?;
                println!("{}", ok.message);
                Ok(())
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

    async fn transition(&self, verb: &str, a: TransitionArgs) -> Result<(), String> {
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

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), String> {
    let s = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
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
    format!("{} ({rel})", crate::daemon::format_ms(at_ms))
}

/// The human-readable status table.
pub fn render_status(st: &StatusResponse) -> String {
    use std::fmt::Write;
    let fmt = crate::daemon::format_ms;
    let mut o = String::new();
    for s in &st.services {
        let _ = writeln!(o, "{}", s.service);
        if let Some(stg) = &s.staging {
            let _ = writeln!(o, "  staging  {stg}");
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
        let _ = writeln!(
            o,
            "  {:<10} {:>6}  {:>16}  STATE",
            "POOL", "WEIGHT", "SERVED (1 MIN)"
        );
        for p in &s.pools {
            let usable = p.endpoints.iter().any(|e| e.healthy && !e.disabled);
            let state = if p.decommissioned {
                "decommissioned: never answered".to_string()
            } else if p.weight > 0 && !usable {
                "weighted, but no healthy endpoint: not answered while another pool is healthy"
                    .to_string()
            } else if p.weight > 0 {
                "receiving traffic".to_string()
            } else {
                match (p.drained_at_ms, p.safe_to_decommission_after_ms) {
                    (Some(d), Some(safe)) if p.drained => {
                        format!(
                            "standby, drained at {}; safe to decommission after {}",
                            fmt(d),
                            when(st.now_ms, safe)
                        )
                    }
                    (Some(d), _) => format!(
                        "standby, draining: caches may hold it until {}",
                        when(st.now_ms, d)
                    ),
                    _ => "standby".into(),
                }
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
