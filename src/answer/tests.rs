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
    // AAAA: only new has an IPv6 endpoint; it is standby in separate-domain.
    let a = ask(&p, "www.z.test.", RecordType::AAAA);
    assert_eq!(a.answers[0].data.to_string(), "2001:db8::1");
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
            .map(|_| ask(&p, "www.z.test.", t).answers[0].data.to_string())
            .collect();
        seen.sort();
        seen.dedup();
        seen
    };
    // (down endpoints, expected set of answered A addresses)
    let cases: [(&'static [&'static str], &[&str]); 4] = [
        (&[], &["192.0.2.1", "192.0.2.2"]),
        (&["192.0.2.1"], &["192.0.2.2"]),
        // old all down: new (standby) takes over
        (&["192.0.2.1", "192.0.2.2"], &["198.51.100.1"]),
        // everything down: fail open with the phase's weights
        (
            &["192.0.2.1", "192.0.2.2", "198.51.100.1"],
            &["192.0.2.1", "192.0.2.2"],
        ),
    ];
    for (down, want) in cases {
        assert_eq!(first(&Down(down), RecordType::A), want, "down {down:?}");
    }
    let zs = zone(&SVC.replace(
        "max_answers = 1",
        "max_answers = 1\non_all_down = \"servfail\"",
    ));
    let p = plan(&zs, &Down(&["192.0.2.1", "192.0.2.2", "198.51.100.1"]));
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
    // (phase, down, disabled, decommissioned, family,
    //  roles of old and new, fail open, servfail)
    type Case = (
        usize,
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
        Family,
        [Option<Role>; 2],
        bool,
    );
    let cases: &[Case] = &[
        (
            0,
            &[],
            &[],
            &[],
            Family::V4,
            [Some(Weighted), Some(Standby)],
            false,
        ),
        // old has no IPv6: new answers AAAA as standby.
        (
            0,
            &[],
            &[],
            &[],
            Family::V6,
            [None, Some(StandbyAnswering)],
            false,
        ),
        (
            1,
            &[],
            &[],
            &[],
            Family::V4,
            [Some(Weighted), Some(Weighted)],
            false,
        ),
        (
            2,
            &[],
            &[],
            &[],
            Family::V4,
            [Some(Standby), Some(Weighted)],
            false,
        ),
        // new down in cutover: old answers as standby.
        (
            2,
            NEW,
            &[],
            &[],
            Family::V4,
            [Some(StandbyAnswering), Some(Unusable)],
            false,
        ),
        // new disabled in cutover: the same.
        (
            2,
            &[],
            NEW,
            &[],
            Family::V4,
            [Some(StandbyAnswering), Some(Unusable)],
            false,
        ),
        // everything down: the weighted pool fails open.
        (
            2,
            ALL,
            &[],
            &[],
            Family::V4,
            [Some(Standby), Some(FailOpen)],
            true,
        ),
        (
            0,
            ALL,
            &[],
            &[],
            Family::V4,
            [Some(FailOpen), Some(Standby)],
            true,
        ),
        // all down, new disabled: old (standby, enabled) fails open.
        (
            2,
            ALL,
            NEW,
            &[],
            Family::V4,
            [Some(FailOpen), Some(Unusable)],
            true,
        ),
        // everything disabled: still answered, disabled ones included.
        (
            2,
            &[],
            ALL,
            &[],
            Family::V4,
            [Some(Standby), Some(FailOpen)],
            true,
        ),
        (
            2,
            NEW,
            &[],
            &["old"],
            Family::V4,
            [Some(Decommissioned), Some(FailOpen)],
            true,
        ),
        (
            0,
            OLD,
            &[],
            &["new"],
            Family::V4,
            [Some(FailOpen), Some(Decommissioned)],
            true,
        ),
    ];
    for (i, (phase, down, disabled, gone, family, want, fail_open)) in cases.iter().enumerate() {
        let inputs = Situation {
            phase: *phase,
            down,
            disabled,
            gone,
        };
        let d = decide(s, &s.phases[*phase].weights, None, *family, &inputs);
        let roles: Vec<Option<Role>> = d.pools.iter().map(|p| p.as_ref().map(|p| p.role)).collect();
        assert_eq!(roles, want.to_vec(), "case {i}");
        assert_eq!(d.fail_open, *fail_open, "case {i}");
        assert!(!d.servfail, "case {i}");
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
