//! Several nameservers, one migration (issue 11): two real dnsshift hosts on
//! distinct loopback addresses (127.0.0.2 and 127.0.0.3) share one state
//! through a real three-member etcd. Black box: everything is observed
//! through DNS (answers, `_dnsshift.<origin>` TXT, SOA), the CLI (exit code,
//! messages, `status --json`, `history --json`) and the log. The contract is
//! the "Several nameservers" section of the README.
//!
//! Hosts run with `[cluster] timeout = "1s"`, so a command against a dead
//! etcd fails within a few seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::sync::Barrier;
use std::time::Duration;

use common::cluster::*;
use common::etcd::EtcdCluster;
use common::{ServiceBuilder, bin, poll, zone_of};

const ORIGIN: &str = "shift.test.";
const NAME: &str = "www.shift.test.";
const OLD: [&str; 2] = ["127.0.8.1", "127.0.8.2"];
const NEW: [&str; 2] = ["127.0.8.3", "127.0.8.4"];
/// TTL of the service's answers, seconds.
const TTL_S: u64 = 5;
/// `drain_grace`, seconds.
const GRACE_S: u64 = 1;
const REFUSED: &str = "state changed meanwhile (epoch";

/// The phases are the classic three: separate-domain (old only),
/// round-robin, cutover (new only). No health checks: every endpoint counts
/// as healthy and nothing is probed.
fn zone() -> String {
    zone_of([ServiceBuilder::unchecked("www", &OLD, &NEW)
        .ttl(&format!("{TTL_S}s"))
        .drain_grace(&format!("{GRACE_S}s"))])
}

fn zones() -> Vec<(&'static str, String)> {
    vec![("shift.test.toml", zone())]
}

fn start_host(etcd: &EtcdCluster, node: &str, ip: &str) -> Host {
    let z = zones();
    let z: Vec<(&str, &str)> = z.iter().map(|(n, t)| (*n, t.as_str())).collect();
    Host::start(etcd, node, ip, ORIGIN, &z)
}

/// Hosts ns1 on 127.0.0.2 and ns2 on 127.0.0.3, both on `etcd`.
fn two_hosts(etcd: &EtcdCluster) -> (Host, Host) {
    (
        start_host(etcd, "ns1", "127.0.0.2"),
        start_host(etcd, "ns2", "127.0.0.3"),
    )
}

fn only(pool: [&'static str; 2]) -> impl Fn(&[String]) -> bool {
    move |a: &[String]| !a.is_empty() && a.iter().all(|x| pool.contains(&x.as_str()))
}

/// Checks that `host` answers only `pool` (one query: the phase has no mix).
fn assert_answers(host: &Host, pool: [&'static str; 2], what: &str) {
    let a = host.a(NAME);
    assert!(
        only(pool)(&a),
        "{}: {what}: answers {a:?}, expected only {pool:?}",
        host.node
    );
}

/// The message of a refused conflicting command names the epoch it lost to.
fn refused_epoch(run: &Run) -> u64 {
    let at = run.stderr.find(REFUSED).unwrap_or_else(|| {
        panic!("a conflict must be refused with \"{REFUSED} N), nothing done; check status and retry\": {run}")
    });
    assert!(
        run.stderr.contains("nothing done; check status and retry"),
        "{run}"
    );
    let rest = &run.stderr[at + REFUSED.len()..];
    rest.trim_start()
        .split(')')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("epoch in the refusal: {e}: {run}"))
}

/// Both hosts' `history www --json` are the same events; returns them.
fn shared_history(a: &Host, b: &Host) -> Vec<serde_json::Value> {
    let mut last = (Vec::new(), Vec::new());
    poll(AGREE_TIMEOUT, Duration::from_millis(50), || {
        last = (a.history("www"), b.history("www"));
        (last.0 == last.1).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "history differs between hosts:\n{}: {:#?}\n{}: {:#?}",
            a.node, last.0, b.node, last.1
        )
    });
    last.0
}

