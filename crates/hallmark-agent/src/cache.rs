//! The agent's view of the world: the entries it may serve, the bundle, and the
//! SVIDs it holds. Every change bumps a version that open Workload API streams
//! wait on; every read filters out anything expired, so an expired SVID is
//! never served even if renewal has stalled.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use hallmark_ca::Bundle;
use hallmark_core::{Entry, SelectorSet};
use tokio::sync::watch;

/// An X.509-SVID held for one entry.
#[derive(Clone)]
pub struct HeldSvid {
    /// The entry it was issued for, at `revision`.
    pub entry_id: String,
    /// The entry's revision when issued; a newer revision means re-issue.
    pub revision: u64,
    /// DER chain, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The private key, PKCS#8 DER, generated here and never sent anywhere but to the workload.
    pub key: Vec<u8>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// When to replace it: about half its life, with jitter.
    pub rotate_at: i64,
}

impl std::fmt::Debug for HeldSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldSvid")
            .field("entry_id", &self.entry_id)
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A JWT-SVID held for (entry, audiences).
#[derive(Debug, Clone)]
pub struct HeldJwt {
    /// The token.
    pub token: String,
    /// `exp`.
    pub expires_at: i64,
    /// Re-mint after this.
    pub refresh_at: i64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    bundle: Option<Arc<Bundle>>,
    svids: HashMap<String, HeldSvid>,
    jwts: HashMap<(String, Vec<String>), HeldJwt>,
}

/// One identity in a Workload API answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedSvid {
    /// The entry.
    pub entry_id: String,
    /// SPIFFE ID.
    pub spiffe_id: String,
    /// DER chain.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8 key.
    pub key: Vec<u8>,
    /// Hint, if any.
    pub hint: String,
}

/// The agent cache.
pub struct Cache {
    inner: RwLock<Inner>,
    version: watch::Sender<u64>,
}

impl Default for Cache {
    fn default() -> Self {
        Self { inner: RwLock::new(Inner::default()), version: watch::channel(0).0 }
    }
}

