//! The one route table: every HTTP path and method the agent serves, parsed into a typed
//! [`Endpoint`] before any handler runs. A path we know with a method it does not take is 405.

use super::HttpError;
use http::Method;

#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    KvGet(String),
    KvPut(String),
    KvDelete(String),
    Txn,
    SessionCreate,
    SessionDestroy(String),
    SessionRenew(String),
    SessionInfo(String),
    SessionNode(String),
    SessionList,
    CatalogRegister,
    CatalogDeregister,
    CatalogDatacenters,
    CatalogNodes,
    CatalogServices,
    CatalogService(String),
    CatalogConnect(String),
    CatalogGatewayServices(String),
    HealthConnect(String),
    HealthIngress(String),
    CatalogNode(String),
    CatalogNodeServices(String),
    HealthNode(String),
    HealthChecks(String),
    HealthService(String),
    HealthState(String),
    AgentSelf,
    AgentMembers,
    AgentServices,
    AgentService(String),
    AgentChecks,
    AgentHealthByName(String),
    AgentHealthById(String),
    AgentReload,
    AgentMaintenance,
    AgentJoin(String),
    AgentLeave,
    AgentForceLeave(String),
    AgentServiceRegister,
    AgentServiceDeregister(String),
    AgentServiceMaintenance(String),
    AgentCheckRegister,
    AgentCheckDeregister(String),
    AgentCheckPass(String),
    AgentCheckWarn(String),
    AgentCheckFail(String),
    AgentCheckUpdate(String),
    AgentMetrics,
    AgentMonitor,
    AgentHost,
    AgentVersion,
    AgentToken(String),
    /// `PUT /v1/config`.
    ConfigApply,
    ConfigList(String),
    ConfigGet(String, String),
    ConfigDelete(String, String),
    IntentionList,
    IntentionExact,
    IntentionCheck,
    IntentionMatch,
    CaRoots,
    CaConfiguration,
    AgentCaRoots,
    AgentCaLeaf(String),
    DiscoveryChain(String),
    EventFire(String),
    EventList,
    StatusLeader,
    StatusPeers,
    CoordinateDatacenters,
    CoordinateNodes,
    CoordinateNode(String),
    CoordinateUpdate,
    OperatorRaftConfiguration,
    OperatorRaftPeer,
    OperatorAutopilotConfiguration,
    OperatorAutopilotHealth,
    OperatorUsage,
    OperatorKeyring,
    OperatorRaftTransferLeader,
    SnapshotSave,
    SnapshotRestore,
    QueryList,
    QueryCreate,
    QueryGet(String),
    QueryUpdate(String),
    QueryDelete(String),
    QueryExecute(String),
    QueryExplain(String),
    InternalUiServices,
    InternalUiNodes,
    InternalUiNode(String),
    Ui(String),
    Index,
    /// `OPTIONS` on a known path: 200 with the `Allow` header, as Consul answers it (and no
    /// CORS grant, so a browser's preflight goes no further).
    Options(String),
    /// `/v1/acl/*`, `/v1/internal/acl/authorize`.
    Acl(AclEndpoint),
}

#[derive(Debug, Clone, PartialEq)]
pub enum AclEndpoint {
    Bootstrap,
    Login,
    Logout,
    Replication,
    Policies,
    PolicyCreate,
    PolicyRead(String),
    PolicyReadByName(String),
    PolicyUpdate(String),
    PolicyDelete(String),
    Roles,
    RoleCreate,
    RoleRead(String),
    RoleReadByName(String),
    RoleUpdate(String),
    RoleDelete(String),
    BindingRules,
    BindingRuleCreate,
    BindingRuleRead(String),
    BindingRuleUpdate(String),
    BindingRuleDelete(String),
    AuthMethods,
    AuthMethodCreate,
    AuthMethodRead(String),
    AuthMethodUpdate(String),
    AuthMethodDelete(String),
    Tokens,
    TokenCreate,
    TokenSelf,
    TokenRead(String),
    TokenUpdate(String),
    TokenDelete(String),
    TokenClone(String),
    TemplatedPolicies,
    TemplatedPolicyRead(String),
    TemplatedPolicyPreview(String),
    Authorize,
}

