//! What each role may do: one table ([`ROLES`]), read by the check
//! (`Admin::may`), by its error message (which roles would be allowed) and
//! by the validation of a new admin token's role.

use hallmark_core::validate_owner;

use super::auth::Admin;
use super::error::ApiError;

/// What an admin API call does, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// List and show entries, and their denials.
    ReadEntries,
    /// Create, update, delete entries.
    WriteEntries,
    /// Create join tokens (node onboarding).
    JoinTokens,
    /// Read the policy and its history.
    ReadPolicy,
    /// Set the policy.
    WritePolicy,
    /// Create, revoke and rotate admin identities.
    ManageAdmins,
    /// List admin identities.
    ReadAdmins,
    /// Ask for an exception.
    RequestException,
    /// Approve or revoke an exception.
    DecideException,
    /// List exceptions.
    ReadExceptions,
    /// Create, deactivate owners and transfer their entries.
    ManageOwners,
    /// Set owners' SPIFFE-ID path scopes and nodes.
    ScopeOwners,
    /// List attested nodes.
    ReadNodes,
    /// Export and verify the audit chain.
    ReadAudit,
    /// Revoke credentials, entries, owners' entries and nodes.
    Revoke,
    /// List the signing authorities and their states.
    ReadAuthorities,
    /// Prepare, activate, taint and revoke signing authorities.
    ManageAuthorities,
    /// Start AI-agent tasks, bind them to their process, change their
    /// objective and end them.
    RunTasks,
    /// Approve a task's scope items that wait for a person.
    ApproveTasks,
    /// Provision people and groups over SCIM (`/scim/v2`): joiners,
    /// movers and leavers.
    Scim,
    /// The help desk: file, verify and cancel a person's recovery request.
    HelpDesk,
    /// Approve a verified recovery request (a second admin).
    ApproveRecovery,
    /// Grant and withdraw break-glass logins.
    ManageBreakGlass,
    /// Review break-glass uses.
    ReviewBreakGlass,
    /// List recovery requests and break-glass grants and uses.
    ReadPeople,
}

impl Perm {
    /// What the permission covers, for error messages.
    fn describe(self) -> &'static str {
        match self {
            Self::ReadEntries => "read entries",
            Self::WriteEntries => "change entries",
            Self::JoinTokens => "create join tokens",
            Self::ReadPolicy => "read the policy",
            Self::WritePolicy => "set the policy",
            Self::ManageAdmins => "create, revoke or rotate admin tokens",
            Self::ReadAdmins => "list admin tokens",
            Self::RequestException => "request exceptions",
            Self::DecideException => "approve or revoke exceptions",
            Self::ReadExceptions => "list exceptions",
            Self::ManageOwners => "manage owners",
            Self::ScopeOwners => "set owners' path scopes and nodes",
            Self::ReadNodes => "list nodes",
            Self::ReadAudit => "read the audit chain",
            Self::Revoke => "revoke",
            Self::ReadAuthorities => "read the signing authorities",
            Self::ManageAuthorities => "manage the signing authorities",
            Self::RunTasks => "run tasks",
            Self::ApproveTasks => "approve task scope",
            Self::Scim => "provision people over SCIM",
            Self::HelpDesk => "file, verify or cancel a person's recovery",
            Self::ApproveRecovery => "approve a person's recovery",
            Self::ManageBreakGlass => "grant or withdraw break-glass logins",
            Self::ReviewBreakGlass => "review break-glass uses",
            Self::ReadPeople => "read recoveries and break-glass grants",
        }
    }
}

