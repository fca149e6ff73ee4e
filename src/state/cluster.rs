//! The shared state of several nameservers, kept in etcd: the key layout, what
//! each host publishes, and the operations a shared `StateStore` is built
//! from (load, commit-or-refuse, watch, publish, read every host).
//!
//! # Key layout
//!
//! Every key lives under one prefix (`[cluster] prefix`, default `/dnsshift`):
//!
//! | key | value | written by |
//! |---|---|---|
//! | `<prefix>/state` | the whole operator state (phases, overrides, decommissions) as the same JSON as `state.json`, without history | every command, by compare-and-swap |
//! | `<prefix>/history/<base epoch, 20 digits>` | one history entry (JSON) | the same transaction as the state |
//! | `<prefix>/hosts/<node>` | [`HostReport`], no lease: outlives its host | each host, every publish |
//! | `<prefix>/live/<node>` | the same [`HostReport`], on the host's lease | each host, every publish |
//! | `<prefix>/zones/<digest>` | [`ZonesRecord`]: who loaded these zones last; its `mod_revision` is their *zone generation* | a host that starts serving those zones |
//! | `<prefix>/secrets/cookies` | [`CookieSecretRecord`]: the DNS cookie secret every host uses, the previous one, when the current one was made | the first host without `[cookies] secret_file` (create-if-absent), then a rotation (compare-and-swap on its `mod_revision`) |
//!
//! **Epoch.** The state's `mod_revision` is the epoch: a number etcd assigns,
//! the same on every host, rising with every change. Hosts report the epoch
//! they serve (`_dnsshift.<origin>` TXT, `status`), and the SOA serial is
//! derived from it, so every host serves the same serial for the same state.
//!
//! **Zone generation and the SOA serial.** Each host serves its zones'
//! digest ([`crate::zone::digest()`]). When it starts serving a digest (a
//! reload that changed its zones, or a start with zones other than it last
//! published) it writes `zones/<digest>`; the key's `mod_revision`, a fresh
//! etcd revision, is that digest's *generation*. The SOA serial is
//!
//! > `serial_base + max(epoch, generation of the digest served)` (mod 2^32)
//!
//! so it is the same on every host with the same zones and state (both
//! terms are shared), and rises with every change: a state change brings
//! an epoch above every earlier revision, and a zone change a generation
//! above every earlier revision. A host that goes back to zones it served
//! before writes their key again, so their generation rises too, for every
//! host serving them (they watch `zones/`). While etcd cannot be written a
//! host whose zones changed serves one more than its last serial and writes
//! the key once etcd is back, again if need be until the generation
//! reaches what it served meanwhile, so its serial never goes back.
//! `zones/` keys are never deleted: one small key per version of the zones
//! ever served.
//!
//! **Commit.** A command reads the state at epoch `E`, computes the new state
//! and commits with one transaction: *if* `mod_revision(state) == E` *then*
//! put the state and put `history/<E>`, *else* read the state. So a change is
//! applied whole or refused with the current epoch ("state changed meanwhile
//! (epoch N), nothing done"), never lost.
//!
//! **History** is a key per change rather than a list inside the state, so a
//! commit writes a few hundred bytes whatever the length of the history, and
//! the state stays far below etcd's value size limit (1.5 MiB by default). A
//! history key is named for the epoch the change replaced: at most one commit
//! can succeed from a given epoch, so names never collide, and zero-padding
//! makes key order the commit order. The key's `create_revision` is the epoch
//! the change produced. History is therefore shared and totally ordered.
//! Hosts neither load nor watch it ([`Layout::after_history`]): it is read
//! when `history` asks ([`Cluster::history`]). The last [`HISTORY_KEPT`]
//! entries are kept; every host deletes older ones once there are
//! [`COMPACT_SLACK`] more, with a log line ([`Cluster::compact_history`]).
//!
//! **Hosts.** Each host holds a lease (a TTL of a few seconds, kept alive at a
//! third of it) and publishes, every second or on change, its
//! [`HostReport`]: applied epoch, when it published, per pool its last
//! main-name answer and that answer's TTL, and endpoint health as it sees it.
//! The report goes to two keys in one transaction: `live/<node>` on the lease
//! (it vanishes when the host stops keeping it alive: the host is gone) and
//! `hosts/<node>` without one, so the answer times of a host that vanished
//! stay known. A host with a `hosts/` record and no `live/` key is *vanished*:
//! it may have answered until its lease expired, so for drain it counts as
//! having answered every pool it served at `published + lease TTL` with its
//! longest TTL ([`drained_at`]).
//!
//! **Cookie secret.** Hosts without `[cookies] secret_file` share the DNS
//! cookie secret (RFC 7873), so that each accepts the server cookies the
//! others made. The first host that finds no `secrets/cookies` creates it
//! with a random secret, in a transaction that succeeds only if the key is
//! still absent: of concurrent starters exactly one wins, the others adopt
//! its secret. A rotation (`dnsshift cookies rotate`, or any host that sees
//! the current secret older than `[cookies] rotate`) moves current to
//! previous and writes a new current, by compare-and-swap on the key's
//! `mod_revision`: of hosts rotating at once, exactly one wins. A value no
//! host can read is replaced the same way. Hosts load
//! the key with the state and watch it (it sorts after `history0`), and
//! keep the last one in `<state_dir>/cookie-secret.json` (mode 0600) for a
//! start while etcd is unreachable.
//!
//! **Watching.** Every host watches the prefix after `history/` (not the
//! history, nor the evaluators' keys that sort before it) from the revision after
//! its last read. A change to `state` is applied; `live/` changes feed
//! `status`. When the watch reports that the revisions it needed have been
//! compacted, the host re-reads everything ([`Cluster::load`]) and watches on
//! from that read. A watch that falls silent while etcd moves on (a frozen
//! or cut-off member) moves to another member ([`Watch`]).
//!
//! **Import** (`dnsshift cluster import [STATE_FILE] [--force]`, `cli/import.rs`):
//! read the single-host `state.json` (default: `<state_dir>/state.json`),
//! validate it against the zones like `check` does, then commit it at
//! the current epoch after merging it in, refused if the cluster state
//! already has any of its services; `--force` replaces those, after
//! showing them. The local history goes, as one list, into the
//! commit's history entry (`history/<expected epoch>`), so that the shared
//! history starts with everything the single host recorded. The command
//! talks to etcd directly, not to the daemon, so it works before any host
//! runs with `[cluster]`.

