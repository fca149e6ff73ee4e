// Over 600 lines: one client for etcd's JSON gateway (KV, transactions, watch,
// auth, failover across endpoints), kept whole while issue 11 builds on it.
//! A small etcd v3 client over etcd's gRPC-JSON gateway: keys, compare-and-swap
//! transactions, leases and watches, with endpoint failover, per-request
//! timeouts, TLS and user/password auth.
//!
//! Why the JSON gateway and not gRPC: every etcd 3.x server also serves its
//! gRPC API as JSON over HTTP at `/v3/...` (the grpc-gateway that etcd
//! embeds). Speaking it with the reqwest + rustls client dnsshift already uses
//! for health checks keeps the build free of `protoc` (which the gRPC client
//! crate needs at build time), adds no HTTP/2 stack, and keeps the client to
//! the handful of calls the shared state needs. The gateway's encoding: keys
//! and values are base64 strings, 64-bit integers are decimal strings, fields
//! with their zero value are left out, and server-streaming calls (watch,
//! lease keep-alive) answer newline-separated `{"result": ...}` objects.
//!
//! Nothing here is on the DNS path. Every unary call is bounded by
//! [`EtcdOptions::request_timeout`] per endpoint, so one call takes at most
//! `endpoints × request_timeout`; a refused connection moves on at once.
//!
//! Failover: a call starts at the endpoint that last answered and moves to the
//! next one on a transport error, a timeout or etcd's "unavailable" (a member
//! without a leader). Retrying writes on another endpoint is safe for
//! [`Etcd::compare_and_swap`]: a write that did land the first time makes the
//! retry's comparison fail, so it is applied once or reported as a conflict,
//! never applied twice.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};

// Shared with the health checks: reqwest's errors with their causes.
/// How to reach etcd: the `[cluster]` table's client side (re-exported).
pub use crate::config::cluster::{
    Credentials, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, EtcdOptions,
};
use crate::error::error_chain;
use crate::sync::lock;

/// TCP keep-alive on etcd connections, so that a watch on a vanished peer
/// (no RST, e.g. a partitioned host) fails instead of waiting forever.
const TCP_KEEPALIVE: Duration = Duration::from_secs(5);
/// Unanswered keep-alive probes before the connection counts as dead.
const TCP_KEEPALIVE_RETRIES: u32 = 3;
/// First wait before re-opening a watch after every endpoint failed.
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest wait between rounds of watch reconnects: short, so that a host
/// follows within a second once etcd is back after an outage (a round
/// against refused connections costs next to nothing).
const WATCH_BACKOFF_MAX: Duration = Duration::from_millis(250);
/// A watch that has delivered nothing for this long is checked against a
/// linearizable read on another member (and again this often while it
/// stays silent).
const WATCH_CHECK_AFTER: Duration = Duration::from_millis(500);

/// gRPC status codes etcd answers with (the gateway passes them as `code`).
mod grpc {
    pub const NOT_FOUND: i64 = 5;
    pub const OUT_OF_RANGE: i64 = 11;
    pub const UNAVAILABLE: i64 = 14;
    pub const UNAUTHENTICATED: i64 = 16;
}

/// What went wrong talking to etcd. Every message names etcd and, where
/// there was one, the endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// The options cannot make a client (no endpoint, bad URL, bad PEM).
    #[error("etcd client setup: {0}")]
    Setup(String),
    /// Connecting or talking to one endpoint failed.
    #[error("etcd at {endpoint}: {detail}")]
    Transport {
        /// The endpoint.
        endpoint: String,
        /// What failed (connection refused, TLS, reset...).
        detail: String,
    },
    /// One endpoint did not answer within the request timeout.
    #[error("etcd at {endpoint} did not answer within {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The bound that passed.
        timeout: Duration,
    },
    /// Every endpoint failed; `errors` has one line per endpoint.
    #[error("etcd unreachable: {}", .errors.join("; "))]
    Unavailable {
        /// One message per endpoint tried.
        errors: Vec<String>,
    },
    /// etcd answered with an error.
    #[error("etcd at {endpoint} refused {call}: {message} (gRPC code {code})")]
    Server {
        /// The endpoint.
        endpoint: String,
        /// The gateway path, e.g. `/v3/kv/txn`.
        call: &'static str,
        /// gRPC status code.
        code: i64,
        /// etcd's message.
        message: String,
    },
    /// A read at a revision older than the last compaction: re-read in full.
    #[error("etcd at {endpoint}: revision {revision} has been compacted; re-read in full")]
    Compacted {
        /// The endpoint.
        endpoint: String,
        /// The revision asked for.
        revision: i64,
    },
    /// The lease no longer exists (it expired or was revoked).
    #[error("etcd at {endpoint}: lease {id:x} has expired")]
    LeaseExpired {
        /// The endpoint.
        endpoint: String,
        /// The lease.
        id: i64,
    },
    /// etcd's answer could not be read.
    #[error("etcd at {endpoint}: unreadable answer to {call}: {detail}")]
    Protocol {
        /// The endpoint.
        endpoint: String,
        /// The gateway path.
        call: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl EtcdError {
    /// Whether another endpoint may do better.
    fn try_next(&self) -> bool {
        match self {
            EtcdError::Transport { .. } | EtcdError::Timeout { .. } => true,
            EtcdError::Server { code, .. } => *code == grpc::UNAVAILABLE,
            _ => false,
        }
    }
}

/// One key and its value with etcd's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value bytes.
    pub value: Vec<u8>,
    /// Revision that created the key.
    pub create_revision: i64,
    /// Revision of the last change: the compare-and-swap token.
    pub mod_revision: i64,
    /// Number of changes since creation.
    pub version: i64,
    /// Lease the key is attached to, 0 for none.
    pub lease: i64,
}

