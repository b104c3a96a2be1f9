//! `/v1/kv` and `/v1/txn`.

use super::acl_filter::AclFilter;
use super::{convert, Body, Ctx, HttpError, HttpResult, Reply};
use crate::structs::*;
use base64::Engine;
use bytes::Bytes;

pub async fn get(ctx: &Ctx, key: &str) -> HttpResult {
    let q = &ctx.query;
    // The reads below capture what they need by value (two `&str`s) rather than keep copies as
    // locals: the largest branch sizes the future a parked plain get is boxed in.
    let acl = AclFilter::new(&ctx.identity);
    let list_need =
        if ctx.agent.acl.config.enable_key_list_policy { crate::acl::Access::List } else { crate::acl::Access::Read };
    if q.has("keys") || q.has("recurse") {
        // Listing a prefix needs list (with enable_key_list_policy) or read on the prefix
        // itself only where Consul asks for it; each entry is then filtered by key:read.
        if ctx.agent.acl.config.enable_key_list_policy {
            ctx.identity.require(crate::acl::Resource::Key, key, list_need)?;
        }
    }
    if q.has("keys") {
        let sep = q.get("separator").unwrap_or("");
        let root = key.is_empty();
        let acl = &acl;
        let (headers, keys, _) = ctx
            .read_value(move |s, ws| {
                ws.kv_prefix(key);
                acl.reset();
                let mut out: Vec<String> = Vec::new();
                for e in s.kv_prefix(key).filter(|e| acl.key(&e.key)) {
                    let rest = &e.key[key.len()..];
                    let k = match (!sep.is_empty()).then(|| rest.find(sep)).flatten() {
                        Some(i) => format!("{}{}", key, &rest[..i + sep.len()]),
                        None => e.key.clone(),
                    };
                    if out.last() != Some(&k) {
                        out.push(k);
                    }
                }
                (s.kv_prefix_index(key), out)
            })
            .await?;
        // The root always exists; an empty listing below it is a 404, as in Consul.
        let status = if keys.is_empty() && !root { 404 } else { 200 };
        if status == 404 {
            return Ok(Reply { status, body: Body::Raw { bytes: Bytes::new(), content_type: "text/plain" }, headers });
        }
        return Ok(acl.mark(Reply { status, body: Body::Json(serde_json::json!(keys)), headers }));
    }
    if q.has("recurse") {
        let acl = &acl;
        let (headers, entries, _) = ctx
            .read_value(move |s, ws| {
                ws.kv_prefix(key);
                acl.reset();
                (
                    s.kv_prefix_index(key),
                    s.kv_prefix(key).filter(|e| acl.key(&e.key)).map(convert::kv).collect::<Vec<_>>(),
                )
            })
            .await?;
        if entries.is_empty() {
            return Ok(Reply {
                status: 404,
                body: Body::Raw { bytes: Bytes::new(), content_type: "text/plain" },
                headers,
            });
        }
        return Ok(acl.mark(Reply { status: 200, body: Body::Json(serde_json::json!(entries)), headers }));
    }
    if key.is_empty() {
        return Err(HttpError::BadRequest("Missing key name".into()));
    }
    let (headers, entry, _) = ctx
        .read_value(|s, ws| {
            ws.kv_key(key);
            (s.kv_key_index(key), s.kv.get(key).cloned())
        })
        .await?;
    match entry {
        None => Ok(Reply { status: 404, body: Body::Raw { bytes: Bytes::new(), content_type: "text/plain" }, headers }),
        // A value is whatever a client wrote: a browser must neither sniff it into HTML nor run
        // it (Consul sends the same two headers).
        Some(e) if q.has("raw") => Ok(Reply {
            status: 200,
            body: Body::Raw { bytes: Bytes::from(e.value), content_type: "text/plain" },
            headers,
        }
        .header("X-Content-Type-Options", "nosniff")
        .header("Content-Security-Policy", "sandbox")),
        Some(e) => Ok(Reply { status: 200, body: Body::Json(serde_json::json!([convert::kv(&e)])), headers }),
    }
}

fn parse_u64(ctx: &Ctx, name: &str, what: &str) -> Result<Option<u64>, HttpError> {
    match ctx.query.get(name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| HttpError::BadRequest(format!("Invalid {what}"))),
    }
}

