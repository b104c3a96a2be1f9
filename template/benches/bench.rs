//! `cargo bench -p template --bench bench` (set `AGENT_BIN` for the latency half).
//!
//! 1. Render cost: consul-template's "one upstream per service" nginx template over 1,000
//!    services with 10 instances each, rendered from an in-memory brain: time per render, CPU
//!    time and peak memory of this process.
//! 2. What a template that can recurse (it has a `{{define}}`) pays for rendering on a thread of
//!    its own: a tiny template rendered 2,000 times with and without one.
//! 3. Latency: a real agent in `-dev` mode, a `template` runner in-process, and 100 health
//!    changes (a TTL check failed and passed in turn); time from the agent acknowledging the
//!    check update to the rewritten file, p50 and p99.

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use template::dep::Dep;
use template::engine::{Compiled, Language, Options};
use template::funcs::Brain;

const NGINX_ALL: &str = r#"{{range services}} {{$name := .Name}} {{$service := service .Name}}
upstream {{$name}} {
  zone upstream-{{$name}} 64k;
  {{range $service}}server {{.Address}}:{{.Port}} max_fails=3 fail_timeout=60 weight=1;
  {{else}}server 127.0.0.1:65535; # force a 502{{end}}
} {{end}}
server { listen 80 default_server;
{{range services}} {{$name := .Name}}
  location /{{$name}} { proxy_pass http://{{$name}}; }
{{end}} }
"#;

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass; zeroed is a valid starting value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    Duration::from_secs((u.ru_utime.tv_sec + u.ru_stime.tv_sec) as u64)
        + Duration::from_micros((u.ru_utime.tv_usec + u.ru_stime.tv_usec) as u64)
}

/// Resident memory now, in KiB (`VmRSS`).
fn rss_now() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn render_cost() -> Result<()> {
    let cpu0 = cpu_time();
    let rss0 = rss_now();
    let mut brain = Brain::default();
    let mut services = Vec::new();
    for s in 0..1000 {
        let name = format!("svc-{s:04}");
        services.push(json!({"Name": name, "Tags": ["http"]}));
        let instances: Vec<_> = (0..10)
            .map(|i| {
                json!({"Node": format!("node-{i}"), "Address": format!("10.{}.{}.{}", s / 256, s % 256, i), "Port": 8000 + i,
                       "ID": format!("{name}-{i}"), "Name": name, "Tags": ["http"], "ServiceMeta": {}, "Status": "passing"})
            })
            .collect();
        brain.remember(Dep::service(&name, None)?, json!(instances));
    }
    brain.remember(Dep::services("")?, json!(services));
    let brain = Arc::new(brain);
    let t = Compiled::new("nginx.ctmpl", NGINX_ALL, Language::Go, &Options::default())?;
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..20 {
        let start = Instant::now();
        let r = t.render(brain.clone())?;
        times.push(start.elapsed());
        if !r.missing.is_empty() {
            bail!("render reported missing data");
        }
        size = r.output.len();
    }
    times.sort();
    let cpu1 = cpu_time();
    let rss1 = rss_now();
    println!("render: 1,000 services x 10 instances, {} KiB output", size / 1024);
    println!(
        "render: per render p50 {:.1} ms, max {:.1} ms; CPU {:.2} s for 20 renders; RSS {} MiB with the data loaded (was {} MiB)",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        times.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0),
        (cpu1 - cpu0).as_secs_f64(),
        rss1 / 1024,
        rss0 / 1024,
    );
    Ok(())
}

fn thread_cost() -> Result<()> {
    let brain = Arc::new(Brain::default());
    let mut figures = Vec::new();
    for (label, src) in
        [("without a define", "{{ \"x\" }}"), ("with one", "{{ define \"x\" }}x{{ end }}{{ template \"x\" }}")]
    {
        let t = Compiled::new("t.ctmpl", src, Language::Go, &Options::default())?;
        let n = 2000;
        let start = Instant::now();
        for _ in 0..n {
            t.render(brain.clone())?;
        }
        figures.push(format!("{label} {:.1} µs", start.elapsed().as_secs_f64() * 1e6 / f64::from(n)));
    }
    println!("render of a tiny template: {}", figures.join(", "));
    Ok(())
}

