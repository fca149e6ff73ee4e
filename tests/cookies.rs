//! DNS Cookies (RFC 7873, server cookies of RFC 9018) through the real
//! binary: `dig +cookie` over UDP and TCP, a server cookie sent back is
//! accepted, a wrong one replaced, a malformed option FORMERR; a valid
//! server cookie is exempt from rate limiting; two hosts reading the same
//! secret file accept each other's cookies, and a rotation by `reload`
//! keeps the previous secret's cookies valid.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::EdnsOption;

const SECRET_A: &str = "000102030405060708090a0b0c0d0e0f";
const SECRET_B: &str = "f0e0d0c0b0a090807060504030201000";
const CLIENT: [u8; 8] = [0x24, 0x64, 0xc4, 0xab, 0xcf, 0x10, 0xc9, 0x57];

fn zone() -> String {
    let www = ServiceBuilder::unchecked("www", &["127.0.0.10"], &["127.0.0.20"]);
    zone_of([www])
}

/// Writes a secret file, mode 0600, in `dir`.
fn secret_file(dir: &Path, name: &str, hex: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("{hex}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

fn start(extra: &str) -> Server {
    Setup::new(&[("shift.test.toml", &zone())], extra).start()
}

/// A query for `name` with EDNS and a COOKIE option of `cookie`'s bytes.
fn with_cookie(name: &str, rtype: RecordType, cookie: &[u8]) -> Message {
    let mut m = build_query(name, rtype, None);
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.options_mut()
        .insert(EdnsOption::Unknown(10, cookie.to_vec()));
    m.set_edns(e);
    m
}

/// `dig +cookie...` against `server`; the COOKIE line of its answer
/// (`; COOKIE: <hex> (good)`) and the whole output.
fn dig(server: &Server, args: &[&str]) -> (String, String) {
    let out = Command::new("dig")
        .arg("@127.0.0.1")
        .args(["-p", &server.dns.port().to_string()])
        .args(["+time=5", "+tries=1", "+norecurse"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `dig` ({e}): install bind9-dnsutils"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dig {args:?}:\n{text}");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("; COOKIE: "))
        .unwrap_or_else(|| panic!("no COOKIE in dig {args:?}:\n{text}"))
        .to_string();
    (line, text)
}

/// The value of `dnsshift_dns_cookies_total{result="..."}` once it
/// reaches `want` (the page is rendered at most once a second).
fn await_cookies(server: &Server, result: &str, want: u64) -> u64 {
    let sample = format!("dnsshift_dns_cookies_total{{result=\"{result}\"}}");
    let control = server.control.unwrap();
    poll(Duration::from_secs(5), Duration::from_millis(100), || {
        metric(control, &sample).filter(|n| *n >= want)
    })
    .unwrap_or_else(|| {
        panic!(
            "{sample} never reached {want}: {:?}",
            metric(control, &sample)
        )
    })
}

#[test]
fn dig_gets_a_good_cookie_over_udp_and_tcp_and_the_server_cookie_is_accepted() {
    let server = start("");
    for transport in ["+notcp", "+tcp"] {
        let (line, text) = dig(&server, &[transport, "+cookie", "www.shift.test", "A"]);
        assert!(line.ends_with("(good)"), "{transport}: {line}");
        assert!(text.contains("status: NOERROR"), "{text}");
        let sent = line.split_whitespace().next().unwrap().to_string();
        // Client cookie (16 hex digits), then version 1, reserved 0.
        assert_eq!(sent.len(), 48, "{sent}");
        assert!(sent[16..].starts_with("01000000"), "{sent}");
        // Sent back: accepted and, being young, echoed as it was.
        let (again, text) = dig(
            &server,
            &[transport, &format!("+cookie={sent}"), "www.shift.test", "A"],
        );
        assert!(text.contains("status: NOERROR"), "{text}");
        assert_eq!(
            again.split_whitespace().next().unwrap(),
            sent,
            "{transport}"
        );
        assert!(again.ends_with("(good)"), "{again}");
        // A server cookie we did not make: a fresh one, a normal answer.
        let forged = format!("{}0100000000000000{}", &sent[..16], "5a".repeat(8));
        let (fresh, text) = dig(
            &server,
            &[
                transport,
                &format!("+cookie={forged}"),
                "www.shift.test",
                "A",
            ],
        );
        assert!(text.contains("status: NOERROR"), "{text}");
        let fresh = fresh.split_whitespace().next().unwrap();
        assert_ne!(fresh, forged);
        assert_eq!(&fresh[..16], &sent[..16]);
    }
    await_cookies(&server, "new", 2);
    await_cookies(&server, "valid", 2);
    await_cookies(&server, "invalid", 2);
}

#[test]
fn a_malformed_cookie_is_formerr_on_udp_and_tcp() {
    let server = start("");
    // A client cookie of 5 bytes; one with a 3-byte server cookie; 41 bytes.
    for bad in [&[1u8; 5][..], &[1; 11], &[1; 41]] {
        for tcp in [false, true] {
            let q = with_cookie("www.shift.test.", RecordType::A, bad);
            let m = if tcp {
                query_tcp(server.dns, &q)
            } else {
                query_udp(server.dns, &q)
            };
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::FormErr,
                "{}: {m}",
                bad.len()
            );
            assert!(m.answers.is_empty());
        }
    }
    await_cookies(&server, "malformed", 6);
    // A well-formed one on any name, any path (REFUSED, fallback types).
    for (name, t) in [
        ("www.shift.test.", RecordType::A),
        ("elsewhere.example.", RecordType::A),
        ("nope.shift.test.", RecordType::AAAA),
        ("shift.test.", RecordType::ANY),
    ] {
        let m = query_udp(server.dns, &with_cookie(name, t, &CLIENT));
        let c = cookie_option(&m).unwrap_or_else(|| panic!("no cookie: {m}"));
        assert_eq!(c.len(), 24);
        assert_eq!(c[..8], CLIENT);
    }
}

#[test]
fn a_valid_server_cookie_is_exempt_from_rate_limiting() {
    // Loopback is exempt by default; not here.
    let server = start("[rrl]\nresponses_per_second = 5\nslip = 2\nexempt = []\n");
    let first = query_udp(
        server.dns,
        &with_cookie("ns1.shift.test.", RecordType::A, &CLIENT),
    );
    let cookie = cookie_option(&first).unwrap();
    // A burst on the fast path (A) and on the hickory path (ANY), with and
    // without the server cookie, from one socket.
    let burst = |cookie: &[u8]| {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(server.dns).unwrap();
        const SENT: usize = 60;
        for i in 0..SENT {
            let t = if i % 2 == 0 {
                RecordType::A
            } else {
                RecordType::ANY
            };
            let q = with_cookie("ns1.shift.test.", t, cookie);
            sock.send(&q.to_vec().unwrap()).unwrap();
        }
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let (mut full, mut received) = (0, 0);
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            let m = Message::from_vec(&buf[..n]).unwrap();
            received += 1;
            if !m.metadata.truncation {
                full += 1;
            }
        }
        (SENT, full, received)
    };
    let (sent, full, received) = burst(&cookie);
    assert_eq!((full, received), (sent, sent), "with a valid server cookie");
    await_cookies(&server, "valid", sent as u64);
    let (sent, full, _) = burst(&CLIENT);
    // 5 per second per response kind (two kinds); a burst may straddle
    // a second or two.
    assert!(
        full <= 30,
        "{full} of {sent} full answers without a server cookie"
    );
}

