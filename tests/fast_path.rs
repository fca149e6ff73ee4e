//! The UDP fast path answers exactly what the hickory handler answers: a
//! corpus of queries (names × types × EDNS × case) goes through both on the
//! same plan with the same random draws, and the decoded responses must be
//! equal. Queries the fast path hands to hickory are counted, and must stay
//! the exception. Some carry a DNS cookie: a client cookie alone or a valid
//! server cookie for the test's client address.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use common::cookie_option;
use dnsshift::answer::{ConfigOnly, Plan, ThreadRandom};
use dnsshift::clock::unix_ms;
use dnsshift::config::source::Source;
use dnsshift::dns::fallback::handle;
use dnsshift::dns::fast::{Action, respond, respond_from};
use dnsshift::dns::{Handler, MAX_UDP_PAYLOAD};
use dnsshift::stats::Stats;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_server::net::xfer::Protocol;

/// A zone with every shape of answer the plan knows.
const ZONE: &str = r#"
[zone]
origin = "z.test."
nameservers = ["ns1", "ns2.z.test."]
hostmaster = "h.z.test."
negative_ttl = "20s"
records = """
ns1 IN A 203.0.113.53
ns2 IN AAAA 2001:db8::53
@ IN MX 10 mail.z.test.
@ IN TXT "v=spf1 -all"
mail IN A 203.0.113.25
a.b IN TXT "deep"
alias IN CNAME mail
chain IN CNAME alias
out IN CNAME elsewhere.example.
toweb IN CNAME www
sub IN NS ns.sub
ns.sub IN A 203.0.113.99
big IN TXT "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big IN TXT "1123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big IN TXT "2123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big IN TXT "3123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big IN TXT "4123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big IN TXT "5123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
"""

[[service]]
name = "www"
staging = "www-next"
max_answers = 2
initial_phase = "round-robin"
[service.pools]
old = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
new = ["198.51.100.1", "2001:db8::1"]
[service.health]
kind = "none"

[[service]]
name = "api"
initial_phase = "round-robin"
[service.pools]
old = ["192.0.2.30"]
new = "mail.z.test."
[service.health]
kind = "none"

# Pools of different families, answers below the negative TTL: a drawn
# pool without the queried family answers NODATA with a 5s SOA.
[[service]]
name = "fam"
ttl = "5s"
initial_phase = "round-robin"
[service.pools]
old = ["192.0.2.50"]
new = ["2001:db8::50"]
[service.health]
kind = "none"

# Sticky (issue 18): several pools and endpoints, and one pool alone.
[[service]]
name = "sticky"
assignment = "sticky"
max_answers = 2
initial_phase = "round-robin"
[service.pools]
old = ["192.0.2.61", "192.0.2.62", "192.0.2.63", "2001:db8::61"]
new = ["198.51.100.61", "2001:db8::62", "2001:db8::63"]
[service.health]
kind = "none"

[[service]]
name = "alone"
assignment = "sticky"
[service.pools]
old = ["192.0.2.71"]
new = ["198.51.100.71"]
[service.health]
kind = "none"

[[service]]
name = "edge"
initial_phase = "round-robin"
[service.pools]
old = ["192.0.2.40"]
new = "www.z.test."
[service.health]
kind = "none"
"#;

fn plan() -> Plan {
    let example = dnsshift::zone::load_file(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/zones/shift.example.com.toml"
    )))
    .unwrap();
    let test = dnsshift::zone::parse(&Source {
        path: "z.toml".into(),
        text: ZONE.into(),
    })
    .unwrap();
    Plan::build(&[example, test], &ConfigOnly, &Stats::default(), 7)
}

/// The same zones, signed ([zone.dnssec] with a new key in `dir`).
fn signed_plan(dir: &Path) -> Plan {
    let key = dir.join("k.pem");
    dnsshift::dnssec::keygen(&key, hickory_proto::dnssec::Algorithm::ECDSAP256SHA256).unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/zones/shift.example.com.toml"
    ))
    .unwrap();
    let signed = |text: &str, name: &str| {
        dnsshift::zone::parse(&Source {
            path: dir.join(name),
            text: format!("{text}\n[zone.dnssec]\nkeys = [\"k.pem\"]\n"),
        })
        .unwrap()
    };
    Plan::build(
        &[signed(&example, "example.toml"), signed(ZONE, "z.toml")],
        &ConfigOnly,
        &Stats::default(),
        7,
    )
}

