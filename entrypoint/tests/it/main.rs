//! The entrypoint as a process: it passes signals on, reaps orphans, returns the program's
//! status, and applies the Consul image's conventions (with a fake `agent` on `PATH` that
//! prints its arguments).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn entrypoint() -> Command {
    Command::new(env!("CARGO_BIN_EXE_docker-entrypoint"))
}

/// A directory holding a fake `agent` that prints its arguments, for `PATH`.
fn fake_agent() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = dir.path().join("agent");
    std::fs::write(&agent, "#!/bin/sh\necho \"$@\"\n").expect("write fake agent");
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn with_path(cmd: &mut Command, dir: &tempfile::TempDir) {
    cmd.env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()));
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_agent_subcommand_gets_the_image_dirs_and_the_interface_address() {
    let bin = fake_agent();
    let mut cmd = entrypoint();
    with_path(&mut cmd, &bin);
    let out =
        cmd.args(["agent", "-dev", "-client", "0.0.0.0"]).env("CONSUL_BIND_INTERFACE", "lo").output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out),
        "==> Found address '127.0.0.1' for interface 'lo', setting bind option...\n\
         agent -data-dir=/consul/data -config-dir=/consul/config -bind=127.0.0.1 -dev -client 0.0.0.0\n"
    );
    let mut cmd = entrypoint();
    with_path(&mut cmd, &bin);
    let out = cmd.args(["members", "-detailed"]).output().expect("run");
    assert_eq!(text(&out), "members -detailed\n");
}

#[test]
fn an_interface_without_ipv4_is_the_official_error() {
    let out = entrypoint().args(["agent"]).env("CONSUL_CLIENT_INTERFACE", "nope0").output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out), "Could not find IP for interface 'nope0', exiting\n");
}

#[test]
fn local_config_is_written_before_the_program_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = entrypoint()
        .args(["/bin/sh", "-c", "cat \"$CONSUL_CONFIG_DIR/local.json\""])
        .env("CONSUL_CONFIG_DIR", dir.path())
        .env("CONSUL_LOCAL_CONFIG", r#"{"leave_on_terminate": true}"#)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out), "{\"leave_on_terminate\": true}\n");
}

#[test]
fn exit_status_is_the_programs_or_128_plus_its_signal() {
    let code = |script: &str| entrypoint().args(["--program=x", "sh", "-c", script]).status().expect("run").code();
    assert_eq!(code("exit 3"), Some(3));
    assert_eq!(code("kill -KILL $$"), Some(137));
    let out = entrypoint().args(["--program=x", "/nonexistent/prog"]).output().expect("run");
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/prog"), "{out:?}");
}

#[test]
fn sigterm_reaches_the_program_and_orphans_are_reaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let orphan_pid = dir.path().join("orphan");
    // The subshell leaves a `sleep` behind that outlives it: an orphan the entrypoint adopts.
    let script = format!(
        "trap 'exit 7' TERM; (sleep 0.3 & echo $! > {}); echo ready; while :; do sleep 0.05; done",
        orphan_pid.display()
    );
    let mut child =
        entrypoint().args(["--program=x", "sh", "-c", &script]).stdout(Stdio::piped()).spawn().expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
    assert_eq!(line, "ready\n");
    let pid: u32 = std::fs::read_to_string(&orphan_pid).expect("orphan pid").trim().parse().expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("orphan still running");
    let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:")).map(str::trim).unwrap_or("");
    assert_eq!(ppid, child.id().to_string(), "the entrypoint adopted the orphan");
    // Once the orphan has exited it must be gone, not a zombie waiting for a parent's wait().
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => break,
            Ok(stat) => {
                let state = stat.rsplit(')').next().unwrap_or("").split_whitespace().next().unwrap_or("");
                assert!(Instant::now() < deadline, "orphan {pid} still there in state {state}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill").success();
    assert!(ok);
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(7), "the trap ran: SIGTERM was passed on");
}
