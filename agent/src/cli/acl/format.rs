//! How Consul's CLI prints ACL objects (`command/acl/{token,policy,role}/formatter.go`): the
//! `pretty` text, and `json` as Go's `json.MarshalIndent(v, "", "    ")` writes it (HTML
//! characters escaped, times in RFC 3339 with trailing zeros trimmed). Pure: no IO.

use api::{AclLink, AclNodeIdentity, AclPolicy, AclPolicyListEntry, AclRole, AclServiceIdentity, AclTemplatedPolicy};
use api::{AclToken, AclTokenListEntry};
use base64::Engine;
use serde::Serialize;
use std::fmt::Write;

/// `-format`: `pretty` (the default) or `json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Pretty,
    Json,
}

impl Format {
    /// The flag's value, or Consul's `Unknown format: <v>`.
    pub fn parse(v: Option<&str>) -> Result<Format, String> {
        match v.unwrap_or("pretty") {
            "pretty" => Ok(Format::Pretty),
            "json" => Ok(Format::Json),
            other => Err(format!("Unknown format: {other}")),
        }
    }
}

/// Go's `json.MarshalIndent` with four spaces: the same layout as serde's pretty printer, plus
/// Go's escaping of `<`, `>`, `&` and the two JavaScript line separators (which can only occur
/// inside strings, so replacing them everywhere is exact).
pub(crate) fn go_json<T: Serialize>(v: &T) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if v.serialize(&mut ser).is_err() {
        return String::new();
    }
    let s = String::from_utf8(buf).unwrap_or_default();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// An RFC 3339 time split into what Go prints.
#[derive(Debug, PartialEq)]
struct Time<'a> {
    date: &'a str,
    clock: &'a str,
    /// Fraction digits without trailing zeros (may be empty).
    frac: &'a str,
    /// `None` for `Z`; else `+hh:mm` / `-hh:mm`.
    offset: Option<&'a str>,
}

fn parse_time(s: &str) -> Option<Time<'_>> {
    let (date, rest) = s.split_once('T')?;
    if date.len() != 10 || rest.len() < 8 {
        return None;
    }
    let (clock, rest) = rest.split_at(8);
    let (frac, zone) = match rest.strip_prefix('.') {
        Some(r) => {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            (r[..end].trim_end_matches('0'), &r[end..])
        }
        None => ("", rest),
    };
    let offset = match zone {
        "Z" | "z" => None,
        z if z.len() == 6 && (z.starts_with('+') || z.starts_with('-')) => Some(z),
        _ => return None,
    };
    Some(Time { date, clock, frac, offset })
}

/// A time as Go's JSON encoder writes it (`RFC3339Nano`: `.120` becomes `.12`, `.000` goes).
pub(crate) fn rfc3339_nano(s: &str) -> String {
    match parse_time(s) {
        Some(t) => {
            let frac = if t.frac.is_empty() { String::new() } else { format!(".{}", t.frac) };
            format!("{}T{}{frac}{}", t.date, t.clock, t.offset.unwrap_or("Z"))
        }
        None => s.to_string(),
    }
}

/// A time as Go's `%v` prints a `time.Time`: `2025-12-02 18:26:40.123 +0000 UTC`.
pub(crate) fn go_time(s: &str) -> String {
    if s.is_empty() {
        return "0001-01-01 00:00:00 +0000 UTC".into();
    }
    match parse_time(s) {
        Some(t) => {
            let frac = if t.frac.is_empty() { String::new() } else { format!(".{}", t.frac) };
            let zone = match t.offset {
                None => "+0000 UTC".to_string(),
                Some(o) => {
                    let o = o.replace(':', "");
                    format!("{o} {o}")
                }
            };
            format!("{} {}{frac} {zone}", t.date, t.clock)
        }
        None => s.to_string(),
    }
}