/// `/v1/acl/...` (the part after `/v1/acl`), as Consul's http_register.go lists them.
fn acl_route(m: &str, rest: &str) -> Option<Result<AclEndpoint, (&'static [&'static str], ())>> {
    use AclEndpoint::*;
    let exact: &[(&str, &[&str], AclEndpoint)] = &[
        ("/bootstrap", &["PUT"], Bootstrap),
        ("/login", &["POST"], Login),
        ("/logout", &["POST"], Logout),
        ("/replication", &["GET"], Replication),
        ("/policies", &["GET"], Policies),
        ("/policy", &["PUT"], PolicyCreate),
        ("/roles", &["GET"], Roles),
        ("/role", &["PUT"], RoleCreate),
        ("/binding-rules", &["GET"], BindingRules),
        ("/binding-rule", &["PUT"], BindingRuleCreate),
        ("/auth-methods", &["GET"], AuthMethods),
        ("/auth-method", &["PUT"], AuthMethodCreate),
        ("/tokens", &["GET"], Tokens),
        ("/token", &["PUT"], TokenCreate),
        ("/token/self", &["GET"], TokenSelf),
        ("/templated-policies", &["GET"], TemplatedPolicies),
    ];
    for (p, verbs, e) in exact {
        if rest == *p {
            return Some(if verbs.contains(&m) { Ok(e.clone()) } else { Err((verbs, ())) });
        }
    }
    type Make = fn(String) -> AclEndpoint;
    let by_name: &[(&str, &[&str], Make)] = &[
        ("/policy/name/", &["GET"], PolicyReadByName),
        ("/role/name/", &["GET"], RoleReadByName),
        ("/templated-policy/name/", &["GET"], TemplatedPolicyRead),
        ("/templated-policy/preview/", &["POST"], TemplatedPolicyPreview),
    ];
    for (p, verbs, make) in by_name {
        if let Some(param) = rest.strip_prefix(p) {
            return Some(if verbs.contains(&m) { Ok(make(param.to_string())) } else { Err((verbs, ())) });
        }
    }
    let crud: &[(&str, Make, Make, Make)] = &[
        ("/policy/", PolicyRead, PolicyUpdate, PolicyDelete),
        ("/role/", RoleRead, RoleUpdate, RoleDelete),
        ("/binding-rule/", BindingRuleRead, BindingRuleUpdate, BindingRuleDelete),
        ("/auth-method/", AuthMethodRead, AuthMethodUpdate, AuthMethodDelete),
        ("/token/", TokenRead, TokenUpdate, TokenDelete),
    ];
    for (p, read, update, delete) in crud {
        if let Some(param) = rest.strip_prefix(p) {
            if *p == "/token/" {
                if let Some(id) = param.strip_suffix("/clone") {
                    return Some(if m == "PUT" { Ok(TokenClone(id.to_string())) } else { Err((&["PUT"], ())) });
                }
            }
            return Some(match m {
                "GET" => Ok(read(param.to_string())),
                "PUT" => Ok(update(param.to_string())),
                "DELETE" => Ok(delete(param.to_string())),
                _ => Err((&["GET", "PUT", "DELETE"], ())),
            });
        }
    }
    None
}

