//! Operators move traffic: the real daemon driven through the real CLI.
//! Phase changes (advance, rollback, `--to`, `--force`, `--dry-run`),
//! refusals (unhealthy target, hold), endpoint overrides, decommission,
//! history, the control token, error messages, reload (CLI and SIGHUP) and
//! cache-drain deadlines. After every acknowledged command the very next
//! DNS query must already reflect it.
//!
//! `status --json` fields these tests rely on (see `control::StatusResponse`):
//! - `now_ms`: daemon time of the snapshot (Unix ms);
//! - `services[].phase`, `.phases`, `.since` (Unix s), `.ttl`;
//! - `services[].pools[]`: `.pool`, `.weight`, `.decommissioned`,
//!   `.last_answered_ms` (Unix ms of the last main-name answer carrying the
//!   pool), `.last_ttl`, `.drained_at_ms` (for a pool with weight 0: last
//!   answered + its TTL), `.drained` (`drained_at_ms` has passed),
//!   `.safe_to_decommission_after_ms` (`drained_at_ms` + `drain_grace`);
//! - `services[].pools[].endpoints[]`: `.endpoint`, `.healthy`, `.disabled`.
//!
//! `history --json`: `events[]` with `.action`, `.from`, `.to`, `.reason`,
//! `.forced` (absent `from`/`to`/`reason` mean none, absent `forced` false).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::backend::{Backend, Behaviour};
use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::Value;

const OLD: [&str; 2] = ["192.0.2.10", "192.0.2.11"];
const NEW: [&str; 2] = ["198.51.100.20", "198.51.100.21"];
const WWW: &str = "www.shift.test.";
/// Queries that make a pool with weight >= 10% all but certain to show up.
const MIX_QUERIES: usize = 300;

/// A `www` service with always-healthy endpoints and four phases
/// (separate-domain, ten, half, cutover).
fn www() -> ServiceBuilder {
    ServiceBuilder::www(&OLD, &NEW).four_phases()
}

/// [`www`] started in "half", which must be held for an hour.
fn held_half() -> String {
    zone_of([www()
        .initial_phase("half")
        .phase_set("half", "hold", "\"1h\"")])
}

/// An HTTP check of `http://{endpoint}:<port><path>` as an inline table,
/// deciding on one result.
fn http_check(port: u16, path: &str, interval: &str, timeout: &str) -> String {
    format!(
        "{{ kind = \"http\", url = \"http://{{endpoint}}:{port}{path}\", interval = \"{interval}\", timeout = \"{timeout}\", rise = 1, fall = 1 }}"
    )
}

fn start(zone: &str) -> Server {
    Setup::new(&[("shift.test.toml", zone)], "").start()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `status SERVICE --json`: the whole response.
fn status_all(server: &Server) -> Value {
    serde_json::from_str(&server.cli_ok(&["status", "www", "--json"])).unwrap()
}

/// `status www --json`: the one service.
fn status(server: &Server) -> Value {
    status_all(server)["services"][0].clone()
}

fn phase(server: &Server) -> String {
    status(server)["phase"].as_str().unwrap().to_string()
}

fn pool<'a>(service: &'a Value, name: &str) -> &'a Value {
    service["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pool"] == name)
        .unwrap_or_else(|| panic!("no pool {name} in {service}"))
}

fn endpoint<'a>(service: &'a Value, pool_name: &str, ep: &str) -> &'a Value {
    pool(service, pool_name)["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == ep)
        .unwrap_or_else(|| panic!("no endpoint {ep} in {service}"))
}

/// Which pool one answer came from; panics if it mixes pools or is empty.
fn pool_of(got: &[String], old: &[&str], new: &[&str]) -> &'static str {
    assert!(!got.is_empty(), "empty answer");
    if got.iter().all(|a| old.contains(&a.as_str())) {
        "old"
    } else if got.iter().all(|a| new.contains(&a.as_str())) {
        "new"
    } else {
        panic!("answer mixes pools or has unknown addresses: {got:?}")
    }
}

/// One A query for www; the addresses answered (TTL checked against `ttl`).
fn www_a(server: &Server, ttl: u32) -> Vec<String> {
    let m = server.query(WWW, RecordType::A);
    assert!(m.answers.iter().all(|r| r.ttl == ttl), "TTL {ttl}: {m}");
    answers(&m)
}

/// Which pools `n` queries were answered from, with counts.
fn split(server: &Server, n: usize, ttl: u32) -> BTreeMap<&'static str, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        *seen
            .entry(pool_of(&www_a(server, ttl), &OLD, &NEW))
            .or_default() += 1;
    }
    seen
}

/// The very next query comes only from `want`, and so do 30 more.
fn assert_only(server: &Server, want: &str, ttl: u32) {
    let first = www_a(server, ttl);
    assert_eq!(pool_of(&first, &OLD, &NEW), want, "next query: {first:?}");
    let s = split(server, 30, ttl);
    assert_eq!(s.keys().copied().collect::<Vec<_>>(), vec![want], "{s:?}");
}

/// The very next query is a whole answer from one pool, and both pools
/// answer within [`MIX_QUERIES`].
fn assert_mixed(server: &Server, ttl: u32) {
    pool_of(&www_a(server, ttl), &OLD, &NEW);
    let s = split(server, MIX_QUERIES, ttl);
    assert_eq!(s.len(), 2, "both pools should answer: {s:?}");
}

fn state_file(server: &Server) -> std::path::PathBuf {
    server.path().join("state").join("state.json")
}

fn state_bytes(server: &Server) -> Option<Vec<u8>> {
    std::fs::read(state_file(server)).ok()
}

