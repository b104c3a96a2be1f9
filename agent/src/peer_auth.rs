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

/// A pooled HTTP client for other agents' server ports that proves membership on every request.
#[derive(Clone)]
pub struct PeerClient {
    client: Client<HttpConnector, Full<Bytes>>,
    auth: PeerAuth,
    token: Option<TokenSource>,
}

/// The header an ACL token travels in.
pub const TOKEN_HEADER: &str = "x-consul-token";

impl PeerClient {
    /// `http2_only`: one multiplexed connection per server (forwarded requests, which include
    /// parked blocking queries); otherwise pooled HTTP/1 connections (Raft, internal RPCs).
    pub fn new(auth: PeerAuth, http2_only: bool) -> PeerClient {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        c.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new()).http2_only(http2_only).build(c);
        PeerClient { client, auth, token: None }
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
        self.client.request(req)
    }
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
