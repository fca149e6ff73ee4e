//! A cluster host's background work: follow etcd (the store's watcher) and
//! publish this host's report on a lease, every second and whenever it
//! applies a new state, so that commands elsewhere see it caught up.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::operator::Operator;
use crate::state::etcd::EtcdError;
use crate::state::shared::{EtcdStore, etcd_failure};

/// TTL of a host's lease: it counts as gone this long after its last renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often the report is published and the lease renewed (a fifth of
/// the TTL: a lost renewal or two do not drop the host).
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Starts following etcd and publishing this host's report; the receiver
/// fires after the first attempt to publish (so that a host is known to the
/// others before it says it is ready).
/// `compact_revisions`: also compact etcd's revisions older than that.
pub fn spawn(
    tasks: &mut tokio::task::JoinSet<()>,
    op: Arc<Operator>,
    store: Arc<EtcdStore>,
    compact_revisions: Option<Duration>,
    shutdown: CancellationToken,
) -> tokio::sync::oneshot::Receiver<()> {
    let s = store.clone();
    let stop = shutdown.clone();
    tasks.spawn(async move { s.follow(stop).await });
    let s = store.clone();
    let stop = shutdown.clone();
    tasks.spawn(async move { s.compact(stop).await });
    if let Some(keep) = compact_revisions {
        let s = store.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move { s.compact_revisions(keep, stop).await });
    }
    let (first, tried) = tokio::sync::oneshot::channel();
    tasks.spawn(publish(op, store, first, shutdown));
    tried
}

async fn publish(
    op: Arc<Operator>,
    store: Arc<EtcdStore>,
    first: tokio::sync::oneshot::Sender<()>,
    shutdown: CancellationToken,
) {
    let mut first = Some(first);
    let cluster = store.cluster().clone();
    let endpoints = cluster.etcd().endpoints().to_vec();
    let mut applied = op.applied.subscribe();
    let mut lease: Option<(i64, u64)> = None;
    let mut failing = false;
    let mut zones_failing = false;
    loop {
        // Zones whose generation etcd has not recorded yet (start-up, or a
        // reload while it was unreachable): their serial waits on it.
        if op.zones_pending() {
            let o = op.clone();
            match tokio::task::spawn_blocking(move || o.register_zones()).await {
                Ok(Err(e)) if !zones_failing => {
                    warn!(error = %e, "this host's zone generation is not recorded in etcd yet; retrying");
                    zones_failing = true;
                }
                Ok(Ok(())) => zones_failing = false,
                _ => {}
            }
        }
        let result: Result<(), EtcdError> = async {
            let (id, ttl) = match lease {
                Some((id, ttl)) => match cluster.etcd().lease_keep_alive(id).await {
                    Ok(_) => (id, ttl),
                    Err(EtcdError::LeaseExpired { .. }) => {
                        lease = None;
                        let l = cluster.etcd().lease_grant(LEASE_TTL).await?;
                        (l.id, u64::try_from(l.ttl).unwrap_or(0))
                    }
                    Err(e) => return Err(e),
                },
                None => {
                    let l = cluster.etcd().lease_grant(LEASE_TTL).await?;
                    (l.id, u64::try_from(l.ttl).unwrap_or(0))
                }
            };
            lease = Some((id, ttl));
            cluster.publish(id, &op.host_report(ttl)).await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) if failing => {
                info!("publishing this host's report to etcd again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                warn!(error = %etcd_failure(&endpoints, &e), "cannot publish this host's report");
                failing = true;
            }
            Err(_) => {}
        }
        if let Some(tried) = first.take() {
            let _ = tried.send(());
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(PUBLISH_EVERY) => {}
            changed = applied.changed() => if changed.is_err() { break },
        }
    }
    // A clean stop: the live record goes now rather than at lease expiry.
    if let Some((id, _)) = lease {
        let _ = tokio::time::timeout(Duration::from_secs(1), cluster.etcd().lease_revoke(id)).await;
    }
}
