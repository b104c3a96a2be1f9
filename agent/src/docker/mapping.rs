//! Registrator's rules, pure: one inspected container in, the service definitions it makes out
//! (Consul's JSON shape, as `/v1/agent/service/register` takes them). No IO, no agent types.
//!
//! As gliderlabs/registrator: a service per published port (per exposed port in internal mode),
//! named after the image (`<image>-<port>` when there are several), overridden by the
//! container's labels and environment (`SERVICE_NAME`, `SERVICE_<port>_NAME`, `SERVICE_TAGS`,
//! `SERVICE_ID`, `SERVICE_IGNORE`, any other `SERVICE_X` as metadata), with its Consul backend's
//! checks (`SERVICE_CHECK_HTTP`, `_HTTPS`, `_TCP`, `_TTL`, `_SCRIPT`, `_INTERVAL`, `_TIMEOUT`,
//! `_INITIAL_STATUS`, `_DEREGISTER_AFTER`, `_TLS_SKIP_VERIFY`). Labels win over environment
//! variables; a port's own key wins over the general one.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

/// The meta key that marks a service as registered for a container (its full ID), so the
/// services of containers that went away while the agent was down can be found again.
pub const CONTAINER_META: &str = "docker_container_id";

/// Registrator's default check interval.
const DEFAULT_INTERVAL: &str = "10s";

/// How services are made from containers (Registrator's `-internal`, `-ip`, `-explicit`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// Exposed ports at the container's own address, instead of published ports at the host's.
    pub internal: bool,
    /// The address to register published ports at (default: the binding's, else the agent's).
    pub ip: Option<IpAddr>,
    /// Only containers that name their service (`SERVICE_NAME`, `SERVICE_<port>_NAME`).
    pub explicit: bool,
}

