//! Fuzz targets: each is a plain `fn(&[u8])` over one input path of the agent or of `template`,
//! which must not panic and must not hang on any input (a panic is a finding; so is an answer
//! that breaks the target's own assertions). Two engines run the same functions: the mutation
//! loop of the `fuzz` binary (stable Rust, no installs) and libFuzzer (`fuzz-libfuzzer`, built
//! with the sanitizer-coverage flags by `scripts/fuzz.sh`).
//!
//! A target may report what its input did with [`feature`] (a route and a status, an error
//! kind): the stable engine keeps inputs that show a feature it has not seen, its stand-in for
//! coverage.
//!
//! Knows the product only through its public functions; it changes nothing in it.

pub mod gen;
pub mod mutate;
pub mod targets;

use std::cell::RefCell;

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    /// Tokens the mutator inserts, on top of [`COMMON_DICT`].
    pub dict: &'static [&'static str],
    /// The longest input the engines try.
    pub max_len: usize,
}

/// Every target. Adding one is one line here (and a folder of seed inputs under
/// `fuzz/corpus/<name>/`).
pub const TARGETS: &[Target] = &[
    Target { name: "http_request", run: targets::http::http_request, dict: targets::http::DICT, max_len: 4096 },
    Target { name: "query_string", run: targets::http::query_string, dict: targets::http::QUERY_DICT, max_len: 1024 },
    Target { name: "filter", run: targets::filter::filter, dict: targets::filter::DICT, max_len: 1024 },
    Target { name: "json_shapes", run: targets::json::json_shapes, dict: targets::json::DICT, max_len: 4096 },
    Target { name: "config", run: targets::json::config, dict: targets::json::CONFIG_DICT, max_len: 4096 },
    Target {
        name: "template_parse",
        run: targets::template::template_parse,
        dict: targets::template::DICT,
        max_len: 4096,
    },
    Target {
        name: "template_config",
        run: targets::template::template_config,
        dict: targets::template::HCL_DICT,
        max_len: 2048,
    },
    Target { name: "dns_message", run: targets::dns::dns_message, dict: &[], max_len: 1024 },
];

/// Tokens worth inserting into any text input.
pub const COMMON_DICT: &[&str] = &[
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "%",
    "%00",
    "%zz",
    "%ff",
    "\r\n",
    "\n",
    "\0",
    " ",
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    ":",
    ",",
    "=",
    "&",
    "/",
    "..",
    "-1",
    "0",
    "1",
    "9223372036854775807",
    "18446744073709551616",
    "1e309",
    "-0",
    "null",
    "true",
    "\u{fffd}",
    "\u{1F600}",
    "é",
];

pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

thread_local! {
    static FEATURES: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Records one thing this input did: a route and a status, a kind of error, a branch taken.
pub fn feature(v: u64) {
    FEATURES.with(|f| f.borrow_mut().push(v));
}

/// What the last input did, and starts afresh for the next one.
pub fn take_features() -> Vec<u64> {
    FEATURES.with(|f| std::mem::take(&mut *f.borrow_mut()))
}

/// A 64-bit mix (splitmix64's finalizer).
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

/// A stable hash of bytes (FNV-1a, then mixed): crash file names and feature values.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
    }
    mix(h)
}

/// A feature for an error message: its first words, up to the first that is not a plain word,
/// so that `unexpected "x" at position 3` and `unexpected "y" at position 9` are one kind of
/// error, and so are `Invalid state abc` and `Invalid state d`.
pub fn error_kind(message: &str) -> u64 {
    let plain = |w: &&str| {
        let mut c = w.chars();
        c.next().is_some_and(|c| c.is_ascii_alphabetic()) && c.all(|c| c.is_ascii_lowercase()) && w.len() <= 12
    };
    let words: Vec<&str> = message.split_whitespace().take_while(plain).take(2).collect();
    hash(words.join(" ").as_bytes())
}
