//! Operator state survives restarts and crashes: phase, overrides,
//! decommissioned pools and history come back after a restart or a
//! `kill -9` at any moment; a corrupt or unreadable state file stops
//! start-up with an error naming it and is left untouched; SIGTERM and
//! SIGINT shut down cleanly.
//!
//! Relies on `status --json` (`services[].phase`, `.pools[].pool`,
//! `.decommissioned`, `.endpoints[].endpoint`, `.disabled`) and
//! `history --json` (`events[].action`, `.to`, `.reason`, `.forced`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;
use serde_json::Value;

const OLD: [&str; 2] = ["192.0.2.10", "192.0.2.11"];
const NEW: &str = "198.51.100.20";
const WWW: &str = "www.shift.test.";

fn zone() -> String {
    ZoneBuilder::new("shift.test.")
        .service(
            ServiceBuilder::new("www")
                .ttl("30s")
                .max_answers(2)
                .pool("old", &OLD)
                .pool("new", &[NEW])
                .health_none()
                .phase("separate-domain", &[("old", 100), ("new", 0)])
                .phase("ten", &[("old", 90), ("new", 10)])
                .phase("cutover", &[("old", 0), ("new", 100)]),
        )
        .to_toml()
}

fn status(server: &Server) -> Value {
    let v: Value = serde_json::from_str(&server.cli_ok(&["status", "www", "--json"])).unwrap();
    v["services"][0].clone()
}

fn history(server: &Server) -> Vec<Value> {
    let v: Value = serde_json::from_str(&server.cli_ok(&["history", "www", "--json"])).unwrap();
    v["events"].as_array().unwrap().clone()
}

fn a(server: &Server) -> Vec<String> {
    let mut got = answers(&server.query(WWW, RecordType::A));
    got.sort();
    got
}

fn state_path(dir: &Path) -> std::path::PathBuf {
    dir.join("state").join("state.json")
}

fn disabled(st: &Value, ep: &str) -> bool {
    st["pools"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["endpoints"].as_array().unwrap())
        .find(|e| e["endpoint"] == ep)
        .unwrap()["disabled"]
        .as_bool()
        .unwrap()
}

#[test]
fn restart_keeps_phase_overrides_decommission_and_history() {
    let server = Setup::new(&[("shift.test.toml", &zone())], "").start();
    server.cli_ok(&["advance", "www", "--to", "cutover", "--reason", "go"]);
    server.cli_ok(&["endpoint", "disable", "www", OLD[0], "--reason", "broken"]);
    server.cli_ok(&["rollback", "www", "--to", "separate-domain"]);
    assert_eq!(a(&server), vec![OLD[1]]);
    let history_before = history(&server);
    assert_eq!(history_before.len(), 3);

    // A crash (SIGKILL) ...
    let server = Server::start(server.kill());
    let st = status(&server);
    assert_eq!(st["phase"], "separate-domain");
    assert!(disabled(&st, OLD[0]));
    assert!(!disabled(&st, OLD[1]));
    assert_eq!(history(&server), history_before);
    assert_eq!(a(&server), vec![OLD[1]], "first answer after restart");

    // ... and a clean stop.
    server.cli_ok(&["advance", "www", "--to", "cutover"]);
    server.cli_ok(&["decommission", "www", "old", "--force", "--reason", "gone"]);
    let mut server = server;
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(15)).success());
    let server = Server::start(server.kill());
    let st = status(&server);
    assert_eq!(st["phase"], "cutover");
    let old = st["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pool"] == "old")
        .unwrap();
    assert_eq!(old["decommissioned"], true);
    let h = history(&server);
    assert_eq!(h.len(), 5);
    assert_eq!(h[4]["action"], "decommission");
    assert_eq!(h[4]["to"], "old");
    assert_eq!(h[4]["reason"], "gone");
    assert_eq!(h[4]["forced"], true);
    assert_eq!(a(&server), vec![NEW]);
    // The decommission holds after the restart: a rollback that would give
    // old traffic again is refused, and old stays out of the answers.
    let (ok, _, err) = server.cli(&["rollback", "www", "--to", "separate-domain"]);
    assert!(
        !ok && err.contains("\"old\"") && err.contains("is decommissioned"),
        "{err}"
    );
    for _ in 0..10 {
        assert!(a(&server).iter().all(|x| !OLD.contains(&x.as_str())));
    }
}

