use super::*;
use crate::fake::{serve, Reply};
use tokio::time::Instant;

#[tokio::test]
async fn a_hung_agent_cannot_hang_a_call_that_does_not_block() {
    let hung = serve("127.0.97.10", |_, _| Reply::hang()).await;
    let c = Client::new(&hung.addr).unwrap().with_timeout(Duration::from_millis(300));
    let t0 = Instant::now();
    assert!(matches!(c.catalog_datacenters().await, Err(Error::Timeout { .. })));
    assert!(matches!(c.request_ok(Method::PUT, "/v1/kv/k", None).await, Err(Error::Timeout { .. })));
    let (got, _) = tokio::join!(c.agent_members(), c.status_leader());
    assert!(matches!(got, Err(Error::Timeout { .. })));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(Client::new("127.0.0.1:8500").unwrap().timeout(), DEFAULT_TIMEOUT);
}

#[tokio::test]
async fn a_blocking_query_may_take_its_wait() {
    // Answers after 600 ms, past the client's 300 ms timeout but within the blocking wait.
    let slow = serve("127.0.97.11", |_, _| Reply::json(3, "[]").after(Duration::from_millis(600))).await;
    let c = Client::new(&slow.addr).unwrap().with_timeout(Duration::from_millis(300));
    let opts = QueryOptions { index: 2, wait: Some(Duration::from_secs(1)), ..Default::default() };
    let got: Option<(Vec<String>, QueryMeta)> = c.query("/v1/kv/k", &[], &opts).await.unwrap();
    assert_eq!(got.unwrap().1.last_index, 3);
}

