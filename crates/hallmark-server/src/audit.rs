//! Recording to the audit chain: issuance records with group commit, and
//! changes with their records in one transaction.
//!
//! Callers hand a record to the [`Auditor`] and wait for its commit. One task
//! drains everything queued meanwhile and appends it in a single transaction,
//! so concurrent issuances share one durable write instead of each paying
//! for its own. A credential is returned only after its record is committed:
//! nothing a client received can be missing from the chain after a crash.
//!
//! What a batch costs is mostly fixed (hand-offs between threads, one
//! database round trip, the commit), so the appender waits a few
//! milliseconds after the first record for others to join: under load that
//! makes batches large and recording cheap per issuance (BENCHMARKS.md); when
//! idle it adds those milliseconds to an issuance, well under a network
//! round trip to the agent.
//!
//! A change (an entry, an owner, a policy version, an exception, an admin
//! identity, a join token, a revocation) does not go through the appender:
//! it is written in one transaction with its record
//! ([`ServerState::record_change`](crate::state::ServerState::record_change)
//! makes the [`Recorder`](hallmark_store::Recorder) the store's write
//! takes), so that no crash leaves a change without its record. Both extend
//! the same chain under the same lock; see `hallmark_store`'s `recorded`
//! module for why changes are not items of the appender's batches.

use std::sync::Arc;

use hallmark_ca::audit_key::{AuditKey, AuditPublicKey};
use hallmark_store::{AuditEvent, Checkpoint, HeadSigner, Store};
use tokio::sync::{mpsc, oneshot};

use crate::error::ServerError;

/// The server's audit key, signing each batch's head, and the public keys
/// it checks the head it extends with.
pub struct AuditKeys {
    /// This server's key.
    pub own: AuditKey,
    /// Other servers' public keys (`audit_trusted_keys`).
    pub trusted: Vec<AuditPublicKey>,
    /// The key was made at this start: until the first batch is written, a
    /// chain with no checkpoint at all is adopted (the upgrade) rather than
    /// reported as tampering.
    pub adopting: std::sync::atomic::AtomicBool,
}

impl AuditKeys {
    /// Every public key accepted: this server's, then the trusted ones.
    pub fn public_keys(&self) -> impl Iterator<Item = &AuditPublicKey> {
        std::iter::once(self.own.public()).chain(self.trusted.iter())
    }
}

/// True when `c` is signed by `key` (its id and signature).
pub fn signed_by(c: &Checkpoint, key: &AuditPublicKey) -> bool {
    key.id() == c.key_id && hex::decode(&c.signature).is_ok_and(|sig| key.verifies(&c.message(), &sig))
}

