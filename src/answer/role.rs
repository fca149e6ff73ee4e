//! The pool-role function: for one service, name and record family, which
//! pools answer and how ([`decide`]), from the phase's weights, overrides
//! and health; and what that makes of each family's answers ([`Shares`]).
//! Pure; `status`, `metrics`, `check`, `advance` and the plan builder all
//! read it.

use super::*;

/// The record family a decision is made for: pools answer A queries from
/// their IPv4 endpoints and AAAA from their IPv6 ones. Which pools are
/// answered is the same for every family (see [`decide`]); what a drawn
/// pool answers is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// A queries (and ANY).
    V4,
    /// AAAA queries.
    V6,
    /// Every other type; also every type for a service with a host-name
    /// pool, which is decided for whole pools (see [`decide`]).
    Other,
}

impl Family {
    /// The families whose roles `status` shows for a service: one for a
    /// service with a host-name pool, A and AAAA otherwise.
    pub fn of(s: &Service) -> &'static [Family] {
        if whole_pools(s) {
            &[Family::Other]
        } else {
            &[Family::V4, Family::V6]
        }
    }

    /// The label operators see ("A", "AAAA", "*").
    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "A",
            Family::V6 => "AAAA",
            Family::Other => "*",
        }
    }

    /// Whether `pool` has an endpoint answered for this family.
    pub fn covers(self, pool: &Pool) -> bool {
        pool.endpoints.iter().any(|e| self.matches(&e.target))
    }

    fn matches(self, target: &Target) -> bool {
        matches!(
            (target, self),
            (Target::Host(_), _) | (Target::V4(_), Family::V4) | (Target::V6(_), Family::V6)
        )
    }
}

/// What a pool is doing right now for one name and record family. The
/// answer plan is built from it and `status` shows it, so what operators
/// see is what DNS does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Answered in proportion to its weight in the current phase.
    Weighted,
    /// Weight 0, answered because no weighted pool has a usable endpoint
    /// (of any family).
    StandbyAnswering,
    /// Answered although it has no usable endpoint: no pool has one (of
    /// any family), and the service fails open.
    FailOpen,
    /// Weight 0 and not answered: a weighted pool is usable.
    Standby,
    /// Weighted but not answered: it has no usable endpoint while another
    /// pool has.
    Unusable,
    /// Not answered: no pool has a usable endpoint and the service answers
    /// SERVFAIL (`on_all_down = "servfail"`).
    Servfail,
    /// Decommissioned by the operator: never answered.
    Decommissioned,
}

impl Role {
    /// Whether queries are answered with this pool.
    pub fn answered(self) -> bool {
        matches!(
            self,
            Role::Weighted | Role::StandbyAnswering | Role::FailOpen
        )
    }
}

/// One pool's part in a [`Decision`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDecision {
    /// What the pool is doing.
    pub role: Role,
    /// Weight by which the pool is picked among the answered ones (0 when
    /// it is not answered; standby pools share equally).
    pub pick: u32,
    /// Indexes into the pool's endpoints of those answered when it is
    /// picked: of the queried family, so possibly none (NODATA).
    pub answer: Vec<usize>,
    /// Whether the pool has an endpoint that is enabled and healthy.
    pub usable: bool,
    /// Whether the pool has an endpoint of the family at all (usable or
    /// not): a NODATA for lack of one depends on the phase, not the pool.
    pub of_family: bool,
}

/// Which pools answer one name for one record family, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Per pool, in configuration order; `None` for a pool without
    /// endpoints, or that is not the staging pool, for the staging name.
    pub pools: Vec<Option<PoolDecision>>,
    /// No pool has a usable endpoint and the answer fails open.
    pub fail_open: bool,
    /// No pool has a usable endpoint and the service answers SERVFAIL.
    pub servfail: bool,
}

/// Whether a service has a host-name pool. A CNAME is answered for every
/// type, so such a service's roles are shown for every type at once
/// (`*`); its answers are decided per name like every service's.
pub(super) fn whole_pools(s: &Service) -> bool {
    s.pools.iter().any(|p| p.is_host())
}