#[test]
fn corrupt_or_unreadable_state_stops_startup_naming_the_file() {
    let server = Setup::new(&[("shift.test.toml", &zone())], "").start();
    server.cli_ok(&["advance", "www"]);
    let dir = server.kill();
    let path = state_path(dir.path());
    let good = std::fs::read(&path).unwrap();

    for bad in [
        &good[..good.len() / 2],
        b"",
        b"{\"version\": 1, \"services\": {}, \"history\": [], \"surprise\": 1}",
        b"{\"version\": 7}",
    ] {
        std::fs::write(&path, bad).unwrap();
        let log = serve_must_fail(dir.path());
        let line = error_line(&log);
        assert!(
            line.contains(&format!("state file {} is corrupt", path.display()))
                && line.contains("left untouched"),
            "{log}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bad, "state file untouched");
        // `check` reports it the same way.
        let out = check_config(dir.path());
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    // Unreadable: a directory where the file should be.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let log = serve_must_fail(dir.path());
    let line = error_line(&log);
    assert!(
        line.contains(&format!("cannot read state file {}", path.display())),
        "{log}"
    );
    assert!(path.is_dir());

    // Put back, it starts with the saved phase.
    std::fs::remove_dir(&path).unwrap();
    std::fs::write(&path, &good).unwrap();
    let server = Server::start(dir);
    assert_eq!(status(&server)["phase"], "ten");
}

/// One operator command of the crash loop: its reason tag and expected effect.
#[derive(Clone, Debug, PartialEq)]
enum Effect {
    Phase(String),
    Disabled(bool),
}

/// `kill -9` while commands are being acknowledged, in a bounded loop:
/// every acknowledged command is in the state after the restart, in order,
/// followed by at most the one command that was in flight; the state file
/// always parses.
#[test]
fn kill_9_never_loses_an_acknowledged_command() {
    const ITERATIONS: usize = 15;
    let started = Instant::now();
    let mut dir = Setup::new(&[("shift.test.toml", &zone())], "").dir;
    let mut phase = "separate-domain".to_string();
    let mut is_disabled = false;
    let mut acked_total = 0;
    let mut next_op = 0usize;
    for i in 0..ITERATIONS {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "loop too slow"
        );
        let server = Server::start(dir);
        // Commands run in a thread; the main thread kills the daemon after
        // a delay that varies per iteration (20 ms to ~400 ms).
        let delay = Duration::from_millis(20 + (i as u64 * 137) % 380);
        let (acked, in_flight) = std::thread::scope(|s| {
            let worker = s.spawn(|| {
                let mut acked: Vec<(usize, Effect)> = Vec::new();
                let mut phase = phase.clone();
                let mut is_disabled = is_disabled;
                let deadline = Instant::now() + Duration::from_secs(10);
                for k in 0..200 {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let n = next_op + k;
                    let reason = format!("op-{n}");
                    // Two phase changes, then an endpoint toggle.
                    let (args, effect): (Vec<&str>, Effect) = if n % 3 == 2 {
                        let verb = if is_disabled { "enable" } else { "disable" };
                        (
                            vec!["endpoint", verb, "www", OLD[0], "--reason", reason.as_str()],
                            Effect::Disabled(!is_disabled),
                        )
                    } else if phase == "separate-domain" {
                        (
                            vec!["advance", "www", "--reason", reason.as_str(), "--json"],
                            Effect::Phase("ten".into()),
                        )
                    } else {
                        (
                            vec!["rollback", "www", "--reason", reason.as_str(), "--json"],
                            Effect::Phase("separate-domain".into()),
                        )
                    };
                    let (ok, out, _) = server.cli(&args);
                    if !ok {
                        // Killed before, while or after it was applied.
                        return (acked, Some((n, effect)));
                    }
                    match &effect {
                        Effect::Phase(p) => {
                            let r: Value = serde_json::from_str(&out).unwrap();
                            assert_eq!(&r["to"], p.as_str());
                            phase = p.clone();
                        }
                        Effect::Disabled(d) => is_disabled = *d,
                    }
                    acked.push((n, effect));
                }
                (acked, None)
            });
            std::thread::sleep(delay);
            server.signal("KILL");
            worker.join().unwrap()
        });
        dir = server.kill();

        // The file parses (and is valid state, as the restart shows).
        let text = std::fs::read_to_string(state_path(dir.path())).unwrap_or_default();
        if !text.is_empty() {
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("iteration {i}: state.json does not parse: {e}"));
            assert_eq!(v["version"], 2);
        }
        let server = Server::start(dir);
        let events = history(&server);
        let reasons: Vec<String> = events
            .iter()
            .map(|e| e["reason"].as_str().unwrap().to_string())
            .collect();
        // Every op before this iteration, then this iteration's acked ops,
        // then possibly the in-flight one.
        let mut want: Vec<String> = (0..next_op).map(|n| format!("op-{n}")).collect();
        want.extend(acked.iter().map(|(n, _)| format!("op-{n}")));
        let applied_in_flight = match &in_flight {
            Some((n, _)) if reasons.len() == want.len() + 1 => {
                want.push(format!("op-{n}"));
                true
            }
            _ => false,
        };
        assert_eq!(reasons, want, "iteration {i}: history after kill -9");
        for (_, effect) in acked
            .iter()
            .chain(in_flight.iter().filter(|_| applied_in_flight))
        {
            match effect {
                Effect::Phase(p) => phase = p.clone(),
                Effect::Disabled(d) => is_disabled = *d,
            }
        }
        let st = status(&server);
        assert_eq!(st["phase"], phase.as_str(), "iteration {i}");
        assert_eq!(disabled(&st, OLD[0]), is_disabled, "iteration {i}");
        // And the answers follow the recovered state.
        if phase == "separate-domain" {
            let want = if is_disabled {
                vec![OLD[1].to_string()]
            } else {
                OLD.iter().map(|s| s.to_string()).collect()
            };
            assert_eq!(a(&server), want, "iteration {i}");
        }
        eprintln!(
            "iteration {i}: {} acknowledged, in flight {in_flight:?}, applied {applied_in_flight}",
            acked.len()
        );
        acked_total += acked.len();
        next_op = reasons.len();
        dir = server.kill();
    }
    assert!(
        acked_total >= ITERATIONS,
        "too few commands were acknowledged to mean anything: {acked_total}"
    );
}

