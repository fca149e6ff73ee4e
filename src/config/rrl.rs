//! The `[rrl]` table's settings: response rate limiting of the UDP fast
//! path (the limiter is `dns::rrl`).

use std::net::IpAddr;

/// Default responses per second per (network, response kind).
pub const DEFAULT_RATE: usize = 200;
/// Default: every second limited response is sent truncated, the others dropped.
pub const DEFAULT_SLIP: usize = 2;
/// Default number of counters.
pub const DEFAULT_TABLE_SIZE: usize = 65536;

/// Clients never limited by default: loopback, which no packet from
/// another host can claim (the kernel drops such "martians").
pub const DEFAULT_EXEMPT: [Net; 2] = [
    Net {
        addr: IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0)),
        prefix: 8,
    },
    Net {
        addr: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        prefix: 128,
    },
];

/// A network: an address and a prefix length (`192.0.2.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = mask32(self.prefix);
                u32::from(n) & m == u32::from(a) & m
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = mask128(self.prefix);
                u128::from(n) & m == u128::from(a) & m
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Net {
    type Err = String;

    /// `addr/len`, or a bare address (a network of one).
    fn from_str(s: &str) -> Result<Net, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or network (write \"192.0.2.0/24\")"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.trim()
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?
        };
        Ok(Net { addr, prefix })
    }
}

/// `[rrl]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Whether to limit at all.
    pub enabled: bool,
    /// Responses per second per (client network, response kind).
    pub responses_per_second: u32,
    /// Every `slip`-th limited response is sent truncated; 0: none.
    pub slip: u32,
    /// Prefix length that makes IPv4 clients one network.
    pub ipv4_prefix: u8,
    /// Prefix length that makes IPv6 clients one network.
    pub ipv6_prefix: u8,
    /// Counters in the table.
    pub table_size: usize,
    /// Clients never limited.
    pub exempt: Vec<Net>,
}

pub(crate) fn mask32(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

pub(crate) fn mask128(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}
