//! The governance commands, one module per command group:
//!
//! - [`policy`](mod@policy): `hallmark policy ...` (set, show, history, diff, test)
//! - [`exception`](mod@exception): `hallmark exception ...`
//! - [`report`](mod@report): `hallmark report KIND`
//! - [`credential`](mod@credential): `hallmark credential ...` (the inventory)
//! - [`audit`](mod@audit): `hallmark audit ...`
//! - [`owner`](mod@owner): `hallmark owner ...`
//! - [`admin_token`]: `hallmark admin token ...`
//!
//! Each group uses only the shared command-line plumbing of the crate
//! (`client`, `commands`, `table`) and [`when`] (times given on the command
//! line); none uses another group.

mod admin_token;
mod audit;
mod credential;
mod exception;
mod owner;
mod policy;
mod report;
mod when;

pub use admin_token::{AdminCmd, admin};
pub use audit::{AuditCmd, audit};
pub use credential::{CredentialCmd, credential};
pub use exception::{ExceptionCmd, exception};
pub use owner::{OwnerCmd, owner};
pub use policy::{PolicyCmd, policy};
pub use report::{ReportArgs, report};
