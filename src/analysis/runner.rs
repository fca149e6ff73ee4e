//! The evaluator: one task that, for every service whose automation runs
//! and which this host evaluates, asks the provider when the machine says
//! so and carries the machine's decisions out through the operator
//! ([`Steer`]), exactly as a person's command would be. Also the dry run of
//! `dnsshift analysis` ([`evaluate`]) and the webhook sender ([`Notifier`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::machine::{
    Action, Machine, Measured, Outcome, Verdict, judge, judge_share, judge_volume, measurements,
};
use super::provider::{Provider, Reading};
use crate::clock::Clock;
use crate::state::{AutoRecord, State};
use crate::sync::lock;
use crate::zone::analysis::{Analysis, ProviderKind, template};
use crate::zone::{Service, Zone};

/// How often the evaluator looks at every service.
pub const TICK: Duration = Duration::from_millis(250);

/// What the evaluator does through the operator.
pub trait Steer: Send + Sync + 'static {
    /// The zones served now.
    fn zones(&self) -> Arc<Vec<Zone>>;
    /// The state committed now.
    fn state(&self) -> Arc<State>;
    /// Unix seconds from which the current phase counts, given the
    /// recorded `since` (0: never changed).
    fn phase_since(&self, since: u64) -> u64;
    /// Whether this host evaluates `service` now (a single host always;
    /// in a cluster, the holder of the service's lease).
    fn evaluates(&self, service: &str) -> bool;
    /// Carries out `step` for `service` if it is still in phase `from` and
    /// its automation still runs; says what was done, or why not.
    fn auto_step(&self, service: &str, from: &str, step: &Step) -> Result<String, String>;
    /// This host's name, for status and webhooks.
    fn node(&self) -> String;
    /// The election of evaluators (a cluster), which also keeps the counts.
    fn elector(&self) -> Option<Arc<crate::state::elect::Elector>> {
        None
    }
}

/// An automatic decision, carried out by [`Steer::auto_step`].
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// To the next phase.
    Advance { reason: String },
    /// To the phase where automation started; automation then fails.
    Rollback { reason: String },
    /// Automation pauses; the weights stay.
    Pause { why: String },
    /// The last phase is reached.
    Done,
}

impl Step {
    /// The webhook's `event`.
    pub fn event(&self) -> &'static str {
        match self {
            Step::Advance { .. } => "advance",
            Step::Rollback { .. } => "rollback",
            Step::Pause { .. } => "pause",
            Step::Done => "done",
        }
    }
    /// Why, in words.
    pub fn reason(&self) -> &str {
        match self {
            Step::Advance { reason } | Step::Rollback { reason } => reason,
            Step::Pause { why } => why,
            Step::Done => "the last phase is reached",
        }
    }
}

/// What the evaluator knows of one service, for status and metrics.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// The machine, as of its last step.
    pub machine: Machine,
    /// Unix ms from which an evaluation may be asked in the current phase.
    pub first_eval_ms: u64,
    /// Unix ms when the current phase was entered.
    pub since_ms: u64,
    /// Why it waits (the last wait's words).
    pub why: String,
    /// Verdicts counted per check name.
    pub verdicts: BTreeMap<(String, Verdict), u64>,
    /// The last value per check name.
    pub values: BTreeMap<String, f64>,
    /// This host evaluated the service at its last look (a cluster: it
    /// holds the election), so `machine` is current.
    pub elected: bool,
    /// A step the operator refused (hold, health, a conflict) is tried
    /// again from this Unix ms, not at every tick.
    pub retry_at_ms: u64,
    /// Why the last step was refused, logged once.
    pub refused: String,
}

