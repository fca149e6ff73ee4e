//! DNS cookies in a cluster without `[cookies] secret_file` (issue 21): two
//! real hosts (127.0.0.2, 127.0.0.3) on a real etcd share the secret
//! through `<prefix>/secrets/cookies`, so a server cookie one made is valid
//! on the other (`dig +cookie`, the `valid` counter); `dnsshift cookies
//! rotate` on one host reaches the other, and a cookie made before it stays
//! valid under the previous secret; a host restarted while etcd is down
//! still accepts the cluster's cookies from its local copy; one restarted
//! without that copy runs on a secret of its own, and `status --check`
//! says so until etcd is back. A secret found
//! older than `[cookies] rotate` is rotated by exactly one host; a value no
//! host can read is replaced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::*;
use common::etcd::EtcdCluster;
use common::{Server, ServiceBuilder, metric, poll, zone_of};
use serde_json::Value;

const ORIGIN: &str = "shift.test.";

fn start_host(etcd: &EtcdCluster, node: &str, ip: &str) -> Host {
    let zone = zone_of([ServiceBuilder::unchecked(
        "www",
        &["127.0.8.1"],
        &["127.0.8.3"],
    )]);
    Host::start(etcd, node, ip, ORIGIN, &[("shift.test.toml", &zone)])
}

/// `dig +cookie[=COOKIE]` from 127.0.0.1 (the address both hosts check
/// the cookie against) to `server`: the server cookie the answer carries
/// (48 hex digits: client and server cookie) and whether dig called it good.
fn dig_cookie(server: &Server, cookie: Option<&str>) -> (String, bool) {
    let arg = cookie.map_or("+cookie".to_string(), |c| format!("+cookie={c}"));
    let out = Command::new("dig")
        .arg(format!("@{}", server.dns.ip()))
        .args(["-p", &server.dns.port().to_string(), "-b", "127.0.0.1"])
        .args([
            "+time=5",
            "+tries=1",
            "+norecurse",
            &arg,
            "www.shift.test",
            "A",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `dig` ({e}): install bind9-dnsutils"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dig {arg}:\n{text}");
    assert!(text.contains("status: NOERROR"), "{text}");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("; COOKIE: "))
        .unwrap_or_else(|| panic!("no COOKIE in dig {arg}:\n{text}"));
    let hex = line.split_whitespace().next().unwrap().to_string();
    assert_eq!(hex.len(), 48, "{line}");
    (hex, line.ends_with("(good)"))
}

/// `dnsshift_dns_cookies_total{result="valid"}` on `server`.
fn valid(server: &Server) -> u64 {
    metric(
        server.control.unwrap(),
        "dnsshift_dns_cookies_total{result=\"valid\"}",
    )
    .unwrap_or(0)
}

/// Waits until `server`'s valid counter exceeds `before` (the page is
/// rendered at most once a second).
fn await_valid(server: &Server, before: u64, what: &str) {
    poll(Duration::from_secs(5), Duration::from_millis(100), || {
        (valid(server) > before).then_some(())
    })
    .unwrap_or_else(|| panic!("{what}: the valid cookie count stayed at {before}"));
}

/// A query with `cookie` is answered as valid by `host`: the counter rises.
fn assert_valid_on(host: &Host, cookie: &str, what: &str) -> String {
    let before = valid(host.server());
    let (reply, good) = dig_cookie(host.server(), Some(cookie));
    assert!(good, "{what}: {reply}");
    await_valid(host.server(), before, what);
    reply
}

/// The `cookies` object of `status --json`.
fn cookies_status(host: &Host) -> Value {
    host.status()["cookies"].clone()
}

