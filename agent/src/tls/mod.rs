//! TLS with rustls (ring): the HTTPS API, the server port's TLS side, and the client side of
//! every connection an agent makes to a server port. Consul's settings, in its `tls { defaults
//! internal_rpc https }` block or the old flat keys, become one [`TlsSettings`] per side.
//!
//! - `verify_incoming`: a peer must present a certificate signed by the CA (HTTPS: every client;
//!   server port: every agent); plain connections to the server port are refused.
//! - `verify_outgoing`: this agent talks TLS to server ports, checking the server's certificate
//!   against the CA; with `verify_server_hostname` also that it is named `server.<dc>.<domain>`
//!   (so a client certificate cannot pose as a server).
//! - Certificates are read again on SIGHUP (`Tls::reload`); connections already open keep the
//!   configuration they started with.
//!
//! - `enable_agent_tls_for_checks`: HTTPS and gRPC health checks trust the agent's CA and present
//!   its certificate ([`CheckIdentity`]); without it they trust the system's roots and present
//!   nothing, as Consul's `OutgoingTLSConfigForCheck` does.
//!
//! `certs` makes the CA and the agents' certificates (`agent tls ca|cert create`).

pub mod certs;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Config(String),
    #[error("reading {path}: {message}")]
    File { path: String, message: String },
}

/// One side's settings (HTTPS, or the server port), after Consul's precedence: the side's own
/// block, then `tls.defaults`, then the old flat keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub ca_path: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub verify_incoming: bool,
    pub verify_outgoing: bool,
    pub verify_server_hostname: bool,
    /// `TLSv1_2` (default) or `TLSv1_3`.
    pub min_version: Option<String>,
    /// Comma-separated TLS 1.2 suites, Go's names (`TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`).
    pub cipher_suites: Option<String>,
}

impl TlsSettings {
    pub fn has_cert(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }
}

/// The TLS part of the agent's configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsConfig {
    pub internal_rpc: TlsSettings,
    pub https: TlsSettings,
    /// `server.<datacenter>.<domain>`: the name servers' certificates carry.
    pub server_name: String,
    /// `enable_agent_tls_for_checks`: health checks use the server port's CA and certificate.
    pub agent_tls_for_checks: bool,
}

impl TlsConfig {
    /// Whether anything here turns TLS on.
    pub fn any(&self) -> bool {
        self.internal_rpc.has_cert() || self.internal_rpc.verify_outgoing || self.https.has_cert()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.display().to_string(), message: e.to_string() }
}

/// The CA certificates of `ca_file` and every `.pem`/`.crt` in `ca_path`.
fn roots(s: &TlsSettings) -> Result<Option<Arc<RootCertStore>>, TlsError> {
    let mut files: Vec<PathBuf> = s.ca_file.iter().cloned().collect();
    if let Some(dir) = &s.ca_path {
        let rd = std::fs::read_dir(dir).map_err(|e| read_err(dir, e))?;
        let mut found: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("pem" | "crt")))
            .collect();
        found.sort();
        files.extend(found);
    }
    if files.is_empty() {
        return Ok(None);
    }
    let mut store = RootCertStore::empty();
    for f in &files {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(f)
            .map_err(|e| read_err(f, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| read_err(f, e))?;
        if certs.is_empty() {
            return Err(read_err(f, "no certificate in the file"));
        }
        for c in certs {
            store.add(c).map_err(|e| read_err(f, e))?;
        }
    }
    Ok(Some(Arc::new(store)))
}

