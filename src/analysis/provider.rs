//! Metrics providers: one instant query, one number, or why there is none.
//!
//! Three outcomes, kept apart because automation treats them differently:
//! a [`Reading::Value`] is judged by a check's rule; a
//! [`Reading::Inconclusive`] (no data) holds the phase; a [`ProviderError`]
//! says nothing about the application and only ever pauses.
//!
//! The asking ([`Provider::query`]) is thin; what an answer means is decided
//! by the pure [`parse_prometheus`] and [`parse_web`], which take any bytes
//! and never panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Most bytes of an answer read: a provider that sends more (a runaway
/// query, a wrong URL serving a file) is an error, not a memory hog.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Most characters of a body quoted in an error (an HTML error page, a
/// body that is not JSON).
const EXCERPT_CHARS: usize = 160;

/// Most series named when a query returns several.
const SERIES_NAMED: usize = 3;

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

impl ProviderError {
    fn new(message: impl Into<String>) -> ProviderError {
        ProviderError {
            message: message.into(),
        }
    }
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
        match tokio::time::timeout(timeout, self.ask(http, query, at)).await {
            Ok(answer) => answer,
            Err(_) => Err(timed_out(timeout)),
        }
    }

    async fn ask(
        &self,
        http: &reqwest::Client,
        query: &str,
        at: SystemTime,
    ) -> Result<Reading, ProviderError> {
        match self {
            Provider::Prometheus { url } => {
                let endpoint = format!("{}/api/v1/query", url.trim_end_matches('/'));
                let time = prometheus_time(at)?;
                let request = http
                    .get(&endpoint)
                    .query(&[("query", query), ("time", time.as_str())]);
                let (status, content_type, body) = fetch(request, &endpoint).await?;
                parse_prometheus(status, content_type.as_deref(), &body)
            }
            Provider::Web { url, path } => {
                let target = format!("{url}{query}");
                let (status, _, body) = fetch(http.get(&target), &target).await?;
                parse_web(status, &body, path)
            }
        }
    }
}

/// `at` as Prometheus' `time` parameter: unix seconds with milliseconds.
fn prometheus_time(at: SystemTime) -> Result<String, ProviderError> {
    let since = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| ProviderError::new("evaluation time is before 1970"))?;
    Ok(format!("{}.{:03}", since.as_secs(), since.subsec_millis()))
}

fn timed_out(timeout: Duration) -> ProviderError {
    ProviderError::new(format!(
        "timeout after {}",
        humantime::format_duration(timeout)
    ))
}

/// Sends `request` and reads its status, content type and body (at most
/// [`BODY_LIMIT`] bytes).
async fn fetch(
    request: reqwest::RequestBuilder,
    target: &str,
) -> Result<(u16, Option<String>, Vec<u8>), ProviderError> {
    let unreachable = |e: reqwest::Error| {
        ProviderError::new(format!(
            "cannot ask {target}: {}",
            crate::health::describe_reqwest(&e)
        ))
    };
    let mut resp = request.send().await.map_err(unreachable)?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let too_big = || {
        ProviderError::new(format!(
            "answer from {target} is larger than {} KiB (HTTP {status})",
            BODY_LIMIT / 1024
        ))
    };
    if resp.content_length().is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > BODY_LIMIT {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, content_type, body))
}

/// What Prometheus' `/api/v1/query` answered, as far as a reading needs.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromAnswer {
    status: String,
    #[serde(default)]
    data: Option<PromData>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromData {
    result_type: String,
    result: Value,
}

