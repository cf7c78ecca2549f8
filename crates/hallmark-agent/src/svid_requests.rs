//! SVID requests: where the agent asks the server for its workloads' SVIDs.
//!
//! X.509-SVIDs are requested by [`rotation_loop`], ahead of need and never
//! on a workload's call:
//!
//! 1. it wakes every second, at the second the next SVID expires, and on
//!    every cache change (a workload's new interest, an entry change, a
//!    revocation);
//! 2. withdraws what expired ([`Cache::expire`]), so nothing is served expired;
//! 3. takes what is due ([`Cache::due`]): for every evidence set a workload
//!    wants and every entry it matches, an SVID missing, stale or past its
//!    rotation point; less what is waiting to retry after a failure;
//! 4. makes a new key and a CSR for each, here on the node
//!    ([`request_batch`]): a key leaves the node only to its workload;
//! 5. asks the server in one `SignX509Svids` call per batch; the server
//!    decides each on the workload's evidence and signs;
//! 6. puts each result in the cache ([`Cache::put_svid`], or [`Cache::deny`]
//!    when policy said no), which wakes the workloads' open streams.
//!
//! JWT-SVIDs are minted on request instead ([`jwt_svid`]): the one held is
//! reused until its refresh point, else the server mints one on the
//! workload's evidence. So are WIT-SVIDs ([`wit_svid`]), each for a new key
//! made here, whose public half alone goes to the server.
//!
//! [`Cache::expire`]: crate::cache::Cache::expire
//! [`Cache::due`]: crate::cache::Cache::due
//! [`Cache::put_svid`]: crate::cache::Cache::put_svid
//! [`Cache::deny`]: crate::cache::Cache::deny

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hallmark_ca::WitKey;
use hallmark_ca::keys::new_key_and_csr;
use hallmark_ca::svid;
use hallmark_core::ProcessInstance as RecordedProcess;
use hallmark_core::{Bind, Entry, now_unix};
use hallmark_proto::node as pb;
use tonic::{Code, Status};

use crate::admission::Attested;
use crate::cache::{Due, Ended, HeldJwt, HeldSvid, HeldWit, Kept, SvidKey};
use crate::error::AgentError;
use crate::instance::ProcessInstance;
use crate::state::AgentInner;

/// Most SVIDs asked for in one `SignX509Svids` call, well within the
/// server's limit per call (1000).
const SIGN_BATCH: usize = 500;
/// How long to wait before asking again after policy denied an SVID.
const DENIAL_RETRY_SECS: i64 = 30;
/// How long to wait before asking again after an entry bound to tasks was
/// refused for a task reason (no running task holds the process yet): a
/// running process bound to a task a moment later (`hallmark task start
/// --pid`, or a new task after one ended) should not wait the policy
/// back-off for its X.509-SVID.
const TASK_RETRY_SECS: i64 = 3;
/// How long to wait before asking again after a `SignX509Svids` call failed
/// (the server unreachable or failing).
const UNAVAILABLE_RETRY_SECS: i64 = 2;
/// How long to wait before asking again after the server refused one request
/// (not on policy) or returned a certificate the agent cannot use.
const REFUSED_RETRY_SECS: i64 = 5;
/// How long a retry point is remembered once it has passed.
const RETRY_MEMORY_SECS: i64 = 60;

/// The SVIDs waiting to be asked for again after a failure, and from when.
type RetryAfter = HashMap<SvidKey, i64>;

/// A request sent, and what its result needs that the server does not send back.
struct Requested {
    /// Where the result goes.
    key: SvidKey,
    /// The key whose CSR was sent (PKCS#8 DER), for the workload.
    private_key: Vec<u8>,
    /// The entry's revision the request was made for.
    revision: u64,
}

