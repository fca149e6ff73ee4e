//! DNSSEC in the plan (issue 20): when a zone is signed, every RRset the
//! plan can serve is signed while the plan is built (through the zone's
//! signature cache, [`ZoneKeys::sign`]), and the NSEC chain over the
//! zone's names is made and signed too. A DO=1 answer is the DO=0 answer
//! with the RRSIGs and NSEC records looked up here: no signing per query.
//!
//! The chain holds every name of the zone that is not below a zone cut,
//! empty non-terminals included (with only NSEC and RRSIG in their bitmaps),
//! so that the closest encloser of any name is a name of the chain. Phase
//! and health change the data at a name, never which names exist. A
//! shifted name whose drawn pool has nothing of the asked type answers
//! NODATA with an NSEC whose bitmap leaves that type (and CNAME) out: it
//! is signed separately from the name's full NSEC.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use tracing::error;

use super::{Answer, Node, Selection, ZonePlan};
use crate::dnssec::{ZoneKeys, rrset_key};

/// The variant key of the NODATA NSEC for query types other than A and AAAA.
const OTHER_NODATA: u16 = 0;

/// A signed zone's DNSSEC material in the plan.
#[derive(Debug, Default)]
pub(super) struct ZoneSec {
    /// RRSIGs by [`rrset_key`] of every RRset the plan serves.
    sigs: HashMap<Box<[u8]>, Arc<[Record]>>,
    /// The NSEC chain in canonical order.
    chain: Vec<Link>,
    /// Chain position by owner name.
    index: HashMap<LowerName, usize>,
    /// NODATA NSECs of shifted names, by (chain position, query type or
    /// [`OTHER_NODATA`]), where they differ from the full NSEC.
    nodata: HashMap<(usize, u16), Record>,
    /// Signatures this build made anew, and reused from the cache.
    pub(super) signed: u64,
    pub(super) reused: u64,
}

#[derive(Debug)]
struct Link {
    /// The canonical sort key of the owner ([`canonical_key`]).
    canon: Box<[u8]>,
    nsec: Record,
}

/// A key whose byte order is the canonical name order of RFC 4034 §6.1:
/// labels from the right, lowercased, each ended by a zero byte.
pub(super) fn canonical_key(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let labels: Vec<&[u8]> = name.iter().collect();
    for l in labels.iter().rev() {
        out.extend(l.iter().map(u8::to_ascii_lowercase));
        out.push(0);
    }
    out
}

/// The types a name of the plan holds: what its NSEC bitmap lists.
fn node_types(node: &Node) -> BTreeSet<RecordType> {
    let mut t = BTreeSet::new();
    match node {
        Node::Static { sets, .. } => t.extend(
            sets.iter()
                .filter_map(|s| s.first())
                .map(|r| r.record_type()),
        ),
        Node::Cut { .. } => {
            t.insert(RecordType::NS);
        }
        Node::Service(svc) => {
            for sel in [&svc.a, &svc.aaaa, &svc.other] {
                if let Selection::Weighted { pools, .. } = sel {
                    t.extend(
                        pools
                            .iter()
                            .flat_map(|p| &p.records)
                            .map(|r| r.record_type()),
                    );
                }
            }
        }
        Node::Empty => {}
    }
    t
}

fn nsec_record(owner: &Name, next: &Name, types: &BTreeSet<RecordType>, ttl: u32) -> Record {
    Record::from_rdata(
        owner.clone(),
        ttl,
        RData::DNSSEC(DNSSECRData::NSEC(NSEC::new_cover_self(
            next.clone(),
            types.iter().copied(),
        ))),
    )
}

