//! Sticky assignment on several nameservers (issue 18): two real dnsshift
//! hosts sharing their state through a real etcd answer every client key
//! identically, before and after a phase change: the seed comes from the
//! zone file they share and the hash is pinned, so no host-local state
//! enters the choice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::cluster::*;
use common::etcd::EtcdCluster;
use common::{ServiceBuilder, zone_of};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};

const ORIGIN: &str = "shift.test.";
const NAME: &str = "www.shift.test.";
/// Client networks asked through ECS.
const ECS_CLIENTS: usize = 1000;
/// Resolver networks asked without ECS (sources 127.0.N.1).
const RESOLVERS: u8 = 100;

fn zone() -> String {
    zone_of([ServiceBuilder::unchecked(
        "www",
        &["127.0.8.1", "127.0.8.2", "fd00::1"],
        &["127.0.8.3", "127.0.8.4", "fd00::3", "fd00::4"],
    )
    .set("assignment", "\"sticky\"")
    .max_answers(1)
    .phase("p90", &[("old", 90), ("new", 10)])
    .phase("p50", &[("old", 50), ("new", 50)])])
}

/// The answer (first record's data) and the ECS scope of one query.
fn ask(sock: &UdpSocket, host: SocketAddr, t: RecordType, ecs: Option<IpAddr>) -> String {
    let mut q = Message::new(fastrand::u16(..), MessageType::Query, OpCode::Query);
    q.add_query(Query::query(
        hickory_proto::rr::Name::from_ascii(NAME).unwrap(),
        t,
    ));
    if let Some(net) = ecs {
        let mut e = Edns::new();
        e.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(net, 24, 0)));
        q.set_edns(e);
    }
    let bytes = q.to_vec().unwrap();
    let mut buf = [0u8; 2048];
    for _ in 0..3 {
        sock.send_to(&bytes, host).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let m = Message::from_vec(&buf[..n]).unwrap();
            if m.metadata.id == q.metadata.id {
                return format!("{:?} {:?}", m.answers, m.edns.map(|e| e.options().clone()));
            }
        }
    }
    panic!("no answer from {host}");
}

/// Every key's answers from `host`: ECS clients, then resolvers, A and AAAA.
fn answers(host: &Host) -> Vec<String> {
    let addr = host.server().dns;
    let mut out = Vec::new();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for i in 0..ECS_CLIENTS {
        let net = IpAddr::from([10, (i >> 8) as u8, i as u8, 0]);
        for t in [RecordType::A, RecordType::AAAA] {
            out.push(ask(&sock, addr, t, Some(net)));
        }
    }
    for r in 0..RESOLVERS {
        let sock = UdpSocket::bind((IpAddr::from([127, 0, r, 1]), 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for t in [RecordType::A, RecordType::AAAA] {
            out.push(ask(&sock, addr, t, None));
        }
    }
    out
}

#[test]
fn two_hosts_on_etcd_answer_every_sticky_key_identically() {
    let etcd = EtcdCluster::start(3);
    let z = zone();
    let zones = [("shift.test.toml", z.as_str())];
    let a = Host::start(&etcd, "ns1", "127.0.0.2", ORIGIN, &zones);
    let b = Host::start(&etcd, "ns2", "127.0.0.3", ORIGIN, &zones);
    await_agreement(&[&a, &b], "www", "p90", "start");
    for phase in ["p90", "p50"] {
        if phase != "p90" {
            a.ok(&["advance", "www", "--to", phase]);
            await_agreement(&[&a, &b], "www", phase, "advance");
        }
        let (from_a, from_b) = (answers(&a), answers(&b));
        let differ = from_a.iter().zip(&from_b).filter(|(x, y)| x != y).count();
        assert_eq!(differ, 0, "{phase}: {differ} keys answered differently");
        // Not one answer for all: the keys spread over both pools and
        // several endpoints.
        let distinct: std::collections::BTreeSet<&String> = from_a.iter().collect();
        assert!(distinct.len() >= 4, "{phase}: {distinct:?}");
        // Asked again, every key gets the same answer.
        assert_eq!(from_a, answers(&a), "{phase}: a key changed its answer");
    }
}
