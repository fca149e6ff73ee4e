//! The apply path with an injected clock and store: a hold follows the
//! clock given, and a commit the store refuses changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use super::*;
use crate::api::{ApiError, Fault};
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
    fn commit(&self, expected: Epoch, _: &State) -> Result<Epoch, CommitError> {
        Err(CommitError::Conflict {
            expected,
            found: expected + 1,
        })
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
    fn commit(&self, expected: Epoch, next: &State) -> Result<Epoch, CommitError> {
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
    fn changes(&self) -> tokio::sync::watch::Receiver<Epoch> {
        tokio::sync::watch::channel(0).1
    }
}

fn operator(dir: &std::path::Path, store: Box<dyn StateStore>, clock: Arc<Manual>) -> Operator {
    let zones = dir.join("zones");
    std::fs::create_dir_all(&zones).unwrap();
    std::fs::write(zones.join("z.test.toml"), ZONE).unwrap();
    let loaded = load_all(&zones, store.as_ref()).unwrap();
    let table = Arc::new(health::Table::default());
    let checks = health::Checks::new(
        Arc::new(health::Checker::new().unwrap()),
        table.clone(),
        Arc::default(),
        CancellationToken::new(),
    );
    let op = Operator::new(zones, None, loaded, store, checks, table, clock);
    op.rebuild();
    op
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
    let advance =
        |op: &Operator| op.transition("www", Direction::Advance, TransitionRequest::default());
    let e = advance(&op).unwrap_err();
    assert!(
        matches!(e, TransitionError::Phase(PhaseError::HoldNotPassed { .. })),
        "{e}"
    );
    assert_eq!(e.fault(), Fault::Refused);
    assert!(op.state().history.is_empty());

    clock.0.fetch_add(3_600_000, Ordering::Relaxed);
    let r = advance(&op).unwrap();
    assert_eq!((r.from.as_str(), r.to.as_str()), ("first", "second"));
    let state = op.state();
    let event = &state.history[0];
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
    let serial = op.plan.load().serial;
    let req = EndpointRequest {
        force: true,
        reason: None,
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
    let e = op.recommission("nope", "old", None).unwrap_err();
    assert_eq!(e.fault(), Fault::NotFound);
    assert!(e.to_string().contains("unknown service \"nope\""), "{e}");
    let e = op
        .decommission("www", "gone", DecommissionRequest::default())
        .unwrap_err();
    assert_eq!(e.fault(), Fault::NotFound);
    let e = op
        .recommission("www", "old", Some("x".repeat(MAX_REASON + 1)))
        .unwrap_err();
    assert_eq!(e.fault(), Fault::Usage);
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
