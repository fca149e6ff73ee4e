//! The DNS data path, one room: binding the UDP and TCP sockets, the UDP
//! fast path that answers from precomputed wire templates ([`fast`], on
//! [`udp`] worker threads, with [`parse`] and response rate limiting in
//! [`rrl`]), the bounded TCP server ([`tcp`]), and for whatever the fast
//! path does not cover, a hickory `RequestHandler` (here) reached through
//! [`fallback`]. The handler answers from the current [`Plan`] (and says
//! which server answered, when asked); it also runs its own UDP receive
//! loop when the fast path is off.
//!
//! Binding ([`bind`], [`Listener`]) is in `socket.rs`.

pub mod cookie;
pub mod fallback;
pub mod fast;
pub mod message;
pub mod parse;
pub mod rrl;
mod socket;
pub mod tcp;
pub mod udp;

pub use socket::{Listener, bind};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_server::net::NetError;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::TXT;
use hickory_server::proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption, NSIDPayload};
use hickory_server::proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::answer::sticky::{COUNTS as STICKY_COUNTS, Client, Ecs};
use crate::answer::{Lookup, Plan, ThreadRandom};
use crate::clock::unix_ms;

/// The EDNS version we speak.
const EDNS_VERSION: u8 = 0;
/// Largest UDP payload we advertise and use, whatever the client offers
/// (the DNS flag day 2020 recommendation, avoiding IP fragmentation).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// The CH TXT names that ask a server who it is (the names BIND, NSD and
/// Knot answer): `hostname.bind.` is the traditional one, `id.server.` the
/// one RFC 4892 proposes.
const IDENTITY_NAMES: [&str; 2] = ["id.server.", "hostname.bind."];

/// Answers queries from the plan that is current when the query arrives.
/// Cloned for every listener; clones share everything.
#[derive(Clone)]
pub struct Handler {
    plan: Arc<ArcSwap<Plan>>,
    identity: Option<Arc<Identity>>,
}

/// The server's identity in the two shapes it is answered in.
struct Identity {
    /// The NSID option payload (RFC 5001).
    nsid: NSIDPayload,
    /// The TXT data of the CH TXT answer.
    txt: TXT,
    /// [`IDENTITY_NAMES`], parsed once.
    names: Vec<LowerName>,
}

impl Handler {
    /// A handler reading from `plan`, which the daemon swaps on every change.
    pub fn new(plan: Arc<ArcSwap<Plan>>) -> Handler {
        Handler {
            plan,
            identity: None,
        }
    }

