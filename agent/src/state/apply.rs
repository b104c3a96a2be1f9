//! Applying one command to the state: the only code that writes it. Deterministic: the same
//! commands at the same indexes give the same state on every server.

use super::{Changes, State, Table};
use crate::structs::*;

pub(super) fn apply(state: &mut State, index: u64, req: &Request, ch: &mut Changes) -> Response {
    let now = req.now_ms;
    match &req.command {
        Command::Register(r) => match register(state, index, r, now, ch) {
            Ok(()) => Response::Ok,
            Err(e) => Response::Error(e),
        },
        Command::Deregister(r) => {
            deregister(state, index, r, now, ch);
            Response::Ok
        }
        Command::Kv(r) => match kv(state, index, r, now, ch) {
            Ok(b) => Response::Bool(b),
            Err(e) => Response::Error(e),
        },
        Command::SessionCreate(s) => match session_create(state, index, s, ch) {
            Ok(()) => Response::Ok,
            Err(e) => Response::Error(e),
        },
        Command::SessionDestroy { id } => {
            session_invalidate(state, index, id, now, ch);
            Response::Ok
        }
        Command::Txn(ops) => Response::Txn(txn(state, index, ops, now, ch)),
        Command::Restore(snapshot) => {
            let last = state.last_index.max(index);
            *state = (**snapshot).clone();
            state.last_index = last;
            ch.all = true;
            Response::Ok
        }
        Command::Batch(requests) => Response::Batch(requests.iter().map(|r| apply(state, index, r, ch)).collect()),
        Command::AutopilotSet { config, cas } => {
            let current = state.autopilot.as_ref().map(|(_, _, m)| *m).unwrap_or(0);
            if cas.is_some_and(|c| c != current) {
                return Response::Bool(false);
            }
            let create = state.autopilot.as_ref().map(|(_, c, _)| *c).unwrap_or(index);
            state.autopilot = Some((config.clone(), create, index));
            Response::Bool(true)
        }
        Command::Acl(cmd) => super::apply_acl::apply(state, index, cmd, ch),
        Command::ConfigEntrySet { entry, cas } => {
            let kind = entry.get("Kind").and_then(|v| v.as_str()).unwrap_or_default().to_string();
            let name = entry.get("Name").and_then(|v| v.as_str()).unwrap_or_default().to_string();
            let existing = state.config_entries.get(&kind).and_then(|m| m.get(&name));
            let current = existing.and_then(|e| e.get("ModifyIndex")).and_then(|v| v.as_u64()).unwrap_or(0);
            if cas.is_some_and(|c| c != current) {
                return Response::Bool(false);
            }
            let create = existing.and_then(|e| e.get("CreateIndex")).and_then(|v| v.as_u64()).unwrap_or(index);
            let mut e = entry.clone();
            if let Some(m) = e.as_object_mut() {
                m.insert("CreateIndex".into(), create.into());
                m.insert("ModifyIndex".into(), index.into());
            }
            state.config_entries.entry(kind).or_default().insert(name, e);
            state.index.config_entries = index;
            ch.table(Table::ConfigEntries);
            Response::Bool(true)
        }
        Command::ConfigEntryDelete { kind, name, cas } => {
            let current = state
                .config_entries
                .get(kind)
                .and_then(|m| m.get(name))
                .and_then(|e| e.get("ModifyIndex"))
                .and_then(|v| v.as_u64());
            if let Some(c) = cas {
                if current != Some(*c) {
                    return Response::Bool(false);
                }
            }
            if let Some(m) = state.config_entries.get_mut(kind) {
                m.remove(name);
                if m.is_empty() {
                    state.config_entries.remove(kind);
                }
            }
            state.index.config_entries = index;
            ch.table(Table::ConfigEntries);
            Response::Bool(true)
        }
        Command::CoordinateBatch(updates) => {
            for (node, coord) in updates {
                state.coordinates.insert(node.clone(), coord.clone());
            }
            state.index.coordinates = index;
            ch.table(Table::Coordinates);
            Response::Ok
        }
        Command::QuerySet { query } => {
            let id = query.get("ID").and_then(|v| v.as_str()).unwrap_or_default().to_string();
            let create = state
                .prepared_queries
                .get(&id)
                .and_then(|q| q.get("CreateIndex"))
                .and_then(|v| v.as_u64())
                .unwrap_or(index);
            let mut q = query.clone();
            if let Some(m) = q.as_object_mut() {
                m.insert("CreateIndex".into(), create.into());
                m.insert("ModifyIndex".into(), index.into());
            }
            state.prepared_queries.insert(id, q);
            state.index.prepared_queries = index;
            ch.table(Table::PreparedQueries);
            Response::Ok
        }
        Command::QueryDelete { id } => {
            state.prepared_queries.remove(id);
            state.index.prepared_queries = index;
            ch.table(Table::PreparedQueries);
            Response::Ok
        }
        Command::ConnectCaSet { ca, cas } => {
            let current =
                state.connect_ca.as_ref().and_then(|c| c.get("ModifyIndex")).and_then(|v| v.as_u64()).unwrap_or(0);
            if cas.is_some_and(|c| c != current) {
                return Response::Bool(false);
            }
            let create =
                state.connect_ca.as_ref().and_then(|c| c.get("CreateIndex")).and_then(|v| v.as_u64()).unwrap_or(index);
            let mut ca = ca.clone();
            if let Some(m) = ca.as_object_mut() {
                m.insert("CreateIndex".into(), create.into());
                m.insert("ModifyIndex".into(), index.into());
            }
            state.connect_ca = Some(ca);
            state.index.connect_ca = index;
            ch.table(Table::ConnectCa);
            Response::Bool(true)
        }
        Command::TombstoneReap { up_to } => {
            state.tombstones.retain(|_, i| *i > *up_to);
            Response::Ok
        }
    }
}

