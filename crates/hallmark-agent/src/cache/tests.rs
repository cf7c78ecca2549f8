//! The cache's state machine, driven through its public API with explicit
//! times: what is due (first issue, renewal), pending, denied, revoked,
//! expired, and how long a workload's interest is kept.

use hallmark_ca::{AuthorityStatus, Bundle};
use hallmark_core::{Entry, EntrySpec, SpiffeId, TrustDomain, Ttl, evidence_digest};

use super::*;

/// The moment most tests start at (unix seconds).
const T0: i64 = 1_000_000;

fn workload(selectors: &[&str]) -> Evidence {
    Evidence::new(selectors.iter().map(|s| s.parse().unwrap()).collect())
}

/// An entry `id` for `spiffe://example.org/<id>`, requiring `selectors`, at
/// revision 1, made the way the server makes one.
fn entry(id: &str, selectors: &[&str]) -> Entry {
    let ttl = Ttl::from_secs(3600).unwrap();
    EntrySpec {
        spiffe_id: format!("spiffe://example.org/{id}"),
        parent_id: Some("spiffe://example.org/hallmark/agent/local".into()),
        selectors: selectors.iter().map(|s| (*s).to_owned()).collect(),
        owner: "team".into(),
        ..Default::default()
    }
    .validate(&trust_domain(), None, ttl, ttl)
    .unwrap()
    .into_entry(id.to_owned(), 0)
}

fn trust_domain() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn key(entry_id: &str, digest: &str) -> SvidKey {
    SvidKey::new(entry_id, digest)
}

/// An SVID valid over `[not_before, not_after)`, due for rotation at `rotate_at`,
/// signed by authority `a1` for entry revision 1.
fn svid(serial: &str, not_before: i64, not_after: i64, rotate_at: i64) -> HeldSvid {
    HeldSvid {
        revision: 1,
        serial: serial.to_owned(),
        authority_id: "a1".into(),
        chain: vec![serial.as_bytes().to_vec()],
        key: b"key".to_vec(),
        not_before,
        not_after,
        rotate_at,
    }
}

fn jwt(jti: &str, expires_at: i64, refresh_at: i64) -> HeldJwt {
    HeldJwt { token: format!("token-{jti}"), jti: jti.to_owned(), kid: "k1".into(), expires_at, refresh_at }
}

fn revocation(id: &str, not_after: i64) -> Revocation {
    Revocation { id: id.to_owned(), not_after }
}

fn bundle(status: AuthorityStatus) -> Bundle {
    Bundle {
        trust_domain: trust_domain(),
        x509_authorities: vec![b"anchor".to_vec()],
        jwt_authorities: Vec::new(),
        sequence: 1,
        refresh_hint: 300,
        status,
    }
}

/// A cache serving entry `web` (uid 1000) to a workload with uid 1000 that
/// opened a stream at [`T0`]; returns the cache, the workload and its digest.
fn serving_web() -> (Cache, Evidence, String) {
    let cache = Cache::default();
    cache.replace_entries(vec![entry("web", &["unix:uid:1000"])]);
    let w = workload(&["unix:uid:1000", "unix:gid:1000"]);
    let digest = cache.open_interest(&w, None, T0);
    (cache, w, digest)
}

/// The keys due at `now`, each with whether it is a renewal.
fn due_keys(cache: &Cache, now: i64) -> Vec<(SvidKey, bool)> {
    let mut v: Vec<(SvidKey, bool)> = cache.due(now).into_iter().map(|d| (d.key, d.renewal)).collect();
    v.sort_by(|a, b| (&a.0.entry_id, &a.0.digest).cmp(&(&b.0.entry_id, &b.0.digest)));
    v
}

// ---- due: first issue and renewal ----

#[test]
fn nothing_is_due_without_an_interest() {
    let cache = Cache::default();
    cache.replace_entries(vec![entry("web", &["unix:uid:1000"])]);
    assert!(cache.due(T0).is_empty(), "entries alone are not issued: a workload must ask");
}

#[test]
fn an_interest_makes_each_matching_entry_due_for_first_issue() {
    let cache = Cache::default();
    cache.replace_entries(vec![
        entry("web", &["unix:uid:1000"]),
        entry("db", &["unix:uid:1000", "unix:gid:1000"]),
        entry("other", &["unix:uid:2000"]),
    ]);
    let w = workload(&["unix:uid:1000", "unix:gid:1000"]);
    let digest = cache.open_interest(&w, None, T0);
    assert_eq!(digest, evidence_digest(w.selectors()), "interests are keyed by the evidence digest");
    assert_eq!(due_keys(&cache, T0), vec![(key("db", &digest), false), (key("web", &digest), false)]);
    let due = cache.due(T0);
    assert!(due.iter().all(|d| &d.selectors == w.selectors()), "each request carries the workload's own evidence");
}

