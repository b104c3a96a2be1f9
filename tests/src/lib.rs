//! End-to-end scenarios across the binaries live in tests/it; this crate holds the load tool
//! (`bench`) and the Jepsen-style test (`chaos`), whose history and checks are here.

pub mod chaos;