struct Proc(std::process::Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn latency(agent: &Path) -> Result<()> {
    let ip = "127.0.0.91";
    let port = std::net::TcpListener::bind((ip, 0))?.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let _agent = Proc(
        std::process::Command::new(agent)
            .args([
                "agent",
                "-dev",
                "-node=bench",
                &format!("-bind={ip}"),
                &format!("-client={ip}"),
                &format!("-http-port={port}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting the agent")?,
    );
    let addr = format!("{ip}:{port}");
    let client = api::Client::new(&addr)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.status_leader().await.map(|l| l.is_empty()).unwrap_or(true) {
        if Instant::now() > deadline {
            bail!("no leader");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 1..=2 {
        client
            .put_json(
                "/v1/agent/service/register",
                &json!({"ID": format!("bench{i}"), "Name": "bench", "Address": format!("10.0.0.{i}"), "Port": 80,
                        "Check": {"CheckID": format!("bench{i}-ttl"), "TTL": "1h", "Status": "passing"}}),
            )
            .await?;
    }
    let src = dir.path().join("b.ctmpl");
    let out: PathBuf = dir.path().join("b.conf");
    std::fs::write(&src, "{{range service \"bench\"}}server {{.Address}};\n{{end}}")?;
    let cfg = template::config::Config {
        consul_addrs: vec![addr.clone()],
        templates: vec![template::config::TemplateConfig {
            source: Some(src),
            destination: Some(out.clone()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let runner = template::Runner::new(cfg)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async move {
        let _ = stopped.await;
    }));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let wait_file = |want_two: bool| {
        let out = out.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let text = read(&out);
                if !text.is_empty() && text.contains("10.0.0.2") == want_two {
                    return Ok::<(), anyhow::Error>(());
                }
                if Instant::now() > deadline {
                    bail!("file did not follow");
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        }
    };
    wait_file(true).await?;
    let mut times = Vec::new();
    for n in 0..100 {
        // Changes come 150 ms apart: a watcher starts its fetches at least 100 ms (+0-20 ms
        // jitter) apart, as consul-template's views do, so back-to-back flips would measure that
        // rate limit rather than the time a change takes to reach the file.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let fail = n % 2 == 0;
        let path = if fail { "/v1/agent/check/fail/bench2-ttl" } else { "/v1/agent/check/pass/bench2-ttl" };
        client.request_ok(api::client::Method::PUT, path, None).await?;
        let start = Instant::now();
        wait_file(!fail).await?;
        times.push(start.elapsed());
    }
    let _ = stop.send(());
    let _ = task.await;
    times.sort();
    println!(
        "latency: health change -> rewritten file over {} changes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        times.len(),
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0),
    );
    Ok(())
}

/// 1,000 services x 10 instances registered in a real agent, then a runner started with the
/// per-service nginx template: time and CPU to the first complete file (1,001 watches).
async fn startup(agent: &Path) -> Result<()> {
    let ip = "127.0.0.92";
    let port = std::net::TcpListener::bind((ip, 0))?.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let _agent = Proc(
        std::process::Command::new(agent)
            .args([
                "agent",
                "-dev",
                "-node=bench",
                &format!("-bind={ip}"),
                &format!("-client={ip}"),
                &format!("-http-port={port}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting the agent")?,
    );
    let addr = format!("{ip}:{port}");
    let client = api::Client::new(&addr)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.status_leader().await.map(|l| l.is_empty()).unwrap_or(true) {
        if Instant::now() > deadline {
            bail!("no leader");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let registering = Instant::now();
    let mut pending = Vec::new();
    for s in 0..1000u32 {
        for i in 0..10u32 {
            let c = client.clone();
            pending.push(tokio::spawn(async move {
                c.put_json(
                    "/v1/catalog/register",
                    &json!({"Node": format!("node-{i}"), "Address": format!("10.0.0.{i}"),
                            "Service": {"ID": format!("svc-{s:04}-{i}"), "Service": format!("svc-{s:04}"), "Port": 8000 + i}}),
                )
                .await
            }));
            if pending.len() >= 32 {
                for p in pending.drain(..) {
                    p.await??;
                }
            }
        }
    }
    for p in pending.drain(..) {
        p.await??;
    }
    println!("startup: registered 10,000 instances in {:.1} s", registering.elapsed().as_secs_f64());
    let src = dir.path().join("all.ctmpl");
    let out = dir.path().join("all.conf");
    std::fs::write(&src, NGINX_ALL)?;
    let cfg = template::config::Config {
        consul_addrs: vec![addr],
        templates: vec![template::config::TemplateConfig {
            source: Some(src),
            destination: Some(out.clone()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let cpu0 = cpu_time();
    let start = Instant::now();
    let runner = template::Runner::new(cfg)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(&out).map(|t| t.matches("max_fails").count()).unwrap_or(0) < 10_000 {
        if Instant::now() > deadline {
            bail!("the file never had all 10,000 instances");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    let cpu = cpu_time() - cpu0;
    let _ = stop.send(());
    let _ = task.await;
    println!(
        "startup: first complete file (1,001 watches, {} KiB) after {:.2} s, {:.2} s CPU; RSS {} MiB",
        std::fs::metadata(&out)?.len() / 1024,
        took.as_secs_f64(),
        cpu.as_secs_f64(),
        rss_now() / 1024
    );
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing to parse.
    render_cost()?;
    thread_cost()?;
    match std::env::var_os("AGENT_BIN") {
        Some(agent) => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(latency(Path::new(&agent)))?;
            rt.block_on(startup(Path::new(&agent)))?;
        }
        None => println!("latency: skipped (set AGENT_BIN to an agent binary)"),
    }
    Ok(())
}
