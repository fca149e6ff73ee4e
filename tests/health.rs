//! Health checks end to end: the real binary checks real local HTTP(S)
//! backends on distinct loopback addresses, the tests break and mend those
//! backends, and assert over real DNS queries that answers follow within the
//! expected number of intervals, and that the log tells why.
//!
//! Every test owns the loopback block 127.33.<block>.0/24 so that tests
//! running in parallel never share an address. All backends of a test listen
//! on the same port (the url template is shared), each on its own address.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backend::{Backend, Behaviour, self_signed};
use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// Added to every computed deadline: process scheduling, plan rebuild,
/// query round trips, and a busy two-core machine.
const SLACK: Duration = Duration::from_millis(700);
/// Pause between polls of DNS answers.
const EVERY: Duration = Duration::from_millis(10);
/// The main name of every test service.
const WWW: &str = "www.shift.test.";

/// Address `host` of a test's block.
fn ip(block: u8, host: u8) -> String {
    format!("127.33.{block}.{host}")
}

/// Starts one backend on each `127.33.<block>.<host>`, all on one port
/// (found by binding the first on port 0; retried if another address has it).
fn backends(
    block: u8,
    hosts: &[u8],
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> (u16, Vec<Backend>) {
    let start = |addr: String| match tls {
        Some(t) => Backend::https(&addr, t.clone()),
        None => Backend::http(&addr),
    };
    for _ in 0..20 {
        let first = start(format!("{}:0", ip(block, hosts[0])));
        let port = first.addr.port();
        let free = hosts[1..]
            .iter()
            .all(|h| TcpListener::bind((ip(block, *h).as_str(), port)).is_ok());
        if !free {
            continue;
        }
        let mut all = vec![first];
        all.extend(
            hosts[1..]
                .iter()
                .map(|h| start(format!("{}:{port}", ip(block, *h)))),
        );
        return (port, all);
    }
    panic!("no common free port for block {block}");
}

/// Weights of a phase that answers only `old`, with `new` the standby.
const OLD_ONLY: &[(&str, u32)] = &[("old", 100), ("new", 0)];
/// Weights of a phase that splits evenly.
const HALF: &[(&str, u32)] = &[("old", 50), ("new", 50)];

/// A test's `www` service: up to 8 answers, every endpoint checked at
/// `http://{endpoint}:<port>/healthz` every `interval`, with `timeout`.
fn www(port: u16, interval: &str, timeout: &str) -> ServiceBuilder {
    ServiceBuilder::new("www")
        .max_answers(8)
        .health_http(&format!("http://{{endpoint}}:{port}/healthz"))
        .timing(interval, timeout)
}

/// Starts the server on the `shift.test.` zone with this one service.
fn start(service: ServiceBuilder) -> Server {
    Setup::new(&[("shift.test.toml", &zone_of([service]))], "").start()
}

/// The sorted A answers of one query for `name`, or the rcode if not NOERROR.
fn try_a(server: &Server, name: &str) -> Result<Vec<String>, ResponseCode> {
    let m = server.query(name, RecordType::A);
    if m.metadata.response_code != ResponseCode::NoError {
        return Err(m.metadata.response_code);
    }
    let mut got = answers(&m);
    got.sort();
    Ok(got)
}

/// The sorted A answers of one query for `name`, which must be NOERROR.
fn a(server: &Server, name: &str) -> Vec<String> {
    try_a(server, name).unwrap_or_else(|rcode| panic!("{name}: {rcode}"))
}

/// Sorted addresses of a block.
fn set(block: u8, hosts: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = hosts.iter().map(|h| ip(block, *h)).collect();
    v.sort();
    v
}

/// Polls until `f` holds (bounded by `timeout`); returns the time since
/// `since`. Panics with `what` and the server log otherwise.
fn wait(
    server: &Server,
    since: Instant,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> bool,
) -> Duration {
    if poll(timeout, EVERY, || f().then_some(())).is_none() {
        panic!(
            "{what}: not within {timeout:?}; log:\n{}",
            server.log.lines().join("\n")
        );
    }
    since.elapsed()
}

/// Waits until one query for www answers exactly `want`; returns the time since `since`.
fn wait_answer(server: &Server, since: Instant, timeout: Duration, want: &[String]) -> Duration {
    wait(server, since, timeout, &format!("answer {want:?}"), || {
        try_a(server, WWW).is_ok_and(|got| got == want)
    })
}

/// Log lines with this message about this endpoint.
fn lines_about(server: &Server, msg: &str, endpoint: &str) -> Vec<String> {
    server
        .log
        .lines()
        .into_iter()
        .filter(|l| is_msg(l, msg) && field(l, "endpoint").as_deref() == Some(endpoint))
        .collect()
}

/// Waits for a log line with this message about this endpoint; returns it.
fn wait_line(server: &Server, msg: &str, endpoint: &str, timeout: Duration) -> String {
    let (_, line) = server.log.wait_for(0, timeout, |l| {
        is_msg(l, msg) && field(l, "endpoint").as_deref() == Some(endpoint)
    });
    line
}

/// Waits until `backend` has seen `n` more checks than now: time for
/// that many rounds to have run, and been judged, everywhere.
fn wait_checks(server: &Server, backend: &Backend, n: usize, interval: Duration) {
    let seen = backend.seen().len();
    let timeout = interval.mul_f64(1.1 * (n + 1) as f64) + SLACK;
    let what = format!("{n} more checks");
    wait(server, Instant::now(), timeout, &what, || {
        backend.seen().len() >= seen + n
    });
}

/// The bound for a verdict change: the first deciding probe starts within
/// one jittered interval (up to 1.1x), each further one about an interval
/// later, each may take up to `timeout`, and then the plan is rebuilt.
fn bound(n: u32, interval: Duration, timeout: Duration) -> Duration {
    interval.mul_f64(1.1 * f64::from(n + 1)) + timeout + SLACK
}

/// The least time `n` consecutive probe results can take once the backend
/// changed: n-1 gaps of at least 0.9 intervals (0.8 here, for latency).
fn least(n: u32, interval: Duration) -> Duration {
    interval.mul_f64(0.8 * f64::from(n.saturating_sub(1)))
}

// ------------------------------------------------------------------ rise/fall

#[test]
fn an_endpoint_leaves_after_fall_failures_and_returns_after_rise_successes() {
    let b = 1;
    let (port, mut be) = backends(b, &[1, 2, 3], None);
    let server = start(
        www(port, "150ms", "100ms")
            .rise_fall(3, 3)
            .pool("old", &set(b, &[1, 2]))
            .pool("new", &set(b, &[3]))
            .phase("old-only", OLD_ONLY),
    );
    let (interval, timeout) = (Duration::from_millis(150), Duration::from_millis(100));
    assert_eq!(a(&server, WWW), set(b, &[1, 2]));
    let e1 = ip(b, 1);

    // 503 from .1: out after `fall` failures, not sooner.
    let t0 = Instant::now();
    be[0].set(Behaviour::status(503));
    let down = wait_answer(&server, t0, bound(3, interval, timeout), &set(b, &[2]));
    eprintln!("rise/fall: .1 out {down:?} after its backend went 503 (interval 150ms, fall 3)");
    assert!(
        down >= least(3, interval),
        "left after {down:?}: sooner than 3 failures allow"
    );
    let failed = be[0].seen().iter().filter(|s| s.at >= t0).count();
    assert!(failed >= 2, "only {failed} checks since the 503");
    let line = wait_line(&server, "endpoint unhealthy", &e1, SLACK);
    assert_eq!(
        field(&line, "reason").as_deref(),
        Some("status 503"),
        "{line}"
    );
    assert_eq!(field(&line, "pool").as_deref(), Some("old"), "{line}");

    // It stays out while failing: several more intervals, every answer without it.
    let until = Instant::now() + interval * 5;
    while Instant::now() < until {
        assert_eq!(a(&server, WWW), set(b, &[2]));
        std::thread::sleep(Duration::from_millis(20));
    }

    // 200 again: back after `rise` successes, not sooner.
    let t1 = Instant::now();
    be[0].set(Behaviour::ok());
    let up = wait_answer(&server, t1, bound(3, interval, timeout), &set(b, &[1, 2]));
    eprintln!("rise/fall: .1 back {up:?} after its backend recovered (interval 150ms, rise 3)");
    assert!(
        up >= least(3, interval),
        "came back after {up:?}: sooner than 3 successes allow"
    );
    let line = wait_line(&server, "endpoint healthy", &e1, SLACK);
    assert_eq!(
        field(&line, "reason").as_deref(),
        Some("status 200"),
        "{line}"
    );

    // A stopped backend: connection refused.
    let t2 = Instant::now();
    be[1].stop();
    let refused = wait_answer(&server, t2, bound(3, interval, timeout), &set(b, &[1]));
    eprintln!("rise/fall: .2 out {refused:?} after its backend stopped (interval 150ms, fall 3)");
    let line = wait_line(&server, "endpoint unhealthy", &ip(b, 2), SLACK);
    assert_eq!(
        field(&line, "reason").as_deref(),
        Some("connection refused"),
        "{line}"
    );

    // Exactly one log line per state change, however many checks ran.
    wait_checks(&server, &be[0], 4, interval);
    assert_eq!(lines_about(&server, "endpoint unhealthy", &e1).len(), 1);
    assert_eq!(lines_about(&server, "endpoint healthy", &e1).len(), 1);
    assert_eq!(
        lines_about(&server, "endpoint unhealthy", &ip(b, 2)).len(),
        1
    );
    assert!(lines_about(&server, "endpoint healthy", &ip(b, 2)).is_empty());
    assert!(lines_about(&server, "endpoint unhealthy", &ip(b, 3)).is_empty());
}

// ------------------------------------------------------------------ pools

/// Counts, over `n` queries, how often each answer set came back.
fn split(server: &Server, n: usize) -> std::collections::BTreeMap<Vec<String>, usize> {
    let mut m = std::collections::BTreeMap::new();
    for _ in 0..n {
        *m.entry(a(server, WWW)).or_insert(0) += 1;
    }
    m
}

#[test]
fn a_pool_with_no_healthy_endpoint_gives_its_weight_to_the_others() {
    let b = 2;
    let (port, be) = backends(b, &[1, 2, 3, 4], None);
    let server = start(
        www(port, "150ms", "100ms")
            .rise_fall(2, 2)
            .pool("old", &set(b, &[1, 2]))
            .pool("new", &set(b, &[3, 4]))
            .phase("half", HALF),
    );
    let (interval, timeout) = (Duration::from_millis(150), Duration::from_millis(100));
    let (old, new) = (set(b, &[1, 2]), set(b, &[3, 4]));
    let s = split(&server, 400);
    assert_eq!(s.len(), 2, "{s:?}");
    assert!((120..=280).contains(&s[&old]), "not about 50/50: {s:?}");
    assert!(s.contains_key(&new), "{s:?}");

    // The whole new pool fails: old gets every answer.
    let t0 = Instant::now();
    be[2].set(Behaviour::status(503));
    be[3].set(Behaviour::status(500));
    let moved = wait(&server, t0, bound(2, interval, timeout), "all old", || {
        (0..30).all(|_| a(&server, WWW) == old)
    });
    eprintln!("pools: new pool down -> 100% old after {moved:?} (interval 150ms, fall 2)");
    let s = split(&server, 300);
    assert_eq!(s.get(&old), Some(&300), "{s:?}");

    // One endpoint of new is back: the pool answers again with its full weight.
    let t1 = Instant::now();
    be[2].set(Behaviour::ok());
    let back = wait(&server, t1, bound(2, interval, timeout), "new back", || {
        a(&server, WWW) == [ip(b, 3)]
    });
    eprintln!("pools: one new endpoint back -> new answered after {back:?} (rise 2)");
    let s = split(&server, 400);
    assert_eq!(s.len(), 2, "{s:?}");
    assert!(
        (120..=280).contains(&s[&vec![ip(b, 3)]]),
        "not about 50/50: {s:?}"
    );
}

#[test]
fn standby_takes_over_only_when_weighted_pools_are_down_then_everything_fails_open() {
    let b = 3;
    let (port, be) = backends(b, &[1, 2, 3], None);
    let server = start(
        www(port, "150ms", "100ms")
            .rise_fall(2, 2)
            .pool("old", &set(b, &[1, 2]))
            .pool("new", &set(b, &[3]))
            .phase("old-only", OLD_ONLY),
    );
    let (interval, timeout) = (Duration::from_millis(150), Duration::from_millis(100));
    let within = bound(2, interval, timeout);
    let old = set(b, &[1, 2]);
    assert_eq!(split(&server, 100).get(&old), Some(&100));

    // One old endpoint down: the other still answers; the standby does not.
    let t = Instant::now();
    be[0].set(Behaviour::status(503));
    wait_answer(&server, t, within, &set(b, &[2]));
    assert_eq!(split(&server, 100).get(&set(b, &[2])), Some(&100));

    // The whole weighted pool down: the standby takes over.
    let t = Instant::now();
    be[1].set(Behaviour::status(503));
    let took = wait_answer(&server, t, within, &set(b, &[3]));
    eprintln!(
        "standby: takeover {took:?} after the last old endpoint failed (interval 150ms, fall 2)"
    );
    assert_eq!(split(&server, 100).get(&set(b, &[3])), Some(&100));

    // Everything down: fail open, answering as if all were healthy (the
    // phase's weights: old only).
    let t = Instant::now();
    be[2].set(Behaviour::status(503));
    let open = wait_answer(&server, t, within, &old);
    eprintln!("fail-open: {open:?} after the standby failed too");
    assert_eq!(split(&server, 100).get(&old), Some(&100));

    // An old endpoint recovers: only it is answered again.
    let t = Instant::now();
    be[1].set(Behaviour::ok());
    wait_answer(&server, t, within, &set(b, &[2]));
}

#[test]
fn on_all_down_servfail_answers_servfail_when_everything_is_down() {
    let b = 4;
    let (port, be) = backends(b, &[1, 2], None);
    let server = start(
        www(port, "150ms", "100ms")
            .set("on_all_down", "\"servfail\"")
            .rise_fall(2, 2)
            .pool("old", &set(b, &[1]))
            .pool("new", &set(b, &[2]))
            .phase("half", HALF),
    );
    let (interval, timeout) = (Duration::from_millis(150), Duration::from_millis(100));
    let rcode = || server.query(WWW, RecordType::A).metadata.response_code;
    assert_eq!(rcode(), ResponseCode::NoError);

    let t = Instant::now();
    be[0].set(Behaviour::status(503));
    be[1].set(Behaviour::status(503));
    let sf = wait(&server, t, bound(2, interval, timeout), "SERVFAIL", || {
        rcode() == ResponseCode::ServFail
    });
    eprintln!("servfail: {sf:?} after both pools failed (interval 150ms, fall 2)");
    for _ in 0..20 {
        assert_eq!(rcode(), ResponseCode::ServFail);
    }

    let t = Instant::now();
    be[1].set(Behaviour::ok());
    wait_answer(&server, t, bound(2, interval, timeout), &set(b, &[2]));
}

// ------------------------------------------------------------------ check_address

#[test]
fn check_address_checks_another_address_than_the_one_served() {
    let b = 5;
    // .1 is served but its check goes to .2; .1's own backend fails every
    // request, so a check sent there would take it down. .3 has nothing
    // listening; .4 is the standby.
    let (port, mut be) = backends(b, &[1, 2, 4], None);
    be[0].set(Behaviour::status(503));
    let server = start(
        www(port, "150ms", "100ms")
            .rise_fall(2, 2)
            .pool("new", &set(b, &[4]))
            .pool_endpoints(
                "old",
                &[
                    endpoint(&ip(b, 1), &format!("check_address = {:?}", ip(b, 2))),
                    quoted(&ip(b, 3)),
                ],
            )
            .phase("old-only", OLD_ONLY),
    );
    let (interval, timeout) = (Duration::from_millis(150), Duration::from_millis(100));
    assert_eq!(a(&server, WWW), [ip(b, 1)]);
    assert!(be[0].seen().is_empty(), "{:?}", be[0].seen());
    let seen = be[1].seen();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|s| s.path == "/healthz"), "{seen:?}");
    let line = wait_line(&server, "endpoint unhealthy", &ip(b, 3), SLACK);
    assert_eq!(
        field(&line, "reason").as_deref(),
        Some("connection refused")
    );

    // The check address stops answering: the served address leaves.
    let t = Instant::now();
    be[1].stop();
    let gone = wait_answer(&server, t, bound(2, interval, timeout), &[ip(b, 4)]);
    eprintln!("check_address: served address out {gone:?} after its check address stopped");
    let line = wait_line(&server, "endpoint unhealthy", &ip(b, 1), SLACK);
    assert_eq!(
        field(&line, "reason").as_deref(),
        Some("connection refused")
    );

    be[1].restart();
    let t = Instant::now();
    wait_answer(&server, t, bound(2, interval, timeout), &[ip(b, 1)]);
    assert!(be[0].seen().is_empty(), "{:?}", be[0].seen());
}