/// `%x` of the hash bytes (the JSON carries them base64-encoded).
fn hex_hash(b64: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Times in the form Go's encoder writes them, for `-format=json`.
pub(crate) fn normalize_token(t: &mut AclToken) {
    t.create_time = rfc3339_nano(&t.create_time);
    if let Some(e) = &mut t.expiration_time {
        *e = rfc3339_nano(e);
    }
}

pub(crate) fn normalize_token_entry(t: &mut AclTokenListEntry) {
    t.create_time = rfc3339_nano(&t.create_time);
    if let Some(e) = &mut t.expiration_time {
        *e = rfc3339_nano(e);
    }
}

fn links(b: &mut String, title: &str, indent: &str, links: &[AclLink]) {
    if links.is_empty() {
        return;
    }
    let _ = writeln!(b, "{indent}{title}:");
    for l in links {
        let _ = writeln!(b, "{indent}   {} - {}", l.id, l.name);
    }
}

fn service_identities(b: &mut String, indent: &str, ids: &[AclServiceIdentity]) {
    if ids.is_empty() {
        return;
    }
    let _ = writeln!(b, "{indent}Service Identities:");
    for s in ids {
        let dcs = if s.datacenters.is_empty() { "all".to_string() } else { s.datacenters.join(", ") };
        let _ = writeln!(b, "{indent}   {} (Datacenters: {dcs})", s.service_name);
    }
}

fn node_identities(b: &mut String, indent: &str, ids: &[AclNodeIdentity]) {
    if ids.is_empty() {
        return;
    }
    let _ = writeln!(b, "{indent}Node Identities:");
    for n in ids {
        let _ = writeln!(b, "{indent}   {} (Datacenter: {})", n.node_name, n.datacenter);
    }
}

fn templated_policies(b: &mut String, indent: &str, tps: &[AclTemplatedPolicy]) {
    if tps.is_empty() {
        return;
    }
    let _ = writeln!(b, "{indent}Templated Policies:");
    for t in tps {
        let _ = writeln!(b, "{indent}   {}", t.template_name);
        if let Some(v) = t.template_variables.as_ref().filter(|v| !v.name.is_empty()) {
            let _ = writeln!(b, "{indent}      Name: {}", v.name);
        }
        let dcs = if t.datacenters.is_empty() { "all".to_string() } else { t.datacenters.join(", ") };
        let _ = writeln!(b, "{indent}      Datacenters: {dcs}");
    }
}

/// The fields a token and a token list entry share, in Consul's order.
#[allow(clippy::too_many_arguments)]
fn token_head(
    b: &mut String,
    accessor: &str,
    secret: &str,
    description: &str,
    local: bool,
    auth_method: &str,
    create_time: &str,
    expiration: Option<&str>,
) {
    let _ = writeln!(b, "AccessorID:       {accessor}");
    let _ = writeln!(b, "SecretID:         {secret}");
    let _ = writeln!(b, "Description:      {description}");
    let _ = writeln!(b, "Local:            {local}");
    if !auth_method.is_empty() {
        let _ = writeln!(b, "Auth Method:      {auth_method} (Namespace: )");
    }
    let _ = writeln!(b, "Create Time:      {}", go_time(create_time));
    if let Some(e) = expiration.filter(|e| !e.is_empty()) {
        let _ = writeln!(b, "Expiration Time:  {}", go_time(e));
    }
}

fn token_meta(b: &mut String, hash: &str, create: u64, modify: u64) {
    let _ = writeln!(b, "Hash:             {}", hex_hash(hash));
    let _ = writeln!(b, "Create Index:     {create}");
    let _ = writeln!(b, "Modify Index:     {modify}");
}

pub(crate) fn token(t: &AclToken, meta: bool) -> String {
    let mut b = String::new();
    token_head(
        &mut b,
        &t.accessor_id,
        &t.secret_id,
        &t.description,
        t.local,
        &t.auth_method,
        &t.create_time,
        t.expiration_time.as_deref(),
    );
    if meta {
        token_meta(&mut b, &t.hash, t.create_index, t.modify_index);
    }
    links(&mut b, "Policies", "", &t.policies);
    links(&mut b, "Roles", "", &t.roles);
    service_identities(&mut b, "", &t.service_identities);
    node_identities(&mut b, "", &t.node_identities);
    templated_policies(&mut b, "", &t.templated_policies);
    b
}

fn token_entry(t: &AclTokenListEntry, meta: bool) -> String {
    let mut b = String::new();
    token_head(
        &mut b,
        &t.accessor_id,
        &t.secret_id,
        &t.description,
        t.local,
        &t.auth_method,
        &t.create_time,
        t.expiration_time.as_deref(),
    );
    if meta {
        token_meta(&mut b, &t.hash, t.create_index, t.modify_index);
    }
    links(&mut b, "Policies", "", &t.policies);
    links(&mut b, "Roles", "", &t.roles);
    service_identities(&mut b, "", &t.service_identities);
    node_identities(&mut b, "", &t.node_identities);
    templated_policies(&mut b, "", &t.templated_policies);
    b
}

/// Tokens, a blank line between two.
pub(crate) fn token_list(list: &[AclTokenListEntry], meta: bool) -> String {
    list.iter().map(|t| token_entry(t, meta)).collect::<Vec<_>>().join("\n")
}

pub(crate) fn policy(p: &AclPolicy, meta: bool) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "ID:           {}", p.id);
    let _ = writeln!(b, "Name:         {}", p.name);
    let _ = writeln!(b, "Description:  {}", p.description);
    let _ = writeln!(b, "Datacenters:  {}", p.datacenters.join(", "));
    if meta {
        let _ = writeln!(b, "Hash:         {}", hex_hash(&p.hash));
        let _ = writeln!(b, "Create Index: {}", p.create_index);
        let _ = writeln!(b, "Modify Index: {}", p.modify_index);
    }
    b.push_str("Rules:\n");
    b.push_str(&p.rules);
    b
}

