//! Real etcd for tests: a 1- or 3-member cluster of Debian's `etcd` (3.4)
//! on ephemeral loopback ports with temporary data directories. Members can
//! be killed and restarted; everything started is stopped by PID on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd server binary (Debian's `etcd-server` package).
pub const ETCD_BIN: &str = "etcd";
/// Bound on a cluster (or a restarted member) becoming healthy.
pub const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);

/// Server-side TLS for a cluster: PEM files in the cluster's directory.
pub struct ServerTls {
    /// CA that signed the server certificate (and the client's).
    pub ca: PathBuf,
    /// Server certificate for 127.0.0.1.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// Starts of a new cluster, each on freshly found ports, before giving up.
const START_ATTEMPTS: usize = 5;
/// What etcd logs when its port is taken.
const PORT_TAKEN: &str = "address already in use";

/// Why a member is not healthy.
enum Unhealthy {
    /// It exited: its exit status and log.
    Exited { member: usize, log: String },
    /// It still was not healthy after [`HEALTHY_TIMEOUT`]: its log.
    Slow { member: usize, log: String },
}

/// `ss` lines of the TCP sockets on any of `ports`, with their processes
/// (for the log of a start that found a port taken).
fn sockets_on(ports: &[SocketAddr]) -> String {
    let out = Command::new("ss")
        .args(["-tanpH"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("(cannot run ss: {e})"));
    out.lines()
        .filter(|l| ports.iter().any(|p| l.contains(&format!(":{} ", p.port()))))
        .collect::<Vec<_>>()
        .join("\n")
}

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unhealthy::Exited { member, log } => {
                write!(f, "etcd member {member} exited {log}")
            }
            Unhealthy::Slow { member, log } => write!(
                f,
                "etcd member {member} not healthy after {HEALTHY_TIMEOUT:?}; log:\n{log}"
            ),
        }
    }
}

struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial_cluster: String,
    tls: Option<ServerTls>,
}

