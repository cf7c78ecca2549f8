//! How many executables may be read in full at once: per uid, and in all.
//!
//! A caller whose executable has not been hashed yet is attested on the
//! blocking pool, which reads the whole file. A local user can make that
//! slow on purpose: a large executable, many copies of one, or a file on a
//! FUSE filesystem whose server never answers a read (the thread then waits
//! in the kernel, and nothing can cancel it). Without a bound, one user
//! could hold every thread of the pool and leave every other workload's
//! first call waiting. So each uid may have [`PER_UID`] executables read at
//! once, and all uids together [`IN_ALL`]; a caller over either waits its
//! turn (asynchronously: waiting holds no thread), and its deadline still
//! ends the wait. Calls whose executable is already hashed take no slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Executables one uid may have read at once. Four keep a burst of new
/// workloads of one user moving while a stuck read holds one slot.
pub const PER_UID: usize = 4;

/// Executables read at once in all: well below the blocking pool's 512
/// threads, so that the pool always has threads for everything else.
pub const IN_ALL: usize = 64;

/// The slots, shared by every connection of the agent.
#[derive(Debug)]
pub struct HashSlots {
    per_uid: usize,
    in_all_size: usize,
    in_all: Arc<Semaphore>,
    by_uid: Arc<Mutex<ByUid>>,
    /// Callers waiting for a slot now.
    waiting: Arc<AtomicUsize>,
}

/// Only uids with a slot taken or awaited are here: a uid's entry goes when
/// its last holder or waiter does.
type ByUid = HashMap<u32, PerUid>;

#[derive(Debug)]
struct PerUid {
    slots: Arc<Semaphore>,
    /// Callers holding or awaiting one of `slots`.
    callers: usize,
}

impl Default for HashSlots {
    fn default() -> Self {
        Self::new(PER_UID, IN_ALL)
    }
}

/// A slot held (or, inside [`HashSlots::take`], awaited): given back when
/// dropped, also when the caller stops waiting. It owns what it needs, so
/// that it can go with the read into the blocking pool: a call whose client
/// gives up must not give back the slot of a read that is still stuck.
#[derive(Debug)]
pub struct HashSlot {
    by_uid: Arc<Mutex<ByUid>>,
    uid: u32,
    mine: Option<OwnedSemaphorePermit>,
    all: Option<OwnedSemaphorePermit>,
    /// While waiting: the count it is in.
    waiting: Option<Arc<AtomicUsize>>,
}

impl HashSlots {
    /// `per_uid` slots for each uid and `in_all` in all (each at least one).
    pub fn new(per_uid: usize, in_all: usize) -> Self {
        Self {
            per_uid: per_uid.max(1),
            in_all_size: in_all.max(1),
            in_all: Arc::new(Semaphore::new(in_all.max(1))),
            by_uid: Arc::new(Mutex::new(HashMap::new())),
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Waits for a slot for `uid`: one of its own first, then one of all,
    /// so that a uid waiting behind its own reads holds none of the
    /// others' slots. `None` only if a semaphore was closed, which nothing
    /// does.
    pub async fn take(&self, uid: u32) -> Option<HashSlot> {
        let mine = {
            let mut by_uid = lock(&self.by_uid);
            let entry = by_uid
                .entry(uid)
                .or_insert_with(|| PerUid { slots: Arc::new(Semaphore::new(self.per_uid)), callers: 0 });
            entry.callers += 1;
            entry.slots.clone()
        };
        // Counted from here: dropping `slot` (the caller gave up waiting, or
        // the read is done) uncounts it.
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let mut slot =
            HashSlot { by_uid: self.by_uid.clone(), uid, mine: None, all: None, waiting: Some(self.waiting.clone()) };
        slot.mine = Some(mine.acquire_owned().await.ok()?);
        slot.all = Some(self.in_all.clone().acquire_owned().await.ok()?);
        slot.stop_waiting();
        Some(slot)
    }

    /// Slots of `uid` held now.
    pub fn held(&self, uid: u32) -> usize {
        lock(&self.by_uid).get(&uid).map_or(0, |e| self.per_uid.saturating_sub(e.slots.available_permits()))
    }

    /// Slots held now, all uids together.
    pub fn held_in_all(&self) -> usize {
        self.in_all_size.saturating_sub(self.in_all.available_permits())
    }

    /// Callers waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// How many uids have a slot held or awaited.
    pub fn uids(&self) -> usize {
        lock(&self.by_uid).len()
    }
}

fn lock(by_uid: &Mutex<ByUid>) -> std::sync::MutexGuard<'_, ByUid> {
    by_uid.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl HashSlot {
    fn stop_waiting(&mut self) {
        if let Some(waiting) = self.waiting.take() {
            waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for HashSlot {
    fn drop(&mut self) {
        self.stop_waiting();
        // The permits go back first, so a uid whose entry is removed below
        // holds nothing any more.
        drop(self.mine.take());
        drop(self.all.take());
        let mut by_uid = lock(&self.by_uid);
        if let Some(entry) = by_uid.get_mut(&self.uid) {
            entry.callers = entry.callers.saturating_sub(1);
            if entry.callers == 0 {
                by_uid.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_uid_waits_behind_its_own_reads_and_no_one_elses() {
        let slots = HashSlots::new(2, 64);
        let a = slots.take(1000).await.unwrap();
        let _b = slots.take(1000).await.unwrap();
        assert_eq!(slots.held(1000), 2);
        // A third read of uid 1000 waits...
        let mut third = Box::pin(slots.take(1000));
        assert!((&mut third).now_or_never().is_none());
        assert_eq!(slots.waiting(), 1);
        // ...while another uid is served at once.
        let other = slots.take(1001).now_or_never().flatten();
        assert!(other.is_some());
        drop(other);
        // One of uid 1000's reads ends: the waiting one goes on.
        drop(a);
        let third = (&mut third).now_or_never().flatten();
        assert!(third.is_some());
        assert_eq!((slots.held(1000), slots.waiting()), (2, 0));
    }

    #[tokio::test]
    async fn all_uids_together_are_bounded_too() {
        let slots = HashSlots::new(2, 3);
        let _a = slots.take(1).await.unwrap();
        let _b = slots.take(1).await.unwrap();
        let c = slots.take(2).await.unwrap();
        assert_eq!(slots.held_in_all(), 3);
        let mut d = Box::pin(slots.take(3));
        assert!((&mut d).now_or_never().is_none());
        drop(c);
        assert!((&mut d).now_or_never().flatten().is_some());
    }

    #[tokio::test]
    async fn entries_go_with_their_last_holder_or_waiter() {
        let slots = HashSlots::new(1, 64);
        let a = slots.take(7).await.unwrap();
        // A caller that stops waiting (its deadline passed) leaves nothing.
        let mut waiting = Box::pin(slots.take(7));
        assert!((&mut waiting).now_or_never().is_none());
        assert_eq!(slots.waiting(), 1);
        drop(waiting);
        assert_eq!((slots.uids(), slots.waiting()), (1, 0));
        drop(a);
        assert_eq!((slots.uids(), slots.held(7), slots.held_in_all()), (0, 0, 0));
        // And the uid is served again from a fresh entry.
        assert!(slots.take(7).now_or_never().flatten().is_some());
        assert_eq!(slots.uids(), 0);
    }
}
