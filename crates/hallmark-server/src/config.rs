//! Server configuration: TOML with every key checked, then turned into
//! validated [`ServerSettings`] in one place.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use hallmark_core::{TrustDomain, Ttl};
use hallmark_policy::{ClassRules, Classes};
use serde::Deserialize;

pub use hallmark_core::ConfigError;

/// The server configuration file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Trust domain name, e.g. `example.org`.
    pub trust_domain: String,
    /// Directory for keys and the default SQLite database.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...`; default `sqlite://DATA_DIR/hallmark.db`.
    #[serde(default)]
    pub datastore: Option<String>,
    /// Agent API (mTLS gRPC) listen address.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Admin HTTP API listen address.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// Signing authorities.
    #[serde(default)]
    pub ca: CaConfig,
    /// Defaults for entries that do not set TTLs.
    #[serde(default = "default_x509_ttl")]
    pub default_x509_ttl: String,
    /// Default JWT-SVID TTL.
    #[serde(default = "default_jwt_ttl")]
    pub default_jwt_ttl: String,
    /// Lifetime of agent SVIDs.
    #[serde(default = "default_agent_ttl")]
    pub agent_svid_ttl: String,
    /// Default join token lifetime.
    #[serde(default = "default_token_ttl")]
    pub join_token_ttl: String,
    /// Optional `iss` claim for JWT-SVIDs.
    #[serde(default)]
    pub jwt_issuer: Option<String>,
    /// How long inventory rows of expired credentials are kept (default 30d).
    #[serde(default)]
    pub inventory_retention: Option<String>,
    /// Lifecycle classes: `[classes.machine]`, `[classes.agent]`, `[classes.human]`.
    #[serde(default)]
    pub classes: ClassesConfig,
    /// Longest lifetime a join token may be given (default 24h).
    #[serde(default)]
    pub max_join_token_ttl: Option<String>,
    /// The audit key (PKCS#8, mode 0600) that signs the audit chain's head;
    /// default `DATA_DIR/keys/audit.key`, made on first start. Never in the datastore.
    #[serde(default)]
    pub audit_key: Option<PathBuf>,
    /// Public audit keys (PEM) of the other servers sharing this datastore,
    /// whose signatures `audit verify` accepts too.
    #[serde(default)]
    pub audit_trusted_keys: Vec<PathBuf>,
    /// Bounds on admin API clients.
    #[serde(default)]
    pub admin_api: AdminApiConfig,
    /// Node attestors besides join tokens: `[[node_attestor]]` tables, each
    /// with a `type` (`x509pop`, `tpm`, `k8s_psat`) and that type's keys.
    #[serde(default)]
    pub node_attestor: Vec<crate::node_attest::NodeAttestorConfig>,
    /// OAuth 2.0 Token Exchange (`POST /v1/token`): the `[token_exchange]`
    /// table; every key has a default.
    #[serde(default)]
    pub token_exchange: TokenExchangeConfig,
    /// People (`hallmark login`): the `[people]` table and its
    /// `[[people.oidc_issuer]]`s.
    #[serde(default)]
    pub people: crate::human::PeopleConfig,
}

/// The `[token_exchange]` table: how `POST /v1/token` verifies and bounds
/// the tokens it exchanges (RFC 8693). Cedar decides each exchange; these
/// are the limits no policy can lift.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExchangeConfig {
    /// The audience a subject or actor token must carry to be exchanged
    /// here (default `spiffe://<trust domain>/hallmark/token`).
    #[serde(default)]
    pub audience: Option<String>,
    /// Longest lifetime of an exchanged token (default 5m).
    #[serde(default)]
    pub max_ttl: Option<String>,
    /// Most `act` levels an exchanged token may nest (default 5).
    #[serde(default)]
    pub max_depth: Option<u32>,
    /// OpenID Connect issuers whose ID tokens may be the subject token.
    #[serde(default)]
    pub oidc_issuer: Vec<OidcIssuerConfig>,
}

