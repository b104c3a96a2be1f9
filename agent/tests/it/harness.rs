//! Starts real agent processes on distinct loopback addresses and waits for conditions.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestAgent {
    pub child: Child,
    pub ip: String,
    pub client: api::Client,
    pub dir: tempfile::TempDir,
    pub args: Vec<String>,
    /// The group the process runs as, when it must be cut off by [`crate::partition::Net`]:
    /// the firewall tells agents apart by the group that owns a packet's socket.
    pub gid: Option<u32>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_agent")
}

impl TestAgent {
    /// A single server with a real data dir (`-server -bootstrap-expect=1`), or `-dev`.
    pub fn start(ip: &str, dev: bool, extra: &[&str]) -> TestAgent {
        let dir = tempfile::tempdir().expect("tempdir");
        TestAgent::start_in(ip, dev, extra, dir)
    }

    pub fn start_in(ip: &str, dev: bool, extra: &[&str], dir: tempfile::TempDir) -> TestAgent {
        let mode: Vec<String> = if dev {
            vec!["-dev".into()]
        } else {
            vec!["-server".into(), "-bootstrap-expect=1".into(), format!("-data-dir={}", dir.path().display())]
        };
        TestAgent::spawn(ip, mode, extra, dir, None)
    }

    /// A member of a multi-agent cluster with fast timings (Raft multiplier 1, quick gossip
    /// probes): a server expecting `expect` servers (`Some`), or a client (`None`), joining
    /// `join` with `-retry-join`.
    pub fn member(ip: &str, expect: Option<u32>, join: &[&str], extra: &[&str]) -> TestAgent {
        TestAgent::member_as(ip, expect, join, extra, None)
    }

    /// [`TestAgent::member`] running as group `gid` (root stays its user).
    pub fn member_as(ip: &str, expect: Option<u32>, join: &[&str], extra: &[&str], gid: Option<u32>) -> TestAgent {
        let dir = tempfile::tempdir().expect("tempdir");
        let fast = dir.path().join("fast.json");
        std::fs::write(
            &fast,
            r#"{"performance": {"raft_multiplier": 1},
                "gossip_lan": {"probe_interval": "300ms", "probe_timeout": "200ms", "gossip_interval": "50ms",
                               "suspicion_mult": 4}}"#,
        )
        .expect("write config");
        let mut mode = vec![format!("-data-dir={}", dir.path().display()), format!("-config-file={}", fast.display())];
        if let Some(n) = expect {
            mode.extend(["-server".to_string(), format!("-bootstrap-expect={n}")]);
        }
        for j in join {
            mode.push(format!("-retry-join={j}"));
        }
        if !join.is_empty() {
            mode.push("-retry-interval=200ms".into());
        }
        TestAgent::spawn(ip, mode, extra, dir, gid)
    }

    fn spawn(ip: &str, mode: Vec<String>, extra: &[&str], dir: tempfile::TempDir, gid: Option<u32>) -> TestAgent {
        let mut args: Vec<String> = vec!["agent".into()];
        args.extend(mode);
        let defaults = [
            format!("-node=node-{}", ip.replace('.', "-")),
            format!("-bind={ip}"),
            format!("-client={ip}"),
            "-dns-port=-1".into(),
            "-log-level=debug".into(),
        ];
        // A flag given in `extra` replaces the default of the same name (clap refuses repeats).
        let name = |f: &str| f.split('=').next().unwrap_or(f).to_string();
        args.extend(defaults.into_iter().filter(|d| !extra.iter().any(|e| name(e) == name(d))));
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = spawn_logged(&args, dir.path(), gid);
        let http = format!("{ip}:8500");
        let client = api::Client::new(&http).expect("client");
        TestAgent { child, ip: ip.into(), client, dir, args, gid }
    }

    /// Waits until the agent has a leader and has registered itself in the catalog.
    pub async fn ready(&self) {
        let me = format!("node-{}", self.ip.replace('.', "-"));
        wait_for(Duration::from_secs(30), &format!("agent on {} ready", self.ip), || async {
            let leader = self.client.status_leader().await.ok()?;
            if leader.is_empty() {
                return None;
            }
            let (checks, _): (Vec<api::HealthCheck>, _) = self
                .client
                .query(&format!("/v1/health/node/{me}"), &[], &api::QueryOptions::default())
                .await
                .ok()??;
            checks.iter().any(|c| c.check_id == "serfHealth").then_some(())
        })
        .await;
    }

    /// [`TestAgent::ready`] for an agent started with its own `-node` name.
    pub async fn ready_named(&self, me: &str) {
        wait_for(Duration::from_secs(30), &format!("agent {me} ready"), || async {
            let (checks, _): (Vec<api::HealthCheck>, _) = self
                .client
                .query(&format!("/v1/health/node/{me}"), &[], &api::QueryOptions::default())
                .await
                .ok()??;
            checks.iter().any(|c| c.check_id == "serfHealth").then_some(())
        })
        .await;
    }

    /// Starts the process again with the same flags and data dir (after `kill9` or a leave).
    pub fn respawn(&mut self) {
        self.kill9();
        self.child = spawn_logged(&self.args, self.dir.path(), self.gid);
    }

    /// SIGSTOP or SIGCONT: a paused agent keeps its sockets but answers nothing.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().expect("kill").success();
        assert!(ok, "kill {sig} failed");
    }

    /// What the agent has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the process (SIGKILL) and starts a new one on the same data dir and flags.
    pub fn restart_hard(mut self) -> TestAgent {
        self.kill9();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        let extra: Vec<String> = self
            .args
            .iter()
            .skip(4)
            .filter(|a| {
                !a.starts_with("-node")
                    && !a.starts_with("-bind")
                    && !a.starts_with("-client")
                    && !a.starts_with("-dns-port")
                    && !a.starts_with("-log-level")
            })
            .cloned()
            .collect();
        let extra_ref: Vec<&str> = extra.iter().map(String::as_str).collect();
        TestAgent::start_in(&self.ip.clone(), false, &extra_ref, dir)
    }

    pub async fn get(&self, path: &str) -> api::client::Response {
        self.client.request(api::client::Method::GET, path, None, Some(Duration::from_secs(30))).await.expect("request")
    }

    pub async fn put(&self, path: &str, body: &str) -> api::client::Response {
        self.client
            .request(api::client::Method::PUT, path, Some(body.to_string().into()), Some(Duration::from_secs(30)))
            .await
            .expect("request")
    }

    pub async fn post(&self, path: &str, body: &str) -> api::client::Response {
        self.client
            .request(api::client::Method::POST, path, Some(body.to_string().into()), Some(Duration::from_secs(30)))
            .await
            .expect("request")
    }

    pub async fn delete(&self, path: &str) -> api::client::Response {
        self.client
            .request(api::client::Method::DELETE, path, None, Some(Duration::from_secs(30)))
            .await
            .expect("request")
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_logged(args: &[String], dir: &std::path::Path, gid: Option<u32>) -> Child {
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("agent.log")).expect("log file");
    let mut cmd = Command::new(bin());
    if let Some(g) = gid {
        cmd.gid(g);
    }
    cmd.args(args)
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn agent")
}

/// Polls `probe` until it yields a value or the deadline passes (then panics with `what`).
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn json(resp: &api::client::Response) -> serde_json::Value {
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&resp.body)))
}

pub fn text(resp: &api::client::Response) -> String {
    String::from_utf8_lossy(&resp.body).to_string()
}
