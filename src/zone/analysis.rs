//! Automatic progression keys of a zone file (issue 17): the raw
//! `[service.analysis]` table with its checks, volume gate and share check,
//! and a phase's `auto = { after, passes }`, validated into [`Analysis`] and
//! [`Auto`]. Validation only: the machine that uses them is
//! [`crate::analysis`].

use super::*;

/// Default time between evaluations, and default window of a query.
pub const DEFAULT_ANALYSIS_INTERVAL: Duration = Duration::from_secs(30);
/// Default margin added to the TTL served before a change (clock skew,
/// scrape delay) before an evaluation's window may start.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(5);
/// Default consecutive failed evaluations before a rollback.
pub const DEFAULT_FAILURE_LIMIT: u32 = 2;
/// Default consecutive provider errors before automation pauses.
pub const DEFAULT_ERROR_LIMIT: u32 = 5;
/// Default consecutive inconclusive evaluations before automation pauses.
pub const DEFAULT_INCONCLUSIVE_LIMIT: u32 = 10;
/// Upper bound on a provider query's timeout.
pub const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
pub(super) struct AnalysisSpec {
    #[serde(default = "absent")]
    pub(super) provider: Spanned<String>,
    #[serde(default = "absent")]
    pub(super) url: Spanned<String>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) pool: Option<Spanned<String>>,
    pub(super) interval: Option<Spanned<DurationSpec>>,
    pub(super) skew: Option<Spanned<DurationSpec>>,
    pub(super) failure_limit: Option<Spanned<i64>>,
    pub(super) error_limit: Option<Spanned<i64>>,
    pub(super) inconclusive_limit: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) notify: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) check: Vec<Spanned<CheckSpec>>,
    pub(super) volume: Option<Spanned<VolumeSpec>>,
    pub(super) share: Option<Spanned<ShareSpec>>,
}

#[derive(Deserialize)]
pub(super) struct CheckSpec {
    #[serde(default = "absent")]
    pub(super) name: Spanned<String>,
    #[serde(default = "absent")]
    pub(super) query: Spanned<String>,
    pub(super) min: Option<Spanned<Value>>,
    pub(super) max: Option<Spanned<Value>>,
    pub(super) baseline: Option<Spanned<String>>,
    pub(super) max_ratio: Option<Spanned<Value>>,
    pub(super) max_delta: Option<Spanned<Value>>,
    pub(super) critical: Option<Spanned<Value>>,
    pub(super) missing: Option<Spanned<String>>,
}

#[derive(Deserialize)]
pub(super) struct VolumeSpec {
    #[serde(default = "absent")]
    pub(super) query: Spanned<String>,
    #[serde(default = "absent_value")]
    pub(super) min: Spanned<Value>,
}

#[derive(Deserialize)]
pub(super) struct ShareSpec {
    #[serde(default = "absent")]
    pub(super) query: Spanned<String>,
    #[serde(default = "absent_value")]
    pub(super) tolerance: Spanned<Value>,
}

#[derive(Deserialize)]
pub(super) struct AutoSpec {
    #[serde(default = "absent")]
    pub(super) after: Spanned<DurationSpec>,
    #[serde(default = "absent")]
    pub(super) passes: Spanned<i64>,
}

/// A required number left out (see [`absent`]).
fn absent_value() -> Spanned<Value> {
    Spanned::new(0..0, Value::Integer(0))
}

impl Default for DurationSpec {
    fn default() -> Self {
        DurationSpec::Seconds(0)
    }
}

/// Where the numbers come from, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    /// Prometheus' HTTP API at `url`.
    Prometheus,
    /// A JSON URL; the number is at the dotted `path`.
    Web { path: String },
}

/// A service's analysis: how its pool is measured while automation runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// The provider and its base URL.
    pub provider: ProviderKind,
    pub url: String,
    /// Index of the pool measured (`{pool}`): `pool`, by default `new`.
    pub pool: usize,
    /// Time between evaluations; also the `{window}` of the queries.
    pub interval: Duration,
    /// Added to the TTL served before a change to get its settle time.
    pub skew: Duration,
    /// Consecutive failed evaluations before a rollback.
    pub failure_limit: u32,
    /// Consecutive provider errors before pausing.
    pub error_limit: u32,
    /// Consecutive inconclusive evaluations before pausing.
    pub inconclusive_limit: u32,
    /// Webhook URLs told of every automatic transition, pause, failure and completion.
    pub notify: Vec<String>,
    /// The checks, in the order written.
    pub checks: Vec<Check>,
    /// The volume gate: below `min` requests in the window, inconclusive.
    pub volume: Option<Volume>,
    /// The traffic-share check.
    pub share: Option<Share>,
}

