//! The [`StateStore`] trait (load; commit a change atomically and durably
//! or refuse it; be told of changes made elsewhere) and its first
//! implementation, the local state file ([`FileStore`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{STATE_VERSION, State};
use crate::config::source::read_regular;
use crate::sync::lock;

/// File name inside the state directory.
pub const STATE_FILE: &str = "state.json";

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
    /// The shared store (etcd) failed; the message names etcd and its
    /// endpoints.
    #[error("{0}")]
    Etcd(String),
}

/// A version of the state, as a store counts them: a commit names the
/// version it was made from, and the store refuses it if that is no longer
/// current (etcd: the state key's revision; the file: commits since load).
pub type Epoch = i64;

/// State as loaded, with the epoch it is at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The state.
    pub state: State,
    /// Its epoch, to name in the next commit.
    pub epoch: Epoch,
}

/// A shared store that cannot be reached: the state served is the last one
/// applied, hosts' liveness is unknown and commands fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    /// When it was first found unreachable (Unix ms).
    pub since_ms: u64,
    /// The latest failure, naming the store and its endpoints.
    pub error: String,
}

/// Why a commit was refused. Either way nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Someone else committed since `expected` (a shared store): reload
    /// and try again.
    #[error("state changed meanwhile (epoch {found}), nothing done; check status and retry")]
    Conflict {
        /// The epoch the change was made from.
        expected: Epoch,
        /// The epoch the store is at.
        found: Epoch,
    },
    /// The store could not be written.
    #[error(transparent)]
    Store(#[from] StateError),
}

/// Where operator state is kept. Commands run on blocking threads and
/// call it synchronously.
pub trait StateStore: Send + Sync {
    /// Where it is, for messages ("/var/lib/dnsshift/state.json").
    fn origin(&self) -> String;
    /// Loads the state; nothing stored yet is the empty state.
    fn load(&self) -> Result<Loaded, StateError>;
    /// Stores `next` atomically and durably if the store is still at
    /// `expected`, and returns the new epoch; otherwise refuses.
    fn commit(&self, expected: Epoch, next: &State) -> Result<Epoch, CommitError>;
    /// [`StateStore::commit`] fenced by an election key and lease (a shared
    /// store): refused once the lease is lost. The local file has no
    /// election: a plain commit.
    fn commit_fenced(
        &self,
        expected: Epoch,
        next: &State,
        fence: Option<&(String, i64)>,
    ) -> Result<Epoch, CommitError> {
        let _ = fence;
        self.commit(expected, next)
    }
    /// Fires with the new epoch when the state was changed elsewhere (by
    /// another nameserver); then [`StateStore::load`] it.
    fn changes(&self) -> tokio::sync::watch::Receiver<Epoch>;
    /// Every host sharing this store, as last reported (a shared store);
    /// nothing for the local file.
    fn hosts(&self) -> Vec<super::cluster::HostView> {
        Vec::new()
    }
    /// The generation of the zones with `digest` as the shared store last
    /// told (see [`super::cluster`]); `None` if unknown or not shared.
    fn zone_generation(&self, _digest: &str) -> Option<Epoch> {
        None
    }
    /// Starts a new generation of the zones with `digest`, at least
    /// `floor`, and returns it (a shared store; the local file keeps none).
    fn register_zones(&self, _digest: &str, _floor: Epoch) -> Result<Epoch, StateError> {
        Ok(0)
    }
    /// The state served is the local copy: the shared store was
    /// unreachable when this host started and has not been read since.
    fn serving_local_copy(&self) -> bool {
        false
    }
    /// The shared store cannot be reached now; `None` for the local file.
    fn outage(&self) -> Option<Outage> {
        None
    }
}

