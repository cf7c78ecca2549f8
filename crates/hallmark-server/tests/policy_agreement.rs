//! The server and `hallmark policy test` cannot disagree.
//!
//! Every case of the policy corpus (`crates/hallmark-policy/tests/corpus/`,
//! each `NAME.cedar` with `NAME.cases.json`) is replayed on a real server
//! in-process, through its issuance path (`issue_x509` / `issue_jwt` / `issue_wit`: entitle,
//! decide, sign, record), and through `policy test`'s own code
//! (`hallmark_policy::cases`). The decision, the lifetime signed, the denial
//! reason and the policy ids recorded for `hallmark entry denials` must be
//! the same, and every case must still pass its own expectation.
//!
//! A case is made replayable first, on both sides alike: the entry gets the
//! server's id, at least one selector (a stored entry needs one), a parent in
//! the server's trust domain, and explicit defaults; the node selectors are
//! the ones the server derives from the attestation; exceptions are stored,
//! approved and expire a day from now. A case that fixes `now` or its own node
//! selectors cannot be replayed on a live server and fails the test, so the
//! corpus never quietly loses coverage.

// Integration tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, clippy::unreachable)]

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use hallmark_core::{EntrySpec, SelectorSet, SpiffeId, now_unix};
use hallmark_policy::cases::{Case, CaseFile};
use hallmark_policy::{Action, Classes, PolicyEngine, Verdict};
use hallmark_server::RunningServer;
use hallmark_server::config::ServerConfig;
use hallmark_server::issuance::{AuthenticatedAgent, IssueError};

/// What the server did with one request.
#[derive(Debug, PartialEq, Eq)]
enum Served {
    /// Signed, living this many seconds.
    Signed { ttl_secs: u64 },
    /// Refused with this reason, recording these policy ids.
    Refused { reason: String, recorded_ids: Vec<String>, recorded_reason: String },
}

/// A server whose authorities outlive every lifetime in the corpus (30 days),
/// so what is signed is what was decided.
async fn server(dir: &Path) -> RunningServer {
    let cfg = format!(
        "trust_domain = \"example.org\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [ca]\nttl = \"400d\"\n",
        dir.display()
    );
    let settings = ServerConfig::parse(&cfg, &HashMap::new()).unwrap().validate().unwrap();
    hallmark_server::start(settings).await.unwrap()
}

/// Each policy file's name, text and case table.
fn corpus() -> Vec<(String, String, CaseFile)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hallmark-policy/tests/corpus");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("cedar") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let cases = std::fs::read_to_string(path.with_extension("cases.json")).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        out.push((name, text, serde_json::from_str(&cases).unwrap()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Fills what a live server needs and `policy test` would otherwise default,
/// identically for both sides.
fn make_replayable(c: &mut Case, now: i64) {
    assert!(c.now.is_none(), "case `{}` fixes `now`: a live server decides at its own clock", c.name);
    assert!(
        c.evidence.node_selectors.is_empty(),
        "case `{}` sets node selectors: a live server derives them from the attestation",
        c.name
    );
    if c.evidence.selectors.is_empty() {
        c.evidence.selectors = vec!["unix:uid:1000".into()];
    }
    let node = c.evidence.node_id.get_or_insert_with(|| "spiffe://example.org/hallmark/agent/join_token/agree".into());
    assert!(node.starts_with("spiffe://example.org/"), "case `{}`: node `{node}` is not in example.org", c.name);
    let attestation = c.evidence.node_attestation.get_or_insert_with(|| "join_token".into()).clone();
    c.evidence.node_selectors = vec![format!("node:attestation:{attestation}")];
    c.entry.owner.get_or_insert_with(|| "team".into());
    c.entry.class.get_or_insert_with(|| "machine".into());
    c.entry.x509_ttl.get_or_insert_with(|| "1h".into());
    c.entry.jwt_ttl.get_or_insert_with(|| "5m".into());
    for x in &mut c.exceptions {
        x.expires_at.get_or_insert(now + 86_400);
    }
}

/// How a fixture written straight to the store is recorded: as the server
/// records a change, so the chain stays whole.
fn fixture<T: ?Sized>(st: &hallmark_server::ServerState) -> hallmark_store::Recorder<'_, T> {
    st.record_change("test", "fixture", |_| hallmark_server::audit::Change::new("fixture", serde_json::Value::Null))
}

/// Stores the case's owner, entry and approved exceptions; returns the entry id.
async fn register(s: &RunningServer, c: &Case) -> String {
    let st = &s.state;
    let owner = c.entry.owner.as_deref().unwrap();
    if st.store.owner(owner).await.unwrap().is_none() {
        st.store.create_owner(owner, "o@example.org", "", &Default::default(), fixture(st)).await.unwrap();
    }
    let spec: EntrySpec = serde_json::from_value(serde_json::json!({
        "spiffe_id": c.entry.spiffe_id,
        "parent_id": c.evidence.node_id,
        "selectors": c.evidence.selectors,
        "owner": owner,
        "class": c.entry.class,
        "x509_ttl": c.entry.x509_ttl,
        "jwt_ttl": c.entry.jwt_ttl,
    }))
    .unwrap();
    let settings = &st.settings;
    let valid =
        spec.validate(&settings.trust_domain, None, settings.default_x509_ttl, settings.default_jwt_ttl).unwrap();
    let id = st.store.create_entry(&valid, fixture(st)).await.unwrap().id;
    for x in &c.exceptions {
        let expires_at = x.expires_at.unwrap();
        let new = hallmark_store::NewException {
            entry_id: &id,
            rule: &x.rule,
            value: &x.value,
            justification: "agreement",
            expires_at,
            requested_by: "requester",
        };
        let r = st.store.request_exception(&new, fixture(st)).await.unwrap();
        st.store.approve_exception(&r.id, "approver", now_unix(), fixture(st)).await.unwrap().unwrap();
    }
    st.catch_up().await.unwrap();
    st.reload_exceptions().await.unwrap();
    id
}

