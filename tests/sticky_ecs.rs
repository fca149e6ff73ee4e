//! Sticky assignment (issue 18) through a real resolver with EDNS Client
//! Subnet: Debian's unbound with its subnetcache module forwards each
//! client's ECS to dnsshift and caches answers per client network, as a
//! public resolver does. 2,000 synthetic client networks resolve A and
//! AAAA through it over several TTL windows per phase, across 90/10 →
//! 70/30 → 50/50 → rollback to 70/30 → cutover. A random service with the
//! same weights, queried by the same clients directly (every query one
//! independent draw, as through resolvers without a shared cache), is the
//! contrast, in the same run.
//!
//! Run by hand (prints the figures):
//!     cargo test --release --test sticky_ecs -- --nocapture
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Clients are compared by index across windows and record families.
#![allow(clippy::needless_range_loop)]

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::unbound::{self, Unbound};
use common::zone::{ServiceBuilder, ZoneBuilder};
use common::*;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};

/// Synthetic client networks (10.x.y.0/24).
const CLIENTS: usize = 2000;
/// TTL windows measured per phase.
const WINDOWS: usize = 3;
/// The answers' TTL.
const TTL: Duration = Duration::from_secs(1);
/// Resolvers count TTLs in whole seconds: a cached answer may live up to a
/// second longer.
const TTL_SLACK: Duration = Duration::from_secs(1);
/// Threads querying at once.
const THREADS: usize = 8;
/// Attempts per query (UDP on loopback under load may drop one).
const ATTEMPTS: usize = 3;

const ORIGIN: &str = "shift.example.";
const STICKY: &str = "www.shift.example.";
const RANDOM: &str = "rnd.shift.example.";
const OLD_V4: &str = "192.0.2.1";
const NEW_V4: &str = "198.51.100.1";
const OLD_V6: &str = "2001:db8::1";
const NEW_V6: &str = "2001:db8::2";

fn service(name: &str, assignment: &str) -> ServiceBuilder {
    ServiceBuilder::unchecked(name, &[OLD_V4, OLD_V6], &[NEW_V4, NEW_V6])
        .set("assignment", format!("{assignment:?}"))
        .ttl("1s")
        .phase("p90", &[("old", 90), ("new", 10)])
        .phase("p70", &[("old", 70), ("new", 30)])
        .phase("p50", &[("old", 50), ("new", 50)])
        .phase("cutover", &[("old", 0), ("new", 100)])
}

/// The client network of client `i`, as an ECS address.
fn network(i: usize) -> IpAddr {
    IpAddr::from([10, (i >> 8) as u8, i as u8, 0])
}

/// Which pool an address belongs to.
fn pool_of(ip: IpAddr) -> &'static str {
    match ip.to_string().as_str() {
        OLD_V4 | OLD_V6 => "old",
        NEW_V4 | NEW_V6 => "new",
        other => panic!("unknown address {other}"),
    }
}

/// One answer a client got: the pool, and the reply's ECS scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Got {
    pool: &'static str,
    scope: Option<u8>,
}

/// Asks `server` for `name`/`t` with client `i`'s ECS (/24); `rd` for a
/// resolver.
fn ask(sock: &UdpSocket, server: SocketAddr, name: &str, t: RecordType, i: usize, rd: bool) -> Got {
    let mut q = Message::new(fastrand::u16(..), MessageType::Query, OpCode::Query);
    q.metadata.recursion_desired = rd;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::new(network(i), 24, 0)));
    q.set_edns(e);
    let bytes = q.to_vec().unwrap();
    let mut buf = [0u8; 2048];
    for _ in 0..ATTEMPTS {
        sock.send_to(&bytes, server).unwrap();
        let Ok(n) = sock.recv(&mut buf) else {
            continue;
        };
        let m = Message::from_vec(&buf[..n]).unwrap();
        if m.metadata.id != q.metadata.id {
            continue;
        }
        let addrs: Vec<IpAddr> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        assert_eq!(addrs.len(), 1, "{name} {t} client {i}: {m:?}");
        let scope = m
            .edns
            .as_ref()
            .and_then(|e| e.option(EdnsCode::Subnet))
            .and_then(|o| match o {
                EdnsOption::Subnet(s) => Some(s.scope_prefix()),
                _ => None,
            });
        return Got {
            pool: pool_of(addrs[0]),
            scope,
        };
    }
    panic!("{name} {t} client {i}: no answer from {server} in {ATTEMPTS} attempts");
}

