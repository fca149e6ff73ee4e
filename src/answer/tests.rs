//! Unit tests of the plan and the lookup (a sibling file: they are longer
//! than the code).

use super::*;
use crate::config::source::Source;

fn zone(services: &str) -> Zone {
    let text = format!(
        r#"
[zone]
origin = "z.test."
nameservers = ["ns1"]
hostmaster = "h.z.test."
negative_ttl = "20s"
records = """
ns1 IN A 203.0.113.53
a.b IN TXT "deep"
docs IN CNAME ns1
sub IN NS ns.sub
ns.sub IN A 203.0.113.99
"""
{services}"#
    );
    crate::zone::parse(&Source {
        path: "t.toml".into(),
        text,
    })
    .unwrap()
}

const SVC: &str = r#"
[[service]]
name = "www"
staging = "www-next"
max_answers = 1
[service.pools]
old = ["192.0.2.1", "192.0.2.2"]
new = ["198.51.100.1", "2001:db8::1"]
"#;

fn plan(z: &Zone, inputs: &dyn Inputs) -> Plan {
    Plan::build(std::slice::from_ref(z), inputs, &Stats::default(), 7)
}

fn name(s: &str) -> LowerName {
    LowerName::from(Name::from_ascii(s).unwrap())
}

fn ask<'a>(p: &'a Plan, q: &str, t: RecordType) -> Answer<'a> {
    match p.lookup(&name(q), t, 0, &mut ThreadRandom) {
        Lookup::Zone(a, _) => a,
        Lookup::Refused => panic!("refused {q}"),
    }
}

#[test]
fn negative_answers_and_structure() {
    let z = zone(SVC);
    let p = plan(&z, &ConfigOnly);
    assert!(matches!(
        p.lookup(
            &name("example.org."),
            RecordType::A,
            0,
            &mut fastrand::Rng::with_seed(7)
        ),
        Lookup::Refused
    ));
    // (name, type, rcode, answers, has soa, authoritative)
    let cases = [
        (
            "z.test.",
            RecordType::SOA,
            ResponseCode::NoError,
            1,
            false,
            true,
        ),
        (
            "z.test.",
            RecordType::NS,
            ResponseCode::NoError,
            1,
            false,
            true,
        ),
        (
            "z.test.",
            RecordType::A,
            ResponseCode::NoError,
            0,
            true,
            true,
        ),
        (
            "nope.z.test.",
            RecordType::A,
            ResponseCode::NXDomain,
            0,
            true,
            true,
        ),
        (
            "b.z.test.",
            RecordType::TXT,
            ResponseCode::NoError,
            0,
            true,
            true,
        ),
        (
            "a.b.z.test.",
            RecordType::TXT,
            ResponseCode::NoError,
            1,
            false,
            true,
        ),
        (
            "x.www.z.test.",
            RecordType::A,
            ResponseCode::NXDomain,
            0,
            true,
            true,
        ),
        (
            "www.z.test.",
            RecordType::MX,
            ResponseCode::NoError,
            0,
            true,
            true,
        ),
        (
            "WWW.Z.TEST.",
            RecordType::A,
            ResponseCode::NoError,
            1,
            false,
            true,
        ),
        (
            "docs.z.test.",
            RecordType::A,
            ResponseCode::NoError,
            2,
            false,
            true,
        ),
        (
            "host.sub.z.test.",
            RecordType::A,
            ResponseCode::NoError,
            0,
            false,
            false,
        ),
    ];
    for (q, t, rcode, n, soa, aa) in cases {
        let a = ask(&p, q, t);
        assert_eq!(a.rcode, rcode, "{q} {t}");
        assert_eq!(a.answers.len(), n, "{q} {t}");
        assert_eq!(a.soa.is_some(), soa, "{q} {t}");
        assert_eq!(a.authoritative, aa, "{q} {t}");
        if soa {
            assert_eq!(a.soa.unwrap().ttl, 20, "negative TTL");
        }
    }
    let referral = ask(&p, "host.sub.z.test.", RecordType::A);
    assert_eq!(referral.authority.len(), 1);
    assert_eq!(referral.additionals.len(), 1);
}

