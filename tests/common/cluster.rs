//! Several dnsshift hosts sharing one migration state through a real etcd
//! (issue 11): each host is the real binary on its own loopback address
//! (127.0.0.2, 127.0.0.3, ...) with its own state directory and a
//! `[cluster]` table naming every etcd member. Helpers read what a host
//! serves (`_dnsshift.<origin>` TXT, SOA serial, answers) and run operator
//! commands with a bound on their time and their exit code.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use serde_json::Value;

use super::etcd::EtcdCluster;
use super::{Server, Setup, answers, bin, poll};

/// Bound on one operator command. A command waits for lagging hosts (5 s)
/// and tries every etcd member (`timeout` each): it must end well within this.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-request etcd timeout the test hosts use (`[cluster] timeout`).
pub const ETCD_TIMEOUT: &str = "1s";
/// How soon a host must apply a change made on another (the contract).
pub const APPLY_WITHIN: Duration = Duration::from_secs(1);
/// Bound on waiting for hosts to agree in a test (well above [`APPLY_WITHIN`]:
/// a failure then says what each host serves).
pub const AGREE_TIMEOUT: Duration = Duration::from_secs(5);

/// One dnsshift host of a cluster: a node id, its own loopback address and
/// scratch directory (kept across a kill and restart).
pub struct Host {
    pub node: String,
    pub ip: IpAddr,
    /// The zone origin whose `_dnsshift` TXT this host is asked for.
    pub origin: String,
    server: Option<Server>,
    stopped: Option<tempfile::TempDir>,
}

/// The `[cluster]` table for `node` naming every member of `etcd`.
pub fn cluster_table(etcd: &EtcdCluster, node: &str) -> String {
    let endpoints: Vec<String> = etcd.endpoints().iter().map(|e| format!("{e:?}")).collect();
    format!(
        "[cluster]\netcd = [{}]\nnode = \"{node}\"\ntimeout = \"{ETCD_TIMEOUT}\"\n",
        endpoints.join(", ")
    )
}

/// A scratch directory for one host: `zones`, and a dnsshift.toml listening
/// on `ip` (port 0) with `server_id = node`, then `extra_config` (top-level
/// keys), then `cluster` (a `[cluster]` table, or "" for a single host).
pub fn host_setup(
    zones: &[(&str, &str)],
    ip: &str,
    node: &str,
    extra_config: &str,
    cluster: &str,
) -> Setup {
    let setup = Setup::new(
        zones,
        &format!("server_id = \"{node}\"\n{extra_config}\n{cluster}"),
    );
    let path = setup.config();
    let text = std::fs::read_to_string(&path).unwrap();
    let default_listen = "listen = [\"127.0.0.1:0\"]";
    assert!(
        text.contains(default_listen),
        "common::Setup changed: {text}"
    );
    std::fs::write(
        &path,
        text.replace(default_listen, &format!("listen = [\"{ip}:0\"]")),
    )
    .unwrap();
    setup
}

impl Host {
    /// Starts a host (`node` on `ip`) of the cluster on `etcd`, serving
    /// `zones`; `origin` is the zone whose `_dnsshift` TXT is read.
    pub fn start(
        etcd: &EtcdCluster,
        node: &str,
        ip: &str,
        origin: &str,
        zones: &[(&str, &str)],
    ) -> Host {
        let setup = host_setup(zones, ip, node, "", &cluster_table(etcd, node));
        Host::start_in(setup.dir, node, ip, origin)
    }

