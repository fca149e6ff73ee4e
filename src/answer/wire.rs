//! The plan's answers precomputed in wire format, for the UDP fast path.
//!
//! When a [`Plan`](super::Plan) is built, every name of every zone gets its
//! responses encoded once, by hickory's encoder, for every query type that
//! makes a difference in that zone (one shared response covers all other
//! types). A shifted name gets one response per (pool, rotation start), so
//! per query only the ID, two header bits (RD, CD), the question as the
//! client wrote it, the weighted pick, the rotation and the EDNS OPT record
//! differ. Answering copies one template and patches those: no allocation,
//! no lock, no name compression work.
//!
//! Whatever a template cannot express (an answer that does not fit the
//! client's UDP size, a name below a delegation, a CNAME chain into a
//! weighted name, ANY, ...) is [`Outcome::Fallback`]: the hickory handler
//! answers it from the same plan.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use std::net::IpAddr;

use super::sticky::{Client, Ecs};
use super::{Answer, Draw, MAX_CHAIN, Node, PoolCounter, Random, Selection, StickyPick, ZonePlan};
use crate::dns::message::{HEADER_LEN, TYPE_OPT, suffixes};
use crate::stats::QueryCounters;

/// An OPT record without options: root name, type, class (payload), TTL,
/// RDLENGTH.
pub const OPT_LEN: usize = 11;
/// The query type whose answer stands for every type no name in the zone
/// has (from the private-use range, so no zone can hold it).
const OTHER_TYPE: RecordType = RecordType::Unknown(65280);
/// Header flag bits a response copies from the query (RFC 6840 §5.6): RD in
/// the third byte, CD in the fourth.
const RD: u8 = 0x01;
const CD: u8 = 0x10;
/// QR=1 (response) and AA in the third header byte.
const QR: u8 = 0x80;

/// One parsed question, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    /// The request's first 12 bytes.
    pub header: &'a [u8],
    /// The question as the client sent it: name (uncompressed), type, class.
    pub question: &'a [u8],
    /// The name in wire format, lowercased: the lookup key.
    pub lower: &'a [u8],
    /// Query type.
    pub qtype: u16,
    /// The UDP payload size to advertise in the response's OPT record, when
    /// the query had one (already clamped by the caller).
    pub edns: Option<u16>,
    /// The query's EDNS Client Subnet option (only with `edns`): the reply
    /// echoes it with its scope.
    pub ecs: Option<Ecs>,
    /// The DO bit of the query's OPT record: a signed zone answers with
    /// RRSIGs and NSEC proofs ([`super::secure`]).
    pub dnssec_ok: bool,
    /// The data of the query's COOKIE option (only with `edns`), as sent;
    /// its length is one RFC 7873 allows.
    pub cookie: Option<&'a [u8]>,
    /// The COOKIE option data the reply carries (client and server
    /// cookie), set by the caller from `cookie`, the client's address and
    /// the secret ([`crate::dns::cookie::answer`]).
    pub cookie_reply: Option<&'a [u8]>,
}

/// The ECS option's header in a reply: code 8 and length.
const ECS_CODE: u16 = 8;

/// What the fast path does with a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response of this many bytes was written to the output buffer.
    Answered(usize),
    /// Hand the datagram to the hickory handler.
    Fallback,
}

/// The plan's answers in wire format. Empty (everything falls back) for an
/// empty plan.
#[derive(Debug, Default)]
pub struct WirePlan {
    /// Every name of every zone, by lowercased wire name.
    names: HashMap<Box<[u8]>, NameWire>,
    /// Zones by lowercased wire origin: negative answers for other names.
    zones: HashMap<Box<[u8]>, ZoneWire>,
    /// Counters of queries outside every zone.
    unmatched: Arc<QueryCounters>,
}

#[derive(Debug)]
struct NameWire {
    counters: Arc<QueryCounters>,
    /// Responses by query type, for the types that matter in the zone.
    by_type: Vec<(u16, Reply)>,
    /// The response for every other type.
    other: Reply,
}

