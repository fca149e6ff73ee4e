//! Zero heap allocations per query on the fast path: a counting global
//! allocator around thousands of calls to the fast-path answer function,
//! over a mix of weighted, static, negative, refused and EDNS queries,
//! each then passed through response rate limiting as the workers do; DNS
//! cookie queries (a client cookie alone, a valid server cookie); and
//! the same around whole exchanges with a running UDP worker (recvmmsg,
//! answer, sendmmsg) on a loopback socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::alloc::System;
use std::net::IpAddr;
use std::path::Path;

use arc_swap::ArcSwap;
use dnsshift::answer::{ConfigOnly, Plan};
use dnsshift::dns::MAX_UDP_PAYLOAD;
use dnsshift::dns::fast::{Action, Counters, respond, respond_checked, respond_from};
use dnsshift::dns::rrl::{Rrl, Settings, now_secs};
use dnsshift::stats::Stats;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{Name, RecordType};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

/// Counts every allocation of this test binary.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Queries per kind in the measured loop.
const ROUNDS: usize = 2000;

/// One test function: the counter is process-wide, and the test harness
/// allocates when it reports a finished test while another runs.
#[test]
fn the_fast_path_allocates_nothing_per_query() {
    answers_allocate_nothing();
    a_running_udp_worker_allocates_nothing();
}

/// A sticky service (issue 18), beside the shipped example zone.
const STICKY_ZONE: &str = r#"
[zone]
origin = "sticky.test."
nameservers = ["ns1.sticky.test."]
hostmaster = "h.sticky.test."
records = """
ns1 IN A 127.0.0.53
"""
[[service]]
name = "app"
assignment = "sticky"
max_answers = 2
initial_phase = "round-robin"
[service.pools]
old = ["192.0.2.1", "192.0.2.2", "2001:db8::1"]
new = ["198.51.100.1", "198.51.100.2", "2001:db8::2"]
[service.health]
kind = "none"
"#;

/// The example zone (signed with a new key in `dir` when `signed`) and
/// [`STICKY_ZONE`].
fn zones(dir: &Path, signed: bool) -> Vec<dnsshift::zone::Zone> {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/zones/shift.example.com.toml"
    ));
    let example = if signed {
        dnsshift::dnssec::keygen(
            &dir.join("k.pem"),
            hickory_proto::dnssec::Algorithm::ECDSAP256SHA256,
        )
        .unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        dnsshift::zone::parse(&dnsshift::config::source::Source {
            path: dir.join("z.toml"),
            text: format!("{text}\n[zone.dnssec]\nkeys = [\"k.pem\"]\n"),
        })
        .unwrap()
    } else {
        dnsshift::zone::load_file(path).unwrap()
    };
    let sticky = dnsshift::zone::parse(&dnsshift::config::source::Source {
        path: "sticky.toml".into(),
        text: STICKY_ZONE.into(),
    })
    .unwrap();
    vec![example, sticky]
}

/// (name, type, EDNS, DO)
const QUERIES: [(&str, RecordType, bool, bool); 12] = [
    ("www.shift.example.com.", RecordType::A, false, false),
    ("WWW.shift.example.com.", RecordType::AAAA, true, false),
    ("www-next.shift.example.com.", RecordType::A, true, false),
    ("api.shift.example.com.", RecordType::A, false, false),
    ("shift.example.com.", RecordType::MX, true, false),
    ("shift.example.com.", RecordType::NS, false, false),
    ("docs.shift.example.com.", RecordType::A, false, false),
    ("nope.shift.example.com.", RecordType::A, true, false),
    ("www.shift.example.com.", RecordType::TXT, false, false),
    ("example.org.", RecordType::A, false, false),
    ("app.sticky.test.", RecordType::A, false, false),
    ("app.sticky.test.", RecordType::AAAA, true, false),
];

/// DO=1 queries of a signed zone: positive (weighted, static, apex),
/// NODATA, NXDOMAIN (NSEC proofs looked up per name), DNSKEY.
const SIGNED_QUERIES: [(&str, RecordType, bool, bool); 8] = [
    ("www.shift.example.com.", RecordType::A, true, true),
    ("WWW.shift.example.com.", RecordType::AAAA, true, true),
    ("www-next.shift.example.com.", RecordType::A, true, true),
    ("shift.example.com.", RecordType::SOA, true, true),
    ("shift.example.com.", RecordType::DNSKEY, true, true),
    ("www.shift.example.com.", RecordType::TXT, true, true),
    ("nope.shift.example.com.", RecordType::A, true, true),
    ("a.b.nope.shift.example.com.", RecordType::AAAA, true, true),
];

