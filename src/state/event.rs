//! History events: one typed [`Change`] per operator command, with what
//! every event has (when, which service, why, forced) around it.
//!
//! The JSON is the state file's and `history --json`'s, and stays what
//! format 1 wrote: `{"at", "service", "action", "from", "to", "reason",
//! "forced"}`, where `action` names the change and `to` holds the object
//! acted on ("pool/endpoint" or the pool) for the commands that are not
//! transitions. Format-1 files, with their `"from": null`, load unchanged.
//! Two fields came later and are absent from older entries: `node`, the
//! host that executed the command, and `actor`, the login name the CLI sent
//! (informational: nothing authenticates it).

use serde::{Deserialize, Serialize};

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix seconds.
    pub at: u64,
    /// Service key.
    pub service: String,
    /// What changed.
    #[serde(flatten)]
    pub change: Change,
    /// Operator's reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// Whether `--force` was used.
    #[serde(default)]
    pub forced: bool,
    /// The host (node id) that executed the command; `None` in entries
    /// recorded before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Who ran it: the login name the CLI sent, or `--actor`. Informational,
    /// not authenticated: anyone holding the control token can claim any name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// What an operator command changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Change {
    /// The service moved to a later phase.
    Advance {
        /// Phase before.
        from: String,
        /// Phase after.
        to: String,
    },
    /// The service moved back to an earlier phase.
    Rollback {
        /// Phase before.
        from: String,
        /// Phase after.
        to: String,
    },
    /// An endpoint was taken out of the answers.
    Disable {
        /// "pool/endpoint" ([`crate::pool::EndpointKey::in_service`]).
        #[serde(rename = "to")]
        endpoint: String,
    },
    /// A disabled endpoint was put back.
    Enable {
        /// "pool/endpoint".
        #[serde(rename = "to")]
        endpoint: String,
    },
    /// A pool is never to be answered again.
    Decommission {
        /// Pool name.
        #[serde(rename = "to")]
        pool: String,
    },
    /// A decommissioned pool is answered again.
    Recommission {
        /// Pool name.
        #[serde(rename = "to")]
        pool: String,
    },
    /// Automatic progression changed mode (issue 17): "running", "paused",
    /// "failed" or "done".
    Auto {
        /// The mode entered.
        #[serde(rename = "to")]
        mode: String,
    },
}

impl Change {
    /// The command's name, as `history` shows it.
    pub fn action(&self) -> &'static str {
        match self {
            Change::Advance { .. } => "advance",
            Change::Rollback { .. } => "rollback",
            Change::Disable { .. } => "disable",
            Change::Enable { .. } => "enable",
            Change::Decommission { .. } => "decommission",
            Change::Recommission { .. } => "recommission",
            Change::Auto { .. } => "auto",
        }
    }

    /// The phase left, for a transition.
    pub fn from(&self) -> Option<&str> {
        match self {
            Change::Advance { from, .. } | Change::Rollback { from, .. } => Some(from),
            _ => None,
        }
    }

    /// The phase entered, or the endpoint or pool acted on.
    pub fn to(&self) -> &str {
        match self {
            Change::Advance { to, .. } | Change::Rollback { to, .. } => to,
            Change::Disable { endpoint } | Change::Enable { endpoint } => endpoint,
            Change::Decommission { pool } | Change::Recommission { pool } => pool,
            Change::Auto { mode } => mode,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_and_write_the_format_1_json() {
        let v1 = r#"[
          {"at": 5, "service": "s.", "action": "advance", "from": "a", "to": "b", "reason": null, "forced": true},
          {"at": 6, "service": "s.", "action": "disable", "from": null, "to": "old/192.0.2.1", "reason": "r", "forced": false},
          {"at": 7, "service": "s.", "action": "decommission", "to": "old"}
        ]"#;
        let events: Vec<Event> = serde_json::from_str(v1).unwrap();
        assert_eq!(
            events[0].change,
            Change::Advance {
                from: "a".into(),
                to: "b".into()
            }
        );
        assert!(events[0].forced);
        assert_eq!(
            events[1].change,
            Change::Disable {
                endpoint: "old/192.0.2.1".into()
            }
        );
        assert_eq!(events[1].reason.as_deref(), Some("r"));
        assert_eq!(events[2].change.to(), "old");
        let json = serde_json::to_value(&events[1]).unwrap();
        assert_eq!(json["action"], "disable");
        assert_eq!(json["to"], "old/192.0.2.1");
        assert!(json.get("from").is_none());
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, events[1]);
        // Older entries have no node or actor; newer ones keep both.
        assert!(events.iter().all(|e| e.node.is_none() && e.actor.is_none()));
        let mut who = events[0].clone();
        who.node = Some("ns1".into());
        who.actor = Some("alice".into());
        let json = serde_json::to_value(&who).unwrap();
        assert_eq!(
            (&json["node"], &json["actor"]),
            (&"ns1".into(), &"alice".into())
        );
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), who);
    }
}
