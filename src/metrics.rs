//! Prometheus exposition for `/metrics`. Query and answer counters are
//! plain atomics on the DNS path (see [`crate::stats::Stats`]); they are
//! read into a fresh registry at scrape time, together with the health
//! probe histograms the checker keeps and gauges derived from the current
//! state. Nothing here runs on the query path.

use std::sync::atomic::Ordering;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::answer::{self, Live};
use crate::dns::fast::Counters as DataPath;
use crate::health::Labels;
use crate::pool::EndpointKey;
use crate::state::State;
use crate::stats::Stats;
use crate::zone::Zone;

type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge>;

/// What the metrics are read from: the inputs of the answers and the
/// counters, never the operator's JSON status.
pub struct Sources<'a> {
    /// The zones served.
    pub zones: &'a [Zone],
    /// Operator state.
    pub state: &'a State,
    /// Endpoint health and the probe histograms.
    pub health: &'a crate::health::Table,
    /// Query and answer counters.
    pub stats: &'a Stats,
    /// SOA serial served.
    pub serial: u32,
    /// The data path's bounds.
    pub datapath: &'a DataPath,
    /// Whether this host reaches etcd (`[cluster]`); `None` for a single host.
    pub etcd_reachable: Option<bool>,
    /// The shared state's epoch this host serves (`[cluster]`); `None` for a
    /// single host.
    pub epoch: Option<i64>,
    /// Automatic progression's checks as this host evaluated them (issue 17).
    pub checks: Vec<CheckMetric>,
}

/// One check of automatic progression, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct CheckMetric {
    pub service: String,
    pub check: String,
    /// The last value measured, if any.
    pub value: Option<f64>,
    /// Evaluations counted by verdict ("pass", "fail", ...).
    pub verdicts: Vec<(String, u64)>,
}

