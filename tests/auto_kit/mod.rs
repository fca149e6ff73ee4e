//! What the end-to-end tests of automatic progression share (issue 17):
//! the zone, its addresses and its timing.
#![allow(dead_code)]

use std::time::Duration;

pub const OLD_IP: &str = "127.0.9.1";
pub const NEW_IP: &str = "127.0.9.2";
/// The service's TTL, the evaluation interval, the skew, as the zone says.
pub const TTL: Duration = Duration::from_secs(1);
pub const INTERVAL: Duration = Duration::from_secs(2);
pub const FAILURE_LIMIT: u32 = 2;
/// Independent resolvers, each with its clients.
pub const RESOLVERS: usize = 4;
/// Client requests per second through each resolver.
pub const RATE: f64 = 10.0;
/// Bound on any run.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The zone: old > canary (30 %) > half > cutover; the first three advance
/// by themselves. `canary` and `half` need 8 s and 2 passes; settle is
/// TTL 1 s + skew 1 s, so the rule needs 2 + 2 + 2 = 6 s. The queries
/// look 8 s back: a 1 s scrape always gives rate() its samples, and each
/// of [`RESOLVERS`] resolvers makes about 8 weighted draws in it (at 30 %,
/// no draw for new in all of them has odds below 1e-5).
pub fn zone(prometheus: &str, hook: &str) -> String {
    format!(
        r#"[zone]
origin = "shift.example."
nameservers = ["ns1.shift.example."]
hostmaster = "hostmaster.shift.example."
records = """
ns1 IN A 127.0.0.53
"""

[[service]]
name = "www"
ttl = 1
[service.pools]
old = ["{OLD_IP}"]
new = ["{NEW_IP}"]
[service.health]
kind = "none"

[service.analysis]
provider = "prometheus"
url = "{prometheus}"
interval = "2s"
skew = "1s"
failure_limit = {FAILURE_LIMIT}
error_limit = 3
inconclusive_limit = 6
notify = ["{hook}"]

[[service.analysis.check]]
name = "error-ratio"
query = 'sum(rate(lb_requests_total{{pool="{{pool}}",code=~"5.."}}[8s])) / sum(rate(lb_requests_total{{pool="{{pool}}"}}[8s]))'
max = 0.05

[service.analysis.volume]
query = 'sum(increase(lb_requests_total{{pool="{{pool}}"}}[8s]))'
min = 5

[[service.phase]]
name = "old"
weights = {{ old = 100, new = 0 }}
auto = {{ after = "4s", passes = 1 }}
[[service.phase]]
name = "canary"
weights = {{ old = 70, new = 30 }}
auto = {{ after = "8s", passes = 2 }}
[[service.phase]]
name = "half"
weights = {{ old = 50, new = 50 }}
auto = {{ after = "8s", passes = 2 }}
[[service.phase]]
name = "cutover"
weights = {{ old = 0, new = 100 }}
"#
    )
}

/// The automatic transitions in history: (action, from, to, at).
pub fn transitions(h: &[serde_json::Value]) -> Vec<(String, String, String, u64)> {
    h.iter()
        .filter(|e| e["actor"] == "auto" && (e["action"] == "advance" || e["action"] == "rollback"))
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["from"].as_str().unwrap().to_string(),
                e["to"].as_str().unwrap().to_string(),
                e["at"].as_u64().unwrap(),
            )
        })
        .collect()
}
