//! Times given on the command line: expiries (from now) and points in the past.

use anyhow::Context;
use hallmark_core::parse_duration;

/// Parses a point in the past: a duration ago, unix seconds, or `YYYY-MM-DDTHH:MM:SSZ`.
pub(super) fn parse_past(s: &str, now: i64) -> anyhow::Result<i64> {
    let t = s.trim();
    if (t.len() >= 9 && t.bytes().all(|b| b.is_ascii_digit())) || t.ends_with('Z') {
        return parse_expiry(t, now);
    }
    let d = parse_duration(t).map_err(|_| {
        anyhow::anyhow!("invalid time `{s}`: use a duration ago (24h), unix seconds, or 2026-12-31T00:00:00Z")
    })?;
    Ok(now - i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2))
}

/// Parses `--expires`: a duration from now, unix seconds, or `YYYY-MM-DDTHH:MM:SSZ`.
pub fn parse_expiry(s: &str, now: i64) -> anyhow::Result<i64> {
    let t = s.trim();
    if t.len() >= 9 && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().with_context(|| format!("invalid time `{s}`"));
    }
    if let Some(ts) = parse_rfc3339_utc(t) {
        return Ok(ts);
    }
    let d = parse_duration(t.trim_start_matches('+')).map_err(|_| {
        anyhow::anyhow!("invalid time `{s}`: use a duration (48h), unix seconds, or 2026-12-31T00:00:00Z")
    })?;
    Ok(now + i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2))
}

fn parse_rfc3339_utc(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), as in Howard Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec)
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
    }
}
