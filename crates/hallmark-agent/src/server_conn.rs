//! The agent's mTLS connection to the server.

use std::sync::Arc;
use std::time::Duration;

use hallmark_ca::tls::{InsecureBootstrapVerifier, ServerIdVerifier, SharedAnchors, provider};
use hallmark_core::SpiffeId;
use hallmark_proto::node::node_client::NodeClient;
use hyper_util::rt::TokioIo;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::error::AgentError;

/// How the agent authenticates itself and the server.
pub enum Trust {
    /// Verify the server by SPIFFE ID against the bundle; present the agent SVID.
    Mtls {
        /// Anchors shared with the bundle owner.
        anchors: SharedAnchors,
        /// The server's expected SPIFFE ID.
        server_id: SpiffeId,
        /// Agent SVID chain, leaf first.
        chain: Vec<Vec<u8>>,
        /// Agent key, PKCS#8.
        key: Vec<u8>,
    },
    /// No client certificate (node attestation), server verified by `anchors`.
    Attest {
        /// Anchors, or `None` for an insecure bootstrap.
        anchors: Option<SharedAnchors>,
        /// The server's expected SPIFFE ID.
        server_id: SpiffeId,
    },
}

/// Opens a gRPC channel to `addr` with the given trust. Connects lazily.
pub fn channel(addr: &str, trust: Trust) -> Result<NodeClient<Channel>, AgentError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| AgentError::Tls(e.to_string()))?
        .dangerous();
    let mut cfg = match trust {
        Trust::Mtls { anchors, server_id, chain, key } => {
            let verifier: Arc<dyn ServerCertVerifier> = Arc::new(ServerIdVerifier::new(anchors, server_id));
            let certs = chain.into_iter().map(CertificateDer::from).collect();
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
            builder
                .with_custom_certificate_verifier(verifier)
                .with_client_auth_cert(certs, key)
                .map_err(|e| AgentError::Tls(e.to_string()))?
        }
        Trust::Attest { anchors, server_id } => {
            let verifier: Arc<dyn ServerCertVerifier> = match anchors {
                Some(a) => Arc::new(ServerIdVerifier::new(a, server_id)),
                None => Arc::new(InsecureBootstrapVerifier::default()),
            };
            builder.with_custom_certificate_verifier(verifier).with_no_client_auth()
        }
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let addr = addr.to_owned();
    // The connector below does TLS itself; tonic must not add its own.
    let endpoint = Endpoint::from_static("http://hallmark-server")
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10));
    let ch = endpoint.connect_with_connector_lazy(tower::service_fn(move |_uri| {
        let addr = addr.clone();
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from("hallmark-server").map_err(std::io::Error::other)?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    }));
    Ok(NodeClient::new(ch).max_decoding_message_size(16 * 1024 * 1024))
}
