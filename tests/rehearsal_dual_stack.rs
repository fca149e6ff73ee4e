//! A dual-stack migration rehearsal: the old pool has IPv4 load balancers
//! only, the new one IPv4 and IPv6 (::1), and every client prefers IPv6:
//! it resolves AAAA and A through a real `unbound` resolver (caching as
//! usual) and tries the IPv6 addresses first. The weights govern the name,
//! not each record family, so such clients never reach new before a phase
//! gives it weight, nor after a rollback to such a phase; in a 90/10 phase
//! they reach it 0.1 + 0.9 × 0.1 = 19% of the time (A and AAAA are drawn
//! independently; the README's "Phases, weights and health" explains it).
//!
//! Run by hand (prints the timeline):
//!     cargo test --release --test rehearsal_dual_stack -- --nocapture
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod rehearsal_kit;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::backend::Backend;
use common::*;
use rehearsal_kit::*;

#[test]
fn ipv6_preferring_clients_follow_the_weights_of_the_name() {
    let tl = Timeline::start();
    // Load balancers: old on two IPv4 addresses, new on one IPv4 address
    // and ::1, all on one port.
    let first = Backend::http(&format!("{}:0", OLD[0]));
    let port = first.addr.port();
    let mut backends: BTreeMap<&str, Backend> = BTreeMap::new();
    backends.insert(OLD[0], first);
    for ip in [OLD[1], NEW[0]] {
        backends.insert(ip, Backend::http(&format!("{ip}:{port}")));
    }
    backends.insert(NEW_V6, Backend::http(&format!("[{NEW_V6}]:{port}")));
    tl.note(format!(
        "load balancers up on port {port}: old {OLD:?}, new [{}, {NEW_V6}]",
        NEW[0]
    ));

    let server = Setup::new(
        &[(
            "shift.example.toml",
            &zone_with(service(port).pool("new", &[NEW[0], NEW_V6])),
        )],
        "",
    )
    .start();
    tl.note(format!("dnsshift ready on {}", server.dns));
    let resolvers = start_resolvers(&tl, &[server.dns]);
    let clients = Clients::start_with(&resolvers, port, false, client_request_v6_first);
    // Positive answers and a drawn pool's NODATA are both cached for the
    // TTL (2 s), which resolvers count in whole seconds.
    let settle = TTL + Duration::from_secs(1);
    let pause = |d: Duration| std::thread::sleep(d);
    let control = server.control.unwrap();
    let mark = || Mark {
        at: Instant::now(),
        draws: main_answers(control),
    };

    // separate-domain: new has weight 0, for AAAA too.
    let sd = mark();
    pause(Duration::from_secs(8));
    let sd_end = mark();

    op(&server, &tl, &["advance", "www", "--reason", "start 90/10"]);
    pause(settle);
    let rr = mark();
    pause(Duration::from_secs(40));
    let rr_end = mark();
    let st: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["status", "www", "--json"])).unwrap();
    tl.note(format!(
        "status shares in rr-90-10: {}",
        st["services"][0]["shares"]
    ));

    op(
        &server,
        &tl,
        &["rollback", "www", "--reason", "rehearse the escape hatch"],
    );
    pause(settle);
    let back = mark();
    pause(Duration::from_secs(8));
    let back_end = mark();

    op(
        &server,
        &tl,
        &["advance", "www", "--to", "cutover", "--reason", "cutover"],
    );
    pause(settle);
    let cut = mark();
    pause(Duration::from_secs(6));
    let cut_end = mark();
    let (outcomes, _) = clients.finish();

    // 1. Zero failed client requests.
    assert_no_failures(&tl, &outcomes, &[]);
    let via_v6 = |from: Mark, to: Mark| {
        outcomes
            .iter()
            .filter(|o| o.at >= from.at && o.at < to.at)
            .filter(|o| o.served_by.is_some_and(|ip| ip.is_ipv6()))
            .count()
    };

    // 2. Before any phase gives new weight, and after the rollback to such
    // a phase, no IPv6-preferring client reaches new.
    for (name, from, to) in [
        ("separate-domain", sd, sd_end),
        ("separate-domain after rollback", back, back_end),
    ] {
        let (share, requests, _) = split(&outcomes, from, to);
        tl.note(format!(
            "{name}: {requests} requests, {:.1}% reached new",
            share * 100.0
        ));
        assert!(requests > 100, "{name}: too few requests");
        assert_eq!(share, 0.0, "{name}: IPv6-preferring clients reached new");
    }

    // 3. In 90/10 they reach new 0.1 + 0.9 × 0.1 = 19% of the time. Each
    // outcome rests on an A and an AAAA draw; dnsshift's answer counter
    // counts both, so the independent draws behind the share are about
    // half of them.
    let (share, requests, draws) = split(&outcomes, rr, rr_end);
    let v6 = via_v6(rr, rr_end);
    assert!(v6 > 0, "AAAA never answered ::1 in 90/10");
    // AAAA alone answers ::1 for new's 10%.
    assert_split(
        &tl,
        "rr-90-10, over IPv6",
        0.10,
        (v6 as f64 / requests.max(1) as f64, requests, draws / 2),
    );
    assert_split(
        &tl,
        "rr-90-10, IPv6-preferring",
        0.19,
        (share, requests, draws / 2),
    );

    // 4. After the cutover every request reaches new, over IPv6.
    let (share, requests, _) = split(&outcomes, cut, cut_end);
    tl.note(format!(
        "cutover: {requests} requests, {:.1}% reached new, {} over IPv6",
        share * 100.0,
        via_v6(cut, cut_end)
    ));
    assert_eq!(
        share, 1.0,
        "cutover: old reached after the caches turned over"
    );
    assert_eq!(via_v6(cut, cut_end), requests, "cutover: ::1 comes first");
    drop(resolvers);
    drop(backends);
}
