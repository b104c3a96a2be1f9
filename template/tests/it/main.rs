//! End to end: the real `agent` in `-dev` mode on its own loopback address, the `template`
//! binary with the seed's nginx `.ctmpl` and an `nginx -s reload` command, a real nginx (Debian
//! `nginx-light`) proxying to two backends. One instance's check goes critical; the file and
//! nginx's traffic follow.
//!
//! The agent binary is found next to this test's executable (a workspace `cargo test` builds it)
//! or through `AGENT_BIN`; without it the test says so and passes. Without nginx the file half
//! still runs.

// The unit tests' stand-in agent: it counts requests, so a test can tell nothing was fetched.
#[allow(dead_code)]
#[path = "../../src/fake.rs"]
mod fake;

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SEED: &str =
    "upstream test-cluster { ip_hash;{{range service \"test\"}} server {{.Address}}:{{.Port}};{{end}} }\n";
const LIMIT: Duration = Duration::from_secs(30);

/// A child process killed when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx daemonizes; stop it through its pid file.
struct Nginx {
    prefix: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new(nginx_bin().unwrap_or_else(|| "nginx".into()))
            .arg("-p")
            .arg(&self.prefix)
            .args(["-c", "nginx.conf", "-s", "stop"])
            .stderr(Stdio::null())
            .status();
    }
}

fn agent_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AGENT_BIN") {
        return Some(p.into());
    }
    // target/<profile>/deps/it-<hash> → target/<profile>/agent
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let candidates = [
        profile_dir.join("agent"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/agent"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/agent"),
    ];
    candidates.into_iter().find(|p| p.is_file())
}

fn nginx_bin() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"].iter().map(PathBuf::from).find(|p| p.is_file())
}

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

