//! The runner: one task that owns the templates, the brain and the watches, and loops over a
//! closed set of inputs (dependency data, template edits, quiescence timers, signals, the
//! child's exit). Each pass renders the templates whose data changed, writes those whose bytes
//! changed, then runs their commands once each.
//!
//! Deliberate differences from consul-template, all from its issue tracker: a failing command
//! is logged and retried on the next change instead of stopping the process; an unreachable
//! agent is retried forever while the files keep their last good contents; template files are
//! watched and a template that no longer parses keeps its last good output.

use crate::command;
use crate::config::{self, Config, TemplateConfig};
use crate::dep::Dep;
use crate::engine::{self, Compiled, Language};
use crate::exec::{self, Child};
use crate::files::{self, SourceWatch};
use crate::funcs::Brain;
use crate::watch::{self, Update};
use crate::write;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading template {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Template(#[from] engine::Error),
    #[error(transparent)]
    Client(#[from] api::Error),
    #[error(transparent)]
    Watch(#[from] files::Error),
    #[error(transparent)]
    Exec(#[from] exec::Error),
    #[error(transparent)]
    Config(#[from] config::Error),
    #[error("installing signal handlers: {0}")]
    Signal(std::io::Error),
    #[error("template {name}: {message}")]
    Render { name: String, message: String },
    #[error("{template}: {source}")]
    Write { template: String, source: write::Error },
    #[error("{dep}: {error}")]
    Query { dep: String, error: String },
}

/// While templates wait for data: gather updates until none came for this long...
const COALESCE_GAP: Duration = Duration::from_millis(5);
/// ...or for at most this long.
const COALESCE_MAX: Duration = Duration::from_millis(200);

/// How long a template source must be quiet before it is reread.
const SOURCE_SETTLE: Duration = Duration::from_millis(50);

struct Tmpl {
    cfg: TemplateConfig,
    compiled: Compiled,
    /// Dependencies of the last render.
    used: BTreeSet<Dep>,
    /// Its data (or source) changed since the last render.
    dirty: bool,
    /// Render and write now, whatever the quiescence timer says.
    due: bool,
    /// Written (or found identical) at least once.
    rendered: bool,
    /// Its last render lacked data.
    waiting: bool,
    /// (fire at, never later than) while waiting for quiescence.
    quiescence: Option<(Instant, Instant)>,
    command_failed: bool,
    dry_last: Option<String>,
}

fn compile(cfg: &TemplateConfig) -> Result<Compiled, Error> {
    let (name, text) = match (&cfg.source, &cfg.contents) {
        (Some(p), _) => {
            let text = std::fs::read_to_string(p).map_err(|source| Error::Read { path: p.clone(), source })?;
            (p.display().to_string(), text)
        }
        (None, Some(c)) => (cfg.name(), c.clone()),
        (None, None) => return Err(Error::Render { name: cfg.name(), message: "no source".into() }),
    };
    let lang = cfg.source.as_deref().map(Language::of).unwrap_or(Language::Go);
    let opts = engine::Options {
        left_delimiter: cfg.left_delimiter.clone(),
        right_delimiter: cfg.right_delimiter.clone(),
        error_on_missing_key: cfg.error_on_missing_key,
        sandbox: cfg.sandbox_path.clone(),
        function_denylist: cfg.function_denylist.clone(),
    };
    Ok(Compiled::new(&name, &text, lang, &opts)?)
}

fn compile_all(templates: &[TemplateConfig]) -> Result<Vec<Tmpl>, Error> {
    templates
        .iter()
        .map(|cfg| {
            Ok(Tmpl {
                compiled: compile(cfg)?,
                cfg: cfg.clone(),
                used: BTreeSet::new(),
                dirty: true,
                due: true,
                rendered: false,
                waiting: true,
                quiescence: None,
                command_failed: false,
                dry_last: None,
            })
        })
        .collect()
}

pub struct Runner {
    cfg: Config,
    /// The command line, reread on the reload signal.
    args: Option<Vec<String>>,
    watch_opts: watch::Options,
    env: Vec<(String, String)>,
    templates: Vec<Tmpl>,
    brain: Arc<Brain>,
    watches: HashMap<Dep, JoinHandle<()>>,
    failing: HashSet<Dep>,
    /// A query whose retries ran out: the run ends with it, as consul-template's does.
    fatal: Option<Error>,
    updates_tx: UnboundedSender<Update>,
    updates_rx: UnboundedReceiver<Update>,
    sources_tx: UnboundedSender<PathBuf>,
    sources_rx: UnboundedReceiver<PathBuf>,
    source_watch: Option<SourceWatch>,
    /// Template sources that changed, and when to reread them.
    pending_sources: HashMap<PathBuf, Instant>,
    child: Option<Child>,
    /// Where `-dry` prints.
    dry_out: Box<dyn std::io::Write + Send>,
}

impl Runner {
    /// Compiles every template (a template that does not parse at start is an error, as in
    /// consul-template) and prepares the agent clients.
    pub fn new(cfg: Config) -> Result<Runner, Error> {
        // TLS files are read once, whichever address needs them.
        let env_tls = api::EnvTls::from_env();
        let mut loaded: Vec<(api::TlsOptions, api::Tls)> = Vec::new();
        let mut clients = Vec::new();
        let mut first_tls: Option<api::TlsOptions> = None;
        for (i, a) in cfg.consul_addrs.iter().enumerate() {
            let client = match cfg.consul_tls(a, &env_tls) {
                None => api::Client::new(a)?,
                Some(opts) => {
                    if opts.insecure_skip_verify {
                        tracing::warn!(agent = %a, "not verifying the agent's TLS certificate");
                    }
                    let tls = match loaded.iter().find(|(o, _)| *o == opts) {
                        Some((_, t)) => t.clone(),
                        None => {
                            let t = opts.load()?;
                            loaded.push((opts.clone(), t.clone()));
                            t
                        }
                    };
                    if i == 0 {
                        first_tls = Some(opts);
                    }
                    api::Client::https(a, &tls)?
                }
            };
            clients.push(client.with_token(cfg.consul_token.clone()));
        }
        if clients.is_empty() {
            return Err(api::Error::Address(String::new()).into());
        }
        let mut env = vec![("CONSUL_HTTP_ADDR".to_string(), cfg.consul_addrs.first().cloned().unwrap_or_default())];
        if let Some(t) = &cfg.consul_token {
            env.push(("CONSUL_HTTP_TOKEN".into(), t.clone()));
        }
        // As consul-template does, commands learn whether to speak TLS to that address; here it
        // is what template itself does with it.
        env.push(("CONSUL_HTTP_SSL".into(), first_tls.is_some().to_string()));
        env.push((
            "CONSUL_HTTP_SSL_VERIFY".into(),
            first_tls.as_ref().is_none_or(|o| !o.insecure_skip_verify).to_string(),
        ));
        let templates = compile_all(&cfg.templates)?;
        let (updates_tx, updates_rx) = unbounded_channel();
        let (sources_tx, sources_rx) = unbounded_channel();
        Ok(Runner {
            watch_opts: watch::Options {
                clients,
                wait: cfg.block_query_wait,
                max_stale: cfg.max_stale,
                retry: api::watch::Retry {
                    enabled: cfg.consul_retry,
                    attempts: cfg.consul_retry_attempts,
                    backoff: cfg.retry,
                    max_backoff: cfg.consul_retry_max_backoff,
                },
                poll: Duration::from_millis(500),
            },
            cfg,
            args: None,
            env,
            templates,
            brain: Arc::new(Brain::default()),
            watches: HashMap::new(),
            failing: HashSet::new(),
            fatal: None,
            updates_tx,
            updates_rx,
            sources_tx,
            sources_rx,
            source_watch: None,
            pending_sources: HashMap::new(),
            child: None,
            dry_out: Box::new(std::io::stdout()),
        })
    }

    /// Remembers the command line so the reload signal can reread configuration files.
    pub fn with_args(mut self, args: Vec<String>) -> Runner {
        self.args = Some(args);
        self
    }

    /// Sends `-dry` output somewhere other than stdout.
    pub fn with_dry_output(mut self, out: Box<dyn std::io::Write + Send>) -> Runner {
        self.dry_out = out;
        self
    }

    fn watch_sources(&mut self) {
        let sources: Vec<PathBuf> = self.templates.iter().filter_map(|t| t.cfg.source.clone()).collect();
        self.source_watch = None;
        if sources.is_empty() || self.cfg.once {
            return;
        }
        match files::watch(&sources, self.sources_tx.clone()) {
            Ok(w) => self.source_watch = Some(w),
            // Rendering still works without it; edits then need the reload signal.
            Err(e) => tracing::warn!(error = %e, "cannot watch template files; send the reload signal after editing"),
        }
    }

    /// Runs until a stop signal, `shutdown`, the end of `-once`, or the `-exec` child's exit;
    /// returns the process exit code.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<i32, Error> {
        use tokio::signal::unix::{signal, SignalKind};
        let sig = |k: i32| signal(SignalKind::from_raw(k)).map_err(Error::Signal);
        let mut reload_sig = sig(self.cfg.reload_signal)?;
        let mut kill_sig = sig(self.cfg.kill_signal)?;
        let mut term_sig = sig(libc::SIGTERM)?;
        let mut int_sig = sig(libc::SIGINT)?;
        // Signals meant for the -exec child (consul-template forwards what it does not use).
        let mut usr1_sig = sig(libc::SIGUSR1)?;
        let mut usr2_sig = sig(libc::SIGUSR2)?;
        tokio::pin!(shutdown);
        self.watch_sources();
        if let Some(code) = self.pass().await? {
            return Ok(code);
        }
        loop {
            let next_fire = self.templates.iter().filter_map(|t| t.quiescence.map(|q| q.0)).min();
            let next_source = self.pending_sources.values().min().copied();
            tokio::select! {
                Some(u) = self.updates_rx.recv() => {
                    self.apply(u);
                    // Take everything already queued, so a burst costs one pass.
                    while let Ok(u) = self.updates_rx.try_recv() {
                        self.apply(u);
                    }
                    // While a template still lacks data, the answers it waits for were asked
                    // together and arrive within milliseconds of each other: one pass for all
                    // of them instead of one each (1,000 services would be 1,000 renders).
                    if self.templates.iter().any(|t| t.waiting) {
                        let until = Instant::now() + COALESCE_MAX;
                        loop {
                            let at = (Instant::now() + COALESCE_GAP).min(until);
                            match tokio::time::timeout_at(at, self.updates_rx.recv()).await {
                                Ok(Some(u)) => self.apply(u),
                                _ => break,
                            }
                        }
                    }
                }
                Some(p) = self.sources_rx.recv() => {
                    // Editors that save in place truncate, then write: a read in between sees an
                    // empty (valid!) template. Reread only once the file has been quiet a moment.
                    let at = Instant::now() + SOURCE_SETTLE;
                    self.pending_sources.insert(p, at);
                    while let Ok(p) = self.sources_rx.try_recv() {
                        self.pending_sources.insert(p, at);
                    }
                }
                _ = sleep_until_opt(next_source) => {
                    let now = Instant::now();
                    let ready: Vec<PathBuf> =
                        self.pending_sources.iter().filter(|(_, at)| **at <= now).map(|(p, _)| p.clone()).collect();
                    for p in ready {
                        self.pending_sources.remove(&p);
                        self.reload_source(&p);
                    }
                }
                _ = sleep_until_opt(next_fire) => {
                    let now = Instant::now();
                    for t in &mut self.templates {
                        if t.quiescence.is_some_and(|q| q.0 <= now) {
                            t.quiescence = None;
                            t.due = true;
                            t.dirty = true;
                        }
                    }
                }
                _ = reload_sig.recv() => self.reload_config(),
                _ = kill_sig.recv() => return Ok(self.stop().await),
                _ = term_sig.recv() => return Ok(self.stop().await),
                _ = int_sig.recv() => return Ok(self.stop().await),
                _ = usr1_sig.recv() => self.forward(libc::SIGUSR1),
                _ = usr2_sig.recv() => self.forward(libc::SIGUSR2),
                code = child_exit(&mut self.child) => {
                    tracing::info!(code, "child exited");
                    self.child = None;
                    return Ok(code);
                }
                _ = &mut shutdown => return Ok(self.stop().await),
            }
            if let Some(e) = self.fatal.take() {
                self.stop().await;
                return Err(e);
            }
            if let Some(code) = self.pass().await? {
                return Ok(code);
            }
        }
    }

    fn forward(&self, sig: i32) {
        if sig == self.cfg.reload_signal || sig == self.cfg.kill_signal {
            return; // ours, handled by its own branch
        }
        if let Some(c) = &self.child {
            c.signal(sig);
        }
    }

    async fn stop(&mut self) -> i32 {
        for (_, h) in self.watches.drain() {
            h.abort();
        }
        if let Some(c) = self.child.take() {
            c.stop().await;
        }
        0
    }

    fn apply(&mut self, u: Update) {
        match u {
            Update::Data { dep, value } => {
                if !self.watches.contains_key(&dep) {
                    return; // a late answer for a watch that was stopped
                }
                if self.failing.remove(&dep) {
                    tracing::info!(dep = %dep, "query answers again");
                }
                tracing::debug!(dep = %dep, "data changed");
                Arc::make_mut(&mut self.brain).remember(dep.clone(), value);
                for t in &mut self.templates {
                    if t.used.contains(&dep) {
                        t.dirty = true;
                    }
                }
            }
            Update::Fatal { dep, error } => {
                tracing::error!(dep = %dep, %error, "query failed for good; stopping");
                self.fatal.get_or_insert(Error::Query { dep: dep.to_string(), error });
            }
            Update::Error { dep, error } => {
                if self.failing.insert(dep.clone()) {
                    tracing::warn!(dep = %dep, %error, "query failed; keeping the last data and retrying");
                } else {
                    tracing::debug!(dep = %dep, %error, "query still failing");
                }
            }
        }
    }

    fn reload_source(&mut self, path: &PathBuf) {
        for t in &mut self.templates {
            if t.cfg.source.as_ref() != Some(path) {
                continue;
            }
            match compile(&t.cfg) {
                Ok(c) => {
                    tracing::info!(template = %path.display(), "template changed; rendering");
                    t.compiled = c;
                    t.dirty = true;
                    t.due = true;
                }
                Err(Error::Template(engine::Error::Parse { name, line, col, message })) => tracing::error!(
                    template = %name, line, column = col, error = %message,
                    "template no longer parses; keeping the last good output"
                ),
                Err(e) => {
                    tracing::error!(template = %path.display(), error = %e, "template not reloaded; keeping the last good output")
                }
            }
        }
    }

    fn reload_config(&mut self) {
        let cfg = match &self.args {
            Some(args) => match config::load(args) {
                Ok((_, cfg)) => cfg,
                Err(e) => {
                    tracing::error!(error = %e, "configuration not reloaded");
                    return;
                }
            },
            None => self.cfg.clone(),
        };
        match compile_all(&cfg.templates) {
            Ok(templates) => {
                tracing::info!(templates = templates.len(), "configuration reloaded");
                self.templates = templates;
                self.cfg.templates = cfg.templates;
                self.cfg.wait = cfg.wait;
                self.watch_sources();
            }
            Err(e) => tracing::error!(error = %e, "configuration not reloaded; keeping the running templates"),
        }
    }

    /// Renders what changed, writes, runs commands, keeps the watches in line with what the
    /// templates use. `Some(code)` ends the process (`-once` finished).
    async fn pass(&mut self) -> Result<Option<i32>, Error> {
        let now = Instant::now();
        let brain = self.brain.clone();
        let mut commands: Vec<(String, Duration)> = Vec::new();
        let mut changed = false;
        for t in &mut self.templates {
            if !t.dirty {
                continue;
            }
            t.dirty = false;
            let r = match render_off_runtime(&t.compiled, brain.clone()) {
                Ok(r) => r,
                Err(e) => {
                    if self.cfg.once {
                        return Err(e.into());
                    }
                    tracing::error!(error = %e, "render failed; keeping the last good output");
                    continue;
                }
            };
            t.used = r.used;
            t.waiting = !r.missing.is_empty();
            if t.waiting {
                let missing: Vec<String> = r.missing.iter().map(ToString::to_string).collect();
                tracing::debug!(template = %t.cfg.name(), ?missing, "waiting for data");
                continue;
            }
            let wait = t.cfg.wait.or(self.cfg.wait);
            // Quiescence applies only after the first render, and never with -once.
            if let Some(w) = wait.filter(|_| !self.cfg.once && t.rendered && !t.due) {
                let deadline = t.quiescence.map(|q| q.1).unwrap_or(now + w.max);
                t.quiescence = Some(((now + w.min).min(deadline), deadline));
                continue;
            }
            t.due = false;
            t.quiescence = None;
            let wrote = if self.cfg.dry {
                if t.dry_last.as_deref() == Some(r.output.as_str()) {
                    false
                } else {
                    let dest = t.cfg.destination.as_ref().map(|d| d.display().to_string()).unwrap_or_default();
                    let _ = write!(self.dry_out, "> {dest}\n{}", r.output);
                    let _ = self.dry_out.flush();
                    t.dry_last = Some(r.output);
                    true
                }
            } else {
                let Some(dest) = &t.cfg.destination else { continue };
                let opts = write::Options {
                    perms: t.cfg.perms,
                    backup: t.cfg.backup,
                    create_dest_dirs: t.cfg.create_dest_dirs,
                };
                match write::atomic_write(dest, r.output.as_bytes(), opts) {
                    Ok(w) => {
                        if w {
                            tracing::info!(template = %t.cfg.name(), destination = %dest.display(), "rendered");
                        }
                        w
                    }
                    Err(e) => {
                        // -once has nothing to wait for: the file will not be written.
                        if self.cfg.once {
                            return Err(Error::Write { template: t.cfg.name(), source: e });
                        }
                        tracing::error!(
                            template = %t.cfg.name(), destination = %dest.display(), error = %e,
                            "cannot write the rendered file; keeping the old one, trying again on the next change"
                        );
                        continue;
                    }
                }
            };
            t.rendered = true;
            changed |= wrote;
            if let Some(c) = &t.cfg.command {
                if wrote || t.command_failed {
                    commands.push((c.clone(), t.cfg.command_timeout));
                }
            }
        }
        self.sync_watches();
        if !self.cfg.dry {
            for (c, timeout) in command::dedupe(commands.iter().map(|(c, t)| (c.as_str(), *t))) {
                let result = command::run(&c, timeout, &self.env).await;
                if let Err(e) = &result {
                    tracing::error!(error = %e, "command failed; will retry on the next change");
                } else {
                    tracing::info!(command = %c, "command ran");
                }
                for t in &mut self.templates {
                    if t.cfg.command.as_deref() == Some(c.as_str()) {
                        t.command_failed = result.is_err();
                    }
                }
            }
        }
        let all_rendered = self.templates.iter().all(|t| t.rendered);
        if let Some(exec) = self.cfg.exec.clone().filter(|e| !e.command.is_empty()) {
            match self.child.take() {
                None if all_rendered => self.child = Some(Child::spawn(&exec, &self.env)?),
                Some(c) if changed => self.child = Some(c.reload(&self.env).await?),
                other => self.child = other,
            }
            // With -exec, -once still supervises the child until it exits.
            return Ok(None);
        }
        if self.cfg.once && all_rendered {
            return Ok(Some(0));
        }
        Ok(None)
    }

    /// Starts a watch for every dependency some template uses and stops the rest.
    fn sync_watches(&mut self) {
        let used: HashSet<&Dep> = self.templates.iter().flat_map(|t| t.used.iter()).collect();
        let stale: Vec<Dep> = self.watches.keys().filter(|d| !used.contains(d)).cloned().collect();
        for d in stale {
            if let Some(h) = self.watches.remove(&d) {
                h.abort();
            }
            self.failing.remove(&d);
            Arc::make_mut(&mut self.brain).forget(&d);
            tracing::debug!(dep = %d, "no longer used; watch stopped");
        }
        let new: Vec<Dep> = used.into_iter().filter(|d| !self.watches.contains_key(*d)).cloned().collect();
        for d in new {
            tracing::debug!(dep = %d, "watching");
            let h = watch::spawn(d.clone(), self.watch_opts.clone(), self.updates_tx.clone());
            self.watches.insert(d, h);
        }
    }
}

use std::io::Write as _;

/// A large template renders for tens of milliseconds; let the runtime move the watch tasks to
/// another worker meanwhile (not possible on a current-thread runtime, where it just runs).
fn render_off_runtime(c: &Compiled, brain: Arc<Brain>) -> Result<engine::Rendered, engine::Error> {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| c.render(brain)),
        _ => c.render(brain),
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn child_exit(child: &mut Option<Child>) -> i32 {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Wait;
    use crate::fake::{entry, read, wait_for, FakeAgent};

    const LIMIT: Duration = Duration::from_secs(15);
    const SEED: &str =
        "upstream test-cluster { ip_hash;{{range service \"test\"}} server {{.Address}}:{{.Port}};{{end}} }";

    fn config(agent: &FakeAgent, templates: Vec<TemplateConfig>) -> Config {
        let mut cfg = Config { consul_addrs: vec![agent.addr.clone()], templates, ..Default::default() };
        cfg.block_query_wait = Duration::from_secs(5);
        cfg
    }

    fn tmpl(dir: &std::path::Path, name: &str, src: &str, command: Option<String>) -> TemplateConfig {
        let source = dir.join(format!("{name}.ctmpl"));
        std::fs::write(&source, src).unwrap();
        TemplateConfig {
            source: Some(source),
            destination: Some(dir.join(format!("{name}.conf"))),
            command,
            ..Default::default()
        }
    }

    fn start(cfg: Config) -> (tokio::sync::oneshot::Sender<()>, JoinHandle<Result<i32, Error>>) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let runner = Runner::new(cfg).unwrap();
        let h = tokio::spawn(runner.run(async move {
            let _ = rx.await;
        }));
        (tx, h)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seed_nginx_template_follows_health() {
        let agent = FakeAgent::start("127.0.0.51").await;
        agent.set_service(
            "test",
            vec![
                entry("n1", "10.0.0.1", "test1", "test", 8080, "passing"),
                entry("n2", "10.0.0.2", "test2", "test", 8080, "passing"),
            ],
        );
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("reloads");
        let t = tmpl(dir.path(), "test", SEED, Some(format!("echo reload >> {}", log.display())));
        let out = t.destination.clone().unwrap();
        let (stop, h) = start(config(&agent, vec![t]));
        let both = "upstream test-cluster { ip_hash; server 10.0.0.1:8080; server 10.0.0.2:8080; }";
        wait_for(LIMIT, "first render", || read(&out) == both).await;
        wait_for(LIMIT, "first reload", || read(&log) == "reload\n").await;

        agent.set_service(
            "test",
            vec![
                entry("n1", "10.0.0.1", "test1", "test", 8080, "passing"),
                entry("n2", "10.0.0.2", "test2", "test", 8080, "critical"),
            ],
        );
        let one = "upstream test-cluster { ip_hash; server 10.0.0.1:8080; }";
        wait_for(LIMIT, "critical instance dropped", || read(&out) == one).await;
        wait_for(LIMIT, "second reload", || read(&log) == "reload\nreload\n").await;

        // A change that does not change the bytes writes nothing and runs nothing.
        agent.put_kv("unrelated", "x");
        agent.set_service(
            "test",
            vec![
                entry("n1", "10.0.0.1", "test1", "test", 8080, "passing"),
                entry("n2", "10.0.0.2", "test2", "test", 8080, "warning"),
            ],
        );
        agent.set_service("test", vec![entry("n1", "10.0.0.1", "test1", "test", 8080, "passing")]);
        agent.set_service("test", vec![entry("n3", "10.0.0.3", "test3", "test", 9090, "passing")]);
        wait_for(LIMIT, "new instance", || read(&out).contains("10.0.0.3:9090")).await;
        wait_for(LIMIT, "third reload", || read(&log) == "reload\nreload\nreload\n").await;
        stop.send(()).unwrap();
        assert_eq!(h.await.unwrap().unwrap(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn identical_dependencies_share_one_watch_and_commands_dedupe() {
        let agent = FakeAgent::start("127.0.0.52").await;
        agent.set_service("web", vec![entry("n1", "10.0.0.1", "web1", "web", 80, "passing")]);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let cmd = format!("echo ran >> {}", log.display());
        let a = tmpl(dir.path(), "a", "{{range service \"web\"}}{{.Address}}{{end}}", Some(cmd.clone()));
        let b = tmpl(dir.path(), "b", "{{range service \"web|passing\"}}{{.Port}}{{end}}", Some(cmd));
        let (oa, ob) = (a.destination.clone().unwrap(), b.destination.clone().unwrap());
        let mut runner = Runner::new(config(&agent, vec![a, b])).unwrap();
        assert!(runner.pass().await.unwrap().is_none());
        assert_eq!(runner.watches.len(), 1, "one watch for web and web|passing");
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let h = tokio::spawn(runner.run(async move {
            let _ = rx.await;
        }));
        wait_for(LIMIT, "both rendered", || read(&oa) == "10.0.0.1" && read(&ob) == "80").await;
        wait_for(LIMIT, "one command run", || read(&log) == "ran\n").await;
        agent.set_service("web", vec![entry("n2", "10.0.0.2", "web2", "web", 81, "passing")]);
        wait_for(LIMIT, "both re-rendered", || read(&oa) == "10.0.0.2" && read(&ob) == "81").await;
        wait_for(LIMIT, "command once more", || read(&log) == "ran\nran\n").await;
        stop.send(()).unwrap();
        h.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_command_is_retried_on_the_next_change() {
        let agent = FakeAgent::start("127.0.0.53").await;
        agent.put_kv("app/port", "80");
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("ok-to-reload");
        let log = dir.path().join("log");
        let cmd = format!("test -f {} && echo reloaded >> {}", flag.display(), log.display());
        let t = tmpl(
            dir.path(),
            "app",
            "port={{key \"app/port\"}} other={{keyOrDefault \"app/other\" \"none\"}}",
            Some(cmd),
        );
        let out = t.destination.clone().unwrap();
        let (stop, h) = start(config(&agent, vec![t]));
        wait_for(LIMIT, "render", || read(&out) == "port=80 other=none").await;
        // The command failed (no flag yet) and the runner is still alive.
        std::fs::write(&flag, "").unwrap();
        // A change that leaves this template's bytes alone still retries the failed command.
        agent.put_kv("app/port", "80");
        agent.put_kv("app/other", "");
        wait_for(LIMIT, "retried command", || read(&log) == "reloaded\n").await;
        assert!(!h.is_finished());
        stop.send(()).unwrap();
        h.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn template_edits_rerender_and_parse_errors_keep_the_last_output() {
        let agent = FakeAgent::start("127.0.0.54").await;
        agent.set_service("web", vec![entry("n1", "10.0.0.1", "web1", "web", 80, "passing")]);
        let dir = tempfile::tempdir().unwrap();
        let t = tmpl(dir.path(), "web", "A {{range service \"web\"}}{{.Address}}{{end}}", None);
        let (src, out) = (t.source.clone().unwrap(), t.destination.clone().unwrap());
        let (stop, h) = start(config(&agent, vec![t]));
        wait_for(LIMIT, "render", || read(&out) == "A 10.0.0.1").await;
        std::fs::write(&src, "B {{range service \"web\"}}{{.Address}}:{{.Port}}{{end}}").unwrap();
        wait_for(LIMIT, "re-render after edit", || read(&out) == "B 10.0.0.1:80").await;
        std::fs::write(&src, "C {{range service \"web\"}}{{.Address}").unwrap();
        // Prove the broken version was seen: a following good edit renders, and the broken one
        // never reached the file.
        agent.set_service("web", vec![entry("n2", "10.0.0.2", "web2", "web", 80, "passing")]);
        wait_for(LIMIT, "data change with the old template", || read(&out) == "B 10.0.0.2:80").await;
        std::fs::write(&src, "D {{range service \"web\"}}{{.Address}}{{end}}").unwrap();
        wait_for(LIMIT, "good edit after a bad one", || read(&out) == "D 10.0.0.2").await;
        stop.send(()).unwrap();
        h.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_agent_keeps_files_and_catches_up() {
        let agent = FakeAgent::start("127.0.0.55").await;
        agent.set_service("web", vec![entry("n1", "10.0.0.1", "web1", "web", 80, "passing")]);
        let dir = tempfile::tempdir().unwrap();
        let t = tmpl(dir.path(), "web", "{{range service \"web\"}}{{.Address}} {{end}}", None);
        let out = t.destination.clone().unwrap();
        let (stop, h) = start(config(&agent, vec![t]));
        wait_for(LIMIT, "render", || read(&out) == "10.0.0.1 ").await;
        agent.set_down(true);
        let before = agent.requests();
        wait_for(LIMIT, "failing requests", || agent.requests() >= before + 2).await;
        assert_eq!(read(&out), "10.0.0.1 ", "last good file kept");
        agent.set_service("web", vec![entry("n2", "10.0.0.2", "web2", "web", 80, "passing")]);
        agent.set_down(false);
        wait_for(LIMIT, "catch up", || read(&out) == "10.0.0.2 ").await;
        stop.send(()).unwrap();
        h.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_holds_changes_until_quiescence() {
        let agent = FakeAgent::start("127.0.0.56").await;
        agent.put_kv("v", "1");
        let dir = tempfile::tempdir().unwrap();
        let t = tmpl(dir.path(), "v", "{{key \"v\"}}", None);
        let out = t.destination.clone().unwrap();
        let mut cfg = config(&agent, vec![t]);
        cfg.wait = Some(Wait { min: Duration::from_millis(400), max: Duration::from_secs(2) });
        let (stop, h) = start(cfg);
        // The first render is not delayed.
        wait_for(Duration::from_millis(1500), "first render", || read(&out) == "1").await;
        let changed_at = std::time::Instant::now();
        agent.put_kv("v", "2");
        wait_for(LIMIT, "quiesced render", || read(&out) == "2").await;
        assert!(changed_at.elapsed() >= Duration::from_millis(350), "written after {:?}", changed_at.elapsed());
        stop.send(()).unwrap();
        h.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wait_max_bounds_how_long_constant_change_can_hold_a_write() {
        let agent = FakeAgent::start("127.0.0.61").await;
        agent.put_kv("v", "0");
        let dir = tempfile::tempdir().unwrap();
        let t = tmpl(dir.path(), "v", "{{key \"v\"}}", None);
        let out = t.destination.clone().unwrap();
        let mut cfg = config(&agent, vec![t]);
        cfg.wait = Some(Wait { min: Duration::from_millis(300), max: Duration::from_millis(600) });
        let (stop, h) = start(cfg);
        wait_for(LIMIT, "first render", || read(&out) == "0").await;
        // A change every 100 ms never leaves 300 ms of quiet: only `max` lets a write through.
        let churn = tokio::spawn({
            let agent = agent.clone();
            async move {
                for i in 1..=20 {
                    agent.put_kv("v", &i.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        wait_for(LIMIT, "a write during the churn", || read(&out) != "0" || churn.is_finished()).await;
        assert!(!churn.is_finished(), "the write waited for the churn to stop: max was not honoured");
        churn.await.unwrap();
        wait_for(LIMIT, "the last value after quiet", || read(&out) == "20").await;
        stop.send(()).unwrap();
        h.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn once_and_dry_print_and_exit() {
        #[derive(Clone, Default)]
        struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let agent = FakeAgent::start("127.0.0.57").await;
        agent.set_service("web", vec![entry("n1", "10.0.0.1", "web1", "web", 80, "passing")]);
        agent.set_service("db", vec![entry("n1", "10.0.0.1", "db1", "db", 5432, "passing")]);
        let dir = tempfile::tempdir().unwrap();
        // Multi-phase: `services` first, then one `service` per name.
        let t = tmpl(
            dir.path(),
            "all",
            "{{range services}}{{.Name}}:{{range service .Name}}{{.Port}}{{end}};{{end}}",
            None,
        );
        let dest = t.destination.clone().unwrap();
        let mut cfg = config(&agent, vec![t]);
        cfg.once = true;
        cfg.dry = true;
        let buf = Buf::default();
        let runner = Runner::new(cfg).unwrap().with_dry_output(Box::new(buf.clone()));
        let code = tokio::time::timeout(LIMIT, runner.run(std::future::pending())).await.unwrap().unwrap();
        assert_eq!(code, 0);
        let printed = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(printed, format!("> {}\ndb:5432;web:80;", dest.display()));
        assert!(!dest.exists(), "-dry writes nothing");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn once_fails_when_the_file_cannot_be_written() {
        let agent = FakeAgent::start("127.0.0.62").await;
        agent.put_kv("v", "1");
        let dir = tempfile::tempdir().unwrap();
        let in_the_way = dir.path().join("a-file");
        std::fs::write(&in_the_way, "").unwrap();
        let mut t = tmpl(dir.path(), "v", "{{key \"v\"}}", None);
        t.destination = Some(in_the_way.join("v.conf"));
        let mut cfg = config(&agent, vec![t]);
        cfg.once = true;
        let run = Runner::new(cfg).unwrap().run(std::future::pending());
        let e = tokio::time::timeout(LIMIT, run).await.expect("-once gave up waiting").unwrap_err();
        assert!(matches!(e, Error::Write { .. }), "{e:?}");
        let want =
            format!("writing {}/v.conf: creating a temporary file in {}: ", in_the_way.display(), in_the_way.display());
        assert!(e.to_string().contains(&want), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_once_a_failed_write_is_retried_on_the_next_change() {
        let agent = FakeAgent::start("127.0.0.63").await;
        agent.put_kv("v", "1");
        let dir = tempfile::tempdir().unwrap();
        let in_the_way = dir.path().join("conf");
        std::fs::write(&in_the_way, "").unwrap();
        let mut t = tmpl(dir.path(), "v", "{{key \"v\"}}", None);
        let out = in_the_way.join("v.conf");
        t.destination = Some(out.clone());
        let mut runner = Runner::new(config(&agent, vec![t])).unwrap();
        assert!(runner.pass().await.unwrap().is_none(), "first pass: no data, a watch");
        let u = tokio::time::timeout(LIMIT, runner.updates_rx.recv()).await.unwrap().unwrap();
        runner.apply(u);
        assert!(runner.pass().await.unwrap().is_none(), "the failed write is logged, not returned");
        assert!(!runner.templates[0].rendered && !out.exists());
        std::fs::remove_file(&in_the_way).unwrap();
        std::fs::create_dir(&in_the_way).unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let h = tokio::spawn(runner.run(async move {
            let _ = rx.await;
        }));
        agent.put_kv("v", "2");
        wait_for(LIMIT, "the write after the fix", || read(&out) == "2").await;
        stop.send(()).unwrap();
        assert_eq!(h.await.unwrap().unwrap(), 0);
    }

    fn exec_cfg(command: String, reload_signal: Option<i32>) -> crate::config::ExecConfig {
        crate::config::ExecConfig {
            command,
            reload_signal,
            kill_signal: libc::SIGTERM,
            kill_timeout: Duration::from_secs(5),
            splay: Duration::ZERO,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exec_child_starts_after_render_and_restarts_on_change() {
        let agent = FakeAgent::start("127.0.0.59").await;
        agent.put_kv("v", "1");
        let dir = tempfile::tempdir().unwrap();
        let t = tmpl(dir.path(), "v", "{{key \"v\"}}", None);
        let out = t.destination.clone().unwrap();
        let log = dir.path().join("log");
        let mut cfg = config(&agent, vec![t]);
        let child = format!("echo start $(cat {}) >> {}; exec sleep 60", out.display(), log.display());
        cfg.exec = Some(exec_cfg(child, None));
        let (stop, h) = start(cfg);
        wait_for(LIMIT, "child started after the render", || read(&log) == "start 1\n").await;
        agent.put_kv("v", "2");
        wait_for(LIMIT, "child restarted", || read(&log) == "start 1\nstart 2\n").await;
        stop.send(()).unwrap();
        assert_eq!(h.await.unwrap().unwrap(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exec_child_gets_its_reload_signal_and_its_exit_ends_the_runner() {
        let agent = FakeAgent::start("127.0.0.60").await;
        agent.put_kv("v", "1");
        let dir = tempfile::tempdir().unwrap();
        let t = tmpl(dir.path(), "v", "{{key \"v\"}}", None);
        let log = dir.path().join("log");
        let mut cfg = config(&agent, vec![t]);
        let child = format!(
            "trap 'echo hup >> {log}; exit 7' HUP; echo up >> {log}; while :; do sleep 0.05; done",
            log = log.display()
        );
        cfg.exec = Some(exec_cfg(child, Some(libc::SIGHUP)));
        let (_stop, h) = start(cfg);
        wait_for(LIMIT, "child up", || read(&log) == "up\n").await;
        agent.put_kv("v", "2");
        wait_for(LIMIT, "reload signal", || read(&log) == "up\nhup\n").await;
        // The child exits 7 on the signal: template exits with its code, as consul-template does.
        let code = tokio::time::timeout(LIMIT, h).await.unwrap().unwrap().unwrap();
        assert_eq!(code, 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handlebars_templates_render_from_the_same_data() {
        let agent = FakeAgent::start("127.0.0.58").await;
        agent.set_service("test", vec![entry("n1", "10.0.0.1", "test1", "test", 8080, "passing")]);
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("up.hbs");
        std::fs::write(
            &src,
            "upstream test-cluster { ip_hash;{{#each (service \"test\")}} server {{Address}}:{{Port}};{{/each}} }",
        )
        .unwrap();
        let out = dir.path().join("up.conf");
        let t = TemplateConfig { source: Some(src), destination: Some(out.clone()), ..Default::default() };
        let mut cfg = config(&agent, vec![t]);
        cfg.once = true;
        let code = Runner::new(cfg).unwrap().run(std::future::pending()).await.unwrap();
        assert_eq!(code, 0);
        assert_eq!(read(&out), "upstream test-cluster { ip_hash; server 10.0.0.1:8080; }");
    }
}
