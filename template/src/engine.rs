//! The two template languages behind one type: Go templates (`.ctmpl` and anything else, via the
//! `gotmpl` engine, the syntax consul-template users already have) and handlebars (`.hbs`), both
//! with the function library of [`crate::funcs`] bound to a per-template [`Scope`].
//!
//! Compiling checks the whole template, as Go's `text/template` parser does (see [`crate::check`]
//! for what the engines leave out): syntax, block structure, unknown functions and helpers
//! anywhere, each with line and column. Rendering is pure: it reads a [`Brain`] snapshot and
//! reports which dependencies it used and which had no data yet.
//!
//! Recursion (`{{template}}`, `executeTemplate`, handlebars partials) ends with gotmpl's
//! "recursion limit exceeded" before the stack does: a template that can recurse renders on a
//! thread of its own with a known stack, and each recursive entry checks how much of it is used.

use crate::check;
use crate::dep::Dep;
use crate::funcs::{self, Brain, Scope};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    #[error("{name}:{line}:{col}: {message}")]
    Parse { name: String, line: usize, col: usize, message: String },
    #[error("{name}: {message}")]
    Syntax { name: String, message: String },
    #[error("{name}: execute: {message}")]
    Execute { name: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Go,
    Handlebars,
}

impl Language {
    /// `.hbs`/`.handlebars` files are handlebars; everything else is Go template syntax, as
    /// consul-template reads it.
    pub fn of(path: &Path) -> Language {
        match path.extension().and_then(|e| e.to_str()) {
            Some("hbs") | Some("handlebars") => Language::Handlebars,
            _ => Language::Go,
        }
    }
}

/// Per-template knobs from the template's configuration block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub left_delimiter: Option<String>,
    pub right_delimiter: Option<String>,
    pub error_on_missing_key: bool,
    pub sandbox: Option<PathBuf>,
    pub function_denylist: Vec<String>,
}

/// The outcome of one render.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub output: String,
    pub used: BTreeSet<Dep>,
    pub missing: BTreeSet<Dep>,
}

enum Inner {
    Go(Arc<gotmpl::Template>),
    Handlebars(Box<handlebars::Handlebars<'static>>),
}

pub struct Compiled {
    name: String,
    inner: Inner,
    scope: Arc<Mutex<Scope>>,
    recursion: Arc<Recursion>,
    /// It has `{{define}}`s or inline partials, so it can recurse: render on a thread with a
    /// stack of known size. Others cannot nest deeper than the parsers allow (100 levels).
    can_recurse: bool,
}

/// gotmpl stops `{{template}}` recursion after this many nested executions with "recursion
/// limit exceeded" (its private `MAX_EXEC_DEPTH`). `executeTemplate` and handlebars partials
/// start a fresh execution each time, so they count their own nesting against the same number.
pub const MAX_DEPTH: usize = 200;

/// The stack of a render that can recurse. Only the pages a render touches are ever resident.
const RENDER_STACK: usize = 64 << 20;

/// A recursive entry fails once less than this is left of [`RENDER_STACK`]: room for the
/// deepest execution that does not pass through another recursive entry (gotmpl's 200 levels of
/// `{{template}}`/`{{if}}`/`{{range}}` with parenthesised pipelines in each). Measured in
/// `recursion_stops_before_the_stack_does`: under 0.5 MiB in a debug build.
const STACK_RESERVE: usize = 8 << 20;

/// What the recursive entries of one render share: how deep they are, and where the render's
/// stack starts.
#[derive(Debug, Default)]
struct Recursion {
    depth: std::sync::atomic::AtomicUsize,
    stack_top: std::sync::atomic::AtomicUsize,
    /// The deepest stack use a recursive entry saw (for the test that sizes the reserve).
    deepest: std::sync::atomic::AtomicUsize,
}

/// An address on the current stack.
#[inline(never)]
fn stack_address() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// Leaves one level of recursion when dropped.
struct Level<'a>(&'a Recursion);

impl Drop for Level<'_> {
    fn drop(&mut self) {
        self.0.depth.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Recursion {
    /// Enters one level; `None` when that would go past [`MAX_DEPTH`] or too close to the end
    /// of the stack.
    fn enter(&self) -> Option<Level<'_>> {
        use std::sync::atomic::Ordering::Relaxed;
        let depth = self.depth.fetch_add(1, Relaxed) + 1;
        let level = Level(self);
        let top = self.stack_top.load(Relaxed);
        let used = if top == 0 { 0 } else { top.abs_diff(stack_address()) };
        self.deepest.fetch_max(used, Relaxed);
        (depth <= MAX_DEPTH && used <= RENDER_STACK - STACK_RESERVE).then_some(level)
    }
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled").field("name", &self.name).finish()
    }
}

const HBS_NAME: &str = "t";