fn corpus() -> Vec<Vec<u8>> {
    corpus_with(false)
}

/// The client address [`compare`] queries from.
const SRC: &str = "127.0.0.1:5000";
/// A client cookie.
const CLIENT: [u8; 8] = [0x24, 0x64, 0xc4, 0xab, 0xcf, 0x10, 0xc9, 0x57];

/// [`CLIENT`] with a server cookie valid for [`SRC`] now, made with the
/// process's secret.
fn valid_cookie() -> [u8; dnsshift::dns::cookie::REPLY_LEN] {
    use dnsshift::dns::cookie;
    let src: SocketAddr = SRC.parse().unwrap();
    let received = cookie::Received::parse(&CLIENT).unwrap();
    let (c, _) = cookie::answer(&cookie::secrets(), &received, src.ip(), cookie::now_secs());
    c
}

/// [`corpus`]; with `dnssec_ok`, every query with EDNS sets DO.
fn corpus_with(dnssec_ok: bool) -> Vec<Vec<u8>> {
    let names = [
        "z.test.",
        "Z.TeSt.",
        "www.z.test.",
        "WWW.Z.test.",
        "www-next.z.test.",
        "api.z.test.",
        "edge.z.test.",
        "fam.z.test.",
        "sticky.z.test.",
        "alone.z.test.",
        "b.z.test.",
        "a.b.z.test.",
        "x.www.z.test.",
        "nope.z.test.",
        "deep.nope.z.test.",
        "mail.z.test.",
        "alias.z.test.",
        "chain.z.test.",
        "out.z.test.",
        "toweb.z.test.",
        "sub.z.test.",
        "host.sub.z.test.",
        "ns.sub.z.test.",
        "ns1.z.test.",
        "big.z.test.",
        "example.org.",
        "test.",
        ".",
        "shift.example.com.",
        "www.shift.example.com.",
        "www-next.shift.example.com.",
        "api.shift.example.com.",
        "docs.shift.example.com.",
        "_https._tcp.www.shift.example.com.",
        "missing.shift.example.com.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::CNAME,
        RecordType::NS,
        RecordType::SOA,
        RecordType::MX,
        RecordType::TXT,
        RecordType::SRV,
        RecordType::CAA,
        RecordType::DS,
        RecordType::PTR,
        RecordType::HTTPS,
        RecordType::Unknown(4321),
        RecordType::ANY,
    ];
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        for (j, t) in types.iter().enumerate() {
            for edns in [None, Some(512), Some(1232), Some(4096)] {
                let mut m = Message::new((i * 100 + j) as u16, MessageType::Query, OpCode::Query);
                m.metadata.recursion_desired = j % 2 == 0;
                m.metadata.checking_disabled = i % 3 == 0;
                let mut q = Query::query(Name::from_ascii(name).unwrap(), *t);
                if i % 5 == 0 {
                    q.set_query_class(DNSClass::ANY);
                }
                m.add_query(q);
                if let Some(p) = edns {
                    let mut e = Edns::new();
                    e.set_max_payload(p);
                    e.set_dnssec_ok(dnssec_ok);
                    match (i + j) % 3 {
                        0 => e
                            .options_mut()
                            .insert(EdnsOption::Unknown(10, CLIENT.to_vec())),
                        1 => e
                            .options_mut()
                            .insert(EdnsOption::Unknown(10, valid_cookie().to_vec())),
                        _ => {}
                    }
                    m.set_edns(e);
                }
                out.push(m.to_vec().unwrap());
            }
        }
    }
    out
}

#[test]
fn fast_path_answers_equal_the_hickory_handler() {
    let (fast, fell_back) = compare(Arc::new(plan()), &corpus());
    // ANY, truncation and referrals below a cut are the hickory path's.
    assert!(
        fast > fell_back * 5,
        "fast {fast}, fell back {fell_back}: the fast path should answer most"
    );
}

