//! `status` and `history`: what the operator reads, computed from the
//! zones, the state, health and the answer counters.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use super::{Operator, find_service};
use crate::answer::{self, Live, Role};
use crate::api::{
    EndpointStatus, EtcdStatus, FamilyShares, HistoryEntry, HistoryError, HistoryResponse,
    HostStatus, NotFound, PoolShare, PoolStatus, ServiceStatus, StatusResponse,
};
use crate::health::Status;
use crate::pool::EndpointKey;
use crate::state::State;
use crate::state::cluster::{EndpointHealth, HostReport, HostView, PoolAnswers, drain_holder};
use crate::state::journal::Query;
use crate::stats::PoolCounts;
use crate::sync::lock;
use crate::zone::Service;

impl Operator {
    /// `history` of one service, or of every service (`None`), oldest
    /// first: the most recent [`crate::state::journal::TAIL`] events, or
    /// every event kept (`all`). Read from the store's history, without
    /// the writer lock: commands never wait for it. Blocking (a file or
    /// etcd): call it from a blocking thread.
    pub fn history(
        &self,
        service: Option<&str>,
        all: bool,
    ) -> Result<HistoryResponse, HistoryError> {
        let key = match service {
            Some(s) => Some(find_service(&self.zones(), s)?.key()),
            None => None,
        };
        let events = self
            .store
            .history(&Query {
                service: key.clone(),
                all,
            })
            .map_err(|e| HistoryError::Unreadable(e.to_string()))?;
        Ok(HistoryResponse {
            events: events.into_iter().map(HistoryEntry::from).collect(),
            service: key,
        })
    }

    /// `status`.
    pub fn status(&self, service: Option<&str>) -> Result<StatusResponse, NotFound> {
        let zones = self.zones();
        let only = match service {
            Some(s) => Some(find_service(&zones, s)?.key()),
            None => None,
        };
        let state = self.state();
        let now = self.clock.now_ms();
        let health = self.health.all();
        let window = self.window.counts();
        let mut services = Vec::new();
        for s in zones.iter().flat_map(|z| &z.services) {
            if only.as_ref().is_none_or(|o| *o == s.key()) {
                services.push(self.service_status(s, &state, now, &health, &window));
            }
        }
        Ok(StatusResponse {
            now_ms: now,
            serial: self.plan.load().serial,
            zones: self.digest(),
            services,
            hosts: self.hosts_status(),
            etcd: self.etcd_status(),
            cookies: self.cookie_status(),
        })
    }

    /// Whether this host reaches etcd (`None` for a single host).
    pub fn etcd_status(&self) -> Option<EtcdStatus> {
        if !self.shared {
            return None;
        }
        let outage = self.store.outage();
        Some(EtcdStatus {
            reachable: outage.is_none(),
            unreachable_since_ms: outage.as_ref().map(|o| o.since_ms),
            error: outage.map(|o| o.error),
        })
    }

    /// Every host of the cluster (none for a single host); this host as it
    /// is now rather than as it last published.
    fn hosts_status(&self) -> Vec<HostStatus> {
        if !self.shared {
            return Vec::new();
        }
        let me = self.host_report(0);
        let live_known = self.store.outage().is_none();
        let mut hosts = self.store.hosts();
        match hosts.iter_mut().find(|h| h.report.node == self.node) {
            Some(h) => {
                h.live = true;
                h.report.applied_epoch = me.applied_epoch;
                h.report.from_local_copy = me.from_local_copy;
                h.report.endpoints = me.endpoints;
                h.report.zones = me.zones;
            }
            None => hosts.push(HostView {
                report: me,
                live: true,
            }),
        }
        hosts.sort_by(|a, b| a.report.node.cmp(&b.report.node));
        let judged: Vec<Option<&str>> = hosts
            .iter()
            .map(|h| h.report.zones.as_deref().filter(|_| h.live))
            .collect();
        let differ = zones_differ(&judged);
        hosts
            .into_iter()
            .zip(differ)
            .map(|(h, zones_differ)| HostStatus {
                epoch: h.report.applied_epoch,
                last_seen_ms: h.report.published_ms,
                live: h.live,
                live_known: live_known || h.report.node == self.node,
                node: h.report.node,
                from_local_copy: h.report.from_local_copy,
                endpoints: h.report.endpoints,
                zones: h.report.zones,
                zones_differ,
            })
            .collect()
    }

