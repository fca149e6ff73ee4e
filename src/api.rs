//! The operator protocol, shared by the daemon (`operator`, `control`)
//! and the CLI: one request and response type per
//! command, and one typed error per command, each of which says whose
//! [`Fault`] it is. Nothing here knows of HTTP: `control` maps a fault to
//! a status in one place, the CLI maps it to an exit code.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::answer::Role;
use crate::health::Probe;
use crate::phase::PhaseError;
use crate::state::{CommitError, Event};

fn yes() -> bool {
    true
}

/// Longest `--reason` accepted: it is stored in every history event.
pub const MAX_REASON: usize = 1024;

/// Longest `actor` accepted: a login name, kept in every history event.
pub const MAX_ACTOR: usize = 64;

/// `advance` / `rollback` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    /// Target phase; default the next (advance) or previous (rollback).
    #[serde(default)]
    pub to: Option<String>,
    /// Skip the health and hold checks (advance only).
    #[serde(default)]
    pub force: bool,
    /// Report what would be served without changing anything.
    #[serde(default)]
    pub dry_run: bool,
    /// Operator's reason, recorded in history.
    #[serde(default)]
    pub reason: Option<String>,
    /// Who runs the command (the CLI sends the login name, or `--actor`);
    /// recorded in history, informational: not authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// Result of a transition (or of a dry run).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransitionResponse {
    /// Service key.
    pub service: String,
    /// Phase before.
    pub from: String,
    /// Phase after (or that would be entered).
    pub to: String,
    /// False for a dry run.
    pub applied: bool,
    /// Weights of the target phase by pool, in configuration order.
    pub weights: indexmap::IndexMap<String, u32>,
    /// TTL answered in the target phase.
    pub ttl: u32,
    /// Things the operator should know (longer TTL, forced, ...).
    pub warnings: Vec<String>,
    /// The epoch the change created; absent for a dry run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
}

/// Body of endpoint enable/disable.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// Operator's reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// Who runs the command (the CLI sends the login name, or `--actor`);
    /// recorded in history, informational: not authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// Body of endpoint enable/disable.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointRequest {
    /// Disable even if that leaves a pool that answers now without a
    /// usable endpoint (ignored by enable).
    #[serde(default)]
    pub force: bool,
    /// Operator's reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// Who runs the command (the CLI sends the login name, or `--actor`);
    /// recorded in history, informational: not authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// Body of decommission.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecommissionRequest {
    /// Decommission even before the pool's drain deadline plus grace.
    #[serde(default)]
    pub force: bool,
    /// Operator's reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// Who runs the command (the CLI sends the login name, or `--actor`);
    /// recorded in history, informational: not authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// A plain acknowledgement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OkResponse {
    /// What was done, for humans.
    pub message: String,
    /// The epoch the change created; absent when nothing changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// Things the operator should know (hosts that did not follow in time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl OkResponse {
    /// An acknowledgement saying `message`, before any change is committed.
    pub fn said(message: String) -> OkResponse {
        OkResponse {
            message,
            epoch: None,
            warnings: Vec::new(),
        }
    }
}

/// A response to a command that may change the state: `apply` fills in
/// the epoch the change created and warnings found after the commit.
pub trait Applied {
    /// The change was committed at `epoch`.
    fn created(&mut self, epoch: i64);
    /// Something the operator should know.
    fn warn(&mut self, warning: String);
}

impl Applied for OkResponse {
    fn created(&mut self, epoch: i64) {
        self.epoch = Some(epoch);
    }
    fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }
}

impl Applied for TransitionResponse {
    fn created(&mut self, epoch: i64) {
        self.epoch = Some(epoch);
    }
    fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }
}

/// Status of every (or one) service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    /// Unix milliseconds at which this was taken.
    pub now_ms: u64,
    /// SOA serial currently served.
    pub serial: u32,
    /// Digest of the zones this host serves (`zones=` in `_dnsshift` TXT).
    #[serde(default)]
    pub zones: String,
    /// Services.
    pub services: Vec<ServiceStatus>,
    /// Every host sharing the state (`[cluster]`); empty for a single host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostStatus>,
    /// Whether this host reaches etcd (`[cluster]`); absent for a single host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdStatus>,
    /// Where this host's DNS cookie secret comes from and when it rotates
    /// (never the secret); absent from a daemon that predates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookies: Option<CookieStatus>,
}