#[test]
fn an_issued_svid_is_due_again_at_its_rotation_point() {
    let (cache, _, digest) = serving_web();
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0, T0 + 3600, T0 + 1800));
    assert!(cache.due(T0).is_empty(), "a fresh SVID is not due");
    assert!(cache.due(T0 + 1799).is_empty(), "nor a second before its rotation point");
    assert_eq!(due_keys(&cache, T0 + 1800), vec![(key("web", &digest), true)], "at rotate_at it is a renewal");
}

#[test]
fn a_newer_entry_revision_makes_the_svid_due_for_renewal_and_keeps_it_served() {
    let (cache, w, digest) = serving_web();
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0, T0 + 3600, T0 + 1800));
    let mut changed = entry("web", &["unix:uid:1000"]);
    changed.revision = 2;
    changed.x509_ttl = Ttl::from_secs(600).unwrap();
    cache.upsert_entry(changed);
    assert_eq!(due_keys(&cache, T0 + 1), vec![(key("web", &digest), true)]);
    assert_eq!(cache.x509_for(&w, None, T0 + 1).len(), 1, "a change that keeps the identity keeps serving the SVID");
}

#[test]
fn a_changed_identity_drops_what_was_issued_under_the_old_one() {
    let (cache, w, digest) = serving_web();
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0, T0 + 3600, T0 + 1800));
    let mut moved = entry("web", &["unix:uid:1000"]);
    moved.revision = 2;
    moved.spiffe_id = SpiffeId::new("spiffe://example.org/elsewhere").unwrap();
    cache.upsert_entry(moved);
    assert!(cache.x509_for(&w, None, T0 + 1).is_empty(), "never served under an identity the entry no longer has");
    assert_eq!(due_keys(&cache, T0 + 1), vec![(key("web", &digest), false)], "a first issue under the new one");
}

#[test]
fn an_expired_svid_is_due_as_a_first_issue() {
    let (cache, _, digest) = serving_web();
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0, T0 + 60, T0 + 30));
    assert_eq!(due_keys(&cache, T0 + 60), vec![(key("web", &digest), false)], "nothing current to renew");
}

#[test]
fn a_tainted_authority_makes_what_it_signed_due_now() {
    let (cache, w, digest) = serving_web();
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0, T0 + 3600, T0 + 1800));
    cache.set_bundle(bundle(AuthorityStatus { tainted: vec!["a1".into()], ..Default::default() }), T0 + 10);
    assert_eq!(due_keys(&cache, T0 + 10), vec![(key("web", &digest), true)]);
    assert_eq!(cache.x509_for(&w, None, T0 + 10).len(), 1, "served until its replacement arrives");
}

#[test]
fn a_revoked_authority_makes_what_it_signed_disappear() {
    let (cache, w, digest) = serving_web();
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0, T0 + 3600, T0 + 1800));
    let _ = cache.put_jwt(
        &key("web", &digest),
        &["db".into()],
        HeldJwt { kid: "a1".into(), ..jwt("j1", T0 + 300, T0 + 150) },
    );
    cache.set_bundle(bundle(AuthorityStatus { revoked: vec!["a1".into()], ..Default::default() }), T0 + 10);
    assert!(cache.x509_for(&w, None, T0 + 10).is_empty());
    assert!(cache.jwt(&key("web", &digest), &["db".into()], T0 + 10).is_none());
    assert_eq!(due_keys(&cache, T0 + 10), vec![(key("web", &digest), false)], "still entitled: issued afresh");
}

// ---- pending: interest opened, not yet issued ----

#[test]
fn an_entry_is_pending_until_its_first_svid_arrives() {
    let (cache, w, digest) = serving_web();
    assert!(cache.pending(&w, None, T0));
    assert_eq!(cache.pending_ids(&w, None, T0), vec!["spiffe://example.org/web".to_owned()]);
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0, T0 + 3600, T0 + 1800));
    assert!(!cache.pending(&w, None, T0));
    assert!(cache.pending_ids(&w, None, T0).is_empty());
    assert!(!cache.pending(&workload(&["unix:uid:2000"]), None, T0), "a workload no entry matches waits for nothing");
}