/// One `[[token_exchange.oidc_issuer]]`: an OpenID Connect provider whose
/// ID tokens may be exchanged (the subject a person or another system is).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuerConfig {
    /// A name for records and logs.
    pub name: String,
    /// The issuer, an https:// URL; the ID token's `iss` must be exactly this.
    pub issuer: String,
    /// The audience the ID token must carry (the client id Hallmark is
    /// registered under at the provider).
    pub audience: String,
    /// The JWKS URL, https://; without it, the `jwks_uri` of
    /// `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// PEM file of the CA(s) to trust for the issuer's HTTPS; without it, the
    /// public web roots compiled into Hallmark.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Validated `[token_exchange]` settings.
#[derive(Debug, Clone)]
pub struct TokenExchangeSettings {
    /// The audience subject and actor tokens must carry.
    pub audience: String,
    /// Longest lifetime of an exchanged token.
    pub max_ttl: Ttl,
    /// Most `act` levels.
    pub max_depth: u32,
    /// The OpenID Connect issuers, by issuer URL.
    pub oidc_issuers: Vec<std::sync::Arc<OidcIssuer>>,
}

/// A configured OpenID Connect issuer, with its keys.
#[derive(Debug)]
pub struct OidcIssuer {
    /// Its name.
    pub name: String,
    /// Its issuer URL.
    pub issuer: String,
    /// The audience its ID tokens must carry.
    pub audience: String,
    /// Its signing keys (fetched on first use, cached).
    pub keys: crate::jwks::IssuerKeys,
}

/// Most `act` levels `max_depth` may allow.
pub const MAX_EXCHANGE_DEPTH: u32 = 32;

/// The `[admin_api]` table: how the admin listener bounds its clients.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminApiConfig {
    /// Most connections open at once (default 512).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// A request's headers must arrive within this (default 10s).
    #[serde(default)]
    pub header_timeout: Option<String>,
    /// A connection idle this long is closed (default 60s).
    #[serde(default)]
    pub idle_timeout: Option<String>,
}

/// The `[classes]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassesConfig {
    /// Services and jobs.
    #[serde(default)]
    pub machine: Option<ClassConfig>,
    /// AI agents.
    #[serde(default)]
    pub agent: Option<ClassConfig>,
    /// People.
    #[serde(default)]
    pub human: Option<ClassConfig>,
}

/// One class's rules; omitted keys keep the built-in default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// Longest credential lifetime, e.g. `24h`.
    #[serde(default)]
    pub max_ttl: Option<String>,
    /// Fraction of the lifetime after which credentials renew, e.g. 0.5
    /// (the key is `renew_at`, as documented).
    #[serde(default, rename = "renew_at")]
    pub renew_fraction: Option<f64>,
    /// Allowed issuance paths: `x509`, `jwt`, `recovery` (human only).
    #[serde(default)]
    pub paths: Option<Vec<String>>,
}

/// The `[ca]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// Lifetime of each X.509 CA and JWT key (default 24h); rotated at half life.
    #[serde(default)]
    pub ttl: Option<String>,
    /// Upstream CA certificate chain (PEM); with `upstream_key`, makes our CA an intermediate.
    #[serde(default)]
    pub upstream_cert: Option<PathBuf>,
    /// Upstream CA private key (PEM), mode 0600.
    #[serde(default)]
    pub upstream_key: Option<PathBuf>,
}

fn default_listen() -> String {
    "127.0.0.1:8443".into()
}
fn default_admin_listen() -> String {
    "127.0.0.1:8081".into()
}
fn default_x509_ttl() -> String {
    "1h".into()
}
fn default_jwt_ttl() -> String {
    "5m".into()
}
fn default_agent_ttl() -> String {
    "1h".into()
}
fn default_token_ttl() -> String {
    "10m".into()
}

