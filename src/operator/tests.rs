//! The apply path with an injected clock and store: a hold follows the
//! clock given, and a commit the store refuses changes nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use super::*;
use crate::api::{ApiError, Fault};
use crate::state::journal::Query;
use crate::state::{CommitError, FileStore, Loaded, StateError};

const ZONE: &str = r#"
[zone]
origin = "z.test."
nameservers = ["ns1"]
hostmaster = "h.z.test."
records = """
ns1 IN A 127.0.0.53
"""

[[service]]
name = "www"
[service.pools]
old = ["127.0.0.10"]
new = ["127.0.0.20"]
[service.health]
kind = "none"
[[service.phase]]
name = "first"
weights = { old = 100, new = 0 }
hold = "1h"
[[service.phase]]
name = "second"
weights = { old = 50, new = 50 }

[[service]]
name = "api"
[service.pools]
old = ["127.0.0.11"]
new = ["127.0.0.21"]
[service.health]
kind = "none"
[[service.phase]]
name = "first"
weights = { old = 100, new = 0 }
[[service.phase]]
name = "second"
weights = { old = 50, new = 50 }
"#;

/// A clock the test sets.
struct Manual(AtomicU64);

impl Clock for Manual {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A store another writer always got to first.
struct Raced;

impl StateStore for Raced {
    fn origin(&self) -> String {
        "raced".into()
    }
    fn load(&self) -> Result<Loaded, StateError> {
        Ok(Loaded {
            state: State::default(),
            epoch: 0,
        })
    }
    fn commit(&self, expected: Epoch, _: &State, _: &Event) -> Result<Epoch, CommitError> {
        Err(CommitError::Conflict {
            expected,
            found: expected + 1,
        })
    }
    fn history(&self, _: &Query) -> Result<Vec<Event>, StateError> {
        Ok(Vec::new())
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<Epoch> {
        tokio::sync::watch::channel(0).1
    }
}

/// A shared store in memory: its epoch counts commits, and a test can
/// commit as another host would.
#[derive(Default)]
struct Memory(Mutex<(State, Epoch)>);

impl Memory {
    /// Another host puts `service` in phase `phase`.
    fn elsewhere(&self, service: &str, phase: &str) {
        let mut m = lock(&self.0);
        m.0.services.insert(
            service.into(),
            ServiceState {
                phase: Some(phase.into()),
                ..ServiceState::default()
            },
        );
        m.1 += 1;
    }
}

impl StateStore for Memory {
    fn origin(&self) -> String {
        "memory".into()
    }
    fn load(&self) -> Result<Loaded, StateError> {
        let (state, epoch) = lock(&self.0).clone();
        Ok(Loaded { state, epoch })
    }
    fn commit(&self, expected: Epoch, next: &State, _: &Event) -> Result<Epoch, CommitError> {
        let mut m = lock(&self.0);
        if m.1 != expected {
            return Err(CommitError::Conflict {
                expected,
                found: m.1,
            });
        }
        *m = (next.clone(), m.1 + 1);
        Ok(m.1)
    }
    fn history(&self, _: &Query) -> Result<Vec<Event>, StateError> {
        Ok(Vec::new())
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<Epoch> {
        tokio::sync::watch::channel(0).1
    }
}

fn operator(dir: &std::path::Path, store: Box<dyn StateStore>, clock: Arc<Manual>) -> Operator {
    let zones = dir.join("zones");
    std::fs::create_dir_all(&zones).unwrap();
    std::fs::write(zones.join("z.test.toml"), ZONE).unwrap();
    unbuilt(dir, store, clock)
}

/// The operator over the zones already in `dir/zones`, no plan built.
fn unbuilt(dir: &std::path::Path, store: Box<dyn StateStore>, clock: Arc<Manual>) -> Operator {
    let zones = dir.join("zones");
    let loaded = load_all(&zones, store.as_ref()).unwrap();
    let table = Arc::new(health::Table::default());
    let checks = health::Checks::new(
        Arc::new(health::Checker::new().unwrap()),
        table.clone(),
        Arc::default(),
        CancellationToken::new(),
    )
    .unwrap();
    Operator::new(zones, None, loaded, store, checks, table, clock)
}

#[test]
fn a_hold_follows_the_clock_given() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Manual(AtomicU64::new(1_000_000_000)));
    let op = operator(
        dir.path(),
        Box::new(FileStore::new(&dir.path().join("state"))),
        clock.clone(),
    );
    op.rebuild();
    let advance =
        |op: &Operator| op.transition("www", Direction::Advance, TransitionRequest::default());
    let e = advance(&op).unwrap_err();
    assert!(
        matches!(e, TransitionError::Phase(PhaseError::HoldNotPassed { .. })),
        "{e}"
    );
    assert_eq!(e.fault(), Fault::Refused);
    assert!(op.state().last.is_none());