use serde::{Deserialize, Serialize};

use super::etcd::{CasOutcome, Etcd, EtcdError, KeyValue, Put, Watch};

/// Default key prefix.
pub use crate::config::cluster::DEFAULT_PREFIX;

/// Names of the keys under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The prefix without a trailing slash.
    prefix: String,
}

impl Layout {
    /// Keys under `prefix` (a trailing slash is ignored).
    pub fn new(prefix: &str) -> Layout {
        Layout {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// Everything dnsshift keeps: the range a host watches.
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The shared state.
    pub fn state(&self) -> String {
        format!("{}/state", self.prefix)
    }

    /// All history entries.
    pub fn history_prefix(&self) -> String {
        format!("{}/history/", self.prefix)
    }

    /// The first key after every history entry (`history0`: `0` follows
    /// `/`): where a read of everything but the history starts.
    pub fn after_history(&self) -> String {
        format!("{}/history0", self.prefix)
    }

    /// The history entry of the change made from `base_epoch`.
    pub fn history(&self, base_epoch: i64) -> String {
        format!("{}{:020}", self.history_prefix(), base_epoch)
    }

    /// The evaluator of a service's automatic progression (issue 17): on
    /// its host's election lease.
    pub fn evaluator(&self, service: &str) -> String {
        format!("{}/auto/{service}/evaluator", self.prefix)
    }

    /// The evaluator's consecutive counts of a service, for the next one.
    pub fn counters(&self, service: &str) -> String {
        format!("{}/auto/{service}/counters", self.prefix)
    }

    /// Durable host records.
    pub fn hosts_prefix(&self) -> String {
        format!("{}/hosts/", self.prefix)
    }

    /// One host's durable record.
    pub fn host(&self, node: &str) -> String {
        format!("{}{node}", self.hosts_prefix())
    }

    /// Leased host records: the hosts that are alive.
    pub fn live_prefix(&self) -> String {
        format!("{}/live/", self.prefix)
    }

    /// One host's leased record.
    pub fn live(&self, node: &str) -> String {
        format!("{}{node}", self.live_prefix())
    }

    /// Zone generations, one key per zones digest.
    pub fn zones_prefix(&self) -> String {
        format!("{}/zones/", self.prefix)
    }

    /// The generation key of the zones with `digest`.
    pub fn zones(&self, digest: &str) -> String {
        format!("{}{digest}", self.zones_prefix())
    }

    /// The shared DNS cookie secret ([`CookieSecretRecord`]).
    pub fn cookie_secret(&self) -> String {
        format!("{}/secrets/cookies", self.prefix)
    }
}

/// The value of `secrets/cookies`: the DNS cookie secrets of every host
/// without `[cookies] secret_file`. Secrets are 16 bytes as 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CookieSecretRecord {
    /// Makes and checks server cookies.
    pub current: String,
    /// The secret before the last rotation, still accepted.
    pub previous: Option<String>,
    /// When `current` was made (Unix ms): a rotation is due `[cookies]
    /// rotate` after it.
    pub made_ms: u64,
}

/// What one host publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    /// The host's node id.
    pub node: String,
    /// Epoch of the state it serves.
    pub applied_epoch: i64,
    /// When it published this (Unix ms): "last seen".
    pub published_ms: u64,
    /// TTL of its lease, seconds.
    pub lease_ttl_s: u64,
    /// It serves a local copy because etcd was unreachable at start-up.
    #[serde(default)]
    pub from_local_copy: bool,
    /// Per pool: its last main-name answer and that answer's TTL.
    #[serde(default)]
    pub pools: Vec<PoolAnswers>,
    /// Endpoint health as this host sees it.
    #[serde(default)]
    pub endpoints: Vec<EndpointHealth>,
    /// Digest of the zones it serves ([`crate::zone::digest()`]); `None`
    /// from a host that predates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zones: Option<String>,
}