#[derive(Debug)]
struct ZoneWire {
    counters: Arc<QueryCounters>,
    /// Wire length of the origin.
    origin_len: usize,
    /// The negative SOA record after its owner name (type, class, TTL,
    /// RDATA with uncompressed names): position independent.
    soa_tail: Box<[u8]>,
    /// Delegation points: names below them are referrals (hickory path).
    cuts: Vec<Box<[u8]>>,
    /// Whether the zone is signed.
    signed: bool,
    /// A signed zone's NXDOMAIN proofs.
    nsec: Option<super::secure::NsecWire>,
}

#[derive(Debug)]
enum Reply {
    Fixed(Template),
    Weighted {
        cumulative: Box<[u64]>,
        pools: Box<[PoolWire]>,
        max_answers: usize,
        /// No pool could be picked (a total weight of 0).
        none: Template,
        /// For a sticky service: the key picks the pool.
        sticky: Option<StickyPick>,
    },
    Fallback,
}

#[derive(Debug)]
struct PoolWire {
    /// One response per rotation start (one if the pool has at most one
    /// record of the type).
    variants: Box<[Template]>,
    /// Records of the queried type in the pool (the rotation modulus).
    records: usize,
    counter: PoolCounter,
}

/// A whole response for a query with ID 0, RD=0, CD=0, without EDNS.
#[derive(Debug)]
struct Template {
    bytes: Box<[u8]>,
    /// Where the question ends (the answer records start).
    question_end: usize,
    rcode: ResponseCode,
    /// What a DO=1 query gets.
    signed: Signed,
}

/// The DO=1 form of a [`Template`].
#[derive(Debug)]
enum Signed {
    /// The zone is not signed: the same response.
    Same,
    /// The response with RRSIGs and NSEC proofs.
    Template(Box<Template>),
    /// Left to the hickory handler.
    Fallback,
}

impl WirePlan {
    /// Precomputes the answers of `zones`.
    pub(super) fn build(zones: &[ZonePlan], unmatched: &Arc<QueryCounters>) -> WirePlan {
        let mut plan = WirePlan {
            unmatched: unmatched.clone(),
            ..WirePlan::default()
        };
        for (zi, zone) in zones.iter().enumerate() {
            // The lookup picks the zone with the longest matching origin;
            // a name of this zone that lies in a deeper zone is answered there.
            let deeper: Vec<&LowerName> = zones
                .iter()
                .enumerate()
                .filter(|(i, z)| {
                    *i != zi
                        && z.origin.num_labels() > zone.origin.num_labels()
                        && zone.origin.zone_of(&z.origin)
                })
                .map(|(_, z)| &z.origin)
                .collect();
            let types = zone_types(zone);
            for name in zone.names.keys() {
                if deeper.iter().any(|d| d.zone_of(name)) {
                    continue;
                }
                let mut by_type = Vec::with_capacity(types.len());
                for t in &types {
                    by_type.push((*t, replies(zone, name, RecordType::from(*t))));
                }
                plan.names.insert(
                    wire_name(name),
                    NameWire {
                        counters: zone.counters.clone(),
                        by_type,
                        other: replies(zone, name, OTHER_TYPE),
                    },
                );
            }
            if let Some(z) = zone_wire(zone) {
                plan.zones.insert(wire_name(&zone.origin), z);
            }
        }
        plan
    }

    /// Answers `q` into `out`, which must hold at least `limit` bytes, the
    /// most the response may take. Counts the query like the hickory path
    /// does, unless it falls back.
    /// `now_ms` and `rng` are the lookup's ([`super::Plan::lookup`]).
    pub fn answer(
        &self,
        q: &Question<'_>,
        limit: usize,
        out: &mut [u8],
        now_ms: u64,
        rng: &mut dyn Random,
    ) -> Outcome {
        self.answer_from(q, None, limit, out, now_ms, rng)
    }

