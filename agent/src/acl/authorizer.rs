//! Decisions: what a token's merged rules allow, falling back to the agent's default policy.
//! Pure: built once per token (and ACL state), then asked per request without allocating.
//!
//! As Consul's policy authorizer: rules of all the token's policies are merged per resource and
//! name with deny > write > list > read; an exact rule on the name wins, else the longest
//! matching prefix; no rule means the default policy, under which ACL management and snapshots
//! are still denied unless the policy is the management one.

use super::rules::{Access, Resource, Rule};
use std::collections::HashMap;

#[derive(Debug, Default, Clone)]
struct Table {
    exact: HashMap<String, Access>,
    prefix: HashMap<String, Access>,
    /// The longest prefix rule's length, to bound the search.
    longest: usize,
}

impl Table {
    fn insert(&mut self, rule: &Rule) {
        let map = if rule.prefix { &mut self.prefix } else { &mut self.exact };
        let slot = map.entry(rule.name.clone()).or_insert(rule.access);
        *slot = (*slot).max(rule.access);
        if rule.prefix {
            self.longest = self.longest.max(rule.name.len());
        }
    }

    fn lookup(&self, name: &str) -> Option<Access> {
        if let Some(a) = self.exact.get(name) {
            return Some(*a);
        }
        if self.prefix.is_empty() {
            return None;
        }
        let mut end = name.len().min(self.longest);
        loop {
            if name.is_char_boundary(end) {
                if let Some(a) = self.prefix.get(&name[..end]) {
                    return Some(*a);
                }
            }
            if end == 0 {
                return None;
            }
            end -= 1;
        }
    }
}

/// The default policy behind a token's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultPolicy {
    Allow,
    Deny,
}

#[derive(Debug, Clone)]
pub struct Authorizer {
    tables: HashMap<Resource, Table>,
    default: DefaultPolicy,
}

impl Authorizer {
    pub fn new(rules: &[Rule], default: DefaultPolicy) -> Authorizer {
        let mut tables: HashMap<Resource, Table> = HashMap::new();
        for r in rules {
            tables.entry(r.resource).or_default().insert(r);
        }
        Authorizer { tables, default }
    }

    /// Everything allowed but ACL management and snapshots (Consul's allow-all), or nothing.
    pub fn static_policy(default: DefaultPolicy) -> Authorizer {
        Authorizer { tables: HashMap::new(), default }
    }

    /// The rule that applies to `name`, if any.
    pub fn rule(&self, resource: Resource, name: &str) -> Option<Access> {
        self.tables.get(&resource).and_then(|t| t.lookup(name))
    }

    /// Whether `need` on `resource` `name` is allowed.
    pub fn allows(&self, resource: Resource, name: &str, need: Access) -> bool {
        match self.rule(resource, name) {
            Some(a) => a.allows(need),
            None => match self.default {
                // ACL management needs an explicit grant even when everything else is allowed.
                DefaultPolicy::Allow => resource != Resource::Acl,
                DefaultPolicy::Deny => false,
            },
        }
    }

    /// A recursive write under `prefix` (Consul's `KeyWritePrefix`): the rule at the prefix
    /// allows writing, and no rule under it says anything but write.
    pub fn key_write_prefix(&self, prefix: &str) -> bool {
        if !self.allows(Resource::Key, prefix, Access::Write) {
            return false;
        }
        let Some(t) = self.tables.get(&Resource::Key) else { return true };
        t.exact.iter().chain(t.prefix.iter()).filter(|(n, _)| n.starts_with(prefix)).all(|(_, a)| *a == Access::Write)
    }

    /// Whether this token may manage ACLs (and take or restore snapshots).
    pub fn management(&self) -> bool {
        self.allows(Resource::Acl, "", Access::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::super::rules::parse;
    use super::*;

    #[test]
    fn exact_beats_prefix_longest_prefix_wins_and_merges_take_precedence() {
        let mut rules = parse(
            r#"
            key_prefix "" { policy = "read" }
            key_prefix "app/" { policy = "write" }
            key_prefix "app/secret/" { policy = "deny" }
            key "app/secret/ok" { policy = "read" }
            "#,
        )
        .expect("rules");
        rules.extend(parse(r#"key_prefix "app/" { policy = "read" }"#).expect("second policy"));
        let a = Authorizer::new(&rules, DefaultPolicy::Deny);
        assert!(a.allows(Resource::Key, "other", Access::Read));
        assert!(!a.allows(Resource::Key, "other", Access::Write));
        assert!(a.allows(Resource::Key, "app/x", Access::Write), "write beats read when merged");
        assert!(!a.allows(Resource::Key, "app/secret/x", Access::Read));
        assert!(a.allows(Resource::Key, "app/secret/ok", Access::Read), "exact beats prefix");
        assert!(!a.allows(Resource::Key, "app/secret/ok", Access::Write));
        assert!(!a.allows(Resource::Service, "web", Access::Read), "no rule: default deny");
        assert!(!a.key_write_prefix("app/"), "a deny below the prefix");
        assert!(!a.key_write_prefix(""));
        let b =
            Authorizer::new(&parse(r#"key_prefix "app/" { policy = "write" }"#).expect("rules"), DefaultPolicy::Deny);
        assert!(b.key_write_prefix("app/") && b.key_write_prefix("app/x"));
        let d = Authorizer::new(
            &parse("key_prefix \"\" { policy = \"write\" }\nkey_prefix \"a\" { policy = \"deny\" }").expect("r"),
            DefaultPolicy::Deny,
        );
        assert!(d.allows(Resource::Key, "b", Access::Write) && !d.allows(Resource::Key, "ab", Access::Read));
    }

    #[test]
    fn list_and_defaults() {
        let a = Authorizer::new(&parse(r#"key_prefix "l/" { policy = "list" }"#).expect("rules"), DefaultPolicy::Allow);
        assert!(a.allows(Resource::Key, "l/x", Access::List) && a.allows(Resource::Key, "l/x", Access::Read));
        assert!(!a.allows(Resource::Key, "l/x", Access::Write));
        assert!(a.allows(Resource::Node, "n", Access::Write), "default allow");
        assert!(!a.management(), "allow-all still cannot manage ACLs");
        let m = Authorizer::new(&parse(super::super::rules::GLOBAL_MANAGEMENT).expect("rules"), DefaultPolicy::Deny);
        assert!(m.management() && m.allows(Resource::Service, "x", Access::Write) && m.key_write_prefix(""));
        let none = Authorizer::static_policy(DefaultPolicy::Deny);
        assert!(!none.allows(Resource::Node, "n", Access::Read));
        let unicode =
            Authorizer::new(&parse(r#"key_prefix "é" { policy = "read" }"#).expect("rules"), DefaultPolicy::Deny);
        assert!(unicode.allows(Resource::Key, "éa", Access::Read) && !unicode.allows(Resource::Key, "e", Access::Read));
    }
}