/// The value of `zones/<digest>`: informational; the key's revision is
/// what counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZonesRecord {
    /// The host that last started serving these zones.
    pub node: String,
    /// When (Unix ms).
    pub at_ms: u64,
}

/// How many times a zone generation is written at most to reach a floor
/// (see [`Cluster::register_zones`]).
pub const MAX_GENERATION_WRITES: u32 = 64;

/// One host's last main-name answer carrying a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolAnswers {
    /// Service (fully qualified name).
    pub service: String,
    /// Pool name.
    pub pool: String,
    /// Last main-name answer carrying the pool (Unix ms), if any.
    pub last_answered_ms: Option<u64>,
    /// TTL of that answer, seconds.
    pub ttl_s: u32,
    /// Main-name answers carrying the pool since the host started: the
    /// status page sums every host's to draw the split served (0 from a
    /// host that predates it).
    #[serde(default)]
    pub answers: u64,
}

/// One endpoint's health as one host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointHealth {
    /// Service (fully qualified name).
    pub service: String,
    /// Pool name.
    pub pool: String,
    /// Endpoint address or name.
    pub endpoint: String,
    /// Whether it passes its checks.
    pub healthy: bool,
}

/// A host as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    /// Its latest report.
    pub report: HostReport,
    /// Its lease is alive.
    pub live: bool,
}

