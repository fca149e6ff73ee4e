//! Instructions per query of the UDP answer paths, for `valgrind
//! --tool=callgrind` (instruction counts stay repeatable on a busy machine,
//! unlike wall-clock time). Answers the query mix of the peer benchmark
//! (`benches/peers/queries.txt`: 70% weighted, 20% static, 10% NXDOMAIN)
//! on its zone, with the fast path or with the hickory handler (decode,
//! lookup, encode; no sockets in either). `benches/callgrind.sh` runs it
//! twice per path and prints the difference per query.
//!
//!     cargo bench --bench instructions -- fast 100000
//!     cargo bench --bench instructions -- hickory 100000
//!     cargo bench --bench instructions -- fast-from 100000    (random, with a source address)
//!     cargo bench --bench instructions -- sticky 100000       (`app` sticky, 256 client networks)
//!
//! `signed-do0` and `signed-do1` run the fast path on the same zone signed
//! (a new key in a scratch directory), every query with EDNS, DO=0 or DO=1:
//! what a signed answer costs against an unsigned one (issue 20).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use dnsshift::answer::{ConfigOnly, Plan};
use dnsshift::dns::fallback::handle;
use dnsshift::dns::fast::{respond, respond_from};
use dnsshift::dns::{Handler, MAX_UDP_PAYLOAD};
use dnsshift::stats::Stats;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use hickory_server::net::xfer::Protocol;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mode = args.first().map_or("fast", String::as_str);
    let n: usize = args.get(1).map_or(10_000, |s| s.parse().unwrap());
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers");
    let path = std::path::Path::new(dir).join("shift.test.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    if mode == "sticky" {
        let anchor = "initial_phase = \"split\"\n";
        assert!(text.contains(anchor), "bench zone changed");
        text = text.replace(anchor, &format!("{anchor}assignment = \"sticky\"\n"));
    }
    let scratch = tempfile::tempdir().unwrap();
    let signed = mode.starts_with("signed-");
    let zone = if signed {
        dnsshift::dnssec::keygen(
            &scratch.path().join("k.pem"),
            hickory_proto::dnssec::Algorithm::ECDSAP256SHA256,
        )
        .unwrap();
        dnsshift::zone::parse(&dnsshift::config::source::Source {
            path: scratch.path().join("z.toml"),
            text: format!("{text}\n[zone.dnssec]\nkeys = [\"k.pem\"]\n"),
        })
        .unwrap()
    } else {
        dnsshift::zone::parse(&dnsshift::config::source::Source { path, text }).unwrap()
    };
    let plan = Arc::new(ArcSwap::from_pointee(Plan::build(
        &[zone],
        &ConfigOnly,
        &Stats::default(),
        1,
    )));
    let queries: Vec<Vec<u8>> = std::fs::read_to_string(format!("{dir}/queries.txt"))
        .unwrap()
        .lines()
        .map(|l| {
            let (name, _) = l.split_once(' ').unwrap();
            let mut m = Message::new(42, MessageType::Query, OpCode::Query);
            m.add_query(Query::query(
                Name::from_ascii(format!("{name}.")).unwrap(),
                RecordType::A,
            ));
            if signed {
                let mut e = hickory_proto::op::Edns::new();
                e.set_max_payload(1232);
                e.set_dnssec_ok(mode == "signed-do1");
                m.set_edns(e);
            }
            m.to_vec().unwrap()
        })
        .collect();
    let mut bytes = 0usize;
    match mode {
        "fast" | "signed-do0" | "signed-do1" => {
            let mut out = [0u8; MAX_UDP_PAYLOAD as usize];
            for i in 0..n {
                let q = &queries[i % queries.len()];
                if let dnsshift::dns::fast::Action::Send(len) =
                    respond(&plan.load(), black_box(q), &mut out)
                {
                    bytes += len;
                }
            }
        }
        "fast-from" | "sticky" => {
            // Every query from another client network (resolver address).
            let mut out = [0u8; MAX_UDP_PAYLOAD as usize];
            for i in 0..n {
                let q = &queries[i % queries.len()];
                let src = std::net::IpAddr::from([10, 0, (i % 256) as u8, 1]);
                if let dnsshift::dns::fast::Action::Send(len) =
                    respond_from(&plan.load(), black_box(q), Some(src), &mut out)
                {
                    bytes += len;
                }
            }
        }
        "hickory" => {
            // hickory's decoder, the handler and hickory's encoder, as
            // the fallback runs them.
            let handler = Handler::new(plan.clone());
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
            for i in 0..n {
                let q = &queries[i % queries.len()];
                let out = rt.block_on(handle(&handler, q.clone(), src, Protocol::Udp));
                bytes += out.map_or(0, |o| o.len());
            }
        }
        other => panic!(
            "mode {other:?}: want fast, fast-from, sticky, hickory, signed-do0 or signed-do1"
        ),
    }
    println!("{mode}: {n} queries, {bytes} response bytes");
}
