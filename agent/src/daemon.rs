//! `agent agent ...`: parses flags and config, boots the agent, serves HTTP (and the server port
//! on servers), and handles signals (SIGHUP reloads, SIGINT/SIGTERM stop).

use crate::agent::Agent;
use crate::config::{normalize_args, AgentFlags, Config};
use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

pub async fn run(args: Vec<String>) -> anyhow::Result<i32> {
    let mut argv = vec!["agent".to_string()];
    argv.extend(args);
    let flags = match AgentFlags::try_parse_from(normalize_args(argv)) {
        Ok(f) => f,
        Err(e) => {
            let _ = e.print();
            return Ok(if e.use_stderr() { 1 } else { 0 });
        }
    };
    crate::telemetry::init(flags.log_level.as_deref().unwrap_or(if flags.dev { "debug" } else { "info" }));
    raise_fd_limit();
    if flags.protocol.is_some() {
        tracing::warn!("the -protocol flag is deprecated and has no effect");
    }
    let config = Config::from_flags(flags).context("invalid configuration")?;
    if let Some(pid) = &config.pid_file {
        std::fs::write(pid, std::process::id().to_string())
            .with_context(|| format!("writing pid file {}", pid.display()))?;
    }
    let node = config.node_name.clone();
    let span = tracing::info_span!("agent", node = %node);
    let _enter = span.enter();
    let agent = Agent::start(config.clone()).await.context("starting the agent")?;
    let mut http_listeners = Vec::new();
    for addr in config.http_addrs() {
        let l = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the HTTP API on {addr}"))?;
        http_listeners.push((l, None));
    }
    for addr in config.https_addrs() {
        let tls = agent.tls.clone().filter(|t| t.https_acceptor().is_some()).with_context(|| {
            format!("ports.https is {}, but there is no certificate: set cert_file and key_file", config.ports.https)
        })?;
        let l =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the HTTPS API on {addr}"))?;
        http_listeners.push((l, Some(tls)));
    }
    let resolver = crate::dns::Resolver::new(&config, agent.store.clone())?;
    if agent.server.is_none() {
        // A client agent has no catalog: a server answers its DNS queries.
        let weak = std::sync::Arc::downgrade(&agent);
        resolver.set_remote(Box::new(move |query, udp| {
            let weak = weak.clone();
            Box::pin(async move {
                let agent = weak.upgrade()?;
                let token = agent.acl.dns_token();
                let answer: Result<Option<Vec<u8>>, _> =
                    agent.client_rpc_as("/rpc/dns", &(query, udp), Some(&token)).await;
                answer.map_err(|e| tracing::warn!(error = %e, "dns: asking a server failed")).ok().flatten()
            })
        }));
    }
    resolver.set_acl(agent.acl.clone());
    if agent.server.is_some() {
        // Names of other datacenters and prepared queries' failover go to their servers.
        let (ask, fail) = (std::sync::Arc::downgrade(&agent), std::sync::Arc::downgrade(&agent));
        resolver.set_federation(crate::dns::Federation {
            ask: Box::new(move |dc, query, udp| {
                let weak = ask.clone();
                Box::pin(async move {
                    let agent = weak.upgrade()?;
                    let token = agent.acl.dns_token();
                    let answer: Result<Option<Vec<u8>>, String> =
                        crate::forward::call_datacenter(&agent, &dc, "/rpc/dns", &(query, udp), Some(&token)).await;
                    answer
                        .map_err(|e| tracing::debug!(dc = %dc, error = %e, "dns: no answer from the datacenter"))
                        .ok()
                        .flatten()
                })
            }),
            failover: Box::new(move |q| {
                let weak = fail.clone();
                Box::pin(async move {
                    let Some(agent) = weak.upgrade() else { return Vec::new() };
                    let token = agent.acl.dns_token();
                    let (found, _) = crate::http::query_failover(&agent, &q, 0, Some(&token)).await;
                    found
                        .and_then(|a| serde_json::from_value::<Vec<api::ServiceEntry>>(a["Nodes"].clone()).ok())
                        .unwrap_or_default()
                })
            }),
        });
    }
    let dns = crate::dns::DnsServer::bind(&config, resolver.clone()).await?;
    if agent.server.is_some() {
        let addr = std::net::SocketAddr::new(config.bind_addr, config.ports.server.max(0) as u16);
        let rpc = crate::rpc::RpcServer::bind(agent.clone(), resolver, addr)
            .await
            .with_context(|| format!("binding the server port on {addr}"))?;
        tokio::spawn(rpc.run(agent.shutdown.subscribe()));
    }
    crate::serf::start(&agent).await.context("starting gossip")?;
    crate::serf::start_wan(&agent).await.context("starting WAN gossip")?;
    agent.bootstrap_if_alone().await.context("bootstrapping raft")?;
    let conns = crate::http::limits::ConnLimiter::new(config.http_max_conns_per_client);
    for (l, tls) in http_listeners {
        tokio::spawn(crate::http::serve(agent.clone(), l, conns.clone(), tls));
    }
    if let Some(dns) = dns {
        tokio::spawn(dns.run(agent.shutdown.subscribe()));
    }
    agent.spawn_loops();
    if let Some(opts) = config.docker.clone() {
        use tracing::Instrument;
        tracing::info!(socket = %opts.socket.display(), "registering containers from the docker engine");
        let task = crate::docker::Registrator::new(agent.clone(), opts).run(agent.shutdown.subscribe());
        tokio::spawn(task.instrument(tracing::info_span!("docker", node = %node)));
    }
    println!("==> Starting the agent (compatible with Consul {})...", crate::http::handlers_version());
    println!("               Version: '{}'", crate::http::handlers_version());
    println!("               Node ID: '{}'", agent.node_id);
    println!("             Node name: '{}'", config.node_name);
    println!("            Datacenter: '{}' (Segment: '')", config.datacenter);
    println!("                Server: {} (Bootstrap: {})", config.server, config.bootstrap);
    let clients: Vec<String> = config.client_addrs.iter().map(|a| a.to_string()).collect();
    println!(
        "           Client Addr: [{}] (HTTP: {}, HTTPS: {}, gRPC: -1, DNS: {})",
        clients.join(" "),
        config.ports.http,
        config.ports.https,
        config.ports.dns
    );
    println!(
        "          Cluster Addr: {} (LAN: {}, WAN: {})",
        config.advertise_addr, config.ports.serf_lan, config.ports.serf_wan
    );
    println!("     Gossip Encryption: {}", agent.keyring.is_enabled());
    println!();
    println!("==> Log data will now stream in as it occurs:");
    tracing::info!(node = %config.node_name, server = config.server, "agent started");

    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut stopped = agent.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("caught SIGHUP, reloading service and check definitions");
                if let Err(e) = agent.reload().await {
                    tracing::error!(error = %e, "reload failed");
                }
            }
            _ = term.recv() => {
                tracing::info!("caught SIGTERM, shutting down");
                if config.leave_on_terminate { agent.leave().await; }
                break;
            }
            _ = int.recv() => {
                tracing::info!("caught SIGINT, shutting down");
                if !config.skip_leave_on_interrupt { agent.leave().await; }
                break;
            }
            _ = stopped.changed() => { tracing::info!("agent left, shutting down"); break; }
        }
    }
    agent.shutdown().await;
    if let Some(pid) = &config.pid_file {
        let _ = std::fs::remove_file(pid);
    }
    Ok(0)
}

/// Raises the soft limit on open files to the hard limit, as Go programs (Consul) do at start:
/// every client connection is a descriptor, and the soft default (often 1024) is far below
/// what the per-client connection limits are sized for.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::debug!("could not raise the open-files limit");
            }
        }
    }
}