impl Compiled {
    /// Parses `source`. `name` appears in error messages (the file path).
    pub fn new(name: &str, source: &str, language: Language, opts: &Options) -> Result<Compiled, Error> {
        let scope = Arc::new(Mutex::new(Scope {
            sandbox: opts.sandbox.clone(),
            denylist: opts.function_denylist.clone(),
            ..Default::default()
        }));
        let recursion = Arc::new(Recursion::default());
        let (inner, can_recurse) = match language {
            Language::Go => {
                let slot = Arc::new(std::sync::OnceLock::new());
                let (t, can_recurse) = compile_go(name, source, opts, &scope, &slot, &recursion)?;
                let t = Arc::new(t);
                // A weak link: the template owns the function that points back at it.
                let _ = slot.set(Arc::downgrade(&t));
                (Inner::Go(t), can_recurse)
            }
            Language::Handlebars => {
                let (h, can_recurse) = compile_hbs(name, source, opts, &scope, &recursion)?;
                (Inner::Handlebars(Box::new(h)), can_recurse)
            }
        };
        Ok(Compiled { name: name.to_string(), inner, scope, recursion, can_recurse })
    }

    /// Executes against `brain`. An execution error while data is still missing is not an
    /// error: a template written for complete data (`index (service "x") 0`) may fail on the
    /// empty first pass, and will be rendered again once the data arrives.
    pub fn render(&self, brain: Arc<Brain>) -> Result<Rendered, Error> {
        self.scope.lock().unwrap_or_else(|p| p.into_inner()).reset(brain);
        let result = if self.can_recurse {
            std::thread::scope(|s| {
                std::thread::Builder::new()
                    .name("render".into())
                    .stack_size(RENDER_STACK)
                    .spawn_scoped(s, || self.execute())
                    .map_err(|e| format!("starting a render thread: {e}"))?
                    .join()
                    .unwrap_or_else(|_| Err("the render panicked".into()))
            })
        } else {
            self.execute()
        };
        let mut scope = self.scope.lock().unwrap_or_else(|p| p.into_inner());
        // Let go of the snapshot so the runner's next update does not have to copy it.
        scope.brain = Arc::default();
        let used = std::mem::take(&mut scope.used);
        let missing = std::mem::take(&mut scope.missing);
        match result {
            Ok(output) => Ok(Rendered { output, used, missing }),
            Err(_) if !missing.is_empty() => Ok(Rendered { output: String::new(), used, missing }),
            Err(message) => Err(Error::Execute { name: self.name.clone(), message }),
        }
    }

    /// Runs the engine on the calling thread.
    fn execute(&self) -> Result<String, String> {
        use std::sync::atomic::Ordering::Relaxed;
        self.recursion.depth.store(0, Relaxed);
        // Only a render on its own thread knows how much stack it has.
        self.recursion.stack_top.store(if self.can_recurse { stack_address() } else { 0 }, Relaxed);
        match &self.inner {
            Inner::Go(t) => t.execute_to_string(&gotmpl::Value::Nil).map_err(|e| e.to_string()),
            // Without handlebars' `Error rendering "t"`: that name is ours, not the user's.
            Inner::Handlebars(h) => h.render(HBS_NAME, &Json::Null).map_err(|e| match (e.line_no, e.column_no) {
                (Some(line), Some(col)) => format!("line {line}, col {col}: {}", e.reason()),
                _ => e.reason().to_string(),
            }),
        }
    }
}

/// Where `executeTemplate` finds the template it belongs to, once parsed.
type SelfSlot = Arc<std::sync::OnceLock<std::sync::Weak<gotmpl::Template>>>;

fn parse_error(name: &str, p: check::Problem) -> Error {
    Error::Parse { name: name.to_string(), line: p.line, col: p.col, message: p.message }
}

fn gotmpl_error(name: &str, e: gotmpl::TemplateError) -> Error {
    match e {
        gotmpl::TemplateError::Parse { line, col, message, .. }
        | gotmpl::TemplateError::Lex { line, col, message, .. } => {
            Error::Parse { name: name.to_string(), line, col, message }
        }
        other => Error::Syntax { name: name.to_string(), message: other.to_string() },
    }
}

/// Whether `name` is a function a Go template may call.
fn go_function(name: &str) -> bool {
    name == "executeTemplate" || funcs::NAMES.contains(&name) || check::GO_BUILTINS.contains(&name)
}

