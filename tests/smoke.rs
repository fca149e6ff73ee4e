#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The shipped example serves, and the harness works end to end.
mod common;

use common::*;
use hickory_proto::rr::RecordType;

#[test]
fn shipped_example_zone_serves_weighted_answers() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/zones/shift.example.com.toml"
    ))
    .unwrap();
    let server = Setup::new(&[("shift.example.com.toml", &example)], "").start();
    let m = server.query("www.shift.example.com.", RecordType::A);
    assert!(m.metadata.authoritative);
    let got = answers(&m);
    assert_eq!(got.len(), 2, "{got:?}");
    // The old pool (127.0.0.10, .11): the only weighted pool of the first phase.
    assert!(got.iter().all(|a| a.starts_with("127.0.0.1")), "{got:?}");
}

#[test]
fn listens_on_several_addresses_ipv4_and_ipv6_udp_and_tcp() {
    let zone = zone_of([ServiceBuilder::unchecked(
        "www",
        &["192.0.2.1"],
        &["192.0.2.2"],
    )]);
    let setup = Setup::new(&[("z.toml", &zone)], "");
    // The harness config listens on 127.0.0.1:0; add [::1] and a second v4 address.
    let config = std::fs::read_to_string(setup.config()).unwrap().replace(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.1:0\", \"[::1]:0\", \"127.0.0.2:0\"]",
    );
    std::fs::write(setup.config(), config).unwrap();
    let server = setup.start();
    let addrs: Vec<(std::net::SocketAddr, std::net::SocketAddr)> = server
        .log
        .lines()
        .iter()
        .filter(|l| is_msg(l, "dns listening"))
        .map(|l| {
            (
                field(l, "udp").unwrap().parse().unwrap(),
                field(l, "tcp").unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(addrs.len(), 3, "{addrs:?}");
    assert!(addrs.iter().any(|(u, _)| u.is_ipv6()));
    for (udp, tcp) in addrs {
        assert_eq!(udp, tcp, "UDP and TCP share the address and port");
        let q = build_query("www.shift.test.", RecordType::A, Some(1232));
        assert_eq!(answers(&query_udp(udp, &q)), ["192.0.2.1"], "UDP {udp}");
        assert_eq!(answers(&query_tcp(tcp, &q)), ["192.0.2.1"], "TCP {tcp}");
    }
}

#[test]
fn version_names_the_package_version_and_the_git_commit() {
    let out = std::process::Command::new(bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // build.rs falls back to "unknown" outside a git checkout.
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("dnsshift {} (commit {commit})", env!("CARGO_PKG_VERSION"))
    );
}