#[test]
fn hosts_sharing_the_secret_file_accept_each_others_cookies_and_reload_rotates_it() {
    let shared = tempfile::tempdir().unwrap();
    let a_file = secret_file(shared.path(), "a.secret", SECRET_A);
    let config = format!("[cookies]\nsecret_file = {a_file:?}\n");
    let host1 = start(&config);
    let host2 = start(&config);
    let lone = start("");
    let q = |s: &Server, c: &[u8]| {
        cookie_option(&query_udp(
            s.dns,
            &with_cookie("www.shift.test.", RecordType::A, c),
        ))
        .unwrap()
    };
    let from1 = q(&host1, &CLIENT);
    // host2 echoes host1's cookie: valid there.
    assert_eq!(q(&host2, &from1), from1);
    await_cookies(&host2, "valid", 1);
    // A host with another secret does not.
    assert_ne!(q(&lone, &from1), from1);
    await_cookies(&lone, "invalid", 1);

    // Rotation on host1: the new secret, the old one as previous.
    let b_file = secret_file(shared.path(), "b.secret", SECRET_B);
    let rotated =
        format!("[cookies]\nsecret_file = {b_file:?}\nprevious_secret_file = {a_file:?}\n");
    let append = |s: &Server, extra: &str| {
        let path = s.path().join("dnsshift.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let base = text.split("[cookies]").next().unwrap().to_string();
        std::fs::write(&path, format!("{base}{extra}")).unwrap();
    };
    append(&host1, &rotated);
    host1.cli_ok(&["reload"]);
    // Still valid, but replaced by one made with the new secret.
    let renewed = q(&host1, &from1);
    assert_ne!(renewed, from1);
    assert_eq!(renewed[..8], CLIENT);
    await_cookies(&host1, "valid", 1);
    assert_eq!(
        q(&host1, &renewed),
        renewed,
        "the new cookie is valid and echoed"
    );
    // The previous secret dropped: the old cookie is invalid.
    append(&host1, &format!("[cookies]\nsecret_file = {b_file:?}\n"));
    host1.cli_ok(&["reload"]);
    assert_ne!(q(&host1, &from1), from1);
    await_cookies(&host1, "invalid", 1);
    // A broken secret file rejects the reload and keeps the running secret.
    let bad = secret_file(shared.path(), "bad.secret", "0001");
    append(&host1, &format!("[cookies]\nsecret_file = {bad:?}\n"));
    let (ok, _, err) = host1.cli(&["reload"]);
    assert!(!ok);
    assert!(err.contains("cookies.secret_file"), "{err}");
    assert_eq!(q(&host1, &renewed), renewed);
}

#[test]
fn a_readable_by_others_secret_file_fails_check_and_start_with_its_line_and_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "cookie.secret", SECRET_A);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let setup = Setup::new(
        &[("shift.test.toml", &zone())],
        &format!("[cookies]\nsecret_file = {file:?}\n"),
    );
    // The Setup's config has 6 lines before the extra text.
    let want = format!(
        "{}:8: cookies.secret_file: {file} has mode 0644 but must be readable by its owner only: run `chmod 600 {file}`",
        setup.config().display()
    );
    let out = check_config(setup.dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l == want),
        "want {want}\ngot {stderr}"
    );
    assert!(serve_must_fail(setup.dir.path()).contains(&want));
}

