//! The checks Go's `text/template` parser makes and our engines put off until execution, or
//! skip: a template is checked whole before it runs, so a typo inside `{{ if false }}`, or after
//! a `key` that has not arrived yet, stops `template` at start-up instead of sitting unnoticed.
//!
//! - Block structure of Go templates: gotmpl's parser stops quietly at a stray `{{end}}` or
//!   `{{else}}` and closes any block still open at the end of the input, so this is checked
//!   here on the source, with gotmpl's own rules for where an action starts and ends.
//! - Functions and variables of Go templates, on gotmpl's parse tree (sound once the
//!   structure is): an unknown function or an undefined `$variable` anywhere is an error.
//! - Helpers and partials of handlebars templates, on handlebars' parse tree, where handlebars
//!   itself would fail at render time.
//!
//! Messages are Go's (`unexpected {{end}}`, `function "x" not defined`...). Pure: source text
//! and parse trees in, the first problem in source order out. It knows no files, no data.

use gotmpl::parse::{Expr, ListNode, Node, PipeNode};

/// What is wrong, and where (1-based line and column, in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// The built-in functions gotmpl registers on every template (Go's own set).
pub const GO_BUILTINS: &[&str] = &[
    "and", "call", "eq", "ge", "gt", "html", "index", "js", "le", "len", "lt", "ne", "not", "or", "print", "printf",
    "println", "slice", "urlquery",
];

/// The helpers handlebars registers on every registry (without its optional features).
pub const HBS_BUILTINS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte", "and", "or", "not",
    "len",
];

/// Line and column of byte `offset` in `source`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(source.len());
    while !source.is_char_boundary(end) {
        end -= 1;
    }
    let before = &source[..end];
    let line = 1 + before.matches('\n').count();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn problem(source: &str, offset: usize, message: String) -> Problem {
    let (line, col) = line_col(source, offset);
    Problem { line, col, message }
}

// ---------------------------------------------------------------------------------------------
// Go templates: block structure

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    If,
    Range,
    With,
    Define,
    Block,
    Else,
    End,
    Break,
    Continue,
    /// Anything else: a function, a field, a literal...
    Other,
}

impl Word {
    fn of(ident: &str) -> Word {
        match ident {
            "if" => Word::If,
            "range" => Word::Range,
            "with" => Word::With,
            "define" => Word::Define,
            "block" => Word::Block,
            "else" => Word::Else,
            "end" => Word::End,
            "break" => Word::Break,
            "continue" => Word::Continue,
            _ => Word::Other,
        }
    }

    fn keyword(self) -> &'static str {
        match self {
            Word::If => "if",
            Word::Range => "range",
            Word::With => "with",
            Word::Define => "define",
            Word::Block => "block",
            Word::Else => "else",
            Word::End => "end",
            Word::Break => "break",
            Word::Continue => "continue",
            Word::Other => "",
        }
    }
}

/// One action's first two tokens, enough to see its place in the block structure.
#[derive(Debug)]
struct Action {
    first: (Word, usize),
    second: Option<(Word, usize)>,
}

/// ASCII whitespace, as gotmpl's lexer has it for trim markers.
fn is_go_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Skips whitespace from `at`; returns the new offset and whether anything was skipped.
fn skip_space(src: &str, at: usize) -> (usize, bool) {
    let rest = &src[at..];
    let trimmed = rest.trim_start();
    (at + rest.len() - trimmed.len(), trimmed.len() != rest.len())
}

/// Offset just past the character at `at` (which must be on a boundary).
fn next_char(src: &str, at: usize) -> usize {
    at + src[at..].chars().next().map_or(1, char::len_utf8)
}

