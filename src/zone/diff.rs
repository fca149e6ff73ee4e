//! What a reload would change: the loaded zones against new ones, one line
//! per difference (`reload --dry-run` prints them, `reload` too). Services,
//! pools, endpoints, phases, TTLs and static records are named one by one;
//! any other setting of a service or zone that differs is reported as such,
//! so that a key added later is never a silent change.

use std::collections::BTreeSet;

use super::{Service, Zone};
use crate::pool::Pool;

/// The differences from `old` to `new`, zones in origin order.
pub fn diff(old: &[Zone], new: &[Zone]) -> Vec<String> {
    let mut out = Vec::new();
    let origins: BTreeSet<String> = old
        .iter()
        .chain(new)
        .map(|z| z.origin.to_string())
        .collect();
    let find = |zones: &'_ [Zone], o: &str| -> Option<usize> {
        zones.iter().position(|z| z.origin.to_string() == o)
    };
    for o in &origins {
        match (find(old, o), find(new, o)) {
            (None, Some(n)) => out.push(format!(
                "zone {o}: added ({} service(s), {} static record(s))",
                new[n].services.len(),
                new[n].records.len()
            )),
            (Some(_), None) => out.push(format!("zone {o}: removed")),
            (Some(a), Some(b)) => zone_diff(&old[a], &new[b], &mut out),
            (None, None) => {}
        }
    }
    out
}