/// Decides what every pool of a service does for one name and family:
/// the one place that turns weights, health and operator overrides into
/// answers. Pure.
///
/// Weights govern the *name*, not each record family: which pools are
/// answered is decided from every endpoint a pool has, whatever the
/// family, so A and AAAA queries draw pools with the same probabilities.
/// The drawn pool then answers its endpoints of the queried family, or
/// NODATA when it has none (the client falls back to the other family and
/// stays with that pool). A pool with weight 0 is a standby for the name
/// as a whole: answered, for any family, only when no weighted pool has a
/// usable endpoint of any family.
///
/// An endpoint is *usable* when it is enabled and healthy. Tiers, the
/// first with a pool wins; within a tier the pools weighted above 0 are
/// picked by weight, and only when there are none the standby pools
/// (weight 0) in equal shares:
///
/// 1. pools with a usable endpoint, answering those of the family;
/// 2. nothing usable: SERVFAIL if the service asks for it, else (fail open)
///    pools with an enabled endpoint, answering the enabled ones of the
///    family whatever their health;
/// 3. not even an enabled endpoint: every endpoint of the family, disabled
///    ones too, so that a shifted name never answers an empty NOERROR for
///    every family.
///
/// Decommissioned pools are never answered. `only` restricts the decision
/// to one pool (the staging name).
pub fn decide(
    s: &Service,
    weights: &[u32],
    only: Option<usize>,
    family: Family,
    inputs: &dyn Inputs,
) -> Decision {
    struct Cand {
        pool: usize,
        weight: u32,
        /// Endpoint indexes of the family per tier: usable, enabled, all.
        tiers: [Vec<usize>; 3],
        /// Whether the pool qualifies for each tier (any family).
        up: [bool; 3],
    }
    let mut pools: Vec<Option<PoolDecision>> = vec![None; s.pools.len()];
    let mut cands = Vec::new();
    for (i, pool) in s.pools.iter().enumerate() {
        if only.is_some_and(|o| o != i) || pool.endpoints.is_empty() {
            continue;
        }
        let enabled = |e: &Endpoint| !inputs.disabled(s, pool, e);
        let usable = |e: &Endpoint| enabled(e) && inputs.healthy(s, pool, e);
        let pick = |f: &dyn Fn(&Endpoint) -> bool| -> Vec<usize> {
            (0..pool.endpoints.len())
                .filter(|&e| {
                    let ep = &pool.endpoints[e];
                    family.matches(&ep.target) && f(ep)
                })
                .collect()
        };
        let tiers = [pick(&usable), pick(&enabled), pick(&|_| true)];
        let any_usable = pool.endpoints.iter().any(usable);
        let up = [any_usable, pool.endpoints.iter().any(enabled), true];
        let role = if inputs.decommissioned(s, pool) {
            Role::Decommissioned
        } else {
            Role::Standby
        };
        pools[i] = Some(PoolDecision {
            role,
            pick: 0,
            answer: Vec::new(),
            usable: any_usable,
            of_family: !tiers[2].is_empty(),
        });
        if role != Role::Decommissioned {
            cands.push(Cand {
                pool: i,
                weight: weights.get(i).copied().unwrap_or(0),
                tiers,
                up,
            });
        }
    }
    let mut decision = Decision {
        pools,
        fail_open: false,
        servfail: false,
    };
    if cands.is_empty() {
        return decision;
    }
    for tier in 0..3 {
        if tier == 1 && s.on_all_down == OnAllDown::Servfail {
            decision.servfail = true;
            for c in &cands {
                if let Some(p) = &mut decision.pools[c.pool] {
                    p.role = Role::Servfail;
                }
            }
            return decision;
        }
        let weighted = cands.iter().any(|c| c.up[tier] && c.weight > 0);
        let chosen = |c: &Cand| c.up[tier] && (c.weight > 0) == weighted;
        if !cands.iter().any(chosen) {
            continue;
        }
        decision.fail_open = tier > 0;
        for c in &cands {
            let Some(p) = &mut decision.pools[c.pool] else {
                continue;
            };
            if chosen(c) {
                p.role = match (tier, c.weight) {
                    (0, 0) => Role::StandbyAnswering,
                    (0, _) => Role::Weighted,
                    _ => Role::FailOpen,
                };
                p.pick = if weighted { c.weight } else { 1 };
                p.answer = c.tiers[tier].clone();
            } else if c.weight > 0 {
                p.role = Role::Unusable;
            }
        }
        return decision;
    }
    decision
}

/// The weights, TTL and pool restriction a service's main name (or its
/// staging name) answers with in the current phase.
pub fn name_params(
    s: &Service,
    inputs: &dyn Inputs,
    staging: bool,
) -> (Vec<u32>, u32, Option<usize>) {
    if staging {
        let mut w = vec![0; s.pools.len()];
        w[s.staging_pool] = 1;
        (w, s.ttl, Some(s.staging_pool))
    } else {
        let phase = inputs.phase(s).min(s.phases.len().saturating_sub(1));
        (s.phases[phase].weights.clone(), s.ttl_in(phase), None)
    }
}

/// The decisions for a service's main name (or its staging name) in the
/// current phase, one per family of [`Family::of`]: what `status` shows.
pub fn decisions(s: &Service, inputs: &dyn Inputs, staging: bool) -> Vec<(Family, Decision)> {
    let (weights, _, only) = name_params(s, inputs, staging);
    Family::of(s)
        .iter()
        .map(|&f| (f, decide(s, &weights, only, f, inputs)))
        .collect()
}

/// Whether pool `pool` answers the name of `decisions` (any family).
pub fn answered(decisions: &[(Family, Decision)], pool: usize) -> bool {
    decisions
        .iter()
        .any(|(_, d)| d.pools[pool].as_ref().is_some_and(|p| p.role.answered()))
}

