//! The way out of the fast path: a datagram the templates do not cover is
//! decoded by hickory and answered by the same [`Handler`] TCP uses, in a
//! tokio task; the response goes out through the worker's socket. The
//! TCP server ([`super::tcp`]) answers through [`handle`] too.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::rr::Record;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use nix::sys::socket::{MsgFlags, SockaddrStorage, sendto};
use tracing::debug;

use super::cookie::{OPTION_COOKIE, REPLY_LEN};
use super::fast::{Counters, question_end, question_has_pointer};
use super::message::HEADER_LEN;
use super::rrl::{Rrl, now_secs};
use crate::answer::wire::opt_record;
use crate::dns::{Handler, MAX_UDP_PAYLOAD};
use crate::sync::lock;

/// Fallback requests being answered at once; beyond this, datagrams are
/// dropped (a flood of odd packets must not grow memory without bound).
pub const MAX_IN_FLIGHT: usize = 1024;

/// Hands datagrams to the hickory handler.
#[derive(Clone)]
pub struct Fallback {
    handler: Arc<Handler>,
    rrl: Arc<Rrl>,
    counters: Arc<Counters>,
    runtime: tokio::runtime::Handle,
    in_flight: Arc<AtomicUsize>,
}

impl Fallback {
    /// Answers with `handler`, in tasks on `runtime`.
    pub fn new(
        handler: Arc<Handler>,
        rrl: Arc<Rrl>,
        counters: Arc<Counters>,
        runtime: tokio::runtime::Handle,
    ) -> Fallback {
        Fallback {
            handler,
            rrl,
            counters,
            runtime,
            in_flight: Arc::default(),
        }
    }

    /// The rate limiter and counters UDP answers go through.
    pub fn limits(&self) -> (Arc<Rrl>, Arc<Counters>) {
        (self.rrl.clone(), self.counters.clone())
    }

