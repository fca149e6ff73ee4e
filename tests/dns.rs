//! The authoritative server over real UDP and TCP on loopback: flags,
//! negative answers, referrals, EDNS, truncation, malformed queries, server
//! identification (NSID, CH TXT), and the weighted, standby, staging and
//! rotation behaviour of shifted names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption, NSIDPayload};
use hickory_proto::rr::rdata::{CNAME, NS};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// Zone TTL (static records, SOA, NS) of the main test zone.
const ZONE_TTL: u32 = 3600;
/// Negative TTL of the main test zone; below ZONE_TTL, so it is the SOA TTL
/// of negative answers.
const NEG_TTL: u32 = 45;

/// 200 characters of TXT data, numbered so the records stay distinct.
fn txt(i: usize) -> String {
    format!("\"{i:02}{}\"", "x".repeat(198))
}

/// The main test zone. Every service has `kind = "none"` health: always healthy.
fn main_zone() -> String {
    let big = (0..4).map(|i| format!("big  IN TXT {}", txt(i)));
    let huge = (0..8).map(|i| format!("huge IN TXT {}", txt(i)));
    let mut records: Vec<String> = [
        "ns1      IN A     127.0.0.53",
        "ns2      IN A     127.0.0.54",
        "ns2      IN AAAA  2001:db8::53",
        "@        IN MX    10 mail.example.org.",
        "@        IN TXT   \"v=spf1 -all\"",
        "static   IN A     192.0.2.200",
        "static   IN A     192.0.2.201",
        "a.b      IN TXT   \"deep\"",
        "docs     IN CNAME lb",
        "lb       IN A     203.0.113.7",
        "lb       IN A     203.0.113.8",
        "lb       IN AAAA  2001:db8::7",
        "sub      IN NS    ns.sub",
        "ns.sub   IN A     203.0.113.99",
    ]
    .map(String::from)
    .to_vec();
    records.extend(big.chain(huge));
    ZoneBuilder::new("shift.test.")
        .nameservers(&["ns1.shift.test.", "ns2"])
        .hostmaster("hostmaster.example.org.")
        .records(&records)
        // Phases with a 90/10 step, started in it.
        .service(
            ServiceBuilder::www(&WWW_OLD, &WWW_NEW)
                .initial_phase("ten")
                .phase("separate-domain", &[("old", 100), ("new", 0)])
                .phase("ten", &[("old", 90), ("new", 10)])
                .phase("cutover", &[("old", 0), ("new", 100)]),
        )
        // Classic phases, first one: old only, new (the only IPv6) is standby.
        .service(
            ServiceBuilder::unchecked(
                "stby",
                &["192.0.2.50", "192.0.2.51"],
                &["198.51.100.50", "2001:db8::50", "2001:db8::51"],
            )
            .staging("stby-next")
            .ttl("30s"),
        )
        // Rotation: 5 endpoints, 3 per answer; the staging pool has only 2.
        .service(
            ServiceBuilder::unchecked(
                "rot",
                &[
                    "192.0.2.101",
                    "192.0.2.102",
                    "192.0.2.103",
                    "192.0.2.104",
                    "192.0.2.105",
                ],
                &["198.51.100.101", "198.51.100.102"],
            )
            .staging("rot-next")
            .max_answers(3),
        )
        // A host-name pool whose target is in the zone.
        .service(
            ServiceBuilder::to_host("api", "192.0.2.30", "lb.shift.test.")
                .staging("api-next")
                .ttl("20s"),
        )
        // A host-name pool outside the zone, in cutover.
        .service(
            ServiceBuilder::to_host("ext", "192.0.2.60", "ext-lb.example.net.")
                .ttl("20s")
                .initial_phase("cutover"),
        )
        // IPv6 only in one of two weighted pools.
        .service(
            ServiceBuilder::unchecked("v6", &["192.0.2.40"], &["2001:db8::40", "2001:db8::41"])
                .max_answers(2)
                .phase("half", &[("old", 50), ("new", 50)]),
        )
        // A name below an empty non-terminal.
        .service(ServiceBuilder::unchecked(
            "app.eu",
            &["192.0.2.70"],
            &["198.51.100.70"],
        ))
        // 16 AAAA records and a long name: 529 bytes, more than 512.
        .service(ServiceBuilder::many_aaaa(
            "a-very-long-service-name-to-push-the-answer-past-512",
            16,
        ))
        .to_toml()
}

/// A second zone whose TTL is below its negative TTL.
fn neg_zone() -> String {
    ZoneBuilder::new("neg.test.")
        .nameservers(&["ns1.example.org."])
        .hostmaster("hostmaster.example.org.")
        .ttl("20s")
        .negative_ttl("5m")
        .records(&["here IN A 192.0.2.1"])
        .to_toml()
}

const TRUNC_NAME: &str = "a-very-long-service-name-to-push-the-answer-past-512.shift.test.";

