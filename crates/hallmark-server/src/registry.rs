//! The server's in-memory view of the registry: every entry, by id and by the
//! agent that serves it, and the approved exceptions. Loaded at start and kept
//! current from the datastore's change log (entries) and a once-a-second read
//! (exceptions), so neither the issuance path nor agent sync reads the
//! database. Nothing here is a decision: every issuance is still decided at
//! the moment it is asked for.
//!
//! A write through this server is applied here before the write's response
//! is sent; a write through another server sharing the database arrives with
//! the change feed, within a quarter of a second.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use hallmark_core::Entry;
use hallmark_store::{ExceptionRecord, Store, StoreError, parse_entries_page};

/// Entries per page when loading the registry.
const LOAD_PAGE: i64 = 20_000;

/// An entry keyed by its own id (no second copy of the id as a map key).
struct ById(Arc<Entry>);

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl Hash for ById {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.id.hash(h);
    }
}

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

#[derive(Default)]
struct Inner {
    entries: HashSet<ById>,
    /// Parent agent ID -> the unrevoked entries that agent serves, shared
    /// with the snapshots taken of it: a sync's lookup is one reference-count
    /// increment, and a change copies only that agent's list.
    by_parent: HashMap<String, Arc<Vec<Arc<Entry>>>>,
    /// Entry id -> its approved, unrevoked exceptions (expiry checked at use).
    exceptions: HashMap<String, Vec<ExceptionRecord>>,
    /// The change-log position the entries reflect.
    seq: i64,
}

impl Inner {
    fn remove(&mut self, id: &str) {
        if let Some(ById(old)) = self.entries.take(id) {
            let parent = old.parent_id.as_str();
            if let Some(list) = self.by_parent.get_mut(parent) {
                if let Some(at) = list.iter().position(|e| e.id == old.id) {
                    Arc::make_mut(list).swap_remove(at);
                }
                if list.is_empty() {
                    self.by_parent.remove(parent);
                }
            }
        }
    }

    fn insert(&mut self, e: Entry) {
        self.remove(&e.id);
        self.insert_new(e);
    }

    /// Adds an entry known not to be held (loading).
    fn insert_new(&mut self, e: Entry) {
        let e = Arc::new(e);
        if e.revoked_at.is_none() {
            // Look up before inserting: most entries join an agent already known,
            // and an owned key would cost an allocation each.
            match self.by_parent.get_mut(e.parent_id.as_str()) {
                Some(list) => Arc::make_mut(list).push(e.clone()),
                None => {
                    self.by_parent.insert(e.parent_id.to_string(), Arc::new(vec![e.clone()]));
                }
            }
        }
        self.entries.insert(ById(e));
    }
}

/// Entries and exceptions in memory.
#[derive(Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

impl Registry {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Loads every entry and approved exception, noting the change-log
    /// position first so that no change made meanwhile is missed.
    pub async fn load(store: &Store, now: i64) -> Result<Self, StoreError> {
        let seq = store.last_change().await?;
        let r = Self::default();
        r.write().seq = seq;
        // Page by page (a million entries are never held twice), each page one
        // text value built by the database while the previous one is parsed
        // on another thread.
        let fetch = |after: String| {
            let store = store.clone();
            tokio::spawn(async move { store.entries_page(&after, LOAD_PAGE).await })
        };
        let mut next = fetch(String::new());
        loop {
            let page = next.await.map_err(|e| StoreError::Schema(format!("registry load: {e}")))??;
            let Some((json, last)) = page else { break };
            next = fetch(last);
            let entries = tokio::task::spawn_blocking(move || parse_entries_page(&json))
                .await
                .map_err(|e| StoreError::Schema(format!("registry load: {e}")))??;
            let mut i = r.write();
            i.entries.reserve(entries.len());
            for e in entries {
                i.insert_new(e);
            }
        }
        r.set_exceptions(store.approved_exceptions(now).await?);
        Ok(r)
    }

    /// One entry, revoked or not.
    pub fn entry(&self, id: &str) -> Option<Arc<Entry>> {
        self.read().entries.get(id).map(|e| e.0.clone())
    }

