//! The answer plan: an immutable snapshot of everything a DNS answer needs,
//! built from zones + operator state + health, and the lookup over it.
//!
//! The plan is built off the query path whenever an input changes and
//! swapped in whole; a query only reads it. Per query the lookup draws one
//! random number for the pool, one for the rotation (a sticky service
//! hashes the client's key instead, [`sticky`]), bumps a few atomic
//! counters, and collects references into the plan: no lock, no I/O, and
//! allocation bounded by [`MAX_CHAIN`] and `max_answers`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::health::Status;
use crate::pool::{Endpoint, EndpointKey, Pool, Target, cumulative, pick_weighted};
use crate::state::State;
use crate::stats::{EndpointStats, PoolStats, QueryCounters, Stats};
use crate::zone::{OnAllDown, Service, Zone};

mod build;
mod role;
mod secure;
pub mod sticky;
pub mod wire;

use build::*;
pub use role::{
    ADDRESS_FAMILIES, Decision, Family, PoolDecision, Role, Shares, answered, decide, decisions,
    family_warning, name_params, percent, shares,
};
use sticky::{Client, StickyConfig};

/// Longest CNAME chain followed inside a zone.
pub const MAX_CHAIN: usize = 8;

// ------------------------------------------------------------------ inputs

/// What the plan builder needs to know beyond the zones.
pub trait Inputs {
    /// Current phase index of a service.
    fn phase(&self, service: &Service) -> usize;
    /// Whether the operator took an endpoint out of the answers.
    fn disabled(&self, service: &Service, pool: &Pool, endpoint: &Endpoint) -> bool;
    /// Whether an endpoint is healthy (true until its first check result).
    fn healthy(&self, service: &Service, pool: &Pool, endpoint: &Endpoint) -> bool;
    /// Whether a pool was decommissioned.
    fn decommissioned(&self, service: &Service, pool: &Pool) -> bool;
}

/// Inputs for a plan straight from the config: initial phases, all healthy.
pub struct ConfigOnly;

impl Inputs for ConfigOnly {
    fn phase(&self, service: &Service) -> usize {
        service.initial_phase
    }
    fn disabled(&self, _: &Service, _: &Pool, _: &Endpoint) -> bool {
        false
    }
    fn healthy(&self, _: &Service, _: &Pool, _: &Endpoint) -> bool {
        true
    }
    fn decommissioned(&self, _: &Service, _: &Pool) -> bool {
        false
    }
}

/// The running inputs: operator state and the health table.
pub struct Live<'a> {
    /// Operator state.
    pub state: &'a State,
    /// Health by endpoint (absent: not checked, or no result yet).
    pub health: &'a HashMap<EndpointKey, Status>,
}

impl Inputs for Live<'_> {
    fn phase(&self, service: &Service) -> usize {
        self.state.phase_of(service)
    }
    fn disabled(&self, service: &Service, pool: &Pool, endpoint: &Endpoint) -> bool {
        let key = EndpointKey::new(&service.key(), &pool.name, &endpoint.id);
        self.state
            .services
            .get(&key.service)
            .is_some_and(|s| s.disabled.contains(&key.in_service()))
    }
    fn healthy(&self, service: &Service, pool: &Pool, endpoint: &Endpoint) -> bool {
        self.health
            .get(&EndpointKey::new(&service.key(), &pool.name, &endpoint.id))
            .is_none_or(|s| s.state.healthy)
    }
    fn decommissioned(&self, service: &Service, pool: &Pool) -> bool {
        self.state
            .services
            .get(&service.key())
            .is_some_and(|s| s.decommissioned.contains(&pool.name))
    }
}

// ------------------------------------------------------------------ the plan

/// What `_dnsshift.<origin>` TXT tells (AA, TTL 0): the state a host
/// serves, as `epoch=N`, `node=ID` and `<service>=<phase>` per service of
/// the zone. Precomputed into the plan like any static record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marker {
    /// Epoch of the state served (shared: etcd's; single host: local commits).
    pub epoch: i64,
    /// This host's node id.
    pub node: String,
    /// Digest of the zones served ([`crate::zone::digest()`]).
    pub zones: String,
}

/// The owner label of the [`Marker`] TXT under each origin.
pub const MARKER_LABEL: &str = "_dnsshift";

