//! The DNS cookie secret's life (RFC 7873, issue 21): where it comes from,
//! when it rotates, and what `status` says of it (never the secret). The
//! data path only reads the secrets installed in
//! [`crate::dns::cookie`]; this module decides which.
//!
//! Sources, in order:
//!
//! - `[cookies] secret_file` (and `previous_secret_file`): the file wins,
//!   on every host; rotated by hand (`reload`), never here.
//! - In a cluster without it, the shared key `<prefix>/secrets/cookies`
//!   ([`crate::state::cluster`]): created by the first host that finds it
//!   absent, installed on every host at start and on every watched
//!   change, rotated by compare-and-swap. Its last value is kept in
//!   `<state_dir>/cookie-secret.json` (mode 0600) for a start while etcd
//!   is unreachable.
//! - A single host without it: a random secret made at start, rotated in
//!   memory.
//!
//! A rotation is due `[cookies] rotate` after the current secret was made;
//! `dnsshift cookies rotate` rotates at once. The current secret becomes
//! the previous one, still accepted: a server cookie lives at most an hour
//! ([`crate::dns::cookie::MAX_AGE_SECS`]) and rotations are at least that
//! far apart, so no cookie is refused before it expires.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{CookieStatus, CookiesRotateError, SecretSource};
use crate::clock::{format_ms, unix_ms};
use crate::dns::cookie::{self, SECRET_LEN, Secrets};
use crate::state::cluster::{Cluster, CookieSecretRecord};
use crate::state::etcd::{CasOutcome, EtcdError};
use crate::state::shared::CookieSecretSeen;
use crate::sync::lock;

/// The local copy of the shared secret, in the state directory.
pub const LOCAL_COPY: &str = "cookie-secret.json";
/// Longest wait for etcd at start before the local copy is used.
const START_WAIT: Duration = Duration::from_secs(3);
/// How often a cluster host without the shared secret tries etcd again.
const RETRY: Duration = Duration::from_secs(2);
/// Longest sleep between looks at the shared secret's age (a rotation by
/// another host arrives by the watch; this bounds a missed one).
const LOOK_EVERY: Duration = Duration::from_secs(60);
/// Tries of a `cookies rotate` whose compare-and-swap lost to another
/// host's change.
const ROTATE_TRIES: usize = 3;

/// The secret's source and age, and its rotation.
pub struct CookieKeeper {
    /// `[cookies] rotate`.
    rotate: Duration,
    /// The cluster's shared secret (`[cluster]`).
    shared: Option<Shared>,
    /// What is installed now.
    info: Mutex<Info>,
}

/// A cluster host's way to the shared secret.
struct Shared {
    cluster: Cluster,
    /// Runs etcd calls for the blocking `cookies rotate`.
    handle: Handle,
    /// `<state_dir>/cookie-secret.json`.
    copy: PathBuf,
}

/// The installed secrets' provenance.
#[derive(Debug, Clone, Copy)]
struct Info {
    source: SecretSource,
    /// When the current secret was made (Unix ms).
    made_ms: Option<u64>,
    /// `mod_revision` of the shared key they came from (0: none).
    revision: i64,
    /// A previous secret is accepted too.
    previous: bool,
}

/// Whether a secret made at `made_ms` is due for rotation at `now_ms`.
pub fn due(made_ms: u64, rotate: Duration, now_ms: u64) -> bool {
    now_ms >= next_rotation(made_ms, rotate)
}

/// When a secret made at `made_ms` is due for rotation (Unix ms).
pub fn next_rotation(made_ms: u64, rotate: Duration) -> u64 {
    made_ms.saturating_add(u64::try_from(rotate.as_millis()).unwrap_or(u64::MAX))
}

/// 16 bytes as 32 lowercase hex digits.
fn hex(secret: &[u8; SECRET_LEN]) -> String {
    secret.iter().map(|b| format!("{b:02x}")).collect()
}

/// The secrets a shared record holds, if it is well-formed.
fn secrets_of(record: &CookieSecretRecord) -> Option<Secrets> {
    let parse = crate::config::cookies::parse_hex;
    Some(Secrets {
        current: parse(&record.current)?,
        previous: match &record.previous {
            Some(p) => Some(parse(p)?),
            None => None,
        },
    })
}

