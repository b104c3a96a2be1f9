//! The `lb` binary: parse Consul-style flags, set up logging, and run the pingora server with
//! the proxy service and the discovery background service.

use anyhow::Context;
use lb::config::{Args, Config};
use lb::discovery::Discovery;
use lb::fast::App as FastPath;
use lb::listener::{SharedListener, Worker};
use lb::proxy::Proxy;
use lb::Shared;
use pingora::apps::HttpServerOptions;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ExecutionPhase, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

// The proxy allocates small buffers per request on several threads; mimalloc's per-thread
// heaps avoid glibc malloc's arena locking and consolidation on that path.
#[global_allocator]
static GLOBAL: Alloc = Alloc;

/// mimalloc, called the way `std::alloc::System` calls malloc. The `mimalloc` crate passes every
/// request to `mi_malloc_aligned`, whose fast path only serves blocks up to 1 KiB; pingora makes
/// about 85 allocations per proxied request, 20 of them larger (buffers, boxed futures), and each
/// of those took mimalloc's generic aligned path (callgrind: ~180 instructions instead of ~60).
/// `mi_malloc` already guarantees 16-byte alignment, so only larger alignments need the aligned
/// entry points.
struct Alloc;

/// `MI_MAX_ALIGN_SIZE`: what `mi_malloc` guarantees for any block of at least that size.
const MI_MAX_ALIGN: usize = 16;

fn plain(layout: std::alloc::Layout) -> bool {
    layout.align() <= MI_MAX_ALIGN && layout.align() <= layout.size()
}

// SAFETY: every pointer comes from mimalloc and goes back to it; `plain` only admits layouts
// whose alignment `mi_malloc`/`mi_realloc` already guarantee (blocks are multiples of 8 and, from
// 16 bytes on, 16-aligned).
unsafe impl std::alloc::GlobalAlloc for Alloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if plain(layout) {
            libmimalloc_sys::mi_malloc(layout.size()) as *mut u8
        } else {
            libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if plain(layout) {
            libmimalloc_sys::mi_zalloc(layout.size()) as *mut u8
        } else {
            libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr as *mut std::ffi::c_void)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let new = std::alloc::Layout::from_size_align_unchecked(new_size, layout.align());
        if plain(layout) && plain(new) {
            libmimalloc_sys::mi_realloc(ptr as *mut std::ffi::c_void, new_size) as *mut u8
        } else {
            libmimalloc_sys::mi_realloc_aligned(ptr as *mut std::ffi::c_void, new_size, layout.align()) as *mut u8
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = match Args::parse_from_consul_style(std::env::args()) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let config = Config::from_args(args)?;
    let filter = match &config.log_level {
        Some(level) => EnvFilter::try_new(level).with_context(|| format!("invalid -log-level {level:?}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_target(true).init();

    let listen = config.listen.clone();
    let server_conf = ServerConf {
        threads: 1,
        // Each worker is its own one-thread service (below); nothing to steal between.
        work_stealing: false,
        daemon: config.daemon,
        pid_file: config.pid_file.clone(),
        upgrade_sock: config.upgrade_sock.clone(),
        // A request whose instances keep failing gets one try per instance; more is pointless.
        max_retries: 16,
        grace_period_seconds: Some(5),
        graceful_shutdown_timeout_seconds: Some(10),
        ..Default::default()
    };
    let opt = Opt { upgrade: config.upgrade, daemon: config.daemon, ..Default::default() };
    let (shared, seeds) = Shared::new(config)?;

    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();

    watch_for_drain(&server, shared.clone());
    let threads = shared.config.load().threads;
    let discovery = background_service("discovery", Discovery::new(shared.clone(), seeds));
    let discovery = server.add_service(discovery);
    // One single-threaded proxy service per thread, each accepting on a socket of its own on the
    // listening address (SO_REUSEPORT, so the kernel spreads connections over the workers) and
    // each with its own upstream keep-alive connections: nginx's worker model. A pool shared by
    // several threads costs a cross-thread wakeup whenever one thread picks up a connection
    // another thread released. Each worker owns a dup of its socket's fd (`listener`).
    // Held until the process exits, so the fds pingora hands over in an upgrade stay open.
    let listener = SharedListener::new(&listen, threads);
    for i in 0..threads {
        let mut proxy = pingora::proxy::http_proxy(&server.configuration, Proxy::new(shared.clone()));
        let mut opts = HttpServerOptions::default();
        // Plaintext HTTP/2 (prior knowledge) next to HTTP/1.1 on the same port.
        opts.h2c = true;
        proxy.server_options = Some(opts);
        // Plain HTTP/1.1 requests take lb's fast path; the rest go to the pingora proxy.
        let mut service = Service::new(format!("lb-{i}"), FastPath::new(proxy, shared.clone()));
        service.threads = Some(1);
        service.add_tcp(&listen);
        // Serve only once discovery has a complete routing table (or gave up waiting for one).
        server.add_service(Worker::new(service, listener.clone(), i)).add_dependency(&discovery);
    }
    tracing::info!(%listen, "lb listening");
    server.run_forever()
}

/// Marks the proxy as draining once an upgrade hands the sockets over or a graceful stop begins.
fn watch_for_drain(server: &Server, shared: Arc<Shared>) {
    let mut phases = server.watch_execution_phase();
    std::thread::spawn(move || loop {
        match phases.blocking_recv() {
            Ok(
                ExecutionPhase::GracefulUpgradeTransferringFds
                | ExecutionPhase::GracefulTerminate
                | ExecutionPhase::ShutdownStarted,
            ) => {
                tracing::info!("draining: closing client connections after their current response");
                shared.draining.store(true, Ordering::Relaxed);
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    });
}
