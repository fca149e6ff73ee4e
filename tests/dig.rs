//! A real DNS tool against the server: `dig` (Debian's bind9-dnsutils, which
//! `.ci/run` installs) queries over UDP and TCP and its output is parsed and
//! checked. A missing `dig` fails the tests: it is a requirement, not an option.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;

/// 16 AAAA records under this name are 529 bytes: above plain DNS's 512.
const LONG: &str = "a-very-long-service-name-to-push-the-answer-past-512";

fn zone() -> String {
    ZoneBuilder::new("shift.test.")
        .record("lb  IN A     203.0.113.7")
        .service(
            ServiceBuilder::www(&WWW[..3], &WWW[3..])
                .initial_phase("half")
                .phase("separate-domain", &[("old", 100), ("new", 0)])
                .phase("half", &[("old", 50), ("new", 50)]),
        )
        .service(
            ServiceBuilder::to_host("api", "192.0.2.30", "lb.shift.test.")
                .staging("api-next")
                .ttl("20s"),
        )
        .service(ServiceBuilder::many_aaaa(LONG, 16))
        .to_toml()
}

/// One resource record line of dig's output.
#[derive(Debug, Clone, PartialEq)]
struct Rr {
    name: String,
    ttl: u32,
    class: String,
    rtype: String,
    data: String,
}

/// What we read from dig's output.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    edns_version: Option<u8>,
    /// The NSID option as dig prints it in text (`("...")`).
    nsid: Option<String>,
    answer: Vec<Rr>,
    authority: Vec<Rr>,
    additional: Vec<Rr>,
    /// "UDP" or "TCP", from the ";; SERVER:" line.
    transport: String,
    text: String,
}

impl Dig {
    fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }

    fn answer_data(&self) -> Vec<String> {
        self.answer.iter().map(|r| r.data.clone()).collect()
    }
}

/// Runs dig against the server with bounded waiting; panics with its output
/// unless it exits 0.
fn dig(server: &Server, args: &[&str]) -> Dig {
    let out = Command::new("dig")
        .arg("@127.0.0.1")
        .args(["-p", &server.dns.port().to_string()])
        .args(["+time=5", "+tries=1"])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `dig` ({e}): these tests need it; install bind9-dnsutils \
                 (Debian/Ubuntu: apt-get install bind9-dnsutils; .ci/run does this)"
            )
        });
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dig {args:?} failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&text)
}

/// Parses dig's default output. When dig retries (TC, BADVERS), the last
/// response printed is the one read.
fn parse(text: &str) -> Dig {
    let last = text
        .rfind(";; Got answer:")
        .unwrap_or_else(|| panic!("no answer in dig output:\n{text}"));
    let body = &text[last..];
    let mut d = Dig {
        status: String::new(),
        flags: Vec::new(),
        edns_version: None,
        nsid: None,
        answer: Vec::new(),
        authority: Vec::new(),
        additional: Vec::new(),
        transport: String::new(),
        text: text.to_string(),
    };
    let mut section: Option<&str> = None;
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix(";; ->>HEADER<<- ") {
            let status = rest
                .split(", ")
                .find_map(|p| p.strip_prefix("status: "))
                .unwrap_or_else(|| panic!("no status in {line:?}"));
            d.status = status.to_string();
        } else if let Some(rest) = line.strip_prefix(";; flags:") {
            let flags = rest.split(';').next().unwrap_or("");
            d.flags = flags.split_whitespace().map(str::to_string).collect();
        } else if let Some(rest) = line.strip_prefix("; EDNS: version: ") {
            let v = rest.split(',').next().unwrap_or("");
            d.edns_version = Some(v.trim().parse().unwrap());
        } else if let Some(rest) = line.strip_prefix("; NSID: ") {
            let text = rest
                .rsplit_once("(\"")
                .map(|(_, t)| t.trim_end_matches("\")"));
            d.nsid = Some(text.unwrap_or(rest).to_string());
        } else if let Some(rest) = line.strip_prefix(";; SERVER: ") {
            d.transport = rest
                .rsplit_once('(')
                .map(|(_, t)| t.trim_end_matches(')').to_string())
                .unwrap_or_default();
        } else if let Some(name) = line
            .strip_prefix(";; ")
            .and_then(|l| l.strip_suffix(" SECTION:"))
        {
            section = Some(match name {
                "ANSWER" => "answer",
                "AUTHORITY" => "authority",
                "ADDITIONAL" => "additional",
                _ => "other",
            });
        } else if line.trim().is_empty() {
            section = None;
        } else if !line.starts_with(';')
            && let Some(s) = section
        {
            let mut f = line.split_whitespace();
            let rr = Rr {
                name: f.next().unwrap().to_string(),
                ttl: f.next().unwrap().parse().unwrap(),
                class: f.next().unwrap().to_string(),
                rtype: f.next().unwrap().to_string(),
                data: f.collect::<Vec<_>>().join(" "),
            };
            match s {
                "answer" => d.answer.push(rr),
                "authority" => d.authority.push(rr),
                "additional" => d.additional.push(rr),
                _ => {}
            }
        }
    }
    assert!(!d.status.is_empty(), "no header in dig output:\n{text}");
    d
}

