//! What ships works as shipped: the systemd unit's `check` passes on the
//! shipped config and zones, every zone and fixture health-checks only this
//! host, and the README's try-out runs to its end, command by command.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Bound on one command of the try-out (a dig loop included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `cmd` to completion, killed and failed after `timeout`.
fn output_within(cmd: &mut Command, timeout: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
    }
}

// ------------------------------------------------------------------ systemd

/// The unit's `ExecStartPre=`, split into words, with systemd's prefix
/// characters (`-`, `@`, `+`, `!`, `:`) removed.
fn exec_start_pre() -> Vec<String> {
    let unit = std::fs::read_to_string(manifest_dir().join("systemd/dnsshift.service")).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("ExecStartPre="))
        .expect("dnsshift.service has an ExecStartPre=");
    line.trim_start_matches(['-', '@', '+', '!', ':'])
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn the_units_check_passes_on_the_shipped_config_and_zones() {
    let argv = exec_start_pre();
    assert!(
        argv[0].ends_with("/dnsshift") && argv[1] == "check",
        "ExecStartPre= is not `dnsshift check ...`: {argv:?}"
    );
    // The install of the README and the unit's comments, into a scratch root.
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/dnsshift");
    let state = root.path().join("var/lib/dnsshift");
    std::fs::create_dir_all(etc.join("zones")).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let rewrite = |s: &str| {
        s.replace("/etc/dnsshift", etc.to_str().unwrap())
            .replace("/var/lib/dnsshift", state.to_str().unwrap())
    };
    let config = std::fs::read_to_string(manifest_dir().join("systemd/dnsshift.toml")).unwrap();
    assert!(config.contains("/etc/dnsshift/zones") && config.contains("/var/lib/dnsshift"));
    std::fs::write(etc.join("dnsshift.toml"), rewrite(&config)).unwrap();
    let mut zones = 0;
    for e in std::fs::read_dir(manifest_dir().join("zones")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&p, etc.join("zones").join(p.file_name().unwrap())).unwrap();
            zones += 1;
        }
    }
    assert!(zones >= 1);

    let args: Vec<String> = argv[1..].iter().map(|a| rewrite(a)).collect();
    assert!(
        args.iter().any(|a| a.starts_with(etc.to_str().unwrap())),
        "the unit's check does not name the config under /etc/dnsshift: {argv:?}"
    );
    let out = output_within(
        Command::new(bin())
            .args(&args)
            .current_dir(root.path())
            .env_remove("DNSSHIFT_CONFIG"),
        COMMAND_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "`{}` failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("ok: {zones} zone(s)")),
        "{stdout}"
    );
}

// ------------------------------------------------------------------ loopback only

/// Every `*.toml` below `dir`.
fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            toml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

#[test]
fn every_shipped_zone_and_fixture_checks_only_this_host() {
    let mut files = Vec::new();
    toml_files(&manifest_dir().join("zones"), &mut files);
    toml_files(&manifest_dir().join("tests"), &mut files);
    let invalid = manifest_dir().join("tests/fixtures/invalid");
    let mut loaded = 0;
    let mut problems = Vec::new();
    for f in &files {
        match dnsshift::zone::load_file(f) {
            Ok(zone) => {
                loaded += 1;
                for c in non_loopback_checks(std::slice::from_ref(&zone)) {
                    problems.push(format!("{}: {c}", f.display()));
                }
            }
            // A zone that does not load is never served, so never checked;
            // only the invalid fixtures may be such zones.
            Err(e) if !f.starts_with(&invalid) => {
                problems.push(format!("{}: does not load: {e}", f.display()))
            }
            Err(_) => {}
        }
    }
    assert!(loaded >= 1, "no zone loaded from {files:?}");
    assert!(
        problems.is_empty(),
        "zones that health-check beyond this host:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_harness_refuses_a_zone_that_checks_beyond_this_host() {
    for pools in [
        // A documentation address, checked over HTTP by default.
        ServiceBuilder::new("www")
            .pool("old", &["192.0.2.1"])
            .pool("new", &["127.0.0.2"]),
        // A host name: even resolving it is a query beyond this host.
        ServiceBuilder::new("www")
            .pool("old", &["127.0.0.1"])
            .pool_with_health(
                "new",
                &["lb.example.net."],
                r#"{ kind = "tcp", port = 443 }"#,
            ),
    ] {
        let zone = ZoneBuilder::new("shift.test.")
            .service(pools.clone())
            .to_toml();
        let setup = Setup::new(&[("z.toml", &zone)], "");
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| setup.start()))
            .err()
            .unwrap_or_else(|| panic!("the harness started a server on:\n{zone}"));
        let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("refusing to start a server whose health checks leave this host"),
            "{msg}"
        );
    }
}

// ------------------------------------------------------------------ the README's try-out

/// The demo backend the README runs with `cargo run --bin demo-backend`:
/// a binary of the package, built with the tests.
fn demo_backend() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_demo-backend"))
}

