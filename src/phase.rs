//! Phases of a migration and the transitions between them. Pure: the
//! current time and the health of pools are passed in.
//!
//! A service's phases form an ordered list, for example
//!
//! ```text
//!   separate-domain ──advance──▶ round-robin ──advance──▶ half ──advance──▶ cutover
//!         ▲                          │  ▲                  │                  │
//!         └────────rollback──────────┘  └─────rollback─────┘◀────rollback─────┘
//! ```
//!
//! `advance` moves forward (to the next phase, or `--to` a later one). It is
//! refused when a pool that the target phase weights above 0 has no healthy
//! endpoint, or when the current phase's `hold` has not yet passed; `force`
//! overrides both. `rollback` moves back (to the previous phase, or `--to` an
//! earlier one) and is otherwise always allowed: it is the escape hatch.
//! Neither may enter a phase that weights a decommissioned pool, forced or
//! not: the pool has to be recommissioned first.

use std::time::Duration;

/// One step of a migration: how much traffic each pool gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// Name operators use in commands ("round-robin").
    pub name: String,
    /// Weight per pool, indexed like the service's pools. 0 = standby.
    pub weights: Vec<u32>,
    /// Minimum time to stay in this phase before advancing without `--force`.
    pub hold: Option<Duration>,
    /// TTL of answers in this phase; `None` uses the service's TTL.
    pub ttl: Option<u32>,
}

/// Which way a requested transition goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Forward, towards cutover.
    Advance,
    /// Backward, towards the old infrastructure.
    Rollback,
}

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhaseError {
    /// `--to` named a phase the service does not have.
    #[error("unknown phase {name:?} (phases: {known})")]
    UnknownPhase { name: String, known: String },
    /// Advance from the last phase.
    #[error("already in the last phase {0:?}")]
    AtLast(String),
    /// Rollback from the first phase.
    #[error("already in the first phase {0:?}")]
    AtFirst(String),
    /// `advance --to` an earlier (or the same) phase, or `rollback --to` a later one.
    #[error("cannot {direction} from {from:?} to {to:?}: use {hint}")]
    WrongDirection {
        direction: &'static str,
        from: String,
        to: String,
        hint: &'static str,
    },
    /// The current phase's hold time has not passed.
    #[error(
        "phase {phase:?} must be held for {hold}, {remaining} remaining (use --force to advance anyway)"
    )]
    HoldNotPassed {
        phase: String,
        hold: String,
        remaining: String,
    },
    /// A pool that would receive traffic has no healthy endpoint.
    #[error(
        "pool {pool:?} would receive traffic in phase {phase:?} but has no healthy endpoint (use --force to advance anyway)"
    )]
    NoHealthyTarget { phase: String, pool: String },
    /// A pool that would receive traffic was decommissioned (refused
    /// whatever the direction or force: `recommission` it first).
    #[error(
        "pool {pool:?} would receive traffic in phase {phase:?} but is decommissioned: recommission it first"
    )]
    Decommissioned { phase: String, pool: String },
}

/// What the caller knows about each pool when a transition is checked.
pub trait PoolView {
    /// True if the pool has at least one healthy, enabled endpoint.
    fn healthy(&self, pool: usize) -> bool;
    /// True if the pool was decommissioned.
    fn decommissioned(&self, pool: usize) -> bool;
    /// The pool's name, for messages.
    fn name(&self, pool: usize) -> String;
}

/// What an operator asked for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Forward or back.
    pub direction: Direction,
    /// A named target phase, else the next / previous one.
    pub to: Option<&'a str>,
    /// Skip the health and hold checks (advance only).
    pub force: bool,
}

