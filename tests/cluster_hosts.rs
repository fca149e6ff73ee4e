//! Hosts as the cluster sees them (issue 11): `advance` waits for every live
//! host and names the ones lagging behind; a host that stops is shown gone
//! in `status`. Two real dnsshift hosts on 127.0.0.2 and 127.0.0.3 and a
//! real three-member etcd, as in tests/cluster.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::cluster::*;
use common::etcd::EtcdCluster;
use common::{ServiceBuilder, poll, zone_of};

const ORIGIN: &str = "shift.test.";

/// `www` with the given phases (name, old weight, new weight).
fn zone(phases: &[(&str, u32, u32)]) -> String {
    let www = phases.iter().fold(
        ServiceBuilder::unchecked("www", &["127.0.8.1"], &["127.0.8.3"]).ttl("5s"),
        |s, (name, old, new)| s.phase(name, &[("old", *old), ("new", *new)]),
    );
    zone_of([www])
}

fn host(etcd: &EtcdCluster, node: &str, ip: &str, zone: &str) -> Host {
    Host::start(etcd, node, ip, ORIGIN, &[("shift.test.toml", zone)])
}

#[test]
fn advance_waits_for_every_live_host_and_names_the_one_lagging_behind() {
    let etcd = EtcdCluster::start(3);
    let three = zone(&[("old", 100, 0), ("mix", 50, 50), ("new", 0, 100)]);
    // ns2's zones lack "new": it cannot apply a state in that phase and
    // keeps serving the previous one, live but behind.
    let two = zone(&[("old", 100, 0), ("mix", 50, 50)]);
    let a = host(&etcd, "ns1", "127.0.0.2", &three);
    let b = host(&etcd, "ns2", "127.0.0.3", &two);
    a.ok(&["advance", "www", "--reason", "both can"]);
    let before = await_agreement(&[&a, &b], "www", "mix", "advance to mix");
    // Both hosts are live in ns1's view before the change that ns2 cannot follow.
    poll(AGREE_TIMEOUT, Duration::from_millis(20), || {
        let st = a.status();
        ["ns1", "ns2"]
            .iter()
            .all(|n| host_entry(&st, n).is_some_and(|h| h["live"] == true && h["epoch"] == before))
            .then_some(())
    })
    .expect("ns1 sees both hosts live at the same epoch");

    let run = a.run(&["advance", "www", "--reason", "ns2 cannot"]);
    assert_eq!(run.code, Some(0), "the change is made either way: {run}");
    assert!(
        run.took >= Duration::from_secs(4),
        "advance returned before the 5 s wait for ns2: {run}"
    );
    assert!(
        run.stderr.contains("ns2") && !run.stderr.contains("ns1 ("),
        "the warning names ns2, the host lagging behind, and only it: {run}"
    );
    let after = a.marker().unwrap().epoch;
    assert!(after > before);
    assert_eq!(
        b.marker().unwrap().epoch,
        before,
        "ns2 still serves the old state"
    );
    let st = a.status();
    assert_eq!(host_entry(&st, "ns2").unwrap()["epoch"], before, "{st}");
    assert_eq!(host_entry(&st, "ns1").unwrap()["epoch"], after, "{st}");
}

#[test]
fn a_stopped_host_is_shown_gone_in_status_and_its_drain_still_counts() {
    let etcd = EtcdCluster::start(3);
    let z = zone(&[("old", 100, 0), ("new", 0, 100)]);
    let a = host(&etcd, "ns1", "127.0.0.2", &z);
    let mut b = host(&etcd, "ns2", "127.0.0.3", &z);
    await_agreement(&[&a, &b], "www", "old", "start");
    poll(AGREE_TIMEOUT, Duration::from_millis(20), || {
        host_entry(&a.status(), "ns2").filter(|h| h["live"] == true)
    })
    .expect("ns1 sees ns2 live once it published");
    b.a("www.shift.test.");
    let answered = now_ms();
    b.kill9();
    // The lease (5 s) lapses: ns2 is no longer live, but still listed.
    let mut last = serde_json::Value::Null;
    let gone = poll(Duration::from_secs(15), Duration::from_millis(100), || {
        last = a.status();
        host_entry(&last, "ns2").filter(|h| h["live"] == false)
    });
    let gone = gone.unwrap_or_else(|| panic!("ns2 never shown gone: {last}"));
    assert!(
        gone["last_seen_ms"].as_u64().unwrap() >= answered - 2000,
        "{gone}"
    );
    // Its answers of old still count for the drain on ns1: at least its
    // last report + lease TTL + TTL after the advance.
    a.ok(&["advance", "www", "--reason", "ns2 is gone"]);
    let st = a.status();
    let drained = pool(&st, "www", "old")["drained_at_ms"].as_u64().unwrap();
    let seen = gone["last_seen_ms"].as_u64().unwrap();
    assert!(
        drained >= seen + 5000 + 5000,
        "drained_at_ms {drained} must count ns2 until its last report {seen} + lease 5 s + TTL 5 s: {st}"
    );
}
