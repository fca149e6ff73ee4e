//! `dnssec keygen` and `dnssec ds`: key files and the parent's DS, without
//! a daemon. (`dnssec status` asks the daemon, through the client.)

use std::path::Path;

use hickory_proto::rr::Name;

use super::{Failure, report};
use crate::config::Config;
use crate::dnssec::{self, Key};

/// `dnssec keygen --out PATH [--algorithm A]`: prints the new key's tag.
pub(super) fn keygen(out: &Path, algorithm: &str) -> Result<(), Failure> {
    let alg = dnssec::algorithm_by_name(algorithm).ok_or_else(|| {
        Failure::Usage(format!(
            "unknown algorithm {algorithm:?}: expected ecdsap256sha256 or ed25519"
        ))
    })?;
    let tag = dnssec::keygen(out, alg).map_err(|e| Failure::Refused(e.to_string()))?;
    println!("{tag}");
    Ok(())
}

/// `dnssec ds ORIGIN`: the DS (SHA-256) of each signing key of the zone,
/// in the form `dnssec-dsfromkey` prints.
pub(super) fn ds(config: Option<&Path>, origin: &str) -> Result<(), Failure> {
    let config = Config::discover(config).map_err(report)?;
    let want = Name::from_ascii(origin)
        .map_err(|e| Failure::Usage(format!("invalid origin {origin:?}: {e}")))?;
    let key = |n: &Name| {
        n.to_lowercase()
            .to_string()
            .trim_end_matches('.')
            .to_string()
    };
    let zones = crate::zone::load_dir(&config.zones_dir).map_err(report)?;
    let zone = zones
        .iter()
        .find(|z| key(&z.origin) == key(&want))
        .ok_or_else(|| {
            Failure::Usage(format!(
                "no zone {origin} in {}",
                config.zones_dir.display()
            ))
        })?;
    let keys = zone.dnssec.as_ref().ok_or_else(|| {
        Failure::Usage(format!(
            "zone {} is not signed (no [zone.dnssec])",
            zone.origin
        ))
    })?;
    for k in keys.signing() {
        println!("{}", ds_line(&zone.origin, k)?);
    }
    Ok(())
}

/// One DS line: `origin IN DS tag algorithm 2 DIGEST`.
fn ds_line(origin: &Name, k: &Key) -> Result<String, Failure> {
    let ds = k.ds(origin).map_err(|e| Failure::Refused(e.to_string()))?;
    let hex: String = ds.digest().iter().map(|b| format!("{b:02X}")).collect();
    Ok(format!(
        "{} IN DS {} {} 2 {hex}",
        origin.to_lowercase(),
        ds.key_tag(),
        u8::from(ds.algorithm())
    ))
}

/// `dnssec status` for people: one block per signed zone.
pub(super) fn render_status(st: &crate::api::DnssecStatusResponse) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if st.zones.is_empty() {
        let _ = writeln!(out, "no signed zones (node {})", st.node);
    }
    for z in &st.zones {
        let expiry = z
            .earliest_expiry
            .map_or("-".to_string(), |s| crate::clock::format_ms(s * 1000));
        let _ = writeln!(
            out,
            "{}  node {}  nsec names {}  signed rrsets {}  last build: {} signed, {} reused  earliest expiry {expiry}",
            z.origin, st.node, z.nsec_names, z.signatures, z.last_build_signed, z.last_build_reused
        );
        for k in &z.keys {
            let _ = writeln!(
                out,
                "  key {:>5}  {} ({})  {:<9}  {}",
                k.tag, k.algorithm, k.algorithm_number, k.state, k.file
            );
        }
    }
    out
}