fn start() -> Server {
    Setup::new(
        &[
            ("shift.test.toml", &main_zone()),
            ("neg.test.toml", &neg_zone()),
        ],
        "",
    )
    .start()
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// The single SOA of the authority section.
fn authority_soa(m: &Message) -> (&Record, hickory_proto::rr::rdata::SOA) {
    let soas: Vec<&Record> = m
        .authorities
        .iter()
        .filter(|r| r.record_type() == RecordType::SOA)
        .collect();
    assert_eq!(soas.len(), 1, "one SOA in authority: {m}");
    match &soas[0].data {
        RData::SOA(s) => (soas[0], s.clone()),
        other => panic!("not an SOA: {other:?}"),
    }
}

/// Checks a negative answer: rcode, AA, empty answer section, the zone's SOA
/// in authority with the negative TTL.
fn assert_negative(m: &Message, rcode: ResponseCode, origin: &str, ttl: u32) {
    assert_eq!(m.metadata.response_code, rcode, "{m}");
    assert!(m.metadata.authoritative, "AA: {m}");
    assert!(m.answers.is_empty(), "no answers: {m}");
    let (rec, soa) = authority_soa(m);
    assert_eq!(rec.name, name(origin), "{m}");
    assert_eq!(rec.ttl, ttl, "SOA TTL of a negative answer: {m}");
    // The minimum field carries the configured negative TTL (RFC 2308).
    assert!(soa.minimum >= ttl, "{m}");
}

fn types(rs: &[Record]) -> Vec<RecordType> {
    rs.iter().map(|r| r.record_type()).collect()
}

fn sorted(v: Vec<String>) -> Vec<String> {
    let mut v = v;
    v.sort();
    v
}

// ------------------------------------------------------------ apex, flags

#[test]
fn apex_soa_and_ns_with_glue() {
    let server = start();
    for m in [
        server.query("shift.test.", RecordType::SOA),
        server.query_tcp("shift.test.", RecordType::SOA),
    ] {
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert!(m.metadata.authoritative, "{m}");
        assert!(!m.metadata.recursion_available, "{m}");
        assert_eq!(m.answers.len(), 1, "{m}");
        let r = &m.answers[0];
        assert_eq!(r.name, name("shift.test."));
        assert_eq!(r.ttl, ZONE_TTL);
        let RData::SOA(soa) = &r.data else {
            panic!("{m}")
        };
        assert_eq!(soa.mname, name("ns1.shift.test."));
        assert_eq!(soa.rname, name("hostmaster.example.org."));
        assert_eq!(soa.minimum, NEG_TTL);
        assert!(soa.serial > 0);
    }

    let m = server.query("shift.test.", RecordType::NS);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    assert!(m.metadata.authoritative, "{m}");
    let ns: BTreeSet<Name> = m
        .answers
        .iter()
        .map(|r| {
            assert_eq!(r.name, name("shift.test."));
            assert_eq!(r.ttl, ZONE_TTL);
            match &r.data {
                RData::NS(NS(n)) => n.clone(),
                other => panic!("not NS: {other:?}"),
            }
        })
        .collect();
    assert_eq!(
        ns,
        BTreeSet::from([name("ns1.shift.test."), name("ns2.shift.test.")])
    );
    let glue: BTreeSet<(Name, String)> = m
        .additionals
        .iter()
        .map(|r| (r.name.clone(), r.data.to_string()))
        .collect();
    assert_eq!(
        glue,
        BTreeSet::from([
            (name("ns1.shift.test."), "127.0.0.53".to_string()),
            (name("ns2.shift.test."), "127.0.0.54".to_string()),
            (name("ns2.shift.test."), "2001:db8::53".to_string()),
        ]),
        "{m}"
    );
}

#[test]
fn refused_outside_the_zones() {
    let server = start();
    for q in [
        "example.org.",
        "test.",
        "xshift.test.",
        "shift.test.example.",
    ] {
        for m in [
            server.query(q, RecordType::A),
            server.query_tcp(q, RecordType::A),
        ] {
            assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{q}: {m}");
            assert!(!m.metadata.authoritative, "{q}: {m}");
            assert!(m.answers.is_empty(), "{q}: {m}");
        }
    }
    // The other zone is served too.
    let m = server.query("here.neg.test.", RecordType::A);
    assert_eq!(answers(&m), ["192.0.2.1"]);
}

#[test]
fn other_classes_and_zone_transfers_are_refused() {
    let server = start();
    // Our zones are IN: the same names in class CH or HS are not ours.
    for class in [DNSClass::CH, DNSClass::HS] {
        for (q, t) in [
            ("shift.test.", RecordType::SOA),
            ("www.shift.test.", RecordType::A),
            ("version.bind.", RecordType::TXT),
        ] {
            let mut query = Query::query(name(q), t);
            query.set_query_class(class);
            let mut msg = build_query("x.", RecordType::A, Some(1232));
            msg.queries = vec![query];
            for m in [query_udp(server.dns, &msg), query_tcp(server.dns, &msg)] {
                assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{m}");
                assert!(m.answers.is_empty(), "{class} {q}: {m}");
                assert!(!m.metadata.authoritative, "{m}");
            }
        }
    }
    // QCLASS ANY is answered from IN.
    let mut query = Query::query(name("shift.test."), RecordType::SOA);
    query.set_query_class(DNSClass::ANY);
    let mut msg = build_query("x.", RecordType::A, None);
    msg.queries = vec![query];
    let m = query_udp(server.dns, &msg);
    assert_eq!(types(&m.answers), [RecordType::SOA], "{m}");
    // No zone transfers.
    for t in [RecordType::AXFR, RecordType::IXFR] {
        let m = server.query_tcp("shift.test.", t);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{t}: {m}");
        assert!(m.answers.is_empty(), "{m}");
    }
}

#[test]
fn nxdomain_and_nodata_carry_the_soa_with_the_negative_ttl() {
    let server = start();
    // (name, type, rcode)
    let cases = [
        ("nope.shift.test.", RecordType::A, ResponseCode::NXDomain),
        (
            "deep.nope.shift.test.",
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        ("shift.test.", RecordType::A, ResponseCode::NoError),
        (
            "static.shift.test.",
            RecordType::AAAA,
            ResponseCode::NoError,
        ),
        ("static.shift.test.", RecordType::TXT, ResponseCode::NoError),
        ("ns1.shift.test.", RecordType::MX, ResponseCode::NoError),
        // A service name asked for a type its pools cannot answer.
        ("www.shift.test.", RecordType::MX, ResponseCode::NoError),
        ("www.shift.test.", RecordType::AAAA, ResponseCode::NoError),
        (
            "rot-next.shift.test.",
            RecordType::TXT,
            ResponseCode::NoError,
        ),
    ];
    for (q, t, rcode) in cases {
        assert_negative(&server.query(q, t), rcode, "shift.test.", NEG_TTL);
        assert_negative(&server.query_tcp(q, t), rcode, "shift.test.", NEG_TTL);
    }
    // neg.test.: zone TTL 20s < negative TTL 5m, so negative answers are
    // cached for 20s (RFC 2308 §5: min of the SOA TTL and its MINIMUM).
    let m = server.query("nope.neg.test.", RecordType::A);
    assert_negative(&m, ResponseCode::NXDomain, "neg.test.", 20);
    assert_eq!(authority_soa(&m).1.minimum, 300);
    let m = server.query("here.neg.test.", RecordType::TXT);
    assert_negative(&m, ResponseCode::NoError, "neg.test.", 20);
}

#[test]
fn names_match_case_insensitively() {
    let server = start();
    let m = server.query("WwW.ShIfT.TeSt.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers.len(), 2, "{m}");
    // The question is echoed as asked.
    assert_eq!(m.queries[0].name().to_string(), "WwW.ShIfT.TeSt.");
    let m = server.query("STATIC.Shift.TEST.", RecordType::A);
    assert_eq!(sorted(answers(&m)), ["192.0.2.200", "192.0.2.201"]);
    let m = server.query("SHIFT.TEST.", RecordType::SOA);
    assert_eq!(types(&m.answers), [RecordType::SOA]);
    let m = server.query_tcp("Www-Next.SHIFT.test.", RecordType::A);
    assert_eq!(m.answers.len(), 2, "{m}");
    let m = server.query("NoPe.Shift.Test.", RecordType::A);
    assert_negative(&m, ResponseCode::NXDomain, "shift.test.", NEG_TTL);
}

#[test]
fn names_below_a_service_are_nxdomain_and_empty_non_terminals_nodata() {
    let server = start();
    for q in [
        "x.www.shift.test.",
        "a.b.www.shift.test.",
        "x.www-next.shift.test.",
        "x.app.eu.shift.test.",
    ] {
        let m = server.query(q, RecordType::A);
        assert_negative(&m, ResponseCode::NXDomain, "shift.test.", NEG_TTL);
    }
    // b.shift.test. exists only because of a.b.shift.test.; eu because of app.eu.
    for q in ["b.shift.test.", "eu.shift.test."] {
        for t in [RecordType::A, RecordType::TXT] {
            let m = server.query(q, t);
            assert_negative(&m, ResponseCode::NoError, "shift.test.", NEG_TTL);
        }
    }
    let m = server.query("a.b.shift.test.", RecordType::TXT);
    assert_eq!(answers(&m), ["deep"]);
    let m = server.query("app.eu.shift.test.", RecordType::A);
    assert_eq!(answers(&m), ["192.0.2.70"]);
}

#[test]
fn sub_delegation_is_a_referral_with_glue() {
    let server = start();
    for q in [
        "host.sub.shift.test.",
        "sub.shift.test.",
        "a.b.sub.shift.test.",
    ] {
        for t in [RecordType::A, RecordType::NS] {
            for m in [server.query(q, t), server.query_tcp(q, t)] {
                assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{q}: {m}");
                assert!(!m.metadata.authoritative, "a referral is not AA: {m}");
                assert!(m.answers.is_empty(), "{m}");
                assert_eq!(m.authorities.len(), 1, "{m}");
                let ns = &m.authorities[0];
                assert_eq!(ns.name, name("sub.shift.test."));
                assert_eq!(ns.data, RData::NS(NS(name("ns.sub.shift.test."))));
                assert_eq!(m.additionals.len(), 1, "{m}");
                assert_eq!(m.additionals[0].name, name("ns.sub.shift.test."));
                assert_eq!(m.additionals[0].data.to_string(), "203.0.113.99");
            }
        }
    }
    // DS belongs to the parent side of the cut: here, authoritatively none.
    let m = server.query("sub.shift.test.", RecordType::DS);
    assert_negative(&m, ResponseCode::NoError, "shift.test.", NEG_TTL);
}

// ------------------------------------------------------------------ EDNS

#[test]
fn edns_is_echoed_only_when_asked() {
    let server = start();
    let m = query_udp(
        server.dns,
        &build_query("www.shift.test.", RecordType::A, Some(1232)),
    );
    let edns = m.edns.as_ref().expect("EDNS echoed");
    assert_eq!(edns.version(), 0);
    assert!(edns.max_payload() >= 512, "{m}");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);

    let m = query_udp(
        server.dns,
        &build_query("www.shift.test.", RecordType::A, None),
    );
    assert!(m.edns.is_none(), "no OPT without OPT in the query: {m}");
    assert_eq!(m.answers.len(), 2);

    let m = query_tcp(
        server.dns,
        &build_query("www.shift.test.", RecordType::A, Some(4096)),
    );
    assert_eq!(m.edns.as_ref().map(|e| e.version()), Some(0), "{m}");
}

#[test]
fn edns_version_above_zero_is_badvers() {
    let server = start();
    let mut q = build_query("www.shift.test.", RecordType::A, None);
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.set_version(1);
    q.set_edns(e);
    let id = q.metadata.id;
    let raw = exchange_udp_raw(server.dns, &q.to_vec().unwrap()).expect("an answer");
    // The header holds the low 4 bits of BADVERS (16): 0.
    assert_eq!(raw[3] & 0x0f, 0, "low rcode bits");
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(m.metadata.id, id);
    let edns = m.edns.as_ref().expect("BADVERS needs an OPT record");
    assert_eq!(edns.rcode_high(), 1, "{m}");
    assert_eq!(edns.version(), 0, "we answer with the version we speak");
    // 16 is BADVERS for OPT (RFC 6891) and BADSIG for TSIG; hickory
    // decodes it as BADSIG, so compare the number.
    assert_eq!(
        u16::from(m.metadata.response_code),
        u16::from(ResponseCode::BADVERS),
        "{m}"
    );
    assert_eq!(u16::from(ResponseCode::BADVERS), 16);
    assert!(m.answers.is_empty(), "{m}");

    // Same over TCP.
    let mut q = build_query("www.shift.test.", RecordType::A, None);
    let mut e = Edns::new();
    e.set_version(3);
    q.set_edns(e);
    let m = query_tcp(server.dns, &q);
    assert_eq!(u16::from(m.metadata.response_code), 16, "{m}");
    assert_eq!(m.edns.as_ref().map(|e| e.rcode_high()), Some(1), "{m}");
}

// ------------------------------------------------------------ truncation

/// Sends a query over UDP; returns the raw reply's length and the message.
fn udp_sized(server: SocketAddr, q: &Message) -> (usize, Message) {
    let raw = exchange_udp_raw(server, &q.to_vec().unwrap()).expect("an answer");
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(m.metadata.id, q.metadata.id);
    (raw.len(), m)
}

#[test]
fn truncated_on_udp_then_full_over_tcp() {
    let server = start();

    // 16 AAAA under a long name: 529 bytes, above the 512 of plain DNS.
    let (len, m) = udp_sized(server.dns, &build_query(TRUNC_NAME, RecordType::AAAA, None));
    assert!(m.metadata.truncation, "TC without EDNS: {m}");
    assert!(len <= 512, "{len} bytes over plain UDP");
    assert!(m.answers.len() < 16, "{m}");
    let m = query_tcp(server.dns, &build_query(TRUNC_NAME, RecordType::AAAA, None));
    assert!(!m.metadata.truncation, "{m}");
    assert!(m.metadata.authoritative);
    let all: BTreeSet<String> = answers(&m).into_iter().collect();
    assert_eq!(all.len(), 16, "{m}");
    // With EDNS and 1232 bytes it fits over UDP.
    let (_, m) = udp_sized(
        server.dns,
        &build_query(TRUNC_NAME, RecordType::AAAA, Some(1232)),
    );
    assert!(!m.metadata.truncation, "{m}");
    assert_eq!(m.answers.len(), 16, "{m}");

    // Four 200-byte TXT records: ~900 bytes.
    let big = "big.shift.test.";
    let full = query_tcp(server.dns, &build_query(big, RecordType::TXT, None));
    assert_eq!(full.answers.len(), 4, "{full}");
    assert!(!full.metadata.truncation);
    for (size, tc) in [(None, true), (Some(512), true), (Some(1232), false)] {
        let (len, m) = udp_sized(server.dns, &build_query(big, RecordType::TXT, size));
        assert_eq!(m.metadata.truncation, tc, "payload {size:?}: {m}");
        assert_eq!(m.edns.is_some(), size.is_some(), "OPT kept: {m}");
        assert!(len <= usize::from(size.unwrap_or(512)), "{len} > {size:?}");
        if !tc {
            assert_eq!(sorted(answers(&m)), sorted(answers(&full)));
        }
    }

    // Eight of them: ~1.7 KB. The UDP reply never exceeds what either side
    // allows; if it did not fit, TC is set and TCP has it all.
    let huge = "huge.shift.test.";
    let (len, m) = udp_sized(server.dns, &build_query(huge, RecordType::TXT, Some(4096)));
    let ours = m.edns.as_ref().expect("EDNS").max_payload();
    assert!(
        len <= usize::from(ours.min(4096)),
        "{len} bytes, ours {ours}"
    );
    assert_eq!(m.metadata.truncation, m.answers.len() < 8, "{m}");
    let m = server.query_tcp(huge, RecordType::TXT);
    assert_eq!(m.answers.len(), 8, "{m}");
    assert!(!m.metadata.truncation);
}

// ------------------------------------------------------------------ ANY

#[test]
fn any_is_answered_with_one_rrset() {
    let server = start();
    // The apex holds SOA, NS, MX and TXT: RFC 8482 asks for one RRset.
    for q in [
        "shift.test.",
        "static.shift.test.",
        "www.shift.test.",
        "ns2.shift.test.",
    ] {
        for m in [
            server.query(q, RecordType::ANY),
            server.query_tcp(q, RecordType::ANY),
        ] {
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{q}: {m}");
            assert!(m.metadata.authoritative, "{m}");
            assert!(!m.answers.is_empty(), "{q}: {m}");
            let sets: BTreeSet<(Name, RecordType)> = m
                .answers
                .iter()
                .map(|r| (r.name.clone(), r.record_type()))
                .collect();
            assert_eq!(sets.len(), 1, "one RRset for ANY {q}: {m}");
        }
    }
    let m = server.query("static.shift.test.", RecordType::ANY);
    assert_eq!(sorted(answers(&m)), ["192.0.2.200", "192.0.2.201"]);
    let m = server.query("nope.shift.test.", RecordType::ANY);
    assert_negative(&m, ResponseCode::NXDomain, "shift.test.", NEG_TTL);
}

// ------------------------------------------------------- malformed queries

#[test]
fn formerr_for_zero_or_two_questions() {
    let server = start();
    // Header only: id 0x4242, RD, no question.
    let raw = [0x42, 0x42, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
    let reply = exchange_udp_raw(server.dns, &raw).expect("an answer to zero questions");
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(m.metadata.id, 0x4242);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr, "{m}");
    assert!(m.answers.is_empty());

    let mut q = build_query("www.shift.test.", RecordType::A, None);
    q.add_query(Query::query(name("static.shift.test."), RecordType::A));
    let reply = exchange_udp_raw(server.dns, &q.to_vec().unwrap()).expect("an answer");
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(m.metadata.id, q.metadata.id);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr, "{m}");
    assert!(m.answers.is_empty(), "{m}");

    let m = query_tcp(server.dns, &q);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr, "{m}");
}

