//! The checks over a recorded history.
//!
//! - [`linearizable`]: Wing & Gong's search with Lowe's memoisation (what porcupine and knossos
//!   do) for one compare-and-set register, per key (registers are independent, so the history
//!   splits by key). An operation with an unknown outcome (`Res::Info`) has no return: it may
//!   take effect anywhere after its call, or never. With `read_slack`, Consul's default reads
//!   may take effect up to that long before they were invoked: the leader lease window in which
//!   Consul documents them as possibly stale.
//! - [`stale_reads`]: how far behind each read's answer definitely was: the value it returned
//!   had been overwritten by an acknowledged write that began after the write of that value had
//!   been acknowledged, and that write had returned before the read began.
//! - [`lock_overlaps`]: two sessions holding a `?acquire` lock at once.
//! - [`write_gaps`]: the longest stretch without an acknowledged write while a quorum of servers
//!   was up and connected.

use super::history::{Fault, FaultKind, Kind, LockOp, Op, Res};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A verdict for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order explains the history; `at` is the op the search could get no further than.
    Violation {
        at: Op,
        linearized: usize,
    },
    /// The search gave up (too many states); `at` is the op it could get no further than.
    Unknown { at: Op, linearized: usize },
}

/// The register's state: index into the key's values (`0` is absent).
type State = u32;

struct Event {
    op: usize,
    call: bool,
    /// For a call: the index of its return in the list, if it has one.
    ret: Option<usize>,
    prev: usize,
    next: usize,
}

/// Checks one key's operations (already filtered to that key). `read_slack_us` widens default
/// reads as described in the module doc; `max_states` bounds the search.
///
/// Unknown operations make the search exponential in how many are pending at once, and most
/// are writes nobody ever saw. An unknown operation may also never have happened, so the
/// history without the unknown writes whose value no read returned and no CAS expected is
/// tried first: if it is linearizable, so is the whole history. Only if it is not is the whole
/// history searched.
pub fn linearizable(ops: &[Op], read_slack_us: u64, max_states: usize) -> Verdict {
    let mut seen: HashSet<&str> = HashSet::new();
    for o in ops {
        match (&o.kind, &o.result) {
            (Kind::Read { .. }, Res::Read(Some(v))) => {
                seen.insert(v);
            }
            (Kind::Cas { expected: Some(v), .. }, _) => {
                seen.insert(v);
            }
            _ => {}
        }
    }
    let unseen = |o: &Op| match (&o.kind, &o.result) {
        (Kind::Write { value } | Kind::Cas { value, .. }, Res::Info) => !seen.contains(value.as_str()),
        _ => false,
    };
    if ops.iter().any(unseen) {
        let reduced: Vec<Op> = ops.iter().filter(|o| !unseen(o)).cloned().collect();
        if search(&reduced, read_slack_us, max_states, &seen) == Verdict::Linearizable {
            return Verdict::Linearizable;
        }
    }
    search(ops, read_slack_us, max_states, &seen)
}

/// The state of a register holding a value that no read returned and no CAS expected: all
/// such values are alike to every later operation.
const UNSEEN: State = State::MAX;

#[derive(Clone, Copy)]
enum Step {
    Read(State),
    Write(State),
    /// expected, new, whether it answered true or false (`None`: unknown).
    Cas(State, State, Option<bool>),
}

/// One operation as the search sees it.
struct Entry {
    call: u64,
    /// `None`: unknown outcome, no return to respect.
    ret: Option<u64>,
    step: Step,
    op: Op,
    /// A write of a value nobody saw (see [`search`]).
    unseen: bool,
}

