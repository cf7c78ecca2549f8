//! The agent's health: whether it is connected to the server, and what it
//! withdrew; served at `/live`, `/ready` and `/metrics` by
//! `health_endpoint`.
//!
//! Fail closed: when the server is unreachable the agent keeps serving SVIDs
//! that are still valid, withdraws each one the moment it expires, reports
//! itself not ready, and says so in its log and metrics. `/ready` succeeds only
//! while the entry sync stream is open and the agent's own SVID is valid.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// Counters and flags the agent's loops update.
#[derive(Debug, Default)]
pub struct Health {
    connected: AtomicBool,
    /// Whether the sync stream was ever open, so the first connection is not
    /// reported as the end of an outage.
    ever_connected: AtomicBool,
    banned: AtomicBool,
    last_contact: AtomicI64,
    disconnected_since: AtomicI64,
    expired_withdrawn: AtomicU64,
    revoked_dropped: AtomicU64,
}

impl Health {
    /// Health of an agent starting at `now`, not yet connected.
    pub fn new(now: i64) -> Self {
        let h = Self::default();
        h.disconnected_since.store(now, Ordering::Relaxed);
        h
    }

    /// The entry sync stream is open and delivering.
    pub fn set_connected(&self, now: i64) {
        self.last_contact.store(now, Ordering::Relaxed);
        // The server serves this node again: its ban was lifted.
        if self.banned.swap(false, Ordering::Relaxed) {
            tracing::warn!("the server accepts this node again (its ban was lifted)");
        }
        if !self.connected.swap(true, Ordering::Relaxed) {
            let since = self.disconnected_since.swap(0, Ordering::Relaxed);
            // The first connection after start is no recovery from an outage.
            if self.ever_connected.swap(true, Ordering::Relaxed) {
                tracing::info!(outage_secs = now - since, "server reachable again; renewing identities");
            } else {
                tracing::info!("connected to the server; entries synced");
            }
        }
    }

    /// The entry sync stream is gone.
    pub fn set_disconnected(&self, now: i64) {
        if self.connected.swap(false, Ordering::Relaxed) {
            self.disconnected_since.store(now, Ordering::Relaxed);
            tracing::warn!(
                "server unreachable: degraded; serving SVIDs that are still valid and withdrawing each at its expiry"
            );
        }
    }

    /// The server refused this node: it was banned.
    pub fn set_banned(&self) {
        if !self.banned.swap(true, Ordering::Relaxed) {
            tracing::error!("this node has been banned by the server; every identity withdrawn");
        }
    }

    /// Whether the server has banned this node.
    pub fn banned(&self) -> bool {
        self.banned.load(Ordering::Relaxed)
    }

    /// Whether the entry sync stream is open.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// When the server last sent anything (unix seconds; 0 before it ever did).
    pub fn last_contact(&self) -> i64 {
        self.last_contact.load(Ordering::Relaxed)
    }

    /// How many SVIDs were withdrawn at expiry because they could not be renewed.
    pub fn expired_withdrawn(&self) -> u64 {
        self.expired_withdrawn.load(Ordering::Relaxed)
    }

    /// How many SVIDs and JWTs were dropped because they were revoked.
    pub fn revoked_dropped(&self) -> u64 {
        self.revoked_dropped.load(Ordering::Relaxed)
    }

    /// Counts SVIDs withdrawn at expiry because they could not be renewed.
    pub fn add_expired(&self, n: usize) {
        self.expired_withdrawn.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts SVIDs and JWTs dropped because they were revoked.
    pub fn add_revoked(&self, n: usize) {
        self.revoked_dropped.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Why the agent is not ready, or `None` when it is.
    pub fn not_ready(&self, identity_not_after: i64, now: i64) -> Option<String> {
        if self.banned() {
            Some("node banned by the server".into())
        } else if identity_not_after <= now {
            Some("agent SVID expired; the node must attest again".into())
        } else if !self.connected() {
            let since = self.disconnected_since.load(Ordering::Relaxed);
            Some(format!("server unreachable for {}s; serving cached SVIDs until they expire", now - since))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Health;

    #[test]
    fn readiness_follows_connection_ban_and_identity() {
        let h = Health::new(990);
        assert!(h.not_ready(2000, 1000).unwrap().contains("unreachable for 10s"), "not ready before the first sync");
        h.set_connected(1000);
        assert_eq!(h.not_ready(2000, 1000), None);
        assert!(h.not_ready(1000, 1000).unwrap().contains("expired"));
        h.set_disconnected(1010);
        assert!(h.not_ready(2000, 1015).unwrap().contains("unreachable for 5s"));
        h.set_connected(1020);
        h.set_banned();
        assert!(h.not_ready(2000, 1020).unwrap().contains("banned"));
    }
}
