//! The way out of the fast path: a datagram the templates do not cover is
//! decoded by hickory and answered by the same [`Handler`] TCP uses, in a
//! tokio task; the response goes out through the worker's socket.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use nix::sys::socket::{MsgFlags, SockaddrStorage, sendto};
use tracing::debug;

use crate::answer::wire::HEADER_LEN;
use crate::dns::{Handler, MAX_UDP_PAYLOAD};

/// Fallback requests being answered at once; beyond this, datagrams are
/// dropped (a flood of odd packets must not grow memory without bound).
pub const MAX_IN_FLIGHT: usize = 1024;

/// Hands datagrams to the hickory handler.
#[derive(Clone)]
pub struct Fallback {
    handler: Arc<Handler>,
    runtime: tokio::runtime::Handle,
    in_flight: Arc<AtomicUsize>,
}

impl Fallback {
    /// Answers with `handler`, in tasks on `runtime`.
    pub fn new(handler: Arc<Handler>, runtime: tokio::runtime::Handle) -> Fallback {
        Fallback {
            handler,
            runtime,
            in_flight: Arc::default(),
        }
    }

    /// Answers `req` from `src` in a task; the response leaves via `socket`.
    pub fn submit(&self, req: &[u8], src: SocketAddr, socket: &Arc<std::net::UdpSocket>) {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            debug!(%src, "fallback queue full, datagram dropped");
            return;
        }
        let this = self.clone();
        let raw = req.to_vec();
        let socket = socket.clone();
        self.runtime.spawn(async move {
            answer(&this.handler, raw, src, socket).await;
            this.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// What hickory's server does with one UDP datagram: decode, drop
/// responses, FORMERR what does not decode (header only), else the handler.
async fn answer(
    handler: &Handler,
    raw: Vec<u8>,
    src: SocketAddr,
    socket: Arc<std::net::UdpSocket>,
) {
    let Some(header) = raw.get(..HEADER_LEN).map(|h| {
        let mut a = [0u8; HEADER_LEN];
        a.copy_from_slice(h);
        a
    }) else {
        return;
    };
    if header[2] & 0x80 != 0 {
        // A response: never answered, so we cannot be used as a reflector.
        return;
    }
    let request = match Request::from_bytes(raw, src, Protocol::Udp) {
        Ok(r) => r,
        Err(error) => {
            debug!(%src, %error, "undecodable request");
            let mut out = [0u8; HEADER_LEN];
            super::formerr(&header, &mut out);
            send(&socket, &out, src);
            return;
        }
    };
    let max_size = request
        .edns
        .as_ref()
        .map_or(512, |e| e.max_payload().clamp(512, MAX_UDP_PAYLOAD));
    let reply = UdpReply {
        socket,
        dst: src,
        max_size,
    };
    handler
        .handle_request::<_, TokioTime>(&request, reply)
        .await;
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

/// Encodes a hickory response like hickory's UDP path (truncated to the
/// client's size) and sends it on the worker's socket.
#[derive(Clone)]
struct UdpReply {
    socket: Arc<std::net::UdpSocket>,
    dst: SocketAddr,
    max_size: u16,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpReply {
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
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(self.max_size);
        let info = response.destructive_emit(&mut encoder)?;
        send(&self.socket, &bytes, self.dst);
        Ok(info)
    }
}
