//! Running as a production service: the systemd notify protocol spoken to a
//! real Unix datagram socket, Prometheus metrics scraped from the running
//! binary, and JSON log lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::backend::{Backend, Behaviour};
use common::*;
use hickory_proto::rr::RecordType;

/// A service whose two endpoints are checked over HTTP on `port`.
fn checked(a: &str, b: &str, port: u16, interval: &str, timeout: &str) -> ServiceBuilder {
    ServiceBuilder::new("www")
        .ttl("5s")
        .max_answers(1)
        .pool("old", &[a])
        .pool("new", &[b])
        .health_http(&format!("http://{{endpoint}}:{port}/healthz"))
        .timing(interval, timeout)
        .rise_fall(1, 1)
        .phase("old-only", &[("old", 100), ("new", 0)])
        .phase("split", &[("old", 50), ("new", 50)])
}

/// [`checked`] as a zone file.
fn checked_zone(a: &str, b: &str, port: u16, interval: &str, timeout: &str) -> String {
    zone_of([checked(a, b, port, interval, timeout)])
}

/// Receives notify datagrams until `want` arrives; returns all received.
fn recv_until(sock: &UnixDatagram, want: &str, timeout: Duration) -> Vec<(Instant, String)> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = msg.lines().any(|l| l == want);
                got.push((Instant::now(), msg));
                if done {
                    return got;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no {want} within {timeout:?}; got {got:?}");
}

#[test]
fn notify_ready_after_bind_and_first_health_round_then_watchdog_and_stopping() {
    // One endpoint hangs: the first health round takes the whole timeout,
    // and READY=1 must wait for it.
    let healthy = Backend::http("127.0.9.1:0");
    let port = healthy.addr.port();
    let hanging = Backend::http(&format!("127.0.9.2:{port}"));
    hanging.set(Behaviour::Hang);
    let setup = Setup::new(
        &[(
            "z.toml",
            &checked_zone("127.0.9.1", "127.0.9.2", port, "2s", "700ms"),
        )],
        "",
    );
    let sock_path = setup.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();

    let started = Instant::now();
    // systemd sets WATCHDOG_PID to the service's PID.
    let (mut child, log) = Serve::new(setup.dir.path())
        .watchdog_pid()
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .spawn();

    let msgs = recv_until(&sock, "READY=1", Duration::from_secs(20));
    let ready_at = msgs.last().unwrap().0;
    // The hanging endpoint's first probe runs into its 700 ms timeout first.
    assert!(
        ready_at - started >= Duration::from_millis(600),
        "READY=1 after {:?}, before the first health round could finish",
        ready_at - started
    );
    // The log is read by another thread, which may lag the notification:
    // wait for the lines, then compare their order.
    let (listening, _) = log.wait_for(0, Duration::from_secs(5), |l| is_msg(l, "dns listening"));
    let (round, _) = log.wait_for(0, Duration::from_secs(5), |l| {
        is_msg(l, "first health round done")
    });
    let lines = log.lines();
    assert!(
        listening < round,
        "sockets are bound before health checks finish"
    );
    // The sockets were bound when READY arrived, and the first answer
    // already reflects health: the hanging endpoint (the only `new` one,
    // standby here) is down, and `old` answers.
    let dns: SocketAddr = field(&lines[listening], "udp").unwrap().parse().unwrap();
    let m = query_udp(
        dns,
        &build_query("www.shift.test.", RecordType::A, Some(1232)),
    );
    assert_eq!(answers(&m), ["127.0.9.1"]);
    let status = common::poll(Duration::from_secs(5), Duration::from_millis(20), || {
        log.lines()
            .iter()
            .find(|l| is_msg(l, "endpoint unhealthy"))
            .cloned()
    });
    assert!(
        status.is_some(),
        "the hanging endpoint was logged as unhealthy"
    );

    // Watchdog: WATCHDOG_USEC=200ms → a ping at least every 100 ms.
    let t0 = Instant::now();
    let mut pings = 0;
    while pings < 5 {
        let got = recv_until(&sock, "WATCHDOG=1", Duration::from_secs(2));
        pings += got
            .iter()
            .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
            .count();
    }
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "5 watchdog pings took {:?}",
        t0.elapsed()
    );

    // SIGTERM → STOPPING=1, then a clean exit.
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    recv_until(&sock, "STOPPING=1", Duration::from_secs(10));
    let status = exit_within(&mut child, Duration::from_secs(10)).expect("no exit after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    drop(hanging);
}

