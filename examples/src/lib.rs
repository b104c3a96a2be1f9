//! Runnable examples of the HTTP contract; see `cargo run -p examples --example NAME`.
