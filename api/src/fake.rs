//! A scripted HTTP/1.1 agent for the crate's unit tests: real sockets on 127.0.97.x, one request
//! per connection, each answered by a closure that sees the request's number and path.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    let listener = TcpListener::bind((ip, 0)).await.expect("bind fake agent");
    let addr = listener.local_addr().unwrap().to_string();
    let log: Log = Arc::default();
    let handler = Arc::new(handler);
    let l2 = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let (log, handler) = (l2.clone(), handler.clone());
            tokio::spawn(async move {
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
            });
        }
    });
    Fake { addr, log }
}
