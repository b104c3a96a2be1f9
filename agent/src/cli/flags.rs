//! Command-line flags the way Go's `flag` package (and so Consul) reads them: one or two dashes,
//! `-x=v` or `-x v`, bare booleans, and parsing stops at the first non-flag argument, at a lone
//! `-`, or after `--`. Everything after that is positional, even if it starts with a dash
//! (`kv put key -value`, `lock prefix cmd -flag`).

use std::collections::HashMap;
use std::time::Duration;

/// Flags every HTTP command accepts (Consul's `ClientFlags` + `ServerFlags`).
pub(super) const HTTP_VALUES: &[&str] = &[
    "http-addr",
    "token",
    "token-file",
    "datacenter",
    "ca-file",
    "ca-path",
    "client-cert",
    "client-key",
    "tls-server-name",
    "partition",
    "namespace",
];
pub(super) const HTTP_BOOLS: &[&str] = &["stale"];

#[derive(Debug, PartialEq, Eq)]
pub(super) enum FlagError {
    /// `-h`, `-help` or `--help`: print the usage, exit 0.
    Help,
    /// A malformed or unknown flag: the message Go's `flag` package prints.
    Bad(String),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Parsed {
    vals: HashMap<String, Vec<String>>,
    /// Positional arguments after the flags.
    pub args: Vec<String>,
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Parses `args` against the command's own flags plus the HTTP flags.
pub(super) fn parse(args: &[String], bools: &[&str], values: &[&str]) -> Result<Parsed, FlagError> {
    let mut p = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a.len() < 2 || !a.starts_with('-') {
            break;
        }
        let mut name = &a[1..];
        if let Some(rest) = name.strip_prefix('-') {
            if rest.is_empty() {
                i += 1; // "--" ends the flags and is consumed
                break;
            }
            name = rest;
        }
        if name.is_empty() || name.starts_with('-') || name.starts_with('=') {
            return Err(FlagError::Bad(format!("bad flag syntax: {a}")));
        }
        i += 1;
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (name, None),
        };
        if bools.contains(&name) || HTTP_BOOLS.contains(&name) {
            let v = match inline {
                None => true,
                Some(v) => parse_bool(v)
                    .ok_or_else(|| FlagError::Bad(format!("invalid boolean value {v:?} for -{name}: parse error")))?,
            };
            p.vals.entry(name.to_string()).or_default().push(v.to_string());
        } else if values.contains(&name) || HTTP_VALUES.contains(&name) {
            let v = match inline {
                Some(v) => v.to_string(),
                None => {
                    let Some(v) = args.get(i) else {
                        return Err(FlagError::Bad(format!("flag needs an argument: -{name}")));
                    };
                    i += 1;
                    v.clone()
                }
            };
            p.vals.entry(name.to_string()).or_default().push(v);
        } else if name == "h" || name == "help" {
            return Err(FlagError::Help);
        } else {
            return Err(FlagError::Bad(format!("flag provided but not defined: -{name}")));
        }
    }
    p.args = args[i..].to_vec();
    Ok(p)
}

impl Parsed {
    /// A boolean flag: its last value, false when absent.
    pub fn bool(&self, name: &str) -> bool {
        self.str(name) == Some("true")
    }

    /// A boolean flag with a default other than false (`-shell`).
    pub fn bool_or(&self, name: &str, default: bool) -> bool {
        match self.str(name) {
            Some(v) => v == "true",
            None => default,
        }
    }

    /// A value flag: its last value.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.vals.get(name).and_then(|v| v.last()).map(String::as_str)
    }

    /// A repeatable value flag: every value in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.vals.get(name).cloned().unwrap_or_default()
    }

    pub fn u64(&self, name: &str) -> Result<Option<u64>, String> {
        match self.str(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| format!("invalid value {v:?} for flag -{name}: parse error")),
        }
    }

    pub fn i64(&self, name: &str) -> Result<Option<i64>, String> {
        match self.str(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| format!("invalid value {v:?} for flag -{name}: parse error")),
        }
    }

    pub fn duration(&self, name: &str) -> Result<Option<Duration>, String> {
        match self.str(name) {
            None => Ok(None),
            Some(v) => api::duration::parse(v)
                .map(Some)
                .map_err(|_| format!("invalid value {v:?} for flag -{name}: parse error")),
        }
    }

    /// `k=v` pairs of a repeatable map flag (`-meta`, `-node-meta`).
    pub fn map(&self, name: &str) -> Result<Vec<(String, String)>, String> {
        self.all(name)
            .into_iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => Ok((k.to_string(), v.to_string())),
                None => Err(format!("invalid value {kv:?} for flag -{name}: missing '=' after key")),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn single_and_double_dash_with_or_without_equals() {
        let p = parse(
            &s(&["-recurse", "--separator", ":", "-http-addr=127.0.0.1:8571", "--stale=false", "foo"]),
            &["recurse"],
            &["separator"],
        )
        .unwrap();
        assert!(p.bool("recurse"));
        assert_eq!(p.str("separator"), Some(":"));
        assert_eq!(p.str("http-addr"), Some("127.0.0.1:8571"));
        assert_eq!(p.str("stale"), Some("false"));
        assert!(!p.bool("stale"));
        assert_eq!(p.args, s(&["foo"]));
    }

    #[test]
    fn parsing_stops_at_first_positional_dash_or_double_dash() {
        let p = parse(&s(&["key", "-recurse"]), &["recurse"], &[]).unwrap();
        assert!(!p.bool("recurse"));
        assert_eq!(p.args, s(&["key", "-recurse"]));
        let p = parse(&s(&["-recurse", "-", "x"]), &["recurse"], &[]).unwrap();
        assert_eq!(p.args, s(&["-", "x"]));
        let p = parse(&s(&["--", "-recurse"]), &["recurse"], &[]).unwrap();
        assert_eq!(p.args, s(&["-recurse"]));
    }

    #[test]
    fn errors_like_go() {
        assert_eq!(parse(&s(&["-nope"]), &[], &[]), Err(FlagError::Bad("flag provided but not defined: -nope".into())));
        assert_eq!(
            parse(&s(&["-separator"]), &[], &["separator"]),
            Err(FlagError::Bad("flag needs an argument: -separator".into()))
        );
        assert_eq!(
            parse(&s(&["-recurse=maybe"]), &["recurse"], &[]),
            Err(FlagError::Bad("invalid boolean value \"maybe\" for -recurse: parse error".into()))
        );
        assert_eq!(parse(&s(&["---x"]), &[], &[]), Err(FlagError::Bad("bad flag syntax: ---x".into())));
        assert_eq!(parse(&s(&["-h"]), &[], &[]), Err(FlagError::Help));
        assert_eq!(parse(&s(&["--help"]), &[], &[]), Err(FlagError::Help));
    }

    #[test]
    fn repeated_and_typed_values() {
        let p = parse(
            &s(&["-tag", "a", "-tag=b", "-port", "80", "-meta", "k=v", "-flags=x"]),
            &[],
            &["tag", "port", "meta", "flags"],
        )
        .unwrap();
        assert_eq!(p.all("tag"), s(&["a", "b"]));
        assert_eq!(p.u64("port"), Ok(Some(80)));
        assert_eq!(p.map("meta"), Ok(vec![("k".into(), "v".into())]));
        assert!(p.u64("flags").is_err());
        assert_eq!(p.u64("absent"), Ok(None));
        assert!(p.bool_or("shell", true));
    }
}
