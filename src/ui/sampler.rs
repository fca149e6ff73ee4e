//! The page's background task on the control runtime: every second it
//! renders the live part of the page for the open event streams (only
//! while one is open), notes health flips and history events as chart
//! markers, and every [`STEP`] adds a sample to the 24-hour series.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::warn;

use super::{Ui, page};
use crate::pool::EndpointKey;
use crate::state::Change;
use crate::stats::series::{MarkerKind, PoolSample, SPAN, STEP};

/// How often the live part is rendered and health looked at.
const TICK: Duration = Duration::from_secs(1);

/// What the sampler remembers between ticks.
#[derive(Default)]
struct Memory {
    /// Per (node, service, pool): the answer counter last seen ("" is this host).
    counters: HashMap<(String, String, String), u64>,
    /// Health verdict last seen per endpoint.
    health: HashMap<EndpointKey, bool>,
    /// History events already marked (their count).
    history_seen: usize,
    /// Unix seconds of the last series sample.
    last_step_s: u64,
}

/// Runs until the daemon shuts down.
pub(super) async fn run(ui: Arc<Ui>) {
    let mut memory = Memory::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = ui.shutdown.cancelled() => return,
        }
        let now_s = crate::clock::unix_ms() / 1000;
        mark_events(&ui, &mut memory, now_s);
        if now_s >= memory.last_step_s + STEP.as_secs() {
            let first = memory.last_step_s == 0;
            memory.last_step_s = now_s;
            sample(&ui, &mut memory, now_s, first);
        }
        if ui.feed.receiver_count() > 0 {
            match page::View::gather(&ui, None) {
                Ok(view) => {
                    let html: Arc<str> = Arc::from(page::live(&view, None).into_string());
                    ui.feed.send_if_modified(|old| {
                        let changed = **old != *html;
                        if changed {
                            *old = html;
                        }
                        changed
                    });
                }
                Err(error) => warn!(%error, "status page: cannot render the live part"),
            }
        }
    }
}

/// Health flips and new history events become chart markers.
fn mark_events(ui: &Ui, memory: &mut Memory, now_s: u64) {
    let state = ui.op.state();
    let oldest = now_s.saturating_sub(SPAN.as_secs());
    if memory.history_seen > state.history.len() {
        memory.history_seen = 0;
    }
    for e in &state.history[memory.history_seen..] {
        if e.at < oldest {
            continue;
        }
        let (kind, text) = match &e.change {
            Change::Advance { from, to } => (MarkerKind::Advance, format!("advance {from} → {to}")),
            Change::Rollback { from, to } => {
                (MarkerKind::Rollback, format!("rollback {from} → {to}"))
            }
            Change::Disable { endpoint } => (MarkerKind::Down, format!("{endpoint} disabled")),
            Change::Enable { endpoint } => (MarkerKind::Up, format!("{endpoint} enabled")),
            Change::Decommission { pool } => (MarkerKind::Down, format!("{pool} decommissioned")),
            Change::Recommission { pool } => (MarkerKind::Up, format!("{pool} recommissioned")),
            // Automation's own mode changes move no weights: its phase
            // changes are marked as advances and rollbacks.
            Change::Auto { .. } => continue,
        };
        ui.series.mark(&e.service, e.at, kind, &text);
    }
    memory.history_seen = state.history.len();
    for (key, status) in ui.op.health.all() {
        let healthy = status.state.healthy;
        let before = memory.health.insert(key.clone(), healthy);
        if before.is_some_and(|b| b != healthy) {
            let (kind, word) = if healthy {
                (MarkerKind::Up, "up")
            } else {
                (MarkerKind::Down, "down")
            };
            ui.series.mark(
                &key.service,
                now_s,
                kind,
                &format!("{} {word}", key.in_service()),
            );
        }
    }
}

/// One step of the series: each pool's configured share and the answers
/// every host served with it since the last step.
fn sample(ui: &Ui, memory: &mut Memory, now_s: u64, first: bool) {
    let zones = ui.op.zones();
    let state = ui.op.state();
    let others = ui.op.other_hosts_answers();
    let mut keys = Vec::new();
    for s in zones.iter().flat_map(|z| &z.services) {
        let key = s.key();
        let phase = state.phase_of(s);
        let weights = &s.phases[phase].weights;
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let mut pools = Vec::new();
        for (i, p) in s.pools.iter().enumerate() {
            let local = ui
                .op
                .stats
                .pool(&key, &p.name, s.max_ttl())
                .main
                .load(Ordering::Relaxed);
            let mut served = delta(memory, String::new(), &key, &p.name, local);
            for h in others
                .iter()
                .filter(|h| h.service == key && h.pool == p.name)
            {
                served += delta(memory, h.node.clone(), &key, &p.name, h.answers);
            }
            pools.push(PoolSample {
                pool: p.name.clone(),
                configured: if total > 0 {
                    f64::from(weights[i]) / total as f64
                } else {
                    0.0
                },
                served: if first { 0 } else { served },
            });
        }
        ui.series.push(&key, &pools, now_s);
        keys.push(key);
    }
    ui.series.retain(&keys);
}

/// Answers since the counter was last seen; a counter that went back (a
/// restarted host) counts from zero.
fn delta(memory: &mut Memory, node: String, service: &str, pool: &str, now: u64) -> u64 {
    let before = memory
        .counters
        .insert((node, service.to_string(), pool.to_string()), now);
    match before {
        Some(b) if now >= b => now - b,
        Some(_) => now,
        None => 0,
    }
}
