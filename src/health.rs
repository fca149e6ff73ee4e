//! Health checks of endpoints over HTTP, HTTPS or TCP; rise/fall state.
//!
//! One task per endpoint probes it every `interval`, feeds the result to
//! its [`RiseFall`], and records it in the shared [`Table`]. The endpoints'
//! probes are spread evenly over the interval, not started in bursts. Only a
//! change of verdict asks for a plan rebuild, so a thousand endpoints probed
//! every second cost a thousand table updates, not a thousand rebuilds. The
//! checker never touches the DNS path: answers read the plan built from the
//! table, and the tasks run on a runtime of their own, on a `health` thread
//! of lower CPU priority ([`crate::background`]), so that a thousand
//! connects a second never delay a DNS worker's wake-up.

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

/// Starts one probing task per checked endpoint on `runtime`; they stop
/// when `stop` is cancelled. A verdict change is logged and `changed`
/// notified. Returns a future (for any runtime) that resolves once every
/// endpoint has its first result (or its first probe timed out).
pub fn start(
    runtime: &tokio::runtime::Handle,
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
    let spawned = tokio::time::Instant::now();
    for (index, (key, check)) in targets.into_iter().enumerate() {
        // Where in each interval this endpoint's probes settle: the
        // endpoints take even shares of the interval (at a random point of
        // their share, so that several hosts do not probe in step), and a
        // thousand checks a second become one a millisecond, not a burst.
        let phase = check
            .interval
            .mul_f64((index as f64 + fastrand::f64()) / total as f64);
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
        runtime.spawn(async move {
            // The first round runs at once, spread over a tenth of the
            // interval, so that verdicts are there soon after a start.
            // Then every probe starts 0.9 to 1.1 intervals after the one
            // before, whatever that one took (a probe that hangs until its
            // timeout does not stretch the interval, so `fall` failures
            // take `fall` intervals), drifting towards the endpoint's
            // phase: within five intervals the probes are spread evenly.
            let mut next = spawned + jitter(check.interval / 10);
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
                next = spawned + next_start(started - spawned, phase, check.interval);
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

/// How long the `health` thread waits for a blocking task (a host name's
/// lookup) when it stops.
const RUNTIME_STOP_GRACE: Duration = Duration::from_secs(1);

/// The running generation of health-check tasks, replaced whole when the
/// zones change (reload), and the runtime they run on.
pub struct Checks {
    checker: Arc<Checker>,
    table: Arc<Table>,
    changed: Arc<Notify>,
    current: Mutex<CancellationToken>,
    shutdown: CancellationToken,
    /// The checks' own runtime, driven by the `health` thread.
    runtime: tokio::runtime::Handle,
    /// Cancelled at shutdown or when this is dropped: ends the `health`
    /// thread and with it every probe still in flight.
    alive: CancellationToken,
}

impl Checks {
    /// No checks yet; tasks record into `table`, notify `changed` when a
    /// verdict flips, and stop at `shutdown`. Starts the `health` thread,
    /// at background priority, with the runtime the tasks will run on.
    pub fn new(
        checker: Arc<Checker>,
        table: Arc<Table>,
        changed: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Checks> {
        let runtime = crate::background::runtime("health")?;
        let handle = runtime.handle().clone();
        let alive = shutdown.child_token();
        let until = alive.clone();
        std::thread::Builder::new()
            .name("health".into())
            .spawn(move || {
                crate::background::lower_priority();
                runtime.block_on(until.cancelled());
                runtime.shutdown_timeout(RUNTIME_STOP_GRACE);
            })?;
        Ok(Checks {
            checker,
            table,
            changed,
            current: Mutex::new(shutdown.child_token()),
            shutdown,
            runtime: handle,
            alive,
        })
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
            &self.runtime,
            self.checker.clone(),
            self.table.clone(),
            zones,
            self.changed.clone(),
            token,
        )
    }
}

impl Drop for Checks {
    fn drop(&mut self) {
        self.alive.cancel();
    }
}

/// When the probe after one that started at `started` starts, both counted
/// from the same origin: at the time of the endpoint's `phase` (a point in
/// `0..interval`, repeating every interval) nearest to one interval later,
/// but no sooner than 0.9 and no later than 1.1 intervals after `started`.
fn next_start(started: Duration, phase: Duration, interval: Duration) -> Duration {
    let due = started + interval;
    let step = interval.as_nanos().max(1);
    // How far `due` is past the last time of the phase (phase < interval
    // <= due, so the subtraction cannot wrap).
    let past = (due.as_nanos() - phase.as_nanos() % step) % step;
    let nearest = if past <= step / 2 {
        due - Duration::from_nanos(past as u64)
    } else {
        due + Duration::from_nanos((step - past) as u64)
    };
    nearest.clamp(
        started + interval.mul_f64(0.9),
        started + interval.mul_f64(1.1),
    )
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

    /// The probe start times of one endpoint: the first at `first`, then
    /// `rounds` more, each as [`next_start`] schedules it.
    fn starts(
        first: Duration,
        phase: Duration,
        interval: Duration,
        rounds: usize,
    ) -> Vec<Duration> {
        let mut at = vec![first];
        for _ in 0..rounds {
            let last = *at.last().unwrap();
            at.push(next_start(last, phase, interval));
        }
        at
    }

    #[test]
    fn probes_drift_to_their_phase_within_bounded_gaps_then_keep_the_interval() {
        let interval = Duration::from_secs(1);
        let ms = Duration::from_millis;
        // First probes anywhere in the first tenth; phases all over the
        // interval, including the far side (half an interval away).
        for first in [ms(0), ms(37), ms(99)] {
            for phase in [
                ms(0),
                ms(1),
                ms(250),
                ms(499),
                ms(500),
                ms(501),
                ms(600),
                ms(999),
            ] {
                let at = starts(first, phase, interval, 12);
                for w in at.windows(2) {
                    let gap = w[1] - w[0];
                    assert!(
                        gap >= ms(900) && gap <= ms(1100),
                        "first {first:?}, phase {phase:?}: gap {gap:?} in {at:?}"
                    );
                }
                // On the phase within five intervals (half an interval away
                // at most, a tenth closer each time), then exactly on it.
                for t in &at[6..] {
                    assert_eq!(
                        t.as_nanos() % interval.as_nanos(),
                        phase.as_nanos(),
                        "first {first:?}, phase {phase:?}: {at:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_burst_of_first_probes_spreads_evenly_over_the_interval() {
        // A thousand endpoints probed once a second, all first probed in
        // the same tenth of a second, with the phases `start` gives them.
        let interval = Duration::from_secs(1);
        let n = 1000;
        let mut per_tenth = [0usize; 10];
        for i in 0..n {
            let phase = interval.mul_f64((i as f64 + fastrand::f64()) / n as f64);
            let first = jitter(interval / 10);
            let at = starts(first, phase, interval, 6);
            let into = at[6].as_nanos() % interval.as_nanos();
            per_tenth[(into * 10 / interval.as_nanos()) as usize] += 1;
        }
        // Each tenth of the interval holds its hundred, give or take the
        // two endpoints on its edges.
        for (tenth, count) in per_tenth.iter().enumerate() {
            assert!(
                count.abs_diff(n / 10) <= 1,
                "tenth {tenth} of the interval has {count} probes: {per_tenth:?}"
            );
        }
    }

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
