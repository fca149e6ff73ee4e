//! The status page in a real browser: Debian's chromium driven through
//! chromedriver (both started and stopped here, on loopback), against the
//! real daemon. Login and cookie flags, parity with `status --json`, live
//! updates and pause, a failing backend, actions with their confirmation
//! and the CLI's refusal, CSRF/Origin/Host refusals, read-only mode, the
//! page without JavaScript, keyboard focus, and screenshots
//! (target/ui-screenshots/) checked not to be blank.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::backend::{Backend, Behaviour};
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use hickory_proto::rr::RecordType;

/// Bound on any wait for the page to show something.
const WAIT: Duration = Duration::from_secs(10);

/// chromedriver on a loopback port, stopped (by its PID) on drop.
struct Driver {
    child: Child,
    port: u16,
    profiles: Vec<tempfile::TempDir>,
}

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver) must be installed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            port,
            profiles: Vec::new(),
        }
    }

    /// A fresh headless chromium; `extra` flags (dark scheme, no script).
    async fn browser(&mut self, extra: &[&str]) -> Client {
        // Two rustls providers are in the tree: say which one (an error
        // only means another test installed it first).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1366,900",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra.iter().map(|s| s.to_string()));
        self.profiles.push(profile);
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "args": args, "binary": "/usr/bin/chromium" }),
        );
        ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `www` service whose endpoints are checked on real local backends.
fn setup(extra_config: &str) -> (Server, u16, Vec<Backend>) {
    let mut backends = Vec::new();
    let first = Backend::http("127.44.0.10:0");
    let port = first.addr.port();
    backends.push(first);
    backends.push(Backend::http(&format!("127.44.0.20:{port}")));
    backends.push(Backend::http(&format!("127.44.0.11:{port}")));
    let service = ServiceBuilder::new("www")
        .ttl("30s")
        .pool("old", &["127.44.0.10", "127.44.0.11"])
        .pool("new", &["127.44.0.20"])
        .health_http(&format!("http://{{endpoint}}:{port}/healthz"))
        .timing("200ms", "150ms")
        .phase("separate-domain", &[("old", 100), ("new", 0)])
        .phase("round-robin", &[("old", 90), ("new", 10)])
        .phase("half", &[("old", 50), ("new", 50)])
        .phase("cutover", &[("old", 0), ("new", 100)]);
    let server = Setup::new(&[("shift.test.toml", &zone_of([service]))], extra_config).start();
    (server, port, backends)
}

fn token(server: &Server) -> String {
    std::fs::read_to_string(server.path().join("state/control.token"))
        .unwrap()
        .trim()
        .to_string()
}

fn ui_url(server: &Server) -> String {
    format!("http://{}/ui", server.control.unwrap())
}

fn status_json(server: &Server) -> serde_json::Value {
    serde_json::from_str(&server.cli_ok(&["status", "--json"])).unwrap()
}

/// Replaces the text of the input at `css`.
async fn type_into(c: &Client, css: &str, text: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

async fn login(c: &Client, server: &Server) {
    c.goto(&ui_url(server)).await.unwrap();
    type_into(c, "#token", &token(server)).await;
    type_into(c, "#name", "tester").await;
    click(c, "form[action='/ui/login'] button").await;
    wait_for(c, "section.service").await;
}

/// Waits (bounded) until an element matches `css`.
async fn wait_for(c: &Client, css: &str) {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} within {WAIT:?}: {e}"));
}

