//! `dnsshift check` and start-up validation: every fixture in
//! tests/fixtures/invalid fails with exactly the errors its first lines
//! announce, in order (`# expect: <file>:<line>: <key>: <message>`, one
//! line per error, `{dir}` standing for the fixture's directory): one error
//! per independent mistake, at its own line, none for what follows from
//! another. The shipped zones pass, `serve` refuses an invalid zone with the
//! same message, and `reload` rejects one while the running configuration
//! keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use hickory_proto::rr::RecordType;

use common::*;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// DNSSEC key files (`*.key.pem`) must be mode 0600, which git does not
/// record: set it on those in `dir`.
fn private_keys(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".key.pem") {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

/// Each fixture with the errors it expects, in order.
fn fixtures() -> Vec<(PathBuf, Vec<String>)> {
    let dir = manifest_dir().join("tests/fixtures/invalid");
    private_keys(&dir);
    let mut out: Vec<(PathBuf, Vec<String>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let dir = p.parent().unwrap().display().to_string();
            let expect: Vec<String> = text
                .lines()
                .map_while(|l| l.strip_prefix("# expect: "))
                .map(|e| e.trim().replace("{dir}", &dir))
                .collect();
            assert!(
                !expect.is_empty(),
                "{}: first line must be `# expect: ...`",
                p.display()
            );
            (p, expect)
        })
        .collect();
    out.sort();
    out
}

/// Runs `dnsshift check <path>` from a scratch directory, with no server
/// config around, so only the path given is checked.
fn check(path: &Path) -> Output {
    let cwd = tempfile::tempdir().unwrap();
    Command::new(bin())
        .arg("check")
        .arg(path)
        .current_dir(cwd.path())
        .env_remove("DNSSHIFT_CONFIG")
        .output()
        .unwrap()
}

/// Lines of stderr that report an error in `file`.
fn error_lines<'a>(stderr: &'a str, file: &Path) -> Vec<&'a str> {
    let prefix = format!("{}:", file.display());
    stderr.lines().filter(|l| l.starts_with(&prefix)).collect()
}