fn bool_reply(resp: Response) -> HttpResult {
    match resp {
        Response::Bool(b) => Ok(Reply::json(&b)),
        Response::Error(e) => Err(HttpError::Internal(e)),
        _ => Ok(Reply::json(&true)),
    }
}

/// Consul refuses flags that cannot be combined, echoing the whole query as Go encodes it.
fn conflicting(ctx: &Ctx, flags: &[&str]) -> Result<(), HttpError> {
    if flags.iter().filter(|f| ctx.query.has(f)).count() > 1 {
        return Err(HttpError::BadRequest(format!("Conflicting flags: {}\n", ctx.query.encode_sorted())));
    }
    Ok(())
}

pub async fn put(ctx: &Ctx, key: &str) -> HttpResult {
    if key.is_empty() {
        return Err(HttpError::BadRequest("Missing key name".into()));
    }
    conflicting(ctx, &["cas", "acquire", "release"])?;
    let max = ctx.agent.config.kv_max_value_size;
    if ctx.body.len() > max {
        return Err(HttpError::TooLarge(format!("Request body({} bytes) too large, max size: {max} bytes. See https://developer.hashicorp.com/consul/docs/agent/config/config-files#kv_max_value_size.", ctx.body.len())));
    }
    let flags = parse_u64(ctx, "flags", "flags")?.unwrap_or(0);
    let cas = parse_u64(ctx, "cas", "cas index")?;
    let acquire = ctx.query.get("acquire").filter(|s| !s.is_empty());
    let release = ctx.query.get("release").filter(|s| !s.is_empty());
    let (op, session) = match (acquire, release, cas) {
        (Some(s), _, _) => (KvOp::Lock, Some(s.to_string())),
        (None, Some(s), _) => (KvOp::Unlock, Some(s.to_string())),
        (None, None, Some(_)) => (KvOp::Cas, None),
        _ => (KvOp::Set, None),
    };
    let req = KvRequest {
        op,
        key: key.to_string(),
        value: ctx.body.to_vec(),
        flags,
        session,
        modify_index: cas.unwrap_or(0),
    };
    bool_reply(ctx.agent.write(Command::Kv(req)).await?)
}

pub async fn delete(ctx: &Ctx, key: &str) -> HttpResult {
    conflicting(ctx, &["recurse", "cas"])?;
    let cas = parse_u64(ctx, "cas", "cas index")?;
    let recurse = ctx.query.has("recurse");
    if key.is_empty() && !recurse {
        return Err(HttpError::BadRequest("Missing key name".into()));
    }
    let op = match (recurse, cas) {
        (true, _) => KvOp::DeleteTree,
        (false, Some(_)) => KvOp::DeleteCas,
        (false, None) => KvOp::Delete,
    };
    let req =
        KvRequest { op, key: key.to_string(), value: vec![], flags: 0, session: None, modify_index: cas.unwrap_or(0) };
    let cmd = Command::Kv(req);
    crate::acl::commands::authorize(&ctx.identity, &cmd, &ctx.agent.store.read())?;
    bool_reply(ctx.agent.write(cmd).await?)
}

