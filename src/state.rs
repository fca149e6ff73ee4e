//! Persisted operator state: the current phase of each service, endpoint
//! overrides, decommissioned pools, and the history of every change.
//!
//! One JSON file, `state.json` in the state directory, rewritten atomically
//! for every acknowledged command: write a temp file, fsync it, rename it
//! over the old one, fsync the directory. A crash at any moment leaves either
//! the old or the new file, never a torn one. A file that cannot be read or
//! parsed is an error naming it; it is never silently reset.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::zone::{Service, Zone};

pub mod cluster;
pub mod etcd;

/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;
/// History events kept; older ones are dropped first.
pub const MAX_HISTORY: usize = 10_000;
/// File name inside the state directory.
pub const STATE_FILE: &str = "state.json";

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
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix seconds.
    pub at: u64,
    /// Service key.
    pub service: String,
    /// "advance", "rollback", "disable", "enable", "decommission", "recommission".
    pub action: String,
    /// Phase before (transitions), or the object acted on.
    #[serde(default)]
    pub from: Option<String>,
    /// Phase after (transitions), or the object acted on.
    #[serde(default)]
    pub to: Option<String>,
    /// Operator's reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// Whether `--force` was used.
    #[serde(default)]
    pub forced: bool,
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
}

/// Why state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading failed.
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The content is not valid state.
    #[error(
        "state file {path} is corrupt: {message} (it is left untouched; restore it from a backup or move it away to start from the configured phases)"
    )]
    Corrupt { path: PathBuf, message: String },
    /// Writing failed; the command was not applied.
    #[error("cannot write state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where state lives.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir` (created on first save).
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    /// Path of the state file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Loads state; a missing file is a fresh start.
    pub fn load(&self) -> Result<State, StateError> {
        let path = self.path();
        let text = match crate::config::source::read_regular(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let state: State = serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if state.version != STATE_VERSION {
            return Err(StateError::Corrupt {
                path,
                message: format!(
                    "version {} is not the supported version {STATE_VERSION}",
                    state.version
                ),
            });
        }
        Ok(state)
    }

    /// Writes state atomically and durably.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let path = self.path();
        let err = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let mut body = serde_json::to_vec_pretty(state)
            .map_err(|e| err(std::io::Error::other(e.to_string())))?;
        body.push(b'\n');
        {
            // A leftover from a crash is ours to replace; whatever it is (even
            // a FIFO, which a plain create would block on), it goes first.
            match std::fs::remove_file(&tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
                _ => {}
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(err)?;
            f.write_all(&body).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &path).map_err(err)?;
        // The new file is in place; if the directory cannot be synced the
        // rename may not survive a power loss, but it has happened: report
        // success (the caller publishes it) and say so in the log.
        if let Err(e) = std::fs::File::open(&self.dir).and_then(|d| d.sync_all()) {
            tracing::warn!(path = %path.display(), error = %e, "cannot fsync the state directory");
        }
        Ok(())
    }
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
    pub fn validate(&self, zones: &[Zone], file: &Path) -> Validation {
        let mut v = Validation::default();
        for (key, st) in &self.services {
            let Some(svc) = zones
                .iter()
                .flat_map(|z| &z.services)
                .find(|s| s.key() == *key)
            else {
                continue;
            };
            let at = format!("{}: service {key}", file.display());
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
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(&dir.path().join("nested"));
        assert_eq!(store.load().unwrap(), State::default());
        let mut s = State::new();
        s.services.insert(
            "www.z.test.".into(),
            ServiceState {
                phase: Some("cutover".into()),
                since: 5,
                disabled: ["old/192.0.2.1".to_string()].into(),
                decommissioned: BTreeSet::new(),
            },
        );
        s.record(Event {
            at: 5,
            service: "www.z.test.".into(),
            action: "advance".into(),
            from: Some("a".into()),
            to: Some("cutover".into()),
            reason: None,
            forced: true,
        });
        store.save(&s).unwrap();
        assert_eq!(store.load().unwrap(), s);
        assert!(!dir.path().join("nested/state.json.tmp").exists());
    }

    #[test]
    fn corrupt_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        for text in [
            "{not json",
            "{\"version\": 99}",
            "{\"version\": 1, \"x\": 1}",
            "",
        ] {
            std::fs::write(store.path(), text).unwrap();
            let e = store.load().unwrap_err().to_string();
            assert!(e.contains("state.json is corrupt"), "{e}");
            // Never rewritten by a failed load.
            assert_eq!(std::fs::read_to_string(store.path()).unwrap(), text);
        }
    }

    /// A state file written by the release before typed events (commit
    /// 2e49fc6, format 1) loads, and fits the zone it was written against.
    #[test]
    fn state_file_of_format_1_loads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let dst = tempfile::tempdir().unwrap();
        std::fs::copy(dir.join("state-v1.json"), dst.path().join(STATE_FILE)).unwrap();
        let state = Store::new(dst.path()).load().unwrap();
        assert_eq!(state.history.len(), 12);
        let svc = &state.services["www.shift.example.com."];
        assert_eq!(svc.phase.as_deref(), Some("cutover"));
        assert!(svc.decommissioned.contains("old"));
        let zone = crate::zone::load_file(&dir.join("state-v1-zone.toml")).unwrap();
        let v = state.validate(&[zone], &dst.path().join(STATE_FILE));
        assert!(v.errors.is_empty() && v.warnings.is_empty(), "{v:?}");
    }

    #[test]
    fn history_is_bounded() {
        let mut s = State::new();
        for i in 0..(MAX_HISTORY + 5) {
            s.record(Event {
                at: i as u64,
                service: "s".into(),
                action: "enable".into(),
                from: None,
                to: None,
                reason: None,
                forced: false,
            });
        }
        assert_eq!(s.history.len(), MAX_HISTORY);
        assert_eq!(s.history[0].at, 5);
    }
}