fn zone_diff(a: &Zone, b: &Zone, out: &mut Vec<String>) {
    let o = a.origin.to_string();
    if a.ttl != b.ttl {
        out.push(format!("zone {o}: ttl {}s -> {}s", a.ttl, b.ttl));
    }
    if a.negative_ttl != b.negative_ttl {
        out.push(format!(
            "zone {o}: negative_ttl {}s -> {}s",
            a.negative_ttl, b.negative_ttl
        ));
    }
    let records =
        |z: &Zone| -> BTreeSet<String> { z.records.iter().map(|r| r.to_string()).collect() };
    let (ra, rb) = (records(a), records(b));
    for r in rb.difference(&ra) {
        out.push(format!("zone {o}: record added: {r}"));
    }
    for r in ra.difference(&rb) {
        out.push(format!("zone {o}: record removed: {r}"));
    }
    let soa = |z: &Zone| {
        format!(
            "{:?}",
            (
                &z.nameservers,
                &z.hostmaster,
                z.refresh,
                z.retry,
                z.expire,
                z.serial
            )
        )
    };
    if soa(a) != soa(b) {
        out.push(format!(
            "zone {o}: nameservers, hostmaster or SOA timers changed"
        ));
    }
    let names: BTreeSet<String> = a
        .services
        .iter()
        .chain(&b.services)
        .map(Service::key)
        .collect();
    for key in &names {
        let sa = a.services.iter().find(|s| &s.key() == key);
        let sb = b.services.iter().find(|s| &s.key() == key);
        match (sa, sb) {
            (None, Some(s)) => out.push(format!(
                "service {key}: added (pools {}; phases {})",
                s.pools
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                s.phases
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            (Some(_), None) => out.push(format!("service {key}: removed")),
            (Some(x), Some(y)) => service_diff(key, x, y, out),
            (None, None) => {}
        }
    }
}

fn service_diff(key: &str, a: &Service, b: &Service, out: &mut Vec<String>) {
    let before = out.len();
    if a.ttl != b.ttl {
        out.push(format!("service {key}: ttl {}s -> {}s", a.ttl, b.ttl));
    }
    if a.staging != b.staging {
        let show = |s: &Option<hickory_proto::rr::Name>| {
            s.as_ref().map_or("none".to_string(), |n| n.to_string())
        };
        out.push(format!(
            "service {key}: staging name {} -> {}",
            show(&a.staging),
            show(&b.staging)
        ));
    }
    if a.max_answers != b.max_answers {
        out.push(format!(
            "service {key}: max_answers {} -> {}",
            a.max_answers, b.max_answers
        ));
    }
    let pools: Vec<&str> = a
        .pools
        .iter()
        .chain(&b.pools)
        .map(|p| p.name.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for name in pools {
        let pa = a.pools.iter().find(|p| p.name == name);
        let pb = b.pools.iter().find(|p| p.name == name);
        match (pa, pb) {
            (None, Some(p)) => out.push(format!(
                "service {key}: pool {name} added ({})",
                endpoints(p).into_iter().collect::<Vec<_>>().join(", ")
            )),
            (Some(_), None) => out.push(format!("service {key}: pool {name} removed")),
            (Some(x), Some(y)) => {
                let (ea, eb) = (endpoints(x), endpoints(y));
                for e in eb.difference(&ea) {
                    out.push(format!("service {key}: pool {name}: endpoint {e} added"));
                }
                for e in ea.difference(&eb) {
                    out.push(format!("service {key}: pool {name}: endpoint {e} removed"));
                }
                // Checks of the endpoints both versions have.
                let check = |p: &Pool, id: &str| {
                    p.endpoints
                        .iter()
                        .find(|e| e.id == id)
                        .map(|e| format!("{:?}", e.check))
                };
                if ea.intersection(&eb).any(|e| check(x, e) != check(y, e)) {
                    out.push(format!("service {key}: pool {name}: health checks changed"));
                }
            }
            (None, None) => {}
        }
    }
    let phases = |s: &Service| -> Vec<String> {
        s.phases
            .iter()
            .map(|p| {
                let weights = s
                    .pools
                    .iter()
                    .zip(&p.weights)
                    .map(|(pool, w)| format!("{}={w}", pool.name))
                    .collect::<Vec<_>>()
                    .join(" ");
                let ttl = p.ttl.map(|t| format!(", ttl {t}s")).unwrap_or_default();
                let hold = p
                    .hold
                    .map(|h| format!(", hold {}", humantime::format_duration(h)))
                    .unwrap_or_default();
                format!("{} ({weights}{ttl}{hold})", p.name)
            })
            .collect()
    };
    let (pa, pb) = (phases(a), phases(b));
    if pa != pb {
        out.push(format!(
            "service {key}: phases {} -> {}",
            pa.join(" > "),
            pb.join(" > ")
        ));
    }
    if out.len() == before && format!("{a:?}") != format!("{b:?}") {
        out.push(format!(
            "service {key}: other settings changed (initial_phase, on_all_down, drain_grace or others)"
        ));
    }
}

/// A pool's endpoints as written.
fn endpoints(p: &Pool) -> BTreeSet<String> {
    p.endpoints.iter().map(|e| e.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Vec<Zone> {
        let src = crate::config::source::Source {
            path: "z.toml".into(),
            text: text.into(),
        };
        vec![super::super::parse(&src).unwrap()]
    }

    const BASE: &str = r#"
[zone]
origin = "shift.test."
nameservers = ["ns1.shift.test."]
hostmaster = "hostmaster.shift.test."
records = """
ns1 IN A 127.0.0.53
"""

[[service]]
name = "www"
ttl = "30s"
[service.pools]
old = ["127.0.0.10"]
new = ["127.0.0.20"]
[service.health]
kind = "none"
"#;

    #[test]
    fn the_same_zones_have_no_differences() {
        assert_eq!(diff(&load(BASE), &load(BASE)), Vec::<String>::new());
    }

    #[test]
    fn every_kind_of_change_is_one_line() {
        let new = BASE
            .replace("ns1 IN A 127.0.0.53", "ns1 IN A 127.0.0.54")
            .replace("ttl = \"30s\"", "ttl = \"10s\"")
            .replace(
                "new = [\"127.0.0.20\"]",
                "new = [\"127.0.0.20\", \"127.0.0.21\"]",
            )
            + "\n[[service]]\nname = \"api\"\n[service.pools]\nold = [\"127.0.0.30\"]\nnew = [\"127.0.0.40\"]\n[service.health]\nkind = \"none\"\n";
        let got = diff(&load(BASE), &load(&new));
        assert_eq!(
            got,
            [
                "zone shift.test.: record added: ns1.shift.test. 3600 IN A 127.0.0.54",
                "zone shift.test.: record removed: ns1.shift.test. 3600 IN A 127.0.0.53",
                "service api.shift.test.: added (pools old, new; phases separate-domain, round-robin, cutover)",
                "service www.shift.test.: ttl 30s -> 10s",
                "service www.shift.test.: pool new: endpoint 127.0.0.21 added",
            ],
            "{got:#?}"
        );
        let back = diff(&load(&new), &load(BASE));
        assert!(
            back.contains(&"service api.shift.test.: removed".to_string()),
            "{back:#?}"
        );
        assert!(
            back.contains(
                &"service www.shift.test.: pool new: endpoint 127.0.0.21 removed".to_string()
            ),
            "{back:#?}"
        );
    }

    #[test]
    fn changed_health_checks_are_named_per_pool() {
        let new = BASE.replace("kind = \"none\"", "kind = \"tcp\"\nport = 443");
        let got = diff(&load(BASE), &load(&new));
        assert_eq!(
            got,
            [
                "service www.shift.test.: pool new: health checks changed",
                "service www.shift.test.: pool old: health checks changed",
            ],
            "{got:#?}"
        );
    }

    #[test]
    fn a_setting_without_its_own_line_is_still_reported() {
        let new = BASE.replace("ttl = \"30s\"", "ttl = \"30s\"\non_all_down = \"servfail\"");
        let got = diff(&load(BASE), &load(&new));
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(
            got[0].starts_with("service www.shift.test.: other settings changed"),
            "{got:#?}"
        );
    }
}