#[test]
fn an_svid_for_an_entry_that_is_gone_is_not_stored() {
    let (cache, w, digest) = serving_web();
    let _ = cache.put_svid(key("gone", &digest), svid("s1", T0, T0 + 3600, T0 + 1800));
    assert_eq!(cache.svid_count(), 0);
    cache.delete_entry("web");
    let _ = cache.put_svid(key("web", &digest), svid("s2", T0, T0 + 3600, T0 + 1800));
    assert_eq!(cache.svid_count(), 0, "deleted while its request was in flight");
    assert!(cache.x509_for(&w, None, T0).is_empty());
}

// ---- denied: withdrawn, asked again after the retry point ----

#[test]
fn a_denial_withdraws_the_svid_and_waits_for_its_retry_point() {
    let (cache, w, digest) = serving_web();
    let k = key("web", &digest);
    let _ = cache.put_svid(k.clone(), svid("s1", T0, T0 + 3600, T0 + 1800));
    let _ = cache.put_jwt(&key("web", &digest), &["db".into()], jwt("j1", T0 + 300, T0 + 150));
    cache.deny(k.clone(), T0 + 1830);
    assert!(cache.x509_for(&w, None, T0 + 1800).is_empty(), "policy said no: nothing held is served");
    assert!(cache.jwt(&key("web", &digest), &["db".into()], T0 + 1800).is_none(), "nor a JWT for that evidence");
    assert!(!cache.pending(&w, None, T0 + 1800), "a denied entry is not waited for");
    assert!(cache.due(T0 + 1829).is_empty(), "not asked again before the retry point");
    assert_eq!(due_keys(&cache, T0 + 1830), vec![(k.clone(), false)]);
    assert!(cache.pending(&w, None, T0 + 1830));
    let _ = cache.put_svid(k, svid("s2", T0 + 1830, T0 + 5430, T0 + 3630));
    assert_eq!(cache.x509_for(&w, None, T0 + 1830).len(), 1, "a later grant is served");
}

#[test]
fn an_entry_update_lifts_a_denial() {
    let (cache, _, digest) = serving_web();
    cache.deny(key("web", &digest), T0 + 30);
    assert!(cache.due(T0).is_empty());
    let mut changed = entry("web", &["unix:uid:1000"]);
    changed.revision = 2;
    cache.upsert_entry(changed);
    assert_eq!(due_keys(&cache, T0), vec![(key("web", &digest), false)], "the change may be what was missing");
}

#[test]
fn a_denial_is_per_evidence() {
    let (cache, _, digest) = serving_web();
    let other = workload(&["unix:uid:1000", "unix:gid:2000"]);
    let other_digest = cache.open_interest(&other, None, T0);
    cache.deny(key("web", &digest), T0 + 30);
    assert_eq!(due_keys(&cache, T0), vec![(key("web", &other_digest), false)]);
}

// ---- revoked: dropped at once, replaced where still entitled ----

#[test]
fn a_revoked_svid_is_dropped_and_a_replacement_is_due() {
    let (cache, w, digest) = serving_web();
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0, T0 + 3600, T0 + 1800));
    assert_eq!(cache.revoke(&[revocation("s1", T0 + 3600)], T0 + 5), 1);
    assert!(cache.is_revoked("s1"));
    assert!(cache.x509_for(&w, None, T0 + 5).is_empty());
    assert!(!cache.holds(&digest, "s1", T0 + 5));
    assert_eq!(due_keys(&cache, T0 + 5), vec![(key("web", &digest), false)], "the entry still applies");
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0, T0 + 3600, T0 + 1800));
    assert_eq!(cache.svid_count(), 0, "a revoked serial never comes back");
    let _ = cache.put_svid(key("web", &digest), svid("s2", T0 + 5, T0 + 3605, T0 + 1805));
    assert_eq!(cache.x509_for(&w, None, T0 + 5).len(), 1, "its replacement is served");
}

#[test]
fn nothing_is_due_for_a_revoked_svid_whose_entry_is_gone() {
    let (cache, _, digest) = serving_web();
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0, T0 + 3600, T0 + 1800));
    cache.revoke(&[revocation("s1", T0 + 3600)], T0 + 5);
    cache.delete_entry("web");
    assert!(cache.due(T0 + 5).is_empty());
}

