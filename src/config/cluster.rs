//! The `[cluster]` table of dnsshift.toml: where the shared state lives
//! (etcd endpoints, key prefix), who this host is, and how to authenticate.
//!
//! ```toml
//! [cluster]
//! etcd      = ["https://10.0.0.1:2379", "https://10.0.0.2:2379", "https://10.0.0.3:2379"]
//! prefix    = "/dnsshift"            # default
//! node      = "ns1"                  # default: the host name
//! ca_file   = "/etc/dnsshift/etcd-ca.pem"
//! cert_file = "/etc/dnsshift/etcd-client.pem"
//! key_file  = "/etc/dnsshift/etcd-client.key"
//! user      = "dnsshift"
//! password_file = "/etc/dnsshift/etcd.password"   # or password = "..."
//! timeout   = "2s"                   # per request and endpoint
//! compact_revisions = "5m"           # or "off"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::source::{ConfigError, DurationSpec, Source};

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "/dnsshift";
/// Default bound on one request to one endpoint.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Default age beyond which dnsshift compacts etcd's old revisions.
pub const DEFAULT_COMPACT_REVISIONS: Duration = Duration::from_secs(5 * 60);
/// Default bound on opening a TCP (and TLS) connection to one endpoint.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs of the members, `http://` or `https://`, e.g.
    /// `https://10.0.0.1:2379`. Tried in order, starting at the last that answered.
    pub endpoints: Vec<String>,
    /// Bound on one request to one endpoint.
    pub request_timeout: Duration,
    /// Bound on connecting to one endpoint.
    pub connect_timeout: Duration,
    /// Extra trusted CA certificate(s), PEM: etcd's server certificate issuer.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and private key, PEM, concatenated (for
    /// `--client-cert-auth`).
    pub identity_pem: Option<Vec<u8>>,
    /// User name and password (etcd auth).
    pub credentials: Option<Credentials>,
}

impl EtcdOptions {
    /// Plain endpoints with default timeouts, no TLS, no auth.
    pub fn new(endpoints: Vec<String>) -> EtcdOptions {
        EtcdOptions {
            endpoints,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            ca_pem: None,
            identity_pem: None,
            credentials: None,
        }
    }
}

/// etcd user and password.
#[derive(Clone)]
pub struct Credentials {
    /// etcd user name.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Raw `[cluster]` table; keys it does not read are reported by
/// [`super::Config::load`], each at its line.
#[derive(Deserialize)]
pub struct ClusterSpec {
    etcd: Spanned<Vec<Spanned<String>>>,
    prefix: Option<Spanned<String>>,
    node: Option<Spanned<String>>,
    ca_file: Option<String>,
    cert_file: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    timeout: Option<Spanned<DurationSpec>>,
    compact_revisions: Option<Spanned<DurationSpec>>,
}

/// Validated `[cluster]` settings. Files are only named here; they are read
/// when the client is made ([`ClusterConfig::etcd_options`]).
#[derive(Clone)]
pub struct ClusterConfig {
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// Key prefix, without a trailing slash.
    pub prefix: String,
    /// This host's node id.
    pub node: String,
    /// Extra trusted CA for etcd's certificate.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for etcd's `--client-cert-auth`.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// etcd user and where its password comes from.
    pub user: Option<(String, Password)>,
    /// Bound on one request to one endpoint.
    pub request_timeout: Duration,
    /// Revisions older than this are compacted by the hosts; `None`: etcd's
    /// own `--auto-compaction-retention` (or another client) does it.
    pub compact_revisions: Option<Duration>,
}

/// Where the etcd password comes from.
#[derive(Clone)]
pub enum Password {
    /// Written in dnsshift.toml.
    Inline(String),
    /// The first line of this file.
    File(PathBuf),
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("user", &self.user.as_ref().map(|u| &u.0))
            .field("request_timeout", &self.request_timeout)
            .field("compact_revisions", &self.compact_revisions)
            .finish()
    }
}

/// A file named in `[cluster]` that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("[cluster] {key}: {path}: {message}")]
pub struct ClusterFileError {
    key: &'static str,
    path: String,
    message: String,
}

