//! Operator state: the current phase of each service, endpoint overrides,
//! decommissioned pools, and the history of every change ([`event`]).
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
pub mod shared;
pub mod store;

pub use event::{Change, Event};
pub use store::{CommitError, Epoch, FileStore, Loaded, Outage, StateError, StateStore};

/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;
/// History events kept; older ones are dropped first.
pub const MAX_HISTORY: usize = 10_000;

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
    /// Oldest first.
    #[serde(default)]
    pub history: Vec<Event>,
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

    /// Appends an event, dropping the oldest beyond [`MAX_HISTORY`].
    pub fn record(&mut self, event: Event) {
        self.history.push(event);
        if self.history.len() > MAX_HISTORY {
            let excess = self.history.len() - MAX_HISTORY;
            self.history.drain(..excess);
        }
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

    #[test]
    fn history_is_bounded() {
        let mut s = State::new();
        for i in 0..(MAX_HISTORY + 5) {
            s.record(Event {
                at: i as u64,
                service: "s".into(),
                change: Change::Enable {
                    endpoint: "p/e".into(),
                },
                reason: None,
                forced: false,
                node: None,
                actor: None,
            });
        }
        assert_eq!(s.history.len(), MAX_HISTORY);
        assert_eq!(s.history[0].at, 5);
    }
}