impl Cache {
    fn write<R>(&self, f: impl FnOnce(&mut Inner) -> (R, bool)) -> R {
        let (r, changed) = match self.inner.write() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        };
        if changed {
            self.version.send_modify(|v| *v += 1);
        }
        r
    }

    fn read<R>(&self, f: impl FnOnce(&Inner) -> R) -> R {
        match self.inner.read() {
            Ok(g) => f(&g),
            Err(p) => f(&p.into_inner()),
        }
    }

    /// Wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Replaces the entry set (a sync snapshot). SVIDs of entries no longer
    /// present are dropped at once.
    pub fn replace_entries(&self, entries: Vec<Entry>) {
        self.write(|i| {
            i.entries = entries.into_iter().map(|e| (e.id.clone(), e)).collect();
            let keep: HashSet<String> = i.entries.keys().cloned().collect();
            i.svids.retain(|id, _| keep.contains(id));
            i.jwts.retain(|(id, _), _| keep.contains(id));
            ((), true)
        });
    }

    /// Adds or replaces one entry. A changed entry keeps serving its current
    /// SVID only while the identity it certifies is unchanged.
    pub fn upsert_entry(&self, e: Entry) {
        self.write(|i| {
            let identity_changed =
                i.entries.get(&e.id).is_some_and(|old| old.spiffe_id != e.spiffe_id || old.dns_names != e.dns_names);
            if identity_changed {
                i.svids.remove(&e.id);
            }
            i.jwts.retain(|(id, _), _| id != &e.id);
            i.entries.insert(e.id.clone(), e);
            ((), true)
        });
    }

    /// Removes an entry and everything issued for it.
    pub fn delete_entry(&self, id: &str) {
        self.write(|i| {
            let had = i.entries.remove(id).is_some();
            i.svids.remove(id);
            i.jwts.retain(|(e, _), _| e != id);
            ((), had)
        });
    }

    /// Sets the bundle.
    pub fn set_bundle(&self, b: Bundle) {
        self.write(|i| {
            let changed = i.bundle.as_deref() != Some(&b);
            i.bundle = Some(Arc::new(b));
            ((), changed)
        });
    }

    /// The current bundle.
    pub fn bundle(&self) -> Option<Arc<Bundle>> {
        self.read(|i| i.bundle.clone())
    }

    /// Entries the workload's selectors match, ordered by SPIFFE ID then id,
    /// so the default identity (the first) is stable.
    pub fn matching(&self, selectors: &SelectorSet) -> Vec<Entry> {
        let mut v: Vec<Entry> = self.read(|i| i.entries.values().filter(|e| e.matches(selectors)).cloned().collect());
        v.sort_by(|a, b| a.spiffe_id.cmp(&b.spiffe_id).then_with(|| a.id.cmp(&b.id)));
        v
    }

    /// Entries that need an X.509-SVID now: none held, a newer revision, or past the rotation point.
    pub fn due(&self, now: i64) -> Vec<Entry> {
        self.read(|i| {
            i.entries
                .values()
                .filter(|e| match i.svids.get(&e.id) {
                    None => true,
                    Some(s) => s.rotate_at <= now || s.not_after <= now || s.revision < e.revision,
                })
                .cloned()
                .collect()
        })
    }

    /// Stores a freshly issued SVID if its entry still exists.
    pub fn put_svid(&self, s: HeldSvid) {
        self.write(|i| {
            if !i.entries.contains_key(&s.entry_id) {
                return ((), false);
            }
            i.svids.insert(s.entry_id.clone(), s);
            ((), true)
        });
    }

    /// Drops SVIDs and JWTs that have expired; returns how many SVIDs went.
    pub fn expire(&self, now: i64) -> usize {
        self.write(|i| {
            let before = i.svids.len();
            i.svids.retain(|_, s| s.not_after > now);
            i.jwts.retain(|_, j| j.expires_at > now);
            let gone = before - i.svids.len();
            (gone, gone > 0)
        })
    }

    /// The X.509-SVIDs to serve a workload with these selectors, valid at `now`.
    /// SVIDs whose hint repeats an earlier one's are left out (hints are unique per response).
    pub fn x509_for(&self, selectors: &SelectorSet, now: i64) -> Vec<ServedSvid> {
        let entries = self.matching(selectors);
        self.read(|i| {
            let mut hints = HashSet::new();
            let mut out = Vec::new();
            for e in entries {
                let Some(s) = i.svids.get(&e.id) else {
                    continue;
                };
                if s.not_after <= now || s.not_before > now + 60 {
                    continue;
                }
                let hint = e.hint.clone().unwrap_or_default();
                if !hint.is_empty() && !hints.insert(hint.clone()) {
                    continue;
                }
                out.push(ServedSvid {
                    entry_id: e.id.clone(),
                    spiffe_id: e.spiffe_id.to_string(),
                    chain: s.chain.clone(),
                    key: s.key.clone(),
                    hint,
                });
            }
            out
        })
    }

    /// A held JWT for (entry, audiences) still before its refresh point.
    pub fn jwt(&self, entry_id: &str, aud: &[String], now: i64) -> Option<HeldJwt> {
        self.read(|i| i.jwts.get(&(entry_id.to_owned(), aud.to_vec())).filter(|j| j.refresh_at > now).cloned())
    }

    /// Keeps a JWT for reuse until its refresh point.
    pub fn put_jwt(&self, entry_id: &str, aud: &[String], j: HeldJwt) {
        self.write(|i| {
            if i.entries.contains_key(entry_id) && i.jwts.len() < 100_000 {
                i.jwts.insert((entry_id.to_owned(), aud.to_vec()), j);
            }
            ((), false)
        });
    }

    /// Number of SVIDs held (for tests and metrics).
    pub fn svid_count(&self) -> usize {
        self.read(|i| i.svids.len())
    }
}
