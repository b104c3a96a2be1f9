//! No side doors: script checks only where the operator allowed them, a server port that answers
//! only its cluster's agents, and settings the agent cannot honour refusing to start.

use crate::harness::{bin, json, text, wait_for, TestAgent};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const REMOTE_SCRIPTS_OFF: &str =
    "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true";

fn script_check(id: &str, marker: &std::path::Path) -> String {
    serde_json::json!({
        "ID": id, "Name": id, "Interval": "100ms",
        "Args": ["/bin/sh", "-c", format!("echo ran >> {}", marker.display())]
    })
    .to_string()
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map(|s| s.lines().count()).unwrap_or(0)
}

#[tokio::test]
async fn script_checks_over_http_are_refused_unless_enable_script_checks() {
    let a = TestAgent::start("127.0.120.1", true, &[]);
    a.ready().await;
    let marker = a.dir.path().join("pwned");
    let r = a.put("/v1/agent/check/register", &script_check("x", &marker)).await;
    assert_eq!((r.status, text(&r)), (500, REMOTE_SCRIPTS_OFF.to_string()));
    let svc = serde_json::json!({"Name": "web", "Port": 80, "Check": {"Args": ["/bin/true"], "Interval": "1s"}});
    let r = a.put("/v1/agent/service/register", &svc.to_string()).await;
    assert_eq!((r.status, text(&r)), (500, REMOTE_SCRIPTS_OFF.to_string()));
    let svc = serde_json::json!({"Name": "web", "Port": 80, "Checks": [{"TTL": "10s"}, {"Args": ["/bin/true"], "Interval": "1s"}]});
    let r = a.put("/v1/agent/service/register", &svc.to_string()).await;
    assert_eq!(r.status, 500, "{}", text(&r));
    // Nothing of the refused registrations was kept.
    assert_eq!(json(&a.get("/v1/agent/checks").await), serde_json::json!({}));
    assert_eq!(json(&a.get("/v1/agent/services").await), serde_json::json!({}));
    // Other checks still register.
    let r = a.put("/v1/agent/check/register", r#"{"ID":"t","Name":"t","TTL":"10s"}"#).await;
    assert_eq!(r.status, 200, "{}", text(&r));

    // With enable_script_checks the same request registers and runs.
    let b = TestAgent::start("127.0.120.2", true, &["-enable-script-checks"]);
    b.ready().await;
    let marker = b.dir.path().join("ran");
    let r = b.put("/v1/agent/check/register", &script_check("x", &marker)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    wait_for(Duration::from_secs(10), "the allowed script ran", || async { (lines(&marker) > 0).then_some(()) }).await;
    assert!(!a.dir.path().join("pwned").exists());
}

#[tokio::test]
async fn local_script_checks_run_from_config_files_only_and_a_restart_keeps_the_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let from_file = dir.path().join("from-file");
    let remote = dir.path().join("remote");
    let cfg = dir.path().join("checks.json");
    std::fs::write(
        &cfg,
        serde_json::json!({"check": {"id": "local", "name": "local", "interval": "100ms",
                                     "args": ["/bin/sh", "-c", format!("echo ran >> {}", from_file.display())]}})
        .to_string(),
    )
    .expect("write config");
    let cfg_flag = format!("-config-file={}", cfg.display());

    // First life: remote scripts allowed; a script check is registered over HTTP and runs.
    let a = TestAgent::start("127.0.120.3", false, &["-enable-script-checks", &cfg_flag]);
    a.ready().await;
    let r = a.put("/v1/agent/check/register", &script_check("remote", &remote)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    wait_for(Duration::from_secs(10), "the remote script ran", || async { (lines(&remote) > 0).then_some(()) }).await;

    // Second life: only local scripts. The restored HTTP check must not run again.
    let mut a = a;
    a.kill9();
    std::fs::remove_file(&remote).expect("remove marker");
    let data = std::mem::replace(&mut a.dir, tempfile::tempdir().expect("tempdir"));
    drop(a);
    let a = TestAgent::start_in("127.0.120.3", false, &["-enable-local-script-checks", &cfg_flag], data);
    a.ready().await;
    let r = a.put("/v1/agent/check/register", &script_check("again", &remote)).await;
    assert_eq!((r.status, text(&r)), (500, REMOTE_SCRIPTS_OFF.to_string()));
    // The config file's check keeps running: wait for several more of its runs ...
    let before = lines(&from_file);
    wait_for(Duration::from_secs(10), "the config file's script ran again", || async {
        (lines(&from_file) >= before + 3).then_some(())
    })
    .await;
    // ... in which time the restored remote check, had it been started, would have run too.
    assert!(!remote.exists(), "a restored HTTP script check ran under enable_local_script_checks");
    let checks = json(&a.get("/v1/agent/checks").await);
    assert!(checks.get("remote").is_none(), "the restored script check is purged: {checks}");
    assert!(checks.get("local").is_some(), "{checks}");
    assert!(a.log().contains(REMOTE_SCRIPTS_OFF), "the purge is logged");
}

/// Runs `agent agent ...` and returns its exit status and output, killing it if it is still up
/// after `limit` (a process that should have refused to start).
fn run_agent(args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(bin())
        .arg("agent")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let _ = child.stdout.take().map(|mut s| s.read_to_string(&mut out));
    let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut out));
    (status, out)
}