fn touch_service(state: &mut State, name: &str, index: u64, ch: &mut Changes) {
    if name.is_empty() {
        return;
    }
    state.service_index.insert(name.to_string(), index);
    ch.service(name);
}

/// A node-level change (the node itself or one of its node checks) changes the health of every
/// service on it.
fn touch_node_services(state: &mut State, node: &str, index: u64, ch: &mut Changes) {
    let names: Vec<String> = state.node_services(node).map(|s| s.service.clone()).collect();
    for n in names {
        touch_service(state, &n, index, ch);
    }
    ch.node(node);
}

fn same_node(a: &Node, b: &Node) -> bool {
    a.id == b.id
        && a.address == b.address
        && a.datacenter == b.datacenter
        && a.tagged_addresses == b.tagged_addresses
        && a.meta == b.meta
}

fn same_service(a: &Service, b: &Service) -> bool {
    Service { create_index: 0, modify_index: 0, ..a.clone() }
        == Service { create_index: 0, modify_index: 0, ..b.clone() }
}

fn same_check(a: &Check, b: &Check) -> bool {
    Check { create_index: 0, modify_index: 0, ..a.clone() } == Check { create_index: 0, modify_index: 0, ..b.clone() }
}

pub(super) fn ensure_node(state: &mut State, index: u64, node: &Node, ch: &mut Changes) -> Result<(), String> {
    if node.node.is_empty() {
        return Err("Must provide node".into());
    }
    if node.address.is_empty() {
        return Err("Must provide address".into());
    }
    if let Some(existing) = state.nodes.get(&node.node) {
        if same_node(existing, node) {
            return Ok(());
        }
    }
    let create_index = state.nodes.get(&node.node).map(|n| n.create_index).unwrap_or(index);
    let n = Node { create_index, modify_index: index, ..node.clone() };
    state.nodes.insert(node.node.clone(), n);
    state.index.nodes = index;
    ch.table(Table::Nodes);
    touch_node_services(state, &node.node, index, ch);
    Ok(())
}

pub(super) fn ensure_service(
    state: &mut State,
    index: u64,
    node: &str,
    svc: &Service,
    ch: &mut Changes,
) -> Result<(), String> {
    if !state.nodes.contains_key(node) {
        return Err(format!("Missing node registration: {node}"));
    }
    let mut svc = svc.clone();
    if svc.id.is_empty() {
        svc.id = svc.service.clone();
    }
    let existing = state.services.get(node).and_then(|m| m.get(&svc.id)).cloned();
    if let Some(e) = &existing {
        if same_service(e, &svc) {
            return Ok(());
        }
    }
    svc.create_index = existing.as_ref().map(|e| e.create_index).unwrap_or(index);
    svc.modify_index = index;
    let name = svc.service.clone();
    if let Some(old) = &existing {
        if old.service != name {
            touch_service(state, &old.service.clone(), index, ch);
        }
    }
    // Checks of this service carry its name and tags.
    if let Some(checks) = state.checks.get_mut(node) {
        for c in checks.values_mut().filter(|c| c.service_id == svc.id) {
            if c.service_name != svc.service || c.service_tags != svc.tags {
                c.service_name = svc.service.clone();
                c.service_tags = svc.tags.clone();
                c.modify_index = index;
                state.index.checks = index;
                ch.table(Table::Checks);
            }
        }
    }
    state.services.entry(node.to_string()).or_default().insert(svc.id.clone(), svc);
    state.index.services = index;
    ch.table(Table::Services);
    touch_service(state, &name, index, ch);
    Ok(())
}

