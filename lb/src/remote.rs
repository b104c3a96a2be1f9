//! Which services of other datacenters lb watches, and when it stops: pure bookkeeping (no IO,
//! no clock: `now` is passed in); `discovery` runs the watches it asks for. It knows nothing of
//! pingora, HTTP or the routing table.
//!
//! A request for `web.service.dc2.consul` that finds no route asks for ("dc2", "web"). Only a
//! datacenter the WAN pool lists (`/v1/catalog/datacenters`) is watched, its catalog first (one
//! blocking query with `?dc=`), then only a service that catalog holds; at most `limit` watches
//! in all; a service no request used for `idle` is dropped, and so is a datacenter with no
//! service left. Whatever `Host` a client sends, lb watches at most `limit` things, each real.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What discovery must start or stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `GET /v1/catalog/services?dc=<dc>`.
    WatchCatalog(String),
    /// `GET /v1/health/service/<name>?passing&dc=<dc>`, `name` as that catalog spells it.
    WatchHealth(String, String),
    /// Stop a service's watch, or (`None`) every watch of the datacenter.
    Stop(String, Option<String>),
}

#[derive(Debug)]
struct Use {
    /// Requests the service's routes had answered at the last tick.
    requests: u64,
    /// When that count last moved (or the watch began).
    at: Instant,
}

#[derive(Debug)]
struct Dc {
    /// Lowercase name → name, once the catalog answered.
    catalog: Option<BTreeMap<String, String>>,
    /// Lowercase names asked for before the catalog answered.
    pending: BTreeSet<String>,
    /// Watched services by name.
    services: BTreeMap<String, Use>,
    /// The last request that asked for something here.
    asked: Instant,
}

/// The watches of other datacenters, keyed by lowercase datacenter name.
#[derive(Debug, Default)]
pub struct Remote {
    datacenters: BTreeSet<String>,
    dcs: BTreeMap<String, Dc>,
}

impl Remote {
    /// Watches running: one per datacenter, one per service.
    pub fn count(&self) -> usize {
        self.dcs.len() + self.dcs.values().map(|d| d.services.len()).sum::<usize>()
    }

    /// The datacenters of the WAN pool changed: those gone are no longer watched.
    pub fn set_datacenters(&mut self, list: &[String]) -> Vec<Action> {
        self.datacenters = list.iter().map(|d| d.to_lowercase()).collect();
        let gone: Vec<String> = self.dcs.keys().filter(|d| !self.datacenters.contains(*d)).cloned().collect();
        gone.into_iter()
            .map(|dc| {
                self.dcs.remove(&dc);
                Action::Stop(dc, None)
            })
            .collect()
    }

    /// A request named `service` (lowercase) of `dc` (lowercase) and found no route.
    pub fn want(&mut self, dc: &str, service: &str, now: Instant, limit: usize) -> Vec<Action> {
        if !self.datacenters.contains(dc) {
            return Vec::new();
        }
        let count = self.count();
        let Some(d) = self.dcs.get_mut(dc) else {
            if count >= limit {
                return Vec::new();
            }
            let pending = BTreeSet::from([service.to_string()]);
            self.dcs.insert(dc.to_string(), Dc { catalog: None, pending, services: BTreeMap::new(), asked: now });
            return vec![Action::WatchCatalog(dc.to_string())];
        };
        d.asked = now;
        match &d.catalog {
            None => {
                if d.pending.len() < limit {
                    d.pending.insert(service.to_string());
                }
                Vec::new()
            }
            Some(catalog) => match catalog.get(service) {
                Some(name) if !d.services.contains_key(name) && count < limit => {
                    d.services.insert(name.clone(), Use { requests: 0, at: now });
                    vec![Action::WatchHealth(dc.to_string(), name.clone())]
                }
                _ => Vec::new(),
            },
        }
    }