// ---- The Engine API's `GET /containers/{id}/json`, only the fields read here ----

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub config: ContainerConfig,
    pub host_config: HostConfig,
    pub network_settings: NetworkSettings,
    pub state: State,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerConfig {
    pub image: String,
    pub env: Option<Vec<String>>,
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    pub network_mode: String,
    pub port_bindings: Option<BTreeMap<String, Option<Vec<PortBinding>>>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct PortBinding {
    #[serde(rename = "HostIp")]
    pub host_ip: String,
    #[serde(rename = "HostPort")]
    pub host_port: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkSettings {
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    /// Exposed ports, each with its host bindings (`null` when not published).
    pub ports: Option<BTreeMap<String, Option<Vec<PortBinding>>>>,
    pub networks: Option<BTreeMap<String, Network>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Network {
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct State {
    pub running: bool,
}

impl Container {
    /// The container's address: the default bridge's, else its own network mode's, else the
    /// first network's (by name). Empty with `--network=host` or `none`.
    fn ip(&self) -> String {
        let ns = &self.network_settings;
        if !ns.ip_address.is_empty() {
            return ns.ip_address.clone();
        }
        let nets = ns.networks.as_ref();
        nets.and_then(|n| n.get(&self.host_config.network_mode))
            .map(|n| n.ip_address.clone())
            .filter(|ip| !ip.is_empty())
            .or_else(|| nets.and_then(|n| n.values().map(|n| n.ip_address.clone()).find(|ip| !ip.is_empty())))
            .unwrap_or_default()
    }

    /// Labels and environment as one map of `SERVICE_*` settings; labels win.
    fn settings(&self) -> BTreeMap<&str, &str> {
        let mut all = BTreeMap::new();
        for e in self.config.env.iter().flatten() {
            if let Some((k, v)) = e.split_once('=') {
                all.insert(k, v);
            }
        }
        for (k, v) in self.config.labels.iter().flatten() {
            all.insert(k.as_str(), v.as_str());
        }
        all
    }
}

/// One port of a container to make a service of.
#[derive(Debug, Clone)]
struct Port {
    exposed: String,
    udp: bool,
    binding: PortBinding,
}

/// The `SERVICE_*` settings that apply to the exposed port `port`, with keys lowercased and
/// without the prefix (and port), and which of them were the port's own.
fn metadata(settings: &BTreeMap<&str, &str>, port: &str) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut general = BTreeMap::new();
    let mut own = BTreeMap::new();
    for (k, v) in settings {
        let Some(rest) = k.strip_prefix("SERVICE_").filter(|r| !r.is_empty()) else { continue };
        let key = rest.to_lowercase();
        match key.split_once('_') {
            Some((p, attr)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                if p == port {
                    own.insert(attr.to_string(), v.to_string());
                }
            }
            _ => {
                general.insert(key, v.to_string());
            }
        }
    }
    let from_port: BTreeSet<String> = own.keys().cloned().collect();
    general.extend(own);
    (general, from_port)
}

/// Registrator's tag list: comma-separated, `\,` for a comma inside a tag, empty parts dropped.
fn split_tags(s: &str) -> Vec<String> {
    let mut tags = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                cur.push(',');
                chars.next();
            }
            ',' => tags.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    tags.push(cur);
    tags.into_iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect()
}

/// The image's base name without tag or digest: `gliderlabs/foobar:1.2` → `foobar`.
fn image_name(image: &str) -> String {
    let base = image.rsplit('/').next().unwrap_or(image);
    base.split(['@', ':']).next().unwrap_or(base).to_string()
}

/// Consul's rule for meta keys (letters, digits, `-`, `_`; at most 128 bytes).
fn valid_meta_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_unspecified(ip: &str) -> bool {
    ip.is_empty() || ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

/// The check Registrator's Consul backend builds from a service's attributes, if any.
fn check(attrs: &BTreeMap<String, String>, ip: &str, port: u16) -> Option<Value> {
    let attr = |k: &str| attrs.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let host_port = match ip.parse::<IpAddr>() {
        Ok(addr) => SocketAddr::new(addr, port).to_string(),
        Err(_) => format!("{ip}:{port}"),
    };
    let mut c = Map::new();
    let mut timeout = false;
    if let Some(path) = attr("check_http") {
        c.insert("HTTP".into(), json!(format!("http://{host_port}{path}")));
        timeout = true;
    } else if let Some(path) = attr("check_https") {
        c.insert("HTTP".into(), json!(format!("https://{host_port}{path}")));
        if attr("check_tls_skip_verify").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            c.insert("TLSSkipVerify".into(), json!(true));
        }
        timeout = true;
    } else if let Some(script) = attr("check_script") {
        let script = script.replace("$SERVICE_IP", ip).replace("$SERVICE_PORT", &port.to_string());
        c.insert("Args".into(), json!(["/bin/sh", "-c", script]));
    } else if let Some(ttl) = attr("check_ttl") {
        c.insert("TTL".into(), json!(ttl));
    } else if attr("check_tcp").is_some() {
        c.insert("TCP".into(), json!(host_port));
        timeout = true;
    } else {
        return None;
    }
    if !c.contains_key("TTL") {
        c.insert("Interval".into(), json!(attr("check_interval").unwrap_or(DEFAULT_INTERVAL)));
    }
    if let Some(t) = attr("check_timeout").filter(|_| timeout) {
        c.insert("Timeout".into(), json!(t));
    }
    if let Some(s) = attr("check_initial_status") {
        c.insert("Status".into(), json!(s));
    }
    if let Some(d) = attr("check_deregister_after") {
        c.insert("DeregisterCriticalServiceAfter".into(), json!(d));
    }
    Some(Value::Object(c))
}

/// The service definitions Registrator would make of `c` on the agent `node`, whose own address
/// (`agent_ip`) stands in for the host's when a port is published on every address.
pub fn services(c: &Container, node: &str, agent_ip: IpAddr, rules: &Rules) -> Vec<Value> {
    // Bindings made at creation (relevant with --network=host), then what the engine reports.
    let mut ports: BTreeMap<String, PortBinding> = BTreeMap::new();
    let lists = [c.host_config.port_bindings.as_ref(), c.network_settings.ports.as_ref()];
    for list in lists.into_iter().flatten() {
        for (key, bindings) in list {
            let first = bindings.as_ref().and_then(|b| b.first()).cloned().unwrap_or_default();
            ports.insert(key.clone(), first);
        }
    }
    let ports: Vec<Port> = ports
        .into_iter()
        .filter(|(_, b)| rules.internal || !b.host_port.is_empty())
        .map(|(key, binding)| {
            let (exposed, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
            Port { exposed: exposed.to_string(), udp: proto == "udp", binding }
        })
        .collect();
    let group = ports.len() > 1;
    let settings = c.settings();
    let container_name = c.name.trim_start_matches('/');
    let container_ip = c.ip();
    let mut out = Vec::new();
    for port in &ports {
        let (mut meta, from_port) = metadata(&settings, &port.exposed);
        if meta.get("ignore").is_some_and(|v| !v.is_empty()) {
            continue;
        }
        let mut name = match meta.remove("name").filter(|n| !n.is_empty()) {
            Some(n) => n,
            None if rules.explicit => continue,
            None => image_name(&c.config.image),
        };
        if group && !from_port.contains("name") {
            name = format!("{name}-{}", port.exposed);
        }
        let (ip, port_number) = if rules.internal {
            let ip = if container_ip.is_empty() { agent_ip.to_string() } else { container_ip.clone() };
            (ip, port.exposed.parse::<u16>().ok())
        } else {
            let ip = match rules.ip {
                Some(ip) => ip.to_string(),
                None if is_unspecified(&port.binding.host_ip) => agent_ip.to_string(),
                None => port.binding.host_ip.clone(),
            };
            (ip, port.binding.host_port.parse::<u16>().ok())
        };
        let Some(port_number) = port_number else { continue };
        let mut tags = split_tags(meta.get("tags").map(String::as_str).unwrap_or(""));
        let mut id = format!("{node}:{container_name}:{}", port.exposed);
        if port.udp {
            tags.push("udp".into());
            id.push_str(":udp");
        }
        if let Some(own_id) = meta.get("id").filter(|v| !v.is_empty()) {
            id = own_id.clone();
        }
        for k in ["id", "tags", "ignore"] {
            meta.remove(k);
        }
        let check = check(&meta, &ip, port_number);
        let mut service_meta: BTreeMap<String, String> =
            meta.into_iter().filter(|(k, _)| !k.starts_with("check_") && valid_meta_key(k)).collect();
        service_meta.insert(CONTAINER_META.into(), c.id.clone());
        let mut def = json!({
            "ID": id,
            "Name": name,
            "Address": ip,
            "Port": port_number,
            "Tags": tags,
            "Meta": service_meta,
        });
        if let Some(check) = check {
            def["Check"] = check;
        }
        out.push(def);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT_IP: &str = "10.0.0.5";

    /// A container from inspect-shaped JSON.
    fn container(v: Value) -> Container {
        serde_json::from_value(v).expect("container json")
    }

    /// `docker run --name NAME -p ... IMAGE` with env and labels, on the default bridge.
    fn published(
        name: &str,
        image: &str,
        ports: &[(&str, &str, &str)],
        env: &[&str],
        labels: &[(&str, &str)],
    ) -> Container {
        let mut p = Map::new();
        for (key, host_ip, host_port) in ports {
            let v =
                if host_port.is_empty() { Value::Null } else { json!([{"HostIp": host_ip, "HostPort": host_port}]) };
            p.insert(key.to_string(), v);
        }
        let labels: Map<String, Value> = labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        container(json!({
            "Id": "c0ffee", "Name": format!("/{name}"),
            "Config": {"Image": image, "Env": env, "Labels": labels},
            "HostConfig": {"NetworkMode": "default"},
            "NetworkSettings": {"IPAddress": "172.17.0.9", "Ports": p},
            "State": {"Running": true}
        }))
    }

    fn make(c: &Container, rules: &Rules) -> Vec<Value> {
        services(c, "host1", AGENT_IP.parse().expect("ip"), rules)
    }

    fn meta(extra: &[(&str, &str)]) -> Value {
        let mut m: Map<String, Value> = extra.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        m.insert(CONTAINER_META.into(), json!("c0ffee"));
        Value::Object(m)
    }

    #[test]
    fn registrators_documented_examples() {
        // Single service with defaults.
        let c = published("redis.0", "progrium/redis", &[("6379/tcp", "0.0.0.0", "10000")], &[], &[]);
        assert_eq!(
            make(&c, &Rules::default()),
            [json!({"ID": "host1:redis.0:6379", "Name": "redis", "Address": AGENT_IP, "Port": 10000, "Tags": [],
                    "Meta": meta(&[])})]
        );
        // Single service with metadata, from the environment or from labels.
        let env = ["SERVICE_NAME=db", "SERVICE_TAGS=master,backups", "SERVICE_REGION=us2", "PATH=/bin"];
        let want = json!({"ID": "host1:redis.0:6379", "Name": "db", "Address": AGENT_IP, "Port": 10000,
                          "Tags": ["master", "backups"], "Meta": meta(&[("region", "us2")])});
        let c = published("redis.0", "progrium/redis", &[("6379/tcp", "0.0.0.0", "10000")], &env, &[]);
        assert_eq!(make(&c, &Rules::default()), [want.clone()]);
        let labels = [("SERVICE_NAME", "db"), ("SERVICE_TAGS", "master,backups"), ("SERVICE_REGION", "us2")];
        let c = published("redis.0", "dockerfile/redis", &[("6379/tcp", "", "10000")], &[], &labels);
        assert_eq!(make(&c, &Rules::default()), [want]);
        // Multiple services with defaults: the exposed port joins the name.
        let ports = [("443/tcp", "0.0.0.0", "4443"), ("80/tcp", "0.0.0.0", "8000")];
        let c = published("nginx.0", "progrium/nginx", &ports, &[], &[]);
        let got = make(&c, &Rules::default());
        let names: Vec<(&str, &str, u64)> = got
            .iter()
            .map(|s| {
                (s["ID"].as_str().unwrap_or(""), s["Name"].as_str().unwrap_or(""), s["Port"].as_u64().unwrap_or(0))
            })
            .collect();
        assert_eq!(names, [("host1:nginx.0:443", "nginx-443", 4443), ("host1:nginx.0:80", "nginx-80", 8000)]);
        // Multiple services with metadata: a port's own name is used as is; SERVICE_NAME gets
        // the port appended; a port's own ID replaces the made-up one.
        let env =
            ["SERVICE_443_NAME=https", "SERVICE_443_ID=https.12345", "SERVICE_443_SNI=enabled", "SERVICE_TAGS=www"];
        let c = published("nginx.0", "progrium/nginx", &ports, &env, &[]);
        assert_eq!(
            make(&c, &Rules::default()),
            [
                json!({"ID": "https.12345", "Name": "https", "Address": AGENT_IP, "Port": 4443, "Tags": ["www"],
                       "Meta": meta(&[("sni", "enabled")])}),
                json!({"ID": "host1:nginx.0:80", "Name": "nginx-80", "Address": AGENT_IP, "Port": 8000,
                       "Tags": ["www"], "Meta": meta(&[])}),
            ]
        );
        let c = published("nginx.0", "progrium/nginx", &ports, &["SERVICE_NAME=web"], &[]);
        let names: Vec<Value> = make(&c, &Rules::default()).iter().map(|s| s["Name"].clone()).collect();
        assert_eq!(names, [json!("web-443"), json!("web-80")]);
    }

    #[test]
    fn which_ports_count_and_at_which_address() {
        // Exposed but not published: nothing, unless internal.
        let ports = [("80/tcp", "", ""), ("53/udp", "", "")];
        let c = published("dns", "example/dns:1.0", &ports, &[], &[]);
        assert!(make(&c, &Rules::default()).is_empty());
        let got = make(&c, &Rules { internal: true, ..Rules::default() });
        let summary: Vec<Value> =
            got.iter().map(|s| json!([s["ID"], s["Name"], s["Address"], s["Port"], s["Tags"]])).collect();
        assert_eq!(
            summary,
            [
                json!(["host1:dns:53:udp", "dns-53", "172.17.0.9", 53, ["udp"]]),
                json!(["host1:dns:80", "dns-80", "172.17.0.9", 80, []]),
            ]
        );
        // A binding to one address is registered at that address; -ip overrides every binding.
        let c = published("web", "web", &[("80/tcp", "192.168.1.7", "8080")], &[], &[]);
        assert_eq!(make(&c, &Rules::default())[0]["Address"], "192.168.1.7");
        let rules = Rules { ip: Some("203.0.113.4".parse().expect("ip")), ..Rules::default() };
        assert_eq!(make(&c, &rules)[0]["Address"], "203.0.113.4");
        // A user-defined network (compose): the container's address there, in internal mode.
        let c = container(json!({
            "Id": "c0ffee", "Name": "/demo_web3_1",
            "Config": {"Image": "template:dev", "Labels": {"SERVICE_NAME": "web"}},
            "HostConfig": {"NetworkMode": "demo_default"},
            "NetworkSettings": {"IPAddress": "", "Ports": {"8080/tcp": null},
                                "Networks": {"aaa": {"IPAddress": "10.9.9.9"}, "demo_default": {"IPAddress": "172.20.0.8"}}}
        }));
        let got = make(&c, &Rules { internal: true, explicit: true, ..Rules::default() });
        assert_eq!(json!([got[0]["Name"], got[0]["Address"], got[0]["Port"]]), json!(["web", "172.20.0.8", 8080]));
        // Host networking: the bindings made at creation, at the agent's address.
        let c = container(json!({
            "Id": "c0ffee", "Name": "/h", "Config": {"Image": "h"},
            "HostConfig": {"NetworkMode": "host", "PortBindings": {"9000/tcp": [{"HostIp": "", "HostPort": "9000"}]}},
            "NetworkSettings": {"Ports": {}, "Networks": {"host": {"IPAddress": ""}}}
        }));
        let got = make(&c, &Rules::default());
        assert_eq!(json!([got[0]["Address"], got[0]["Port"]]), json!([AGENT_IP, 9000]));
    }

    #[test]
    fn ignore_explicit_and_precedence() {
        let ports = [("80/tcp", "0.0.0.0", "8080"), ("443/tcp", "0.0.0.0", "8443")];
        let c = published("w", "w", &ports, &["SERVICE_IGNORE=true"], &[]);
        assert!(make(&c, &Rules::default()).is_empty());
        let c = published("w", "w", &ports, &["SERVICE_443_IGNORE=1"], &[]);
        let ids: Vec<Value> = make(&c, &Rules::default()).iter().map(|s| s["ID"].clone()).collect();
        assert_eq!(ids, [json!("host1:w:80")]);
        // Explicit: only ports that have a name.
        let c = published("w", "w", &ports, &["SERVICE_80_NAME=site"], &[]);
        let got = make(&c, &Rules { explicit: true, ..Rules::default() });
        assert_eq!(json!([got.len(), got[0]["Name"]]), json!([1, "site"]));
        // Labels beat the environment, a port's own key beats the general one.
        let c = published(
            "w",
            "w",
            &[("80/tcp", "0.0.0.0", "8080")],
            &["SERVICE_NAME=from-env", "SERVICE_TAGS=env"],
            &[("SERVICE_NAME", "from-label"), ("SERVICE_80_TAGS", "own,a\\,b")],
        );
        let got = make(&c, &Rules::default());
        assert_eq!(json!([got[0]["Name"], got[0]["Tags"]]), json!(["from-label", ["own", "a,b"]]));
        // Keys Consul would refuse as meta are left out; the image name loses tag and digest.
        let c = published("w", "reg:5000/team/app@sha256:abc", &[("80/tcp", "", "1")], &["SERVICE_A.B=x"], &[]);
        assert_eq!(
            json!([make(&c, &Rules::default())[0]["Name"], make(&c, &Rules::default())[0]["Meta"]]),
            json!(["app", meta(&[])])
        );
    }

    #[test]
    fn checks_from_the_consul_backend() {
        let c = |env: &[&str]| {
            let c = published("w", "w", &[("80/tcp", "0.0.0.0", "8080")], env, &[]);
            make(&c, &Rules::default()).remove(0)
        };
        let s = c(&["SERVICE_CHECK_HTTP=/health", "SERVICE_CHECK_INTERVAL=2s", "SERVICE_CHECK_TIMEOUT=1s"]);
        assert_eq!(s["Check"], json!({"HTTP": "http://10.0.0.5:8080/health", "Interval": "2s", "Timeout": "1s"}));
        assert_eq!(s["Meta"], meta(&[]), "check settings are not meta");
        let s = c(&["SERVICE_80_CHECK_HTTPS=/h", "SERVICE_CHECK_TLS_SKIP_VERIFY=true"]);
        assert_eq!(s["Check"], json!({"HTTP": "https://10.0.0.5:8080/h", "TLSSkipVerify": true, "Interval": "10s"}));
        let s = c(&["SERVICE_CHECK_TCP=true", "SERVICE_CHECK_INITIAL_STATUS=passing"]);
        assert_eq!(s["Check"], json!({"TCP": "10.0.0.5:8080", "Interval": "10s", "Status": "passing"}));
        let s = c(&["SERVICE_CHECK_TTL=30s", "SERVICE_CHECK_DEREGISTER_AFTER=5m"]);
        assert_eq!(s["Check"], json!({"TTL": "30s", "DeregisterCriticalServiceAfter": "5m"}));
        let s = c(&["SERVICE_CHECK_SCRIPT=nc $SERVICE_IP $SERVICE_PORT | grep OK"]);
        assert_eq!(s["Check"], json!({"Args": ["/bin/sh", "-c", "nc 10.0.0.5 8080 | grep OK"], "Interval": "10s"}));
        assert!(c(&["SERVICE_CHECK_INTERVAL=5s"]).get("Check").is_none(), "an interval alone is no check");
    }

    #[test]
    fn every_definition_is_one_the_agent_accepts() {
        let env = ["SERVICE_NAME=db", "SERVICE_CHECK_HTTP=/h", "SERVICE_TAGS=a,b", "SERVICE_OWNER=ops"];
        let c = published("redis.0", "redis", &[("6379/tcp", "0.0.0.0", "10000")], &env, &[]);
        for def in make(&c, &Rules::default()) {
            let (svc, checks) = crate::defs::service(&crate::defs::normalize(def), "host1").expect("valid definition");
            assert_eq!((svc.service.as_str(), svc.port, svc.tags.len()), ("db", 10000, 2));
            assert_eq!(svc.meta.get(CONTAINER_META).map(String::as_str), Some("c0ffee"));
            assert_eq!(checks.len(), 1);
            assert_eq!(checks[0].check_id, "service:host1:redis.0:6379");
        }
    }
}
