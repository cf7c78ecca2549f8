//! The agent's view of the world: the entries it may serve, the bundle, the
//! workloads that want identities, and the SVIDs it holds for them.
//!
//! SVIDs are issued on demand, for the evidence of the workload that asked,
//! and held per (entry, evidence digest): a decision made on one process's
//! evidence is never served to a process whose evidence differs. They are
//! renewed while some workload with that evidence still wants them.
//!
//! Every change bumps a version that open Workload API streams wait on; every
//! read filters out anything expired, so an expired SVID is never served even
//! if renewal has stalled.
//!
//! Revocations pushed by the server drop what they name at once (and keep it
//! from coming back); a tainted authority makes what it signed due for
//! re-issue now; a revoked authority makes what it signed disappear.
//!
//! Entries bound to their process (`bind: process`, and `bind: task`, which
//! the server issues only to a task's processes) are held per process
//! instance as well: for each live instance that asked ([`Cache::open_instance`])
//! SVIDs of the bound entries it matches are issued for it alone, and
//! [`Cache::end_instance`] withdraws them all when it exits. Two processes
//! with the same evidence never share one, and an instance that has ended
//! is never given another (one issued while it was exiting is refused by
//! [`Cache::put_svid`], [`Cache::put_jwt`] and [`Cache::put_wit`], for the
//! caller to report).
//!
//! WIT-SVIDs are held like JWT-SVIDs, per (entry, evidence, process instance
//! of a bound entry), with the private key made for each: revocations (by
//! `jti`), a revoked or tainted signing key, an entry change and expiry drop
//! them as they drop JWT-SVIDs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use hallmark_ca::Bundle;
use hallmark_core::ProcessInstance as RecordedProcess;
use hallmark_core::{Bind, Entry, SelectorSet};
use tokio::sync::watch;

use crate::evidence::Evidence;
use crate::instance::ProcessInstance;

/// How long a workload's interest outlives its last request or stream.
pub const INTEREST_KEEP_SECS: i64 = 600;
/// Most distinct evidence sets tracked at once.
pub const MAX_INTERESTS: usize = 10_000;

/// Where an X.509-SVID is held: one entry, for one workload evidence set
/// and, for an entry bound to its process, one process instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SvidKey {
    /// The entry it was issued for.
    pub entry_id: String,
    /// The digest of the evidence it was decided on (`hallmark_core::evidence_digest`).
    pub digest: String,
    /// The process instance it belongs to (`bind: process` entries only).
    pub instance: Option<ProcessInstance>,
}

impl SvidKey {
    /// The key for `entry_id` and the evidence digest `digest`.
    pub fn new(entry_id: &str, digest: &str) -> Self {
        Self { entry_id: entry_id.to_owned(), digest: digest.to_owned(), instance: None }
    }

    /// Where `entry`'s SVID for a workload with evidence `digest` running as
    /// `instance` is held: per instance when the entry is bound to its
    /// process, and then nowhere for a caller whose instance is unknown.
    pub fn of(entry: &Entry, digest: &str, instance: Option<ProcessInstance>) -> Option<Self> {
        let instance = match entry.bind {
            Bind::None => None,
            Bind::Process | Bind::Task => Some(instance?),
        };
        Some(Self { entry_id: entry.id.clone(), digest: digest.to_owned(), instance })
    }
}

/// Where a JWT-SVID is held: one entry, one evidence set, one audience list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct JwtKey {
    svid: SvidKey,
    audience: Vec<String>,
}

impl JwtKey {
    fn new(svid: &SvidKey, audience: &[String]) -> Self {
        Self { svid: svid.clone(), audience: audience.to_vec() }
    }
}

/// A credential withdrawn because the process instance it belonged to ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// X.509 serial (hex) or JWT `jti`.
    pub id: String,
    /// When it expires anyway (unix seconds): no need to report it after.
    pub not_after: i64,
}

/// Whether [`Cache::put_svid`] or [`Cache::put_jwt`] kept what it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Kept {
    /// Held and served.
    Yes,
    /// Dropped: its entry is gone, it was revoked, or the cache is full.
    No,
    /// Dropped: the process instance it was issued for has ended. It was
    /// issued after the end was reported, so it must be reported too.
    ProcessEnded,
}

