//! Limits on the HTTP listener, so that one client cannot take the API from everyone else:
//! open connections per client IP (`limits.http_max_conns_per_client`, 200 as in Consul), a
//! deadline for a new connection's first request to begin, and (through hyper) for each request
//! head to arrive and for a kept-alive connection to stay idle.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// How long a request head may take to arrive, and a keep-alive connection may stay idle.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts open connections per client IP.
#[derive(Default)]
pub struct ConnLimiter {
    max: usize,
    open: parking_lot::Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it frees its place.
pub struct ConnGuard {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
}

impl ConnLimiter {
    /// `max` connections per IP; 0 means no limit.
    pub fn new(max: usize) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter { max, open: Default::default() })
    }

    /// A place for a connection from `ip`, or `None` if it already has `max` open.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnGuard> {
        let mut open = self.open.lock();
        let n = open.entry(ip).or_insert(0);
        if self.max > 0 && *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnGuard { limiter: self.clone(), ip })
    }

    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        self.open.lock().get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What a client over its limit is told before the connection is closed.
pub const TOO_MANY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\n\
Connection: close\r\nContent-Length: 81\r\n\r\nYour IP is issuing too many concurrent connections, please rate limit your calls\n";

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits, up to `limit`, until the connection has sent enough to tell HTTP/1 from HTTP/2 (the
/// whole HTTP/2 preface, or a first byte that cannot begin it). Before that hyper has no
/// timer running, so a client that connects and sends nothing (or half a preface) would hold
/// the connection for ever. False if the client closed or the time ran out.
pub async fn first_bytes(stream: &TcpStream, limit: Duration) -> bool {
    let wait = async {
        let mut buf = [0u8; 24];
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if n >= H2_PREFACE.len() || buf[..n] != H2_PREFACE[..n] {
                return true;
            }
            // Part of a preface: wait for more (peek returns at once while data is queued).
            if stream.readable().await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(limit, wait).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_ip_and_frees_on_drop() {
        let l = ConnLimiter::new(2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let g1 = l.admit(a).expect("first");
        let _g2 = l.admit(a).expect("second");
        assert!(l.admit(a).is_none(), "third from the same ip");
        let _g3 = l.admit(b).expect("another ip is not affected");
        drop(g1);
        assert_eq!(l.count(a), 1);
        assert!(l.admit(a).is_some());
        let unlimited = ConnLimiter::new(0);
        let guards: Vec<_> = (0..1000).filter_map(|_| unlimited.admit(a)).collect();
        assert_eq!(guards.len(), 1000);
    }

    #[test]
    fn the_429_announces_its_length() {
        let text = std::str::from_utf8(TOO_MANY).expect("utf8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
