//! Metrics providers: one instant query, one number, or why there is none.
//!
//! Three outcomes, kept apart because automation treats them differently:
//! a [`Reading::Value`] is judged by a check's rule; a
//! [`Reading::Inconclusive`] (no data) holds the phase; a [`ProviderError`]
//! says nothing about the application and only ever pauses.

use std::time::{Duration, SystemTime};

/// Where the numbers come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// Prometheus' HTTP API: `GET {url}/api/v1/query?query=..&time=..`.
    Prometheus { url: String },
    /// Any URL answering JSON: `GET {url}{query}`, the number at the
    /// dotted `path` (`data.ratio`, `items.0.value`).
    Web { url: String, path: String },
}

/// What one query gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// One finite number.
    Value(f64),
    /// No usable number: an empty result, NaN or an infinity; says which.
    Inconclusive(String),
}

/// The provider could not be asked, or answered something that is not a
/// result: unreachable, timeout, non-2xx, not JSON, more than one series.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub message: String,
}

impl Provider {
    /// Asks `query` (already templated) as of `at`, waiting at most
    /// `timeout`.
    pub async fn query(
        &self,
        http: &reqwest::Client,
        query: &str,
        at: SystemTime,
        timeout: Duration,
    ) -> Result<Reading, ProviderError> {
        let _ = (http, query, at, timeout);
        Err(ProviderError {
            message: "provider not built yet (issue 17, branch i17x)".into(),
        })
    }
}