    clock.0.fetch_add(3_600_000, Ordering::Relaxed);
    let r = advance(&op).unwrap();
    assert_eq!((r.from.as_str(), r.to.as_str()), ("first", "second"));
    let state = op.state();
    let event = state.last.as_ref().unwrap();
    assert_eq!(
        state.service(&event.service).last_change.as_ref(),
        Some(event)
    );
    assert_eq!(event.at, 1_000_000 + 3_600);
    assert_eq!(
        event.change,
        Change::Advance {
            from: "first".into(),
            to: "second".into()
        }
    );
    // Committed to the store, not only published.
    let stored = FileStore::new(&dir.path().join("state")).load().unwrap();
    assert_eq!(stored.state, *state);
}

#[test]
fn a_commit_the_store_refuses_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Manual(AtomicU64::new(1_000_000_000)));
    let op = operator(dir.path(), Box::new(Raced), clock);
    op.rebuild();
    let serial = op.plan.load().serial;
    let req = EndpointRequest {
        force: true,
        ..EndpointRequest::default()
    };
    let e = op
        .set_endpoint("www", "127.0.0.10", false, req)
        .unwrap_err();
    assert!(
        matches!(
            e,
            EndpointError::NotSaved(NotSaved(CommitError::Conflict { .. }))
        ),
        "{e}"
    );
    assert_eq!(e.fault(), Fault::Refused);
    assert_eq!(*op.state(), State::default());
    assert_eq!(op.plan.load().serial, serial);
}

#[test]
fn errors_name_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Manual(AtomicU64::new(1_000_000_000)));
    let op = operator(
        dir.path(),
        Box::new(FileStore::new(&dir.path().join("state"))),
        clock,
    );
    let e = op
        .recommission("nope", "old", ReasonRequest::default())
        .unwrap_err();
    assert_eq!(e.fault(), Fault::NotFound);
    assert!(e.to_string().contains("unknown service \"nope\""), "{e}");
    let e = op
        .decommission("www", "gone", DecommissionRequest::default())
        .unwrap_err();
    assert_eq!(e.fault(), Fault::NotFound);
    let e = op
        .recommission(
            "www",
            "old",
            ReasonRequest {
                reason: Some("x".repeat(MAX_REASON + 1)),
                actor: None,
            },
        )
        .unwrap_err();
    assert_eq!(e.fault(), Fault::Usage);
    for bad in [
        "",
        "two words",
        "bell\u{7}",
        &"x".repeat(crate::api::MAX_ACTOR + 1),
    ] {
        let e = op
            .recommission(
                "www",
                "old",
                ReasonRequest {
                    reason: None,
                    actor: Some(bad.to_string()),
                },
            )
            .unwrap_err();
        assert!(matches!(e, RecommissionError::Actor(_)), "{bad:?}: {e}");
        assert_eq!(e.fault(), Fault::Usage);
    }
}

/// A shared store in memory, as etcd behaves for the serial: one revision
/// counter for the state and the zone generations; it can be "down" for
/// zone registrations.
#[derive(Default)]
struct Etcdish {
    revision: AtomicI64,
    state: Mutex<(State, Epoch)>,
    zones: Mutex<BTreeMap<String, Epoch>>,
    down: AtomicBool,
    history: Mutex<Vec<Event>>,
}

