//! The UDP fast path through the real binary: several workers on one port,
//! the receive buffer reported at start, prompt shutdown, the hickory UDP
//! path still selectable, and hostile question encodings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

fn start(extra: &str) -> Server {
    let www = ServiceBuilder::unchecked("www", &["127.0.0.10", "127.0.0.11"], &["127.0.0.20"])
        .max_answers(1)
        .initial_phase("round-robin");
    Setup::new(&[("shift.test.toml", &zone_of([www]))], extra).start()
}

#[test]
fn several_workers_share_one_port_and_answer_every_client() {
    let server = start("udp_workers = 4\n");
    let (_, line) = server
        .log
        .wait_for(0, STARTUP_TIMEOUT, |l| is_msg(l, "dns listening"));
    assert_eq!(field(&line, "udp_sockets").as_deref(), Some("4"), "{line}");
    assert_eq!(field(&line, "fast_path").as_deref(), Some("true"), "{line}");
    // Many source ports, so the kernel's flow hash spreads them over the
    // sockets: every one must be answered, whichever worker gets it.
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        let m = query_udp(
            server.dns,
            &build_query("www.shift.test.", RecordType::A, None),
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        seen.extend(answers(&m));
    }
    assert_eq!(seen.len(), 3, "both pools, every old endpoint: {seen:?}");
}

#[test]
fn receive_buffer_is_set_and_reported() {
    let server = start("udp_rcvbuf = 1048576\n");
    let (_, line) = server
        .log
        .wait_for(0, STARTUP_TIMEOUT, |l| l.contains("udp receive buffer"));
    assert_eq!(
        field(&line, "requested").as_deref(),
        Some("1048576"),
        "{line}"
    );
    let granted: usize = field(&line, "granted").unwrap().parse().unwrap();
    // Either granted (Linux reports twice the size) or capped and said so.
    assert!(
        granted >= 1048576 || line.contains("capped by the kernel"),
        "{line}"
    );
}

#[test]
fn workers_stop_within_a_second_of_sigterm() {
    let mut server = start("udp_workers = 2\n");
    query_udp(
        server.dns,
        &build_query("www.shift.test.", RecordType::A, None),
    );
    let t = Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}");
    // The workers' receive timeout bounds the stop; generous for a busy CI.
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let lines = server.log.lines();
    assert!(
        !lines.iter().any(|l| l.contains("did not stop")),
        "{lines:?}"
    );
}

#[test]
fn hickory_udp_path_answers_the_same_when_selected() {
    let fast = start("");
    let slow = start("udp_fast_path = false\n");
    let (_, line) = slow
        .log
        .wait_for(0, STARTUP_TIMEOUT, |l| is_msg(l, "dns listening"));
    assert_eq!(
        field(&line, "fast_path").as_deref(),
        Some("false"),
        "{line}"
    );
    for (name, t, edns) in [
        ("shift.test.", RecordType::SOA, None),
        ("shift.test.", RecordType::NS, Some(1232)),
        ("ns1.shift.test.", RecordType::A, None),
        ("nope.shift.test.", RecordType::A, Some(4096)),
        ("www.shift.test.", RecordType::MX, None),
        ("example.org.", RecordType::A, None),
    ] {
        let q = build_query(name, t, edns);
        let a = without_serial(query_udp(fast.dns, &q));
        let b = without_serial(query_udp(slow.dns, &q));
        assert_eq!(a, b, "{name} {t}");
    }
}

/// `m` with every SOA serial set to 0: a single host's serial is the Unix
/// time of its last rebuild, so two servers started in different seconds
/// serve different serials for the same zones.
fn without_serial(mut m: Message) -> Message {
    for r in m.answers.iter_mut().chain(m.authorities.iter_mut()) {
        if let hickory_proto::rr::RData::SOA(soa) = &mut r.data {
            soa.serial = 0;
        }
    }
    m
}

#[test]
fn a_compression_pointer_in_the_question_is_formerr_without_echo() {
    let server = start("");
    // Header (ID 0x4242, RD, one question) and a name that is a pointer
    // into the header: echoing it would hand back bytes that decode to
    // another name, or to nothing.
    let packet = [
        0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 0x02, 0, 1, 0, 1,
    ];
    let reply = exchange_udp_raw(server.dns, &packet).expect("an answer");
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(m.metadata.id, 0x4242);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert!(m.queries.is_empty(), "{m}");
    assert_eq!(reply.len(), 12);
}

