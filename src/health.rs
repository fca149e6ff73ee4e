//! Health checks of endpoints over HTTP, HTTPS or TCP; rise/fall state.
//!
//! One task per endpoint probes it every `interval` (jittered), feeds the
//! result to its [`RiseFall`], and records it in the shared [`Table`]. Only a
//! change of verdict asks for a plan rebuild, so a thousand endpoints probed
//! every second cost a thousand table updates, not a thousand rebuilds. The
//! checker never touches the DNS path: answers read the plan built from the
//! table.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::unix_ms;
use crate::error::error_chain;
use crate::pool::{Check, CheckKind, EndpointKey};
use crate::sync::lock;
use crate::zone::Zone;

mod probe;

use probe::*;
pub use probe::{Checker, describe_reqwest};

/// How much of a response body a check reads before giving up on it.
pub const BODY_LIMIT: usize = 64 * 1024;

// ------------------------------------------------------------ probing

/// Why a probe failed, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailKind {
    /// The status code was outside `expect`.
    Status,
    /// No complete answer within the timeout.
    Timeout,
    /// The connection was refused.
    Refused,
    /// TLS handshake or certificate failure.
    Tls,
    /// The body did not contain `expect_body`, or exceeded [`BODY_LIMIT`].
    Body,
    /// Any other connection or protocol error.
    Connect,
}

impl FailKind {
    /// Every kind, for iterating over metric series.
    pub const ALL: [FailKind; 6] = [
        FailKind::Status,
        FailKind::Timeout,
        FailKind::Refused,
        FailKind::Tls,
        FailKind::Body,
        FailKind::Connect,
    ];

    /// Metric label value.
    pub fn label(self) -> &'static str {
        match self {
            FailKind::Status => "status",
            FailKind::Timeout => "timeout",
            FailKind::Refused => "refused",
            FailKind::Tls => "tls",
            FailKind::Body => "body",
            FailKind::Connect => "connect",
        }
    }
}

/// The result of one probe.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    /// Unix milliseconds when the probe finished.
    pub at_ms: u64,
    /// How long it took, in milliseconds to the microsecond: a TCP
    /// connect on a local network takes well under one.
    pub duration_ms: f64,
    /// `None` on success.
    pub failure: Option<FailKind>,
    /// Human-readable outcome ("status 200", "timeout after 2s", ...).
    pub detail: String,
}

/// Health of one endpoint as the rest of the daemon sees it.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Verdict and streak.
    pub state: RiseFall,
    /// Last probe result.
    pub last: Option<Probe>,
    /// Unix seconds of the last verdict change (0: never).
    pub since: u64,
}

/// Prometheus label set: (name, value) pairs.
pub type Labels = Vec<(&'static str, String)>;

/// Histogram buckets for probe durations: 1 ms to ~16 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Shared health of every checked endpoint. Endpoints without a check are absent.
#[derive(Debug)]
pub struct Table {
    map: Mutex<HashMap<EndpointKey, Status>>,
    /// Probe durations by service, pool, endpoint (for /metrics).
    pub check_duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// Failed probes by service, pool, endpoint, reason (for /metrics).
    pub check_failures: Family<Labels, Counter>,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            map: Mutex::default(),
            check_duration: Family::new_with_constructor(duration_histogram),
            check_failures: Family::default(),
        }
    }
}

impl EndpointKey {
    /// Metric labels of this endpoint.
    pub fn labels(&self) -> Labels {
        vec![
            ("service", self.service.clone()),
            ("pool", self.pool.clone()),
            ("endpoint", self.endpoint.clone()),
        ]
    }
}

impl Table {
    /// A copy of everything.
    pub fn all(&self) -> HashMap<EndpointKey, Status> {
        lock(&self.map).clone()
    }

    /// Drops endpoints that are no longer configured; keeps the others' state.
    /// Forgets endpoints no longer configured, with their metric series.
    fn retain(&self, keep: &std::collections::HashSet<EndpointKey>) {
        let mut m = lock(&self.map);
        for gone in m.keys().filter(|k| !keep.contains(k)) {
            let labels = gone.labels();
            self.check_duration.remove(&labels);
            for kind in FailKind::ALL {
                let mut l = labels.clone();
                l.push(("reason", kind.label().to_string()));
                self.check_failures.remove(&l);
            }
        }
        m.retain(|k, _| keep.contains(k));
    }

    /// Records a probe; returns the new verdict if it flipped.
    fn record(&self, key: &EndpointKey, check: &Check, probe: Probe) -> Option<bool> {
        self.check_duration
            .get_or_create(&key.labels())
            .observe(probe.duration_ms / 1000.0);
        if let Some(k) = probe.failure {
            let mut labels = key.labels();
            labels.push(("reason", k.label().to_string()));
            self.check_failures.get_or_create(&labels).inc();
        }
        let mut m = lock(&self.map);
        let st = m.entry(key.clone()).or_default();
        let flip = st
            .state
            .observe(probe.failure.is_none(), check.rise, check.fall);
        if flip.is_some() {
            st.since = probe.at_ms / 1000;
        }
        st.last = Some(probe);
        flip
    }
}

