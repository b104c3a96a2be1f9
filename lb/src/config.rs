//! The command line and the optional config file (`-config=FILE`, TOML, or JSON when the name
//! ends in `.json`): where to listen, which agents to ask and with which ACL token, and per-route
//! balancing options. Flags win over the file, the file over the environment
//! (`CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`). It knows nothing about pingora or routing
//! internals.

use crate::balance::{BenchRule, Policy};
use clap::Parser;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parsing config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("no agent address: pass -consul-addr=HOST:PORT or set consul_addr in the config file")]
    NoAgent,
    #[error("invalid listen address {0:?}")]
    Listen(String),
    #[error("reading token file {path}: {source}")]
    TokenFile { path: PathBuf, source: std::io::Error },
}

/// `lb -listen=0.0.0.0:88 -consul-addr=HOST:PORT [-consul-addr ...] [-config=FILE]`.
#[derive(Debug, Clone, Parser, Default)]
#[command(name = "lb", about = "One stable HTTP entry point over healthy agents and services", version)]
pub struct Args {
    /// Address to accept HTTP on.
    #[arg(long)]
    pub listen: Option<String>,
    /// An agent's HTTP address (repeatable); more agents are found from the cluster's members.
    #[arg(long = "consul-addr", alias = "http-addr")]
    pub consul_addr: Vec<String>,
    /// ACL token lb's own queries to the agents carry (default: `$CONSUL_HTTP_TOKEN`).
    #[arg(long = "consul-token")]
    pub consul_token: Option<String>,
    /// A file holding that token; it wins over `-consul-token`, as in Consul's client.
    #[arg(long = "consul-token-file")]
    pub consul_token_file: Option<PathBuf>,
    /// Speak HTTPS to the agents (`-consul-ssl` or `-consul-ssl=false`; default:
    /// `$CONSUL_HTTP_SSL`, or on when an address says `https://` or a TLS file is named).
    #[arg(long = "consul-ssl", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub consul_ssl: Option<bool>,
    /// `-consul-ssl-verify=false` skips checking the agents' (and HTTPS instances') certificates.
    #[arg(long = "consul-ssl-verify", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub consul_ssl_verify: Option<bool>,
    /// CA file the agents' certificates are checked against (default: `$CONSUL_CACERT`).
    #[arg(long = "consul-ca-file")]
    pub consul_ca_file: Option<PathBuf>,
    /// A directory of CA files (default: `$CONSUL_CAPATH`).
    #[arg(long = "consul-ca-path")]
    pub consul_ca_path: Option<PathBuf>,
    /// Client certificate for agents with `verify_incoming` (default: `$CONSUL_CLIENT_CERT`).
    #[arg(long = "consul-client-cert")]
    pub consul_client_cert: Option<PathBuf>,
    /// Its key (default: `$CONSUL_CLIENT_KEY`).
    #[arg(long = "consul-client-key")]
    pub consul_client_key: Option<PathBuf>,
    /// The name the agents' certificates must carry (default: `$CONSUL_TLS_SERVER_NAME`, else
    /// each agent's IP address).
    #[arg(long = "consul-tls-server-name")]
    pub consul_tls_server_name: Option<String>,
    /// TOML (or .json) file with balancing options.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Log level filter (as RUST_LOG).
    #[arg(long = "log-level")]
    pub log_level: Option<String>,
    /// Take over the listening sockets of a running lb (pingora's graceful upgrade).
    #[arg(long)]
    pub upgrade: bool,
    /// Run in the background.
    #[arg(long)]
    pub daemon: bool,
    /// Where the old process hands its sockets over during an upgrade.
    #[arg(long = "upgrade-sock")]
    pub upgrade_sock: Option<String>,
    #[arg(long = "pid-file")]
    pub pid_file: Option<String>,
    /// Worker threads for the proxy (default: the number of CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl Args {
    /// Parses Consul-style flags: `-x=v` and `-x v` mean `--x=v` and `--x v`.
    pub fn parse_from_consul_style<I: IntoIterator<Item = String>>(args: I) -> Result<Args, clap::Error> {
        Args::try_parse_from(args.into_iter().enumerate().map(|(i, a)| if i == 0 { a } else { double_dash(a) }))
    }
}

