//! Automatic progression end to end (issue 17), real parts only: dnsshift
//! answers through real `unbound` resolvers, clients resolve through them
//! and send requests to the stand-in load balancers of
//! `tests/common/prom.rs`, Debian's Prometheus scrapes their counters every
//! second, and dnsshift asks Prometheus. Intervals of 2 s and a TTL of 1 s
//! keep every run within tens of seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auto_kit;
mod common;
mod rehearsal_kit;

use std::time::{Duration, Instant};

use auto_kit::*;
use common::prom::{Clients, Hooks, LoadBalancers, Prometheus};
use common::*;
use rehearsal_kit::{NAME, Unbound, start_unbound};

/// Everything a run needs, stopped when dropped.
struct Run {
    lbs: LoadBalancers,
    prometheus: Prometheus,
    hooks: Hooks,
    server: Server,
    _resolvers: Vec<Unbound>,
    clients: Vec<Clients>,
}

impl Run {
    /// Starts every part; with `traffic`, clients send requests.
    fn start(traffic: bool) -> Run {
        let lbs = LoadBalancers::start(&[("old", &[OLD_IP]), ("new", &[NEW_IP])]);
        let prometheus = Prometheus::start(&lbs.scrape_targets());
        let hooks = Hooks::start();
        let server = Setup::new(
            &[("shift.toml", &zone(&prometheus.url(), &hooks.url()))],
            "",
        )
        .start();
        let resolvers: Vec<Unbound> = (0..RESOLVERS)
            .map(|i| start_unbound(&format!("127.0.10.{}", i + 1), &[server.dns]))
            .collect();
        let clients = if traffic {
            resolvers
                .iter()
                .map(|r| Clients::start(r.addr, NAME, lbs.port(), 2, RATE, RUN_LIMIT))
                .collect()
        } else {
            Vec::new()
        };
        Run {
            lbs,
            prometheus,
            hooks,
            server,
            _resolvers: resolvers,
            clients,
        }
    }

