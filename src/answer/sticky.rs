//! Sticky assignment (issue 18), pure: which pool, and which endpoint
//! first, a client network gets, by weighted rendezvous hashing with a
//! pinned, seeded hash.
//!
//! The client key is a masked network address ([`ClientKey`]): the EDNS
//! Client Subnet (RFC 7871) when the query has one with a non-zero source
//! prefix, masked to at most /24 or /56; else the resolver's address masked
//! to the service's `sticky_prefix_v4` / `sticky_prefix_v6`.
//!
//! Every pool that may be answered gets the score `weight / -ln(u)`, with
//! `u` in the open interval (0, 1) drawn from the hash of (seed, key, pool
//! name); the highest score wins. That is weighted rendezvous hashing, and
//! its consequences are the properties the tests check over 10⁶ keys: a key
//! keeps its pool while weights and health stay; raising one pool's weight
//! only moves keys into it; rescaling every weight moves nobody; a pool
//! that goes away gives up only its own keys, and gets exactly those back.
//!
//! # The hash, pinned ([`HASH_VERSION`] 1)
//!
//! SipHash-1-3 (Aumasson and Bernstein's SipHash with one compression and
//! three finalisation rounds, the variant Rust's std hashes with today),
//! written out here rather than taken from `std`, whose `DefaultHasher` may
//! change between releases, and rather than a crate, for forty lines whose
//! core the SipHash paper's own test vector checks (run with 2 and 4
//! rounds, see the tests). Inputs:
//!
//! - the seed's keys: `k0 = SipHash-1-3(0, 0, "dnsshift-sticky-1\0" ++
//!   seed)`, `k1` the same with key (0, 1);
//! - a pool's or endpoint's salt: SipHash-1-3 of its name under the seed's
//!   keys;
//! - the draw: SipHash-1-3 under (k0, k1 ^ salt) of the 18-byte key
//!   (family 4 or 6, prefix length, 16 address bytes, masked, IPv4 in the
//!   first four); `u = (top 53 bits + 0.5) / 2⁵³`.
//!
//! Golden vectors in the tests pin all of it: changing any step is a new
//! [`HASH_VERSION`], never a silent change.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::siphash::siphash;

/// The version of the hashing scheme this module implements. Assignments
/// are stable for a given (version, seed, key, pools); a change to any
/// step must bump it (and the golden vectors).
pub const HASH_VERSION: u32 = 1;
/// Domain separation of the seed's keys.
const SEED_CONTEXT: &[u8] = b"dnsshift-sticky-1\0";
/// The longest ECS prefix used as a key, IPv4: longer source prefixes are
/// masked down to it (RFC 7871 §11.1 recommends at most /24).
pub const ECS_MAX_V4: u8 = 24;
/// The longest ECS prefix used as a key, IPv6 (RFC 7871 §11.1: /56).
pub const ECS_MAX_V6: u8 = 56;
pub use crate::zone::{Assignment, DEFAULT_PREFIX_V4, DEFAULT_PREFIX_V6};

/// A rendezvous candidate: the salt of its name and its weight.
pub type Candidate = (u64, u32);

/// Sticky answers and ECS use since start, for `/metrics`: a process-wide
/// tally (like [`crate::dns::BAD_PACKETS`]).
#[derive(Debug)]
pub struct Counts {
    /// Sticky picks keyed on a query's ECS address.
    pub by_ecs: AtomicU64,
    /// Sticky picks keyed on the resolver's address.
    pub by_resolver: AtomicU64,
    /// Queries that carried a valid ECS option (any service, any mode).
    pub ecs_queries: AtomicU64,
}

