//! Who evaluates a service's automatic progression in a cluster (issue
//! 17): one host per service, elected with an etcd lease. Each host keeps
//! an election lease of its own alive and campaigns for every service
//! with an analysis: `<prefix>/auto/<service>/evaluator` is created on the
//! lease if it does not exist. The holder evaluates; its automatic commits
//! are fenced by the key and the lease ([`Elector::fence`]), so a host
//! that lost its lease (stopped past the TTL, cut off from etcd) commits
//! nothing even before it notices. When a holder dies its lease expires,
//! the key goes, and another host takes it within the TTL plus one round.
//! The evaluator also keeps its consecutive counts under
//! `<prefix>/auto/<service>/counters`, so the next one starts from them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::cluster::Cluster;
use super::etcd::{CasOutcome, EtcdError, Put};
use crate::sync::lock;

/// TTL of the election lease: a dead evaluator is replaced this long
/// after its last renewal (plus one [`ROUND`]).
pub const ELECTION_TTL: Duration = Duration::from_secs(3);
/// How often the lease is renewed and every service campaigned for.
pub const ROUND: Duration = Duration::from_millis(500);

/// This host's part in the elections.
pub struct Elector {
    cluster: Cluster,
    node: String,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The election lease, while it is believed alive.
    lease: Option<i64>,
    /// Services whose key this host holds, on `lease`.
    held: BTreeMap<String, i64>,
    /// The holder of each service's key, as last read.
    holders: BTreeMap<String, String>,
}

impl Elector {
    pub fn new(cluster: Cluster, node: &str) -> Elector {
        Elector {
            cluster,
            node: node.to_string(),
            inner: Mutex::default(),
        }
    }

    /// The fence of `service`'s automatic commits: its key and this host's
    /// lease, while this host holds it.
    pub fn fence(&self, service: &str) -> Option<(String, i64)> {
        let inner = lock(&self.inner);
        let lease = *inner.held.get(service)?;
        (inner.lease == Some(lease)).then(|| (self.cluster.layout().evaluator(service), lease))
    }

    /// The host that evaluates `service`, as last read.
    pub fn holder(&self, service: &str) -> Option<String> {
        lock(&self.inner).holders.get(service).cloned()
    }

    /// Campaigns until `shutdown` for the services `services()` names.
    pub async fn run(&self, services: impl Fn() -> Vec<String>, shutdown: CancellationToken) {
        let mut failing = false;
        loop {
            match self.round(&services()).await {
                Ok(()) => failing = false,
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "automation election: etcd failed; this host evaluates nothing until it answers");
                    }
                    failing = true;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(ROUND) => {}
            }
        }
        let lease = lock(&self.inner).lease.take();
        if let Some(id) = lease {
            // A clean stop hands the services over at once.
            let _ =
                tokio::time::timeout(Duration::from_secs(1), self.cluster.etcd().lease_revoke(id))
                    .await;
        }
    }

    /// Renews the lease (a new one if it expired) and campaigns once.
    async fn round(&self, services: &[String]) -> Result<(), EtcdError> {
        let etcd = self.cluster.etcd();
        let current = lock(&self.inner).lease;
        let lease = match current {
            Some(id) => match etcd.lease_keep_alive(id).await {
                Ok(_) => id,
                Err(e) => {
                    // Lost: nothing is held any more.
                    {
                        let mut inner = lock(&self.inner);
                        inner.lease = None;
                        inner.held.clear();
                    }
                    if !matches!(e, EtcdError::LeaseExpired { .. }) {
                        return Err(e);
                    }
                    warn!("automation election lease expired; campaigning again");
                    self.grant().await?
                }
            },
            None => self.grant().await?,
        };
        for service in services {
            let key = self.cluster.layout().evaluator(service);
            let put = [Put {
                key: key.clone(),
                value: self.node.as_bytes().to_vec(),
                lease: Some(lease),
            }];
            let holder = match etcd.compare_and_swap(&key, 0, &put).await? {
                CasOutcome::Committed { .. } => {
                    info!(%service, node = %self.node, "this host evaluates the service's automatic progression");
                    Some((self.node.clone(), lease))
                }
                CasOutcome::Conflict { current } => {
                    current.map(|kv| (String::from_utf8_lossy(&kv.value).into_owned(), kv.lease))
                }
            };
            let mut inner = lock(&self.inner);
            match holder {
                Some((node, l)) if l == lease && node == self.node => {
                    inner.held.insert(service.clone(), lease);
                    inner.holders.insert(service.clone(), node);
                }
                Some((node, _)) => {
                    inner.held.remove(service);
                    inner.holders.insert(service.clone(), node);
                }
                None => {
                    inner.held.remove(service);
                    inner.holders.remove(service);
                }
            }
        }
        Ok(())
    }

    async fn grant(&self) -> Result<i64, EtcdError> {
        let l = self.cluster.etcd().lease_grant(ELECTION_TTL).await?;
        lock(&self.inner).lease = Some(l.id);
        Ok(l.id)
    }

    /// Saves `service`'s counts, fenced like its commits: a host that lost
    /// the election writes nothing.
    pub async fn save_counters(&self, service: &str, value: Vec<u8>) -> Result<bool, EtcdError> {
        let Some((key, lease)) = self.fence(service) else {
            return Ok(false);
        };
        let target = self.cluster.layout().counters(service);
        let etcd = self.cluster.etcd();
        // Guarded on the counters key's own revision read just before: only
        // the fence matters here, the evaluator is the only writer.
        let (current, _) = etcd.get(&target).await?;
        let put = [Put {
            key: target.clone(),
            value,
            lease: None,
        }];
        let rev = current.map_or(0, |kv| kv.mod_revision);
        Ok(matches!(
            etcd.compare_and_swap_fenced(&target, rev, (&key, lease), &put)
                .await?,
            CasOutcome::Committed { .. }
        ))
    }

    /// The counts the last evaluator of `service` saved.
    pub async fn load_counters(&self, service: &str) -> Result<Option<Vec<u8>>, EtcdError> {
        let (kv, _) = self
            .cluster
            .etcd()
            .get(&self.cluster.layout().counters(service))
            .await?;
        Ok(kv.map(|kv| kv.value))
    }
}
