//! Server settings (`dnsshift.toml`): listen addresses, control address,
//! directories, logging, the server identity. Every setting has a default that works for a local
//! try-out without root.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::source::{ConfigError, ConfigErrors, DurationSpec, Source, fields, sub_table};

pub mod cluster;
pub mod cookies;
mod log_format;
pub mod rrl;
pub mod source;
pub mod ui;

pub use log_format::LogFormat;

/// Idle time after which a TCP connection is closed.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default DNS listen address: unprivileged, loopback.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5353));
/// Default control API address: loopback only.
pub const DEFAULT_CONTROL: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5380));
/// Default time a control client has to send a request's headers; also how
/// long an idle keep-alive connection is kept (the wait for the next
/// request's headers starts when the previous response is sent).
pub const DEFAULT_CONTROL_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a control client has to send a whole request body.
pub const DEFAULT_CONTROL_BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default cap on open control connections. The CLI uses one per command
/// and a Prometheus server one per scrape, so this is generous.
pub const DEFAULT_CONTROL_MAX_CONNECTIONS: usize = 64;

/// Where the config is looked for when neither `--config` nor
/// `$DNSSHIFT_CONFIG` names one: the working directory (a try-out from the
/// repo), then where the systemd unit's install puts it (an operator on a
/// production host, with no flags).
pub const SEARCH_PATH: [&str; 2] = ["dnsshift.toml", "/etc/dnsshift/dnsshift.toml"];

/// The config file to use: `explicit`, else `env`, else the first of
/// `candidates` that exists. An explicit or env path is returned even if it
/// does not exist, so that loading it reports the missing file.
pub fn find(
    explicit: Option<&Path>,
    env: Option<PathBuf>,
    candidates: &[PathBuf],
) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or(env.filter(|p| !p.as_os_str().is_empty()))
        .or_else(|| candidates.iter().find(|p| p.exists()).cloned())
}

/// As written; keys it does not read are reported by [`Config::load`].
#[derive(Deserialize, Default)]
struct ConfigSpec {
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    zones_dir: Option<String>,
    state_dir: Option<String>,
    control_listen: Option<Spanned<String>>,
    control_token_file: Option<String>,
    log_format: Option<Spanned<String>>,
    log_level: Option<String>,
    tcp_idle_timeout: Option<Spanned<DurationSpec>>,
    server_id: Option<Spanned<String>>,
    cluster: Option<crate::config::cluster::ClusterSpec>,
    allow_remote_control: Option<bool>,
    control_header_timeout: Option<Spanned<DurationSpec>>,
    control_body_timeout: Option<Spanned<DurationSpec>>,
    control_max_connections: Option<Spanned<i64>>,
    udp_fast_path: Option<bool>,
    udp_workers: Option<Spanned<i64>>,
    udp_rcvbuf: Option<Spanned<i64>>,
    tcp_max_connections: Option<Spanned<i64>>,
    rrl: Option<RrlSpec>,
    cookies: Option<CookiesSpec>,
    ui: Option<Spanned<String>>,
    ui_hosts: Option<Vec<Spanned<String>>>,
}

/// `[rrl]`: response rate limiting.
#[derive(Deserialize, Default)]
struct RrlSpec {
    enabled: Option<bool>,
    responses_per_second: Option<Spanned<i64>>,
    slip: Option<Spanned<i64>>,
    ipv4_prefix: Option<Spanned<i64>>,
    ipv6_prefix: Option<Spanned<i64>>,
    table_size: Option<Spanned<i64>>,
    exempt: Option<Vec<Spanned<String>>>,
}

/// `[cookies]`: the DNS cookie secret.
#[derive(Deserialize, Default)]
struct CookiesSpec {
    secret_file: Option<Spanned<String>>,
    previous_secret_file: Option<Spanned<String>>,
    rotate: Option<Spanned<DurationSpec>>,
}

