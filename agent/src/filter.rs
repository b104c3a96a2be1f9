//! Consul's `?filter=` expression language (go-bexpr), evaluated over the JSON
//! elements of a list endpoint's answer.
//!
//! The HTTP layer parses the query parameter once with [`parse`] (a syntax error
//! becomes HTTP 400 with the returned text) and keeps only the elements for which
//! [`Filter::matches`] is true. Because we filter serialized JSON instead of Go
//! structs, there is no per-endpoint field schema: selectors are walked over the
//! JSON names (PascalCase, exactly as served) and the type of the value found at
//! the end of the selector decides how the literal is compared.
//!
//! Grammar (go-bexpr `grammar/grammar.peg`, keywords lowercase and case-sensitive):
//!
//! ```text
//! expr      := or
//! or        := and ("or" and)*
//! and       := not ("and" not)*
//! not       := "not" not | "(" or ")" | match
//! match     := Selector ("==" | "!=" | "contains" | "not contains"
//!                        | "matches" | "not matches") Value
//!            | Selector ("is empty" | "is not empty")
//!            | Value ("in" | "not in") Selector
//! Selector  := Ident ( "." Ident | "." Digits | "[" String "]" )*
//! Ident     := [a-zA-Z][a-zA-Z0-9_/]*
//! Value     := Selector (its dotted text, so `ServiceName == web` works)
//!            | Number | "double-quoted" | `raw`
//! ```
//!
//! Evaluation rules, following go-bexpr as vendored by Consul (v0.1.x):
//! * A selector that walks *through* an array (e.g. `Checks.Status` over
//!   `"Checks":[{..},{..}]`) is an implicit ANY: the whole match expression is
//!   evaluated against each element and is true if any element satisfies it. The
//!   operator is applied per element, so `Checks.Status != passing` means "some
//!   check is not passing", and an empty array never matches (not even `!=`).
//! * A missing key (or JSON null) cannot be equal, non-empty, contain anything or
//!   match a regex, so `==`, `is not empty`, `in`/`contains` and `matches` are
//!   false while `!=`, `is empty`, `not in`/`not contains` and `not matches` are true.
//! * Literals are raw text coerced to the type found: strings compare exactly,
//!   numbers numerically, booleans with Go's `strconv.ParseBool` spellings.
//! * `in`/`contains` on a string is a substring test, on an array element
//!   equality, on an object key presence.
//! * Type mismatches that go-bexpr reports as errors (Consul rejects them up front
//!   from the struct schema, e.g. `ServiceTags == x`, or `ServicePort matches x`)
//!   make that match expression false, whatever the operator's polarity: we have no
//!   schema to reject them with, and dropping the element is the conservative answer.

use regex::Regex;
use serde_json::Value;

/// Prefix Consul puts before every filter creation error (agent/http.go).
const ERR_PREFIX: &str = "Failed to create boolean expression evaluator: ";

/// Nesting limit for parentheses and `not` chains; it keeps a hostile query from
/// overflowing the stack of the recursive-descent parser and evaluator.
const MAX_DEPTH: usize = 128;

/// A compiled filter expression.
#[derive(Debug, Clone)]
pub struct Filter {
    root: Expr,
}

#[derive(Debug, Clone)]
enum Expr {
    // `and`/`or` chains are flattened into vectors so that a long chain of terms
    // does not turn into deep recursion at evaluation time.
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Match(MatchExpr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equal,
    NotEqual,
    IsEmpty,
    IsNotEmpty,
    // go-bexpr maps `contains` to the same operator as `in` (and `not contains`
    // to `not in`); only the operand order differs in the syntax.
    In,
    NotIn,
    Matches,
    NotMatches,
}

impl Op {
    /// The operators whose result is the negation of a positive test.
    fn negated(self) -> bool {
        matches!(self, Op::NotEqual | Op::IsNotEmpty | Op::NotIn | Op::NotMatches)
    }
}

#[derive(Debug, Clone)]
struct MatchExpr {
    selector: Vec<String>,
    op: Op,
    /// Raw literal text; `None` only for the emptiness operators.
    value: Option<String>,
    /// Compiled once at parse time so that a bad pattern is a 400, not a
    /// silently empty answer.
    regex: Option<Regex>,
}

/// Parses a filter expression; the error text is what the client sees with HTTP 400.
pub fn parse(expr: &str) -> Result<Filter, String> {
    parse_inner(expr).map_err(|e| format!("{ERR_PREFIX}{e}"))
}

fn parse_inner(expr: &str) -> Result<Filter, String> {
    let toks = lex(expr)?;
    if toks.is_empty() {
        return Err("empty filter expression".to_string());
    }
    let mut p = Parser { toks, pos: 0, depth: 0, len: expr.len() };
    let root = p.parse_or()?;
    if let Some(t) = p.peek() {
        return Err(format!("unexpected {} at position {}", t.tok.describe(), t.at));
    }
    Ok(Filter { root })
}

impl Filter {
    /// True when the element satisfies the expression.
    pub fn matches(&self, v: &Value) -> bool {
        eval(&self.root, v)
    }

