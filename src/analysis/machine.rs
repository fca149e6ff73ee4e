//! The automation machine of one service: verdicts in, decisions out.
//! Pure: the clock reading, the phase and its timing are passed in; the
//! runner ([`super::runner`]) asks the provider and carries the decisions
//! out through the operator.
//!
//! ```text
//!            auto start / resume
//!   off ───────────────────────────▶ running ◀──────────┐
//!                                   │   │   │           │ evaluation
//!       settle / min time / share / │   │   └── hold ───┘ (inconclusive,
//!       manual gate: holding ◀──────┘   │                  share mismatch)
//!                                       │
//!   passes ≥ auto.passes and time ≥ after ──▶ advance (actor auto) ──▶ last phase: done
//!   failures ≥ failure_limit, or critical ──▶ rollback to origin ──▶ failed
//!   errors ≥ error_limit, inconclusive ≥ limit ──▶ paused (weights unchanged)
//!   manual advance/rollback, auto pause ──▶ paused;  auto resume ──▶ running
//! ```
//!
//! An evaluation counts only if its whole window starts after the change
//! plus settle (the TTL served before the change plus skew). Errors never
//! advance nor roll back; they retry with backoff, then pause.

use std::time::Duration;

use crate::zone::analysis::{Analysis, Auto, Check};

/// What one check (or the whole evaluation) says.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The rule holds.
    Pass,
    /// The rule is broken.
    Fail,
    /// No usable data: no series, NaN, volume below the gate, share mismatch.
    Inconclusive,
    /// The provider could not answer: says nothing about the application.
    Error,
}

impl Verdict {
    /// Lowercase name, as status and metrics show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Error => "error",
        }
    }
}

/// A reading as the machine judges it: a number, missing data (why), or a
/// provider error (why).
#[derive(Debug, Clone, PartialEq)]
pub enum Measured {
    Value(f64),
    Missing(String),
    Error(String),
}

/// One check's outcome in one evaluation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// Check name (`volume` and `share` for the built-in ones).
    pub name: String,
    /// The query as asked (templated).
    pub query: String,
    /// The measured value, if any.
    pub value: Option<f64>,
    /// The baseline pool's value, for a relative rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// The rule, in words ("<= 0.01").
    pub rule: String,
    pub verdict: Verdict,
    /// Why, when it is not a pass, or the provider's message.
    #[serde(default)]
    pub detail: String,
    /// A critical check: one failure rolls back at once.
    #[serde(default)]
    pub critical: bool,
}

impl From<&Outcome> for crate::api::CheckStatus {
    fn from(o: &Outcome) -> Self {
        crate::api::CheckStatus {
            name: o.name.clone(),
            query: o.query.clone(),
            value: o.value,
            baseline: o.baseline,
            rule: o.rule.clone(),
            verdict: o.verdict.as_str().into(),
            detail: o.detail.clone(),
            critical: o.critical,
        }
    }
}

/// Judges a check: the measured pool's reading and, for a relative rule,
/// the baseline pool's.
pub fn judge(check: &Check, query: String, value: Measured, base: Option<Measured>) -> Outcome {
    let mut rule = Vec::new();
    if let Some(min) = check.min {
        rule.push(format!(">= {min}"));
    }
    if let Some(max) = check.max {
        rule.push(format!("<= {max}"));
    }
    let ratio = check.max_ratio.unwrap_or(1.0);
    let delta = check.max_delta.unwrap_or(0.0);
    if check.baseline.is_some() {
        rule.push(format!("<= {ratio} × baseline + {delta}"));
    }
    let mut out = Outcome {
        name: check.name.clone(),
        query,
        value: None,
        baseline: None,
        rule: rule.join(" and "),
        verdict: Verdict::Pass,
        detail: String::new(),
        critical: check.critical,
    };
    let missing = |out: &mut Outcome, why: String| {
        out.verdict = if check.missing_fails {
            Verdict::Fail
        } else {
            Verdict::Inconclusive
        };
        out.detail = why;
    };
    let v = match value {
        Measured::Value(v) => v,
        Measured::Missing(why) => {
            missing(&mut out, why);
            return out;
        }
        Measured::Error(why) => {
            out.verdict = Verdict::Error;
            out.detail = why;
            return out;
        }
    };
    out.value = Some(v);
    let mut broken = Vec::new();
    if let Some(min) = check.min.filter(|&m| v < m) {
        broken.push(format!("{v} is below the min {min}"));
    }
    if let Some(max) = check.max.filter(|&m| v > m) {
        broken.push(format!("{v} is above the max {max}"));
    }
    match base {
        None => {}
        Some(Measured::Value(b)) => {
            out.baseline = Some(b);
            let limit = ratio * b + delta;
            out.rule = out.rule.replace("baseline", &format!("baseline {b}"));
            if v > limit {
                broken.push(format!(
                    "{v} is above {ratio} × baseline {b} + {delta} = {limit}"
                ));
            }
        }
        Some(Measured::Missing(why)) => {
            missing(&mut out, format!("baseline: {why}"));
            return out;
        }
        Some(Measured::Error(why)) => {
            out.verdict = Verdict::Error;
            out.detail = format!("baseline: {why}");
            return out;
        }
    }
    if !broken.is_empty() {
        out.verdict = Verdict::Fail;
        out.detail = broken.join("; ");
    }
    out
}

