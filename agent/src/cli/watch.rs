//! `watch` (blocking queries through the shared `api::Watcher`) and `lock` (a session-held KV
//! lock around a child process, Consul's api/lock.go recipe).

use super::http::{CallError, Ctx};
use super::kv::{read_key, LOCK_FLAG_VALUE};
use super::{ctx_or_exit, err, fail, out, parse_flags};
use api::{KvPair, Target, Watcher};
use serde_json::Value;
use std::time::Duration;
use tokio::process::Command;

const WATCH_USAGE: &str = "
Usage: agent watch [options] [child...]

  Watches for changes in a given data view. If a child process is specified,
  it will be invoked with the latest results on changes (JSON on stdin, the
  index in CONSUL_INDEX). Otherwise, the latest values are dumped to stdout
  and the watch terminates.

Command Options:
  -type=<type>          key, keyprefix, services, nodes, service, checks or event.
  -key=<key>            The key to watch (key).
  -prefix=<prefix>      The key prefix to watch (keyprefix).
  -service=<service>    The service to watch (service; optional for checks).
  -tag=<tag>            Service tag to filter on (service).
  -passingonly=<bool>   Only instances passing all checks (service).
  -state=<state>        Check state to watch (checks).
  -name=<name>          Event name to watch (event).
  -shell=<bool>         Run the child through a shell (default true).
";

/// What a `-type` watches, from the watch flags; errors are Consul's `watch.Parse` messages.
pub(super) fn watch_target(kind: &str, get: &dyn Fn(&str) -> Option<String>) -> Result<Target, String> {
    let some = |k: &str| get(k).filter(|v| !v.is_empty());
    let t = match kind {
        "key" => {
            let key = some("key").ok_or("Must specify a single key to watch")?;
            Target::new(format!("/v1/kv/{}", key.trim_start_matches('/')))
        }
        "keyprefix" => {
            let prefix = some("prefix").ok_or("Must specify a single prefix to watch")?;
            Target::new(format!("/v1/kv/{}", prefix.trim_start_matches('/'))).with("recurse", "")
        }
        "services" => Target::new("/v1/catalog/services"),
        "nodes" => Target::new("/v1/catalog/nodes"),
        "service" => {
            let svc = some("service").ok_or("Must specify a single service to watch")?;
            let mut t = Target::new(format!("/v1/health/service/{svc}"));
            if let Some(tag) = some("tag") {
                t = t.with("tag", &tag);
            }
            match some("passingonly").as_deref() {
                None => {}
                Some(v) => match v {
                    "1" | "t" | "T" | "TRUE" | "true" | "True" => t = t.with("passing", "1"),
                    "0" | "f" | "F" | "FALSE" | "false" | "False" => {}
                    other => return Err(format!("Failed to parse passingonly flag: invalid syntax {other:?}")),
                },
            }
            t
        }
        "checks" => match (some("service"), some("state")) {
            (Some(_), Some(_)) => return Err("Cannot specify service and state".into()),
            (Some(svc), None) => Target::new(format!("/v1/health/checks/{svc}")),
            (None, state) => Target::new(format!("/v1/health/state/{}", state.unwrap_or_else(|| "any".into()))),
        },
        "event" => {
            let mut t = Target::new("/v1/event/list");
            if let Some(name) = some("name") {
                t = t.with("name", &name);
            }
            t
        }
        other => return Err(format!("Unsupported watch type: {other}")),
    };
    Ok(t)
}

/// A `key` watch yields Consul's single `KVPair` object, not the array the endpoint returns.
pub(super) fn shape_view(kind: &str, v: Value) -> Value {
    match (kind, v) {
        ("key", Value::Array(mut a)) => {
            if a.is_empty() {
                Value::Null
            } else {
                a.remove(0)
            }
        }
        (_, v) => v,
    }
}

/// `json.MarshalIndent(data, "", "    ")`.
pub(super) fn indent4(v: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    let _ = serde::Serialize::serialize(v, &mut ser);
    String::from_utf8(buf).unwrap_or_default()
}

/// The child command of `watch`/`lock`: `sh -c "<args joined>"`, or the args as they are.
fn child_command(args: &[String], shell: bool) -> Command {
    if shell {
        let sh = std::env::var("SHELL").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "/bin/sh".into());
        let mut c = Command::new(sh);
        c.arg("-c").arg(args.join(" "));
        c
    } else {
        let mut c = Command::new(&args[0]);
        c.args(&args[1..]);
        c
    }
}

