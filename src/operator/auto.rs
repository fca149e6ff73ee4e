//! Automatic progression through the operator (issue 17): `auto
//! start|pause|resume`, the evaluator's steps ([`Steer`]), which go through
//! the same `apply()` path as a person's command with actor `auto`, and
//! the `auto` block of `status`.

use super::*;
use crate::analysis::machine::Machine;
use crate::analysis::runner::{self, Steer, Step};
use crate::api::{AutoAction, AutoError, AutoStatus, CheckStatus};
use crate::state::AutoRecord;

/// The actor of every automatic change in history.
pub const AUTO_ACTOR: &str = "auto";

/// Why an automatic step was not taken (in words, for the log and status).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StepRefused(String);

impl From<NotFound> for StepRefused {
    fn from(e: NotFound) -> Self {
        StepRefused(e.to_string())
    }
}
impl From<ReasonTooLong> for StepRefused {
    fn from(e: ReasonTooLong) -> Self {
        StepRefused(e.to_string())
    }
}
impl From<BadActor> for StepRefused {
    fn from(e: BadActor) -> Self {
        StepRefused(e.to_string())
    }
}
impl From<NotSaved> for StepRefused {
    fn from(e: NotSaved) -> Self {
        StepRefused(e.to_string())
    }
}

/// `text` cut to at most [`MAX_REASON`] bytes, on a character boundary.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_REASON {
        return text.to_string();
    }
    let mut end = MAX_REASON - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

impl Operator {
    /// `auto start|pause|resume`.
    pub fn auto(
        &self,
        service: &str,
        action: AutoAction,
        req: ReasonRequest,
    ) -> Result<OkResponse, AutoError> {
        let who = req.actor.clone().unwrap_or_else(|| "a person".into());
        self.apply(service, (&req.reason, &req.actor), |ctx| {
            let svc = ctx.service;
            let key = &ctx.key;
            if svc.analysis.is_none() {
                return Err(AutoError::NoAnalysis {
                    service: key.clone(),
                });
            }
            let phase = &svc.phases[ctx.state.phase_of(svc)].name;
            let rec = ctx.current.auto.clone();
            let (mode, origin, why) = match (action, &rec) {
                (AutoAction::Start, Some(r)) if r.running() => {
                    return Ok(Decision::Unchanged(OkResponse::said(format!(
                        "automation of {key} already runs (from phase {:?})",
                        r.origin
                    ))));
                }
                (AutoAction::Start, _) => ("running", phase.clone(), String::new()),
                (AutoAction::Pause, Some(r)) if r.running() => (
                    "paused",
                    r.origin.clone(),
                    req.reason.clone().unwrap_or_else(|| format!("paused by {who}")),
                ),
                (AutoAction::Pause, _) => {
                    return Ok(Decision::Unchanged(OkResponse::said(format!(
                        "automation of {key} is not running ({})",
                        rec.as_ref().map_or("off", |r| r.mode.as_str())
                    ))));
                }
                (AutoAction::Resume, None) => {
                    return Err(AutoError::NotStarted {
                        service: key.clone(),
                        short: svc.short.clone(),
                    });
                }
                (AutoAction::Resume, Some(r)) if r.running() => {
                    return Ok(Decision::Unchanged(OkResponse::said(format!(
                        "automation of {key} already runs"
                    ))));
                }
                (AutoAction::Resume, Some(r)) => ("running", r.origin.clone(), String::new()),
            };
            let mut next = ctx.current.clone();
            next.auto = Some(runner::record(mode, &origin, &why));
            // The phase's time counts from now if it was never recorded.
            if next.since == 0 {
                next.since = ctx.now_ms / 1000;
            }
            let message = match action {
                AutoAction::Start => format!(
                    "automation of {key} started in phase {phase:?}; a failure rolls back to it"
                ),
                AutoAction::Pause => format!("automation of {key} paused; the weights stay"),
                AutoAction::Resume => {
                    format!("automation of {key} resumed in phase {phase:?} (rollback target {origin:?})")
                }
            };
            Ok(Decision::Change {
                next,
                change: Change::Auto { mode: mode.into() },
                forced: false,
                detail: why,
                response: OkResponse::said(message),
            })
        })
    }

