#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The shipped example serves, and the harness works end to end.
mod common;

use common::*;
use hickory_proto::rr::RecordType;

#[test]
fn shipped_example_zone_serves_weighted_answers() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/zones/shift.example.com.toml"
    ))
    .unwrap();
    let server = Setup::new(&[("shift.example.com.toml", &example)], "").start();
    let m = server.query("www.shift.example.com.", RecordType::A);
    assert!(m.metadata.authoritative);
    let got = answers(&m);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|a| a.starts_with("192.0.2.1")), "{got:?}");
}
