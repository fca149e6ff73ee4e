//! The shared [`StateStore`] on etcd (`[cluster]`): load and commit go to
//! etcd through [`Cluster`]; every applied state is also written to the
//! local copy (`<state_dir>/state.json`; a command's on a blocking thread,
//! not waited for), which a host serves when it starts while etcd is
//! unreachable. History is read only when asked for, never at a change. [`EtcdStore::follow`] watches etcd and tells
//! of changes made by other hosts ([`StateStore::changes`]) and keeps the
//! view of every host for `status`.
//!
//! Commands call [`StateStore::load`] and [`StateStore::commit`] on
//! blocking threads; they wait on etcd there (`Handle::block_on`), never on
//! the DNS path, which only reads the answer plan.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::cluster::{Cluster, Commit, HISTORY_KEPT, HistoryRecord, HostView, report};
use super::etcd::{CasOutcome, Change, EtcdError, Put, WatchEvent};
use super::journal::{Query, TAIL};
use super::store::{CommitError, Epoch, FileStore, Loaded, Outage, StateError, StateStore};
use super::{Event, STATE_VERSION, STATE_VERSION_1, State};
use crate::sync::lock;

/// Pause between full reads while etcd is unreachable (short: a host
/// follows within a second once etcd is back).
const RETRY: Duration = Duration::from_millis(250);
/// How often each host looks for shared history to compact.
pub const COMPACT_EVERY: Duration = Duration::from_secs(60);

/// The shared state on etcd, with a local copy.
pub struct EtcdStore {
    cluster: Cluster,
    handle: Handle,
    local: Arc<Copy>,
    changed: tokio::sync::watch::Sender<Epoch>,
    cookie_secret: tokio::sync::watch::Sender<CookieSecretSeen>,
    view: Mutex<View>,
    /// The newest [`TAIL`] history keys read, oldest first: the next read
    /// asks only for the keys after them.
    tail: Mutex<VecDeque<HistoryRecord>>,
}

/// The shared cookie secret as last read or watched: `None` before etcd
/// was read; `Some(None)`: the key is absent; else its `mod_revision` and
/// value ([`super::cluster::CookieSecretRecord`]).
pub type CookieSecretSeen = Option<Option<(i64, Vec<u8>)>>;

/// The local copy of the shared state (`<state_dir>/state.json`).
struct Copy {
    file: FileStore,
    /// The newest state applied by a command, to write.
    pending: Mutex<Option<(State, Epoch)>>,
    /// The epoch written last; held while writing.
    written: Mutex<Epoch>,
}

impl Copy {
    /// Writes `state` at `epoch` unless a later one was written.
    fn write(&self, mut state: State, epoch: Epoch) {
        let mut written = lock(&self.written);
        if epoch < *written {
            return;
        }
        state.epoch = Some(epoch);
        if let Err(e) = self.file.save(&state) {
            warn!(error = %e, "cannot write the local copy of the shared state");
            return;
        }
        *written = epoch;
    }
}

/// What this host knows of the cluster.
#[derive(Default)]
struct View {
    /// Every host by node id, as last read or watched.
    hosts: BTreeMap<String, HostView>,
    /// etcd has not been read since start: the local copy is served.
    from_local_copy: bool,
    /// The etcd revision the hosts reflect: an older full read does not
    /// replace what the watch delivered since.
    revision: i64,
    /// Zone generation by zones digest, as read or watched (only rises).
    zones: BTreeMap<String, i64>,
    /// Whether etcd was ever read (a failed first load falls back to the
    /// local copy; a later one is an error and the served state stays).
    loaded_once: bool,
    /// etcd cannot be read or watched: since when, and why.
    outage: Option<Outage>,
}

/// The message for an etcd failure: names etcd and every endpoint.
pub fn etcd_failure(endpoints: &[String], e: &EtcdError) -> String {
    let list = endpoints.join(", ");
    match e {
        EtcdError::Unavailable { errors } => {
            format!("etcd unreachable ({list}): {}", errors.join("; "))
        }
        e => format!("etcd ({list}): {e}"),
    }
}

