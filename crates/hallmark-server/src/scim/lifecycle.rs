//! What a SCIM change means for a person: a joiner (created), a mover (its
//! groups changed), a leaver (`active` false, or deleted) or a rejoiner
//! (active again), each recorded in the audit chain in the change's own
//! transaction, and for a leaver, every certificate issued to the person
//! revoked at once.
//!
//! The revocation follows the commit rather than sharing its transaction:
//! it is [`ServerState::revoke`], the one path every revocation takes (the
//! CRL re-signed, agents told, a second look after issuances in flight).
//! Every write that leaves a person out revokes again, which finds nothing
//! the second time, so a client retrying after a failed revocation finishes
//! it.

use std::sync::Arc;

use hallmark_store::{GroupChange, PersonChange, Recorder, RevokeTarget};
use serde_json::json;

use super::error::{ScimError, revocation_failed};
use crate::state::ServerState;

/// The revocation reason of a leaver's certificates.
pub const LEFT_REASON: &str = "person left (SCIM)";

/// The records of a person's change: `person.joined` (and `person.left`
/// for someone provisioned inactive), `person.left`, `person.rejoined` or
/// `person.updated`.
pub fn person_recorder<'a>(s: &'a ServerState, actor: &'a str) -> Recorder<'a, PersonChange> {
    Recorder::signed(&*s.audit_keys, move |c: &PersonChange| {
        let p = &c.after;
        let event = |action: &str, details| s.audit_event(actor, action, &p.id, "ok", details);
        let who = json!({ "user_name": p.user_name, "external_id": p.external_id, "email": p.email,
                          "active": p.active, "version": p.version });
        match &c.before {
            None => {
                let mut out = vec![event("person.joined", who)];
                if p.has_left() {
                    out.push(event("person.left", json!({ "user_name": p.user_name, "provisioned_inactive": true })));
                }
                out
            }
            Some(_) if c.left() => vec![event(
                "person.left",
                json!({ "user_name": p.user_name, "active": p.active, "deleted": p.deleted_at.is_some(),
                        "groups": c.groups }),
            )],
            Some(_) if c.rejoined() => {
                vec![event("person.rejoined", json!({ "user_name": p.user_name, "groups": c.groups }))]
            }
            // Deleting someone who had already left: the deletion itself.
            Some(b) if p.deleted_at.is_some() && b.deleted_at.is_none() => {
                vec![event("person.deleted", json!({ "user_name": p.user_name, "groups": c.groups }))]
            }
            Some(_) => vec![event("person.updated", who)],
        }
    })
}

/// The records of a group's change: `group.created`, `group.updated` or
/// `group.deleted`, and a `person.moved` for each person whose groups
/// changed (with the old and the new group names).
pub fn group_recorder<'a>(s: &'a ServerState, actor: &'a str) -> Recorder<'a, GroupChange> {
    Recorder::signed(&*s.audit_keys, move |c: &GroupChange| {
        let (action, g) = match (&c.before, &c.after) {
            (None, Some(g)) => ("group.created", g),
            (Some(_), Some(g)) => ("group.updated", g),
            (Some(g), None) => ("group.deleted", g),
            (None, None) => return Vec::new(),
        };
        let mut out = vec![s.audit_event(
            actor,
            action,
            &g.id,
            "ok",
            json!({ "display_name": g.display_name, "members": g.members.len(), "version": g.version }),
        )];
        for m in &c.moved {
            out.push(s.audit_event(
                actor,
                "person.moved",
                &m.person_id,
                "ok",
                json!({ "user_name": m.user_name, "group": g.display_name, "from": m.from, "to": m.to }),
            ));
        }
        out
    })
}

/// After a person's change is stored: a person who is out (inactive or
/// deleted) loses every live certificate now.
pub async fn after_person_change(s: &Arc<ServerState>, c: &PersonChange, actor: &str) -> Result<(), ScimError> {
    let p = &c.after;
    if c.left() {
        tracing::warn!(person = %p.id, user_name = %p.user_name, by = actor, "person left (SCIM): revoking their credentials");
    } else if c.rejoined() {
        tracing::info!(person = %p.id, user_name = %p.user_name, by = actor, "person rejoined (SCIM)");
    }
    if p.has_left() {
        let out = s
            .revoke(&RevokeTarget::Person(p.id.clone()), LEFT_REASON, actor)
            .await
            .map_err(|e| revocation_failed(&e))?;
        if !out.credentials.is_empty() {
            tracing::warn!(person = %p.id, revoked = out.credentials.len(), "a leaver's credentials revoked");
        }
    }
    Ok(())
}

/// After a group's change is stored: movers are only recorded; policy
/// decides on their new groups at their next login.
pub fn after_group_change(c: &GroupChange, actor: &str) {
    for m in &c.moved {
        tracing::info!(person = %m.person_id, user_name = %m.user_name, from = ?m.from, to = ?m.to, by = actor, "person moved (SCIM)");
    }
}