/// Rewrites `-flag...` to `--flag...`, leaving `--flag`, `-` and negative-looking values alone.
pub fn double_dash(arg: String) -> String {
    let b = arg.as_bytes();
    if b.len() > 2 && b[0] == b'-' && b[1] != b'-' && b[1].is_ascii_alphabetic() {
        format!("-{arg}")
    } else {
        arg
    }
}

/// Options of one route.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteOptions {
    pub policy: Policy,
    /// nginx `max_fails`: failures within `fail_timeout` that bench an instance; 0 disables.
    pub max_fails: u32,
    #[serde(with = "api::duration::serde_go")]
    pub fail_timeout: Duration,
    #[serde(with = "api::duration::serde_go")]
    pub connect_timeout: Duration,
    /// Idle time allowed while reading the answer; zero means no limit.
    #[serde(with = "api::duration::serde_go")]
    pub read_timeout: Duration,
    /// At most this many instances per request (nginx `proxy_next_upstream_tries`); 0 = all.
    pub tries: u32,
}

impl Default for RouteOptions {
    fn default() -> Self {
        RouteOptions {
            policy: Policy::RoundRobin,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::ZERO,
            tries: 0,
        }
    }
}

impl RouteOptions {
    pub fn bench(&self) -> BenchRule {
        BenchRule { max_fails: self.max_fails, fail_timeout: self.fail_timeout }
    }
}

/// A partial `RouteOptions`: only the keys a section sets override the defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteOverride {
    pub policy: Option<Policy>,
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub tries: Option<u32>,
}

/// The config file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct File {
    listen: Option<String>,
    consul_addr: Vec<String>,
    consul_token: Option<String>,
    consul_token_file: Option<PathBuf>,
    consul_ssl: Option<bool>,
    consul_ssl_verify: Option<bool>,
    consul_ca_file: Option<PathBuf>,
    consul_ca_path: Option<PathBuf>,
    consul_client_cert: Option<PathBuf>,
    consul_client_key: Option<PathBuf>,
    consul_tls_server_name: Option<String>,
    domain: Option<String>,
    wait: Option<String>,
    members_interval: Option<String>,
    access_log: Option<bool>,
    threads: Option<usize>,
    client_header_timeout: Option<String>,
    keepalive_timeout: Option<String>,
    remote_watches: Option<usize>,
    remote_idle: Option<String>,
    remote_wait: Option<String>,
    defaults: RouteOverride,
    /// Options of the agent route (`/v1/...`, `/ui`).
    agents: RouteOverride,
    /// Options per service name.
    services: BTreeMap<String, RouteOverride>,
}

/// An ACL token: kept out of `Debug` output, so logging a config never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Where each source may hold the token: (token, token file). A level's token file wins over its
/// token (Consul's client reads the file into the token); flags win over the config file, which
/// wins over the environment. An unreadable file is an error, not a silent fallback.
type TokenSource = (Option<String>, Option<PathBuf>);

fn pick_token(
    levels: [TokenSource; 3],
    read: impl Fn(&Path) -> std::io::Result<String>,
) -> Result<Option<Token>, Error> {
    for (token, file) in levels {
        if let Some(path) = file.filter(|p| !p.as_os_str().is_empty()) {
            let text = read(&path).map_err(|source| Error::TokenFile { path: path.clone(), source })?;
            if !text.trim().is_empty() {
                return Ok(Some(Token(text.trim().to_string())));
            }
        }
        if let Some(t) = token.filter(|t| !t.trim().is_empty()) {
            return Ok(Some(Token(t.trim().to_string())));
        }
    }
    Ok(None)
}

/// The agents' TLS: flags over the config file over Consul's environment, setting by setting.
/// On when `consul_ssl` says so; when it says nothing, as soon as a file or name is given, an
/// address says `https://` or `CONSUL_HTTP_SSL` is true (as Consul's client decides).
fn consul_tls(args: &Args, file: &File, addrs: &[String], env: &api::EnvTls) -> Option<api::TlsOptions> {
    let verify = args.consul_ssl_verify.or(file.consul_ssl_verify);
    let given = api::TlsOptions {
        ca_file: args.consul_ca_file.clone().or_else(|| file.consul_ca_file.clone()),
        ca_path: args.consul_ca_path.clone().or_else(|| file.consul_ca_path.clone()),
        cert_file: args.consul_client_cert.clone().or_else(|| file.consul_client_cert.clone()),
        key_file: args.consul_client_key.clone().or_else(|| file.consul_client_key.clone()),
        server_name: args.consul_tls_server_name.clone().or_else(|| file.consul_tls_server_name.clone()),
        insecure_skip_verify: verify == Some(false),
    };
    let https = addrs.iter().any(|a| a.trim().to_ascii_lowercase().starts_with("https://"));
    let on = args.consul_ssl.or(file.consul_ssl).unwrap_or(!given.is_empty() || https || env.ssl);
    if !on {
        return None;
    }
    let mut opts = given.or(&env.options);
    if let Some(v) = verify {
        opts.insecure_skip_verify = !v;
    }
    Some(opts)
}

