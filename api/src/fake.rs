//! A scripted HTTP/1.1 agent for the crate's unit tests: real sockets on 127.0.97.x, one request
//! per connection, each answered by a closure that sees the request's number and path; over TLS
//! too ([`serve_tls`], with certificates from [`Pki`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Never answer (a hung agent).
    pub hang: bool,
    /// Answer after this long.
    pub delay: Duration,
}

impl Reply {
    pub fn json(index: u64, body: &str) -> Reply {
        Reply {
            status: 200,
            headers: vec![("X-Consul-Index".into(), index.to_string())],
            body: body.into(),
            hang: false,
            delay: Duration::ZERO,
        }
    }

    pub fn status(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: "boom".into(), hang: false, delay: Duration::ZERO }
    }

    pub fn hang() -> Reply {
        Reply { hang: true, ..Reply::status(200) }
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// What answers each request: its number and path in, the reply out.
type Handler = Arc<dyn Fn(usize, &str) -> Reply + Send + Sync>;

/// The requests a fake saw: when each arrived, and its path and query.
pub type Log = Arc<Mutex<Vec<(Instant, String)>>>;

pub struct Fake {
    pub addr: String,
    pub log: Log,
}

impl Fake {
    pub fn paths(&self) -> Vec<String> {
        self.log.lock().unwrap().iter().map(|(_, p)| p.clone()).collect()
    }

    pub fn times(&self) -> Vec<Instant> {
        self.log.lock().unwrap().iter().map(|(t, _)| *t).collect()
    }
}

/// Serves on `ip` (an ephemeral port) until the test's runtime ends.
pub async fn serve(ip: &str, handler: impl Fn(usize, &str) -> Reply + Send + Sync + 'static) -> Fake {
    serve_on(ip, None, handler).await
}

/// [`serve`] over TLS: every connection must complete `acceptor`'s handshake first.
pub async fn serve_tls(
    ip: &str,
    acceptor: tokio_rustls::TlsAcceptor,
    handler: impl Fn(usize, &str) -> Reply + Send + Sync + 'static,
) -> Fake {
    serve_on(ip, Some(acceptor), handler).await
}

async fn serve_on(
    ip: &str,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: impl Fn(usize, &str) -> Reply + Send + Sync + 'static,
) -> Fake {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind fake agent");
    let addr = listener.local_addr().unwrap().to_string();
    let log: Log = Arc::default();
    let handler: Handler = Arc::new(handler);
    let l2 = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else { return };
            let (log, handler, tls) = (l2.clone(), handler.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => answer(conn, log, handler).await,
                    Some(acceptor) => {
                        if let Ok(conn) = acceptor.accept(conn).await {
                            answer(conn, log, handler).await
                        }
                    }
                }
            });
        }
    });
    Fake { addr, log }
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut conn: S, log: Log, handler: Handler) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    let n = {
        let mut l = log.lock().unwrap();
        l.push((Instant::now(), path.clone()));
        l.len() - 1
    };
    let reply = handler(n, &path);
    tokio::time::sleep(reply.delay).await;
    if reply.hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return;
    }
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    let _ = conn.write_all(out.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// A CA with a server certificate (for `localhost`, `server.dc1.consul` and 127.0.0.1) and a
/// client certificate, written as PEM files into a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: std::path::PathBuf,
    pub server_cert: std::path::PathBuf,
    pub server_key: std::path::PathBuf,
    pub client_cert: std::path::PathBuf,
    pub client_key: std::path::PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).expect("issuer");
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write pem");
            p
        };
        let leaf = |names: Vec<String>, ip: bool| {
            let mut params = CertificateParams::new(names).expect("params");
            if ip {
                params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
            }
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &issuer).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let (sc, sk) = leaf(vec!["localhost".into(), "server.dc1.consul".into()], true);
        let (cc, ck) = leaf(vec!["client.dc1.consul".into()], false);
        Pki {
            ca: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.pem", sc),
            server_key: write("server-key.pem", sk),
            client_cert: write("client.pem", cc),
            client_key: write("client-key.pem", ck),
            dir,
        }
    }

    /// A TLS server with the server certificate; with `require_client`, only clients whose
    /// certificate the CA signed get through the handshake.
    pub fn acceptor(&self, require_client: bool) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&self.server_cert).unwrap().collect::<Result<_, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_file(&self.server_key).unwrap();
        let b = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let b = if require_client {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(&self.ca).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            b.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap(),
            )
        } else {
            b.with_no_client_auth()
        };
        tokio_rustls::TlsAcceptor::from(Arc::new(b.with_single_cert(certs, key).unwrap()))
    }
}
