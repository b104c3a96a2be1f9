//! Consul's ACL rules language: HCL version 1 or the same structure as JSON,
//!
//! ```text
//! acl = "write"   operator = "read"   keyring = "read"   mesh = "read"   peering = "read"
//! key_prefix "app/" { policy = "read" }        service "web" { policy = "write" intentions = "read" }
//! ```
//!
//! parsed into a flat list of [`Rule`]s. Pure: no IO, no state.

use serde_json::Value;

/// What a rule grants. Merging takes the one that wins: deny > write > list > read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    Read,
    List,
    Write,
    Deny,
}

impl Access {
    fn parse(s: &str) -> Option<Access> {
        match s {
            "read" => Some(Access::Read),
            "list" => Some(Access::List),
            "write" => Some(Access::Write),
            "deny" => Some(Access::Deny),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::List => "list",
            Access::Write => "write",
            Access::Deny => "deny",
        }
    }

    /// Whether this grant allows `need` (write grants all, list grants list and read).
    pub fn allows(self, need: Access) -> bool {
        match self {
            Access::Deny => false,
            Access::Write => true,
            Access::List => need == Access::List || need == Access::Read,
            Access::Read => need == Access::Read,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Acl,
    Agent,
    Event,
    Key,
    Keyring,
    Mesh,
    Node,
    Operator,
    Peering,
    Query,
    Service,
    Session,
    Intention,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Acl => "acl",
            Resource::Agent => "agent",
            Resource::Event => "event",
            Resource::Key => "key",
            Resource::Keyring => "keyring",
            Resource::Mesh => "mesh",
            Resource::Node => "node",
            Resource::Operator => "operator",
            Resource::Peering => "peering",
            Resource::Query => "query",
            Resource::Service => "service",
            Resource::Session => "session",
            Resource::Intention => "intention",
        }
    }

    /// Resources without names: a single `acl = "write"` attribute.
    fn singleton(name: &str) -> Option<Resource> {
        match name {
            "acl" => Some(Resource::Acl),
            "keyring" => Some(Resource::Keyring),
            "mesh" => Some(Resource::Mesh),
            "operator" => Some(Resource::Operator),
            "peering" => Some(Resource::Peering),
            _ => None,
        }
    }

    /// Resources whose rules are keyed by name, exact or by prefix.
    fn named(name: &str) -> Option<Resource> {
        match name {
            "agent" => Some(Resource::Agent),
            "event" => Some(Resource::Event),
            "key" => Some(Resource::Key),
            "node" => Some(Resource::Node),
            "query" => Some(Resource::Query),
            "service" => Some(Resource::Service),
            "session" => Some(Resource::Session),
            _ => None,
        }
    }
}

/// One rule: `resource[_prefix] "name" { policy = access }`, or a singleton (`name` empty,
/// `prefix` true: it covers everything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub resource: Resource,
    pub name: String,
    pub prefix: bool,
    pub access: Access,
}

