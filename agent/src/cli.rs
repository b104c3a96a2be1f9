//! Consul's CLI subcommands. (Being written; see the helper's report.)

/// Runs a CLI subcommand other than `agent`; returns the process exit code.
pub async fn run(args: Vec<String>) -> anyhow::Result<i32> {
    eprintln!("unknown command: {}", args.first().map(String::as_str).unwrap_or(""));
    Ok(1)
}