pub(super) fn ensure_check(
    state: &mut State,
    index: u64,
    check: &Check,
    now: u64,
    ch: &mut Changes,
) -> Result<(), String> {
    if !state.nodes.contains_key(&check.node) {
        return Err(format!("Missing node registration: {}", check.node));
    }
    let mut c = check.clone();
    if c.check_id.is_empty() {
        c.check_id = c.name.clone();
    }
    if c.check_id.is_empty() {
        return Err("Missing check ID".into());
    }
    if c.status.is_none() {
        c.status = Some(Status::Critical);
    }
    if !c.service_id.is_empty() {
        let svc = state
            .services
            .get(&c.node)
            .and_then(|m| m.get(&c.service_id))
            .ok_or_else(|| format!("Missing service registration: {}", c.service_id))?;
        c.service_name = svc.service.clone();
        c.service_tags = svc.tags.clone();
    } else {
        c.service_name.clear();
        c.service_tags.clear();
    }
    let existing = state.checks.get(&c.node).and_then(|m| m.get(&c.check_id)).cloned();
    if let Some(e) = &existing {
        if same_check(e, &c) {
            return Ok(());
        }
    }
    c.create_index = existing.as_ref().map(|e| e.create_index).unwrap_or(index);
    c.modify_index = index;
    let went_critical = c.status() == Status::Critical;
    let (node, id, service_id, service_name) =
        (c.node.clone(), c.check_id.clone(), c.service_id.clone(), c.service_name.clone());
    state.checks.entry(node.clone()).or_default().insert(id.clone(), c);
    state.index.checks = index;
    ch.table(Table::Checks);
    if service_id.is_empty() {
        touch_node_services(state, &node, index, ch);
    } else {
        touch_service(state, &service_name, index, ch);
        ch.node(&node);
    }
    if went_critical {
        invalidate_sessions_for_check(state, index, &node, &id, now, ch);
    }
    Ok(())
}

fn register(state: &mut State, index: u64, r: &RegisterRequest, now: u64, ch: &mut Changes) -> Result<(), String> {
    // Validate what we can up front so that a refused registration writes nothing.
    if r.node.node.is_empty() {
        return Err("Must provide node".into());
    }
    if !(r.skip_node_update && state.nodes.contains_key(&r.node.node)) {
        if r.node.address.is_empty() {
            return Err("Must provide address".into());
        }
    }
    if let Some(s) = &r.service {
        if s.service.is_empty() {
            return Err("Must provide service name with ID".into());
        }
    }
    for c in &r.checks {
        if !c.service_id.is_empty() {
            let in_request = r.service.as_ref().map(|s| {
                let id = if s.id.is_empty() { &s.service } else { &s.id };
                id == &c.service_id
            });
            let in_state = state.services.get(&r.node.node).is_some_and(|m| m.contains_key(&c.service_id));
            if in_request != Some(true) && !in_state {
                return Err(format!("Missing service registration: {}", c.service_id));
            }
        }
    }
    if !(r.skip_node_update && state.nodes.contains_key(&r.node.node)) {
        ensure_node(state, index, &r.node, ch)?;
    }
    if let Some(s) = &r.service {
        ensure_service(state, index, &r.node.node, s, ch)?;
    }
    for c in &r.checks {
        let c = Check { node: r.node.node.clone(), ..c.clone() };
        ensure_check(state, index, &c, now, ch)?;
    }
    Ok(())
}

fn remove_check(state: &mut State, index: u64, node: &str, check_id: &str, now: u64, ch: &mut Changes) {
    let Some(c) = state.checks.get_mut(node).and_then(|m| m.remove(check_id)) else { return };
    state.index.checks = index;
    ch.table(Table::Checks);
    if c.service_id.is_empty() {
        touch_node_services(state, node, index, ch);
    } else {
        touch_service(state, &c.service_name, index, ch);
        ch.node(node);
    }
    invalidate_sessions_for_check(state, index, node, check_id, now, ch);
}

