//! Authority rotation with no gap: scheduled (prepare at half life, activate
//! at five sixths) and forced (prepare, activate, taint, revoke), for the
//! X.509 CA and the JWT key, watched by a workload that checks, every tenth
//! of a second, that what it holds is unexpired and validates against the
//! bundle it holds.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::harness::*;
use crate::separate::{join_agent, start_server_with};

/// An X.509-SVID chain and the bundle's X.509 authorities, both DER.
type Held = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// What a streaming workload saw.
#[derive(Default)]
struct Watch {
    /// The latest X.509 context: (chain DER, bundle anchors DER).
    latest: Option<Held>,
    /// Instants (unix ms) at which what it held was not valid, and why.
    gaps: Vec<String>,
    /// Issuers (subject key of the signing CA, as the leaf names it) seen.
    issuers: BTreeSet<String>,
    /// Bundle sizes seen.
    bundle_sizes: BTreeSet<usize>,
}

fn issuer_of(leaf: &[u8]) -> String {
    use x509_parser::extensions::ParsedExtension;
    let (_, c) = x509_parser::parse_x509_certificate(leaf).unwrap();
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| hex::encode(k.0)),
            _ => None,
        })
        .expect("SVIDs name their authority's key")
}

/// Streams X.509 contexts from `socket` and checks validity every 100 ms
/// until dropped.
fn watch(socket: String) -> (Arc<Mutex<Watch>>, tokio::task::JoinHandle<()>) {
    let w = Arc::new(Mutex::new(Watch::default()));
    let (w2, w3) = (w.clone(), w.clone());
    let stream_task = tokio::spawn(async move {
        let client = spiffe::WorkloadApiClient::connect_to(socket).await.unwrap();
        loop {
            let Ok(mut s) = client.stream_x509_contexts().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            while let Some(Ok(ctx)) = s.next().await {
                let Some(svid) = ctx.default_svid() else { continue };
                let chain: Vec<Vec<u8>> = svid.cert_chain().iter().map(|c| c.as_bytes().to_vec()).collect();
                let td = spiffe::TrustDomain::new("example.org").unwrap();
                let anchors: Vec<Vec<u8>> = ctx
                    .bundle_set()
                    .get(&td)
                    .map(|b| b.authorities().iter().map(|a| a.as_bytes().to_vec()).collect())
                    .unwrap_or_default();
                let mut g = w2.lock().unwrap();
                g.issuers.insert(issuer_of(&chain[0]));
                g.bundle_sizes.insert(anchors.len());
                g.latest = Some((chain, anchors));
            }
        }
    });
    let check_task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut g = w3.lock().unwrap();
            let Some((chain, anchors)) = g.latest.clone() else { continue };
            if let Err(e) = hallmark_ca::tls::verify_svid(&chain, &anchors, hallmark_core::now_unix()) {
                let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
                g.gaps.push(format!("{at}: {e}"));
            }
        }
    });
    let both = tokio::spawn(async move {
        let _ = tokio::join!(stream_task, check_task);
    });
    (w, both)
}

