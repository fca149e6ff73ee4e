//! The status page's settings (`ui`, `ui_hosts`): whether `/ui` is served,
//! with or without its actions, and which `Host` names it answers to.

/// What `/ui` on the control listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UiMode {
    /// No status page: `/ui` is not found.
    Off,
    /// The page without action controls; every action POST is refused (403).
    ReadOnly,
    /// The page with its actions (the default).
    #[default]
    On,
}

impl UiMode {
    /// Parses the `ui` key's value.
    pub fn parse(text: &str) -> Result<UiMode, String> {
        match text {
            "off" => Ok(UiMode::Off),
            "read-only" => Ok(UiMode::ReadOnly),
            "on" => Ok(UiMode::On),
            other => Err(format!(
                "unknown ui mode {other:?} (expected \"off\", \"read-only\" or \"on\")"
            )),
        }
    }
}

/// Longest name in `ui_hosts` (a DNS name with a port).
const MAX_HOST: usize = 260;

/// Checks one `ui_hosts` entry: a host name or address, optionally with a
/// port, as a browser sends it in `Host` (lowercased here).
pub fn host(text: &str) -> Result<String, String> {
    let t = text.trim().to_ascii_lowercase();
    let ok = !t.is_empty()
        && t.len() <= MAX_HOST
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if ok {
        Ok(t)
    } else {
        Err(format!(
            "{text:?} is not a host name as a browser sends it (write \"dnsshift.example.com\" or \"dnsshift.example.com:5380\")"
        ))
    }
}