#[test]
fn notimp_for_opcodes_other_than_query() {
    let server = start();
    for op in [OpCode::Status, OpCode::Notify] {
        let mut q = Message::new(0x5150, MessageType::Query, op);
        q.add_query(Query::query(name("www.shift.test."), RecordType::SOA));
        let reply = exchange_udp_raw(server.dns, &q.to_vec().unwrap()).expect("an answer");
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.metadata.id, 0x5150);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.op_code, op, "{m}");
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp, "{op}: {m}");
        assert!(m.answers.is_empty(), "{m}");
        let m = query_tcp(server.dns, &q);
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp, "{op}: {m}");
    }
}

#[test]
fn notimp_echoes_none_of_the_query_flags() {
    let server = start();
    // ISC genreport's `opcodeflg` probe: opcode 15, header only, with AA,
    // TC, RD (byte 2) and RA, Z, AD, CD (byte 3) all set.
    let raw = [0x0f, 0x15, 0x78 | 0x07, 0xf0, 0, 0, 0, 0, 0, 0, 0, 0];
    let reply = exchange_udp_raw(server.dns, &raw).expect("an answer to opcode 15");
    assert_eq!(reply.len(), 12, "header only: {reply:02x?}");
    assert_eq!(reply[..2], [0x0f, 0x15], "id");
    assert_eq!(reply[2], 0x80 | 0x78, "QR, opcode 15; no AA, TC, RD");
    assert_eq!(reply[3], 0x04, "NOTIMP; no RA, Z, AD, CD");
    assert_eq!(reply[4..], [0; 8], "empty sections");

    // The same flags with a question, over TCP and with EDNS (echoed).
    for op in [OpCode::Unknown(15), OpCode::Notify] {
        let mut q = build_query("www.shift.test.", RecordType::SOA, Some(1232));
        q.metadata.op_code = op;
        q.metadata.authoritative = true;
        q.metadata.recursion_desired = true;
        q.metadata.recursion_available = true;
        q.metadata.authentic_data = true;
        q.metadata.checking_disabled = true;
        for m in [query_udp(server.dns, &q), query_tcp(server.dns, &q)] {
            assert_eq!(m.metadata.response_code, ResponseCode::NotImp, "{m}");
            assert_eq!(m.metadata.op_code, op, "{m}");
            let md = &m.metadata;
            assert!(!md.checking_disabled, "CD cleared: {m}");
            assert!(!md.recursion_desired, "RD cleared: {m}");
            assert!(!md.authentic_data && !md.authoritative, "{m}");
            assert!(!md.recursion_available && !md.truncation, "{m}");
            assert!(m.edns.is_some(), "OPT echoed: {m}");
        }
    }

    // A QUERY still copies RD and CD (RFC 1035, RFC 4035 3.1.6).
    let mut q = build_query("www.shift.test.", RecordType::A, None);
    q.metadata.recursion_desired = true;
    q.metadata.checking_disabled = true;
    for m in [query_udp(server.dns, &q), query_tcp(server.dns, &q)] {
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
        assert!(
            m.metadata.recursion_desired && m.metadata.checking_disabled,
            "{m}"
        );
    }
}

