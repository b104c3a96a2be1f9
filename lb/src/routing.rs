//! The routing table: an immutable `Snapshot` built from what the agents report (members, the
//! catalog's services, each service's passing instances), and the lookup of a request's route.
//!
//! Order of matching (DESIGN.md "Routing on port 88"): `Host: [tag.]<service>.service[.<dc>].<domain>`,
//! then fabio-style `urlprefix-[host]/path` tags (host-specific first, longest prefix first),
//! then the agents' HTTP APIs. Building is pure: no IO, no clock, so tests feed it api types.
//!
//! A `Host` naming another datacenter looks in that datacenter's table, which holds only the
//! services a request asked for (`remote.rs` decides what is watched); one not watched yet is
//! `Match::Remote`, which the proxy waits on. The local datacenter's lookup is unchanged by it.

use crate::balance::{Backend, Pool, Stats, StatsRegistry};
use crate::config::{Config, RouteOptions};
use crate::metrics::{Metrics, RouteMetrics, UpstreamError};
use api::{AgentMember, ServiceEntry};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The name of the route to the agents' HTTP APIs.
pub const AGENTS_ROUTE: &str = "agents";

/// A blocking query's longest wait when it names none, and the most an agent allows.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);

/// How long to wait for an agent's answer. A blocking query (`?index=N`) may hold its answer for
/// `wait` plus Consul's jitter of `wait/16`, so it gets that and a margin on top of the route's
/// read timeout; any other request gets the read timeout. `None` means no limit. Without a limit
/// a paused agent (SIGSTOP) would hold requests forever instead of them moving to another agent.
pub fn agent_read_timeout(query: Option<&str>, configured: Duration) -> Option<Duration> {
    let mut index = false;
    let mut wait = DEFAULT_WAIT;
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "index" => index = v.parse::<u64>().is_ok_and(|i| i > 0),
            "wait" => {
                if let Ok(w) = api::duration::parse(v) {
                    wait = w.min(MAX_WAIT);
                }
            }
            _ => {}
        }
    }
    if index {
        Some((wait + wait / 16 + Duration::from_secs(5)).max(configured))
    } else {
        Some(configured).filter(|d| !d.is_zero())
    }
}

/// What the discovery loop knows about the cluster; the input of `Snapshot::build`.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// `GET /v1/agent/members`; `None` until one agent answered.
    pub members: Option<Vec<AgentMember>>,
    /// `GET /v1/catalog/services`: name → tags.
    pub services: BTreeMap<String, Vec<String>>,
    /// `GET /v1/health/service/<name>?passing` per service.
    pub health: HashMap<String, Vec<ServiceEntry>>,
    /// The agent addresses given with `-consul-addr`, resolved.
    pub seeds: Vec<SocketAddr>,
    /// `GET /v1/catalog/datacenters`: every datacenter of the WAN pool.
    pub datacenters: Vec<String>,
    /// What is watched of other datacenters, by lowercase name.
    pub remote: BTreeMap<String, RemoteCatalog>,
    /// No room for another watch of another datacenter.
    pub remote_full: bool,
}

/// What discovery knows of another datacenter.
#[derive(Debug, Clone, Default)]
pub struct RemoteCatalog {
    /// `GET /v1/catalog/services?dc=`; `None` until it answered.
    pub services: Option<BTreeMap<String, Vec<String>>>,
    /// Lowercase names of the services watched, answered or not.
    pub watched: BTreeSet<String>,
    /// Why its catalog could not be read, until it answers once.
    pub error: Option<String>,
    /// `GET /v1/health/service/<name>?passing&dc=` of each watched service that answered.
    pub health: HashMap<String, Vec<ServiceEntry>>,
}

/// One destination with its own instances and balancing state.
#[derive(Debug)]
pub struct Route {
    /// `service:web`, `service:v2.web`, `prefix:/api`, `prefix:example.com/`, `agents`.
    pub name: String,
    /// What a 503 names: `service "web"`, `route /api`, `agent`.
    pub what: String,
    pub pool: Pool,
    pub opts: RouteOptions,
    /// The path prefix removed before forwarding (fabio's `strip=`).
    pub strip: Option<String>,
    pub metrics: Arc<RouteMetrics>,
    /// The agents' API route, whose blocking queries may hold an answer for minutes.
    pub agents: bool,
    /// Some instance is reached over HTTPS: pingora's proxy serves the route, not the fast path.
    pub tls: bool,
}

impl Route {
    /// The next instance for a request that already tried `tried`, within the route's `tries`.
    pub fn next_instance(&self, client: Option<IpAddr>, tried: &[SocketAddr], now: Instant) -> Option<&Backend> {
        let limit = self.opts.tries as usize;
        if limit > 0 && tried.len() >= limit {
            return None;
        }
        self.pool.select(client, tried, now)
    }

    /// Counts an instance's failure, and benches it when the rule says so.
    pub fn upstream_failed(&self, stats: &Stats, kind: UpstreamError, upstream: Option<&SocketAddr>) {
        self.metrics.upstream_error(kind);
        if stats.record_failure(self.pool.bench, Instant::now()) {
            self.metrics.benched();
            tracing::warn!(route = %self.name, ?upstream, "instance benched for {:?}", self.pool.bench.fail_timeout);
        }
    }

