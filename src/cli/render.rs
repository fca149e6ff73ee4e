//! Human rendering of the operator protocol's answers: the status table
//! and the history list.

use std::collections::BTreeMap;

use crate::answer::{Role, percent};
use crate::api::{FamilyShares, HistoryResponse, StatusResponse};

fn ago(now_ms: u64, at_ms: u64) -> String {
    let secs = now_ms.saturating_sub(at_ms) / 1000;
    format!(
        "{} ago",
        humantime::format_duration(std::time::Duration::from_secs(secs))
    )
}

/// A Unix-ms time with how far it is from now: "2026-01-01T12:00:00Z (in 28s)".
fn when(now_ms: u64, at_ms: u64) -> String {
    let rel = if at_ms > now_ms {
        let secs = (at_ms - now_ms).div_ceil(1000);
        format!(
            "in {}",
            humantime::format_duration(std::time::Duration::from_secs(secs))
        )
    } else {
        ago(now_ms, at_ms)
    };
    format!("{} ({rel})", crate::clock::format_ms(at_ms))
}

/// The human-readable history, oldest first; with a SERVICE column when it
/// covers every service.
pub fn render_history(h: &HistoryResponse) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let all = h.service.is_none();
    let service_col = |s: &str| {
        if all {
            format!("{s:<28} ")
        } else {
            String::new()
        }
    };
    let _ = writeln!(
        o,
        "{:<22} {}{:<13} {:<18} {:<18} {:<6} {:<16} {:<16} REASON",
        "WHEN (UTC)",
        service_col("SERVICE"),
        "ACTION",
        "FROM",
        "TO",
        "FORCED",
        "BY",
        "ON"
    );
    for entry in &h.events {
        let e = &entry.event;
        let _ = writeln!(
            o,
            "{:<22} {}{:<13} {:<18} {:<18} {:<6} {:<16} {:<16} {}",
            crate::clock::format_ms(entry.at_ms),
            service_col(&e.service),
            e.change.action(),
            e.change.from().unwrap_or("-"),
            e.change.to(),
            if e.forced { "yes" } else { "" },
            e.actor.as_deref().unwrap_or("-"),
            e.node.as_deref().unwrap_or("-"),
            e.reason.as_deref().unwrap_or("")
        );
    }
    o
}

/// What a pool's role means, for the status table.
fn role_text(role: Role) -> &'static str {
    match role {
        Role::Weighted => "receiving its weight",
        Role::StandbyAnswering => "STANDBY ANSWERING: the weighted pools have no usable endpoint",
        Role::FailOpen => "FAIL-OPEN: answered though no endpoint is usable",
        Role::Standby => "standby",
        Role::Unusable => "not answered: no usable endpoint",
        Role::Servfail => "not answered: nothing usable, SERVFAIL",
        Role::Decommissioned => "decommissioned: never answered",
    }
}

