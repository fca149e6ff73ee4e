//! Loading and reloading: zones and state checked against each other, at
//! start-up, on `reload`, and when the store reports a change made
//! elsewhere.

use super::*;
use crate::state::Loaded;

/// Loads zones and state and checks them against each other: what `check`,
/// start-up and reload all run.
pub fn load_all(
    zones_dir: &std::path::Path,
    store: &dyn StateStore,
) -> Result<(Vec<Zone>, State, Epoch), String> {
    let zones = zone::load_dir(zones_dir).map_err(|e| e.to_string())?;
    let loaded = store.load().map_err(|e| e.to_string())?;
    let v = loaded.state.validate(&zones, &store.origin());
    for w in &v.warnings {
        warn!(warning = %w, "stale state entry");
    }
    if !v.errors.is_empty() {
        return Err(v.errors.join("\n"));
    }
    Ok((zones, loaded.state, loaded.epoch))
}

impl Operator {
    /// The store told of a change at `epoch`: [`Operator::refresh`], unless
    /// it is the epoch served here (this host's own commit, or zones
    /// registered elsewhere): then only the serial may have moved. So a
    /// command's own change is not read back from the store, and the next
    /// command does not wait for that read.
    pub fn refresh_to(&self, epoch: Epoch) {
        {
            // After the lock: a command that committed `epoch` has served it.
            let _writer = lock(&self.writer);
            if epoch == self.applied_epoch() && !self.store.serving_local_copy() {
                self.rebuild_if_generation_moved();
                return;
            }
        }
        self.refresh();
    }

    /// Re-reads the state after the store told of a change made elsewhere,
    /// and serves it. A state that does not fit the zones is not served.
    pub fn refresh(&self) {
        let _writer = lock(&self.writer);
        let loaded = match self.store.load() {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "cannot load the changed state; still serving the previous one");
                return;
            }
        };
        self.adopt(loaded);
    }

    /// Serves `loaded`, read from the store, unless it does not fit the
    /// zones; the caller holds the writer lock. Whether it is served now.
    pub(super) fn adopt(&self, loaded: Loaded) -> bool {
        let v = loaded.state.validate(&self.zones(), &self.store.origin());
        if !v.errors.is_empty() {
            warn!(error = %v.errors.join("; "), "the changed state does not fit the zones; still serving the previous one");
            return false;
        }
        let unchanged = {
            let current = lock(&self.state);
            current.1 == loaded.epoch && *current.0 == loaded.state
        };
        if unchanged {
            self.rebuild_if_generation_moved();
            return true;
        }
        *lock(&self.state) = (Arc::new(loaded.state), loaded.epoch);
        self.rebuild();
        self.applied.send_replace(loaded.epoch);
        info!(epoch = loaded.epoch, "applied the shared state");
        true
    }

    /// Re-reads zones (from the running config's zones directory) and checks
    /// the config file, whose DNS cookie secrets (`[cookies]`) it installs;
    /// any error rejects the whole reload and the running configuration
    /// keeps serving.
    pub fn reload(&self) -> Result<ReloadResponse, ReloadError> {
        let reject = |e: &dyn std::fmt::Display| {
            warn!(error = %e, "reload rejected; still serving the previous configuration");
            ReloadError(e.to_string())
        };
        // Only the check against the current state and the swap happen
        // under the writer lock.
        let (cookies, zones) = self.read_config_and_zones().map_err(|e| reject(&e))?;
        let _writer = lock(&self.writer);
        let v = self.state().validate(&zones, &self.store.origin());
        if !v.errors.is_empty() {
            return Err(reject(&v.errors.join("\n")));
        }
        for w in &v.warnings {
            warn!(warning = %w, "stale state entry");
        }
        let changes = zone::diff::diff(&self.zones(), &zones);
        let services = zones.iter().map(|z| z.services.len()).sum();
        let n = zones.len();
        let digest = zone::digest(&zones);
        if self.shared && *lock(&self.digest) != digest {
            // A new generation of these zones: the serial rises on every
            // host that serves them.
            self.zones_pending.store(true, Ordering::Relaxed);
        }
        *lock(&self.digest) = digest.clone();
        *lock(&self.zones) = Arc::new(zones.clone());
        self.stats.retain(&zones);
        // Health of endpoints that still exist carries over; new ones count
        // as healthy until their first result.
        drop(self.checks.restart(&zones));
        self.rebuild();
        self.record_keys();
        drop(_writer);
        // A rotated cookie secret (`[cookies] secret_file`) takes effect now.
        match (&self.cookies, cookies) {
            (Some(k), file) => k.reload(file),
            (None, Some(s)) => {
                crate::dns::cookie::install(s);
            }
            (None, None) => {}
        }
        if let Err(e) = self.register_zones() {
            warn!(error = %e, zones = %digest, "the new zones' generation is not recorded in etcd yet; serving one more than the last serial here until it is");
        }
        let serial = self.plan.load().serial;
        info!(zones = n, services, serial, digest = %digest, "reloaded");
        Ok(ReloadResponse {
            zones: n,
            services,
            serial,
            warnings: self.zones_warning().into_iter().collect(),
            changes,
            dry_run: false,
        })
    }

    /// `reload --dry-run`: reads and validates the config and zones exactly
    /// as [`Operator::reload`] does, and says what would change, without
    /// applying anything.
    pub fn reload_dry_run(&self) -> Result<ReloadResponse, ReloadError> {
        let zones = self.read_zones().map_err(|e| ReloadError(e.to_string()))?;
        let v = self.state().validate(&zones, &self.store.origin());
        if !v.errors.is_empty() {
            return Err(ReloadError(v.errors.join("\n")));
        }
        Ok(ReloadResponse {
            zones: zones.len(),
            services: zones.iter().map(|z| z.services.len()).sum(),
            serial: self.plan.load().serial,
            warnings: v.warnings,
            changes: zone::diff::diff(&self.zones(), &zones),
            dry_run: true,
        })
    }

    /// The server config (re-read too, so that an error in it is reported
    /// now rather than at the next start; its settings take effect on
    /// restart) and the zones, read and parsed before any lock is taken, so
    /// that a slow or stuck file never holds up other commands.
    fn read_zones(&self) -> Result<Vec<zone::Zone>, String> {
        self.read_config_and_zones().map(|(_, zones)| zones)
    }

    /// The config file's DNS cookie secrets (`None` without a file or
    /// `[cookies]`) and the zones.
    fn read_config_and_zones(
        &self,
    ) -> Result<(Option<crate::dns::cookie::Secrets>, Vec<zone::Zone>), String> {
        let cookies = match &self.config_file {
            Some(file) => Config::load(file).map_err(|e| e.to_string())?.cookies,
            None => None,
        };
        let zones = zone::load_dir(&self.zones_dir).map_err(|e| e.to_string())?;
        Ok((cookies, zones))
    }
}
