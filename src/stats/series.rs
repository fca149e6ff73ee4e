//! The 24-hour split series for the status page: per service and pool, the
//! configured share and the answers served in each [`STEP`], in a bounded
//! ring; and the markers (phase changes, rollbacks, health flips) drawn
//! over it. Plain data: the caller samples and passes the time in.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::sync::lock;

/// One sample per this long.
pub const STEP: Duration = Duration::from_secs(10);
/// How far back the series reaches.
pub const SPAN: Duration = Duration::from_secs(24 * 3600);
/// Samples kept per pool: [`SPAN`] / [`STEP`].
pub const POINTS: usize = (SPAN.as_secs() / STEP.as_secs()) as usize;
/// Markers kept per service (the oldest go first).
pub const MAX_MARKERS: usize = 256;
/// Longest marker text kept (longer is cut).
const MAX_MARKER_TEXT: usize = 120;

/// One pool's sample: 12 bytes, so a pool's day is
/// [`POINTS`] × 12 bytes = 101 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// Unix seconds at the end of the step.
    pub at_s: u32,
    /// The share the phase's weights give the pool, in thousandths.
    pub configured_permille: u16,
    /// Main-name answers carrying the pool during the step (every host).
    pub served: u32,
}

/// What a marker marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerKind {
    /// A phase change forwards.
    Advance,
    /// A phase change backwards.
    Rollback,
    /// An endpoint turned unhealthy, or was disabled.
    Down,
    /// An endpoint turned healthy, or was enabled.
    Up,
}

impl MarkerKind {
    /// Its name, as the page writes it.
    pub fn label(self) -> &'static str {
        match self {
            MarkerKind::Advance => "advance",
            MarkerKind::Rollback => "rollback",
            MarkerKind::Down => "down",
            MarkerKind::Up => "up",
        }
    }
}

/// An event drawn on the chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// Unix seconds.
    pub at_s: u64,
    /// What happened.
    pub kind: MarkerKind,
    /// In words ("round-robin → half", "old/192.0.2.1 down").
    pub text: String,
}

/// One service's series.
#[derive(Debug, Default, Clone)]
pub struct ServiceSeries {
    /// Per pool, in the zone's order: its name and samples, oldest first.
    pub pools: Vec<(String, VecDeque<Point>)>,
    /// Oldest first.
    pub markers: VecDeque<Marker>,
}

/// Every service's series.
#[derive(Debug, Default)]
pub struct SplitSeries {
    services: std::sync::Mutex<HashMap<String, ServiceSeries>>,
}

/// One pool's sample as the sampler measured it.
#[derive(Debug, Clone)]
pub struct PoolSample {
    /// Pool name.
    pub pool: String,
    /// Configured share, 0.0 to 1.0.
    pub configured: f64,
    /// Answers served in the step.
    pub served: u64,
}

impl SplitSeries {
    /// Adds one step's samples of `service`'s pools at `now_s`. A pool not
    /// seen before starts empty; pools no longer passed are dropped.
    pub fn push(&self, service: &str, pools: &[PoolSample], now_s: u64) {
        let mut all = lock(&self.services);
        let s = all.entry(service.to_string()).or_default();
        s.pools
            .retain(|(name, _)| pools.iter().any(|p| p.pool == *name));
        for p in pools {
            let at = match s.pools.iter().position(|(name, _)| *name == p.pool) {
                Some(i) => i,
                None => {
                    s.pools.push((p.pool.clone(), VecDeque::new()));
                    s.pools.len() - 1
                }
            };
            let ring = &mut s.pools[at].1;
            if ring.len() >= POINTS {
                ring.pop_front();
            }
            ring.push_back(Point {
                at_s: u32::try_from(now_s).unwrap_or(u32::MAX),
                configured_permille: (p.configured.clamp(0.0, 1.0) * 1000.0).round() as u16,
                served: u32::try_from(p.served).unwrap_or(u32::MAX),
            });
        }
    }

    /// Records a marker for `service` (kept in time order).
    pub fn mark(&self, service: &str, at_s: u64, kind: MarkerKind, text: &str) {
        let mut all = lock(&self.services);
        let s = all.entry(service.to_string()).or_default();
        let text: String = text.chars().take(MAX_MARKER_TEXT).collect();
        let at = s.markers.partition_point(|m| m.at_s <= at_s);
        s.markers.insert(at, Marker { at_s, kind, text });
        while s.markers.len() > MAX_MARKERS {
            s.markers.pop_front();
        }
    }

    /// Forgets services no longer served.
    pub fn retain(&self, services: &[String]) {
        lock(&self.services).retain(|k, _| services.contains(k));
    }

    /// A copy of one service's series.
    pub fn get(&self, service: &str) -> ServiceSeries {
        lock(&self.services)
            .get(service)
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pool: &str, configured: f64, served: u64) -> PoolSample {
        PoolSample {
            pool: pool.into(),
            configured,
            served,
        }
    }

    #[test]
    fn a_point_is_twelve_bytes_and_the_ring_keeps_one_day() {
        assert_eq!(std::mem::size_of::<Point>(), 12);
        assert_eq!(POINTS, 8640);
        let series = SplitSeries::default();
        for i in 0..POINTS as u64 + 50 {
            series.push(
                "www.",
                &[sample("old", 0.9, i), sample("new", 0.1, 1)],
                i * 10,
            );
        }
        let s = series.get("www.");
        assert_eq!(s.pools.len(), 2);
        assert_eq!(s.pools[0].1.len(), POINTS);
        let first = s.pools[0].1.front().unwrap();
        assert_eq!((first.at_s, first.served), (500, 50), "the oldest 50 went");
        assert_eq!(first.configured_permille, 900);
        // A pool dropped from the zone is dropped from the series.
        series.push("www.", &[sample("new", 1.0, 0)], 1);
        assert_eq!(series.get("www.").pools.len(), 1);
    }

    #[test]
    fn markers_stay_in_time_order_and_bounded() {
        let series = SplitSeries::default();
        series.mark("www.", 20, MarkerKind::Advance, "a → b");
        series.mark("www.", 10, MarkerKind::Down, "old/x down");
        let m = series.get("www.").markers;
        assert_eq!(m[0].at_s, 10);
        assert_eq!(m[1].kind, MarkerKind::Advance);
        for i in 0..MAX_MARKERS as u64 * 2 {
            series.mark("www.", 100 + i, MarkerKind::Up, &"x".repeat(500));
        }
        let m = series.get("www.").markers;
        assert_eq!(m.len(), MAX_MARKERS);
        assert_eq!(m[0].text.len(), MAX_MARKER_TEXT);
    }
}
