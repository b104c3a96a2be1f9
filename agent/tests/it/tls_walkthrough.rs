//! The seed walk-through with TLS on: three servers and a client agent with `verify_incoming`,
//! `verify_outgoing`, `verify_server_hostname` and gossip encryption, plain HTTP off, every
//! certificate made by `agent tls`. The CLI (`members`, `kv put`, `kv get` with `-ca-file`,
//! `-client-cert`, `-client-key`) works over HTTPS before and after the leader is killed; an agent
//! with a certificate from another CA is refused (a log line on both sides) and reads nothing;
//! a client without a certificate is refused by the HTTPS API. Addresses 127.0.151.1-127.0.151.9.

use crate::harness::{bin, wait_for, TestAgent};
use crate::tls_clients::Pki;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

fn ip(n: u8) -> String {
    format!("127.0.151.{n}")
}

/// The agent config file: HTTPS only (8501), mutual TLS everywhere, servers checked by name.
/// Written beside the certificates, which outlive every agent (a process reads its config
/// files after `spawn` returns).
fn tls_config(pki: &Pki, cert: &str) -> String {
    let cfg = serde_json::json!({
        "ports": {"http": -1, "https": 8501},
        "tls": {
            "defaults": {
                "ca_file": pki.ca(),
                "cert_file": pki.path(&format!("{cert}.pem")),
                "key_file": pki.path(&format!("{cert}-key.pem")),
                "verify_incoming": true,
                "verify_outgoing": true
            },
            "internal_rpc": {"verify_server_hostname": true}
        }
    });
    let path = pki.dir.path().join(format!("tls-{cert}.json"));
    std::fs::write(&path, cfg.to_string()).expect("write config");
    format!("-config-file={}", path.display())
}

/// The test's own HTTPS client: the CA, the client certificate, the certificate's name.
fn https_client(pki: &Pki, ip: &str, server_name: &str) -> api::Client {
    let tls = api::TlsOptions {
        ca_file: Some(pki.ca().into()),
        cert_file: Some(pki.path("dc1-client-consul-0.pem").into()),
        key_file: Some(pki.path("dc1-client-consul-0-key.pem").into()),
        server_name: Some(server_name.into()),
        ..Default::default()
    }
    .load()
    .expect("test TLS options");
    api::Client::https(&format!("{ip}:8501"), &tls).expect("client")
}

/// A member of the TLS cluster: a server expecting three (`server`) or a client.
fn member(pki: &Pki, n: u8, server: bool, key: &str) -> TestAgent {
    let cert = if server { "dc1-server-consul-0" } else { "dc1-client-consul-0" };
    let cfg = tls_config(pki, cert);
    let encrypt = format!("-encrypt={key}");
    let mut a = TestAgent::member(&ip(n), server.then_some(3), &[&ip(1)], &[&cfg, &encrypt]);
    a.client = https_client(pki, &ip(n), if server { "server.dc1.consul" } else { "client.dc1.consul" });
    a
}

