//! Health-check keys of a zone file (`[service.health]`, a pool's or an
//! endpoint's `health`): the raw spec, each level validated once on its own
//! (so one bad key is one error, at its line), the levels merged, and the
//! [`Check`] of one endpoint built from the merge.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use toml::Spanned;

use crate::config::source::{ConfigError, DurationSpec, Source};
use crate::pool::{Check, CheckKind};

/// Default time between probes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Upper bound of the default timeout; below it the default is half the
/// interval, so that the default is valid for any interval.
pub const DEFAULT_TIMEOUT_CAP: Duration = Duration::from_secs(2);
/// URL checked when none is given.
pub const DEFAULT_URL: &str = "http://{endpoint}/";
/// The placeholder an http(s) URL names the endpoint with.
pub const ENDPOINT_PLACEHOLDER: &str = "{endpoint}";
/// Address put in for `{endpoint}` to see whether a URL template parses.
const SAMPLE_ENDPOINT: &str = "192.0.2.1";

/// The default timeout for an interval: min(2s, interval / 2).
pub fn default_timeout(interval: Duration) -> Duration {
    DEFAULT_TIMEOUT_CAP.min(interval / 2)
}

/// Health-check keys as written; every level (service, pool, endpoint) may
/// set any of them.
#[derive(Deserialize, Default)]
pub(super) struct HealthSpec {
    kind: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    fixed_target: Option<Spanned<bool>>,
    host: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    interval: Option<Spanned<DurationSpec>>,
    timeout: Option<Spanned<DurationSpec>>,
    rise: Option<Spanned<i64>>,
    fall: Option<Spanned<i64>>,
    expect: Option<Spanned<String>>,
    expect_body: Option<Spanned<String>>,
    insecure: Option<Spanned<bool>>,
    ca_file: Option<Spanned<String>>,
}

/// A validated key's value with the line and key path it was written at,
/// so that a problem with a combination of keys points at the key to change.
#[derive(Clone)]
struct At<T> {
    value: T,
    line: usize,
    key: String,
}

/// Where an optional key was set, if it was.
fn pos<T>(a: &Option<At<T>>) -> Option<(usize, &str)> {
    a.as_ref().map(|a| (a.line, a.key.as_str()))
}

impl<T> At<T> {
    fn error(&self, src: &Source, message: impl Into<String>) -> ConfigError {
        src.error_at_line(self.line, &self.key, message)
    }
}

/// One level's health keys, each valid on its own. A field set here wins
/// over the level below ([`HealthLayer::over`]).
#[derive(Clone, Default)]
pub(super) struct HealthLayer {
    /// `None` inside: `kind = "none"`, not checked.
    kind: Option<At<Option<CheckKind>>>,
    url: Option<At<String>>,
    fixed_target: Option<At<bool>>,
    host: Option<At<String>>,
    port: Option<At<u16>>,
    interval: Option<At<Duration>>,
    timeout: Option<At<Duration>>,
    rise: Option<At<u32>>,
    fall: Option<At<u32>>,
    expect: Option<At<(u16, u16)>>,
    expect_body: Option<At<String>>,
    insecure: Option<At<bool>>,
    ca_file: Option<At<PathBuf>>,
}

/// Validates one value of a level; on error, records it and yields None.
fn key<T, U>(
    src: &Source,
    v: &Option<Spanned<T>>,
    prefix: &str,
    name: &str,
    errs: &mut Vec<ConfigError>,
    f: impl FnOnce(&T) -> Result<U, String>,
) -> Option<At<U>> {
    let v = v.as_ref()?;
    let key = format!("{prefix}.{name}");
    match f(v.get_ref()) {
        Ok(value) => Some(At {
            value,
            line: src.line_of(v.span().start),
            key,
        }),
        Err(m) => {
            errs.push(src.error(v.span(), &key, m));
            None
        }
    }
}