pub(crate) fn policy_list(list: &[AclPolicyListEntry], meta: bool) -> String {
    let mut b = String::new();
    for p in list {
        let _ = writeln!(b, "{}:", p.name);
        let _ = writeln!(b, "   ID:           {}", p.id);
        let _ = writeln!(b, "   Description:  {}", p.description);
        let _ = writeln!(b, "   Datacenters:  {}", p.datacenters.join(", "));
        if meta {
            let _ = writeln!(b, "   Hash:         {}", hex_hash(&p.hash));
            let _ = writeln!(b, "   Create Index: {}", p.create_index);
            let _ = writeln!(b, "   Modify Index: {}", p.modify_index);
        }
    }
    b
}

fn role_body(b: &mut String, r: &AclRole, meta: bool, indent: &str) {
    let _ = writeln!(b, "{indent}ID:           {}", r.id);
    if indent.is_empty() {
        let _ = writeln!(b, "Name:         {}", r.name);
    }
    let _ = writeln!(b, "{indent}Description:  {}", r.description);
    if meta {
        let _ = writeln!(b, "{indent}Hash:         {}", hex_hash(&r.hash));
        let _ = writeln!(b, "{indent}Create Index: {}", r.create_index);
        let _ = writeln!(b, "{indent}Modify Index: {}", r.modify_index);
    }
    links(b, "Policies", indent, &r.policies);
    service_identities(b, indent, &r.service_identities);
    node_identities(b, indent, &r.node_identities);
    templated_policies(b, indent, &r.templated_policies);
}

pub(crate) fn role(r: &AclRole, meta: bool) -> String {
    let mut b = String::new();
    role_body(&mut b, r, meta, "");
    b
}

