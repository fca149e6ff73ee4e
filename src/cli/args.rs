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

/// Authoritative DNS that shifts traffic between old and new load balancers.
#[derive(Parser, Debug)]
#[command(name = "dnsshift", version = VERSION, about)]
pub struct Args {
    /// Server config file (default: $DNSSHIFT_CONFIG, else ./dnsshift.toml if present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Control API URL (default: from the config's control_listen).
    #[arg(long, global = true, env = "DNSSHIFT_CONTROL", value_name = "URL")]
    pub control: Option<String>,
    /// Control token file (default: from the config).
    #[arg(long, global = true, env = "DNSSHIFT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
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
        #[arg(long)]
        json: bool,
    },
    /// Move a service to its next phase (or --to a later one).
    Advance(TransitionArgs),
    /// Move a service back to its previous phase (or --to an earlier one); always allowed.
    Rollback(TransitionArgs),
    /// Take one endpoint out of the answers by hand, or put it back.
    Endpoint {
        #[command(subcommand)]
        action: EndpointAction,
    },
    /// Every phase change and override of a service.
    History {
        /// Service: its name ("www") or fully qualified name.
        service: String,
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
    },
    /// Re-read zones; a config with any error is rejected whole.
    Reload,
}

/// Arguments of `advance` and `rollback`.
#[derive(clap::Args, Debug)]
pub struct TransitionArgs {
    /// Service: its name ("www") or fully qualified name.
    pub service: String,
    /// Target phase.
    #[arg(long)]
    pub to: Option<String>,
    /// Advance even if a target pool has no healthy endpoint or the hold has not passed.
    #[arg(long)]
    pub force: bool,
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
        /// Why; recorded in history.
        #[arg(long)]
        reason: Option<String>,
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
