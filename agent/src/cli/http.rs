//! The CLI's one door to the agent: the shared `api` client plus the global HTTP flags
//! (`-http-addr`, `-token`, `-datacenter`, `-stale`, and TLS: `-ca-file`, `-ca-path`,
//! `-client-cert`, `-client-key`, `-tls-server-name` over Consul's `CONSUL_CACERT`,
//! `CONSUL_CAPATH`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`, `CONSUL_TLS_SERVER_NAME`,
//! `CONSUL_HTTP_SSL` and `CONSUL_HTTP_SSL_VERIFY`), and errors worded like Consul's Go client
//! (`Get "http://127.0.0.1:8500/v1/...": dial tcp 127.0.0.1:8500: connect: connection refused`,
//! `... remote error: tls: certificate required`).

use super::flags::Parsed;
use api::client::Response;
use http::Method;
use serde::de::DeserializeOwned;
use std::fmt;
use std::time::Duration;

pub(super) const DEFAULT_ADDR: &str = "127.0.0.1:8500";

/// A failed call, printed the way Consul's CLI prints the Go client's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CallError {
    /// The request never got an answer; the text is already Go-shaped.
    Transport(String),
    /// A non-2xx answer.
    Status { code: u16, body: String },
    /// An answer that did not decode.
    Decode(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Transport(m) | CallError::Decode(m) => f.write_str(m),
            CallError::Status { code, body } => write!(f, "Unexpected response code: {code} ({body})"),
        }
    }
}

/// `-http-addr` value, else `CONSUL_HTTP_ADDR`, else the default; `host:port`, `http://...` or
/// `https://...`.
pub(super) fn http_addr(flag: Option<&str>, env: Option<String>) -> String {
    let raw = flag.map(str::to_string).or(env).filter(|s| !s.trim().is_empty());
    let raw = raw.unwrap_or_else(|| DEFAULT_ADDR.to_string());
    raw.trim().trim_end_matches('/').to_string()
}

/// Whether the CLI speaks HTTPS to `addr`: an `https://` address, or `CONSUL_HTTP_SSL=true`
/// (which an `http://` prefix does not undo, as in Consul's client).
pub(super) fn wants_https(addr: &str, ssl_env: bool) -> bool {
    addr.starts_with("https://") || ssl_env
}

/// The TLS flags over Consul's environment, setting by setting.
pub(super) fn tls_options(p: &Parsed, env: &api::EnvTls) -> api::TlsOptions {
    let path = |name: &str| p.str(name).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    api::TlsOptions {
        ca_file: path("ca-file"),
        ca_path: path("ca-path"),
        cert_file: path("client-cert"),
        key_file: path("client-key"),
        server_name: p.str("tls-server-name").filter(|v| !v.is_empty()).map(str::to_string),
        insecure_skip_verify: false,
    }
    .or(&env.options)
}

