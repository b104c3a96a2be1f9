//! `agent`: Consul's agent and CLI in one binary. `agent agent ...` (or `agent -server ...`) runs
//! the daemon; every other first word is a CLI subcommand.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let first = args.first().cloned().unwrap_or_default();
    let daemon = first == "agent"
        || (first.starts_with('-')
            && !matches!(first.as_str(), "-h" | "-help" | "--help" | "-v" | "-version" | "--version"));
    let result = runtime.block_on(async move {
        if daemon {
            let rest = if first == "agent" { args[1..].to_vec() } else { args };
            agent::daemon::run(rest).await
        } else {
            agent::cli::run(args).await
        }
    });
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("==> {e:#}");
            ExitCode::from(1)
        }
    }
}
