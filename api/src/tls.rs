//! TLS toward the agent's HTTPS API, as Consul's Go client configures it (`api.TLSConfig`): a CA
//! file or a directory of CA files (else the system's trust store), a client certificate and
//! key, a name to check the agent's certificate against instead of the address's host, and
//! "do not verify" only when the caller asks for it (`CONSUL_HTTP_SSL_VERIFY=false`).
//!
//! [`TlsOptions::load`] reads the files once; the [`Tls`] it returns is shared by every client
//! made with it (lb makes one per agent it finds). Like the rest of this crate it knows nothing
//! of the agent: only rustls (with ring) and the files it is given.

use crate::client::Error;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// What a client needs to speak TLS to an agent. Empty: the system's roots, no certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// A PEM file of CA certificates (`-ca-file`, `CONSUL_CACERT`).
    pub ca_file: Option<PathBuf>,
    /// A directory of PEM files of CA certificates (`-ca-path`, `CONSUL_CAPATH`).
    pub ca_path: Option<PathBuf>,
    /// The client certificate, PEM (`-client-cert`, `CONSUL_CLIENT_CERT`).
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM (`-client-key`, `CONSUL_CLIENT_KEY`).
    pub key_file: Option<PathBuf>,
    /// The name the agent's certificate must carry, and the SNI sent; default: the address's host
    /// (`-tls-server-name`, `CONSUL_TLS_SERVER_NAME`).
    pub server_name: Option<String>,
    /// Accept any certificate. Only ever set because a user asked (`CONSUL_HTTP_SSL_VERIFY=false`,
    /// consul-template's `ssl { verify = false }`).
    pub insecure_skip_verify: bool,
}

/// Consul's environment for its HTTP clients (`api.DefaultConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvTls {
    pub options: TlsOptions,
    /// `CONSUL_HTTP_SSL=true`: speak HTTPS to an address given as a bare `host:port`.
    pub ssl: bool,
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl EnvTls {
    /// Reads `CONSUL_CACERT`, `CONSUL_CAPATH`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`,
    /// `CONSUL_TLS_SERVER_NAME`, `CONSUL_HTTP_SSL_VERIFY` and `CONSUL_HTTP_SSL` from the process
    /// environment.
    pub fn from_env() -> EnvTls {
        EnvTls::from_vars(|k| std::env::var(k).ok())
    }

    /// The same from any lookup. As in Go's client, a boolean that does not parse is ignored
    /// with a warning, and empty values count as unset.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> EnvTls {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let flag = |k: &str| {
            let v = get(k)?;
            let parsed = parse_bool(&v);
            if parsed.is_none() {
                tracing::warn!("could not parse {k}={v:?} as a boolean; ignored");
            }
            parsed
        };
        EnvTls {
            options: TlsOptions {
                ca_file: get("CONSUL_CACERT").map(PathBuf::from),
                ca_path: get("CONSUL_CAPATH").map(PathBuf::from),
                cert_file: get("CONSUL_CLIENT_CERT").map(PathBuf::from),
                key_file: get("CONSUL_CLIENT_KEY").map(PathBuf::from),
                server_name: get("CONSUL_TLS_SERVER_NAME"),
                insecure_skip_verify: flag("CONSUL_HTTP_SSL_VERIFY") == Some(false),
            },
            ssl: flag("CONSUL_HTTP_SSL") == Some(true),
        }
    }
}

/// A loaded TLS client configuration, cheap to clone.
#[derive(Clone)]
pub struct Tls {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("server_name", &self.server_name).finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(what: &'static str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::TlsFile { what, path: path.display().to_string(), message: e.to_string() }
}

/// Certificates of one PEM file; a file without any is an error.
fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    std::fs::metadata(path).map_err(|e| file_error(what, path, io_text(&e)))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// An io error without Rust's " (os error 2)" tail: `no such file or directory`.
fn io_text(e: &std::io::Error) -> String {
    let mut m = e.to_string();
    if let Some(p) = m.find(" (os error") {
        m.truncate(p);
    }
    m.to_lowercase()
}

/// The system's trust store, read once per process.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!("system trust store: {e}");
            }
            let mut store = RootCertStore::empty();
            let (_, ignored) = store.add_parsable_certificates(found.certs);
            if ignored > 0 {
                tracing::debug!(ignored, "system trust store: certificates that do not parse were skipped");
            }
            Arc::new(store)
        })
        .clone()
}

