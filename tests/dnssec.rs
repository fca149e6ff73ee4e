//! Online DNSSEC (issue 20) against real validators: `delv` (bind9-dnsutils)
//! with the zone's DS as its trust anchor, and a validating `unbound` with a
//! stub zone to the server; `dnssec-dsfromkey` (bind9-utils) for the DS.
//! Missing tools fail the tests: `.ci/run` installs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::backend::Backend;
use common::unbound::{self, Unbound};
use common::*;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

const ORIGIN: &str = "shift.test.";

/// Runs a `dnsshift` subcommand without a daemon; its stdout.
fn dnsshift(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(bin())
        .arg("--config")
        .arg(dir.join("dnsshift.toml"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dnsshift {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Makes key `name` in the zones directory; its tag.
fn keygen(setup_dir: &Path, name: &str, algorithm: &str) -> u16 {
    let out = dnsshift(
        setup_dir,
        &[
            "dnssec",
            "keygen",
            "--out",
            setup_dir.join("zones").join(name).to_str().unwrap(),
            "--algorithm",
            algorithm,
        ],
    );
    out.trim().parse().unwrap()
}

/// The zone: static records, a CNAME into the zone, a delegation, a
/// shifted name with a staging name whose `old` pool is health-checked
/// against `backend` (one check decides for the whole pool), a service
/// whose `new` pool is a host name.
fn zone(backend: SocketAddr, dnssec: &str) -> String {
    zone_ttl(backend, dnssec, "1h")
}

/// [`zone`] with the zone TTL (static records, SOA, NS, DNSKEY) `ttl`.
fn zone_ttl(backend: SocketAddr, dnssec: &str, ttl: &str) -> String {
    let health = format!(
        "{{ url = \"http://{backend}/\", fixed_target = true, interval = \"200ms\", timeout = \"100ms\", rise = 1, fall = 1 }}"
    );
    let z = ZoneBuilder::new(ORIGIN)
        .ttl(ttl)
        .record("lb  IN A     203.0.113.7")
        .record("txt IN TXT   \"hello\"")
        .record("docs IN CNAME lb")
        .record("sub IN NS    ns.elsewhere.example.")
        .service(
            ServiceBuilder::new("www")
                .pool_with_health("old", &["192.0.2.1", "192.0.2.2", "192.0.2.3"], &health)
                .pool_with_health(
                    "new",
                    &["2001:db8::1", "198.51.100.1"],
                    "{ kind = \"none\" }",
                )
                .staging("www-next")
                .ttl("30s")
                .max_answers(2)
                .four_phases(),
        )
        .service(ServiceBuilder::to_host(
            "api",
            "192.0.2.30",
            "lb.shift.test.",
        ))
        .to_toml();
    format!("{z}\n[zone.dnssec]\n{dnssec}\n")
}

/// A BIND trust-anchors file with these DS lines (`dnssec ds` output).
fn anchor_file(dir: &Path, ds_lines: &str) -> std::path::PathBuf {
    let mut text = String::from("trust-anchors {\n");
    for l in ds_lines.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        // origin IN DS tag alg digest-type digest
        text.push_str(&format!(
            "  {} static-ds {} {} {} \"{}\";\n",
            f[0], f[3], f[4], f[5], f[6]
        ));
    }
    text.push_str("};\n");
    let p = dir.join("anchor.conf");
    std::fs::write(&p, text).unwrap();
    p
}

/// `delv` against the server with the zone's anchor: its whole output.
fn delv(server: &Server, anchor: &Path, name: &str, rtype: &str) -> String {
    let out = Command::new("delv")
        .arg("@127.0.0.1")
        .args(["-p", &server.dns.port().to_string()])
        .arg("-a")
        .arg(anchor)
        .arg(format!("+root={ORIGIN}"))
        .args([name, rtype])
        .output()
        .unwrap_or_else(|e| panic!("cannot run delv ({e}): install bind9-dnsutils"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_validated(server: &Server, anchor: &Path, name: &str, rtype: &str, negative: bool) {
    let out = delv(server, anchor, name, rtype);
    let want = if negative {
        "; negative response, fully validated"
    } else {
        "; fully validated"
    };
    assert!(
        out.lines().any(|l| l == want),
        "{name} {rtype}: want {want:?}:\n{out}"
    );
}

/// Either validated positive answer or validated NODATA.
fn assert_validated_any(server: &Server, anchor: &Path, name: &str, rtype: &str) {
    let out = delv(server, anchor, name, rtype);
    assert!(
        out.lines()
            .any(|l| l == "; fully validated" || l == "; negative response, fully validated"),
        "{name} {rtype}: not validated:\n{out}"
    );
}

fn start_signed(dnssec_keys: &str, key_names: &[&str], backend: SocketAddr) -> (Server, Vec<u16>) {
    let setup = Setup::new(&[], "");
    let tags = key_names
        .iter()
        .map(|k| keygen(setup.dir.path(), k, "ecdsap256sha256"))
        .collect();
    setup.write_zone("shift.test.toml", &zone(backend, dnssec_keys));
    (setup.start(), tags)
}

/// The A/AAAA addresses dnsshift answers for `name` now (DO=0).
fn addresses(server: &Server, name: &str) -> Vec<String> {
    let mut all = answers(&server.query(name, RecordType::A));
    all.extend(answers(&server.query(name, RecordType::AAAA)));
    all
}

#[test]
fn delv_validates_every_phase_and_health_variant_and_negative_answers() {
    let mut backend = Backend::http("127.0.0.1:0");
    let (server, _) = start_signed("keys = [\"k1.pem\"]", &["k1.pem"], backend.addr);
    let ds = server.cli_ok(&["dnssec", "ds", ORIGIN]);
    let anchor = anchor_file(server.path(), &ds);

    // Static data, the apex sets, the marker, a CNAME chain.
    for (name, rtype) in [
        ("lb.shift.test", "A"),
        ("txt.shift.test", "TXT"),
        ("docs.shift.test", "A"),
        ("shift.test", "SOA"),
        ("shift.test", "NS"),
        ("shift.test", "DNSKEY"),
        ("shift.test", "CDS"),
        ("shift.test", "CDNSKEY"),
        ("_dnsshift.shift.test", "TXT"),
    ] {
        assert_validated(&server, &anchor, name, rtype, false);
    }
    // NXDOMAIN (before, between and after names; below a name; below the
    // apex's last name) and NODATA (static, apex, shifted, delegation DS).
    for name in [
        "nope.shift.test",
        "aaa.shift.test",
        "zzzz.shift.test",
        "a.b.www.shift.test",
        "x.lb.shift.test",
    ] {
        assert_validated(&server, &anchor, name, "A", true);
    }
    for (name, rtype) in [
        ("lb.shift.test", "TXT"),
        ("lb.shift.test", "AAAA"),
        ("shift.test", "MX"),
        ("www.shift.test", "MX"),
        ("www.shift.test", "TXT"),
        ("sub.shift.test", "DS"),
        ("api.shift.test", "MX"),
    ] {
        assert_validated(&server, &anchor, name, rtype, true);
    }

    // Every phase, with the old pool healthy and then down: the shifted
    // name (several draws per family), the staging name, the marker.
    let phases = ["separate-domain", "ten", "half", "cutover"];
    let mut up = true;
    for (i, phase) in phases.iter().enumerate() {
        if i > 0 {
            server.cli_ok(&["advance", "www", "--to", phase, "--force"]);
        }
        for healthy in [true, false] {
            if healthy != up {
                if healthy {
                    backend.restart();
                } else {
                    backend.stop();
                }
                up = healthy;
            }
            // Wait for the old pool's state to show in the answers.
            let shows = poll(Duration::from_secs(10), Duration::from_millis(50), || {
                let mut seen = Vec::new();
                for _ in 0..30 {
                    seen.extend(addresses(&server, "www.shift.test."));
                }
                let old = seen.iter().any(|a| a.starts_with("192.0.2."));
                (old == (healthy && *phase != "cutover")).then_some(())
            });
            assert!(shows.is_some(), "{phase}, healthy {healthy}: answers");
            for _ in 0..6 {
                assert_validated_any(&server, &anchor, "www.shift.test", "A");
                assert_validated_any(&server, &anchor, "www.shift.test", "AAAA");
            }
            assert_validated_any(&server, &anchor, "www-next.shift.test", "A");
            assert_validated_any(&server, &anchor, "www-next.shift.test", "AAAA");
            assert_validated(&server, &anchor, "_dnsshift.shift.test", "TXT", false);
            assert_validated(&server, &anchor, "api.shift.test", "A", false);
        }
    }
    // Back through a rollback.
    server.cli_ok(&["rollback", "www"]);
    assert_validated_any(&server, &anchor, "www.shift.test", "A");

    // A wrong anchor is not trusted.
    let wrong = ds.replace(&ds.trim()[ds.trim().len() - 4..], "0000");
    let bad = anchor_file(&server.path().join("zones"), &wrong);
    let out = delv(&server, &bad, "lb.shift.test", "A");
    assert!(!out.contains("fully validated"), "{out}");
}

#[test]
fn dnssec_ds_equals_dnssec_dsfromkey_of_the_served_dnskey() {
    let backend = Backend::http("127.0.0.1:0");
    for alg in ["ecdsap256sha256", "ed25519"] {
        let setup = Setup::new(&[], "");
        keygen(setup.dir.path(), "k.pem", alg);
        setup.write_zone("shift.test.toml", &zone(backend.addr, "keys = [\"k.pem\"]"));
        let ours = dnsshift(setup.dir.path(), &["dnssec", "ds", ORIGIN]);
        let server = setup.start();
        let m = server.query(ORIGIN, RecordType::DNSKEY);
        let key_lines: String = m
            .answers
            .iter()
            .map(|r| format!("{} {} IN DNSKEY {}\n", r.name, r.ttl, r.data))
            .collect();
        assert!(!key_lines.is_empty(), "no DNSKEY served");
        let file = server.path().join("dnskey.zone");
        std::fs::write(&file, &key_lines).unwrap();
        let out = Command::new("dnssec-dsfromkey")
            .args(["-2", "-f"])
            .arg(&file)
            .arg(ORIGIN)
            .output()
            .unwrap_or_else(|e| panic!("cannot run dnssec-dsfromkey ({e}): install bind9-utils"));
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            ours.trim(),
            "{alg}"
        );
        // The keys and tags from the daemon.
        let st = server.cli_ok(&["dnssec", "status"]);
        let tag = ours.split_whitespace().nth(3).unwrap();
        assert!(
            st.contains(tag) && st.contains("active") && st.contains(alg),
            "{st}"
        );
        let json = server.cli_ok(&["dnssec", "status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(v["zones"][0]["signatures"].as_u64().unwrap() > 5, "{json}");
        assert!(
            v["zones"][0]["earliest_expiry"].as_u64().is_some(),
            "{json}"
        );
    }
}

#[test]
fn without_do_answers_are_unchanged_and_do_answers_carry_signatures() {
    let backend = Backend::http("127.0.0.1:0");
    let (server, _) = start_signed("keys = [\"k1.pem\"]", &["k1.pem"], backend.addr);
    let query = |name: &str, t: RecordType, dnssec_ok: bool, size: u16| {
        let mut m = build_query(name, t, Some(size));
        let mut e = Edns::new();
        e.set_max_payload(size);
        e.set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
        query_udp(server.dns, &m)
    };
    let plain = query("lb.shift.test.", RecordType::A, false, 1232);
    assert!(
        plain
            .answers
            .iter()
            .all(|r| r.record_type() == RecordType::A)
    );
    assert!(!plain.edns.as_ref().unwrap().flags().dnssec_ok);
    let signed = query("lb.shift.test.", RecordType::A, true, 1232);
    assert!(signed.edns.as_ref().unwrap().flags().dnssec_ok);
    assert!(
        signed
            .answers
            .iter()
            .any(|r| r.record_type() == RecordType::RRSIG)
    );
    let nx = query("nope.shift.test.", RecordType::A, true, 1232);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    let nsec = nx
        .authorities
        .iter()
        .filter(|r| r.record_type() == RecordType::NSEC)
        .count();
    assert!((1..=2).contains(&nsec), "{nx:?}");
    let nx_plain = query("nope.shift.test.", RecordType::A, false, 1232);
    assert_eq!(nx_plain.authorities.len(), 1, "DO=0: the SOA only");
    // A signed answer that does not fit the client's 512 bytes is
    // truncated (TC, no partial sections), and complete over TCP.
    let long =
        "a-rather-long-label-to-fill-the-packet.another-long-label-to-fill-it.nope.shift.test.";
    let small = query(long, RecordType::A, true, 512);
    let len = small.to_vec().unwrap().len();
    assert!(len <= 512, "{len}");
    let mut m = build_query(long, RecordType::A, Some(1232));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.set_dnssec_ok(true);
    m.set_edns(e);
    let whole = query_tcp(server.dns, &m);
    assert_eq!(whole.metadata.response_code, ResponseCode::NXDomain);
    let whole_len = whole.to_vec().unwrap().len();
    if whole_len > 512 {
        assert!(
            small.metadata.truncation,
            "{whole_len} bytes over TCP, no TC on UDP"
        );
        assert!(small.answers.is_empty() && small.authorities.is_empty());
    }
    assert!(
        whole
            .authorities
            .iter()
            .any(|r| r.record_type() == RecordType::RRSIG)
    );
}

// ---------------------------------------------------------------- unbound

/// A validating unbound with `ds_lines` as the zone's trust anchor and a
/// stub zone to `server`; `override_date` moves its validation clock.
fn start_unbound(server: SocketAddr, ds_lines: &str, override_date: Option<&str>) -> Unbound {
    let date = override_date
        .map(|d| format!("    val-override-date: \"{d}\"\n"))
        .unwrap_or_default();
    let extra = format!(
        r#"    trust-anchor-file: "{{dir}}/anchor.ds"
    val-log-level: 2
    # unbound answers the special-use "test." itself unless told not to.
    local-zone: "test." nodefault
{date}"#
    );
    let conf = unbound::Conf {
        ip: "127.0.0.1",
        zone: ORIGIN,
        stubs: &[server],
        modules: "validator iterator",
        files: &[("anchor.ds", ds_lines)],
        extra: &extra,
    };
    unbound::start(&conf, |addr| {
        resolve(addr, "lb.shift.test.", RecordType::A).is_ok()
    })
}

/// Asks the resolver (RD, AD); the answer's rcode, AD bit and addresses.
fn resolve(
    resolver: SocketAddr,
    name: &str,
    rtype: RecordType,
) -> Result<(ResponseCode, bool, Vec<String>), String> {
    let mut q = Message::new(fastrand::u16(..), MessageType::Query, OpCode::Query);
    q.metadata.recursion_desired = true;
    q.metadata.authentic_data = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    sock.send_to(&q.to_vec().unwrap(), resolver)
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).map_err(|e| e.to_string())?;
    let m = Message::from_vec(&buf[..n]).map_err(|e| e.to_string())?;
    Ok((
        m.metadata.response_code,
        m.metadata.authentic_data,
        answers(&m),
    ))
}

/// Asserts that unbound validates `name`: NOERROR with AD.
fn assert_ad(u: &Unbound, name: &str, rtype: RecordType) -> Vec<String> {
    let (rcode, ad, addrs) = resolve(u.addr, name, rtype).unwrap();
    assert!(
        rcode == ResponseCode::NoError && ad,
        "{name} {rtype}: {rcode} ad={ad} {addrs:?}"
    );
    addrs
}

/// Unbound validates through a phase change, a health change and a
/// rollback; it refuses a wrong anchor and signatures outside their window.
#[test]
fn unbound_validates_throughout_changes_and_refuses_bad_anchor_and_expiry() {
    let mut backend = Backend::http("127.0.0.1:0");
    let (server, _) = start_signed("keys = [\"k1.pem\"]", &["k1.pem"], backend.addr);
    let ds = server.cli_ok(&["dnssec", "ds", ORIGIN]);
    let u = start_unbound(server.dns, &ds, None);
    assert_ad(&u, "lb.shift.test.", RecordType::A);
    assert_ad(&u, "www.shift.test.", RecordType::A);
    let (rcode, ad, _) = resolve(u.addr, "nope.shift.test.", RecordType::A).unwrap();
    assert!(rcode == ResponseCode::NXDomain && ad, "{rcode} {ad}");

    // Phase change, health change, rollback: AD on every answer. The TTL
    // is 30 s: each step queries fresh names' data through new lookups.
    server.cli_ok(&["advance", "www", "--to", "half", "--force"]);
    assert_ad(&u, "www-next.shift.test.", RecordType::A);
    backend.stop();
    assert_ad(&u, "www.shift.test.", RecordType::AAAA);
    backend.restart();
    server.cli_ok(&["rollback", "www"]);
    assert_ad(&u, "api.shift.test.", RecordType::A);
    assert_ad(&u, "_dnsshift.shift.test.", RecordType::TXT);
    drop(u);

    // A wrong anchor: SERVFAIL.
    let f: Vec<&str> = ds.split_whitespace().collect();
    let wrong = format!("{} IN DS {} {} 2 {}\n", f[0], f[3], f[4], "00".repeat(32));
    let u = start_unbound_expect_servfail(server.dns, &wrong, None);
    drop(u);

    // The clock past the signatures' expiry (15 days ahead): SERVFAIL;
    // a day ahead, inside the window: AD.
    let at = |days: u64| {
        let t = std::time::SystemTime::now() + Duration::from_secs(days * 86_400);
        let s = humantime::format_rfc3339_seconds(t).to_string();
        // 2026-12-02T21:00:00Z -> 20261202210000
        s.chars().filter(|c| c.is_ascii_digit()).collect::<String>()
    };
    let late = at(15);
    drop(start_unbound_expect_servfail(server.dns, &ds, Some(&late)));
    let inside = at(1);
    let u = start_unbound(server.dns, &ds, Some(&inside));
    assert_ad(&u, "www.shift.test.", RecordType::A);
}

/// Unbound that answers SERVFAIL for the zone's data.
fn start_unbound_expect_servfail(
    server: SocketAddr,
    ds_lines: &str,
    override_date: Option<&str>,
) -> Unbound {
    // start_unbound waits for any answer; SERVFAIL is one.
    let u = start_unbound(server, ds_lines, override_date);
    for name in ["lb.shift.test.", "www.shift.test."] {
        let (rcode, ad, _) = resolve(u.addr, name, RecordType::A).unwrap();
        assert!(
            rcode == ResponseCode::ServFail && !ad,
            "{name}: want SERVFAIL, got {rcode} ad={ad}"
        );
    }
    u
}

/// RFC 7583 pre-publication with a double DS at the parent: publish the
/// new key, make it the signer (old one published), retire the old one.
/// Unbound, trusting both DS, validates at every step; every step waits
/// out the DNSKEY TTL (1 s here) before the next.
#[test]
fn rollover_publish_activate_retire_keeps_unbound_validating() {
    let backend = Backend::http("127.0.0.1:0");
    let setup = Setup::new(&[], "");
    let dir = setup.dir.path().to_path_buf();
    keygen(&dir, "old.pem", "ecdsap256sha256");
    keygen(&dir, "new.pem", "ecdsap256sha256");
    let with_ttl = |dnssec: &str| zone_ttl(backend.addr, dnssec, "1s");
    setup.write_zone("shift.test.toml", &with_ttl("keys = [\"old.pem\"]"));
    let server = setup.start();
    let ds_old = server.cli_ok(&["dnssec", "ds", ORIGIN]);
    // The new key's DS, as the parent will publish it beside the old one.
    std::fs::write(
        dir.join("zones/shift.test.toml"),
        with_ttl("keys = [\"new.pem\"]\npublish = [\"old.pem\"]"),
    )
    .unwrap();
    let ds_new = dnsshift(&dir, &["dnssec", "ds", ORIGIN]);
    assert_ne!(ds_old, ds_new);
    std::fs::write(
        dir.join("zones/shift.test.toml"),
        with_ttl("keys = [\"old.pem\"]"),
    )
    .unwrap();
    let u = start_unbound(server.dns, &format!("{ds_old}{ds_new}"), None);
    let steps = [
        "keys = [\"old.pem\"]\npublish = [\"new.pem\"]",
        "keys = [\"new.pem\"]\npublish = [\"old.pem\"]",
        "keys = [\"new.pem\"]",
    ];
    assert_ad(&u, "lb.shift.test.", RecordType::A);
    for step in steps {
        std::fs::write(dir.join("zones/shift.test.toml"), with_ttl(step)).unwrap();
        server.cli_ok(&["reload"]);
        // Validating all the time across the DNSKEY TTL (and more).
        let until = std::time::Instant::now() + Duration::from_millis(2500);
        let mut n = 0;
        while std::time::Instant::now() < until {
            assert_ad(&u, "lb.shift.test.", RecordType::A);
            assert_ad(&u, "shift.test.", RecordType::DNSKEY);
            n += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(n >= 5);
        let st = server.cli_ok(&["dnssec", "status"]);
        assert!(st.contains("active"), "{st}");
    }
    // The old key is gone from the DNSKEY set.
    let m = server.query(ORIGIN, RecordType::DNSKEY);
    assert_eq!(m.answers.len(), 1, "{m:?}");
}

#[test]
fn a_key_file_others_can_read_stops_the_start_with_the_fix() {
    let backend = Backend::http("127.0.0.1:0");
    let setup = Setup::new(&[], "");
    keygen(setup.dir.path(), "k.pem", "ecdsap256sha256");
    let key = setup.dir.path().join("zones/k.pem");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    setup.write_zone("shift.test.toml", &zone(backend.addr, "keys = [\"k.pem\"]"));
    let err = serve_must_fail(setup.dir.path());
    assert!(
        err.contains("zone.dnssec.keys")
            && err.contains("mode 0644")
            && err.contains(&format!("chmod 600 {}", key.display())),
        "{err}"
    );
}

/// `check` warns when a rollover step comes sooner than the DNSKEY TTL
/// (new key signing) or the TTL plus the signature lifetime (old key
/// removed) allows, from the key history the daemon keeps.
#[test]
fn check_warns_about_rollover_steps_that_come_too_soon() {
    let backend = Backend::http("127.0.0.1:0");
    let setup = Setup::new(&[], "");
    let dir = setup.dir.path().to_path_buf();
    let old = keygen(&dir, "old.pem", "ecdsap256sha256");
    let new = keygen(&dir, "new.pem", "ed25519");
    let write = |dnssec: &str| {
        std::fs::write(
            dir.join("zones/shift.test.toml"),
            zone(backend.addr, dnssec),
        )
        .unwrap()
    };
    write("keys = [\"old.pem\"]");
    let server = setup.start();
    let check = || {
        let out = Command::new(bin())
            .arg("--config")
            .arg(dir.join("dnsshift.toml"))
            .arg("check")
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(!check().contains("DNSKEY"), "{}", check());
    // Step 1, publish: fine at once.
    write("keys = [\"old.pem\"]\npublish = [\"new.pem\"]");
    assert!(!check().contains("DNSKEY"), "{}", check());
    server.cli_ok(&["reload"]);
    // Step 2 right away: the new key has been published for less than the
    // DNSKEY TTL (1h).
    write("keys = [\"new.pem\"]\npublish = [\"old.pem\"]");
    let w = check();
    assert!(
        w.contains(&format!(
            "key {new} would sign now, but it has been in the DNSKEY set only for"
        )) && w.contains("DNSKEY TTL (1h)"),
        "{w}"
    );
    server.cli_ok(&["reload"]);
    // Step 3 right away: the old key signed until just now.
    write("keys = [\"new.pem\"]");
    let w = check();
    assert!(
        w.contains(&format!(
            "key {old} would leave the DNSKEY set, but it signed until"
        )),
        "{w}"
    );
    // Skipping step 1: a key never published.
    let third = keygen(&dir, "third.pem", "ecdsap256sha256");
    write("keys = [\"third.pem\"]\npublish = [\"new.pem\"]");
    let w = check();
    assert!(
        w.contains(&format!(
            "key {third} would sign now, but it has been in the DNSKEY set never"
        )),
        "{w}"
    );
}
