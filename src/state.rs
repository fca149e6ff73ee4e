//! Operator state: the current phase of each service, endpoint overrides,
//! decommissioned pools, and each service's last change ([`event`]). The
//! history of every change is not part of it: it is an append-only log
//! beside it ([`journal`] for the state file, per-epoch keys on etcd), so
//! that the state stays small and a command costs the same at any length
//! of history.
//!
//! Where it is kept is behind the [`StateStore`] trait ([`store`]): the
//! local state file ([`FileStore`]), or the shared store on etcd
//! ([`shared::EtcdStore`], built on [`cluster`] and [`etcd`]). Beside it, a
//! host's own DNSSEC key history ([`dnssec_keys`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::zone::{Service, Zone};

pub mod cluster;
pub mod dnssec_keys;
pub mod elect;
pub mod etcd;
pub mod event;
pub mod journal;
pub mod shared;
pub mod store;

pub use event::{Change, Event};
pub use store::{CommitError, Epoch, FileStore, Loaded, Outage, StateError, StateStore};

/// Version of the state file format. Format 1 carried the whole history
/// (`"history": [...]`); format 2 keeps it beside the state and carries
/// each service's last change instead. A format-1 file loads and is
/// migrated once ([`store::FileStore`]).
pub const STATE_VERSION: u32 = 2;
/// The format that embedded the history.
pub const STATE_VERSION_1: u32 = 1;

/// Operator state of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceState {
    /// Current phase name; absent until the first transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Unix seconds when the current phase was entered (0: unknown).
    #[serde(default)]
    pub since: u64,
    /// Endpoints taken out of the answers by hand, "pool/endpoint".
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub disabled: BTreeSet<String>,
    /// Pools never to be answered again.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub decommissioned: BTreeSet<String>,
    /// Automatic progression (issue 17); absent while it was never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoRecord>,
    /// The last change recorded for this service (`status`'s
    /// `last_change`); the history has them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<Event>,
    /// The phase the current one was entered from (the settle of
    /// automatic progression counts the TTL served there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entered_from: Option<String>,
}

/// Automatic progression of one service, as committed: every host sees
/// it, and whichever host evaluates continues from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoRecord {
    /// "running", "paused", "failed" or "done".
    pub mode: String,
    /// The phase where automation started: where a failure rolls back to.
    pub origin: String,
    /// Why it is paused, failed or done.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub why: String,
}

impl AutoRecord {
    /// Whether automation is running (advancing and rolling back by itself).
    pub fn running(&self) -> bool {
        self.mode == "running"
    }
}

/// Everything persisted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Format version.
    #[serde(default)]
    pub version: u32,
    /// By service key.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceState>,
    /// Format 1 only: the whole history, oldest first. Moved out when a
    /// format-1 file is migrated; never written.
    #[serde(default, rename = "history", skip_serializing)]
    pub legacy_history: Vec<Event>,
    /// The last change recorded, of any service: the state file is written
    /// before the history log, so a crash between the two is repaired at
    /// the next start by appending this if the log lacks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Event>,
    /// Shared state only (`[cluster]`): Unix seconds when it was first
    /// created or imported; every host serves SOA serial `serial_base +
    /// max(epoch, zone generation)` (see [`cluster`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_base: Option<u64>,
    /// A host's local copy of the shared state only: the epoch it was at, so
    /// that a host restarted while etcd is down serves (and says) that epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
}

impl State {
    /// A state with the current format version.
    pub fn new() -> State {
        State {
            version: STATE_VERSION,
            ..State::default()
        }
    }

    /// The state of a service (default if none recorded).
    pub fn service(&self, key: &str) -> ServiceState {
        self.services.get(key).cloned().unwrap_or_default()
    }

    /// Current phase index of a service: the recorded one, else the initial.
    /// Callers validate first ([`State::validate`]), so an unknown name falls
    /// back to the initial phase only for services added since.
    pub fn phase_of(&self, service: &Service) -> usize {
        self.services
            .get(&service.key())
            .and_then(|s| s.phase.as_deref())
            .and_then(|p| service.phase_index(p))
            .unwrap_or(service.initial_phase)
    }

    /// Notes `event` as the last change of its service and of the state.
    /// The event itself goes to the history log when the state is
    /// committed ([`StateStore::commit`]).
    pub fn record(&mut self, event: Event) {
        let s = self.services.entry(event.service.clone()).or_default();
        if let Change::Advance { from, .. } | Change::Rollback { from, .. } = &event.change {
            s.entered_from = Some(from.clone());
        }
        s.last_change = Some(event.clone());
        self.last = Some(event);
    }

    /// A format-1 state as format 2: each service's last change taken from
    /// the embedded history, which is returned for the history log.
    pub fn migrate(&mut self) -> Vec<Event> {
        let history = std::mem::take(&mut self.legacy_history);
        for e in &history {
            // Only services the state still has (an old event of a
            // service since removed does not bring it back).
            if self.services.contains_key(&e.service) {
                self.record(e.clone());
            } else {
                self.last = Some(e.clone());
            }
        }
        self.version = STATE_VERSION;
        history
    }

