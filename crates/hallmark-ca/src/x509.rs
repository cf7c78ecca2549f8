//! The X.509 signing authority: a self-signed root, or an intermediate signed by
//! an upstream CA so that the root can stay offline.

use hallmark_core::{SpiffeId, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertificateSigningRequestParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, RevokedCertParams, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{CaError, svid};

/// How far back certificates are dated, to absorb clock skew between hosts.
pub const BACKDATE_SECS: i64 = 10;

/// An X.509-SVID as signed: the chain to hand the workload, and what the inventory records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedSvid {
    /// DER certificates, leaf first, then any intermediates up to (not including) the trust anchor.
    pub chain: Vec<Vec<u8>>,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds; never later than the authority's own `not_after`.
    pub not_after: i64,
}

/// The stable id of an X.509 authority: the SHA-256 (lowercase hex) of its own
/// certificate. Agents, the inventory and CRLs name authorities by it.
pub fn authority_id(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// A revoked certificate to list in a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedSerial {
    /// Serial number, hex, as [`SignedSvid::serial`].
    pub serial: String,
    /// Unix seconds.
    pub revoked_at: i64,
}

/// Which kind of certificate to issue. The extended key usages tell them
/// apart, so that none can stand in for another: an agent's SVID cannot serve
/// as a server's, a server's cannot authenticate an agent, and a workload's
/// (which has both usages) is neither (the agent verifies the server's usages,
/// the server checks an agent's serial against its node record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvidProfile {
    /// A workload's X509-SVID: serverAuth and clientAuth, as the X509-SVID
    /// standard recommends.
    Workload,
    /// An agent's own SVID: clientAuth only.
    Agent,
    /// A server's own certificate: serverAuth only.
    Server,
    /// A person's certificate (`hallmark login`), signed only by the human
    /// issuing authority: clientAuth only, subject `OU=people` (and
    /// `OU=break-glass` for an emergency one) with the person's name as CN.
    Person {
        /// An emergency (break-glass) certificate.
        break_glass: bool,
    },
}

/// What an authority signs for: workloads (and Hallmark's own servers and
/// agents) or people. The two are separate authorities with their own keys,
/// told apart by their subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaPurpose {
    /// The trust domain's workload CA.
    Workloads,
    /// The human issuing authority.
    People,
}

/// What to issue: the identity and lifetime are decided by the caller, never by the CSR.
#[derive(Debug, Clone)]
pub struct SvidTemplate<'a> {
    /// The CSR (DER) whose public key is certified. Its signature is verified.
    pub csr_der: &'a [u8],
    /// The SPIFFE ID to certify. A URI SAN in the CSR must equal it.
    pub spiffe_id: &'a SpiffeId,
    /// DNS SANs to include.
    pub dns_names: &'a [String],
    /// Requested lifetime; cut short at the authority's expiry.
    pub ttl_secs: u64,
    /// Unix seconds.
    pub now: i64,
    /// Which kind of certificate.
    pub profile: SvidProfile,
    /// The AI-agent task it is issued for: named in the subject as
    /// `OU=task:<id>` (the URI SAN stays the entry's SPIFFE ID).
    pub task_id: Option<&'a str>,
    /// For [`SvidProfile::Person`]: the person's name, as the subject's CN.
    pub person_name: Option<&'a str>,
}

/// A loaded X.509 CA able to sign SVIDs.
pub struct X509Authority {
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
    cert_der: Vec<u8>,
    /// Certificates after the leaf in every chain we hand out.
    chain_tail: Vec<Vec<u8>>,
    /// Trust anchors to publish in the bundle.
    anchors: Vec<Vec<u8>>,
    not_after: i64,
}

impl std::fmt::Debug for X509Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Authority").field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

/// A serial number: time-ordered with 64 random bits (see
/// [`hallmark_core::time_ordered_id`]), unique and unpredictable.
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut r = [0u8; 8];
    aws_lc_rs::rand::fill(&mut r).map_err(CaError::crypto("draw a random serial"))?;
    let mut b = hallmark_core::time_ordered_id(r);
    // Positive and without a leading zero byte, so the DER INTEGER is exactly
    // 16 bytes. The top byte of a current microsecond timestamp is 0, so this
    // fixes it to 0x01 for every serial and keeps their order.
    b[0] = (b[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&b))
}

