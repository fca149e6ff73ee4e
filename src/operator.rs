//! The operator: every command and status over the zones, the state store,
//! health and the answer counters. Knows nothing of HTTP: commands take
//! the [`crate::api`] requests and return its responses or its typed errors.
//!
//! Every change goes through one path, `Operator::apply`: take the writer
//! lock, find the service, let the command decide (validate, and say what
//! the service's state becomes and which [`Change`] to record), record it,
//! commit it to the [`StateStore`] (decided again if only other services
//! changed meanwhile, refused if this one did), publish it, rebuild the
//! answer plan, log it; then, the lock released, wait for the other hosts
//! of a cluster to serve the new epoch. A command only says what changes.
//! Status and history are in [`status`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tracing::{info, warn};

use crate::answer::{self, Live, Plan, Role, next_serial, serial_floor};
use crate::api::{
    Applied, BadActor, DecommissionError, DecommissionRequest, EndpointError, EndpointRequest,
    MAX_REASON, NotFound, NotSaved, OkResponse, ReasonRequest, ReasonTooLong, RecommissionError,
    ReloadError, ReloadResponse, TransitionError, TransitionRequest, TransitionResponse,
};
use crate::clock::{Clock, format_ms};
use crate::config::Config;
use crate::health::{self, Status};
use crate::phase::{self, Direction, PhaseError, PoolView};
use crate::pool::EndpointKey;
use crate::state::{
    Change, CommitError, Epoch, Event, STATE_VERSION, ServiceState, State, StateStore,
};
use crate::stats::{SplitWindow, Stats};
use crate::sync::lock;
use crate::zone::{self, Service, Zone};

pub mod auto;
pub mod cookies;
mod dnssec;
mod load;
pub mod status;
pub mod ui;

pub use load::load_all;
use status::stranded;

/// Everything the commands work on. The DNS path only reads `plan`.
pub struct Operator {
    /// Where `reload` reads the zones and checks the config file.
    zones_dir: PathBuf,
    config_file: Option<PathBuf>,
    /// Current zones; replaced whole by a successful reload.
    zones: Mutex<Arc<Vec<Zone>>>,
    /// Their digest ([`zone::digest()`]), replaced with them.
    digest: Mutex<String>,
    /// The current zones' generation is not yet started in the shared
    /// store (it was unreachable): [`Operator::register_zones`] retries.
    zones_pending: AtomicBool,
    /// Operator state as last committed, and its epoch. Readers clone the
    /// `Arc` under a short lock; the store is written outside it, so a slow
    /// fsync never blocks status, metrics or rebuilds.
    state: Mutex<(Arc<State>, Epoch)>,
    /// Serialises everything that changes state or zones (commands,
    /// reload); taken only on blocking threads.
    writer: Mutex<()>,
    /// Where state is kept.
    store: Box<dyn StateStore>,
    /// Endpoint health, as the checks record it.
    pub health: Arc<health::Table>,
    /// The health-check tasks, restarted by a reload.
    checks: health::Checks,
    /// Counters that outlive plans.
    pub stats: Arc<Stats>,
    /// What was served over the last minute, for `status`.
    window: SplitWindow,
    /// The answer snapshot the DNS path reads.
    pub plan: Arc<ArcSwap<Plan>>,
    /// Serial of the last plan and what it was made of; its lock also
    /// serialises rebuilds.
    serial: Mutex<Served>,
    /// The time.
    clock: Arc<dyn Clock>,
    /// Unix seconds when this process started: the start of a `hold` for
    /// a service still in the phase it was configured with (no transition
    /// recorded), so that a hold on the initial phase is honoured too.
    started: u64,
    /// This host's id in `_dnsshift` TXT and host reports: the cluster
    /// node, else `server_id`.
    node: String,
    /// The state is shared (`[cluster]`): the SOA serial is the shared
    /// `serial_base` plus the epoch, the same on every host.
    shared: bool,
    /// The epoch of every state applied here (a command or a change made
    /// elsewhere), for the host report.
    pub applied: tokio::sync::watch::Sender<Epoch>,
    /// What the evaluator of automatic progression knows (issue 17).
    pub board: Arc<crate::analysis::runner::Board>,
    /// The election of evaluators (a shared store).
    elector: Option<Arc<crate::state::elect::Elector>>,
    /// The state directory that keeps the DNSSEC key history, for
    /// `check`'s rollover warnings ([`crate::dnssec::KeyHistory`]).
    key_history: Option<PathBuf>,
    /// The DNS cookie secret's source and rotation (`None`: a test
    /// operator; the secret in use stays as it is).
    cookies: Option<Arc<cookies::CookieKeeper>>,
}

