//! Five status pages streaming live updates cannot slow DNS, through the
//! real binary: DNS p99 with five event streams open against DNS p99 with
//! none, in the same run. A test binary of its own, so that no other test
//! shares the machine with the measurement.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::{Duration, Instant};

use common::*;

/// Pages open at once while streaming.
const PAGES: usize = 5;
/// Measurement windows (half quiet, half streaming, alternating).
const WINDOWS: usize = 30;
/// Queries per window.
const QUERIES: usize = 400;
/// Attempts; the first that holds wins (the machine is shared).
const ATTEMPTS: usize = 5;

/// `PAGES` readers of `/ui/events`, each streaming while `on` is set
/// (reconnecting when the server ends a stream); returns the bytes read.
fn pages(
    control: SocketAddr,
    cookie: &str,
    on: &Arc<AtomicBool>,
    stop: &Arc<AtomicBool>,
    events: &Arc<AtomicUsize>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..PAGES)
        .map(|_| {
            let (on, stop, events, cookie) =
                (on.clone(), stop.clone(), events.clone(), cookie.to_string());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(600);
                while !stop.load(Relaxed) && Instant::now() < deadline {
                    if !on.load(Relaxed) {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    let mut s = TcpStream::connect(control).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                    write!(
                        s,
                        "GET /ui/events HTTP/1.1\r\nHost: {control}\r\nCookie: dnsshift_ui={cookie}\r\nAccept: text/event-stream\r\n\r\n"
                    )
                    .unwrap();
                    let mut buf = [0u8; 16384];
                    while on.load(Relaxed) && !stop.load(Relaxed) {
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                let text = String::from_utf8_lossy(&buf[..n]);
                                events.fetch_add(text.matches("event: live").count(), Relaxed);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut => {}
                            Err(_) => break,
                        }
                    }
                }
            })
        })
        .collect()
}

#[test]
fn five_streaming_pages_do_not_slow_dns() {
    let zone = ZoneBuilder::new("shift.test.")
        .service(
            ServiceBuilder::new("www")
                .ttl("30s")
                .pool("old", &["127.0.0.10", "127.0.0.11"])
                .pool("new", &["127.0.0.20"])
                .health_none(),
        )
        .to_toml();
    let server = Setup::new(&[("shift.test.toml", &zone)], "").start();
    let control = server.control.unwrap();
    let token = std::fs::read_to_string(server.path().join("state/control.token")).unwrap();
    let cookie = ui_session(control, token.trim());
    let mut seen = Vec::new();
    for _ in 0..ATTEMPTS {
        let on = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(AtomicUsize::new(0));
        let readers = pages(control, &cookie, &on, &stop, &events);
        latencies_us(server.dns, QUERIES); // warm-up
        let mut p99s: [Vec<u128>; 2] = Default::default();
        for w in 0..WINDOWS {
            for streaming in if w % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            } {
                on.store(streaming, Relaxed);
                // Let the streams open (or close) and the first renderings go.
                std::thread::sleep(Duration::from_millis(700));
                p99s[usize::from(streaming)].push(p99(latencies_us(server.dns, QUERIES)));
            }
        }
        stop.store(true, Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        let [quiet, streaming] = p99s.clone().map(median);
        let ratio = streaming as f64 / quiet as f64;
        let got = events.load(Relaxed);
        let summary = format!(
            "median window p99: quiet {quiet} us, {PAGES} pages streaming {streaming} us; ratio {ratio:.3}; {got} events received; windows {p99s:?}"
        );
        eprintln!("{summary}");
        // Each page gets an event at least every few seconds while it streams.
        assert!(
            got >= PAGES * WINDOWS,
            "the pages did not stream: {summary}"
        );
        if ratio < 1.10 {
            return;
        }
        seen.push(summary);
    }
    panic!(
        "DNS p99 moved by 10% or more with {PAGES} pages streaming:\n{}",
        seen.join("\n")
    );
}