/// Resolves a requested transition to the index of the target phase.
///
/// `since` and `now` are Unix seconds: when the current phase was entered, and now.
pub fn transition(
    phases: &[Phase],
    current: usize,
    req: Request<'_>,
    since: u64,
    now: u64,
    pools: &dyn PoolView,
) -> Result<usize, PhaseError> {
    let Request {
        direction,
        to,
        force,
    } = req;
    let cur = &phases[current];
    let target = match to {
        Some(name) => {
            let idx = phases.iter().position(|p| p.name == name).ok_or_else(|| {
                PhaseError::UnknownPhase {
                    name: name.to_string(),
                    known: phases
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?;
            let forward = idx > current;
            let ok = match direction {
                Direction::Advance => forward,
                Direction::Rollback => idx < current,
            };
            if !ok {
                return Err(PhaseError::WrongDirection {
                    direction: match direction {
                        Direction::Advance => "advance",
                        Direction::Rollback => "roll back",
                    },
                    from: cur.name.clone(),
                    to: name.to_string(),
                    hint: if forward { "advance" } else { "rollback" },
                });
            }
            idx
        }
        None => match direction {
            Direction::Advance if current + 1 >= phases.len() => {
                return Err(PhaseError::AtLast(cur.name.clone()));
            }
            Direction::Advance => current + 1,
            Direction::Rollback if current == 0 => {
                return Err(PhaseError::AtFirst(cur.name.clone()));
            }
            Direction::Rollback => current - 1,
        },
    };
    // Never into a phase that weights a decommissioned pool, not even a
    // rollback or with force: DNS would not answer it, so the weights
    // printed would be a lie.
    let next = &phases[target];
    if let Some(pool) =
        (0..next.weights.len()).find(|&p| next.weights[p] > 0 && pools.decommissioned(p))
    {
        return Err(PhaseError::Decommissioned {
            phase: next.name.clone(),
            pool: pools.name(pool),
        });
    }
    if direction == Direction::Rollback || force {
        return Ok(target);
    }
    if let Some(hold) = cur.hold {
        let elapsed = now.saturating_sub(since);
        if elapsed < hold.as_secs() {
            return Err(PhaseError::HoldNotPassed {
                phase: cur.name.clone(),
                hold: humantime::format_duration(hold).to_string(),
                remaining: humantime::format_duration(Duration::from_secs(
                    hold.as_secs() - elapsed,
                ))
                .to_string(),
            });
        }
    }
    for (pool, &w) in next.weights.iter().enumerate() {
        if w == 0 {
            continue;
        }
        if !pools.healthy(pool) {
            return Err(PhaseError::NoHealthyTarget {
                phase: next.name.clone(),
                pool: pools.name(pool),
            });
        }
    }
    Ok(target)
}

/// The three classic phases for a service with pools `old` and `new` and no
/// `[[service.phase]]`: old only (the staging name serves new), 50/50, new only.
pub fn classic(old: usize, new: usize, pools: usize) -> Vec<Phase> {
    let weights = |o: u32, n: u32| {
        let mut w = vec![0; pools];
        w[old] = o;
        w[new] = n;
        w
    };
    vec![
        Phase {
            name: "separate-domain".into(),
            weights: weights(100, 0),
            hold: None,
            ttl: None,
        },
        Phase {
            name: "round-robin".into(),
            weights: weights(50, 50),
            hold: None,
            ttl: None,
        },
        Phase {
            name: "cutover".into(),
            weights: weights(0, 100),
            hold: None,
            ttl: None,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pools {
        healthy: [bool; 2],
        decommissioned: [bool; 2],
    }
    impl PoolView for Pools {
        fn healthy(&self, pool: usize) -> bool {
            self.healthy[pool]
        }
        fn decommissioned(&self, pool: usize) -> bool {
            self.decommissioned[pool]
        }
        fn name(&self, pool: usize) -> String {
            ["old", "new"][pool].to_string()
        }
    }

    fn phases() -> Vec<Phase> {
        let mut p = classic(0, 1, 2);
        p[1].hold = Some(Duration::from_secs(60));
        p
    }

    const ALL_UP: Pools = Pools {
        healthy: [true, true],
        decommissioned: [false, false],
    };
    const NEW_DOWN: Pools = Pools {
        healthy: [true, false],
        decommissioned: [false, false],
    };
    const OLD_GONE: Pools = Pools {
        healthy: [true, true],
        decommissioned: [true, false],
    };

    #[test]
    fn transitions_table() {
        use Direction::*;
        // (current, direction, to, force, elapsed secs, pools, expected target or error prefix)
        type Case<'a> = (
            usize,
            Direction,
            Option<&'a str>,
            bool,
            u64,
            &'a Pools,
            Result<usize, &'a str>,
        );
        let cases: Vec<Case> = vec![
            (0, Advance, None, false, 0, &ALL_UP, Ok(1)),
            (0, Advance, Some("cutover"), false, 0, &ALL_UP, Ok(2)),
            (
                2,
                Advance,
                None,
                false,
                0,
                &ALL_UP,
                Err("already in the last phase"),
            ),
            (
                0,
                Rollback,
                None,
                false,
                0,
                &ALL_UP,
                Err("already in the first phase"),
            ),
            (2, Rollback, None, false, 0, &NEW_DOWN, Ok(1)),
            (
                2,
                Rollback,
                Some("separate-domain"),
                false,
                0,
                &ALL_UP,
                Ok(0),
            ),
            (
                1,
                Advance,
                Some("separate-domain"),
                false,
                99,
                &ALL_UP,
                Err("cannot advance"),
            ),
            (
                1,
                Rollback,
                Some("cutover"),
                false,
                0,
                &ALL_UP,
                Err("cannot roll back"),
            ),
            (
                0,
                Advance,
                Some("nope"),
                false,
                0,
                &ALL_UP,
                Err("unknown phase"),
            ),
            (
                0,
                Advance,
                None,
                false,
                0,
                &NEW_DOWN,
                Err("pool \"new\" would receive"),
            ),
            (0, Advance, None, true, 0, &NEW_DOWN, Ok(1)),
            (
                1,
                Advance,
                None,
                false,
                59,
                &ALL_UP,
                Err("phase \"round-robin\" must be held"),
            ),
            (1, Advance, None, false, 60, &ALL_UP, Ok(2)),
            (1, Advance, None, true, 1, &ALL_UP, Ok(2)),
            (
                2,
                Rollback,
                None,
                false,
                0,
                &OLD_GONE,
                Err(
                    "pool \"old\" would receive traffic in phase \"round-robin\" but is decommissioned: recommission",
                ),
            ),
            (
                0,
                Advance,
                None,
                true,
                0,
                &OLD_GONE,
                Err(
                    "pool \"old\" would receive traffic in phase \"round-robin\" but is decommissioned",
                ),
            ),
            (
                0,
                Advance,
                None,
                false,
                0,
                &OLD_GONE,
                Err(
                    "pool \"old\" would receive traffic in phase \"round-robin\" but is decommissioned",
                ),
            ),
        ];
        for (cur, dir, to, force, elapsed, pools, want) in cases {
            let req = Request {
                direction: dir,
                to,
                force,
            };
            let got = transition(&phases(), cur, req, 1000, 1000 + elapsed, pools);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{cur} {dir:?} {to:?}"),
                (Err(e), Err(prefix)) => assert!(
                    e.to_string().starts_with(prefix),
                    "{cur} {dir:?} {to:?}: {e} does not start with {prefix}"
                ),
                (g, w) => panic!("{cur} {dir:?} {to:?}: got {g:?}, want {w:?}"),
            }
        }
    }
}