/// `history www --json` events as (action, from, to, reason, forced).
type Ev = (String, Option<String>, Option<String>, Option<String>, bool);
fn history(server: &Server) -> Vec<Ev> {
    let h: Value = serde_json::from_str(&server.cli_ok(&["history", "www", "--json"])).unwrap();
    assert_eq!(h["service"], WWW);
    let s = |v: &Value| v.as_str().map(str::to_string);
    h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["service"], WWW);
            assert!(e["at"].as_u64().unwrap() > 0);
            // In Unix milliseconds too, the unit of the times in status.
            assert_eq!(e["at_ms"].as_u64(), e["at"].as_u64().map(|s| s * 1000));
            (
                e["action"].as_str().unwrap().to_string(),
                s(&e["from"]),
                s(&e["to"]),
                s(&e["reason"]),
                e["forced"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn ev(action: &str, from: Option<&str>, to: &str, reason: Option<&str>, forced: bool) -> Ev {
    (
        action.into(),
        from.map(Into::into),
        Some(to.into()),
        reason.map(Into::into),
        forced,
    )
}

/// A command that must fail; returns its stderr.
fn cli_err(server: &Server, args: &[&str]) -> String {
    let (ok, out, err) = server.cli(args);
    assert!(
        !ok,
        "dnsshift {args:?} should fail:\nstdout: {out}\nstderr: {err}"
    );
    assert!(err.starts_with("dnsshift: "), "{err}");
    err
}

/// One raw HTTP/1.1 request to the control listener; (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{auth}\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {resp:?}"));
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

// ------------------------------------------------------------------ phases

#[test]
fn full_migration_rollback_and_to_through_the_cli() {
    let server = start(&zone_of([www()]));
    let st = status(&server);
    assert_eq!(st["phase"], "separate-domain");
    assert_eq!(
        st["phases"],
        serde_json::json!(["separate-domain", "ten", "half", "cutover"])
    );
    assert_only(&server, "old", 30);
    // The staging name answers the new pool throughout.
    let staging = answers(&server.query("www-next.shift.test.", RecordType::A));
    assert_eq!(pool_of(&staging, &OLD, &NEW), "new");

    let out = server.cli_ok(&["advance", "www", "--reason", "start with 10%"]);
    assert!(out.contains("separate-domain -> ten"), "{out}");
    // Pools in configuration order (old, then new), not alphabetical.
    assert!(out.contains("(weights old=90 new=10, ttl 30s)"), "{out}");
    assert_mixed(&server, 30);
    let s = split(&server, MIX_QUERIES, 30);
    assert!(s["old"] > s["new"], "90/10 should favour old: {s:?}");

    server.cli_ok(&["advance", "www"]);
    assert_eq!(phase(&server), "half");
    assert_mixed(&server, 30);

    let before = now_ms() / 1000;
    let out = server.cli_ok(&["advance", "www", "--reason", "all in"]);
    assert!(out.contains("half -> cutover"), "{out}");
    assert_only(&server, "new", 30);
    let st = status(&server);
    assert_eq!(st["phase"], "cutover");
    let since = st["since"].as_u64().unwrap();
    assert!(since >= before && since <= now_ms() / 1000, "since {since}");
    assert_eq!(pool(&st, "old")["weight"], 0);
    assert_eq!(pool(&st, "new")["weight"], 100);

    let err = cli_err(&server, &["advance", "www"]);
    assert!(
        err.contains("already in the last phase \"cutover\""),
        "{err}"
    );

    let out = server.cli_ok(&["rollback", "www", "--reason", "errors on new"]);
    assert!(out.contains("cutover -> half"), "{out}");
    assert_mixed(&server, 30);

    server.cli_ok(&["rollback", "www", "--to", "separate-domain"]);
    assert_only(&server, "old", 30);
    let err = cli_err(&server, &["rollback", "www"]);
    assert!(err.contains("already in the first phase"), "{err}");

    let out = server.cli_ok(&["advance", "www", "--to", "cutover", "--json"]);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["from"], "separate-domain");
    assert_eq!(r["to"], "cutover");
    assert_eq!(
        r["warnings"],
        serde_json::json!([
            "skips phases \"ten\", \"half\": their weights are never served on the way"
        ])
    );
    assert_eq!(r["applied"], true);
    assert_eq!(r["ttl"], 30);
    assert_eq!(r["weights"], serde_json::json!({"old": 0, "new": 100}));
    assert_only(&server, "new", 30);

    // --to in the wrong direction, or to the current phase, is refused.
    let err = cli_err(&server, &["advance", "www", "--to", "ten"]);
    assert!(err.contains("use rollback"), "{err}");
    let err = cli_err(&server, &["rollback", "www", "--to", "cutover"]);
    assert!(err.contains("already in phase \"cutover\""), "{err}");
    server.cli_ok(&["rollback", "www", "--to", "ten"]);
    assert_mixed(&server, 30);
    let err = cli_err(&server, &["rollback", "www", "--to", "half"]);
    assert!(err.contains("use advance"), "{err}");

    assert_eq!(
        history(&server),
        vec![
            ev(
                "advance",
                Some("separate-domain"),
                "ten",
                Some("start with 10%"),
                false
            ),
            ev("advance", Some("ten"), "half", None, false),
            ev("advance", Some("half"), "cutover", Some("all in"), false),
            ev(
                "rollback",
                Some("cutover"),
                "half",
                Some("errors on new"),
                false
            ),
            ev("rollback", Some("half"), "separate-domain", None, false),
            ev("advance", Some("separate-domain"), "cutover", None, false),
            ev("rollback", Some("cutover"), "ten", None, false),
        ]
    );
    let human = server.cli_ok(&["history", "www"]);
    assert!(human.contains("errors on new"), "{human}");
    assert_eq!(human.lines().count(), 8, "header + 7 events:\n{human}");
}

#[test]
fn advance_refused_while_the_target_pool_is_unhealthy_unless_forced() {
    let mut backend = Backend::http("127.0.0.2:0");
    backend.set(Behaviour::status(503));
    let port = backend.addr.port();
    let new = ["127.0.0.2"];
    let server = start(&zone_of([www().pool_with_health(
        "new",
        &new,
        &http_check(port, "/healthz", "300ms", "200ms"),
    )]));
    let st = status(&server);
    let ep = endpoint(&st, "new", "127.0.0.2");
    assert_eq!(ep["healthy"], false, "first round reflects the 503: {st}");

    let before = state_bytes(&server);
    let err = cli_err(&server, &["advance", "www"]);
    assert!(
        err.contains(
            "pool \"new\" would receive traffic in phase \"ten\" but has no healthy endpoint"
        ) && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        state_bytes(&server),
        before,
        "a refused advance writes nothing"
    );
    assert_eq!(phase(&server), "separate-domain");
    assert_eq!(pool_of(&www_a(&server, 30), &OLD, &new), "old");

    // Forced: new is weighted but down, so its weight goes to old.
    let (ok, out, err) = server.cli(&["advance", "www", "--to", "cutover", "--force"]);
    assert!(ok, "{out}{err}");
    assert!(err.contains("warning: forced"), "{err}");
    assert_eq!(phase(&server), "cutover");
    for _ in 0..20 {
        assert_eq!(pool_of(&www_a(&server, 30), &OLD, &new), "old");
    }
    // Rollback is always allowed.
    server.cli_ok(&["rollback", "www", "--to", "separate-domain"]);
    assert_eq!(phase(&server), "separate-domain");

    // Once new is healthy the same advance goes through without --force,
    // and the next query can be answered by it.
    backend.set(Behaviour::ok());
    let healthy = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        (endpoint(&status(&server), "new", "127.0.0.2")["healthy"] == true).then_some(())
    });
    assert!(healthy.is_some(), "new never became healthy");
    server.cli_ok(&["advance", "www", "--to", "cutover"]);
    assert_eq!(www_a(&server, 30), vec!["127.0.0.2".to_string()]);

    let h = history(&server);
    assert_eq!(
        h,
        vec![
            ev("advance", Some("separate-domain"), "cutover", None, true),
            ev("rollback", Some("cutover"), "separate-domain", None, false),
            ev("advance", Some("separate-domain"), "cutover", None, false),
        ]
    );
    backend.stop();
}

