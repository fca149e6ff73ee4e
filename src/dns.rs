//! The DNS side: a hickory `RequestHandler` that answers from the current
//! [`Plan`] (and says which server answered, when asked), and binding of the
//! UDP and TCP sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::TXT;
use hickory_server::proto::rr::rdata::opt::{EdnsCode, EdnsOption, NSIDPayload};
use hickory_server::proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use socket2::{Domain, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tracing::{debug, warn};

use crate::answer::{Lookup, Plan};

/// The EDNS version we speak.
const EDNS_VERSION: u8 = 0;
/// Largest UDP payload we advertise and use, whatever the client offers
/// (the DNS flag day 2020 recommendation, avoiding IP fragmentation).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Pending TCP connections the kernel may queue.
const TCP_BACKLOG: i32 = 1024;

/// The CH TXT names that ask a server who it is (the names BIND, NSD and
/// Knot answer): `hostname.bind.` is the traditional one, `id.server.` the
/// one RFC 4892 proposes.
const IDENTITY_NAMES: [&str; 2] = ["id.server.", "hostname.bind."];

/// Answers queries from the plan that is current when the query arrives.
pub struct Handler {
    plan: Arc<ArcSwap<Plan>>,
    identity: Option<Identity>,
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
                // RFC 5001: NSID only to a client that asked for it.
                if let Some(id) = &self.identity
                    && req.option(EdnsCode::NSID).is_some()
                {
                    resp_edns
                        .options_mut()
                        .insert(EdnsOption::NSID(id.nsid.clone()));
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

/// Sockets for one DNS listen address.
pub struct Listener {
    /// Bound UDP socket.
    pub udp: UdpSocket,
    /// Listening TCP socket.
    pub tcp: TcpListener,
}

/// Binds UDP and TCP on `addr`. IPv6 sockets are IPv6-only, so `0.0.0.0:53`
/// and `[::]:53` can both be listed. Port 0 binds UDP first and reuses its
/// port for TCP, so one ephemeral port serves both; if that port is taken
/// for TCP, another ephemeral port is tried.
pub fn bind(addr: SocketAddr) -> std::io::Result<Listener> {
    let mut attempt = 0;
    loop {
        match bind_once(addr) {
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

fn bind_once(addr: SocketAddr) -> std::io::Result<Listener> {
    let udp = socket(addr, Type::DGRAM)?;
    udp.bind(&addr.into())?;
    let port = udp
        .local_addr()?
        .as_socket()
        .map(|a| a.port())
        .unwrap_or(addr.port());
    let mut tcp_addr = addr;
    tcp_addr.set_port(port);
    let tcp = socket(tcp_addr, Type::STREAM)?;
    tcp.set_reuse_address(true)?;
    tcp.bind(&tcp_addr.into())?;
    tcp.listen(TCP_BACKLOG)?;
    Ok(Listener {
        udp: UdpSocket::from_std(udp.into())?,
        tcp: TcpListener::from_std(tcp.into())?,
    })
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
/// Responses hickory may buffer per TCP connection.
pub const TCP_RESPONSE_BUFFER: usize = 32;
