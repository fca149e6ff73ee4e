//! DNS over TCP stays available under connection floods: a cap on open
//! connections that closes the idlest first, through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// Idle connections the flood test holds open.
const IDLE: usize = 5000;

fn zone() -> String {
    zone_of([])
}

/// Limits the server's open descriptors, as a modest `LimitNOFILE` would.
fn limit_descriptors(server: &Server, n: usize) {
    let ok = std::process::Command::new("prlimit")
        .args([
            format!("--pid={}", server.pid()),
            format!("--nofile={n}:{n}"),
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok, "prlimit failed");
}

/// CPU seconds (user + system) the server has used so far.
fn cpu_seconds(server: &Server) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid())).unwrap();
    let after = stat.rsplit_once(") ").unwrap().1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// Opens [`IDLE`] idle connections to `server`, then asserts that a TCP
/// query is answered within a second; returns the idle connections.
fn query_beside_idle_connections(server: &Server) -> Vec<TcpStream> {
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        match TcpStream::connect_timeout(&server.dns, QUERY_TIMEOUT) {
            Ok(s) => idle.push(s),
            // The listen queue may be full for a moment while the server
            // closes idle connections; what counts is the query below.
            Err(e) => panic!("connect failed after {} connections: {e}", idle.len()),
        }
    }
    let t = Instant::now();
    let m = query_tcp(
        server.dns,
        &build_query("ns1.shift.test.", RecordType::A, None),
    );
    let took = t.elapsed();
    eprintln!("answered in {took:?} beside {IDLE} idle connections");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answers(&m), ["127.0.0.53"]);
    assert!(took < Duration::from_secs(1), "took {took:?}");
    idle
}

#[test]
fn a_tcp_query_is_answered_within_a_second_while_5000_idle_connections_are_held() {
    let server = Setup::new(
        &[("shift.test.toml", &zone())],
        "tcp_idle_timeout = \"1h\"\n",
    )
    .start();
    // Fewer descriptors than the flood: without a connection cap the server
    // would run out, and its accept loop with it.
    limit_descriptors(&server, 2048);
    let idle = query_beside_idle_connections(&server);
    drop(idle);
    let (_, body) = http_get(server.control.unwrap(), "/metrics");
    assert!(
        !body.contains("dnsshift_dns_tcp_evicted_total 0"),
        "the cap never closed an idle connection"
    );
}

#[test]
fn started_with_1024_descriptors_the_cap_fits_them_and_a_query_is_answered_within_a_second() {
    // A container's typical limit, hard and soft: the configured cap (1000)
    // plus everything else the daemon opens would exceed it, and accept
    // would fail behind thousands of queued connections.
    let setup = Setup::new(
        &[("shift.test.toml", &zone())],
        "tcp_idle_timeout = \"1h\"\n",
    );
    let server = Server::spawn_with(setup.dir, |s| s.nofile(1024));
    let capped = server
        .log
        .lines()
        .into_iter()
        .find(|l| l.contains("capped (raise LimitNOFILE= to lift it)"))
        .expect("the capped cap is logged at start");
    let cap: u64 = field(&capped, "cap").unwrap().parse().unwrap();
    assert!(cap < 1000 && cap > 500, "{capped}");
    assert_eq!(
        field(&capped, "nofile").as_deref(),
        Some("1024"),
        "{capped}"
    );
    assert_eq!(
        metric(server.control.unwrap(), "dnsshift_dns_tcp_max_connections"),
        Some(cap)
    );
    let idle = query_beside_idle_connections(&server);
    // Accept never ran out of descriptors.
    assert_eq!(
        metric(
            server.control.unwrap(),
            "dnsshift_dns_tcp_accept_errors_total"
        ),
        Some(0)
    );
    drop(idle);
}

#[test]
fn descriptor_exhaustion_backs_off_logs_once_and_counts() {
    let server = Setup::new(
        &[("shift.test.toml", &zone())],
        "tcp_max_connections = 100000\ntcp_idle_timeout = \"1h\"\n",
    )
    .start();
    limit_descriptors(&server, 128);
    let mut held = Vec::new();
    for _ in 0..400 {
        if let Ok(s) = TcpStream::connect_timeout(&server.dns, Duration::from_millis(500)) {
            held.push(s);
        }
    }
    let (_, line) = server.log.wait_for(0, QUERY_TIMEOUT, |l| {
        l.contains("dns tcp accept failed; backing off")
    });
    assert!(line.contains("WARN"), "{line}");
    // While the queue stays full, the accept loop must not spin a core.
    let before = cpu_seconds(&server);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_seconds(&server) - before;
    assert!(used < 0.5, "{used} CPU seconds in one second: a busy loop");
    let logged = server
        .log
        .lines()
        .iter()
        .filter(|l| l.contains("dns tcp accept failed"))
        .count();
    assert_eq!(logged, 1, "logged once");
    let (_, body) = http_get(server.control.unwrap(), "/metrics");
    let errors: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("dnsshift_dns_tcp_accept_errors_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(errors > 0, "{body}");
    // UDP is not affected.
    let m = query_udp(
        server.dns,
        &build_query("ns1.shift.test.", RecordType::A, None),
    );
    assert_eq!(answers(&m), ["127.0.0.53"]);
    drop(held);
}

#[test]
fn at_the_cap_the_idlest_connection_is_closed_first() {
    let server = Setup::new(
        &[("shift.test.toml", &zone())],
        "tcp_max_connections = 2\ntcp_idle_timeout = \"1h\"\n",
    )
    .start();
    let mut oldest = TcpStream::connect_timeout(&server.dns, QUERY_TIMEOUT).unwrap();
    // The second one answers a query, so it was accepted after the first.
    let q = build_query("ns1.shift.test.", RecordType::A, None);
    let mut second = TcpStream::connect_timeout(&server.dns, QUERY_TIMEOUT).unwrap();
    let bytes = q.to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    second.write_all(&framed).unwrap();
    second.set_read_timeout(Some(QUERY_TIMEOUT)).unwrap();
    let mut len = [0u8; 2];
    second.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; usize::from(u16::from_be_bytes(len))];
    second.read_exact(&mut resp).unwrap();
    // A third connection: at the cap, the idlest (the first) is closed.
    let m = query_tcp(server.dns, &q);
    assert_eq!(answers(&m), ["127.0.0.53"]);
    oldest.set_read_timeout(Some(QUERY_TIMEOUT)).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        oldest.read(&mut buf).unwrap_or(0),
        0,
        "the idlest was closed"
    );
    let control = server.control.unwrap();
    let body = poll(QUERY_TIMEOUT, Duration::from_millis(20), || {
        let (_, body) = http_get(control, "/metrics");
        body.contains("dnsshift_dns_tcp_evicted_total 1")
            .then_some(body)
    });
    assert!(body.is_some(), "no eviction counted");
}