/// What the last plan's SOA serial was made of.
#[derive(Debug, Default)]
struct Served {
    /// The serial.
    serial: u32,
    /// Shared store: `max(epoch, zone generation)`, or more while the zones'
    /// generation is pending; the serial is `serial_base` plus this.
    generation: Epoch,
    /// Digest of the zones it served ("" before the first plan).
    digest: String,
}

/// How long a command that changed the state waits for every live host to
/// report the new epoch before returning with a warning.
pub const HOSTS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How many times a command is decided again when its commit was refused
/// because another service changed meanwhile (a shared store).
const MAX_RETRIES: usize = 3;

/// What a command decided, once it has validated. Short-lived: the size
/// of a change does not matter.
#[allow(clippy::large_enum_variant)]
enum Decision<R> {
    /// Nothing changes (a dry run, or already so); answer `R`.
    Unchanged(R),
    /// The service's state becomes `next`; `change` is recorded.
    Change {
        next: ServiceState,
        change: Change,
        forced: bool,
        /// Extra words for the log line.
        detail: String,
        response: R,
    },
}

/// What a command sees while it decides.
struct Ctx<'a> {
    service: &'a Service,
    key: String,
    state: &'a State,
    /// The service's state now (default if none recorded).
    current: ServiceState,
    health: &'a HashMap<EndpointKey, Status>,
    now_ms: u64,
}

impl Ctx<'_> {
    /// The whole state with the service's state replaced by `next`.
    fn with(&self, next: &ServiceState) -> State {
        let mut s = self.state.clone();
        s.services.insert(self.key.clone(), next.clone());
        s
    }
}

/// Which pools of a service could take traffic, for transition checks.
struct Pools<'a> {
    service: &'a Service,
    live: Live<'a>,
}

impl PoolView for Pools<'_> {
    fn healthy(&self, pool: usize) -> bool {
        use answer::Inputs;
        let p = &self.service.pools[pool];
        p.endpoints.iter().any(|e| {
            !self.live.disabled(self.service, p, e) && self.live.healthy(self.service, p, e)
        })
    }
    fn decommissioned(&self, pool: usize) -> bool {
        use answer::Inputs;
        self.live
            .decommissioned(self.service, &self.service.pools[pool])
    }
    fn name(&self, pool: usize) -> String {
        self.service.pools[pool].name.clone()
    }
}

/// Resolves a service argument: its FQDN (any case, dot optional) or its
/// short name when that is unique.
fn find_service<'z>(zones: &'z [Zone], arg: &str) -> Result<&'z Service, NotFound> {
    let want = arg.trim().trim_end_matches('.').to_ascii_lowercase();
    let mut found = zones
        .iter()
        .flat_map(|z| &z.services)
        .filter(|s| s.key().trim_end_matches('.') == want || s.short.to_ascii_lowercase() == want);
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(NotFound::Service {
            name: arg.to_string(),
            known: zones
                .iter()
                .flat_map(|z| &z.services)
                .map(|s| s.key())
                .collect::<Vec<_>>()
                .join(", "),
        }),
        _ => Err(NotFound::Ambiguous {
            name: arg.to_string(),
        }),
    }
}

/// Index of a pool of `svc` by name.
fn find_pool(svc: &Service, pool: &str) -> Result<usize, NotFound> {
    svc.pool_index(pool).ok_or_else(|| NotFound::Pool {
        service: svc.key(),
        pool: pool.to_string(),
    })
}