#[test]
fn sigterm_and_sigint_stop_cleanly_with_status_0() {
    for sig in ["TERM", "INT"] {
        let mut server = Setup::new(&[("shift.test.toml", &zone())], "").start();
        server.cli_ok(&["advance", "www"]);
        let from = server.log.len();
        let t = Instant::now();
        server.signal(sig);
        let exit = server.wait_exit(Duration::from_secs(15));
        assert!(exit.success(), "SIG{sig}: {exit}");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        server
            .log
            .wait_for(from, Duration::from_secs(5), |l| is_msg(l, "stopped"));
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(state_path(server.path())).unwrap())
                .unwrap();
        assert_eq!(v["services"][WWW]["phase"], "ten");
        let server = Server::start(server.kill());
        assert_eq!(status(&server)["phase"], "ten");
    }
}

/// A state file written by the release before typed history events
/// (tests/fixtures/state-v1.json, format 1, written by the binary of commit
/// 2e49fc6) is served as it was: phase, overrides, the decommission, and
/// every history entry as `history --json` showed it then.
#[test]
fn a_state_file_of_format_1_is_served_as_it_was() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let zone = std::fs::read_to_string(fixtures.join("state-v1-zone.toml")).unwrap();
    let setup = Setup::new(&[("shift.example.com.toml", &zone)], "");
    std::fs::create_dir(setup.dir.path().join("state")).unwrap();
    std::fs::copy(
        fixtures.join("state-v1.json"),
        setup.dir.path().join("state/state.json"),
    )
    .unwrap();
    let server = setup.start();
    let old: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("state-v1.json")).unwrap())
            .unwrap();
    let h: Value = serde_json::from_str(&server.cli_ok(&["history", "www", "--json"])).unwrap();
    let (got, want) = (
        h["events"].as_array().unwrap(),
        old["history"].as_array().unwrap(),
    );
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        for k in ["at", "service", "action", "from", "to", "reason", "forced"] {
            assert_eq!(g.get(k).unwrap_or(&Value::Null), &w[k], "{k}: {g} vs {w}");
        }
        // Entries from before issue 16 say nothing of who or where.
        assert!(g.get("node").is_none() && g.get("actor").is_none(), "{g}");
    }
    let text = server.cli_ok(&["history", "www"]);
    assert!(
        text.lines().nth(1).is_some_and(|l| l.contains(" - ")),
        "{text}"
    );
    let st: Value = serde_json::from_str(&server.cli_ok(&["status", "www", "--json"])).unwrap();
    let s = &st["services"][0];
    assert_eq!(s["phase"], "cutover");
    let old_pool = &s["pools"][0];
    assert_eq!(old_pool["pool"], "old");
    assert_eq!(old_pool["decommissioned"], true);
    let disabled: Vec<&str> = old_pool["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["disabled"] == true)
        .map(|e| e["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(disabled, ["127.0.0.11"]);
    // Migrated in place, once: the history moved to history.jsonl and the
    // state was written back as format 2; a second start migrates nothing
    // and serves the same history.
    let migrated = |l: &str| l.contains("migrated the state file from format 1 to 2");
    let (_, line) = server.log.wait_for(0, Duration::from_secs(5), migrated);
    assert_eq!(field(&line, "events").as_deref(), Some("12"), "{line}");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(state_path(server.path())).unwrap()).unwrap();
    assert_eq!(state["version"], 2);
    assert!(state.get("history").is_none(), "{state}");
    let log = server.path().join("state/history.jsonl");
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 12);
    let before = h["events"].clone();
    let server = Server::start(server.kill());
    let again: Value = serde_json::from_str(&server.cli_ok(&["history", "www", "--json"])).unwrap();
    assert_eq!(again["events"], before);
    assert!(!server.log.lines().iter().any(|l| migrated(l)));
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 12);
}