/// The volume gate's outcome: below `min` requests, inconclusive.
pub fn judge_volume(min: f64, query: String, value: Measured) -> Outcome {
    let mut out = Outcome {
        name: "volume".into(),
        query,
        value: None,
        baseline: None,
        rule: format!(">= {min} requests"),
        verdict: Verdict::Pass,
        detail: String::new(),
        critical: false,
    };
    match value {
        Measured::Value(v) => {
            out.value = Some(v);
            if v < min {
                out.verdict = Verdict::Inconclusive;
                out.detail = format!("volume {v} below the gate {min}");
            }
        }
        Measured::Missing(why) => {
            out.verdict = Verdict::Inconclusive;
            out.detail = format!("no volume: {why}");
        }
        Measured::Error(why) => {
            out.verdict = Verdict::Error;
            out.detail = why;
        }
    }
    out
}

/// The share check: the measured pool's share of the requests of every
/// pool (`rates`, the measured pool's first) against `expected` (its
/// weight's share), within `tolerance`. A mismatch holds.
pub fn judge_share(tolerance: f64, expected: f64, query: String, rates: Vec<Measured>) -> Outcome {
    let mut out = Outcome {
        name: "share".into(),
        query,
        value: None,
        baseline: Some(expected),
        rule: format!("within {tolerance} of the weight's share {expected:.3}"),
        verdict: Verdict::Pass,
        detail: String::new(),
        critical: false,
    };
    let mut values = Vec::new();
    for r in rates {
        match r {
            Measured::Value(v) => values.push(v),
            // A pool that has no series has no requests.
            Measured::Missing(_) => values.push(0.0),
            Measured::Error(why) => {
                out.verdict = Verdict::Error;
                out.detail = why;
                return out;
            }
        }
    }
    let total: f64 = values.iter().sum();
    if total <= 0.0 || !total.is_finite() {
        out.verdict = Verdict::Inconclusive;
        out.detail = "no requests reached any pool".into();
        return out;
    }
    let share = values.first().copied().unwrap_or(0.0) / total;
    out.value = Some(share);
    if (share - expected).abs() > tolerance {
        out.verdict = Verdict::Inconclusive;
        out.detail = format!(
            "share mismatch: {share:.3} of the requests reached the pool, its weight gives {expected:.3}"
        );
    }
    out
}

/// The automation's state, as status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Off,
    Running,
    Holding,
    Paused,
    Failed,
    Done,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Running => "running",
            Mode::Holding => "holding",
            Mode::Paused => "paused",
            Mode::Failed => "failed",
            Mode::Done => "done",
        }
    }
}

/// Consecutive counts in the current phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub passes: u32,
    pub failures: u32,
    pub errors: u32,
    pub inconclusive: u32,
}

/// What the machine sees of the service now.
#[derive(Debug, Clone)]
pub struct View<'a> {
    pub analysis: &'a Analysis,
    /// The current phase's name and its `auto`.
    pub phase: &'a str,
    pub auto: Option<Auto>,
    /// The current phase is the last one.
    pub last: bool,
    /// The measured pool has weight in the current phase.
    pub measured: bool,
    /// Unix ms when the current phase was entered.
    pub since_ms: u64,
    /// Settle after entering it.
    pub settle: Duration,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing until the next tick; `why` says what is awaited.
    Wait { why: String },
    /// Ask the provider now.
    Evaluate,
    /// Advance to the next phase (actor `auto`), `reason` with the measurements.
    Advance { reason: String },
    /// Roll back to the phase where automation started; then failed.
    Rollback { reason: String },
    /// Pause, weights unchanged.
    Pause { why: String },
    /// The last phase is reached.
    Done,
}

