//! The [`StateStore`] trait (load; commit a change atomically and durably
//! or refuse it; be told of changes made elsewhere; read the history) and
//! its first implementation, the local state file ([`FileStore`]) with its
//! history log ([`super::journal`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::{info, warn};

use super::journal::{Journal, Query};
use super::{Event, STATE_VERSION, STATE_VERSION_1, State};
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
    /// The history log could not be read.
    #[error("cannot read the history {path}: {source}")]
    History {
        path: PathBuf,
        source: std::io::Error,
    },
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
    /// `expected`, and records `event` (the change that made it) in the
    /// history; returns the new epoch, or refuses.
    fn commit(&self, expected: Epoch, next: &State, event: &Event) -> Result<Epoch, CommitError>;
    /// [`StateStore::commit`] fenced by an election key and lease (a shared
    /// store): refused once the lease is lost. The local file has no
    /// election: a plain commit.
    fn commit_fenced(
        &self,
        expected: Epoch,
        next: &State,
        event: &Event,
        fence: Option<&(String, i64)>,
    ) -> Result<Epoch, CommitError> {
        let _ = fence;
        self.commit(expected, next, event)
    }
    /// The history `query` asks for, oldest first. Commands never read it.
    fn history(&self, query: &Query) -> Result<Vec<Event>, StateError>;
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

