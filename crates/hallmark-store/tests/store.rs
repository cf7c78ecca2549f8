//! Datastore tests, each run on a real SQLite file and, when
//! `HALLMARK_TEST_POSTGRES` names a server, on a fresh PostgreSQL database.

// Integration tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::unreachable)]

use hallmark_core::{CredentialKind, EntrySpec, RevocationKind, SpiffeId, TrustDomain, Ttl, ValidEntrySpec};
use hallmark_store::{
    AuthorityRow, AuthorityState, JoinTokenError, NewException, NodeSvid, Recorder, RevokeTarget, Store, StoreError,
    hash_secret,
};
use sqlx::Row;

/// One empty database per available backend: (backend, URL).
async fn store_urls() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dir = std::env::temp_dir().join(format!("hallmark-store-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    out.push(("sqlite".to_owned(), format!("sqlite://{}", dir.join("test.db").display())));
    if let Some(url) = hallmark_testkit::postgres_db("hm") {
        out.push(("postgres".to_owned(), url));
    }
    out
}

/// Opens one store per available backend, each empty.
async fn stores() -> Vec<(String, Store)> {
    let mut out = Vec::new();
    for (name, url) in store_urls().await {
        out.push((name, Store::open(&url).await.unwrap()));
    }
    out
}

/// A recorder that writes one unsigned record of the change.
fn rec<T: ?Sized>() -> Recorder<'static, T> {
    Recorder::unsigned(|_| vec![event(0)])
}

/// An exception on entry `e1`, asked for by `alice`.
fn exception(rule: &'static str, value: &'static str, expires_at: i64) -> NewException<'static> {
    NewException { entry_id: "e1", rule, value, justification: "migration", expires_at, requested_by: "alice" }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    // The process id too: nextest runs each test in a process of its own,
    // each counting from 0.
    format!("{t:x}_{:x}_{:x}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn spec(id: &str, uid: u32) -> ValidEntrySpec {
    let td = TrustDomain::new("example.org").unwrap();
    EntrySpec {
        spiffe_id: format!("spiffe://example.org/{id}"),
        parent_id: Some("spiffe://example.org/hallmark/agent/join_token/a1".into()),
        selectors: vec![format!("unix:uid:{uid}"), "unix:path:/usr/bin/x".into()],
        owner: "team-a".into(),
        dns_names: vec!["web.internal".into()],
        hint: Some("primary".into()),
        ..Default::default()
    }
    .validate(&td, None, Ttl::parse("1h").unwrap(), Ttl::parse("5m").unwrap())
    .unwrap()
}

