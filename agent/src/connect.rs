//! Connect's control-plane data, pure: intentions (kept, as in Consul ≥ 1.9, as
//! `service-intentions` config entries) with Consul's precedence, the discovery chain compiled
//! from resolver, router and splitter entries, and the built-in CA (a root made with rcgen at
//! first leadership, leaf certificates with Consul's SPIFFE IDs).

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

type Entries = BTreeMap<String, BTreeMap<String, Value>>;

/// Consul's precedence without namespaces: exact names beat wildcards, destination first.
pub fn precedence(source: &str, destination: &str) -> u64 {
    match (source == "*", destination == "*") {
        (false, false) => 9,
        (true, false) => 8,
        (false, true) => 6,
        (true, true) => 5,
    }
}

/// Every intention, as `/v1/connect/intentions` lists them (highest precedence first).
pub fn intentions(entries: &Entries) -> Vec<Value> {
    let mut out = Vec::new();
    for (dest, entry) in entries.get("service-intentions").into_iter().flatten() {
        for src in entry.get("Sources").and_then(Value::as_array).into_iter().flatten() {
            out.push(intention(entry, dest, src));
        }
    }
    out.sort_by(|a, b| {
        let p = |v: &Value| v["Precedence"].as_u64().unwrap_or(0);
        p(b).cmp(&p(a))
            .then_with(|| a["SourceName"].as_str().cmp(&b["SourceName"].as_str()))
            .then_with(|| a["DestinationName"].as_str().cmp(&b["DestinationName"].as_str()))
    });
    out
}

fn intention(entry: &Value, dest: &str, src: &Value) -> Value {
    let name = src.get("Name").and_then(Value::as_str).unwrap_or("");
    json!({
        "ID": "",
        "Description": src.get("Description").cloned().unwrap_or(json!("")),
        "SourceNS": "default", "SourceName": name, "SourcePartition": "default",
        "DestinationNS": "default", "DestinationName": dest, "DestinationPartition": "default",
        "SourceType": src.get("Type").cloned().unwrap_or(json!("consul")),
        "Action": src.get("Action").cloned().unwrap_or(json!("")),
        "Permissions": src.get("Permissions").cloned().unwrap_or(Value::Null),
        "Meta": src.get("LegacyMeta").cloned().unwrap_or(json!({})),
        "Precedence": precedence(name, dest),
        "CreatedAt": src.get("LegacyCreateTime").cloned().unwrap_or(json!("0001-01-01T00:00:00Z")),
        "UpdatedAt": src.get("LegacyUpdateTime").cloned().unwrap_or(json!("0001-01-01T00:00:00Z")),
        "CreateIndex": entry.get("CreateIndex").cloned().unwrap_or(json!(0)),
        "ModifyIndex": entry.get("ModifyIndex").cloned().unwrap_or(json!(0)),
    })
}

/// The intentions that apply to `name` as source or destination, most specific first.
pub fn matching(entries: &Entries, by_destination: bool, name: &str) -> Vec<Value> {
    intentions(entries)
        .into_iter()
        .filter(|i| {
            let field = if by_destination { "DestinationName" } else { "SourceName" };
            let v = i[field].as_str().unwrap_or("");
            v == name || v == "*"
        })
        .collect()
}

/// Whether `source` may connect to `destination`: the most specific matching intention decides;
/// none matching falls back to `default_allow` (the ACL default policy, as in Consul).
pub fn allowed(entries: &Entries, source: &str, destination: &str, default_allow: bool) -> bool {
    matching(entries, true, destination)
        .into_iter()
        .find(|i| matches!(i["SourceName"].as_str(), Some(s) if s == source || s == "*"))
        .map(|i| i["Action"].as_str() == Some("allow"))
        .unwrap_or(default_allow)
}

/// The `service-intentions` entry for `destination` with the source `source` set to `src`
/// (`None` removes it); `None` back means the entry is left with no sources (delete it).
pub fn upsert_source(existing: Option<&Value>, destination: &str, source: &str, src: Option<Value>) -> Option<Value> {
    let mut entry = existing.cloned().unwrap_or_else(|| json!({"Kind": "service-intentions", "Name": destination}));
    let m = entry.as_object_mut()?;
    m.remove("CreateIndex");
    m.remove("ModifyIndex");
    let mut sources: Vec<Value> = m.get("Sources").and_then(Value::as_array).cloned().unwrap_or_default();
    sources.retain(|s| s.get("Name").and_then(Value::as_str) != Some(source));
    if let Some(s) = src {
        sources.push(s);
    }
    if sources.is_empty() {
        return None;
    }
    m.insert("Sources".into(), Value::Array(sources));
    Some(entry)
}