// ------------------------------------------------------------------ first round

#[test]
fn the_first_round_decides_the_first_answers_and_is_logged_before_ready() {
    let b = 6;
    // .1 ok, .2 503, .3 nothing listening (http); .4 nothing listening and
    // .5 listening (tcp checks); .6 the standby.
    let (port, be) = backends(b, &[1, 2, 5, 6], None);
    be[1].set(Behaviour::status(503));
    // A long interval: only the first round can have found the failures
    // by the time the server is ready.
    let server = start(
        www(port, "5s", "1s")
            .rise_fall(2, 3)
            .pool("new", &set(b, &[6]))
            .pool_endpoints(
                "old",
                &[
                    quoted(&ip(b, 1)),
                    quoted(&ip(b, 2)),
                    quoted(&ip(b, 3)),
                    endpoint(
                        &ip(b, 4),
                        &format!("health = {{ kind = \"tcp\", port = {port} }}"),
                    ),
                    endpoint(
                        &ip(b, 5),
                        &format!("health = {{ kind = \"tcp\", port = {port} }}"),
                    ),
                ],
            )
            .phase("old-only", OLD_ONLY),
    );
    // The very first query after "ready" already reflects health.
    assert_eq!(a(&server, WWW), set(b, &[1, 5]));

    let lines = server.log.lines();
    let pos = |pred: &dyn Fn(&str) -> bool| lines.iter().position(|l| pred(l));
    let done = pos(&|l| is_msg(l, "first health round done")).expect("first round line");
    let ready = pos(&|l| is_msg(l, "ready")).unwrap();
    assert!(done < ready, "first round logged after ready");
    assert_eq!(field(&lines[done], "endpoints").as_deref(), Some("6"));
    for (host, reason) in [
        (2, "status 503"),
        (3, "connection refused"),
        (4, "connection refused"),
    ] {
        let i =
            pos(&|l| is_msg(l, "endpoint unhealthy") && field(l, "endpoint") == Some(ip(b, host)))
                .unwrap_or_else(|| panic!("no unhealthy line for .{host}:\n{}", lines.join("\n")));
        assert!(i < done, ".{host} logged after the first round");
        assert_eq!(field(&lines[i], "reason").as_deref(), Some(reason));
    }
    // Healthy at start is the default: no line for those.
    for host in [1, 5, 6] {
        assert!(lines_about(&server, "endpoint healthy", &ip(b, host)).is_empty());
        assert!(lines_about(&server, "endpoint unhealthy", &ip(b, host)).is_empty());
    }
}

