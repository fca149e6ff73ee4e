//! Binding a DNS listen address: UDP sockets (one per fast-path worker,
//! `SO_REUSEPORT`) and one TCP listener on the same port.

use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;

/// Pending TCP connections the kernel may queue.
const TCP_BACKLOG: i32 = 1024;

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
