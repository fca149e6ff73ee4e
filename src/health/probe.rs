//! One probe of one endpoint over HTTP, HTTPS or TCP, bounded by its
//! timeout, and the failure classified for metrics and for people.

use super::*;

/// Probes endpoints. Holds the shared plain-HTTP client.
pub struct Checker {
    http: reqwest::Client,
}

/// Redirects are not followed: a health URL that redirects is answering, and
/// its status code says how.
pub(super) fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .user_agent(concat!("dnsshift-health/", env!("CARGO_PKG_VERSION")))
}

impl Checker {
    /// A checker with one shared client for plain HTTP.
    pub fn new() -> Result<Checker, String> {
        let http = client_builder()
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Checker { http })
    }

    /// Runs one probe, bounded by the check's timeout. `https_client` is the
    /// endpoint's own client for https checks (see `https_client`); an
    /// https check whose client could not be built fails with that reason.
    pub async fn probe(
        &self,
        check: &Check,
        https_client: Option<&Result<reqwest::Client, String>>,
    ) -> Probe {
        let start = Instant::now();
        let result = match (check.kind, https_client) {
            (CheckKind::Https, Some(Err(e))) => Ok(Err((FailKind::Tls, e.clone()))),
            (_, c) => {
                let c = c.and_then(|c| c.as_ref().ok());
                tokio::time::timeout(check.timeout, self.attempt(check, c)).await
            }
        };
        let (failure, detail) = match result {
            Ok(Ok(detail)) => (None, detail),
            Ok(Err((kind, detail))) => (Some(kind), detail),
            Err(_) => (
                Some(FailKind::Timeout),
                format!(
                    "timeout after {}",
                    humantime::format_duration(check.timeout)
                ),
            ),
        };
        Probe {
            at_ms: unix_ms(),
            duration_ms: start.elapsed().as_micros() as f64 / 1000.0,
            failure,
            detail,
        }
    }

    async fn attempt(
        &self,
        check: &Check,
        https_client: Option<&reqwest::Client>,
    ) -> Result<String, (FailKind, String)> {
        match check.kind {
            CheckKind::Tcp => tokio::net::TcpStream::connect(&check.target)
                .await
                .map(|_| "connected".to_string())
                .map_err(|e| classify_io(&e)),
            CheckKind::Http | CheckKind::Https => {
                let (client, url) = match (check.kind, https_client) {
                    (CheckKind::Https, Some(c)) => (c, https_url(check)),
                    _ => (&self.http, check.target.clone()),
                };
                let mut req = client.get(&url);
                if let (Some(h), CheckKind::Http) = (&check.host, check.kind) {
                    req = req.header(reqwest::header::HOST, h);
                }
                let mut resp = req.send().await.map_err(|e| classify_reqwest(&e))?;
                let status = resp.status().as_u16();
                // Read the body up to the bound even if not inspected: a
                // backend that sends without end is not healthy.
                let mut body = Vec::new();
                while let Some(chunk) = resp.chunk().await.map_err(|e| classify_reqwest(&e))? {
                    body.extend_from_slice(&chunk);
                    if body.len() > BODY_LIMIT {
                        return Err((
                            FailKind::Body,
                            format!("body larger than {} KiB", BODY_LIMIT / 1024),
                        ));
                    }
                }
                if status < check.expect.0 || status > check.expect.1 {
                    return Err((FailKind::Status, format!("status {status}")));
                }
                if let Some(want) = &check.expect_body
                    && !String::from_utf8_lossy(&body).contains(want.as_str())
                {
                    return Err((FailKind::Body, format!("body does not contain {want:?}")));
                }
                Ok(format!("status {status}"))
            }
        }
    }
}

/// For https with `host`: the URL with the host name in place of the
/// address, so that SNI and certificate checks use the name; the per-endpoint
/// client resolves that name to the checked address.
pub(super) fn https_url(check: &Check) -> String {
    match (&check.host, reqwest::Url::parse(&check.target)) {
        (Some(h), Ok(mut u)) => {
            if u.set_host(Some(h)).is_ok() {
                u.to_string()
            } else {
                check.target.clone()
            }
        }
        _ => check.target.clone(),
    }
}