/// Matches `path` (already percent-decoded) and `method` to an endpoint.
pub fn route(method: &Method, path: &str) -> Result<Endpoint, HttpError> {
    use Endpoint::*;
    let m = method.as_str();
    // Consul lists OPTIONS first among a path's methods, then the ones it registered.
    let not_allowed = |verbs: &[&str]| {
        let allow = std::iter::once("OPTIONS").chain(verbs.iter().copied()).collect::<Vec<_>>().join(",");
        if m == "OPTIONS" {
            Ok(Options(allow))
        } else {
            Err(HttpError::MethodNotAllowed { method: m.to_string(), allow })
        }
    };
    // One arm per path family; each lists the methods it takes.
    macro_rules! methods {
        ($($verb:literal => $e:expr),+ $(,)?) => {
            match m { $($verb => Ok($e),)+ _ => not_allowed(&[$($verb),+]) }
        };
    }
    let rest = |prefix: &str| path.strip_prefix(prefix).map(str::to_string);
    if path == "/" {
        return methods!("GET" => Index);
    }
    if path == "/ui" || path.starts_with("/ui/") {
        return methods!("GET" => Ui(path.trim_start_matches("/ui").to_string()));
    }
    if let Some(key) = rest("/v1/kv/").or_else(|| (path == "/v1/kv").then(String::new)) {
        return methods!("GET" => KvGet(key.clone()), "PUT" => KvPut(key.clone()), "DELETE" => KvDelete(key));
    }
    if let Some(rest) = path.strip_prefix("/v1/acl") {
        return match acl_route(m, rest) {
            Some(Ok(e)) => Ok(Acl(e)),
            Some(Err((verbs, ()))) => not_allowed(verbs),
            None => Err(HttpError::NotFound(String::new())),
        };
    }
    if path == "/v1/query" || path == "/v1/query/" {
        return methods!("GET" => QueryList, "POST" => QueryCreate);
    }
    if let Some(rest) = path.strip_prefix("/v1/query/").filter(|r| !r.is_empty()) {
        return match rest.rsplit_once('/') {
            Some((id, "execute")) => methods!("GET" => QueryExecute(id.to_string())),
            Some((id, "explain")) => methods!("GET" => QueryExplain(id.to_string())),
            _ => {
                methods!("GET" => QueryGet(rest.to_string()), "PUT" => QueryUpdate(rest.to_string()), "DELETE" => QueryDelete(rest.to_string()))
            }
        };
    }
    if path == "/v1/config" {
        return methods!("PUT" => ConfigApply);
    }
    if let Some(rest) = path.strip_prefix("/v1/config/") {
        return match rest.split_once('/') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {
                methods!("GET" => ConfigGet(kind.to_string(), name.to_string()), "DELETE" => ConfigDelete(kind.to_string(), name.to_string()))
            }
            None if !rest.is_empty() => methods!("GET" => ConfigList(rest.to_string())),
            _ => Err(HttpError::BadRequest(format!("Missing kind or name in path {path}"))),
        };
    }
    match path {
        "/v1/connect/intentions" => return methods!("GET" => IntentionList),
        "/v1/connect/intentions/exact" => {
            return methods!("GET" => IntentionExact, "PUT" => IntentionExact, "DELETE" => IntentionExact)
        }
        "/v1/connect/intentions/check" => return methods!("GET" => IntentionCheck),
        "/v1/connect/intentions/match" => return methods!("GET" => IntentionMatch),
        "/v1/connect/ca/roots" => return methods!("GET" => CaRoots),
        "/v1/connect/ca/configuration" => return methods!("GET" => CaConfiguration, "PUT" => CaConfiguration),
        "/v1/agent/connect/ca/roots" => return methods!("GET" => AgentCaRoots),
        _ => {}
    }
    if let Some(service) = path.strip_prefix("/v1/agent/connect/ca/leaf/").filter(|s| !s.is_empty()) {
        return methods!("GET" => AgentCaLeaf(service.to_string()));
    }
    if let Some(service) = path.strip_prefix("/v1/discovery-chain/").filter(|s| !s.is_empty()) {
        return methods!("GET" => DiscoveryChain(service.to_string()), "POST" => DiscoveryChain(service.to_string()));
    }
    if path == "/v1/internal/acl/authorize" {
        return methods!("POST" => Acl(AclEndpoint::Authorize));
    }
    let p = path.trim_end_matches('/');
    // Paths with a trailing parameter.
    let param_routes: &[(&str, &[&str], fn(String) -> Endpoint)] = &[
        ("/v1/session/destroy/", &["PUT"], SessionDestroy),
        ("/v1/session/renew/", &["PUT"], SessionRenew),
        ("/v1/session/info/", &["GET"], SessionInfo),
        ("/v1/session/node/", &["GET"], SessionNode),
        ("/v1/catalog/service/", &["GET"], CatalogService),
        ("/v1/catalog/connect/", &["GET"], CatalogConnect),
        ("/v1/catalog/gateway-services/", &["GET"], CatalogGatewayServices),
        ("/v1/catalog/node/", &["GET"], CatalogNode),
        ("/v1/catalog/node-services/", &["GET"], CatalogNodeServices),
        ("/v1/health/node/", &["GET"], HealthNode),
        ("/v1/health/checks/", &["GET"], HealthChecks),
        ("/v1/health/service/", &["GET"], HealthService),
        ("/v1/health/connect/", &["GET"], HealthConnect),
        ("/v1/health/ingress/", &["GET"], HealthIngress),
        ("/v1/health/state/", &["GET"], HealthState),
        ("/v1/agent/service/deregister/", &["PUT"], AgentServiceDeregister),
        ("/v1/agent/service/maintenance/", &["PUT"], AgentServiceMaintenance),
        ("/v1/agent/service/", &["GET"], AgentService),
        ("/v1/agent/health/service/name/", &["GET"], AgentHealthByName),
        ("/v1/agent/health/service/id/", &["GET"], AgentHealthById),
        ("/v1/agent/join/", &["PUT"], AgentJoin),
        ("/v1/agent/force-leave/", &["PUT"], AgentForceLeave),
        ("/v1/agent/check/deregister/", &["PUT"], AgentCheckDeregister),
        ("/v1/agent/check/pass/", &["PUT"], AgentCheckPass),
        ("/v1/agent/check/warn/", &["PUT"], AgentCheckWarn),
        ("/v1/agent/check/fail/", &["PUT"], AgentCheckFail),
        ("/v1/agent/check/update/", &["PUT"], AgentCheckUpdate),
        ("/v1/agent/token/", &["PUT"], AgentToken),
        ("/v1/event/fire/", &["PUT"], EventFire),
        ("/v1/coordinate/node/", &["GET"], CoordinateNode),
        ("/v1/internal/ui/node/", &["GET"], InternalUiNode),
    ];
    let exact: &[(&str, &[&str], Endpoint)] = &[
        ("/v1/txn", &["PUT"], Txn),
        ("/v1/session/create", &["PUT"], SessionCreate),
        ("/v1/session/list", &["GET"], SessionList),
        ("/v1/catalog/register", &["PUT"], CatalogRegister),
        ("/v1/catalog/deregister", &["PUT"], CatalogDeregister),
        ("/v1/catalog/datacenters", &["GET"], CatalogDatacenters),
        ("/v1/catalog/nodes", &["GET"], CatalogNodes),
        ("/v1/catalog/services", &["GET"], CatalogServices),
        ("/v1/agent/self", &["GET"], AgentSelf),
        ("/v1/agent/members", &["GET"], AgentMembers),
        ("/v1/agent/services", &["GET"], AgentServices),
        ("/v1/agent/checks", &["GET"], AgentChecks),
        ("/v1/agent/reload", &["PUT"], AgentReload),
        ("/v1/agent/maintenance", &["PUT"], AgentMaintenance),
        ("/v1/agent/leave", &["PUT"], AgentLeave),
        ("/v1/agent/service/register", &["PUT"], AgentServiceRegister),
        ("/v1/agent/check/register", &["PUT"], AgentCheckRegister),
        ("/v1/agent/metrics", &["GET"], AgentMetrics),
        ("/v1/agent/monitor", &["GET"], AgentMonitor),
        ("/v1/agent/host", &["GET"], AgentHost),
        ("/v1/agent/version", &["GET"], AgentVersion),
        ("/v1/event/list", &["GET"], EventList),
        ("/v1/status/leader", &["GET"], StatusLeader),
        ("/v1/status/peers", &["GET"], StatusPeers),
        ("/v1/coordinate/datacenters", &["GET"], CoordinateDatacenters),
        ("/v1/coordinate/nodes", &["GET"], CoordinateNodes),
        ("/v1/coordinate/update", &["PUT"], CoordinateUpdate),
        ("/v1/operator/raft/configuration", &["GET"], OperatorRaftConfiguration),
        ("/v1/operator/raft/peer", &["DELETE"], OperatorRaftPeer),
        ("/v1/operator/autopilot/configuration", &["GET", "PUT"], OperatorAutopilotConfiguration),
        ("/v1/operator/autopilot/health", &["GET"], OperatorAutopilotHealth),
        ("/v1/operator/usage", &["GET"], OperatorUsage),
        ("/v1/operator/keyring", &["GET", "POST", "PUT", "DELETE"], OperatorKeyring),
        ("/v1/operator/raft/transfer-leader", &["POST", "PUT"], OperatorRaftTransferLeader),
        ("/v1/internal/ui/services", &["GET"], InternalUiServices),
        ("/v1/internal/ui/nodes", &["GET"], InternalUiNodes),
    ];
    if p == "/v1/snapshot" {
        return methods!("GET" => SnapshotSave, "PUT" => SnapshotRestore);
    }
    for (route, verbs, e) in exact {
        if p == *route {
            return if verbs.contains(&m) { Ok(e.clone()) } else { not_allowed(verbs) };
        }
    }
    for (prefix, verbs, make) in param_routes {
        if let Some(param) = path.strip_prefix(prefix) {
            // `/v1/agent/service/` is also the prefix of register/deregister/maintenance, which
            // are matched above; an empty parameter is a missing one.
            return if !verbs.contains(&m) {
                not_allowed(verbs)
            } else if param.is_empty() {
                Err(HttpError::BadRequest(format!("Missing parameter in path {path}")))
            } else {
                Ok(make(param.to_string()))
            };
        }
    }
    Err(HttpError::NotFound(String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_with_parameters_and_methods() {
        let cases: &[(&str, &str, Result<Endpoint, u16>)] = &[
            ("GET", "/v1/kv/a/b/c", Ok(Endpoint::KvGet("a/b/c".into()))),
            ("PUT", "/v1/kv/a", Ok(Endpoint::KvPut("a".into()))),
            ("PATCH", "/v1/kv/a", Err(405)),
            ("POST", "/v1/kv/a", Err(405)),
            ("OPTIONS", "/v1/kv/a", Ok(Endpoint::Options("OPTIONS,GET,PUT,DELETE".into()))),
            ("OPTIONS", "/v1/agent/service/register", Ok(Endpoint::Options("OPTIONS,PUT".into()))),
            ("GET", "/v1/kv/", Ok(Endpoint::KvGet("".into()))),
            ("GET", "/v1/health/service/web", Ok(Endpoint::HealthService("web".into()))),
            ("PUT", "/v1/agent/service/register", Ok(Endpoint::AgentServiceRegister)),
            ("GET", "/v1/agent/service/web-1", Ok(Endpoint::AgentService("web-1".into()))),
            ("PUT", "/v1/agent/service/deregister/web-1", Ok(Endpoint::AgentServiceDeregister("web-1".into()))),
            ("GET", "/v1/agent/service/register", Err(405)),
            ("PUT", "/v1/session/destroy/", Err(400)),
            ("GET", "/v1/status/leader", Ok(Endpoint::StatusLeader)),
            ("DELETE", "/v1/status/leader", Err(405)),
            ("GET", "/v1/nope", Err(404)),
            ("GET", "/ui/services", Ok(Endpoint::Ui("/services".into()))),
            ("GET", "/ui/app.js", Ok(Endpoint::Ui("/app.js".into()))),
            ("GET", "/ui", Ok(Endpoint::Ui("".into()))),
            ("GET", "/v1/acl/tokens", Ok(Endpoint::Acl(AclEndpoint::Tokens))),
            ("PUT", "/v1/acl/token/abc/clone", Ok(Endpoint::Acl(AclEndpoint::TokenClone("abc".into())))),
            ("DELETE", "/v1/acl/token/abc", Ok(Endpoint::Acl(AclEndpoint::TokenDelete("abc".into())))),
            ("GET", "/v1/acl/token/self", Ok(Endpoint::Acl(AclEndpoint::TokenSelf))),
            (
                "GET",
                "/v1/acl/policy/name/global-management",
                Ok(Endpoint::Acl(AclEndpoint::PolicyReadByName("global-management".into()))),
            ),
            (
                "GET",
                "/v1/acl/templated-policy/name/builtin/service",
                Ok(Endpoint::Acl(AclEndpoint::TemplatedPolicyRead("builtin/service".into()))),
            ),
            ("POST", "/v1/acl/policy", Err(405)),
            ("GET", "/v1/acl/nope", Err(404)),
        ];
        for (m, p, want) in cases {
            let got = route(&m.parse().expect("method"), p).map_err(|e| e.status());
            assert_eq!(&got, want, "{m} {p}");
        }
    }
}