/// An exit status as Go's `exec.ExitError` prints it (`exit status 3`, `signal: killed`).
pub(super) fn go_exit_status(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(c) = s.code() {
        return format!("exit status {c}");
    }
    match s.signal() {
        Some(2) => "signal: interrupt".into(),
        Some(9) => "signal: killed".into(),
        Some(15) => "signal: terminated".into(),
        Some(n) => format!("signal: {n}"),
        None => s.to_string(),
    }
}

async fn run_handler(args: &[String], shell: bool, index: u64, data: &Value) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = child_command(args, shell);
    cmd.env("CONSUL_INDEX", index.to_string()).stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("Error starting handler: {e}"))?;
    let mut input = serde_json::to_vec(data).unwrap_or_default();
    input.push(b'\n');
    if let Some(mut stdin) = child.stdin.take() {
        // A handler that ignores its input may close stdin early; that is not a failure.
        let _ = stdin.write_all(&input).await;
    }
    let status = child.wait().await.map_err(|e| format!("Error executing handler: {e}"))?;
    if !status.success() {
        return Err(format!("Error executing handler: {}", go_exit_status(status)));
    }
    Ok(())
}

pub(super) async fn watch(args: &[String]) -> i32 {
    let p = parse_flags!(
        args,
        &["shell"],
        &["type", "key", "prefix", "service", "tag", "passingonly", "state", "name"],
        WATCH_USAGE
    );
    let kind = p.str("type").unwrap_or("").to_string();
    if kind.is_empty() {
        err("Watch type must be specified");
        err("");
        fail!("{}", WATCH_USAGE.trim_matches('\n'));
    }
    let shell = p.bool_or("shell", true);
    let get = |k: &str| p.str(k).map(str::to_string);
    let mut target = match watch_target(&kind, &get) {
        Ok(t) => t,
        Err(e) => fail!("{e}"),
    };
    let ctx = ctx_or_exit!(p);
    if let Some(dc) = &ctx.dc {
        target = target.with("dc", dc);
    }
    if let Err(e) = ctx.node_name().await {
        fail!("Error querying Consul agent: {e}");
    }
    let handler = p.args.clone();
    let mut watcher: Watcher<Value> = match Watcher::new(vec![ctx.client.clone()], target, Duration::from_secs(300)) {
        Ok(w) => w.stale(ctx.stale),
        Err(e) => fail!("{e}"),
    };
    let mut seen_any = false;
    loop {
        let next = tokio::select! {
            n = watcher.next() => n,
            _ = tokio::signal::ctrl_c() => return 0,
        };
        let view = match next {
            Ok(v) => shape_view(&kind, v),
            Err(e) => {
                err(&format!("Error querying Consul agent: {e}"));
                continue;
            }
        };
        // Consul's plan does not fire for a key that does not exist yet.
        if kind == "key" && view.is_null() && !seen_any {
            continue;
        }
        seen_any = true;
        if handler.is_empty() {
            out(&indent4(&view));
            return 0;
        }
        if let Err(e) = run_handler(&handler, shell, watcher.last_index(), &view).await {
            fail!("{e}");
        }
    }
}

// ---- lock ----

const LOCK_USAGE: &str = "
Usage: agent lock [options] prefix child...

  Acquires a lock at a given path, and invokes a child process when
  successful. The child process can assume the lock is held while it
  executes (CONSUL_LOCK_HELD=true). If the lock is lost or communication is
  disrupted the child process will be sent a SIGTERM signal and given time
  to gracefully exit. After the grace period expires the process will be
  hard terminated.

Command Options:
  -child-exit-code     Exit 2 if the child process exited with an error.
  -monitor-retry=<n>   Retries on 500 errors while monitoring the lock (default 3).
  -n=<n>               Lock holder limit; only 1 is supported (no semaphores).
  -name=<name>         Name to associate with the lock session.
  -pass-stdin          Pass stdin to the child process.
  -shell=<bool>        Use a shell to run the command (default true).
  -timeout=<duration>  Maximum time to wait to acquire the lock (default: forever).
  -verbose             Enable verbose (debugging) output.
";

