//! The agent's clients over TLS, with certificates made by `agent tls`: the CLI against an agent
//! that serves only HTTPS and requires client certificates (`verify_incoming`), by flags and by
//! Consul's environment variables; and HTTPS health checks against a local TLS server, with and
//! without `TLSSkipVerify`, and with the agent's own certificate (`enable_agent_tls_for_checks`).
//! Addresses 127.0.150.1-127.0.150.19.

use crate::harness::{bin, wait_for, TestAgent};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// `agent tls ...` in `dir`.
fn tls_cli(dir: &Path, args: &[&str]) {
    let out = Command::new(bin()).args(args).current_dir(dir).output().expect("run agent tls");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a server certificate (also for `extra_ip`), a client one and a CLI one, as an operator
/// makes them.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new(extra_ip: &str) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        tls_cli(dir.path(), &["tls", "ca", "create"]);
        tls_cli(dir.path(), &["tls", "cert", "create", "-server", "-dc", "dc1", "-additional-ipaddress", extra_ip]);
        tls_cli(dir.path(), &["tls", "cert", "create", "-client"]);
        tls_cli(dir.path(), &["tls", "cert", "create", "-cli"]);
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub fn ca(&self) -> String {
        self.path("consul-agent-ca.pem")
    }
}

/// An agent config file: HTTPS on 8501 requiring client certificates from the CA; plain HTTP off
/// unless `plain_http`.
pub fn https_config(pki: &Pki, dir: &Path, plain_http: bool) -> String {
    let mut cfg = serde_json::json!({
        "ports": {"https": 8501},
        "tls": {
            "defaults": {
                "ca_file": pki.ca(),
                "cert_file": pki.path("dc1-server-consul-0.pem"),
                "key_file": pki.path("dc1-server-consul-0-key.pem"),
                "verify_incoming": true,
                "verify_outgoing": true
            },
            "internal_rpc": {"verify_server_hostname": true}
        }
    });
    if !plain_http {
        cfg["ports"]["http"] = serde_json::json!(-1);
    }
    let path = dir.join("https.json");
    std::fs::write(&path, cfg.to_string()).expect("write config");
    format!("-config-file={}", path.display())
}

/// The CLI with only the environment given: every `CONSUL_*` of the test's own is removed.
fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).stdin(Stdio::null());
    for k in [
        "CONSUL_HTTP_ADDR",
        "CONSUL_HTTP_TOKEN",
        "CONSUL_HTTP_TOKEN_FILE",
        "CONSUL_HTTP_SSL",
        "CONSUL_HTTP_SSL_VERIFY",
        "CONSUL_CACERT",
        "CONSUL_CAPATH",
        "CONSUL_CLIENT_CERT",
        "CONSUL_CLIENT_KEY",
        "CONSUL_TLS_SERVER_NAME",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run agent CLI")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn refused(o: &Output, what: &str) -> String {
    assert!(!o.status.success(), "{what} must fail: {}", text(&o.stdout));
    assert!(o.status.code().is_some_and(|c| c != 0), "{what}: a non-zero exit code");
    text(&o.stderr)
}

/// An HTTPS client for the test's own readiness checks.
fn test_client(pki: &Pki, ip: &str) -> api::Client {
    let tls = api::TlsOptions {
        ca_file: Some(pki.ca().into()),
        cert_file: Some(pki.path("dc1-client-consul-0.pem").into()),
        key_file: Some(pki.path("dc1-client-consul-0-key.pem").into()),
        ..Default::default()
    }
    .load()
    .expect("test TLS options");
    api::Client::https(&format!("{ip}:8501"), &tls).expect("client")
}