    /// Carries out an automatic step; see [`Steer::auto_step`].
    fn auto_apply(&self, service: &str, from: &str, step: &Step) -> Result<String, StepRefused> {
        let reason = Some(bounded(step.reason()));
        let actor = Some(AUTO_ACTOR.to_string());
        let fence = match (&self.elector, self.shared) {
            (_, false) => None,
            (Some(e), true) => Some(e.fence(service).ok_or_else(|| {
                StepRefused("this host no longer holds the service's evaluator lease".into())
            })?),
            (None, true) => {
                return Err(StepRefused("no evaluator election on this host".into()));
            }
        };
        let r = self.apply_fenced(service, (&reason, &actor), fence.as_ref(), |ctx| {
            let svc = ctx.service;
            let Some(rec) = ctx.current.auto.clone().filter(AutoRecord::running) else {
                return Err(StepRefused("automation no longer runs".into()));
            };
            let current = ctx.state.phase_of(svc);
            if svc.phases[current].name != from {
                return Err(StepRefused(format!(
                    "the service left phase {from:?} meanwhile (now {:?})",
                    svc.phases[current].name
                )));
            }
            let mut next = ctx.current.clone();
            let now = ctx.now_ms / 1000;
            let mode = |m: &str, why: &str| Some(runner::record(m, &rec.origin, why));
            let view = Pools {
                service: svc,
                live: Live {
                    state: ctx.state,
                    health: ctx.health,
                },
            };
            let (change, message) = match step {
                Step::Advance { .. } => {
                    let target = phase::transition(
                        &svc.phases,
                        current,
                        phase::Request {
                            direction: Direction::Advance,
                            to: None,
                            force: false,
                        },
                        self.phase_since(ctx.current.since),
                        now,
                        &view,
                    )
                    .map_err(|e| StepRefused(e.to_string()))?;
                    let to = svc.phases[target].name.clone();
                    next.phase = Some(to.clone());
                    next.since = now;
                    if target + 1 == svc.phases.len() {
                        next.auto = mode("done", &format!("reached the last phase {to:?}"));
                    }
                    (
                        Change::Advance {
                            from: from.to_string(),
                            to: to.clone(),
                        },
                        format!("advanced by itself to {to:?}"),
                    )
                }
                Step::Rollback { reason } => {
                    let target = svc.phase_index(&rec.origin).unwrap_or(svc.initial_phase);
                    next.auto = mode("failed", reason);
                    if target == current {
                        (
                            Change::Auto {
                                mode: "failed".into(),
                            },
                            format!("failed in the phase it started from, {from:?}"),
                        )
                    } else {
                        phase::transition(
                            &svc.phases,
                            current,
                            phase::Request {
                                direction: if target < current {
                                    Direction::Rollback
                                } else {
                                    Direction::Advance
                                },
                                to: Some(&rec.origin),
                                force: true,
                            },
                            self.phase_since(ctx.current.since),
                            now,
                            &view,
                        )
                        .map_err(|e| StepRefused(e.to_string()))?;
                        next.phase = Some(rec.origin.clone());
                        next.since = now;
                        (
                            Change::Rollback {
                                from: from.to_string(),
                                to: rec.origin.clone(),
                            },
                            format!(
                                "rolled back by itself to {:?}; automation failed",
                                rec.origin
                            ),
                        )
                    }
                }
                Step::Pause { why } => {
                    next.auto = mode("paused", why);
                    (
                        Change::Auto {
                            mode: "paused".into(),
                        },
                        "automation paused; the weights stay".to_string(),
                    )
                }
                Step::Done => {
                    next.auto = mode("done", "the last phase is reached");
                    (
                        Change::Auto {
                            mode: "done".into(),
                        },
                        "automation done".to_string(),
                    )
                }
            };
            Ok(Decision::Change {
                next,
                change,
                forced: false,
                detail: String::new(),
                response: OkResponse::said(message),
            })
        })?;
        Ok(r.message)
    }