fn entry<'a>(entries: &'a Entries, kind: &str, name: &str) -> Option<&'a Map<String, Value>> {
    entries.get(kind).and_then(|m| m.get(name)).and_then(Value::as_object)
}

/// Compiles the discovery chain of `service` in `dc` (Consul's `/v1/discovery-chain`): routers,
/// then splitters, then resolvers, with the targets they lead to.
pub fn discovery_chain(entries: &Entries, service: &str, dc: &str, override_protocol: Option<&str>) -> Value {
    let protocol = override_protocol
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| crate::config_entry::protocol(entries, service));
    let mut nodes = Map::new();
    let mut targets = Map::new();
    let start = chain_node(entries, service, dc, &protocol, &mut nodes, &mut targets, 0);
    json!({
        "Chain": {
            "ServiceName": service, "Namespace": "default", "Partition": "default", "Datacenter": dc,
            "CustomizationHash": "", "Default": nodes.len() == 1 && start.starts_with("resolver:"),
            "Protocol": protocol, "ServiceMeta": {}, "EnvoyExtensions": null,
            "StartNode": start, "Nodes": nodes, "Targets": targets,
        }
    })
}

fn target_id(service: &str, subset: &str, dc: &str) -> String {
    if subset.is_empty() {
        format!("{service}.default.default.{dc}")
    } else {
        format!("{subset}.{service}.default.default.{dc}")
    }
}

/// Adds the node for `service` (router, else splitter, else resolver) and what it leads to;
/// returns its name. `depth` stops loops between entries.
fn chain_node(
    entries: &Entries,
    service: &str,
    dc: &str,
    protocol: &str,
    nodes: &mut Map<String, Value>,
    targets: &mut Map<String, Value>,
    depth: u8,
) -> String {
    let l7 = protocol != "tcp";
    if l7 && depth < 8 {
        if let Some(router) = entry(entries, "service-router", service) {
            let name = format!("router:{service}.default.default");
            let mut routes = Vec::new();
            for r in router.get("Routes").and_then(Value::as_array).into_iter().flatten() {
                let dest =
                    r.get("Destination").and_then(|d| d.get("Service")).and_then(Value::as_str).unwrap_or(service);
                let next = if dest == service {
                    splitter_or_resolver(entries, dest, dc, protocol, nodes, targets, depth + 1)
                } else {
                    chain_node(entries, dest, dc, protocol, nodes, targets, depth + 1)
                };
                routes.push(json!({"Definition": r, "NextNode": next}));
            }
            let default_next = splitter_or_resolver(entries, service, dc, protocol, nodes, targets, depth + 1);
            routes.push(json!({"Definition": {"Match": {"HTTP": {"PathPrefix": "/"}}}, "NextNode": default_next}));
            nodes.insert(
                name.clone(),
                json!({"Type": "router", "Name": format!("{service}.default.default"), "Routes": routes}),
            );
            return name;
        }
    }
    splitter_or_resolver(entries, service, dc, protocol, nodes, targets, depth)
}

fn splitter_or_resolver(
    entries: &Entries,
    service: &str,
    dc: &str,
    protocol: &str,
    nodes: &mut Map<String, Value>,
    targets: &mut Map<String, Value>,
    depth: u8,
) -> String {
    if protocol != "tcp" && depth < 8 {
        if let Some(splitter) = entry(entries, "service-splitter", service) {
            let name = format!("splitter:{service}.default.default");
            let mut splits = Vec::new();
            for s in splitter.get("Splits").and_then(Value::as_array).into_iter().flatten() {
                let dest = s.get("Service").and_then(Value::as_str).filter(|d| !d.is_empty()).unwrap_or(service);
                let subset = s.get("ServiceSubset").and_then(Value::as_str).unwrap_or("");
                let next = resolver(entries, dest, subset, dc, nodes, targets);
                splits.push(
                    json!({"Definition": s, "Weight": s.get("Weight").cloned().unwrap_or(json!(0)), "NextNode": next}),
                );
            }
            nodes.insert(
                name.clone(),
                json!({"Type": "splitter", "Name": format!("{service}.default.default"), "Splits": splits}),
            );
            return name;
        }
    }
    resolver(entries, service, "", dc, nodes, targets)
}

