//! Consul's CLI as subcommands of the `agent` binary (`agent kv put k v`, `agent members`, ...):
//! the same flags, output text, columns and exit codes, so scripts written for `consul` keep
//! working. Every command talks to an agent over HTTP through the shared `api` crate only; none
//! of this module may reach into the agent's internals (state store, raft, gossip).

mod acl;
mod cluster;
mod config;
mod flags;
mod http;
mod intention;
mod keyring;
mod kv;
mod local;
mod table;
mod tls;
mod watch;

use std::io::Write;

/// Writes a line to stdout; a closed pipe (`agent kv get -recurse | head`) is not an error.
pub(super) fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(s.as_bytes());
    let _ = o.write_all(b"\n");
    let _ = o.flush();
}

/// Writes raw bytes and a newline to stdout (KV values need not be UTF-8).
pub(super) fn out_bytes(b: &[u8]) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(b);
    let _ = o.write_all(b"\n");
    let _ = o.flush();
}

/// Writes a line to stderr.
pub(super) fn err(s: &str) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(s.as_bytes());
    let _ = e.write_all(b"\n");
}

/// Parses a command's flags, or prints the usage and returns from the command.
macro_rules! parse_flags {
    ($args:expr, $bools:expr, $values:expr, $usage:expr) => {
        match $crate::cli::flags::parse($args, $bools, $values) {
            Ok(p) => p,
            Err($crate::cli::flags::FlagError::Help) => {
                $crate::cli::out($usage.trim_matches('\n'));
                return 0;
            }
            Err($crate::cli::flags::FlagError::Bad(m)) => {
                $crate::cli::err(&m);
                $crate::cli::err($usage.trim_matches('\n'));
                return 1;
            }
        }
    };
}
pub(crate) use parse_flags;

/// Builds the HTTP context from the parsed flags, or prints Consul's error and returns 1.
macro_rules! ctx_or_exit {
    ($p:expr) => {
        match $crate::cli::http::Ctx::new(&$p) {
            Ok(c) => c,
            Err(e) => {
                $crate::cli::err(&format!("Error connecting to Consul agent: {e}"));
                return 1;
            }
        }
    };
}
pub(crate) use ctx_or_exit;

/// Returns from a command with exit code 1 after printing `msg` to stderr.
macro_rules! fail {
    ($($arg:tt)*) => {{
        $crate::cli::err(&format!($($arg)*));
        return 1;
    }};
}
pub(crate) use fail;

/// Consul's `Help` sentinel for nested commands (`kv`, `catalog`, `operator raft`...): print the
/// group's help; `-h` is success, anything else (missing or unknown subcommand) exits 1.
pub(super) fn group_help(args: &[String], help: &str) -> i32 {
    let asked = matches!(args.first().map(String::as_str), Some("-h" | "-help" | "--help"));
    if asked {
        out(help.trim_matches('\n'));
        0
    } else {
        err(help.trim_matches('\n'));
        1
    }
}

const COMMANDS: &[(&str, &str)] = &[
    ("acl", "Interact with the ACL system"),
    ("agent", "Runs an agent"),
    ("catalog", "Interact with the catalog"),
    ("config", "Interact with centralized config entries"),
    ("event", "Fire a new event"),
    ("force-leave", "Forces a member of the cluster to enter the \"left\" state"),
    ("info", "Provides debugging information for operators."),
    ("intention", "Interact with Connect service intentions"),
    ("join", "Tell an agent to join the cluster"),
    ("keygen", "Generates a new encryption key"),
    ("keyring", "Manages gossip layer encryption keys"),
    ("kv", "Interact with the key-value store"),
    ("leave", "Gracefully leaves the cluster and shuts down"),
    ("lock", "Execute a command holding a lock"),
    ("maint", "Controls node or service maintenance mode"),
    ("members", "Lists the members of a cluster"),
    ("monitor", "Stream logs from an agent"),
    ("operator", "Provides cluster-level tools for operators"),
    ("reload", "Triggers the agent to reload configuration files"),
    ("services", "Interact with services"),
    ("snapshot", "Saves, restores and inspects snapshots of server state"),
    ("tls", "Builtin helpers for creating CAs and certificates"),
    ("validate", "Validate config files/directories"),
    ("version", "Prints the version"),
    ("watch", "Watch for changes"),
];

fn main_help() -> String {
    let mut s = String::from("Usage: agent [--version] [--help] <command> [<args>]\n\nAvailable commands are:\n");
    let w = COMMANDS.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, syn) in COMMANDS {
        s.push_str(&format!("    {name:<w$}    {syn}\n"));
    }
    s
}

/// Runs a CLI subcommand other than `agent`; returns the process exit code.
pub async fn run(args: Vec<String>) -> anyhow::Result<i32> {
    let Some(cmd) = args.first() else {
        err(main_help().trim_end());
        return Ok(127);
    };
    let rest = &args[1..];
    let code = match cmd.as_str() {
        "-h" | "-help" | "--help" | "help" => {
            out(main_help().trim_end());
            0
        }
        "-v" | "-version" | "--version" => local::version(&[]),
        "version" => local::version(rest),
        "acl" => acl::run(rest).await,
        "kv" => kv::run(rest).await,
        "config" => config::run(rest).await,
        "intention" => intention::run(rest).await,
        "members" => cluster::members(rest).await,
        "info" => cluster::info(rest).await,
        "join" => cluster::join(rest).await,
        "leave" => cluster::leave(rest).await,
        "force-leave" => cluster::force_leave(rest).await,
        "reload" => cluster::reload(rest).await,
        "operator" => cluster::operator(rest).await,
        "catalog" => cluster::catalog(rest).await,
        "event" => cluster::event(rest).await,
        "maint" => cluster::maint(rest).await,
        "monitor" => cluster::monitor(rest).await,
        "services" => local::services(rest).await,
        "snapshot" => local::snapshot(rest).await,
        "keygen" => local::keygen(rest),
        "keyring" => keyring::keyring(rest).await,
        "validate" => local::validate(rest),
        "tls" => tls::run(rest),
        "watch" => watch::watch(rest).await,
        "lock" => watch::lock(rest).await,
        other => {
            err(&format!("Unknown command: {other:?}\n"));
            err(main_help().trim_end());
            127
        }
    };
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_and_empty_commands_exit_127() {
        assert_eq!(run(vec![]).await.unwrap(), 127);
        assert_eq!(run(vec!["frobnicate".into()]).await.unwrap(), 127);
        assert_eq!(run(vec!["--help".into()]).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn groups_without_subcommand_print_help_and_fail() {
        assert_eq!(run(vec!["kv".into()]).await.unwrap(), 1);
        assert_eq!(run(vec!["kv".into(), "-h".into()]).await.unwrap(), 0);
        assert_eq!(run(vec!["operator".into(), "raft".into()]).await.unwrap(), 1);
        assert_eq!(run(vec!["acl".into()]).await.unwrap(), 1);
        assert_eq!(run(vec!["config".into()]).await.unwrap(), 1);
        assert_eq!(run(vec!["intention".into(), "-h".into()]).await.unwrap(), 0);
        assert_eq!(run(vec!["acl".into(), "token".into(), "-h".into()]).await.unwrap(), 0);
    }

    #[test]
    fn help_lists_every_command() {
        let h = main_help();
        for (name, _) in COMMANDS {
            assert!(h.contains(name), "{name}");
        }
    }
}