/// Where the DNS cookie secret in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretSource {
    /// `[cookies] secret_file` (rotated by hand).
    File,
    /// The cluster's shared secret, read from etcd.
    Etcd,
    /// The cluster's shared secret as this host last read it, from its
    /// state directory: etcd was unreachable.
    LocalCopy,
    /// Made at random by this host (a single host without `secret_file`,
    /// or a cluster host that never reached etcd).
    Random,
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SecretSource::File => "file",
            SecretSource::Etcd => "etcd",
            SecretSource::LocalCopy => "local copy",
            SecretSource::Random => "random",
        })
    }
}

/// The DNS cookie secret in `status`, and the answer to `cookies rotate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CookieStatus {
    /// Where it came from.
    pub source: SecretSource,
    /// When the current secret was made (Unix ms); `None` for a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_ms: Option<u64>,
    /// `[cookies] rotate` in seconds; `None` for a file (rotated by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_s: Option<u64>,
    /// When the next automatic rotation is due (Unix ms); `None` for a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_ms: Option<u64>,
    /// A previous secret is still accepted.
    pub previous: bool,
}

/// Why `cookies rotate` did nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CookiesRotateError {
    /// The secret is read from `[cookies] secret_file`.
    #[error(
        "the DNS cookie secret is read from [cookies] secret_file: rotate it by hand (write a new secret file, name the old one previous_secret_file, then `dnsshift reload`)"
    )]
    FromFile,
    /// The shared secret could not be rotated in etcd.
    #[error("cannot rotate the shared DNS cookie secret: {0}")]
    Etcd(String),
}

impl ApiError for CookiesRotateError {
    fn fault(&self) -> Fault {
        match self {
            CookiesRotateError::FromFile => Fault::Refused,
            CookiesRotateError::Etcd(_) => Fault::Internal,
        }
    }
}

/// This host's view of etcd, in `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EtcdStatus {
    /// This host reads and watches etcd. When false, the hosts' liveness
    /// is unknown (their `live` is as last seen) and commands fail.
    pub reachable: bool,
    /// Since when etcd is unreachable (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since_ms: Option<u64>,
    /// The latest failure, naming etcd and its endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One host of a cluster as `status` sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostStatus {
    /// Its node id.
    pub node: String,
    /// Epoch of the state it serves.
    pub epoch: i64,
    /// When it last published its report (Unix ms).
    pub last_seen_ms: u64,
    /// Its lease is alive: it is running and reaches etcd (as last seen
    /// when `live_known` is false).
    pub live: bool,
    /// Whether `live` is current: false while this host cannot reach etcd.
    #[serde(default = "yes")]
    pub live_known: bool,
    /// It serves its local copy (etcd was unreachable when it started).
    pub from_local_copy: bool,
    /// Endpoint health as it sees it.
    pub endpoints: Vec<crate::state::cluster::EndpointHealth>,
    /// Digest of the zones it serves (`None`: a host that predates it).
    #[serde(default)]
    pub zones: Option<String>,
    /// Its zones differ from the other live hosts' (see the README).
    #[serde(default)]
    pub zones_differ: bool,
}

/// Status of one service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Service key (FQDN).
    pub service: String,
    /// Name as written in the zone file.
    pub short: String,
    /// Staging name, if any.
    pub staging: Option<String>,
    /// Current phase.
    pub phase: String,
    /// All phases in order.
    pub phases: Vec<String>,
    /// Unix seconds when the current phase was entered (0: since start-up, never changed).
    pub since: u64,
    /// TTL answered now.
    pub ttl: u32,
    /// Unix ms when the current phase's `hold` ends (advancing earlier
    /// needs `--force`); `None` when the phase has no hold.
    pub hold_until_ms: Option<u64>,
    /// No pool has a usable endpoint (of any record family) for the main
    /// name and its answers fail open: as if every endpoint were usable.
    pub fail_open: bool,
    /// The same for the staging name.
    pub staging_fail_open: bool,
    /// No pool has a usable endpoint (of any record family) and the
    /// service answers SERVFAIL (`on_all_down = "servfail"`).
    pub servfail: bool,
    /// The service's latest history entry (who, where, when, what).
    #[serde(default)]
    pub last_change: Option<Event>,
    /// Pools, in configuration order.
    pub pools: Vec<PoolStatus>,
    /// What the main name answers now, by record family ("A", "AAAA"):
    /// the effective shares of each family's queries. The pools are drawn
    /// with the same probabilities for both; a drawn pool without an
    /// address of the family answers NODATA.
    #[serde(default)]
    pub shares: BTreeMap<String, FamilyShares>,
    /// The pool the staging name answers (`None` without a staging name).
    #[serde(default)]
    pub staging_pool: Option<String>,
    /// What the staging name answers now, by record family, as for
    /// `shares` (empty without a staging name).
    #[serde(default)]
    pub staging_shares: BTreeMap<String, FamilyShares>,
    /// Automatic progression (issue 17).
    #[serde(default)]
    pub auto: AutoStatus,
    /// How a query picks among the pools: "random" (every query draws by
    /// weight) or "sticky" (each client network keeps its pool; issue 18).
    #[serde(default = "random_assignment")]
    pub assignment: String,
    /// For sticky assignment: the prefixes a resolver's address is keyed
    /// on without ECS, as "/24 /48" (empty for random).
    #[serde(default)]
    pub sticky_prefixes: String,
}

