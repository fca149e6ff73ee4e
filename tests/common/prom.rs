//! The real parts of automatic progression's end-to-end tests (issue 17):
//!
//! - [`Prometheus`]: Debian's `/usr/bin/prometheus` on a loopback port with
//!   a temporary data directory and a generated config that scrapes the
//!   given targets every second;
//! - [`LoadBalancers`]: one HTTP server per endpoint address, all on one
//!   port, answering `/` with 200 or 500 at a per-pool error ratio the test
//!   sets, `/healthz` with 200, and `/metrics` with that endpoint's own
//!   `lb_requests_total{pool,code}` counters (so Prometheus' `instance`
//!   label tells the endpoints apart and a `sum` by pool adds them up);
//! - [`Clients`]: bounded loops that resolve a name through a resolver
//!   over real UDP DNS and then GET the answered address;
//! - [`Hooks`]: a webhook receiver that records JSON bodies and can fail
//!   the first deliveries with 503.
//!
//! Everything started here is stopped when its value is dropped: child
//! processes by PID, servers by their own runtime.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio_util::sync::CancellationToken;

/// Debian's Prometheus server (package `prometheus`).
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
/// Bound on Prometheus answering `/-/ready` after a start or restart.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one HTTP exchange of the harness (readiness, queries, clients).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one DNS exchange of [`Clients`].
pub const DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// Ratios are kept in parts per million, so that 0.2 is exactly one in
/// five (integer arithmetic, no float rounding).
const PPM: u64 = 1_000_000;

/// One HTTP/1.0 exchange over a fresh connection: (status, body), or None
/// if the peer cannot be reached or answers nothing HTTP-shaped within
/// `timeout`. `path_and_query` must already be percent-encoded.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    body: &str,
    timeout: Duration,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    write!(
        s,
        "{method} {path_and_query} HTTP/1.0\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut resp = Vec::new();
    s.take(16 * 1024 * 1024).read_to_end(&mut resp).ok()?;
    let text = String::from_utf8_lossy(&resp);
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((code, body.to_string()))
}

/// `path` with `params` percent-encoded as its query string.
pub fn with_query(path: &str, params: &[(&str, &str)]) -> String {
    let url = reqwest::Url::parse_with_params(&format!("http://x{path}"), params).unwrap();
    format!("{}?{}", url.path(), url.query().unwrap_or(""))
}

