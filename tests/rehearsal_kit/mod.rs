//! The parts of a migration rehearsal (see tests/rehearsal.rs) shared by the
//! one-nameserver rehearsal and the two-nameserver one
//! (tests/rehearsal_cluster.rs): the zone, real HTTP load balancers, real
//! `unbound` resolvers, clients that resolve and make requests, the
//! timeline and the statistics of the split.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::backend::Backend;
use crate::common::unbound;
pub use crate::common::unbound::Unbound;
use crate::common::*;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

pub const ORIGIN: &str = "shift.example.";
pub const NAME: &str = "www.shift.example.";
pub const STAGING: &str = "www-next.shift.example.";
pub const OLD: [&str; 2] = ["127.0.6.1", "127.0.6.2"];
pub const NEW: [&str; 2] = ["127.0.6.3", "127.0.6.4"];
/// TTL of the service's answers.
pub const TTL: Duration = Duration::from_secs(2);
/// Health-check interval, timeout and fall.
pub const INTERVAL: Duration = Duration::from_millis(200);
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(150);
pub const FALL: u32 = 2;
/// Independent resolvers (think: several ISPs). Each has its own cache, so
/// each TTL window of each resolver is one independent weighted draw.
pub const RESOLVERS: usize = 8;
/// Pause between two requests of one client.
pub const CLIENT_PAUSE: Duration = Duration::from_millis(20);
/// Hard bound on requests per client.
pub const MAX_REQUESTS: usize = 20_000;

pub fn zone(port: u16) -> String {
    zone_with(service(port))
}

/// The rehearsal's zone around one service.
pub fn zone_with(service: ServiceBuilder) -> String {
    ZoneBuilder::new(ORIGIN)
        .unset("ttl")
        .negative_ttl("5s")
        .records(&["ns1 IN A 127.0.0.1"])
        .service(service)
        .to_toml()
}

/// The rehearsal's service: `www` (staging `www-next`), pools [`OLD`] and
/// [`NEW`] checked over HTTP on `port`, TTL [`TTL`], four phases.
pub fn service(port: u16) -> ServiceBuilder {
    ServiceBuilder::new("www")
        .staging("www-next")
        .ttl("2s")
        .max_answers(2)
        .drain_grace("1s")
        .pool("old", &OLD)
        .pool("new", &NEW)
        .health_http(&format!("http://{{endpoint}}:{port}/healthz"))
        .timing("200ms", "150ms")
        .rise_fall(2, FALL)
        .phase("separate-domain", &[("old", 100), ("new", 0)])
        .phase("rr-90-10", &[("old", 90), ("new", 10)])
        .phase("rr-50-50", &[("old", 50), ("new", 50)])
        .phase("cutover", &[("old", 0), ("new", 100)])
}

/// One client request and how it went.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub at: Instant,
    /// Address that served the request; None if every address failed.
    pub served_by: Option<IpAddr>,
    /// Every address the client tried, in order.
    pub tried: Vec<IpAddr>,
    pub error: Option<String>,
}

/// Starts unbound on `ip` with a stub zone for the origin pointing at the
/// dnsshift hosts `stubs` (with several, unbound spreads queries over them).
pub fn start_unbound(ip: &str, stubs: &[SocketAddr]) -> Unbound {
    let conf = unbound::Conf {
        ip,
        zone: ORIGIN,
        stubs,
        modules: "iterator",
        files: &[],
        extra: "",
    };
    unbound::start(&conf, |addr| {
        resolve(addr, NAME).is_ok_and(|a| !a.is_empty())
    })
}

/// Resolves A records through a recursive resolver.
pub fn resolve(resolver: SocketAddr, name: &str) -> Result<Vec<IpAddr>, String> {
    resolve_type(resolver, name, RecordType::A)
}

/// Resolves A or AAAA records through a recursive resolver (an empty list
/// for NODATA).
pub fn resolve_type(
    resolver: SocketAddr,
    name: &str,
    rtype: RecordType,
) -> Result<Vec<IpAddr>, String> {
    let mut q = Message::new(fastrand::u16(..), MessageType::Query, OpCode::Query);
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(&q.to_vec().unwrap(), resolver)
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .map_err(|e| format!("resolver timeout: {e}"))?;
    let m = Message::from_vec(&buf[..n]).map_err(|e| e.to_string())?;
    if m.metadata.response_code != ResponseCode::NoError {
        return Err(format!("resolver answered {}", m.metadata.response_code));
    }
    Ok(m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) if rtype == RecordType::A => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) if rtype == RecordType::AAAA => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect())
}

