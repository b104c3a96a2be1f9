//! `agent tls ca create` and `agent tls cert create`: the files a TLS cluster needs, with
//! Consul's names and messages (the work is in `crate::tls::certs`, which knows no CLI).

use super::{err, fail, group_help, out, parse_flags};
use crate::tls::certs::{self, CaOptions, CertOptions, Kind};
use std::path::Path;

const TLS_HELP: &str = "
Usage: agent tls <subcommand> <subcommand> [options]

  This command has subcommands for interacting with Certificate Authorities
  and Certificates.

  Create a CA:        $ agent tls ca create
  Create a certificate: $ agent tls cert create -server -dc dc1

Subcommands:
    ca      Helpers for CAs
    cert    Helpers for certificates
";

pub(super) fn run(args: &[String]) -> i32 {
    match (args.first().map(String::as_str), args.get(1).map(String::as_str)) {
        (Some("ca"), Some("create")) => ca_create(&args[2..]),
        (Some("cert"), Some("create")) => cert_create(&args[2..]),
        _ => group_help(args, TLS_HELP),
    }
}

fn days(p: &super::flags::Parsed, default: u32) -> Result<u32, String> {
    match p.str("days") {
        None => Ok(default),
        Some(d) => d.parse().map_err(|_| format!("invalid value \"{d}\" for flag -days")),
    }
}

fn ca_create(args: &[String]) -> i32 {
    let usage = "
Usage: agent tls ca create [options]

  Create a new certificate authority: <domain>-agent-ca.pem and
  <domain>-agent-ca-key.pem in the current directory.

Command Options:
  -days=<int>                      Days the CA is valid for (1825).
  -domain=<string>                 Domain of the agents (consul).
  -common-name=<string>            Common name of the CA.
  -name-constraint                 Limit the CA to the domain and localhost.
  -additional-name-constraint=<s>  More names for the constraint (repeatable).
";
    let p = parse_flags!(
        args,
        &["name-constraint"],
        &["days", "domain", "common-name", "additional-name-constraint", "cluster-id"],
        usage
    );
    let days = match days(&p, 1825) {
        Ok(d) => d,
        Err(e) => fail!("{e}"),
    };
    let o = CaOptions {
        days,
        domain: p.str("domain").unwrap_or("consul").to_string(),
        common_name: p.str("common-name").unwrap_or("").to_string(),
        name_constraint: p.bool("name-constraint"),
        additional_name_constraints: p.all("additional-name-constraint"),
    };
    match certs::create_ca(Path::new("."), &o) {
        Ok((cert, key)) => {
            out(&format!("==> Saved {}", name_of(&cert)));
            out(&format!("==> Saved {}", name_of(&key)));
            0
        }
        Err(e) => fail!("{e}"),
    }
}

fn name_of(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn cert_create(args: &[String]) -> i32 {
    let usage = "
Usage: agent tls cert create [options]

  Create a new certificate signed by the CA: <dc>-<server|client|cli>-<domain>-<N>.pem
  and its key in the current directory.

Command Options:
  -server | -client | -cli          The kind of certificate.
  -dc=<string>                      Datacenter (dc1).
  -domain=<string>                  Domain (consul).
  -days=<int>                       Days it is valid for (365).
  -node=<string>                    With -server: also <node>.server.<dc>.<domain>.
  -ca=<path> -key=<path>            The CA (<domain>-agent-ca.pem, <domain>-agent-ca-key.pem).
  -additional-dnsname=<string>      Another DNS name (repeatable).
  -additional-ipaddress=<string>    Another IP address (repeatable).
";
    let p = parse_flags!(
        args,
        &["server", "client", "cli"],
        &["dc", "domain", "days", "node", "ca", "key", "additional-dnsname", "additional-ipaddress"],
        usage
    );
    let kinds = [(p.bool("server"), Kind::Server), (p.bool("client"), Kind::Client), (p.bool("cli"), Kind::Cli)];
    let chosen: Vec<Kind> = kinds.iter().filter(|(on, _)| *on).map(|(_, k)| *k).collect();
    let [kind] = chosen[..] else {
        fail!("Please provide either -server, -client, or -cli");
    };
    let node = p.str("node").unwrap_or("").to_string();
    if !node.is_empty() && kind != Kind::Server {
        fail!("-node requires -server");
    }
    let domain = p.str("domain").unwrap_or("consul").to_string();
    let days = match days(&p, 365) {
        Ok(d) => d,
        Err(e) => fail!("{e}"),
    };
    let mut ips = Vec::new();
    for a in p.all("additional-ipaddress") {
        match a.trim().parse() {
            Ok(ip) => ips.push(ip),
            Err(_) => fail!("invalid IP address {a:?} for -additional-ipaddress"),
        }
    }
    let ca = p.str("ca").map(str::to_string).unwrap_or_else(|| format!("{domain}-agent-ca.pem"));
    let ca_key = p.str("key").map(str::to_string).unwrap_or_else(|| format!("{domain}-agent-ca-key.pem"));
    let o = CertOptions {
        kind,
        dc: p.str("dc").unwrap_or("dc1").to_string(),
        domain,
        days,
        node,
        ca: ca.clone().into(),
        ca_key: ca_key.clone().into(),
        dns_names: p.all("additional-dnsname"),
        ip_addresses: ips,
    };
    if kind == Kind::Server {
        out("==> WARNING: Server Certificates grants authority to become a\n    server and access all state in the cluster including root keys\n    and all ACL tokens. Do not distribute them to production hosts\n    that are not server nodes. Store them as securely as CA keys.");
    }
    out(&format!("==> Using {ca} and {ca_key}"));
    match certs::create_cert(Path::new("."), &o) {
        Ok((cert, key)) => {
            out(&format!("==> Saved {}", name_of(&cert)));
            out(&format!("==> Saved {}", name_of(&key)));
            0
        }
        Err(e) => {
            err(&e.to_string());
            1
        }
    }
}