#[test]
fn a_revoked_jwt_is_dropped_and_refused() {
    let (cache, _, digest) = serving_web();
    let aud = ["db".to_owned()];
    let _ = cache.put_jwt(&key("web", &digest), &aud, jwt("j1", T0 + 300, T0 + 150));
    assert!(cache.holds(&digest, "j1", T0));
    assert_eq!(cache.revoke(&[revocation("j1", T0 + 300)], T0), 1);
    assert!(cache.jwt(&key("web", &digest), &aud, T0).is_none());
    let _ = cache.put_jwt(&key("web", &digest), &aud, jwt("j1", T0 + 300, T0 + 150));
    assert!(cache.jwt(&key("web", &digest), &aud, T0).is_none(), "a revoked jti is never kept again");
}

#[test]
fn a_revocation_past_its_expiry_is_not_kept() {
    let (cache, _, digest) = serving_web();
    assert_eq!(cache.revoke(&[revocation("old", T0)], T0), 0);
    assert!(!cache.is_revoked("old"), "it could not be served anyway");
    cache.revoke(&[revocation("s1", T0 + 100)], T0);
    cache.expire(T0 + 100);
    assert!(!cache.is_revoked("s1"), "forgotten once it would have expired");
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0, T0 + 3600, T0 + 1800));
    assert_eq!(cache.svid_count(), 1);
}

#[test]
fn a_revocation_snapshot_replaces_the_revoked_set() {
    let (cache, w, digest) = serving_web();
    let _ = cache.put_svid(key("web", &digest), svid("s2", T0, T0 + 3600, T0 + 1800));
    cache.revoke(&[revocation("s1", T0 + 3600)], T0);
    assert_eq!(cache.replace_revoked(&[revocation("s2", T0 + 3600)], T0), 1);
    assert!(!cache.is_revoked("s1"), "no longer in the server's list");
    assert!(cache.is_revoked("s2"));
    assert!(cache.x509_for(&w, None, T0).is_empty());
}

// ---- expiry: never served expired ----

#[test]
fn an_svid_is_never_served_expired_even_before_it_is_swept() {
    let (cache, w, digest) = serving_web();
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0, T0 + 60, T0 + 30));
    assert_eq!(cache.x509_for(&w, None, T0 + 59).len(), 1);
    assert!(cache.holds(&digest, "s1", T0 + 59));
    assert!(cache.x509_for(&w, None, T0 + 60).is_empty(), "not_after is exclusive");
    assert!(!cache.holds(&digest, "s1", T0 + 60));
    assert_eq!(cache.svid_count(), 1, "still held until the sweep");
    assert_eq!(cache.next_expiry(), Some(T0 + 60), "the rotation loop wakes at this second");
    assert_eq!(cache.expire(T0 + 60), 1);
    assert_eq!(cache.svid_count(), 0);
    assert_eq!(cache.next_expiry(), None);
}

#[test]
fn an_svid_not_yet_valid_is_served_only_within_a_minute_of_its_start() {
    let (cache, w, digest) = serving_web();
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0 + 61, T0 + 3600, T0 + 1800));
    assert!(cache.x509_for(&w, None, T0).is_empty());
    assert_eq!(cache.x509_for(&w, None, T0 + 1).len(), 1, "clock skew of up to a minute is tolerated");
}

#[test]
fn a_jwt_is_reused_until_its_refresh_point_and_never_served_expired() {
    let (cache, _, digest) = serving_web();
    let aud = ["db".to_owned()];
    let _ = cache.put_jwt(&key("web", &digest), &aud, jwt("j1", T0 + 300, T0 + 150));
    assert_eq!(cache.jwt(&key("web", &digest), &aud, T0 + 149).map(|j| j.jti), Some("j1".to_owned()));
    assert!(cache.jwt(&key("web", &digest), &aud, T0 + 150).is_none(), "minted afresh from its refresh point");
    assert!(cache.jwt(&key("web", &digest), &["other".to_owned()], T0).is_none(), "per audience list");
    assert_eq!(cache.next_expiry(), Some(T0 + 300));
    cache.expire(T0 + 300);
    assert!(!cache.holds(&digest, "j1", T0), "swept at its expiry");
    let _ = cache.put_jwt(&key("gone", &digest), &aud, jwt("j2", T0 + 300, T0 + 150));
    assert!(cache.jwt(&key("gone", &digest), &aud, T0).is_none(), "not kept for an entry the agent does not serve");
}

#[test]
fn serving_follows_the_evidence_that_was_decided_on() {
    let (cache, w, digest) = serving_web();
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0, T0 + 3600, T0 + 1800));
    let other = workload(&["unix:uid:1000", "unix:gid:2000"]);
    assert!(cache.x509_for(&other, None, T0).is_empty(), "same entry, other evidence: not this SVID");
    assert!(!cache.holds(other.digest(), "s1", T0));
    let served = cache.x509_for(&w, None, T0);
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].spiffe_id, "spiffe://example.org/web");
}

