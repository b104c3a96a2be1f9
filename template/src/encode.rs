//! `toYAML` and `toTOML` as consul-template's Go libraries write them, for the JSON-shaped values
//! templates handle: YAML as `sigs.k8s.io/yaml` (JSON through `gopkg.in/yaml.v2`), TOML as
//! `github.com/BurntSushi/toml`'s encoder. Written here rather than through serde_yaml/toml
//! because the bytes are the contract: a rendered file must not change when a user moves from
//! consul-template. Pure functions.

use serde_json::{Map, Value};
use std::cmp::Ordering;

// ---- YAML ------------------------------------------------------------------------------------

/// consul-template's `toYAML`: the document without its trailing newline.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => yaml_map(m, 0, &mut out),
        Value::Array(a) if !a.is_empty() => yaml_seq(a, 0, &mut out),
        other => {
            out.push_str(&yaml_scalar(other, 0, 0));
            out.push('\n');
        }
    }
    out.trim().to_string()
}

/// yaml.v2's key order: a "natural" sort in which digit runs compare as numbers and letters
/// sort after other characters (`keyList.Less`).
fn yaml_key_cmp(a: &str, b: &str) -> Ordering {
    let (ar, br): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut i = 0;
    while i < ar.len() && i < br.len() {
        if ar[i] == br[i] {
            i += 1;
            continue;
        }
        let (al, bl) = (ar[i].is_alphabetic(), br[i].is_alphabetic());
        if al && bl {
            return ar[i].cmp(&br[i]);
        }
        if al || bl {
            return if bl { Ordering::Less } else { Ordering::Greater };
        }
        let (mut an, mut bn) = (0i64, 0i64);
        if ar[i] == '0' || br[i] == '0' {
            let mut j = i;
            while j > 0 && ar[j - 1].is_ascii_digit() {
                j -= 1;
                if ar[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < ar.len() && ar[ai].is_ascii_digit() {
            an = an.wrapping_mul(10).wrapping_add(ar[ai] as i64 - '0' as i64);
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && br[bi].is_ascii_digit() {
            bn = bn.wrapping_mul(10).wrapping_add(br[bi] as i64 - '0' as i64);
            bi += 1;
        }
        if an != bn {
            return an.cmp(&bn);
        }
        if ai != bi {
            return ai.cmp(&bi);
        }
        return ar[i].cmp(&br[i]);
    }
    ar.len().cmp(&br.len())
}

fn sorted_yaml_keys(m: &Map<String, Value>) -> Vec<&String> {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort_by(|a, b| yaml_key_cmp(a, b));
    keys
}

fn pad(n: usize) -> String {
    " ".repeat(n)
}

/// A block mapping whose first key goes where the cursor is (after `- ` or at a line start).
fn yaml_map(m: &Map<String, Value>, indent: usize, out: &mut String) {
    for (i, k) in sorted_yaml_keys(m).into_iter().enumerate() {
        if i > 0 {
            out.push_str(&pad(indent));
        }
        // Keys never fold (libyaml's simple-key context).
        let key = yaml_string(k, indent, None);
        let col = indent + key.chars().count() + 2;
        out.push_str(&key);
        out.push(':');
        yaml_value_after_key(&m[k], indent, col, out);
    }
}

fn yaml_value_after_key(v: &Value, indent: usize, col: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            out.push_str(&pad(indent + 2));
            yaml_map(m, indent + 2, out);
        }
        // yaml.v2 does not indent a sequence under its key.
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            out.push_str(&pad(indent));
            yaml_seq(a, indent, out);
        }
        other => {
            out.push(' ');
            out.push_str(&yaml_scalar(other, indent + 2, col));
            out.push('\n');
        }
    }
}

fn yaml_seq(a: &[Value], indent: usize, out: &mut String) {
    for (i, v) in a.iter().enumerate() {
        if i > 0 {
            out.push_str(&pad(indent));
        }
        out.push_str("- ");
        match v {
            Value::Object(m) if !m.is_empty() => yaml_map(m, indent + 2, out),
            Value::Array(inner) if !inner.is_empty() => yaml_seq(inner, indent + 2, out),
            other => {
                out.push_str(&yaml_scalar(other, indent + 2, indent + 2));
                out.push('\n');
            }
        }
    }
}

/// `indent`: where continuation lines start; `col`: the column the scalar starts at.
fn yaml_scalar(v: &Value, indent: usize, col: usize) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            // sigs.k8s.io/yaml goes through Go's JSON, which writes an integral float without a
            // point: yaml.v2 then reads it back as an integer.
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 9.2e18 => (f as i64).to_string(),
            (_, _, Some(f)) => go_float_g(f),
            _ => n.to_string(),
        },
        Value::String(s) => yaml_string(s, indent, Some(col)),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// `strconv.FormatFloat(f, 'g', -1, 64)` as yaml.v2 writes floats (`.inf`, `.nan`).