    /// Checks this state against the zones. An unknown current phase is an
    /// error: the service would silently jump back to its initial phase.
    /// Decommissioned pools and disabled endpoints that the config no longer
    /// has are warnings: removing a pool once it is decommissioned is the
    /// normal end of a migration, and those entries no longer affect answers.
    pub fn validate(&self, zones: &[Zone], origin: &str) -> Validation {
        let mut v = Validation::default();
        for (key, st) in &self.services {
            let Some(svc) = zones
                .iter()
                .flat_map(|z| &z.services)
                .find(|s| s.key() == *key)
            else {
                continue;
            };
            let at = format!("{origin}: service {key}");
            if let Some(p) = &st.phase
                && svc.phase_index(p).is_none()
            {
                v.errors.push(format!(
                    "{at}: current phase {p:?} is not in the config (phases: {})",
                    svc.phases
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            for pool in &st.decommissioned {
                if svc.pool_index(pool).is_none() {
                    v.warnings.push(format!(
                        "{at}: decommissioned pool {pool:?} is no longer in the config"
                    ));
                }
            }
            for ep in &st.disabled {
                let known = ep.split_once('/').is_some_and(|(p, e)| {
                    svc.pools
                        .iter()
                        .any(|pool| pool.name == p && pool.endpoints.iter().any(|x| x.id == e))
                });
                if !known {
                    v.warnings.push(format!(
                        "{at}: disabled endpoint {ep:?} is no longer in the config"
                    ));
                }
            }
        }
        v
    }
}

/// Result of [`State::validate`].
#[derive(Debug, Default)]
pub struct Validation {
    /// Mismatches that stop start-up and reject a reload.
    pub errors: Vec<String>,
    /// Stale entries that are reported but change nothing.
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(service: &str, change: Change) -> Event {
        Event {
            at: 1_700_000_000,
            service: service.into(),
            change,
            reason: Some("a reason an operator might give, of some length".into()),
            forced: false,
            node: Some("ns1.example.net".into()),
            actor: Some("alice".into()),
        }
    }

    /// However long the history, the state holds one change per service:
    /// 100 services, each with a transition, overrides and automation,
    /// stay below 64 KiB in the state file's own format (compact JSON).
    #[test]
    fn the_state_of_100_services_stays_under_64_kib() {
        let mut s = State::new();
        for round in 0..1_000 {
            for i in 0..100 {
                let key = format!("service-{i:03}.shift.example.com.");
                let change = if round % 2 == 0 {
                    Change::Advance {
                        from: "separate-domain".into(),
                        to: "cutover".into(),
                    }
                } else {
                    Change::Disable {
                        endpoint: format!("old/192.0.2.{}", round % 250),
                    }
                };
                let mut next = s.service(&key);
                next.phase = Some("cutover".into());
                next.since = 1_700_000_000;
                next.disabled.insert(format!("old/192.0.2.{}", i % 3));
                next.decommissioned.insert("old".into());
                next.auto = Some(AutoRecord {
                    mode: "running".into(),
                    origin: "separate-domain".into(),
                    why: String::new(),
                });
                s.services.insert(key.clone(), next);
                s.record(event(&key, change));
            }
        }
        s.serial_base = Some(1_700_000_000);
        s.epoch = Some(123_456);
        let body = serde_json::to_vec(&s).unwrap();
        assert!(body.len() < 64 * 1024, "{} bytes", body.len());
        assert_eq!(s.services.len(), 100);
        let back: State = serde_json::from_slice(&body).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn record_keeps_the_last_change_and_where_a_phase_was_entered_from() {
        let mut s = State::new();
        let adv = event(
            "s.",
            Change::Advance {
                from: "a".into(),
                to: "b".into(),
            },
        );
        s.record(adv.clone());
        let dis = event(
            "s.",
            Change::Disable {
                endpoint: "p/e".into(),
            },
        );
        s.record(dis.clone());
        let st = s.service("s.");
        assert_eq!(st.last_change, Some(dis.clone()));
        assert_eq!(st.entered_from.as_deref(), Some("a"));
        assert_eq!(s.last, Some(dis));
    }

    #[test]
    fn migrate_moves_the_embedded_history_out() {
        let mut s = State::new();
        s.version = STATE_VERSION_1;
        s.services.insert("s.".into(), ServiceState::default());
        let gone = event(
            "gone.",
            Change::Enable {
                endpoint: "p/e".into(),
            },
        );
        let adv = event(
            "s.",
            Change::Rollback {
                from: "c".into(),
                to: "b".into(),
            },
        );
        s.legacy_history = vec![adv.clone(), gone.clone()];
        let moved = s.migrate();
        assert_eq!(moved, vec![adv.clone(), gone.clone()]);
        assert!(s.legacy_history.is_empty());
        assert_eq!(s.version, STATE_VERSION);
        assert_eq!(s.service("s.").last_change, Some(adv));
        assert_eq!(s.service("s.").entered_from.as_deref(), Some("c"));
        assert!(!s.services.contains_key("gone."));
        assert_eq!(s.last, Some(gone));
    }
}