#[test]
fn advance_refused_before_the_hold_has_passed_unless_forced() {
    let server = start(&zone_of([www().phase_set("half", "hold", "\"1h\"")]));
    server.cli_ok(&["advance", "www", "--to", "half"]);
    let before = state_bytes(&server).expect("state saved");
    let err = cli_err(&server, &["advance", "www"]);
    assert!(
        err.contains("phase \"half\" must be held for 1h") && err.contains("--force"),
        "{err}"
    );
    // A dry run is refused the same way.
    let err = cli_err(&server, &["advance", "www", "--dry-run"]);
    assert!(err.contains("must be held"), "{err}");
    assert_eq!(state_bytes(&server).unwrap(), before);
    assert_eq!(phase(&server), "half");
    assert_mixed(&server, 30);

    let (ok, out, err) = server.cli(&["advance", "www", "--force", "--reason", "approved"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("half -> cutover"), "{out}");
    assert!(err.contains("warning: forced"), "{err}");
    assert_only(&server, "new", 30);
    assert_eq!(
        history(&server).last().unwrap(),
        &ev("advance", Some("half"), "cutover", Some("approved"), true)
    );
    // Rolling back into the held phase is not held up: there is nothing to
    // force, so rollback has no --force (a usage error, exit 2).
    let out = server.cli_command(&["rollback", "www", "--force"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unexpected argument '--force'"),
        "{out:?}"
    );
    assert_eq!(phase(&server), "cutover");
    let (ok, _, err) = server.cli(&["rollback", "www"]);
    assert!(ok && !err.contains("forced"), "{err}");
    assert_eq!(phase(&server), "half");
    assert_eq!(
        history(&server).last().unwrap(),
        &ev("rollback", Some("cutover"), "half", None, false)
    );
}

#[test]
fn a_hold_on_the_initial_phase_counts_from_start_up() {
    // No transition recorded yet: the hold runs from the daemon's start.
    let zone = held_half();
    let server = start(&zone);
    assert_eq!(phase(&server), "half");
    let err = cli_err(&server, &["advance", "www"]);
    assert!(err.contains("phase \"half\" must be held for 1h"), "{err}");
    server.cli_ok(&["advance", "www", "--force"]);
    assert_eq!(phase(&server), "cutover");
}

#[test]
fn dry_run_changes_nothing_and_prints_weights_and_ttl() {
    let server = start(&zone_of([www()]));
    server.cli_ok(&["advance", "www"]);
    let before = state_bytes(&server).expect("state saved");
    let serial = status_all(&server)["serial"].clone();

    let out = server.cli_ok(&["advance", "www", "--dry-run"]);
    assert!(out.contains("dry run, nothing changed"), "{out}");
    assert!(out.contains("ten -> half"), "{out}");
    assert!(out.contains("new=50") && out.contains("old=50"), "{out}");
    assert!(out.contains("ttl 30s"), "{out}");
    let out = server.cli_ok(&["advance", "www", "--to", "cutover", "--dry-run", "--json"]);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert!(
        out.find("\"old\"").unwrap() < out.find("\"new\"").unwrap(),
        "weights in configuration order: {out}"
    );
    assert_eq!(r["applied"], false);
    assert_eq!(r["to"], "cutover");
    assert_eq!(r["weights"], serde_json::json!({"old": 0, "new": 100}));
    assert_eq!(r["ttl"], 30);
    server.cli_ok(&["rollback", "www", "--dry-run"]);

    assert_eq!(
        state_bytes(&server).unwrap(),
        before,
        "state file unchanged"
    );
    let all = status_all(&server);
    assert_eq!(all["serial"], serial, "no new answer plan");
    assert_eq!(all["services"][0]["phase"], "ten");
    assert_eq!(history(&server).len(), 1);
    assert_mixed(&server, 30);
}

#[test]
fn advancing_into_a_longer_ttl_warns() {
    let server = start(&zone_of([www().phase_set("half", "ttl", "\"5m\"")]));
    let (ok, _, err) = server.cli(&["advance", "www"]);
    assert!(
        ok && !err.contains("warning"),
        "same TTL, no warning: {err}"
    );
    let out = server.cli(&["advance", "www", "--dry-run"]);
    assert!(
        out.0 && out.2.contains("TTL 300s, longer than the current 30s"),
        "{out:?}"
    );
    let (ok, out, err) = server.cli(&["advance", "www", "--json"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: phase \"half\" answers with TTL 300s, longer than the current 30s"),
        "{err}"
    );
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["ttl"], 300);
    assert_eq!(r["warnings"].as_array().unwrap().len(), 1, "{r}");
    assert_mixed(&server, 300);
    assert_eq!(status(&server)["ttl"], 300);
    // Back to a shorter TTL: no warning.
    let (ok, _, err) = server.cli(&["advance", "www"]);
    assert!(ok && !err.contains("warning"), "{err}");
    assert_only(&server, "new", 30);
}

// --------------------------------------------------------------- overrides

#[test]
fn disabled_endpoint_leaves_the_answers_and_returns_when_enabled() {
    let server = start(&zone_of([www()]));
    assert_eq!(www_a(&server, 30).len(), 2);

    let out = server.cli_ok(&["endpoint", "disable", "www", OLD[0], "--reason", "patching"]);
    assert!(out.contains("disabled"), "{out}");
    for _ in 0..20 {
        assert_eq!(www_a(&server, 30), vec![OLD[1].to_string()]);
    }
    let st = status(&server);
    assert_eq!(endpoint(&st, "old", OLD[0])["disabled"], true);
    assert_eq!(endpoint(&st, "old", OLD[1])["disabled"], false);
    let human = server.cli_ok(&["status", "www"]);
    let line = human.lines().find(|l| l.contains(OLD[0])).unwrap();
    assert!(line.contains("disabled"), "{human}");
    // Disabling twice is harmless and says so.
    let out = server.cli_ok(&["endpoint", "disable", "www", OLD[0]]);
    assert!(out.contains("already disabled"), "{out}");

    server.cli_ok(&["endpoint", "enable", "www", OLD[0]]);
    let mut got = www_a(&server, 30);
    got.sort();
    assert_eq!(got, OLD.to_vec());
    assert_eq!(endpoint(&status(&server), "old", OLD[0])["disabled"], false);

    let err = cli_err(&server, &["endpoint", "disable", "www", "192.0.2.99"]);
    assert!(
        err.contains("has no endpoint \"192.0.2.99\"") && err.contains(OLD[0]),
        "{err}"
    );
    assert_eq!(
        history(&server),
        vec![
            ev("disable", None, "old/192.0.2.10", Some("patching"), false),
            ev("enable", None, "old/192.0.2.10", None, false),
        ]
    );
}

#[test]
fn decommission_waits_for_drain_then_the_pool_is_never_answered() {
    // new is a real backend so that it can go down: then old, as standby,
    // would be answered, unless decommissioned.
    let backend = Backend::http("127.0.0.3:0");
    let port = backend.addr.port();
    let new = ["127.0.0.3"];
    let zone = zone_of([
        www().ttl("2s").drain_grace("1s").pool_with_health(
            "new",
            &new,
            &http_check(port, "/", "300ms", "200ms"),
        ),
        // A second, always-healthy service for the --force path.
        ServiceBuilder::new("api")
            .ttl("1m")
            .initial_phase("cutover")
            .pool("old", &[OLD[0]])
            .pool("new", &[NEW[0]])
            .health_none(),
    ]);
    let server = start(&zone);
    // Health changes reach the answers asynchronously: poll DNS for them.
    let answered_by = |want: &str| {
        let r = poll(Duration::from_secs(10), Duration::from_millis(50), || {
            (pool_of(&www_a(&server, 2), &OLD, &new) == want).then_some(())
        });
        assert!(r.is_some(), "{want} never answered");
    };
    // Sets new's behaviour and waits until its health verdict is `healthy`
    // and has reached the answer plan (rebuilt after every verdict change).
    let flip = |b: Behaviour, healthy: bool| {
        let serial = status_all(&server)["serial"].clone();
        backend.set(b);
        let r = poll(Duration::from_secs(10), Duration::from_millis(50), || {
            let all = status_all(&server);
            let ep = endpoint(&all["services"][0], "new", "127.0.0.3");
            (ep["healthy"] == healthy && all["serial"] != serial).then_some(())
        });
        assert!(r.is_some(), "new never became healthy={healthy}");
    };

    let err = cli_err(&server, &["decommission", "www", "old"]);
    assert!(err.contains("pool \"old\" has weight 100"), "{err}");
    assert_eq!(pool_of(&www_a(&server, 2), &OLD, &new), "old");

    server.cli_ok(&["advance", "www", "--to", "cutover"]);
    assert_eq!(pool_of(&www_a(&server, 2), &OLD, &new), "new");
    // Standby: with new down, old answers.
    backend.set(Behaviour::status(503));
    answered_by("old");
    backend.set(Behaviour::ok());
    answered_by("new");

    // Old was just answered: not drained yet.
    let err = cli_err(&server, &["decommission", "www", "old"]);
    assert!(err.contains("not safe to decommission until"), "{err}");
    let safe = pool(&status(&server), "old")["safe_to_decommission_after_ms"]
        .as_u64()
        .unwrap();
    let wait = Duration::from_millis(safe.saturating_sub(now_ms()) + 50);
    assert!(wait < Duration::from_secs(5), "{wait:?}");
    std::thread::sleep(wait);
    let out = server.cli_ok(&["decommission", "www", "old", "--reason", "drained"]);
    assert!(out.contains("decommissioned"), "{out}");
    assert_eq!(pool(&status(&server), "old")["decommissioned"], true);

    // Now even with new down, old is never answered.
    flip(Behaviour::status(503), false);
    for _ in 0..30 {
        let m = server.query(WWW, RecordType::A);
        let got = answers(&m);
        assert!(got.iter().all(|a| !OLD.contains(&a.as_str())), "{m}");
    }
    // Rolling back into a phase that weights it is refused (a dry run
    // too), naming the way back.
    let before = state_bytes(&server);
    for args in [
        &["rollback", "www"][..],
        &["rollback", "www", "--to", "separate-domain"],
        &["rollback", "www", "--dry-run"],
    ] {
        let err = cli_err(&server, args);
        assert!(
            err.contains("is decommissioned") && err.contains("dnsshift recommission www old"),
            "{err}"
        );
    }
    assert_eq!(state_bytes(&server), before, "refusals write nothing");
    flip(Behaviour::ok(), true);
    for _ in 0..30 {
        assert_eq!(www_a(&server, 2), vec!["127.0.0.3".to_string()]);
    }
    let human = server.cli_ok(&["status", "www"]);
    assert!(human.contains("decommissioned"), "{human}");
    assert_eq!(
        history(&server).last().unwrap(),
        &ev("decommission", None, "old", Some("drained"), false),
        "refused rollbacks not recorded"
    );

    // --force skips the drain wait.
    let err = cli_err(&server, &["decommission", "api", "old"]);
    assert!(err.contains("not safe to decommission until"), "{err}");
    server.cli_ok(&["decommission", "api", "old", "--force"]);
    let h: Value = serde_json::from_str(&server.cli_ok(&["history", "api", "--json"])).unwrap();
    assert_eq!(h["events"][0]["action"], "decommission");
    assert_eq!(h["events"][0]["forced"], true);
    let err = cli_err(&server, &["decommission", "www", "nope"]);
    assert!(err.contains("has no pool \"nope\""), "{err}");
}

// ------------------------------------------------------------------- drain

#[test]
fn drain_deadline_is_last_answer_plus_ttl_and_then_drained() {
    let zone = zone_of([ServiceBuilder::new("www")
        .ttl("2s")
        .drain_grace("1s")
        .max_answers(2)
        .pool("old", &OLD)
        .pool("new", &NEW)
        .health_none()]);
    let server = start(&zone);
    server.cli_ok(&["advance", "www"]);
    assert_eq!(phase(&server), "round-robin");
    // Query until old answers once, then not again: that is its last answer.
    let mut window = None;
    for _ in 0..MIX_QUERIES {
        let sent = now_ms();
        let got = www_a(&server, 2);
        let received = now_ms();
        if pool_of(&got, &OLD, &NEW) == "old" {
            window = Some((sent, received));
            break;
        }
    }
    let (sent, received) = window.expect("old never answered in round-robin");
    server.cli_ok(&["advance", "www"]);
    // No DNS query from here on: old could be answered as standby.

    let check = |st: &Value, now: u64| -> (u64, bool) {
        assert_eq!(st["phase"], "cutover");
        let old = pool(st, "old");
        assert_eq!(old["weight"], 0);
        let last = old["last_answered_ms"].as_u64().unwrap();
        assert!(
            last + 20 >= sent && last <= received + 20,
            "last answered {last} outside [{sent}, {received}]"
        );
        assert_eq!(old["last_ttl"], 2);
        let drained_at = old["drained_at_ms"].as_u64().unwrap();
        assert_eq!(drained_at, last + 2000);
        assert_eq!(
            old["safe_to_decommission_after_ms"].as_u64().unwrap(),
            drained_at + 1000
        );
        let drained = old["drained"].as_bool().unwrap();
        assert_eq!(
            drained,
            now >= drained_at,
            "now {now}, drained at {drained_at}"
        );
        // new still receives traffic: no drain deadline.
        assert!(pool(st, "new")["drained_at_ms"].is_null());
        (drained_at, drained)
    };
    let all = status_all(&server);
    let (drained_at, drained) = check(&all["services"][0], all["now_ms"].as_u64().unwrap());
    assert!(
        !drained,
        "checked right after cutover, long before {drained_at}"
    );
    let human = server.cli_ok(&["status", "www"]);
    assert!(
        human.contains("draining: caches may hold it until"),
        "{human}"
    );

    let mut observed = 0;
    let done = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        observed += 1;
        let all = status_all(&server);
        let (_, drained) = check(&all["services"][0], all["now_ms"].as_u64().unwrap());
        drained.then_some(())
    });
    assert!(done.is_some(), "never drained");
    assert!(observed > 1);
    assert!(now_ms() >= drained_at);
    let human = server.cli_ok(&["status", "www"]);
    let line = human
        .lines()
        .find(|l| l.trim_start().starts_with("old"))
        .unwrap();
    assert!(
        line.contains("drained at") && line.contains("safe to decommission after"),
        "{human}"
    );
}

