//! What the status page needs beyond `status`: the other hosts' answer
//! counters, so that the page's split over time sums every host.

use super::Operator;

/// One host's main-name answers carrying one pool since it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAnswers {
    /// The host's node id.
    pub node: String,
    /// Service key.
    pub service: String,
    /// Pool name.
    pub pool: String,
    /// Its counter as it last reported it.
    pub answers: u64,
    /// When a resolver may hold its last answer with the pool until (Unix
    /// ms): the answer's time plus its TTL; `None` if never answered.
    pub expires_ms: Option<u64>,
}

impl Operator {
    /// The answer counters that the other live hosts of a cluster last
    /// reported (none for a single host); this host's own are in `stats`.
    pub fn other_hosts_answers(&self) -> Vec<HostAnswers> {
        if !self.shared {
            return Vec::new();
        }
        self.store
            .hosts()
            .into_iter()
            .filter(|h| h.live && h.report.node != self.node)
            .flat_map(|h| {
                let node = h.report.node;
                h.report.pools.into_iter().map(move |p| HostAnswers {
                    node: node.clone(),
                    service: p.service,
                    pool: p.pool,
                    answers: p.answers,
                    expires_ms: p
                        .last_answered_ms
                        .map(|at| at.saturating_add(u64::from(p.ttl_s) * 1000)),
                })
            })
            .collect()
    }
}
