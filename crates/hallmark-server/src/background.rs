//! The server's background loops: following the datastore's change log and
//! policy version, writing counted refusals, and maintenance (rotation,
//! CRLs, bundle, server certificate, inventory pruning).

use std::sync::Arc;
use std::time::Duration;

use hallmark_core::now_unix;

use crate::audit;
use crate::error::ServerError;
use crate::state::{ServerState, load_policy};

/// Follows the datastore's entry change log. Polling the log (not only local
/// writes) is what lets several servers share one PostgreSQL: every server
/// sees every change.
pub(crate) async fn change_feed(state: Arc<ServerState>) -> Result<(), ServerError> {
    loop {
        tokio::select! {
            () = state.change_notify.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        if let Err(e) = state.catch_up().await {
            tracing::warn!(error = %e, "change feed read failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Follows the policy version in the store, so a policy set through any
/// server is in force on every server within a second; records exceptions
/// that expired, so the return to the normal rule leaves a trace.
pub(crate) async fn policy_watch(state: Arc<ServerState>) -> Result<(), ServerError> {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stored = match state.store.policy_version().await {
            Ok(v) => u64::try_from(v).unwrap_or(0),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read policy version");
                continue;
            }
        };
        if stored != state.policy()?.version() {
            match load_policy(&state.store, &state.audit_keys).await {
                Ok(engine) => {
                    tracing::info!(version = engine.version(), "policy reloaded from the datastore");
                    if let Ok(mut p) = state.policy.write() {
                        *p = Arc::new(engine);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot load the stored policy; the previous one stays in force"),
            }
        }
        if let Err(e) = state.reload_exceptions().await {
            tracing::warn!(error = %e, "cannot read exceptions");
        }
        let rec =
            state.record_changes("hallmark", "exception_expire", |expired: &[hallmark_store::ExceptionRecord]| {
                expired
                    .iter()
                    .map(|x| {
                        let details =
                            serde_json::json!({ "entry_id": x.entry_id, "rule": x.rule, "expired_at": x.expires_at });
                        audit::Change::new(&x.id, details)
                    })
                    .collect()
            });
        match state.store.record_expired_exceptions(now_unix(), rec).await {
            Ok(list) => {
                for x in list {
                    tracing::info!(exception = %x.id, entry = %x.entry_id, rule = %x.rule, "exception expired; the normal rule applies again");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot record expired exceptions"),
        }
        end_expired_tasks(&state).await;
    }
}

/// Ends the tasks whose lifetime ran out: everything issued for them is
/// revoked (it expires with the task anyway; the end is on record).
async fn end_expired_tasks(state: &ServerState) {
    let expired = match state.store.expired_tasks(now_unix()).await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read expired tasks");
            return;
        }
    };
    for id in expired {
        let target = hallmark_store::RevokeTarget::Task(id.clone());
        match state.revoke_now(&target, "task lifetime ran out", "hallmark").await {
            Ok(_) => tracing::info!(task = %id, "task lifetime ran out; the task has ended"),
            Err(e) => tracing::warn!(task = %id, error = %e, "cannot end an expired task"),
        }
    }
}

/// Prunes inventory rows of credentials expired longer than the retention,
/// each pruning recorded in the audit chain in the same transaction.
async fn prune_inventory(state: &ServerState) {
    let before = now_unix() - i64::try_from(state.settings.inventory_retention.secs()).unwrap_or(i64::MAX / 2);
    let rec = state.record_change("hallmark", "inventory_prune", |n: &u64| {
        audit::Change::new("credentials", serde_json::json!({ "rows": n, "expired_before": before }))
    });
    match state.store.prune_credentials(before, rec).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(pruned = n, "pruned inventory rows of long-expired credentials"),
        Err(e) => tracing::warn!(error = %e, "inventory pruning failed"),
    }
}

/// Rotates authorities on schedule, re-signs CRLs before they lapse, refreshes
/// the shared bundle (so taints, revocations and other servers' authorities
/// are followed), renews the server certificate, and prunes the inventory
/// (hourly).
pub(crate) async fn maintenance(state: Arc<ServerState>) -> Result<(), ServerError> {
    let mut ticks: u64 = 0;
    loop {
        // Rotation is checked every second (a cheap look at in-memory
        // state), so an authority is activated within a second of its
        // moment, however short its life; the rest every five.
        tokio::time::sleep(Duration::from_secs(1)).await;
        if ticks.is_multiple_of(3600) {
            prune_inventory(&state).await;
        }
        ticks += 1;
        let rotated = match state.authorities.rotate_if_due().await {
            Ok(changed) => changed,
            Err(e) => {
                tracing::error!(error = %e, "authority rotation failed");
                false
            }
        };
        if !rotated && !ticks.is_multiple_of(5) {
            continue;
        }
        if let Err(e) = state.authorities.refresh_crls_if_due().await {
            tracing::warn!(error = %e, "CRL refresh failed");
        }
        if let Err(e) = state.authorities.refresh_bundle().await {
            tracing::warn!(error = %e, "bundle refresh failed");
        }
        if let Err(e) = state.renew_server_cert_if_due() {
            tracing::error!(error = %e, "server certificate renewal failed");
        }
    }
}

/// Writes the counted refusals every second.
pub(crate) async fn refusals_flush(state: Arc<ServerState>) -> Result<(), ServerError> {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let events = state.refusals.drain(|actor, action, subject, outcome, details| {
            state.audit_event(actor, action, subject, outcome, details)
        });
        if !events.is_empty() {
            state.audit.record_all_or_log(events).await;
        }
    }
}
