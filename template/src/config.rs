//! Configuration: consul-template's command line (single or double dash, `-x=v` or `-x v`) and its
//! configuration files (HCL or JSON, repeatable, merged left to right, the command line winning),
//! into one [`Config`]. Pure: reading files is the caller's job.

use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("flag provided but not defined: -{0}")]
    UnknownFlag(String),
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    #[error("invalid value {value:?} for flag -{flag}: {reason}")]
    Value { flag: String, value: String, reason: String },
    #[error("invalid template spec {0:?}: expected in:out[:command]")]
    TemplateSpec(String),
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("template {0}: needs a source or contents")]
    NoSource(usize),
    #[error("template {0}: needs a destination (unless -dry)")]
    NoDestination(String),
    #[error("unknown signal {0:?}")]
    Signal(String),
}

/// `wait = min:max` quiescence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub min: Duration,
    pub max: Duration,
}

impl Wait {
    /// `5s` or `5s:20s`; a missing max is 4×min, as in consul-template.
    pub fn parse(s: &str) -> Result<Wait, String> {
        let (min, max) = match s.split_once(':') {
            Some((a, b)) => (dur(a)?, Some(dur(b)?)),
            None => (dur(s)?, None),
        };
        let max = max.unwrap_or(min * 4);
        if max < min {
            return Err(format!("wait: min ({min:?}) must be <= max ({max:?})"));
        }
        Ok(Wait { min, max })
    }
}

fn dur(s: &str) -> Result<Duration, String> {
    api::duration::parse(s.trim()).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, PartialEq)]
pub struct TemplateConfig {
    pub source: Option<PathBuf>,
    pub contents: Option<String>,
    pub destination: Option<PathBuf>,
    pub command: Option<String>,
    pub command_timeout: Duration,
    /// Unix mode bits; `None` keeps an existing file's mode, else 0644.
    pub perms: Option<u32>,
    pub backup: bool,
    pub create_dest_dirs: bool,
    pub wait: Option<Wait>,
    pub left_delimiter: Option<String>,
    pub right_delimiter: Option<String>,
    pub error_on_missing_key: bool,
    pub sandbox_path: Option<PathBuf>,
    pub function_denylist: Vec<String>,
}

impl Default for TemplateConfig {
    fn default() -> Self {
        TemplateConfig {
            source: None,
            contents: None,
            destination: None,
            command: None,
            command_timeout: Duration::from_secs(30),
            perms: None,
            backup: false,
            create_dest_dirs: true,
            wait: None,
            left_delimiter: None,
            right_delimiter: None,
            error_on_missing_key: false,
            sandbox_path: None,
            function_denylist: Vec::new(),
        }
    }
}

impl TemplateConfig {
    /// consul-template's `-template` splitting (`config/template.go`): the regex
    /// `([a-zA-Z]:)?([^:]+)` finds the parts, so empty segments vanish and a drive-letter-like
    /// `x:` stays glued to what follows; parts after the destination are joined back with `:`
    /// into the command.
    pub fn parse_spec(spec: &str) -> Result<TemplateConfig, Error> {
        static RE: std::sync::LazyLock<regex::Regex> =
            std::sync::LazyLock::new(|| regex::Regex::new(r"([a-zA-Z]:)?([^:]+)").expect("static regex"));
        let parts: Vec<&str> = RE.find_iter(spec).map(|m| m.as_str()).collect();
        let mut t = TemplateConfig::default();
        match parts.as_slice() {
            [] => return Err(Error::TemplateSpec(spec.to_string())),
            [src] => t.source = Some(src.into()),
            [src, dst] => {
                t.source = Some(src.into());
                t.destination = Some(dst.into());
            }
            [src, dst, rest @ ..] => {
                t.source = Some(src.into());
                t.destination = Some(dst.into());
                t.command = Some(rest.join(":"));
            }
        }
        Ok(t)
    }

    /// A name for logs: the source path, else the destination.
    pub fn name(&self) -> String {
        self.source
            .as_ref()
            .or(self.destination.as_ref())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(inline)".into())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecConfig {
    pub command: String,
    /// `None`: restart the child when a template changes.
    pub reload_signal: Option<i32>,
    pub kill_signal: i32,
    pub kill_timeout: Duration,
    pub splay: Duration,
}

/// consul-template's `consul { ssl { ... } }` block and its `-consul-ssl*` flags (also taken as
/// `-ssl*`). Unset fields are `None`, so a later file or flag overrides only what it names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ssl {
    pub enabled: Option<bool>,
    pub verify: Option<bool>,
    pub ca_cert: Option<String>,
    pub ca_path: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub server_name: Option<String>,
}

