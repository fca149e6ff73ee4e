//! The command line as operators meet it: distinct exit codes, messages
//! without HTTP status text, Debug output or URL-laden wrappers, the config
//! found without flags, `history` of every service, and plain log lines
//! when stderr is not a terminal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

/// A port on `ip` where nothing listens (bound, then released).
fn closed_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `www` (checks off, a 1h hold on "half") and `api`, whose new pool's only
/// endpoint is checked on a closed port: never healthy.
fn zone() -> String {
    let port = closed_port("127.0.0.2");
    ZoneBuilder::new("shift.test.")
        .service(
            ServiceBuilder::new("www")
                .pool("old", &["192.0.2.1"])
                .pool("new", &["192.0.2.2"])
                .health_none()
                .phase("old", &[("old", 100), ("new", 0)])
                .phase("half", &[("old", 50), ("new", 50)])
                .phase_set("half", "hold", "\"1h\"")
                .phase("new", &[("old", 0), ("new", 100)]),
        )
        .service(
            ServiceBuilder::new("api")
                .pool_with_health("old", &["192.0.2.3"], r#"{ kind = "none" }"#)
                .pool("new", &["127.0.0.2"])
                .health_http(&format!("http://{{endpoint}}:{port}/healthz"))
                .timing("300ms", "200ms")
                .rise_fall(1, 1),
        )
        .to_toml()
}

/// Runs the binary with `args` in `cwd`, no config from the environment.
fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("DNSSHIFT_CONFIG")
        .env_remove("DNSSHIFT_CONTROL")
        .env_remove("DNSSHIFT_TOKEN_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a CLI command against `server`; asserts its exit code and that
/// its message reads as words: no HTTP status text, no Debug output, no
/// reqwest wrapper. Returns stderr.
fn expect_code(server: &Server, args: &[&str], code: i32) -> String {
    let config = server.path().join("dnsshift.toml");
    let mut full = vec!["--config", config.to_str().unwrap()];
    full.extend_from_slice(args);
    let control = format!("http://{}", server.control.unwrap());
    let out = run(server.path(), &full, &[("DNSSHIFT_CONTROL", &control)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "dnsshift {args:?}: {err}");
    assert_plain(&err);
    err
}

fn assert_plain(msg: &str) {
    for bad in [
        "Conflict",
        "Bad Request",
        "Not Found",
        "Unauthorized",
        "(4",
        "(5",
        "error sending request",
        "/v1/",
        "Error {",
        "kind:",
        "Os {",
    ] {
        assert!(!msg.contains(bad), "{bad:?} in the message: {msg}");
    }
}

#[test]
fn exit_codes_say_refused_usage_or_unreachable() {
    let server = Setup::new(&[("z.toml", &zone())], "").start();
    // 0: done.
    expect_code(&server, &["status"], 0);
    expect_code(&server, &["advance", "www"], 0);

    // 1: refused by the daemon, for a hold ...
    let err = expect_code(&server, &["advance", "www"], 1);
    assert!(err.contains("must be held for 1h"), "{err}");
    // ... and for health: api's new pool never answers its check.
    let err = expect_code(&server, &["advance", "api", "--dry-run"], 1);
    assert!(err.contains("no healthy endpoint"), "{err}");

    // 2: usage errors, from clap or the daemon, and invalid config.
    let err = expect_code(&server, &["advance"], 2);
    assert!(err.contains("SERVICE"), "{err}");
    let err = expect_code(&server, &["advance", "nope"], 2);
    assert!(err.contains("unknown service \"nope\""), "{err}");
    let err = expect_code(&server, &["rollback", "www", "--to", "halfway"], 2);
    assert!(err.contains("unknown phase \"halfway\""), "{err}");
    let broken = server.path().join("broken.toml");
    std::fs::write(&broken, "listen = 53\n").unwrap();
    for cmd in ["status", "check"] {
        let out = run(
            server.path(),
            &["--config", broken.to_str().unwrap(), cmd],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", stderr(&out));
        assert!(stderr(&out).contains("broken.toml:1"), "{}", stderr(&out));
    }
    let bad_zone = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/invalid/negative-weight.toml"
    );
    let out = run(server.path(), &["check", bad_zone], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // 3: the token rejected ...
    let wrong = server.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let err = expect_code(
        &server,
        &["--token-file", wrong.to_str().unwrap(), "status"],
        3,
    );
    assert!(err.contains("rejected the control token"), "{err}");
    // ... and the daemon gone: said as "connection refused".
    let control = server.control.unwrap();
    let dir = server.kill();
    let out = run(
        dir.path(),
        &[
            "--config",
            dir.path().join("dnsshift.toml").to_str().unwrap(),
            "status",
        ],
        &[("DNSSHIFT_CONTROL", &format!("http://{control}"))],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_plain(&err);
    assert!(
        err.contains(&format!(
            "cannot reach the dnsshift daemon at http://{control}"
        )) && err.contains(": connection refused;"),
        "{err}"
    );
}

#[test]
fn help_documents_the_exit_codes() {
    let out = run(Path::new("."), &["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "Exit codes:",
        "0  done",
        "1  refused by the daemon (hold, health, drain, conflict)",
        "2  usage error or invalid config",
        "3  daemon unreachable or control token rejected",
    ] {
        assert!(help.contains(want), "{want:?} missing from:\n{help}");
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for code in ["| 0 |", "| 1 |", "| 2 |", "| 3 |"] {
        assert!(
            readme.contains(code),
            "the README has no exit code row {code}"
        );
    }
}

#[test]
fn a_refused_health_check_is_said_as_connection_refused() {
    let server = Setup::new(&[("z.toml", &zone())], "").start();
    let status: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["status", "api", "--json"])).unwrap();
    let ep = &status["services"][0]["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pool"] == "new")
        .unwrap()["endpoints"][0];
    assert_eq!(ep["healthy"], false, "{ep}");
    assert_eq!(ep["last_check"]["detail"], "connection refused", "{ep}");
    let human = server.cli_ok(&["status", "api"]);
    assert!(
        human.contains("DOWN") && human.contains("connection refused"),
        "{human}"
    );
}

#[test]
fn the_config_is_found_by_flag_env_working_directory_or_etc() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("control.token");
    std::fs::write(&token, "t\n").unwrap();
    let write = |name: &str| {
        let port = closed_port("127.0.0.1");
        std::fs::write(
            dir.path().join(name),
            format!(
                "control_listen = \"127.0.0.1:{port}\"\ncontrol_token_file = {:?}\n",
                token
            ),
        )
        .unwrap();
        port
    };
    let status = |args: &[&str], env: &[(&str, &str)]| {
        let mut full: Vec<&str> = args.to_vec();
        full.push("status");
        let out = run(dir.path(), &full, env);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        stderr(&out)
    };
    // Nothing here: the production config if this host has one, else the
    // built-in defaults.
    let err = status(&[], &[]);
    if Path::new("/etc/dnsshift/dnsshift.toml").exists() {
        assert!(err.contains("/etc/dnsshift/dnsshift.toml"), "{err}");
    } else {
        assert!(err.contains("state/control.token"), "{err}");
    }
    // ./dnsshift.toml.
    let local = write("dnsshift.toml");
    let err = status(&[], &[]);
    assert!(
        err.contains(&format!(
            "127.0.0.1:{local} (control_listen in dnsshift.toml)"
        )),
        "{err}"
    );
    // $DNSSHIFT_CONFIG beats it ...
    let env_port = write("env.toml");
    let env_path = dir.path().join("env.toml");
    let err = status(&[], &[("DNSSHIFT_CONFIG", env_path.to_str().unwrap())]);
    assert!(
        err.contains(&format!(
            "127.0.0.1:{env_port} (control_listen in {})",
            env_path.display()
        )),
        "{err}"
    );
    // ... and --config beats both.
    let flag_port = write("flag.toml");
    let err = status(
        &["--config", "flag.toml"],
        &[("DNSSHIFT_CONFIG", env_path.to_str().unwrap())],
    );
    assert!(
        err.contains(&format!(
            "127.0.0.1:{flag_port} (control_listen in flag.toml)"
        )),
        "{err}"
    );
}

#[test]
fn history_without_a_service_lists_every_service_newest_last() {
    let server = Setup::new(&[("z.toml", &zone())], "").start();
    server.cli_ok(&["advance", "www", "--reason", "first"]);
    server.cli_ok(&["advance", "api", "--force", "--reason", "second"]);
    server.cli_ok(&["rollback", "www", "--reason", "third"]);

    let human = server.cli_ok(&["history"]);
    let lines: Vec<&str> = human.lines().collect();
    assert_eq!(lines.len(), 4, "{human}");
    assert!(
        lines[0].contains("SERVICE") && lines[0].contains("ACTION"),
        "{human}"
    );
    for (line, (service, action, reason)) in lines[1..].iter().zip([
        ("www.shift.test.", "advance", "first"),
        ("api.shift.test.", "advance", "second"),
        ("www.shift.test.", "rollback", "third"),
    ]) {
        assert!(
            line.contains(service) && line.contains(action) && line.ends_with(reason),
            "{line:?} in\n{human}"
        );
    }

    let json: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["history", "--json"])).unwrap();
    assert!(json.get("service").is_none(), "{json}");
    let reasons: Vec<&str> = json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["first", "second", "third"]);

    // One service: only its events, no SERVICE column.
    let www = server.cli_ok(&["history", "www"]);
    assert_eq!(www.lines().count(), 3, "{www}");
    assert!(!www.contains("SERVICE") && !www.contains("second"), "{www}");
}

