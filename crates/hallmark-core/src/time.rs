//! Instants as people read them: RFC 3339 in UTC, and "in 23h 59m".
//!
//! Hallmark stores every instant as unix seconds (see [`crate::now_unix`]);
//! these turn one into text for output, never the other way round.

/// `secs` (unix seconds) as RFC 3339 in UTC, e.g. `2026-11-22T00:00:00Z`.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
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

/// The proleptic Gregorian date of a day number (days since 1970-01-01),
/// after Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
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
    }
}
