//! The `dnsshift` binary: parses arguments, sets up tracing, builds the
//! runtime, installs the signal handlers and dispatches: `serve` runs the
//! daemon, every other command goes to the CLI ([`dnsshift::cli`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use dnsshift::cli::{Args, Command, Failure, ServeArgs};
use dnsshift::config::{Config, LogFormat};

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Serve(s) => serve(args.config.as_deref(), args.control, args.token_file, s),
        command => dnsshift::cli::run(
            args.config.as_deref(),
            args.control,
            args.token_file,
            args.actor,
            command,
        ),
    };
    dnsshift::cli::exit(result)
}

/// `serve`: the config, with the command line's overrides (the global
/// `--control` and `--token-file` included: the daemon listens and keeps
/// its token where the CLI is told to look), then the daemon.
fn serve(
    config: Option<&Path>,
    control: Option<String>,
    token_file: Option<PathBuf>,
    args: ServeArgs,
) -> Result<(), Failure> {
    let mut config = Config::discover(config).map_err(|e| Failure::Usage(e.to_string()))?;
    if let Some(url) = control {
        config.set_control_url(&url).map_err(Failure::Usage)?;
    }
    if let Some(f) = token_file {
        config.control_token_file = f;
    }
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
        dnsshift::daemon::run(config, shutdown).await.map_err(|e| {
            tracing::error!(error = %e, "cannot start");
            match e {
                dnsshift::daemon::StartError::Config(_) => Failure::Usage(e.to_string()),
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
