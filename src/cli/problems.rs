//! `status --check`: what in a status needs a person, one line each, for a
//! Nagios-style monitor or a CI step. Pure: a [`StatusResponse`] in, lines
//! out; an empty list means every service is answered normally and every
//! host is in sync.

use crate::answer::Role;
use crate::api::{SecretSource, ServiceStatus, StatusResponse};
use crate::clock::format_ms;

/// Every problem in `st`: etcd and this host's cookie secret first, then
/// each service, then the hosts.
pub fn problems(st: &StatusResponse) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(e) = st.etcd.as_ref().filter(|e| !e.reachable) {
        let since = e
            .unreachable_since_ms
            .map(|t| format!(" since {}", format_ms(t)))
            .unwrap_or_default();
        let why = e
            .error
            .as_deref()
            .map(|w| format!(": {w}"))
            .unwrap_or_default();
        out.push(format!(
            "etcd unreachable{since}{why} (this host serves its last applied state; commands fail)"
        ));
    }
    // A cluster host whose cookie secret is its own: the other hosts
    // reject the server cookies it gives, and it theirs. (A local copy is
    // the cluster's secret as last read, so not a problem of its own.)
    if st.etcd.is_some()
        && st
            .cookies
            .as_ref()
            .is_some_and(|c| c.source == SecretSource::Random)
    {
        out.push(
            "DNS cookies: this host uses a random secret of its own, not the cluster's (it has not read it from etcd since it started): the other hosts reject the server cookies it gives, and it theirs"
                .to_string(),
        );
    }
    for s in &st.services {
        service_problems(s, &mut out);
    }
    hosts_problems(st, &mut out);
    out
}

fn service_problems(s: &ServiceStatus, out: &mut Vec<String>) {
    let name = &s.service;
    if s.fail_open {
        out.push(format!(
            "{name}: fail-open: no endpoint is usable, so all of them are answered"
        ));
    }
    if s.servfail {
        out.push(format!(
            "{name}: SERVFAIL: no endpoint is usable (on_all_down = \"servfail\")"
        ));
    }
    if s.staging_fail_open
        && let Some(stg) = &s.staging
    {
        out.push(format!(
            "{name}: staging name {stg} is fail-open: no endpoint of its pool is usable"
        ));
    }
    for p in &s.pools {
        for e in p.endpoints.iter().filter(|e| !e.healthy && !e.disabled) {
            let why = e
                .last_check
                .as_ref()
                .map(|c| format!(": {}", c.detail))
                .unwrap_or_default();
            let since = if e.since > 0 {
                format!(" since {}", format_ms(e.since * 1000))
            } else {
                String::new()
            };
            out.push(format!(
                "{name}: pool {} endpoint {} is down{since}{why}",
                p.pool, e.endpoint
            ));
        }
        if p.role == Some(Role::Unusable) {
            let drained = match p.drained_at_ms {
                Some(t) if p.drained => format!(
                    "; drain overdue: unanswered since its drain deadline {}",
                    format_ms(t)
                ),
                _ => String::new(),
            };
            out.push(format!(
                "{name}: pool {} has weight {} in phase {} but no usable endpoint, so its share goes to the other pools{drained}",
                p.pool, p.weight, s.phase
            ));
        }
    }
}

fn hosts_problems(st: &StatusResponse, out: &mut Vec<String>) {
    let newest = st.hosts.iter().filter(|h| h.live).map(|h| h.epoch).max();
    for h in &st.hosts {
        if !h.live_known {
            out.push(format!(
                "host {}: liveness unknown (etcd unreachable)",
                h.node
            ));
        } else if !h.live {
            out.push(format!(
                "host {}: gone (last seen {})",
                h.node,
                format_ms(h.last_seen_ms)
            ));
        } else if let Some(max) = newest.filter(|&m| h.epoch < m) {
            out.push(format!(
                "host {}: lags: serves epoch {} of {max}",
                h.node, h.epoch
            ));
        }
        if h.zones_differ {
            out.push(format!(
                "host {}: serves different zones (zones={}) than the other hosts",
                h.node,
                h.zones.as_deref().unwrap_or("?")
            ));
        }
    }
}
