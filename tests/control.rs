//! The control plane cannot be starved or turned against DNS, through the
//! real binary: connection cap and timeouts, loopback-only control address,
//! token file permissions, and only regular files read from zones/ and the
//! state directory (`/metrics` under load: tests/scrape.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// A `www` service with always-healthy endpoints and the classic phases.
fn www_zone() -> String {
    ZoneBuilder::new("shift.test.")
        .service(
            ServiceBuilder::new("www")
                .ttl("30s")
                .pool("old", &["127.0.0.10", "127.0.0.11"])
                .pool("new", &["127.0.0.20"])
                .health_none(),
        )
        .to_toml()
}

fn start(extra_config: &str) -> Server {
    Setup::new(&[("shift.test.toml", &www_zone())], extra_config).start()
}

fn token(server: &Server) -> String {
    std::fs::read_to_string(server.path().join("state/control.token"))
        .unwrap()
        .trim()
        .to_string()
}

/// Reads until the peer closes (EOF or reset) or `limit` passes; returns
/// what arrived and when the connection ended (None: still open).
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(t0.elapsed());
        if left.is_zero() {
            return (String::from_utf8_lossy(&got).into_owned(), None);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        Some(t0.elapsed()),
    )
}

/// Open descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

// -------------------------------------------------------- connection bounds

#[test]
fn idle_connections_beyond_the_cap_do_not_lock_out_status_or_dns() {
    // The header timeout is long, so only the cap (closing the oldest idle
    // connection to make room) can let `status` through quickly.
    let server = start("control_max_connections = 8\ncontrol_header_timeout = \"30s\"\n");
    let control = server.control.unwrap();
    let before = open_fds(server.pid());
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect_timeout(&control, Duration::from_secs(5)).unwrap())
        .collect();
    // The daemon takes them all off the accept queue, yet holds at most the cap.
    let settled = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        let n = open_fds(server.pid());
        (n <= before + 8).then_some(n)
    });
    let t0 = Instant::now();
    let out = server.cli_ok(&["status", "www"]);
    let took = t0.elapsed();
    assert!(out.contains("www"), "{out}");
    assert!(
        took < Duration::from_secs(5),
        "status took {took:?} with 200 idle connections open"
    );
    let m = server.query_tcp("www.shift.test.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let n = open_fds(server.pid());
    assert!(
        n <= before + 8 + 1,
        "{n} descriptors open, {before} before 200 idle connections (cap 8); settled: {settled:?}"
    );
    drop(idle);
}

#[test]
fn idle_and_half_sent_headers_are_closed_within_the_header_timeout() {
    let server = start("control_header_timeout = \"1s\"\n");
    let control = server.control.unwrap();
    let mut silent = TcpStream::connect_timeout(&control, Duration::from_secs(5)).unwrap();
    let mut half = TcpStream::connect_timeout(&control, Duration::from_secs(5)).unwrap();
    half.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthor")
        .unwrap();
    for (what, s) in [("half a header", &mut half), ("nothing", &mut silent)] {
        let (_, closed) = read_until_closed(s, Duration::from_secs(10));
        let closed = closed.unwrap_or_else(|| panic!("a connection that sent {what} stayed open"));
        assert!(
            closed < Duration::from_secs(4),
            "a connection that sent {what} was closed after {closed:?}"
        );
    }
    // A kept-alive connection is closed once idle for the same time.
    let mut kept = TcpStream::connect_timeout(&control, Duration::from_secs(5)).unwrap();
    write!(
        kept,
        "GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        token(&server)
    )
    .unwrap();
    let (resp, closed) = read_until_closed(&mut kept, Duration::from_secs(10));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        closed.is_some_and(|c| c < Duration::from_secs(4)),
        "an idle kept-alive connection was closed after {closed:?}"
    );
}

#[test]
fn a_trickled_body_is_cut_off_at_the_body_timeout() {
    let server = start("control_body_timeout = \"1s\"\n");
    let control = server.control.unwrap();
    let mut s = TcpStream::connect_timeout(&control, Duration::from_secs(5)).unwrap();
    write!(
        s,
        "POST /v1/services/www/advance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
        token(&server)
    )
    .unwrap();
    // One byte every 100 ms (for at most 10 s) until the daemon answers.
    let t0 = Instant::now();
    let mut got = Vec::new();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while t0.elapsed() < Duration::from_secs(10) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                if !got.is_empty() || s.write_all(b" ").is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let took = t0.elapsed();
    let resp = String::from_utf8_lossy(&got);
    assert!(resp.starts_with("HTTP/1.1 408"), "{took:?}: {resp:?}");
    assert!(took < Duration::from_secs(4), "cut off after {took:?}");
    // Nothing was applied.
    let st = server.cli_ok(&["status", "www", "--json"]);
    assert!(st.contains("\"phase\": \"separate-domain\""), "{st}");
}