#[test]
fn messages_with_qr_set_get_no_answer() {
    let server = start();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(QUERY_TIMEOUT)).unwrap();
    sock.connect(server.dns).unwrap();

    let mut response = Message::new(0x0bad, MessageType::Response, OpCode::Query);
    response.add_query(Query::query(name("www.shift.test."), RecordType::A));
    sock.send(&response.to_vec().unwrap()).unwrap();
    let q = build_query("www.shift.test.", RecordType::A, None);
    sock.send(&q.to_vec().unwrap()).unwrap();

    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("the normal query is answered");
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, q.metadata.id, "first reply: {m}");
    // And nothing arrives for the response afterwards either.
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    match sock.recv(&mut buf) {
        Ok(n) => panic!(
            "unexpected second datagram: {}",
            Message::from_vec(&buf[..n]).unwrap()
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
}

#[test]
fn garbage_with_qr_set_is_never_answered() {
    let server = start();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(QUERY_TIMEOUT)).unwrap();
    sock.connect(server.dns).unwrap();
    let garbage: [&[u8]; 3] = [
        // QR set, claims a question that is not there.
        &[0x0b, 0xad, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0],
        // QR set, opcode 15, every flag, absurd counts, junk.
        &[
            0x0b, 0xae, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 2, 3,
        ],
        // Shorter than a header.
        &[0x80, 0x80, 0x80],
    ];
    for g in garbage {
        sock.send(g).unwrap();
    }
    // The first garbage without QR is a broken query: FORMERR.
    sock.send(&[0x0b, 0xaf, 0x00, 0, 0, 1, 0, 0, 0, 0, 0, 0])
        .unwrap();
    let q = build_query("www.shift.test.", RecordType::A, None);
    sock.send(&q.to_vec().unwrap()).unwrap();

    // The broken query and the real one are answered, each once; the fast
    // path answers the real one at once while the broken one takes the
    // fallback, so the order of the two replies is not fixed. Any reply to
    // the garbage would be a third datagram, or carry its ID.
    let mut buf = [0u8; 4096];
    let mut replies: Vec<Message> = (0..2)
        .map(|i| {
            let n = sock
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("reply {i} of 2: {e}"));
            Message::from_vec(&buf[..n]).unwrap()
        })
        .collect();
    replies.sort_by_key(|m| m.metadata.id != 0x0baf);
    let (broken, answer) = (&replies[0], &replies[1]);
    assert_eq!(broken.metadata.id, 0x0baf, "{broken}");
    assert_eq!(
        broken.metadata.response_code,
        ResponseCode::FormErr,
        "{broken}"
    );
    assert_eq!(answer.metadata.id, q.metadata.id, "{answer}");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    if let Ok(n) = sock.recv(&mut buf) {
        panic!("unexpected third datagram: {:02x?}", &buf[..n]);
    }
    let control = server.control.unwrap();
    let bad = |p: &str| {
        metric(
            control,
            &format!("dnsshift_dns_bad_packets_total{{problem=\"{p}\"}}"),
        )
    };
    assert_eq!(bad("dropped"), Some(3));
    assert_eq!(bad("unparsable"), Some(1));
}