/// The CLI with nothing from the test's environment.
fn cli(args: &[String]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("CONSUL_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run the CLI")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

/// `agent <cmd...> -http-addr=https://<ip>:8501 -ca-file -client-cert -client-key
/// -tls-server-name <rest...>`, with the `-cli` certificate.
fn cli_tls(pki: &Pki, ip: &str, server_name: &str, cmd: &[&str], rest: &[&str]) -> Output {
    let mut args: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
    args.extend([
        format!("-http-addr=https://{ip}:8501"),
        format!("-ca-file={}", pki.ca()),
        format!("-client-cert={}", pki.path("dc1-cli-consul-0.pem")),
        format!("-client-key={}", pki.path("dc1-cli-consul-0-key.pem")),
        format!("-tls-server-name={server_name}"),
    ]);
    args.extend(rest.iter().map(|s| s.to_string()));
    cli(&args)
}

async fn leader(a: &TestAgent) -> Option<String> {
    a.client.status_leader().await.ok()
}

async fn wait_leader(servers: &[&TestAgent], not: Option<&str>) -> String {
    wait_for(LONG, "one leader all servers agree on", || async {
        let mut seen = Vec::new();
        for s in servers {
            seen.push(leader(s).await?);
        }
        let first = seen[0].clone();
        let agreed = !first.is_empty() && seen.iter().all(|l| *l == first) && Some(first.as_str()) != not;
        agreed.then_some(first)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_with_tls_on_every_port() {
    let key = Command::new(bin()).arg("keygen").output().expect("keygen");
    let key = out(&key);
    assert_eq!(key.len(), 44, "a 32-byte key in base64: {key}");
    let pki = Pki::new(&ip(1));
    let mut servers: Vec<TestAgent> = (1..=3).map(|n| member(&pki, n, true, &key)).collect();
    let client = member(&pki, 4, false, &key);
    for s in &servers {
        s.ready().await;
    }
    client.ready().await;
    let first_leader = wait_leader(&servers.iter().collect::<Vec<_>>(), None).await;

    // The CLI over HTTPS, through the client agent (whose certificate names client.dc1.consul).
    let c = ip(4);
    let members = wait_for(LONG, "the CLI to list four alive members", || async {
        let o = cli_tls(&pki, &c, "client.dc1.consul", &["members"], &[]);
        let text = out(&o);
        (o.status.success() && text.lines().filter(|l| l.contains(" alive ")).count() == 4).then_some(text)
    })
    .await;
    for n in 1..=4 {
        assert!(members.contains(&format!("node-127-0-151-{n}")), "{members}");
    }
    let put = cli_tls(&pki, &c, "client.dc1.consul", &["kv", "put"], &["walk/tls", "one"]);
    assert!(put.status.success(), "kv put: {}", err(&put));
    assert_eq!(out(&put), "Success! Data written to: walk/tls");
    // Read back from a server, by its name.
    let get = cli_tls(&pki, &ip(2), "server.dc1.consul", &["kv", "get"], &["walk/tls"]);
    assert_eq!((get.status.success(), out(&get)), (true, "one".to_string()), "{}", err(&get));

    // The leader dies: another is elected over the TLS server port, and the CLI writes again.
    let killed_at = Instant::now();
    let dead = servers.iter().position(|s| first_leader.starts_with(&format!("{}:", s.ip))).expect("leader");
    servers[dead].kill9();
    let survivors: Vec<&TestAgent> = servers.iter().enumerate().filter(|(i, _)| *i != dead).map(|(_, s)| s).collect();
    let second = wait_leader(&survivors, Some(&first_leader)).await;
    assert_ne!(second, first_leader);
    wait_for(LONG, "a CLI write through the client after the failover", || async {
        let o = cli_tls(&pki, &c, "client.dc1.consul", &["kv", "put"], &["walk/tls", "two"]);
        o.status.success().then_some(())
    })
    .await;
    eprintln!("failover over TLS: {:?} from kill -9 to a CLI write", killed_at.elapsed());
    let alive = survivors[0].ip.clone();
    let get = cli_tls(&pki, &alive, "server.dc1.consul", &["kv", "get"], &["walk/tls"]);
    assert_eq!((get.status.success(), out(&get)), (true, "two".to_string()), "{}", err(&get));

    // No client certificate: the HTTPS API refuses, and the CLI says why.
    let bare = cli(&[
        "kv".into(),
        "get".into(),
        format!("-http-addr=https://{c}:8501"),
        format!("-ca-file={}", pki.ca()),
        "-tls-server-name=client.dc1.consul".into(),
        "walk/tls".into(),
    ]);
    assert!(!bare.status.success(), "a read without a client certificate: {}", out(&bare));
    assert!(err(&bare).contains("certificate required"), "{}", err(&bare));

    // An agent whose certificate comes from another CA (but with the gossip key): gossip lets it
    // in, TLS does not: its RPCs fail with a log line on both sides.
    let other = Pki::new(&ip(5));
    let cfg = tls_config(&other, "dc1-client-consul-0");
    // It joins through a live server: the killed leader may have been the first.
    let stranger = TestAgent::member(&ip(5), None, &[&alive], &[&cfg, &format!("-encrypt={key}")]);
    wait_for(LONG, "the stranger's RPC refused", || async {
        let log = stranger.log();
        (log.contains("invalid peer certificate") || log.contains("UnknownIssuer")).then_some(())
    })
    .await;
    wait_for(LONG, "a server logs the failed handshake", || async {
        survivors.iter().any(|s| s.log().contains("rpc: TLS handshake failed")).then_some(())
    })
    .await;
    // Gossip made it a member (as in Consul, the leader lists it from the member list), but
    // nothing it asks of the servers gets through.
    let theirs = https_client(&other, &ip(5), "client.dc1.consul");
    let r = theirs.request(api::client::Method::GET, "/v1/kv/walk/tls", None, Some(Duration::from_secs(10))).await;
    match r {
        Ok(r) => assert_ne!(r.status, 200, "the stranger read the KV store: {}", String::from_utf8_lossy(&r.body)),
        Err(e) => panic!("the stranger's own HTTPS API should answer (with an error): {e}"),
    }
}
