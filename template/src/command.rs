//! Running the commands templates name after they render (`nginx -s reload`): through `sh -c`,
//! in their own process group (so a timeout kills the whole pipeline, not just the shell), with
//! the agent's address in the environment, bounded by a timeout.

use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("running {command:?}: {message}")]
    Spawn { command: String, message: String },
    #[error("command {command:?} exited with status {status}")]
    Exit { command: String, status: String },
    #[error("command {command:?} did not finish in {timeout:?}; killed")]
    Timeout { command: String, timeout: Duration },
}

/// Runs `command` through `sh -c`, waiting at most `timeout`. Output goes to ours, as
/// consul-template forwards it.
pub async fn run(command: &str, timeout: Duration, env: &[(String, String)]) -> Result<(), Error> {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c").arg(command).process_group(0).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| Error::Spawn { command: command.to_string(), message: e.to_string() })?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(Error::Exit { command: command.to_string(), status: status.to_string() }),
        Ok(Err(e)) => Err(Error::Spawn { command: command.to_string(), message: e.to_string() }),
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: kill(2) with a negative pid signals that process group; no memory is
                // involved. The group is the one this child leads (process_group(0)).
                unsafe {
                    libc::kill(-(pid as i32), libc::SIGKILL);
                }
            }
            let _ = child.wait().await;
            Err(Error::Timeout { command: command.to_string(), timeout })
        }
    }
}

/// Identical commands run once per pass, in first-seen order (consul-template's `findCommand`).
pub fn dedupe<'a>(commands: impl IntoIterator<Item = (&'a str, Duration)>) -> Vec<(String, Duration)> {
    let mut out: Vec<(String, Duration)> = Vec::new();
    for (c, t) in commands {
        if !out.iter().any(|(seen, _)| seen == c) {
            out.push((c.to_string(), t));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_through_the_shell_with_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o");
        let cmd = format!("echo \"$CONSUL_HTTP_ADDR\" | tr a-z A-Z > {}", out.display());
        run(&cmd, Duration::from_secs(10), &[("CONSUL_HTTP_ADDR".into(), "abc".into())]).await.unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "ABC\n");
    }

    #[tokio::test]
    async fn failures_and_timeouts_are_errors() {
        let e = run("exit 3", Duration::from_secs(10), &[]).await.unwrap_err();
        assert!(matches!(e, Error::Exit { .. }), "{e}");
        let started = std::time::Instant::now();
        let e = run("sleep 30 | cat", Duration::from_millis(200), &[]).await.unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn dedupe_keeps_first_order() {
        let t = Duration::from_secs(1);
        let got = dedupe([("b", t), ("a", t), ("b", t)]);
        assert_eq!(got.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(), vec!["b", "a"]);
    }
}