/// A query whose OPT record holds an option claiming 8 bytes of data and
/// carrying 4: the message parses, the options do not.
fn malformed_edns_query() -> Vec<u8> {
    let mut raw = build_query("www.shift.test.", RecordType::A, Some(1232))
        .to_vec()
        .unwrap();
    // The OPT record is last, with no data: set its RDLENGTH and append.
    let len = raw.len();
    assert_eq!(raw[len - 2..], [0, 0], "empty OPT last");
    raw[len - 1] = 8;
    raw.extend([0, 10, 0, 8, 1, 2, 3, 4]);
    raw
}

#[test]
fn malformed_edns_options_are_logged_once_per_interval_and_counted() {
    let server = start();
    let raw = malformed_edns_query();
    let ask = || {
        let reply = exchange_udp_raw(server.dns, &raw).expect("an answer");
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
        assert_eq!(m.answers.len(), 2, "answered as if without options: {m}");
        assert!(m.edns.is_some(), "{m}");
    };
    for _ in 0..50 {
        ask();
    }
    // And over TCP.
    let reply = exchange_tcp_raw(server.dns, &raw);
    assert_eq!(Message::from_vec(&reply).unwrap().answers.len(), 2);

    let control = server.control.unwrap();
    let counted = || {
        metric(
            control,
            "dnsshift_dns_bad_packets_total{problem=\"edns_options\"}",
        )
    };
    assert_eq!(counted(), Some(51));
    let warnings = || {
        server
            .log
            .lines()
            .into_iter()
            .filter(|l| is_msg(l, "malformed EDNS options ignored"))
            .collect::<Vec<_>>()
    };
    let lines = warnings();
    assert_eq!(lines.len(), 1, "one line for 51 packets: {lines:#?}");
    assert_eq!(field(&lines[0], "suppressed").as_deref(), Some("0"));
    let hickory: Vec<String> = server
        .log
        .lines()
        .into_iter()
        .filter(|l| l.contains("EDNS options") && !lines.contains(l))
        .collect();
    assert!(hickory.is_empty(), "no line per packet: {hickory:#?}");

    // After the interval (10 s) the next one is logged, with the count of
    // those left out.
    let sent = std::cell::Cell::new(51u64);
    let second = poll(Duration::from_secs(20), Duration::from_millis(250), || {
        ask();
        sent.set(sent.get() + 1);
        warnings().get(1).cloned()
    })
    .expect("a second line after the interval");
    let sent = sent.get();
    let suppressed: u64 = field(&second, "suppressed").unwrap().parse().unwrap();
    assert!(suppressed >= 50, "{second}");
    // Every packet is counted once (/metrics may serve a rendering up to a
    // second old: poll).
    let seen = poll(Duration::from_secs(5), Duration::from_millis(100), || {
        (counted() == Some(sent)).then_some(())
    });
    assert!(seen.is_some(), "counted {:?}, sent {sent}", counted());
    // Every packet before the second line is one of the two lines or left
    // out. The log is read through a pipe, so a few packets may have been
    // sent after the second line was written and before the test read it;
    // those belong to the next interval.
    let accounted = suppressed + 2;
    assert!(
        accounted <= sent && sent - accounted <= 8,
        "lines and suppressed account for {accounted} of {sent} packets: {second}"
    );
}

// ------------------------------------------------- server identification

/// The identity configured for the identification tests.
const SERVER_ID: &str = "ns-test-7.example";

