//! End-to-end scenarios across the binaries live in tests/it.
