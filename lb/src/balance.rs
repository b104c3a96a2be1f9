//! Choosing an instance for one request: weighted round-robin, client-IP affinity (nginx
//! `ip_hash`) and least-connections over one pool, skipping instances already tried by this
//! request and instances benched after failures (nginx `max_fails`/`fail_timeout`).
//!
//! Pure logic: the caller passes the current time in, so tests drive the clock. It knows nothing
//! about HTTP, pingora or Consul.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a pool picks an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Smooth weighted round-robin (nginx's default).
    #[default]
    RoundRobin,
    /// The same client network (IPv4 /24, whole IPv6 address) goes to the same instance.
    IpHash,
    /// The instance with the fewest requests in flight relative to its weight.
    LeastConn,
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::RoundRobin => "round_robin",
            Policy::IpHash => "ip_hash",
            Policy::LeastConn => "least_conn",
        })
    }
}

/// nginx's passive health: `max_fails` failures within `fail_timeout` bench an instance for
/// `fail_timeout`. `max_fails == 0` disables benching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchRule {
    pub max_fails: u32,
    pub fail_timeout: Duration,
}

impl Default for BenchRule {
    fn default() -> Self {
        BenchRule { max_fails: 1, fail_timeout: Duration::from_secs(10) }
    }
}

#[derive(Debug, Default)]
struct FailState {
    fails: u32,
    window_start: Option<Instant>,
    benched_until: Option<Instant>,
}

/// Per-instance state that outlives routing snapshots: requests in flight and recent failures.
/// Shared by every route that contains the same address.
#[derive(Debug, Default)]
pub struct Stats {
    active: AtomicUsize,
    fail: Mutex<FailState>,
}

impl Stats {
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts one request in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }

    pub fn is_benched(&self, now: Instant) -> bool {
        self.fail.lock().benched_until.is_some_and(|until| now < until)
    }

    /// How much longer the instance stays benched.
    pub fn benched_for(&self, now: Instant) -> Option<Duration> {
        self.fail.lock().benched_until.and_then(|until| until.checked_duration_since(now)).filter(|d| !d.is_zero())
    }

    pub fn fails(&self) -> u32 {
        self.fail.lock().fails
    }

    /// Records a failure; returns true when this failure benched the instance.
    pub fn record_failure(&self, rule: BenchRule, now: Instant) -> bool {
        if rule.max_fails == 0 {
            return false;
        }
        let mut s = self.fail.lock();
        let in_window = s.window_start.is_some_and(|start| now.saturating_duration_since(start) < rule.fail_timeout);
        if in_window {
            s.fails = s.fails.saturating_add(1);
        } else {
            s.window_start = Some(now);
            s.fails = 1;
        }
        if s.fails >= rule.max_fails {
            s.benched_until = Some(now + rule.fail_timeout);
            s.fails = 0;
            s.window_start = None;
            return true;
        }
        false
    }

    /// An answer came back: forget earlier failures and lift a bench (the instance proved alive).
    pub fn record_success(&self) {
        let mut s = self.fail.lock();
        if s.fails != 0 || s.benched_until.is_some() {
            *s = FailState::default();
        }
    }
}

/// Decrements the in-flight count of an instance when dropped.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Stats>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Hands out one `Stats` per address so that state survives snapshot rebuilds.
#[derive(Debug, Default)]
pub struct StatsRegistry {
    map: Mutex<HashMap<SocketAddr, Arc<Stats>>>,
}

impl StatsRegistry {
    pub fn get(&self, addr: SocketAddr) -> Arc<Stats> {
        self.map.lock().entry(addr).or_default().clone()
    }

    /// Drops state of addresses no longer used by any route.
    pub fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.map.lock().retain(|a, s| keep(a) || Arc::strong_count(s) > 1);
    }
}

/// One instance as routing sees it.
#[derive(Debug, Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    pub weight: u32,
    /// Node name and service ID (or member name), for the status page and logs.
    pub node: String,
    pub id: String,
    pub stats: Arc<Stats>,
    /// Reached over HTTPS (the agents when lb speaks TLS to them; an instance whose service
    /// says `lb-protocol=https` or whose `urlprefix-` tag says `proto=https`).
    pub tls: bool,
}

/// A set of instances and the selection state of one route.
#[derive(Debug)]
pub struct Pool {
    backends: Vec<Backend>,
    /// The smooth weighted round-robin order, as indexes into `backends`.
    order: Vec<u16>,
    next: AtomicUsize,
    pub policy: Policy,
    pub bench: BenchRule,
}

/// Weights above this total are scaled down so that the order table stays small.
const MAX_ORDER: u64 = 4096;