    /// Identifies the server as `server_id` in NSID and CH TXT answers (the
    /// config's `server_id`); empty identifies nothing.
    pub fn with_server_id(mut self, server_id: &str) -> Handler {
        self.identity = if server_id.is_empty() {
            None
        } else {
            NSIDPayload::new(server_id.as_bytes())
                .inspect_err(|error| warn!(%error, "server_id not usable as NSID; not identifying"))
                .ok()
                .map(|nsid| Identity {
                    nsid,
                    txt: TXT::new(vec![server_id.to_string()]),
                    names: IDENTITY_NAMES
                        .iter()
                        .filter_map(|n| Name::from_ascii(n).ok())
                        .map(LowerName::from)
                        .collect(),
                })
                .map(Arc::new)
        };
        self
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let plan = self.plan.load();
        let tcp = request.protocol() != Protocol::Udp;

        let mut resp_edns = Edns::new();
        // The client subnet and the cookie, read from the wire by the fast
        // path's readers so both paths accept the same options; a malformed
        // one is FORMERR (RFC 7871 §7.1.1, RFC 7873 §5.2.2).
        let options = request.edns.as_ref().map(|_| {
            let msg = request.as_slice();
            Ok::<_, ()>((
                client_subnet(msg)?,
                request_cookie(msg).map_err(|_| {
                    cookie::COUNTS.malformed.fetch_add(1, Ordering::Relaxed);
                })?,
            ))
        });
        let (ecs, received_cookie) = match options {
            Some(Err(())) => {
                let mut e = Edns::new();
                e.set_max_payload(MAX_UDP_PAYLOAD);
                return send_error(
                    request,
                    ResponseCode::FormErr,
                    Some(&e),
                    &plan,
                    tcp,
                    response_handle,
                )
                .await;
            }
            Some(Ok(found)) => found,
            None => (None, None),
        };
        let edns = match &request.edns {
            Some(req) => {
                // hickory drops options it cannot parse, logging each time;
                // we count them and log at most once per interval.
                if req.options().as_ref().is_empty() && opt_options_malformed(request.as_slice()) {
                    BAD_PACKETS.edns_options.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = PARSE_LOG.allow(uptime_ms()) {
                        warn!(src = %request.src(), suppressed, "malformed EDNS options ignored");
                    }
                }
                let payload = req.max_payload().clamp(512, MAX_UDP_PAYLOAD);
                resp_edns.set_max_payload(payload);
                resp_edns.set_version(EDNS_VERSION);
                // RFC 3225: the DO bit is copied into the response.
                resp_edns.set_dnssec_ok(req.flags().dnssec_ok);
                // RFC 7873 §5.2: a server cookie for every client cookie,
                // in every response, BADVERS included.
                let cookie_reply = received_cookie.as_ref().map(|received| {
                    let (reply, verdict) = cookie::answer(
                        &cookie::secrets(),
                        received,
                        request.src().ip(),
                        cookie::now_secs(),
                    );
                    cookie::COUNTS.count(verdict);
                    EdnsOption::Unknown(cookie::OPTION_COOKIE, reply.to_vec())
                });
                if req.version() > EDNS_VERSION {
                    resp_edns.set_rcode_high(ResponseCode::BADVERS.high());
                    if let Some(c) = cookie_reply {
                        resp_edns.options_mut().insert(c);
                    }
                    return send_error(
                        request,
                        ResponseCode::BADVERS,
                        Some(&resp_edns),
                        &plan,
                        tcp,
                        response_handle,
                    )
                    .await;
                }
                // RFC 5001: NSID only to a client that asked for it.
                if let Some(id) = &self.identity
                    && req.option(EdnsCode::NSID).is_some()
                {
                    resp_edns
                        .options_mut()
                        .insert(EdnsOption::NSID(id.nsid.clone()));
                }
                if let Some(e) = ecs {
                    // Scope 0 until the lookup says what the answer
                    // depended on.
                    resp_edns
                        .options_mut()
                        .insert(EdnsOption::Subnet(ClientSubnet::new(e.addr, e.source, 0)));
                }
                // After NSID and ECS: the order the fast path writes.
                if let Some(c) = cookie_reply {
                    resp_edns.options_mut().insert(c);
                }
                Some(&resp_edns)
            }
            None => None,
        };

        let info = match admit(request) {
            Ok(info) => info,
            Err(code) => {
                return send_error(request, code, edns, &plan, tcp, response_handle).await;
            }
        };
        let qname = info.query.name();
        let qtype = info.query.query_type();
        debug!(%qname, %qtype, src = %request.src(), "query");

        if info.query.query_class() == DNSClass::CH
            && let Some(id) = &self.identity
            && id.names.contains(qname)
        {
            plan.unmatched.count(qtype, tcp, ResponseCode::NoError);
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.authoritative = true;
            // TXT (or ANY) gets the identity; another type is NODATA.
            let mut txt = Record::from_rdata(Name::from(qname), 0, RData::TXT(id.txt.clone()));
            txt.dns_class = DNSClass::CH;
            let answer = matches!(qtype, RecordType::TXT | RecordType::ANY).then_some(&txt);
            let response = MessageResponseBuilder::new(&request.queries, edns).build(
                metadata,
                answer,
                [],
                [],
                [],
            );
            return send(response_handle, response, request).await;
        }

        // No zone transfers. Our zones are class IN: a question in another
        // class (CH, HS, ...) is outside them; QCLASS ANY (*) is answered from IN.
        let in_zones = !matches!(qtype, RecordType::AXFR | RecordType::IXFR)
            && matches!(info.query.query_class(), DNSClass::IN | DNSClass::ANY);
        let client = Client {
            addr: Some(request.src().ip()),
            ecs,
        };
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let found = match in_zones.then(|| {
            plan.lookup_from(
                qname,
                qtype,
                unix_ms(),
                &mut ThreadRandom,
                &client,
                dnssec_ok,
            )
        }) {
            Some(Lookup::Zone(a, c)) => Some((a, c)),
            Some(Lookup::Refused) | None => None,
        };
        let Some((answer, counters)) = found else {
            return send_error(
                request,
                ResponseCode::Refused,
                edns,
                &plan,
                tcp,
                response_handle,
            )
            .await;
        };
        counters.count(qtype, tcp, answer.rcode);
        if ecs.is_some() {
            STICKY_COUNTS.ecs_queries.fetch_add(1, Ordering::Relaxed);
        }
        let scoped;
        let edns = match ecs {
            Some(e) if answer.scope > 0 => {
                let mut with_scope = resp_edns.clone();
                // In place, so the options keep the fast path's order.
                for (code, option) in with_scope.options_mut().options.iter_mut() {
                    if *code == EdnsCode::Subnet {
                        *option =
                            EdnsOption::Subnet(ClientSubnet::new(e.addr, e.source, answer.scope));
                    }
                }
                scoped = with_scope;
                Some(&scoped)
            }
            _ => edns,
        };

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = answer.authoritative;
        metadata.recursion_available = false;
        metadata.response_code = answer.rcode;
        let builder = MessageResponseBuilder::new(&request.queries, edns);
        let response = builder.build(
            metadata,
            answer.answers.iter().copied(),
            answer.authority.iter().copied(),
            answer.soa,
            answer.additionals.iter().copied(),
        );
        send(response_handle, response, request).await
    }
}

