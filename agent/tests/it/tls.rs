//! TLS on the server port and the HTTPS API, with certificates made by `agent tls`: a cluster
//! that speaks only mutual TLS among its servers, an agent from another CA refused on both
//! sides, HTTPS that requires a client certificate, and plain HTTP on the HTTPS port refused as Go
//! refuses it.

use crate::harness::{bin, wait_for, TestAgent};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn agent_cli(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).current_dir(dir).output().expect("run agent cli");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A CA and a server certificate (and a client one) in `dir`, as an operator makes them.
fn make_pki(dir: &Path) {
    let ca = agent_cli(dir, &["tls", "ca", "create"]);
    assert!(ca.contains("==> Saved consul-agent-ca.pem") && ca.contains("==> Saved consul-agent-ca-key.pem"), "{ca}");
    let server = agent_cli(dir, &["tls", "cert", "create", "-server", "-dc", "dc1"]);
    assert!(server.contains("==> WARNING: Server Certificates grants authority"), "{server}");
    assert!(server.contains("==> Saved dc1-server-consul-0.pem") && server.contains("dc1-server-consul-0-key.pem"));
    let client = agent_cli(dir, &["tls", "cert", "create", "-client"]);
    assert!(client.contains("==> Saved dc1-client-consul-0.pem"), "{client}");
    let again = Command::new(bin()).args(["tls", "ca", "create"]).current_dir(dir).output().expect("run");
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already exists."));
}

fn tls_config(pki: &Path, dir: &Path, cert: &str) -> String {
    let p = |f: &str| pki.join(f).display().to_string();
    let cfg = serde_json::json!({
        "ports": {"https": 8501},
        "tls": {
            "defaults": {
                "ca_file": p("consul-agent-ca.pem"),
                "cert_file": p(&format!("{cert}.pem")),
                "key_file": p(&format!("{cert}-key.pem")),
                "verify_incoming": true,
                "verify_outgoing": true
            },
            "internal_rpc": {"verify_server_hostname": true}
        }
    });
    let path = dir.join("tls.json");
    std::fs::write(&path, cfg.to_string()).expect("write");
    format!("-config-file={}", path.display())
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl").args(["-s", "--max-time", "10"]).args(args).output().expect("curl");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
}

#[tokio::test]
async fn servers_speak_mutual_tls_and_refuse_strangers() {
    let pki = tempfile::tempdir().expect("tempdir");
    make_pki(pki.path());
    let ips = ["127.0.126.1", "127.0.126.2", "127.0.126.3"];
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let servers: Vec<TestAgent> = ips
        .iter()
        .zip(&dirs)
        .map(|(ip, d)| {
            let cfg = tls_config(pki.path(), d.path(), "dc1-server-consul-0");
            TestAgent::member(ip, Some(3), &["127.0.126.1"], &[&cfg])
        })
        .collect();
    for s in &servers {
        s.ready().await;
    }
    // Raft and forwarding ran over TLS: a write through each server lands.
    for (i, s) in servers.iter().enumerate() {
        let r = s.put(&format!("/v1/kv/tls/{i}"), "v").await;
        assert_eq!(r.status, 200, "write through server {i}");
    }
    // The server port refuses plain connections (verify_incoming).
    {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect("127.0.126.2:8300").expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let _ = c.write_all(b"GET /v1/status/leader HTTP/1.1\r\nHost: 127.0.126.2\r\nX-Consul-Peer: cluster\r\nX-Consul-Forward-Hops: 1\r\n\r\n");
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        assert!(out.is_empty(), "a plain request got an answer: {}", String::from_utf8_lossy(&out));
    }
    wait_for(Duration::from_secs(10), "the refusal logged", || async {
        servers[1].log().contains("refused a plain connection").then_some(())
    })
    .await;

    // HTTPS with verify_incoming: no client certificate, no answer; with one, the API.
    let ca = pki.path().join("consul-agent-ca.pem").display().to_string();
    let cert = pki.path().join("dc1-client-consul-0.pem").display().to_string();
    let key = pki.path().join("dc1-client-consul-0-key.pem").display().to_string();
    let (ok, _) =
        curl(&["--cacert", &ca, "--resolve", "localhost:8501:127.0.126.1", "https://localhost:8501/v1/status/leader"]);
    assert!(!ok, "HTTPS without a client certificate must fail");
    let (ok, body) = curl(&[
        "--cacert",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "--resolve",
        "localhost:8501:127.0.126.1",
        "https://localhost:8501/v1/kv/tls/0?raw",
    ]);
    assert!(ok && body == "v", "HTTPS with a client certificate: {ok} {body}");
    // Plain HTTP on the HTTPS port: Go's answer.
    let (_, body) = curl(&["http://127.0.126.1:8501/v1/status/leader"]);
    assert_eq!(body, "Client sent an HTTP request to an HTTPS server.\n");

    // An agent whose certificate comes from another CA: its RPCs fail, with a clear line on
    // both sides.
    let other = tempfile::tempdir().expect("tempdir");
    make_pki(other.path());
    let cdir = tempfile::tempdir().expect("tempdir");
    let ccfg = tls_config(other.path(), cdir.path(), "dc1-client-consul-0");
    let stranger = TestAgent::member("127.0.126.4", None, &["127.0.126.1"], &[&ccfg]);
    wait_for(Duration::from_secs(30), "the stranger's RPC refused", || async {
        let log = stranger.log();
        (log.contains("invalid peer certificate") || log.contains("UnknownIssuer")).then_some(())
    })
    .await;
    wait_for(Duration::from_secs(30), "the servers log the failed handshake", || async {
        servers.iter().any(|s| s.log().contains("rpc: TLS handshake failed")).then_some(())
    })
    .await;
    let r = stranger.get("/v1/kv/tls/0").await;
    assert_ne!(r.status, 200, "a stranger must not read the KV store");
}