fn start() -> Server {
    Setup::new(&[("shift.test.toml", &zone())], "").start()
}

const WWW: [&str; 5] = [
    "192.0.2.10",
    "192.0.2.11",
    "192.0.2.12",
    "198.51.100.20",
    "198.51.100.21",
];

/// The checks shared by the UDP and TCP runs of an A query for www.
fn check_www(d: &Dig) {
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    assert!(d.has_flag("qr") && d.has_flag("aa"), "{}", d.text);
    assert!(!d.has_flag("rd") && !d.has_flag("ra"), "{}", d.text);
    assert!(!d.has_flag("tc"), "{}", d.text);
    assert_eq!(d.edns_version, Some(0), "{}", d.text);
    assert_eq!(d.answer.len(), 2, "{}", d.text);
    for rr in &d.answer {
        assert_eq!(rr.name, "www.shift.test.");
        assert_eq!(rr.ttl, 30);
        assert_eq!(rr.class, "IN");
        assert_eq!(rr.rtype, "A");
        assert!(WWW.contains(&rr.data.as_str()), "{}", d.text);
    }
    let a = d.answer_data();
    assert_ne!(a[0], a[1], "{}", d.text);
    // One pool per answer.
    assert_eq!(
        a[0].starts_with("192.0.2."),
        a[1].starts_with("192.0.2."),
        "{}",
        d.text
    );
    assert!(d.authority.is_empty(), "{}", d.text);
}

#[test]
fn dig_a_over_udp_and_tcp() {
    let server = start();
    let d = dig(&server, &["www.shift.test", "A", "+norec"]);
    check_www(&d);
    assert_eq!(d.transport, "UDP", "{}", d.text);
    let d = dig(&server, &["www.shift.test", "A", "+norec", "+tcp"]);
    check_www(&d);
    assert_eq!(d.transport, "TCP", "{}", d.text);
    // Without EDNS too; and the name in another case.
    let d = dig(&server, &["WWW.Shift.Test", "A", "+norec", "+noedns"]);
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    assert_eq!(d.edns_version, None, "{}", d.text);
    assert_eq!(d.answer.len(), 2, "{}", d.text);

    // The staging name, and a host-name pool with its in-zone target.
    let d = dig(&server, &["www-next.shift.test", "A", "+norec"]);
    let mut got = d.answer_data();
    got.sort();
    assert_eq!(got, ["198.51.100.20", "198.51.100.21"], "{}", d.text);
    let d = dig(&server, &["api-next.shift.test", "A", "+norec"]);
    assert_eq!(
        d.answer,
        [
            Rr {
                name: "api-next.shift.test.".into(),
                ttl: 20,
                class: "IN".into(),
                rtype: "CNAME".into(),
                data: "lb.shift.test.".into(),
            },
            Rr {
                name: "lb.shift.test.".into(),
                ttl: 3600,
                class: "IN".into(),
                rtype: "A".into(),
                data: "203.0.113.7".into(),
            },
        ],
        "{}",
        d.text
    );
}

#[test]
fn dig_negative_answers_carry_the_soa() {
    let server = start();
    for tcp in [false, true] {
        let mut args = vec!["nope.shift.test", "A", "+norec"];
        if tcp {
            args.push("+tcp");
        }
        let d = dig(&server, &args);
        assert_eq!(d.status, "NXDOMAIN", "{}", d.text);
        assert!(d.has_flag("aa"), "{}", d.text);
        assert!(d.answer.is_empty(), "{}", d.text);
        assert_eq!(d.authority.len(), 1, "{}", d.text);
        let soa = &d.authority[0];
        assert_eq!(soa.name, "shift.test.");
        assert_eq!(soa.rtype, "SOA");
        assert_eq!(soa.ttl, 45, "negative TTL: {}", d.text);
        let f: Vec<&str> = soa.data.split_whitespace().collect();
        assert_eq!(f.len(), 7, "{}", d.text);
        assert_eq!(f[0], "ns1.shift.test.");
        assert_eq!(f[1], "hostmaster.shift.test.");
        assert_eq!(f[6], "45", "SOA minimum: {}", d.text);
    }
    // NODATA: the name exists, the type does not.
    let d = dig(&server, &["lb.shift.test", "AAAA", "+norec"]);
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    assert!(d.has_flag("aa"), "{}", d.text);
    assert!(d.answer.is_empty(), "{}", d.text);
    assert_eq!(d.authority.len(), 1, "{}", d.text);
    assert_eq!(d.authority[0].rtype, "SOA");
    assert_eq!(d.authority[0].ttl, 45);

    let d = dig(&server, &["example.org", "A", "+norec"]);
    assert_eq!(d.status, "REFUSED", "{}", d.text);
    assert!(!d.has_flag("aa"), "{}", d.text);
}