pub fn go_float_g(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf".into() } else { "-.inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    // Shortest digits and exponent, from Rust's `{:e}` (`1.2345e6`).
    let e = format!("{f:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let neg = mant.starts_with('-');
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if neg { "-" } else { "" };
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{esign}{:02}", exp.abs());
    }
    if exp < 0 {
        return format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize));
    }
    let point = exp as usize + 1;
    if digits.len() <= point {
        format!("{sign}{digits}{}", "0".repeat(point - digits.len()))
    } else {
        format!("{sign}{}.{}", &digits[..point], &digits[point..])
    }
}

/// Whether yaml.v2 would read `s`, unquoted, as something other than a string (`resolve`).
fn yaml_resolves_to_non_string(s: &str) -> bool {
    const SPECIAL: &[&str] = &[
        "", "~", "null", "Null", "NULL", "y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "n", "N", "no", "No", "NO",
        "off", "Off", "OFF", "true", "True", "TRUE", "false", "False", "FALSE", ".nan", ".NaN", ".NAN", ".inf", ".Inf",
        ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF", "<<",
    ];
    if SPECIAL.contains(&s) {
        return true;
    }
    let Some(first) = s.chars().next() else { return true };
    match first {
        '.' => s.parse::<f64>().is_ok(),
        '+' | '-' | '0'..='9' => {
            let plain = s.replace('_', "");
            let body = plain.trim_start_matches(['+', '-']);
            let int = if let Some(h) = body.strip_prefix("0x") {
                !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit())
            } else if let Some(b) = body.strip_prefix("0b") {
                !b.is_empty() && b.chars().all(|c| c == '0' || c == '1')
            } else if body.len() > 1 && body.starts_with('0') {
                body.chars().all(|c| ('0'..='7').contains(&c))
            } else {
                !body.is_empty() && body.chars().all(|c| c.is_ascii_digit())
            };
            int || is_yaml_float(&plain) || is_base60_float(s) || is_timestamp(s)
        }
        _ => false,
    }
}

/// yaml.v2's `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mant, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mant_ok = match mant.split_once('.') {
        Some(("", frac)) => !frac.is_empty() && frac.chars().all(|c| c.is_ascii_digit()),
        Some((int, frac)) => {
            !int.is_empty() && int.chars().all(|c| c.is_ascii_digit()) && frac.chars().all(|c| c.is_ascii_digit())
        }
        None => !mant.is_empty() && mant.chars().all(|c| c.is_ascii_digit()),
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    mant_ok && exp_ok
}

/// `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`
fn is_base60_float(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (main, frac) = match s.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (s, None),
    };
    let mut parts = main.split(':');
    let head = parts.next().unwrap_or("");
    let head_ok =
        head.starts_with(|c: char| c.is_ascii_digit()) && head.chars().all(|c| c.is_ascii_digit() || c == '_');
    let rest: Vec<&str> = parts.collect();
    let rest_ok = !rest.is_empty()
        && rest.iter().all(|p| {
            (1..=2).contains(&p.len())
                && p.chars().all(|c| c.is_ascii_digit())
                && (p.len() == 1 || p.as_bytes()[0] <= b'5')
        });
    head_ok && rest_ok && frac.is_none_or(|f| f.chars().all(|c| c.is_ascii_digit() || c == '_'))
}