// ---- interest eviction ----

#[test]
fn a_closed_interest_is_kept_for_its_grace_then_evicted() {
    let (cache, _, digest) = serving_web();
    cache.close_interest(&digest, T0 + 10);
    let last = T0 + 10 + INTEREST_KEEP_SECS;
    assert_eq!(due_keys(&cache, last), vec![(key("web", &digest), false)], "a reconnecting workload finds it");
    assert!(cache.due(last + 1).is_empty(), "past its grace nothing is issued for it");
    cache.expire(last + 1);
    assert!(cache.due(T0 + 10).is_empty(), "the sweep forgot it");
}

#[test]
fn an_interest_with_an_open_stream_is_never_evicted() {
    let (cache, _, digest) = serving_web();
    let second = cache.open_interest(&workload(&["unix:uid:1000", "unix:gid:1000"]), None, T0);
    assert_eq!(second, digest, "a second stream with the same evidence shares the interest");
    cache.close_interest(&digest, T0 + 1);
    let much_later = T0 + 10 * INTEREST_KEEP_SECS;
    cache.expire(much_later);
    assert_eq!(due_keys(&cache, much_later), vec![(key("web", &digest), false)], "one stream is still open");
    cache.close_interest(&digest, much_later);
    cache.expire(much_later + INTEREST_KEEP_SECS + 1);
    assert!(cache.due(much_later + INTEREST_KEEP_SECS + 1).is_empty());
}

#[test]
fn an_evicted_interest_is_no_longer_renewed_and_its_svids_go_at_expiry() {
    let (cache, w, digest) = serving_web();
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0, T0 + 3600, T0 + 1800));
    cache.deny(key("web", &digest), T0 + 1);
    let _ = cache.put_svid(key("web", &digest), svid("s2", T0, T0 + 3600, T0 + 1800));
    cache.close_interest(&digest, T0);
    let evicted = T0 + INTEREST_KEEP_SECS + 1;
    cache.expire(evicted);
    assert!(cache.due(T0 + 1800).is_empty(), "nobody wants it: not renewed at its rotation point");
    assert_eq!(cache.x509_for(&w, None, T0 + 1800).len(), 1, "served while valid to a workload that comes back");
    assert_eq!(cache.expire(T0 + 3600), 1, "dropped at its expiry");
    assert_eq!(cache.svid_count(), 0);
}

#[test]
fn the_idlest_closed_interest_makes_room_when_the_table_is_full() {
    let cache = Cache::default();
    cache.replace_entries(vec![entry("web", &["unix:uid:1000"])]);
    let mut digests = Vec::with_capacity(MAX_INTERESTS);
    for n in 0..MAX_INTERESTS {
        // Within one grace period, so every one is still wanted; the second
        // is the idlest by a second.
        let t = if n == 1 { T0 - 1 } else { T0 + i64::try_from(n / 20).unwrap() };
        let w = workload(&["unix:uid:1000", &format!("unix:gid:{n}")]);
        let d = cache.open_interest(&w, None, t);
        // All but the first closed, each at the time it was opened; the first stays open.
        if n > 0 {
            cache.close_interest(&d, t);
        }
        digests.push(d);
    }
    let now = T0 + 500;
    let newest = cache.open_interest(&workload(&["unix:uid:1000", "unix:gid:999999"]), None, now);
    let due: Vec<String> = cache.due(now).into_iter().map(|d| d.key.digest).collect();
    assert_eq!(due.len(), MAX_INTERESTS);
    assert!(due.contains(&newest));
    assert!(due.contains(&digests[0]), "an interest with an open stream is never the one forgotten");
    assert!(!due.contains(&digests[1]), "the idlest closed one is");
    assert!(due.contains(&digests[2]));
}

// ---- entry set, ban, wake-ups ----

#[test]
fn a_snapshot_drops_what_was_held_for_entries_no_longer_in_it() {
    let cache = Cache::default();
    cache.replace_entries(vec![entry("web", &["unix:uid:1000"]), entry("db", &["unix:uid:1000"])]);
    let w = workload(&["unix:uid:1000"]);
    let digest = cache.open_interest(&w, None, T0);
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0, T0 + 3600, T0 + 1800));
    let _ = cache.put_svid(key("db", &digest), svid("s2", T0, T0 + 3600, T0 + 1800));
    cache.replace_entries(vec![entry("db", &["unix:uid:1000"])]);
    assert_eq!(cache.entry_count(), 1);
    let served: Vec<String> = cache.x509_for(&w, None, T0).into_iter().map(|s| s.spiffe_id).collect();
    assert_eq!(served, vec!["spiffe://example.org/db".to_owned()]);
}