/// Sends `response`; a failure is logged and reported as SERVFAIL.
async fn send<'a, R: ResponseHandler>(
    mut response_handle: R,
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    match response_handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            warn!(%error, "failed to send response");
            servfail_info(request)
        }
    }
}

/// The request's question, or the error code it gets before any lookup:
/// FORMERR for a response (hickory drops those before they get here; be
/// safe anyway) or an unparsable question, NOTIMP for another opcode.
fn admit(request: &Request) -> Result<hickory_server::server::RequestInfo<'_>, ResponseCode> {
    if request.metadata.message_type != MessageType::Query {
        return Err(ResponseCode::FormErr);
    }
    if request.metadata.op_code != OpCode::Query {
        return Err(ResponseCode::NotImp);
    }
    request.request_info().map_err(|_| ResponseCode::FormErr)
}

async fn send_error<R: ResponseHandler>(
    request: &Request,
    code: ResponseCode,
    edns: Option<&Edns>,
    plan: &Plan,
    tcp: bool,
    response_handle: R,
) -> ResponseInfo {
    let qtype = request
        .queries
        .queries()
        .first()
        .map_or(RecordType::Unknown(0), |q| q.query_type());
    plan.unmatched.count(qtype, tcp, code);
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    if request.metadata.op_code != OpCode::Query {
        // RD and CD are QUERY flags: a reply to another opcode (NOTIMP)
        // echoes none of them (ISC genreport's `opcodeflg` probe). AA, TC,
        // RA and AD are never set on an error reply.
        metadata.recursion_desired = false;
        metadata.checking_disabled = false;
    }
    let response = MessageResponseBuilder::new(&request.queries, edns).build_no_records(metadata);
    send(response_handle, response, request).await
}

