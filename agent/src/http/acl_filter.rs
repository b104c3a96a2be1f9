//! Filtering list answers by what the caller's token may read, and remembering whether anything
//! was left out (`X-Consul-Results-Filtered-By-ACLs: true`, as Consul answers).

use super::Reply;
use crate::acl::{Access, Identity, Resource};
use std::sync::atomic::{AtomicBool, Ordering};

pub struct AclFilter<'a> {
    id: &'a Identity,
    removed: AtomicBool,
}

impl<'a> AclFilter<'a> {
    pub fn new(id: &'a Identity) -> AclFilter<'a> {
        AclFilter { id, removed: AtomicBool::new(false) }
    }

    fn keep(&self, allowed: bool) -> bool {
        if !allowed {
            self.removed.store(true, Ordering::Relaxed);
        }
        allowed
    }

    pub fn can(&self, resource: Resource, name: &str) -> bool {
        self.keep(self.id.allows(resource, name, Access::Read))
    }

    pub fn node(&self, name: &str) -> bool {
        self.can(Resource::Node, name)
    }

    pub fn service(&self, name: &str) -> bool {
        self.can(Resource::Service, name)
    }

    /// An instance: its node and its service.
    pub fn instance(&self, node: &str, service: &str) -> bool {
        self.keep(
            self.id.allows(Resource::Node, node, Access::Read)
                && self.id.allows(Resource::Service, service, Access::Read),
        )
    }

    /// A check: its node, and its service if it has one.
    pub fn check(&self, node: &str, service: &str) -> bool {
        let ok = self.id.allows(Resource::Node, node, Access::Read)
            && (service.is_empty() || self.id.allows(Resource::Service, service, Access::Read));
        self.keep(ok)
    }

    pub fn key(&self, key: &str) -> bool {
        self.can(Resource::Key, key)
    }

    /// Starts a new read (a blocking query reads again after each wake-up).
    pub fn reset(&self) {
        self.removed.store(false, Ordering::Relaxed);
    }

    /// Marks the reply if anything was left out.
    pub fn mark(&self, reply: Reply) -> Reply {
        if self.removed.load(Ordering::Relaxed) {
            reply.header("X-Consul-Results-Filtered-By-ACLs", "true")
        } else {
            reply
        }
    }
}