#[test]
fn dig_apex_soa_and_ns() {
    let server = start();
    let d = dig(&server, &["shift.test", "NS", "+norec"]);
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    assert!(d.has_flag("aa"), "{}", d.text);
    assert_eq!(d.answer.len(), 1, "{}", d.text);
    assert_eq!(d.answer[0].data, "ns1.shift.test.");
    assert_eq!(d.answer[0].ttl, 3600);
    assert_eq!(d.additional.len(), 1, "glue: {}", d.text);
    assert_eq!(d.additional[0].name, "ns1.shift.test.");
    assert_eq!(d.additional[0].data, "127.0.0.53");
    let d = dig(&server, &["shift.test", "SOA", "+norec", "+tcp"]);
    assert_eq!(d.answer.len(), 1, "{}", d.text);
    assert_eq!(d.answer[0].rtype, "SOA");
    assert_eq!(d.answer[0].ttl, 3600);
}

#[test]
fn dig_retries_a_truncated_answer_over_tcp() {
    let server = start();
    let name = format!("{LONG}.shift.test");
    // +ignore: show the truncated UDP answer as it is.
    let d = dig(&server, &[&name, "AAAA", "+norec", "+noedns", "+ignore"]);
    assert!(d.has_flag("tc"), "{}", d.text);
    assert_eq!(d.transport, "UDP", "{}", d.text);
    // By default dig retries over TCP and gets all 16.
    let d = dig(&server, &[&name, "AAAA", "+norec", "+noedns"]);
    assert!(
        d.text.contains("Truncated, retrying in TCP mode"),
        "{}",
        d.text
    );
    assert_eq!(d.transport, "TCP", "{}", d.text);
    assert!(!d.has_flag("tc"), "{}", d.text);
    assert_eq!(d.answer.len(), 16, "{}", d.text);
    assert!(d.answer.iter().all(|r| r.rtype == "AAAA" && r.ttl == 30));
    // With EDNS the answer fits over UDP.
    let d = dig(&server, &[&name, "AAAA", "+norec", "+bufsize=1232"]);
    assert_eq!(d.transport, "UDP", "{}", d.text);
    assert_eq!(d.answer.len(), 16, "{}", d.text);
}

#[test]
fn dig_edns_version_1_gets_badvers() {
    let server = start();
    let d = dig(
        &server,
        &["www.shift.test", "A", "+norec", "+edns=1", "+noednsneg"],
    );
    assert_eq!(d.status, "BADVERS", "{}", d.text);
    assert_eq!(d.edns_version, Some(0), "{}", d.text);
    assert!(d.answer.is_empty(), "{}", d.text);
    // dig's EDNS negotiation then falls back to version 0 and gets the answer.
    let d = dig(&server, &["www.shift.test", "A", "+norec", "+edns=1"]);
    assert!(
        d.text.contains("BADVERS, retrying with EDNS version 0"),
        "{}",
        d.text
    );
    check_www(&d);
}

#[test]
fn dig_nsid_and_ch_txt_name_the_server() {
    let server = Setup::new(
        &[("shift.test.toml", &zone())],
        "server_id = \"dig-ns-1\"\n",
    )
    .start();
    for tcp in [false, true] {
        let transport = if tcp { "+tcp" } else { "+notcp" };
        let d = dig(
            &server,
            &["www.shift.test", "A", "+norec", "+nsid", transport],
        );
        check_www(&d);
        assert_eq!(d.nsid.as_deref(), Some("dig-ns-1"), "{}", d.text);
        let d = dig(&server, &["www.shift.test", "A", "+norec", transport]);
        assert_eq!(d.nsid, None, "NSID only when asked: {}", d.text);

        for name in ["id.server", "hostname.bind"] {
            let d = dig(&server, &["CH", "TXT", name, "+norec", transport]);
            assert_eq!(d.status, "NOERROR", "{}", d.text);
            assert!(d.has_flag("aa"), "{}", d.text);
            let want = Rr {
                name: format!("{name}."),
                ttl: 0,
                class: "CH".into(),
                rtype: "TXT".into(),
                data: "\"dig-ns-1\"".into(),
            };
            assert_eq!(d.answer, [want], "{}", d.text);
        }
        let d = dig(&server, &["CH", "TXT", "version.bind", "+norec", transport]);
        assert_eq!(d.status, "REFUSED", "{}", d.text);
    }
}

#[test]
fn dig_opcodeflg_probe_gets_notimp_without_query_flags() {
    let server = start();
    // ISC genreport's `opcodeflg`, as its documentation writes it.
    let d = dig(
        &server,
        &[
            "+noedns",
            "+header-only",
            "+opcode=15",
            "+tcflag",
            "+rec",
            "+raflag",
            "+cd",
            "+ad",
            "+aaflag",
            "+zflag",
        ],
    );
    assert_eq!(d.status, "NOTIMP", "{}", d.text);
    assert_eq!(d.flags, ["qr"], "only QR: {}", d.text);
}
