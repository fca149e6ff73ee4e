//! The pool-role function: for one service, name and record family, which
//! pools answer and how ([`decide`]), from the phase's weights, overrides
//! and health. Pure; `status`, `metrics` and the plan builder all read it.

use super::*;

/// The record family a decision is made for: pools answer A queries from
/// their IPv4 endpoints and AAAA from their IPv6 ones, so which pools are
/// answered can differ between the two.
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
    /// The families whose decisions differ for a service: one for a
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
    /// Weight 0, answered because no weighted pool has a usable endpoint.
    StandbyAnswering,
    /// Answered although it has no usable endpoint: no pool has one, and
    /// the service fails open.
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
    /// picked (for a whole-pool pick, possibly none of the queried family).
    pub answer: Vec<usize>,
    /// Whether the pool has an endpoint that is enabled and healthy.
    pub usable: bool,
}

/// Which pools answer one name for one record family, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Per pool, in configuration order; `None` for a pool that has no
    /// endpoint of the family (or is not the staging pool, for the staging
    /// name).
    pub pools: Vec<Option<PoolDecision>>,
    /// No pool has a usable endpoint and the answer fails open.
    pub fail_open: bool,
    /// No pool has a usable endpoint and the service answers SERVFAIL.
    pub servfail: bool,
}

/// Whether a service is decided for whole pools: a CNAME is answered for
/// every type, so deciding per type would let the CNAME pool win every
/// query its rivals have no records for (AAAA, HTTPS, ...), and resolvers
/// would then follow that CNAME for all types. The chosen address pool
/// answers its records of the type, or NODATA.
pub(super) fn whole_pools(s: &Service) -> bool {
    s.pools.iter().any(|p| p.is_host())
}

/// Decides what every pool of a service does for one name and family:
/// the one place that turns weights, health and operator overrides into
/// answers. Pure.
///
/// An endpoint is *usable* when it is enabled and healthy. Tiers, the
/// first with a pool wins; within a tier the pools weighted above 0 are
/// picked by weight, and only when there are none the standby pools
/// (weight 0) in equal shares:
///
/// 1. pools with a usable endpoint, answering those;
/// 2. nothing usable: SERVFAIL if the service asks for it, else (fail open)
///    pools with an enabled endpoint, answering the enabled ones whatever
///    their health;
/// 3. not even an enabled endpoint: every endpoint, disabled ones too, so
///    that a shifted name never answers an empty NOERROR.
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
        /// Whether the pool qualifies for each tier.
        up: [bool; 3],
    }
    let whole = whole_pools(s);
    let mut pools: Vec<Option<PoolDecision>> = vec![None; s.pools.len()];
    let mut cands = Vec::new();
    for (i, pool) in s.pools.iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        let of_family: Vec<usize> = (0..pool.endpoints.len())
            .filter(|&e| family.matches(&pool.endpoints[e].target))
            .collect();
        if (whole && pool.endpoints.is_empty()) || (!whole && of_family.is_empty()) {
            continue;
        }
        let enabled = |e: &Endpoint| !inputs.disabled(s, pool, e);
        let usable = |e: &Endpoint| enabled(e) && inputs.healthy(s, pool, e);
        let pick = |f: &dyn Fn(&Endpoint) -> bool| -> Vec<usize> {
            of_family
                .iter()
                .copied()
                .filter(|&e| f(&pool.endpoints[e]))
                .collect()
        };
        let tiers = [pick(&usable), pick(&enabled), of_family.clone()];
        let any_usable = pool.endpoints.iter().any(usable);
        let up = if whole {
            [any_usable, pool.endpoints.iter().any(enabled), true]
        } else {
            [!tiers[0].is_empty(), !tiers[1].is_empty(), true]
        };
        if inputs.decommissioned(s, pool) {
            pools[i] = Some(PoolDecision {
                role: Role::Decommissioned,
                pick: 0,
                answer: Vec::new(),
                usable: any_usable,
            });
            continue;
        }
        pools[i] = Some(PoolDecision {
            role: Role::Standby,
            pick: 0,
            answer: Vec::new(),
            usable: any_usable,
        });
        cands.push(Cand {
            pool: i,
            weight: weights.get(i).copied().unwrap_or(0),
            tiers,
            up,
        });
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
pub(super) fn name_params(
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