/// The machine of one service while automation runs. Serialized as the
/// counts a cluster's next evaluator starts from.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Machine {
    /// The phase the counters belong to.
    pub phase: String,
    pub counters: Counters,
    /// Unix ms of the next evaluation (0: as soon as settled).
    pub next_eval_ms: u64,
    /// The last evaluation's outcomes.
    pub last: Vec<Outcome>,
    /// Why the machine holds, if it does.
    pub holding: Option<String>,
}

/// First retry after a provider error; doubled per consecutive error, at
/// most the interval.
pub const ERROR_BACKOFF: Duration = Duration::from_secs(1);

impl Machine {
    /// Unix ms from which an evaluation may be asked: its window
    /// (`interval`) starts after entering plus settle.
    pub fn first_eval_ms(view: &View<'_>) -> u64 {
        view.since_ms + (view.settle + view.analysis.interval).as_millis() as u64
    }

    /// Counters start again in another phase.
    fn follow(&mut self, phase: &str) {
        if self.phase != phase {
            *self = Machine {
                phase: phase.to_string(),
                ..Machine::default()
            };
        }
    }

    /// What to do at `now_ms`.
    pub fn next(&mut self, view: &View<'_>, now_ms: u64) -> Action {
        self.follow(view.phase);
        if view.last {
            return Action::Done;
        }
        let Some(auto) = view.auto else {
            return self.hold(format!(
                "phase {:?} is a manual gate: it waits for a person",
                view.phase
            ));
        };
        let in_phase = now_ms.saturating_sub(view.since_ms);
        let after_ms = auto.after.as_millis() as u64;
        if !view.measured {
            // Nothing to measure: the pool gets no traffic here.
            if in_phase >= after_ms {
                return Action::Advance {
                    reason: format!(
                        "{} in phase {:?}; the measured pool has no weight in it, nothing to measure",
                        secs(in_phase),
                        view.phase
                    ),
                };
            }
            return self.hold(format!(
                "min time: {} left (the measured pool has no weight here)",
                secs(after_ms - in_phase)
            ));
        }
        let first = Self::first_eval_ms(view);
        if now_ms < first {
            return self.hold(format!(
                "settling: {} left before the first window",
                secs(first - now_ms)
            ));
        }
        if self.counters.passes >= auto.passes {
            if in_phase >= after_ms {
                return Action::Advance {
                    reason: self.advance_reason(view, in_phase),
                };
            }
            self.holding = Some(format!("min time: {} left", secs(after_ms - in_phase)));
        }
        if now_ms >= self.next_eval_ms {
            return Action::Evaluate;
        }
        Action::Wait {
            why: self.holding.clone().unwrap_or_default(),
        }
    }

    fn hold(&mut self, why: String) -> Action {
        self.holding = Some(why.clone());
        Action::Wait { why }
    }

    fn advance_reason(&self, view: &View<'_>, in_phase: u64) -> String {
        format!(
            "{} consecutive passes in {} in phase {:?}: {}",
            self.counters.passes,
            secs(in_phase),
            view.phase,
            measurements(&self.last)
        )
    }

