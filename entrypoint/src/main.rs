//! `docker-entrypoint`: PID 1 of the `FROM scratch` images, in place of the official Consul
//! image's `dumb-init` + `docker-entrypoint.sh`. It decides the command as that script does
//! (`plan`), writes `CONSUL_LOCAL_CONFIG`, then runs the command as init (`init`): signals are
//! passed on, orphans reaped, the program's exit status returned.
//!
//! `docker-entrypoint [--program=NAME] ARGS...`: NAME is the image's program (default `agent`);
//! the Consul conventions apply only to the agent. Knows nothing of the agent's internals.

mod init;
mod plan;

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn main() {
    let mut args = Vec::new();
    for a in std::env::args_os().skip(1) {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(a) => {
                eprintln!("docker-entrypoint: argument {a:?} is not UTF-8");
                std::process::exit(2);
            }
        }
    }
    let mut program = plan::AGENT.to_string();
    if let Some(p) = args.first().and_then(|a| a.strip_prefix("--program=")) {
        program = p.to_string();
        args.remove(0);
    }
    let var = |k: &str| std::env::var(k).ok();
    let env = plan::Env { var: &var, interface_ipv4: &interface_ipv4, on_path: &on_path };
    let plan = match plan::plan(&program, args, &env) {
        Ok(p) => p,
        Err(message) => {
            // The official script echoes this to stdout and exits 1.
            println!("{message}");
            std::process::exit(1);
        }
    };
    for note in &plan.notes {
        println!("{note}");
    }
    if let Some((path, text)) = &plan.local_config {
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("docker-entrypoint: writing CONSUL_LOCAL_CONFIG to {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    std::process::exit(init::run(&plan.argv));
}

/// The first IPv4 address of the interface `name`, as `ip -o -4 addr list NAME | head -n1`.
fn interface_ipv4(name: &str) -> Option<Ipv4Addr> {
    let mut found = None;
    // SAFETY: getifaddrs hands us a linked list we only read and then free once.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut cur = list;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || (*ifa.ifa_addr).sa_family as i32 != libc::AF_INET {
                continue;
            }
            if std::ffi::CStr::from_ptr(ifa.ifa_name).to_bytes() != name.as_bytes() {
                continue;
            }
            let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
            found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            break;
        }
        libc::freeifaddrs(list);
    }
    found
}

/// Whether `word` is an executable file in one of `PATH`'s directories.
fn on_path(word: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into());
    path.split(':').filter(|d| !d.is_empty()).any(|dir| {
        std::fs::metadata(Path::new(dir).join(word)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}
