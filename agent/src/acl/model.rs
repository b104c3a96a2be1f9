//! ACL objects as Consul stores and serves them (Consul's JSON names), and the ACL tables of the
//! state store. Pure data: the state store owns the tables, the `acl` layer interprets them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const GLOBAL_MANAGEMENT_ID: &str = "00000000-0000-0000-0000-000000000001";
pub const GLOBAL_READ_ONLY_ID: &str = "00000000-0000-0000-0000-000000000002";
pub const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";
pub const ANONYMOUS_SECRET: &str = "anonymous";
/// IDs Consul reserves for its built-in objects.
pub const RESERVED_PREFIX: &str = "00000000-0000-0000-0000-0000000000";

/// A link to a policy or role, stored by ID; the name is filled in on every read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Link {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceIdentity {
    #[serde(default)]
    pub service_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeIdentity {
    #[serde(default)]
    pub node_name: String,
    #[serde(default)]
    pub datacenter: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TemplatedPolicy {
    #[serde(default)]
    pub template_name: String,
    /// Consul serves the variables with lowercase keys (`{"name": "web"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_variables: Option<TemplateVariables>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TemplateVariables {
    #[serde(default, alias = "Name")]
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Token {
    #[serde(rename = "AccessorID")]
    pub accessor_id: String,
    #[serde(rename = "SecretID")]
    pub secret_id: String,
    pub description: String,
    #[serde(default)]
    pub policies: Vec<Link>,
    #[serde(default)]
    pub roles: Vec<Link>,
    #[serde(default)]
    pub service_identities: Vec<ServiceIdentity>,
    #[serde(default)]
    pub node_identities: Vec<NodeIdentity>,
    #[serde(default)]
    pub templated_policies: Vec<TemplatedPolicy>,
    #[serde(default)]
    pub local: bool,
    #[serde(default)]
    pub auth_method: String,
    /// RFC 3339; empty for tokens that do not expire.
    #[serde(default)]
    pub expiration_time: String,
    /// Milliseconds since the epoch of `expiration_time`, for comparisons (0: never).
    #[serde(default)]
    pub expires_ms: u64,
    pub create_time: String,
    pub hash: String,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Policy {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub description: String,
    pub rules: String,
    #[serde(default)]
    pub datacenters: Vec<String>,
    pub hash: String,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Role {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub policies: Vec<Link>,
    #[serde(default)]
    pub service_identities: Vec<ServiceIdentity>,
    #[serde(default)]
    pub node_identities: Vec<NodeIdentity>,
    #[serde(default)]
    pub templated_policies: Vec<TemplatedPolicy>,
    pub hash: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// The ACL tables of the state store (and of its snapshots).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tables {
    /// By AccessorID.
    pub tokens: BTreeMap<String, Token>,
    /// SecretID → AccessorID.
    pub secrets: BTreeMap<String, String>,
    /// By ID.
    pub policies: BTreeMap<String, Policy>,
    /// By ID.
    pub roles: BTreeMap<String, Role>,
    /// By name: stored as given (Consul's JSON), validated on write.
    pub auth_methods: BTreeMap<String, serde_json::Value>,
    /// By ID.
    pub binding_rules: BTreeMap<String, serde_json::Value>,
    /// The Raft index of the bootstrap (0: not yet bootstrapped).
    pub bootstrap_index: u64,
    /// The last index that changed any ACL table.
    pub index: u64,
}

impl Tables {
    pub fn token_by_secret(&self, secret: &str) -> Option<&Token> {
        self.secrets.get(secret).and_then(|a| self.tokens.get(a))
    }

    pub fn policy_by_name(&self, name: &str) -> Option<&Policy> {
        self.policies.values().find(|p| p.name == name)
    }

    pub fn role_by_name(&self, name: &str) -> Option<&Role> {
        self.roles.values().find(|r| r.name == name)
    }

    /// Links with their current names (a renamed policy shows its new name; a deleted one is
    /// dropped, as Consul drops dangling links on read).
    pub fn fill_policy_links(&self, links: &[Link]) -> Vec<Link> {
        links
            .iter()
            .filter_map(|l| self.policies.get(&l.id).map(|p| Link { id: p.id.clone(), name: p.name.clone() }))
            .collect()
    }

    pub fn fill_role_links(&self, links: &[Link]) -> Vec<Link> {
        links
            .iter()
            .filter_map(|l| self.roles.get(&l.id).map(|r| Link { id: r.id.clone(), name: r.name.clone() }))
            .collect()
    }

    /// A token as served: links named.
    pub fn token_view(&self, t: &Token) -> Token {
        Token { policies: self.fill_policy_links(&t.policies), roles: self.fill_role_links(&t.roles), ..t.clone() }
    }

    pub fn role_view(&self, r: &Role) -> Role {
        Role { policies: self.fill_policy_links(&r.policies), ..r.clone() }
    }
}

/// A Raft command on the ACL tables. Append-only, as `structs::Command`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AclCommand {
    /// Creates or replaces a token (by AccessorID). A SecretID held by another token is refused.
    TokenSet(Token),
    TokenDelete {
        accessor_id: String,
    },
    /// Creates or replaces a policy (by ID). A name held by another policy is refused.
    PolicySet(Policy),
    PolicyDelete {
        id: String,
    },
    RoleSet(Role),
    RoleDelete {
        id: String,
    },
    AuthMethodSet {
        name: String,
        method: serde_json::Value,
    },
    AuthMethodDelete {
        name: String,
    },
    BindingRuleSet {
        id: String,
        rule: serde_json::Value,
    },
    BindingRuleDelete {
        id: String,
    },
    /// `PUT /v1/acl/bootstrap`: only if not bootstrapped, or `reset_index` names the bootstrap.
    Bootstrap {
        token: Token,
        reset_index: Option<u64>,
    },
    /// At leadership: the built-in policies and the anonymous token if missing, and the
    /// `initial_management` token (which counts as the bootstrap).
    EnsureBuiltins {
        policies: Vec<Policy>,
        anonymous: Token,
        initial_management: Option<Token>,
    },
    /// A secondary datacenter's copy of the primary's: every policy and role replaced by
    /// these; with `tokens`, every global (non-local) token too. Local tokens stay.
    Replicate {
        policies: Vec<Policy>,
        roles: Vec<Role>,
        tokens: Option<Vec<Token>>,
    },
}
