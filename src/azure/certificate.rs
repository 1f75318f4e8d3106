//! Client-certificate authentication without OpenSSL: keyflip signs the client
//! assertion itself and hands it to `azure_identity`'s `ClientAssertionCredential`
//! (`azure_identity`'s own `ClientCertificateCredential` needs OpenSSL, which keyflip's
//! ring-only rule forbids).
//!
//! The assertion is the JWT Microsoft documents in "Microsoft identity platform
//! application authentication certificate credentials"
//! (learn.microsoft.com/entra/identity-platform/certificate-credentials): header
//! `alg: PS256`, `typ: JWT`, `x5t#S256` (base64url SHA-256 thumbprint of the
//! certificate's DER) and, for older verifiers, `x5t` (SHA-1); claims `aud` (the token
//! endpoint), `iss` = `sub` = the client id, a fresh `jti`, `nbf`/`iat` now and `exp`
//! ten minutes later. Signed with ring's RSA-PSS SHA-256.
//!
//! Promises: the PEM must hold an unencrypted RSA private key and a certificate whose
//! public key is that key's (checked by signing and verifying at load, so a mismatched
//! pair is refused here, not by Entra ID later); the key and the file's bytes are never
//! logged or shown (`Debug` names only the thumbprint).

use std::sync::Arc;

use azure_core::http::ClientMethodOptions;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PSS_SHA256, RsaKeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

/// How long one assertion is valid. Microsoft: "5-10 minutes after nbf at most".
const LIFETIME_SECS: i64 = 600;

/// Why a certificate file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error(
        "{origin} holds no certificate: expected a PEM file with a '-----BEGIN CERTIFICATE-----' block and the private key"
    )]
    NoCertificate { origin: String },
    #[error(
        "{origin} holds an encrypted private key, which keyflip cannot use; decrypt it into a file only keyflip's user can read (`openssl pkcs8 -in key.pem -out plain.pem`) and name that"
    )]
    Encrypted { origin: String },
    #[error(
        "{origin} holds no private key: expected a '-----BEGIN PRIVATE KEY-----' (PKCS#8) or '-----BEGIN RSA PRIVATE KEY-----' block after the certificate"
    )]
    NoKey { origin: String },
    #[error(
        "the private key in {origin} is not an RSA key ring accepts ({detail}); Microsoft Entra ID takes RSA certificates of 2048 bits or more"
    )]
    NotRsa { origin: String, detail: String },
    #[error(
        "no certificate in {origin} matches its private key; put the certificate registered on the app registration and its own key in the file"
    )]
    Mismatch { origin: String },
    #[error("cannot sign a client assertion: {0}")]
    Sign(String),
}

/// A loaded certificate and its key: signs client assertions.
pub struct ClientCertificate {
    key: RsaKeyPair,
    /// Base64url SHA-256 thumbprint of the certificate's DER.
    x5t_s256: String,
    /// Base64url SHA-1 thumbprint (the older `x5t` header).
    x5t: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("x5t#S256", &self.x5t_s256)
            .finish_non_exhaustive()
    }
}

impl ClientCertificate {
    /// Loads a PEM holding one or more certificates and the RSA private key of one
    /// of them. `origin` names the file in errors.
    pub fn from_pem(pem: &[u8], origin: &str) -> Result<ClientCertificate, CertificateError> {
        let origin = origin.to_owned();
        let text = String::from_utf8_lossy(pem);
        if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(CertificateError::Encrypted { origin });
        }
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            return Err(CertificateError::NoCertificate { origin });
        }
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|_| CertificateError::NoKey {
            origin: origin.clone(),
        })?;
        let key = match &key {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => {
                return Err(CertificateError::NotRsa {
                    origin,
                    detail: "an elliptic-curve key".into(),
                });
            }
        }
        .map_err(|e| CertificateError::NotRsa {
            origin: origin.clone(),
            detail: e.to_string(),
        })?;
        let rng = SystemRandom::new();
        // Find the certificate this key belongs to: sign a probe and verify it with
        // each certificate's public key.
        let probe = b"keyflip: does this key belong to this certificate?";
        let mut signature = vec![0; key.public().modulus_len()];
        key.sign(&RSA_PSS_SHA256, &rng, probe, &mut signature)
            .map_err(|_| CertificateError::Sign("RSA-PSS signing failed".into()))?;
        let leaf = certs
            .iter()
            .find(|cert| {
                webpki::EndEntityCert::try_from(*cert).is_ok_and(|ee| {
                    ee.verify_signature(
                        webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
                        probe,
                        &signature,
                    )
                    .is_ok()
                })
            })
            .ok_or(CertificateError::Mismatch { origin })?;
        let sha256 = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, leaf.as_ref());
        Ok(ClientCertificate {
            key,
            x5t_s256: B64URL.encode(sha256.as_ref()),
            x5t: B64URL.encode(sha1.as_ref()),
            rng,
        })
    }

    /// Reads and loads a certificate file. The bytes are zeroized after parsing.
    pub fn from_file(path: &std::path::Path) -> Result<ClientCertificate, super::Error> {
        let shown = path.display().to_string();
        // A PEM with its key and a chain of a few certificates fits in the secret
        // limit's 64 KiB; a FIFO or a device is refused, not waited on.
        let pem = Zeroizing::new(
            crate::input::read_bytes(path, crate::input::MAX_SECRET_BYTES).map_err(|e| {
                super::Error::Invalid(format!("cannot read the client certificate {shown}: {e}"))
            })?,
        );
        ClientCertificate::from_pem(&pem, &shown).map_err(|e| super::Error::Invalid(e.to_string()))
    }

    /// The SHA-256 thumbprint as Azure shows it for a registered certificate
    /// (base64url here; the portal shows the SHA-1 in hex).
    pub fn thumbprint_s256(&self) -> &str {
        &self.x5t_s256
    }

    /// A signed client assertion for `client_id` to present at `token_endpoint`,
    /// valid from `now` (Unix seconds) for ten minutes.
    pub fn assertion(
        &self,
        client_id: &str,
        token_endpoint: &str,
        now: i64,
    ) -> Result<String, CertificateError> {
        let header = serde_json::json!({
            "alg": "PS256",
            "typ": "JWT",
            "x5t#S256": self.x5t_s256,
            "x5t": self.x5t,
        });
        let claims = serde_json::json!({
            "aud": token_endpoint,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + LIFETIME_SECS,
        });
        let mut jwt = B64URL.encode(header.to_string());
        jwt.push('.');
        jwt.push_str(&B64URL.encode(claims.to_string()));
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PSS_SHA256, &self.rng, jwt.as_bytes(), &mut signature)
            .map_err(|_| CertificateError::Sign("RSA-PSS signing failed".into()))?;
        jwt.push('.');
        jwt.push_str(&B64URL.encode(&signature));
        Ok(jwt)
    }
}