/// The whole answer snapshot.
#[derive(Debug)]
pub struct Plan {
    zones: Vec<ZonePlan>,
    /// The same answers precomputed in wire format, for the UDP fast path.
    pub wire: wire::WirePlan,
    /// SOA serial served by every zone of this plan.
    pub serial: u32,
    /// Queries outside every zone.
    pub unmatched: Arc<QueryCounters>,
}

#[derive(Debug)]
struct ZonePlan {
    origin: LowerName,
    neg_soa: Record,
    names: HashMap<LowerName, Node>,
    /// Delegation points below the apex (few; scanned per query).
    cuts: Vec<LowerName>,
    counters: Arc<QueryCounters>,
    /// The zone's signatures and NSEC chain, when it is signed.
    sec: Option<secure::ZoneSec>,
}

#[derive(Debug)]
enum Node {
    /// Name with static data (the apex holds SOA and NS here).
    Static {
        sets: Vec<Vec<Record>>,
        /// Glue for NS answers at the apex.
        glue: Vec<Record>,
        /// For a CNAME name: the index of its set in `sets`, and the
        /// target when it is inside this zone (followed in answers).
        cname: Option<(usize, Option<LowerName>)>,
    },
    /// A zone cut: a delegation to other nameservers.
    Cut { ns: Vec<Record>, glue: Vec<Record> },
    /// A shifted name or a staging name.
    Service(Box<ServiceNode>),
    /// A name with no data of its own but names below it.
    Empty,
}

#[derive(Debug)]
struct ServiceNode {
    max_answers: usize,
    a: Selection,
    aaaa: Selection,
    /// Other types: only host-name pools (a CNAME) answer them.
    other: Selection,
}

impl ServiceNode {
    /// The selection a query of `qtype` picks from.
    fn selection(&self, qtype: RecordType) -> &Selection {
        match qtype {
            RecordType::A => &self.a,
            RecordType::AAAA => &self.aaaa,
            RecordType::ANY => match &self.a {
                Selection::NoData => &self.aaaa,
                other => other,
            },
            _ => &self.other,
        }
    }
}

#[derive(Debug)]
enum Selection {
    /// No endpoint of this type at all: NODATA.
    NoData,
    /// Everything down and the service asks for SERVFAIL.
    ServFail,
    /// Pick a pool by weight; a pool with no record of the type answers
    /// NODATA.
    Weighted {
        cumulative: Vec<u64>,
        pools: Vec<PoolAnswer>,
        /// For a sticky service: how a client key picks among `pools`.
        sticky: Option<StickyPick>,
    },
}

/// A sticky selection, prepared when the plan is built (issue 18): the
/// rendezvous candidates, so that a query only hashes its key.
#[derive(Debug, Clone)]
pub(crate) struct StickyPick {
    cfg: StickyConfig,
    /// Per answered pool, in the order of the selection's pools: the
    /// salt of its name and its pick weight. The same for every record
    /// family of a name, so A and AAAA draw the same pool.
    pools: Box<[sticky::Candidate]>,
    /// Per answered pool: the salts of its answered endpoints, in record
    /// order; the key's winner among them starts the rotation.
    endpoints: Box<[Box<[sticky::Candidate]>]>,
    /// Whether the answer depends on the key at all (more than one pool,
    /// or a pool with more than one record): the ECS scope is the key's
    /// prefix then, else 0.
    depends: bool,
}

impl StickyPick {
    /// The pool and rotation start for `client`, and the ECS scope the
    /// answer depends on; `None` when the client is unknown (the draw is
    /// random then).
    pub(crate) fn choose(&self, client: &Client) -> Option<(usize, usize, u8)> {
        let (key, from_ecs) = client.key(&self.cfg)?;
        let i = self.cfg.seed.rendezvous(&key, &self.pools)?;
        let start = match self.endpoints.get(i) {
            Some(eps) if eps.len() > 1 => self.cfg.seed.rendezvous(&key, eps).unwrap_or(0),
            _ => 0,
        };
        sticky::COUNTS.count(from_ecs);
        let scope = if from_ecs && self.depends {
            key.prefix()
        } else {
            0
        };
        Some((i, start, scope))
    }
}

#[derive(Debug)]
struct PoolAnswer {
    records: Vec<Record>,
    counter: PoolCounter,
    /// For a CNAME pool whose target is inside the zone: follow it.
    chase: Option<LowerName>,
    /// For a pool with no record of the type: the negative SOA of its
    /// NODATA, with a TTL of at most the answers' TTL.
    nodata: Option<Record>,
}