/// One host's handle on an [`Etcdish`].
struct On(Arc<Etcdish>);

impl StateStore for On {
    fn origin(&self) -> String {
        "etcdish".into()
    }
    fn load(&self) -> Result<Loaded, StateError> {
        let (state, epoch) = lock(&self.0.state).clone();
        Ok(Loaded { state, epoch })
    }
    fn commit(&self, expected: Epoch, next: &State, event: &Event) -> Result<Epoch, CommitError> {
        let mut st = lock(&self.0.state);
        if st.1 != expected {
            return Err(CommitError::Conflict {
                expected,
                found: st.1,
            });
        }
        let epoch = self.0.revision.fetch_add(1, Ordering::SeqCst) + 1;
        let mut next = next.clone();
        next.serial_base = st.0.serial_base;
        *st = (next, epoch);
        lock(&self.0.history).push(event.clone());
        Ok(epoch)
    }
    fn history(&self, _: &Query) -> Result<Vec<Event>, StateError> {
        Ok(lock(&self.0.history).clone())
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<Epoch> {
        tokio::sync::watch::channel(0).1
    }
    fn zone_generation(&self, digest: &str) -> Option<Epoch> {
        lock(&self.0.zones).get(digest).copied()
    }
    fn register_zones(&self, digest: &str, floor: Epoch) -> Result<Epoch, StateError> {
        if self.0.down.load(Ordering::SeqCst) {
            return Err(StateError::Etcd("etcd unreachable (test)".into()));
        }
        let mut g = self.0.revision.fetch_add(1, Ordering::SeqCst) + 1;
        while g < floor {
            g = self.0.revision.fetch_add(1, Ordering::SeqCst) + 1;
        }
        lock(&self.0.zones).insert(digest.to_string(), g);
        Ok(g)
    }
}

/// A host `node` of the cluster on `etcd`, serving `zone` from its own directory.
fn host(dir: &std::path::Path, etcd: &Arc<Etcdish>, node: &str, zone: &str) -> Operator {
    let zones = dir.join("zones");
    std::fs::create_dir_all(&zones).unwrap();
    std::fs::write(zones.join("z.test.toml"), zone).unwrap();
    let clock = Arc::new(Manual(AtomicU64::new(1_000_000_000)));
    let op = unbuilt(dir, Box::new(On(etcd.clone())), clock).identified(node, true);
    op.rebuild();
    op.register_zones().unwrap();
    op
}

/// Writes `zone` as the host's zone file and reloads it.
fn reload_with(op: &Operator, dir: &std::path::Path, zone: &str) -> u32 {
    std::fs::write(dir.join("zones/z.test.toml"), zone).unwrap();
    op.reload().unwrap().serial
}

#[test]
fn the_shared_serial_is_one_for_the_same_zones_and_rises_with_every_zone_change() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let etcd = Arc::new(Etcdish::default());
    lock(&etcd.state).0.serial_base = Some(1_000);
    let serial = |op: &Operator| op.plan.load().serial;
    let a = host(d1.path(), &etcd, "ns1", ZONE);
    let b = host(d2.path(), &etcd, "ns2", ZONE);
    assert_eq!(a.digest(), b.digest());
    // ns2 started the zones' generation last; ns1 follows when told (the
    // watch fires `changes`, then refresh).
    a.refresh();
    assert_eq!(serial(&a), serial(&b), "same zones and state, same serial");
    let same = serial(&a);

    // A static record changes on ns1 only: its serial rises, ns2's not.
    let changed = ZONE.replace("127.0.0.53", "127.0.0.54");
    let s1 = reload_with(&a, d1.path(), &changed);
    assert!(s1 > same, "{s1} after the zone change, {same} before");
    assert_ne!(a.digest(), b.digest());
    b.refresh();
    assert_eq!(serial(&b), same, "ns2's zones did not change");
    // ns2 gets the same zones: both serve one serial again.
    let s2 = reload_with(&b, d2.path(), &changed);
    assert!(s2 > same);
    a.refresh();
    assert_eq!(serial(&a), s2);
    assert!(s2 > s1, "ns1's serial rose again without a content change");