/// One check: a query and the rule its value must keep.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    /// Query template: `{service}`, `{pool}` and `{window}` are replaced.
    pub query: String,
    /// Absolute bounds.
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Relative rule: the same query for this pool (index), the measured
    /// value at most `max_ratio` × baseline + `max_delta`.
    pub baseline: Option<usize>,
    pub max_ratio: Option<f64>,
    pub max_delta: Option<f64>,
    /// One failure rolls back at once.
    pub critical: bool,
    /// Missing data (empty, NaN) is a failure, not inconclusive.
    pub missing_fails: bool,
}

/// The volume gate.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub query: String,
    pub min: f64,
}

/// The traffic-share check: the per-pool request-rate query and how far
/// the measured share may be from the phase's weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub query: String,
    pub tolerance: f64,
}

/// A phase that advances by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auto {
    /// Minimum time in the phase.
    pub after: Duration,
    /// Consecutive passing evaluations required.
    pub passes: u32,
}

impl Analysis {
    /// Settle after a change away from answers with TTL `ttl_before`:
    /// the longest TTL served before it plus the skew.
    pub fn settle(&self, ttl_before: u32) -> Duration {
        Duration::from_secs(u64::from(ttl_before)) + self.skew
    }

    /// The least time in a phase that fits settle, one window and
    /// `passes` evaluations: settle + window + (passes − 1) × interval.
    pub fn least_time(&self, ttl_before: u32, passes: u32) -> Duration {
        self.settle(ttl_before) + self.interval + self.interval * passes.saturating_sub(1)
    }

    /// A query's timeout: half the interval, at most [`MAX_QUERY_TIMEOUT`].
    pub fn timeout(&self) -> Duration {
        (self.interval / 2).min(MAX_QUERY_TIMEOUT)
    }
}

/// Replaces `{service}`, `{pool}` and `{window}` in a query.
pub fn template(query: &str, service: &str, pool: &str, window: Duration) -> String {
    query
        .replace("{service}", service)
        .replace("{pool}", pool)
        .replace("{window}", &prom_duration(window))
}