/// `assignment` of a status from a host that predates it.
fn random_assignment() -> String {
    "random".into()
}

/// What one name answers for one record family, as shares of that
/// family's queries; the shares of the pools and `nodata` add up to 1
/// unless the name answers SERVFAIL.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FamilyShares {
    /// Pools answered with their records, in configuration order (pools
    /// with no share are left out).
    pub pools: Vec<PoolShare>,
    /// Share answered NODATA (NOERROR, no records): the drawn pool has no
    /// usable address of the family; resolvers then try the other family.
    pub nodata: f64,
    /// The name answers SERVFAIL for lack of a usable endpoint.
    pub servfail: bool,
}

/// One pool's share in [`FamilyShares`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolShare {
    /// Pool name.
    pub pool: String,
    /// Share of the family's queries answered with the pool's records (0..1).
    pub share: f64,
}

/// Status of one pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Pool name.
    pub pool: String,
    /// Weight in the current phase.
    pub weight: u32,
    /// Decommissioned by the operator.
    pub decommissioned: bool,
    /// What the pool does for the main name right now. Roles are decided
    /// for the name, so they agree for every record family; `None` only
    /// from a daemon that decided per family (see `roles`).
    pub role: Option<Role>,
    /// What the pool does for the main name right now, by record family
    /// ("A", "AAAA"; "*" for a service with a host-name pool). Families the
    /// pool has no endpoint of are absent: when drawn for them, it answers
    /// NODATA (see `ServiceStatus::shares`).
    pub roles: BTreeMap<String, Role>,
    /// Main-name answers carrying this pool in the last minute.
    pub answers_last_minute: u64,
    /// Share of main-name answers in the last minute (0..1).
    pub share_last_minute: f64,
    /// Unix ms of the last main-name answer carrying this pool.
    pub last_answered_ms: Option<u64>,
    /// TTL of that answer.
    pub last_ttl: Option<u32>,
    /// For a pool the main name does not answer now: last answer + its
    /// TTL; no resolver that honours TTLs holds the pool after this.
    pub drained_at_ms: Option<u64>,
    /// The vanished host (no live lease) whose last answers set
    /// `drained_at_ms`, later than any live host's: it holds up the drain.
    /// `dnsshift cluster forget NODE` once it has left for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_held_by: Option<String>,
    /// `drained_at_ms` has passed.
    pub drained: bool,
    /// `drained_at_ms` plus the service's drain grace.
    pub safe_to_decommission_after_ms: Option<u64>,
    /// Endpoints.
    pub endpoints: Vec<EndpointStatus>,
}

/// Status of one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointStatus {
    /// Endpoint as written.
    pub endpoint: String,
    /// Health verdict (true until the first result, and when not checked).
    pub healthy: bool,
    /// Whether a health check is configured.
    pub checked: bool,
    /// Taken out by the operator.
    pub disabled: bool,
    /// Unix seconds of the last verdict change.
    pub since: u64,
    /// Last probe.
    pub last_check: Option<Probe>,
}

/// `history`'s query string: `?all=true` for every event kept rather
/// than the most recent [`crate::state::journal::TAIL`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// Every event kept (all rotated files; on etcd every kept key).
    #[serde(default)]
    pub all: bool,
}

/// History of one service, or of every service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryResponse {
    /// Service key; absent when the history covers every service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Oldest first (newest last).
    pub events: Vec<HistoryEntry>,
}