impl HealthLayer {
    /// Validates each key of one level on its own; `prefix` is the level's
    /// key path ("service.www.health"). None (errors recorded) if any key is
    /// wrong or unknown, so that nothing built on this level reports it again.
    pub(super) fn new(
        src: &Source,
        spec: Option<&HealthSpec>,
        prefix: &str,
        errs: &mut Vec<ConfigError>,
    ) -> Option<HealthLayer> {
        let Some(h) = spec else {
            return Some(HealthLayer::default());
        };
        let before = errs.len();
        let duration = |d: &DurationSpec| {
            let d = d.to_duration()?;
            if d.is_zero() {
                return Err("must be above 0".to_string());
            }
            Ok(d)
        };
        let count = |n: &i64| match u32::try_from(*n) {
            Ok(n @ 1..=100) => Ok(n),
            _ => Err(format!("must be between 1 and 100, not {n}")),
        };
        let layer = HealthLayer {
            kind: key(src, &h.kind, prefix, "kind", errs, |k| parse_kind(k)),
            url: key(src, &h.url, prefix, "url", errs, |u| {
                check_url_template(u).map(|()| u.clone())
            }),
            fixed_target: key(src, &h.fixed_target, prefix, "fixed_target", errs, |b| {
                Ok(*b)
            }),
            host: key(src, &h.host, prefix, "host", errs, |s| match s.trim() {
                "" => Err("empty host name".to_string()),
                s => Ok(s.to_string()),
            }),
            port: key(src, &h.port, prefix, "port", errs, |p| match p {
                0 => Err("port 0 cannot be connected to".to_string()),
                p => Ok(*p),
            }),
            interval: key(src, &h.interval, prefix, "interval", errs, duration),
            timeout: key(src, &h.timeout, prefix, "timeout", errs, duration),
            rise: key(src, &h.rise, prefix, "rise", errs, count),
            fall: key(src, &h.fall, prefix, "fall", errs, count),
            expect: key(src, &h.expect, prefix, "expect", errs, |s| {
                parse_status_range(s)
            }),
            expect_body: key(src, &h.expect_body, prefix, "expect_body", errs, |s| {
                Ok(s.clone())
            }),
            insecure: key(src, &h.insecure, prefix, "insecure", errs, |b| Ok(*b)),
            ca_file: key(src, &h.ca_file, prefix, "ca_file", errs, |f| {
                read_ca_file(&src.path, f)
            }),
        };
        // A misspelt key leaves its intended value out: a check of the
        // combination would report what follows from it.
        (errs.len() == before && !super::build::has_unknown_key(errs, prefix)).then_some(layer)
    }

    /// Fields set here win over `base`.
    pub(super) fn over(&self, base: &HealthLayer) -> HealthLayer {
        let b = base.clone();
        let s = self.clone();
        HealthLayer {
            kind: s.kind.or(b.kind),
            url: s.url.or(b.url),
            fixed_target: s.fixed_target.or(b.fixed_target),
            host: s.host.or(b.host),
            port: s.port.or(b.port),
            interval: s.interval.or(b.interval),
            timeout: s.timeout.or(b.timeout),
            rise: s.rise.or(b.rise),
            fall: s.fall.or(b.fall),
            expect: s.expect.or(b.expect),
            expect_body: s.expect_body.or(b.expect_body),
            insecure: s.insecure.or(b.insecure),
            ca_file: s.ca_file.or(b.ca_file),
        }
    }

    /// The check of one endpoint from merged keys. `endpoint` is the address
    /// to check (IPv6 bracketed) or the host name. Problems of a combination
    /// of keys are reported at the key that is set closest to the endpoint;
    /// `line`/`fallback_key` only serve a problem no key is to blame for.
    pub(super) fn check(
        &self,
        src: &Source,
        endpoint: &str,
        line: usize,
        fallback_key: &str,
    ) -> Result<Option<Check>, ConfigError> {
        let template = self.url.as_ref().map_or(DEFAULT_URL, |u| u.value.as_str());
        let kind = match &self.kind {
            Some(At { value: None, .. }) => return Ok(None),
            Some(At { value: Some(k), .. }) => *k,
            None if template.starts_with("https://") => CheckKind::Https,
            None => CheckKind::Http,
        };
        // An error at the key `at` if it is set, else at `or`, else at the level.
        let blame = |at: Option<(usize, &str)>, or: Option<(usize, &str)>, m: String| {
            let (l, k) = at.or(or).unwrap_or((line, fallback_key));
            src.error_at_line(l, k, m)
        };
        let interval = self.interval.as_ref().map_or(DEFAULT_INTERVAL, |i| i.value);
        let timeout = match &self.timeout {
            None => default_timeout(interval),
            Some(t) if t.value >= interval => {
                let from = match &self.interval {
                    Some(i) => format!("interval is set at line {}", i.line),
                    None => "interval is the default".to_string(),
                };
                return Err(t.error(
                    src,
                    format!(
                        "timeout ({}) must be shorter than interval ({}); {from}",
                        humantime::format_duration(t.value),
                        humantime::format_duration(interval)
                    ),
                ));
            }
            Some(t) => t.value,
        };
        let target = match kind {
            CheckKind::Tcp => {
                if let Some(f) = &self.fixed_target {
                    return Err(f.error(
                        src,
                        "`fixed_target` is for http and https checks: a tcp check always connects to each endpoint's own address",
                    ));
                }
                let Some(port) = &self.port else {
                    return Err(blame(
                        pos(&self.kind),
                        None,
                        "a tcp check needs `port`".into(),
                    ));
                };
                let hostport = format!("{endpoint}:{}", port.value);
                if (endpoint.starts_with('[') || endpoint.parse::<IpAddr>().is_ok())
                    && hostport.parse::<SocketAddr>().is_err()
                {
                    return Err(blame(
                        pos(&self.port),
                        None,
                        format!("invalid tcp check address {hostport:?}"),
                    ));
                }
                hostport
            }
            CheckKind::Http | CheckKind::Https => {
                if let Some(p) = &self.port {
                    return Err(p.error(src, "`port` is for tcp checks; put the port in `url`"));
                }
                let want = if kind == CheckKind::Https {
                    "https"
                } else {
                    "http"
                };
                if !template.starts_with(&format!("{want}://")) {
                    return Err(blame(
                        pos(&self.url),
                        pos(&self.kind),
                        format!("url {template:?} does not match check kind {want:?}"),
                    ));
                }
                let fixed = self.fixed_target.as_ref().is_some_and(|f| f.value);
                let names_endpoint = template.contains(ENDPOINT_PLACEHOLDER);
                if fixed && names_endpoint {
                    return Err(blame(
                        pos(&self.fixed_target),
                        None,
                        format!(
                            "fixed_target = true, but url {template:?} contains {ENDPOINT_PLACEHOLDER}: give the one fixed URL, or drop fixed_target"
                        ),
                    ));
                }
                if !fixed && !names_endpoint {
                    return Err(blame(
                        pos(&self.url),
                        None,
                        format!(
                            "url {template:?} has no {ENDPOINT_PLACEHOLDER}: every endpoint would be checked at the same place (write {ENDPOINT_PLACEHOLDER} where the address goes, or set fixed_target = true if one fixed URL is meant to decide for every endpoint)"
                        ),
                    ));
                }
                let url = template.replace(ENDPOINT_PLACEHOLDER, endpoint);
                if let Err(e) = reqwest::Url::parse(&url) {
                    return Err(blame(
                        pos(&self.url),
                        None,
                        format!("invalid url {template:?} (expanded to {url:?}): {e}"),
                    ));
                }
                url
            }
        };
        Ok(Some(Check {
            kind,
            target,
            host: self.host.as_ref().map(|h| h.value.clone()),
            interval,
            timeout,
            rise: self.rise.as_ref().map_or(2, |r| r.value),
            fall: self.fall.as_ref().map_or(3, |f| f.value),
            expect: self.expect.as_ref().map_or((200, 399), |e| e.value),
            expect_body: self.expect_body.as_ref().map(|b| b.value.clone()),
            insecure: self.insecure.as_ref().is_some_and(|i| i.value),
            ca_file: self.ca_file.as_ref().map(|c| c.value.clone()),
        }))
    }
}

