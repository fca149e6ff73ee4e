//! A stand-in for the example zone's load balancers, for the README's
//! try-out: it answers `200 ok` to every HTTP request on every loopback
//! address that the zones' health checks target, so that the new pool is
//! healthy and `advance` has somewhere to shift to. Ctrl-C stops it.
//!
//! ```console
//! $ cargo run --bin demo-backend                 # the targets of zones/*.toml
//! $ cargo run --bin demo-backend -- --zones DIR --port 0
//! ```
//!
//! `--port` serves every address on that port instead of the checks' own
//! (0: one free port, printed as `port N`, for tests). It refuses to serve a
//! target that is not a loopback address: it only ever plays local load
//! balancers. A binary of its own, not an example, so that running it
//! builds none of the dev-dependencies (criterion, rcgen, rustls) that
//! cargo builds for every example; the Debian package leaves it out.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use dnsshift::pool::CheckKind;

/// What every health check gets.
const BODY: &str = "ok\n";

fn usage() -> ! {
    eprintln!("usage: demo-backend [--zones DIR] [--port N]");
    std::process::exit(2);
}

fn main() {
    let mut zones = PathBuf::from("zones");
    let mut port: Option<u16> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--zones", Some(d)) => zones = d.into(),
            ("--port", Some(p)) => port = Some(p.parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    let loaded = match dnsshift::zone::load_dir(&zones) {
        Ok(z) => z,
        Err(errs) => {
            eprintln!("demo-backend: {}: {errs}", zones.display());
            std::process::exit(2);
        }
    };
    let mut addrs = BTreeSet::new();
    for (key, check) in dnsshift::health::targets(&loaded) {
        let what = format!("{} {} {}", key.service, key.pool, key.endpoint);
        match target(check.kind, &check.target) {
            Some(a) if a.ip().is_loopback() => {
                addrs.insert(a);
            }
            Some(a) => eprintln!("demo-backend: not serving {a} ({what}): not a loopback address"),
            None => eprintln!(
                "demo-backend: not serving {} ({what}): only plain HTTP or TCP checks of an address",
                check.target
            ),
        }
    }
    if addrs.is_empty() {
        eprintln!(
            "demo-backend: the zones in {} check no loopback address",
            zones.display()
        );
        std::process::exit(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo-backend: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(serve(addrs, port)) {
        eprintln!("demo-backend: {e}");
        std::process::exit(1);
    }
}

/// The address a plain HTTP or TCP check connects to.
fn target(kind: CheckKind, target: &str) -> Option<SocketAddr> {
    match kind {
        CheckKind::Tcp => target.parse().ok(),
        CheckKind::Http => {
            let url = reqwest::Url::parse(target).ok()?;
            let host = url
                .host_str()?
                .trim_start_matches('[')
                .trim_end_matches(']');
            let ip: IpAddr = host.parse().ok()?;
            Some(SocketAddr::new(ip, url.port_or_known_default()?))
        }
        CheckKind::Https => None,
    }
}

async fn serve(addrs: BTreeSet<SocketAddr>, port: Option<u16>) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(|| async { BODY });
    let mut port = port;
    let mut tasks = tokio::task::JoinSet::new();
    for mut addr in addrs {
        if let Some(p) = port {
            addr.set_port(p);
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot bind {addr}: {e}")))?;
        let bound = listener.local_addr()?;
        if port == Some(0) {
            // The first free port serves every address.
            port = Some(bound.port());
            println!("port {}", bound.port());
        }
        println!("serving http://{bound}/");
        tasks.spawn(axum::serve(listener, app.clone()).into_future());
    }
    // Registered before "ready" is printed, so that a Ctrl-C right after
    // it is not the default action (killed by the signal).
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    println!("ready; Ctrl-C stops");
    tokio::select! {
        _ = interrupt.recv() => Ok(()),
        Some(r) = tasks.join_next() => Err(std::io::Error::other(match r {
            Ok(Ok(())) => "a listener stopped".to_string(),
            Ok(Err(e)) => format!("a listener failed: {e}"),
            Err(e) => format!("a listener failed: {e}"),
        })),
    }
}
