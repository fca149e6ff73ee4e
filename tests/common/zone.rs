//! Zone files for tests, built instead of copied:
//!
//! ```ignore
//! ZoneBuilder::new("shift.test.")
//!     .service(
//!         ServiceBuilder::new("www")
//!             .pool("old", &["127.0.9.1"])
//!             .pool("new", &["127.0.9.2"])
//!             .health_http("http://{endpoint}:8080/healthz")
//!             .phase("old-only", &[("old", 100), ("new", 0)]),
//!     )
//!     .to_toml()
//! ```
//!
//! The text has a fixed layout (the `[zone]` table is nine lines, then one
//! blank line and each service), so tests may assert file:line errors.
#![allow(dead_code)]

/// `s` as a TOML basic string.
pub fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// `["a", "b"]`.
pub fn string_array<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<String> = items.iter().map(|s| quoted(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// The `shift.test.` zone (as [`ZoneBuilder::new`] makes it) with these
/// services.
pub fn zone_of(services: impl IntoIterator<Item = ServiceBuilder>) -> String {
    services
        .into_iter()
        .fold(ZoneBuilder::new("shift.test."), ZoneBuilder::service)
        .to_toml()
}

/// One item of a pool's `endpoints` list with keys of its own:
/// `{ address = "<address>", <keys> }`.
pub fn endpoint(address: &str, keys: &str) -> String {
    match keys {
        "" => format!("{{ address = {} }}", quoted(address)),
        _ => format!("{{ address = {}, {keys} }}", quoted(address)),
    }
}

/// Ordered `key = value` lines of one table; values are raw TOML.
#[derive(Clone, Debug, Default)]
struct Table(Vec<(String, String)>);

impl Table {
    /// Replaces `key` in place, or appends it.
    fn set(&mut self, key: &str, raw: impl Into<String>) {
        let raw = raw.into();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = raw,
            None => self.0.push((key.to_string(), raw)),
        }
    }

    fn unset(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    fn render(&self, out: &mut String) {
        for (k, v) in &self.0 {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
}

/// A zone file: the `[zone]` table and its services.
#[derive(Clone, Debug)]
pub struct ZoneBuilder {
    zone: Table,
    records: Vec<String>,
    services: Vec<ServiceBuilder>,
}

impl ZoneBuilder {
    /// A zone with one name server `ns1` (127.0.0.53), TTL 1h and negative
    /// TTL 45s.
    pub fn new(origin: &str) -> ZoneBuilder {
        let mut zone = Table::default();
        zone.set("origin", quoted(origin));
        zone.set("nameservers", string_array(&[&format!("ns1.{origin}")]));
        zone.set("hostmaster", quoted(&format!("hostmaster.{origin}")));
        zone.set("ttl", quoted("1h"));
        zone.set("negative_ttl", quoted("45s"));
        ZoneBuilder {
            zone,
            records: vec!["ns1 IN A 127.0.0.53".to_string()],
            services: Vec::new(),
        }
    }

    /// Sets a key of the `[zone]` table to a raw TOML value.
    pub fn set(mut self, key: &str, raw: impl Into<String>) -> Self {
        self.zone.set(key, raw);
        self
    }

    /// Leaves a key of the `[zone]` table out.
    pub fn unset(mut self, key: &str) -> Self {
        self.zone.unset(key);
        self
    }

    pub fn nameservers<S: AsRef<str>>(self, names: &[S]) -> Self {
        self.set("nameservers", string_array(names))
    }

    pub fn hostmaster(self, mailbox: &str) -> Self {
        self.set("hostmaster", quoted(mailbox))
    }

    pub fn ttl(self, ttl: &str) -> Self {
        self.set("ttl", quoted(ttl))
    }

    pub fn negative_ttl(self, ttl: &str) -> Self {
        self.set("negative_ttl", quoted(ttl))
    }

    /// Replaces the static records (one zone-file line each).
    pub fn records<S: AsRef<str>>(mut self, lines: &[S]) -> Self {
        self.records = lines.iter().map(|l| l.as_ref().to_string()).collect();
        self
    }

    /// Adds one static record line.
    pub fn record(mut self, line: &str) -> Self {
        self.records.push(line.to_string());
        self
    }

    pub fn service(mut self, service: ServiceBuilder) -> Self {
        self.services.push(service);
        self
    }

    pub fn to_toml(&self) -> String {
        let mut out = String::from("[zone]\n");
        self.zone.render(&mut out);
        out.push_str("records = \"\"\"\n");
        for r in &self.records {
            out.push_str(r);
            out.push('\n');
        }
        out.push_str("\"\"\"\n");
        for s in &self.services {
            out.push('\n');
            s.render(&mut out);
        }
        out
    }
}

/// One `[[service]]` of a zone.
#[derive(Clone, Debug)]
pub struct ServiceBuilder {
    service: Table,
    pools: Table,
    health: Table,
    phases: Vec<Table>,
}

impl ServiceBuilder {
    pub fn new(name: &str) -> ServiceBuilder {
        let mut service = Table::default();
        service.set("name", quoted(name));
        ServiceBuilder {
            service,
            pools: Table::default(),
            health: Table::default(),
            phases: Vec::new(),
        }
    }

    /// A service with always-healthy endpoints (`kind = "none"`) in pools
    /// `old` and `new`.
    pub fn unchecked<S: AsRef<str>, T: AsRef<str>>(name: &str, old: &[S], new: &[T]) -> Self {
        ServiceBuilder::new(name)
            .pool("old", old)
            .pool("new", new)
            .health_none()
    }

    /// The shifted name most tests use: `www`, unchecked, staging name
    /// `www-next`, TTL 30s, two addresses per answer.
    pub fn www<S: AsRef<str>, T: AsRef<str>>(old: &[S], new: &[T]) -> Self {
        ServiceBuilder::unchecked("www", old, new)
            .staging("www-next")
            .ttl("30s")
            .max_answers(2)
    }

    /// A service whose `old` pool is one address and whose `new` pool is a
    /// host name (answered as a CNAME), unchecked.
    pub fn to_host(name: &str, old: &str, host: &str) -> Self {
        ServiceBuilder::new(name)
            .pool("old", &[old])
            .pool_host("new", host)
            .health_none()
    }

    /// A service with one always-healthy pool `main` of `n` IPv6
    /// endpoints (2001:db8::1:0 on), all `n` in every answer.
    pub fn many_aaaa(name: &str, n: usize) -> Self {
        let addrs: Vec<String> = (0..n).map(|i| format!("2001:db8::1:{i:x}")).collect();
        ServiceBuilder::new(name)
            .max_answers(n)
            .pool("main", &addrs)
            .health_none()
            .phase("all", &[("main", 1)])
    }

    /// Sets a key of the service table to a raw TOML value.
    pub fn set(mut self, key: &str, raw: impl Into<String>) -> Self {
        self.service.set(key, raw);
        self
    }

    /// Leaves a key of the service table out.
    pub fn unset(mut self, key: &str) -> Self {
        self.service.unset(key);
        self
    }

    pub fn staging(self, name: &str) -> Self {
        self.set("staging", quoted(name))
    }

    pub fn ttl(self, ttl: &str) -> Self {
        self.set("ttl", quoted(ttl))
    }

    pub fn max_answers(self, n: usize) -> Self {
        self.set("max_answers", n.to_string())
    }

    pub fn initial_phase(self, phase: &str) -> Self {
        self.set("initial_phase", quoted(phase))
    }

    pub fn drain_grace(self, grace: &str) -> Self {
        self.set("drain_grace", quoted(grace))
    }

    /// A pool of endpoint addresses (or host names).
    pub fn pool<S: AsRef<str>>(self, name: &str, endpoints: &[S]) -> Self {
        self.pool_raw(name, string_array(endpoints))
    }

    /// A pool given as one host name: answered as a CNAME to it.
    pub fn pool_host(self, name: &str, host: &str) -> Self {
        self.pool_raw(name, quoted(host))
    }

    /// A pool given by a raw TOML value: a host name, an inline table.
    pub fn pool_raw(mut self, name: &str, raw: impl Into<String>) -> Self {
        self.pools.set(name, raw);
        self
    }

    /// A pool with its own health check, `health` an inline table
    /// (`{ kind = "none" }`).
    pub fn pool_with_health<S: AsRef<str>>(
        self,
        name: &str,
        endpoints: &[S],
        health: &str,
    ) -> Self {
        let endpoints = string_array(endpoints);
        self.pool_raw(
            name,
            format!("{{ endpoints = {endpoints}, health = {health} }}"),
        )
    }

    /// A pool given by its `endpoints` list, each item raw TOML (a quoted
    /// address or an [`endpoint`] table).
    pub fn pool_endpoints(self, name: &str, items: &[String]) -> Self {
        self.pool_raw(name, format!("{{ endpoints = [{}] }}", items.join(", ")))
    }

    /// Sets a key of `[service.health]` to a raw TOML value.
    pub fn health(mut self, key: &str, raw: impl Into<String>) -> Self {
        self.health.set(key, raw);
        self
    }

    /// No checks: every endpoint is always healthy.
    pub fn health_none(self) -> Self {
        self.health("kind", quoted("none"))
    }

    /// HTTP(S) checks of `url` (`{endpoint}` stands for each endpoint).
    pub fn health_http(self, url: &str) -> Self {
        self.health("url", quoted(url))
    }

    /// Check interval and timeout, as durations ("150ms").
    pub fn timing(self, interval: &str, timeout: &str) -> Self {
        self.health("interval", quoted(interval))
            .health("timeout", quoted(timeout))
    }

    /// Passing checks to become healthy, failing ones to become unhealthy.
    pub fn rise_fall(self, rise: u32, fall: u32) -> Self {
        self.health("rise", rise.to_string())
            .health("fall", fall.to_string())
    }

    /// Appends a phase with these pool weights.
    pub fn phase(mut self, name: &str, weights: &[(&str, u32)]) -> Self {
        let weights: Vec<String> = weights.iter().map(|(p, w)| format!("{p} = {w}")).collect();
        let mut t = Table::default();
        t.set("name", quoted(name));
        t.set("weights", format!("{{ {} }}", weights.join(", ")));
        self.phases.push(t);
        self
    }

    /// Sets a key of phase `phase` (added before) to a raw TOML value.
    pub fn phase_set(mut self, phase: &str, key: &str, raw: impl Into<String>) -> Self {
        let name = quoted(phase);
        self.phases
            .iter_mut()
            .find(|t| t.0.iter().any(|(k, v)| k == "name" && *v == name))
            .unwrap_or_else(|| panic!("phase_set: no phase {phase:?}"))
            .set(key, raw);
        self
    }

    /// The four phases most tests use: separate-domain (old only), ten
    /// (90/10), half (50/50) and cutover (new only).
    pub fn four_phases(self) -> Self {
        self.phase("separate-domain", &[("old", 100), ("new", 0)])
            .phase("ten", &[("old", 90), ("new", 10)])
            .phase("half", &[("old", 50), ("new", 50)])
            .phase("cutover", &[("old", 0), ("new", 100)])
    }

    fn render(&self, out: &mut String) {
        out.push_str("[[service]]\n");
        self.service.render(out);
        out.push_str("[service.pools]\n");
        self.pools.render(out);
        if !self.health.0.is_empty() {
            out.push_str("[service.health]\n");
            self.health.render(out);
        }
        for p in &self.phases {
            out.push_str("[[service.phase]]\n");
            p.render(out);
        }
    }
}