// ------------------------------------------------------ token and errors

#[test]
fn requests_without_the_right_token_get_401_and_change_nothing() {
    let server = start(&zone_of([www()]));
    server.cli_ok(&["endpoint", "disable", "www", OLD[1]]);
    let control = server.control.unwrap();
    let before = state_bytes(&server).unwrap();
    let token_path = server.path().join("state").join("control.token");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "token file mode");
    let token = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_string();

    let basic = format!("Basic {token}");
    for auth in [
        None,
        Some("Bearer wrong"),
        Some(basic.as_str()),
        Some("Bearer "),
    ] {
        for (method, path, body) in [
            ("POST", "/v1/services/www/advance", "{\"force\": true}"),
            ("POST", "/v1/services/www/rollback", "{}"),
            // Checked before the body is even looked at.
            ("POST", "/v1/services/www/rollback", "not json"),
            ("POST", "/v1/services/www/endpoints/192.0.2.11/enable", "{}"),
            (
                "POST",
                "/v1/services/www/pools/new/decommission",
                "{\"force\": true}",
            ),
            ("POST", "/v1/reload", ""),
            ("GET", "/v1/status", ""),
            ("GET", "/v1/services/www/history", ""),
        ] {
            let (code, resp) = http(control, method, path, auth, body);
            assert_eq!(code, 401, "{method} {path} with {auth:?}: {resp}");
            assert!(resp.contains("bearer token"), "{resp}");
        }
    }
    assert_eq!(state_bytes(&server).unwrap(), before, "state unchanged");
    assert_only(&server, "old", 30);
    assert_eq!(www_a(&server, 30), vec![OLD[0].to_string()]);

    // The same raw request with the token works (the client above is sound).
    let bearer = format!("Bearer {token}");
    let (code, resp) = http(
        control,
        "POST",
        "/v1/services/www/advance",
        Some(&bearer),
        "{}",
    );
    assert_eq!(code, 200, "{resp}");
    assert_eq!(phase(&server), "ten");

    // A CLI with a wrong token file is refused the same way.
    let wrong = server.path().join("wrong.token");
    std::fs::write(&wrong, "nope\n").unwrap();
    let err = cli_err(
        &server,
        &["--token-file", wrong.to_str().unwrap(), "advance", "www"],
    );
    // Said in words: no HTTP status (exit code 3 is tested in tests/cli.rs).
    assert!(
        err.contains("rejected the control token") && !err.contains("401"),
        "{err}"
    );
    assert_eq!(phase(&server), "ten");
}

#[test]
fn unknown_service_or_phase_fails_with_the_daemons_message() {
    let server = start(&zone_of([www()]));
    for args in [
        vec!["status", "nope"],
        vec!["advance", "nope"],
        vec!["rollback", "nope"],
        vec!["history", "nope"],
        vec!["endpoint", "disable", "nope", OLD[0]],
        vec!["decommission", "nope", "old"],
    ] {
        let err = cli_err(&server, &args);
        assert!(
            err.contains("unknown service \"nope\" (services: www.shift.test.)"),
            "{args:?}: {err}"
        );
    }
    for verb in ["advance", "rollback"] {
        let err = cli_err(&server, &[verb, "www", "--to", "halfway"]);
        assert!(
            err.contains("unknown phase \"halfway\" (phases: separate-domain, ten, half, cutover)"),
            "{err}"
        );
    }
    // The full name works, in any case, with or without the final dot.
    server.cli_ok(&["status", "WWW.shift.test"]);
    assert_eq!(phase(&server), "separate-domain");
    assert!(state_bytes(&server).is_none(), "nothing was saved");
}

#[test]
fn unreachable_daemon_fails_saying_where_it_looked() {
    let server = start(&zone_of([www()]));
    let control = server.control.unwrap();
    let dir = server.kill();
    let config = dir.path().join("dnsshift.toml");
    let run = |env: Option<String>| {
        let mut cmd = Command::new(bin());
        cmd.arg("--config").arg(&config).arg("status");
        match env {
            Some(url) => cmd.env("DNSSHIFT_CONTROL", url),
            None => cmd.env_remove("DNSSHIFT_CONTROL"),
        };
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(Some(format!("http://{control}")));
    assert!(
        err.contains(&format!(
            "cannot reach the dnsshift daemon at http://{control}"
        )) && err.contains("DNSSHIFT_CONTROL"),
        "{err}"
    );
    // From the config: names the config file.
    let err = run(None);
    assert!(
        err.contains("cannot reach the dnsshift daemon at http://127.0.0.1:0")
            && err.contains(&format!("control_listen in {}", config.display())),
        "{err}"
    );
    // No token file at all (the daemon never ran here): still says where
    // the daemon was expected.
    std::fs::remove_file(dir.path().join("state").join("control.token")).unwrap();
    let err = run(Some(format!("http://{control}")));
    assert!(
        err.contains("control.token") && err.contains(&format!("http://{control}")),
        "{err}"
    );
}

// ------------------------------------------------------------------ reload

/// A zone with www pools `old` (always healthy) in separate-domain.
fn reload_zone(old: &str) -> String {
    zone_of([www().pool("old", &[old]).pool("new", &[NEW[0]])])
}

fn a_of(server: &Server, name: &str) -> Vec<String> {
    answers(&server.query(name, RecordType::A))
}

#[test]
fn reload_dry_run_says_what_would_change_and_applies_nothing() {
    let server = start(&reload_zone("192.0.2.10"));
    let zones = server.path().join("zones");
    let out = server.cli_ok(&["reload", "--dry-run"]);
    assert!(
        out.contains("valid: 1 zone(s), 1 service(s); nothing applied")
            && out.contains("no changes: a reload would serve what is served now"),
        "{out}"
    );
    std::fs::write(zones.join("shift.test.toml"), reload_zone("192.0.2.99")).unwrap();
    let out = server.cli_ok(&["reload", "--dry-run"]);
    assert_eq!(
        out.lines().skip(1).collect::<Vec<_>>(),
        [
            "would change:",
            "  service www.shift.test.: pool old: endpoint 192.0.2.99 added",
            "  service www.shift.test.: pool old: endpoint 192.0.2.10 removed",
        ],
        "{out}"
    );
    // Nothing applied: the old address is still answered, and no reload
    // was logged.
    assert_eq!(a_of(&server, WWW), vec!["192.0.2.10"]);
    assert!(!server.log.lines().iter().any(|l| is_msg(l, "reloaded")));
    // A broken zone fails the dry run as it would fail the reload.
    std::fs::write(zones.join("broken.toml"), "[zone]\nttl = 3\n").unwrap();
    let err = cli_err(&server, &["reload", "--dry-run"]);
    assert!(err.contains("broken.toml:"), "{err}");
    std::fs::remove_file(zones.join("broken.toml")).unwrap();
    // The real reload then says what changed.
    let out = server.cli_ok(&["reload"]);
    assert!(
        out.contains("changed:\n  service www.shift.test.: pool old: endpoint 192.0.2.99 added"),
        "{out}"
    );
    assert_eq!(a_of(&server, WWW), vec!["192.0.2.99"]);
}

#[test]
fn reload_rejects_a_broken_zone_whole_and_accepts_a_good_one() {
    let server = start(&reload_zone("192.0.2.10"));
    let zones = server.path().join("zones");
    // A valid change in one file and a broken second file: nothing applies.
    std::fs::write(zones.join("shift.test.toml"), reload_zone("192.0.2.99")).unwrap();
    std::fs::write(
        zones.join("broken.toml"),
        "[zone]\norigin = \"broken.test.\"\nnameservers = [\"ns1.broken.test.\"]\nhostmaster = \"h.broken.test.\"\nttl = \"forever\"\n",
    )
    .unwrap();
    let err = cli_err(&server, &["reload"]);
    assert!(
        err.contains("reload rejected") && err.contains("broken.toml:5") && err.contains("ttl"),
        "{err}"
    );
    assert_eq!(a_of(&server, WWW), vec!["192.0.2.10"]);
    let m = server.query("www.broken.test.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{m}");

    std::fs::remove_file(zones.join("broken.toml")).unwrap();
    let out = server.cli_ok(&["reload"]);
    assert!(out.contains("reloaded: 1 zone(s), 1 service(s)"), "{out}");
    assert_eq!(a_of(&server, WWW), vec!["192.0.2.99"]);
    server
        .log
        .wait_for(0, Duration::from_secs(5), |l| is_msg(l, "reloaded"));

    // An error in the server config rejects the reload too. (The CLI reads
    // that config itself, so it would fail before asking: use SIGHUP.)
    let config = server.path().join("dnsshift.toml");
    let good_config = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{good_config}tcp_idle_timeout = \"soon\"\n"),
    )
    .unwrap();
    std::fs::write(zones.join("shift.test.toml"), reload_zone("192.0.2.77")).unwrap();
    let line = sighup(&server);
    let error = field(&line, "error").unwrap_or_default();
    assert!(
        error.contains("dnsshift.toml:") && error.contains("tcp_idle_timeout"),
        "{line}"
    );
    assert_eq!(a_of(&server, WWW), vec!["192.0.2.99"]);
    std::fs::write(&config, good_config).unwrap();
    server.cli_ok(&["reload"]);
    assert_eq!(a_of(&server, WWW), vec!["192.0.2.77"]);
}