#[tokio::test]
async fn catalog_datacenters_and_node_helpers() {
    let fake = serve("127.0.97.12", |_, path| match path {
        "/v1/catalog/datacenters" => Reply::json(1, r#"["dc1","dc2"]"#),
        "/v1/catalog/node/n1" => Reply::json(
            4,
            r#"{"Node":{"ID":"","Node":"n1","Address":"10.0.0.1","Datacenter":"dc1","TaggedAddresses":null,"Meta":{"rack":"r1"},"CreateIndex":1,"ModifyIndex":1},"Services":{"web":{"ID":"web","Service":"web","Tags":[],"Port":80}}}"#,
        ),
        "/v1/catalog/node/gone" => Reply::json(4, "null"),
        _ => Reply::status(404),
    })
    .await;
    let c = Client::new(&fake.addr).unwrap();
    assert_eq!(c.catalog_datacenters().await.unwrap(), vec!["dc1", "dc2"]);
    let (n, meta) = c.catalog_node("n1", &QueryOptions::default()).await.unwrap();
    let n = n.unwrap();
    assert_eq!(meta.last_index, 4);
    let node = n.node.unwrap();
    assert_eq!((node.node.as_str(), node.address.as_str(), node.meta["rack"].as_str()), ("n1", "10.0.0.1", "r1"));
    assert_eq!(n.services["web"].port, 80);
    assert_eq!(c.catalog_node("gone", &QueryOptions::default()).await.unwrap().0, None);
    assert_eq!(c.catalog_node("404", &QueryOptions::default()).await.unwrap().0, None);
}

mod tls {
    use super::*;
    use crate::fake::{serve_tls, Pki};
    use crate::tls::{go_tls_text, EnvTls, TlsOptions};

    fn options(pki: &Pki, client_cert: bool) -> TlsOptions {
        TlsOptions {
            ca_file: Some(pki.ca.clone()),
            cert_file: client_cert.then(|| pki.client_cert.clone()),
            key_file: client_cert.then(|| pki.client_key.clone()),
            server_name: Some("server.dc1.consul".into()),
            ..Default::default()
        }
    }

    fn tls_text(e: &Error) -> String {
        match e {
            Error::Transport { source, .. } => go_tls_text(source),
            Error::Body { source, .. } => go_tls_text(source),
            _ => None,
        }
        .unwrap_or_else(|| format!("not a TLS error: {e}"))
    }

    #[tokio::test]
    async fn https_with_the_ca_and_a_client_certificate_reaches_an_agent_that_requires_one() {
        let pki = Pki::new();
        let fake = serve_tls("127.0.97.20", pki.acceptor(true), |_, _| Reply::json(1, r#"["dc1"]"#)).await;
        let tls = options(&pki, true).load().unwrap();
        let c = Client::https(&fake.addr, &tls).unwrap();
        assert!(c.is_https() && c.base().starts_with("https://127.0.97.20:"));
        assert_eq!(c.addr(), fake.addr);
        assert_eq!(c.catalog_datacenters().await.unwrap(), vec!["dc1"]);
        // An `http://` prefix does not undo TLS that was asked for (Consul's client).
        let c = Client::https(&format!("http://{}", fake.addr), &tls).unwrap();
        assert_eq!(c.catalog_datacenters().await.unwrap(), vec!["dc1"]);
        // The CA directory form: every file of the directory is read.
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&pki.ca, dir.path().join("ca.crt")).unwrap();
        let by_dir = TlsOptions { ca_file: None, ca_path: Some(dir.path().into()), ..options(&pki, true) };
        let c = Client::https(&fake.addr, &by_dir.load().unwrap()).unwrap();
        assert_eq!(c.catalog_datacenters().await.unwrap(), vec!["dc1"]);
    }

    #[tokio::test]
    async fn refusals_read_like_gos_tls_errors() {
        let pki = Pki::new();
        let strict = serve_tls("127.0.97.21", pki.acceptor(true), |_, _| Reply::json(1, "[]")).await;
        // No client certificate for an agent that requires one.
        let c = Client::https(&strict.addr, &options(&pki, false).load().unwrap()).unwrap();
        let e = c.catalog_datacenters().await.unwrap_err();
        assert_eq!(tls_text(&e), "remote error: tls: certificate required", "{e}");
        // Not our CA: the system's roots do not know it.
        let c = Client::new(&format!("https://{}", strict.addr)).unwrap();
        let e = c.catalog_datacenters().await.unwrap_err();
        assert_eq!(tls_text(&e), "tls: failed to verify certificate: x509: certificate signed by unknown authority");
        // The address's host is checked unless a server name is given.
        let c = Client::https(&strict.addr, &TlsOptions { server_name: None, ..options(&pki, true) }.load().unwrap())
            .unwrap();
        let e = c.catalog_datacenters().await.unwrap_err();
        let text = tls_text(&e);
        assert!(text.starts_with("tls: failed to verify certificate: x509: certificate is valid for "), "{text}");
        assert!(text.ends_with("not 127.0.97.21"), "{text}");
        // Plain HTTP to a TLS port, and TLS to a plain port.
        let c = Client::new(&strict.addr).unwrap().with_timeout(Duration::from_secs(2));
        assert!(c.catalog_datacenters().await.is_err());
        // A plain HTTP server answers a TLS hello with an HTTP error.
        let plain = tokio::net::TcpListener::bind("127.0.97.22:0").await.unwrap();
        let plain_addr = plain.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut c, _)) = plain.accept().await {
                let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n").await;
            }
        });
        let c = Client::https(&plain_addr, &options(&pki, true).load().unwrap()).unwrap();
        let e = c.catalog_datacenters().await.unwrap_err();
        assert_eq!(tls_text(&e), "http: server gave HTTP response to HTTPS client");
    }

    #[tokio::test]
    async fn not_verifying_is_an_explicit_choice() {
        let pki = Pki::new();
        let fake = serve_tls("127.0.97.23", pki.acceptor(false), |_, _| Reply::json(1, r#"["dc1"]"#)).await;
        let skip = TlsOptions { insecure_skip_verify: true, ..Default::default() };
        let c = Client::https(&fake.addr, &skip.load().unwrap()).unwrap();
        assert_eq!(c.catalog_datacenters().await.unwrap(), vec!["dc1"]);
    }

    #[test]
    fn unusable_files_are_errors_that_name_them() {
        let pki = Pki::new();
        let err = |o: TlsOptions| o.load().unwrap_err().to_string();
        let nope = pki.dir.path().join("nope.pem");
        let e = err(TlsOptions { ca_file: Some(nope.clone()), ..Default::default() });
        assert_eq!(e, format!("reading CA file {}: no such file or directory", nope.display()));
        let e = err(TlsOptions { ca_file: Some(pki.client_key.clone()), ..Default::default() });
        assert!(e.starts_with(&format!("reading CA file {}: ", pki.client_key.display())), "{e}");
        let e = err(TlsOptions { ca_path: Some(nope.clone()), ..Default::default() });
        assert!(e.starts_with(&format!("reading CA path {}: ", nope.display())), "{e}");
        let e = err(TlsOptions { key_file: Some(nope.clone()), ..options(&pki, true) });
        assert_eq!(e, format!("reading client key {}: no such file or directory", nope.display()));
        let e = err(TlsOptions {
            cert_file: Some(pki.ca.clone()),
            key_file: Some(pki.client_key.clone()),
            ..options(&pki, true)
        });
        assert!(e.starts_with(&format!("using client certificate {}: ", pki.ca.display())), "{e}");
        let e = err(TlsOptions { key_file: None, ..options(&pki, true) });
        assert!(e.contains("without a client key"), "{e}");
        assert!(matches!(Client::new("unix:///tmp/agent.sock"), Err(Error::Address(_))));
    }

    #[test]
    fn consuls_environment_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            EnvTls::from_vars(move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
        };
        let e = env(&[
            ("CONSUL_CACERT", "/ca.pem"),
            ("CONSUL_CAPATH", "/cas"),
            ("CONSUL_CLIENT_CERT", "/c.pem"),
            ("CONSUL_CLIENT_KEY", "/k.pem"),
            ("CONSUL_TLS_SERVER_NAME", "server.dc1.consul"),
            ("CONSUL_HTTP_SSL", "true"),
            ("CONSUL_HTTP_SSL_VERIFY", "false"),
        ]);
        assert!(e.ssl && e.options.insecure_skip_verify);
        assert_eq!(e.options.ca_file.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert_eq!(e.options.server_name.as_deref(), Some("server.dc1.consul"));
        let e = env(&[("CONSUL_HTTP_SSL", "1"), ("CONSUL_HTTP_SSL_VERIFY", "maybe"), ("CONSUL_CACERT", "")]);
        assert!(e.ssl && !e.options.insecure_skip_verify, "an unparsable value is ignored");
        assert_eq!(e.options.ca_file, None, "empty is unset");
        assert_eq!(env(&[]), EnvTls::default());
        // Flags win over the environment, setting by setting.
        let flags = TlsOptions { ca_file: Some("/flag.pem".into()), ..Default::default() };
        let merged = flags.or(&env(&[("CONSUL_CACERT", "/env.pem"), ("CONSUL_CLIENT_KEY", "/k.pem")]).options);
        assert_eq!(merged.ca_file.as_deref(), Some(std::path::Path::new("/flag.pem")));
        assert_eq!(merged.key_file.as_deref(), Some(std::path::Path::new("/k.pem")));
    }
}
