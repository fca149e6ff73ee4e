//! DNS over TCP with bounds: at most `max_connections` at once (at the cap
//! the longest-idle connection is closed to make room), an idle timeout,
//! and an accept loop that backs off instead of spinning when the process
//! runs out of descriptors. Requests are answered by the hickory
//! [`Handler`] through [`super::fallback::handle`], one after another per
//! connection, as hickory's own TCP server does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_server::net::xfer::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::fallback::handle;
use super::fast::Counters;
use crate::dns::Handler;
use crate::sync::lock;

/// Pause after an accept error such as EMFILE before accepting again: the
/// listen queue keeps the connection, and no core spins on it.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Descriptors kept back from DNS TCP for everything else the process
/// opens while it runs: etcd and webhook connections, the state file and its
/// directory, log and timer descriptors, the blocking pool's files.
pub const FD_RESERVE: u64 = 64;

/// The TCP connection cap per listen address that the descriptor limit
/// allows: `configured`, or fewer when the soft limit `nofile` minus the
/// descriptors `open` now and those `reserved` for the control server and
/// health checks, shared by `listeners` addresses, leaves fewer; so that
/// accept never fails for want of a descriptor (at the cap an idle
/// connection makes room instead). At least 1.
pub fn effective_cap(
    configured: usize,
    nofile: u64,
    open: u64,
    reserved: u64,
    listeners: usize,
) -> usize {
    let room = nofile.saturating_sub(open + reserved + FD_RESERVE) / listeners.max(1) as u64;
    configured
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

/// Descriptors this process has open now (0 if /proc cannot tell).
pub fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// TCP limits from the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// A connection with no complete request for this long is closed.
    pub idle_timeout: Duration,
}

/// How long the accept loop waits for evicted connections to release their
/// descriptors before it goes on anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Idle connections closed at once when the cap is reached, so that a flood
/// of new connections waits for closes once per batch, not once each.
const EVICT_BATCH: usize = 32;

/// One open connection: when it became idle (`None`: busy with a request),
/// how to close it, and the signal that it has closed (its descriptor
/// released).
struct Conn {
    idle_since: Option<Instant>,
    close: CancellationToken,
    closed: CancellationToken,
}

/// The open connections.
#[derive(Default)]
struct Table {
    next: u64,
    open: HashMap<u64, Conn>,
}

type Shared = Arc<Mutex<Table>>;

impl Table {
    /// Closes the connection idle the longest; the signal that it has
    /// released its descriptor, or None if none is idle.
    fn close_idlest(&mut self) -> Option<CancellationToken> {
        self.close_idlest_n(1).pop()
    }

    /// Closes the `n` connections idle the longest (fewer if fewer are
    /// idle); the signals that they have released their descriptors.
    fn close_idlest_n(&mut self, n: usize) -> Vec<CancellationToken> {
        let mut idle: Vec<(Instant, u64)> = self
            .open
            .iter()
            .filter_map(|(id, c)| c.idle_since.map(|s| (s, *id)))
            .collect();
        let n = n.min(idle.len());
        if n == 0 {
            return Vec::new();
        }
        idle.select_nth_unstable(n - 1);
        idle[..n]
            .iter()
            .filter_map(|(_, id)| self.open.remove(id))
            .map(|conn| {
                conn.close.cancel();
                conn.closed
            })
            .collect()
    }
}