/// Signed zones: DO=1 answers (RRSIGs, NSEC proofs) and DO=0 answers are
/// the same on both paths.
#[test]
fn signed_fast_path_answers_equal_the_hickory_handler() {
    let dir = tempfile::tempdir().unwrap();
    let plan = signed_plan(dir.path());
    let plan = Arc::new(plan);
    let (fast, fell_back) = compare(plan.clone(), &corpus_with(true));
    let (fast0, fell_back0) = compare(plan.clone(), &corpus_with(false));
    eprintln!("signed, DO=1: fast {fast}, fell back {fell_back}; DO=0: {fast0}, {fell_back0}");
    assert!(
        fast > fell_back * 5,
        "DO=1: fast {fast}, fell back {fell_back}"
    );
    assert!(
        fast0 > fell_back0 * 5,
        "DO=0: fast {fast0}, fell back {fell_back0}"
    );
    assert!(
        fast > fell_back * 3,
        "fast {fast}, fell back {fell_back}: the fast path should answer most"
    );
}

/// Answers every query of `corpus` on both paths (three seeds each) and
/// asserts equal responses; (answered by the fast path, fell back).
fn compare(plan: Arc<Plan>, corpus: &[Vec<u8>]) -> (usize, usize) {
    let plan = Arc::new(ArcSwap::new(plan));
    let handler = Handler::new(plan.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let src: SocketAddr = SRC.parse().unwrap();
    let (mut fast, mut fell_back) = (0, 0);
    for (n, req) in corpus.iter().enumerate() {
        for seed in [1, 2, 3] {
            let mut out = [0u8; MAX_UDP_PAYLOAD as usize];
            fastrand::seed(seed);
            let action = respond_from(&plan.load(), req, Some(src.ip()), &mut out);
            let len = match action {
                Action::Send(len) => len,
                Action::Fallback => {
                    fell_back += 1;
                    continue;
                }
                Action::Drop => panic!("query {n} dropped"),
            };
            fast += 1;
            // hickory's decoder, the handler, and hickory's encoder with
            // the client's UDP size.
            let max = Message::from_vec(req)
                .unwrap()
                .edns
                .map_or(512, |e| e.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            fastrand::seed(seed);
            let want = rt
                .block_on(handle(&handler, req.clone(), src, Protocol::Udp))
                .unwrap();
            let mut got_msg = Message::from_vec(&out[..len]).unwrap();
            let want_msg = Message::from_vec(&want).unwrap();
            let q = Message::from_vec(req).unwrap();
            // A new server cookie is stamped with the second it was made
            // in: the two paths may straddle a second. The same client
            // cookie, the same version; the rest is equal within a second.
            let (got_c, want_c) = (cookie_option(&got_msg), cookie_option(&want_msg));
            assert_eq!(got_c.is_some(), cookie_option(&q).is_some(), "query {n}");
            if let (Some(g), Some(w)) = (&got_c, &want_c)
                && g != w
            {
                let ts = |c: &[u8]| u32::from_be_bytes([c[12], c[13], c[14], c[15]]);
                assert_eq!((g.len(), &g[..12]), (w.len(), &w[..12]), "query {n}");
                assert_eq!(ts(w).wrapping_sub(ts(g)), 1, "query {n}: {g:?} {w:?}");
                // Only the cookie is taken over; the rest is compared.
                for (_, o) in got_msg
                    .edns
                    .as_mut()
                    .unwrap()
                    .options_mut()
                    .options
                    .iter_mut()
                {
                    if let EdnsOption::Unknown(10, d) = o {
                        d.clone_from(w);
                    }
                }
            }
            assert_eq!(got_msg, want_msg, "query {n}: {:?}", q.queries);
            assert_eq!(
                out[..4],
                want[..4],
                "query {n}: header flags: {:?}",
                q.queries
            );
            assert!(len <= usize::from(max), "query {n}: {len} > {max}");
        }
    }
    (fast, fell_back)
}

#[test]
fn weighted_choices_follow_the_same_draws() {
    // Over many seeds, the fast path picks the same pool and rotation the
    // hickory handler picks from the same random numbers: the split is the
    // plan's, not a second implementation's.
    let plan = Arc::new(ArcSwap::from_pointee(plan()));
    let mut m = Message::new(1, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii("www.z.test.").unwrap(),
        RecordType::A,
    ));
    let req = m.to_vec().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let mut out = [0u8; 512];
        fastrand::seed(seed);
        let Action::Send(len) = respond(&plan.load(), &req, &mut out) else {
            panic!("not answered")
        };
        let got: Vec<String> = Message::from_vec(&out[..len])
            .unwrap()
            .answers
            .iter()
            .map(|r| r.data.to_string())
            .collect();
        fastrand::seed(seed);
        let name = hickory_proto::rr::LowerName::from(Name::from_ascii("www.z.test.").unwrap());
        let want: Vec<String> =
            match plan
                .load()
                .lookup(&name, RecordType::A, unix_ms(), &mut ThreadRandom)
            {
                dnsshift::answer::Lookup::Zone(a, _) => {
                    a.answers.iter().map(|r| r.data.to_string()).collect()
                }
                dnsshift::answer::Lookup::Refused => panic!("refused"),
            };
        assert_eq!(got, want, "seed {seed}");
        seen.insert(got);
    }
    // Both pools and several rotations were exercised.
    assert!(seen.len() >= 4, "{seen:?}");
}

