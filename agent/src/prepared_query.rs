//! Prepared queries (`/v1/query`), pure: validating a definition, finding the query a name or ID
//! means (ID, then exact name, then the template with the longest matching prefix), filling a
//! template's `${...}` variables, and running the query's health filter over the local catalog.
//! Failover to other datacenters is the HTTP layer's (it needs other datacenters' servers).

use crate::state::State;
use crate::structs::Status;
use regex::Regex;
use serde_json::{json, Map, Value};

/// A definition's problems, as Consul words them (HTTP 400).
pub fn validate(q: &Value) -> Result<(), String> {
    let svc = q.get("Service").and_then(|s| s.get("Service")).and_then(Value::as_str).unwrap_or("");
    let template = q.get("Template").filter(|t| !t.is_null());
    if svc.is_empty() && template.is_none() {
        return Err("Must provide a Service name to query".into());
    }
    if let Some(t) = template {
        let kind = t.get("Type").and_then(Value::as_str).unwrap_or("");
        if kind != "name_prefix_match" {
            return Err(format!("Bad Template.Type '{kind}'"));
        }
        if let Some(re) = t.get("Regexp").and_then(Value::as_str).filter(|r| !r.is_empty()) {
            Regex::new(re).map_err(|e| format!("Bad Regexp: {e}"))?;
        }
    }
    if let Some(ttl) = q.get("DNS").and_then(|d| d.get("TTL")).and_then(Value::as_str).filter(|t| !t.is_empty()) {
        let d = api::duration::parse(ttl).map_err(|_| format!("Bad DNS TTL '{ttl}'"))?;
        if d.is_zero() && ttl != "0s" {
            return Err(format!("DNS TTL '{ttl}' must be >=0"));
        }
    }
    if let Some(n) = q.get("Service").and_then(|s| s.get("Failover")).and_then(|f| f.get("NearestN")) {
        if n.as_i64().is_some_and(|n| n < 0) || !(n.is_null() || n.is_number()) {
            return Err(format!("Bad NearestN '{n}', must be >= 0"));
        }
    }
    Ok(())
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes()
            .enumerate()
            .all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { c == b'-' } else { c.is_ascii_hexdigit() })
}

fn is_template(q: &Value) -> bool {
    q.get("Template").is_some_and(|t| !t.is_null())
}

/// The query `id_or_name` means, with a template's variables filled for that name.
pub fn resolve(state: &State, id_or_name: &str) -> Option<Value> {
    if is_uuid(id_or_name) {
        if let Some(q) = state.prepared_queries.get(id_or_name) {
            return Some(q.clone());
        }
    }
    let by_name = state
        .prepared_queries
        .values()
        .find(|q| !is_template(q) && q.get("Name").and_then(Value::as_str) == Some(id_or_name));
    if let Some(q) = by_name {
        return Some(q.clone());
    }
    let template = state
        .prepared_queries
        .values()
        .filter(|q| is_template(q))
        .filter(|q| id_or_name.starts_with(q.get("Name").and_then(Value::as_str).unwrap_or("")))
        .max_by_key(|q| q.get("Name").and_then(Value::as_str).map(str::len).unwrap_or(0))?;
    Some(render(template, id_or_name))
}

/// Fills `${name.full}`, `${name.prefix}`, `${name.suffix}`, `${match(N)}` and
/// `${agent.segment}` in every string of the template's `Service`.
pub fn render(template: &Value, name: &str) -> Value {
    let prefix = template.get("Name").and_then(Value::as_str).unwrap_or("").to_string();
    let suffix = name.strip_prefix(prefix.as_str()).unwrap_or("").to_string();
    let re = template
        .get("Template")
        .and_then(|t| t.get("Regexp"))
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .and_then(|r| Regex::new(r).ok());
    let groups: Vec<String> = re
        .and_then(|re| {
            re.captures(name).map(|c| c.iter().map(|m| m.map(|m| m.as_str().to_string()).unwrap_or_default()).collect())
        })
        .unwrap_or_default();
    let fill = |s: &str| -> String {
        let mut out = s
            .replace("${name.full}", name)
            .replace("${name.prefix}", &prefix)
            .replace("${name.suffix}", &suffix)
            .replace("${agent.segment}", "");
        while let Some(start) = out.find("${match(") {
            let Some(end) = out[start..].find(")}").map(|e| start + e) else { break };
            let n: usize = out[start + 8..end].parse().unwrap_or(usize::MAX);
            out.replace_range(start..end + 2, groups.get(n).map(String::as_str).unwrap_or(""));
        }
        out
    };
    fn walk(v: &mut Value, fill: &dyn Fn(&str) -> String) {
        match v {
            Value::String(s) => *s = fill(s),
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, fill)),
            Value::Object(m) => m.values_mut().for_each(|x| walk(x, fill)),
            _ => {}
        }
    }
    let mut q = template.clone();
    if let Some(svc) = q.get_mut("Service") {
        walk(svc, &fill);
    }
    let remove_empty =
        template.get("Template").and_then(|t| t.get("RemoveEmptyTags")).and_then(Value::as_bool) == Some(true);
    if remove_empty {
        if let Some(tags) = q.get_mut("Service").and_then(|s| s.get_mut("Tags")).and_then(Value::as_array_mut) {
            tags.retain(|t| t.as_str().is_some_and(|t| !t.is_empty()));
        }
    }
    q
}