    /// Answers `req` from `src` in a task; the response leaves via `socket`.
    pub fn submit(&self, req: &[u8], src: SocketAddr, socket: &Arc<std::net::UdpSocket>) {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.counters
                .udp_fallback_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let this = self.clone();
        let raw = req.to_vec();
        // A valid server cookie proves the source address: no rate limit
        // (RFC 7873 §5.3), as on the fast path.
        let exempt = match super::request_cookie(&raw) {
            Ok(Some(c)) => {
                super::cookie::answer(
                    &super::cookie::secrets(),
                    &c,
                    src.ip(),
                    super::cookie::now_secs(),
                )
                .1 == super::cookie::Verdict::Valid
            }
            _ => false,
        };
        let socket = socket.clone();
        self.runtime.spawn(async move {
            if let Some(mut bytes) = handle(&this.handler, raw, src, Protocol::Udp).await {
                let len = bytes.len();
                let len = if exempt {
                    len
                } else {
                    this.counters
                        .limit(&this.rrl, src.ip(), &mut bytes, len, now_secs())
                };
                if len > 0 {
                    send(&socket, &bytes[..len], src);
                }
            }
            this.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// What hickory's server does with one request: decode, ignore responses
/// (QR=1: never answered, so we cannot be used as a reflector), FORMERR
/// what does not decode or has a compression pointer in a question name
/// (header only: hickory would echo the raw bytes), else the handler. The response's
/// wire bytes, truncated to the client's UDP size on UDP.
pub async fn handle(
    handler: &Handler,
    raw: Vec<u8>,
    src: SocketAddr,
    protocol: Protocol,
) -> Option<Vec<u8>> {
    let header: Option<[u8; HEADER_LEN]> = raw.get(..HEADER_LEN).and_then(|h| h.try_into().ok());
    let Some(header) = header.filter(|h| h[2] & 0x80 == 0) else {
        // Shorter than a header, or a response: never answered.
        crate::dns::BAD_PACKETS
            .dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return None;
    };
    if question_has_pointer(&raw) {
        crate::dns::note_unparsable(src, "compression pointer in a question name");
        let mut out = vec![0u8; HEADER_LEN];
        super::fast::formerr(&header, &mut out);
        return Some(out);
    }
    let request = match Request::from_bytes(raw, src, protocol) {
        Ok(r) => r,
        Err(error) => {
            crate::dns::note_unparsable(src, error);
            let mut out = vec![0u8; HEADER_LEN];
            super::fast::formerr(&header, &mut out);
            return Some(out);
        }
    };
    let max_size = match (protocol, &request.edns) {
        (Protocol::Udp, Some(e)) => e.max_payload().clamp(512, MAX_UDP_PAYLOAD),
        (Protocol::Udp, None) => 512,
        _ => u16::MAX,
    };
    let udp_edns = protocol == Protocol::Udp && request.edns.is_some();
    // The client cookie a truncated answer answers, so that the retry over
    // TCP has a server cookie (RFC 7873 §5.2); the handler counts it.
    let cookie = match super::request_cookie(request.as_slice()) {
        Ok(Some(c)) if udp_edns => Some((c, src.ip())),
        _ => None,
    };
    let capture = Capture {
        out: Arc::default(),
        max_size,
        edns: udp_edns.then_some(max_size),
        dnssec_ok: request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
        cookie,
    };
    handler
        .handle_request::<_, TokioTime>(&request, capture.clone())
        .await;
    lock(&capture.out).take()
}

fn send(socket: &std::net::UdpSocket, bytes: &[u8], dst: SocketAddr) {
    // Never block the runtime: a full send buffer drops the response,
    // as a full network would.
    if let Err(error) = sendto(
        socket.as_raw_fd(),
        bytes,
        &SockaddrStorage::from(dst),
        MsgFlags::MSG_DONTWAIT,
    ) {
        debug!(%dst, %error, "fallback response not sent");
    }
}

/// Encodes a hickory response like hickory's own transports (truncated to
/// `max_size`) and keeps the bytes.
#[derive(Clone)]
struct Capture {
    out: Arc<Mutex<Option<Vec<u8>>>>,
    max_size: u16,
    /// The UDP payload size to advertise in a truncated answer's OPT.
    edns: Option<u16>,
    /// The query's DO bit, copied into a truncated answer's OPT.
    dnssec_ok: bool,
    /// The query's cookie and client address, for the COOKIE option of a
    /// truncated answer's OPT.
    cookie: Option<(super::cookie::Received, std::net::IpAddr)>,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (mut bytes, info) = super::encode(response, self.max_size)?;
        if bytes.get(2).is_some_and(|b| b & 0x02 != 0) {
            let cookie = self.cookie.map(|(c, ip)| {
                super::cookie::answer(&super::cookie::secrets(), &c, ip, super::cookie::now_secs())
                    .0
            });
            truncated(&mut bytes, self.edns, self.dnssec_ok, cookie.as_ref());
        }
        *lock(&self.out) = Some(bytes);
        Ok(info)
    }
}

/// Rewrites a response hickory truncated into a well-formed truncated
/// answer: the header (TC set) and the question, plus an OPT record when
/// the query had EDNS, with `cookie` in it if the query had a client
/// cookie. hickory's encoder may leave a partly written record after the
/// question, or records that fit beside a truncated section.
fn truncated(
    bytes: &mut Vec<u8>,
    edns: Option<u16>,
    dnssec_ok: bool,
    cookie: Option<&[u8; REPLY_LEN]>,
) {
    let end = question_end(bytes).unwrap_or(HEADER_LEN.min(bytes.len()));
    bytes.truncate(end);
    if bytes.len() < HEADER_LEN {
        return;
    }
    bytes[6..12].fill(0);
    if end == HEADER_LEN {
        bytes[4..6].fill(0);
    }
    if let Some(payload) = edns {
        let mut opt = opt_record(payload, dnssec_ok);
        if let Some(c) = cookie {
            // RDLENGTH: one option, code and length then the data.
            opt[9..].copy_from_slice(&((4 + REPLY_LEN) as u16).to_be_bytes());
            bytes.extend_from_slice(&opt);
            bytes.extend_from_slice(&OPTION_COOKIE.to_be_bytes());
            bytes.extend_from_slice(&(REPLY_LEN as u16).to_be_bytes());
            bytes.extend_from_slice(c);
        } else {
            bytes.extend_from_slice(&opt);
        }
        bytes[11] = 1;
    }
}
