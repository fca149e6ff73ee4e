//! dnsshift: an authoritative DNS server that shifts an application's traffic
//! between old and new load balancers by weight, phase and health.
//!
//! Data flows one way: config ([`config`], [`zone`]) + operator state
//! ([`state`]) + health ([`health`]) → an immutable answer plan ([`answer`]) →
//! DNS answers ([`dns`]: the UDP fast path, TCP, and a hickory handler
//! for what the fast path does not answer itself). [`daemon`] wires the
//! pieces together; [`control`] is the operator protocol; [`cli`] is the
//! command line on top of it.

pub mod answer;
pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dns;
pub mod error;
pub mod health;
pub mod metrics;
pub mod operator;
pub mod phase;
pub mod pool;
pub mod state;
pub mod stats;
pub mod sync;
pub mod zone;