/// Reads Prometheus' answer to an instant query: HTTP `status`, its
/// `content_type` (for the message when the body is not JSON) and `body`.
///
/// One sample (or a scalar) gives its value; no series, NaN or an
/// infinity is inconclusive; an error body, a non-2xx answer, a body that
/// is not JSON, several series or a range vector are errors.
pub fn parse_prometheus(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Reading, ProviderError> {
    let answer: PromAnswer = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(e) if (200..300).contains(&status) => {
            return Err(ProviderError::new(format!(
                "prometheus answered HTTP {status} with a body that is not its JSON ({}: {e}): {}",
                content_type.unwrap_or("no content-type"),
                excerpt(body)
            )));
        }
        Err(_) => return Err(http_error(status, body)),
    };
    if answer.status != "success" || !(200..300).contains(&status) {
        return Err(match (answer.error_type, answer.error) {
            (Some(kind), Some(error)) => ProviderError::new(format!(
                "prometheus refused the query (HTTP {status}, {kind}): {}",
                printable(&error, EXCERPT_CHARS * 4)
            )),
            _ if (200..300).contains(&status) => ProviderError::new(format!(
                "prometheus answered status {:?} without an error type and message: {}",
                printable(&answer.status, EXCERPT_CHARS),
                excerpt(body)
            )),
            _ => http_error(status, body),
        });
    }
    let Some(data) = answer.data else {
        return Err(ProviderError::new(
            "prometheus answered success without data",
        ));
    };
    match data.result_type.as_str() {
        "vector" => {
            let Value::Array(series) = data.result else {
                return Err(ProviderError::new(
                    "prometheus answered a vector whose result is not a list",
                ));
            };
            match series.as_slice() {
                [] => Ok(Reading::Inconclusive(
                    "no data: the query returned no series".into(),
                )),
                [one] => sample_value(one.get("value")),
                many => Err(ProviderError::new(format!(
                    "the query returned {} series, expected one (aggregate it, e.g. with sum): {}",
                    many.len(),
                    series_labels(many)
                ))),
            }
        }
        "scalar" => sample_value(Some(&data.result)),
        "matrix" => Err(ProviderError::new(
            "the query returned a range vector (matrix); an instant vector or scalar is needed",
        )),
        other => Err(ProviderError::new(format!(
            "the query returned a {}, not a number",
            printable(other, EXCERPT_CHARS)
        ))),
    }
}

/// `[<time>, "<value>"]` as a reading.
fn sample_value(pair: Option<&Value>) -> Result<Reading, ProviderError> {
    match pair.and_then(Value::as_array).map(Vec::as_slice) {
        Some([_, Value::String(v)]) => number_text(v)
            .ok_or_else(|| {
                ProviderError::new(format!(
                    "prometheus sent a sample value that is not a number: {}",
                    printable(v, EXCERPT_CHARS)
                ))
            })
            .map(finite),
        _ => Err(ProviderError::new(
            "prometheus sent a sample without a [time, \"value\"] pair",
        )),
    }
}

/// A number written as text: Prometheus' "0.5", "NaN", "+Inf", "-Inf", or
/// a numeric string in a web provider's JSON.
fn number_text(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok()
}

/// A finite number is a value; NaN and the infinities are no data.
fn finite(v: f64) -> Reading {
    if v.is_nan() {
        Reading::Inconclusive("NaN: no usable number (e.g. 0/0 without traffic)".into())
    } else if v.is_infinite() {
        let sign = if v > 0.0 { "+" } else { "-" };
        Reading::Inconclusive(format!("{sign}Inf: not a finite number"))
    } else {
        Reading::Value(v)
    }
}

/// The label sets of the first few series: `{pool="new"}, {pool="old"}`.
fn series_labels(series: &[Value]) -> String {
    let mut named: Vec<String> = series
        .iter()
        .take(SERIES_NAMED)
        .map(|s| {
            let labels: Vec<String> = s
                .get("metric")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), quote)))
                        .collect()
                })
                .unwrap_or_default();
            printable(&format!("{{{}}}", labels.join(", ")), EXCERPT_CHARS)
        })
        .collect();
    if series.len() > SERIES_NAMED {
        named.push(format!("and {} more", series.len() - SERIES_NAMED));
    }
    named.join(", ")
}

fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// A non-2xx answer without a provider error body: its status and the
/// start of the body.
fn http_error(status: u16, body: &[u8]) -> ProviderError {
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| format!(" {r}"))
        .unwrap_or_default();
    ProviderError::new(format!("HTTP {status}{reason}: {}", excerpt(body)))
}

/// The start of a body, printable and bounded; says when it is empty.
fn excerpt(body: &[u8]) -> String {
    if body.iter().all(u8::is_ascii_whitespace) {
        return "(empty body)".into();
    }
    printable(&String::from_utf8_lossy(body), EXCERPT_CHARS)
}