    /// The `auto` block of a service's status.
    pub(super) fn auto_status(&self, s: &Service, state: &State, now_ms: u64) -> AutoStatus {
        let key = s.key();
        let st = state.service(&key);
        let Some(rec) = &st.auto else {
            return AutoStatus::default();
        };
        let phase = state.phase_of(s);
        let since_ms = self.phase_since(st.since) * 1000;
        let entry = self.board.get(&key).unwrap_or_default();
        let auto = s.auto.get(phase).copied().flatten();
        let first = match &s.analysis {
            Some(a) => since_ms + (runner::settle(s, state, a) + a.interval).as_millis() as u64,
            None => since_ms,
        };
        let m: &Machine = &entry.machine;
        let current = m.phase == s.phases[phase].name;
        let counters = if current {
            m.counters
        } else {
            Default::default()
        };
        let mut out = AutoStatus {
            state: rec.mode.clone(),
            why: rec.why.clone(),
            origin: Some(rec.origin.clone()),
            in_phase_s: now_ms.saturating_sub(since_ms) / 1000,
            settle_left_s: first.saturating_sub(now_ms).div_ceil(1000),
            next_eval_s: m
                .next_eval_ms
                .max(first)
                .saturating_sub(now_ms)
                .div_ceil(1000),
            passes: counters.passes,
            failures: counters.failures,
            errors: counters.errors,
            inconclusive: counters.inconclusive,
            passes_needed: auto.map(|a| a.passes),
            min_time_s: auto.map(|a| a.after.as_secs()),
            evaluator: None,
            checks: m.last.iter().map(CheckStatus::from).collect(),
        };
        if rec.running() {
            if let Some(h) = m.holding.as_ref().filter(|_| current) {
                out.state = "holding".into();
                out.why = h.clone();
            } else if !entry.why.is_empty() && current {
                out.why = entry.why.clone();
            }
            if self.shared {
                out.evaluator = self.evaluator(&key);
                if let Some(o) = self.store.outage() {
                    out.state = "holding".into();
                    out.why = format!(
                        "etcd unreachable since {}: no host evaluates, nothing is committed; DNS answers on",
                        crate::clock::format_ms(o.since_ms)
                    );
                }
            }
        }
        out
    }

    /// The host that evaluates `service` in a cluster, as the election
    /// was last read; none while etcd is unreachable.
    fn evaluator(&self, service: &str) -> Option<String> {
        if self.store.outage().is_some() {
            return None;
        }
        self.elector.as_ref()?.holder(service)
    }
}

impl Steer for Operator {
    fn zones(&self) -> Arc<Vec<Zone>> {
        Operator::zones(self)
    }
    fn state(&self) -> Arc<State> {
        Operator::state(self)
    }
    fn phase_since(&self, since: u64) -> u64 {
        Operator::phase_since(self, since)
    }
    fn evaluates(&self, service: &str) -> bool {
        !self.shared
            || self
                .elector
                .as_ref()
                .is_some_and(|e| e.fence(service).is_some())
    }
    fn elector(&self) -> Option<Arc<crate::state::elect::Elector>> {
        self.elector.clone()
    }
    fn auto_step(&self, service: &str, from: &str, step: &Step) -> Result<String, String> {
        self.auto_apply(service, from, step).map_err(|e| e.0)
    }
    fn node(&self) -> String {
        self.node.clone()
    }
}

/// A person's `advance` or `rollback` while automation runs pauses it
/// (`next` is the service's state after the transition); says so. An
/// advance out of a manual gate (a phase without `auto`) is the person's
/// part of the run and leaves it running.
pub(super) fn pause_for_manual(
    svc: &Service,
    current: usize,
    direction: Direction,
    actor: &Option<String>,
    next: &mut ServiceState,
) -> Option<String> {
    let rec = next.auto.as_mut().filter(|r| r.running())?;
    let gate = svc.auto.get(current).copied().flatten().is_none();
    if direction == Direction::Advance && gate {
        return None;
    }
    let verb = match direction {
        Direction::Advance => "advance",
        Direction::Rollback => "rollback",
    };
    rec.mode = "paused".into();
    rec.why = format!(
        "manual {verb} by {}",
        actor.as_deref().unwrap_or("an operator")
    );
    Some(format!(
        "automation of {} paused by this manual {verb}: `dnsshift auto resume {}` continues it from here",
        svc.key(),
        svc.short
    ))
}

impl Operator {
    /// The service `analysis SERVICE` evaluates, and its current phase.
    pub fn analysis_target(&self, service: &str) -> Result<(Service, usize), AutoError> {
        let zones = self.zones();
        let svc = find_service(&zones, service)?;
        if svc.analysis.is_none() {
            return Err(AutoError::NoAnalysis { service: svc.key() });
        }
        let phase = self.state().phase_of(svc);
        Ok((svc.clone(), phase))
    }
}
