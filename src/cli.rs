//! The command line: the clap definitions (`args`), `check`, and the
//! client side of operator commands (`client`: the typed operator
//! protocol over HTTP) with their human rendering ([`render`]). `serve` is
//! dispatched by the binary (`main.rs`) to `daemon::run`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::Config;
use crate::config::source::ConfigErrors;
use crate::zone;

mod args;
mod client;
mod dnssec;
mod import;
mod problems;
pub mod render;
pub use args::{
    AdvanceArgs, Args, AutoArgs, AutoCommand, ClusterAction, Command, CookiesAction, DnssecAction,
    EndpointAction, ServeArgs, TransitionArgs,
};
pub use render::{render_history, render_status};

/// Runs every command but `serve`; the binary passes what it parsed.
pub fn run(
    config: Option<&Path>,
    control: Option<String>,
    token_file: Option<PathBuf>,
    actor: Option<String>,
    command: Command,
) -> Result<(), Failure> {
    match command {
        Command::Check { path } => check(config, path.as_deref()),
        Command::Cluster {
            action: ClusterAction::Import { state_file, force },
        } => import::import(config, state_file.as_deref(), force),
        Command::Cluster {
            action: ClusterAction::Forget { node },
        } => import::forget(config, &node),
        Command::Dnssec {
            action: DnssecAction::Keygen { out, algorithm },
        } => dnssec::keygen(&out, &algorithm),
        Command::Dnssec {
            action: DnssecAction::Ds { origin },
        } => dnssec::ds(config, &origin),
        command => client::Client::new(config, control, token_file)
            // A login name the daemon would refuse (a directory user's
            // "John Smith") is left out rather than blocking every command;
            // an --actor given by hand is sent as given, to be refused.
            .and_then(|c| {
                let login = || {
                    client::login_name()
                        .filter(|n| crate::api::BadActor::check(&Some(n.clone())).is_ok())
                };
                c.run(command, actor.or_else(login))
            }),
    }
}

/// The exit code of a command's result, printing the failure's message.
pub fn exit(result: Result<(), Failure>) -> ExitCode {
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

    /// The message to print, if any.
    pub fn message(&self) -> Option<&str> {
        let (Failure::Refused(m) | Failure::Usage(m) | Failure::Unreachable(m)) = self;
        Some(m.as_str()).filter(|m| !m.is_empty())
    }
}

fn check(config: Option<&Path>, path: Option<&Path>) -> Result<(), Failure> {
    let config = Config::discover(config).map_err(report)?;
    // The configured zones directory is a directory even when missing, so
    // that the error says so.
    let zones = match path {
        Some(file) if !file.is_dir() => zone::load_file(file).map(|z| vec![z]),
        dir => zone::load_dir(dir.unwrap_or(&config.zones_dir)),
    };
    let zones = zones.map_err(report)?;
    // Phases whose weighted pools differ in address families.
    for z in &zones {
        for s in &z.services {
            for phase in 0..s.phases.len() {
                if let Some(w) = crate::answer::family_warning(s, phase) {
                    eprintln!("warning: {}: service {:?}: {w}", z.file.display(), s.short);
                }
            }
        }
    }
    // DNSSEC rollover steps that come too soon after the recorded ones.
    let now = crate::clock::unix_ms() / 1000;
    for w in crate::state::dnssec_keys::KeyHistory::read(&config.state_dir).warnings(&zones, now) {
        eprintln!("warning: {w}");
    }
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

/// `check`'s report of config or zone errors: one per line, then the count.
fn report(ConfigErrors(errs): ConfigErrors) -> Failure {
    for e in &errs {
        eprintln!("{e}");
    }
    Failure::Usage(format!("{} error(s)", errs.len()))
}
