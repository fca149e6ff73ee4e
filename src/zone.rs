//! A delegated zone: `zones/*.toml` → [`Zone`] with its origin, SOA data,
//! nameservers, static records and shifted services. Parsing and validation
//! only; nothing here spawns or does network I/O.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::Parser;
use serde::Deserialize;
use toml::{Spanned, Value};

use crate::config::source::{ConfigError, ConfigErrors, DurationSpec, Source};
use crate::phase::{self, Phase};
use crate::pool::{Endpoint, Pool, Target};

mod check;

pub use check::{DEFAULT_INTERVAL, DEFAULT_TIMEOUT_CAP, default_timeout};
use check::{HealthLayer, HealthSpec};

/// Default TTL of static records and apex SOA/NS.
pub const DEFAULT_ZONE_TTL: u32 = 3600;
/// Default negative-caching TTL (SOA minimum).
pub const DEFAULT_NEGATIVE_TTL: u32 = 30;
/// Default TTL of a service's answers: short, so caches drain quickly.
pub const DEFAULT_SERVICE_TTL: u32 = 30;
/// Default number of addresses per answer.
pub const DEFAULT_MAX_ANSWERS: usize = 2;
/// Upper bound on `max_answers`, keeping every answer small and bounded.
pub const MAX_ANSWERS_LIMIT: usize = 16;
/// Default grace after the drain before a pool is called safe to decommission.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(15 * 60);

