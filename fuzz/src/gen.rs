//! Structured values from raw bytes, so that most inputs of a JSON target are JSON: text that
//! parses is used as it is; anything else is read as a recipe for a value (each byte picks the
//! next kind, length or dictionary word), with keys drawn from the target's field names in the
//! spellings clients send (`Name`, `name`, `enable_tag_override`).

use serde_json::{Map, Number, Value};

/// Reads choices from bytes; past the end every choice is 0.
pub struct Recipe<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Recipe<'a> {
    pub fn new(data: &'a [u8]) -> Recipe<'a> {
        Recipe { data, pos: 0 }
    }

    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.byte() as usize % n
        }
    }

    pub fn u64(&mut self) -> u64 {
        (0..8).fold(0u64, |acc, _| acc << 8 | self.byte() as u64)
    }

    pub fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// Up to `max` raw bytes as (lossy) text.
    pub fn text(&mut self, max: usize) -> String {
        let n = self.below(max + 1);
        let start = self.pos.min(self.data.len());
        let end = (start + n).min(self.data.len());
        self.pos += n;
        String::from_utf8_lossy(&self.data[start..end]).into_owned()
    }
}

const STRINGS: &[&str] = &[
    "",
    "web",
    "10s",
    "1m30s",
    "-5ms",
    "0",
    "1h",
    "500",
    "passing",
    "warning",
    "critical",
    "maintenance",
    "set",
    "get",
    "cas",
    "lock",
    "unlock",
    "delete",
    "delete-tree",
    "release",
    "127.0.0.1",
    "::1",
    "10.0.0.1:8080",
    "http://127.0.0.1:1/h",
    "a/b/c",
    "node1",
    "dc1",
    "dc2",
    "true",
    "1e3",
    "9999999999999999999",
    "ü",
    "\u{0}",
];

/// The spellings a client may use for `key`.
fn spelling(key: &str, choice: u8) -> String {
    match choice % 4 {
        0 | 1 => key.to_string(),
        2 => key.to_ascii_lowercase(),
        _ => {
            let mut out = String::new();
            for (i, c) in key.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            }
            out
        }
    }
}

/// A JSON value: `data` parsed if it is JSON text, else built from it as a recipe.
pub fn json(data: &[u8], keys: &[&str]) -> Value {
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        return v;
    }
    value(&mut Recipe::new(data), keys, 0)
}

/// A JSON object: as [`json`], wrapped under a key from `keys` unless it is an object already.
pub fn object(data: &[u8], keys: &[&str]) -> Map<String, Value> {
    match json(data, keys) {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            let key = keys.get(data.first().copied().unwrap_or(0) as usize % keys.len().max(1)).copied();
            m.insert(key.unwrap_or("x").to_string(), other);
            m
        }
    }
}

/// serde_json stops parsing at 128 levels: nothing deeper reaches the product from text.
const MAX_DEPTH: usize = 120;

pub fn value(r: &mut Recipe, keys: &[&str], depth: usize) -> Value {
    let kind = if depth >= MAX_DEPTH || r.done() { r.byte() % 6 } else { r.byte() % 10 };
    match kind {
        0 => Value::Null,
        1 => Value::Bool(r.byte() & 1 == 1),
        2 => Value::Number(Number::from(r.byte() as i64 - 16)),
        3 => match r.byte() % 5 {
            0 => Value::Number(Number::from(r.u64())),
            1 => Value::Number(Number::from(-((r.u64() >> 1) as i64))),
            2 => Number::from_f64(f64::from_bits(r.u64())).map_or(Value::Null, Value::Number),
            3 => Value::Number(Number::from(u64::MAX)),
            _ => Number::from_f64(r.byte() as f64 / 3.0).map_or(Value::Null, Value::Number),
        },
        4 => Value::String(STRINGS[r.below(STRINGS.len())].to_string()),
        5 => Value::String(r.text(24)),
        6 | 7 => {
            let n = r.below(5);
            Value::Object(
                (0..n)
                    .map(|_| {
                        let k = if keys.is_empty() || r.byte().is_multiple_of(8) {
                            r.text(8)
                        } else {
                            let i = r.below(keys.len());
                            spelling(keys[i], r.byte())
                        };
                        (k, value(r, keys, depth + 1))
                    })
                    .collect(),
            )
        }
        8 => {
            let n = r.below(4);
            Value::Array((0..n).map(|_| value(r, keys, depth + 1)).collect())
        }
        // Deep nesting on purpose: recursion over bodies must survive serde_json's limit.
        _ => {
            let n = r.below(MAX_DEPTH - depth);
            let mut v = Value::Null;
            for _ in 0..n {
                v = if r.byte() & 1 == 0 {
                    Value::Array(vec![v])
                } else {
                    Value::Object(Map::from_iter([("Checks".to_string(), v)]))
                };
            }
            v
        }
    }
}
