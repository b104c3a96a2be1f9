//! Parses a query name into what it asks for. Pure: no state, no IO.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The domain itself (`consul.`).
    Apex,
    /// `[<tag>.]<service>.service[.<dc>]` or `_<service>._<tag|tcp>[.service][.<dc>]`.
    Service { name: String, tag: Option<String>, dc: Option<String> },
    /// `<node>.node[.<dc>]`.
    Node { name: String, dc: Option<String> },
    /// `<hex>.addr[.<dc>]`.
    Addr { ip: IpAddr, dc: Option<String> },
    /// `<d>.<c>.<b>.<a>.in-addr.arpa.` or the 32 reversed nibbles of an IPv6 address under
    /// `ip6.arpa.`
    Ptr(IpAddr),
    /// `<query>.query[.<dc>]` or `_<query>._<proto>.query[.<dc>]`: a prepared query by name or ID.
    Query { name: String, dc: Option<String> },
    /// Inside the domain but not a name we know: NXDOMAIN.
    Unknown,
    /// Outside the domain: forwarded to a recursor, if any.
    Outside,
}

/// Lowercases and makes fully qualified (`consul` → `consul.`).
pub fn normalize_domain(domain: &str) -> String {
    let d = domain.trim().trim_start_matches('.').to_ascii_lowercase();
    if d.ends_with('.') {
        d
    } else {
        format!("{d}.")
    }
}

/// `qname` in any case, with or without the trailing dot; `domain` as from [`normalize_domain`].
pub fn parse(qname: &str, domain: &str) -> Lookup {
    let mut q = qname.to_ascii_lowercase();
    if !q.ends_with('.') {
        q.push('.');
    }
    if let Some(rest) = q.strip_suffix(".in-addr.arpa.") {
        return match parse_reverse_v4(rest) {
            Some(ip) => Lookup::Ptr(IpAddr::V4(ip)),
            None => Lookup::Outside,
        };
    }
    if let Some(rest) = q.strip_suffix(".ip6.arpa.") {
        return match parse_reverse_v6(rest) {
            Some(ip) => Lookup::Ptr(IpAddr::V6(ip)),
            None => Lookup::Outside,
        };
    }
    if q == domain {
        return Lookup::Apex;
    }
    let Some(rest) = q.strip_suffix(&format!(".{domain}")) else {
        return Lookup::Outside;
    };
    let labels: Vec<&str> = rest.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return Lookup::Unknown;
    }
    // RFC 2782: _<service>._<tag|tcp>[.service][.<dc>]
    if labels.len() >= 2 && labels[0].starts_with('_') && labels[1].starts_with('_') && labels.get(2) != Some(&"query")
    {
        let dc = match &labels[2..] {
            [] | ["service"] => None,
            [dc] | ["service", dc] => Some(dc.to_string()),
            _ => return Lookup::Unknown,
        };
        let name = &labels[0][1..];
        let tag = &labels[1][1..];
        if name.is_empty() || tag.is_empty() {
            return Lookup::Unknown;
        }
        let tag = if tag == "tcp" { None } else { Some(tag.to_string()) };
        return Lookup::Service { name: name.to_string(), tag, dc };
    }
    let n = labels.len();
    let (kind_at, dc) = if is_kind(labels[n - 1]) {
        (n - 1, None)
    } else if n >= 2 && is_kind(labels[n - 2]) {
        (n - 2, Some(labels[n - 1].to_string()))
    } else {
        return Lookup::Unknown;
    };
    let parts = &labels[..kind_at];
    match (labels[kind_at], parts) {
        ("service", [name]) => Lookup::Service { name: name.to_string(), tag: None, dc },
        ("service", [tag, name]) => Lookup::Service { name: name.to_string(), tag: Some(tag.to_string()), dc },
        ("node", parts) if !parts.is_empty() => Lookup::Node { name: parts.join("."), dc },
        // Consul: `_<name>._<proto>.query` is an RFC 2782 spelling whose last label is ignored.
        ("query", [first, .., last]) if first.starts_with('_') && last.starts_with('_') => {
            let name = parts[..parts.len() - 1].join(".");
            Lookup::Query { name: name[1..].to_string(), dc }
        }
        ("query", parts) if !parts.is_empty() => Lookup::Query { name: parts.join("."), dc },
        ("addr", [hex]) => match parse_hex_ip(hex) {
            Some(ip) => Lookup::Addr { ip, dc },
            None => Lookup::Unknown,
        },
        _ => Lookup::Unknown,
    }
}

fn is_kind(label: &str) -> bool {
    matches!(label, "service" | "node" | "addr" | "query")
}

/// `b.a.9.8. ... .0.ip6.arpa.` without the suffix: exactly 32 single hex nibbles, least
/// significant first.
fn parse_reverse_v6(rest: &str) -> Option<Ipv6Addr> {
    let nibbles: Vec<u8> = rest
        .split('.')
        .map(|l| if l.len() == 1 { u8::from_str_radix(l, 16).ok() } else { None })
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles.rchunks(2).enumerate() {
        // `rchunks` walks from the most significant end: [low, high] of byte i.
        bytes[i] = (pair[1] << 4) | pair[0];
    }
    Some(Ipv6Addr::from(bytes))
}