impl EtcdStore {
    /// The store on `cluster`, with its local copy in `state_dir`; etcd calls
    /// of the sync trait methods run on `handle`.
    pub fn new(cluster: Cluster, state_dir: &Path, handle: Handle) -> EtcdStore {
        EtcdStore {
            cluster,
            handle,
            local: Arc::new(Copy {
                file: FileStore::new(state_dir),
                pending: Mutex::new(None),
                written: Mutex::new(0),
            }),
            changed: tokio::sync::watch::Sender::new(0),
            cookie_secret: tokio::sync::watch::Sender::new(None),
            view: Mutex::new(View::default()),
            tail: Mutex::new(VecDeque::new()),
        }
    }

    /// The cluster handle.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The shared cookie secret, as [`EtcdStore::follow`] reads and
    /// watches it.
    pub fn cookie_secret(&self) -> tokio::sync::watch::Receiver<CookieSecretSeen> {
        self.cookie_secret.subscribe()
    }

    fn failure(&self, e: &EtcdError) -> StateError {
        StateError::Etcd(etcd_failure(self.cluster.etcd().endpoints(), e))
    }

    /// Reads the state and every host from etcd (not the history: it is
    /// read only when asked for, [`StateStore::history`]).
    pub async fn read(&self) -> Result<(Loaded, Vec<HostView>, i64), EtcdError> {
        let loaded = self.cluster.load().await?;
        self.merge_zones(&loaded.zones);
        let (epoch, mut state) = match &loaded.state {
            Some((epoch, bytes)) => (
                *epoch,
                serde_json::from_slice::<State>(bytes).map_err(|e| EtcdError::Protocol {
                    endpoint: self.cluster.etcd().endpoints().join(", "),
                    call: "state",
                    detail: format!("{}: {e}", self.cluster.layout().state()),
                })?,
            ),
            None => (0, State::new()),
        };
        state.legacy_history.clear();
        state.epoch = None;
        Ok((Loaded { state, epoch }, loaded.hosts, loaded.revision))
    }

    /// Writes the local copy of an applied state; a failure is logged (the
    /// shared state is the truth, the copy only serves a restart without etcd).
    fn write_copy(&self, state: &State, epoch: Epoch) {
        self.local.write(state.clone(), epoch);
    }

    /// [`EtcdStore::write_copy`] on a blocking thread: a command does not
    /// wait for the copy's fsyncs. The newest pending copy is written; an
    /// older one never replaces a newer.
    fn write_copy_later(&self, state: State, epoch: Epoch) {
        *lock(&self.local.pending) = Some((state, epoch));
        let copy = self.local.clone();
        self.handle.spawn_blocking(move || {
            let next = lock(&copy.pending).take();
            if let Some((state, epoch)) = next {
                copy.write(state, epoch);
            }
        });
    }

    /// Takes in zone generations read from etcd; a generation only rises,
    /// so the higher of two reads wins whatever their order.
    fn merge_zones(&self, zones: &[(String, i64)]) {
        let mut v = lock(&self.view);
        for (digest, generation) in zones {
            let g = v.zones.entry(digest.clone()).or_default();
            *g = (*g).max(*generation);
        }
    }

    fn set_hosts(&self, hosts: Vec<HostView>, revision: i64) {
        let mut v = lock(&self.view);
        if revision < v.revision {
            return;
        }
        v.revision = revision;
        v.hosts = hosts
            .into_iter()
            .map(|h| (h.report.node.clone(), h))
            .collect();
    }