/// What one answer carrying a pool counts: shared by the lookup and the
/// precomputed wire answers ([`wire`]), so both keep the same counters.
#[derive(Debug, Clone)]
struct PoolCounter {
    /// Per endpoint, in the order of the pool's records.
    endpoints: Vec<Arc<EndpointStats>>,
    stats: Arc<PoolStats>,
    staging: bool,
    ttl: u32,
}

impl PoolCounter {
    /// Counts one answer that carried the pool's records `start..start+k`
    /// (rotated): the endpoints' answer counters and the pool's drain clock.
    fn count(&self, start: usize, k: usize, now_ms: u64) {
        let n = self.endpoints.len();
        for j in 0..k.min(n) {
            let ep = &self.endpoints[(start + j) % n];
            let counter = if self.staging { &ep.staging } else { &ep.main };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if self.staging {
            self.stats.staging.fetch_add(1, Ordering::Relaxed);
        } else {
            let st = &self.stats;
            st.main.fetch_add(1, Ordering::Relaxed);
            st.last_answered_ms.store(now_ms, Ordering::Relaxed);
            st.last_ttl.store(self.ttl, Ordering::Relaxed);
            st.expires_at_ms
                .fetch_max(now_ms + u64::from(self.ttl) * 1000, Ordering::Relaxed);
        }
    }
}

/// Where the lookup's random draws come from: passed in, so that tests
/// can seed it and the data path can keep one per worker.
pub trait Random {
    /// A uniformly random number in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64;
}

impl Random for fastrand::Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.u64(0..n)
    }
}

/// The calling thread's own generator (fastrand's thread-local).
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadRandom;

impl Random for ThreadRandom {
    fn below(&mut self, n: u64) -> u64 {
        fastrand::u64(0..n)
    }
}

/// A response in the making: references into the plan.
#[derive(Debug, Default, Clone)]
pub struct Answer<'a> {
    /// Response code (NoError for answers, referrals and NODATA).
    pub rcode: ResponseCode,
    /// Authoritative answer bit (false for referrals).
    pub authoritative: bool,
    /// Answer section.
    pub answers: Vec<&'a Record>,
    /// Authority section (NS of a referral).
    pub authority: Vec<&'a Record>,
    /// SOA for negative answers (appended to the authority section).
    pub soa: Option<&'a Record>,
    /// Additional section (glue).
    pub additionals: Vec<&'a Record>,
    /// The ECS scope prefix (RFC 7871 §7.2.1) a reply to a query with ECS
    /// carries: how much of the client's address the answer depended on.
    pub scope: u8,
}

/// The outcome of looking a name up.
pub enum Lookup<'a> {
    /// The name is outside every zone: REFUSED.
    Refused,
    /// An answer from a zone, with that zone's query counters.
    Zone(Answer<'a>, &'a QueryCounters),
}

impl Plan {
    /// Builds the plan. `serial` is the SOA serial every zone serves (see
    /// [`next_serial`] and [`serial_floor`]).
    pub fn build(zones: &[Zone], inputs: &dyn Inputs, stats: &Stats, serial: u32) -> Plan {
        Plan::build_marked(zones, inputs, stats, serial, None)
    }

    /// [`Plan::build`], answering `_dnsshift.<origin>` TXT from `marker`
    /// in every zone.
    pub fn build_marked(
        zones: &[Zone],
        inputs: &dyn Inputs,
        stats: &Stats,
        serial: u32,
        marker: Option<&Marker>,
    ) -> Plan {
        let zones: Vec<ZonePlan> = zones
            .iter()
            .map(|z| build_zone(z, inputs, stats, serial, marker))
            .collect();
        Plan {
            wire: wire::WirePlan::build(&zones, &stats.unmatched),
            zones,
            serial,
            unmatched: stats.unmatched.clone(),
        }
    }

    /// Per signed zone: (origin, names in the NSEC chain, signatures in
    /// the plan, signatures made by this build, signatures reused).
    pub fn dnssec_summary(&self) -> Vec<(String, usize, usize, u64, u64)> {
        self.zones
            .iter()
            .filter_map(|z| {
                let s = z.sec.as_ref()?;
                Some((
                    z.origin.to_string(),
                    s.names(),
                    s.signatures(),
                    s.signed,
                    s.reused,
                ))
            })
            .collect()
    }