/// The actions of `src`, split the way gotmpl's lexer splits them (comments, strings, raw
/// strings and character literals may hold a delimiter). Stops at an action that never closes:
/// gotmpl's lexer has reported that one already.
fn actions(src: &str, left: &str, right: &str) -> Vec<Action> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(found) = src[at..].find(left) {
        let mut p = at + found + left.len();
        // `{{- ` is a trim marker only with a space after the dash (`{{-3}}` is minus three).
        if bytes.get(p) == Some(&b'-') && bytes.get(p + 1).copied().is_some_and(is_go_space) {
            p += 1;
        }
        let (q, _) = skip_space(src, p);
        if src[q..].starts_with("/*") {
            let Some(close) = src[q + 2..].find("*/") else { return out };
            let (r, space) = skip_space(src, q + 2 + close + 2);
            at = if space && src[r..].starts_with('-') && src[r + 1..].starts_with(right) {
                r + 1 + right.len()
            } else if src[r..].starts_with(right) {
                r + right.len()
            } else {
                return out;
            };
            continue;
        }
        let mut words: Vec<(Word, usize)> = Vec::new();
        loop {
            let (q, space) = skip_space(src, p);
            if q >= src.len() {
                return out;
            }
            if space && src[q..].starts_with('-') && src[q + 1..].starts_with(right) {
                p = q + 1 + right.len();
                break;
            }
            if src[q..].starts_with(right) {
                p = q + right.len();
                break;
            }
            let Some(c) = src[q..].chars().next() else { return out };
            let (word, end) = match c {
                '"' | '\'' => {
                    // Up to the matching quote; a backslash escapes the next character.
                    let mut i = q + 1;
                    loop {
                        match src[i..].chars().next() {
                            None => return out,
                            Some('\\') => i = next_char(src, i + 1).min(src.len()),
                            Some(ch) if ch == c => break,
                            Some(ch) => i += ch.len_utf8(),
                        }
                        if i >= src.len() {
                            return out;
                        }
                    }
                    (Word::Other, i + 1)
                }
                '`' => match src[q + 1..].find('`') {
                    Some(i) => (Word::Other, q + 1 + i + 1),
                    None => return out,
                },
                c if c.is_alphabetic() || c == '_' => {
                    let len = src[q..].find(|ch: char| !(ch.is_alphanumeric() || ch == '_')).unwrap_or(src.len() - q);
                    (Word::of(&src[q..q + len]), q + len)
                }
                '.' | '$' => {
                    let body = &src[q + 1..];
                    let len = body.find(|ch: char| !(ch.is_alphanumeric() || ch == '_')).unwrap_or(body.len());
                    (Word::Other, q + 1 + len)
                }
                _ => (Word::Other, next_char(src, q)),
            };
            if words.len() < 2 {
                words.push((word, q));
            }
            p = end;
        }
        let mut words = words.into_iter();
        if let Some(first) = words.next() {
            out.push(Action { first, second: words.next() });
        }
        at = p;
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    If,
    Range,
    With,
    Define,
    Block,
}

struct Open {
    kind: Kind,
    at: usize,
    /// Past its plain `{{else}}`: only `{{end}}` may follow.
    in_else: bool,
}