    /// Refuses selectors that name no field of the answer's elements, as Consul refuses them
    /// when it builds the evaluator from the element's Go type. `sample` is one element with
    /// every field present: an object with keys is a struct (its keys are the only names), an
    /// empty object a map (any key), an array's first element stands for all of them.
    pub fn check_selectors(&self, sample: &Value) -> Result<(), String> {
        fn known(path: &[String], cur: &Value) -> bool {
            let Some((head, rest)) = path.split_first() else { return true };
            match cur {
                Value::Object(m) if m.is_empty() => true,
                Value::Object(m) => m.get(head).is_some_and(|next| known(rest, next)),
                Value::Array(items) => match items.first() {
                    None => true,
                    Some(_) if head.parse::<usize>().is_ok() => known(rest, &items[0]),
                    Some(first) => known(path, first),
                },
                _ => false,
            }
        }
        fn walk(e: &Expr, sample: &Value) -> Result<(), String> {
            match e {
                Expr::Or(terms) | Expr::And(terms) => terms.iter().try_for_each(|t| walk(t, sample)),
                Expr::Not(inner) => walk(inner, sample),
                Expr::Match(m) if known(&m.selector, sample) => Ok(()),
                Expr::Match(m) => Err(format!("{ERR_PREFIX}Selector {:?} is not valid", m.selector.join("."))),
            }
        }
        walk(&self.root, sample)
    }
}

// ---------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Eq,
    Ne,
    Str(String),
    Num(String),
    /// A selector; `plain` is true for a single identifier without dots or
    /// brackets, the only shape that can also be a keyword.
    Sel {
        path: Vec<String>,
        plain: bool,
    },
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::LParen => "\"(\"".to_string(),
            Tok::RParen => "\")\"".to_string(),
            Tok::Eq => "\"==\"".to_string(),
            Tok::Ne => "\"!=\"".to_string(),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Num(n) => format!("number {n}"),
            Tok::Sel { path, .. } => format!("{:?}", path.join(".")),
        }
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Tok::Sel { path, plain: true } if path.len() == 1 && path[0] == kw)
    }
}

#[derive(Debug, Clone)]
struct Spanned {
    tok: Tok,
    /// Byte offset in the expression, for error messages.
    at: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    // go-bexpr allows '/' inside identifiers (Kubernetes-style meta keys).
    c.is_ascii_alphanumeric() || c == '_' || c == '/'
}

fn lex(src: &str) -> Result<Vec<Spanned>, String> {
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let offset = |i: usize| chars.get(i).map(|(o, _)| *o).unwrap_or(src.len());
    while i < chars.len() {
        let (at, c) = chars[i];
        match c {
            ' ' | '\t' | '\r' | '\n' => i += 1,
            '(' => {
                out.push(Spanned { tok: Tok::LParen, at });
                i += 1;
            }
            ')' => {
                out.push(Spanned { tok: Tok::RParen, at });
                i += 1;
            }
            '=' | '!' => {
                if chars.get(i + 1).map(|p| p.1) != Some('=') {
                    return Err(format!("unknown operator {c:?} at position {at}"));
                }
                out.push(Spanned { tok: if c == '=' { Tok::Eq } else { Tok::Ne }, at });
                i += 2;
            }
            '"' | '`' => {
                let (s, next) = lex_string(&chars, i)?;
                out.push(Spanned { tok: Tok::Str(s), at });
                i = next;
            }
            '-' | '0'..='9' => {
                let start = i;
                if c == '-' {
                    i += 1;
                }
                let digits_start = i;
                while i < chars.len() && chars[i].1.is_ascii_digit() {
                    i += 1;
                }
                let int_len = i - digits_start;
                // go-bexpr's IntegerOrFloat: "0" or [1-9][0-9]*, optional ".digits".
                let leading_zero = int_len > 1 && chars[digits_start].1 == '0';
                if int_len == 0 || leading_zero {
                    return Err(format!("invalid number literal at position {at}"));
                }
                if i < chars.len() && chars[i].1 == '.' {
                    i += 1;
                    let frac_start = i;
                    while i < chars.len() && chars[i].1.is_ascii_digit() {
                        i += 1;
                    }
                    if i == frac_start {
                        return Err(format!("invalid number literal at position {at}"));
                    }
                }
                // A number must be followed by whitespace, ')' or the end, so
                // `80abc` is an error rather than the number 80 and a selector.
                if let Some(&(_, n)) = chars.get(i) {
                    if !matches!(n, ' ' | '\t' | '\r' | '\n' | ')') {
                        return Err(format!("invalid number literal at position {at}"));
                    }
                }
                let text = src[offset(start)..offset(i)].to_string();
                out.push(Spanned { tok: Tok::Num(text), at });
            }
            c if is_ident_start(c) => {
                let (tok, next) = lex_selector(&chars, i, src.len())?;
                out.push(Spanned { tok, at });
                i = next;
            }
            _ => return Err(format!("unexpected character {c:?} at position {at}")),
        }
    }
    Ok(out)
}

