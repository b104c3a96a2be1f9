//! PID 1's job, as dumb-init does it in the official image: start the program in its own
//! session, pass every signal we get on to that session, reap every child that is handed to us
//! (orphans of the program's own children), and exit with the program's status.

use std::ffi::CString;
use std::io;

/// Runs `argv` (looked up on `PATH`) under this process as init; returns the exit code to end
/// with: the program's, or 128 + the signal that killed it.
pub fn run(argv: &[String]) -> i32 {
    let cargs: Result<Vec<CString>, _> = argv.iter().map(|a| CString::new(a.as_bytes())).collect();
    let Ok(cargs) = cargs else {
        eprintln!("docker-entrypoint: an argument holds a NUL byte");
        return 2;
    };
    if cargs.is_empty() {
        eprintln!("docker-entrypoint: nothing to run");
        return 2;
    }
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());

    // SAFETY: plain calls into libc on stack values we own; this process has one thread, so the
    // child after fork may do anything the parent could until it execs.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut before: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        // Every signal waits in the queue for `sigwaitinfo`, none runs a handler or the default
        // action (for PID 1 most defaults are "ignore" anyway, which would drop SIGTERM).
        libc::sigprocmask(libc::SIG_BLOCK, &all, &mut before);
        if libc::getpid() != 1 {
            // Under `docker run --init` or in a test: still adopt orphans, as PID 1 would.
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        let child = libc::fork();
        if child < 0 {
            eprintln!("docker-entrypoint: fork: {}", io::Error::last_os_error());
            return 2;
        }
        if child == 0 {
            libc::sigprocmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
            libc::setsid();
            libc::execvp(ptrs[0], ptrs.as_ptr());
            let err = io::Error::last_os_error();
            eprintln!("docker-entrypoint: exec {:?}: {err}", argv[0]);
            libc::_exit(if err.kind() == io::ErrorKind::NotFound { 127 } else { 126 });
        }
        supervise(child, &all)
    }
}

/// Waits for signals until `child` has exited: SIGCHLD reaps, everything else is forwarded.
///
/// # Safety
/// `all` is a filled signal set that is blocked in this thread.
unsafe fn supervise(child: libc::pid_t, all: &libc::sigset_t) -> i32 {
    loop {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let sig = libc::sigwaitinfo(all, &mut info);
        if sig < 0 {
            continue; // EINTR
        }
        if sig == libc::SIGCHLD {
            if let Some(code) = reap(child) {
                return code;
            }
            continue;
        }
        // The whole session the program leads (its helpers too), as dumb-init does; if the
        // group is gone already, the program itself.
        if libc::kill(-child, sig) != 0 {
            libc::kill(child, sig);
        }
    }
}

/// Reaps every child that has exited; returns the exit code once `child` is among them.
///
/// # Safety
/// Only calls `waitpid`.
unsafe fn reap(child: libc::pid_t) -> Option<i32> {
    let mut result = None;
    loop {
        let mut status = 0;
        let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
        if pid <= 0 {
            return result;
        }
        if pid == child {
            result = Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                1
            });
        }
    }
}
