//! DNS Cookies (RFC 7873) with the interoperable server cookie of RFC 9018:
//! reading a query's COOKIE option, checking its server cookie and making
//! the one the reply carries. Pure, allocation-free per query: the fast
//! path and the hickory handler both call [`answer`].
//!
//! A server cookie is 16 bytes: version 1, three reserved bytes, a 32-bit
//! timestamp (seconds) and 8 bytes of SipHash-2-4, keyed with a 16-byte
//! secret, over client cookie | version | reserved | timestamp | client IP.
//! The secret lives here, swapped whole on start, `reload` and rotation
//! ([`install`]); the previous one is still accepted after a rotation.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::siphash::siphash;
use arc_swap::ArcSwap;

/// The EDNS option code of COOKIE (RFC 7873 §4).
pub const OPTION_COOKIE: u16 = 10;
/// Length of a client cookie.
pub const CLIENT_LEN: usize = 8;
/// Length of the server cookies we make (RFC 9018 §4).
pub const SERVER_LEN: usize = 16;
/// Longest server cookie a client may send back (RFC 7873 §4: 8 to 32).
const MAX_SERVER_LEN: usize = 32;
/// Shortest server cookie a client may send back.
const MIN_SERVER_LEN: usize = 8;
/// The COOKIE option data of a reply: client cookie and server cookie.
pub const REPLY_LEN: usize = CLIENT_LEN + SERVER_LEN;
/// The server cookie version of RFC 9018.
const VERSION: u8 = 1;
/// A server cookie older than this is no longer valid (RFC 9018 §4.3).
pub const MAX_AGE_SECS: u32 = 3600;
/// A server cookie from further in the future than this is not valid
/// (clock skew between hosts sharing the secret).
pub const MAX_FUTURE_SECS: u32 = 300;
/// A valid server cookie older than this is replaced by a fresh one;
/// younger, it is echoed (RFC 9018 §4.3).
pub const REFRESH_AGE_SECS: u32 = 1800;
/// Length of a secret (a SipHash key).
pub const SECRET_LEN: usize = 16;

/// The secrets server cookies are made and checked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secrets {
    /// Makes every new server cookie; checks them.
    pub current: [u8; SECRET_LEN],
    /// Still accepted (a cookie made with it is valid, and replaced by one
    /// made with `current`): the secret before a rotation.
    pub previous: Option<[u8; SECRET_LEN]>,
}

/// A COOKIE option as a query sent it: a client cookie, and maybe the
/// server cookie we gave the client before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    client: [u8; CLIENT_LEN],
    server: [u8; MAX_SERVER_LEN],
    server_len: u8,
}

/// A COOKIE option whose length RFC 7873 §5.2.2 calls malformed (the
/// client cookie not 8 bytes, a server cookie shorter than 8 or longer
/// than 32): FORMERR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// What a query's cookie was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A client cookie alone: the reply carries a new server cookie.
    New,
    /// A server cookie we made, for this client, within its lifetime: the
    /// query is exempt from rate limiting.
    Valid,
    /// A server cookie we did not make (another secret, another client
    /// address, too old): treated like a client cookie alone.
    Invalid,
}

/// Cookie counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counts {
    /// Client cookies alone, answered with a new server cookie.
    pub new: AtomicU64,
    /// Valid server cookies.
    pub valid: AtomicU64,
    /// Invalid server cookies, answered with a new one.
    pub invalid: AtomicU64,
    /// Malformed COOKIE options, answered FORMERR.
    pub malformed: AtomicU64,
}

/// The process's cookie counters.
pub static COUNTS: Counts = Counts {
    new: AtomicU64::new(0),
    valid: AtomicU64::new(0),
    invalid: AtomicU64::new(0),
    malformed: AtomicU64::new(0),
};

