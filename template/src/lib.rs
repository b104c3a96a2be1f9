//! `template`: consul-template's job. Watches the agent's catalog and KV with blocking queries,
//! renders Go-template (`.ctmpl`) and handlebars (`.hbs`) files, writes them atomically and runs
//! reload commands. It knows the agent only through the HTTP contract crate `api`.
//!
//! Map, from the bottom up (each module may use only those above it):
//! - [`dep`]: the query grammar (`tag.name@dc|filter`) and Consul answers → consul-template's
//!   output structures. Pure.
//! - [`encode`]: `toYAML`/`toTOML` byte for byte as consul-template's Go libraries write them.
//!   Pure.
//! - [`funcs`]: the function library over JSON values, reading a [`funcs::Brain`] snapshot and
//!   recording used/missing dependencies. Pure but for `env`.
//! - [`check`]: what Go's template parser checks and the engines leave to execution (block
//!   structure, unknown functions and helpers, undefined variables), on source and parse trees.
//!   Pure.
//! - [`engine`]: gotmpl (Go template syntax) and handlebars behind one `Compiled` type; a
//!   template is parsed and checked whole before it runs.
//! - [`config`]: command line and configuration files (HCL through the `hcl1` crate) into one `Config`.
//! - [`write`], [`command`], [`exec`]: files, reload commands, the supervised child.
//! - [`watch`], [`files`]: tasks that report dependency data and template edits.
//! - [`runner`]: the one task that owns templates, brain and watches.
//!
//! Invariants: a template is written only when every dependency it used has data and its bytes
//! changed; one watch per distinct dependency; the runner never blocks on the agent (watch tasks
//! do), and nothing but the runner writes files.

pub mod check;
pub mod command;
pub mod config;
pub mod dep;
pub mod encode;
pub mod engine;
pub mod exec;
pub mod files;
pub mod funcs;
pub mod runner;
pub mod watch;
pub mod write;

pub use runner::Runner;

#[cfg(test)]
mod fake;
