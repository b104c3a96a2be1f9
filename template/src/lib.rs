//! `template`: consul-template's job. Watches the agent's catalog and KV with blocking queries,
//! renders Go-template (`.ctmpl`) and handlebars (`.hbs`) files, writes them atomically and runs
//! reload commands. It knows the agent only through the HTTP contract crate `api`.

pub mod dep;
pub mod engine;
pub mod funcs;
pub mod command;
pub mod config;
pub mod hcl;
pub mod write;
pub mod exec;
pub mod files;
pub mod runner;
pub mod watch;

pub use runner::Runner;

#[cfg(test)]
mod fake;