/// Validated server settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Trust domain.
    pub trust_domain: TrustDomain,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Datastore URL.
    pub datastore: String,
    /// Agent API address.
    pub listen: String,
    /// Admin API address.
    pub admin_listen: String,
    /// CA lifetime.
    pub ca_ttl: Ttl,
    /// Upstream CA (chain, key) files.
    pub upstream: Option<(PathBuf, PathBuf)>,
    /// Default X.509 TTL.
    pub default_x509_ttl: Ttl,
    /// Default JWT TTL.
    pub default_jwt_ttl: Ttl,
    /// Agent SVID TTL.
    pub agent_svid_ttl: Ttl,
    /// Join token TTL.
    pub join_token_ttl: Ttl,
    /// JWT issuer.
    pub jwt_issuer: Option<String>,
    /// Lifecycle class rules.
    pub classes: Classes,
    /// Inventory retention after expiry.
    pub inventory_retention: Ttl,
    /// Longest join token lifetime.
    pub max_join_token_ttl: Ttl,
    /// The audit key file.
    pub audit_key: PathBuf,
    /// Other servers' public audit keys (PEM files).
    pub audit_trusted_keys: Vec<PathBuf>,
    /// Bounds on admin API clients.
    pub admin_limits: AdminLimits,
    /// The node attestors configured besides join tokens.
    pub node_attestors: std::sync::Arc<crate::node_attest::NodeAttestors>,
    /// Token exchange (`POST /v1/token`).
    pub token_exchange: TokenExchangeSettings,
    /// People: login issuers and the human track's limits.
    pub people: crate::human::PeopleSettings,
}

fn ttl(key: &'static str, v: &str) -> Result<Ttl, ConfigError> {
    Ttl::parse(v).map_err(|e| ConfigError::Value { key, msg: e.to_string() })
}

impl ServerConfig {
    /// Parses TOML, then applies `HALLMARK_DATASTORE`, `HALLMARK_LISTEN` and
    /// `HALLMARK_ADMIN_LISTEN` from `env` (passed in, so tests never touch the
    /// process environment).
    pub fn parse(text: &str, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut c: Self = toml::from_str(text).map_err(|e| ConfigError::Toml(e.message().to_owned()))?;
        if let Some(v) = env.get("HALLMARK_DATASTORE") {
            c.datastore = Some(v.clone());
        }
        if let Some(v) = env.get("HALLMARK_LISTEN") {
            c.listen = v.clone();
        }
        if let Some(v) = env.get("HALLMARK_ADMIN_LISTEN") {
            c.admin_listen = v.clone();
        }
        Ok(c)
    }

