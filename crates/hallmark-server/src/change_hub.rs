//! Entry changes, routed to the sync streams of the agent they concern.
//!
//! A change concerns one agent (the entry's parent), so it is sent only to
//! that agent's streams: with tens of thousands of agents connected, a change
//! wakes one task, not every one.

use std::collections::HashMap;
use std::sync::Mutex;

use hallmark_store::EntryChange;
use tokio::sync::broadcast;

/// How many changes an agent's stream may fall behind before it is sent a
/// fresh snapshot instead.
const PER_AGENT_BACKLOG: usize = 1024;

/// Per-agent channels of entry changes.
#[derive(Default)]
pub struct ChangeHub {
    by_parent: Mutex<HashMap<String, broadcast::Sender<EntryChange>>>,
}

impl ChangeHub {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<EntryChange>>> {
        self.by_parent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The changes to agent `parent`'s entries, from now on.
    pub fn subscribe(&self, parent: &str) -> broadcast::Receiver<EntryChange> {
        self.map().entry(parent.to_owned()).or_insert_with(|| broadcast::channel(PER_AGENT_BACKLOG).0).subscribe()
    }

    /// Sends `c` to the streams of the agent it concerns, if any is open.
    pub fn publish(&self, c: EntryChange) {
        let mut map = self.map();
        let Some(tx) = map.get(&c.parent_id) else { return };
        if tx.receiver_count() == 0 {
            map.remove(&c.parent_id);
            return;
        }
        let _ = tx.send(c);
    }

    /// Whether agent `parent` has a sync stream open on this server.
    pub fn connected(&self, parent: &str) -> bool {
        self.map().get(parent).is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// Agents with a sync stream open on this server.
    pub fn connected_agents(&self) -> usize {
        self.map().values().filter(|tx| tx.receiver_count() > 0).count()
    }

    /// Agents with a channel (for tests and metrics).
    pub fn agents(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: i64, parent: &str) -> EntryChange {
        EntryChange { seq, entry_id: format!("e{seq}"), parent_id: parent.into() }
    }

    #[test]
    fn a_change_reaches_only_its_agent() {
        let hub = ChangeHub::default();
        let mut a = hub.subscribe("a");
        let mut b = hub.subscribe("b");
        hub.publish(change(1, "a"));
        hub.publish(change(2, "c"));
        assert_eq!(a.try_recv().unwrap().seq, 1);
        assert!(b.try_recv().is_err());
        drop(b);
        hub.publish(change(3, "b"));
        assert_eq!(hub.agents(), 1, "a channel nobody listens to is dropped");
    }
}
