//! Response rate limiting on UDP, in the manner of BIND, Knot and NSD RRL:
//! responses are counted per client network (an IPv4 /24, an IPv6 /56 by
//! default) and per kind of response (the same name and type for answers;
//! all NXDOMAINs, all errors), and beyond `responses_per_second` in one
//! second a response is dropped, except every `slip`-th, which is sent as
//! an empty truncated answer (TC=1) so a real client behind a spoofed
//! flood retries over TCP. A resolver asks again only when its cache
//! expires, so the default rate is far beyond what one network of
//! resolvers sends for one name; a reflection flood, which repeats one
//! name to one victim, is throttled.
//!
//! The table is a fixed array of per-second counters indexed by a seeded
//! hash (colliding keys share a counter, as in Knot's table): no
//! allocation, no lock; concurrent workers may lose an increment now and
//! then, which only makes the limit a little lenient.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::fast::question_end;
use super::message::HEADER_LEN;

// The `[rrl]` table's types live with the config; the limiter's users
// find them here too.
pub use crate::config::rrl::{
    DEFAULT_EXEMPT, DEFAULT_RATE, DEFAULT_SLIP, DEFAULT_TABLE_SIZE, Net, Settings,
};
use crate::config::rrl::{mask32, mask128};

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate: send it.
    Send,
    /// Over the rate: send it truncated ([`slip`]).
    Slip,
    /// Over the rate: send nothing.
    Drop,
}

/// The rate limiter shared by every UDP worker.
#[derive(Debug)]
pub struct Rrl {
    settings: Settings,
    seed: u64,
    /// Per counter: the second (high 32 bits) and the responses in it.
    counters: Box<[AtomicU64]>,
}

/// Whole seconds on a monotonic clock, for [`Rrl::check`].
pub fn now_secs() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs() as u32
}