/// What a name answers per record family: "A: old 90%, new 10%; AAAA:
/// new 10%, NODATA 90%".
fn shares_text(shares: &BTreeMap<String, FamilyShares>) -> String {
    shares
        .iter()
        .map(|(family, sh)| {
            let mut parts: Vec<String> = sh
                .pools
                .iter()
                .map(|p| format!("{} {}", p.pool, percent(p.share)))
                .collect();
            if sh.servfail {
                parts.push("SERVFAIL".into());
            } else if sh.nodata > 0.0 {
                parts.push(format!("NODATA {}", percent(sh.nodata)));
            }
            format!("{family}: {}", parts.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether a name answers nothing but NODATA, for every family.
fn answers_nothing(shares: &BTreeMap<String, FamilyShares>) -> bool {
    !shares.is_empty() && shares.values().all(|s| s.pools.is_empty() && !s.servfail)
}

/// The human-readable status table.
pub fn render_status(st: &StatusResponse) -> String {
    use std::fmt::Write;
    let fmt = crate::clock::format_ms;
    let mut o = String::new();
    if let Some(e) = st.etcd.as_ref().filter(|e| !e.reachable) {
        let since = e
            .unreachable_since_ms
            .map(|t| format!(" since {}", when(st.now_ms, t)))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "ETCD UNREACHABLE{since}: serving the last applied state; other hosts' liveness is unknown; commands will fail"
        );
        if let Some(err) = &e.error {
            let _ = writeln!(o, "  {err}");
        }
        let _ = writeln!(o);
    }
    for s in &st.services {
        let _ = writeln!(o, "{}", s.service);
        if s.assignment == "sticky" {
            let _ = writeln!(
                o,
                "  assignment  sticky: each client network keeps its pool (ECS prefix, else the resolver's {})",
                s.sticky_prefixes
            );
        }
        if s.fail_open {
            let _ = writeln!(
                o,
                "  FAIL-OPEN  no endpoint is usable, so all of them are answered as if they were healthy"
            );
        }
        if s.servfail {
            let _ = writeln!(
                o,
                "  SERVFAIL   no endpoint is usable (on_all_down = \"servfail\")"
            );
        }
        if let Some(stg) = &s.staging {
            let mark = if answers_nothing(&s.staging_shares) {
                "  ANSWERS NOTHING: its pool is decommissioned (empty NOERROR, cached by resolvers)"
            } else if s.staging_fail_open {
                "  FAIL-OPEN: no endpoint is usable, so all of them are answered as if they were healthy"
            } else {
                ""
            };
            let pool = s
                .staging_pool
                .as_ref()
                .map(|p| format!(" (pool {p})"))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  staging  {stg}{pool}  {}{mark}",
                shares_text(&s.staging_shares)
            );
        }
        let phases = s
            .phases
            .iter()
            .map(|p| {
                if *p == s.phase {
                    format!("[{p}]")
                } else {
                    p.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" > ");
        let since = if s.since > 0 {
            format!(", since {}", when(st.now_ms, s.since * 1000))
        } else {
            " (initial phase, never changed)".to_string()
        };
        let _ = writeln!(o, "  phase    {}{since}  ttl {}s", s.phase, s.ttl);
        let _ = writeln!(o, "  phases   {phases}");
        if let Some(until) = s.hold_until_ms {
            let left = if until > st.now_ms {
                format!(
                    "{} left, until {}",
                    humantime::format_duration(std::time::Duration::from_secs(
                        (until - st.now_ms).div_ceil(1000)
                    )),
                    fmt(until)
                )
            } else {
                format!("passed at {}", fmt(until))
            };
            let _ = writeln!(o, "  hold     {left}");
        }
        o.push_str(&auto_text(&s.auto));
        if !s.shares.is_empty() {
            let _ = writeln!(o, "  answers  {}", shares_text(&s.shares));
        }
        let _ = writeln!(
            o,
            "  {:<10} {:>6}  {:>16}  STATE",
            "POOL", "WEIGHT", "SERVED (1 MIN)"
        );
        for p in &s.pools {
            let role = match p.role {
                Some(r) => role_text(r).to_string(),
                None => p
                    .roles
                    .iter()
                    .map(|(family, r)| format!("{family}: {}", role_text(*r)))
                    .collect::<Vec<_>>()
                    .join("; "),
            };
            // A pool without weight in the first phase waits for a later
            // phase: it is not being retired, so nothing here suggests
            // decommissioning it.
            let waiting = p.weight == 0 && s.phases.first() == Some(&s.phase);
            let state = match (
                p.decommissioned,
                p.drained_at_ms,
                p.safe_to_decommission_after_ms,
            ) {
                (true, _, _) | (_, None, _) => role,
                (false, Some(_), _) if waiting && p.last_answered_ms.is_none() => role,
                (false, Some(d), _) if waiting && p.drained => {
                    format!("{role}, drained at {}", fmt(d))
                }
                (false, Some(d), Some(safe)) if p.drained => format!(
                    "{role}, drained at {}; safe to decommission after {}",
                    fmt(d),
                    when(st.now_ms, safe)
                ),
                (false, Some(d), _) => format!(
                    "{role}, draining: caches may hold it until {}{}",
                    when(st.now_ms, d),
                    p.drain_held_by
                        .as_ref()
                        .map(|h| format!(" (set by GONE host {h}'s last answers)"))
                        .unwrap_or_default()
                ),
            };
            let served = format!(
                "{:.1}% ({})",
                p.share_last_minute * 100.0,
                p.answers_last_minute
            );
            let _ = writeln!(
                o,
                "  {:<10} {:>6}  {:>16}  {state}",
                p.pool, p.weight, served
            );
        }
        let _ = writeln!(
            o,
            "  {:<28} {:<10} {:<10} {:<9} LAST CHECK",
            "ENDPOINT", "POOL", "HEALTH", "OVERRIDE"
        );
        for p in &s.pools {
            for e in &p.endpoints {
                let health = match (e.checked, e.healthy) {
                    (false, _) => "unchecked",
                    (true, true) => "healthy",
                    (true, false) => "DOWN",
                };
                let over = if e.disabled { "disabled" } else { "-" };
                let last = e
                    .last_check
                    .as_ref()
                    .map(|c| {
                        format!(
                            "{} ({} ms) {}",
                            c.detail,
                            c.duration_ms,
                            ago(st.now_ms, c.at_ms)
                        )
                    })
                    .unwrap_or_else(|| "-".into());
                let _ = writeln!(
                    o,
                    "  {:<28} {:<10} {:<10} {over:<9} {last}",
                    e.endpoint, p.pool, health
                );
            }
        }
        if let Some(e) = &s.last_change {
            let _ = writeln!(
                o,
                "  last change  {} {} by {} on {}, {}",
                e.change.action(),
                e.change.to(),
                e.actor.as_deref().unwrap_or("(unknown)"),
                e.node.as_deref().unwrap_or("(unknown host)"),
                when(st.now_ms, e.at * 1000)
            );
        }
        let _ = writeln!(o);
    }
    if !st.hosts.is_empty() {
        let _ = writeln!(o, "hosts (shared state on etcd)");
        let _ = writeln!(
            o,
            "  {:<20} {:>10}  {:<8} {:<24} LAST SEEN",
            "NODE", "EPOCH", "STATE", "ZONES"
        );
        for h in &st.hosts {
            let state = match (h.live_known, h.live) {
                (false, _) => "unknown",
                (true, true) => "live",
                (true, false) => "GONE",
            };
            let copy = if h.from_local_copy {
                "  serving its local copy: etcd was unreachable when it started"
            } else {
                ""
            };
            let zones = match (&h.zones, h.zones_differ) {
                (Some(z), true) => format!("{z} DIFFERS"),
                (Some(z), false) => z.clone(),
                (None, _) => "-".into(),
            };
            let _ = writeln!(
                o,
                "  {:<20} {:>10}  {state:<8} {zones:<24} {}{copy}",
                h.node,
                h.epoch,
                ago(st.now_ms, h.last_seen_ms)
            );
        }
        if st.hosts.iter().any(|h| h.zones_differ) {
            let _ = writeln!(
                o,
                "  a host whose zones DIFFER from the others' may answer differently under the same SOA serial: give every host the same zone files and reload"
            );
        }
        if st.hosts.iter().any(|h| h.live_known && !h.live) {
            let _ = writeln!(
                o,
                "  a GONE host may have answered until its lease expired: drain deadlines count it until its last report + lease TTL + its longest TTL"
            );
        }
    }
    if let Some(c) = &st.cookies {
        let _ = writeln!(o, "{}", render_cookies(st.now_ms, c));
    }
    o
}

/// One line on the DNS cookie secret: its source, age and next rotation
/// (`status`, `cookies rotate`).
pub fn render_cookies(now_ms: u64, c: &crate::api::CookieStatus) -> String {
    let made = c
        .made_ms
        .map(|m| format!(", made {}", when(now_ms, m)))
        .unwrap_or_default();
    let next = match c.next_rotation_ms {
        Some(n) => format!(", next rotation {}", when(now_ms, n)),
        None => ", rotated by hand".into(),
    };
    let previous = if c.previous {
        ", previous secret accepted"
    } else {
        ""
    };
    format!("cookie secret: {}{made}{next}{previous}", c.source)
}

/// The `auto` lines of a service in `status`: nothing while automation
/// was never started.
fn auto_text(a: &crate::api::AutoStatus) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    if a.state == "off" {
        return o;
    }
    let why = if a.why.is_empty() {
        String::new()
    } else {
        format!(": {}", a.why)
    };
    let _ = writeln!(o, "  auto     {}{why}", a.state.to_uppercase());
    if matches!(a.state.as_str(), "running" | "holding") {
        let needs = match (a.passes_needed, a.min_time_s) {
            (Some(p), Some(t)) => format!(" of {p} needed, min time {t}s"),
            _ => " (manual gate)".into(),
        };
        let _ = writeln!(
            o,
            "           in phase {}s, settle left {}s, next evaluation in {}s; passes {}{needs}, failures {}, errors {}, inconclusive {}",
            a.in_phase_s,
            a.settle_left_s,
            a.next_eval_s,
            a.passes,
            a.failures,
            a.errors,
            a.inconclusive
        );
    }
    if let Some(origin) = &a.origin {
        let _ = writeln!(o, "           a failure rolls back to {origin:?}");
    }
    for c in &a.checks {
        let _ = writeln!(o, "           {}", check_line(c));
    }
    o
}

/// One check: name, value, rule, verdict and why.
fn check_line(c: &crate::api::CheckStatus) -> String {
    let value = c.value.map_or("none".to_string(), |v| format!("{v}"));
    let detail = if c.detail.is_empty() {
        String::new()
    } else {
        format!(" ({})", c.detail)
    };
    format!(
        "{:<12} {:<13} value {value}  rule {}{detail}",
        c.name,
        c.verdict.to_uppercase(),
        c.rule
    )
}

/// `analysis SERVICE`: every check's resolved query, value, rule and verdict.
pub fn render_analysis(r: &crate::api::AnalysisResponse) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{}  pool {} in phase {}  provider {}",
        r.service, r.pool, r.phase, r.provider
    );
    for c in &r.checks {
        let _ = writeln!(o, "  {}", check_line(c));
        let _ = writeln!(o, "    query: {}", c.query);
    }
    let _ = writeln!(o, "verdict: {}", r.verdict);
    o
}