#[test]
fn hosts_share_the_secret_through_etcd_rotate_it_together_and_keep_it_across_an_outage() {
    let mut etcd = EtcdCluster::start(1);
    // Both start at once: exactly one creates the shared secret.
    let (a, mut b) = std::thread::scope(|s| {
        let a = s.spawn(|| start_host(&etcd, "ns1", "127.0.0.2"));
        let b = s.spawn(|| start_host(&etcd, "ns2", "127.0.0.3"));
        (a.join().unwrap(), b.join().unwrap())
    });
    const CREATED: &str = "created the shared DNS cookie secret in etcd";
    let created = [&a, &b]
        .iter()
        .filter(|h| h.server().log.lines().iter().any(|l| l.contains(CREATED)))
        .count();
    assert_eq!(created, 1, "exactly one host creates the shared secret");
    let (sa, sb) = (cookies_status(&a), cookies_status(&b));
    assert_eq!(sa["source"], "etcd", "{sa}");
    assert_eq!(sb["source"], "etcd", "{sb}");
    assert_eq!(sa["made_ms"], sb["made_ms"], "one secret: {sa} {sb}");
    assert_eq!(sa["rotate_s"], 86400, "default rotate 1d: {sa}");
    assert_eq!(
        sa["next_rotation_ms"].as_u64(),
        sa["made_ms"].as_u64().map(|m| m + 86_400_000),
        "{sa}"
    );
    // Never the secret itself, in status or in the log.
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(b.dir().join("state/cookie-secret.json")).unwrap(),
    )
    .unwrap();
    let secret = record["current"].as_str().unwrap().to_string();
    assert_eq!(secret.len(), 32, "{record}");
    for h in [&a, &b] {
        assert!(!h.status().to_string().contains(&secret));
        assert!(h.server().log.lines().iter().all(|l| !l.contains(&secret)));
    }
    {
        use std::os::unix::fs::MetadataExt;
        let mode = std::fs::metadata(b.dir().join("state/cookie-secret.json"))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the local copy is its owner's only");
    }

    // A server cookie from ns1 is valid on ns2, and echoed there (young,
    // made with the current secret).
    let (from_a, _) = dig_cookie(a.server(), None);
    let echoed = assert_valid_on(&b, &from_a, "ns1's cookie on ns2");
    assert_eq!(echoed, from_a, "ns2 echoes ns1's cookie");

    // Rotation on ns1 reaches ns2 within the watch.
    let made = sa["made_ms"].as_u64().unwrap();
    let out = a.ok(&["cookies", "rotate", "--json"]);
    let rotated: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rotated["source"], "etcd", "{rotated}");
    assert_eq!(rotated["previous"], true, "{rotated}");
    let new_made = rotated["made_ms"].as_u64().unwrap();
    assert!(new_made > made, "{rotated}");
    poll(Duration::from_secs(5), Duration::from_millis(50), || {
        (cookies_status(&b)["made_ms"].as_u64() == Some(new_made)).then_some(())
    })
    .unwrap_or_else(|| panic!("ns2 never installed the rotated secret: {}", b.status()));
    // The cookie made before the rotation: valid on both (the previous
    // secret), and replaced by one of the new secret.
    let renewed_b = assert_valid_on(&b, &from_a, "the old cookie on ns2 after the rotation");
    let renewed_a = assert_valid_on(&a, &from_a, "the old cookie on ns1 after the rotation");
    for r in [&renewed_a, &renewed_b] {
        assert_ne!(r, &from_a, "a new cookie for the old one");
        assert_eq!(r[..16], from_a[..16], "the same client cookie");
    }
    // ns2's new cookies are ns1's: echoed there.
    let (fresh_b, _) = dig_cookie(b.server(), None);
    assert_eq!(
        assert_valid_on(&a, &fresh_b, "ns2's new cookie on ns1"),
        fresh_b
    );
    assert_eq!(
        assert_valid_on(&b, &renewed_a, "ns1's new cookie on ns2"),
        renewed_a
    );

    // ns2 restarted while etcd is down: the cluster's secret from its
    // local copy, so ns1's cookies are still valid there.
    etcd.kill(0);
    b.kill9();
    b.restart();
    assert_eq!(
        assert_valid_on(&b, &fresh_b, "a cookie after a restart without etcd"),
        fresh_b
    );
    let st = cookies_status(&b);
    assert_eq!(st["source"], "local_copy", "{st}");
    assert_eq!(st["made_ms"].as_u64(), Some(new_made), "{st}");
    // The local copy is the cluster's secret: `status --check` names the
    // etcd outage, not the cookies.
    let check = status_check(&b);
    assert!(check.contains("etcd unreachable"), "{check}");
    assert!(!check.contains("DNS cookies"), "{check}");
    // etcd returns: the shared secret from etcd again.
    etcd.restart(0);
    poll(Duration::from_secs(15), Duration::from_millis(100), || {
        (cookies_status(&b)["source"] == "etcd").then_some(())
    })
    .unwrap_or_else(|| panic!("ns2 never read the secret from etcd again: {}", b.status()));
    assert_eq!(cookies_status(&b)["made_ms"].as_u64(), Some(new_made));

    // Restarted while etcd is down and without its local copy, ns2 makes a
    // secret of its own, and `status --check` says so until etcd is back.
    etcd.kill(0);
    b.kill9();
    std::fs::remove_file(b.dir().join("state/cookie-secret.json")).unwrap();
    b.restart();
    assert_eq!(cookies_status(&b)["source"], "random", "{}", b.status());
    let check = status_check(&b);
    assert!(
        check
            .lines()
            .any(|l| l.starts_with("DNS cookies: this host uses a random secret of its own")),
        "{check}"
    );
    etcd.restart(0);
    poll(Duration::from_secs(15), Duration::from_millis(100), || {
        (cookies_status(&b)["source"] == "etcd").then_some(())
    })
    .unwrap_or_else(|| panic!("ns2 never read the secret from etcd: {}", b.status()));
    let check = status_check(&b);
    assert!(!check.contains("DNS cookies"), "{check}");
}