impl Rrl {
    /// A limiter with `settings` (a table of `table_size` counters).
    pub fn new(settings: Settings) -> Rrl {
        let size = if settings.enabled {
            settings.table_size.max(1)
        } else {
            1
        };
        Rrl {
            settings,
            seed: fastrand::u64(..),
            counters: (0..size).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Counts `response` (wire format, as about to be sent) to `client`
    /// in second `now`, and says whether to send it.
    pub fn check(&self, client: IpAddr, response: &[u8], now: u32) -> Verdict {
        let s = &self.settings;
        if !s.enabled || response.len() < HEADER_LEN || s.exempt.iter().any(|n| n.contains(client))
        {
            return Verdict::Send;
        }
        let mut h = Hash(self.seed);
        match client {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                h.add(&(bits & mask32(s.ipv4_prefix)).to_be_bytes());
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                h.add(&(bits & mask128(s.ipv6_prefix)).to_be_bytes());
            }
        }
        let rcode = response[3] & 0x0F;
        h.add(&[rcode]);
        if rcode == 0 {
            // Answers: per name and type. NXDOMAIN and errors: one kind
            // each, so random names do not escape the limit.
            if let Some(end) = question_end(response) {
                for b in &response[HEADER_LEN..end] {
                    h.add(&[b.to_ascii_lowercase()]);
                }
            }
        }
        let c = &self.counters[(h.0 % self.counters.len() as u64) as usize];
        let v = c.load(Ordering::Relaxed);
        let count = if (v >> 32) as u32 == now {
            (v as u32).saturating_add(1)
        } else {
            1
        };
        c.store((u64::from(now) << 32) | u64::from(count), Ordering::Relaxed);
        if count <= s.responses_per_second {
            Verdict::Send
        } else if s.slip > 0 && (count - s.responses_per_second).is_multiple_of(s.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// Cuts `response` down to a truncated answer: the header with TC set,
/// the question, and the OPT record if it had one, so that a client's
/// new server cookie (RFC 7873 §5.2) reaches it and its retry over TCP
/// carries it. Returns the new length. Allocation-free.
pub fn slip(response: &mut [u8]) -> usize {
    let opt = super::message::opt_span(response);
    let end = question_end(response).unwrap_or(HEADER_LEN);
    response[2] |= 0x02;
    response[6..12].fill(0);
    if end == HEADER_LEN {
        response[4..6].fill(0);
    }
    match opt {
        Some((start, stop)) if start >= end => {
            response.copy_within(start..stop, end);
            response[11] = 1;
            end + (stop - start)
        }
        _ => end,
    }
}

/// FNV-1a over bytes, from a secret seed (so a flood cannot aim at one
/// counter).
struct Hash(u64);

impl Hash {
    fn add(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(name: &[u8], rcode: u8) -> Vec<u8> {
        let mut r = vec![0x12, 0x34, 0x84, rcode, 0, 1, 0, 1, 0, 0, 0, 0];
        r.extend_from_slice(name);
        r.extend_from_slice(&[0, 1, 0, 1]);
        r.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 192, 0, 2, 1]);
        r
    }

    fn rrl(rate: u32, slip: u32) -> Rrl {
        Rrl::new(Settings {
            enabled: true,
            responses_per_second: rate,
            slip,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            table_size: 1024,
            exempt: vec!["10.0.0.0/8".parse().unwrap()],
        })
    }

    #[test]
    fn limits_per_network_and_name_with_slip() {
        let r = rrl(3, 2);
        let www = response(b"\x03www\x04test\x00", 0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let same_net: IpAddr = "192.0.2.200".parse().unwrap();
        let verdicts: Vec<Verdict> = (0..7)
            .map(|i| r.check(if i % 2 == 0 { a } else { same_net }, &www, 10))
            .collect();
        use Verdict::*;
        assert_eq!(verdicts, [Send, Send, Send, Drop, Slip, Drop, Slip]);
        // Another network, another name, and the next second are fresh.
        assert_eq!(r.check("198.51.100.1".parse().unwrap(), &www, 10), Send);
        // (a 1024-counter table: a collision would share the count)
        let mail = response(b"\x04mail\x04test\x00", 0);
        assert_eq!(r.check(a, &mail, 10), Send);
        assert_eq!(r.check(a, &www, 11), Send);
    }

    #[test]
    fn nxdomains_share_one_count_and_disabled_sends_all() {
        let r = rrl(2, 0);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let v: Vec<Verdict> = [b"\x01a\x00", b"\x01b\x00", b"\x01c\x00"]
            .iter()
            .map(|n| r.check(a, &response(*n, 3), 5))
            .collect();
        assert_eq!(v, [Verdict::Send, Verdict::Send, Verdict::Drop]);
        let off = Rrl::new(Settings {
            enabled: false,
            ..r.settings.clone()
        });
        for _ in 0..10 {
            assert_eq!(off.check(a, &response(b"\x00", 3), 5), Verdict::Send);
        }
    }

    #[test]
    fn slip_keeps_header_and_question_only() {
        let mut r = response(b"\x03www\x04test\x00", 0);
        let n = slip(&mut r);
        assert_eq!(n, 12 + 10 + 4);
        assert_eq!(r[2] & 0x02, 0x02, "TC");
        assert_eq!(&r[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn slip_keeps_the_opt_record_and_its_cookie() {
        let mut r = response(b"\x03www\x04test\x00", 0);
        r[11] = 1;
        // OPT: root, type 41, payload 1232, TTL 0, one COOKIE option (4 + 24).
        let opt: Vec<u8> = [
            &[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 28, 0, 10, 0, 24][..],
            &[7; 24][..],
        ]
        .concat();
        r.extend_from_slice(&opt);
        let n = slip(&mut r);
        assert_eq!(n, 12 + 10 + 4 + opt.len());
        assert_eq!(&r[4..12], &[0, 1, 0, 0, 0, 0, 0, 1], "the OPT alone left");
        assert_eq!(&r[26..n], &opt[..]);
    }

    #[test]
    fn exempt_networks_are_never_limited() {
        let r = rrl(1, 0);
        let www = response(b"\x03www\x04test\x00", 0);
        for _ in 0..5 {
            assert_eq!(r.check("10.1.2.3".parse().unwrap(), &www, 1), Verdict::Send);
        }
        let lo: Net = "::1".parse().unwrap();
        assert!(lo.contains("::1".parse().unwrap()));
        assert!(!lo.contains("::2".parse().unwrap()));
        assert!("192.0.2.0/33".parse::<Net>().is_err());
        assert!("nonsense".parse::<Net>().is_err());
    }

    #[test]
    fn masks() {
        assert_eq!(mask32(24), 0xFFFF_FF00);
        assert_eq!(mask32(32), u32::MAX);
        assert_eq!(mask128(128), u128::MAX);
        assert_eq!(mask128(56) >> 72, (1u128 << 56) - 1);
    }
}