/// A duration as PromQL writes it: whole seconds ("30s"), or milliseconds.
pub fn prom_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Validates `[service.analysis]`; `pools` are the pool names in order,
/// `staging_pool` the name the measured pool defaults to.
pub(super) fn build_analysis(
    src: &Source,
    spec: &Spanned<AnalysisSpec>,
    pools: &[&str],
    k: &dyn Fn(&str) -> String,
    errs: &mut Vec<ConfigError>,
) -> Option<Analysis> {
    let before = errs.len();
    let table = k("analysis");
    let span = spec.span();
    let a = spec.get_ref();
    let provider = if missing(
        src,
        is_absent(&a.provider),
        span.clone(),
        &table,
        "provider",
        errs,
    ) {
        None
    } else {
        match (a.provider.get_ref().as_str(), &a.path) {
            ("prometheus", None) => Some(ProviderKind::Prometheus),
            ("prometheus", Some(p)) => {
                errs.push(src.error(
                    p.span(),
                    &format!("{table}.path"),
                    "`path` is for provider \"web\"; prometheus answers one number per query",
                ));
                None
            }
            ("web", Some(p)) if !p.get_ref().trim().is_empty() => Some(ProviderKind::Web {
                path: p.get_ref().trim().to_string(),
            }),
            ("web", Some(p)) => {
                errs.push(src.error(p.span(), &format!("{table}.path"), "empty path"));
                None
            }
            ("web", None) => {
                errs.push(src.error(
                    a.provider.span(),
                    &format!("{table}.path"),
                    "provider \"web\" needs `path`: where the number is in the JSON (\"data.ratio\")",
                ));
                None
            }
            (other, _) => {
                errs.push(src.error(
                    a.provider.span(),
                    &format!("{table}.provider"),
                    format!("unknown provider {other:?} (expected \"prometheus\" or \"web\")"),
                ));
                None
            }
        }
    };
    let url = if missing(src, is_absent(&a.url), span.clone(), &table, "url", errs) {
        None
    } else {
        http_url(src, &a.url, &format!("{table}.url"), errs)
    };
    let pool_name = a.pool.as_ref().map_or("new", |p| p.get_ref().as_str());
    let pool = match pools.iter().position(|&p| p == pool_name) {
        Some(i) => Some(i),
        None => {
            let (sp, key) = match &a.pool {
                Some(p) => (p.span(), format!("{table}.pool")),
                None => (span.clone(), table.clone()),
            };
            if !pools.is_empty() {
                errs.push(src.error(
                    sp,
                    &key,
                    format!(
                        "the measured pool {pool_name:?} does not exist (pools: {}; set `pool`)",
                        pools.join(", ")
                    ),
                ));
            }
            None
        }
    };
    let dur = |v: &Option<Spanned<DurationSpec>>,
               key: &str,
               default: Duration,
               errs: &mut Vec<_>| {
        match v {
            Some(v) => src
                .duration(v, &format!("{table}.{key}"))
                .map_err(|e| errs.push(e))
                .unwrap_or(default),
            None => default,
        }
    };
    let interval = dur(&a.interval, "interval", DEFAULT_ANALYSIS_INTERVAL, errs);
    if let Some(v) = &a.interval
        && errs.len() == before
        && interval < Duration::from_secs(1)
    {
        errs.push(src.error(
            v.span(),
            &format!("{table}.interval"),
            "the interval must be at least 1s: Prometheus' resolution",
        ));
    }
    let skew = dur(&a.skew, "skew", DEFAULT_SKEW, errs);
    let limit = |v: &Option<Spanned<i64>>, key: &str, default: u32, errs: &mut Vec<_>| match v {
        Some(v) => match u32::try_from(*v.get_ref()) {
            Ok(n) if n >= 1 => n,
            _ => {
                errs.push(src.error(
                    v.span(),
                    &format!("{table}.{key}"),
                    format!("must be a count of at least 1, not {}", v.get_ref()),
                ));
                default
            }
        },
        None => default,
    };
    let failure_limit = limit(
        &a.failure_limit,
        "failure_limit",
        DEFAULT_FAILURE_LIMIT,
        errs,
    );
    let error_limit = limit(&a.error_limit, "error_limit", DEFAULT_ERROR_LIMIT, errs);
    let inconclusive_limit = limit(
        &a.inconclusive_limit,
        "inconclusive_limit",
        DEFAULT_INCONCLUSIVE_LIMIT,
        errs,
    );
    let notify = a
        .notify
        .iter()
        .filter_map(|u| http_url(src, u, &format!("{table}.notify"), errs))
        .collect();

    let mut checks = Vec::new();
    let mut names = HashSet::new();
    for (i, c) in a.check.iter().enumerate() {
        let cspan = c.span();
        let c = c.get_ref();
        let cname = c.name.get_ref().trim().to_string();
        let key = if cname.is_empty() {
            format!("{table}.check[{i}]")
        } else {
            format!("{table}.check.{cname}")
        };
        if missing(src, is_absent(&c.name), cspan.clone(), &key, "name", errs) {
            continue;
        }
        if cname.is_empty() {
            errs.push(src.error(c.name.span(), &key, "a check needs a name"));
            continue;
        }
        if !names.insert(cname.clone()) {
            errs.push(src.error(
                c.name.span(),
                &key,
                format!("duplicate check name {cname:?}"),
            ));
            continue;
        }
        let cb = errs.len();
        let query = query(src, &c.query, cspan.clone(), &key, errs);
        let baseline = c.baseline.as_ref().and_then(|b| {
            let bkey = format!("{key}.baseline");
            match pools.iter().position(|&p| p == b.get_ref()) {
                Some(i) if Some(i) == pool => {
                    errs.push(src.error(
                        b.span(),
                        &bkey,
                        format!(
                            "the baseline must be another pool than the measured {pool_name:?}"
                        ),
                    ));
                    None
                }
                Some(i) => Some(i),
                None => {
                    errs.push(src.error(
                        b.span(),
                        &bkey,
                        format!(
                            "no pool named {:?} (pools: {})",
                            b.get_ref(),
                            pools.join(", ")
                        ),
                    ));
                    None
                }
            }
        });
        let number = |v: &Option<Spanned<Value>>, name: &str, errs: &mut Vec<_>| {
            v.as_ref()
                .and_then(|v| number(src, v, &format!("{key}.{name}"), errs))
        };
        let (min, max) = (number(&c.min, "min", errs), number(&c.max, "max", errs));
        let (max_ratio, max_delta) = (
            number(&c.max_ratio, "max_ratio", errs),
            number(&c.max_delta, "max_delta", errs),
        );
        if let (Some(lo), Some(hi), Some(v)) = (min, max, &c.min)
            && lo > hi
        {
            errs.push(src.error(
                v.span(),
                &format!("{key}.min"),
                format!("min {lo} is above max {hi}: no value could pass"),
            ));
        }
        if let Some(v) = c
            .max_ratio
            .as_ref()
            .filter(|_| max_ratio.is_some_and(|r| r <= 0.0))
        {
            errs.push(src.error(v.span(), &format!("{key}.max_ratio"), "must be above 0"));
        }
        match (&c.baseline, &c.max_ratio, &c.max_delta) {
            (None, Some(v), _) | (None, None, Some(v)) => errs.push(src.error(
                v.span(),
                &key,
                "max_ratio and max_delta compare with a `baseline` pool, which is not given",
            )),
            (Some(b), None, None) => errs.push(src.error(
                b.span(),
                &format!("{key}.baseline"),
                "a baseline needs max_ratio and/or max_delta",
            )),
            _ => {}
        }
        if c.min.is_none() && c.max.is_none() && c.baseline.is_none() && errs.len() == cb {
            errs.push(src.error(
                cspan.clone(),
                &key,
                "a check needs a rule: min and/or max, or a baseline with max_ratio and/or max_delta",
            ));
        }
        let critical = match &c.critical {
            None => false,
            Some(v) => match v.get_ref() {
                Value::Boolean(b) => *b,
                other => {
                    errs.push(src.error(
                        v.span(),
                        &format!("{key}.critical"),
                        format!("must be true or false, not {other}"),
                    ));
                    false
                }
            },
        };
        let missing_fails = match c.missing.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            None | Some(("inconclusive", _)) => false,
            Some(("fail", _)) => true,
            Some((other, sp)) => {
                errs.push(src.error(
                    sp,
                    &format!("{key}.missing"),
                    format!("unknown value {other:?} (expected \"inconclusive\" or \"fail\")"),
                ));
                false
            }
        };
        if errs.len() == cb
            && let Some(query) = query
        {
            checks.push(Check {
                name: cname,
                query,
                min,
                max,
                baseline,
                max_ratio,
                max_delta,
                critical,
                missing_fails,
            });
        }
    }
    let volume = a.volume.as_ref().and_then(|v| {
        let key = format!("{table}.volume");
        let vb = errs.len();
        let q = query(src, &v.get_ref().query, v.span(), &key, errs);
        let min = &v.get_ref().min;
        let mut value = 0.0;
        if !missing(src, is_absent(min), v.span(), &key, "min", errs)
            && let Some(n) = number(src, min, &format!("{key}.min"), errs)
        {
            value = n;
            if n < 0.0 {
                errs.push(src.error(
                    min.span(),
                    &format!("{key}.min"),
                    "must be a number of requests, 0 or more",
                ));
            }
        }
        (errs.len() == vb).then(|| Volume {
            query: q.unwrap_or_default(),
            min: value,
        })
    });
    let share = a.share.as_ref().and_then(|s| {
        let key = format!("{table}.share");
        let sb = errs.len();
        let q = query(src, &s.get_ref().query, s.span(), &key, errs);
        let t = &s.get_ref().tolerance;
        let mut value = 0.0;
        if !missing(src, is_absent(t), s.span(), &key, "tolerance", errs)
            && let Some(n) = number(src, t, &format!("{key}.tolerance"), errs)
        {
            value = n;
            if !(n > 0.0 && n < 1.0) {
                errs.push(src.error(
                    t.span(),
                    &format!("{key}.tolerance"),
                    format!("the tolerance is a share between 0 and 1 (0.05 = 5 points), not {n}"),
                ));
            }
        }
        (errs.len() == sb).then(|| Share {
            query: q.unwrap_or_default(),
            tolerance: value,
        })
    });
    if a.check.is_empty() && errs.len() == before {
        errs.push(src.error(
            span,
            &format!("{table}.check"),
            "an analysis needs at least one [[service.analysis.check]]",
        ));
    }
    if errs.len() != before {
        return None;
    }
    Some(Analysis {
        provider: provider?,
        url: url?,
        pool: pool?,
        interval,
        skew,
        failure_limit,
        error_limit,
        inconclusive_limit,
        notify,
        checks,
        volume,
        share,
    })
}