/// A GET's answer as JSON with its index; a 404 is `None`.
fn decode_answer<T: DeserializeOwned>(
    path: &str,
    sent: Result<Response, CallError>,
) -> Result<Option<(T, u64)>, CallError> {
    match sent {
        Ok(resp) => {
            let index = resp.meta().last_index;
            let v = serde_json::from_slice(&resp.body)
                .map_err(|e| CallError::Decode(format!("decoding the answer from {path}: {e}")))?;
            Ok(Some((v, index)))
        }
        Err(CallError::Status { code: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn go_op(m: &Method) -> String {
    let s = m.as_str();
    let mut out = s[..1].to_string();
    out.push_str(&s[1..].to_lowercase());
    out
}

/// Go's wording for a dial error, from the io error at the bottom of the chain.
fn io_detail(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return Some(match io.kind() {
                ConnectionRefused => "connect: connection refused".to_string(),
                ConnectionReset => "read: connection reset by peer".to_string(),
                TimedOut => "i/o timeout".to_string(),
                AddrNotAvailable => "connect: cannot assign requested address".to_string(),
                PermissionDenied => "connect: permission denied".to_string(),
                UnexpectedEof => "EOF".to_string(),
                _ => {
                    let mut m = io.to_string();
                    if let Some(p) = m.find(" (os error") {
                        m.truncate(p);
                    }
                    m.to_lowercase()
                }
            });
        }
        cur = e.source();
    }
    None
}

pub(super) fn transport_message(method: &Method, url: &str, addr: &str, err: &api::Error) -> String {
    let op = go_op(method);
    // A failed handshake or a refused certificate, in Go's words, before the io error under it.
    let tls = match err {
        api::Error::Transport { source, .. } => api::tls::go_tls_text(source),
        api::Error::Body { source, .. } => api::tls::go_tls_text(source),
        _ => None,
    };
    if let Some(t) = tls {
        return format!("{op} \"{url}\": {t}");
    }
    match err {
        api::Error::Transport { source, .. } => {
            let detail = io_detail(source).unwrap_or_else(|| {
                // Walk to the innermost message: hyper's outer ones say little.
                let mut msg = source.to_string();
                let mut cur = std::error::Error::source(source);
                while let Some(e) = cur {
                    msg = e.to_string();
                    cur = e.source();
                }
                msg
            });
            if source.is_connect() {
                format!("{op} \"{url}\": dial tcp {addr}: {detail}")
            } else {
                format!("{op} \"{url}\": {detail}")
            }
        }
        api::Error::Body { source, .. } => {
            let detail = io_detail(source).unwrap_or_else(|| "unexpected EOF".to_string());
            format!("{op} \"{url}\": {detail}")
        }
        api::Error::Timeout { .. } => {
            format!("{op} \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)")
        }
        api::Error::Address(a) => format!("{op} \"{url}\": invalid address {a}"),
        other => format!("{op} \"{url}\": {other}"),
    }
}

/// The token as Consul's Go client picks it: `-token`, else `CONSUL_HTTP_TOKEN`; but a token
/// file (`-token-file`, else `CONSUL_HTTP_TOKEN_FILE`) that holds a token always wins over both,
/// and one that cannot be read is an error (`api.NewClient`).
pub(super) fn resolve_token(
    token: Option<String>,
    file: Option<String>,
    read: impl Fn(&str) -> std::io::Result<String>,
) -> Result<Option<String>, String> {
    if let Some(f) = file.filter(|f| !f.is_empty()) {
        let text = read(&f).map_err(|e| format!("Error loading token file: {}", go_open_error(&f, &e)))?;
        let text = text.trim();
        if !text.is_empty() {
            return Ok(Some(text.to_string()));
        }
    }
    Ok(token.filter(|t| !t.is_empty()))
}

/// Go's `*PathError` text for a failed open: `open /x: no such file or directory`.
pub(super) fn go_open_error(path: &str, e: &std::io::Error) -> String {
    let detail = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        std::io::ErrorKind::IsADirectory => return format!("read {path}: is a directory"),
        _ => {
            let mut m = e.to_string();
            if let Some(p) = m.find(" (os error") {
                m.truncate(p);
            }
            m.to_lowercase()
        }
    };
    format!("open {path}: {detail}")
}

pub(super) struct Ctx {
    pub client: api::Client,
    /// `host:port`
    pub addr: String,
    pub dc: Option<String>,
    pub stale: bool,
}

impl Ctx {
    /// Builds the client from the global flags; the error completes
    /// `Error connecting to Consul agent: ...`.
    pub fn new(p: &Parsed) -> Result<Ctx, String> {
        let raw = http_addr(p.str("http-addr"), std::env::var("CONSUL_HTTP_ADDR").ok());
        if raw.starts_with("unix://") {
            return Err(format!("{raw}: unix sockets are not supported"));
        }
        let env = api::EnvTls::from_env();
        let token = resolve_token(
            // An empty `-token=` leaves the environment's (Go's client falls back to it).
            p.str("token")
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .or_else(|| std::env::var("CONSUL_HTTP_TOKEN").ok()),
            p.str("token-file").map(str::to_string).or_else(|| std::env::var("CONSUL_HTTP_TOKEN_FILE").ok()),
            |f| std::fs::read_to_string(f),
        )?;
        let client = if wants_https(&raw, env.ssl) {
            let tls = tls_options(p, &env).load().map_err(|e| e.to_string())?;
            api::Client::https(&raw, &tls)
        } else {
            api::Client::new(&raw)
        };
        let client = client.map_err(|e| e.to_string())?.with_token(token);
        let addr = client.addr().to_string();
        let dc = p.str("datacenter").map(str::to_string).filter(|d| !d.is_empty());
        Ok(Ctx { client, addr, dc, stale: p.bool("stale") })
    }

    /// `path?query` with the datacenter (and `stale` for reads that allow it) added.
    pub fn path_and_query(&self, path: &str, extra: &[(String, String)], stale_ok: bool) -> String {
        let mut pairs = extra.to_vec();
        if let Some(dc) = &self.dc {
            pairs.push(("dc".into(), dc.clone()));
        }
        if stale_ok && self.stale {
            pairs.push(("stale".into(), String::new()));
        }
        format!("{}{}", api::query::encode_path(path), api::query::query_string(&pairs))
    }

    pub fn url(&self, pq: &str) -> String {
        format!("{}{}", self.client.base(), pq)
    }

    /// One request; any non-2xx answer is an error.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        extra: &[(String, String)],
        body: Option<Vec<u8>>,
        stale_ok: bool,
        timeout: Option<Duration>,
    ) -> Result<Response, CallError> {
        let pq = self.path_and_query(path, extra, stale_ok);
        let resp = self
            .client
            .request(method.clone(), &pq, body.map(Into::into), timeout)
            .await
            .map_err(|e| CallError::Transport(transport_message(&method, &self.url(&pq), &self.addr, &e)))?;
        if !(200..300).contains(&resp.status) {
            let (code, body) = status_body(resp.status, &resp.body);
            return Err(CallError::Status { code, body });
        }
        Ok(resp)
    }

    /// A GET decoded as JSON, with its `X-Consul-Index`; a 404 is `None`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        extra: &[(String, String)],
        stale_ok: bool,
    ) -> Result<Option<(T, u64)>, CallError> {
        decode_answer(path, self.send(Method::GET, path, extra, None, stale_ok, None).await)
    }

    /// A blocking GET (`?index=&wait=`), for `lock`'s monitors.
    pub async fn get_blocking<T: DeserializeOwned>(
        &self,
        path: &str,
        extra: &[(String, String)],
        index: u64,
        wait: Duration,
    ) -> Result<Option<(T, u64)>, CallError> {
        let mut pairs = extra.to_vec();
        if index > 0 {
            pairs.push(("index".into(), index.to_string()));
            pairs.push(("wait".into(), format!("{}ms", wait.as_millis())));
        }
        let timeout = Some(wait + wait / 16 + Duration::from_secs(5));
        decode_answer(path, self.send(Method::GET, path, &pairs, None, false, timeout).await)
    }

    pub async fn put(
        &self,
        path: &str,
        extra: &[(String, String)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, CallError> {
        self.send(Method::PUT, path, extra, body, false, None).await
    }

    /// The agent's node name (`Config.NodeName` of `/v1/agent/self`): Consul's commands call this
    /// first to check that the agent answers.
    pub async fn node_name(&self) -> Result<String, CallError> {
        let got: Option<(serde_json::Value, u64)> = self.get("/v1/agent/self", &[], false).await?;
        Ok(got
            .and_then(|(v, _)| v.pointer("/Config/NodeName").and_then(|n| n.as_str()).map(str::to_string))
            .unwrap_or_default())
    }
}

fn status_body(code: u16, body: &[u8]) -> (u16, String) {
    (code, String::from_utf8_lossy(body).trim().to_string())
}

/// Whether a PUT/DELETE answer is Consul's `true`.
pub(super) fn is_true(resp: &Response) -> bool {
    String::from_utf8_lossy(&resp.body).trim() == "true"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_from_flag_env_or_default() {
        assert_eq!(http_addr(None, None), "127.0.0.1:8500");
        assert_eq!(http_addr(None, Some("http://10.0.0.1:8500/".into())), "http://10.0.0.1:8500");
        assert_eq!(http_addr(Some("127.0.0.71:8571"), Some("10.0.0.1:8500".into())), "127.0.0.71:8571");
        assert_eq!(http_addr(Some("https://127.0.0.71:8571"), None), "https://127.0.0.71:8571");
        assert_eq!(http_addr(Some(""), None), "127.0.0.1:8500");
        assert!(wants_https("https://h:8501", false));
        assert!(wants_https("h:8501", true) && wants_https("http://h:8501", true), "CONSUL_HTTP_SSL is not undone");
        assert!(!wants_https("http://h:8500", false) && !wants_https("h:8500", false));
    }

    #[test]
    fn tls_flags_win_over_the_environment() {
        let p = super::super::flags::parse(
            &["-ca-file=/flag-ca.pem".to_string(), "-tls-server-name".to_string(), "server.dc1.consul".to_string()],
            &[],
            &[],
        )
        .unwrap();
        let env = api::EnvTls::from_vars(|k| match k {
            "CONSUL_CACERT" => Some("/env-ca.pem".into()),
            "CONSUL_CLIENT_CERT" => Some("/env-cert.pem".into()),
            "CONSUL_HTTP_SSL_VERIFY" => Some("false".into()),
            _ => None,
        });
        let o = tls_options(&p, &env);
        assert_eq!(o.ca_file.as_deref(), Some(std::path::Path::new("/flag-ca.pem")));
        assert_eq!(o.cert_file.as_deref(), Some(std::path::Path::new("/env-cert.pem")));
        assert_eq!(o.server_name.as_deref(), Some("server.dc1.consul"));
        assert!(o.insecure_skip_verify);
    }

    #[test]
    fn a_token_file_wins_over_a_token_as_in_consuls_client() {
        let read = |f: &str| match f {
            "good" => Ok(" file-token\n".to_string()),
            "empty" => Ok("\n".to_string()),
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        let s = |v: &str| Some(v.to_string());
        assert_eq!(resolve_token(s("flag"), None, read), Ok(s("flag")));
        assert_eq!(resolve_token(s("flag"), s("good"), read), Ok(s("file-token")));
        assert_eq!(resolve_token(s("flag"), s("empty"), read), Ok(s("flag")));
        assert_eq!(resolve_token(None, None, read), Ok(None));
        assert_eq!(resolve_token(s(""), s(""), read), Ok(None));
        assert_eq!(
            resolve_token(s("flag"), s("/nope"), read),
            Err("Error loading token file: open /nope: no such file or directory".to_string())
        );
    }

    #[test]
    fn status_errors_read_like_consuls_client() {
        let e = CallError::Status { code: 500, body: "No cluster leader".into() };
        assert_eq!(e.to_string(), "Unexpected response code: 500 (No cluster leader)");
        assert_eq!(go_op(&Method::GET), "Get");
        assert_eq!(go_op(&Method::DELETE), "Delete");
    }

    #[tokio::test]
    async fn connection_refused_reads_like_go() {
        // Bind then drop a listener to get a port nobody listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let p = super::super::flags::parse(&[format!("-http-addr={addr}")], &[], &[]).unwrap();
        let ctx = Ctx::new(&p).unwrap();
        let err = ctx.get::<serde_json::Value>("/v1/agent/members", &[], false).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Get \"http://{addr}/v1/agent/members\": dial tcp {addr}: connect: connection refused")
        );
    }
}