#[test]
fn a_ban_clears_everything_but_keeps_the_bundle() {
    let (cache, w, digest) = serving_web();
    cache.set_bundle(bundle(AuthorityStatus::default()), T0);
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0, T0 + 3600, T0 + 1800));
    cache.clear();
    assert_eq!(cache.entry_count(), 0);
    assert_eq!(cache.svid_count(), 0);
    assert!(cache.x509_for(&w, None, T0).is_empty());
    assert!(cache.due(T0).is_empty());
    assert!(cache.bundle().is_some(), "the bundle is public: keeping it withdraws nothing");
}

#[test]
fn only_changes_that_matter_wake_the_rotation_loop_and_streams() {
    let cache = Cache::default();
    cache.replace_entries(vec![entry("web", &["unix:uid:1000"])]);
    let mut version = cache.subscribe();
    version.borrow_and_update();
    let w = workload(&["unix:uid:1000"]);
    let digest = cache.open_interest(&w, None, T0);
    assert!(version.has_changed().unwrap(), "a new evidence set changes what is due");
    version.borrow_and_update();
    cache.open_interest(&w, None, T0);
    cache.close_interest(&digest, T0);
    assert!(!version.has_changed().unwrap(), "another stream for a known one changes nothing served");
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0, T0 + 3600, T0 + 1800));
    assert!(version.has_changed().unwrap(), "a new SVID is pushed to open streams");
    version.borrow_and_update();
    cache.set_bundle(bundle(AuthorityStatus::default()), T0);
    version.borrow_and_update();
    cache.set_bundle(bundle(AuthorityStatus::default()), T0);
    assert!(!version.has_changed().unwrap(), "the same bundle again changes nothing");
    assert_eq!(cache.revoke(&[revocation("unknown", T0 + 60)], T0), 0);
    assert!(!version.has_changed().unwrap(), "a revocation of nothing held changes nothing served");
}

// ---- bind: process (issue 16) ----

/// Two process instances of one program (same evidence).
const P1: ProcessInstance = ProcessInstance { pid: 100, start_time: 5 };
const P2: ProcessInstance = ProcessInstance { pid: 101, start_time: 6 };

/// A cache serving `web` (unbound) and `job` (bound to its process) to
/// uid 1000; returns the cache, the workload and its digest.
fn serving_bound() -> (Cache, Evidence, String) {
    let cache = Cache::default();
    let mut job = entry("job", &["unix:uid:1000"]);
    job.bind = Bind::Process;
    cache.replace_entries(vec![entry("web", &["unix:uid:1000"]), job]);
    let w = workload(&["unix:uid:1000", "unix:gid:1000"]);
    let digest = cache.open_interest(&w, None, T0);
    (cache, w, digest)
}

fn bound_key(digest: &str, instance: ProcessInstance) -> SvidKey {
    SvidKey { entry_id: "job".into(), digest: digest.to_owned(), instance: Some(instance) }
}

#[test]
fn a_bound_entry_is_issued_per_process_instance_never_shared() {
    let (cache, w, digest) = serving_bound();
    assert_eq!(due_keys(&cache, T0), vec![(key("web", &digest), false)], "no instance asked: only the unbound one");
    assert!(cache.open_instance(P1, &w, None), "the first call watches the process");
    assert!(!cache.open_instance(P1, &w, None), "later calls do not watch it again");
    assert!(cache.open_instance(P2, &w, None));
    let mut due: Vec<SvidKey> = cache.due(T0).into_iter().map(|d| d.key).filter(|k| k.entry_id == "job").collect();
    due.sort_by_key(|k| k.instance);
    assert_eq!(due, vec![bound_key(&digest, P1), bound_key(&digest, P2)], "one each, same evidence");
    assert_eq!(cache.put_svid(bound_key(&digest, P1), svid("s1", T0, T0 + 3600, T0 + 1800)), Kept::Yes);
    assert_eq!(cache.put_svid(key("web", &digest), svid("w1", T0, T0 + 3600, T0 + 1800)), Kept::Yes);
    let served = |p| cache.x509_for(&w, p, T0).into_iter().map(|s| s.chain).collect::<Vec<_>>();
    assert_eq!(served(Some(P1)).len(), 2, "P1: its own bound SVID and the shared one");
    assert_eq!(served(Some(P2)), vec![vec![b"w1".to_vec()]], "P2 never gets P1's");
    assert_eq!(served(None), vec![vec![b"w1".to_vec()]], "a caller whose instance is unknown gets no bound SVID");
    assert!(cache.pending(&w, Some(P2), T0), "P2's own is still to come");
    assert!(!cache.pending(&w, None, T0), "nothing bound is waited for without an instance");
}

