//! Hosts as the cluster sees them (issue 11): `advance` waits for every live
//! host and names the ones lagging behind; a host that stops is shown gone
//! in `status`. Issue 16: a host whose zones differ is named, its serial
//! rises with its zone change, and history says who ran a command where.
//! Real dnsshift hosts on 127.0.0.2, 127.0.0.3 (and 127.0.0.4) and a real
//! three-member etcd, as in tests/cluster.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::cluster::*;
use common::etcd::EtcdCluster;
use common::{ServiceBuilder, ZoneBuilder, bin, field, is_msg, poll, zone_of};

const ORIGIN: &str = "shift.test.";

/// `www` with the given phases (name, old weight, new weight).
fn zone(phases: &[(&str, u32, u32)]) -> String {
    let www = phases.iter().fold(
        ServiceBuilder::unchecked("www", &["127.0.8.1"], &["127.0.8.3"]).ttl("5s"),
        |s, (name, old, new)| s.phase(name, &[("old", *old), ("new", *new)]),
    );
    zone_of([www])
}

fn host(etcd: &EtcdCluster, node: &str, ip: &str, zone: &str) -> Host {
    Host::start(etcd, node, ip, ORIGIN, &[("shift.test.toml", zone)])
}

#[test]
fn advance_waits_for_every_live_host_and_names_the_one_lagging_behind() {
    let etcd = EtcdCluster::start(3);
    let three = zone(&[("old", 100, 0), ("mix", 50, 50), ("new", 0, 100)]);
    // ns2's zones lack "new": it cannot apply a state in that phase and
    // keeps serving the previous one, live but behind.
    let two = zone(&[("old", 100, 0), ("mix", 50, 50)]);
    let a = host(&etcd, "ns1", "127.0.0.2", &three);
    let b = host(&etcd, "ns2", "127.0.0.3", &two);
    a.ok(&["advance", "www", "--reason", "both can"]);
    let before = await_agreement(&[&a, &b], "www", "mix", "advance to mix");
    // Both hosts are live in ns1's view before the change that ns2 cannot follow.
    poll(AGREE_TIMEOUT, Duration::from_millis(20), || {
        let st = a.status();
        ["ns1", "ns2"]
            .iter()
            .all(|n| host_entry(&st, n).is_some_and(|h| h["live"] == true && h["epoch"] == before))
            .then_some(())
    })
    .expect("ns1 sees both hosts live at the same epoch");

    let run = a.run(&["advance", "www", "--reason", "ns2 cannot"]);
    assert_eq!(run.code, Some(0), "the change is made either way: {run}");
    assert!(
        run.took >= Duration::from_secs(4),
        "advance returned before the 5 s wait for ns2: {run}"
    );
    assert!(
        run.stderr.contains("ns2") && !run.stderr.contains("ns1 ("),
        "the warning names ns2, the host lagging behind, and only it: {run}"
    );
    let after = a.marker().unwrap().epoch;
    assert!(after > before);
    assert_eq!(
        b.marker().unwrap().epoch,
        before,
        "ns2 still serves the old state"
    );
    let st = a.status();
    assert_eq!(host_entry(&st, "ns2").unwrap()["epoch"], before, "{st}");
    assert_eq!(host_entry(&st, "ns1").unwrap()["epoch"], after, "{st}");
}

#[test]
fn a_stopped_host_is_shown_gone_in_status_and_its_drain_still_counts() {
    let etcd = EtcdCluster::start(3);
    let z = zone(&[("old", 100, 0), ("new", 0, 100)]);
    let a = host(&etcd, "ns1", "127.0.0.2", &z);
    let mut b = host(&etcd, "ns2", "127.0.0.3", &z);
    await_agreement(&[&a, &b], "www", "old", "start");
    a.await_live("ns2");
    b.a("www.shift.test.");
    let answered = now_ms();
    b.kill9();
    // The lease (5 s) lapses: ns2 is no longer live, but still listed.
    let mut last = serde_json::Value::Null;
    let gone = poll(Duration::from_secs(15), Duration::from_millis(100), || {
        last = a.status();
        host_entry(&last, "ns2").filter(|h| h["live"] == false)
    });
    let gone = gone.unwrap_or_else(|| panic!("ns2 never shown gone: {last}"));
    assert!(
        gone["last_seen_ms"].as_u64().unwrap() >= answered - 2000,
        "{gone}"
    );
    // Its answers of old still count for the drain on ns1: at least its
    // last report + lease TTL + TTL after the advance.
    a.ok(&["advance", "www", "--reason", "ns2 is gone"]);
    let st = a.status();
    let drained = pool(&st, "www", "old")["drained_at_ms"].as_u64().unwrap();
    let seen = gone["last_seen_ms"].as_u64().unwrap();
    assert!(
        drained >= seen + 5000 + 5000,
        "drained_at_ms {drained} must count ns2 until its last report {seen} + lease 5 s + TTL 5 s: {st}"
    );
    // Status says that the gone host holds up the drain, in JSON and text.
    assert_eq!(pool(&st, "www", "old")["drain_held_by"], "ns2", "{st}");
    let text = a.ok(&["status"]);
    assert!(
        text.contains("(set by GONE host ns2's last answers)"),
        "{text}"
    );
    // Forgotten, it no longer counts: ns1's own answers set the deadline.
    a.ok(&["cluster", "forget", "ns2"]);
    let st = poll(Duration::from_secs(5), Duration::from_millis(50), || {
        let st = a.status();
        host_entry(&st, "ns2").is_none().then_some(st)
    })
    .unwrap_or_else(|| panic!("ns2 still listed after forget: {}", a.status()));
    let old = pool(&st, "www", "old");
    assert!(old.get("drain_held_by").is_none(), "{st}");
    assert!(old["drained_at_ms"].as_u64().unwrap() < drained, "{st}");
}