/// Parses `text` (HCL or JSON). The error is what the API answers with 400.
pub fn parse(text: &str) -> Result<Vec<Rule>, String> {
    if text.trim().is_empty() {
        return Ok(vec![]);
    }
    let doc: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| format!("Failed to parse ACL rules: {e}"))?
    } else {
        hcl1::parse(text).map_err(|e| format!("Failed to parse ACL rules: {e}"))?
    };
    let Value::Object(top) = doc else {
        return Err("Failed to parse ACL rules: rules must be an object".into());
    };
    let mut rules = Vec::new();
    for (key, v) in &top {
        if let Some(resource) = Resource::singleton(key) {
            let Some(access) = v.as_str().and_then(Access::parse).filter(|a| *a != Access::List) else {
                return Err(format!("Invalid {key} policy: {v}"));
            };
            rules.push(Rule { resource, name: String::new(), prefix: true, access });
            continue;
        }
        let (base, prefix) = match key.strip_suffix("_prefix") {
            Some(b) => (b, true),
            None => (key.as_str(), false),
        };
        let Some(resource) = Resource::named(base) else {
            return Err(format!("Failed to parse ACL rules: unknown resource {key:?}"));
        };
        // `key "a" {...}` is a list of one-entry objects (HCL1's labelled blocks) or one object
        // of all labels (JSON, or HCL1's `key = { a = {...} }`).
        let blocks: Vec<&serde_json::Map<String, Value>> = match v {
            Value::Object(m) => vec![m],
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_object().ok_or_else(|| format!("Failed to parse ACL rules: {key} must be a block")))
                .collect::<Result<_, _>>()?,
            _ => return Err(format!("Failed to parse ACL rules: {key} must be a block")),
        };
        for block in blocks {
            for (name, body) in block {
                let policy = body.get("policy").and_then(Value::as_str).unwrap_or_default();
                let allowed_list = resource == Resource::Key;
                let access = Access::parse(policy)
                    .filter(|a| allowed_list || *a != Access::List)
                    .ok_or_else(|| format!("Invalid {key} policy: {policy:?}"))?;
                if let Some(i) = body.get("intentions") {
                    let ok = resource == Resource::Service
                        && i.as_str().and_then(Access::parse).is_some_and(|a| a != Access::List);
                    if !ok {
                        return Err(format!("Invalid {key} intentions policy: {i}"));
                    }
                }
                rules.push(Rule { resource, name: name.clone(), prefix, access });
            }
        }
    }
    Ok(rules)
}

/// The rules of Consul's built-in `global-management` policy.
pub const GLOBAL_MANAGEMENT: &str = r#"
acl = "write"
agent_prefix "" { policy = "write" }
event_prefix "" { policy = "write" }
key_prefix "" { policy = "write" }
keyring = "write"
node_prefix "" { policy = "write" }
operator = "write"
mesh = "write"
peering = "write"
query_prefix "" { policy = "write" }
service_prefix "" { policy = "write" intentions = "write" }
session_prefix "" { policy = "write" }
"#;

/// The rules of Consul's built-in `builtin/global-read-only` policy.
pub const GLOBAL_READ_ONLY: &str = r#"
acl = "read"
agent_prefix "" { policy = "read" }
event_prefix "" { policy = "read" }
key_prefix "" { policy = "read" }
keyring = "read"
node_prefix "" { policy = "read" }
operator = "read"
mesh = "read"
peering = "read"
query_prefix "" { policy = "read" }
service_prefix "" { policy = "read" }
session_prefix "" { policy = "read" }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcl_and_json_give_the_same_rules() {
        let hcl = parse(
            "key_prefix \"app/\" { policy = \"read\" }\nkey \"app/x\" { policy = \"write\" }\noperator = \"read\"",
        )
        .expect("hcl");
        let json = parse(r#"{"key_prefix": {"app/": {"policy": "read"}}, "key": {"app/x": {"policy": "write"}}, "operator": "read"}"#)
            .expect("json");
        let mut a = hcl.clone();
        let mut b = json;
        let key = |r: &Rule| (r.resource, r.name.clone(), r.prefix);
        a.sort_by_key(key);
        b.sort_by_key(key);
        assert_eq!(a, b);
        assert!(hcl.contains(&Rule {
            resource: Resource::Key,
            name: "app/".into(),
            prefix: true,
            access: Access::Read
        }));
    }

    #[test]
    fn bad_rules_are_refused_with_consuls_words() {
        assert!(parse("key_prefix \"\" { policy = \"bogus\" }").unwrap_err().starts_with("Invalid key_prefix policy"));
        assert!(parse("service \"a\" { policy = \"list\" }").unwrap_err().starts_with("Invalid service policy"));
        assert!(parse("nonsense \"a\" { policy = \"read\" }").unwrap_err().starts_with("Failed to parse ACL rules"));
        assert!(parse("key_prefix \"a\" {").unwrap_err().starts_with("Failed to parse ACL rules"));
        assert!(parse("operator = \"list\"").unwrap_err().starts_with("Invalid operator policy"));
        assert!(parse("{ not json").unwrap_err().starts_with("Failed to parse ACL rules"));
        assert_eq!(parse("   ").expect("empty"), vec![]);
        assert!(parse(GLOBAL_MANAGEMENT).expect("builtin").len() >= 12);
        assert!(parse(GLOBAL_READ_ONLY).is_ok());
    }
}