/// Builds the client of one https endpoint: its own name→address mapping,
/// CA and verification settings. `Err` carries a message for the log.
pub(super) fn https_client(check: &Check) -> Result<reqwest::Client, String> {
    let mut b = client_builder().https_only(true);
    if let Some(host) = &check.host {
        let url = reqwest::Url::parse(&check.target).map_err(|e| e.to_string())?;
        let port = url.port_or_known_default().unwrap_or(443);
        let name = url.host_str().unwrap_or_default();
        match name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
        {
            Ok(ip) => b = b.resolve(host, SocketAddr::new(ip, port)),
            // A host-name endpoint: `host` must reach that name's
            // addresses, not whatever `host` itself resolves to (often
            // this very service).
            Err(_) => {
                b = b.dns_resolver(Arc::new(ResolveAs {
                    host: host.to_ascii_lowercase(),
                    target: name.to_string(),
                }));
            }
        }
    }
    if check.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    if let Some(ca) = &check.ca_file {
        let pem = crate::config::source::read_regular(ca)
            .map_err(|e| format!("cannot read ca_file {}: {e}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(pem.as_bytes())
            .map_err(|e| format!("invalid ca_file {}: {e}", ca.display()))?;
        b = b.add_root_certificate(cert);
    }
    b.build()
        .map_err(|e| format!("cannot build the HTTPS client: {e}"))
}

/// Resolves `host` by looking up `target` instead; other names as usual.
pub(super) struct ResolveAs {
    pub(super) host: String,
    pub(super) target: String,
}

impl reqwest::dns::Resolve for ResolveAs {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let lookup = if name.as_str().eq_ignore_ascii_case(&self.host) {
            self.target.clone()
        } else {
            name.as_str().to_string()
        };
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((lookup.as_str(), 0))
                .await?
                .collect();
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

pub(super) fn classify_io(e: &std::io::Error) -> (FailKind, String) {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => (FailKind::Refused, "connection refused".into()),
        std::io::ErrorKind::TimedOut => (FailKind::Timeout, "connect timed out".into()),
        _ => (FailKind::Connect, format!("connect failed: {e}")),
    }
}

/// The deepest cause: the OS or TLS error itself, without reqwest's
/// wrapping (which repeats the URL).
pub(super) fn innermost(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

pub(super) fn classify_reqwest(e: &reqwest::Error) -> (FailKind, String) {
    let root = innermost(e);
    // Classify on the causes only: the top-level message holds the URL,
    // whose host may well contain "tls" or "certificate".
    let lower = std::error::Error::source(e)
        .map(error_chain)
        .unwrap_or_default()
        .to_ascii_lowercase();
    if e.is_timeout() {
        (FailKind::Timeout, "timeout".into())
    } else if lower.contains("connection refused") {
        (FailKind::Refused, "connection refused".into())
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")
    {
        (FailKind::Tls, format!("TLS error: {}", plain_words(&root)))
    } else if e.is_connect() {
        (FailKind::Connect, format!("connect failed: {root}"))
    } else {
        (FailKind::Connect, root)
    }
}

/// A failed HTTP request in a few words, without reqwest's wrapping (which
/// repeats the URL): "connection refused", "timeout", "TLS error: ...".
pub fn describe_reqwest(e: &reqwest::Error) -> String {
    classify_reqwest(e).1
}

/// rustls and webpki write some reasons as their `Debug` form
/// (`invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))`): the
/// last part of such a message is turned into words, with a plainer phrase
/// for the reasons operators meet most.
pub(super) fn plain_words(msg: &str) -> String {
    let (head, last) = match msg.rfind(": ") {
        Some(i) => (&msg[..i + 2], &msg[i + 2..]),
        None => ("", msg),
    };
    let debug_shaped = last.starts_with(|c: char| c.is_ascii_uppercase())
        && last
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '(' || c == ')');
    if !debug_shaped {
        return msg.to_string();
    }
    // The innermost name: "Other(OtherError(CaUsedAsEndEntity))" -> "CaUsedAsEndEntity".
    let name = last
        .split(['(', ')'])
        .rfind(|p| !p.is_empty())
        .unwrap_or(last);
    let words = match name {
        "UnknownIssuer" => "signed by an unknown authority (not a trusted CA; see ca_file)".into(),
        "CaUsedAsEndEntity" => "the server sent a CA certificate as its own".into(),
        "Expired" => "the certificate has expired".into(),
        "NotValidYet" => "the certificate is not valid yet".into(),
        "NotValidForName" => "the certificate does not name the checked host".into(),
        "BadSignature" => "bad certificate signature".into(),
        "BadEncoding" => "malformed certificate".into(),
        "Revoked" => "the certificate is revoked".into(),
        _ => {
            // CamelCase -> "camel case".
            let mut w = String::new();
            for c in name.chars() {
                if c.is_ascii_uppercase() && !w.is_empty() {
                    w.push(' ');
                }
                w.push(c.to_ascii_lowercase());
            }
            w
        }
    };
    format!("{head}{words}")
}
