//! The `[people]` table: the OpenID Connect issuers people sign in with, and
//! the limits of the human track.

use std::sync::Arc;
use std::time::Duration;

use hallmark_core::{ConfigError, HumanIdTemplate, TrustDomain, Ttl};
use serde::Deserialize;

/// The `[people]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeopleConfig {
    /// `[[people.oidc_issuer]]`: where people sign in.
    #[serde(default)]
    pub oidc_issuer: Vec<PeopleIssuerConfig>,
    /// Lifetime of a break-glass certificate (default 15m, at most 1h).
    #[serde(default)]
    pub break_glass_ttl: Option<String>,
    /// Only people SCIM provisioned may sign in (default false: anyone the
    /// issuer vouches for, and policy allows, may; a person SCIM says left
    /// is refused either way).
    #[serde(default)]
    pub require_provisioned: bool,
}

/// One `[[people.oidc_issuer]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeopleIssuerConfig {
    /// A name for `hallmark login --issuer`, records and policies.
    pub name: String,
    /// The issuer, an https:// URL; the ID token's `iss` must be exactly this.
    pub issuer: String,
    /// The client id `hallmark login` is registered under (a public client
    /// using PKCE); the ID token's audience must include it.
    pub client_id: String,
    /// The SPIFFE ID template: `spiffe://TD/human/[...]/{email}` (or `{sub}`).
    pub spiffe_id: String,
    /// The JWKS URL, https://; without it, discovery's `jwks_uri`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// PEM file of the CA(s) trusted for the issuer's HTTPS; without it, the
    /// public web roots compiled into Hallmark.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// The scopes `hallmark login` asks for (default openid, email, profile, groups).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

/// Validated `[people]` settings.
#[derive(Debug, Clone)]
pub struct PeopleSettings {
    /// The issuers, by name.
    pub issuers: Vec<Arc<PeopleIssuer>>,
    /// Lifetime of a break-glass certificate.
    pub break_glass_ttl: Ttl,
    /// Only provisioned people may sign in.
    pub require_provisioned: bool,
}

/// A configured issuer for people, with its keys.
#[derive(Debug)]
pub struct PeopleIssuer {
    /// Its name.
    pub name: String,
    /// Its issuer URL.
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// How a verified token becomes a SPIFFE ID.
    pub template: HumanIdTemplate,
    /// The scopes the CLI asks for.
    pub scopes: Vec<String>,
    /// Its signing keys (fetched on first use, cached).
    pub keys: crate::jwks::IssuerKeys,
}

/// Longest break-glass lifetime: an emergency certificate is minutes long.
const MAX_BREAK_GLASS_SECS: u64 = 3600;

impl PeopleConfig {
    /// Checks every value.
    pub fn validate(&self, td: &TrustDomain) -> Result<PeopleSettings, ConfigError> {
        let break_glass_ttl = Ttl::parse(self.break_glass_ttl.as_deref().unwrap_or("15m"))
            .map_err(|e| ConfigError::Value { key: "people.break_glass_ttl", msg: e.to_string() })?;
        if break_glass_ttl.secs() > MAX_BREAK_GLASS_SECS {
            return Err(ConfigError::Value { key: "people.break_glass_ttl", msg: "must be at most 1h".into() });
        }
        let mut issuers: Vec<Arc<PeopleIssuer>> = Vec::new();
        for c in &self.oidc_issuer {
            let msg = |e: String| ConfigError::Value { key: "people.oidc_issuer", msg: format!("`{}`: {e}", c.name) };
            if c.name.is_empty()
                || c.name.len() > 64
                || !c.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(msg("name must be 1-64 letters, digits, `-` or `_`".into()));
            }
            if c.client_id.is_empty() {
                return Err(msg("client_id must not be empty".into()));
            }
            if issuers.iter().any(|o| o.issuer == c.issuer || o.name == c.name) {
                return Err(msg("an issuer (or name) is configured twice".into()));
            }
            let template = HumanIdTemplate::parse(&c.spiffe_id, td).map_err(|e| msg(format!("spiffe_id: {e}")))?;
            // Two issuers must never render the same ID: one could then
            // sign in as a person of the other.
            if let Some(other) = issuers.iter().find(|o| {
                let (a, b) = (o.template.prefix(), template.prefix());
                a.starts_with(b) || b.starts_with(a)
            }) {
                return Err(msg(format!(
                    "spiffe_id `{}` overlaps issuer `{}`'s (`{}{{...}}`): give each issuer its own path, e.g. spiffe://{td}/human/{}/{{email}}",
                    c.spiffe_id,
                    other.name,
                    other.template.prefix(),
                    c.name
                )));
            }
            let roots = match &c.ca_file {
                Some(path) => hallmark_http::roots_from_pem_file(path).map_err(|e| msg(format!("ca_file: {e}")))?,
                None => webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect(),
            };
            let keys = crate::jwks::IssuerKeys::new(&c.issuer, roots, c.jwks_url.as_deref(), Duration::from_secs(300))
                .map_err(msg)?;
            let scopes = c
                .scopes
                .clone()
                .unwrap_or_else(|| ["openid", "email", "profile", "groups"].iter().map(|s| (*s).to_owned()).collect());
            if !scopes.iter().any(|s| s == "openid") {
                return Err(msg("scopes must include `openid`".into()));
            }
            issuers.push(Arc::new(PeopleIssuer {
                name: c.name.clone(),
                issuer: c.issuer.clone(),
                client_id: c.client_id.clone(),
                template,
                scopes,
                keys,
            }));
        }
        Ok(PeopleSettings { issuers, break_glass_ttl, require_provisioned: self.require_provisioned })
    }
}