/// The answer to a read.
#[derive(Debug, Clone)]
pub struct Range {
    /// Matching keys, sorted by key.
    pub kvs: Vec<KeyValue>,
    /// Store revision the read saw: watch from `revision + 1` to miss nothing.
    pub revision: i64,
}

/// One put in a transaction.
#[derive(Debug, Clone)]
pub struct Put {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// Lease to attach, if any.
    pub lease: Option<i64>,
}

/// The outcome of [`Etcd::compare_and_swap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// Every put was applied at this revision.
    Committed {
        /// Store revision of the transaction: the guard key's new mod_revision.
        revision: i64,
    },
    /// The guard key had changed; nothing was applied.
    Conflict {
        /// The guard key as it is now (`None`: it does not exist).
        current: Option<KeyValue>,
    },
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Lease id.
    pub id: i64,
    /// Time to live etcd granted, whole seconds.
    pub ttl: i64,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A key was created or changed.
    Put(KeyValue),
    /// A key was deleted (or its lease expired).
    Delete {
        /// The key.
        key: String,
        /// Revision of the deletion.
        revision: i64,
    },
}

impl Change {
    /// The key changed.
    pub fn key(&self) -> &str {
        match self {
            Change::Put(kv) => &kv.key,
            Change::Delete { key, .. } => key,
        }
    }

    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        match self {
            Change::Put(kv) => kv.mod_revision,
            Change::Delete { revision, .. } => *revision,
        }
    }
}

/// What [`Watch::next`] delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Changes in revision order; the watch continues after the last one.
    Changes(Vec<Change>),
    /// The revisions the watch needed are compacted away: changes were
    /// missed. Re-read in full, then [`Watch::restart`] from that read's
    /// revision + 1.
    Compacted {
        /// Oldest revision etcd still has.
        compact_revision: i64,
    },
}

/// An etcd client; cheap to clone (clones share connections and auth token).
#[derive(Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
}

struct Inner {
    /// Unary calls: bounded by the request timeout.
    http: reqwest::Client,
    /// Watches: no overall timeout (the stream lives on), same TLS.
    stream_http: reqwest::Client,
    endpoints: Vec<String>,
    request_timeout: Duration,
    credentials: Option<Credentials>,
    /// Index of the endpoint that answered last.
    preferred: AtomicUsize,
    /// Auth token from `/v3/auth/authenticate`, if credentials are set.
    token: Mutex<Option<String>>,
}