/// A running Prometheus that scrapes a fixed set of targets every second.
pub struct Prometheus {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    child: Option<Child>,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (job `lb`, path `/metrics`,
    /// every second) and waits until it is ready. Retries on another port
    /// if the chosen one was taken in the meantime.
    pub fn start(targets: &[SocketAddr]) -> Prometheus {
        assert!(
            Command::new(PROMETHEUS_BIN)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "the analysis tests need Prometheus: apt-get install prometheus (.ci/run does)"
        );
        let mut dir = tempfile::tempdir().unwrap();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        // Nothing remote: no alertmanager, no remote read/write, no rules.
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: lb\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let mut last_log = String::new();
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], super::unused_port("127.0.0.1")));
            let mut p = Prometheus {
                dir,
                addr,
                child: None,
            };
            p.spawn();
            match p.wait_ready() {
                Ok(()) => return p,
                Err(log) if log.contains("address already in use") => {
                    last_log = log;
                    p.stop();
                    let _ = std::fs::remove_file(p.log_path());
                    dir = std::mem::replace(&mut p.dir, tempfile::tempdir().unwrap());
                }
                Err(log) => panic!("prometheus did not become ready; log:\n{log}"),
            }
        }
        panic!("prometheus found no free port in 5 tries; last log:\n{last_log}");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "prometheus is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(PROMETHEUS_BIN)
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("prometheus.yml").display()
            ))
            .arg(format!("--web.listen-address={}", self.addr))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ))
            .args(["--storage.tsdb.retention.time=1d", "--log.level=warn"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        self.child = Some(child);
    }

    /// Polls `/-/ready` until it answers 200; Err(log) if the process
    /// exits or [`READY_TIMEOUT`] passes.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("prometheus is running");
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!("(exited: {status})\n{}", self.log()));
            }
            if try_http(self.addr, "GET", "/-/ready", "", HTTP_TIMEOUT)
                .is_some_and(|(c, _)| c == 200)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "(not ready after {READY_TIMEOUT:?})\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `/-/ready` answers 200; panics with the log after
    /// [`READY_TIMEOUT`] or if the process exits.
    pub fn await_ready(&mut self) {
        if let Err(log) = self.wait_ready() {
            panic!("prometheus did not become ready; log:\n{log}");
        }
    }

    /// `http://127.0.0.1:<port>`: the base URL a provider is given.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills the process (SIGKILL, by PID) and reaps it; the port then
    /// refuses connections. The data directory stays for [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and data directory (what it scraped
    /// before is kept) and waits until it is ready.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.await_ready();
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The raw answer of an instant query now: (status, body), or None if
    /// Prometheus cannot be reached.
    pub fn query_raw(&self, q: &str) -> Option<(u16, String)> {
        let path = with_query("/api/v1/query", &[("query", q)]);
        try_http(self.addr, "GET", &path, "", HTTP_TIMEOUT)
    }

    /// The value of an instant query now, read independently of the code
    /// under test: the one sample's (or the scalar's) value; None when the
    /// query fails, returns no series, or more than one.
    pub fn query_value(&self, q: &str) -> Option<f64> {
        let (code, body) = self.query_raw(q)?;
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let result = &v["data"]["result"];
        let pair = match v["data"]["resultType"].as_str()? {
            "scalar" => result,
            "vector" if result.as_array()?.len() == 1 => &result[0]["value"],
            _ => return None,
        };
        pair[1].as_str()?.parse().ok()
    }

    /// Polls [`Self::query_value`] until `pred` holds for its value; returns
    /// the value, or panics after `timeout` with the last one seen.
    pub fn await_value(&self, q: &str, timeout: Duration, pred: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            last = self.query_value(q).or(last);
            if let Some(v) = last.filter(|v| pred(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{q} did not reach the wanted value within {timeout:?}; last: {last:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A small tokio runtime that serves the harness' HTTP servers, shut down
/// without blocking when dropped (so dropping inside an async test is
/// fine).
struct Servers {
    rt: Option<tokio::runtime::Runtime>,
    cancel: CancellationToken,
}

impl Servers {
    fn new() -> Servers {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        Servers {
            rt: Some(rt),
            cancel: CancellationToken::new(),
        }
    }

    /// Serves `router` on an already bound listener until dropped.
    fn serve(&self, listener: TcpListener, router: axum::Router) {
        listener.set_nonblocking(true).unwrap();
        let cancel = self.cancel.clone();
        self.rt.as_ref().unwrap().spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await;
        });
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// One pool of [`LoadBalancers`]: its error ratio and the sequence that
/// applies it.
struct PoolState {
    name: String,
    /// Error ratio in parts per million.
    ratio_ppm: AtomicU64,
    /// Requests to `/` since the ratio was last set.
    seq: AtomicU64,
}

impl PoolState {
    /// Whether the next request fails: request n fails when
    /// floor(n·r) > floor((n−1)·r), so any k consecutive requests hold
    /// floor(k·r) or ceil(k·r) failures (0.2: exactly every fifth).
    fn next_fails(&self) -> bool {
        let ppm = self.ratio_ppm.load(Ordering::SeqCst);
        let n = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        n * ppm / PPM > (n - 1) * ppm / PPM
    }
}

/// One endpoint: its pool and its own counters.
struct EndpointState {
    pool: Arc<PoolState>,
    ok: AtomicU64,
    failed: AtomicU64,
}

impl EndpointState {
    fn metrics(&self) -> String {
        let pool = &self.pool.name;
        format!(
            "# HELP lb_requests_total Requests to / answered by this endpoint, by pool and status code.\n# TYPE lb_requests_total counter\nlb_requests_total{{pool=\"{pool}\",code=\"200\"}} {}\nlb_requests_total{{pool=\"{pool}\",code=\"500\"}} {}\n",
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst)
        )
    }
}

/// Stand-in load balancers: one HTTP server per endpoint address, all on
/// one port (any 127.0.0.0/8 address is local on Linux).
pub struct LoadBalancers {
    port: u16,
    pools: Vec<Arc<PoolState>>,
    endpoints: Vec<(SocketAddr, Arc<EndpointState>)>,
    _servers: Servers,
}

impl LoadBalancers {
    /// Starts `[(pool, [endpoint address, ..]), ..]`, every pool at error
    /// ratio 0.
    pub fn start(pools: &[(&str, &[&str])]) -> LoadBalancers {
        let ips: Vec<IpAddr> = pools
            .iter()
            .flat_map(|(_, ips)| ips.iter().map(|ip| ip.parse::<IpAddr>().unwrap()))
            .collect();
        assert!(!ips.is_empty(), "LoadBalancers::start needs an endpoint");
        let (port, listeners) = bind_all(&ips);
        let servers = Servers::new();
        let mut states = Vec::new();
        let mut endpoints = Vec::new();
        let mut listeners = listeners.into_iter();
        for (name, ips) in pools {
            let pool = Arc::new(PoolState {
                name: name.to_string(),
                ratio_ppm: AtomicU64::new(0),
                seq: AtomicU64::new(0),
            });
            for _ in *ips {
                let listener = listeners.next().unwrap();
                let addr = listener.local_addr().unwrap();
                let ep = Arc::new(EndpointState {
                    pool: pool.clone(),
                    ok: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                });
                servers.serve(listener, lb_router(ep.clone()));
                endpoints.push((addr, ep));
            }
            states.push(pool);
        }
        LoadBalancers {
            port,
            pools: states,
            endpoints,
            _servers: servers,
        }
    }

    fn pool(&self, pool: &str) -> &Arc<PoolState> {
        self.pools
            .iter()
            .find(|p| p.name == pool)
            .unwrap_or_else(|| panic!("no pool {pool}"))
    }

    /// From now on `ratio` (0 to 1) of the pool's requests to `/` answer 500,
    /// spread evenly (the sequence restarts here).
    pub fn set_error_ratio(&self, pool: &str, ratio: f64) {
        assert!((0.0..=1.0).contains(&ratio), "error ratio {ratio}");
        let p = self.pool(pool);
        p.ratio_ppm
            .store((ratio * PPM as f64).round() as u64, Ordering::SeqCst);
        p.seq.store(0, Ordering::SeqCst);
    }

    /// The port every endpoint listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every endpoint's address, to scrape `/metrics` from.
    pub fn scrape_targets(&self) -> Vec<SocketAddr> {
        self.endpoints.iter().map(|(a, _)| *a).collect()
    }

    /// Endpoint addresses of a pool.
    pub fn addrs(&self, pool: &str) -> Vec<SocketAddr> {
        self.endpoints
            .iter()
            .filter(|(_, e)| e.pool.name == pool)
            .map(|(a, _)| *a)
            .collect()
    }

    /// Requests to `/` the pool's endpoints answered (200 and 500).
    pub fn count(&self, pool: &str) -> u64 {
        self.sum(pool, |e| {
            e.ok.load(Ordering::SeqCst) + e.failed.load(Ordering::SeqCst)
        })
    }

    /// Requests to `/` the pool's endpoints answered with 500.
    pub fn errors(&self, pool: &str) -> u64 {
        self.sum(pool, |e| e.failed.load(Ordering::SeqCst))
    }

    fn sum(&self, pool: &str, f: impl Fn(&EndpointState) -> u64) -> u64 {
        self.endpoints
            .iter()
            .filter(|(_, e)| e.pool.name == pool)
            .map(|(_, e)| f(e))
            .sum()
    }
}

/// Binds every address on one port: the first on port 0, the others on
/// the port it got; starts over with a new port if one is taken.
fn bind_all(ips: &[IpAddr]) -> (u16, Vec<TcpListener>) {
    for _ in 0..20 {
        let first = TcpListener::bind(SocketAddr::new(ips[0], 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for ip in &ips[1..] {
            match TcpListener::bind(SocketAddr::new(*ip, port)) {
                Ok(l) => listeners.push(l),
                Err(_) => break,
            }
        }
        if listeners.len() == ips.len() {
            return (port, listeners);
        }
    }
    panic!("no port free on all of {ips:?} in 20 tries");
}

fn lb_router(ep: Arc<EndpointState>) -> axum::Router {
    use axum::http::StatusCode;
    use axum::routing::get;
    let root = ep.clone();
    let metrics = ep;
    axum::Router::new()
        .route(
            "/",
            get(move || async move {
                if root.pool.next_fails() {
                    root.failed.fetch_add(1, Ordering::SeqCst);
                    (StatusCode::INTERNAL_SERVER_ERROR, "injected error\n")
                } else {
                    root.ok.fetch_add(1, Ordering::SeqCst);
                    (StatusCode::OK, "ok\n")
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || async move {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    metrics.metrics(),
                )
            }),
        )
}

/// What [`Clients`] saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// Requests sent to each answered address (one per resolution).
    pub requests: BTreeMap<IpAddr, u64>,
    /// Of those, the ones that did not answer 200 (500s, refused, timeouts).
    pub failures: BTreeMap<IpAddr, u64>,
    /// Resolutions without an A record (timeout, error, empty answer).
    pub dns_failures: u64,
}

impl Totals {
    /// Requests sent to `ip`.
    pub fn to(&self, ip: &str) -> u64 {
        self.requests
            .get(&ip.parse::<IpAddr>().unwrap())
            .copied()
            .unwrap_or(0)
    }

    /// Requests sent, to any address.
    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }
}

/// Clients of the service: each worker resolves the name (A, recursion
/// desired) through the resolver, then GETs `/` from the first answered
/// address, at a fixed pace, until stopped or `max_duration` passes.
pub struct Clients {
    stop: Arc<AtomicBool>,
    totals: Arc<Mutex<Totals>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Clients {
    /// `workers` loops sharing `per_second` requests per second in all.
    pub fn start(
        resolver: SocketAddr,
        name: &str,
        port: u16,
        workers: usize,
        per_second: f64,
        max_duration: Duration,
    ) -> Clients {
        assert!(workers > 0 && per_second > 0.0, "clients need a pace");
        let stop = Arc::new(AtomicBool::new(false));
        let totals = Arc::new(Mutex::new(Totals::default()));
        let period = Duration::from_secs_f64(workers as f64 / per_second);
        let deadline = Instant::now() + max_duration;
        let count = workers;
        let workers = (0..workers)
            .map(|w| {
                let (stop, totals, name) = (stop.clone(), totals.clone(), name.to_string());
                std::thread::spawn(move || {
                    // Workers start spread evenly over one period.
                    let start = Instant::now() + period.mul_f64(w as f64 / count as f64);
                    let mut i = 0u32;
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        let due = start + period * i;
                        if Instant::now() < due {
                            std::thread::sleep(
                                (due - Instant::now()).min(Duration::from_millis(50)),
                            );
                            continue;
                        }
                        i += 1;
                        one_client_request(resolver, &name, port, &totals);
                    }
                })
            })
            .collect();
        Clients {
            stop,
            totals,
            workers,
        }
    }

    /// What the clients saw so far.
    pub fn snapshot(&self) -> Totals {
        self.totals.lock().unwrap().clone()
    }

    /// Whether every worker has ended (stopped, or past `max_duration`).
    pub fn finished(&self) -> bool {
        self.workers.iter().all(|w| w.is_finished())
    }

    /// Stops every worker, waits for them, and returns the totals.
    pub fn stop(mut self) -> Totals {
        self.halt();
        self.snapshot()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.halt();
    }
}

fn one_client_request(resolver: SocketAddr, name: &str, port: u16, totals: &Mutex<Totals>) {
    let Some(ip) = resolve_a(resolver, name) else {
        totals.lock().unwrap().dns_failures += 1;
        return;
    };
    let ok = try_http(SocketAddr::new(ip, port), "GET", "/", "", HTTP_TIMEOUT)
        .is_some_and(|(code, _)| code == 200);
    let mut t = totals.lock().unwrap();
    *t.requests.entry(ip).or_default() += 1;
    if !ok {
        *t.failures.entry(ip).or_default() += 1;
    }
}

/// The first A record of `name` from `resolver`, over UDP.
pub fn resolve_a(resolver: SocketAddr, name: &str) -> Option<IpAddr> {
    let mut m = Message::new(fastrand::u16(..), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).ok()?, RecordType::A));
    let bytes = m.to_vec().ok()?;
    let sock = UdpSocket::bind(if resolver.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    })
    .ok()?;
    sock.set_read_timeout(Some(DNS_TIMEOUT)).ok()?;
    sock.send_to(&bytes, resolver).ok()?;
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + DNS_TIMEOUT;
    while Instant::now() < deadline {
        let (n, from) = sock.recv_from(&mut buf).ok()?;
        let Ok(reply) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if from != resolver || reply.metadata.id != m.metadata.id {
            continue;
        }
        return reply.answers.iter().find_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        });
    }
    None
}