/// Refuses reasons longer than [`MAX_REASON`]: every one is kept in the
/// history and the state.
fn check_reason(reason: &Option<String>) -> Result<(), ReasonTooLong> {
    match reason {
        Some(r) if r.len() > MAX_REASON => Err(ReasonTooLong { len: r.len() }),
        _ => Ok(()),
    }
}

impl Operator {
    /// The operator over `zones` and `state` (as [`load_all`] returned
    /// them from `store`), with no plan built yet. `reload` reads
    /// `zones_dir` and checks `config_file`.
    pub fn new(
        zones_dir: PathBuf,
        config_file: Option<PathBuf>,
        (zones, state, epoch): (Vec<Zone>, State, Epoch),
        store: Box<dyn StateStore>,
        checks: health::Checks,
        health: Arc<health::Table>,
        clock: Arc<dyn Clock>,
    ) -> Operator {
        Operator {
            zones_dir,
            config_file,
            digest: Mutex::new(zone::digest(&zones)),
            zones_pending: AtomicBool::new(false),
            zones: Mutex::new(Arc::new(zones)),
            state: Mutex::new((Arc::new(state), epoch)),
            writer: Mutex::new(()),
            store,
            health,
            checks,
            stats: Arc::default(),
            window: SplitWindow::default(),
            plan: Arc::new(ArcSwap::from_pointee(Plan::empty())),
            serial: Mutex::default(),
            started: clock.now_secs(),
            clock,
            node: String::new(),
            shared: false,
            applied: tokio::sync::watch::Sender::new(epoch),
            board: Arc::default(),
            elector: None,
            key_history: None,
            cookies: None,
        }
    }

    /// Keeps the DNS cookie secret with `keeper`: `reload` installs a
    /// `secret_file` through it, `status` shows it, `cookies rotate`
    /// rotates it.
    pub fn with_cookies(mut self, keeper: Arc<cookies::CookieKeeper>) -> Operator {
        self.cookies = Some(keeper);
        self
    }

    /// `dnsshift cookies rotate`: a new DNS cookie secret at once (see
    /// [`cookies`]).
    pub fn rotate_cookies(
        &self,
    ) -> Result<crate::api::CookieStatus, crate::api::CookiesRotateError> {
        match &self.cookies {
            Some(k) => k.rotate_now(),
            None => Err(crate::api::CookiesRotateError::Etcd(
                "this daemon keeps no cookie secret".into(),
            )),
        }
    }

    /// Where the DNS cookie secret comes from, for `status`.
    pub fn cookie_status(&self) -> Option<crate::api::CookieStatus> {
        self.cookies.as_ref().map(|k| k.status())
    }

    /// Names this host `node` (in `_dnsshift` TXT and host reports); `shared`:
    /// the store is shared by several hosts (`[cluster]`).
    ///
    /// A shared host starts a new generation of its zones unless they are
    /// what it last published and their generation is known: a restart with
    /// unchanged zones leaves the serial alone.
    pub fn identified(mut self, node: &str, shared: bool) -> Operator {
        self.node = node.to_string();
        self.shared = shared;
        let digest = self.digest();
        let same =
            self.store.hosts().iter().any(|h| {
                h.report.node == node && h.report.zones.as_deref() == Some(digest.as_str())
            });
        let known = self.store.zone_generation(&digest).is_some();
        self.zones_pending
            .store(shared && !(same && known), Ordering::Relaxed);
        self
    }

    /// Elects the evaluators of automatic progression with `elector` (a
    /// shared store).
    pub fn elected(mut self, elector: Arc<crate::state::elect::Elector>) -> Operator {
        self.elector = Some(elector);
        self
    }

    /// The digest of the current zones.
    pub fn digest(&self) -> String {
        lock(&self.digest).clone()
    }

