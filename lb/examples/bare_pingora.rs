//! A bare pingora round-robin proxy with no routing, metrics or logging: the floor against
//! which lb's own per-request cost is measured (`bench/run` prints lb's; run this by hand).
//! Usage: bare_pingora LISTEN BACKEND [BACKEND ...]

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Bare {
    backends: Vec<SocketAddr>,
    next: AtomicUsize,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.backends.len();
        Ok(Box::new(HttpPeer::new(self.backends[i], false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(listen) = args.get(1) else {
        eprintln!("usage: bare_pingora LISTEN BACKEND [BACKEND ...]");
        std::process::exit(2);
    };
    let backends: Vec<SocketAddr> = args[2..].iter().filter_map(|a| a.parse().ok()).collect();
    let conf = ServerConf { threads: 1, work_stealing: false, ..Default::default() };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    for i in 0..2 {
        let bare = Bare { backends: backends.clone(), next: AtomicUsize::new(i) };
        let mut svc = pingora::proxy::http_proxy_service_with_name(&server.configuration, bare, &format!("w{i}"));
        svc.threads = Some(1);
        svc.add_tcp(listen);
        server.add_service(svc);
    }
    server.run_forever()
}
