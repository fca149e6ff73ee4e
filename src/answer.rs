//! The answer plan: an immutable snapshot of everything a DNS answer needs,
//! built from zones + operator state + health, and the lookup over it.
//!
//! The plan is built off the query path whenever an input changes and
//! swapped in whole; a query only reads it. Per query the lookup draws one
//! random number for the pool, one for the rotation, bumps a few atomic
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

pub mod wire;

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

/// Whether pool `pool` answers the name of `decisions` (any family).
pub fn answered(decisions: &[(Family, Decision)], pool: usize) -> bool {
    decisions
        .iter()
        .any(|(_, d)| d.pools[pool].as_ref().is_some_and(|p| p.role.answered()))
}

// ------------------------------------------------------------------ the plan

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
    /// Pick a pool by weight.
    Weighted {
        cumulative: Vec<u64>,
        pools: Vec<PoolAnswer>,
    },
}

#[derive(Debug)]
struct PoolAnswer {
    records: Vec<Record>,
    counter: PoolCounter,
    /// For a CNAME pool whose target is inside the zone: follow it.
    chase: Option<LowerName>,
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
#[derive(Debug, Default)]
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
        let zones: Vec<ZonePlan> = zones
            .iter()
            .map(|z| build_zone(z, inputs, stats, serial))
            .collect();
        Plan {
            wire: wire::WirePlan::build(&zones, &stats.unmatched),
            zones,
            serial,
            unmatched: stats.unmatched.clone(),
        }
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
        zone.lookup(qname, qtype, &mut ans, 0, &mut Draw { now_ms, rng });
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
}