fn parse_kind(k: &str) -> Result<Option<CheckKind>, String> {
    match k {
        "none" => Ok(None),
        "http" => Ok(Some(CheckKind::Http)),
        "https" => Ok(Some(CheckKind::Https)),
        "tcp" => Ok(Some(CheckKind::Tcp)),
        other => Err(format!(
            "unknown check kind {other:?} (expected \"http\", \"https\", \"tcp\" or \"none\")"
        )),
    }
}

/// What can be said of a URL template without the endpoint: the scheme,
/// the placeholders, and that it parses with an address filled in.
fn check_url_template(template: &str) -> Result<(), String> {
    if !template.starts_with("http://") && !template.starts_with("https://") {
        return Err(format!(
            "url {template:?} must start with http:// or https://"
        ));
    }
    let rest = template.replace(ENDPOINT_PLACEHOLDER, "");
    if rest.contains('{') || rest.contains('}') {
        return Err(format!(
            "url {template:?} has an unknown placeholder (only {ENDPOINT_PLACEHOLDER} is known)"
        ));
    }
    let url = template.replace(ENDPOINT_PLACEHOLDER, SAMPLE_ENDPOINT);
    reqwest::Url::parse(&url)
        .map(|_| ())
        .map_err(|e| format!("invalid url {template:?} (expanded to {url:?}): {e}"))
}

fn parse_status_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("invalid status range {s:?} (write \"200\" or \"200-399\")");
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let lo: u16 = lo.parse().map_err(|_| bad())?;
    let hi: u16 = hi.parse().map_err(|_| bad())?;
    if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// Resolves `ca_file` (relative paths from the zone file's directory) and
/// checks that it holds at least one PEM certificate, so that a typo fails
/// `check` and `reload` instead of every probe at run time.
fn read_ca_file(zone_file: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = zone_file.parent().unwrap_or(Path::new(""));
    let path = dir.join(name.trim());
    let pem = crate::config::source::read_regular(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut certs = 0;
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        c.map_err(|e| format!("{}: invalid PEM: {e}", path.display()))?;
        certs += 1;
    }
    if certs == 0 {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timeout_is_below_any_interval() {
        let cases = [(5_000, 2_000), (4_000, 2_000), (3_000, 1_500), (1_000, 500)];
        for (interval, want) in cases {
            let got = default_timeout(Duration::from_millis(interval));
            assert_eq!(got, Duration::from_millis(want), "interval {interval}ms");
        }
        for ms in 2..10_000 {
            let i = Duration::from_millis(ms);
            assert!(default_timeout(i) < i);
        }
    }
}