impl TlsOptions {
    /// Whether anything here differs from the defaults.
    pub fn is_empty(&self) -> bool {
        self == &TlsOptions::default()
    }

    /// `self`, with each setting it lacks taken from `fallback` (flags over the environment).
    pub fn or(self, fallback: &TlsOptions) -> TlsOptions {
        TlsOptions {
            ca_file: self.ca_file.or_else(|| fallback.ca_file.clone()),
            ca_path: self.ca_path.or_else(|| fallback.ca_path.clone()),
            cert_file: self.cert_file.or_else(|| fallback.cert_file.clone()),
            key_file: self.key_file.or_else(|| fallback.key_file.clone()),
            server_name: self.server_name.or_else(|| fallback.server_name.clone()),
            insecure_skip_verify: self.insecure_skip_verify || fallback.insecure_skip_verify,
        }
    }

    /// The CA certificates of `ca_file` and of every file in `ca_path` (as Go's rootcerts reads
    /// a directory: each regular file, in name order), or `None` when neither is set.
    fn roots(&self) -> Result<Option<RootCertStore>, Error> {
        let mut files: Vec<(&'static str, PathBuf)> =
            self.ca_file.iter().map(|f| ("reading CA file", f.clone())).collect();
        if let Some(dir) = &self.ca_path {
            let rd = std::fs::read_dir(dir).map_err(|e| file_error("reading CA path", dir, io_text(&e)))?;
            let mut found: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
            found.sort();
            if found.is_empty() {
                return Err(file_error("reading CA path", dir, "no files in the directory"));
            }
            files.extend(found.into_iter().map(|f| ("reading CA file", f)));
        }
        if files.is_empty() {
            return Ok(None);
        }
        let mut store = RootCertStore::empty();
        for (what, f) in &files {
            for c in read_certs(what, f)? {
                store.add(c).map_err(|e| file_error(what, f, e))?;
            }
        }
        Ok(Some(store))
    }

    /// Reads the files and builds the client configuration. Every failure names its file.
    pub fn load(&self) -> Result<Tls, Error> {
        let provider = provider();
        let roots = match self.roots()? {
            Some(r) => Arc::new(r),
            None => system_roots(),
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?;
        let builder = if self.insecure_skip_verify {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider.clone())))
        } else {
            builder.with_root_certificates(roots)
        };
        // ALPN is set by the connector that uses this.
        let config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let certs = read_certs("reading client certificate", cert)?;
                std::fs::metadata(key).map_err(|e| file_error("reading client key", key, io_text(&e)))?;
                let key_der =
                    PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("reading client key", key, e))?;
                builder
                    .with_client_auth_cert(certs, key_der)
                    .map_err(|e| file_error("using client certificate", cert, e))?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), None) => {
                return Err(Error::Tls(format!("client certificate {} given without a client key", cert.display())))
            }
            (None, Some(key)) => {
                return Err(Error::Tls(format!("client key {} given without a client certificate", key.display())))
            }
        };
        let server_name = match self.server_name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            None => None,
            Some(n) => {
                // Go accepts "host:port" here and drops the port.
                let host = match n.rsplit_once(':') {
                    Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
                    _ => n,
                };
                let host = host.trim_start_matches('[').trim_end_matches(']');
                Some(
                    ServerName::try_from(host.to_string())
                        .map_err(|_| Error::Tls(format!("invalid TLS server name {n:?}")))?,
                )
            }
        };
        Ok(Tls { config: Arc::new(config), server_name })
    }
}

impl Tls {
    /// The system's roots, no client certificate: what an `https://` address gets when nothing
    /// else is said.
    pub fn system() -> Tls {
        static SYSTEM: OnceLock<Tls> = OnceLock::new();
        SYSTEM
            .get_or_init(|| {
                TlsOptions::default().load().unwrap_or_else(|_| {
                    // Loading no files cannot fail; keep a usable value regardless.
                    let config = ClientConfig::builder_with_provider(provider())
                        .with_safe_default_protocol_versions()
                        .map(|b| b.with_root_certificates(RootCertStore::empty()).with_no_client_auth())
                        .unwrap_or_else(|_| {
                            ClientConfig::builder().with_root_certificates(RootCertStore::empty()).with_no_client_auth()
                        });
                    Tls { config: Arc::new(config), server_name: None }
                })
            })
            .clone()
    }