impl<'r> Draw<'r> {
    /// For building templates of deterministic answers, which draw and
    /// count nothing.
    pub(crate) fn none(rng: &'r mut fastrand::Rng) -> Draw<'r> {
        Draw { now_ms: 0, rng }
    }

    /// A weighted pick among `cumulative` weights, and the rotation start
    /// among the picked pool's `n(i)` records.
    pub(crate) fn pick(
        &mut self,
        cumulative: &[u64],
        n: impl Fn(usize) -> usize,
    ) -> Option<(usize, usize)> {
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
                Selection::Weighted { cumulative, pools } => {
                    let Some((i, start)) = draw.pick(cumulative, |i| pools[i].records.len()) else {
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
            ans.soa = Some(&self.neg_soa);
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

fn build_zone(z: &Zone, inputs: &dyn Inputs, stats: &Stats, serial: u32) -> ZonePlan {
    let origin = LowerName::from(&z.origin);
    let soa_rdata = RData::SOA(SOA::new(
        z.nameservers
            .first()
            .cloned()
            .unwrap_or_else(|| z.origin.clone()),
        z.hostmaster.clone(),
        serial,
        z.refresh as i32,
        z.retry as i32,
        z.expire as i32,
        z.negative_ttl,
    ));
    let soa = Record::from_rdata(z.origin.clone(), z.ttl, soa_rdata.clone());
    // RFC 2308 §5: negative answers carry the SOA with TTL min(TTL, MINIMUM).
    let neg_soa = Record::from_rdata(z.origin.clone(), z.ttl.min(z.negative_ttl), soa_rdata);

    // Static records grouped by owner, then type.
    let mut by_name: HashMap<LowerName, Vec<Vec<Record>>> = HashMap::new();
    for r in &z.records {
        let sets = by_name.entry(LowerName::from(&r.name)).or_default();
        match sets.iter_mut().find(|s| {
            s.first()
                .is_some_and(|x| x.record_type() == r.record_type())
        }) {
            Some(s) => s.push(r.clone()),
            None => sets.push(vec![r.clone()]),
        }
    }
    let addresses_of = |n: &Name| -> Vec<Record> {
        by_name
            .get(&LowerName::from(n))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
            .cloned()
            .collect()
    };

    let mut names: HashMap<LowerName, Node> = HashMap::new();
    let ns: Vec<Record> = z
        .nameservers
        .iter()
        .map(|n| Record::from_rdata(z.origin.clone(), z.ttl, RData::NS(NS(n.clone()))))
        .collect();
    let apex_glue: Vec<Record> = z.nameservers.iter().flat_map(&addresses_of).collect();
    let mut apex_sets = vec![vec![soa], ns];
    apex_sets.extend(by_name.get(&origin).cloned().unwrap_or_default());
    names.insert(origin.clone(), static_node(apex_sets, apex_glue, &origin));

    let mut cuts = Vec::new();
    for (name, sets) in &by_name {
        if *name == origin {
            continue;
        }
        let ns_set = sets
            .iter()
            .find(|s| s.first().is_some_and(|r| r.record_type() == RecordType::NS));
        let node = match ns_set {
            Some(ns) => {
                cuts.push(name.clone());
                let glue = ns
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::NS(NS(t)) => Some(t),
                        _ => None,
                    })
                    .flat_map(&addresses_of)
                    .collect();
                Node::Cut {
                    ns: ns.clone(),
                    glue,
                }
            }
            None => static_node(sets.clone(), Vec::new(), &origin),
        };
        names.insert(name.clone(), node);
    }

    for s in &z.services {
        names.insert(
            LowerName::from(&s.name),
            Node::Service(Box::new(build_service(s, false, inputs, stats, &origin))),
        );
        if let Some(st) = &s.staging {
            names.insert(
                LowerName::from(st),
                Node::Service(Box::new(build_service(s, true, inputs, stats, &origin))),
            );
        }
    }

    // Empty non-terminals: every ancestor of a name, up to the apex, exists.
    let existing: Vec<LowerName> = names.keys().cloned().collect();
    for n in existing {
        let mut p = n.base_name();
        while p.num_labels() > origin.num_labels() {
            names.entry(p.clone()).or_insert(Node::Empty);
            p = p.base_name();
        }
    }

    ZonePlan {
        counters: stats.zone(&origin.to_string()),
        origin,
        neg_soa,
        names,
        cuts,
    }
}

/// A node of static data; a CNAME's in-zone target is resolved here, once.
fn static_node(sets: Vec<Vec<Record>>, glue: Vec<Record>, origin: &LowerName) -> Node {
    let cname = sets
        .iter()
        .enumerate()
        .find_map(|(i, set)| match set.first().map(|r| &r.data) {
            Some(RData::CNAME(CNAME(target))) => {
                let t = LowerName::from(target);
                Some((i, origin.zone_of(&t).then_some(t)))
            }
            _ => None,
        });
    Node::Static { sets, glue, cname }
}

/// The record family a decision is made for: pools answer A queries from
/// their IPv4 endpoints and AAAA from their IPv6 ones, so which pools are
/// answered can differ between the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// A queries (and ANY).
    V4,
    /// AAAA queries.
    V6,
    /// Every other type; also every type for a service with a host-name
    /// pool, which is decided for whole pools (see [`decide`]).
    Other,
}

impl Family {
    /// The families whose decisions differ for a service: one for a
    /// service with a host-name pool, A and AAAA otherwise.
    pub fn of(s: &Service) -> &'static [Family] {
        if whole_pools(s) {
            &[Family::Other]
        } else {
            &[Family::V4, Family::V6]
        }
    }

    /// The label operators see ("A", "AAAA", "*").
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "A",
            Family::V6 => "AAAA",
            Family::Other => "*",
        }
    }

    fn matches(self, target: &Target) -> bool {
        matches!(
            (target, self),
            (Target::Host(_), _) | (Target::V4(_), Family::V4) | (Target::V6(_), Family::V6)
        )
    }
}

/// What a pool is doing right now for one name and record family. The
/// answer plan is built from it and `status` shows it, so what operators
/// see is what DNS does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Answered in proportion to its weight in the current phase.
    Weighted,
    /// Weight 0, answered because no weighted pool has a usable endpoint.
    StandbyAnswering,
    /// Answered although it has no usable endpoint: no pool has one, and
    /// the service fails open.
    FailOpen,
    /// Weight 0 and not answered: a weighted pool is usable.
    Standby,
    /// Weighted but not answered: it has no usable endpoint while another
    /// pool has.
    Unusable,
    /// Not answered: no pool has a usable endpoint and the service answers
    /// SERVFAIL (`on_all_down = "servfail"`).
    Servfail,
    /// Decommissioned by the operator: never answered.
    Decommissioned,
}