    // etcd down: a zone change still raises ns1's serial, by one.
    etcd.down.store(true, Ordering::SeqCst);
    let back = ZONE.replace("127.0.0.53", "127.0.0.55");
    let s3 = reload_with(&a, d1.path(), &back);
    assert_eq!(s3, s2 + 1);
    assert!(a.zones_pending());
    // Back to the zones it served before: that is a change too.
    let s4 = reload_with(&a, d1.path(), &changed);
    assert_eq!(s4, s3 + 1, "going back to earlier zones raises the serial");
    // etcd returns: the generation catches up without going back, and
    // ns2, which serves the same zones, follows.
    etcd.down.store(false, Ordering::SeqCst);
    a.register_zones().unwrap();
    assert!(!a.zones_pending());
    let s5 = serial(&a);
    assert!(s5 >= s4, "{s5} after etcd returned, {s4} served meanwhile");
    b.refresh();
    assert_eq!(serial(&b), s5);

    // A state change raises both, equally.
    a.transition(
        "www",
        Direction::Advance,
        TransitionRequest {
            force: true,
            ..TransitionRequest::default()
        },
    )
    .unwrap();
    b.refresh();
    assert!(serial(&a) > s5);
    assert_eq!(serial(&a), serial(&b));
}

#[test]
fn history_records_the_host_and_the_actor() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Arc::new(Etcdish::default());
    let op = host(dir.path(), &etcd, "ns7", ZONE);
    op.recommission(
        "www",
        "old",
        ReasonRequest {
            reason: None,
            actor: Some("alice".into()),
        },
    )
    .unwrap();
    op.set_endpoint(
        "www",
        "127.0.0.10",
        false,
        EndpointRequest {
            force: true,
            reason: Some("r".into()),
            actor: Some("bob".into()),
        },
    )
    .unwrap();
    let h = op.history(None, false).unwrap();
    let who: Vec<(Option<&str>, Option<&str>)> = h
        .events
        .iter()
        .map(|e| (e.event.node.as_deref(), e.event.actor.as_deref()))
        .collect();
    assert_eq!(
        who,
        [(Some("ns7"), Some("bob"))],
        "recommission of a pool in service changes nothing"
    );
    let st = op.status(None).unwrap();
    let last = st.services[0].last_change.as_ref().unwrap();
    assert_eq!(
        (last.node.as_deref(), last.actor.as_deref()),
        (Some("ns7"), Some("bob"))
    );
}

#[test]
fn a_commit_refused_for_another_service_is_decided_again_and_one_for_the_same_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Manual(AtomicU64::new(1_000_000_000)));
    let store = Arc::new(Memory::default());
    let op = operator(dir.path(), Box::new(store.clone()), clock);
    let disable = |op: &Operator, endpoint: &str| {
        let req = EndpointRequest {
            force: true,
            reason: None,
            actor: None,
        };
        op.set_endpoint("www", endpoint, false, req)
    };

    // Another host changed api meanwhile: no conflict, nothing lost.
    store.elsewhere("api.z.test.", "second");
    let r = disable(&op, "127.0.0.10").unwrap();
    assert_eq!(r.epoch, Some(2), "{r:?}");
    let stored = store.load().unwrap();
    assert_eq!(stored.epoch, 2);
    assert_eq!(
        stored.state.service("api.z.test.").phase.as_deref(),
        Some("second")
    );
    assert_eq!(stored.state.service("www.z.test.").disabled.len(), 1);
    assert_eq!(*op.state(), stored.state, "served as committed");

    // Another host changed www itself: the command was decided on a state
    // that is gone, so it is refused and nothing changes.
    store.elsewhere("www.z.test.", "second");
    let before = store.load().unwrap();
    let e = disable(&op, "127.0.0.20").unwrap_err();
    assert!(
        matches!(
            e,
            EndpointError::NotSaved(NotSaved(CommitError::Conflict { found: 3, .. }))
        ),
        "{e}"
    );
    assert_eq!(store.load().unwrap(), before);
}
