//! `intention create|get|delete|check|match|list`: Consul's commands for Connect intentions over
//! `/v1/connect/intentions/...`, with its output (`Created: web => db (allow)`, `Allowed` /
//! `Denied`) and exit codes (`check`: 0 allowed, 1 denied, 2 an error; `list`: 2 when there are
//! none). Intentions are addressed by source and destination, as Consul ≥ 1.9 stores them.

use super::http::{CallError, Ctx};
use super::table::columnize;
use super::{ctx_or_exit, err, fail, group_help, out, parse_flags};
use http::Method;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::Read;

const HELP: &str = "
Usage: agent intention <subcommand> [options] [args]

  Manages Connect intentions: which services may open connections to which.
  Each subcommand has its own help.

  Let \"web\" connect to \"db\", then ask whether it may:

      $ agent intention create web db
      $ agent intention check web db

  The intentions that apply to connections to \"db\", in the order they are
  evaluated:

      $ agent intention match db

Subcommands:
    check     Check whether a connection between two services is allowed
    create    Create intentions
    delete    Delete an intention
    get       Show an intention
    list      List all intentions
    match     Show the intentions that match a source or destination
";

const CREATE_USAGE: &str = "
Usage: agent intention create [options] SRC DST
       agent intention create [options] -file FILE...

  Creates an intention from SRC to DST (allow unless -deny), or one per JSON
  file with -file (- reads stdin). An intention that already exists for the
  pair is an error unless -replace is given, which replaces it (its metadata
  and description included).

      $ agent intention create -deny web db

Command Options:
  -allow               The intention allows the connection (the default).
  -deny                The intention denies the connection.
  -file                Read the intentions from JSON files given as arguments.
  -replace             Replace an existing intention for the same pair.
  -meta=<key=value>    Metadata for the intention (repeatable).
";

const GET_USAGE: &str = "
Usage: agent intention get [options] SRC DST
       agent intention get [options] ID

  Shows the intention from SRC to DST (or with that ID).

      $ agent intention get web db
";

const DELETE_USAGE: &str = "
Usage: agent intention delete [options] SRC DST
       agent intention delete [options] ID

  Deletes the intention from SRC to DST (or with that ID). There is no undo.

      $ agent intention delete web db
";

const CHECK_USAGE: &str = "
Usage: agent intention check [options] SRC DST

  Prints Allowed (exit 0) or Denied (exit 1): whether a connection from SRC
  to DST would be allowed by the intentions and the default ACL policy. Any
  error exits 2.

      $ agent intention check web db

Command Options:
  -source-type=<string>  The type of SRC: consul (the default).
";

const MATCH_USAGE: &str = "
Usage: agent intention match [options] SRC|DST

  Lists the intentions that apply to connections to DST (or, with -source,
  from SRC), in the order they are evaluated.

      $ agent intention match db
      $ agent intention match -source web

Command Options:
  -destination  Match intentions by destination (the default).
  -source       Match intentions by source.
";

const LIST_USAGE: &str = "
Usage: agent intention list [options]

  Lists every intention with its precedence.
";

pub(super) async fn run(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("create") => create(&args[1..]).await,
        Some("get") => get(&args[1..]).await,
        Some("delete") => delete(&args[1..]).await,
        Some("check") => check(&args[1..]).await,
        Some("match") => matches(&args[1..]).await,
        Some("list") => list(&args[1..]).await,
        _ => group_help(args, HELP),
    }
}

/// Consul's `ParseIntentionTarget`: `name`, `ns/name` or `partition/ns/name`.
fn check_target(input: &str) -> Result<(), String> {
    if input.split('/').count() > 3 {
        return Err("input can contain at most two '/'".into());
    }
    Ok(())
}

/// `ns/name` without the default namespace, as `api.Intention` prints a side.
fn side(i: &Value, ns: &str, name: &str) -> String {
    let n = i[name].as_str().unwrap_or_default();
    match i[ns].as_str() {
        Some(ns) if !ns.is_empty() && ns != "default" => format!("{ns}/{n}"),
        _ => n.to_string(),
    }
}