/// Sends SIGHUP; returns the log line that says how the reload went.
fn sighup(server: &Server) -> String {
    let from = server.log.len();
    server.signal("HUP");
    let (_, line) = server.log.wait_for(from, Duration::from_secs(10), |l| {
        is_msg(
            l,
            "reload rejected; still serving the previous configuration",
        ) || is_msg(l, "reloaded")
    });
    line
}

#[test]
fn sighup_reloads_the_same_way() {
    let server = start(&reload_zone("192.0.2.10"));
    let zone = server.path().join("zones").join("shift.test.toml");
    let good = reload_zone("192.0.2.99");
    std::fs::write(&zone, format!("{good}\nbogus_key = 1\n")).unwrap();
    let line = sighup(&server);
    assert!(
        field(&line, "message")
            .unwrap()
            .starts_with("reload rejected"),
        "{line}"
    );
    assert!(
        field(&line, "error").unwrap().contains("shift.test.toml"),
        "{line}"
    );
    assert_eq!(a_of(&server, WWW), vec!["192.0.2.10"]);

    std::fs::write(&zone, &good).unwrap();
    let from = server.log.len();
    server.signal("HUP");
    server
        .log
        .wait_for(from, Duration::from_secs(10), |l| is_msg(l, "reloaded"));
    assert_eq!(a_of(&server, WWW), vec!["192.0.2.99"]);
    // Operator state survives reloads.
    server.cli_ok(&["advance", "www", "--to", "cutover"]);
    let from = server.log.len();
    server.signal("HUP");
    server
        .log
        .wait_for(from, Duration::from_secs(10), |l| is_msg(l, "reloaded"));
    assert_eq!(a_of(&server, WWW), vec![NEW[0]]);
}

#[test]
fn state_naming_a_removed_phase_is_rejected_by_reload_check_and_startup() {
    let server = start(&zone_of([www()]));
    server.cli_ok(&["advance", "www", "--to", "half"]);
    assert_mixed(&server, 30);
    let state_before = state_bytes(&server).unwrap();
    let zone = server.path().join("zones").join("shift.test.toml");
    std::fs::write(&zone, zone_of([www()]).replace("\"half\"", "\"fifty\"")).unwrap();

    let err = cli_err(&server, &["reload"]);
    let state_path = state_file(&server);
    assert!(
        err.contains("reload rejected")
            && err.contains(&format!(
                "{}: service www.shift.test.: current phase \"half\" is not in the config",
                state_path.display()
            )),
        "{err}"
    );
    assert_eq!(phase(&server), "half");
    assert_mixed(&server, 30);

    let out = check_config(server.path());
    let check_err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{check_err}");
    assert!(
        check_err.contains(&state_path.display().to_string()) && check_err.contains("\"half\""),
        "{check_err}"
    );

    let dir = server.kill();
    let log = serve_must_fail(dir.path());
    let line = error_line(&log);
    assert!(
        line.contains(&format!(
            "{}: service www.shift.test.: current phase \"half\" is not in the config (phases: separate-domain, ten, fifty, cutover)",
            state_path.display()
        )),
        "{log}"
    );
    assert_eq!(
        std::fs::read(&state_path).unwrap(),
        state_before,
        "state untouched"
    );
}

#[test]
fn a_decommissioned_pool_can_then_be_removed_from_the_config() {
    let server = start(&zone_of([www()]));
    server.cli_ok(&["advance", "www", "--to", "cutover"]);
    server.cli_ok(&["decommission", "www", "old", "--force", "--reason", "done"]);
    // The migration's last step: the old pool leaves the zone file.
    let finished = zone_of([ServiceBuilder::new("www")
        .staging("www-next")
        .ttl("30s")
        .pool("new", &NEW)
        .health_none()
        .phase("cutover", &[("new", 100)])]);
    std::fs::write(server.path().join("zones/shift.test.toml"), finished).unwrap();
    let (ok, out, err) = server.cli(&["check"]);
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("warning:")
            && err.contains("decommissioned pool \"old\" is no longer in the config"),
        "{err}"
    );
    server.cli_ok(&["reload"]);
    assert_only(&server, "new", 30);
    // A reason longer than the history keeps is refused, nothing changes.
    let long = "x".repeat(2000);
    let err = cli_err(
        &server,
        &["endpoint", "disable", "www", NEW[0], "--reason", &long],
    );
    assert!(err.contains("at most 1024"), "{err}");
    assert!(
        !status(&server)["pools"][0]["endpoints"][0]["disabled"]
            .as_bool()
            .unwrap()
    );
}

// ------------------------------------------------------- status is the truth

/// Two single-endpoint pools checked over HTTP (rise 1, fall 1) on the
/// two backends, which must share a port.
fn checked_pools(old: &Backend, new: &Backend) -> ServiceBuilder {
    let port = old.addr.port();
    assert_eq!(new.addr.port(), port);
    let health = http_check(port, "/", "200ms", "150ms");
    www()
        .pool_with_health("old", &[old.addr.ip().to_string()], &health)
        .pool_with_health("new", &[new.addr.ip().to_string()], &health)
}

/// Polls `status www --json` until `pred` holds; returns that status.
fn status_until(server: &Server, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    poll(Duration::from_secs(10), Duration::from_millis(50), || {
        let st = status(server);
        pred(&st).then_some(st)
    })
    .unwrap_or_else(|| panic!("status never showed {what}: {}", status(server)))
}

/// The status table line of a pool.
fn pool_line(human: &str, pool: &str) -> String {
    human
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{pool} ")))
        .unwrap_or_else(|| panic!("no line for pool {pool}:\n{human}"))
        .to_string()
}

