//! The split over time as server-rendered SVG: per pool the configured
//! share (a dashed step line) and the share actually served (a solid
//! line), with a vertical marker at each phase change, rollback and health
//! event. The same numbers are in the table beside it.

use maud::{Markup, html};

use crate::api::ServiceStatus;
use crate::stats::series::{MarkerKind, ServiceSeries};

/// Pool colours in the stylesheet (`.p0` ...).
pub(super) const COLOURS: usize = 4;
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 180.0;
/// Room for the axis labels.
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 8.0;
/// The chart spans at least this much, so a fresh daemon's first minutes
/// are not stretched across the whole width.
const MIN_SPAN_S: u64 = 120;

fn x(at_s: u64, from_s: u64, span_s: u64) -> f64 {
    LEFT + (at_s.saturating_sub(from_s)) as f64 / span_s as f64 * (WIDTH - LEFT - 4.0)
}

fn y(share: f64) -> f64 {
    TOP + (1.0 - share.clamp(0.0, 1.0)) * (HEIGHT - TOP - BOTTOM)
}

/// The chart of one service.
pub(super) fn render(s: &ServiceStatus, series: Option<&ServiceSeries>, now_ms: u64) -> Markup {
    let now_s = now_ms / 1000;
    let empty = ServiceSeries::default();
    let series = series.unwrap_or(&empty);
    let first = series
        .pools
        .iter()
        .filter_map(|(_, pts)| pts.front().map(|p| u64::from(p.at_s)))
        .min()
        .unwrap_or(now_s);
    let span = now_s.saturating_sub(first).max(MIN_SPAN_S);
    let from = now_s - span;
    // Served share per step: a pool's answers over all pools' answers.
    let steps = series.pools.iter().map(|(_, p)| p.len()).max().unwrap_or(0);
    let totals: Vec<u64> = (0..steps)
        .map(|i| {
            series
                .pools
                .iter()
                .filter_map(|(_, p)| p.get(i))
                .map(|p| u64::from(p.served))
                .sum()
        })
        .collect();
    let title = format!(
        "Split over time for {}: configured share (dashed) and share served (solid) per pool, last {}",
        s.service,
        humantime::format_duration(std::time::Duration::from_secs(span))
    );
    let mut lines = Vec::new();
    for (n, (pool, pts)) in series.pools.iter().enumerate() {
        let mut cfg = String::new();
        let mut prev: Option<f64> = None;
        for p in pts {
            let (px, py) = (
                x(u64::from(p.at_s), from, span),
                y(f64::from(p.configured_permille) / 1000.0),
            );
            match prev {
                None => cfg.push_str(&format!("M{px:.1},{py:.1}")),
                Some(_) => cfg.push_str(&format!(" H{px:.1} V{py:.1}")),
            }
            prev = Some(py);
        }
        if prev.is_some() {
            cfg.push_str(&format!(" H{:.1}", x(now_s, from, span)));
        }
        let mut served = String::new();
        let mut pen_down = false;
        for (i, p) in pts.iter().enumerate() {
            let total = totals.get(i).copied().unwrap_or(0);
            if total == 0 {
                pen_down = false;
                continue;
            }
            let share = f64::from(p.served) / total as f64;
            let (px, py) = (x(u64::from(p.at_s), from, span), y(share));
            // A lone point still shows: a zero-length segment with round caps.
            served.push_str(&format!(
                "{}{px:.1},{py:.1}{}",
                if pen_down { " L" } else { " M" },
                if pen_down { "" } else { " h0.01" }
            ));
            pen_down = true;
        }
        lines.push((n % COLOURS, pool.clone(), cfg, served));
    }
    let markers: Vec<_> = series
        .markers
        .iter()
        .filter(|m| m.at_s >= from)
        .map(|m| (x(m.at_s, from, span), m))
        .collect();
    html! {
        figure.chart {
            svg viewBox={"0 0 " (WIDTH) " " (HEIGHT)} role="img" aria-labelledby={"t-" (s.service)} xmlns="http://www.w3.org/2000/svg" {
                title id={"t-" (s.service)} { (title) }
                @for share in [0.0, 0.5, 1.0] {
                    line.grid x1=(LEFT) x2=(WIDTH - 4.0) y1=(y(share)) y2=(y(share)) {}
                    text.axis x=(LEFT - 6.0) y=(y(share) + 4.0) text-anchor="end" { (format!("{:.0}%", share * 100.0)) }
                }
                text.axis x=(LEFT) y=(HEIGHT - 4.0) { (super::page::utc(from * 1000)) }
                text.axis x=(WIDTH - 4.0) y=(HEIGHT - 4.0) text-anchor="end" { "now" }
                @for (xm, m) in &markers {
                    g.marker.(m.kind.label()) {
                        title { (super::page::utc(m.at_s * 1000)) ": " (m.text) }
                        line x1=(format!("{xm:.1}")) x2=(format!("{xm:.1}")) y1=(TOP) y2=(HEIGHT - BOTTOM) {}
                        text x=(format!("{xm:.1}")) y=(TOP + 8.0) text-anchor="middle" { (match m.kind { MarkerKind::Advance => "▲", MarkerKind::Rollback => "▼", MarkerKind::Down => "✖", MarkerKind::Up => "✔" }) }
                    }
                }
                @for (c, pool, cfg, served) in &lines {
                    g class={"pool p" (c)} {
                        title { (pool) }
                        @if !cfg.is_empty() { path.configured d=(cfg) {} }
                        @if !served.is_empty() { path.served d=(served.trim()) {} }
                    }
                }
            }
            figcaption {
                "Dashed: configured share. Solid: share served (every host). Markers: ▲ advance, ▼ rollback, ✖ down, ✔ up."
                @if series.pools.iter().all(|(_, p)| p.len() < 2) { " Collecting: one sample every 10 s." }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::series::{PoolSample, SplitSeries};

    #[test]
    fn the_chart_draws_configured_steps_served_lines_and_markers() {
        let s: ServiceStatus = serde_json::from_value(serde_json::json!({
            "service": "www.example.", "short": "www", "staging": null, "phase": "half",
            "phases": ["old", "half"], "since": 0, "ttl": 30, "hold_until_ms": null,
            "fail_open": false, "staging_fail_open": false, "servfail": false, "pools": []
        }))
        .unwrap();
        let series = SplitSeries::default();
        let sample = |old: f64, served_old: u64, served_new: u64| {
            [
                PoolSample {
                    pool: "old".into(),
                    configured: old,
                    served: served_old,
                },
                PoolSample {
                    pool: "new".into(),
                    configured: 1.0 - old,
                    served: served_new,
                },
            ]
        };
        series.push("www.example.", &sample(1.0, 10, 0), 1_000);
        series.push("www.example.", &sample(0.5, 6, 4), 1_010);
        series.push("www.example.", &sample(0.5, 0, 0), 1_020);
        series.mark("www.example.", 1_005, MarkerKind::Advance, "old → half");
        let svg = render(&s, Some(&series.get("www.example.")), 1_030_000).into_string();
        assert!(svg.contains("<title id=\"t-www.example.\">Split over time for www.example."));
        assert_eq!(svg.matches("class=\"configured\"").count(), 2);
        // Served: two steps with answers, then a gap (no answers at all).
        assert_eq!(svg.matches("class=\"served\"").count(), 2);
        assert!(svg.contains("old → half"), "the marker has its words");
        assert!(svg.contains("▲"));
        // The configured step of `old` goes from 100 % down to 50 %.
        assert!(svg.contains(&format!(" V{:.1}", y(0.5))), "{svg}");
    }
}