impl ClusterConfig {
    /// Validates the table; `src` is dnsshift.toml.
    pub fn from_spec(src: &Source, spec: ClusterSpec) -> Result<ClusterConfig, ConfigError> {
        let list = spec.etcd.get_ref();
        if list.is_empty() {
            return Err(src.error(
                spec.etcd.span(),
                "cluster.etcd",
                "at least one etcd endpoint is needed (three members are the usual cluster)",
            ));
        }
        let mut endpoints = Vec::with_capacity(list.len());
        for e in list {
            endpoints.push(endpoint(e.get_ref()).map_err(|m| {
                src.error(e.span(), "cluster.etcd", format!("{:?}: {m}", e.get_ref()))
            })?);
        }
        let prefix = match &spec.prefix {
            None => DEFAULT_PREFIX.to_string(),
            Some(p) => {
                let v = p.get_ref().trim_end_matches('/');
                if !v.starts_with('/') || v.is_empty() {
                    return Err(src.error(
                        p.span(),
                        "cluster.prefix",
                        format!(
                            "{:?} must start with \"/\" and name something (like \"/dnsshift\")",
                            p.get_ref()
                        ),
                    ));
                }
                v.to_string()
            }
        };
        let node = match &spec.node {
            Some(n) => {
                check_node(n.get_ref()).map_err(|m| src.error(n.span(), "cluster.node", m))?;
                n.get_ref().clone()
            }
            None => super::host_name()
                .filter(|h| check_node(h).is_ok())
                .ok_or_else(|| {
                    src.error(
                        spec.etcd.span(),
                        "cluster.node",
                        "the host name is not usable as a node id; set node = \"ns1\"",
                    )
                })?,
        };
        // Relative file names are taken from the config file's directory,
        // like the config's other paths.
        let base = src.path.parent().unwrap_or(std::path::Path::new(""));
        let file = |f: &str| base.join(f);
        let client_cert = match (&spec.cert_file, &spec.key_file) {
            (None, None) => None,
            (Some(c), Some(k)) => Some((file(c.get_ref()), file(k.get_ref()))),
            (Some(s), None) | (None, Some(s)) => {
                return Err(src.error(
                    s.span(),
                    "cluster.cert_file",
                    "cert_file and key_file go together",
                ));
            }
        };
        let user = match (&spec.user, &spec.password, &spec.password_file) {
            (None, None, None) => None,
            (Some(u), Some(p), None) => {
                Some((u.get_ref().clone(), Password::Inline(p.get_ref().clone())))
            }
            (Some(u), None, Some(f)) => {
                Some((u.get_ref().clone(), Password::File(file(f.get_ref()))))
            }
            (Some(u), None, None) => {
                return Err(src.error(
                    u.span(),
                    "cluster.user",
                    "a user needs password or password_file",
                ));
            }
            (_, Some(p), Some(_)) => {
                return Err(src.error(
                    p.span(),
                    "cluster.password",
                    "set password or password_file, not both",
                ));
            }
            (None, Some(s), None) | (None, None, Some(s)) => {
                return Err(src.error(s.span(), "cluster.user", "a password needs a user"));
            }
        };
        let request_timeout = match &spec.timeout {
            Some(t) => {
                let d = src.duration(t, "cluster.timeout")?;
                if d.is_zero() {
                    return Err(src.error(t.span(), "cluster.timeout", "must be above zero"));
                }
                d
            }
            None => DEFAULT_REQUEST_TIMEOUT,
        };
        let compact_revisions = match &spec.compact_revisions {
            None => Some(DEFAULT_COMPACT_REVISIONS),
            Some(c) if *c.get_ref() == DurationSpec::Text("off".into()) => None,
            Some(c) => {
                const OFF: &str = "or \"off\" when etcd compacts its revisions itself";
                let d = c.get_ref().to_duration().map_err(|m| {
                    src.error(c.span(), "cluster.compact_revisions", format!("{m}, {OFF}"))
                })?;
                if d < Duration::from_secs(1) {
                    return Err(src.error(
                        c.span(),
                        "cluster.compact_revisions",
                        format!("must be at least 1s, {OFF}"),
                    ));
                }
                Some(d)
            }
        };
        Ok(ClusterConfig {
            endpoints,
            prefix,
            node,
            ca_file: spec.ca_file.as_deref().map(file),
            client_cert,
            user,
            request_timeout,
            compact_revisions,
        })
    }

    /// Reads the named files and makes the client options.
    pub fn etcd_options(&self) -> Result<EtcdOptions, ClusterFileError> {
        let read = |key: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| ClusterFileError {
                key,
                path: path.display().to_string(),
                message: e.to_string(),
            })
        };
        let mut opts = EtcdOptions::new(self.endpoints.clone());
        opts.request_timeout = self.request_timeout;
        if let Some(ca) = &self.ca_file {
            opts.ca_pem = Some(read("ca_file", ca)?);
        }
        if let Some((cert, key)) = &self.client_cert {
            let mut pem = read("cert_file", cert)?;
            pem.push(b'\n');
            pem.extend(read("key_file", key)?);
            opts.identity_pem = Some(pem);
        }
        if let Some((user, password)) = &self.user {
            let password = match password {
                Password::Inline(p) => p.clone(),
                Password::File(f) => {
                    let bytes = read("password_file", f)?;
                    String::from_utf8_lossy(&bytes)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string()
                }
            };
            opts.credentials = Some(Credentials {
                user: user.clone(),
                password,
            });
        }
        Ok(opts)
    }
}

/// An etcd client URL: `http(s)://host:port`, nothing after the port.
fn endpoint(s: &str) -> Result<String, String> {
    const HINT: &str = "write an etcd client URL like \"https://10.0.0.1:2379\"";
    let url = reqwest::Url::parse(s.trim()).map_err(|_| HINT.to_string())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || url.port().is_none()
        || !matches!(url.path(), "" | "/")
        || url.query().is_some()
    {
        return Err(HINT.into());
    }
    Ok(s.trim().trim_end_matches('/').to_string())
}