/// `www` (phases old, new) and one static record `static A <ip>`.
fn zone_with_record(ip: &str) -> String {
    let www = ServiceBuilder::unchecked("www", &["127.0.8.1"], &["127.0.8.3"])
        .ttl("5s")
        .phase("old", &[("old", 100), ("new", 0)])
        .phase("new", &[("old", 0), ("new", 100)]);
    ZoneBuilder::new(ORIGIN)
        .record(&format!("static IN A {ip}"))
        .service(www)
        .to_toml()
}

/// Every host answers the same SOA serial (polled: each applies on its own).
fn one_serial(hosts: &[&Host]) -> u32 {
    let mut last = Vec::new();
    poll(AGREE_TIMEOUT, Duration::from_millis(20), || {
        last = hosts.iter().map(|h| h.serial()).collect::<Vec<_>>();
        last.windows(2).all(|w| w[0] == w[1]).then(|| last[0])
    })
    .unwrap_or_else(|| panic!("SOA serials differ: {last:?}"))
}

/// Which hosts `status --json` on `on` marks as serving different zones,
/// polled until it is `want` (host reports arrive every second).
fn await_marked(on: &Host, want: &[&str]) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    poll(AGREE_TIMEOUT, Duration::from_millis(50), || {
        last = on.status();
        let marked: Vec<&str> = last["hosts"]
            .as_array()?
            .iter()
            .filter(|h| h["zones_differ"] == true)
            .filter_map(|h| h["node"].as_str())
            .collect();
        (marked == want).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("{} never marked exactly {want:?}: {last}", on.node))
}

#[test]
fn a_host_whose_zones_differ_is_named_and_every_zone_change_raises_its_serial() {
    let etcd = EtcdCluster::start(3);
    let z1 = zone_with_record("192.0.2.1");
    let a = host(&etcd, "ns1", "127.0.0.2", &z1);
    let b = host(&etcd, "ns2", "127.0.0.3", &z1);
    let c = host(&etcd, "ns3", "127.0.0.4", &z1);
    await_agreement(&[&a, &b, &c], "www", "old", "start");
    let start = one_serial(&[&a, &b, &c]);
    let digest = a.marker().unwrap().zones;
    assert_eq!(b.marker().unwrap().zones, digest);
    assert_eq!(c.marker().unwrap().zones, digest);
    let st = await_marked(&a, &[]);
    assert_eq!(st["zones"], digest.as_str(), "{st}");

    // ns3's static record changes: it serves other data, under a new serial.
    let z2 = zone_with_record("192.0.2.2");
    std::fs::write(c.dir().join("zones/shift.test.toml"), &z2).unwrap();
    let reload = c.run(&["reload"]);
    assert_eq!(reload.code, Some(0), "{reload}");
    let changed = c.serial();
    assert!(
        changed > start,
        "ns3's serial {changed} did not rise from {start} with its zones: {reload}"
    );
    assert_eq!(c.a("static.shift.test."), ["192.0.2.2"]);
    assert_eq!(a.a("static.shift.test."), ["192.0.2.1"]);
    let odd = c.marker().unwrap().zones;
    assert_ne!(odd, digest, "the TXT tells the zones apart");
    assert!(
        reload.stderr.contains("different zones") && reload.stderr.contains("ns3"),
        "the reload warns that ns3 now differs: {reload}"
    );

    // ns1 marks ns3, and only it; its own serial stayed.
    let st = await_marked(&a, &["ns3"]);
    assert_eq!(host_entry(&st, "ns3").unwrap()["zones"], odd.as_str());
    assert_eq!(a.serial(), start);
    assert_eq!(b.serial(), start);
    let human = a.ok(&["status"]);
    assert!(human.contains(&format!("{odd} DIFFERS")), "{human}");
    let dry = a.run(&["advance", "www", "--dry-run"]);
    assert_eq!(dry.code, Some(0), "{dry}");
    assert!(
        dry.stderr.contains("different zones")
            && dry.stderr.contains(&format!("ns3 serves zones={odd}")),
        "advance --dry-run names ns3: {dry}"
    );
    assert!(!dry.stderr.contains("ns1 serves"), "{dry}");

    // The others get the same zones: one serial again, above all before.
    for h in [&a, &b] {
        std::fs::write(h.dir().join("zones/shift.test.toml"), &z2).unwrap();
        h.ok(&["reload"]);
    }
    let same = one_serial(&[&a, &b, &c]);
    assert!(
        same > changed,
        "{same} after the others' reload, {changed} before"
    );
    await_marked(&a, &[]);
}