    /// An empty plan: refuses everything.
    pub fn empty() -> Plan {
        Plan {
            zones: Vec::new(),
            wire: wire::WirePlan::default(),
            serial: 0,
            unmatched: Arc::default(),
        }
    }

    /// Answers one question at `now_ms` (Unix ms, for the drain clocks),
    /// drawing the weighted pick and the rotation from `rng`.
    pub fn lookup(
        &self,
        qname: &LowerName,
        qtype: RecordType,
        now_ms: u64,
        rng: &mut dyn Random,
    ) -> Lookup<'_> {
        self.lookup_from(qname, qtype, now_ms, rng, &Client::default(), false)
    }

    /// [`Plan::lookup`] for a query from `client`: a sticky service keys
    /// its pick on it (and the answer says its ECS scope). With `dnssec_ok`
    /// (the query's DO bit), a signed zone's answer carries its RRSIGs and
    /// NSEC proofs.
    pub fn lookup_from(
        &self,
        qname: &LowerName,
        qtype: RecordType,
        now_ms: u64,
        rng: &mut dyn Random,
        client: &Client,
        dnssec_ok: bool,
    ) -> Lookup<'_> {
        let mut best: Option<&ZonePlan> = None;
        for z in &self.zones {
            if z.origin.zone_of(qname)
                && best.is_none_or(|b| z.origin.num_labels() > b.origin.num_labels())
            {
                best = Some(z);
            }
        }
        let Some(zone) = best else {
            return Lookup::Refused;
        };
        let mut ans = Answer {
            authoritative: true,
            ..Answer::default()
        };
        let mut draw = Draw {
            now_ms,
            rng,
            client,
            scope: 0,
        };
        zone.lookup(qname, qtype, &mut ans, 0, &mut draw);
        ans.scope = draw.scope;
        if dnssec_ok {
            zone.secure(qname, qtype, &mut ans);
        }
        Lookup::Zone(ans, &zone.counters)
    }
}

/// The lowest serial to serve: Unix time, or a zone's configured `serial`
/// if that is higher (say a date-style 2026112301).
pub fn serial_floor(zones: &[Zone], now_unix: u64) -> u64 {
    zones
        .iter()
        .filter_map(|z| z.serial.map(u64::from))
        .fold(now_unix, u64::max)
}

/// The serial for a new plan: increases with every rebuild, and tracks Unix
/// time (or a configured floor) so that it also increases across restarts.
pub fn next_serial(previous: u32, now_unix: u64) -> u32 {
    let t = u32::try_from(now_unix).unwrap_or(u32::MAX);
    t.max(previous.wrapping_add(1))
}

/// The time and the random source of one lookup.
pub(crate) struct Draw<'r> {
    pub(crate) now_ms: u64,
    pub(crate) rng: &'r mut dyn Random,
    /// Who asked, for sticky picks.
    pub(crate) client: &'r Client,
    /// The widest ECS scope a pick of this lookup depended on.
    pub(crate) scope: u8,
}

/// The client of a template: unknown (templates are drawn for every client).
static NO_CLIENT: Client = Client {
    addr: None,
    ecs: None,
};