fn resolver(
    entries: &Entries,
    service: &str,
    subset: &str,
    dc: &str,
    nodes: &mut Map<String, Value>,
    targets: &mut Map<String, Value>,
) -> String {
    let def = entry(entries, "service-resolver", service);
    // A redirect sends the whole resolver elsewhere (one hop, as Consul allows chains of them).
    let (service, dc) = match def.and_then(|d| d.get("Redirect")).and_then(Value::as_object) {
        Some(r) => (
            r.get("Service").and_then(Value::as_str).unwrap_or(service).to_string(),
            r.get("Datacenter").and_then(Value::as_str).unwrap_or(dc).to_string(),
        ),
        None => (service.to_string(), dc.to_string()),
    };
    let def = entry(entries, "service-resolver", &service);
    let subset = if subset.is_empty() {
        def.and_then(|d| d.get("DefaultSubset")).and_then(Value::as_str).unwrap_or("").to_string()
    } else {
        subset.to_string()
    };
    let timeout = def.and_then(|d| d.get("ConnectTimeout")).cloned().unwrap_or(json!("5s"));
    let id = target_id(&service, &subset, &dc);
    let filter = def
        .and_then(|d| d.get("Subsets"))
        .and_then(|s| s.get(&subset))
        .and_then(|s| s.get("Filter"))
        .cloned()
        .unwrap_or(json!(""));
    targets.insert(
        id.clone(),
        json!({
            "ID": id, "Service": service, "ServiceSubset": subset, "Namespace": "default", "Partition": "default",
            "Datacenter": dc, "Subset": {"Filter": filter, "OnlyPassing": false},
            "ConnectTimeout": timeout, "SNI": format!("{}.default.{dc}.internal", if subset.is_empty() { service.clone() } else { format!("{subset}.{service}") }),
            "Name": format!("{}.default.{dc}.internal", if subset.is_empty() { service.clone() } else { format!("{subset}.{service}") }),
        }),
    );
    let name = format!("resolver:{id}");
    let mut failover = Value::Null;
    if let Some(f) = def.and_then(|d| d.get("Failover")).and_then(Value::as_object) {
        let spec = f.get(&subset).or_else(|| f.get("*"));
        if let Some(spec) = spec {
            let dcs: Vec<String> = spec
                .get("Datacenters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect();
            let fsvc = spec.get("Service").and_then(Value::as_str).unwrap_or(&service).to_string();
            let ids: Vec<String> = if dcs.is_empty() {
                vec![target_id(&fsvc, "", &dc)]
            } else {
                dcs.iter().map(|d| target_id(&fsvc, "", d)).collect()
            };
            failover = json!({"Targets": ids});
        }
    }
    nodes.insert(
        name.clone(),
        json!({"Type": "resolver", "Name": id, "Resolver": {"ConnectTimeout": timeout, "Default": def.is_none(), "Target": id, "Failover": failover}}),
    );
    name
}

/// The gateway's services (`/v1/catalog/gateway-services/:gateway`), from its ingress or
/// terminating gateway entry.
pub fn gateway_services(entries: &Entries, gateway: &str) -> Vec<Value> {
    let gw = json!({"Name": gateway, "Namespace": "default", "Partition": "default"});
    let svc = |name: &str| json!({"Name": name, "Namespace": "default", "Partition": "default"});
    let mut out = Vec::new();
    if let Some(e) = entry(entries, "ingress-gateway", gateway) {
        for l in e.get("Listeners").and_then(Value::as_array).into_iter().flatten() {
            for s in l.get("Services").and_then(Value::as_array).into_iter().flatten() {
                let name = s.get("Name").and_then(Value::as_str).unwrap_or("");
                out.push(json!({
                    "Gateway": gw, "Service": svc(name), "GatewayKind": "ingress-gateway",
                    "Port": l.get("Port").cloned().unwrap_or(json!(0)),
                    "Protocol": l.get("Protocol").cloned().unwrap_or(json!("tcp")),
                    "Hosts": s.get("Hosts").cloned().unwrap_or(Value::Null),
                    "FromWildcard": name == "*",
                }));
            }
        }
    }
    if let Some(e) = entry(entries, "terminating-gateway", gateway) {
        for s in e.get("Services").and_then(Value::as_array).into_iter().flatten() {
            let name = s.get("Name").and_then(Value::as_str).unwrap_or("");
            out.push(json!({
                "Gateway": gw, "Service": svc(name), "GatewayKind": "terminating-gateway",
                "CAFile": s.get("CAFile").cloned().unwrap_or(json!("")),
                "CertFile": s.get("CertFile").cloned().unwrap_or(json!("")),
                "KeyFile": s.get("KeyFile").cloned().unwrap_or(json!("")),
                "SNI": s.get("SNI").cloned().unwrap_or(json!("")),
                "FromWildcard": name == "*",
            }));
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CaError(pub String);

fn ca_err(e: impl std::fmt::Display) -> CaError {
    CaError(e.to_string())
}

fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(der);
    digest.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The defaults of the built-in (`consul`) provider.
pub fn default_ca_config() -> Value {
    json!({"LeafCertTTL": "72h", "RotationPeriod": "2160h", "IntermediateCertTTL": "8760h",
           "PrivateKeyType": "ec", "PrivateKeyBits": 256})
}

/// A new CA: a root certificate for `trust_domain` (`<cluster-id>.consul`), with its key, in the
/// shape kept in the state store.
pub fn new_ca(cluster_id: &str, config: Value, now: time::OffsetDateTime) -> Result<Value, CaError> {
    let key = rcgen::KeyPair::generate().map_err(ca_err)?;
    let trust_domain = format!("{cluster_id}.consul");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(ca_err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("Agent Connect CA {}", &cluster_id[..8.min(cluster_id.len())]));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.subject_alt_names.push(rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from(format!("spiffe://{trust_domain}")).map_err(ca_err)?,
    ));
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(3650);
    let cert = params.self_signed(&key).map_err(ca_err)?;
    let der = cert.der().to_vec();
    let id = fingerprint(&der);
    let root = json!({
        "ID": id, "Name": "Agent CA Primary Cert", "SerialNumber": 1, "SigningKeyID": id,
        "ExternalTrustDomain": cluster_id, "NotBefore": rfc3339(params.not_before), "NotAfter": rfc3339(params.not_after),
        "RootCert": cert.pem(), "IntermediateCerts": null, "Active": true, "PrivateKeyType": "ec", "PrivateKeyBits": 256,
    });
    Ok(json!({
        "ClusterID": cluster_id, "TrustDomain": trust_domain, "Provider": "consul", "Config": config,
        "Roots": [root], "SigningKeyPem": key.serialize_pem(), "CreateIndex": 0,
    }))
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    crate::acl::rfc3339((t.unix_timestamp().max(0) as u64) * 1000)
}

/// `/v1/connect/ca/roots`: the roots without the signing key.
pub fn roots_view(ca: &Value, index: u64) -> Value {
    json!({"ActiveRootID": ca["Roots"][0]["ID"], "TrustDomain": ca["TrustDomain"], "Roots": ca["Roots"], "QueryMeta": null, "Index": index})
}

/// `/v1/connect/ca/configuration`.
pub fn config_view(ca: &Value) -> Value {
    json!({"Provider": ca["Provider"], "Config": ca["Config"], "State": null, "ForceWithoutCrossSigning": false,
           "CreateIndex": ca["CreateIndex"], "ModifyIndex": ca["ModifyIndex"], "ClusterID": ca["ClusterID"]})
}

/// A leaf certificate for `service` in `dc`, signed by the active root, valid for the configured
/// `LeafCertTTL`: Consul's SPIFFE ID `spiffe://<trust-domain>/ns/default/dc/<dc>/svc/<service>`.
pub fn leaf(ca: &Value, service: &str, dc: &str, now: time::OffsetDateTime) -> Result<Value, CaError> {
    let root_pem = ca["Roots"][0]["RootCert"].as_str().ok_or_else(|| ca_err("the CA has no root"))?;
    let key_pem = ca["SigningKeyPem"].as_str().ok_or_else(|| ca_err("the CA has no signing key"))?;
    let ca_key = rcgen::KeyPair::from_pem(key_pem).map_err(ca_err)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(root_pem, ca_key).map_err(ca_err)?;
    let ttl = ca["Config"]["LeafCertTTL"]
        .as_str()
        .and_then(|t| api::duration::parse(t).ok())
        .unwrap_or(std::time::Duration::from_secs(72 * 3600));
    let trust_domain = ca["TrustDomain"].as_str().unwrap_or("consul");
    let uri = format!("spiffe://{trust_domain}/ns/default/dc/{dc}/svc/{service}");
    let mut params =
        rcgen::CertificateParams::new(vec![format!("{service}.svc.default.{}", trust_domain)]).map_err(ca_err)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, service.to_string());
    params
        .subject_alt_names
        .push(rcgen::SanType::URI(rcgen::string::Ia5String::try_from(uri.clone()).map_err(ca_err)?));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
        rcgen::KeyUsagePurpose::KeyAgreement,
    ];
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let serial: u64 = rand::random::<u64>() >> 1;
    params.serial_number = Some(rcgen::SerialNumber::from(serial.to_be_bytes().to_vec()));
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::seconds(ttl.as_secs() as i64);
    let key = rcgen::KeyPair::generate().map_err(ca_err)?;
    let cert = params.signed_by(&key, &issuer).map_err(ca_err)?;
    let serial_hex = serial.to_be_bytes().iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    Ok(json!({
        "SerialNumber": serial_hex, "CertPEM": cert.pem(), "PrivateKeyPEM": key.serialize_pem(),
        "Service": service, "ServiceURI": uri, "Kind": "", "Namespace": "default", "Partition": "default",
        "ValidAfter": rfc3339(params.not_before), "ValidBefore": rfc3339(params.not_after),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: Vec<Value>) -> Entries {
        let mut e: Entries = BTreeMap::new();
        for v in list {
            let kind = v["Kind"].as_str().unwrap_or_default().to_string();
            let name = v["Name"].as_str().unwrap_or_default().to_string();
            e.entry(kind).or_default().insert(name, v);
        }
        e
    }

    #[test]
    fn intentions_match_by_precedence() {
        let e = entries(vec![
            json!({"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Action": "allow"}, {"Name": "*", "Action": "deny"}]}),
            json!({"Kind": "service-intentions", "Name": "*", "Sources": [{"Name": "*", "Action": "allow"}]}),
        ]);
        assert!(allowed(&e, "web", "db", false));
        assert!(!allowed(&e, "api", "db", true), "the wildcard source on db denies");
        assert!(allowed(&e, "api", "cache", false), "*→* allows");
        let m = matching(&e, true, "db");
        assert_eq!(m[0]["SourceName"], "web");
        assert_eq!(m[0]["Precedence"], 9);
        let removed = upsert_source(e["service-intentions"].get("db"), "db", "web", None).expect("entry remains");
        assert_eq!(removed["Sources"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn a_chain_goes_router_splitter_resolver() {
        let e = entries(vec![
            json!({"Kind": "service-defaults", "Name": "web", "Protocol": "http"}),
            json!({"Kind": "service-splitter", "Name": "web", "Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}]}),
            json!({"Kind": "service-resolver", "Name": "web", "Subsets": {"v1": {"Filter": "Service.Meta.v == 1"}, "v2": {"Filter": "Service.Meta.v == 2"}}}),
        ]);
        let c = discovery_chain(&e, "web", "dc1", None);
        assert_eq!(c["Chain"]["Protocol"], "http");
        assert_eq!(c["Chain"]["StartNode"], "splitter:web.default.default");
        assert!(c["Chain"]["Targets"].get("v1.web.default.default.dc1").is_some());
        let plain = discovery_chain(&BTreeMap::new(), "api", "dc1", None);
        assert_eq!(plain["Chain"]["StartNode"], "resolver:api.default.default.dc1");
        assert_eq!(plain["Chain"]["Default"], true);
    }

    #[test]
    fn the_ca_signs_leaves_with_spiffe_ids() {
        let now = time::OffsetDateTime::now_utc();
        let ca = new_ca("0b7a1a5e-1111-2222-3333-444455556666", default_ca_config(), now).expect("ca");
        assert!(ca["Roots"][0]["RootCert"].as_str().is_some_and(|p| p.starts_with("-----BEGIN CERTIFICATE-----")));
        let l = leaf(&ca, "web", "dc1", now).expect("leaf");
        assert_eq!(l["ServiceURI"], "spiffe://0b7a1a5e-1111-2222-3333-444455556666.consul/ns/default/dc/dc1/svc/web");
        assert!(l["PrivateKeyPEM"].as_str().is_some_and(|p| p.contains("PRIVATE KEY")));
        assert!(roots_view(&ca, 5)["Roots"][0].get("SigningKeyPem").is_none());
    }
}