/// What `status --check` on `host` prints (its problems, one a line).
fn status_check(host: &Host) -> String {
    host.server().cli(&["status", "--check"]).1
}

#[test]
fn an_overdue_shared_secret_is_rotated_by_exactly_one_host_and_a_malformed_one_replaced() {
    use dnsshift::state::cluster::{Cluster, CookieSecretRecord, Layout};
    use dnsshift::state::etcd::{CasOutcome, Etcd, EtcdOptions};
    let etcd = EtcdCluster::start(1);
    let a = start_host(&etcd, "ns1", "127.0.0.2");
    let b = start_host(&etcd, "ns2", "127.0.0.3");
    let (before, _) = dig_cookie(a.server(), None);
    // Make the shared secret look a day and an hour old (default rotate:
    // 1d), as a host would find it after the cluster ran that long.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = Cluster::new(
        Etcd::new(EtcdOptions::new(etcd.endpoints())).unwrap(),
        Layout::new("/dnsshift"),
        "test".into(),
    );
    let old_made = now_ms() - 25 * 3600 * 1000;
    rt.block_on(async {
        let (revision, bytes) =
            tokio::time::timeout(Duration::from_secs(15), client.cookie_secret())
                .await
                .unwrap()
                .unwrap()
                .expect("a host created the shared secret");
        let mut record: CookieSecretRecord = serde_json::from_slice(&bytes).unwrap();
        record.made_ms = old_made;
        let out = client.swap_cookie_secret(revision, &record).await.unwrap();
        assert!(matches!(out, CasOutcome::Committed { .. }), "{out:?}");
    });
    // Both hosts see it due; one rotates, the other adopts its secret.
    let made = |h: &Host| cookies_status(h)["made_ms"].as_u64().unwrap_or(0);
    // Waits until both hosts hold one secret made after `after`.
    let await_new = |after: u64, what: &str| {
        poll(Duration::from_secs(10), Duration::from_millis(100), || {
            let (ma, mb) = (made(&a), made(&b));
            (ma == mb && ma > after).then_some(())
        })
        .unwrap_or_else(|| panic!("{what}: {} {}", cookies_status(&a), cookies_status(&b)))
    };
    await_new(old_made, "the overdue secret was not rotated on both hosts");
    const ROTATED: &str = "rotated the shared DNS cookie secret";
    let rotations = || -> usize {
        [&a, &b]
            .iter()
            .map(|h| {
                h.server()
                    .log
                    .lines()
                    .iter()
                    .filter(|l| l.contains(ROTATED))
                    .count()
            })
            .sum()
    };
    // The log line may reach the test a moment after the status.
    poll(Duration::from_secs(5), Duration::from_millis(50), || {
        (rotations() >= 1).then_some(())
    })
    .expect("the rotating host logs it");
    // A second rotation would follow within a look (a second): none does.
    let second = poll(Duration::from_secs(2), Duration::from_millis(100), || {
        (rotations() > 1).then_some(())
    });
    assert!(
        second.is_none(),
        "exactly one host rotates: {} rotations",
        rotations()
    );
    assert_eq!(made(&a), made(&b));
    // A cookie from before: valid on both under the previous secret.
    for h in [&a, &b] {
        let renewed = assert_valid_on(h, &before, "a cookie from before the rotation");
        assert_ne!(renewed, before, "{}", h.node);
    }

    // A value no host can use (written by hand) is replaced by a new
    // secret, which both hosts install.
    let rotated = made(&a);
    rt.block_on(async {
        let key = Layout::new("/dnsshift").cookie_secret();
        let put = [dnsshift::state::etcd::Put {
            key,
            value: b"{not json".to_vec(),
            lease: None,
        }];
        tokio::time::timeout(Duration::from_secs(15), client.etcd().put_all(&put))
            .await
            .unwrap()
            .unwrap();
    });
    await_new(rotated, "the malformed secret was not replaced");
    let (fresh_a, _) = dig_cookie(a.server(), None);
    assert_eq!(assert_valid_on(&b, &fresh_a, "after the repair"), fresh_a);
}