/// A finite number, integer or float.
fn number(src: &Source, v: &Spanned<Value>, key: &str, errs: &mut Vec<ConfigError>) -> Option<f64> {
    match v.get_ref() {
        Value::Integer(n) => Some(*n as f64),
        Value::Float(f) if f.is_finite() => Some(*f),
        other => {
            errs.push(src.error(
                v.span(),
                key,
                format!("must be a finite number, not {other}"),
            ));
            None
        }
    }
}

/// A query template: required, and it must name `{pool}`, or every pool
/// would be measured the same.
fn query(
    src: &Source,
    q: &Spanned<String>,
    table_span: Range<usize>,
    table: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<String> {
    if missing(src, is_absent(q), table_span, table, "query", errs) {
        return None;
    }
    let text = q.get_ref().trim();
    if !text.contains("{pool}") {
        errs.push(src.error(
            q.span(),
            &format!("{table}.query"),
            "the query must contain {pool}: it is asked once per pool (and {window}, {service} where they belong)",
        ));
        return None;
    }
    Some(text.to_string())
}

/// An `http://` or `https://` URL with a host.
fn http_url(
    src: &Source,
    v: &Spanned<String>,
    key: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<String> {
    let s = v.get_ref().trim();
    match reqwest::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Some(s.to_string())
        }
        Ok(u) => {
            errs.push(src.error(
                v.span(),
                key,
                format!(
                    "{s:?} is not an http:// or https:// URL (scheme {:?})",
                    u.scheme()
                ),
            ));
            None
        }
        Err(e) => {
            errs.push(src.error(v.span(), key, format!("invalid URL {s:?}: {e}")));
            None
        }
    }
}