/// `q` (with a COOKIE option) over UDP, as raw bytes: a reply hickory
/// decodes whatever its code.
fn udp(server: &Server, q: &Message) -> Message {
    let raw = exchange_udp_raw(server.dns, &q.to_vec().unwrap()).expect("an answer");
    Message::from_vec(&raw).unwrap()
}

/// `cookie` (client and server cookie, as a reply carried it) is one the
/// server made with its current secret for this client: sent back, it is
/// echoed as it was.
fn assert_echoed(server: &Server, cookie: &[u8], what: &str) {
    assert_eq!(cookie.len(), 24, "{what}: {cookie:?}");
    assert_eq!(cookie[..8], CLIENT, "{what}");
    let m = udp(
        server,
        &with_cookie("www.shift.test.", RecordType::A, cookie),
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    assert_eq!(
        cookie_option(&m).as_deref(),
        Some(cookie),
        "{what}: a valid, young server cookie is echoed"
    );
}

#[test]
fn truncated_slipped_and_badvers_replies_carry_a_valid_server_cookie() {
    let txt = |i: usize| format!("big IN TXT \"{i:02}{}\"", "x".repeat(198));
    let zone = (0..4)
        .fold(ZoneBuilder::new("shift.test."), |z, i| z.record(&txt(i)))
        .service(ServiceBuilder::unchecked(
            "www",
            &["127.0.0.10"],
            &["127.0.0.20"],
        ))
        .to_toml();
    let server = Setup::new(
        &[("shift.test.toml", &zone)],
        "[rrl]\nresponses_per_second = 2\nslip = 1\nexempt = []\n",
    )
    .start();

    // TC=1: four 200-byte TXT records do not fit in 512 bytes.
    let mut q = with_cookie("big.shift.test.", RecordType::TXT, &CLIENT);
    q.edns.as_mut().unwrap().set_max_payload(512);
    let m = udp(&server, &q);
    assert!(m.metadata.truncation, "{m}");
    assert!(m.answers.is_empty(), "{m}");
    let tc = cookie_option(&m).unwrap_or_else(|| panic!("no COOKIE in a TC reply: {m}"));
    assert_echoed(&server, &tc, "the TC reply's cookie");

    // BADVERS (EDNS version 1), over UDP and TCP.
    for tcp in [false, true] {
        let mut q = with_cookie("www.shift.test.", RecordType::A, &CLIENT);
        q.edns.as_mut().unwrap().set_version(1);
        let m = if tcp {
            query_tcp(server.dns, &q)
        } else {
            udp(&server, &q)
        };
        assert_eq!(u16::from(m.metadata.response_code), 16, "BADVERS: {m}");
        let c = cookie_option(&m).unwrap_or_else(|| panic!("no COOKIE in BADVERS: {m}"));
        assert_echoed(&server, &c, "the BADVERS reply's cookie");
    }

    // RRL slips (every limited answer, slip = 1), on the fast path (A) and
    // on the hickory path (ANY), from one socket and a client cookie alone.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(server.dns).unwrap();
    const SENT: usize = 40;
    for i in 0..SENT {
        let t = if i % 2 == 0 {
            RecordType::A
        } else {
            RecordType::ANY
        };
        let q = with_cookie("www.shift.test.", t, &CLIENT);
        sock.send(&q.to_vec().unwrap()).unwrap();
    }
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut slipped = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        let m = Message::from_vec(&buf[..n]).unwrap();
        if m.metadata.truncation {
            assert!(m.answers.is_empty(), "{m}");
            slipped.push((m.queries[0].query_type(), cookie_option(&m)));
        }
    }
    // 2 per second per kind: most of the burst is slipped.
    assert!(slipped.len() >= SENT / 2, "{} slipped", slipped.len());
    for t in [RecordType::A, RecordType::ANY] {
        assert!(
            slipped.iter().any(|(q, _)| *q == t),
            "no {t} answer slipped: {slipped:?}"
        );
    }
    for (t, c) in &slipped {
        let c = c
            .as_ref()
            .unwrap_or_else(|| panic!("no COOKIE in a slipped {t} reply"));
        assert_eq!(c.len(), 24, "{t}");
        assert_eq!(c[..8], CLIENT, "{t}");
    }
    let c = slipped[0].1.clone().unwrap();
    assert_echoed(&server, &c, "a slipped reply's cookie");
}

