//! The page's HTML (maud): the login form, the confirmation step, and the
//! page itself, whose live part (`<main id="live">`) the event stream
//! replaces. Everything shown comes from `status` and `history`; no rule
//! is decided here.

use std::collections::HashMap;
use std::sync::Arc;

use maud::{DOCTYPE, Markup, html};

use super::{ActionForm, Flash, Ui, chart};
use crate::api::{HistoryEntry, PoolStatus, ServiceStatus, StatusResponse};
use crate::config::ui::UiMode;
use crate::health::Status;
use crate::operator::ui::HostAnswers;
use crate::pool::EndpointKey;
use crate::stats::series::ServiceSeries;
use crate::zone::{Service, Zone};

/// History entries shown per service.
const HISTORY_SHOWN: usize = 20;

/// Everything one rendering reads, taken at one moment.
pub(super) struct View {
    status: StatusResponse,
    /// Every service's history, newest first.
    history: Vec<HistoryEntry>,
    zones: Arc<Vec<Zone>>,
    health: HashMap<EndpointKey, Status>,
    series: HashMap<String, ServiceSeries>,
    others: Vec<HostAnswers>,
    /// Per service, its `auto` object in `status --json`, if the daemon has one.
    auto: HashMap<String, serde_json::Value>,
    mode: UiMode,
    /// The session's CSRF token; `None` in a rendering for the event stream
    /// (the script fills the forms from the page's meta tag).
    csrf: Option<String>,
}

impl View {
    /// Reads status, history, health and the series now.
    pub(super) fn gather(ui: &Ui, csrf: Option<&str>) -> Result<View, String> {
        let status = ui.op.status(None).map_err(|e| e.to_string())?;
        let mut history = ui.op.history(None).map_err(|e| e.to_string())?.events;
        history.reverse();
        let auto = status
            .services
            .iter()
            .filter_map(|s| {
                let v = serde_json::to_value(s).ok()?;
                Some((s.service.clone(), v.get("auto")?.clone()))
            })
            .collect();
        let series = status
            .services
            .iter()
            .map(|s| (s.service.clone(), ui.series.get(&s.service)))
            .collect();
        Ok(View {
            history,
            zones: ui.op.zones(),
            health: ui.op.health.all(),
            series,
            others: ui.op.other_hosts_answers(),
            auto,
            mode: ui.settings.mode,
            csrf: csrf.map(str::to_string),
            status,
        })
    }

    fn service(&self, key: &str) -> Option<&Service> {
        self.zones
            .iter()
            .flat_map(|z| &z.services)
            .find(|s| s.key() == key)
    }
}

/// A whole document around `body`.
fn document(title: &str, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(c) = csrf { meta name="csrf" content=(c); }
                title { (title) }
                link rel="stylesheet" href="/ui/assets/ui.css";
                script src="/ui/assets/ui.js" defer {}
            }
            body { (body) }
        }
    }
}

/// The login form (with an error, after a wrong token).
pub(super) fn login(error: Option<&str>) -> Markup {
    document(
        "dnsshift: log in",
        None,
        html! {
            main.login {
                h1 { "dnsshift status" }
                @if let Some(e) = error { p.flash.bad role="alert" { "✖ " (e) } }
                form method="post" action="/ui/login" {
                    label for="token" { "Control token" }
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                    label for="name" { "Your name (recorded in history)" }
                    input #name type="text" name="name" maxlength="64" autocomplete="username";
                    button type="submit" { "Log in" }
                }
                p.hint { "The token is in the control token file (state/control.token by default)." }
            }
        },
    )
}

/// What an action will do, in words.
fn describe(f: &ActionForm) -> String {
    match f.action.as_str() {
        "advance" | "rollback" => format!(
            "{} {}{}",
            f.action,
            f.service,
            if f.force == "on" { " (forced)" } else { "" }
        ),
        "disable" | "enable" => format!(
            "{} endpoint {} of {}{}",
            f.action,
            f.endpoint,
            f.service,
            if f.force == "on" { " (forced)" } else { "" }
        ),
        other => format!("{other} automation of {}", f.service),
    }
}