/// Parses and checks a Go template; also says whether it can recurse.
fn compile_go(
    name: &str,
    source: &str,
    opts: &Options,
    scope: &Arc<Mutex<Scope>>,
    slot: &SelfSlot,
    recursion: &Arc<Recursion>,
) -> Result<(gotmpl::Template, bool), Error> {
    let left = opts.left_delimiter.clone().filter(|d| !d.is_empty()).unwrap_or_else(|| "{{".into());
    let right = opts.right_delimiter.clone().filter(|d| !d.is_empty()).unwrap_or_else(|| "}}".into());
    // Unnamed, as consul-template's is: a template named after its file could call itself with
    // `{{ template "web.ctmpl" }}`; unnamed, only `{{define}}`s can recurse.
    let mut t = gotmpl::Template::new("").delims(&left, &right);
    if opts.error_on_missing_key {
        t = t.missing_key(gotmpl::MissingKey::Error);
    }
    for &fname in funcs::NAMES {
        let scope = scope.clone();
        if funcs::DIRECT.contains(&fname) {
            // Catalog data straight from the brain, converted once per update, not per call.
            t = t.func(fname, move |args: &[gotmpl::Value]| {
                let args: Vec<Json> = args.iter().map(to_json).collect();
                let exec = |e: funcs::Error| gotmpl::TemplateError::Exec(e.to_string());
                let (dep, empty) = funcs::direct(fname, &args).map_err(exec)?;
                let mut s = scope.lock().unwrap_or_else(|p| p.into_inner());
                s.check_allowed(fname).map_err(exec)?;
                let Some(dep) = dep else { return Ok(from_json(&empty)) };
                Ok(match s.recall_as(dep, from_json) {
                    Some(v) => (*v).clone(),
                    None => from_json(&empty),
                })
            });
            continue;
        }
        t = t.func(fname, move |args: &[gotmpl::Value]| {
            let args: Vec<Json> = args.iter().map(to_json).collect();
            funcs::call(fname, &args, &scope)
                .map(|v| from_json(&v))
                .map_err(|e| gotmpl::TemplateError::Exec(e.to_string()))
        });
    }
    // consul-template's executeTemplate: run a `{{define}}`d template and use its output.
    let me = slot.clone();
    let rec = recursion.clone();
    t = t.func("executeTemplate", move |args: &[gotmpl::Value]| {
        let Some(gotmpl::Value::String(tname)) = args.first() else {
            return Err(gotmpl::TemplateError::Exec("executeTemplate: expected a template name".into()));
        };
        let Some(tmpl) = me.get().and_then(std::sync::Weak::upgrade) else {
            return Err(gotmpl::TemplateError::Exec("executeTemplate: template not ready".into()));
        };
        // Each call is a fresh gotmpl execution with a fresh depth count: without this, a
        // define that executes itself recurses until the stack overflows and the process aborts.
        let Some(_level) = rec.enter() else { return Err(gotmpl::TemplateError::RecursionLimit) };
        let data = args.get(1).cloned().unwrap_or(gotmpl::Value::Nil);
        tmpl.execute_template_to_string(tname, &data).map(|s| gotmpl::Value::String(s.into()))
    });
    let source = rewrite_scratch(source, &left, &right);
    let parsed = t.parse(&source);
    // Go stops at the first problem in the source. gotmpl lexes the whole input before it
    // parses, so its error may come from further down than a structural one.
    let structure = check::go_structure(&source, &left, &right);
    let t = match parsed {
        Ok(t) => t,
        Err(e) => {
            let e = gotmpl_error(name, e);
            return Err(match (structure, &e) {
                (Some(p), Error::Parse { line, col, .. }) if (p.line, p.col) <= (*line, *col) => parse_error(name, p),
                (Some(p), Error::Syntax { .. }) => parse_error(name, p),
                _ => e,
            });
        }
    };
    // gotmpl keeps no public handle on the body it parsed: parse again for the trees to check.
    // With a structural problem the trees hold what comes before it, which is all that counts.
    let (root, defines) = gotmpl::parse::Parser::new(&source, &left, &right)
        .and_then(|p| p.parse())
        .map_err(|e| gotmpl_error(name, e))?;
    let first = std::iter::once(&root)
        .chain(defines.iter().map(|d| &d.body))
        .filter_map(|tree| check::go_tree(&source, tree, &go_function))
        .chain(structure)
        .min_by_key(|p| (p.line, p.col));
    if let Some(p) = first {
        return Err(parse_error(name, p));
    }
    Ok((t, !defines.is_empty()))
}

/// `{{ scratch.Set "k" 1 }}` is a method call on a Go value; gotmpl has no methods, so inside
/// actions `scratch.X` becomes the function `scratch_X`. Same length: error columns still match.
fn rewrite_scratch(source: &str, left: &str, right: &str) -> String {
    if !source.contains("scratch.") {
        return source.to_string();
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find(left) {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let end = after[left.len()..].find(right).map(|i| i + left.len() + right.len()).unwrap_or(after.len());
        out.push_str(&after[..end].replace("scratch.", "scratch_"));
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

struct Helper {
    name: &'static str,
    scope: Arc<Mutex<Scope>>,
}

/// A block around the body of every inline partial (see [`guard_partials`]): a partial that
/// includes itself stops at the same limit, with the same words, as gotmpl's `{{template}}`.
struct PartialGuard(Arc<Recursion>);

/// No template can call it: a name with a space in it is not an expression.
const PARTIAL_GUARD: &str = " partial";

impl handlebars::HelperDef for PartialGuard {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &handlebars::Helper<'rc>,
        r: &'reg handlebars::Handlebars<'reg>,
        ctx: &'rc handlebars::Context,
        rc: &mut handlebars::RenderContext<'reg, 'rc>,
        out: &mut dyn handlebars::Output,
    ) -> handlebars::HelperResult {
        use handlebars::Renderable as _;
        let Some(_level) = self.0.enter() else {
            return Err(handlebars::RenderErrorReason::Other("recursion limit exceeded".into()).into());
        };
        match h.template() {
            Some(t) => t.render(r, ctx, rc, out),
            None => Ok(()),
        }
    }
}

impl handlebars::HelperDef for Helper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &handlebars::Helper<'rc>,
        _: &'reg handlebars::Handlebars<'reg>,
        _: &'rc handlebars::Context,
        _: &mut handlebars::RenderContext<'reg, 'rc>,
    ) -> Result<handlebars::ScopedJson<'rc>, handlebars::RenderError> {
        let args: Vec<Json> = h.params().iter().map(|p| p.value().clone()).collect();
        funcs::call(self.name, &args, &self.scope)
            .map(handlebars::ScopedJson::Derived)
            .map_err(|e| handlebars::RenderErrorReason::Other(e.to_string()).into())
    }
}

