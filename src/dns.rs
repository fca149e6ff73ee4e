//! The DNS side: a hickory `RequestHandler` that answers from the current
//! [`Plan`], and binding of the UDP and TCP sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::{DNSClass, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::answer::{Lookup, Plan};

/// The EDNS version we speak.
const EDNS_VERSION: u8 = 0;
/// Largest UDP payload we advertise and use, whatever the client offers
/// (the DNS flag day 2020 recommendation, avoiding IP fragmentation).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Pending TCP connections the kernel may queue.
const TCP_BACKLOG: i32 = 1024;

/// Answers queries from the plan that is current when the query arrives.
pub struct Handler {
    plan: Arc<ArcSwap<Plan>>,
}

impl Handler {
    /// A handler reading from `plan`, which the daemon swaps on every change.
    pub fn new(plan: Arc<ArcSwap<Plan>>) -> Handler {
        Handler { plan }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let plan = self.plan.load();
        let tcp = request.protocol() != Protocol::Udp;

        let mut resp_edns = Edns::new();
        let edns = match &request.edns {
            Some(req) => {
                let payload = req.max_payload().clamp(512, MAX_UDP_PAYLOAD);
                resp_edns.set_max_payload(payload);
                resp_edns.set_version(EDNS_VERSION);
                if req.version() > EDNS_VERSION {
                    resp_edns.set_rcode_high(ResponseCode::BADVERS.high());
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
                Some(&resp_edns)
            }
            None => None,
        };

        if request.metadata.message_type != MessageType::Query {
            // hickory drops responses before they get here; be safe anyway.
            return send_error(
                request,
                ResponseCode::FormErr,
                edns,
                &plan,
                tcp,
                response_handle,
            )
            .await;
        }
        if request.metadata.op_code != OpCode::Query {
            return send_error(
                request,
                ResponseCode::NotImp,
                edns,
                &plan,
                tcp,
                response_handle,
            )
            .await;
        }
        let info = match request.request_info() {
            Ok(info) => info,
            Err(_) => {
                return send_error(
                    request,
                    ResponseCode::FormErr,
                    edns,
                    &plan,
                    tcp,
                    response_handle,
                )
                .await;
            }
        };
        let qname = info.query.name();
        let qtype = info.query.query_type();
        debug!(%qname, %qtype, src = %request.src(), "query");

        // No zone transfers. Our zones are class IN: a question in another
        // class (CH, HS, ...) is outside them; QCLASS ANY (*) is answered from IN.
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR)
            || !matches!(info.query.query_class(), DNSClass::IN | DNSClass::ANY)
        {
            return send_error(
                request,
                ResponseCode::Refused,
                edns,
                &plan,
                tcp,
                response_handle,
            )
            .await;
        }

        let (answer, counters) = match plan.lookup(qname, qtype) {
            Lookup::Refused => {
                return send_error(
                    request,
                    ResponseCode::Refused,
                    edns,
                    &plan,
                    tcp,
                    response_handle,
                )
                .await;
            }
            Lookup::Zone(a, c) => (a, c),
        };
        counters.count(qtype, tcp, answer.rcode);

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
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                warn!(%error, "failed to send response");
                servfail_info(request)
            }
        }
    }
}

async fn send_error<R: ResponseHandler>(
    request: &Request,
    code: ResponseCode,
    edns: Option<&Edns>,
    plan: &Plan,
    tcp: bool,
    mut response_handle: R,
) -> ResponseInfo {
    let qtype = request
        .queries
        .queries()
        .first()
        .map_or(RecordType::Unknown(0), |q| q.query_type());
    plan.unmatched.count(qtype, tcp, code);
    let response =
        MessageResponseBuilder::new(&request.queries, edns).error_msg(&request.metadata, code);
    match response_handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            warn!(%error, "failed to send error response");
            servfail_info(request)
        }
    }
}

fn servfail_info(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// Sockets for one DNS listen address.
pub struct Listener {
    /// Bound UDP sockets, all on the same port (`SO_REUSEPORT`): one per
    /// fast-path worker. Blocking; hickory's path takes the first one.
    pub udp: Vec<std::net::UdpSocket>,
    /// Listening TCP socket.
    pub tcp: TcpListener,
    /// The receive buffer the kernel granted each UDP socket (as
    /// `SO_RCVBUF` reports it: twice the usable payload on Linux).
    pub rcvbuf: usize,
}

/// Binds `udp_sockets` UDP sockets (at least one) and one TCP listener on
/// `addr`, asking for `rcvbuf` bytes of UDP receive buffer. IPv6 sockets are
/// IPv6-only, so `0.0.0.0:53` and `[::]:53` can both be listed. Port 0 binds
/// the first UDP socket, then the others and TCP on the port it got, so one
/// ephemeral port serves both; if that port is taken for TCP, another
/// ephemeral port is tried.
pub fn bind(addr: SocketAddr, udp_sockets: usize, rcvbuf: usize) -> std::io::Result<Listener> {
    let mut attempt = 0;
    loop {
        match bind_once(addr, udp_sockets.max(1), rcvbuf) {
            Err(e)
                if addr.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < EPHEMERAL_BIND_ATTEMPTS =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Tries for a port free for both UDP and TCP when binding port 0.
const EPHEMERAL_BIND_ATTEMPTS: u32 = 16;

fn bind_once(addr: SocketAddr, udp_sockets: usize, rcvbuf: usize) -> std::io::Result<Listener> {
    let mut bound = addr;
    let mut udp = Vec::with_capacity(udp_sockets);
    let mut granted = 0;
    for _ in 0..udp_sockets {
        let s = socket(bound, Type::DGRAM)?;
        s.set_nonblocking(false)?;
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::ReusePort, &true)?;
        granted = set_rcvbuf(&s, rcvbuf)?;
        s.bind(&bound.into())?;
        if let Some(a) = s.local_addr()?.as_socket() {
            bound.set_port(a.port());
        }
        udp.push(std::net::UdpSocket::from(s));
    }
    let tcp = socket(bound, Type::STREAM)?;
    tcp.set_reuse_address(true)?;
    tcp.bind(&bound.into())?;
    tcp.listen(TCP_BACKLOG)?;
    Ok(Listener {
        udp,
        tcp: TcpListener::from_std(tcp.into())?,
        rcvbuf: granted,
    })
}

/// Asks for `want` bytes of receive buffer: beyond `net.core.rmem_max`
/// when the process may (`SO_RCVBUFFORCE`, CAP_NET_ADMIN), else up to it.
/// Returns what the kernel granted.
fn set_rcvbuf(s: &Socket, want: usize) -> std::io::Result<usize> {
    if nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::RcvBufForce, &want).is_err() {
        s.set_recv_buffer_size(want)?;
    }
    s.recv_buffer_size()
}

fn socket(addr: SocketAddr, ty: Type) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, None)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Idle time after which a TCP connection is closed.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