impl Ssl {
    /// On when said so, or, when not said, as soon as any other setting is present
    /// (consul-template's `SSLConfig.Finalize`).
    pub fn enabled(&self) -> bool {
        let present = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        self.enabled.unwrap_or(
            present(&self.ca_cert)
                || present(&self.ca_path)
                || present(&self.cert)
                || present(&self.key)
                || present(&self.server_name)
                || self.verify.is_some(),
        )
    }

    /// The client's TLS options. A certificate without a key is a PEM file holding both, as
    /// consul-template loads it; `verify` defaults to true.
    pub fn options(&self) -> api::TlsOptions {
        let path = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(PathBuf::from);
        let cert = path(&self.cert);
        api::TlsOptions {
            ca_file: path(&self.ca_cert),
            ca_path: path(&self.ca_path),
            key_file: path(&self.key).or_else(|| cert.clone()),
            cert_file: cert,
            server_name: self.server_name.clone().filter(|s| !s.is_empty()),
            insecure_skip_verify: !self.verify.unwrap_or(true),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub consul_addrs: Vec<String>,
    pub consul_token: Option<String>,
    /// TLS toward the agents; see [`Config::consul_tls`].
    pub consul_ssl: Ssl,
    pub once: bool,
    pub dry: bool,
    pub wait: Option<Wait>,
    pub templates: Vec<TemplateConfig>,
    pub exec: Option<ExecConfig>,
    pub log_level: String,
    pub kill_signal: i32,
    pub reload_signal: i32,
    pub max_stale: Duration,
    /// `-retry`/`-consul-retry-backoff`: the first retry's wait, doubled for each next one.
    pub retry: Duration,
    /// `-consul-retry`: off, the first failed query ends the run.
    pub consul_retry: bool,
    /// `-consul-retry-attempts`: retries before the run ends with an error; 0 (our default, where
    /// consul-template's is 12) retries forever.
    pub consul_retry_attempts: u32,
    /// `-consul-retry-max-backoff`: the longest wait between retries; 0 is no limit.
    pub consul_retry_max_backoff: Duration,
    pub block_query_wait: Duration,
    pub pid_file: Option<PathBuf>,
    pub config_files: Vec<PathBuf>,
    pub default_left_delimiter: Option<String>,
    pub default_right_delimiter: Option<String>,
    pub template_error_fatal: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            consul_addrs: Vec::new(),
            consul_token: None,
            consul_ssl: Ssl::default(),
            once: false,
            dry: false,
            wait: None,
            templates: Vec::new(),
            exec: None,
            log_level: "warn".into(),
            kill_signal: libc::SIGINT,
            reload_signal: libc::SIGHUP,
            max_stale: Duration::from_secs(2),
            retry: Duration::from_millis(250),
            consul_retry: true,
            // consul-template's default is 12, then it exits; ours retries forever and keeps
            // the last good files until the agent is back (README, "on purpose").
            consul_retry_attempts: 0,
            consul_retry_max_backoff: Duration::from_secs(60),
            block_query_wait: Duration::from_secs(60),
            pid_file: None,
            config_files: Vec::new(),
            default_left_delimiter: None,
            default_right_delimiter: None,
            template_error_fatal: true,
        }
    }
}

/// `SIGHUP`, `HUP`, `sighup` or a number.
pub fn parse_signal(s: &str) -> Result<i32, Error> {
    let up = s.trim().to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    Ok(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "TERM" => libc::SIGTERM,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        n => n.parse().map_err(|_| Error::Signal(s.to_string()))?,
    })
}

const VALUE_FLAGS: &[&str] = &[
    "template",
    "config",
    "consul-addr",
    "consul-token",
    "consul-token-file",
    "wait",
    "exec",
    "log-level",
    "kill-signal",
    "reload-signal",
    "max-stale",
    "retry",
    "exec-kill-signal",
    "exec-kill-timeout",
    "exec-reload-signal",
    "exec-splay",
    "pid-file",
    "default-left-delimiter",
    "default-right-delimiter",
    "template-error-fatal",
    "consul-retry-attempts",
    "consul-retry-backoff",
    "consul-retry-max-backoff",
    "consul-auth",
    "block-query-wait",
    "consul-ssl-ca-cert",
    "consul-ssl-ca-path",
    "consul-ssl-cert",
    "consul-ssl-key",
    "consul-ssl-server-name",
    "ssl-ca-cert",
    "ssl-ca-path",
    "ssl-cert",
    "ssl-key",
    "ssl-server-name",
];
const BOOL_FLAGS: &[&str] = &[
    "once",
    "dry",
    "consul-retry",
    "parse-only",
    "syslog",
    "dedup",
    "consul-ssl",
    "consul-ssl-verify",
    "ssl",
    "ssl-verify",
];

