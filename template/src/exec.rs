//! `-exec`: one supervised child (consul-template's supervisor mode). Started once every
//! template has rendered, signalled (or restarted) when a template changes, sent our signals,
//! and stopped with its kill signal, then SIGKILL after the kill timeout.

use crate::config::ExecConfig;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("starting {command:?}: {source}")]
pub struct Error {
    pub command: String,
    pub source: std::io::Error,
}

pub struct Child {
    cfg: ExecConfig,
    child: tokio::process::Child,
    pid: i32,
}

impl Child {
    pub fn spawn(cfg: &ExecConfig, env: &[(String, String)]) -> Result<Child, Error> {
        let mut cmd = tokio::process::Command::new("/bin/sh");
        // Its own process group: a signal reaches the program even when `sh` does not exec it.
        cmd.arg("-c").arg(shell_line(&cfg.command)).process_group(0).kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|source| Error { command: cfg.command.clone(), source })?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        tracing::info!(pid, command = %cfg.command, "child started");
        Ok(Child { cfg: cfg.clone(), child, pid })
    }

    pub fn signal(&self, sig: i32) {
        if self.pid > 0 {
            // SAFETY: kill(2) on the child's process group; no memory is shared.
            unsafe {
                libc::kill(-self.pid, sig);
            }
        }
    }

    /// Tells the child its templates changed: its reload signal, or a restart when it has none.
    pub async fn reload(self, env: &[(String, String)]) -> Result<Child, Error> {
        match self.cfg.reload_signal {
            Some(sig) => {
                if !self.cfg.splay.is_zero() {
                    let nanos = rand_nanos(self.cfg.splay);
                    tokio::time::sleep(Duration::from_nanos(nanos)).await;
                }
                self.signal(sig);
                Ok(self)
            }
            None => {
                let cfg = self.cfg.clone();
                self.stop().await;
                Child::spawn(&cfg, env)
            }
        }
    }

    pub async fn stop(mut self) {
        self.signal(self.cfg.kill_signal);
        if tokio::time::timeout(self.cfg.kill_timeout, self.child.wait()).await.is_err() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait().await;
        }
    }

    /// Waits for the child to exit; returns its exit code (128+signal when killed).
    pub async fn wait(&mut self) -> i32 {
        match self.child.wait().await {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1)
            }
            Err(_) => 1,
        }
    }
}

fn rand_nanos(max: Duration) -> u64 {
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    (seed as u64) % (max.as_nanos().max(1) as u64)
}

/// A simple command (`nginx -c /etc/nginx/nginx.conf`) is run as `exec ...`, so the program replaces the
/// shell: otherwise dash stays in between and a reload signal sent to the group (SIGHUP) ends
/// the shell, which reads as the child exiting. Anything with shell syntax runs as written.
fn shell_line(command: &str) -> String {
    let simple = !command.trim().is_empty()
        && !command.chars().any(|c| matches!(c, ';' | '&' | '|' | '<' | '>' | '(' | ')' | '$' | '`' | '\\' | '\n'))
        && !command.trim_start().starts_with("exec ");
    if simple {
        format!("exec {command}")
    } else {
        command.to_string()
    }
}

#[cfg(test)]
mod shell_line_tests {
    use super::shell_line;

    #[test]
    fn simple_commands_replace_the_shell_and_others_run_as_written() {
        assert_eq!(shell_line("nginx"), "exec nginx");
        assert_eq!(shell_line("nginx -g 'daemon off;'"), "nginx -g 'daemon off;'");
        assert_eq!(shell_line("exec nginx"), "exec nginx");
        assert_eq!(shell_line("a && b"), "a && b");
        assert_eq!(shell_line("echo $HOME"), "echo $HOME");
    }
}