impl Etcd {
    /// Builds a client; connects lazily.
    pub fn new(opts: EtcdOptions) -> Result<Etcd, EtcdError> {
        if opts.endpoints.is_empty() {
            return Err(EtcdError::Setup("no etcd endpoint given".into()));
        }
        let mut endpoints = Vec::with_capacity(opts.endpoints.len());
        for e in &opts.endpoints {
            let url = reqwest::Url::parse(e)
                .map_err(|err| EtcdError::Setup(format!("endpoint {e:?}: {err}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(EtcdError::Setup(format!(
                    "endpoint {e:?}: expected http://host:port or https://host:port"
                )));
            }
            endpoints.push(e.trim_end_matches('/').to_string());
        }
        let builder = || -> Result<reqwest::ClientBuilder, EtcdError> {
            let mut b = reqwest::Client::builder()
                .connect_timeout(opts.connect_timeout)
                .tcp_keepalive(TCP_KEEPALIVE)
                .tcp_keepalive_interval(TCP_KEEPALIVE)
                .tcp_keepalive_retries(TCP_KEEPALIVE_RETRIES)
                .redirect(reqwest::redirect::Policy::none())
                .http1_only()
                .no_proxy();
            if let Some(pem) = &opts.ca_pem {
                for cert in reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| EtcdError::Setup(format!("CA certificate: {e}")))?
                {
                    b = b.add_root_certificate(cert);
                }
            }
            if let Some(pem) = &opts.identity_pem {
                let id = reqwest::Identity::from_pem(pem)
                    .map_err(|e| EtcdError::Setup(format!("client certificate and key: {e}")))?;
                b = b.identity(id);
            }
            Ok(b)
        };
        let build = |b: reqwest::ClientBuilder| {
            b.build()
                .map_err(|e| EtcdError::Setup(format!("HTTP client: {e}")))
        };
        Ok(Etcd {
            inner: Arc::new(Inner {
                http: build(builder()?.timeout(opts.request_timeout))?,
                stream_http: build(builder()?)?,
                endpoints,
                request_timeout: opts.request_timeout,
                credentials: opts.credentials,
                preferred: AtomicUsize::new(0),
                token: Mutex::new(None),
            }),
        })
    }

    /// The endpoints, as configured.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// Index of `endpoint` among the endpoints (0 if it is not one).
    fn index_of(&self, endpoint: &str) -> usize {
        self.inner
            .endpoints
            .iter()
            .position(|e| e == endpoint)
            .unwrap_or(0)
    }

    /// Starts the next calls after `endpoint` if it is the preferred one (it
    /// stopped answering a watch).
    fn avoid(&self, endpoint: &str) {
        let n = self.inner.endpoints.len();
        let i = self.index_of(endpoint);
        let _ = self.inner.preferred.compare_exchange(
            i,
            (i + 1) % n,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Reads one key.
    pub async fn get(&self, key: &str) -> Result<(Option<KeyValue>, i64), EtcdError> {
        let r = self.range(json!({ "key": b64(key) }), 0).await?;
        Ok((r.kvs.into_iter().next(), r.revision))
    }

    /// Reads every key under `prefix`, sorted by key.
    pub async fn get_prefix(&self, prefix: &str) -> Result<Range, EtcdError> {
        self.range(prefix_range(prefix), 0).await
    }

    /// Reads every key under `prefix` as it was at `revision`; fails with
    /// [`EtcdError::Compacted`] if that revision is gone.
    pub async fn get_prefix_at(&self, prefix: &str, revision: i64) -> Result<Range, EtcdError> {
        self.range(prefix_range(prefix), revision).await
    }

    /// Reads the keys under `prefix` from `from` on (inclusive), sorted by
    /// key: a prefix without the part before `from`.
    pub async fn get_prefix_from(&self, prefix: &str, from: &str) -> Result<Range, EtcdError> {
        let mut req = prefix_range(prefix);
        req["key"] = json!(b64(from));
        self.range(req, 0).await
    }

    /// Reads at most `limit` keys under `prefix`: the first ones by key, or
    /// the last ones (`last`), returned sorted by key either way;
    /// `keys_only` leaves the values out.
    pub async fn get_prefix_limited(
        &self,
        prefix: &str,
        limit: usize,
        last: bool,
        keys_only: bool,
    ) -> Result<Range, EtcdError> {
        self.get_prefix_limited_from(prefix, prefix, limit, last, keys_only)
            .await
    }

    /// [`Etcd::get_prefix_limited`] among the keys under `prefix` from
    /// `from` on (inclusive).
    pub async fn get_prefix_limited_from(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
        last: bool,
        keys_only: bool,
    ) -> Result<Range, EtcdError> {
        let mut req = prefix_range(prefix);
        req["key"] = json!(b64(from));
        req["limit"] = json!(limit.to_string());
        req["sort_target"] = json!("KEY");
        req["sort_order"] = json!(if last { "DESCEND" } else { "ASCEND" });
        req["keys_only"] = json!(keys_only);
        let mut r = self.range(req, 0).await?;
        if last {
            r.kvs.reverse();
        }
        Ok(r)
    }

    /// How many keys there are under `prefix`.
    pub async fn count_prefix(&self, prefix: &str) -> Result<i64, EtcdError> {
        let mut req = prefix_range(prefix);
        req["count_only"] = json!(true);
        let (_, resp): (String, RangeResponse) = self.call("/v3/kv/range", &req).await?;
        Ok(resp.count)
    }

    /// Deletes every key under `prefix` that sorts before `before`; returns
    /// how many were deleted.
    pub async fn delete_prefix_before(&self, prefix: &str, before: &str) -> Result<i64, EtcdError> {
        let req = json!({ "key": b64(prefix), "range_end": b64(before) });
        let (_, resp): (String, DeleteResponse) = self.call("/v3/kv/deleterange", &req).await?;
        Ok(resp.deleted)
    }

    async fn range(&self, mut req: Value, revision: i64) -> Result<Range, EtcdError> {
        const CALL: &str = "/v3/kv/range";
        if revision > 0 {
            req["revision"] = json!(revision.to_string());
        }
        let (endpoint, resp): (String, RangeResponse) =
            self.call(CALL, &req).await.map_err(|e| match e {
                EtcdError::Compacted { endpoint, .. } => {
                    EtcdError::Compacted { endpoint, revision }
                }
                e => e,
            })?;
        Ok(Range {
            kvs: decode_kvs(&endpoint, CALL, resp.kvs)?,
            revision: resp.header.revision,
        })
    }

    /// Writes one key (optionally attached to a lease); returns the revision.
    pub async fn put(&self, put: &Put) -> Result<i64, EtcdError> {
        self.put_all(std::slice::from_ref(put)).await
    }

    /// Writes several keys in one transaction (all or none); returns the revision.
    pub async fn put_all(&self, puts: &[Put]) -> Result<i64, EtcdError> {
        let req = json!({
            "success": puts.iter().map(|p| json!({ "request_put": put_body(p) })).collect::<Vec<_>>(),
        });
        let (_, resp): (String, TxnResponse) =
            self.call("/v3/kv/txn", &req).await.map_err(|e| match e {
                EtcdError::LeaseExpired { endpoint, .. } => EtcdError::LeaseExpired {
                    endpoint,
                    id: puts.iter().find_map(|p| p.lease).unwrap_or(0),
                },
                e => e,
            })?;
        Ok(resp.header.revision)
    }

    /// Deletes one key; returns the revision.
    pub async fn delete(&self, key: &str) -> Result<i64, EtcdError> {
        let (_, resp): (String, HeaderOnly) = self
            .call("/v3/kv/deleterange", &json!({ "key": b64(key) }))
            .await?;
        Ok(resp.header.revision)
    }

    /// Applies every put in one transaction if and only if `guard`'s
    /// mod_revision is still `expected` (0: the key must not exist). On a
    /// conflict nothing is written and the guard key's current value comes back.
    pub async fn compare_and_swap(
        &self,
        guard: &str,
        expected: i64,
        puts: &[Put],
    ) -> Result<CasOutcome, EtcdError> {
        self.txn(guard, expected, None, puts).await
    }

    /// [`Etcd::compare_and_swap`], and only while `fence` (a key and a
    /// lease id) is still held: the key exists on that lease. A host whose
    /// lease expired (say it was stopped past its TTL) cannot commit.
    pub async fn compare_and_swap_fenced(
        &self,
        guard: &str,
        expected: i64,
        fence: (&str, i64),
        puts: &[Put],
    ) -> Result<CasOutcome, EtcdError> {
        self.txn(guard, expected, Some(fence), puts).await
    }

    async fn txn(
        &self,
        guard: &str,
        expected: i64,
        fence: Option<(&str, i64)>,
        puts: &[Put],
    ) -> Result<CasOutcome, EtcdError> {
        const CALL: &str = "/v3/kv/txn";
        let mut compare = vec![json!({
            "key": b64(guard),
            "target": "MOD",
            "result": "EQUAL",
            "mod_revision": expected.to_string(),
        })];
        if let Some((key, lease)) = fence {
            compare.push(json!({
                "key": b64(key),
                "target": "LEASE",
                "result": "EQUAL",
                "lease": lease.to_string(),
            }));
        }
        let req = json!({
            "compare": compare,
            "success": puts.iter().map(|p| json!({ "request_put": put_body(p) })).collect::<Vec<_>>(),
            "failure": [{ "request_range": { "key": b64(guard) } }],
        });
        let (endpoint, resp): (String, TxnResponse) = self.call(CALL, &req).await?;
        if resp.succeeded {
            return Ok(CasOutcome::Committed {
                revision: resp.header.revision,
            });
        }
        let kvs = resp
            .responses
            .into_iter()
            .next()
            .and_then(|r| r.response_range)
            .map(|r| r.kvs)
            .unwrap_or_default();
        Ok(CasOutcome::Conflict {
            current: decode_kvs(&endpoint, CALL, kvs)?.into_iter().next(),
        })
    }

    /// Grants a lease; keys put with it vanish when it is not kept alive.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<Lease, EtcdError> {
        let (_, resp): (String, LeaseResponse) = self
            .call(
                "/v3/lease/grant",
                &json!({ "TTL": ttl.as_secs().max(1).to_string() }),
            )
            .await?;
        Ok(Lease {
            id: resp.id,
            ttl: resp.ttl,
        })
    }

    /// Renews a lease once; returns its new TTL in seconds, or
    /// [`EtcdError::LeaseExpired`] if it is gone (its keys are gone too).
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, EtcdError> {
        // A streaming call; one request in the body gives one answer.
        let (endpoint, resp): (String, StreamItem<LeaseResponse>) = self
            .call("/v3/lease/keepalive", &json!({ "ID": id.to_string() }))
            .await?;
        match resp.result {
            Some(r) if r.ttl > 0 => Ok(r.ttl),
            _ => Err(EtcdError::LeaseExpired { endpoint, id }),
        }
    }

    /// Revokes a lease, deleting its keys (a clean shutdown).
    pub async fn lease_revoke(&self, id: i64) -> Result<(), EtcdError> {
        let (_, _): (String, HeaderOnly) = self
            .call("/v3/lease/revoke", &json!({ "ID": id.to_string() }))
            .await?;
        Ok(())
    }

    /// Drops every key's revisions before `revision` (what etcd's
    /// `--auto-compaction-retention` does); `physical`: answers only once
    /// the space is freed. [`EtcdError::Compacted`] if `revision` is not
    /// above the last compaction.
    pub async fn compact(&self, revision: i64, physical: bool) -> Result<(), EtcdError> {
        let (_, _): (String, HeaderOnly) = self
            .call(
                "/v3/kv/compaction",
                &json!({ "revision": revision.to_string(), "physical": physical }),
            )
            .await?;
        Ok(())
    }

    /// The newest revision of any key in `range` (`{"key", "range_end"}`),
    /// by a linearizable read that starts at the preferred endpoint, or
    /// at the one after `avoid` when that is the preferred one. 0: no key.
    async fn newest_revision(&self, range: &Value, avoid: usize) -> Result<i64, EtcdError> {
        let n = self.inner.endpoints.len();
        let mut first = self.inner.preferred.load(Ordering::Relaxed);
        if first == avoid {
            first = (avoid + 1) % n;
        }
        let mut req = range.clone();
        req["limit"] = json!("1");
        req["sort_order"] = json!("DESCEND");
        req["sort_target"] = json!("MOD");
        req["keys_only"] = json!(true);
        let (_, resp): (String, RangeResponse) =
            self.call_from(first, "/v3/kv/range", &req).await?;
        Ok(resp.kvs.first().map_or(0, |kv| kv.mod_revision))
    }

    /// Watches every key under `prefix` from `start_revision` on (inclusive).
    /// Nothing is sent until the first [`Watch::next`].
    pub fn watch(&self, prefix: &str, start_revision: i64) -> Watch {
        self.watch_from(prefix, prefix, start_revision)
    }

    /// Watches the keys under `prefix` from `from` on (by key), from
    /// `start_revision` on (inclusive).
    pub fn watch_from(&self, prefix: &str, from: &str, start_revision: i64) -> Watch {
        let mut request = prefix_range(prefix);
        request["key"] = json!(b64(from));
        Watch {
            etcd: self.clone(),
            request,
            next_revision: start_revision,
            stream: None,
            failures: 0,
            check_at: tokio::time::Instant::now(),
            behind: None,
            moved_from: None,
        }
    }

    /// One unary call with failover; returns the endpoint that answered.
    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        call: &'static str,
        body: &Value,
    ) -> Result<(String, T), EtcdError> {
        let first = self.inner.preferred.load(Ordering::Relaxed);
        self.call_from(first, call, body).await
    }

    /// [`Etcd::call`] starting at endpoint `first` rather than the preferred one.
    async fn call_from<T: for<'de> Deserialize<'de>>(
        &self,
        first: usize,
        call: &'static str,
        body: &Value,
    ) -> Result<(String, T), EtcdError> {
        let n = self.inner.endpoints.len();
        let mut errors = Vec::new();
        for i in 0..n {
            let idx = (first + i) % n;
            let endpoint = &self.inner.endpoints[idx];
            match self.call_one(endpoint, call, body).await {
                Ok(v) => {
                    self.inner.preferred.store(idx, Ordering::Relaxed);
                    return Ok((endpoint.clone(), v));
                }
                Err(e) if e.try_next() => errors.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        Err(EtcdError::Unavailable { errors })
    }

    /// One call to one endpoint; authenticates first if needed and once more
    /// if etcd says the token is no longer valid.
    async fn call_one<T: for<'de> Deserialize<'de>>(
        &self,
        endpoint: &str,
        call: &'static str,
        body: &Value,
    ) -> Result<T, EtcdError> {
        let mut retried = false;
        loop {
            let token = self.token(endpoint).await?;
            let mut req = self.inner.http.post(format!("{endpoint}{call}")).json(body);
            if let Some(t) = &token {
                req = req.header(reqwest::header::AUTHORIZATION, t);
            }
            match self.send(endpoint, call, req).await {
                Err(EtcdError::Server { code, .. })
                    if code == grpc::UNAUTHENTICATED && token.is_some() && !retried =>
                {
                    retried = true;
                    self.set_token(None);
                }
                other => return other,
            }
        }
    }

    /// The auth token, fetched from `endpoint` if there is none yet.
    async fn token(&self, endpoint: &str) -> Result<Option<String>, EtcdError> {
        let Some(c) = &self.inner.credentials else {
            return Ok(None);
        };
        if let Some(t) = self.current_token() {
            return Ok(Some(t));
        }
        let req = self
            .inner
            .http
            .post(format!("{endpoint}/v3/auth/authenticate"))
            .json(&json!({ "name": c.user, "password": c.password }));
        let resp: AuthResponse = self.send(endpoint, "/v3/auth/authenticate", req).await?;
        self.set_token(Some(resp.token.clone()));
        Ok(Some(resp.token))
    }

    fn current_token(&self) -> Option<String> {
        lock(&self.inner.token).clone()
    }

    fn set_token(&self, token: Option<String>) {
        *lock(&self.inner.token) = token;
    }

    async fn send<T: for<'de> Deserialize<'de>>(
        &self,
        endpoint: &str,
        call: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, EtcdError> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                EtcdError::Timeout {
                    endpoint: endpoint.to_string(),
                    timeout: self.inner.request_timeout,
                }
            } else {
                EtcdError::Transport {
                    endpoint: endpoint.to_string(),
                    detail: error_chain(&e),
                }
            }
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        parse_answer(endpoint, call, status, &bytes)
    }
}