fn start_with_id(server_id: &str) -> Server {
    Setup::new(
        &[("shift.test.toml", &main_zone())],
        &format!("server_id = {server_id:?}\n"),
    )
    .start()
}

/// An EDNS query, asking for NSID (an empty NSID option) if `nsid`.
fn nsid_query(qname: &str, nsid: bool) -> Message {
    let mut q = build_query(qname, RecordType::A, Some(1232));
    if nsid {
        let empty = NSIDPayload::new(Vec::<u8>::new()).unwrap();
        let edns = q.edns.as_mut().unwrap();
        edns.options_mut().insert(EdnsOption::NSID(empty));
    }
    q
}

/// The NSID option of a response, as text.
fn nsid(m: &Message) -> Option<String> {
    match m.edns.as_ref()?.option(EdnsCode::NSID)? {
        EdnsOption::NSID(p) => Some(String::from_utf8(p.as_ref().to_vec()).unwrap()),
        other => panic!("not an NSID: {other:?}"),
    }
}

/// A class CH query.
fn ch_query(qname: &str, t: RecordType) -> Message {
    let mut q = build_query("x.", RecordType::A, None);
    let mut query = Query::query(name(qname), t);
    query.set_query_class(DNSClass::CH);
    q.queries = vec![query];
    q
}

#[test]
fn nsid_is_answered_only_when_asked() {
    let server = start_with_id(SERVER_ID);
    for nsid_asked in [true, false] {
        let q = nsid_query("www.shift.test.", nsid_asked);
        for m in [query_udp(server.dns, &q), query_tcp(server.dns, &q)] {
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
            assert_eq!(m.answers.len(), 2, "the answer is unchanged: {m}");
            let want = nsid_asked.then(|| SERVER_ID.to_string());
            assert_eq!(nsid(&m), want, "{m}");
        }
    }
    // Negative and refused answers say who gave them, too.
    for (qname, rcode) in [
        ("nope.shift.test.", ResponseCode::NXDomain),
        ("example.com.", ResponseCode::Refused),
    ] {
        let m = query_udp(server.dns, &nsid_query(qname, true));
        assert_eq!(m.metadata.response_code, rcode, "{m}");
        assert_eq!(nsid(&m).as_deref(), Some(SERVER_ID), "{m}");
    }
    // Without EDNS there is nowhere to put it.
    let m = query_udp(
        server.dns,
        &build_query("www.shift.test.", RecordType::A, None),
    );
    assert!(m.edns.is_none(), "{m}");
}

#[test]
fn server_id_defaults_to_the_host_name() {
    let server = start();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim();
    assert!(!host.is_empty(), "this test needs a host name");
    let m = query_udp(server.dns, &nsid_query("www.shift.test.", true));
    assert_eq!(nsid(&m).as_deref(), Some(host), "{m}");
    let m = query_udp(server.dns, &ch_query("hostname.bind.", RecordType::TXT));
    assert_eq!(answers(&m), [host.to_string()], "{m}");
}

#[test]
fn id_server_and_hostname_bind_answer_the_server_id_in_class_ch() {
    let server = start_with_id(SERVER_ID);
    for qname in [
        "id.server.",
        "hostname.bind.",
        "ID.Server.",
        "HOSTNAME.BIND.",
    ] {
        for t in [RecordType::TXT, RecordType::ANY] {
            let q = ch_query(qname, t);
            for m in [query_udp(server.dns, &q), query_tcp(server.dns, &q)] {
                assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
                assert!(m.metadata.authoritative, "AA: {m}");
                assert_eq!(m.answers.len(), 1, "{m}");
                let rr = &m.answers[0];
                assert_eq!(rr.name, name(qname), "{m}");
                assert_eq!(rr.dns_class, DNSClass::CH, "{m}");
                assert_eq!(rr.ttl, 0, "not cached: {m}");
                match &rr.data {
                    RData::TXT(txt) => {
                        assert_eq!(*txt.txt_data, [SERVER_ID.as_bytes().into()], "{m}")
                    }
                    other => panic!("not a TXT: {other:?}"),
                }
            }
        }
    }
    // Another type of the name: it exists, without that type.
    let m = query_udp(server.dns, &ch_query("id.server.", RecordType::A));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    assert!(m.metadata.authoritative && m.answers.is_empty(), "{m}");
    // Other CH names stay refused, and so do these names in class IN.
    for qname in [
        "version.bind.",
        "authors.bind.",
        "version.server.",
        "x.id.server.",
    ] {
        let m = query_udp(server.dns, &ch_query(qname, RecordType::TXT));
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::Refused,
            "{qname}: {m}"
        );
        assert!(m.answers.is_empty(), "{m}");
    }
    let m = server.query("id.server.", RecordType::TXT);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{m}");
}

#[test]
fn an_empty_server_id_identifies_nothing() {
    let server = start_with_id("");
    let m = query_udp(server.dns, &nsid_query("www.shift.test.", true));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    assert_eq!(nsid(&m), None, "{m}");
    for qname in ["id.server.", "hostname.bind."] {
        let q = ch_query(qname, RecordType::TXT);
        for m in [query_udp(server.dns, &q), query_tcp(server.dns, &q)] {
            assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{m}");
            assert!(m.answers.is_empty(), "{m}");
        }
    }
}

// ------------------------------------------------------- shifted names

/// Reuses one UDP socket for many queries of the same question.
struct Asker {
    sock: UdpSocket,
    template: Vec<u8>,
    id: u16,
    buf: Vec<u8>,
}

impl Asker {
    fn new(server: SocketAddr, qname: &str, t: RecordType) -> Asker {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(QUERY_TIMEOUT)).unwrap();
        sock.connect(server).unwrap();
        Asker {
            sock,
            template: build_query(qname, t, Some(1232)).to_vec().unwrap(),
            id: 0,
            buf: vec![0; 65535],
        }
    }

    /// One exchange; a reply with another id (a late duplicate) is skipped.
    fn ask(&mut self) -> Message {
        self.id = self.id.wrapping_add(1);
        self.template[..2].copy_from_slice(&self.id.to_be_bytes());
        self.sock.send(&self.template).unwrap();
        loop {
            let n = self.sock.recv(&mut self.buf).expect("UDP answer in time");
            let m = Message::from_vec(&self.buf[..n]).unwrap();
            if m.metadata.id == self.id {
                assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
                assert!(m.metadata.authoritative, "{m}");
                return m;
            }
        }
    }

    /// The answered addresses of one exchange.
    fn addrs(&mut self) -> Vec<String> {
        answers(&self.ask())
    }
}

