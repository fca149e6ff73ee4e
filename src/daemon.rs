//! Wiring and lifecycle: load config, zones and state, bind sockets, start
//! health checks, build and publish answer plans, run the DNS and control
//! servers until shutdown. Operator operations live here too, as methods
//! on [`Shared`], because each one changes state and rebuilds the plan.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::answer::{self, Inputs, Plan, Role, next_serial, serial_floor};
use crate::clock::{format_ms, unix_ms};
use crate::config::Config;
use crate::control::{
    self, ApiError, DecommissionRequest, EndpointRequest, EndpointStatus, HistoryResponse,
    OkResponse, PoolStatus, ReloadResponse, ServiceStatus, StatusResponse, TransitionRequest,
    TransitionResponse,
};
use crate::dns::{self, Handler, Listener};
use crate::health::{self, Checker, Status};
use crate::phase::{self, Direction, PoolView};
use crate::pool::{Endpoint, EndpointKey, Pool};
use crate::state::{self, Event, State, Store};
use crate::stats::{PoolCounts, SplitWindow, Stats};
use crate::sync::lock;
use crate::zone::{self, Service, Zone};

/// Extra time allowed for the first health round beyond the longest timeout.
const FIRST_ROUND_SLACK: Duration = Duration::from_secs(1);
/// How long shutdown waits for in-flight work.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything the daemon's tasks share. The DNS path only reads `plan`.
pub struct Shared {
    /// Server settings.
    pub config: Config,
    /// Current zones; replaced whole by a successful reload.
    pub zones: Mutex<Arc<Vec<Zone>>>,
    /// Operator state; every change is saved before it is acknowledged.
    /// Readers clone the `Arc` under a short lock; the file is written
    /// outside it, so a slow fsync never blocks status, metrics or rebuilds.
    pub state: Mutex<Arc<State>>,
    /// Serialises everything that changes state or zones (operator
    /// commands, reload); taken only on blocking threads.
    writer: Mutex<()>,
    /// Where state is saved.
    pub store: Store,
    /// Endpoint health.
    pub health: Arc<health::Table>,
    /// Counters that outlive plans.
    pub stats: Arc<Stats>,
    /// The answer snapshot the DNS handler reads.
    pub plan: Arc<ArcSwap<Plan>>,
    /// Counters of the data path's bounds (TCP cap, accept errors, ...).
    pub datapath: Arc<dns::fast::Counters>,
    /// Health tasks notify this when a verdict changes.
    pub health_changed: Arc<Notify>,
    /// What was served over the last minute, for `status`.
    window: SplitWindow,
    /// Serial of the last plan; its lock also serialises rebuilds.
    serial: Mutex<u32>,
    /// Probes endpoints.
    checker: Arc<Checker>,
    /// Stops the current generation of health tasks (replaced on reload).
    checks: Mutex<CancellationToken>,
    /// Daemon-wide shutdown.
    shutdown: CancellationToken,
    /// Unix seconds when this process started: the start of a `hold` for
    /// a service still in the phase it was configured with (no transition
    /// recorded), so that a hold on the initial phase is honoured too.
    started: u64,
}

/// Reads operator state and health for the plan builder.
struct View<'a> {
    state: &'a State,
    health: &'a HashMap<EndpointKey, Status>,
}

impl Inputs for View<'_> {
    fn phase(&self, service: &Service) -> usize {
        self.state.phase_of(service)
    }
    fn disabled(&self, service: &Service, pool: &Pool, endpoint: &Endpoint) -> bool {
        self.state.services.get(&service.key()).is_some_and(|s| {
            s.disabled
                .contains(&EndpointKey::new(&service.key(), &pool.name, &endpoint.id).in_service())
        })
    }
    fn healthy(&self, service: &Service, pool: &Pool, endpoint: &Endpoint) -> bool {
        self.health
            .get(&EndpointKey::new(&service.key(), &pool.name, &endpoint.id))
            .is_none_or(|s| s.state.healthy)
    }
    fn decommissioned(&self, service: &Service, pool: &Pool) -> bool {
        self.state
            .services
            .get(&service.key())
            .is_some_and(|s| s.decommissioned.contains(&pool.name))
    }
}

/// Which pools of a service could take traffic, for transition checks.
struct Pools<'a> {
    service: &'a Service,
    view: View<'a>,
}