#[test]
fn human_logs_to_a_pipe_carry_no_colour() {
    let zone = zone_of([ServiceBuilder::unchecked(
        "www",
        &["192.0.2.1"],
        &["192.0.2.2"],
    )]);
    let setup = Setup::new(&[("z.toml", &zone)], "");
    let (mut child, log) = Serve::new(setup.dir.path())
        .args(&["--log-format", "human"])
        .env_remove("NO_COLOR")
        .spawn();
    log.wait_for(0, STARTUP_TIMEOUT, |l| {
        l.contains(" ready") || l.contains("cannot start")
    });
    let _ = child.kill();
    let _ = child.wait();
    let lines = log.lines();
    assert!(lines.iter().any(|l| l.contains("INFO")), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains('\u{1b}')),
        "escape sequences in a piped log: {lines:?}"
    );
}

#[test]
fn serve_listens_and_keeps_its_token_where_control_and_token_file_say() {
    let setup = Setup::new(&[("shift.test.toml", &zone())], "");
    let port = closed_port("127.0.0.1");
    let url = format!("http://127.0.0.1:{port}");
    let token = setup.dir.path().join("elsewhere.token");
    let token_arg = token.to_str().unwrap().to_string();
    let config = setup.config();
    let server = Server::spawn(setup.dir, &["--control", &url, "--token-file", &token_arg]);
    assert_eq!(
        server.control,
        Some(format!("127.0.0.1:{port}").parse().unwrap()),
        "the config's control_listen (port 0) was used"
    );
    assert!(token.is_file(), "no token at --token-file");
    assert!(!server.path().join("state/control.token").exists());
    // A command given the same flags reaches it.
    let out = run(
        server.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--control",
            &url,
            "--token-file",
            &token_arg,
            "status",
            "www",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // A URL serve cannot listen on is a usage error that names the flag.
    let bad = Setup::new(&[("shift.test.toml", &zone())], "");
    let log = Serve::new(bad.dir.path())
        .args(&["--control", "http://localhost:5380"])
        .must_fail();
    assert!(
        log.contains(
            "dnsshift: --control \"http://localhost:5380\": serve listens on an address and port"
        ),
        "{log}"
    );
}

#[test]
fn relative_paths_in_the_config_are_taken_from_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(etc.join("zones")).unwrap();
    std::fs::write(etc.join("zones/shift.test.toml"), zone()).unwrap();
    std::fs::write(
        etc.join("dnsshift.toml"),
        "zones_dir = \"zones\"\nstate_dir = \"state\"\n",
    )
    .unwrap();
    // Run from the directory above: "zones" is etc/zones, not ./zones.
    let out = run(dir.path(), &["--config", "etc/dnsshift.toml", "check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("ok: 1 zone(s), 2 service(s)"),
        "{out:?}"
    );
    // A missing zones directory is called a directory, at its resolved path.
    std::fs::write(etc.join("missing.toml"), "zones_dir = \"nozones\"\n").unwrap();
    let out = run(dir.path(), &["--config", "etc/missing.toml", "check"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(
            "etc/nozones: cannot read zones directory: No such file or directory (os error 2)"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn rollback_help_says_what_it_refuses_and_has_no_force() {
    let out = run(Path::new("."), &["rollback", "--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains(
            "refused only in the first phase and into a phase that weights a decommissioned pool"
        ),
        "{help}"
    );
    assert!(!help.contains("always allowed"), "{help}");
    assert!(!help.contains("--force"), "{help}");
    let out = run(Path::new("."), &["advance", "--help"], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--force"));
}

/// `www`: a TCP check on `port` of loopback, one-second TTL, classic phases.
fn tcp_checked(port: u16) -> String {
    ZoneBuilder::new("shift.test.")
        .service(
            ServiceBuilder::new("www")
                .ttl("1s")
                .pool("old", &["127.0.0.1"])
                .pool("new", &["127.0.0.3"])
                .health("kind", "\"tcp\"")
                .health("port", port.to_string())
                .timing("500ms", "250ms")
                .rise_fall(1, 1),
        )
        .to_toml()
}

#[test]
fn status_does_not_retire_a_waiting_pool_and_keeps_sub_ms_check_times() {
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = backend.local_addr().unwrap().port();
    let server = Setup::new(&[("shift.test.toml", &tcp_checked(port))], "").start();
    let status_json = || -> serde_json::Value {
        serde_json::from_str(&server.cli_ok(&["status", "www", "--json"])).unwrap()
    };
    // The unweighted new pool of the first phase drains (its start-up
    // TTL of 1s) but is waiting for a later phase, not being retired.
    let st = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        let st = status_json();
        let s = &st["services"][0];
        let drained = s["pools"][1]["drained"] == true;
        let checked = !s["pools"][0]["endpoints"][0]["last_check"].is_null();
        (drained && checked).then_some(st)
    })
    .expect("new never drained, or old never checked");
    let human = server.cli_ok(&["status", "www"]);
    let new_line = human
        .lines()
        .find(|l| l.trim_start().starts_with("new "))
        .unwrap();
    assert!(new_line.contains("standby"), "{human}");
    assert!(!new_line.contains("decommission"), "{human}");
    // A TCP connect on loopback takes well under a millisecond: the
    // duration is not rounded to whole milliseconds (0 ms).
    let probe = &st["services"][0]["pools"][0]["endpoints"][0]["last_check"];
    assert!(probe["duration_ms"].is_f64(), "{probe}");
    assert!(probe["duration_ms"].as_f64().unwrap() > 0.0, "{probe}");
}

/// The README's command table: a row for every subcommand, naming every
/// flag it takes, and the global flags said once below it.
#[test]
fn the_readme_command_table_lists_every_flag() {
    use clap::CommandFactory;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let rows: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("| `dnsshift "))
        .collect();
    fn walk(cmd: &clap::Command, path: &str, rows: &[&str], missing: &mut Vec<String>) {
        if cmd.has_subcommands() {
            for sub in cmd.get_subcommands() {
                let name = sub.get_name();
                if name != "help" {
                    walk(sub, format!("{path} {name}").trim_start(), rows, missing);
                }
            }
            return;
        }
        let prefix = format!("| `dnsshift {path}");
        let mine: Vec<&str> = rows
            .iter()
            .copied()
            .filter(|r| r[prefix.len()..].starts_with([' ', '`']) && r.starts_with(&prefix))
            .collect();
        if mine.is_empty() {
            missing.push(format!("no row for `dnsshift {path}`"));
        }
        for long in cmd.get_arguments().filter_map(|a| a.get_long()) {
            if long != "help" && !mine.iter().any(|r| r.contains(&format!("--{long}"))) {
                missing.push(format!("`dnsshift {path}` row lacks --{long}"));
            }
        }
    }
    let cmd = dnsshift::cli::Args::command();
    let mut missing = Vec::new();
    walk(&cmd, "", &rows, &mut missing);
    for long in cmd.get_arguments().filter_map(|a| a.get_long()) {
        if long != "help" && !readme.contains(&format!("`--{long}")) {
            missing.push(format!("global --{long} not in the README"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
