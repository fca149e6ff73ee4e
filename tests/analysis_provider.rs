//! Issue 17's measuring half against the real thing: Debian's Prometheus
//! scraping the stand-in load balancers of `tests/common/prom.rs` while
//! the test sends them traffic, asked through `Provider`; and the rest of
//! that harness (clients through real DNS, the webhook receiver) proved on
//! its own.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::prom::{Clients, Hooks, LoadBalancers, Prometheus, try_http};
use common::{ServiceBuilder, Setup, zone_of};
use dnsshift::analysis::provider::{Provider, ProviderError, Reading};

/// The test's own bound on one provider query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// The window of the rate queries.
const WINDOW: &str = "10s";

fn error_ratio(pool: &str) -> String {
    format!(
        r#"sum(rate(lb_requests_total{{pool="{pool}",code=~"5.."}}[{WINDOW}])) / sum(rate(lb_requests_total{{pool="{pool}"}}[{WINDOW}]))"#
    )
}

/// Asks `provider` now, on a runtime of its own; returns the answer and
/// how long it took.
fn ask(provider: &Provider, query: &str) -> (Result<Reading, ProviderError>, Duration) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let start = Instant::now();
    let r = rt.block_on(provider.query(&http, query, SystemTime::now(), QUERY_TIMEOUT));
    (r, start.elapsed())
}

fn value(r: Result<Reading, ProviderError>) -> f64 {
    match r {
        Ok(Reading::Value(v)) => v,
        other => panic!("expected a value, got {other:?}"),
    }
}

fn error(r: Result<Reading, ProviderError>) -> String {
    match r {
        Err(e) => e.message,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// GETs `/` from every address in turn, `per_second` in all, until
/// stopped; bounded by `max` requests.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Traffic {
    fn start(addrs: Vec<SocketAddr>, per_second: u32, max: u64) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let period = Duration::from_secs(1) / per_second;
            let start = Instant::now();
            let mut sent = 0u64;
            while !s.load(Ordering::SeqCst) && sent < max {
                let addr = addrs[sent as usize % addrs.len()];
                try_http(addr, "GET", "/", "", Duration::from_secs(2));
                sent += 1;
                let due = start + period * sent as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            sent
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

#[test]
fn load_balancers_fail_at_the_set_ratio_and_export_their_own_counters() {
    let lbs = LoadBalancers::start(&[
        ("old", &["127.0.9.1"]),
        ("new", &["127.0.9.2", "127.0.9.3"]),
    ]);
    let port = lbs.port();
    assert_eq!(
        lbs.scrape_targets(),
        ["127.0.9.1", "127.0.9.2", "127.0.9.3"]
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), port))
            .to_vec()
    );
    lbs.set_error_ratio("new", 0.2);
    let new = lbs.addrs("new");
    // Every run of five consecutive requests to the pool holds exactly one
    // 500, whichever endpoint answers it.
    let codes: Vec<u16> = (0..50)
        .map(|i| {
            try_http(new[i % 2], "GET", "/", "", Duration::from_secs(2))
                .unwrap()
                .0
        })
        .collect();
    for w in codes.windows(5) {
        assert_eq!(w.iter().filter(|&&c| c == 500).count(), 1, "{codes:?}");
    }
    assert!(codes.iter().all(|&c| c == 200 || c == 500), "{codes:?}");
    assert_eq!((lbs.count("new"), lbs.errors("new")), (50, 10));
    assert_eq!(lbs.count("old"), 0);
    // /healthz answers and counts nowhere; /metrics is the endpoint's own.
    let old = lbs.addrs("old")[0];
    assert_eq!(
        try_http(old, "GET", "/healthz", "", Duration::from_secs(2))
            .unwrap()
            .0,
        200
    );
    let (code, text) = try_http(new[0], "GET", "/metrics", "", Duration::from_secs(2)).unwrap();
    assert_eq!(code, 200);
    let fails_on_first = codes.iter().step_by(2).filter(|&&c| c == 500).count();
    assert!(
        text.contains(&format!(
            "lb_requests_total{{pool=\"new\",code=\"200\"}} {}\n",
            25 - fails_on_first
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "lb_requests_total{{pool=\"new\",code=\"500\"}} {fails_on_first}\n"
        )),
        "{text}"
    );
    assert!(!text.contains("pool=\"old\""), "{text}");
    let (_, text) = try_http(old, "GET", "/metrics", "", Duration::from_secs(2)).unwrap();
    assert!(
        text.contains("lb_requests_total{pool=\"old\",code=\"500\"} 0\n"),
        "{text}"
    );
    assert!(!text.contains("pool=\"new\""), "{text}");
    assert_eq!(lbs.count("old"), 0);
    // A ratio of 1 fails everything, 0 nothing.
    lbs.set_error_ratio("new", 1.0);
    assert_eq!(
        try_http(new[1], "GET", "/", "", Duration::from_secs(2))
            .unwrap()
            .0,
        500
    );
    lbs.set_error_ratio("new", 0.0);
    assert_eq!(
        try_http(new[1], "GET", "/", "", Duration::from_secs(2))
            .unwrap()
            .0,
        200
    );
}