fn servfail_info(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// Receive buffer: the largest UDP payload there is.
const MAX_DATAGRAM: usize = 65_535;
/// At most one log line about unparsable packets per this interval, so a
/// spoofed source cannot flood the log; the next line says how many were
/// left out.
pub const PARSE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Packets the DNS side dropped or could not fully parse, since start. A
/// process-wide tally (like the log) read by `/metrics`.
pub struct BadPackets {
    /// Datagrams with QR set (responses) or shorter than a header: dropped
    /// unanswered.
    pub dropped: AtomicU64,
    /// Queries that did not parse: answered FORMERR.
    pub unparsable: AtomicU64,
    /// Queries whose EDNS options did not parse: answered without them.
    pub edns_options: AtomicU64,
}

/// The one tally of [`BadPackets`].
pub static BAD_PACKETS: BadPackets = BadPackets {
    dropped: AtomicU64::new(0),
    unparsable: AtomicU64::new(0),
    edns_options: AtomicU64::new(0),
};

/// Rate limit of the parse-problem log lines.
static PARSE_LOG: LogLimiter = LogLimiter::new(PARSE_LOG_INTERVAL);

/// Milliseconds since the first call: a monotonic clock for [`LogLimiter`].
fn uptime_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let ms = START.get_or_init(Instant::now).elapsed().as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// Lets one log line through per interval and counts the ones it holds back.
pub struct LogLimiter {
    interval_ms: u64,
    /// Time (ms) from which the next line may be written.
    next_ms: AtomicU64,
    /// Lines held back since the last one written.
    suppressed: AtomicU64,
}

impl LogLimiter {
    /// A limiter letting one line through per `interval`, the first at once.
    pub const fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            interval_ms: interval.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// At `now_ms`: `Some(lines held back since the last one)` if this line
    /// may be written, else `None` (and it is counted as held back).
    pub fn allow(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// True if the message's OPT record holds options that run past its data,
/// which hickory silently drops (with a log line per packet). Called only
/// on a message hickory parsed, with an OPT record and no options.
fn opt_options_malformed(msg: &[u8]) -> bool {
    let Some(mut rest) = walk_to_opt(msg) else {
        return false;
    };
    while !rest.is_empty() {
        let next = rest
            .get(2..4)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
            .and_then(|len| rest.get(4 + len..));
        match next {
            Some(r) => rest = r,
            None => return true,
        }
    }
    false
}

/// The query's EDNS Client Subnet option: `Ok(None)` without one,
/// `Err(())` when it is malformed or repeated.
fn client_subnet(msg: &[u8]) -> Result<Option<Ecs>, ()> {
    edns_option(msg, u16::from(EdnsCode::Subnet))?
        .map(|data| Ecs::parse(data).map_err(|_| ()))
        .transpose()
}

/// The query's COOKIE option: `Ok(None)` without one, `Err` when it is
/// malformed or repeated.
pub(crate) fn request_cookie(msg: &[u8]) -> Result<Option<cookie::Received>, cookie::Malformed> {
    edns_option(msg, cookie::OPTION_COOKIE)
        .map_err(|()| cookie::Malformed)?
        .map(cookie::Received::parse)
        .transpose()
}

/// The data of the query's EDNS option `code`: `Ok(None)` without one,
/// `Err(())` when it is repeated.
fn edns_option(msg: &[u8], code: u16) -> Result<Option<&[u8]>, ()> {
    let Some(mut rest) = walk_to_opt(msg) else {
        return Ok(None);
    };
    let mut found = None;
    while rest.len() >= 4 {
        let c = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let Some(data) = rest.get(4..4 + len) else {
            // Options running past the record: counted and ignored above.
            return Ok(found);
        };
        if c == code {
            if found.is_some() {
                return Err(());
            }
            found = Some(data);
        }
        rest = &rest[4 + len..];
    }
    Ok(found)
}

/// The RDATA of the first OPT record in the additional section.
fn walk_to_opt(msg: &[u8]) -> Option<&[u8]> {
    let (start, end) = message::opt_span(msg)?;
    // Root owner (or a pointer), type, class, TTL, RDLENGTH, then RDATA.
    let at = message::name_end(msg, start)? + 10;
    msg.get(at..end)
}

/// Serves DNS over UDP on `socket` until `shutdown` is cancelled.
///
/// This replaces hickory's UDP loop, which answers FORMERR to any datagram
/// it cannot parse, even one with QR set: a response (or garbage claiming to
/// be one) must never be answered, or two servers bounce errors between
/// them and a spoofed source gets its traffic reflected. Datagrams are
/// handled one at a time, so a flood cannot pile up tasks. Returns an error
/// only when the socket fails for good.
pub async fn serve_udp(
    socket: UdpSocket,
    handler: Handler,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let (len, src) = match received {
            Ok(r) => r,
            Err(e) if transient(&e) => continue,
            Err(e) => return Err(e),
        };
        if src.port() == 0 {
            // Nothing can be sent back to port 0.
            BAD_PACKETS.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // The same way from datagram to reply as the fast path's fallback:
        // responses and runts dropped, FORMERR counted, truncation cleaned.
        let Some(reply) = fallback::handle(&handler, buf[..len].to_vec(), src, Protocol::Udp).await
        else {
            continue;
        };
        match socket.send_to(&reply, src).await {
            Ok(_) => {}
            Err(e) if transient(&e) => debug!(%src, error = %e, "udp reply not sent"),
            Err(e) => return Err(e),
        }
    }
}

/// Errors after which a UDP socket still works (a previous send's ICMP error).
fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        WouldBlock | Interrupted | ConnectionRefused | ConnectionReset | TimedOut
    )
}

/// Counts a query that did not parse (answered FORMERR) and logs it, at
/// most once per [`PARSE_LOG_INTERVAL`]: a spoofed source cannot flood the log.
pub fn note_unparsable(src: SocketAddr, error: impl std::fmt::Display) {
    BAD_PACKETS.unparsable.fetch_add(1, Ordering::Relaxed);
    if let Some(suppressed) = PARSE_LOG.allow(uptime_ms()) {
        warn!(%src, %error, suppressed, "unparsable query answered FORMERR");
    }
}

/// Encodes a response in at most `max_size` bytes: what does not fit is
/// left out and TC set by the encoder.
pub(crate) fn encode<'a, A, N, S, D>(
    response: MessageResponse<'_, 'a, A, N, S, D>,
    max_size: u16,
) -> Result<(Vec<u8>, ResponseInfo), NetError>
where
    A: Iterator<Item = &'a Record> + Send + 'a,
    N: Iterator<Item = &'a Record> + Send + 'a,
    S: Iterator<Item = &'a Record> + Send + 'a,
    D: Iterator<Item = &'a Record> + Send + 'a,
{
    let mut buf = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_max_size(max_size);
    let info = response.destructive_emit(&mut encoder)?;
    Ok((buf, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limiter_lets_one_line_through_per_interval_and_counts_the_rest() {
        let l = LogLimiter::new(Duration::from_secs(10));
        assert_eq!(l.allow(5), Some(0), "the first line at once");
        for t in [6, 1000, 10_004] {
            assert_eq!(l.allow(t), None, "at {t}");
        }
        assert_eq!(l.allow(10_005), Some(3), "then one, with the count");
        assert_eq!(l.allow(10_006), None);
        assert_eq!(l.allow(60_000), Some(1));
        assert_eq!(l.allow(70_000), Some(0));
    }

    /// A query for `a.` with an OPT record whose RDATA is `rdata`.
    fn with_opt(rdata: &[u8]) -> Vec<u8> {
        let mut m = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
        m.extend([1, b'a', 0, 0, 1, 0, 1]);
        m.extend([0, 0, 41, 0x10, 0, 0, 0, 0, 0]);
        m.extend((rdata.len() as u16).to_be_bytes());
        m.extend(rdata);
        m
    }

    #[test]
    fn malformed_opt_options_are_recognised() {
        // NSID (3) with its 3 bytes; an option with no data; none at all.
        assert!(!opt_options_malformed(&with_opt(&[0, 3, 0, 3, 1, 2, 3])));
        assert!(!opt_options_malformed(&with_opt(&[0, 10, 0, 0])));
        assert!(!opt_options_malformed(&with_opt(&[])));
        // Claims 8 bytes, has 4; a lone code without a length.
        assert!(opt_options_malformed(&with_opt(&[0, 10, 0, 8, 1, 2, 3, 4])));
        assert!(opt_options_malformed(&with_opt(&[0, 10])));
        // No OPT record at all.
        assert!(!opt_options_malformed(&with_opt(&[])[..18]));
    }
}