impl<'r> Draw<'r> {
    /// For building templates of deterministic answers, which draw and
    /// count nothing.
    pub(crate) fn none(rng: &'r mut fastrand::Rng) -> Draw<'r> {
        Draw {
            now_ms: 0,
            rng,
            client: &NO_CLIENT,
            scope: 0,
        }
    }

    /// A weighted pick among `cumulative` weights, and the rotation start
    /// among the picked pool's `n(i)` records.
    pub(crate) fn pick(
        &mut self,
        cumulative: &[u64],
        sticky: Option<&StickyPick>,
        n: impl Fn(usize) -> usize,
    ) -> Option<(usize, usize)> {
        if let Some((i, start, scope)) = sticky.and_then(|s| s.choose(self.client)) {
            self.scope = self.scope.max(scope);
            return Some((i, start));
        }
        let total = cumulative.last().copied().unwrap_or(0);
        let i = pick_weighted(cumulative, self.rng.below(total.max(1)))?;
        let n = n(i);
        let start = if n > 1 {
            self.rng.below(n as u64) as usize
        } else {
            0
        };
        Some((i, start))
    }
}

impl ZonePlan {
    fn lookup<'a>(
        &'a self,
        qname: &LowerName,
        qtype: RecordType,
        ans: &mut Answer<'a>,
        depth: usize,
        draw: &mut Draw<'_>,
    ) {
        if let Some(cut) = self.cut_above(qname) {
            if depth > 0 {
                // A CNAME into a delegated subzone: the answer stops at the
                // CNAME; the resolver follows it to the subzone's servers.
                return;
            }
            if !(cut.0 == qname && qtype == RecordType::DS) {
                // DS lives on the parent side; we have none there: NODATA.
                ans.authoritative = false;
                ans.authority.extend(cut.1.iter());
                ans.additionals.extend(cut.2.iter());
                return;
            }
        }
        let Some(node) = self.names.get(qname) else {
            ans.rcode = ResponseCode::NXDomain;
            ans.soa = Some(&self.neg_soa);
            return;
        };
        match node {
            Node::Empty | Node::Cut { .. } => ans.soa = Some(&self.neg_soa),
            Node::Static { sets, glue, cname } => {
                if let Some((i, target)) = cname
                    && qtype != RecordType::CNAME
                {
                    ans.answers.extend(sets[*i].iter());
                    if let Some(t) = target
                        && depth < MAX_CHAIN
                    {
                        self.lookup(t, qtype, ans, depth + 1, draw);
                    }
                    return;
                }
                let set = if qtype == RecordType::ANY {
                    // RFC 8482: answer one RRset, not all of them.
                    sets.first()
                } else {
                    sets.iter()
                        .find(|s| s.first().is_some_and(|r| r.record_type() == qtype))
                };
                match set {
                    Some(s) => {
                        ans.answers.extend(s.iter());
                        if qtype == RecordType::NS {
                            ans.additionals.extend(glue.iter());
                        }
                    }
                    None => ans.soa = Some(&self.neg_soa),
                }
            }
            Node::Service(svc) => match svc.selection(qtype) {
                Selection::NoData => ans.soa = Some(&self.neg_soa),
                Selection::ServFail => ans.rcode = ResponseCode::ServFail,
                Selection::Weighted {
                    cumulative,
                    pools,
                    sticky,
                } => {
                    let Some((i, start)) =
                        draw.pick(cumulative, sticky.as_ref(), |i| pools[i].records.len())
                    else {
                        ans.soa = Some(&self.neg_soa);
                        return;
                    };
                    let pool = &pools[i];
                    let k = svc.max_answers.min(pool.records.len());
                    pool.counter.count(start, k, draw.now_ms);
                    self.pool_answer(pool, svc.max_answers, start, qtype, ans, depth, draw);
                }
            },
        }
    }

    /// The answer carrying `pool`'s records from rotation `start` on (and
    /// what a CNAME pool's in-zone target adds). Counts nothing: the caller
    /// does, through [`PoolCounter::count`].
    #[allow(clippy::too_many_arguments)] // the lookup's state, threaded through
    fn pool_answer<'a>(
        &'a self,
        pool: &'a PoolAnswer,
        max_answers: usize,
        start: usize,
        qtype: RecordType,
        ans: &mut Answer<'a>,
        depth: usize,
        draw: &mut Draw<'_>,
    ) {
        let n = pool.records.len();
        if n == 0 {
            // The chosen pool has nothing of this type.
            ans.soa = Some(pool.nodata.as_ref().unwrap_or(&self.neg_soa));
        }
        for j in 0..max_answers.min(n) {
            ans.answers.push(&pool.records[(start + j) % n]);
        }
        if let Some(target) = &pool.chase
            && qtype != RecordType::CNAME
            && depth < MAX_CHAIN
        {
            self.lookup(target, qtype, ans, depth + 1, draw);
        }
    }

    /// The zone cut at or above `qname`, if any: (cut name, NS, glue).
    fn cut_above(&self, qname: &LowerName) -> Option<(&LowerName, &[Record], &[Record])> {
        self.cuts
            .iter()
            .filter(|c| c.zone_of(qname))
            .max_by_key(|c| c.num_labels())
            .and_then(|c| match self.names.get(c) {
                Some(Node::Cut { ns, glue }) => Some((c, ns.as_slice(), glue.as_slice())),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests;