/// What the command line asked for besides the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Run,
    Help,
    Version,
}

/// Parses the command line (without the program name) into flag/value pairs, in order.
pub fn parse_args(args: &[String]) -> Result<(Action, Vec<(String, String)>), Error> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(Error::UnknownFlag(arg.clone()));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        match name {
            "h" | "help" => return Ok((Action::Help, out)),
            "v" | "version" => return Ok((Action::Version, out)),
            _ => {}
        }
        if BOOL_FLAGS.contains(&name) {
            out.push((name.to_string(), inline.unwrap_or_else(|| "true".into())));
        } else if VALUE_FLAGS.contains(&name) {
            let value = match inline {
                Some(v) => v,
                None => it.next().cloned().ok_or_else(|| Error::MissingValue(name.to_string()))?,
            };
            out.push((name.to_string(), value));
        } else {
            return Err(Error::UnknownFlag(name.to_string()));
        }
    }
    Ok((Action::Run, out))
}

fn bad(flag: &str, value: &str, reason: impl std::fmt::Display) -> Error {
    Error::Value { flag: flag.to_string(), value: value.to_string(), reason: reason.to_string() }
}

fn bool_value(flag: &str, v: &str) -> Result<bool, Error> {
    match v {
        "" | "1" | "t" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(bad(flag, v, "expected a boolean")),
    }
}

impl Config {
    /// Applies command-line flags on top of `self` (configuration files come first).
    pub fn apply_flags(&mut self, flags: &[(String, String)]) -> Result<(), Error> {
        for (flag, v) in flags {
            let f = flag.as_str();
            // `-ssl-*` is `-consul-ssl-*`: the Consul connection is the only one there is.
            let ssl_key = f.strip_prefix("consul-").unwrap_or(f);
            let text = || Some(v.clone());
            match ssl_key {
                "ssl" => self.consul_ssl.enabled = Some(bool_value(f, v)?),
                "ssl-verify" => self.consul_ssl.verify = Some(bool_value(f, v)?),
                "ssl-ca-cert" => self.consul_ssl.ca_cert = text(),
                "ssl-ca-path" => self.consul_ssl.ca_path = text(),
                "ssl-cert" => self.consul_ssl.cert = text(),
                "ssl-key" => self.consul_ssl.key = text(),
                "ssl-server-name" => self.consul_ssl.server_name = text(),
                _ => {}
            }
            if ssl_key.starts_with("ssl") {
                continue;
            }
            match f {
                "template" => self.templates.push(TemplateConfig::parse_spec(v)?),
                "config" => {} // read by the caller before flags are applied
                "consul-addr" => self.consul_addrs.push(v.clone()),
                "consul-token" => self.consul_token = Some(v.clone()).filter(|t| !t.is_empty()),
                "consul-token-file" => {
                    let t = std::fs::read_to_string(v).map_err(|e| bad(f, v, e))?;
                    self.consul_token = Some(t.trim().to_string()).filter(|t| !t.is_empty());
                }
                "wait" => self.wait = Some(Wait::parse(v).map_err(|e| bad(f, v, e))?),
                "exec" => {
                    let e = self.exec.get_or_insert_with(default_exec);
                    e.command = v.clone();
                }
                "exec-kill-signal" => self.exec.get_or_insert_with(default_exec).kill_signal = parse_signal(v)?,
                "exec-reload-signal" => {
                    self.exec.get_or_insert_with(default_exec).reload_signal = Some(parse_signal(v)?)
                }
                "exec-kill-timeout" => {
                    self.exec.get_or_insert_with(default_exec).kill_timeout = dur(v).map_err(|e| bad(f, v, e))?
                }
                "exec-splay" => self.exec.get_or_insert_with(default_exec).splay = dur(v).map_err(|e| bad(f, v, e))?,
                "log-level" => self.log_level = v.to_ascii_lowercase(),
                "kill-signal" => self.kill_signal = parse_signal(v)?,
                "reload-signal" => self.reload_signal = parse_signal(v)?,
                "max-stale" => self.max_stale = dur(v).map_err(|e| bad(f, v, e))?,
                "retry" | "consul-retry-backoff" => self.retry = dur(v).map_err(|e| bad(f, v, e))?,
                "consul-retry" => self.consul_retry = bool_value(f, v)?,
                "consul-retry-attempts" => self.consul_retry_attempts = v.parse().map_err(|e| bad(f, v, e))?,
                "consul-retry-max-backoff" => self.consul_retry_max_backoff = dur(v).map_err(|e| bad(f, v, e))?,
                "block-query-wait" => self.block_query_wait = dur(v).map_err(|e| bad(f, v, e))?,
                "pid-file" => self.pid_file = Some(v.into()),
                "default-left-delimiter" => self.default_left_delimiter = Some(v.clone()),
                "default-right-delimiter" => self.default_right_delimiter = Some(v.clone()),
                "template-error-fatal" => self.template_error_fatal = bool_value(f, v)?,
                "once" => self.once = bool_value(f, v)?,
                "dry" => self.dry = bool_value(f, v)?,
                // Accepted for command-line compatibility; they change nothing here.
                _ => tracing::debug!(flag = f, "flag accepted and ignored"),
            }
        }
        Ok(())
    }