const WWW_OLD: [&str; 3] = ["192.0.2.10", "192.0.2.11", "192.0.2.12"];
const WWW_NEW: [&str; 2] = ["198.51.100.20", "198.51.100.21"];

#[test]
fn weighted_split_follows_the_phase_over_10000_queries() {
    let server = start();
    let mut asker = Asker::new(server.dns, "www.shift.test.", RecordType::A);
    // Phase "ten" weights old 90, new 10: each answer is `new` with p = 0.1.
    // Over n = 10,000 independent draws the share of `new` has standard
    // deviation sqrt(p(1-p)/n) = sqrt(0.09/10000) = 0.003. We accept
    // 0.10 ± 0.015, i.e. ±5 sd: a correct server fails this with probability
    // about 6e-7, while a 12/88 or 8/92 split (±2 points) fails it
    // practically always (6.7 sd away).
    const N: usize = 10_000;
    const P: f64 = 0.10;
    const BOUND: f64 = 0.015;
    let mut new = 0usize;
    for _ in 0..N {
        let m = asker.ask();
        let got = answers(&m);
        assert_eq!(got.len(), 2, "max_answers = 2: {m}");
        assert!(m.answers.iter().all(|r| r.ttl == 30), "{m}");
        assert_ne!(got[0], got[1], "{m}");
        if got.iter().all(|a| WWW_NEW.contains(&a.as_str())) {
            new += 1;
        } else {
            assert!(
                got.iter().all(|a| WWW_OLD.contains(&a.as_str())),
                "one pool per answer: {got:?}"
            );
        }
    }
    let share = new as f64 / N as f64;
    assert!(
        (share - P).abs() <= BOUND,
        "share of new {share:.4} outside {P} ± {BOUND} over {N} queries"
    );
}

#[test]
fn weight_zero_pool_is_standby_for_the_name_in_every_family() {
    let server = start();
    // Separate-domain: old 100, new 0. All endpoints are healthy, so the
    // standby pool `new` is never answered, for A nor for AAAA.
    let mut a = Asker::new(server.dns, "stby.shift.test.", RecordType::A);
    let mut seen = BTreeSet::new();
    for _ in 0..2_000 {
        for addr in a.addrs() {
            assert!(
                ["192.0.2.50", "192.0.2.51"].contains(&addr.as_str()),
                "standby answered: {addr}"
            );
            seen.insert(addr);
        }
    }
    assert_eq!(seen.len(), 2);
    // Only new has IPv6 endpoints, but the drawn pool is always old: AAAA
    // is NODATA (NOERROR, empty, the SOA), and the client stays with old
    // over A.
    // That NODATA is cached no longer than old's answers (30s, below the
    // zone's negative TTL).
    let mut aaaa = Asker::new(server.dns, "stby.shift.test.", RecordType::AAAA);
    for _ in 0..500 {
        assert_negative(&aaaa.ask(), ResponseCode::NoError, "shift.test.", 30);
    }
    let m = server.query_tcp("stby.shift.test.", RecordType::AAAA);
    assert_negative(&m, ResponseCode::NoError, "shift.test.", 30);
}

#[test]
fn staging_name_answers_only_the_new_pool() {
    let server = start();
    // www is in its 90/10 phase; www-next ignores the phase.
    let mut www = Asker::new(server.dns, "www-next.shift.test.", RecordType::A);
    let mut seen = BTreeSet::new();
    for _ in 0..1_000 {
        let m = www.ask();
        for r in &m.answers {
            assert_eq!(r.name, name("www-next.shift.test."), "{m}");
            assert_eq!(r.ttl, 30);
            let a = r.data.to_string();
            assert!(WWW_NEW.contains(&a.as_str()), "staging answered {a}");
            seen.insert(a);
        }
        assert_eq!(m.answers.len(), 2);
    }
    assert_eq!(seen.len(), 2);
    // stby is in separate-domain, where new has weight 0: staging still answers it.
    let mut stby = Asker::new(server.dns, "stby-next.shift.test.", RecordType::A);
    for _ in 0..300 {
        assert_eq!(stby.addrs(), ["198.51.100.50"]);
    }
    let mut stby6 = Asker::new(server.dns, "stby-next.shift.test.", RecordType::AAAA);
    for _ in 0..50 {
        assert_eq!(sorted(stby6.addrs()), ["2001:db8::50", "2001:db8::51"]);
    }
}

#[test]
fn max_answers_and_rotation() {
    let server = start();
    let old = [
        "192.0.2.101",
        "192.0.2.102",
        "192.0.2.103",
        "192.0.2.104",
        "192.0.2.105",
    ];
    let mut asker = Asker::new(server.dns, "rot.shift.test.", RecordType::A);
    let mut first: HashMap<String, usize> = HashMap::new();
    for _ in 0..500 {
        let got = asker.addrs();
        // min(max_answers = 3, 5 endpoints), all distinct, from the pool.
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), 3, "{got:?}");
        // A rotation of the configured order: consecutive, wrapping around.
        let start = old
            .iter()
            .position(|a| *a == got[0])
            .expect("an old endpoint");
        for (j, a) in got.iter().enumerate() {
            assert_eq!(a, old[(start + j) % old.len()], "rotated order: {got:?}");
        }
        *first.entry(got[0].clone()).or_default() += 1;
    }
    // Every endpoint leads sometimes (each with p = 1/5 per query: missing
    // one in 500 queries has probability about 5 * 0.8^500, i.e. never).
    assert_eq!(first.len(), 5, "{first:?}");

    // The staging pool has 2 endpoints: min(3, 2) = 2 per answer, both orders.
    let mut next = Asker::new(server.dns, "rot-next.shift.test.", RecordType::A);
    let mut orders = BTreeSet::new();
    for _ in 0..200 {
        let got = next.addrs();
        assert_eq!(
            sorted(got.clone()),
            ["198.51.100.101", "198.51.100.102"],
            "{got:?}"
        );
        orders.insert(got);
    }
    assert_eq!(orders.len(), 2, "{orders:?}");
}

