//! Automatic progression on two hosts sharing etcd (issue 17): one host
//! evaluates (elected on an etcd lease); killed with -9 mid-step, the
//! other continues from the saved counts and history holds each
//! transition exactly once; stopped with SIGSTOP past its lease and then
//! continued, it commits nothing. Real etcd, Prometheus, unbound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auto_kit;
mod common;
mod rehearsal_kit;

use std::time::{Duration, Instant};

use auto_kit::*;
use common::cluster::{Host, now_ms};
use common::etcd::EtcdCluster;
use common::poll;
use common::prom::{Clients, Hooks, LoadBalancers, Prometheus};
use rehearsal_kit::{NAME, ORIGIN, start_unbound};
use serde_json::Value;

/// The election lease's TTL and round (src/state/elect.rs).
const ELECTION_TTL: Duration = Duration::from_secs(3);
const ROUND: Duration = Duration::from_millis(500);

fn service(h: &Host) -> Value {
    let v: Value = serde_json::from_str(&h.ok(&["status", "www", "--json"])).unwrap();
    v["services"][0].clone()
}

fn await_on(h: &Host, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    poll(limit, Duration::from_millis(100), || {
        let s = service(h);
        pred(&s).then_some(s)
    })
    .unwrap_or_else(|| panic!("{}: {what} not within {limit:?}: {}", h.node, service(h)))
}

/// Both hosts, with traffic: (hosts, and what must outlive the test).
struct Two {
    hosts: Vec<Host>,
    _parts: (
        EtcdCluster,
        LoadBalancers,
        Prometheus,
        Hooks,
        Vec<rehearsal_kit::Unbound>,
        Vec<Clients>,
    ),
}

fn start() -> Two {
    let etcd = EtcdCluster::start(1);
    let lbs = LoadBalancers::start(&[("old", &[OLD_IP]), ("new", &[NEW_IP])]);
    let prometheus = Prometheus::start(&lbs.scrape_targets());
    let hooks = Hooks::start();
    let z = zone(&prometheus.url(), &hooks.url());
    let hosts = vec![
        Host::start(&etcd, "ns1", "127.0.0.2", ORIGIN, &[("shift.toml", &z)]),
        Host::start(&etcd, "ns2", "127.0.0.3", ORIGIN, &[("shift.toml", &z)]),
    ];
    let dns: Vec<_> = hosts.iter().map(|h| h.server().dns).collect();
    let resolvers: Vec<_> = (0..RESOLVERS)
        .map(|i| start_unbound(&format!("127.0.11.{}", i + 1), &dns))
        .collect();
    let clients = resolvers
        .iter()
        .map(|r| Clients::start(r.addr, NAME, lbs.port(), 2, RATE, RUN_LIMIT))
        .collect();
    Two {
        hosts,
        _parts: (etcd, lbs, prometheus, hooks, resolvers, clients),
    }
}

/// The index of the host that evaluates, once both agree on it.
fn evaluator(two: &Two) -> usize {
    poll(Duration::from_secs(15), Duration::from_millis(100), || {
        let e: Vec<Value> = two
            .hosts
            .iter()
            .map(|h| service(h)["auto"]["evaluator"].clone())
            .collect();
        (e[0] == e[1])
            .then(|| e[0].as_str().map(str::to_string))
            .flatten()
    })
    .and_then(|node| two.hosts.iter().position(|h| h.node == node))
    .expect("no agreed evaluator")
}

/// Waits until `h`, the evaluator, is mid-step: in canary with a pass
/// counted, not yet advanced.
fn await_mid_step(h: &Host) {
    await_on(h, "a pass in canary", RUN_LIMIT, |s| {
        s["phase"] == "canary" && s["auto"]["passes"].as_u64() >= Some(1)
    });
}

/// Waits until `h` says it evaluates.
fn await_takeover(h: &Host) {
    await_on(h, "taking over", Duration::from_secs(20), |s| {
        s["auto"]["evaluator"] == h.node.as_str()
    });
}

/// Every transition once, in order, whoever committed it.
fn assert_once_each(history: &[Value]) {
    let steps: Vec<(String, String)> = transitions(history)
        .into_iter()
        .map(|(_, f, t, _)| (f, t))
        .collect();
    let want = [("old", "canary"), ("canary", "half"), ("half", "cutover")];
    assert_eq!(
        steps,
        want.map(|(a, b)| (a.to_string(), b.to_string())),
        "{history:?}"
    );
}

#[test]
fn kill_9_of_the_evaluator_mid_step_the_other_continues_without_skip_or_repeat() {
    let mut two = start();
    two.hosts[0].ok(&["auto", "start", "www"]);
    let e = evaluator(&two);
    let other = 1 - e;
    await_mid_step(&two.hosts[e]);
    two.hosts[e].kill9();
    let killed = Instant::now();
    await_takeover(&two.hosts[other]);
    let took = killed.elapsed();
    // Lease TTL + one election round + one interval, plus a status poll.
    let bound = ELECTION_TTL + ROUND + INTERVAL + Duration::from_secs(1);
    assert!(took <= bound, "took over after {took:?} (bound {bound:?})");
    let s = await_on(&two.hosts[other], "done", RUN_LIMIT, |s| {
        s["auto"]["state"] == "done"
    });
    assert_eq!(s["phase"], "cutover");
    assert_once_each(&two.hosts[other].history("www"));
    println!("took over {took:?} after kill -9");
}

#[test]
fn sigstop_past_the_lease_then_sigcont_commits_nothing() {
    let two = start();
    two.hosts[0].ok(&["auto", "start", "www"]);
    let e = evaluator(&two);
    let other = 1 - e;
    await_mid_step(&two.hosts[e]);
    let stopped_at = now_ms() / 1000;
    two.hosts[e].server().signal("STOP");
    await_takeover(&two.hosts[other]);
    // Past the lease, and with the other host moving on meanwhile.
    await_on(&two.hosts[other], "half", RUN_LIMIT, |s| {
        s["phase"] == "half"
    });
    two.hosts[e].server().signal("CONT");
    let s = await_on(&two.hosts[other], "done", RUN_LIMIT, |s| {
        s["auto"]["state"] == "done"
    });
    assert_eq!(s["phase"], "cutover");
    let h = two.hosts[other].history("www");
    assert_once_each(&h);
    let stopped_node = two.hosts[e].node.as_str();
    let late: Vec<&Value> = h
        .iter()
        .filter(|ev| ev["at"].as_u64() >= Some(stopped_at) && ev["node"] == stopped_node)
        .collect();
    assert!(
        late.is_empty(),
        "the stopped host committed after SIGSTOP: {late:?}"
    );
    // It is back and agrees.
    let back = await_on(&two.hosts[e], "caught up", Duration::from_secs(15), |s| {
        s["phase"] == "cutover"
    });
    assert_eq!(back["auto"]["state"], "done");
}
