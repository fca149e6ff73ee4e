//! Wiring and lifecycle only: load config, zones and state, bind sockets,
//! start health checks, build the first answer plan, run the DNS and
//! control servers until shutdown, then drain with a deadline. Every
//! command and status lives in [`crate::operator`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::clock::SystemClock;
use crate::config::Config;
use crate::control;
use crate::dns::{self, Handler, Listener};
use crate::health::{self, Checker};
use crate::operator::cookies::CookieKeeper;
use crate::operator::{self, Operator};
use crate::state::cluster::{Cluster, Layout};
use crate::state::etcd::Etcd;
use crate::state::shared::EtcdStore;
use crate::state::{FileStore, StateStore};

mod publish;

/// Extra time allowed for the first health round beyond the longest timeout.
const FIRST_ROUND_SLACK: Duration = Duration::from_secs(1);
/// Longest wait for this host's first report to etcd before ready.
const FIRST_PUBLISH_WAIT: Duration = Duration::from_secs(3);
/// How long shutdown waits for in-flight work.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Zones or config are invalid.
    #[error("{0}")]
    Config(#[from] crate::config::source::ConfigErrors),
    /// State is unreadable or does not match the zones.
    #[error("{0}")]
    State(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// Anything else that stops start-up.
    #[error("{0}")]
    Other(String),
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let (store, shared): (Arc<dyn StateStore>, Option<Arc<EtcdStore>>) = match &config.cluster {
        None => (Arc::new(FileStore::new(&config.state_dir)), None),
        Some(c) => {
            let opts = c
                .etcd_options()
                .map_err(|e| StartError::Other(e.to_string()))?;
            let etcd = Etcd::new(opts).map_err(|e| StartError::Other(e.to_string()))?;
            let cluster = Cluster::new(etcd, Layout::new(&c.prefix), c.node.clone());
            let s = Arc::new(EtcdStore::new(
                cluster,
                &config.state_dir,
                tokio::runtime::Handle::current(),
            ));
            info!(node = %c.node, etcd = %c.endpoints.join(", "), prefix = %c.prefix, "shared state on etcd");
            (s.clone(), Some(s))
        }
    };
    // A shared store waits on etcd: off the async threads.
    let loaded = {
        let (zones_dir, store) = (config.zones_dir.clone(), store.clone());
        tokio::task::spawn_blocking(move || operator::load_all(&zones_dir, &*store))
            .await
            .map_err(|e| StartError::Other(e.to_string()))?
            .map_err(StartError::State)?
    };
    raise_nofile_limit();
    let mut listeners = Vec::new();
    for addr in &config.listen {
        let udp_sockets = if config.udp_fast_path {
            config.udp_workers
        } else {
            1
        };
        let l = dns::bind(*addr, udp_sockets, config.udp_rcvbuf).map_err(|source| {
            StartError::Bind {
                addr: *addr,
                source,
            }
        })?;
        listeners.push(l);
    }
    for Listener { udp, tcp, rcvbuf } in &listeners {
        let udp_addr = udp.first().and_then(|u| u.local_addr().ok());
        info!(
            udp = %udp_addr.map(|a| a.to_string()).unwrap_or_default(),
            tcp = %tcp.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            udp_sockets = udp.len(),
            fast_path = config.udp_fast_path,
            "dns listening"
        );
        // Linux reports twice what it grants (the other half is overhead).
        if *rcvbuf < config.udp_rcvbuf {
            warn!(
                requested = config.udp_rcvbuf,
                granted = rcvbuf,
                "udp receive buffer capped by the kernel; raise net.core.rmem_max (or grant CAP_NET_ADMIN) for the requested size"
            );
        } else {
            info!(
                requested = config.udp_rcvbuf,
                granted = rcvbuf,
                "udp receive buffer"
            );
        }
    }
    let control_listener = tokio::net::TcpListener::bind(config.control_listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.control_listen,
            source,
        })?;
    let control_addr = control_listener
        .local_addr()
        .map_err(|e| StartError::Other(e.to_string()))?;
    info!(addr = %control_addr, "control listening");
    if config.allow_remote_control {
        warn!(addr = %control_addr, "allow_remote_control is set: the control API may listen beyond loopback, and its plain-HTTP bearer token can then be read on the network; firewall it");
    }
    let token = control::load_or_create_token(&config.control_token_file).map_err(|e| {
        StartError::Other(format!(
            "cannot read or create the control token {}: {e}",
            config.control_token_file.display()
        ))
    })?;

    for z in &loaded.0 {
        info!(origin = %z.origin, file = %z.file.display(), services = z.services.len(), "zone loaded");
    }
    let checker = Arc::new(Checker::new().map_err(StartError::Other)?);
    let health_table = Arc::new(health::Table::default());
    let health_changed = Arc::new(Notify::new());
    let checks = health::Checks::new(
        checker,
        health_table.clone(),
        health_changed.clone(),
        shutdown.clone(),
    )
    .map_err(|e| StartError::Other(format!("cannot start the health-check thread: {e}")))?;
    let store_changes = store.changes();
    let elector = shared.as_ref().zip(config.cluster.as_ref()).map(|(s, c)| {
        Arc::new(crate::state::elect::Elector::new(
            s.cluster().clone(),
            &c.node,
        ))
    });
    let cookies = Arc::new(CookieKeeper::new(
        config.cookie_rotate,
        shared.as_ref().map(|s| {
            (
                s.cluster().clone(),
                config.state_dir.as_path(),
                tokio::runtime::Handle::current(),
            )
        }),
    ));
    let op = Operator::new(
        config.zones_dir.clone(),
        config.file.clone(),
        loaded,
        Box::new(store),
        checks,
        health_table,
        Arc::new(SystemClock),
    )
    .identified(
        config
            .cluster
            .as_ref()
            .map_or(&config.server_id, |c| &c.node),
        config.cluster.is_some(),
    )
    .with_key_history(&config.state_dir)
    .with_cookies(cookies.clone());
    let op = Arc::new(match &elector {
        Some(e) => op.elected(e.clone()),
        None => op,
    });
    op.rebuild();
    let datapath = Arc::new(dns::fast::Counters::default());

    let ui = crate::ui::Settings::new(
        config.ui,
        control_listener
            .local_addr()
            .unwrap_or(config.control_listen),
        &config.ui_hosts,
    );
    let control_task = control::spawn(
        control_listener,
        op.clone(),
        datapath.clone(),
        token,
        config.control_limits,
        ui,
        shutdown.clone(),
    )
    .map_err(|e| StartError::Other(format!("cannot start the control server: {e}")))?;

    // Health: first round before ready, bounded by the longest timeout.
    let zones_now = op.zones();
    let longest = health::targets(&zones_now)
        .iter()
        // The first probe waits up to interval/10 (jitter), then its timeout.
        .map(|(_, c)| c.interval / 10 + c.timeout)
        .max()
        .unwrap_or_default();
    let first_round = op.start_checks();
    let endpoints = health::targets(&zones_now).len();
    tokio::select! {
        _ = first_round => info!(endpoints, "first health round done"),
        _ = tokio::time::sleep(longest + FIRST_ROUND_SLACK) => warn!(endpoints, "first health round timed out"),
        _ = shutdown.cancelled() => {}
    }
    op.rebuild();
    // Every task the daemon starts from here on, drained together.
    let mut tasks = tokio::task::JoinSet::new();
    spawn_background(
        &mut tasks,
        op.clone(),
        health_changed,
        store_changes,
        shutdown.clone(),
    );
    spawn_evaluator(&mut tasks, op.clone(), shutdown.clone());
    if let Some(e) = elector {
        let (o, stop) = (op.clone(), shutdown.clone());
        tasks.spawn(async move {
            let services = || {
                o.zones()
                    .iter()
                    .flat_map(|z| &z.services)
                    .filter(|s| s.analysis.is_some())
                    .map(|s| s.key())
                    .collect()
            };
            e.run(services, stop).await;
        });
    }
    if let Some(shared) = &shared {
        let first = publish::spawn(
            &mut tasks,
            op.clone(),
            shared.clone(),
            config.cluster.as_ref().and_then(|c| c.compact_revisions),
            shutdown.clone(),
        );
        // Known to the other hosts before ready, so that a command there
        // waits for this one; never held up long by etcd.
        if tokio::time::timeout(FIRST_PUBLISH_WAIT, first)
            .await
            .is_err()
        {
            warn!("the first report to etcd is taking long; going on");
        }
    }

    // Serve DNS only now: the sockets were bound before the health round, so
    // queries that arrived meanwhile wait in the kernel's queues and get
    // answers that already reflect health.
    // The cookie secret: the configured one, else the cluster's (made
    // here if this is the first host), else a random one made now.
    cookies
        .start(
            config.cookies,
            shared.as_ref().is_some_and(|s| s.serving_local_copy()),
        )
        .await;
    {
        let (k, stop) = (cookies.clone(), shutdown.clone());
        let seen = shared.as_ref().map(|s| s.cookie_secret());
        tasks.spawn(async move { k.run(seen, stop).await });
    }
    let handler = Arc::new(Handler::new(op.plan.clone()).with_server_id(&config.server_id));
    let mut udp_workers = Vec::new();
    let fallback = dns::fallback::Fallback::new(
        handler.clone(),
        Arc::new(dns::rrl::Rrl::new(config.rrl.clone())),
        datapath.clone(),
        tokio::runtime::Handle::current(),
    );
    let tcp_limits = dns::tcp::Limits {
        max_connections: tcp_cap(&config, endpoints, listeners.len()),
        idle_timeout: config.tcp_idle_timeout,
    };
    datapath
        .tcp_max_connections
        .store(tcp_limits.max_connections as u64, Ordering::Relaxed);
    for Listener { udp, tcp, .. } in listeners {
        if config.udp_fast_path {
            let threads = dns::udp::spawn(udp, op.plan.clone(), fallback.clone(), shutdown.clone())
                .map_err(|e| StartError::Other(format!("cannot start udp workers: {e}")))?;
            udp_workers.extend(threads);
        } else {
            // UDP without the fast path runs our own loop (it never
            // answers a response either); TCP is ours in both cases.
            for u in udp {
                let u = u
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::UdpSocket::from_std(u))
                    .map_err(|e| StartError::Other(format!("cannot register udp socket: {e}")))?;
                let (handler, stop) = ((*handler).clone(), shutdown.clone());
                tasks.spawn(async move {
                    if let Err(e) = dns::serve_udp(u, handler, stop.clone()).await {
                        error!(error = %e, "dns udp socket failed; shutting down");
                        stop.cancel();
                    }
                });
            }
        }
        tasks.spawn(dns::tcp::serve(
            tcp,
            handler.clone(),
            tcp_limits,
            datapath.clone(),
            shutdown.clone(),
        ));
    }

    let services: usize = zones_now.iter().map(|z| z.services.len()).sum();
    info!(
        zones = zones_now.len(),
        services,
        serial = op.plan.load().serial,
        "ready"
    );
    notify(&[sd_notify::NotifyState::Ready]);

    shutdown.cancelled().await;
    info!("shutting down");
    notify(&[sd_notify::NotifyState::Stopping]);
    // Workers see the token within their receive timeout.
    tasks.spawn_blocking(move || {
        for t in udp_workers {
            let _ = t.join();
        }
    });
    tasks.spawn(async move {
        if let Ok(Err(e)) = control_task.await {
            error!(error = %e, "control server stopped with an error");
        }
    });
    let drained = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        warn!(
            left = tasks.len(),
            "tasks did not stop within the grace period"
        );
    }
    // Nothing to persist here: every command was saved (fsync, rename,
    // directory fsync) before it was acknowledged. Rewriting the file now
    // could race an operation still finishing and store an older state.
    info!("stopped");
    Ok(())
}