    /// The rustls configuration, for callers that open their own connections.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

/// A configuration that trusts nothing, for the connector of a client that only dials plain
/// HTTP (it never reads the system's trust store).
pub(crate) fn unused_config() -> Arc<ClientConfig> {
    static UNUSED: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    UNUSED
        .get_or_init(|| {
            let b = ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions();
            Arc::new(match b {
                Ok(b) => b.with_root_certificates(RootCertStore::empty()).with_no_client_auth(),
                Err(_) => ClientConfig::builder().with_root_certificates(RootCertStore::empty()).with_no_client_auth(),
            })
        })
        .clone()
}

/// Accepts any certificate (signatures are still checked, so the handshake itself is sound):
/// `-ssl-verify=false` here, `TLSSkipVerify` in the agent's checks.
#[derive(Debug)]
pub struct NoVerify(pub Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Go's words for a TLS failure found in `err`'s chain (`x509: certificate signed by unknown
/// authority`, `remote error: tls: certificate required`), for callers that print errors the way
/// Consul's tools do; `None` if the chain holds no TLS error.
pub fn go_tls_text(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(e) = find_tls_error(err, 0) {
        return Some(go_words(e));
    }
    // rustls reports an alert that arrives after the handshake (TLS 1.3 servers refuse a missing
    // client certificate then) as an io error holding only its text.
    let mut cur = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if let Some(name) = text.strip_prefix("received fatal alert: ") {
            return Some(alert_words(name));
        }
        cur = e.source();
    }
    None
}

/// Go's text for an alert, by rustls's name for it (`CertificateRequired`).
fn alert_words(name: &str) -> String {
    let what = match name {
        "CertificateRequired" => "certificate required",
        "BadCertificate" => "bad certificate",
        "UnknownCA" => "unknown certificate authority",
        "HandshakeFailure" => "handshake failure",
        "CertificateExpired" => "expired certificate",
        "DecryptError" => "error decrypting message",
        "ProtocolVersion" => "protocol version not supported",
        other => return format!("remote error: tls: {other}"),
    };
    format!("remote error: tls: {what}")
}

/// The rustls error in `err`'s chain. An `io::Error` hides what it wraps from `source()` (it
/// skips to the wrapped error's own source), and connectors wrap io errors in io errors, so
/// those are opened with `get_ref`.
fn find_tls_error<'a>(err: &'a (dyn std::error::Error + 'static), depth: usize) -> Option<&'a rustls::Error> {
    if depth > 16 {
        return None;
    }
    if let Some(t) = err.downcast_ref::<rustls::Error>() {
        return Some(t);
    }
    if let Some(inner) = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
        let inner: &'a (dyn std::error::Error + 'static) = inner;
        if let Some(t) = find_tls_error(inner, depth + 1) {
            return Some(t);
        }
    }
    err.source().and_then(|s| find_tls_error(s, depth + 1))
}

fn go_words(e: &rustls::Error) -> String {
    use rustls::{CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(c) => {
            let why = match c {
                C::UnknownIssuer => "x509: certificate signed by unknown authority".to_string(),
                C::Expired | C::ExpiredContext { .. } => "x509: certificate has expired".to_string(),
                C::NotValidYet | C::NotValidYetContext { .. } => "x509: certificate is not valid yet".to_string(),
                C::NotValidForName => "x509: certificate is not valid for the requested name".to_string(),
                C::NotValidForNameContext { expected, presented } => {
                    let expected = match expected {
                        ServerName::DnsName(d) => d.as_ref().to_string(),
                        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
                        other => format!("{other:?}"),
                    };
                    format!("x509: certificate is valid for {}, not {expected}", presented.join(", "))
                }
                other => format!("x509: {other:?}"),
            };
            format!("tls: failed to verify certificate: {why}")
        }
        E::AlertReceived(a) => alert_words(&format!("{a:?}")),
        // What a plain HTTP server answers to a TLS hello.
        E::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            "http: server gave HTTP response to HTTPS client".to_string()
        }
        other => format!("tls: {other}"),
    }
}