#[test]
fn staging_answers_only_new_and_main_only_old_in_first_phase() {
    let z = zone(SVC);
    let p = plan(&z, &ConfigOnly);
    for _ in 0..200 {
        let a = ask(&p, "www.z.test.", RecordType::A);
        assert!(a.answers[0].data.to_string().starts_with("192.0.2."));
        let s = ask(&p, "www-next.z.test.", RecordType::A);
        assert_eq!(s.answers[0].data.to_string(), "198.51.100.1");
    }
    // AAAA: only new has an IPv6 endpoint, and it is a standby for the
    // name as a whole in separate-domain: the drawn pool (old) has no
    // IPv6 address, so NODATA, and the client stays with old over A.
    for _ in 0..200 {
        let a = ask(&p, "www.z.test.", RecordType::AAAA);
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(a.answers.is_empty(), "{:?}", a.answers);
        assert!(a.soa.is_some(), "NODATA carries the SOA");
    }
    let s = ask(&p, "www-next.z.test.", RecordType::AAAA);
    assert_eq!(s.answers[0].data.to_string(), "2001:db8::1");
}

struct Down(&'static [&'static str]);
impl Inputs for Down {
    fn phase(&self, s: &Service) -> usize {
        s.initial_phase
    }
    fn disabled(&self, _: &Service, _: &Pool, _: &Endpoint) -> bool {
        false
    }
    fn healthy(&self, _: &Service, _: &Pool, e: &Endpoint) -> bool {
        !self.0.contains(&e.id.as_str())
    }
    fn decommissioned(&self, _: &Service, _: &Pool) -> bool {
        false
    }
}

/// The lookup takes its time and its draws from the caller: the same
/// seed gives the same answers, and the drain clock is the time given.
#[test]
fn now_and_the_random_source_are_passed_in() {
    let z = zone(SVC);
    let stats = Stats::default();
    let p = Plan::build(std::slice::from_ref(&z), &ConfigOnly, &stats, 7);
    let answers = |seed| {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..20)
            .map(
                |_| match p.lookup(&name("www.z.test."), RecordType::A, 5_000, &mut rng) {
                    Lookup::Zone(a, _) => a.answers[0].data.to_string(),
                    Lookup::Refused => panic!("refused"),
                },
            )
            .collect::<Vec<_>>()
    };
    assert_eq!(answers(1), answers(1));
    let old = stats.pool("www.z.test.", "old", 0);
    assert_eq!(old.last_answered_ms.load(Ordering::Relaxed), 5_000);
}

#[test]
fn health_tiers() {
    let z = zone(SVC);
    let first = |inputs: &dyn Inputs, t| {
        let p = plan(&z, inputs);
        let mut seen: Vec<String> = (0..300)
            .map(|_| {
                ask(&p, "www.z.test.", t)
                    .answers
                    .first()
                    .map_or("NODATA".to_string(), |r| r.data.to_string())
            })
            .collect();
        seen.sort();
        seen.dedup();
        seen
    };
    // (down endpoints, expected set of answered A addresses, of AAAA ones)
    let cases: [(&'static [&'static str], &[&str], &[&str]); 6] = [
        (&[], &["192.0.2.1", "192.0.2.2"], &["NODATA"]),
        (&["192.0.2.1"], &["192.0.2.2"], &["NODATA"]),
        // old all down: new (standby) takes over, for both families
        (
            &["192.0.2.1", "192.0.2.2"],
            &["198.51.100.1"],
            &["2001:db8::1"],
        ),
        // every IPv4 endpoint down, new's IPv6 one usable: new is the
        // standby answering the name; it has no usable IPv4 address, so
        // A gets NODATA rather than old failing open.
        (
            &["192.0.2.1", "192.0.2.2", "198.51.100.1"],
            &["NODATA"],
            &["2001:db8::1"],
        ),
        // new's IPv6 endpoint down alone: old still answers everything
        (&["2001:db8::1"], &["192.0.2.1", "192.0.2.2"], &["NODATA"]),
        // everything down: fail open with the phase's weights
        (
            &["192.0.2.1", "192.0.2.2", "198.51.100.1", "2001:db8::1"],
            &["192.0.2.1", "192.0.2.2"],
            &["NODATA"],
        ),
    ];
    for (down, a, aaaa) in cases {
        assert_eq!(first(&Down(down), RecordType::A), a, "A, down {down:?}");
        assert_eq!(
            first(&Down(down), RecordType::AAAA),
            aaaa,
            "AAAA, down {down:?}"
        );
    }
    let zs = zone(&SVC.replace(
        "max_answers = 1",
        "max_answers = 1\non_all_down = \"servfail\"",
    ));
    let p = plan(
        &zs,
        &Down(&["192.0.2.1", "192.0.2.2", "198.51.100.1", "2001:db8::1"]),
    );
    assert_eq!(
        ask(&p, "www.z.test.", RecordType::A).rcode,
        ResponseCode::ServFail
    );
}

