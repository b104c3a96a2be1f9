//! consul-template's function library, once, for both template languages. Functions take and
//! return JSON values (the engines adapt their own value types at the edge), so `.ctmpl` and
//! `.hbs` files see the same data with the same field names.
//!
//! API functions (`service`, `key`, `ls`...) never do IO: they read the [`Brain`] (what the
//! watchers have delivered so far) and record in the [`Scope`] which dependencies the template
//! used and which have no data yet, consul-template's multi-phase rendering.

use crate::dep::{self, Dep};
use base64::Engine as _;
use serde_json::{json, Map, Number, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    #[error("{func}: {message}")]
    Failed { func: String, message: String },
    #[error("{func}: wrong number of arguments, expected {expected}, but got {got}")]
    Args { func: String, expected: String, got: usize },
    #[error("{func}: {source}")]
    Dep { func: String, source: dep::Error },
    #[error("function {0:?} is disabled")]
    Denied(String),
    #[error("unknown function {0:?}")]
    Unknown(String),
}

/// What the watchers have delivered: one value per dependency, already in consul-template's shape.
#[derive(Debug, Default, Clone)]
pub struct Brain {
    data: HashMap<Dep, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    /// An engine's own form of `value`, built once per delivered value: converting 1,000
    /// services on every render would cost more than rendering them.
    converted: std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
}

impl Brain {
    pub fn remember(&mut self, dep: Dep, value: Value) {
        self.data.insert(dep, Entry { value, converted: std::sync::OnceLock::new() });
    }
    pub fn recall(&self, dep: &Dep) -> Option<&Value> {
        self.data.get(dep).map(|e| &e.value)
    }
    /// The data of `dep` in the form `convert` makes, converted once and shared afterwards.
    pub fn recall_as<T: std::any::Any + Send + Sync>(
        &self,
        dep: &Dep,
        convert: impl FnOnce(&Value) -> T,
    ) -> Option<Arc<T>> {
        let e = self.data.get(dep)?;
        let any = e.converted.get_or_init(|| Arc::new(convert(&e.value))).clone();
        any.downcast::<T>().ok()
    }
    pub fn forget(&mut self, dep: &Dep) {
        self.data.remove(dep);
    }
}

/// Per-render state the functions share: the data, and what this render used and lacked.
#[derive(Debug, Default)]
pub struct Scope {
    pub brain: Arc<Brain>,
    pub used: BTreeSet<Dep>,
    pub missing: BTreeSet<Dep>,
    pub scratch: Map<String, Value>,
    /// Confines `file` (consul-template's `sandbox_path`).
    pub sandbox: Option<PathBuf>,
    pub denylist: Vec<String>,
}

impl Scope {
    /// Starts a render over `brain`, forgetting the previous render's bookkeeping.
    pub fn reset(&mut self, brain: Arc<Brain>) {
        self.brain = brain;
        self.used.clear();
        self.missing.clear();
        self.scratch.clear();
    }

    /// Marks `dep` used; returns its data, or records it missing.
    fn recall(&mut self, dep: Dep) -> Option<Value> {
        let got = self.brain.recall(&dep).cloned();
        if got.is_none() {
            self.missing.insert(dep.clone());
        }
        self.used.insert(dep);
        got
    }
}

/// Every function name both engines register. `scratch.X` is spelled `scratch_X` after the
/// Go-template source rewrite (see `engine`), which keeps columns unchanged.
pub const NAMES: &[&str] = &[
    // API
    "datacenters",
    "file",
    "key",
    "keyExists",
    "keyOrDefault",
    "ls",
    "safeLs",
    "node",
    "nodes",
    "service",
    "services",
    "tree",
    "safeTree",
    // scratch
    "scratch_Key",
    "scratch_Get",
    "scratch_Set",
    "scratch_SetX",
    "scratch_MapSet",
    "scratch_MapSetX",
    "scratch_MapValues",
    // helpers
    "base64Decode",
    "base64Encode",
    "base64URLDecode",
    "base64URLEncode",
    "byKey",
    "byPort",
    "byTag",
    "byMeta",
    "contains",
    "containsAll",
    "containsAny",
    "containsNone",
    "containsNotAll",
    "env",
    "mustEnv",
    "envOrDefault",
    "explode",
    "explodeMap",
    "mergeMap",
    "mergeMapWithOverride",
    "in",
    "indent",
    "loop",
    "join",
    "trim",
    "trimPrefix",
    "trimSuffix",
    "trimSpace",
    "parseBool",
    "parseFloat",
    "parseInt",
    "parseJSON",
    "parseUint",
    "regexReplaceAll",
    "regexMatch",
    "replaceAll",
    "sha256Hex",
    "hmacSHA256Hex",
    "md5sum",
    "timestamp",
    "toLower",
    "toUpper",
    "toTitle",
    "toJSON",
    "toJSONPretty",
    "toUnescapedJSON",
    "toUnescapedJSONPretty",
    "toYAML",
    "toTOML",
    "parseYAML",
    "split",
    "splitToMap",
    // math
    "add",
    "subtract",
    "multiply",
    "divide",
    "modulo",
    "minimum",
    "maximum",
];

