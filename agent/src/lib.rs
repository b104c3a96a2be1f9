//! The discovery agent. Layers point down: http/dns/cli → server (reads, writes, blocking) →
//! raft glue → state store. See ARCHITECTURE.md.

pub mod raft;
pub mod state;
pub mod structs;
pub mod checks;
pub mod config;
pub mod defs;
pub mod rpc;
pub mod server;
pub mod agent;
pub mod local;
pub mod telemetry;
pub mod cli;
pub mod filter;
pub mod http;
pub mod daemon;