// ------------------------------------------------------------------ Host and SNI

#[test]
fn http_checks_send_the_configured_host_header() {
    let b = 7;
    let (port, be) = backends(b, &[1, 2], None);
    let server = start(
        www(port, "150ms", "100ms")
            .pool("new", &set(b, &[2]))
            .pool_endpoints(
                "old",
                &[endpoint(
                    &ip(b, 1),
                    r#"health = { host = "www.example.com" }"#,
                )],
            )
            .phase("half", HALF),
    );
    let _ = a(&server, WWW);
    let seen = be[0].seen();
    assert!(!seen.is_empty());
    for s in &seen {
        assert_eq!(s.host.as_deref(), Some("www.example.com"), "{s:?}");
        assert_eq!(s.path, "/healthz");
        assert_eq!(s.sni, None);
    }
    // Without `host`, the Host header is the checked address.
    let want = format!("{}:{port}", ip(b, 2));
    let seen = be[1].seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|s| s.host.as_deref() == Some(want.as_str())),
        "{seen:?}"
    );
}

#[test]
fn https_checks_send_sni_and_verify_the_certificate_unless_insecure() {
    let b = 8;
    let name = "lb.example.test";
    let (tls, pem) = self_signed(name);
    let (port, be) = backends(b, &[1, 2, 3, 4], Some(&tls));
    let (_standby_port, standby) = backends(b, &[5], None);
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &pem).unwrap();
    let ca_path = quoted(ca.path().to_str().unwrap());
    // .1: host + the CA -> verified. .2: host, no CA -> unknown issuer.
    // .3: host, insecure -> passes. .4: the CA, but a host the certificate
    // does not name -> fails. .5: a standby without checks.
    let server = start(
        ServiceBuilder::new("www")
            .max_answers(8)
            .pool_with_health("new", &set(b, &[5]), r#"{ kind = "none" }"#)
            .pool_endpoints(
                "old",
                &[
                    endpoint(&ip(b, 1), &format!("health = {{ ca_file = {ca_path} }}")),
                    endpoint(&ip(b, 2), ""),
                    endpoint(&ip(b, 3), "health = { insecure = true }"),
                    endpoint(
                        &ip(b, 4),
                        &format!(
                            "health = {{ ca_file = {ca_path}, host = \"other.example.test\" }}"
                        ),
                    ),
                ],
            )
            .health_http(&format!("https://{{endpoint}}:{port}/healthz"))
            .health("host", quoted(name))
            .timing("400ms", "300ms")
            .phase("old-only", OLD_ONLY),
    );
    assert_eq!(a(&server, WWW), set(b, &[1, 3]));

    for i in [0, 2] {
        let seen = be[i].seen();
        assert!(!seen.is_empty(), "backend {i} saw no check");
        for s in &seen {
            assert_eq!(s.sni.as_deref(), Some(name), "{s:?}");
            assert_eq!(s.host.as_deref(), Some(&*format!("{name}:{port}")), "{s:?}");
            assert_eq!(s.path, "/healthz");
        }
    }
    // Failed handshakes never reach HTTP.
    assert!(be[1].seen().is_empty(), "{:?}", be[1].seen());
    assert!(be[3].seen().is_empty(), "{:?}", be[3].seen());
    for host in [2, 4] {
        let line = wait_line(&server, "endpoint unhealthy", &ip(b, host), SLACK);
        let reason = field(&line, "reason").unwrap();
        assert!(
            reason.contains("TLS") && reason.contains("certificate"),
            ".{host}: {reason}"
        );
        assert_eq!(field(&line, "kind").as_deref(), Some("tls"), "{line}");
        // Words, not rustls's Debug output or reqwest's URL-laden wrapper.
        for debug in [
            "UnknownIssuer",
            "Other(",
            "NotValidFor",
            "https://",
            "error sending",
        ] {
            assert!(!reason.contains(debug), ".{host}: {reason}");
        }
    }
    let line = wait_line(&server, "endpoint unhealthy", &ip(b, 2), SLACK);
    let reason = field(&line, "reason").unwrap();
    assert!(
        reason.contains("signed by an unknown authority"),
        "{reason}"
    );
    assert!(standby[0].seen().is_empty());
}