impl Pool {
    pub fn new(mut backends: Vec<Backend>, policy: Policy, bench: BenchRule) -> Pool {
        // A stable order makes ip_hash map a client to the same instance across rebuilds.
        backends.sort_by(|a, b| a.addr.cmp(&b.addr).then_with(|| a.id.cmp(&b.id)));
        backends.dedup_by(|a, b| a.addr == b.addr);
        backends.truncate(u16::MAX as usize);
        let order = smooth_order(&backends.iter().map(|b| b.weight).collect::<Vec<_>>());
        Pool { backends, order, next: AtomicUsize::new(0), policy, bench }
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// Picks an instance not in `tried`. Benched instances are used only when every untried
    /// instance is benched (nginx's "all peers failed, mark them live for quick recovery"):
    /// Consul still reports them passing, so trying one beats refusing the request.
    pub fn select(&self, client: Option<IpAddr>, tried: &[SocketAddr], now: Instant) -> Option<&Backend> {
        if self.backends.is_empty() {
            return None;
        }
        let untried = |b: &Backend| !tried.contains(&b.addr);
        let fit = |b: &Backend| untried(b) && !b.stats.is_benched(now);
        match self.policy {
            Policy::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                self.scan(start, &fit).or_else(|| self.scan(start, &untried))
            }
            Policy::IpHash => {
                let start = client.map(affinity_hash).unwrap_or(0) as usize;
                self.scan(start, &fit).or_else(|| self.scan(start, &untried))
            }
            Policy::LeastConn => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                self.least(start, &fit).or_else(|| self.least(start, &untried))
            }
        }
    }

    fn scan(&self, start: usize, ok: &dyn Fn(&Backend) -> bool) -> Option<&Backend> {
        let n = self.order.len();
        (0..n).map(|i| &self.backends[self.order[(start + i) % n] as usize]).find(|b| ok(b))
    }

    fn least(&self, start: usize, ok: &dyn Fn(&Backend) -> bool) -> Option<&Backend> {
        let n = self.backends.len();
        let mut best: Option<&Backend> = None;
        // Rotating the start spreads ties instead of always favouring the first instance.
        for b in (0..n).map(|i| &self.backends[(start + i) % n]).filter(|b| ok(b)) {
            best = match best {
                // a/wa < b/wb  <=>  a*wb < b*wa
                Some(cur)
                    if (b.stats.active() as u64) * u64::from(cur.weight)
                        >= (cur.stats.active() as u64) * u64::from(b.weight) =>
                {
                    Some(cur)
                }
                _ => Some(b),
            };
        }
        best
    }
}

/// nginx's `ip_hash` key: the first three octets of an IPv4 address, the whole IPv6 address.
fn affinity_hash(ip: IpAddr) -> u64 {
    let bytes: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets()[..3].to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets()[..3].to_vec(),
            None => v6.octets().to_vec(),
        },
    };
    // FNV-1a: stable across processes and releases, unlike std's RandomState.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// nginx's smooth weighted round-robin, unrolled into one cycle: weights 5,1,1 give