/// Wing & Gong's search with Lowe's memo over one key's operations.
///
/// Writes of values nobody saw (no read returned them, no CAS expected them) all leave the
/// register in the same state as far as any later operation can tell, so they are
/// interchangeable but for their deadlines: when one can be placed, only the one whose return
/// comes first is tried (any order that places another one here can swap the two). Writes held
/// through an election, dozens at once, then cost one choice instead of every ordering.
fn search(ops: &[Op], read_slack_us: u64, max_states: usize, seen: &HashSet<&str>) -> Verdict {
    let mut values: HashMap<String, State> = HashMap::new();
    let mut id = |v: &Option<String>| -> State {
        match v {
            None => 0,
            Some(s) => {
                let n = values.len() as State + 1;
                *values.entry(s.clone()).or_insert(n)
            }
        }
    };
    // Operations that constrain the register: failed ones never happened; a read with no
    // answer tells nothing.
    let mut entries: Vec<Entry> = Vec::with_capacity(ops.len());
    for o in ops.iter().filter(|o| !matches!(o.result, Res::Fail)) {
        let mut unseen = false;
        let step = match (&o.kind, &o.result) {
            (Kind::Read { .. }, Res::Read(v)) => Step::Read(id(v)),
            (Kind::Read { .. }, _) => continue,
            (Kind::Write { value }, _) if !seen.contains(value.as_str()) => {
                unseen = true;
                Step::Write(UNSEEN)
            }
            (Kind::Write { value }, _) => Step::Write(id(&Some(value.clone()))),
            (Kind::Cas { expected, value }, r) => {
                let answer = match r {
                    Res::Ok => Some(true),
                    Res::CasFalse => Some(false),
                    _ => None,
                };
                Step::Cas(id(expected), id(&Some(value.clone())), answer)
            }
        };
        let slack = matches!(o.kind, Kind::Read { consistent: false }) as u64 * read_slack_us;
        let ret = (!matches!(o.result, Res::Info)).then_some(o.ret.max(o.call));
        entries.push(Entry { call: o.call.saturating_sub(slack), ret, step, op: o.clone(), unseen });
    }
    // Events sorted by time, calls before returns at the same instant (touching operations are
    // concurrent), in a doubly linked list with a sentinel head at index 0.
    let mut order: Vec<(u64, bool, usize)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        order.push((e.call, false, i));
        if let Some(r) = e.ret {
            order.push((r, true, i));
        }
    }
    order.sort_by_key(|(t, is_ret, i)| (*t, *is_ret, *i));
    let n = order.len();
    let end = n + 1;
    let mut ev: Vec<Event> = Vec::with_capacity(n + 1);
    ev.push(Event { op: usize::MAX, call: false, ret: None, prev: 0, next: 1 });
    let mut ret_pos: HashMap<usize, usize> = HashMap::new();
    for (k, (_, is_ret, i)) in order.iter().enumerate() {
        ev.push(Event { op: *i, call: !*is_ret, ret: None, prev: k, next: k + 2 });
        if *is_ret {
            ret_pos.insert(*i, k + 1);
        }
    }
    for k in 1..=n {
        if ev[k].call {
            ev[k].ret = ret_pos.get(&ev[k].op).copied();
        }
    }
    // The set of placed operations is kept as a 128-bit Zobrist hash (one random key per
    // operation, XORed in and out): the memo holds 20 bytes per state instead of a bitset of the
    // whole history. A collision could only prune a branch, i.e. report a violation that is
    // not one; at 2^-128 per pair of states it does not happen.
    let keys: Vec<u128> =
        (0..entries.len() as u64).map(|i| (splitmix(2 * i) as u128) << 64 | splitmix(2 * i + 1) as u128).collect();
    let mut placed: u128 = 0;
    let mut cache: HashSet<(u128, State)> = HashSet::new();
    // A choice: (entry placed, state before it, placed for good, where the scan that chose it
    // resumes when it is undone, whether that scan had passed the unseen writes).
    struct Choice {
        entry: usize,
        state: State,
        kept: bool,
        resume: usize,
        passed_unseen: bool,
    }
    let mut stack: Vec<Choice> = Vec::new();
    let mut state: State = 0;
    let mut entry = ev[0].next;
    let mut passed_unseen = false;
    let mut deepest = (0usize, 0usize);
    let unlink = |ev: &mut Vec<Event>, k: usize| {
        let (p, nx) = (ev[k].prev, ev[k].next);
        ev[p].next = nx;
        if nx < end {
            ev[nx].prev = p;
        }
    };
    let relink = |ev: &mut Vec<Event>, k: usize| {
        let (p, nx) = (ev[k].prev, ev[k].next);
        ev[p].next = k;
        if nx < end {
            ev[nx].prev = k;
        }
    };
    let stuck = |deepest: (usize, usize), ev: &Vec<Event>| entries[ev[deepest.1.max(1)].op].op.clone();
    loop {
        if ev[0].next >= end {
            return Verdict::Linearizable;
        }
        // Past the last event: the returns of unknown operations, which lie at infinity.
        if entry < end && ev[entry].call {
            let scan_at = entry;
            let mut candidate = entry;
            if entries[ev[entry].op].unseen {
                if passed_unseen {
                    entry = ev[entry].next;
                    continue;
                }
                passed_unseen = true;
                // Of the unseen writes that can be placed now, the one due first.
                let due = |k: usize| entries[ev[k].op].ret.unwrap_or(u64::MAX);
                let mut k = entry;
                while k < end && ev[k].call {
                    if entries[ev[k].op].unseen && due(k) < due(candidate) {
                        candidate = k;
                    }
                    k = ev[k].next;
                }
            }
            let i = ev[candidate].op;
            let next = match entries[i].step {
                Step::Read(v) => (v == state).then_some(state),
                Step::Write(v) => Some(v),
                Step::Cas(exp, new, Some(true)) => (exp == state).then_some(new),
                Step::Cas(exp, _, Some(false)) => (exp != state).then_some(state),
                Step::Cas(exp, new, None) => Some(if exp == state { new } else { state }),
            };
            match next {
                Some(s) if cache.insert((placed ^ keys[i], s)) => {
                    if cache.len() > max_states {
                        return Verdict::Unknown { at: stuck(deepest, &ev), linearized: deepest.0 };
                    }
                    // An operation that leaves the state as it is (a read, a CAS that failed)
                    // and fits now is placed now for good: any order that places it later can
                    // place it here instead, so deferring it is never tried.
                    let kept = matches!(entries[i].step, Step::Read(_) | Step::Cas(_, _, Some(false)));
                    let passed_before = passed_unseen && !entries[i].unseen;
                    stack.push(Choice { entry: candidate, state, kept, resume: scan_at, passed_unseen: passed_before });
                    placed ^= keys[i];
                    state = s;
                    unlink(&mut ev, candidate);
                    if let Some(r) = ev[candidate].ret {
                        unlink(&mut ev, r);
                    }
                    if stack.len() > deepest.0 {
                        deepest = (stack.len(), candidate);
                    }
                    entry = ev[0].next;
                    passed_unseen = false;
                }
                _ => entry = ev[entry].next,
            }
        } else {
            // A return whose call is not placed yet: undo the last choice (and the operations
            // placed for good after it).
            loop {
                let Some(c) = stack.pop() else {
                    return Verdict::Violation { at: stuck(deepest, &ev), linearized: deepest.0 };
                };
                state = c.state;
                let i = ev[c.entry].op;
                placed ^= keys[i];
                if let Some(r) = ev[c.entry].ret {
                    relink(&mut ev, r);
                }
                relink(&mut ev, c.entry);
                if !c.kept {
                    entry = ev[c.resume].next;
                    passed_unseen = c.passed_unseen || entries[i].unseen;
                    break;
                }
            }
        }
    }
}