impl Role {
    /// Whether queries are answered with this pool.
    pub fn answered(self) -> bool {
        matches!(
            self,
            Role::Weighted | Role::StandbyAnswering | Role::FailOpen
        )
    }
}

/// One pool's part in a [`Decision`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDecision {
    /// What the pool is doing.
    pub role: Role,
    /// Weight by which the pool is picked among the answered ones (0 when
    /// it is not answered; standby pools share equally).
    pub pick: u32,
    /// Indexes into the pool's endpoints of those answered when it is
    /// picked (for a whole-pool pick, possibly none of the queried family).
    pub answer: Vec<usize>,
    /// Whether the pool has an endpoint that is enabled and healthy.
    pub usable: bool,
}

/// Which pools answer one name for one record family, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Per pool, in configuration order; `None` for a pool that has no
    /// endpoint of the family (or is not the staging pool, for the staging
    /// name).
    pub pools: Vec<Option<PoolDecision>>,
    /// No pool has a usable endpoint and the answer fails open.
    pub fail_open: bool,
    /// No pool has a usable endpoint and the service answers SERVFAIL.
    pub servfail: bool,
}

/// Whether a service is decided for whole pools: a CNAME is answered for
/// every type, so deciding per type would let the CNAME pool win every
/// query its rivals have no records for (AAAA, HTTPS, ...), and resolvers
/// would then follow that CNAME for all types. The chosen address pool
/// answers its records of the type, or NODATA.
fn whole_pools(s: &Service) -> bool {
    s.pools.iter().any(|p| p.is_host())
}

/// Decides what every pool of a service does for one name and family:
/// the one place that turns weights, health and operator overrides into
/// answers. Pure.
///
/// An endpoint is *usable* when it is enabled and healthy. Tiers, the
/// first with a pool wins; within a tier the pools weighted above 0 are
/// picked by weight, and only when there are none the standby pools
/// (weight 0) in equal shares:
///
/// 1. pools with a usable endpoint, answering those;
/// 2. nothing usable: SERVFAIL if the service asks for it, else (fail open)
///    pools with an enabled endpoint, answering the enabled ones whatever
///    their health;
/// 3. not even an enabled endpoint: every endpoint, disabled ones too, so
///    that a shifted name never answers an empty NOERROR.
///
/// Decommissioned pools are never answered. `only` restricts the decision
/// to one pool (the staging name).
pub fn decide(
    s: &Service,
    weights: &[u32],
    only: Option<usize>,
    family: Family,
    inputs: &dyn Inputs,
) -> Decision {
    struct Cand {
        pool: usize,
        weight: u32,
        /// Endpoint indexes of the family per tier: usable, enabled, all.
        tiers: [Vec<usize>; 3],
        /// Whether the pool qualifies for each tier.
        up: [bool; 3],
    }
    let whole = whole_pools(s);
    let mut pools: Vec<Option<PoolDecision>> = vec![None; s.pools.len()];
    let mut cands = Vec::new();
    for (i, pool) in s.pools.iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        let of_family: Vec<usize> = (0..pool.endpoints.len())
            .filter(|&e| family.matches(&pool.endpoints[e].target))
            .collect();
        if (whole && pool.endpoints.is_empty()) || (!whole && of_family.is_empty()) {
            continue;
        }
        let enabled = |e: &Endpoint| !inputs.disabled(s, pool, e);
        let usable = |e: &Endpoint| enabled(e) && inputs.healthy(s, pool, e);
        let pick = |f: &dyn Fn(&Endpoint) -> bool| -> Vec<usize> {
            of_family
                .iter()
                .copied()
                .filter(|&e| f(&pool.endpoints[e]))
                .collect()
        };
        let tiers = [pick(&usable), pick(&enabled), of_family.clone()];
        let any_usable = pool.endpoints.iter().any(usable);
        let up = if whole {
            [any_usable, pool.endpoints.iter().any(enabled), true]
        } else {
            [!tiers[0].is_empty(), !tiers[1].is_empty(), true]
        };
        if inputs.decommissioned(s, pool) {
            pools[i] = Some(PoolDecision {
                role: Role::Decommissioned,
                pick: 0,
                answer: Vec::new(),
                usable: any_usable,
            });
            continue;
        }
        pools[i] = Some(PoolDecision {
            role: Role::Standby,
            pick: 0,
            answer: Vec::new(),
            usable: any_usable,
        });
        cands.push(Cand {
            pool: i,
            weight: weights.get(i).copied().unwrap_or(0),
            tiers,
            up,
        });
    }
    let mut decision = Decision {
        pools,
        fail_open: false,
        servfail: false,
    };
    if cands.is_empty() {
        return decision;
    }
    for tier in 0..3 {
        if tier == 1 && s.on_all_down == OnAllDown::Servfail {
            decision.servfail = true;
            for c in &cands {
                if let Some(p) = &mut decision.pools[c.pool] {
                    p.role = Role::Servfail;
                }
            }
            return decision;
        }
        let weighted = cands.iter().any(|c| c.up[tier] && c.weight > 0);
        let chosen = |c: &Cand| c.up[tier] && (c.weight > 0) == weighted;
        if !cands.iter().any(chosen) {
            continue;
        }
        decision.fail_open = tier > 0;
        for c in &cands {
            let Some(p) = &mut decision.pools[c.pool] else {
                continue;
            };
            if chosen(c) {
                p.role = match (tier, c.weight) {
                    (0, 0) => Role::StandbyAnswering,
                    (0, _) => Role::Weighted,
                    _ => Role::FailOpen,
                };
                p.pick = if weighted { c.weight } else { 1 };
                p.answer = c.tiers[tier].clone();
            } else if c.weight > 0 {
                p.role = Role::Unusable;
            }
        }
        return decision;
    }
    decision
}

