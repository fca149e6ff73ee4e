//! A migration rehearsal with real parts only: dnsshift, real HTTP load
//! balancers on distinct loopback addresses, real `unbound` resolvers caching
//! dnsshift's answers as usual, and clients that resolve through them and make
//! HTTP requests through every phase, a rollback, an endpoint outage and the
//! decommissioning of the old pool. It asserts that no client request fails.
//!
//! Run by hand (prints the timeline):
//!     cargo test --release --test rehearsal -- --nocapture
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod rehearsal_kit;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;
use rehearsal_kit::*;

#[test]
fn migration_rehearsal_through_a_real_resolver_has_zero_failed_requests() {
    let tl = Timeline::start();
    let start = tl.start;
    let (port, mut backends) = load_balancers(&tl);

    let server = Setup::new(&[("shift.example.toml", &zone(port))], "").start();
    tl.note(format!("dnsshift ready on {}", server.dns));
    let resolvers = start_resolvers(&tl, &[server.dns]);
    let clients = Clients::start(&resolvers, port);
    // Resolvers count TTLs in whole seconds: give caches TTL + 1 s to turn
    // over before measuring a phase.
    let settle = TTL + Duration::from_secs(1);
    let pause = |d: Duration| std::thread::sleep(d);
    let control = server.control.unwrap();
    let mark = || Mark {
        at: Instant::now(),
        draws: main_answers(control),
    };

    // separate-domain: main name old only, staging name new only.
    pause(Duration::from_secs(6));
    let t_rr = Instant::now();
    op(&server, &tl, &["advance", "www", "--reason", "start 90/10"]);
    pause(settle);
    let rr1 = mark();
    pause(Duration::from_secs(40) - settle);
    let rr1_end = mark();
    op(&server, &tl, &["advance", "www", "--reason", "50/50"]);
    pause(settle);
    let half1 = mark();
    pause(Duration::from_secs(5));

    // An outage of one new load balancer during round-robin.
    let t_stop = Instant::now();
    backends.get_mut(NEW[0]).unwrap().stop();
    tl.note(format!("stopped new load balancer {}", NEW[0]));
    pause(Duration::from_secs(6));
    backends.get_mut(NEW[0]).unwrap().restart();
    let t_restart = Instant::now();
    tl.note(format!("restarted new load balancer {}", NEW[0]));
    pause(Duration::from_secs(6));
    let half1_end = mark();

    op(
        &server,
        &tl,
        &["rollback", "www", "--reason", "rehearse the escape hatch"],
    );
    pause(settle);
    let rr2 = mark();
    pause(Duration::from_secs(14) - settle);
    let rr2_end = mark();
    op(&server, &tl, &["advance", "www", "--reason", "50/50 again"]);
    pause(settle);
    let half2 = mark();
    pause(Duration::from_secs(24) - settle);
    let half2_end = mark();
    op(&server, &tl, &["advance", "www", "--reason", "cutover"]);
    // From the command's return, as every other phase's window: an answer
    // given just before it may be cached for the TTL plus up to a second
    // (resolvers count whole seconds), which is what `settle` covers.
    let t_cutover = Instant::now();

    // Drain: wait until status says old is drained plus grace.
    let st = await_old_drained(|| {
        serde_json::from_str(&server.cli_ok(&["status", "www", "--json"])).unwrap()
    });
    let drained_at_ms = st["drained_at_ms"].as_u64().unwrap();
    tl.note(format!(
        "status: old drained at {}",
        drained_at_ms - tl.wall_start_ms
    ));
    op(
        &server,
        &tl,
        &["decommission", "www", "old", "--reason", "drained"],
    );
    pause(Duration::from_secs(3));
    let (outcomes, staging) = clients.finish();
    let end = Instant::now();

    // Health flips as dnsshift logged them.
    for l in server.log.lines() {
        if is_msg(&l, "endpoint unhealthy") || is_msg(&l, "endpoint healthy") {
            tl.note(format!(
                "dnsshift log: {} {} ({})",
                field(&l, "message").unwrap(),
                field(&l, "endpoint").unwrap(),
                field(&l, "reason").unwrap_or_default()
            ));
        }
    }

    // 1. Zero failed client requests.
    assert_no_failures(&tl, &outcomes, &staging);

    // 2. The split in each round-robin phase (after the caches turned over).
    assert_split(&tl, "rr-90-10", 0.10, split(&outcomes, rr1, rr1_end));
    assert_split(
        &tl,
        "rr-90-10 after rollback",
        0.10,
        split(&outcomes, rr2, rr2_end),
    );
    let (s1, n1, d1) = split(&outcomes, half1, half1_end);
    let (s2, n2, d2) = split(&outcomes, half2, half2_end);
    let both = (
        (s1 * n1 as f64 + s2 * n2 as f64) / (n1 + n2) as f64,
        n1 + n2,
        d1 + d2,
    );
    assert_split(&tl, "rr-50-50 (both periods)", 0.5, both);
    assert_pure_phases(&outcomes, start..t_rr, t_cutover + settle..end);

    // 3. The staging name reaches only new.
    let staging_old = staging
        .iter()
        .filter(|o| o.served_by.is_some_and(is_old))
        .count();
    tl.note(format!(
        "staging name: {} requests, {staging_old} reached old",
        staging.len()
    ));
    assert_eq!(staging_old, 0);

    // 4. Nothing reaches old after the drain deadline status printed.
    assert_drain_honoured(&tl, &outcomes, &backends, drained_at_ms);

    // 5. The stopped endpoint gets no attempts once fall checks + one TTL passed.
    // fall checks (plus the probe in flight and its timeout), then one TTL,
    // which resolvers count in whole seconds (up to 1 s more).
    let quiet_from = t_stop + INTERVAL * (FALL + 1) + CHECK_TIMEOUT + TTL + Duration::from_secs(1);
    let stopped: IpAddr = NEW[0].parse().unwrap();
    let late = outcomes
        .iter()
        .filter(|o| o.at >= quiet_from && o.at < t_restart && o.tried.contains(&stopped))
        .count();
    let attempts_during = outcomes
        .iter()
        .filter(|o| o.at >= t_stop && o.at < t_restart && o.tried.contains(&stopped))
        .count();
    tl.note(format!(
        "stopped endpoint: {attempts_during} client attempts while down, {late} after fall checks + TTL"
    ));
    assert_eq!(late, 0, "clients were still sent to the stopped endpoint");

    // 6. After decommission, old is never answered, not even as standby.
    let m = server.query(NAME, RecordType::A);
    assert!(answers(&m).iter().all(|a| NEW.contains(&a.as_str())));
    let events = tl.events.lock().unwrap().len();
    eprintln!(
        "rehearsal finished in {:.1}s ({events} timeline entries)",
        start.elapsed().as_secs_f64()
    );
    drop(resolvers);
}