/// The provider reads what real Prometheus computes from real scrapes.
///
/// The error ratio is deterministic (every fifth request to new fails), so
/// over a window holding n requests the true ratio is within 1/n of 0.2;
/// at 100 requests per second to new and a 10 s window n is about 900.
/// Prometheus' rate extrapolation scales both counters alike. The bound,
/// 0.2 ± 0.01, is ten times the worst count error: tight, and it does not
/// depend on chance.
#[test]
fn the_prometheus_provider_reads_real_prometheus() {
    let lbs = LoadBalancers::start(&[("old", &["127.0.9.1"]), ("new", &["127.0.9.2"])]);
    lbs.set_error_ratio("new", 0.2);
    let traffic = Traffic::start(lbs.scrape_targets(), 200, 200 * 120);
    let mut prom = Prometheus::start(&lbs.scrape_targets());
    let provider = Provider::Prometheus { url: prom.url() };

    // Wait until the window holds at least eight scrapes of new.
    prom.await_value(
        &format!(r#"min(count_over_time(lb_requests_total{{pool="new"}}[{WINDOW}]))"#),
        Duration::from_secs(40),
        |n| n >= 8.0,
    );
    let (r, _) = ask(&provider, &error_ratio("new"));
    let ratio = value(r);
    eprintln!("error ratio of new, set 0.2: {ratio}");
    assert!((ratio - 0.2).abs() <= 0.01, "error ratio of new: {ratio}");
    // Old has no errors: its ratio is a real 0, not missing.
    let (r, _) = ask(&provider, &error_ratio("old"));
    assert_eq!(value(r), 0.0);

    // No such pool: no series.
    let (r, _) = ask(&provider, &error_ratio("nosuch"));
    match r {
        Ok(Reading::Inconclusive(why)) => assert!(why.contains("no data"), "{why}"),
        other => panic!("unknown pool: {other:?}"),
    }
    // 0/0 (old's errors over old's errors) is NaN; 1/0 a scalar +Inf.
    let old_errors = r#"sum(rate(lb_requests_total{pool="old",code="500"}[10s]))"#;
    let (r, _) = ask(&provider, &format!("{old_errors} / {old_errors}"));
    assert!(
        matches!(&r, Ok(Reading::Inconclusive(why)) if why.starts_with("NaN")),
        "{r:?}"
    );
    let (r, _) = ask(&provider, "1/0");
    assert_eq!(
        r,
        Ok(Reading::Inconclusive("+Inf: not a finite number".into()))
    );
    let (r, _) = ask(&provider, "scalar(vector(0.5)) * 3");
    assert_eq!(value(r), 1.5);

    // Two series: an error naming them.
    let (r, _) = ask(
        &provider,
        &format!("sum by (pool) (rate(lb_requests_total[{WINDOW}]))"),
    );
    let msg = error(r);
    assert!(msg.contains("returned 2 series"), "{msg}");
    // In Prometheus' order, which is not fixed.
    assert!(
        msg.ends_with(r#"{pool="new"}, {pool="old"}"#)
            || msg.ends_with(r#"{pool="old"}, {pool="new"}"#),
        "{msg}"
    );

    // A syntax error: Prometheus' own 400 and message.
    let bad = "sum(rate(lb_requests_total[10s])";
    let (code, body) = prom.query_raw(bad).unwrap();
    assert_eq!(code, 400, "{body}");
    let theirs: serde_json::Value = serde_json::from_str(&body).unwrap();
    let theirs = theirs["error"].as_str().unwrap().to_string();
    let (r, _) = ask(&provider, bad);
    let msg = error(r);
    assert!(
        msg.contains("HTTP 400") && msg.contains("bad_data"),
        "{msg}"
    );
    assert!(msg.contains(&theirs), "{msg} lacks Prometheus' {theirs:?}");

    // The web provider reads a number out of any JSON: here Prometheus'
    // own API, the sample value being a numeric string.
    let web = Provider::Web {
        url: prom.url(),
        path: "data.result.0.value.1".into(),
    };
    let (r, _) = ask(&web, "/api/v1/query?query=vector(0.25)");
    assert_eq!(value(r), 0.25);
    let (r, _) = ask(&web, "/api/v1/query?query=vector(1)[");
    assert!(error(r).starts_with("HTTP 400 Bad Request: {"));

    // Restarted on the same port and data, it answers again with what it
    // scraped before.
    prom.restart();
    let (r, _) = ask(&provider, &error_ratio("new"));
    let ratio = value(r);
    assert!((ratio - 0.2).abs() <= 0.01, "after restart: {ratio}");

    // Stopped: connection refused, at once.
    prom.stop();
    let (r, took) = ask(&provider, &error_ratio("new"));
    let msg = error(r);
    assert!(msg.ends_with("connection refused"), "{msg}");
    assert!(msg.contains(&prom.url()), "{msg}");
    assert!(took < QUERY_TIMEOUT, "{took:?}");
    let sent = traffic.stop();
    assert_eq!(lbs.count("old") + lbs.count("new"), sent);
}

#[test]
fn clients_resolve_through_dns_and_reach_the_answered_endpoint() {
    let lbs = LoadBalancers::start(&[("old", &["127.0.9.1"]), ("new", &["127.0.9.2"])]);
    lbs.set_error_ratio("new", 1.0);
    let zone = zone_of([
        ServiceBuilder::unchecked("www", &["127.0.9.1"], &["127.0.9.2"])
            .ttl("5s")
            .max_answers(1)
            .phase("half", &[("old", 50), ("new", 50)]),
    ]);
    let server = Setup::new(&[("shift.test.toml", &zone)], "").start();

    let clients = Clients::start(
        server.dns,
        "www.shift.test.",
        lbs.port(),
        4,
        100.0,
        Duration::from_secs(20),
    );
    // 200 requests, then stop; bounded by the clients' own 20 s.
    common::poll(Duration::from_secs(20), Duration::from_millis(50), || {
        (clients.snapshot().total() >= 200).then_some(())
    })
    .expect("clients made 200 requests");
    let totals = clients.stop();
    assert_eq!(totals.dns_failures, 0, "{totals:?}");
    // Every request reached the address DNS answered, and nothing else.
    assert_eq!(totals.to("127.0.9.1"), lbs.count("old"), "{totals:?}");
    assert_eq!(totals.to("127.0.9.2"), lbs.count("new"), "{totals:?}");
    assert_eq!(totals.requests.len(), 2, "{totals:?}");
    // 50/50 over >= 200 picks: both well above zero (a share below 30%
    // is more than 5.6 sigma away).
    for ip in ["127.0.9.1", "127.0.9.2"] {
        assert!(totals.to(ip) * 10 >= totals.total() * 3, "{ip}: {totals:?}");
    }
    // new fails everything, old nothing.
    let new_ip = "127.0.9.2".parse().unwrap();
    assert_eq!(totals.failures.get(&new_ip), totals.requests.get(&new_ip));
    assert_eq!(totals.failures.get(&"127.0.9.1".parse().unwrap()), None);
}

#[test]
fn clients_stop_by_themselves_at_their_max_duration() {
    let lbs = LoadBalancers::start(&[("old", &["127.0.9.1"])]);
    let zone = zone_of([
        ServiceBuilder::unchecked("www", &["127.0.9.1"], &["127.0.9.2"])
            .phase("old", &[("old", 1), ("new", 0)]),
    ]);
    let server = Setup::new(&[("shift.test.toml", &zone)], "").start();
    let started = Instant::now();
    let clients = Clients::start(
        server.dns,
        "www.shift.test.",
        lbs.port(),
        2,
        20.0,
        Duration::from_secs(1),
    );
    common::poll(Duration::from_secs(10), Duration::from_millis(20), || {
        clients.finished().then_some(())
    })
    .expect("clients ended by themselves");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let totals = clients.stop();
    // 20 per second for one second: 20 requests when on time; fewer only
    // if a busy machine made them late, never more.
    assert!((10..=20).contains(&totals.to("127.0.9.1")), "{totals:?}");
    assert_eq!(totals.total(), lbs.count("old"), "{totals:?}");
}

#[test]
fn hooks_record_json_bodies_and_can_fail_the_first_deliveries() {
    let hooks = Hooks::failing_first(2);
    let url: reqwest::Url = hooks.url().parse().unwrap();
    let addr = SocketAddr::new(
        url.host_str().unwrap().parse().unwrap(),
        url.port().unwrap(),
    );
    let post = |body: &str| {
        try_http(addr, "POST", url.path(), body, Duration::from_secs(2))
            .unwrap()
            .0
    };
    assert_eq!(post(r#"{"n":1}"#), 503);
    assert_eq!(post(r#"{"n":1}"#), 503);
    assert_eq!(post(r#"{"n":1}"#), 200);
    assert_eq!(post("not json"), 400);
    assert_eq!(post(r#"{"n":2,"event":"advance"}"#), 200);
    assert_eq!(hooks.attempts(), 5);
    let got = hooks.await_received(2, Duration::from_secs(2));
    assert_eq!(
        got,
        vec![
            serde_json::json!({"n": 1}),
            serde_json::json!({"n": 2, "event": "advance"})
        ]
    );
    assert_eq!(Hooks::start().url().split(':').next(), Some("http"));
}
