//! Wiring and lifecycle: load config and zones, bind sockets, build the
//! first plan, run the DNS server until shutdown.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hickory_server::Server;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::answer::{ConfigOnly, Plan, Stats, next_serial};
use crate::config::Config;
use crate::dns::{self, Handler, Listener};
use crate::zone::{self, Zone};

/// Everything the daemon's tasks share. The DNS path only reads `plan`.
pub struct Shared {
    /// Server settings.
    pub config: Config,
    /// Current zones; replaced whole by a successful reload.
    pub zones: Mutex<Arc<Vec<Zone>>>,
    /// Counters that outlive plans.
    pub stats: Arc<Stats>,
    /// The answer snapshot the DNS handler reads.
    pub plan: Arc<ArcSwap<Plan>>,
    serial: Mutex<u32>,
}

impl Shared {
    /// Builds the state for validated config and zones; the first plan is built too.
    pub fn new(config: Config, zones: Vec<Zone>) -> Arc<Shared> {
        let shared = Arc::new(Shared {
            config,
            zones: Mutex::new(Arc::new(zones)),
            stats: Arc::default(),
            plan: Arc::new(ArcSwap::from_pointee(Plan::empty())),
            serial: Mutex::new(0),
        });
        shared.rebuild();
        shared
    }

    /// Rebuilds the answer plan from the current inputs and swaps it in.
    pub fn rebuild(&self) {
        let zones = lock(&self.zones).clone();
        let mut serial = lock(&self.serial);
        *serial = next_serial(*serial, unix_now());
        let plan = Plan::build(&zones, &ConfigOnly, &self.stats, *serial);
        self.plan.store(Arc::new(plan));
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Zones or config are invalid.
    #[error("{0}")]
    Config(#[from] crate::spec::ConfigErrors),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let zones = zone::load_dir(&config.zones_dir)?;
    let mut listeners = Vec::new();
    for addr in &config.listen {
        let l = dns::bind(*addr).map_err(|source| StartError::Bind {
            addr: *addr,
            source,
        })?;
        listeners.push(l);
    }
    for Listener { udp, tcp } in &listeners {
        info!(
            udp = %udp.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            tcp = %tcp.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            "dns listening"
        );
    }
    let services: usize = zones.iter().map(|z| z.services.len()).sum();
    for z in &zones {
        info!(origin = %z.origin, file = %z.file.display(), services = z.services.len(), "zone loaded");
    }
    let shared = Shared::new(config, zones);
    info!(zones = lock(&shared.zones).len(), services, "ready");

    let mut server = Server::new(Handler::new(shared.plan.clone()));
    for Listener { udp, tcp } in listeners {
        server.register_socket(udp);
        server.register_listener(
            tcp,
            shared.config.tcp_idle_timeout,
            dns::TCP_RESPONSE_BUFFER,
        );
    }
    let server_token = server.shutdown_token().clone();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = server_token.cancelled() => {}
    }
    info!("shutting down");
    if let Err(e) = server.shutdown_gracefully().await {
        error!(error = %e, "dns server stopped with an error");
    }
    Ok(())
}