fn datetime(unix: i64) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|source| CaError::TimeOutOfRange { unix, source })
}

fn ca_params(
    td: &TrustDomain,
    purpose: CaPurpose,
    not_before: i64,
    not_after: i64,
) -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Hallmark");
    dn.push(
        DnType::CommonName,
        match purpose {
            CaPurpose::Workloads => format!("Hallmark CA {td}"),
            CaPurpose::People => format!("Hallmark human CA {td}"),
        },
    );
    p.distinguished_name = dn;
    let uri = td.id().as_str().try_into().map_err(|source| CaError::NotIa5 {
        what: "trust domain",
        value: td.to_string(),
        source,
    })?;
    p.subject_alt_names = vec![SanType::URI(uri)];
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = datetime(not_before)?;
    p.not_after = datetime(not_after)?;
    p.serial_number = Some(random_serial()?);
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, CaError> {
    X509Certificate::from_der(der).map(|(_, c)| c).map_err(CaError::certificate("CA certificate"))
}

impl X509Authority {
    /// Generates a new self-signed root for `td`, valid `ttl_secs` from `now`.
    pub fn generate_self_signed(td: &TrustDomain, ttl_secs: u64, now: i64) -> Result<Self, CaError> {
        Self::generate_self_signed_for(td, CaPurpose::Workloads, ttl_secs, now)
    }