    /// Starts the current zones' generation in the shared store if it is
    /// pending (after a reload that changed them, or at start-up), then
    /// rebuilds with it. Retried by the host's publish loop while etcd is
    /// unreachable; a failure is returned for the caller to log.
    pub fn register_zones(&self) -> Result<(), String> {
        if !self.zones_pending.load(Ordering::Relaxed) {
            return Ok(());
        }
        // Not under the writer lock: etcd may take its timeout, and
        // commands need not wait for that.
        let digest = self.digest();
        let floor = lock(&self.serial).generation;
        let generation = self
            .store
            .register_zones(&digest, floor)
            .map_err(|e| e.to_string())?;
        let _writer = lock(&self.writer);
        // A reload meanwhile brought other zones: they stay pending.
        if self.digest() == digest {
            self.zones_pending.store(false, Ordering::Relaxed);
        }
        self.rebuild();
        info!(zones = %digest, generation, serial = self.plan.load().serial, "zone generation recorded");
        Ok(())
    }

    /// Whether the current zones' generation waits for the shared store.
    pub fn zones_pending(&self) -> bool {
        self.zones_pending.load(Ordering::Relaxed)
    }

    /// The current zones.
    pub fn zones(&self) -> Arc<Vec<Zone>> {
        lock(&self.zones).clone()
    }

    /// The current operator state.
    pub fn state(&self) -> Arc<State> {
        lock(&self.state).0.clone()
    }

    /// The epoch of the state this host serves (0 for a single host's file
    /// store, whose changes have no epochs).
    pub fn applied_epoch(&self) -> i64 {
        lock(&self.state).1
    }

    /// Starts (or restarts) the health checks of the current zones; the
    /// future completes when each endpoint has had its first probe.
    pub fn start_checks(&self) -> impl std::future::Future<Output = ()> + Send + use<> {
        self.checks.restart(&self.zones())
    }

    /// Rebuilds the answer plan from the current inputs and swaps it in.
    ///
    /// The SOA serial: a single host's is time-based and rises with every
    /// rebuild ([`next_serial`]). A shared host's is `serial_base +
    /// max(epoch, generation of its zones)` (see [`crate::state::cluster`]):
    /// the same on every host with the same zones and state. While the
    /// zones' generation is pending (etcd unreachable), a zone change
    /// raises it by one on this host alone, and it never goes back.
    pub fn rebuild(&self) {
        let mut served = lock(&self.serial);
        let zones = self.zones();
        let digest = self.digest();
        let (state, epoch) = lock(&self.state).clone();
        let health = self.health.all();
        let zones_changed = served.digest != digest;
        served.serial = match state.serial_base {
            Some(base) if self.shared => {
                let shared = self.shared_generation(epoch, &digest);
                served.generation = if self.zones_pending() {
                    shared.max(served.generation + Epoch::from(zones_changed))
                } else {
                    shared
                };
                let g = u64::try_from(served.generation).unwrap_or(0);
                u32::try_from(base.wrapping_add(g) % (1 << 32)).unwrap_or(0)
            }
            _ => next_serial(served.serial, serial_floor(&zones, self.clock.now_secs())),
        };
        served.digest = digest.clone();
        let live = Live {
            state: &state,
            health: &health,
        };
        let marker = answer::Marker {
            epoch,
            node: self.node.clone(),
            zones: digest,
        };
        let plan = Plan::build_marked(&zones, &live, &self.stats, served.serial, Some(&marker));
        self.plan.store(Arc::new(plan));
    }

    /// The shared part of the serial: the state's epoch or the zones'
    /// generation, whichever is later.
    fn shared_generation(&self, epoch: Epoch, digest: &str) -> Epoch {
        epoch.max(self.store.zone_generation(digest).unwrap_or(0))
    }

    /// Rebuilds if the shared serial moved without a state change (another
    /// host started a generation of the zones served here).
    fn rebuild_if_generation_moved(&self) {
        if !self.shared {
            return;
        }
        let epoch = lock(&self.state).1;
        let moved = {
            let served = lock(&self.serial);
            self.shared_generation(epoch, &served.digest) > served.generation
        };
        if moved {
            self.rebuild();
        }
    }