#[test]
fn cookies_rotate_on_a_single_host_keeps_the_old_cookie_valid_and_a_secret_file_refuses_it() {
    let server = start("");
    let st: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["status", "--json"])).unwrap();
    assert_eq!(st["cookies"]["source"], "random", "{st}");
    assert_eq!(st["cookies"]["previous"], false, "{st}");
    let first = cookie_option(&udp(
        &server,
        &with_cookie("www.shift.test.", RecordType::A, &CLIENT),
    ))
    .unwrap();
    let out = server.cli_ok(&["cookies", "rotate"]);
    assert!(
        out.starts_with("rotated: cookie secret: random, made "),
        "{out}"
    );
    assert!(
        out.contains("next rotation") && out.contains("previous secret accepted"),
        "{out}"
    );
    // Valid under the previous secret, replaced by one of the new.
    let renewed = cookie_option(&udp(
        &server,
        &with_cookie("www.shift.test.", RecordType::A, &first),
    ))
    .unwrap();
    assert_ne!(renewed, first);
    await_cookies(&server, "valid", 1);
    assert_echoed(&server, &renewed, "a cookie of the new secret");
    let st: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["status", "--json"])).unwrap();
    assert_eq!(st["cookies"]["previous"], true, "{st}");
    assert!(
        server.cli_ok(&["status"]).contains("cookie secret: random"),
        "status says where the secret comes from"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "a.secret", SECRET_A);
    let server = start(&format!("[cookies]\nsecret_file = {file:?}\n"));
    let (ok, _, err) = server.cli(&["cookies", "rotate"]);
    assert!(!ok);
    assert!(
        err.contains("the DNS cookie secret is read from [cookies] secret_file: rotate it by hand"),
        "{err}"
    );
    let st: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["status", "--json"])).unwrap();
    assert_eq!(st["cookies"]["source"], "file", "{st}");
    assert!(st["cookies"].get("next_rotation_ms").is_none(), "{st}");
}

#[test]
fn a_rotation_shorter_than_a_cookie_lifetime_fails_check_with_its_one_error() {
    for (extra, line, message) in [
        (
            "[cookies]\nrotate = \"10m\"\n".to_string(),
            8,
            "cookies.rotate: 10m is shorter than 1h, the lifetime of a server cookie: a cookie must stay valid until it expires, under the current or the previous secret",
        ),
        (
            "[cookies]\nrotate = \"2h\"\nsecret_file = \"nowhere\"\n".to_string(),
            8,
            "cookies.rotate: is not used beside cookies.secret_file: a secret read from a file is rotated by hand (a new secret_file, the old one as previous_secret_file, then `dnsshift reload`)",
        ),
    ] {
        let setup = Setup::new(&[("shift.test.toml", &zone())], &extra);
        let out = check_config(setup.dir.path());
        assert!(!out.status.success(), "{extra}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let want = format!("{}:{line}: {message}", setup.config().display());
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with(&setup.config().display().to_string()))
            .collect();
        assert_eq!(errors, [want.as_str()], "{stderr}");
    }
    // One hour is accepted.
    let setup = Setup::new(
        &[("shift.test.toml", &zone())],
        "[cookies]\nrotate = \"1h\"\n",
    );
    let out = check_config(setup.dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