/// Parses exposition text into "name{labels}" → value (labels as printed).
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The first `/metrics` page for which `ready` holds: a page may be up to
/// a second old (the daemon renders at most once a second), so a test
/// polls for the change it made, with a deadline.
fn metrics_when(control: SocketAddr, ready: impl Fn(&str) -> bool) -> String {
    poll(Duration::from_secs(5), Duration::from_millis(50), || {
        let (code, body) = http_get(control, "/metrics");
        assert_eq!(code, 200);
        ready(&body).then_some(body)
    })
    .expect("/metrics did not catch up within 5 s")
}

/// Sum of the samples of `name` whose labels contain `part` (0 if none).
fn sample_sum(text: &str, name: &str, part: &str) -> f64 {
    parse_metrics(text)
        .iter()
        .filter(|(k, _)| k.split('{').next() == Some(name) && k.contains(part))
        .map(|(_, v)| v)
        .sum()
}

fn metric(m: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<f64> = m
        .iter()
        .filter(|(k, _)| {
            k.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(lk, lv)| k.contains(&format!("{lk}=\"{lv}\"")))
        })
        .map(|(_, v)| *v)
        .collect();
    assert!(!matching.is_empty(), "no sample {name} {labels:?}");
    matching.iter().sum()
}

#[test]
fn metrics_follow_queries_health_and_phase() {
    let a = Backend::http("127.0.9.11:0");
    let port = a.addr.port();
    let b = Backend::http(&format!("127.0.9.12:{port}"));
    let server = Setup::new(
        &[(
            "z.toml",
            &checked_zone("127.0.9.11", "127.0.9.12", port, "150ms", "100ms"),
        )],
        "",
    )
    .start();
    let control = server.control.unwrap();

    // Unauthenticated scrape works; the API itself does not.
    let (code, _) = http_get(control, "/v1/status");
    assert_eq!(code, 401);

    for _ in 0..40 {
        server.query("www.shift.test.", RecordType::A);
    }
    for _ in 0..3 {
        server.query("nope.shift.test.", RecordType::AAAA);
    }
    server.query_tcp("www.shift.test.", RecordType::A);
    server.query("example.org.", RecordType::A);

    // Health change: new goes 503.
    b.set(Behaviour::status(503));
    let down = poll(Duration::from_secs(5), Duration::from_millis(50), || {
        let (_, body) = http_get(control, "/metrics");
        let m = parse_metrics(&body);
        (metric(
            &m,
            "dnsshift_endpoint_healthy",
            &[("endpoint", "127.0.9.12")],
        ) == 0.0)
            .then_some(m)
    })
    .expect("endpoint_healthy went to 0");
    assert_eq!(
        metric(
            &down,
            "dnsshift_endpoint_healthy",
            &[("endpoint", "127.0.9.11")]
        ),
        1.0
    );
    assert!(
        metric(
            &down,
            "dnsshift_health_check_failures_total",
            &[("endpoint", "127.0.9.12"), ("reason", "status")]
        ) >= 1.0
    );
    assert!(
        metric(
            &down,
            "dnsshift_health_check_duration_seconds_count",
            &[("endpoint", "127.0.9.11")]
        ) >= 1.0
    );
    // `new` has weight 0 in the first phase: it has a drain deadline, a Unix time.
    let deadline = metric(
        &down,
        "dnsshift_pool_drain_deadline_seconds",
        &[("pool", "new")],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 60.0..now + 60.0).contains(&deadline),
        "drain deadline {deadline} vs now {now}"
    );

    // Phase change (forced: the new pool is down).
    b.set(Behaviour::ok());
    poll(Duration::from_secs(5), Duration::from_millis(50), || {
        let (_, body) = http_get(control, "/metrics");
        (metric(
            &parse_metrics(&body),
            "dnsshift_endpoint_healthy",
            &[("endpoint", "127.0.9.12")],
        ) == 1.0)
            .then_some(())
    })
    .expect("endpoint back up");
    server.cli_ok(&["advance", "www", "--reason", "metrics test"]);
    for _ in 0..20 {
        server.query("www.shift.test.", RecordType::A);
    }

    let body = metrics_when(control, |b| {
        sample_sum(
            b,
            "dnsshift_dns_queries_total",
            "qtype=\"A\",protocol=\"udp\"",
        ) >= 60.0
    });
    let m = parse_metrics(&body);
    let q = |qtype, proto, rcode| {
        metric(
            &m,
            "dnsshift_dns_queries_total",
            &[
                ("zone", "shift.test."),
                ("qtype", qtype),
                ("protocol", proto),
                ("rcode", rcode),
            ],
        )
    };
    assert_eq!(q("A", "udp", "NOERROR"), 60.0);
    assert_eq!(q("AAAA", "udp", "NXDOMAIN"), 3.0);
    assert_eq!(q("A", "tcp", "NOERROR"), 1.0);
    assert_eq!(
        metric(
            &m,
            "dnsshift_dns_queries_total",
            &[("zone", ""), ("rcode", "REFUSED")]
        ),
        1.0
    );
    // max_answers = 1: one endpoint per answer; 61 main-name answers in all.
    let answered = metric(
        &m,
        "dnsshift_endpoint_answers_total",
        &[("service", "www.shift.test.")],
    );
    assert_eq!(answered, 61.0);
    assert_eq!(
        metric(
            &m,
            "dnsshift_pool_answers_total",
            &[("pool", "old"), ("name", "main")]
        ) + metric(
            &m,
            "dnsshift_pool_answers_total",
            &[("pool", "new"), ("name", "main")]
        ),
        61.0
    );
    assert_eq!(
        metric(
            &m,
            "dnsshift_phase_info",
            &[("service", "www.shift.test."), ("phase", "split")]
        ),
        1.0
    );
    assert_eq!(metric(&m, "dnsshift_pool_weight", &[("pool", "new")]), 50.0);
    // build_info carries the version and the commit `--version` names.
    let version = Command::new(bin()).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let commit = version
        .split_once("(commit ")
        .and_then(|(_, c)| c.trim_end().strip_suffix(')'))
        .unwrap_or_else(|| panic!("no commit in --version: {version}"));
    assert_eq!(
        metric(
            &m,
            "dnsshift_build_info",
            &[("version", env!("CARGO_PKG_VERSION")), ("commit", commit)]
        ),
        1.0
    );
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
}