/// `api.Intention`'s `String()`: `web => db (allow)`, or its permissions counted.
pub(super) fn describe(i: &Value) -> String {
    let detail = match i["Permissions"].as_array().map(Vec::len).unwrap_or(0) {
        0 => i["Action"].as_str().unwrap_or_default().to_string(),
        1 => "1 permission".to_string(),
        n => format!("{n} permissions"),
    };
    format!("{} => {} ({detail})", side(i, "SourceNS", "SourceName"), side(i, "DestinationNS", "DestinationName"))
}

fn exact_query(source: &str, destination: &str) -> Vec<(String, String)> {
    vec![("source".into(), source.into()), ("destination".into(), destination.into())]
}

/// `GET /v1/connect/intentions/exact`: the intention, or `None` on a 404.
async fn get_exact(ctx: &Ctx, source: &str, destination: &str) -> Result<Option<Value>, CallError> {
    let query = exact_query(source, destination);
    match ctx.send(Method::GET, "/v1/connect/intentions/exact", &query, None, true, None).await {
        Ok(resp) => serde_json::from_slice(&resp.body)
            .map(Some)
            .map_err(|e| CallError::Decode(format!("decoding the answer from /v1/connect/intentions/exact: {e}"))),
        Err(CallError::Status { code: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One intention to write: its two sides and the body `PUT .../exact` takes.
struct Wanted {
    source: String,
    destination: String,
    body: Value,
}

impl Wanted {
    fn view(&self) -> Value {
        let mut v = self.body.clone();
        v["SourceName"] = json!(self.source);
        v["DestinationName"] = json!(self.destination);
        v
    }
}

fn from_args(args: &[String], action: &str, meta: &[(String, String)]) -> Result<Vec<Wanted>, String> {
    if args.len() != 2 {
        return Err("Must specify two arguments: source and destination".into());
    }
    check_target(&args[0]).map_err(|e| format!("Invalid intention source: {e}"))?;
    check_target(&args[1]).map_err(|e| format!("Invalid intention destination: {e}"))?;
    let meta: Map<String, Value> = meta.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    Ok(vec![Wanted {
        source: args[0].clone(),
        destination: args[1].clone(),
        body: json!({"SourceType": "consul", "Action": action, "Meta": meta}),
    }])
}

/// `-file`: each argument a JSON `api.Intention` (`-` is stdin).
fn from_files(args: &[String]) -> Result<Vec<Wanted>, String> {
    let mut out = Vec::new();
    for path in args {
        let text = if path == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| format!("read stdin: {e}"))?;
            s
        } else {
            std::fs::read_to_string(path).map_err(|e| super::http::go_open_error(path, &e))?
        };
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let with_ns = |ns: String, name: String| if ns.is_empty() { name } else { format!("{ns}/{name}") };
        let mut body = Map::new();
        for k in ["Action", "Description", "Meta", "SourceType", "Permissions"] {
            if let Some(x) = v.get(k).filter(|x| !x.is_null()) {
                body.insert(k.into(), x.clone());
            }
        }
        out.push(Wanted {
            source: with_ns(s("SourceNS"), s("SourceName")),
            destination: with_ns(s("DestinationNS"), s("DestinationName")),
            body: Value::Object(body),
        });
    }
    Ok(out)
}

async fn put_exact(ctx: &Ctx, w: &Wanted) -> Result<(), CallError> {
    let body = serde_json::to_vec(&w.body).unwrap_or_default();
    ctx.send(
        Method::PUT,
        "/v1/connect/intentions/exact",
        &exact_query(&w.source, &w.destination),
        Some(body),
        false,
        None,
    )
    .await
    .map(|_| ())
}

async fn create(args: &[String]) -> i32 {
    let p = parse_flags!(args, &["allow", "deny", "file", "replace"], &["meta"], CREATE_USAGE);
    let deny = p.bool("deny");
    if p.bool("allow") && deny {
        fail!("Only one of -allow or -deny may be specified.");
    }
    let meta = match p.map("meta") {
        Ok(m) => m,
        Err(e) => {
            err(&e);
            err(CREATE_USAGE.trim_matches('\n'));
            return 1;
        }
    };
    let action = if deny { "deny" } else { "allow" };
    let wanted = if p.bool("file") { from_files(&p.args) } else { from_args(&p.args, action, &meta) };
    let wanted = match wanted {
        Ok(w) => w,
        Err(e) => fail!("Error: {e}"),
    };
    let ctx = ctx_or_exit!(p);
    for w in &wanted {
        let shown = describe(&w.view());
        // Consul's create refuses a pair that has an intention; -replace overwrites it.
        let existing = match get_exact(&ctx, &w.source, &w.destination).await {
            Ok(e) => e,
            Err(e) if p.bool("replace") => fail!(
                "Error looking up intention for replacement with source {:?} and destination {:?}: {e}",
                w.source,
                w.destination
            ),
            Err(e) => fail!("Error creating intention {shown:?}: {e}"),
        };
        match existing {
            Some(_) if p.bool("replace") => {
                if let Err(e) = put_exact(&ctx, w).await {
                    fail!(
                        "Error replacing intention with source {:?} and destination {:?}: {e}",
                        w.source,
                        w.destination
                    );
                }
                // Consul prints nothing for a replacement.
                continue;
            }
            Some(old) => fail!("Error creating intention {shown:?}: duplicate intention found: {}", describe(&old)),
            None => {
                if let Err(e) = put_exact(&ctx, w).await {
                    fail!("Error creating intention {shown:?}: {e}");
                }
            }
        }
        out(&format!("Created: {shown}"));
    }
    0
}

/// Consul's `GetFromArgs`: one argument is an ID, two are source and destination.
async fn get_from_args(ctx: &Ctx, args: &[String]) -> Result<Value, String> {
    match args {
        [id] => {
            let path = format!("/v1/connect/intentions/{id}");
            match ctx.send(Method::GET, &path, &[], None, true, None).await {
                Ok(resp) => serde_json::from_slice(&resp.body).map_err(|e| format!("Error reading the intention: {e}")),
                Err(CallError::Status { code: 404, .. }) => Err(format!("Intention not found with ID {id:?}")),
                Err(CallError::Status { code, body }) => {
                    Err(format!("Error reading the intention: Unexpected response {code}: {body}"))
                }
                Err(e) => Err(format!("Error reading the intention: {e}")),
            }
        }
        [source, destination] => match get_exact(ctx, source, destination).await {
            Ok(Some(i)) => Ok(i),
            Ok(None) => Err(format!("Intention not found with source {source:?} and destination {destination:?}")),
            Err(e) => Err(format!("Error reading the intention: {e}")),
        },
        _ => Err("command requires exactly 1 or 2 arguments".into()),
    }
}

/// Go's `time.RFC850` (`Monday, 02-Jan-06 15:04:05 UTC`) of an RFC 3339 time, in UTC.
fn rfc850(t: &str) -> String {
    parse_rfc3339(t)
        .map(|d| {
            let d = d.to_offset(time::UtcOffset::UTC);
            format!(
                "{}, {:02}-{}-{:02} {:02}:{:02}:{:02} UTC",
                d.weekday(),
                d.day(),
                &d.month().to_string()[..3],
                d.year().rem_euclid(100),
                d.hour(),
                d.minute(),
                d.second()
            )
        })
        .unwrap_or_else(|| t.to_string())
}

fn parse_rfc3339(t: &str) -> Option<time::OffsetDateTime> {
    let num = |s: &str| s.parse::<i64>().ok();
    let (date, rest) = t.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let (y, mo, da) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let clock_end = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (clock, zone) = rest.split_at(clock_end);
    let clock = clock.split('.').next()?;
    let mut c = clock.splitn(3, ':');
    let (h, mi, s) = (num(c.next()?)?, num(c.next()?)?, num(c.next()?)?);
    let offset = match zone {
        "" | "Z" | "z" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (oh, om) = z[1..].split_once(':')?;
            sign * (num(oh)? * 3600 + num(om)? * 60)
        }
    };
    let date = time::Date::from_calendar_date(y as i32, time::Month::try_from(mo as u8).ok()?, da as u8).ok()?;
    let clock = time::Time::from_hms(h as u8, mi as u8, s as u8).ok()?;
    let offset = time::UtcOffset::from_whole_seconds(offset as i32).ok()?;
    Some(time::PrimitiveDateTime::new(date, clock).assume_offset(offset))
}

/// `intention get`'s table.
fn detail(i: &Value) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        vec!["Source:".into(), side(i, "SourceNS", "SourceName")],
        vec!["Destination:".into(), side(i, "DestinationNS", "DestinationName")],
    ];
    let s = |k: &str| i[k].as_str().unwrap_or_default().to_string();
    for (label, key) in [("Action:", "Action"), ("ID:", "ID"), ("Description:", "Description")] {
        if !s(key).is_empty() {
            rows.push(vec![label.into(), s(key)]);
        }
    }
    if let Some(meta) = i["Meta"].as_object() {
        // serde_json's map is ordered by key, as Consul sorts them.
        for (k, v) in meta {
            rows.push(vec![format!("Meta[{k}]:"), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())]);
        }
    }
    rows.push(vec!["Created At:".into(), rfc850(&s("CreatedAt"))]);
    let mut text = columnize(&rows);
    if let Some(perms) = i["Permissions"].as_array().filter(|p| !p.is_empty()) {
        let pretty = serde_json::to_string_pretty(perms).unwrap_or_default();
        text.push_str("\nPermissions:\n");
        text.push_str(&pretty.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026"));
    }
    text
}

