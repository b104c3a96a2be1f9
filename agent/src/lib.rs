//! The discovery agent. Layers point down: http/dns/cli → server (reads, writes, blocking) →
//! raft glue → state store. See ARCHITECTURE.md.

pub mod raft;
pub mod state;
pub mod structs;