    /// Every entry, ordered by SPIFFE ID then id.
    pub fn all(&self) -> Vec<Arc<Entry>> {
        let mut v: Vec<Arc<Entry>> = self.read().entries.iter().map(|e| e.0.clone()).collect();
        v.sort_by(|a, b| a.spiffe_id.cmp(&b.spiffe_id).then_with(|| a.id.cmp(&b.id)));
        v
    }

    /// The entries agent `parent` serves (revoked ones excluded; in no
    /// particular order: the agent orders what it serves) and the change-log
    /// position they reflect.
    pub fn snapshot(&self, parent: &str) -> (Arc<Vec<Arc<Entry>>>, i64) {
        let i = self.read();
        (i.by_parent.get(parent).cloned().unwrap_or_default(), i.seq)
    }

    /// Applies one change: the entry's current state (`None`: it is gone),
    /// read at change-log position `seq` or later.
    pub fn apply(&self, id: &str, current: Option<Entry>, seq: i64) {
        let mut i = self.write();
        match current {
            Some(e) => i.insert(e),
            None => i.remove(id),
        }
        i.seq = i.seq.max(seq);
    }

    /// Replaces the approved exceptions.
    pub fn set_exceptions(&self, list: Vec<ExceptionRecord>) {
        let mut by_entry: HashMap<String, Vec<ExceptionRecord>> = HashMap::new();
        for x in list {
            by_entry.entry(x.entry_id.clone()).or_default().push(x);
        }
        self.write().exceptions = by_entry;
    }

    /// Approved exceptions on `entry_id` that are in force at `now`.
    pub fn active_exceptions(&self, entry_id: &str, now: i64) -> Vec<ExceptionRecord> {
        self.read()
            .exceptions
            .get(entry_id)
            .map(|v| v.iter().filter(|x| x.expires_at > now && x.revoked_at.is_none()).cloned().collect())
            .unwrap_or_default()
    }

    /// The change-log position the entries reflect.
    pub fn seq(&self) -> i64 {
        self.read().seq
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use hallmark_core::{EntrySpec, TrustDomain, Ttl};

    use super::*;

    fn entry(id: &str, spiffe: &str, parent: &str) -> Entry {
        let v = EntrySpec {
            spiffe_id: spiffe.into(),
            parent_id: Some(parent.into()),
            selectors: vec!["unix:uid:1".into()],
            owner: "o".into(),
            ..Default::default()
        }
        .validate(&TrustDomain::new("example.org").unwrap(), None, Ttl::parse("1h").unwrap(), Ttl::parse("5m").unwrap())
        .unwrap();
        v.into_entry(id.into(), 0)
    }

    #[test]
    fn moves_between_parents_and_hides_revoked() {
        let (a, b) = ("spiffe://example.org/hallmark/agent/a", "spiffe://example.org/hallmark/agent/b");
        let r = Registry::default();
        r.apply("e2", Some(entry("e2", "spiffe://example.org/z", a)), 1);
        r.apply("e1", Some(entry("e1", "spiffe://example.org/y", a)), 2);
        let (list, seq) = r.snapshot(a);
        let mut ids: Vec<&str> = list.iter().map(|e| e.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!((ids, seq), (vec!["e1", "e2"], 2));
        r.apply("e1", Some(entry("e1", "spiffe://example.org/y", b)), 3);
        assert_eq!(r.snapshot(a).0.len(), 1);
        assert_eq!(r.snapshot(b).0.len(), 1);
        let mut revoked = entry("e2", "spiffe://example.org/z", a);
        revoked.revoked_at = Some(5);
        r.apply("e2", Some(revoked), 4);
        assert!(r.snapshot(a).0.is_empty(), "revoked entries are not served");
        assert!(r.entry("e2").is_some_and(|e| e.revoked_at.is_some()), "but still known");
        r.apply("e2", None, 5);
        assert!(r.entry("e2").is_none() && r.len() == 1);
    }
}