/// Renders every metric in the OpenMetrics text format.
pub fn render(src: &Sources<'_>) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::with_prefix("dnsshift");

    reg.register(
        "build",
        "Version of the running binary and the git commit it was built from",
        Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", env!("DNSSHIFT_COMMIT")),
        ]),
    );

    let queries = Counters::default();
    let mut zone_counters = src.stats.zones();
    zone_counters.push((String::new(), src.stats.unmatched.clone()));
    for (zone, c) in zone_counters {
        for (qtype, proto, rcode, n) in c.snapshot() {
            queries
                .get_or_create(&vec![
                    ("zone", zone.clone()),
                    ("qtype", qtype.to_string()),
                    ("protocol", proto.to_string()),
                    ("rcode", rcode.to_string()),
                ])
                .inc_by(n);
        }
    }
    reg.register(
        "dns_queries",
        "DNS queries answered, by zone (empty: outside every zone), query type, protocol and response code",
        queries,
    );

    let bad = Counters::default();
    let b = &crate::dns::BAD_PACKETS;
    for (problem, n) in [
        ("dropped", &b.dropped),
        ("unparsable", &b.unparsable),
        ("edns_options", &b.edns_options),
    ] {
        bad.get_or_create(&vec![("problem", problem.to_string())])
            .inc_by(n.load(Ordering::Relaxed));
    }
    reg.register(
        "dns_bad_packets",
        "DNS packets dropped unanswered (dropped: responses, runts), answered FORMERR (unparsable) or answered without their EDNS options (edns_options)",
        bad,
    );

    let sticky = Counters::default();
    let c = &crate::answer::sticky::COUNTS;
    for (key, n) in [("ecs", &c.by_ecs), ("resolver", &c.by_resolver)] {
        sticky
            .get_or_create(&vec![("key", key.to_string())])
            .inc_by(n.load(Ordering::Relaxed));
    }
    reg.register(
        "sticky_answers",
        "Sticky answers (assignment = \"sticky\"), by what keyed the pick: the query's client subnet (ecs) or the resolver's network (resolver)",
        sticky,
    );
    let ecs = Counter::<u64>::default();
    ecs.inc_by(c.ecs_queries.load(Ordering::Relaxed));
    reg.register(
        "ecs_queries",
        "Queries answered that carried an EDNS Client Subnet option (RFC 7871), any service and mode",
        ecs,
    );
    let cookies = Counters::default();
    let k = &crate::dns::cookie::COUNTS;
    for (result, n) in [
        ("new", &k.new),
        ("valid", &k.valid),
        ("invalid", &k.invalid),
        ("malformed", &k.malformed),
    ] {
        cookies
            .get_or_create(&vec![("result", result.to_string())])
            .inc_by(n.load(Ordering::Relaxed));
    }
    reg.register(
        "dns_cookies",
        "Queries with a DNS COOKIE option (RFC 7873), by what it was: a client cookie alone (new), a valid server cookie (valid, exempt from RRL), another server cookie (invalid, answered with a new one), a malformed option (malformed, FORMERR)",
        cookies,
    );

    let answers = Counters::default();
    for (key, s) in src.stats.endpoints() {
        for (name, v) in [("main", &s.main), ("staging", &s.staging)] {
            let mut labels = key.labels();
            labels.push(("name", name.to_string()));
            answers
                .get_or_create(&labels)
                .inc_by(v.load(Ordering::Relaxed));
        }
    }
    reg.register(
        "endpoint_answers",
        "Answers that included an endpoint, for the main or the staging name",
        answers,
    );

    let pool_answers = Counters::default();
    for ((service, pool), s) in src.stats.pools() {
        for (name, v) in [("main", &s.main), ("staging", &s.staging)] {
            pool_answers
                .get_or_create(&vec![
                    ("service", service.clone()),
                    ("pool", pool.clone()),
                    ("name", name.to_string()),
                ])
                .inc_by(v.load(Ordering::Relaxed));
        }
    }
    reg.register(
        "pool_answers",
        "Answers that carried a pool, for the main or the staging name",
        pool_answers,
    );

    register_datapath(&mut reg, src.datapath);

    let (zones, state) = (src.zones, src.state);
    let health = src.health.all();
    let live = Live {
        state,
        health: &health,
    };
    let healthy = Gauges::default();
    let disabled = Gauges::default();
    let weight = Gauges::default();
    let phase = Gauges::default();
    let drain = Gauges::default();
    let decommissioned = Gauges::default();
    let fail_open = Gauges::default();
    for s in zones.iter().flat_map(|z| &z.services) {
        let key = s.key();
        let st = state.service(&key);
        let current = &s.phases[state.phase_of(s)];
        let main = answer::decisions(s, &live, false);
        let staging = match s.staging {
            Some(_) => answer::decisions(s, &live, true),
            None => Vec::new(),
        };
        phase
            .get_or_create(&vec![
                ("service", key.clone()),
                ("phase", current.name.clone()),
            ])
            .set(1);
        fail_open
            .get_or_create(&vec![("service", key.clone())])
            .set(i64::from(
                main.iter().chain(&staging).any(|(_, d)| d.fail_open),
            ));
        for (i, p) in s.pools.iter().enumerate() {
            let pl = vec![("service", key.clone()), ("pool", p.name.clone())];
            weight.get_or_create(&pl).set(i64::from(current.weights[i]));
            decommissioned
                .get_or_create(&pl)
                .set(i64::from(st.decommissioned.contains(&p.name)));
            if !answer::answered(&main, i) {
                let ps = src.stats.pool(&key, &p.name, s.max_ttl());
                let d = ps.expires_at_ms.load(Ordering::Relaxed);
                drain.get_or_create(&pl).set((d / 1000) as i64);
            }
            for e in &p.endpoints {
                let ek = EndpointKey::new(&key, &p.name, &e.id);
                let h = health.get(&ek).is_none_or(|h| h.state.healthy);
                let off = st.disabled.contains(&ek.in_service());
                healthy.get_or_create(&ek.labels()).set(i64::from(h));
                disabled.get_or_create(&ek.labels()).set(i64::from(off));
            }
        }
    }
    reg.register(
        "endpoint_healthy",
        "1 if the endpoint is healthy (or not checked), 0 if not",
        healthy,
    );
    reg.register(
        "endpoint_disabled",
        "1 if an operator took the endpoint out of the answers",
        disabled,
    );
    reg.register(
        "pool_weight",
        "Weight of the pool in the current phase",
        weight,
    );
    reg.register(
        "pool_decommissioned",
        "1 if the pool was decommissioned",
        decommissioned,
    );
    reg.register(
        "service_fail_open",
        "1 while the main or the staging name answers fail-open: no endpoint is usable, so all are answered",
        fail_open,
    );
    reg.register(
        "phase_info",
        "Current phase of each service (value always 1)",
        phase,
    );
    reg.register_with_unit(
        "pool_drain_deadline",
        "For a pool the main name does not answer now: the Unix time after which no resolver honouring TTLs can still hold it",
        Unit::Seconds,
        drain,
    );
    let serial = Gauge::<i64>::default();
    serial.set(i64::from(src.serial));
    reg.register("soa_serial", "SOA serial currently served", serial);

    reg.register_with_unit(
        "health_check_duration",
        "Duration of health-check probes",
        Unit::Seconds,
        src.health.check_duration.clone(),
    );
    reg.register(
        "health_check_failures",
        "Failed health-check probes by reason",
        src.health.check_failures.clone(),
    );
    let z = Gauge::<i64>::default();
    z.set(zones.len() as i64);
    reg.register("zones", "Zones served", z);
    if let Some(reachable) = src.etcd_reachable {
        let g = Gauge::<i64>::default();
        g.set(i64::from(reachable));
        reg.register(
            "etcd_reachable",
            "1 while this host reads and watches etcd; 0 while it cannot (it serves the last applied state, commands fail)",
            g,
        );
    }

    if let Some(epoch) = src.epoch {
        let g = Gauge::<i64>::default();
        g.set(epoch);
        reg.register(
            "state_epoch",
            "The shared state's epoch this host serves; a host below the others' maximum lags the cluster",
            g,
        );
    }

    register_checks(&mut reg, &src.checks);

    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