fn str_map(v: Option<&Value>) -> Vec<(String, String)> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// The instances the query's `Service` section selects here, as health entries.
pub fn select(state: &State, q: &Value, dc: &str) -> Vec<api::ServiceEntry> {
    let svc = &q["Service"];
    let name = svc["Service"].as_str().unwrap_or("");
    let only_passing = svc["OnlyPassing"].as_bool() == Some(true);
    let ignore: Vec<&str> = svc["IgnoreCheckIDs"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let tags: Vec<&str> = svc["Tags"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let node_meta = str_map(svc.get("NodeMeta"));
    let service_meta = str_map(svc.get("ServiceMeta"));
    let entries = crate::http::service_entries(state, name, &[], false, dc, false);
    entries
        .into_iter()
        .filter(|e| {
            let has = |t: &str| e.service.tags.iter().any(|x| x.eq_ignore_ascii_case(t));
            tags.iter().all(|t| match t.strip_prefix('!') {
                Some(neg) => !has(neg),
                None => has(t),
            })
        })
        .filter(|e| node_meta.iter().all(|(k, v)| e.node.meta.get(k) == Some(v)))
        .filter(|e| service_meta.iter().all(|(k, v)| e.service.meta.get(k) == Some(v)))
        .filter(|e| {
            let worst = e
                .checks
                .iter()
                .filter(|c| !ignore.contains(&c.check_id.as_str()))
                .map(|c| Status::parse(&c.status).unwrap_or(Status::Critical))
                .max()
                .unwrap_or(Status::Passing);
            match worst {
                Status::Passing => true,
                Status::Warning => !only_passing,
                Status::Critical => false,
            }
        })
        .collect()
}

/// The answer of `/v1/query/:id/execute` for instances found in `dc`.
pub fn answer(q: &Value, nodes: Vec<api::ServiceEntry>, dc: &str, failovers: u64) -> Value {
    json!({
        "Service": q["Service"]["Service"],
        "Nodes": nodes,
        "DNS": {"TTL": q.get("DNS").and_then(|d| d.get("TTL")).cloned().unwrap_or(json!(""))},
        "Datacenter": dc,
        "Failovers": failovers,
    })
}

/// The datacenters to try when nothing answered here: the `NearestN` nearest (by the order the
/// caller gives, nearest first, without the local one), then `Datacenters` in order, each once.
pub fn failover_order(q: &Value, by_distance: &[String], local: &str) -> Vec<String> {
    let f = &q["Service"]["Failover"];
    let n = f["NearestN"].as_u64().unwrap_or(0) as usize;
    let mut out: Vec<String> = by_distance.iter().filter(|d| d.as_str() != local).take(n).cloned().collect();
    for d in f["Datacenters"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if d != local && !out.iter().any(|x| x == d) {
            out.push(d.to_string());
        }
    }
    out
}

/// A definition as stored: Consul's defaults filled in.
pub fn normalize(mut q: Map<String, Value>, id: &str) -> Value {
    q.insert("ID".into(), id.into());
    for (k, v) in [("Name", json!("")), ("Session", json!("")), ("Token", json!("")), ("DNS", json!({"TTL": ""}))] {
        q.entry(k).or_insert(v);
    }
    let svc = q.entry("Service").or_insert(json!({}));
    if let Some(s) = svc.as_object_mut() {
        for (k, v) in [
            ("Failover", json!({"NearestN": 0, "Datacenters": null})),
            ("OnlyPassing", json!(false)),
            ("IgnoreCheckIDs", json!(null)),
            ("Near", json!("")),
            ("Tags", json!(null)),
            ("NodeMeta", json!(null)),
            ("ServiceMeta", json!(null)),
            ("Connect", json!({"Enabled": false})),
        ] {
            s.entry(k).or_insert(v);
        }
    }
    Value::Object(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_their_variables_and_the_longest_prefix_wins() {
        let mut st = State::default();
        let t = json!({"ID": "00000000-0000-0000-0000-000000000001", "Name": "geo-",
            "Template": {"Type": "name_prefix_match", "Regexp": "^geo-(.+?)-(.+)$"},
            "Service": {"Service": "${match(1)}", "Tags": ["${match(2)}", "${name.suffix}"]}});
        let catch_all = json!({"ID": "00000000-0000-0000-0000-000000000002", "Name": "",
            "Template": {"Type": "name_prefix_match"}, "Service": {"Service": "${name.full}"}});
        let fixed =
            json!({"ID": "00000000-0000-0000-0000-000000000003", "Name": "geo-db-fixed", "Service": {"Service": "db"}});
        for q in [t, catch_all, fixed] {
            st.prepared_queries.insert(q["ID"].as_str().unwrap_or_default().to_string(), q);
        }
        let q = resolve(&st, "geo-web-v1").expect("template");
        assert_eq!(q["Service"]["Service"], "web");
        assert_eq!(q["Service"]["Tags"], json!(["v1", "web-v1"]));
        assert_eq!(resolve(&st, "anything").expect("catch-all")["Service"]["Service"], "anything");
        assert_eq!(resolve(&st, "geo-db-fixed").expect("exact")["Service"]["Service"], "db", "static names win");
        assert_eq!(resolve(&st, "00000000-0000-0000-0000-000000000003").expect("id")["Name"], "geo-db-fixed");
    }

    #[test]
    fn definitions_are_checked_and_failover_is_ordered() {
        assert!(validate(&json!({"Service": {}})).unwrap_err().starts_with("Must provide a Service"));
        assert!(validate(&json!({"Template": {"Type": "x"}, "Service": {}}))
            .unwrap_err()
            .contains("Bad Template.Type"));
        assert!(validate(&json!({"Service": {"Service": "w"}, "DNS": {"TTL": "soon"}})).is_err());
        let q = json!({"Service": {"Service": "w", "Failover": {"NearestN": 1, "Datacenters": ["dc3", "dc2"]}}});
        let order = failover_order(&q, &["dc1".into(), "dc2".into(), "dc4".into()], "dc1");
        assert_eq!(order, vec!["dc2".to_string(), "dc3".to_string()]);
    }
}