/// The evaluator's view of every service, by service key.
#[derive(Debug, Default)]
pub struct Board {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Board {
    /// The entry of `service`, if it was ever looked at here.
    pub fn get(&self, service: &str) -> Option<Entry> {
        lock(&self.entries).get(service).cloned()
    }
    /// Every entry.
    pub fn all(&self) -> Vec<(String, Entry)> {
        let mut v: Vec<_> = lock(&self.entries)
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
    fn update(&self, service: &str, f: impl FnOnce(&mut Entry)) {
        f(lock(&self.entries).entry(service.to_string()).or_default());
    }
}

/// Every check's last value and verdict counts, for `/metrics`.
pub fn check_metrics(board: &Board) -> Vec<crate::metrics::CheckMetric> {
    let mut out: Vec<crate::metrics::CheckMetric> = Vec::new();
    for (service, e) in board.all() {
        let mut names: Vec<&String> = e
            .values
            .keys()
            .chain(e.verdicts.keys().map(|(n, _)| n))
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            out.push(crate::metrics::CheckMetric {
                service: service.clone(),
                check: name.clone(),
                value: e.values.get(name).copied(),
                verdicts: e
                    .verdicts
                    .iter()
                    .filter(|((n, _), _)| n == name)
                    .map(|((_, v), c)| (v.as_str().to_string(), *c))
                    .collect(),
            });
        }
    }
    out
}

/// The provider a service's analysis asks.
pub fn provider(a: &Analysis) -> Provider {
    match &a.provider {
        ProviderKind::Prometheus => Provider::Prometheus { url: a.url.clone() },
        ProviderKind::Web { path } => Provider::Web {
            url: a.url.clone(),
            path: path.clone(),
        },
    }
}

/// Asks one query, as the machine judges readings.
async fn ask(
    http: &reqwest::Client,
    p: &Provider,
    a: &Analysis,
    query: &str,
    at: SystemTime,
) -> Measured {
    match p.query(http, query, at, a.timeout()).await {
        Ok(Reading::Value(v)) => Measured::Value(v),
        Ok(Reading::Inconclusive(why)) => Measured::Missing(why),
        Err(e) => Measured::Error(e.message),
    }
}

/// Evaluates every check of `svc` in phase `phase` now (`at`): the volume
/// gate, the checks (and their baselines), the share check. Used by the
/// evaluator and by `dnsshift analysis`.
pub async fn evaluate(
    http: &reqwest::Client,
    svc: &Service,
    phase: usize,
    at: SystemTime,
) -> Vec<Outcome> {
    let Some(a) = &svc.analysis else {
        return Vec::new();
    };
    let p = provider(a);
    let pool = &svc.pools[a.pool].name;
    let q = |query: &str, pool: &str| template(query, &svc.short, pool, a.interval);
    let mut out = Vec::new();
    if let Some(v) = &a.volume {
        let query = q(&v.query, pool);
        let m = ask(http, &p, a, &query, at).await;
        out.push(judge_volume(v.min, query, m));
    }
    for c in &a.checks {
        let query = q(&c.query, pool);
        let m = ask(http, &p, a, &query, at).await;
        let base = match c.baseline {
            Some(b) => Some(ask(http, &p, a, &q(&c.query, &svc.pools[b].name), at).await),
            None => None,
        };
        out.push(judge(c, query, m, base));
    }
    if let Some(s) = &a.share {
        let weights = &svc.phases[phase].weights;
        let total: u32 = weights.iter().sum();
        let expected = f64::from(weights[a.pool]) / f64::from(total.max(1));
        // The measured pool first, then every other pool.
        let order = std::iter::once(a.pool).chain((0..svc.pools.len()).filter(|&i| i != a.pool));
        let mut rates = Vec::new();
        for i in order {
            rates.push(ask(http, &p, a, &q(&s.query, &svc.pools[i].name), at).await);
        }
        out.push(judge_share(s.tolerance, expected, q(&s.query, pool), rates));
    }
    out
}

/// The settle of the current phase: the TTL served before it was entered
/// (the phase it came from, as history says; else the longest TTL the
/// service answers) plus the skew.
pub fn settle(svc: &Service, state: &State, a: &Analysis) -> Duration {
    let key = svc.key();
    let current = &svc.phases[state.phase_of(svc)].name;
    let st = state.service(&key);
    let before = st
        .entered_from
        .filter(|_| st.phase.as_ref() == Some(current))
        .and_then(|from| svc.phase_index(&from))
        .map_or(svc.max_ttl(), |i| svc.ttl_in(i));
    a.settle(before)
}

/// Runs the evaluator until `shutdown`.
pub async fn run(
    steer: Arc<dyn Steer>,
    board: Arc<Board>,
    clock: Arc<dyn Clock>,
    notifier: Notifier,
    shutdown: CancellationToken,
) {
    let http = match reqwest::Client::builder().no_proxy().build() {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "cannot build the analysis HTTP client; automation does not run");
            return;
        }
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let zones = steer.zones();
        for svc in zones.iter().flat_map(|z| &z.services) {
            if shutdown.is_cancelled() {
                return;
            }
            step_service(&steer, &board, &*clock, &notifier, &http, svc).await;
        }
    }
}