/// A revoked credential, as the server pushes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// An X.509-SVID serial (hex) or a JWT-SVID `jti`.
    pub id: String,
    /// When it would have expired anyway (unix seconds): kept until then.
    pub not_after: i64,
}

/// An X.509-SVID held for one entry and one evidence set.
#[derive(Clone)]
pub struct HeldSvid {
    /// The entry's revision when issued; a newer revision means re-issue.
    pub revision: u64,
    /// Serial number (hex), as revocations name it.
    pub serial: String,
    /// The authority that signed it.
    pub authority_id: String,
    /// DER chain, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The private key, PKCS#8 DER, generated here and never sent anywhere but to the workload.
    pub key: Vec<u8>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// When to replace it (the server's renewal point for the entry's class).
    pub rotate_at: i64,
}

impl std::fmt::Debug for HeldSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldSvid")
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A JWT-SVID held for (entry, evidence, audiences).
#[derive(Debug, Clone)]
pub struct HeldJwt {
    /// The token.
    pub token: String,
    /// Its `jti`, as revocations name it.
    pub jti: String,
    /// The key that signed it.
    pub kid: String,
    /// `exp`.
    pub expires_at: i64,
    /// Re-mint after this.
    pub refresh_at: i64,
}

/// A WIT-SVID held for (entry, evidence, process instance of a bound
/// entry), with the key it binds.
#[derive(Clone, PartialEq, Eq)]
pub struct HeldWit {
    /// The token (compact JWS, `typ` `wit+jwt`).
    pub token: String,
    /// The private key its `cnf.jwk` binds, as a JWK: made on this node,
    /// sent only to the workload. Never logged.
    pub key: String,
    /// Its `jti`, as revocations name it.
    pub jti: String,
    /// The key that signed it.
    pub kid: String,
    /// `exp`.
    pub expires_at: i64,
    /// Re-mint after this.
    pub refresh_at: i64,
}

impl std::fmt::Debug for HeldWit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldWit")
            .field("jti", &self.jti)
            .field("kid", &self.kid)
            .field("expires_at", &self.expires_at)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A workload evidence set that wants identities.
#[derive(Debug, Clone)]
struct Interest {
    selectors: SelectorSet,
    /// The process that showed this evidence last: requests made for the
    /// evidence name it (the SVID serves every process showing it).
    process: Option<RecordedProcess>,
    streams: usize,
    last_seen: i64,
}

/// A live process instance that asked for identities: the evidence it
/// showed last. It wants the SVIDs of the bound entries it matches until it
/// exits.
#[derive(Debug, Clone)]
struct InstanceInterest {
    selectors: SelectorSet,
    digest: String,
    /// The facts recorded with what is issued for it.
    process: Option<RecordedProcess>,
}

/// An SVID the agent should request now.
#[derive(Debug, Clone)]
pub struct Due {
    /// Where the result goes.
    pub key: SvidKey,
    /// The entry.
    pub entry: Arc<Entry>,
    /// The workload evidence to decide on.
    pub selectors: SelectorSet,
    /// The process that showed it last, recorded with it.
    pub process: Option<RecordedProcess>,
    /// A replacement for a current SVID (`renew`), or a first one (`issue_x509`).
    pub renewal: bool,
}

#[derive(Default)]
struct Inner {
    /// Shared with what calls read of them ([`Cache::matching`]): a call
    /// takes a reference, not a copy of each entry it matches.
    entries: HashMap<String, Arc<Entry>>,
    bundle: Option<Arc<Bundle>>,
    svids: HashMap<SvidKey, HeldSvid>,
    jwts: HashMap<JwtKey, HeldJwt>,
    wits: HashMap<SvidKey, HeldWit>,
    interests: HashMap<String, Interest>,
    /// Live process instances that asked, for bound entries.
    instances: HashMap<ProcessInstance, InstanceInterest>,
    /// Denied keys and when to ask again.
    denied: HashMap<SvidKey, i64>,
    /// Revoked serials and jtis, until they would have expired anyway.
    revoked: HashMap<String, i64>,
}

