//! TLS toward the agents and toward HTTPS upstreams. The files named by `-consul-ca-file`,
//! `-consul-ca-path`, `-consul-client-cert` and `-consul-client-key` are read once, at start,
//! into the `api` crate's client configuration (discovery's watches) and into what pingora's
//! upstream peers take (proxied requests to the agents and to HTTPS instances). It knows nothing
//! of routing.

use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Api(#[from] api::Error),
    #[error("{what} {path}: {message}")]
    File { what: &'static str, path: String, message: String },
}

/// The agents' TLS, loaded.
pub struct AgentTls {
    /// For the `api` crate's clients.
    pub client: api::Tls,
    /// The name the agents' certificates must carry (`-consul-tls-server-name`); without it an
    /// agent's certificate must carry its IP address, as Consul's `-ca-file` clients check it.
    pub server_name: Option<String>,
    /// `-consul-ssl-verify=false`: no check at all (logged at start).
    pub verify: bool,
    /// The CA certificates, when given; otherwise pingora's (the system's) roots.
    pub ca: Option<Arc<[WrappedX509]>>,
    /// lb's client certificate, shown to agents and HTTPS instances that ask for one.
    pub cert_key: Option<Arc<CertKey>>,
}

impl std::fmt::Debug for AgentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentTls")
            .field("server_name", &self.server_name)
            .field("verify", &self.verify)
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .field("client_cert", &self.cert_key.is_some())
            .finish()
    }
}

fn file_error(what: &'static str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::File { what, path: path.display().to_string(), message: e.to_string() }
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<Vec<u8>>, Error> {
    let found: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(what, path, e))?;
    if found.is_empty() {
        return Err(file_error(what, path, "no PEM certificate in the file"));
    }
    Ok(found.into_iter().map(|c| c.to_vec()).collect())
}

impl AgentTls {
    /// Reads every file once; the `api` crate's loader checks them first, so its messages (which
    /// name the file) are the ones a bad file gets.
    pub fn load(opts: &api::TlsOptions) -> Result<AgentTls, Error> {
        let client = opts.load()?;
        let mut ca_files: Vec<std::path::PathBuf> = opts.ca_file.iter().cloned().collect();
        if let Some(dir) = &opts.ca_path {
            let rd = std::fs::read_dir(dir).map_err(|e| file_error("reading CA path", dir, e))?;
            let mut found: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
            found.sort();
            ca_files.extend(found);
        }
        let mut ca = Vec::new();
        for f in &ca_files {
            ca.extend(certs("reading CA file", f)?.into_iter().map(|c| WrappedX509::new(c, parse_x509)));
        }
        let cert_key = match (&opts.cert_file, &opts.key_file) {
            (Some(cert), Some(key)) => {
                let chain = certs("reading client certificate", cert)?;
                let key_der =
                    PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("reading client key", key, e))?;
                Some(Arc::new(CertKey::new(chain, key_der.secret_der().to_vec())))
            }
            _ => None,
        };
        Ok(AgentTls {
            client,
            server_name: opts.server_name.clone().filter(|n| !n.trim().is_empty()),
            verify: !opts.insecure_skip_verify,
            ca: (!ca.is_empty()).then(|| Arc::from(ca.into_boxed_slice())),
            cert_key,
        })
    }
}