/// One look at one service.
async fn step_service(
    steer: &Arc<dyn Steer>,
    board: &Board,
    clock: &dyn Clock,
    notifier: &Notifier,
    http: &reqwest::Client,
    svc: &Service,
) {
    let Some(a) = &svc.analysis else { return };
    let key = svc.key();
    let state = steer.state();
    let st = state.service(&key);
    let Some(rec) = st.auto.as_ref().filter(|r| r.running()) else {
        return;
    };
    if !steer.evaluates(&key) {
        // Whoever evaluates next here starts from the saved counts.
        board.update(&key, |e| e.elected = false);
        return;
    }
    let phase = state.phase_of(svc);
    let settle = settle(svc, &state, a);
    let since_ms = steer.phase_since(st.since) * 1000;
    let view = super::machine::View {
        analysis: a,
        phase: &svc.phases[phase].name,
        auto: svc.auto.get(phase).copied().flatten(),
        last: phase + 1 == svc.phases.len(),
        measured: svc.phases[phase].weights[a.pool] > 0,
        since_ms,
        settle,
    };
    let elector = steer.elector();
    let mut machine = match board.get(&key) {
        Some(e) if e.elected || elector.is_none() => e.machine,
        // Newly elected: start from the counts the last evaluator saved.
        _ => {
            let saved = match &elector {
                Some(el) => el.load_counters(&key).await,
                None => Ok(None),
            };
            let m = match saved {
                Ok(Some(bytes)) => serde_json::from_slice::<Machine>(&bytes)
                    .ok()
                    .filter(|m| m.phase == svc.phases[phase].name)
                    .unwrap_or_default(),
                Ok(None) => Machine::default(),
                Err(e) => {
                    warn!(service = %key, error = %e, "cannot read the saved counts; not evaluating yet");
                    return;
                }
            };
            if elector.is_some() {
                info!(service = %key, passes = m.counters.passes, failures = m.counters.failures, phase = %m.phase, "evaluating from the saved counts");
            }
            board.update(&key, |e| e.elected = true);
            m
        }
    };
    let now = clock.now_ms();
    if board.get(&key).is_some_and(|e| now < e.retry_at_ms) {
        return;
    }
    let mut action = machine.next(&view, now);
    if action == Action::Evaluate {
        let at = UNIX_EPOCH + Duration::from_millis(now);
        let outcomes = evaluate(http, svc, phase, at).await;
        board.update(&key, |e| {
            for o in &outcomes {
                *e.verdicts.entry((o.name.clone(), o.verdict)).or_default() += 1;
                if let Some(v) = o.value {
                    e.values.insert(o.name.clone(), v);
                }
            }
        });
        action = machine.record(&view, clock.now_ms(), outcomes);
        if let Some(el) = &elector {
            let bytes = serde_json::to_vec(&machine).unwrap_or_default();
            match el.save_counters(&key, bytes).await {
                Ok(true) => {}
                Ok(false) => {
                    // Lost the election meanwhile: the next holder decides.
                    board.update(&key, |e| e.elected = false);
                    return;
                }
                Err(e) => warn!(service = %key, error = %e, "cannot save the counts"),
            }
        }
    }
    let why = match &action {
        Action::Wait { why } => why.clone(),
        _ => String::new(),
    };
    board.update(&key, |e| {
        e.machine = machine.clone();
        e.first_eval_ms = Machine::first_eval_ms(&view);
        e.since_ms = since_ms;
        e.why = why;
    });
    let step = match action {
        Action::Wait { .. } | Action::Evaluate => return,
        Action::Advance { reason } => Step::Advance { reason },
        Action::Rollback { reason } => Step::Rollback { reason },
        Action::Pause { why } => Step::Pause { why },
        Action::Done => Step::Done,
    };
    let from = svc.phases[phase].name.clone();
    let (s, k, f, st2) = (steer.clone(), key.clone(), from.clone(), step.clone());
    let done = tokio::task::spawn_blocking(move || s.auto_step(&k, &f, &st2)).await;
    match done {
        Ok(Ok(what)) => {
            board.update(&key, |e| e.refused.clear());
            info!(service = %key, event = step.event(), from = %from, reason = step.reason(), "{what}");
            let body = |event: &str, reason: &str| {
                serde_json::json!({
                    "service": key,
                    "event": event,
                    "from": from,
                    "result": what,
                    "reason": reason,
                    "origin": rec.origin,
                    "node": steer.node(),
                    "at_ms": clock.now_ms(),
                    "checks": machine.last,
                    "measurements": measurements(&machine.last),
                })
            };
            notifier.send(body(step.event(), step.reason()));
            // The advance into the last phase completes the run; a
            // rollback ends it failed: each has a body of its own.
            match &step {
                Step::Advance { .. } if phase + 2 == svc.phases.len() => {
                    notifier.send(body("done", "the last phase is reached"));
                }
                Step::Rollback { reason } => notifier.send(body("failed", reason)),
                _ => {}
            }
            // Counts start again (in the next phase, or when resumed);
            // the last evaluation stays on show.
            board.update(&key, |e| {
                e.machine = Machine {
                    last: std::mem::take(&mut e.machine.last),
                    ..Machine::default()
                }
            });
        }
        Ok(Err(why)) => {
            warn!(service = %key, event = step.event(), why = %why, "automatic step not taken");
            board.update(&key, |e| {
                e.why = format!("{} not taken: {why}", step.event())
            });
        }
        Err(e) => warn!(service = %key, error = %e, "automatic step failed"),
    }
}