/// Everything the program runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub consul_addr: Vec<String>,
    /// The ACL token of lb's own watches (never forwarded with proxied requests).
    pub consul_token: Option<Token>,
    /// TLS toward the agents, or `None` for plain HTTP (`consul_tls`).
    pub consul_tls: Option<api::TlsOptions>,
    /// Consul's DNS domain in `Host: web.service.<domain>`.
    pub domain: String,
    /// Longest wait of a blocking query.
    pub wait: Duration,
    /// How often the member list is re-read (it has no blocking form).
    pub members_interval: Duration,
    pub access_log: bool,
    pub threads: usize,
    /// How long a client has to send a whole request head (nginx `client_header_timeout`).
    pub client_header_timeout: Duration,
    /// How long an idle client connection is kept open between requests (nginx
    /// `keepalive_timeout`).
    pub keepalive_timeout: Duration,
    /// At most this many watches of other datacenters (one per datacenter a request named, one
    /// per service of it), whatever `Host` headers clients send.
    pub remote_watches: usize,
    /// A service of another datacenter no request used for this long is no longer watched.
    pub remote_idle: Duration,
    /// How long the first request for a service of another datacenter waits for its instances.
    pub remote_wait: Duration,
    pub defaults: RouteOptions,
    pub agents: RouteOptions,
    pub services: BTreeMap<String, RouteOptions>,
    pub upgrade: bool,
    pub daemon: bool,
    pub upgrade_sock: String,
    pub pid_file: String,
    pub log_level: Option<String>,
    /// The flags this was built from, so that a reload reads the file again under the same flags.
    args: Args,
}

/// What `Config::reload` read.
#[derive(Debug)]
pub struct Reloaded {
    pub config: Config,
    /// Keys that changed in the file but take effect only in a new process.
    pub ignored: Vec<&'static str>,
}

