//! Test harness: starts the real `dnsshift` binary on ephemeral loopback
//! ports, queries it over real UDP and TCP, and runs real HTTP backends.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod backend;
pub mod cluster;
pub mod etcd;
pub mod prom;
pub mod unbound;
pub mod zone;

#[allow(unused_imports)] // not every test binary uses every helper
pub use zone::{ServiceBuilder, ZoneBuilder, endpoint, quoted, zone_of};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{Name, RecordType};

/// A port on `ip` that nothing holds now, for a server a test starts
/// (etcd, Prometheus, unbound) to bind in a moment. Chosen at random below
/// the kernel's ephemeral range: outgoing connections and every `bind` to
/// port 0 take their ports from that range, so none of them can take this
/// one between the probe and the server's bind (a port from `bind` to port
/// 0, released for the server, sometimes went to another test's connection
/// first: "address already in use"). Probed for both TCP and UDP.
pub fn unused_port(ip: &str) -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let free = |port: u16| {
        std::net::TcpListener::bind((ip, port)).is_ok() && UdpSocket::bind((ip, port)).is_ok()
    };
    const LOWEST: u16 = 10_000;
    if ephemeral_low > LOWEST + 1_000 {
        for _ in 0..1_000 {
            let port = fastrand::u16(LOWEST..ephemeral_low);
            if free(port) {
                return port;
            }
        }
    }
    // An ephemeral range that leaves nothing below it: the kernel's choice.
    for _ in 0..50 {
        let port = UdpSocket::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if free(port) {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

/// Bound on waiting for the server to log something.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on one DNS exchange.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Path of the binary under test: the one cargo built, or the one named by
/// `DNSSHIFT_TEST_BIN`, to run a measurement such as `tests/health_tail.rs`
/// against another build (an older commit's) with the same test code.
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("DNSSHIFT_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_dnsshift").to_string())
    })
}

/// Lines a child process wrote to stderr, shared with a reader thread.
#[derive(Clone, Default)]
pub struct Log {
    inner: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Log {
    fn push(&self, line: String) {
        let (m, c) = &*self.inner;
        m.lock().unwrap().push(line);
        c.notify_all();
    }

    /// All lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.inner.0.lock().unwrap().clone()
    }

    /// Waits until a line satisfies `pred` (checking lines from `from` on);
    /// returns its index and text. Panics with the log after `timeout`.
    pub fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> (usize, String) {
        let (m, c) = &*self.inner;
        let deadline = Instant::now() + timeout;
        let mut lines = m.lock().unwrap();
        loop {
            if let Some((i, l)) = lines.iter().enumerate().skip(from).find(|(_, l)| pred(l)) {
                return (i, l.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "timed out waiting for a log line; log so far:\n{}",
                    lines.join("\n")
                );
            }
            lines = c.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    /// Number of lines so far.
    pub fn len(&self) -> usize {
        self.inner.0.lock().unwrap().len()
    }
}

/// A running `dnsshift serve` in a scratch directory.
pub struct Server {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub dns: SocketAddr,
    pub control: Option<SocketAddr>,
    pub log: Log,
}

/// A scratch directory with zones and a server config.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    /// Writes zone files (name, text) and a config listening on port 0.
    /// `extra_config` is appended to dnsshift.toml.
    pub fn new(zones: &[(&str, &str)], extra_config: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("zones")).unwrap();
        for (name, text) in zones {
            std::fs::write(dir.path().join("zones").join(name), text).unwrap();
        }
        let config = format!(
            "listen = [\"127.0.0.1:0\"]\nzones_dir = {:?}\nstate_dir = {:?}\ncontrol_listen = \"127.0.0.1:0\"\nlog_format = \"json\"\nlog_level = \"info\"\n{extra_config}",
            dir.path().join("zones"),
            dir.path().join("state"),
        );
        std::fs::write(dir.path().join("dnsshift.toml"), config).unwrap();
        Setup { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("dnsshift.toml")
    }

    pub fn write_zone(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join("zones").join(name), text).unwrap();
    }

    /// Starts the server and waits until it reports ready.
    pub fn start(self) -> Server {
        Server::start(self.dir)
    }
}

/// `dnsshift serve` in a scratch directory, as every test launches it (this
/// is the one place that does): `--config <dir>/dnsshift.toml serve`, run
/// in `dir`, without RUST_LOG or NOTIFY_SOCKET from the environment.
pub struct Serve {
    dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, Option<String>)>,
    watchdog_pid: bool,
    nofile: Option<u64>,
}