#[test]
fn host_name_pool_is_picked_as_a_whole_pool_for_every_type() {
    // old has only IPv4; new is a CNAME. In separate-domain new is
    // standby: AAAA and other types must not fall through to the CNAME.
    let z = zone(
        "[[service]]\nname = \"www\"\n[service.pools]\nold = [\"192.0.2.1\"]\nnew = \"lb.example.net.\"\n[service.health]\nkind = \"none\"\n",
    );
    let p = plan(&z, &ConfigOnly);
    for t in [RecordType::AAAA, RecordType::MX, RecordType::Unknown(65)] {
        for _ in 0..50 {
            let a = ask(&p, "www.z.test.", t);
            assert_eq!(a.rcode, ResponseCode::NoError);
            assert!(a.answers.is_empty(), "{t}: {:?}", a.answers);
            assert!(a.soa.is_some(), "{t}: NODATA carries the SOA");
        }
    }
    assert_eq!(
        ask(&p, "www.z.test.", RecordType::A).answers[0]
            .data
            .to_string(),
        "192.0.2.1"
    );
    // old all down: the CNAME pool takes over as standby, for every type.
    let p = plan(&z, &Down(&["192.0.2.1"]));
    let a = ask(&p, "www.z.test.", RecordType::AAAA);
    assert_eq!(a.answers[0].record_type(), RecordType::CNAME);
}

#[test]
fn a_cname_into_a_delegation_stops_at_the_cname() {
    let z = zone("");
    let mut z = z;
    z.records.push(Record::from_rdata(
        Name::from_ascii("alias.z.test.").unwrap(),
        60,
        RData::CNAME(CNAME(Name::from_ascii("host.sub.z.test.").unwrap())),
    ));
    let p = plan(&z, &ConfigOnly);
    let a = ask(&p, "alias.z.test.", RecordType::A);
    assert_eq!(a.rcode, ResponseCode::NoError);
    assert!(a.authoritative);
    assert_eq!(a.answers.len(), 1);
    assert!(a.soa.is_none() && a.authority.is_empty());
}

/// Inputs with a phase index, down and disabled endpoints, and
/// decommissioned pools.
struct Situation {
    phase: usize,
    down: &'static [&'static str],
    disabled: &'static [&'static str],
    gone: &'static [&'static str],
}
impl Inputs for Situation {
    fn phase(&self, _: &Service) -> usize {
        self.phase
    }
    fn disabled(&self, _: &Service, _: &Pool, e: &Endpoint) -> bool {
        self.disabled.contains(&e.id.as_str())
    }
    fn healthy(&self, _: &Service, _: &Pool, e: &Endpoint) -> bool {
        !self.down.contains(&e.id.as_str())
    }
    fn decommissioned(&self, _: &Service, p: &Pool) -> bool {
        self.gone.contains(&p.name.as_str())
    }
}