/// A query for `name`/`t` with EDNS and, if given, this client subnet
/// option data (family, source, scope, address) written raw.
fn ecs_query(id: u16, name: &str, t: RecordType, ecs: Option<&[u8]>) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    m.set_edns(e);
    let mut bytes = m.to_vec().unwrap();
    if let Some(data) = ecs {
        // The OPT record ends the message: append the option, fix RDLENGTH.
        let n = bytes.len();
        let opt_len = (4 + data.len()) as u16;
        bytes[n - 2..].copy_from_slice(&opt_len.to_be_bytes());
        bytes.extend(8u16.to_be_bytes());
        bytes.extend((data.len() as u16).to_be_bytes());
        bytes.extend(data);
    }
    bytes
}

/// The client subnet option of a response: (source, scope, address bytes).
fn reply_ecs(msg: &Message) -> Option<(u8, u8, std::net::IpAddr)> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    match msg.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some((s.source_prefix(), s.scope_prefix(), s.addr())),
        _ => None,
    }
}

#[test]
fn sticky_answers_and_ecs_scopes_are_the_same_on_both_paths() {
    let plan = Arc::new(ArcSwap::from_pointee(plan()));
    let handler = Handler::new(plan.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let names = [
        "sticky.z.test.",
        "alone.z.test.",
        "www.z.test.",
        "mail.z.test.",
        "nope.z.test.",
    ];
    let mut pools_seen = std::collections::BTreeSet::new();
    for c in 0u16..200 {
        let (hi, lo) = ((c >> 8) as u8, c as u8);
        let src: SocketAddr = format!("10.{hi}.{lo}.7:5353").parse().unwrap();
        let v4_24 = [0, 1, 24, 0, 203, hi, lo];
        let v4_32 = [0, 1, 32, 0, 203, hi, lo, 9];
        let v4_20 = [0, 1, 20, 0, 100, 64, lo & 0xF0];
        let v4_0 = [0, 1, 0, 0];
        let v6_56 = [0, 2, 56, 0, 0x20, 1, 0x0d, 0xb8, hi, lo, 0x42];
        let variants: [Option<&[u8]>; 6] = [
            None,
            Some(&v4_24),
            Some(&v4_32),
            Some(&v4_20),
            Some(&v4_0),
            Some(&v6_56),
        ];
        for name in names {
            let mut first_pool: Vec<Option<String>> = Vec::new();
            for t in [RecordType::A, RecordType::AAAA] {
                for (v, ecs) in variants.iter().enumerate() {
                    let req = ecs_query(c, name, t, *ecs);
                    let mut out = [0u8; MAX_UDP_PAYLOAD as usize];
                    fastrand::seed(u64::from(c));
                    let Action::Send(len) =
                        respond_from(&plan.load(), &req, Some(src.ip()), &mut out)
                    else {
                        panic!("{name} {t} variant {v}: not answered on the fast path");
                    };
                    fastrand::seed(u64::from(c));
                    let want = rt
                        .block_on(handle(&handler, req.clone(), src, Protocol::Udp))
                        .unwrap();
                    let got = Message::from_vec(&out[..len]).unwrap();
                    assert_eq!(got, Message::from_vec(&want).unwrap(), "{name} {t} {v}");
                    // The scope: the key's prefix where the answer depends
                    // on the client, else 0; source and address echoed.
                    let Some(data) = ecs else {
                        assert_eq!(reply_ecs(&got), None);
                        continue;
                    };
                    let (source, scope, _) = reply_ecs(&got).expect("ECS echoed");
                    assert_eq!(source, data[2], "{name} {t} {v}");
                    let family_max = if data[1] == 1 { 24 } else { 56 };
                    let want_scope = if name == "sticky.z.test." {
                        data[2].min(family_max)
                    } else {
                        0
                    };
                    assert_eq!(scope, want_scope, "{name} {t} variant {v}");
                    if name == "sticky.z.test." && v == 1 {
                        // A and AAAA of one client network: one pool.
                        let pool = got.answers.first().map(|r| {
                            let d = r.data.to_string();
                            if d.starts_with("192.0.2.") || d == "2001:db8::61" {
                                "old".to_string()
                            } else {
                                "new".to_string()
                            }
                        });
                        first_pool.push(pool.clone());
                        pools_seen.insert(pool);
                    }
                }
            }
            if let [a, aaaa] = first_pool.as_slice() {
                assert_eq!(a, aaaa, "client {c}: A and AAAA lead to different pools");
            }
        }
    }
    assert!(pools_seen.len() >= 2, "{pools_seen:?}");
}

#[test]
fn a_sticky_client_keeps_its_answer_whatever_resolver_it_comes_through() {
    let plan = plan();
    let mut answers = std::collections::BTreeSet::new();
    for r in 0..50u8 {
        let src: std::net::IpAddr = format!("172.16.{r}.1").parse().unwrap();
        let req = ecs_query(
            1,
            "sticky.z.test.",
            RecordType::A,
            Some(&[0, 1, 24, 0, 203, 0, 113]),
        );
        let mut out = [0u8; 1232];
        fastrand::seed(u64::from(r));
        let Action::Send(len) = respond_from(&plan, &req, Some(src), &mut out) else {
            panic!("not answered");
        };
        answers.insert(out[2..len].to_vec());
    }
    assert_eq!(answers.len(), 1, "one client network, one answer");
}

#[test]
fn malformed_client_subnets_fall_back_and_get_formerr() {
    let plan = Arc::new(ArcSwap::from_pointee(plan()));
    let handler = Handler::new(plan.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let bad: [&[u8]; 5] = [
        &[0, 1, 24, 8, 203, 0, 113],   // scope in a query
        &[0, 3, 0, 0],                 // unknown family
        &[0, 1, 24, 0, 203, 0],        // address too short
        &[0, 1, 23, 0, 203, 0, 113],   // bits beyond the source prefix
        &[0, 1, 33, 0, 1, 2, 3, 4, 5], // source longer than IPv4
    ];
    for data in bad {
        let req = ecs_query(9, "sticky.z.test.", RecordType::A, Some(data));
        let mut out = [0u8; 1232];
        assert_eq!(
            respond_from(&plan.load(), &req, Some(src.ip()), &mut out),
            Action::Fallback,
            "{data:?}"
        );
        let reply = rt
            .block_on(handle(&handler, req.clone(), src, Protocol::Udp))
            .unwrap();
        let msg = Message::from_vec(&reply).unwrap();
        assert_eq!(
            msg.metadata.response_code,
            hickory_proto::op::ResponseCode::FormErr,
            "{data:?}"
        );
    }
}