    /// As [`X509Authority::generate_self_signed`], for `purpose`.
    pub fn generate_self_signed_for(
        td: &TrustDomain,
        purpose: CaPurpose,
        ttl_secs: u64,
        now: i64,
    ) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::x509("generate the CA key"))?;
        let ttl = i64::try_from(ttl_secs).map_err(|source| CaError::TtlOutOfRange { what: "CA TTL", source })?;
        let cert = ca_params(td, purpose, now - BACKDATE_SECS, now + ttl)?
            .self_signed(&key)
            .map_err(CaError::x509("self-sign the CA certificate"))?;
        Self::from_parts(&key.serialize_pem(), vec![cert.der().to_vec()])
    }

    /// Generates a new intermediate for `td`, signed by the upstream CA whose
    /// certificate chain (issuing certificate first, root last) and key are given
    /// as PEM. Its lifetime is cut short at the upstream certificate's expiry.
    pub fn generate_intermediate(
        td: &TrustDomain,
        ttl_secs: u64,
        now: i64,
        upstream_chain_pem: &str,
        upstream_key_pem: &str,
    ) -> Result<Self, CaError> {
        Self::generate_intermediate_for(td, CaPurpose::Workloads, ttl_secs, now, upstream_chain_pem, upstream_key_pem)
    }

    /// As [`X509Authority::generate_intermediate`], for `purpose`.
    pub fn generate_intermediate_for(
        td: &TrustDomain,
        purpose: CaPurpose,
        ttl_secs: u64,
        now: i64,
        upstream_chain_pem: &str,
        upstream_key_pem: &str,
    ) -> Result<Self, CaError> {
        let upstream = svid::pem_certs(upstream_chain_pem)?;
        let upstream_key = KeyPair::from_pem(upstream_key_pem).map_err(CaError::x509("load the upstream key"))?;
        let issuing = upstream.first().ok_or(CaError::EmptyChain { what: "upstream" })?;
        let upstream_not_after = parse(issuing)?.validity().not_after.timestamp();
        let upstream_issuer = Issuer::from_ca_cert_der(&issuing.as_slice().into(), upstream_key)
            .map_err(CaError::x509("take the upstream certificate as issuer"))?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::x509("generate the CA key"))?;
        let ttl = i64::try_from(ttl_secs).map_err(|source| CaError::TtlOutOfRange { what: "CA TTL", source })?;
        let not_after = (now + ttl).min(upstream_not_after);
        if not_after <= now {
            return Err(CaError::AuthorityExpired(upstream_not_after));
        }
        let cert = ca_params(td, purpose, now - BACKDATE_SECS, not_after)?
            .signed_by(&key, &upstream_issuer)
            .map_err(CaError::x509("sign the intermediate CA certificate"))?;
        let mut chain = vec![cert.der().to_vec()];
        chain.extend(upstream);
        Self::from_parts(&key.serialize_pem(), chain)
    }

    /// Loads an authority from its key (PEM) and chain: its own certificate first,
    /// then the upstream chain if it is an intermediate.
    pub fn from_parts(key_pem: &str, chain: Vec<Vec<u8>>) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(CaError::x509("load the CA key"))?;
        let cert_der = chain.first().cloned().ok_or(CaError::EmptyChain { what: "CA" })?;
        let cert = parse(&cert_der)?;
        if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(CaError::KeyMismatch);
        }
        let not_after = cert.validity().not_after.timestamp();
        let (chain_tail, anchors) = if chain.len() == 1 {
            (Vec::new(), chain.clone())
        } else {
            let (last, rest) = chain.split_last().ok_or(CaError::EmptyChain { what: "CA" })?;
            (rest.to_vec(), vec![last.clone()])
        };
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key)
            .map_err(CaError::x509("take the CA certificate as issuer"))?;
        Ok(Self { issuer, key_pem: key_pem.to_owned(), cert_der, chain_tail, anchors, not_after })
    }

    /// The private key as PEM, for the 0600 key file. Never log it.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The authority's own certificate then its upstream chain, as PEM.
    pub fn chain_pem(&self) -> String {
        let mut all = vec![self.cert_der.clone()];
        if !self.chain_tail.is_empty() {
            all.extend(self.chain_tail.iter().skip(1).cloned());
            all.extend(self.anchors.iter().cloned());
        }
        svid::to_pem(&all)
    }

    /// The authority's own certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The trust anchors relying parties need (DER): this root, or the upstream root.
    pub fn anchors(&self) -> &[Vec<u8>] {
        &self.anchors
    }

    /// Unix seconds after which nothing this authority signed is valid.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// Unix seconds from which the authority's certificate is valid.
    pub fn not_before(&self) -> Result<i64, CaError> {
        Ok(parse(&self.cert_der)?.validity().not_before.timestamp())
    }

    /// This authority's id: see [`authority_id`].
    pub fn id(&self) -> String {
        authority_id(&self.cert_der)
    }

    /// Signs a CRL (DER) listing `revoked`, numbered `number`, valid from
    /// `now` until `next_update`. A serial that is not hex is an error, never
    /// silently dropped.
    pub fn sign_crl(
        &self,
        revoked: &[RevokedSerial],
        number: u64,
        now: i64,
        next_update: i64,
    ) -> Result<Vec<u8>, CaError> {
        let revoked_certs = revoked
            .iter()
            .map(|r| {
                let bytes = hex::decode(&r.serial)
                    .map_err(|source| CaError::SerialNotHex { serial: r.serial.clone(), source })?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: datetime(r.revoked_at)?,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, CaError>>()?;
        let params = CertificateRevocationListParams {
            this_update: datetime(now - BACKDATE_SECS)?,
            next_update: datetime(next_update)?,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer).map_err(CaError::x509("sign the CRL"))?.der().to_vec())
    }

    /// Verifies the CSR, checks it asks for no other identity, and signs an X509-SVID.
    pub fn sign_svid(&self, t: &SvidTemplate<'_>) -> Result<SignedSvid, CaError> {
        let csr = CertificateSigningRequestParams::from_der(&t.csr_der.into()).map_err(CaError::Csr)?;
        let mut uris = csr.params.subject_alt_names.iter().filter_map(|s| match s {
            SanType::URI(u) => Some(u.as_str()),
            _ => None,
        });
        match (uris.next(), uris.next()) {
            (None, _) => {}
            (Some(u), None) if u == t.spiffe_id.as_str() => {}
            (Some(u), None) => {
                return Err(CaError::CsrIdentity { requested: u.to_owned(), entry: t.spiffe_id.to_string() });
            }
            (Some(_), Some(_)) => {
                return Err(CaError::CsrUriSans);
            }
        }
        let ttl = i64::try_from(t.ttl_secs).map_err(|source| CaError::TtlOutOfRange { what: "TTL", source })?;
        if self.not_after <= t.now + 1 {
            return Err(CaError::AuthorityExpired(self.not_after));
        }
        let not_before = t.now - BACKDATE_SECS;
        let not_after = (t.now + ttl).min(self.not_after);
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Hallmark");
        if let Some(task) = t.task_id {
            dn.push(DnType::OrganizationalUnitName, format!("task:{task}"));
        }
        if let SvidProfile::Person { break_glass } = t.profile {
            dn.push(DnType::OrganizationalUnitName, if break_glass { "break-glass" } else { "people" });
            if let Some(name) = t.person_name {
                dn.push(DnType::CommonName, name);
            }
        }
        p.distinguished_name = dn;
        let uri = t.spiffe_id.as_str().try_into().map_err(|source| CaError::NotIa5 {
            what: "SPIFFE ID",
            value: t.spiffe_id.to_string(),
            source,
        })?;
        p.subject_alt_names = vec![SanType::URI(uri)];
        for d in t.dns_names {
            let name = d.as_str().try_into().map_err(|source| CaError::NotIa5 {
                what: "DNS name",
                value: d.clone(),
                source,
            })?;
            p.subject_alt_names.push(SanType::DnsName(name));
        }
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment, KeyUsagePurpose::KeyAgreement];
        p.extended_key_usages = match t.profile {
            SvidProfile::Workload => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            SvidProfile::Agent | SvidProfile::Person { .. } => vec![ExtendedKeyUsagePurpose::ClientAuth],
            SvidProfile::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        };
        p.not_before = datetime(not_before)?;
        p.not_after = datetime(not_after)?;
        let serial = random_serial()?;
        let serial_hex = hex::encode(serial.to_bytes());
        p.serial_number = Some(serial);
        p.use_authority_key_identifier_extension = true;
        let leaf = p.signed_by(&csr.public_key, &self.issuer).map_err(CaError::x509("sign the SVID"))?;
        let mut chain = Vec::with_capacity(1 + self.chain_tail.len());
        chain.push(leaf.der().to_vec());
        chain.extend(self.chain_tail.iter().cloned());
        Ok(SignedSvid { chain, serial: serial_hex, not_before, not_after })
    }
}