/// The running demo backend; killed when dropped.
struct Demo {
    child: Child,
    port: u16,
    lines: Vec<String>,
}

impl Demo {
    /// Starts the demo backend on the shipped zones, every address on one
    /// free port, and waits for it to say it is ready.
    fn start() -> Demo {
        let mut child = Command::new(demo_backend())
            .args(["--port", "0"])
            .current_dir(manifest_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    let ready = l.starts_with("ready");
                    lines.push(l);
                    if ready {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("demo-backend did not get ready: {lines:?}");
                }
            }
        }
        let port = lines
            .iter()
            .find_map(|l| l.strip_prefix("port "))
            .expect("demo-backend printed its port")
            .parse()
            .unwrap();
        Demo { child, port, lines }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `$ ` commands of the README's "Try it" console block, comments off.
fn try_it_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(manifest_dir().join("README.md")).unwrap();
    let section = readme
        .split("\n## Try it\n")
        .nth(1)
        .expect("README has a `## Try it` section");
    let block = section
        .split("```console\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("`Try it` has a console block");
    block
        .lines()
        .filter_map(|l| l.strip_prefix("$ "))
        .map(|l| match l.find("  #") {
            Some(i) => l[..i].trim().to_string(),
            None => l.trim().to_string(),
        })
        .collect()
}

#[test]
fn the_readme_try_out_runs_to_its_end() {
    let commands = try_it_commands();
    let demo = Demo::start();
    // Every address the shipped example checks is served.
    for want in ["127.0.0.10", "127.0.0.21", "[::1]", "127.0.0.40"] {
        assert!(
            demo.lines
                .iter()
                .any(|l| l.contains(&format!("{want}:{}", demo.port))),
            "{want} not served: {:?}",
            demo.lines
        );
    }

    // The shipped example, its checks on the demo backend's port.
    let example =
        std::fs::read_to_string(manifest_dir().join("zones/shift.example.com.toml")).unwrap();
    assert!(example.contains(":8080/healthz") && example.contains("port     = 8080"));
    let example = example
        .replace(":8080/healthz", &format!(":{}/healthz", demo.port))
        .replace("port     = 8080", &format!("port     = {}", demo.port));
    let server = Setup::new(&[("shift.example.com.toml", &example)], "").start();
    let control = format!("http://{}", server.control.unwrap());

    let mut ran = Vec::new();
    for command in &commands {
        if command.starts_with("cargo run --bin demo-backend") {
            ran.push("demo-backend");
            continue;
        }
        let (what, script) = if let Some(rest) = command.strip_prefix("cargo run --release -- ") {
            (
                rest.split_whitespace().next().unwrap(),
                format!("\"$DNSSHIFT\" --config \"$CONFIG\" {rest}"),
            )
        } else if command.contains("dig ") {
            assert!(command.contains("-p 5353"), "{command}");
            (
                "dig",
                command.replace("-p 5353", &format!("-p {}", server.dns.port())),
            )
        } else {
            panic!("the test does not know how to run the README command {command:?}");
        };
        let out = output_within(
            Command::new("sh")
                .args(["-c", &script])
                .current_dir(server.path())
                .env("DNSSHIFT", bin())
                .env("CONFIG", server.path().join("dnsshift.toml"))
                .env("DNSSHIFT_CONTROL", &control),
            COMMAND_TIMEOUT,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "README command {command:?} failed:\nstdout: {stdout}\nstderr: {stderr}"
        );
        eprintln!("$ {command}\n{stdout}{stderr}");
        match what {
            "dig" => assert!(stdout.contains("127.0.0."), "{command}: {stdout}"),
            "status" => assert!(
                stdout.contains("healthy") && !stdout.contains("DOWN"),
                "{stdout}"
            ),
            "advance" if command.contains("--dry-run") => {
                assert!(stdout.contains("dry run"), "{stdout}")
            }
            "advance" | "rollback" => assert!(stdout.contains(" -> "), "{stdout}"),
            "history" => assert!(
                stdout.contains("advance") && stdout.contains("rollback"),
                "{stdout}"
            ),
            _ => {}
        }
        ran.push(what);
    }
    for want in [
        "demo-backend",
        "dig",
        "status",
        "advance",
        "rollback",
        "history",
    ] {
        assert!(
            ran.contains(&want),
            "the README's try-out has no {want}: {ran:?}"
        );
    }
    // The dig loop saw both pools once the split moved.
    let loops: Vec<&String> = commands.iter().filter(|c| c.contains("seq ")).collect();
    assert_eq!(loops.len(), 1, "one bounded dig loop: {commands:?}");
}

#[test]
fn the_demo_backend_stops_on_ctrl_c() {
    let mut demo = Demo::start();
    let ok = Command::new("kill")
        .args(["-INT", &demo.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let st =
        exit_within(&mut demo.child, Duration::from_secs(10)).expect("demo-backend ignored SIGINT");
    assert!(st.success(), "{st}");
}