#[test]
fn an_ended_instance_loses_everything_bound_and_gets_nothing_more() {
    let (cache, w, digest) = serving_bound();
    let _ = cache.open_instance(P1, &w, None);
    let _ = cache.open_instance(P2, &w, None);
    let _ = cache.put_svid(bound_key(&digest, P1), svid("s1", T0, T0 + 3600, T0 + 1800));
    let _ = cache.put_svid(bound_key(&digest, P2), svid("s2", T0, T0 + 3600, T0 + 1800));
    let _ = cache.put_svid(key("web", &digest), svid("w1", T0, T0 + 3600, T0 + 1800));
    assert_eq!(cache.put_jwt(&bound_key(&digest, P1), &["db".into()], jwt("j1", T0 + 300, T0 + 150)), Kept::Yes);
    let mut version = cache.subscribe();
    version.borrow_and_update();
    let mut ended = cache.end_instance(P1);
    ended.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        ended,
        vec![Ended { id: "j1".into(), not_after: T0 + 300 }, Ended { id: "s1".into(), not_after: T0 + 3600 }]
    );
    assert!(version.has_changed().unwrap(), "open streams are woken at once");
    assert_eq!(cache.x509_for(&w, Some(P1), T0).len(), 1, "only the unbound SVID is left to P1's evidence");
    assert_eq!(cache.x509_for(&w, Some(P2), T0).len(), 2, "P2 keeps its own");
    assert!(!cache.instance_live(P1));
    assert!(cache.due(T0).iter().all(|d| d.key.instance != Some(P1)), "nothing is issued for it again");
    assert_eq!(
        cache.put_svid(bound_key(&digest, P1), svid("late", T0, T0 + 3600, T0 + 1800)),
        Kept::ProcessEnded,
        "one signed while it exited is refused, to be reported"
    );
    assert_eq!(
        cache.put_jwt(&bound_key(&digest, P1), &["db".into()], jwt("j2", T0 + 300, T0 + 150)),
        Kept::ProcessEnded
    );
    assert!(cache.end_instance(P1).is_empty(), "a second end finds nothing");
}

#[test]
fn a_task_process_hands_its_jwt_on_to_its_task_but_not_its_x509() {
    let (cache, w, digest) = serving_bound();
    let mut job = entry("job", &["unix:uid:1000"]);
    job.bind = Bind::Task;
    cache.upsert_entry(job);
    let _ = cache.open_instance(P1, &w, None);
    assert!(cache.due(T0).iter().any(|d| d.key == bound_key(&digest, P1)), "held per process, like bind: process");
    let _ = cache.put_svid(bound_key(&digest, P1), svid("s1", T0, T0 + 3600, T0 + 1800));
    assert_eq!(cache.put_jwt(&bound_key(&digest, P1), &["db".into()], jwt("j1", T0 + 300, T0 + 150)), Kept::Yes);
    assert_eq!(
        cache.end_instance(P1),
        vec![Ended { id: "s1".into(), not_after: T0 + 3600 }],
        "the X.509-SVID ends with its process; the JWT-SVID lives until the task ends"
    );
    assert!(cache.jwt(&bound_key(&digest, P1), &["db".into()], T0).is_none(), "withdrawn here all the same");
}

#[test]
fn a_change_of_bind_drops_what_was_held_under_the_old_one() {
    let (cache, w, digest) = serving_web();
    let _ = cache.put_svid(key("web", &digest), svid("s1", T0, T0 + 3600, T0 + 1800));
    let mut bound = entry("web", &["unix:uid:1000"]);
    bound.bind = Bind::Process;
    cache.upsert_entry(bound);
    assert!(cache.x509_for(&w, None, T0).is_empty(), "the shared SVID is not kept for a now-bound entry");
}

// ---- WIT-SVIDs ----

fn wit(jti: &str, expires_at: i64, refresh_at: i64) -> HeldWit {
    HeldWit {
        token: format!("wit-{jti}"),
        key: format!("{{\"d\":\"secret-{jti}\"}}"),
        jti: jti.to_owned(),
        kid: "k1".into(),
        expires_at,
        refresh_at,
    }
}