/// A new record: a random current secret, `previous` before it.
fn fresh(previous: Option<&str>, now_ms: u64) -> CookieSecretRecord {
    CookieSecretRecord {
        current: hex(&Secrets::random().current),
        previous: previous.map(str::to_string),
        made_ms: now_ms,
    }
}

impl CookieKeeper {
    /// A keeper rotating every `rotate`; on a cluster host, `shared` is
    /// its cluster handle, its state directory and the runtime for etcd.
    pub fn new(rotate: Duration, shared: Option<(Cluster, &Path, Handle)>) -> CookieKeeper {
        CookieKeeper {
            rotate,
            shared: shared.map(|(cluster, state_dir, handle)| Shared {
                cluster,
                handle,
                copy: state_dir.join(LOCAL_COPY),
            }),
            info: Mutex::new(Info {
                source: SecretSource::Random,
                made_ms: None,
                revision: 0,
                previous: false,
            }),
        }
    }

    /// Installs the first secret, before DNS is served: `file` (`[cookies]
    /// secret_file`) if configured, else the cluster's shared one (created
    /// if absent; the local copy if etcd cannot be read within
    /// [`START_WAIT`], or `etcd_down` says it was not at start), else a
    /// random one. Logs which.
    pub async fn start(&self, file: Option<Secrets>, etcd_down: bool) {
        if let Some(s) = file {
            self.install_file(s);
            return;
        }
        let Some(shared) = &self.shared else {
            self.install_random();
            return;
        };
        if !etcd_down {
            match tokio::time::timeout(START_WAIT, self.sync()).await {
                Ok(Ok(())) if lock(&self.info).revision != 0 => return,
                Ok(Ok(())) => warn!("no usable shared DNS cookie secret in etcd yet"),
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot read the shared DNS cookie secret from etcd")
                }
                Err(_) => warn!("etcd did not give the shared DNS cookie secret in time"),
            }
        }
        match read_copy(&shared.copy) {
            Ok(record) => {
                if let Some(s) = secrets_of(&record) {
                    cookie::install(s);
                    *lock(&self.info) = Info {
                        source: SecretSource::LocalCopy,
                        made_ms: Some(record.made_ms),
                        revision: 0,
                        previous: s.previous.is_some(),
                    };
                    warn!(
                        source = %SecretSource::LocalCopy,
                        path = %shared.copy.display(),
                        made = %format_ms(record.made_ms),
                        "DNS cookie secret: the cluster's, as last read from etcd; etcd is installed once reachable"
                    );
                    return;
                }
                warn!(path = %shared.copy.display(), "the local copy of the DNS cookie secret is malformed");
            }
            Err(e) => {
                warn!(path = %shared.copy.display(), error = %e, "no local copy of the DNS cookie secret")
            }
        }
        self.install_random();
    }

    /// `reload`: a `secret_file` read now replaces the secret in use
    /// (whatever its source); without one, nothing changes (removing
    /// `secret_file` takes effect at the next start).
    pub fn reload(&self, file: Option<Secrets>) {
        if let Some(s) = file {
            self.install_file(s);
        }
    }

    /// The secret's provenance and next rotation, for `status`.
    pub fn status(&self) -> CookieStatus {
        let i = *lock(&self.info);
        let automatic = i.source != SecretSource::File;
        CookieStatus {
            source: i.source,
            made_ms: i.made_ms,
            rotate_s: automatic.then_some(self.rotate.as_secs()),
            next_rotation_ms: i
                .made_ms
                .filter(|_| automatic)
                .map(|m| next_rotation(m, self.rotate)),
            previous: i.previous,
        }
    }

    /// `dnsshift cookies rotate`: a new current secret at once, the current
    /// one becoming the previous; in a cluster by compare-and-swap on the
    /// shared key (retried if another host changed it meanwhile). Refused
    /// for a `secret_file`. Runs on a blocking thread.
    pub fn rotate_now(&self) -> Result<CookieStatus, CookiesRotateError> {
        if lock(&self.info).source == SecretSource::File {
            return Err(CookiesRotateError::FromFile);
        }
        match &self.shared {
            None => self.rotate_memory()?,
            Some(shared) => {
                shared
                    .handle
                    .block_on(self.rotate_shared(true))
                    .map_err(|e| {
                        CookiesRotateError::Etcd(crate::state::shared::etcd_failure(
                            shared.cluster.etcd().endpoints(),
                            &e,
                        ))
                    })?;
            }
        }
        Ok(self.status())
    }

    /// Keeps the secret current until `shutdown`: installs the shared one
    /// whenever `seen` (the store's watch of it) changes, creates it if it
    /// is absent, rotates when due.
    pub async fn run(
        &self,
        mut seen: Option<tokio::sync::watch::Receiver<CookieSecretSeen>>,
        shutdown: CancellationToken,
    ) {
        loop {
            let wait = self.next_look(unix_ms());
            let changed = async {
                match seen.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                true = changed => {
                    let value = seen.as_mut().and_then(|rx| rx.borrow_and_update().clone());
                    if lock(&self.info).source == SecretSource::File {
                        continue;
                    }
                    let result = match value {
                        Some(Some((revision, bytes))) => self.adopt_or_repair(revision, &bytes).await,
                        Some(None) => self.create().await,
                        None => Ok(()),
                    };
                    if let Err(e) = result {
                        warn!(error = %e, "cannot write the shared DNS cookie secret; retrying");
                    }
                }
                _ = tokio::time::sleep(wait) => self.look().await,
            }
        }
    }

    /// How long until the next look at the secret's age.
    fn next_look(&self, now_ms: u64) -> Duration {
        let i = *lock(&self.info);
        if i.source == SecretSource::File {
            return LOOK_EVERY;
        }
        if self.shared.is_some() && i.revision == 0 {
            return RETRY;
        }
        let until = i
            .made_ms
            .map_or(0, |m| next_rotation(m, self.rotate).saturating_sub(now_ms));
        let until = Duration::from_millis(until).max(Duration::from_secs(1));
        if self.shared.is_some() {
            until.min(LOOK_EVERY)
        } else {
            until
        }
    }

    /// A timed look: a cluster host without the shared secret reads (or
    /// creates) it; a due secret is rotated.
    async fn look(&self) {
        let i = *lock(&self.info);
        if i.source == SecretSource::File {
            return;
        }
        if self.shared.is_none() {
            if i.made_ms.is_some_and(|m| due(m, self.rotate, unix_ms())) {
                let _ = self.rotate_memory();
            }
            return;
        }
        let result = if i.revision == 0 {
            self.sync().await
        } else if i.made_ms.is_some_and(|m| due(m, self.rotate, unix_ms())) {
            self.rotate_shared(false).await
        } else {
            Ok(())
        };
        if let Err(e) = result {
            // Once per outage would be nicer; a look is at most every few
            // seconds, and only while something is wrong.
            tracing::debug!(error = %e, "the shared DNS cookie secret is not current");
        }
    }

    /// Reads the shared secret and installs it, creating it if absent.
    async fn sync(&self) -> Result<(), EtcdError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        match shared.cluster.cookie_secret().await? {
            Some((revision, bytes)) => self.adopt_or_repair(revision, &bytes).await,
            None => self.create().await,
        }
    }

    /// [`CookieKeeper::adopt`]; a malformed shared secret (written by hand,
    /// say) is replaced by a new one, if it is still as read: no host could
    /// use it, so no cookie made with it exists.
    async fn adopt_or_repair(&self, revision: i64, bytes: &[u8]) -> Result<(), EtcdError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        if self.adopt(revision, bytes).await {
            return Ok(());
        }
        if self.swap(shared, revision, &fresh(None, unix_ms())).await? {
            info!("replaced the malformed shared DNS cookie secret in etcd");
        }
        Ok(())
    }

    /// Writes `record` as the shared secret if the key is still at
    /// `expected` (0: absent) and installs it; else installs the key as it
    /// is now. Whether it was written.
    async fn swap(
        &self,
        shared: &Shared,
        expected: i64,
        record: &CookieSecretRecord,
    ) -> Result<bool, EtcdError> {
        Ok(
            match shared.cluster.swap_cookie_secret(expected, record).await? {
                CasOutcome::Committed { revision } => {
                    self.adopt(revision, &serde_json::to_vec(record).unwrap_or_default())
                        .await;
                    true
                }
                CasOutcome::Conflict { current } => {
                    if let Some(kv) = current {
                        self.adopt(kv.mod_revision, &kv.value).await;
                    }
                    false
                }
            },
        )
    }

    /// Creates the shared secret if it is still absent; whoever is first
    /// wins, and every other host adopts the winner's. A key deleted by
    /// hand keeps the cluster's secret in use as the previous one.
    async fn create(&self) -> Result<(), EtcdError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let source = lock(&self.info).source;
        let previous = matches!(source, SecretSource::Etcd | SecretSource::LocalCopy)
            .then(|| hex(&cookie::secrets().current));
        if self
            .swap(shared, 0, &fresh(previous.as_deref(), unix_ms()))
            .await?
        {
            info!("created the shared DNS cookie secret in etcd");
        }
        Ok(())
    }

    /// Rotates the shared secret: current to previous, a new current, if
    /// the key is still as read. `force` (the command) retries when another
    /// host changed it meanwhile; a timed rotation gives way to the host
    /// that rotated first, and does nothing if the secret read is not due.
    async fn rotate_shared(&self, force: bool) -> Result<(), EtcdError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        for _ in 0..ROTATE_TRIES {
            let Some((revision, bytes)) = shared.cluster.cookie_secret().await? else {
                return self.create().await;
            };
            let old = serde_json::from_slice::<CookieSecretRecord>(&bytes).ok();
            let now = unix_ms();
            if !force
                && let Some(o) = &old
                && !due(o.made_ms, self.rotate, now)
            {
                // Another host rotated it already.
                self.adopt(revision, &bytes).await;
                return Ok(());
            }
            // A malformed record is replaced, with no previous secret.
            let previous = old
                .as_ref()
                .filter(|o| secrets_of(o).is_some())
                .map(|o| o.current.as_str());
            if self.swap(shared, revision, &fresh(previous, now)).await? {
                info!(
                    next_rotation = %format_ms(next_rotation(now, self.rotate)),
                    manual = force,
                    "rotated the shared DNS cookie secret; the previous one is still accepted"
                );
                return Ok(());
            }
            if !force {
                // Another host rotated first.
                return Ok(());
            }
        }
        Err(EtcdError::Protocol {
            endpoint: String::new(),
            call: "/v3/kv/txn",
            detail: format!(
                "the shared DNS cookie secret changed meanwhile {ROTATE_TRIES} times; try again"
            ),
        })
    }

    /// Installs the shared secret at `revision` unless a later one is
    /// installed (or a file's), and keeps it as the local copy; false if
    /// the value is malformed (nothing installed).
    async fn adopt(&self, revision: i64, bytes: &[u8]) -> bool {
        let Some(shared) = &self.shared else {
            return true;
        };
        let record = match serde_json::from_slice::<CookieSecretRecord>(bytes) {
            Ok(r) => r,
            Err(e) => {
                warn!(key = %shared.cluster.layout().cookie_secret(), error = %e, "malformed shared DNS cookie secret");
                return false;
            }
        };
        let Some(secrets) = secrets_of(&record) else {
            warn!(key = %shared.cluster.layout().cookie_secret(), "malformed shared DNS cookie secret: not 32 hex digits");
            return false;
        };
        {
            let mut i = lock(&self.info);
            if i.source == SecretSource::File || revision <= i.revision {
                return true;
            }
            let was = i.source;
            *i = Info {
                source: SecretSource::Etcd,
                made_ms: Some(record.made_ms),
                revision,
                previous: secrets.previous.is_some(),
            };
            if cookie::install(secrets) || was != SecretSource::Etcd {
                info!(
                    source = %SecretSource::Etcd,
                    revision,
                    made = %format_ms(record.made_ms),
                    next_rotation = %format_ms(next_rotation(record.made_ms, self.rotate)),
                    previous = secrets.previous.is_some(),
                    "DNS cookie secret installed"
                );
            }
        }
        let path = shared.copy.clone();
        let bytes = bytes.to_vec();
        let written = tokio::task::spawn_blocking(move || {
            crate::config::source::write_private(&path, &bytes)
        })
        .await;
        if let Ok(Err(e)) = written {
            warn!(path = %shared.copy.display(), error = %e, "cannot keep the local copy of the DNS cookie secret");
        }
        true
    }

    /// Installs a secret read from `[cookies] secret_file`.
    fn install_file(&self, s: Secrets) {
        let mut i = lock(&self.info);
        let changed = cookie::install(s);
        if changed || i.source != SecretSource::File {
            info!(
                source = %SecretSource::File,
                previous = s.previous.is_some(),
                "DNS cookie secret installed"
            );
        }
        *i = Info {
            source: SecretSource::File,
            made_ms: None,
            revision: 0,
            previous: s.previous.is_some(),
        };
    }

    /// Installs a random secret made now.
    fn install_random(&self) {
        let now = unix_ms();
        cookie::install(Secrets::random());
        *lock(&self.info) = Info {
            source: SecretSource::Random,
            made_ms: Some(now),
            revision: 0,
            previous: false,
        };
        info!(
            source = %SecretSource::Random,
            next_rotation = %format_ms(next_rotation(now, self.rotate)),
            "DNS cookie secret installed"
        );
    }

    /// Rotates a secret this host keeps in memory.
    fn rotate_memory(&self) -> Result<(), CookiesRotateError> {
        let now = unix_ms();
        let mut i = lock(&self.info);
        if i.source == SecretSource::File {
            return Err(CookiesRotateError::FromFile);
        }
        let previous = cookie::secrets().current;
        cookie::install(Secrets {
            current: Secrets::random().current,
            previous: Some(previous),
        });
        i.made_ms = Some(now);
        i.previous = true;
        info!(
            source = %i.source,
            next_rotation = %format_ms(next_rotation(now, self.rotate)),
            "rotated the DNS cookie secret; the previous one is still accepted"
        );
        Ok(())
    }
}