/// `text` on one line: runs of whitespace and control characters become
/// one space; cut to `max` characters with "...".
fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut space = false;
    for c in text.trim().chars() {
        if c.is_whitespace() || c.is_control() {
            space = true;
            continue;
        }
        if count >= max {
            out.push_str("...");
            return out;
        }
        if space {
            out.push(' ');
            count += 1;
            space = false;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// Reads a web provider's answer: HTTP `status` and a JSON `body` with
/// the number at the dotted `path` (`data.ratio`, `items.0.value`; empty
/// for the whole body).
///
/// A JSON number or a numeric string is a value; null or nothing at the
/// path, NaN and the infinities are inconclusive; a non-2xx status, a body
/// that is not JSON, or anything else at the path is an error.
pub fn parse_web(status: u16, body: &[u8], path: &str) -> Result<Reading, ProviderError> {
    if !(200..300).contains(&status) {
        return Err(http_error(status, body));
    }
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| ProviderError::new(format!("answer is not JSON ({e}): {}", excerpt(body))))?;
    let mut here = &json;
    let mut walked = String::new();
    for key in path.split('.').filter(|k| !k.is_empty()) {
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(key);
        let next = match here {
            Value::Object(map) => map.get(key),
            Value::Array(items) => match key.parse::<usize>() {
                Ok(i) => items.get(i),
                Err(_) => {
                    return Err(ProviderError::new(format!(
                        "at {walked}: {key:?} is not an index, and the value there is a list"
                    )));
                }
            },
            Value::Null => None,
            other => {
                return Err(ProviderError::new(format!(
                    "at {walked}: cannot look into {}",
                    kind(other)
                )));
            }
        };
        match next {
            Some(v) => here = v,
            None => return Ok(Reading::Inconclusive(format!("no value at {path}"))),
        }
    }
    let at = if path.is_empty() { "the top" } else { path };
    match here {
        Value::Null => Ok(Reading::Inconclusive(format!("null at {at}"))),
        Value::Number(n) => n
            .as_f64()
            .map(finite)
            .ok_or_else(|| ProviderError::new(format!("the number at {at} does not fit a float"))),
        Value::String(s) => number_text(s).map(finite).ok_or_else(|| {
            ProviderError::new(format!(
                "the string at {at} is not a number: {:?}",
                printable(s, EXCERPT_CHARS)
            ))
        }),
        other => Err(ProviderError::new(format!(
            "{} at {at}, not a number",
            kind(other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json");

    fn prom(status: u16, body: &str) -> Result<Reading, ProviderError> {
        parse_prometheus(status, JSON, body.as_bytes())
    }

    fn vector(samples: &[(&str, &str)]) -> String {
        let items: Vec<String> = samples
            .iter()
            .map(|(labels, v)| {
                format!(r#"{{"metric":{{{labels}}},"value":[1764712345.678,"{v}"]}}"#)
            })
            .collect();
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            items.join(",")
        )
    }

    fn error_message(r: Result<Reading, ProviderError>) -> String {
        match r {
            Err(e) => e.message,
            Ok(reading) => panic!("expected an error, got {reading:?}"),
        }
    }

    fn inconclusive(r: Result<Reading, ProviderError>) -> String {
        match r {
            Ok(Reading::Inconclusive(why)) => why,
            other => panic!("expected inconclusive, got {other:?}"),
        }
    }

    #[test]
    fn one_sample_gives_its_value() {
        let body = vector(&[(r#""pool":"new""#, "0.0123")]);
        assert_eq!(prom(200, &body), Ok(Reading::Value(0.0123)));
        assert_eq!(
            prom(200, &vector(&[("", "-3e2")])),
            Ok(Reading::Value(-300.0))
        );
    }

    #[test]
    fn a_scalar_gives_its_value() {
        let body =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1764712345.6,"2"]}}"#;
        assert_eq!(prom(200, body), Ok(Reading::Value(2.0)));
    }

    #[test]
    fn warnings_do_not_change_the_value() {
        let body = r#"{"status":"success","warnings":["PromQL info: metric might not be a counter"],"data":{"resultType":"vector","result":[{"metric":{},"value":[1.0,"7"]}]}}"#;
        assert_eq!(prom(200, body), Ok(Reading::Value(7.0)));
    }

    #[test]
    fn no_series_is_no_data() {
        let why = inconclusive(prom(200, &vector(&[])));
        assert!(why.contains("no data"), "{why}");
    }

    #[test]
    fn nan_and_infinities_are_inconclusive() {
        assert!(inconclusive(prom(200, &vector(&[("", "NaN")]))).starts_with("NaN"));
        let why = inconclusive(prom(200, &vector(&[("", "+Inf")])));
        assert_eq!(why, "+Inf: not a finite number");
        let why = inconclusive(prom(200, &vector(&[("", "-Inf")])));
        assert_eq!(why, "-Inf: not a finite number");
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#;
        assert_eq!(inconclusive(prom(200, scalar)), "+Inf: not a finite number");
    }

    #[test]
    fn two_series_are_an_error_naming_them() {
        let body = vector(&[(r#""pool":"new""#, "1"), (r#""pool":"old""#, "2")]);
        let msg = error_message(prom(200, &body));
        assert!(msg.contains("returned 2 series"), "{msg}");
        assert!(msg.contains(r#"{pool="new"}, {pool="old"}"#), "{msg}");
    }

    #[test]
    fn many_series_name_the_first_few_and_count_the_rest() {
        let labels: Vec<String> = (0..7).map(|i| format!(r#""i":"{i}""#)).collect();
        let samples: Vec<(&str, &str)> = labels.iter().map(|l| (l.as_str(), "1")).collect();
        let msg = error_message(prom(200, &vector(&samples)));
        assert!(msg.contains("returned 7 series"), "{msg}");
        assert!(msg.contains(r#"{i="2"}, and 4 more"#), "{msg}");
        assert!(!msg.contains(r#"{i="3"}"#), "{msg}");
    }

    #[test]
    fn error_bodies_carry_type_and_message() {
        for (status, kind, error) in [
            (
                400,
                "bad_data",
                r#"invalid parameter \"query\": 1:14: parse error: unclosed left parenthesis"#,
            ),
            (
                422,
                "execution",
                "query processing would load too many samples into memory in query execution",
            ),
            (503, "timeout", "query timed out in expression evaluation"),
        ] {
            let body = format!(r#"{{"status":"error","errorType":"{kind}","error":"{error}"}}"#);
            let msg = error_message(prom(status, &body));
            assert!(msg.contains(&format!("HTTP {status}")), "{msg}");
            assert!(msg.contains(kind), "{msg}");
            assert!(msg.contains(&error.replace(r#"\""#, "\"")), "{msg}");
        }
    }

    #[test]
    fn an_html_502_says_so_with_the_start_of_the_body() {
        let page = format!(
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n{}</body></html>",
            "<!-- padding -->\n".repeat(200)
        );
        let msg = error_message(parse_prometheus(502, Some("text/html"), page.as_bytes()));
        assert!(
            msg.starts_with("HTTP 502 Bad Gateway: <html> <head><title>502"),
            "{msg}"
        );
        assert!(msg.ends_with("..."), "{msg}");
        assert!(msg.len() < 250, "bounded: {} bytes", msg.len());
        assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg}");
    }

    #[test]
    fn a_non_json_success_is_an_error() {
        let msg = error_message(parse_prometheus(200, Some("text/plain"), b"hello"));
        assert!(msg.contains("not its JSON"), "{msg}");
        assert!(msg.contains("text/plain"), "{msg}");
        assert!(msg.ends_with(": hello"), "{msg}");
        let msg = error_message(parse_prometheus(200, None, b""));
        assert!(msg.contains("(empty body)"), "{msg}");
    }

    #[test]
    fn odd_shapes_are_errors_not_panics() {
        let cases = [
            r#"{"status":"success"}"#,
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            r#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":{}}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{}}]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1, 0.5]}]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"zero"]}]}}"#,
            r#"{"status":"success","data":{"resultType":"scalar","result":null}}"#,
            r#"{"status":"error"}"#,
            r#"{"status":7}"#,
            "[]",
            "null",
            "\u{0}\u{1}\u{ff}",
        ];
        for body in cases {
            let r = prom(200, body);
            assert!(r.is_err(), "{body}: {r:?}");
        }
        // Bytes that are not UTF-8 at all.
        let r = parse_prometheus(200, None, &[0xff, 0xfe, 0x00, 0x80]);
        assert!(r.is_err(), "{r:?}");
        // A 200 with an error body is still an error.
        let msg = error_message(prom(
            200,
            r#"{"status":"error","errorType":"internal","error":"boom"}"#,
        ));
        assert!(msg.contains("internal") && msg.contains("boom"), "{msg}");
        // A non-2xx with a success body is an error too.
        let msg = error_message(prom(500, &vector(&[("", "1")])));
        assert!(msg.starts_with("HTTP 500 Internal Server Error"), "{msg}");
    }

    #[test]
    fn control_characters_never_reach_a_message() {
        let body = "{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":\"line\\nbreak\\u001b[31m\"}";
        let msg = error_message(prom(400, body));
        assert!(msg.chars().all(|c| !c.is_control()), "{msg:?}");
        assert!(msg.ends_with("line break [31m"), "{msg:?}");
    }

    #[test]
    fn the_time_parameter_is_unix_seconds_with_millis() {
        let at = UNIX_EPOCH + Duration::from_millis(1_764_712_345_678);
        assert_eq!(prometheus_time(at).unwrap(), "1764712345.678");
        let at = UNIX_EPOCH + Duration::from_secs(5);
        assert_eq!(prometheus_time(at).unwrap(), "5.000");
    }

    #[test]
    fn web_reads_the_number_at_the_path() {
        let body = br#"{"data":{"ratio":0.25},"items":[{"value":"12.5"},{"value":3}]}"#;
        assert_eq!(parse_web(200, body, "data.ratio"), Ok(Reading::Value(0.25)));
        assert_eq!(
            parse_web(200, body, "items.0.value"),
            Ok(Reading::Value(12.5))
        );
        assert_eq!(
            parse_web(200, body, "items.1.value"),
            Ok(Reading::Value(3.0))
        );
        assert_eq!(parse_web(204, b"42", ""), Ok(Reading::Value(42.0)));
    }

    #[test]
    fn web_null_or_missing_is_inconclusive() {
        let body = br#"{"data":{"ratio":null,"list":[]}}"#;
        assert_eq!(
            inconclusive(parse_web(200, body, "data.ratio")),
            "null at data.ratio"
        );
        assert_eq!(
            inconclusive(parse_web(200, body, "data.missing")),
            "no value at data.missing"
        );
        assert_eq!(
            inconclusive(parse_web(200, body, "data.list.0")),
            "no value at data.list.0"
        );
        assert_eq!(
            inconclusive(parse_web(200, body, "data.ratio.deeper")),
            "no value at data.ratio.deeper"
        );
        assert!(inconclusive(parse_web(200, br#"{"v":"NaN"}"#, "v")).starts_with("NaN"));
        assert!(inconclusive(parse_web(200, br#"{"v":"-Inf"}"#, "v")).starts_with("-Inf"));
    }

    #[test]
    fn web_errors() {
        let msg = error_message(parse_web(503, b"down for maintenance", "v"));
        assert_eq!(msg, "HTTP 503 Service Unavailable: down for maintenance");
        let msg = error_message(parse_web(200, b"<html>hi</html>", "v"));
        assert!(msg.starts_with("answer is not JSON"), "{msg}");
        assert!(msg.ends_with(": <html>hi</html>"), "{msg}");
        let body = br#"{"v":"high","b":true,"o":{},"l":[1],"n":1}"#;
        for (path, want) in [
            ("v", "the string at v is not a number: \"high\""),
            ("b", "a boolean at b, not a number"),
            ("o", "an object at o, not a number"),
            ("l", "a list at l, not a number"),
            (
                "l.x",
                "at l.x: \"x\" is not an index, and the value there is a list",
            ),
            ("n.x", "at n.x: cannot look into a number"),
        ] {
            assert_eq!(error_message(parse_web(200, body, path)), want);
        }
    }

    /// A local listener that accepts and never answers.
    async fn silent_listener() -> (tokio::net::TcpListener, String) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        (l, url)
    }

    #[tokio::test]
    async fn a_provider_that_does_not_answer_times_out() {
        let (_listener, url) = silent_listener().await;
        let http = reqwest::Client::new();
        for p in [
            Provider::Prometheus { url: url.clone() },
            Provider::Web {
                url,
                path: "v".into(),
            },
        ] {
            let start = std::time::Instant::now();
            let r = p
                .query(&http, "/x", SystemTime::now(), Duration::from_millis(300))
                .await;
            assert_eq!(error_message(r), "timeout after 300ms");
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "{:?}",
                start.elapsed()
            );
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_connection_refused() {
        let (listener, url) = silent_listener().await;
        drop(listener);
        let http = reqwest::Client::new();
        let r = Provider::Prometheus { url: url.clone() }
            .query(&http, "up", SystemTime::now(), Duration::from_secs(5))
            .await;
        let msg = error_message(r);
        assert_eq!(
            msg,
            format!("cannot ask {url}/api/v1/query: connection refused")
        );
    }

    #[tokio::test]
    async fn a_huge_answer_is_cut_off() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (listener, url) = silent_listener().await;
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            // Chunked, so no content-length tells in advance.
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "7".repeat(64 * 1024));
            for _ in 0..(2 * BODY_LIMIT / (64 * 1024)) {
                if s.write_all(chunk.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        let http = reqwest::Client::new();
        let r = Provider::Web {
            url,
            path: String::new(),
        }
        .query(&http, "/big", SystemTime::now(), Duration::from_secs(10))
        .await;
        let msg = error_message(r);
        assert!(msg.contains("larger than 1024 KiB"), "{msg}");
        server.abort();
    }
}