/// Reads a gateway answer: the message, or etcd's error as a typed error.
fn parse_answer<T: for<'de> Deserialize<'de>>(
    endpoint: &str,
    call: &'static str,
    status: reqwest::StatusCode,
    bytes: &[u8],
) -> Result<T, EtcdError> {
    let protocol = |detail: String| EtcdError::Protocol {
        endpoint: endpoint.to_string(),
        call,
        detail,
    };
    if !status.is_success() {
        let err: GatewayError = serde_json::from_slice(bytes).map_err(|_| {
            protocol(format!(
                "HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })?;
        return Err(server_error(endpoint, call, err.code, err.message));
    }
    serde_json::from_slice(bytes).map_err(|e| protocol(e.to_string()))
}

/// Maps etcd's gRPC status to the error a caller can act on.
fn server_error(endpoint: &str, call: &'static str, code: i64, message: String) -> EtcdError {
    if code == grpc::OUT_OF_RANGE && message.contains("compacted") {
        return EtcdError::Compacted {
            endpoint: endpoint.to_string(),
            revision: 0,
        };
    }
    if code == grpc::NOT_FOUND && message.contains("lease not found") {
        return EtcdError::LeaseExpired {
            endpoint: endpoint.to_string(),
            id: 0,
        };
    }
    EtcdError::Server {
        endpoint: endpoint.to_string(),
        call,
        code,
        message,
    }
}

/// A watch on a key prefix that survives member failures: when its stream
/// breaks it re-opens on the next endpoint from the revision after the last
/// change it delivered, so no change is skipped or repeated.
///
/// A stream can also go silent without breaking: a member stopped (SIGSTOP,
/// a hung disk) still holds its TCP connections, and a member cut off from
/// its peers may keep the stream open until etcd notices. So a stream that
/// has delivered nothing for `WATCH_CHECK_AFTER` (500 ms) is checked: a
/// linearizable read on another member asks for the newest revision under
/// the prefix. If two checks in a row find a revision the stream has not
/// delivered, the stream is stalled and the watch moves to another member
/// (logged). If no member answers the check (an election after the leader
/// froze, or etcd is gone) the silent stream is not trusted either: the
/// watch moves on the same way, and [`Watch::next`] returns an error only
/// if no member takes it. A host notices within about
/// `2 × WATCH_CHECK_AFTER` plus the check's own time.
pub struct Watch {
    etcd: Etcd,
    /// `{"key", "range_end"}` of the watched prefix.
    request: Value,
    /// First revision not yet delivered.
    next_revision: i64,
    stream: Option<WatchStream>,
    /// Rounds in a row in which no endpoint could be watched.
    failures: u32,
    /// When the silent stream is next checked.
    check_at: tokio::time::Instant,
    /// A revision the last check found and the stream had not delivered.
    behind: Option<i64>,
    /// The endpoint a stalled stream was on, until the watch is re-opened.
    moved_from: Option<String>,
}

/// What a progress check of a silent stream concluded.
enum Progress {
    /// Nothing missing, or not yet for long enough.
    Fine,
    /// The stream missed a revision that two checks found: move on.
    Stalled {
        /// The newest revision etcd has under the prefix.
        newest: i64,
    },
}

struct WatchStream {
    endpoint: String,
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Watch {
    /// First revision not yet delivered.
    pub fn next_revision(&self) -> i64 {
        self.next_revision
    }

    /// Continues from `revision` on a fresh stream (after a full re-read).
    pub fn restart(&mut self, revision: i64) {
        self.next_revision = revision;
        self.stream = None;
        self.behind = None;
    }

    /// Judges a check's answer: `newest` is the newest revision under the
    /// prefix. Stalled when the previous check found a revision that the
    /// stream has still not delivered.
    fn judge(&mut self, newest: i64) -> Progress {
        if let Some(missed) = self.behind
            && missed >= self.next_revision
        {
            return Progress::Stalled { newest };
        }
        self.behind = (newest >= self.next_revision).then_some(newest);
        Progress::Fine
    }

    /// The next batch of changes. Reconnects after a broken stream; returns
    /// [`EtcdError::Unavailable`] after a round in which no endpoint could be
    /// watched (call again to retry: later rounds wait a little first).
    /// Cancel-safe: a batch is consumed only when it is returned, and bytes
    /// already read stay buffered, so it may sit in a `select!`.
    pub async fn next(&mut self) -> Result<WatchEvent, EtcdError> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                if self.failures > 0 {
                    let exp = 1u32 << self.failures.min(5);
                    tokio::time::sleep((WATCH_BACKOFF_MIN * exp).min(WATCH_BACKOFF_MAX)).await;
                }
                match self.open().await {
                    Ok(Some(ev)) => {
                        self.failures = 0;
                        return Ok(ev);
                    }
                    Ok(None) => {
                        self.failures = 0;
                        continue;
                    }
                    Err(e) => {
                        self.failures = self.failures.saturating_add(1);
                        return Err(e);
                    }
                }
            };
            let endpoint = stream.endpoint.clone();
            let check = {
                let (etcd, range, at) = (self.etcd.clone(), self.request.clone(), self.check_at);
                let avoid = self.etcd.index_of(&endpoint);
                async move {
                    tokio::time::sleep_until(at).await;
                    etcd.newest_revision(&range, avoid).await
                }
            };
            // A message that arrives during a check drops the check.
            let read = tokio::select! {
                msg = read_message(stream) => msg,
                checked = check => {
                    self.check_at = tokio::time::Instant::now() + WATCH_CHECK_AFTER;
                    match checked.map(|newest| self.judge(newest)) {
                        Ok(Progress::Fine) => continue,
                        Ok(Progress::Stalled { newest }) => tracing::warn!(
                            %endpoint,
                            etcd_revision = newest,
                            watch_revision = self.next_revision - 1,
                            "the etcd watch stopped delivering; moving to another member"
                        ),
                        // No member answered (a leader election, or etcd is
                        // gone): the silent stream cannot be trusted either.
                        // If no member takes the watch, `next` says so.
                        Err(e) => tracing::warn!(
                            %endpoint,
                            error = %e,
                            "the etcd watch stopped delivering; moving to another member"
                        ),
                    }
                    self.etcd.avoid(&endpoint);
                    self.moved_from = Some(endpoint);
                    self.stream = None;
                    self.behind = None;
                    continue;
                }
            };
            self.check_at = tokio::time::Instant::now() + WATCH_CHECK_AFTER;
            match read {
                Ok(msg) => match self.handle(msg) {
                    Some(ev) => return Ok(ev),
                    None => continue,
                },
                Err(e) => {
                    tracing::debug!(error = %e, "etcd watch stream ended; reconnecting");
                    self.stream = None;
                }
            }
        }
    }

    /// Opens a stream on the first endpoint that takes it, starting at the
    /// preferred one. `Ok(Some)` when etcd answered the creation with a
    /// compaction.
    async fn open(&mut self) -> Result<Option<WatchEvent>, EtcdError> {
        let inner = self.etcd.inner.clone();
        let n = inner.endpoints.len();
        let first = inner.preferred.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for i in 0..n {
            let endpoint = inner.endpoints[(first + i) % n].clone();
            match tokio::time::timeout(inner.request_timeout, self.open_one(&endpoint)).await {
                Ok(Ok(created)) => return Ok(created),
                Ok(Err(e)) if e.try_next() => errors.push(e.to_string()),
                Ok(Err(e)) => return Err(e),
                Err(_) => errors.push(
                    EtcdError::Timeout {
                        endpoint,
                        timeout: inner.request_timeout,
                    }
                    .to_string(),
                ),
            }
        }
        Err(EtcdError::Unavailable { errors })
    }

    async fn open_one(&mut self, endpoint: &str) -> Result<Option<WatchEvent>, EtcdError> {
        const CALL: &str = "/v3/watch";
        let mut create = self.request.clone();
        create["start_revision"] = json!(self.next_revision.to_string());
        create["progress_notify"] = json!(true);
        let token = self.etcd.token(endpoint).await?;
        let mut req = self
            .etcd
            .inner
            .stream_http
            .post(format!("{endpoint}{CALL}"))
            // Ask etcd to cancel the watch when this member loses its leader
            // (a partitioned member would otherwise stay silent forever).
            .header("grpc-metadata-hasleader", "true")
            .json(&json!({ "create_request": create }));
        if let Some(t) = &token {
            req = req.header(reqwest::header::AUTHORIZATION, t);
        }
        let resp = req.send().await.map_err(|e| EtcdError::Transport {
            endpoint: endpoint.to_string(),
            detail: error_chain(&e),
        })?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            return parse_answer::<Value>(endpoint, CALL, status, &bytes).map(|_| None);
        }
        let mut stream = WatchStream {
            endpoint: endpoint.to_string(),
            resp,
            buf: Vec::new(),
        };
        let first = read_message(&mut stream).await?;
        if let Some(c) = first.compact_revision.filter(|c| *c > 0) {
            return Ok(Some(WatchEvent::Compacted {
                compact_revision: c,
            }));
        }
        if !first.created {
            return Err(EtcdError::Protocol {
                endpoint: endpoint.to_string(),
                call: CALL,
                detail: "first watch answer is not a creation".into(),
            });
        }
        if let Some(from) = self.moved_from.take() {
            tracing::info!(%from, to = %endpoint, "the etcd watch moved to another member");
        }
        self.check_at = tokio::time::Instant::now() + WATCH_CHECK_AFTER;
        self.behind = None;
        self.stream = Some(stream);
        Ok(None)
    }

    /// Turns one stream message into an event (or nothing, for progress).
    fn handle(&mut self, msg: WatchResponse) -> Option<WatchEvent> {
        if let Some(c) = msg.compact_revision.filter(|c| *c > 0) {
            self.stream = None;
            return Some(WatchEvent::Compacted {
                compact_revision: c,
            });
        }
        if msg.canceled {
            tracing::debug!(reason = %msg.cancel_reason, "etcd cancelled the watch; reconnecting");
            self.stream = None;
            return None;
        }
        let progress = msg.events_empty_progress();
        let endpoint = self.stream.as_ref().map(|s| s.endpoint.clone());
        let mut changes = Vec::with_capacity(msg.events.len());
        for ev in msg.events {
            let Some(kv) = ev.kv else { continue };
            match decode_kv(endpoint.as_deref().unwrap_or(""), "/v3/watch", kv) {
                Ok(kv) if ev.kind == "DELETE" => changes.push(Change::Delete {
                    key: kv.key,
                    revision: kv.mod_revision,
                }),
                Ok(kv) => changes.push(Change::Put(kv)),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an unreadable etcd watch event");
                }
            }
        }
        if let Some(last) = changes.last() {
            self.next_revision = last.revision() + 1;
            return Some(WatchEvent::Changes(changes));
        }
        if progress {
            // Progress notification: everything up to header.revision was sent.
            self.next_revision = self.next_revision.max(msg.header.revision + 1);
        }
        None
    }
}