#[test]
fn json_log_lines_carry_structured_fields() {
    let server = Setup::new(
        &[(
            "z.toml",
            &zone_of([ServiceBuilder::new("www")
                .pool("old", &["127.0.9.21"])
                .pool("new", &["127.0.9.22"])
                .health_none()]),
        )],
        "",
    )
    .start();
    let from = server.log.len();
    server.cli_ok(&["advance", "www", "--reason", "json test"]);
    let (_, line) = server
        .log
        .wait_for(from, Duration::from_secs(5), |l| is_msg(l, "phase changed"));
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON object per line");
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["service"], "www.shift.test.");
    assert_eq!(v["from"], "separate-domain");
    assert_eq!(v["to"], "round-robin");
    assert_eq!(v["reason"], "json test");
    assert_eq!(v["action"], "advance");
    for l in server.log.lines() {
        serde_json::from_str::<serde_json::Value>(&l)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
}

#[test]
fn metrics_forget_endpoints_removed_by_a_reload() {
    // In cutover with max_answers 2, both `new` endpoints are in every answer.
    let zone = |new: &[&str]| {
        zone_of([ServiceBuilder::new("www")
            .initial_phase("cutover")
            .pool("old", &["127.0.9.31"])
            .pool("new", new)
            .health_none()])
    };
    let setup = Setup::new(&[("z.toml", &zone(&["127.0.9.32", "127.0.9.33"]))], "");
    let zone_file = setup.dir.path().join("zones/z.toml");
    let server = setup.start();
    let control = server.control.unwrap();
    for _ in 0..5 {
        server.query("www.shift.test.", RecordType::A);
    }
    let answered = |body: &str, ep: &str| {
        metric(
            &parse_metrics(body),
            "dnsshift_endpoint_answers_total",
            &[("endpoint", ep)],
        )
    };
    let body = metrics_when(control, |b| {
        sample_sum(b, "dnsshift_endpoint_answers_total", "\"127.0.9.33\"") >= 5.0
    });
    assert_eq!(answered(&body, "127.0.9.33"), 5.0);
    std::fs::write(&zone_file, zone(&["127.0.9.32"])).unwrap();
    server.cli_ok(&["reload"]);
    let body = metrics_when(control, |b| !b.contains("127.0.9.33"));
    // Counters of what stays are kept across the reload.
    assert_eq!(answered(&body, "127.0.9.32"), 5.0);
}