    /// The 502 text when every instance a request tried failed.
    pub fn none_answered(&self, tried: &[SocketAddr]) -> String {
        let tried: Vec<String> = tried.iter().map(|a| a.to_string()).collect();
        format!("no instance of {} answered (tried {})", self.what, tried.join(", "))
    }
}

#[derive(Debug)]
struct PrefixRoute {
    host: Option<String>,
    prefix: String,
    route: Arc<Route>,
}

/// Routes to another datacenter's services.
#[derive(Debug, Default)]
struct RemoteTable {
    /// Its catalog's services (lowercase → name); `None` until it answered.
    known: Option<HashMap<String, String>>,
    /// Lowercase names being watched, whether or not they answered yet.
    watched: HashSet<String>,
    /// Why its catalog has not been read.
    error: Option<String>,
    services: HashMap<String, Arc<Route>>,
    tagged: HashMap<(String, String), Arc<Route>>,
}

/// The routing table at one moment. Requests read it through an `ArcSwap`; discovery replaces it.
#[derive(Debug)]
pub struct Snapshot {
    services: HashMap<String, Arc<Route>>,
    tagged: HashMap<(String, String), Arc<Route>>,
    prefixes: Vec<PrefixRoute>,
    agents: Arc<Route>,
    /// Known catalog services (lowercase), including those with no passing instance.
    known: HashMap<String, String>,
    datacenter: Option<String>,
    /// Every datacenter of the WAN pool, lowercase.
    datacenters: Vec<String>,
    /// Other datacenters' tables, by lowercase name.
    remote: HashMap<String, RemoteTable>,
    remote_full: bool,
    domain: String,
    /// Bumped by the discovery loop on each rebuild.
    pub version: u64,
}

/// Where a request goes.
#[derive(Debug)]
pub enum Match<'a> {
    Route(&'a Arc<Route>),
    /// A service host naming nothing we can route to; the text says what.
    Unknown(String),
    /// A service of another datacenter that is not watched yet (or has not answered): ask
    /// discovery for it and look again once the table is rebuilt.
    Remote(Want),
}

/// What a request for another datacenter asks discovery to watch; both names lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub dc: String,
    pub service: String,
}

/// A `Host` of the form `[tag.]<service>.service[.<dc>].<domain>`, borrowed from the header so
/// that routing a request allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHost<'a> {
    pub service: &'a str,
    pub tag: Option<&'a str>,
    pub dc: Option<&'a str>,
}

/// One fabio `urlprefix-` tag: `urlprefix-[host]/path [strip=/path] [proto=http]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlPrefix {
    pub host: Option<String>,
    pub prefix: String,
    pub strip: Option<String>,
    /// fabio's `proto=https`: the instances are reached over HTTPS.
    pub tls: bool,
}

/// The host part of a `Host` header: lowercase, without port or trailing dot. Borrowed when the
/// header is already lowercase, as clients send it.
pub fn host_only(host: &str) -> Cow<'_, str> {
    let h = host.trim();
    let h = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match h.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => h,
        }
    };
    let h = h.trim_end_matches('.');
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(h.to_ascii_lowercase())
    } else {
        Cow::Borrowed(h)
    }
}

/// Parses `[tag.]<service>.service[.<dc>].<domain>`; `host` is already `host_only`.
pub fn parse_service_host<'a>(host: &'a str, domain: &str) -> Option<ServiceHost<'a>> {
    let rest = host.strip_suffix(domain)?.strip_suffix('.')?;
    // At most `tag.service.service.dc`: four labels, kept on the stack.
    let mut labels = [""; 4];
    let mut n = 0;
    for label in rest.split('.') {
        *labels.get_mut(n)? = label;
        n += 1;
    }
    let (names, dc) = if n >= 2 && labels[n - 1] == "service" {
        (&labels[..n - 1], None)
    } else if n >= 3 && labels[n - 2] == "service" {
        (&labels[..n - 2], Some(labels[n - 1]))
    } else {
        return None;
    };
    if names.iter().any(|l| l.is_empty()) {
        return None;
    }
    match *names {
        [service] => Some(ServiceHost { service, tag: None, dc }),
        [tag, service] => Some(ServiceHost { service, tag: Some(tag), dc }),
        _ => None,
    }
}

/// Parses a service tag; `None` when it is not an HTTP `urlprefix-` route.
pub fn parse_urlprefix(tag: &str) -> Option<UrlPrefix> {
    let rest = tag.strip_prefix("urlprefix-")?;
    let mut words = rest.split_whitespace();
    let src = words.next()?;
    let slash = src.find('/')?;
    let (host, prefix) = src.split_at(slash);
    let mut strip = None;
    let mut tls = false;
    for w in words {
        let (k, v) = w.split_once('=').unwrap_or((w, ""));
        match k {
            "strip" if v.starts_with('/') => {
                strip = Some(v.trim_end_matches('/').to_string()).filter(|s| !s.is_empty())
            }
            "proto" if v == "https" => tls = true,
            // TCP and gRPC upstreams need more than an HTTP prefix route.
            "proto" if v != "http" => return None,
            _ => {}
        }
    }
    Some(UrlPrefix {
        host: Some(host.to_ascii_lowercase()).filter(|h| !h.is_empty() && !h.starts_with(':')),
        prefix: prefix.to_string(),
        strip,
        tls,
    })
}