/// One history event as `history` sends it: the recorded event, with its
/// time also in Unix milliseconds (`at_ms`), the unit of every time in
/// `status`. The event's own `at` (Unix seconds, as the state file keeps
/// it) stays for the scripts that read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// The event as recorded.
    #[serde(flatten)]
    pub event: Event,
}

impl From<Event> for HistoryEntry {
    fn from(event: Event) -> Self {
        HistoryEntry {
            at_ms: event.at.saturating_mul(1000),
            event,
        }
    }
}

/// Result of a reload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadResponse {
    /// Zones now served.
    pub zones: usize,
    /// Services now served.
    pub services: usize,
    /// SOA serial now served.
    pub serial: u32,
    /// Things the operator should know (hosts serving different zones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What changed against the zones served before (or, for a dry run,
    /// what would), one line each.
    #[serde(default)]
    pub changes: Vec<String>,
    /// Nothing was applied: the zones and serial are what a reload would
    /// serve and what is served now.
    #[serde(default)]
    pub dry_run: bool,
}

/// An error from the daemon, as it travels: the typed error's message and
/// its [`Fault`], from which the daemon takes the HTTP status and the CLI
/// its exit code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// Whose fault it is; absent from errors the HTTP layer itself makes
    /// (a malformed body, say) and from daemons older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
}

// ------------------------------------------------------------------ errors

/// Whose fault an error is: what the operator should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The command names something the zones do not have.
    NotFound,
    /// The command itself is wrong (ambiguous name, wrong direction, too
    /// long a reason): fix the command line.
    Usage,
    /// Refused in the current state (hold, health, drain, already there).
    Refused,
    /// The bearer token is missing or wrong.
    Unauthorized,
    /// The request body is too large.
    TooLarge,
    /// The request body did not arrive in time.
    Timeout,
    /// The daemon failed to carry it out (state not written).
    Internal,
}

/// An error of the operator protocol: every command's error type.
pub trait ApiError: std::error::Error {
    /// Whose fault it is.
    fn fault(&self) -> Fault;

    /// The error as it travels.
    fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.to_string(),
            fault: Some(self.fault()),
        }
    }
}

/// A command named a service, pool or endpoint that is not there, or not
/// uniquely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotFound {
    /// No service by that name.
    #[error("unknown service {name:?} (services: {known})")]
    Service {
        /// As given.
        name: String,
        /// Every service key, comma-separated.
        known: String,
    },
    /// A short name that several services share.
    #[error("service name {name:?} is ambiguous: give the full name")]
    Ambiguous {
        /// As given.
        name: String,
    },
    /// The service has no such pool.
    #[error("service {service} has no pool {pool:?}")]
    Pool {
        /// Service key.
        service: String,
        /// As given.
        pool: String,
    },
    /// The service has no such endpoint.
    #[error("service {service} has no endpoint {endpoint:?} (endpoints: {known})")]
    Endpoint {
        /// Service key.
        service: String,
        /// As given.
        endpoint: String,
        /// Every endpoint of the service, comma-separated.
        known: String,
    },
}

impl ApiError for NotFound {
    fn fault(&self) -> Fault {
        match self {
            NotFound::Ambiguous { .. } => Fault::Usage,
            _ => Fault::NotFound,
        }
    }
}

/// A reason longer than [`MAX_REASON`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the reason is {len} bytes long; at most {MAX_REASON} are kept")]
pub struct ReasonTooLong {
    /// Its length in bytes.
    pub len: usize,
}

/// An `actor` that is no login name: empty, longer than [`MAX_ACTOR`], or
/// with control characters or spaces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "actor {actor:?} is not a login name: 1 to {MAX_ACTOR} printable characters without spaces (--actor)"
)]
pub struct BadActor {
    /// As given.
    pub actor: String,
}

impl BadActor {
    /// Checks an actor as sent.
    pub fn check(actor: &Option<String>) -> Result<(), BadActor> {
        match actor {
            Some(a)
                if a.is_empty()
                    || a.len() > MAX_ACTOR
                    || a.chars().any(|c| c.is_control() || c.is_whitespace()) =>
            {
                Err(BadActor { actor: a.clone() })
            }
            _ => Ok(()),
        }
    }
}

/// The state store refused or failed a commit: nothing changed.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct NotSaved(#[from] pub CommitError);

