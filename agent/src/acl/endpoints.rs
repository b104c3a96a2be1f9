//! Which permission each HTTP endpoint needs, in one table (Consul's API_ENDPOINTS.tsv). An
//! endpoint that answers one named object needs its permission up front (403 otherwise);
//! one that answers a list is filtered by its handler; a few decide in the handler because the
//! name is in the body (registrations) or in the stored object (sessions).

use super::{Access, Resource};
use crate::http::routes::Endpoint;

#[derive(Debug, Clone, PartialEq)]
pub enum Need {
    /// No ACL check (status, datacenters, the UI's files).
    Nothing,
    /// One permission, checked before the handler runs.
    One(Resource, String, Access),
    /// ACL management (`acl = "write"`): snapshots, agent tokens.
    Management,
    /// The handler filters what it answers (lists) or checks what the body names.
    InHandler,
}

/// What `endpoint` needs on an agent named `node`.
pub fn need(endpoint: &Endpoint, node: &str, recurse_or_keys: bool) -> Need {
    use Endpoint::*;
    use Need::*;
    let one = |r: Resource, name: &str, a: Access| One(r, name.to_string(), a);
    match endpoint {
        KvGet(k) if !recurse_or_keys => one(Resource::Key, k, Access::Read),
        KvGet(_) => InHandler,
        KvPut(k) => one(Resource::Key, k, Access::Write),
        // A recursive delete needs write on everything under the prefix: decided in the handler.
        KvDelete(k) if !recurse_or_keys => one(Resource::Key, k, Access::Write),
        KvDelete(_) | Txn => InHandler,
        SessionCreate | SessionDestroy(_) | SessionRenew(_) => InHandler,
        SessionInfo(_) | SessionList => InHandler,
        SessionNode(n) => one(Resource::Session, n, Access::Read),
        CatalogRegister | CatalogDeregister => InHandler,
        CatalogDatacenters | CoordinateDatacenters => Nothing,
        CatalogNodes | CatalogServices | CatalogService(_) | CatalogConnect(_) | CatalogGatewayServices(_) => InHandler,
        CatalogNode(n) | CatalogNodeServices(n) => one(Resource::Node, n, Access::Read),
        HealthNode(n) => one(Resource::Node, n, Access::Read),
        HealthConnect(_) | HealthIngress(_) | HealthChecks(_) | HealthService(_) | HealthState(_) => InHandler,
        AgentSelf | AgentMetrics | AgentMonitor => one(Resource::Agent, node, Access::Read),
        AgentReload | AgentJoin(_) | AgentLeave => one(Resource::Agent, node, Access::Write),
        AgentForceLeave(_) => one(Resource::Operator, "", Access::Write),
        AgentHost => one(Resource::Operator, "", Access::Read),
        AgentMaintenance => one(Resource::Node, node, Access::Write),
        AgentMembers | AgentServices | AgentChecks => InHandler,
        AgentService(_) | AgentHealthByName(_) | AgentHealthById(_) => InHandler,
        AgentServiceRegister | AgentServiceDeregister(_) | AgentServiceMaintenance(_) => InHandler,
        AgentCheckRegister | AgentCheckDeregister(_) => InHandler,
        AgentCheckPass(_) | AgentCheckWarn(_) | AgentCheckFail(_) | AgentCheckUpdate(_) => InHandler,
        AgentVersion => Nothing,
        AgentToken(_) => Management,
        EventFire(name) => one(Resource::Event, name, Access::Write),
        EventList => InHandler,
        StatusLeader | StatusPeers => Nothing,
        CoordinateNodes => InHandler,
        CoordinateNode(n) => one(Resource::Node, n, Access::Read),
        CoordinateUpdate => InHandler,
        OperatorRaftConfiguration | OperatorAutopilotHealth | OperatorUsage => {
            one(Resource::Operator, "", Access::Read)
        }
        OperatorRaftPeer | OperatorRaftTransferLeader => one(Resource::Operator, "", Access::Write),
        // GET reads, PUT writes: decided in the handler, which knows the method.
        OperatorAutopilotConfiguration | OperatorKeyring => InHandler,
        SnapshotSave | SnapshotRestore => Management,
        QueryList | QueryCreate | QueryGet(_) | QueryUpdate(_) | QueryDelete(_) | QueryExecute(_) | QueryExplain(_) => {
            InHandler
        }
        InternalUiServices | InternalUiNodes | InternalUiNode(_) => InHandler,
        Ui(_) | Index | Options(_) => Nothing,
        Acl(_) => InHandler,
        ConfigApply | ConfigList(_) | ConfigGet(..) | ConfigDelete(..) => InHandler,
        IntentionList | IntentionExact | IntentionCheck | IntentionMatch | CaConfiguration => InHandler,
        CaRoots | AgentCaRoots => Nothing,
        AgentCaLeaf(s) => one(Resource::Service, s, Access::Write),
        DiscoveryChain(s) => one(Resource::Service, s, Access::Read),
    }
}