/// The `ClientAssertion` `azure_identity` asks for each token request: a fresh
/// assertion signed with the certificate.
#[derive(Debug, Clone)]
pub struct CertificateAssertion {
    pub certificate: Arc<ClientCertificate>,
    pub client_id: String,
    /// `{authority}/{tenant}/oauth2/v2.0/token`, the URL the credential posts to.
    pub token_endpoint: String,
}

#[async_trait::async_trait]
impl azure_identity::ClientAssertion for CertificateAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        self.certificate
            .assertion(
                &self.client_id,
                &self.token_endpoint,
                chrono::Utc::now().timestamp(),
            )
            .map_err(|e| {
                azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    e.to_string(),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/twin/worlds/certs/{name}.pem",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn an_assertion_is_a_ps256_jwt_verifiable_with_the_certificate() {
        let pem = fixture("keyflip-operator");
        let cert = ClientCertificate::from_pem(&pem, "op.pem").unwrap();
        let jwt = cert
            .assertion(
                "client-1",
                "https://login.example/t/oauth2/v2.0/token",
                1_000,
            )
            .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&B64URL.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "PS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["x5t#S256"], cert.thumbprint_s256());
        let claims: serde_json::Value =
            serde_json::from_slice(&B64URL.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://login.example/t/oauth2/v2.0/token");
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert_eq!(claims["exp"], 1_600);
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() == 36));

        // The certificate's public key verifies the signature over header.claims.
        let der = CertificateDer::pem_slice_iter(&pem)
            .next()
            .unwrap()
            .unwrap();
        let ee = webpki::EndEntityCert::try_from(&der).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        let signature = B64URL.decode(parts[2]).unwrap();
        ee.verify_signature(
            webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            signed.as_bytes(),
            &signature,
        )
        .unwrap();
        let thumb = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
        assert_eq!(cert.thumbprint_s256(), B64URL.encode(thumb.as_ref()));
        assert!(!format!("{cert:?}").contains("PRIVATE"));
    }

    #[test]
    fn unusable_files_are_refused_with_what_to_do() {
        let op = String::from_utf8(fixture("keyflip-operator")).unwrap();
        let other = String::from_utf8(fixture("unregistered")).unwrap();
        let cert_of = |pem: &str| {
            let end = "-----END CERTIFICATE-----";
            pem[..pem.find(end).unwrap() + end.len()].to_owned()
        };
        let key_of = |pem: &str| pem[pem.find("-----BEGIN PRIVATE KEY").unwrap()..].to_owned();

        let err = |pem: String| ClientCertificate::from_pem(pem.as_bytes(), "f.pem").unwrap_err();
        assert!(matches!(
            err(key_of(&op)),
            CertificateError::NoCertificate { .. }
        ));
        assert!(matches!(err(cert_of(&op)), CertificateError::NoKey { .. }));
        let mismatched = format!("{}\n{}", cert_of(&op), key_of(&other));
        let e = err(mismatched);
        assert!(matches!(e, CertificateError::Mismatch { .. }), "{e}");
        assert!(e.to_string().contains("f.pem"));
        let encrypted = format!(
            "{}\n-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            cert_of(&op)
        );
        assert!(err(encrypted).to_string().contains("openssl pkcs8"));
        // A chain: the key's certificate is found wherever it stands.
        let chain = format!("{}\n{}\n{}", cert_of(&other), cert_of(&op), key_of(&op));
        let from_chain = ClientCertificate::from_pem(chain.as_bytes(), "c.pem").unwrap();
        let alone = ClientCertificate::from_pem(op.as_bytes(), "o.pem").unwrap();
        assert_eq!(from_chain.thumbprint_s256(), alone.thumbprint_s256());
    }
}