    /// The warning every command gives while live hosts serve different
    /// zones: names the hosts that differ and what they and the others serve.
    pub(super) fn zones_warning(&self) -> Option<String> {
        let hosts = self.hosts_status();
        let odd: Vec<String> = hosts
            .iter()
            .filter(|h| h.zones_differ)
            .map(|h| {
                format!(
                    "{} serves zones={}",
                    h.node,
                    h.zones.as_deref().unwrap_or("?")
                )
            })
            .collect();
        if odd.is_empty() {
            return None;
        }
        let rest: Vec<&str> = hosts
            .iter()
            .filter(|h| h.live && !h.zones_differ)
            .filter_map(|h| h.zones.as_deref())
            .collect();
        let others = match rest.first() {
            Some(d) => format!("unlike the other live hosts (zones={d})"),
            None => "and no zones digest is served by more live hosts than another".to_string(),
        };
        Some(format!(
            "hosts serve different zones: {} {others}; they may answer the same query differently: give every host the same zone files and reload",
            odd.join(", ")
        ))
    }

    /// What this host publishes about itself: the epoch it serves, per pool
    /// its last main-name answer and that answer's TTL, endpoint health.
    pub fn host_report(&self, lease_ttl_s: u64) -> HostReport {
        let zones = self.zones();
        let health = self.health.all();
        let mut pools = Vec::new();
        let mut endpoints = Vec::new();
        for s in zones.iter().flat_map(|z| &z.services) {
            let key = s.key();
            for p in &s.pools {
                let ps = self.stats.pool(&key, &p.name, s.max_ttl());
                pools.push(PoolAnswers {
                    service: key.clone(),
                    pool: p.name.clone(),
                    last_answered_ms: Some(ps.last_answered_ms.load(Ordering::Relaxed))
                        .filter(|&t| t > 0),
                    ttl_s: ps.last_ttl.load(Ordering::Relaxed),
                    answers: ps.main.load(Ordering::Relaxed),
                });
                for e in &p.endpoints {
                    let ek = EndpointKey::new(&key, &p.name, &e.id);
                    endpoints.push(EndpointHealth {
                        service: key.clone(),
                        pool: p.name.clone(),
                        endpoint: e.id.clone(),
                        healthy: health.get(&ek).is_none_or(|h| h.state.healthy),
                    });
                }
            }
        }
        HostReport {
            zones: Some(self.digest()),
            node: self.node.clone(),
            applied_epoch: lock(&self.state).1,
            published_ms: self.clock.now_ms(),
            lease_ttl_s,
            from_local_copy: self.store.serving_local_copy(),
            pools,
            endpoints,
        }
    }