/// Removes `strip` from the front of a path (`/api/x?q` → `/x?q`), keeping a leading `/`.
pub fn strip_path(path_and_query: &str, strip: &str) -> Option<String> {
    let rest = path_and_query.strip_prefix(strip)?;
    if rest.is_empty() || rest.starts_with('?') {
        Some(format!("/{rest}"))
    } else if rest.starts_with('/') {
        Some(rest.to_string())
    } else {
        None
    }
}

/// The HTTP address of an agent: the member's gossip IP with its advertised `http_port` tag
/// (`https_port` when lb speaks TLS to the agents), or the port of the `-consul-addr` on the same
/// IP, or of the first `-consul-addr`.
pub fn agent_http_addr(m: &AgentMember, seeds: &[SocketAddr], https: bool) -> Option<SocketAddr> {
    let ip: IpAddr = m.addr.parse().ok()?;
    let port = m
        .tags
        .get(if https { "https_port" } else { "http_port" })
        .and_then(|p| p.parse().ok())
        .or_else(|| seeds.iter().find(|s| s.ip() == ip).map(|s| s.port()))
        .or_else(|| seeds.first().map(|s| s.port()))?;
    Some(SocketAddr::new(ip, port))
}

fn entry_addr(e: &ServiceEntry) -> Option<SocketAddr> {
    let ip: IpAddr = e.address().parse().ok()?;
    (e.service.port != 0).then(|| SocketAddr::new(ip, e.service.port))
}

/// The service meta key that makes lb reach an instance over HTTPS (`lb-protocol=https`).
pub const PROTOCOL_META: &str = "lb-protocol";

/// Whether an instance is reached over HTTPS: its service's meta says `lb-protocol=https`.
fn https(e: &ServiceEntry) -> bool {
    e.service.meta.get(PROTOCOL_META).is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn weight(e: &ServiceEntry) -> u32 {
    e.service.weights.passing.clamp(1, i64::from(u32::MAX)) as u32
}

type PrefixSlot = (Option<String>, String, Vec<Backend>);

struct Builder<'a> {
    stats: &'a StatsRegistry,
    metrics: &'a Metrics,
}

impl Builder<'_> {
    fn backend(&self, addr: SocketAddr, weight: u32, node: &str, id: &str, tls: bool) -> Backend {
        Backend { addr, weight, node: node.to_string(), id: id.to_string(), stats: self.stats.get(addr), tls }
    }

    fn route(
        &self,
        name: String,
        what: String,
        backends: Vec<Backend>,
        opts: &RouteOptions,
        strip: Option<String>,
    ) -> Arc<Route> {
        let tls = backends.iter().any(|b| b.tls);
        let pool = Pool::new(backends, opts.policy, opts.bench());
        let metrics = self.metrics.route(&name);
        Arc::new(Route { agents: name == AGENTS_ROUTE, name, what, pool, opts: opts.clone(), strip, metrics, tls })
    }

    fn service_backends<'e>(&self, entries: impl Iterator<Item = &'e ServiceEntry>) -> Vec<Backend> {
        entries
            .filter_map(|e| Some(self.backend(entry_addr(e)?, weight(e), &e.node.node, &e.service.id, https(e))))
            .collect()
    }

    /// The `Host` routes of one service: `<service>.service...` and a `<tag>.<service>.service...`
    /// per tag. `dc` names another datacenter, in the routes' names (`service:web@dc2`) and texts.
    fn host_routes(
        &self,
        name: &str,
        entries: &[ServiceEntry],
        opts: &RouteOptions,
        dc: Option<&str>,
        services: &mut HashMap<String, Arc<Route>>,
        tagged: &mut HashMap<(String, String), Arc<Route>>,
    ) {
        let lname = name.to_lowercase();
        let at = dc.map(|d| format!("@{d}")).unwrap_or_default();
        let in_dc = dc.map(|d| format!(" in datacenter {d:?}")).unwrap_or_default();
        let backends = self.service_backends(entries.iter());
        services.insert(
            lname.clone(),
            self.route(format!("service:{lname}{at}"), format!("service {name:?}{in_dc}"), backends, opts, None),
        );
        for tag in distinct_tags(entries) {
            // Consul DNS's `<tag>.<service>.service.consul`; tags that are not DNS labels
            // (urlprefix routes, key=value) cannot appear in a Host header.
            let ltag = tag.to_lowercase();
            if ltag.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
                let backends = self.service_backends(entries.iter().filter(|e| e.service.tags.contains(tag)));
                let route = self.route(
                    format!("service:{ltag}.{lname}{at}"),
                    format!("service {name:?} with tag {tag:?}{in_dc}"),
                    backends,
                    opts,
                    None,
                );
                tagged.insert((ltag, lname.clone()), route);
            }
        }
    }
}