#[test]
fn decide_roles_table() {
    use Role::*;
    let z = zone(SVC);
    let s = &z.services[0];
    const OLD: &[&str] = &["192.0.2.1", "192.0.2.2"];
    const ALL: &[&str] = &["192.0.2.1", "192.0.2.2", "198.51.100.1", "2001:db8::1"];
    const NEW: &[&str] = &["198.51.100.1", "2001:db8::1"];
    // The decision is made for the name, so the roles are the same for A
    // and AAAA; what differs is what the drawn pool answers: its usable
    // endpoints of the family, or NODATA. Phases: separate-domain (old
    // 100), round-robin (50/50), cutover (new 100). old has IPv4 only, new
    // one IPv4 and one IPv6 endpoint.
    // (phase, down, disabled, decommissioned, roles of old and new,
    //  fail open, A shares and AAAA shares in percent: [old, new, NODATA])
    type Case = (
        usize,
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
        [Option<Role>; 2],
        bool,
        [u32; 3],
        [u32; 3],
    );
    const V4_NEW: &[&str] = &["198.51.100.1"];
    const V6_NEW: &[&str] = &["2001:db8::1"];
    const V4_ALL: &[&str] = &["192.0.2.1", "192.0.2.2", "198.51.100.1"];
    let cases: &[Case] = &[
        // separate-domain: AAAA never answers new, which is a standby for
        // the name; the drawn pool, old, has no IPv6 address.
        (
            0,
            &[],
            &[],
            &[],
            [Some(Weighted), Some(Standby)],
            false,
            [100, 0, 0],
            [0, 0, 100],
        ),
        (
            1,
            &[],
            &[],
            &[],
            [Some(Weighted), Some(Weighted)],
            false,
            [50, 50, 0],
            [0, 50, 50],
        ),
        (
            2,
            &[],
            &[],
            &[],
            [Some(Standby), Some(Weighted)],
            false,
            [0, 100, 0],
            [0, 100, 0],
        ),
        // new down in cutover: old answers as standby, AAAA NODATA.
        (
            2,
            NEW,
            &[],
            &[],
            [Some(StandbyAnswering), Some(Unusable)],
            false,
            [100, 0, 0],
            [0, 0, 100],
        ),
        // new disabled in cutover: the same.
        (
            2,
            &[],
            NEW,
            &[],
            [Some(StandbyAnswering), Some(Unusable)],
            false,
            [100, 0, 0],
            [0, 0, 100],
        ),
        // everything down: the weighted pool fails open.
        (
            2,
            ALL,
            &[],
            &[],
            [Some(Standby), Some(FailOpen)],
            true,
            [0, 100, 0],
            [0, 100, 0],
        ),
        (
            0,
            ALL,
            &[],
            &[],
            [Some(FailOpen), Some(Standby)],
            true,
            [100, 0, 0],
            [0, 0, 100],
        ),
        // all down, new disabled: old (standby, enabled) fails open.
        (
            2,
            ALL,
            NEW,
            &[],
            [Some(FailOpen), Some(Unusable)],
            true,
            [100, 0, 0],
            [0, 0, 100],
        ),
        // everything disabled: still answered, disabled ones included.
        (
            2,
            &[],
            ALL,
            &[],
            [Some(Standby), Some(FailOpen)],
            true,
            [0, 100, 0],
            [0, 100, 0],
        ),
        (
            2,
            NEW,
            &[],
            &["old"],
            [Some(Decommissioned), Some(FailOpen)],
            true,
            [0, 100, 0],
            [0, 100, 0],
        ),
        (
            0,
            OLD,
            &[],
            &["new"],
            [Some(FailOpen), Some(Decommissioned)],
            true,
            [100, 0, 0],
            [0, 0, 100],
        ),
        // By family. A standby's IPv4 endpoint down changes nothing.
        (
            0,
            V4_NEW,
            &[],
            &[],
            [Some(Weighted), Some(Standby)],
            false,
            [100, 0, 0],
            [0, 0, 100],
        ),
        // new's IPv6 endpoint down: new keeps its weight (its IPv4 one is
        // usable); its AAAA answers become NODATA, not old's.
        (
            1,
            V6_NEW,
            &[],
            &[],
            [Some(Weighted), Some(Weighted)],
            false,
            [50, 50, 0],
            [0, 0, 100],
        ),
        // new's IPv4 endpoint down in cutover: A gets NODATA (the client
        // falls back to AAAA, still new), not old as standby.
        (
            2,
            V4_NEW,
            &[],
            &[],
            [Some(Standby), Some(Weighted)],
            false,
            [0, 0, 100],
            [0, 100, 0],
        ),
        // every IPv4 endpoint down in separate-domain: new's IPv6 one is
        // usable, so new answers the name as standby; not fail-open.
        (
            0,
            V4_ALL,
            &[],
            &[],
            [Some(Unusable), Some(StandbyAnswering)],
            false,
            [0, 0, 100],
            [0, 100, 0],
        ),
        (
            1,
            OLD,
            &[],
            &[],
            [Some(Unusable), Some(Weighted)],
            false,
            [0, 100, 0],
            [0, 100, 0],
        ),
    ];
    for (i, (phase, down, disabled, gone, want, fail_open, a, aaaa)) in cases.iter().enumerate() {
        let inputs = Situation {
            phase: *phase,
            down,
            disabled,
            gone,
        };
        let p = plan(&z, &inputs);
        for (family, want_shares, qtype) in [
            (Family::V4, a, RecordType::A),
            (Family::V6, aaaa, RecordType::AAAA),
        ] {
            let d = decide(s, &s.phases[*phase].weights, None, family, &inputs);
            let roles: Vec<Option<Role>> =
                d.pools.iter().map(|p| p.as_ref().map(|p| p.role)).collect();
            assert_eq!(roles, want.to_vec(), "case {i} {family:?}");
            assert_eq!(d.fail_open, *fail_open, "case {i} {family:?}");
            assert!(!d.servfail, "case {i} {family:?}");
            let sh = Shares::of(&d);
            let got = [sh.pools[0], sh.pools[1], sh.nodata].map(|x| (x * 100.0).round() as u32);
            assert_eq!(got, *want_shares, "case {i} {family:?} shares");
            // The plan answers what the shares say: a pool's addresses
            // of the family only when it has a share, NODATA only then.
            let mut seen = [false; 3];
            for _ in 0..200 {
                let ans = ask(&p, "www.z.test.", qtype);
                let at = match ans.answers.first() {
                    None => {
                        assert!(ans.soa.is_some(), "case {i}: NODATA without SOA");
                        2
                    }
                    Some(r) if r.data.to_string().starts_with("192.0.2.") => 0,
                    Some(_) => 1,
                };
                assert!(want_shares[at] > 0, "case {i} {qtype}: {:?}", ans.answers);
                seen[at] = true;
            }
            for k in 0..3 {
                assert_eq!(
                    seen[k],
                    want_shares[k] > 0,
                    "case {i} {qtype}: seen {seen:?}"
                );
            }
        }
    }
    // Everything disabled: the answer carries the disabled endpoints
    // rather than an empty NOERROR.
    let p = plan(
        &z,
        &Situation {
            phase: 2,
            down: &[],
            disabled: ALL,
            gone: &[],
        },
    );
    assert_eq!(
        ask(&p, "www.z.test.", RecordType::A).answers[0]
            .data
            .to_string(),
        "198.51.100.1"
    );
    assert_eq!(
        ask(&p, "www-next.z.test.", RecordType::A).answers[0]
            .data
            .to_string(),
        "198.51.100.1"
    );
    // With on_all_down = "servfail": SERVFAIL, every live pool says so.
    let zs = zone(&SVC.replace(
        "max_answers = 1",
        "max_answers = 1\non_all_down = \"servfail\"",
    ));
    let s = &zs.services[0];
    let inputs = Situation {
        phase: 2,
        down: &[],
        disabled: ALL,
        gone: &["old"],
    };
    let d = decide(s, &s.phases[2].weights, None, Family::V4, &inputs);
    assert!(d.servfail && !d.fail_open);
    let roles: Vec<Option<Role>> = d.pools.iter().map(|p| p.as_ref().map(|p| p.role)).collect();
    assert_eq!(roles, vec![Some(Decommissioned), Some(Servfail)]);
    let p = plan(&zs, &inputs);
    assert_eq!(
        ask(&p, "www-next.z.test.", RecordType::A).rcode,
        ResponseCode::ServFail
    );
}