/// Signing as the tests of this crate do it.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{SignedSvid, SvidProfile, SvidTemplate, X509Authority};
    use hallmark_core::SpiffeId;

    /// A workload X.509-SVID for `id` from `ca`, for a fresh key.
    pub(crate) fn sign_workload(ca: &X509Authority, id: &SpiffeId, ttl_secs: u64, now: i64) -> SignedSvid {
        let kc = crate::keys::new_key_and_csr(Some(id)).unwrap();
        let template = SvidTemplate {
            csr_der: &kc.csr_der,
            spiffe_id: id,
            dns_names: &[],
            ttl_secs,
            now,
            profile: SvidProfile::Workload,
            task_id: None,
            person_name: None,
        };
        ca.sign_svid(&template).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::sign_workload;
    use super::*;
    use crate::keys::new_key_and_csr;

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").unwrap()
    }

    #[test]
    fn signs_a_conforming_leaf() {
        let now = hallmark_core::now_unix();
        let ca = X509Authority::generate_self_signed(&td(), 86_400, now).unwrap();
        let id = SpiffeId::new("spiffe://example.org/web").unwrap();
        let kc = new_key_and_csr(Some(&id)).unwrap();
        let dns = vec!["web.internal".to_owned()];
        let s = ca
            .sign_svid(&SvidTemplate {
                csr_der: &kc.csr_der,
                spiffe_id: &id,
                dns_names: &dns,
                ttl_secs: 3600,
                now,
                profile: SvidProfile::Workload,
                task_id: None,
                person_name: None,
            })
            .unwrap();
        assert_eq!(s.chain.len(), 1);
        let info = svid::parse_leaf(&s.chain[0]).unwrap();
        assert_eq!(info.spiffe_id, id);
        assert_eq!(info.serial, s.serial);
        assert_eq!(info.not_after, now + 3600);
        assert_eq!(info.not_before, now - BACKDATE_SECS);
        assert_eq!(ca.anchors().len(), 1);
    }

    #[test]
    fn crl_lists_revoked_serials_and_verifies_under_the_ca() {
        let now = hallmark_core::now_unix();
        let ca = X509Authority::generate_self_signed(&td(), 86_400, now).unwrap();
        let id = SpiffeId::new("spiffe://example.org/web").unwrap();
        let s = sign_workload(&ca, &id, 60, now);
        let der =
            ca.sign_crl(&[RevokedSerial { serial: s.serial.clone(), revoked_at: now }], 7, now, now + 3600).unwrap();
        let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
        let listed: Vec<String> = crl.iter_revoked_certificates().map(|r| hex::encode(r.raw_serial())).collect();
        assert_eq!(listed, vec![s.serial]);
        let (_, cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
        let key = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            cert.public_key().subject_public_key.data.as_ref(),
        );
        key.verify(crl.tbs_cert_list.as_ref(), crl.signature_value.data.as_ref()).unwrap();
        assert_eq!(ca.id().len(), 64);
        assert!(ca.sign_crl(&[RevokedSerial { serial: "zz".into(), revoked_at: now }], 1, now, now + 60).is_err());
    }

    #[test]
    fn svid_never_outlives_authority() {
        let now = hallmark_core::now_unix();
        let ca = X509Authority::generate_self_signed(&td(), 600, now).unwrap();
        let id = SpiffeId::new("spiffe://example.org/web").unwrap();
        let s = sign_workload(&ca, &id, 7200, now);
        assert_eq!(s.not_after, ca.not_after());
    }

    #[test]
    fn refuses_csr_for_another_identity_and_bad_signature() {
        let now = hallmark_core::now_unix();
        let ca = X509Authority::generate_self_signed(&td(), 86_400, now).unwrap();
        let id = SpiffeId::new("spiffe://example.org/web").unwrap();
        let other = SpiffeId::new("spiffe://example.org/db").unwrap();
        let sign = |csr_der: &[u8]| {
            ca.sign_svid(&SvidTemplate {
                csr_der,
                spiffe_id: &id,
                dns_names: &[],
                ttl_secs: 60,
                now,
                profile: SvidProfile::Workload,
                task_id: None,
                person_name: None,
            })
        };
        let kc = new_key_and_csr(Some(&other)).unwrap();
        assert!(matches!(sign(&kc.csr_der), Err(CaError::CsrIdentity { .. })));
        let mut bad = new_key_and_csr(Some(&id)).unwrap().csr_der;
        let n = bad.len();
        bad[n - 5] ^= 0x55;
        assert!(matches!(sign(&bad), Err(CaError::Csr(_))));
        assert!(matches!(sign(b"garbage"), Err(CaError::Csr(_))));
    }

    #[test]
    fn intermediate_under_upstream_root() {
        let now = hallmark_core::now_unix();
        let root = X509Authority::generate_self_signed(&td(), 10 * 86_400, now).unwrap();
        let inter = X509Authority::generate_intermediate(
            &td(),
            86_400,
            now,
            &svid::to_pem(&[root.cert_der().to_vec()]),
            root.key_pem(),
        )
        .unwrap();
        assert_eq!(inter.anchors(), &[root.cert_der().to_vec()]);
        let id = SpiffeId::new("spiffe://example.org/web").unwrap();
        let s = sign_workload(&inter, &id, 60, now);
        assert_eq!(s.chain.len(), 2);
        assert_eq!(s.chain[1], inter.cert_der());
        // Reload from what would be persisted.
        let again = X509Authority::from_parts(inter.key_pem(), svid::pem_certs(&inter.chain_pem()).unwrap()).unwrap();
        assert_eq!(again.anchors(), inter.anchors());
        assert_eq!(again.not_after(), inter.not_after());
    }
}