impl Counts {
    /// Counts one sticky pick.
    pub fn count(&self, from_ecs: bool) {
        let c = if from_ecs {
            &self.by_ecs
        } else {
            &self.by_resolver
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The one tally of [`Counts`].
pub static COUNTS: Counts = Counts {
    by_ecs: AtomicU64::new(0),
    by_resolver: AtomicU64::new(0),
    ecs_queries: AtomicU64::new(0),
};

/// A service's sticky settings, from its zone file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StickyConfig {
    /// The hash keys, from `sticky_seed` (default: the service's name).
    pub seed: Seed,
    /// Prefix of a resolver's IPv4 address keyed on without ECS.
    pub prefix_v4: u8,
    /// Prefix of a resolver's IPv6 address keyed on without ECS.
    pub prefix_v6: u8,
}

impl StickyConfig {
    /// The settings of a service's zone-file keys.
    pub fn of(s: &crate::zone::Sticky) -> StickyConfig {
        StickyConfig {
            seed: Seed::new(&s.seed),
            prefix_v4: s.prefix_v4,
            prefix_v6: s.prefix_v6,
        }
    }

    /// The settings for a seed text with the default prefixes.
    pub fn with_seed(seed: &str) -> StickyConfig {
        StickyConfig {
            seed: Seed::new(seed),
            prefix_v4: DEFAULT_PREFIX_V4,
            prefix_v6: DEFAULT_PREFIX_V6,
        }
    }
}

/// The hash keys every host derives from the same seed text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed {
    k0: u64,
    k1: u64,
}

impl Seed {
    /// The keys of seed text `text`.
    pub fn new(text: &str) -> Seed {
        // The context and the seed, hashed in one pass without allocating.
        let k = |k1| siphash13_parts(0, k1, SEED_CONTEXT, text.as_bytes());
        Seed { k0: k(0), k1: k(1) }
    }

    /// The salt of a pool or endpoint name under this seed.
    pub fn salt(&self, name: &str) -> u64 {
        siphash13_parts(self.k0, self.k1, name.as_bytes(), &[])
    }

    /// `u` in the open interval (0, 1) for `key` and `salt`.
    pub fn unit(&self, key: &ClientKey, salt: u64) -> f64 {
        let h = siphash13_parts(self.k0, self.k1 ^ salt, &key.bytes, &[]);
        ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// How far `key` is from a candidate of weight `weight`: `-ln(u) /
    /// weight`, the inverse of the rendezvous score (lower wins; weight 0
    /// never does).
    pub fn distance(&self, key: &ClientKey, salt: u64, weight: u32) -> f64 {
        if weight == 0 {
            return f64::INFINITY;
        }
        -self.unit(key, salt).ln() / f64::from(weight)
    }

    /// The winner among `candidates` (salt, weight) for `key`: the index
    /// with the highest score `weight / -ln(u)`; ties (never seen in
    /// practice) go to the first. `None` if no candidate has a weight.
    ///
    /// The weights must be [`reduce`]d (divided by their greatest common
    /// divisor), so that 90/10, 9/1 and 900/100 compute the very same
    /// floating-point scores; the plan reduces them once when it is built.
    pub fn rendezvous(&self, key: &ClientKey, candidates: &[Candidate]) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for (i, &(salt, weight)) in candidates.iter().enumerate() {
            if weight == 0 {
                continue;
            }
            let d = self.distance(key, salt, weight);
            if best.is_none_or(|(_, b)| d < b) {
                best = Some((i, d));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// A client network: the key of sticky assignment. 18 bytes: family (4 or
/// 6), prefix length, and the address masked to the prefix (IPv4 in the
/// first four of 16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey {
    bytes: [u8; 18],
}

impl ClientKey {
    /// The network of `addr` masked to `prefix` bits (at most the family's
    /// length).
    pub fn new(addr: IpAddr, prefix: u8) -> ClientKey {
        let mut bytes = [0u8; 18];
        let (family, max, octets): (u8, u8, [u8; 16]) = match addr {
            IpAddr::V4(a) => {
                let mut o = [0; 16];
                o[..4].copy_from_slice(&a.octets());
                (4, 32, o)
            }
            IpAddr::V6(a) => (6, 128, a.octets()),
        };
        let prefix = prefix.min(max);
        bytes[0] = family;
        bytes[1] = prefix;
        let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
        let masked = u128::from_be_bytes(octets) & mask;
        bytes[2..].copy_from_slice(&masked.to_be_bytes());
        ClientKey { bytes }
    }

    /// The prefix length the key keeps.
    pub fn prefix(&self) -> u8 {
        self.bytes[1]
    }
}

/// An EDNS Client Subnet option as a query carried it (RFC 7871 §6):
/// what the key is made from and what the reply must echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecs {
    /// The address (bits beyond `source` are zero).
    pub addr: IpAddr,
    /// SOURCE PREFIX-LENGTH.
    pub source: u8,
}

/// Why an ECS option is refused (RFC 7871 §7.1.1: FORMERR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcsError {
    /// FAMILY is neither 1 (IPv4) nor 2 (IPv6).
    Family,
    /// SOURCE PREFIX-LENGTH longer than the family's address.
    Source,
    /// SCOPE PREFIX-LENGTH not 0 in a query.
    Scope,
    /// ADDRESS not exactly ceil(SOURCE / 8) bytes.
    Length,
    /// ADDRESS has bits set beyond SOURCE.
    Bits,
}

impl Ecs {
    /// Reads an ECS option's data (after code and length). The one reader
    /// of both paths, so that both accept and refuse the same options.
    pub fn parse(data: &[u8]) -> Result<Ecs, EcsError> {
        if data.len() < 4 {
            return Err(EcsError::Length);
        }
        let family = u16::from_be_bytes([data[0], data[1]]);
        let (source, scope) = (data[2], data[3]);
        let max = match family {
            1 => 32,
            2 => 128,
            _ => return Err(EcsError::Family),
        };
        if source > max {
            return Err(EcsError::Source);
        }
        if scope != 0 {
            return Err(EcsError::Scope);
        }
        let addr = &data[4..];
        let n = usize::from(source).div_ceil(8);
        if addr.len() != n {
            return Err(EcsError::Length);
        }
        if let Some(last) = addr.last()
            && source % 8 != 0
            && last & (0xFF >> (source % 8)) != 0
        {
            return Err(EcsError::Bits);
        }
        let addr = if family == 1 {
            let mut o = [0u8; 4];
            o[..n].copy_from_slice(addr);
            IpAddr::from(o)
        } else {
            let mut o = [0u8; 16];
            o[..n].copy_from_slice(addr);
            IpAddr::from(o)
        };
        Ok(Ecs { addr, source })
    }

