//! Bad or ambiguous input is refused the way Consul (Go's HTTP server under it) refuses it, and
//! one client's flood of connections does not take the API from another.

use crate::harness::{json, text, TestAgent};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Connects to `to` from the source address `from` (loopback connections otherwise all leave
/// from 127.0.0.1).
fn connect_from(from: &str, to: &str) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let to: SocketAddr = to.parse().expect("addr");
    let from: SocketAddr = format!("{from}:0").parse().expect("addr");
    // SAFETY: a fresh socket is bound and connected, then owned by the TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let sa = |a: SocketAddr| -> libc::sockaddr_in {
            let SocketAddr::V4(v4) = a else { unreachable!("ipv4 only") };
            libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
                sin_zero: [0; 8],
            }
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        let f = sa(from);
        if libc::bind(fd, &f as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let t = sa(to);
        if libc::connect(fd, &t as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Sends `request` and reads until the server closes (or 10 s pass); returns the raw answer.
fn exchange(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test]
async fn heads_methods_and_flags_are_refused_as_consul_refuses_them() {
    let a = TestAgent::start("127.0.122.1", true, &[]);
    a.ready().await;
    let addr = "127.0.122.1:8500";

    // HTTP/1.1 needs exactly one Host, as Go's server demands; the connection is then closed.
    let r = exchange(addr, b"GET /v1/status/leader HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.ends_with("400 Bad Request: missing required Host header"), "{r}");
    assert!(r.to_lowercase().contains("connection: close"), "{r}");
    let r = exchange(addr, b"GET /v1/status/leader HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400") && r.ends_with("400 Bad Request: too many Host headers"), "{r}");
    let r = exchange(addr, b"GET /v1/status/leader HTTP/1.0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"), "HTTP/1.0 needs no Host: {r}");

    // A browser form cannot write: POST is not a KV method (Consul registers GET, PUT, DELETE).
    let form = b"POST /v1/kv/x HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\n\
Content-Length: 5\r\nConnection: close\r\n\r\na=b&c";
    let r = exchange(addr, form);
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    assert!(r.contains("Allow: OPTIONS,GET,PUT,DELETE") || r.contains("allow: OPTIONS,GET,PUT,DELETE"), "{r}");
    assert!(r.ends_with("method POST not allowed"), "{r}");
    assert_eq!(a.get("/v1/kv/x").await.status, 404, "nothing was written");
    let r = exchange(addr, b"OPTIONS /v1/agent/service/register HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200") && r.to_lowercase().contains("allow: options,put"), "{r}");
    assert!(!r.to_lowercase().contains("access-control-allow"), "no CORS grant: {r}");

    // Flags that cannot be combined, with the query echoed as Go encodes it.
    let r = a.put("/v1/kv/x?cas=0&acquire=abc", "v").await;
    assert_eq!((r.status, text(&r)), (400, "Conflicting flags: acquire=abc&cas=0\n".to_string()));
    let r = a.delete("/v1/kv/x?recurse&cas=3").await;
    assert_eq!((r.status, text(&r)), (400, "Conflicting flags: cas=3&recurse=\n".to_string()));
    let r = a.put("/v1/kv/x?release=a&acquire=b", "v").await;
    assert_eq!(r.status, 400);

    // Raw KV values are neither sniffed nor run by a browser.
    assert_eq!(a.put("/v1/kv/page", "<script>alert(1)</script>").await.status, 200);
    let r = exchange(addr, b"GET /v1/kv/page?raw HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let lower = r.to_lowercase();
    assert!(lower.contains("x-content-type-options: nosniff"), "{r}");
    assert!(lower.contains("content-security-policy: sandbox"), "{r}");
    assert!(lower.contains("content-type: text/plain"), "{r}");
}

#[tokio::test]
async fn json_of_the_wrong_type_is_400_naming_the_field_never_coerced() {
    let a = TestAgent::start("127.0.122.2", true, &[]);
    a.ready().await;
    let r = a.put("/v1/agent/service/register", r#"{"Name":0,"Port":"8080","Tags":5}"#).await;
    assert_eq!(
        (r.status, text(&r)),
        (
            400,
            "Request decode failed: json: cannot unmarshal number into Go struct field ServiceDefinition.Name of type string"
                .to_string()
        )
    );
    let r = a.put("/v1/agent/service/register", r#"{"Name":"web","Port":"8080"}"#).await;
    assert_eq!(r.status, 400);
    assert!(text(&r).contains("ServiceDefinition.Port of type int"), "{}", text(&r));
    let r = a.put("/v1/agent/service/register", r#"{"Name":"web","Check":{"TTL":"10s","Interval":[1]}}"#).await;
    assert!(r.status == 400 && text(&r).contains("ServiceDefinition.Check.Interval"), "{}", text(&r));
    assert_eq!(json(&a.get("/v1/agent/services").await), serde_json::json!({}), "nothing registered");
    let r = a.put("/v1/agent/check/register", r#"{"Name":"c","TTL":"10s","Notes":false}"#).await;
    assert!(r.status == 400 && text(&r).contains("CheckDefinition.Notes of type string"), "{}", text(&r));

    // Catalog writes: a Datacenter or Node that is not a string is the client's error (was 500).
    for body in [
        r#"{"Datacenter": 5, "Node": "n1", "Address": "10.0.0.1"}"#,
        r#"{"Node": 5, "Address": "10.0.0.1"}"#,
        r#"{"Node": "n1", "Address": "10.0.0.1", "Service": {"Service": "s", "Port": "80"}}"#,
        r#"{"Node": "n1", "Address": "10.0.0.1", "NodeMeta": {"a": 1}}"#,
    ] {
        let r = a.put("/v1/catalog/register", body).await;
        assert_eq!(r.status, 400, "{body}: {}", text(&r));
        assert!(text(&r).starts_with("Request decode failed: json: cannot unmarshal"), "{}", text(&r));
    }
    let r = a.put("/v1/catalog/deregister", r#"{"Node": ["n1"]}"#).await;
    assert_eq!(r.status, 400);
    let r = a.put("/v1/session/create", r#"{"TTL": 10}"#).await;
    assert_eq!(r.status, 400, "{}", text(&r));
    let r = a.put("/v1/txn", r#"[{"KV": {"Verb": "set", "Key": "k", "Flags": "1"}}]"#).await;
    assert_eq!(r.status, 400, "{}", text(&r));

    // The coordinate update checks its body.
    for (body, status) in [
        (r#"{"Node": 1}"#, 400),
        (r#"{"Node": "n"}"#, 400),
        (r#"{"Node": "n", "Coord": {"Vec": ["a"]}}"#, 400),
        (r#"{"Node": "n", "Coord": {"Vec": [0,0,0], "Error": 1.5, "Height": 0.0001}}"#, 500),
        (r#"{"Node": "n", "Coord": {"Vec": [0,0,0,0,0,0,0,0], "Error": 1.5, "Adjustment": 0, "Height": 0.0001}}"#, 200),
        ("not json", 400),
    ] {
        let r = a.put("/v1/coordinate/update", body).await;
        assert_eq!(r.status, status, "{body}: {}", text(&r));
    }
}

#[tokio::test]
async fn unknown_filter_selectors_are_400() {
    let a = TestAgent::start("127.0.122.3", true, &[]);
    a.ready().await;
    assert_eq!(
        a.put("/v1/agent/service/register", r#"{"Name":"web","Port":80,"Meta":{"env":"prod"}}"#).await.status,
        200
    );
    let q = |f: &str| format!("?filter={}", f.replace(' ', "%20").replace('"', "%22").replace('=', "%3D"));
    for (path, f) in [
        ("/v1/agent/services", "Nope == x"),
        ("/v1/catalog/service/web", "Service.Nope == x"),
        ("/v1/health/service/web", "Service.Nope == x"),
        ("/v1/health/service/web", "Checks.Nope == x"),
        ("/v1/catalog/nodes", "Node.Address == x"),
    ] {
        let r = a.get(&format!("{path}{}", q(f))).await;
        assert_eq!(r.status, 400, "{path} {f}: {}", text(&r));
        assert!(text(&r).contains("is not valid"), "{}", text(&r));
    }
    for (path, f) in [
        ("/v1/agent/services", "Meta.env == prod"),
        ("/v1/catalog/service/web", "ServiceMeta.env == prod"),
        ("/v1/health/service/web", "Service.Meta.env == prod and Checks.Status != critical"),
        ("/v1/health/service/web", "Node.Meta.anything is empty"),
        ("/v1/catalog/nodes", "Meta.x is empty and Address != 1"),
    ] {
        let r = a.get(&format!("{path}{}", q(f))).await;
        assert_eq!(r.status, 200, "{path} {f}: {}", text(&r));
    }
}

#[tokio::test]
async fn write_networks_and_response_headers_from_http_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("http.json");
    std::fs::write(
        &cfg,
        r#"{"http_config": {"allow_write_http_from": ["10.0.0.0/8"], "response_headers": {"X-Frame-Options": "DENY"}}}"#,
    )
    .expect("write");
    let a = TestAgent::start("127.0.122.4", true, &[&format!("-config-file={}", cfg.display())]);
    a.ready().await;
    // This test's connections come from 127.0.0.1, outside 10.0.0.0/8.
    let r = a.put("/v1/kv/x", "v").await;
    assert_eq!((r.status, text(&r)), (403, "Access is restricted".to_string()));
    let r = exchange("127.0.122.4:8500", b"GET /v1/status/leader HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200") && r.to_lowercase().contains("x-frame-options: deny"), "{r}");
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

#[tokio::test]
async fn a_flood_from_one_address_does_not_take_the_api_from_another() {
    raise_fd_limit();
    let a = TestAgent::start("127.0.122.5", true, &[]);
    a.ready().await;
    let api = "127.0.122.5:8500";
    let flooder = "127.0.122.50";
    let other = "127.0.122.51";

    // 500 slowloris connections (half a request head each), then 5,000 idle ones.
    let mut slow = Vec::new();
    for _ in 0..500 {
        if let Ok(mut s) = connect_from(flooder, api) {
            let _ = s.write_all(b"GET /v1/kv/x HTTP/1.1\r\nHost: a\r\nX-Slow: ");
            slow.push(s);
        }
    }
    let mut idle = Vec::new();
    for _ in 0..5000 {
        if let Ok(s) = connect_from(flooder, api) {
            idle.push(s);
        }
    }
    // Over its limit (200 by default) the flooder is told 429 and closed at once.
    let mut told = 0;
    for s in idle.iter_mut().rev().take(50) {
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        if buf.starts_with("HTTP/1.1 429 Too Many Requests") {
            told += 1;
        }
    }
    assert_eq!(told, 50, "connections past the per-client limit get 429");

    // Meanwhile another address is answered as usual, over new connections each time.
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let started = Instant::now();
        let mut s = connect_from(other, api).expect("connect from the other address");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s.write_all(
            format!("PUT /v1/kv/k{i} HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nConnection: close\r\n\r\nv")
                .as_bytes(),
        )
        .expect("write");
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        assert!(buf.starts_with("HTTP/1.1 200"), "request {i} from the other address: {buf}");
        slowest = slowest.max(started.elapsed());
    }
    // Generous: a request on this box takes milliseconds; this only catches "not answered".
    assert!(slowest < Duration::from_secs(1), "slowest answer to the other address: {slowest:?}");

    // The slowloris connections are closed once the head deadline passes (10 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in &slow {
        s.set_nonblocking(true).expect("nonblocking");
    }
    loop {
        let mut open = 0;
        for s in slow.iter_mut() {
            let mut b = [0u8; 256];
            loop {
                match s.read(&mut b) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        open += 1;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} slowloris connections still open after 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
