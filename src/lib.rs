//! dnsshift: an authoritative DNS server that shifts an application's traffic
//! between old and new load balancers by weight, phase and health.
//!
//! # Layout
//!
//! One module per responsibility. A module depends only on modules below
//! it in this list; nothing depends upwards, so there are no cycles.
//!
//! ```text
//! main.rs      args, tracing, runtime, signals -> dispatch
//! cli/         clap definitions; control client; human rendering
//! daemon       wiring and lifecycle: bind, spawn, SIGHUP, drain
//! ui/         the status page (/ui): sessions, CSRF, templates, SSE; calls Operator
//! control      HTTP routes -> Operator; token; typed error -> status; /metrics
//! operator     every command and status; one apply() path for changes;
//!              the DNS cookie secret's source and rotation (cookies.rs)
//! analysis/    issue 17: metrics providers, checks, the automation machine
//!              and its evaluator, which changes state only through operator
//! api          the operator protocol: requests, responses, typed errors
//! metrics      Prometheus rendering from zones, state, health and stats
//! dns/         the data path: sockets, UDP fast path (ECS read in place),
//!              TCP, hickory handler; DNS cookies (cookie.rs, issue 21)
//! answer/      the answer plan = f(zones, state, health), pure; the lookup;
//!              sticky assignment by client network (issue 18); DO=1
//!              answers of signed zones (secure.rs, issue 20)
//! stats        query, pool and endpoint counters; the one-minute window;
//!              the 24-hour split series for the page
//! health       checker tasks, rise/fall, the health table
//! state/       State, typed events, the StateStore trait, the state file
//!              and its append-only history log (issue 21), the DNSSEC key
//!              history; the shared store on etcd (issue 11); the election
//!              of automation's evaluators (issue 17)
//! zone/        zone files: raw specs, building, static records, checks;
//!              the digest of loaded zones (issue 16)
//! dnssec       keys, signing with a cache by RRset content (issue 20);
//!              read by zone/ when a zone is loaded
//! config/      dnsshift.toml ([cluster], [rrl], [cookies]); Source and file:line errors
//! phase, pool  pure: phases and transitions; pools, endpoints, checks, EndpointKey
//! clock, sync, error   the one clock, the one lock helper, error text
//! background   runtimes on threads of lower CPU priority (control, health)
//! siphash      the one SipHash (1-3 for sticky, 2-4 for cookies)
//! ```
//!
//! # Data flow
//!
//! One way. Config and zone files, operator state and health verdicts are
//! the inputs; the answer plan is built from them and swapped in whole;
//! the data path only reads the plan.
//!
//! ```text
//!  config/ zone/ ──┐
//!  state/ (store) ─┼──▶ answer::Plan::build ──▶ ArcSwap<Plan> ──▶ dns/ ──▶ answers
//!  health (table) ─┘          ▲                                    │
//!                             │                                    ▼
//!  operator::apply ───────────┘ (rebuild)              stats (counters, window)
//!   ▲ commands: control (HTTP) ◀── cli                        │
//!   └─────────── status, metrics ◀────────────────────────────┘
//! ```
//!
//! Health never advances a phase; it only shapes what a phase's weights
//! resolve to. Operator commands change the state; either change rebuilds
//! the plan.

pub mod analysis;
pub mod answer;
pub mod api;
pub mod background;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dns;
pub mod dnssec;
pub mod error;
pub mod health;
pub mod metrics;
pub mod operator;
pub mod phase;
pub mod pool;
pub mod siphash;
pub mod state;
pub mod stats;
pub mod sync;
pub mod ui;
pub mod zone;