#[test]
fn serial_increases() {
    assert_eq!(next_serial(5, 100), 100);
    assert_eq!(next_serial(100, 100), 101);
    assert_eq!(next_serial(200, 100), 201);
}

#[test]
fn family_warning_tells_what_ipv6_preferring_clients_see() {
    let z = zone(SVC);
    let s = &z.services[0];
    // One weighted pool (separate-domain, cutover): nothing to warn about.
    assert_eq!(family_warning(s, 0), None);
    assert_eq!(family_warning(s, 2), None);
    assert_eq!(
        family_warning(s, 1).as_deref(),
        Some(
            "phase \"round-robin\" weights pools of different address families (old: IPv4 only, new: IPv4 and IPv6): A answers old 50%, new 50%; AAAA answers new 50%, NODATA 50%; A and AAAA are drawn independently, so IPv6-preferring clients reach old 25%, new 75% (see the README's \"Phases, weights and health\")"
        )
    );
    // IPv4 only against IPv6 only: some clients get no address at all.
    let z = zone(&SVC.replace(
        "new = [\"198.51.100.1\", \"2001:db8::1\"]",
        "new = [\"2001:db8::1\"]",
    ));
    let w = family_warning(&z.services[0], 1).unwrap();
    assert!(
        w.contains("reach old 25%, new 50%, and 25% get no address at all ("),
        "{w}"
    );
    // Pools of the same families: no warning.
    let z = zone(&SVC.replace(
        "new = [\"198.51.100.1\", \"2001:db8::1\"]",
        "new = [\"198.51.100.1\"]",
    ));
    assert_eq!(family_warning(&z.services[0], 1), None);
}