fn cert_and_key(s: &TlsSettings) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
    let (Some(cert), Some(key)) = (&s.cert_file, &s.key_file) else {
        if s.cert_file.is_some() != s.key_file.is_some() {
            return Err(TlsError::Config("cert_file and key_file must be given together".into()));
        }
        return Ok(None);
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read_err(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_err(cert, e))?;
    if certs.is_empty() {
        return Err(read_err(cert, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read_err(key, e))?;
    Ok(Some((certs, key)))
}

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn versions(s: &TlsSettings) -> Result<&'static [&'static rustls::SupportedProtocolVersion], TlsError> {
    match s.min_version.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("tlsv1_2") | Some("tls12") => Ok(rustls::ALL_VERSIONS),
        Some("tlsv1_3") | Some("tls13") => Ok(TLS13_ONLY),
        // Older versions are not offered at all: asking for them as a minimum gets TLS 1.2.
        Some("tlsv1_0") | Some("tlsv1_1") | Some("tls10") | Some("tls11") => Ok(rustls::ALL_VERSIONS),
        Some(other) => Err(TlsError::Config(format!(
            "tls_min_version: invalid value {other:?}, must be one of TLSv1_0, TLSv1_1, TLSv1_2, TLSv1_3"
        ))),
    }
}

/// The crypto provider with the suites `tls_cipher_suites` names (TLS 1.3 suites are always
/// offered, as Go does).
fn provider_for(s: &TlsSettings) -> Result<Arc<CryptoProvider>, TlsError> {
    let mut p = rustls::crypto::ring::default_provider();
    if let Some(list) = s.cipher_suites.as_deref().filter(|l| !l.trim().is_empty()) {
        let wanted: Vec<String> = list.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect();
        for w in &wanted {
            if !p.cipher_suites.iter().any(|cs| format!("{:?}", cs.suite()) == *w) {
                return Err(TlsError::Config(format!("tls_cipher_suites: unsupported cipher suite {w:?}")));
            }
        }
        p.cipher_suites.retain(|cs| {
            cs.version() == &rustls::version::TLS13 || wanted.iter().any(|w| format!("{:?}", cs.suite()) == *w)
        });
    }
    Ok(Arc::new(p))
}

/// A server configuration for one side, or `None` if it has no certificate.
fn server_config(s: &TlsSettings) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    let Some((certs, key)) = cert_and_key(s)? else {
        if s.verify_incoming {
            return Err(TlsError::Config("verify_incoming needs cert_file and key_file".into()));
        }
        return Ok(None);
    };
    let roots = roots(s)?;
    let provider = provider_for(s)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(s)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (&roots, s.verify_incoming) {
        (Some(r), true) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(r.clone(), provider)
                .build()
                .map_err(|e| TlsError::Config(format!("ca_file: {e}")))?,
        ),
        (None, true) => return Err(TlsError::Config("verify_incoming needs ca_file or ca_path".into())),
        (_, false) => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(certs, key).map_err(|e| TlsError::Config(format!("cert_file: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(cfg)))
}

/// Checks a server's chain against the CA, and its name only with `verify_server_hostname`.
#[derive(Debug)]
struct ServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }))
                if !self.check_name =>
            {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The client side toward server ports, or `None` without `verify_outgoing`.
fn client_config(s: &TlsSettings) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    if !s.verify_outgoing {
        if s.verify_server_hostname {
            // Consul's old bug (#5069): hostname checks without TLS protected nothing.
            return Err(TlsError::Config("verify_server_hostname needs verify_outgoing".into()));
        }
        return Ok(None);
    }
    let roots = roots(s)?.ok_or_else(|| TlsError::Config("verify_outgoing needs ca_file or ca_path".into()))?;
    let provider = provider_for(s)?;
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsError::Config(format!("ca_file: {e}")))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(s)?)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerVerifier { inner, check_name: s.verify_server_hostname }));
    // ALPN is left to the connector that uses it.
    let cfg = match cert_and_key(s)? {
        Some((certs, key)) => {
            builder.with_client_auth_cert(certs, key).map_err(|e| TlsError::Config(format!("cert_file: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(cfg)))
}

/// What HTTPS and gRPC-over-TLS health checks trust and present: the agent's CA (else the
/// system's roots) and its certificate, read from one side's settings.
#[derive(Debug, Clone, Default)]
pub struct CheckIdentity {
    pub roots: Option<Arc<RootCertStore>>,
    pub cert: Option<Arc<rustls::sign::CertifiedKey>>,
}

impl CheckIdentity {
    /// The CA and certificate of `s` (for `enable_agent_tls_for_checks`: `tls.internal_rpc`
    /// over `tls.defaults`, as Consul takes them). Every failure names its file.
    pub fn load(s: &TlsSettings) -> Result<CheckIdentity, TlsError> {
        let roots = roots(s)?;
        let cert = match cert_and_key(s)? {
            Some((certs, key)) => {
                let signer = provider()
                    .key_provider
                    .load_private_key(key)
                    .map_err(|e| TlsError::Config(format!("key_file: {e}")))?;
                Some(Arc::new(rustls::sign::CertifiedKey::new(certs, signer)))
            }
            None => None,
        };
        Ok(CheckIdentity { roots, cert })
    }
}

/// The system's trust store (what Go's checks trust without `enable_agent_tls_for_checks`),
/// read once.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: std::sync::OnceLock<Arc<RootCertStore>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            store.add_parsable_certificates(found.certs);
            Arc::new(store)
        })
        .clone()
}

/// A health check's client configuration: `identity`'s roots (else the system's) and
/// certificate, `skip_verify` for `TLSSkipVerify`, and the ALPN protocols of the check's kind.
pub fn check_client_config(
    identity: &CheckIdentity,
    skip_verify: bool,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(api::tls::NoVerify(provider)))
    } else {
        builder.with_root_certificates(identity.roots.clone().unwrap_or_else(system_roots))
    };
    let mut cfg = match &identity.cert {
        Some(c) => builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(c.clone()))),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// The loaded configurations; [`Tls::reload`] swaps them.