#[test]
fn status_shows_fail_open_when_every_endpoint_is_down() {
    let old = Backend::http("127.0.0.4:0");
    let new = Backend::http(&format!("127.0.0.5:{}", old.addr.port()));
    old.set(Behaviour::status(503));
    new.set(Behaviour::status(503));
    let server = start(&zone_of([checked_pools(&old, &new)]));
    let (o, n) = (["127.0.0.4"], ["127.0.0.5"]);
    // Everything down: the main name fails open with old, the weighted pool.
    for _ in 0..20 {
        assert_eq!(pool_of(&www_a(&server, 30), &o, &n), "old");
    }
    let st = status(&server);
    assert_eq!(st["fail_open"], true, "{st}");
    assert_eq!(st["staging_fail_open"], true, "{st}");
    assert_eq!(pool(&st, "old")["role"], "fail-open", "{st}");
    assert_eq!(
        pool(&st, "old")["roles"],
        serde_json::json!({"A": "fail-open"})
    );
    assert_eq!(pool(&st, "new")["role"], "standby", "{st}");
    let human = server.cli_ok(&["status", "www"]);
    assert!(
        human.contains("FAIL-OPEN  no endpoint is usable"),
        "{human}"
    );
    let line = pool_line(&human, "old");
    assert!(
        line.contains("FAIL-OPEN") && !line.contains("not answered"),
        "{human}"
    );

    // Old comes back: normal answers, no fail-open mark for the main name;
    // the staging name (new only) still fails open.
    old.set(Behaviour::ok());
    let st = status_until(&server, "old healthy", |st| st["fail_open"] == false);
    assert_eq!(pool(&st, "old")["role"], "weighted");
    assert_eq!(st["staging_fail_open"], true);
    let human = server.cli_ok(&["status", "www"]);
    assert!(!human.contains("FAIL-OPEN  no endpoint"), "{human}");
    assert!(
        pool_line(&human, "old").contains("receiving its weight"),
        "{human}"
    );
    new.set(Behaviour::ok());
    status_until(&server, "new healthy", |st| {
        st["staging_fail_open"] == false
    });
}

#[test]
fn status_names_the_standby_that_answers_when_the_weighted_pool_is_disabled() {
    let server = start(&zone_of([www()]));
    server.cli_ok(&["advance", "www", "--to", "cutover"]);
    server.cli_ok(&["endpoint", "disable", "www", NEW[0]]);
    server.cli_ok(&["endpoint", "disable", "www", NEW[1], "--force"]);
    assert_only(&server, "old", 30);
    let st = status(&server);
    let old = pool(&st, "old");
    assert_eq!(old["role"], "standby-answering", "{st}");
    assert_eq!(old["drained_at_ms"], Value::Null, "old is answered: {st}");
    assert_eq!(pool(&st, "new")["role"], "unusable", "{st}");
    assert_eq!(st["fail_open"], false);
    let human = server.cli_ok(&["status", "www"]);
    let line = pool_line(&human, "old");
    assert!(
        line.contains("STANDBY ANSWERING") && !line.contains("draining"),
        "{human}"
    );
    assert!(
        pool_line(&human, "new").contains("not answered: no usable endpoint"),
        "{human}"
    );
}

/// `shares[family]` of a status as ([(pool, percent)], NODATA percent).
fn shares_of(st: &Value, key: &str, family: &str) -> (Vec<(String, u32)>, u32) {
    let f = &st[key][family];
    let pct = |v: &Value| (v.as_f64().unwrap() * 100.0).round() as u32;
    let pools = f["pools"]
        .as_array()
        .unwrap_or_else(|| panic!("no {key}.{family} in {st}"))
        .iter()
        .map(|p| (p["pool"].as_str().unwrap().to_string(), pct(&p["share"])))
        .collect();
    (pools, pct(&f["nodata"]))
}

fn shares(pools: &[(&str, u32)], nodata: u32) -> (Vec<(String, u32)>, u32) {
    (
        pools.iter().map(|(p, x)| (p.to_string(), *x)).collect(),
        nodata,
    )
}

#[test]
fn status_shows_the_effective_share_per_family() {
    // old has only IPv4, new IPv4 and IPv6. The weights govern the name:
    // in separate-domain new is a standby for both families, so AAAA is
    // NODATA (the drawn pool, old, has no IPv6 address).
    let server = start(&zone_of([www()
        .pool("old", &[OLD[0]])
        .pool("new", &[NEW[0], "2001:db8::20"])]));
    let m = server.query(WWW, RecordType::AAAA);
    assert!(m.answers.is_empty(), "{m}");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    let st = status(&server);
    let new = pool(&st, "new");
    assert_eq!(new["role"], "standby", "{st}");
    assert_eq!(
        new["roles"],
        serde_json::json!({"A": "standby", "AAAA": "standby"})
    );
    assert_eq!(
        pool(&st, "old")["roles"],
        serde_json::json!({"A": "weighted"})
    );
    assert_eq!(shares_of(&st, "shares", "A"), shares(&[("old", 100)], 0));
    assert_eq!(shares_of(&st, "shares", "AAAA"), shares(&[], 100));
    assert_eq!(st["staging_pool"], "new");
    assert_eq!(
        shares_of(&st, "staging_shares", "AAAA"),
        shares(&[("new", 100)], 0)
    );

    // Into ten (90/10): advance, its dry run too, warns what
    // IPv6-preferring clients will see; status shows the arithmetic.
    for args in [&["advance", "www", "--dry-run"][..], &["advance", "www"]] {
        let (ok, _, err) = server.cli(args);
        assert!(ok, "{err}");
        assert!(
            err.contains("warning: phase \"ten\" weights pools of different address families (old: IPv4 only, new: IPv4 and IPv6)")
                && err.contains("AAAA answers new 10%, NODATA 90%")
                && err.contains("IPv6-preferring clients reach old 81%, new 19%"),
            "{args:?}: {err}"
        );
    }
    let st = status(&server);
    assert_eq!(
        shares_of(&st, "shares", "A"),
        shares(&[("old", 90), ("new", 10)], 0)
    );
    assert_eq!(shares_of(&st, "shares", "AAAA"), shares(&[("new", 10)], 90));
    let human = server.cli_ok(&["status", "www"]);
    assert!(
        human.contains("  answers  A: old 90%, new 10%; AAAA: new 10%, NODATA 90%"),
        "{human}"
    );
    assert!(
        human.contains("  staging  www-next.shift.test. (pool new)  A: new 100%; AAAA: new 100%"),
        "{human}"
    );
    // Both outcomes of AAAA really occur, and nothing else.
    let mut seen = BTreeSet::new();
    for _ in 0..MIX_QUERIES {
        let got = answers(&server.query(WWW, RecordType::AAAA));
        assert!(got.is_empty() || got == ["2001:db8::20"], "{got:?}");
        seen.insert(got.is_empty());
    }
    assert_eq!(seen.len(), 2, "AAAA answers new and NODATA");

    // Back to separate-domain: AAAA never answers new again.
    server.cli_ok(&["rollback", "www"]);
    for _ in 0..MIX_QUERIES {
        let m = server.query(WWW, RecordType::AAAA);
        assert!(m.answers.is_empty(), "{m}");
    }
    assert_eq!(
        shares_of(&status(&server), "shares", "AAAA"),
        shares(&[], 100)
    );
}

/// The shipped example zone with its health checks replaced by `kind =
/// "none"` (always healthy), so that no check result can make a standby
/// answer while the test looks.
fn shipped_example_unchecked() -> String {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("zones/shift.example.com.toml"),
    )
    .unwrap();
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if skipping && line.starts_with('[') {
            skipping = false;
        }
        if line.trim() == "[service.health]" {
            out.push_str("[service.health]\nkind = \"none\"\n\n");
            skipping = true;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert_eq!(out.matches("kind = \"none\"").count(), 2, "{out}");
    out
}