fn remove_service(state: &mut State, index: u64, node: &str, service_id: &str, now: u64, ch: &mut Changes) {
    let Some(s) = state.services.get_mut(node).and_then(|m| m.remove(service_id)) else { return };
    state.index.services = index;
    ch.table(Table::Services);
    ch.node(node);
    touch_service(state, &s.service, index, ch);
    let ids: Vec<String> =
        state.node_checks(node).filter(|c| c.service_id == service_id).map(|c| c.check_id.clone()).collect();
    for id in ids {
        remove_check(state, index, node, &id, now, ch);
    }
}

fn deregister(state: &mut State, index: u64, r: &DeregisterRequest, now: u64, ch: &mut Changes) {
    match (&r.service_id, &r.check_id) {
        (Some(s), _) => remove_service(state, index, &r.node, s, now, ch),
        (None, Some(c)) => remove_check(state, index, &r.node, c, now, ch),
        (None, None) => {
            let services: Vec<String> = state.node_services(&r.node).map(|s| s.id.clone()).collect();
            for s in services {
                remove_service(state, index, &r.node, &s, now, ch);
            }
            let checks: Vec<String> = state.node_checks(&r.node).map(|c| c.check_id.clone()).collect();
            for c in checks {
                remove_check(state, index, &r.node, &c, now, ch);
            }
            state.services.remove(&r.node);
            state.checks.remove(&r.node);
            if state.nodes.remove(&r.node).is_some() {
                state.index.nodes = index;
                ch.table(Table::Nodes);
                ch.node(&r.node);
            }
            let sessions: Vec<String> =
                state.sessions.values().filter(|s| s.node == r.node).map(|s| s.id.clone()).collect();
            for id in sessions {
                session_invalidate(state, index, &id, now, ch);
            }
        }
    }
}

// ---- KV ----

fn kv_changed(state: &mut State, index: u64, key: &str, ch: &mut Changes) {
    state.index.kv = index;
    ch.table(Table::Kv);
    ch.kv_keys.push(key.to_string());
}

fn kv_set(state: &mut State, index: u64, key: &str, value: &[u8], flags: u64, ch: &mut Changes) {
    let entry = state.kv.entry(key.to_string()).or_insert_with(|| KvEntry {
        key: key.to_string(),
        create_index: index,
        ..Default::default()
    });
    entry.value = value.to_vec();
    entry.flags = flags;
    entry.modify_index = index;
    state.tombstones.remove(key);
    kv_changed(state, index, key, ch);
}

fn kv_delete(state: &mut State, index: u64, key: &str, ch: &mut Changes) {
    if state.kv.remove(key).is_some() {
        state.tombstones.insert(key.to_string(), index);
        kv_changed(state, index, key, ch);
    }
}