#[test]
fn history_says_which_host_ran_a_command_and_who_asked() {
    let etcd = EtcdCluster::start(3);
    let z = zone(&[("old", 100, 0), ("mix", 50, 50), ("new", 0, 100)]);
    let a = host(&etcd, "ns1", "127.0.0.2", &z);
    let b = host(&etcd, "ns2", "127.0.0.3", &z);
    a.ok(&["advance", "www", "--actor", "alice", "--reason", "first"]);
    await_agreement(&[&a, &b], "www", "mix", "advance on ns1");
    // Without --actor the CLI sends the login name.
    let run = as_login(&b, "dave", &["advance", "www", "--reason", "second"]);
    assert_eq!(run.code, Some(0), "{run}");
    await_agreement(&[&a, &b], "www", "new", "advance on ns2");

    let events = a.history("www");
    let who: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["node"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(who, [("ns1", "alice"), ("ns2", "dave")], "{events:?}");
    let text = a.ok(&["history", "www"]);
    let last = text.lines().last().unwrap();
    assert!(last.contains("dave") && last.contains("ns2"), "{text}");
    let st = a.status();
    let change = &st["services"][0]["last_change"];
    assert_eq!(
        (change["node"].as_str(), change["actor"].as_str()),
        (Some("ns2"), Some("dave")),
        "{st}"
    );
    let human = a.ok(&["status"]);
    assert!(
        human.contains("last change  advance new by dave on ns2"),
        "{human}"
    );
    // An actor that is no login name is refused, naming the option.
    let bad = a.run(&["rollback", "www", "--actor", "two words"]);
    assert_eq!(bad.code, Some(2), "{bad}");
    assert!(bad.stderr.contains("--actor"), "{bad}");
    // A login name the daemon would refuse is left out, not a refusal.
    let run = as_login(&b, "John Smith", &["rollback", "www", "--reason", "third"]);
    assert_eq!(run.code, Some(0), "{run}");
    let events = a.history("www");
    let last = events.last().unwrap();
    assert_eq!(last["node"], "ns2", "{events:?}");
    assert!(last.get("actor").is_none_or(|a| a.is_null()), "{events:?}");
}

/// Runs the CLI against `host` as a user whose login name is `login` (no
/// `--actor`, no `sudo`).
fn as_login(host: &Host, login: &str, args: &[&str]) -> Run {
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("--config")
        .arg(host.dir().join("dnsshift.toml"))
        .env(
            "DNSSHIFT_CONTROL",
            format!("http://{}", host.server().control.unwrap()),
        )
        .env_remove("SUDO_USER")
        .env_remove("DNSSHIFT_ACTOR")
        .env_remove("USER")
        .env("LOGNAME", login)
        .current_dir(host.dir());
    run_command(cmd.args(args), args)
}

/// etcd keeps every revision of every key until a compaction drops it, and
/// each host writes one a second (its report): a host compacts the
/// revisions older than `cluster.compact_revisions`, so a read at a
/// revision from before is refused as compacted, and the hosts still
/// follow every change.
#[test]
fn hosts_compact_etcds_old_revisions_and_keep_following_changes() {
    let etcd = EtcdCluster::start(1);
    let zone = zone(&[("old", 100, 0), ("mix", 50, 50), ("new", 0, 100)]);
    let table = format!(
        "{}compact_revisions = \"1s\"\n",
        cluster_table(&etcd, "ns1")
    );
    let setup = host_setup(
        &[("shift.test.toml", &zone)],
        "127.0.0.2",
        "ns1",
        "",
        &table,
    );
    let a = Host::start_in(setup.dir, "ns1", "127.0.0.2", ORIGIN);
    let b = host(&etcd, "ns2", "127.0.0.3", &zone);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client =
        dnsshift::state::etcd::Etcd::new(dnsshift::state::etcd::EtcdOptions::new(etcd.endpoints()))
            .unwrap();
    let compacted_before = |revision: i64| {
        let gone = poll(Duration::from_secs(20), Duration::from_millis(200), || {
            matches!(
                rt.block_on(client.get_prefix_at("/dnsshift/", revision)),
                Err(dnsshift::state::etcd::EtcdError::Compacted { .. })
            )
            .then_some(())
        });
        assert!(gone.is_some(), "revision {revision} was never compacted");
    };
    let (_, started) = rt.block_on(client.get("/dnsshift/state")).unwrap();
    compacted_before(started);
    // Said once at info level (then at debug level every round).
    let lines = a.server().log.lines();
    let said: Vec<&String> = lines
        .iter()
        .filter(|l| {
            is_msg(
                l,
                "compacted etcd's old revisions before revision; from now on every `every` (cluster.compact_revisions)",
            )
        })
        .collect();
    assert_eq!(said.len(), 1, "{said:#?}");
    assert_eq!(
        field(said[0], "every").as_deref(),
        Some("1s"),
        "{}",
        said[0]
    );
    // Rounds go on (at debug level); the hosts keep following commands
    // made on either of them.
    a.ok(&["advance", "www", "--reason", "after compaction"]);
    await_agreement(&[&a, &b], "www", "mix", "advance on ns1");
    b.ok(&["advance", "www", "--reason", "from the other host"]);
    await_agreement(&[&a, &b], "www", "new", "advance on ns2");
    let (_, now) = rt.block_on(client.get("/dnsshift/state")).unwrap();
    compacted_before(now);
}

/// A host keeps the recent shared history it read and later reads only the
/// keys after it: `history` (every service, the last 1,000) on ns1 shows
/// changes made on either host after its first read, in order; and when
/// etcd's history falls behind what it read, it reads everything again.
#[test]
fn recent_history_follows_changes_made_on_any_host() {
    let etcd = EtcdCluster::start(1);
    let z = zone(&[("old", 100, 0), ("mix", 50, 50), ("new", 0, 100)]);
    let a = host(&etcd, "ns1", "127.0.0.2", &z);
    let b = host(&etcd, "ns2", "127.0.0.3", &z);
    let reasons = |h: &Host| -> Vec<(String, String)> {
        let v: serde_json::Value = serde_json::from_str(&h.ok(&["history", "--json"])).unwrap();
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["node"].as_str().unwrap_or_default().to_string(),
                    e["reason"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let pairs = |want: &[(&str, &str)]| -> Vec<(String, String)> {
        want.iter()
            .map(|(n, r)| (n.to_string(), r.to_string()))
            .collect()
    };
    a.ok(&["advance", "www", "--reason", "r1"]);
    await_agreement(&[&a, &b], "www", "mix", "r1");
    assert_eq!(reasons(&a), pairs(&[("ns1", "r1")]));
    b.ok(&["advance", "www", "--reason", "r2"]);
    await_agreement(&[&a, &b], "www", "new", "r2");
    b.ok(&["rollback", "www", "--reason", "r3"]);
    await_agreement(&[&a, &b], "www", "mix", "r3");
    let three = pairs(&[("ns1", "r1"), ("ns2", "r2"), ("ns2", "r3")]);
    assert_eq!(reasons(&a), three);
    assert_eq!(
        reasons(&a),
        three,
        "a read with nothing new changes nothing"
    );
    a.ok(&["rollback", "www", "--reason", "r4"]);
    assert_eq!(
        reasons(&a),
        pairs(&[("ns1", "r1"), ("ns2", "r2"), ("ns2", "r3"), ("ns1", "r4")])
    );
    assert_eq!(reasons(&b).len(), 4, "ns2's first read has every event");

    // etcd's history no longer reaches the newest entry ns1 read (an etcd
    // restored from an older backup, here the three newest keys deleted):
    // ns1 reads everything again, rather than keep entries etcd has lost,
    // and then follows incrementally from there.
    {
        use dnsshift::state::cluster::Layout;
        use dnsshift::state::etcd::{Etcd, EtcdOptions};
        let client = Etcd::new(EtcdOptions::new(etcd.endpoints())).unwrap();
        let prefix = Layout::new("/dnsshift").history_prefix();
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let kvs = client.get_prefix(&prefix).await.unwrap().kvs;
            assert_eq!(
                kvs.len(),
                4,
                "{:?}",
                kvs.iter().map(|kv| &kv.key).collect::<Vec<_>>()
            );
            for kv in &kvs[1..] {
                client.delete(&kv.key).await.unwrap();
            }
        });
    }
    assert_eq!(reasons(&a), pairs(&[("ns1", "r1")]));
    b.ok(&["advance", "www", "--reason", "r5"]);
    assert_eq!(reasons(&a), pairs(&[("ns1", "r1"), ("ns2", "r5")]));
}