#[tokio::test]
async fn the_cli_speaks_https_with_client_certificates_from_flags_or_the_environment() {
    let ip = "127.0.150.1";
    let pki = Pki::new(ip);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = https_config(&pki, dir.path(), false);
    let mut agent = TestAgent::start_in(ip, false, &[&cfg], dir);
    agent.client = test_client(&pki, ip);
    agent.ready().await;

    let addr = format!("https://{ip}:8501");
    let (ca, cert, key) = (pki.ca(), pki.path("dc1-cli-consul-0.pem"), pki.path("dc1-cli-consul-0-key.pem"));
    // By flags. The server's certificate names server.dc1.consul, localhost, 127.0.0.1 and this
    // agent's address.
    let flags = |cmd: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = cmd[..cmd.len().min(2)].iter().map(|s| s.to_string()).collect();
        v.extend([
            format!("-http-addr={addr}"),
            format!("-ca-file={ca}"),
            format!("-client-cert={cert}"),
            format!("-client-key={key}"),
        ]);
        v.extend(cmd[cmd.len().min(2)..].iter().map(|s| s.to_string()));
        v
    };
    let run = |cmd: &[&str], env: &[(&str, &str)]| {
        let args = flags(cmd);
        cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), env)
    };
    let out = ok(&run(&["kv", "put", "tls/flags", "over-https"], &[]), "kv put by flags");
    assert_eq!(out, "Success! Data written to: tls/flags");
    assert_eq!(ok(&run(&["kv", "get", "tls/flags"], &[]), "kv get by flags"), "over-https");
    let members = ok(
        &cli(
            &[
                "members",
                &format!("-http-addr={addr}"),
                &format!("-ca-file={ca}"),
                &format!("-client-cert={cert}"),
                &format!("-client-key={key}"),
            ],
            &[],
        ),
        "members by flags",
    );
    assert!(members.contains("node-127-0-150-1") && members.contains("alive"), "{members}");
    // -tls-server-name checks another of the certificate's names.
    let named = cli(
        &[
            "kv",
            "get",
            &format!("-http-addr={addr}"),
            &format!("-ca-file={ca}"),
            &format!("-client-cert={cert}"),
            &format!("-client-key={key}"),
            "-tls-server-name=server.dc1.consul",
            "tls/flags",
        ],
        &[],
    );
    assert_eq!(ok(&named, "kv get with -tls-server-name"), "over-https");
    let wrong = cli(
        &[
            "kv",
            "get",
            &format!("-http-addr={addr}"),
            &format!("-ca-file={ca}"),
            &format!("-client-cert={cert}"),
            &format!("-client-key={key}"),
            "-tls-server-name=web.example.com",
            "tls/flags",
        ],
        &[],
    );
    let e = refused(&wrong, "a server name the certificate does not carry");
    assert!(e.contains("x509: certificate is valid for") && e.contains("not web.example.com"), "{e}");

    // By Consul's environment: a bare host:port with CONSUL_HTTP_SSL=true.
    let env_addr = format!("{ip}:8501");
    let env = [
        ("CONSUL_HTTP_ADDR", env_addr.as_str()),
        ("CONSUL_HTTP_SSL", "true"),
        ("CONSUL_CACERT", ca.as_str()),
        ("CONSUL_CLIENT_CERT", cert.as_str()),
        ("CONSUL_CLIENT_KEY", key.as_str()),
    ];
    ok(&cli(&["kv", "put", "tls/env", "by-env"], &env), "kv put by env");
    assert_eq!(ok(&cli(&["kv", "get", "tls/env"], &env), "kv get by env"), "by-env");
    let members = ok(&cli(&["members"], &env), "members by env");
    assert!(members.contains("node-127-0-150-1"), "{members}");
    // CONSUL_CAPATH: a directory of CA files.
    let cas = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&ca, cas.path().join("ca.pem")).expect("copy ca");
    let capath = cas.path().display().to_string();
    let by_dir = [
        ("CONSUL_HTTP_ADDR", addr.as_str()),
        ("CONSUL_CAPATH", capath.as_str()),
        ("CONSUL_CLIENT_CERT", cert.as_str()),
        ("CONSUL_CLIENT_KEY", key.as_str()),
        ("CONSUL_TLS_SERVER_NAME", "localhost"),
    ];
    assert_eq!(ok(&cli(&["kv", "get", "tls/env"], &by_dir), "kv get with CONSUL_CAPATH"), "by-env");

    // Refused without a client certificate: a clear error and a non-zero exit.
    let no_cert = [("CONSUL_HTTP_ADDR", addr.as_str()), ("CONSUL_CACERT", ca.as_str())];
    let e = refused(&cli(&["kv", "get", "tls/env"], &no_cert), "kv get without a client certificate");
    assert!(e.contains(&format!("Get \"{addr}/v1/kv/tls/env\"")), "{e}");
    assert!(e.contains("remote error: tls: certificate required"), "{e}");
    let e = refused(&cli(&["members"], &no_cert), "members without a client certificate");
    assert!(e.contains("remote error: tls: certificate required"), "{e}");
    // Not the CA: the system's roots do not know it.
    let no_ca = [
        ("CONSUL_HTTP_ADDR", addr.as_str()),
        ("CONSUL_CLIENT_CERT", cert.as_str()),
        ("CONSUL_CLIENT_KEY", key.as_str()),
    ];
    let e = refused(&cli(&["kv", "get", "tls/env"], &no_ca), "kv get without the CA");
    assert!(e.contains("x509: certificate signed by unknown authority"), "{e}");
    // ... unless verification is turned off, which only CONSUL_HTTP_SSL_VERIFY=false does.
    let mut insecure = no_ca.to_vec();
    insecure.push(("CONSUL_HTTP_SSL_VERIFY", "false"));
    assert_eq!(ok(&cli(&["kv", "get", "tls/env"], &insecure), "CONSUL_HTTP_SSL_VERIFY=false"), "by-env");
    // Plain HTTP to the HTTPS port fails (the agent answers Go's 400 and closes; whether the
    // client reads it before the reset depends on timing, as with Go's server).
    let plain = [("CONSUL_HTTP_ADDR", env_addr.as_str())];
    let e = refused(&cli(&["kv", "get", "tls/env"], &plain), "plain HTTP to the HTTPS port");
    assert!(e.contains(&format!("Get \"http://{env_addr}/v1/kv/tls/env\"")), "{e}");
    // A file that cannot be read is named.
    let e = refused(&cli(&["kv", "get", "-ca-file=/nonexistent/ca.pem", "tls/env"], &env), "a missing CA file");
    assert!(e.contains("reading CA file /nonexistent/ca.pem: no such file or directory"), "{e}");
}

