//! What every request to a server port carries, so that the server port answers agents and
//! servers of this cluster and nothing else: the `X-Consul-Peer` header.
//!
//! With gossip encryption (`-encrypt`) its value is an HMAC-SHA256 of a fixed label under the
//! gossip key, so only a holder of the key (every member of the cluster, and nobody else) can
//! produce it. It is the same on every request: it keeps out whoever does not hold the key, not
//! someone who can read the traffic; TLS on the server port is what protects the traffic.
//! Without a key the value is a fixed marker: a custom header that no browser sends without a
//! CORS preflight, which the server port never grants.
//!
//! [`PeerClient`] is the one HTTP client that talks to server ports; it adds the header to
//! every request. Knows nothing of HTTP servers, Raft or the catalog.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::HeaderValue;
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;
use std::time::Duration;

pub const HEADER: &str = "x-consul-peer";

/// What this agent sends, and what its server port expects.
#[derive(Clone)]
pub struct PeerAuth {
    value: HeaderValue,
}

const LABEL: &[u8] = b"consul-compatible server port v1";
const PLAIN: &str = "cluster";

impl PeerAuth {
    /// `key` is the decoded gossip key, if the cluster has one.
    pub fn new(key: Option<&[u8]>) -> PeerAuth {
        let value = match key.and_then(|k| Hmac::<Sha256>::new_from_slice(k).ok()) {
            Some(mut mac) => {
                mac.update(LABEL);
                let tag = mac.finalize().into_bytes();
                let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
                HeaderValue::from_str(&format!("hmac-sha256={hex}")).unwrap_or(HeaderValue::from_static(PLAIN))
            }
            None => HeaderValue::from_static(PLAIN),
        };
        PeerAuth { value }
    }

    pub fn header(&self) -> HeaderValue {
        self.value.clone()
    }

    /// Whether `presented` is this cluster's value, compared in constant time.
    pub fn admits(&self, presented: Option<&HeaderValue>) -> bool {
        let Some(p) = presented else { return false };
        let (a, b) = (p.as_bytes(), self.value.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Where a [`PeerClient`] gets the ACL token it sends when a request names none (the agent's
/// own token, for its internal RPCs).
pub type TokenSource = std::sync::Arc<dyn Fn() -> String + Send + Sync>;

type Inner = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled HTTP client for other agents' server ports that proves membership on every request,
/// over TLS when the agent has `verify_outgoing` (`Tls::rpc_client`).
#[derive(Clone)]
pub struct PeerClient {
    inner: std::sync::Arc<parking_lot::RwLock<(Inner, &'static str)>>,
    http2_only: bool,
    server_name: String,
    auth: PeerAuth,
    token: Option<TokenSource>,
}

fn build(
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    server_name: &str,
    http2_only: bool,
) -> (Inner, &'static str) {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(2)));
    http.enforce_http(false);
    let (config, scheme) = match tls {
        Some(c) => ((*c).clone(), "https"),
        None => ((*crate::tls::unused_client_config()).clone(), "http"),
    };
    // Servers are dialled by IP; their certificates are checked against the servers' name.
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap_or_else(|_| {
        rustls::pki_types::ServerName::try_from("server.dc1.consul").expect("a valid literal name")
    });
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        .enable_all_versions()
        .wrap_connector(http);
    (Client::builder(TokioExecutor::new()).http2_only(http2_only).build(connector), scheme)
}

/// The header an ACL token travels in.
pub const TOKEN_HEADER: &str = "x-consul-token";

impl PeerClient {
    /// `http2_only`: one multiplexed connection per server (forwarded requests, which include
    /// parked blocking queries); otherwise pooled HTTP/1 connections (Raft, internal RPCs).
    pub fn new(auth: PeerAuth, http2_only: bool) -> PeerClient {
        PeerClient {
            inner: std::sync::Arc::new(parking_lot::RwLock::new(build(None, "server.dc1.consul", http2_only))),
            http2_only,
            server_name: "server.dc1.consul".into(),
            auth,
            token: None,
        }
    }

    /// Speaks TLS to server ports with `config` (`None`: plain), checking servers' certificates
    /// against `server_name`. Also what a certificate reload calls; requests already under way
    /// keep their connections.
    pub fn set_tls(&mut self, config: Option<std::sync::Arc<rustls::ClientConfig>>, server_name: &str) {
        self.server_name = server_name.to_string();
        *self.inner.write() = build(config, server_name, self.http2_only);
    }

    /// The same, for a client already shared (every clone sees the change).
    pub fn reload_tls(&self, config: Option<std::sync::Arc<rustls::ClientConfig>>) {
        *self.inner.write() = build(config, &self.server_name, self.http2_only);
    }

    /// `http://addr/path`, or `https://` when this client speaks TLS.
    pub fn url(&self, addr: &str, path: &str) -> String {
        format!("{}://{addr}{path}", self.inner.read().1)
    }

    /// Requests that carry no token of their own get the one `source` gives.
    pub fn with_token(mut self, source: TokenSource) -> PeerClient {
        self.token = Some(source);
        self
    }

    pub fn request(&self, mut req: http::Request<Full<Bytes>>) -> ResponseFuture {
        req.headers_mut().insert(HEADER, self.auth.header());
        if let Some(source) = &self.token {
            if !req.headers().contains_key(TOKEN_HEADER) {
                if let Ok(v) = HeaderValue::from_str(&source()) {
                    if !v.is_empty() {
                        req.headers_mut().insert(TOKEN_HEADER, v);
                    }
                }
            }
        }
        let client = self.inner.read().0.clone();
        client.request(req)
    }
}

/// An error with its causes ("client error (Connect): invalid peer certificate: UnknownIssuer"):
/// hyper's own text alone does not say why a TLS connection failed.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_key_is_admitted() {
        let k1 = PeerAuth::new(Some(&[1u8; 32]));
        let k2 = PeerAuth::new(Some(&[2u8; 32]));
        let plain = PeerAuth::new(None);
        assert!(k1.admits(Some(&k1.header())));
        assert!(!k1.admits(Some(&k2.header())));
        assert!(!k1.admits(Some(&plain.header())), "a keyed cluster refuses the plain marker");
        assert!(!k1.admits(None));
        assert!(plain.admits(Some(&HeaderValue::from_static("cluster"))));
        assert!(!plain.admits(Some(&HeaderValue::from_static("cluster2"))));
    }
}
