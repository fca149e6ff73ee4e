//! The operations kit shipped in `ops/` (issue 21): the Prometheus alerting
//! rules pass `promtool test rules` (Debian's `prometheus` package, which
//! `.ci/run` installs), and every dnsshift metric that the rules and the
//! Grafana dashboard use exists on a real host's `/metrics`, so that a
//! renamed metric cannot leave a silent alert or an empty panel behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::backend::{Backend, Behaviour};
use common::cluster::Host;
use common::etcd::EtcdCluster;
use common::{ServiceBuilder, metrics_page, poll, zone_of};

fn ops(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ops").join(path)
}

/// Runs promtool with `args` in `dir`; panics with its output unless it
/// succeeds.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian's prometheus package; .ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn the_alerting_rules_pass_their_promtool_tests() {
    let dir = ops("prometheus");
    let checked = promtool(&dir, &["check", "rules", "dnsshift.rules.yml"]);
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = promtool(&dir, &["test", "rules", "dnsshift.rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert of the file has a test that expects it to fire.
    let rules = std::fs::read_to_string(dir.join("dnsshift.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("dnsshift.rules.test.yml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "no test expects {alert} to fire"
        );
    }
}

/// The dashboard's PromQL expressions, with Grafana's variables given
/// values Prometheus accepts.
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(ops("grafana/dnsshift.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6, "{} panels", panels.len());
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("every target has an expr")
                .replace("$__rate_interval", "1m")
                .replace("$service", ".*")
        })
        .collect()
}

/// The `dnsshift_*` names in `text`.
fn names_used(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("dnsshift_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_queries_are_valid_promql() {
    // promtool checks an expression's syntax as a recording rule.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in dashboard_exprs().iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard_panel_{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    std::fs::write(dir.path().join("dashboard.yml"), &rules).unwrap();
    promtool(dir.path(), &["check", "rules", "dashboard.yml"]);
}

#[test]
fn every_metric_the_kit_uses_is_on_a_hosts_metrics_page() {
    let backend = Backend::http("127.0.0.1:0");
    backend.set(Behaviour::ok());
    let port = backend.addr.port();
    let etcd = EtcdCluster::start(1);
    let zone = zone_of([ServiceBuilder::new("www")
        .pool_with_health("old", &["127.0.8.1"], r#"{ kind = "none" }"#)
        .pool("new", &["127.0.0.1"])
        .health_http(&format!("http://{{endpoint}}:{port}/healthz"))
        .timing("200ms", "150ms")
        .rise_fall(1, 1)]);
    let host = Host::start(
        &etcd,
        "ns1",
        "127.0.0.2",
        "shift.test.",
        &[("z.toml", &zone)],
    );
    host.a("www.shift.test.");
    let control = host.server().control.unwrap();
    // A histogram sample exists once a probe has been timed.
    let page = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        let page = metrics_page(control);
        page.contains("dnsshift_health_check_duration_seconds_bucket{")
            .then_some(page)
    })
    .expect("a health probe is timed within 10 s");
    let served: BTreeSet<String> = page
        .lines()
        .filter(|l| l.starts_with("dnsshift_"))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();

    let rules = std::fs::read_to_string(ops("prometheus/dnsshift.rules.yml")).unwrap();
    let dashboard = dashboard_exprs().join("\n");
    let used: BTreeSet<String> = names_used(&rules)
        .into_iter()
        .chain(names_used(&dashboard))
        .collect();
    // What the issue asks the kit to show and alert on, by the metric.
    for needed in [
        "dnsshift_pool_weight",
        "dnsshift_pool_answers_total",
        "dnsshift_endpoint_healthy",
        "dnsshift_pool_drain_deadline_seconds",
        "dnsshift_service_fail_open",
        "dnsshift_state_epoch",
        "dnsshift_dns_rrl_dropped_total",
        "dnsshift_etcd_reachable",
    ] {
        assert!(used.contains(needed), "the kit never uses {needed}");
    }
    let missing: Vec<&String> = used.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "the kit uses metrics that /metrics does not have: {missing:?}\nserved: {served:?}"
    );
}