/// A TLS server on `ip` answering every HTTP request with 200 `ok`; with `ca`, only clients
/// whose certificate that CA signed get through the handshake.
async fn tls_server(ip: &str, cert: &str, key: &str, ca: Option<&str>) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).expect("cert").collect::<Result<_, _>>().expect("cert");
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    let b = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("tls");
    let b = match ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).expect("ca") {
                roots.add(c.expect("ca")).expect("ca");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
            b.with_client_cert_verifier(verifier)
        }
        None => b.with_no_client_auth(),
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(b.with_single_cert(certs, key).expect("cert")));
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else { return };
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

async fn register_check(agent: &TestAgent, def: serde_json::Value) {
    let r = agent.put("/v1/agent/check/register", &def.to_string()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// Waits until the check has run and its status is `want`; returns its output.
async fn check_status(agent: &TestAgent, id: &str, want: &str) -> String {
    wait_for(Duration::from_secs(20), &format!("check {id} {want}"), || async {
        let r = agent.get("/v1/agent/checks").await;
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        let c = v.get(id)?;
        let out = c["Output"].as_str().unwrap_or("").to_string();
        (c["Status"] == want && !out.is_empty()).then_some(out)
    })
    .await
}

#[tokio::test]
async fn https_health_checks_with_and_without_tls_skip_verify_and_with_the_agents_certificate() {
    let pki = Pki::new("127.0.150.11");
    let (cert, key) = (pki.path("dc1-server-consul-0.pem"), pki.path("dc1-server-consul-0-key.pem"));
    let open = tls_server("127.0.150.11", &cert, &key, None).await;
    let mutual = tls_server("127.0.150.11", &cert, &key, Some(&pki.ca())).await;

    // An agent without enable_agent_tls_for_checks: the system's roots, no certificate.
    let plain = TestAgent::start("127.0.150.10", true, &[]);
    plain.ready().await;
    let check = |id: &str, url: &str, skip: bool, name: &str| {
        serde_json::json!({"ID": id, "Name": id, "HTTP": url, "Interval": "200ms", "TLSSkipVerify": skip,
                           "TLSServerName": name})
    };
    register_check(&plain, check("verify", &format!("https://{open}/health"), false, "")).await;
    register_check(&plain, check("skip", &format!("https://{open}/health"), true, "")).await;
    register_check(&plain, check("skip-mutual", &format!("https://{mutual}/health"), true, "")).await;
    let out = check_status(&plain, "verify", "critical").await;
    assert!(out.contains("x509: certificate signed by unknown authority"), "{out}");
    let out = check_status(&plain, "skip", "passing").await;
    assert!(out.contains("200 OK Output: ok"), "{out}");
    let out = check_status(&plain, "skip-mutual", "critical").await;
    assert!(out.contains("certificate required"), "{out}");

    // With enable_agent_tls_for_checks: the agent's CA is trusted and its certificate presented.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("checks.json");
    let body = serde_json::json!({
        "enable_agent_tls_for_checks": true,
        "tls": {"defaults": {"ca_file": pki.ca(), "cert_file": pki.path("dc1-client-consul-0.pem"),
                             "key_file": pki.path("dc1-client-consul-0-key.pem")}}
    });
    std::fs::write(&cfg, body.to_string()).expect("write config");
    let cfg_flag = format!("-config-file={}", cfg.display());
    let agent_tls = TestAgent::start_in("127.0.150.12", true, &[&cfg_flag], dir);
    agent_tls.ready().await;
    register_check(&agent_tls, check("mutual", &format!("https://{mutual}/health"), false, "")).await;
    register_check(&agent_tls, check("named", &format!("https://{mutual}/health"), false, "server.dc1.consul")).await;
    register_check(&agent_tls, check("misnamed", &format!("https://{mutual}/health"), false, "web.example.com")).await;
    let out = check_status(&agent_tls, "mutual", "passing").await;
    assert_eq!(out, format!("HTTP GET https://{mutual}/health: 200 OK Output: ok"));
    check_status(&agent_tls, "named", "passing").await;
    let out = check_status(&agent_tls, "misnamed", "critical").await;
    assert!(out.contains("not web.example.com"), "{out}");
}