/// Node ids become etcd key names and TXT strings: keep them plain.
fn check_node(n: &str) -> Result<(), String> {
    if n.is_empty()
        || n.len() > 63
        || !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "node id {n:?}: use 1 to 63 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        cluster: ClusterSpec,
    }

    fn parse(text: &str) -> Result<ClusterConfig, ConfigError> {
        let src = Source {
            path: "dnsshift.toml".into(),
            text: text.into(),
        };
        let f: File = src.parse()?;
        ClusterConfig::from_spec(&src, f.cluster)
    }

    #[test]
    fn a_full_table_parses() {
        let c = parse(
            "[cluster]\netcd = [\"https://127.0.0.1:2379/\", \"http://[::1]:2379\"]\nprefix = \"/shift/\"\nnode = \"ns1\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nuser = \"u\"\npassword_file = \"pw\"\ntimeout = \"500ms\"\n",
        )
        .unwrap();
        assert_eq!(c.endpoints, ["https://127.0.0.1:2379", "http://[::1]:2379"]);
        assert_eq!(c.prefix, "/shift");
        assert_eq!(c.node, "ns1");
        assert_eq!(c.request_timeout, Duration::from_millis(500));
        assert!(matches!(c.user, Some((_, Password::File(_)))));
        let d = parse("[cluster]\netcd = [\"http://127.0.0.1:2379\"]\n").unwrap();
        assert_eq!(d.prefix, "/dnsshift");
        assert!(!d.node.is_empty(), "defaults to the host name");
        assert_eq!(d.compact_revisions, Some(DEFAULT_COMPACT_REVISIONS));
        let off = parse("[cluster]\netcd = [\"http://e:1\"]\ncompact_revisions = \"off\"\n");
        assert_eq!(off.unwrap().compact_revisions, None);
        let every = parse("[cluster]\netcd = [\"http://e:1\"]\ncompact_revisions = 60\n");
        assert_eq!(
            every.unwrap().compact_revisions,
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn relative_files_are_taken_from_the_config_files_directory() {
        let src = Source {
            path: "/etc/dnsshift/dnsshift.toml".into(),
            text: "[cluster]\netcd = [\"https://127.0.0.1:2379\"]\nca_file = \"ca.pem\"\ncert_file = \"/abs/c.pem\"\nkey_file = \"k.pem\"\nuser = \"u\"\npassword_file = \"pw\"\n".into(),
        };
        let f: File = src.parse().unwrap();
        let c = ClusterConfig::from_spec(&src, f.cluster).unwrap();
        assert_eq!(c.ca_file, Some(PathBuf::from("/etc/dnsshift/ca.pem")));
        assert_eq!(
            c.client_cert,
            Some((
                PathBuf::from("/abs/c.pem"),
                PathBuf::from("/etc/dnsshift/k.pem")
            ))
        );
        assert!(
            matches!(&c.user, Some((_, Password::File(f))) if f == &PathBuf::from("/etc/dnsshift/pw"))
        );
    }

    #[test]
    fn errors_name_line_and_key() {
        let cases = [
            (
                "[cluster]\netcd = []",
                "dnsshift.toml:2: cluster.etcd: at least one",
            ),
            (
                "[cluster]\netcd = [\"127.0.0.1:2379\"]",
                "dnsshift.toml:2: cluster.etcd: \"127.0.0.1:2379\": write an etcd client URL",
            ),
            (
                "[cluster]\netcd = [\"http://e:1\"]\nprefix = \"dnsshift\"",
                "dnsshift.toml:3: cluster.prefix: \"dnsshift\" must start with \"/\"",
            ),
            (
                "[cluster]\netcd = [\"http://e:1\"]\nnode = \"ns/1\"",
                "dnsshift.toml:3: cluster.node: node id \"ns/1\"",
            ),
            (
                "[cluster]\netcd = [\"http://e:1\"]\n\ncert_file = \"c\"",
                "dnsshift.toml:4: cluster.cert_file: cert_file and key_file go together",
            ),
            (
                "[cluster]\netcd = [\"http://e:1\"]\nuser = \"u\"",
                "dnsshift.toml:3: cluster.user: a user needs password",
            ),
            (
                "[cluster]\netcd = [\"http://e:1\"]\nuser = \"u\"\npassword = \"p\"\npassword_file = \"f\"",
                "dnsshift.toml:4: cluster.password: set password or password_file, not both",
            ),
            (
                "[cluster]\netcd = [\"http://e:1\"]\ntimeout = \"soon\"",
                "dnsshift.toml:3: cluster.timeout: invalid duration",
            ),
            (
                "[cluster]\netcd = [\"http://e:1\"]\ncompact_revisions = \"500ms\"",
                "dnsshift.toml:3: cluster.compact_revisions: must be at least 1s, or \"off\"",
            ),
            (
                "[cluster]\netcd = [\"http://e:1\"]\ncompact_revisions = \"never\"",
                "dnsshift.toml:3: cluster.compact_revisions: invalid duration",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).err().unwrap().to_string();
            assert!(e.starts_with(want), "got {e}\nwant {want}");
        }
    }
}
