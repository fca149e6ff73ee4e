//! The fast path's worker threads: each owns one `SO_REUSEPORT` socket of a
//! listen address (the kernel spreads datagrams over them by flow), reads
//! up to [`BATCH`] datagrams per `recvmmsg`, answers them from the current
//! plan and sends the answers with one `sendmmsg`.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage, recvmmsg, sendmmsg,
};
use std::io::{IoSlice, IoSliceMut};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::fallback::Fallback;
use super::fast::{Action, Counters, respond_checked};
use super::rrl::{Rrl, now_secs};
use crate::answer::Plan;
use crate::dns::MAX_UDP_PAYLOAD;

/// Datagrams read (and answers sent) per system call.
pub const BATCH: usize = 32;
/// Receive buffer per datagram: larger queries are dropped (hickory reads
/// no more either).
const RECV_BUF: usize = 4096;
/// Send buffer per answer: the largest UDP payload we answer with.
const SEND_BUF: usize = MAX_UDP_PAYLOAD as usize;
/// How long a worker blocks in `recvmmsg` before it looks at the shutdown
/// token: the bound on how long stopping takes.
pub const SHUTDOWN_POLL: Duration = Duration::from_millis(250);
/// Pause after an unexpected socket error, so a persistent one cannot spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// At most one log line per worker per this interval for socket errors.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Starts one worker thread per socket. Each stops within
/// [`SHUTDOWN_POLL`] of `shutdown`.
pub fn spawn(
    sockets: Vec<std::net::UdpSocket>,
    plan: Arc<ArcSwap<Plan>>,
    fallback: Fallback,
    shutdown: CancellationToken,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let (rrl, counters) = fallback.limits();
    let mut threads = Vec::with_capacity(sockets.len());
    for (i, socket) in sockets.into_iter().enumerate() {
        socket.set_nonblocking(false)?;
        socket.set_read_timeout(Some(SHUTDOWN_POLL))?;
        let worker = Worker {
            socket: Arc::new(socket),
            plan: plan.clone(),
            fallback: fallback.clone(),
            rrl: rrl.clone(),
            counters: counters.clone(),
            shutdown: shutdown.clone(),
            last_error_log: None,
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || worker.run())?,
        );
    }
    Ok(threads)
}

struct Worker {
    socket: Arc<std::net::UdpSocket>,
    plan: Arc<ArcSwap<Plan>>,
    fallback: Fallback,
    rrl: Arc<Rrl>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
    last_error_log: Option<Instant>,
}

/// A worker's buffers, allocated once.
struct Buffers {
    rx: Box<[[u8; RECV_BUF]; BATCH]>,
    tx: Box<[[u8; SEND_BUF]; BATCH]>,
    rx_headers: MultiHeaders<SockaddrStorage>,
    tx_headers: MultiHeaders<SockaddrStorage>,
    /// Per received datagram: its length (0: skip) and source.
    received: [(usize, Option<SockaddrStorage>); BATCH],
    /// Per answer: its length and destination.
    lens: [usize; BATCH],
    dsts: [Option<SockaddrStorage>; BATCH],
}

impl Worker {
    fn run(mut self) {
        let mut b = Buffers {
            rx: Box::new([[0; RECV_BUF]; BATCH]),
            tx: Box::new([[0; SEND_BUF]; BATCH]),
            rx_headers: MultiHeaders::preallocate(BATCH, None),
            tx_headers: MultiHeaders::preallocate(BATCH, None),
            received: [(0, None); BATCH],
            lens: [0; BATCH],
            dsts: [None; BATCH],
        };
        while !self.shutdown.is_cancelled() {
            let n = match self.receive(&mut b) {
                Ok(n) => n,
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(error) => {
                    self.log_error(error, "udp receive failed");
                    std::thread::sleep(ERROR_BACKOFF);
                    continue;
                }
            };
            let answers = self.answer(&mut b, n);
            self.send(&mut b, answers);
        }
    }