/// The confirmation step: the same form again with `confirm=yes`.
pub(super) fn confirm(f: &ActionForm, csrf: &str) -> Markup {
    let what = describe(f);
    document(
        "dnsshift: confirm",
        Some(csrf),
        html! {
            main.confirm {
                h1 { "Confirm: " (what) }
                form method="post" action="/ui/action" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="action" value=(f.action);
                    input type="hidden" name="service" value=(f.service);
                    input type="hidden" name="endpoint" value=(f.endpoint);
                    input type="hidden" name="force" value=(f.force);
                    input type="hidden" name="confirm" value="yes";
                    label for="reason" { "Reason (recorded in history)" }
                    input #reason type="text" name="reason" value=(f.reason) maxlength="1024";
                    div.buttons {
                        button.danger type="submit" { "Yes, " (f.action) }
                        a.button href="/ui" { "Cancel" }
                    }
                }
            }
        },
    )
}

/// The whole page.
pub(super) fn full(view: &View, flash: Option<&Flash>) -> Markup {
    document(
        "dnsshift status",
        view.csrf.as_deref(),
        html! {
            header.top {
                h1 { "dnsshift" }
                span.meta { "serial " (view.status.serial) " · zones " (view.status.zones) }
                button #live-toggle type="button" hidden aria-pressed="false" { "● Live" }
                form method="post" action="/ui/logout" {
                    input type="hidden" name="csrf" value=(view.csrf.as_deref().unwrap_or(""));
                    button.link type="submit" { "Log out" }
                }
            }
            main #live { (live(view, flash)) }
        },
    )
}

/// The live part: every service, then the cluster's hosts.
pub(super) fn live(view: &View, flash: Option<&Flash>) -> Markup {
    let now = view.status.now_ms;
    html! {
        p.updated { "As of " time datetime=(crate::clock::format_ms(now)) { (utc(now)) } }
        @if let Some(f) = flash {
            p.flash.(if f.ok { "ok" } else { "bad" }) role="status" data-field="flash" {
                (if f.ok { "✔ " } else { "✖ refused: " }) (f.text)
            }
        }
        @if view.mode == UiMode::ReadOnly { p.note { "Read-only view: actions are off (ui = \"read-only\")." } }
        @for s in &view.status.services { (service(view, s)) }
        @if !view.status.hosts.is_empty() { (hosts(view)) }
    }
}

fn csrf_field(view: &View) -> Markup {
    html! { input type="hidden" name="csrf" value=(view.csrf.as_deref().unwrap_or("")); }
}

/// One service's section.
fn service(view: &View, s: &ServiceStatus) -> Markup {
    let now = view.status.now_ms;
    let phase_ix = s.phases.iter().position(|p| *p == s.phase).unwrap_or(0);
    let zone_service = view.service(&s.service);
    let actions = view.mode == UiMode::On;
    html! {
        section.service data-service=(s.service) aria-labelledby={"h-" (s.service)} {
            h2 id={"h-" (s.service)} { (s.service) }
            div.standing {
                p.phase {
                    "Phase " strong data-field="phase-number" { (phase_ix + 1) } " of " (s.phases.len()) ": "
                    strong data-field="phase" { (s.phase) }
                    " · TTL " (s.ttl) "s"
                    @if s.since > 0 { " · since " (utc(s.since * 1000)) }
                }
                @if let Some(h) = s.hold_until_ms {
                    p data-field="hold" {
                        @if h > now { "Hold: " (left(h - now)) " left (until " (utc(h)) ")" }
                        @else { "Hold passed at " (utc(h)) }
                    }
                }
                @if s.servfail { p.warn role="alert" { "⚠ SERVFAIL: every endpoint is down and on_all_down = \"servfail\"" } }
                @else if s.fail_open { p.warn role="alert" { "⚠ FAIL-OPEN: every endpoint is down; answering all of them" } }
                @if s.staging_fail_open { p.warn role="alert" { "⚠ FAIL-OPEN on the staging name" } }
                @if let Some(a) = view.auto.get(&s.service) { (auto_summary(a)) }
                (drain(s, now))
                @if actions { (transition_forms(view, s)) }
            }
            div.split {
                (chart::render(s, view.series.get(&s.service), now))
                (split_table(s))
            }
            (health_grid(view, s, zone_service, actions))
            (timeline(s, phase_ix, zone_service))
            @if let Some(a) = view.auto.get(&s.service).filter(|a| has_automation(a)) { (auto_checks(view, s, a, actions)) }
            (history(view, &s.service))
        }
    }
}