/// yaml.v2's timestamps: `2006-1-2`, optionally followed by `T`/`t`/` ` and a time.
fn is_timestamp(s: &str) -> bool {
    let date_end = s.find(['T', 't', ' ']).unwrap_or(s.len());
    let date: Vec<&str> = s[..date_end].split('-').collect();
    let date_ok = date.len() == 3
        && date[0].len() == 4
        && date.iter().all(|p| !p.is_empty() && p.len() <= 4 && p.chars().all(|c| c.is_ascii_digit()))
        && date[1].len() <= 2
        && date[2].len() <= 2;
    if !date_ok {
        return false;
    }
    if date_end == s.len() {
        return true;
    }
    // A time part: h:m:s with optional fraction and zone; be generous, as the Go parser is.
    let t = &s[date_end + 1..];
    let hms: Vec<&str> = t.splitn(3, ':').collect();
    hms.len() == 3
        && hms[0].len() <= 2
        && hms[0].chars().all(|c| c.is_ascii_digit())
        && hms[1].len() <= 2
        && hms[1].chars().all(|c| c.is_ascii_digit())
        && hms[2].starts_with(|c: char| c.is_ascii_digit())
}

/// libyaml's `yaml_emitter_analyze_scalar`, reduced to what decides plain versus quoted in block
/// context.
fn yaml_plain_allowed(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() || chars[0] == ' ' || chars[chars.len() - 1] == ' ' {
        return false;
    }
    if s.starts_with("---") || s.starts_with("...") {
        return false;
    }
    for (i, &c) in chars.iter().enumerate() {
        let next_blank = chars.get(i + 1).is_none_or(|n| *n == ' ' || *n == '\t');
        if !(c == '\t' || (' '..='~').contains(&c) || (c as u32 >= 0xA0 && c != '\u{FEFF}')) {
            return false; // special characters: quoted
        }
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"' | '%' | '@' | '`' => {
                    return false
                }
                '?' | ':' | '-' if next_blank => return false,
                _ => {}
            }
        } else {
            match c {
                ':' if next_blank => return false,
                '#' if chars[i - 1] == ' ' || chars[i - 1] == '\t' => return false,
                _ => {}
            }
        }
        if c == '\t' && (i == 0 || i == chars.len() - 1) {
            return false;
        }
    }
    true
}

/// libyaml's preferred line width: plain and single-quoted values fold at a space past it.
const YAML_WIDTH: usize = 80;

/// `col`: where a value starts (folding allowed), `None` for a key.
fn yaml_string(s: &str, indent: usize, col: Option<usize>) -> String {
    if s.contains('\n') {
        return yaml_literal(s, indent);
    }
    if yaml_resolves_to_non_string(s) {
        return yaml_double_quoted(s);
    }
    if yaml_plain_allowed(s) {
        return fold(s, col, indent, false);
    }
    if s.chars().all(|c| c == '\t' || (' '..='~').contains(&c) || (c as u32 >= 0xA0 && c != '\u{FEFF}')) {
        return format!("'{}'", fold(&s.replace('\'', "''"), col.map(|c| c + 1), indent, true));
    }
    yaml_double_quoted(s)
}

/// libyaml's `write_plain`/`write_single_quoted` line breaking: a single space met once the line
/// is past [`YAML_WIDTH`] becomes a newline and the continuation indent. (A quoted scalar never
/// breaks at its first or last character.)
fn fold(s: &str, col: Option<usize>, indent: usize, quoted: bool) -> String {
    let Some(mut column) = col else { return s.to_string() };
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut spaces = false;
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let next_space = chars.get(i + 1).is_none_or(|n| *n == ' ');
            let edge = quoted && (i == 0 || i == chars.len() - 1);
            if !spaces && column > YAML_WIDTH && !next_space && !edge {
                out.push('\n');
                out.push_str(&pad(indent));
                column = indent;
            } else {
                out.push(c);
                column += 1;
            }
            spaces = true;
        } else {
            out.push(c);
            column += 1;
            spaces = false;
        }
    }
    out
}