impl Counts {
    /// Counts one answered query's cookie.
    pub fn count(&self, v: Verdict) {
        match v {
            Verdict::New => &self.new,
            Verdict::Valid => &self.valid,
            Verdict::Invalid => &self.invalid,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

impl Received {
    /// Reads a COOKIE option's data.
    pub fn parse(data: &[u8]) -> Result<Received, Malformed> {
        let n = data.len();
        if n != CLIENT_LEN
            && !(CLIENT_LEN + MIN_SERVER_LEN..=CLIENT_LEN + MAX_SERVER_LEN).contains(&n)
        {
            return Err(Malformed);
        }
        let mut r = Received {
            client: [0; CLIENT_LEN],
            server: [0; MAX_SERVER_LEN],
            server_len: (n - CLIENT_LEN) as u8,
        };
        r.client.copy_from_slice(&data[..CLIENT_LEN]);
        r.server[..n - CLIENT_LEN].copy_from_slice(&data[CLIENT_LEN..]);
        Ok(r)
    }

    /// The server cookie sent, if any.
    fn server(&self) -> &[u8] {
        &self.server[..usize::from(self.server_len)]
    }
}

impl Secrets {
    /// A random secret, no previous one.
    pub fn random() -> Secrets {
        let mut current = [0; SECRET_LEN];
        if getrandom::fill(&mut current).is_err() {
            // No OS randomness: still unpredictable enough to tell our
            // cookies from forgeries within one run.
            let t = crate::clock::unix_ms();
            current[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
            current[8..].copy_from_slice(&t.to_le_bytes());
        }
        Secrets {
            current,
            previous: None,
        }
    }

    /// Whether `server` is a server cookie made with one of the secrets for
    /// `client` at `ip`, within its lifetime at `now` (seconds); its age.
    fn check(
        &self,
        client: &[u8; CLIENT_LEN],
        server: &[u8],
        ip: IpAddr,
        now: u32,
    ) -> Option<(i64, bool)> {
        if server.len() != SERVER_LEN || server[0] != VERSION {
            return None;
        }
        let ts = u32::from_be_bytes([server[4], server[5], server[6], server[7]]);
        // Serial number arithmetic (RFC 1982), as RFC 9018 §4.3 asks.
        let age = i64::from(now.wrapping_sub(ts) as i32);
        if age > i64::from(MAX_AGE_SECS) || age < -i64::from(MAX_FUTURE_SECS) {
            return None;
        }
        let head: [u8; 8] = server[..8].try_into().ok()?;
        if hash(&self.current, client, &head, ip) == server[8..] {
            return Some((age, true));
        }
        let previous = self.previous?;
        (hash(&previous, client, &head, ip) == server[8..]).then_some((age, false))
    }

    /// A new server cookie for `client` at `ip`, stamped `now`.
    fn make(&self, client: &[u8; CLIENT_LEN], ip: IpAddr, now: u32) -> [u8; SERVER_LEN] {
        let mut head = [VERSION, 0, 0, 0, 0, 0, 0, 0];
        head[4..].copy_from_slice(&now.to_be_bytes());
        let mut out = [0; SERVER_LEN];
        out[..8].copy_from_slice(&head);
        out[8..].copy_from_slice(&hash(&self.current, client, &head, ip));
        out
    }
}

/// The hash part of a server cookie: SipHash-2-4 keyed with `secret` over
/// client cookie | version, reserved, timestamp | client IP (RFC 9018 §4.4).
fn hash(
    secret: &[u8; SECRET_LEN],
    client: &[u8; CLIENT_LEN],
    head: &[u8; 8],
    ip: IpAddr,
) -> [u8; 8] {
    let mut msg = [0u8; CLIENT_LEN + 8 + 16];
    msg[..CLIENT_LEN].copy_from_slice(client);
    msg[CLIENT_LEN..CLIENT_LEN + 8].copy_from_slice(head);
    let n = match ip {
        IpAddr::V4(a) => {
            msg[16..20].copy_from_slice(&a.octets());
            20
        }
        IpAddr::V6(a) => {
            msg[16..32].copy_from_slice(&a.octets());
            32
        }
    };
    let k = |i: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&secret[i..i + 8]);
        u64::from_le_bytes(b)
    };
    siphash::<2, 4>(k(0), k(8), &msg[..n], &[]).to_le_bytes()
}

/// The COOKIE option data of the reply to a query that sent `received`
/// from `ip` at `now` (seconds since the epoch), and what the cookie was: a
/// valid server cookie younger than [`REFRESH_AGE_SECS`] made with the
/// current secret is echoed, any other gets a fresh one.
pub fn answer(
    secrets: &Secrets,
    received: &Received,
    ip: IpAddr,
    now: u32,
) -> ([u8; REPLY_LEN], Verdict) {
    let mut out = [0; REPLY_LEN];
    out[..CLIENT_LEN].copy_from_slice(&received.client);
    let server = received.server();
    let verdict = match secrets.check(&received.client, server, ip, now) {
        Some((age, true)) if age < i64::from(REFRESH_AGE_SECS) => {
            out[CLIENT_LEN..].copy_from_slice(server);
            return (out, Verdict::Valid);
        }
        Some(_) => Verdict::Valid,
        None if server.is_empty() => Verdict::New,
        None => Verdict::Invalid,
    };
    out[CLIENT_LEN..].copy_from_slice(&secrets.make(&received.client, ip, now));
    (out, verdict)
}

/// The secrets in use: a random one until [`install`] says otherwise.
fn slot() -> &'static ArcSwap<Secrets> {
    static SECRETS: OnceLock<ArcSwap<Secrets>> = OnceLock::new();
    SECRETS.get_or_init(|| ArcSwap::from_pointee(Secrets::random()))
}

/// The secrets in use now.
pub fn secrets() -> arc_swap::Guard<std::sync::Arc<Secrets>> {
    slot().load()
}

/// Makes `new` the secrets in use (swapped whole: a query sees the old
/// ones or the new ones); whether they differ from those in use. Where
/// they come from and when they rotate is [`crate::operator::cookies`]'s.
pub fn install(new: Secrets) -> bool {
    if **slot().load() == new {
        return false;
    }
    slot().store(std::sync::Arc::new(new));
    true
}

/// The current time as a cookie timestamp.
pub fn now_secs() -> u32 {
    (crate::clock::unix_ms() / 1000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn secrets(s: &str) -> Secrets {
        Secrets {
            current: hex(s).try_into().unwrap(),
            previous: None,
        }
    }

    /// RFC 9018 Appendix A.1: the server cookie a new client learns.
    #[test]
    fn matches_rfc_9018_appendix_a1() {
        let s = secrets("e5e973e5a6b2a43f48e7dc849e37bfcf");
        let r = Received::parse(&hex("2464c4abcf10c957")).unwrap();
        let ip: IpAddr = "198.51.100.100".parse().unwrap();
        let (out, v) = answer(&s, &r, ip, 1_559_731_985);
        assert_eq!(v, Verdict::New);
        assert_eq!(
            out.to_vec(),
            hex("2464c4abcf10c957010000005cf79f111f8130c3eee29480")
        );
    }

    #[test]
    fn valid_cookies_are_echoed_then_refreshed_and_expire() {
        let s = secrets("000102030405060708090a0b0c0d0e0f");
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let t0 = 1_700_000_000;
        let (first, v) = answer(&s, &Received::parse(&[7; 8]).unwrap(), ip, t0);
        assert_eq!(v, Verdict::New);
        let back = Received::parse(&first).unwrap();
        // Young: echoed.
        assert_eq!(answer(&s, &back, ip, t0 + 10), (first, Verdict::Valid));
        // From slightly in the future (another host's clock): valid.
        assert_eq!(answer(&s, &back, ip, t0 - 299).1, Verdict::Valid);
        assert_eq!(answer(&s, &back, ip, t0 - 301).1, Verdict::Invalid);
        // Older than half an hour: valid, replaced.
        let (renewed, v) = answer(&s, &back, ip, t0 + 1801);
        assert_eq!(v, Verdict::Valid);
        assert_ne!(renewed, first);
        assert_eq!(renewed[..8], first[..8]);
        // Older than an hour, another address, another secret: invalid.
        assert_eq!(answer(&s, &back, ip, t0 + 3601).1, Verdict::Invalid);
        let other: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(answer(&s, &back, other, t0).1, Verdict::Invalid);
        let rotated = Secrets {
            current: [9; 16],
            previous: Some(s.current),
        };
        let (fresh, v) = answer(&rotated, &back, ip, t0 + 1);
        assert_eq!(v, Verdict::Valid, "the previous secret is still accepted");
        assert_ne!(fresh, first, "and replaced by one of the current secret");
        assert_eq!(
            answer(&secrets("ff".repeat(16).as_str()), &back, ip, t0).1,
            Verdict::Invalid
        );
        // Tampered hash.
        let mut bad = first;
        bad[REPLY_LEN - 1] ^= 1;
        assert_eq!(
            answer(&s, &Received::parse(&bad).unwrap(), ip, t0).1,
            Verdict::Invalid
        );
    }

    #[test]
    fn lengths_rfc_7873_calls_malformed_are_refused() {
        for n in [0, 1, 7, 9, 15, 41, 100] {
            assert_eq!(Received::parse(&vec![1; n]), Err(Malformed), "{n} bytes");
        }
        for n in [8, 16, 24, 40] {
            assert!(Received::parse(&vec![1; n]).is_ok(), "{n} bytes");
        }
    }
}