    fn service(&self) -> serde_json::Value {
        let out = self.server.cli_ok(&["status", "www", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["services"][0].clone()
    }

    /// Waits for `pred` on the service's status; panics with it after `limit`.
    fn await_status(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        poll(limit, Duration::from_millis(100), || {
            let s = self.service();
            pred(&s).then_some(s)
        })
        .unwrap_or_else(|| panic!("{what} not within {limit:?}: {}", self.service()))
    }

    /// Waits until automation pauses, in canary (the weights unchanged),
    /// saying `why`.
    fn await_paused_in_canary(&self, why: &str) {
        let s = self.await_status("paused", Duration::from_secs(30), |s| {
            s["auto"]["state"] == "paused"
        });
        assert_eq!(s["phase"], "canary", "weights unchanged, never advanced");
        assert!(s["auto"]["why"].as_str().unwrap().contains(why), "{s}");
    }

    fn history(&self) -> Vec<serde_json::Value> {
        let out = self.server.cli_ok(&["history", "www", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["events"].as_array().unwrap().clone()
    }

    /// Requests the clients sent to `ip` so far.
    fn requests_to(&self, ip: &str) -> u64 {
        self.clients.iter().map(|c| c.snapshot().to(ip)).sum()
    }
}

#[test]
fn a_healthy_run_reaches_cutover_by_itself_never_early() {
    let run = Run::start(true);
    let started = Instant::now();
    run.server
        .cli_ok(&["auto", "start", "www", "--reason", "e2e"]);
    let s = run.await_status("done", RUN_LIMIT, |s| s["auto"]["state"] == "done");
    assert_eq!(s["phase"], "cutover");
    let took = started.elapsed();
    let h = run.history();
    let t = transitions(&h);
    let steps: Vec<(&str, &str)> = t
        .iter()
        .map(|(_, f, to, _)| (f.as_str(), to.as_str()))
        .collect();
    assert_eq!(
        steps,
        [("old", "canary"), ("canary", "half"), ("half", "cutover")],
        "{h:?}"
    );
    // No step before its phase's minimum time (history counts seconds).
    assert!(t[1].3 - t[0].3 >= 8 && t[2].3 - t[1].3 >= 8, "{t:?}");
    // Each of them on two passes, with the measurements that justified it.
    for e in h
        .iter()
        .filter(|e| e["actor"] == "auto" && e["action"] == "advance")
        .skip(1)
    {
        let reason = e["reason"].as_str().unwrap();
        assert!(reason.starts_with("2 consecutive passes"), "{reason}");
        assert!(reason.contains("error-ratio=0 (<= 0.05, pass)"), "{reason}");
    }
    // Webhooks: every advance and the completion.
    let bodies = run.hooks.await_received(3, Duration::from_secs(10));
    let events: Vec<&str> = bodies.iter().filter_map(|b| b["event"].as_str()).collect();
    assert_eq!(
        events.iter().filter(|e| **e == "advance").count(),
        3,
        "{events:?}"
    );
    // New answered real requests by the end.
    assert!(run.requests_to(NEW_IP) > 0);
    println!("healthy run: cutover after {took:?}: {t:?}");
}

#[test]
fn errors_in_new_during_the_second_step_bring_every_resolver_back_to_old() {
    let run = Run::start(true);
    run.server.cli_ok(&["auto", "start", "www"]);
    run.await_status("half", RUN_LIMIT, |s| s["phase"] == "half");
    run.lbs.set_error_ratio("new", 0.5);
    let injected = Instant::now();
    let s = run.await_status("failed", Duration::from_secs(30), |s| {
        s["auto"]["state"] == "failed"
    });
    assert_eq!(s["phase"], "old");
    let rolled_back = injected.elapsed();
    // Every resolver back on old: no client request reaches new for
    // two TTLs after the rollback's answers expired.
    let quiet_for = 2 * TTL + Duration::from_secs(1);
    let mut last = (run.requests_to(NEW_IP), Instant::now());
    let back = poll(Duration::from_secs(20), Duration::from_millis(100), || {
        let n = run.requests_to(NEW_IP);
        if n != last.0 {
            last = (n, Instant::now());
        }
        (last.1.elapsed() >= quiet_for).then_some(last.1)
    })
    .expect("clients kept reaching new");
    let all_old = back.duration_since(injected);
    // failures × interval + interval + TTL, plus one scrape (1 s) and
    // unbound's whole-second TTL rounding (1 s).
    let bound = INTERVAL * FAILURE_LIMIT + INTERVAL + TTL + Duration::from_secs(2);
    assert!(
        all_old <= bound,
        "back on old after {all_old:?} (bound {bound:?}); rollback after {rolled_back:?}"
    );
    let h = run.history();
    let rb = h.iter().rev().find(|e| e["action"] == "rollback").unwrap();
    assert_eq!(
        (rb["actor"].as_str(), rb["from"].as_str(), rb["to"].as_str()),
        (Some("auto"), Some("half"), Some("old"))
    );
    let reason = rb["reason"].as_str().unwrap();
    assert!(
        reason.contains("consecutive failures") && reason.contains("above the max 0.05"),
        "{reason}"
    );
    println!("rollback {rolled_back:?} after the injection; every client on old after {all_old:?}");
}

#[test]
fn prometheus_stopped_mid_step_pauses_then_resumes_without_skip_or_repeat() {
    let mut run = Run::start(true);
    run.server.cli_ok(&["auto", "start", "www"]);
    run.await_status("canary", RUN_LIMIT, |s| s["phase"] == "canary");
    run.prometheus.stop();
    run.await_paused_in_canary("provider errors");
    run.prometheus.restart();
    run.server.cli_ok(&["auto", "resume", "www"]);
    let s = run.await_status("done", RUN_LIMIT, |s| s["auto"]["state"] == "done");
    assert_eq!(s["phase"], "cutover");
    let t = transitions(&run.history());
    let steps: Vec<(&str, &str)> = t
        .iter()
        .map(|(_, f, to, _)| (f.as_str(), to.as_str()))
        .collect();
    assert_eq!(
        steps,
        [("old", "canary"), ("canary", "half"), ("half", "cutover")]
    );
}

#[test]
fn no_traffic_to_new_holds_and_then_pauses() {
    let run = Run::start(false);
    run.server.cli_ok(&["auto", "start", "www"]);
    run.await_status("canary", RUN_LIMIT, |s| s["phase"] == "canary");
    let s = run.await_status("holding on the volume gate", Duration::from_secs(20), |s| {
        s["auto"]["state"] == "holding" && s["auto"]["inconclusive"].as_u64() >= Some(1)
    });
    assert_eq!(s["phase"], "canary");
    run.await_paused_in_canary("6 consecutive inconclusive");
    let t = transitions(&run.history());
    assert_eq!(t.len(), 1, "only old > canary: {t:?}");
}
