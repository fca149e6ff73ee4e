//! When each key of a signed zone entered the DNSKEY set, started and
//! stopped signing, and left: kept in the state directory by the daemon on
//! every start and reload, and read by `check` to warn about a rollover
//! step that comes too soon (RFC 7583 pre-publication):
//!
//! ```text
//!  publish ──(≥ DNSKEY TTL)──▶ keys (signs) ──▶ publish ──(≥ DNSKEY TTL + signature lifetime)──▶ gone
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::dnssec::SIGNATURE_LIFETIME;
use crate::zone::Zone;

/// The history file's name in the state directory.
pub const HISTORY_FILE: &str = "dnssec-keys.json";

/// Key events by zone origin and key tag.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyHistory {
    /// Origin (lowercase) → key tag → events.
    pub zones: BTreeMap<String, BTreeMap<u16, KeyEvents>>,
}

/// One key's times (Unix seconds).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyEvents {
    /// Since when it is in the DNSKEY set (`keys` or `publish`).
    pub published: Option<u64>,
    /// Since when it signs (`keys`), while it does.
    pub active: Option<u64>,
    /// When it last stopped signing.
    pub inactive: Option<u64>,
    /// When it left the DNSKEY set.
    pub removed: Option<u64>,
}

impl KeyHistory {
    /// Reads the history (empty if there is none or it does not parse: it
    /// only feeds warnings).
    pub fn read(state_dir: &Path) -> KeyHistory {
        std::fs::read_to_string(state_dir.join(HISTORY_FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Writes the history (beside, then renamed into place).
    pub fn write(&self, state_dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(state_dir)?;
        let path = state_dir.join(HISTORY_FILE);
        let tmp = state_dir.join(format!("{HISTORY_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, path)
    }

    /// Records the keys `zones` serve from `now` on.
    pub fn record(&mut self, zones: &[Zone], now: u64) {
        for z in zones {
            let origin = z.origin.to_lowercase().to_string();
            let keys = z.dnssec.as_ref().map(|k| &k.keys[..]).unwrap_or(&[]);
            if keys.is_empty() && !self.zones.contains_key(&origin) {
                continue;
            }
            let h = self.zones.entry(origin).or_default();
            for k in keys {
                let e = h.entry(k.tag).or_default();
                if e.published.is_none() || e.removed.is_some() {
                    *e = KeyEvents {
                        published: Some(now),
                        inactive: e.inactive,
                        ..KeyEvents::default()
                    };
                }
                if k.signs {
                    e.active.get_or_insert(now);
                } else if e.active.take().is_some() {
                    e.inactive = Some(now);
                }
            }
            for (tag, e) in h.iter_mut() {
                if e.removed.is_none() && !keys.iter().any(|k| k.tag == *tag) {
                    e.removed = Some(now);
                    if e.active.take().is_some() {
                        e.inactive = Some(now);
                    }
                }
            }
        }
    }

    /// What `check` warns about: rollover steps in `zones` that come too
    /// soon after the recorded ones.
    pub fn warnings(&self, zones: &[Zone], now: u64) -> Vec<String> {
        let mut out = Vec::new();
        for z in zones {
            let origin = z.origin.to_lowercase().to_string();
            let Some(h) = self.zones.get(&origin).filter(|h| !h.is_empty()) else {
                continue;
            };
            let ttl = u64::from(z.ttl);
            let keys = z.dnssec.as_ref().map(|k| &k.keys[..]).unwrap_or(&[]);
            for k in keys.iter().filter(|k| k.signs) {
                let e = h.get(&k.tag).filter(|e| e.removed.is_none());
                if e.is_some_and(|e| e.active.is_some()) {
                    continue;
                }
                let since = e.and_then(|e| e.published);
                if since.is_none_or(|p| now < p + ttl) {
                    let age = since.map_or("never".to_string(), |p| {
                        format!("only for {}", human(now.saturating_sub(p)))
                    });
                    out.push(format!(
                        "{}: zone {}: key {} would sign now, but it has been in the DNSKEY set {age}: list it in `publish` first and move it to `keys` after the DNSKEY TTL ({}) has passed",
                        z.file.display(),
                        z.origin,
                        k.tag,
                        human(ttl)
                    ));
                }
            }
            for (tag, e) in h {
                if e.removed.is_some() || keys.iter().any(|k| k.tag == *tag) {
                    continue;
                }
                let last_signed = if e.active.is_some() {
                    Some(now)
                } else {
                    e.inactive
                };
                if let Some(t) = last_signed
                    && now < t + ttl + SIGNATURE_LIFETIME
                {
                    let until = if e.active.is_some() {
                        "until now".to_string()
                    } else {
                        format!("until {}", crate::clock::format_ms(t * 1000))
                    };
                    out.push(format!(
                        "{}: zone {}: key {tag} would leave the DNSKEY set, but it signed {until}: its signatures may be valid and cached until {}; keep it in `publish` until then",
                        z.file.display(),
                        z.origin,
                        crate::clock::format_ms((t + ttl + SIGNATURE_LIFETIME) * 1000)
                    ));
                }
            }
        }
        out
    }
}

/// A duration in seconds as people write it ("1h", "14days").
fn human(secs: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}