/// A loopback port nobody holds right now.
fn free_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], super::unused_port("127.0.0.1")))
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster has a leader.
    pub fn start(n: usize) -> EtcdCluster {
        Self::start_with(n, |_| None)
    }

    /// Starts one member serving clients over TLS with client-certificate
    /// auth; `make_tls` writes the PEM files into the given directory.
    pub fn start_with(n: usize, make_tls: impl FnOnce(&Path) -> Option<ServerTls>) -> EtcdCluster {
        assert!(
            Command::new(ETCD_BIN)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "the etcd tests need the etcd server: apt-get install etcd-server (.ci/run does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let tls = make_tls(dir.path());
        let mut cluster = EtcdCluster {
            dir,
            members: Vec::new(),
            initial_cluster: String::new(),
            tls,
        };
        // A port found free can still be taken before etcd binds it; then
        // the member exits at once, and the cluster starts again on others.
        for attempt in 1..=START_ATTEMPTS {
            let mut ports = Vec::new();
            while ports.len() < 2 * n {
                let port = free_port();
                if !ports.contains(&port) {
                    ports.push(port);
                }
            }
            cluster.members = (0..n)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client: ports[2 * i],
                    peer: ports[2 * i + 1],
                    data: cluster.dir.path().join(format!("m{i}.etcd")),
                    log: cluster.dir.path().join(format!("m{i}.log")),
                    child: None,
                })
                .collect();
            cluster.initial_cluster = cluster
                .members
                .iter()
                .map(|m| format!("{}=http://{}", m.name, m.peer))
                .collect::<Vec<_>>()
                .join(",");
            for i in 0..n {
                cluster.spawn(i, "new");
            }
            match cluster.await_healthy(&(0..n).collect::<Vec<_>>()) {
                Ok(()) => return cluster,
                Err(Unhealthy::Exited { member, log })
                    if log.contains(PORT_TAKEN) && attempt < START_ATTEMPTS =>
                {
                    eprintln!(
                        "etcd member {member} found its port taken (attempt {attempt}); starting the cluster on other ports. Its log:\n{log}\nThe sockets on the cluster's ports:\n{}",
                        sockets_on(&ports)
                    );
                    for i in 0..n {
                        cluster.kill(i);
                        let m = &cluster.members[i];
                        let _ = std::fs::remove_dir_all(&m.data);
                        let _ = std::fs::remove_file(&m.log);
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let scheme = self.scheme();
        let m = &self.members[i];
        let client_url = format!("{scheme}://{}", m.client);
        let mut cmd = Command::new(ETCD_BIN);
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(format!("http://{}", m.peer))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://{}", m.peer))
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg(state)
            .arg("--initial-cluster-token")
            .arg(self.dir.path().file_name().unwrap())
            // Fast elections and lease checks: tests wait on them.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            // No metrics listener, no v2 API, nothing beyond loopback.
            .args(["--enable-v2=false"]);
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.cert)
                .arg("--key-file")
                .arg(&t.key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.members[i].child = Some(child);
    }

    /// Client URLs of every member, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        let scheme = self.scheme();
        self.members
            .iter()
            .map(|m| format!("{scheme}://{}", m.client))
            .collect()
    }

    /// Kills member `i` with SIGKILL and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Freezes member `i` with SIGSTOP: its sockets stay open (connections
    /// are accepted by the kernel, keep-alives answered) but it answers
    /// nothing, like a hung process or disk.
    pub fn stop(&mut self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// Lets a member frozen by [`EtcdCluster::stop`] run again (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        self.signal(i, "-CONT");
    }

    /// `kill <sig> <pid>` on member `i`, a child this harness started and
    /// has not reaped (the crate forbids unsafe, so no libc::kill).
    fn signal(&mut self, i: usize, sig: &str) {
        let child = self.members[i].child.as_ref().expect("member is running");
        let pid = child.id().to_string();
        let status = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(status.success(), "kill {sig} {pid}: {status}");
    }

    /// Restarts member `i` on its data directory and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i, "existing");
        self.wait_healthy(&[i]);
    }

    /// Restarts every killed member at once (after losing quorum no member
    /// is healthy alone) and waits until all are healthy.
    pub fn restart_all(&mut self) {
        let stopped: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].child.is_none())
            .collect();
        for &i in &stopped {
            self.spawn(i, "existing");
        }
        self.wait_healthy(&stopped);
    }

    /// Waits until every member in `which` reports health (which needs a
    /// leader); panics with their logs after [`HEALTHY_TIMEOUT`].
    pub fn wait_healthy(&mut self, which: &[usize]) {
        if let Err(e) = self.await_healthy(which) {
            panic!("{e}");
        }
    }

    /// Waits until every member in `which` reports health, at most
    /// [`HEALTHY_TIMEOUT`]; says which member exited or stayed unhealthy.
    fn await_healthy(&mut self, which: &[usize]) -> Result<(), Unhealthy> {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        for &i in which {
            loop {
                if let Some(status) = self.members[i].child.as_mut().unwrap().try_wait().unwrap() {
                    return Err(Unhealthy::Exited {
                        member: i,
                        log: format!("({status}); log:\n{}", self.log(i)),
                    });
                }
                // A TLS member's /health needs a client certificate: there
                // the test's own client polls until etcd answers.
                let up = match self.tls {
                    None => self.healthy(i),
                    Some(_) => TcpStream::connect_timeout(
                        &self.members[i].client,
                        Duration::from_millis(200),
                    )
                    .is_ok(),
                };
                if up {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Unhealthy::Slow {
                        member: i,
                        log: self.log(i),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// `GET /health` answers `"health":"true"`.
    fn healthy(&self, i: usize) -> bool {
        let Ok(mut s) =
            TcpStream::connect_timeout(&self.members[i].client, Duration::from_millis(200))
        else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        if s.write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }

    /// The cluster's scratch directory (data, logs, TLS files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Member `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
