//! `dnssec status`: the signed zones' keys and signatures, from the zones
//! and the plan served now.

use std::path::Path;

use tracing::warn;

use super::Operator;
use crate::api::{DnssecKeyStatus, DnssecStatusResponse, DnssecZoneStatus};

impl Operator {
    /// Keeps the DNSSEC key history in `state_dir`, recorded now and on
    /// every reload.
    pub fn with_key_history(mut self, state_dir: &Path) -> Operator {
        self.key_history = Some(state_dir.to_path_buf());
        self.record_keys();
        self
    }

    /// Records the current zones' keys in the history, if kept.
    pub(super) fn record_keys(&self) {
        let Some(dir) = &self.key_history else {
            return;
        };
        let zones = self.zones();
        if zones.iter().all(|z| z.dnssec.is_none())
            && !dir.join(crate::state::dnssec_keys::HISTORY_FILE).exists()
        {
            return;
        }
        let mut h = crate::state::dnssec_keys::KeyHistory::read(dir);
        h.record(&zones, self.clock.now_secs());
        if let Err(error) = h.write(dir) {
            warn!(%error, dir = %dir.display(), "cannot write the DNSSEC key history");
        }
    }

    /// The signed zones this host serves, with their keys and signatures.
    pub fn dnssec_status(&self) -> DnssecStatusResponse {
        let zones = self.zones();
        let plan = self.plan.load();
        let summary = plan.dnssec_summary();
        let mut out = Vec::new();
        for z in zones.iter() {
            let Some(keys) = &z.dnssec else {
                continue;
            };
            let origin = z.origin.to_string();
            let s = summary.iter().find(|s| s.0 == origin);
            out.push(DnssecZoneStatus {
                keys: keys
                    .keys
                    .iter()
                    .map(|k| DnssecKeyStatus {
                        tag: k.tag,
                        algorithm: crate::dnssec::algorithm_name(k.algorithm).to_string(),
                        algorithm_number: u8::from(k.algorithm),
                        state: if k.signs { "active" } else { "published" }.to_string(),
                        file: k.path.display().to_string(),
                    })
                    .collect(),
                nsec_names: s.map_or(0, |s| s.1),
                signatures: s.map_or(0, |s| s.2),
                last_build_signed: s.map_or(0, |s| s.3),
                last_build_reused: s.map_or(0, |s| s.4),
                earliest_expiry: keys.earliest_expiry(),
                origin,
            });
        }
        DnssecStatusResponse {
            node: self.node.clone(),
            zones: out,
        }
    }
}