// ---------------------------------------------------------------- raw specs

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    zone: Spanned<ZoneSpec>,
    #[serde(default)]
    service: Vec<Spanned<ServiceSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneSpec {
    origin: Spanned<String>,
    nameservers: Spanned<Vec<Spanned<String>>>,
    hostmaster: Spanned<String>,
    ttl: Option<Spanned<DurationSpec>>,
    negative_ttl: Option<Spanned<DurationSpec>>,
    serial: Option<Spanned<u32>>,
    refresh: Option<Spanned<DurationSpec>>,
    retry: Option<Spanned<DurationSpec>>,
    expire: Option<Spanned<DurationSpec>>,
    records: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSpec {
    name: Spanned<String>,
    staging: Option<Spanned<String>>,
    staging_pool: Option<Spanned<String>>,
    ttl: Option<Spanned<DurationSpec>>,
    max_answers: Option<Spanned<i64>>,
    on_all_down: Option<Spanned<String>>,
    drain_grace: Option<Spanned<DurationSpec>>,
    initial_phase: Option<Spanned<String>>,
    pools: Spanned<BTreeMap<String, Spanned<PoolSpec>>>,
    health: Option<Spanned<HealthSpec>>,
    #[serde(default)]
    phase: Vec<Spanned<PhaseSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseSpec {
    name: Spanned<String>,
    weights: Spanned<BTreeMap<String, Spanned<Value>>>,
    hold: Option<Spanned<DurationSpec>>,
    ttl: Option<Spanned<DurationSpec>>,
}

/// A pool as written: one host name (or address), a list of endpoints, or a
/// table with `endpoints` and `health`. Deserialized by hand (not
/// `untagged`) so that every value inside keeps its position for errors.
enum PoolSpec {
    One(String),
    List(Vec<Spanned<EndpointSpec>>),
    Table(PoolTableSpec),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolTableSpec {
    endpoints: Vec<Spanned<EndpointSpec>>,
    health: Option<Box<HealthSpec>>,
}

/// An endpoint as written: an address or host name, or a table.
enum EndpointSpec {
    Address(String),
    Table(EndpointTableSpec),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointTableSpec {
    address: String,
    check_address: Option<Spanned<String>>,
    health: Option<Box<HealthSpec>>,
}

impl<'de> Deserialize<'de> for PoolSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PoolSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of addresses, one host name, or a table with `endpoints`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PoolSpec, E> {
                Ok(PoolSpec::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<PoolSpec, A::Error> {
                let mut out = Vec::new();
                while let Some(e) = a.next_element()? {
                    out.push(e);
                }
                Ok(PoolSpec::List(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<PoolSpec, A::Error> {
                PoolTableSpec::deserialize(serde::de::value::MapAccessDeserializer::new(a))
                    .map(PoolSpec::Table)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for EndpointSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = EndpointSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an address, a host name, or a table with `address`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EndpointSpec, E> {
                Ok(EndpointSpec::Address(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                a: A,
            ) -> Result<EndpointSpec, A::Error> {
                EndpointTableSpec::deserialize(serde::de::value::MapAccessDeserializer::new(a))
                    .map(EndpointSpec::Table)
            }
        }
        d.deserialize_any(V)
    }
}

// ------------------------------------------------------------ validated types

/// What a service does when no endpoint of the queried family is healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnAllDown {
    /// Answer as if every endpoint were healthy: a maybe-working answer beats none.
    FailOpen,
    /// Answer SERVFAIL.
    Servfail,
}

/// A shifted name: weighted answers between pools, moving through phases.
#[derive(Debug, Clone)]
pub struct Service {
    /// Fully qualified name answered ("www.shift.example.com.").
    pub name: Name,
    /// The name as written in the zone file ("www"); used in commands.
    pub short: String,
    /// The separate-domain name that always answers `staging_pool`.
    pub staging: Option<Name>,
    /// Index of the pool the staging name answers (the pool named `new`).
    pub staging_pool: usize,
    /// TTL of answers unless the phase sets one.
    pub ttl: u32,
    /// Endpoints per answer.
    pub max_answers: usize,
    /// Pools in a fixed order; phases index weights by it.
    pub pools: Vec<Pool>,
    /// Ordered phases.
    pub phases: Vec<Phase>,
    /// Phase used when no operator state exists.
    pub initial_phase: usize,
    /// Behaviour when everything is down.
    pub on_all_down: OnAllDown,
    /// Extra wait after the drain deadline before decommissioning is called safe.
    pub drain_grace: Duration,
}

impl Service {
    /// Lowercase fully qualified name: the service's key in state and commands.
    pub fn key(&self) -> String {
        self.name.to_lowercase().to_string()
    }

    /// Index of a pool by name.
    pub fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.name == name)
    }

    /// Index of a phase by name.
    pub fn phase_index(&self, name: &str) -> Option<usize> {
        self.phases.iter().position(|p| p.name == name)
    }

    /// Longest TTL this service answers in any phase.
    pub fn max_ttl(&self) -> u32 {
        (0..self.phases.len())
            .map(|i| self.ttl_in(i))
            .max()
            .unwrap_or(self.ttl)
            .max(self.ttl)
    }

    /// TTL answered in a phase.
    pub fn ttl_in(&self, phase: usize) -> u32 {
        self.phases[phase].ttl.unwrap_or(self.ttl)
    }
}

/// One delegated zone, validated.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The file it was read from.
    pub file: PathBuf,
    /// Apex name.
    pub origin: Name,
    /// Apex NS targets.
    pub nameservers: Vec<Name>,
    /// SOA RNAME.
    pub hostmaster: Name,
    /// TTL of static records, SOA and NS.
    pub ttl: u32,
    /// SOA minimum: how long NXDOMAIN / NODATA are cached.
    pub negative_ttl: u32,
    /// SOA refresh, retry, expire (seconds).
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    /// Lowest SOA serial to serve; the served serial also increases with every change.
    pub serial: Option<u32>,
    /// Static records from the `records` zone-file text.
    pub records: Vec<Record>,
    /// Shifted names.
    pub services: Vec<Service>,
}

// ---------------------------------------------------------------- loading

/// Reads every `*.toml` in `dir` (sorted by name); collects all errors.
pub fn load_dir(dir: &Path) -> Result<Vec<Zone>, ConfigErrors> {
    let entries = std::fs::read_dir(dir).map_err(|e| ConfigError {
        file: dir.to_path_buf(),
        line: 0,
        key: String::new(),
        message: format!("cannot read zones directory: {e}"),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ConfigError {
            file: dir.to_path_buf(),
            line: 0,
            key: String::new(),
            message: "no *.toml zone files in the zones directory".into(),
        }
        .into());
    }
    let mut zones = Vec::new();
    let mut errors = Vec::new();
    for f in &files {
        match load_file(f) {
            Ok(z) => zones.push(z),
            Err(e) => errors.extend(e.0),
        }
    }
    let mut seen: HashMap<LowerName, &Path> = HashMap::new();
    for z in &zones {
        if let Some(prev) = seen.insert(LowerName::from(&z.origin), &z.file) {
            errors.push(ConfigError {
                file: z.file.clone(),
                line: 0,
                key: "zone.origin".into(),
                message: format!("zone {} is also defined in {}", z.origin, prev.display()),
            });
        }
    }
    if errors.is_empty() {
        Ok(zones)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Reads and validates one zone file.
pub fn load_file(path: &Path) -> Result<Zone, ConfigErrors> {
    let src = Source::read(path)?;
    parse(&src)
}

/// Validates a zone file's text.
pub fn parse(src: &Source) -> Result<Zone, ConfigErrors> {
    let spec: FileSpec = src.parse()?;
    let mut errs = Vec::new();
    let zone = build_zone(src, spec, &mut errs);
    // One mistake, one error: endpoints that inherit the same broken
    // combination of keys would otherwise each report it.
    let mut seen = HashSet::new();
    errs.retain(|e| seen.insert(e.clone()));
    match zone {
        Some(z) if errs.is_empty() => Ok(z),
        _ => Err(ConfigErrors(errs)),
    }
}

fn build_zone(src: &Source, spec: FileSpec, errs: &mut Vec<ConfigError>) -> Option<Zone> {
    let zs = spec.zone.into_inner();
    let origin = fqdn(src, &zs.origin, "zone.origin", None)
        .map_err(|e| errs.push(e))
        .ok()?;
    let mut nameservers = Vec::new();
    for ns in zs.nameservers.get_ref() {
        match fqdn(src, ns, "zone.nameservers", Some(&origin)) {
            Ok(n) => nameservers.push(n),
            Err(e) => errs.push(e),
        }
    }
    if zs.nameservers.get_ref().is_empty() {
        errs.push(src.error(
            zs.nameservers.span(),
            "zone.nameservers",
            "at least one nameserver is required",
        ));
    }
    let hostmaster = fqdn(src, &zs.hostmaster, "zone.hostmaster", None)
        .map_err(|e| errs.push(e))
        .ok();
    let ttl_or =
        |v: &Option<Spanned<DurationSpec>>, key: &str, default: u32, errs: &mut Vec<_>| match v {
            Some(v) => src.ttl(v, key).unwrap_or_else(|e| {
                errs.push(e);
                default
            }),
            None => default,
        };
    let ttl = ttl_or(&zs.ttl, "zone.ttl", DEFAULT_ZONE_TTL, errs);
    let negative_ttl = ttl_or(
        &zs.negative_ttl,
        "zone.negative_ttl",
        DEFAULT_NEGATIVE_TTL,
        errs,
    );
    let refresh = ttl_or(&zs.refresh, "zone.refresh", 3600, errs);
    let retry = ttl_or(&zs.retry, "zone.retry", 600, errs);
    let expire = ttl_or(&zs.expire, "zone.expire", 1_209_600, errs);

    let records = match &zs.records {
        Some(text) => parse_records(src, text, &origin, ttl, errs),
        None => Vec::new(),
    };
    let owner_lines = zs
        .records
        .as_ref()
        .map(|t| owner_lines(src, t, &origin))
        .unwrap_or_default();

    let mut services = Vec::new();
    // Lines of each built service's `name` and `staging`, for name collisions.
    let mut service_lines = Vec::new();
    for (i, s) in spec.service.into_iter().enumerate() {
        let name_line = src.line_of(s.get_ref().name.span().start);
        let staging_line = s
            .get_ref()
            .staging
            .as_ref()
            .map_or(name_line, |v| src.line_of(v.span().start));
        if let Some(svc) = build_service(src, s, i, &origin, errs) {
            services.push(svc);
            service_lines.push((name_line, staging_line));
        }
    }
    check_names(
        src,
        &origin,
        &records,
        &owner_lines,
        &services,
        &service_lines,
        errs,
    );

    Some(Zone {
        file: src.path.clone(),
        origin,
        nameservers,
        hostmaster: hostmaster?,
        ttl,
        negative_ttl,
        refresh,
        retry,
        expire,
        serial: zs.serial.map(|s| s.into_inner()),
        records,
        services,
    })
}

/// Parses a name; relative names are taken relative to `origin` when given.
fn fqdn(
    src: &Source,
    v: &Spanned<String>,
    key: &str,
    origin: Option<&Name>,
) -> Result<Name, ConfigError> {
    let s = v.get_ref().trim();
    if s.is_empty() {
        return Err(src.error(v.span(), key, "empty name"));
    }
    let mut n = Name::parse(s, origin).map_err(|e| {
        // hickory ends some messages with the (empty) offending label.
        let e = e.to_string();
        let e = e.trim_end().trim_end_matches(':');
        src.error(v.span(), key, format!("invalid name {s:?}: {e}"))
    })?;
    if origin.is_none() && !s.ends_with('.') {
        // Top-level names (origin, hostmaster) are always absolute.
        n.set_fqdn(true);
    }
    Ok(n)
}

/// Parses the zone-file text of static records with hickory's parser.
fn parse_records(
    src: &Source,
    text: &Spanned<String>,
    origin: &Name,
    ttl: u32,
    errs: &mut Vec<ConfigError>,
) -> Vec<Record> {
    let first_line = records_first_line(src, text);
    let body = text.get_ref();
    for (i, line) in body.lines().enumerate() {
        let t = line.trim_start().to_ascii_uppercase();
        if t.starts_with("$INCLUDE") {
            errs.push(src.error_at_line(
                first_line + i,
                "zone.records",
                "$INCLUDE is not allowed: keep static records in the zone file",
            ));
            return Vec::new();
        }
    }
    let run =
        |text: &str| Parser::new(format!("$TTL {ttl}\n{text}"), None, Some(origin.clone())).parse();
    let parsed = match run(body) {
        Ok((_, sets)) => sets,
        Err(e) => {
            // The parser does not report positions: find the last prefix of
            // lines that still parses; the error is on the line after it.
            let lines: Vec<&str> = body.lines().collect();
            let good = (0..lines.len())
                .rev()
                .find(|&k| run(&lines[..k].join("\n")).is_ok())
                .unwrap_or(0);
            let record = lines.get(good).map_or("", |l| l.trim());
            errs.push(src.error_at_line(
                first_line + good,
                "zone.records",
                format!("invalid record `{record}`: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    let lines = owner_lines(src, text, origin);
    for (key, set) in parsed {
        let name = Name::from(&key.name);
        let line = lines.get(&key.name).copied().unwrap_or(first_line);
        if !origin.zone_of(&name) {
            errs.push(src.error_at_line(
                line,
                "zone.records",
                format!("{name} is outside the zone {origin}"),
            ));
            continue;
        }
        match key.record_type {
            RecordType::SOA => {
                errs.push(src.error_at_line(
                    line,
                    "zone.records",
                    "SOA is generated from [zone]; remove it from records",
                ));
                continue;
            }
            RecordType::NS if name == *origin => {
                errs.push(src.error_at_line(
                    line,
                    "zone.records",
                    "apex NS records come from zone.nameservers; remove them from records",
                ));
                continue;
            }
            _ => {}
        }
        out.extend(set.records_without_rrsigs().cloned());
    }
    // CNAME and other data cannot share a name (RFC 1034 3.6.2).
    let mut types: HashMap<LowerName, HashSet<RecordType>> = HashMap::new();
    for r in &out {
        types
            .entry(LowerName::from(&r.name))
            .or_default()
            .insert(r.record_type());
    }
    let mut bad: Vec<_> = types
        .iter()
        .filter(|(_, t)| t.contains(&RecordType::CNAME) && t.len() > 1)
        .map(|(n, _)| n.clone())
        .collect();
    bad.sort();
    for n in bad {
        let line = lines.get(&n).copied().unwrap_or(first_line);
        errs.push(src.error_at_line(
            line,
            "zone.records",
            format!("{n} has a CNAME beside other data"),
        ));
    }
    let cname_counts = out
        .iter()
        .filter(|r| r.record_type() == RecordType::CNAME)
        .fold(HashMap::<LowerName, usize>::new(), |mut m, r| {
            *m.entry(LowerName::from(&r.name)).or_default() += 1;
            m
        });
    for (n, c) in cname_counts {
        if c > 1 {
            let line = lines.get(&n).copied().unwrap_or(first_line);
            errs.push(src.error_at_line(
                line,
                "zone.records",
                format!("{n} has {c} CNAME records"),
            ));
        }
    }
    out
}

/// File line on which the first line of the records text sits.
fn records_first_line(src: &Source, text: &Spanned<String>) -> usize {
    let start = text.span().start;
    let raw = &src.text[start..text.span().end.min(src.text.len())];
    let opening_newline = ["\"\"\"\n", "'''\n", "\"\"\"\r\n", "'''\r\n"]
        .iter()
        .any(|p| raw.starts_with(p));
    src.line_of(start) + usize::from(opening_newline)
}

/// First file line on which each owner name appears in the records text.
fn owner_lines(src: &Source, text: &Spanned<String>, origin: &Name) -> HashMap<LowerName, usize> {
    let first = records_first_line(src, text);
    let mut out = HashMap::new();
    for (i, line) in text.get_ref().lines().enumerate() {
        if line.starts_with(char::is_whitespace) || line.starts_with('$') || line.starts_with(';') {
            continue;
        }
        let Some(tok) = line.split_whitespace().next() else {
            continue;
        };
        let name = if tok == "@" {
            Ok(origin.clone())
        } else {
            Name::parse(tok, Some(origin))
        };
        if let Ok(n) = name {
            out.entry(LowerName::from(&n)).or_insert(first + i);
        }
    }
    out
}

fn build_service(
    src: &Source,
    spec: Spanned<ServiceSpec>,
    index: usize,
    origin: &Name,
    errs: &mut Vec<ConfigError>,
) -> Option<Service> {
    let span = spec.span();
    let s = spec.into_inner();
    let short = s.name.get_ref().trim().to_string();
    let k = |field: &str| {
        if short.is_empty() {
            format!("service[{index}].{field}")
        } else {
            format!("service.{short}.{field}")
        }
    };
    let n_errs = errs.len();
    let name = service_name(src, &s.name, &k("name"), origin)
        .map_err(|e| errs.push(e))
        .ok();
    let staging = s.staging.as_ref().and_then(|v| {
        service_name(src, v, &k("staging"), origin)
            .map_err(|e| errs.push(e))
            .ok()
    });
    let ttl = match &s.ttl {
        Some(v) => src.ttl(v, &k("ttl")).map_err(|e| errs.push(e)).unwrap_or(0),
        None => DEFAULT_SERVICE_TTL,
    };
    let max_answers = match &s.max_answers {
        Some(v) => {
            let n = *v.get_ref();
            if n < 1 || n as usize > MAX_ANSWERS_LIMIT {
                errs.push(src.error(
                    v.span(),
                    &k("max_answers"),
                    format!("must be between 1 and {MAX_ANSWERS_LIMIT}, not {n}"),
                ));
            }
            n.clamp(1, MAX_ANSWERS_LIMIT as i64) as usize
        }
        None => DEFAULT_MAX_ANSWERS,
    };
    let on_all_down = match s
        .on_all_down
        .as_ref()
        .map(|v| (v.get_ref().as_str(), v.span()))
    {
        None | Some(("fail-open", _)) => OnAllDown::FailOpen,
        Some(("servfail", _)) => OnAllDown::Servfail,
        Some((other, sp)) => {
            errs.push(src.error(
                sp,
                &k("on_all_down"),
                format!("unknown value {other:?} (expected \"fail-open\" or \"servfail\")"),
            ));
            OnAllDown::FailOpen
        }
    };
    let drain_grace = match &s.drain_grace {
        Some(v) => src
            .duration(v, &k("drain_grace"))
            .map_err(|e| errs.push(e))
            .unwrap_or_default(),
        None => DEFAULT_DRAIN_GRACE,
    };

    let base_health = HealthLayer::new(
        src,
        s.health.as_ref().map(|h| h.get_ref()),
        &k("health"),
        errs,
    );
    // Pools in the order the file lists them (the map sorts by name):
    // status shows them that way.
    let mut listed: Vec<(&String, &Spanned<PoolSpec>)> = s.pools.get_ref().iter().collect();
    listed.sort_by_key(|(_, v)| v.span().start);
    // Phases and the staging pool refer to pools by the names written (in
    // the file's order, the order of `pools`), so that a pool with an
    // error of its own is not reported missing again.
    let pool_names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    let mut pools = Vec::new();
    let mut seen_endpoints: HashMap<String, String> = HashMap::new();
    for (pname, pval) in listed {
        let key = k(&format!("pools.{pname}"));
        if !valid_pool_name(pname) {
            errs.push(src.error(
                pval.span(),
                &key,
                "pool names use lowercase letters, digits, '-' and '_'",
            ));
            continue;
        }
        if let Some(pool) = build_pool(src, pname, pval, &key, base_health.as_ref(), errs) {
            for e in &pool.endpoints {
                if let Some(prev) = seen_endpoints.insert(e.id.clone(), pname.clone()) {
                    errs.push(src.error(
                        pval.span(),
                        &key,
                        format!("endpoint {} is also in pool {prev:?}", e.id),
                    ));
                }
            }
            pools.push(pool);
        }
    }
    if s.pools.get_ref().is_empty() {
        errs.push(src.error(
            s.pools.span(),
            &k("pools"),
            "a service needs at least one pool",
        ));
    }

    let phases = if s.phase.is_empty() {
        match (
            pool_names.iter().position(|&p| p == "old"),
            pool_names.iter().position(|&p| p == "new"),
        ) {
            (Some(o), Some(n)) => phase::classic(o, n, pool_names.len()),
            _ => {
                if !pool_names.is_empty() {
                    errs.push(src.error(
                        s.pools.span(),
                        &k("pools"),
                        "a service without [[service.phase]] needs pools named \"old\" and \"new\"",
                    ));
                }
                Vec::new()
            }
        }
    } else {
        build_phases(src, &s.phase, &pool_names, &k, errs)
    };

    let staging_pool_name = s
        .staging_pool
        .as_ref()
        .map(|v| v.get_ref().as_str())
        .unwrap_or("new");
    let staging_pool = match pool_names.iter().position(|&p| p == staging_pool_name) {
        Some(i) => i,
        None => {
            if staging.is_some() || s.staging_pool.is_some() {
                let sp = s
                    .staging_pool
                    .as_ref()
                    .or(s.staging.as_ref())
                    .map(|v| v.span())
                    .unwrap_or(span.clone());
                errs.push(src.error(
                    sp,
                    &k("staging_pool"),
                    format!(
                        "the staging name answers pool {staging_pool_name:?}, which does not exist"
                    ),
                ));
            }
            0
        }
    };

    let initial_phase = match &s.initial_phase {
        Some(v) => match phases.iter().position(|p| p.name == *v.get_ref()) {
            Some(i) => i,
            None => {
                errs.push(src.error(
                    v.span(),
                    &k("initial_phase"),
                    format!("no phase named {:?}", v.get_ref()),
                ));
                0
            }
        },
        None => 0,
    };

    if errs.len() != n_errs {
        return None;
    }
    Some(Service {
        name: name?,
        short,
        staging,
        staging_pool,
        ttl,
        max_answers,
        pools,
        phases,
        initial_phase,
        on_all_down,
        drain_grace,
    })
}

fn valid_pool_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn service_name(
    src: &Source,
    v: &Spanned<String>,
    key: &str,
    origin: &Name,
) -> Result<Name, ConfigError> {
    let n = fqdn(src, v, key, Some(origin))?;
    if !origin.zone_of(&n) {
        return Err(src.error(v.span(), key, format!("{n} is outside the zone {origin}")));
    }
    if n == *origin {
        return Err(src.error(v.span(), key, "a service cannot be the zone apex"));
    }
    Ok(n)
}

/// Builds one pool. `service_health` is None when the service's own health
/// keys are wrong (already reported): endpoints are still validated, but
/// no check is built from the broken keys.
fn build_pool(
    src: &Source,
    name: &str,
    value: &Spanned<PoolSpec>,
    key: &str,
    service_health: Option<&HealthLayer>,
    errs: &mut Vec<ConfigError>,
) -> Option<Pool> {
    let errors_before = errs.len();
    // (endpoint, where it is written, its key path for health errors)
    let one;
    let (items, pool_health): (Vec<(&EndpointSpec, Range<usize>, String)>, _) = match value
        .get_ref()
    {
        PoolSpec::One(address) => {
            one = EndpointSpec::Address(address.clone());
            let items = vec![(&one, value.span(), key.to_string())];
            (items, service_health.cloned())
        }
        PoolSpec::List(list) => {
            let items = list
                .iter()
                .enumerate()
                .map(|(i, e)| (e.get_ref(), e.span(), format!("{key}[{i}]")))
                .collect();
            (items, service_health.cloned())
        }
        PoolSpec::Table(t) => {
            let own = HealthLayer::new(src, t.health.as_deref(), &format!("{key}.health"), errs);
            let items = t
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| (e.get_ref(), e.span(), format!("{key}.endpoints[{i}]")))
                .collect();
            (items, own.zip(service_health).map(|(o, s)| o.over(s)))
        }
    };
    let written = items.len();
    let mut endpoints = Vec::new();
    for (item, span, ekey) in items {
        let (address, check_address, ep_health) = match item {
            EndpointSpec::Address(a) => (a, None, None),
            EndpointSpec::Table(t) => (&t.address, t.check_address.as_ref(), t.health.as_deref()),
        };
        let target = match parse_target(address) {
            Ok(t) => t,
            Err(m) => {
                errs.push(src.error(span, key, m));
                continue;
            }
        };
        let check_ip = match check_address {
            Some(a) => match a.get_ref().trim().parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    errs.push(src.error(
                        a.span(),
                        &format!("{ekey}.check_address"),
                        format!("check_address {:?} is not an IP address", a.get_ref()),
                    ));
                    continue;
                }
            },
            None => None,
        };
        let own = HealthLayer::new(src, ep_health, &format!("{ekey}.health"), errs);
        let (Some(own), Some(base)) = (own, &pool_health) else {
            continue;
        };
        let endpoint_text = match (check_ip, &target) {
            (Some(ip), _) => bracket(ip),
            (None, Target::Host(n)) => n.to_string().trim_end_matches('.').to_string(),
            (None, t) => t.ip().map(bracket).unwrap_or_default(),
        };
        let line = src.line_of(span.start);
        match own
            .over(base)
            .check(src, &endpoint_text, line, &format!("{key}.health"))
        {
            Ok(check) => endpoints.push(Endpoint {
                id: address.trim().to_string(),
                target,
                check,
            }),
            Err(e) => errs.push(e),
        }
    }
    if written == 0 {
        errs.push(src.error(value.span(), key, "a pool needs at least one endpoint"));
    }
    // An endpoint left out was reported here, or its inherited health keys
    // were at another level.
    if errs.len() != errors_before || endpoints.len() != written || written == 0 {
        return None;
    }
    let hosts = endpoints
        .iter()
        .filter(|e| matches!(e.target, Target::Host(_)))
        .count();
    if hosts > 0 && endpoints.len() > 1 {
        errs.push(src.error(
            value.span(),
            key,
            format!(
                "pool {name:?} mixes a host name with other endpoints: a host-name pool is answered by a CNAME, which cannot stand beside other data"
            ),
        ));
        return None;
    }
    Some(Pool {
        name: name.to_string(),
        endpoints,
    })
}

fn bracket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// An endpoint string: IPv4, IPv6, or a fully qualified host name.
fn parse_target(s: &str) -> Result<Target, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(match ip {
            IpAddr::V4(a) => Target::V4(a),
            IpAddr::V6(a) => Target::V6(a),
        });
    }
    let labels: Vec<&str> = s.trim_end_matches('.').split('.').collect();
    if s.contains(':') || labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("{s:?} is not a valid IP address"));
    }
    if labels.len() < 2 {
        return Err(format!(
            "{s:?} is neither an IP address nor a fully qualified host name"
        ));
    }
    let mut n = Name::from_ascii(s).map_err(|e| format!("invalid host name {s:?}: {e}"))?;
    n.set_fqdn(true);
    Ok(Target::Host(n))
}

/// Builds the phases; `pools` are the pool names as written, in the order
/// the built pools will have.
fn build_phases(
    src: &Source,
    specs: &[Spanned<PhaseSpec>],
    pools: &[&str],
    k: &dyn Fn(&str) -> String,
    errs: &mut Vec<ConfigError>,
) -> Vec<Phase> {
    let mut phases = Vec::new();
    let mut names = HashSet::new();
    for p in specs {
        let p = p.get_ref();
        let pname = p.name.get_ref().trim().to_string();
        let key = k(&format!("phase.{pname}"));
        if pname.is_empty() {
            errs.push(src.error(p.name.span(), &key, "a phase needs a name"));
            continue;
        }
        if !names.insert(pname.clone()) {
            errs.push(src.error(
                p.name.span(),
                &key,
                format!("duplicate phase name {pname:?}"),
            ));
            continue;
        }
        let before = errs.len();
        let wkey = format!("{key}.weights");
        let mut weights = vec![0u32; pools.len()];
        // A misspelt pool name is one mistake: its pool is not missing too.
        let mut unknown = false;
        for (pool, w) in p.weights.get_ref() {
            let wkey = format!("{wkey}.{pool}");
            let Some(i) = pools.iter().position(|x| x == pool) else {
                unknown = true;
                errs.push(src.error(
                    w.span(),
                    &wkey,
                    format!("no pool named {pool:?} (pools: {})", pools.join(", ")),
                ));
                continue;
            };
            match w.get_ref() {
                Value::Integer(n) if *n >= 0 && *n <= i64::from(u32::MAX / 1024) => {
                    weights[i] = *n as u32
                }
                Value::Integer(n) if *n < 0 => {
                    errs.push(src.error(w.span(), &wkey, format!("weight {n} is negative")))
                }
                Value::Integer(n) => {
                    errs.push(src.error(w.span(), &wkey, format!("weight {n} is too large")))
                }
                other => errs.push(src.error(
                    w.span(),
                    &wkey,
                    format!("a weight is a non-negative integer, not {other}"),
                )),
            }
        }
        if p.weights.get_ref().is_empty() {
            errs.push(src.error(p.weights.span(), &wkey, "no weights given"));
        } else {
            let missing: Vec<&str> = pools
                .iter()
                .copied()
                .filter(|pool| !p.weights.get_ref().contains_key(*pool))
                .collect();
            if !missing.is_empty() && !unknown {
                let what = if missing.len() == 1 { "pool" } else { "pools" };
                errs.push(src.error(
                    p.weights.span(),
                    &wkey,
                    format!(
                        "no weight for {what} {}: give every pool a weight ({} = 0 for a standby)",
                        missing
                            .iter()
                            .map(|m| format!("{m:?}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        missing[0]
                    ),
                ));
            } else if missing.is_empty() && errs.len() == before && weights.iter().all(|&w| w == 0)
            {
                errs.push(src.error(
                    p.weights.span(),
                    &wkey,
                    "every pool has weight 0: at least one pool must receive traffic",
                ));
            }
        }
        let hold = p.hold.as_ref().and_then(|h| {
            src.duration(h, &format!("{key}.hold"))
                .map_err(|e| errs.push(e))
                .ok()
        });
        let ttl = p.ttl.as_ref().and_then(|t| {
            src.ttl(t, &format!("{key}.ttl"))
                .map_err(|e| errs.push(e))
                .ok()
        });
        phases.push(Phase {
            name: pname,
            weights,
            hold,
            ttl,
        });
    }
    phases
}

/// Names in one zone must not collide: services, staging names and static
/// owners are distinct, and nothing sits below a sub-delegation.
/// `service_lines` holds the file lines of each service's `name` and `staging`.
fn check_names(
    src: &Source,
    origin: &Name,
    records: &[Record],
    owner_lines: &HashMap<LowerName, usize>,
    services: &[Service],
    service_lines: &[(usize, usize)],
    errs: &mut Vec<ConfigError>,
) {
    let line_of = |n: &LowerName| owner_lines.get(n).copied().unwrap_or(0);
    let mut names: HashMap<LowerName, String> = HashMap::new();
    for r in records {
        names.entry(LowerName::from(&r.name)).or_insert_with(|| {
            format!(
                "a static record (line {})",
                line_of(&LowerName::from(&r.name))
            )
        });
    }
    let cuts: Vec<LowerName> = records
        .iter()
        .filter(|r| r.record_type() == RecordType::NS && r.name != *origin)
        .map(|r| LowerName::from(&r.name))
        .collect();
    for r in records {
        let n = LowerName::from(&r.name);
        let glue = matches!(r.data, RData::A(_) | RData::AAAA(_));
        for cut in &cuts {
            if *cut != n && cut.zone_of(&n) && !glue {
                errs.push(src.error_at_line(
                    line_of(&n),
                    "zone.records",
                    format!("{n} is below the delegation {cut}: only glue addresses may be there"),
                ));
            }
        }
    }
    for (s, &(name_line, staging_line)) in services.iter().zip(service_lines) {
        let mut own = vec![(s.name.clone(), "name", name_line)];
        if let Some(st) = &s.staging {
            own.push((st.clone(), "staging", staging_line));
        }
        for (n, what, line) in own {
            let ln = LowerName::from(&n);
            let key = format!("service.{}.{what}", s.short);
            if let Some(prev) = names.get(&ln) {
                errs.push(src.error_at_line(
                    line,
                    &key,
                    format!("duplicate name {n}: already used by {prev}"),
                ));
                continue;
            }
            for cut in &cuts {
                if cut.zone_of(&ln) {
                    errs.push(src.error_at_line(
                        line,
                        &key,
                        format!("{n} is inside the delegation {cut}"),
                    ));
                }
            }
            names.insert(ln, format!("service {:?} (line {line})", s.short));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Zone, ConfigErrors> {
        parse(&Source {
            path: "t.toml".into(),
            text: text.into(),
        })
    }

    const BASE: &str = r#"
[zone]
origin = "shift.example.com."
nameservers = ["ns1"]
hostmaster = "hostmaster.example.com."
records = """
ns1 IN A 203.0.113.53
"""
"#;

    #[test]
    fn minimal_zone_with_classic_phases() {
        let z = parse_text(&format!(
            "{BASE}\n[[service]]\nname = \"www\"\nstaging = \"www-next\"\n[service.pools]\nold = [\"192.0.2.1\"]\nnew = [\"2001:db8::1\"]\n"
        ))
        .unwrap();
        let s = &z.services[0];
        assert_eq!(s.name.to_string(), "www.shift.example.com.");
        assert_eq!(
            s.phases.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["separate-domain", "round-robin", "cutover"]
        );
        assert_eq!(s.pools[s.staging_pool].name, "new");
        assert_eq!(z.nameservers[0].to_string(), "ns1.shift.example.com.");
    }

    #[test]
    fn errors_name_line_and_key() {
        // (text appended to BASE, expected substring of the error)
        let cases = [
            (
                "[[service]]\nname = \"www\"\n[service.pools]\nold = [\"192.0.2.300\"]\nnew = [\"192.0.2.2\"]\n",
                "t.toml:12: service.www.pools.old: \"192.0.2.300\" is not a valid IP address",
            ),
            (
                "[[service]]\nname = \"www\"\nbogus = 1\n[service.pools]\nold = [\"192.0.2.1\"]\n",
                "t.toml:11: unknown field `bogus`",
            ),
            (
                "[[service]]\nname = \"www\"\n[service.pools]\nold = [\"192.0.2.1\"]\nnew = [\"192.0.2.2\"]\n[[service.phase]]\nname = \"a\"\nweights = { old = -1, new = 1 }\n",
                "t.toml:16: service.www.phase.a.weights.old: weight -1 is negative",
            ),
            (
                "[[service]]\nname = \"www\"\n[service.pools]\nold = [\"192.0.2.1\"]\nnew = [\"192.0.2.2\"]\n[[service.phase]]\nname = \"a\"\nweights = { old = 1.5 }\n",
                "service.www.phase.a.weights.old: a weight is a non-negative integer, not 1.5",
            ),
            (
                "[[service]]\nname = \"www\"\n[service.pools]\nold = [\"192.0.2.1\"]\nnew = [\"192.0.2.2\"]\n[[service.phase]]\nname = \"a\"\nweights = { old = 1, blue = 1 }\n",
                "t.toml:16: service.www.phase.a.weights.blue: no pool named \"blue\"",
            ),
            (
                "[[service]]\nname = \"www\"\nttl = \"30 parsecs\"\n[service.pools]\nold = [\"192.0.2.1\"]\nnew = [\"192.0.2.2\"]\n",
                "t.toml:11: service.www.ttl: invalid duration",
            ),
            (
                "[[service]]\nname = \"ns1\"\n[service.pools]\nold = [\"192.0.2.1\"]\nnew = [\"192.0.2.2\"]\n",
                "t.toml:10: service.ns1.name: duplicate name ns1.shift.example.com.: already used by a static record (line 7)",
            ),
        ];
        for (extra, want) in cases {
            let err = parse_text(&format!("{BASE}{extra}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "\n got: {err}\nwant: {want}");
        }
    }

    #[test]
    fn record_errors_point_into_the_records_text() {
        let text = "[zone]\norigin = \"z.test.\"\nnameservers = [\"ns1\"]\nhostmaster = \"h.z.test.\"\nrecords = \"\"\"\nns1 IN A 203.0.113.53\nv6 IN A 2001:db8::1\n\"\"\"\n";
        let err = parse_text(text).unwrap_err().to_string();
        assert!(
            err.starts_with("t.toml:7: zone.records: invalid record"),
            "{err}"
        );

        let text = "[zone]\norigin = \"z.test.\"\nnameservers = [\"ns1\"]\nhostmaster = \"h.z.test.\"\nrecords = \"\"\"\nns1 IN A 203.0.113.53\ndocs IN CNAME a.example.\ndocs IN TXT \"x\"\n\"\"\"\n";
        let err = parse_text(text).unwrap_err().to_string();
        assert!(
            err.contains("t.toml:7: zone.records: docs.z.test. has a CNAME beside other data"),
            "{err}"
        );
    }

    #[test]
    fn health_keys_are_validated() {
        let svc = |health: &str| {
            format!(
                "{BASE}[[service]]\nname = \"www\"\n[service.pools]\nold = [\"192.0.2.1\"]\nnew = [\"192.0.2.2\"]\n[service.health]\n{health}\n"
            )
        };
        let cases = [
            (
                "interval = \"1s\"\ntimeout = \"1s\"",
                "t.toml:16: service.www.health.timeout: timeout (1s) must be shorter than interval (1s); interval is set at line 15",
            ),
            ("rise = 0", "health.rise: must be between 1 and 100, not 0"),
            ("fall = 0", "health.fall: must be between 1 and 100, not 0"),
            ("kind = \"icmp\"", "unknown check kind \"icmp\""),
            ("url = \"http://{endpoint}:99999/\"", "invalid url"),
            ("url = \"http://{endpont}/\"", "unknown placeholder"),
            ("expect = \"600\"", "invalid status range"),
            ("kind = \"tcp\"", "a tcp check needs `port`"),
        ];
        for (h, want) in cases {
            let err = parse_text(&svc(h)).unwrap_err().to_string();
            assert!(err.contains(want), "\n got: {err}\nwant: {want}");
            assert!(err.contains(": service.www.health."), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        let z = parse_text(&svc(
            "url = \"https://{endpoint}:8443/healthz\"\nhost = \"www.example.com\"",
        ))
        .unwrap();
        // Pools keep the file's order (old before new), not the name order.
        let names: Vec<&str> = z.services[0]
            .pools
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["old", "new"]);
        let c = z.services[0].pools[1].endpoints[0].check.clone().unwrap();
        assert_eq!(c.kind, crate::pool::CheckKind::Https);
        assert_eq!(c.target, "https://192.0.2.2:8443/healthz");
    }
}