// ------------------------------------------------------------------ slow and bad backends

#[test]
fn a_hanging_backend_stalls_neither_dns_nor_the_other_checks() {
    let b = 9;
    let (port, be) = backends(b, &[1, 2, 3, 4], None);
    // .1 has a long timeout: while its check hangs, .2's failure must
    // still be noticed on .2's own schedule, and DNS must answer at once.
    let server = start(
        www(port, "150ms", "100ms")
            .rise_fall(2, 3)
            .pool("new", &set(b, &[4]))
            .pool_endpoints(
                "old",
                &[
                    endpoint(
                        &ip(b, 1),
                        r#"health = { interval = "600ms", timeout = "500ms" }"#,
                    ),
                    quoted(&ip(b, 2)),
                    quoted(&ip(b, 3)),
                ],
            )
            .phase("old-only", OLD_ONLY),
    );
    assert_eq!(a(&server, WWW), set(b, &[1, 2, 3]));
    let (interval, timeout) = (Duration::from_millis(150), Duration::from_millis(100));
    let (slow_interval, slow_timeout) = (Duration::from_millis(600), Duration::from_millis(500));

    let t0 = Instant::now();
    be[0].set(Behaviour::Hang);
    be[1].set(Behaviour::status(503));
    let mut slowest = Duration::ZERO;
    let mut two_out = None;
    let mut one_out = None;
    let deadline = t0 + bound(3, slow_interval, slow_timeout) + SLACK;
    while (two_out.is_none() || one_out.is_none()) && Instant::now() < deadline {
        let q = Instant::now();
        let got = a(&server, WWW);
        slowest = slowest.max(q.elapsed());
        if two_out.is_none() && !got.contains(&ip(b, 2)) {
            two_out = Some(t0.elapsed());
        }
        if one_out.is_none() && !got.contains(&ip(b, 1)) {
            one_out = Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let log = || server.log.lines().join("\n");
    let two_out = two_out.unwrap_or_else(|| panic!(".2 never left; log:\n{}", log()));
    let one_out = one_out.unwrap_or_else(|| panic!(".1 never left; log:\n{}", log()));
    eprintln!(
        "hang: .2 (503, interval 150ms, fall 3) out after {two_out:?}; .1 (hang, interval 600ms, timeout 500ms, fall 3) out after {one_out:?}; slowest DNS answer {slowest:?}"
    );
    assert!(
        two_out <= bound(3, interval, timeout),
        ".2 took {two_out:?} while .1 hung"
    );
    assert!(two_out < one_out);
    assert!(
        one_out <= bound(3, slow_interval, slow_timeout),
        ".1 took {one_out:?}"
    );
    assert!(
        slowest < Duration::from_millis(250),
        "a DNS answer took {slowest:?} while a check hung"
    );
    assert_eq!(a(&server, WWW), set(b, &[3]));
    let line = wait_line(&server, "endpoint unhealthy", &ip(b, 1), SLACK);
    assert_eq!(
        field(&line, "reason").as_deref(),
        Some("timeout after 500ms"),
        "{line}"
    );
    assert_eq!(field(&line, "kind").as_deref(), Some("timeout"));

    // A hung check is cut at its timeout and does not delay the next one:
    // checks of the hanging backend still start about an interval apart.
    let starts: Vec<Instant> = be[0]
        .seen()
        .iter()
        .map(|s| s.at)
        .filter(|at| *at >= t0)
        .collect();
    assert!(starts.len() >= 3, "{} checks", starts.len());
    for w in starts.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= slow_interval.mul_f64(0.85) && gap <= slow_interval.mul_f64(1.1) + SLACK / 4,
            "checks of the hanging backend {gap:?} apart (interval {slow_interval:?}): {:?}",
            starts.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
        );
    }

    // Mending .2 brings it back while .1 still hangs.
    let t1 = Instant::now();
    be[1].set(Behaviour::ok());
    wait_answer(&server, t1, bound(2, interval, timeout), &set(b, &[2, 3]));
}

