//! Client certificates on principals, and the client assertions signed with them
//! (`private_key_jwt` at the token endpoint), as Microsoft Entra ID checks them.
//!
//! A world file registers certificates on a `[[principal]]` (`certificates`, PEM; the
//! public part only, as an app registration's `keyCredentials` hold). A token request
//! with `client_assertion` whose JWT header carries `x5t#S256` (SHA-256 thumbprint,
//! with `alg` `PS256` or `RS256`) or `x5t` (SHA-1, the older form) is accepted when:
//! the thumbprint names a certificate registered on the principal the `client_id`
//! names (else AADSTS700027, "certificate ... is not registered"); the signature
//! verifies with that certificate's key (else AADSTS700027, "failed signature
//! validation"); `iss` and `sub` are the client id (else 700023); `aud` is this token
//! endpoint's URL (else 700024); `exp` is in the future and `nbf` at most five minutes
//! ahead (else 700024). These are the rules
//! learn.microsoft.com/entra/identity-platform/certificate-credentials documents.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde::Deserialize;

use crate::entra::oauth_error;
use crate::state::Principal;
use crate::wire::Resp;

/// A certificate registered on a principal.
#[derive(Debug, Clone)]
pub(crate) struct RegisteredCert {
    der: Vec<u8>,
    sha1: Vec<u8>,
    sha256: Vec<u8>,
}

impl RegisteredCert {
    /// Parses one PEM certificate (the first block of `pem`).
    pub fn from_pem(pem: &str) -> Result<RegisteredCert, String> {
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| format!("not a PEM certificate: {e}"))?;
        webpki::EndEntityCert::try_from(&der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let bytes = der.as_ref().to_vec();
        Ok(RegisteredCert {
            sha1: ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &bytes)
                .as_ref()
                .to_vec(),
            sha256: ring::digest::digest(&ring::digest::SHA256, &bytes)
                .as_ref()
                .to_vec(),
            der: bytes,
        })
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(rename = "x5t#S256")]
    x5t_s256: Option<String>,
    x5t: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    aud: String,
    iss: String,
    sub: String,
    /// NumericDate: RFC 7519 allows fractions, and MSAL Python sends them.
    exp: f64,
    nbf: Option<f64>,
}

/// Whether `assertion` is a certificate assertion at all (its header names a
/// thumbprint); federated assertions are checked elsewhere.
pub(crate) fn is_certificate_assertion(assertion: &str) -> bool {
    header(assertion).is_some_and(|h| h.x5t_s256.is_some() || h.x5t.is_some())
}

fn header(assertion: &str) -> Option<Header> {
    let first = assertion.split('.').next()?;
    serde_json::from_slice(&B64URL.decode(first).ok()?).ok()
}

/// A thumbprint header's bytes. MSAL Python pads its base64url with `=`; RFC 7515
/// does not; both are accepted, as Entra ID does.
fn thumbprint(value: &str) -> Option<Vec<u8>> {
    B64URL.decode(value.trim_end_matches('=')).ok()
}

fn invalid(aadsts: u32, description: &str) -> Resp {
    oauth_error(401, "invalid_client", aadsts, description)
}

/// Checks a certificate assertion for principal `p` presented at `endpoints` (the
/// token endpoint's URLs this request may name as `aud`), at `now` (Unix seconds).
pub(crate) fn check(
    p: &Principal,
    assertion: &str,
    endpoints: &[String],
    now: i64,
) -> Result<(), Resp> {
    let malformed = || invalid(700025, "Client assertion is not a valid JWT.");
    let parts: Vec<&str> = assertion.split('.').collect();
    let [h, c, s] = parts.as_slice() else {
        return Err(malformed());
    };
    let header = header(assertion).ok_or_else(malformed)?;
    let claims: Claims = B64URL
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(malformed)?;
    let signature = B64URL.decode(s).map_err(|_| malformed())?;

    let (thumbprint, cert) = match (&header.x5t_s256, &header.x5t) {
        (Some(t), _) => (
            t,
            thumbprint(t).and_then(|d| p.certificates.iter().find(|c| c.sha256 == d)),
        ),
        (None, Some(t)) => (
            t,
            thumbprint(t).and_then(|d| p.certificates.iter().find(|c| c.sha1 == d)),
        ),
        (None, None) => return Err(malformed()),
    };
    let Some(cert) = cert else {
        return Err(invalid(
            700027,
            &format!(
                "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{}'.]",
                p.client_id
            ),
        ));
    };
    let algorithm = match header.alg.as_str() {
        "PS256" => webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        "RS256" => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        other => {
            return Err(invalid(
                700027,
                &format!(
                    "Client assertion contains an unsupported signature algorithm '{other}'; use PS256 or RS256."
                ),
            ));
        }
    };
    let der = CertificateDer::from(cert.der.as_slice());
    let verified = webpki::EndEntityCert::try_from(&der)
        .map(|ee| {
            ee.verify_signature(algorithm, format!("{h}.{c}").as_bytes(), &signature)
                .is_ok()
        })
        .unwrap_or(false);
    if !verified {
        return Err(invalid(
            700027,
            "Client assertion failed signature validation.",
        ));
    }
    if !claims.iss.eq_ignore_ascii_case(&p.client_id)
        || !claims.sub.eq_ignore_ascii_case(&p.client_id)
    {
        return Err(invalid(
            700023,
            &format!(
                "Client assertion audience or subject is invalid: iss and sub must be the client id '{}'.",
                p.client_id
            ),
        ));
    }
    let aud = claims.aud.trim_end_matches('/');
    if !endpoints.iter().any(|e| e.eq_ignore_ascii_case(aud)) {
        return Err(invalid(
            700024,
            &format!(
                "Client assertion audience claim does not match Realm issuer. Review the documentation at https://aka.ms/certCreds . Audience: '{aud}'."
            ),
        ));
    }
    // Five minutes of clock skew for nbf, as Entra ID allows.
    let now = now as f64;
    if claims.exp <= now || claims.nbf.is_some_and(|n| n > now + 300.0) {
        return Err(oauth_error(
            400,
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range.",
        ));
    }
    Ok(())
}