/// Requests the SVIDs workloads want (first issue or renewal, each decided by
/// the server on the workload's evidence) and drops expired ones, every second
/// and whenever the cache changes.
pub(crate) async fn rotation_loop(agent: Arc<AgentInner>) -> Result<(), AgentError> {
    let mut version = agent.cache.subscribe();
    let mut retry_after = RetryAfter::new();
    loop {
        // 1. Wake at least every second, and at the very moment the next SVID expires.
        let wake = agent
            .cache
            .next_expiry()
            .map(|t| Duration::from_millis(u64::try_from(t * 1000 - now_millis()).unwrap_or(0)))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        tokio::select! {
            r = version.changed() => if r.is_err() { return Ok(()) },
            () = tokio::time::sleep(wake) => {}
        }
        let now = now_unix();
        // 2. Never serve what expired.
        let expired = agent.cache.expire(now);
        if expired > 0 {
            agent.health.add_expired(expired);
            tracing::warn!(expired, "withdrew expired SVIDs that were not renewed");
        }
        // 3. What workloads want now.
        let due: Vec<Due> =
            agent.cache.due(now).into_iter().filter(|d| retry_after.get(&d.key).is_none_or(|t| *t <= now)).collect();
        // 4-6. Ask for it.
        for batch in due.chunks(SIGN_BATCH) {
            request_batch(&agent, batch, now, &mut retry_after).await;
        }
        retry_after.retain(|_, t| *t > now - RETRY_MEMORY_SECS);
    }
}

/// One `SignX509Svids` call for `batch`: a new key and CSR for each SVID,
/// the server's decision on each, and what it signed into the cache.
async fn request_batch(agent: &AgentInner, batch: &[Due], now: i64, retry_after: &mut RetryAfter) {
    // 4. A new key and a CSR for each.
    let mut requested = Vec::with_capacity(batch.len());
    let mut requests = Vec::with_capacity(batch.len());
    for d in batch {
        match new_key_and_csr(Some(&d.entry.spiffe_id)) {
            Ok(kc) => {
                requests.push(pb::SvidRequest {
                    entry_id: d.entry.id.clone(),
                    csr: kc.csr_der,
                    evidence: d.selectors.iter().map(ToString::to_string).collect(),
                    renewal: d.renewal,
                    process: d.process.as_ref().map(process_message),
                    lineage: lineage_message(&d.entry, d.key.instance),
                });
                requested.push(Requested { key: d.key.clone(), private_key: kc.key_pkcs8, revision: d.entry.revision });
            }
            Err(err) => tracing::error!(error = %err, "cannot generate workload key"),
        }
    }
    // 5. The server decides each on the workload's evidence, and signs.
    let resp = match agent.client().sign_x509_svids(pb::SignX509SvidsRequest { requests }).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            tracing::warn!(code = ?s.code(), status = %s.message(), "SVID signing failed; will retry");
            for d in batch {
                retry_after.insert(d.key.clone(), now + UNAVAILABLE_RETRY_SECS);
            }
            return;
        }
    };
    // 6. Into the cache. Results come back in request order.
    for (req, result) in requested.into_iter().zip(resp.results) {
        store(agent, req, result, now, retry_after);
    }
}

/// Puts one result in the cache: the SVID, or the denial; anything else is
/// asked for again a little later.
fn store(agent: &AgentInner, req: Requested, r: pb::SvidResult, now: i64, retry_after: &mut RetryAfter) {
    let key = req.key;
    if r.denied {
        tracing::info!(entry = %key.entry_id, reason = %r.error, "SVID denied; withdrawn");
        let retry = if r.error.starts_with("task: ") { TASK_RETRY_SECS } else { DENIAL_RETRY_SECS };
        agent.cache.deny(key, now + retry);
        return;
    }
    if !r.error.is_empty() {
        tracing::warn!(entry = %key.entry_id, error = %r.error, "SVID refused");
        retry_after.insert(key, now + REFUSED_RETRY_SECS);
        return;
    }
    let Some(info) = r.cert_chain.first().and_then(|l| svid::parse_leaf(l).ok()) else {
        tracing::error!(entry = %key.entry_id, "server returned an unusable certificate");
        retry_after.insert(key, now + REFUSED_RETRY_SECS);
        return;
    };
    retry_after.remove(&key);
    // The proto's `renew_at` is the server's rotation point, a unix timestamp
    // (the class's `renew_fraction` of the lifetime, with jitter).
    let rotate_at = rotate_at(r.renew_at, now_unix(), info.not_after);
    let ended = Ended { id: info.serial.clone(), not_after: info.not_after };
    let held = HeldSvid {
        revision: req.revision,
        serial: info.serial,
        authority_id: r.authority_id,
        chain: r.cert_chain,
        key: req.private_key,
        not_before: info.not_before,
        not_after: info.not_after,
        rotate_at,
    };
    if agent.cache.put_svid(key, held) == Kept::ProcessEnded {
        // Signed for a process that exited while it was being signed.
        agent.ended.push(vec![ended]);
    }
}