fn yaml_double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\x0b' => out.push_str("\\v"),
            '\x0c' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\x1b' => out.push_str("\\e"),
            '\u{85}' => out.push_str("\\N"),
            '\u{a0}' => out.push_str("\\_"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A literal block scalar (`|-`, `|`, `|+`), indented two past its parent.
fn yaml_literal(s: &str, indent: usize) -> String {
    let trailing = s.len() - s.trim_end_matches('\n').len();
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let ind = if s.starts_with(' ') { "2" } else { "" };
    let mut out = format!("|{ind}{chomp}");
    let body = if trailing == 1 { &s[..s.len() - 1] } else { s.trim_end_matches('\n') };
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&pad(indent));
            out.push_str(line);
        }
    }
    for _ in 1..trailing {
        out.push('\n');
    }
    out
}

// ---- TOML ------------------------------------------------------------------------------------

/// consul-template's `toTOML`: BurntSushi's encoder output, trimmed. Only maps encode; nulls are
/// left out as the Go encoder leaves out nil values.
pub fn to_toml(v: &Value) -> Result<String, String> {
    let Value::Object(m) = v else { return Err(format!("toTOML: expected a map, got {}", kind(v))) };
    let mut out = String::new();
    toml_table(&[], m, &mut out)?;
    Ok(out.trim().to_string())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// BurntSushi's `tomlTypeOfGo` is a hash: a map, or a list whose first element is one.
fn is_table(v: &Value) -> bool {
    match v {
        Value::Object(_) => true,
        Value::Array(a) => a.first().is_some_and(Value::is_object),
        _ => false,
    }
}

fn toml_key(k: &str) -> String {
    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        k.to_string()
    } else {
        toml_quoted(k)
    }
}

fn toml_path(path: &[String]) -> String {
    path.iter().map(|k| toml_key(k)).collect::<Vec<_>>().join(".")
}

