//! The Jepsen-style test's pure parts: the history it records and the checks over it. The
//! runner (processes, faults, clients) is `src/bin/chaos.rs`.

pub mod check;
pub mod history;
