//! etcd faults and command coordination (issue 16): a frozen etcd member
//! cannot freeze a host, hosts follow within a second after an outage,
//! `status` and `/metrics` say when etcd is gone, every command waits for
//! the other hosts and answers its epoch, and commands on different
//! services do not conflict. Two real dnsshift hosts on 127.0.0.2 and
//! 127.0.0.3 and a real three-member etcd, as in tests/cluster.rs; members
//! are frozen with SIGSTOP (alive to TCP, answering nothing).
//!
//! The times measured are printed (`cargo test --test cluster_faults --
//! --nocapture` shows them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::etcd::EtcdCluster;
use common::{ServiceBuilder, field, is_msg, metric, poll, zone_of};

const ORIGIN: &str = "shift.test.";
const WWW: &str = "www.shift.test.";
const OLD: [&str; 2] = ["127.0.8.1", "127.0.8.2"];
const NEW: [&str; 2] = ["127.0.8.3", "127.0.8.4"];
/// How soon every host must follow a change while one etcd member is frozen.
const FOLLOW_WITH_A_FROZEN_MEMBER: Duration = Duration::from_secs(2);
/// Bound on a host noticing that etcd is gone (a check waits 500 ms of
/// silence, then tries every member for the 1 s test timeout).
const NOTICE_OUTAGE: Duration = Duration::from_secs(20);
/// The log line of a watch leaving a silent member.
const SWITCHED: &str = "the etcd watch stopped delivering; moving to another member";
/// The log line of a watch re-opened on another member (`to`).
const MOVED: &str = "the etcd watch moved to another member";

/// `www` and `api`, both with the classic three phases and no health checks.
fn zones() -> String {
    zone_of([
        ServiceBuilder::unchecked("www", &OLD, &NEW).ttl("5s"),
        ServiceBuilder::unchecked("api", &["127.0.9.1"], &["127.0.9.3"]).ttl("5s"),
    ])
}

fn two_hosts(etcd: &EtcdCluster) -> (Host, Host) {
    let z = zones();
    let zones = [("shift.test.toml", z.as_str())];
    (
        Host::start(etcd, "ns1", "127.0.0.2", ORIGIN, &zones),
        Host::start(etcd, "ns2", "127.0.0.3", ORIGIN, &zones),
    )
}

