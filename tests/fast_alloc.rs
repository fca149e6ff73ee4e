//! Zero heap allocations per query on the fast path: a counting global
//! allocator around thousands of calls to the fast-path answer function,
//! over a mix of weighted, static, negative, refused and EDNS queries,
//! each then passed through response rate limiting as the workers do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::net::IpAddr;
use std::path::Path;

use arc_swap::ArcSwap;
use dnsshift::answer::{ConfigOnly, Plan, Stats};
use dnsshift::dns::MAX_UDP_PAYLOAD;
use dnsshift::fast::rrl::{Rrl, Settings, now_secs};
use dnsshift::fast::{Action, Counters, respond};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

/// Counts every allocation of this test binary.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Queries per kind in the measured loop.
const ROUNDS: usize = 2000;

#[test]
fn the_fast_path_allocates_nothing_per_query() {
    let zone = dnsshift::zone::load_file(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/zones/shift.example.com.toml"
    )))
    .unwrap();
    let plan = ArcSwap::from_pointee(Plan::build(&[zone], &ConfigOnly, &Stats::default(), 1));
    let queries: Vec<Vec<u8>> = [
        ("www.shift.example.com.", RecordType::A, false),
        ("WWW.shift.example.com.", RecordType::AAAA, true),
        ("www-next.shift.example.com.", RecordType::A, true),
        ("api.shift.example.com.", RecordType::A, false),
        ("shift.example.com.", RecordType::MX, true),
        ("shift.example.com.", RecordType::NS, false),
        ("docs.shift.example.com.", RecordType::A, false),
        ("nope.shift.example.com.", RecordType::A, true),
        ("www.shift.example.com.", RecordType::TXT, false),
        ("example.org.", RecordType::A, false),
    ]
    .iter()
    .map(|(name, t, edns)| {
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), *t));
        if *edns {
            m.set_edns(Edns::new());
        }
        m.to_vec().unwrap()
    })
    .collect();
    let mut out = [0u8; MAX_UDP_PAYLOAD as usize];
    // Warm up once: thread-locals (the RNG, arc-swap's debt list) are set
    // up on first use in a thread, not per query.
    for q in &queries {
        assert!(matches!(
            respond(&plan.load(), q, &mut out),
            Action::Send(_)
        ));
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
        for q in &queries {
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