    /// The option's data in a reply with `scope` (RFC 7871 §7.2.1: family,
    /// source prefix and address as the query sent them): the bytes and
    /// their number.
    pub fn reply(&self, scope: u8) -> ([u8; 20], usize) {
        let mut out = [0u8; 20];
        let (family, octets): (u16, [u8; 16]) = match self.addr {
            IpAddr::V4(a) => {
                let mut o = [0; 16];
                o[..4].copy_from_slice(&a.octets());
                (1, o)
            }
            IpAddr::V6(a) => (2, a.octets()),
        };
        out[..2].copy_from_slice(&family.to_be_bytes());
        out[2] = self.source;
        out[3] = scope;
        let n = usize::from(self.source).div_ceil(8);
        out[4..4 + n].copy_from_slice(&octets[..n]);
        (out, 4 + n)
    }
}

/// Who asked: what a sticky answer is keyed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Client {
    /// The address the query came from (the resolver's); `None` when
    /// unknown, and then a sticky name draws at random.
    pub addr: Option<IpAddr>,
    /// The query's ECS option, if it had a valid one.
    pub ecs: Option<Ecs>,
}

impl Client {
    /// A client known by its address, without ECS.
    pub fn from(addr: IpAddr) -> Client {
        Client {
            addr: Some(addr),
            ecs: None,
        }
    }

    /// The key under `cfg`, and whether it came from ECS: the ECS address
    /// masked to min(source, /24 or /56) when ECS has a non-zero source
    /// prefix, else the resolver's address masked to the configured prefix.
    pub fn key(&self, cfg: &StickyConfig) -> Option<(ClientKey, bool)> {
        if let Some(e) = self.ecs.filter(|e| e.source > 0) {
            let max = if e.addr.is_ipv4() {
                ECS_MAX_V4
            } else {
                ECS_MAX_V6
            };
            return Some((ClientKey::new(e.addr, e.source.min(max)), true));
        }
        let addr = self.addr?;
        let prefix = if addr.is_ipv4() {
            cfg.prefix_v4
        } else {
            cfg.prefix_v6
        };
        Some((ClientKey::new(addr, prefix), false))
    }
}

/// Divides the candidates' weights by their greatest common divisor, for
/// [`Seed::rendezvous`].
pub fn reduce(candidates: &mut [Candidate]) {
    let g = candidates.iter().fold(0, |g, &(_, w)| gcd(g, w)).max(1);
    for c in candidates {
        c.1 /= g;
    }
}

/// Greatest common divisor (`gcd(0, w) = w`).
fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// SipHash-1-3 of `a ++ b`.
fn siphash13_parts(k0: u64, k1: u64, a: &[u8], b: &[u8]) -> u64 {
    siphash::<1, 3>(k0, k1, a, b)
}

#[cfg(test)]
mod tests;