#[test]
fn host_name_pool_answers_a_cname_and_follows_it_in_the_zone() {
    let server = start();
    let cname = |m: &Message| -> Vec<Name> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::CNAME(CNAME(t)) => Some(t.clone()),
                _ => None,
            })
            .collect()
    };
    // api-next answers the new pool: a CNAME to lb.shift.test., whose
    // records follow.
    for m in [
        server.query("api-next.shift.test.", RecordType::A),
        server.query_tcp("api-next.shift.test.", RecordType::A),
    ] {
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers[0].name, name("api-next.shift.test."), "{m}");
        assert_eq!(m.answers[0].ttl, 20, "{m}");
        assert_eq!(cname(&m), [name("lb.shift.test.")], "{m}");
        let rest: Vec<(Name, String)> = m.answers[1..]
            .iter()
            .map(|r| (r.name.clone(), r.data.to_string()))
            .collect();
        assert_eq!(rest.len(), 2, "{m}");
        assert!(rest.iter().all(|(n, _)| *n == name("lb.shift.test.")));
        assert_eq!(
            sorted(rest.into_iter().map(|(_, a)| a).collect()),
            ["203.0.113.7", "203.0.113.8"]
        );
        assert!(m.answers[1..].iter().all(|r| r.ttl == ZONE_TTL));
    }
    let m = server.query("api-next.shift.test.", RecordType::AAAA);
    assert_eq!(cname(&m), [name("lb.shift.test.")], "{m}");
    assert_eq!(answers(&m)[1..], ["2001:db8::7"]);
    let m = server.query("api-next.shift.test.", RecordType::CNAME);
    assert_eq!(answers(&m), ["lb.shift.test."], "{m}");

    // The main name is in separate-domain: old (addresses) only.
    let mut main = Asker::new(server.dns, "api.shift.test.", RecordType::A);
    for _ in 0..200 {
        assert_eq!(main.addrs(), ["192.0.2.30"]);
    }

    // A target outside the zone: the CNAME alone, for any type.
    for t in [RecordType::A, RecordType::AAAA, RecordType::TXT] {
        let m = server.query("ext.shift.test.", t);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers.len(), 1, "{t}: {m}");
        assert_eq!(cname(&m), [name("ext-lb.example.net.")], "{m}");
        assert_eq!(m.answers[0].ttl, 20);
    }

    // A static CNAME in the zone is followed the same way.
    let m = server.query("docs.shift.test.", RecordType::A);
    assert_eq!(cname(&m), [name("lb.shift.test.")], "{m}");
    assert_eq!(m.answers.len(), 3, "{m}");
}

#[test]
fn each_family_draws_the_pool_by_weight_and_answers_nodata_without_its_addresses() {
    let server = start();
    // Phase half: old 50 / new 50, but only new has IPv6 and only old
    // IPv4. Both families draw the pool 50/50; the drawn pool answers its
    // addresses of the family, or NODATA. Over N = 2,000 draws a share of
    // 0.5 has standard deviation sqrt(0.25/2000) = 0.011; 0.5 ± 0.06 is
    // over 5 sd, while answering the other pool instead of NODATA (a share
    // of 1.0 or 0.0) is far outside.
    const N: usize = 2_000;
    for (t, addrs) in [
        (RecordType::AAAA, &["2001:db8::40", "2001:db8::41"][..]),
        (RecordType::A, &["192.0.2.40"][..]),
    ] {
        let mut asker = Asker::new(server.dns, "v6.shift.test.", t);
        let (mut nodata, mut orders) = (0usize, BTreeSet::new());
        for _ in 0..N {
            let m = asker.ask();
            if m.answers.is_empty() {
                // Cached no longer than the pools' answers (30s).
                assert_negative(&m, ResponseCode::NoError, "shift.test.", 30);
                nodata += 1;
                continue;
            }
            assert!(m.answers.iter().all(|r| r.record_type() == t), "{m}");
            let got = answers(&m);
            assert_eq!(sorted(got.clone()), addrs, "{m}");
            orders.insert(got);
        }
        let share = nodata as f64 / N as f64;
        assert!((share - 0.5).abs() <= 0.06, "{t}: NODATA share {share}");
        assert_eq!(orders.len(), addrs.len(), "{t}: every rotation: {orders:?}");
    }
    // TCP (the hickory path) draws the same way: both outcomes appear.
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        let m = server.query_tcp("v6.shift.test.", RecordType::AAAA);
        seen.insert(m.answers.is_empty());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "TCP: addresses and NODATA");
    // www has no IPv6 at all: NODATA (checked with the negative answers).
}

#[test]
fn tcp_answers_equal_udp_answers() {
    let server = start();
    // Names with deterministic answers (single endpoints or static data).
    let cases = [
        ("static.shift.test.", RecordType::A),
        ("shift.test.", RecordType::NS),
        ("shift.test.", RecordType::MX),
        ("api.shift.test.", RecordType::A),
        ("api-next.shift.test.", RecordType::A),
        ("stby-next.shift.test.", RecordType::A),
        ("nope.shift.test.", RecordType::A),
        ("host.sub.shift.test.", RecordType::A),
    ];
    let canon =
        |rs: &[Record]| -> Vec<String> { sorted(rs.iter().map(|r| r.to_string()).collect()) };
    for (q, t) in cases {
        let u = server.query(q, t);
        let tc = server.query_tcp(q, t);
        assert_eq!(u.metadata.response_code, tc.metadata.response_code, "{q}");
        assert_eq!(u.metadata.authoritative, tc.metadata.authoritative, "{q}");
        assert_eq!(u.metadata.truncation, tc.metadata.truncation, "{q}");
        assert_eq!(canon(&u.answers), canon(&tc.answers), "{q} {t}");
        assert_eq!(canon(&u.authorities), canon(&tc.authorities), "{q} {t}");
        assert_eq!(canon(&u.additionals), canon(&tc.additionals), "{q} {t}");
    }
    // Several queries on one TCP connection, as resolvers send them.
    let mut conn = std::net::TcpStream::connect(server.dns).unwrap();
    conn.set_read_timeout(Some(QUERY_TIMEOUT)).unwrap();
    let qs: Vec<Message> = cases
        .iter()
        .map(|(q, t)| build_query(q, *t, Some(1232)))
        .collect();
    for q in &qs {
        let bytes = q.to_vec().unwrap();
        conn.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
        conn.write_all(&bytes).unwrap();
    }
    let mut ids = BTreeSet::new();
    for _ in &qs {
        let mut len = [0u8; 2];
        conn.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        conn.read_exact(&mut buf).unwrap();
        ids.insert(Message::from_vec(&buf).unwrap().metadata.id);
    }
    assert_eq!(ids, qs.iter().map(|q| q.metadata.id).collect());

    // A weighted name: both transports answer from the same pools.
    let u = server.query("www.shift.test.", RecordType::A);
    let t = server.query_tcp("www.shift.test.", RecordType::A);
    assert_eq!(u.answers.len(), t.answers.len());
    for a in answers(&u).into_iter().chain(answers(&t)) {
        assert!(
            WWW_OLD.contains(&a.as_str()) || WWW_NEW.contains(&a.as_str()),
            "{a}"
        );
    }
}