/// A hundred endpoints checked every second, all started together, are not
/// checked in a burst each second: within a few intervals their checks are
/// spread evenly over the interval (a thousand connects in one burst is what
/// stretched the DNS tail in issue 21).
#[test]
fn checks_of_many_endpoints_spread_evenly_over_the_interval() {
    const ENDPOINTS: usize = 100;
    let b = 12;
    let (port, be) = backends(b, &[1], None);
    // Answer addresses that are never contacted; every check goes to the
    // one backend.
    let check_address = format!("check_address = {}", quoted(&ip(b, 1)));
    let items: Vec<String> = (0..ENDPOINTS)
        .map(|i| endpoint(&format!("10.12.0.{}", i + 1), &check_address))
        .collect();
    let interval = Duration::from_secs(1);
    let server = start(
        www(port, "1s", "500ms")
            .pool_endpoints("main", &items)
            .phase("all", &[("main", 1)]),
    );
    // Five intervals after the first round every endpoint is on its phase;
    // six rounds have run by then.
    let t0 = Instant::now();
    wait(
        &server,
        t0,
        interval * 7 + SLACK,
        "six rounds of checks",
        || be[0].seen().len() >= ENDPOINTS * 6,
    );
    let from = be[0].seen().len();
    let t1 = Instant::now();
    wait(&server, t1, interval * 2 + SLACK, "two more rounds", || {
        be[0].seen().len() >= from + ENDPOINTS * 2
    });
    let mut at: Vec<Instant> = be[0].seen()[from..from + ENDPOINTS * 2]
        .iter()
        .map(|s| s.at)
        .collect();
    at.sort();
    // The most checks that arrived within any tenth of the interval. Even
    // spreading gives ten; started together and merely jittered, as
    // before, the checks still bunched into a third of the interval six
    // rounds on, about 27 in the busiest tenth. Up to 18 leaves room for a
    // stall of the busy test machine that delays some checks into others.
    let window = interval / 10;
    let busiest = (0..at.len())
        .map(|i| at[i..].iter().take_while(|t| **t - at[i] < window).count())
        .max()
        .unwrap();
    eprintln!("spread: at most {busiest} of {ENDPOINTS} checks a second arrived within {window:?}");
    assert!(
        busiest <= 18,
        "{busiest} of {ENDPOINTS} checks a second arrived within {window:?}: bunched, not spread"
    );
}