    /// Merges one configuration file (already parsed to JSON) into `self`.
    pub fn apply_file(&mut self, file: &str, v: &Value) -> Result<(), Error> {
        let ferr = |message: String| Error::File { file: file.to_string(), message };
        let Value::Object(top) = v else { return Err(ferr("expected an object at the top level".into())) };
        for (key, val) in top {
            match key.as_str() {
                "consul" => {
                    for c in blocks(val) {
                        if let Some(a) = c.get("address").and_then(Value::as_str) {
                            self.consul_addrs = vec![a.to_string()];
                        }
                        if let Some(t) = c.get("token").and_then(Value::as_str) {
                            self.consul_token = Some(t.to_string()).filter(|t| !t.is_empty());
                        }
                        for b in c.get("ssl").map(blocks).unwrap_or_default() {
                            ssl_block(&mut self.consul_ssl, b).map_err(|m| ferr(format!("consul.ssl.{m}")))?;
                        }
                        for r in c.get("retry").map(blocks).unwrap_or_default() {
                            if let Some(b) = r.get("backoff").and_then(Value::as_str) {
                                self.retry = dur(b).map_err(&ferr)?;
                            }
                            if let Some(b) = r.get("max_backoff").and_then(Value::as_str) {
                                self.consul_retry_max_backoff = dur(b).map_err(&ferr)?;
                            }
                            if let Some(e) = r.get("enabled").and_then(Value::as_bool) {
                                self.consul_retry = e;
                            }
                            if let Some(a) = r.get("attempts") {
                                let n = a.as_u64().or_else(|| a.as_str().and_then(|s| s.parse().ok()));
                                let n = n.ok_or_else(|| {
                                    ferr(format!("consul.retry.attempts: expected a number, got {a}"))
                                })?;
                                self.consul_retry_attempts = u32::try_from(n).unwrap_or(u32::MAX);
                            }
                        }
                    }
                }
                "log_level" => self.log_level = text(val).to_ascii_lowercase(),
                "max_stale" => self.max_stale = dur(&text(val)).map_err(&ferr)?,
                "block_query_wait" => self.block_query_wait = dur(&text(val)).map_err(&ferr)?,
                "kill_signal" => self.kill_signal = parse_signal(&text(val))?,
                "reload_signal" => self.reload_signal = parse_signal(&text(val))?,
                "pid_file" => self.pid_file = Some(text(val).into()),
                "once" => self.once = val.as_bool().unwrap_or(false),
                "dry" => self.dry = val.as_bool().unwrap_or(false),
                "template_error_fatal" => self.template_error_fatal = val.as_bool().unwrap_or(true),
                "wait" => self.wait = Some(wait_value(val).map_err(&ferr)?),
                "default_delimiters" => {
                    for d in blocks(val) {
                        self.default_left_delimiter = d.get("left").map(text);
                        self.default_right_delimiter = d.get("right").map(text);
                    }
                }
                "exec" => {
                    for e in blocks(val) {
                        let mut x = self.exec.clone().unwrap_or_else(default_exec);
                        if let Some(c) = e.get("command") {
                            x.command = command_value(c);
                        }
                        if let Some(s) = e.get("reload_signal") {
                            x.reload_signal = Some(parse_signal(&text(s))?).filter(|_| !text(s).is_empty());
                        }
                        if let Some(s) = e.get("kill_signal") {
                            x.kill_signal = parse_signal(&text(s))?;
                        }
                        if let Some(s) = e.get("kill_timeout") {
                            x.kill_timeout = dur(&text(s)).map_err(&ferr)?;
                        }
                        if let Some(s) = e.get("splay") {
                            x.splay = dur(&text(s)).map_err(&ferr)?;
                        }
                        self.exec = Some(x);
                    }
                }
                "template" => {
                    for t in blocks(val) {
                        self.templates.push(template_block(t).map_err(&ferr)?);
                    }
                }
                other => tracing::warn!(file, key = other, "unknown configuration key ignored"),
            }
        }
        Ok(())
    }