    /// A shared state written before format 2 has no per-service last
    /// change: takes it from the history kept, once, and commits the state
    /// as format 2 (without a history entry: nothing changed). Another host
    /// doing the same, or a command meanwhile, wins; nothing is lost.
    async fn migrate(&self, epoch: i64, bytes: &[u8]) {
        let Ok(mut state) = serde_json::from_slice::<State>(bytes) else {
            return;
        };
        if state.version != STATE_VERSION_1 {
            return;
        }
        let history = match self.cluster.history(Some(HISTORY_KEPT)).await {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %self.failure(&e), "cannot read the shared history to migrate the shared state; retried at the next start");
                return;
            }
        };
        state.legacy_history = history
            .iter()
            .filter(|r| r.epoch <= epoch)
            .flat_map(|r| history_entry(&r.entry))
            .collect();
        state.migrate();
        state.epoch = None;
        match self
            .put_state(epoch, serde_json::to_vec(&state).unwrap_or_default())
            .await
        {
            Ok(CasOutcome::Committed { revision }) => info!(
                epoch = revision,
                "migrated the shared state to format {STATE_VERSION}: each service's last change is kept in it; the history stays in its per-epoch keys"
            ),
            Ok(CasOutcome::Conflict { .. }) => {}
            Err(e) => {
                warn!(error = %self.failure(&e), "cannot migrate the shared state; retried at the next start")
            }
        }
    }

    /// Deletes the oldest shared history entries beyond the last
    /// [`HISTORY_KEPT`], saying in the log what went; every host does it
    /// every [`COMPACT_EVERY`] (harmless if two do it at once).
    pub async fn compact(&self, shutdown: CancellationToken) {
        loop {
            match self.cluster.compact_history(HISTORY_KEPT).await {
                Ok(Some(c)) => {
                    let date = |at: Option<u64>| {
                        at.map_or_else(String::new, |s| crate::clock::format_ms(s * 1000))
                    };
                    info!(
                        deleted = c.deleted,
                        from_epoch = c.from_epoch,
                        kept_from_epoch = c.kept_from_epoch,
                        oldest = %date(c.from_at),
                        kept = HISTORY_KEPT,
                        "compacted the shared history: deleted its entries before kept_from_epoch from etcd"
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(error = %self.failure(&e), "cannot compact the shared history; retrying later");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(COMPACT_EVERY) => {}
            }
        }
    }

    /// The newest [`TAIL`] history keys, oldest first. The first call reads
    /// them; later ones read only the keys after the newest already read
    /// (all of them when fewer than TAIL came since, else the newest TAIL).
    /// If etcd's history no longer reaches the newest key read (a new etcd
    /// cluster started its revisions again), everything is read again.
    fn recent_history(&self) -> Result<VecDeque<HistoryRecord>, EtcdError> {
        let mut tail = lock(&self.tail);
        let newest = tail.back().map(|r| r.base_epoch);
        let fresh = match newest {
            None => self.handle.block_on(self.cluster.history(Some(TAIL)))?,
            Some(after) => {
                let fresh = self
                    .handle
                    .block_on(self.cluster.history_after(after, TAIL))?;
                let gone = || -> Result<bool, EtcdError> {
                    let last = self.handle.block_on(self.cluster.history(Some(1)))?;
                    Ok(last.last().map(|r| r.base_epoch) < Some(after))
                };
                if fresh.is_empty() && gone()? {
                    tail.clear();
                    self.handle.block_on(self.cluster.history(Some(TAIL)))?
                } else {
                    fresh
                }
            }
        };
        if fresh.len() >= TAIL {
            tail.clear();
        }
        tail.extend(fresh);
        let over = tail.len().saturating_sub(TAIL);
        tail.drain(..over);
        Ok(tail.clone())
    }

    /// Compacts etcd's revisions older than `keep`, every `keep`, until
    /// `shutdown`. etcd keeps every revision of every key until a
    /// compaction drops it, and each host writes one a second (its report):
    /// without this, etcd's database grows by hundreds of megabytes a day
    /// per host until its space quota refuses every write. Each round
    /// compacts at the revision read one round earlier, so the last `keep`
    /// of changes stay watchable (a host whose watch lags further re-reads
    /// in full). Harmless when several hosts do it: a revision already
    /// compacted is left alone.
    pub async fn compact_revisions(&self, keep: Duration, shutdown: CancellationToken) {
        let etcd = self.cluster.etcd();
        let state_key = self.cluster.layout().state();
        let every = humantime::format_duration(keep).to_string();
        let mut previous: Option<i64> = None;
        let mut compacted_once = false;
        let mut failing = false;
        loop {
            let result = async {
                let (_, now) = etcd.get(&state_key).await?;
                if let Some(revision) = previous.take() {
                    match etcd.compact(revision, false).await {
                        Ok(()) if !compacted_once => {
                            compacted_once = true;
                            info!(
                                revision,
                                every, "compacted etcd's old revisions before revision; from now on every `every` (cluster.compact_revisions)"
                            );
                        }
                        Ok(()) => debug!(revision, "compacted etcd's revisions before revision"),
                        // Another host (or etcd itself) got there first.
                        Err(EtcdError::Compacted { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                previous = Some(now);
                Ok::<(), EtcdError>(())
            }
            .await;
            match result {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    warn!(
                        error = %self.failure(&e),
                        "cannot compact etcd's old revisions; retrying later. Without compaction etcd's database grows until its quota refuses writes: grant this user compaction (etcd's root role), or run etcd with --auto-compaction-retention and set cluster.compact_revisions = \"off\""
                    );
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(keep) => {}
            }
        }
    }

    /// Follows etcd until `shutdown`: a full read (retried while etcd is
    /// unreachable), then a watch from the revision after it; a change to
    /// the state fires [`StateStore::changes`], host records update the
    /// view. A compaction means changes were missed: read in full again.
    pub async fn follow(&self, shutdown: CancellationToken) {
        let mut down = false;
        loop {
            let revision = loop {
                let read = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = self.cluster.load() => r,
                };
                match read {
                    Ok(l) => {
                        self.reachable(&mut down);
                        self.set_hosts(l.hosts, l.revision);
                        self.cookie_secret
                            .send_replace(Some(l.cookie_secret.clone()));
                        match &l.state {
                            None => self.create().await,
                            Some((epoch, bytes)) => self.migrate(*epoch, bytes).await,
                        }
                        // Always re-read the state: changes may have been
                        // missed, or the local copy is being served.
                        self.changed
                            .send_replace(l.state.as_ref().map_or(0, |s| s.0));
                        break l.revision;
                    }
                    Err(e) => {
                        if let Some(error) = self.unreachable(&mut down, &e) {
                            warn!(%error, "cannot read the shared state; serving the last applied state");
                        }
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(RETRY) => {}
                        }
                    }
                }
            };
            let mut watch = self.cluster.watch(revision + 1);
            loop {
                let ev = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    ev = watch.next() => ev,
                };
                match ev {
                    Ok(WatchEvent::Changes(changes)) => {
                        self.reachable(&mut down);
                        self.apply(&changes);
                    }
                    Ok(WatchEvent::Compacted { compact_revision }) => {
                        info!(
                            compact_revision,
                            "etcd compacted changes not yet seen; reading the shared state in full"
                        );
                        break;
                    }
                    Err(e) => {
                        if let Some(error) = self.unreachable(&mut down, &e) {
                            warn!(%error, "lost the etcd watch; serving the last applied state and reconnecting");
                        }
                    }
                }
            }
        }
    }

    /// etcd answered: ends an outage (logged once).
    fn reachable(&self, down: &mut bool) {
        if std::mem::take(down) {
            lock(&self.view).outage = None;
            info!("etcd reachable again");
        }
    }

    /// etcd failed with `e`: starts an outage, and returns the message to
    /// log if it is a new one.
    fn unreachable(&self, down: &mut bool, e: &EtcdError) -> Option<String> {
        let error = self.failure(e).to_string();
        let mut v = lock(&self.view);
        let since_ms = v
            .outage
            .as_ref()
            .map_or_else(crate::clock::unix_ms, |o| o.since_ms);
        v.outage = Some(Outage {
            since_ms,
            error: error.clone(),
        });
        (!std::mem::replace(down, true)).then_some(error)
    }

    /// Creates the shared state if there is none yet (the first host of a
    /// new cluster): empty, with its `serial_base`, so that every host
    /// serves one SOA serial from the start. Whoever creates it first wins;
    /// the watch brings it to the others.
    async fn create(&self) {
        let value = shared_value(&State::new(), crate::clock::unix_ms() / 1000);
        match self.put_state(0, value).await {
            Ok(CasOutcome::Committed { revision }) => {
                info!(epoch = revision, "created the shared state");
            }
            Ok(CasOutcome::Conflict { .. }) => {}
            Err(e) => warn!(error = %self.failure(&e), "cannot create the shared state"),
        }
    }

    /// Writes the state value if the state is still at `epoch` (0: there
    /// is none), without a history entry.
    async fn put_state(&self, epoch: i64, value: Vec<u8>) -> Result<CasOutcome, EtcdError> {
        let put = [Put {
            key: self.cluster.layout().state(),
            value,
            lease: None,
        }];
        self.cluster
            .etcd()
            .compare_and_swap(&self.cluster.layout().state(), epoch, &put)
            .await
    }

    /// Applies watched changes to the view; a state change fires `changes`.
    fn apply(&self, changes: &[Change]) {
        let layout = self.cluster.layout();
        let state_key = layout.state();
        let cookie_key = layout.cookie_secret();
        let mut state_epoch = None;
        let mut zones_changed = false;
        let mut v = lock(&self.view);
        for c in changes {
            v.revision = v.revision.max(c.revision());
            let key = c.key();
            if key == state_key {
                state_epoch = Some(c.revision());
            } else if key == cookie_key {
                self.cookie_secret.send_replace(Some(match c {
                    Change::Put(kv) => Some((kv.mod_revision, kv.value.clone())),
                    Change::Delete { .. } => None,
                }));
            } else if let (Some(digest), Change::Put(kv)) =
                (key.strip_prefix(&layout.zones_prefix()), c)
            {
                let g = v.zones.entry(digest.to_string()).or_default();
                *g = (*g).max(kv.mod_revision);
                zones_changed = true;
            } else if let Some(node) = key.strip_prefix(&layout.live_prefix()) {
                match c {
                    Change::Put(kv) => match report(kv) {
                        Ok(r) => {
                            v.hosts.insert(
                                node.to_string(),
                                HostView {
                                    report: r,
                                    live: true,
                                },
                            );
                        }
                        Err(e) => warn!(error = %e, "ignoring a host record"),
                    },
                    Change::Delete { .. } => {
                        if let Some(h) = v.hosts.get_mut(node) {
                            h.live = false;
                        }
                    }
                }
            } else if let Some(node) = key.strip_prefix(&layout.hosts_prefix()) {
                match c {
                    Change::Put(kv) => match report(kv) {
                        Ok(r) => {
                            let live = v.hosts.get(node).is_some_and(|h| h.live);
                            v.hosts
                                .insert(node.to_string(), HostView { report: r, live });
                        }
                        Err(e) => warn!(error = %e, "ignoring a host record"),
                    },
                    Change::Delete { .. } => {
                        v.hosts.remove(node);
                    }
                }
            }
        }
        drop(v);
        if let Some(epoch) = state_epoch {
            self.changed.send_replace(epoch);
        } else if zones_changed {
            // A host started a zone generation: the serial of those
            // zones rises wherever they are served.
            self.changed.send_modify(|_| {});
        }
    }
}

/// One history key's events: one event, or a list (an import).
pub fn history_entry(bytes: &[u8]) -> Vec<Event> {
    if let Ok(one) = serde_json::from_slice::<Event>(bytes) {
        return vec![one];
    }
    match serde_json::from_slice::<Vec<Event>>(bytes) {
        Ok(list) => list,
        Err(e) => {
            warn!(error = %e, "ignoring an unreadable shared history entry");
            Vec::new()
        }
    }
}

/// The shared value of `state`: without the local copy's epoch;
/// `serial_base` set on first creation. (History is a key per change.)
pub fn shared_value(state: &State, now_secs: u64) -> Vec<u8> {
    let mut shared = state.clone();
    shared.legacy_history.clear();
    shared.epoch = None;
    shared.serial_base.get_or_insert(now_secs);
    serde_json::to_vec(&shared).unwrap_or_default()
}

impl StateStore for EtcdStore {
    fn origin(&self) -> String {
        format!(
            "etcd {} (key {})",
            self.cluster.etcd().endpoints().join(", "),
            self.cluster.layout().state()
        )
    }

    fn load(&self) -> Result<Loaded, StateError> {
        match self.handle.block_on(self.read()) {
            Ok((loaded, hosts, revision)) => {
                self.set_hosts(hosts, revision);
                let mut v = lock(&self.view);
                if v.from_local_copy {
                    info!(
                        epoch = loaded.epoch,
                        "read the shared state from etcd; no longer serving the local copy"
                    );
                }
                v.from_local_copy = false;
                v.loaded_once = true;
                drop(v);
                self.write_copy(&loaded.state, loaded.epoch);
                Ok(loaded)
            }
            Err(e) => {
                let err = self.failure(&e);
                if lock(&self.view).loaded_once {
                    return Err(err);
                }
                let mut state = self.local.file.read()?;
                if state.version == STATE_VERSION_1 {
                    // A copy written before format 2: its history is in etcd.
                    state.migrate();
                }
                let epoch = state.epoch.take().unwrap_or(0);
                warn!(
                    error = %err,
                    path = %self.local.file.path().display(),
                    epoch,
                    "etcd is unreachable: serving the local copy of the last applied state"
                );
                lock(&self.view).from_local_copy = true;
                Ok(Loaded { state, epoch })
            }
        }
    }

    fn commit(&self, expected: Epoch, next: &State, event: &Event) -> Result<Epoch, CommitError> {
        self.commit_fenced(expected, next, event, None)
    }

    fn commit_fenced(
        &self,
        expected: Epoch,
        next: &State,
        event: &Event,
        fence: Option<&(String, i64)>,
    ) -> Result<Epoch, CommitError> {
        let value = shared_value(next, crate::clock::unix_ms() / 1000);
        let entry = serde_json::to_vec(event).unwrap_or_default();
        let outcome = self
            .handle
            .block_on(self.cluster.commit_fenced(
                expected,
                &value,
                &entry,
                fence.map(|(k, l)| (k.as_str(), *l)),
            ))
            .map_err(|e| self.failure(&e))?;
        match outcome {
            Commit::Done { epoch } => {
                let mut applied = next.clone();
                applied.serial_base = serde_json::from_slice::<State>(&value)
                    .ok()
                    .and_then(|s| s.serial_base);
                self.write_copy_later(applied, epoch);
                Ok(epoch)
            }
            Commit::Conflict { epoch } => Err(CommitError::Conflict {
                expected,
                found: epoch,
            }),
        }
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<Epoch> {
        self.changed.subscribe()
    }

    fn history(&self, query: &Query) -> Result<Vec<Event>, StateError> {
        // Without a service, the last TAIL keys hold at least TAIL events,
        // read incrementally; with one, every kept key is read (at most
        // HISTORY_KEPT and the slack before a compaction) and filtered.
        let records: Vec<HistoryRecord> = if !query.all && query.service.is_none() {
            self.recent_history().map_err(|e| self.failure(&e))?.into()
        } else {
            self.handle
                .block_on(self.cluster.history(None))
                .map_err(|e| self.failure(&e))?
        };
        let mut events: Vec<Event> = records
            .iter()
            .flat_map(|r| history_entry(&r.entry))
            .filter(|e| query.service.as_ref().is_none_or(|s| e.service == *s))
            .collect();
        if !query.all && events.len() > TAIL {
            events.drain(..events.len() - TAIL);
        }
        Ok(events)
    }

    fn hosts(&self) -> Vec<HostView> {
        lock(&self.view).hosts.values().cloned().collect()
    }

    fn serving_local_copy(&self) -> bool {
        lock(&self.view).from_local_copy
    }

    fn zone_generation(&self, digest: &str) -> Option<Epoch> {
        lock(&self.view).zones.get(digest).copied()
    }

    fn register_zones(&self, digest: &str, floor: Epoch) -> Result<Epoch, StateError> {
        let generation = self
            .handle
            .block_on(
                self.cluster
                    .register_zones(digest, crate::clock::unix_ms(), floor),
            )
            .map_err(|e| self.failure(&e))?;
        self.merge_zones(&[(digest.to_string(), generation)]);
        Ok(generation)
    }

    fn outage(&self) -> Option<Outage> {
        lock(&self.view).outage.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Change as StateChange;

    fn event(reason: &str) -> Event {
        Event {
            at: 1,
            service: "www.z.test.".into(),
            change: StateChange::Enable {
                endpoint: "p/e".into(),
            },
            reason: Some(reason.into()),
            forced: false,
            node: None,
            actor: None,
        }
    }

    #[test]
    fn a_history_key_holds_one_event_or_an_imported_list() {
        let one = serde_json::to_vec(&event("a")).unwrap();
        assert_eq!(history_entry(&one), vec![event("a")]);
        let list = serde_json::to_vec(&vec![event("b"), event("c")]).unwrap();
        assert_eq!(history_entry(&list), vec![event("b"), event("c")]);
        assert!(history_entry(b"{not json").is_empty());
    }

    #[test]
    fn the_shared_value_has_no_history_nor_epoch_and_keeps_its_serial_base() {
        let mut s = State::new();
        s.legacy_history.push(event("a"));
        s.epoch = Some(9);
        let v: State = serde_json::from_slice(&shared_value(&s, 100)).unwrap();
        assert!(v.legacy_history.is_empty() && v.epoch.is_none());
        assert_eq!(v.serial_base, Some(100));
        s.serial_base = Some(50);
        let v: State = serde_json::from_slice(&shared_value(&s, 100)).unwrap();
        assert_eq!(v.serial_base, Some(50), "set once, on creation");
    }
}