/// An HTTP GET to one address; Ok if a 200 came back.
pub fn http_get(addr: SocketAddr) -> Result<(), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: www.shift.example\r\nconnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| e.to_string())?;
    if resp.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "bad response: {}",
            String::from_utf8_lossy(&resp[..resp.len().min(40)])
        ))
    }
}

/// Resolve, then try each address in order until one works, as common HTTP
/// clients do.
pub fn client_request(resolver: SocketAddr, name: &str, port: u16) -> Outcome {
    let at = Instant::now();
    try_addresses(at, resolve(resolver, name), port)
}

/// An IPv6-preferring (dual-stack) client: resolves AAAA and A, each
/// answered on its own, and tries the IPv6 addresses first, then the IPv4
/// ones (RFC 6724 order; Happy Eyeballs without the race). A NODATA for
/// AAAA is normal: the IPv4 addresses are then all it has.
pub fn client_request_v6_first(resolver: SocketAddr, name: &str, port: u16) -> Outcome {
    let at = Instant::now();
    let addrs = resolve_type(resolver, name, RecordType::AAAA).and_then(|mut v6| {
        v6.extend(resolve_type(resolver, name, RecordType::A)?);
        Ok(v6)
    });
    try_addresses(at, addrs, port)
}

/// Tries each address resolved at `at` in order until one serves a
/// request.
fn try_addresses(at: Instant, resolved: Result<Vec<IpAddr>, String>, port: u16) -> Outcome {
    let addrs = match resolved {
        Ok(a) if !a.is_empty() => a,
        Ok(_) => {
            return Outcome {
                at,
                served_by: None,
                tried: vec![],
                error: Some("empty answer".into()),
            };
        }
        Err(e) => {
            return Outcome {
                at,
                served_by: None,
                tried: vec![],
                error: Some(e),
            };
        }
    };
    let mut tried = Vec::new();
    let mut last = String::new();
    for ip in addrs {
        tried.push(ip);
        match http_get(SocketAddr::new(ip, port)) {
            Ok(()) => {
                return Outcome {
                    at,
                    served_by: Some(ip),
                    tried,
                    error: None,
                };
            }
            Err(e) => last = format!("{ip}: {e}"),
        }
    }
    Outcome {
        at,
        served_by: None,
        tried,
        error: Some(last),
    }
}

pub struct Timeline {
    pub start: Instant,
    pub wall_start_ms: u64,
    pub events: Mutex<Vec<(Duration, String)>>,
}

impl Timeline {
    pub fn note(&self, what: impl Into<String>) {
        let what = what.into();
        eprintln!("[{:>7.2}s] {what}", self.start.elapsed().as_secs_f64());
        self.events
            .lock()
            .unwrap()
            .push((self.start.elapsed(), what));
    }
    /// Unix ms → Instant on this test's clock.
    pub fn instant_of(&self, unix_ms: u64) -> Instant {
        self.start + Duration::from_millis(unix_ms.saturating_sub(self.wall_start_ms))
    }
}

/// The IPv6 address of the new pool in the dual-stack rehearsal (the
/// only IPv6 loopback address).
pub const NEW_V6: &str = "::1";

pub fn is_new(ip: IpAddr) -> bool {
    NEW.iter()
        .chain([&NEW_V6])
        .any(|n| n.parse::<IpAddr>().unwrap() == ip)
}

pub fn is_old(ip: IpAddr) -> bool {
    OLD.iter().any(|n| n.parse::<IpAddr>().unwrap() == ip)
}

/// Runs `cmd` and notes it in the timeline.
pub fn op(server: &Server, tl: &Timeline, args: &[&str]) -> String {
    let out = server.cli_ok(args);
    tl.note(format!("dnsshift {}: {}", args.join(" "), out.trim()));
    out
}

/// A point in the run: when, and how many main-name answers dnsshift had
/// given so far. Every answer dnsshift gives the main name is one upstream
/// fetch by a resolver, which is one independent weighted draw.
#[derive(Clone, Copy)]
pub struct Mark {
    pub at: Instant,
    pub draws: u64,
}

