//! Seeded mutation fuzzing of the UDP request path on the stable toolchain.
//! A corpus of real queries (plain, EDNS with options, odd classes and
//! types) is mutated (bit flips, byte overwrites, truncation, insertion,
//! header count and flag changes, splices) and fed to the fast path and to
//! the hickory fallback. Properties: nothing panics; a response is either
//! absent or a well-formed DNS message with QR set, the query's ID, within
//! the UDP size; a query with QR set is never answered; and whatever the
//! fast path answers equals what the hickory handler answers.
//!
//! CI runs a bounded number of cases. For an hour on one core:
//!
//!     DNSSHIFT_FUZZ_SECONDS=3600 cargo test --release --test fuzz -- --nocapture
//!
//! `DNSSHIFT_FUZZ_SEED` picks the seed (default: fixed, so CI is
//! repeatable); a failure prints the seed and the case to replay it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dnsshift::answer::{ConfigOnly, Plan};
use dnsshift::dns::fallback::handle;
use dnsshift::dns::fast::{Action, respond};
use dnsshift::dns::{Handler, MAX_UDP_PAYLOAD};
use dnsshift::stats::Stats;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_server::net::xfer::Protocol;

/// Cases per CI run.
const CI_CASES: u64 = 20_000;

fn plan() -> Plan {
    let zone = dnsshift::zone::load_file(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/zones/shift.example.com.toml"
    )))
    .unwrap();
    Plan::build(&[zone], &ConfigOnly, &Stats::default(), 1)
}

fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let names = [
        "www.shift.example.com.",
        "WWW.Shift.Example.COM.",
        "www-next.shift.example.com.",
        "api.shift.example.com.",
        "shift.example.com.",
        "docs.shift.example.com.",
        "nope.shift.example.com.",
        "example.org.",
        ".",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::NS,
        RecordType::SOA,
        RecordType::TXT,
        RecordType::ANY,
        RecordType::AXFR,
    ];
    for (i, n) in names.iter().enumerate() {
        for (j, t) in types.iter().enumerate() {
            let mut m = Message::new((i * 31 + j) as u16, MessageType::Query, OpCode::Query);
            m.metadata.recursion_desired = true;
            let mut q = Query::query(Name::from_ascii(n).unwrap(), *t);
            if j == 3 {
                q.set_query_class(DNSClass::CH);
            }
            m.add_query(q);
            if (i + j) % 2 == 0 {
                let mut e = Edns::new();
                e.set_max_payload(if j % 3 == 0 { 4096 } else { 1232 });
                if j % 4 == 1 {
                    e.options_mut()
                        .insert(EdnsOption::Unknown(10, vec![1, 2, 3, 4, 5, 6, 7, 8]));
                }
                m.set_edns(e);
            }
            out.push(m.to_vec().unwrap());
        }
    }
    out
}

/// One mutation of `p` (a copy of a corpus entry), drawn from `rng`.
fn mutate(rng: &mut fastrand::Rng, p: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..rng.usize(1..4) {
        if p.is_empty() {
            p.push(rng.u8(..));
        }
        let at = rng.usize(..p.len());
        match rng.u8(0..9) {
            0 => p[at] ^= 1 << rng.u8(0..8),
            1 => p[at] = rng.u8(..),
            2 => p.truncate(at),
            3 => p.insert(at, rng.u8(..)),
            // Header counts: QD, AN, NS, AR.
            4 if p.len() >= 12 => {
                let c = 4 + 2 * rng.usize(0..4);
                p[c] = 0;
                p[c + 1] = rng.u8(0..4);
            }
            // Flags and opcode.
            5 if p.len() >= 4 => p[2 + rng.usize(0..2)] = rng.u8(..),
            // A compression pointer somewhere.
            6 => {
                p.insert(at, rng.u8(..));
                p.insert(at, 0xC0 | rng.u8(0..4));
            }
            // Splice the tail of another query.
            7 => {
                let other = &corpus[rng.usize(..corpus.len())];
                let from = rng.usize(..other.len());
                p.truncate(at);
                p.extend_from_slice(&other[from..]);
            }
            _ => p.extend((0..rng.usize(1..8)).map(|_| rng.u8(..))),
        }
    }
}