/// Validated server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file these came from, if any.
    pub file: Option<PathBuf>,
    /// DNS addresses; UDP and TCP are bound on each.
    pub listen: Vec<SocketAddr>,
    /// Directory of `*.toml` zone files.
    pub zones_dir: PathBuf,
    /// Directory for persisted state and the control token.
    pub state_dir: PathBuf,
    /// Control API (and /metrics) address.
    pub control_listen: SocketAddr,
    /// Bearer token file; default `<state_dir>/control.token`.
    pub control_token_file: PathBuf,
    /// Log format.
    pub log_format: LogFormat,
    /// Default log filter when RUST_LOG is not set.
    pub log_level: String,
    /// Idle TCP connections are closed after this long.
    pub tcp_idle_timeout: Duration,
    /// What this server calls itself in NSID (RFC 5001) and in the CH TXT
    /// answers to `id.server.` and `hostname.bind.`, so an operator can tell
    /// which of several nameservers answered. Empty: identify nothing.
    pub server_id: String,
    /// Shared state on etcd (`[cluster]`); `None`: the local state file.
    pub cluster: Option<crate::config::cluster::ClusterConfig>,
    /// The operator allowed a control address beyond loopback.
    pub allow_remote_control: bool,
    /// Limits that keep the control API from being starved.
    pub control_limits: ControlLimits,
    /// Answer UDP on dnsshift's own fast path (the default), or on hickory's.
    pub udp_fast_path: bool,
    /// Fast-path UDP worker threads (and `SO_REUSEPORT` sockets) per listen
    /// address; default one per CPU.
    pub udp_workers: usize,
    /// UDP receive buffer to ask the kernel for, in bytes.
    pub udp_rcvbuf: usize,
    /// Most DNS TCP connections open at once, per listen address; at the cap the longest-idle one is closed.
    pub tcp_max_connections: usize,
    /// Response rate limiting on UDP (`[rrl]`).
    pub rrl: crate::config::rrl::Settings,
    /// The DNS cookie secrets read from `[cookies]` (`secret_file`,
    /// `previous_secret_file`); `None`: a random secret made at start.
    pub cookies: Option<crate::dns::cookie::Secrets>,
    /// How often a secret not read from a file is replaced
    /// (`[cookies] rotate`): at least [`cookies::MIN_ROTATE`].
    pub cookie_rotate: Duration,
    /// The status page on the control listener (`ui`).
    pub ui: ui::UiMode,
    /// Extra `Host` names the status page answers to (`ui_hosts`), besides
    /// the control address itself and `localhost` on its port.
    pub ui_hosts: Vec<String>,
}

/// Bounds on the control API's connections, so that idle or slow clients
/// cannot use up descriptors or keep `status` from being answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlLimits {
    /// Time to receive a request's headers, counted from the moment the
    /// server waits for them: it is the idle timeout of a kept-alive
    /// connection too.
    pub header_timeout: Duration,
    /// Time to receive a whole request body.
    pub body_timeout: Duration,
    /// Open connections at most; beyond it the oldest idle one is closed.
    pub max_connections: usize,
}

/// Default cap on DNS TCP connections per listen address.
pub const DEFAULT_TCP_MAX_CONNECTIONS: usize = 1000;

/// Default UDP receive buffer: room for a few milliseconds of a flood at
/// line rate, so bursts are not dropped while a worker is busy.
pub const DEFAULT_UDP_RCVBUF: usize = 4 << 20;
/// Most fast-path workers per listen address.
pub const MAX_UDP_WORKERS: i64 = 256;

impl Config {
    /// Defaults, relative to the working directory (no config file).
    pub fn defaults() -> Config {
        // An empty spec sets nothing, so nothing can be rejected.
        Self::from_spec(None, ConfigSpec::default()).unwrap_or_else(|_| unreachable!())
    }

