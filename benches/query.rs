//! Benchmarks of the query path on the shipped example zone: the plan
//! lookup alone, and the whole handler (decode, lookup, encode) without
//! sockets.
//!
//!     cargo bench --bench query
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use criterion::{Criterion, criterion_group, criterion_main};
use dnsshift::answer::{ConfigOnly, Lookup, Plan};
use dnsshift::dns::Handler;
use dnsshift::stats::Stats;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{LowerName, Name, Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;

fn plan() -> Plan {
    let zone = dnsshift::zone::load_file(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/zones/shift.example.com.toml"
    )))
    .unwrap();
    Plan::build(&[zone], &ConfigOnly, &Stats::default(), 1)
}

fn lookup(c: &mut Criterion) {
    let plan = plan();
    let mut g = c.benchmark_group("lookup");
    for (label, name, t) in [
        ("weighted A", "www.shift.example.com.", RecordType::A),
        ("staging A", "www-next.shift.example.com.", RecordType::A),
        ("cname pool", "api.shift.example.com.", RecordType::AAAA),
        ("static MX", "shift.example.com.", RecordType::MX),
        ("nxdomain", "nope.shift.example.com.", RecordType::A),
    ] {
        let q = LowerName::from(Name::from_ascii(name).unwrap());
        g.bench_function(label, |b| {
            let mut rng = fastrand::Rng::with_seed(1);
            b.iter(|| match plan.lookup(black_box(&q), t, 0, &mut rng) {
                Lookup::Zone(a, _) => black_box(a.answers.len()),
                Lookup::Refused => 0,
            })
        });
    }
    g.finish();
}

/// Encodes the response into a buffer, as the UDP path does.
#[derive(Clone)]
struct Sink(Arc<Mutex<usize>>);

#[async_trait::async_trait]
impl ResponseHandler for Sink {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut buf = Vec::with_capacity(512);
        let mut enc = BinEncoder::new(&mut buf);
        enc.set_max_size(1232);
        let info = response.destructive_emit(&mut enc)?;
        *self.0.lock().unwrap() = buf.len();
        Ok(info)
    }
}

fn handler(c: &mut Criterion) {
    let handler = Handler::new(Arc::new(ArcSwap::from_pointee(plan())));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let sink = Sink(Arc::default());
    let mut g = c.benchmark_group("handler");
    for (label, name, t) in [
        ("weighted A", "www.shift.example.com.", RecordType::A),
        ("nxdomain", "nope.shift.example.com.", RecordType::A),
    ] {
        let mut m = Message::new(42, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.set_edns(Edns::new());
        let bytes = m.to_vec().unwrap();
        g.bench_function(label, |b| {
            b.iter(|| {
                let req = Request::from_bytes(bytes.clone(), src, Protocol::Udp).unwrap();
                rt.block_on(handler.handle_request::<_, TokioTime>(&req, sink.clone()))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lookup, handler);
criterion_main!(benches);