#[test]
fn advance_on_one_host_is_answered_by_the_other_within_a_second() {
    let etcd = EtcdCluster::start(3);
    let (a, b) = two_hosts(&etcd);
    let before = await_agreement(&[&a, &b], "www", "separate-domain", "start");
    assert_answers(&a, OLD, "before the advance");
    assert_answers(&b, OLD, "before the advance");

    let (run, a_seen, b_seen) = std::thread::scope(|s| {
        let cmd = s.spawn(|| a.run(&["advance", "www", "--to", "cutover", "--reason", "go"]));
        let a_seen = await_answers(&a, NAME, AGREE_TIMEOUT, only(NEW))
            .expect("ns1 never answered new after advance on ns1");
        let b_seen = await_answers(&b, NAME, AGREE_TIMEOUT, only(NEW));
        (cmd.join().unwrap(), a_seen, b_seen)
    });
    assert_eq!(run.code, Some(0), "advance on ns1: {run}");
    let b_seen = b_seen.unwrap_or_else(|| {
        panic!(
            "ns2 still answers old {AGREE_TIMEOUT:?} after ns1 answered new (advance on ns1: {run})"
        )
    });
    let lag = b_seen.saturating_duration_since(a_seen);
    assert!(
        lag <= APPLY_WITHIN,
        "ns2 answered new {lag:?} after ns1 did (at most {APPLY_WITHIN:?})"
    );
    // The command returns once every live host reports the new epoch.
    let (ma, mb) = (a.marker().unwrap(), b.marker().unwrap());
    assert_eq!(
        ma.epoch, mb.epoch,
        "advance returned before ns2 applied it: {ma:?} {mb:?}"
    );
    assert!(ma.epoch > before, "epoch {} not above {before}", ma.epoch);
    assert_eq!((ma.node.as_str(), mb.node.as_str()), ("ns1", "ns2"));
    for m in [&ma, &mb] {
        assert_eq!(
            m.phases.get("www").map(String::as_str),
            Some("cutover"),
            "{m:?}"
        );
        assert_eq!(
            m.phases.len(),
            1,
            "one string per service of the zone: {m:?}"
        );
    }
    // status on either host shows both hosts at that epoch.
    for h in [&a, &b] {
        let st = h.status();
        for node in ["ns1", "ns2"] {
            let e = host_entry(&st, node)
                .unwrap_or_else(|| panic!("{} status --json: no host {node}: {st}", h.node));
            assert_eq!(e["epoch"], ma.epoch, "{e}");
            assert_eq!(e["live"], true, "{e}");
        }
    }
}

#[test]
fn concurrent_advance_and_rollback_on_two_hosts_one_wins_the_other_is_refused() {
    // Two commands started at once read the same epoch unless one commits
    // before the other reads; then both rightly succeed in order. Rounds
    // repeat until a conflict happened; every round must keep state and
    // history whole.
    const ROUNDS: usize = 10;
    let etcd = EtcdCluster::start(3);
    let (a, b) = two_hosts(&etcd);
    a.ok(&["advance", "www", "--reason", "setup"]);
    let mut conflicts = 0;
    for round in 0..ROUNDS {
        let start = await_agreement(&[&a, &b], "www", "round-robin", "setup");
        let before = shared_history(&a, &b).len();
        let (adv, rb) = (
            format!("race {round} advance"),
            format!("race {round} rollback"),
        );
        let gate = Barrier::new(2);
        let (ra, rb_run) = std::thread::scope(|s| {
            let ta = s.spawn(|| {
                gate.wait();
                a.run(&["advance", "www", "--reason", &adv])
            });
            let tb = s.spawn(|| {
                gate.wait();
                b.run(&["rollback", "www", "--reason", &rb])
            });
            (ta.join().unwrap(), tb.join().unwrap())
        });
        let (phase, winners): (&str, Vec<&str>) = match (ra.code, rb_run.code) {
            (Some(0), Some(1)) => ("cutover", vec![adv.as_str()]),
            (Some(1), Some(0)) => ("separate-domain", vec![rb.as_str()]),
            // Serialised: advance then rollback or the reverse, round-robin
            // again either way.
            (Some(0), Some(0)) => ("round-robin", vec![]),
            _ => panic!(
                "round {round}: expected one success and one refusal (exit 1), or two successes\nadvance on ns1: {ra}\nrollback on ns2: {rb_run}"
            ),
        };
        let epoch = await_agreement(&[&a, &b], "www", phase, &format!("round {round}"));
        assert!(epoch > start, "round {round}: epoch did not move");
        let events = shared_history(&a, &b);
        let new: Vec<&str> = events[before..]
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or_default())
            .collect();
        if winners.is_empty() {
            // Both applied: both are in history, in some order.
            let mut sorted = new.clone();
            sorted.sort();
            let mut want = vec![adv.as_str(), rb.as_str()];
            want.sort();
            assert_eq!(sorted, want, "round {round}: history {events:#?}");
        } else {
            conflicts += 1;
            assert_eq!(new, winners, "round {round}: only the winner is in history");
            let loser = if ra.code == Some(1) { &ra } else { &rb_run };
            assert_eq!(
                refused_epoch(loser),
                epoch,
                "round {round}: the refusal names the winner's epoch"
            );
            break;
        }
        // Serialised: round-robin again, ready for the next round.
    }
    assert!(
        conflicts > 0,
        "in {ROUNDS} rounds the simultaneous commands never conflicted: the test could not exercise the compare-and-swap"
    );
}