/// When no resolver can still hold `pool` of `service` from any host's
/// answers (Unix ms), or `None` if no host ever answered it. A live host
/// counts with its last answer plus TTL; a vanished host may have answered
/// until its lease expired, so it also counts with `published + lease TTL +
/// its longest TTL for the service`.
pub fn drained_at(hosts: &[HostView], service: &str, pool: &str) -> Option<u64> {
    drain_holder(hosts, service, pool).map(|(at, _)| at)
}

/// [`drained_at`] and the host whose answers set it: the one that holds up
/// the drain (the first such host when several tie).
pub fn drain_holder<'a>(
    hosts: &'a [HostView],
    service: &str,
    pool: &str,
) -> Option<(u64, &'a HostView)> {
    hosts
        .iter()
        .filter_map(|h| {
            let r = &h.report;
            let mine = r
                .pools
                .iter()
                .filter(|p| p.service == service && p.pool == pool);
            let answered = mine
                .clone()
                .filter_map(|p| Some(p.last_answered_ms? + u64::from(p.ttl_s) * 1000))
                .max();
            if h.live || answered.is_none() {
                return answered.map(|a| (a, h));
            }
            let longest = r
                .pools
                .iter()
                .filter(|p| p.service == service)
                .map(|p| u64::from(p.ttl_s))
                .max()
                .unwrap_or(0);
            let gone = r.published_ms + (r.lease_ttl_s + longest) * 1000;
            answered.map(|a| (a.max(gone), h))
        })
        .fold(None, |best: Option<(u64, &HostView)>, (at, h)| match best {
            Some((b, _)) if b >= at => best,
            _ => Some((at, h)),
        })
}

/// The shared state as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The state JSON and its epoch, `None` before the first commit.
    pub state: Option<(i64, Vec<u8>)>,
    /// Every host.
    pub hosts: Vec<HostView>,
    /// Zone generation by zones digest.
    pub zones: Vec<(String, i64)>,
    /// The shared cookie secret ([`Layout::cookie_secret`]): its
    /// `mod_revision` and value, `None` before a host creates it.
    pub cookie_secret: Option<(i64, Vec<u8>)>,
    /// Store revision of the read: watch from `revision + 1`.
    pub revision: i64,
}

/// History entries kept in etcd: the last 10,000 (about 2.5 MB); older
/// ones are deleted with a log line ([`Cluster::compact_history`]).
pub const HISTORY_KEPT: usize = 10_000;
/// How many entries beyond [`HISTORY_KEPT`] wait for the next compaction
/// (so that it deletes in batches, not one key per change).
pub const COMPACT_SLACK: usize = 1_000;

/// What a compaction of the shared history deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// How many entries.
    pub deleted: i64,
    /// Base epoch of the oldest deleted.
    pub from_epoch: i64,
    /// Base epoch of the oldest kept: every entry before it went.
    pub kept_from_epoch: i64,
    /// When the oldest deleted was recorded (Unix seconds).
    pub from_at: Option<u64>,
}

/// One shared history entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRecord {
    /// Epoch the change replaced.
    pub base_epoch: i64,
    /// Epoch the change produced.
    pub epoch: i64,
    /// The entry (JSON).
    pub entry: Vec<u8>,
}

/// The outcome of [`Cluster::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// The change is the shared state now, at this epoch.
    Done {
        /// The new epoch.
        epoch: i64,
    },
    /// The state changed meanwhile; nothing was written.
    Conflict {
        /// The epoch it is at now (0: there is no state).
        epoch: i64,
    },
}

/// An unreadable host record.
#[derive(Debug, thiserror::Error)]
#[error("etcd key {key}: unreadable host report: {source}")]
pub struct BadReport {
    key: String,
    source: serde_json::Error,
}

/// One host's handle on the shared state.
#[derive(Clone)]
pub struct Cluster {
    etcd: Etcd,
    layout: Layout,
    node: String,
}

impl Cluster {
    /// This host (`node`) on `etcd` under `layout`.
    pub fn new(etcd: Etcd, layout: Layout, node: String) -> Cluster {
        Cluster { etcd, layout, node }
    }