#[test]
fn settings_it_cannot_honour_and_bad_values_stop_the_agent_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(&str, &str, &str)] = &[
        ("tls.json", r#"{"auto_encrypt": {"tls": true}}"#, "auto_encrypt"),
        ("server.json", r#"{"server": "yes"}"#, "'server' expected type 'bool', got unconvertible type 'string', value: 'yes'"),
        ("raft.json", r#"{"performance": {"raft_multiplier": 11}}"#, "'performance.raft_multiplier' cannot be 11"),
        ("log.json", r#"{"log_level": "bogus"}"#, "'log_level': invalid value \"bogus\""),
        ("size.json", r#"{"limits": {"kv_max_value_size": -5}}"#, "'limits.kv_max_value_size' cannot be -5"),
        ("port.json", r#"{"ports": {"dns": 70000}}"#, "'ports.dns' cannot be 70000"),
        ("script.json", r#"{"check": {"id": "s", "args": ["/bin/true"], "interval": "1s"}}"#,
         "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or 'enable_local_script_checks' to true"),
        ("conf.hcl", "server = \"yes\"\n", "'server' expected type 'bool'"),
        ("broken.hcl", "ports {\n  http = \n}\n", "line 3"),
    ];
    for (name, body, want) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write");
        let (status, out) = run_agent(
            &[
                "-dev",
                "-bind=127.0.120.9",
                "-client=127.0.120.9",
                "-dns-port=-1",
                &format!("-config-file={}", path.display()),
            ],
            Duration::from_secs(20),
        );
        assert!(matches!(status, Some(c) if c != 0), "{name}: exit {status:?}\n{out}");
        assert!(out.contains(want), "{name}: wanted {want:?} in:\n{out}");
        // A check's definition is judged after the files are merged, like Consul's.
        if *name != "script.json" {
            assert!(out.contains(name), "{name}: the file is named:\n{out}");
        }
    }
    // A directory's .hcl files are read, not skipped: a bad one stops the agent.
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("a.json"), "{}").expect("write");
    std::fs::write(d.path().join("b.hcl"), "performance { raft_multiplier = 11 }").expect("write");
    let (status, out) = run_agent(
        &[
            "-dev",
            "-bind=127.0.120.9",
            "-client=127.0.120.9",
            "-dns-port=-1",
            &format!("-config-dir={}", d.path().display()),
        ],
        Duration::from_secs(20),
    );
    assert!(matches!(status, Some(c) if c != 0) && out.contains("b.hcl"), "{status:?}\n{out}");
    // Ports out of range on the command line (99999 once bound 34463).
    for flag in ["-http-port=99999", "-server-port=0", "-serf-lan-port=-3"] {
        let (status, out) = run_agent(
            &["-dev", "-bind=127.0.120.9", "-client=127.0.120.9", "-dns-port=-1", flag],
            Duration::from_secs(20),
        );
        assert!(matches!(status, Some(c) if c != 0), "{flag}: {status:?}\n{out}");
        assert!(out.contains("must be between"), "{flag}:\n{out}");
    }
    let (status, out) = run_agent(
        &["-dev", "-bind=127.0.120.9", "-client=127.0.120.9", "-dns-port=-1", "-log-level=bogus"],
        Duration::from_secs(20),
    );
    assert!(matches!(status, Some(c) if c != 0) && out.contains("Invalid log level: bogus"), "{status:?}\n{out}");
}

#[tokio::test]
async fn unknown_keys_warn_and_a_flag_given_twice_takes_the_last() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("extra.json");
    std::fs::write(&cfg, r#"{"no_such_key": 1, "ports": {"also_unknown": 2}}"#).expect("write");
    let a = TestAgent::start(
        "127.0.120.10",
        true,
        &["-node=first", "-node=second", &format!("-config-file={}", cfg.display())],
    );
    a.ready_named("second").await;
    let me = json(&a.get("/v1/agent/self").await);
    assert_eq!(me["Config"]["NodeName"], "second");
    let log = a.log();
    assert!(log.contains("no_such_key") && log.contains("ports.also_unknown"), "{log}");
}

/// One raw HTTP/1.1 exchange with `addr`; returns the status code and body.
fn raw(addr: &str, request: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    // A refusal may come (and the connection close) before the whole request was written.
    let _ = s.write_all(request.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn req(method: &str, path: &str, host: &str, headers: &[&str], body: &str) -> String {
    let mut r =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.push_str(body);
    r
}

#[tokio::test]
async fn the_server_port_answers_only_the_cluster_and_never_agent_local_actions() {
    let a = TestAgent::start("127.0.120.4", false, &[]);
    a.ready().await;
    let port = "127.0.120.4:8300";
    let member = "X-Consul-Peer: cluster";
    let fwd = "X-Consul-Forward-Hops: 1";

    // What the issue found open: a KV write, a leave and a snapshot, straight to the server port.
    for (m, p) in [("PUT", "/v1/kv/x"), ("PUT", "/v1/agent/leave"), ("GET", "/v1/snapshot")] {
        let (code, body) = raw(port, &req(m, p, port, &[], "hi"));
        assert_eq!(code, 403, "{m} {p}: {body}");
    }
    // A member's forwarded request for the KV store is answered ...
    let (code, body) = raw(port, &req("PUT", "/v1/kv/x", port, &[member, fwd], "hi"));
    assert_eq!((code, body.as_str()), (200, "true"));
    // ... but not an agent-local action, even from a member.
    for (m, p) in [
        ("PUT", "/v1/agent/leave"),
        ("PUT", "/v1/agent/join/127.0.0.1"),
        ("PUT", "/v1/agent/reload"),
        ("PUT", "/v1/agent/maintenance?enable=true"),
        ("PUT", "/v1/agent/check/register"),
        ("GET", "/v1/agent/self"),
    ] {
        let (code, body) = raw(port, &req(m, p, port, &[member, fwd], ""));
        assert_eq!(code, 403, "{m} {p}: {body}");
        assert!(body.contains("not served on the server port"), "{body}");
    }
    // Nor a request that was not forwarded, nor anything a browser sends.
    let (code, _) = raw(port, &req("GET", "/v1/kv/x", port, &[member], ""));
    assert_eq!(code, 403);
    for extra in ["Origin: http://evil.example", "Sec-Fetch-Mode: no-cors", "Sec-Fetch-Site: cross-site"] {
        let (code, body) = raw(port, &req("GET", "/v1/kv/x", port, &[member, fwd, extra], ""));
        assert_eq!(code, 403, "{extra}: {body}");
    }
    // DNS rebinding: a name instead of the server's address.
    let (code, body) = raw(port, &req("GET", "/v1/kv/x", "evil.example:8300", &[member, fwd], ""));
    assert_eq!((code, body.contains("addressed by IP")), (403, true), "{body}");
    // Internal RPCs too need the member header, and their bodies are capped.
    let (code, _) = raw(port, &req("POST", "/rpc/node", port, &[], "\"x\""));
    assert_eq!(code, 403);
    // A body announced bigger than the cap is refused before it is read.
    let head = format!("POST /rpc/dns HTTP/1.1\r\nHost: {port}\r\n{member}\r\nContent-Length: 100000000\r\n\r\n");
    let (code, body) = raw(port, &head);
    assert_eq!(code, 413, "{body}");
    // The agent is still there: the leave above did not happen.
    assert_eq!(a.get("/v1/kv/x?raw").await.body.as_ref(), b"hi");
}

#[tokio::test]
async fn with_a_gossip_key_the_server_port_wants_proof_of_it() {
    let key = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
    let a = TestAgent::start("127.0.120.5", false, &[&format!("-encrypt={key}")]);
    a.ready().await;
    let port = "127.0.120.5:8300";
    let fwd = "X-Consul-Forward-Hops: 1";
    for member in ["X-Consul-Peer: cluster", "X-Consul-Peer: hmac-sha256=00"] {
        let (code, body) = raw(port, &req("GET", "/v1/kv/x", port, &[member, fwd], ""));
        assert_eq!(code, 403, "{member}: {body}");
    }
    // The agent's own HTTP API is unaffected, and its server-side forwarding works.
    let r = a.put("/v1/kv/y", "v").await;
    assert_eq!(r.status, 200);
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
    ticks / 100.0
}

#[tokio::test]
async fn out_of_file_descriptors_the_accept_loops_back_off_instead_of_spinning() {
    // A server limited to 128 descriptors, then more connections than that to each port.
    let dir = tempfile::tempdir().expect("tempdir");
    let script = format!(
        "ulimit -n 128; exec {} agent -server -bootstrap-expect=1 -data-dir={} -node=fd -bind=127.0.120.6 \
         -client=127.0.120.6 -dns-port=-1 -log-level=info > {}/agent.log 2>&1",
        bin(),
        dir.path().display(),
        dir.path().display()
    );
    let mut child = Command::new("/bin/sh").args(["-c", &script]).spawn().expect("spawn");
    let client = api::Client::new("127.0.120.6:8500").expect("client");
    wait_for(Duration::from_secs(30), "leader", || async {
        client.status_leader().await.ok().filter(|l| !l.is_empty())
    })
    .await;
    let mut held = Vec::new();
    for addr in ["127.0.120.6:8300", "127.0.120.6:8500"] {
        let addr: std::net::SocketAddr = addr.parse().expect("addr");
        for _ in 0..200 {
            // Once the listen backlog is full too, a connect waits for ever: stop there.
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
        }
    }
    let log = dir.path().join("agent.log");
    let log_size = || std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    // Accepting is failing now (the backlog is full of connections it cannot take): measure
    // what that costs over two seconds.
    wait_for(Duration::from_secs(10), "accept failing", || async {
        std::fs::read_to_string(&log).ok().filter(|l| l.contains("accept failed")).map(|_| ())
    })
    .await;
    let (cpu0, log0) = (cpu_seconds(child.id()), log_size());
    std::thread::sleep(Duration::from_secs(2));
    let (cpu1, log1) = (cpu_seconds(child.id()), log_size());
    let _ = child.kill();
    let _ = child.wait();
    drop(held);
    assert!(cpu1 - cpu0 < 0.5, "accept loops used {:.2} CPU-seconds in 2 s", cpu1 - cpu0);
    assert!(log1 - log0 < 64 * 1024, "accept loops logged {} bytes in 2 s", log1 - log0);
}

#[tokio::test]
async fn hcl_config_files_and_snippets_are_read_like_json() {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("a.json"), r#"{"node_meta": {"from": "json", "rack": "a"}}"#).expect("write");
    std::fs::write(
        d.path().join("b.hcl"),
        r#"
        # later files win; services accumulate
        node_meta { rack = "b" }
        service {
          name = "web"
          port = 8080
          tags = ["v1"]
          check { id = "web-ttl" ttl = "30s" }
        }
        service { name = "db" port = 5432 }
        "#,
    )
    .expect("write");
    let a = TestAgent::start(
        "127.0.120.11",
        true,
        &[&format!("-config-dir={}", d.path().display()), "-hcl", "node_meta { snippet = \"yes\" }"],
    );
    a.ready().await;
    let me = json(&a.get("/v1/agent/self").await);
    let meta = &me["Meta"];
    assert_eq!(
        (meta["from"].as_str(), meta["rack"].as_str(), meta["snippet"].as_str()),
        (Some("json"), Some("b"), Some("yes")),
        "{meta}"
    );
    let services = json(&a.get("/v1/agent/services").await);
    assert_eq!(services["web"]["Port"], 8080);
    assert_eq!(services["web"]["Tags"], serde_json::json!(["v1"]));
    assert_eq!(services["db"]["Port"], 5432);
    let checks = json(&a.get("/v1/agent/checks").await);
    assert_eq!(checks["web-ttl"]["ServiceID"], "web", "{checks}");
    // `agent validate` reads the same files.
    let out = Command::new(bin()).args(["validate", &d.path().display().to_string()]).output().expect("validate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Configuration is valid!"));
}