fn toml_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x08' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\x0c' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An inline value (no tables).
fn toml_value(v: &Value) -> Result<String, String> {
    Ok(match v {
        Value::Null => return Err("toTOML: null inside a list".into()),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => toml_float(f),
            _ => n.to_string(),
        },
        Value::String(s) => toml_quoted(s),
        Value::Array(a) => {
            let items = a.iter().map(toml_value).collect::<Result<Vec<_>, _>>()?;
            format!("[{}]", items.join(", "))
        }
        Value::Object(m) => {
            // As eMap inline: plain keys, then tables, each sorted; nils left out.
            let mut items = Vec::new();
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by_key(|k| (is_table(&m[*k]), k.as_str()));
            for k in keys {
                if !m[k].is_null() {
                    items.push(format!("{} = {}", toml_key(k), toml_value(&m[k])?));
                }
            }
            format!("{{{}}}", items.join(", "))
        }
    })
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)` with a `.0` added when it has no point.
fn toml_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+inf".into() } else { "-inf".into() };
    }
    let s = format!("{f}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// `eMapOrStruct`: plain keys first, then tables and arrays of tables, each group sorted.
fn toml_table(path: &[String], m: &Map<String, Value>, out: &mut String) -> Result<(), String> {
    // A key is indented by its full path's depth less one: one past its table's header.
    let indent = "  ".repeat(path.len());
    let mut direct: Vec<&String> = m.keys().filter(|k| !is_table(&m[*k])).collect();
    let mut sub: Vec<&String> = m.keys().filter(|k| is_table(&m[*k])).collect();
    direct.sort();
    sub.sort();
    for k in direct {
        let v = &m[k];
        if v.is_null() {
            continue;
        }
        // A key's indentation is that of its full path, one deeper than its table's header.
        out.push_str(&format!("{indent}{} = {}\n", toml_key(k), toml_value(v)?));
    }
    for k in sub {
        let mut p = path.to_vec();
        p.push(k.clone());
        let head_indent = "  ".repeat(p.len() - 1);
        match &m[k] {
            Value::Object(inner) => {
                if p.len() == 1 && !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&format!("{head_indent}[{}]\n", toml_path(&p)));
                toml_table(&p, inner, out)?;
            }
            Value::Array(items) => {
                for item in items {
                    let Value::Object(inner) = item else { continue };
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(&format!("{head_indent}[[{}]]\n", toml_path(&p)));
                    toml_table(&p, inner, out)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_like_yaml_v2() {
        let v = json!({
            "name": "web",
            "port": 8080,
            "ratio": 0.5,
            "big": 1e8,
            "frac": 1234567.5,
            "on": true,
            "nothing": null,
            "tags": ["a", "b"],
            "empty": [],
            "meta": {"version": "1.2", "count": "10", "yes": "yes", "note": "a: b", "blank": "", "dash": "- x"},
            "servers": [{"host": "a", "port": 1}, {"host": "b", "port": 2}],
            "nested": [[1, 2], []],
            "text": "line1\nline2",
            "key10": 1,
            "key9": 2,
        });
        let want = r#"big: 100000000
empty: []
frac: 1.2345675e+06
key9: 2
key10: 1
meta:
  blank: ""
  count: "10"
  dash: '- x'
  note: 'a: b'
  version: "1.2"
  "yes": "yes"
name: web
nested:
- - 1
  - 2
- []
nothing: null
"on": true
port: 8080
ratio: 0.5
servers:
- host: a
  port: 1
- host: b
  port: 2
tags:
- a
- b
text: |-
  line1
  line2"#;
        assert_eq!(to_yaml(&v), want);
        assert_eq!(to_yaml(&json!({})), "{}");
        // Long values fold at a space past column 80, continuing two past the key's indent.
        let long = "word ".repeat(20).trim().to_string();
        assert_eq!(
            to_yaml(&json!({"k": long, "q": format!("{long}: x")})),
            format!(
                "k: {}\n  {}\nq: '{}\n  {}: x'",
                "word ".repeat(16).trim_end(),
                "word ".repeat(4).trim_end(),
                "word ".repeat(16).trim_end(),
                "word ".repeat(4).trim_end()
            )
        );
        assert_eq!(
            to_yaml(&json!({"d": "2024-01-02", "t": "12:30", "s": "x#y", "h": "a #b"})),
            "d: \"2024-01-02\"\nh: 'a #b'\ns: x#y\nt: \"12:30\""
        );
    }

    #[test]
    fn go_float_formatting() {
        let cases = [
            (0.5, "0.5"),
            (1.0, "1"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
        ];
        for (f, want) in cases {
            assert_eq!(go_float_g(f), want, "{f}");
        }
    }

    #[test]
    fn toml_like_burntsushi() {
        let v = json!({
            "title": "cfg",
            "port": 8080,
            "ratio": 1.0,
            "tags": ["a", "b"],
            "skip": null,
            "db": {"host": "x", "replica": {"host": "y"}, "ports": [1, 2]},
            "admin": {"user": "root"},
            "servers": [{"name": "a"}, {"name": "b"}],
            "odd key": "q\"uote",
        });
        let want = r#""odd key" = "q\"uote"
port = 8080
ratio = 1.0
tags = ["a", "b"]
title = "cfg"

[admin]
  user = "root"

[db]
  host = "x"
  ports = [1, 2]
  [db.replica]
    host = "y"

[[servers]]
  name = "a"

[[servers]]
  name = "b""#;
        assert_eq!(to_toml(&v).unwrap(), want);
        assert!(to_toml(&json!([1])).is_err());
        assert_eq!(to_toml(&json!({})).unwrap(), "");
    }
}
