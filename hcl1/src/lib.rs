//! A reader for HCL version 1, the syntax of Consul's and consul-template's configuration files and of
//! Consul's ACL rules, into JSON values. HCL2 parsers reject common HCL1 files (`wait { min = "2s" max = "10s" }`
//! on one line, octal `perms = 0600`), so this covers HCL1's own grammar: attributes, nested and
//! labelled blocks (repeated blocks become lists), strings with escapes, heredocs, numbers with
//! Go's base prefixes, booleans, lists, inline objects and all three comment styles.

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}, column {col}: {message}")]
pub struct Error {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Lists, objects and blocks nest at most this deep. The parser recurses once per level, and a
/// file of 2,000 `[` must be an error, not a stack overflow (fuzzing found one on a 2 MiB
/// stack); configurations nest a few levels, and serde_json stops at 128 too.
const MAX_NESTING: usize = 128;

pub fn parse(src: &str) -> Result<Value, Error> {
    let mut p = Parser { s: src.as_bytes(), i: 0, depth: 0 };
    let body = p.body(None)?;
    Ok(Value::Object(body))
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    /// Lists, objects and blocks open around the current position.
    depth: usize,
}

impl Parser<'_> {
    /// Enters one more level of nesting (left again where the list, object or block closes).
    fn enter(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.err(format!("nested deeper than {MAX_NESTING} levels")));
        }
        Ok(())
    }

    fn err(&self, message: impl Into<String>) -> Error {
        let before = &self.s[..self.i.min(self.s.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let col = self.i - before.iter().rposition(|&b| b == b'\n').map(|p| p + 1).unwrap_or(0) + 1;
        Error { line, col, message: message.into() }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Skips whitespace, newlines, commas (HCL1 allows them between items) and comments.
    fn skip(&mut self) -> Result<(), Error> {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' | b'\n' | b',' => self.i += 1,
                b'#' => self.skip_line(),
                b'/' if self.s.get(self.i + 1) == Some(&b'/') => self.skip_line(),
                b'/' if self.s.get(self.i + 1) == Some(&b'*') => {
                    let end = self.s[self.i + 2..].windows(2).position(|w| w == b"*/");
                    match end {
                        Some(e) => self.i += e + 4,
                        None => return Err(self.err("unterminated comment")),
                    }
                }
                _ => break,
            }
        }
        Ok(())
    }

    fn skip_line(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'\n' {
                break;
            }
            self.i += 1;
        }
    }

    fn ident(&mut self) -> Option<String> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.' {
                self.i += 1;
            } else {
                break;
            }
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// Items until `close` (or the end of input for the top level).
    fn body(&mut self, close: Option<u8>) -> Result<Map<String, Value>, Error> {
        if close.is_some() {
            self.enter()?;
        }
        let mut out = Map::new();
        loop {
            self.skip()?;
            match (self.peek(), close) {
                (None, None) => return Ok(out),
                (None, Some(_)) => return Err(self.err("unexpected end of input, expected '}'")),
                (Some(c), Some(cl)) if c == cl => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(out);
                }
                _ => {}
            }
            let key = if self.peek() == Some(b'"') {
                self.string()?
            } else {
                self.ident().ok_or_else(|| self.err("expected an attribute or block name"))?
            };
            self.skip_inline();
            let value = match self.peek() {
                Some(b'=') | Some(b':') => {
                    self.i += 1;
                    self.skip()?;
                    self.value()?
                }
                Some(b'{') | Some(b'"') => {
                    // A block, possibly labelled: `template { }`, `service "web" { }`.
                    let mut labels = Vec::new();
                    while self.peek() == Some(b'"') {
                        labels.push(self.string()?);
                        self.skip_inline();
                    }
                    if self.peek() != Some(b'{') {
                        return Err(self.err(format!("expected '{{' after block {key:?}")));
                    }
                    self.i += 1;
                    let mut v = Value::Object(self.body(Some(b'}'))?);
                    for label in labels.into_iter().rev() {
                        let mut m = Map::new();
                        m.insert(label, v);
                        v = Value::Object(m);
                    }
                    insert_block(&mut out, key, v);
                    continue;
                }
                _ => return Err(self.err(format!("expected '=' or '{{' after {key:?}"))),
            };
            out.insert(key, value);
        }
    }

    fn skip_inline(&mut self) {
        while matches!(self.peek(), Some(b' ') | Some(b'\t')) {
            self.i += 1;
        }
    }

    fn value(&mut self) -> Result<Value, Error> {
        match self.peek() {
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b'<') if self.s[self.i..].starts_with(b"<<") => self.heredoc(),
            Some(b'[') => {
                self.enter()?;
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.skip()?;
                    if self.peek() == Some(b']') {
                        self.i += 1;
                        self.depth -= 1;
                        return Ok(Value::Array(items));
                    }
                    if self.peek().is_none() {
                        return Err(self.err("unterminated list"));
                    }
                    items.push(self.value()?);
                }
            }
            Some(b'{') => {
                self.i += 1;
                Ok(Value::Object(self.body(Some(b'}'))?))
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
            _ => match self.ident().as_deref() {
                Some("true") => Ok(Value::Bool(true)),
                Some("false") => Ok(Value::Bool(false)),
                _ => Err(self.err("expected a value")),
            },
        }
    }

    fn number(&mut self) -> Result<Value, Error> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'+' || c == b'_' {
                self.i += 1;
            } else {
                break;
            }
        }
        let text = String::from_utf8_lossy(&self.s[start..self.i]).replace('_', "");
        let (neg, digits) = match text.strip_prefix('-') {
            Some(d) => (true, d.to_string()),
            None => (false, text.clone()),
        };
        // strconv.ParseInt(s, 0, 64): 0x hex, 0o/leading-0 octal, 0b binary. One sign only:
        // `--5` is no number, and the magnitude is read unsigned so that the sign is applied
        // with a range check (`-9223372036854775808` is i64::MIN; negating a parsed
        // `-9223372036854775808` overflowed, found by fuzzing).
        let magnitude = if digits.starts_with(['-', '+']) {
            None
        } else if let Some(h) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
            u64::from_str_radix(h, 16).ok()
        } else if let Some(o) = digits.strip_prefix("0o") {
            u64::from_str_radix(o, 8).ok()
        } else if let Some(b) = digits.strip_prefix("0b") {
            u64::from_str_radix(b, 2).ok()
        } else if digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit()) {
            u64::from_str_radix(&digits[1..], 8).ok()
        } else {
            digits.parse::<u64>().ok()
        };
        let parsed = magnitude.and_then(|m| {
            let m = i128::from(m);
            i64::try_from(if neg { -m } else { m }).ok()
        });
        if let Some(n) = parsed {
            return Ok(Value::from(n));
        }
        text.parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| self.err(format!("invalid number {text:?}")))
    }

    fn string(&mut self) -> Result<String, Error> {
        self.i += 1; // opening quote
        let mut out = Vec::new();
        loop {
            let Some(c) = self.peek() else { return Err(self.err("unterminated string")) };
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(e) = self.peek() else { return Err(self.err("unterminated string")) };
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        other => {
                            out.push(b'\\');
                            out.push(other);
                        }
                    }
                }
                b'\n' => return Err(self.err("newline in string")),
                other => out.push(other),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn heredoc(&mut self) -> Result<Value, Error> {
        self.i += 2;
        let indent = self.peek() == Some(b'-');
        if indent {
            self.i += 1;
        }
        let marker = self.ident().ok_or_else(|| self.err("expected a heredoc marker"))?;
        self.skip_line();
        self.i += 1;
        let mut lines = Vec::new();
        loop {
            if self.i >= self.s.len() {
                return Err(self.err(format!("heredoc not terminated by {marker:?}")));
            }
            let start = self.i;
            self.skip_line();
            let line = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
            self.i += 1;
            if line.trim() == marker {
                break;
            }
            lines.push(line);
        }
        if indent {
            let min = lines
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start().len())
                .min()
                .unwrap_or(0);
            for l in &mut lines {
                *l = l.get(min..).unwrap_or("").to_string();
            }
        }
        let mut text = lines.join("\n");
        text.push('\n');
        Ok(Value::String(text))
    }
}

