//! Reading certificates: the SPIFFE ID in a URI SAN, validity, and the
//! X509-SVID leaf rules (SPIFFE X509-SVID standard; shared SPIFFE.md §3).

use hallmark_core::{SpiffeId, SpiffeIdError};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::CaError;
use crate::x509::SvidProfile;

/// A certificate that breaks a SPIFFE rule: its URI SAN, or the X509-SVID
/// leaf rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SvidError {
    /// DER bytes follow the certificate.
    #[error("trailing bytes after certificate")]
    TrailingBytes,
    /// The certificate has no URI SAN.
    #[error("certificate has no URI SAN")]
    NoUriSan,
    /// The certificate has more than one URI SAN.
    #[error("certificate has more than one URI SAN")]
    UriSans,
    /// The URI SAN is not a SPIFFE ID.
    #[error("URI SAN: {0}")]
    SpiffeId(#[source] SpiffeIdError),
    /// A leaf's SPIFFE ID names only a trust domain.
    #[error("leaf SPIFFE ID `{0}` has no path")]
    NoPath(SpiffeId),
    /// A leaf says it is a CA.
    #[error("leaf certificate has cA=true")]
    IsCa,
    /// A leaf's key usage extension is not critical.
    #[error("leaf key usage is not critical")]
    KeyUsageNotCritical,
    /// A leaf's key usage lacks digitalSignature or has a CA's bits.
    #[error("leaf key usage must have digitalSignature and neither keyCertSign nor cRLSign")]
    KeyUsage,
    /// A leaf has no key usage extension.
    #[error("leaf has no key usage extension")]
    NoKeyUsage,
}

/// What Hallmark needs to know about an X.509-SVID leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// The one SPIFFE ID in the URI SAN.
    pub spiffe_id: SpiffeId,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Which kind of certificate its extended key usages make it, if any
    /// Hallmark issues.
    pub profile: Option<SvidProfile>,
}

/// Parses a DER certificate and checks every X509-SVID leaf rule: exactly one
/// URI SAN holding a SPIFFE ID with a path, `cA=false`, key usage present and
/// critical with digitalSignature and without keyCertSign/cRLSign.
pub fn parse_leaf(der: &[u8]) -> Result<LeafInfo, CaError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(CaError::certificate("certificate"))?;
    if !rest.is_empty() {
        return Err(SvidError::TrailingBytes.into());
    }
    let spiffe_id = spiffe_id_of(&cert)?;
    if spiffe_id.path().is_empty() {
        return Err(SvidError::NoPath(spiffe_id).into());
    }
    let mut saw_ku = false;
    let mut eku = None;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::ExtendedKeyUsage(e) => {
                eku = match (e.server_auth, e.client_auth, e.any || !e.other.is_empty()) {
                    (true, true, false) => Some(SvidProfile::Workload),
                    (false, true, false) => Some(SvidProfile::Agent),
                    (true, false, false) => Some(SvidProfile::Server),
                    _ => None,
                };
            }
            ParsedExtension::BasicConstraints(bc) if bc.ca => {
                return Err(SvidError::IsCa.into());
            }
            ParsedExtension::KeyUsage(ku) => {
                if !ext.critical {
                    return Err(SvidError::KeyUsageNotCritical.into());
                }
                if !ku.digital_signature() || ku.key_cert_sign() || ku.crl_sign() {
                    return Err(SvidError::KeyUsage.into());
                }
                saw_ku = true;
            }
            _ => {}
        }
    }
    if !saw_ku {
        return Err(SvidError::NoKeyUsage.into());
    }
    Ok(LeafInfo {
        spiffe_id,
        serial: hex::encode(cert.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        profile: eku,
    })
}

/// The single SPIFFE ID in a certificate's URI SANs; more than one URI SAN is refused.
pub fn spiffe_id_of(cert: &X509Certificate<'_>) -> Result<SpiffeId, CaError> {
    let mut uris = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::URI(u) = name {
                    uris.push(*u);
                }
            }
        }
    }
    match uris.as_slice() {
        [one] => Ok(SpiffeId::new(one).map_err(SvidError::SpiffeId)?),
        [] => Err(SvidError::NoUriSan.into()),
        _ => Err(SvidError::UriSans.into()),
    }
}

/// `not_after` of a DER certificate, unix seconds.
pub fn not_after(der: &[u8]) -> Result<i64, CaError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(CaError::certificate("certificate"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// Splits concatenated DER certificates (the Workload API bundle encoding) and PEM.
pub fn pem_certs(pem_text: &str) -> Result<Vec<Vec<u8>>, CaError> {
    let items = pem::parse_many(pem_text).map_err(|source| CaError::Pem { what: "certificate", source })?;
    let certs: Vec<Vec<u8>> =
        items.into_iter().filter(|p| p.tag() == "CERTIFICATE").map(|p| p.into_contents()).collect();
    if certs.is_empty() {
        return Err(CaError::NoCertificateInPem);
    }
    Ok(certs)
}

/// Encodes DER certificates as PEM.
pub fn to_pem(certs: &[Vec<u8>]) -> String {
    certs.iter().map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.clone()))).collect()
}
