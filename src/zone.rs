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

pub mod analysis;
mod build;
mod check;
pub mod diff;
pub mod digest;
mod records;
mod spec;

use analysis::*;
use build::*;
use records::*;
use spec::*;

pub use check::{DEFAULT_INTERVAL, DEFAULT_TIMEOUT_CAP, default_timeout};
use check::{HealthLayer, HealthSpec};
pub use digest::digest;

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

/// How a service picks a pool per query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Assignment {
    /// Every query draws a pool at random by weight (Route 53, gdnsd).
    #[default]
    Random,
    /// Every client network keeps its pool ([`Sticky`]).
    Sticky,
}

impl Assignment {
    /// The value as written in a zone file and shown by `status`.
    pub fn label(self) -> &'static str {
        match self {
            Assignment::Random => "random",
            Assignment::Sticky => "sticky",
        }
    }
}

/// Default prefix of a resolver's address used as the sticky key without
/// ECS, IPv4 (`sticky_prefix_v4`).
pub const DEFAULT_PREFIX_V4: u8 = 24;
/// Default prefix of a resolver's address used as the sticky key without
/// ECS, IPv6 (`sticky_prefix_v6`).
pub const DEFAULT_PREFIX_V6: u8 = 48;

/// A service's sticky assignment keys as written (issue 18); see
/// [`crate::answer::sticky`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sticky {
    /// The seed text every host shares (`sticky_seed`; default: the
    /// service's full name).
    pub seed: String,
    /// Prefix of a resolver's IPv4 address keyed on without ECS.
    pub prefix_v4: u8,
    /// Prefix of a resolver's IPv6 address keyed on without ECS.
    pub prefix_v6: u8,
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
    /// How the measured pool is judged while automation runs (issue 17).
    pub analysis: Option<Analysis>,
    /// Per phase (indexed like `phases`): whether it advances by itself.
    pub auto: Vec<Option<Auto>>,
    /// How a query picks a pool: at random by weight, or sticky per client
    /// network (issue 18).
    pub assignment: Assignment,
    /// Seed and key prefixes of sticky assignment (used when `assignment`
    /// is sticky).
    pub sticky: Sticky,
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
    /// `[zone.dnssec]`: the keys that sign the zone's answers, and their
    /// signature cache (shared by every plan built from this zone).
    pub dnssec: Option<std::sync::Arc<crate::dnssec::ZoneKeys>>,
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
    // Unknown keys first, each at its line; serde skips them, so the rest
    // of the file is validated too.
    let mut errs = Vec::new();
    unknown_keys(src, &mut errs);
    let zone = match src.parse::<FileSpec>() {
        Ok(spec) => build_zone(src, spec, &mut errs),
        Err(e) => {
            errs.push(e);
            None
        }
    };
    // One mistake, one error: endpoints that inherit the same broken
    // combination of keys would otherwise each report it.
    let mut seen = HashSet::new();
    errs.retain(|e| seen.insert(e.clone()));
    // In the order of the file, as a person fixes them.
    errs.sort_by_key(|e| e.line);
    match zone {
        Some(z) if errs.is_empty() => Ok(z),
        _ => Err(ConfigErrors(errs)),
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
                "t.toml:11: service.www.bogus: unknown key, expected one of `name`,",
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