    /// Checks every value and returns settings ready to run.
    pub fn validate(&self) -> Result<ServerSettings, ConfigError> {
        let trust_domain = TrustDomain::new(&self.trust_domain)
            .map_err(|e| ConfigError::Value { key: "trust_domain", msg: e.to_string() })?;
        let upstream = match (&self.ca.upstream_cert, &self.ca.upstream_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Value {
                    key: "ca.upstream_cert",
                    msg: "`upstream_cert` and `upstream_key` must be given together".into(),
                });
            }
        };
        let datastore = self
            .datastore
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("hallmark.db").display()));
        let ca_ttl = ttl("ca.ttl", self.ca.ttl.as_deref().unwrap_or("24h"))?;
        let settings = ServerSettings {
            trust_domain: trust_domain.clone(),
            data_dir: self.data_dir.clone(),
            datastore,
            listen: self.listen.clone(),
            admin_listen: self.admin_listen.clone(),
            ca_ttl,
            upstream,
            default_x509_ttl: ttl("default_x509_ttl", &self.default_x509_ttl)?,
            default_jwt_ttl: ttl("default_jwt_ttl", &self.default_jwt_ttl)?,
            agent_svid_ttl: ttl("agent_svid_ttl", &self.agent_svid_ttl)?,
            join_token_ttl: ttl("join_token_ttl", &self.join_token_ttl)?,
            jwt_issuer: self.jwt_issuer.clone(),
            classes: self.classes.validate()?,
            inventory_retention: ttl("inventory_retention", self.inventory_retention.as_deref().unwrap_or("30d"))?,
            max_join_token_ttl: ttl("max_join_token_ttl", self.max_join_token_ttl.as_deref().unwrap_or("24h"))?,
            audit_key: self.audit_key.clone().unwrap_or_else(|| self.data_dir.join("keys").join("audit.key")),
            audit_trusted_keys: self.audit_trusted_keys.clone(),
            admin_limits: self.admin_api.validate()?,
            node_attestors: std::sync::Arc::new(
                crate::node_attest::NodeAttestors::new(&self.node_attestor)
                    .map_err(|msg| ConfigError::Value { key: "node_attestor", msg })?,
            ),
            token_exchange: self.token_exchange.validate(&trust_domain)?,
            people: self.people.validate(&trust_domain)?,
        };
        if settings.join_token_ttl.secs() > settings.max_join_token_ttl.secs() {
            return Err(ConfigError::Value {
                key: "join_token_ttl",
                msg: format!("is longer than max_join_token_ttl ({})", settings.max_join_token_ttl),
            });
        }
        // Lifetimes under an hour are for drills and tests of rotation.
        if settings.ca_ttl.secs() < 20 {
            return Err(ConfigError::Value { key: "ca.ttl", msg: "must be at least 20s".into() });
        }
        Ok(settings)
    }
}

impl TokenExchangeConfig {
    fn validate(&self, td: &TrustDomain) -> Result<TokenExchangeSettings, ConfigError> {
        let audience = self.audience.clone().unwrap_or_else(|| format!("spiffe://{}/hallmark/token", td.as_str()));
        if audience.is_empty() || audience.len() > 1024 {
            return Err(ConfigError::Value { key: "token_exchange.audience", msg: "must be 1-1024 bytes".into() });
        }
        let max_ttl = ttl("token_exchange.max_ttl", self.max_ttl.as_deref().unwrap_or("5m"))?;
        let max_depth = self.max_depth.unwrap_or(5);
        if !(1..=MAX_EXCHANGE_DEPTH).contains(&max_depth) {
            return Err(ConfigError::Value {
                key: "token_exchange.max_depth",
                msg: format!("must be 1-{MAX_EXCHANGE_DEPTH}"),
            });
        }
        let mut oidc_issuers: Vec<std::sync::Arc<OidcIssuer>> = Vec::new();
        for c in &self.oidc_issuer {
            let msg =
                |e: String| ConfigError::Value { key: "token_exchange.oidc_issuer", msg: format!("`{}`: {e}", c.name) };
            if c.audience.is_empty() {
                return Err(msg("audience must not be empty".into()));
            }
            if oidc_issuers.iter().any(|o| o.issuer == c.issuer || o.name == c.name) {
                return Err(msg("an issuer (or name) is configured twice".into()));
            }
            let roots = match &c.ca_file {
                Some(path) => hallmark_http::roots_from_pem_file(path).map_err(|e| msg(format!("ca_file: {e}")))?,
                None => webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect(),
            };
            let keys = crate::jwks::IssuerKeys::new(&c.issuer, roots, c.jwks_url.as_deref(), Duration::from_secs(300))
                .map_err(msg)?;
            oidc_issuers.push(std::sync::Arc::new(OidcIssuer {
                name: c.name.clone(),
                issuer: c.issuer.clone(),
                audience: c.audience.clone(),
                keys,
            }));
        }
        Ok(TokenExchangeSettings { audience, max_ttl, max_depth, oidc_issuers })
    }
}