#[test]
fn shipped_example_aaaa_follows_the_phase_of_the_name() {
    // www: old = two IPv4 addresses, new = two IPv4 and ::1. AAAA answers
    // new only in phases that give new weight, in proportion to it, and
    // NODATA otherwise; never new after a rollback to separate-domain.
    let server = start(&shipped_example_unchecked());
    const WWW_EX: &str = "www.shift.example.com.";
    const API_EX: &str = "api.shift.example.com.";
    const N: usize = 1_000;
    // The share of AAAA queries for www answered ::1 (the rest must be
    // NODATA), and for api answered the CNAME (the rest NODATA).
    let aaaa_share = |name: &str, want: &str| -> f64 {
        let mut hits = 0;
        for _ in 0..N {
            let m = server.query(name, RecordType::AAAA);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
            match answers(&m).as_slice() {
                [] => assert!(
                    m.authorities
                        .iter()
                        .any(|r| r.record_type() == RecordType::SOA),
                    "NODATA with its SOA: {m}"
                ),
                [a] if a == want => hits += 1,
                other => panic!("{name} AAAA answered {other:?}"),
            }
        }
        hits as f64 / N as f64
    };
    // Over N = 1,000 draws a share p has sd <= 0.016; 0.06 is over 3.8 sd
    // (1e-4 per check), and a share of 0 or 1 is exact.
    let near = |got: f64, want: f64| {
        if want == 0.0 || want == 1.0 {
            got == want
        } else {
            (got - want).abs() <= 0.06
        }
    };
    let status_of = |service: &str| -> Value {
        let v: Value =
            serde_json::from_str(&server.cli_ok(&["status", service, "--json"])).unwrap();
        v["services"][0].clone()
    };
    // (phase of www, its AAAA share of ::1, api's AAAA share of its CNAME)
    let phases = [
        ("separate-domain", 0.0, 0.0),
        ("round-robin", 0.1, 0.5),
        ("half", 0.5, 0.5),
        ("cutover", 1.0, 1.0),
    ];
    for (i, (phase, www_new, api_new)) in phases.iter().enumerate() {
        if i > 0 {
            server.cli_ok(&["advance", "www", "--to", phase, "--force"]);
            let api_phase = match *phase {
                "half" => None,
                p => Some(p),
            };
            if let Some(p) = api_phase {
                server.cli_ok(&["advance", "api", "--to", p]);
            }
        }
        let got = aaaa_share(WWW_EX, "::1");
        assert!(near(got, *www_new), "{phase}: www AAAA ::1 share {got}");
        let got = aaaa_share(API_EX, "api-lb.k8s.example.net.");
        assert!(near(got, *api_new), "{phase}: api AAAA CNAME share {got}");
        // status says the same, exactly.
        let st = status_of("www");
        let pct = (www_new * 100.0).round() as u32;
        let new_part: Vec<(&str, u32)> = if pct > 0 { vec![("new", pct)] } else { vec![] };
        assert_eq!(
            shares_of(&st, "shares", "AAAA"),
            shares(&new_part, 100 - pct),
            "{phase}: {st}"
        );
        // www-next always answers new, ::1 included.
        assert_eq!(
            answers(&server.query("www-next.shift.example.com.", RecordType::AAAA)),
            ["::1"]
        );
    }
    // Rollbacks to a phase without weight for new: AAAA never answers it.
    server.cli_ok(&["rollback", "www", "--to", "separate-domain"]);
    server.cli_ok(&["rollback", "api", "--to", "separate-domain"]);
    assert_eq!(aaaa_share(WWW_EX, "::1"), 0.0);
    assert_eq!(aaaa_share(API_EX, "api-lb.k8s.example.net."), 0.0);
    assert_eq!(
        shares_of(&status_of("www"), "shares", "AAAA"),
        shares(&[], 100)
    );
}

#[test]
fn disabling_a_pools_last_endpoint_of_a_family_needs_force_and_then_gives_nodata() {
    let server = start(&zone_of([www()
        .initial_phase("ten")
        .pool("old", &[OLD[0]])
        .pool("new", &[NEW[0], "2001:db8::20"])]));
    let before = state_bytes(&server);
    let err = cli_err(&server, &["endpoint", "disable", "www", "2001:db8::20"]);
    assert!(
        err.contains("which answers AAAA for www.shift.test. now, without a usable endpoint"),
        "{err}"
    );
    assert_eq!(state_bytes(&server), before, "refusals write nothing");
    server.cli_ok(&["endpoint", "disable", "www", "2001:db8::20", "--force"]);
    // new keeps its weight (its IPv4 endpoint is usable): its AAAA draws
    // are NODATA now, as are old's.
    for _ in 0..MIX_QUERIES {
        let m = server.query(WWW, RecordType::AAAA);
        assert!(m.answers.is_empty(), "{m}");
    }
    let st = status(&server);
    assert_eq!(pool(&st, "new")["role"], "weighted", "{st}");
    assert_eq!(shares_of(&st, "shares", "AAAA"), shares(&[], 100));
    assert_eq!(
        shares_of(&st, "shares", "A"),
        shares(&[("old", 90), ("new", 10)], 0)
    );
}

#[test]
fn decommission_never_leaves_the_staging_name_empty() {
    // The case: api's new pool is a host name answered by the
    // staging name api-next; in separate-domain it has weight 0.
    let zone = zone_of([
        www(),
        ServiceBuilder::to_host("api", "192.0.2.30", "lb.example.net.").staging("api-next"),
    ]);
    let server = start(&zone);
    let before = state_bytes(&server);
    for (service, staging) in [("www", "www-next"), ("api", "api-next")] {
        for args in [
            &["decommission", service, "new"][..],
            &["decommission", service, "new", "--force"],
        ] {
            let err = cli_err(&server, args);
            assert!(
                err.contains(&format!(
                    "pool \"new\" is what the staging name {staging}.shift.test. answers"
                )) && err.contains("empty NOERROR"),
                "{args:?}: {err}"
            );
        }
    }
    assert_eq!(state_bytes(&server), before, "refusals write nothing");
    let m = server.query("api-next.shift.test.", RecordType::A);
    assert_eq!(answers(&m), ["lb.example.net."], "{m}");
    let api: Value = serde_json::from_str(&server.cli_ok(&["status", "api", "--json"])).unwrap();
    let api = &api["services"][0];
    assert_eq!(api["staging_pool"], "new", "{api}");
    assert_eq!(
        shares_of(api, "staging_shares", "A"),
        shares(&[("new", 100)], 0)
    );

    // A state from before this rule (new decommissioned, then a staging
    // name added): status says what the staging name answers: nothing.
    let server = start(&zone_of([www().unset("staging")]));
    server.cli_ok(&["decommission", "www", "new", "--force"]);
    std::fs::write(
        server.path().join("zones/shift.test.toml"),
        zone_of([www()]),
    )
    .unwrap();
    server.cli_ok(&["reload"]);
    let m = server.query("www-next.shift.test.", RecordType::A);
    assert!(m.answers.is_empty(), "{m}");
    let st = status(&server);
    assert_eq!(shares_of(&st, "staging_shares", "A"), shares(&[], 100));
    let human = server.cli_ok(&["status", "www"]);
    assert!(
        human.contains("staging  www-next.shift.test. (pool new)  A: NODATA 100%; AAAA: NODATA 100%  ANSWERS NOTHING"),
        "{human}"
    );
}

#[test]
fn status_shows_the_hold_left_and_pools_in_configuration_order() {
    let zone = held_half();
    // The file lists old before new, which is not alphabetical.
    let server = start(&zone);
    let t0 = now_ms();
    let all = status_all(&server);
    let st = &all["services"][0];
    let names: Vec<&str> = st["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pool"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["old", "new"]);
    let until = st["hold_until_ms"].as_u64().expect("hold_until_ms");
    let left = until.saturating_sub(all["now_ms"].as_u64().unwrap());
    assert!(
        left > 3_500_000 && left <= 3_600_000 && until <= t0 + 3_600_000,
        "{st}"
    );
    let human = server.cli_ok(&["status", "www"]);
    let hold = human
        .lines()
        .find(|l| l.trim_start().starts_with("hold"))
        .unwrap_or_else(|| panic!("no hold line:\n{human}"));
    assert!(hold.contains("left, until"), "{hold}");
    let old_at = human.find(&pool_line(&human, "old")).unwrap();
    let new_at = human.find(&pool_line(&human, "new")).unwrap();
    assert!(old_at < new_at, "{human}");
    // A phase without a hold has none.
    server.cli_ok(&["advance", "www", "--force"]);
    assert_eq!(status(&server)["hold_until_ms"], Value::Null);
    assert!(!server.cli_ok(&["status", "www"]).contains("  hold "));
}

#[test]
fn status_watch_redraws_in_place_on_a_terminal_until_its_count() {
    let server = start(&zone_of([www()]));
    // Into a pipe: one redraw after the other, without escape sequences.
    let out = server.cli_ok(&[
        "status",
        "www",
        "--watch",
        "--interval",
        "200ms",
        "--count",
        "3",
    ]);
    assert!(!out.contains('\x1b'), "{out:?}");
    assert_eq!(
        out.matches("every 200ms, Ctrl-C to stop").count(),
        3,
        "{out}"
    );
    assert_eq!(
        out.matches("  phase    separate-domain").count(),
        3,
        "{out}"
    );
    // On a terminal (script(1) gives it one): each redraw clears the screen.
    let command = format!(
        "{} --config {} --control http://{} status www --watch --interval 200ms --count 3",
        bin(),
        server.path().join("dnsshift.toml").display(),
        server.control.unwrap()
    );
    let tty = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    assert!(tty.status.success(), "{tty:?}");
    let out = String::from_utf8_lossy(&tty.stdout);
    assert_eq!(out.matches("\x1b[H\x1b[2J").count(), 3, "{out:?}");
    assert!(out.starts_with("\x1b[H\x1b[2J"), "{out:?}");
    let (ok, _, err) = server.cli(&["status", "--watch", "--interval", "10ms", "--count", "1"]);
    assert!(!ok && err.contains("at least 200ms"), "{err}");
}

// ------------------------------------------- overrides cannot break answers

