//! The command-line definitions (clap), apart from the code that runs them so
//! that `build.rs` can include this file to generate man pages and shell
//! completions from the same source.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::LogFormat;

/// `dnsshift --version`: the package version and the git commit it was built
/// from, set by `build.rs` (the bare package version while build.rs itself
/// compiles this file).
const VERSION: &str = match option_env!("DNSSHIFT_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

/// What `--help` says about exit codes (the README has the same table).
const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  done
  1  refused by the daemon (hold, health, drain, conflict) or failed there
  2  usage error or invalid config
  3  daemon unreachable or control token rejected";

/// Authoritative DNS that shifts traffic between old and new load balancers.
#[derive(Parser, Debug)]
#[command(name = "dnsshift", version = VERSION, about, after_help = EXIT_CODES_HELP)]
pub struct Args {
    /// Server config file; relative paths in it are taken from its
    /// directory (default: $DNSSHIFT_CONFIG, else ./dnsshift.toml, else
    /// /etc/dnsshift/dnsshift.toml, else built-in defaults).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Control API URL: where commands connect, and where `serve` listens
    /// (http://ADDR:PORT; default: from the config's control_listen).
    #[arg(long, global = true, env = "DNSSHIFT_CONTROL", value_name = "URL")]
    pub control: Option<String>,
    /// Control token file: the one commands send, and the one `serve`
    /// creates or reads (default: from the config).
    #[arg(long, global = true, env = "DNSSHIFT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Who runs a command, recorded in history with the host that executed
    /// it (default: your login name). Informational: not authenticated.
    #[arg(long, global = true, env = "DNSSHIFT_ACTOR", value_name = "NAME")]
    pub actor: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Validate zones and config; errors name file, line and key.
    Check {
        /// A zone file or a zones directory (default: the configured zones directory).
        path: Option<PathBuf>,
    },
    /// Phase, weights, endpoints, split served in the last minute, drain.
    Status {
        /// Only this service.
        service: Option<String>,
        /// Machine-readable output (see the README for the format).
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Print one line per problem (fail-open, an endpoint down, a weighted
        /// pool unusable, a lagging or gone host, etcd unreachable) and exit
        /// 1 if there is any, 0 if every service is answered normally and
        /// every host is in sync.
        #[arg(long, conflicts_with_all = ["watch", "json"])]
        check: bool,
        /// Redraw in place every --interval until Ctrl-C (at most a day).
        #[arg(long)]
        watch: bool,
        /// Time between redraws with --watch ("2s", "500ms"; at least 200ms).
        #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = watch_interval)]
        interval: std::time::Duration,
        /// With --watch: stop after this many redraws.
        #[arg(long, value_name = "N", requires = "watch")]
        count: Option<u64>,
    },
    /// Move a service to its next phase (or --to a later one, naming the
    /// phases it skips); refused before the current phase's hold has passed
    /// or when a pool the target phase weights has no healthy endpoint,
    /// unless --force.
    Advance(AdvanceArgs),
    /// Move a service back to its previous phase (or --to an earlier one),
    /// whatever the hold and health; refused only in the first phase and
    /// into a phase that weights a decommissioned pool (recommission it
    /// first).
    Rollback(TransitionArgs),
    /// Take one endpoint out of the answers by hand, or put it back.
    Endpoint {
        #[command(subcommand)]
        action: EndpointAction,
    },
    /// Every phase change and override, of one service or of all (newest
    /// last): the most recent 1,000, or every one kept with --all.
    History {
        /// Service: its name ("www") or fully qualified name; default all.
        service: Option<String>,
        /// Every event kept (the rotated history files too), not only the
        /// most recent 1,000.
        #[arg(long)]
        all: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Never answer a pool again, not even as standby (after its drain).
    Decommission {
        /// Service: its name ("www") or fully qualified name.
        service: String,
        /// Pool name ("old").
        pool: String,
        /// Decommission before the drain deadline plus grace has passed.
        #[arg(long)]
        force: bool,
        /// Why; recorded in history.
        #[arg(long)]
        reason: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Undo a decommission: the pool is answered again as weights and health say.
    Recommission {
        /// Service: its name ("www") or fully qualified name.
        service: String,
        /// Pool name ("old").
        pool: String,
        /// Why; recorded in history.
        #[arg(long)]
        reason: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Automatic progression (issue 17): start, pause or resume it.
    Auto {
        #[command(subcommand)]
        action: AutoCommand,
    },
    /// Evaluate every check of a service now against its provider (a dry
    /// run): each query, value, rule and verdict; exits 1 when a query is
    /// invalid or the provider fails.
    Analysis {
        /// Service: its name ("www") or fully qualified name.
        service: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Re-read zones; a config with any error is rejected whole.
    Reload {
        /// Validate as a reload does and print what would change (services,
        /// pools, endpoints, phases, TTLs, static records); apply nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Several nameservers sharing one state on etcd (`[cluster]`).
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// DNSSEC keys of signed zones (`[zone.dnssec]`).
    Dnssec {
        #[command(subcommand)]
        action: DnssecAction,
    },
    /// The DNS cookie secret (`[cookies]`).
    Cookies {
        #[command(subcommand)]
        action: CookiesAction,
    },
}

/// `cookies` subcommands.
#[derive(Subcommand, Debug)]
pub enum CookiesAction {
    /// Replace the DNS cookie secret now (in a cluster, on every host); the
    /// current one stays accepted as the previous. Refused when the secret
    /// is read from `[cookies] secret_file`.
    Rotate {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `dnssec` subcommands.
#[derive(Subcommand, Debug)]
pub enum DnssecAction {
    /// Write a new signing key (PKCS#8 PEM, mode 0600) and print its key tag.
    Keygen {
        /// The key file to create (never overwritten).
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// Key algorithm: ecdsap256sha256 (13) or ed25519 (15).
        #[arg(long, value_name = "ALGORITHM", default_value = "ecdsap256sha256")]
        algorithm: String,
    },
    /// Print the DS records (SHA-256) of a zone's signing keys, for the parent,
    /// read from the zone files (no daemon needed).
    Ds {
        /// The zone's origin ("shift.example.com.").
        origin: String,
    },
    /// The running daemon's signed zones: keys, tags, states, signatures and
    /// the earliest signature expiry.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `auto` subcommands.
#[derive(Subcommand, Debug)]
pub enum AutoCommand {
    /// Start automation in the current phase; a failure rolls back to it.
    Start(AutoArgs),
    /// Stop advancing and rolling back; the weights stay.
    Pause(AutoArgs),
    /// Continue a paused or failed automation from the current phase.
    Resume(AutoArgs),
}

/// Arguments of every `auto` subcommand.
#[derive(clap::Args, Debug)]
pub struct AutoArgs {
    /// Service: its name ("www") or fully qualified name.
    pub service: String,
    /// Why; recorded in history.
    #[arg(long)]
    pub reason: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `cluster` subcommands.
#[derive(Subcommand, Debug)]
pub enum ClusterAction {
    /// Move a single host's state file into etcd (talks to etcd directly,
    /// with the config's [cluster] table); refused if the cluster already
    /// holds state for one of its services, unless --force.
    Import {
        /// The state file (default: state.json in the configured state directory).
        state_file: Option<PathBuf>,
        /// Replace the cluster's state of those services.
        #[arg(long)]
        force: bool,
    },
    /// Remove a host gone for good (decommissioned, renamed) from the
    /// cluster's records: it no longer shows in status nor counts for drain
    /// deadlines. Talks to etcd directly; refused while the host is alive.
    Forget {
        /// The host's node id, as `status` lists it.
        node: String,
    },
}

/// Shortest `status --watch` interval: a watch is a person looking, not a poller.
const MIN_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

fn watch_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < MIN_WATCH_INTERVAL {
        return Err(format!(
            "at least {} between redraws",
            humantime::format_duration(MIN_WATCH_INTERVAL)
        ));
    }
    Ok(d)
}

/// Arguments of `advance`: those of every transition, and `--force`.
#[derive(clap::Args, Debug)]
pub struct AdvanceArgs {
    #[command(flatten)]
    pub transition: TransitionArgs,
    /// Advance even if a target pool has no healthy endpoint or the hold has not passed.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `advance` and `rollback`.
#[derive(clap::Args, Debug)]
pub struct TransitionArgs {
    /// Service: its name ("www") or fully qualified name.
    pub service: String,
    /// Target phase.
    #[arg(long, value_name = "PHASE")]
    pub to: Option<String>,
    /// Show what would be served, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Why; recorded in history.
    #[arg(long)]
    pub reason: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `endpoint` subcommands.
#[derive(Subcommand, Debug)]
pub enum EndpointAction {
    /// Take an endpoint out of the answers, whatever its health.
    Disable {
        /// Service: its name ("www") or fully qualified name.
        service: String,
        /// Endpoint as written in the zone file.
        endpoint: String,
        /// Disable even if that leaves a pool that answers now without a usable endpoint.
        #[arg(long)]
        force: bool,
        /// Why; recorded in history.
        #[arg(long)]
        reason: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Put an endpoint back (its health decides again).
    Enable {
        /// Service: its name ("www") or fully qualified name.
        service: String,
        /// Endpoint as written in the zone file.
        endpoint: String,
        /// Why; recorded in history.
        #[arg(long)]
        reason: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Options of `serve`; each overrides the config file.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// DNS address (UDP and TCP); repeat for several.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// Directory of zone files.
    #[arg(long, value_name = "DIR")]
    pub zones: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}
