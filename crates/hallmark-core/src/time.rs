//! Instants as people read and write them: RFC 3339 in UTC, and "in 23h 59m".
//!
//! Hallmark stores every instant as unix seconds (see [`crate::now_unix`]).
//! The calendar is the `time` crate's: it knows that February has no 31st.

use ::time::OffsetDateTime;
use ::time::format_description::well_known::Rfc3339;

/// `secs` (unix seconds) as RFC 3339 in UTC, e.g. `2026-11-22T00:00:00Z`;
/// an instant beyond the calendar (year 10 000 on) as its unix seconds.
pub fn rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{secs}"))
}

/// Parses an RFC 3339 timestamp (`2026-12-31T00:00:00Z`, or with an offset
/// such as `+02:00`) into unix seconds; a fraction of a second is dropped.
pub fn parse_rfc3339(text: &str) -> Result<i64, Rfc3339Error> {
    OffsetDateTime::parse(text.trim(), &Rfc3339)
        .map(OffsetDateTime::unix_timestamp)
        .map_err(|source| Rfc3339Error { text: text.to_owned(), source })
}

/// A text that is not an RFC 3339 time.
#[derive(Debug, thiserror::Error)]
#[error("`{text}` is not an RFC 3339 time ({source}), e.g. 2026-12-31T00:00:00Z")]
pub struct Rfc3339Error {
    /// The text given.
    pub text: String,
    /// What the calendar found wrong.
    #[source]
    pub source: ::time::error::Parse,
}

/// How far `at` is from `now`, to the minute: `in 23h 59m`, `5m ago`,
/// `in 40s`, `now`. Days are shown from two days on (`in 3d 4h`).
pub fn relative(at: i64, now: i64) -> String {
    let delta = at.saturating_sub(now);
    if delta == 0 {
        return "now".to_owned();
    }
    let span = span(delta.unsigned_abs());
    if delta > 0 { format!("in {span}") } else { format!("{span} ago") }
}

/// `rfc3339(at)` followed by the relative time in parentheses.
pub fn rfc3339_relative(at: i64, now: i64) -> String {
    format!("{} ({})", rfc3339(at), relative(at, now))
}

fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, _) => format!("{h}h {m}m"),
        (1, _, _) => format!("{}h {m}m", 24 + h),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_instants_and_spans() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_305_600), "2026-11-22T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(relative(100 + 86_340, 100), "in 23h 59m");
        assert_eq!(relative(100, 100 + 300), "5m ago");
        assert_eq!(relative(140, 100), "in 40s");
        assert_eq!(relative(100, 100), "now");
        assert_eq!(relative(100 + 3 * 86_400 + 4 * 3600, 100), "in 3d 4h");
        assert_eq!(relative(100 + 86_400 + 3600, 100), "in 25h 0m");
        assert!(relative(i64::MAX, i64::MIN).starts_with("in "), "saturates instead of overflowing");
        assert_eq!(rfc3339(i64::MAX), format!("@{}", i64::MAX));
    }

    #[test]
    fn parses_what_it_formats_and_refuses_impossible_dates() {
        for secs in [0, 951_782_400, 1_795_305_600, -1] {
            assert_eq!(parse_rfc3339(&rfc3339(secs)).unwrap(), secs);
        }
        let midnight = parse_rfc3339("2026-12-31T00:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2026-12-31T02:00:00+02:00").unwrap(), midnight);
        assert_eq!(parse_rfc3339("2026-12-31T00:00:00.75Z").unwrap(), midnight);
        for bad in
            ["2026-02-31T00:00:00Z", "2027-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-12-31", "tomorrow", ""]
        {
            let err = parse_rfc3339(bad).unwrap_err().to_string();
            assert!(err.contains("RFC 3339"), "{bad}: {err}");
        }
    }
}