#[test]
fn commands_work_with_one_etcd_member_killed() {
    let mut etcd = EtcdCluster::start(3);
    let (a, b) = two_hosts(&etcd);
    await_agreement(&[&a, &b], "www", "separate-domain", "start");
    // The first endpoint every host lists.
    etcd.kill(0);
    a.ok(&["advance", "www", "--reason", "one member down"]);
    await_agreement(&[&a, &b], "www", "round-robin", "advance on ns1");
    b.ok(&["rollback", "www", "--reason", "still down"]);
    await_agreement(&[&a, &b], "www", "separate-domain", "rollback on ns2");
    assert_eq!(shared_history(&a, &b).len(), 2);
}

#[test]
fn with_etcd_down_hosts_keep_answering_commands_fail_naming_etcd_and_hosts_catch_up() {
    let mut etcd = EtcdCluster::start(3);
    let (a, b) = two_hosts(&etcd);
    a.ok(&["advance", "www", "--to", "cutover", "--reason", "before"]);
    let epoch = await_agreement(&[&a, &b], "www", "cutover", "advance on ns1");
    for i in 0..3 {
        etcd.kill(i);
    }

    // DNS never waits on etcd: answers keep coming, promptly, for longer
    // than several etcd timeouts. A bounded observation window.
    let window = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..400 {
        if window.elapsed() > Duration::from_secs(4) {
            break;
        }
        for h in [&a, &b] {
            let t = std::time::Instant::now();
            assert_answers(h, NEW, &format!("query {i} with etcd down"));
            slowest = slowest.max(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a DNS answer took {slowest:?} with etcd down"
    );
    for h in [&a, &b] {
        let m = h.marker().unwrap();
        assert_eq!(m.epoch, epoch, "{}: {m:?}", h.node);
    }

    // Commands fail, exit 1, naming etcd and the members tried.
    for h in [&a, &b] {
        let run = h.run(&["rollback", "www", "--reason", "etcd is down"]);
        assert_eq!(run.code, Some(1), "{}: {run}", h.node);
        assert!(
            run.stderr.contains("etcd unreachable"),
            "{}: the error must name etcd: {run}",
            h.node
        );
        for e in etcd.endpoints() {
            assert!(
                run.stderr.contains(&e),
                "{}: the error must name {e}: {run}",
                h.node
            );
        }
    }
    for h in [&a, &b] {
        assert_answers(h, NEW, "after the failed commands");
    }

    // etcd returns: the hosts catch up and commands work again.
    etcd.restart_all();
    ok_once_etcd_is_back(&b, &["rollback", "www", "--reason", "etcd is back"]);
    let after = await_agreement(&[&a, &b], "www", "round-robin", "etcd returned");
    assert!(after > epoch);
    assert_eq!(
        shared_history(&a, &b).len(),
        2,
        "the refused commands left no trace"
    );
}

#[test]
fn host_killed_and_restarted_while_etcd_is_down_serves_its_local_copy() {
    let mut etcd = EtcdCluster::start(3);
    let (a, mut b) = two_hosts(&etcd);
    a.ok(&["advance", "www", "--to", "cutover", "--reason", "before"]);
    let epoch = await_agreement(&[&a, &b], "www", "cutover", "advance on ns1");
    for i in 0..3 {
        etcd.kill(i);
    }
    b.kill9();
    // Starts without etcd (Server::spawn waits for "ready") and serves the
    // last state it applied, not the zone's initial phase.
    b.restart();
    assert_answers(&b, NEW, "restarted while etcd is down");
    let m = b.marker().unwrap();
    assert_eq!((m.epoch, m.node.as_str()), (epoch, "ns2"), "{m:?}");
    assert_eq!(m.phases["www"], "cutover");
    const LOCAL_COPY: &str = "serving the local copy of the last applied state";
    let said = poll(Duration::from_secs(5), Duration::from_millis(20), || {
        b.server()
            .log
            .lines()
            .iter()
            .any(|l| l.contains(LOCAL_COPY))
            .then_some(())
    });
    assert!(
        said.is_some(),
        "ns2 restarted without etcd must log {LOCAL_COPY:?}; its log:\n{}",
        b.server().log.lines().join("\n")
    );
    let st = b.status();
    let me = host_entry(&st, "ns2").unwrap_or_else(|| panic!("status has no host ns2: {st}"));
    assert_eq!(me["from_local_copy"], true, "{me}");
    assert_eq!(me["epoch"], epoch, "{me}");

    // etcd returns: the restarted host follows changes again.
    etcd.restart_all();
    ok_once_etcd_is_back(&a, &["rollback", "www", "--reason", "etcd is back"]);
    await_agreement(&[&a, &b], "www", "round-robin", "etcd returned");
}

#[test]
fn drain_deadline_is_the_latest_answer_over_hosts() {
    let etcd = EtcdCluster::start(3);
    let (a, b) = two_hosts(&etcd);
    await_agreement(&[&a, &b], "www", "separate-domain", "start");
    let ttl_ms = TTL_S * 1000;
    let grace_ms = GRACE_S * 1000;

    // ns1 answers old, then ns2 answers old 3 s later.
    assert_answers(&a, OLD, "before");
    let a_answered = now_ms();
    poll(Duration::from_secs(5), Duration::from_millis(10), || {
        (now_ms() >= a_answered + 3000).then_some(())
    })
    .unwrap();
    let b_from = now_ms();
    assert_answers(&b, OLD, "before");
    let b_until = now_ms();

    a.ok(&["advance", "www", "--to", "cutover", "--reason", "drain"]);
    await_agreement(&[&a, &b], "www", "cutover", "advance on ns1");
    // On either host the deadline is ns2's last answer plus TTL (published
    // about every second).
    let b_window = (b_from + ttl_ms)..=(b_until + ttl_ms);
    for h in [&a, &b] {
        let mut last = serde_json::Value::Null;
        let got = poll(AGREE_TIMEOUT, Duration::from_millis(100), || {
            last = pool(&h.status(), "www", "old").clone();
            last["drained_at_ms"]
                .as_u64()
                .filter(|d| b_window.contains(d))
        });
        assert!(
            got.is_some(),
            "{}: old's drained_at_ms must be ns2's last answer + TTL, in {b_window:?} (ns1's own would be ≤ {}): {last}",
            h.node,
            a_answered + ttl_ms
        );
    }

    // decommission on ns1 is refused after ns1's own deadline + grace but
    // before ns2's, and allowed after ns2's.
    poll(Duration::from_secs(15), Duration::from_millis(20), || {
        (now_ms() > a_answered + ttl_ms + grace_ms + 200).then_some(())
    })
    .unwrap();
    let early = a.run(&["decommission", "www", "old", "--reason", "too early"]);
    assert!(
        now_ms() < b_from + ttl_ms + grace_ms,
        "the test ran too slowly to check the refusal window (machine overloaded?)"
    );
    assert_eq!(
        early.code,
        Some(1),
        "decommission on ns1 must wait for ns2's deadline + grace: {early}"
    );
    poll(Duration::from_secs(15), Duration::from_millis(20), || {
        (now_ms() > b_until + ttl_ms + grace_ms + 200).then_some(())
    })
    .unwrap();
    a.ok(&[
        "decommission",
        "www",
        "old",
        "--reason",
        "drained everywhere",
    ]);
}

#[test]
fn soa_serial_is_the_same_on_every_host_and_rises_with_the_epoch() {
    let etcd = EtcdCluster::start(3);
    let (a, b) = two_hosts(&etcd);
    // Start from a state that exists in etcd (serial_base is set then).
    a.ok(&["advance", "www", "--reason", "first"]);
    let e1 = await_agreement(&[&a, &b], "www", "round-robin", "advance on ns1");
    let s1 = same_serial(&a, &b);
    b.ok(&["rollback", "www", "--reason", "second"]);
    let e2 = await_agreement(&[&a, &b], "www", "separate-domain", "rollback on ns2");
    let s2 = same_serial(&a, &b);
    assert!(s2 > s1, "serial {s2} after the change, {s1} before");
    assert_eq!(
        u64::from(s2 - s1),
        e2 - e1,
        "serial = serial_base + epoch: it moves with the epoch ({e1} -> {e2})"
    );
}

/// Runs a command that must succeed now that etcd is back: retried (10 s at
/// most) only while it fails naming etcd, as the client may still be
/// reconnecting.
fn ok_once_etcd_is_back(host: &Host, args: &[&str]) {
    let mut last = None;
    let done = poll(Duration::from_secs(10), Duration::from_millis(200), || {
        let r = host.run(args);
        if r.code == Some(0) {
            return Some(());
        }
        assert!(
            r.stderr.contains("etcd"),
            "{}: dnsshift {args:?}: {r}",
            host.node
        );
        last = Some(r);
        None
    });
    assert!(
        done.is_some(),
        "{}: dnsshift {args:?} kept failing after etcd returned: {}",
        host.node,
        last.unwrap()
    );
}

/// Both hosts answer the same SOA serial (polled: each applies on its own).
fn same_serial(a: &Host, b: &Host) -> u32 {
    let mut last = (0, 0);
    poll(AGREE_TIMEOUT, Duration::from_millis(20), || {
        last = (a.serial(), b.serial());
        (last.0 == last.1).then_some(last.0)
    })
    .unwrap_or_else(|| panic!("SOA serials differ: ns1 {}, ns2 {}", last.0, last.1))
}

#[test]
fn cluster_import_moves_a_single_host_state_into_etcd_once() {
    // A single host (no [cluster]) with some history.
    let z = zones();
    let z: Vec<(&str, &str)> = z.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let single = host_setup(&z, "127.0.0.2", "solo", "", "");
    let mut solo = Host::start_in(single.dir, "solo", "127.0.0.2", ORIGIN);
    solo.ok(&["advance", "www", "--reason", "imported 50/50"]);
    solo.kill9();
    let state_file = solo.dir().join("state").join("state.json");
    assert!(
        state_file.is_file(),
        "the single host saved no {}",
        state_file.display()
    );

    let etcd = EtcdCluster::start(3);
    let ns1 = host_setup(&z, "127.0.0.2", "ns1", "", &cluster_table(&etcd, "ns1"));
    let import = |extra: &[&str]| {
        let mut cmd = Command::new(bin());
        cmd.arg("--config")
            .arg(ns1.config())
            .args(["cluster", "import"])
            .arg(&state_file)
            .args(extra)
            .current_dir(ns1.dir.path());
        run_command(&mut cmd, &["cluster", "import"])
    };
    let first = import(&[]);
    assert_eq!(first.code, Some(0), "first import: {first}");
    let again = import(&[]);
    assert_ne!(
        again.code,
        Some(0),
        "a second import must be refused: {again}"
    );
    assert!(
        again.stderr.contains("--force"),
        "the refusal should say --force overrides it: {again}"
    );
    let forced = import(&["--force"]);
    assert_eq!(forced.code, Some(0), "import --force: {forced}");

    let a = Host::start_in(ns1.dir, "ns1", "127.0.0.2", ORIGIN);
    let b = start_host(&etcd, "ns2", "127.0.0.3");
    await_agreement(&[&a, &b], "www", "round-robin", "import");
    let events = shared_history(&a, &b);
    assert!(
        events.iter().any(|e| e["reason"] == "imported 50/50"),
        "the imported history is shared: {events:#?}"
    );
}