/// Every checked endpoint of a set of zones.
pub fn targets(zones: &[Zone]) -> Vec<(EndpointKey, Check)> {
    let mut out = Vec::new();
    for z in zones {
        for s in &z.services {
            for p in &s.pools {
                for e in &p.endpoints {
                    if let Some(c) = &e.check {
                        out.push((
                            EndpointKey {
                                service: s.key(),
                                pool: p.name.clone(),
                                endpoint: e.id.clone(),
                            },
                            c.clone(),
                        ));
                    }
                }
            }
        }
    }
    out
}

/// Starts one probing task per checked endpoint; they stop when `stop` is
/// cancelled. A verdict change is logged and `changed` notified. Returns a
/// future that resolves once every endpoint has its first result (or its
/// first probe timed out).
pub fn start(
    checker: Arc<Checker>,
    table: Arc<Table>,
    zones: &[Zone],
    changed: Arc<Notify>,
    stop: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let targets = targets(zones);
    table.retain(&targets.iter().map(|(k, _)| k.clone()).collect());
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(targets.len().max(1));
    let total = targets.len();
    for (key, check) in targets {
        let https = match check.kind {
            CheckKind::Https => {
                let c = https_client(&check).map_err(|e| format!("check cannot run: {e}"));
                if let Err(e) = &c {
                    warn!(service = %key.service, pool = %key.pool, endpoint = %key.endpoint, error = %e, "health check cannot run");
                }
                Some(c)
            }
            _ => None,
        };
        let checker = checker.clone();
        let table = table.clone();
        let changed = changed.clone();
        let stop = stop.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            // A small random delay spreads the first round too. Probes
            // start an interval apart (jittered) whatever they take: a
            // probe that hangs until its timeout does not stretch the
            // interval, so `fall` failures take `fall` intervals.
            let mut next = tokio::time::Instant::now() + jitter(check.interval / 10);
            let mut first = Some(done);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(next) => {}
                }
                let started = tokio::time::Instant::now();
                let probe = tokio::select! {
                    _ = stop.cancelled() => return,
                    p = checker.probe(&check, https.as_ref()) => p,
                };
                if stop.is_cancelled() {
                    // Replaced by a reload: the new task owns this endpoint.
                    return;
                }
                let detail = probe.detail.clone();
                let failure = probe.failure;
                if let Some(healthy) = table.record(&key, &check, probe) {
                    if healthy {
                        info!(service = %key.service, pool = %key.pool, endpoint = %key.endpoint, healthy, reason = %detail, "endpoint healthy");
                    } else {
                        warn!(service = %key.service, pool = %key.pool, endpoint = %key.endpoint, healthy, reason = %detail, kind = failure.map(FailKind::label).unwrap_or(""), "endpoint unhealthy");
                    }
                    changed.notify_one();
                }
                if let Some(d) = first.take() {
                    let _ = d.send(()).await;
                }
                next = started + check.interval.mul_f64(0.9) + jitter(check.interval / 5);
            }
        });
    }
    drop(done_tx);
    async move {
        let mut n = 0;
        while n < total && done_rx.recv().await.is_some() {
            n += 1;
        }
    }
}

/// The running generation of health-check tasks, replaced whole when the
/// zones change (reload).
pub struct Checks {
    checker: Arc<Checker>,
    table: Arc<Table>,
    changed: Arc<Notify>,
    current: Mutex<CancellationToken>,
    shutdown: CancellationToken,
}

impl Checks {
    /// No checks yet; tasks record into `table`, notify `changed` when a
    /// verdict flips, and stop at `shutdown`.
    pub fn new(
        checker: Arc<Checker>,
        table: Arc<Table>,
        changed: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Checks {
        Checks {
            checker,
            table,
            changed,
            current: Mutex::new(shutdown.child_token()),
            shutdown,
        }
    }

    /// Stops the previous generation and checks the endpoints of `zones`
    /// ([`start`]). Health of endpoints that still exist carries over.
    pub fn restart(&self, zones: &[Zone]) -> impl std::future::Future<Output = ()> + Send + use<> {
        let token = {
            let mut current = lock(&self.current);
            current.cancel();
            *current = self.shutdown.child_token();
            current.clone()
        };
        start(
            self.checker.clone(),
            self.table.clone(),
            zones,
            self.changed.clone(),
            token,
        )
    }
}

/// A uniformly random duration in `0..max`.
fn jitter(max: Duration) -> Duration {
    let nanos = max.as_nanos().min(u128::from(u64::MAX)) as u64;
    Duration::from_nanos(if nanos == 0 {
        0
    } else {
        fastrand::u64(0..nanos)
    })
}

// ------------------------------------------------------------ rise / fall

/// The rise/fall state machine of one endpoint. Pure.
///
/// Before any result the endpoint counts as healthy. The first result sets
/// the state directly (so the first answers reflect health); afterwards it
/// takes `fall` consecutive failures to go down and `rise` consecutive
/// successes to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiseFall {
    /// Current verdict.
    pub healthy: bool,
    /// Whether any result has been seen.
    pub seen: bool,
    /// Consecutive results that disagree with `healthy`.
    streak: u32,
}