/// The block structure of a Go template, as Go's parser checks it: every `{{if}}`, `{{range}}`,
/// `{{with}}`, `{{define}}` and `{{block}}` has its `{{end}}`, `{{else}}` appears only where
/// it may, `{{define}}` only at the top level, `{{break}}`/`{{continue}}` only inside a range.
pub fn go_structure(src: &str, left: &str, right: &str) -> Option<Problem> {
    let mut open: Vec<Open> = Vec::new();
    for a in actions(src, left, right) {
        let (word, at) = a.first;
        match word {
            Word::If | Word::Range | Word::With | Word::Block => {
                let kind = match word {
                    Word::If => Kind::If,
                    Word::Range => Kind::Range,
                    Word::With => Kind::With,
                    _ => Kind::Block,
                };
                open.push(Open { kind, at, in_else: false });
            }
            Word::Define => {
                if !open.is_empty() {
                    return Some(problem(src, at, "unexpected <define> in command".into()));
                }
                open.push(Open { kind: Kind::Define, at, in_else: false });
            }
            Word::End => {
                if open.pop().is_none() {
                    return Some(problem(src, at, "unexpected {{end}}".into()));
                }
            }
            Word::Else => {
                let Some(o) = open.last_mut() else {
                    return Some(problem(src, at, "unexpected {{else}}".into()));
                };
                match o.kind {
                    Kind::Define => return Some(problem(src, at, "unexpected {{else}} in define clause".into())),
                    Kind::Block => return Some(problem(src, at, "unexpected {{else}} in block clause".into())),
                    Kind::If | Kind::Range | Kind::With => {}
                }
                if o.in_else {
                    return Some(problem(src, at, "expected end; found {{else}}".into()));
                }
                match a.second {
                    // `{{else if}}` chains an `if`, `{{else with}}` a `with`; they share the `{{end}}`.
                    Some((Word::If, _)) if o.kind == Kind::If => {}
                    Some((Word::With, _)) if o.kind == Kind::With => {}
                    Some((w @ (Word::If | Word::With), at)) => {
                        return Some(problem(src, at, format!("unexpected <{}> in input", w.keyword())));
                    }
                    _ => o.in_else = true,
                }
            }
            Word::Break | Word::Continue => {
                // Each define or block body is a tree of its own: a range around it does not count.
                let in_range = open
                    .iter()
                    .rev()
                    .take_while(|o| !matches!(o.kind, Kind::Define | Kind::Block))
                    .any(|o| o.kind == Kind::Range && !o.in_else);
                if !in_range {
                    let k = word.keyword();
                    return Some(problem(src, at, format!("{{{{{k}}}}} outside {{{{range}}}}")));
                }
            }
            Word::Other => {}
        }
    }
    open.last().map(|o| {
        let (line, _) = line_col(src, o.at);
        let kind = match o.kind {
            Kind::If => "if",
            Kind::Range => "range",
            Kind::With => "with",
            Kind::Define => "define",
            Kind::Block => "block",
        };
        problem(src, src.len(), format!("unexpected EOF ({{{{{kind}}}}} from line {line} has no {{{{end}}}})"))
    })
}

// ---------------------------------------------------------------------------------------------
// Go templates: functions and variables

/// Checks one parse tree (the main body or one `{{define}}`/`{{block}}` body): every function
/// it names is `known`, every `$variable` it reads is declared where it is read. Go's scoping:
/// a variable lives until the `{{end}}` of the block it was declared in (its `{{else}}` too),
/// and each tree starts with only `$`.
pub fn go_tree(src: &str, tree: &ListNode, known: &dyn Fn(&str) -> bool) -> Option<Problem> {
    let mut c = TreeCheck { src, known, vars: vec!["$".into()], first: None };
    c.list(tree);
    c.first.map(|(_, p)| p)
}

struct TreeCheck<'a> {
    src: &'a str,
    known: &'a dyn Fn(&str) -> bool,
    vars: Vec<String>,
    first: Option<(usize, Problem)>,
}

