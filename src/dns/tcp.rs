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

/// TCP limits from the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// A connection with no complete request for this long is closed.
    pub idle_timeout: Duration,
}

/// The open connections: when each became idle (`None`: busy with a
/// request), and how to close it.
#[derive(Default)]
struct Table {
    next: u64,
    open: HashMap<u64, (Option<Instant>, CancellationToken)>,
}

type Shared = Arc<Mutex<Table>>;

impl Table {
    /// Closes the connection idle the longest; false if none is idle.
    fn close_idlest(&mut self) -> bool {
        let victim = self
            .open
            .iter()
            .filter_map(|(id, (since, _))| since.map(|s| (s, *id)))
            .min()
            .map(|(_, id)| id);
        match victim.and_then(|id| self.open.remove(&id)) {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
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
                lock(&table).close_idlest();
                if !logged_exhaustion.swap(true, Ordering::Relaxed) {
                    warn!(%error, "dns tcp accept failed; backing off (logged once, counted in dnsshift_dns_tcp_accept_errors_total)");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let token = {
            let mut t = lock(&table);
            if t.open.len() >= limits.max_connections {
                if t.close_idlest() {
                    counters.tcp_evicted.fetch_add(1, Ordering::Relaxed);
                } else {
                    // Every connection is busy with a request: refuse this one.
                    counters.tcp_refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            t.next += 1;
            let id = t.next;
            let token = shutdown.child_token();
            t.open.insert(id, (Some(Instant::now()), token.clone()));
            (id, token)
        };
        counters.tcp_connections.fetch_add(1, Ordering::Relaxed);
        let (handler, table, counters) = (handler.clone(), table.clone(), counters.clone());
        tokio::spawn(async move {
            let (id, token) = token;
            connection(
                stream,
                src,
                &handler,
                limits.idle_timeout,
                id,
                &table,
                &token,
            )
            .await;
            lock(&table).open.remove(&id);
            counters.tcp_connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Marks connection `id` idle (since now) or busy.
fn mark(table: &Shared, id: u64, idle: bool) {
    if let Some(entry) = lock(table).open.get_mut(&id) {
        entry.0 = idle.then(Instant::now);
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
