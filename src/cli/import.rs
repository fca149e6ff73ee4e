//! The `dnsshift cluster` commands, which talk to etcd directly with the
//! config's `[cluster]` table, not to a daemon: `import [STATE_FILE]
//! [--force]` moves a single host's state file into etcd, so it works
//! before any host runs with `[cluster]`; `forget NODE` removes a host
//! gone for good.

use std::path::Path;

use super::Failure;
use crate::config::Config;
use crate::config::cluster::ClusterConfig;
use crate::state::cluster::{Cluster, Commit, Layout, report};
use crate::state::etcd::Etcd;
use crate::state::journal::{Journal, Query};
use crate::state::shared::{EtcdStore, etcd_failure, shared_value};
use crate::state::store::{CommitError, STATE_FILE, read_file};
use crate::state::{Event, STATE_VERSION, STATE_VERSION_1};
use crate::zone;

/// At most this much of a single host's history (JSON) goes into the one
/// shared history entry of an import: etcd refuses values above 1.5 MiB by
/// default. The most recent events go; the rest stay in the host's files.
pub const IMPORT_HISTORY_BYTES: usize = 1 << 20;

/// Reads `state_file` (default: the configured state directory's
/// `state.json`; format 1 with its history embedded, or format 2 with its
/// history log beside it), checks it against the zones like `check`, and
/// commits it merged into the cluster's state at the current epoch, its
/// most recent history (up to [`IMPORT_HISTORY_BYTES`]) as one shared
/// history entry. Refused if the cluster already holds state for any of
/// its services, unless `force` (which replaces those, and says so).
pub fn import(
    config: Option<&Path>,
    state_file: Option<&Path>,
    force: bool,
) -> Result<(), Failure> {
    let config = Config::discover(config).map_err(|e| Failure::Usage(e.to_string()))?;
    let cc = cluster_table(&config, "nowhere to import to")?;
    let path = state_file.map_or_else(|| config.state_dir.join(STATE_FILE), Path::to_path_buf);
    if !path.is_file() {
        return Err(Failure::Usage(format!(
            "{}: no such state file",
            path.display()
        )));
    }
    let mut local = read_file(&path).map_err(|e| Failure::Usage(e.to_string()))?;
    let journal = Journal::new(path.parent().unwrap_or(Path::new(".")));
    let (history, kept_in) = if local.version == STATE_VERSION_1 {
        (local.migrate(), path.display().to_string())
    } else {
        let events = journal.read(&Query::everything()).map_err(|e| {
            Failure::Usage(format!(
                "cannot read the history {}: {e}",
                journal.path().display()
            ))
        })?;
        (events, journal.path().display().to_string())
    };
    let (recent, left) = recent_history(&history, IMPORT_HISTORY_BYTES);
    let zones = zone::load_dir(&config.zones_dir).map_err(|e| Failure::Usage(e.to_string()))?;
    let v = local.validate(&zones, &path.display().to_string());
    for w in &v.warnings {
        eprintln!("warning: {w}");
    }
    if !v.errors.is_empty() {
        return Err(Failure::Usage(v.errors.join("\n")));
    }
    let (cluster, endpoints, runtime) = connect(&cc)?;
    runtime.block_on(async {
        let store = EtcdStore::new(
            cluster.clone(),
            &config.state_dir,
            tokio::runtime::Handle::current(),
        );
        let etcd_err = |e| Failure::Refused(etcd_failure(&endpoints, &e));
        let (current, _, _) = store.read().await.map_err(etcd_err)?;
        let held: Vec<&String> = local
            .services
            .keys()
            .filter(|k| current.state.services.contains_key(*k))
            .collect();
        if !held.is_empty() {
            let list = held
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            if !force {
                return Err(Failure::Refused(format!(
                    "the cluster already holds state for {list} (epoch {}); nothing imported (--force replaces it)",
                    current.epoch
                )));
            }
            println!("replacing the cluster's state of {list}");
        }
        let mut merged = current.state.clone();
        merged.version = STATE_VERSION;
        merged.last = local.last.clone().or(merged.last);
        for (k, s) in &local.services {
            merged.services.insert(k.clone(), s.clone());
        }
        let value = shared_value(&merged, crate::clock::unix_ms() / 1000);
        let entry = serde_json::to_vec(recent)
            .map_err(|e| Failure::Refused(format!("cannot encode the history: {e}")))?;
        match cluster
            .commit(current.epoch, &value, &entry)
            .await
            .map_err(etcd_err)?
        {
            Commit::Done { epoch } => {
                println!(
                    "imported {} service(s) and {} history event(s) from {} into etcd (epoch {epoch})",
                    local.services.len(),
                    recent.len(),
                    path.display()
                );
                if left > 0 {
                    println!(
                        "the {left} older history event(s) did not fit in one etcd value ({} KiB) and stay in {} (and its rotated files)",
                        IMPORT_HISTORY_BYTES >> 10,
                        kept_in
                    );
                }
                Ok(())
            }
            Commit::Conflict { epoch } => Err(Failure::Refused(
                CommitError::Conflict {
                    expected: current.epoch,
                    found: epoch,
                }
                .to_string(),
            )),
        }
    })
}