async fn get(args: &[String]) -> i32 {
    let p = parse_flags!(args, &[], &[], GET_USAGE);
    let ctx = ctx_or_exit!(p);
    match get_from_args(&ctx, &p.args).await {
        Ok(i) => {
            out(&detail(&i));
            0
        }
        Err(e) => fail!("{e}"),
    }
}

async fn delete(args: &[String]) -> i32 {
    let p = parse_flags!(args, &[], &[], DELETE_USAGE);
    let ctx = ctx_or_exit!(p);
    let sent = match p.args.as_slice() {
        [id] => ctx.send(Method::DELETE, &format!("/v1/connect/intentions/{id}"), &[], None, false, None).await,
        [source, destination] => {
            let q = exact_query(source, destination);
            ctx.send(Method::DELETE, "/v1/connect/intentions/exact", &q, None, false, None).await
        }
        _ => fail!("command requires exactly 1 or 2 arguments"),
    };
    if let Err(e) = sent {
        fail!("Error deleting the intention: {e}");
    }
    out("Intention deleted.");
    0
}

/// Flags as `check` and `match` parse them: a bad flag exits 2 (Go's `flag` error there).
fn parse_or_2(args: &[String], bools: &[&str], values: &[&str], usage: &str) -> Result<super::flags::Parsed, i32> {
    match super::flags::parse(args, bools, values) {
        Ok(p) => Ok(p),
        Err(super::flags::FlagError::Help) => {
            out(usage.trim_matches('\n'));
            Err(0)
        }
        Err(super::flags::FlagError::Bad(m)) => {
            err(&m);
            err(usage.trim_matches('\n'));
            Err(2)
        }
    }
}