impl Serve {
    pub fn new(dir: &Path) -> Serve {
        Serve {
            dir: dir.to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            watchdog_pid: false,
            nofile: None,
        }
    }

    /// Runs the daemon with RLIMIT_NOFILE `n`:`n` (util-linux `prlimit`),
    /// as a container's typical hard limit would start it.
    pub fn nofile(mut self, n: u64) -> Serve {
        self.nofile = Some(n);
        self
    }

    /// Arguments after `serve`.
    pub fn args(mut self, args: &[&str]) -> Serve {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Serve {
        let value = value.as_ref().to_string_lossy().into_owned();
        self.env.push((key.to_string(), Some(value)));
        self
    }

    pub fn env_remove(mut self, key: &str) -> Serve {
        self.env.push((key.to_string(), None));
        self
    }

    /// Runs the daemon through `sh -c 'export WATCHDOG_PID=$$; exec ...'`,
    /// so WATCHDOG_PID is its own PID, as systemd sets it.
    pub fn watchdog_pid(mut self) -> Serve {
        self.watchdog_pid = true;
        self
    }

    fn command(&self) -> Command {
        let mut cmd = if self.watchdog_pid {
            // `exec` keeps the shell's PID: "$0" is the binary, "$@" the rest.
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(r#"export WATCHDOG_PID=$$; exec "$0" "$@""#)
                .arg(bin());
            sh
        } else if let Some(n) = self.nofile {
            let mut p = Command::new("prlimit");
            p.arg(format!("--nofile={n}:{n}")).arg("--").arg(bin());
            p
        } else {
            Command::new(bin())
        };
        cmd.arg("--config")
            .arg(self.dir.join("dnsshift.toml"))
            .arg("serve")
            .args(&self.args);
        // The control flags' variables would move the daemon's control
        // address and token (serve honours --control and --token-file).
        cmd.current_dir(&self.dir)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("DNSSHIFT_CONTROL")
            .env_remove("DNSSHIFT_TOKEN_FILE");
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }

    /// Starts the process, its stderr captured; does not wait for anything.
    pub fn spawn(self) -> (Child, Log) {
        spawn_logged(&mut self.command())
    }

    /// Runs it to its exit, which must be a refusal to start; returns
    /// everything it wrote to stderr. Killed (and the test failed) if it
    /// is still running after the start-up timeout.
    pub fn must_fail(self) -> String {
        let (mut child, log) = self.spawn();
        let Some(status) = exit_within(&mut child, STARTUP_TIMEOUT) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not refuse to start:\n{}", log.lines().join("\n"));
        };
        assert!(!status.success(), "{status}");
        // The reader thread may lag the exit a little.
        let _ = poll(Duration::from_secs(2), Duration::from_millis(20), || {
            log.lines()
                .iter()
                .any(|l| l.starts_with("dnsshift: "))
                .then_some(())
        });
        let lines = log.lines();
        assert!(
            !lines.iter().any(|l| is_msg(l, "ready")),
            "{}",
            lines.join("\n")
        );
        lines.join("\n")
    }
}

/// Runs `dnsshift serve` in `dir`, which must refuse to start; returns
/// everything it wrote to stderr (see [`Serve::must_fail`]).
pub fn serve_must_fail(dir: &Path) -> String {
    Serve::new(dir).must_fail()
}

/// The plain `dnsshift: ...` error line of a failed command's stderr.
pub fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("dnsshift: "))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
}

/// Runs `dnsshift --config <dir>/dnsshift.toml check` in `dir`.
pub fn check_config(dir: &Path) -> std::process::Output {
    Command::new(bin())
        .arg("--config")
        .arg(dir.join("dnsshift.toml"))
        .arg("check")
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Waits (bounded) for a child to exit; None if it still runs after
/// `timeout`.
pub fn exit_within(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Spawns a command with stderr captured into a [`Log`].
pub fn spawn_logged(cmd: &mut Command) -> (Child, Log) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dnsshift");
    let log = Log::default();
    let stderr = child.stderr.take().unwrap();
    let l = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            match line {
                Ok(line) => {
                    if std::env::var_os("DNSSHIFT_TEST_VERBOSE").is_some() {
                        eprintln!("[dnsshift] {line}");
                    }
                    l.push(line)
                }
                Err(_) => break,
            }
        }
    });
    (child, log)
}

