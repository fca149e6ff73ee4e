//! What the validated zone and server keys mean at run time, through the
//! real binary: bare integers are seconds (zone TTLs, health intervals,
//! `tcp_idle_timeout`), the default timeout fits a short interval, a
//! relative `ca_file` is found beside the zone file whatever the working
//! directory, and `fixed_target = true` checks one URL for every endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::backend::{Backend, self_signed};
use common::*;
use hickory_proto::rr::RecordType;

/// The health of the `new` pools here: not checked.
const UNCHECKED: &str = r#"{ kind = "none" }"#;

/// Bound on waiting for every endpoint's first health result.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(15);

/// `(endpoint, checked, healthy)` of every endpoint of the `old` pool of
/// `service` in `status --json` (the `new` pools here are not checked).
fn endpoints(server: &Server, service: &str) -> Vec<(String, bool, bool)> {
    let out = server.cli_ok(&["status", service, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut all = Vec::new();
    for s in v["services"].as_array().unwrap() {
        for p in s["pools"].as_array().unwrap() {
            if p["pool"] != "old" {
                continue;
            }
            for e in p["endpoints"].as_array().unwrap() {
                all.push((
                    e["endpoint"].as_str().unwrap().to_string(),
                    e["checked"].as_bool().unwrap(),
                    e["healthy"].as_bool().unwrap(),
                ));
            }
        }
    }
    all
}

/// Waits until every `old` endpoint of `service` has a health result;
/// returns them.
fn checked(server: &Server, service: &str) -> Vec<(String, bool, bool)> {
    poll(HEALTH_TIMEOUT, Duration::from_millis(100), || {
        let all = endpoints(server, service);
        all.iter().all(|(_, c, _)| *c).then_some(all)
    })
    .unwrap_or_else(|| panic!("{service}: not every endpoint was checked in time"))
}

#[test]
fn bare_integers_are_seconds_in_zone_files_and_dnsshift_toml() {
    let backend = Backend::http("127.0.0.1:0");
    let port = backend.addr.port();
    // interval = 1 without a timeout: the default timeout (2s) used to be
    // longer than such an interval; now it is half of it.
    let zone = ZoneBuilder::new("shift.test.")
        .set("ttl", "600")
        .set("negative_ttl", "45")
        .service(
            ServiceBuilder::new("www")
                .set("ttl", "7")
                .pool("old", &["127.0.0.1"])
                .pool_with_health("new", &["198.51.100.20"], UNCHECKED)
                .health_http(&format!("http://{{endpoint}}:{port}/healthz"))
                .health("interval", "1"),
        )
        .to_toml();
    let server = Setup::new(&[("shift.toml", &zone)], "tcp_idle_timeout = 1\n").start();

    let m = server.query("www.shift.test.", RecordType::A);
    assert_eq!(answers(&m), ["127.0.0.1"], "{m:?}");
    assert_eq!(m.answers[0].ttl, 7);
    let m = server.query("ns1.shift.test.", RecordType::A);
    assert_eq!(m.answers[0].ttl, 600);
    let www = checked(&server, "www");
    assert!(www.iter().all(|(_, _, h)| *h), "{www:?}");
    // Probes come about once a second.
    let first = backend.seen().len();
    assert!(first >= 1);
    let more = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        (backend.seen().len() >= first + 2).then_some(())
    });
    assert!(more.is_some(), "no probes after the first");

    // An idle TCP connection is closed after 1 s, not the default 10 s.
    let mut conn = TcpStream::connect(server.dns).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 1];
    let n = conn
        .read(&mut buf)
        .expect("the server closes the idle connection");
    assert_eq!(n, 0, "EOF");
    let idle = start.elapsed();
    assert!(idle < Duration::from_secs(5), "closed after {idle:?}");
}

#[test]
fn relative_ca_file_is_beside_the_zone_and_fixed_target_checks_one_url() {
    let name = "lb.shift.test";
    let (tls, pem) = self_signed(name);
    let backend = Backend::https("127.0.0.1:0", tls);
    let port = backend.addr.port();
    // Checked over HTTPS as `name`, trusting the CA beside the zone file.
    let tls = |service: &str, old: &[&str], url: &str| {
        ServiceBuilder::new(service)
            .pool("old", old)
            .pool_with_health("new", &["198.51.100.20"], UNCHECKED)
            .health_http(url)
            .health("host", quoted(name))
            .health("ca_file", quoted("certs/ca.pem"))
            .health("interval", quoted("500ms"))
    };
    let zone = ZoneBuilder::new("shift.test.")
        .service(tls(
            "www",
            &["127.0.0.1"],
            &format!("https://{{endpoint}}:{port}/healthz"),
        ))
        .service(
            tls(
                "api",
                &["192.0.2.10", "192.0.2.11"],
                &format!("https://127.0.0.1:{port}/ready"),
            )
            .health("fixed_target", "true"),
        )
        .to_toml();
    let setup = Setup::new(&[("shift.toml", &zone)], "");
    let certs = setup.dir.path().join("zones/certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::write(certs.join("ca.pem"), &pem).unwrap();
    // The server runs in the setup directory, not in zones/: the CA is
    // found relative to the zone file.
    let server = setup.start();

    let www = checked(&server, "www");
    assert_eq!(www[0], ("127.0.0.1".to_string(), true, true), "{www:?}");
    // Both api endpoints are judged by the one fixed URL (their own
    // addresses are never contacted).
    let api = checked(&server, "api");
    let old: Vec<_> = api
        .iter()
        .filter(|(e, _, _)| e.starts_with("192.0.2."))
        .collect();
    assert_eq!(old.len(), 2, "{api:?}");
    assert!(old.iter().all(|(_, _, h)| *h), "{api:?}");
    let seen = backend.seen();
    assert!(seen.iter().any(|s| s.path == "/ready"), "{seen:?}");
    assert!(seen.iter().any(|s| s.path == "/healthz"), "{seen:?}");
    assert!(
        seen.iter().all(|s| s.sni.as_deref() == Some(name)),
        "{seen:?}"
    );

    let m = server.query("api.shift.test.", RecordType::A);
    let mut got = answers(&m);
    got.sort();
    assert_eq!(got, ["192.0.2.10", "192.0.2.11"], "{m:?}");
}