#[test]
fn responses_and_garbage_with_qr_set_are_never_answered() {
    let server = start("");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(server.dns).unwrap();
    // QR=1 with garbage after the header, and a bare header with QR=1.
    sock.send(&[0x11, 0x11, 0x80, 0, 0xff, 0xff, 1, 2, 3])
        .unwrap();
    sock.send(&[0x12, 0x12, 0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0])
        .unwrap();
    let q = build_query("www.shift.test.", RecordType::A, None);
    sock.send(&q.to_vec().unwrap()).unwrap();
    sock.set_read_timeout(Some(QUERY_TIMEOUT)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("the query is answered");
    assert_eq!(
        Message::from_vec(&buf[..n]).unwrap().metadata.id,
        q.metadata.id
    );
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(sock.recv(&mut buf).is_err(), "a QR=1 packet was answered");
}

#[test]
fn rate_limiting_drops_and_slips_a_flood_for_one_name() {
    // Loopback is exempt by default; this test is the flood's victim.
    let server = start("[rrl]\nresponses_per_second = 5\nslip = 2\nexempt = []\n");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(server.dns).unwrap();
    const SENT: usize = 60;
    for _ in 0..SENT {
        let q = build_query("ns1.shift.test.", RecordType::A, None);
        sock.send(&q.to_vec().unwrap()).unwrap();
    }
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let (mut full, mut truncated) = (0, 0);
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        let m = Message::from_vec(&buf[..n]).unwrap();
        if m.metadata.truncation {
            assert!(m.answers.is_empty(), "{m}");
            assert_eq!(m.queries.len(), 1, "a slipped answer keeps the question");
            truncated += 1;
        } else {
            assert_eq!(answers(&m), ["127.0.0.53"]);
            full += 1;
        }
    }
    // 5 per second; the burst may straddle a second boundary or two.
    assert!((5..=15).contains(&full), "{full} full answers");
    assert!(truncated > 0, "none slipped");
    assert!(full + truncated < SENT, "none dropped");
    let (_, body) = http_get(server.control.unwrap(), "/metrics");
    let metric = |name: &str| -> u64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(metric("dnsshift_dns_rrl_slipped_total "), truncated as u64);
    assert_eq!(
        metric("dnsshift_dns_rrl_dropped_total ") as usize,
        SENT - full - truncated
    );
}

#[test]
fn a_resolver_on_loopback_is_not_rate_limited_by_default() {
    let server = start("");
    for _ in 0..300 {
        let m = query_udp(
            server.dns,
            &build_query("ns1.shift.test.", RecordType::A, None),
        );
        assert!(!m.metadata.truncation);
    }
}

#[test]
fn truncated_answers_are_header_question_and_opt_only() {
    // Ten 200-byte TXT strings: more than 512 bytes, and more than 1232.
    let records: String = (0..10)
        .map(|i| format!("big IN TXT \"{}\"\n", format!("{i}").repeat(200)))
        .collect();
    let zone = records
        .lines()
        .fold(ZoneBuilder::new("shift.test."), ZoneBuilder::record)
        .to_toml();
    let server = Setup::new(&[("shift.test.toml", &zone)], "").start();
    for edns in [None, Some(1232)] {
        let q = build_query("big.shift.test.", RecordType::TXT, edns);
        let raw = exchange_udp_raw(server.dns, &q.to_vec().unwrap()).unwrap();
        let m = Message::from_vec(&raw).unwrap();
        assert!(m.metadata.truncation, "{edns:?}: {m}");
        assert!(m.answers.is_empty() && m.authorities.is_empty(), "{m}");
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.edns.is_some(), edns.is_some(), "{m}");
        // Nothing after the question (and OPT): no partly written record.
        let question = 12 + "big.shift.test.".len() + 1 + 4;
        let opt = if edns.is_some() { 11 } else { 0 };
        assert_eq!(raw.len(), question + opt, "{edns:?}: {raw:02x?}");
        // The full answer over TCP.
        assert_eq!(query_tcp(server.dns, &q).answers.len(), 10);
    }
}

#[test]
fn a_pointer_in_a_question_is_formerr_on_the_fallback_and_tcp_too() {
    let server = start("");
    // Two questions (the fallback's case), the second one a pointer into
    // the first: still never echoed raw.
    let mut two = vec![0x43, 0x43, 0x01, 0x00, 0, 2, 0, 0, 0, 0, 0, 0];
    two.extend_from_slice(b"\x03ns1\x05shift\x04test\x00\x00\x01\x00\x01");
    two.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
    let reply = exchange_udp_raw(server.dns, &two).expect("an answer");
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(reply.len(), 12, "{m}");
    // Over TCP, the single-question pointer case.
    let packet = [
        0x44, 0x44, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 0x02, 0, 1, 0, 1,
    ];
    let mut s = std::net::TcpStream::connect_timeout(&server.dns, QUERY_TIMEOUT).unwrap();
    s.set_read_timeout(Some(QUERY_TIMEOUT)).unwrap();
    use std::io::{Read, Write};
    s.write_all(&[0, packet.len() as u8]).unwrap();
    s.write_all(&packet).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    assert_eq!(u16::from_be_bytes(len), 12);
    let mut resp = [0u8; 12];
    s.read_exact(&mut resp).unwrap();
    assert_eq!(resp[3] & 0x0F, 1, "FORMERR");
    assert_eq!(&resp[..2], &[0x44, 0x44]);
}