/// The weights, TTL and pool restriction a service's main name (or its
/// staging name) answers with in the current phase.
fn name_params(s: &Service, inputs: &dyn Inputs, staging: bool) -> (Vec<u32>, u32, Option<usize>) {
    if staging {
        let mut w = vec![0; s.pools.len()];
        w[s.staging_pool] = 1;
        (w, s.ttl, Some(s.staging_pool))
    } else {
        let phase = inputs.phase(s).min(s.phases.len().saturating_sub(1));
        (s.phases[phase].weights.clone(), s.ttl_in(phase), None)
    }
}

/// The decisions for a service's main name (or its staging name) in the
/// current phase, one per family of [`Family::of`]: what `status` shows.
pub fn decisions(s: &Service, inputs: &dyn Inputs, staging: bool) -> Vec<(Family, Decision)> {
    let (weights, _, only) = name_params(s, inputs, staging);
    Family::of(s)
        .iter()
        .map(|&f| (f, decide(s, &weights, only, f, inputs)))
        .collect()
}

fn build_service(
    s: &Service,
    staging: bool,
    inputs: &dyn Inputs,
    stats: &Stats,
    origin: &LowerName,
) -> ServiceNode {
    let (weights, ttl, only) = name_params(s, inputs, staging);
    let owner = if staging {
        s.staging.clone().unwrap_or_else(|| s.name.clone())
    } else {
        s.name.clone()
    };
    let select = |family| {
        let d = decide(s, &weights, only, family, inputs);
        selection(s, &d, &owner, ttl, staging, stats, origin)
    };
    ServiceNode {
        max_answers: s.max_answers,
        a: select(Family::V4),
        aaaa: select(Family::V6),
        other: select(Family::Other),
    }
}