/// Serves `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    limits: Limits,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) {
    let table: Shared = Arc::default();
    let logged_exhaustion = AtomicBool::new(false);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, src) = match accepted {
            Ok(a) => a,
            Err(error) => {
                counters.tcp_accept_errors.fetch_add(1, Ordering::Relaxed);
                // Out of descriptors (EMFILE, ENFILE) or memory: free one by
                // closing an idle connection, log once, and wait a little
                // rather than retry at once.
                let _ = lock(&table).close_idlest();
                if !logged_exhaustion.swap(true, Ordering::Relaxed) {
                    warn!(%error, "dns tcp accept failed; backing off (logged once, counted in dnsshift_dns_tcp_accept_errors_total)");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        // At the cap the idlest connections make room (a batch, for the
        // connections that follow); the loop waits until they have released
        // their descriptors, so that the connections open never outgrow the
        // cap (and with it the descriptors the cap was sized for).
        let evicted = {
            let mut t = lock(&table);
            if t.open.len() < limits.max_connections {
                Vec::new()
            } else {
                let batch = EVICT_BATCH.min(limits.max_connections.div_ceil(4));
                let closed = t.close_idlest_n(batch);
                if closed.is_empty() {
                    // Every connection is busy with a request: refuse this one.
                    counters.tcp_refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                closed
            }
        };
        if !evicted.is_empty() {
            counters
                .tcp_evicted
                .fetch_add(evicted.len() as u64, Ordering::Relaxed);
            let all_closed = async {
                for c in &evicted {
                    c.cancelled().await;
                }
            };
            let _ = tokio::time::timeout(CLOSE_WAIT, all_closed).await;
        }
        let conn = {
            let mut t = lock(&table);
            t.next += 1;
            let id = t.next;
            let (close, closed) = (shutdown.child_token(), CancellationToken::new());
            t.open.insert(
                id,
                Conn {
                    idle_since: Some(Instant::now()),
                    close: close.clone(),
                    closed: closed.clone(),
                },
            );
            (id, close, closed)
        };
        counters.tcp_connections.fetch_add(1, Ordering::Relaxed);
        let (handler, table, counters) = (handler.clone(), table.clone(), counters.clone());
        tokio::spawn(async move {
            let (id, close, closed) = conn;
            // The stream is dropped (its descriptor closed) when this returns.
            connection(
                stream,
                src,
                &handler,
                limits.idle_timeout,
                id,
                &table,
                &close,
            )
            .await;
            lock(&table).open.remove(&id);
            counters.tcp_connections.fetch_sub(1, Ordering::Relaxed);
            closed.cancel();
        });
    }
}

/// Marks connection `id` idle (since now) or busy.
fn mark(table: &Shared, id: u64, idle: bool) {
    if let Some(entry) = lock(table).open.get_mut(&id) {
        entry.idle_since = idle.then(Instant::now);
    }
}

async fn connection(
    mut stream: TcpStream,
    src: SocketAddr,
    handler: &Handler,
    idle_timeout: Duration,
    id: u64,
    table: &Shared,
    token: &CancellationToken,
) {
    loop {
        mark(table, id, true);
        let mut len = [0u8; 2];
        let read = tokio::select! {
            _ = token.cancelled() => return,
            r = tokio::time::timeout(idle_timeout, stream.read_exact(&mut len)) => r,
        };
        if !matches!(read, Ok(Ok(_))) {
            return;
        }
        mark(table, id, false);
        let mut request = vec![0u8; usize::from(u16::from_be_bytes(len))];
        let read = tokio::select! {
            _ = token.cancelled() => return,
            r = tokio::time::timeout(idle_timeout, stream.read_exact(&mut request)) => r,
        };
        if !matches!(read, Ok(Ok(_))) {
            return;
        }
        let Some(response) = handle(handler, request, src, Protocol::Tcp).await else {
            continue;
        };
        let Ok(n) = u16::try_from(response.len()) else {
            debug!(%src, "tcp response longer than 65535 bytes dropped");
            continue;
        };
        let mut framed = Vec::with_capacity(response.len() + 2);
        framed.extend_from_slice(&n.to_be_bytes());
        framed.extend_from_slice(&response);
        let write = tokio::select! {
            _ = token.cancelled() => return,
            r = tokio::time::timeout(idle_timeout, stream.write_all(&framed)) => r,
        };
        if !matches!(write, Ok(Ok(()))) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_under_the_descriptor_limit() {
        // A container's 1024: 40 open, 64 control + 100 health checks.
        assert_eq!(effective_cap(1000, 1024, 40, 164, 1), 1024 - 40 - 164 - 64);
        // Two listen addresses share the room.
        assert_eq!(
            effective_cap(1000, 1024, 40, 164, 2),
            (1024 - 40 - 164 - 64) / 2
        );
        // A generous limit: the configured cap.
        assert_eq!(effective_cap(1000, 65536, 40, 164, 2), 1000);
        // Nothing left: still one connection, never zero.
        assert_eq!(effective_cap(1000, 100, 40, 164, 1), 1);
    }
}