async fn check(args: &[String]) -> i32 {
    let p = match parse_or_2(args, &[], &["source-type"], CHECK_USAGE) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if p.args.len() != 2 {
        err("Error: command requires exactly two arguments: src and dst");
        return 2;
    }
    let source_type = p.str("source-type").unwrap_or("consul");
    if source_type != "consul" {
        err(&format!(
            "-source-type {source_type:?} is not supported: must be set to consul, external-trust-domain or external-uri"
        ));
        return 2;
    }
    let ctx = match Ctx::new(&p) {
        Ok(c) => c,
        Err(e) => {
            err(&format!("Error connecting to Consul agent: {e}"));
            return 2;
        }
    };
    let mut q = vec![("source".to_string(), p.args[0].clone()), ("destination".to_string(), p.args[1].clone())];
    q.push(("source-type".into(), source_type.into()));
    let answer = ctx.send(Method::GET, "/v1/connect/intentions/check", &q, None, true, None).await;
    let allowed = match answer.map(|r| serde_json::from_slice::<Value>(&r.body)) {
        Ok(Ok(v)) => v["Allowed"].as_bool().unwrap_or(false),
        Ok(Err(e)) => {
            err(&format!("Error checking the connection: {e}"));
            return 2;
        }
        Err(e) => {
            err(&format!("Error checking the connection: {e}"));
            return 2;
        }
    };
    if allowed {
        out("Allowed");
        0
    } else {
        out("Denied");
        1
    }
}