/// The plan's form of a [`Decision`]: records and counters of the pools
/// it answers.
fn selection(
    s: &Service,
    d: &Decision,
    owner: &Name,
    ttl: u32,
    staging: bool,
    stats: &Stats,
    origin: &LowerName,
) -> Selection {
    if d.servfail {
        return Selection::ServFail;
    }
    let key = s.key();
    let answered: Vec<(usize, &PoolDecision)> = d
        .pools
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.as_ref().filter(|p| p.role.answered()).map(|p| (i, p)))
        .collect();
    if answered.is_empty() {
        return Selection::NoData;
    }
    let cum = cumulative(answered.iter().map(|(_, p)| p.pick));
    let pools = answered
        .into_iter()
        .map(|(i, p)| {
            let pool = &s.pools[i];
            let eps: Vec<&Endpoint> = p.answer.iter().map(|&e| &pool.endpoints[e]).collect();
            let chase = eps.first().and_then(|e| match &e.target {
                Target::Host(n) => {
                    let l = LowerName::from(n);
                    origin.zone_of(&l).then_some(l)
                }
                _ => None,
            });
            PoolAnswer {
                records: eps.iter().map(|e| record(owner, ttl, &e.target)).collect(),
                counter: PoolCounter {
                    endpoints: eps
                        .iter()
                        .map(|e| stats.endpoint(&key, &pool.name, &e.id))
                        .collect(),
                    stats: stats.pool(&key, &pool.name, s.max_ttl()),
                    staging,
                    ttl,
                },
                chase,
            }
        })
        .collect();
    Selection::Weighted {
        cumulative: cum,
        pools,
    }
}