/// a a b a c a a rather than a a a a a b c.
fn smooth_order(weights: &[u32]) -> Vec<u16> {
    if weights.is_empty() {
        return Vec::new();
    }
    let mut w: Vec<u64> = weights.iter().map(|&w| u64::from(w.max(1))).collect();
    let g = w.iter().copied().fold(0, gcd);
    w.iter_mut().for_each(|x| *x /= g.max(1));
    let total: u64 = w.iter().sum();
    if total > MAX_ORDER {
        w.iter_mut().for_each(|x| *x = (*x * MAX_ORDER / total).max(1));
    }
    let total: i64 = w.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; w.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        order.push(best as u16);
    }
    order
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(weights: &[u32], policy: Policy) -> Pool {
        let backends = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Backend {
                addr: SocketAddr::from(([10, 0, 0, i as u8 + 1], 80)),
                weight: w,
                node: format!("n{i}"),
                id: format!("s{i}"),
                stats: Arc::new(Stats::default()),
                tls: false,
            })
            .collect();
        Pool::new(backends, policy, BenchRule::default())
    }

    fn counts(p: &Pool, n: usize, client: Option<IpAddr>) -> Vec<usize> {
        let now = Instant::now();
        let mut c = vec![0; p.backends().len()];
        for _ in 0..n {
            let b = p.select(client, &[], now).unwrap();
            c[p.backends().iter().position(|x| x.addr == b.addr).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn smooth_order_interleaves_and_honours_weights() {
        let cases: &[(&[u32], &[u16])] = &[
            (&[1, 1, 1], &[0, 1, 2]),
            (&[5, 1, 1], &[0, 0, 1, 0, 2, 0, 0]),
            (&[2, 2], &[0, 1]),
            (&[0, 3], &[1, 0, 1, 1]),
            (&[], &[]),
        ];
        for (weights, want) in cases {
            assert_eq!(smooth_order(weights), *want, "weights {weights:?}");
        }
        let big = smooth_order(&[60000, 60000, 1]);
        assert!(big.len() as u64 <= MAX_ORDER + 3 && big.contains(&2));
    }

    #[test]
    fn round_robin_follows_weights() {
        assert_eq!(counts(&pool(&[1, 1, 1], Policy::RoundRobin), 300, None), vec![100, 100, 100]);
        assert_eq!(counts(&pool(&[3, 1], Policy::RoundRobin), 400, None), vec![300, 100]);
    }

    #[test]
    fn ip_hash_keeps_a_client_network_on_one_instance() {
        let p = pool(&[1, 1, 1, 1], Policy::IpHash);
        let now = Instant::now();
        let a: IpAddr = "192.168.7.10".parse().unwrap();
        let same_net: IpAddr = "192.168.7.200".parse().unwrap();
        let first = p.select(Some(a), &[], now).unwrap().addr;
        for _ in 0..20 {
            assert_eq!(p.select(Some(a), &[], now).unwrap().addr, first);
            assert_eq!(p.select(Some(same_net), &[], now).unwrap().addr, first);
        }
        // Different networks spread over the instances.
        let mut seen = std::collections::HashSet::new();
        for i in 0..64u8 {
            let ip = IpAddr::from([10, i, 1, 1]);
            seen.insert(p.select(Some(ip), &[], now).unwrap().addr);
        }
        assert!(seen.len() >= 3, "{seen:?}");
        // The affine instance fails: the client goes elsewhere, and back once it recovers.
        p.backends().iter().find(|b| b.addr == first).unwrap().stats.record_failure(p.bench, now);
        let other = p.select(Some(a), &[], now).unwrap().addr;
        assert_ne!(other, first);
        assert_eq!(p.select(Some(a), &[], now + Duration::from_secs(11)).unwrap().addr, first);
    }

    #[test]
    fn least_conn_prefers_idle_instances() {
        let p = pool(&[1, 1, 1], Policy::LeastConn);
        let now = Instant::now();
        let _g0 = p.backends()[0].stats.begin();
        let _g1 = p.backends()[1].stats.begin();
        let _g1b = p.backends()[1].stats.begin();
        for _ in 0..5 {
            assert_eq!(p.select(None, &[], now).unwrap().addr, p.backends()[2].addr);
        }
        let _g2 = p.backends()[2].stats.begin();
        let _g2b = p.backends()[2].stats.begin();
        assert_eq!(p.select(None, &[], now).unwrap().addr, p.backends()[0].addr);
        drop(_g1b);
        drop(_g1);
        assert_eq!(p.select(None, &[], now).unwrap().addr, p.backends()[1].addr);
    }

    #[test]
    fn least_conn_weighs_connections() {
        let p = pool(&[1, 4], Policy::LeastConn);
        let now = Instant::now();
        let _a = p.backends()[0].stats.begin();
        let _b: Vec<_> = (0..3).map(|_| p.backends()[1].stats.begin()).collect();
        // 1/1 vs 3/4: the heavier instance still has room.
        assert_eq!(p.select(None, &[], now).unwrap().addr, p.backends()[1].addr);
    }

    #[test]
    fn tried_instances_are_skipped_then_exhausted() {
        let p = pool(&[1, 1, 1], Policy::RoundRobin);
        let now = Instant::now();
        let mut tried = Vec::new();
        for _ in 0..3 {
            tried.push(p.select(None, &tried, now).unwrap().addr);
        }
        tried.sort();
        tried.dedup();
        assert_eq!(tried.len(), 3);
        assert!(p.select(None, &tried, now).is_none());
    }

    #[test]
    fn benching_follows_max_fails_within_fail_timeout() {
        let t0 = Instant::now();
        let s = Stats::default();
        let rule = BenchRule { max_fails: 3, fail_timeout: Duration::from_secs(10) };
        assert!(!s.record_failure(rule, t0));
        assert!(!s.record_failure(rule, t0 + Duration::from_secs(1)));
        // The window expired: counting starts over.
        assert!(!s.record_failure(rule, t0 + Duration::from_secs(12)));
        assert!(!s.record_failure(rule, t0 + Duration::from_secs(13)));
        assert!(s.record_failure(rule, t0 + Duration::from_secs(14)));
        assert!(s.is_benched(t0 + Duration::from_secs(15)));
        assert!(!s.is_benched(t0 + Duration::from_secs(24)));
        // max_fails = 0 disables benching.
        let off = BenchRule { max_fails: 0, ..rule };
        let s2 = Stats::default();
        assert!((0..10).all(|_| !s2.record_failure(off, t0)));
        // A success lifts the bench.
        s.record_failure(BenchRule { max_fails: 1, ..rule }, t0);
        assert!(s.is_benched(t0));
        s.record_success();
        assert!(!s.is_benched(t0));
    }

    #[test]
    fn benched_instances_leave_rotation_but_are_a_last_resort() {
        let p = pool(&[1, 1, 1], Policy::RoundRobin);
        let now = Instant::now();
        p.backends()[0].stats.record_failure(p.bench, now);
        let c = counts(&p, 100, None);
        assert_eq!(c[0], 0, "{c:?}");
        for b in p.backends() {
            b.stats.record_failure(p.bench, now);
        }
        // All benched: still answer rather than refuse.
        assert!(p.select(None, &[], now).is_some());
    }

    #[test]
    fn registry_shares_state_per_address() {
        let r = StatsRegistry::default();
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let s1 = r.get(a);
        s1.record_failure(BenchRule::default(), Instant::now());
        assert!(r.get(a).is_benched(Instant::now()));
        drop(s1);
        r.retain(|_| false);
        assert!(!r.get(a).is_benched(Instant::now()));
    }
}