fn only(pool: [&'static str; 2]) -> impl Fn(&[String]) -> bool {
    move |a: &[String]| !a.is_empty() && a.iter().all(|x| pool.contains(&x.as_str()))
}

/// Lines of `host`'s log from `from` on that are `msg`.
fn logged(host: &Host, from: usize, msg: &str) -> usize {
    host.server().log.lines()[from..]
        .iter()
        .filter(|l| is_msg(l, msg))
        .count()
}

/// The etcd member `host` watches, as its log tells: the first endpoint
/// (where every host starts), or where its watch last moved to.
fn watched(host: &Host, endpoints: &[String]) -> String {
    host.server()
        .log
        .lines()
        .iter()
        .rfind(|l| is_msg(l, MOVED))
        .and_then(|l| field(l, "to"))
        .unwrap_or_else(|| endpoints[0].clone())
}

/// Runs `args` on `on` and returns (the run, when each host first answered
/// `pool` for www), waiting at most `timeout` for each.
fn change_and_watch(
    on: &Host,
    hosts: [&Host; 2],
    args: &[&str],
    pool: [&'static str; 2],
    timeout: Duration,
) -> (Run, [Option<Instant>; 2]) {
    std::thread::scope(|s| {
        let cmd = s.spawn(|| on.run(args));
        let seen = hosts.map(|h| await_answers(h, WWW, timeout, only(pool)));
        (cmd.join().unwrap(), seen)
    })
}

/// Round `n` of a test that moves www back and forth from separate-domain:
/// the command, the pool answered after it and the phase.
fn flip(n: usize) -> ([&'static str; 4], [&'static str; 2], &'static str) {
    if n.is_multiple_of(2) {
        (["advance", "www", "--to", "cutover"], NEW, "cutover")
    } else {
        let phase = "separate-domain";
        (["rollback", "www", "--to", phase], OLD, phase)
    }
}

#[test]
fn a_frozen_etcd_member_cannot_freeze_a_host() {
    let mut etcd = EtcdCluster::start(3);
    let (a, b) = two_hosts(&etcd);
    await_agreement(&[&a, &b], "www", "separate-domain", "start");
    for member in 0..3 {
        let (args, pool, phase) = flip(member);
        let logs = [a.server().log.len(), b.server().log.len()];
        let endpoints = etcd.endpoints();
        let frozen = endpoints[member].clone();
        let on_frozen = [&a, &b].map(|h| watched(h, &endpoints) == frozen);
        if member == 0 {
            assert_eq!(
                on_frozen,
                [true, true],
                "every host starts on the first member"
            );
        }
        etcd.stop(member);
        let stopped = Instant::now();
        let (run, seen) = change_and_watch(&a, [&a, &b], &args, pool, Duration::from_secs(15));
        assert_eq!(
            run.code,
            Some(0),
            "member m{member} frozen: {args:?} on ns1: {run}"
        );
        let [Some(a_seen), Some(b_seen)] = seen else {
            panic!("member m{member} frozen: a host never answered {phase}: seen {seen:?}, {run}")
        };
        let (first, last) = (a_seen.min(b_seen), a_seen.max(b_seen));
        eprintln!(
            "m{member} frozen: ns1 answered {phase} {:?} after the stop, ns2 {:?}; lag between hosts {:?}; command took {:?}",
            a_seen - stopped,
            b_seen - stopped,
            last - first,
            run.took
        );
        assert!(
            last - first <= FOLLOW_WITH_A_FROZEN_MEMBER,
            "m{member} frozen: the second host followed {:?} after the first (at most {FOLLOW_WITH_A_FROZEN_MEMBER:?})",
            last - first
        );
        await_agreement(&[&a, &b], "www", phase, &format!("m{member} frozen"));
        // A host that watched the frozen member says it moved off it.
        for ((h, from), on) in [(&a, logs[0]), (&b, logs[1])].into_iter().zip(on_frozen) {
            if on {
                h.server().log.wait_for(from, Duration::from_secs(10), |l| {
                    is_msg(l, SWITCHED) && field(l, "endpoint").as_deref() == Some(frozen.as_str())
                });
            }
        }
        etcd.resume(member);
        etcd.wait_healthy(&[member]);
    }
}

#[test]
fn hosts_follow_within_a_second_after_a_full_etcd_outage() {
    const ROUNDS: usize = 3;
    let mut etcd = EtcdCluster::start(3);
    let (a, b) = two_hosts(&etcd);
    await_agreement(&[&a, &b], "www", "separate-domain", "start");
    for round in 0..ROUNDS {
        let (args, pool, phase) = flip(round);
        for i in 0..3 {
            etcd.kill(i);
        }
        // Long enough for reconnect back-off to grow: both hosts say etcd
        // is gone, and a while passes.
        for h in [&a, &b] {
            poll(NOTICE_OUTAGE, Duration::from_millis(100), || {
                (h.status()["etcd"]["reachable"] == false).then_some(())
            })
            .unwrap_or_else(|| panic!("{}: status never said etcd is unreachable", h.node));
        }
        // Deliberately idle, not waiting for anything: a reconnect
        // back-off that grows (it used to reach 2 s) would show now.
        std::thread::sleep(Duration::from_secs(3));
        etcd.restart_all();
        let healthy = Instant::now();
        let (run, seen) = change_and_watch(&b, [&b, &a], &args, pool, AGREE_TIMEOUT);
        assert_eq!(
            run.code,
            Some(0),
            "round {round}: {args:?} on ns2 as soon as etcd is healthy: {run}"
        );
        let [Some(b_seen), Some(a_seen)] = seen else {
            panic!("round {round}: a host never answered {phase}: {seen:?}, {run}")
        };
        let lag = a_seen.saturating_duration_since(b_seen);
        eprintln!(
            "round {round}: etcd healthy, ns2 answered {phase} {:?} later, ns1 {:?} after ns2",
            b_seen - healthy,
            lag
        );
        assert!(
            lag <= APPLY_WITHIN,
            "round {round}: ns1 followed {lag:?} after ns2 once etcd was back (at most {APPLY_WITHIN:?})"
        );
        await_agreement(&[&a, &b], "www", phase, &format!("round {round}"));
    }
}

#[test]
fn status_and_metrics_say_when_etcd_is_unreachable() {
    let mut etcd = EtcdCluster::start(3);
    let (a, b) = two_hosts(&etcd);
    await_agreement(&[&a, &b], "www", "separate-domain", "start");
    let control = a.server().control.unwrap();
    assert_eq!(metric(control, "dnsshift_etcd_reachable"), Some(1));
    // ns1 must have read ns2's report before etcd goes: the watch delivers
    // it a moment after both hosts are up.
    let st = a.await_live("ns2");
    assert_eq!(st["etcd"]["reachable"], true, "{st}");
    assert!(st["etcd"].get("unreachable_since_ms").is_none(), "{st}");

    let before = now_ms();
    for i in 0..3 {
        etcd.stop(i);
    }
    let st = poll(NOTICE_OUTAGE, Duration::from_millis(100), || {
        let st = a.status();
        (st["etcd"]["reachable"] == false).then_some(st)
    })
    .unwrap_or_else(|| {
        panic!(
            "ns1's status never said etcd is unreachable: {}",
            a.status()
        )
    });
    let since = st["etcd"]["unreachable_since_ms"].as_u64().unwrap();
    assert!(since >= before && since <= now_ms(), "since {since}: {st}");
    let error = st["etcd"]["error"].as_str().unwrap();
    assert!(error.contains("etcd"), "{st}");
    let ns2 = host_entry(&st, "ns2").unwrap();
    assert_eq!(ns2["live_known"], false, "ns2's liveness is unknown: {st}");
    assert_eq!(host_entry(&st, "ns1").unwrap()["live_known"], true, "{st}");
    assert_eq!(metric(control, "dnsshift_etcd_reachable"), Some(0));

    let text = a.ok(&["status"]);
    for want in [
        "ETCD UNREACHABLE since",
        "liveness is unknown",
        "commands will fail",
    ] {
        assert!(text.contains(want), "status must say {want:?}:\n{text}");
    }
    let ns2_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("ns2 "))
        .unwrap_or_else(|| panic!("no ns2 line:\n{text}"));
    assert!(ns2_line.contains("unknown"), "{ns2_line}");
    let run = a.run(&["advance", "www", "--reason", "etcd frozen"]);
    assert_eq!(run.code, Some(1), "commands fail: {run}");

    for i in 0..3 {
        etcd.resume(i);
    }
    poll(NOTICE_OUTAGE, Duration::from_millis(100), || {
        let st = a.status();
        (st["etcd"]["reachable"] == true
            && host_entry(&st, "ns2").is_some_and(|h| h["live_known"] == true && h["live"] == true))
        .then_some(())
    })
    .unwrap_or_else(|| panic!("ns1 never saw etcd again: {}", a.status()));
    assert_eq!(metric(control, "dnsshift_etcd_reachable"), Some(1));
    assert!(!a.ok(&["status"]).contains("UNREACHABLE"));
}

#[test]
fn every_command_waits_for_the_other_hosts_and_answers_its_epoch() {
    let etcd = EtcdCluster::start(3);
    let (a, b) = two_hosts(&etcd);
    await_agreement(&[&a, &b], "www", "separate-domain", "start");
    // A host waits only for the hosts whose reports it has read.
    a.await_live("ns2");
    let json = |args: &[&str]| -> serde_json::Value {
        let out = a.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} --json: {e}: {out}"))
    };
    let commands: [&[&str]; 5] = [
        &["endpoint", "disable", "www", OLD[0], "--json"],
        &["endpoint", "enable", "www", OLD[0], "--json"],
        &["decommission", "www", "new", "--force", "--json"],
        &["recommission", "www", "new", "--json"],
        &["advance", "www", "--json"],
    ];
    let mut last = 0;
    for args in commands {
        let r = json(args);
        let epoch = r["epoch"]
            .as_u64()
            .unwrap_or_else(|| panic!("{args:?}: no epoch in {r}"));
        assert!(epoch > last, "{args:?}: epoch {epoch} after {last}");
        assert!(
            !r["warnings"].to_string().contains("older state"),
            "{args:?}: {r}"
        );
        last = epoch;
        // Returned only once the other host serves it.
        assert_eq!(
            b.marker().unwrap().epoch,
            epoch,
            "{args:?} returned before ns2 applied it"
        );
    }
    // Human output says the epoch too; a change that changes nothing has none.
    let out = a.ok(&["endpoint", "disable", "www", OLD[0]]);
    let epoch = a.marker().unwrap().epoch;
    assert!(
        out.trim_end().ends_with(&format!(", epoch {epoch}")),
        "{out}"
    );
    assert_eq!(b.marker().unwrap().epoch, epoch);
    let again = json(&["endpoint", "disable", "www", OLD[0], "--json"]);
    assert!(again.get("epoch").is_none(), "nothing changed: {again}");
    let dry = json(&["advance", "www", "--dry-run", "--json"]);
    assert!(
        dry.get("epoch").is_none(),
        "a dry run creates no epoch: {dry}"
    );
}

