//! Go's duration syntax (`time.ParseDuration` / `Duration.String`), which Consul uses on the wire
//! for `?wait=`, check intervals, session TTLs and every other duration in JSON.

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("time: invalid duration {0:?}")]
pub struct ParseDurationError(pub String);

/// Parses `"300ms"`, `"1m30s"`, `"15.0s"`, `"2h"`, `"0"`. A bare number other than 0 is an error,
/// as in Go. Negative durations are clamped to zero (Consul treats them as "not set").
pub fn parse(input: &str) -> Result<Duration, ParseDurationError> {
    let err = || ParseDurationError(input.to_string());
    let mut s = input.trim();
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut total_nanos: f64 = 0.0;
    while !s.is_empty() {
        let num_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
        if num_end == 0 {
            return Err(err());
        }
        let value: f64 = s[..num_end].parse().map_err(|_| err())?;
        s = &s[num_end..];
        let unit_end = s.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(s.len());
        let unit = &s[..unit_end];
        s = &s[unit_end..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        total_nanos += value * scale;
    }
    if negative || total_nanos <= 0.0 {
        return Ok(Duration::ZERO);
    }
    if total_nanos > u64::MAX as f64 {
        return Err(err());
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

/// Formats as Go's `Duration.String()`: `"0s"`, `"500ms"`, `"10s"`, `"1m30s"`, `"1h0m0s"`.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_fraction(nanos, 1_000_000));
    }
    let total_secs = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    let hours = total_secs / 3600;
    let mins = (total_secs % 3600) / 60;
    let secs = total_secs % 60;
    let secs_str = trim_fraction(secs as u128 * 1_000_000_000 + frac, 1_000_000_000);
    if hours > 0 {
        format!("{hours}h{mins}m{secs_str}s")
    } else if mins > 0 {
        format!("{mins}m{secs_str}s")
    } else {
        format!("{secs_str}s")
    }
}

fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.to_string().len() - 1;
    let frac_str = format!("{frac:0width$}");
    format!("{whole}.{}", frac_str.trim_end_matches('0'))
}

/// Serde helpers for fields that Consul sends as Go duration strings but that clients may send as
/// strings or as integer nanoseconds.
pub mod serde_go {
    use super::{format, parse};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        from_value(&v).map_err(serde::de::Error::custom)
    }

    /// Accepts `"10s"`, `10000000000` (nanoseconds), `null` (zero).
    pub fn from_value(v: &serde_json::Value) -> Result<Duration, String> {
        match v {
            serde_json::Value::Null => Ok(Duration::ZERO),
            serde_json::Value::String(s) if s.is_empty() => Ok(Duration::ZERO),
            serde_json::Value::String(s) => parse(s).map_err(|e| e.to_string()),
            serde_json::Value::Number(n) => {
                let nanos = n.as_f64().unwrap_or(0.0);
                Ok(Duration::from_nanos(nanos.max(0.0) as u64))
            }
            other => Err(format!("invalid duration {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("0", 0),
            ("10s", 10_000_000_000),
            ("15.0s", 15_000_000_000),
            ("0.001s", 1_000_000),
            ("60000ms", 60_000_000_000),
            ("1m", 60_000_000_000),
            ("1m30s", 90_000_000_000),
            ("2h", 7_200_000_000_000),
            ("1.5us", 1_500),
            ("250µs", 250_000),
            ("-5s", 0),
        ];
        for (text, nanos) in cases {
            assert_eq!(parse(text), Ok(Duration::from_nanos(nanos)), "{text}");
        }
        for bad in ["", "10", "s", "1x", "1.2.3s", "abc"] {
            assert!(parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (0, "0s"),
            (500, "500ns"),
            (1_500, "1.5µs"),
            (1_000_000, "1ms"),
            (1_500_000, "1.5ms"),
            (10_000_000_000, "10s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (15_500_000_000, "15.5s"),
        ];
        for (nanos, text) in cases {
            assert_eq!(format(Duration::from_nanos(nanos)), text);
        }
    }
}
