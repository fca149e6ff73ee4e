//! Helpers shared by the operator and persistence tests, on top of
//! `common`: starting the daemon, and running a daemon that must refuse to
//! start.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

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

/// Starts the daemon in `dir` (as `Server::spawn(dir, &[])`).
pub fn start(dir: tempfile::TempDir) -> Server {
    Server::spawn(dir, &[])
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