/// The reverse-lookup name of an address (`4.3.2.1.in-addr.arpa.`, `...ip6.arpa.`).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(73);
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa.");
            s
        }
    }
}

fn parse_reverse_v4(rest: &str) -> Option<Ipv4Addr> {
    let mut octets: Vec<u8> = rest.split('.').map(|l| l.parse().ok()).collect::<Option<_>>()?;
    if octets.len() != 4 {
        return None;
    }
    octets.reverse();
    Some(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
}

fn parse_hex_ip(hex: &str) -> Option<IpAddr> {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect::<Option<_>>()?;
    match bytes.len() {
        4 if hex.len() == 8 => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
        16 if hex.len() == 32 => {
            let a: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

/// The `<hex>` label of an `.addr.` name.
pub fn hex_ip(ip: IpAddr) -> String {
    let bytes = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, tag: Option<&str>, dc: Option<&str>) -> Lookup {
        Lookup::Service { name: name.into(), tag: tag.map(Into::into), dc: dc.map(Into::into) }
    }

    #[test]
    fn table() {
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        let cases: Vec<(&str, Lookup)> = vec![
            ("consul.", Lookup::Apex),
            ("web.service.consul.", svc("web", None, None)),
            ("WEB.Service.Consul", svc("web", None, None)),
            ("web.service.dc1.consul.", svc("web", None, Some("dc1"))),
            ("v1.web.service.consul.", svc("web", Some("v1"), None)),
            ("v1.web.service.dc2.consul.", svc("web", Some("v1"), Some("dc2"))),
            ("_web._tcp.service.consul.", svc("web", None, None)),
            ("_web._tcp.consul.", svc("web", None, None)),
            ("_web._v1.service.consul.", svc("web", Some("v1"), None)),
            ("_web._v1.service.dc1.consul.", svc("web", Some("v1"), Some("dc1"))),
            ("_web._tcp.dc1.consul.", svc("web", None, Some("dc1"))),
            ("node1.node.consul.", Lookup::Node { name: "node1".into(), dc: None }),
            ("node1.node.dc1.consul.", Lookup::Node { name: "node1".into(), dc: Some("dc1".into()) }),
            ("7f000001.addr.consul.", Lookup::Addr { ip: v4(127, 0, 0, 1), dc: None }),
            ("0a000102.addr.dc1.consul.", Lookup::Addr { ip: v4(10, 0, 1, 2), dc: Some("dc1".into()) }),
            (
                "20010db8000000000000000000000001.addr.consul.",
                Lookup::Addr { ip: "2001:db8::1".parse().unwrap(), dc: None },
            ),
            ("zz000001.addr.consul.", Lookup::Unknown),
            ("7f0001.addr.consul.", Lookup::Unknown),
            ("4.3.2.1.in-addr.arpa.", Lookup::Ptr(v4(1, 2, 3, 4))),
            (
                "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
                Lookup::Ptr("2001:db8::1".parse().unwrap()),
            ),
            ("1.0.0.2.ip6.arpa.", Lookup::Outside),
            ("10.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", Lookup::Outside),
            ("db.query.consul.", Lookup::Query { name: "db".into(), dc: None }),
            ("db.query.dc2.consul.", Lookup::Query { name: "db".into(), dc: Some("dc2".into()) }),
            ("_db._tcp.query.consul.", Lookup::Query { name: "db".into(), dc: None }),
            ("query.consul.", Lookup::Unknown),
            ("example.com.", Lookup::Outside),
            ("consul.com.", Lookup::Outside),
            ("foo.consul.", Lookup::Unknown),
            ("a.b.c.service.consul.", Lookup::Unknown),
            ("service.consul.", Lookup::Unknown),
            ("foo.bar.consul.", Lookup::Unknown),
            ("_web._tcp.a.b.consul.", Lookup::Unknown),
        ];
        for (q, want) in cases {
            assert_eq!(parse(q, "consul."), want, "{q}");
        }
    }

    #[test]
    fn other_domain_and_hex() {
        assert_eq!(normalize_domain("Example"), "example.");
        assert_eq!(parse("web.service.example.", "example."), svc("web", None, None));
        assert_eq!(parse("web.service.consul.", "example."), Lookup::Outside);
        assert_eq!(hex_ip("127.0.0.1".parse().unwrap()), "7f000001");
        assert_eq!(hex_ip("2001:db8::1".parse().unwrap()), "20010db8000000000000000000000001");
    }

    #[test]
    fn reverse_names_round_trip() {
        for ip in ["10.1.2.3", "2001:db8::1", "fe80::1:abcd", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(parse(&reverse_name(ip), "consul."), Lookup::Ptr(ip), "{ip}");
        }
        assert_eq!(reverse_name("10.1.2.3".parse().unwrap()), "3.2.1.10.in-addr.arpa.");
    }
}
