//! `dnsshift status --check` (issue 21): one line per problem and exit 1,
//! or "OK" and exit 0, against a real daemon whose endpoints a real HTTP
//! backend makes healthy or not, and a real two-host cluster on etcd whose
//! second host is killed, then forgotten (`cluster forget`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::backend::{Backend, Behaviour};
use common::cluster::{Host, host_entry};
use common::etcd::EtcdCluster;
use common::*;

/// How long health verdicts (interval 200 ms, rise = fall = 1) and a
/// vanished host's lease (5 s) take at most, with room for a busy machine.
const SETTLE: Duration = Duration::from_secs(20);

/// Polls `status --check` until its stdout satisfies `want`; returns
/// (success, stdout).
fn check_until(server: &Server, want: impl Fn(bool, &str) -> bool) -> (bool, String) {
    let mut last = (false, String::new());
    poll(SETTLE, Duration::from_millis(100), || {
        let (ok, out, _) = server.cli(&["status", "--check"]);
        last = (ok, out.clone());
        want(ok, &out).then_some(())
    })
    .unwrap_or_else(|| panic!("status --check never gave what was wanted; last: {last:?}"));
    last
}

#[test]
fn check_prints_one_line_per_problem_and_exits_1_until_all_is_well() {
    let old = Backend::http("127.0.9.1:0");
    let port = old.addr.port();
    let new = Backend::http(&format!("127.0.9.2:{port}"));
    let zone = zone_of([ServiceBuilder::new("www")
        .ttl("5s")
        .pool("old", &["127.0.9.1"])
        .pool("new", &["127.0.9.2"])
        .health_http(&format!("http://{{endpoint}}:{port}/healthz"))
        .timing("200ms", "150ms")
        .rise_fall(1, 1)
        .phase("old-only", &[("old", 100), ("new", 0)])
        .phase("split", &[("old", 50), ("new", 50)])]);
    let server = Setup::new(&[("z.toml", &zone)], "").start();

    let (ok, out) = check_until(&server, |ok, _| ok);
    assert!(ok);
    assert_eq!(out.trim(), "OK: 1 service(s) answered normally", "{out}");

    // new fails its checks: one line, exit 1 (Refused), nothing on stderr.
    new.set(Behaviour::status(503));
    let (_, out) = check_until(&server, |ok, out| !ok && out.contains("is down"));
    let run = server.cli_command(&["status", "--check"]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(
        lines[0].starts_with("www.shift.test.: pool new endpoint 127.0.9.2 is down since "),
        "{out}"
    );
    assert!(lines[0].contains("503"), "the last probe says why: {out}");

    // In a phase that weights new, new is also unusable: its share goes to old.
    server.cli_ok(&["advance", "www", "--force", "--reason", "test"]);
    let (_, out) = check_until(&server, |_, out| out.lines().count() == 2);
    assert!(
        out.contains(
            "www.shift.test.: pool new has weight 50 in phase split but no usable endpoint, so its share goes to the other pools"
        ),
        "{out}"
    );
    // A disabled endpoint is a decision, not an outage: only the pool's line stays.
    server.cli_ok(&[
        "endpoint",
        "disable",
        "www",
        "127.0.9.2",
        "--force",
        "--reason",
        "known",
    ]);
    let (_, out) = check_until(&server, |_, out| out.lines().count() == 1);
    assert!(out.contains("pool new has weight 50"), "{out}");

    // Everything down: fail-open.
    server.cli_ok(&["endpoint", "enable", "www", "127.0.9.2"]);
    old.set(Behaviour::status(503));
    let (_, out) = check_until(&server, |_, out| out.contains("fail-open"));
    assert!(
        out.lines().any(|l| l
            == "www.shift.test.: fail-open: no endpoint is usable, so all of them are answered"),
        "{out}"
    );

    // Healthy again: OK, exit 0.
    old.set(Behaviour::ok());
    new.set(Behaviour::ok());
    let (ok, out) = check_until(&server, |ok, _| ok);
    assert!(ok && out.starts_with("OK: "), "{out}");
}

#[test]
fn check_names_a_gone_host() {
    let etcd = EtcdCluster::start(1);
    let zone = zone_of([ServiceBuilder::unchecked(
        "www",
        &["127.0.8.1"],
        &["127.0.8.2"],
    )]);
    let zones = [("z.toml", zone.as_str())];
    let a = Host::start(&etcd, "ns1", "127.0.0.2", "shift.test.", &zones);
    let mut b = Host::start(&etcd, "ns2", "127.0.0.3", "shift.test.", &zones);
    a.await_live("ns2");
    let (ok, out) = check_until(a.server(), |ok, _| ok);
    assert!(ok);
    assert_eq!(
        out.trim(),
        "OK: 1 service(s) answered normally, 2 host(s) in sync",
        "{out}"
    );
    b.kill9();
    let (_, out) = check_until(a.server(), |ok, out| !ok && out.contains("host ns2: gone"));
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("host ns2: gone (last seen "), "{out}");

    // `cluster forget`: refused for a live host (exit 1), a usage error for
    // an unknown one (exit 2) naming the known ones; then ns2 is forgotten
    // and everything is well again.
    let live = a.run(&["cluster", "forget", "ns1"]);
    assert_eq!(live.code, Some(1), "{live}");
    assert!(live.stderr.contains("host ns1 is alive"), "{live}");
    let unknown = a.run(&["cluster", "forget", "ns9"]);
    assert_eq!(unknown.code, Some(2), "{unknown}");
    assert!(
        unknown
            .stderr
            .contains("no host \"ns9\"; it knows: ns1, ns2"),
        "{unknown}"
    );
    let forgot = a.run(&["cluster", "forget", "ns2"]);
    assert_eq!(forgot.code, Some(0), "{forgot}");
    assert!(
        forgot.stdout.starts_with("forgot host ns2 (last seen "),
        "{forgot}"
    );
    let (ok, out) = check_until(a.server(), |ok, _| ok);
    assert!(ok);
    assert_eq!(
        out.trim(),
        "OK: 1 service(s) answered normally, 1 host(s) in sync",
        "{out}"
    );
    assert!(host_entry(&a.status(), "ns2").is_none(), "{}", a.status());
}
