//! Raw zone-file types, as serde reads them: every value still carries its
//! span, for errors that name the line. [`super::build`] validates them.
//! Serde skips keys these types do not read; [`unknown_keys`] reports each
//! of them at its own line, so that one misspelt key does not hide the
//! rest of the file's mistakes.

use super::*;
use crate::config::source::{fields, sub_table};
use toml::de::{DeTable, DeValue};

#[derive(Deserialize)]
pub(super) struct FileSpec {
    pub(super) zone: Spanned<ZoneSpec>,
    #[serde(default)]
    pub(super) service: Vec<Spanned<ServiceSpec>>,
}

#[derive(Deserialize)]
pub(super) struct ZoneSpec {
    #[serde(default = "absent")]
    pub(super) origin: Spanned<String>,
    #[serde(default = "absent")]
    pub(super) nameservers: Spanned<Vec<Spanned<String>>>,
    #[serde(default = "absent")]
    pub(super) hostmaster: Spanned<String>,
    pub(super) ttl: Option<Spanned<DurationSpec>>,
    pub(super) negative_ttl: Option<Spanned<DurationSpec>>,
    pub(super) serial: Option<Spanned<u32>>,
    pub(super) refresh: Option<Spanned<DurationSpec>>,
    pub(super) retry: Option<Spanned<DurationSpec>>,
    pub(super) expire: Option<Spanned<DurationSpec>>,
    pub(super) records: Option<Spanned<String>>,
    pub(super) dnssec: Option<Spanned<DnssecSpec>>,
}

/// `[zone.dnssec]`: the zone's signing and published keys (issue 20).
#[derive(Deserialize)]
pub(super) struct DnssecSpec {
    #[serde(default)]
    pub(super) keys: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) publish: Vec<Spanned<String>>,
    pub(super) algorithm: Option<Spanned<String>>,
}

#[derive(Deserialize)]
pub(super) struct ServiceSpec {
    #[serde(default = "absent")]
    pub(super) name: Spanned<String>,
    pub(super) staging: Option<Spanned<String>>,
    pub(super) staging_pool: Option<Spanned<String>>,
    pub(super) ttl: Option<Spanned<DurationSpec>>,
    pub(super) max_answers: Option<Spanned<i64>>,
    pub(super) on_all_down: Option<Spanned<String>>,
    pub(super) drain_grace: Option<Spanned<DurationSpec>>,
    pub(super) initial_phase: Option<Spanned<String>>,
    pub(super) assignment: Option<Spanned<String>>,
    pub(super) sticky_seed: Option<Spanned<String>>,
    pub(super) sticky_prefix_v4: Option<Spanned<i64>>,
    pub(super) sticky_prefix_v6: Option<Spanned<i64>>,
    #[serde(default = "absent")]
    pub(super) pools: Spanned<BTreeMap<String, Spanned<PoolSpec>>>,
    pub(super) health: Option<Spanned<HealthSpec>>,
    #[serde(default)]
    pub(super) phase: Vec<Spanned<PhaseSpec>>,
    pub(super) analysis: Option<Spanned<AnalysisSpec>>,
}

#[derive(Deserialize)]
pub(super) struct PhaseSpec {
    #[serde(default = "absent")]
    pub(super) name: Spanned<String>,
    #[serde(default = "absent")]
    pub(super) weights: Spanned<BTreeMap<String, Spanned<Value>>>,
    pub(super) hold: Option<Spanned<DurationSpec>>,
    pub(super) ttl: Option<Spanned<DurationSpec>>,
    pub(super) auto: Option<Spanned<AutoSpec>>,
}

/// A required key that is not written: an empty value at the empty span
/// 0..0, which [`is_absent`] tells from any written value. Serde's own
/// "missing field" would stop the whole file there, without a key; build
/// reports it with its table's line and key instead ([`super::build::missing`]),
/// and not at all when it follows from a misspelt key.
pub(super) fn absent<T: Default>() -> Spanned<T> {
    Spanned::new(0..0, T::default())
}

/// Whether a required key was left out ([`absent`]).
pub(super) fn is_absent<T>(v: &Spanned<T>) -> bool {
    v.span().is_empty()
}

/// A pool as written: one host name (or address), a list of endpoints, or a
/// table with `endpoints` and `health`. Deserialized by hand (not
/// `untagged`) so that every value inside keeps its position for errors.
pub(super) enum PoolSpec {
    One(String),
    List(Vec<Spanned<EndpointSpec>>),
    Table(PoolTableSpec),
}