/// Lexes a selector starting at an identifier character; returns the token and
/// the index of the first character after it.
fn lex_selector(chars: &[(usize, char)], mut i: usize, len: usize) -> Result<(Tok, usize), String> {
    let ident = |i: &mut usize| {
        let mut s = String::new();
        while *i < chars.len() && is_ident_char(chars[*i].1) {
            s.push(chars[*i].1);
            *i += 1;
        }
        s
    };
    let mut path = vec![ident(&mut i)];
    let mut plain = true;
    loop {
        match chars.get(i).map(|p| p.1) {
            Some('.') => {
                match chars.get(i + 1).map(|p| p.1) {
                    Some(c) if is_ident_start(c) => {
                        i += 1;
                        path.push(ident(&mut i));
                    }
                    // `.0`: numeric segment, used to index into arrays.
                    Some(c) if c.is_ascii_digit() => {
                        i += 1;
                        let mut s = String::new();
                        while i < chars.len() && chars[i].1.is_ascii_digit() {
                            s.push(chars[i].1);
                            i += 1;
                        }
                        path.push(s);
                    }
                    _ => {
                        let at = chars.get(i).map(|p| p.0).unwrap_or(len);
                        return Err(format!("invalid selector: dangling '.' at position {at}"));
                    }
                }
                plain = false;
            }
            Some('[') => {
                let at = chars[i].0;
                i += 1;
                while i < chars.len() && chars[i].1.is_whitespace() {
                    i += 1;
                }
                if !matches!(chars.get(i).map(|p| p.1), Some('"' | '`')) {
                    return Err(format!("invalid index at position {at}: expected a quoted key"));
                }
                let (key, next) = lex_string(chars, i)?;
                i = next;
                while i < chars.len() && chars[i].1.is_whitespace() {
                    i += 1;
                }
                if chars.get(i).map(|p| p.1) != Some(']') {
                    return Err(format!("unclosed index expression at position {at}"));
                }
                i += 1;
                path.push(key);
                plain = false;
            }
            _ => break,
        }
    }
    Ok((Tok::Sel { path, plain }, i))
}

/// Lexes a double-quoted (Go escapes) or backtick (raw) string starting at
/// `chars[i]`; returns the decoded text and the index after the closing quote.
fn lex_string(chars: &[(usize, char)], i: usize) -> Result<(String, usize), String> {
    let (at, quote) = chars[i];
    let unterminated = || format!("unterminated string literal at position {at}");
    let mut s = String::new();
    let mut j = i + 1;
    if quote == '`' {
        loop {
            match chars.get(j).map(|p| p.1) {
                None => return Err(unterminated()),
                Some('`') => return Ok((s, j + 1)),
                // Go's strconv.Unquote drops carriage returns from raw strings.
                Some('\r') => j += 1,
                Some(c) => {
                    s.push(c);
                    j += 1;
                }
            }
        }
    }
    loop {
        let Some(&(esc_at, c)) = chars.get(j) else { return Err(unterminated()) };
        j += 1;
        match c {
            '"' => return Ok((s, j)),
            '\n' => return Err(format!("newline in string literal at position {esc_at}")),
            '\\' => {
                let Some(&(_, e)) = chars.get(j) else { return Err(unterminated()) };
                j += 1;
                let bad = || format!("invalid escape sequence in string literal at position {esc_at}");
                match e {
                    'a' => s.push('\u{07}'),
                    'b' => s.push('\u{08}'),
                    'f' => s.push('\u{0C}'),
                    'n' => s.push('\n'),
                    'r' => s.push('\r'),
                    't' => s.push('\t'),
                    'v' => s.push('\u{0B}'),
                    '\\' => s.push('\\'),
                    '"' => s.push('"'),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String = chars.iter().skip(j).take(n).map(|p| p.1).collect();
                        if hex.chars().count() != n || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                            return Err(bad());
                        }
                        let code = u32::from_str_radix(&hex, 16).map_err(|_| bad())?;
                        j += n;
                        // \x is a byte in Go; we only accept it for ASCII since the
                        // result must stay valid UTF-8.
                        if e == 'x' && code > 0x7f {
                            return Err(bad());
                        }
                        s.push(char::from_u32(code).ok_or_else(bad)?);
                    }
                    '0'..='7' => {
                        let oct: String = chars.iter().skip(j - 1).take(3).map(|p| p.1).collect();
                        if oct.len() != 3 || !oct.chars().all(|c| ('0'..='7').contains(&c)) {
                            return Err(bad());
                        }
                        let code = u32::from_str_radix(&oct, 8).map_err(|_| bad())?;
                        if code > 0x7f {
                            return Err(bad());
                        }
                        j += 2;
                        s.push(char::from_u32(code).ok_or_else(bad)?);
                    }
                    _ => return Err(bad()),
                }
            }
            c => s.push(c),
        }
    }
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

