//! A real unbound resolver (Debian's package, installed by `.ci/run`) on a
//! loopback address, with a stub zone pointing at dnsshift hosts: the one
//! start-up behind the rehearsals, the sticky ECS test and the DNSSEC
//! validation test, which differ only in their modules and extra lines.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::poll;

/// A running unbound, stopped (by its PID) when dropped.
pub struct Unbound {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What differs between the resolvers the tests start.
pub struct Conf<'a> {
    /// The loopback address it listens on.
    pub ip: &'a str,
    /// The stub zone's name (the dnsshift zone's origin).
    pub zone: &'a str,
    /// The dnsshift hosts the stub zone points at.
    pub stubs: &'a [SocketAddr],
    /// `module-config`, for example "iterator" or "validator iterator".
    pub modules: &'a str,
    /// Files written into unbound's directory first (name, content).
    pub files: &'a [(&'a str, &'a str)],
    /// More `server:` lines, each indented; `{dir}` is its directory.
    pub extra: &'a str,
}

/// The unbound binary (it is in /usr/sbin, not always on a user's PATH).
pub fn binary() -> String {
    for c in ["unbound", "/usr/sbin/unbound"] {
        if Command::new(c)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_string();
        }
    }
    panic!("unbound is not installed (apt-get install unbound; .ci/run does this)");
}

/// Starts unbound with `conf`, and returns once `ready` (asked every
/// 100 ms, for at most 15 s) says it answers.
pub fn start(conf: &Conf, mut ready: impl FnMut(SocketAddr) -> bool) -> Unbound {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in conf.files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let port = super::unused_port(conf.ip);
    let dir_s = dir.path().display().to_string();
    let text = format!(
        r#"server:
    interface: {ip}
    port: {port}
    do-daemonize: no
    use-syslog: no
    logfile: ""
    verbosity: 1
    chroot: ""
    username: ""
    directory: "{dir_s}"
    pidfile: "{dir_s}/unbound.pid"
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    do-ip6: no
    module-config: "{modules}"
{extra}
stub-zone:
    name: "{zone}"
{stub_addrs}"#,
        ip = conf.ip,
        modules = conf.modules,
        extra = conf.extra.replace("{dir}", &dir_s),
        zone = conf.zone,
        stub_addrs = conf
            .stubs
            .iter()
            .map(|s| format!("    stub-addr: {}@{}\n", s.ip(), s.port()))
            .collect::<String>()
    );
    let path = dir.path().join("unbound.conf");
    std::fs::write(&path, text).unwrap();
    let child = Command::new(binary())
        .arg("-d")
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start unbound");
    let unbound = Unbound {
        child,
        addr: format!("{}:{port}", conf.ip).parse().unwrap(),
        _dir: dir,
    };
    let up = poll(Duration::from_secs(15), Duration::from_millis(100), || {
        ready(unbound.addr).then_some(())
    });
    assert!(up.is_some(), "unbound on {} did not answer", unbound.addr);
    unbound
}
