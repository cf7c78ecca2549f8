//! Envoy SDS v3 on the agent's socket, against a real `hallmark up`. Envoy
//! itself cannot be installed from the registries these machines reach, so a
//! client generated from Envoy's published API files (the same vendored files
//! the agent is built from) plays Envoy: it streams secrets with ACKs and a
//! NACK, changes its subscription, sees rotations and a revocation pushed,
//! and is refused while its process matches no entry.

use std::time::{Duration, Instant};

use hallmark_proto::ENVOY_SECRET_TYPE_URL;
use hallmark_proto::envoy_api::envoy::config::core::v3::{BuildVersion, Node, node};
use hallmark_proto::envoy_api::envoy::extensions::transport_sockets::tls::v3::{
    Secret, SpiffeCertValidatorConfig, secret,
};
use hallmark_proto::envoy_api::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
};
use hallmark_proto::envoy_api::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use hallmark_proto::envoy_api::envoy::r#type::v3::SemanticVersion;
use prost::Message;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use crate::harness::*;

/// Rotates every few seconds.
const ID: &str = "spiffe://example.org/envoy";
/// Lives an hour: only a revocation replaces it during the test.
const LONG: &str = "spiffe://example.org/envoy-long";
const TD: &str = "spiffe://example.org";

/// What Envoy 1.30 says about itself.
fn envoy_node() -> Node {
    Node {
        id: "test-envoy".into(),
        cluster: "test".into(),
        user_agent_name: "envoy".into(),
        user_agent_version_type: Some(node::UserAgentVersionType::UserAgentBuildVersion(BuildVersion {
            version: Some(SemanticVersion { major_number: 1, minor_number: 30, patch: 0 }),
            metadata: None,
        })),
        ..Default::default()
    }
}

fn request(names: &[&str], last: Option<&DiscoveryResponse>) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(envoy_node()),
        resource_names: names.iter().map(|s| (*s).to_owned()).collect(),
        type_url: ENVOY_SECRET_TYPE_URL.into(),
        version_info: last.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: last.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

/// One `StreamSecrets` stream, as Envoy's gRPC mux holds it.
struct Envoy {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Envoy {
    async fn open(ch: Channel, first: DiscoveryRequest) -> Result<Self, Status> {
        let (tx, mut requests) = mpsc::channel(8);
        tx.send(first).await.unwrap();
        let outbound = futures_util::stream::poll_fn(move |cx| requests.poll_recv(cx));
        let rx = SecretDiscoveryServiceClient::new(ch).stream_secrets(outbound).await?.into_inner();
        Ok(Self { tx, rx })
    }

    async fn send(&self, r: DiscoveryRequest) {
        self.tx.send(r).await.unwrap();
    }

    /// The next response within `secs`, or `None` when none came.
    async fn next(&mut self, secs: u64) -> Option<Result<DiscoveryResponse, Status>> {
        match tokio::time::timeout(Duration::from_secs(secs), self.rx.message()).await {
            Ok(Ok(Some(r))) => Some(Ok(r)),
            Ok(Ok(None)) => panic!("the agent ended the stream without a status"),
            Ok(Err(s)) => Some(Err(s)),
            Err(_) => None,
        }
    }

    async fn expect(&mut self, secs: u64, what: &str) -> DiscoveryResponse {
        self.next(secs).await.unwrap_or_else(|| panic!("no response within {secs}s: {what}")).unwrap()
    }
}

fn secrets(r: &DiscoveryResponse) -> Vec<Secret> {
    assert_eq!(r.type_url, ENVOY_SECRET_TYPE_URL);
    r.resources
        .iter()
        .map(|a| {
            assert_eq!(a.type_url, ENVOY_SECRET_TYPE_URL);
            Secret::decode(a.value.as_slice()).unwrap()
        })
        .collect()
}

fn names(r: &DiscoveryResponse) -> Vec<String> {
    secrets(r).into_iter().map(|s| s.name).collect()
}

fn inline(ds: Option<&hallmark_proto::envoy_api::envoy::config::core::v3::DataSource>) -> Vec<u8> {
    use hallmark_proto::envoy_api::envoy::config::core::v3::data_source::Specifier;
    match ds.and_then(|d| d.specifier.as_ref()) {
        Some(Specifier::InlineBytes(b)) => b.clone(),
        other => panic!("expected inline bytes, got {other:?}"),
    }
}

/// The (chain PEM, key PEM) of the `tls_certificate` named `name`.
fn tls(r: &DiscoveryResponse, name: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    secrets(r).into_iter().find(|s| s.name == name).map(|s| match s.r#type {
        Some(secret::Type::TlsCertificate(t)) => (inline(t.certificate_chain.as_ref()), inline(t.private_key.as_ref())),
        other => panic!("`{name}` is not a tls_certificate: {other:?}"),
    })
}

