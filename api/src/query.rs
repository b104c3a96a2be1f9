//! Query options a client sends (`?index`, `?wait`, `?stale`...) and the metadata an agent answers
//! with (`X-Consul-Index`, `X-Consul-KnownLeader`, `X-Consul-LastContact`).

use std::time::Duration;

pub const HEADER_INDEX: &str = "X-Consul-Index";
pub const HEADER_KNOWN_LEADER: &str = "X-Consul-KnownLeader";
pub const HEADER_LAST_CONTACT: &str = "X-Consul-LastContact";
pub const HEADER_CONTENT_HASH: &str = "X-Consul-ContentHash";
pub const HEADER_EFFECTIVE_CONSISTENCY: &str = "X-Consul-Effective-Consistency";
pub const HEADER_TOKEN: &str = "X-Consul-Token";

/// Blocking waits are stretched by up to `wait / JITTER_FRACTION` so that many watchers do not
/// return at the same instant.
pub const JITTER_FRACTION: u32 = 16;
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
pub const MAX_WAIT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryOptions {
    pub index: u64,
    pub wait: Option<Duration>,
    pub stale: bool,
    pub consistent: bool,
    pub filter: Option<String>,
    pub datacenter: Option<String>,
    pub token: Option<String>,
}

impl QueryOptions {
    /// The query-string pairs these options add to a request.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.index > 0 {
            out.push(("index".into(), self.index.to_string()));
        }
        if let Some(w) = self.wait {
            out.push(("wait".into(), format!("{}ms", w.as_millis())));
        }
        if self.stale {
            out.push(("stale".into(), String::new()));
        }
        if self.consistent {
            out.push(("consistent".into(), String::new()));
        }
        if let Some(f) = &self.filter {
            out.push(("filter".into(), f.clone()));
        }
        if let Some(dc) = &self.datacenter {
            out.push(("dc".into(), dc.clone()));
        }
        out
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryMeta {
    pub last_index: u64,
    pub known_leader: bool,
    pub last_contact: Duration,
}

/// Percent-encodes a query-string component (RFC 3986 unreserved characters pass through).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-encodes a URL path, keeping `/` as the separator.
pub fn encode_path(s: &str) -> String {
    s.split('/').map(encode_component).collect::<Vec<_>>().join("/")
}

/// Builds `?a=b&c` from pairs; an empty value gives a bare flag.
pub fn query_string(pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                encode_component(k)
            } else {
                format!("{}={}", encode_component(k), encode_component(v))
            }
        })
        .collect();
    format!("?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_query_pairs() {
        let o = QueryOptions {
            index: 7,
            wait: Some(Duration::from_secs(60)),
            stale: true,
            filter: Some("Service == \"web\"".into()),
            ..Default::default()
        };
        assert_eq!(query_string(&o.to_pairs()), "?index=7&wait=60000ms&stale&filter=Service%20%3D%3D%20%22web%22");
        assert_eq!(query_string(&QueryOptions::default().to_pairs()), "");
    }

    #[test]
    fn paths_keep_slashes() {
        assert_eq!(encode_path("a b/c?d"), "a%20b/c%3Fd");
    }
}