#[test]
fn commands_on_different_services_do_not_conflict() {
    // Two commands started at once on two hosts read the same epoch: the
    // second commit is refused by etcd and, as another service changed,
    // decided again. Rounds repeat, at least MIN_ROUNDS, until one has
    // gone that way (a busy machine may serialise the first few), at most
    // MAX_ROUNDS.
    const MIN_ROUNDS: usize = 6;
    const MAX_ROUNDS: usize = 40;
    let etcd = EtcdCluster::start(3);
    let (a, b) = two_hosts(&etcd);
    await_agreement(&[&a, &b], "api", "separate-domain", "start");
    let logs = [a.server().log.len(), b.server().log.len()];
    const RETRY: &str = "another service changed meanwhile; deciding again on the current state";
    let retried = || logged(&a, logs[0], RETRY) + logged(&b, logs[1], RETRY);
    let mut rounds = 0;
    while rounds < MIN_ROUNDS || (retried() == 0 && rounds < MAX_ROUNDS) {
        let round = rounds;
        rounds += 1;
        let www = if round.is_multiple_of(2) {
            "disable"
        } else {
            "enable"
        };
        let api = if round.is_multiple_of(2) {
            "advance"
        } else {
            "rollback"
        };
        let reason = format!("round {round}");
        let gate = Barrier::new(2);
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| {
                gate.wait();
                a.run(&["endpoint", www, "www", OLD[0], "--reason", &reason])
            });
            let tb = s.spawn(|| {
                gate.wait();
                b.run(&[api, "api", "--reason", &reason])
            });
            (ta.join().unwrap(), tb.join().unwrap())
        });
        assert_eq!(
            ra.code,
            Some(0),
            "round {round}: endpoint {www} www on ns1: {ra}"
        );
        assert_eq!(rb.code, Some(0), "round {round}: {api} api on ns2: {rb}");
        let phase = if round.is_multiple_of(2) {
            "round-robin"
        } else {
            "separate-domain"
        };
        await_agreement(&[&a, &b], "api", phase, &format!("round {round}"));
    }
    // Nothing lost: both services' histories have every round, on both hosts.
    for h in [&a, &b] {
        for service in ["www", "api"] {
            let reasons: Vec<String> = h
                .history(service)
                .iter()
                .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
                .collect();
            let want: Vec<String> = (0..rounds).map(|r| format!("round {r}")).collect();
            assert_eq!(reasons, want, "{}: history of {service}", h.node);
        }
    }
    assert!(
        retried() > 0,
        "in {rounds} rounds the simultaneous commands never met a changed state: the test could not exercise the retry"
    );
}