/// Whether `name` is a helper a handlebars template may call.
fn hbs_helper(name: &str) -> bool {
    funcs::NAMES.contains(&name) || check::HBS_BUILTINS.contains(&name)
}

/// Parses and checks a handlebars template; also says whether it can recurse.
fn compile_hbs(
    name: &str,
    source: &str,
    opts: &Options,
    scope: &Arc<Mutex<Scope>>,
    recursion: &Arc<Recursion>,
) -> Result<(handlebars::Handlebars<'static>, bool), Error> {
    let mut h = handlebars::Handlebars::new();
    // Config files, not HTML: no escaping.
    h.register_escape_fn(handlebars::no_escape);
    h.set_strict_mode(opts.error_on_missing_key);
    for &fname in funcs::NAMES {
        h.register_helper(fname, Box::new(Helper { name: fname, scope: scope.clone() }));
    }
    let mut tpl = handlebars::Template::compile_with_name(source, HBS_NAME.to_string()).map_err(|e| {
        let mut message = e.reason().to_string();
        let eof = check::line_col(source, source.len());
        if let (Some(pos), Some((block, line))) = (e.pos(), check::hbs_unclosed(source)) {
            // At the end of the input handlebars lists every token it could have taken instead.
            if pos == eof {
                message = format!("unexpected EOF ({block} from line {line} is not closed)");
            }
        }
        match e.pos() {
            Some((line, col)) => Error::Parse { name: name.to_string(), line, col, message },
            None => Error::Syntax { name: name.to_string(), message },
        }
    })?;
    if let Some(p) = check::hbs_template(&tpl, &hbs_helper) {
        return Err(parse_error(name, p));
    }
    let can_recurse = guard_partials(&mut tpl);
    h.register_helper(PARTIAL_GUARD, Box::new(PartialGuard(recursion.clone())));
    h.register_template(HBS_NAME, tpl);
    Ok((h, can_recurse))
}

/// Wraps the body of every inline partial in a [`PartialGuard`] block, the one place a
/// handlebars render can recurse (no other partials are registered). Returns whether there was any.
fn guard_partials(t: &mut handlebars::Template) -> bool {
    use handlebars::template::{Parameter, TemplateElement as E};
    let mut any = false;
    for e in &mut t.elements {
        let inner: Vec<&mut handlebars::Template> = match e {
            E::DecoratorBlock(d) => {
                let inline = d.name.as_name() == Some("inline");
                if let (true, Some(body)) = (inline, d.template.as_mut()) {
                    any = true;
                    guard_partials(body);
                    // A block of the guard helper around the body, built from a parsed one
                    // because handlebars' element types cannot be constructed outside it.
                    if let Ok(mut g) = handlebars::Template::compile("{{#guard}}{{/guard}}") {
                        if let Some(E::HelperBlock(mut gb)) = g.elements.pop() {
                            gb.name = Parameter::Name(PARTIAL_GUARD.into());
                            let mapping = body.mapping.first().cloned().into_iter().collect();
                            let original = std::mem::replace(body, handlebars::Template::new());
                            gb.template = Some(original);
                            body.elements.push(E::HelperBlock(gb));
                            body.mapping = mapping;
                        }
                    }
                    continue;
                }
                d.template.as_mut().into_iter().collect()
            }
            E::HelperBlock(hb) => hb.template.as_mut().into_iter().chain(hb.inverse.as_mut()).collect(),
            E::PartialBlock(d) => d.template.as_mut().into_iter().collect(),
            _ => Vec::new(),
        };
        for t in inner {
            any |= guard_partials(t);
        }
    }
    any
}