/// What a role grants.
#[derive(Debug, Clone, Copy)]
pub enum Grants {
    /// Every permission, present and future.
    All,
    /// These only.
    Only(&'static [Perm]),
}

/// A role an admin token may hold.
#[derive(Debug, Clone, Copy)]
pub struct Role {
    /// Its name as a token holds it; `owner:NAME` stands for every owner role.
    pub name: &'static str,
    /// What it may do. `owner:NAME` is further confined to NAME's entries
    /// (`Admin::may_touch`).
    pub grants: Grants,
}

/// The roles, and what each may do: the one table every role check reads.
pub const ROLES: &[Role] = {
    use Perm::*;
    &[
        Role { name: "trust-admin", grants: Grants::All },
        Role {
            name: "operator",
            grants: Grants::Only(&[
                ReadEntries,
                WriteEntries,
                JoinTokens,
                ReadPolicy,
                RequestException,
                ReadExceptions,
                ManageOwners,
                Revoke,
                ReadAuthorities,
                ReadNodes,
                RunTasks,
                HelpDesk,
                ReadPeople,
            ]),
        },
        Role {
            name: "auditor",
            grants: Grants::Only(&[
                ReadEntries,
                ReadPolicy,
                ReadExceptions,
                ReadAudit,
                ReadAuthorities,
                ReadNodes,
                ReadAdmins,
                ReadPeople,
                ReviewBreakGlass,
            ]),
        },
        // An identity provider's SCIM client: people and groups, nothing else.
        Role { name: "scim", grants: Grants::Only(&[Scim]) },
        Role {
            name: OWNER_ROLE,
            grants: Grants::Only(&[
                ReadEntries,
                WriteEntries,
                ReadPolicy,
                RequestException,
                ReadExceptions,
                Revoke,
                RunTasks,
                ApproveTasks,
            ]),
        },
    ]
};

/// The name under which [`ROLES`] lists every `owner:NAME` role.
const OWNER_ROLE: &str = "owner:NAME";

impl Role {
    fn allows(&self, p: Perm) -> bool {
        match self.grants {
            Grants::All => true,
            Grants::Only(perms) => perms.contains(&p),
        }
    }
}

/// The row of [`ROLES`] a token's role reads: its own, or the owner row for
/// any `owner:...` role.
fn role(name: &str) -> Option<&'static Role> {
    let key = if name.starts_with("owner:") { OWNER_ROLE } else { name };
    ROLES.iter().find(|r| r.name == key)
}

/// Which roles may do what. `owner:NAME` is further confined to NAME's entries.
pub fn role_allows(name: &str, p: Perm) -> bool {
    role(name).is_some_and(|r| r.allows(p))
}

/// Whether an admin token may be given role `name`: one of [`ROLES`], with a
/// valid owner name for `owner:NAME`.
pub(crate) fn valid_role(name: &str) -> bool {
    role(name).is_some() && name.strip_prefix("owner:").is_none_or(|o| validate_owner(o).is_ok())
}

/// The role names, for messages: `trust-admin, operator, auditor, scim, owner:NAME`.
pub(crate) fn role_names() -> String {
    ROLES.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
}

impl Admin {
    /// 403 unless the caller's role allows `p`.
    pub(crate) fn may(&self, p: Perm) -> Result<(), ApiError> {
        if role_allows(&self.token.role, p) {
            return Ok(());
        }
        let allowed: Vec<&str> = ROLES.iter().filter(|r| r.allows(p)).map(|r| r.name).collect();
        Err(ApiError::forbidden(format!(
            "`{}` has role `{}`, which may not {} (allowed: {})",
            self.token.name,
            self.token.role,
            p.describe(),
            allowed.join(", ")
        )))
    }

    /// For `owner:NAME` callers, the owner they are confined to.
    pub(crate) fn owner_scope(&self) -> Option<&str> {
        self.token.role.strip_prefix("owner:")
    }

    /// 403 when an `owner:NAME` caller touches another owner's entry.
    pub(crate) fn may_touch(&self, owner: &str) -> Result<(), ApiError> {
        match self.owner_scope() {
            Some(mine) if mine != owner => Err(ApiError::forbidden(format!(
                "role `{}` may only manage entries owned by `{mine}`",
                self.token.role
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_answers_every_question() {
        assert!(role_allows("trust-admin", Perm::ManageAuthorities));
        assert!(role_allows("operator", Perm::JoinTokens));
        assert!(!role_allows("operator", Perm::WritePolicy));
        assert!(role_allows("auditor", Perm::ReadAdmins));
        assert!(!role_allows("auditor", Perm::Revoke));
        assert!(role_allows("owner:team-a", Perm::WriteEntries));
        assert!(!role_allows("owner:team-a", Perm::ReadAudit));
        assert!(!role_allows("root", Perm::ReadEntries));
        assert!(valid_role("owner:team-a") && valid_role("auditor"));
        assert!(
            !valid_role("owner:") && !valid_role("owner:a b") && !valid_role("owner:NAME ") && !valid_role("admin")
        );
        assert!(role_allows("scim", Perm::Scim) && role_allows("trust-admin", Perm::Scim));
        assert!(!role_allows("scim", Perm::ReadEntries) && !role_allows("operator", Perm::Scim));
        assert!(valid_role("scim"));
        assert_eq!(role_names(), "trust-admin, operator, auditor, scim, owner:NAME");
    }
}
