//! The human track (issue 19): people sign in with an OpenID Connect issuer
//! and get a short-lived client certificate from the human issuing
//! authority; the help desk recovers them; break-glass grants cover
//! emergencies; SCIM says who joined, moved and left. It shares the
//! datastore, the inventory and the audit chain with the machine track and
//! none of its workflows: no entry, no agent, no Workload API.

mod config;
mod login;
mod report;

pub use config::{PeopleConfig, PeopleIssuer, PeopleIssuerConfig, PeopleSettings};
pub use login::{LOGIN_WINDOW_SECS, LoginCertificate, LoginError, LoginRequest, LoginStart};
pub use report::{PeopleSection, PersonCertificate};