const LOCK_WAIT: Duration = Duration::from_secs(15);
const LOCK_RETRY: Duration = Duration::from_secs(5);
const SESSION_TTL: Duration = Duration::from_secs(15);
const KILL_GRACE: Duration = Duration::from_secs(5);

/// `path.Join(prefix, ".lock")` without a leading slash.
pub(super) fn lock_key(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        ".lock".into()
    } else {
        format!("{p}/.lock")
    }
}

enum Acquire {
    Held,
    TimedOut,
}

/// Waits for the key to be free and acquires it with the session (api/lock.go `Lock`).
async fn acquire(ctx: &Ctx, key: &str, session: &str, timeout: Option<Duration>) -> Result<Acquire, String> {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut index = 0u64;
    loop {
        if let Some(d) = deadline {
            if tokio::time::Instant::now() >= d {
                return Ok(Acquire::TimedOut);
            }
        }
        let wait = match deadline {
            Some(d) => {
                LOCK_WAIT.min(d.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_millis(1)))
            }
            None => LOCK_WAIT,
        };
        let got: Option<(Vec<KvPair>, u64)> = ctx
            .get_blocking(&format!("/v1/kv/{key}"), &[], index, wait)
            .await
            .map_err(|e| format!("failed to read lock: {e}"))?;
        let pair = got.as_ref().and_then(|(v, _)| v.first().cloned());
        index = got.map(|(_, i)| i).unwrap_or(0);
        if let Some(p) = &pair {
            if p.flags != LOCK_FLAG_VALUE {
                return Err("Existing key does not match lock use".into());
            }
            match p.session.as_deref() {
                Some(s) if s == session => return Ok(Acquire::Held),
                Some(s) if !s.is_empty() => continue, // held by someone else: block on the index
                _ => {}
            }
        }
        let extra =
            vec![("acquire".to_string(), session.to_string()), ("flags".to_string(), LOCK_FLAG_VALUE.to_string())];
        let resp = ctx
            .put(&format!("/v1/kv/{key}"), &extra, Some(Vec::new()))
            .await
            .map_err(|e| format!("failed to acquire lock: {e}"))?;
        if super::http::is_true(&resp) {
            return Ok(Acquire::Held);
        }
        // Lock-delay or a race: retry after a pause.
        let pause = match deadline {
            Some(d) => LOCK_RETRY.min(d.saturating_duration_since(tokio::time::Instant::now())),
            None => LOCK_RETRY,
        };
        tokio::time::sleep(pause).await;
        index = 0;
    }
}