// ------------------------------------------------------ address and token

#[test]
fn a_non_loopback_control_listen_is_rejected_by_check_and_serve() {
    let setup = Setup::new(
        &[("shift.test.toml", &www_zone())],
        "\ncontrol_listen = \"0.0.0.0:5380\"\n",
    );
    // The harness's own control_listen comes first; a second one is a
    // duplicate key, so write the file whole.
    let config = std::fs::read_to_string(setup.config()).unwrap();
    let config = config.replace("control_listen = \"127.0.0.1:0\"\n", "");
    std::fs::write(setup.config(), &config).unwrap();
    let line = config
        .lines()
        .position(|l| l.starts_with("control_listen"))
        .unwrap()
        + 1;
    let want = format!(
        "{}:{line}: control_listen: 0.0.0.0:5380 is not a loopback address",
        setup.config().display()
    );
    let out = check_config(setup.dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&want), "{err}");
    assert!(err.contains("allow_remote_control = true"), "{err}");
    let log = serve_must_fail(setup.dir.path());
    assert!(log.contains(&want), "{log}");
}

#[test]
fn allow_remote_control_is_logged_as_a_warning() {
    let server = start("allow_remote_control = true\n");
    assert!(
        server
            .log
            .lines()
            .iter()
            .any(|l| field(l, "level").as_deref() == Some("WARN")
                && l.contains("allow_remote_control")),
        "{}",
        server.log.lines().join("\n")
    );
    let quiet = start("");
    assert!(
        !quiet
            .log
            .lines()
            .iter()
            .any(|l| l.contains("allow_remote_control"))
    );
}

#[test]
fn a_token_file_others_can_read_stops_start_up_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new(&[("shift.test.toml", &www_zone())], "");
    let state = setup.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let file = state.join("control.token");
    std::fs::write(&file, "0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = serve_must_fail(setup.dir.path());
    assert!(log.contains("mode 0644"), "{log}");
    assert!(
        log.contains(&format!("chmod 600 {}", file.display())),
        "{log}"
    );
    // Fixed as told, it starts.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = Server::start(setup.dir);
    assert_eq!(token(&server), "0123456789abcdef");
}

// ------------------------------------------------------------ only files

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap().success();
    assert!(ok, "mkfifo {}", path.display());
}

/// Runs a CLI command with a deadline; (ok, stderr, time taken).
fn timed_cli(server: &Server, args: &[&str]) -> (bool, String, Duration) {
    let t0 = Instant::now();
    let (ok, _, err) = server.cli(args);
    (ok, err, t0.elapsed())
}

#[test]
fn a_fifo_in_zones_fails_check_and_reload_quickly_and_commands_still_answer() {
    let server = start("");
    let fifo = server.path().join("zones/evil.toml");
    mkfifo(&fifo);
    // check: an error naming the path, without waiting on the FIFO.
    let t0 = Instant::now();
    let out = check_config(server.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "{}: cannot read file: it is a FIFO",
            fifo.display()
        )),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // reload: rejected quickly, naming it; the running zones keep serving.
    let (ok, err, took) = timed_cli(&server, &["reload"]);
    assert!(!ok);
    assert!(err.contains(&fifo.display().to_string()), "{err}");
    assert!(err.contains("FIFO"), "{err}");
    assert!(took < Duration::from_secs(5), "reload took {took:?}");
    // Other commands answer while the FIFO is there.
    let (ok, err, took) = timed_cli(&server, &["status", "www"]);
    assert!(ok && took < Duration::from_secs(5), "{took:?}: {err}");
    let (ok, err, took) = timed_cli(&server, &["advance", "www"]);
    assert!(ok && took < Duration::from_secs(5), "{took:?}: {err}");
    let m = server.query("www.shift.test.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
}

#[test]
fn a_fifo_or_directory_as_state_json_stops_start_up_naming_it() {
    for kind in ["fifo", "dir"] {
        let setup = Setup::new(&[("shift.test.toml", &www_zone())], "");
        let state = setup.dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let file = state.join("state.json");
        if kind == "fifo" {
            mkfifo(&file);
        } else {
            std::fs::create_dir(&file).unwrap();
        }
        let t0 = Instant::now();
        let log = serve_must_fail(setup.dir.path());
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let want = if kind == "fifo" {
            "a FIFO"
        } else {
            "a directory"
        };
        assert!(
            log.contains(&format!("cannot read state file {}", file.display()))
                && log.contains(want),
            "{kind}: {log}"
        );
        // The log line (not just the exit message) names it.
        assert!(
            log.lines()
                .any(|l| is_msg(l, "cannot start") && l.contains(&file.display().to_string())),
            "{log}"
        );
    }
}