/// A well-mixed 64-bit value for `x` (SplitMix64's finalizer).
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

/// Per-key linearizability of a whole history, keys in parallel on up to `threads` threads.
pub fn linearizable_by_key(ops: &[Op], read_slack_us: u64, max_states: usize) -> BTreeMap<String, Verdict> {
    let mut by_key: BTreeMap<String, Vec<Op>> = BTreeMap::new();
    for o in ops {
        by_key.entry(o.key.clone()).or_default().push(o.clone());
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = by_key
            .into_iter()
            .map(|(k, ops)| s.spawn(move || (k, linearizable(&ops, read_slack_us, max_states))))
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    })
}

/// A read that answered a value already overwritten when it began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleRead {
    pub op: Op,
    /// How long before the read began its answer had been overwritten.
    pub by_us: u64,
}

/// Reads whose answers were definitely stale, and by how much (see the module doc). A read of a
/// value nobody wrote is returned with `by_us = u64::MAX`.
pub fn stale_reads(ops: &[Op]) -> Vec<StaleRead> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for o in ops {
        by_key.entry(&o.key).or_default().push(o);
    }
    let mut out = Vec::new();
    for ops in by_key.values() {
        // Each value's write: (call, return if acknowledged).
        let mut written: HashMap<&str, (u64, Option<u64>)> = HashMap::new();
        let mut acked: Vec<(u64, u64)> = Vec::new();
        for o in ops {
            let value = match &o.kind {
                Kind::Write { value } | Kind::Cas { value, .. } => value.as_str(),
                Kind::Read { .. } => continue,
            };
            match o.result {
                Res::Ok => {
                    written.insert(value, (o.call, Some(o.ret)));
                    acked.push((o.call, o.ret));
                }
                Res::Info => {
                    written.insert(value, (o.call, None));
                }
                _ => {}
            }
        }
        for o in ops {
            let Res::Read(v) = &o.result else { continue };
            // When its value was definitely gone: the first return of an acknowledged write
            // that began after the value's own write returned.
            let gone = match v {
                None => acked.iter().map(|(_, r)| *r).min(),
                Some(v) => match written.get(v.as_str()) {
                    None => {
                        out.push(StaleRead { op: (*o).clone(), by_us: u64::MAX });
                        continue;
                    }
                    Some((_, None)) => None,
                    Some((_, Some(vr))) => acked.iter().filter(|(c, _)| c > vr).map(|(_, r)| *r).min(),
                },
            };
            if let Some(g) = gone {
                if o.call > g {
                    out.push(StaleRead { op: (*o).clone(), by_us: o.call - g });
                }
            }
        }
    }
    out
}