/// Resolves when the lock is no longer ours: the key changed hands or vanished, or the session
/// could not be renewed; up to `retries` server errors in a row are ridden out.
async fn lost(ctx: &Ctx, key: &str, session: &str, retries: u64) {
    let renew = async {
        loop {
            tokio::time::sleep(SESSION_TTL / 2).await;
            match ctx.put(&format!("/v1/session/renew/{session}"), &[], None).await {
                Ok(_) => {}
                Err(CallError::Status { code: 404, .. }) => return,
                Err(_) => {} // transient; the monitor decides
            }
        }
    };
    let monitor = async {
        let mut index = 0u64;
        let mut failures = 0u64;
        loop {
            match ctx.get_blocking::<Vec<KvPair>>(&format!("/v1/kv/{key}"), &[], index, LOCK_WAIT).await {
                Ok(got) => {
                    failures = 0;
                    let pair = got.as_ref().and_then(|(v, _)| v.first().cloned());
                    if pair.and_then(|p| p.session).as_deref() != Some(session) {
                        return;
                    }
                    index = got.map(|(_, i)| i).unwrap_or(0);
                }
                Err(_) => {
                    failures += 1;
                    if failures > retries {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    };
    tokio::select! {
        _ = renew => {},
        _ = monitor => {},
    }
}

async fn terminate(child: &mut tokio::process::Child, verbose: bool) {
    let Some(pid) = child.id() else { return };
    if verbose {
        out(&format!("Terminating child pid {pid}"));
    }
    let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
        if verbose {
            out(&format!("Killing child pid {pid}"));
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

pub(super) async fn lock(args: &[String]) -> i32 {
    let p = parse_flags!(
        args,
        &["child-exit-code", "pass-stdin", "verbose", "shell"],
        &["n", "monitor-retry", "name", "timeout", "try"],
        LOCK_USAGE
    );
    let limit = match p.i64("n") {
        Ok(v) => v.unwrap_or(1),
        Err(e) => fail!("{e}"),
    };
    if limit <= 0 {
        fail!("Lock holder limit must be positive");
    }
    if limit > 1 {
        fail!("Semaphores (-n greater than 1) are not supported by this agent; use -n=1");
    }
    if p.args.len() < 2 {
        fail!("Key prefix and child command must be specified");
    }
    let prefix = p.args[0].trim_start_matches('/').to_string();
    let child_args = p.args[1..].to_vec();
    let timeout = match p.duration("timeout").and_then(|t| match t {
        Some(t) => Ok(Some(t)),
        None => p.duration("try"),
    }) {
        Ok(t) => t.filter(|t| !t.is_zero()),
        Err(e) => fail!("{e}"),
    };
    let retries = match p.i64("monitor-retry") {
        Ok(v) => v.unwrap_or(3),
        Err(e) => fail!("{e}"),
    };
    if retries < 0 {
        fail!("Number for 'monitor-retry' must be >= 0");
    }
    let shell = p.bool_or("shell", true);
    let verbose = p.bool("verbose");
    let name = p
        .str("name")
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("Consul lock for '{}' at '{}'", child_args.join(" "), prefix));
    let ctx = ctx_or_exit!(p);
    if let Err(e) = ctx.node_name().await {
        fail!("Error querying Consul agent: {e}");
    }
    let key = lock_key(&prefix);
    if verbose {
        out(&format!("Setting up lock at path: {key}"));
    }
    let body = serde_json::to_vec(&serde_json::json!({
        "Name": name,
        "TTL": format!("{}s", SESSION_TTL.as_secs()),
        "Behavior": "release",
    }))
    .unwrap_or_default();
    let session = match ctx.put("/v1/session/create", &[], Some(body)).await {
        Ok(r) => match serde_json::from_slice::<Value>(&r.body).ok().and_then(|v| v["ID"].as_str().map(str::to_string))
        {
            Some(id) => id,
            None => fail!("Lock setup failed: session create returned no ID"),
        },
        Err(e) => fail!("Lock acquisition failed: failed to create session: {e}"),
    };
    let destroy_session = || async {
        let _ = ctx.put(&format!("/v1/session/destroy/{session}"), &[], None).await;
    };
    if verbose {
        out("Attempting lock acquisition");
    }
    let acquired = tokio::select! {
        a = acquire(&ctx, &key, &session, timeout) => a,
        _ = tokio::signal::ctrl_c() => Ok(Acquire::TimedOut),
    };
    match acquired {
        Ok(Acquire::Held) => {}
        Ok(Acquire::TimedOut) => {
            destroy_session().await;
            fail!("Shutdown triggered or timeout during lock acquisition");
        }
        Err(e) => {
            destroy_session().await;
            fail!("Lock acquisition failed: {e}");
        }
    }

    if verbose {
        out("Starting handler");
    }
    let mut cmd = child_command(&child_args, shell);
    cmd.env("CONSUL_LOCK_HELD", "true");
    if !p.bool("pass-stdin") {
        cmd.stdin(std::process::Stdio::null());
    }
    let mut child_code = 0;
    match cmd.spawn() {
        Err(e) => {
            err(&format!("Error starting handler: {e}"));
            child_code = 2;
        }
        Ok(mut child) => {
            let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let term = async {
                match sigterm.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                status = child.wait() => {
                    match status {
                        Ok(s) if s.success() => {}
                        Ok(s) => {
                            err(&format!("Error running handler: {}", go_exit_status(s)));
                            child_code = 2;
                        }
                        Err(e) => {
                            err(&format!("Error running handler: {e}"));
                            child_code = 2;
                        }
                    }
                    if verbose {
                        out("Child terminated, releasing lock");
                    }
                }
                _ = lost(&ctx, &key, &session, retries as u64) => {
                    if verbose {
                        out("Lock lost, killing child");
                    }
                    terminate(&mut child, verbose).await;
                }
                _ = tokio::signal::ctrl_c() => {
                    if verbose {
                        out("Shutdown triggered, killing child");
                    }
                    terminate(&mut child, verbose).await;
                }
                _ = term => {
                    if verbose {
                        out("Shutdown triggered, killing child");
                    }
                    terminate(&mut child, verbose).await;
                }
            }
        }
    }

    // Release, then delete the key unless someone else holds it now (api/lock.go Destroy).
    let release = vec![("release".to_string(), session.clone()), ("flags".to_string(), LOCK_FLAG_VALUE.to_string())];
    if let Err(e) = ctx.put(&format!("/v1/kv/{key}"), &release, Some(Vec::new())).await {
        destroy_session().await;
        fail!("Lock release failed: {e}");
    }
    match read_key(&ctx, &key).await {
        Ok(Some((pair, _))) if pair.session.as_deref().is_some_and(|s| !s.is_empty()) => {
            if verbose {
                out("Cleanup aborted, lock in use");
            }
        }
        Ok(Some((pair, _))) => {
            let cas = vec![("cas".to_string(), pair.modify_index.to_string())];
            if let Err(e) = ctx.send(http::Method::DELETE, &format!("/v1/kv/{key}"), &cas, None, false, None).await {
                destroy_session().await;
                fail!("Lock cleanup failed: {e}");
            }
            if verbose {
                out("Cleanup succeeded");
            }
        }
        Ok(None) => {}
        Err(e) => {
            destroy_session().await;
            fail!("Lock cleanup failed: {e}");
        }
    }
    destroy_session().await;
    if p.bool("child-exit-code") {
        child_code
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn watch_types_map_to_endpoints() {
        let t = watch_target("key", &flags(&[("key", "/foo/bar")])).unwrap();
        assert_eq!(t.path, "/v1/kv/foo/bar");
        let t = watch_target("keyprefix", &flags(&[("prefix", "app/")])).unwrap();
        assert_eq!((t.path.as_str(), t.extra.len()), ("/v1/kv/app/", 1));
        let t = watch_target("service", &flags(&[("service", "web"), ("tag", "v1"), ("passingonly", "true")])).unwrap();
        assert_eq!(t.path, "/v1/health/service/web");
        assert_eq!(t.extra, vec![("tag".into(), "v1".into()), ("passing".into(), "1".into())]);
        assert_eq!(watch_target("checks", &flags(&[])).unwrap().path, "/v1/health/state/any");
        assert_eq!(watch_target("checks", &flags(&[("service", "web")])).unwrap().path, "/v1/health/checks/web");
        assert_eq!(watch_target("services", &flags(&[])).unwrap().path, "/v1/catalog/services");
        assert_eq!(watch_target("nodes", &flags(&[])).unwrap().path, "/v1/catalog/nodes");
        assert_eq!(
            watch_target("event", &flags(&[("name", "deploy")])).unwrap().extra,
            vec![("name".into(), "deploy".into())]
        );
        assert_eq!(watch_target("key", &flags(&[])).unwrap_err(), "Must specify a single key to watch");
        assert_eq!(watch_target("bogus", &flags(&[])).unwrap_err(), "Unsupported watch type: bogus");
        assert!(watch_target("checks", &flags(&[("service", "a"), ("state", "passing")])).is_err());
    }

    #[test]
    fn key_views_are_single_objects() {
        let v = serde_json::json!([{"Key": "a"}]);
        assert_eq!(shape_view("key", v.clone()), serde_json::json!({"Key": "a"}));
        assert_eq!(shape_view("keyprefix", v.clone()), v);
        assert_eq!(shape_view("key", serde_json::json!([])), Value::Null);
        assert_eq!(indent4(&serde_json::json!({"a": 1})), "{\n    \"a\": 1\n}");
    }

    #[test]
    fn lock_keys() {
        assert_eq!(lock_key("service/leader"), "service/leader/.lock");
        assert_eq!(lock_key("/service/leader/"), "service/leader/.lock");
    }

    #[tokio::test]
    async fn handler_gets_json_on_stdin_and_index_in_env() {
        let dir = tempfile::tempdir().unwrap();
        let outf = dir.path().join("out");
        let cmd = vec![format!("cat > {}; echo \" $CONSUL_INDEX\" >> {}", outf.display(), outf.display())];
        run_handler(&cmd, true, 42, &serde_json::json!({"a": 1})).await.unwrap();
        assert_eq!(std::fs::read_to_string(&outf).unwrap(), "{\"a\":1}\n 42\n");
        assert_eq!(
            run_handler(&["exit 3".to_string()], true, 1, &Value::Null).await.unwrap_err(),
            "Error executing handler: exit status 3"
        );
    }
}
