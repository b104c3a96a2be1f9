//! The agent's public HTTP contract, shared by the CLI, `template`, `lb` and the examples:
//! Consul's JSON types, an async client and the blocking-query watcher. It must not depend on
//! the agent crate: whatever crosses this boundary crosses it as HTTP.

pub mod acl;
pub mod client;
pub mod duration;
#[cfg(test)]
mod fake;
pub mod query;
pub mod tls;
pub mod types;
pub mod watch;

pub use acl::*;
pub use client::{Client, Error};
pub use query::{QueryMeta, QueryOptions};
pub use tls::{EnvTls, Tls, TlsOptions};
pub use types::*;
pub use watch::{Target, Watcher};