async fn matches(args: &[String]) -> i32 {
    let p = match parse_or_2(args, &["source", "destination"], &[], MATCH_USAGE) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if p.args.len() != 1 {
        fail!("Error: command requires exactly one argument: src or dst");
    }
    if p.bool("source") && p.bool("destination") {
        fail!("Error: only one of -source or -destination may be specified");
    }
    let by = if p.bool("source") { "source" } else { "destination" };
    let ctx = ctx_or_exit!(p);
    let name = &p.args[0];
    let q = vec![("by".to_string(), by.to_string()), ("name".to_string(), name.clone())];
    let found: HashMap<String, Vec<Value>> =
        match ctx.send(Method::GET, "/v1/connect/intentions/match", &q, None, true, None).await {
            Ok(resp) => match serde_json::from_slice(&resp.body) {
                Ok(m) => m,
                Err(e) => fail!("Error matching the connection: {e}"),
            },
            Err(e) => fail!("Error matching the connection: {e}"),
        };
    for i in found.get(name).into_iter().flatten() {
        out(&describe(i));
    }
    0
}

async fn list(args: &[String]) -> i32 {
    let p = parse_flags!(args, &[], &[], LIST_USAGE);
    let ctx = ctx_or_exit!(p);
    let all: Vec<Value> = match ctx.send(Method::GET, "/v1/connect/intentions", &[], None, true, None).await {
        Ok(resp) => match serde_json::from_slice(&resp.body) {
            Ok(l) => l,
            Err(e) => fail!("Failed to retrieve the intentions list: {e}"),
        },
        Err(e) => fail!("Failed to retrieve the intentions list: {e}"),
    };
    if all.is_empty() {
        err("There are no intentions.");
        return 2;
    }
    let mut rows = vec![["ID", "Source", "Action", "Destination", "Precedence"].map(String::from).to_vec()];
    for i in &all {
        let s = |k: &str| i[k].as_str().unwrap_or_default().to_string();
        rows.push(vec![s("ID"), s("SourceName"), s("Action"), s("DestinationName"), i["Precedence"].to_string()]);
    }
    out(&columnize(&rows));
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intentions_print_as_consuls_api_prints_them() {
        let i = json!({"SourceNS": "default", "SourceName": "web", "DestinationNS": "default", "DestinationName": "db",
                       "Action": "deny", "Permissions": null});
        assert_eq!(describe(&i), "web => db (deny)");
        let i = json!({"SourceNS": "team", "SourceName": "web", "DestinationName": "*", "Action": "",
                       "Permissions": [{}, {}]});
        assert_eq!(describe(&i), "team/web => * (2 permissions)");
        assert!(check_target("a/b/c").is_ok());
        assert_eq!(check_target("a/b/c/d").unwrap_err(), "input can contain at most two '/'");
    }

    #[test]
    fn get_prints_consuls_table_with_rfc850_times() {
        let i = json!({"SourceName": "web", "DestinationName": "db", "Action": "allow", "ID": "",
                       "Description": "web reads db", "Meta": {"team": "a", "env": "prod"},
                       "CreatedAt": "2024-03-05T17:04:09.123456Z"});
        assert_eq!(
            detail(&i),
            "Source:       web\nDestination:  db\nAction:       allow\nDescription:  web reads db\n\
             Meta[env]:    prod\nMeta[team]:   a\nCreated At:   Tuesday, 05-Mar-24 17:04:09 UTC"
        );
        assert_eq!(rfc850("0001-01-01T00:00:00Z"), "Monday, 01-Jan-01 00:00:00 UTC");
        assert_eq!(rfc850("2024-03-05T01:00:00+02:00"), "Monday, 04-Mar-24 23:00:00 UTC");
    }
}
