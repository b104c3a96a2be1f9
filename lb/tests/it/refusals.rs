//! Requests nginx refuses are refused by lb with nginx's status line and page title, never
//! forwarded, and their connection is closed; on every request path and at any position on a
//! connection. Slow clients are closed by the header and keep-alive timeouts. Raw bytes on both
//! sides, as in `fast_path.rs`. When `nginx` is installed, the real one is asked the same
//! questions and must give the same answers.

use crate::fake::Cluster;
use crate::fast_path::{exchange, responses, setup, RawBackend};
use crate::net;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "Host: raw.service.consul\r\n";

/// Reads one response with a `Content-Length` body from `s`.
async fn read_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text;
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .expect("read");
        assert!(n > 0, "lb closed before answering: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
}

/// Asserts that `got` ends with lb's refusal: nginx's status line and page title, and the
/// connection closing.
fn assert_refused(what: &str, got: &str, status: &str, title: &str, why: &str) {
    let rs = responses(got, &[]);
    let Some((line, head, body)) = rs.last() else { panic!("{what}: no answer") };
    assert_eq!(line, status, "{what}: {got}");
    assert!(head.contains("\r\nConnection: close\r\n"), "{what}: {got}");
    assert_eq!(body.lines().next(), Some(title), "{what}: {got}");
    assert!(body.contains(why), "{what}: {got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_requests_get_400_on_either_path_and_nothing_after_them_is_read() {
    let ip = net(75);
    let cluster = Cluster::new();
    let backend = RawBackend::start(&ip(21)).await;
    let (_agents, lb) = setup(&ip, &cluster, &backend, None).await;
    let h = HOST;
    let cases = [
        (
            "Content-Length with Transfer-Encoding",
            format!("POST /refused HTTP/1.1\r\n{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            "both Content-Length and Transfer-Encoding",
        ),
        (
            "two equal Content-Length headers",
            format!("POST /refused HTTP/1.1\r\n{h}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
            "two Content-Length headers",
        ),
        (
            "a Content-Length list",
            format!("POST /refused HTTP/1.1\r\n{h}Content-Length: 5, 5\r\n\r\nhello"),
            "an invalid Content-Length",
        ),
        (
            "a Content-Length with a letter",
            format!("POST /refused HTTP/1.1\r\n{h}Content-Length: 5x\r\n\r\nhello"),
            "an invalid Content-Length",
        ),
        (
            "a negative Content-Length",
            format!("POST /refused HTTP/1.1\r\n{h}Content-Length: -5\r\n\r\nhello"),
            "an invalid Content-Length",
        ),
        (
            "an overflowing Content-Length",
            format!("POST /refused HTTP/1.1\r\n{h}Content-Length: 99999999999999999999\r\n\r\nhello"),
            "an invalid Content-Length",
        ),
        ("no Host", "GET /refused HTTP/1.1\r\n\r\n".to_string(), "without a Host header"),
        ("two Hosts", format!("GET /refused HTTP/1.1\r\n{h}{h}\r\n"), "two Host headers"),
    ];
    // The refused request first on its connection, after a request the fast path answered,
    // and after requests pingora answered (a 503 page, lb's own endpoint): each time with a
    // request pipelined behind it that must not be read.
    let before = [
        ("", 0),
        ("GET /len HTTP/1.1\r\nHost: raw.service.consul\r\n\r\n", 1),
        ("GET /len HTTP/1.1\r\nHost: nope.service.consul\r\n\r\n", 1),
        ("GET /_lb/health HTTP/1.1\r\nHost: lb\r\n\r\n", 1),
    ];
    let smuggled = format!("GET /smuggled HTTP/1.1\r\n{h}\r\n");
    for (what, bad, why) in &cases {
        for (first, answered) in before {
            let got = exchange(&lb.addr, &[format!("{first}{bad}{smuggled}").as_bytes()]).await;
            let what = format!("{what} after {first:?}");
            assert_eq!(responses(&got, &[]).len(), answered + 1, "{what}: {got}");
            assert_refused(&what, &got, "HTTP/1.1 400 Bad Request", "400 Bad Request", why);
        }
        // The same on a kept-alive connection, sent after pingora's answer came back.
        let mut s = TcpStream::connect(&lb.addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: nope.service.consul\r\n\r\n").await.expect("write");
        let first = read_response(&mut s).await;
        assert!(first.starts_with("HTTP/1.1 503 "), "{first}");
        s.write_all(format!("{bad}{smuggled}").as_bytes()).await.expect("write");
        let mut rest = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut rest))
            .await
            .expect("lb closed the connection")
            .expect("read");
        assert_refused(what, &rest, "HTTP/1.1 400 Bad Request", "400 Bad Request", why);
    }

    // Transfer-Encoding that nginx does not take.
    let got = exchange(
        &lb.addr,
        &[format!("POST /refused HTTP/1.1\r\n{h}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n").as_bytes()],
    )
    .await;
    assert_refused("gzip", &got, "HTTP/1.1 501 Not Implemented", "501 Not Implemented", "other than chunked");
    let got = exchange(
        &lb.addr,
        &[format!("POST /refused HTTP/1.0\r\n{h}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n").as_bytes()],
    )
    .await;
    assert_refused("HTTP/1.0 chunked", &got, "HTTP/1.1 400 Bad Request", "400 Bad Request", "HTTP/1.0");

    // The requests before the refused ones were answered; nothing refused or behind a refusal
    // reached the instance.
    let heads = backend.heads();
    assert!(heads.iter().any(|h| h.starts_with("GET /len ")), "{heads:?}");
    assert!(!heads.iter().any(|h| h.contains("/refused") || h.contains("/smuggled")), "{heads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_nginx_answers_as_soon_as_they_cannot_fit() {
    let ip = net(76);
    let cluster = Cluster::new();
    let backend = RawBackend::start(&ip(21)).await;
    let (_agents, lb) = setup(&ip, &cluster, &backend, None).await;
    let h = HOST;
    // A request line of `total` bytes, CRLF included.
    let request_line = |path: &str, total: usize| {
        let pad = total - format!("GET {path}? HTTP/1.1\r\n").len();
        format!("GET {path}?{} HTTP/1.1\r\n", "a".repeat(pad))
    };
    // A header line of `total` bytes, CRLF included.
    let header_line = |total: usize| format!("X-Pad: {}\r\n", "b".repeat(total - 9));
    let ok = |extra: String| format!("GET /len HTTP/1.1\r\n{h}{extra}Connection: close\r\n\r\n");

    // nginx's limits are inclusive: an 8192-byte line passes, 8193 does not.
    let got =
        exchange(&lb.addr, &[format!("{}{h}Connection: close\r\n\r\n", request_line("/len", 8192)).as_bytes()]).await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{}", &got[..got.len().min(200)]);
    let got =
        exchange(&lb.addr, &[format!("{}{h}Connection: close\r\n\r\n", request_line("/refused", 8193)).as_bytes()])
            .await;
    assert_refused(
        "8193-byte request line",
        &got,
        "HTTP/1.1 414 Request-URI Too Large",
        "414 Request-URI Too Large",
        "8192",
    );
    let got = exchange(&lb.addr, &[ok(header_line(8192)).as_bytes()]).await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    let got = exchange(&lb.addr, &[ok(header_line(8193)).replace("/len", "/refused").as_bytes()]).await;
    let too_large = "400 Request Header Or Cookie Too Large";
    assert_refused("8193-byte header line", &got, "HTTP/1.1 400 Bad Request", too_large, "8192");
    // Four large buffers: four 8000-byte lines fit, a fifth does not.
    let got = exchange(&lb.addr, &[ok(header_line(8000).repeat(4)).as_bytes()]).await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    let got = exchange(&lb.addr, &[ok(header_line(8000).repeat(5)).replace("/len", "/refused").as_bytes()]).await;
    assert_refused("five 8000-byte lines", &got, "HTTP/1.1 400 Bad Request", too_large, "buffers");

    // A line that never ends is refused once it is too long, without waiting for the rest; so
    // is one that comes after a request lb answered, and one after a request pingora answered.
    let endless = format!("GET /refused?{}", "a".repeat(9000));
    for first in
        ["", "GET /len HTTP/1.1\r\nHost: raw.service.consul\r\n\r\n", "GET /_lb/health HTTP/1.1\r\nHost: lb\r\n\r\n"]
    {
        let got = exchange(&lb.addr, &[format!("{first}{endless}").as_bytes()]).await;
        assert_refused(
            "an endless request line",
            &got,
            "HTTP/1.1 414 Request-URI Too Large",
            "414 Request-URI Too Large",
            "",
        );
        let got =
            exchange(&lb.addr, &[format!("{first}GET /refused HTTP/1.1\r\n{h}X-Pad: {endless}").as_bytes()]).await;
        assert_refused("an endless header line", &got, "HTTP/1.1 400 Bad Request", too_large, "");
    }

    let heads = backend.heads();
    assert!(!heads.iter().any(|h| h.contains("/refused")), "{} heads", heads.len());
}

/// How long until lb closes `s`, sending one byte of `trickle` every 100 ms meanwhile; the
/// bytes lb sent back before closing.
async fn time_to_close(s: &mut TcpStream, trickle: bool) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        let mut chunk = [0u8; 1024];
        tokio::select! {
            r = s.read(&mut chunk) => match r {
                Ok(0) | Err(_) => return (start.elapsed(), got),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            },
            _ = tick.tick(), if trickle => {
                if s.write_all(b"x").await.is_err() {
                    return (start.elapsed(), got);
                }
            }
        }
        assert!(start.elapsed() < Duration::from_secs(20), "lb kept the connection open for 20 s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_closed_by_the_header_and_keepalive_timeouts() {
    let ip = net(77);
    let cluster = Cluster::new();
    let backend = RawBackend::start(&ip(21)).await;
    let config = "client_header_timeout = \"1s\"\nkeepalive_timeout = \"3s\"\n";
    let (_agents, lb) = setup(&ip, &cluster, &backend, Some(config)).await;
    let addr = lb.addr.as_str();

    // A client that connects and says nothing; one that sends a head a byte at a time and never
    // finishes it; the same after a request pingora answered (pingora never reads a head
    // itself: the header timeout is lb's on every connection).
    let silent = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        time_to_close(&mut s, false).await
    };
    let slowloris = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /len HTTP/1.1\r\nHost: raw.service.consul\r\nX-Slow: ").await.expect("write");
        time_to_close(&mut s, true).await
    };
    let slowloris_after_pingora = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /_lb/health HTTP/1.1\r\nHost: lb\r\n\r\n").await.expect("write");
        let answer = read_response(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        s.write_all(b"GET /len HTTP/1.1\r\nX-Slow: ").await.expect("write");
        time_to_close(&mut s, true).await
    };
    // An idle kept-alive connection waits for the keep-alive timeout, not the header timeout.
    let idle = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /len HTTP/1.1\r\nHost: raw.service.consul\r\n\r\n").await.expect("write");
        let answer = read_response(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        time_to_close(&mut s, false).await
    };
    let (silent, slowloris, after_pingora, idle) = tokio::join!(silent, slowloris, slowloris_after_pingora, idle);
    for (what, (took, got)) in
        [("silent", silent), ("slowloris", slowloris), ("slowloris after pingora", after_pingora)]
    {
        assert!(got.is_empty(), "{what}: like nginx, no answer: {}", String::from_utf8_lossy(&got));
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(10), "{what}: closed after {took:?}");
    }
    let (took, got) = idle;
    assert!(got.is_empty(), "idle: {}", String::from_utf8_lossy(&got));
    assert!(took >= Duration::from_millis(2900) && took < Duration::from_secs(15), "idle: closed after {took:?}");
    assert!(!backend.heads().iter().any(|h| h.contains("X-Slow")), "{:?}", backend.heads());
}