#[test]
fn decommissioning_a_pool_that_answers_is_refused_even_forced() {
    let server = start(&zone_of([www()]));
    server.cli_ok(&["advance", "www", "--to", "cutover"]);
    let before = state_bytes(&server);
    let err = cli_err(&server, &["decommission", "www", "new", "--force"]);
    assert!(err.contains("pool \"new\" has weight 100"), "{err}");
    assert_eq!(state_bytes(&server), before);
    assert_only(&server, "new", 30);
    // Through the API: a refusal, 409.
    let token = std::fs::read_to_string(server.path().join("state/control.token")).unwrap();
    let (code, body) = http(
        server.control.unwrap(),
        "POST",
        "/v1/services/www/pools/new/decommission",
        Some(&format!("Bearer {}", token.trim())),
        "{\"force\": true}",
    );
    assert_eq!(code, 409, "{body}");

    // A standby that answers because the weighted pool is out: refused too.
    server.cli_ok(&["endpoint", "disable", "www", NEW[0]]);
    server.cli_ok(&["endpoint", "disable", "www", NEW[1], "--force"]);
    assert_only(&server, "old", 30);
    let err = cli_err(&server, &["decommission", "www", "old", "--force"]);
    assert!(
        err.contains("pool \"old\" answers A queries now (as standby"),
        "{err}"
    );
    assert_only(&server, "old", 30);
    assert_eq!(
        history(&server).last().unwrap().0,
        "disable",
        "refusals are not recorded"
    );
}

#[test]
fn recommission_undoes_a_decommission_and_transitions_name_it() {
    // No staging name: with one, new could not go (see
    // decommission_never_leaves_the_staging_name_empty).
    let server = start(&zone_of([www().unset("staging")]));
    // new has weight 0 in separate-domain: it may go.
    server.cli_ok(&["decommission", "www", "new", "--force"]);
    let before = state_bytes(&server);
    for args in [
        &["advance", "www"][..],
        &["advance", "www", "--force"],
        &["advance", "www", "--to", "cutover", "--force", "--dry-run"],
    ] {
        let err = cli_err(&server, args);
        assert!(
            err.contains("pool \"new\" would receive traffic in phase")
                && err.contains("is decommissioned")
                && err.contains("`dnsshift recommission www new`"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(state_bytes(&server), before, "refusals write nothing");
    assert_eq!(phase(&server), "separate-domain");

    let out = server.cli_ok(&["recommission", "www", "new", "--reason", "back in"]);
    assert!(out.contains("recommissioned"), "{out}");
    let st = status(&server);
    assert_eq!(pool(&st, "new")["decommissioned"], false);
    assert_eq!(pool(&st, "new")["role"], "standby");
    assert_only(&server, "old", 30);
    server.cli_ok(&["advance", "www", "--to", "cutover"]);
    assert_only(&server, "new", 30);
    let out = server.cli_ok(&["recommission", "www", "new"]);
    assert!(out.contains("was not decommissioned"), "{out}");
    let err = cli_err(&server, &["recommission", "www", "blue"]);
    assert!(err.contains("has no pool \"blue\""), "{err}");
    assert_eq!(
        history(&server),
        vec![
            ev("decommission", None, "new", None, true),
            ev("recommission", None, "new", Some("back in"), false),
            ev("advance", Some("separate-domain"), "cutover", None, false),
        ]
    );
}

#[test]
fn disabling_the_last_usable_endpoint_of_an_answered_pool_needs_force() {
    let zone = zone_of([
        www(),
        // A second service that answers SERVFAIL when nothing is answerable.
        ServiceBuilder::new("api")
            .staging("api-next")
            .set("on_all_down", "\"servfail\"")
            .pool("old", &[OLD[0]])
            .pool("new", &[NEW[0]])
            .health_none(),
    ]);
    let server = start(&zone);
    let token = std::fs::read_to_string(server.path().join("state/control.token")).unwrap();
    let auth = format!("Bearer {}", token.trim());

    // separate-domain: new has weight 0 but carries the staging name.
    server.cli_ok(&["endpoint", "disable", "www", NEW[0]]);
    let before = state_bytes(&server);
    let err = cli_err(&server, &["endpoint", "disable", "www", NEW[1]]);
    assert!(
        err.contains("would leave pool \"new\", which answers A for www-next.shift.test. now, without a usable endpoint")
            && err.contains("--force"),
        "{err}"
    );
    let (code, body) = http(
        server.control.unwrap(),
        "POST",
        &format!("/v1/services/www/endpoints/{}/disable", NEW[1]),
        Some(&auth),
        "{}",
    );
    assert_eq!(code, 409, "{body}");
    assert_eq!(state_bytes(&server), before, "refusals write nothing");
    let staging = answers(&server.query("www-next.shift.test.", RecordType::A));
    assert_eq!(staging, vec![NEW[1].to_string()]);

    // The main name in cutover: old may lose one endpoint, not both.
    server.cli_ok(&["endpoint", "enable", "www", NEW[0]]);
    server.cli_ok(&["advance", "www", "--to", "half"]);
    server.cli_ok(&["endpoint", "disable", "www", OLD[0]]);
    let err = cli_err(&server, &["endpoint", "disable", "www", OLD[1]]);
    assert!(
        err.contains("pool \"old\", which answers A for www.shift.test. now"),
        "{err}"
    );
    assert_mixed(&server, 30);

    // Forced, the staging name never answers an empty NOERROR: nothing is
    // usable, so it follows on_all_down; fail-open answers the disabled
    // endpoints.
    server.cli_ok(&["endpoint", "disable", "www", NEW[0]]);
    server.cli_ok(&["endpoint", "disable", "www", NEW[1], "--force"]);
    assert!(history(&server).last().unwrap().4, "recorded as forced");
    for _ in 0..10 {
        let m = server.query("www-next.shift.test.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(pool_of(&answers(&m), &OLD, &NEW), "new", "{m}");
    }
    assert_eq!(status(&server)["staging_fail_open"], true);
    // ... and on_all_down = "servfail" answers SERVFAIL.
    server.cli_ok(&["endpoint", "disable", "api", NEW[0], "--force"]);
    let m = server.query("api-next.shift.test.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{m}");
    // Re-enabled: answered at once.
    server.cli_ok(&["endpoint", "enable", "api", NEW[0]]);
    let m = server.query("api-next.shift.test.", RecordType::A);
    assert_eq!(answers(&m), vec![NEW[0].to_string()]);
}

/// A single host answers `_dnsshift.<origin>` TXT too (AA, TTL 0): the
/// changes committed since it started, its `server_id`, and the phase of
/// every service of the zone; the status has no `hosts` list.
#[test]
fn single_host_tells_its_state_in_the_dnsshift_txt() {
    let zone = zone_of([www()]);
    let setup = common::cluster::host_setup(
        &[("shift.test.toml", zone.as_str())],
        "127.0.0.1",
        "solo-7",
        "",
        "",
    );
    let server = Server::start(setup.dir);
    let marker = || {
        common::cluster::Marker::parse(&server.query("_dnsshift.shift.test.", RecordType::TXT))
            .unwrap()
    };
    let m = marker();
    assert_eq!((m.epoch, m.node.as_str()), (0, "solo-7"), "{m:?}");
    assert_eq!(
        m.phases.get("www").map(String::as_str),
        Some("separate-domain")
    );
    let soa_serial = |server: &Server| match server
        .query("shift.test.", RecordType::SOA)
        .answers
        .first()
        .map(|r| &r.data)
    {
        Some(hickory_proto::rr::RData::SOA(soa)) => soa.serial,
        other => panic!("no SOA answer: {other:?}"),
    };
    let serial = soa_serial(&server);
    server.cli_ok(&["advance", "www", "--to", "half", "--actor", "erin"]);
    let m = marker();
    assert_eq!(m.epoch, 1, "{m:?}");
    assert_eq!(m.phases.get("www").map(String::as_str), Some("half"));
    let st = status_all(&server);
    assert!(st.get("hosts").is_none());
    // The zones' digest, as the TXT says it; the change, with who and where.
    assert_eq!(st["zones"], m.zones.as_str(), "{st}");
    assert_eq!(m.zones.len(), 16, "{m:?}");
    let change = &st["services"][0]["last_change"];
    assert_eq!(
        (&change["node"], &change["actor"]),
        (&"solo-7".into(), &"erin".into()),
        "{st}"
    );
    // A reload that changes a static record raises the serial and the digest.
    let changed = zone.replace("127.0.0.53", "127.0.0.54");
    assert_ne!(changed, zone, "the zone has the record");
    std::fs::write(server.path().join("zones/shift.test.toml"), changed).unwrap();
    server.cli_ok(&["reload"]);
    assert!(soa_serial(&server) > serial);
    assert_ne!(marker().zones, m.zones);
}
