//! [`Plan::build`]'s work: zones + inputs → the plan's nodes, pure.

use super::*;
use crate::zone::Assignment;
use hickory_proto::rr::rdata::TXT;

pub(super) fn build_zone(
    z: &Zone,
    inputs: &dyn Inputs,
    stats: &Stats,
    serial: u32,
    marker: Option<&Marker>,
) -> ZonePlan {
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
    if let Some(keys) = &z.dnssec {
        // The DNSKEY set and, for parents that scan, CDS and CDNSKEY (RFC 7344).
        let (cds, cdnskey) = keys.cds_records(z.ttl);
        apex_sets.push(keys.dnskey_records(z.ttl));
        apex_sets.extend([cds, cdnskey].into_iter().filter(|s| !s.is_empty()));
    }
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
            Node::Service(Box::new(build_service(
                s, false, inputs, stats, &origin, &neg_soa,
            ))),
        );
        if let Some(st) = &s.staging {
            names.insert(
                LowerName::from(st),
                Node::Service(Box::new(build_service(
                    s, true, inputs, stats, &origin, &neg_soa,
                ))),
            );
        }
    }

    if let Some(m) = marker
        && let Some((name, node)) = marker_node(z, inputs, m, &origin)
    {
        names.insert(name, node);
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

    let mut plan = ZonePlan {
        counters: stats.zone(&origin.to_string()),
        origin,
        neg_soa,
        names,
        cuts,
        sec: None,
    };
    if let Some(keys) = &z.dnssec {
        // Signing reads the wall clock: signatures are absolute in time.
        let now = crate::clock::unix_ms() / 1000;
        plan.sec = Some(secure::ZoneSec::build(&plan, keys, now));
    }
    plan
}

/// The `_dnsshift.<origin>` TXT node: one record, TTL 0, one string each
/// for the epoch, the node, the zones' digest and every service's phase.
fn marker_node(
    z: &Zone,
    inputs: &dyn Inputs,
    m: &Marker,
    origin: &LowerName,
) -> Option<(LowerName, Node)> {
    let name = Name::from_ascii(MARKER_LABEL)
        .and_then(|l| l.append_domain(&z.origin))
        .ok()?;
    let mut strings = vec![
        format!("epoch={}", m.epoch),
        format!("node={}", m.node),
        format!("zones={}", m.zones),
    ];
    for s in &z.services {
        strings.push(format!("{}={}", s.short, s.phases[inputs.phase(s)].name));
    }
    let record = Record::from_rdata(name.clone(), 0, RData::TXT(TXT::new(strings)));
    Some((
        LowerName::from(&name),
        static_node(vec![vec![record]], Vec::new(), origin),
    ))
}

/// A node of static data; a CNAME's in-zone target is resolved here, once.
pub(super) fn static_node(sets: Vec<Vec<Record>>, glue: Vec<Record>, origin: &LowerName) -> Node {
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

pub(super) fn build_service(
    s: &Service,
    staging: bool,
    inputs: &dyn Inputs,
    stats: &Stats,
    origin: &LowerName,
    neg_soa: &Record,
) -> ServiceNode {
    let (weights, ttl, only) = name_params(s, inputs, staging);
    // A NODATA drawn for a pool is cached no longer than that pool's
    // answers would be, so that each family splits by the weights in time
    // as well as in draws (RFC 2308 §5: the SOA's TTL bounds the caching).
    let mut nodata = neg_soa.clone();
    nodata.ttl = nodata.ttl.min(ttl);
    let owner = if staging {
        s.staging.clone().unwrap_or_else(|| s.name.clone())
    } else {
        s.name.clone()
    };
    let select = |family| {
        let d = decide(s, &weights, only, family, inputs);
        selection(s, &d, &owner, ttl, staging, stats, origin, &nodata)
    };
    ServiceNode {
        max_answers: s.max_answers,
        a: select(Family::V4),
        aaaa: select(Family::V6),
        other: select(Family::Other),
    }
}

/// The plan's form of a [`Decision`]: records and counters of the pools
/// it answers; `nodata` is the SOA of a drawn pool's NODATA.
#[allow(clippy::too_many_arguments)] // the service's answer parameters, threaded through
pub(super) fn selection(
    s: &Service,
    d: &Decision,
    owner: &Name,
    ttl: u32,
    staging: bool,
    stats: &Stats,
    origin: &LowerName,
    nodata: &Record,
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
    // No pool has anything of the family (MX at an address-only name,
    // AAAA at an IPv4-only service): NODATA whatever the phase, and no
    // pool is counted. Otherwise a NODATA is the drawn pool's.
    if answered.is_empty()
        || (answered.iter().all(|(_, p)| p.answer.is_empty())
            && d.pools.iter().flatten().all(|p| !p.of_family))
    {
        return Selection::NoData;
    }
    let cum = cumulative(answered.iter().map(|(_, p)| p.pick));
    let sticky = (s.assignment == Assignment::Sticky).then(|| sticky_pick(s, &answered));
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
                nodata: eps.is_empty().then(|| nodata.clone()),
            }
        })
        .collect();
    Selection::Weighted {
        cumulative: cum,
        pools,
        sticky,
    }
}

/// The rendezvous candidates of a sticky selection: the answered pools by
/// name and pick weight, and their answered endpoints by id.
fn sticky_pick(s: &Service, answered: &[(usize, &PoolDecision)]) -> StickyPick {
    let cfg = StickyConfig::of(&s.sticky);
    let seed = cfg.seed;
    let mut pools: Box<[sticky::Candidate]> = answered
        .iter()
        .map(|(i, p)| (seed.salt(&s.pools[*i].name), p.pick))
        .collect();
    sticky::reduce(&mut pools);
    let endpoints: Box<[Box<[sticky::Candidate]>]> = answered
        .iter()
        .map(|(i, p)| {
            let pool = &s.pools[*i];
            p.answer
                .iter()
                .map(|&e| {
                    (
                        seed.salt(&format!("{}/{}", pool.name, pool.endpoints[e].id)),
                        1,
                    )
                })
                .collect()
        })
        .collect();
    let depends =
        pools.iter().filter(|(_, w)| *w > 0).count() > 1 || endpoints.iter().any(|e| e.len() > 1);
    StickyPick {
        cfg,
        pools,
        endpoints,
        depends,
    }
}

pub(super) fn record(owner: &Name, ttl: u32, target: &Target) -> Record {
    let data = match target {
        Target::V4(a) => RData::A(A(*a)),
        Target::V6(a) => RData::AAAA(AAAA(*a)),
        Target::Host(n) => RData::CNAME(CNAME(n.clone())),
    };
    Record::from_rdata(owner.clone(), ttl, data)
}