    /// Records an evaluation's outcomes at `now_ms`; says what follows.
    pub fn record(&mut self, view: &View<'_>, now_ms: u64, outcomes: Vec<Outcome>) -> Action {
        self.follow(view.phase);
        let a = view.analysis;
        let interval_ms = a.interval.as_millis() as u64;
        let verdict = overall(&outcomes);
        let critical = outcomes
            .iter()
            .any(|o| o.critical && o.verdict == Verdict::Fail);
        self.last = outcomes;
        self.holding = None;
        let c = &mut self.counters;
        self.next_eval_ms = now_ms + interval_ms;
        match verdict {
            Verdict::Error => {
                c.errors += 1;
                let backoff = ERROR_BACKOFF * 2u32.saturating_pow(c.errors.saturating_sub(1));
                self.next_eval_ms = now_ms + backoff.min(a.interval).as_millis() as u64;
                let why = why(&self.last, Verdict::Error);
                if c.errors >= a.error_limit {
                    return Action::Pause {
                        why: format!(
                            "{} consecutive provider errors (limit {}): {why}",
                            c.errors, a.error_limit
                        ),
                    };
                }
                self.holding = Some(format!(
                    "provider error {} of {}, retrying: {why}",
                    c.errors, a.error_limit
                ));
                Action::Wait {
                    why: self.holding.clone().unwrap_or_default(),
                }
            }
            Verdict::Fail => {
                *c = Counters {
                    failures: c.failures + 1,
                    ..Counters::default()
                };
                let why = why(&self.last, Verdict::Fail);
                if critical || c.failures >= a.failure_limit {
                    let count = if critical {
                        "critical check failed".to_string()
                    } else {
                        format!("{} consecutive failures", c.failures)
                    };
                    return Action::Rollback {
                        reason: format!(
                            "{count} in phase {:?}: {why}; {}",
                            view.phase,
                            measurements(&self.last)
                        ),
                    };
                }
                self.holding = Some(format!(
                    "failure {} of {}: {why}",
                    c.failures, a.failure_limit
                ));
                Action::Wait {
                    why: self.holding.clone().unwrap_or_default(),
                }
            }
            Verdict::Inconclusive => {
                *c = Counters {
                    inconclusive: c.inconclusive + 1,
                    ..Counters::default()
                };
                let why = why(&self.last, Verdict::Inconclusive);
                if c.inconclusive >= a.inconclusive_limit {
                    return Action::Pause {
                        why: format!(
                            "{} consecutive inconclusive evaluations (limit {}): {why}",
                            c.inconclusive, a.inconclusive_limit
                        ),
                    };
                }
                self.holding = Some(format!(
                    "inconclusive {} of {}: {why}",
                    c.inconclusive, a.inconclusive_limit
                ));
                Action::Wait {
                    why: self.holding.clone().unwrap_or_default(),
                }
            }
            Verdict::Pass => {
                *c = Counters {
                    passes: c.passes + 1,
                    ..Counters::default()
                };
                self.next(view, now_ms)
            }
        }
    }
}

/// The evaluation's verdict: a failure on real data first, then an error,
/// then missing data; a pass only when every check passes.
pub fn overall(outcomes: &[Outcome]) -> Verdict {
    [Verdict::Fail, Verdict::Error, Verdict::Inconclusive]
        .into_iter()
        .find(|v| outcomes.iter().any(|o| o.verdict == *v))
        .unwrap_or(Verdict::Pass)
}