    /// [`WirePlan::answer`] for a query from `src` (the resolver), whose
    /// network (or the query's ECS) keys a sticky service's pick.
    pub fn answer_from(
        &self,
        q: &Question<'_>,
        src: Option<IpAddr>,
        limit: usize,
        out: &mut [u8],
        now_ms: u64,
        rng: &mut dyn Random,
    ) -> Outcome {
        let client = Client {
            addr: src,
            ecs: q.ecs,
        };
        let mut draw = Draw {
            now_ms,
            rng,
            client: &client,
            scope: 0,
        };
        let qtype = RecordType::from(q.qtype);
        let limit = limit.min(out.len());
        if let Some(name) = self.names.get(q.lower) {
            let reply = name
                .by_type
                .iter()
                .find(|(t, _)| *t == q.qtype)
                .map_or(&name.other, |(_, r)| r);
            let (template, pool) = match reply {
                Reply::Fallback => return Outcome::Fallback,
                Reply::Fixed(t) => (t, None),
                Reply::Weighted {
                    cumulative,
                    pools,
                    max_answers,
                    none,
                    sticky,
                } => match draw.pick(cumulative, sticky.as_ref(), |i| pools[i].records) {
                    None => (none, None),
                    Some((i, start)) => {
                        let p = &pools[i];
                        let t = &p.variants[start.min(p.variants.len() - 1)];
                        (t, Some((p, start, (*max_answers).min(p.records))))
                    }
                },
            };
            let Some(len) = template.write(q, limit, out, draw.scope) else {
                return Outcome::Fallback;
            };
            if let Some((p, start, k)) = pool {
                p.counter.count(start, k, draw.now_ms);
            }
            name.counters.count(qtype, false, template.rcode);
            return Outcome::Answered(len);
        }
        // Not a name of any zone: NXDOMAIN in the closest enclosing zone,
        // or REFUSED outside every zone.
        for at in suffixes(q.lower) {
            let suffix = &q.lower[at..];
            if let Some(zone) = self.zones.get(suffix) {
                if zone.cuts.iter().any(|c| is_suffix(c, q.lower)) {
                    return Outcome::Fallback;
                }
                let written = if q.dnssec_ok && zone.signed {
                    zone.nxdomain_signed(q, &self.names, limit, out)
                } else {
                    zone.nxdomain(q, limit, out)
                };
                let Some(len) = written else {
                    return Outcome::Fallback;
                };
                zone.counters.count(qtype, false, ResponseCode::NXDomain);
                return Outcome::Answered(len);
            }
        }
        let Some(len) = refused(q, limit, out) else {
            return Outcome::Fallback;
        };
        self.unmatched.count(qtype, false, ResponseCode::Refused);
        Outcome::Answered(len)
    }
}

impl Template {
    /// Copies the template for `q`: the request's ID, RD and CD, its
    /// question bytes (same name, maybe other case, type and class), and an
    /// OPT record if it sent one (with ECS at `scope` if it sent ECS); the
    /// signed form for a DO=1 query. `None` if it does not fit `limit`.
    fn write(&self, q: &Question<'_>, limit: usize, out: &mut [u8], scope: u8) -> Option<usize> {
        if q.dnssec_ok {
            match &self.signed {
                Signed::Same => {}
                Signed::Template(t) => return t.write_plain(q, limit, out, scope),
                Signed::Fallback => return None,
            }
        }
        self.write_plain(q, limit, out, scope)
    }

    /// [`Template::write`] of this very template.
    fn write_plain(
        &self,
        q: &Question<'_>,
        limit: usize,
        out: &mut [u8],
        scope: u8,
    ) -> Option<usize> {
        let tail = &self.bytes[self.question_end..];
        let body = HEADER_LEN + q.question.len() + tail.len();
        let len = body + opt_len(q);
        if len > limit || q.question.len() != self.question_end - HEADER_LEN {
            return None;
        }
        out[..HEADER_LEN].copy_from_slice(&self.bytes[..HEADER_LEN]);
        patch_header(q, out);
        out[HEADER_LEN..HEADER_LEN + q.question.len()].copy_from_slice(q.question);
        out[HEADER_LEN + q.question.len()..body].copy_from_slice(tail);
        Some(finish(q, out, body, scope))
    }
}