#[test]
fn a_drawn_pools_nodata_is_cached_no_longer_than_its_answers() {
    // negative_ttl 20s; answers 5s. A NODATA for the drawn pool (old has
    // no IPv6) carries the SOA with TTL 5; a type no pool has, 20.
    let z = zone(&SVC.replace("max_answers = 1", "max_answers = 1\nttl = \"5s\""));
    let p = plan(&z, &ConfigOnly);
    let a = ask(&p, "www.z.test.", RecordType::AAAA);
    assert!(a.answers.is_empty());
    assert_eq!(a.soa.map(|r| r.ttl), Some(5));
    let a = ask(&p, "www.z.test.", RecordType::MX);
    assert_eq!(a.soa.map(|r| r.ttl), Some(20));
    // Answers of 30s (the default), above the negative TTL: 20.
    let z = zone(SVC);
    let p = plan(&z, &ConfigOnly);
    assert_eq!(
        ask(&p, "www.z.test.", RecordType::AAAA).soa.map(|r| r.ttl),
        Some(20)
    );
}

/// A sticky service of three dual-stack pools (issue 18).
const STICKY: &str = r#"
[[service]]
name = "app"
staging = "app-next"
assignment = "sticky"
max_answers = 1
initial_phase = "three"
[service.pools]
old = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1"]
new = ["198.51.100.1", "2001:db8::2"]
canary = ["203.0.113.1", "2001:db8::3"]
[[service.phase]]
name = "three"
weights = { old = 60, new = 30, canary = 10 }
"#;

/// The pool and endpoint a sticky answer carries, and the ECS scope.
fn sticky_answer(p: &Plan, t: RecordType, client: &Client) -> (String, u8) {
    match p.lookup_from(&name("app.z.test."), t, 0, &mut ThreadRandom, client, false) {
        Lookup::Zone(a, _) => (a.answers[0].data.to_string(), a.scope),
        Lookup::Refused => panic!("refused"),
    }
}

fn pool_of(addr: &str) -> &'static str {
    match addr {
        a if a.starts_with("192.0.2.") || a == "2001:db8::1" => "old",
        a if a.starts_with("198.51.100.") || a == "2001:db8::2" => "new",
        _ => "canary",
    }
}

fn ecs_client(i: u32) -> Client {
    Client {
        addr: Some("127.0.0.1".parse().unwrap()),
        ecs: Some(sticky::Ecs {
            addr: std::net::IpAddr::from((0x0A00_0000 + (i << 8)).to_be_bytes()),
            source: 24,
        }),
    }
}

