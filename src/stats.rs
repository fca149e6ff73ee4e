//! The DNS path's counters, kept across plan rebuilds and reloads: per
//! query type and rcode ([`QueryCounters`]), per pool ([`PoolStats`]) and
//! per endpoint ([`EndpointStats`]), in one registry ([`Stats`]); and the
//! one-minute window ([`SplitWindow`]) over which `status` reports the split
//! actually served. Plain atomics on the query path; no lock there.

pub mod series;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, RecordType};

use crate::pool::EndpointKey;
use crate::sync::lock;
use crate::zone::Zone;

/// Counters for one pool of one service, kept across plan rebuilds.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Answers for the main name that carried this pool.
    pub main: AtomicU64,
    /// Answers for the staging name that carried this pool.
    pub staging: AtomicU64,
    /// Unix milliseconds of the last main-name answer carrying this pool (0: never).
    pub last_answered_ms: AtomicU64,
    /// TTL of that last answer.
    pub last_ttl: AtomicU32,
    /// Unix milliseconds until which some cache may hold an answer with
    /// this pool: the latest answer time + TTL over all answers (a later
    /// answer with a shorter TTL does not bring it forward).
    pub expires_at_ms: AtomicU64,
}

/// Counters for one endpoint, kept across plan rebuilds.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Answers for the main name that included this endpoint.
    pub main: AtomicU64,
    /// Answers for the staging name that included this endpoint.
    pub staging: AtomicU64,
}

/// Query type buckets for the query counter.
pub const QTYPES: [&str; 12] = [
    "A", "AAAA", "CNAME", "SOA", "NS", "MX", "TXT", "SRV", "CAA", "ANY", "PTR", "other",
];
/// Response code buckets.
pub const RCODES: [&str; 7] = [
    "NOERROR", "NXDOMAIN", "REFUSED", "SERVFAIL", "FORMERR", "NOTIMP", "other",
];
/// Transport buckets.
pub const PROTOCOLS: [&str; 2] = ["udp", "tcp"];

/// Query counters of one zone (or of queries outside every zone): one
/// atomic per (qtype, protocol, rcode).
#[derive(Debug)]
pub struct QueryCounters {
    cells: Vec<AtomicU64>,
}