/// The most recent events of `history` whose JSON fits in `bytes`, and how
/// many older ones are left out.
fn recent_history(history: &[Event], bytes: usize) -> (&[Event], usize) {
    let mut size = 2;
    let mut start = history.len();
    for (i, e) in history.iter().enumerate().rev() {
        size += serde_json::to_vec(e).map_or(usize::MAX / 2, |v| v.len()) + 1;
        if size > bytes {
            break;
        }
        start = i;
    }
    (&history[start..], start)
}

/// The config's `[cluster]` table, or a usage error saying `why` it is needed.
fn cluster_table(config: &Config, why: &str) -> Result<ClusterConfig, Failure> {
    config.cluster.clone().ok_or_else(|| {
        Failure::Usage(format!(
            "{}: no [cluster] table: {why}",
            config
                .file
                .as_ref()
                .map_or_else(|| "the config".to_string(), |f| f.display().to_string())
        ))
    })
}

/// A client of the cluster's etcd, its endpoints (for messages) and a
/// runtime to drive it.
fn connect(cc: &ClusterConfig) -> Result<(Cluster, Vec<String>, tokio::runtime::Runtime), Failure> {
    let opts = cc
        .etcd_options()
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let etcd = Etcd::new(opts).map_err(|e| Failure::Usage(e.to_string()))?;
    let endpoints = etcd.endpoints().to_vec();
    let cluster = Cluster::new(etcd, Layout::new(&cc.prefix), cc.node.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Refused(format!("cannot start the async runtime: {e}")))?;
    Ok((cluster, endpoints, runtime))
}

/// `dnsshift cluster forget NODE`: removes a host gone for good from the
/// cluster's records, so that it no longer shows in `status` nor counts for
/// drain deadlines. Refused while the host's lease holds (it is alive); a
/// node the cluster has no record of is a usage error naming those it has.
pub fn forget(config: Option<&Path>, node: &str) -> Result<(), Failure> {
    let config = Config::discover(config).map_err(|e| Failure::Usage(e.to_string()))?;
    let cc = cluster_table(&config, "no cluster to forget a host in")?;
    let (cluster, endpoints, runtime) = connect(&cc)?;
    let etcd = cluster.etcd();
    let layout = cluster.layout();
    let etcd_err = |e| Failure::Refused(etcd_failure(&endpoints, &e));
    runtime.block_on(async {
        if etcd.get(&layout.live(node)).await.map_err(etcd_err)?.0.is_some() {
            return Err(Failure::Refused(format!(
                "host {node} is alive (its lease in etcd holds): stop it first; once its lease has lapsed (status shows it gone), forget it"
            )));
        }
        let Some(kv) = etcd.get(&layout.host(node)).await.map_err(etcd_err)?.0 else {
            let known = etcd
                .get_prefix(&layout.hosts_prefix())
                .await
                .map_err(etcd_err)?
                .kvs
                .iter()
                .filter_map(|kv| kv.key.strip_prefix(&layout.hosts_prefix()).map(str::to_string))
                .collect::<Vec<_>>();
            return Err(Failure::Usage(format!(
                "the cluster has no host {node:?}; it knows: {}",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        };
        let seen = report(&kv)
            .map(|r| format!(" (last seen {})", crate::clock::format_ms(r.published_ms)))
            .unwrap_or_default();
        etcd.delete(&layout.host(node)).await.map_err(etcd_err)?;
        println!(
            "forgot host {node}{seen}: it no longer shows in status nor counts for drain deadlines"
        );
        Ok(())
    })
}