    /// Final checks and defaults once everything is merged.
    pub fn finish(&mut self) -> Result<(), Error> {
        if self.consul_addrs.is_empty() {
            let env = std::env::var("CONSUL_HTTP_ADDR").ok().filter(|a| !a.is_empty());
            self.consul_addrs.push(env.unwrap_or_else(|| "127.0.0.1:8500".into()));
        }
        if self.consul_token.is_none() {
            self.consul_token = std::env::var("CONSUL_HTTP_TOKEN").ok().filter(|t| !t.is_empty());
        }
        for (i, t) in self.templates.iter_mut().enumerate() {
            if t.source.is_none() && t.contents.is_none() {
                return Err(Error::NoSource(i + 1));
            }
            if t.destination.is_none() && !self.dry {
                return Err(Error::NoDestination(t.name()));
            }
            if t.left_delimiter.is_none() {
                t.left_delimiter = self.default_left_delimiter.clone();
            }
            if t.right_delimiter.is_none() {
                t.right_delimiter = self.default_right_delimiter.clone();
            }
        }
        Ok(())
    }
}

/// One `ssl { ... }` block over what earlier files set.
fn ssl_block(ssl: &mut Ssl, b: &Map<String, Value>) -> Result<(), String> {
    for (k, v) in b {
        let flag = |v: &Value| match v {
            Value::Bool(b) => Ok(*b),
            Value::String(s) => api::tls::parse_bool(s).ok_or_else(|| format!("{k}: expected a boolean, got {s:?}")),
            other => Err(format!("{k}: expected a boolean, got {other}")),
        };
        match k.as_str() {
            "enabled" => ssl.enabled = Some(flag(v)?),
            "verify" => ssl.verify = Some(flag(v)?),
            "ca_cert" => ssl.ca_cert = Some(text(v)),
            "ca_path" => ssl.ca_path = Some(text(v)),
            "cert" => ssl.cert = Some(text(v)),
            "key" => ssl.key = Some(text(v)),
            "server_name" => ssl.server_name = Some(text(v)),
            other => tracing::warn!(key = other, "unknown consul.ssl option ignored"),
        }
    }
    Ok(())
}

impl Config {
    /// The TLS an agent address is reached with, or `None` for plain HTTP. With the `ssl` block
    /// (or `-consul-ssl*` flags) enabled, its settings, for every address; otherwise Consul's
    /// environment (`CONSUL_HTTP_SSL`, `CONSUL_CACERT`, `CONSUL_CAPATH`, `CONSUL_CLIENT_CERT`,
    /// `CONSUL_CLIENT_KEY`, `CONSUL_TLS_SERVER_NAME`, `CONSUL_HTTP_SSL_VERIFY`) for an
    /// `https://` address or when `CONSUL_HTTP_SSL` is true: consul-template's client starts from
    /// Consul's `api.DefaultConfig`, which reads them, and replaces its TLS only when `ssl` is on.
    pub fn consul_tls(&self, addr: &str, env: &api::EnvTls) -> Option<api::TlsOptions> {
        if self.consul_ssl.enabled() {
            return Some(self.consul_ssl.options());
        }
        (env.ssl || addr.trim().starts_with("https://")).then(|| env.options.clone())
    }
}

fn default_exec() -> ExecConfig {
    ExecConfig {
        command: String::new(),
        reload_signal: None,
        kill_signal: libc::SIGINT,
        kill_timeout: Duration::from_secs(30),
        splay: Duration::ZERO,
    }
}