/// Drain deadlines, absolute and as time left.
fn drain(s: &ServiceStatus, now: u64) -> Markup {
    html! {
        @for p in s.pools.iter().filter(|p| p.drained_at_ms.is_some()) {
            @let d = p.drained_at_ms.unwrap_or(0);
            p.drain data-field="drain" data-pool=(p.pool) {
                @if p.drained {
                    "✔ " strong { (p.pool) } ": drained at " time datetime=(crate::clock::format_ms(d)) { (utc(d)) }
                } @else {
                    "… " strong { (p.pool) } ": drains at " time datetime=(crate::clock::format_ms(d)) { (utc(d)) }
                    " (in " (left(d.saturating_sub(now))) ")"
                }
                @if let Some(safe) = p.safe_to_decommission_after_ms {
                    " · safe to decommission after " (utc(safe))
                }
                @if p.decommissioned { " · decommissioned" }
            }
        }
    }
}

fn transition_forms(view: &View, s: &ServiceStatus) -> Markup {
    html! {
        div.actions {
            form method="post" action="/ui/action" {
                (csrf_field(view))
                input type="hidden" name="action" value="advance";
                input type="hidden" name="service" value=(s.service);
                label { input type="checkbox" name="force" value="on"; " force" }
                input type="text" name="reason" placeholder="reason" aria-label="reason for advance" maxlength="1024";
                button type="submit" { "Advance…" }
            }
            form method="post" action="/ui/action" {
                (csrf_field(view))
                input type="hidden" name="action" value="rollback";
                input type="hidden" name="service" value=(s.service);
                input type="text" name="reason" placeholder="reason" aria-label="reason for rollback" maxlength="1024";
                button.danger type="submit" { "Roll back…" }
            }
        }
    }
}

/// The numbers behind the chart.
fn split_table(s: &ServiceStatus) -> Markup {
    let total: u64 = s.pools.iter().map(|p| u64::from(p.weight)).sum();
    html! {
        table.split-table {
            caption { "Configured and served, last minute" }
            thead { tr { th scope="col" { "pool" } th scope="col" { "weight" } th scope="col" { "configured" } th scope="col" { "served" } th scope="col" { "answers" } th scope="col" { "role" } } }
            tbody {
                @for (i, p) in s.pools.iter().enumerate() {
                    tr data-pool=(p.pool) {
                        th scope="row" { span class={"swatch p" (i % chart::COLOURS)} aria-hidden="true" {} (p.pool) }
                        td data-field="weight" { (p.weight) }
                        td data-field="configured" { (pct(if total > 0 { f64::from(p.weight) / total as f64 } else { 0.0 })) }
                        td data-field="served" { (pct(p.share_last_minute)) }
                        td data-field="answers" { (p.answers_last_minute) }
                        td { (role(p)) }
                    }
                }
            }
        }
    }
}

