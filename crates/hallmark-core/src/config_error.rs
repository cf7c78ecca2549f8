//! The error every configuration parser reports.

/// Why a configuration was refused: one line naming the key and the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not valid TOML, or an unknown or mistyped key.
    #[error("config: {0}")]
    Toml(String),
    /// A value is out of range or malformed.
    #[error("config `{key}`: {msg}")]
    Value {
        /// The key.
        key: &'static str,
        /// What is wrong.
        msg: String,
    },
}