/// Two sessions holding the lock at once: for each session, from an acquire that answered true
/// to the call of its next release (or the end), no other session's such stretch may overlap.
pub fn lock_overlaps(locks: &[LockOp], end: u64) -> Vec<(LockOp, LockOp)> {
    let mut held: Vec<(u64, u64, &LockOp)> = Vec::new();
    let mut by_session: BTreeMap<&str, Vec<&LockOp>> = BTreeMap::new();
    for l in locks {
        by_session.entry(&l.session).or_default().push(l);
    }
    for ops in by_session.values_mut() {
        ops.sort_by_key(|l| l.call);
        for (i, l) in ops.iter().enumerate() {
            if l.acquire && l.answer == Some(true) {
                let until = ops[i + 1..].iter().find(|n| !n.acquire).map(|n| n.call).unwrap_or(end);
                held.push((l.ret, until, l));
            }
        }
    }
    held.sort_by_key(|h| h.0);
    let mut out = Vec::new();
    for (i, a) in held.iter().enumerate() {
        for b in &held[i + 1..] {
            if b.0 >= a.1 {
                break;
            }
            if a.2.session != b.2.session {
                out.push((a.2.clone(), b.2.clone()));
            }
        }
    }
    out
}

/// Stretches (start, end) in which a quorum of `servers` servers was up and connected,
/// according to the faults (one fault at a time or overlapping ones).
pub fn quorum_up(faults: &[Fault], servers: u32, start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut times: Vec<u64> = vec![start, end];
    for f in faults {
        times.push(f.start.clamp(start, end));
        times.push(f.end.clamp(start, end));
    }
    times.sort();
    times.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for w in times.windows(2) {
        let (a, b) = (w[0], w[1]);
        let mid = a + (b - a) / 2;
        let active: Vec<&Fault> = faults.iter().filter(|f| f.start <= mid && mid < f.end).collect();
        let down: HashSet<u32> =
            active.iter().filter(|f| f.kind != FaultKind::Partition).flat_map(|f| f.servers.iter().copied()).collect();
        let cut: HashSet<u32> =
            active.iter().filter(|f| f.kind == FaultKind::Partition).flat_map(|f| f.servers.iter().copied()).collect();
        // The cut-off servers form one side, the rest the other; the larger side of up servers
        // must be a majority.
        let up_in = (0..servers).filter(|s| !down.contains(s) && cut.contains(s)).count();
        let up_out = (0..servers).filter(|s| !down.contains(s) && !cut.contains(s)).count();
        if up_in.max(up_out) as u32 > servers / 2 {
            match out.last_mut() {
                Some(last) if last.1 == a => last.1 = b,
                _ => out.push((a, b)),
            }
        }
    }
    out
}