/// A field of a JSON log line.
pub fn field(line: &str, key: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    match v.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// True if the line is a JSON log line with this message.
pub fn is_msg(line: &str, msg: &str) -> bool {
    field(line, "message").as_deref() == Some(msg)
}

/// The health checks of `zones` that would probe anything but this host:
/// "service pool endpoint -> target" for each check whose target is not a
/// loopback IP address (a host name counts as outside: resolving it is
/// already a query that may leave the host).
pub fn non_loopback_checks(zones: &[dnsshift::zone::Zone]) -> Vec<String> {
    dnsshift::health::targets(zones)
        .into_iter()
        .filter(|(_, check)| !check_is_loopback(check))
        .map(|(k, check)| {
            format!(
                "{} {} {} -> {}",
                k.service, k.pool, k.endpoint, check.target
            )
        })
        .collect()
}

fn check_is_loopback(check: &dnsshift::pool::Check) -> bool {
    use dnsshift::pool::CheckKind;
    let host = match check.kind {
        CheckKind::Tcp => {
            return check
                .target
                .parse::<SocketAddr>()
                .is_ok_and(|a| a.ip().is_loopback());
        }
        CheckKind::Http | CheckKind::Https => match reqwest::Url::parse(&check.target) {
            Ok(u) => u.host_str().unwrap_or_default().to_string(),
            Err(_) => return false,
        },
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Panics if the zones the server in `dir` would load health-check
/// anything beyond this host: tests never send a packet elsewhere. Zones
/// that do not load are left to the server, which refuses them.
fn refuse_outside_checks(dir: &Path) {
    let Ok(config) = dnsshift::config::Config::load(&dir.join("dnsshift.toml")) else {
        return;
    };
    let zones_dir = dir.join(&config.zones_dir);
    let Ok(zones) = dnsshift::zone::load_dir(&zones_dir) else {
        return;
    };
    let outside = non_loopback_checks(&zones);
    assert!(
        outside.is_empty(),
        "refusing to start a server whose health checks leave this host (tests use 127.0.0.0/8 and ::1 only; set `kind = \"none\"` or use loopback endpoints) in {}:\n  {}",
        zones_dir.display(),
        outside.join("\n  ")
    );
}

impl Server {
    /// Starts `dnsshift serve --config <dir>/dnsshift.toml` in `dir`.
    /// Panics if its zones health-check anything beyond this host.
    pub fn spawn(dir: tempfile::TempDir, extra_args: &[&str]) -> Server {
        Server::spawn_with(dir, |s| s.args(extra_args))
    }

    /// [`Server::spawn`] with the [`Serve`] options `how` sets.
    pub fn spawn_with(dir: tempfile::TempDir, how: impl FnOnce(Serve) -> Serve) -> Server {
        refuse_outside_checks(dir.path());
        let (child, log) = how(Serve::new(dir.path())).spawn();
        let mut server = Server {
            child: Some(child),
            dir,
            dns: "0.0.0.0:0".parse().unwrap(),
            control: None,
            log,
        };
        server.await_ready();
        server
    }

    /// Starts the daemon in `dir` (a fresh [`Setup`]'s, or a killed
    /// server's for a restart) and waits until it reports ready.
    pub fn start(dir: tempfile::TempDir) -> Server {
        Server::spawn(dir, &[])
    }

    fn await_ready(&mut self) {
        let (_, line) = self.log.wait_for(0, STARTUP_TIMEOUT, |l| {
            is_msg(l, "dns listening") || l.contains("cannot start")
        });
        assert!(!line.contains("cannot start"), "server failed: {line}");
        self.dns = field(&line, "udp").unwrap().parse().unwrap();
        let (_, ready) = self.log.wait_for(0, STARTUP_TIMEOUT, |l| {
            is_msg(l, "ready") || l.contains("cannot start")
        });
        assert!(!ready.contains("cannot start"), "server failed: {ready}");
        if let Some((_, l)) = self
            .log
            .lines()
            .iter()
            .enumerate()
            .find(|(_, l)| is_msg(l, "control listening"))
        {
            self.control = field(l, "addr").and_then(|a| a.parse().ok());
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a signal to the server.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit (bounded); returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        exit_within(child, timeout)
            .unwrap_or_else(|| panic!("server did not exit within {timeout:?}"))
    }

    /// Kills the server and hands back its directory, for a restart.
    pub fn kill(mut self) -> tempfile::TempDir {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    /// Runs a CLI subcommand against this server's config; returns (exit ok, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.cli_command(args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a CLI subcommand against this server's config; its exit status and output.
    pub fn cli_command(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .arg("--config")
            .arg(self.path().join("dnsshift.toml"))
            .args(args)
            .current_dir(self.path())
            .env(
                "DNSSHIFT_CONTROL",
                format!("http://{}", self.control.expect("control address")),
            )
            .output()
            .unwrap()
    }

    /// Runs a CLI subcommand that must succeed; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.cli(args);
        assert!(
            ok,
            "dnsshift {args:?} failed:\nstdout: {out}\nstderr: {err}"
        );
        out
    }

    pub fn query(&self, name: &str, rtype: RecordType) -> Message {
        query_udp(self.dns, &build_query(name, rtype, Some(1232)))
    }

    pub fn query_tcp(&self, name: &str, rtype: RecordType) -> Message {
        query_tcp(self.dns, &build_query(name, rtype, Some(1232)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A query message with a random id; `edns` sets the advertised UDP size.
pub fn build_query(name: &str, rtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::new(fastrand_id(), MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

fn fastrand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(1);
    NEXT.fetch_add(7919, Ordering::Relaxed)
}

/// One UDP exchange; panics on timeout.
pub fn query_udp(server: SocketAddr, msg: &Message) -> Message {
    let bytes = msg.to_vec().unwrap();
    let resp = exchange_udp_raw(server, &bytes).expect("no UDP answer");
    let m = Message::from_vec(&resp).unwrap();
    assert_eq!(m.metadata.id, msg.metadata.id, "response id");
    m
}

/// Sends raw bytes over UDP and returns the first reply, or None on timeout.
pub fn exchange_udp_raw(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let local = if server.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let sock = UdpSocket::bind(local).unwrap();
    sock.set_read_timeout(Some(QUERY_TIMEOUT)).unwrap();
    sock.send_to(bytes, server).unwrap();
    let mut buf = vec![0u8; 65535];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

/// One TCP exchange (2-byte length framing).
pub fn query_tcp(server: SocketAddr, msg: &Message) -> Message {
    Message::from_vec(&exchange_tcp_raw(server, &msg.to_vec().unwrap())).unwrap()
}

/// Sends raw bytes as one message over TCP and returns the reply.
pub fn exchange_tcp_raw(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&server, QUERY_TIMEOUT).unwrap();
    s.set_read_timeout(Some(QUERY_TIMEOUT)).unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    s.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).unwrap();
    resp
}

/// The RDATA of each answer record, as text.
pub fn answers(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

/// The value of one sample of dnsshift's /metrics: the line that starts
/// with `sample` (name and labels), or None if there is none.
pub fn metric(control: SocketAddr, sample: &str) -> Option<u64> {
    metrics_page(control).lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The daemon's `/metrics` page (headers included), from its control
/// address.
pub fn metrics_page(control: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&control, QUERY_TIMEOUT).unwrap();
    s.set_read_timeout(Some(QUERY_TIMEOUT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// Polls `f` every `every` until it returns Some, for at most `timeout`.
pub fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// GET over a raw TCP connection; returns (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get_with(addr, path, "")
}

/// [`http_get`] with extra request header lines (each ending in CRLF).
pub fn http_get_with(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\n{headers}connection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let code = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    // The metrics body is small; de-chunk if chunked.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (code, body)
}

/// Latencies of `n` sequential UDP queries for `www.shift.test.` A, in
/// microseconds (the like-for-like latency measurements).
pub fn latencies_us(server: SocketAddr, n: usize) -> Vec<u128> {
    let q = build_query("www.shift.test.", RecordType::A, Some(1232))
        .to_vec()
        .unwrap();
    (0..n)
        .map(|_| {
            let t0 = Instant::now();
            exchange_udp_raw(server, &q).expect("no UDP answer");
            t0.elapsed().as_micros()
        })
        .collect()
}

/// The 99th percentile.
pub fn p99(mut lat: Vec<u128>) -> u128 {
    lat.sort_unstable();
    lat[lat.len() * 99 / 100]
}

/// The median.
pub fn median(mut v: Vec<u128>) -> u128 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Logs in over HTTP as a browser would; the session cookie's value.
pub fn ui_session(control: SocketAddr, token: &str) -> String {
    let body = format!("token={token}");
    let mut s = TcpStream::connect(control).unwrap();
    write!(
        s,
        "POST /ui/login HTTP/1.1\r\nHost: {control}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let line = r
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: dnsshift_ui=")
        })
        .unwrap_or_else(|| panic!("no session cookie: {r}"));
    line["set-cookie: dnsshift_ui=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// The COOKIE option (RFC 7873) of a message, if it has one.
pub fn cookie_option(m: &Message) -> Option<Vec<u8>> {
    m.edns
        .as_ref()?
        .options()
        .options
        .iter()
        .find_map(|(_, o)| match o {
            EdnsOption::Unknown(10, d) => Some(d.clone()),
            _ => None,
        })
}