fn record(owner: &Name, ttl: u32, target: &Target) -> Record {
    let data = match target {
        Target::V4(a) => RData::A(A(*a)),
        Target::V6(a) => RData::AAAA(AAAA(*a)),
        Target::Host(n) => RData::CNAME(CNAME(n.clone())),
    };
    Record::from_rdata(owner.clone(), ttl, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::Source;

    fn zone(services: &str) -> Zone {
        let text = format!(
            r#"
[zone]
origin = "z.test."
nameservers = ["ns1"]
hostmaster = "h.z.test."
negative_ttl = "20s"
records = """
ns1 IN A 203.0.113.53
a.b IN TXT "deep"
docs IN CNAME ns1
sub IN NS ns.sub
ns.sub IN A 203.0.113.99
"""
{services}"#
        );
        crate::zone::parse(&Source {
            path: "t.toml".into(),
            text,
        })
        .unwrap()
    }

    const SVC: &str = r#"
[[service]]
name = "www"
staging = "www-next"
max_answers = 1
[service.pools]
old = ["192.0.2.1", "192.0.2.2"]
new = ["198.51.100.1", "2001:db8::1"]
"#;

    fn plan(z: &Zone, inputs: &dyn Inputs) -> Plan {
        Plan::build(std::slice::from_ref(z), inputs, &Stats::default(), 7)
    }

    fn name(s: &str) -> LowerName {
        LowerName::from(Name::from_ascii(s).unwrap())
    }

    fn ask<'a>(p: &'a Plan, q: &str, t: RecordType) -> Answer<'a> {
        match p.lookup(&name(q), t, 0, &mut ThreadRandom) {
            Lookup::Zone(a, _) => a,
            Lookup::Refused => panic!("refused {q}"),
        }
    }

    #[test]
    fn negative_answers_and_structure() {
        let z = zone(SVC);
        let p = plan(&z, &ConfigOnly);
        assert!(matches!(
            p.lookup(
                &name("example.org."),
                RecordType::A,
                0,
                &mut fastrand::Rng::with_seed(7)
            ),
            Lookup::Refused
        ));
        // (name, type, rcode, answers, has soa, authoritative)
        let cases = [
            (
                "z.test.",
                RecordType::SOA,
                ResponseCode::NoError,
                1,
                false,
                true,
            ),
            (
                "z.test.",
                RecordType::NS,
                ResponseCode::NoError,
                1,
                false,
                true,
            ),
            (
                "z.test.",
                RecordType::A,
                ResponseCode::NoError,
                0,
                true,
                true,
            ),
            (
                "nope.z.test.",
                RecordType::A,
                ResponseCode::NXDomain,
                0,
                true,
                true,
            ),
            (
                "b.z.test.",
                RecordType::TXT,
                ResponseCode::NoError,
                0,
                true,
                true,
            ),
            (
                "a.b.z.test.",
                RecordType::TXT,
                ResponseCode::NoError,
                1,
                false,
                true,
            ),
            (
                "x.www.z.test.",
                RecordType::A,
                ResponseCode::NXDomain,
                0,
                true,
                true,
            ),
            (
                "www.z.test.",
                RecordType::MX,
                ResponseCode::NoError,
                0,
                true,
                true,
            ),
            (
                "WWW.Z.TEST.",
                RecordType::A,
                ResponseCode::NoError,
                1,
                false,
                true,
            ),
            (
                "docs.z.test.",
                RecordType::A,
                ResponseCode::NoError,
                2,
                false,
                true,
            ),
            (
                "host.sub.z.test.",
                RecordType::A,
                ResponseCode::NoError,
                0,
                false,
                false,
            ),
        ];
        for (q, t, rcode, n, soa, aa) in cases {
            let a = ask(&p, q, t);
            assert_eq!(a.rcode, rcode, "{q} {t}");
            assert_eq!(a.answers.len(), n, "{q} {t}");
            assert_eq!(a.soa.is_some(), soa, "{q} {t}");
            assert_eq!(a.authoritative, aa, "{q} {t}");
            if soa {
                assert_eq!(a.soa.unwrap().ttl, 20, "negative TTL");
            }
        }
        let referral = ask(&p, "host.sub.z.test.", RecordType::A);
        assert_eq!(referral.authority.len(), 1);
        assert_eq!(referral.additionals.len(), 1);
    }

    #[test]
    fn staging_answers_only_new_and_main_only_old_in_first_phase() {
        let z = zone(SVC);
        let p = plan(&z, &ConfigOnly);
        for _ in 0..200 {
            let a = ask(&p, "www.z.test.", RecordType::A);
            assert!(a.answers[0].data.to_string().starts_with("192.0.2."));
            let s = ask(&p, "www-next.z.test.", RecordType::A);
            assert_eq!(s.answers[0].data.to_string(), "198.51.100.1");
        }
        // AAAA: only new has an IPv6 endpoint; it is standby in separate-domain.
        let a = ask(&p, "www.z.test.", RecordType::AAAA);
        assert_eq!(a.answers[0].data.to_string(), "2001:db8::1");
    }

    struct Down(&'static [&'static str]);
    impl Inputs for Down {
        fn phase(&self, s: &Service) -> usize {
            s.initial_phase
        }
        fn disabled(&self, _: &Service, _: &Pool, _: &Endpoint) -> bool {
            false
        }
        fn healthy(&self, _: &Service, _: &Pool, e: &Endpoint) -> bool {
            !self.0.contains(&e.id.as_str())
        }
        fn decommissioned(&self, _: &Service, _: &Pool) -> bool {
            false
        }
    }

    /// The lookup takes its time and its draws from the caller: the same
    /// seed gives the same answers, and the drain clock is the time given.
    #[test]
    fn now_and_the_random_source_are_passed_in() {
        let z = zone(SVC);
        let stats = Stats::default();
        let p = Plan::build(std::slice::from_ref(&z), &ConfigOnly, &stats, 7);
        let answers = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..20)
                .map(
                    |_| match p.lookup(&name("www.z.test."), RecordType::A, 5_000, &mut rng) {
                        Lookup::Zone(a, _) => a.answers[0].data.to_string(),
                        Lookup::Refused => panic!("refused"),
                    },
                )
                .collect::<Vec<_>>()
        };
        assert_eq!(answers(1), answers(1));
        let old = stats.pool("www.z.test.", "old", 0);
        assert_eq!(old.last_answered_ms.load(Ordering::Relaxed), 5_000);
    }

    #[test]
    fn health_tiers() {
        let z = zone(SVC);
        let first = |inputs: &dyn Inputs, t| {
            let p = plan(&z, inputs);
            let mut seen: Vec<String> = (0..300)
                .map(|_| ask(&p, "www.z.test.", t).answers[0].data.to_string())
                .collect();
            seen.sort();
            seen.dedup();
            seen
        };
        // (down endpoints, expected set of answered A addresses)
        let cases: [(&'static [&'static str], &[&str]); 4] = [
            (&[], &["192.0.2.1", "192.0.2.2"]),
            (&["192.0.2.1"], &["192.0.2.2"]),
            // old all down: new (standby) takes over
            (&["192.0.2.1", "192.0.2.2"], &["198.51.100.1"]),
            // everything down: fail open with the phase's weights
            (
                &["192.0.2.1", "192.0.2.2", "198.51.100.1"],
                &["192.0.2.1", "192.0.2.2"],
            ),
        ];
        for (down, want) in cases {
            assert_eq!(first(&Down(down), RecordType::A), want, "down {down:?}");
        }
        let zs = zone(&SVC.replace(
            "max_answers = 1",
            "max_answers = 1\non_all_down = \"servfail\"",
        ));
        let p = plan(&zs, &Down(&["192.0.2.1", "192.0.2.2", "198.51.100.1"]));
        assert_eq!(
            ask(&p, "www.z.test.", RecordType::A).rcode,
            ResponseCode::ServFail
        );
    }

    #[test]
    fn host_name_pool_is_picked_as_a_whole_pool_for_every_type() {
        // old has only IPv4; new is a CNAME. In separate-domain new is
        // standby: AAAA and other types must not fall through to the CNAME.
        let z = zone(
            "[[service]]\nname = \"www\"\n[service.pools]\nold = [\"192.0.2.1\"]\nnew = \"lb.example.net.\"\n[service.health]\nkind = \"none\"\n",
        );
        let p = plan(&z, &ConfigOnly);
        for t in [RecordType::AAAA, RecordType::MX, RecordType::Unknown(65)] {
            for _ in 0..50 {
                let a = ask(&p, "www.z.test.", t);
                assert_eq!(a.rcode, ResponseCode::NoError);
                assert!(a.answers.is_empty(), "{t}: {:?}", a.answers);
                assert!(a.soa.is_some(), "{t}: NODATA carries the SOA");
            }
        }
        assert_eq!(
            ask(&p, "www.z.test.", RecordType::A).answers[0]
                .data
                .to_string(),
            "192.0.2.1"
        );
        // old all down: the CNAME pool takes over as standby, for every type.
        let p = plan(&z, &Down(&["192.0.2.1"]));
        let a = ask(&p, "www.z.test.", RecordType::AAAA);
        assert_eq!(a.answers[0].record_type(), RecordType::CNAME);
    }

    #[test]
    fn a_cname_into_a_delegation_stops_at_the_cname() {
        let z = zone("");
        let mut z = z;
        z.records.push(Record::from_rdata(
            Name::from_ascii("alias.z.test.").unwrap(),
            60,
            RData::CNAME(CNAME(Name::from_ascii("host.sub.z.test.").unwrap())),
        ));
        let p = plan(&z, &ConfigOnly);
        let a = ask(&p, "alias.z.test.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(a.authoritative);
        assert_eq!(a.answers.len(), 1);
        assert!(a.soa.is_none() && a.authority.is_empty());
    }

    /// Inputs with a phase index, down and disabled endpoints, and
    /// decommissioned pools.
    struct Situation {
        phase: usize,
        down: &'static [&'static str],
        disabled: &'static [&'static str],
        gone: &'static [&'static str],
    }
    impl Inputs for Situation {
        fn phase(&self, _: &Service) -> usize {
            self.phase
        }
        fn disabled(&self, _: &Service, _: &Pool, e: &Endpoint) -> bool {
            self.disabled.contains(&e.id.as_str())
        }
        fn healthy(&self, _: &Service, _: &Pool, e: &Endpoint) -> bool {
            !self.down.contains(&e.id.as_str())
        }
        fn decommissioned(&self, _: &Service, p: &Pool) -> bool {
            self.gone.contains(&p.name.as_str())
        }
    }

    #[test]
    fn decide_roles_table() {
        use Role::*;
        let z = zone(SVC);
        let s = &z.services[0];
        const OLD: &[&str] = &["192.0.2.1", "192.0.2.2"];
        const ALL: &[&str] = &["192.0.2.1", "192.0.2.2", "198.51.100.1", "2001:db8::1"];
        const NEW: &[&str] = &["198.51.100.1", "2001:db8::1"];
        // (phase, down, disabled, decommissioned, family,
        //  roles of old and new, fail open, servfail)
        type Case = (
            usize,
            &'static [&'static str],
            &'static [&'static str],
            &'static [&'static str],
            Family,
            [Option<Role>; 2],
            bool,
        );
        let cases: &[Case] = &[
            (
                0,
                &[],
                &[],
                &[],
                Family::V4,
                [Some(Weighted), Some(Standby)],
                false,
            ),
            // old has no IPv6: new answers AAAA as standby.
            (
                0,
                &[],
                &[],
                &[],
                Family::V6,
                [None, Some(StandbyAnswering)],
                false,
            ),
            (
                1,
                &[],
                &[],
                &[],
                Family::V4,
                [Some(Weighted), Some(Weighted)],
                false,
            ),
            (
                2,
                &[],
                &[],
                &[],
                Family::V4,
                [Some(Standby), Some(Weighted)],
                false,
            ),
            // new down in cutover: old answers as standby.
            (
                2,
                NEW,
                &[],
                &[],
                Family::V4,
                [Some(StandbyAnswering), Some(Unusable)],
                false,
            ),
            // new disabled in cutover: the same.
            (
                2,
                &[],
                NEW,
                &[],
                Family::V4,
                [Some(StandbyAnswering), Some(Unusable)],
                false,
            ),
            // everything down: the weighted pool fails open.
            (
                2,
                ALL,
                &[],
                &[],
                Family::V4,
                [Some(Standby), Some(FailOpen)],
                true,
            ),
            (
                0,
                ALL,
                &[],
                &[],
                Family::V4,
                [Some(FailOpen), Some(Standby)],
                true,
            ),
            // all down, new disabled: old (standby, enabled) fails open.
            (
                2,
                ALL,
                NEW,
                &[],
                Family::V4,
                [Some(FailOpen), Some(Unusable)],
                true,
            ),
            // everything disabled: still answered, disabled ones included.
            (
                2,
                &[],
                ALL,
                &[],
                Family::V4,
                [Some(Standby), Some(FailOpen)],
                true,
            ),
            (
                2,
                NEW,
                &[],
                &["old"],
                Family::V4,
                [Some(Decommissioned), Some(FailOpen)],
                true,
            ),
            (
                0,
                OLD,
                &[],
                &["new"],
                Family::V4,
                [Some(FailOpen), Some(Decommissioned)],
                true,
            ),
        ];
        for (i, (phase, down, disabled, gone, family, want, fail_open)) in cases.iter().enumerate()
        {
            let inputs = Situation {
                phase: *phase,
                down,
                disabled,
                gone,
            };
            let d = decide(s, &s.phases[*phase].weights, None, *family, &inputs);
            let roles: Vec<Option<Role>> =
                d.pools.iter().map(|p| p.as_ref().map(|p| p.role)).collect();
            assert_eq!(roles, want.to_vec(), "case {i}");
            assert_eq!(d.fail_open, *fail_open, "case {i}");
            assert!(!d.servfail, "case {i}");
        }
        // Everything disabled: the answer carries the disabled endpoints
        // rather than an empty NOERROR.
        let p = plan(
            &z,
            &Situation {
                phase: 2,
                down: &[],
                disabled: ALL,
                gone: &[],
            },
        );
        assert_eq!(
            ask(&p, "www.z.test.", RecordType::A).answers[0]
                .data
                .to_string(),
            "198.51.100.1"
        );
        assert_eq!(
            ask(&p, "www-next.z.test.", RecordType::A).answers[0]
                .data
                .to_string(),
            "198.51.100.1"
        );
        // With on_all_down = "servfail": SERVFAIL, every live pool says so.
        let zs = zone(&SVC.replace(
            "max_answers = 1",
            "max_answers = 1\non_all_down = \"servfail\"",
        ));
        let s = &zs.services[0];
        let inputs = Situation {
            phase: 2,
            down: &[],
            disabled: ALL,
            gone: &["old"],
        };
        let d = decide(s, &s.phases[2].weights, None, Family::V4, &inputs);
        assert!(d.servfail && !d.fail_open);
        let roles: Vec<Option<Role>> = d.pools.iter().map(|p| p.as_ref().map(|p| p.role)).collect();
        assert_eq!(roles, vec![Some(Decommissioned), Some(Servfail)]);
        let p = plan(&zs, &inputs);
        assert_eq!(
            ask(&p, "www-next.z.test.", RecordType::A).rcode,
            ResponseCode::ServFail
        );
    }

    #[test]
    fn serial_increases() {
        assert_eq!(next_serial(5, 100), 100);
        assert_eq!(next_serial(100, 100), 101);
        assert_eq!(next_serial(200, 100), 201);
    }
}
