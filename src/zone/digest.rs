//! The digest of loaded zones: a short, stable hash of their normalised
//! content, so that hosts can tell whether they serve the same zones.
//!
//! It hashes what was *loaded*, not the files: every zone (by origin), its
//! SOA fields and nameservers, its static records in presentation form
//! sorted (their order in the file does not matter), and every service with
//! its pools, endpoints, checks and phases. File names, comments, layout and
//! key order do not count; two hosts that load the same zones from files
//! written differently agree. The text is hashed with SHA-256 (from `ring`,
//! already in the tree via rustls), never `DefaultHasher`, whose output may
//! change between builds.

use std::fmt::Write;

use super::{Service, Zone};
use crate::pool::Target;

/// Hex digits of the digest kept: 64 bits, plenty to tell a few zone
/// versions apart, short enough for a TXT string and a status column.
pub const DIGEST_HEX: usize = 16;

/// The digest of `zones`: [`DIGEST_HEX`] lowercase hex digits.
pub fn digest(zones: &[Zone]) -> String {
    let text = canonical(zones);
    let hash = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut hex = String::with_capacity(DIGEST_HEX);
    for b in hash.as_ref().iter().take(DIGEST_HEX / 2) {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// The normalised text the digest is taken of, one fact per line.
fn canonical(zones: &[Zone]) -> String {
    let mut sorted: Vec<&Zone> = zones.iter().collect();
    sorted.sort_by_key(|z| z.origin.to_lowercase().to_string());
    let mut o = String::new();
    for z in sorted {
        let _ = writeln!(
            o,
            "zone {} ns {} hostmaster {} ttl {} negative {} refresh {} retry {} expire {} serial {:?}",
            z.origin.to_lowercase(),
            z.nameservers
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(","),
            z.hostmaster,
            z.ttl,
            z.negative_ttl,
            z.refresh,
            z.retry,
            z.expire,
            z.serial
        );
        let mut records: Vec<String> = z.records.iter().map(|r| format!("record {r}")).collect();
        records.sort();
        for r in records {
            let _ = writeln!(o, "{r}");
        }
        let dir = z.file.parent().unwrap_or(std::path::Path::new(""));
        for s in &z.services {
            service(&mut o, s, dir);
        }
    }
    o
}

/// One service; `dir` is its zone file's directory, from which a `ca_file`
/// is named (hosts keep their zone files in different places).
fn service(o: &mut String, s: &Service, dir: &std::path::Path) {
    let _ = writeln!(
        o,
        "service {} short {} staging {:?} staging_pool {} ttl {} max_answers {} initial {} on_all_down {:?} drain_grace_ms {}",
        s.name.to_lowercase(),
        s.short,
        s.staging.as_ref().map(|n| n.to_lowercase().to_string()),
        s.staging_pool,
        s.ttl,
        s.max_answers,
        s.initial_phase,
        s.on_all_down,
        s.drain_grace.as_millis()
    );
    for p in &s.pools {
        let _ = writeln!(o, " pool {}", p.name);
        for e in &p.endpoints {
            let target = match &e.target {
                Target::V4(a) => a.to_string(),
                Target::V6(a) => a.to_string(),
                Target::Host(n) => n.to_lowercase().to_string(),
            };
            let _ = writeln!(o, "  endpoint {} {target}", e.id);
            if let Some(c) = &e.check {
                let _ = writeln!(
                    o,
                    "   check {:?} {} host {:?} interval_ms {} timeout_ms {} rise {} fall {} expect {}-{} body {:?} insecure {} ca {:?}",
                    c.kind,
                    c.target,
                    c.host,
                    c.interval.as_millis(),
                    c.timeout.as_millis(),
                    c.rise,
                    c.fall,
                    c.expect.0,
                    c.expect.1,
                    c.expect_body,
                    c.insecure,
                    c.ca_file
                        .as_deref()
                        .map(|f| f.strip_prefix(dir).unwrap_or(f))
                );
            }
        }
    }
    for ph in &s.phases {
        let _ = writeln!(
            o,
            " phase {} weights {:?} hold_ms {:?} ttl {:?}",
            ph.name,
            ph.weights,
            ph.hold.map(|h| h.as_millis()),
            ph.ttl
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(files: &[(&str, &str)]) -> Vec<Zone> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        crate::zone::load_dir(dir.path()).unwrap()
    }

    const ZONE: &str = r#"
[zone]
origin = "d.test."
nameservers = ["ns1.d.test."]
hostmaster = "hostmaster.d.test."
records = """
ns1  A    192.0.2.53
mail A    192.0.2.25
@    MX   10 mail
"""

[[service]]
name = "www"
[service.pools]
old = ["192.0.2.10"]
new = ["192.0.2.20"]
[[service.phase]]
name = "old"
weights = { old = 100, new = 0 }
[[service.phase]]
name = "new"
weights = { old = 0, new = 100 }
"#;

    #[test]
    fn the_same_zones_written_differently_have_one_digest() {
        let a = digest(&load(&[("a.toml", ZONE)]));
        assert_eq!(a.len(), DIGEST_HEX);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        // Comments, record order and the file name do not count.
        let reordered = ZONE
            .replace(
                "ns1  A    192.0.2.53\nmail A    192.0.2.25",
                "; a comment\nmail A 192.0.2.25\nns1 A 192.0.2.53",
            )
            .replace("[zone]", "# the zone\n[zone]");
        assert_ne!(reordered, ZONE, "the test rewrites the zone");
        assert_eq!(digest(&load(&[("other-name.toml", &reordered)])), a);
        // Zone order does not count either.
        let second = ZONE.replace("d.test.", "e.test.");
        assert_eq!(
            digest(&load(&[("1.toml", ZONE), ("2.toml", &second)])),
            digest(&load(&[("1.toml", &second), ("2.toml", ZONE)]))
        );
    }

    #[test]
    fn hosts_keeping_the_same_zones_in_different_directories_agree() {
        // A `ca_file` is named from its zone file's directory, not by the
        // absolute path each host resolved it to.
        let pem = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()])
            .unwrap()
            .cert
            .pem();
        let zone = ZONE.replacen(
            "[[service.phase]]",
            "[service.health]\nurl = \"https://{endpoint}/\"\nca_file = \"ca.pem\"\n\n[[service.phase]]",
            1,
        );
        let digests: Vec<String> = (0..2)
            .map(|_| {
                let dir = tempfile::tempdir().unwrap();
                std::fs::write(dir.path().join("ca.pem"), &pem).unwrap();
                std::fs::write(dir.path().join("a.toml"), &zone).unwrap();
                digest(&crate::zone::load_dir(dir.path()).unwrap())
            })
            .collect();
        assert_eq!(digests[0], digests[1]);
        assert_ne!(digests[0], digest(&load(&[("a.toml", ZONE)])));
    }

    #[test]
    fn any_change_of_content_changes_the_digest() {
        let a = digest(&load(&[("a.toml", ZONE)]));
        for (from, to) in [
            ("192.0.2.25", "192.0.2.26"),
            ("new = [\"192.0.2.20\"]", "new = [\"192.0.2.21\"]"),
            ("old = 0, new = 100", "old = 10, new = 90"),
            ("name = \"www\"", "name = \"www\"\nttl = \"45s\""),
        ] {
            let changed = ZONE.replace(from, to);
            assert_ne!(changed, ZONE, "{from} is in the zone");
            assert_ne!(digest(&load(&[("a.toml", &changed)])), a, "{from} -> {to}");
        }
    }
}
