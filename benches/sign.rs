//! How long a plan build takes when a zone of 1,000 shifted names is
//! signed (issue 20): the first build signs every RRset, a rebuild after a
//! phase change takes most signatures from the cache. Wall-clock, one run
//! each of several builds; the median is printed.
//!
//!     cargo bench --bench sign [-- SERVICES]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use dnsshift::answer::{ConfigOnly, Plan};
use dnsshift::config::source::Source;
use dnsshift::stats::Stats;

/// Builds of each kind measured (the median is reported).
const BUILDS: usize = 5;

fn zone_text(services: usize) -> String {
    let mut z = String::from(
        "[zone]\norigin = \"shift.test.\"\nnameservers = [\"ns1\"]\nhostmaster = \"h.shift.test.\"\nrecords = \"ns1 IN A 127.0.0.1\"\n[zone.dnssec]\nkeys = [\"k.pem\"]\n",
    );
    for i in 0..services {
        let (a, b) = (i / 250, i % 250);
        z.push_str(&format!(
            "[[service]]\nname = \"s{i}\"\nstaging = \"s{i}-next\"\ninitial_phase = \"round-robin\"\n[service.pools]\nold = [\"10.{a}.{b}.1\", \"10.{a}.{b}.2\"]\nnew = [\"10.{a}.{b}.3\", \"2001:db8:{a:x}:{b:x}::1\"]\n[service.health]\nkind = \"none\"\n"
        ));
    }
    z
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let services: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    dnsshift::dnssec::keygen(
        &dir.path().join("k.pem"),
        hickory_proto::dnssec::Algorithm::ECDSAP256SHA256,
    )
    .unwrap();
    let text = zone_text(services);
    let load = || {
        dnsshift::zone::parse(&Source {
            path: dir.path().join("z.toml"),
            text: text.clone(),
        })
        .unwrap()
    };
    let unsigned = {
        let mut z = load();
        z.dnssec = None;
        z
    };
    let stats = Stats::default();
    let time = |zone: &dnsshift::zone::Zone, serial: u32| {
        let t = Instant::now();
        let plan = Plan::build(std::slice::from_ref(zone), &ConfigOnly, &stats, serial);
        let s = t.elapsed().as_secs_f64();
        (s, plan)
    };
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut plain = Vec::new();
    let mut summary = None;
    for i in 0..BUILDS {
        // A freshly loaded zone has an empty signature cache.
        let zone = load();
        let (s, _) = time(&zone, 1);
        cold.push(s);
        // A rebuild (new serial): the answers' signatures come from the cache.
        let (s, plan) = time(&zone, 2 + i as u32);
        warm.push(s);
        summary = plan.dnssec_summary().into_iter().next();
        plain.push(time(&unsigned, 1).0);
    }
    let (_, names, sigs, signed, reused) = summary.unwrap();
    println!(
        "{services} services ({names} names in the NSEC chain, {sigs} signed RRsets), median of {BUILDS}:"
    );
    println!("  first build (signs everything): {:.3} s", median(cold));
    println!(
        "  rebuild (signed {signed}, reused {reused}): {:.3} s",
        median(warm)
    );
    println!("  unsigned build:                 {:.3} s", median(plain));
}