#[test]
fn a_wit_is_reused_until_its_refresh_point_and_never_served_expired() {
    let (cache, _, digest) = serving_web();
    let k = key("web", &digest);
    assert_eq!(cache.put_wit(&k, wit("w1", T0 + 300, T0 + 150)), Kept::Yes);
    assert_eq!(cache.wit(&k, T0 + 149).map(|w| w.jti), Some("w1".to_owned()));
    assert!(cache.wit_servable("w1", T0 + 299));
    assert!(cache.wit(&k, T0 + 150).is_none(), "minted afresh from its refresh point");
    assert!(!cache.wit_servable("w1", T0 + 300), "never served at or past its expiry");
    assert!(cache.holds(&digest, "w1", T0));
    assert_eq!(cache.next_expiry(), Some(T0 + 300), "the sweep wakes at its expiry");
    let mut version = cache.subscribe();
    version.borrow_and_update();
    cache.expire(T0 + 300);
    assert!(version.has_changed().unwrap(), "open WIT streams are woken when one expires");
    assert!(!cache.holds(&digest, "w1", T0), "swept at its expiry");
    assert_eq!(cache.put_wit(&key("gone", &digest), wit("w2", T0 + 300, T0 + 150)), Kept::No, "entry not served");
}

#[test]
fn a_revoked_wit_is_dropped_refused_and_its_stream_woken() {
    let (cache, _, digest) = serving_web();
    let k = key("web", &digest);
    let _ = cache.put_wit(&k, wit("w1", T0 + 300, T0 + 150));
    let mut version = cache.subscribe();
    version.borrow_and_update();
    // Revoked as a `jwt` record: named by its jti.
    assert_eq!(cache.revoke(&[revocation("w1", T0 + 300)], T0), 1);
    assert!(version.has_changed().unwrap());
    assert!(cache.wit(&k, T0).is_none());
    assert!(!cache.wit_servable("w1", T0));
    assert_eq!(cache.put_wit(&k, wit("w1", T0 + 300, T0 + 150)), Kept::No, "a revoked jti is never kept again");
}

#[test]
fn a_wit_goes_with_its_signing_key_and_its_entry() {
    let (cache, _, digest) = serving_web();
    let k = key("web", &digest);
    let _ = cache.put_wit(&k, wit("w1", T0 + 300, T0 + 150));
    cache.set_bundle(bundle(AuthorityStatus { tainted: vec!["k1".into()], ..Default::default() }), T0);
    assert!(cache.wit(&k, T0).is_none(), "a tainted key: minted again now");
    let _ = cache.put_wit(&k, wit("w2", T0 + 300, T0 + 150));
    cache.upsert_entry(entry("web", &["unix:uid:1000"]));
    assert!(cache.wit(&k, T0).is_none(), "an entry change: minted again");
    let _ = cache.put_wit(&k, wit("w3", T0 + 300, T0 + 150));
    cache.delete_entry("web");
    assert!(!cache.wit_servable("w3", T0));
}

#[test]
fn a_bound_wit_ends_with_its_process_and_a_tasks_with_its_task() {
    let (cache, w, digest) = serving_bound();
    let _ = cache.open_instance(P1, &w, None);
    assert_eq!(cache.put_wit(&bound_key(&digest, P1), wit("w1", T0 + 300, T0 + 150)), Kept::Yes);
    assert_eq!(cache.end_instance(P1), vec![Ended { id: "w1".into(), not_after: T0 + 300 }]);
    assert_eq!(cache.put_wit(&bound_key(&digest, P1), wit("w2", T0 + 300, T0 + 150)), Kept::ProcessEnded);
    let mut job = entry("job", &["unix:uid:1000"]);
    job.bind = Bind::Task;
    cache.upsert_entry(job);
    let _ = cache.open_instance(P2, &w, None);
    let _ = cache.put_wit(&bound_key(&digest, P2), wit("w3", T0 + 300, T0 + 150));
    assert!(cache.end_instance(P2).is_empty(), "a task's WIT lives until the task ends (the server revokes it)");
    assert!(cache.wit(&bound_key(&digest, P2), T0).is_none(), "withdrawn here all the same");
}

#[test]
fn a_held_wit_never_shows_its_key_in_debug() {
    let shown = format!("{:?}", wit("w1", T0 + 300, T0 + 150));
    assert!(!shown.contains("secret"), "{shown}");
    assert!(shown.contains("<redacted>") && shown.contains("w1"), "{shown}");
}