    /// Takes one sample of the answer counters (every second).
    pub fn sample(&self) {
        self.window
            .sample(&self.zones(), &self.stats, self.clock.now_ms());
    }

    /// Unix seconds from which the current phase's `hold` counts: when it
    /// was entered, or start-up for a phase never changed.
    fn phase_since(&self, since: u64) -> u64 {
        if since == 0 { self.started } else { since }
    }

    /// The one path of every change: lock, find, let `decide` validate and
    /// say what changes, record, commit, publish, rebuild, log; then (the
    /// lock released) wait for the other hosts and say which lag behind.
    /// The response carries the epoch the change created.
    fn apply<R: Applied, E>(
        &self,
        service: &str,
        who: (&Option<String>, &Option<String>),
        decide: impl Fn(&Ctx<'_>) -> Result<Decision<R>, E>,
    ) -> Result<R, E>
    where
        E: From<NotFound> + From<ReasonTooLong> + From<BadActor> + From<NotSaved>,
    {
        self.apply_fenced(service, who, None, decide)
    }

    /// [`Operator::apply`], the commit fenced by an election key and lease
    /// (an automatic change in a cluster): refused once the lease is lost.
    fn apply_fenced<R: Applied, E>(
        &self,
        service: &str,
        who: (&Option<String>, &Option<String>),
        fence: Option<&(String, i64)>,
        decide: impl Fn(&Ctx<'_>) -> Result<Decision<R>, E>,
    ) -> Result<R, E>
    where
        E: From<NotFound> + From<ReasonTooLong> + From<BadActor> + From<NotSaved>,
    {
        let (mut response, epoch) = self.commit_change(service, who, fence, decide)?;
        if let Some(w) = self.zones_warning() {
            response.warn(w);
        }
        if let Some(epoch) = epoch {
            response.created(epoch);
            if self.shared
                && let Some(w) = self.await_hosts(epoch)
            {
                warn!(warning = %w, "not every host applied the change in time");
                response.warn(w);
            }
        }
        Ok(response)
    }

    /// [`Operator::apply`] under the writer lock; the epoch created, if any.
    /// A commit refused because another command changed *another* service
    /// meanwhile is decided again on the state as it is now, at most
    /// [`MAX_RETRIES`] times; a change to the same service is a conflict.
    fn commit_change<R, E>(
        &self,
        service: &str,
        (reason, actor): (&Option<String>, &Option<String>),
        fence: Option<&(String, i64)>,
        decide: impl Fn(&Ctx<'_>) -> Result<Decision<R>, E>,
    ) -> Result<(R, Option<Epoch>), E>
    where
        E: From<NotFound> + From<ReasonTooLong> + From<BadActor> + From<NotSaved>,
    {
        check_reason(reason)?;
        BadActor::check(actor)?;
        let _writer = lock(&self.writer);
        let zones = self.zones();
        let svc = find_service(&zones, service)?;
        let key = svc.key();
        let mut retries = 0;
        loop {
            let (state, epoch) = lock(&self.state).clone();
            let health = self.health.all();
            let ctx = Ctx {
                service: svc,
                current: state.service(&key),
                key: key.clone(),
                state: &state,
                health: &health,
                now_ms: self.clock.now_ms(),
            };
            let (next, change, forced, detail, response) = match decide(&ctx)? {
                Decision::Unchanged(r) => return Ok((r, None)),
                Decision::Change {
                    next,
                    change,
                    forced,
                    detail,
                    response,
                } => (next, change, forced, detail, response),
            };
            let mut new = ctx.with(&next);
            new.version = STATE_VERSION;
            let event = Event {
                at: ctx.now_ms / 1000,
                service: ctx.key.clone(),
                change,
                reason: reason.clone(),
                forced,
                node: Some(self.node.clone()).filter(|n| !n.is_empty()),
                actor: actor.clone(),
            };
            new.record(event.clone());
            let epoch = match self.store.commit_fenced(epoch, &new, &event, fence) {
                Ok(epoch) => epoch,
                Err(CommitError::Conflict { expected, found }) if retries < MAX_RETRIES => {
                    retries += 1;
                    self.after_conflict(&key, &state, expected, found)
                        .map_err(NotSaved)?;
                    continue;
                }
                Err(e) => return Err(NotSaved(e).into()),
            };
            *lock(&self.state) = (Arc::new(new), epoch);
            self.rebuild();
            self.applied.send_replace(epoch);
            let message = match event.change {
                Change::Advance { .. } | Change::Rollback { .. } => "phase changed",
                Change::Disable { .. } | Change::Enable { .. } => "endpoint override",
                Change::Decommission { .. } => "pool decommissioned",
                Change::Recommission { .. } => "pool recommissioned",
                Change::Auto { .. } => "automation",
            };
            info!(
                service = %event.service,
                action = event.change.action(),
                from = event.change.from().unwrap_or(""),
                to = event.change.to(),
                forced,
                reason = reason.as_deref().unwrap_or(""),
                actor = actor.as_deref().unwrap_or(""),
                detail,
                epoch,
                "{message}"
            );
            return Ok((response, Some(epoch)));
        }
    }

    /// After a commit from `expected` was refused at `found`: reads the
    /// state as it is now and serves it, so that the command can be
    /// decided again, unless service `key` changed since `seen` (then the
    /// conflict stands: the operator decided on a state that is gone).
    fn after_conflict(
        &self,
        key: &str,
        seen: &State,
        expected: Epoch,
        found: Epoch,
    ) -> Result<(), CommitError> {
        let conflict = |found| CommitError::Conflict { expected, found };
        let loaded = self.store.load()?;
        if loaded.state.services.get(key) != seen.services.get(key) {
            return Err(conflict(loaded.epoch));
        }
        if !self.adopt(loaded) {
            return Err(conflict(found));
        }
        info!(
            service = key,
            expected,
            found,
            "another service changed meanwhile; deciding again on the current state"
        );
        Ok(())
    }

    /// Waits until every other live host reports `epoch` (or later), at most
    /// [`HOSTS_WAIT`]; then says which hosts lag behind.
    fn await_hosts(&self, epoch: Epoch) -> Option<String> {
        let deadline = std::time::Instant::now() + HOSTS_WAIT;
        loop {
            let lagging: Vec<String> = self
                .store
                .hosts()
                .into_iter()
                // This host serves it already: its plan is rebuilt.
                .filter(|h| h.live && h.report.node != self.node && h.report.applied_epoch < epoch)
                .map(|h| format!("{} (epoch {})", h.report.node, h.report.applied_epoch))
                .collect();
            if lagging.is_empty() {
                return None;
            }
            if std::time::Instant::now() >= deadline {
                return Some(format!(
                    "after {}s these hosts still serve an older state than epoch {epoch}: {}",
                    HOSTS_WAIT.as_secs(),
                    lagging.join(", ")
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// `advance` / `rollback`.
    pub fn transition(
        &self,
        service: &str,
        direction: Direction,
        req: TransitionRequest,
    ) -> Result<TransitionResponse, TransitionError> {
        self.apply(service, (&req.reason, &req.actor), |ctx| {
            let svc = ctx.service;
            let current = ctx.state.phase_of(svc);
            let force = req.force && direction == Direction::Advance;
            if req.to.as_deref() == Some(svc.phases[current].name.as_str()) {
                return Err(TransitionError::AlreadyIn {
                    service: ctx.key.clone(),
                    phase: svc.phases[current].name.clone(),
                });
            }
            let view = Pools {
                service: svc,
                live: Live {
                    state: ctx.state,
                    health: ctx.health,
                },
            };
            let target = phase::transition(
                &svc.phases,
                current,
                phase::Request {
                    direction,
                    to: req.to.as_deref(),
                    force,
                },
                self.phase_since(ctx.current.since),
                ctx.now_ms / 1000,
                &view,
            )
            .map_err(|e| match e {
                PhaseError::Decommissioned { phase, pool } => TransitionError::Decommissioned {
                    phase,
                    pool,
                    short: svc.short.clone(),
                },
                e => TransitionError::Phase(e),
            })?;
            let (from, to) = (&svc.phases[current], &svc.phases[target]);
            let mut warnings = Vec::new();
            let (old_ttl, new_ttl) = (svc.ttl_in(current), svc.ttl_in(target));
            if new_ttl > old_ttl {
                warnings.push(format!(
                    "phase {:?} answers with TTL {new_ttl}s, longer than the current {old_ttl}s: a rollback from it takes longer to reach every cache",
                    to.name
                ));
            }
            // Rollbacks too: a rollback into such a phase splits the
            // families the same way.
            warnings.extend(answer::family_warning(svc, target));
            // `advance --to` a later phase: say which steps are left out.
            if direction == Direction::Advance && target > current + 1 {
                let skipped = &svc.phases[current + 1..target];
                warnings.push(format!(
                    "skips phase{} {}: their weights are never served on the way",
                    if skipped.len() == 1 { "" } else { "s" },
                    skipped
                        .iter()
                        .map(|p| format!("{:?}", p.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if force {
                warnings.push("forced: health and hold checks were skipped".into());
            }
            let mut response = TransitionResponse {
                service: ctx.key.clone(),
                from: from.name.clone(),
                to: to.name.clone(),
                applied: !req.dry_run,
                weights: svc
                    .pools
                    .iter()
                    .zip(&to.weights)
                    .map(|(p, w)| (p.name.clone(), *w))
                    .collect(),
                ttl: new_ttl,
                warnings,
                epoch: None,
            };
            if req.dry_run {
                return Ok(Decision::Unchanged(response));
            }
            let mut next = ServiceState {
                phase: Some(to.name.clone()),
                since: ctx.now_ms / 1000,
                ..ctx.current.clone()
            };
            if let Some(w) = auto::pause_for_manual(svc, current, direction, &req.actor, &mut next)
            {
                response.warnings.push(w);
            }
            let (from, to) = (from.name.clone(), to.name.clone());
            Ok(Decision::Change {
                next,
                change: match direction {
                    Direction::Advance => Change::Advance { from, to },
                    Direction::Rollback => Change::Rollback { from, to },
                },
                forced: force,
                detail: format!("weights {:?}, ttl {new_ttl}s", response.weights),
                response,
            })
        })
    }

    /// `endpoint enable|disable`. A disable that would leave a pool that
    /// answers now (main or staging name) without a usable endpoint is
    /// refused unless forced.
    pub fn set_endpoint(
        &self,
        service: &str,
        endpoint: &str,
        enable: bool,
        req: EndpointRequest,
    ) -> Result<OkResponse, EndpointError> {
        let EndpointRequest {
            force,
            reason,
            actor,
        } = req;
        self.apply(service, (&reason, &actor), |ctx| {
            let svc = ctx.service;
            let key = &ctx.key;
            let (pi, pool) = svc
                .pools
                .iter()
                .enumerate()
                .find(|(_, p)| p.endpoints.iter().any(|e| e.id == endpoint))
                .ok_or_else(|| NotFound::Endpoint {
                    service: key.clone(),
                    endpoint: endpoint.to_string(),
                    known: svc
                        .pools
                        .iter()
                        .flat_map(|p| &p.endpoints)
                        .map(|e| e.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            let ek = EndpointKey::new(key, &pool.name, endpoint).in_service();
            let mut next = ctx.current.clone();
            let changed = if enable {
                next.disabled.remove(&ek)
            } else {
                next.disabled.insert(ek.clone())
            };
            let action = if enable { "enable" } else { "disable" };
            if !changed {
                return Ok(Decision::Unchanged(OkResponse::said(format!(
                    "{endpoint} in {key} was already {action}d"
                ))));
            }
            if !enable
                && !force
                && let Some(answers) = stranded(svc, pi, ctx.state, &ctx.with(&next), ctx.health)
            {
                return Err(EndpointError::WouldStrand {
                    endpoint: endpoint.to_string(),
                    pool: pool.name.clone(),
                    answers,
                });
            }
            Ok(Decision::Change {
                next,
                change: if enable {
                    Change::Enable { endpoint: ek }
                } else {
                    Change::Disable { endpoint: ek }
                },
                forced: force && !enable,
                detail: String::new(),
                response: OkResponse::said(format!("{endpoint} in {key} {action}d")),
            })
        })
    }

    /// `decommission`: refused while the current phase gives the pool
    /// weight, the pool is answered (standby, fail-open) or it is what the
    /// staging name answers, even with `force`; refused before its drain
    /// deadline plus grace unless forced.
    /// The writer lock is held from the check to the commit, so that no
    /// phase change slips in between and gives the pool traffic again.
    pub fn decommission(
        &self,
        service: &str,
        pool: &str,
        req: DecommissionRequest,
    ) -> Result<OkResponse, DecommissionError> {
        self.apply(service, (&req.reason, &req.actor), |ctx| {
            let pi = find_pool(ctx.service, pool)?;
            let key = &ctx.key;
            let status = self.service_status(
                ctx.service,
                ctx.state,
                ctx.now_ms,
                ctx.health,
                &self.window.counts(),
            );
            let ps = &status.pools[pi];
            if ps.decommissioned {
                return Ok(Decision::Unchanged(OkResponse::said(format!(
                    "pool {pool} of {key} was already decommissioned"
                ))));
            }
            // Never with --force either: the pool's traffic would silently
            // go to the standby pools, or fail open.
            if ps.weight > 0 {
                return Err(DecommissionError::HasWeight {
                    pool: pool.to_string(),
                    weight: ps.weight,
                    phase: status.phase.clone(),
                });
            }
            if let Some((family, role)) = ps.roles.iter().find(|(_, r)| r.answered()) {
                return Err(DecommissionError::Answered {
                    pool: pool.to_string(),
                    family: family.clone(),
                    fail_open: *role == Role::FailOpen,
                });
            }
            // Never with --force either: the staging name answers this pool
            // alone, and would answer an empty NOERROR without it.
            if let Some(name) = &ctx.service.staging
                && ctx.service.staging_pool == pi
            {
                return Err(DecommissionError::Staging {
                    pool: pool.to_string(),
                    name: name.to_string(),
                });
            }
            if !req.force
                && let Some(safe) = ps.safe_to_decommission_after_ms
                && safe > ctx.now_ms
            {
                return Err(DecommissionError::NotDrained {
                    pool: pool.to_string(),
                    safe: format_ms(safe),
                    drained: ps.drained_at_ms.map(format_ms).unwrap_or_default(),
                });
            }
            let mut next = ctx.current.clone();
            next.decommissioned
                .insert(ctx.service.pools[pi].name.clone());
            Ok(Decision::Change {
                next,
                change: Change::Decommission {
                    pool: pool.to_string(),
                },
                forced: req.force,
                detail: String::new(),
                response: OkResponse::said(format!(
                    "pool {pool} of {key} decommissioned: it is never answered again"
                )),
            })
        })
    }

    /// `recommission`: undoes a decommission; the pool is answered again
    /// as its weights and health say.
    pub fn recommission(
        &self,
        service: &str,
        pool: &str,
        req: ReasonRequest,
    ) -> Result<OkResponse, RecommissionError> {
        self.apply(service, (&req.reason, &req.actor), |ctx| {
            find_pool(ctx.service, pool)?;
            let key = &ctx.key;
            let mut next = ctx.current.clone();
            if !next.decommissioned.remove(pool) {
                return Ok(Decision::Unchanged(OkResponse::said(format!("pool {pool} of {key} was not decommissioned"))));
            }
            Ok(Decision::Change {
                next,
                change: Change::Recommission {
                    pool: pool.to_string(),
                },
                forced: false,
                detail: String::new(),
                response: OkResponse::said(format!(
                        "pool {pool} of {key} recommissioned: answered again as the phase's weights and health say"
                    )),
            })
        })
    }
}

#[cfg(test)]
mod tests;
