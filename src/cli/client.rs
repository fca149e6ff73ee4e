//! The control client: operator commands as typed requests to the
//! daemon's control API, errors mapped to exit codes by their fault.

use std::path::{Path, PathBuf};

use super::render::{render_analysis, render_history, render_status};
use super::{AutoCommand, Command, EndpointAction, Failure, TransitionArgs};
use crate::api::{
    AnalysisResponse, DecommissionRequest, EndpointRequest, ErrorBody, Fault, HistoryResponse,
    OkResponse, ReasonRequest, ReloadResponse, StatusResponse, TransitionRequest,
    TransitionResponse,
};

/// The body of a request that has none.
const NO_BODY: Option<&()> = None;
use crate::config::Config;

/// Longest a `status --watch` runs: a forgotten terminal stops polling.
const WATCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Clears the terminal and moves the cursor home (ANSI).
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// Bound on one control request.
const CONTROL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Talks to the daemon's control API.
pub struct Client {
    base: String,
    token: String,
    /// Where the address came from, for "cannot reach" messages.
    origin: String,
}

impl Client {
    pub fn new(
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

    /// Runs `command`, sending `actor` with every change.
    pub fn run(&self, command: Command, actor: Option<String>) -> Result<(), Failure> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::Refused(format!("cannot start the async runtime: {e}")))?;
        rt.block_on(self.dispatch(command, actor))
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T, Failure> {
        let client = reqwest::Client::builder()
            .timeout(CONTROL_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| Failure::Refused(format!("cannot build the HTTP client: {e}")))?;
        let url = format!("{}{path}", self.base);
        let mut req = client.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
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

    async fn dispatch(&self, command: Command, actor: Option<String>) -> Result<(), Failure> {
        use reqwest::Method;
        let seg = |s: &str| percent(s);
        match command {
            Command::Serve(_) | Command::Check { .. } | Command::Cluster { .. } => Ok(()),
            Command::Dnssec { action } => self.dnssec(action).await,
            Command::Cookies {
                action: crate::cli::CookiesAction::Rotate { json },
            } => {
                let st: crate::api::CookieStatus = self
                    .call(Method::POST, "/v1/cookies/rotate", NO_BODY)
                    .await?;
                if json {
                    return print_json(&st);
                }
                println!(
                    "rotated: {}",
                    super::render::render_cookies(crate::clock::unix_ms(), &st)
                );
                Ok(())
            }
            Command::Status {
                service,
                json,
                check,
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
                let st: StatusResponse = self.call(Method::GET, &path, NO_BODY).await?;
                if check {
                    return check_status(&st);
                }
                if json {
                    print_json(&st)
                } else {
                    print!("{}", render_status(&st));
                    Ok(())
                }
            }
            Command::Advance(a) => {
                self.transition("advance", a.transition, a.force, actor)
                    .await
            }
            Command::Rollback(a) => self.transition("rollback", a, false, actor).await,
            Command::Endpoint { action } => {
                let (service, endpoint, reason, force, json, verb) = match action {
                    EndpointAction::Disable {
                        service,
                        endpoint,
                        force,
                        reason,
                        json,
                    } => (service, endpoint, reason, force, json, "disable"),
                    EndpointAction::Enable {
                        service,
                        endpoint,
                        reason,
                        json,
                    } => (service, endpoint, reason, false, json, "enable"),
                };
                let ok: OkResponse = self
                    .call(
                        Method::POST,
                        &format!(
                            "/v1/services/{}/endpoints/{}/{verb}",
                            seg(&service),
                            seg(&endpoint)
                        ),
                        Some(&EndpointRequest {
                            force,
                            reason,
                            actor,
                        }),
                    )
                    .await?;
                print_ok(&ok, json)
            }
            Command::History { service, all, json } => {
                let mut path = match &service {
                    Some(s) => format!("/v1/services/{}/history", seg(s)),
                    None => "/v1/history".into(),
                };
                if all {
                    path.push_str("?all=true");
                }
                let h: HistoryResponse = self.call(Method::GET, &path, NO_BODY).await?;
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
                json,
            } => {
                let body = DecommissionRequest {
                    force,
                    reason,
                    actor,
                };
                self.pool_action(&service, &pool, "decommission", &body, json)
                    .await
            }
            Command::Recommission {
                service,
                pool,
                reason,
                json,
            } => {
                let body = ReasonRequest { reason, actor };
                self.pool_action(&service, &pool, "recommission", &body, json)
                    .await
            }
            Command::Auto { action } => {
                let (verb, a) = match action {
                    AutoCommand::Start(a) => ("start", a),
                    AutoCommand::Pause(a) => ("pause", a),
                    AutoCommand::Resume(a) => ("resume", a),
                };
                let body = ReasonRequest {
                    reason: a.reason,
                    actor,
                };
                let ok: OkResponse = self
                    .call(
                        Method::POST,
                        &format!("/v1/services/{}/auto/{verb}", seg(&a.service)),
                        Some(&body),
                    )
                    .await?;
                print_ok(&ok, a.json)
            }
            Command::Analysis { service, json } => {
                let r: AnalysisResponse = self
                    .call(
                        Method::GET,
                        &format!("/v1/services/{}/analysis", seg(&service)),
                        NO_BODY,
                    )
                    .await?;
                if json {
                    print_json(&r)?;
                } else {
                    print!("{}", render_analysis(&r));
                }
                let errors: Vec<&str> = r
                    .checks
                    .iter()
                    .filter(|c| c.verdict == "error")
                    .map(|c| c.name.as_str())
                    .collect();
                if errors.is_empty() {
                    Ok(())
                } else {
                    Err(Failure::Refused(format!(
                        "the provider did not answer {}: an invalid query or a provider that fails",
                        errors.join(", ")
                    )))
                }
            }
            Command::Reload { dry_run } => {
                let path = if dry_run {
                    "/v1/reload/dry-run"
                } else {
                    "/v1/reload"
                };
                let r: ReloadResponse = self.call(Method::POST, path, NO_BODY).await?;
                for w in &r.warnings {
                    eprintln!("warning: {w}");
                }
                if r.dry_run {
                    println!(
                        "valid: {} zone(s), {} service(s); nothing applied",
                        r.zones, r.services
                    );
                } else {
                    println!(
                        "reloaded: {} zone(s), {} service(s), serial {}",
                        r.zones, r.services, r.serial
                    );
                }
                match (r.changes.is_empty(), r.dry_run) {
                    (true, true) => println!("no changes: a reload would serve what is served now"),
                    (true, false) => println!("no changes"),
                    (false, _) => {
                        println!("{}:", if r.dry_run { "would change" } else { "changed" });
                        for c in &r.changes {
                            println!("  {c}");
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// `dnssec status` (keygen and ds run without a daemon, in [`super::dnssec`]).
    async fn dnssec(&self, action: crate::cli::DnssecAction) -> Result<(), Failure> {
        let crate::cli::DnssecAction::Status { json } = action else {
            return Ok(());
        };
        let st: crate::api::DnssecStatusResponse = self
            .call(reqwest::Method::GET, "/v1/dnssec", NO_BODY)
            .await?;
        if json {
            return print_json(&st);
        }
        print!("{}", super::dnssec::render_status(&st));
        Ok(())
    }

    /// `decommission` / `recommission`: POSTs `body` and prints the answer.
    async fn pool_action(
        &self,
        service: &str,
        pool: &str,
        verb: &str,
        body: &impl serde::Serialize,
        json: bool,
    ) -> Result<(), Failure> {
        let path = format!(
            "/v1/services/{}/pools/{}/{verb}",
            percent(service),
            percent(pool)
        );
        let ok: OkResponse = self.call(reqwest::Method::POST, &path, Some(body)).await?;
        print_ok(&ok, json)
    }

    /// `status --watch`: clears the screen (on a terminal) and redraws every `interval`,
    /// `count` times or until Ctrl-C (at most [`WATCH_LIMIT`]). A failed
    /// request is shown in place and retried at the next redraw.
    async fn watch(
        &self,
        path: &str,
        interval: std::time::Duration,
        count: Option<u64>,
    ) -> Result<(), Failure> {
        use std::io::{IsTerminal, Write};
        let start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drawn = 0u64;
        while count.is_none_or(|c| drawn < c) && start.elapsed() < WATCH_LIMIT {
            tick.tick().await;
            let body = match self
                .call::<StatusResponse>(reqwest::Method::GET, path, NO_BODY)
                .await
            {
                Ok(st) => render_status(&st),
                Err(e) => format!("dnsshift: {}\n", e.message().unwrap_or("request failed")),
            };
            let mut out = std::io::stdout().lock();
            // Redrawn in place on a terminal; a pipe or file gets each
            // redraw after the last, without escape sequences.
            let clear = if out.is_terminal() { CLEAR_SCREEN } else { "" };
            write!(
                out,
                "{clear}every {}, Ctrl-C to stop\n\n{body}",
                humantime::format_duration(interval)
            )
            .and_then(|()| out.flush())
            .map_err(|e| Failure::Refused(format!("cannot write to the terminal: {e}")))?;
            drawn += 1;
        }
        Ok(())
    }

    async fn transition(
        &self,
        verb: &str,
        a: TransitionArgs,
        force: bool,
        actor: Option<String>,
    ) -> Result<(), Failure> {
        let body = TransitionRequest {
            to: a.to,
            force,
            dry_run: a.dry_run,
            reason: a.reason,
            actor,
        };
        let r: TransitionResponse = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/services/{}/{verb}", percent(&a.service)),
                Some(&body),
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
                "{}: {} -> {} (weights {weights}, ttl {}s){}",
                r.service,
                r.from,
                r.to,
                r.ttl,
                epoch_note(r.epoch)
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

/// A command's acknowledgement: its warnings on stderr, then the message
/// with the epoch the change created, or the JSON.
fn print_ok(ok: &OkResponse, json: bool) -> Result<(), Failure> {
    for w in &ok.warnings {
        eprintln!("warning: {w}");
    }
    if json {
        return print_json(ok);
    }
    println!("{}{}", ok.message, epoch_note(ok.epoch));
    Ok(())
}

/// ", epoch N" for a change that created epoch N; nothing otherwise.
fn epoch_note(epoch: Option<i64>) -> String {
    epoch.map(|e| format!(", epoch {e}")).unwrap_or_default()
}

/// The login name of the user running the CLI, sent as the actor of a
/// change: `SUDO_USER` (the person behind `sudo`), else `LOGNAME` or `USER`,
/// else the name of the real user id. Informational only.
pub fn login_name() -> Option<String> {
    ["SUDO_USER", "LOGNAME", "USER"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|n| !n.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
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

/// `status --check`: one line per problem on stdout; exit 1 if any.
fn check_status(st: &StatusResponse) -> Result<(), Failure> {
    let problems = super::problems::problems(st);
    if problems.is_empty() {
        println!(
            "OK: {} service(s) answered normally{}",
            st.services.len(),
            match st.hosts.len() {
                0 => String::new(),
                n => format!(", {n} host(s) in sync"),
            }
        );
        return Ok(());
    }
    for p in &problems {
        println!("{p}");
    }
    Err(Failure::Refused(String::new()))
}
