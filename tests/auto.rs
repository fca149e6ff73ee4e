//! Automatic progression (issue 17) through the real binary, on one host:
//! a metrics provider that cannot be reached pauses automation after
//! `error_limit` retries with the weights unchanged, never rolling back nor
//! advancing; a person's rollback pauses it and says so; the commands keep
//! the exit codes; history records the automatic changes with actor
//! `auto`; webhooks receive them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::prom::Hooks;
use common::*;

/// The analysed zone of the `check` fixtures: TTL 2 s, interval 2 s, skew
/// 1 s, error_limit 3; phases old > canary > half > cutover.
const ZONE: &str = include_str!("fixtures/analysis-zone.toml");

/// Bound on waiting for automation to reach a state.
const AUTO_TIMEOUT: Duration = Duration::from_secs(30);

/// A loopback port nothing listens on: every query is refused.
fn refused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The zone with the provider at `provider` and webhooks to `hook`.
fn zone(provider: &str, hook: &str) -> String {
    ZONE.replace("http://127.0.0.1:9090", provider)
        .replace("http://127.0.0.1:9000/hook", hook)
}

/// `status www --json`'s service.
fn service(server: &Server) -> serde_json::Value {
    let out = server.cli_ok(&["status", "www", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["services"][0].clone()
}

/// Waits until the automation's state is `state`; returns the service.
fn await_auto(server: &Server, state: &str) -> serde_json::Value {
    poll(AUTO_TIMEOUT, Duration::from_millis(200), || {
        let s = service(server);
        (s["auto"]["state"] == state).then_some(s)
    })
    .unwrap_or_else(|| panic!("automation never became {state}: {}", service(server)))
}

fn history(server: &Server) -> Vec<serde_json::Value> {
    let out = server.cli_ok(&["history", "www", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["events"].as_array().unwrap().clone()
}

#[test]
fn an_unreachable_provider_pauses_with_the_weights_unchanged() {
    let hooks = Hooks::start();
    let provider = format!("http://127.0.0.1:{}", refused_port());
    let server = Setup::new(&[("shift.toml", &zone(&provider, &hooks.url()))], "").start();

    // `old` is a manual gate: automation holds there; a person's advance
    // out of it is their part of the run and leaves it running.
    let out = server.cli_ok(&["auto", "start", "www", "--reason", "go"]);
    assert!(out.contains("started in phase \"old\""), "{out}");
    let s = await_auto(&server, "holding");
    assert!(
        s["auto"]["why"].as_str().unwrap().contains("manual gate"),
        "{s}"
    );
    let (ok, _, err) = server.cli(&["advance", "www"]);
    assert!(ok, "{err}");
    assert!(!err.contains("paused"), "{err}");
    let entered = Instant::now();

    // canary: settle 3 s (TTL 2 s + skew 1 s) and one window (2 s) before
    // the first query; then errors at once, after 1 s and after 2 s more:
    // the third pauses.
    let s = await_auto(&server, "paused");
    let took = entered.elapsed();
    assert!(took >= Duration::from_secs(5), "paused after {took:?}");
    assert_eq!(s["phase"], "canary", "{s}");
    let why = s["auto"]["why"].as_str().unwrap();
    assert!(why.contains("3 consecutive provider errors"), "{why}");
    let pools: Vec<(String, u64)> = s["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["pool"].as_str().unwrap().to_string(),
                p["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(pools, [("old".into(), 90), ("new".into(), 10)]);
    // Every check says why: the provider's error.
    let checks = s["auto"]["checks"].as_array().unwrap();
    assert!(!checks.is_empty());
    assert!(checks.iter().all(|c| c["verdict"] == "error"), "{checks:?}");

    // History: the start by a person, the advance, the pause by `auto`.
    let h = history(&server);
    let last = h.last().unwrap();
    assert_eq!(last["action"], "auto");
    assert_eq!(last["to"], "paused");
    assert_eq!(last["actor"], "auto");
    assert!(
        h.iter().all(|e| e["action"] != "rollback"),
        "errors never roll back: {h:?}"
    );

    // The webhook receives the pause.
    let body = poll(AUTO_TIMEOUT, Duration::from_millis(100), || {
        hooks.received().into_iter().find(|b| b["event"] == "pause")
    })
    .expect("no pause webhook");
    assert_eq!(body["service"], "www.shift.test.");
    assert_eq!(body["from"], "canary");

    // /metrics counts the errors per check.
    let control = server.control.unwrap();
    let (_, text) = http_get(control, "/metrics");
    assert!(
        text.lines().any(|l| l.starts_with(
            "dnsshift_analysis_check_verdicts_total{service=\"www.shift.test.\",check=\"error-ratio\",verdict=\"error\"} 3"
        )),
        "{text}"
    );

    // The dry run asks the same provider and exits 1 on its errors.
    let out = server.cli_command(&["analysis", "www"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("query: sum(rate(lb_requests_total{pool=\"new\""),
        "{stdout}"
    );

    // Resumed, it retries the same phase.
    server.cli_ok(&["auto", "resume", "www"]);
    let s = service(&server);
    assert_eq!(
        (
            s["phase"].as_str(),
            s["auto"]["state"].as_str().unwrap() != "paused"
        ),
        (Some("canary"), true),
        "{s}"
    );
}

#[test]
fn a_manual_rollback_pauses_automation_and_says_so() {
    let provider = format!("http://127.0.0.1:{}", refused_port());
    let text = zone(
        &provider,
        &format!("http://127.0.0.1:{}/hook", refused_port()),
    )
    .replace(
        "name = \"www\"\n",
        "name = \"www\"\ninitial_phase = \"half\"\n",
    );
    let server = Setup::new(&[("shift.toml", &text)], "").start();
    server.cli_ok(&["auto", "start", "www"]);
    let (ok, _, err) = server.cli(&["rollback", "www", "--reason", "by hand"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("automation of www.shift.test. paused by this manual rollback"),
        "{err}"
    );
    let s = service(&server);
    assert_eq!(s["phase"], "canary");
    assert_eq!(s["auto"]["state"], "paused");
    assert!(
        s["auto"]["why"]
            .as_str()
            .unwrap()
            .starts_with("manual rollback by "),
        "{s}"
    );
    // Nothing moves while paused.
    assert_eq!(s["auto"]["origin"], "half");
    let (ok, out, _) = server.cli(&["auto", "pause", "www"]);
    assert!(ok && out.contains("not running (paused)"), "{out}");
}

#[test]
fn auto_commands_keep_the_exit_codes() {
    let provider = format!("http://127.0.0.1:{}", refused_port());
    let plain = ZONE.split("[service.analysis]").next().unwrap().to_string()
        + "\n[[service.phase]]\nname = \"old\"\nweights = { old = 100, new = 0 }\n[[service.phase]]\nname = \"new\"\nweights = { old = 0, new = 100 }\n";
    let other = zone(
        &provider,
        &format!("http://127.0.0.1:{}/hook", refused_port()),
    )
    .replace("shift.test.", "other.test.");
    let server = Setup::new(&[("shift.toml", &plain), ("other.toml", &other)], "").start();
    // No analysis: refused (1).
    let out = server.cli_command(&["auto", "start", "www.shift.test"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no [service.analysis]"));
    // Never started: resume is refused (1) and says how to start.
    let out = server.cli_command(&["auto", "resume", "www.other.test"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("dnsshift auto start www"));
    // Unknown service: not found (1 as every refusal; the message names it).
    let out = server.cli_command(&["auto", "pause", "nosuch"]);
    assert!(!out.status.success());
    // Started twice: nothing changes, exit 0.
    server.cli_ok(&["auto", "start", "www.other.test"]);
    let out = server.cli_ok(&["auto", "start", "www.other.test"]);
    assert!(out.contains("already runs"), "{out}");
}

#[test]
fn the_readme_example_passes_check() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("## Automatic progression").unwrap()..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let block = &section[start..start + section[start..].find("```").unwrap()];
    // The example's tables inside a service with pools `old` and `new`,
    // between a first and a last phase.
    let head = ZONE.split("[service.analysis]").next().unwrap();
    let text = format!(
        "{head}[[service.phase]]\nname = \"old\"\nweights = {{ old = 100, new = 0 }}\n{block}\n[[service.phase]]\nname = \"cutover\"\nweights = {{ old = 0, new = 100 }}\n"
    )
    .replace("ttl = 2\n", "ttl = 30\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readme.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(bin())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