    /// Reads a config file. Relative paths in it (`zones_dir`, `state_dir`,
    /// `control_token_file`) and the default directories are taken from the
    /// file's directory; command-line paths from the working directory.
    /// Every unknown key is an error at its line; serde skips them, so the
    /// rest is validated too (up to its first problem).
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::parse(&Source::read(path)?)
    }

    fn parse(src: &Source) -> Result<Config, ConfigErrors> {
        let mut errs = Vec::new();
        if let Some(doc) = src.keys() {
            src.unknown_keys(&doc, "", fields::<ConfigSpec>(), &mut errs);
            for (table, known) in [
                ("rrl", fields::<RrlSpec>()),
                ("cookies", fields::<CookiesSpec>()),
                ("cluster", fields::<cluster::ClusterSpec>()),
            ] {
                if let Some(t) = sub_table(&doc, table) {
                    src.unknown_keys(t, table, known, &mut errs);
                }
            }
        }
        match src
            .parse::<ConfigSpec>()
            .and_then(|spec| Self::from_spec(Some(src), spec))
        {
            Ok(config) if errs.is_empty() => Ok(config),
            Ok(_) => Err(ConfigErrors(errs)),
            Err(e) => {
                errs.push(e);
                errs.sort_by_key(|e| e.line);
                Err(ConfigErrors(errs))
            }
        }
    }

    /// The config from `--config`, else `$DNSSHIFT_CONFIG`, else the first
    /// of [`SEARCH_PATH`] that exists, else defaults.
    pub fn discover(explicit: Option<&Path>) -> Result<Config, ConfigErrors> {
        let env = std::env::var_os("DNSSHIFT_CONFIG").map(PathBuf::from);
        match find(explicit, env, &SEARCH_PATH.map(PathBuf::from)) {
            Some(p) => Self::load(&p),
            None => Ok(Self::defaults()),
        }
    }

    fn from_spec(src: Option<&Source>, spec: ConfigSpec) -> Result<Config, ConfigError> {
        let err = |span: std::ops::Range<usize>, key: &str, msg: String| match src {
            Some(s) => s.error(span, key, msg),
            None => ConfigError {
                file: PathBuf::from("<defaults>"),
                line: 0,
                key: key.into(),
                message: msg,
            },
        };
        let addr = |s: &Spanned<String>, key: &str| {
            s.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
                err(
                    s.span(),
                    key,
                    format!(
                        "{:?} is not an address with a port (write \"127.0.0.1:5353\" or \"[::1]:5353\")",
                        s.get_ref()
                    ),
                )
            })
        };
        let listen = match &spec.listen {
            Some(list) => {
                if list.get_ref().is_empty() {
                    return Err(err(
                        list.span(),
                        "listen",
                        "at least one address is needed".into(),
                    ));
                }
                list.get_ref()
                    .iter()
                    .map(|a| addr(a, "listen"))
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => vec![DEFAULT_LISTEN],
        };
        let allow_remote_control = spec.allow_remote_control.unwrap_or(false);
        let control_listen = match &spec.control_listen {
            Some(a) => {
                let parsed = addr(a, "control_listen")?;
                check_control_addr(parsed, allow_remote_control)
                    .map_err(|m| err(a.span(), "control_listen", m))?;
                parsed
            }
            None => DEFAULT_CONTROL,
        };
        let duration = |d: &Option<Spanned<DurationSpec>>, key: &str, default: Duration| {
            let (Some(d), Some(s)) = (d, src) else {
                return Ok(default);
            };
            let v = s.duration(d, key)?;
            if v.is_zero() {
                return Err(s.error(d.span(), key, "must be longer than 0s"));
            }
            Ok(v)
        };
        let max_connections = match (&spec.control_max_connections, src) {
            (Some(n), Some(s)) => usize::try_from(*n.get_ref())
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    s.error(
                        n.span(),
                        "control_max_connections",
                        format!("{} is not a positive number of connections", n.get_ref()),
                    )
                })?,
            _ => DEFAULT_CONTROL_MAX_CONNECTIONS,
        };
        let control_limits = ControlLimits {
            header_timeout: duration(
                &spec.control_header_timeout,
                "control_header_timeout",
                DEFAULT_CONTROL_HEADER_TIMEOUT,
            )?,
            body_timeout: duration(
                &spec.control_body_timeout,
                "control_body_timeout",
                DEFAULT_CONTROL_BODY_TIMEOUT,
            )?,
            max_connections,
        };
        let log_format = match &spec.log_format {
            None => LogFormat::Human,
            Some(f) => match f.get_ref().as_str() {
                "human" => LogFormat::Human,
                "json" => LogFormat::Json,
                other => {
                    return Err(err(
                        f.span(),
                        "log_format",
                        format!("unknown log format {other:?} (expected \"human\" or \"json\")"),
                    ));
                }
            },
        };
        let tcp_idle_timeout =
            duration(&spec.tcp_idle_timeout, "tcp_idle_timeout", TCP_IDLE_TIMEOUT)?;
        let server_id = match &spec.server_id {
            Some(id) => {
                let text = id.get_ref();
                if text.len() > MAX_SERVER_ID || text.chars().any(char::is_control) {
                    return Err(err(
                        id.span(),
                        "server_id",
                        format!(
                            "{text:?} must be at most {MAX_SERVER_ID} bytes without control characters (\"\" turns identification off)"
                        ),
                    ));
                }
                text.clone()
            }
            None => default_server_id(),
        };
        let cluster = match (spec.cluster, src) {
            (Some(c), Some(s)) => Some(crate::config::cluster::ClusterConfig::from_spec(s, c)?),
            _ => None,
        };
        // An integer key within `range`, or `default`.
        let int = |v: &Option<Spanned<i64>>,
                   key: &str,
                   range: std::ops::RangeInclusive<i64>,
                   default: usize| match v {
            Some(n) if !range.contains(n.get_ref()) => Err(err(
                n.span(),
                key,
                format!(
                    "{} is not between {} and {}",
                    n.get_ref(),
                    range.start(),
                    range.end()
                ),
            )),
            Some(n) => Ok(*n.get_ref() as usize),
            None => Ok(default),
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let udp_workers = int(&spec.udp_workers, "udp_workers", 1..=MAX_UDP_WORKERS, cpus)?;
        let udp_rcvbuf = int(
            &spec.udp_rcvbuf,
            "udp_rcvbuf",
            4096..=1 << 30,
            DEFAULT_UDP_RCVBUF,
        )?;
        let tcp_max_connections = int(
            &spec.tcp_max_connections,
            "tcp_max_connections",
            1..=1_000_000,
            DEFAULT_TCP_MAX_CONNECTIONS,
        )?;
        let rrl_spec = spec.rrl.unwrap_or_default();
        let rrl = crate::config::rrl::Settings {
            enabled: rrl_spec.enabled.unwrap_or(true),
            responses_per_second: int(
                &rrl_spec.responses_per_second,
                "rrl.responses_per_second",
                1..=1_000_000,
                crate::config::rrl::DEFAULT_RATE,
            )? as u32,
            slip: int(
                &rrl_spec.slip,
                "rrl.slip",
                0..=100,
                crate::config::rrl::DEFAULT_SLIP,
            )? as u32,
            ipv4_prefix: int(&rrl_spec.ipv4_prefix, "rrl.ipv4_prefix", 8..=32, 24)? as u8,
            ipv6_prefix: int(&rrl_spec.ipv6_prefix, "rrl.ipv6_prefix", 16..=128, 56)? as u8,
            table_size: int(
                &rrl_spec.table_size,
                "rrl.table_size",
                1..=1 << 24,
                crate::config::rrl::DEFAULT_TABLE_SIZE,
            )?,
            exempt: match &rrl_spec.exempt {
                None => crate::config::rrl::DEFAULT_EXEMPT.to_vec(),
                Some(list) => list
                    .iter()
                    .map(|n| {
                        n.get_ref()
                            .parse()
                            .map_err(|m| err(n.span(), "rrl.exempt", m))
                    })
                    .collect::<Result<_, _>>()?,
            },
        };
        let ui = match &spec.ui {
            Some(m) => ui::UiMode::parse(m.get_ref()).map_err(|e| err(m.span(), "ui", e))?,
            None => ui::UiMode::default(),
        };
        let ui_hosts = spec
            .ui_hosts
            .iter()
            .flatten()
            .map(|h| ui::host(h.get_ref()).map_err(|e| err(h.span(), "ui_hosts", e)))
            .collect::<Result<Vec<_>, _>>()?;
        // Relative paths, written or default, are taken from the config
        // file's directory, so that the file means the same from any
        // working directory; without a file, from the working directory.
        let base = src.and_then(|s| s.path.parent()).unwrap_or(Path::new(""));
        let path = |p: Option<String>, default: &str| base.join(p.as_deref().unwrap_or(default));
        let state_dir = path(spec.state_dir, "state");
        let cookies_spec = spec.cookies.unwrap_or_default();
        let secret = |s: &Spanned<String>, key: &str| {
            cookies::read_secret(&base.join(s.get_ref())).map_err(|m| err(s.span(), key, m))
        };
        let cookie_rotate = match (&cookies_spec.rotate, src) {
            (Some(d), Some(s)) => {
                let v = s.duration(d, "cookies.rotate")?;
                if v < cookies::MIN_ROTATE {
                    return Err(s.error(
                        d.span(),
                        "cookies.rotate",
                        format!(
                            "{} is shorter than 1h, the lifetime of a server cookie: a cookie must stay valid until it expires, under the current or the previous secret",
                            humantime::format_duration(v)
                        ),
                    ));
                }
                v
            }
            _ => cookies::DEFAULT_ROTATE,
        };
        if let (Some(d), Some(_)) = (&cookies_spec.rotate, &cookies_spec.secret_file) {
            return Err(err(
                d.span(),
                "cookies.rotate",
                "is not used beside cookies.secret_file: a secret read from a file is rotated by hand (a new secret_file, the old one as previous_secret_file, then `dnsshift reload`)".into(),
            ));
        }
        let cookies = match (
            &cookies_spec.secret_file,
            &cookies_spec.previous_secret_file,
        ) {
            (None, None) => None,
            (None, Some(p)) => {
                return Err(err(
                    p.span(),
                    "cookies.previous_secret_file",
                    "is only accepted beside cookies.secret_file (the secret that replaced it)"
                        .into(),
                ));
            }
            (Some(c), p) => Some(crate::dns::cookie::Secrets {
                current: secret(c, "cookies.secret_file")?,
                previous: p
                    .as_ref()
                    .map(|p| secret(p, "cookies.previous_secret_file"))
                    .transpose()?,
            }),
        };
        Ok(Config {
            file: src.map(|s| s.path.clone()),
            listen,
            zones_dir: path(spec.zones_dir, "zones"),
            control_token_file: match spec.control_token_file {
                Some(f) => base.join(f),
                None => state_dir.join("control.token"),
            },
            state_dir,
            control_listen,
            log_format,
            log_level: spec.log_level.unwrap_or_else(|| "info".into()),
            tcp_idle_timeout,
            cookie_rotate,
            server_id,
            cluster,
            allow_remote_control,
            control_limits,
            udp_fast_path: spec.udp_fast_path.unwrap_or(true),
            udp_workers,
            udp_rcvbuf,
            tcp_max_connections,
            rrl,
            cookies,
            ui,
            ui_hosts,
        })
    }
}

