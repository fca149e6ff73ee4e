//! The command line: subcommands, the runtime for `serve`, and the
//! control-client side of operator commands.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LogFormat};
use crate::spec::ConfigErrors;
use crate::zone;

/// Authoritative DNS that shifts traffic between old and new load balancers.
#[derive(Parser, Debug)]
#[command(name = "dnsshift", version, about)]
pub struct Args {
    /// Server config file (default: $DNSSHIFT_CONFIG, else ./dnsshift.toml if present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
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

/// Runs a parsed command line; returns the process exit code.
pub fn main(args: Args) -> ExitCode {
    match args.command {
        Command::Serve(s) => serve(args.config.as_deref(), s),
        Command::Check { path } => check(args.config.as_deref(), path.as_deref()),
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
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
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
    match zones {
        Ok(zones) => {
            let services: usize = zones.iter().map(|z| z.services.len()).sum();
            println!("ok: {} zone(s), {services} service(s)", zones.len());
            ExitCode::SUCCESS
        }
        Err(ConfigErrors(errs)) => {
            for e in &errs {
                eprintln!("{e}");
            }
            eprintln!("dnsshift: {} error(s)", errs.len());
            ExitCode::FAILURE
        }
    }
}