impl TreeCheck<'_> {
    fn report(&mut self, offset: usize, message: String) {
        if self.first.as_ref().is_none_or(|(o, _)| offset < *o) {
            self.first = Some((offset, problem(self.src, offset, message)));
        }
    }

    fn list(&mut self, l: &ListNode) {
        for n in &l.nodes {
            self.node(n);
        }
    }

    fn node(&mut self, n: &Node) {
        match n {
            Node::List(l) => self.list(l),
            Node::Text(_) | Node::Break(_) | Node::Continue(_) => {}
            // Declarations in a plain action stay until the enclosing block ends.
            Node::Action(a) => self.pipe(&a.pipe),
            Node::If(b) | Node::Range(b) | Node::With(b) => {
                let mark = self.vars.len();
                self.pipe(&b.pipe);
                self.list(&b.body);
                if let Some(e) = &b.else_body {
                    self.list(e);
                }
                self.vars.truncate(mark);
            }
            Node::Template(t) => {
                if let Some(p) = &t.pipe {
                    self.pipe(p);
                }
            }
            Node::Define(d) => {
                let outer = std::mem::replace(&mut self.vars, vec!["$".into()]);
                self.list(&d.body);
                self.vars = outer;
            }
        }
    }

    fn pipe(&mut self, p: &PipeNode) {
        // Go declares before it parses the pipeline: `{{ $x := $x }}` passes its parser.
        self.vars.extend(p.decl.iter().map(ToString::to_string));
        for c in &p.commands {
            for e in &c.args {
                self.expr(e);
            }
        }
    }

    fn expr(&mut self, e: &Expr) {
        match e {
            Expr::Identifier(pos, name) => {
                if !(self.known)(name) {
                    // `scratch.Get` reached gotmpl as `scratch_Get` (see engine): say what was written.
                    let shown = match name.strip_prefix("scratch_") {
                        Some(method) => format!("scratch.{method}"),
                        None => name.to_string(),
                    };
                    self.report(pos.offset, format!("function {shown:?} not defined"));
                }
            }
            Expr::Variable(pos, name, _) => {
                if !self.vars.iter().any(|v| v == name.as_str()) {
                    self.report(pos.offset, format!("undefined variable {:?}", name.as_str()));
                }
            }
            Expr::Pipe(_, p) => self.pipe(p),
            Expr::Chain(_, inner, _) => self.expr(inner),
            Expr::Dot(_) | Expr::Field(..) | Expr::String(..) | Expr::Number(..) | Expr::Bool(..) | Expr::Nil(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handlebars

/// Helpers and partials a handlebars template uses but nobody registered: handlebars fails on
/// them only when the render reaches them. A name-only `{{x}}` is a value lookup, not a helper
/// call, as handlebars reads it; `{{x 1}}`, `{{#x}}` and `(x)` are helper calls. A partial
/// `{{> p}}` must be an inline partial of the template (`{{#*inline "p"}}`): no others are
/// registered. `{{#> p}}fallback{{/p}}` is fine without one.
pub fn hbs_template(t: &handlebars::template::Template, known: &dyn Fn(&str) -> bool) -> Option<Problem> {
    let mut inline = Vec::new();
    inline_partials(t, &mut inline);
    let mut first = None;
    hbs_walk(t, known, &inline, &mut first);
    first
}

fn inline_partials(t: &handlebars::template::Template, out: &mut Vec<String>) {
    use handlebars::template::{Parameter, TemplateElement as E};
    for e in &t.elements {
        match e {
            E::DecoratorBlock(d) => {
                if d.name.as_name() == Some("inline") {
                    if let Some(Parameter::Literal(serde_json::Value::String(n))) = d.params.first() {
                        out.push(n.clone());
                    }
                }
                if let Some(inner) = &d.template {
                    inline_partials(inner, out);
                }
            }
            E::HelperBlock(h) => {
                for inner in [&h.template, &h.inverse].into_iter().flatten() {
                    inline_partials(inner, out);
                }
            }
            E::PartialBlock(d) => {
                if let Some(inner) = &d.template {
                    inline_partials(inner, out);
                }
            }
            _ => {}
        }
    }
}

fn hbs_walk(
    t: &handlebars::template::Template,
    known: &dyn Fn(&str) -> bool,
    inline: &[String],
    first: &mut Option<Problem>,
) {
    use handlebars::template::TemplateElement as E;
    for (i, e) in t.elements.iter().enumerate() {
        if first.is_some() {
            return;
        }
        // handlebars keeps a (line, column) per element, 1-based.
        let (line, col) = t.mapping.get(i).map_or((0, 0), |m| (m.0, m.1));
        let mut report = |message: String| {
            if first.is_none() {
                *first = Some(Problem { line, col, message });
            }
        };
        match e {
            E::Expression(h) | E::HtmlExpression(h) => {
                let name_only = h.params.is_empty() && h.hash.is_empty();
                if let Some(m) = hbs_helper(h, !name_only, known) {
                    report(m);
                }
            }
            E::HelperBlock(h) => {
                if let Some(m) = hbs_helper(h, true, known) {
                    report(m);
                }
                for inner in [&h.template, &h.inverse].into_iter().flatten() {
                    hbs_walk(inner, known, inline, first);
                }
            }
            E::PartialExpression(d) => {
                if let Some(name) = d.name.as_name() {
                    if !name.starts_with('@') && !inline.iter().any(|n| n == name) {
                        report(format!("partial {name:?} not defined"));
                    }
                }
                if let Some(m) = hbs_params(d.params.iter().chain(d.hash.values()), known) {
                    report(m);
                }
            }
            E::PartialBlock(d) | E::DecoratorBlock(d) | E::DecoratorExpression(d) => {
                if let Some(m) = hbs_params(d.params.iter().chain(d.hash.values()), known) {
                    report(m);
                }
                if let Some(inner) = &d.template {
                    hbs_walk(inner, known, inline, first);
                }
            }
            // Text and comments call nothing.
            _ => {}
        }
    }
}

/// The first unknown helper `h` calls: itself when `call` (it is a helper call, not a value
/// lookup), then its arguments' subexpressions.
fn hbs_helper(h: &handlebars::template::HelperTemplate, call: bool, known: &dyn Fn(&str) -> bool) -> Option<String> {
    if call {
        // A path (`(x)` is parsed as one) names the helper by its text, as handlebars looks it up.
        if let Some(name) = h.name.as_name() {
            if !known(name) {
                return Some(format!("helper {name:?} not defined"));
            }
        }
    }
    hbs_params(h.params.iter().chain(h.hash.values()), known)
}

fn hbs_params<'a>(
    params: impl Iterator<Item = &'a handlebars::template::Parameter>,
    known: &dyn Fn(&str) -> bool,
) -> Option<String> {
    use handlebars::template::{Parameter, TemplateElement as E};
    for p in params {
        if let Parameter::Subexpression(s) = p {
            // A subexpression always calls a helper.
            if let E::Expression(h) | E::HtmlExpression(h) = s.as_element() {
                if let Some(m) = hbs_helper(h, true, known) {
                    return Some(m);
                }
            }
        }
    }
    None
}

/// The innermost block of a handlebars source left open at the end: `({{#each}}, line)`.
/// handlebars' parser only says what token it expected at the end of the input; this names the
/// block, as `unexpected EOF` does for Go templates. Best effort: `None` when unsure.
pub fn hbs_unclosed(src: &str) -> Option<(String, usize)> {
    let mut open: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while let Some(k) = src[i..].find("{{") {
        let at = i + k;
        if src[..at].ends_with('\\') {
            i = at + 2;
            continue;
        }
        if src[at..].starts_with("{{{{") {
            // A raw block: nothing inside it is a tag.
            let body = src[at..].find("}}}}").map(|e| at + e + 4)?;
            let close = src[body..].find("{{{{/").map(|e| body + e)?;
            i = src[close..].find("}}}}").map(|e| close + e + 4)?;
            continue;
        }
        let mut p = at + 2;
        for marker in ['{', '~'] {
            if src[p..].starts_with(marker) {
                p += 1;
            }
        }
        let rest = &src[p..];
        let end =
            if rest.starts_with("!--") { rest.find("--}}").map(|e| e + 4) } else { rest.find("}}").map(|e| e + 2) };
        let Some(end) = end else { break };
        let tag = rest[..end].trim_end_matches('}').trim_end_matches('~');
        if let Some(opened) = tag.strip_prefix('#').or_else(|| tag.strip_prefix('^')) {
            let kind = opened.chars().next().filter(|c| matches!(c, '>' | '*'));
            let name: String = opened[kind.map_or(0, char::len_utf8)..]
                .trim_start()
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '~')
                .collect();
            if !name.is_empty() {
                let lead = &tag[..1];
                let shown = match kind {
                    Some('>') => format!("{{{{{lead}> {name}}}}}"),
                    Some(k) => format!("{{{{{lead}{k}{name}}}}}"),
                    None => format!("{{{{{lead}{name}}}}}"),
                };
                open.push((shown, line_col(src, at).0));
            }
        } else if tag.starts_with('/') {
            open.pop();
        }
        i = p + end;
    }
    open.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn structure(src: &str) -> Option<(usize, usize, String)> {
        go_structure(src, "{{", "}}").map(|p| (p.line, p.col, p.message))
    }

    #[test]
    fn go_structure_as_go_parses_it() {
        let ok: &[&str] = &[
            "",
            "plain text",
            "{{ if .x }}a{{ else }}b{{ end }}",
            "{{ if .a }}a{{ else if .b }}b{{ else if .c }}c{{ else }}d{{ end }}",
            "{{ with .a }}a{{ else with .b }}b{{ else }}c{{ end }}",
            "{{ range .x }}{{ if . }}{{ break }}{{ end }}{{ continue }}{{ else }}none{{ end }}",
            "{{ define \"a\" }}{{ range . }}{{ break }}{{ end }}{{ end }}{{ template \"a\" . }}",
            "{{ block \"b\" . }}x{{ end }}",
            "{{- if .x -}} a {{- end -}}",
            "{{/* {{ end }} in a comment */}}{{- /* trimmed */ -}}",
            "{{ \"}} {{ end }}\" }}{{ `{{ end }}` }}{{ '}' }}{{ \"\\\"}}\" }}",
            "{{ printf \"%s\" \"else\" }}{{ .end }}{{ $end := 1 }}{{ endx }}",
            "{{ if and (eq .a 1) (ne .b 2) }}x{{ end }}",
        ];
        for src in ok {
            assert_eq!(structure(src), None, "{src}");
        }
        let bad: &[(&str, (usize, usize, &str))] = &[
            ("x\n\n{{ end }}", (3, 4, "unexpected {{end}}")),
            ("{{ else }}", (1, 4, "unexpected {{else}}")),
            ("{{- end -}}", (1, 5, "unexpected {{end}}")),
            ("{{ if true }}x", (1, 15, "unexpected EOF ({{if}} from line 1 has no {{end}})")),
            ("{{ range service \"x\" }}\n", (2, 1, "unexpected EOF ({{range}} from line 1 has no {{end}})")),
            ("{{ define \"a\" }}x", (1, 18, "unexpected EOF ({{define}} from line 1 has no {{end}})")),
            ("{{ if .a }}{{ range .b }}{{ end }}", (1, 35, "unexpected EOF ({{if}} from line 1 has no {{end}})")),
            ("{{ if .a }}{{ end }}{{ end }}", (1, 24, "unexpected {{end}}")),
            ("{{ if .a }}{{ else }}{{ else }}{{ end }}", (1, 25, "expected end; found {{else}}")),
            ("{{ if .a }}{{ else }}{{ else if .b }}{{ end }}", (1, 25, "expected end; found {{else}}")),
            ("{{ range .a }}{{ else if .b }}{{ end }}", (1, 23, "unexpected <if> in input")),
            ("{{ if .a }}{{ else with .b }}{{ end }}", (1, 20, "unexpected <with> in input")),
            ("{{ define \"a\" }}{{ else }}{{ end }}", (1, 20, "unexpected {{else}} in define clause")),
            ("{{ block \"a\" . }}{{ else }}{{ end }}", (1, 21, "unexpected {{else}} in block clause")),
            ("{{ if .a }}{{ define \"x\" }}{{ end }}{{ end }}", (1, 15, "unexpected <define> in command")),
            ("{{ break }}", (1, 4, "{{break}} outside {{range}}")),
            ("{{ range . }}{{ else }}{{ continue }}{{ end }}", (1, 27, "{{continue}} outside {{range}}")),
            ("{{ range . }}{{ define \"a\" }}{{ end }}{{ end }}", (1, 17, "unexpected <define> in command")),
            ("{{ range . }}{{ block \"a\" . }}{{ break }}{{ end }}{{ end }}", (1, 34, "{{break}} outside {{range}}")),
            ("ünï\n{{ \"x\" }} {{ end }}", (2, 14, "unexpected {{end}}")),
        ];
        for (src, (line, col, msg)) in bad {
            assert_eq!(structure(src), Some((*line, *col, msg.to_string())), "{src}");
        }
    }

    #[test]
    fn go_structure_with_other_delimiters() {
        assert_eq!(go_structure("{{ end }} [[ if .x ]]a[[ end ]]", "[[", "]]"), None);
        let p = go_structure("[[ if .x ]]a[[ end ]]\n[[ end ]]", "[[", "]]").unwrap();
        assert_eq!((p.line, p.col, p.message.as_str()), (2, 4, "unexpected {{end}}"));
    }

    #[test]
    fn go_structure_stops_quietly_where_the_lexer_fails() {
        // gotmpl's lexer reports these; the structure check must not panic or invent more.
        for src in ["{{ if", "{{ \"never closed", "{{ `raw", "{{/* open", "{{ 'x", "{{ if .x }}{{ \"\\", "{{ ü"] {
            let _ = structure(src);
        }
    }

    /// The scanners slice by byte offsets: no input may make them panic or loop.
    #[test]
    fn scanners_survive_any_input() {
        let pieces = [
            "{{", "}}", "{{-", "-}}", " ", "-", "\"", "'", "`", "\\", "/*", "*/", "end", "if", "else", "range",
            "define", "break", "ü", "\n", "[[", "]]", "{{{{", "}}}}", "#", "/", "^", "!--", "--}}", "~", "(", ".", "$",
            "x",
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            let mut src = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for i in 0..(seed % 12) {
                src.push_str(pieces[((seed >> (i * 5)) % pieces.len() as u64) as usize]);
            }
            let _ = go_structure(&src, "{{", "}}");
            let _ = go_structure(&src, "[[", "]]");
            let _ = hbs_unclosed(&src);
        }
    }

    fn tree(src: &str) -> Option<(usize, usize, String)> {
        let t = gotmpl::Template::new("t").parse(src).unwrap();
        let known = |n: &str| GO_BUILTINS.contains(&n) || n == "known";
        t.templates()
            .into_iter()
            .filter_map(|n| go_tree(src, t.lookup(n)?, &known))
            .map(|p| (p.line, p.col, p.message))
            .min()
    }

    #[test]
    fn go_functions_and_variables_anywhere() {
        let ok: &[&str] = &[
            "{{ known }}{{ printf \"%d\" (len .) }}",
            "{{ $x := 1 }}{{ $x }}{{ if $x }}{{ $x }}{{ end }}",
            "{{ if $y := 1 }}{{ $y }}{{ else }}{{ $y }}{{ end }}",
            "{{ range $i, $v := . }}{{ $i }}{{ $v }}{{ end }}",
            "{{ if true }}{{ $z := 1 }}{{ else }}{{ $z }}{{ end }}",
            "{{ $x := $x }}",
            "{{ define \"a\" }}{{ $ }}{{ $.x }}{{ end }}",
            "{{ with $w := . }}{{ else with $u := . }}{{ $w }}{{ $u }}{{ end }}",
        ];
        for src in ok {
            assert_eq!(tree(src), None, "{src}");
        }
        let bad: &[(&str, (usize, usize, &str))] = &[
            ("a\n{{ nosuch }}", (2, 4, "function \"nosuch\" not defined")),
            ("{{ if false }}{{ nosuch 1 }}{{ end }}", (1, 18, "function \"nosuch\" not defined")),
            ("{{ known | nosuch }}", (1, 12, "function \"nosuch\" not defined")),
            ("{{ printf \"%s\" (nosuch) }}", (1, 17, "function \"nosuch\" not defined")),
            ("{{ (nosuch).X }}", (1, 5, "function \"nosuch\" not defined")),
            ("{{ template \"a\" nosuch }}", (1, 17, "function \"nosuch\" not defined")),
            ("{{ define \"a\" }}\n\n{{ nosuch }}{{ end }}", (3, 4, "function \"nosuch\" not defined")),
            ("{{ scratch_Nope }}", (1, 4, "function \"scratch.Nope\" not defined")),
            ("{{ $nope }}", (1, 4, "undefined variable \"$nope\"")),
            ("{{ if true }}{{ $x := 1 }}{{ end }}{{ $x }}", (1, 39, "undefined variable \"$x\"")),
            ("{{ range $i := . }}{{ end }}{{ $i }}", (1, 32, "undefined variable \"$i\"")),
            ("{{ $x := 1 }}{{ define \"a\" }}{{ $x }}{{ end }}", (1, 33, "undefined variable \"$x\"")),
            ("{{ b }}\n{{ a }}", (1, 4, "function \"b\" not defined")),
        ];
        for (src, (line, col, msg)) in bad {
            assert_eq!(tree(src), Some((*line, *col, msg.to_string())), "{src}");
        }
    }

    fn hbs(src: &str) -> Option<(usize, usize, String)> {
        let t = handlebars::template::Template::compile(src).unwrap();
        let known = |n: &str| HBS_BUILTINS.contains(&n) || n == "known";
        hbs_template(&t, &known).map(|p| (p.line, p.col, p.message))
    }

    #[test]
    fn hbs_helpers_and_partials() {
        let ok: &[&str] = &[
            "{{value}}{{nested.value}}{{known 1}}{{#each (known)}}{{this}}{{/each}}",
            "{{#if x}}a{{else}}b{{/if}}{{#with x as |y|}}{{y}}{{/with}}",
            "{{#*inline \"p\"}}x{{/inline}}{{> p}}",
            "{{#> layout}}fallback{{/layout}}",
            "{{lookup this \"x\"}}{{len (known)}}",
        ];
        for src in ok {
            assert_eq!(hbs(src), None, "{src}");
        }
        let bad: &[(&str, (usize, usize, &str))] = &[
            ("a\n{{nosuch 1}}", (2, 1, "helper \"nosuch\" not defined")),
            ("{{#nosuch}}x{{/nosuch}}", (1, 1, "helper \"nosuch\" not defined")),
            ("{{#if x}}\n  {{#each (nosuch)}}{{/each}}{{/if}}", (2, 3, "helper \"nosuch\" not defined")),
            ("{{#if x}}{{else}}\n{{known (nosuch)}}{{/if}}", (2, 1, "helper \"nosuch\" not defined")),
            ("{{known x=(nosuch)}}", (1, 1, "helper \"nosuch\" not defined")),
            ("{{> nosuch}}", (1, 1, "partial \"nosuch\" not defined")),
        ];
        for (src, (line, col, msg)) in bad {
            assert_eq!(hbs(src), Some((*line, *col, msg.to_string())), "{src}");
        }
    }

    #[test]
    fn hbs_unclosed_blocks_are_named() {
        let cases: &[(&str, Option<(&str, usize)>)] = &[
            ("{{#each x}}", Some(("{{#each}}", 1))),
            ("a\n{{#if x}}{{#each y}}{{/each}}\n", Some(("{{#if}}", 2))),
            ("{{~#with x~}}", Some(("{{#with}}", 1))),
            ("{{#> layout}}", Some(("{{#> layout}}", 1))),
            ("{{#*inline \"p\"}}", Some(("{{#*inline}}", 1))),
            ("{{^if x}}", Some(("{{^if}}", 1))),
            ("{{#if x}}{{/if}}", None),
            ("{{!-- {{#if x}} --}}{{! {{#each}} }}\\{{#if}}", None),
            ("{{{{raw}}}}{{#if}}{{{{/raw}}}}", None),
            ("{{#if", None),
        ];
        for (src, want) in cases {
            assert_eq!(hbs_unclosed(src), want.map(|(n, l)| (n.to_string(), l)), "{src}");
        }
    }

    #[test]
    fn builtin_lists_match_the_engines() {
        for name in GO_BUILTINS {
            let r = gotmpl::Template::new("t")
                .parse(&format!("{{{{ {name} }}}}"))
                .unwrap()
                .execute_to_string(&gotmpl::Value::Nil);
            assert!(!matches!(r, Err(gotmpl::TemplateError::UndefinedFunction(_))), "{name}: {r:?}");
        }
        let h = handlebars::Handlebars::new();
        for name in HBS_BUILTINS {
            let r = h.render_template(&format!("{{{{#if ({name})}}}}{{{{/if}}}}"), &());
            let missing = r.as_ref().err().map(|e| e.to_string()).is_some_and(|e| e.contains("Helper not found"));
            assert!(!missing, "{name}: {r:?}");
        }
        let r = h.render_template("{{#if (nosuch)}}{{/if}}", &());
        assert!(r.unwrap_err().to_string().contains("Helper not found"), "the probe tells a missing helper");
    }
}