impl ZoneSec {
    /// Signs everything `zone` can serve with `keys`, at Unix time `now`.
    pub(super) fn build(zone: &ZonePlan, keys: &ZoneKeys, now: u64) -> ZoneSec {
        let mut sec = ZoneSec::default();
        let before = keys.stats();

        // The chain: every name not below a cut.
        let mut names: Vec<(Vec<u8>, &LowerName, &Node)> = zone
            .names
            .iter()
            .filter(|(n, _)| !zone.cuts.iter().any(|c| c != *n && c.zone_of(n)))
            .map(|(n, node)| (canonical_key(&Name::from(n)), n, node))
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let ttl = zone.neg_soa.ttl;
        let mut nsecs = Vec::new();
        for (i, (canon, name, node)) in names.iter().enumerate() {
            let next = Name::from(names[(i + 1) % names.len()].1);
            let owner = Name::from(*name);
            let types = node_types(node);
            sec.index.insert((*name).clone(), i);
            sec.chain.push(Link {
                canon: canon.clone().into_boxed_slice(),
                nsec: nsec_record(&owner, &next, &types, ttl),
            });
            if let Node::Service(svc) = node {
                // NODATA at a shifted name: the drawn pool has neither the
                // type nor a CNAME.
                for (qtype, sel) in [
                    (u16::from(RecordType::A), &svc.a),
                    (u16::from(RecordType::AAAA), &svc.aaaa),
                    (OTHER_NODATA, &svc.other),
                ] {
                    let mut t = types.clone();
                    t.remove(&RecordType::CNAME);
                    if qtype != OTHER_NODATA {
                        t.remove(&RecordType::from(qtype));
                    }
                    let possible = match sel {
                        Selection::Weighted {
                            pools, cumulative, ..
                        } => {
                            pools.iter().any(|p| p.records.is_empty())
                                || cumulative.last().is_none_or(|&w| w == 0)
                        }
                        _ => true,
                    };
                    if possible && t != types {
                        nsecs.push(((i, qtype), nsec_record(&owner, &next, &t, ttl)));
                    }
                }
            }
        }
        sec.nodata = nsecs.into_iter().collect();

        // Every RRset the plan serves.
        let mut sets: Vec<Vec<&Record>> = vec![vec![&zone.neg_soa]];
        for node in zone.names.values() {
            match node {
                Node::Static { sets: s, .. } => sets.extend(s.iter().map(|s| s.iter().collect())),
                Node::Service(svc) => {
                    for sel in [&svc.a, &svc.aaaa, &svc.other] {
                        let Selection::Weighted { pools, .. } = sel else {
                            continue;
                        };
                        for p in pools {
                            let n = p.records.len();
                            let k = svc.max_answers.min(n);
                            for start in 0..n {
                                sets.push((0..k).map(|j| &p.records[(start + j) % n]).collect());
                            }
                            if let Some(soa) = &p.nodata {
                                sets.push(vec![soa]);
                            }
                        }
                    }
                }
                Node::Cut { .. } | Node::Empty => {}
            }
        }
        let chain_sets: Vec<Vec<&Record>> = sec
            .chain
            .iter()
            .map(|l| &l.nsec)
            .chain(sec.nodata.values())
            .map(|r| vec![r])
            .collect();
        let mut sigs = HashMap::new();
        for set in sets.iter().chain(&chain_sets) {
            if set.is_empty() {
                continue;
            }
            let key = rrset_key(set);
            if sigs.contains_key(&key) {
                continue;
            }
            match keys.sign_keyed(key.clone(), set, now) {
                Ok(s) => {
                    sigs.insert(key, s);
                }
                Err(e) => {
                    error!(error = %e, zone = %zone.origin, "signing failed; the RRset goes unsigned")
                }
            }
        }
        keys.prune(now);
        let after = keys.stats();
        sec.sigs = sigs;
        sec.signed = after.signed - before.signed;
        sec.reused = after.reused - before.reused;
        sec
    }

    /// The RRSIGs of an RRset the plan serves.
    fn rrsigs(&self, set: &[&Record]) -> &[Record] {
        self.sigs.get(&rrset_key(set)).map_or(&[], |s| &s[..])
    }

    /// Chain position of the name that covers `name` (the last one not
    /// after it, wrapping around to the last name).
    fn covering(&self, name: &Name) -> usize {
        let key = canonical_key(name);
        let pos = self.chain.partition_point(|l| *l.canon <= *key);
        pos.checked_sub(1)
            .unwrap_or(self.chain.len().saturating_sub(1))
    }

    /// Number of names in the chain.
    pub(super) fn names(&self) -> usize {
        self.chain.len()
    }

    /// Signatures in the plan.
    pub(super) fn signatures(&self) -> usize {
        self.sigs.len()
    }
}