#[test]
fn trickling_huge_and_wrong_bodies_fail_the_check() {
    let b = 10;
    let (port, be) = backends(b, &[1, 2, 3, 4, 5, 6], None);
    be[2].set(Behaviour::body("all systems READY"));
    let server = start(
        www(port, "300ms", "250ms")
            .rise_fall(2, 2)
            .pool("new", &set(b, &[6]))
            .pool_endpoints(
                "old",
                &[
                    quoted(&ip(b, 1)),
                    quoted(&ip(b, 2)),
                    endpoint(&ip(b, 3), r#"health = { expect_body = "READY" }"#),
                    quoted(&ip(b, 4)),
                    quoted(&ip(b, 5)),
                ],
            )
            .phase("old-only", OLD_ONLY),
    );
    let (interval, timeout) = (Duration::from_millis(300), Duration::from_millis(250));
    assert_eq!(a(&server, WWW), set(b, &[1, 2, 3, 4, 5]));

    let t0 = Instant::now();
    be[0].set(Behaviour::Trickle);
    be[1].set(Behaviour::Huge(100 * 1024));
    be[2].set(Behaviour::body("not yet"));
    // Under the bound: still healthy.
    be[4].set(Behaviour::Huge(60 * 1024));
    let took = wait_answer(&server, t0, bound(2, interval, timeout), &set(b, &[4, 5]));
    eprintln!(
        "bodies: trickle, huge and wrong bodies out after {took:?} (interval 300ms, timeout 250ms, fall 2)"
    );
    for (host, reason, kind) in [
        (1, "timeout after 250ms", "timeout"),
        (2, "body larger than 64 KiB", "body"),
        (3, "body does not contain \"READY\"", "body"),
    ] {
        let line = wait_line(&server, "endpoint unhealthy", &ip(b, host), SLACK);
        assert_eq!(field(&line, "reason").as_deref(), Some(reason), "{line}");
        assert_eq!(field(&line, "kind").as_deref(), Some(kind), "{line}");
    }
    wait_checks(&server, &be[4], 3, interval);
    assert_eq!(a(&server, WWW), set(b, &[4, 5]));
    assert!(lines_about(&server, "endpoint unhealthy", &ip(b, 5)).is_empty());

    let t1 = Instant::now();
    be[2].set(Behaviour::body("READY now"));
    wait_answer(
        &server,
        t1,
        bound(2, interval, timeout),
        &set(b, &[3, 4, 5]),
    );
}

// ------------------------------------------------------------------ validation

#[test]
fn check_reports_bad_health_keys_with_file_and_line() {
    let zone = ZoneBuilder::new("shift.test.")
        .service(
            ServiceBuilder::new("www")
                .pool("old", &["192.0.2.1"])
                .pool("new", &["192.0.2.2"])
                .health_http("http://{endpoint}/healthz")
                .timing("1s", "1s"),
        )
        .to_toml();
    let setup = Setup::new(&[("shift.test.toml", &zone)], "");
    let out = check_config(setup.dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("shift.test.toml:19: service.www.health.timeout:")
            && err.contains("timeout (1s) must be shorter than interval (1s)"),
        "{err}"
    );
}

// ------------------------------------------------------------ priority

/// (name, niceness) of every thread of process `pid`, from
/// `/proc/<pid>/task/*/{comm,stat}`.
fn threads(pid: u32) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        // After "pid (comm) ", fields run from 3 (state); nice is field 19.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let nice = rest
            .split_whitespace()
            .nth(19 - 3)
            .unwrap()
            .parse()
            .unwrap();
        out.push((comm.trim().to_string(), nice));
    }
    out
}

