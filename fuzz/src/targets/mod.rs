//! The targets, and the one in-process agent the HTTP and DNS targets share.

pub mod dns;
pub mod filter;
pub mod http;
pub mod json;
pub mod template;

use agent::agent::Agent;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A `-dev` agent started once per process, without listeners and without gossip: requests
/// reach it through `agent::http::handle`, DNS queries through its `dns::Resolver`.
pub struct Env {
    pub rt: tokio::runtime::Runtime,
    pub agent: Arc<Agent>,
    pub resolver: Arc<agent::dns::Resolver>,
}

/// How long one request may take before the HTTP target calls it a hang. Blocking queries
/// are capped far below it (`max_query_time` is 20ms here).
pub const REQUEST_LIMIT: Duration = Duration::from_secs(5);

pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| start().unwrap_or_else(|e| panic!("starting the fuzz agent: {e}")))
}

fn start() -> Result<Env, String> {
    // One worker, as on a loaded 2-core server; background tasks (Raft, anti-entropy, TTL
    // checks) run on it between and during requests.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let flags = agent::config::AgentFlags {
        dev: true,
        node: Some("fuzz".into()),
        // Blocking queries return at once instead of parking the fuzzer.
        default_query_time: Some("10ms".into()),
        max_query_time: Some("20ms".into()),
        ..Default::default()
    };
    let config = agent::config::Config::from_flags(flags).map_err(|e| e.to_string())?;
    let agent = rt.block_on(async {
        let agent = Agent::start(config).await.map_err(|e| e.to_string())?;
        // Checks that would reach the network (HTTP, TCP, UDP, gRPC) never run: requests name
        // arbitrary addresses.
        agent.runner.offline();
        agent.bootstrap_if_alone().await.map_err(|e| e.to_string())?;
        agent.spawn_loops();
        Ok::<_, String>(agent)
    })?;
    let resolver = agent::dns::Resolver::new(&agent.config, agent.store.clone()).map_err(|e| e.to_string())?;
    let env = Env { rt, agent, resolver };
    // Wait for leadership, then give the catalog something for reads and DNS to find.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = http::answer(&env, http::request("PUT", "/v1/kv/fuzz/ready", b"1"));
        if status == 200 {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("no leader after 30s (last status {status})"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (method, path, body) in SEED_STATE {
        let (status, body) = http::answer(&env, http::request(method, path, body.as_bytes()));
        if status != 200 {
            return Err(format!("seeding {method} {path}: {status} {body}"));
        }
    }
    Ok(env)
}

/// What the catalog holds before the first input: nodes with meta, services with tags, an
/// address that is a host name (a CNAME in DNS), IPv6, a TTL check, KV keys and a session.
const SEED_STATE: &[(&str, &str, &str)] = &[
    (
        "PUT",
        "/v1/catalog/register",
        r#"{"Node":"web1","Address":"10.0.0.1","NodeMeta":{"rack":"r1","rfc1035-x":"y"},"Service":{"Service":"web","ID":"web-1","Tags":["v1","primary"],"Port":8080,"Meta":{"env":"prod"}},"Check":{"CheckID":"web-alive","Name":"alive","Status":"passing","ServiceID":"web-1"}}"#,
    ),
    (
        "PUT",
        "/v1/catalog/register",
        r#"{"Node":"web2","Address":"2001:db8::5","Service":{"Service":"web","ID":"web-2","Tags":["v2"],"Address":"10.0.0.9","Port":8081}}"#,
    ),
    (
        "PUT",
        "/v1/catalog/register",
        r#"{"Node":"db1","Address":"db.example.com","Service":{"Service":"pg","Port":5432},"Check":{"CheckID":"pg","Name":"pg","Status":"critical","ServiceID":"pg"}}"#,
    ),
    ("PUT", "/v1/agent/service/register", r#"{"Name":"api","ID":"api-1","Port":9000,"Check":{"TTL":"30s"}}"#),
    ("PUT", "/v1/kv/app/config", "hello"),
    ("PUT", "/v1/kv/app/db/url?flags=42", "postgres://"),
    ("PUT", "/v1/session/create", r#"{"Name":"s","TTL":"60s","Checks":[]}"#),
];
