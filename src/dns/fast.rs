//! The UDP fast path dnsshift owns: one `SO_REUSEPORT` socket per worker
//! thread, batched `recvmmsg`/`sendmmsg`, an in-place request parser and
//! answers copied from wire templates the plan precomputed
//! ([`crate::answer::wire`]). Per query: no allocation, no lock, no syscall
//! beyond the batched I/O. Whatever the templates do not cover goes to the
//! hickory [`Handler`](crate::dns::Handler) ([`fallback`](super::fallback)); TCP stays on
//! hickory.
//!
//! ```text
//!  kernel ──recvmmsg──▶ worker thread ──parse──▶ Plan.wire.answer ──sendmmsg──▶ kernel
//!                              │ (unusual query)
//!                              └──▶ tokio task: hickory Handler ──sendto──▶ kernel
//! ```

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::cookie;
use super::message::{self, End, HEADER_LEN};
use super::parse::{self, MAX_NAME, Parsed};
use super::rrl;
use crate::answer::wire::Outcome;
use crate::answer::{Plan, ThreadRandom};
use crate::clock::unix_ms;

/// What to do with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the first `n` bytes of the output buffer back.
    Send(usize),
    /// Let the hickory handler answer it.
    Fallback,
    /// Send nothing.
    Drop,
}

/// Answers one UDP request from `plan` into `out` (at least
/// [`MAX_UDP_PAYLOAD`](crate::dns::MAX_UDP_PAYLOAD) bytes). Allocates
/// nothing; counts the query as the hickory path would.
pub fn respond(plan: &Plan, req: &[u8], out: &mut [u8]) -> Action {
    respond_from(plan, req, None, out)
}

/// [`respond`] for a datagram from `src` (the resolver): a sticky service
/// keys its answer on its network, or on the query's client subnet.
pub fn respond_from(plan: &Plan, req: &[u8], src: Option<IpAddr>, out: &mut [u8]) -> Action {
    respond_checked(plan, req, src, out).0
}

/// [`respond_from`], and whether the query carried a valid server cookie
/// (RFC 7873), which exempts its answer from rate limiting. A query with a
/// COOKIE option and no `src` (nothing to check the cookie against) falls
/// back.
pub fn respond_checked(
    plan: &Plan,
    req: &[u8],
    src: Option<IpAddr>,
    out: &mut [u8],
) -> (Action, bool) {
    let mut lower = [0u8; MAX_NAME];
    let action = match parse::parse(req, &mut lower, crate::dns::MAX_UDP_PAYLOAD) {
        Parsed::Drop => {
            crate::dns::BAD_PACKETS
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Action::Drop
        }
        Parsed::Fallback => Action::Fallback,
        Parsed::FormErr => {
            // Counted like the fallback's FORMERR; not logged here, so the
            // data path writes no log line per packet.
            crate::dns::BAD_PACKETS
                .unparsable
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            formerr(req, out);
            plan.unmatched
                .count(RecordType::Unknown(0), false, ResponseCode::FormErr);
            Action::Send(HEADER_LEN)
        }
        Parsed::Query(mut q) => {
            let mut verdict = None;
            let reply;
            if let Some(data) = q.cookie {
                let (Some(ip), Ok(received)) = (src, cookie::Received::parse(data)) else {
                    return (Action::Fallback, false);
                };
                let v;
                (reply, v) = cookie::answer(&cookie::secrets(), &received, ip, cookie::now_secs());
                q.cookie_reply = Some(&reply[..]);
                verdict = Some(v);
            }
            let limit = usize::from(q.edns.unwrap_or(512));
            match plan
                .wire
                .answer_from(&q, src, limit, out, unix_ms(), &mut ThreadRandom)
            {
                Outcome::Answered(n) => {
                    if q.ecs.is_some() {
                        crate::answer::sticky::COUNTS
                            .ecs_queries
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(v) = verdict {
                        cookie::COUNTS.count(v);
                    }
                    return (Action::Send(n), verdict == Some(cookie::Verdict::Valid));
                }
                Outcome::Fallback => Action::Fallback,
            }
        }
    };
    (action, false)
}

/// FORMERR, header only, as hickory answers what it cannot decode: the
/// query's ID, opcode, RD and CD, QR set, every count 0. `req` holds at
/// least a header.
pub fn formerr(req: &[u8], out: &mut [u8]) {
    out[..HEADER_LEN].copy_from_slice(&[0; HEADER_LEN]);
    out[..2].copy_from_slice(&req[..2]);
    out[2] = 0x80 | (req[2] & 0x79);
    out[3] = (req[3] & 0x10) | 1;
}

/// Counters of the data path's bounds, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// DNS TCP connections open now.
    pub tcp_connections: AtomicU64,
    /// The TCP connection cap in effect: the configured one, or less when
    /// the descriptor limit leaves less ([`super::tcp::effective_cap`]).
    pub tcp_max_connections: AtomicU64,
    /// Idle TCP connections closed to make room at the cap.
    pub tcp_evicted: AtomicU64,
    /// TCP connections refused at the cap (none idle to close).
    pub tcp_refused: AtomicU64,
    /// Failed accepts (descriptor or memory exhaustion), each followed by
    /// a back-off.
    pub tcp_accept_errors: AtomicU64,
    /// UDP datagrams dropped because [`MAX_IN_FLIGHT`](super::fallback::MAX_IN_FLIGHT) were
    /// already being answered by the hickory handler.
    pub udp_fallback_dropped: AtomicU64,
    /// UDP responses response rate limiting dropped.
    pub rrl_dropped: AtomicU64,
    /// UDP responses response rate limiting sent truncated instead.
    pub rrl_slipped: AtomicU64,
}

impl Counters {
    /// Applies `rrl` to the `len`-byte response in `out` for `client`:
    /// the length to send (0: nothing), counting what was limited.
    pub fn limit(
        &self,
        rrl: &rrl::Rrl,
        client: IpAddr,
        out: &mut [u8],
        len: usize,
        now: u32,
    ) -> usize {
        match rrl.check(client, &out[..len], now) {
            rrl::Verdict::Send => len,
            rrl::Verdict::Slip => {
                self.rrl_slipped.fetch_add(1, Ordering::Relaxed);
                rrl::slip(&mut out[..len])
            }
            rrl::Verdict::Drop => {
                self.rrl_dropped.fetch_add(1, Ordering::Relaxed);
                0
            }
        }
    }
}

/// Where the (single) question of a message ends, if it has one whose name
/// is plain labels.
pub fn question_end(msg: &[u8]) -> Option<usize> {
    if msg.len() < HEADER_LEN || u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let at = message::plain_name_end(msg, HEADER_LEN)?;
    (at + 4 <= msg.len()).then_some(at + 4)
}

/// Whether a name in the question section of `msg` uses a compression
/// pointer (or an obsolete label type). Such a question cannot be echoed as
/// it was sent; it gets FORMERR without the question.
pub fn question_has_pointer(msg: &[u8]) -> bool {
    let Some(count) = msg.get(4..6).map(|c| u16::from_be_bytes([c[0], c[1]])) else {
        return false;
    };
    let mut at = HEADER_LEN;
    for _ in 0..count {
        match message::labels(msg, at).end() {
            End::Root(end) => at = end + 4,
            End::Pointer(_) | End::BadType(_) => return true,
            End::Truncated => return false,
        }
    }
    false
}
