//! The `template` binary: consul-template's command line over [`template::Runner`].

use anyhow::Context as _;

const USAGE: &str = "Usage: template [options]

  Watches the agent's catalog and KV with blocking queries, renders templates
  (.ctmpl: Go template syntax as consul-template reads it; .hbs: handlebars)
  and runs their commands when the output changes.

Options (single or double dash, -x=v or -x v):
  -config=<path>            HCL or JSON config file or directory (repeatable)
  -consul-addr=<addr>       agent address (default $CONSUL_HTTP_ADDR or 127.0.0.1:8500; repeatable for failover)
  -consul-token=<token>     ACL token (default $CONSUL_HTTP_TOKEN)
  -consul-ssl[=false]       speak HTTPS to the agents (also -ssl; on when any -consul-ssl-* is given)
  -consul-ssl-verify=false  do not verify the agent's certificate (also -ssl-verify)
  -consul-ssl-ca-cert=<file>, -consul-ssl-ca-path=<dir>   CA to trust (also -ssl-ca-cert, -ssl-ca-path)
  -consul-ssl-cert=<file>, -consul-ssl-key=<file>         client certificate and key (also -ssl-cert, -ssl-key)
  -consul-ssl-server-name=<name>   name the agent's certificate must carry (also -ssl-server-name)
                            without these: CONSUL_HTTP_SSL, CONSUL_CACERT, CONSUL_CAPATH, CONSUL_CLIENT_CERT,
                            CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME, CONSUL_HTTP_SSL_VERIFY, https:// addresses
  -template=<in:out:cmd>    template to render, destination, command to run (repeatable)
  -wait=<min[:max]>         quiescence timers (max defaults to 4*min)
  -once                     render once and exit
  -dry                      print rendered templates to stdout instead of writing them
  -exec=<command>           run and supervise a child; restart or signal it on change
  -exec-reload-signal, -exec-kill-signal, -exec-kill-timeout, -exec-splay
  -kill-signal=<sig>        signal that stops template (default SIGINT)
  -reload-signal=<sig>      signal that reloads configuration (default SIGHUP)
  -log-level=<level>        trace, debug, info, warn, err (default warn)
  -max-stale=<dur>          read stale, re-read from the leader if older than this (default 2s; 0 disables)
  -consul-retry[=false]     retry failed queries (default true; false: the first failure is fatal)
  -consul-retry-attempts=N  retries before giving up with an error (default 0: retry forever)
  -consul-retry-backoff=<dur>  first retry wait, doubled each time, jittered (default 250ms; alias -retry)
  -consul-retry-max-backoff=<dur>  longest retry wait (default 1m; 0 no limit)
  -pid-file=<path>          write the process id here
  -v, -version              print the version
";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (action, cfg) = match template::config::load(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("template: {e}\n\n{USAGE}");
            std::process::exit(1);
        }
    };
    match action {
        template::config::Action::Help => {
            print!("{USAGE}");
            return Ok(());
        }
        template::config::Action::Version => {
            println!("template v{}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        template::config::Action::Run => {}
    }
    let level = match cfg.log_level.as_str() {
        "err" => "error",
        other => other,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("template={level},api={level}")));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    if cfg.templates.is_empty() {
        eprintln!("template: no templates given (-template in:out[:command] or a config file)\n\n{USAGE}");
        std::process::exit(1);
    }
    let pid_file = cfg.pid_file.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let _runtime = runtime.enter();
    // Every template is parsed and checked here, before any query is made or any file (the pid
    // file included) is written: a broken template stops start-up, naming its file and line.
    let runner = match template::Runner::new(cfg) {
        Ok(r) => r.with_args(args),
        Err(e) => fail(&e),
    };
    if let Some(pid_file) = &pid_file {
        std::fs::write(pid_file, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing pid file {}", pid_file.display()))?;
    }
    let result = runtime.block_on(runner.run(std::future::pending()));
    if let Some(p) = pid_file {
        let _ = std::fs::remove_file(p);
    }
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => fail(&e),
    }
}

/// Go's (and consul-template's) way: one line on stderr, prefixed with the program's name.
fn fail(e: &template::runner::Error) -> ! {
    eprintln!("template: {e}");
    std::process::exit(1)
}