/// Reads the next newline-terminated message of a watch stream.
async fn read_message(stream: &mut WatchStream) -> Result<WatchResponse, EtcdError> {
    const CALL: &str = "/v3/watch";
    loop {
        if let Some(pos) = stream.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = stream.buf.drain(..=pos).collect();
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            let item: StreamItem<WatchResponse> =
                serde_json::from_slice(line).map_err(|e| EtcdError::Protocol {
                    endpoint: stream.endpoint.clone(),
                    call: CALL,
                    detail: e.to_string(),
                })?;
            if let Some(err) = item.error {
                return Err(server_error(
                    &stream.endpoint,
                    CALL,
                    err.grpc_code.max(err.code),
                    err.message,
                ));
            }
            return item.result.ok_or_else(|| EtcdError::Protocol {
                endpoint: stream.endpoint.clone(),
                call: CALL,
                detail: "stream item without result".into(),
            });
        }
        match stream.resp.chunk().await {
            Ok(Some(bytes)) => stream.buf.extend_from_slice(&bytes),
            Ok(None) => {
                return Err(EtcdError::Transport {
                    endpoint: stream.endpoint.clone(),
                    detail: "watch stream closed".into(),
                });
            }
            Err(e) => {
                return Err(EtcdError::Transport {
                    endpoint: stream.endpoint.clone(),
                    detail: error_chain(&e),
                });
            }
        }
    }
}

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