fn kv(state: &mut State, index: u64, r: &KvRequest, now: u64, ch: &mut Changes) -> Result<bool, String> {
    match r.op {
        KvOp::Set => {
            kv_set(state, index, &r.key, &r.value, r.flags, ch);
            Ok(true)
        }
        KvOp::Cas => {
            let current = state.kv.get(&r.key).map(|e| e.modify_index);
            let ok = match (r.modify_index, current) {
                (0, None) => true,
                (0, Some(_)) => false,
                (i, Some(c)) => i == c,
                (_, None) => false,
            };
            if ok {
                kv_set(state, index, &r.key, &r.value, r.flags, ch);
            }
            Ok(ok)
        }
        KvOp::Lock => {
            let session = r.session.clone().unwrap_or_default();
            if !state.sessions.contains_key(&session) {
                return Err(format!("invalid session \"{session}\""));
            }
            if let Some(until) = state.lock_delays.get(&r.key) {
                if now < *until {
                    return Ok(false);
                }
            }
            match state.kv.get(&r.key).and_then(|e| e.session.clone()) {
                Some(holder) if holder != session => Ok(false),
                Some(_) => {
                    kv_set(state, index, &r.key, &r.value, r.flags, ch);
                    Ok(true)
                }
                None => {
                    kv_set(state, index, &r.key, &r.value, r.flags, ch);
                    if let Some(e) = state.kv.get_mut(&r.key) {
                        e.session = Some(session);
                        e.lock_index += 1;
                    }
                    Ok(true)
                }
            }
        }
        KvOp::Unlock => {
            let session = r.session.clone().unwrap_or_default();
            match state.kv.get(&r.key).and_then(|e| e.session.clone()) {
                Some(holder) if holder == session => {
                    kv_set(state, index, &r.key, &r.value, r.flags, ch);
                    if let Some(e) = state.kv.get_mut(&r.key) {
                        e.session = None;
                    }
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
        KvOp::Delete => {
            kv_delete(state, index, &r.key, ch);
            Ok(true)
        }
        KvOp::DeleteTree => {
            let keys: Vec<String> = state.kv_prefix(&r.key).map(|e| e.key.clone()).collect();
            for k in keys {
                kv_delete(state, index, &k, ch);
            }
            Ok(true)
        }
        KvOp::DeleteCas => {
            let ok = state.kv.get(&r.key).is_some_and(|e| e.modify_index == r.modify_index);
            if ok {
                kv_delete(state, index, &r.key, ch);
            }
            Ok(ok)
        }
    }
}

// ---- sessions ----

fn session_create(state: &mut State, index: u64, s: &Session, ch: &mut Changes) -> Result<(), String> {
    if !state.nodes.contains_key(&s.node) {
        return Err(format!("Missing node registration: {}", s.node));
    }
    for id in &s.node_checks {
        let c = state
            .checks
            .get(&s.node)
            .and_then(|m| m.get(id))
            .ok_or_else(|| format!("Missing check '{id}' registration"))?;
        if c.status() == Status::Critical {
            return Err(format!("Check '{id}' is in critical state"));
        }
    }
    for id in &s.service_checks {
        let c = state
            .checks
            .get(&s.node)
            .and_then(|m| m.get(id))
            .ok_or_else(|| format!("Missing check '{id}' registration"))?;
        if c.status() == Status::Critical {
            return Err(format!("Check '{id}' is in critical state"));
        }
    }
    let session = Session { create_index: index, modify_index: index, ..s.clone() };
    state.sessions.insert(s.id.clone(), session);
    state.index.sessions = index;
    ch.table(Table::Sessions);
    Ok(())
}

/// Removes a session and releases or deletes what it held, starting each key's lock-delay.
fn session_invalidate(state: &mut State, index: u64, id: &str, now: u64, ch: &mut Changes) {
    let Some(session) = state.sessions.remove(id) else { return };
    state.index.sessions = index;
    ch.table(Table::Sessions);
    // A prepared query bound to the session goes with it, as in Consul.
    let before = state.prepared_queries.len();
    state.prepared_queries.retain(|_, q| q.get("Session").and_then(|s| s.as_str()) != Some(id));
    if state.prepared_queries.len() != before {
        state.index.prepared_queries = index;
        ch.table(Table::PreparedQueries);
    }
    let held: Vec<String> =
        state.kv.values().filter(|e| e.session.as_deref() == Some(id)).map(|e| e.key.clone()).collect();
    for key in held {
        if session.lock_delay_ns > 0 {
            state.lock_delays.insert(key.clone(), now + session.lock_delay_ns / 1_000_000);
        }
        match session.behavior {
            SessionBehavior::Release => {
                if let Some(e) = state.kv.get_mut(&key) {
                    e.session = None;
                    e.modify_index = index;
                }
                kv_changed(state, index, &key, ch);
            }
            SessionBehavior::Delete => kv_delete(state, index, &key, ch),
        }
    }
    // Expired delays are forgotten whenever a session goes: the map stays small.
    state.lock_delays.retain(|_, until| *until > now);
}

fn invalidate_sessions_for_check(
    state: &mut State,
    index: u64,
    node: &str,
    check_id: &str,
    now: u64,
    ch: &mut Changes,
) {
    let ids: Vec<String> = state
        .sessions
        .values()
        .filter(|s| {
            s.node == node
                && (s.node_checks.iter().any(|c| c == check_id) || s.service_checks.iter().any(|c| c == check_id))
        })
        .map(|s| s.id.clone())
        .collect();
    for id in ids {
        session_invalidate(state, index, &id, now, ch);
    }
}

// ---- transactions ----

/// Runs every op against a copy; commits the copy only if all succeed (Consul's all-or-nothing).
fn txn(state: &mut State, index: u64, ops: &[TxnOp], now: u64, ch: &mut Changes) -> TxnResult {
    let mut scratch = state.clone();
    let mut scratch_ch = Changes::default();
    let mut result = TxnResult::default();
    for (i, op) in ops.iter().enumerate() {
        match txn_op(&mut scratch, index, op, now, &mut scratch_ch) {
            Ok(Some(r)) => result.results.push(r),
            Ok(None) => {}
            Err(e) => result.errors.push((i, e)),
        }
    }
    if result.errors.is_empty() {
        *state = scratch;
        ch.tables.extend(scratch_ch.tables);
        ch.kv_keys.extend(scratch_ch.kv_keys);
        ch.services.extend(scratch_ch.services);
        ch.nodes.extend(scratch_ch.nodes);
    } else {
        result.results.clear();
    }
    result
}

fn without_value(e: Option<&KvEntry>) -> Option<KvEntry> {
    e.map(|e| KvEntry { value: Vec::new(), ..e.clone() })
}

fn txn_op(s: &mut State, index: u64, op: &TxnOp, now: u64, ch: &mut Changes) -> Result<Option<TxnOpResult>, String> {
    match op {
        TxnOp::Kv { verb, key, value, flags, index: want, session } => {
            let req = |op| KvRequest {
                op,
                key: key.clone(),
                value: value.clone(),
                flags: *flags,
                session: session.clone(),
                modify_index: *want,
            };
            match verb.as_str() {
                "set" => {
                    kv(s, index, &req(KvOp::Set), now, ch)?;
                    Ok(Some(TxnOpResult::Kv(without_value(s.kv.get(key)))))
                }
                "cas" => {
                    if !kv(s, index, &req(KvOp::Cas), now, ch)? {
                        return Err(format!("failed to set key \"{key}\", index is stale"));
                    }
                    Ok(Some(TxnOpResult::Kv(without_value(s.kv.get(key)))))
                }
                "lock" => {
                    if !kv(s, index, &req(KvOp::Lock), now, ch)? {
                        return Err(format!("failed to lock key \"{key}\", lock is already held"));
                    }
                    Ok(Some(TxnOpResult::Kv(without_value(s.kv.get(key)))))
                }
                "unlock" => {
                    if !kv(s, index, &req(KvOp::Unlock), now, ch)? {
                        return Err(format!(
                            "failed to unlock key \"{key}\", lock isn't held, or is held by another session"
                        ));
                    }
                    Ok(Some(TxnOpResult::Kv(without_value(s.kv.get(key)))))
                }
                "get" => match s.kv.get(key) {
                    Some(e) => Ok(Some(TxnOpResult::Kv(Some(e.clone())))),
                    None => Err(format!("key \"{key}\" doesn't exist")),
                },
                "get-or-empty" => Ok(Some(TxnOpResult::Kv(s.kv.get(key).cloned()))),
                "get-tree" => Ok(Some(TxnOpResult::KvList(s.kv_prefix(key).cloned().collect()))),
                "check-index" => match s.kv.get(key) {
                    Some(e) if e.modify_index == *want => Ok(Some(TxnOpResult::Kv(without_value(Some(e))))),
                    Some(e) => Err(format!("current modify index {} != {}", e.modify_index, want)),
                    None => Err(format!("key \"{key}\" doesn't exist")),
                },
                "check-session" => match s.kv.get(key) {
                    Some(e) if e.session == *session => Ok(Some(TxnOpResult::Kv(without_value(Some(e))))),
                    Some(e) => Err(format!(
                        "current session {:?} != {:?}",
                        e.session.clone().unwrap_or_default(),
                        session.clone().unwrap_or_default()
                    )),
                    None => Err(format!("key \"{key}\" doesn't exist")),
                },
                "check-not-exists" => match s.kv.get(key) {
                    Some(_) => Err(format!("key \"{key}\" exists")),
                    None => Ok(None),
                },
                "delete" => {
                    kv(s, index, &req(KvOp::Delete), now, ch)?;
                    Ok(None)
                }
                "delete-tree" => {
                    kv(s, index, &req(KvOp::DeleteTree), now, ch)?;
                    Ok(None)
                }
                "delete-cas" => {
                    if !kv(s, index, &req(KvOp::DeleteCas), now, ch)? {
                        return Err(format!("failed to delete key \"{key}\", index is stale"));
                    }
                    Ok(None)
                }
                other => Err(format!("unknown KV verb \"{other}\"")),
            }
        }
        TxnOp::Node { verb, node } => match verb.as_str() {
            "set" => {
                ensure_node(s, index, node, ch)?;
                Ok(s.nodes.get(&node.node).cloned().map(TxnOpResult::Node))
            }
            "cas" => {
                let cur = s.nodes.get(&node.node).map(|n| n.modify_index).unwrap_or(0);
                if cur != node.modify_index {
                    return Err(format!("failed to set node \"{}\", index is stale", node.node));
                }
                ensure_node(s, index, node, ch)?;
                Ok(s.nodes.get(&node.node).cloned().map(TxnOpResult::Node))
            }
            "get" => s
                .nodes
                .get(&node.node)
                .cloned()
                .map(|n| Some(TxnOpResult::Node(n)))
                .ok_or_else(|| format!("node \"{}\" doesn't exist", node.node)),
            "delete" => {
                deregister(s, index, &DeregisterRequest { node: node.node.clone(), ..Default::default() }, now, ch);
                Ok(None)
            }
            "delete-cas" => {
                let cur = s.nodes.get(&node.node).map(|n| n.modify_index);
                if cur != Some(node.modify_index) {
                    return Err(format!("failed to delete node \"{}\", index is stale", node.node));
                }
                deregister(s, index, &DeregisterRequest { node: node.node.clone(), ..Default::default() }, now, ch);
                Ok(None)
            }
            other => Err(format!("unknown Node verb \"{other}\"")),
        },
        TxnOp::Service { verb, node, service } => {
            let id = if service.id.is_empty() { service.service.clone() } else { service.id.clone() };
            let current = s.services.get(node).and_then(|m| m.get(&id)).cloned();
            match verb.as_str() {
                "set" => {
                    ensure_service(s, index, node, service, ch)?;
                    Ok(s.services.get(node).and_then(|m| m.get(&id)).cloned().map(TxnOpResult::Service))
                }
                "cas" => {
                    if current.map(|c| c.modify_index).unwrap_or(0) != service.modify_index {
                        return Err(format!("failed to set service \"{id}\" on node \"{node}\", index is stale"));
                    }
                    ensure_service(s, index, node, service, ch)?;
                    Ok(s.services.get(node).and_then(|m| m.get(&id)).cloned().map(TxnOpResult::Service))
                }
                "get" => current
                    .map(|c| Some(TxnOpResult::Service(c)))
                    .ok_or_else(|| format!("service \"{id}\" on node \"{node}\" doesn't exist")),
                "delete" => {
                    remove_service(s, index, node, &id, now, ch);
                    Ok(None)
                }
                "delete-cas" => {
                    if current.map(|c| c.modify_index) != Some(service.modify_index) {
                        return Err(format!("failed to delete service \"{id}\" on node \"{node}\", index is stale"));
                    }
                    remove_service(s, index, node, &id, now, ch);
                    Ok(None)
                }
                other => Err(format!("unknown Service verb \"{other}\"")),
            }
        }
        TxnOp::Check { verb, check } => {
            let current = s.checks.get(&check.node).and_then(|m| m.get(&check.check_id)).cloned();
            match verb.as_str() {
                "set" => {
                    ensure_check(s, index, check, now, ch)?;
                    Ok(s.checks.get(&check.node).and_then(|m| m.get(&check.check_id)).cloned().map(TxnOpResult::Check))
                }
                "cas" => {
                    if current.map(|c| c.modify_index).unwrap_or(0) != check.modify_index {
                        return Err(format!("failed to set check \"{}\", index is stale", check.check_id));
                    }
                    ensure_check(s, index, check, now, ch)?;
                    Ok(s.checks.get(&check.node).and_then(|m| m.get(&check.check_id)).cloned().map(TxnOpResult::Check))
                }
                "get" => current
                    .map(|c| Some(TxnOpResult::Check(c)))
                    .ok_or_else(|| format!("check \"{}\" doesn't exist", check.check_id)),
                "delete" => {
                    remove_check(s, index, &check.node, &check.check_id, now, ch);
                    Ok(None)
                }
                "delete-cas" => {
                    if current.map(|c| c.modify_index) != Some(check.modify_index) {
                        return Err(format!("failed to delete check \"{}\", index is stale", check.check_id));
                    }
                    remove_check(s, index, &check.node, &check.check_id, now, ch);
                    Ok(None)
                }
                other => Err(format!("unknown Check verb \"{other}\"")),
            }
        }
    }
}