/// The properties of one case.
fn check(
    case: &[u8],
    plan: &ArcSwap<Plan>,
    handler: &Handler,
    rt: &tokio::runtime::Runtime,
) -> Result<(), String> {
    let src: SocketAddr = "192.0.2.1:5353".parse().unwrap();
    let mut out = [0u8; MAX_UDP_PAYLOAD as usize];
    // The same random draws for both paths: the same weighted choice.
    fastrand::seed(case.len() as u64);
    let fast = match respond(&plan.load(), case, &mut out) {
        Action::Send(n) => Some(out[..n].to_vec()),
        Action::Drop => None,
        Action::Fallback => {
            return well_formed(
                case,
                rt.block_on(handle(handler, case.to_vec(), src, Protocol::Udp)),
            );
        }
    };
    well_formed(case, fast.clone())?;
    let Some(fast) = fast else {
        return Ok(());
    };
    // What the fast path answered, the hickory path answers the same way.
    fastrand::seed(case.len() as u64);
    let slow = rt
        .block_on(handle(handler, case.to_vec(), src, Protocol::Udp))
        .ok_or("hickory did not answer what the fast path answered")?;
    let (f, s) = (Message::from_vec(&fast).unwrap(), Message::from_vec(&slow));
    // The one intended difference: a question name with a compression
    // pointer is FORMERR without the question on the fast path, where
    // hickory would echo the raw bytes.
    let pointer_formerr = f.metadata.response_code == hickory_proto::op::ResponseCode::FormErr
        && f.queries.is_empty();
    if pointer_formerr || s.as_ref().is_ok_and(|s| *s == f) {
        return Ok(());
    }
    Err(format!("fast path and hickory differ: fast {f:?}"))
}

fn well_formed(case: &[u8], response: Option<Vec<u8>>) -> Result<(), String> {
    let Some(r) = response else {
        return Ok(());
    };
    if case.len() >= 3 && case[2] & 0x80 != 0 {
        return Err("answered a message with QR set".into());
    }
    if r.len() > usize::from(MAX_UDP_PAYLOAD) {
        return Err(format!("{} bytes over UDP", r.len()));
    }
    let m = Message::from_vec(&r).map_err(|e| format!("response does not decode: {e}"))?;
    if m.metadata.message_type != MessageType::Response {
        return Err("response without QR".into());
    }
    if case.len() >= 2 && m.metadata.id != u16::from_be_bytes([case[0], case[1]]) {
        return Err("response with another ID".into());
    }
    Ok(())
}

#[test]
fn mutated_queries_never_panic_and_get_well_formed_answers_or_none() {
    let seed: u64 = std::env::var("DNSSHIFT_FUZZ_SEED")
        .ok()
        .map_or(0x5eed_d115, |s| {
            s.parse().expect("DNSSHIFT_FUZZ_SEED: a number")
        });
    let until = std::env::var("DNSSHIFT_FUZZ_SECONDS")
        .ok()
        .map(|s| Instant::now() + Duration::from_secs(s.parse().expect("seconds")));
    let plan = Arc::new(ArcSwap::from_pointee(plan()));
    let handler = Handler::new(plan.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let corpus = corpus();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut cases = 0u64;
    loop {
        match until {
            Some(t) if Instant::now() >= t => break,
            None if cases >= CI_CASES => break,
            _ => {}
        }
        let mut case = corpus[rng.usize(..corpus.len())].clone();
        mutate(&mut rng, &mut case, &corpus);
        if let Err(e) = check(&case, &plan, &handler, &rt) {
            panic!("seed {seed}, case {cases}: {e}\npacket: {case:02x?}");
        }
        cases += 1;
    }
    eprintln!("fuzz: {cases} cases from seed {seed}");
}