pub struct Tls {
    config: TlsConfig,
    rpc_server: parking_lot::RwLock<Option<Arc<ServerConfig>>>,
    https_server: parking_lot::RwLock<Option<Arc<ServerConfig>>>,
    rpc_client: parking_lot::RwLock<Option<Arc<ClientConfig>>>,
}

impl Tls {
    pub fn load(config: TlsConfig) -> Result<Tls, TlsError> {
        let rpc_server = server_config(&config.internal_rpc)?;
        let https_server = server_config(&config.https)?;
        let rpc_client = client_config(&config.internal_rpc)?;
        Ok(Tls {
            config,
            rpc_server: parking_lot::RwLock::new(rpc_server),
            https_server: parking_lot::RwLock::new(https_server),
            rpc_client: parking_lot::RwLock::new(rpc_client),
        })
    }

    /// Reads the certificates again (SIGHUP). On an error nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let rpc_server = server_config(&self.config.internal_rpc)?;
        let https_server = server_config(&self.config.https)?;
        let rpc_client = client_config(&self.config.internal_rpc)?;
        *self.rpc_server.write() = rpc_server;
        *self.https_server.write() = https_server;
        *self.rpc_client.write() = rpc_client;
        Ok(())
    }

    pub fn config(&self) -> &TlsConfig {
        &self.config
    }

    pub fn rpc_acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.rpc_server.read().clone().map(tokio_rustls::TlsAcceptor::from)
    }

    pub fn https_acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.https_server.read().clone().map(tokio_rustls::TlsAcceptor::from)
    }

    /// Whether the server port refuses connections that are not TLS with a client certificate.
    pub fn rpc_requires_tls(&self) -> bool {
        self.config.internal_rpc.verify_incoming
    }

    /// The client configuration toward server ports, if this agent speaks TLS to them.
    pub fn rpc_client(&self) -> Option<Arc<ClientConfig>> {
        self.rpc_client.read().clone()
    }

    pub fn server_name(&self) -> &str {
        &self.config.server_name
    }
}

/// A TLS record's first byte: a connection that starts with it is a TLS handshake.
pub const HANDSHAKE: u8 = 0x16;

/// Go's answer to plain HTTP on an HTTPS port.
pub const PLAIN_ON_TLS: &[u8] = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// A client configuration that trusts nothing, for connectors that only ever dial plain HTTP.
pub fn unused_client_config() -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(RootCertStore::empty()).with_no_client_auth())
            .unwrap_or_else(|_| {
                ClientConfig::builder().with_root_certificates(RootCertStore::empty()).with_no_client_auth()
            }),
    )
}