/// Reads the local copy of the shared secret.
fn read_copy(path: &Path) -> Result<CookieSecretRecord, String> {
    let text = crate::config::source::read_regular(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_rotation_is_due_rotate_after_the_secret_was_made() {
        let cases = [
            // (made, rotate, now, due)
            (0, HOUR, 3_599_999, false),
            (0, HOUR, 3_600_000, true),
            (1_000, 24 * HOUR, 86_400_999, false),
            (1_000, 24 * HOUR, 86_401_000, true),
            (u64::MAX - 5, HOUR, u64::MAX - 1, false),
        ];
        for (made, rotate, now, want) in cases {
            assert_eq!(due(made, rotate, now), want, "{made} {rotate:?} {now}");
        }
    }

    #[test]
    fn records_carry_both_secrets_as_hex() {
        let r = fresh(Some("000102030405060708090a0b0c0d0e0f"), 7);
        let s = secrets_of(&r).unwrap();
        assert_eq!(hex(&s.current), r.current);
        assert_eq!(s.previous.unwrap()[15], 15);
        assert_eq!(r.made_ms, 7);
        let bad = CookieSecretRecord {
            previous: Some("zz".into()),
            ..r
        };
        assert!(secrets_of(&bad).is_none());
    }

    #[test]
    fn a_single_host_rotates_in_memory_and_keeps_the_previous_secret() {
        let k = CookieKeeper::new(HOUR, None);
        k.install_random();
        let before = **cookie::secrets();
        let st = k.rotate_now().unwrap();
        let after = **cookie::secrets();
        assert_ne!(after.current, before.current);
        assert_eq!(after.previous, Some(before.current));
        assert_eq!(st.source, SecretSource::Random);
        assert!(st.previous);
        assert_eq!(
            st.next_rotation_ms,
            st.made_ms.map(|m| m + 3_600_000),
            "{st:?}"
        );
        k.install_file(Secrets {
            current: [1; 16],
            previous: None,
        });
        assert!(matches!(k.rotate_now(), Err(CookiesRotateError::FromFile)));
        let st = k.status();
        assert_eq!(
            (st.source, st.next_rotation_ms, st.rotate_s),
            (SecretSource::File, None, None)
        );
    }
}
