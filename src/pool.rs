//! Pools of endpoints (the old and the new load balancers) and the weighted
//! pick between them. Pure: no I/O, no clock; the random source is passed in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::rr::Name;

/// Identifies an endpoint of a pool of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey {
    /// Service key (lowercase FQDN).
    pub service: String,
    /// Pool name.
    pub pool: String,
    /// Endpoint id as written.
    pub endpoint: String,
}

impl EndpointKey {
    /// The key of `endpoint` in `pool` of the service keyed `service`.
    pub fn new(service: &str, pool: &str, endpoint: &str) -> EndpointKey {
        EndpointKey {
            service: service.to_string(),
            pool: pool.to_string(),
            endpoint: endpoint.to_string(),
        }
    }

    /// "pool/endpoint": how the state file names it within its service.
    pub fn in_service(&self) -> String {
        format!("{}/{}", self.pool, self.endpoint)
    }
}

/// How an endpoint is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// GET a URL over plain HTTP.
    Http,
    /// GET a URL over HTTPS, verifying the certificate unless `insecure`.
    Https,
    /// Only open a TCP connection.
    Tcp,
}

/// A fully resolved check for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Protocol of the probe.
    pub kind: CheckKind,
    /// For http/https: the URL with `{endpoint}` filled in.
    /// For tcp: `host:port` to connect to.
    pub target: String,
    /// Host header and TLS SNI / certificate name, if not the URL's host.
    pub host: Option<String>,
    /// Time between probes (jittered).
    pub interval: Duration,
    /// Bound on one probe, connect to last byte.
    pub timeout: Duration,
    /// Consecutive successes to become healthy.
    pub rise: u32,
    /// Consecutive failures to become unhealthy.
    pub fall: u32,
    /// Accepted status codes, inclusive.
    pub expect: (u16, u16),
    /// Substring that must appear in the first `BODY_LIMIT` (health) bytes of the body.
    pub expect_body: Option<String>,
    /// Skip certificate verification (https).
    pub insecure: bool,
    /// Extra CA certificate (PEM) trusted for https checks.
    pub ca_file: Option<PathBuf>,
}

/// What an endpoint answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IPv4 load balancer: answered in A queries.
    V4(Ipv4Addr),
    /// An IPv6 load balancer: answered in AAAA queries.
    V6(Ipv6Addr),
    /// A host name (say a cloud load balancer's name): answered as a CNAME.
    Host(Name),
}

impl Target {
    /// The address to connect to for a health check, if it is an address.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Target::V4(a) => Some(IpAddr::V4(*a)),
            Target::V6(a) => Some(IpAddr::V6(*a)),
            Target::Host(_) => None,
        }
    }
}

/// One load balancer in a pool.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The endpoint as operators name it: the address or host name as written.
    pub id: String,
    /// What answers for this endpoint carry.
    pub target: Target,
    /// How its health is checked; `None` means "not checked, always healthy".
    pub check: Option<Check>,
}

/// A named set of endpoints that receives traffic as a whole (old, new, ...).
#[derive(Debug, Clone)]
pub struct Pool {
    /// Pool name as used in phases and commands.
    pub name: String,
    /// The load balancers. A host-name pool holds exactly one endpoint.
    pub endpoints: Vec<Endpoint>,
}

impl Pool {
    /// True when the pool is answered by a CNAME to a host name.
    pub fn is_host(&self) -> bool {
        matches!(
            self.endpoints.first().map(|e| &e.target),
            Some(Target::Host(_))
        )
    }
}

/// Picks an index in proportion to `weights` from a uniform draw in
/// `0..total` where `total` is the sum of the weights. `cumulative` holds the
/// running sums, so the pick is a short scan with no allocation.
///
/// Returns `None` only when `cumulative` is empty or its total is 0.
pub fn pick_weighted(cumulative: &[u64], draw: u64) -> Option<usize> {
    cumulative.iter().position(|&c| draw < c)
}

/// Running sums of weights, for [`pick_weighted`].
pub fn cumulative(weights: impl IntoIterator<Item = u32>) -> Vec<u64> {
    let mut sum = 0u64;
    weights
        .into_iter()
        .map(|w| {
            sum += u64::from(w);
            sum
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_pick_table() {
        // (weights, draw, expected index)
        let cases: &[(&[u32], u64, Option<usize>)] = &[
            (&[90, 10], 0, Some(0)),
            (&[90, 10], 89, Some(0)),
            (&[90, 10], 90, Some(1)),
            (&[90, 10], 99, Some(1)),
            (&[0, 10], 0, Some(1)),
            (&[10, 0], 9, Some(0)),
            (&[1, 1, 1], 2, Some(2)),
            (&[], 0, None),
            (&[5], 5, None),
        ];
        for (weights, draw, want) in cases {
            let cum = cumulative(weights.iter().copied());
            assert_eq!(pick_weighted(&cum, *draw), *want, "{weights:?} {draw}");
        }
    }

    #[test]
    fn every_draw_maps_to_proportional_counts() {
        // Exhaustive over the draw space: the split is exact, not statistical.
        let cum = cumulative([70, 20, 10]);
        let mut counts = [0; 3];
        for d in 0..100 {
            counts[pick_weighted(&cum, d).unwrap()] += 1;
        }
        assert_eq!(counts, [70, 20, 10]);
    }
}