/// Validates the `auto` of each phase (`specs`, in order, beside the built
/// `phases`): it needs an analysis, and its `after` must fit the timing
/// rule. Returns one entry per phase.
#[allow(clippy::too_many_arguments)]
pub(super) fn build_auto(
    src: &Source,
    specs: &[Spanned<PhaseSpec>],
    phases: &[Phase],
    service_ttl: u32,
    analysis: Option<&Analysis>,
    has_analysis: bool,
    k: &dyn Fn(&str) -> String,
    errs: &mut Vec<ConfigError>,
) -> Vec<Option<Auto>> {
    let mut out = vec![None; phases.len()];
    let mut unmeasured = Vec::new();
    for spec in specs {
        let p = spec.get_ref();
        let Some(auto) = &p.auto else { continue };
        let name = p.name.get_ref().trim();
        let Some(i) = phases.iter().position(|ph| ph.name == name) else {
            continue;
        };
        let key = format!("{}.auto", k(&format!("phase.{name}")));
        let before = errs.len();
        let a = auto.get_ref();
        let after = if missing(src, is_absent(&a.after), auto.span(), &key, "after", errs) {
            None
        } else {
            src.duration(&a.after, &format!("{key}.after"))
                .map_err(|e| errs.push(e))
                .ok()
        };
        let passes = if missing(src, is_absent(&a.passes), auto.span(), &key, "passes", errs) {
            None
        } else {
            match u32::try_from(*a.passes.get_ref()) {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    errs.push(src.error(
                        a.passes.span(),
                        &format!("{key}.passes"),
                        format!("must be a count of at least 1, not {}", a.passes.get_ref()),
                    ));
                    None
                }
            }
        };
        if !has_analysis {
            unmeasured.push((auto.span(), key, name.to_string()));
            continue;
        }
        let (Some(after), Some(passes), Some(an)) = (after, passes, analysis) else {
            continue;
        };
        if errs.len() != before {
            continue;
        }
        // The TTL served before entering this phase by an advance.
        let ttl_before = match i {
            0 => phases[0].ttl.unwrap_or(service_ttl),
            _ => phases[i - 1].ttl.unwrap_or(service_ttl),
        };
        let least = an.least_time(ttl_before, passes);
        if after < least {
            let settle = an.settle(ttl_before);
            let fit = (after.saturating_sub(settle + an.interval).as_millis()
                / an.interval.as_millis().max(1)) as u64
                + 1;
            let fit = if after >= settle + an.interval {
                format!("; in {} at most {fit} passes fit", fmt_d(after))
            } else {
                String::new()
            };
            errs.push(src.error(
                a.after.span(),
                &format!("{key}.after"),
                format!(
                    "{} cannot fit settle ({}: TTL {ttl_before}s before the change + skew {}) + one window ({}) + {} more intervals for {passes} passes: after must be at least {}{fit}",
                    fmt_d(after),
                    fmt_d(settle),
                    fmt_d(an.skew),
                    fmt_d(an.interval),
                    passes - 1,
                    fmt_d(least),
                ),
            ));
            continue;
        }
        out[i] = Some(Auto { after, passes });
    }
    // One mistake, however many phases are automatic: the missing table.
    if let Some((span, key, _)) = unmeasured.first() {
        let also = match &unmeasured[1..] {
            [] => String::new(),
            more => format!(
                " (so do phases {})",
                more.iter()
                    .map(|(_, _, n)| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        errs.push(src.error(
            span.clone(),
            key,
            format!("an automatic phase needs [service.analysis] to measure it{also}"),
        ));
    }
    out
}

fn fmt_d(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Unknown keys of `[service.analysis]` and its tables, and of the
/// phases' `auto`.
pub(super) fn unknown_analysis_keys(
    src: &Source,
    service: &toml::de::DeTable<'_>,
    prefix: &str,
    errs: &mut Vec<ConfigError>,
) {
    use crate::config::source::{fields, sub_table};
    let Some(a) = sub_table(service, "analysis") else {
        return;
    };
    let key = format!("{prefix}.analysis");
    src.unknown_keys(a, &key, fields::<AnalysisSpec>(), errs);
    for (name, fs) in [
        ("volume", fields::<VolumeSpec>()),
        ("share", fields::<ShareSpec>()),
    ] {
        if let Some(t) = sub_table(a, name) {
            src.unknown_keys(t, &format!("{key}.{name}"), fs, errs);
        }
    }
    let checks = a
        .get("check")
        .and_then(|v| v.get_ref().as_array())
        .into_iter()
        .flatten()
        .filter_map(|v| v.get_ref().as_table());
    for (i, c) in checks.enumerate() {
        let ck = match c.get("name").and_then(|n| n.get_ref().as_str()) {
            Some(n) if !n.trim().is_empty() => format!("{key}.check.{}", n.trim()),
            _ => format!("{key}.check[{i}]"),
        };
        src.unknown_keys(c, &ck, fields::<CheckSpec>(), errs);
    }
}

/// Unknown keys of a phase's `auto` table.
pub(super) fn unknown_auto_keys(
    src: &Source,
    phase: &toml::de::DeTable<'_>,
    key: &str,
    errs: &mut Vec<ConfigError>,
) {
    use crate::config::source::{fields, sub_table};
    if let Some(t) = sub_table(phase, "auto") {
        src.unknown_keys(t, &format!("{key}.auto"), fields::<AutoSpec>(), errs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_analysis_table_builds_with_its_defaults_and_timing() {
        let text = include_str!("../../tests/fixtures/analysis-zone.toml");
        let z = crate::zone::parse(&Source {
            path: "analysis-zone.toml".into(),
            text: text.into(),
        })
        .unwrap();
        let s = &z.services[0];
        let a = s.analysis.as_ref().unwrap();
        assert_eq!(a.provider, ProviderKind::Prometheus);
        assert_eq!(s.pools[a.pool].name, "new");
        assert_eq!(a.interval, Duration::from_secs(2));
        assert_eq!(
            (a.failure_limit, a.error_limit, a.inconclusive_limit),
            (2, 3, 4)
        );
        assert_eq!(a.checks.len(), 2);
        assert_eq!(a.checks[1].baseline, Some(0));
        assert_eq!(a.checks[1].max_ratio, Some(1.5));
        assert_eq!(a.volume.as_ref().unwrap().min, 10.0);
        assert_eq!(a.share.as_ref().unwrap().tolerance, 0.1);
        let auto: Vec<_> = s.auto.iter().map(|a| a.map(|a| a.passes)).collect();
        assert_eq!(auto, [None, Some(2), Some(2), None]);
        // TTL 2 s + skew 1 s + window 2 s + 1 more interval for 2 passes.
        assert_eq!(a.least_time(2, 2), Duration::from_secs(7));
        assert_eq!(
            template(&a.checks[0].query, "www", "new", a.interval),
            r#"sum(rate(lb_requests_total{pool="new",code=~"5.."}[2s])) / sum(rate(lb_requests_total{pool="new"}[2s]))"#
        );
    }
}