/// The value of one metric sample, scraped now.
fn scrape(control: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, body) = http_get(control, "/metrics");
    metric(&parse_metrics(&body), name, labels)
}

#[test]
fn fail_open_metric_is_one_while_nothing_is_usable() {
    let a = Backend::http("127.0.9.41:0");
    let port = a.addr.port();
    let b = Backend::http(&format!("127.0.9.42:{port}"));
    a.set(Behaviour::status(503));
    b.set(Behaviour::status(503));
    let server = Setup::new(
        &[(
            "z.toml",
            &checked_zone("127.0.9.41", "127.0.9.42", port, "150ms", "100ms"),
        )],
        "",
    )
    .start();
    let control = server.control.unwrap();
    let fail_open = || {
        scrape(
            control,
            "dnsshift_service_fail_open",
            &[("service", "www.shift.test.")],
        )
    };
    assert_eq!(fail_open(), 1.0);
    // Answered anyway: old, the weighted pool.
    let m = server.query("www.shift.test.", RecordType::A);
    assert_eq!(answers(&m), vec!["127.0.9.41".to_string()]);
    a.set(Behaviour::ok());
    let back = poll(Duration::from_secs(5), Duration::from_millis(50), || {
        (fail_open() == 0.0).then_some(())
    });
    assert!(back.is_some(), "fail_open stayed 1 after old came back");
}

#[test]
fn endpoint_answers_tell_main_from_staging() {
    // new-only, and new's only endpoint is down: the main name answers old
    // (standby), the staging name still answers new (fail-open).
    let a = Backend::http("127.0.9.51:0");
    let port = a.addr.port();
    let b = Backend::http(&format!("127.0.9.52:{port}"));
    b.set(Behaviour::status(503));
    let zone = zone_of([checked("127.0.9.51", "127.0.9.52", port, "150ms", "100ms")
        .staging("www-next")
        .initial_phase("new-only")
        .phase("new-only", &[("old", 0), ("new", 100)])]);
    let server = Setup::new(&[("z.toml", &zone)], "").start();
    let control = server.control.unwrap();
    let drain_of_new = || {
        let st: serde_json::Value =
            serde_json::from_str(&server.cli_ok(&["status", "www", "--json"])).unwrap();
        st["services"][0]["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pool"] == "new")
            .unwrap()["drained_at_ms"]
            .clone()
    };
    let drain_before = drain_of_new();
    assert!(
        drain_before.is_u64(),
        "new is not answered on the main name"
    );
    for _ in 0..15 {
        let m = server.query("www.shift.test.", RecordType::A);
        assert_eq!(answers(&m), vec!["127.0.9.51".to_string()]);
    }
    for _ in 0..20 {
        let m = server.query("www-next.shift.test.", RecordType::A);
        assert_eq!(answers(&m), vec!["127.0.9.52".to_string()]);
    }
    let answered = |ep: &str, name: &str| {
        scrape(
            control,
            "dnsshift_endpoint_answers_total",
            &[("endpoint", ep), ("name", name)],
        )
    };
    assert_eq!(answered("127.0.9.52", "staging"), 20.0);
    assert_eq!(answered("127.0.9.52", "main"), 0.0);
    assert_eq!(answered("127.0.9.51", "main"), 15.0);
    assert_eq!(answered("127.0.9.51", "staging"), 0.0);
    // Drain counts main-name answers only: staging answers do not move it.
    assert_eq!(drain_of_new(), drain_before);
}