/// A repeated block (`template {}` twice) becomes a list of bodies.
fn insert_block(out: &mut Map<String, Value>, key: String, v: Value) {
    match out.get_mut(&key) {
        Some(Value::Array(items)) => items.push(v),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, v]);
        }
        None => {
            out.insert(key, Value::Array(vec![v]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_consul_template_configs() {
        let v = parse(
            r#"
# comment
consul { address = "127.0.0.1:8500" }
wait { min = "2s" max = "10s" }   // trailing
max_stale = "10m"
template {
  source = "a.ctmpl"
  destination = "a.conf"
  perms = 0600
  backup = true
}
/* block
comment */
template {
  contents = <<EOF
line {{ key "x" }}
EOF
  destination = "b.conf"
  command = "echo \"hi\""
  exec { command = ["a", "b"], timeout = "5s" }
}
"#,
        )
        .unwrap();
        assert_eq!(v["consul"][0]["address"], "127.0.0.1:8500");
        assert_eq!(v["wait"][0]["max"], "10s");
        assert_eq!(v["template"][0]["perms"], 384);
        assert_eq!(v["template"][0]["backup"], true);
        assert_eq!(v["template"][1]["contents"], "line {{ key \"x\" }}\n");
        assert_eq!(v["template"][1]["command"], "echo \"hi\"");
        assert_eq!(v["template"][1]["exec"][0]["command"], json!(["a", "b"]));
        assert_eq!(v["max_stale"], "10m");
    }

    #[test]
    fn numbers_take_one_sign_and_stay_in_range() {
        // Found by fuzzing (`template_config`): the second `-` made the parser negate i64::MIN.
        let e = parse("list = [1, 2.5, --9223372036854775808, true]").unwrap_err();
        assert!(e.message.contains("invalid number"), "{e}");
        assert!(parse("a = --5").is_err());
        assert!(parse("a = -+5").is_err());
        let v = parse("a = -9223372036854775808\nb = 9223372036854775807\nc = -0x10\nd = 9223372036854775808").unwrap();
        assert_eq!(v["a"], serde_json::json!(i64::MIN));
        assert_eq!(v["b"], serde_json::json!(i64::MAX));
        assert_eq!(v["c"], serde_json::json!(-16));
        // Past i64 the reader falls back to a float, as it did before.
        assert_eq!(v["d"], serde_json::json!(9223372036854775808.0));
    }

    #[test]
    fn nesting_is_bounded() {
        // Found by fuzzing (`template_config`, the stable engine's 2 MiB stack): a line of
        // `[`s overflowed the stack of the recursive parser.
        let fuzzed = String::from_utf8_lossy(include_bytes!("testdata/deep-list.hcl"));
        let e = parse(&fuzzed).unwrap_err();
        assert!(e.message.contains("nested deeper than 128 levels"), "{e}");
        let blocks = format!("{}{}", "a {\n".repeat(200), "}\n".repeat(200));
        assert!(parse(&blocks).unwrap_err().message.contains("nested deeper"));
        let objects = format!("x = {}{}", "{ y = ".repeat(200), "}".repeat(200));
        assert!(parse(&objects).is_err());
        // As deep as allowed still parses, and levels are given back as they close.
        let ok = format!("a = {}1{}\nb = {}2{}", "[".repeat(128), "]".repeat(128), "[".repeat(128), "]".repeat(128));
        assert!(parse(&ok).is_ok());
        let ok = format!("{}{}", "a {\n".repeat(128), "}\n".repeat(128));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn errors_have_positions() {
        let e = parse("template {\n  source = \n}").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(parse("a = \"unterminated").is_err());
    }
}

#[cfg(test)]
mod acl_rules {
    use serde_json::json;

    #[test]
    fn labelled_blocks_as_consul_rules_use_them() {
        let v = super::parse(
            "key_prefix \"app/\" { policy = \"read\" }\nkey_prefix \"\" { policy = \"deny\" }\nkey \"app/x\" { policy = \"write\" }\noperator = \"read\"\nservice \"web\" { policy = \"write\" intentions = \"read\" }",
        )
        .expect("parses");
        assert_eq!(v["operator"], json!("read"));
        // Labelled blocks: a list of one-entry objects, label → body, in file order.
        assert_eq!(v["key_prefix"], json!([{"app/": {"policy": "read"}}, {"": {"policy": "deny"}}]));
        assert_eq!(v["service"], json!([{"web": {"policy": "write", "intentions": "read"}}]));
    }
}
