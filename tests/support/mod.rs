//! Helpers shared by the operator and persistence tests, on top of
//! `common`: starting the daemon with a retry for a start-up race of port 0,
//! and running a daemon that must refuse to start.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// Start attempts when binding port 0 races (see [`start`]).
const START_ATTEMPTS: usize = 5;

fn serve_command(dir: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("--config")
        .arg(dir.join("dnsshift.toml"))
        .arg("serve")
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET");
    cmd
}

/// Like `Server::spawn(dir, &[])`, but retries when start-up fails with
/// "Address already in use". With `listen = ["127.0.0.1:0"]`, `dns::bind`
/// binds UDP to an ephemeral port and then TCP to the same port number,
/// which another TCP socket may already hold; the tests that start many
/// daemons and CLI connections hit that now and then.
pub fn start(dir: tempfile::TempDir) -> Server {
    for attempt in 1..=START_ATTEMPTS {
        let (mut child, log) = spawn_logged(&mut serve_command(dir.path()));
        let (_, line) = log.wait_for(0, STARTUP_TIMEOUT, |l| {
            is_msg(l, "ready") || l.contains("cannot start")
        });
        if line.contains("cannot start") {
            let _ = child.kill();
            let _ = child.wait();
            if line.contains("Address already in use") && attempt < START_ATTEMPTS {
                continue;
            }
            panic!("server failed: {line}");
        }
        let lines = log.lines();
        let find = |msg: &str, key: &str| {
            lines
                .iter()
                .find(|l| is_msg(l, msg))
                .and_then(|l| field(l, key))
                .and_then(|a| a.parse().ok())
        };
        return Server {
            dns: find("dns listening", "udp").expect("dns address logged"),
            control: find("control listening", "addr"),
            child: Some(child),
            dir,
            log,
        };
    }
    unreachable!()
}

/// Runs `dnsshift serve` in `dir`, which must refuse to start; returns
/// everything it wrote to stderr. Killed (and the test failed) if it is
/// still running after the start-up timeout.
pub fn serve_must_fail(dir: &Path) -> String {
    let (mut child, log) = spawn_logged(&mut serve_command(dir));
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not refuse to start:\n{}", log.lines().join("\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "{status}");
    // The reader thread may lag the exit a little.
    let _ = poll(Duration::from_secs(2), Duration::from_millis(20), || {
        log.lines()
            .iter()
            .any(|l| l.starts_with("dnsshift: "))
            .then_some(())
    });
    let lines = log.lines();
    assert!(
        !lines.iter().any(|l| is_msg(l, "ready")),
        "{}",
        lines.join("\n")
    );
    lines.join("\n")
}

/// The plain `dnsshift: ...` error line of a failed command's stderr.
pub fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("dnsshift: "))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
}