/// A block may appear once (an object) or repeatedly (a list of objects).
fn blocks(v: &Value) -> Vec<&Map<String, Value>> {
    match v {
        Value::Object(m) => vec![m],
        Value::Array(items) => items.iter().filter_map(Value::as_object).collect(),
        _ => vec![],
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `command = "a b"` or `command = ["a", "b"]` (a list is joined: we always run through `sh -c`).
fn command_value(v: &Value) -> String {
    match v {
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(" "),
        other => text(other),
    }
}

fn wait_value(v: &Value) -> Result<Wait, String> {
    if let Value::String(s) = v {
        return Wait::parse(s);
    }
    let b = blocks(v);
    let w = b.first().ok_or("wait: expected a string or a block")?;
    let min = dur(&w.get("min").map(text).unwrap_or_else(|| "0s".into()))?;
    let max = match w.get("max") {
        Some(m) => dur(&text(m))?,
        None => min * 4,
    };
    Ok(Wait { min, max })
}

/// `perms = 0600` (HCL octal, already a number), `"0600"` (a string of octal digits) or a JSON
/// number that is the mode itself.
fn perms_value(v: &Value) -> Result<u32, String> {
    match v {
        Value::Number(n) => n.as_u64().map(|n| n as u32).ok_or_else(|| format!("invalid perms {n}")),
        Value::String(s) => {
            u32::from_str_radix(s.trim_start_matches("0o"), 8).map_err(|_| format!("invalid perms {s:?}"))
        }
        other => Err(format!("invalid perms {other}")),
    }
}

fn template_block(t: &Map<String, Value>) -> Result<TemplateConfig, String> {
    let mut c = TemplateConfig::default();
    for (k, v) in t {
        match k.as_str() {
            "source" => c.source = Some(text(v).into()),
            "contents" => c.contents = Some(text(v)),
            "destination" => c.destination = Some(text(v).into()),
            "command" => c.command = Some(command_value(v)).filter(|s| !s.is_empty()),
            "command_timeout" => c.command_timeout = dur(&text(v))?,
            "exec" => {
                for e in blocks(v) {
                    if let Some(cmd) = e.get("command") {
                        c.command = Some(command_value(cmd)).filter(|s| !s.is_empty());
                    }
                    if let Some(to) = e.get("timeout") {
                        c.command_timeout = dur(&text(to))?;
                    }
                }
            }
            "perms" => c.perms = Some(perms_value(v)?),
            "backup" => c.backup = v.as_bool().unwrap_or(false),
            "create_dest_dirs" => c.create_dest_dirs = v.as_bool().unwrap_or(true),
            "wait" => c.wait = Some(wait_value(v)?),
            "left_delimiter" => c.left_delimiter = Some(text(v)),
            "right_delimiter" => c.right_delimiter = Some(text(v)),
            "error_on_missing_key" => c.error_on_missing_key = v.as_bool().unwrap_or(false),
            "sandbox_path" => c.sandbox_path = Some(text(v).into()).filter(|p: &PathBuf| !p.as_os_str().is_empty()),
            "function_denylist" | "function_blacklist" => {
                c.function_denylist = v.as_array().map(|a| a.iter().map(text).collect()).unwrap_or_default()
            }
            other => tracing::warn!(key = other, "unknown template option ignored"),
        }
    }
    Ok(c)
}

/// Reads a configuration file or every `.hcl`/`.json` file of a directory, in name order.
pub fn read_config_path(path: &std::path::Path) -> Result<Vec<(String, Value)>, Error> {
    let ferr = |message: String| Error::File { file: path.display().to_string(), message };
    let meta = std::fs::metadata(path).map_err(|e| ferr(e.to_string()))?;
    let files: Vec<PathBuf> = if meta.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| ferr(e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("hcl") | Some("json")))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for f in files {
        let name = f.display().to_string();
        let text =
            std::fs::read_to_string(&f).map_err(|e| Error::File { file: name.clone(), message: e.to_string() })?;
        let v = if text.trim_start().starts_with('{') && f.extension().and_then(|e| e.to_str()) != Some("hcl") {
            serde_json::from_str(&text).map_err(|e| Error::File { file: name.clone(), message: e.to_string() })?
        } else {
            hcl1::parse(&text).map_err(|e| Error::File { file: name.clone(), message: e.to_string() })?
        };
        out.push((name, v));
    }
    Ok(out)
}

/// The whole configuration from a command line: files named by `-config` first, then flags.
pub fn load(args: &[String]) -> Result<(Action, Config), Error> {
    let (action, flags) = parse_args(args)?;
    let mut cfg = Config::default();
    for (f, v) in &flags {
        if f == "config" {
            cfg.config_files.push(v.into());
            for (name, value) in read_config_path(std::path::Path::new(v))? {
                cfg.apply_file(&name, &value)?;
            }
        }
    }
    cfg.apply_flags(&flags)?;
    if action == Action::Run {
        cfg.finish()?;
    }
    Ok((action, cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> (Option<String>, Option<String>, Option<String>) {
        let t = TemplateConfig::parse_spec(s).unwrap();
        (t.source.map(|p| p.display().to_string()), t.destination.map(|p| p.display().to_string()), t.command)
    }

    #[test]
    fn template_specs_split_as_consul_template_splits_them() {
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            spec("/etc/nginx/conf/vhosts/test.ctmpl:/etc/nginx/conf/vhosts/test.conf:nginx -s reload"),
            (s("/etc/nginx/conf/vhosts/test.ctmpl"), s("/etc/nginx/conf/vhosts/test.conf"), s("nginx -s reload"))
        );
        assert_eq!(spec("in.ctmpl"), (s("in.ctmpl"), None, None));
        assert_eq!(spec("in:out"), (s("in"), s("out"), None));
        // More than three parts: the rest is the command, joined back with ':'.
        assert_eq!(spec("in:out:echo a:b:c"), (s("in"), s("out"), s("echo a:b:c")));
        // Empty segments vanish (a quirk consul-template has).
        assert_eq!(spec("in::cmd"), (s("in"), s("cmd"), None));
        // A drive letter stays with its path.
        assert_eq!(spec("C:\\t.ctmpl:D:\\t.conf"), (s("C:\\t.ctmpl"), s("D:\\t.conf"), None));
        assert!(TemplateConfig::parse_spec("").is_err());
    }

    #[test]
    fn retry_flags_and_block_take_effect() {
        let d = Config::default();
        assert_eq!(
            (d.consul_retry, d.consul_retry_attempts, d.retry, d.consul_retry_max_backoff, d.max_stale),
            (true, 0, Duration::from_millis(250), Duration::from_secs(60), Duration::from_secs(2)),
            "consul-template's defaults, but for retrying forever"
        );
        let args: Vec<String> = [
            "-consul-retry=false",
            "-consul-retry-attempts=3",
            "-consul-retry-backoff=1s",
            "-consul-retry-max-backoff=5s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (_, cfg) = load(&args).unwrap();
        assert_eq!(
            (cfg.consul_retry, cfg.consul_retry_attempts, cfg.retry, cfg.consul_retry_max_backoff),
            (false, 3, Duration::from_secs(1), Duration::from_secs(5))
        );
        let (_, cfg) = load(&["-retry=2s".to_string(), "-max-stale=0".to_string()]).unwrap();
        assert_eq!((cfg.retry, cfg.max_stale), (Duration::from_secs(2), Duration::ZERO));
        assert!(load(&["-consul-retry-attempts=many".to_string()]).is_err());

        let mut cfg = Config::default();
        let file = serde_json::json!({"consul": {"retry": {"enabled": true, "attempts": 0, "backoff": "100ms", "max_backoff": "2s"}}});
        cfg.apply_file("t.hcl", &file).unwrap();
        assert_eq!(
            (cfg.consul_retry, cfg.consul_retry_attempts, cfg.retry, cfg.consul_retry_max_backoff),
            (true, 0, Duration::from_millis(100), Duration::from_secs(2))
        );
    }

    #[test]
    fn ssl_flags_blocks_and_the_environment() {
        let args: Vec<String> = [
            "-consul-ssl",
            "-consul-ssl-ca-cert=/ca.pem",
            "-ssl-cert=/c.pem",
            "-ssl-key",
            "/k.pem",
            "-consul-ssl-server-name=server.dc1.consul",
            "-ssl-verify=false",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (_, cfg) = load(&args).unwrap();
        let env = api::EnvTls::default();
        let o = cfg.consul_tls("127.0.0.1:8501", &env).expect("ssl is on");
        assert_eq!(o.ca_file.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert_eq!(o.cert_file.as_deref(), Some(std::path::Path::new("/c.pem")));
        assert_eq!(o.key_file.as_deref(), Some(std::path::Path::new("/k.pem")));
        assert_eq!(o.server_name.as_deref(), Some("server.dc1.consul"));
        assert!(o.insecure_skip_verify);

        // The block, as consul-template's docs write it; any setting turns it on.
        let v = hcl1::parse(
            r#"consul {
  address = "127.0.0.1:8501"
  ssl {
    ca_cert = "/ca.pem"
    cert = "/both.pem"
  }
}"#,
        )
        .unwrap();
        let mut cfg = Config::default();
        cfg.apply_file("c.hcl", &v).unwrap();
        assert!(cfg.consul_ssl.enabled());
        let o = cfg.consul_tls("127.0.0.1:8501", &env).unwrap();
        assert_eq!(o.key_file.as_deref(), Some(std::path::Path::new("/both.pem")), "a PEM with both");
        assert!(!o.insecure_skip_verify, "verify defaults to true");
        let off = serde_json::json!({"consul": {"ssl": {"enabled": false, "ca_cert": "/ca.pem"}}});
        let mut cfg = Config::default();
        cfg.apply_file("c.json", &off).unwrap();
        assert!(!cfg.consul_ssl.enabled());
        let bad = serde_json::json!({"consul": {"ssl": {"verify": "sometimes"}}});
        assert!(Config::default().apply_file("c.json", &bad).unwrap_err().to_string().contains("consul.ssl.verify"));

        // Without the block: Consul's environment, for https:// or with CONSUL_HTTP_SSL.
        let cfg = Config::default();
        let env = api::EnvTls::from_vars(|k| (k == "CONSUL_CACERT").then(|| "/env-ca.pem".to_string()));
        assert_eq!(cfg.consul_tls("127.0.0.1:8500", &env), None);
        let o = cfg.consul_tls("https://127.0.0.1:8501", &env).unwrap();
        assert_eq!(o.ca_file.as_deref(), Some(std::path::Path::new("/env-ca.pem")));
        let ssl = api::EnvTls { ssl: true, ..env };
        assert!(cfg.consul_tls("127.0.0.1:8501", &ssl).is_some());
    }

    #[test]
    fn wait_defaults_max_to_four_times_min() {
        assert_eq!(Wait::parse("5s").unwrap(), Wait { min: Duration::from_secs(5), max: Duration::from_secs(20) });
        assert_eq!(Wait::parse("1s:3s").unwrap(), Wait { min: Duration::from_secs(1), max: Duration::from_secs(3) });
        assert!(Wait::parse("3s:1s").is_err());
        assert!(Wait::parse("soon").is_err());
    }

    #[test]
    fn flags_single_or_double_dash() {
        let args: Vec<String> = [
            "-consul-addr=127.0.0.1:8500",
            "--template",
            "a.ctmpl:a.conf:echo hi",
            "-once",
            "-wait=1s:2s",
            "-reload-signal=SIGUSR1",
            "-dry=false",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (action, cfg) = load(&args).unwrap();
        assert_eq!(action, Action::Run);
        assert_eq!(cfg.consul_addrs, vec!["127.0.0.1:8500"]);
        assert_eq!(cfg.templates.len(), 1);
        assert_eq!(cfg.templates[0].command.as_deref(), Some("echo hi"));
        assert!(cfg.once);
        assert!(!cfg.dry);
        assert_eq!(cfg.reload_signal, libc::SIGUSR1);
        assert_eq!(cfg.wait.unwrap().max, Duration::from_secs(2));
        assert_eq!(load(&["-bogus".to_string()]).unwrap_err(), Error::UnknownFlag("bogus".into()));
        assert_eq!(load(&["-template".to_string()]).unwrap_err(), Error::MissingValue("template".into()));
    }

    #[test]
    fn config_files_merge_and_flags_add_templates() {
        let v = hcl1::parse(
            r#"
consul { address = "10.0.0.1:8500" }
wait { min = "2s" max = "10s" }
template {
  source = "a.ctmpl"
  destination = "a.conf"
  perms = 0600
  command = "reload a"
  wait = "1s"
}
exec { command = "app --serve" reload_signal = "SIGHUP" }
"#,
        )
        .unwrap();
        let mut cfg = Config::default();
        cfg.apply_file("c.hcl", &v).unwrap();
        cfg.apply_flags(&[("template".into(), "b.ctmpl:b.conf".into())]).unwrap();
        cfg.finish().unwrap();
        assert_eq!(cfg.consul_addrs, vec!["10.0.0.1:8500"]);
        assert_eq!(cfg.templates.len(), 2);
        assert_eq!(cfg.templates[0].perms, Some(0o600));
        assert_eq!(cfg.templates[0].wait.unwrap().max, Duration::from_secs(4));
        assert_eq!(cfg.wait.unwrap().min, Duration::from_secs(2));
        let exec = cfg.exec.unwrap();
        assert_eq!(exec.command, "app --serve");
        assert_eq!(exec.reload_signal, Some(libc::SIGHUP));

        let j: Value =
            serde_json::from_str(r#"{"template": {"contents": "x", "destination": "o", "perms": "0640"}}"#).unwrap();
        let mut cfg = Config::default();
        cfg.apply_file("c.json", &j).unwrap();
        assert_eq!(cfg.templates[0].perms, Some(0o640));
    }
}
