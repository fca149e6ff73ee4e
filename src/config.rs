//! Server settings (`dnsshift.toml`): listen addresses, control address,
//! directories, logging. Every setting has a default that works for a local
//! try-out without root.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::spec::{ConfigError, Source};

/// Default DNS listen address: unprivileged, loopback.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5353));
/// Default control API address: loopback only.
pub const DEFAULT_CONTROL: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5380));

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigSpec {
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    zones_dir: Option<String>,
    state_dir: Option<String>,
    control_listen: Option<Spanned<String>>,
    control_token_file: Option<String>,
    log_format: Option<Spanned<String>>,
    log_level: Option<String>,
    tcp_idle_timeout: Option<Spanned<String>>,
    udp_fast_path: Option<bool>,
    udp_workers: Option<Spanned<i64>>,
    udp_rcvbuf: Option<Spanned<i64>>,
    tcp_max_connections: Option<Spanned<i64>>,
    rrl: Option<RrlSpec>,
}

/// `[rrl]`: response rate limiting.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RrlSpec {
    enabled: Option<bool>,
    responses_per_second: Option<Spanned<i64>>,
    slip: Option<Spanned<i64>>,
    ipv4_prefix: Option<Spanned<i64>>,
    ipv6_prefix: Option<Spanned<i64>>,
    table_size: Option<Spanned<i64>>,
    exempt: Option<Vec<Spanned<String>>>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
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
    pub rrl: crate::fast::rrl::Settings,
}

/// Default cap on DNS TCP connections per listen address.
pub const DEFAULT_TCP_MAX_CONNECTIONS: usize = 1000;

/// Default UDP receive buffer: room for a few milliseconds of a flood at
/// line rate, so bursts are not dropped while a worker is busy.
pub const DEFAULT_UDP_RCVBUF: usize = 4 << 20;
/// Most fast-path workers per listen address.
pub const MAX_UDP_WORKERS: i64 = 256;

impl Config {
    /// Defaults, relative to the working directory.
    pub fn defaults() -> Config {
        // An empty spec sets nothing, so nothing can be rejected.
        Self::from_spec(None, ConfigSpec::default()).unwrap_or_else(|_| unreachable!())
    }

    /// Reads a config file. Relative directories are taken relative to the
    /// working directory, like command-line paths.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = Source::read(path)?;
        let spec: ConfigSpec = src.parse()?;
        Self::from_spec(Some(&src), spec)
    }

    /// The config from `--config`, else `$DNSSHIFT_CONFIG`, else
    /// `./dnsshift.toml` if it exists, else defaults.
    pub fn discover(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        if let Some(p) = explicit {
            return Self::load(p);
        }
        if let Some(p) = std::env::var_os("DNSSHIFT_CONFIG") {
            return Self::load(Path::new(&p));
        }
        let local = Path::new("dnsshift.toml");
        if local.exists() {
            return Self::load(local);
        }
        Ok(Self::defaults())
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
        let control_listen = match &spec.control_listen {
            Some(a) => addr(a, "control_listen")?,
            None => DEFAULT_CONTROL,
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
        let tcp_idle_timeout = match (&spec.tcp_idle_timeout, src) {
            (Some(d), Some(s)) => s.duration(d, "tcp_idle_timeout")?,
            _ => crate::dns::TCP_IDLE_TIMEOUT,
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
        let rrl = crate::fast::rrl::Settings {
            enabled: rrl_spec.enabled.unwrap_or(true),
            responses_per_second: int(
                &rrl_spec.responses_per_second,
                "rrl.responses_per_second",
                1..=1_000_000,
                crate::fast::rrl::DEFAULT_RATE,
            )? as u32,
            slip: int(
                &rrl_spec.slip,
                "rrl.slip",
                0..=100,
                crate::fast::rrl::DEFAULT_SLIP,
            )? as u32,
            ipv4_prefix: int(&rrl_spec.ipv4_prefix, "rrl.ipv4_prefix", 8..=32, 24)? as u8,
            ipv6_prefix: int(&rrl_spec.ipv6_prefix, "rrl.ipv6_prefix", 16..=128, 56)? as u8,
            table_size: int(
                &rrl_spec.table_size,
                "rrl.table_size",
                1..=1 << 24,
                crate::fast::rrl::DEFAULT_TABLE_SIZE,
            )?,
            exempt: match &rrl_spec.exempt {
                None => crate::fast::rrl::DEFAULT_EXEMPT.to_vec(),
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
        let state_dir = PathBuf::from(spec.state_dir.unwrap_or_else(|| "state".into()));
        Ok(Config {
            file: src.map(|s| s.path.clone()),
            listen,
            zones_dir: PathBuf::from(spec.zones_dir.unwrap_or_else(|| "zones".into())),
            control_token_file: spec
                .control_token_file
                .map(PathBuf::from)
                .unwrap_or_else(|| state_dir.join("control.token")),
            state_dir,
            control_listen,
            log_format,
            log_level: spec.log_level.unwrap_or_else(|| "info".into()),
            tcp_idle_timeout,
            udp_fast_path: spec.udp_fast_path.unwrap_or(true),
            udp_workers,
            udp_rcvbuf,
            tcp_max_connections,
            rrl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let src = Source {
            path: "dnsshift.toml".into(),
            text: text.into(),
        };
        let spec: ConfigSpec = src.parse()?;
        Config::from_spec(Some(&src), spec)
    }

    #[test]
    fn defaults_work_without_root() {
        let c = Config::defaults();
        assert_eq!(c.listen, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(c.control_listen.to_string(), "127.0.0.1:5380");
        assert_eq!(c.control_token_file, PathBuf::from("state/control.token"));
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
            ("colour = true", "dnsshift.toml:1: unknown field `colour`"),
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
                "\nudp_rcvbuf = 10",
                "dnsshift.toml:2: udp_rcvbuf: 10 is not between 4096 and 1073741824",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "got {e}");
        }
    }
}
