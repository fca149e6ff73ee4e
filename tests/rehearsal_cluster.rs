//! The migration rehearsal (tests/rehearsal.rs) with two nameservers: two
//! dnsshift hosts on 127.0.0.2 and 127.0.0.3 share one state through a real
//! three-member etcd, and every `unbound` resolver has both as stub
//! addresses of the zone, spreading its queries between them. Operator
//! commands alternate between the hosts. It asserts zero failed client
//! requests, that both hosts answered, the split per round-robin phase over
//! both hosts' answers, that both hosts serve every change at one epoch, and
//! that the drain deadline is one for the cluster and honoured by every
//! client whichever host its resolver asked.
//!
//! Run by hand (prints the timeline):
//!     cargo test --test rehearsal_cluster -- --nocapture
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod rehearsal_kit;

use std::time::{Duration, Instant};

use common::cluster::{AGREE_TIMEOUT, Host, await_agreement, pool};
use common::etcd::EtcdCluster;
use common::poll;
use rehearsal_kit::*;

/// A command on `host`, noted in the timeline; then both hosts must serve
/// `phase` at one epoch.
fn op_on(host: &Host, hosts: &[&Host], tl: &Timeline, args: &[&str], phase: &str) {
    op(host.server(), tl, args);
    let what = format!("{} on {}", args.join(" "), host.node);
    let epoch = await_agreement(hosts, "www", phase, &what);
    tl.note(format!("both hosts serve www={phase} at epoch {epoch}"));
}

#[test]
fn two_nameserver_rehearsal_through_real_resolvers_has_zero_failed_requests() {
    let tl = Timeline::start();
    let start = tl.start;
    let etcd = EtcdCluster::start(3);
    tl.note(format!("etcd up: {:?}", etcd.endpoints()));
    let (port, backends) = load_balancers(&tl);
    let z = zone(port);
    let zones = [("shift.example.toml", z.as_str())];
    let a = Host::start(&etcd, "ns1", "127.0.0.2", ORIGIN, &zones);
    let b = Host::start(&etcd, "ns2", "127.0.0.3", ORIGIN, &zones);
    let hosts = [&a, &b];
    tl.note(format!(
        "dnsshift ns1 on {}, ns2 on {}",
        a.server().dns,
        b.server().dns
    ));
    let resolvers = start_resolvers(&tl, &[a.server().dns, b.server().dns]);
    let clients = Clients::start(&resolvers, port);

    let settle = TTL + Duration::from_secs(1);
    let pause = |d: Duration| std::thread::sleep(d);
    let (ca, cb) = (a.server().control.unwrap(), b.server().control.unwrap());
    let mark = || Mark {
        at: Instant::now(),
        draws: main_answers(ca) + main_answers(cb),
    };

    // separate-domain. The resolvers spread their queries over both hosts.
    pause(Duration::from_secs(6));
    let (qa, qb) = (main_answers(ca), main_answers(cb));
    tl.note(format!("upstream main-name answers: ns1 {qa}, ns2 {qb}"));
    let total = (qa + qb).max(1);
    assert!(
        qa * 10 >= total && qb * 10 >= total,
        "unbound did not spread queries over both hosts: ns1 {qa}, ns2 {qb}"
    );
    let t_rr = Instant::now();
    op_on(
        &a,
        &hosts,
        &tl,
        &["advance", "www", "--reason", "90/10"],
        "rr-90-10",
    );
    pause(settle);
    let rr1 = mark();
    pause(Duration::from_secs(20) - settle);
    let rr1_end = mark();
    op_on(
        &b,
        &hosts,
        &tl,
        &["advance", "www", "--reason", "50/50"],
        "rr-50-50",
    );
    pause(settle);
    let half = mark();
    pause(Duration::from_secs(20) - settle);
    let half_end = mark();
    op_on(
        &a,
        &hosts,
        &tl,
        &["rollback", "www", "--reason", "escape hatch"],
        "rr-90-10",
    );
    pause(Duration::from_secs(5));
    op_on(
        &b,
        &hosts,
        &tl,
        &["advance", "www", "--reason", "50/50 again"],
        "rr-50-50",
    );
    pause(Duration::from_secs(5));
    op_on(
        &a,
        &hosts,
        &tl,
        &["advance", "www", "--reason", "cutover"],
        "cutover",
    );
    // From the command's return, as every other phase's window (see
    // tests/rehearsal.rs).
    let t_cutover = Instant::now();

    // Drain: wait on ns1's status; ns2 must print the same deadline, and
    // the decommissioning is done on ns2.
    let st = await_old_drained(|| a.status());
    let drained_at_ms = st["drained_at_ms"].as_u64().unwrap();
    tl.note(format!(
        "ns1 status: old drained at {}",
        drained_at_ms - tl.wall_start_ms
    ));
    let mut on_b = serde_json::Value::Null;
    let same = poll(AGREE_TIMEOUT, Duration::from_millis(100), || {
        on_b = pool(&b.status(), "www", "old").clone();
        (on_b["drained_at_ms"] == drained_at_ms).then_some(())
    });
    assert!(
        same.is_some(),
        "the drain deadline differs between hosts: ns1 {drained_at_ms}, ns2 {on_b}"
    );
    op_on(
        &b,
        &hosts,
        &tl,
        &["decommission", "www", "old", "--reason", "drained"],
        "cutover",
    );
    pause(Duration::from_secs(3));
    let (outcomes, staging) = clients.finish();
    let end = Instant::now();

    // 1. Zero failed client requests.
    assert_no_failures(&tl, &outcomes, &staging);

    // 2. The split in each round-robin phase, over both hosts' draws.
    assert_split(&tl, "rr-90-10", 0.10, split(&outcomes, rr1, rr1_end));
    assert_split(&tl, "rr-50-50", 0.5, split(&outcomes, half, half_end));
    assert_pure_phases(&outcomes, start..t_rr, t_cutover + settle..end);

    // 3. The staging name reaches only new.
    assert!(
        !staging.iter().any(|o| o.served_by.is_some_and(is_old)),
        "the staging name reached old"
    );

    // 4. No client resolved old after the cluster's drain deadline, whichever
    // host its resolver had asked.
    assert_drain_honoured(&tl, &outcomes, &backends, drained_at_ms);

    // 5. After decommission neither host answers old.
    for h in hosts {
        let answers = h.a(NAME);
        assert!(
            answers.iter().all(|a| NEW.contains(&a.as_str())),
            "{}: {answers:?}",
            h.node
        );
    }
    eprintln!(
        "two-nameserver rehearsal finished in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    drop(resolvers);
}
