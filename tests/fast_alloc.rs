//! Zero heap allocations per query on the fast path: a counting global
//! allocator around thousands of calls to the fast-path answer function,
//! over a mix of weighted, static, negative, refused and EDNS queries,
//! each then passed through response rate limiting as the workers do; and
//! the same around whole exchanges with a running UDP worker (recvmmsg,
//! answer, sendmmsg) on a loopback socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::net::IpAddr;
use std::path::Path;

use arc_swap::ArcSwap;
use dnsshift::answer::{ConfigOnly, Plan};
use dnsshift::dns::MAX_UDP_PAYLOAD;
use dnsshift::dns::fast::{Action, Counters, respond};
use dnsshift::dns::rrl::{Rrl, Settings, now_secs};
use dnsshift::stats::Stats;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
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

/// The example zone, signed with a new key in `dir` when `signed`.
fn example_plan(dir: &Path, signed: bool) -> Plan {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/zones/shift.example.com.toml"
    ));
    let zone = if signed {
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
    Plan::build(&[zone], &ConfigOnly, &Stats::default(), 1)
}

/// (name, type, EDNS, DO)
const QUERIES: [(&str, RecordType, bool, bool); 10] = [
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

fn answers_allocate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    answers_of_plan_allocate_nothing(example_plan(dir.path(), false), &encode(&QUERIES));
    // Signed: the same queries (DO=0) and DO=1 ones.
    let mut queries = encode(&QUERIES);
    queries.extend(encode(&SIGNED_QUERIES));
    answers_of_plan_allocate_nothing(example_plan(dir.path(), true), &queries);
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
    let rrl = Rrl::new(Settings {
        enabled: true,
        responses_per_second: 100,
        slip: 2,
        ipv4_prefix: 24,
        ipv6_prefix: 56,
        table_size: 1024,
        exempt: Vec::new(),
    });
    let counters = Counters::default();
    let client: IpAddr = "192.0.2.1".parse().unwrap();
    let region = Region::new(GLOBAL);
    let mut answered = 0;
    for _ in 0..ROUNDS {
        for q in queries {
            if let Action::Send(n) = respond(&plan.load(), q, &mut out) {
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

fn a_running_udp_worker_allocates_nothing() {
    use std::sync::Arc;
    use std::time::Duration;

    let zone = dnsshift::zone::load_file(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/zones/shift.example.com.toml"
    )))
    .unwrap();
    let plan = Arc::new(ArcSwap::from_pointee(Plan::build(
        &[zone],
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
        Arc::new(Rrl::new(Settings {
            enabled: true,
            responses_per_second: 1_000_000,
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            table_size: 1024,
            exempt: Vec::new(),
        })),
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
    let query = m.to_vec().unwrap();
    let mut buf = [0u8; 2048];
    let mut exchange = || {
        client.send(&query).unwrap();
        let n = client.recv(&mut buf).unwrap();
        assert!(n > 12 && buf[..2] == query[..2]);
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
