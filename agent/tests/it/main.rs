//! The agent's integration tests: real agent processes on distinct 127.0.0.x addresses with real
//! ports and data dirs. Each test owns its address, so they run in parallel.

mod acl;
mod acl_cli;
mod bad_input;
mod cluster;
mod config_cli;
mod connect;
mod dns;
mod docker;
mod federation;
mod gossip;
mod harness;
mod http_api;
mod keyring;
mod partition;
mod query;
mod restart;
mod security;
mod tls;
mod tls_clients;
mod tls_walkthrough;
mod ui;