#[derive(Deserialize)]
pub(super) struct PoolTableSpec {
    #[serde(default)]
    pub(super) endpoints: Vec<Spanned<EndpointSpec>>,
    pub(super) health: Option<Box<HealthSpec>>,
}

/// An endpoint as written: an address or host name, or a table.
pub(super) enum EndpointSpec {
    Address(String),
    Table(EndpointTableSpec),
}

#[derive(Deserialize)]
pub(super) struct EndpointTableSpec {
    pub(super) address: Option<String>,
    pub(super) check_address: Option<Spanned<String>>,
    pub(super) health: Option<Box<HealthSpec>>,
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

/// Every key of the file that no spec type reads, one error each at its
/// line, with its key path. A file that is not valid TOML yields nothing
/// here: [`Source::parse`] reports its syntax error.
pub(super) fn unknown_keys(src: &Source, errs: &mut Vec<ConfigError>) {
    let Some(doc) = src.keys() else {
        return;
    };
    src.unknown_keys(&doc, "", fields::<FileSpec>(), errs);
    if let Some(zone) = sub_table(&doc, "zone") {
        src.unknown_keys(zone, "zone", fields::<ZoneSpec>(), errs);
        if let Some(d) = sub_table(zone, "dnssec") {
            src.unknown_keys(d, "zone.dnssec", fields::<DnssecSpec>(), errs);
        }
    }
    for (i, s) in tables(&doc, "service").enumerate() {
        // Named as build.rs names the service's keys.
        let prefix = match s.get("name").and_then(|n| n.get_ref().as_str()) {
            Some(n) if !n.trim().is_empty() => format!("service.{}", n.trim()),
            _ => format!("service[{i}]"),
        };
        src.unknown_keys(s, &prefix, fields::<ServiceSpec>(), errs);
        health_keys(src, s, &prefix, errs);
        unknown_analysis_keys(src, s, &prefix, errs);
        for (name, pool) in sub_table(s, "pools").into_iter().flatten() {
            let key = format!("{prefix}.pools.{}", name.get_ref());
            match pool.get_ref() {
                DeValue::Table(t) => {
                    src.unknown_keys(t, &key, fields::<PoolTableSpec>(), errs);
                    health_keys(src, t, &key, errs);
                    endpoint_keys(src, t.get("endpoints"), &format!("{key}.endpoints"), errs);
                }
                _ => endpoint_keys(src, Some(pool), &key, errs),
            }
        }
        for (j, p) in tables(s, "phase").enumerate() {
            // Named as build.rs names the phase's keys.
            let key = match p.get("name").and_then(|n| n.get_ref().as_str()) {
                Some(n) if !n.trim().is_empty() => format!("{prefix}.phase.{}", n.trim()),
                _ => format!("{prefix}.phase[{j}]"),
            };
            src.unknown_keys(p, &key, fields::<PhaseSpec>(), errs);
            unknown_auto_keys(src, p, &key, errs);
        }
    }
}

/// The tables in the array `key` of `table` (`[[service]]`, `[[service.phase]]`).
fn tables<'a, 'i>(
    table: &'a DeTable<'i>,
    key: &str,
) -> impl Iterator<Item = &'a DeTable<'i>> + use<'a, 'i> {
    table
        .get(key)
        .and_then(|v| v.get_ref().as_array())
        .into_iter()
        .flatten()
        .filter_map(|v| v.get_ref().as_table())
}

/// Unknown keys of the `health` table of `table`, if it has one.
fn health_keys(src: &Source, table: &DeTable<'_>, prefix: &str, errs: &mut Vec<ConfigError>) {
    if let Some(h) = sub_table(table, "health") {
        src.unknown_keys(h, &format!("{prefix}.health"), fields::<HealthSpec>(), errs);
    }
}

/// Unknown keys of the endpoints written as tables in a list of endpoints.
fn endpoint_keys(
    src: &Source,
    list: Option<&Spanned<DeValue<'_>>>,
    prefix: &str,
    errs: &mut Vec<ConfigError>,
) {
    let Some(list) = list.and_then(|l| l.get_ref().as_array()) else {
        return;
    };
    for (i, e) in list.into_iter().enumerate() {
        if let Some(t) = e.get_ref().as_table() {
            let key = format!("{prefix}[{i}]");
            src.unknown_keys(t, &key, fields::<EndpointTableSpec>(), errs);
            health_keys(src, t, &key, errs);
        }
    }
}