pub fn to_json(v: &gotmpl::Value) -> Json {
    use gotmpl::Value as V;
    match v {
        V::Nil => Json::Null,
        V::Bool(b) => Json::Bool(*b),
        V::Int(i) => Json::from(*i),
        V::Uint(u) => Json::from(*u),
        V::Float(f) => serde_json::Number::from_f64(*f).map(Json::Number).unwrap_or(Json::Null),
        V::String(s) => Json::String(s.to_string()),
        V::List(l) => Json::Array(l.iter().map(to_json).collect()),
        V::Map(m) => Json::Object(m.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect()),
        V::Function(_) => Json::Null,
    }
}

pub fn from_json(v: &Json) -> gotmpl::Value {
    use gotmpl::Value as V;
    match v {
        Json::Null => V::Nil,
        Json::Bool(b) => V::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                V::Int(i)
            } else if let Some(u) = n.as_u64() {
                V::Uint(u)
            } else {
                V::Float(n.as_f64().unwrap_or(0.0))
            }
        }
        Json::String(s) => V::String(s.as_str().into()),
        Json::Array(a) => V::List(a.iter().map(from_json).collect::<Vec<_>>().into()),
        Json::Object(m) => V::Map(Arc::new(
            m.iter().map(|(k, v)| (Arc::<str>::from(k.as_str()), from_json(v))).collect::<BTreeMap<_, _>>(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn brain_with_test_service() -> Arc<Brain> {
        let mut b = Brain::default();
        b.remember(
            Dep::service("test", None).unwrap(),
            json!([
                {"Node": "n1", "Address": "10.0.0.1", "Port": 8080, "ID": "t1", "Name": "test", "Tags": ["a", "b"], "ServiceMeta": {"v": "1"}},
                {"Node": "n2", "Address": "10.0.0.2", "Port": 8081, "ID": "t2", "Name": "test", "Tags": [], "ServiceMeta": {}},
            ]),
        );
        b.remember(
            Dep::services("").unwrap(),
            json!([{"Name": "consul", "Tags": []}, {"Name": "test", "Tags": ["a"]}]),
        );
        b.remember(Dep::key("cfg/name").unwrap(), json!("demo"));
        b.remember(
            Dep::key_prefix("cfg").unwrap(),
            json!([{"Key": "name", "Value": "demo", "Path": "cfg/name"}, {"Key": "sub/x", "Value": "1", "Path": "cfg/sub/x"}]),
        );
        Arc::new(b)
    }

    fn go(src: &str) -> String {
        let t = Compiled::new("t.ctmpl", src, Language::Go, &Options::default()).unwrap();
        let r = t.render(brain_with_test_service()).unwrap();
        assert!(r.missing.is_empty(), "missing {:?}", r.missing);
        r.output
    }

    fn hbs(src: &str) -> String {
        let t = Compiled::new("t.hbs", src, Language::Handlebars, &Options::default()).unwrap();
        t.render(brain_with_test_service()).unwrap().output
    }

    #[test]
    fn seed_nginx_template_renders_as_consul_template_does() {
        let src = "upstream test-cluster { ip_hash;{{range service \"test\"}} server {{.Address}}:{{.Port}};{{end}} }";
        assert_eq!(go(src), "upstream test-cluster { ip_hash; server 10.0.0.1:8080; server 10.0.0.2:8081; }");
    }

    #[test]
    fn go_template_idioms() {
        let cases: &[(&str, &str)] = &[
            ("{{range services}}{{.Name}} {{end}}", "consul test "),
            ("{{range services}}{{$n := .Name}}{{range service $n}}{{$n}}={{.ID}};{{end}}{{end}}", "test=t1;test=t2;"),
            ("{{ with service \"test\" }}{{ (index . 0).Address }}{{ end }}", "10.0.0.1"),
            ("{{- range service \"test\" }}\n{{ .ID }}{{ end -}}\n", "\nt1\nt2"),
            ("{{range service \"test\"}}{{.Tags}}|{{end}}", "[a b]|[]|"),
            ("{{range service \"test\"}}{{if .Tags | contains \"a\"}}{{.ID}}{{end}}{{end}}", "t1"),
            ("{{range $tag, $svcs := service \"test\" | byTag}}{{$tag}}:{{len $svcs}} {{end}}", "a:1 b:1 "),
            ("{{key \"cfg/name\"}} {{keyOrDefault \"cfg/none\" \"dflt\"}}", "demo dflt"),
            ("{{range ls \"cfg\"}}{{.Key}}={{.Value}}{{end}}", "name=demo"),
            ("{{range tree \"cfg\"}}{{.Key}} {{end}}", "name sub/x "),
            ("{{range service \"test\"}}{{index .ServiceMeta \"v\"}}.{{end}}", "1.<no value>."),
            ("{{\"A,B\" | toLower | split \",\" | join \";\"}}", "a;b"),
            ("{{ scratch.Set \"x\" \"y\" }}{{ scratch.Get \"x\" }}", "y"),
            ("{{ printf \"%s-%d\" \"a\" 3 }}", "a-3"),
            ("{{define \"up\"}}[{{.}}]{{end}}{{ executeTemplate \"up\" \"x\" | toUpper }}", "[X]"),
            ("{{ range service \"missing-svc|any\" }}x{{ else }}none{{ end }}", "none"),
        ];
        for (src, want) in cases {
            // The `missing-svc` case has no data: render directly and ignore `missing`.
            let t = Compiled::new("t.ctmpl", src, Language::Go, &Options::default()).unwrap();
            let r = t.render(brain_with_test_service()).unwrap();
            assert_eq!(&r.output, want, "template {src}");
        }
    }

    #[test]
    fn missing_data_is_reported_not_rendered_as_error() {
        let t =
            Compiled::new("t", "{{ (index (service \"web\") 0).Address }}", Language::Go, &Options::default()).unwrap();
        let r = t.render(Arc::new(Brain::default())).unwrap();
        assert_eq!(r.missing.len(), 1);
        assert!(r.used.contains(&Dep::service("web", None).unwrap()));
    }

    #[test]
    fn parse_errors_carry_line_and_column() {
        let e = Compiled::new(
            "bad.ctmpl",
            "line one\n{{ range service \"x\" }}\n{{ end",
            Language::Go,
            &Options::default(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Parse { line: 3, .. }), "{e:?}");
        let e = Compiled::new("bad.hbs", "ok\n{{#each (service \"x\")}}\n", Language::Handlebars, &Options::default())
            .unwrap_err();
        assert!(matches!(e, Error::Parse { .. }), "{e:?}");
        // gotmpl finds unknown functions only when executing them; we find them when parsing.
        let e = Compiled::new("bad.ctmpl", "{{ nosuchfunc }}", Language::Go, &Options::default()).unwrap_err();
        assert_eq!(e.to_string(), "bad.ctmpl:1:4: function \"nosuchfunc\" not defined");
    }

    /// Each case as `template` reports it at start-up: Go's message, file, line and column.
    #[test]
    fn whole_template_is_checked_before_it_runs() {
        let cases: &[(&str, &str, &str)] = &[
            ("web.ctmpl", "a\nb\n{{ end }}", "web.ctmpl:3:4: unexpected {{end}}"),
            ("web.ctmpl", "{{ else }}", "web.ctmpl:1:4: unexpected {{else}}"),
            ("web.ctmpl", "{{ if true }}x", "web.ctmpl:1:15: unexpected EOF ({{if}} from line 1 has no {{end}})"),
            (
                "web.ctmpl",
                "{{ range service \"web\" }}\n{{ .Address }}\n",
                "web.ctmpl:3:1: unexpected EOF ({{range}} from line 1 has no {{end}})",
            ),
            ("web.ctmpl", "x\n{{ nosuch }}", "web.ctmpl:2:4: function \"nosuch\" not defined"),
            ("web.ctmpl", "{{ if false }}\n{{ nosuch }}{{ end }}", "web.ctmpl:2:4: function \"nosuch\" not defined"),
            ("web.ctmpl", "{{ key \"never\" }}\n{{ nosuch }}", "web.ctmpl:2:4: function \"nosuch\" not defined"),
            ("web.ctmpl", "{{ scratch.Nope \"x\" }}", "web.ctmpl:1:4: function \"scratch.Nope\" not defined"),
            ("web.ctmpl", "{{ if false }}{{ $nope }}{{ end }}", "web.ctmpl:1:18: undefined variable \"$nope\""),
            // The first problem in the source wins, whoever finds it.
            ("web.ctmpl", "{{ end }}\n{{ \"unterminated }}", "web.ctmpl:1:4: unexpected {{end}}"),
            ("web.ctmpl", "{{ nosuch }}{{ end }}", "web.ctmpl:1:4: function \"nosuch\" not defined"),
            ("web.ctmpl", "{{ if true }}{{ nosuch }}", "web.ctmpl:1:17: function \"nosuch\" not defined"),
            (
                "web.hbs",
                "ok\n{{#each (service \"x\")}}\n",
                "web.hbs:3:1: unexpected EOF ({{#each}} from line 2 is not closed)",
            ),
            ("web.hbs", "{{/if}}", "web.hbs:1:3: invalid handlebars syntax"),
            ("web.hbs", "a\n{{nosuch 1}}", "web.hbs:2:1: helper \"nosuch\" not defined"),
            (
                "web.hbs",
                "{{#if false}}\n{{#each (nosuch)}}{{/each}}{{/if}}",
                "web.hbs:2:1: helper \"nosuch\" not defined",
            ),
            ("web.hbs", "{{> nosuch}}", "web.hbs:1:1: partial \"nosuch\" not defined"),
        ];
        for (name, src, want) in cases {
            let e = Compiled::new(name, src, Language::of(Path::new(name)), &Options::default()).unwrap_err();
            assert!(e.to_string().starts_with(want), "{src:?}: {e}");
        }
        // Denied functions exist (calling them is the error), as in consul-template.
        let opts = Options { function_denylist: vec!["env".into()], ..Default::default() };
        assert!(Compiled::new("t", "{{ if false }}{{ env \"X\" }}{{ end }}", Language::Go, &opts).is_ok());
    }

    #[test]
    fn recursion_ends_with_the_template_limit_not_a_stack_overflow() {
        let cases: &[(&str, Language)] = &[
            ("{{ define \"a\" }}{{ executeTemplate \"a\" }}{{ end }}{{ executeTemplate \"a\" }}", Language::Go),
            ("{{ define \"a\" }}{{ template \"a\" }}{{ end }}{{ template \"a\" }}", Language::Go),
            ("{{ define \"a\" }}{{ template \"a\" . }}{{ end }}{{ executeTemplate \"a\" }}", Language::Go),
            ("{{ define \"a\" }}{{ (printf \"%s\" (executeTemplate \"a\")) }}{{ end }}{{ template \"a\" }}", Language::Go),
            ("{{#*inline \"a\"}}{{> a}}{{/inline}}{{> a}}", Language::Handlebars),
            ("{{#*inline \"a\"}}x{{> b}}{{/inline}}{{#*inline \"b\"}}{{#each (services)}}{{/each}}{{> a}}{{/inline}}{{> a}}", Language::Handlebars),
        ];
        for (src, lang) in cases {
            let t = Compiled::new("t", src, *lang, &Options::default()).unwrap();
            let e = t.render(brain_with_test_service()).unwrap_err().to_string();
            match lang {
                Language::Go => assert_eq!(e, "t: execute: recursion limit exceeded", "{src}"),
                // handlebars says where: the partial's first line.
                Language::Handlebars => assert_eq!(e, "t: execute: line 1, col 17: recursion limit exceeded", "{src}"),
            }
            // Rendering again starts from zero.
            assert!(t.render(brain_with_test_service()).is_err());
        }
        // Recursion that ends is fine, and a partial used many times is not recursion.
        let t = Compiled::new(
            "t",
            "{{ define \"n\" }}{{ if lt (len .) 150 }}{{ executeTemplate \"n\" (printf \"%sx\" .) }}{{ else }}{{ len . }}{{ end }}{{ end }}{{ executeTemplate \"n\" \"\" }}",
            Language::Go,
            &Options::default(),
        )
        .unwrap();
        assert_eq!(t.render(brain_with_test_service()).unwrap().output, "150");
        let t = Compiled::new(
            "t.hbs",
            "{{#*inline \"p\"}}[{{this}}]{{/inline}}{{#each (loop 300)}}{{> p}}{{/each}}",
            Language::Handlebars,
            &Options::default(),
        )
        .unwrap();
        assert!(t.render(brain_with_test_service()).unwrap().output.ends_with("[299]"));
    }

    /// Sizes [`STACK_RESERVE`]: the stack one gotmpl execution can take between two recursive
    /// entries, at gotmpl's own limits (200 nested levels, parenthesised pipelines in each).
    #[test]
    fn recursion_stops_before_the_stack_does() {
        // 99 levels of `{{template}}` inside `{{if}}` (two levels each), then a call nested in
        // parentheses: as deep as gotmpl goes before the next `executeTemplate` checks.
        let parens = 40;
        let call = format!("{}executeTemplate \"probe\"{}", "(".repeat(parens), ")".repeat(parens));
        let src = format!(
            "{{{{ define \"probe\" }}}}{{{{ end }}}}\
             {{{{ define \"deep\" }}}}{{{{ if lt (len .) 99 }}}}{{{{ template \"deep\" (printf \"%sx\" .) }}}}{{{{ else }}}}{{{{ {call} }}}}{{{{ end }}}}{{{{ end }}}}\
             {{{{ executeTemplate \"probe\" }}}}{{{{ template \"deep\" \"\" }}}}"
        );
        let t = Compiled::new("t", &src, Language::Go, &Options::default()).unwrap();
        t.render(brain_with_test_service()).unwrap();
        let one_execution = t.recursion.deepest.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("stack for one gotmpl execution at its limits: {} KiB", one_execution / 1024);
        assert!(one_execution > 0 && one_execution < STACK_RESERVE / 4, "{one_execution} bytes");

        // The worst case: each `executeTemplate` level nests that deep before the next one (one
        // level less: `top` is one more `{{template}}`).
        let src = format!(
            "{{{{ define \"top\" }}}}{{{{ template \"deep\" \"\" }}}}{{{{ end }}}}\
             {{{{ define \"deep\" }}}}{{{{ if lt (len .) 98 }}}}{{{{ template \"deep\" (printf \"%sx\" .) }}}}{{{{ else }}}}{{{{ {} }}}}{{{{ end }}}}{{{{ end }}}}\
             {{{{ template \"top\" }}}}",
            call.replace("probe", "top")
        );
        let t = Compiled::new("t", &src, Language::Go, &Options::default()).unwrap();
        let e = t.render(brain_with_test_service()).unwrap_err();
        assert!(e.to_string().ends_with("recursion limit exceeded"), "{e}");
        let deepest = t.recursion.deepest.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("deepest stack use when the limit hit: {} KiB of {} KiB", deepest / 1024, RENDER_STACK / 1024);
        assert!(deepest > one_execution && deepest + one_execution < RENDER_STACK, "{deepest} bytes");
    }

    #[test]
    fn custom_delimiters_and_missing_key_errors() {
        let opts =
            Options { left_delimiter: Some("[[".into()), right_delimiter: Some("]]".into()), ..Default::default() };
        let t = Compiled::new("t", "{{x}} [[ key \"cfg/name\" ]]", Language::Go, &opts).unwrap();
        assert_eq!(t.render(brain_with_test_service()).unwrap().output, "{{x}} demo");
        let opts = Options { error_on_missing_key: true, ..Default::default() };
        let t = Compiled::new("t", "{{range service \"test\"}}{{.Nope}}{{end}}", Language::Go, &opts).unwrap();
        assert!(t.render(brain_with_test_service()).is_err());
    }

    #[test]
    fn denylist_covers_catalog_functions_in_both_languages() {
        let opts = Options { function_denylist: vec!["serv*".into()], ..Default::default() };
        let t = Compiled::new("t", "{{range service \"test\"}}x{{end}}", Language::Go, &opts).unwrap();
        assert!(t.render(brain_with_test_service()).unwrap_err().to_string().contains("disabled"));
        let t = Compiled::new("t.hbs", "{{#each (services)}}x{{/each}}", Language::Handlebars, &opts).unwrap();
        assert!(t.render(brain_with_test_service()).unwrap_err().to_string().contains("disabled"));
    }

    #[test]
    fn handlebars_has_the_same_functions_and_no_escaping() {
        assert_eq!(
            hbs("upstream test-cluster { ip_hash;{{#each (service \"test\")}} server {{Address}}:{{Port}};{{/each}} }"),
            "upstream test-cluster { ip_hash; server 10.0.0.1:8080; server 10.0.0.2:8081; }"
        );
        assert_eq!(hbs("{{#each (services)}}{{#each (service Name) as |s|}}{{s.ID}}<{{/each}}{{/each}}"), "t1<t2<");
        assert_eq!(hbs("{{key \"cfg/name\"}} & {{toUpper (keyOrDefault \"nope\" \"x<y\")}}"), "demo & X<Y");
        assert_eq!(hbs("{{#each (service \"none\")}}x{{else}}empty{{/each}}"), "empty");
    }
}

#[cfg(test)]
mod example_tests {
    //! The files under `examples/` render as their READMEs say.
    use super::*;
    use serde_json::json;

    fn example(path: &str) -> (PathBuf, String) {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(path);
        let text = std::fs::read_to_string(&p).unwrap();
        (p, text)
    }

    fn brain() -> Arc<Brain> {
        let mut b = Brain::default();
        b.remember(Dep::services("").unwrap(), json!([{"Name": "api", "Tags": []}, {"Name": "web", "Tags": []}]));
        b.remember(Dep::service("api", None).unwrap(), json!([]));
        b.remember(
            Dep::service("web", None).unwrap(),
            json!([{"Address": "10.0.0.1", "Port": 80}, {"Address": "10.0.0.2", "Port": 81}]),
        );
        b.remember(
            Dep::service("test", None).unwrap(),
            json!([{"Address": "127.0.0.171", "Port": 8081}, {"Address": "127.0.0.172", "Port": 8082}]),
        );
        Arc::new(b)
    }

    #[test]
    fn nginx_example() {
        let (p, text) = example("template-nginx/test.ctmpl");
        let t = Compiled::new(&p.display().to_string(), &text, Language::of(&p), &Options::default()).unwrap();
        assert_eq!(
            t.render(brain()).unwrap().output,
            "upstream test-cluster { ip_hash; server 127.0.0.171:8081; server 127.0.0.172:8082; }\n"
        );
    }

    #[test]
    fn handlebars_example() {
        let (p, text) = example("template-hbs/upstreams.hbs");
        assert_eq!(Language::of(&p), Language::Handlebars);
        let t = Compiled::new(&p.display().to_string(), &text, Language::of(&p), &Options::default()).unwrap();
        let out = t.render(brain()).unwrap().output;
        assert_eq!(
            out,
            "upstream api {
  server 127.0.0.1:65535; # no healthy instance: force a 502
}
upstream web {
  server 10.0.0.1:80 max_fails=3 fail_timeout=60 weight=1;
  server 10.0.0.2:81 max_fails=3 fail_timeout=60 weight=1;
}
server {
  listen 80 default_server;
  location /api { proxy_pass http://api; }
  location /web { proxy_pass http://web; }
}
"
        );
        let (p, _) = example("template-hbs/config.hcl");
        let files = crate::config::read_config_path(&p).unwrap();
        let mut cfg = crate::config::Config::default();
        cfg.apply_file(&files[0].0, &files[0].1).unwrap();
        assert_eq!(cfg.templates[0].perms, Some(0o644));
        assert_eq!(cfg.templates[0].command.as_deref(), Some("nginx -s reload"));
    }
}