/// nginx on `addr` with its default buffers and timeouts, answering 200 itself.
struct Nginx {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(addr: &str) -> Option<Nginx> {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display();
        let conf = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{ access_log off; server {{ listen {addr}; location / {{ return 200 \"ok\\n\"; }} }} }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("write nginx.conf");
        let child = std::process::Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(Nginx { child, _dir: dir })
    }
}

impl Drop for Nginx {
    /// SIGTERM, not SIGKILL: the master then stops its worker, which would otherwise outlive it
    /// holding the port.
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// The status line, and the title of an error page: nginx's `<title>`, lb's first body line.
fn answer(got: &str) -> (String, String) {
    let line = got.lines().next().unwrap_or("").to_string();
    let title = match got.split_once("<title>") {
        Some((_, rest)) => rest.split("</title>").next().unwrap_or("").to_string(),
        None if !line.contains(" 200 ") => {
            got.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("").lines().next().unwrap_or("").to_string()
        }
        None => String::new(),
    };
    (line, title)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nginx_gives_the_same_status_lines_and_titles() {
    let ip = net(78);
    let nginx_addr = format!("{}:{}", ip(2), 8089);
    let Some(mut nginx) = Nginx::start(&nginx_addr) else {
        eprintln!("nginx is not installed; skipping the comparison");
        return;
    };
    let cluster = Cluster::new();
    let backend = RawBackend::start(&ip(21)).await;
    let (_agents, lb) = setup(&ip, &cluster, &backend, None).await;
    crate::fake::wait_for_async("nginx to listen", || {
        let a = nginx_addr.clone();
        async move { TcpStream::connect(a).await.is_ok() }
    })
    .await;
    // The answers must be this nginx's, not those of something else on the port.
    assert!(matches!(nginx.child.try_wait(), Ok(None)), "nginx exited; is {nginx_addr} taken?");

    let h = HOST;
    let line = |n: usize| format!("GET /len?{} HTTP/1.1\r\n", "a".repeat(n - 20));
    let pad = |n: usize| format!("X-Pad: {}\r\n", "b".repeat(n - 9));
    let end = "Connection: close\r\n\r\n";
    let cases = [
        format!("{}{h}{end}", line(8192)),
        format!("{}{h}{end}", line(8193)),
        format!("GET /len HTTP/1.1\r\n{h}{}{end}", pad(8192)),
        format!("GET /len HTTP/1.1\r\n{h}{}{end}", pad(8193)),
        format!("GET /len HTTP/1.1\r\n{h}{}{end}", pad(8000).repeat(4)),
        format!("GET /len HTTP/1.1\r\n{h}{}{end}", pad(8000).repeat(5)),
        format!("GET /len HTTP/1.1\r\n{h}{}{end}", pad(4097).repeat(7)),
        format!("POST /len HTTP/1.1\r\n{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n{end}0\r\n\r\n"),
        format!("POST /len HTTP/1.1\r\n{h}Content-Length: 5\r\nContent-Length: 5\r\n{end}hello"),
        format!("POST /len HTTP/1.1\r\n{h}Content-Length: 5, 5\r\n{end}hello"),
        format!("POST /len HTTP/1.1\r\n{h}Content-Length: -5\r\n{end}hello"),
        format!("POST /len HTTP/1.1\r\n{h}Content-Length: 5x\r\n{end}hello"),
        format!("POST /len HTTP/1.1\r\n{h}Content-Length: 99999999999999999999\r\n{end}hello"),
        format!("POST /len HTTP/1.1\r\n{h}Transfer-Encoding: gzip, chunked\r\n{end}0\r\n\r\n"),
        format!("POST /len HTTP/1.0\r\n{h}Transfer-Encoding: chunked\r\n{end}0\r\n\r\n"),
        format!("GET /len HTTP/1.1\r\n{end}"),
        format!("GET /len HTTP/1.1\r\n{h}{h}{end}"),
        format!("GET /len HTTP/1.1\r\n{h}Authorization: a\r\nAuthorization: b\r\n{end}"),
        format!("GET /len HTTP/1.1\r\nHost: a..b\r\n{end}"),
        format!("GET /len HTTP/1.1\r\nHost: a/b\r\n{end}"),
        format!("GET /a b HTTP/1.1\r\n{h}{end}"),
        format!("OPTIONS * HTTP/1.1\r\n{h}{end}"),
    ];
    for case in &cases {
        let from_nginx = answer(&exchange(&nginx_addr, &[case.as_bytes()]).await);
        let from_lb = answer(&exchange(&lb.addr, &[case.as_bytes()]).await);
        let shown = &case[..case.len().min(120)];
        eprintln!("nginx {from_nginx:?}, lb {from_lb:?}");
        assert_eq!(from_lb, from_nginx, "{shown:?}");
    }
}