impl ZoneWire {
    /// NXDOMAIN for `q`, a name below this zone's origin: the negative SOA
    /// whose owner points at the origin inside the echoed question.
    fn nxdomain(&self, q: &Question<'_>, limit: usize, out: &mut [u8]) -> Option<usize> {
        let name_len = q.lower.len();
        let body = HEADER_LEN + q.question.len() + 2 + self.soa_tail.len();
        let len = body + opt_len(q);
        if len > limit {
            return None;
        }
        // QR, AA; NXDOMAIN; one question, one authority record.
        let header = [0, 0, QR | 0x04, 3, 0, 1, 0, 0, 0, 1, 0, 0];
        out[..HEADER_LEN].copy_from_slice(&header);
        patch_header(q, out);
        let mut at = HEADER_LEN;
        out[at..at + q.question.len()].copy_from_slice(q.question);
        at += q.question.len();
        let pointer = (HEADER_LEN + name_len - self.origin_len) as u16 | 0xC000;
        out[at..at + 2].copy_from_slice(&pointer.to_be_bytes());
        at += 2;
        out[at..body].copy_from_slice(&self.soa_tail);
        Some(finish(q, out, body, 0))
    }
}

impl ZoneWire {
    /// NXDOMAIN for `q` (DO=1) in a signed zone: the SOA and its RRSIGs,
    /// the NSEC covering the name and the one covering the wildcard at its
    /// closest encloser (one of `names`), with theirs. `None` (the hickory
    /// handler answers) when it does not fit `limit`.
    fn nxdomain_signed(
        &self,
        q: &Question<'_>,
        names: &HashMap<Box<[u8]>, NameWire>,
        limit: usize,
        out: &mut [u8],
    ) -> Option<usize> {
        let nsec = self.nsec.as_ref()?;
        let mut key = [0u8; 256];
        let len = super::secure::wire_canonical_key(q.lower, &mut key)?;
        let cover = nsec.covering(&key[..len]);
        // The closest encloser: the longest existing ancestor.
        let at = suffixes(q.lower)
            .skip(1)
            .find(|&at| names.contains_key(&q.lower[at..]))
            .unwrap_or(q.lower.len());
        let mut wild = [0u8; 256];
        let wlen = super::secure::wire_canonical_key(q.lower.get(at..)?, &mut wild)?;
        wild.get_mut(wlen..wlen + 2)?.copy_from_slice(b"*\0");
        let wild_cover = nsec.covering(&wild[..wlen + 2]);
        let (soa_sigs, soa_n) = (&nsec.soa_sigs.0, nsec.soa_sigs.1);
        let (a, an) = (&nsec.links[cover].0, nsec.links[cover].1);
        let (b, bn) = if wild_cover == cover {
            (&[][..], 0)
        } else {
            (&nsec.links[wild_cover].0[..], nsec.links[wild_cover].1)
        };
        let name_len = q.lower.len();
        let body = HEADER_LEN
            + q.question.len()
            + 2
            + self.soa_tail.len()
            + soa_sigs.len()
            + a.len()
            + b.len();
        if body + opt_len(q) > limit {
            return None;
        }
        let ns = (1 + soa_n + an + bn).to_be_bytes();
        let header = [0, 0, QR | 0x04, 3, 0, 1, 0, 0, ns[0], ns[1], 0, 0];
        out[..HEADER_LEN].copy_from_slice(&header);
        patch_header(q, out);
        let mut at = HEADER_LEN + q.question.len();
        out[HEADER_LEN..at].copy_from_slice(q.question);
        let pointer = (HEADER_LEN + name_len - self.origin_len) as u16 | 0xC000;
        out[at..at + 2].copy_from_slice(&pointer.to_be_bytes());
        at += 2;
        for part in [&self.soa_tail[..], soa_sigs, a, b] {
            out[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        Some(finish(q, out, body, 0))
    }
}

/// REFUSED for a name outside every zone, as hickory's `error_msg` writes
/// it: not authoritative, the question echoed, OPT if the query had one.
fn refused(q: &Question<'_>, limit: usize, out: &mut [u8]) -> Option<usize> {
    let body = HEADER_LEN + q.question.len();
    if body + opt_len(q) > limit {
        return None;
    }
    out[..HEADER_LEN].copy_from_slice(&[0, 0, QR, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
    patch_header(q, out);
    out[HEADER_LEN..body].copy_from_slice(q.question);
    Some(finish(q, out, body, 0))
}

/// The request's ID, RD and CD into a response header.
fn patch_header(q: &Question<'_>, out: &mut [u8]) {
    out[0] = q.header[0];
    out[1] = q.header[1];
    out[2] |= q.header[2] & RD;
    out[3] |= q.header[3] & CD;
}

/// The bytes [`finish`] appends for `q`: the OPT record, the ECS option
/// in it when the query had one, and the COOKIE option.
fn opt_len(q: &Question<'_>) -> usize {
    if q.edns.is_none() {
        return 0;
    }
    let ecs = q.ecs.map_or(0, |e| 4 + e.reply(0).1);
    let cookie = q.cookie_reply.map_or(0, |c| 4 + c.len());
    OPT_LEN + ecs + cookie
}

/// Appends the OPT record if the query had EDNS, with the ECS option at
/// `scope` if it had ECS, then the COOKIE option if it had one (the order
/// the hickory handler writes them in); returns the length.
fn finish(q: &Question<'_>, out: &mut [u8], body: usize, scope: u8) -> usize {
    let Some(payload) = q.edns else {
        return body;
    };
    out[body..body + OPT_LEN].copy_from_slice(&opt_record(payload, q.dnssec_ok));
    let mut end = body + OPT_LEN;
    if let Some(e) = q.ecs {
        let (data, n) = e.reply(scope);
        out[end..end + 2].copy_from_slice(&ECS_CODE.to_be_bytes());
        out[end + 2..end + 4].copy_from_slice(&(n as u16).to_be_bytes());
        out[end + 4..end + 4 + n].copy_from_slice(&data[..n]);
        end += 4 + n;
    }
    if let Some(c) = q.cookie_reply {
        out[end..end + 2].copy_from_slice(&crate::dns::cookie::OPTION_COOKIE.to_be_bytes());
        out[end + 2..end + 4].copy_from_slice(&(c.len() as u16).to_be_bytes());
        out[end + 4..end + 4 + c.len()].copy_from_slice(c);
        end += 4 + c.len();
    }
    // RDLENGTH of the OPT record.
    let rdlen = (end - body - OPT_LEN) as u16;
    out[body + OPT_LEN - 2..body + OPT_LEN].copy_from_slice(&rdlen.to_be_bytes());
    let arcount = u16::from_be_bytes([out[10], out[11]]).wrapping_add(1);
    out[10..12].copy_from_slice(&arcount.to_be_bytes());
    end
}

/// The OPT record dnsshift answers with: root owner, type OPT (41),
/// class = the UDP payload size, extended RCODE 0, version 0, the DO bit
/// copied from the query (RFC 3225), no options.
pub fn opt_record(payload: u16, dnssec_ok: bool) -> [u8; OPT_LEN] {
    let p = payload.to_be_bytes();
    let flags = if dnssec_ok { 0x80 } else { 0 };
    let t = TYPE_OPT.to_be_bytes();
    [0, t[0], t[1], p[0], p[1], 0, 0, flags, 0, 0, 0]
}

/// Whether wire name `suffix` is `name` or one of its ancestors.
fn is_suffix(suffix: &[u8], name: &[u8]) -> bool {
    suffixes(name).any(|at| &name[at..] == suffix)
}

/// Lowercased wire format of a name.
fn wire_name(name: &LowerName) -> Box<[u8]> {
    let mut out = Vec::new();
    for label in Name::from(name).iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out.into_boxed_slice()
}

/// The query types that can make a difference to an answer in `zone`:
/// every type the zone holds, plus those the lookup treats specially.
fn zone_types(zone: &ZonePlan) -> Vec<u16> {
    let mut types: BTreeSet<u16> = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::CNAME,
        RecordType::NS,
        RecordType::SOA,
        RecordType::DS,
    ]
    .into_iter()
    .map(u16::from)
    .collect();
    for node in zone.names.values() {
        match node {
            Node::Static { sets, glue, .. } => {
                for r in sets.iter().flatten().chain(glue) {
                    types.insert(u16::from(r.record_type()));
                }
            }
            Node::Cut { ns, glue } => {
                for r in ns.iter().chain(glue) {
                    types.insert(u16::from(r.record_type()));
                }
            }
            Node::Service(_) | Node::Empty => {}
        }
    }
    types.into_iter().collect()
}

/// The responses for `name` and `qtype`, the way the lookup answers them.
fn replies(zone: &ZonePlan, name: &LowerName, qtype: RecordType) -> Reply {
    let qname = Name::from(name);
    if zone.cut_above(name).is_none()
        && let Some(Node::Service(svc)) = zone.names.get(name)
    {
        return match svc.selection(qtype) {
            Selection::Weighted {
                cumulative,
                pools,
                sticky,
            } => {
                let mut rng = fastrand::Rng::with_seed(0);
                let mut wires = Vec::with_capacity(pools.len());
                for pool in pools {
                    if pool.chase.as_ref().is_some_and(|t| {
                        qtype != RecordType::CNAME && !deterministic(zone, t, qtype, 1)
                    }) {
                        return Reply::Fallback;
                    }
                    let n = pool.records.len();
                    let mut variants = Vec::with_capacity(n.max(1));
                    for start in 0..n.max(1) {
                        let mut ans = Answer {
                            authoritative: true,
                            ..Answer::default()
                        };
                        let mut draw = Draw::none(&mut rng);
                        zone.pool_answer(
                            pool,
                            svc.max_answers,
                            start,
                            qtype,
                            &mut ans,
                            0,
                            &mut draw,
                        );
                        let Some(t) = template(zone, &qname, qtype, &ans) else {
                            return Reply::Fallback;
                        };
                        variants.push(t);
                    }
                    wires.push(PoolWire {
                        variants: variants.into_boxed_slice(),
                        records: n,
                        counter: pool.counter.clone(),
                    });
                }
                let none = Answer {
                    authoritative: true,
                    soa: Some(&zone.neg_soa),
                    ..Answer::default()
                };
                match template(zone, &qname, qtype, &none) {
                    Some(none) => Reply::Weighted {
                        cumulative: cumulative.clone().into_boxed_slice(),
                        pools: wires.into_boxed_slice(),
                        max_answers: svc.max_answers,
                        none,
                        sticky: sticky.clone(),
                    },
                    None => Reply::Fallback,
                }
            }
            _ => fixed(zone, &qname, name, qtype),
        };
    }
    if !deterministic(zone, name, qtype, 0) {
        return Reply::Fallback;
    }
    fixed(zone, &qname, name, qtype)
}

/// A response that is the same for every query of `qtype` for `name`.
fn fixed(zone: &ZonePlan, qname: &Name, name: &LowerName, qtype: RecordType) -> Reply {
    let mut ans = Answer {
        authoritative: true,
        ..Answer::default()
    };
    let mut rng = fastrand::Rng::with_seed(0);
    zone.lookup(name, qtype, &mut ans, 0, &mut Draw::none(&mut rng));
    template(zone, qname, qtype, &ans).map_or(Reply::Fallback, Reply::Fixed)
}

/// Whether looking `name` up leaves nothing to chance: no weighted name on
/// the way (a CNAME chain may lead into one).
fn deterministic(zone: &ZonePlan, name: &LowerName, qtype: RecordType, depth: usize) -> bool {
    if zone.cut_above(name).is_some() {
        return true;
    }
    match zone.names.get(name) {
        Some(Node::Static {
            cname: Some((_, Some(target))),
            ..
        }) if qtype != RecordType::CNAME && depth < MAX_CHAIN => {
            deterministic(zone, target, qtype, depth + 1)
        }
        Some(Node::Service(svc)) => !matches!(svc.selection(qtype), Selection::Weighted { .. }),
        _ => true,
    }
}

/// Encodes `ans` as the response to a query for `qname`/`qtype` (ID 0, no
/// flags, class IN), with hickory's encoder and name compression.
fn template(
    zone: &ZonePlan,
    qname: &Name,
    qtype: RecordType,
    ans: &Answer<'_>,
) -> Option<Template> {
    let mut t = encode(qname, qtype, ans)?;
    if zone.sec.is_some() {
        let mut signed = ans.clone();
        zone.secure(&LowerName::from(qname), qtype, &mut signed);
        t.signed = encode(qname, qtype, &signed)
            .map_or(Signed::Fallback, |s| Signed::Template(Box::new(s)));
    }
    Some(t)
}

/// The response [`template`] makes, without its DO=1 form.
fn encode(qname: &Name, qtype: RecordType, ans: &Answer<'_>) -> Option<Template> {
    if ans.rcode.high() != 0 {
        return None;
    }
    let mut m = Message::new(0, MessageType::Response, OpCode::Query);
    m.metadata.authoritative = ans.authoritative;
    m.metadata.response_code = ans.rcode;
    m.add_query(Query::query(qname.clone(), qtype));
    m.add_answers(ans.answers.iter().map(|r| (*r).clone()));
    m.add_authorities(ans.authority.iter().map(|r| (*r).clone()));
    m.add_authorities(ans.soa.cloned());
    m.add_additionals(ans.additionals.iter().map(|r| (*r).clone()));
    let bytes = m.to_vec().ok()?;
    let question_end = HEADER_LEN + wire_len(qname) + 4;
    (bytes.len() >= question_end).then(|| Template {
        bytes: bytes.into_boxed_slice(),
        question_end,
        rcode: ans.rcode,
        signed: Signed::Same,
    })
}

fn wire_len(name: &Name) -> usize {
    name.iter().map(|l| l.len() + 1).sum::<usize>() + 1
}

/// The zone's NXDOMAIN material: its negative SOA without the owner name,
/// every name in it uncompressed so it can follow any question.
fn zone_wire(zone: &ZonePlan) -> Option<ZoneWire> {
    let soa = &zone.neg_soa;
    if !matches!(soa.data, RData::SOA(_)) {
        return None;
    }
    let mut bytes = Vec::new();
    let mut enc = BinEncoder::new(&mut bytes);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    soa.emit(&mut enc).ok()?;
    let origin = Name::from(&zone.origin);
    let origin_len = wire_len(&origin);
    let soa_tail = bytes.get(origin_len..)?.into();
    Some(ZoneWire {
        counters: zone.counters.clone(),
        origin_len,
        soa_tail,
        cuts: zone.cuts.iter().map(wire_name).collect(),
        signed: zone.sec.is_some(),
        nsec: zone.sec.as_ref().and_then(|s| s.nsec_wire(&zone.neg_soa)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes() {
        let name = wire_name(&LowerName::from(Name::from_ascii("A.b.c.").unwrap()));
        assert_eq!(&*name, b"\x01a\x01b\x01c\x00");
        let bc = wire_name(&LowerName::from(Name::from_ascii("b.c.").unwrap()));
        assert!(is_suffix(&bc, &name));
        assert!(is_suffix(&name, &name));
        assert!(!is_suffix(&name, &bc));
        assert!(is_suffix(b"\x00", &name));
    }
}