impl NotSaved {
    fn fault(&self) -> Fault {
        match self.0 {
            CommitError::Conflict { .. } => Fault::Refused,
            CommitError::Store(_) => Fault::Internal,
        }
    }
}

/// Why `advance` or `rollback` did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    /// No such service.
    #[error(transparent)]
    NotFound(#[from] NotFound),
    /// Reason too long.
    #[error(transparent)]
    Reason(#[from] ReasonTooLong),
    /// Actor not a login name.
    #[error(transparent)]
    Actor(#[from] BadActor),
    /// `--to` the phase it is in.
    #[error("{service} is already in phase {phase:?}")]
    AlreadyIn {
        /// Service key.
        service: String,
        /// Its phase.
        phase: String,
    },
    /// A pool that would get traffic is decommissioned.
    #[error(
        "pool {pool:?} would receive traffic in phase {phase:?} but is decommissioned: recommission it first (`dnsshift recommission {short} {pool}`)"
    )]
    Decommissioned {
        /// The phase it would enter.
        phase: String,
        /// The service's short name.
        short: String,
        /// The pool.
        pool: String,
    },
    /// The phase machine refused it (hold, health, first or last phase,
    /// unknown phase, wrong direction).
    #[error(transparent)]
    Phase(PhaseError),
    /// Not saved.
    #[error(transparent)]
    NotSaved(#[from] NotSaved),
}

impl ApiError for TransitionError {
    fn fault(&self) -> Fault {
        match self {
            TransitionError::NotFound(e) => e.fault(),
            TransitionError::Reason(_) | TransitionError::Actor(_) => Fault::Usage,
            // The operator named the wrong thing: a usage error.
            TransitionError::Phase(
                PhaseError::UnknownPhase { .. } | PhaseError::WrongDirection { .. },
            ) => Fault::Usage,
            TransitionError::AlreadyIn { .. }
            | TransitionError::Decommissioned { .. }
            | TransitionError::Phase(_) => Fault::Refused,
            TransitionError::NotSaved(e) => e.fault(),
        }
    }
}

/// Why `endpoint enable|disable` did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// No such service or endpoint.
    #[error(transparent)]
    NotFound(#[from] NotFound),
    /// Reason too long.
    #[error(transparent)]
    Reason(#[from] ReasonTooLong),
    /// Actor not a login name.
    #[error(transparent)]
    Actor(#[from] BadActor),
    /// The disable would leave a pool that answers now without a usable
    /// endpoint (and was not forced).
    #[error(
        "disabling {endpoint} would leave pool {pool:?}, which answers {answers} now, without a usable endpoint (use --force to disable it anyway; its answers then go to other pools, become NODATA for that record family, or follow on_all_down)"
    )]
    WouldStrand {
        /// The endpoint.
        endpoint: String,
        /// Its pool.
        pool: String,
        /// What the pool answers ("A queries for www.example.com.").
        answers: String,
    },
    /// Not saved.
    #[error(transparent)]
    NotSaved(#[from] NotSaved),
}

impl ApiError for EndpointError {
    fn fault(&self) -> Fault {
        match self {
            EndpointError::NotFound(e) => e.fault(),
            EndpointError::Reason(_) | EndpointError::Actor(_) => Fault::Usage,
            EndpointError::WouldStrand { .. } => Fault::Refused,
            EndpointError::NotSaved(e) => e.fault(),
        }
    }
}

/// Why `decommission` did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DecommissionError {
    /// No such service or pool.
    #[error(transparent)]
    NotFound(#[from] NotFound),
    /// Reason too long.
    #[error(transparent)]
    Reason(#[from] ReasonTooLong),
    /// Actor not a login name.
    #[error(transparent)]
    Actor(#[from] BadActor),
    /// The current phase gives the pool weight (never forced).
    #[error(
        "pool {pool:?} has weight {weight} in the current phase {phase:?}: move traffic off it first (advance or rollback to a phase that gives it none)"
    )]
    HasWeight {
        /// The pool.
        pool: String,
        /// Its weight now.
        weight: u32,
        /// The current phase.
        phase: String,
    },
    /// The pool is what the staging name answers (never forced): without
    /// it that name would answer an empty NOERROR, which resolvers cache.
    #[error(
        "pool {pool:?} is what the staging name {name} answers: decommissioning it would leave that name answering nothing (an empty NOERROR, which resolvers cache for the negative TTL); remove `staging` from the service in the zone file and reload first"
    )]
    Staging {
        /// The pool.
        pool: String,
        /// The staging name.
        name: String,
    },
    /// The pool answers now, as standby or fail-open (never forced).
    #[error(
        "pool {pool:?} answers {family} queries now ({}): decommissioning it would leave them to pools without a usable endpoint",
        if *.fail_open { "fail-open: no pool has a usable endpoint" } else { "as standby: the weighted pools have no usable endpoint" }
    )]
    Answered {
        /// The pool.
        pool: String,
        /// The record family it answers.
        family: String,
        /// Answered because nothing is usable (else as standby).
        fail_open: bool,
    },
    /// Before the drain deadline plus grace (and not forced).
    #[error(
        "pool {pool:?} is not safe to decommission until {safe} (drained at {drained}, plus grace) (use --force to decommission now)"
    )]
    NotDrained {
        /// The pool.
        pool: String,
        /// When it is safe (RFC 3339).
        safe: String,
        /// When it drained (RFC 3339).
        drained: String,
    },
    /// Not saved.
    #[error(transparent)]
    NotSaved(#[from] NotSaved),
}