impl Default for QueryCounters {
    fn default() -> Self {
        QueryCounters {
            cells: (0..QTYPES.len() * PROTOCOLS.len() * RCODES.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

impl QueryCounters {
    /// Counts one query.
    pub fn count(&self, qtype: RecordType, tcp: bool, rcode: ResponseCode) {
        let q = match qtype {
            RecordType::A => 0,
            RecordType::AAAA => 1,
            RecordType::CNAME => 2,
            RecordType::SOA => 3,
            RecordType::NS => 4,
            RecordType::MX => 5,
            RecordType::TXT => 6,
            RecordType::SRV => 7,
            RecordType::CAA => 8,
            RecordType::ANY => 9,
            RecordType::PTR => 10,
            _ => 11,
        };
        let r = match rcode {
            ResponseCode::NoError => 0,
            ResponseCode::NXDomain => 1,
            ResponseCode::Refused => 2,
            ResponseCode::ServFail => 3,
            ResponseCode::FormErr => 4,
            ResponseCode::NotImp => 5,
            _ => 6,
        };
        let i = (q * PROTOCOLS.len() + usize::from(tcp)) * RCODES.len() + r;
        self.cells[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Every non-zero cell as (qtype, protocol, rcode, count).
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for (q, qt) in QTYPES.iter().enumerate() {
            for (p, pr) in PROTOCOLS.iter().enumerate() {
                for (r, rc) in RCODES.iter().enumerate() {
                    let v = self.cells[(q * PROTOCOLS.len() + p) * RCODES.len() + r]
                        .load(Ordering::Relaxed);
                    if v > 0 {
                        out.push((*qt, *pr, *rc, v));
                    }
                }
            }
        }
        out
    }
}

/// Registry of counters by name, so they survive plan rebuilds and reloads.
#[derive(Debug, Default)]
pub struct Stats {
    pools: Mutex<HashMap<(String, String), Arc<PoolStats>>>,
    endpoints: Mutex<HashMap<EndpointKey, Arc<EndpointStats>>>,
    zones: Mutex<HashMap<String, Arc<QueryCounters>>>,
    /// Queries for names outside every zone (REFUSED) and malformed ones.
    pub unmatched: Arc<QueryCounters>,
}

impl Stats {
    /// Counters of a pool. Created on first use as if the pool had been
    /// answered just now with `assumed_ttl`: after a start or restart we
    /// cannot know what an earlier run answered, so drain deadlines start
    /// from the worst case instead of claiming "already drained".
    pub fn pool(&self, service: &str, pool: &str, assumed_ttl: u32) -> Arc<PoolStats> {
        let mut m = lock(&self.pools);
        m.entry((service.to_string(), pool.to_string()))
            .or_insert_with(|| {
                let now = crate::clock::unix_ms();
                Arc::new(PoolStats {
                    last_answered_ms: AtomicU64::new(now),
                    last_ttl: AtomicU32::new(assumed_ttl),
                    expires_at_ms: AtomicU64::new(now + u64::from(assumed_ttl) * 1000),
                    ..PoolStats::default()
                })
            })
            .clone()
    }

    /// Forgets counters of services, pools, endpoints and zones that the
    /// config no longer has, so /metrics stops exporting them.
    pub fn retain(&self, zones: &[Zone]) {
        let mut pools = HashSet::new();
        let mut endpoints = HashSet::new();
        for s in zones.iter().flat_map(|z| &z.services) {
            for p in &s.pools {
                pools.insert((s.key(), p.name.clone()));
                for e in &p.endpoints {
                    endpoints.insert(EndpointKey::new(&s.key(), &p.name, &e.id));
                }
            }
        }
        let origins: std::collections::HashSet<String> = zones
            .iter()
            .map(|z| LowerName::from(&z.origin).to_string())
            .collect();
        lock(&self.pools).retain(|k, _| pools.contains(k));
        lock(&self.endpoints).retain(|k, _| endpoints.contains(k));
        lock(&self.zones).retain(|k, _| origins.contains(k));
    }

    /// All pool counters, for metrics.
    pub fn pools(&self) -> Vec<((String, String), Arc<PoolStats>)> {
        let m = lock(&self.pools);
        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Counters of an endpoint (created on first use).
    pub fn endpoint(&self, service: &str, pool: &str, endpoint: &str) -> Arc<EndpointStats> {
        let mut m = lock(&self.endpoints);
        m.entry(EndpointKey::new(service, pool, endpoint))
            .or_default()
            .clone()
    }

    /// Query counters of a zone (created on first use).
    pub fn zone(&self, origin: &str) -> Arc<QueryCounters> {
        let mut m = lock(&self.zones);
        m.entry(origin.to_string()).or_default().clone()
    }

    /// All zone counters, for metrics.
    pub fn zones(&self) -> Vec<(String, Arc<QueryCounters>)> {
        let m = lock(&self.zones);
        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// All endpoint counters, for metrics.
    pub fn endpoints(&self) -> Vec<(EndpointKey, Arc<EndpointStats>)> {
        let m = lock(&self.endpoints);
        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Window over which `status` reports the split actually served.
pub const SPLIT_WINDOW: Duration = Duration::from_secs(60);

/// Main-name answer counters by (service, pool).
pub type PoolCounts = HashMap<(String, String), u64>;

/// Per-second samples of the main-name answer counters per (service, pool),
/// over the last [`SPLIT_WINDOW`]: the difference between the newest and
/// the oldest is what was served in the last minute.
#[derive(Debug, Default)]
pub struct SplitWindow {
    samples: Mutex<VecDeque<(u64, PoolCounts)>>,
}

impl SplitWindow {
    /// Takes one sample of the answer counters of every pool of `zones`
    /// (called every second).
    pub fn sample(&self, zones: &[Zone], stats: &Stats, now_ms: u64) {
        let mut counts = HashMap::new();
        for s in zones.iter().flat_map(|z| &z.services) {
            for p in &s.pools {
                let ps = stats.pool(&s.key(), &p.name, s.max_ttl());
                counts.insert((s.key(), p.name.clone()), ps.main.load(Ordering::Relaxed));
            }
        }
        let mut samples = lock(&self.samples);
        samples.push_back((now_ms, counts));
        while samples.len() > SPLIT_WINDOW.as_secs() as usize + 1 {
            samples.pop_front();
        }
    }

    /// Main-name answers per (service, pool) over the last [`SPLIT_WINDOW`].
    pub fn counts(&self) -> PoolCounts {
        let samples = lock(&self.samples);
        let (Some((_, newest)), Some((_, oldest))) = (samples.back(), samples.front()) else {
            return HashMap::new();
        };
        newest
            .iter()
            .map(|(k, v)| (k.clone(), v - oldest.get(k).copied().unwrap_or(0)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_covers_the_last_minute_only() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let zones = vec![crate::zone::load_file(&dir.join("state-v1-zone.toml")).unwrap()];
        let svc = zones[0].services[0].key();
        let (stats, window) = (Stats::default(), SplitWindow::default());
        assert!(window.counts().is_empty());
        let old = stats.pool(&svc, "old", 30);
        // 100 answers per second for 90 seconds: the window sees 60 of them.
        for second in 0..90u64 {
            old.main.fetch_add(100, Ordering::Relaxed);
            window.sample(&zones, &stats, second * 1000);
        }
        let counts = window.counts();
        assert_eq!(counts[&(svc.clone(), "old".to_string())], 6000);
        assert_eq!(counts[&(svc, "new".to_string())], 0);
    }
}