fn distinct_tags(entries: &[ServiceEntry]) -> Vec<&String> {
    let mut tags: Vec<&String> = entries.iter().flat_map(|e| e.service.tags.iter()).collect();
    tags.sort();
    tags.dedup();
    tags
}

impl Snapshot {
    pub fn build(cat: &Catalog, cfg: &Config, stats: &StatsRegistry, metrics: &Metrics, version: u64) -> Snapshot {
        let b = Builder { stats, metrics };
        let mut services = HashMap::new();
        let mut tagged = HashMap::new();
        // (host, prefix) → (strip, first service claiming it, instances of every claiming service)
        let mut prefix_members: BTreeMap<(Option<String>, String), PrefixSlot> = BTreeMap::new();
        let mut datacenter = None;
        let known: HashMap<String, String> =
            cat.services.keys().chain(cat.health.keys()).map(|n| (n.to_lowercase(), n.clone())).collect();
        // Prefix routes exist as long as a registered service claims them, even with no passing
        // instance: such a request must get a 503, not fall through to the agents.
        for (name, tags) in &cat.services {
            for p in tags.iter().filter_map(|t| parse_urlprefix(t)) {
                prefix_members.entry((p.host, p.prefix)).or_insert_with(|| (p.strip, name.clone(), Vec::new()));
            }
        }

        for (name, entries) in &cat.health {
            let opts = cfg.service(name);
            if datacenter.is_none() {
                datacenter = entries.iter().map(|e| e.node.datacenter.clone()).find(|d| !d.is_empty());
            }
            b.host_routes(name, entries, opts, None, &mut services, &mut tagged);
            for tag in distinct_tags(entries) {
                if let Some(p) = parse_urlprefix(tag) {
                    for e in entries.iter().filter(|e| e.service.tags.contains(tag)) {
                        let Some(addr) = entry_addr(e) else { continue };
                        let slot = prefix_members
                            .entry((p.host.clone(), p.prefix.clone()))
                            .or_insert_with(|| (p.strip.clone(), name.clone(), Vec::new()));
                        slot.2.push(b.backend(addr, weight(e), &e.node.node, &e.service.id, p.tls || https(e)));
                    }
                }
            }
        }

        // Other datacenters: only `Host` routes, for the services requests asked for.
        let mut remote = HashMap::new();
        for (dc, rc) in &cat.remote {
            let mut t = RemoteTable {
                known: rc.services.as_ref().map(|s| s.keys().map(|n| (n.to_lowercase(), n.clone())).collect()),
                watched: rc.watched.iter().cloned().collect(),
                error: rc.error.clone(),
                ..Default::default()
            };
            for (name, entries) in &rc.health {
                b.host_routes(name, entries, cfg.service(name), Some(dc), &mut t.services, &mut t.tagged);
            }
            remote.insert(dc.clone(), t);
        }

        let mut prefixes: Vec<PrefixRoute> = prefix_members
            .into_iter()
            .map(|((host, prefix), (strip, service, backends))| {
                let src = format!("{}{}", host.as_deref().unwrap_or(""), prefix);
                let route =
                    b.route(format!("prefix:{src}"), format!("route {src}"), backends, cfg.service(&service), strip);
                PrefixRoute { host, prefix, route }
            })
            .collect();
        // Most specific first: a host-bound route beats a host-less one, a longer prefix a shorter.
        prefixes.sort_by(|a, b| b.host.is_some().cmp(&a.host.is_some()).then(b.prefix.len().cmp(&a.prefix.len())));

        let agents_tls = cfg.consul_tls.is_some();
        let alive: Vec<Backend> = cat
            .members
            .iter()
            .flatten()
            .filter(|m| m.status == 1)
            .filter_map(|m| {
                Some(b.backend(agent_http_addr(m, &cat.seeds, agents_tls)?, 1, &m.name, &m.name, agents_tls))
            })
            .collect();
        if datacenter.is_none() {
            datacenter = cat.members.iter().flatten().find_map(|m| m.tags.get("dc").cloned());
        }
        // Before any agent has listed members (or if none is alive), the seeds are all we have.
        let agent_backends = if alive.is_empty() {
            cat.seeds.iter().map(|s| b.backend(*s, 1, "", &s.to_string(), agents_tls)).collect()
        } else {
            alive
        };
        let agents = b.route(AGENTS_ROUTE.to_string(), "agent".to_string(), agent_backends, &cfg.agents, None);

        Snapshot {
            services,
            tagged,
            prefixes,
            agents,
            known,
            datacenter,
            datacenters: cat.datacenters.iter().map(|d| d.to_lowercase()).collect(),
            remote,
            remote_full: cat.remote_full,
            domain: cfg.domain.clone(),
            version,
        }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn datacenter(&self) -> Option<&str> {
        self.datacenter.as_deref()
    }

    /// Every datacenter of the WAN pool (lowercase), and those whose catalog is watched.
    pub fn datacenters(&self) -> (&[String], Vec<&str>) {
        let mut watched: Vec<&str> = self.remote.keys().map(String::as_str).collect();
        watched.sort_unstable();
        (&self.datacenters, watched)
    }

    /// Requests answered so far by the routes of another datacenter's service (lowercase
    /// names), with and without a tag: how discovery tells a watch is still used.
    pub fn remote_requests(&self, dc: &str, service: &str) -> u64 {
        let Some(t) = self.remote.get(dc) else { return 0 };
        let tagged = t.tagged.iter().filter(|((_, s), _)| s == service).map(|(_, r)| r);
        t.services.get(service).into_iter().chain(tagged).map(|r| r.metrics.requests()).sum()
    }

    /// Every route, for the status page: services, tagged services (of every datacenter),
    /// prefixes, agents.
    pub fn routes(&self) -> Vec<&Arc<Route>> {
        let remote = self.remote.values().flat_map(|t| t.services.values().chain(t.tagged.values()));
        let mut out: Vec<&Arc<Route>> = self.services.values().chain(self.tagged.values()).chain(remote).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(self.prefixes.iter().map(|p| &p.route));
        out.push(&self.agents);
        out
    }

    /// The route of a request. `host` is the `Host` header (or `:authority`) as sent.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Match<'_> {
        let host = host.map(host_only).unwrap_or_default();
        if let Some(sh) = parse_service_host(&host, &self.domain) {
            return self.lookup_service(&sh);
        }
        for p in &self.prefixes {
            if p.host.as_ref().is_none_or(|h| *h == *host) && path.starts_with(&p.prefix) {
                return Match::Route(&p.route);
            }
        }
        Match::Route(&self.agents)
    }