/// A mode change of a record, with a reason, for a pause or failure.
pub fn record(mode: &str, origin: &str, why: &str) -> AutoRecord {
    AutoRecord {
        mode: mode.to_string(),
        origin: origin.to_string(),
        why: why.to_string(),
    }
}

/// Webhook deliveries waiting at most; more are dropped (and logged) so
/// that the machine never waits for a webhook.
pub const NOTIFY_QUEUE: usize = 256;
/// Attempts per webhook delivery, with [`NOTIFY_BACKOFF`] doubling between.
pub const NOTIFY_ATTEMPTS: u32 = 4;
pub const NOTIFY_BACKOFF: Duration = Duration::from_millis(500);
/// Bound on one delivery attempt.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// A service's webhook URLs, by service key.
pub type Urls = Arc<dyn Fn(&str) -> Vec<String> + Send + Sync>;

/// Sends webhook bodies on a task of its own.
#[derive(Clone)]
pub struct Notifier {
    tx: tokio::sync::mpsc::Sender<(Vec<String>, serde_json::Value)>,
    /// The URLs per service key.
    urls: Urls,
}

impl Notifier {
    /// Starts the sender; `urls` gives a service's webhook URLs.
    pub fn start(urls: Urls, shutdown: CancellationToken) -> Notifier {
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<(Vec<String>, serde_json::Value)>(NOTIFY_QUEUE);
        tokio::spawn(async move {
            let http = match reqwest::Client::builder()
                .no_proxy()
                .timeout(NOTIFY_TIMEOUT)
                .build()
            {
                Ok(h) => h,
                Err(e) => {
                    warn!(error = %e, "cannot build the webhook client");
                    return;
                }
            };
            // One worker per URL: its bodies arrive in order, and a dead
            // receiver retrying delays nobody else.
            let mut workers: HashMap<String, tokio::sync::mpsc::Sender<serde_json::Value>> =
                HashMap::new();
            loop {
                let (urls, body) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = rx.recv() => match m { Some(m) => m, None => return },
                };
                for url in urls {
                    let worker = workers.entry(url.clone()).or_insert_with(|| {
                        let (wtx, mut wrx) =
                            tokio::sync::mpsc::channel::<serde_json::Value>(NOTIFY_QUEUE);
                        let (http, shutdown) = (http.clone(), shutdown.clone());
                        tokio::spawn(async move {
                            while let Some(body) = wrx.recv().await {
                                deliver(&http, &url, &body, &shutdown).await;
                            }
                        });
                        wtx
                    });
                    if worker.try_send(body.clone()).is_err() {
                        warn!("webhook queue of a receiver full; notification dropped");
                    }
                }
            }
        });
        Notifier { tx, urls }
    }

    /// Queues `body` for the service's webhooks; never waits.
    pub fn send(&self, body: serde_json::Value) {
        let service = body["service"].as_str().unwrap_or_default().to_string();
        let urls = (self.urls)(&service);
        if urls.is_empty() {
            return;
        }
        if self.tx.try_send((urls, body)).is_err() {
            warn!(%service, "webhook queue full or closed; notification dropped");
        }
    }
}

async fn deliver(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    shutdown: &CancellationToken,
) {
    let mut wait = NOTIFY_BACKOFF;
    for attempt in 1..=NOTIFY_ATTEMPTS {
        match http.post(url).json(body).send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => warn!(%url, attempt, status = r.status().as_u16(), "webhook refused"),
            Err(e) => {
                warn!(%url, attempt, error = %crate::health::describe_reqwest(&e), "webhook not delivered")
            }
        }
        if attempt < NOTIFY_ATTEMPTS {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait *= 2;
        }
    }
}
