//! What every request to a server port carries, so that the server port answers agents and
//! servers of this cluster and nothing else: the `X-Consul-Peer` header.
//!
//! With gossip encryption its value is an HMAC-SHA256 of a fixed label under the primary gossip
//! key, so only a holder of a key (every member of the cluster, and nobody else) can produce it.
//! It is the same on every request: it keeps out whoever does not hold the key, not someone who
//! can read the traffic; TLS on the server port is what protects the traffic. It follows the
//! keyring as gossip does: signed under the primary, admitted under any installed key, so
//! servers keep talking while a key is rotated (installed, used, the old one removed); and
//! `encrypt_verify_outgoing = false` sends, `encrypt_verify_incoming = false` admits, the plain
//! marker, so encryption can be turned on in a running cluster.
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
    keyring: crate::gossip::Keyring,
}

const LABEL: &[u8] = b"consul-compatible server port v1";
const PLAIN: &str = "cluster";

fn tag(key: &[u8]) -> Option<HeaderValue> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(LABEL);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("hmac-sha256={hex}")).ok()
}

fn same(a: &HeaderValue, b: &HeaderValue) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl PeerAuth {
    /// Signs and checks with the gossip keys as they are at each request.
    pub fn new(keyring: crate::gossip::Keyring) -> PeerAuth {
        PeerAuth { keyring }
    }

    /// The value for a request sent now: under the primary key, or the plain marker.
    pub fn header(&self) -> HeaderValue {
        let primary = self.keyring.primary().filter(|_| self.keyring.verify_outgoing());
        primary.and_then(|k| tag(&k)).unwrap_or(HeaderValue::from_static(PLAIN))
    }

    /// Whether `presented` is this cluster's value under any installed key (or the plain marker,
    /// without keys or with `encrypt_verify_incoming = false`), compared in constant time.
    pub fn admits(&self, presented: Option<&HeaderValue>) -> bool {
        let Some(p) = presented else { return false };
        let keys = self.keyring.keys();
        let plain_ok = keys.is_empty() || !self.keyring.verify_incoming();
        let mut ok = plain_ok && same(p, &HeaderValue::from_static(PLAIN));
        for k in &keys {
            ok |= tag(k).is_some_and(|t| same(p, &t));
        }
        ok
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
        use crate::gossip::Keyring;
        let k1 = PeerAuth::new(Keyring::new(vec![[1u8; 32]], true, true, None));
        let k2 = PeerAuth::new(Keyring::new(vec![[2u8; 32]], true, true, None));
        let plain = PeerAuth::new(Keyring::disabled());
        assert!(k1.admits(Some(&k1.header())));
        assert!(!k1.admits(Some(&k2.header())));
        assert!(!k1.admits(Some(&plain.header())), "a keyed cluster refuses the plain marker");
        assert!(!k1.admits(None));
        assert!(plain.admits(Some(&HeaderValue::from_static("cluster"))));
        assert!(!plain.admits(Some(&HeaderValue::from_static("cluster2"))));
    }

    #[test]
    fn rotation_signs_with_the_primary_and_admits_any_installed_key() {
        use crate::gossip::Keyring;
        let ring = Keyring::new(vec![[1u8; 32]], true, true, None);
        let rotating = PeerAuth::new(ring.clone());
        let old = PeerAuth::new(Keyring::new(vec![[1u8; 32]], true, true, None));
        let new = PeerAuth::new(Keyring::new(vec![[2u8; 32]], true, true, None));
        ring.install(&[2u8; 32]).expect("install");
        assert!(rotating.admits(Some(&old.header())) && rotating.admits(Some(&new.header())));
        assert_eq!(rotating.header(), old.header(), "still signed with the primary");
        ring.use_key(&[2u8; 32]).expect("use");
        assert_eq!(rotating.header(), new.header());
        ring.remove(&[1u8; 32]).expect("remove");
        assert!(!rotating.admits(Some(&old.header())));
    }

    #[test]
    fn verify_flags_let_the_plain_marker_through() {
        use crate::gossip::Keyring;
        let plain = PeerAuth::new(Keyring::disabled());
        let lax = PeerAuth::new(Keyring::new(vec![[1u8; 32]], false, false, None));
        let sending = PeerAuth::new(Keyring::new(vec![[1u8; 32]], false, true, None));
        let strict = PeerAuth::new(Keyring::new(vec![[1u8; 32]], true, true, None));
        assert_eq!(lax.header(), plain.header(), "outgoing unverified: the plain marker");
        assert!(plain.admits(Some(&lax.header())));
        assert!(lax.admits(Some(&plain.header())) && lax.admits(Some(&strict.header())));
        assert!(sending.admits(Some(&plain.header())) && strict.admits(Some(&sending.header())));
        assert!(!strict.admits(Some(&plain.header())));
    }
}