/// Main-name answers so far, from dnsshift's /metrics.
pub fn main_answers(control: SocketAddr) -> u64 {
    let mut s = TcpStream::connect_timeout(&control, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines()
        .filter(|l| l.starts_with("dnsshift_pool_answers_total{") && l.contains("name=\"main\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<u64>().ok())
        .sum()
}

/// Share of `new` among client requests between two marks, the number of
/// requests, and the number of independent draws behind them.
pub fn split(outcomes: &[Outcome], from: Mark, to: Mark) -> (f64, usize, u64) {
    let served: Vec<IpAddr> = outcomes
        .iter()
        .filter(|o| o.at >= from.at && o.at < to.at)
        .filter_map(|o| o.served_by)
        .collect();
    let new = served.iter().filter(|ip| is_new(**ip)).count();
    (
        new as f64 / served.len().max(1) as f64,
        served.len(),
        to.draws - from.draws,
    )
}

/// The statistical check of a round-robin phase. A resolver asks dnsshift
/// once per TTL (in practice TTL plus up to a second: resolvers count in
/// whole seconds) and serves that answer to every request until it expires.
/// So the independent weighted draws are dnsshift's upstream answers in the
/// window (counted from its metrics), n, not the requests. Requests are
/// spread evenly over time and every cache epoch lasts about as long, so the
/// share of requests reaching `new` estimates the share of draws that picked
/// `new`: mean p, standard deviation sqrt(p(1-p)/n). We accept ±4 standard
/// deviations (a false alarm about once in 16,000 runs) plus 0.03 for
/// epochs cut at the window's edges and unequal epoch lengths.
pub fn assert_split(
    tl: &Timeline,
    name: &str,
    p: f64,
    (share, requests, draws): (f64, usize, u64),
) {
    assert!(draws > 0, "{name}: no upstream queries reached dnsshift");
    let sd = (p * (1.0 - p) / draws as f64).sqrt();
    let bound = 4.0 * sd + 0.03;
    tl.note(format!(
        "{name}: {requests} requests, {:.1}% reached new (weight {:.0}%, {draws} independent draws, bound ±{:.1} points)",
        share * 100.0,
        p * 100.0,
        bound * 100.0
    ));
    assert!(
        (share - p).abs() <= bound,
        "{name}: share of new {share:.3} is outside {p} ± {bound:.3}"
    );
}

impl Timeline {
    /// A timeline starting now.
    pub fn start() -> Arc<Timeline> {
        Arc::new(Timeline {
            start: Instant::now(),
            wall_start_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
            events: Mutex::new(Vec::new()),
        })
    }
}

/// The load balancers: each on its own loopback address, one shared port
/// (returned).
pub fn load_balancers(tl: &Timeline) -> (u16, BTreeMap<&'static str, Backend>) {
    let first = Backend::http(&format!("{}:0", OLD[0]));
    let port = first.addr.port();
    let mut backends: BTreeMap<&str, Backend> = BTreeMap::new();
    backends.insert(OLD[0], first);
    for ip in [OLD[1], NEW[0], NEW[1]] {
        backends.insert(ip, Backend::http(&format!("{ip}:{port}")));
    }
    tl.note(format!(
        "load balancers up on port {port}: old {OLD:?}, new {NEW:?}"
    ));
    (port, backends)
}

/// [`RESOLVERS`] unbound resolvers on 127.0.6.53 and up, each with `stubs`
/// as the origin's nameservers.
pub fn start_resolvers(tl: &Timeline, stubs: &[SocketAddr]) -> Vec<Unbound> {
    let resolvers: Vec<Unbound> = (0..RESOLVERS)
        .map(|i| {
            let stubs = stubs.to_vec();
            std::thread::spawn(move || start_unbound(&format!("127.0.6.{}", 53 + i), &stubs))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    tl.note(format!(
        "{} unbound resolvers up: {:?}",
        resolvers.len(),
        resolvers.iter().map(|r| r.addr).collect::<Vec<_>>()
    ));
    resolvers
}

/// Clients: one per resolver for the main name, one for the staging name,
/// each making requests until stopped (at most [`MAX_REQUESTS`]).
pub struct Clients {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    staging: Arc<Mutex<Vec<Outcome>>>,
    threads: Vec<JoinHandle<()>>,
}

/// How one client request goes: resolve through `resolver`, then request.
pub type Request = fn(SocketAddr, &str, u16) -> Outcome;

impl Clients {
    pub fn start(resolvers: &[Unbound], port: u16) -> Clients {
        Clients::start_with(resolvers, port, true, client_request)
    }

    /// Clients making `request`s: one per resolver for the main name, and
    /// with `staging` one for the staging name.
    pub fn start_with(
        resolvers: &[Unbound],
        port: u16,
        staging_client: bool,
        request: Request,
    ) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
        let staging = Arc::new(Mutex::new(Vec::<Outcome>::new()));
        let mut threads = Vec::new();
        for (i, r) in resolvers.iter().enumerate() {
            for (name, sink) in [(NAME, outcomes.clone()), (STAGING, staging.clone())] {
                if name == STAGING && (i > 0 || !staging_client) {
                    continue;
                }
                let (stop, addr) = (stop.clone(), r.addr);
                threads.push(std::thread::spawn(move || {
                    for _ in 0..MAX_REQUESTS {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let o = request(addr, name, port);
                        sink.lock().unwrap().push(o);
                        std::thread::sleep(CLIENT_PAUSE);
                    }
                }));
            }
        }
        Clients {
            stop,
            outcomes,
            staging,
            threads,
        }
    }

    /// Stops the clients; returns the main-name and the staging outcomes.
    pub fn finish(self) -> (Vec<Outcome>, Vec<Outcome>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let outcomes = self.outcomes.lock().unwrap().clone();
        let staging = self.staging.lock().unwrap().clone();
        (outcomes, staging)
    }
}

/// Polls `status www --json` (as `status` gets it) until the old pool is
/// drained and its decommissioning is safe; returns the pool's entry.
pub fn await_old_drained(status: impl Fn() -> serde_json::Value) -> serde_json::Value {
    poll(Duration::from_secs(15), Duration::from_millis(200), || {
        let v = status();
        let old = v["services"][0]["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pool"] == "old")
            .unwrap()
            .clone();
        let safe = old["safe_to_decommission_after_ms"].as_u64()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        (old["drained"] == true && now >= safe).then_some(old)
    })
    .expect("old drained")
}

/// Asserts that no client request failed and that there were enough.
pub fn assert_no_failures(tl: &Timeline, outcomes: &[Outcome], staging: &[Outcome]) {
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .chain(staging)
        .filter(|o| o.error.is_some())
        .collect();
    let retried = outcomes.iter().filter(|o| o.tried.len() > 1).count();
    tl.note(format!(
        "{} main-name and {} staging requests, {} failed, {retried} needed a second address",
        outcomes.len(),
        staging.len(),
        failed.len()
    ));
    assert!(
        failed.is_empty(),
        "failed requests: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(
        outcomes.len() > 1000,
        "the clients made too few requests: {}",
        outcomes.len()
    );
}

/// Asserts that no client resolved old after `drained_at_ms`, the drain
/// deadline status printed (Unix ms).
pub fn assert_drain_honoured(
    tl: &Timeline,
    outcomes: &[Outcome],
    backends: &BTreeMap<&str, Backend>,
    drained_at_ms: u64,
) {
    // Time a request by when its client resolved the name (the answer it
    // used was in the cache then); the backends' own log (client requests
    // only: health checks keep probing old at /healthz) is shown for
    // comparison.
    let drained = tl.instant_of(drained_at_ms);
    let last_resolved_old = outcomes
        .iter()
        .filter(|o| o.served_by.is_some_and(is_old))
        .map(|o| o.at)
        .max()
        .unwrap();
    let last_arrived_old = OLD
        .iter()
        .flat_map(|ip| backends[ip].seen())
        .filter(|s| s.path == "/")
        .map(|s| s.at)
        .max()
        .unwrap();
    tl.note(format!(
        "last request for old resolved at {:.2}s, arrived at {:.2}s; drain deadline {:.2}s",
        (last_resolved_old - tl.start).as_secs_f64(),
        (last_arrived_old - tl.start).as_secs_f64(),
        (drained - tl.start).as_secs_f64()
    ));
    // Bound: resolvers count TTLs in whole seconds, so a cached answer may
    // be served for up to 1 s past last answer + TTL; 100 ms for clocks.
    assert!(
        last_resolved_old <= drained + Duration::from_millis(1100),
        "old was still resolved after its drain deadline"
    );
}

/// Asserts that the main name reached only old during `separate` (before the
/// first advance) and only new during `cutover` (after the caches turned
/// over).
pub fn assert_pure_phases(
    outcomes: &[Outcome],
    separate: std::ops::Range<Instant>,
    cutover: std::ops::Range<Instant>,
) {
    let at = |t: Instant| Mark { at: t, draws: 0 };
    let (s, _, _) = split(outcomes, at(separate.start), at(separate.end));
    assert_eq!(s, 0.0, "separate-domain: the main name reached new");
    let (s, _, _) = split(outcomes, at(cutover.start), at(cutover.end));
    assert_eq!(
        s, 1.0,
        "cutover: the main name reached old after the caches turned over"
    );
}