fn role(p: &PoolStatus) -> String {
    if p.decommissioned {
        return "decommissioned".into();
    }
    match &p.role {
        Some(r) => format!("{r:?}").to_lowercase(),
        None => p
            .roles
            .iter()
            .map(|(f, r)| format!("{f}: {}", format!("{r:?}").to_lowercase()))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Pool × endpoint: health in words, admin state, last check, latency,
/// last error, rise/fall progress; and the disable/enable actions.
fn health_grid(view: &View, s: &ServiceStatus, zs: Option<&Service>, actions: bool) -> Markup {
    html! {
        table.health {
            caption { "Endpoints" }
            thead { tr {
                th scope="col" { "pool" } th scope="col" { "endpoint" } th scope="col" { "health" }
                th scope="col" { "admin" } th scope="col" { "last check" } th scope="col" { "latency" }
                th scope="col" { "last result" } th scope="col" { "rise/fall" }
                @if actions { th scope="col" { "action" } }
            } }
            tbody {
                @for p in &s.pools {
                    @for e in &p.endpoints {
                        @let key = EndpointKey::new(&s.service, &p.pool, &e.endpoint);
                        @let word = if !e.checked { "unchecked" } else if e.healthy { "up" } else { "down" };
                        tr data-endpoint=(e.endpoint) data-pool=(p.pool) {
                            td { (p.pool) }
                            td { code { (e.endpoint) } }
                            td.(word) data-field="health" { (match word { "up" => "✔ up", "down" => "✖ down", _ => "– unchecked" }) }
                            td.(if e.disabled { "disabled" } else { "enabled" }) data-field="admin" { (if e.disabled { "✖ disabled" } else { "enabled" }) }
                            td { @if let Some(c) = &e.last_check { (utc(c.at_ms)) } @else { "—" } }
                            td { @if let Some(c) = &e.last_check { (format!("{:.1} ms", c.duration_ms)) } @else { "—" } }
                            td.detail { @if let Some(c) = &e.last_check { (c.detail) } @else { "—" } }
                            td { (rise_fall(view, zs, &key, e.healthy, e.checked)) }
                            @if actions {
                                td {
                                    form method="post" action="/ui/action" {
                                        (csrf_field(view))
                                        input type="hidden" name="service" value=(s.service);
                                        input type="hidden" name="endpoint" value=(e.endpoint);
                                        @if e.disabled {
                                            input type="hidden" name="action" value="enable";
                                            button type="submit" aria-label={"enable " (p.pool) "/" (e.endpoint)} { "Enable…" }
                                        } @else {
                                            input type="hidden" name="action" value="disable";
                                            button.danger type="submit" aria-label={"disable " (p.pool) "/" (e.endpoint)} { "Disable…" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// "1/3 towards down" from the health streak and the check's thresholds.
fn rise_fall(
    view: &View,
    zs: Option<&Service>,
    key: &EndpointKey,
    healthy: bool,
    checked: bool,
) -> String {
    if !checked {
        return "—".into();
    }
    let check = zs
        .and_then(|s| s.pools.iter().find(|p| p.name == key.pool))
        .and_then(|p| p.endpoints.iter().find(|e| e.id == key.endpoint))
        .and_then(|e| e.check.as_ref());
    let streak = view.health.get(key).map_or(0, |h| h.state.streak());
    match check {
        Some(c) if healthy => format!("{streak}/{} towards down", c.fall),
        Some(c) => format!("{streak}/{} towards up", c.rise),
        None => "—".into(),
    }
}

/// Phases done, current and pending, with holds and TTLs.
fn timeline(s: &ServiceStatus, current: usize, zs: Option<&Service>) -> Markup {
    html! {
        div.timeline-box {
            h3 { "Phases" }
            ol.timeline {
                @for (i, name) in s.phases.iter().enumerate() {
                    @let state = if i < current { "done" } else if i == current { "current" } else { "pending" };
                    @let ph = zs.and_then(|z| z.phases.get(i));
                    li.(state) aria-current=[(i == current).then_some("step")] {
                        span.mark aria-hidden="true" { (match state { "done" => "✔ ", "current" => "▶ ", _ => "○ " }) }
                        strong { (name) } " — " (state)
                        @if let Some(ph) = ph {
                            " · weights "
                            (zs.map(|z| z.pools.iter().zip(&ph.weights).map(|(p, w)| format!("{}={w}", p.name)).collect::<Vec<_>>().join(" ")).unwrap_or_default())
                            @if let Some(h) = ph.hold { " · hold " (humantime::format_duration(h)) }
                        }
                    }
                }
            }
        }
    }
}

fn text_of(v: &serde_json::Value, key: &str) -> String {
    match v.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Whether `auto` describes automation in use: started once, or with checks.
fn has_automation(a: &serde_json::Value) -> bool {
    text_of(a, "state") != "off"
        || a.get("checks")
            .and_then(|c| c.as_array())
            .is_some_and(|c| !c.is_empty())
}

/// Automation state in one line, from `status --json`'s `auto`.
fn auto_summary(a: &serde_json::Value) -> Markup {
    let state = text_of(a, "state");
    let why = text_of(a, "why");
    html! {
        p.auto data-field="auto-state" {
            "Automation: " strong { (state) }
            @if !why.is_empty() { " — " (why) }
            @for (k, label) in [("in_phase_s", "in phase"), ("settle_left_s", "settling"), ("next_eval_s", "next evaluation in")] {
                @let v = text_of(a, k);
                @if !v.is_empty() { " · " (label) " " (v) "s" }
            }
        }
    }
}

/// Each analysis check's last value, rule and verdict; pause and resume.
fn auto_checks(view: &View, s: &ServiceStatus, a: &serde_json::Value, actions: bool) -> Markup {
    let state = text_of(a, "state");
    let checks = a
        .get("checks")
        .and_then(|c| c.as_array())
        .cloned()
        .unwrap_or_default();
    html! {
        div.auto-box {
            h3 { "Automation checks" }
            p { "passes " (text_of(a, "passes")) " · failures " (text_of(a, "failures")) " · errors " (text_of(a, "errors")) " · inconclusive " (text_of(a, "inconclusive")) }
            table.checks {
                thead { tr { th scope="col" { "check" } th scope="col" { "value" } th scope="col" { "rule" } th scope="col" { "verdict" } } }
                tbody {
                    @for c in &checks {
                        tr { td { (text_of(c, "name")) } td { (text_of(c, "value")) } td { code { (text_of(c, "rule")) } } td data-field="verdict" { (text_of(c, "verdict")) } }
                    }
                }
            }
            @if actions && state != "off" {
                form method="post" action="/ui/action" {
                    (csrf_field(view))
                    input type="hidden" name="service" value=(s.service);
                    @if state == "paused" {
                        input type="hidden" name="action" value="resume";
                        button type="submit" { "Resume automation…" }
                    } @else {
                        input type="hidden" name="action" value="pause";
                        button type="submit" { "Pause automation…" }
                    }
                }
            }
        }
    }
}

/// The service's history, newest first.
fn history(view: &View, service: &str) -> Markup {
    let rows: Vec<&HistoryEntry> = view
        .history
        .iter()
        .filter(|e| e.event.service == service)
        .take(HISTORY_SHOWN)
        .collect();
    html! {
        details.history open {
            summary { "History (newest first)" }
            @if rows.is_empty() { p { "No changes recorded." } }
            @else {
                table {
                    thead { tr { th scope="col" { "when" } th scope="col" { "action" } th scope="col" { "change" } th scope="col" { "actor" } th scope="col" { "reason" } th scope="col" { "host" } } }
                    tbody {
                        @for e in rows {
                            tr {
                                td { (utc(e.at_ms)) }
                                td { (e.event.change.action()) @if e.event.forced { " (forced)" } }
                                td { @if let Some(f) = e.event.change.from() { (f) " → " } (e.event.change.to()) }
                                td { (e.event.actor.as_deref().unwrap_or("—")) }
                                td { (e.event.reason.as_deref().unwrap_or("—")) }
                                td { (e.event.node.as_deref().unwrap_or("—")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The cluster's hosts: epoch, lag, last seen, and whether each holds up a drain.
fn hosts(view: &View) -> Markup {
    let now = view.status.now_ms;
    let top = view.status.hosts.iter().map(|h| h.epoch).max().unwrap_or(0);
    // Pools no longer answered: a host whose cache horizon for one is
    // still ahead holds up that drain.
    let draining: Vec<(&str, &str)> = view
        .status
        .services
        .iter()
        .flat_map(|s| {
            s.pools
                .iter()
                .filter(|p| p.drained_at_ms.is_some() && !p.drained)
                .map(move |p| (s.service.as_str(), p.pool.as_str()))
        })
        .collect();
    html! {
        section.hosts {
            h2 { "Cluster hosts" }
            table {
                thead { tr { th scope="col" { "host" } th scope="col" { "state" } th scope="col" { "epoch" } th scope="col" { "lag" } th scope="col" { "last seen" } th scope="col" { "holds up a drain" } } }
                tbody {
                    @for h in &view.status.hosts {
                        @let holds: Vec<String> = view.others.iter()
                            .filter(|o| o.node == h.node && o.expires_ms.is_some_and(|x| x > now) && draining.contains(&(o.service.as_str(), o.pool.as_str())))
                            .map(|o| format!("{} {}", o.service, o.pool)).collect();
                        tr data-host=(h.node) {
                            td { (h.node) }
                            td { (if h.live { "live" } else if h.live_known { "gone" } else { "unknown" }) @if h.from_local_copy { " (local copy)" } @if h.zones_differ { " ⚠ zones differ" } }
                            td { (h.epoch) }
                            td { (top - h.epoch) }
                            td { (utc(h.last_seen_ms)) }
                            td { @if holds.is_empty() { "no" } @else { "yes: " (holds.join(", ")) } }
                        }
                    }
                }
            }
        }
    }
}

/// A share as a percentage.
pub(super) fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Unix ms as "2026-12-02 22:01:30 UTC".
pub(super) fn utc(ms: u64) -> String {
    let t = crate::clock::format_ms(ms);
    format!("{} UTC", t.trim_end_matches('Z').replacen('T', " ", 1))
}

/// A duration in ms as "4m 10s".
fn left(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(ms.div_ceil(1000))).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_automation_box_shows_only_for_automation_in_use() {
        assert!(!has_automation(
            &serde_json::json!({"state": "off", "checks": []})
        ));
        assert!(has_automation(&serde_json::json!({"state": "paused"})));
        let checked = serde_json::json!({"state": "off", "checks": [{"name": "x"}]});
        assert!(has_automation(&checked));
    }

    #[test]
    fn the_confirmation_carries_the_form_and_its_token() {
        let f = ActionForm {
            action: "disable".into(),
            service: "www".into(),
            endpoint: "192.0.2.1".into(),
            reason: "<b>x</b>".into(),
            ..ActionForm::default()
        };
        let page = confirm(&f, "tok").into_string();
        assert!(page.contains(r#"name="confirm" value="yes""#), "{page}");
        assert!(page.contains(r#"name="csrf" value="tok""#));
        assert!(page.contains("disable endpoint 192.0.2.1 of www"));
        assert!(
            page.contains("&lt;b&gt;x&lt;/b&gt;"),
            "the reason is escaped"
        );
        assert!(!login(None).into_string().contains("value=\"tok"));
    }

    #[test]
    fn times_read_as_utc_and_durations_as_people_write_them() {
        assert_eq!(utc(1_000), "1970-01-01 00:00:01 UTC");
        assert_eq!(left(250_500), "4m 11s");
        assert_eq!(pct(0.1234), "12.3%");
    }
}