impl HeadSigner for AuditKeys {
    fn key_id(&self) -> String {
        self.own.public().id().to_owned()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.own.sign(message).map_err(|e| e.to_string())
    }
    fn verifies(&self, c: &Checkpoint) -> Option<bool> {
        self.public_keys().find(|k| k.id() == c.key_id).map(|k| signed_by(c, k))
    }
    fn adopting(&self) -> bool {
        self.adopting.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// How long a batch waits for more records once the first has arrived.
const COMMIT_DELAY: std::time::Duration = std::time::Duration::from_millis(5);

/// Most records appended in one transaction.
const MAX_RECORDS_PER_COMMIT: usize = 1024;

/// How many of `queued` records the next transaction takes: the largest power
/// of two not above it. A batch's statement text depends on its size, so
/// keeping to a dozen sizes keeps every one of them prepared in the
/// connection's statement cache; what is left over joins the next batch.
fn batch_size(queued: usize) -> usize {
    if queued == 0 { 0 } else { (1usize << queued.ilog2()).min(MAX_RECORDS_PER_COMMIT) }
}

type Ack = oneshot::Sender<Result<i64, std::sync::Arc<hallmark_store::StoreError>>>;

/// The handle requests record through.
#[derive(Debug, Clone)]
pub struct Auditor {
    tx: mpsc::Sender<(AuditEvent, Ack)>,
    append: std::sync::Arc<crate::metrics::Histogram>,
}

impl Auditor {
    /// Starts the appender task over `store`; every batch's head is signed with `keys`.
    pub fn start(store: Store, keys: Arc<AuditKeys>) -> Self {
        let (tx, mut rx) = mpsc::channel::<(AuditEvent, Ack)>(16 * MAX_RECORDS_PER_COMMIT);
        let append = std::sync::Arc::new(crate::metrics::Histogram::new(crate::metrics::APPEND_BOUNDS));
        let latency = append.clone();
        tokio::spawn(async move {
            let mut queued: std::collections::VecDeque<(AuditEvent, Ack)> = std::collections::VecDeque::new();
            loop {
                if queued.is_empty() {
                    match rx.recv().await {
                        Some(item) => queued.push_back(item),
                        None => return,
                    }
                    // Group commit: let the records of requests already under way
                    // join this batch. Each batch costs thread hand-offs and a
                    // commit whatever its size; a few milliseconds of waiting buy
                    // far more records per batch than they cost in latency.
                    tokio::time::sleep(COMMIT_DELAY).await;
                }
                while queued.len() < 2 * MAX_RECORDS_PER_COMMIT {
                    match rx.try_recv() {
                        Ok(item) => queued.push_back(item),
                        Err(_) => break,
                    }
                }
                let n = batch_size(queued.len());
                let (events, acks): (Vec<AuditEvent>, Vec<Ack>) = queued.drain(..n).unzip();
                let started = std::time::Instant::now();
                let appended = store.append_audit_signed(&events, &*keys).await;
                latency.observe(started.elapsed());
                match appended {
                    Ok(seqs) => {
                        keys.adopting.store(false, std::sync::atomic::Ordering::Relaxed);
                        for (ack, seq) in acks.into_iter().zip(seqs) {
                            let _ = ack.send(Ok(seq));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, records = events.len(), "audit append failed");
                        let e = std::sync::Arc::new(e);
                        for ack in acks {
                            let _ = ack.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Self { tx, append }
    }

    /// How long appends (one group-committed batch each) take.
    pub fn append_latency(&self) -> &crate::metrics::Histogram {
        &self.append
    }

    /// An appender that acknowledges without writing: the baseline the
    /// issuance benchmark compares recording against. Compiled only with the
    /// `bench-baseline` feature.
    #[cfg(feature = "bench-baseline")]
    pub fn discarding() -> Self {
        let (tx, mut rx) = mpsc::channel::<(AuditEvent, Ack)>(16 * MAX_RECORDS_PER_COMMIT);
        tokio::spawn(async move {
            while let Some((_, ack)) = rx.recv().await {
                let _ = ack.send(Ok(0));
            }
        });
        Self { tx, append: std::sync::Arc::new(crate::metrics::Histogram::new(crate::metrics::APPEND_BOUNDS)) }
    }

    /// Records `e` and waits until it is committed; returns its position.
    pub async fn record(&self, e: AuditEvent) -> Result<i64, ServerError> {
        let (ack, done) = oneshot::channel();
        self.tx.send((e, ack)).await.map_err(|_| ServerError::AuditStopped)?;
        match done.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => Err(ServerError::AuditNotCommitted(e)),
            Err(_) => Err(ServerError::AuditStopped),
        }
    }

    /// Records many events in one go (they share group commits), logging
    /// (not failing) when some cannot be: for changes that have taken effect.
    pub async fn record_all_or_log(&self, events: Vec<AuditEvent>) {
        let results = futures_util::future::join_all(events.into_iter().map(|e| self.record(e))).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > 0 {
            tracing::error!(failed, "could not record audit events");
        }
    }

    /// Records `e`, logging (not failing) when it cannot: for events whose
    /// action has already taken effect, such as an admin change.
    pub async fn record_or_log(&self, e: AuditEvent) {
        let action = e.action.clone();
        if let Err(err) = self.record(e).await {
            tracing::error!(error = %err, action, "could not record audit event");
        }
    }
}

/// What the record of a change says: its subject (an entry id, an owner, a
/// policy version, ...) and the facts worth keeping.
#[derive(Debug, Clone)]
pub struct Change {
    /// What changed.
    pub subject: String,
    /// Further facts, as JSON.
    pub details: serde_json::Value,
}

impl Change {
    /// A change of `subject`, with `details`.
    pub fn new(subject: impl Into<String>, details: serde_json::Value) -> Self {
        Self { subject: subject.into(), details }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn batches_keep_to_powers_of_two() {
        let sizes: Vec<usize> =
            [0, 1, 2, 3, 63, 64, 65, 1000, 1024, 5000].iter().map(|&n| super::batch_size(n)).collect();
        assert_eq!(sizes, vec![0, 1, 2, 2, 32, 64, 64, 512, 1024, 1024]);
    }
}