async fn wait_for<F, Fut>(what: &str, mut cond: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + LIMIT;
    while !cond().await {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}

/// A backend that answers every request with `body`.
async fn backend(addr: SocketAddr, body: &'static str) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(())
}

/// One GET through nginx; the body, or "" on any failure.
async fn get(addr: SocketAddr) -> String {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return String::new() };
    if s.write_all(b"GET / HTTP/1.0\r\nHost: it\r\n\r\n").await.is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") => body.to_string(),
        _ => String::new(),
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_nginx_template_follows_a_failing_check() -> Result<()> {
    let Some(agent) = agent_bin() else {
        // In CI the workspace build provides the agent: a missing one is a failure there.
        if std::env::var_os("CI").is_some() {
            bail!("no agent binary next to the test executable and no AGENT_BIN");
        }
        eprintln!("SKIPPED: no agent binary (build it with `cargo build -p agent` or set AGENT_BIN)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let result = scenario(&agent, dir.path()).await;
    if result.is_err() {
        // What the processes said is the fastest way to the cause.
        for log in ["template.log", "agent.log"] {
            eprintln!("---- {log}\n{}", read(&dir.path().join(log)));
        }
        eprintln!("---- rendered\n{}", read(&dir.path().join("nginx/vhosts/test.conf")));
    }
    result
}

async fn scenario(agent: &Path, dir: &Path) -> Result<()> {
    let ip = "127.0.0.81";
    let http_port = free_port(ip);
    let _agent = Proc(
        Command::new(agent)
            .args(["agent", "-dev", "-node=template-it"])
            .arg(format!("-bind={ip}"))
            .arg(format!("-client={ip}"))
            .arg(format!("-http-port={http_port}"))
            .stdout(std::fs::File::create(dir.join("agent.log"))?)
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the agent")?,
    );
    let addr = format!("{ip}:{http_port}");
    let client = api::Client::new(&addr)?;
    wait_for("a leader", || async { client.status_leader().await.map(|l| !l.is_empty()).unwrap_or(false) }).await?;

    // Two instances of "test" with TTL checks the test drives.
    let backends: [(SocketAddr, &str); 2] = [
        (format!("127.0.0.82:{}", free_port("127.0.0.82")).parse()?, "one"),
        (format!("127.0.0.83:{}", free_port("127.0.0.83")).parse()?, "two"),
    ];
    for (i, (a, body)) in backends.iter().enumerate() {
        backend(*a, body).await?;
        let reg = serde_json::json!({
            "ID": format!("test{}", i + 1), "Name": "test", "Address": a.ip().to_string(), "Port": a.port(),
            "Check": {"CheckID": format!("test{}-ttl", i + 1), "TTL": "1h", "Status": "passing"},
        });
        client.put_json("/v1/agent/service/register", &reg).await.context("registering")?;
    }

    // nginx's layout, as the seed has it: vhosts/test.conf rendered from vhosts/test.ctmpl.
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("vhosts"))?;
    std::fs::create_dir_all(prefix.join("tmp"))?;
    let ctmpl = prefix.join("vhosts/test.ctmpl");
    let conf = prefix.join("vhosts/test.conf");
    std::fs::write(&ctmpl, SEED)?;
    let nginx = nginx_bin();
    let proxy: SocketAddr = format!("127.0.0.84:{}", free_port("127.0.0.84")).parse()?;
    std::fs::write(
        prefix.join("nginx.conf"),
        format!(
            "daemon on; pid nginx.pid; error_log error.log warn; events {{ worker_connections 64; }}
http {{ access_log off; client_body_temp_path tmp; proxy_temp_path tmp; fastcgi_temp_path tmp;
  uwsgi_temp_path tmp; scgi_temp_path tmp;
  include vhosts/test.conf;
  server {{ listen {proxy}; location / {{ proxy_pass http://test-cluster; }} }} }}\n"
        ),
    )?;
    let reload_log = dir.join("reloads");
    let command = match &nginx {
        Some(n) => format!(
            "{} -p {} -c nginx.conf -s reload && echo reload >> {}",
            n.display(),
            prefix.display(),
            reload_log.display()
        ),
        None => format!("echo reload >> {}", reload_log.display()),
    };
    let _template = Proc(
        Command::new(env!("CARGO_BIN_EXE_template"))
            .arg(format!("-consul-addr={addr}"))
            .arg("-log-level=info")
            .arg("-template")
            .arg(format!("{}:{}:{command}", ctmpl.display(), conf.display()))
            .stderr(std::fs::File::create(dir.join("template.log"))?)
            .spawn()
            .context("starting template")?,
    );
    let both = format!(
        "upstream test-cluster {{ ip_hash; server {}:{}; server {}:{}; }}\n",
        backends[0].0.ip(),
        backends[0].0.port(),
        backends[1].0.ip(),
        backends[1].0.port()
    );
    wait_for("the first render", || async { read(&conf) == both }).await?;

    let mut _nginx = None;
    let serving = if let Some(n) = &nginx {
        let ok = Command::new(n).arg("-p").arg(&prefix).args(["-c", "nginx.conf"]).status()?.success();
        assert!(ok, "nginx starts with the rendered upstream");
        _nginx = Some(Nginx { prefix: prefix.clone() });
        wait_for("nginx proxying", || async { !get(proxy).await.is_empty() }).await?;
        // ip_hash: every request from here goes to one instance; fail that one.
        get(proxy).await
    } else {
        eprintln!("nginx not installed (Debian: nginx-light): checking the file only");
        "one".to_string()
    };
    let (failing, other) = if serving == "one" { (1, 1) } else { (2, 0) };

    client
        .request_ok(api::client::Method::PUT, &format!("/v1/agent/check/fail/test{failing}-ttl?note=it"), None)
        .await
        .context("failing the check")?;
    let remaining = format!(
        "upstream test-cluster {{ ip_hash; server {}:{}; }}\n",
        backends[other].0.ip(),
        backends[other].0.port()
    );
    wait_for("the file to drop the critical instance", || async { read(&conf) == remaining }).await?;
    wait_for("the reload command", || async { read(&reload_log).lines().count() >= 1 }).await?;
    if nginx.is_some() {
        let want = backends[other].1;
        wait_for("nginx's traffic to follow", || async {
            for _ in 0..5 {
                if get(proxy).await != want {
                    return false;
                }
            }
            true
        })
        .await?;
    }

    // And back: the instance passes again and returns to the file.
    client
        .request_ok(api::client::Method::PUT, &format!("/v1/agent/check/pass/test{failing}-ttl"), None)
        .await
        .context("passing the check")?;
    wait_for("the instance to come back", || async { read(&conf) == both }).await?;
    Ok(())
}

/// A started agent on `ip` with a free HTTP port, and a client for it.
async fn dev_agent(agent: &Path, ip: &str, dir: &Path) -> Result<(Proc, String, api::Client)> {
    let port = free_port(ip);
    let proc = Proc(
        Command::new(agent)
            .args(["agent", "-dev", "-node=template-it"])
            .arg(format!("-bind={ip}"))
            .arg(format!("-client={ip}"))
            .arg(format!("-http-port={port}"))
            .stdout(std::fs::File::create(dir.join("agent.log"))?)
            .stderr(Stdio::null())
            .spawn()
            .context("starting the agent")?,
    );
    let addr = format!("{ip}:{port}");
    let client = api::Client::new(&addr)?;
    wait_for("a leader", || async { client.status_leader().await.map(|l| !l.is_empty()).unwrap_or(false) }).await?;
    Ok((proc, addr, client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_signal_rereads_the_configuration_file() -> Result<()> {
    let Some(agent) = agent_bin() else {
        // In CI the workspace build provides the agent: a missing one is a failure there.
        if std::env::var_os("CI").is_some() {
            bail!("no agent binary next to the test executable and no AGENT_BIN");
        }
        eprintln!("SKIPPED: no agent binary (build it with `cargo build -p agent` or set AGENT_BIN)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (_agent, addr, client) = dev_agent(&agent, "127.0.0.86", d).await?;
    client.kv_put("app/name", b"demo".to_vec(), &[]).await?;
    std::fs::write(d.join("a.ctmpl"), "a={{ key \"app/name\" }}")?;
    std::fs::write(d.join("b.hbs"), "b={{ key \"app/name\" }}")?;
    let block = |name: &str, out: &str| {
        format!(
            "template {{\n  source = \"{}\"\n  destination = \"{}\"\n}}\n",
            d.join(name).display(),
            d.join(out).display()
        )
    };
    let cfg = d.join("config.hcl");
    std::fs::write(&cfg, format!("consul {{ address = \"{addr}\" }}\n{}", block("a.ctmpl", "a.conf")))?;
    let t = Proc(
        Command::new(env!("CARGO_BIN_EXE_template"))
            .arg(format!("-config={}", cfg.display()))
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_for("a.conf", || async { read(&d.join("a.conf")) == "a=demo" }).await?;
    std::fs::write(
        &cfg,
        format!("consul {{ address = \"{addr}\" }}\n{}{}", block("a.ctmpl", "a.conf"), block("b.hbs", "b.conf")),
    )?;
    // SAFETY: kill(2) on the child we started.
    unsafe { libc::kill(t.0.id() as i32, libc::SIGHUP) };
    wait_for("b.conf after SIGHUP", || async { read(&d.join("b.conf")) == "b=demo" }).await?;
    client.kv_put("app/name", b"renamed".to_vec(), &[]).await?;
    wait_for("both follow", || async {
        read(&d.join("a.conf")) == "a=renamed" && read(&d.join("b.conf")) == "b=renamed"
    })
    .await?;
    Ok(())
}

#[test]
fn a_template_that_does_not_parse_stops_startup_with_its_position() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("bad.ctmpl");
    std::fs::write(&src, "ok\n{{ range service \"web\" }}\n{{ .Address ")?;
    let out = Command::new(env!("CARGO_BIN_EXE_template"))
        .arg("-consul-addr=127.0.0.87:1")
        .arg("-template")
        .arg(format!("{}:{}", src.display(), dir.path().join("out").display()))
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("bad.ctmpl:3:"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_template")).arg("-bogus").output()?;
    assert!(String::from_utf8_lossy(&out.stderr).contains("flag provided but not defined: -bogus"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_and_kv_functions_read_the_real_agent() -> Result<()> {
    let Some(agent) = agent_bin() else {
        // In CI the workspace build provides the agent: a missing one is a failure there.
        if std::env::var_os("CI").is_some() {
            bail!("no agent binary next to the test executable and no AGENT_BIN");
        }
        eprintln!("SKIPPED: no agent binary (build it with `cargo build -p agent` or set AGENT_BIN)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (_agent, addr, client) = dev_agent(&agent, "127.0.0.88", d).await?;
    for (k, v) in [("app/name", "demo"), ("app/port", "80"), ("app/db/host", "db1")] {
        client.kv_put(k, v.as_bytes().to_vec(), &[]).await?;
    }
    client
        .put_json(
            "/v1/agent/service/register",
            &serde_json::json!({"ID": "web1", "Name": "web", "Port": 80, "Tags": ["b", "a"], "Meta": {"v": "2"}}),
        )
        .await?;
    let src = d.join("all.ctmpl");
    std::fs::write(
        &src,
        concat!(
            "node={{ with node }}{{ .Node.Node }}:{{ range .Services }}{{ .Service }},{{ end }}{{ end }}\n",
            "nodes={{ range nodes }}{{ .Node }};{{ end }}\n",
            "services={{ range services }}{{ .Name }}{{ .Tags }};{{ end }}\n",
            "web={{ range service \"web\" }}{{ .ID }} {{ .Port }} {{ .Tags }} {{ .ServiceMeta.v }} {{ .Status }} {{ .Node }}{{ end }}\n",
            "ls={{ range ls \"app\" }}{{ .Key }}={{ .Value }};{{ end }}\n",
            "tree={{ range tree \"app\" }}{{ .Key }};{{ end }}\n",
            "byKey={{ range $k, $v := tree \"app\" | byKey }}{{ $k }}:{{ len $v }};{{ end }}\n",
            "key={{ key \"app/name\" }} default={{ keyOrDefault \"app/missing\" \"d\" }} exists={{ keyExists \"app/port\" }}\n",
        ),
    )?;
    let out = Command::new(env!("CARGO_BIN_EXE_template"))
        .arg(format!("-consul-addr={addr}"))
        .args(["-once", "-dry", "-template"])
        .arg(format!("{}:{}", src.display(), d.join("all.conf").display()))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = format!(
        "> {}\nnode=template-it:consul,web,\nnodes=template-it;\nservices=consul[];web[a b];\n\
         web=web1 80 [a b] 2 passing template-it\nls=name=demo;port=80;\ntree=db/host;name;port;\n\
         byKey=db:1;\nkey=demo default=d exists=true\n",
        d.join("all.conf").display()
    );
    assert_eq!(stdout, want);
    Ok(())
}

/// `-consul-retry-attempts` and `-consul-retry=false` take effect: against an address nothing
/// listens on (127.0.98.1:1), the run ends with an error once the retries are spent.
#[test]
fn retries_that_run_out_end_the_run_with_an_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("kv.ctmpl");
    std::fs::write(&src, "{{ key \"k\" }}\n")?;
    let spec = format!("{}:{}", src.display(), dir.path().join("out").display());
    for (flags, attempts) in [
        (vec!["-consul-retry-attempts=2", "-consul-retry-backoff=20ms", "-consul-retry-max-backoff=40ms"], 3),
        (vec!["-consul-retry=false"], 1),
    ] {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_template"))
            .arg("-consul-addr=127.0.98.1:1")
            .args(["-template", &spec])
            .args(&flags)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                bail!("template {flags:?} still running after 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().context("stderr")?, &mut stderr)?;
        assert!(!status.success(), "{flags:?}: {stderr}");
        assert!(stderr.contains(&format!("giving up after {attempts} failed requests")), "{flags:?}: {stderr}");
        assert!(!dir.path().join("out").exists(), "no data, no file");
    }
    Ok(())
}

/// Runs the `template` binary to its end; its exit status and what it wrote to stderr.
async fn run_to_end(args: &[String]) -> Result<(std::process::ExitStatus, String)> {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_template")).args(args).kill_on_drop(true).output();
    let out = tokio::time::timeout(LIMIT, run).await.context("template did not exit")??;
    Ok((out.status, String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// Go's text/template parses a whole template before it runs it, and consul-template stops on a
/// parse error before it asks Consul anything. Each case: the message on stderr (Go's words with
/// file, line and column), exit status 1, no query made, no file written, not even the pid file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_template_stops_startup_before_anything_is_fetched_or_written() -> Result<()> {
    let agent = fake::FakeAgent::start("127.0.0.91").await;
    agent.put_kv("app/port", "80");
    let cases: &[(&str, &str, &str)] = &[
        ("web.ctmpl", "upstream {\n{{ key \"app/port\" }}\n{{ end }}\n", "web.ctmpl:3:4: unexpected {{end}}"),
        ("web.ctmpl", "a\n{{ else }}\n", "web.ctmpl:2:4: unexpected {{else}}"),
        ("web.ctmpl", "{{ if true }}x", "web.ctmpl:1:15: unexpected EOF ({{if}} from line 1 has no {{end}})"),
        (
            "web.ctmpl",
            "{{ range service \"web\" }}\nserver {{ .Address }};\n",
            "web.ctmpl:3:1: unexpected EOF ({{range}} from line 1 has no {{end}})",
        ),
        ("web.ctmpl", "port={{ key \"app/port\" }}\n{{ nosuch }}\n", "web.ctmpl:2:4: function \"nosuch\" not defined"),
        ("web.ctmpl", "{{ if false }}\n  {{ nosuch 1 }}\n{{ end }}", "web.ctmpl:2:6: function \"nosuch\" not defined"),
        (
            "web.ctmpl",
            "{{ key \"never/arrives\" }}\n{{ key \"app/port\" | nosuch }}",
            "web.ctmpl:2:21: function \"nosuch\" not defined",
        ),
        ("web.ctmpl", "{{ range . }}{{ $nope }}{{ end }}", "web.ctmpl:1:17: undefined variable \"$nope\""),
        (
            "web.hbs",
            "upstream {\n{{#each (service \"web\")}}\n",
            "web.hbs:3:1: unexpected EOF ({{#each}} from line 2 is not closed)",
        ),
        ("web.hbs", "{{key \"app/port\"}}\n{{/each}}", "web.hbs:2:3: invalid handlebars syntax"),
        ("web.hbs", "{{#if false}}\n{{nosuch 1}}{{/if}}", "web.hbs:2:1: helper \"nosuch\" not defined"),
        ("web.hbs", "{{#each (nosuch)}}{{/each}}", "web.hbs:1:1: helper \"nosuch\" not defined"),
    ];
    for (file, src, want) in cases {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        std::fs::write(d.join(file), src)?;
        let args = [
            format!("-consul-addr={}", agent.addr),
            format!("-pid-file={}", d.join("pid").display()),
            "-template".to_string(),
            format!("{}:{}", d.join(file).display(), d.join("out").display()),
        ];
        let (status, stderr) = run_to_end(&args).await?;
        assert_eq!(status.code(), Some(1), "{src:?}: {stderr}");
        let want = format!("template: {}/{want}", d.display());
        assert!(stderr.starts_with(&want) && stderr.lines().count() == 1, "{src:?}:\n{stderr}\nwanted {want}");
        assert!(!d.join("out").exists() && !d.join("pid").exists(), "{src:?}: something was written");
    }
    assert_eq!(agent.requests(), 0, "a query was made");
    Ok(())
}

/// Recursion through `executeTemplate` (consul-template's own function: in Go it overflows the
/// stack and kills the process) and handlebars partials ends like `{{template}}` recursion does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursion_fails_the_render_instead_of_aborting() -> Result<()> {
    let agent = fake::FakeAgent::start("127.0.0.92").await;
    let cases: &[(&str, &str, &str)] = &[
        (
            "a.ctmpl",
            "{{ define \"a\" }}{{ executeTemplate \"a\" }}{{ end }}{{ executeTemplate \"a\" }}",
            "execute: recursion limit exceeded",
        ),
        (
            "b.ctmpl",
            "{{ define \"a\" }}{{ template \"a\" }}{{ end }}{{ template \"a\" }}",
            "execute: recursion limit exceeded",
        ),
        ("c.hbs", "{{#*inline \"a\"}}{{> a}}{{/inline}}{{> a}}", "execute: line 1, col 17: recursion limit exceeded"),
    ];
    for (file, src, want) in cases {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        std::fs::write(d.join(file), src)?;
        let args = [
            format!("-consul-addr={}", agent.addr),
            "-once".to_string(),
            "-template".to_string(),
            format!("{}:{}", d.join(file).display(), d.join("out").display()),
        ];
        let (status, stderr) = run_to_end(&args).await?;
        // 1, not a signal: the process was not aborted.
        assert_eq!(status.code(), Some(1), "{src:?}: {stderr}");
        let want = format!("template: {}: {want}\n", d.join(file).display());
        assert_eq!(stderr, want, "{src:?}");
        assert!(!d.join("out").exists());
    }
    Ok(())
}

/// `-once` cannot finish if its file cannot be written: it says so and exits 1 instead of
/// waiting for a change that would not help.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_exits_non_zero_when_the_file_cannot_be_written() -> Result<()> {
    let agent = fake::FakeAgent::start("127.0.0.93").await;
    agent.put_kv("app/port", "80");
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let src = d.join("app.ctmpl");
    std::fs::write(&src, "port={{ key \"app/port\" }}\n")?;
    let in_the_way = d.join("conf");
    std::fs::write(&in_the_way, "")?;
    let mut dests = vec![(
        in_the_way.join("app.conf"),
        format!("creating a temporary file in {}: Not a directory (os error 20)", in_the_way.display()),
    )];
    // Permissions do not stop root.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let read_only = d.join("ro");
        std::fs::create_dir(&read_only)?;
        std::fs::set_permissions(
            &read_only,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o555),
        )?;
        dests.push((read_only.join("app.conf"), "Permission denied".to_string()));
    }
    for (dest, cause) in dests {
        let args = [
            format!("-consul-addr={}", agent.addr),
            "-once".to_string(),
            "-template".to_string(),
            format!("{}:{}", src.display(), dest.display()),
        ];
        let (status, stderr) = run_to_end(&args).await?;
        assert_eq!(status.code(), Some(1), "{stderr}");
        let want = format!("template: {}: writing {}: ", src.display(), dest.display());
        assert!(stderr.starts_with(&want) && stderr.trim_end().ends_with(&cause), "{stderr}");
    }
    Ok(())
}

/// Without `-once` the same failure is logged, naming the template and the file, and the run
/// goes on: once the path is fixed, the next change writes the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_logged_and_the_run_goes_on() -> Result<()> {
    let agent = fake::FakeAgent::start("127.0.0.94").await;
    agent.put_kv("app/port", "80");
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let src = d.join("app.ctmpl");
    std::fs::write(&src, "port={{ key \"app/port\" }}\n")?;
    let in_the_way = d.join("conf");
    std::fs::write(&in_the_way, "")?;
    let dest = in_the_way.join("app.conf");
    let stderr_path = d.join("stderr");
    let _t = Proc(
        Command::new(env!("CARGO_BIN_EXE_template"))
            .arg(format!("-consul-addr={}", agent.addr))
            .arg("-template")
            .arg(format!("{}:{}", src.display(), dest.display()))
            .env("NO_COLOR", "1")
            .stderr(std::fs::File::create(&stderr_path)?)
            .spawn()?,
    );
    wait_for("the error in the log", || async { read(&stderr_path).contains("cannot write the rendered file") })
        .await?;
    let log = read(&stderr_path);
    assert!(log.contains(&src.display().to_string()) && log.contains(&dest.display().to_string()), "{log}");
    assert!(log.contains("Not a directory"), "{log}");
    std::fs::remove_file(&in_the_way)?;
    std::fs::create_dir(&in_the_way)?;
    agent.put_kv("app/port", "81");
    wait_for("the file after the fix", || async { read(&dest) == "port=81\n" }).await?;
    Ok(())
}

/// The environment variables through which Consul's clients (and so template) learn TLS.
const CONSUL_TLS_ENV: &[&str] = &[
    "CONSUL_HTTP_ADDR",
    "CONSUL_HTTP_TOKEN",
    "CONSUL_HTTP_SSL",
    "CONSUL_HTTP_SSL_VERIFY",
    "CONSUL_CACERT",
    "CONSUL_CAPATH",
    "CONSUL_CLIENT_CERT",
    "CONSUL_CLIENT_KEY",
    "CONSUL_TLS_SERVER_NAME",
];

/// `template` to its end with only the given Consul environment.
async fn run_with_env(args: &[String], env: &[(&str, &str)]) -> Result<(std::process::ExitStatus, String)> {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_template"));
    cmd.args(args).kill_on_drop(true);
    for k in CONSUL_TLS_ENV {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(LIMIT, cmd.output()).await.context("template did not exit")??;
    Ok((out.status, String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// A real agent that serves only HTTPS (8501) and requires client certificates, with
/// certificates made by `agent tls`; template renders from it with `-once`, configured by flags
/// (`-consul-ssl-*` and the `-ssl-*` short forms), by the config file's `consul { ssl { ... } }`
/// and by Consul's environment, and is refused without a client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renders_once_over_https_with_client_certificates() -> Result<()> {
    let Some(agent) = agent_bin() else {
        if std::env::var_os("CI").is_some() {
            bail!("no agent binary next to the test executable and no AGENT_BIN");
        }
        eprintln!("SKIPPED: no agent binary (build it with `cargo build -p agent` or set AGENT_BIN)");
        return Ok(());
    };
    let ip = "127.0.150.20";
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let tls = |args: &[&str]| -> Result<()> {
        let out = Command::new(&agent).args(args).current_dir(d).output()?;
        anyhow::ensure!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    };
    tls(&["tls", "ca", "create"])?;
    tls(&["tls", "cert", "create", "-server", "-dc", "dc1", "-additional-ipaddress", ip])?;
    tls(&["tls", "cert", "create", "-cli"])?;
    let p = |f: &str| d.join(f).display().to_string();
    let (ca, cert, key) = (p("consul-agent-ca.pem"), p("dc1-cli-consul-0.pem"), p("dc1-cli-consul-0-key.pem"));
    let cfg = serde_json::json!({
        "ports": {"http": -1, "https": 8501},
        "tls": {"defaults": {"ca_file": ca, "cert_file": p("dc1-server-consul-0.pem"),
                             "key_file": p("dc1-server-consul-0-key.pem"), "verify_incoming": true}}
    });
    std::fs::write(d.join("agent.json"), cfg.to_string())?;
    let _agent = Proc(
        Command::new(&agent)
            .args(["agent", "-dev", "-node=template-tls"])
            .arg(format!("-bind={ip}"))
            .arg(format!("-client={ip}"))
            .arg(format!("-config-file={}", p("agent.json")))
            .stdout(std::fs::File::create(d.join("agent.log"))?)
            .stderr(Stdio::null())
            .spawn()
            .context("starting the agent")?,
    );
    let addr = format!("{ip}:8501");
    let client_tls = api::TlsOptions {
        ca_file: Some(ca.clone().into()),
        cert_file: Some(cert.clone().into()),
        key_file: Some(key.clone().into()),
        ..Default::default()
    }
    .load()?;
    let client = api::Client::https(&addr, &client_tls)?;
    wait_for("a leader over HTTPS", || async { client.status_leader().await.map(|l| !l.is_empty()).unwrap_or(false) })
        .await?;
    client.kv_put("app/secret", b"over-tls".to_vec(), &[]).await?;
    std::fs::write(d.join("in.ctmpl"), "value={{ key \"app/secret\" }}\n")?;
    let spec = |out: &str| format!("{}:{}", p("in.ctmpl"), p(out));

    // By flags (consul-template's names), the certificate checked against another of its names.
    let args = vec![
        format!("-consul-addr={addr}"),
        "-once".into(),
        "-consul-ssl".into(),
        format!("-consul-ssl-ca-cert={ca}"),
        format!("-consul-ssl-cert={cert}"),
        format!("-consul-ssl-key={key}"),
        "-consul-ssl-server-name=server.dc1.consul".into(),
        "-template".into(),
        spec("flags.conf"),
    ];
    let (status, stderr) = run_with_env(&args, &[]).await?;
    anyhow::ensure!(status.success(), "by flags: {status}: {stderr}");
    assert_eq!(read(&d.join("flags.conf")), "value=over-tls\n");
    // The short forms, with a CA directory.
    let cas = d.join("cas");
    std::fs::create_dir(&cas)?;
    std::fs::copy(&ca, cas.join("ca.pem"))?;
    let args = vec![
        format!("-consul-addr={addr}"),
        "-once".into(),
        format!("-ssl-ca-path={}", cas.display()),
        format!("-ssl-cert={cert}"),
        format!("-ssl-key={key}"),
        "-template".into(),
        spec("short.conf"),
    ];
    let (status, stderr) = run_with_env(&args, &[]).await?;
    anyhow::ensure!(status.success(), "by -ssl-* flags: {status}: {stderr}");
    assert_eq!(read(&d.join("short.conf")), "value=over-tls\n");

    // By the config file's block.
    let hcl = format!(
        "consul {{\n  address = \"{addr}\"\n  ssl {{\n    enabled = true\n    verify = true\n    ca_cert = \"{ca}\"\n    cert = \"{cert}\"\n    key = \"{key}\"\n  }}\n}}\ntemplate {{\n  source = \"{}\"\n  destination = \"{}\"\n}}\n",
        p("in.ctmpl"),
        p("file.conf")
    );
    std::fs::write(d.join("template.hcl"), hcl)?;
    let (status, stderr) = run_with_env(&[format!("-config={}", p("template.hcl")), "-once".into()], &[]).await?;
    anyhow::ensure!(status.success(), "by the config file: {status}: {stderr}");
    assert_eq!(read(&d.join("file.conf")), "value=over-tls\n");

    // By Consul's environment.
    let env = [
        ("CONSUL_HTTP_ADDR", addr.as_str()),
        ("CONSUL_HTTP_SSL", "true"),
        ("CONSUL_CACERT", ca.as_str()),
        ("CONSUL_CLIENT_CERT", cert.as_str()),
        ("CONSUL_CLIENT_KEY", key.as_str()),
    ];
    let (status, stderr) = run_with_env(&["-once".into(), "-template".into(), spec("env.conf")], &env).await?;
    anyhow::ensure!(status.success(), "by the environment: {status}: {stderr}");
    assert_eq!(read(&d.join("env.conf")), "value=over-tls\n");

    // Without a client certificate the agent refuses; with retries off the run ends, saying why.
    let args = vec![
        format!("-consul-addr={addr}"),
        "-once".into(),
        "-consul-retry=false".into(),
        format!("-consul-ssl-ca-cert={ca}"),
        "-template".into(),
        spec("refused.conf"),
    ];
    let (status, stderr) = run_with_env(&args, &[]).await?;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("remote error: tls: certificate required"), "{stderr}");
    assert!(!d.join("refused.conf").exists());
    // A CA file that cannot be read stops it at once, naming the file.
    let args = vec![
        format!("-consul-addr={addr}"),
        "-once".into(),
        "-consul-ssl-ca-cert=/nonexistent/ca.pem".into(),
        "-template".into(),
        spec("missing.conf"),
    ];
    let (status, stderr) = run_with_env(&args, &[]).await?;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("reading CA file /nonexistent/ca.pem: no such file or directory"), "{stderr}");
    Ok(())
}

/// A single server of `dc` on `ip` (default ports), joining the WAN pool at `wan` if given.
fn wan_server(agent: &Path, ip: &str, dc: &str, wan: Option<&str>, dir: &Path) -> Result<Proc> {
    let mut cmd = Command::new(agent);
    cmd.args(["agent", "-server", "-bootstrap-expect=1", "-dns-port=-1", "-retry-interval=200ms"])
        .arg(format!("-datacenter={dc}"))
        .arg(format!("-node={dc}-server"))
        .arg(format!("-bind={ip}"))
        .arg(format!("-client={ip}"))
        .arg(format!("-data-dir={}", dir.join(dc).display()));
    if let Some(w) = wan {
        cmd.arg(format!("-retry-join-wan={w}"));
    }
    let log = std::fs::File::create(dir.join(format!("{dc}.log")))?;
    Ok(Proc(cmd.stdout(log.try_clone()?).stderr(log).spawn().context("starting the agent")?))
}

/// Two real datacenters federated over WAN, one server each; template asks dc1's agent only.
/// `@dc2` on service, services, nodes, key and tree reads dc2 (the `?dc=` parameter reaches the
/// agent, which forwards it), `datacenters` lists both, and a blocking query over WAN follows
/// dc2's changes into the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_dc_reads_another_datacenter_through_the_local_agent() -> Result<()> {
    let Some(agent) = agent_bin() else {
        if std::env::var_os("CI").is_some() {
            bail!("no agent binary next to the test executable and no AGENT_BIN");
        }
        eprintln!("SKIPPED: no agent binary (build it with `cargo build -p agent` or set AGENT_BIN)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let result = federated(&agent, d).await;
    if result.is_err() {
        for log in ["dc1.log", "dc2.log", "template.log"] {
            eprintln!("---- {log}\n{}", read(&d.join(log)));
        }
    }
    result
}

async fn federated(agent: &Path, d: &Path) -> Result<()> {
    let (ip1, ip2) = ("127.0.181.11", "127.0.181.21");
    let _dc1 = wan_server(agent, ip1, "dc1", None, d)?;
    let _dc2 = wan_server(agent, ip2, "dc2", Some(ip1), d)?;
    let dc1 = api::Client::new(&format!("{ip1}:8500"))?;
    let dc2 = api::Client::new(&format!("{ip2}:8500"))?;
    for c in [&dc1, &dc2] {
        wait_for("a leader", || async { c.status_leader().await.map(|l| !l.is_empty()).unwrap_or(false) }).await?;
    }
    wait_for("dc1 to know dc2 over WAN", || async { dc1.catalog_datacenters().await.is_ok_and(|d| d.len() == 2) })
        .await?;

    // The same key in both datacenters, with different values; web only in dc2.
    dc1.kv_put("k", b"one".to_vec(), &[]).await?;
    dc2.kv_put("k", b"two".to_vec(), &[]).await?;
    dc2.kv_put("app/x", b"1".to_vec(), &[]).await?;
    let register = |id: &str, port: u16| serde_json::json!({"ID": id, "Name": "web", "Address": "127.0.181.31", "Port": port, "Tags": ["v1"]});
    dc2.put_json("/v1/agent/service/register", &register("web1", 8081)).await?;
    let opts = api::QueryOptions { datacenter: Some("dc2".into()), ..Default::default() };
    wait_for("web in dc2's catalog", || async {
        dc1.catalog_services(&opts).await.is_ok_and(|(s, _)| s.contains_key("web"))
    })
    .await?;

    let src = d.join("dc.ctmpl");
    std::fs::write(
        &src,
        concat!(
            "dcs={{ range datacenters }}{{ . }};{{ end }}\n",
            "web={{ range service \"web@dc2\" }}{{ .ID }} {{ .Address }}:{{ .Port }} {{ .NodeDatacenter }};{{ end }}\n",
            "v1={{ range service \"v1.web@dc2\" }}{{ .ID }};{{ end }} local={{ range service \"web\" }}{{ .ID }};{{ end }}\n",
            "key={{ key \"k\" }} k@dc2={{ key \"k@dc2\" }} tree={{ range tree \"app@dc2\" }}{{ .Key }}={{ .Value }};{{ end }}\n",
            "services@dc2={{ range services \"@dc2\" }}{{ .Name }};{{ end }} services={{ range services }}{{ .Name }};{{ end }}\n",
            "nodes@dc2={{ range nodes \"@dc2\" }}{{ .Node }};{{ end }}\n",
        ),
    )?;
    let out_file = d.join("dc.conf");
    let spec = format!("{}:{}", src.display(), out_file.display());
    let out = tokio::time::timeout(
        LIMIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_template"))
            .arg(format!("-consul-addr={ip1}:8500"))
            .args(["-once", "-dry", "-template", &spec])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("template -once did not exit")??;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let web1 = "web=web1 127.0.181.31:8081 dc2;\n";
    let want = format!(
        "> {}\ndcs=dc1;dc2;\n{web1}v1=web1; local=\nkey=one k@dc2=two tree=x=1;\n\
         services@dc2=consul;web; services=consul;\nnodes@dc2=dc2-server;\n",
        out_file.display()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);

    // Left running, the file follows dc2: its blocking queries are answered over WAN.
    let _template = Proc(
        Command::new(env!("CARGO_BIN_EXE_template"))
            .arg(format!("-consul-addr={ip1}:8500"))
            .args(["-log-level=info", "-template", &spec])
            .stderr(std::fs::File::create(d.join("template.log"))?)
            .spawn()
            .context("starting template")?,
    );
    wait_for("the first render", || async { read(&out_file).contains(web1) }).await?;
    dc2.put_json("/v1/agent/service/register", &register("web2", 8082)).await?;
    dc2.kv_put("k", b"three".to_vec(), &[]).await?;
    wait_for("dc2's second instance and new value", || async {
        let text = read(&out_file);
        text.contains("web=web1 127.0.181.31:8081 dc2;web2 127.0.181.31:8082 dc2;\n")
            && text.contains("key=one k@dc2=three ")
    })
    .await?;
    Ok(())
}