#[test]
fn sticky_answers_agree_across_families_and_survive_health_changes() {
    let z = zone(STICKY);
    let healthy = plan(&z, &ConfigOnly);
    let canary_down = plan(&z, &Down(&["203.0.113.1", "2001:db8::3"]));
    let endpoint_down = plan(&z, &Down(&["192.0.2.2"]));
    let clients = 5000;
    let (mut moved, mut endpoint_moved, mut per_pool) = (0, 0, HashMap::new());
    for i in 0..clients {
        let c = ecs_client(i);
        let (a, scope) = sticky_answer(&healthy, RecordType::A, &c);
        let (aaaa, _) = sticky_answer(&healthy, RecordType::AAAA, &c);
        assert_eq!(
            pool_of(&a),
            pool_of(&aaaa),
            "client {i}: A {a}, AAAA {aaaa}"
        );
        assert_eq!(scope, 24);
        *per_pool.entry(pool_of(&a)).or_insert(0) += 1;
        // Asked again: the same answer.
        assert_eq!(sticky_answer(&healthy, RecordType::A, &c).0, a);
        // Canary down: only canary's clients move, to the other pools.
        let (down, _) = sticky_answer(&canary_down, RecordType::A, &c);
        if pool_of(&a) == "canary" {
            assert_ne!(pool_of(&down), "canary");
            moved += 1;
        } else {
            assert_eq!(down, a, "client {i} of another pool moved");
        }
        // One of old's endpoints down: only its clients change endpoint,
        // and stay in old.
        let (ep, _) = sticky_answer(&endpoint_down, RecordType::A, &c);
        if a == "192.0.2.2" {
            assert_eq!(pool_of(&ep), "old");
            assert_ne!(ep, a);
            endpoint_moved += 1;
        } else {
            assert_eq!(ep, a, "client {i} changed endpoint");
        }
    }
    // Shares near 60/30/10 (5000 keys: 3σ is at most 2.1 points).
    for (pool, want) in [("old", 0.6), ("new", 0.3), ("canary", 0.1)] {
        let got = f64::from(per_pool[pool]) / f64::from(clients);
        assert!((got - want).abs() < 0.021, "{pool}: {got}");
    }
    assert!(
        moved > 300 && endpoint_moved > 700,
        "{moved} {endpoint_moved}"
    );
    // old's endpoints share its clients.
    let firsts: std::collections::BTreeSet<String> = (0..200)
        .map(|i| sticky_answer(&healthy, RecordType::A, &ecs_client(i)).0)
        .filter(|a| pool_of(a) == "old")
        .collect();
    assert_eq!(firsts.len(), 3, "{firsts:?}");
}

#[test]
fn sticky_scope_is_zero_when_the_answer_does_not_depend_on_the_client() {
    let z = zone(STICKY);
    let p = plan(&z, &ConfigOnly);
    let c = ecs_client(7);
    // The staging name answers new alone, with one address per family.
    let stg = |t| match p.lookup_from(
        &name("app-next.z.test."),
        t,
        0,
        &mut ThreadRandom,
        &c,
        false,
    ) {
        Lookup::Zone(a, _) => a.scope,
        Lookup::Refused => panic!("refused"),
    };
    assert_eq!(stg(RecordType::A), 0);
    assert_eq!(stg(RecordType::AAAA), 0);
    // A random service: scope 0.
    let r = zone(SVC);
    let p = plan(&r, &ConfigOnly);
    match p.lookup_from(
        &name("www.z.test."),
        RecordType::A,
        0,
        &mut ThreadRandom,
        &c,
        false,
    ) {
        Lookup::Zone(a, _) => assert_eq!(a.scope, 0),
        Lookup::Refused => panic!("refused"),
    }
    // Without ECS the key is the resolver's network, and the scope 0.
    let p = plan(&z, &ConfigOnly);
    let resolver = Client::from("192.0.2.200".parse().unwrap());
    let (a, scope) = sticky_answer(&p, RecordType::A, &resolver);
    assert_eq!(scope, 0);
    let same_net = Client::from("192.0.2.9".parse().unwrap());
    assert_eq!(sticky_answer(&p, RecordType::A, &same_net).0, a);
}