/// `{"key", "range_end"}` for every key starting with `prefix`.
fn prefix_range(prefix: &str) -> Value {
    let mut end = prefix.as_bytes().to_vec();
    // The range end is the prefix with its last byte below 0xff incremented.
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            break;
        }
    }
    let range_end = if end.is_empty() {
        // "\0": every key (a prefix of only 0xff bytes, or empty).
        B64.encode([0u8])
    } else {
        B64.encode(&end)
    };
    json!({ "key": b64(prefix), "range_end": range_end })
}

fn put_body(p: &Put) -> Value {
    let mut v = json!({ "key": b64(&p.key), "value": B64.encode(&p.value) });
    if let Some(l) = p.lease {
        v["lease"] = json!(l.to_string());
    }
    v
}

fn decode_kvs(
    endpoint: &str,
    call: &'static str,
    kvs: Vec<RawKv>,
) -> Result<Vec<KeyValue>, EtcdError> {
    kvs.into_iter()
        .map(|kv| decode_kv(endpoint, call, kv))
        .collect()
}

fn decode_kv(endpoint: &str, call: &'static str, kv: RawKv) -> Result<KeyValue, EtcdError> {
    let protocol = |detail: String| EtcdError::Protocol {
        endpoint: endpoint.to_string(),
        call,
        detail,
    };
    let key = B64
        .decode(&kv.key)
        .map_err(|e| protocol(format!("key: {e}")))?;
    let key = String::from_utf8(key).map_err(|_| protocol("key is not UTF-8".into()))?;
    let value = B64
        .decode(&kv.value)
        .map_err(|e| protocol(format!("value of {key}: {e}")))?;
    Ok(KeyValue {
        key,
        value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    })
}