struct HookState {
    fail_left: AtomicU64,
    attempts: AtomicU64,
    received: Mutex<Vec<serde_json::Value>>,
}

/// A webhook receiver: every POST with a JSON body is recorded and
/// answered 200, except the first `fail_first` deliveries, answered 503
/// (to test retries). Bodies that are not JSON get 400.
pub struct Hooks {
    addr: SocketAddr,
    state: Arc<HookState>,
    _servers: Servers,
}

impl Hooks {
    /// A receiver that accepts every delivery.
    pub fn start() -> Hooks {
        Hooks::failing_first(0)
    }

    /// A receiver that answers the first `n` deliveries with 503.
    pub fn failing_first(n: u64) -> Hooks {
        use axum::http::StatusCode;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(HookState {
            fail_left: AtomicU64::new(n),
            attempts: AtomicU64::new(0),
            received: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        let handler = move |body: axum::body::Bytes| async move {
            s.attempts.fetch_add(1, Ordering::SeqCst);
            let failing = s
                .fail_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            match serde_json::from_slice(&body) {
                Ok(v) => {
                    s.received.lock().unwrap().push(v);
                    StatusCode::OK
                }
                Err(_) => StatusCode::BAD_REQUEST,
            }
        };
        let router = axum::Router::new().fallback(axum::routing::post(handler));
        let servers = Servers::new();
        servers.serve(listener, router);
        Hooks {
            addr,
            state,
            _servers: servers,
        }
    }

    /// `http://127.0.0.1:<port>/hook` (any path is accepted).
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The JSON bodies accepted so far, in arrival order.
    pub fn received(&self) -> Vec<serde_json::Value> {
        self.state.received.lock().unwrap().clone()
    }

    /// POSTs seen so far, failed ones included.
    pub fn attempts(&self) -> u64 {
        self.state.attempts.load(Ordering::SeqCst)
    }

    /// Polls until at least `n` bodies were accepted; returns them, or
    /// panics after `timeout` with what arrived.
    pub fn await_received(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{n} webhook bodies wanted within {timeout:?}, got {}: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