impl Default for RiseFall {
    fn default() -> Self {
        RiseFall {
            healthy: true,
            seen: false,
            streak: 0,
        }
    }
}

impl RiseFall {
    /// Consecutive results so far that disagree with the verdict: progress
    /// towards `fall` while healthy, towards `rise` while not.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Feeds one probe result; returns the new verdict if it changed.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if !self.seen {
            self.seen = true;
            let changed = self.healthy != ok;
            self.healthy = ok;
            self.streak = 0;
            return changed.then_some(ok);
        }
        if ok == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if ok { rise } else { fall };
        if self.streak >= needed {
            self.healthy = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shaped_tls_reasons_become_words() {
        let cases = [
            (
                "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))",
                "invalid peer certificate: the server sent a CA certificate as its own",
            ),
            (
                "invalid peer certificate: UnknownIssuer",
                "invalid peer certificate: signed by an unknown authority (not a trusted CA; see ca_file)",
            ),
            (
                "received fatal alert: HandshakeFailure",
                "received fatal alert: handshake failure",
            ),
            // Already words: unchanged.
            (
                "certificate not valid for name \"a.test\"; certificate is only valid for b.test",
                "certificate not valid for name \"a.test\"; certificate is only valid for b.test",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(plain_words(raw), want);
        }
    }

    #[test]
    fn rise_fall_table() {
        // (results, rise, fall, verdict after each result)
        let cases: &[(&str, u32, u32, &str)] = &[
            // first result decides; then fall=3 failures in a row to go down
            ("+--+---", 2, 3, "UUUUUUD"),
            ("-", 2, 3, "D"),
            // down: rise=2 successes in a row to come back, a failure resets the streak
            ("-+-++", 2, 3, "DDDDU"),
            ("+-+-+-", 2, 2, "UUUUUU"),
            ("+--", 1, 1, "UDD"),
            ("-+", 1, 1, "DU"),
            ("+-----+++", 3, 5, "UUUUUDDDU"),
        ];
        for (results, rise, fall, want) in cases {
            let mut rf = RiseFall::default();
            assert!(rf.healthy && !rf.seen);
            let got: String = results
                .chars()
                .map(|c| {
                    rf.observe(c == '+', *rise, *fall);
                    if rf.healthy { 'U' } else { 'D' }
                })
                .collect();
            assert_eq!(&got, want, "results {results} rise {rise} fall {fall}");
        }
    }

    fn https_check(target: &str, host: Option<&str>, ca_file: Option<&str>) -> Check {
        Check {
            kind: CheckKind::Https,
            target: target.into(),
            host: host.map(str::to_string),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 1,
            expect: (200, 399),
            expect_body: None,
            insecure: false,
            ca_file: ca_file.map(std::path::PathBuf::from),
        }
    }

    #[tokio::test]
    async fn host_of_a_host_name_endpoint_resolves_to_that_name() {
        use reqwest::dns::Resolve;
        let r = ResolveAs {
            host: "www.example.com".into(),
            target: "localhost".into(),
        };
        let name = "www.example.com".parse().unwrap_or_else(|_| unreachable!());
        let addrs: Vec<SocketAddr> = r
            .resolve(name)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .collect();
        assert!(
            addrs.iter().any(|a| a.ip().is_loopback()),
            "{addrs:?} are not localhost's"
        );
        assert_eq!(
            https_url(&https_check(
                "https://lb.example.net:8443/h",
                Some("www.example.com"),
                None
            )),
            "https://www.example.com:8443/h"
        );
    }

    #[tokio::test]
    async fn an_https_check_without_its_client_fails_with_the_reason() {
        let check = https_check(
            "https://127.0.0.1:9/",
            Some("www.example.com"),
            Some("/nonexistent/ca.pem"),
        );
        let client = https_client(&check).map_err(|e| format!("check cannot run: {e}"));
        assert!(client.is_err());
        let checker = Checker::new().unwrap_or_else(|e| panic!("{e}"));
        let p = checker.probe(&check, Some(&client)).await;
        assert_eq!(p.failure, Some(FailKind::Tls));
        assert!(p.detail.contains("cannot read ca_file"), "{}", p.detail);
    }

    #[test]
    fn observe_reports_only_flips() {
        let mut rf = RiseFall::default();
        assert_eq!(rf.observe(true, 2, 2), None);
        assert_eq!(rf.observe(false, 2, 2), None);
        assert_eq!(rf.observe(false, 2, 2), Some(false));
        assert_eq!(rf.observe(false, 2, 2), None);
        assert_eq!(rf.observe(true, 2, 2), None);
        assert_eq!(rf.observe(true, 2, 2), Some(true));
    }
}