/// What one name answers for one record family, as shares of its queries:
/// the arithmetic of a [`Decision`], which `status`, `check` and `advance`
/// show.
#[derive(Debug, Clone, PartialEq)]
pub struct Shares {
    /// Per pool, in configuration order: the share of the queries answered
    /// with its records (0 for a pool not answered, or answered with
    /// nothing of the family).
    pub pools: Vec<f64>,
    /// The share answered NODATA: the drawn pool has no record of the
    /// family (1 when no pool is answered at all).
    pub nodata: f64,
    /// The name answers SERVFAIL.
    pub servfail: bool,
}

impl Shares {
    /// The shares a decision answers with: the draw is among the answered
    /// pools by `pick`, exactly as the plan draws.
    pub fn of(d: &Decision) -> Shares {
        let mut shares = Shares {
            pools: vec![0.0; d.pools.len()],
            nodata: 0.0,
            servfail: d.servfail,
        };
        if d.servfail {
            return shares;
        }
        let answered = || {
            d.pools
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().filter(|p| p.role.answered()).map(|p| (i, p)))
        };
        let total: u64 = answered().map(|(_, p)| u64::from(p.pick)).sum();
        if total == 0 || answered().all(|(_, p)| p.answer.is_empty()) {
            shares.nodata = 1.0;
            return shares;
        }
        for (i, p) in answered() {
            let share = f64::from(p.pick) / total as f64;
            if p.answer.is_empty() {
                shares.nodata += share;
            } else {
                shares.pools[i] = share;
            }
        }
        shares
    }
}

/// The families whose answers [`shares`] reports: A and AAAA, for every
/// service (a host-name pool answers its CNAME for both).
pub const ADDRESS_FAMILIES: [Family; 2] = [Family::V4, Family::V6];

/// What a service's main name (or its staging name) answers now for A and
/// for AAAA, as shares of each family's queries.
pub fn shares(s: &Service, inputs: &dyn Inputs, staging: bool) -> Vec<(Family, Shares)> {
    let (weights, _, only) = name_params(s, inputs, staging);
    ADDRESS_FAMILIES
        .iter()
        .map(|&f| (f, Shares::of(&decide(s, &weights, only, f, inputs))))
        .collect()
}

/// A share as operators read it: "10%", "12.5%".
pub fn percent(share: f64) -> String {
    let p = share * 100.0;
    if (p - p.round()).abs() < 0.05 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// When the pools that phase `phase` of `s` weights differ in address
/// families: what that does to the answers with every endpoint usable, and
/// what IPv6-preferring (dual-stack) clients therefore see. `check` and
/// `advance` print it; `None` when the weighted pools agree.
pub fn family_warning(s: &Service, phase: usize) -> Option<String> {
    let weights = &s.phases[phase].weights;
    let families = |p: &Pool| (Family::V4.covers(p), Family::V6.covers(p));
    let weighted: Vec<usize> = (0..s.pools.len())
        .filter(|&i| weights.get(i).is_some_and(|&w| w > 0))
        .collect();
    let first = families(&s.pools[*weighted.first()?]);
    if weighted.iter().all(|&i| families(&s.pools[i]) == first) {
        return None;
    }
    let [a, aaaa] = ADDRESS_FAMILIES.map(|f| Shares::of(&decide(s, weights, None, f, &ConfigOnly)));
    let list = |shares: &mut dyn Iterator<Item = (usize, f64)>, nodata: f64| {
        let mut parts: Vec<String> = shares
            .filter(|(_, x)| *x > 0.0)
            .map(|(i, x)| format!("{} {}", s.pools[i].name, percent(x)))
            .collect();
        if nodata > 0.0 {
            parts.push(format!("NODATA {}", percent(nodata)));
        }
        parts.join(", ")
    };
    let kinds = weighted
        .iter()
        .map(|&i| {
            let p = &s.pools[i];
            let kind = match families(p) {
                _ if p.is_host() => "a host name",
                (true, true) => "IPv4 and IPv6",
                (true, false) => "IPv4 only",
                _ => "IPv6 only",
            };
            format!("{}: {kind}", p.name)
        })
        .collect::<Vec<_>>()
        .join(", ");
    // An IPv6-preferring client asks AAAA and A, each drawn on its own,
    // and uses AAAA's pool unless that answer is NODATA.
    let mut reach = (0..s.pools.len()).map(|i| (i, aaaa.pools[i] + aaaa.nodata * a.pools[i]));
    let nothing = aaaa.nodata * a.nodata;
    let none = if nothing > 0.0 {
        format!(", and {} get no address at all", percent(nothing))
    } else {
        String::new()
    };
    Some(format!(
        "phase {:?} weights pools of different address families ({kinds}): A answers {}; AAAA answers {}; A and AAAA are drawn independently, so IPv6-preferring clients reach {}{none} (see the README's \"Phases, weights and health\")",
        s.phases[phase].name,
        list(&mut a.pools.iter().copied().enumerate(), a.nodata),
        list(&mut aaaa.pools.iter().copied().enumerate(), aaaa.nodata),
        list(&mut reach, 0.0),
    ))
}