/// The longest stretch inside `up` with no acknowledged write (`acks`: completion times),
/// and where it began.
pub fn write_gaps(acks: &[u64], up: &[(u64, u64)]) -> (u64, u64) {
    let mut acks = acks.to_vec();
    acks.sort();
    let mut best = (0, 0);
    for (a, b) in up {
        let mut last = *a;
        for t in acks.iter().filter(|t| **t >= *a && **t <= *b) {
            if t - last > best.0 {
                best = (t - last, last);
            }
            last = *t;
        }
        // A stretch still open when the quorum went away counts up to then.
        if b - last > best.0 {
            best = (b - last, last);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(process: u32, kind: Kind, call: u64, ret: u64, result: Res) -> Op {
        Op { process, key: "k".into(), kind, call, ret, result, server: 0 }
    }
    fn w(v: &str) -> Kind {
        Kind::Write { value: v.into() }
    }
    fn r() -> Kind {
        Kind::Read { consistent: true }
    }
    fn dr() -> Kind {
        Kind::Read { consistent: false }
    }
    fn cas(e: Option<&str>, v: &str) -> Kind {
        Kind::Cas { expected: e.map(Into::into), value: v.into() }
    }
    fn val(v: &str) -> Res {
        Res::Read(Some(v.into()))
    }

    #[test]
    fn sequential_histories() {
        let h = vec![
            op(0, r(), 0, 1, Res::Read(None)),
            op(0, w("a"), 2, 3, Res::Ok),
            op(0, r(), 4, 5, val("a")),
            op(0, cas(Some("a"), "b"), 6, 7, Res::Ok),
            op(0, cas(Some("a"), "c"), 8, 9, Res::CasFalse),
            op(0, r(), 10, 11, val("b")),
        ];
        assert_eq!(linearizable(&h, 0, 1 << 20), Verdict::Linearizable);
        let mut bad = h.clone();
        bad[5].result = val("a");
        assert!(matches!(linearizable(&bad, 0, 1 << 20), Verdict::Violation { .. }));
        let mut bad = h.clone();
        bad[4].result = Res::Ok;
        assert!(matches!(linearizable(&bad, 0, 1 << 20), Verdict::Violation { .. }));
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // Two overlapping writes, then reads that saw b then a: impossible; a then b: fine.
        let base = vec![op(0, w("a"), 0, 10, Res::Ok), op(1, w("b"), 1, 9, Res::Ok)];
        let mut ok = base.clone();
        ok.push(op(2, r(), 2, 3, val("b")));
        ok.push(op(2, r(), 11, 12, val("a")));
        assert_eq!(linearizable(&ok, 0, 1 << 20), Verdict::Linearizable);
        let mut bad = base;
        bad.push(op(2, r(), 11, 12, val("a")));
        bad.push(op(3, r(), 13, 14, val("b")));
        assert!(matches!(linearizable(&bad, 0, 1 << 20), Verdict::Violation { .. }));
    }

    #[test]
    fn unknown_outcomes_may_happen_late_or_never() {
        // A timed-out write, seen much later; another never seen at all.
        let h = vec![
            op(0, w("a"), 0, 1, Res::Ok),
            op(1, w("x"), 2, 3, Res::Info),
            op(1, w("y"), 4, 5, Res::Info),
            op(2, r(), 6, 7, val("a")),
            op(2, r(), 100, 101, val("x")),
        ];
        assert_eq!(linearizable(&h, 0, 1 << 20), Verdict::Linearizable);
        // ... but not before it was invoked.
        let h = vec![op(0, r(), 0, 1, val("x")), op(1, w("x"), 2, 3, Res::Info)];
        assert!(matches!(linearizable(&h, 0, 1 << 20), Verdict::Violation { .. }));
        // A failed operation never happened.
        let h = vec![op(1, w("x"), 0, 1, Res::Fail), op(0, r(), 2, 3, val("x"))];
        assert!(matches!(linearizable(&h, 0, 1 << 20), Verdict::Violation { .. }));
        // An unknown CAS may have failed or succeeded.
        let h = vec![
            op(0, w("a"), 0, 1, Res::Ok),
            op(1, cas(Some("a"), "b"), 2, 3, Res::Info),
            op(0, r(), 4, 5, val("a")),
            op(0, r(), 6, 7, val("b")),
        ];
        assert_eq!(linearizable(&h, 0, 1 << 20), Verdict::Linearizable);
    }

    #[test]
    fn many_unknown_writes_nobody_saw_do_not_blow_up_the_search() {
        // 60 timed-out writes nobody saw, pending to the end, around a stale read: the search
        // must find the violation, not give up.
        let mut h = vec![op(0, w("a"), 0, 1, Res::Ok)];
        for i in 0..60 {
            h.push(op(1 + i, w(&format!("lost{i}")), 2 + i as u64, 3 + i as u64, Res::Info));
        }
        h.push(op(100, w("b"), 100, 101, Res::Ok));
        h.push(op(100, r(), 102, 103, val("a")));
        assert!(matches!(linearizable(&h, 0, 1 << 16), Verdict::Violation { .. }));
        // A CAS that failed because one of them happened is fine.
        let mut h = h[..61].to_vec();
        h.push(op(100, cas(Some("a"), "c"), 100, 101, Res::CasFalse));
        h.push(op(100, r(), 102, 103, Res::Read(Some("a".into()))));
        assert!(matches!(linearizable(&h, 0, 1 << 16), Verdict::Violation { .. }), "a was overwritten");
        let mut h = h[..62].to_vec();
        h.push(op(100, w("d"), 102, 103, Res::Ok));
        h.push(op(100, r(), 104, 105, val("d")));
        assert_eq!(linearizable(&h, 0, 1 << 16), Verdict::Linearizable);
    }

    #[test]
    fn default_reads_get_the_lease_window_and_no_more() {
        let h = vec![op(0, w("a"), 0, 1, Res::Ok), op(0, w("b"), 2, 3, Res::Ok), op(1, dr(), 10, 11, val("a"))];
        assert!(matches!(linearizable(&h, 0, 1 << 20), Verdict::Violation { .. }));
        assert_eq!(linearizable(&h, 7, 1 << 20), Verdict::Linearizable);
        assert!(matches!(linearizable(&h, 6, 1 << 20), Verdict::Violation { .. }));
        let stale = stale_reads(&h);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].by_us, 7);
        // A ?consistent read gets no window.
        let mut h = h;
        h[2].kind = r();
        assert!(matches!(linearizable(&h, 8, 1 << 20), Verdict::Violation { .. }));
    }

    #[test]
    fn stale_reads_only_when_definitely_overwritten() {
        let h = vec![
            op(0, w("a"), 0, 1, Res::Ok),
            // Concurrent with a's write: not definitely after it.
            op(1, w("b"), 0, 5, Res::Ok),
            op(2, r(), 10, 11, val("a")),
        ];
        assert!(stale_reads(&h).is_empty());
        let h = vec![op(2, r(), 10, 11, val("zz"))];
        assert_eq!(stale_reads(&h)[0].by_us, u64::MAX);
    }

    #[test]
    fn locks_held_by_two_sessions_are_found() {
        let l = |s: &str, acquire, call, ret, answer| LockOp { session: s.into(), acquire, call, ret, answer };
        let ok = vec![
            l("a", true, 0, 1, Some(true)),
            l("b", true, 2, 3, Some(false)),
            l("a", false, 4, 5, Some(true)),
            l("b", true, 6, 7, Some(true)),
        ];
        assert!(lock_overlaps(&ok, 100).is_empty());
        let bad = vec![l("a", true, 0, 1, Some(true)), l("b", true, 2, 3, Some(true)), l("a", false, 4, 5, Some(true))];
        assert_eq!(lock_overlaps(&bad, 100).len(), 1);
    }

    #[test]
    fn availability_counts_only_time_with_a_quorum() {
        let f = |kind, servers: Vec<u32>, start, end| Fault { kind, servers, start, end };
        let faults = vec![f(FaultKind::Kill, vec![0, 1], 10, 20), f(FaultKind::Partition, vec![2], 30, 40)];
        assert_eq!(quorum_up(&faults, 3, 0, 50), vec![(0, 10), (20, 50)]);
        assert_eq!(write_gaps(&[5, 25, 45], &[(0, 10), (20, 50)]), (20, 25));
    }

    #[test]
    fn a_large_concurrent_history_is_checked_quickly() {
        // 8 clients, 4000 operations, some unknown.
        let mut h = Vec::new();
        let mut t = 0u64;
        let mut cur: Option<String> = None;
        for i in 0..4000u64 {
            let p = (i % 8) as u32;
            let v = format!("v{i}");
            let (kind, res) = match i % 4 {
                0 => (w(&v), if i % 40 == 0 { Res::Info } else { Res::Ok }),
                1 => (r(), Res::Read(cur.clone())),
                2 => (cas(cur.as_deref(), &v), Res::Ok),
                _ => (dr(), Res::Read(cur.clone())),
            };
            if matches!(kind, Kind::Write { .. } | Kind::Cas { .. }) && res == Res::Ok {
                cur = Some(v.clone());
            }
            h.push(op(p, kind, t, t + 15, res));
            t += 2;
        }
        let started = std::time::Instant::now();
        assert_eq!(linearizable(&h, 0, 1 << 22), Verdict::Linearizable);
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
    }
}