impl Config {
    pub fn from_args(args: Args) -> Result<Config, Error> {
        let source = args.clone();
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => File::default(),
        };
        let path = args.config.clone().unwrap_or_default();
        let dur = |v: &Option<String>, default: Duration| -> Result<Duration, Error> {
            match v {
                None => Ok(default),
                Some(s) => api::duration::parse(s)
                    .map_err(|e| Error::Parse { path: path.clone(), message: format!("duration {s:?}: {e}") }),
            }
        };
        let defaults = apply(&RouteOptions::default(), &file.defaults, &dur)?;
        // An agent that stops answering (paused, overloaded) must not hold requests forever;
        // blocking queries get their own wait on top (`routing::agent_read_timeout`).
        let agents_base = RouteOptions {
            read_timeout: if defaults.read_timeout.is_zero() { Duration::from_secs(60) } else { defaults.read_timeout },
            ..defaults.clone()
        };
        let agents = apply(&agents_base, &file.agents, &dur)?;
        let mut services = BTreeMap::new();
        for (name, o) in &file.services {
            services.insert(name.to_lowercase(), apply(&defaults, o, &dur)?);
        }
        let addrs = if args.consul_addr.is_empty() { &file.consul_addr } else { &args.consul_addr };
        let consul_tls = consul_tls(&args, &file, addrs, &api::EnvTls::from_env());
        let listen = args.listen.or(file.listen).unwrap_or_else(|| "0.0.0.0:88".to_string());
        if listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::Listen(listen));
        }
        let consul_addr = if args.consul_addr.is_empty() { file.consul_addr } else { args.consul_addr };
        if consul_addr.is_empty() {
            return Err(Error::NoAgent);
        }
        let env = |k: &str| std::env::var(k).ok();
        let consul_token = pick_token(
            [
                (args.consul_token.clone(), args.consul_token_file.clone()),
                (file.consul_token.clone(), file.consul_token_file.clone()),
                (env("CONSUL_HTTP_TOKEN"), env("CONSUL_HTTP_TOKEN_FILE").map(PathBuf::from)),
            ],
            |p| std::fs::read_to_string(p),
        )?;
        let threads = args
            .threads
            .or(file.threads)
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        Ok(Config {
            listen,
            consul_addr,
            consul_token,
            consul_tls,
            domain: file.domain.unwrap_or_else(|| "consul".to_string()).trim_matches('.').to_lowercase(),
            wait: dur(&file.wait, Duration::from_secs(30))?,
            members_interval: dur(&file.members_interval, Duration::from_secs(1))?,
            access_log: file.access_log.unwrap_or(true),
            threads: threads.max(1),
            client_header_timeout: dur(&file.client_header_timeout, Duration::from_secs(60))?,
            keepalive_timeout: dur(&file.keepalive_timeout, Duration::from_secs(75))?,
            remote_watches: file.remote_watches.unwrap_or(256),
            remote_idle: dur(&file.remote_idle, Duration::from_secs(600))?,
            remote_wait: dur(&file.remote_wait, Duration::from_secs(10))?,
            defaults,
            agents,
            services,
            upgrade: args.upgrade,
            daemon: args.daemon,
            upgrade_sock: args.upgrade_sock.unwrap_or_else(|| "/tmp/lb_upgrade.sock".to_string()),
            pid_file: args.pid_file.unwrap_or_else(|| "/tmp/lb.pid".to_string()),
            log_level: args.log_level,
            args: source,
        })
    }

    /// Reads the config file again (SIGHUP). Routing and balancing options (`defaults`, `agents`,
    /// `services`), the domain, the access log and the client timeouts take the new values; what running tasks were
    /// started with (listen address, agents and their token, workers, blocking-query wait,
    /// members interval, sockets, pid file, log level) stays, and each such key that changed in
    /// the file is named in `ignored`: it needs a restart or a graceful upgrade.
    pub fn reload(&self) -> Result<Reloaded, Error> {
        let mut new = Config::from_args(self.args.clone())?;
        let mut ignored = Vec::new();
        if new.listen != self.listen {
            ignored.push("listen");
        }
        if new.consul_addr != self.consul_addr {
            ignored.push("consul_addr");
        }
        if new.consul_token != self.consul_token {
            ignored.push("consul_token");
        }
        if new.consul_tls != self.consul_tls {
            ignored.push("consul_tls");
        }
        if new.threads != self.threads {
            ignored.push("threads");
        }
        if new.members_interval != self.members_interval {
            ignored.push("members_interval");
        }
        if new.wait != self.wait {
            ignored.push("wait");
        }
        new.listen = self.listen.clone();
        new.consul_addr = self.consul_addr.clone();
        new.consul_token = self.consul_token.clone();
        new.consul_tls = self.consul_tls.clone();
        new.threads = self.threads;
        new.members_interval = self.members_interval;
        new.wait = self.wait;
        Ok(Reloaded { config: new, ignored })
    }

    /// The options of a service's route.
    pub fn service(&self, name: &str) -> &RouteOptions {
        self.services.get(&name.to_lowercase()).unwrap_or(&self.defaults)
    }
}

fn read_file(path: &Path) -> Result<File, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.into(), source })?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        toml::from_str(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|message| Error::Parse { path: path.into(), message })
}

/// Parses an optional duration string, falling back to a default.
type DurationParser<'a> = &'a dyn Fn(&Option<String>, Duration) -> Result<Duration, Error>;