/// The control API listens on loopback unless the operator allowed more.
fn check_control_addr(addr: SocketAddr, allow_remote_control: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || allow_remote_control {
        return Ok(());
    }
    Err(format!(
        "{addr} is not a loopback address: the control API is plain HTTP with a bearer token, so it listens on 127.0.0.1 or [::1] (write \"127.0.0.1:5380\"), or set allow_remote_control = true to expose it on purpose"
    ))
}

impl Config {
    /// `serve --control URL`: listen for control where the CLI is told to
    /// connect (`http://ADDR:PORT`), instead of `control_listen`.
    pub fn set_control_url(&mut self, url: &str) -> Result<(), String> {
        let addr = url
            .strip_prefix("http://")
            .map(|a| a.trim_end_matches('/'))
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .ok_or_else(|| {
                format!(
                    "--control {url:?}: serve listens on an address and port, written as a URL: http://127.0.0.1:5380 or http://[::1]:5380"
                )
            })?;
        check_control_addr(addr, self.allow_remote_control)
            .map_err(|m| format!("--control: {m}"))?;
        self.control_listen = addr;
        Ok(())
    }
}

/// Longest `server_id`: it is answered as one TXT character-string, which
/// holds at most 255 bytes.
pub const MAX_SERVER_ID: usize = 255;