impl ZonePlan {
    /// Adds what a DO=1 query gets to `ans`, the answer to `qname`/`qtype`:
    /// the RRSIG of every RRset, and for a negative answer (or an insecure
    /// referral) the NSEC records that prove it, with theirs.
    pub(super) fn secure<'a>(&'a self, qname: &LowerName, qtype: RecordType, ans: &mut Answer<'a>) {
        let Some(sec) = &self.sec else {
            return;
        };
        if !matches!(ans.rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
            return;
        }
        let mut answers = Vec::with_capacity(ans.answers.len() * 2);
        let mut i = 0;
        while i < ans.answers.len() {
            let first = ans.answers[i];
            let mut j = i + 1;
            while j < ans.answers.len()
                && ans.answers[j].record_type() == first.record_type()
                && ans.answers[j].name == first.name
            {
                j += 1;
            }
            let set = &ans.answers[i..j];
            answers.extend_from_slice(set);
            answers.extend(sec.rrsigs(set));
            i = j;
        }
        ans.answers = answers;
        let proof = |at: usize, ans: &mut Answer<'a>| {
            let nsec = &sec.chain[at].nsec;
            if !ans.authority.iter().any(|r| std::ptr::eq(*r, nsec)) {
                ans.authority.push(nsec);
                ans.authority.extend(sec.rrsigs(&[nsec]));
            }
        };
        if !ans.authoritative {
            // A referral: the NSEC at the cut shows NS and no DS (insecure).
            if let Some(at) = ans
                .authority
                .first()
                .and_then(|r| sec.index.get(&LowerName::from(&r.name)))
            {
                proof(*at, ans);
            }
            return;
        }
        let Some(soa) = ans.soa.take() else {
            return;
        };
        ans.authority.push(soa);
        ans.authority.extend(sec.rrsigs(&[soa]));
        // The name the answer ends at: the last CNAME's target, if any.
        let last = match ans
            .answers
            .iter()
            .rev()
            .find(|r| r.record_type() != RecordType::RRSIG)
        {
            Some(r) => match &r.data {
                RData::CNAME(c) => LowerName::from(&c.0),
                _ => qname.clone(),
            },
            None => qname.clone(),
        };
        if ans.rcode == ResponseCode::NXDomain {
            let name = Name::from(&last);
            let at = sec.covering(&name);
            proof(at, ans);
            // No wildcard at the closest encloser.
            let mut ce = name.base_name();
            while !sec.index.contains_key(&LowerName::from(&ce)) && !ce.is_root() {
                ce = ce.base_name();
            }
            if let Ok(wild) = Name::from_ascii("*").and_then(|w| w.append_domain(&ce)) {
                proof(sec.covering(&wild), ans);
            }
            return;
        }
        match sec.index.get(&last) {
            Some(&at) => {
                let variant = match self.names.get(&last) {
                    Some(Node::Service(_)) => match qtype {
                        RecordType::A | RecordType::AAAA => u16::from(qtype),
                        _ => OTHER_NODATA,
                    },
                    _ => u16::MAX,
                };
                match sec.nodata.get(&(at, variant)) {
                    Some(nsec) => {
                        ans.authority.push(nsec);
                        ans.authority.extend(sec.rrsigs(&[nsec]));
                    }
                    None => proof(at, ans),
                }
            }
            None => proof(sec.covering(&Name::from(&last)), ans),
        }
    }
}

/// A signed zone's NXDOMAIN material in wire format, for the UDP fast
/// path: the proof depends on the name asked, so it is looked up per query
/// (a binary search over the chain's sort keys, without allocating).
#[derive(Debug)]
pub(super) struct NsecWire {
    /// The chain's canonical sort keys ([`canonical_key`]), in order.
    pub(super) keys: Box<[Box<[u8]>]>,
    /// Per chain position: its NSEC record and RRSIGs, names uncompressed,
    /// and how many records that is.
    pub(super) links: Box<[(Box<[u8]>, u16)]>,
    /// The negative SOA's RRSIGs, names uncompressed, and their count.
    pub(super) soa_sigs: (Box<[u8]>, u16),
}

/// Records in wire format with every name uncompressed: position independent.
fn uncompressed(records: &[&Record]) -> Option<(Box<[u8]>, u16)> {
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
    let mut bytes = Vec::new();
    let mut enc = BinEncoder::new(&mut bytes);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    for r in records {
        r.emit(&mut enc).ok()?;
    }
    Some((bytes.into_boxed_slice(), u16::try_from(records.len()).ok()?))
}

impl ZoneSec {
    /// The NXDOMAIN material of this zone, whose negative SOA is `neg_soa`.
    pub(super) fn nsec_wire(&self, neg_soa: &Record) -> Option<NsecWire> {
        let mut links = Vec::with_capacity(self.chain.len());
        for l in &self.chain {
            let mut set = vec![&l.nsec];
            set.extend(self.rrsigs(&[&l.nsec]));
            links.push(uncompressed(&set)?);
        }
        let soa_sigs: Vec<&Record> = self.rrsigs(&[neg_soa]).iter().collect();
        Some(NsecWire {
            keys: self.chain.iter().map(|l| l.canon.clone()).collect(),
            links: links.into_boxed_slice(),
            soa_sigs: uncompressed(&soa_sigs)?,
        })
    }
}

impl NsecWire {
    /// The chain position covering the name whose sort key is `key`.
    pub(super) fn covering(&self, key: &[u8]) -> usize {
        let pos = self.keys.partition_point(|k| **k <= *key);
        pos.checked_sub(1)
            .unwrap_or(self.keys.len().saturating_sub(1))
    }
}

/// Writes the canonical sort key of wire name `name` (lowercased) into
/// `out`, after `prefix` bytes already there; returns the key's length.
/// No allocation: the fast path's form of [`canonical_key`].
pub(super) fn wire_canonical_key(name: &[u8], out: &mut [u8; 256]) -> Option<usize> {
    // Label starts, right to left, without a buffer: walk to find each.
    let mut starts = [0u8; 128];
    let mut n = 0;
    for label in crate::dns::message::labels(name, 0) {
        *starts.get_mut(n)? = u8::try_from(label.at).ok()?;
        n += 1;
    }
    let mut len = 0;
    for i in (0..n).rev() {
        let s = usize::from(starts[i]);
        let l = usize::from(name[s]);
        out.get_mut(len..len + l)?
            .copy_from_slice(name.get(s + 1..s + 1 + l)?);
        len += l;
        *out.get_mut(len)? = 0;
        len += 1;
    }
    Some(len)
}