fn encode(queries: &[(&str, RecordType, bool, bool)]) -> Vec<Vec<u8>> {
    queries
        .iter()
        .map(|(name, t, edns, dnssec_ok)| {
            let mut m = Message::new(7, MessageType::Query, OpCode::Query);
            m.add_query(Query::query(Name::from_ascii(name).unwrap(), *t));
            if *edns {
                let mut e = Edns::new();
                e.set_max_payload(1232);
                e.set_dnssec_ok(*dnssec_ok);
                m.set_edns(e);
            }
            m.to_vec().unwrap()
        })
        .collect()
}

/// A query for `www.shift.example.com.` with EDNS and a COOKIE option.
fn cookie_query(cookie: &[u8]) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii("www.shift.example.com.").unwrap(),
        RecordType::A,
    ));
    let mut e = Edns::new();
    e.options_mut()
        .insert(EdnsOption::Unknown(10, cookie.to_vec()));
    m.set_edns(e);
    m.to_vec().unwrap()
}

/// The COOKIE option data of a response.
fn cookie_of(response: &[u8]) -> Vec<u8> {
    common::cookie_option(&Message::from_vec(response).unwrap()).unwrap()
}

/// Response rate limiting at `responses_per_second`, slipping every
/// second reply, with the defaults' prefixes.
fn rrl(responses_per_second: u32) -> Rrl {
    Rrl::new(Settings {
        enabled: true,
        responses_per_second,
        slip: 2,
        ipv4_prefix: 24,
        ipv6_prefix: 56,
        table_size: 1024,
        exempt: Vec::new(),
    })
}

/// A query for `app.sticky.test.` with EDNS and a client subnet option.
fn ecs_query(t: RecordType, data: &[u8]) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii("app.sticky.test.").unwrap(),
        t,
    ));
    m.set_edns(Edns::new());
    let mut bytes = m.to_vec().unwrap();
    let n = bytes.len();
    bytes[n - 2..].copy_from_slice(&((4 + data.len()) as u16).to_be_bytes());
    bytes.extend(8u16.to_be_bytes());
    bytes.extend((data.len() as u16).to_be_bytes());
    bytes.extend(data);
    bytes
}

/// Queries with a client subnet (a sticky service's key).
fn ecs_queries() -> Vec<Vec<u8>> {
    vec![
        ecs_query(RecordType::A, &[0, 1, 24, 0, 203, 0, 113]),
        ecs_query(
            RecordType::AAAA,
            &[0, 2, 56, 0, 0x20, 1, 0xd, 0xb8, 0, 1, 0x42],
        ),
        ecs_query(RecordType::A, &[0, 1, 0, 0]),
    ]
}

fn answers_allocate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut queries = encode(&QUERIES);
    queries.extend(ecs_queries());
    let plan = |signed| {
        Plan::build(
            &zones(dir.path(), signed),
            &ConfigOnly,
            &Stats::default(),
            1,
        )
    };
    answers_of_plan_allocate_nothing(plan(false), &queries);
    cookies_allocate_nothing(plan(false));
    // Signed: the same queries (DO=0) and DO=1 ones.
    queries.extend(encode(&SIGNED_QUERIES));
    answers_of_plan_allocate_nothing(plan(true), &queries);
}

fn answers_of_plan_allocate_nothing(plan: Plan, queries: &[Vec<u8>]) {
    let plan = ArcSwap::from_pointee(plan);
    let mut out = [0u8; MAX_UDP_PAYLOAD as usize];
    // Warm up once: thread-locals (the RNG, arc-swap's debt list) are set
    // up on first use in a thread, not per query.
    for (i, q) in queries.iter().enumerate() {
        assert!(
            matches!(respond(&plan.load(), q, &mut out), Action::Send(_)),
            "query {i} not answered by the fast path"
        );
    }
    let rrl = rrl(100);
    let counters = Counters::default();
    let client: IpAddr = "192.0.2.1".parse().unwrap();
    let region = Region::new(GLOBAL);
    let mut answered = 0;
    for r in 0..ROUNDS {
        // Sticky picks keyed on many resolver networks.
        let src = IpAddr::from([10, (r >> 8) as u8, r as u8, 1]);
        for q in queries {
            if let Action::Send(n) = respond_from(&plan.load(), q, Some(src), &mut out) {
                answered += n.min(1);
                counters.limit(&rrl, client, &mut out, n, now_secs());
            }
        }
    }
    let change = region.change();
    let allocations = change.allocations + change.reallocations;
    assert_eq!(answered, ROUNDS * queries.len());
    assert_eq!(
        allocations,
        0,
        "{allocations} allocations over {} queries",
        ROUNDS * queries.len()
    );
}