/// Reads a state file (the format of `state.json`); a missing file is a
/// fresh start.
pub fn read_file(path: &Path) -> Result<State, StateError> {
    let path = path.to_path_buf();
    let text = match read_regular(&path) {
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

impl<T: StateStore + ?Sized> StateStore for std::sync::Arc<T> {
    fn origin(&self) -> String {
        (**self).origin()
    }
    fn load(&self) -> Result<Loaded, StateError> {
        (**self).load()
    }
    fn commit(&self, expected: Epoch, next: &State) -> Result<Epoch, CommitError> {
        (**self).commit(expected, next)
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<Epoch> {
        (**self).changes()
    }
    fn hosts(&self) -> Vec<super::cluster::HostView> {
        (**self).hosts()
    }
    fn serving_local_copy(&self) -> bool {
        (**self).serving_local_copy()
    }
    fn zone_generation(&self, digest: &str) -> Option<Epoch> {
        (**self).zone_generation(digest)
    }
    fn register_zones(&self, digest: &str, floor: Epoch) -> Result<Epoch, StateError> {
        (**self).register_zones(digest, floor)
    }
    fn outage(&self) -> Option<Outage> {
        (**self).outage()
    }
}

/// The local state file, `state.json` in the state directory, rewritten
/// atomically for every acknowledged command: write a temp file, fsync it,
/// rename it over the old one, fsync the directory. A crash at any moment
/// leaves either the old or the new file, never a torn one. A file that
/// cannot be read or parsed is an error naming it; it is never silently
/// reset. This process is its only writer: its epoch counts the commits
/// since start, and [`StateStore::changes`] never fires.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    epoch: Mutex<Epoch>,
    changed: tokio::sync::watch::Sender<Epoch>,
}

impl FileStore {
    /// The store in `dir` (created on first save).
    pub fn new(dir: &Path) -> FileStore {
        FileStore {
            dir: dir.to_path_buf(),
            epoch: Mutex::new(0),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Path of the state file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Reads the file; a missing file is a fresh start.
    pub fn read(&self) -> Result<State, StateError> {
        read_file(&self.path())
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

impl StateStore for FileStore {
    fn origin(&self) -> String {
        self.path().display().to_string()
    }

    fn load(&self) -> Result<Loaded, StateError> {
        let state = self.read()?;
        Ok(Loaded {
            state,
            epoch: *lock(&self.epoch),
        })
    }

    fn commit(&self, expected: Epoch, next: &State) -> Result<Epoch, CommitError> {
        let mut epoch = lock(&self.epoch);
        if *epoch != expected {
            return Err(CommitError::Conflict {
                expected,
                found: *epoch,
            });
        }
        self.save(next)?;
        *epoch += 1;
        Ok(*epoch)
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<Epoch> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::state::{Change, Event, ServiceState};

    #[test]
    fn commit_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(&dir.path().join("nested"));
        let loaded = store.load().unwrap();
        assert_eq!(loaded.state, State::default());
        let mut s = State::new();
        s.services.insert(
            "www.z.test.".into(),
            ServiceState {
                phase: Some("cutover".into()),
                since: 5,
                disabled: ["old/192.0.2.1".to_string()].into(),
                decommissioned: BTreeSet::new(),
                auto: None,
            },
        );
        s.record(Event {
            at: 5,
            service: "www.z.test.".into(),
            change: Change::Advance {
                from: "a".into(),
                to: "cutover".into(),
            },
            reason: None,
            forced: true,
            node: Some("ns1".into()),
            actor: Some("alice".into()),
        });
        let epoch = store.commit(loaded.epoch, &s).unwrap();
        assert_eq!(
            store.load().unwrap(),
            Loaded {
                state: s.clone(),
                epoch
            }
        );
        assert!(!dir.path().join("nested/state.json.tmp").exists());
        // A commit made from an epoch that is no longer current is refused
        // and changes nothing.
        let e = store.commit(loaded.epoch, &State::new()).unwrap_err();
        assert!(matches!(e, CommitError::Conflict { .. }), "{e}");
        assert_eq!(store.load().unwrap().state, s);
    }

    #[test]
    fn corrupt_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
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
    /// 2e49fc6, format 1) loads as it is, fits the zone it was written
    /// against, and is written back in the same shape.
    #[test]
    fn state_file_of_format_1_loads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let dst = tempfile::tempdir().unwrap();
        std::fs::copy(dir.join("state-v1.json"), dst.path().join(STATE_FILE)).unwrap();
        let store = FileStore::new(dst.path());
        let state = store.load().unwrap().state;
        assert_eq!(state.history.len(), 12);
        let svc = &state.services["www.shift.example.com."];
        assert_eq!(svc.phase.as_deref(), Some("cutover"));
        assert!(svc.decommissioned.contains("old"));
        let actions: Vec<(&str, Option<&str>, &str)> = state
            .history
            .iter()
            .map(|e| (e.change.action(), e.change.from(), e.change.to()))
            .collect();
        assert_eq!(actions[0], ("advance", Some("separate-domain"), "half"));
        assert_eq!(actions[2], ("disable", None, "new/127.0.0.20"));
        assert_eq!(actions[6], ("rollback", Some("cutover"), "half"));
        assert_eq!(actions[8], ("decommission", None, "old"));
        assert_eq!(actions[9], ("recommission", None, "old"));
        assert_eq!(state.history[2].reason.as_deref(), Some("maintenance"));
        assert!(state.history[3].forced);
        let zone = crate::zone::load_file(&dir.join("state-v1-zone.toml")).unwrap();
        let v = state.validate(&[zone], &store.origin());
        assert!(v.errors.is_empty() && v.warnings.is_empty(), "{v:?}");
        // Written back, every field format 1 had is still there.
        store.commit(0, &state).unwrap();
        let old: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("state-v1.json")).unwrap())
                .unwrap();
        let new: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(store.path()).unwrap()).unwrap();
        assert_eq!(new["services"], old["services"]);
        for (a, b) in new["history"]
            .as_array()
            .unwrap()
            .iter()
            .zip(old["history"].as_array().unwrap())
        {
            for k in ["at", "service", "action", "from", "to", "reason", "forced"] {
                assert_eq!(a.get(k).unwrap_or(&serde_json::Value::Null), &b[k], "{k}");
            }
        }
    }
}
