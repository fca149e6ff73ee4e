//! Real HTTP(S) backends for health-check and rehearsal tests: each binds a
//! loopback address, answers with a behaviour the test can change at any
//! time, and records every request (time, path, Host header, TLS SNI).
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a backend answers.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Respond with this status and body.
    Respond { status: u16, body: String },
    /// Accept, read the request, and never answer (until the test stops it).
    Hang,
    /// Send the status line, then one byte of body every 100 ms, forever.
    Trickle,
    /// Respond 200 with a body of this many bytes, expecting a bound.
    Huge(usize),
}

/// One request as the backend saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub path: String,
    pub host: Option<String>,
    pub sni: Option<String>,
    pub peer: SocketAddr,
}

struct Inner {
    behaviour: Mutex<Behaviour>,
    seen: Mutex<Vec<Seen>>,
    stop: AtomicBool,
}

/// A running backend; stops when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    thread: Option<std::thread::JoinHandle<()>>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Backend {
    /// Plain HTTP on `addr` (port 0 for any).
    pub fn http(addr: &str) -> Backend {
        Self::start(addr.parse().unwrap(), None, Behaviour::ok())
    }

    /// HTTPS with the given server config.
    pub fn https(addr: &str, tls: Arc<rustls::ServerConfig>) -> Backend {
        Self::start(addr.parse().unwrap(), Some(tls), Behaviour::ok())
    }

    fn start(addr: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>, b: Behaviour) -> Backend {
        let inner = Arc::new(Inner {
            behaviour: Mutex::new(b),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let i = inner.clone();
        let t = tls.clone();
        let thread = std::thread::spawn(move || accept_loop(listener, i, t));
        Backend {
            addr,
            inner,
            thread: Some(thread),
            tls,
        }
    }

    pub fn set(&self, b: Behaviour) {
        *self.inner.behaviour.lock().unwrap() = b;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.inner.seen.lock().unwrap().clear();
    }

    /// Stops listening (connections are refused afterwards).
    pub fn stop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Starts again on the same address, keeping behaviour and history.
    pub fn restart(&mut self) {
        self.stop();
        self.inner.stop.store(false, Ordering::SeqCst);
        let listener = bind_retry(self.addr);
        listener.set_nonblocking(true).unwrap();
        let i = self.inner.clone();
        let t = self.tls.clone();
        self.thread = Some(std::thread::spawn(move || accept_loop(listener, i, t)));
    }
}

impl Behaviour {
    pub fn ok() -> Behaviour {
        Behaviour::Respond {
            status: 200,
            body: "ok".into(),
        }
    }
    pub fn status(status: u16) -> Behaviour {
        Behaviour::Respond {
            status,
            body: "status".into(),
        }
    }
    pub fn body(body: &str) -> Behaviour {
        Behaviour::Respond {
            status: 200,
            body: body.into(),
        }
    }
}

fn bind_retry(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("rebind {addr}: {e}"),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, inner: Arc<Inner>, tls: Option<Arc<rustls::ServerConfig>>) {
    while !inner.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let i = inner.clone();
                let t = tls.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    match t {
                        None => serve(stream, None, peer, &i),
                        Some(cfg) => {
                            let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                                return;
                            };
                            let mut tls = rustls::StreamOwned::new(conn, stream);
                            // Drive the handshake so SNI is known.
                            while tls.conn.is_handshaking() {
                                if tls.conn.complete_io(&mut tls.sock).is_err() {
                                    return;
                                }
                            }
                            let sni = tls.conn.server_name().map(str::to_string);
                            serve(tls, sni, peer, &i)
                        }
                    }
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn serve<S: Read + Write>(mut s: S, sni: Option<String>, peer: SocketAddr, inner: &Inner) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let path = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_string();
    let host = text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("host").then(|| v.trim().to_string())
    });
    inner.seen.lock().unwrap().push(Seen {
        at: Instant::now(),
        path,
        host,
        sni,
        peer,
    });
    let behaviour = inner.behaviour.lock().unwrap().clone();
    match behaviour {
        Behaviour::Respond { status, body } => {
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.flush();
        }
        Behaviour::Hang => {
            while !inner.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Behaviour::Trickle => {
            let _ = write!(s, "HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n");
            for _ in 0..600 {
                if inner.stop.load(Ordering::SeqCst)
                    || s.write_all(b"x").and_then(|_| s.flush()).is_err()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Behaviour::Huge(n) => {
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-length: {n}\r\nconnection: close\r\n\r\n"
            );
            let block = vec![b'x'; 16 * 1024];
            let mut left = n;
            while left > 0 {
                let k = left.min(block.len());
                if s.write_all(&block[..k]).is_err() {
                    break;
                }
                left -= k;
            }
        }
    }
}

/// A self-signed certificate for `name`: the server config and the PEM.
pub fn self_signed(name: &str) -> (Arc<rustls::ServerConfig>, String) {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    (Arc::new(cfg), ck.cert.pem())
}