#[tokio::test]
async fn entry_crud_and_change_log() {
    for (name, s) in stores().await {
        let start = s.last_change().await.unwrap();
        let e = s.create_entry(&spec("web", 1000), rec()).await.unwrap();
        assert_eq!(e.revision, 1, "{name}");
        assert_eq!(e.hint.as_deref(), Some("primary"));
        assert_eq!(s.entry(&e.id).await.unwrap().unwrap(), e, "{name}");
        // Same ID, parent and selectors: refused, nothing stored.
        let dup = s.create_entry(&spec("web", 1000), rec()).await.unwrap_err();
        assert!(matches!(dup, StoreError::Duplicate(_)), "{name}: {dup}");
        assert_eq!(s.entries(None).await.unwrap().len(), 1, "{name}");
        // Update with the right revision, then a stale one.
        let mut changed = spec("web", 1001);
        changed.parent_id = SpiffeId::new("spiffe://example.org/hallmark/agent/join_token/b2").unwrap();
        let u = s.update_entry(&e.id, &changed, Some(1), rec()).await.unwrap();
        assert_eq!(u.revision, 2);
        assert!(
            matches!(s.update_entry(&e.id, &changed, Some(1), rec()).await, Err(StoreError::Conflict { .. })),
            "{name}"
        );
        // A parent change logs the entry for both agents.
        let log = s.changes_since(start, 100).await.unwrap();
        let parents: Vec<&str> = log.iter().map(|c| c.parent_id.as_str()).collect();
        assert_eq!(parents.len(), 3, "{name}: {log:?}");
        assert!(parents.contains(&"spiffe://example.org/hallmark/agent/join_token/a1"));
        assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
        let (snap, seq) = s.entries_snapshot("spiffe://example.org/hallmark/agent/join_token/b2").await.unwrap();
        assert_eq!(snap.len(), 1);
        assert_eq!(seq, log.last().unwrap().seq);
        assert!(s.entries_snapshot("spiffe://example.org/hallmark/agent/join_token/a1").await.unwrap().0.is_empty());
        let gone = s.delete_entry(&e.id, rec()).await.unwrap();
        assert_eq!(gone.id, e.id);
        assert!(s.entry(&e.id).await.unwrap().is_none());
        assert!(matches!(s.delete_entry(&e.id, rec()).await, Err(StoreError::NotFound(_))), "{name}");
        assert_eq!(s.changes_since(seq, 100).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn join_tokens_are_single_use() {
    for (name, s) in stores().await {
        let now = hallmark_core::now_unix();
        s.create_join_token(&hash_secret("t1"), now + 600, rec()).await.unwrap();
        s.create_join_token(&hash_secret("old"), now - 1, rec()).await.unwrap();
        assert_eq!(s.consume_join_token(&hash_secret("t1"), "agent-a", now).await.unwrap(), Ok(()), "{name}");
        assert_eq!(s.consume_join_token(&hash_secret("t1"), "agent-b", now).await.unwrap(), Err(JoinTokenError::Used));
        assert_eq!(
            s.consume_join_token(&hash_secret("old"), "agent-c", now).await.unwrap(),
            Err(JoinTokenError::Expired)
        );
        assert_eq!(
            s.consume_join_token(&hash_secret("nope"), "agent-d", now).await.unwrap(),
            Err(JoinTokenError::Unknown)
        );
    }
}

fn node_svid<'a>(agent_id: &'a str, serial: &'a str, previous: Option<&'a str>, not_after: i64) -> NodeSvid<'a> {
    NodeSvid {
        agent_id,
        attestation_type: "join_token",
        attested: None,
        serial,
        previous_serial: previous,
        authority_id: "ca1",
        not_after,
    }
}

#[tokio::test]
async fn nodes_tokens_authorities() {
    for (name, s) in stores().await {
        s.upsert_node(&node_svid("spiffe://example.org/a", "01", None, 100)).await.unwrap();
        s.upsert_node(&node_svid("spiffe://example.org/a", "02", Some("01"), 200)).await.unwrap();
        let n = s.node("spiffe://example.org/a").await.unwrap().unwrap();
        assert_eq!((n.serial.as_str(), n.not_after, n.banned), ("02", 200, false), "{name}");
        assert_eq!(n.previous_serial.as_deref(), Some("01"), "{name}");
        s.add_admin_token(&hash_secret("secret"), "bootstrap", "trust-admin", rec()).await.unwrap();
        assert_eq!(s.admin_token(&hash_secret("secret")).await.unwrap().unwrap().role, "trust-admin");
        assert!(s.admin_token(&hash_secret("other")).await.unwrap().is_none());
        let now = hallmark_core::now_unix();
        let row = |id: &str, state, not_after| AuthorityRow {
            id: id.into(),
            kind: "jwt".into(),
            public: "{}".into(),
            server_id: "srv".into(),
            state,
            not_before: now - 10,
            not_after,
            tainted_at: None,
            crl: None,
        };
        let a = row("k1", AuthorityState::Active, now + 60);
        s.publish_authority(&a).await.unwrap();
        s.publish_authority(&a).await.unwrap();
        s.publish_authority(&row("k0", AuthorityState::Active, now - 60)).await.unwrap();
        let (list, seq) = s.authorities(now).await.unwrap();
        assert_eq!(list, vec![a], "{name}");
        assert_eq!(seq, 2, "{name}: sequence counts new authorities only");
        // Lifecycle: prepared -> active (the old active becomes old) -> tainted -> revoked.
        s.publish_authority(&row("k2", AuthorityState::Prepared, now + 120)).await.unwrap();
        assert!(!s.taint_authority("k1", now).await.unwrap(), "the active one cannot be tainted");
        s.activate_authority("k2").await.unwrap();
        assert!(matches!(s.activate_authority("k2").await, Err(StoreError::NotFound(_))), "only prepared ones");
        let states = |list: Vec<AuthorityRow>| list.into_iter().map(|r| (r.id, r.state)).collect::<Vec<_>>();
        assert_eq!(
            states(s.authorities(now).await.unwrap().0),
            vec![("k1".into(), AuthorityState::Old), ("k2".into(), AuthorityState::Active)],
            "{name}"
        );
        assert!(!s.revoke_authority("k1").await.unwrap(), "revoking needs a taint first");
        assert!(s.taint_authority("k1", now).await.unwrap());
        assert!(!s.taint_authority("k1", now).await.unwrap(), "once");
        assert!(s.revoke_authority("k1").await.unwrap());
        let (list, seq) = s.authorities(now).await.unwrap();
        assert_eq!(list[0].state, AuthorityState::Revoked);
        assert_eq!(seq, 4, "{name}: a revocation changes the bundle");
        s.set_authority_crl("k2", "AAAA").await.unwrap();
        assert_eq!(s.authority("k2").await.unwrap().unwrap().crl.as_deref(), Some("AAAA"));
    }
}

#[tokio::test]
async fn corrupt_rows_are_errors_not_panics() {
    for (name, s) in stores().await {
        let e = s.create_entry(&spec("web", 1000), rec()).await.unwrap();
        sqlx::query("UPDATE entries SET selectors = 'bogus' WHERE id = $1")
            .bind(e.id.clone())
            .execute(s.pool())
            .await
            .unwrap();
        let err = s.entry(&e.id).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{name}: {err}");
        assert!(err.to_string().contains(&e.id));
    }
}

/// Issue 15: kinds are stored as their plain names, and a kind this binary
/// does not know (a hand-edited or damaged row) is a `Corrupt` error naming
/// the value and the row, never a panic.
#[tokio::test]
async fn unknown_credential_and_revocation_kinds_are_corrupt_rows() {
    let now = hallmark_core::now_unix();
    let raw = |table: &'static str, key: &'static str| format!("SELECT kind FROM {table} WHERE {key} = $1");
    for (name, s) in stores().await {
        let mut e = event(1);
        e.credential = Some(hallmark_store::Credential {
            id: "s1".into(),
            kind: CredentialKind::Jwt,
            entry_id: "entry-a".into(),
            spiffe_id: "spiffe://example.org/w".into(),
            node_id: "spiffe://example.org/hallmark/agent/a".into(),
            class: "machine".into(),
            owner: "a".into(),
            policy_version: 1,
            evidence_digest: "d".into(),
            issued_at: now,
            not_before: now - 10,
            not_after: now + 600,
            revoked_at: None,
            revoke_reason: None,
            authority_id: "kid1".into(),
            audit_seq: 0,
            delivered_to: None,
            delivered_at: None,
            task_id: None,
            person_id: None,
            audience: Some("db".into()),
        });
        s.append_audit(&[e]).await.unwrap();
        let stored = sqlx::query(sqlx::AssertSqlSafe(raw("credentials", "id")))
            .bind("s1".to_owned())
            .fetch_one(s.pool())
            .await
            .unwrap();
        assert_eq!(stored.try_get::<String, _>("kind").unwrap(), "jwt", "{name}");
        assert_eq!(s.credential("s1").await.unwrap().unwrap().kind, CredentialKind::Jwt);

        let set_credential_kind = |kind: &'static str| {
            sqlx::query("UPDATE credentials SET kind = $1 WHERE id = 's1'").bind(kind).execute(s.pool())
        };
        set_credential_kind("x.509").await.unwrap();
        for err in [
            s.credential("s1").await.unwrap_err(),
            s.credentials(&Default::default(), 10).await.unwrap_err(),
            s.revoke(&RevokeTarget::Credential("s1".into()), "leaked", now, rec()).await.unwrap_err(),
        ] {
            assert!(matches!(err, StoreError::Corrupt { table: "credentials", .. }), "{name}: {err}");
            let text = err.to_string();
            assert!(text.contains("`x.509`") && text.contains("`s1`"), "{name}: {text}");
        }
        // The refused revocation changed nothing.
        assert_eq!(s.last_revocation().await.unwrap(), 0, "{name}");

        set_credential_kind("jwt").await.unwrap();
        let out = s.revoke(&RevokeTarget::Credential("s1".into()), "leaked", now, rec()).await.unwrap();
        let log = s.revocations_since(0, 10).await.unwrap();
        assert_eq!(log.iter().map(|r| r.kind).collect::<Vec<_>>(), [RevocationKind::Jwt], "{name}");
        let stored = sqlx::query(sqlx::AssertSqlSafe(raw("revocations", "seq")))
            .bind(out.last_seq)
            .fetch_one(s.pool())
            .await
            .unwrap();
        assert_eq!(stored.try_get::<String, _>("kind").unwrap(), "jwt", "{name}");

        sqlx::query("UPDATE revocations SET kind = 'entry' WHERE seq = $1")
            .bind(out.last_seq)
            .execute(s.pool())
            .await
            .unwrap();
        for err in [s.revocations_since(0, 10).await.unwrap_err(), s.live_revocations(now).await.unwrap_err()] {
            assert!(matches!(err, StoreError::Corrupt { table: "revocations", .. }), "{name}: {err}");
            let text = err.to_string();
            assert!(text.contains("`entry`") && text.contains(&format!("record {}", out.last_seq)), "{name}: {text}");
        }
    }
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_run_once() {
    let dir = std::env::temp_dir().join(format!("hallmark-reopen-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("r.db").display());
    let s = Store::open(&url).await.unwrap();
    s.create_entry(&spec("web", 1), rec()).await.unwrap();
    drop(s);
    let s = Store::open(&url).await.unwrap();
    assert_eq!(s.entries(None).await.unwrap().len(), 1);
    assert!(matches!(Store::open("mysql://x").await, Err(StoreError::Url(_))));
}

/// Several servers starting at once on one fresh PostgreSQL database must all
/// come up: exactly one runs the migrations.
#[tokio::test]
async fn concurrent_start_on_one_postgres() {
    let Some(url) = hallmark_testkit::postgres_db("hm") else { return };
    let opens: Vec<_> = (0..6)
        .map(|_| {
            tokio::spawn({
                let u = url.clone();
                async move { Store::open(&u).await }
            })
        })
        .collect();
    for o in opens {
        o.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn policy_versions_are_append_only() {
    for (name, s) in stores().await {
        assert!(s.current_policy().await.unwrap().is_none(), "{name}");
        assert_eq!(s.add_policy("permit(principal, action, resource);", "h1", "alice", rec()).await.unwrap(), 1);
        assert_eq!(s.add_policy("forbid(principal, action, resource);", "h2", "bob", rec()).await.unwrap(), 2);
        let cur = s.current_policy().await.unwrap().unwrap();
        assert_eq!((cur.version, cur.created_by.as_str()), (2, "bob"), "{name}");
        assert_eq!(s.policy(1).await.unwrap().unwrap().sha256, "h1");
        assert_eq!(s.policy_history().await.unwrap().iter().map(|p| p.version).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(s.policy_version().await.unwrap(), 2);
    }
}

#[tokio::test]
async fn exceptions_need_a_second_person_and_expire() {
    use hallmark_store::ExceptionError;
    for (name, s) in stores().await {
        let now = hallmark_core::now_unix();
        let x = s.request_exception(&exception("ttl_above_class_max", "48h", now + 100), rec()).await.unwrap();
        assert_eq!(x.state(now), "pending");
        assert!(s.active_exceptions("e1", now).await.unwrap().is_empty(), "{name}: pending is not active");
        assert_eq!(
            s.approve_exception(&x.id, "alice", now, rec()).await.unwrap(),
            Err(ExceptionError::SelfApproval("alice".into()))
        );
        let ok = s.approve_exception(&x.id, "bob", now, rec()).await.unwrap().unwrap();
        assert_eq!(ok.approved_by.as_deref(), Some("bob"));
        assert!(matches!(
            s.approve_exception(&x.id, "carol", now, rec()).await.unwrap(),
            Err(ExceptionError::State { .. })
        ));
        assert_eq!(s.active_exceptions("e1", now).await.unwrap().len(), 1);
        // Past its expiry it is no longer active, and its expiry is recorded once.
        assert!(s.active_exceptions("e1", now + 100).await.unwrap().is_empty());
        assert_eq!(s.record_expired_exceptions(now + 100, rec()).await.unwrap().len(), 1, "{name}");
        assert!(s.record_expired_exceptions(now + 200, rec()).await.unwrap().is_empty());
        // Revocation ends an active one at once.
        let y = s.request_exception(&exception("long_lived_certificate", "30d", now + 1000), rec()).await.unwrap();
        s.approve_exception(&y.id, "bob", now, rec()).await.unwrap().unwrap();
        assert_eq!(s.active_exceptions("e1", now).await.unwrap().len(), 2);
        s.revoke_exception(&y.id, "bob", now, rec()).await.unwrap().unwrap();
        let active: Vec<String> = s.active_exceptions("e1", now).await.unwrap().into_iter().map(|x| x.id).collect();
        assert_eq!(active, vec![x.id.clone()], "{name}: the revoked one is gone at once");
        assert_eq!(s.exception(&y.id).await.unwrap().unwrap().state(now), "revoked");
    }
}

#[tokio::test]
async fn the_database_refuses_recovery_on_machine_entries() {
    for (name, s) in stores().await {
        let e = s.create_entry(&spec("web", 1000), rec()).await.unwrap();
        let err =
            sqlx::query("UPDATE entries SET recovery = 1 WHERE id = $1").bind(e.id.clone()).execute(s.pool()).await;
        assert!(err.is_err(), "{name}: CHECK constraint must refuse recovery on a machine entry");
        let mut machine = spec("bot", 1002);
        machine.recovery = true;
        assert!(s.create_entry(&machine, rec()).await.is_err(), "{name}");
    }
}

/// Issue 19: the store itself refuses a registration entry for a person
/// (class `human`, an ID under `/human/`, a recovery path), on create, batch
/// and update, whoever calls it: the Workload API can never serve one.
#[tokio::test]
async fn the_store_refuses_entries_for_people() {
    for (name, s) in stores().await {
        let mut human = spec("alice", 1001);
        human.class = hallmark_core::Class::Human;
        let mut human_id = spec("bob", 1002);
        human_id.spiffe_id = "spiffe://example.org/human/example.com/bob".parse().unwrap();
        let mut upper = spec("carol", 1003);
        upper.spiffe_id = "spiffe://example.org/HUMAN/carol".parse().unwrap();
        let mut recovery = spec("dave", 1004);
        recovery.recovery = true;
        for bad in [&human, &human_id, &upper, &recovery] {
            let err = s.create_entry(bad, rec()).await.unwrap_err();
            assert!(matches!(err, StoreError::PersonOnWorkloadPath(_)), "{name}: {err}");
            let err = s.create_entries(std::slice::from_ref(bad), rec()).await.unwrap_err();
            assert!(matches!(err, StoreError::PersonOnWorkloadPath(_)), "{name}: {err}");
        }
        let ok = s.create_entry(&spec("web", 1000), rec()).await.unwrap();
        let err = s.update_entry(&ok.id, &human_id, None, rec()).await.unwrap_err();
        assert!(matches!(err, StoreError::PersonOnWorkloadPath(_)), "{name}: {err}");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM entries").fetch_one(s.pool()).await.unwrap();
        assert_eq!(n, 1, "{name}: nothing but the workload's entry is stored");
    }
}

/// Issue 16: `bind` is stored, read back by every path (one entry, the
/// change-log pages the server loads from), changed by an update, and a
/// value this binary does not know is refused by the database.
#[tokio::test]
async fn entries_keep_their_bind() {
    for (name, s) in stores().await {
        let plain = s.create_entry(&spec("web", 1000), rec()).await.unwrap();
        assert_eq!(plain.bind, hallmark_core::Bind::None, "{name}");
        let mut bound = spec("job", 1001);
        bound.bind = hallmark_core::Bind::Process;
        let b = s.create_entry(&bound, rec()).await.unwrap();
        assert_eq!(b.bind, hallmark_core::Bind::Process, "{name}");
        let mut all = Vec::new();
        let mut after = String::new();
        while let Some((page, last)) = s.entries_page(&after, 10).await.unwrap() {
            all.extend(hallmark_store::parse_entries_page(&page).unwrap());
            after = last;
        }
        let paged = all.iter().find(|e| e.id == b.id).unwrap();
        assert_eq!(paged, &b, "{name}: a page reads the same entry");
        let unbound = s.update_entry(&b.id, &spec("job", 1001), None, rec()).await.unwrap();
        assert_eq!(unbound.bind, hallmark_core::Bind::None, "{name}");
        let bad =
            sqlx::query("UPDATE entries SET bind = 'thread' WHERE id = $1").bind(b.id.clone()).execute(s.pool()).await;
        assert!(bad.is_err(), "{name}: CHECK constraint must refuse an unknown bind");
    }
}

#[tokio::test]
async fn owners_deactivate_and_transfer() {
    for (name, s) in stores().await {
        s.create_owner("team-a", "a@example.org", "first", &Default::default(), rec()).await.unwrap();
        s.create_owner("team-b", "b@example.org", "", &Default::default(), rec()).await.unwrap();
        assert!(
            matches!(
                s.create_owner("team-a", "x@example.org", "", &Default::default(), rec()).await,
                Err(StoreError::Duplicate(_))
            ),
            "{name}"
        );
        let e = s.create_entry(&spec("web", 1000), rec()).await.unwrap();
        let start = s.last_change().await.unwrap();
        let d = s.deactivate_owner("team-a", rec()).await.unwrap();
        assert!(!d.active);
        assert_eq!(s.transfer_entries("team-a", "team-b", rec()).await.unwrap(), 1, "{name}");
        let moved = s.entry(&e.id).await.unwrap().unwrap();
        assert_eq!((moved.owner.as_str(), moved.revision), ("team-b", 2));
        assert_eq!(s.changes_since(start, 10).await.unwrap().len(), 1, "the move is pushed to the agent");
        assert_eq!(s.owners().await.unwrap().len(), 2);
        assert!(matches!(s.deactivate_owner("nobody", rec()).await, Err(StoreError::NotFound(_))));
    }
}

fn event(i: i64) -> hallmark_store::AuditEvent {
    hallmark_store::AuditEvent {
        at: 1_700_000_000 + i,
        actor: "node:spiffe://example.org/hallmark/agent/a".into(),
        action: "issue_x509".into(),
        subject: format!("entry-{i}"),
        outcome: "ok".into(),
        policy_version: 1,
        details: serde_json::json!({"serial": format!("{i:x}"), "evidence": "abc"}),
        credential: None,
        denial: None,
        evidence: None,
    }
}

#[tokio::test]
async fn audit_chain_detects_edits_and_deletions() {
    for (name, s) in stores().await {
        let events: Vec<_> = (1..=20).map(event).collect();
        assert_eq!(s.append_audit(&events[..10]).await.unwrap(), (1..=10).collect::<Vec<_>>());
        s.append_audit(&events[10..]).await.unwrap();
        let ok = s.verify_audit().await.unwrap();
        assert_eq!((ok.records, ok.broken.clone()), (20, None), "{name}");
        assert_eq!(s.audit_records(0, 1_700_000_005, 1_700_000_007, 100).await.unwrap().len(), 3);
        // Even an edit that keeps the details' JSON meaning (a space) is found.
        sqlx::query("UPDATE audit SET details = REPLACE(details, ':', ': ') WHERE seq = 12")
            .execute(s.pool())
            .await
            .unwrap();
        assert_eq!(s.verify_audit().await.unwrap().broken.map(|b| b.seq), Some(12), "{name}");
        // Edit one record's content directly in the database.
        sqlx::query("UPDATE audit SET outcome = 'denied' WHERE seq = 7").execute(s.pool()).await.unwrap();
        let v = s.verify_audit().await.unwrap();
        assert_eq!(v.broken.as_ref().map(|b| b.seq), Some(7), "{name}: {v:?}");
        assert!(v.broken.unwrap().problem.contains("edited"));
        // Even an edit that recomputes that record's own hash breaks the next link.
        let r = &s.audit_records(0, 1_700_000_007, 1_700_000_007, 1).await.unwrap()[0];
        let rehash = hallmark_store::record_hash(7, &r.event, &r.prev_hash);
        sqlx::query("UPDATE audit SET hash = $1 WHERE seq = 7").bind(rehash).execute(s.pool()).await.unwrap();
        assert_eq!(s.verify_audit().await.unwrap().broken.map(|b| b.seq), Some(8), "{name}");
        // Deleting a record is detected at its position.
        sqlx::query("DELETE FROM audit WHERE seq = 3").execute(s.pool()).await.unwrap();
        let v = s.verify_audit().await.unwrap();
        assert_eq!(v.broken.as_ref().map(|b| b.seq), Some(3), "{name}: {v:?}");
        assert!(v.broken.unwrap().problem.contains("missing"));
    }
}

/// An issuance record naming the evidence set `set`, as the server writes it.
fn issued_on(i: i64, set: &hallmark_store::EvidenceSet) -> hallmark_store::AuditEvent {
    let mut e = event(i);
    e.details = serde_json::json!({ "serial": format!("{i:x}"), "evidence_digest": set.digest });
    e.evidence = Some(set.clone());
    e
}

#[tokio::test]
async fn evidence_sets_are_stored_once_and_checked_against_their_digest() {
    let selectors: hallmark_core::SelectorSet =
        ["unix:uid:1000", "unix:gid:100", &format!("unix:sha256:{}", "ab".repeat(32))]
            .iter()
            .map(|s| s.parse::<hallmark_core::Selector>().unwrap())
            .collect();
    let process = hallmark_core::ProcessInstance::new(4242, 987_654, 1_767_225_600).unwrap();
    let with_process = hallmark_store::EvidenceSet::new(&selectors, Some(process));
    let without = hallmark_store::EvidenceSet::new(&selectors, None);
    // Without process facts, a set has the digest Hallmark always recorded.
    assert_eq!(without.digest, hallmark_core::evidence_digest(&selectors));
    assert_ne!(with_process.digest, without.digest);
    for (name, s) in stores().await {
        // Twice in one batch, again in a later one, and on a signed append
        // (another statement): stored once each.
        s.append_audit(&[event(1), issued_on(2, &with_process), issued_on(3, &with_process)]).await.unwrap();
        s.append_audit(&[issued_on(4, &with_process), issued_on(5, &without)]).await.unwrap();
        s.append_audit_signed(&[issued_on(6, &without)], &TestSigner::Working).await.unwrap();
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM evidence").fetch_one(s.pool()).await.unwrap().get("n");
        assert_eq!(n, 2, "{name}");
        assert_eq!(s.evidence_set(&with_process.digest).await.unwrap(), Some(Ok(with_process.clone())), "{name}");
        assert_eq!(s.evidence_set(&without.digest).await.unwrap(), Some(Ok(without.clone())), "{name}");
        assert_eq!(s.evidence_set("0011").await.unwrap(), None, "{name}");
        let found =
            s.evidence_sets(&[with_process.digest.clone(), "0011".into(), without.digest.clone()]).await.unwrap();
        assert_eq!(found.len(), 2, "{name}");
        assert_eq!(found.get(&with_process.digest), Some(&Ok(with_process.clone())));
        assert!(s.verify_audit().await.unwrap().broken.is_none(), "{name}");

        // An edited selector (the set now claims root) no longer matches its
        // digest: verify names the set at the first record naming it, and
        // reads refuse to show it.
        let digest = &with_process.digest;
        sqlx::query("UPDATE evidence SET selectors = REPLACE(selectors, 'uid:1000', 'uid:0') WHERE digest = $1")
            .bind(digest.clone())
            .execute(s.pool())
            .await
            .unwrap();
        let v = s.verify_audit().await.unwrap();
        let b = v.broken.expect("an edited evidence set verifies");
        assert_eq!(b.seq, 2, "{name}: {b:?}");
        assert!(b.problem.contains(digest.as_str()) && b.problem.contains("edited"), "{name}: {b:?}");
        assert_eq!(s.evidence_set(digest).await.unwrap(), Some(Err(hallmark_store::EvidenceMismatch::Digest)));
        sqlx::query("UPDATE evidence SET selectors = REPLACE(selectors, 'uid:0', 'uid:1000') WHERE digest = $1")
            .bind(digest.clone())
            .execute(s.pool())
            .await
            .unwrap();
        assert!(s.verify_audit().await.unwrap().broken.is_none(), "{name}: restored");
        // Another pid; process facts taken away; selectors spelling them.
        for edit in [
            "UPDATE evidence SET pid = 1 WHERE digest = $1",
            "UPDATE evidence SET start_ticks = NULL WHERE digest = $1",
            "UPDATE evidence SET pid = NULL, start_ticks = NULL, started_at = NULL, \
             selectors = selectors || '\n' || 'pid=4242' WHERE digest = $1",
        ] {
            sqlx::query(edit).bind(digest.clone()).execute(s.pool()).await.unwrap();
            let broken = s.verify_audit().await.unwrap().broken;
            assert!(broken.as_ref().is_some_and(|b| b.problem.contains(digest.as_str())), "{name}: {edit}: {broken:?}");
            sqlx::query(
                "UPDATE evidence SET selectors = $2, pid = 4242, start_ticks = 987654, started_at = 1767225600 \
                 WHERE digest = $1",
            )
            .bind(digest.clone())
            .bind(hallmark_core::canonical_selectors(&selectors))
            .execute(s.pool())
            .await
            .unwrap();
            assert!(s.verify_audit().await.unwrap().broken.is_none(), "{name}: {edit}: restored");
        }
    }
}

/// Several servers appending to one PostgreSQL at once extend a single valid chain.
#[tokio::test]
async fn audit_chain_with_several_writers_on_postgres() {
    let Some(url) = hallmark_testkit::postgres_db("hm") else { return };
    // Separate stores: separate pools and process locks, like separate servers.
    let mut writers = Vec::new();
    for w in 0..4 {
        let s = Store::open(&url).await.unwrap();
        writers.push(tokio::spawn(async move {
            for i in 0..25 {
                s.append_audit(&[event(w * 100 + i), event(w * 100 + i + 50)]).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let v = Store::open(&url).await.unwrap().verify_audit().await.unwrap();
    assert_eq!((v.records, v.broken), (200, None));
}

#[tokio::test]
async fn inventory_is_written_with_the_audit_record() {
    for (name, s) in stores().await {
        let mk = |id: &str, owner: &str, not_after: i64| {
            let mut e = event(1);
            e.credential = Some(hallmark_store::Credential {
                id: id.into(),
                kind: CredentialKind::X509,
                entry_id: format!("entry-{owner}"),
                spiffe_id: "spiffe://example.org/w".into(),
                node_id: "spiffe://example.org/hallmark/agent/a".into(),
                class: "machine".into(),
                owner: owner.into(),
                policy_version: 1,
                evidence_digest: "d".into(),
                issued_at: 100,
                not_before: 90,
                not_after,
                revoked_at: None,
                revoke_reason: None,
                authority_id: "ca1".into(),
                audit_seq: 0,
                delivered_to: None,
                delivered_at: None,
                task_id: None,
                person_id: None,
                audience: None,
            });
            e
        };
        let seqs = s.append_audit(&[mk("s1", "a", 1000), mk("s2", "b", 2000), mk("s3", "a", 3000)]).await.unwrap();
        let all = s.credentials(&Default::default(), 100).await.unwrap();
        assert_eq!(all.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec!["s1", "s2", "s3"], "{name}");
        assert_eq!(all[0].audit_seq, seqs[0]);
        let f = hallmark_store::CredentialFilter { owner: Some("a".into()), ..Default::default() };
        assert_eq!(s.credentials(&f, 100).await.unwrap().len(), 2);
        let f = hallmark_store::CredentialFilter { live_at: Some(1500), ..Default::default() };
        assert_eq!(s.credentials(&f, 100).await.unwrap().len(), 2);
        let f = hallmark_store::CredentialFilter { expiring_before: Some(2000), ..Default::default() };
        assert_eq!(s.credentials(&f, 100).await.unwrap().len(), 2);
        // A delivery report lands on the row it names, and only there.
        assert!(s.record_delivery("s2", "files:/etc/nginx/svid", 1200).await.unwrap(), "{name}");
        assert!(!s.record_delivery("nope", "files:/x", 1200).await.unwrap(), "{name}");
        let s2 = s.credential("s2").await.unwrap().unwrap();
        assert_eq!((s2.delivered_to.as_deref(), s2.delivered_at), (Some("files:/etc/nginx/svid"), Some(1200)));
        assert_eq!(s.credential("s1").await.unwrap().unwrap().delivered_to, None);
        // Pruning long-expired rows keeps the chain verifiable.
        assert_eq!(s.prune_credentials(1500, rec()).await.unwrap(), 1, "{name}");
        assert_eq!(s.credentials(&Default::default(), 100).await.unwrap().len(), 2);
        assert!(s.verify_audit().await.unwrap().broken.is_none());
        // The pruning is recorded too; an issuance after it is the newest record.
        s.append_audit(&[mk("s4", "a", 4000)]).await.unwrap();
        // Deleting the newest record (which the chain alone cannot show) is
        // found through the inventory row that names it; restoring it heals.
        let last = s.audit_records(0, 0, i64::MAX, 100).await.unwrap().pop().unwrap();
        sqlx::query("DELETE FROM audit WHERE seq = $1").bind(last.seq).execute(s.pool()).await.unwrap();
        let v = s.verify_audit().await.unwrap();
        assert_eq!(v.broken.as_ref().map(|b| b.seq), Some(last.seq), "{name}: {v:?}");
        assert!(v.broken.unwrap().problem.contains("deleted from the end"));
        // A duplicate serial fails the whole batch: neither record nor row is half-written.
        assert!(s.append_audit(&[event(9), mk("s2", "a", 1)]).await.is_err());
        assert_eq!(s.verify_audit().await.unwrap().records, 4, "{name}");
    }
}

/// Every revocation path: one credential, an entry, an owner, a node; each in
/// the inventory, the revocation log (in order) and the entries agents see.
#[tokio::test]
async fn revocation_by_credential_entry_owner_and_node() {
    for (name, s) in stores().await {
        let now = hallmark_core::now_unix();
        for o in ["team-a", "team-b"] {
            s.create_owner(o, "x@example.org", "", &Default::default(), rec()).await.unwrap();
        }
        let agent = "spiffe://example.org/hallmark/agent/n1";
        let mut ids = Vec::new();
        for (i, owner) in ["team-a", "team-a", "team-b"].iter().enumerate() {
            let mut v = spec(&format!("w{i}"), 1000 + i as u32);
            v.parent_id = SpiffeId::new(agent).unwrap();
            v.owner = (*owner).into();
            ids.push(s.create_entry(&v, rec()).await.unwrap().id);
        }
        s.upsert_node(&node_svid(agent, "aa01", None, now + 600)).await.unwrap();
        // Two credentials per entry, issued through the node.
        let mut events = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            for k in 0..2 {
                let mut e = event(i as i64);
                e.credential = Some(hallmark_store::Credential {
                    id: format!("c{i}{k}"),
                    kind: if k == 0 { CredentialKind::X509 } else { CredentialKind::Jwt },
                    entry_id: id.clone(),
                    spiffe_id: format!("spiffe://example.org/w{i}"),
                    node_id: agent.into(),
                    class: "machine".into(),
                    owner: if i < 2 { "team-a" } else { "team-b" }.into(),
                    policy_version: 1,
                    evidence_digest: "d".into(),
                    issued_at: now,
                    not_before: now - 10,
                    not_after: now + 600,
                    revoked_at: None,
                    revoke_reason: None,
                    authority_id: if k == 0 { "ca1" } else { "kid1" }.into(),
                    audit_seq: 0,
                    delivered_to: None,
                    delivered_at: None,
                    task_id: None,
                    person_id: None,
                    audience: None,
                });
                events.push(e);
            }
        }
        s.append_audit(&events).await.unwrap();
        let start = s.last_revocation().await.unwrap();
        let changes_before = s.last_change().await.unwrap();

        // One credential: only it; the entry stays served.
        let out = s.revoke(&RevokeTarget::Credential("c00".into()), "key leaked", now, rec()).await.unwrap();
        assert_eq!((out.credentials.clone(), out.entries.len()), (vec!["c00".to_owned()], 0), "{name}");
        let c = s.credential("c00").await.unwrap().unwrap();
        assert_eq!((c.revoked_at, c.revoke_reason.as_deref()), (Some(now), Some("key leaked")));
        assert_eq!(s.entries_snapshot(agent).await.unwrap().0.len(), 3);
        // Again: nothing more to do, not an error; unknown: NotFound.
        assert!(
            s.revoke(&RevokeTarget::Credential("c00".into()), "again", now, rec())
                .await
                .unwrap()
                .credentials
                .is_empty()
        );
        assert!(matches!(
            s.revoke(&RevokeTarget::Credential("nope".into()), "x", now, rec()).await,
            Err(StoreError::NotFound(_))
        ));

        // An entry: disabled (not in the agent's snapshot), its other live credential revoked.
        let out = s.revoke(&RevokeTarget::Entry(ids[0].clone()), "decommissioned", now, rec()).await.unwrap();
        assert_eq!((out.entries.clone(), out.credentials.clone()), (vec![ids[0].clone()], vec!["c01".to_owned()]));
        assert!(s.entry(&ids[0]).await.unwrap().unwrap().revoked_at.is_some());
        assert_eq!(s.entries_snapshot(agent).await.unwrap().0.len(), 2, "{name}");
        assert!(s.last_change().await.unwrap() > changes_before, "the agent is told through the change log");

        // An owner: all its entries.
        let out = s.revoke(&RevokeTarget::Owner("team-a".into()), "team dissolved", now, rec()).await.unwrap();
        assert_eq!(out.entries, vec![ids[1].clone()], "{name}: the already revoked entry is not revoked twice");
        assert_eq!(out.credentials.len(), 2);
        assert_eq!(s.entries_snapshot(agent).await.unwrap().0.len(), 1);

        // A node: banned, everything issued through it revoked, its own SVID on the CRL list.
        let out = s.revoke(&RevokeTarget::Node(agent.into()), "compromised host", now, rec()).await.unwrap();
        assert_eq!((out.node.as_deref(), out.credentials.len()), (Some(agent), 2), "{name}");
        let n = s.node(agent).await.unwrap().unwrap();
        assert!(n.banned && n.ban_reason.as_deref() == Some("compromised host"));
        assert!(matches!(
            s.revoke(&RevokeTarget::Node("spiffe://x/y".into()), "x", now, rec()).await,
            Err(StoreError::NotFound(_))
        ));

        // The log holds every step in order; live revocations exclude the node record.
        let log = s.revocations_since(start, 100).await.unwrap();
        let kinds: Vec<(&str, &str)> = log.iter().map(|r| (r.kind.as_str(), r.id.as_str())).collect();
        assert_eq!(
            kinds,
            vec![
                ("x509", "c00"),
                ("jwt", "c01"),
                ("x509", "c10"),
                ("jwt", "c11"),
                ("x509", "c20"),
                ("jwt", "c21"),
                ("x509", "aa01"),
                ("node", agent)
            ],
            "{name}"
        );
        assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
        let (live, seq) = s.live_revocations(now).await.unwrap();
        assert_eq!((live.len(), seq), (7, log.last().unwrap().seq));
        assert_eq!(s.live_revocations(now + 601).await.unwrap().0.len(), 0, "expired ones are forgotten");
        let f = hallmark_store::CredentialFilter { live_at: Some(now), ..Default::default() };
        assert!(s.credentials(&f, 100).await.unwrap().is_empty(), "{name}: nothing live is left");
    }
}

/// Batch registration: all entries in one transaction, each in the change
/// log; a duplicate anywhere refuses the whole batch.
#[tokio::test]
async fn entries_register_in_batches_all_or_none() {
    for (name, s) in stores().await {
        let start = s.last_change().await.unwrap();
        let specs: Vec<ValidEntrySpec> = (0..1200).map(|i| spec(&format!("b{i}"), 2000 + i)).collect();
        let created = s.create_entries(&specs, rec()).await.unwrap();
        assert_eq!(created.len(), 1200, "{name}");
        assert_eq!(s.changes_since(start, 5000).await.unwrap().len(), 1200, "{name}: each one pushed to its agent");
        let ids: Vec<String> = created.iter().map(|e| e.id.clone()).collect();
        let read = s.entries_by_id(&ids).await.unwrap();
        assert_eq!(read.len(), 1200);
        assert!(read.iter().all(|e| created.iter().any(|c| c == e)), "{name}: what was returned is what was stored");
        // Read back in pages, as the server loads its registry.
        let (mut after, mut paged) = (String::new(), Vec::new());
        while let Some((json, last)) = s.entries_page(&after, 500).await.unwrap() {
            paged.extend(hallmark_store::parse_entries_page(&json).unwrap());
            after = last;
        }
        assert_eq!(paged.len(), 1200, "{name}");
        let mut ids: Vec<&str> = paged.iter().map(|e| e.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 1200, "{name}: each entry once");
        assert!(paged.iter().all(|e| created.iter().any(|c| c == e)), "{name}: every column round-trips");
        // One duplicate: nothing of the batch is stored.
        let before = s.entries(None).await.unwrap().len();
        let mut dup = vec![spec("fresh-1", 9001), spec("fresh-2", 9002)];
        dup.push(specs[7].clone());
        assert!(matches!(s.create_entries(&dup, rec()).await, Err(StoreError::Duplicate(_))), "{name}");
        assert_eq!(s.entries(None).await.unwrap().len(), before, "{name}: all or none");
    }
}

/// Signs checkpoints (with nothing a verifier could check: these tests never
/// verify signatures), or fails, or, as a crash stand-in, never returns once
/// the change it records has been written.
enum TestSigner {
    Working,
    Failing,
    /// Writes the marker file, then blocks until the process is killed.
    Hanging(std::path::PathBuf),
}

impl hallmark_store::HeadSigner for TestSigner {
    fn key_id(&self) -> String {
        "test".into()
    }
    fn sign(&self, _: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            Self::Working => Ok(vec![1]),
            Self::Failing => Err("no key".into()),
            Self::Hanging(marker) => {
                std::fs::write(marker, b"inside").unwrap();
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(60));
                }
            }
        }
    }
    fn verifies(&self, _: &hallmark_store::Checkpoint) -> Option<bool> {
        Some(true)
    }
    fn adopting(&self) -> bool {
        true
    }
}

/// The record an entry change makes, naming the entry.
fn entry_record(e: &hallmark_core::Entry) -> Vec<hallmark_store::AuditEvent> {
    let mut r = event(0);
    r.action = "entry_create".into();
    r.subject = e.id.clone();
    vec![r]
}

/// Set in the child process of `a_crash_between_a_change_and_its_record_leaves_neither`:
/// the database it writes to.
const CRASH_CHILD: &str = "HALLMARK_TEST_CRASH_CHILD_URL";
/// The file the child writes once the change is written and its record is being made.
const CRASH_MARKER: &str = "HALLMARK_TEST_CRASH_MARKER";

/// Issue 15: an admin change and its audit record were two writes (the
/// change committed, then the record appended), so a crash between them left
/// a change with no record. Now they are one transaction. The change is
/// written, then the process is killed (SIGKILL) while its record is being
/// made: after restart neither the entry, nor its change-log row, nor a
/// record is stored. A record that cannot be signed fails the change the
/// same way, and the same change run to its end stores both.
#[tokio::test]
async fn a_crash_between_a_change_and_its_record_leaves_neither() {
    if let Ok(url) = std::env::var(CRASH_CHILD) {
        // The child: write the change, and hang while its record is made.
        let marker = std::path::PathBuf::from(std::env::var(CRASH_MARKER).unwrap());
        let s = Store::open(&url).await.unwrap();
        let hang = TestSigner::Hanging(marker);
        let _ = s.create_entry(&spec("crash", 1), Recorder::signed(&hang, entry_record)).await;
        panic!("the change returned instead of hanging");
    }
    for (name, url) in store_urls().await {
        let s = Store::open(&url).await.unwrap();
        s.append_audit_signed(&[event(1)], &TestSigner::Working).await.unwrap();
        drop(s);
        let marker = std::env::temp_dir().join(format!("hallmark-crash-{}", rand_suffix()));
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["a_crash_between_a_change_and_its_record_leaves_neither", "--exact", "--nocapture"])
            .env(CRASH_CHILD, &url)
            .env(CRASH_MARKER, &marker)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while !marker.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{name}: the child exited ({status}) before the change was written");
            }
            assert!(started.elapsed().as_secs() < 60, "{name}: the child never reached the record");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();

        let s = Store::open(&url).await.unwrap();
        assert!(s.entries(None).await.unwrap().is_empty(), "{name}: the change outlived the crash without its record");
        assert!(s.changes_since(0, 100).await.unwrap().is_empty(), "{name}: the change log holds the change");
        let v = s.verify_audit().await.unwrap();
        assert_eq!((v.records, v.broken), (1, None), "{name}");

        // A record that cannot be written (its head cannot be signed) fails the change.
        let err = s.create_entry(&spec("crash", 1), Recorder::signed(&TestSigner::Failing, entry_record)).await;
        assert!(matches!(err, Err(StoreError::Signing(_))), "{name}: {err:?}");
        assert!(s.entries(None).await.unwrap().is_empty(), "{name}");
        assert_eq!(s.verify_audit().await.unwrap().records, 1, "{name}");

        // Run to its end, the change and its record are stored together, the
        // record right after the head and covered by a checkpoint.
        let e = s.create_entry(&spec("crash", 1), Recorder::signed(&TestSigner::Working, entry_record)).await.unwrap();
        let records = s.audit_records(0, 0, i64::MAX, 100).await.unwrap();
        let last = records.last().unwrap();
        assert_eq!((last.seq, last.event.action.as_str(), last.event.subject.as_str()), (2, "entry_create", &*e.id));
        assert_eq!(s.latest_audit_checkpoint().await.unwrap().map(|c| c.seq), Some(2), "{name}");
        assert_eq!(s.changes_since(0, 100).await.unwrap().len(), 1, "{name}");
        assert!(s.verify_audit().await.unwrap().broken.is_none(), "{name}");
    }
}

/// A denial is stored with its audit record, in the appender's batch: a
/// batch that fails stores neither.
#[tokio::test]
async fn denials_are_written_with_their_record() {
    for (name, s) in stores().await {
        let deny = |entry: &str| {
            let mut e = event(2);
            e.action = "deny".into();
            e.denial = Some(hallmark_store::Denial {
                entry_id: entry.into(),
                spiffe_id: "spiffe://example.org/w".into(),
                action: "issue_jwt".into(),
                audience: Some("db".into()),
                node_id: "spiffe://example.org/hallmark/agent/a".into(),
                evidence_digest: "d".into(),
                policy_version: 3,
                policy_ids: vec!["p1".into(), "p2".into()],
                reason: "forbidden by p1".into(),
            });
            e
        };
        s.append_audit(&[deny("e1"), event(3), deny("e2")]).await.unwrap();
        let d = s.denials("e1").await.unwrap();
        assert_eq!(d.len(), 1, "{name}");
        assert_eq!(
            (d[0].at, d[0].action.as_str(), d[0].audience.as_deref(), d[0].policy_ids.as_str()),
            (1_700_000_002, "issue_jwt", Some("db"), "p1,p2")
        );
        assert_eq!(s.denials_since(0).await.unwrap().len(), 2, "{name}");
        // A batch that fails (a duplicate serial beside the denial) stores neither.
        let mut cred = event(5);
        cred.credential = Some(hallmark_store::Credential {
            id: "s1".into(),
            kind: CredentialKind::X509,
            entry_id: "e3".into(),
            spiffe_id: "spiffe://example.org/w".into(),
            node_id: "n".into(),
            class: "machine".into(),
            owner: "o".into(),
            policy_version: 1,
            evidence_digest: "d".into(),
            issued_at: 1,
            not_before: 1,
            not_after: 2,
            revoked_at: None,
            revoke_reason: None,
            authority_id: "ca".into(),
            audit_seq: 0,
            delivered_to: None,
            delivered_at: None,
            task_id: None,
            person_id: None,
            audience: None,
        });
        s.append_audit(std::slice::from_ref(&cred)).await.unwrap();
        assert!(s.append_audit(&[deny("e3"), cred]).await.is_err(), "{name}");
        assert!(s.denials("e3").await.unwrap().is_empty(), "{name}");
        assert_eq!(s.verify_audit().await.unwrap().records, 4, "{name}");
    }
}

/// A recorder that writes one record of the change, its head signed by `signer`.
fn signed_by<T: ?Sized>(signer: &TestSigner) -> Recorder<'_, T> {
    Recorder::signed(signer, |_| vec![event(0)])
}

/// Issue 15: every kind of admin change (entry, owner, policy, exception,
/// admin identity, join token, revocation) is refused as a whole when its
/// audit record cannot be written: here its new head cannot be signed, so
/// the record's append fails inside the change's transaction. Before, the
/// change was committed first and its record appended after, so each of
/// these left a change with no record.
#[tokio::test]
async fn a_change_whose_record_fails_is_not_stored() {
    for (name, s) in stores().await {
        let now = hallmark_core::now_unix();
        // What exists before: one owner, one entry, a pending exception.
        s.create_owner("team-a", "a@example.org", "", &Default::default(), rec()).await.unwrap();
        let mut v = spec("web", 1000);
        v.owner = "team-a".into();
        let e = s.create_entry(&v, rec()).await.unwrap();
        let x = s.request_exception(&exception("ttl_above_class_max", "48h", now + 100), rec()).await.unwrap();
        let records = s.verify_audit().await.unwrap().records;

        let signing = |r: Result<(), StoreError>, what: &str| {
            assert!(matches!(r, Err(StoreError::Signing(_))), "{name}: {what}: {r:?}");
        };
        signing(s.create_entry(&spec("other", 1001), signed_by(&TestSigner::Failing)).await.map(drop), "entry create");
        signing(
            s.create_entries(&[spec("b1", 1002), spec("b2", 1003)], signed_by(&TestSigner::Failing)).await.map(drop),
            "entry batch",
        );
        signing(
            s.update_entry(&e.id, &spec("web", 1004), Some(1), signed_by(&TestSigner::Failing)).await.map(drop),
            "entry update",
        );
        signing(s.delete_entry(&e.id, signed_by(&TestSigner::Failing)).await.map(drop), "entry delete");
        signing(
            s.create_owner("team-b", "b@example.org", "", &Default::default(), signed_by(&TestSigner::Failing))
                .await
                .map(drop),
            "owner",
        );
        signing(s.deactivate_owner("team-a", signed_by(&TestSigner::Failing)).await.map(drop), "owner deactivate");
        signing(
            s.add_policy("forbid(principal, action, resource);", "h", "alice", signed_by(&TestSigner::Failing))
                .await
                .map(drop),
            "policy",
        );
        let y = exception("long_lived_certificate", "30d", now + 100);
        signing(s.request_exception(&y, signed_by(&TestSigner::Failing)).await.map(drop), "exception request");
        signing(
            s.approve_exception(&x.id, "bob", now, signed_by(&TestSigner::Failing)).await.map(drop),
            "exception approve",
        );
        signing(
            s.add_admin_token(&hash_secret("t"), "carol", "auditor", signed_by(&TestSigner::Failing)).await.map(drop),
            "admin token",
        );
        signing(
            s.create_join_token(&hash_secret("j"), now + 600, signed_by(&TestSigner::Failing)).await.map(drop),
            "join token",
        );
        let target = RevokeTarget::Entry(e.id.clone());
        signing(s.revoke(&target, "gone", now, signed_by(&TestSigner::Failing)).await.map(drop), "revocation");

        // Nothing of any of them is stored, and no record.
        let entries = s.entries(None).await.unwrap();
        assert_eq!(entries.len(), 1, "{name}");
        assert_eq!((entries[0].revision, entries[0].revoked_at), (1, None), "{name}");
        let owners = s.owners().await.unwrap();
        assert_eq!((owners.len(), owners[0].active), (1, true), "{name}");
        assert!(s.current_policy().await.unwrap().is_none(), "{name}");
        let xs = s.exceptions().await.unwrap();
        assert_eq!((xs.len(), xs[0].approved_by.as_deref()), (1, None), "{name}");
        assert!(s.admin_tokens().await.unwrap().is_empty(), "{name}");
        assert!(s.consume_join_token(&hash_secret("j"), "agent-a", now).await.unwrap().is_err(), "{name}");
        assert_eq!(s.verify_audit().await.unwrap().records, records, "{name}");
    }
}

/// Issue 18: a task is bound once, found from any process of its tree,
/// approved item by item; a new objective withdraws the approvals and
/// revokes its credentials; ending it (alone, or every task of its entry)
/// revokes the rest and nothing is issued for it again.
#[tokio::test]
async fn tasks_bind_once_and_revoke_with_their_objective_and_their_end() {
    let now = hallmark_core::now_unix();
    for (name, s) in stores().await {
        let mut v = spec("agent", 1000);
        v.bind = hallmark_core::Bind::Task;
        let entry = s.create_entry(&v, rec()).await.unwrap();
        assert_eq!(s.entry(&entry.id).await.unwrap().unwrap().bind, hallmark_core::Bind::Task, "{name}");
        let node = entry.parent_id.to_string();
        let scope = hallmark_core::parse_scope(&["tickets:read".into(), "mail".into()], &["mail".into()]).unwrap();
        let new = hallmark_store::NewTask {
            entry_id: &entry.id,
            objective: "triage",
            scope: &scope,
            on_behalf_of: Some("alice@example.org"),
            revoke_on_breach: false,
            created_by: "bootstrap",
            ttl_secs: 600,
        };
        let t = s.create_task(&new, now, rec()).await.unwrap();
        assert_eq!(t.state(now), "waiting", "{name}");
        assert_eq!(t.objective_sha256, hallmark_core::objective_sha256("triage"));
        // Not bound yet: no process finds it.
        assert!(s.task_of_process(&entry.id, &node, &[(4242, 77)]).await.unwrap().is_none());
        let t = s.bind_task_process(&t.id, &node, 4242, 77, now, rec()).await.unwrap();
        assert_eq!(t.state(now), "active");
        let again = s.bind_task_process(&t.id, &node, 4243, 78, now, rec()).await.unwrap_err();
        assert!(matches!(again, StoreError::Duplicate(_)), "{name}: bound once: {again}");
        // One process, one running task of an entry.
        let other = s.create_task(&new, now, rec()).await.unwrap();
        let taken = s.bind_task_process(&other.id, &node, 4242, 77, now, rec()).await.unwrap_err();
        assert!(taken.to_string().contains("already bound to running task"), "{name}: {taken}");
        s.revoke(&RevokeTarget::Task(other.id.clone()), "not needed", now, rec()).await.unwrap();
        // Found from a descendant (its ancestors listed after it), on its node only.
        let found = s.task_of_process(&entry.id, &node, &[(5000, 90), (4242, 77), (1, 1)]).await.unwrap();
        assert_eq!(found.map(|f| f.id), Some(t.id.clone()));
        assert!(s.task_of_process(&entry.id, &node, &[(4242, 78)]).await.unwrap().is_none(), "another instance");
        assert!(s.task_of_process(&entry.id, "spiffe://example.org/other", &[(4242, 77)]).await.unwrap().is_none());

        let t = s.approve_task_scope(&t.id, "mail", "tess", now, rec()).await.unwrap();
        assert!(t.scope_item("mail").unwrap().cleared());
        assert!(s.approve_task_scope(&t.id, "tickets", "tess", now, rec()).await.is_err(), "needs no approval");

        // Two credentials issued for the task, one not.
        let mut events = Vec::new();
        for (i, task) in [Some(t.id.clone()), Some(t.id.clone()), None].into_iter().enumerate() {
            let mut e = event(i as i64);
            e.credential = Some(hallmark_store::Credential {
                id: format!("t{i}"),
                kind: CredentialKind::Jwt,
                entry_id: entry.id.clone(),
                spiffe_id: entry.spiffe_id.to_string(),
                node_id: node.clone(),
                class: "agent".into(),
                owner: "team-a".into(),
                policy_version: 1,
                evidence_digest: "d".into(),
                issued_at: now,
                not_before: now,
                not_after: now + 300,
                revoked_at: None,
                revoke_reason: None,
                authority_id: "kid1".into(),
                audit_seq: 0,
                delivered_to: None,
                delivered_at: None,
                task_id: task,
                person_id: None,
                audience: Some("tickets".into()),
            });
            events.push(e);
        }
        s.append_audit(&events).await.unwrap();
        let of_task = hallmark_store::CredentialFilter { task_id: Some(t.id.clone()), ..Default::default() };
        assert_eq!(s.credentials(&of_task, 10).await.unwrap().len(), 2, "{name}");

        // A new objective: approvals withdrawn, the task's credentials revoked.
        let (t, out) = s.change_task_objective(&t.id, "close duplicates", now, rec()).await.unwrap();
        assert_eq!(out.credentials.len(), 2, "{name}");
        assert!(!t.scope_item("mail").unwrap().cleared());
        assert_eq!(t.objective_sha256, hallmark_core::objective_sha256("close duplicates"));
        assert!(s.credential("t2").await.unwrap().unwrap().revoked_at.is_none(), "not the task's");
        let start = s.last_revocation().await.unwrap();
        assert!(start > 0);

        // A breach is counted; the end of every task of the entry ends it.
        assert_eq!(s.record_task_breach(&t.id, rec()).await.unwrap().breaches, 1);
        let out = s.revoke(&RevokeTarget::AgentEntry(entry.id.clone()), "incident", now, rec()).await.unwrap();
        assert_eq!(out.tasks, vec![t.id.clone()], "{name}");
        let ended = s.task(&t.id).await.unwrap().unwrap();
        assert_eq!((ended.state(now), ended.end_reason.as_deref()), ("ended", Some("incident")));
        assert!(s.task_of_process(&entry.id, &node, &[(4242, 77)]).await.unwrap().is_none());
        assert!(s.entry(&entry.id).await.unwrap().unwrap().revoked_at.is_none(), "the entry stays");
        assert!(s.change_task_objective(&t.id, "x", now, rec()).await.is_err(), "an ended task stays ended");
        assert!(matches!(
            s.revoke(&RevokeTarget::Task("nope".into()), "x", now, rec()).await,
            Err(StoreError::NotFound(_))
        ));

        // Lifetime: a task past it is listed for the sweep.
        let short = hallmark_store::NewTask { ttl_secs: 1, ..new.clone() };
        let t2 = s.create_task(&short, now - 5, rec()).await.unwrap();
        assert_eq!(s.expired_tasks(now).await.unwrap(), vec![t2.id.clone()], "{name}");
        assert_eq!(t2.state(now), "expired");
    }
}

/// Issue 19: a login nonce is used once (a replayed login is refused), not
/// after it expires, and not for an unknown login.
#[tokio::test]
async fn login_nonces_are_used_once() {
    for (name, s) in stores().await {
        let now = 1_800_000_000;
        let n = s.create_login_nonce("corp", "abc", "10.0.0.1", now, 600).await.unwrap();
        assert!(n.id.starts_with("lg_"), "{name}");
        let taken = s.take_login_nonce(&n.id, now + 1).await.unwrap().unwrap();
        assert_eq!((taken.issuer.as_str(), taken.nonce.as_str()), ("corp", "abc"), "{name}");
        assert!(s.take_login_nonce(&n.id, now + 2).await.unwrap().is_none(), "{name}: replayed");
        let late = s.create_login_nonce("corp", "def", "10.0.0.1", now, 600).await.unwrap();
        assert!(s.take_login_nonce(&late.id, now + 600).await.unwrap().is_none(), "{name}: expired");
        assert!(s.take_login_nonce("lg_nope", now).await.unwrap().is_none(), "{name}");
        // One address cannot take every slot.
        let busy = format!("10.9.{}", rand_suffix());
        for _ in 0..hallmark_store::MAX_LOGINS_PER_SOURCE {
            s.create_login_nonce("corp", "n", &busy, now, 600).await.unwrap();
        }
        let refused = s.create_login_nonce("corp", "n", &busy, now, 600).await.unwrap_err();
        assert!(matches!(refused, hallmark_store::LoginNonceError::SourceBusy), "{name}: {refused}");
        s.create_login_nonce("corp", "n", "10.0.0.2", now, 600).await.unwrap();
    }
}

/// Issue 19: a recovery request moves requested -> verified -> approved
/// under the store's lock, as the caller's check decides; one open request
/// per subject.
#[tokio::test]
async fn recovery_requests_move_on_under_the_callers_check() {
    use hallmark_store::{RecoveryState, RecoveryStep};
    for (name, s) in stores().await {
        let subject = format!("spiffe://example.org/human/example.com/{}", rand_suffix());
        let r = s.create_recovery(&subject, "lost laptop", "helpdesk", 10, rec()).await.unwrap();
        assert_eq!(r.state, RecoveryState::Requested, "{name}");
        assert!(matches!(
            s.create_recovery(&subject, "again", "helpdesk", 11, rec()).await,
            Err(StoreError::Duplicate(_))
        ));
        let refused =
            s.advance_recovery(&r.id, |_| Err(StoreError::Duplicate("not yet".into())), 12, rec()).await.unwrap_err();
        assert!(matches!(refused, StoreError::Duplicate(_)), "{name}");
        let v = s
            .advance_recovery(
                &r.id,
                |_| Ok(RecoveryStep::Verify { by: "helpdesk".into(), note: "video call, badge".into() }),
                13,
                rec(),
            )
            .await
            .unwrap();
        assert_eq!((v.state, v.verify_note.as_deref()), (RecoveryState::Verified, Some("video call, badge")));
        let a =
            s.advance_recovery(&r.id, |_| Ok(RecoveryStep::Approve { by: "admin2".into() }), 14, rec()).await.unwrap();
        assert_eq!(
            (a.state, a.approved_by.as_deref(), a.closed_at),
            (RecoveryState::Approved, Some("admin2"), Some(14))
        );
        assert!(s.recoveries(Some(&subject), true).await.unwrap().is_empty(), "{name}: none open");
        // A new request may be filed once the last one is closed.
        let again = s.create_recovery(&subject, "lost phone", "helpdesk", 20, rec()).await.unwrap();
        let c = s.advance_recovery(&again.id, |_| Ok(RecoveryStep::Cancel), 21, rec()).await.unwrap();
        assert_eq!(c.state, RecoveryState::Cancelled, "{name}");
    }
}

/// Issue 19: a break-glass grant is usable until it expires or is revoked;
/// each use stays unreviewed until reviewed once.
#[tokio::test]
async fn break_glass_grants_and_their_reviewed_uses() {
    for (name, s) in stores().await {
        let subject = format!("spiffe://example.org/human/example.com/{}", rand_suffix());
        assert!(s.break_glass_grant_for(&subject, 100).await.unwrap().is_none(), "{name}");
        let g = s.grant_break_glass(&subject, "on-call", "admin", 100, 200, rec()).await.unwrap();
        assert_eq!(s.break_glass_grant_for(&subject, 150).await.unwrap().as_ref(), Some(&g), "{name}");
        assert!(s.break_glass_grant_for(&subject, 200).await.unwrap().is_none(), "{name}: expired");
        let u = s.record_break_glass_use(&g, "serial1", 150, rec()).await.unwrap();
        assert!(s.break_glass_uses(true).await.unwrap().iter().any(|x| x.id == u.id), "{name}");
        let r = s.review_break_glass_use(&u.id, "auditor", "outage INC-7", 160, rec()).await.unwrap();
        assert_eq!(r.review_note.as_deref(), Some("outage INC-7"), "{name}");
        assert!(s.review_break_glass_use(&u.id, "auditor", "again", 161, rec()).await.is_err(), "{name}");
        assert!(!s.break_glass_uses(true).await.unwrap().iter().any(|x| x.id == u.id), "{name}");
        s.revoke_break_glass(&g.id, 170, rec()).await.unwrap();
        assert!(s.break_glass_grant_for(&subject, 171).await.unwrap().is_none(), "{name}: revoked");
        assert!(s.revoke_break_glass(&g.id, 172, rec()).await.is_err(), "{name}");
    }
}

fn person(user_name: &str, email: Option<&str>, active: bool) -> hallmark_store::PersonWrite {
    hallmark_store::PersonWrite {
        user_name: user_name.into(),
        external_id: None,
        email: email.map(str::to_owned),
        display_name: None,
        active,
        resource: serde_json::json!({ "userName": user_name, "active": active }),
    }
}

fn group(name: &str, members: &[&str]) -> hallmark_store::GroupWrite {
    hallmark_store::GroupWrite {
        display_name: name.into(),
        external_id: None,
        resource: serde_json::json!({ "displayName": name }),
        members: members.iter().map(|m| (*m).to_owned()).collect(),
    }
}

/// Joiner, mover, leaver, rejoiner and deletion, as SCIM provisions them:
/// each change is one record; a leaver's row stays and still answers logins.
#[tokio::test]
async fn people_join_move_and_leave() {
    for (name, s) in stores().await {
        let alice = s.create_person(&person("Alice", Some("Alice@Example.org"), true), 100, rec()).await.unwrap().after;
        assert_eq!((alice.email.as_deref(), alice.version, alice.has_left()), (Some("alice@example.org"), 1, false));
        let dup = s.create_person(&person("ALICE", None, true), 100, rec()).await.unwrap_err();
        assert!(matches!(dup, StoreError::Duplicate(_)), "{name}: {dup}");
        let bob = s.create_person(&person("bob", Some("alice@example.org"), true), 101, rec()).await.unwrap().after;
        // userName first (any letter case), then email; the order given decides.
        assert_eq!(s.person_for_login(&["aLiCe"]).await.unwrap().unwrap().id, alice.id, "{name}");
        assert_eq!(s.person_for_login(&["nobody", "BOB"]).await.unwrap().unwrap().id, bob.id);
        assert_eq!(s.person_for_login(&["ALICE@example.org", "bob"]).await.unwrap().unwrap().id, bob.id);
        assert!(s.person_for_login(&["carol"]).await.unwrap().is_none());

        // Joining a group and moving to another: every member whose group
        // names change is a mover.
        let eng = s.create_group(&group("eng", &[&alice.id, "no-such-person"]), 102, rec()).await.unwrap();
        let eng = eng.after.unwrap();
        assert_eq!(eng.members, vec![alice.id.clone()], "{name}: unknown members are dropped");
        let ops = s.create_group(&group("ops", &[]), 102, rec()).await.unwrap().after.unwrap();
        assert!(matches!(s.create_group(&group("OPS", &[]), 102, rec()).await, Err(StoreError::Duplicate(_))));
        let out = s.update_group::<StoreError>(&ops.id, 103, |_| Ok(group("ops", &[&alice.id])), rec()).await.unwrap();
        assert_eq!(
            (out.moved[0].from.clone(), out.moved[0].to.clone()),
            (vec!["eng".into()], vec!["eng".into(), "ops".into()])
        );
        let out = s.update_group::<StoreError>(&eng.id, 104, |_| Ok(group("eng", &[])), rec()).await.unwrap();
        assert_eq!(out.moved.len(), 1, "{name}");
        assert_eq!(out.moved[0].user_name, "Alice");
        assert_eq!(s.person_group_names(&alice.id).await.unwrap(), vec!["ops".to_owned()]);
        // A rename moves everyone still in the group.
        let out =
            s.update_group::<StoreError>(&ops.id, 105, |_| Ok(group("operations", &[&alice.id])), rec()).await.unwrap();
        assert_eq!(out.moved[0].to, vec!["operations".to_owned()], "{name}");

        // Leaving (active false), then coming back.
        let out = s
            .update_person::<StoreError>(&alice.id, 106, |p| Ok(person(&p.user_name, p.email.as_deref(), false)), rec())
            .await
            .unwrap();
        assert!(out.left() && !out.rejoined(), "{name}");
        assert_eq!(
            (out.after.left_at, out.after.version, out.groups.clone()),
            (Some(106), 2, vec!["operations".into()])
        );
        let out = s
            .update_person::<StoreError>(&alice.id, 107, |p| Ok(person(&p.user_name, None, true)), rec())
            .await
            .unwrap();
        assert!(out.rejoined() && !out.after.has_left() && out.after.left_at.is_none(), "{name}");
        // A refusal from the caller writes nothing.
        let refused =
            s.update_person(&alice.id, 108, |_| Err(StoreError::Duplicate("stale".into())), rec()).await.unwrap_err();
        assert!(matches!(refused, StoreError::Duplicate(_)));
        assert_eq!(s.person(&alice.id).await.unwrap().unwrap().version, 3);

        // Deleted: the row stays, logins still find it, SCIM no longer lists it.
        let out = s.delete_person::<StoreError>(&alice.id, 109, |_| Ok(()), rec()).await.unwrap();
        assert!(out.left() && out.after.deleted_at == Some(109) && out.after.left_at == Some(109), "{name}");
        assert!(s.person_group_names(&alice.id).await.unwrap().is_empty());
        assert!(s.person_for_login(&["alice"]).await.unwrap().unwrap().has_left());
        assert_eq!(s.people().await.unwrap().iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), vec![bob.id.as_str()]);
        assert!(matches!(
            s.update_person::<StoreError>(&alice.id, 110, |p| Ok(person(&p.user_name, None, true)), rec()).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.create_person(&person("alice", None, true), 110, rec()).await,
            Err(StoreError::Duplicate(_))
        ));
        // Deleting a group moves its members out.
        s.update_group::<StoreError>(&ops.id, 111, |_| Ok(group("operations", &[&bob.id])), rec()).await.unwrap();
        let out = s.delete_group::<StoreError>(&ops.id, |_| Ok(()), rec()).await.unwrap();
        assert_eq!((out.after.is_none(), out.moved[0].person_id.as_str()), (true, bob.id.as_str()), "{name}");
        assert!(s.scim_group(&ops.id).await.unwrap().is_none());
        assert_eq!(s.scim_groups().await.unwrap().len(), 1);

        // Owners linked to people report whether the person left.
        s.create_owner("team-a", "a@example.org", "", &Default::default(), rec()).await.unwrap();
        let link = s.link_owner_person("team-a", Some(&alice.id), rec()).await.unwrap().unwrap();
        assert!(link.left && link.user_name == "Alice", "{name}: {link:?}");
        s.link_owner_person("team-a", Some(&bob.id), rec()).await.unwrap();
        assert!(!s.owner_people().await.unwrap()[0].left);
        assert!(s.link_owner_person("team-a", None, rec()).await.unwrap().is_none());
        assert!(s.owner_people().await.unwrap().is_empty());
        assert!(matches!(s.link_owner_person("nope", None, rec()).await, Err(StoreError::NotFound(_))));
        assert!(matches!(s.link_owner_person("team-a", Some("nobody"), rec()).await, Err(StoreError::NotFound(_))));
        assert!(s.verify_audit().await.unwrap().broken.is_none());
    }
}

/// A person's credentials, and a human SPIFFE ID's, are revoked together;
/// a machine credential with the same SPIFFE ID is not a human's.
#[tokio::test]
async fn revocation_by_person_and_human_spiffe_id() {
    for (name, s) in stores().await {
        let now = hallmark_core::now_unix();
        let alice = s.create_person(&person("alice", None, true), now, rec()).await.unwrap().after;
        let mk = |id: &str, class: &str, spiffe: &str, person: Option<&str>, not_after: i64| {
            let mut e = event(1);
            e.credential = Some(hallmark_store::Credential {
                id: id.into(),
                kind: CredentialKind::X509,
                entry_id: "e-human".into(),
                spiffe_id: spiffe.into(),
                node_id: "spiffe://example.org/hallmark/server".into(),
                class: class.into(),
                owner: "people".into(),
                policy_version: 1,
                evidence_digest: "d".into(),
                issued_at: now,
                not_before: now - 10,
                not_after,
                revoked_at: None,
                revoke_reason: None,
                authority_id: "ca1".into(),
                audit_seq: 0,
                delivered_to: None,
                delivered_at: None,
                task_id: None,
                person_id: person.map(str::to_owned),
                audience: None,
            });
            e
        };
        let me = "spiffe://example.org/user/alice";
        s.append_audit(&[
            mk("h1", "human", me, Some(&alice.id), now + 600),
            mk("h2", "human", me, Some(&alice.id), now + 600),
            mk("h-old", "human", me, Some(&alice.id), now - 1),
            mk("h3", "human", me, None, now + 600),
            mk("m1", "machine", me, None, now + 600),
        ])
        .await
        .unwrap();
        let out = s.revoke(&RevokeTarget::Person(alice.id.clone()), "person left", now, rec()).await.unwrap();
        assert_eq!(out.credentials, vec!["h1".to_owned(), "h2".to_owned()], "{name}: live ones only");
        let out = s.revoke(&RevokeTarget::Person(alice.id.clone()), "again", now, rec()).await.unwrap();
        assert!(out.credentials.is_empty(), "{name}");
        let out = s.revoke(&RevokeTarget::Human(me.into()), "device lost", now, rec()).await.unwrap();
        assert_eq!(out.credentials, vec!["h3".to_owned()], "{name}: the machine credential stays");
        assert!(s.credential("m1").await.unwrap().unwrap().revoked_at.is_none());
        for unknown in [RevokeTarget::Person("nobody".into()), RevokeTarget::Human("spiffe://example.org/w".into())] {
            assert!(matches!(s.revoke(&unknown, "x", now, rec()).await, Err(StoreError::NotFound(_))), "{name}");
        }
        let kinds: Vec<String> = s.revocations_since(0, 100).await.unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(kinds, vec!["h1", "h2", "h3"], "{name}: the CRL source has each");
    }
}