/// When to replace an SVID received at `received` that expires at
/// `not_after`: the server's rotation point for the entry's class
/// (`server_rotate_at`, unix seconds) while it is still ahead, and before
/// expiry; else half its remaining life.
fn rotate_at(server_rotate_at: i64, received: i64, not_after: i64) -> i64 {
    if server_rotate_at > received { server_rotate_at.min(not_after - 1) } else { midlife(received, not_after) }
}

/// Half the span from `not_before` to `not_after`, +-10% jitter so that SVIDs
/// issued together are not all renewed together.
fn midlife(not_before: i64, not_after: i64) -> i64 {
    let life = (not_after - not_before).max(2);
    let jitter = life / 10;
    let j = if jitter > 0 { rand::Rng::random_range(&mut rand::rng(), -jitter..=jitter) } else { 0 };
    not_before + life / 2 + j
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The process facts sent with a request, as the protocol carries them.
fn process_message(p: &RecordedProcess) -> pb::ProcessInstance {
    pb::ProcessInstance { pid: p.pid(), start_ticks: p.start_ticks(), started_at: p.started_at() }
}

/// For an entry bound to tasks, the ancestors of the process `instance`
/// (the server finds the task among them); nothing for other entries.
fn lineage_message(entry: &Entry, instance: Option<ProcessInstance>) -> Vec<pb::ProcessInstance> {
    match (entry.bind, instance) {
        (Bind::Task, Some(x)) => crate::instance::lineage(x)
            .into_iter()
            .map(|(pid, start)| pb::ProcessInstance {
                pid: u32::try_from(pid).unwrap_or(0),
                start_ticks: start,
                started_at: 0,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A JWT-SVID of `entry` for `audience`, for the attested workload `caller`
/// (running as process `instance`, which a bound entry needs): the one held
/// while before its refresh point, else one minted by the server now
/// (recorded with the caller's process) and kept for reuse.
pub(crate) async fn jwt_svid(
    agent: &AgentInner,
    entry: &Entry,
    audience: &[String],
    caller: &Attested,
    instance: Option<ProcessInstance>,
    now: i64,
) -> Result<String, Status> {
    let key = SvidKey::of(entry, caller.evidence.digest(), instance).ok_or_else(no_process)?;
    if key.instance.is_some_and(|x| !agent.cache.instance_live(x)) {
        return Err(no_process());
    }
    if let Some(j) = agent.cache.jwt(&key, audience, now) {
        return Ok(j.token);
    }
    let m = mint_jwt(agent, entry, audience, caller, key.instance).await?;
    // The server says when to mint a replacement; half the remaining life when it does not.
    let refresh_at = if m.refresh_at > now { m.refresh_at } else { now + (m.expires_at - now) / 2 };
    let ended = Ended { id: m.jti.clone(), not_after: m.expires_at };
    let held = HeldJwt { token: m.token.clone(), jti: m.jti, kid: m.kid, expires_at: m.expires_at, refresh_at };
    if agent.cache.put_jwt(&key, audience, held) == Kept::ProcessEnded {
        // Minted for a process that exited meanwhile: it ends with it.
        agent.ended.push(vec![ended]);
        return Err(no_process());
    }
    Ok(m.token)
}

/// What a caller is told for a bound entry when its process cannot be
/// told or has exited.
fn no_process() -> Status {
    Status::permission_denied(
        "no identity issued: the entry is bound to its process, and the calling process has exited",
    )
}

/// Mints a JWT-SVID through the server for the attested workload `caller`.
async fn mint_jwt(
    agent: &AgentInner,
    entry: &Entry,
    audience: &[String],
    caller: &Attested,
    instance: Option<ProcessInstance>,
) -> Result<pb::MintJwtSvidResponse, Status> {
    let entry_id = entry.id.as_str();
    let req = pb::MintJwtSvidRequest {
        entry_id: entry_id.to_owned(),
        audience: audience.to_vec(),
        evidence: caller.evidence.selectors().iter().map(ToString::to_string).collect(),
        process: caller.process.as_ref().map(process_message),
        lineage: lineage_message(entry, instance),
    };
    let minted = agent.client().mint_jwt_svid(req).await;
    minted.map(tonic::Response::into_inner).map_err(|s| refused("JWT-SVID", entry_id, s))
}

/// What a workload is told when the server would not mint a token
/// (`what`) for `entry_id`: a denial is PermissionDenied (with its reason
/// when it is about the caller's own task), a malformed request
/// InvalidArgument, anything else Unavailable.
fn refused(what: &str, entry_id: &str, s: Status) -> Status {
    match s.code() {
        Code::PermissionDenied | Code::NotFound => {
            tracing::info!(entry = entry_id, reason = %s.message(), "{what} denied");
            // A task's refusal is about the caller's own task (no running
            // task, pending approval, a scope breach): it is told why.
            match s.message().strip_prefix("task: ") {
                Some(why) => Status::permission_denied(format!("no identity issued: {why}")),
                None => Status::permission_denied("no identity issued"),
            }
        }
        Code::InvalidArgument => Status::invalid_argument(s.message().to_owned()),
        _ => {
            tracing::warn!(status = %s, "{what} mint failed");
            Status::unavailable("server unavailable")
        }
    }
}

/// A WIT-SVID of `entry` for the attested workload `caller` (running as
/// process `instance`, which a bound entry needs), with its private key: the
/// one held while before its refresh point, else one minted by the server
/// now for a new key made here, and kept for reuse until it expires.
pub(crate) async fn wit_svid(
    agent: &AgentInner,
    entry: &Entry,
    caller: &Attested,
    instance: Option<ProcessInstance>,
    now: i64,
) -> Result<HeldWit, Status> {
    let key = SvidKey::of(entry, caller.evidence.digest(), instance).ok_or_else(no_process)?;
    if key.instance.is_some_and(|x| !agent.cache.instance_live(x)) {
        return Err(no_process());
    }
    if let Some(w) = agent.cache.wit(&key, now) {
        return Ok(w);
    }
    // A key for this WIT alone; its private half goes only to the workload.
    let made = WitKey::generate().and_then(|k| Ok((k.public_jwk()?, k.private_jwk()?)));
    let (public, private) = made.map_err(|e| {
        tracing::error!(error = %e, "cannot generate a WIT key");
        Status::internal("cannot generate a key")
    })?;
    let req = pb::MintWitSvidRequest {
        entry_id: entry.id.clone(),
        public_key: serde_json::Value::Object(public.to_json()).to_string(),
        evidence: caller.evidence.selectors().iter().map(ToString::to_string).collect(),
        process: caller.process.as_ref().map(process_message),
        lineage: lineage_message(entry, key.instance),
    };
    let m = agent.client().mint_wit_svid(req).await.map_err(|s| refused("WIT-SVID", &entry.id, s))?.into_inner();
    // The server says when to mint a replacement; half the remaining life when it does not.
    let refresh_at = if m.refresh_at > now { m.refresh_at } else { now + (m.expires_at - now) / 2 };
    let held = HeldWit { token: m.token, key: private, jti: m.jti, kid: m.kid, expires_at: m.expires_at, refresh_at };
    match agent.cache.put_wit(&key, held.clone()) {
        Kept::Yes => Ok(held),
        Kept::ProcessEnded => {
            // Minted for a process that exited meanwhile: it ends with it.
            agent.ended.push(vec![Ended { id: held.jti, not_after: held.expires_at }]);
            Err(no_process())
        }
        // Revoked, or its entry withdrawn, while it was minted.
        Kept::No => Err(Status::unavailable("the WIT-SVID was withdrawn as it was minted; retry")),
    }
}

#[cfg(test)]
mod tests {
    use super::{midlife, rotate_at};

    #[test]
    fn the_default_rotation_point_is_near_half_remaining_life() {
        for _ in 0..100 {
            let r = midlife(1000, 1000 + 3600);
            assert!((1000 + 1800 - 360..=1000 + 1800 + 360).contains(&r), "{r}");
            let short = midlife(1000, 1004);
            assert!((1001..=1003).contains(&short), "{short}");
        }
    }

    #[test]
    fn the_servers_rotation_point_is_kept_while_ahead_and_before_expiry() {
        assert_eq!(rotate_at(1500, 1000, 2000), 1500);
        assert_eq!(rotate_at(2500, 1000, 2000), 1999, "never at or past expiry");
        for none_usable in [0, 900, 1000] {
            let r = rotate_at(none_usable, 1000, 2000);
            assert!((1400..=1600).contains(&r), "{none_usable}: {r}");
        }
    }
}