    /// Status of one service, from the state, health and counters given.
    pub(super) fn service_status(
        &self,
        s: &Service,
        state: &State,
        now_ms: u64,
        health: &HashMap<EndpointKey, Status>,
        window: &PoolCounts,
    ) -> ServiceStatus {
        let key = s.key();
        let hosts = self.store.hosts();
        let st = state.service(&key);
        let phase = state.phase_of(s);
        let live = Live { state, health };
        let main = answer::decisions(s, &live, false);
        let staging = match s.staging {
            Some(_) => answer::decisions(s, &live, true),
            None => Vec::new(),
        };
        let hold_until_ms = s.phases[phase].hold.map(|hold| {
            (self.phase_since(st.since) * 1000).saturating_add(hold.as_millis() as u64)
        });
        let total: u64 = s
            .pools
            .iter()
            .map(|p| {
                window
                    .get(&(key.clone(), p.name.clone()))
                    .copied()
                    .unwrap_or(0)
            })
            .sum();
        let pools = s
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let weight = s.phases[phase].weights[i];
                let decommissioned = st.decommissioned.contains(&p.name);
                let roles: BTreeMap<String, Role> = main
                    .iter()
                    .filter(|(f, _)| *f == answer::Family::Other || f.covers(p))
                    .filter_map(|(f, d)| {
                        let role = d.pools[i].as_ref()?.role;
                        Some((f.label().to_string(), role))
                    })
                    .collect();
                let mut distinct = roles.values();
                let first = distinct.next().copied();
                let role = first.filter(|r| distinct.all(|x| x == r));
                let answered = roles.values().any(|r| r.answered());
                let ps = self.stats.pool(&key, &p.name, s.max_ttl());
                let last = ps.last_answered_ms.load(Ordering::Relaxed);
                let last_ttl = ps.last_ttl.load(Ordering::Relaxed);
                let ever = last > 0;
                // Over every host: a resolver may hold any host's answer.
                // A vanished host that sets the deadline is named.
                let (drained_at, drain_held_by) = if answered {
                    (None, None)
                } else {
                    let here = ps.expires_at_ms.load(Ordering::Relaxed);
                    match drain_holder(&hosts, &key, &p.name) {
                        Some((d, h)) if d > here => {
                            (Some(d), (!h.live).then(|| h.report.node.clone()))
                        }
                        _ => (Some(here), None),
                    }
                };
                let count = window
                    .get(&(key.clone(), p.name.clone()))
                    .copied()
                    .unwrap_or(0);
                PoolStatus {
                    pool: p.name.clone(),
                    weight,
                    decommissioned,
                    role,
                    roles,
                    answers_last_minute: count,
                    share_last_minute: if total > 0 {
                        count as f64 / total as f64
                    } else {
                        0.0
                    },
                    last_answered_ms: ever.then_some(last),
                    last_ttl: ever.then_some(last_ttl),
                    drained_at_ms: drained_at,
                    drain_held_by,
                    drained: drained_at.is_some_and(|d| d <= now_ms),
                    safe_to_decommission_after_ms: drained_at
                        .map(|d| d + s.drain_grace.as_millis() as u64),
                    endpoints: p
                        .endpoints
                        .iter()
                        .map(|e| {
                            let ek = EndpointKey::new(&key, &p.name, &e.id);
                            let h = health.get(&ek);
                            EndpointStatus {
                                endpoint: e.id.clone(),
                                healthy: h.is_none_or(|h| h.state.healthy),
                                checked: e.check.is_some(),
                                disabled: st.disabled.contains(&ek.in_service()),
                                since: h.map_or(0, |h| h.since),
                                last_check: h.and_then(|h| h.last.clone()),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        let last_change = st.last_change.clone();
        ServiceStatus {
            service: key,
            short: s.short.clone(),
            staging: s.staging.as_ref().map(|n| n.to_string()),
            phase: s.phases[phase].name.clone(),
            phases: s.phases.iter().map(|p| p.name.clone()).collect(),
            since: st.since,
            ttl: s.ttl_in(phase),
            hold_until_ms,
            fail_open: main.iter().any(|(_, d)| d.fail_open),
            staging_fail_open: staging.iter().any(|(_, d)| d.fail_open),
            servfail: main.iter().chain(&staging).any(|(_, d)| d.servfail),
            last_change,
            pools,
            shares: family_shares(s, &answer::shares(s, &live, false)),
            staging_pool: s
                .staging
                .as_ref()
                .map(|_| s.pools[s.staging_pool].name.clone()),
            staging_shares: match s.staging {
                Some(_) => family_shares(s, &answer::shares(s, &live, true)),
                None => BTreeMap::new(),
            },
            auto: self.auto_status(s, state, now_ms),
            assignment: s.assignment.label().to_string(),
            sticky_prefixes: match s.assignment {
                crate::zone::Assignment::Sticky => {
                    format!("/{} /{}", s.sticky.prefix_v4, s.sticky.prefix_v6)
                }
                crate::zone::Assignment::Random => String::new(),
            },
        }
    }
}

/// Which hosts serve zones that differ from the others': given each host's
/// zones digest (`None`: not judged, a host that is gone or predates the
/// digest), those outside the one digest most hosts serve; when no digest
/// is served by more hosts than every other, all of them (nothing says
/// which is right).
pub(super) fn zones_differ(digests: &[Option<&str>]) -> Vec<bool> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for d in digests.iter().flatten() {
        *counts.entry(d).or_default() += 1;
    }
    if counts.len() < 2 {
        return vec![false; digests.len()];
    }
    let top = counts.values().copied().max().unwrap_or(0);
    let leaders: Vec<&str> = counts
        .iter()
        .filter(|(_, n)| **n == top)
        .map(|(d, _)| *d)
        .collect();
    let majority = match leaders.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    digests
        .iter()
        .map(|d| d.is_some_and(|d| Some(d) != majority))
        .collect()
}

/// The protocol's form of [`answer::shares`].
fn family_shares(
    s: &Service,
    shares: &[(answer::Family, answer::Shares)],
) -> BTreeMap<String, FamilyShares> {
    shares
        .iter()
        .map(|(f, sh)| {
            let pools = s
                .pools
                .iter()
                .zip(&sh.pools)
                .filter(|(_, x)| **x > 0.0)
                .map(|(p, x)| PoolShare {
                    pool: p.name.clone(),
                    share: *x,
                })
                .collect();
            (
                f.label().to_string(),
                FamilyShares {
                    pools,
                    nodata: sh.nodata,
                    servfail: sh.servfail,
                },
            )
        })
        .collect()
}

/// Whether the change from `before` to `after` (one more disabled endpoint)
/// strands pool `pool` of `s`: it answers a name and record family with a
/// usable endpoint of that family before, and not after (the pool is no
/// longer answered, or answers that family NODATA). Returns that name and
/// family.
pub(super) fn stranded(
    s: &Service,
    pool: usize,
    before: &State,
    after: &State,
    health: &HashMap<EndpointKey, Status>,
) -> Option<String> {
    let serves = |state: &State, staging: bool, family: answer::Family| {
        let live = Live { state, health };
        let (weights, _, only) = answer::name_params(s, &live, staging);
        answer::decide(s, &weights, only, family, &live).pools[pool]
            .as_ref()
            .is_some_and(|p| {
                matches!(p.role, Role::Weighted | Role::StandbyAnswering) && !p.answer.is_empty()
            })
    };
    let names = [(false, &s.name)]
        .into_iter()
        .chain(s.staging.as_ref().map(|n| (true, n)));
    for (staging, name) in names {
        for family in answer::ADDRESS_FAMILIES {
            if serves(before, staging, family) && !serves(after, staging, family) {
                return Some(format!("{} for {name}", family.label()));
            }
        }
    }
    None
}

#[cfg(test)]
mod zones_tests {
    use super::zones_differ;

    #[test]
    fn the_hosts_outside_the_majority_differ_and_all_do_on_a_tie() {
        let (a, b) = (Some("aaaa"), Some("bbbb"));
        assert_eq!(zones_differ(&[a, a, a]), [false; 3]);
        assert_eq!(zones_differ(&[a, b, a]), [false, true, false]);
        assert_eq!(zones_differ(&[a, b]), [true, true], "a tie names both");
        // Gone hosts and hosts without a digest are not judged.
        assert_eq!(zones_differ(&[a, None, a]), [false; 3]);
        assert_eq!(zones_differ(&[a, None, b, b]), [true, false, false, false]);
        assert_eq!(zones_differ(&[]), Vec::<bool>::new());
    }
}