struct Parser {
    toks: Vec<Spanned>,
    pos: usize,
    depth: usize,
    len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Spanned> {
        self.toks.get(self.pos)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.pos + k).map(|t| &t.tok)
    }

    fn peek_kw(&self, k: usize, kw: &str) -> bool {
        self.peek_at(k).is_some_and(|t| t.is_kw(kw))
    }

    fn next(&mut self) -> Option<Spanned> {
        let t = self.toks.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn here(&self) -> usize {
        self.peek().map(|t| t.at).unwrap_or(self.len)
    }

    fn unexpected(&self, wanted: &str) -> String {
        match self.peek() {
            Some(t) => format!("expected {wanted} at position {}, found {}", t.at, t.tok.describe()),
            None => format!("expected {wanted} at end of expression"),
        }
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("expression nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Expr, String> {
        let mut terms = vec![self.parse_and()?];
        while self.peek_kw(0, "or") {
            self.pos += 1;
            terms.push(self.parse_and()?);
        }
        Ok(if terms.len() == 1 { terms.remove(0) } else { Expr::Or(terms) })
    }

    fn parse_and(&mut self) -> Result<Expr, String> {
        let mut terms = vec![self.parse_not()?];
        while self.peek_kw(0, "and") {
            self.pos += 1;
            terms.push(self.parse_not()?);
        }
        Ok(if terms.len() == 1 { terms.remove(0) } else { Expr::And(terms) })
    }

    fn parse_not(&mut self) -> Result<Expr, String> {
        self.enter()?;
        let r = if self.peek_kw(0, "not") {
            self.pos += 1;
            self.parse_not().map(|e| match e {
                // `not not X` is X, as go-bexpr simplifies it.
                Expr::Not(inner) => *inner,
                e => Expr::Not(Box::new(e)),
            })
        } else if matches!(self.peek_at(0), Some(Tok::LParen)) {
            let open = self.here();
            self.pos += 1;
            let e = self.parse_or()?;
            if !matches!(self.peek_at(0), Some(Tok::RParen)) {
                return Err(match self.peek() {
                    None => format!("unmatched parentheses: \"(\" at position {open} is never closed"),
                    Some(_) => self.unexpected("\")\" or a boolean operator"),
                });
            }
            self.pos += 1;
            Ok(e)
        } else {
            self.parse_match()
        };
        self.depth -= 1;
        r
    }

    fn parse_match(&mut self) -> Result<Expr, String> {
        let Some(first) = self.next() else {
            return Err("expected a match expression at end of expression".to_string());
        };
        match &first.tok {
            Tok::RParen => return Err(format!("unmatched parentheses: unexpected \")\" at position {}", first.at)),
            Tok::Eq | Tok::Ne | Tok::LParen => {
                return Err(format!(
                    "expected a selector or value at position {}, found {}",
                    first.at,
                    first.tok.describe()
                ))
            }
            _ => {}
        }
        // `<Value> in <Selector>` / `<Value> not in <Selector>`.
        let value_op = if self.peek_kw(0, "in") {
            Some((Op::In, 1))
        } else if self.peek_kw(0, "not") && self.peek_kw(1, "in") {
            Some((Op::NotIn, 2))
        } else {
            None
        };
        if let Some((op, n)) = value_op {
            self.pos += n;
            let value = literal_text(&first.tok);
            let selector = match self.next() {
                Some(Spanned { tok: Tok::Sel { path, .. }, .. }) => path,
                Some(t) => return Err(format!("invalid selector at position {}: found {}", t.at, t.tok.describe())),
                None => return Err("invalid selector: expected a selector at end of expression".to_string()),
            };
            return Ok(Expr::Match(MatchExpr { selector, op, value, regex: None }));
        }

        let Tok::Sel { path: selector, .. } = first.tok else {
            return Err(format!(
                "expected \"in\" or \"not in\" after {} at position {}",
                first.tok.describe(),
                first.at
            ));
        };
        let op = match self.peek_at(0) {
            Some(Tok::Eq) => Some((Op::Equal, 1)),
            Some(Tok::Ne) => Some((Op::NotEqual, 1)),
            Some(t) if t.is_kw("contains") => Some((Op::In, 1)),
            Some(t) if t.is_kw("matches") => Some((Op::Matches, 1)),
            Some(t) if t.is_kw("not") => {
                if self.peek_kw(1, "contains") {
                    Some((Op::NotIn, 2))
                } else if self.peek_kw(1, "matches") {
                    Some((Op::NotMatches, 2))
                } else {
                    None
                }
            }
            Some(t) if t.is_kw("is") => {
                if self.peek_kw(1, "empty") {
                    self.pos += 2;
                    return Ok(Expr::Match(MatchExpr { selector, op: Op::IsEmpty, value: None, regex: None }));
                }
                if self.peek_kw(1, "not") && self.peek_kw(2, "empty") {
                    self.pos += 3;
                    return Ok(Expr::Match(MatchExpr { selector, op: Op::IsNotEmpty, value: None, regex: None }));
                }
                self.pos += 1;
                return Err(self.unexpected("\"empty\" or \"not empty\" after \"is\""));
            }
            _ => None,
        };
        let Some((op, n)) = op else {
            return Err(self.unexpected(
                "a match operator (==, !=, is empty, is not empty, in, not in, contains, not contains, matches, not matches)",
            ));
        };
        self.pos += n;
        let value = match self.next() {
            Some(Spanned { tok: t @ (Tok::Str(_) | Tok::Num(_) | Tok::Sel { .. }), .. }) => literal_text(&t),
            Some(t) => return Err(format!("expected a value at position {}, found {}", t.at, t.tok.describe())),
            None => return Err("expected a value at end of expression".to_string()),
        };
        let regex = if matches!(op, Op::Matches | Op::NotMatches) {
            let pat = value.as_deref().unwrap_or_default();
            Some(Regex::new(pat).map_err(|e| format!("Failed to compile regular expression {pat:?}: {e}"))?)
        } else {
            None
        };
        Ok(Expr::Match(MatchExpr { selector, op, value, regex }))
    }
}

/// The raw text of a value token; go-bexpr keeps every literal as text and
/// coerces it only when it sees the type of the selected field. A bare selector
/// used as a value stands for its dotted spelling.
fn literal_text(t: &Tok) -> Option<String> {
    match t {
        Tok::Str(s) | Tok::Num(s) => Some(s.clone()),
        Tok::Sel { path, .. } => Some(path.join(".")),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------

fn eval(e: &Expr, v: &Value) -> bool {
    match e {
        Expr::Or(terms) => terms.iter().any(|t| eval(t, v)),
        Expr::And(terms) => terms.iter().all(|t| eval(t, v)),
        Expr::Not(inner) => !eval(inner, v),
        Expr::Match(m) => eval_path(m, &m.selector, v),
    }
}

/// Walks the remaining selector `path` from `cur`.
fn eval_path(m: &MatchExpr, path: &[String], cur: &Value) -> bool {
    let Some((head, rest)) = path.split_first() else {
        return eval_leaf(m, Some(cur));
    };
    match cur {
        Value::Object(map) => match map.get(head) {
            Some(next) => eval_path(m, rest, next),
            None => eval_leaf(m, None),
        },
        Value::Array(items) => {
            // A numeric segment indexes the array (newer go-bexpr, via JSON
            // pointer); anything else fans out with ANY semantics (go-bexpr
            // v0.1.x, which Consul's filters were designed against).
            if let Ok(idx) = head.parse::<usize>() {
                return match items.get(idx) {
                    Some(next) => eval_path(m, rest, next),
                    None => eval_leaf(m, None),
                };
            }
            items.iter().any(|item| eval_path(m, path, item))
        }
        // A null object (e.g. `"ServiceMeta": null`) has no keys.
        Value::Null => eval_leaf(m, None),
        // Selecting a field of a scalar is an invalid selector in go-bexpr.
        _ => false,
    }
}

/// Applies the operator to the selected value (`None` = missing).
fn eval_leaf(m: &MatchExpr, v: Option<&Value>) -> bool {
    let v = match v {
        // A missing value is empty and cannot equal, contain or match anything.
        None | Some(Value::Null) => {
            return matches!(m.op, Op::NotEqual | Op::IsEmpty | Op::NotIn | Op::NotMatches);
        }
        Some(v) => v,
    };
    let raw = m.value.as_deref().unwrap_or_default();
    let positive = match m.op {
        Op::Equal | Op::NotEqual => equal(v, raw),
        Op::In | Op::NotIn => contains(v, raw),
        Op::IsEmpty | Op::IsNotEmpty => is_empty(v),
        Op::Matches | Op::NotMatches => match (v, &m.regex) {
            (Value::String(s), Some(re)) => Some(re.is_match(s)),
            _ => None,
        },
    };
    match positive {
        // Type mismatch: see the module doc; never a match.
        None => false,
        Some(b) => b != m.op.negated(),
    }
}

/// Equality of a scalar with the raw literal, coerced to the scalar's type;
/// `None` when the literal cannot be coerced or the value is not a scalar.
fn equal(v: &Value, raw: &str) -> Option<bool> {
    match v {
        Value::String(s) => Some(s == raw),
        Value::Bool(b) => parse_bool(raw).map(|r| r == *b),
        Value::Number(n) => {
            if n.is_f64() {
                let f = n.as_f64()?;
                return raw.trim().parse::<f64>().ok().map(|r| r == f);
            }
            let int = n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from))?;
            if let Ok(r) = raw.parse::<i128>() {
                return Some(r == int);
            }
            // Lenient: "80.0" equals 80 (go-bexpr would reject it for int fields).
            let f = n.as_f64()?;
            raw.parse::<f64>().ok().filter(|r| r.is_finite()).map(|r| r == f)
        }
        _ => None,
    }
}

/// go-bexpr's `in`/`contains` test, before negation.
fn contains(v: &Value, raw: &str) -> Option<bool> {
    match v {
        Value::String(s) => Some(s.contains(raw)),
        // Elements the literal cannot be coerced to are skipped rather than
        // failing the whole test, as go-bexpr does for mixed-type slices.
        Value::Array(items) => Some(items.iter().any(|item| equal(item, raw) == Some(true))),
        Value::Object(map) => Some(map.contains_key(raw)),
        _ => None,
    }
}

fn is_empty(v: &Value) -> Option<bool> {
    match v {
        Value::String(s) => Some(s.is_empty()),
        Value::Array(a) => Some(a.is_empty()),
        Value::Object(o) => Some(o.is_empty()),
        Value::Null => Some(true),
        _ => None,
    }
}

/// Go's `strconv.ParseBool` spellings.
fn parse_bool(raw: &str) -> Option<bool> {
    match raw {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog_service() -> Value {
        json!({
            "ID": "40e4a748-2192-161a-0510-9bf59fe950b5",
            "Node": "foobar",
            "Address": "192.168.10.10",
            "Datacenter": "dc1",
            "TaggedAddresses": {"lan": "192.168.10.10", "wan": "10.0.10.10"},
            "NodeMeta": {"os": "linux", "kubernetes.io/role": "worker"},
            "ServiceID": "web-1",
            "ServiceName": "web",
            "ServiceTags": ["primary", "v1"],
            "ServiceAddress": "",
            "ServiceMeta": {"env": "prod", "version": "1.2.3", "empty": ""},
            "ServicePort": 80,
            "ServiceWeights": {"Passing": 10, "Warning": 1},
            "ServiceEnableTagOverride": false,
            "ServiceProxy": null,
            "Ratio": 0.5,
            "CreateIndex": 18446744073709551615u64,
            "ModifyIndex": -3,
            "Note": "say \"hi\"\n"
        })
    }

    fn service_entry() -> Value {
        json!({
            "Node": {"Node": "n1", "Address": "10.0.0.1", "Meta": {"env": "prod"}},
            "Service": {"ID": "api-1", "Service": "api", "Tags": ["blue"], "Port": 8080, "Meta": {}},
            "Checks": [
                {"CheckID": "serfHealth", "Status": "passing", "ServiceTags": []},
                {"CheckID": "service:api-1", "Status": "critical", "ServiceTags": ["blue"]}
            ],
            "Empty": []
        })
    }

    #[test]
    fn matches_catalog_service() {
        let v = catalog_service();
        let cases: &[(&str, bool)] = &[
            // equality on strings, quoted, raw and bare
            (r#"ServiceName == "web""#, true),
            ("ServiceName == `web`", true),
            ("ServiceName == web", true),
            ("ServiceName == api", false),
            ("ServiceName != api", true),
            ("ServiceName != web", false),
            (r#"Node == "foobar" and ServiceName == "web""#, true),
            // nested maps, dotted and indexed
            ("NodeMeta.os == linux", true),
            (r#"NodeMeta["os"] == "linux""#, true),
            (r#"NodeMeta[ "kubernetes.io/role" ] == worker"#, true),
            ("ServiceMeta.env == prod", true),
            ("ServiceMeta.env != prod", false),
            ("TaggedAddresses.wan == `10.0.10.10`", true),
            // missing keys
            ("ServiceMeta.missing == prod", false),
            ("ServiceMeta.missing != prod", true),
            ("ServiceMeta.missing is empty", true),
            ("ServiceMeta.missing is not empty", false),
            ("ServiceMeta.missing contains x", false),
            ("ServiceMeta.missing not contains x", true),
            ("x in ServiceMeta.missing", false),
            ("x not in ServiceMeta.missing", true),
            ("ServiceMeta.missing matches `.*`", false),
            ("ServiceMeta.missing not matches `.*`", true),
            ("NoSuchField == x", false),
            ("NoSuchField.Deeper == x", false),
            ("NoSuchField.Deeper is empty", true),
            // null behaves like missing
            ("ServiceProxy is empty", true),
            ("ServiceProxy.Upstreams is empty", true),
            ("ServiceProxy == x", false),
            ("ServiceProxy.Mode != x", true),
            // numbers
            ("ServicePort == 80", true),
            (r#"ServicePort == "80""#, true),
            ("ServicePort == 80.0", true),
            ("ServicePort != 81", true),
            ("ServicePort == 8", false),
            ("ServicePort == abc", false),
            ("ServicePort != abc", false),
            ("ServiceWeights.Passing == 10", true),
            ("Ratio == 0.5", true),
            ("Ratio == 0.50", true),
            ("Ratio != 0.5", false),
            ("CreateIndex == 18446744073709551615", true),
            ("ModifyIndex == -3", true),
            // booleans
            ("ServiceEnableTagOverride == false", true),
            ("ServiceEnableTagOverride == true", false),
            ("ServiceEnableTagOverride != true", true),
            ("ServiceEnableTagOverride == F", true),
            ("ServiceEnableTagOverride == nope", false),
            // emptiness
            ("ServiceAddress is empty", true),
            ("ServiceName is empty", false),
            ("ServiceName is not empty", true),
            ("ServiceTags is not empty", true),
            ("ServiceMeta.empty is empty", true),
            ("ServiceMeta is not empty", true),
            ("ServicePort is empty", false),
            ("ServicePort is not empty", false),
            // in / contains over arrays, maps and strings
            ("primary in ServiceTags", true),
            (r#""v1" in ServiceTags"#, true),
            ("v2 in ServiceTags", false),
            ("v2 not in ServiceTags", true),
            ("primary not in ServiceTags", false),
            ("ServiceTags contains v1", true),
            ("ServiceTags not contains v1", false),
            ("ServiceTags contains prim", false),
            ("env in ServiceMeta", true),
            ("prod in ServiceMeta", false),
            ("ServiceMeta contains version", true),
            ("ServiceMeta not contains nope", true),
            ("ServiceName contains we", true),
            ("eb in ServiceName", true),
            ("ServiceName not contains xyz", true),
            ("ServiceName contains xyz", false),
            ("80 in ServicePort", false),
            // regex
            ("ServiceName matches `^w.b$`", true),
            (r#"ServiceName matches "^a""#, false),
            (r#"ServiceName not matches "^a""#, true),
            (r#"ServiceMeta.version matches "^1\\.2\\.""#, true),
            ("ServicePort matches `8`", false),
            ("ServicePort not matches `8`", false),
            // == on a list is a type error: never true
            ("ServiceTags == primary", false),
            ("ServiceTags != primary", false),
            // array indexing by number
            ("ServiceTags.0 == primary", true),
            ("ServiceTags.1 == primary", false),
            ("ServiceTags.5 is empty", true),
            // escapes in strings
            (r#"Note == "say \"hi\"\n""#, true),
            (r#"Note contains "\x22hi\u0022""#, true),
            // selecting into a scalar is invalid: false
            ("ServiceName.Foo == web", false),
            ("ServiceName.Foo != web", false),
            // combinators and precedence
            ("not ServiceName == api", true),
            ("not not ServiceName == web", true),
            ("not (ServiceName == web)", false),
            ("ServiceName == api or ServiceName == web", true),
            ("ServiceName == api or ServiceName == web and ServicePort == 81", false),
            ("(ServiceName == api or ServiceName == web) and ServicePort == 80", true),
            ("ServiceName == web and ServicePort == 81 or NodeMeta.os == linux", true),
            ("ServiceName == web and not ServicePort == 81", true),
            ("not ServiceName == web or ServicePort == 80", true),
            ("not ServiceName == web and ServicePort == 80", false),
            ("((ServiceName == web))", true),
            ("  ServiceName==web  ", true),
            ("ServiceName == web\tand\nServicePort == 80", true),
        ];
        for (expr, want) in cases {
            let f = parse(expr).unwrap_or_else(|e| panic!("parse {expr:?}: {e}"));
            assert_eq!(f.matches(&v), *want, "{expr}");
        }
    }

    #[test]
    fn matches_service_entry_slices() {
        let v = service_entry();
        let cases: &[(&str, bool)] = &[
            // selectors through arrays are ANY over the elements
            ("Checks.Status == passing", true),
            ("Checks.Status == critical", true),
            ("Checks.Status == warning", false),
            // per-element negation: some check is not passing
            ("Checks.Status != passing", true),
            ("Checks.Status != warning", true),
            ("not Checks.Status == critical", false),
            ("Checks.CheckID == serfHealth and Checks.Status == critical", true),
            ("blue in Checks.ServiceTags", true),
            ("Checks.ServiceTags is empty", true),
            ("Checks.ServiceTags is not empty", true),
            ("Checks.Missing is empty", true),
            ("Checks.Status matches `^crit`", true),
            ("Checks.0.Status == passing", true),
            ("Checks.1.Status == passing", false),
            // empty array: no element can match, whatever the operator
            ("Empty.Status == x", false),
            ("Empty.Status != x", false),
            ("Empty.Status is empty", false),
            ("Empty is empty", true),
            ("Checks is not empty", true),
            // objects
            ("Service.Tags contains blue", true),
            ("blue in Service.Tags", true),
            ("Service.Port == 8080", true),
            ("Service.Meta is empty", true),
            ("Node.Meta.env == prod", true),
            (r#"Node["Meta"]["env"] == prod"#, true),
            ("Node.Node == n1 and Service.Service == api", true),
        ];
        for (expr, want) in cases {
            let f = parse(expr).unwrap_or_else(|e| panic!("parse {expr:?}: {e}"));
            assert_eq!(f.matches(&v), *want, "{expr}");
        }
    }

    #[test]
    fn non_object_elements() {
        let f = parse("Name == x").expect("parses");
        assert!(!f.matches(&json!(null)));
        assert!(!f.matches(&json!("x")));
        assert!(!f.matches(&json!(3)));
        assert!(f.matches(&json!([{"Name": "y"}, {"Name": "x"}])));
        assert!(parse("Name is empty").expect("parses").matches(&json!(null)));
    }

    #[test]
    fn parse_errors() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("   \t\n", "empty"),
            ("(ServiceName == web", "unmatched parentheses"),
            ("ServiceName == web)", "unexpected"),
            (")", "unmatched"),
            ("((a == b)", "unmatched"),
            ("ServiceName = web", "unknown operator"),
            ("ServiceName ! web", "unknown operator"),
            ("ServiceName ~= web", "unexpected character"),
            ("ServiceName > 3", "unexpected character"),
            ("ServiceName equals web", "match operator"),
            ("ServiceName", "match operator"),
            ("ServiceName ==", "expected a value"),
            ("ServiceName == (", "expected a value"),
            ("ServiceName is", "\"empty\""),
            ("ServiceName is full", "\"empty\""),
            ("ServiceName is not", "\"empty\""),
            ("ServiceName not web", "match operator"),
            ("x in", "invalid selector"),
            (r#"x in "Tags""#, "invalid selector"),
            ("x in 3", "invalid selector"),
            ("3 == ServicePort", "\"in\""),
            (r#""web" == ServiceName"#, "\"in\""),
            ("ServiceName == web and", "end of expression"),
            ("ServiceName == web or or a == b", "match operator"),
            ("and a == b", "match operator"),
            ("not", "end of expression"),
            ("ServiceName == web ServicePort == 80", "unexpected"),
            ("()", "unmatched"),
            (r#"ServiceName == "web"#, "unterminated"),
            ("ServiceName == `web", "unterminated"),
            (r#"ServiceName == "a\qb""#, "escape"),
            (r#"ServiceName == "a\x4""#, "escape"),
            (r#"ServiceName == "a\u00""#, "escape"),
            ("ServiceName == 80abc", "number"),
            ("ServiceName == 007", "number"),
            ("ServiceName == 1.", "number"),
            ("ServiceName == -", "number"),
            ("ServiceMeta. == x", "dangling"),
            ("ServiceMeta[env] == x", "invalid index"),
            (r#"ServiceMeta["env" == x"#, "unclosed index"),
            (r#"ServiceMeta["env"#, "unterminated"),
            ("ServiceName matches `(`", "regular expression"),
            ("ServiceName not matches `[a-`", "regular expression"),
            ("_x == y", "unexpected character"),
            ("ServiceName == wéb", "unexpected character"),
        ];
        for (expr, want) in cases {
            match parse(expr) {
                Ok(f) => panic!("{expr:?} parsed as {f:?}"),
                Err(e) => {
                    assert!(e.starts_with(ERR_PREFIX), "{expr:?}: {e}");
                    assert!(e.contains(want), "{expr:?}: {e:?} lacks {want:?}");
                }
            }
        }
    }

    #[test]
    fn keywords_are_lowercase_only() {
        // go-bexpr keywords are case-sensitive; `AND` is just an identifier.
        assert!(parse("a == b AND c == d").is_err());
        assert!(parse("a == b and c == d").is_ok());
        assert!(parse("a IS EMPTY").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}a == b{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(parse(&deep).is_err());
        let nots = format!("{}a == b", "not ".repeat(100_000));
        assert!(parse(&nots).is_err());
        let ok = format!("{}a == b{}", "(".repeat(50), ")".repeat(50));
        assert!(parse(&ok).expect("parses").matches(&json!({"a": "b"})));
        // long flat chains are fine and evaluate without deep recursion
        let chain = vec!["a == b"; 20_000].join(" and ");
        assert!(parse(&chain).expect("parses").matches(&json!({"a": "b"})));
        let chain = vec!["a == c"; 20_000].join(" or ");
        assert!(!parse(&chain).expect("parses").matches(&json!({"a": "b"})));
    }

    #[test]
    fn never_panics_on_odd_input() {
        let v = catalog_service();
        let inputs = [
            "\"",
            "`",
            "\\",
            "[",
            "]",
            "[\"a\"]",
            "a[",
            "a[\"",
            "a[\"b\"",
            "a.",
            "a..b == c",
            "==",
            "!=",
            "!",
            "=",
            "\u{0}",
            "é",
            "a == \"\\",
            "a == \"\\u",
            "a == \"\\U0011FFFF\"",
            "a == \"\\777\"",
            "-",
            "-1",
            "0.",
            "a in b in c",
            "a == b == c",
            "not not not",
            "(((",
            ")))",
            "a is not",
            "a not",
            "a not in",
            "is empty",
            "a == \"\u{1F600}\"",
            "a\u{1F600}",
            "ServiceName matches \"\\\\\"",
        ];
        for s in inputs {
            if let Ok(f) = parse(s) {
                let _ = f.matches(&v);
            }
        }
        // Every prefix of a realistic expression, to hit each half-finished state.
        let full = r#"(ServiceMeta["env"] == "prod" or not "v1" in ServiceTags) and ServiceName matches `^w` and ServicePort != 81.5"#;
        for (i, _) in full.char_indices() {
            if let Ok(f) = parse(&full[..i]) {
                let _ = f.matches(&v);
            }
        }
        assert!(parse(full).expect("parses").matches(&v));
    }

    #[test]
    fn bare_values_and_keyword_like_values() {
        let v = json!({"Name": "empty", "Path": "a.b", "Tags": ["not", "in"], "Meta": {"a/b": "x"}});
        assert!(parse("Name == empty").expect("parses").matches(&v));
        assert!(parse("Path == a.b").expect("parses").matches(&v));
        assert!(parse("Meta.a/b == x").expect("parses").matches(&v));
        assert!(parse("Tags contains not").expect("parses").matches(&v));
        assert!(parse("Tags contains in").expect("parses").matches(&v));
    }

    #[test]
    fn raw_strings_are_not_unescaped() {
        let v = json!({"Re": "a\\d"});
        assert!(parse(r"Re == `a\d`").expect("parses").matches(&v));
        assert!(parse(r#"Re == "a\\d""#).expect("parses").matches(&v));
        assert!(parse(r"Re matches `^a\\d$`").expect("parses").matches(&v));
    }
}