/// The DNS TCP connection cap per listen address: the configured one, or
/// what the descriptor limit leaves after the descriptors open now and a
/// reserve for the control server's connections and one per health-checked
/// endpoint (logged either way).
fn tcp_cap(config: &Config, checked_endpoints: usize, listeners: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let configured = config.tcp_max_connections;
    let Ok((nofile, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return configured;
    };
    let open = dns::tcp::open_descriptors();
    let reserved = (config.control_limits.max_connections + checked_endpoints) as u64;
    let cap = dns::tcp::effective_cap(configured, nofile, open, reserved, listeners);
    if cap < configured {
        warn!(
            configured,
            cap,
            nofile,
            open,
            reserved,
            "the descriptor limit leaves room for fewer DNS TCP connections than tcp_max_connections: capped (raise LimitNOFILE= to lift it)"
        );
    } else {
        info!(cap, nofile, open, reserved, "dns tcp connection cap");
    }
    cap
}

/// Raises the soft limit on open descriptors to the hard limit (systemd
/// starts services at 1024), so the TCP connection cap, not the descriptor
/// limit, bounds DNS TCP.
fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!(from = soft, to = hard, "raised the open file limit"),
            Err(error) => warn!(%error, soft, "cannot raise the open file limit"),
        },
        Ok(_) => {}
        // The systemd unit filters @resources and sets LimitNOFILE= itself.
        Err(error) => debug!(%error, "cannot read the open file limit"),
    }
}

