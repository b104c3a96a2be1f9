//! lb in front of an agent that serves only HTTPS and requires client certificates
//! (`verify_incoming`), with certificates made by `agent tls`: lb watches it over TLS
//! (`-consul-addr=https://...`, `-consul-ca-file`, `-consul-client-cert`, `-consul-client-key`),
//! proxies `/v1/...` to it over TLS, routes a plain service as before and an HTTPS one
//! (`Meta: lb-protocol=https`) over TLS with lb's client certificate. Without a client
//! certificate lb learns nothing. Addresses 127.0.150.41-127.0.150.49.

use crate::fake::{get, wait_for_async, Backend, Lb};
use crate::real_agent::agent_binary;
use std::path::Path;

/// A `-dev` agent with only the HTTPS port (8501), killed on drop.
struct TlsAgent {
    child: std::process::Child,
}

impl Drop for TlsAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent_cli(bin: &Path, dir: &Path, args: &[&str]) {
    let out = std::process::Command::new(bin).args(args).current_dir(dir).output().expect("run agent tls");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_over_an_agent_that_only_speaks_mutual_tls() {
    let Some(bin) = agent_binary() else {
        eprintln!("skipped: no agent binary (build it or set LB_IT_AGENT)");
        return;
    };
    let ip = "127.0.150.41";
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    agent_cli(&bin, d, &["tls", "ca", "create"]);
    agent_cli(&bin, d, &["tls", "cert", "create", "-server", "-dc", "dc1", "-additional-ipaddress", ip]);
    agent_cli(&bin, d, &["tls", "cert", "create", "-client"]);
    let p = |f: &str| d.join(f).display().to_string();
    let cfg = serde_json::json!({
        "ports": {"http": -1, "https": 8501, "dns": -1},
        "tls": {"defaults": {"ca_file": p("consul-agent-ca.pem"), "cert_file": p("dc1-server-consul-0.pem"),
                             "key_file": p("dc1-server-consul-0-key.pem"), "verify_incoming": true}}
    });
    std::fs::write(d.join("agent.json"), cfg.to_string()).expect("write config");
    let child = std::process::Command::new(&bin)
        .args(["agent", "-dev", "-node=lb-tls"])
        .arg(format!("-client={ip}"))
        .arg(format!("-bind={ip}"))
        .arg(format!("-config-file={}", p("agent.json")))
        .stdout(std::fs::File::create(d.join("agent.log")).expect("log"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start agent");
    let _agent = TlsAgent { child };
    let addr = format!("{ip}:8501");
    let (ca, cert, key) = (p("consul-agent-ca.pem"), p("dc1-client-consul-0.pem"), p("dc1-client-consul-0-key.pem"));
    let tls = api::TlsOptions {
        ca_file: Some(ca.clone().into()),
        cert_file: Some(cert.clone().into()),
        key_file: Some(key.clone().into()),
        ..Default::default()
    }
    .load()
    .expect("client TLS");
    let client = api::Client::https(&addr, &tls).expect("client");
    wait_for_async("the agent to lead, over HTTPS", || {
        let client = client.clone();
        async move { client.status_leader().await.map(|l| !l.is_empty()).unwrap_or(false) }
    })
    .await;

    // A plain instance, and the agent's own HTTPS API registered as an HTTPS service.
    let web = Backend::start("127.0.150.42", "web1").await;
    let register = |def: serde_json::Value| {
        let client = client.clone();
        async move {
            let r =
                client.request_ok(http::Method::PUT, "/v1/agent/service/register", Some(def.to_string().into())).await;
            r.expect("register");
        }
    };
    register(serde_json::json!({"ID": "web1", "Name": "web", "Address": web.ip, "Port": web.port,
                                "Check": {"TTL": "600s", "Status": "passing"}}))
    .await;
    register(serde_json::json!({"ID": "api1", "Name": "secure", "Address": ip, "Port": 8501,
                                "Meta": {"lb-protocol": "https"},
                                "Check": {"TTL": "600s", "Status": "passing"}}))
    .await;

    let https_addr = format!("https://{addr}");
    let flags =
        [format!("-consul-ca-file={ca}"), format!("-consul-client-cert={cert}"), format!("-consul-client-key={key}")];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let port = std::net::TcpListener::bind(("127.0.150.43", 0)).expect("probe").local_addr().expect("addr").port();
    let lb = Lb::spawn(&format!("127.0.150.43:{port}"), std::slice::from_ref(&https_addr), None, &flags);
    lb.wait_ready().await;
    lb.wait_instances("service:web", 1).await;
    lb.wait_instances("service:secure", 1).await;
    // The plain instance, as ever.
    let r = get(&lb.addr, Some("web.service.consul"), "/").await;
    assert_eq!((r.status, r.body.as_str()), (200, "web1"), "{r:?}");
    // The HTTPS instance, which wants lb's client certificate.
    let r = get(&lb.addr, Some("secure.service.consul"), "/v1/status/leader").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains(ip), "{r:?}");
    // The agents' API through lb, over TLS.
    let r = get(&lb.addr, Some("lb"), "/v1/catalog/service/web").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("\"ServiceID\": \"web1\""), "{r:?}");

    // The config file's keys and `-consul-ssl` with a bare address: the same.
    let config = format!(
        "consul_ssl = true\nconsul_ca_file = {ca:?}\nconsul_client_cert = {cert:?}\nconsul_client_key = {key:?}\n"
    );
    let by_file = Lb::start("127.0.150.44", std::slice::from_ref(&addr), Some(&config)).await;
    by_file.wait_instances("service:web", 1).await;
    assert_eq!(get(&by_file.addr, Some("web.service.consul"), "/").await.body, "web1");

    // No client certificate: the agent refuses every watch (counted as discovery errors; the
    // log line says `remote error: tls: certificate required`), so lb never learns of the
    // service, and the agents' API through lb fails too.
    let ca_flag = format!("-consul-ca-file={ca}");
    let port = std::net::TcpListener::bind(("127.0.150.45", 0)).expect("probe").local_addr().expect("addr").port();
    let without = Lb::spawn(&format!("127.0.150.45:{port}"), std::slice::from_ref(&https_addr), None, &[&ca_flag]);
    without.wait_ready().await;
    let a = without.addr.clone();
    wait_for_async("lb to count refused watches", || {
        let a = a.clone();
        async move {
            let m = get(&a, None, "/_lb/metrics").await.body;
            m.lines().any(|l| l.starts_with("lb_discovery_errors_total ") && !l.ends_with(" 0"))
        }
    })
    .await;
    let r = get(&without.addr, Some("web.service.consul"), "/").await;
    assert_eq!(r.status, 503, "{r:?}");
    let r = get(&without.addr, Some("lb"), "/v1/status/leader").await;
    assert_eq!(r.status, 502, "{r:?}");
}