fn authorities(cli: &dyn Fn(&[&str]) -> std::process::Output) -> Vec<Value> {
    let out = cli(&["ca", "show", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["authorities"].as_array().unwrap().clone()
}

fn find(list: &[Value], kind: &str, state: &str) -> Option<String> {
    list.iter().find(|a| a["kind"] == kind && a["state"] == state).map(|a| a["id"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_rotation_leaves_no_gap() {
    // A 30 s authority: the next is prepared after ~20 s and active after ~33 s.
    let dep = start_server_with(None, "default_x509_ttl = \"6s\"\ndefault_jwt_ttl = \"6s\"\n[ca]\nttl = \"30s\"\n");
    let (agent, agent_id, socket) = join_agent(&dep, "rot");
    let (client, _) = dep.serve_me("spiffe://example.org/rotating", &agent, &agent_id, &socket).await;
    let sock = format!("unix://{}", socket.display());
    let (w, task) = watch(sock);
    let start = authorities(&|a| dep.cli(a));
    let first_x509 = find(&start, "x509", "active").unwrap();
    let first_jwt = find(&start, "jwt", "active").unwrap();
    // JWT-SVIDs fetched throughout validate through the agent at every moment.
    let mut kids = BTreeSet::new();
    let mut jwt_failures = Vec::new();
    for _ in 0..45 {
        match client.fetch_jwt_svid(["db"], None).await {
            Ok(j) => {
                let header: Value = serde_json::from_slice(
                    &base64::Engine::decode(
                        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                        j.token().split('.').next().unwrap(),
                    )
                    .unwrap(),
                )
                .unwrap();
                kids.insert(header["kid"].as_str().unwrap().to_owned());
                if let Err(e) = client.validate_jwt_token("db", j.token()).await {
                    jwt_failures.push(format!("{e:?}"));
                }
            }
            Err(e) => jwt_failures.push(format!("fetch: {e:?}")),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    task.abort();
    let end = authorities(&|a| dep.cli(a));
    let g = w.lock().unwrap();
    assert!(g.gaps.is_empty(), "moments with no valid SVID: {:?}\n{}", g.gaps, agent.log());
    assert!(jwt_failures.is_empty(), "{jwt_failures:?}");
    assert_ne!(find(&end, "x509", "active").unwrap(), first_x509, "the X.509 authority rotated");
    assert_ne!(find(&end, "jwt", "active").unwrap(), first_jwt, "the JWT key rotated");
    assert!(g.issuers.len() >= 2, "SVIDs from more than one authority: {:?}", g.issuers);
    assert!(g.bundle_sizes.iter().any(|n| *n >= 2), "the next authority was published before use");
    assert!(kids.len() >= 2, "JWT-SVIDs from more than one key: {kids:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn forced_rotation_taint_and_revoke() {
    let up = Up::start();
    let cli = |a: &[&str]| up.cli(a);
    up.create_entry("spiffe://example.org/forced", &["--selector", &format!("unix:uid:{}", my_uid())]);
    let client = up.client().await;
    crate::separate::wait_for_svid(&client).await.unwrap();
    let old_jwt = client.fetch_jwt_svid(["db"], None).await.unwrap();
    let (w, task) = watch(up.socket());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = authorities(&cli);
    let old = find(&before, "x509", "active").unwrap();
    let old_kid = find(&before, "jwt", "active").unwrap();

    // Refused: tainting or revoking the active authority, revoking an untainted one.
    let out = up.cli(&["ca", "taint", &old]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is active"), "{out:?}");
    let out = up.cli(&["ca", "activate"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no prepared"), "{out:?}");

    for kind in ["x509", "jwt"] {
        assert!(up.cli(&["ca", "prepare", "--kind", kind]).status.success());
        let out = up.cli(&["ca", "prepare", "--kind", kind]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("already prepared"));
        assert!(up.cli(&["ca", "activate", "--kind", kind]).status.success());
    }
    let after = authorities(&cli);
    let new = find(&after, "x509", "active").unwrap();
    assert_ne!(new, old);
    assert_eq!(find(&after, "x509", "old").unwrap(), old);
    let out = up.cli(&["ca", "revoke", &old]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not tainted"), "{out:?}");

    // Taint: everything the old authorities signed is re-issued at once.
    let issuers_before = w.lock().unwrap().issuers.clone();
    assert!(up.cli(&["ca", "taint", &old]).status.success());
    assert!(up.cli(&["ca", "taint", &old_kid]).status.success());
    wait_for("a workload SVID from the new authority", 10, || {
        (w.lock().unwrap().issuers.len() > issuers_before.len()).then_some(())
    });
    let agent_chain = up.dir.path().join("data/agent/agent.chain.pem");
    let agent_issuer = || {
        let pem = std::fs::read_to_string(&agent_chain).unwrap();
        issuer_of(&pem::parse(pem).unwrap().into_contents())
    };
    let old_agent_issuer = issuers_before.iter().next().unwrap().clone();
    wait_for("the agent's own SVID from the new authority", 10, || (agent_issuer() != old_agent_issuer).then_some(()));
    let new_jwt = client.fetch_jwt_svid(["db"], None).await.unwrap();
    assert_ne!(new_jwt.token(), old_jwt.token(), "JWTs cached from the tainted key are not served");

    // Revoke: out of the bundle; what it signed no longer validates.
    assert!(up.cli(&["ca", "revoke", &old]).status.success());
    assert!(up.cli(&["ca", "revoke", &old_kid]).status.success());
    let bundle = String::from_utf8_lossy(&up.cli(&["bundle", "show"]).stdout).to_string();
    // The new workload CA and the human issuing authority (issue 19).
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2, "one workload X.509 authority left, and the human one");
    let jwks: Value = serde_json::from_slice(&up.cli(&["bundle", "show", "--format", "jwks"]).stdout).unwrap();
    assert!(!jwks.to_string().contains(&old_kid), "the revoked JWT key left the bundle");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while client.validate_jwt_token("db", old_jwt.token()).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "a JWT from the revoked key still validates");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.validate_jwt_token("db", new_jwt.token()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    task.abort();
    let g = w.lock().unwrap();
    assert!(g.gaps.is_empty(), "moments with no valid SVID: {:?}", g.gaps);
    let audit = String::from_utf8_lossy(&up.cli(&["audit", "export"]).stdout).to_string();
    for action in ["ca_prepare", "ca_activate", "ca_taint", "ca_revoke"] {
        assert!(audit.contains(&format!("\"{action}\"")), "{action} is audited");
    }
}