impl AdminApiConfig {
    fn validate(&self) -> Result<AdminLimits, ConfigError> {
        let d = AdminLimits::default();
        let secs = |key, v: &Option<String>, default: std::time::Duration| -> Result<_, ConfigError> {
            Ok(v.as_deref()
                .map(|v| ttl(key, v))
                .transpose()?
                .map_or(default, |t| std::time::Duration::from_secs(t.secs())))
        };
        let limits = AdminLimits {
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            header_timeout: secs("admin_api.header_timeout", &self.header_timeout, d.header_timeout)?,
            idle_timeout: secs("admin_api.idle_timeout", &self.idle_timeout, d.idle_timeout)?,
        };
        if limits.max_connections == 0 {
            return Err(ConfigError::Value { key: "admin_api.max_connections", msg: "must be at least 1".into() });
        }
        Ok(limits)
    }
}

impl ClassesConfig {
    fn validate(&self) -> Result<Classes, ConfigError> {
        let mut c = Classes::default();
        for (key, given, rules) in [
            ("classes.machine", &self.machine, &mut c.machine),
            ("classes.agent", &self.agent, &mut c.agent),
            ("classes.human", &self.human, &mut c.human),
        ] {
            let Some(g) = given else { continue };
            apply_class(key, g, rules)?;
        }
        c.validate().map_err(|e| ConfigError::Value { key: "classes", msg: e.to_string() })?;
        Ok(c)
    }
}

fn apply_class(key: &'static str, g: &ClassConfig, rules: &mut ClassRules) -> Result<(), ConfigError> {
    if let Some(t) = &g.max_ttl {
        rules.max_ttl = ttl(key, t)?;
    }
    if let Some(r) = g.renew_fraction {
        rules.renew_fraction = r;
    }
    if let Some(p) = &g.paths {
        rules.paths = p
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map_err(|e: hallmark_policy::UnknownIssuancePath| ConfigError::Value { key, msg: e.to_string() })?;
    }
    Ok(())
}

/// How the admin listener bounds its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// Most connections open at once; more are closed at accept.
    pub max_connections: usize,
    /// A request's headers must be complete within this.
    pub header_timeout: Duration,
    /// A connection with no bytes in either direction for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        Self { max_connections: 512, header_timeout: Duration::from_secs(10), idle_timeout: Duration::from_secs(60) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let env = HashMap::new();
        let c = ServerConfig::parse("trust_domain = \"example.org\"\ndata_dir = \"/tmp/x\"\n", &env).unwrap();
        let s = c.validate().unwrap();
        assert_eq!(s.datastore, "sqlite:///tmp/x/hallmark.db");
        assert_eq!(s.default_x509_ttl.secs(), 3600);
        let bad =
            ServerConfig::parse("trust_domain = \"x\"\ndata_dir = \"/tmp\"\nlisten_addr = 1\n", &env).unwrap_err();
        assert!(bad.to_string().contains("listen_addr"), "{bad}");
        let c = ServerConfig::parse("trust_domain = \"Bad\"\ndata_dir = \"/tmp\"\n", &env).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("Bad"));
        let c = ServerConfig::parse("trust_domain = \"x\"\ndata_dir = \"/tmp\"\ndefault_x509_ttl = \"0s\"\n", &env)
            .unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("default_x509_ttl"));
        let c = ServerConfig::parse(
            "trust_domain = \"x\"\ndata_dir = \"/tmp\"\n[classes.machine]\npaths = [\"x509\", \"recovery\"]\n",
            &env,
        )
        .unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("recovery"));
        let c = ServerConfig::parse(
            "trust_domain = \"x\"\ndata_dir = \"/tmp\"\n[classes.agent]\nmax_ttl = \"15m\"\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.validate().unwrap().classes.agent.max_ttl.secs(), 900);
        let env: HashMap<String, String> = [("HALLMARK_DATASTORE".to_owned(), "postgres://h/db".to_owned())].into();
        let c = ServerConfig::parse("trust_domain = \"x\"\ndata_dir = \"/tmp\"\n", &env).unwrap();
        assert_eq!(c.validate().unwrap().datastore, "postgres://h/db");
    }
}
