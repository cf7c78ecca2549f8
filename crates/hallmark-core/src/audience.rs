//! JWT-SVID audiences: how many one request may name, and what each may be.
//! The agent checks them before asking the server, the server again, and
//! `hallmark helper` when it reads its configuration: the same rule.

/// Most audiences one JWT-SVID may carry.
pub const MAX_AUDIENCES: usize = 32;
/// Longest audience value, in bytes.
pub const MAX_AUDIENCE_LEN: usize = 512;

/// Why a list of audiences is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudienceError {
    /// No audience at all.
    #[error("at least one audience is required")]
    Missing,
    /// More than [`MAX_AUDIENCES`].
    #[error("at most {MAX_AUDIENCES} audiences (got {0})")]
    TooMany(usize),
    /// Empty, too long, or with a control character; the value is shown
    /// escaped and cut to 64 characters.
    #[error("audience `{0}` must be 1-{MAX_AUDIENCE_LEN} bytes with no control characters")]
    Invalid(String),
}

/// Checks one audience value.
pub fn check_audience(audience: &str) -> Result<(), AudienceError> {
    if audience.is_empty() || audience.len() > MAX_AUDIENCE_LEN || audience.chars().any(char::is_control) {
        let shown: String = audience.escape_debug().take(64).collect();
        return Err(AudienceError::Invalid(shown));
    }
    Ok(())
}

/// Checks the audiences of one JWT-SVID request: at least one, at most
/// [`MAX_AUDIENCES`], each valid.
pub fn check_audiences(audiences: &[String]) -> Result<(), AudienceError> {
    if audiences.is_empty() {
        return Err(AudienceError::Missing);
    }
    if audiences.len() > MAX_AUDIENCES {
        return Err(AudienceError::TooMany(audiences.len()));
    }
    audiences.iter().try_for_each(|a| check_audience(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences() {
        assert_eq!(check_audiences(&["db".into(), "spiffe://example.org/x".into()]), Ok(()));
        assert_eq!(check_audiences(&[]), Err(AudienceError::Missing));
        assert_eq!(check_audiences(&vec!["a".into(); 33]), Err(AudienceError::TooMany(33)));
        assert!(check_audiences(&vec!["a".into(); 32]).is_ok());
        assert!(matches!(check_audiences(&["a\0b".into()]), Err(AudienceError::Invalid(v)) if v == "a\\0b"));
        assert!(check_audience(&"x".repeat(512)).is_ok());
        let Err(AudienceError::Invalid(shown)) = check_audience(&"x".repeat(513)) else { panic!("too long") };
        assert_eq!(shown.len(), 64);
        assert!(check_audience("").is_err());
    }
}
