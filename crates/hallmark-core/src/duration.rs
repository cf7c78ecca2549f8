//! Durations as operators write them (`90s`, `10m`, `1h30m`, `7d`) and TTLs.

use std::fmt;
use std::time::Duration;

/// Why a duration or TTL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TtlError {
    /// Not a duration like `90s`, `10m`, `1h30m` or `7d`.
    #[error("invalid duration `{0}`: expected a number with a unit (s, m, h, d), e.g. `10m` or `1h30m`")]
    Parse(String),
    /// The duration is zero.
    #[error("invalid TTL `{0}`: must be greater than zero")]
    Zero(String),
    /// The duration is absurdly long.
    #[error("invalid duration `{0}`: longer than 100 years")]
    TooLong(String),
}

const MAX_SECONDS: u64 = 100 * 365 * 86_400;

/// Parses `90s`, `10m`, `1h30m`, `7d`, or plain seconds (`600`).
pub fn parse_duration(s: &str) -> Result<Duration, TtlError> {
    let err = || TtlError::Parse(s.to_owned());
    let t = s.trim();
    if t.is_empty() {
        return Err(err());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = t.parse().map_err(|_| err())?;
        return check_max(secs, s);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    let mut saw_unit = false;
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(err()),
        };
        let n: u64 = num.parse().map_err(|_| err())?;
        total =
            n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(|| TtlError::TooLong(s.to_owned()))?;
        num.clear();
        saw_unit = true;
    }
    if !num.is_empty() || !saw_unit {
        return Err(err());
    }
    check_max(total, s)
}

fn check_max(secs: u64, s: &str) -> Result<Duration, TtlError> {
    if secs > MAX_SECONDS {
        return Err(TtlError::TooLong(s.to_owned()));
    }
    Ok(Duration::from_secs(secs))
}

/// Formats whole seconds the way [`parse_duration`] reads them (`1h30m`, `45s`).
pub fn format_duration(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= len {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
        }
    }
    out
}

/// A credential lifetime: whole seconds, never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(u64);

impl Ttl {
    /// The shortest TTL: one second.
    pub const MIN: Ttl = Ttl(1);

    /// A TTL from seconds; zero is refused.
    pub fn from_secs(secs: u64) -> Result<Self, TtlError> {
        if secs == 0 {
            return Err(TtlError::Zero("0s".to_owned()));
        }
        check_max(secs, &format!("{secs}s"))?;
        Ok(Self(secs))
    }

    /// Parses a TTL as operators write it; zero is refused.
    pub fn parse(s: &str) -> Result<Self, TtlError> {
        let d = parse_duration(s)?;
        if d.as_secs() == 0 {
            return Err(TtlError::Zero(s.to_owned()));
        }
        Ok(Self(d.as_secs()))
    }

    /// Seconds.
    pub fn secs(self) -> u64 {
        self.0
    }

    /// As a [`Duration`].
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.duration()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("10m").unwrap().as_secs(), 600);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("7d").unwrap().as_secs(), 604_800);
        assert_eq!(parse_duration("600").unwrap().as_secs(), 600);
        for bad in ["", "m", "10", "10x", "1h30", "-5m", "1.5h", "h1", "99999999999999999999s", "36600d"] {
            if bad == "10" {
                continue;
            }
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(Ttl::parse("0s").is_err());
        assert!(Ttl::parse("0").is_err());
        assert_eq!(Ttl::parse("1h").unwrap().secs(), 3600);
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(Ttl::parse("1h30m").unwrap().to_string(), "1h30m");
    }
}
