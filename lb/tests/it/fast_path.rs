//! The HTTP/1.1 fast path (`lb/src/fast.rs`) on the wire: raw client bytes in, raw backend
//! bytes out, so framing, pipelining, keep-alive and the hand-off to pingora are seen exactly.

use crate::fake::{Backend, Cluster, FakeAgent, Lb};
use crate::net;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend speaking HTTP/1.1 by hand. It records every request head it reads and counts
/// connections; what it answers depends on the path.
pub(crate) struct RawBackend {
    pub(crate) ip: String,
    pub(crate) port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    pub(crate) connections: Arc<AtomicUsize>,
}

/// Reads one request (head and `Content-Length` body); `None` when the peer closed.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let len = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 65536];
                let n = s.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Some((head, body));
        }
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

impl RawBackend {
    pub(crate) async fn start(ip: &str) -> RawBackend {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind raw backend");
        let port = listener.local_addr().expect("addr").port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (h, c) = (heads.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let heads = h.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some((head, body)) = read_request(&mut s, &mut buf).await {
                        heads.lock().unwrap().push(head.clone());
                        let target = head.split(' ').nth(1).unwrap_or("");
                        let path = target.split('?').next().unwrap_or("").to_string();
                        let ok = match path.as_str() {
                            "/len" if head.starts_with("HEAD ") => {
                                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").await
                            }
                            "/len" => {
                                s.write_all(
                                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\n\r\nhello",
                                )
                                .await
                            }
                            "/chunked" => {
                                let parts: [&[u8]; 4] = [
                                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                                    b"5\r\nhello\r\n",
                                    b"6;ext=1\r\n world\r\n",
                                    b"0\r\nX-Trailer: t\r\n\r\n",
                                ];
                                let mut r = Ok(());
                                for p in parts {
                                    r = r.and(s.write_all(p).await).and(s.flush().await);
                                    tokio::task::yield_now().await;
                                }
                                r
                            }
                            "/echo" => {
                                let mut out =
                                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
                                out.extend_from_slice(&body);
                                s.write_all(&out).await
                            }
                            "/close" => {
                                let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nuntil close").await;
                                return;
                            }
                            // Answers as if the connection stayed open, then closes it: what a
                            // server's keep-alive timeout does to an idle pooled connection.
                            "/once" => {
                                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nonce").await;
                                return;
                            }
                            // Reads the request and hangs up without an answer.
                            _ => return,
                        };
                        if ok.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        RawBackend { ip: ip.to_string(), port, heads, connections }
    }

    pub(crate) fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// Sends `bytes` on a new connection to lb (in pieces at `splits`) and reads until lb closes it.
pub(crate) async fn exchange(lb: &str, pieces: &[&[u8]]) -> String {
    let mut s = TcpStream::connect(lb).await.expect("connect lb");
    for p in pieces {
        s.write_all(p).await.expect("write");
        s.flush().await.expect("flush");
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("lb closed the connection")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a stream of responses into (status line, headers, body) by their framing.
pub(crate) fn responses(mut text: &str, head_requests: &[usize]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    while !text.is_empty() {
        let end = text.find("\r\n\r\n").expect("a complete head") + 4;
        let head = &text[..end];
        let status = head.lines().next().unwrap_or("").to_string();
        let lower = head.to_ascii_lowercase();
        let (body, rest) = if head_requests.contains(&out.len()) {
            (String::new(), &text[end..])
        } else if let Some(len) =
            lower.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok())
        {
            (text[end..end + len].to_string(), &text[end + len..])
        } else if lower.contains("transfer-encoding: chunked") {
            let mut body = String::new();
            let mut rest = &text[end..];
            loop {
                let line_end = rest.find("\r\n").expect("chunk size");
                let size = usize::from_str_radix(rest[..line_end].split(';').next().unwrap_or(""), 16).expect("hex");
                rest = &rest[line_end + 2..];
                if size == 0 {
                    let trailer_end = rest.find("\r\n\r\n").map(|i| i + 4).unwrap_or(2);
                    rest = &rest[trailer_end..];
                    break;
                }
                body.push_str(&rest[..size]);
                rest = &rest[size + 2..];
            }
            (body, rest)
        } else {
            (text[end..].to_string(), "")
        };
        out.push((status, head.to_string(), body));
        text = rest;
    }
    out
}

pub(crate) async fn setup(
    ip: &impl Fn(u8) -> String,
    cluster: &Arc<Cluster>,
    backend: &RawBackend,
    config: Option<&str>,
) -> (Vec<FakeAgent>, Lb) {
    let agents = FakeAgent::start_many(cluster, &[ip(11)]).await;
    cluster.register_addr("raw", "raw1", &backend.ip, backend.port, &[], 1);
    let lb = Lb::start(&ip(1), &[agents[0].addr()], config).await;
    lb.wait_instances("service:raw", 1).await;
    (agents, lb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_requests_are_relayed_with_every_framing_on_kept_connections() {
    let ip = net(72);
    let cluster = Cluster::new();
    let backend = RawBackend::start(&ip(21)).await;
    let (_agents, lb) = setup(&ip, &cluster, &backend, None).await;
    let h = "Host: raw.service.consul\r\n";

    // Five pipelined requests in one write, the last one closing: length, chunked, HEAD, a
    // POST with a body, and one more.
    let batch = format!(
        "GET /len HTTP/1.1\r\n{h}\r\nGET /chunked HTTP/1.1\r\n{h}\r\nHEAD /len HTTP/1.1\r\n{h}\r\n\
         POST /echo HTTP/1.1\r\n{h}X-Forwarded-For: 10.9.8.7\r\nConnection: keep-alive\r\nContent-Length: 11\r\n\r\nhello world\
         GET /len HTTP/1.1\r\n{h}Connection: close\r\n\r\n"
    );
    let got = exchange(&lb.addr, &[batch.as_bytes()]).await;
    let rs = responses(&got, &[2]);
    let summary: Vec<(&str, &str)> = rs.iter().map(|(s, _, b)| (s.as_str(), b.as_str())).collect();
    assert_eq!(
        summary,
        [
            ("HTTP/1.1 200 OK", "hello"),
            ("HTTP/1.1 200 OK", "hello world"),
            ("HTTP/1.1 200 OK", ""),
            ("HTTP/1.1 200 OK", "hello world"),
            ("HTTP/1.1 200 OK", "hello"),
        ],
        "{got}"
    );
    // Trailers pass through; hop-by-hop headers do not; the last answer says it closes.
    assert!(got.contains("X-Trailer: t\r\n"), "{got}");
    assert!(!rs[0].1.to_ascii_lowercase().contains("keep-alive"), "{}", rs[0].1);
    assert!(rs[4].1.contains("Connection: close\r\n"), "{}", rs[4].1);
    // One upstream connection served all five.
    assert_eq!(backend.connections.load(Ordering::SeqCst), 1);

    // What the instance saw: the client's lines, X-Forwarded-* added, no Connection header.
    let heads = backend.heads();
    let post = heads.iter().find(|h| h.starts_with("POST /echo HTTP/1.1\r\n")).expect("the POST reached the backend");
    assert!(post.contains("X-Forwarded-For: 10.9.8.7, 127.0.0.1\r\n"), "{post}");
    assert!(post.contains("X-Forwarded-Proto: http\r\n"), "{post}");
    assert!(post.contains("X-Forwarded-Host: raw.service.consul\r\n"), "{post}");
    assert!(post.contains("Content-Length: 11\r\n"), "{post}");
    assert!(!post.to_ascii_lowercase().contains("connection:"), "{post}");
    assert!(heads.iter().any(|h| h.starts_with("HEAD /len HTTP/1.1\r\n")), "{heads:?}");

    // A 200 KB body sent in two pieces is relayed as it arrives.
    let big = "x".repeat(200_000);
    let head = format!("POST /echo HTTP/1.1\r\n{h}Connection: close\r\nContent-Length: {}\r\n\r\n", big.len());
    let (a, b) = big.split_at(70_000);
    let got = exchange(&lb.addr, &[head.as_bytes(), a.as_bytes(), b.as_bytes()]).await;
    let rs = responses(&got, &[]);
    assert_eq!(rs.len(), 1, "{}", &got[..got.len().min(300)]);
    assert_eq!(rs[0].2.len(), big.len());

    // A body that ends when the instance closes: the client connection ends with it.
    let got = exchange(&lb.addr, &[format!("GET /close HTTP/1.1\r\n{h}\r\n").as_bytes()]).await;
    let rs = responses(&got, &[]);
    assert_eq!((rs[0].0.as_str(), rs[0].2.as_str()), ("HTTP/1.1 200 OK", "until close"), "{got}");
    assert!(rs[0].1.contains("Connection: close\r\n"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_pooled_connections_are_replaced_and_hangups_get_a_502() {
    let ip = net(73);
    let cluster = Cluster::new();
    let backend = RawBackend::start(&ip(21)).await;
    let (_agents, lb) = setup(&ip, &cluster, &backend, None).await;
    let h = "Host: raw.service.consul\r\n";

    // The instance closes each connection after answering but never says so. lb pools the
    // connection, finds it closed on the next request and opens a new one: no failed request.
    let mut s = TcpStream::connect(&lb.addr).await.expect("connect");
    for round in 1..=3 {
        s.write_all(format!("GET /once HTTP/1.1\r\n{h}\r\n").as_bytes()).await.expect("write");
        let mut got = Vec::new();
        while !got.ends_with(b"once") {
            let mut chunk = [0u8; 1024];
            let n =
                tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await.expect("answer").expect("read");
            assert!(n > 0, "lb closed the client connection in round {round}");
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", String::from_utf8_lossy(&got));
    }
    assert_eq!(backend.connections.load(Ordering::SeqCst), 3);

    // An instance that hangs up on a POST: the POST is not re-sent, the client gets a 502.
    let got =
        exchange(&lb.addr, &[format!("POST /hangup HTTP/1.1\r\n{h}Content-Length: 2\r\n\r\nhi").as_bytes()]).await;
    assert!(got.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{got}");
    assert!(got.contains("lb: proxying to service \"raw\" failed: ConnectionClosed"), "{got}");
    let posts = backend.heads().iter().filter(|h| h.starts_with("POST /hangup")).count();
    assert_eq!(posts, 1, "a POST that may have been processed is sent once");

    // A GET is tried on every instance; with only one, the page says which were tried.
    let got = exchange(&lb.addr, &[format!("GET /hangup HTTP/1.1\r\n{h}\r\n").as_bytes()]).await;
    assert!(got.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{got}");
    let tried = format!("no instance of service \"raw\" answered (tried {}:{})", backend.ip, backend.port);
    assert!(got.contains(&tried), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_the_fast_path_go_to_pingora_on_the_same_connection() {
    let ip = net(74);
    let cluster = Cluster::new();
    let agents = FakeAgent::start_many(&cluster, &[ip(11)]).await;
    let web = Backend::start(&ip(21), "web1").await;
    cluster.register("web", "web1", &web, &[], 1);
    let lb = Lb::start(&ip(1), &[agents[0].addr()], None).await;
    lb.wait_instances("service:web", 1).await;
    let h = "Host: web.service.consul\r\n";

    // A plain GET, then a chunked POST (handed over with the bytes already read), then a GET
    // that pingora serves on the same connection.
    let batch = format!(
        "GET /a HTTP/1.1\r\n{h}\r\n\
         POST /b HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
         GET /c HTTP/1.1\r\n{h}Connection: close\r\n\r\n"
    );
    let got = exchange(&lb.addr, &[batch.as_bytes()]).await;
    let rs = responses(&got, &[]);
    let summary: Vec<(&str, &str)> = rs.iter().map(|(s, _, b)| (s.as_str(), b.as_str())).collect();
    assert_eq!(summary, [("HTTP/1.1 200 OK", "web1"); 3], "{got}");
    let paths: Vec<String> = rs
        .iter()
        .map(|(_, head, _)| {
            head.lines().find_map(|l| l.strip_prefix("x-seen-path: ").map(str::to_string)).unwrap_or_default()
        })
        .collect();
    assert_eq!(paths, ["/a", "/b", "/c"], "{got}");

    // HTTP/1.0 and an unknown service host also take pingora's path.
    let got = exchange(&lb.addr, &[format!("GET /old HTTP/1.0\r\n{h}\r\n").as_bytes()]).await;
    assert!(got.contains("web1"), "{got}");
    let got = exchange(&lb.addr, &[b"GET / HTTP/1.1\r\nHost: nope.service.consul\r\nConnection: close\r\n\r\n"]).await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
}