/// The last value and the verdict counts of every check (issue 17).
fn register_checks(reg: &mut Registry, checks: &[CheckMetric]) {
    use std::sync::atomic::AtomicU64;
    let values = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let verdicts = Counters::default();
    for c in checks {
        let labels = vec![("service", c.service.clone()), ("check", c.check.clone())];
        if let Some(v) = c.value {
            values.get_or_create(&labels).set(v);
        }
        for (verdict, n) in &c.verdicts {
            let mut l = labels.clone();
            l.push(("verdict", verdict.clone()));
            verdicts.get_or_create(&l).inc_by(*n);
        }
    }
    reg.register(
        "analysis_check_value",
        "The last value a check of automatic progression measured, by service and check (`volume` and `share` for the built-in ones)",
        values,
    );
    reg.register(
        "analysis_check_verdicts",
        "Evaluations of a check of automatic progression on this host, by service, check and verdict (pass, fail, inconclusive, error)",
        verdicts,
    );
}

/// The data path's bounds: TCP connections and what the caps turned away.
fn register_datapath(reg: &mut Registry, c: &DataPath) {
    let gauge = Gauge::<i64>::default();
    gauge.set(c.tcp_connections.load(Ordering::Relaxed) as i64);
    reg.register("dns_tcp_connections", "DNS TCP connections open now", gauge);
    let cap = Gauge::<i64>::default();
    cap.set(c.tcp_max_connections.load(Ordering::Relaxed) as i64);
    reg.register(
        "dns_tcp_max_connections",
        "DNS TCP connections allowed at once per listen address: tcp_max_connections, or fewer when the descriptor limit leaves fewer",
        cap,
    );
    for (name, help, v) in [
        (
            "dns_tcp_evicted",
            "Idle DNS TCP connections closed to make room at tcp_max_connections",
            &c.tcp_evicted,
        ),
        (
            "dns_tcp_refused",
            "DNS TCP connections refused at tcp_max_connections with none idle",
            &c.tcp_refused,
        ),
        (
            "dns_tcp_accept_errors",
            "Failed DNS TCP accepts (descriptor exhaustion), each followed by a back-off",
            &c.tcp_accept_errors,
        ),
        (
            "dns_udp_fallback_dropped",
            "UDP queries dropped because the hickory fallback was at its in-flight limit",
            &c.udp_fallback_dropped,
        ),
        (
            "dns_rrl_dropped",
            "UDP responses dropped by response rate limiting",
            &c.rrl_dropped,
        ),
        (
            "dns_rrl_slipped",
            "UDP responses sent truncated (TC) by response rate limiting instead of dropped",
            &c.rrl_slipped,
        ),
    ] {
        let counter = Counter::<u64>::default();
        counter.inc_by(v.load(Ordering::Relaxed));
        reg.register(name, help, counter);
    }
}