fn apply(base: &RouteOptions, o: &RouteOverride, dur: DurationParser<'_>) -> Result<RouteOptions, Error> {
    Ok(RouteOptions {
        policy: o.policy.unwrap_or(base.policy),
        max_fails: o.max_fails.unwrap_or(base.max_fails),
        fail_timeout: dur(&o.fail_timeout, base.fail_timeout)?,
        connect_timeout: dur(&o.connect_timeout, base.connect_timeout)?,
        read_timeout: dur(&o.read_timeout, base.read_timeout)?,
        tries: o.tries.unwrap_or(base.tries),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Args, clap::Error> {
        Args::parse_from_consul_style(line.split_whitespace().map(String::from))
    }

    #[test]
    fn flags_take_single_or_double_dash_with_or_without_equals() {
        for line in [
            "lb -listen=127.0.0.1:88 -consul-addr=127.0.0.11:8500 -consul-addr 127.0.0.12:8500",
            "lb --listen 127.0.0.1:88 --consul-addr=127.0.0.11:8500 -consul-addr=127.0.0.12:8500",
        ] {
            let a = args(line).unwrap();
            assert_eq!(a.listen.as_deref(), Some("127.0.0.1:88"), "{line}");
            assert_eq!(a.consul_addr, vec!["127.0.0.11:8500", "127.0.0.12:8500"], "{line}");
        }
        assert!(args("lb -bogus=1").is_err());
        assert_eq!(double_dash("-".into()), "-");
        assert_eq!(double_dash("-1".into()), "-1");
    }

    #[test]
    fn config_file_sets_route_options_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("lb-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lb.toml");
        std::fs::write(
            &path,
            r#"
listen = "127.0.0.1:9999"
consul_addr = ["127.0.0.11:8500"]
wait = "5s"
keepalive_timeout = "10s"
[defaults]
max_fails = 2
fail_timeout = "3s"
[agents]
policy = "least_conn"
[services.Web]
policy = "ip_hash"
"#,
        )
        .unwrap();
        let a = args(&format!("lb -listen=127.0.0.1:88 -config={}", path.display())).unwrap();
        let c = Config::from_args(a).unwrap();
        assert_eq!(c.listen, "127.0.0.1:88");
        assert_eq!(c.consul_addr, vec!["127.0.0.11:8500"]);
        assert_eq!(c.wait, Duration::from_secs(5));
        assert_eq!(c.keepalive_timeout, Duration::from_secs(10));
        assert_eq!(c.client_header_timeout, Duration::from_secs(60), "nginx's default");
        assert_eq!(c.agents.policy, Policy::LeastConn);
        assert_eq!(c.agents.max_fails, 2);
        assert_eq!(c.service("web").policy, Policy::IpHash);
        assert_eq!(c.service("web").fail_timeout, Duration::from_secs(3));
        assert_eq!(c.service("other").policy, Policy::RoundRobin);

        std::fs::write(&path, "[defaults]\npolicy = \"fastest\"\n").unwrap();
        let a = args(&format!("lb -consul-addr=a:1 -config={}", path.display())).unwrap();
        let e = Config::from_args(a).unwrap_err().to_string();
        assert!(e.contains("fastest"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn reload_takes_route_options_and_keeps_the_listener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9999\"\n[services.web]\npolicy = \"ip_hash\"\n").unwrap();
        let c = Config::from_args(args(&format!("lb -consul-addr=a:1 -config={}", path.display())).unwrap()).unwrap();
        assert_eq!(c.service("web").policy, Policy::IpHash);

        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7777\"\naccess_log = false\n[services.web]\npolicy = \"least_conn\"\n",
        )
        .unwrap();
        let r = c.reload().unwrap();
        assert_eq!(r.config.service("web").policy, Policy::LeastConn);
        assert!(!r.config.access_log);
        assert_eq!(r.config.listen, "127.0.0.1:9999");
        assert_eq!(r.ignored, vec!["listen"]);

        std::fs::write(&path, "[services.web]\npolicy = \"fastest\"\n").unwrap();
        assert!(c.reload().is_err());
    }

    #[test]
    fn the_token_comes_from_flags_then_the_file_then_the_environment() {
        let read = |p: &Path| match p.to_str() {
            Some("good") => Ok("  file-token\n".to_string()),
            Some("blank") => Ok("\n".to_string()),
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        let s = |v: &str| Some(v.to_string());
        let f = |v: &str| Some(PathBuf::from(v));
        let pick = |levels| pick_token(levels, read).map(|t| t.map(|t| t.0));
        assert_eq!(pick([(s("flag"), None), (s("file"), None), (s("env"), None)]).unwrap(), s("flag"));
        assert_eq!(pick([(None, None), (s("file"), None), (s("env"), None)]).unwrap(), s("file"));
        assert_eq!(pick([(None, None), (None, None), (s("env"), None)]).unwrap(), s("env"));
        assert_eq!(pick([(s("flag"), f("good")), (None, None), (None, None)]).unwrap(), s("file-token"));
        assert_eq!(pick([(s("flag"), f("blank")), (None, None), (None, None)]).unwrap(), s("flag"));
        assert_eq!(pick([(None, None), (None, None), (s("env"), f("good"))]).unwrap(), s("file-token"));
        assert_eq!(pick([(s(""), None), (None, None), (None, None)]).unwrap(), None);
        let e = pick([(None, f("/nope")), (None, None), (None, None)]).unwrap_err().to_string();
        assert!(e.starts_with("reading token file /nope: "), "{e}");
        assert_eq!(format!("{:?}", Token("secret".into())), "Token(<redacted>)");
    }

    #[test]
    fn the_token_is_a_flag_or_a_config_key_and_a_reload_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        std::fs::write(&path, "consul_token = \"from-file\"\n").unwrap();
        let c = Config::from_args(args(&format!("lb -consul-addr=a:1 -config={}", path.display())).unwrap()).unwrap();
        assert_eq!(c.consul_token, Some(Token("from-file".into())));
        let tf = dir.path().join("token");
        std::fs::write(&tf, "from-token-file\n").unwrap();
        let line = format!(
            "lb -consul-addr=a:1 -consul-token=flag -consul-token-file={} -config={}",
            tf.display(),
            path.display()
        );
        let c2 = Config::from_args(args(&line).unwrap()).unwrap();
        assert_eq!(c2.consul_token, Some(Token("from-token-file".into())));

        std::fs::write(&path, "consul_token = \"rotated\"\n").unwrap();
        let r = c.reload().unwrap();
        assert_eq!(r.ignored, vec!["consul_token"]);
        assert_eq!(r.config.consul_token, Some(Token("from-file".into())), "needs a restart");
    }

    #[test]
    fn agent_tls_comes_from_flags_then_the_file_then_the_environment() {
        let none = api::EnvTls::default();
        let tls = |line: &str, file: File, env: &api::EnvTls| {
            let a = args(line).unwrap();
            let addrs = if a.consul_addr.is_empty() { file.consul_addr.clone() } else { a.consul_addr.clone() };
            consul_tls(&a, &file, &addrs, env)
        };
        assert_eq!(tls("lb -consul-addr=a:1", File::default(), &none), None, "plain by default");
        let o = tls("lb -consul-addr=https://a:1", File::default(), &none).expect("https:// turns it on");
        assert!(o.is_empty(), "the system's roots: {o:?}");
        let line = "lb -consul-addr=a:1 -consul-ca-file=/ca.pem -consul-client-cert=/c.pem \
                    -consul-client-key=/k.pem -consul-tls-server-name=server.dc1.consul";
        let o = tls(line, File::default(), &none).expect("a file turns it on");
        assert_eq!(o.ca_file.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(
            (o.cert_file.as_deref(), o.key_file.as_deref()),
            (Some(Path::new("/c.pem")), Some(Path::new("/k.pem")))
        );
        assert_eq!(o.server_name.as_deref(), Some("server.dc1.consul"));
        assert!(!o.insecure_skip_verify);
        assert_eq!(tls("lb -consul-addr=https://a:1 -consul-ssl=false", File::default(), &none), None);
        let o = tls("lb -consul-addr=a:1 -consul-ssl -consul-ssl-verify=false", File::default(), &none).unwrap();
        assert!(o.insecure_skip_verify);
        // The file's keys, under the flags.
        let file = File { consul_ssl: Some(true), consul_ca_file: Some("/file-ca.pem".into()), ..File::default() };
        let o = tls("lb -consul-addr=a:1 -consul-ca-file=/flag-ca.pem", file.clone(), &none).unwrap();
        assert_eq!(o.ca_file.as_deref(), Some(Path::new("/flag-ca.pem")));
        assert_eq!(
            tls("lb -consul-addr=a:1", file, &none).unwrap().ca_file.as_deref(),
            Some(Path::new("/file-ca.pem"))
        );
        // Consul's environment fills what neither says, and CONSUL_HTTP_SSL turns it on.
        let env = api::EnvTls::from_vars(|k| match k {
            "CONSUL_HTTP_SSL" => Some("true".into()),
            "CONSUL_CACERT" => Some("/env-ca.pem".into()),
            _ => None,
        });
        let o = tls("lb -consul-addr=a:1", File::default(), &env).unwrap();
        assert_eq!(o.ca_file.as_deref(), Some(Path::new("/env-ca.pem")));
    }

    #[test]
    fn an_agent_address_is_required() {
        assert!(matches!(Config::from_args(args("lb").unwrap()), Err(Error::NoAgent)));
    }
}