/// The case, asked of the server through its issuance path.
async fn serve(s: &RunningServer, c: &Case, entry_id: &str) -> Served {
    let caller = AuthenticatedAgent {
        agent: SpiffeId::new(c.evidence.node_id.as_deref().unwrap()).unwrap(),
        attestation: c.evidence.node_attestation.clone().unwrap(),
        serial: String::new(),
        node_selectors: c.evidence.node_selectors.iter().map(|x| x.parse().unwrap()).collect(),
    };
    let selectors: SelectorSet = c.evidence.selectors.iter().map(|x| x.parse().unwrap()).collect();
    let action: Action = c.action.parse().unwrap();
    let st = &s.state;
    let issued = match action {
        Action::IssueX509 | Action::Renew => {
            let id = SpiffeId::new(&c.entry.spiffe_id).unwrap();
            let csr = hallmark_ca::keys::new_key_and_csr(Some(&id)).unwrap().csr_der;
            st.issue_x509(&caller, entry_id, &csr, selectors.into(), action == Action::Renew).await.map(|i| {
                // Signed from `now - BACKDATE_SECS`, to `now + lifetime`.
                i.svid.not_after - i.svid.not_before - hallmark_ca::x509::BACKDATE_SECS
            })
        }
        Action::IssueJwt => {
            let audience = vec![c.audience.clone().unwrap()];
            st.issue_jwt(&caller, entry_id, &audience, selectors.into()).await.map(|j| {
                let payload = j.token.split('.').nth(1).unwrap();
                let claims: serde_json::Value =
                    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
                        .unwrap();
                claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap()
            })
        }
        Action::IssueWit => {
            let key = hallmark_ca::WitKey::generate().unwrap().public_jwk().unwrap().to_json();
            let key = serde_json::Value::Object(key).to_string();
            st.issue_wit(&caller, entry_id, &key, selectors.into()).await.map(|w| {
                let payload = w.token.split('.').nth(1).unwrap();
                let claims: serde_json::Value =
                    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
                        .unwrap();
                claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap()
            })
        }
    };
    match issued {
        Ok(secs) => Served::Signed { ttl_secs: u64::try_from(secs).unwrap() },
        Err(IssueError::Denied { by }) => {
            let recorded = st.store.denials(entry_id).await.unwrap();
            let hallmark_store::DenialRecord {
                action: recorded_action, policy_ids: ids, reason: recorded_reason, ..
            } = recorded.into_iter().next().unwrap();
            assert_eq!(recorded_action, c.action, "case `{}`: the denial records the action", c.name);
            let recorded_ids = ids.split(',').filter(|x| !x.is_empty()).map(str::to_owned).collect();
            Served::Refused { reason: by, recorded_ids, recorded_reason }
        }
        Err(e) => panic!("case `{}`: the server failed instead of deciding: {e}", c.name),
    }
}

/// What the server must have done, given `policy test`'s verdict.
fn expected(v: &Verdict) -> Served {
    match (v.ttl_secs(), v.reason()) {
        (Some(ttl_secs), _) => Served::Signed { ttl_secs },
        (None, reason) => {
            let reason = reason.unwrap().to_owned();
            Served::Refused { reason: reason.clone(), recorded_ids: v.policy_ids.clone(), recorded_reason: reason }
        }
    }
}

/// The regression test for issue 15: the server's decision and `policy
/// test`'s are the same decision, case for case.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_and_policy_test_agree_on_the_corpus() {
    let mut compared = 0;
    let mut decisions = HashMap::<bool, usize>::new();
    for (name, text, mut file) in corpus() {
        let dir = tempfile::tempdir().unwrap();
        let s = server(dir.path()).await;
        // `policy test` runs with the built-in class rules: so does this server.
        assert_eq!(s.state.settings.classes, Classes::default());
        let version = s.state.set_policy(&text, "agreement test").await.unwrap().version();
        // The same text, compiled as `policy test` compiles it, numbered as the server numbered it.
        let engine = PolicyEngine::compile(&text, version).unwrap();
        for c in &mut file.cases {
            make_replayable(c, now_unix());
            let entry_id = register(&s, c).await;
            c.entry.id = Some(entry_id.clone());
            let verdict = hallmark_policy::cases::verdict(&engine, &Classes::default(), c).unwrap();
            let served = serve(&s, c, &entry_id).await;
            assert_eq!(served, expected(&verdict), "{name}: case `{}`", c.name);
            *decisions.entry(verdict.allowed()).or_default() += 1;
            compared += 1;
            // One SPIFFE ID belongs to one owner: the next case may give it another.
            s.state.store.delete_entry(&entry_id, fixture(&s.state)).await.unwrap();
            s.state.catch_up().await.unwrap();
        }
        // Made replayable, every case still means what it says.
        let outcomes = hallmark_policy::cases::run(&engine, &Classes::default(), &file).unwrap();
        let failed: Vec<_> = outcomes.iter().filter(|o| !o.pass).collect();
        assert!(failed.is_empty(), "{name}: {failed:?}");
    }
    assert!(compared >= 15, "corpus too small: {compared} cases");
    assert!(decisions[&true] > 0 && decisions[&false] > 0, "both decisions compared: {decisions:?}");
}