fn leaf_serial(chain_pem: &[u8]) -> String {
    let certs = pem::parse_many(chain_pem).unwrap();
    serial_of(certs[0].contents())
}

/// The bundle a validation context carries, as PEM, and whether it is for
/// Envoy's SPIFFE validator (else `trusted_ca`).
fn validation_bundle(r: &DiscoveryResponse, name: &str) -> (Vec<u8>, bool) {
    let s = secrets(r).into_iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no `{name}`"));
    let Some(secret::Type::ValidationContext(c)) = s.r#type else { panic!("`{name}` is not a validation_context") };
    match c.custom_validator_config {
        Some(cfg) => {
            assert_eq!(cfg.name, "envoy.tls.cert_validator.spiffe");
            let any = cfg.typed_config.unwrap();
            assert!(any.type_url.ends_with("envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig"));
            let v = SpiffeCertValidatorConfig::decode(any.value.as_slice()).unwrap();
            assert_eq!(v.trust_domains.len(), 1, "only the own trust domain: no federation yet");
            assert_eq!(v.trust_domains[0].name, "example.org");
            (inline(v.trust_domains[0].trust_bundle.as_ref()), true)
        }
        None => (inline(c.trusted_ca.as_ref()), false),
    }
}

/// Checks a served certificate: its SPIFFE ID, that the key is its key, and
/// that it verifies (openssl) against the bundle served beside it.
fn check_certificate(id: &str, chain_pem: &[u8], key_pem: &[u8], bundle_pem: &[u8]) {
    let chain = pem::parse_many(chain_pem).unwrap();
    let ca = pem::parse_many(bundle_pem).unwrap();
    check_x509_svid_rules(chain[0].contents(), ca[0].contents(), id);
    let key = pem::parse(key_pem).unwrap();
    assert_eq!(key.tag(), "PRIVATE KEY");
    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        key.contents(),
    )
    .unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(chain[0].contents()).unwrap();
    use aws_lc_rs::signature::KeyPair;
    assert_eq!(pair.public_key().as_ref(), leaf.public_key().subject_public_key.data.as_ref(), "key matches cert");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bundle.pem"), bundle_pem).unwrap();
    std::fs::write(dir.path().join("chain.pem"), chain_pem).unwrap();
    openssl_verify(&dir.path().join("bundle.pem"), &dir.path().join("chain.pem"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_envoy_client_streams_secrets_sees_rotation_and_revocation_and_is_refused_without_an_entry() {
    let up = Up::start();
    let ch = raw_channel(&up.socket()).await;
    let mut sds = SecretDiscoveryServiceClient::new(ch.clone());

    // A process matching no entry is refused, streaming or not.
    let refused = Envoy::open(ch.clone(), request(&[ID], None)).await.err().expect("refused");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = sds.fetch_secrets(request(&[], None)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let delta = sds.delta_secrets(futures_util::stream::iter([DeltaDiscoveryRequest::default()])).await;
    assert_eq!(delta.err().map(|s| s.code()), Some(Code::Unimplemented));

    let uid = format!("unix:uid:{}", my_uid());
    up.create_entry(ID, &["--selector", &uid, "--x509-ttl", "10s"]);
    up.create_entry(LONG, &["--selector", &uid, "--x509-ttl", "1h"]);
    let bundle_cli = up.cli(&["bundle", "show"]).stdout;

    // FetchSecrets, as a client older than 1.18 (no build version): the
    // aliases, and the bundle as `trusted_ca`.
    let mut old = request(&["default", "ROOTCA"], None);
    old.node = None;
    let r = sds.fetch_secrets(old).await.unwrap().into_inner();
    assert_eq!(names(&r), ["ROOTCA", "default"]);
    let (bundle, spiffe_validator) = validation_bundle(&r, "ROOTCA");
    assert!(!spiffe_validator);
    assert_eq!(pem::parse_many(&bundle).unwrap(), pem::parse_many(&bundle_cli).unwrap(), "the trust bundle");
    let (chain, key) = tls(&r, "default").unwrap();
    check_certificate(ID, &chain, &key, &bundle);
    let r = sds.fetch_secrets(request(&[], None)).await.unwrap().into_inner();
    assert_eq!(names(&r), [TD, ID, LONG], "no names: every SPIFFE ID and the trust domain");
    let e = sds.fetch_secrets(request(&["spiffe://example.org/not-mine"], None)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("spiffe://example.org/not-mine"), "{}", e.message());

    // StreamSecrets as Envoy 1.30: the SPIFFE validator form.
    let mut envoy = Envoy::open(ch.clone(), request(&[TD, ID], None)).await.unwrap();
    let first = envoy.expect(15, "the first response").await;
    assert_eq!(first.version_info, "1");
    assert!(!first.nonce.is_empty());
    assert_eq!(names(&first), [TD, ID]);
    let (bundle, spiffe_validator) = validation_bundle(&first, TD);
    assert!(spiffe_validator);
    let (chain, key) = tls(&first, ID).unwrap();
    check_certificate(ID, &chain, &key, &bundle);
    let serial = leaf_serial(&chain);

    // ACK: nothing is resent; what comes next is the rotation, pushed.
    envoy.send(request(&[TD, ID], Some(&first))).await;
    let rotated = envoy.expect(20, "a rotation").await;
    let rotated_serial = leaf_serial(&tls(&rotated, ID).expect("the certificate").0);
    assert_ne!(rotated_serial, serial, "an ACK does not bring the same secrets again");
    assert_eq!(rotated.version_info, "2");

    // NACK: logged, nothing resent; the next rotation still comes.
    let mut nack = request(&[TD, ID], Some(&rotated));
    nack.version_info = first.version_info.clone();
    nack.error_detail = Some(hallmark_proto::envoy_api::google::rpc::Status {
        code: Code::InvalidArgument as i32,
        message: "test: rejected".into(),
        details: vec![],
    });
    envoy.send(nack).await;
    let again = envoy.expect(20, "the next rotation after a NACK").await;
    let again_serial = leaf_serial(&tls(&again, ID).expect("the certificate").0);
    assert_ne!(again_serial, rotated_serial, "a NACK does not bring the same secrets again");
    assert_eq!(again.version_info, "3");

    // A new subscription is answered at once. (Should a rotation cross the
    // request, the request is stale; like Envoy, ask again on the newer response.)
    let all = [TD, ID, LONG, "default"];
    let mut last = again;
    let asked = Instant::now();
    loop {
        envoy.send(request(&all, Some(&last))).await;
        last = envoy.expect(15, "the answer to a new subscription").await;
        if names(&last) == all {
            break;
        }
        assert!(asked.elapsed() < Duration::from_secs(30), "the new subscription was never answered");
    }
    let (chain, key) = tls(&last, LONG).unwrap();
    check_certificate(LONG, &chain, &key, &validation_bundle(&last, TD).0);
    let revoked = leaf_serial(&chain);
    envoy.send(request(&all, Some(&last))).await;

    // Revocation: the long-lived certificate (no rotation replaces it during
    // the test) is revoked; its replacement is pushed on the same stream, and
    // once it has been, the revoked one is never sent again.
    let out = up.cli(&["revoke", "--serial", &revoked, "--reason", "sds test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let revoked_at = Instant::now();
    loop {
        last = envoy.expect(20, "the replacement of the revoked certificate").await;
        envoy.send(request(&all, Some(&last))).await;
        let current = leaf_serial(&tls(&last, LONG).expect("the long-lived certificate").0);
        if current != revoked {
            break;
        }
    }
    let replaced_after = revoked_at.elapsed();
    // More pushes come (rotations of the short-lived one); none brings the revoked one back.
    for _ in 0..2 {
        last = envoy.expect(20, "a later rotation").await;
        assert_ne!(leaf_serial(&tls(&last, LONG).unwrap().0), revoked, "the revoked certificate was sent again");
        envoy.send(request(&all, Some(&last))).await;
    }

    // The owner's entries are revoked: nothing is left for this process, and the stream says so.
    let out = up.cli(&["revoke", "--owner", "team-test", "--reason", "sds test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let end = loop {
        match envoy.next(10).await.expect("the stream ends once the entries are revoked") {
            Ok(r) => last = r,
            Err(s) => break s,
        }
    };
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    let refused = Envoy::open(ch, request(&[ID], Some(&last))).await.err().expect("refused after revocation");
    assert_eq!(refused.code(), Code::PermissionDenied);
    eprintln!("SDS: the revoked certificate's replacement was pushed {replaced_after:?} after `hallmark revoke`");
}