    fn lookup_service(&self, sh: &ServiceHost) -> Match<'_> {
        if let (Some(want), Some(ours)) = (sh.dc, &self.datacenter) {
            if !want.eq_ignore_ascii_case(ours) {
                return self.lookup_remote(want, ours, sh);
            }
        }
        let found = match sh.tag {
            None => self.services.get(sh.service),
            Some(tag) => self.tagged.get(&(tag.to_string(), sh.service.to_string())),
        };
        match found {
            Some(r) if !r.pool.is_empty() => Match::Route(r),
            _ => match (sh.tag, self.known.get(sh.service)) {
                (None, Some(name)) => Match::Unknown(format!("no healthy instance of service {name:?}")),
                (Some(tag), Some(name)) => {
                    Match::Unknown(format!("no healthy instance of service {name:?} with tag {tag:?}"))
                }
                (_, None) => Match::Unknown(format!("service {:?} is not registered", sh.service)),
            },
        }
    }
}

impl Snapshot {
    /// `dc` is lowercase (`host_only`), as are the tables' keys.
    fn lookup_remote(&self, dc: &str, ours: &str, sh: &ServiceHost) -> Match<'_> {
        if !self.datacenters.iter().any(|d| d == dc) {
            return Match::Unknown(format!("datacenter {dc:?} is not known (this is {ours:?})"));
        }
        let full = || {
            Match::Unknown(format!(
                "too many services of other datacenters are watched; service {:?} of datacenter {dc:?} is not",
                sh.service
            ))
        };
        let ask = || Match::Remote(Want { dc: dc.to_string(), service: sh.service.to_string() });
        let Some(t) = self.remote.get(dc) else {
            return if self.remote_full { full() } else { ask() };
        };
        let Some(known) = &t.known else {
            return match &t.error {
                Some(e) => Match::Unknown(format!("datacenter {dc:?} did not answer: {e}")),
                None => ask(),
            };
        };
        let Some(name) = known.get(sh.service) else {
            return Match::Unknown(format!("service {:?} is not registered in datacenter {dc:?}", sh.service));
        };
        let Some(route) = t.services.get(sh.service) else {
            return if t.watched.contains(sh.service) || !self.remote_full { ask() } else { full() };
        };
        let found = match sh.tag {
            None => Some(route),
            Some(tag) => t.tagged.get(&(tag.to_string(), sh.service.to_string())),
        };
        match (found, sh.tag) {
            (Some(r), _) if !r.pool.is_empty() => Match::Route(r),
            (_, None) => Match::Unknown(format!("no healthy instance of service {name:?} in datacenter {dc:?}")),
            (_, Some(tag)) => {
                Match::Unknown(format!("no healthy instance of service {name:?} with tag {tag:?} in datacenter {dc:?}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Args;

    #[test]
    fn host_only_drops_port_case_and_trailing_dot() {
        let cases = [
            ("Web.Service.Consul", "web.service.consul"),
            ("web.service.consul:88", "web.service.consul"),
            ("web.service.consul.", "web.service.consul"),
            ("[::1]:88", "::1"),
            ("127.0.0.1:88", "127.0.0.1"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(host_only(input), want, "{input}");
        }
    }

    #[test]
    fn service_hosts_parse_like_consul_dns_names() {
        let sh = |service: &'static str, tag: Option<&'static str>, dc: Option<&'static str>| {
            Some(ServiceHost { service, tag, dc })
        };
        let cases = [
            ("web.service.consul", sh("web", None, None)),
            ("web.service.dc1.consul", sh("web", None, Some("dc1"))),
            ("v2.web.service.consul", sh("web", Some("v2"), None)),
            ("v2.web.service.dc2.consul", sh("web", Some("v2"), Some("dc2"))),
            ("web.node.consul", None),
            ("service.consul", None),
            ("a.b.c.service.consul", None),
            ("web.service.example", None),
            ("example.com", None),
            ("127.0.0.1", None),
            ("xconsul", None),
        ];
        for (host, want) in cases {
            assert_eq!(parse_service_host(host, "consul"), want, "{host}");
        }
        assert_eq!(parse_service_host("web.service.corp.example", "corp.example"), sh("web", None, None));
    }

    #[test]
    fn urlprefix_tags_follow_fabio() {
        let up = |host: Option<&str>, prefix: &str, strip: Option<&str>| {
            Some(UrlPrefix {
                host: host.map(Into::into),
                prefix: prefix.into(),
                strip: strip.map(Into::into),
                tls: false,
            })
        };
        let cases = [
            ("urlprefix-/api", up(None, "/api", None)),
            ("urlprefix-/api strip=/api", up(None, "/api", Some("/api"))),
            ("urlprefix-/api/ strip=/api/", up(None, "/api/", Some("/api"))),
            ("urlprefix-Example.com/", up(Some("example.com"), "/", None)),
            ("urlprefix-i.com/static proto=http", up(Some("i.com"), "/static", None)),
            (
                "urlprefix-/secure proto=https",
                Some(UrlPrefix { host: None, prefix: "/secure".into(), strip: None, tls: true }),
            ),
            ("urlprefix-:3306 proto=tcp", None),
            ("urlprefix-/grpc proto=grpc", None),
            ("urlprefix-", None),
            ("primary", None),
        ];
        for (tag, want) in cases {
            assert_eq!(parse_urlprefix(tag), want, "{tag}");
        }
    }

    #[test]
    fn strip_keeps_a_rooted_path_and_the_query() {
        let cases = [
            ("/api/users?x=1", "/api", Some("/users?x=1")),
            ("/api", "/api", Some("/")),
            ("/api?x", "/api", Some("/?x")),
            ("/apix", "/api", None),
            ("/other", "/api", None),
        ];
        for (path, strip, want) in cases {
            assert_eq!(strip_path(path, strip).as_deref(), want, "{path} - {strip}");
        }
    }

    fn member(name: &str, addr: &str, status: i32, tags: &[(&str, &str)]) -> AgentMember {
        AgentMember {
            name: name.into(),
            addr: addr.into(),
            port: 8301,
            status,
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    fn entry(node: &str, addr: &str, port: u16, id: &str, name: &str, tags: &[&str], weight: i64) -> ServiceEntry {
        let mut e: ServiceEntry = serde_json::from_value(serde_json::json!({
            "Node": {"Node": node, "Address": addr, "Datacenter": "dc1"},
            "Service": {"ID": id, "Service": name, "Port": port, "Tags": tags,
                        "Weights": {"Passing": weight, "Warning": 1}},
        }))
        .unwrap();
        e.service.address = String::new();
        e
    }

    fn config() -> Config {
        Config::from_args(Args { consul_addr: vec!["127.0.0.11:8500".into()], ..Default::default() }).unwrap()
    }

    fn catalog() -> Catalog {
        let mut health = HashMap::new();
        health.insert(
            "web".to_string(),
            vec![
                entry("n1", "10.0.0.1", 8080, "web1", "web", &["v1", "urlprefix-/web strip=/web"], 3),
                entry("n2", "10.0.0.2", 8080, "web2", "web", &["v2", "urlprefix-/web strip=/web"], 1),
            ],
        );
        health.insert("api".to_string(), vec![entry("n1", "10.0.0.1", 9000, "api1", "api", &["urlprefix-/api/v2"], 1)]);
        health.insert(
            "Admin".to_string(),
            vec![entry("n3", "10.0.0.3", 7000, "adm", "Admin", &["urlprefix-admin.example.com/"], 1)],
        );
        health.insert("down".to_string(), vec![]);
        Catalog {
            members: Some(vec![
                member("s1", "127.0.0.11", 1, &[("dc", "dc1")]),
                member("s2", "127.0.0.12", 1, &[]),
                member("s3", "127.0.0.13", 4, &[]),
                member("c1", "127.0.0.14", 1, &[("http_port", "9500")]),
            ]),
            services: ["web", "api", "Admin", "down", "gone"]
                .iter()
                .map(|s| {
                    let tags = if *s == "down" { vec!["urlprefix-/down".to_string()] } else { vec![] };
                    (s.to_string(), tags)
                })
                .collect(),
            health,
            seeds: vec!["127.0.0.11:8500".parse().unwrap()],
            ..Default::default()
        }
    }

    fn route_of(s: &Snapshot, host: Option<&str>, path: &str) -> String {
        match s.lookup(host, path) {
            Match::Route(r) => r.name.clone(),
            Match::Unknown(why) => format!("unknown: {why}"),
            Match::Remote(w) => format!("ask: {}@{}", w.service, w.dc),
        }
    }

    /// dc1 with dc2 (catalog known: Web watched with two instances, api not watched, down
    /// watched with none passing, db watched with no answer yet) and dc3 (catalog not answered).
    fn federated() -> Catalog {
        let mut dc2 = RemoteCatalog {
            services: Some(["Web", "api", "down", "db"].iter().map(|s| (s.to_string(), vec![])).collect()),
            watched: ["web", "down", "db"].iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        dc2.health.insert(
            "Web".into(),
            vec![
                entry("r1", "10.2.0.1", 8080, "web1", "Web", &["v2", "urlprefix-/remote"], 1),
                entry("r2", "10.2.0.2", 8080, "web2", "Web", &[], 1),
            ],
        );
        dc2.health.insert("down".into(), vec![]);
        Catalog {
            datacenters: vec!["dc1".into(), "DC2".into(), "dc3".into(), "dc4".into(), "dc5".into()],
            remote: [
                ("dc2".to_string(), dc2),
                ("dc3".to_string(), RemoteCatalog::default()),
                (
                    "dc5".to_string(),
                    RemoteCatalog { error: Some("No path to datacenter".into()), ..Default::default() },
                ),
            ]
            .into_iter()
            .collect(),
            ..catalog()
        }
    }

    #[test]
    fn other_datacenters_route_what_was_watched_and_ask_for_the_rest() {
        let s = Snapshot::build(&federated(), &config(), &StatsRegistry::default(), &Metrics::default(), 1);
        let cases = [
            ("web.service.dc2.consul", "service:web@dc2"),
            ("WEB.service.DC2.consul:88", "service:web@dc2"),
            ("v2.web.service.dc2.consul", "service:v2.web@dc2"),
            (
                "v9.web.service.dc2.consul",
                "unknown: no healthy instance of service \"Web\" with tag \"v9\" in datacenter \"dc2\"",
            ),
            ("down.service.dc2.consul", "unknown: no healthy instance of service \"down\" in datacenter \"dc2\""),
            ("api.service.dc2.consul", "ask: api@dc2"),
            ("db.service.dc2.consul", "ask: db@dc2"),
            ("nope.service.dc2.consul", "unknown: service \"nope\" is not registered in datacenter \"dc2\""),
            ("web.service.dc3.consul", "ask: web@dc3"),
            ("web.service.dc4.consul", "ask: web@dc4"),
            ("web.service.dc5.consul", "unknown: datacenter \"dc5\" did not answer: No path to datacenter"),
            ("web.service.dc9.consul", "unknown: datacenter \"dc9\" is not known (this is \"dc1\")"),
            // The local datacenter, named or not, is untouched by the others.
            ("web.service.dc1.consul", "service:web"),
            ("web.service.consul", "service:web"),
        ];
        for (host, want) in cases {
            assert_eq!(route_of(&s, Some(host), "/"), want, "{host}");
        }
        // Other datacenters' urlprefix tags make no path routes here.
        assert_eq!(route_of(&s, Some("lb"), "/remote"), "agents");
        let Match::Route(web) = s.lookup(Some("web.service.dc2.consul"), "/") else { panic!() };
        let got: Vec<String> = web.pool.backends().iter().map(|b| b.addr.to_string()).collect();
        assert_eq!(got, vec!["10.2.0.1:8080", "10.2.0.2:8080"]);
        assert!(s.routes().iter().any(|r| r.name == "service:v2.web@dc2"));
    }

    #[test]
    fn a_full_watch_table_refuses_what_is_not_watched_yet() {
        let cat = Catalog { remote_full: true, ..federated() };
        let s = Snapshot::build(&cat, &config(), &StatsRegistry::default(), &Metrics::default(), 1);
        let full = |svc: &str, dc: &str| {
            format!("unknown: too many services of other datacenters are watched; service {svc:?} of datacenter {dc:?} is not")
        };
        assert_eq!(route_of(&s, Some("api.service.dc2.consul"), "/"), full("api", "dc2"));
        assert_eq!(route_of(&s, Some("web.service.dc4.consul"), "/"), full("web", "dc4"));
        // What is watched keeps routing, or keeps waiting for its first answer.
        assert_eq!(route_of(&s, Some("web.service.dc2.consul"), "/"), "service:web@dc2");
        assert_eq!(route_of(&s, Some("db.service.dc2.consul"), "/"), "ask: db@dc2");
        assert_eq!(route_of(&s, Some("web.service.dc3.consul"), "/"), "ask: web@dc3");
    }

    #[test]
    fn remote_requests_count_every_route_of_the_service() {
        let metrics = Metrics::default();
        let s = Snapshot::build(&federated(), &config(), &StatsRegistry::default(), &metrics, 1);
        assert_eq!(s.remote_requests("dc2", "web"), 0);
        for host in ["web.service.dc2.consul", "v2.web.service.dc2.consul"] {
            let Match::Route(r) = s.lookup(Some(host), "/") else { panic!("{host}") };
            r.metrics.request(200, Duration::from_millis(1));
        }
        assert_eq!(s.remote_requests("dc2", "web"), 2);
        assert_eq!(s.remote_requests("dc2", "api"), 0);
        assert_eq!(s.remote_requests("dc9", "web"), 0);
    }

    #[test]
    fn requests_route_by_host_then_prefix_then_agents() {
        let s = Snapshot::build(&catalog(), &config(), &StatsRegistry::default(), &Metrics::default(), 1);
        let cases = [
            (Some("web.service.consul"), "/anything", "service:web"),
            (Some("WEB.service.dc1.consul:88"), "/", "service:web"),
            (Some("v2.web.service.consul"), "/", "service:v2.web"),
            (Some("admin.service.consul"), "/", "service:admin"),
            (Some("web.service.dc9.consul"), "/", "unknown: datacenter \"dc9\" is not known (this is \"dc1\")"),
            (Some("down.service.consul"), "/", "unknown: no healthy instance of service \"down\""),
            (Some("nope.service.consul"), "/", "unknown: service \"nope\" is not registered"),
            (Some("v9.web.service.consul"), "/", "unknown: no healthy instance of service \"web\" with tag \"v9\""),
            (Some("lb.example.com"), "/web/x", "prefix:/web"),
            (None, "/web", "prefix:/web"),
            (Some("lb"), "/api/v2/users", "prefix:/api/v2"),
            (Some("lb"), "/api/v1/users", "agents"),
            (Some("admin.example.com"), "/web/x", "prefix:admin.example.com/"),
            (Some("lb"), "/v1/catalog/services", "agents"),
            (Some("lb"), "/ui/", "agents"),
            (Some("lb"), "/down/x", "prefix:/down"),
            (None, "/", "agents"),
        ];
        for (host, path, want) in cases {
            assert_eq!(route_of(&s, host, path), want, "{host:?} {path}");
        }
    }

    #[test]
    fn snapshot_carries_instances_weights_and_strip() {
        let s = Snapshot::build(&catalog(), &config(), &StatsRegistry::default(), &Metrics::default(), 1);
        let Match::Route(web) = s.lookup(Some("web.service.consul"), "/") else { panic!("no web route") };
        let got: Vec<(String, u32)> = web.pool.backends().iter().map(|b| (b.addr.to_string(), b.weight)).collect();
        assert_eq!(got, vec![("10.0.0.1:8080".to_string(), 3), ("10.0.0.2:8080".to_string(), 1)]);
        let Match::Route(prefix) = s.lookup(None, "/web/") else { panic!("no prefix route") };
        assert_eq!(prefix.strip.as_deref(), Some("/web"));
        assert_eq!(prefix.pool.backends().len(), 2);
        let Match::Route(v1) = s.lookup(Some("v1.web.service.consul"), "/") else { panic!("no tag route") };
        assert_eq!(v1.pool.backends().len(), 1);
        assert_eq!(s.datacenter(), Some("dc1"));
    }

    #[test]
    fn agents_come_from_alive_members_with_their_http_port() {
        let s = Snapshot::build(&catalog(), &config(), &StatsRegistry::default(), &Metrics::default(), 1);
        let Match::Route(agents) = s.lookup(None, "/v1/status/leader") else { panic!() };
        let got: Vec<String> = agents.pool.backends().iter().map(|b| b.addr.to_string()).collect();
        assert_eq!(got, vec!["127.0.0.11:8500", "127.0.0.12:8500", "127.0.0.14:9500"]);

        // Nothing known about members yet: the seeds are the agent pool.
        let cat = Catalog { members: None, ..catalog() };
        let s = Snapshot::build(&cat, &config(), &StatsRegistry::default(), &Metrics::default(), 1);
        let Match::Route(agents) = s.lookup(None, "/v1/status/leader") else { panic!() };
        let got: Vec<String> = agents.pool.backends().iter().map(|b| b.addr.to_string()).collect();
        assert_eq!(got, vec!["127.0.0.11:8500"]);
    }

    #[test]
    fn blocking_queries_get_their_wait_as_read_timeout() {
        let s = Duration::from_secs;
        let cases = [
            (None, s(60), Some(s(60))),
            (Some("recurse"), s(0), None),
            (Some("index=0&wait=10s"), s(60), Some(s(60))),
            (Some("index=7&wait=10s"), s(1), Some(s(10) + Duration::from_millis(625) + s(5))),
            (Some("index=7&wait=10s"), s(60), Some(s(60))),
            (Some("index=7"), s(60), Some(s(300) + s(300) / 16 + s(5))),
            (Some("index=7&wait=1h"), s(60), Some(s(600) + s(600) / 16 + s(5))),
            (Some("wait=5s&index=3&stale"), s(0), Some(s(5) + s(5) / 16 + s(5))),
        ];
        for (query, configured, want) in cases {
            assert_eq!(agent_read_timeout(query, configured), want, "{query:?} {configured:?}");
        }
    }

    #[test]
    fn per_service_options_reach_the_route() {
        let mut cfg = config();
        let mut o = cfg.defaults.clone();
        o.policy = crate::balance::Policy::IpHash;
        cfg.services.insert("web".into(), o);
        let s = Snapshot::build(&catalog(), &cfg, &StatsRegistry::default(), &Metrics::default(), 1);
        let Match::Route(web) = s.lookup(Some("web.service.consul"), "/") else { panic!() };
        assert_eq!(web.pool.policy, crate::balance::Policy::IpHash);
        let Match::Route(prefix) = s.lookup(None, "/web") else { panic!() };
        assert_eq!(prefix.pool.policy, crate::balance::Policy::IpHash);
    }
}