#[test]
fn checks_run_on_their_own_thread_below_the_dns_workers_priority() {
    let b = 11;
    let (port, be) = backends(b, &[1, 2], None);
    let server = Setup::new(
        &[(
            "shift.test.toml",
            &zone_of([www(port, "150ms", "100ms")
                .pool("old", &[ip(b, 1)])
                .pool("new", &[ip(b, 2)])
                .phase("all", OLD_ONLY)]),
        )],
        "udp_workers = 2\n",
    )
    .start();
    // The checks are running (the first round was before ready; one more).
    wait_checks(&server, &be[0], 1, Duration::from_millis(150));
    let threads = threads(server.pid());
    let nice_of = |name: &str| -> Vec<i32> {
        threads
            .iter()
            .filter(|(n, _)| n == name || n.starts_with(&format!("{name}-")))
            .map(|(_, nice)| *nice)
            .collect()
    };
    let shown = format!("{threads:?}");
    // The process's niceness: 0 as systemd starts it, more under `nice`.
    let base = nice_of("dnsshift");
    assert_eq!(base.len(), 1, "{shown}");
    let (base, lower) = (base[0], (base[0] + 10).min(19));
    assert!(lower > base, "run the test below niceness 19: {shown}");
    // The checks' thread (and any blocking thread of its runtime) and the
    // control server's yield to DNS ...
    let health = nice_of("health");
    assert!(
        !health.is_empty() && health.iter().all(|n| *n == lower),
        "{shown}"
    );
    let control = nice_of("control");
    assert!(
        !control.is_empty() && control.iter().all(|n| *n == lower),
        "{shown}"
    );
    // ... which keeps the process's niceness: the fast-path workers and
    // the runtime that answers TCP and the fallback.
    assert_eq!(nice_of("dns-udp"), [base, base], "{shown}");
    // (Its blocking threads inherit the niceness of whoever first needs
    // them, the control thread included; its workers, one per CPU, start
    // with the process.)
    let workers = threads
        .iter()
        .filter(|(n, nice)| n == "tokio-rt-worker" && *nice == base)
        .count();
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert!(workers >= cpus, "{cpus} CPUs: {shown}");
}
