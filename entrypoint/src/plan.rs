//! What to run, decided from the arguments and the environment the way the official Consul
//! image's `docker-entrypoint.sh` decides it. Pure: the caller passes the lookups (environment,
//! interfaces, `PATH`), so the tests drive them.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The image's program, whose conventions apply (`agent`, `template`, `lb`).
pub const AGENT: &str = "agent";

/// The lookups a plan depends on.
pub struct Env<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    /// The first IPv4 address of an interface, if it has one.
    pub interface_ipv4: &'a dyn Fn(&str) -> Option<Ipv4Addr>,
    /// Whether a word names an executable on `PATH`.
    pub on_path: &'a dyn Fn(&str) -> bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The command to start; `argv[0]` is looked up on `PATH`.
    pub argv: Vec<String>,
    /// `CONSUL_LOCAL_CONFIG`, written to this file before the program starts.
    pub local_config: Option<(PathBuf, String)>,
    /// What the official script prints before it starts the program.
    pub notes: Vec<String>,
}

/// The official script's answer for `args`, with `program` as the image's program. For the
/// agent: `agent ...` (and, unlike Consul's image, any first argument starting with `-`) runs
/// the daemon with `-data-dir=/consul/data -config-dir=/consul/config` and the `-bind`/`-client`
/// that `CONSUL_BIND_INTERFACE`/`CONSUL_CLIENT_INTERFACE` name; a word that is an executable on
/// `PATH` runs as given; any other word is a subcommand of the program (`members`, `kv`, ...).
/// An interface without an IPv4 address is an error, whatever the command, as in that script.
pub fn plan(program: &str, args: Vec<String>, env: &Env) -> Result<Plan, String> {
    let var = |k: &str| (env.var)(k).filter(|v| !v.is_empty());
    let mut notes = Vec::new();
    let mut local_config = None;
    let mut image_flags = Vec::new();
    if program == AGENT {
        for (key, flag) in [("CONSUL_BIND_INTERFACE", "bind"), ("CONSUL_CLIENT_INTERFACE", "client")] {
            if let Some(name) = var(key) {
                let Some(ip) = (env.interface_ipv4)(&name) else {
                    return Err(format!("Could not find IP for interface '{name}', exiting"));
                };
                notes.push(format!("==> Found address '{ip}' for interface '{name}', setting {flag} option..."));
                image_flags.push(format!("-{flag}={ip}"));
            }
        }
        let data_dir = var("CONSUL_DATA_DIR").unwrap_or_else(|| "/consul/data".into());
        let config_dir = var("CONSUL_CONFIG_DIR").unwrap_or_else(|| "/consul/config".into());
        if let Some(json) = var("CONSUL_LOCAL_CONFIG") {
            // `echo "$CONSUL_LOCAL_CONFIG" > local.json`: the text as given, and a newline.
            local_config = Some((PathBuf::from(&config_dir).join("local.json"), format!("{json}\n")));
        }
        image_flags.splice(0..0, [format!("-data-dir={data_dir}"), format!("-config-dir={config_dir}")]);
    }
    let first = args.first().map(String::as_str).unwrap_or("");
    let argv = if first.is_empty() {
        let mut argv = vec![program.to_string()];
        argv.extend(args);
        argv
    } else if program == AGENT && (first == AGENT || first.starts_with('-')) {
        let rest = if first == AGENT { &args[1..] } else { &args[..] };
        let mut argv = vec![program.to_string(), AGENT.to_string()];
        argv.extend(image_flags);
        argv.extend(rest.iter().cloned());
        argv
    } else if first.starts_with('-') {
        let mut argv = vec![program.to_string()];
        argv.extend(args);
        argv
    } else if first == program || first.contains('/') || (env.on_path)(first) {
        args
    } else {
        let mut argv = vec![program.to_string()];
        argv.extend(args);
        argv
    };
    Ok(Plan { argv, local_config, notes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(program: &str, args: &[&str], vars: &[(&str, &str)]) -> Result<Plan, String> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let var = move |k: &str| vars.get(k).cloned();
        let interface_ipv4 = |name: &str| (name == "eth0").then(|| Ipv4Addr::new(172, 18, 0, 5));
        let on_path = |w: &str| matches!(w, "agent" | "template" | "nginx" | "sh");
        let env = Env { var: &var, interface_ipv4: &interface_ipv4, on_path: &on_path };
        plan(program, args.iter().map(|s| s.to_string()).collect(), &env)
    }

    fn argv(p: &Plan) -> Vec<&str> {
        p.argv.iter().map(String::as_str).collect()
    }

    #[test]
    fn the_default_command_is_a_dev_agent_with_the_image_dirs() {
        let p = run("agent", &["agent", "-dev", "-client", "0.0.0.0"], &[]).expect("plan");
        assert_eq!(
            argv(&p),
            ["agent", "agent", "-data-dir=/consul/data", "-config-dir=/consul/config", "-dev", "-client", "0.0.0.0"]
        );
        assert_eq!(p.local_config, None);
        assert!(p.notes.is_empty());
    }

    #[test]
    fn interfaces_become_bind_and_client_before_the_users_flags() {
        let vars = [("CONSUL_BIND_INTERFACE", "eth0"), ("CONSUL_CLIENT_INTERFACE", "eth0")];
        let p = run("agent", &["agent", "-server", "-client=0.0.0.0"], &vars).expect("plan");
        assert_eq!(
            argv(&p),
            [
                "agent",
                "agent",
                "-data-dir=/consul/data",
                "-config-dir=/consul/config",
                "-bind=172.18.0.5",
                "-client=172.18.0.5",
                "-server",
                "-client=0.0.0.0"
            ]
        );
        assert_eq!(
            p.notes,
            [
                "==> Found address '172.18.0.5' for interface 'eth0', setting bind option...",
                "==> Found address '172.18.0.5' for interface 'eth0', setting client option..."
            ]
        );
    }

    #[test]
    fn an_interface_without_an_address_stops_every_command() {
        let e = run("agent", &["members"], &[("CONSUL_BIND_INTERFACE", "eth9")]).unwrap_err();
        assert_eq!(e, "Could not find IP for interface 'eth9', exiting");
        let e = run("agent", &["agent"], &[("CONSUL_CLIENT_INTERFACE", "bond0")]).unwrap_err();
        assert_eq!(e, "Could not find IP for interface 'bond0', exiting");
    }

    #[test]
    fn local_config_goes_to_local_json_in_the_config_dir() {
        let json = r#"{"skip_leave_on_interrupt": true}"#;
        let p = run("agent", &["agent", "-server"], &[("CONSUL_LOCAL_CONFIG", json)]).expect("plan");
        assert_eq!(p.local_config, Some((PathBuf::from("/consul/config/local.json"), format!("{json}\n"))));
        let p = run("agent", &["members"], &[("CONSUL_LOCAL_CONFIG", json), ("CONSUL_CONFIG_DIR", "/etc/agent.d")])
            .expect("plan");
        assert_eq!(p.local_config, Some((PathBuf::from("/etc/agent.d/local.json"), format!("{json}\n"))));
        assert_eq!(argv(&p), ["agent", "members"]);
    }

    #[test]
    fn flags_alone_run_the_agent_and_other_words_are_subcommands_or_programs() {
        let p = run("agent", &["-server", "-bootstrap-expect=3"], &[("CONSUL_DATA_DIR", "/data")]).expect("plan");
        assert_eq!(
            argv(&p),
            ["agent", "agent", "-data-dir=/data", "-config-dir=/consul/config", "-server", "-bootstrap-expect=3"]
        );
        let p = run("agent", &["operator", "raft", "list-peers"], &[]).expect("plan");
        assert_eq!(argv(&p), ["agent", "operator", "raft", "list-peers"]);
        let p = run("agent", &["version"], &[]).expect("plan");
        assert_eq!(argv(&p), ["agent", "version"]);
        let p = run("agent", &["sh", "-c", "true"], &[]).expect("plan");
        assert_eq!(argv(&p), ["sh", "-c", "true"]);
        let p = run("agent", &["/bin/other", "x"], &[]).expect("plan");
        assert_eq!(argv(&p), ["/bin/other", "x"]);
        let p = run("agent", &[], &[]).expect("plan");
        assert_eq!(argv(&p), ["agent"]);
    }

    #[test]
    fn other_images_only_default_to_their_program() {
        let vars = [("CONSUL_LOCAL_CONFIG", "{}"), ("CONSUL_BIND_INTERFACE", "eth9")];
        let p = run("template", &["-consul-addr=client1:8500", "-once"], &vars).expect("no consul conventions");
        assert_eq!(argv(&p), ["template", "-consul-addr=client1:8500", "-once"]);
        assert_eq!(p.local_config, None);
        let p = run("template", &["template", "-once"], &[]).expect("plan");
        assert_eq!(argv(&p), ["template", "-once"]);
        let p = run("template", &["nginx", "-g", "daemon off;"], &[]).expect("plan");
        assert_eq!(argv(&p), ["nginx", "-g", "daemon off;"]);
        let p = run("lb", &["-listen=0.0.0.0:88"], &[]).expect("plan");
        assert_eq!(argv(&p), ["lb", "-listen=0.0.0.0:88"]);
    }
}
