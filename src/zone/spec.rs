//! Raw zone-file types, as serde reads them: every value still carries its
//! span, for errors that name the line. [`super::build`] validates them.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSpec {
    pub(super) zone: Spanned<ZoneSpec>,
    #[serde(default)]
    pub(super) service: Vec<Spanned<ServiceSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ZoneSpec {
    pub(super) origin: Spanned<String>,
    pub(super) nameservers: Spanned<Vec<Spanned<String>>>,
    pub(super) hostmaster: Spanned<String>,
    pub(super) ttl: Option<Spanned<DurationSpec>>,
    pub(super) negative_ttl: Option<Spanned<DurationSpec>>,
    pub(super) serial: Option<Spanned<u32>>,
    pub(super) refresh: Option<Spanned<DurationSpec>>,
    pub(super) retry: Option<Spanned<DurationSpec>>,
    pub(super) expire: Option<Spanned<DurationSpec>>,
    pub(super) records: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServiceSpec {
    pub(super) name: Spanned<String>,
    pub(super) staging: Option<Spanned<String>>,
    pub(super) staging_pool: Option<Spanned<String>>,
    pub(super) ttl: Option<Spanned<DurationSpec>>,
    pub(super) max_answers: Option<Spanned<i64>>,
    pub(super) on_all_down: Option<Spanned<String>>,
    pub(super) drain_grace: Option<Spanned<DurationSpec>>,
    pub(super) initial_phase: Option<Spanned<String>>,
    pub(super) pools: Spanned<BTreeMap<String, Spanned<PoolSpec>>>,
    pub(super) health: Option<Spanned<HealthSpec>>,
    #[serde(default)]
    pub(super) phase: Vec<Spanned<PhaseSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PhaseSpec {
    pub(super) name: Spanned<String>,
    pub(super) weights: Spanned<BTreeMap<String, Spanned<Value>>>,
    pub(super) hold: Option<Spanned<DurationSpec>>,
    pub(super) ttl: Option<Spanned<DurationSpec>>,
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
#[serde(deny_unknown_fields)]
pub(super) struct PoolTableSpec {
    pub(super) endpoints: Vec<Spanned<EndpointSpec>>,
    pub(super) health: Option<Box<HealthSpec>>,
}

/// An endpoint as written: an address or host name, or a table.
pub(super) enum EndpointSpec {
    Address(String),
    Table(EndpointTableSpec),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EndpointTableSpec {
    pub(super) address: String,
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