/// Reads a state file (the format of `state.json`, 2 or the format 1 with
/// its history embedded); a missing file is a fresh start.
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
    if state.version != STATE_VERSION && state.version != STATE_VERSION_1 {
        return Err(StateError::Corrupt {
            path,
            message: format!(
                "version {} is not a supported version ({STATE_VERSION_1} or {STATE_VERSION})",
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
    fn commit(&self, expected: Epoch, next: &State, event: &Event) -> Result<Epoch, CommitError> {
        (**self).commit(expected, next, event)
    }
    fn commit_fenced(
        &self,
        expected: Epoch,
        next: &State,
        event: &Event,
        fence: Option<&(String, i64)>,
    ) -> Result<Epoch, CommitError> {
        (**self).commit_fenced(expected, next, event, fence)
    }
    fn history(&self, query: &Query) -> Result<Vec<Event>, StateError> {
        (**self).history(query)
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
///
/// The state holds no history, so it stays a few KiB whatever the length
/// of the history. Each change is appended to the history log
/// (`history.jsonl`, [`Journal`]) right after the state is written; the
/// state carries that change too (`last`), and the first load appends it
/// if a crash came between the two. A format-1 file, with its history
/// embedded, is migrated in place by the first load: the history goes to
/// the log, then the state is written as format 2.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    journal: Journal,
    epoch: Mutex<Epoch>,
    /// Whether the first load (migration, log repair) happened.
    opened: Mutex<bool>,
    /// Changes whose append to the log failed (the state was written): the
    /// next commit appends them first.
    unlogged: Mutex<Vec<Event>>,
    changed: tokio::sync::watch::Sender<Epoch>,
}

impl FileStore {
    /// The store in `dir` (created on first save).
    pub fn new(dir: &Path) -> FileStore {
        FileStore {
            dir: dir.to_path_buf(),
            journal: Journal::new(dir),
            epoch: Mutex::new(0),
            opened: Mutex::new(false),
            unlogged: Mutex::new(Vec::new()),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The history log beside the state file.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The first load: migrates a format-1 file (its history to the log,
    /// the state rewritten as format 2), cuts a torn last line off the
    /// log, and appends the state's last change if the log lacks it.
    fn open(&self, state: &mut State) -> Result<(), StateError> {
        let path = self.path();
        if state.version == STATE_VERSION_1 {
            let history = state.migrate();
            self.journal
                .replace(&history)
                .map_err(|source| StateError::Write {
                    path: self.journal.path(),
                    source,
                })?;
            self.save(state)?;
            info!(
                path = %path.display(),
                events = history.len(),
                history = %self.journal.path().display(),
                "migrated the state file from format {STATE_VERSION_1} to {STATE_VERSION}: its history moved to the history log"
            );
            return Ok(());
        }
        if let Err(e) = self.journal.repair() {
            warn!(path = %self.journal.path().display(), error = %e, "cannot repair the history log");
        }
        if let Some(last) = &state.last
            && self.journal.last().as_ref() != Some(last)
        {
            warn!(
                path = %self.journal.path().display(),
                service = %last.service,
                action = last.change.action(),
                "the last change is missing from the history log (a crash after the state was written); appending it"
            );
            self.journal
                .append(std::slice::from_ref(last))
                .map_err(|source| StateError::Write {
                    path: self.journal.path(),
                    source,
                })?;
        }
        Ok(())
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
        // Compact: 100 services stay well under 64 KiB.
        let mut body =
            serde_json::to_vec(state).map_err(|e| err(std::io::Error::other(e.to_string())))?;
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
        let mut state = self.read()?;
        let mut opened = lock(&self.opened);
        if !*opened {
            self.open(&mut state)?;
            *opened = true;
        }
        Ok(Loaded {
            state,
            epoch: *lock(&self.epoch),
        })
    }

    fn commit(&self, expected: Epoch, next: &State, event: &Event) -> Result<Epoch, CommitError> {
        let mut epoch = lock(&self.epoch);
        if *epoch != expected {
            return Err(CommitError::Conflict {
                expected,
                found: *epoch,
            });
        }
        self.save(next)?;
        *epoch += 1;
        // The change is applied: a log that cannot be written does not
        // undo it. It is kept and appended with the next change (and the
        // state's `last` repairs the log at the next start).
        let mut unlogged = lock(&self.unlogged);
        unlogged.push(event.clone());
        match self.journal.append(&unlogged) {
            Ok(()) => unlogged.clear(),
            Err(e) => warn!(
                path = %self.journal.path().display(),
                error = %e,
                pending = unlogged.len(),
                "cannot append to the history log; the change is applied and will be logged with the next one"
            ),
        }
        Ok(*epoch)
    }

    fn history(&self, query: &Query) -> Result<Vec<Event>, StateError> {
        let mut events = self
            .journal
            .read(query)
            .map_err(|source| StateError::History {
                path: self.journal.path(),
                source,
            })?;
        events.extend(
            lock(&self.unlogged)
                .iter()
                .filter(|e| query.service.as_ref().is_none_or(|s| e.service == *s))
                .cloned(),
        );
        Ok(events)
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
                last_change: None,
                entered_from: None,
            },
        );
        let event = Event {
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
        };
        s.record(event.clone());
        let epoch = store.commit(loaded.epoch, &s, &event).unwrap();
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
        let e = store
            .commit(loaded.epoch, &State::new(), &event)
            .unwrap_err();
        assert!(matches!(e, CommitError::Conflict { .. }), "{e}");
        assert_eq!(store.load().unwrap().state, s);
        // The change is in the history log, not in the state file.
        assert_eq!(store.history(&Query::default()).unwrap(), vec![event]);
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(!text.contains("\"history\""), "{text}");
    }

    /// A crash after the state was written and before the change reached
    /// the log: the next start appends it, once.
    #[test]
    fn a_change_missing_from_the_log_is_appended_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let loaded = store.load().unwrap();
        let event = |to: &str| Event {
            at: 5,
            service: "s.".into(),
            change: Change::Disable {
                endpoint: to.into(),
            },
            reason: None,
            forced: false,
            node: None,
            actor: None,
        };
        let mut s = State::new();
        s.record(event("p/1"));
        store.commit(loaded.epoch, &s, &event("p/1")).unwrap();
        s.record(event("p/2"));
        // The state is written; the log append never happened.
        store.save(&s).unwrap();
        for _ in 0..2 {
            let again = FileStore::new(dir.path());
            again.load().unwrap();
            assert_eq!(
                again.history(&Query::default()).unwrap(),
                vec![event("p/1"), event("p/2")]
            );
        }
    }

    #[test]
    fn corrupt_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        for text in [
            "{not json",
            "{\"version\": 99}",
            "{\"version\": 3}",
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
    /// 2e49fc6, format 1, history embedded) loads, fits the zone it was
    /// written against, and is migrated once: its history moves to the
    /// log, the state is written back as format 2 with every field format
    /// 1 had, and a second load migrates nothing.
    #[test]
    fn state_file_of_format_1_is_migrated_once() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let dst = tempfile::tempdir().unwrap();
        std::fs::copy(dir.join("state-v1.json"), dst.path().join(STATE_FILE)).unwrap();
        let store = FileStore::new(dst.path());
        let state = store.load().unwrap().state;
        let history = store.history(&Query::everything()).unwrap();
        assert_eq!(history.len(), 12);
        let svc = &state.services["www.shift.example.com."];
        assert_eq!(svc.phase.as_deref(), Some("cutover"));
        assert!(svc.decommissioned.contains("old"));
        assert_eq!(svc.last_change.as_ref(), history.last());
        assert_eq!(state.version, STATE_VERSION);
        let actions: Vec<(&str, Option<&str>, &str)> = history
            .iter()
            .map(|e| (e.change.action(), e.change.from(), e.change.to()))
            .collect();
        assert_eq!(actions[0], ("advance", Some("separate-domain"), "half"));
        assert_eq!(actions[2], ("disable", None, "new/127.0.0.20"));
        assert_eq!(actions[6], ("rollback", Some("cutover"), "half"));
        assert_eq!(actions[8], ("decommission", None, "old"));
        assert_eq!(actions[9], ("recommission", None, "old"));
        assert_eq!(history[2].reason.as_deref(), Some("maintenance"));
        assert!(history[3].forced);
        let zone = crate::zone::load_file(&dir.join("state-v1-zone.toml")).unwrap();
        let v = state.validate(&[zone], &store.origin());
        assert!(v.errors.is_empty() && v.warnings.is_empty(), "{v:?}");
        let old: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("state-v1.json")).unwrap())
                .unwrap();
        let new: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(store.path()).unwrap()).unwrap();
        assert_eq!(new["version"], STATE_VERSION);
        assert!(new.get("history").is_none());
        for (k, v) in old["services"].as_object().unwrap() {
            for (f, x) in v.as_object().unwrap() {
                assert_eq!(&new["services"][k][f], x, "{k}.{f}");
            }
        }
        for (a, b) in history
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .zip(old["history"].as_array().unwrap())
        {
            for k in ["at", "service", "action", "from", "to", "reason", "forced"] {
                assert_eq!(a.get(k).unwrap_or(&serde_json::Value::Null), &b[k], "{k}");
            }
        }
        // A second start finds format 2 and a log that has it all.
        let log = std::fs::read(store.journal().path()).unwrap();
        let again = FileStore::new(dst.path());
        assert_eq!(again.load().unwrap().state, state);
        assert_eq!(std::fs::read(again.journal().path()).unwrap(), log);
    }
}