/// One round: every client asks once for each (server, name, type, rd).
/// Returns the answers by job, then client.
fn round(jobs: &[(SocketAddr, &'static str, RecordType, bool)]) -> Vec<Vec<Got>> {
    let per_thread: Vec<Vec<(usize, Vec<Got>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    (t..CLIENTS)
                        .step_by(THREADS)
                        .map(|i| {
                            let got = jobs
                                .iter()
                                .map(|&(srv, name, ty, rd)| ask(&sock, srv, name, ty, i, rd))
                                .collect();
                            (i, got)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut out = vec![
        vec![
            Got {
                pool: "",
                scope: None
            };
            CLIENTS
        ];
        jobs.len()
    ];
    for (i, got) in per_thread.into_iter().flatten() {
        for (j, g) in got.into_iter().enumerate() {
            out[j][i] = g;
        }
    }
    out
}

/// Unbound with the subnetcache module, forwarding clients' ECS to
/// dnsshift at `stub` and caching per client network.
fn start_unbound(stub: SocketAddr) -> Unbound {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let conf = unbound::Conf {
        ip: "127.0.8.53",
        zone: ORIGIN,
        stubs: &[stub],
        modules: "subnetcache iterator",
        files: &[],
        extra: "    send-client-subnet: 127.0.0.0/8
    client-subnet-always-forward: yes
    max-client-subnet-ipv4: 24
    max-ecs-tree-size-ipv4: 8192
    max-ecs-tree-size-ipv6: 8192
    msg-cache-size: 64m
    rrset-cache-size: 64m
",
    };
    unbound::start(&conf, |addr| {
        let mut q = Message::new(1, MessageType::Query, OpCode::Query);
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(
            Name::from_ascii(STICKY).unwrap(),
            RecordType::A,
        ));
        let asked = || -> Option<bool> {
            sock.send_to(&q.to_vec().ok()?, addr).ok()?;
            let mut buf = [0u8; 2048];
            let n = sock.recv(&mut buf).ok()?;
            Some(!Message::from_vec(&buf[..n]).ok()?.answers.is_empty())
        };
        asked().unwrap_or(false)
    })
}

/// Share of `new` among the clients of one window.
fn share_new(w: &[Got]) -> f64 {
    w.iter().filter(|g| g.pool == "new").count() as f64 / w.len() as f64
}

/// How far the random-mode flip rate (flips per client and window, over
/// `n` clients and WINDOWS draws each) may stray from 2p(1-p): 4.5σ, so
/// that the four phases checked per run fail by chance less than once in
/// 30,000 runs. Two flips of one client that share a draw are correlated:
/// P(a≠b, b≠c) = p(1-p), so each pair adds 2·(p(1-p) - q²) to the
/// variance of a client's flips, q = 2p(1-p) being one flip's chance.
fn flips_bound(p: f64, n: usize) -> f64 {
    let q = 2.0 * p * (1.0 - p);
    let t = (WINDOWS - 1) as f64;
    let per_client = t * q * (1.0 - q) + 2.0 * (t - 1.0) * (p * (1.0 - p) - q * q);
    4.5 * (per_client * n as f64).sqrt() / (t * n as f64)
}

/// 3σ of a binomial share `p` over `n` clients.
fn three_sigma(p: f64, n: usize) -> f64 {
    3.0 * (p * (1.0 - p) / n as f64).sqrt()
}

#[test]
fn sticky_clients_keep_their_pool_through_unbound_with_ecs() {
    let zone = ZoneBuilder::new(ORIGIN)
        .records(&["ns1 IN A 127.0.0.1"])
        .service(service("www", "sticky"))
        .service(service("rnd", "random"))
        .to_toml();
    let server = Setup::new(&[("shift.example.toml", &zone)], "").start();
    let unbound = start_unbound(server.dns);
    let jobs = [
        (unbound.addr, STICKY, RecordType::A, true),
        (unbound.addr, STICKY, RecordType::AAAA, true),
        (server.dns, RANDOM, RecordType::A, false),
    ];
    let phases = [
        ("p90", 0.1, vec![]),
        ("p70", 0.3, vec!["advance"]),
        ("p50", 0.5, vec!["advance"]),
        ("p70", 0.3, vec!["rollback", "--to", "p70"]),
        ("cutover", 1.0, vec!["advance", "--to", "cutover"]),
    ];
    // Per phase: the windows' answers by job and client.
    let mut runs: Vec<Vec<Vec<Vec<Got>>>> = Vec::new();
    let started = Instant::now();
    for (phase, _, cmd) in &phases {
        if !cmd.is_empty() {
            for svc in ["www", "rnd"] {
                let mut args = cmd.clone();
                args.insert(1, svc);
                server.cli_ok(&args);
            }
        }
        // Caches from the previous phase turn over.
        std::thread::sleep(TTL + TTL_SLACK);
        let mut windows = Vec::new();
        for _ in 0..WINDOWS {
            windows.push(round(&jobs));
            // Every answer of this window expires before the next.
            std::thread::sleep(TTL + TTL_SLACK);
        }
        println!("{phase}: measured at {:?}", started.elapsed());
        runs.push(windows);
    }

    let n = CLIENTS;
    for (k, (phase, p, _)) in phases.iter().enumerate() {
        let windows = &runs[k];
        // Within a phase: 0 flips per client in sticky mode, for A and
        // AAAA; ~2p(1-p) per window in random mode.
        let mut random_flips = 0;
        for w in 1..WINDOWS {
            for i in 0..n {
                for job in [0, 1] {
                    assert_eq!(
                        windows[w][job][i].pool,
                        windows[w - 1][job][i].pool,
                        "{phase}: client {i} flipped in sticky mode (job {job}, window {w})"
                    );
                }
                random_flips += usize::from(windows[w][2][i].pool != windows[w - 1][2][i].pool);
            }
        }
        let transitions = n * (WINDOWS - 1);
        let flips = random_flips as f64 / transitions as f64;
        let want = 2.0 * p * (1.0 - p);
        let bound = flips_bound(*p, n);
        println!(
            "{phase}: random flips per client and window {flips:.4} (2p(1-p) = {want:.4}, bound ±{bound:.4}); sticky 0"
        );
        assert!(
            (flips - want).abs() <= bound.max(1e-9),
            "{phase}: random flips {flips} vs {want} ± {bound}"
        );
        for w in 0..WINDOWS {
            // A and AAAA lead to one pool for every client network.
            for i in 0..n {
                assert_eq!(
                    windows[w][0][i].pool, windows[w][1][i].pool,
                    "{phase}: client {i}: A and AAAA differ"
                );
            }
            // Each phase's share of new is within 3σ of its weight.
            let share = share_new(&windows[w][0]);
            assert!(
                (share - p).abs() <= three_sigma(*p, n).max(1e-9),
                "{phase}: sticky share of new {share} vs {p}"
            );
            // The right ECS scope: the client's /24 while the answer
            // depends on it, 0 when one pool is answerable; random: 0.
            let want_scope = if *p < 1.0 { 24 } else { 0 };
            for job in [0, 1] {
                for g in &windows[w][job] {
                    assert_eq!(g.scope, Some(want_scope), "{phase}: sticky scope");
                }
            }
            assert!(windows[w][2].iter().all(|g| g.scope == Some(0)));
        }
        println!(
            "{phase}: sticky share of new {:.4} (weight {p})",
            share_new(&windows[0][0])
        );
    }

    // Between phases: what moved, client by client (A; AAAA agrees).
    let last = |k: usize| &runs[k][WINDOWS - 1][0];
    let first = |k: usize| &runs[k][0][0];
    let moves = |from: &[Got], to: &[Got]| {
        let mut m: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
        for i in 0..n {
            if from[i].pool != to[i].pool {
                m.entry((from[i].pool, to[i].pool)).or_default().push(i);
            }
        }
        m
    };
    // 90/10 -> 70/30: 20% ± 3σ old -> new, exactly 0 new -> old.
    let step = moves(last(0), first(1));
    let old_new = step.get(&("old", "new")).map_or(0, Vec::len) as f64 / n as f64;
    println!("90/10 -> 70/30: {old_new:.4} of clients moved old -> new");
    assert!(!step.contains_key(&("new", "old")), "{step:?}");
    assert!((old_new - 0.2).abs() <= three_sigma(0.2, n), "{old_new}");
    // 70/30 -> 50/50 and the rollback to 70/30: exactly those move back.
    let forward = moves(last(1), first(2));
    let back = moves(last(2), first(3));
    assert!(!forward.contains_key(&("new", "old")));
    assert_eq!(
        forward.get(&("old", "new")),
        back.get(&("new", "old")),
        "the rollback moved back other clients than the step moved"
    );
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(
        first(3),
        last(1),
        "after the rollback every client is where it was"
    );
    // Cutover: everyone on new, nobody back.
    assert!(runs[4].iter().all(|w| w[0].iter().all(|g| g.pool == "new")));

    // The key came from ECS, not from the resolver's address.
    let control = server.control.unwrap();
    let by_ecs = metric(control, "dnsshift_sticky_answers_total{key=\"ecs\"}").unwrap();
    assert!(by_ecs >= (CLIENTS * 2) as u64, "{by_ecs}");
    let ecs = metric(control, "dnsshift_ecs_queries_total").unwrap();
    assert!(ecs >= by_ecs, "{ecs} < {by_ecs}");
}