    /// The key layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The etcd client.
    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    /// Reads the state and every host in one consistent read: one range
    /// from the end of `history/` to the end of the prefix, so the history,
    /// however long, is never part of it.
    pub async fn load(&self) -> Result<Loaded, EtcdError> {
        let range = self
            .etcd
            .get_prefix_from(&self.layout.root(), &self.layout.after_history())
            .await?;
        let state_key = self.layout.state();
        let mut state = None;
        let mut durable = Vec::new();
        let mut live = Vec::new();
        let mut zones = Vec::new();
        let mut cookie_secret = None;
        let cookie_key = self.layout.cookie_secret();
        for kv in range.kvs {
            if kv.key == state_key {
                state = Some((kv.mod_revision, kv.value));
            } else if kv.key == cookie_key {
                cookie_secret = Some((kv.mod_revision, kv.value));
            } else if let Some(digest) = kv.key.strip_prefix(&self.layout.zones_prefix()) {
                zones.push((digest.to_string(), kv.mod_revision));
            } else if let Some(node) = kv.key.strip_prefix(&self.layout.hosts_prefix()) {
                durable.push((node.to_string(), kv));
            } else if let Some(node) = kv.key.strip_prefix(&self.layout.live_prefix()) {
                live.push(node.to_string());
            }
        }
        let hosts = durable
            .into_iter()
            .filter_map(|(node, kv)| match report(&kv) {
                Ok(report) => Some(HostView {
                    live: live.contains(&node),
                    report,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a host record");
                    None
                }
            })
            .collect();
        Ok(Loaded {
            state,
            hosts,
            zones,
            cookie_secret,
            revision: range.revision,
        })
    }

    /// The shared cookie secret: its `mod_revision` and value, `None` if
    /// no host created it yet.
    pub async fn cookie_secret(&self) -> Result<Option<(i64, Vec<u8>)>, EtcdError> {
        let (kv, _) = self.etcd.get(&self.layout.cookie_secret()).await?;
        Ok(kv.map(|kv| (kv.mod_revision, kv.value)))
    }

    /// Writes the shared cookie secret if its key is still at `expected`
    /// (`mod_revision`; 0: create it only if absent). On a conflict, the
    /// key as it is now: another host created or rotated it first.
    pub async fn swap_cookie_secret(
        &self,
        expected: i64,
        record: &CookieSecretRecord,
    ) -> Result<CasOutcome, EtcdError> {
        let key = self.layout.cookie_secret();
        let put = [Put {
            key: key.clone(),
            value: serde_json::to_vec(record).unwrap_or_default(),
            lease: None,
        }];
        self.etcd.compare_and_swap(&key, expected, &put).await
    }

    /// Makes `state` the shared state if it is still at `expected` (0: no
    /// state yet), recording `entry` in the shared history in the same
    /// transaction. Refuses with the current epoch otherwise.
    pub async fn commit(
        &self,
        expected: i64,
        state: &[u8],
        entry: &[u8],
    ) -> Result<Commit, EtcdError> {
        self.commit_fenced(expected, state, entry, None).await
    }

    /// [`Cluster::commit`], and only while `fence` (key, lease) is held:
    /// an automatic change of the evaluator elected for its service.
    pub async fn commit_fenced(
        &self,
        expected: i64,
        state: &[u8],
        entry: &[u8],
        fence: Option<(&str, i64)>,
    ) -> Result<Commit, EtcdError> {
        let puts = [
            Put {
                key: self.layout.state(),
                value: state.to_vec(),
                lease: None,
            },
            Put {
                key: self.layout.history(expected),
                value: entry.to_vec(),
                lease: None,
            },
        ];
        let outcome = match fence {
            Some(f) => {
                self.etcd
                    .compare_and_swap_fenced(&self.layout.state(), expected, f, &puts)
                    .await?
            }
            None => {
                self.etcd
                    .compare_and_swap(&self.layout.state(), expected, &puts)
                    .await?
            }
        };
        Ok(match outcome {
            CasOutcome::Committed { revision } => Commit::Done { epoch: revision },
            CasOutcome::Conflict { current } => Commit::Conflict {
                epoch: current.map_or(0, |kv| kv.mod_revision),
            },
        })
    }

    /// The shared history, oldest first: the last `limit` entries, or
    /// every one kept.
    pub async fn history(&self, limit: Option<usize>) -> Result<Vec<HistoryRecord>, EtcdError> {
        let prefix = self.layout.history_prefix();
        let range = match limit {
            Some(n) => {
                self.etcd
                    .get_prefix_limited(&prefix, n, true, false)
                    .await?
            }
            None => self.etcd.get_prefix(&prefix).await?,
        };
        Ok(history_records(&prefix, range.kvs))
    }

    /// The last `limit` shared history entries after the one that replaced
    /// `base_epoch`, oldest first: what a host that has read up to there
    /// still needs (all of it if fewer than `limit` came since).
    pub async fn history_after(
        &self,
        base_epoch: i64,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, EtcdError> {
        let prefix = self.layout.history_prefix();
        let from = self.layout.history(base_epoch.saturating_add(1));
        let range = self
            .etcd
            .get_prefix_limited_from(&prefix, &from, limit, true, false)
            .await?;
        Ok(history_records(&prefix, range.kvs))
    }

    /// Deletes the oldest history entries beyond the last `keep`, once
    /// there are [`COMPACT_SLACK`] more than that; says what went (for the
    /// log line), or `None` if nothing did.
    pub async fn compact_history(&self, keep: usize) -> Result<Option<Compacted>, EtcdError> {
        let prefix = self.layout.history_prefix();
        let count = usize::try_from(self.etcd.count_prefix(&prefix).await?).unwrap_or(0);
        if count <= keep + COMPACT_SLACK {
            return Ok(None);
        }
        // The first kept key: the oldest of the last `keep` (keys only).
        let kept = self
            .etcd
            .get_prefix_limited(&prefix, keep.max(1), true, true)
            .await?
            .kvs;
        let oldest = self
            .etcd
            .get_prefix_limited(&prefix, 1, false, false)
            .await?
            .kvs;
        let (Some(first), Some(boundary)) = (oldest.first(), kept.first()) else {
            return Ok(None);
        };
        let epoch = |key: &str| {
            key.strip_prefix(&prefix)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        let from_at = super::shared::history_entry(&first.value)
            .first()
            .map(|e| e.at);
        let deleted = self
            .etcd
            .delete_prefix_before(&prefix, &boundary.key)
            .await?;
        Ok(Some(Compacted {
            deleted,
            from_epoch: epoch(&first.key),
            kept_from_epoch: epoch(&boundary.key),
            from_at,
        }))
    }

    /// Publishes this host's report: durable and on `lease`, in one transaction.
    pub async fn publish(&self, lease: i64, report: &HostReport) -> Result<i64, EtcdError> {
        let value = serde_json::to_vec(report).unwrap_or_default();
        self.etcd
            .put_all(&[
                Put {
                    key: self.layout.host(&self.node),
                    value: value.clone(),
                    lease: None,
                },
                Put {
                    key: self.layout.live(&self.node),
                    value,
                    lease: Some(lease),
                },
            ])
            .await
    }

    /// Starts a new generation of the zones with `digest`: writes their key
    /// and returns its revision, writing again (at most
    /// [`MAX_GENERATION_WRITES`] times) while that is below `floor`, so that
    /// a host that raised its serial on its own while etcd was unreachable
    /// never goes back.
    pub async fn register_zones(
        &self,
        digest: &str,
        at_ms: u64,
        floor: i64,
    ) -> Result<i64, EtcdError> {
        let value = serde_json::to_vec(&ZonesRecord {
            node: self.node.clone(),
            at_ms,
        })
        .unwrap_or_default();
        let put = [Put {
            key: self.layout.zones(digest),
            value,
            lease: None,
        }];
        let mut revision = self.etcd.put_all(&put).await?;
        for _ in 1..MAX_GENERATION_WRITES {
            if revision >= floor {
                break;
            }
            revision = self.etcd.put_all(&put).await?;
        }
        if revision < floor {
            // Still below what the host served: keep the zones pending
            // (the caller retries) rather than let its serial go back.
            return Err(EtcdError::Protocol {
                endpoint: String::new(),
                call: "/v3/kv/put",
                detail: format!(
                    "zone generation {revision} still below {floor} after {MAX_GENERATION_WRITES} writes"
                ),
            });
        }
        Ok(revision)
    }

    /// Watches the state, hosts and zones from `revision` (inclusive).
    /// The history keys and evaluators' keys (which sort before it) are
    /// not watched: hosts read history only when asked for it.
    pub fn watch(&self, revision: i64) -> Watch {
        self.etcd
            .watch_from(&self.layout.root(), &self.layout.after_history(), revision)
    }
}

/// History keys under `prefix` as records (a key that is no epoch is
/// skipped).
fn history_records(prefix: &str, kvs: Vec<KeyValue>) -> Vec<HistoryRecord> {
    kvs.into_iter()
        .filter_map(|kv| {
            Some(HistoryRecord {
                base_epoch: kv.key.strip_prefix(prefix)?.parse().ok()?,
                epoch: kv.create_revision,
                entry: kv.value,
            })
        })
        .collect()
}

/// Reads a host report from its key.
pub fn report(kv: &KeyValue) -> Result<HostReport, BadReport> {
    serde_json::from_slice(&kv.value).map_err(|source| BadReport {
        key: kv.key.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(live: bool, published_ms: u64, pools: &[(&str, Option<u64>, u32)]) -> HostView {
        HostView {
            live,
            report: HostReport {
                node: "n".into(),
                applied_epoch: 7,
                published_ms,
                lease_ttl_s: 5,
                from_local_copy: false,
                pools: pools
                    .iter()
                    .map(|(pool, at, ttl)| PoolAnswers {
                        service: "www.example.".into(),
                        pool: pool.to_string(),
                        last_answered_ms: *at,
                        ttl_s: *ttl,
                        answers: 0,
                    })
                    .collect(),
                endpoints: vec![],
                zones: None,
            },
        }
    }

    #[test]
    fn layout_orders_history_by_epoch() {
        let l = Layout::new("/dnsshift/");
        assert_eq!(l.state(), "/dnsshift/state");
        assert_eq!(l.live("ns1"), "/dnsshift/live/ns1");
        assert!(l.history(9) < l.history(10));
        assert_eq!(l.history(12), "/dnsshift/history/00000000000000000012");
        // Everything a load reads sorts after every history key.
        assert!(l.history(i64::MAX) < l.after_history());
        for k in [
            l.state(),
            l.host("a"),
            l.live("a"),
            l.zones("d"),
            l.cookie_secret(),
        ] {
            assert!(k > l.after_history(), "{k}");
        }
    }

    #[test]
    fn drain_is_the_latest_over_hosts() {
        let cases = [
            // (hosts, want)
            (vec![], None),
            (vec![host(true, 0, &[("old", None, 30)])], None),
            (
                vec![
                    host(true, 0, &[("old", Some(1_000), 30)]),
                    host(true, 0, &[("old", Some(5_000), 30)]),
                ],
                Some(35_000),
            ),
            // Vanished: lease (5 s) plus its longest TTL (60 s) after its
            // last publication.
            (
                vec![
                    host(true, 0, &[("old", Some(1_000), 30)]),
                    host(
                        false,
                        10_000,
                        &[("old", Some(2_000), 30), ("new", None, 60)],
                    ),
                ],
                Some(75_000),
            ),
        ];
        for (hosts, want) in cases {
            assert_eq!(drained_at(&hosts, "www.example.", "old"), want, "{hosts:?}");
        }
    }
}