pub(crate) fn role_list(list: &[AclRole], meta: bool) -> String {
    let mut b = String::new();
    for r in list {
        let _ = writeln!(b, "{}:", r.name);
        role_body(&mut b, r, meta, "   ");
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(id: &str, name: &str) -> AclLink {
        AclLink { id: id.into(), name: name.into() }
    }

    #[test]
    fn times_print_as_go_prints_them() {
        assert_eq!(go_time("2020-05-22T18:52:31Z"), "2020-05-22 18:52:31 +0000 UTC");
        assert_eq!(go_time("2025-12-02T18:26:40.120Z"), "2025-12-02 18:26:40.12 +0000 UTC");
        assert_eq!(go_time("2025-12-02T18:26:40.000Z"), "2025-12-02 18:26:40 +0000 UTC");
        assert_eq!(go_time("2025-12-02T18:26:40.5+02:00"), "2025-12-02 18:26:40.5 +0200 +0200");
        assert_eq!(rfc3339_nano("2025-12-02T18:26:40.000Z"), "2025-12-02T18:26:40Z");
        assert_eq!(rfc3339_nano("2025-12-02T18:26:40.120Z"), "2025-12-02T18:26:40.12Z");
        assert_eq!(rfc3339_nano("garbage"), "garbage");
    }

    #[test]
    fn a_token_prints_field_for_field() {
        let t = AclToken {
            accessor_id: "fbd2447f-7479-4329-ad13-b021d74f86ba".into(),
            secret_id: "869c6e91-4de9-4dab-b56e-87548435f9c6".into(),
            description: "test token".into(),
            create_time: "2020-05-22T18:52:31Z".into(),
            expiration_time: Some("2020-05-22T19:52:31Z".into()),
            hash: "YWJjZGVmZ2g=".into(),
            create_index: 5,
            modify_index: 10,
            policies: vec![link("beb04680-815b-4d7c-9e33-3d707c24672c", "hobbiton")],
            roles: vec![link("3b0a78fe-b9c3-40de-b8ea-7d4d6674b366", "shire")],
            service_identities: vec![
                AclServiceIdentity { service_name: "gardener".into(), datacenters: vec!["east".into(), "west".into()] },
                AclServiceIdentity { service_name: "web".into(), datacenters: vec![] },
            ],
            node_identities: vec![AclNodeIdentity { node_name: "bagend".into(), datacenter: "east".into() }],
            ..Default::default()
        };
        assert_eq!(
            token(&t, true),
            "AccessorID:       fbd2447f-7479-4329-ad13-b021d74f86ba
SecretID:         869c6e91-4de9-4dab-b56e-87548435f9c6
Description:      test token
Local:            false
Create Time:      2020-05-22 18:52:31 +0000 UTC
Expiration Time:  2020-05-22 19:52:31 +0000 UTC
Hash:             6162636465666768
Create Index:     5
Modify Index:     10
Policies:
   beb04680-815b-4d7c-9e33-3d707c24672c - hobbiton
Roles:
   3b0a78fe-b9c3-40de-b8ea-7d4d6674b366 - shire
Service Identities:
   gardener (Datacenters: east, west)
   web (Datacenters: all)
Node Identities:
   bagend (Datacenter: east)
"
        );
    }

    #[test]
    fn policies_and_roles_print_field_for_field() {
        let p = AclPolicy {
            id: "p1".into(),
            name: "web".into(),
            description: "d".into(),
            rules: "key \"a\" { policy = \"read\" }".into(),
            ..Default::default()
        };
        assert_eq!(
            policy(&p, false),
            "ID:           p1\nName:         web\nDescription:  d\nDatacenters:  \nRules:\nkey \"a\" { policy = \"read\" }"
        );
        let list = [AclPolicyListEntry {
            id: "p1".into(),
            name: "web".into(),
            datacenters: vec!["dc1".into()],
            ..Default::default()
        }];
        assert_eq!(policy_list(&list, false), "web:\n   ID:           p1\n   Description:  \n   Datacenters:  dc1\n");
        let r = AclRole {
            id: "r1".into(),
            name: "ops".into(),
            policies: vec![link("p1", "web")],
            templated_policies: vec![AclTemplatedPolicy {
                template_name: "builtin/service".into(),
                template_variables: Some(api::AclTemplateVariables { name: "api".into() }),
                datacenters: vec![],
            }],
            ..Default::default()
        };
        assert_eq!(
            role(&r, false),
            "ID:           r1\nName:         ops\nDescription:  \nPolicies:\n   p1 - web\nTemplated Policies:\n   builtin/service\n      Name: api\n      Datacenters: all\n"
        );
        assert_eq!(
            role_list(&[r], false).lines().take(3).collect::<Vec<_>>(),
            ["ops:", "   ID:           r1", "   Description:  "]
        );
    }

    #[test]
    fn json_escapes_as_go_does() {
        let t = AclTokenListEntry { secret_id: "<hidden>".into(), ..Default::default() };
        let s = go_json(&[t]);
        assert!(s.starts_with("[\n    {\n        \"CreateIndex\": 0,"), "{s}");
        assert!(s.contains("\"SecretID\": \"\\u003chidden\\u003e\""), "{s}");
        assert!(s.ends_with("        \"Legacy\": false\n    }\n]"), "{s}");
    }
}