impl PoolView for Pools<'_> {
    fn healthy(&self, pool: usize) -> bool {
        let p = &self.service.pools[pool];
        p.endpoints.iter().any(|e| {
            !self.view.disabled(self.service, p, e) && self.view.healthy(self.service, p, e)
        })
    }
    fn decommissioned(&self, pool: usize) -> bool {
        self.view
            .decommissioned(self.service, &self.service.pools[pool])
    }
    fn name(&self, pool: usize) -> String {
        self.service.pools[pool].name.clone()
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    unix_ms() / 1000
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Zones or config are invalid.
    #[error("{0}")]
    Config(#[from] crate::config::source::ConfigErrors),
    /// State is unreadable or does not match the zones.
    #[error("{0}")]
    State(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// Anything else that stops start-up.
    #[error("{0}")]
    Other(String),
}

/// Loads zones and state and checks them against each other: what `check`,
/// start-up and reload all run.
pub fn load_all(config: &Config) -> Result<(Vec<Zone>, State), String> {
    let zones = zone::load_dir(&config.zones_dir).map_err(|e| e.to_string())?;
    let store = Store::new(&config.state_dir);
    let state = store.load().map_err(|e| e.to_string())?;
    let v = state.validate(&zones, &store.path());
    for w in &v.warnings {
        warn!(warning = %w, "stale state entry");
    }
    if !v.errors.is_empty() {
        return Err(v.errors.join("\n"));
    }
    Ok((zones, state))
}

impl Shared {
    /// Resolves a service argument: its FQDN (any case, dot optional) or
    /// its short name when that is unique.
    fn find_service(&self, zones: &[Zone], arg: &str) -> Result<(usize, usize), ApiError> {
        let want = arg.trim().trim_end_matches('.').to_ascii_lowercase();
        let mut found = Vec::new();
        for (zi, z) in zones.iter().enumerate() {
            for (si, s) in z.services.iter().enumerate() {
                if s.key().trim_end_matches('.') == want || s.short.to_ascii_lowercase() == want {
                    found.push((zi, si));
                }
            }
        }
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(ApiError::not_found(format!(
                "unknown service {arg:?} (services: {})",
                zones
                    .iter()
                    .flat_map(|z| &z.services)
                    .map(|s| s.key())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            _ => Err(ApiError::bad_request(format!(
                "service name {arg:?} is ambiguous: give the full name"
            ))),
        }
    }

    /// Resolves a service and one of its pools by name.
    fn find_pool<'z>(
        &self,
        zones: &'z [Zone],
        service: &str,
        pool: &str,
    ) -> Result<(&'z Service, usize), ApiError> {
        let (zi, si) = self.find_service(zones, service)?;
        let svc = &zones[zi].services[si];
        let pi = svc.pool_index(pool).ok_or_else(|| {
            ApiError::not_found(format!("service {} has no pool {pool:?}", svc.key()))
        })?;
        Ok((svc, pi))
    }

    /// Rebuilds the answer plan from the current inputs and swaps it in.
    pub fn rebuild(&self) {
        let mut serial = lock(&self.serial);
        let zones = lock(&self.zones).clone();
        let state = self.state();
        let health = self.health.all();
        *serial = next_serial(*serial, serial_floor(&zones, unix_now()));
        let plan = Plan::build(
            &zones,
            &View {
                state: &state,
                health: &health,
            },
            &self.stats,
            *serial,
        );
        self.plan.store(Arc::new(plan));
    }

    /// Unix seconds from which the current phase's `hold` counts: when it
    /// was entered, or start-up for a phase never changed.
    fn phase_since(&self, since: u64) -> u64 {
        if since == 0 { self.started } else { since }
    }

    /// The current operator state.
    pub fn state(&self) -> Arc<State> {
        lock(&self.state).clone()
    }

    /// Saves `next` as the new state, then publishes it. On a write error
    /// nothing changes and the operator gets the error. Callers hold
    /// `writer`, so nothing else changes state meanwhile.
    fn commit(&self, next: State) -> Result<(), ApiError> {
        self.store
            .save(&next)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        *lock(&self.state) = Arc::new(next);
        Ok(())
    }

    /// `advance` / `rollback`.
    pub fn transition(
        &self,
        service: &str,
        direction: Direction,
        req: TransitionRequest,
    ) -> Result<TransitionResponse, ApiError> {
        check_reason(&req.reason)?;
        let _writer = lock(&self.writer);
        let zones = lock(&self.zones).clone();
        let (zi, si) = self.find_service(&zones, service)?;
        let svc = &zones[zi].services[si];
        let key = svc.key();
        let state = self.state();
        let health = self.health.all();
        let current = state.phase_of(svc);
        let st = state.service(&key);
        let view = Pools {
            service: svc,
            view: View {
                state: &state,
                health: &health,
            },
        };
        let force = req.force && direction == Direction::Advance;
        if req.to.as_deref() == Some(svc.phases[current].name.as_str()) {
            return Err(ApiError::conflict(format!(
                "{key} is already in phase {:?}",
                svc.phases[current].name
            )));
        }
        let now = unix_now();
        let target = phase::transition(
            &svc.phases,
            current,
            phase::Request {
                direction,
                to: req.to.as_deref(),
                force,
            },
            self.phase_since(st.since),
            now,
            &view,
        )
        .map_err(|e| match &e {
            phase::PhaseError::Decommissioned { pool, .. } => ApiError::conflict(format!(
                "{e} (`dnsshift recommission {} {pool}`)",
                svc.short
            )),
            // The operator named the wrong thing: a usage error.
            phase::PhaseError::UnknownPhase { .. } | phase::PhaseError::WrongDirection { .. } => {
                ApiError::bad_request(e.to_string())
            }
            _ => ApiError::conflict(e.to_string()),
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
        if force {
            warnings.push("forced: health and hold checks were skipped".into());
        }
        let response = TransitionResponse {
            service: key.clone(),
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
        };
        if req.dry_run {
            return Ok(response);
        }
        let mut next = (*state).clone();
        next.version = state::STATE_VERSION;
        let entry = next.services.entry(key.clone()).or_default();
        entry.phase = Some(to.name.clone());
        entry.since = now;
        next.record(Event {
            at: now,
            service: key.clone(),
            action: match direction {
                Direction::Advance => "advance".into(),
                Direction::Rollback => "rollback".into(),
            },
            from: Some(from.name.clone()),
            to: Some(to.name.clone()),
            reason: req.reason.clone(),
            forced: force,
        });
        self.commit(next)?;
        self.rebuild();
        info!(
            service = %key,
            action = match direction { Direction::Advance => "advance", Direction::Rollback => "rollback" },
            from = %from.name,
            to = %to.name,
            forced = force,
            reason = req.reason.as_deref().unwrap_or(""),
            weights = ?response.weights,
            ttl = new_ttl,
            "phase changed"
        );
        Ok(response)
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
    ) -> Result<OkResponse, ApiError> {
        let EndpointRequest { force, reason } = req;
        check_reason(&reason)?;
        let _writer = lock(&self.writer);
        let zones = lock(&self.zones).clone();
        let (zi, si) = self.find_service(&zones, service)?;
        let svc = &zones[zi].services[si];
        let key = svc.key();
        let pool = svc
            .pools
            .iter()
            .find(|p| p.endpoints.iter().any(|e| e.id == endpoint))
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "service {key} has no endpoint {endpoint:?} (endpoints: {})",
                    svc.pools
                        .iter()
                        .flat_map(|p| &p.endpoints)
                        .map(|e| e.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let ek = EndpointKey::new(&key, &pool.name, endpoint).in_service();
        let state = self.state();
        let mut next = (*state).clone();
        next.version = state::STATE_VERSION;
        let entry = next.services.entry(key.clone()).or_default();
        let changed = if enable {
            entry.disabled.remove(&ek)
        } else {
            entry.disabled.insert(ek)
        };
        let action = if enable { "enable" } else { "disable" };
        if !changed {
            return Ok(OkResponse {
                message: format!("{endpoint} in {key} was already {action}d"),
            });
        }
        if !enable && !force {
            let health = self.health.all();
            let pi = svc.pool_index(&pool.name).unwrap_or_default();
            if let Some(name) = stranded(svc, pi, &state, &next, &health) {
                return Err(ApiError::conflict(format!(
                    "disabling {endpoint} would leave pool {:?}, which answers {name} now, without a usable endpoint (use --force to disable it anyway; its answers then go to other pools, or follow on_all_down)",
                    pool.name
                )));
            }
        }
        let now = unix_now();
        next.record(Event {
            at: now,
            service: key.clone(),
            action: action.into(),
            from: None,
            to: Some(format!("{}/{endpoint}", pool.name)),
            reason: reason.clone(),
            forced: force && !enable,
        });
        self.commit(next)?;
        self.rebuild();
        info!(service = %key, pool = %pool.name, %endpoint, action, reason = reason.as_deref().unwrap_or(""), "endpoint override");
        Ok(OkResponse {
            message: format!("{endpoint} in {key} {action}d"),
        })
    }

    /// `decommission`: refused while the current phase gives the pool
    /// weight or the pool is answered (standby, fail-open), even with
    /// `force`; refused before its drain deadline plus grace unless forced.
    pub fn decommission(
        &self,
        service: &str,
        pool: &str,
        req: DecommissionRequest,
    ) -> Result<OkResponse, ApiError> {
        check_reason(&req.reason)?;
        // Held from the check to the commit, so that no phase change slips
        // in between and gives the pool traffic again.
        let _writer = lock(&self.writer);
        let zones = lock(&self.zones).clone();
        let (svc, pi) = self.find_pool(&zones, service, pool)?;
        let key = svc.key();
        let state = self.state();
        let status = self.service_status(
            svc,
            &state,
            unix_ms(),
            &self.health.all(),
            &self.window_counts(),
        );
        let ps = &status.pools[pi];
        if ps.decommissioned {
            return Ok(OkResponse {
                message: format!("pool {pool} of {key} was already decommissioned"),
            });
        }
        // Never with --force either: the pool's traffic would silently go
        // to the standby pools, or fail open.
        if ps.weight > 0 {
            return Err(ApiError::conflict(format!(
                "pool {pool:?} has weight {} in the current phase {:?}: move traffic off it first (advance or rollback to a phase that gives it none)",
                ps.weight, status.phase
            )));
        }
        if let Some((family, role)) = ps.roles.iter().find(|(_, r)| r.answered()) {
            return Err(ApiError::conflict(format!(
                "pool {pool:?} answers {family} queries now ({}): decommissioning it would leave them to pools without a usable endpoint",
                match role {
                    Role::FailOpen => "fail-open: no pool has a usable endpoint",
                    _ => "as standby: the weighted pools have no usable endpoint",
                }
            )));
        }
        if !req.force
            && let Some(safe) = ps.safe_to_decommission_after_ms
            && safe > unix_ms()
        {
            return Err(ApiError::conflict(format!(
                "pool {pool:?} is not safe to decommission until {} (drained at {}, plus grace) (use --force to decommission now)",
                format_ms(safe),
                ps.drained_at_ms.map(format_ms).unwrap_or_default()
            )));
        }
        let mut next = (*state).clone();
        next.services
            .entry(key.clone())
            .or_default()
            .decommissioned
            .insert(svc.pools[pi].name.clone());
        self.apply(
            next,
            Event {
                at: unix_now(),
                service: key.clone(),
                action: "decommission".into(),
                from: None,
                to: Some(pool.to_string()),
                reason: req.reason.clone(),
                forced: req.force,
            },
        )?;
        info!(service = %key, %pool, forced = req.force, reason = req.reason.as_deref().unwrap_or(""), "pool decommissioned");
        Ok(OkResponse {
            message: format!("pool {pool} of {key} decommissioned: it is never answered again"),
        })
    }

    /// `recommission`: undoes a decommission; the pool is answered again
    /// as its weights and health say.
    pub fn recommission(
        &self,
        service: &str,
        pool: &str,
        reason: Option<String>,
    ) -> Result<OkResponse, ApiError> {
        check_reason(&reason)?;
        let _writer = lock(&self.writer);
        let zones = lock(&self.zones).clone();
        let key = self.find_pool(&zones, service, pool)?.0.key();
        let state = self.state();
        let mut next = (*state).clone();
        if !next
            .services
            .entry(key.clone())
            .or_default()
            .decommissioned
            .remove(pool)
        {
            return Ok(OkResponse {
                message: format!("pool {pool} of {key} was not decommissioned"),
            });
        }
        self.apply(
            next,
            Event {
                at: unix_now(),
                service: key.clone(),
                action: "recommission".into(),
                from: None,
                to: Some(pool.to_string()),
                reason: reason.clone(),
                forced: false,
            },
        )?;
        info!(service = %key, %pool, reason = reason.as_deref().unwrap_or(""), "pool recommissioned");
        Ok(OkResponse {
            message: format!(
                "pool {pool} of {key} recommissioned: answered again as the phase's weights and health say"
            ),
        })
    }

    /// Records `event` in `next`, saves it and publishes the new answers.
    /// Callers hold `writer`.
    fn apply(&self, mut next: State, event: Event) -> Result<(), ApiError> {
        next.version = state::STATE_VERSION;
        next.record(event);
        self.commit(next)?;
        self.rebuild();
        Ok(())
    }

    /// `history` of one service, or of every service (`None`), oldest first.
    pub fn history(&self, service: Option<&str>) -> Result<HistoryResponse, ApiError> {
        let key = match service {
            Some(s) => {
                let zones = lock(&self.zones).clone();
                let (zi, si) = self.find_service(&zones, s)?;
                Some(zones[zi].services[si].key())
            }
            None => None,
        };
        let state = self.state();
        Ok(HistoryResponse {
            events: state
                .history
                .iter()
                .filter(|e| key.as_ref().is_none_or(|k| e.service == *k))
                .cloned()
                .collect(),
            service: key,
        })
    }

    /// `status`.
    pub fn status(&self, service: Option<&str>) -> Result<StatusResponse, ApiError> {
        let zones = lock(&self.zones).clone();
        let only = match service {
            Some(s) => Some(self.find_service(&zones, s)?),
            None => None,
        };
        let state = self.state();
        let now = unix_ms();
        let health = self.health.all();
        let window = self.window_counts();
        let mut services = Vec::new();
        for (zi, z) in zones.iter().enumerate() {
            for (si, s) in z.services.iter().enumerate() {
                if only.is_none_or(|o| o == (zi, si)) {
                    services.push(self.service_status(s, &state, now, &health, &window));
                }
            }
        }
        Ok(StatusResponse {
            now_ms: now,
            serial: self.plan.load().serial,
            services,
        })
    }

    fn service_status(
        &self,
        s: &Service,
        state: &State,
        now_ms: u64,
        health: &HashMap<EndpointKey, Status>,
        window: &PoolCounts,
    ) -> ServiceStatus {
        let key = s.key();
        let st = state.service(&key);
        let phase = state.phase_of(s);
        let view = View { state, health };
        let main = answer::decisions(s, &view, false);
        let staging = match s.staging {
            Some(_) => answer::decisions(s, &view, true),
            None => Vec::new(),
        };
        let hold_until_ms = s.phases[phase].hold.map(|hold| {
            (self.phase_since(st.since) * 1000).saturating_add(hold.as_millis() as u64)
        });
        let total: u64 = s
            .pools
            .iter()
            .map(|p| {
                window
                    .get(&(key.clone(), p.name.clone()))
                    .copied()
                    .unwrap_or(0)
            })
            .sum();
        let pools = s
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let weight = s.phases[phase].weights[i];
                let decommissioned = st.decommissioned.contains(&p.name);
                let roles: BTreeMap<String, Role> = main
                    .iter()
                    .filter_map(|(f, d)| {
                        let role = d.pools[i].as_ref()?.role;
                        Some((f.label().to_string(), role))
                    })
                    .collect();
                let mut distinct = roles.values();
                let first = distinct.next().copied();
                let role = first.filter(|r| distinct.all(|x| x == r));
                let answered = roles.values().any(|r| r.answered());
                let ps = self.stats.pool(&key, &p.name, s.max_ttl());
                let last = ps.last_answered_ms.load(Ordering::Relaxed);
                let last_ttl = ps.last_ttl.load(Ordering::Relaxed);
                let ever = last > 0;
                let drained_at = (!answered).then(|| ps.expires_at_ms.load(Ordering::Relaxed));
                let count = window
                    .get(&(key.clone(), p.name.clone()))
                    .copied()
                    .unwrap_or(0);
                PoolStatus {
                    pool: p.name.clone(),
                    weight,
                    decommissioned,
                    role,
                    roles,
                    answers_last_minute: count,
                    share_last_minute: if total > 0 {
                        count as f64 / total as f64
                    } else {
                        0.0
                    },
                    last_answered_ms: ever.then_some(last),
                    last_ttl: ever.then_some(last_ttl),
                    drained_at_ms: drained_at,
                    drained: drained_at.is_some_and(|d| d <= now_ms),
                    safe_to_decommission_after_ms: drained_at
                        .map(|d| d + s.drain_grace.as_millis() as u64),
                    endpoints: p
                        .endpoints
                        .iter()
                        .map(|e| {
                            let ek = EndpointKey::new(&key, &p.name, &e.id);
                            let h = health.get(&ek);
                            EndpointStatus {
                                endpoint: e.id.clone(),
                                healthy: h.is_none_or(|h| h.state.healthy),
                                checked: e.check.is_some(),
                                disabled: st.disabled.contains(&ek.in_service()),
                                since: h.map_or(0, |h| h.since),
                                last_check: h.and_then(|h| h.last.clone()),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        ServiceStatus {
            service: key,
            short: s.short.clone(),
            staging: s.staging.as_ref().map(|n| n.to_string()),
            phase: s.phases[phase].name.clone(),
            phases: s.phases.iter().map(|p| p.name.clone()).collect(),
            since: st.since,
            ttl: s.ttl_in(phase),
            hold_until_ms,
            fail_open: main.iter().any(|(_, d)| d.fail_open),
            staging_fail_open: staging.iter().any(|(_, d)| d.fail_open),
            servfail: main.iter().chain(&staging).any(|(_, d)| d.servfail),
            pools,
        }
    }

    /// Main-name answers per (service, pool) over the last minute.
    fn window_counts(&self) -> PoolCounts {
        self.window.counts()
    }

    /// Takes one sample of the answer counters (every second).
    fn sample(&self) {
        let zones = lock(&self.zones).clone();
        self.window.sample(&zones, &self.stats, unix_ms());
    }

    /// Re-reads zones (from the running config's zones directory) and checks
    /// the config file; any error rejects the whole reload and the running
    /// configuration keeps serving.
    pub fn reload(&self) -> Result<ReloadResponse, String> {
        let reject = |e: &dyn std::fmt::Display| {
            warn!(error = %e, "reload rejected; still serving the previous configuration");
            format!("reload rejected, still serving the previous configuration:\n{e}")
        };
        // The server config is re-read too, so that an error in it is
        // reported now rather than at the next start. Its settings
        // (addresses, directories, logging) take effect on restart.
        // Files are read and parsed before the writer lock is taken, so
        // that a slow or stuck file never holds up other commands; only the
        // check against the current state and the swap happen under it.
        if let Some(file) = &self.config.file
            && let Err(e) = Config::load(file)
        {
            return Err(reject(&e));
        }
        let zones = zone::load_dir(&self.config.zones_dir).map_err(|e| reject(&e))?;
        let _writer = lock(&self.writer);
        let v = self.state().validate(&zones, &self.store.path());
        if !v.errors.is_empty() {
            return Err(reject(&v.errors.join("\n")));
        }
        for w in &v.warnings {
            warn!(warning = %w, "stale state entry");
        }
        let services = zones.iter().map(|z| z.services.len()).sum();
        let n = zones.len();
        let checks = {
            let mut token = lock(&self.checks);
            token.cancel();
            *token = self.shutdown.child_token();
            token.clone()
        };
        *lock(&self.zones) = Arc::new(zones.clone());
        self.stats.retain(&zones);
        // Health of endpoints that still exist carries over; new ones count
        // as healthy until their first result.
        let first_round = health::start(
            self.checker.clone(),
            self.health.clone(),
            &zones,
            self.health_changed.clone(),
            checks,
        );
        drop(first_round);
        self.rebuild();
        let serial = self.plan.load().serial;
        info!(zones = n, services, serial, "reloaded");
        Ok(ReloadResponse {
            zones: n,
            services,
            serial,
        })
    }
}

/// Whether the change from `before` to `after` (one more disabled endpoint)
/// strands pool `pool` of `s`: it answers a name and record family with a
/// usable endpoint before, and not after. Returns that name and family.
fn stranded(
    s: &Service,
    pool: usize,
    before: &State,
    after: &State,
    health: &HashMap<EndpointKey, Status>,
) -> Option<String> {
    let usable = |r: Option<Role>| matches!(r, Some(Role::Weighted | Role::StandbyAnswering));
    let role = |state: &State, staging: bool, i: usize| {
        let view = View { state, health };
        answer::decisions(s, &view, staging)[i].1.pools[pool]
            .as_ref()
            .map(|p| p.role)
    };
    let names = [(false, &s.name)]
        .into_iter()
        .chain(s.staging.as_ref().map(|n| (true, n)));
    for (staging, name) in names {
        for (i, family) in answer::Family::of(s).iter().enumerate() {
            if usable(role(before, staging, i)) && !usable(role(after, staging, i)) {
                let what = match family {
                    answer::Family::Other => "queries",
                    f => f.label(),
                };
                return Some(format!("{what} for {name}"));
            }
        }
    }
    None
}

/// Refuses reasons longer than [`control::MAX_REASON`]: every one is kept
/// in the history and the state file.
fn check_reason(reason: &Option<String>) -> Result<(), ApiError> {
    match reason {
        Some(r) if r.len() > control::MAX_REASON => Err(ApiError::bad_request(format!(
            "the reason is {} bytes long; at most {} are kept",
            r.len(),
            control::MAX_REASON
        ))),
        _ => Ok(()),
    }
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let (zones, state) = load_all(&config).map_err(StartError::State)?;
    raise_nofile_limit();
    let mut listeners = Vec::new();
    for addr in &config.listen {
        let udp_sockets = if config.udp_fast_path {
            config.udp_workers
        } else {
            1
        };
        let l = dns::bind(*addr, udp_sockets, config.udp_rcvbuf).map_err(|source| {
            StartError::Bind {
                addr: *addr,
                source,
            }
        })?;
        listeners.push(l);
    }
    for Listener { udp, tcp, rcvbuf } in &listeners {
        let udp_addr = udp.first().and_then(|u| u.local_addr().ok());
        info!(
            udp = %udp_addr.map(|a| a.to_string()).unwrap_or_default(),
            tcp = %tcp.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            udp_sockets = udp.len(),
            fast_path = config.udp_fast_path,
            "dns listening"
        );
        // Linux reports twice what it grants (the other half is overhead).
        if *rcvbuf < config.udp_rcvbuf {
            warn!(
                requested = config.udp_rcvbuf,
                granted = rcvbuf,
                "udp receive buffer capped by the kernel; raise net.core.rmem_max (or grant CAP_NET_ADMIN) for the requested size"
            );
        } else {
            info!(
                requested = config.udp_rcvbuf,
                granted = rcvbuf,
                "udp receive buffer"
            );
        }
    }
    let control_listener = tokio::net::TcpListener::bind(config.control_listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.control_listen,
            source,
        })?;
    let control_addr = control_listener
        .local_addr()
        .map_err(|e| StartError::Other(e.to_string()))?;
    info!(addr = %control_addr, "control listening");
    if config.allow_remote_control {
        warn!(addr = %control_addr, "allow_remote_control is set: the control API may listen beyond loopback, and its plain-HTTP bearer token can then be read on the network; firewall it");
    }
    let token = control::load_or_create_token(&config.control_token_file).map_err(|e| {
        StartError::Other(format!(
            "cannot read or create the control token {}: {e}",
            config.control_token_file.display()
        ))
    })?;

    for z in &zones {
        info!(origin = %z.origin, file = %z.file.display(), services = z.services.len(), "zone loaded");
    }
    let checker = Arc::new(Checker::new().map_err(StartError::Other)?);
    let shared = Arc::new(Shared {
        store: Store::new(&config.state_dir),
        config,
        zones: Mutex::new(Arc::new(zones)),
        state: Mutex::new(Arc::new(state)),
        writer: Mutex::new(()),
        health: Arc::default(),
        stats: Arc::default(),
        plan: Arc::new(ArcSwap::from_pointee(Plan::empty())),
        datapath: Arc::default(),
        health_changed: Arc::new(Notify::new()),
        window: SplitWindow::default(),
        serial: Mutex::new(0),
        checker,
        checks: Mutex::new(shutdown.child_token()),
        shutdown: shutdown.clone(),
        started: unix_now(),
    });
    shared.rebuild();

    let control_task = control::spawn(
        control_listener,
        shared.clone(),
        token,
        shared.config.control_limits,
        shutdown.clone(),
    )
    .map_err(|e| StartError::Other(format!("cannot start the control server: {e}")))?;

    // Health: first round before ready, bounded by the longest timeout.
    let zones_now = lock(&shared.zones).clone();
    let longest = health::targets(&zones_now)
        .iter()
        // The first probe waits up to interval/10 (jitter), then its timeout.
        .map(|(_, c)| c.interval / 10 + c.timeout)
        .max()
        .unwrap_or_default();
    let checks_token = lock(&shared.checks).clone();
    let first_round = health::start(
        shared.checker.clone(),
        shared.health.clone(),
        &zones_now,
        shared.health_changed.clone(),
        checks_token,
    );
    let endpoints = health::targets(&zones_now).len();
    tokio::select! {
        _ = first_round => info!(endpoints, "first health round done"),
        _ = tokio::time::sleep(longest + FIRST_ROUND_SLACK) => warn!(endpoints, "first health round timed out"),
        _ = shutdown.cancelled() => {}
    }
    shared.rebuild();
    spawn_background(shared.clone(), shutdown.clone());

    // Serve DNS only now: the sockets were bound before the health round, so
    // queries that arrived meanwhile wait in the kernel's queues and get
    // answers that already reflect health.
    let handler =
        Arc::new(Handler::new(shared.plan.clone()).with_server_id(&shared.config.server_id));
    let mut udp_workers = Vec::new();
    // UDP without the fast path runs our own loop (it never answers a
    // response either); TCP is ours in both cases.
    let mut udp_tasks = tokio::task::JoinSet::new();
    let mut tcp_tasks = Vec::new();
    let fallback = dns::fallback::Fallback::new(
        handler.clone(),
        Arc::new(dns::rrl::Rrl::new(shared.config.rrl.clone())),
        shared.datapath.clone(),
        tokio::runtime::Handle::current(),
    );
    let tcp_limits = dns::tcp::Limits {
        max_connections: shared.config.tcp_max_connections,
        idle_timeout: shared.config.tcp_idle_timeout,
    };
    for Listener { udp, tcp, .. } in listeners {
        if shared.config.udp_fast_path {
            let threads =
                dns::udp::spawn(udp, shared.plan.clone(), fallback.clone(), shutdown.clone())
                    .map_err(|e| StartError::Other(format!("cannot start udp workers: {e}")))?;
            udp_workers.extend(threads);
        } else {
            for u in udp {
                let u = u
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::UdpSocket::from_std(u))
                    .map_err(|e| StartError::Other(format!("cannot register udp socket: {e}")))?;
                let (handler, stop) = ((*handler).clone(), shutdown.clone());
                udp_tasks.spawn(async move {
                    if let Err(e) = dns::serve_udp(u, handler, stop.clone()).await {
                        error!(error = %e, "dns udp socket failed; shutting down");
                        stop.cancel();
                    }
                });
            }
        }
        tcp_tasks.push(tokio::spawn(dns::tcp::serve(
            tcp,
            handler.clone(),
            tcp_limits,
            shared.datapath.clone(),
            shutdown.clone(),
        )));
    }

    let services: usize = zones_now.iter().map(|z| z.services.len()).sum();
    info!(
        zones = zones_now.len(),
        services,
        serial = shared.plan.load().serial,
        "ready"
    );
    notify(&[sd_notify::NotifyState::Ready]);

    shutdown.cancelled().await;
    info!("shutting down");
    notify(&[sd_notify::NotifyState::Stopping]);
    for t in tcp_tasks {
        if tokio::time::timeout(SHUTDOWN_GRACE, t).await.is_err() {
            warn!("dns tcp server did not stop within the grace period");
        }
    }
    // Workers see the token within their receive timeout.
    let joined = tokio::task::spawn_blocking(move || {
        for t in udp_workers {
            let _ = t.join();
        }
    });
    if tokio::time::timeout(SHUTDOWN_GRACE, joined).await.is_err() {
        warn!("udp workers did not stop within the grace period");
    }
    let udp_done = async { while udp_tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, udp_done)
        .await
        .is_err()
    {
        warn!("dns udp loops did not stop within the grace period");
    }
    match tokio::time::timeout(SHUTDOWN_GRACE, control_task).await {
        Ok(Ok(Err(e))) => error!(error = %e, "control server stopped with an error"),
        Err(_) => warn!("control server did not stop within the grace period"),
        _ => {}
    }
    // Nothing to persist here: every command was saved (fsync, rename,
    // directory fsync) before it was acknowledged. Rewriting the file now
    // could race an operation still finishing and store an older state.
    info!("stopped");
    Ok(())
}

/// Raises the soft limit on open descriptors to the hard limit (systemd
/// starts services at 1024), so the TCP connection cap, not the descriptor
/// limit, bounds DNS TCP.
fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!(from = soft, to = hard, "raised the open file limit"),
            Err(error) => warn!(%error, soft, "cannot raise the open file limit"),
        },
        Ok(_) => {}
        // The systemd unit filters @resources and sets LimitNOFILE= itself.
        Err(error) => debug!(%error, "cannot read the open file limit"),
    }
}

/// Rebuilds on health changes, samples counters, pings the watchdog.
fn spawn_background(shared: Arc<Shared>, shutdown: CancellationToken) {
    let s = shared.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = s.health_changed.notified() => s.rebuild(),
            }
        }
    });
    let s = shared.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => s.sample(),
            }
        }
    });
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        let period = Duration::from_micros(usec) / 2;
        info!(period = ?period, "systemd watchdog enabled");
        let stop = shutdown.clone();
        let plan = shared.plan.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {
                        // Alive means the runtime schedules us and a plan is published.
                        let _ = plan.load().serial;
                        notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                }
            }
        });
    }
    let s = shared;
    // Installed here, before "ready" is announced, not inside the task: a
    // SIGHUP that arrives before the task first runs would otherwise get
    // the default action and end the process.
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        error!("cannot install the SIGHUP handler");
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hup.recv() => {
                    info!(signal = "SIGHUP", "reload requested");
                    let s2 = s.clone();
                    // Reading zone files is blocking I/O.
                    let _ = tokio::task::spawn_blocking(move || s2.reload()).await;
                }
            }
        }
    });
}

/// Sends a notification to systemd if it is listening (NOTIFY_SOCKET).
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        warn!(error = %e, "cannot notify systemd");
    }
}