fn txn_op(v: &serde_json::Value, ctx: &Ctx) -> Result<TxnOp, HttpError> {
    use crate::defs::{s, u};
    let bad = |m: String| HttpError::BadRequest(m);
    if let Some(kv) = v.get("KV") {
        let value = match kv.get("Value") {
            Some(serde_json::Value::String(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| bad(format!("Failed to parse body: illegal base64 data: {e}")))?,
            _ => Vec::new(),
        };
        if value.len() > ctx.agent.config.kv_max_value_size {
            return Err(HttpError::TooLarge(format!(
                "Value for key {:?} is too large ({} > {} bytes)",
                s(kv, "Key"),
                value.len(),
                ctx.agent.config.kv_max_value_size
            )));
        }
        let session = Some(s(kv, "Session")).filter(|x| !x.is_empty());
        return Ok(TxnOp::Kv {
            verb: s(kv, "Verb"),
            key: s(kv, "Key"),
            value,
            flags: u(kv, "Flags")?,
            index: u(kv, "Index")?,
            session,
        });
    }
    if let Some(n) = v.get("Node") {
        let node_v = n.get("Node").cloned().unwrap_or_default();
        let node = super::handlers_catalog::parse_node(&node_v, &ctx.agent.config.datacenter)?;
        let node = Node { modify_index: u(&node_v, "ModifyIndex")?, ..node };
        return Ok(TxnOp::Node { verb: s(n, "Verb"), node });
    }
    if let Some(sv) = v.get("Service") {
        let svc_v = sv.get("Service").cloned().unwrap_or_default();
        let mut svc_norm = svc_v.clone();
        if let Some(m) = svc_norm.as_object_mut() {
            if !m.contains_key("Name") {
                if let Some(x) = m.get("Service").cloned() {
                    m.insert("Name".into(), x);
                }
            }
        }
        let (service, _) = crate::defs::service(&svc_norm, &s(sv, "Node"))?;
        let service = Service { modify_index: u(&svc_v, "ModifyIndex")?, ..service };
        return Ok(TxnOp::Service { verb: s(sv, "Verb"), node: s(sv, "Node"), service });
    }
    if let Some(c) = v.get("Check") {
        let cv = c.get("Check").cloned().unwrap_or_default();
        let mut check = crate::defs::check(&cv, &s(&cv, "Node"), None)?;
        check.modify_index = u(&cv, "ModifyIndex")?;
        if let Some(def) = cv.get("Definition") {
            check.definition = crate::defs::check_definition(def)?;
        }
        return Ok(TxnOp::Check { verb: s(c, "Verb"), check });
    }
    Err(bad("Failed to parse body: unknown operation type".into()))
}

pub async fn txn(ctx: &Ctx) -> HttpResult {
    if ctx.body.len() > ctx.agent.config.txn_max_req_len {
        return Err(HttpError::TooLarge(format!(
            "Request body({} bytes) too large, max size: {} bytes. See https://developer.hashicorp.com/consul/docs/agent/config/config-files#txn_max_req_len.",
            ctx.body.len(),
            ctx.agent.config.txn_max_req_len
        )));
    }
    let body = ctx.typed_body(super::shape::TXN_OPS)?;
    let ops = match body {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Null => vec![],
        _ => return Err(HttpError::BadRequest("Failed to parse body: expected a list of operations".into())),
    };
    let max = ctx.agent.config.txn_max_ops;
    if ops.len() > max {
        return Err(HttpError::TooLarge(format!("Transaction contains too many operations ({} > {max})", ops.len())));
    }
    let ops = ops.iter().map(|o| txn_op(o, ctx)).collect::<Result<Vec<_>, _>>()?;
    let cmd = Command::Txn(ops);
    crate::acl::commands::authorize(&ctx.identity, &cmd, &ctx.agent.store.read())?;
    let resp = ctx.agent.write(cmd).await?;
    let Response::Txn(r) = resp else {
        return Err(HttpError::Internal(format!("unexpected transaction result {resp:?}")));
    };
    let dc = ctx.agent.config.datacenter.clone();
    if !r.errors.is_empty() {
        let errors: Vec<_> = r.errors.iter().map(|(i, w)| serde_json::json!({"OpIndex": i, "What": w})).collect();
        let mut reply = Reply::json(&serde_json::json!({"Results": null, "Errors": errors}));
        reply.status = 409;
        return Ok(reply);
    }
    let results: Vec<serde_json::Value> = r
        .results
        .iter()
        .flat_map(|res| match res {
            TxnOpResult::Kv(Some(e)) => vec![serde_json::json!({"KV": convert::kv(e)})],
            TxnOpResult::Kv(None) => vec![],
            TxnOpResult::KvList(list) => list.iter().map(|e| serde_json::json!({"KV": convert::kv(e)})).collect(),
            TxnOpResult::Node(n) => vec![serde_json::json!({"Node": convert::node(n)})],
            TxnOpResult::Service(s) => vec![serde_json::json!({"Service": convert::service(s, &dc)})],
            TxnOpResult::Check(c) => vec![serde_json::json!({"Check": convert::check(c)})],
        })
        .collect();
    Ok(Reply::json(&serde_json::json!({"Results": results, "Errors": null})))
}
