//! What the server sends, in the agent's own types: entries, bundles and
//! revocations as the entry sync stream and node attestation carry them.

use hallmark_ca::{Bundle, JwtAuthority};
use hallmark_core::{Bind, Class, Entry, SpiffeId, TrustDomain, Ttl};
use hallmark_proto::node as pb;

use crate::cache::Revocation;

/// A bundle as received from the server.
pub fn bundle_from_proto(td: &TrustDomain, b: &pb::Bundle) -> Bundle {
    let jwt_authorities = serde_json::from_str::<serde_json::Value>(&b.jwks)
        .ok()
        .and_then(|v| v.get("keys").and_then(|k| k.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|k| k.as_object().and_then(JwtAuthority::from_jwk))
        .collect();
    Bundle {
        trust_domain: td.clone(),
        x509_authorities: b.x509_authorities.clone(),
        jwt_authorities,
        sequence: b.sequence,
        refresh_hint: hallmark_ca::bundle::DEFAULT_REFRESH_HINT,
        status: hallmark_ca::AuthorityStatus {
            crls: b.crls.clone(),
            tainted: b.tainted.clone(),
            revoked: b.revoked_authorities.clone(),
        },
    }
}

/// The revocations a sync event carries.
pub(crate) fn revocations(items: &[pb::Revoked]) -> Vec<Revocation> {
    items.iter().map(|r| Revocation { id: r.id.clone(), not_after: r.not_after }).collect()
}

/// An entry as synced, or `None` when any field is malformed (such an entry
/// is never served). The store's bookkeeping fields the agent does not need
/// are left at zero.
pub(crate) fn entry_from_proto(e: pb::Entry) -> Option<Entry> {
    Some(Entry {
        spiffe_id: SpiffeId::new(&e.spiffe_id).ok()?,
        parent_id: SpiffeId::new(&e.parent_id).ok()?,
        selectors: e.selectors.iter().map(|s| s.parse().ok()).collect::<Option<_>>()?,
        owner: e.owner,
        // The agent decides nothing on the class (the server decides at each
        // issuance, on its own copy of the entry), so a class this agent does
        // not know, from a newer server, must not stop the entry being served.
        class: e.class.parse().unwrap_or(Class::Machine),
        x509_ttl: Ttl::from_secs(e.x509_ttl_seconds).ok()?,
        jwt_ttl: Ttl::from_secs(e.jwt_ttl_seconds).ok()?,
        dns_names: e.dns_names,
        hint: Some(e.hint).filter(|h| !h.is_empty()),
        recovery: false,
        // An empty bind is a server from before binding existed: unbound.
        // An unknown one, from a newer server, is not served: serving it
        // unbound could let an SVID outlive the process it was meant to end with.
        bind: if e.bind.is_empty() { Bind::None } else { e.bind.parse().ok()? },
        revision: e.revision,
        created_at: 0,
        updated_at: 0,
        revoked_at: None,
        id: e.id,
    })
}