/// Where Linux keeps the host name; read directly rather than through a
/// crate or libc.
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

/// This machine's host name (Linux), if it has one: the default
/// `server_id` and the default `[cluster] node`.
pub(crate) fn host_name() -> Option<String> {
    let h = std::fs::read_to_string(HOSTNAME_FILE).ok()?;
    Some(h.trim().to_string()).filter(|h| !h.is_empty())
}

/// The default `server_id`: the host name, or empty (identify nothing) when
/// it cannot be read or is not usable as an identifier.
fn default_server_id() -> String {
    let name = host_name().unwrap_or_default();
    let name = name.as_str();
    if name.len() > MAX_SERVER_ID || name.chars().any(char::is_control) {
        return String::new();
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(&Source {
            path: "dnsshift.toml".into(),
            text: text.into(),
        })
    }

    #[test]
    fn unknown_keys_are_each_reported_with_their_key_and_hide_nothing() {
        let e = parse(
            "listen = [\"127.0.0.1:53\"]\nzone_dir = \"z\"\n[rrl]\nslip = 2\nrate = 5\n[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nnodes = \"a\"\n",
        )
        .unwrap_err()
        .to_string();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 3, "{e}");
        assert!(
            lines[0].starts_with(
                "dnsshift.toml:2: zone_dir: unknown key, expected one of `listen`, `zones_dir`,"
            ),
            "{e}"
        );
        assert!(
            lines[1]
                .starts_with("dnsshift.toml:5: rrl.rate: unknown key, expected one of `enabled`,"),
            "{e}"
        );
        assert!(lines[2].starts_with("dnsshift.toml:8: cluster.nodes: unknown key, expected one of `etcd`, `prefix`, `node`,"), "{e}");
        // An unknown key beside a bad value: both.
        let e = parse("log_formt = \"json\"\nlog_format = \"xml\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e.lines().count(), 2, "{e}");
        assert!(e.contains("dnsshift.toml:1: log_formt: unknown key"), "{e}");
        assert!(
            e.contains("dnsshift.toml:2: log_format: unknown log format \"xml\""),
            "{e}"
        );
    }

    #[test]
    fn defaults_work_without_root() {
        let c = Config::defaults();
        assert_eq!(c.listen, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(c.control_listen.to_string(), "127.0.0.1:5380");
        assert_eq!(c.control_token_file, PathBuf::from("state/control.token"));
        assert!(!c.allow_remote_control);
        assert_eq!(
            c.control_limits.max_connections,
            DEFAULT_CONTROL_MAX_CONNECTIONS
        );
        let host = std::fs::read_to_string(HOSTNAME_FILE).unwrap_or_default();
        assert_eq!(c.server_id, host.trim());
    }

    #[test]
    fn server_id_is_set_or_turned_off() {
        assert_eq!(
            parse("server_id = \"ns1-fra\"").unwrap().server_id,
            "ns1-fra"
        );
        assert_eq!(parse("server_id = \"\"").unwrap().server_id, "");
        let long = format!("server_id = \"{}\"", "x".repeat(MAX_SERVER_ID + 1));
        let e = parse(&long).unwrap_err().to_string();
        assert!(
            e.contains("server_id: ") && e.contains("at most 255 bytes"),
            "{e}"
        );
    }

    #[test]
    fn config_is_found_by_flag_then_env_then_search_path() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("dnsshift.toml");
        let etc = dir.path().join("etc/dnsshift.toml");
        let candidates = [local.clone(), etc.clone()];
        let flag = Path::new("/flag.toml");
        let env = || Some(PathBuf::from("/env.toml"));
        // Nothing exists: defaults, unless a flag or the environment names one.
        assert_eq!(find(None, None, &candidates), None);
        assert_eq!(find(None, Some(PathBuf::new()), &candidates), None);
        assert_eq!(find(Some(flag), env(), &candidates), Some(flag.into()));
        assert_eq!(find(None, env(), &candidates), env());
        // The production path is found with no flags ...
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(&etc, "").unwrap();
        assert_eq!(find(None, None, &candidates), Some(etc.clone()));
        // ... unless the working directory has one, or a flag or env is given.
        std::fs::write(&local, "").unwrap();
        assert_eq!(find(None, None, &candidates), Some(local));
        assert_eq!(find(None, env(), &candidates), env());
        assert_eq!(SEARCH_PATH[1], "/etc/dnsshift/dnsshift.toml");
    }

    #[test]
    fn remote_control_needs_the_opt_in() {
        let c = parse("control_listen = \"[::]:5380\"\nallow_remote_control = true").unwrap();
        assert!(c.allow_remote_control);
        assert!(parse("control_listen = \"[::1]:5380\"").is_ok());
    }

    #[test]
    fn errors_name_line_and_key() {
        let cases = [
            (
                "listen = [\"127.0.0.1\"]",
                "dnsshift.toml:1: listen: \"127.0.0.1\" is not an address with a port",
            ),
            (
                "\n\nlog_format = \"xml\"",
                "dnsshift.toml:3: log_format: unknown log format \"xml\"",
            ),
            (
                "colour = true",
                "dnsshift.toml:1: colour: unknown key, expected one of `listen`,",
            ),
            (
                "\nserver_id = \"a\\nb\"",
                "dnsshift.toml:2: server_id: \"a\\nb\" must be at most 255 bytes",
            ),
            (
                "\ncontrol_listen = \"0.0.0.0:5380\"",
                "dnsshift.toml:2: control_listen: 0.0.0.0:5380 is not a loopback address",
            ),
            (
                "control_max_connections = 0",
                "dnsshift.toml:1: control_max_connections: 0 is not a positive number",
            ),
            (
                "control_header_timeout = \"0s\"",
                "dnsshift.toml:1: control_header_timeout: must be longer than 0s",
            ),
            (
                "[rrl]\nslip = -1",
                "dnsshift.toml:2: rrl.slip: -1 is not between 0 and 100",
            ),
            (
                "[rrl]\nexempt = [\"10.0.0.0/40\"]",
                "dnsshift.toml:2: rrl.exempt: \"10.0.0.0/40\": prefix length must be 0..=32",
            ),
            (
                "udp_workers = 0",
                "dnsshift.toml:1: udp_workers: 0 is not between 1 and 256",
            ),
            (
                "\nui = \"maybe\"",
                "dnsshift.toml:2: ui: unknown ui mode \"maybe\" (expected \"off\", \"read-only\" or \"on\")",
            ),
            (
                "ui_hosts = [\"ok.example\",\n  \"bad host\"]",
                "dnsshift.toml:2: ui_hosts: \"bad host\" is not a host name as a browser sends it",
            ),
            (
                "\nudp_rcvbuf = 10",
                "dnsshift.toml:2: udp_rcvbuf: 10 is not between 4096 and 1073741824",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "got {e}");
        }
    }

    #[test]
    fn cookie_secrets_are_read_and_each_key_has_its_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p.display().to_string()
        };
        let good = file("good", "000102030405060708090a0b0c0d0e0f\n", 0o600);
        let old = file("old", "ffffffffffffffffffffffffffffffff", 0o600);
        let short = file("short", "0001", 0o600);
        let open = file("open", "000102030405060708090a0b0c0d0e0f", 0o644);
        assert_eq!(parse("").unwrap().cookies, None);
        let c = parse(&format!(
            "[cookies]\nsecret_file = \"{good}\"\nprevious_secret_file = \"{old}\""
        ))
        .unwrap()
        .cookies
        .unwrap();
        assert_eq!(c.current[15], 15);
        assert_eq!(c.previous, Some([0xff; 16]));
        let cases = [
            (
                format!("[cookies]\n\nsecret_file = \"{short}\""),
                format!(
                    "dnsshift.toml:3: cookies.secret_file: {short} must hold 16 bytes as 32 hex digits"
                ),
            ),
            (
                format!("[cookies]\nsecret_file = \"{open}\""),
                format!(
                    "dnsshift.toml:2: cookies.secret_file: {open} has mode 0644 but must be readable by its owner only"
                ),
            ),
            (
                format!("[cookies]\nsecret_file = \"{good}\"\nprevious_secret_file = \"{dir}/none\"", dir = dir.path().display()),
                format!(
                    "dnsshift.toml:3: cookies.previous_secret_file: cannot read {}/none",
                    dir.path().display()
                ),
            ),
            (
                format!("[cookies]\nprevious_secret_file = \"{old}\""),
                "dnsshift.toml:2: cookies.previous_secret_file: is only accepted beside cookies.secret_file".to_string(),
            ),
            (
                "[cookies]\nsecret = \"00\"".to_string(),
                "dnsshift.toml:2: cookies.secret: unknown key, expected one of `secret_file`, `previous_secret_file`".to_string(),
            ),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.starts_with(&want), "got {e}\nwant {want}");
            assert_eq!(e.lines().count(), 1, "exactly one error: {e}");
        }
    }
}
