//! Health checks of endpoints over HTTP, HTTPS or TCP; rise/fall state.

use std::path::PathBuf;
use std::time::Duration;

/// How an endpoint is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// GET a URL over plain HTTP.
    Http,
    /// GET a URL over HTTPS, verifying the certificate unless `insecure`.
    Https,
    /// Only open a TCP connection.
    Tcp,
}

/// A fully resolved check for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Protocol of the probe.
    pub kind: CheckKind,
    /// For http/https: the URL with `{endpoint}` filled in.
    /// For tcp: `host:port` to connect to.
    pub target: String,
    /// Host header and TLS SNI / certificate name, if not the URL's host.
    pub host: Option<String>,
    /// Time between probes (jittered).
    pub interval: Duration,
    /// Bound on one probe, connect to last byte.
    pub timeout: Duration,
    /// Consecutive successes to become healthy.
    pub rise: u32,
    /// Consecutive failures to become unhealthy.
    pub fall: u32,
    /// Accepted status codes, inclusive.
    pub expect: (u16, u16),
    /// Substring that must appear in the first [`BODY_LIMIT`] bytes of the body.
    pub expect_body: Option<String>,
    /// Skip certificate verification (https).
    pub insecure: bool,
    /// Extra CA certificate (PEM) trusted for https checks.
    pub ca_file: Option<PathBuf>,
}

/// How much of a response body a check reads before giving up on it.
pub const BODY_LIMIT: usize = 64 * 1024;
