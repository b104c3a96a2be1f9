//! Logging: tracing to stderr, also fanned out to `/v1/agent/monitor` subscribers.

use std::io::Write;
use std::sync::OnceLock;
use tokio::sync::broadcast;

static LOGS: OnceLock<broadcast::Sender<String>> = OnceLock::new();

/// Log lines as they are written, for `agent monitor`.
pub fn subscribe() -> broadcast::Receiver<String> {
    LOGS.get_or_init(|| broadcast::channel(1024).0).subscribe()
}

struct Tee;

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let tx = LOGS.get_or_init(|| broadcast::channel(1024).0);
        if tx.receiver_count() > 0 {
            let _ = tx.send(String::from_utf8_lossy(buf).into_owned());
        }
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Consul's levels (trace|debug|info|warn|error) as a tracing filter.
pub fn init(level: &str) {
    let level = match level.to_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "warn" | "warning" => "warn",
        "err" | "error" => "error",
        _ => "info",
    };
    // Our crates at the asked level; dependencies only from warn up, so trace stays readable.
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,agent={level},api={level}")));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| Tee).with_ansi(false).try_init();
}