/// The gateway writes 64-bit integers as strings; accept numbers too.
fn int<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        S(String),
        N(i64),
    }
    match Int::deserialize(d)? {
        Int::N(n) => Ok(n),
        Int::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn opt_int<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    int(d).map(Some)
}

#[derive(Deserialize, Default)]
struct Header {
    #[serde(default, deserialize_with = "int")]
    revision: i64,
}

#[derive(Deserialize)]
struct HeaderOnly {
    #[serde(default)]
    #[allow(dead_code)]
    header: Header,
}

#[derive(Deserialize)]
struct RawKv {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "int")]
    create_revision: i64,
    #[serde(default, deserialize_with = "int")]
    mod_revision: i64,
    #[serde(default, deserialize_with = "int")]
    version: i64,
    #[serde(default, deserialize_with = "int")]
    lease: i64,
}

#[derive(Deserialize)]
struct RangeResponse {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    kvs: Vec<RawKv>,
    #[serde(default, deserialize_with = "int")]
    count: i64,
}

#[derive(Deserialize)]
struct DeleteResponse {
    #[serde(default, deserialize_with = "int")]
    deleted: i64,
}

#[derive(Deserialize)]
struct TxnResponse {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    succeeded: bool,
    #[serde(default)]
    responses: Vec<TxnOp>,
}