/// The details of the outcomes with verdict `v`.
fn why(outcomes: &[Outcome], v: Verdict) -> String {
    outcomes
        .iter()
        .filter(|o| o.verdict == v)
        .map(|o| format!("{}: {}", o.name, o.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every outcome's value and rule, for history and webhooks.
pub fn measurements(outcomes: &[Outcome]) -> String {
    outcomes
        .iter()
        .map(|o| {
            let v = o.value.map_or("none".to_string(), |v| format!("{v}"));
            format!("{}={v} ({}, {})", o.name, o.rule, o.verdict.as_str())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn secs(ms: u64) -> String {
    format!("{}s", ms.div_ceil(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::analysis::ProviderKind;

    fn analysis() -> Analysis {
        Analysis {
            provider: ProviderKind::Prometheus,
            url: "http://127.0.0.1:9".into(),
            pool: 1,
            interval: Duration::from_secs(10),
            skew: Duration::from_secs(5),
            failure_limit: 2,
            error_limit: 3,
            inconclusive_limit: 4,
            notify: vec![],
            checks: vec![],
            volume: None,
            share: None,
        }
    }

    fn view(a: &Analysis) -> View<'_> {
        View {
            analysis: a,
            phase: "canary",
            auto: Some(Auto {
                after: Duration::from_secs(60),
                passes: 3,
            }),
            last: false,
            measured: true,
            since_ms: 1_000_000,
            // TTL 30 s before the change + skew 5 s.
            settle: Duration::from_secs(35),
        }
    }

    fn outcome(v: Verdict, critical: bool) -> Outcome {
        Outcome {
            name: "c".into(),
            query: "q".into(),
            value: Some(1.0),
            baseline: None,
            rule: "<= 2".into(),
            verdict: v,
            detail: v.as_str().into(),
            critical,
        }
    }

    /// What the machine did, in short: "E" evaluated and went on, "W"
    /// waited, "A" advanced, "R" rolled back, "P" paused.
    fn kind(a: &Action) -> &'static str {
        match a {
            Action::Wait { .. } => "W",
            Action::Evaluate => "E",
            Action::Advance { .. } => "A",
            Action::Rollback { .. } => "R",
            Action::Pause { .. } => "P",
            Action::Done => "D",
        }
    }

    /// Drives the machine every second from the phase's start for `secs`
    /// seconds, answering each evaluation with the next verdict of `seq`
    /// (`p`, `f`, `F` critical fail, `i`, `e`); returns the second and the
    /// action of the first step that is not a wait or evaluation, and how
    /// many evaluations were asked.
    fn drive(seq: &str, secs: u64) -> (Option<(u64, String)>, usize, Machine) {
        let a = analysis();
        let v = view(&a);
        let mut m = Machine::default();
        let mut seq = seq.chars();
        let mut asked = 0;
        for s in 0..=secs {
            let now = v.since_ms + s * 1000;
            let mut act = m.next(&v, now);
            if act == Action::Evaluate {
                asked += 1;
                // An evaluation's window must start after since + settle.
                assert!(now - a.interval.as_millis() as u64 >= v.since_ms + 35_000);
                let verdict = match seq.next() {
                    Some('p') | None => (Verdict::Pass, false),
                    Some('f') => (Verdict::Fail, false),
                    Some('F') => (Verdict::Fail, true),
                    Some('i') => (Verdict::Inconclusive, false),
                    Some('e') => (Verdict::Error, false),
                    Some(c) => panic!("verdict {c}"),
                };
                act = m.record(&v, now, vec![outcome(verdict.0, verdict.1)]);
            }
            if !matches!(act, Action::Wait { .. } | Action::Evaluate) {
                return (Some((s, kind(&act).to_string())), asked, m);
            }
        }
        (None, asked, m)
    }

    #[test]
    fn verdict_sequences_lead_where_the_failure_table_says() {
        // (sequence, seconds driven, expected (second, action), evaluations asked)
        /// (sequence, seconds driven, expected (second, action), evaluations asked)
        type Row = (&'static str, u64, Option<(u64, &'static str)>, usize);
        let table: &[Row] = &[
            // Settle 35 s + window 10 s: the first evaluation at 45 s; three
            // passes at 45, 55, 65 s; min time 60 s is then over: advance.
            ("ppp", 200, Some((65, "A")), 3),
            // A failure resets the passes; two in a row roll back.
            ("pfpp", 200, Some((85, "A")), 5),
            ("pff", 200, Some((65, "R")), 3),
            // A critical failure rolls back at once.
            ("pF", 200, Some((55, "R")), 2),
            // Inconclusive never advances; four in a row pause.
            ("iiii", 200, Some((75, "P")), 4),
            ("ipiipiii", 120, None, 8),
            // Errors retry with backoff (1, 2 s) and pause at the third,
            // never rolling back nor advancing.
            ("eee", 200, Some((48, "P")), 3),
            ("eepppp", 200, Some((68, "A")), 5),
        ];
        for (seq, secs, want, asked) in table {
            let (got, n, _) = drive(seq, *secs);
            let got = got.as_ref().map(|(s, a)| (*s, a.as_str()));
            assert_eq!(got, *want, "sequence {seq}");
            assert_eq!(n, *asked, "evaluations for {seq}");
        }
    }

    #[test]
    fn nothing_is_evaluated_before_settle_and_one_window() {
        let a = analysis();
        let v = view(&a);
        let mut m = Machine::default();
        for s in 0..45 {
            let act = m.next(&v, v.since_ms + s * 1000);
            assert!(
                matches!(act, Action::Wait { ref why } if why.starts_with("settling")),
                "{s}: {act:?}"
            );
        }
        assert_eq!(m.next(&v, v.since_ms + 45_000), Action::Evaluate);
    }

    #[test]
    fn passes_before_the_min_time_hold_until_it() {
        let a = analysis();
        let mut v = view(&a);
        v.auto = Some(Auto {
            after: Duration::from_secs(100),
            passes: 1,
        });
        let mut m = Machine::default();
        let act = m.record(&v, v.since_ms + 45_000, vec![outcome(Verdict::Pass, false)]);
        assert!(
            matches!(act, Action::Wait { ref why } if why.contains("min time")),
            "{act:?}"
        );
        assert!(matches!(
            m.next(&v, v.since_ms + 100_000),
            Action::Advance { .. }
        ));
    }

    #[test]
    fn a_new_phase_starts_the_counters_again_and_the_last_is_done() {
        let a = analysis();
        let mut v = view(&a);
        let mut m = Machine::default();
        m.record(&v, v.since_ms + 45_000, vec![outcome(Verdict::Fail, false)]);
        assert_eq!(m.counters.failures, 1);
        v.phase = "half";
        m.next(&v, v.since_ms);
        assert_eq!(m.counters, Counters::default());
        v.last = true;
        assert_eq!(m.next(&v, v.since_ms), Action::Done);
        v.last = false;
        v.auto = None;
        assert!(
            matches!(m.next(&v, v.since_ms), Action::Wait { ref why } if why.contains("manual gate"))
        );
    }

    #[test]
    fn rules_judge_values_baselines_and_missing_data() {
        let check = |min, max, baseline: Option<usize>, ratio, delta, missing_fails| Check {
            name: "c".into(),
            query: "q{pool}".into(),
            min,
            max,
            baseline,
            max_ratio: ratio,
            max_delta: delta,
            critical: false,
            missing_fails,
        };
        let v = |x| Measured::Value(x);
        let none = || Measured::Missing("empty result".into());
        let err = || Measured::Error("connection refused".into());
        let cases: Vec<(Check, Measured, Option<Measured>, Verdict)> = vec![
            (
                check(None, Some(0.01), None, None, None, false),
                v(0.005),
                None,
                Verdict::Pass,
            ),
            (
                check(None, Some(0.01), None, None, None, false),
                v(0.02),
                None,
                Verdict::Fail,
            ),
            (
                check(Some(0.5), None, None, None, None, false),
                v(0.4),
                None,
                Verdict::Fail,
            ),
            (
                check(None, Some(0.01), None, None, None, false),
                none(),
                None,
                Verdict::Inconclusive,
            ),
            (
                check(None, Some(0.01), None, None, None, true),
                none(),
                None,
                Verdict::Fail,
            ),
            (
                check(None, Some(0.01), None, None, None, false),
                err(),
                None,
                Verdict::Error,
            ),
            // new at most 1.5 × old + 0.002.
            (
                check(None, None, Some(0), Some(1.5), Some(0.002), false),
                v(0.008),
                Some(v(0.004)),
                Verdict::Pass,
            ),
            (
                check(None, None, Some(0), Some(1.5), Some(0.002), false),
                v(0.0081),
                Some(v(0.004)),
                Verdict::Fail,
            ),
            (
                check(None, None, Some(0), None, Some(0.002), false),
                v(0.003),
                Some(none()),
                Verdict::Inconclusive,
            ),
            (
                check(None, None, Some(0), None, Some(0.002), false),
                v(0.003),
                Some(err()),
                Verdict::Error,
            ),
        ];
        for (i, (c, m, b, want)) in cases.into_iter().enumerate() {
            let o = judge(&c, "q".into(), m, b);
            assert_eq!(o.verdict, want, "case {i}: {o:?}");
        }
        assert_eq!(
            judge_volume(100.0, "q".into(), v(99.0)).verdict,
            Verdict::Inconclusive
        );
        assert_eq!(
            judge_volume(100.0, "q".into(), v(100.0)).verdict,
            Verdict::Pass
        );
        // 20 % weight; 19 % measured is within 5 points, 10 % is not.
        assert_eq!(
            judge_share(0.05, 0.2, "q".into(), vec![v(19.0), v(81.0)]).verdict,
            Verdict::Pass
        );
        let o = judge_share(0.05, 0.2, "q".into(), vec![v(10.0), v(90.0)]);
        assert_eq!(o.verdict, Verdict::Inconclusive);
        assert!(o.detail.starts_with("share mismatch"), "{}", o.detail);
        assert_eq!(
            judge_share(0.05, 0.2, "q".into(), vec![v(1.0), err()]).verdict,
            Verdict::Error
        );
    }

    #[test]
    fn a_failure_outranks_an_error_which_outranks_missing_data() {
        let o = |v| outcome(v, false);
        assert_eq!(
            overall(&[o(Verdict::Error), o(Verdict::Fail)]),
            Verdict::Fail
        );
        assert_eq!(
            overall(&[o(Verdict::Inconclusive), o(Verdict::Error)]),
            Verdict::Error
        );
        assert_eq!(
            overall(&[o(Verdict::Pass), o(Verdict::Inconclusive)]),
            Verdict::Inconclusive
        );
        assert_eq!(overall(&[o(Verdict::Pass)]), Verdict::Pass);
    }
}
