//! The etcd client and the shared-state operations against a real etcd
//! (Debian's etcd-server 3.4) on loopback: compare-and-swap, watches across
//! member failures, leases, compaction, unreachable clusters, TLS and auth.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::etcd::{EtcdCluster, ServerTls};
use dnsshift::state::cluster::{Cluster, Commit, HostReport, Layout, PoolAnswers};
use dnsshift::state::etcd::{Change, Credentials, Etcd, EtcdError, EtcdOptions, Put, WatchEvent};

/// Bound on one awaited etcd operation in a test.
const OP_TIMEOUT: Duration = Duration::from_secs(15);

fn client(endpoints: Vec<String>) -> Etcd {
    let mut opts = EtcdOptions::new(endpoints);
    opts.request_timeout = Duration::from_secs(1);
    Etcd::new(opts).unwrap()
}

fn cluster(etcd: Etcd, node: &str) -> Cluster {
    Cluster::new(etcd, Layout::new("/dnsshift"), node.into())
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(OP_TIMEOUT, f)
        .await
        .expect("etcd operation did not finish in time")
}

/// Waits for the next batch of changes on `watch`, retrying while etcd is
/// unreachable, up to `timeout`.
async fn next_changes(watch: &mut dnsshift::state::etcd::Watch, timeout: Duration) -> Vec<Change> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, watch.next()).await {
            Ok(Ok(WatchEvent::Changes(c))) => return c,
            Ok(Ok(other)) => panic!("unexpected watch event {other:?}"),
            Ok(Err(e)) => assert!(Instant::now() < deadline, "watch failed: {e}"),
            Err(_) => panic!("no change within {timeout:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_lets_exactly_one_writer_win() {
    let etcd = EtcdCluster::start(1);
    let a = cluster(client(etcd.endpoints()), "ns1");
    let b = cluster(client(etcd.endpoints()), "ns2");

    let first = bounded(a.commit(0, b"{\"v\":1}", b"{\"h\":1}"))
        .await
        .unwrap();
    let Commit::Done { epoch } = first else {
        panic!("first commit refused: {first:?}")
    };
    // Creating again from "no state" is a conflict naming the real epoch.
    assert_eq!(
        bounded(b.commit(0, b"{}", b"{}")).await.unwrap(),
        Commit::Conflict { epoch }
    );

    // Both read epoch `epoch`, both commit from it at once.
    let (ra, rb) = bounded(async {
        tokio::join!(
            a.commit(epoch, b"{\"v\":\"a\"}", b"{\"h\":\"a\"}"),
            b.commit(epoch, b"{\"v\":\"b\"}", b"{\"h\":\"b\"}")
        )
    })
    .await;
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let (winner, won_epoch, loser) = match (&ra, &rb) {
        (Commit::Done { epoch: e }, Commit::Conflict { epoch: c }) => ("a", *e, *c),
        (Commit::Conflict { epoch: c }, Commit::Done { epoch: e }) => ("b", *e, *c),
        other => panic!("expected exactly one winner, got {other:?}"),
    };
    assert_eq!(loser, won_epoch, "the refusal names the winner's epoch");
    assert!(won_epoch > epoch);

    // State and history agree with the winner, as both hosts read them.
    for host in [&a, &b] {
        let loaded = bounded(host.load()).await.unwrap();
        let (e, state) = loaded.state.unwrap();
        assert_eq!(e, won_epoch);
        assert_eq!(state, format!("{{\"v\":\"{winner}\"}}").into_bytes());
        let history = bounded(host.history(None)).await.unwrap();
        assert_eq!(history.len(), 2, "{history:?}");
        assert_eq!((history[0].base_epoch, history[0].epoch), (0, epoch));
        assert_eq!(
            (history[1].base_epoch, history[1].epoch),
            (epoch, won_epoch)
        );
        assert_eq!(
            history[1].entry,
            format!("{{\"h\":\"{winner}\"}}").into_bytes()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_delivers_a_change_within_a_second() {
    let etcd = EtcdCluster::start(1);
    let a = cluster(client(etcd.endpoints()), "ns1");
    let b = cluster(client(etcd.endpoints()), "ns2");
    let loaded = bounded(b.load()).await.unwrap();
    let mut watch = b.watch(loaded.revision + 1);
    // A first change proves the stream is open, as a running host's would be.
    bounded(a.etcd().put(&Put {
        key: "/dnsshift/marker".into(),
        value: b"x".to_vec(),
        lease: None,
    }))
    .await
    .unwrap();
    let first = next_changes(&mut watch, Duration::from_secs(5)).await;
    assert_eq!(first[0].key(), "/dnsshift/marker");
    let watcher = tokio::spawn(async move {
        let changes = next_changes(&mut watch, Duration::from_secs(5)).await;
        (Instant::now(), changes)
    });

    let sent = Instant::now();
    let Commit::Done { epoch } = bounded(a.commit(0, b"{\"v\":1}", b"{}")).await.unwrap() else {
        panic!("commit refused")
    };
    let (seen, changes) = bounded(watcher).await.unwrap();
    assert!(
        seen.duration_since(sent) < Duration::from_secs(1),
        "change seen after {:?}",
        seen.duration_since(sent)
    );
    let state = changes
        .iter()
        .find(|c| c.key() == "/dnsshift/state")
        .unwrap();
    assert_eq!(state.revision(), epoch);
    assert!(matches!(state, Change::Put(kv) if kv.value == b"{\"v\":1}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_commands_survive_a_killed_member() {
    let mut etcd = EtcdCluster::start(3);
    // The watcher prefers member 0; the writer member 1.
    let watcher = cluster(client(etcd.endpoints()), "ns1");
    let mut rotated = etcd.endpoints();
    rotated.rotate_left(1);
    let writer = cluster(client(rotated), "ns2");

    let Commit::Done { epoch: e1 } = bounded(writer.commit(0, b"1", b"h1")).await.unwrap() else {
        panic!("commit refused")
    };
    let mut watch = watcher.watch(e1);
    let c = next_changes(&mut watch, Duration::from_secs(5)).await;
    assert!(c.iter().any(|c| c.revision() == e1), "{c:?}");

    etcd.kill(0);
    let started = Instant::now();
    // Commands still work with one member of three gone (the watcher's
    // client fails over too).
    let Commit::Done { epoch: e2 } = bounded(watcher.commit(e1, b"2", b"h2")).await.unwrap() else {
        panic!("commit refused")
    };
    let Commit::Done { epoch: e3 } = bounded(writer.commit(e2, b"3", b"h3")).await.unwrap() else {
        panic!("commit refused")
    };
    // The watch resumes on another member and misses nothing.
    let mut seen = Vec::new();
    while !seen.contains(&e3) {
        for c in next_changes(&mut watch, Duration::from_secs(10)).await {
            if c.key() == "/dnsshift/state" {
                seen.push(c.revision());
            }
        }
    }
    assert_eq!(seen, vec![e2, e3]);
    eprintln!("watch resumed after {:?}", started.elapsed());

    // The killed member comes back and catches up.
    etcd.restart(0);
    let only0 = client(vec![etcd.endpoints()[0].clone()]);
    let (kv, _) = bounded(only0.get("/dnsshift/state")).await.unwrap();
    assert_eq!(kv.unwrap().mod_revision, e3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_removes_the_live_key_and_keeps_the_record() {
    let etcd = EtcdCluster::start(1);
    let host = cluster(client(etcd.endpoints()), "ns1");
    let other = cluster(client(etcd.endpoints()), "ns2");
    let lease = bounded(host.etcd().lease_grant(Duration::from_secs(2)))
        .await
        .unwrap();
    let report = HostReport {
        node: "ns1".into(),
        applied_epoch: 0,
        published_ms: 1_000,
        lease_ttl_s: lease.ttl as u64,
        from_local_copy: false,
        pools: vec![PoolAnswers {
            service: "www.example.".into(),
            pool: "old".into(),
            last_answered_ms: Some(900),
            ttl_s: 30,
            answers: 0,
        }],
        endpoints: vec![],
        zones: Some("0123456789abcdef".into()),
    };
    let rev = bounded(host.publish(lease.id, &report)).await.unwrap();
    let mut watch = other.watch(rev + 1);
    assert!(
        bounded(host.etcd().lease_keep_alive(lease.id))
            .await
            .unwrap()
            > 0
    );

    let loaded = bounded(other.load()).await.unwrap();
    assert_eq!(loaded.hosts.len(), 1);
    assert!(loaded.hosts[0].live);
    assert_eq!(loaded.hosts[0].report, report);

    // The host stops keeping its lease alive: etcd deletes the live key.
    let stopped = Instant::now();
    let changes = next_changes(&mut watch, Duration::from_secs(10)).await;
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, Change::Delete { key, .. } if key == "/dnsshift/live/ns1")),
        "{changes:?}"
    );
    eprintln!("lease expired after {:?}", stopped.elapsed());
    let loaded = bounded(other.load()).await.unwrap();
    assert_eq!(loaded.hosts.len(), 1, "the durable record stays");
    assert!(!loaded.hosts[0].live);
    let e = bounded(host.etcd().lease_keep_alive(lease.id))
        .await
        .unwrap_err();
    assert!(matches!(e, EtcdError::LeaseExpired { .. }), "{e}");
    // Publishing on the dead lease is refused, naming the lease.
    let e = bounded(host.publish(lease.id, &report)).await.unwrap_err();
    assert!(e.to_string().contains("lease"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_forces_a_full_reread() {
    let etcd = EtcdCluster::start(1);
    let a = cluster(client(etcd.endpoints()), "ns1");
    let Commit::Done { epoch: e1 } = bounded(a.commit(0, b"1", b"h")).await.unwrap() else {
        panic!("commit refused")
    };
    let Commit::Done { epoch: e2 } = bounded(a.commit(e1, b"2", b"h")).await.unwrap() else {
        panic!("commit refused")
    };
    let Commit::Done { epoch: e3 } = bounded(a.commit(e2, b"3", b"h")).await.unwrap() else {
        panic!("commit refused")
    };
    bounded(a.etcd().compact(e3, true)).await.unwrap();

    // A host that last saw e1 (it was offline) resumes its watch from e1 + 1.
    let mut watch = a.watch(e1 + 1);
    let ev = bounded(watch.next()).await.unwrap();
    assert_eq!(
        ev,
        WatchEvent::Compacted {
            compact_revision: e3
        }
    );
    let e = bounded(a.etcd().get_prefix_at("/dnsshift/", e1))
        .await
        .unwrap_err();
    assert!(
        matches!(e, EtcdError::Compacted { revision, .. } if revision == e1),
        "{e}"
    );

    // The full re-read has the latest state; watching on from it works.
    let loaded = bounded(a.load()).await.unwrap();
    assert_eq!(loaded.state, Some((e3, b"3".to_vec())));
    watch.restart(loaded.revision + 1);
    let Commit::Done { epoch: e4 } = bounded(a.commit(e3, b"4", b"h")).await.unwrap() else {
        panic!("commit refused")
    };
    let c = next_changes(&mut watch, Duration::from_secs(5)).await;
    assert!(c.iter().any(|c| c.revision() == e4), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_fails_fast_naming_etcd() {
    let mut etcd = EtcdCluster::start(3);
    let endpoints = etcd.endpoints();
    let c = cluster(client(endpoints.clone()), "ns1");
    bounded(c.load()).await.unwrap();
    for i in 0..3 {
        etcd.kill(i);
    }
    let started = Instant::now();
    let e = bounded(c.commit(0, b"x", b"h")).await.unwrap_err();
    let took = started.elapsed();
    let msg = e.to_string();
    assert!(matches!(e, EtcdError::Unavailable { .. }), "{msg}");
    assert!(msg.starts_with("etcd unreachable"), "{msg}");
    for ep in &endpoints {
        assert!(msg.contains(ep.as_str()), "{msg} does not name {ep}");
    }
    assert!(took < Duration::from_secs(3), "took {took:?}");

    // A member that accepts connections but never answers (hung, or a
    // black-holed network) costs one request timeout, not more.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_url = format!("http://{}", hung.local_addr().unwrap());
    let c = client(vec![hung_url.clone(), endpoints[0].clone()]);
    let started = Instant::now();
    let e = bounded(c.get("/dnsshift/state")).await.unwrap_err();
    let took = started.elapsed();
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("etcd at {hung_url} did not answer within 1s")),
        "{msg}"
    );
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    // A watch opening on such members gives up as quickly.
    let mut watch = c.watch("/dnsshift/", 1);
    let started = Instant::now();
    let e = bounded(watch.next()).await.unwrap_err();
    assert!(e.to_string().starts_with("etcd unreachable"), "{e}");
    assert!(started.elapsed() < Duration::from_millis(2500));
}

/// CA, server and client certificates for 127.0.0.1 in `dir`.
fn make_tls(dir: &std::path::Path) -> (ServerTls, Vec<u8>) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |purposes: Vec<ExtendedKeyUsagePurpose>| {
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.extended_key_usages = purposes;
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    // etcd 3.4's JSON gateway dials its own gRPC port with the server
    // certificate as client certificate: it needs client auth too.
    let (server_cert, server_key) = leaf(vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ]);
    let (client_cert, client_key) = leaf(vec![ExtendedKeyUsagePurpose::ClientAuth]);
    let tls = ServerTls {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&tls.ca, ca.pem()).unwrap();
    std::fs::write(&tls.cert, server_cert).unwrap();
    std::fs::write(&tls.key, server_key).unwrap();
    (tls, format!("{client_cert}{client_key}").into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let mut identity = Vec::new();
    let etcd = EtcdCluster::start_with(1, |dir| {
        let (tls, id) = make_tls(dir);
        identity = id;
        Some(tls)
    });
    let ca_pem = std::fs::read(etcd.dir().join("ca.pem")).unwrap();

    let mut opts = EtcdOptions::new(etcd.endpoints());
    opts.ca_pem = Some(ca_pem.clone());
    opts.identity_pem = Some(identity);
    let c = cluster(Etcd::new(opts).unwrap(), "ns1");
    // Poll until the member has elected itself (its /health needs a cert).
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        match bounded(c.commit(0, b"tls", b"h")).await {
            Ok(r) => break r,
            Err(e) => assert!(Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(matches!(first, Commit::Done { .. }), "{first:?}");
    assert_eq!(
        bounded(c.load()).await.unwrap().state.map(|s| s.1),
        Some(b"tls".to_vec())
    );

    // Without a client certificate etcd refuses the connection, and the
    // error says so and names the endpoint.
    let mut opts = EtcdOptions::new(etcd.endpoints());
    opts.ca_pem = Some(ca_pem);
    let e = bounded(Etcd::new(opts).unwrap().get("/dnsshift/state"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&etcd.endpoints()[0]), "{e}");
    // Without the CA our client refuses etcd's certificate.
    let mut opts = EtcdOptions::new(etcd.endpoints());
    opts.identity_pem = Some(make_tls(tempfile::tempdir().unwrap().path()).1);
    let e = bounded(Etcd::new(opts).unwrap().get("/dnsshift/state"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_auth() {
    let etcd = EtcdCluster::start(1);
    let root = client(etcd.endpoints());
    // Enable auth the way an etcd operator would: root user, root role.
    let http = reqwest::Client::new();
    let ep = &etcd.endpoints()[0];
    for (path, body) in [
        (
            "/v3/auth/user/add",
            r#"{"name":"root","password":"s3cret"}"#,
        ),
        ("/v3/auth/role/add", r#"{"name":"root"}"#),
        ("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#),
        ("/v3/auth/enable", "{}"),
    ] {
        let r = http
            .post(format!("{ep}{path}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{path}: {}",
            r.text().await.unwrap()
        );
    }

    // Without credentials etcd refuses, and the error says who refused.
    let e = bounded(root.get("/dnsshift/state")).await.unwrap_err();
    assert!(
        matches!(e, EtcdError::Server { .. })
            && e.to_string().starts_with(&format!("etcd at {ep} refused")),
        "{e}"
    );
    let with = |password: &str| {
        let mut opts = EtcdOptions::new(etcd.endpoints());
        opts.credentials = Some(Credentials {
            user: "root".into(),
            password: password.into(),
        });
        cluster(Etcd::new(opts).unwrap(), "ns1")
    };
    let c = with("s3cret");
    assert!(matches!(
        bounded(c.commit(0, b"auth", b"h")).await.unwrap(),
        Commit::Done { .. }
    ));
    assert_eq!(
        bounded(c.load()).await.unwrap().state.map(|s| s.1),
        Some(b"auth".to_vec())
    );
    let e = bounded(with("wrong").load()).await.unwrap_err();
    assert!(e.to_string().contains("authentication failed"), "{e}");
}

/// Runs `dnsshift --config <setup's> check` and returns (success, stderr).
fn check_with_cluster(table: &str) -> (bool, String) {
    let setup = common::Setup::new(
        &[("z.toml", &common::ZoneBuilder::new("shift.test.").to_toml())],
        table,
    );
    let out = std::process::Command::new(common::bin())
        .arg("--config")
        .arg(setup.config())
        .arg("check")
        .current_dir(setup.dir.path())
        .env_remove("DNSSHIFT_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_validates_the_cluster_table() {
    let (ok, stderr) = check_with_cluster(
        "[cluster]\netcd = [\"http://127.0.0.1:2379\", \"http://127.0.0.2:2379\"]\nnode = \"ns1\"\n",
    );
    assert!(ok, "a valid [cluster] table was refused: {stderr}");

    // The table starts on line 7 of the harness's dnsshift.toml.
    let (ok, stderr) = check_with_cluster("[cluster]\netcd = [\"127.0.0.1:2379\"]\n");
    assert!(!ok);
    assert!(
        stderr.contains(
            "dnsshift.toml:8: cluster.etcd: \"127.0.0.1:2379\": write an etcd client URL"
        ),
        "{stderr}"
    );
    let (ok, stderr) =
        check_with_cluster("[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nuser = \"dnsshift\"\n");
    assert!(!ok);
    assert!(
        stderr.contains("dnsshift.toml:9: cluster.user: a user needs password or password_file"),
        "{stderr}"
    );
}

/// Issue 16: a zone generation is a fresh revision each time a host starts
/// serving a digest, at least the floor asked for, and a full read and the
/// watch both carry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_generation_is_a_fresh_revision_at_least_the_floor() {
    let etcd = EtcdCluster::start(1);
    let host = cluster(client(etcd.endpoints()), "ns1");
    let other = cluster(client(etcd.endpoints()), "ns2");
    let first = bounded(host.register_zones("aaaa", 1, 0)).await.unwrap();
    let mut watch = other.watch(first + 1);
    let again = bounded(other.register_zones("aaaa", 2, 0)).await.unwrap();
    assert!(
        again > first,
        "the same digest again: {again} after {first}"
    );
    let changes = next_changes(&mut watch, Duration::from_secs(1)).await;
    assert!(
        changes
            .iter()
            .any(|c| c.key() == "/dnsshift/zones/aaaa" && c.revision() == again),
        "{changes:?}"
    );
    let floor = again + 5;
    let lifted = bounded(host.register_zones("bbbb", 3, floor))
        .await
        .unwrap();
    assert!(
        lifted >= floor && lifted < floor + 2,
        "{lifted}, floor {floor}"
    );
    let loaded = bounded(other.load()).await.unwrap();
    let mut zones = loaded.zones;
    zones.sort();
    assert_eq!(
        zones,
        [("aaaa".to_string(), again), ("bbbb".to_string(), lifted)]
    );
}