    /// Blocks for the first datagram (up to [`SHUTDOWN_POLL`]), then takes
    /// whatever else is queued, up to [`BATCH`].
    fn receive(&self, b: &mut Buffers) -> Result<usize, Errno> {
        let mut iov: [[IoSliceMut<'_>; 1]; BATCH] =
            b.rx.each_mut().map(|buf| [IoSliceMut::new(buf)]);
        let msgs = recvmmsg(
            self.socket.as_raw_fd(),
            &mut b.rx_headers,
            iov.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )?;
        let mut n = 0;
        for m in msgs {
            let len = if m.flags.contains(MsgFlags::MSG_TRUNC) {
                0
            } else {
                m.bytes
            };
            b.received[n] = (len, m.address);
            n += 1;
        }
        Ok(n)
    }

    /// Answers the `n` received datagrams into `b.tx`; returns how many
    /// answers to send.
    fn answer(&self, b: &mut Buffers, n: usize) -> usize {
        let plan = self.plan.load();
        let now = now_secs();
        let mut out = 0;
        for i in 0..n {
            let (len, Some(src)) = b.received[i] else {
                continue;
            };
            if len == 0 {
                continue;
            }
            let req = &b.rx[i][..len];
            let Some(client) = socket_addr(&src) else {
                continue;
            };
            if client.port() == 0 {
                // Nothing can be sent back to port 0: a spoofed source.
                crate::dns::BAD_PACKETS
                    .dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            match respond_checked(&plan, req, Some(client.ip()), &mut b.tx[out]) {
                // A valid server cookie proves the source address: no
                // rate limit (RFC 7873 §5.3).
                (Action::Send(l), true) => {
                    b.lens[out] = l;
                    b.dsts[out] = Some(src);
                    out += 1;
                }
                (Action::Send(l), false) => {
                    let l = self
                        .counters
                        .limit(&self.rrl, client.ip(), &mut b.tx[out], l, now);
                    if l > 0 {
                        b.lens[out] = l;
                        b.dsts[out] = Some(src);
                        out += 1;
                    }
                }
                (Action::Fallback, _) => self.fallback.submit(req, client, &self.socket),
                (Action::Drop, _) => {}
            }
        }
        out
    }

    /// Sends the first `n` answers, as many per call as the kernel takes.
    fn send(&mut self, b: &mut Buffers, n: usize) {
        let mut sent = 0;
        // Every round sends at least one datagram or drops one.
        while sent < n {
            let iov: [[IoSlice<'_>; 1]; BATCH] =
                std::array::from_fn(|i| [IoSlice::new(&b.tx[i][..b.lens[i]])]);
            let no_cmsgs: [ControlMessage<'_>; 0] = [];
            let result = sendmmsg(
                self.socket.as_raw_fd(),
                &mut b.tx_headers,
                iov[sent..n].iter(),
                &b.dsts[sent..n],
                no_cmsgs,
                MsgFlags::empty(),
            );
            match result {
                Ok(done) => sent += done.count().max(1),
                Err(Errno::EINTR) => {}
                Err(error) => {
                    // The first datagram failed (say its destination is
                    // unreachable): drop it, send the others.
                    if error != Errno::EAGAIN {
                        self.log_error(error, "udp send failed");
                    }
                    sent += 1;
                }
            }
        }
    }

    fn log_error(&mut self, error: Errno, what: &str) {
        let now = Instant::now();
        if self
            .last_error_log
            .is_none_or(|t| now.duration_since(t) >= ERROR_LOG_INTERVAL)
        {
            self.last_error_log = Some(now);
            let local = self.socket.local_addr().map(|a| a.to_string());
            warn!(%error, local = %local.unwrap_or_default(), "{what} (further errors of this worker are not logged for a minute)");
        }
    }
}

fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
        .filter(|_| a.family().is_some())
}
