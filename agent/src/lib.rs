//! The discovery agent. Layers point down: http/dns/cli → server (reads, writes, blocking) →
//! raft glue → state store. See ARCHITECTURE.md.

pub mod acl;
pub mod agent;
pub mod ca_leader;
pub mod checks;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod config_entry;
pub mod connect;
pub mod coordinate;
pub mod daemon;
pub mod defs;
pub mod dns;
pub mod docker;
pub mod filter;
pub mod forward;
pub mod gossip;
pub mod http;
pub mod leader;
pub mod local;
pub mod peer_auth;
pub mod prepared_query;
pub mod raft;
pub mod rpc;
pub mod serf;
pub mod server;
pub mod state;
pub mod structs;
pub mod telemetry;
pub mod tls;
pub mod wan_rtt;