    /// A datacenter's catalog answered: services asked for start, services gone stop.
    pub fn catalog<'a>(
        &mut self,
        dc: &str,
        services: impl IntoIterator<Item = &'a String>,
        now: Instant,
        limit: usize,
    ) -> Vec<Action> {
        let mut count = self.count();
        let Some(d) = self.dcs.get_mut(dc) else { return Vec::new() };
        let names: BTreeMap<String, String> = services.into_iter().map(|n| (n.to_lowercase(), n.clone())).collect();
        let mut out = Vec::new();
        let gone: Vec<String> =
            d.services.keys().filter(|n| names.get(&n.to_lowercase()) != Some(*n)).cloned().collect();
        for name in gone {
            d.services.remove(&name);
            count -= 1;
            out.push(Action::Stop(dc.to_string(), Some(name)));
        }
        for p in std::mem::take(&mut d.pending) {
            if let Some(name) = names.get(&p) {
                if !d.services.contains_key(name) && count < limit {
                    d.services.insert(name.clone(), Use { requests: 0, at: now });
                    count += 1;
                    out.push(Action::WatchHealth(dc.to_string(), name.clone()));
                }
            }
        }
        d.catalog = Some(names);
        out
    }

    /// Stops what no request used for `idle`. `requests(dc, name)` is how many requests the
    /// service's routes have answered so far.
    pub fn tick(&mut self, now: Instant, idle: Duration, requests: impl Fn(&str, &str) -> u64) -> Vec<Action> {
        let mut out = Vec::new();
        self.dcs.retain(|dc, d| {
            d.services.retain(|name, u| {
                let n = requests(dc, name);
                if n != u.requests {
                    u.requests = n;
                    u.at = now;
                    d.asked = d.asked.max(now);
                    true
                } else if now.saturating_duration_since(u.at) >= idle {
                    out.push(Action::Stop(dc.clone(), Some(name.clone())));
                    false
                } else {
                    true
                }
            });
            let keep = !d.services.is_empty() || now.saturating_duration_since(d.asked) < idle;
            if !keep {
                out.push(Action::Stop(dc.clone(), None));
            }
            keep
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn watch_health(dc: &str, name: &str) -> Action {
        Action::WatchHealth(dc.into(), name.into())
    }

    #[test]
    fn only_listed_datacenters_and_registered_services_are_watched() {
        let t = Instant::now();
        let mut r = Remote::default();
        assert_eq!(r.want("dc2", "web", t, 10), vec![], "no datacenter list yet");
        r.set_datacenters(&s(&["dc1", "DC2"]));
        assert_eq!(r.want("dc9", "web", t, 10), vec![], "not in the WAN pool");
        assert_eq!(r.want("dc2", "web", t, 10), vec![Action::WatchCatalog("dc2".into())]);
        assert_eq!(r.want("dc2", "web", t, 10), vec![], "the catalog is already asked for");
        assert_eq!(r.want("dc2", "nope", t, 10), vec![]);
        // The catalog answers: what was asked for and exists starts, in the catalog's spelling.
        let cat = s(&["Web", "api"]);
        assert_eq!(r.catalog("dc2", &cat, t, 10), vec![watch_health("dc2", "Web")]);
        assert_eq!(r.want("dc2", "nope", t, 10), vec![], "not registered there");
        assert_eq!(r.want("dc2", "web", t, 10), vec![], "already watched");
        assert_eq!(r.want("dc2", "api", t, 10), vec![watch_health("dc2", "api")]);
        assert_eq!(r.count(), 3);
        // A service that leaves the catalog stops; a datacenter that leaves the pool stops whole.
        assert_eq!(r.catalog("dc2", &s(&["api"]), t, 10), vec![Action::Stop("dc2".into(), Some("Web".into()))]);
        assert_eq!(r.set_datacenters(&s(&["dc1"])), vec![Action::Stop("dc2".into(), None)]);
        assert_eq!(r.count(), 0);
    }

    #[test]
    fn the_limit_bounds_every_watch() {
        let t = Instant::now();
        let mut r = Remote::default();
        r.set_datacenters(&s(&["dc1", "dc2", "dc3", "dc4"]));
        assert_eq!(r.want("dc2", "a", t, 3).len(), 1);
        for name in ["b", "c", "d", "e"] {
            assert_eq!(r.want("dc2", name, t, 3), vec![]);
        }
        assert_eq!(r.want("dc3", "a", t, 3).len(), 1);
        // Two watches running, room for one more: only the first asked-for service gets it.
        let got = r.catalog("dc2", &s(&["a", "b", "c", "d", "e"]), t, 3);
        assert_eq!(got, vec![watch_health("dc2", "a")]);
        assert_eq!(r.count(), 3);
        assert_eq!(r.want("dc2", "b", t, 3), vec![]);
        assert_eq!(r.want("dc4", "a", t, 3), vec![], "no room for another datacenter");
    }

    #[test]
    fn idle_services_then_idle_datacenters_stop() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(60);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut r = Remote::default();
        r.set_datacenters(&s(&["dc1", "dc2"]));
        r.want("dc2", "web", t0, 10);
        r.want("dc2", "api", t0, 10);
        r.catalog("dc2", &s(&["web", "api"]), t0, 10);
        let used = std::cell::Cell::new(0u64);
        let requests = |_: &str, name: &str| if name == "web" { used.get() } else { 0 };
        assert_eq!(r.tick(at(30), idle, requests), vec![]);
        used.set(5);
        assert_eq!(r.tick(at(50), idle, requests), vec![], "web was used");
        assert_eq!(r.tick(at(60), idle, requests), vec![Action::Stop("dc2".into(), Some("api".into()))]);
        assert_eq!(r.tick(at(100), idle, requests), vec![]);
        assert_eq!(
            r.tick(at(110), idle, requests),
            vec![Action::Stop("dc2".into(), Some("web".into())), Action::Stop("dc2".into(), None)]
        );
        assert_eq!(r.count(), 0);
        // A datacenter whose catalog never answers goes once nobody asked for `idle`.
        r.want("dc2", "web", at(200), 10);
        assert_eq!(r.tick(at(230), idle, requests), vec![]);
        r.want("dc2", "web", at(240), 10);
        assert_eq!(r.tick(at(299), idle, requests), vec![]);
        assert_eq!(r.tick(at(300), idle, requests), vec![Action::Stop("dc2".into(), None)]);
    }
}