#[derive(Deserialize)]
struct TxnOp {
    response_range: Option<RangeResponse>,
}

#[derive(Deserialize)]
struct LeaseResponse {
    #[serde(rename = "ID", default, deserialize_with = "int")]
    id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "int")]
    ttl: i64,
}

#[derive(Deserialize)]
struct AuthResponse {
    token: String,
}

/// Error body of a unary call.
#[derive(Deserialize)]
struct GatewayError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

/// One item of a streaming answer.
#[derive(Deserialize)]
struct StreamItem<T> {
    result: Option<T>,
    error: Option<StreamError>,
}

#[derive(Deserialize)]
struct StreamError {
    #[serde(default)]
    grpc_code: i64,
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct WatchResponse {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default, deserialize_with = "opt_int")]
    compact_revision: Option<i64>,
    #[serde(default)]
    events: Vec<RawEvent>,
}

impl WatchResponse {
    fn events_empty_progress(&self) -> bool {
        self.events.is_empty() && !self.created && self.header.revision > 0
    }
}

#[derive(Deserialize)]
struct RawEvent {
    /// "PUT" is the zero value and left out; "DELETE" is spelled out.
    #[serde(rename = "type", default)]
    kind: String,
    kv: Option<RawKv>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watch that never connects (nothing listens on port 9 of loopback
    /// in these tests, and nothing is sent until `next`).
    fn idle_watch(from: i64) -> Watch {
        let etcd = Etcd::new(EtcdOptions::new(vec!["http://127.0.0.1:9".into()])).unwrap();
        etcd.watch("/p/", from)
    }

    #[test]
    fn a_silent_watch_is_stalled_only_when_two_checks_find_a_revision_it_missed() {
        /// Newest revision a check finds, revision delivered before it, stalled?
        type Check = (i64, Option<i64>, bool);
        let cases: &[(&str, &[Check])] = &[
            (
                "nothing new",
                &[(9, None, false), (9, None, false), (9, None, false)],
            ),
            ("missed twice", &[(10, None, false), (10, None, true)]),
            (
                "delivered in between",
                &[
                    (10, None, false),
                    (11, Some(10), false),
                    (11, Some(11), false),
                ],
            ),
            (
                "still behind on a later revision",
                &[(10, None, false), (12, Some(10), false), (12, None, true)],
            ),
        ];
        for (name, steps) in cases {
            let mut w = idle_watch(10);
            for (i, (newest, delivered, stalled)) in steps.iter().enumerate() {
                if let Some(d) = delivered {
                    w.next_revision = d + 1;
                }
                let got = matches!(w.judge(*newest), Progress::Stalled { .. });
                assert_eq!(got, *stalled, "{name}, check {i}");
            }
        }
    }

    #[test]
    fn prefix_range_ends_after_the_prefix() {
        let r = prefix_range("/dnsshift/");
        assert_eq!(r["key"], b64("/dnsshift/"));
        assert_eq!(r["range_end"], b64("/dnsshift0"));
        let all = prefix_range("");
        assert_eq!(all["range_end"], B64.encode([0u8]));
    }

    #[test]
    fn gateway_answers_decode() {
        // Copied from etcd 3.4.23's gateway.
        let range = br#"{"header":{"cluster_id":"3249","member_id":"3319","revision":"2","raft_term":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}"#;
        let r: RangeResponse =
            parse_answer("e", "/v3/kv/range", reqwest::StatusCode::OK, range).unwrap();
        assert_eq!(r.header.revision, 2);
        let kv = decode_kvs("e", "/v3/kv/range", r.kvs).unwrap();
        assert_eq!(kv[0].key, "foo");
        assert_eq!(kv[0].value, b"bar");
        assert_eq!(kv[0].mod_revision, 2);

        let err = br#"{"error":"etcdserver: mvcc: required revision has been compacted","message":"etcdserver: mvcc: required revision has been compacted","code":11}"#;
        let e = parse_answer::<RangeResponse>(
            "http://127.0.0.1:2379",
            "/v3/kv/range",
            reqwest::StatusCode::BAD_REQUEST,
            err,
        )
        .err()
        .unwrap();
        assert!(matches!(e, EtcdError::Compacted { .. }), "{e}");
        assert!(e.to_string().starts_with("etcd at http://127.0.0.1:2379"));

        let watch = br#"{"result":{"header":{"revision":"6"},"events":[{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"6"}}]}}"#;
        let item: StreamItem<WatchResponse> = serde_json::from_slice(watch).unwrap();
        let ev = &item.result.unwrap().events[0];
        assert_eq!(ev.kind, "DELETE");
    }
}
