//! `agent tls ca create` and `agent tls cert create`: a private CA and the agents' certificates,
//! with Consul's file names and names (SANs), ECDSA P-256 keys (rcgen).
//!
//! Servers' certificates carry `server.<dc>.<domain>` (what `verify_server_hostname` checks),
//! clients' `client.<dc>.<domain>`, the CLI's `cli.<dc>.<domain>`; all carry `localhost`.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, NameConstraints, SanType,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Crypto(String),
}

fn crypto(e: rcgen::Error) -> CertError {
    CertError::Crypto(e.to_string())
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // A minute back, so a peer whose clock is slightly behind accepts it at once.
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(days as i64);
}

fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| CertError::Io(format!("writing {}: {e}", path.display())))?;
    f.write_all(contents.as_bytes()).map_err(|e| CertError::Io(format!("writing {}: {e}", path.display())))
}

pub struct CaOptions {
    pub days: u32,
    pub domain: String,
    pub common_name: String,
    pub name_constraint: bool,
    pub additional_name_constraints: Vec<String>,
}

/// Writes `<domain>-agent-ca.pem` and `<domain>-agent-ca-key.pem` in `dir`; refuses to
/// overwrite. Returns the two paths.
pub fn create_ca(dir: &Path, o: &CaOptions) -> Result<(PathBuf, PathBuf), CertError> {
    let cert_path = dir.join(format!("{}-agent-ca.pem", o.domain));
    let key_path = dir.join(format!("{}-agent-ca-key.pem", o.domain));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(CertError::Usage(format!("{} already exists.", p.display())));
        }
    }
    let key = KeyPair::generate().map_err(crypto)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(crypto)?;
    let cn =
        if o.common_name.is_empty() { format!("Agent CA {}", rand::random::<u32>()) } else { o.common_name.clone() };
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    if o.name_constraint {
        let mut permitted =
            vec![GeneralSubtree::DnsName(o.domain.clone()), GeneralSubtree::DnsName("localhost".into())];
        permitted.extend(o.additional_name_constraints.iter().cloned().map(GeneralSubtree::DnsName));
        params.name_constraints = Some(NameConstraints { permitted_subtrees: permitted, excluded_subtrees: vec![] });
    }
    validity(&mut params, o.days);
    let cert = params.self_signed(&key).map_err(crypto)?;
    write_new(&cert_path, &cert.pem(), 0o644)?;
    write_new(&key_path, &key.serialize_pem(), 0o600)?;
    Ok((cert_path, key_path))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server,
    Client,
    Cli,
}

pub struct CertOptions {
    pub kind: Kind,
    pub dc: String,
    pub domain: String,
    pub days: u32,
    pub node: String,
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
}

/// The names a certificate of `o` carries: Consul's, then the additional ones.
pub fn names(o: &CertOptions) -> (String, Vec<String>, Vec<IpAddr>) {
    let (role, loopback) = match o.kind {
        Kind::Server => ("server", true),
        Kind::Client => ("client", true),
        Kind::Cli => ("cli", false),
    };
    let name = format!("{role}.{}.{}", o.dc, o.domain);
    let mut dns: Vec<String> = o.dns_names.iter().map(|d| d.trim().to_string()).filter(|d| !d.is_empty()).collect();
    if o.kind == Kind::Server && !o.node.is_empty() {
        dns.push(format!("{}.server.{}.{}", o.node, o.dc, o.domain));
    }
    dns.push(name.clone());
    dns.push("localhost".into());
    let mut ips = o.ip_addresses.clone();
    if loopback {
        ips.push(IpAddr::from([127, 0, 0, 1]));
    }
    (name, dns, ips)
}

/// Writes `<dc>-<kind>-<domain>-<N>.pem` and `-<N>-key.pem` in `dir` (N: the first free number),
/// signed by the CA. Returns the two paths.
pub fn create_cert(dir: &Path, o: &CertOptions) -> Result<(PathBuf, PathBuf), CertError> {
    let role = match o.kind {
        Kind::Server => "server",
        Kind::Client => "client",
        Kind::Cli => "cli",
    };
    let prefix = format!("{}-{role}-{}", o.dc, o.domain);
    let (cert_path, key_path) = (0..=10_000)
        .map(|i| (dir.join(format!("{prefix}-{i}.pem")), dir.join(format!("{prefix}-{i}-key.pem"))))
        .find(|(c, k)| !c.exists() && !k.exists())
        .ok_or_else(|| CertError::Usage("Could not find a filename that doesn't already exist".into()))?;
    let ca_pem = std::fs::read_to_string(&o.ca).map_err(|e| CertError::Io(format!("Error reading CA: {e}")))?;
    let ca_key_pem =
        std::fs::read_to_string(&o.ca_key).map_err(|e| CertError::Io(format!("Error reading CA key: {e}")))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(crypto)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(crypto)?;
    let (name, dns, ips) = names(o);
    let mut params = CertificateParams::new(dns).map_err(crypto)?;
    params.subject_alt_names.extend(ips.into_iter().map(SanType::IpAddress));
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = match o.kind {
        Kind::Server | Kind::Client => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        Kind::Cli => vec![],
    };
    validity(&mut params, o.days);
    let key = KeyPair::generate().map_err(crypto)?;
    let cert = params.signed_by(&key, &issuer).map_err(crypto)?;
    write_new(&cert_path, &cert.pem(), 0o644)?;
    write_new(&key_path, &key.serialize_pem(), 0o600)?;
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_signs_server_and_client_certificates_that_rustls_accepts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = CaOptions {
            days: 30,
            domain: "consul".into(),
            common_name: String::new(),
            name_constraint: false,
            additional_name_constraints: vec![],
        };
        let (ca, ca_key) = create_ca(dir.path(), &o).expect("ca");
        assert!(ca.ends_with("consul-agent-ca.pem") && ca_key.ends_with("consul-agent-ca-key.pem"));
        assert!(create_ca(dir.path(), &o).unwrap_err().to_string().ends_with("already exists."));
        let opts = |kind| CertOptions {
            kind,
            dc: "dc1".into(),
            domain: "consul".into(),
            days: 30,
            node: String::new(),
            ca: ca.clone(),
            ca_key: ca_key.clone(),
            dns_names: vec![],
            ip_addresses: vec![],
        };
        let (c0, k0) = create_cert(dir.path(), &opts(Kind::Server)).expect("server cert");
        assert!(c0.ends_with("dc1-server-consul-0.pem") && k0.ends_with("dc1-server-consul-0-key.pem"));
        let (c1, _) = create_cert(dir.path(), &opts(Kind::Server)).expect("second");
        assert!(c1.ends_with("dc1-server-consul-1.pem"));
        let (cc, ck) = create_cert(dir.path(), &opts(Kind::Client)).expect("client cert");
        // The files load as a TLS configuration that requires client certificates.
        let settings = super::super::TlsSettings {
            ca_file: Some(ca.clone()),
            cert_file: Some(c0),
            key_file: Some(k0),
            verify_incoming: true,
            verify_outgoing: true,
            verify_server_hostname: true,
            ..Default::default()
        };
        let tls = super::super::Tls::load(super::super::TlsConfig {
            internal_rpc: settings.clone(),
            https: settings,
            server_name: "server.dc1.consul".into(),
            agent_tls_for_checks: false,
        })
        .expect("loads");
        assert!(tls.rpc_acceptor().is_some() && tls.rpc_client().is_some());
        assert!(cc.exists() && ck.exists());
    }
}