    /// Starts a host in a directory made by [`host_setup`].
    pub fn start_in(dir: tempfile::TempDir, node: &str, ip: &str, origin: &str) -> Host {
        let server = Server::spawn(dir, &[]);
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(server.dns.ip(), ip, "{node} listens on its own address");
        Host {
            node: node.into(),
            ip,
            origin: origin.into(),
            server: Some(server),
            stopped: None,
        }
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        self.server
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.node))
    }

    /// The host's scratch directory (config, zones, state), running or not.
    pub fn dir(&self) -> &std::path::Path {
        match (&self.server, &self.stopped) {
            (Some(s), _) => s.path(),
            (None, Some(d)) => d.path(),
            (None, None) => unreachable!("a host is running or stopped"),
        }
    }

    /// kill -9: the host gets no chance to publish or save anything more.
    pub fn kill9(&mut self) {
        let server = self.server.take().expect("running");
        self.stopped = Some(server.kill());
    }

    /// Starts the host again on its directory (a new port, the same address)
    /// and waits until it reports ready.
    pub fn restart(&mut self) {
        let dir = self.stopped.take().expect("killed before");
        self.server = Some(Server::spawn(dir, &[]));
        assert_eq!(self.server().dns.ip(), self.ip);
    }

    /// Runs an operator command against this host, bounded by
    /// [`COMMAND_TIMEOUT`].
    pub fn run(&self, args: &[&str]) -> Run {
        run_bounded(self.server(), args)
    }

    /// Runs an operator command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, Some(0), "{}: dnsshift {args:?}: {r}", self.node);
        r.stdout
    }

    /// `status --json`.
    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    /// `history SERVICE --json` events.
    pub fn history(&self, service: &str) -> Vec<Value> {
        let v: Value = serde_json::from_str(&self.ok(&["history", service, "--json"])).unwrap();
        v["events"].as_array().cloned().unwrap_or_default()
    }

    /// What `_dnsshift.<origin>` TXT says, or why it says nothing usable.
    pub fn marker(&self) -> Result<Marker, String> {
        let qname = format!("_dnsshift.{}", self.origin);
        let m = self.server().query(&qname, RecordType::TXT);
        Marker::parse(&m).map_err(|e| format!("{} {qname} TXT: {e}", self.node))
    }

    /// Waits until this host's status lists `node` as live: its report has
    /// reached this host, so a command here waits for it. Two hosts can
    /// serve the same epoch a moment before each has read the other's
    /// report.
    pub fn await_live(&self, node: &str) -> Value {
        poll(AGREE_TIMEOUT, Duration::from_millis(20), || {
            let st = self.status();
            host_entry(&st, node)
                .is_some_and(|h| h["live"] == true)
                .then_some(st)
        })
        .unwrap_or_else(|| panic!("{} never saw {node} live: {}", self.node, self.status()))
    }

    /// The zone's SOA serial as this host answers it.
    pub fn serial(&self) -> u32 {
        let m = self.server().query(&self.origin, RecordType::SOA);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
        match m.answers.first().map(|r| &r.data) {
            Some(RData::SOA(soa)) => soa.serial,
            _ => panic!("{}: no SOA answer: {m}", self.node),
        }
    }

    /// The A answers for `name`, as text.
    pub fn a(&self, name: &str) -> Vec<String> {
        let m = self.server().query(name, RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
        answers(&m)
    }
}

/// The `_dnsshift.<origin>` TXT answer: the state a host serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub epoch: u64,
    pub node: String,
    /// Digest of the zones served (`zones=`).
    pub zones: String,
    /// Service short name → phase.
    pub phases: BTreeMap<String, String>,
}

impl Marker {
    /// Reads the strings `epoch=N`, `node=ID`, `zones=DIGEST` and `<service>=<phase>` from
    /// the answer (one TXT record with several strings, or several records:
    /// the contract names the strings, not how they are grouped). Checks AA
    /// and TTL 0.
    pub fn parse(m: &Message) -> Result<Marker, String> {
        if m.metadata.response_code != ResponseCode::NoError {
            return Err(format!("rcode {}", m.metadata.response_code));
        }
        if !m.metadata.authoritative {
            return Err(format!("answer without AA: {m}"));
        }
        let mut strings = Vec::new();
        for r in &m.answers {
            let RData::TXT(txt) = &r.data else {
                return Err(format!("not a TXT answer: {m}"));
            };
            if r.ttl != 0 {
                return Err(format!("TTL {} (must be 0: not cached): {m}", r.ttl));
            }
            for s in txt.txt_data.iter() {
                strings.push(String::from_utf8_lossy(s).into_owned());
            }
        }
        let mut epoch = None;
        let mut node = None;
        let mut zones = None;
        let mut phases = BTreeMap::new();
        for s in &strings {
            let Some((k, v)) = s.split_once('=') else {
                return Err(format!("string {s:?} is not key=value: {m}"));
            };
            match k {
                "epoch" => epoch = Some(v.parse::<u64>().map_err(|e| format!("{s:?}: {e}"))?),
                "node" => node = Some(v.to_string()),
                "zones" => zones = Some(v.to_string()),
                _ => {
                    phases.insert(k.to_string(), v.to_string());
                }
            }
        }
        Ok(Marker {
            epoch: epoch.ok_or_else(|| format!("no epoch=: {strings:?}"))?,
            node: node.ok_or_else(|| format!("no node=: {strings:?}"))?,
            zones: zones.ok_or_else(|| format!("no zones=: {strings:?}"))?,
            phases,
        })
    }
}

