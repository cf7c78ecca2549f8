//! Times given on the command line: expiries (from now) and points in the past.

use anyhow::Context;
use hallmark_core::parse_duration;

/// Parses a point in the past: a duration ago, unix seconds, or an RFC 3339 time.
pub(super) fn parse_past(s: &str, now: i64) -> anyhow::Result<i64> {
    let t = s.trim();
    if is_unix_seconds(t) || looks_like_a_date(t) {
        return parse_expiry(t, now);
    }
    let d = parse_duration(t).map_err(|_| {
        anyhow::anyhow!("invalid time `{s}`: use a duration ago (24h), unix seconds, or 2026-12-31T00:00:00Z")
    })?;
    Ok(now - i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2))
}

/// Parses `--expires`: a duration from now, unix seconds, or an RFC 3339 time.
pub fn parse_expiry(s: &str, now: i64) -> anyhow::Result<i64> {
    let t = s.trim();
    if is_unix_seconds(t) {
        return t.parse().with_context(|| format!("invalid time `{s}`"));
    }
    if looks_like_a_date(t) {
        return Ok(hallmark_core::time::parse_rfc3339(t)?);
    }
    let d = parse_duration(t.trim_start_matches('+')).map_err(|_| {
        anyhow::anyhow!("invalid time `{s}`: use a duration (48h), unix seconds, or 2026-12-31T00:00:00Z")
    })?;
    Ok(now + i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2))
}

/// Nine digits or more: unix seconds (a duration always has a unit).
fn is_unix_seconds(t: &str) -> bool {
    t.len() >= 9 && t.bytes().all(|b| b.is_ascii_digit())
}

/// `YYYY-...`: meant as a date, so its errors are a date's.
fn looks_like_a_date(t: &str) -> bool {
    t.len() > 5 && t.bytes().take(4).all(|b| b.is_ascii_digit()) && t.as_bytes().get(4) == Some(&b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry() {
        assert_eq!(parse_expiry("48h", 1000).unwrap(), 1000 + 48 * 3600);
        assert_eq!(parse_expiry("+10m", 0).unwrap(), 600);
        assert_eq!(parse_expiry("1800000000", 0).unwrap(), 1_800_000_000);
        assert_eq!(parse_expiry("2026-11-22T00:00:00Z", 0).unwrap(), 1_795_305_600);
        assert_eq!(parse_expiry("1970-01-01T00:00:00Z", 0).unwrap(), 0);
        assert!(parse_expiry("tomorrow", 0).is_err());
        assert!(parse_expiry("2026-13-01T00:00:00Z", 0).is_err());
        assert_eq!(parse_expiry("2026-11-22T02:00:00+02:00", 0).unwrap(), 1_795_305_600);
        let err = parse_expiry("2026-02-31T00:00:00Z", 0).unwrap_err().to_string();
        assert!(err.contains("RFC 3339"), "31 February is refused: {err}");
        assert_eq!(parse_past("2026-11-22T00:00:00Z", 0).unwrap(), 1_795_305_600);
        assert_eq!(parse_past("1h", 7200).unwrap(), 3600);
    }
}