impl ApiError for DecommissionError {
    fn fault(&self) -> Fault {
        match self {
            DecommissionError::NotFound(e) => e.fault(),
            DecommissionError::Reason(_) | DecommissionError::Actor(_) => Fault::Usage,
            DecommissionError::HasWeight { .. }
            | DecommissionError::Answered { .. }
            | DecommissionError::Staging { .. }
            | DecommissionError::NotDrained { .. } => Fault::Refused,
            DecommissionError::NotSaved(e) => e.fault(),
        }
    }
}

/// Why `recommission` did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RecommissionError {
    /// No such service or pool.
    #[error(transparent)]
    NotFound(#[from] NotFound),
    /// Reason too long.
    #[error(transparent)]
    Reason(#[from] ReasonTooLong),
    /// Actor not a login name.
    #[error(transparent)]
    Actor(#[from] BadActor),
    /// Not saved.
    #[error(transparent)]
    NotSaved(#[from] NotSaved),
}

impl ApiError for RecommissionError {
    fn fault(&self) -> Fault {
        match self {
            RecommissionError::NotFound(e) => e.fault(),
            RecommissionError::Reason(_) | RecommissionError::Actor(_) => Fault::Usage,
            RecommissionError::NotSaved(e) => e.fault(),
        }
    }
}

/// Why `history` could not be answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HistoryError {
    /// No such service.
    #[error(transparent)]
    NotFound(#[from] NotFound),
    /// The history could not be read (its file or etcd).
    #[error("{0}")]
    Unreadable(String),
}

impl ApiError for HistoryError {
    fn fault(&self) -> Fault {
        match self {
            HistoryError::NotFound(e) => e.fault(),
            HistoryError::Unreadable(_) => Fault::Internal,
        }
    }
}

/// Why `reload` was rejected: the running configuration keeps serving.
#[derive(Debug, Clone, thiserror::Error)]
#[error("reload rejected, still serving the previous configuration:\n{0}")]
pub struct ReloadError(pub String);

impl ApiError for ReloadError {
    fn fault(&self) -> Fault {
        Fault::Usage
    }
}

/// `auto start|pause|resume` (issue 17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoAction {
    /// Start automation from the current phase (the phase a failure rolls back to).
    Start,
    /// Stop advancing and rolling back; the weights stay.
    Pause,
    /// Continue a paused or failed automation.
    Resume,
}

/// Why `auto start|pause|resume` did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AutoError {
    /// No such service.
    #[error(transparent)]
    NotFound(#[from] NotFound),
    /// Reason too long.
    #[error(transparent)]
    Reason(#[from] ReasonTooLong),
    /// Actor not a login name.
    #[error(transparent)]
    Actor(#[from] BadActor),
    /// The service has no `[service.analysis]`.
    #[error("service {service} has no [service.analysis] in its zone file: nothing to measure")]
    NoAnalysis {
        /// Service key.
        service: String,
    },
    /// `resume` of an automation never started.
    #[error("automation of {service} was never started: use `dnsshift auto start {short}`")]
    NotStarted {
        /// Service key.
        service: String,
        /// Its short name.
        short: String,
    },
    /// Not saved.
    #[error(transparent)]
    NotSaved(#[from] NotSaved),
}

impl ApiError for AutoError {
    fn fault(&self) -> Fault {
        match self {
            AutoError::NotFound(e) => e.fault(),
            AutoError::Reason(_) | AutoError::Actor(_) => Fault::Usage,
            AutoError::NoAnalysis { .. } | AutoError::NotStarted { .. } => Fault::Refused,
            AutoError::NotSaved(e) => e.fault(),
        }
    }
}

/// Automatic progression of a service in `status` (issue 17). The field
/// names are a contract: the live page reads them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoStatus {
    /// "off", "running", "holding", "paused", "failed" or "done".
    pub state: String,
    /// Why it holds, paused, failed or is done.
    #[serde(default)]
    pub why: String,
    /// The phase a failure rolls back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Seconds in the current phase.
    pub in_phase_s: u64,
    /// Seconds before an evaluation may count (the TTL served before the
    /// change plus skew, then one window).
    pub settle_left_s: u64,
    /// Seconds to the next evaluation.
    pub next_eval_s: u64,
    /// Consecutive passing, failed, erroring and inconclusive evaluations.
    pub passes: u32,
    pub failures: u32,
    pub errors: u32,
    pub inconclusive: u32,
    /// Passes the phase needs, and its minimum time in seconds (absent for a
    /// manual gate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passes_needed: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_time_s: Option<u64>,
    /// The host evaluating (a cluster), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluator: Option<String>,
    /// The last evaluation, check by check.
    #[serde(default)]
    pub checks: Vec<CheckStatus>,
}

impl Default for AutoStatus {
    fn default() -> Self {
        AutoStatus {
            state: "off".into(),
            why: String::new(),
            origin: None,
            in_phase_s: 0,
            settle_left_s: 0,
            next_eval_s: 0,
            passes: 0,
            failures: 0,
            errors: 0,
            inconclusive: 0,
            passes_needed: None,
            min_time_s: None,
            evaluator: None,
            checks: Vec::new(),
        }
    }
}

/// One check of an evaluation: what was asked, what came back, the rule
/// and the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckStatus {
    /// Check name; `volume` and `share` for the built-in ones.
    pub name: String,
    /// The query as asked (templated).
    pub query: String,
    /// The value, if one came back.
    pub value: Option<f64>,
    /// The baseline pool's value (a relative rule), or the expected share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// The rule in words.
    pub rule: String,
    /// "pass", "fail", "inconclusive" or "error".
    pub verdict: String,
    /// Why, when it is not a pass.
    #[serde(default)]
    pub detail: String,
    /// A failure rolls back at once.
    #[serde(default)]
    pub critical: bool,
}

/// `analysis SERVICE`: every check evaluated now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnalysisResponse {
    /// Service key.
    pub service: String,
    /// The measured pool and the phase whose weights the share check uses.
    pub pool: String,
    pub phase: String,
    /// The provider's URL.
    pub provider: String,
    /// Every check.
    pub checks: Vec<CheckStatus>,
    /// The evaluation's verdict.
    pub verdict: String,
}

/// `GET /v1/dnssec`: the signed zones this host serves (issue 20).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnssecStatusResponse {
    /// This host's node id (several hosts should list the same key tags).
    pub node: String,
    /// One entry per signed zone.
    pub zones: Vec<DnssecZoneStatus>,
}

/// One signed zone in [`DnssecStatusResponse`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnssecZoneStatus {
    /// The zone's origin.
    pub origin: String,
    /// Its keys: signing first, then published.
    pub keys: Vec<DnssecKeyStatus>,
    /// Names in the NSEC chain of the plan served now.
    pub nsec_names: usize,
    /// Distinct signed RRsets in the plan served now.
    pub signatures: usize,
    /// RRsets the last plan build signed anew / took from the cache.
    pub last_build_signed: u64,
    pub last_build_reused: u64,
    /// The earliest expiry of a signature in the cache (Unix seconds).
    pub earliest_expiry: Option<u64>,
}

/// One key in [`DnssecZoneStatus`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnssecKeyStatus {
    /// Key tag.
    pub tag: u16,
    /// Algorithm name (`ecdsap256sha256`, `ed25519`) and number.
    pub algorithm: String,
    pub algorithm_number: u8,
    /// `active` (signs, in DNSKEY, CDS and CDNSKEY) or `published` (DNSKEY only).
    pub state: String,
    /// The key file.
    pub file: String,
}