/// Rebuilds on health changes, reloads state changed elsewhere, samples
/// counters, pings the watchdog, reloads on SIGHUP: tasks in `tasks`.
fn spawn_background(
    tasks: &mut tokio::task::JoinSet<()>,
    op: Arc<Operator>,
    health_changed: Arc<Notify>,
    mut store_changes: tokio::sync::watch::Receiver<crate::state::Epoch>,
    shutdown: CancellationToken,
) {
    let s = op.clone();
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // Signed zones: a rebuild at least this often refreshes signatures
        // that are getting old, even when nothing else changes.
        let every = crate::dnssec::REBUILD_INTERVAL;
        let mut resign = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = resign.tick() => {
                    let s2 = s.clone();
                    let _ = tokio::task::spawn_blocking(move || s2.rebuild()).await;
                }
                // A rebuild encodes every wire answer: not on a worker
                // of the runtime that also serves DNS TCP and the fallback.
                _ = health_changed.notified() => {
                    let s2 = s.clone();
                    let _ = tokio::task::spawn_blocking(move || s2.rebuild()).await;
                }
                _ = tick.tick() => s.sample(),
                // The local file store never fires; a shared store does.
                Ok(()) = store_changes.changed() => {
                    let s2 = s.clone();
                    let epoch = *store_changes.borrow_and_update();
                    let _ = tokio::task::spawn_blocking(move || s2.refresh_to(epoch)).await;
                }
            }
        }
    });
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        let period = Duration::from_micros(usec) / 2;
        info!(period = ?period, "systemd watchdog enabled");
        let stop = shutdown.clone();
        let plan = op.plan.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {
                        // Alive means the runtime schedules us and a plan is published.
                        let _ = plan.load().serial;
                        notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                }
            }
        });
    }
    let s = op;
    // Installed here, before "ready" is announced, not inside the task: a
    // SIGHUP that arrives before the task first runs would otherwise get
    // the default action and end the process.
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        error!("cannot install the SIGHUP handler");
        return;
    };
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hup.recv() => {
                    info!(signal = "SIGHUP", "reload requested");
                    let s2 = s.clone();
                    // Reading zone files is blocking I/O.
                    let _ = tokio::task::spawn_blocking(move || s2.reload()).await;
                }
            }
        }
    });
}

/// The evaluator of automatic progression (issue 17) and its webhook
/// sender, in `tasks`.
fn spawn_evaluator(
    tasks: &mut tokio::task::JoinSet<()>,
    op: Arc<Operator>,
    shutdown: CancellationToken,
) {
    use crate::analysis::runner;
    let zones_of = op.clone();
    let urls = Arc::new(move |service: &str| {
        zones_of
            .zones()
            .iter()
            .flat_map(|z| &z.services)
            .find(|s| s.key() == service)
            .and_then(|s| s.analysis.as_ref())
            .map(|a| a.notify.clone())
            .unwrap_or_default()
    });
    let board = op.board.clone();
    tasks.spawn(async move {
        let notifier = runner::Notifier::start(urls, shutdown.clone());
        runner::run(op, board, Arc::new(SystemClock), notifier, shutdown).await;
    });
}

/// Sends a notification to systemd if it is listening (NOTIFY_SOCKET).
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        warn!(error = %e, "cannot notify systemd");
    }
}