/// Cookie queries from one client: a client cookie alone (a new server
/// cookie is made) and a valid server cookie (checked, echoed, exempt).
fn cookies_allocate_nothing(plan: Plan) {
    let plan = ArcSwap::from_pointee(plan);
    let mut out = [0u8; MAX_UDP_PAYLOAD as usize];
    let src: IpAddr = "192.0.2.9".parse().unwrap();
    let client_only = cookie_query(&[1, 2, 3, 4, 5, 6, 7, 8]);
    let (Action::Send(n), false) = respond_checked(&plan.load(), &client_only, Some(src), &mut out)
    else {
        panic!("a client cookie alone is answered on the fast path, not exempt");
    };
    let full = cookie_of(&out[..n]);
    assert_eq!(full.len(), 24);
    let valid = cookie_query(&full);
    let queries = [client_only, valid];
    let rrl = rrl(100);
    let counters = Counters::default();
    let region = Region::new(GLOBAL);
    let mut exempt = 0;
    for _ in 0..ROUNDS {
        for q in &queries {
            match respond_checked(&plan.load(), q, Some(src), &mut out) {
                (Action::Send(_), true) => exempt += 1,
                (Action::Send(n), false) => {
                    counters.limit(&rrl, src, &mut out, n, now_secs());
                }
                other => panic!("{other:?}"),
            }
        }
    }
    let change = region.change();
    assert_eq!(exempt, ROUNDS, "every valid server cookie is exempt");
    // Beyond 100 a second, the answers to a client cookie alone are
    // slipped, keeping their OPT record and its COOKIE option.
    assert!(
        counters
            .rrl_slipped
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "slips were measured too"
    );
    assert_eq!(
        change.allocations + change.reallocations,
        0,
        "allocations over {} cookie queries",
        2 * ROUNDS
    );
}

fn a_running_udp_worker_allocates_nothing() {
    use std::sync::Arc;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let plan = Arc::new(ArcSwap::from_pointee(Plan::build(
        &zones(dir.path(), false),
        &ConfigOnly,
        &Stats::default(),
        1,
    )));
    // A runtime for the TCP listener and the fallback, which no query
    // here needs.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let listener = dnsshift::dns::bind("127.0.0.1:0".parse().unwrap(), 1, 1 << 20).unwrap();
    let addr = listener.udp[0].local_addr().unwrap();
    let counters = Arc::new(Counters::default());
    let fallback = dnsshift::dns::fallback::Fallback::new(
        Arc::new(dnsshift::dns::Handler::new(plan.clone())),
        Arc::new(rrl(1_000_000)),
        counters,
        rt.handle().clone(),
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let workers =
        dnsshift::dns::udp::spawn(listener.udp, plan, fallback, shutdown.clone()).unwrap();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.connect(addr).unwrap();
    let mut m = Message::new(9, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii("www.shift.example.com.").unwrap(),
        RecordType::A,
    ));
    // A random name, a sticky one keyed on the client's address, and a
    // sticky one keyed on its client subnet.
    let mut sticky = Message::new(9, MessageType::Query, OpCode::Query);
    sticky.add_query(Query::query(
        Name::from_ascii("app.sticky.test.").unwrap(),
        RecordType::A,
    ));
    // A client cookie alone, and the server cookie it got sent back.
    let client_only = cookie_query(&[8, 7, 6, 5, 4, 3, 2, 1]);
    let mut buf = [0u8; 2048];
    client.send(&client_only).unwrap();
    let n = client.recv(&mut buf).unwrap();
    let valid = cookie_query(&cookie_of(&buf[..n]));
    let queries = [
        m.to_vec().unwrap(),
        sticky.to_vec().unwrap(),
        ecs_query(RecordType::A, &[0, 1, 24, 0, 203, 0, 113]),
        client_only,
        valid,
    ];
    let mut buf = [0u8; 2048];
    let mut i = 0;
    let mut exchange = || {
        let query = &queries[i % queries.len()];
        i += 1;
        client.send(query).unwrap();
        let n = client.recv(&mut buf).unwrap();
        assert!(n > 12 && buf[..2] == query[..2]);
        // Answered by the worker, not the fallback: AA and an answer.
        assert!(buf[2] & 0x04 != 0 && buf[7] > 0, "{:?}", &buf[..n]);
    };
    for _ in 0..100 {
        exchange();
    }
    let region = Region::new(GLOBAL);
    for _ in 0..ROUNDS {
        exchange();
    }
    let change = region.change();
    shutdown.cancel();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(
        change.allocations + change.reallocations,
        0,
        "allocations over {ROUNDS} exchanges"
    );
}