impl Inner {
    fn drop_entry(&mut self, id: &str) {
        self.svids.retain(|k, _| k.entry_id != id);
        self.denied.retain(|k, _| k.entry_id != id);
        self.jwts.retain(|k, _| k.svid.entry_id != id);
        self.wits.retain(|k, _| k.entry_id != id);
    }
}

/// One identity in a Workload API answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedSvid {
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

    /// Replaces the entry set (a sync snapshot). Everything held for entries
    /// no longer present is dropped at once.
    pub fn replace_entries(&self, entries: Vec<Entry>) {
        self.write(|i| {
            let gone: Vec<String> =
                i.entries.keys().filter(|id| !entries.iter().any(|e| &e.id == *id)).cloned().collect();
            for id in gone {
                i.drop_entry(&id);
            }
            i.entries = entries.into_iter().map(|e| (e.id.clone(), Arc::new(e))).collect();
            ((), true)
        });
    }

    /// Adds or replaces one entry. A changed identity (SPIFFE ID, DNS names,
    /// selectors) drops what was issued under the old one; other changes are
    /// picked up by re-issuing at the next rotation (the revision is newer).
    pub fn upsert_entry(&self, e: Entry) {
        self.write(|i| {
            // A change of bind changes whom the SVIDs belong to.
            let identity_changed = i.entries.get(&e.id).is_some_and(|old| {
                old.spiffe_id != e.spiffe_id
                    || old.dns_names != e.dns_names
                    || old.selectors != e.selectors
                    || old.bind != e.bind
            });
            if identity_changed {
                i.drop_entry(&e.id);
            }
            i.jwts.retain(|k, _| k.svid.entry_id != e.id);
            i.wits.retain(|k, _| k.entry_id != e.id);
            i.denied.retain(|k, _| k.entry_id != e.id);
            i.entries.insert(e.id.clone(), Arc::new(e));
            ((), true)
        });
    }

    /// Removes an entry and everything issued for it.
    pub fn delete_entry(&self, id: &str) {
        self.write(|i| {
            let had = i.entries.remove(id).is_some();
            i.drop_entry(id);
            ((), had)
        });
    }

    /// Sets the bundle. SVIDs and JWTs signed by a revoked authority are
    /// dropped; those signed by a tainted one become due for re-issue now.
    pub fn set_bundle(&self, b: Bundle, now: i64) {
        self.write(|i| {
            let changed = i.bundle.as_deref() != Some(&b);
            let revoked: HashSet<&String> = b.status.revoked.iter().collect();
            let tainted: HashSet<&String> = b.status.tainted.iter().collect();
            i.svids.retain(|_, s| !revoked.contains(&s.authority_id));
            i.jwts.retain(|_, j| !revoked.contains(&j.kid) && !tainted.contains(&j.kid));
            i.wits.retain(|_, w| !revoked.contains(&w.kid) && !tainted.contains(&w.kid));
            for s in i.svids.values_mut().filter(|s| tainted.contains(&s.authority_id)) {
                s.rotate_at = s.rotate_at.min(now);
            }
            i.bundle = Some(Arc::new(b));
            ((), changed)
        });
    }

    /// Applies revocations: what they name is dropped at once and refused if
    /// it arrives later. Returns how many held SVIDs, JWTs and WITs were dropped.
    pub fn revoke(&self, revocations: &[Revocation], now: i64) -> usize {
        self.write(|i| {
            for r in revocations.iter().filter(|r| r.not_after > now) {
                i.revoked.insert(r.id.clone(), r.not_after);
            }
            let before = i.svids.len() + i.jwts.len() + i.wits.len();
            let revoked = &i.revoked;
            i.svids.retain(|_, s| !revoked.contains_key(&s.serial));
            i.jwts.retain(|_, j| !revoked.contains_key(&j.jti));
            i.wits.retain(|_, w| !revoked.contains_key(&w.jti));
            let dropped = before - i.svids.len() - i.jwts.len() - i.wits.len();
            (dropped, dropped > 0)
        })
    }

    /// Replaces the revoked set (a sync snapshot), applying it.
    pub fn replace_revoked(&self, revocations: &[Revocation], now: i64) -> usize {
        self.write(|i| {
            i.revoked.clear();
            ((), false)
        });
        self.revoke(revocations, now)
    }

    /// Whether a serial or jti has been revoked.
    pub fn is_revoked(&self, id: &str) -> bool {
        self.read(|i| i.revoked.contains_key(id))
    }

    /// Drops everything held and every entry: the agent's node was banned.
    pub fn clear(&self) {
        self.write(|i| {
            i.entries.clear();
            i.instances.clear();
            i.svids.clear();
            i.jwts.clear();
            i.wits.clear();
            i.denied.clear();
            ((), true)
        });
    }

    /// The current bundle.
    pub fn bundle(&self) -> Option<Arc<Bundle>> {
        self.read(|i| i.bundle.clone())
    }

    /// Entries the workload's selectors match, ordered by SPIFFE ID then id,
    /// so the default identity (the first) is stable.
    pub fn matching(&self, selectors: &SelectorSet) -> Vec<Arc<Entry>> {
        let mut v: Vec<Arc<Entry>> =
            self.read(|i| i.entries.values().filter(|e| e.matches(selectors)).cloned().collect());
        v.sort_by(|a, b| a.spiffe_id.cmp(&b.spiffe_id).then_with(|| a.id.cmp(&b.id)));
        v
    }

    /// Whether the workload's selectors match any entry.
    pub fn matches_any(&self, selectors: &SelectorSet) -> bool {
        self.read(|i| i.entries.values().any(|e| e.matches(selectors)))
    }

    /// A workload with `evidence`, in `process`, opened a stream: keep its
    /// SVIDs issued and renewed until [`Cache::close_interest`]. Returns the
    /// evidence digest.
    pub fn open_interest(&self, evidence: &Evidence, process: Option<RecordedProcess>, now: i64) -> String {
        let (selectors, digest) = (evidence.selectors(), evidence.digest().to_owned());
        self.write(|i| {
            if !i.interests.contains_key(&digest) && i.interests.len() >= MAX_INTERESTS {
                // Forget the idlest evidence set that has no open stream.
                if let Some(old) = i
                    .interests
                    .iter()
                    .filter(|(_, x)| x.streams == 0)
                    .min_by_key(|(_, x)| x.last_seen)
                    .map(|(k, _)| k.clone())
                {
                    i.interests.remove(&old);
                }
            }
            let new = !i.interests.contains_key(&digest);
            let x = i.interests.entry(digest.clone()).or_insert_with(|| Interest {
                selectors: selectors.clone(),
                process,
                streams: 0,
                last_seen: now,
            });
            x.streams += 1;
            x.last_seen = now;
            if process.is_some() {
                x.process = process;
            }
            // Only a new evidence set changes what is due (and must wake the
            // rotation loop); another stream for a known one changes nothing
            // that open streams serve.
            ((), new)
        });
        digest
    }

    /// The stream opened with [`Cache::open_interest`] ended.
    pub fn close_interest(&self, digest: &str, now: i64) {
        self.write(|i| {
            if let Some(x) = i.interests.get_mut(digest) {
                x.streams = x.streams.saturating_sub(1);
                x.last_seen = now;
            }
            ((), false)
        });
    }

    /// Process instance `instance`, showing `evidence`, asked for
    /// identities: SVIDs of the bound entries it matches are issued for it
    /// until [`Cache::end_instance`]. Returns true the first time (the
    /// caller then watches for its exit).
    pub fn open_instance(
        &self,
        instance: ProcessInstance,
        evidence: &Evidence,
        process: Option<RecordedProcess>,
    ) -> bool {
        let digest = evidence.digest();
        self.write(|i| {
            let new = !i.instances.contains_key(&instance);
            let changed = i.instances.get(&instance).is_none_or(|x| x.digest != digest);
            if changed {
                let selectors = evidence.selectors().clone();
                i.instances.insert(instance, InstanceInterest { selectors, digest: digest.to_owned(), process });
            }
            (new, changed)
        })
    }

    /// Whether `instance` asked and has not ended.
    pub fn instance_live(&self, instance: ProcessInstance) -> bool {
        self.read(|i| i.instances.contains_key(&instance))
    }

    /// Process instance `instance` exited: withdraws every SVID, JWT and WIT
    /// held for it (open streams are woken at once) and forgets it. Returns
    /// what was withdrawn, for the server to revoke, except the JWT-SVIDs and
    /// WIT-SVIDs of a task's process: a tool call's process may exit and hand
    /// its token (and a WIT's key) on to the rest of its task, so those live
    /// until the task ends (the server revokes them then). A task's X.509-SVIDs end with their
    /// process, like those of `bind: process` entries.
    pub fn end_instance(&self, instance: ProcessInstance) -> Vec<Ended> {
        self.write(|i| {
            let known = i.instances.remove(&instance).is_some();
            let mine = |k: &SvidKey| k.instance == Some(instance);
            let jwt_ends = |k: &SvidKey| i.entries.get(&k.entry_id).is_none_or(|e| e.bind != Bind::Task);
            let mut ended: Vec<Ended> = i
                .svids
                .iter()
                .filter(|(k, _)| mine(k))
                .map(|(_, s)| Ended { id: s.serial.clone(), not_after: s.not_after })
                .collect();
            ended.extend(
                i.jwts
                    .iter()
                    .filter(|(k, _)| mine(&k.svid) && jwt_ends(&k.svid))
                    .map(|(_, j)| Ended { id: j.jti.clone(), not_after: j.expires_at }),
            );
            ended.extend(
                i.wits
                    .iter()
                    .filter(|(k, _)| mine(k) && jwt_ends(k))
                    .map(|(_, w)| Ended { id: w.jti.clone(), not_after: w.expires_at }),
            );
            i.svids.retain(|k, _| !mine(k));
            i.jwts.retain(|k, _| !mine(&k.svid));
            i.wits.retain(|k, _| !mine(k));
            i.denied.retain(|k, _| !mine(k));
            let changed = known || !ended.is_empty();
            (ended, changed)
        })
    }

    /// SVIDs to request now: for every wanted evidence set and every unbound
    /// entry it matches, and for every live process instance and every bound
    /// entry it matches, one that is missing, stale (newer entry revision) or
    /// past its renewal point, unless a denial is still cooling down.
    pub fn due(&self, now: i64) -> Vec<Due> {
        self.read(|i| {
            let mut out = Vec::new();
            let mut consider =
                |key: SvidKey, e: &Arc<Entry>, selectors: &SelectorSet, process: Option<RecordedProcess>| {
                    if i.denied.get(&key).is_some_and(|t| *t > now) {
                        return;
                    }
                    let renewal = match i.svids.get(&key) {
                        None => false,
                        Some(s) if s.not_after <= now => false,
                        Some(s) if s.rotate_at <= now || s.revision < e.revision => true,
                        Some(_) => return,
                    };
                    out.push(Due { key, entry: Arc::clone(e), selectors: selectors.clone(), process, renewal });
                };
            for (digest, interest) in &i.interests {
                if interest.streams == 0 && now - interest.last_seen > INTEREST_KEEP_SECS {
                    continue;
                }
                for e in i.entries.values().filter(|e| e.bind == Bind::None && e.matches(&interest.selectors)) {
                    consider(SvidKey::new(&e.id, digest), e, &interest.selectors, interest.process);
                }
            }
            for (instance, x) in &i.instances {
                for e in i.entries.values().filter(|e| e.bind.per_process() && e.matches(&x.selectors)) {
                    let key = SvidKey { entry_id: e.id.clone(), digest: x.digest.clone(), instance: Some(*instance) };
                    consider(key, e, &x.selectors, x.process);
                }
            }
            out
        })
    }

    /// Whether some entry this workload (process `instance`, when known)
    /// matches is still waiting for its first SVID (not held, not denied).
    pub fn pending(&self, evidence: &Evidence, instance: Option<ProcessInstance>, now: i64) -> bool {
        !self.pending_ids(evidence, instance, now).is_empty()
    }

    /// The SPIFFE IDs of the entries this workload (process `instance`, when
    /// known) matches that are still waiting for their first SVID (not held,
    /// not denied). A bound entry waits only for a live instance.
    pub fn pending_ids(&self, evidence: &Evidence, instance: Option<ProcessInstance>, now: i64) -> Vec<String> {
        let digest = evidence.digest();
        self.read(|i| {
            i.entries
                .values()
                .filter(|e| e.matches(evidence.selectors()))
                .filter(|e| {
                    let Some(key) = SvidKey::of(e, digest, instance) else { return false };
                    if key.instance.is_some_and(|x| !i.instances.contains_key(&x)) {
                        return false;
                    }
                    !i.svids.contains_key(&key) && i.denied.get(&key).is_none_or(|t| *t <= now)
                })
                .map(|e| e.spiffe_id.to_string())
                .collect()
        })
    }

    /// Stores a freshly issued SVID if its entry still exists, it has not
    /// been revoked meanwhile and, for a bound entry, its process instance
    /// has not ended.
    pub fn put_svid(&self, key: SvidKey, s: HeldSvid) -> Kept {
        self.write(|i| {
            if key.instance.is_some_and(|x| !i.instances.contains_key(&x)) {
                return (Kept::ProcessEnded, false);
            }
            if !i.entries.contains_key(&key.entry_id) || i.revoked.contains_key(&s.serial) {
                return (Kept::No, false);
            }
            i.denied.remove(&key);
            i.svids.insert(key, s);
            (Kept::Yes, true)
        })
    }

    /// Policy denied `key`: withdraw what is held and do not ask again before `retry_at`.
    pub fn deny(&self, key: SvidKey, retry_at: i64) {
        self.write(|i| {
            i.svids.remove(&key);
            i.jwts.retain(|k, _| k.svid != key);
            i.wits.remove(&key);
            i.denied.insert(key, retry_at);
            ((), true)
        });
    }

    /// Drops expired SVIDs, JWTs and WITs, idle interests and old denials;
    /// returns how many SVIDs went.
    pub fn expire(&self, now: i64) -> usize {
        self.write(|i| {
            let before = i.svids.len();
            let wits = i.wits.len();
            i.svids.retain(|_, s| s.not_after > now);
            i.jwts.retain(|_, j| j.expires_at > now);
            i.wits.retain(|_, w| w.expires_at > now);
            i.revoked.retain(|_, not_after| *not_after > now);
            i.interests.retain(|_, x| x.streams > 0 || now - x.last_seen <= INTEREST_KEEP_SECS);
            i.denied.retain(|k, _| match k.instance {
                Some(x) => i.instances.contains_key(&x),
                None => i.interests.contains_key(&k.digest),
            });
            let gone = before - i.svids.len();
            // Open WIT streams are woken to stop serving what expired.
            (gone, gone > 0 || i.wits.len() < wits)
        })
    }

    /// The X.509-SVIDs to serve a workload with these selectors, valid at
    /// `now`: of bound entries, only those held for its process `instance`.
    /// SVIDs whose hint repeats an earlier one's are left out (hints are unique per response).
    pub fn x509_for(&self, evidence: &Evidence, instance: Option<ProcessInstance>, now: i64) -> Vec<ServedSvid> {
        let entries = self.matching(evidence.selectors());
        let digest = evidence.digest();
        self.read(|i| {
            let mut hints = HashSet::new();
            let mut out = Vec::new();
            for e in entries {
                let Some(key) = SvidKey::of(&e, digest, instance) else { continue };
                let Some(s) = i.svids.get(&key) else { continue };
                if s.not_after <= now || s.not_before > now + 60 {
                    continue;
                }
                let hint = e.hint.clone().unwrap_or_default();
                if !hint.is_empty() && !hints.insert(hint.clone()) {
                    continue;
                }
                out.push(ServedSvid {
                    spiffe_id: e.spiffe_id.to_string(),
                    chain: s.chain.clone(),
                    key: s.key.clone(),
                    hint,
                });
            }
            out
        })
    }

    /// Whether an X.509-SVID (by serial) or a JWT-SVID or WIT-SVID (by jti)
    /// is held, unexpired and unrevoked, for the workload evidence `digest`.
    pub fn holds(&self, digest: &str, id: &str, now: i64) -> bool {
        self.read(|i| {
            !i.revoked.contains_key(id)
                && (i.svids.iter().any(|(k, s)| k.digest == digest && s.serial == id && s.not_after > now)
                    || i.jwts.iter().any(|(k, j)| k.svid.digest == digest && j.jti == id && j.expires_at > now)
                    || i.wits.iter().any(|(k, w)| k.digest == digest && w.jti == id && w.expires_at > now))
        })
    }

    /// A held JWT for (entry, evidence, process instance of a bound entry,
    /// audiences) still before its refresh point.
    pub fn jwt(&self, key: &SvidKey, aud: &[String], now: i64) -> Option<HeldJwt> {
        self.read(|i| i.jwts.get(&JwtKey::new(key, aud)).filter(|j| j.refresh_at > now).cloned())
    }

    /// Keeps a JWT for reuse until its refresh point; for a bound entry,
    /// only while its process instance lives.
    pub fn put_jwt(&self, key: &SvidKey, aud: &[String], j: HeldJwt) -> Kept {
        self.write(|i| {
            if key.instance.is_some_and(|x| !i.instances.contains_key(&x)) {
                return (Kept::ProcessEnded, false);
            }
            if i.entries.contains_key(&key.entry_id) && i.jwts.len() < 100_000 && !i.revoked.contains_key(&j.jti) {
                i.jwts.insert(JwtKey::new(key, aud), j);
                return (Kept::Yes, false);
            }
            (Kept::No, false)
        })
    }

    /// A held WIT for (entry, evidence, process instance of a bound entry)
    /// still before its refresh point (and so unexpired and unrevoked).
    pub fn wit(&self, key: &SvidKey, now: i64) -> Option<HeldWit> {
        self.read(|i| {
            i.wits
                .get(key)
                .filter(|w| w.refresh_at > now && w.expires_at > now && !i.revoked.contains_key(&w.jti))
                .cloned()
        })
    }

    /// Whether the WIT `jti` may still be served at `now`: held, unexpired
    /// and unrevoked.
    pub fn wit_servable(&self, jti: &str, now: i64) -> bool {
        self.read(|i| !i.revoked.contains_key(jti) && i.wits.values().any(|w| w.jti == jti && w.expires_at > now))
    }

    /// Keeps a WIT (replacing the one held for `key`) until it expires; for a
    /// bound entry, only while its process instance lives; never one revoked
    /// while it was being minted.
    pub fn put_wit(&self, key: &SvidKey, w: HeldWit) -> Kept {
        self.write(|i| {
            if key.instance.is_some_and(|x| !i.instances.contains_key(&x)) {
                return (Kept::ProcessEnded, false);
            }
            if i.entries.contains_key(&key.entry_id) && i.wits.len() < 100_000 && !i.revoked.contains_key(&w.jti) {
                i.wits.insert(key.clone(), w);
                return (Kept::Yes, false);
            }
            (Kept::No, false)
        })
    }

    /// The earliest expiry (unix seconds) of anything held, so the agent can
    /// withdraw it at that second rather than at its next periodic pass.
    pub fn next_expiry(&self) -> Option<i64> {
        self.read(|i| {
            i.svids
                .values()
                .map(|s| s.not_after)
                .chain(i.jwts.values().map(|j| j.expires_at))
                .chain(i.wits.values().map(|w| w.expires_at))
                .min()
        })
    }

    /// Number of SVIDs held (for tests and metrics).
    pub fn svid_count(&self) -> usize {
        self.read(|i| i.svids.len())
    }

    /// Number of entries this agent may serve (for metrics).
    pub fn entry_count(&self) -> usize {
        self.read(|i| i.entries.len())
    }
}

#[cfg(test)]
mod tests;