/// Waits until every host's TXT shows the same epoch and `service` in
/// `phase`; returns that epoch. Panics after [`AGREE_TIMEOUT`] with what
/// each host served last.
pub fn await_agreement(hosts: &[&Host], service: &str, phase: &str, after: &str) -> u64 {
    let mut last = Vec::new();
    let agreed = poll(AGREE_TIMEOUT, Duration::from_millis(20), || {
        last = hosts.iter().map(|h| h.marker()).collect();
        let markers: Vec<&Marker> = last.iter().filter_map(|m| m.as_ref().ok()).collect();
        (markers.len() == hosts.len()
            && markers.iter().all(|m| {
                m.epoch == markers[0].epoch
                    && m.phases.get(service).map(String::as_str) == Some(phase)
            }))
        .then(|| markers[0].epoch)
    });
    agreed.unwrap_or_else(|| {
        panic!(
            "after {after}: the hosts do not all serve {service}={phase} at one epoch within {AGREE_TIMEOUT:?}; they serve:\n{}",
            describe(hosts, &last)
        )
    })
}

fn describe(hosts: &[&Host], markers: &[Result<Marker, String>]) -> String {
    hosts
        .iter()
        .zip(markers)
        .map(|(h, m)| format!("  {}: {m:?}", h.node))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls `host`'s A answers for `name` until `pred` holds for them; returns
/// when it first held, or None after `timeout`.
pub fn await_answers(
    host: &Host,
    name: &str,
    timeout: Duration,
    pred: impl Fn(&[String]) -> bool,
) -> Option<Instant> {
    poll(timeout, Duration::from_millis(5), || {
        pred(&host.a(name)).then(Instant::now)
    })
}

/// How an operator command ended.
#[derive(Debug, Clone)]
pub struct Run {
    /// Exit code (None: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}\nstdout: {}\nstderr: {}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}

/// Runs `dnsshift ARGS` against `server` (its config and control address);
/// kills it and panics if it takes longer than [`COMMAND_TIMEOUT`].
pub fn run_bounded(server: &Server, args: &[&str]) -> Run {
    let mut cmd = Command::new(bin());
    cmd.arg("--config").arg(server.path().join("dnsshift.toml"));
    if let Some(control) = server.control {
        cmd.env("DNSSHIFT_CONTROL", format!("http://{control}"));
    }
    run_command(cmd.args(args).current_dir(server.path()), args)
}

/// Runs a prepared `dnsshift` command with the bound of [`run_bounded`].
pub fn run_command(cmd: &mut Command, what: &[&str]) -> Run {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "dnsshift {what:?} did not finish within {COMMAND_TIMEOUT:?}; stderr so far: {}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Run {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        took: start.elapsed(),
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A pool's entry of one service in `status --json`.
pub fn pool<'a>(status: &'a Value, short: &str, pool: &str) -> &'a Value {
    status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["short"] == short)
        .unwrap_or_else(|| panic!("no service {short} in {status}"))["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pool"] == pool)
        .unwrap_or_else(|| panic!("no pool {pool} in {status}"))
}

/// The entry for `node` in the `hosts` list of a `status --json`.
pub fn host_entry(status: &Value, node: &str) -> Option<Value> {
    status["hosts"]
        .as_array()?
        .iter()
        .find(|h| h["node"] == node)
        .cloned()
}