/// Text of the first element matching `css`, or "" if there is none.
async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Polls until the text at `css` satisfies `pred`; returns it.
async fn wait_text(c: &Client, css: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let t = text(c, css).await;
        if pred(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{css}: still {t:?} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks the first element matching `css`, finding it again if a live
/// update replaced it between the find and the click.
async fn click(c: &Client, css: &str) {
    let mut last = String::new();
    for _ in 0..20 {
        match c.find(Locator::Css(css)).await {
            Ok(e) => match e.click().await {
                Ok(()) => return,
                Err(err) => last = err.to_string(),
            },
            Err(err) => last = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot click {css}: {last}");
}

/// Clicks the submit button of the first form matching `form_css`, then
/// confirms on the confirmation page.
async fn act(c: &Client, form_css: &str, reason: &str) {
    click(c, &format!("{form_css} button[type=submit]")).await;
    wait_for(c, "main.confirm").await;
    type_into(c, "#reason", reason).await;
    click(c, "main.confirm button.danger").await;
    wait_for(c, "section.service").await;
}

/// Writes a screenshot and checks it is not blank (a blank page
/// compresses to a few hundred bytes).
async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
    assert!(
        png.len() > 20_000,
        "{name}.png looks blank ({} bytes)",
        png.len()
    );
}

/// One raw HTTP request to the control listener; the status code.
fn raw(addr: SocketAddr, request: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

fn post(addr: SocketAddr, host: &str, origin: Option<&str>, cookie: &str, body: &str) -> u16 {
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    raw(
        addr,
        &format!(
            "POST /ui/action HTTP/1.1\r\nHost: {host}\r\n{origin}Cookie: dnsshift_ui={cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_a_real_browser() {
    let (server, _port, backends) = setup("");
    let control = server.control.unwrap();
    let mut driver = Driver::start();
    let c = driver.browser(&[]).await;

    // Without the token: only the login form.
    c.goto(&ui_url(&server)).await.unwrap();
    assert!(
        c.find(Locator::Css("form[action='/ui/login']"))
            .await
            .is_ok()
    );
    assert!(c.find(Locator::Css("section.service")).await.is_err());
    assert!(!c.source().await.unwrap().contains("separate-domain"));
    login(&c, &server).await;
    let cookies = c.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|k| k.name() == "dnsshift_ui")
        .expect("session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(format!("{:?}", session.same_site()), "Some(Strict)");
    assert_ne!(
        session.value(),
        token(&server),
        "the cookie is not the token"
    );
    let cookie = session.value().to_string();

    // Some traffic, so that the served split is not empty.
    for _ in 0..20 {
        server.query("www.shift.test.", RecordType::A);
    }

    // The page equals `status --json`, once the served window has the answers.
    let svc = "section.service[data-service='www.shift.test.']";
    let deadline = Instant::now() + WAIT;
    loop {
        let st = status_json(&server);
        let s = &st["services"][0];
        let mut same = text(&c, &format!("{svc} [data-field=phase]")).await == s["phase"];
        for p in s["pools"].as_array().unwrap() {
            let pool = p["pool"].as_str().unwrap();
            let row = format!("{svc} .split-table tr[data-pool='{pool}']");
            let weight = text(&c, &format!("{row} [data-field=weight]")).await;
            same &= weight.parse::<u64>().ok() == p["weight"].as_u64();
            let served = format!("{:.1}%", p["share_last_minute"].as_f64().unwrap() * 100.0);
            same &= text(&c, &format!("{row} [data-field=served]")).await == served;
            for e in p["endpoints"].as_array().unwrap() {
                let cell = format!(
                    "{svc} tr[data-pool='{pool}'][data-endpoint='{}']",
                    e["endpoint"].as_str().unwrap()
                );
                let health = text(&c, &format!("{cell} [data-field=health]")).await;
                same &= health.contains(if e["healthy"] == true { "up" } else { "down" });
                let admin = text(&c, &format!("{cell} [data-field=admin]")).await;
                same &= admin.contains(if e["disabled"] == true {
                    "disabled"
                } else {
                    "enabled"
                });
            }
        }
        if same && s["pools"][0]["answers_last_minute"].as_u64() == Some(20) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never matched status --json: {st}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A refused action shows the CLI's message: rollback in the first phase.
    let (ok, _, cli_err) = server.cli(&["rollback", "www"]);
    assert!(!ok);
    let cli_msg = cli_err.trim().trim_start_matches("dnsshift: ").to_string();
    act(
        &c,
        &format!("{svc} form:has(input[value=rollback])"),
        "test",
    )
    .await;
    let flash = text(&c, "[data-field=flash]").await;
    assert_eq!(flash, format!("✖ refused: {cli_msg}"));

    // An advance made with the CLI appears within 3 s with no reload.
    c.execute("window.__same_page = 1; return 1", vec![])
        .await
        .unwrap();
    server.cli_ok(&["advance", "www", "--reason", "cli"]);
    wait_text(
        &c,
        &format!("{svc} [data-field=phase]"),
        Duration::from_secs(3),
        |t| t == "round-robin",
    )
    .await;
    let same_page = c
        .execute("return window.__same_page || 0", vec![])
        .await
        .unwrap();
    assert_eq!(same_page, serde_json::json!(1), "the page was reloaded");

    // Pausing freezes the page; resuming brings it up to date.
    click(&c, "#live-toggle").await;
    server.cli_ok(&["advance", "www"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        text(&c, &format!("{svc} [data-field=phase]")).await,
        "round-robin"
    );
    click(&c, "#live-toggle").await;
    wait_text(
        &c,
        &format!("{svc} [data-field=phase]"),
        Duration::from_secs(3),
        |t| t == "half",
    )
    .await;

    // A backend that starts failing turns its cell to "down", in words.
    backends[1].set(Behaviour::Respond {
        status: 500,
        body: "broken".into(),
    });
    let cell = format!("{svc} tr[data-endpoint='127.44.0.20'] [data-field=health]");
    wait_text(&c, &cell, WAIT, |t| t.contains("down")).await;
    backends[1].set(Behaviour::Respond {
        status: 200,
        body: "ok".into(),
    });
    wait_text(&c, &cell, WAIT, |t| t.contains("up")).await;
    screenshot(&c, "normal").await;

    // Tab reaches every action, each with a visible focus ring.
    let actions = c
        .find_all(Locator::Css("main form[action='/ui/action'] button"))
        .await
        .unwrap()
        .len();
    assert!(actions >= 4, "{actions} action buttons");
    // Freeze the page so that focus is not lost to an update.
    click(&c, "#live-toggle").await;
    let mut reached = std::collections::HashSet::new();
    c.execute(
        "document.activeElement.blur(); window.scrollTo(0,0); return 1",
        vec![],
    )
    .await
    .unwrap();
    for _ in 0..120 {
        c.active_element()
            .await
            .unwrap()
            .send_keys("\u{E004}")
            .await
            .unwrap();
        let v = c
            .execute(
                "var e = document.activeElement; var s = getComputedStyle(e); \
                 var inAction = e.closest('form[action=\"/ui/action\"]') !== null && e.tagName === 'BUTTON'; \
                 return [inAction, s.outlineStyle, s.outlineWidth, e.outerHTML.slice(0, 120)];",
                vec![],
            )
            .await
            .unwrap();
        if v[0] == true {
            assert_ne!(v[1], "none", "no focus ring on {}", v[3]);
            assert_ne!(v[2], "0px", "no focus ring on {}", v[3]);
            reached.insert(v[3].as_str().unwrap().to_string());
        }
    }
    assert_eq!(reached.len(), actions, "Tab reached {reached:?}");
    click(&c, "#live-toggle").await;

    // Disable through the page, with its confirmation: the CLI sees it.
    act(
        &c,
        &format!("{svc} tr[data-endpoint='127.44.0.10'] form"),
        "maintenance",
    )
    .await;
    let flash = text(&c, "[data-field=flash]").await;
    assert!(flash.starts_with("✔"), "{flash}");
    let st = status_json(&server);
    let old = &st["services"][0]["pools"][0]["endpoints"][0];
    assert_eq!(old["disabled"], true, "{st}");
    let history = server.cli_ok(&["history", "www"]);
    assert!(history.contains("maintenance"), "{history}");

    // Forged POSTs: no CSRF token, a foreign Origin, a foreign Host.
    let host = control.to_string();
    let csrf = c
        .execute(
            "return document.querySelector('meta[name=csrf]').content",
            vec![],
        )
        .await
        .unwrap();
    let csrf = csrf.as_str().unwrap();
    let good = format!("csrf={csrf}&action=advance&service=www&confirm=yes");
    let no_csrf = "action=advance&service=www&confirm=yes";
    assert_eq!(post(control, &host, None, &cookie, no_csrf), 403);
    assert_eq!(
        post(control, &host, Some("http://evil.example"), &cookie, &good),
        403
    );
    assert_eq!(post(control, "evil.example", None, &cookie, &good), 403);
    // The same request from our own origin passes (303 back to the page).
    let ours = format!("http://{host}");
    assert_eq!(post(control, &host, Some(&ours), &cookie, &good), 303);
    assert_eq!(status_json(&server)["services"][0]["phase"], "cutover");
    // The CLI's bearer header keeps working alongside.
    server.cli_ok(&["rollback", "www"]);

    // The dark scheme.
    let dark = driver
        .browser(&[
            "--force-dark-mode",
            "--blink-settings=preferredColorScheme=0",
        ])
        .await;
    login(&dark, &server).await;
    let is_dark = dark
        .execute(
            "return matchMedia('(prefers-color-scheme: dark)').matches",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(is_dark, serde_json::json!(true));
    screenshot(&dark, "dark").await;
    dark.close().await.unwrap();

    // Without JavaScript: everything is there and the forms still work.
    let nojs = driver
        .browser(&["--blink-settings=scriptEnabled=false"])
        .await;
    login(&nojs, &server).await;
    assert_eq!(
        text(&nojs, &format!("{svc} [data-field=phase]")).await,
        "half"
    );
    // Cutover and back left `new`... and `old` answered: a drain line shows
    // whenever a pool is not answered; here every pool is.
    act(
        &nojs,
        &format!("{svc} tr[data-endpoint='127.44.0.10'] form"),
        "back",
    )
    .await;
    assert_eq!(
        status_json(&server)["services"][0]["pools"][0]["endpoints"][0]["disabled"],
        false
    );
    let flash = text(&nojs, "[data-field=flash]").await;
    assert!(flash.starts_with("✔"), "{flash}");
    nojs.close().await.unwrap();
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_renders_no_actions_and_refuses_posts() {
    let (server, _port, _backends) = setup("ui = \"read-only\"\n");
    let control = server.control.unwrap();
    let mut driver = Driver::start();
    let c = driver.browser(&[]).await;
    login(&c, &server).await;
    assert!(
        c.find_all(Locator::Css("form[action='/ui/action']"))
            .await
            .unwrap()
            .is_empty()
    );
    let buttons: Vec<String> = {
        let mut v = Vec::new();
        for b in c.find_all(Locator::Css("main button")).await.unwrap() {
            v.push(b.text().await.unwrap());
        }
        v
    };
    assert!(buttons.is_empty(), "buttons in read-only: {buttons:?}");
    screenshot(&c, "read-only").await;
    let cookie = c
        .get_all_cookies()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.name() == "dnsshift_ui")
        .unwrap()
        .value()
        .to_string();
    let csrf = c
        .execute(
            "return document.querySelector('meta[name=csrf]').content",
            vec![],
        )
        .await
        .unwrap();
    let body = format!(
        "csrf={}&action=advance&service=www&confirm=yes",
        csrf.as_str().unwrap()
    );
    assert_eq!(
        post(control, &control.to_string(), None, &cookie, &body),
        403
    );
    assert_eq!(
        status_json(&server)["services"][0]["phase"],
        "separate-domain"
    );
    c.close().await.unwrap();
}

#[test]
fn ui_off_serves_no_page() {
    let (server, _port, _backends) = setup("ui = \"off\"\n");
    let control = server.control.unwrap();
    let get = format!("GET /ui HTTP/1.1\r\nHost: {control}\r\nConnection: close\r\n\r\n");
    assert_eq!(raw(control, &get), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_automation_panel_and_resume_through_the_page() {
    // A provider that refuses every query: automation pauses by itself.
    let refused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let zone = include_str!("fixtures/analysis-zone.toml")
        .replace(
            "http://127.0.0.1:9090",
            &format!("http://127.0.0.1:{refused}"),
        )
        .replace(
            "http://127.0.0.1:9000/hook",
            &format!("http://127.0.0.1:{refused}/hook"),
        )
        // A phase that advances by itself (the first is a manual gate).
        .replace(
            "name = \"www\"\n",
            "name = \"www\"\ninitial_phase = \"half\"\n",
        );
    let server = Setup::new(&[("shift.toml", &zone)], "").start();
    server.cli_ok(&["auto", "start", "www"]);
    let mut driver = Driver::start();
    let c = driver.browser(&[]).await;
    login(&c, &server).await;
    let svc = "section.service[data-service='www.shift.test.']";
    wait_text(
        &c,
        &format!("{svc} [data-field=auto-state]"),
        Duration::from_secs(30),
        |t| t.contains("paused"),
    )
    .await;
    let st = status_json(&server);
    let why = st["services"][0]["auto"]["why"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = text(&c, &format!("{svc} [data-field=auto-state]")).await;
    assert!(shown.contains(&why), "{shown:?} does not say {why:?}");
    assert!(
        text(&c, &format!("{svc} .auto-box"))
            .await
            .contains("Automation checks")
    );
    act(
        &c,
        &format!("{svc} form:has(input[value=resume])"),
        "provider back",
    )
    .await;
    let flash = text(&c, "[data-field=flash]").await;
    assert!(flash.starts_with("✔"), "{flash}");
    let history: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["history", "www", "--json"])).unwrap();
    let resumed =
        history["events"].as_array().unwrap().iter().any(|e| {
            e["action"] == "auto" && e["actor"] == "tester" && e["reason"] == "provider back"
        });
    assert!(resumed, "{history}");
    c.close().await.unwrap();
}

/// The page as a logged-in browser would get it, without one.
fn page_text(control: SocketAddr, cookie: &str) -> String {
    http_get_with(control, "/ui", &format!("cookie: dnsshift_ui={cookie}\r\n")).1
}

/// Changes made faster than the page's one-second tick each get their
/// chart marker: the page reads the history (through the store) when the
/// state's last change moves, and marks every event after the newest one
/// it marked.
#[test]
fn every_change_gets_its_chart_marker_even_several_within_a_tick() {
    let (server, _port, _backends) = setup("");
    let control = server.control.unwrap();
    let cookie = ui_session(control, &token(&server));
    // The sampler has marked what there was (nothing) once the page shows.
    assert!(page_text(control, &cookie).contains("Split over time"));
    for _ in 0..3 {
        server.cli_ok(&["advance", "www", "--force", "--reason", "marker"]);
    }
    server.cli_ok(&["rollback", "www", "--reason", "marker"]);
    let want = [
        "advance separate-domain → round-robin",
        "advance round-robin → half",
        "advance half → cutover",
        "rollback cutover → half",
    ];
    let mut missing = Vec::new();
    let all = poll(Duration::from_secs(5), Duration::from_millis(100), || {
        let page = page_text(control, &cookie);
        missing = want.iter().copied().filter(|w| !page.contains(w)).collect();
        missing.is_empty().then_some(())
    });
    assert!(all.is_some(), "markers missing after 5 s: {missing:?}");
}