fn failed(func: &str, message: impl std::fmt::Display) -> Error {
    Error::Failed { func: func.to_string(), message: message.to_string() }
}

fn arity(func: &str, args: &[Value], min: usize, max: usize) -> Result<(), Error> {
    if args.len() < min || args.len() > max {
        let expected = if min == max { min.to_string() } else { format!("{min} to {max}") };
        return Err(Error::Args { func: func.to_string(), expected, got: args.len() });
    }
    Ok(())
}

/// A string argument; scalars are printed as Go's `fmt.Sprint` would, nil is "".
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

fn list(func: &str, v: &Value) -> Result<Vec<Value>, Error> {
    match v {
        Value::Array(a) => Ok(a.clone()),
        Value::Null => Ok(vec![]),
        other => Err(failed(func, format!("wrong argument type {}", type_name(other)))),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

/// Functions whose result is a dependency's data unchanged: an engine may answer them from
/// its own cached form of the data (see [`Brain::recall_as`]) through [`direct`].
pub const DIRECT: &[&str] = &["service", "services", "nodes", "node", "datacenters"];

/// For a [`DIRECT`] function: the dependency it asks for (none for an empty service name) and
/// what it returns while that dependency has no data.
pub fn direct(name: &str, args: &[Value]) -> Result<(Option<Dep>, Value), Error> {
    let a = |i: usize| args.get(i).map(text).unwrap_or_default();
    let depf = |source| Error::Dep { func: name.to_string(), source };
    Ok(match name {
        "service" => {
            arity(name, args, 1, 2)?;
            if a(0).is_empty() {
                return Ok((None, json!([])));
            }
            let filter = args.get(1).map(text);
            (Some(Dep::service(&a(0), filter.as_deref()).map_err(depf)?), json!([]))
        }
        "services" => {
            arity(name, args, 0, 1)?;
            (Some(Dep::services(&a(0)).map_err(depf)?), json!([]))
        }
        "nodes" => {
            arity(name, args, 0, 1)?;
            (Some(Dep::nodes(&a(0)).map_err(depf)?), json!([]))
        }
        "node" => {
            arity(name, args, 0, 1)?;
            (Some(Dep::node(&a(0)).map_err(depf)?), Value::Null)
        }
        "datacenters" => {
            arity(name, args, 0, 1)?;
            (Some(Dep::Datacenters), json!([]))
        }
        other => return Err(Error::Unknown(other.to_string())),
    })
}

impl Scope {
    /// Refuses a function on the denylist.
    pub fn check_allowed(&self, name: &str) -> Result<(), Error> {
        if self.denylist.iter().any(|d| glob_match(d, name)) {
            return Err(Error::Denied(name.to_string()));
        }
        Ok(())
    }

    /// [`Scope::recall`] for an engine's cached form of the data.
    pub fn recall_as<T: std::any::Any + Send + Sync>(
        &mut self,
        dep: Dep,
        convert: impl FnOnce(&Value) -> T,
    ) -> Option<Arc<T>> {
        let got = self.brain.recall_as(&dep, convert);
        if got.is_none() {
            self.missing.insert(dep.clone());
        }
        self.used.insert(dep);
        got
    }
}

/// Calls function `name`. Locks `scope` only for the bookkeeping, never across user code.
pub fn call(name: &str, args: &[Value], scope: &Mutex<Scope>) -> Result<Value, Error> {
    let mut guard = scope.lock().unwrap_or_else(|p| p.into_inner());
    guard.check_allowed(name)?;
    if DIRECT.contains(&name) {
        let (dep, empty) = direct(name, args)?;
        return Ok(match dep {
            Some(d) => guard.recall(d).unwrap_or(empty),
            None => empty,
        });
    }
    let s = &mut *guard;
    let a = |i: usize| args.get(i).map(text).unwrap_or_default();
    let depf = |source| Error::Dep { func: name.to_string(), source };
    Ok(match name {
        // ---- API functions: record the dependency, answer from the brain ----
        "key" => {
            arity(name, args, 1, 1)?;
            if a(0).is_empty() {
                return Ok(json!(""));
            }
            let d = Dep::key(&a(0)).map_err(depf)?;
            // consul-template blocks on a key that does not exist: the template waits for it.
            match s.recall(d.clone()) {
                Some(Value::Null) => {
                    s.missing.insert(d);
                    json!("")
                }
                Some(v) => v,
                None => json!(""),
            }
        }
        "keyExists" => {
            arity(name, args, 1, 1)?;
            if a(0).is_empty() {
                return Ok(json!(false));
            }
            let d = Dep::key(&a(0)).map_err(depf)?;
            Value::Bool(matches!(s.recall(d), Some(v) if !v.is_null()))
        }
        "keyOrDefault" => {
            arity(name, args, 2, 2)?;
            if a(0).is_empty() {
                return Ok(json!(a(1)));
            }
            let d = Dep::key(&a(0)).map_err(depf)?;
            match s.recall(d) {
                Some(Value::String(v)) if !v.is_empty() => Value::String(v),
                _ => json!(a(1)),
            }
        }
        "ls" | "safeLs" | "tree" | "safeTree" => {
            arity(name, args, 1, 1)?;
            if a(0).is_empty() {
                return Ok(json!([]));
            }
            let d = Dep::key_prefix(&a(0)).map_err(depf)?;
            let Some(pairs) = s.recall(d.clone()) else { return Ok(json!([])) };
            let is_ls = name == "ls" || name == "safeLs";
            let kept: Vec<Value> = pairs
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| {
                            let key = p["Key"].as_str().unwrap_or("");
                            if is_ls {
                                !key.is_empty() && !key.contains('/')
                            } else {
                                !key.rsplit('/').next().unwrap_or("").is_empty()
                            }
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            // The safe variants refuse to render from an empty prefix (a wiped KV store).
            if kept.is_empty() && name.starts_with("safe") {
                s.missing.insert(d);
            }
            Value::Array(kept)
        }
        "file" => {
            arity(name, args, 1, 1)?;
            let p = a(0).trim().to_string();
            if p.is_empty() {
                return Ok(json!(""));
            }
            let path = sandboxed(s.sandbox.as_deref(), Path::new(&p)).map_err(|m| failed(name, m))?;
            match s.recall(Dep::File { path: path.to_string_lossy().into_owned() }) {
                Some(Value::String(v)) => Value::String(v),
                _ => json!(""),
            }
        }
        // ---- scratch: per-render key/value space ----
        "scratch_Key" => Value::Bool(s.scratch.contains_key(&a(0))),
        "scratch_Get" => s.scratch.get(&a(0)).cloned().unwrap_or(Value::Null),
        "scratch_Set" | "scratch_SetX" => {
            arity(name, args, 2, 2)?;
            if name == "scratch_Set" || !s.scratch.contains_key(&a(0)) {
                s.scratch.insert(a(0), args[1].clone());
            }
            json!("")
        }
        "scratch_MapSet" | "scratch_MapSetX" => {
            arity(name, args, 3, 3)?;
            let entry = s.scratch.entry(a(0)).or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            if let Some(m) = entry.as_object_mut() {
                if name == "scratch_MapSet" || !m.contains_key(&a(1)) {
                    m.insert(a(1), args[2].clone());
                }
            }
            json!("")
        }
        "scratch_MapValues" => match s.scratch.get(&a(0)) {
            Some(Value::Object(m)) => Value::Array(m.values().cloned().collect()),
            _ => json!([]),
        },
        _ => {
            drop(guard);
            return helper(name, args);
        }
    })
}

/// The pure helpers: no brain, no scope.
pub fn helper(name: &str, args: &[Value]) -> Result<Value, Error> {
    let a = |i: usize| args.get(i).map(text).unwrap_or_default();
    let n = |k: usize| -> Result<(), Error> { arity(name, args, k, k) };
    Ok(match name {
        "base64Encode" => {
            n(1)?;
            json!(base64::engine::general_purpose::STANDARD.encode(a(0)))
        }
        "base64URLEncode" => {
            n(1)?;
            json!(base64::engine::general_purpose::URL_SAFE.encode(a(0)))
        }
        "base64Decode" | "base64URLDecode" => {
            n(1)?;
            let engine = if name == "base64Decode" {
                &base64::engine::general_purpose::STANDARD
            } else {
                &base64::engine::general_purpose::URL_SAFE
            };
            let bytes = engine.decode(a(0)).map_err(|e| failed(name, e))?;
            json!(String::from_utf8_lossy(&bytes))
        }
        "byKey" => {
            n(1)?;
            let mut out = Map::new();
            for p in list(name, &args[0])? {
                let key = p["Key"].as_str().unwrap_or("");
                let (top, rest) = key.split_once('/').unwrap_or((key, ""));
                if rest.is_empty() {
                    continue;
                }
                let mut np = p.clone();
                np["Key"] = json!(rest);
                let group = out.entry(top.to_string()).or_insert_with(|| json!({}));
                if let Some(g) = group.as_object_mut() {
                    g.insert(rest.to_string(), np);
                }
            }
            Value::Object(out)
        }
        "byTag" => {
            n(1)?;
            let mut out: Map<String, Value> = Map::new();
            for s in list(name, &args[0])? {
                let tags = s.get("Tags").or_else(|| s.get("ServiceTags")).cloned().unwrap_or(json!([]));
                for t in tags.as_array().into_iter().flatten() {
                    push(&mut out, text(t), s.clone());
                }
            }
            Value::Object(out)
        }
        "byPort" => {
            n(1)?;
            let mut out: Map<String, Value> = Map::new();
            for s in list(name, &args[0])? {
                let port = s.get("Port").or_else(|| s.get("ServicePort")).map(text).unwrap_or_default();
                push(&mut out, port, s.clone());
            }
            Value::Object(out)
        }
        "byMeta" => {
            n(2)?;
            let metas: Vec<String> = a(0).split(',').map(str::to_string).collect();
            let normalize = |x: &str| -> String {
                x.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
            };
            let mut out: Map<String, Value> = Map::new();
            for s in list(name, &args[1])? {
                let mut parts = Vec::new();
                for meta in &metas {
                    let real = meta.strip_suffix("|int").unwrap_or(meta);
                    let val = s["ServiceMeta"][real].as_str().unwrap_or("").to_string();
                    let value = if meta.ends_with("|int") {
                        let v = if val.is_empty() { "0".to_string() } else { val };
                        let i: i64 = v.parse().map_err(|_| failed(name, format!("cannot parse {v} as number")))?;
                        format!("{i:05}")
                    } else if val.is_empty() {
                        format!("_no_{real}_")
                    } else {
                        val
                    };
                    parts.push(normalize(&value));
                }
                push(&mut out, parts.join("_"), s.clone());
            }
            Value::Object(out)
        }
        "contains" => {
            n(2)?;
            Value::Bool(contained(&args[1], &args[0]))
        }
        "in" => {
            n(2)?;
            Value::Bool(contained(&args[0], &args[1]))
        }
        "containsAll" | "containsAny" | "containsNone" | "containsNotAll" => {
            n(2)?;
            let (ret_true, invert) = match name {
                "containsAll" => (true, true),
                "containsAny" => (false, false),
                "containsNone" => (true, false),
                _ => (false, true),
            };
            let mut result = ret_true;
            for v in list(name, &args[0])? {
                if contained(&args[1], &v) != invert {
                    result = !ret_true;
                    break;
                }
            }
            Value::Bool(result)
        }
        "env" => {
            n(1)?;
            json!(std::env::var(a(0)).unwrap_or_default())
        }
        "mustEnv" => {
            n(1)?;
            json!(std::env::var(a(0)).map_err(|_| failed(name, format!("environment variable {} not set", a(0))))?)
        }
        "envOrDefault" => {
            n(2)?;
            json!(std::env::var(a(0)).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| a(1)))
        }
        "explode" => {
            n(1)?;
            let mut out = Map::new();
            for p in list(name, &args[0])? {
                let k = p["Key"].as_str().unwrap_or("").to_string();
                explode_into(&mut out, &k, p["Value"].clone()).map_err(|m| failed(name, m))?;
            }
            Value::Object(out)
        }
        "explodeMap" => {
            n(1)?;
            let mut out = Map::new();
            if let Value::Object(m) = &args[0] {
                for (k, v) in m {
                    explode_into(&mut out, k, v.clone()).map_err(|m| failed(name, m))?;
                }
            }
            Value::Object(out)
        }
        "mergeMap" | "mergeMapWithOverride" => {
            n(2)?;
            let mut dst = args[0].clone();
            merge(&mut dst, &args[1], name == "mergeMapWithOverride");
            dst
        }
        "indent" => {
            n(2)?;
            let spaces = args[0].as_i64().or_else(|| a(0).parse().ok()).unwrap_or(-1);
            if spaces < 0 {
                return Err(failed(name, "indent value must be a positive integer"));
            }
            let prefix = " ".repeat(spaces as usize);
            let mut out = String::new();
            let mut at_start = true;
            for c in a(1).chars() {
                if at_start && c != '\n' {
                    out.push_str(&prefix);
                }
                out.push(c);
                at_start = c == '\n';
            }
            json!(out)
        }
        "loop" => {
            arity(name, args, 1, 2)?;
            let int = |v: &Value| {
                v.as_i64().or_else(|| text(v).parse().ok()).ok_or_else(|| failed(name, "bad argument type"))
            };
            let (start, stop) = if args.len() == 1 { (0, int(&args[0])?) } else { (int(&args[0])?, int(&args[1])?) };
            // Go streams the numbers through a channel; a list has to fit in memory.
            if stop.saturating_sub(start) > 10_000_000 {
                return Err(failed(name, format!("range {start}..{stop} is too large")));
            }
            Value::Array((start..stop).map(|i| json!(i)).collect())
        }
        "join" => {
            n(2)?;
            let items: Vec<String> = list(name, &args[1])?.iter().map(text).collect();
            json!(items.join(&a(0)))
        }
        "trim" => {
            n(2)?;
            let cut: Vec<char> = a(0).chars().collect();
            json!(a(1).trim_matches(|c| cut.contains(&c)))
        }
        "trimPrefix" => {
            n(2)?;
            let s = a(1);
            json!(s.strip_prefix(a(0).as_str()).unwrap_or(&s))
        }
        "trimSuffix" => {
            n(2)?;
            let s = a(1);
            json!(s.strip_suffix(a(0).as_str()).unwrap_or(&s))
        }
        "trimSpace" => {
            n(1)?;
            json!(a(0).trim())
        }
        "parseBool" => {
            n(1)?;
            json!(match a(0).as_str() {
                "" => false,
                "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
                "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
                other => return Err(failed(name, format!("strconv.ParseBool: parsing {other:?}: invalid syntax"))),
            })
        }
        "parseFloat" => {
            n(1)?;
            let s = a(0);
            let f: f64 = if s.is_empty() {
                0.0
            } else {
                s.parse().map_err(|_| failed(name, format!("invalid syntax {s:?}")))?
            };
            Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)
        }
        "parseInt" => {
            n(1)?;
            let s = a(0);
            let i: i64 =
                if s.is_empty() { 0 } else { s.parse().map_err(|_| failed(name, format!("invalid syntax {s:?}")))? };
            json!(i)
        }
        "parseUint" => {
            n(1)?;
            let s = a(0);
            let i: u64 =
                if s.is_empty() { 0 } else { s.parse().map_err(|_| failed(name, format!("invalid syntax {s:?}")))? };
            json!(i)
        }
        "parseJSON" => {
            n(1)?;
            let s = a(0);
            if s.is_empty() {
                json!({})
            } else {
                serde_json::from_str(&s).map_err(|e| failed(name, e))?
            }
        }
        "replaceAll" => {
            n(3)?;
            json!(a(2).replace(&a(0), &a(1)))
        }
        "regexReplaceAll" => {
            n(3)?;
            let re = regex::Regex::new(&a(0)).map_err(|e| failed(name, e))?;
            // Go's `$1`/`${1}` expansion is the regex crate's too.
            json!(re.replace_all(&a(2), a(1).as_str()))
        }
        "regexMatch" => {
            n(2)?;
            let re = regex::Regex::new(&a(0)).map_err(|e| failed(name, e))?;
            json!(re.is_match(&a(1)))
        }
        "sha256Hex" => {
            n(1)?;
            use sha2::Digest;
            let digest = sha2::Sha256::digest(a(0).as_bytes());
            json!(hex(&digest))
        }
        "md5sum" => {
            n(1)?;
            json!(hex(&md5(a(0).as_bytes())))
        }
        "hmacSHA256Hex" => {
            n(2)?;
            json!(hex(&hmac_sha256(a(1).as_bytes(), a(0).as_bytes())))
        }
        "timestamp" => {
            arity(name, args, 0, 1)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            match args.len() {
                0 => json!(go_time_format(now, "2006-01-02T15:04:05Z07:00")),
                _ if a(0) == "unix" => json!(now.to_string()),
                _ => json!(go_time_format(now, &a(0))),
            }
        }
        "toLower" => {
            n(1)?;
            json!(a(0).to_lowercase())
        }
        "toUpper" => {
            n(1)?;
            json!(a(0).to_uppercase())
        }
        "toTitle" => {
            n(1)?;
            let mut out = String::new();
            let mut prev_letter = false;
            for c in a(0).chars() {
                if !prev_letter {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                prev_letter = c.is_alphanumeric() || c == '\'';
            }
            json!(out)
        }
        "toJSON" | "toUnescapedJSON" => {
            n(1)?;
            let s = serde_json::to_string(&args[0]).map_err(|e| failed(name, e))?;
            json!(if name == "toJSON" { go_html_escape(&s) } else { s })
        }
        "toYAML" => {
            n(1)?;
            if !args[0].is_object() {
                return Err(failed(name, "expected a map (consul-template takes map[string]interface{})"));
            }
            json!(crate::encode::to_yaml(&args[0]))
        }
        "toTOML" => {
            n(1)?;
            json!(crate::encode::to_toml(&args[0]).map_err(|e| failed(name, e))?)
        }
        "parseYAML" => {
            n(1)?;
            let s = a(0);
            if s.trim().is_empty() {
                json!({})
            } else {
                serde_yaml::from_str::<Value>(&s).map_err(|e| failed(name, e))?
            }
        }
        "toJSONPretty" | "toUnescapedJSONPretty" => {
            n(1)?;
            let s = serde_json::to_string_pretty(&args[0]).map_err(|e| failed(name, e))?;
            json!(if name == "toJSONPretty" { go_html_escape(&s) } else { s })
        }
        "split" => {
            n(2)?;
            let s = a(1);
            let s = s.trim();
            if s.is_empty() {
                json!([])
            } else {
                json!(s.split(a(0).as_str()).collect::<Vec<_>>())
            }
        }
        "splitToMap" => {
            n(3)?;
            let s = a(2);
            let mut out = Map::new();
            let s = s.trim();
            if !s.is_empty() {
                for item in s.split(a(0).as_str()) {
                    if let Some((k, v)) = item.split_once(a(1).as_str()) {
                        out.insert(k.to_string(), json!(v));
                    }
                }
            }
            Value::Object(out)
        }
        "add" | "subtract" | "multiply" | "divide" | "modulo" | "minimum" | "maximum" => {
            n(2)?;
            // Go's argument order: `{{ 5 | subtract 2 }}` is subtract(2, 5) = 5 - 2.
            math(name, &args[1], &args[0])?
        }
        other => return Err(Error::Unknown(other.to_string())),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 1321 MD5 (Go's `md5.Sum`); small enough not to be worth a dependency.
fn md5(input: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14,
        20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6,
        10, 15, 21,
    ];
    let k: Vec<u32> = (0..64).map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32).collect();
    let mut msg = input.to_vec();
    let bit_len = (input.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());
    let (mut a0, mut b0, mut c0, mut d0) = (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk.chunks(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, v) in [a0, b0, c0, d0].iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// RFC 2104 over SHA-256 (Go's `hmac.New(sha256.New, key)`).
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut k = if key.len() > 64 { sha2::Sha256::digest(key).to_vec() } else { key.to_vec() };
    k.resize(64, 0);
    let mut inner = sha2::Sha256::new();
    inner.update(k.iter().map(|b| b ^ 0x36).collect::<Vec<u8>>());
    inner.update(message);
    let mut outer = sha2::Sha256::new();
    outer.update(k.iter().map(|b| b ^ 0x5c).collect::<Vec<u8>>());
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

fn push(out: &mut Map<String, Value>, key: String, v: Value) {
    let slot = out.entry(key).or_insert_with(|| json!([]));
    if let Some(a) = slot.as_array_mut() {
        a.push(v);
    }
}

/// consul-template's `in`: element of a list (same type), or substring of a string.
fn contained(haystack: &Value, needle: &Value) -> bool {
    match haystack {
        Value::Array(items) => items.iter().any(|i| match (i, needle) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (Value::String(a), Value::String(b)) => a == b,
            _ => false,
        }),
        Value::String(s) => needle.as_str().is_some_and(|n| s.contains(n)),
        _ => false,
    }
}

fn explode_into(m: &mut Map<String, Value>, key: &str, v: Value) -> Result<(), String> {
    match key.split_once('/') {
        Some((top, rest)) => {
            let slot = m.entry(top.to_string()).or_insert_with(|| json!({}));
            match slot.as_object_mut() {
                Some(nest) => explode_into(nest, rest, v),
                None => Err(format!("not a map: {key:?}: {top:?} already has value {slot}")),
            }
        }
        None => {
            if !key.is_empty() {
                m.insert(key.to_string(), v);
            }
            Ok(())
        }
    }
}

/// mergo.Map semantics: fill what `dst` lacks from `src`, recursively; `overwrite` lets src win.
fn merge(dst: &mut Value, src: &Value, overwrite: bool) {
    let (Value::Object(d), Value::Object(s)) = (dst, src) else { return };
    for (k, sv) in s {
        match d.get_mut(k) {
            Some(dv) if dv.is_object() && sv.is_object() => merge(dv, sv, overwrite),
            Some(dv) => {
                if overwrite {
                    *dv = sv.clone();
                }
            }
            None => {
                d.insert(k.clone(), sv.clone());
            }
        }
    }
}

fn math(func: &str, a: &Value, b: &Value) -> Result<Value, Error> {
    let (Value::Number(x), Value::Number(y)) = (a, b) else {
        let bad = if a.is_number() { b } else { a };
        return Err(failed(func, format!("unknown type for {bad} ({})", type_name(bad))));
    };
    if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
        return Ok(match func {
            "add" => json!(x.wrapping_add(y)),
            "subtract" => json!(x.wrapping_sub(y)),
            "multiply" => json!(x.wrapping_mul(y)),
            "divide" | "modulo" if y == 0 => return Err(failed(func, "division by zero")),
            "divide" => json!(x / y),
            "modulo" => json!(x % y),
            "minimum" => json!(x.min(y)),
            _ => json!(x.max(y)),
        });
    }
    let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
    let r = match func {
        "add" => x + y,
        "subtract" => x - y,
        "multiply" => x * y,
        "divide" if y == 0.0 => return Err(failed(func, "division by zero")),
        "divide" => x / y,
        "modulo" => return Err(failed(func, "modulo requires integers")),
        "minimum" => x.min(y),
        _ => x.max(y),
    };
    Ok(Number::from_f64(r).map(Value::Number).unwrap_or(Value::Null))
}

/// Go's json.Marshal escapes <, > and & for HTML safety; toJSON output keeps that.
fn go_html_escape(s: &str) -> String {
    s.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

/// `filepath.Clean` the path and, with a sandbox, refuse anything that resolves outside it.
fn sandboxed(sandbox: Option<&Path>, path: &Path) -> Result<PathBuf, String> {
    let Some(sandbox) = sandbox else { return Ok(path.to_path_buf()) };
    let root = sandbox.canonicalize().map_err(|e| format!("failed to resolve sandbox path: {e}"))?;
    let target = path.canonicalize().map_err(|e| format!("failed to resolve target path: {e}"))?;
    if !target.starts_with(&root) {
        return Err(format!("'{}' is outside of sandbox", path.display()));
    }
    Ok(target)
}

/// Shell-style glob with `*` and `?` only (the denylist's syntax).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// Formats a UTC unix time with a Go reference layout (`2006-01-02T15:04:05Z07:00`...).
pub fn go_time_format(unix: i64, layout: &str) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let weekday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
    let month = MONTHS[(m - 1) as usize];
    let h12 = if hh % 12 == 0 { 12 } else { hh % 12 };
    // Longest tokens first so "2006" wins over "2", "January" over "Jan".
    let tokens: [(&str, String); 22] = [
        ("January", month.to_string()),
        ("Monday", DAYS[weekday].to_string()),
        ("Z07:00", "Z".into()),
        ("-07:00", "+00:00".into()),
        ("-0700", "+0000".into()),
        ("2006", format!("{y:04}")),
        ("Jan", month[..3].to_string()),
        ("Mon", DAYS[weekday][..3].to_string()),
        ("MST", "UTC".into()),
        ("Z0700", "Z".into()),
        ("01", format!("{m:02}")),
        ("02", format!("{d:02}")),
        ("_2", format!("{d:>2}")),
        ("15", format!("{hh:02}")),
        ("03", format!("{h12:02}")),
        ("04", format!("{mm:02}")),
        ("05", format!("{ss:02}")),
        ("06", format!("{:02}", y % 100)),
        ("PM", if hh >= 12 { "PM".into() } else { "AM".into() }),
        ("pm", if hh >= 12 { "pm".into() } else { "am".into() }),
        ("1", m.to_string()),
        ("2", d.to_string()),
    ];
    let extra: [(&str, String); 3] = [("3", h12.to_string()), ("4", mm.to_string()), ("5", ss.to_string())];
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for (tok, val) in tokens.iter().chain(extra.iter()) {
            if let Some(r) = rest.strip_prefix(tok) {
                out.push_str(val);
                rest = r;
                continue 'outer;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, args: &[Value]) -> Value {
        helper(name, args).unwrap()
    }

    #[test]
    fn string_helpers_take_piped_value_last() {
        assert_eq!(h("join", &[json!(","), json!(["a", "b"])]), json!("a,b"));
        assert_eq!(h("split", &[json!(","), json!(" a,b ")]), json!(["a", "b"]));
        assert_eq!(h("split", &[json!(","), json!("  ")]), json!([]));
        assert_eq!(h("replaceAll", &[json!("."), json!("_"), json!("a.b.c")]), json!("a_b_c"));
        assert_eq!(h("regexReplaceAll", &[json!("(\\w+)-(\\d+)"), json!("$2"), json!("web-12")]), json!("12"));
        assert_eq!(h("trim", &[json!("x"), json!("xxhixx")]), json!("hi"));
        assert_eq!(h("trimPrefix", &[json!("v"), json!("v1.2")]), json!("1.2"));
        assert_eq!(h("toUpper", &[json!("abc")]), json!("ABC"));
        assert_eq!(h("toTitle", &[json!("hello world")]), json!("Hello World"));
        assert_eq!(h("indent", &[json!(2), json!("a\nb\n")]), json!("  a\n  b\n"));
        assert_eq!(h("splitToMap", &[json!(","), json!("="), json!("a=1,b=2")]), json!({"a": "1", "b": "2"}));
    }

    #[test]
    fn contains_and_friends() {
        let tags = json!(["prod", "web"]);
        assert_eq!(h("contains", &[json!("prod"), tags.clone()]), json!(true));
        assert_eq!(h("in", &[tags.clone(), json!("db")]), json!(false));
        assert_eq!(h("containsAll", &[json!(["prod", "web"]), tags.clone()]), json!(true));
        assert_eq!(h("containsAll", &[json!(["prod", "db"]), tags.clone()]), json!(false));
        assert_eq!(h("containsAny", &[json!(["db", "web"]), tags.clone()]), json!(true));
        assert_eq!(h("containsNone", &[json!(["db"]), tags.clone()]), json!(true));
        assert_eq!(h("containsNotAll", &[json!(["db", "web"]), tags]), json!(true));
    }

    #[test]
    fn math_follows_go_argument_order() {
        assert_eq!(h("subtract", &[json!(2), json!(5)]), json!(3));
        assert_eq!(h("divide", &[json!(2), json!(10)]), json!(5));
        assert_eq!(h("add", &[json!(1.5), json!(1)]), json!(2.5));
        assert!(helper("divide", &[json!(0), json!(1)]).is_err());
        assert_eq!(h("maximum", &[json!(2), json!(7)]), json!(7));
    }

    #[test]
    fn grouping_helpers() {
        let svcs = json!([{"ID": "a", "Tags": ["x", "y"], "Port": 80, "ServiceMeta": {"v": "1"}},
                          {"ID": "b", "Tags": ["y"], "Port": 81, "ServiceMeta": {}}]);
        let by_tag = h("byTag", std::slice::from_ref(&svcs));
        assert_eq!(by_tag["y"].as_array().unwrap().len(), 2);
        assert_eq!(by_tag["x"][0]["ID"], "a");
        let by_meta = h("byMeta", &[json!("v"), svcs]);
        assert_eq!(by_meta["1"][0]["ID"], "a");
        assert_eq!(by_meta["_no_v_"][0]["ID"], "b");
        let pairs =
            json!([{"Key": "redis/a/b", "Value": "3"}, {"Key": "es/a", "Value": "1"}, {"Key": "top", "Value": "x"}]);
        let by_key = h("byKey", std::slice::from_ref(&pairs));
        assert_eq!(by_key["redis"]["a/b"]["Key"], "a/b");
        assert!(by_key.get("top").is_none());
        assert_eq!(h("explode", &[pairs]), json!({"redis": {"a": {"b": "3"}}, "es": {"a": "1"}, "top": "x"}));
    }

    #[test]
    fn json_round_trips_with_go_escaping() {
        assert_eq!(h("toJSON", &[json!({"a": "<b>"})]), json!("{\"a\":\"\\u003cb\\u003e\"}"));
        assert_eq!(h("parseJSON", &[json!("{\"a\": [1, 2]}")]), json!({"a": [1, 2]}));
        assert_eq!(h("parseJSON", &[json!("")]), json!({}));
    }

    #[test]
    fn yaml_and_toml() {
        assert_eq!(h("toYAML", &[json!({"b": ["x"], "a": "1"})]), json!("a: \"1\"\nb:\n- x"));
        assert!(helper("toYAML", &[json!("str")]).is_err());
        assert_eq!(h("toTOML", &[json!({"a": {"b": 1}})]), json!("[a]\n  b = 1"));
        assert!(helper("toTOML", &[json!([1])]).is_err());
        assert_eq!(h("parseYAML", &[json!("a: 1\nb: [x, y]\n")]), json!({"a": 1, "b": ["x", "y"]}));
        assert_eq!(h("parseYAML", &[json!("")]), json!({}));
        assert!(helper("parseYAML", &[json!("a: [")]).is_err());
    }

    #[test]
    fn digests() {
        assert_eq!(h("md5sum", &[json!("abc")]), json!("900150983cd24fb0d6963f7d28e17f72"));
        assert_eq!(h("md5sum", &[json!("")]), json!("d41d8cd98f00b204e9800998ecf8427e"));
        let long = "The quick brown fox jumps over the lazy dog".repeat(3);
        // Reference from coreutils' md5sum; spans more than one 64-byte block.
        assert_eq!(h("md5sum", &[json!(long)]), json!("4e67db4a7a406b0cfdadd887cde7888e"));
        assert_eq!(
            h("sha256Hex", &[json!("abc")]),
            json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(
            h("hmacSHA256Hex", &[json!("The quick brown fox jumps over the lazy dog"), json!("key")]),
            json!("f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8")
        );
    }

    #[test]
    fn go_time_layouts() {
        // 2021-03-04T05:06:07Z
        let t = 1_614_834_367;
        assert_eq!(go_time_format(t, "2006-01-02T15:04:05Z07:00"), "2021-03-04T05:06:07Z");
        assert_eq!(go_time_format(t, "Mon Jan _2 15:04:05 2006"), "Thu Mar  4 05:06:07 2021");
        assert_eq!(go_time_format(t, "02/01/06 3:04PM"), "04/03/21 5:06AM");
    }

    #[test]
    fn api_functions_record_used_and_missing() {
        let scope = Mutex::new(Scope::default());
        let got = call("service", &[json!("web")], &scope).unwrap();
        assert_eq!(got, json!([]));
        let web = Dep::service("web", None).unwrap();
        assert!(scope.lock().unwrap().missing.contains(&web));

        let mut brain = Brain::default();
        brain.remember(web.clone(), json!([{"Address": "10.0.0.1"}]));
        brain.remember(Dep::key("a").unwrap(), Value::Null);
        brain.remember(Dep::key("b").unwrap(), json!("bee"));
        scope.lock().unwrap().reset(Arc::new(brain));
        assert_eq!(call("service", &[json!("web|passing")], &scope).unwrap()[0]["Address"], "10.0.0.1");
        assert_eq!(call("keyOrDefault", &[json!("a"), json!("dflt")], &scope).unwrap(), json!("dflt"));
        assert_eq!(call("keyExists", &[json!("a")], &scope).unwrap(), json!(false));
        assert_eq!(call("key", &[json!("b")], &scope).unwrap(), json!("bee"));
        let s = scope.lock().unwrap();
        assert!(s.missing.is_empty(), "{:?}", s.missing);
        assert_eq!(s.used.len(), 3);
        drop(s);
        // A key that does not exist blocks the render, as in consul-template.
        call("key", &[json!("a")], &scope).unwrap();
        assert!(!scope.lock().unwrap().missing.is_empty());
    }

    #[test]
    fn safe_ls_refuses_an_empty_prefix() {
        let mut brain = Brain::default();
        brain.remember(Dep::key_prefix("app").unwrap(), json!([]));
        let scope = Mutex::new(Scope { brain: Arc::new(brain), ..Default::default() });
        assert_eq!(call("ls", &[json!("app")], &scope).unwrap(), json!([]));
        assert!(scope.lock().unwrap().missing.is_empty(), "ls renders an empty prefix");
        assert_eq!(call("safeLs", &[json!("app")], &scope).unwrap(), json!([]));
        assert!(!scope.lock().unwrap().missing.is_empty(), "safeLs waits for data");
    }

    #[test]
    fn denylist_disables_functions() {
        let scope = Mutex::new(Scope { denylist: vec!["env*".into()], ..Default::default() });
        assert_eq!(call("env", &[json!("HOME")], &scope), Err(Error::Denied("env".into())));
        assert!(glob_match("sprig_*", "sprig_upper"));
    }
}