#[test]
fn every_invalid_fixture_fails_check_with_its_messages() {
    let all = fixtures();
    assert!(all.len() >= 15, "only {} fixtures", all.len());
    assert!(
        all.iter().filter(|(_, e)| e.len() > 1).count() >= 3,
        "fewer than 3 fixtures with several mistakes"
    );
    let mut failures = Vec::new();
    for (path, expect) in &all {
        let out = check(path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = path.file_name().unwrap().to_string_lossy();
        if let Some(e) = expect.iter().find(|e| !e.starts_with(&format!("{name}:"))) {
            failures.push(format!(
                "{name}: an expectation must start with the file name and line: {e}"
            ));
            continue;
        }
        if out.status.success() {
            failures.push(format!("{name}: check exited 0"));
            continue;
        }
        // The full path, then ":<line>: <key>: <message>"; exactly these,
        // in this order: nothing else cascades from them.
        let dir = path.parent().unwrap().display();
        let want: Vec<String> = expect.iter().map(|e| format!("{dir}/{e}")).collect();
        let got: Vec<&str> = error_lines(&stderr, path)
            .into_iter()
            .map(str::trim_end)
            .collect();
        if got != want {
            failures.push(format!(
                "{name}: expected\n  {}\ngot stderr:\n{stderr}",
                want.join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn check_of_the_fixture_folder_reports_every_file() {
    let dir = manifest_dir().join("tests/fixtures/invalid");
    let out = check(&dir);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (path, expect) in fixtures() {
        for e in expect {
            let full = format!("{}/{e}", path.parent().unwrap().display());
            assert!(stderr.contains(&full), "missing {e:?} in:\n{stderr}");
        }
    }
}

#[test]
fn check_warns_about_phases_weighting_pools_of_different_address_families() {
    let shipped = manifest_dir().join("zones/shift.example.com.toml");
    let out = check(&shipped);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning: ") && l.contains("address families"))
        .collect();
    // www: old IPv4 only, new dual-stack, weighted together in round-robin
    // (90/10) and half (50/50); api: old IPv4, new a host name, in its
    // round-robin. separate-domain and cutover weight one pool.
    assert_eq!(warnings.len(), 3, "{stderr}");
    let rr = warnings
        .iter()
        .find(|l| l.contains("service \"www\": phase \"round-robin\""))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        rr.starts_with(&format!("warning: {}: ", shipped.display()))
            && rr.contains("AAAA answers new 10%, NODATA 90%")
            && rr.contains("IPv6-preferring clients reach old 81%, new 19%"),
        "{rr}"
    );
    assert!(!stderr.contains("phase \"separate-domain\""), "{stderr}");
    assert!(!stderr.contains("phase \"cutover\""), "{stderr}");

    // Pools of the same families: no warning.
    let dir = tempfile::tempdir().unwrap();
    let same = dir.path().join("same.toml");
    std::fs::write(
        &same,
        zone_of([ServiceBuilder::unchecked(
            "www",
            &["192.0.2.1"],
            &["192.0.2.2"],
        )]),
    )
    .unwrap();
    let out = check(&same);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn shipped_zones_pass_check() {
    let zones = manifest_dir().join("zones");
    let out = check(&zones);
    assert!(
        out.status.success(),
        "dnsshift check zones/ failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("ok"), "{stdout}");
    let mut files = 0;
    for e in std::fs::read_dir(&zones).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            files += 1;
            let out = check(&p);
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(files >= 1, "no shipped zone files");
}

#[test]
fn serve_refuses_an_invalid_zone_with_the_check_message() {
    let (path, expect) = fixtures()
        .into_iter()
        .find(|(p, _)| p.ends_with("negative-weight.toml"))
        .expect("fixture negative-weight.toml");
    let expect = &expect[0];
    let bad = std::fs::read_to_string(&path).unwrap();
    // One valid zone beside the bad one: a single bad file blocks the start.
    let setup = Setup::new(
        &[
            ("good.toml", &ZoneBuilder::new("shift.test.").to_toml()),
            ("negative-weight.toml", &bad),
        ],
        "",
    );
    let zones_dir = setup.dir.path().join("zones");

    let (mut child, log) = Serve::new(setup.dir.path()).spawn();
    let Some(status) = exit_within(&mut child, STARTUP_TIMEOUT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "serve kept running on an invalid zone; log:\n{}",
            log.lines().join("\n")
        );
    };
    assert!(!status.success(), "serve exited 0 on an invalid zone");

    // Every error line of `check` on the same directory appears verbatim.
    let out = check(&zones_dir);
    assert!(!out.status.success());
    let check_stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let bad_path = zones_dir.join("negative-weight.toml");
    let wanted = error_lines(&check_stderr, &bad_path);
    assert_eq!(wanted.len(), 1, "{check_stderr}");
    assert!(
        wanted[0].contains(&format!("/{expect}")),
        "{:?} does not contain {expect:?}",
        wanted[0]
    );
    for w in wanted {
        let w = w.to_string();
        log.wait_for(0, Duration::from_secs(5), |l| l.contains(&w));
    }
    // Nothing was served.
    assert!(
        !log.lines().iter().any(|l| is_msg(l, "ready")),
        "{}",
        log.lines().join("\n")
    );
}

/// The good zone the reload test keeps serving: `www` answers 192.0.2.10.
fn serving() -> String {
    ZoneBuilder::new("shift.test.")
        .service(
            ServiceBuilder::new("www")
                .pool("old", &["192.0.2.10"])
                .pool("new", &["198.51.100.20"])
                .health_none(),
        )
        .to_toml()
}

#[test]
fn reload_rejects_every_invalid_fixture_and_keeps_serving() {
    let server = Setup::new(&[("good.toml", &serving())], "").start();
    let zones = server.path().join("zones");
    // Files a fixture names by a relative path sit beside it.
    let fixture_dir = manifest_dir().join("tests/fixtures/invalid");
    for e in std::fs::read_dir(&fixture_dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x != "toml") {
            std::fs::copy(&p, zones.join(p.file_name().unwrap())).unwrap();
        }
    }
    private_keys(&zones);
    let serving = || {
        let m = server.query("www.shift.test.", RecordType::A);
        assert_eq!(answers(&m), ["192.0.2.10"], "{m:?}");
    };
    serving();
    let mut failures = Vec::new();
    for (path, expect) in fixtures() {
        let name = path.file_name().unwrap();
        let bad = zones.join(name);
        std::fs::copy(&path, &bad).unwrap();
        let (ok, _, stderr) = server.cli(&["reload"]);
        std::fs::remove_file(&bad).unwrap();
        // Fixtures name their own directory as {dir}; here it is zones/.
        let want: Vec<String> = expect
            .iter()
            .map(|e| {
                let e = e.replace(
                    &fixture_dir.display().to_string(),
                    &zones.display().to_string(),
                );
                format!("{}/{e}", zones.display())
            })
            .collect();
        let got: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with(&zones.display().to_string()))
            // The CLI ends the daemon's message with the HTTP status.
            .map(|l| l.trim_end().trim_end_matches(" (400 Bad Request)"))
            .collect();
        if ok {
            failures.push(format!("{name:?}: reload succeeded"));
        } else if got != want {
            failures.push(format!(
                "{name:?}: want exactly\n  {}\ngot:\n{stderr}",
                want.join("\n  ")
            ));
        }
        serving();
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    // Still the same daemon, and a good reload still goes through.
    assert!(
        server
            .cli_ok(&["reload"])
            .starts_with("reloaded: 1 zone(s)")
    );
    serving();
}
