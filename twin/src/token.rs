//! Access tokens: ES256 JWTs signed with a P-256 key generated when the twin starts
//! (ring), published as a JWKS. The twin mints them at its token endpoints and for
//! federated credentials (admin API), and verifies them on every ARM, Key Vault and
//! Databricks request.
//!
//! Verification is split in two: the signature and the JSON shape are checked once
//! per distinct token and cached ([`TokenCache`]), because ECDSA verification would
//! otherwise dominate a keep-alive request; audience, issuer and time are checked on
//! every request against the twin clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// The Azure Databricks first-party application id, the audience of Databricks tokens.
pub(crate) const DATABRICKS_APP_ID: &str = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d";
/// The audience of federated (workload identity) assertions.
pub(crate) const FEDERATED_AUDIENCE: &str = "api://AzureADTokenExchange";
pub(crate) const ARM_AUDIENCE: &str = "https://management.azure.com";
pub(crate) const VAULT_AUDIENCE: &str = "https://vault.azure.net";
pub(crate) const STORAGE_AUDIENCE: &str = "https://storage.azure.com";
/// The Log Analytics query API ("Access the Azure Monitor Log Analytics API").
pub(crate) const LOG_ANALYTICS_AUDIENCE: &str = "https://api.loganalytics.io";

/// The ARM and Key Vault resources of the national clouds (Azure US Government,
/// Azure operated by 21Vianet), accepted as aliases of the public ones so a client
/// configured for those clouds can be pointed at the twin. The twin is one cloud; it
/// mints its own audience names whatever was asked.
const NATIONAL_ARM: [&str; 4] = [
    "https://management.usgovcloudapi.net",
    "https://management.core.usgovcloudapi.net",
    "https://management.chinacloudapi.cn",
    "https://management.core.chinacloudapi.cn",
];
const NATIONAL_VAULT: [&str; 2] = ["https://vault.usgovcloudapi.net", "https://vault.azure.cn"];

/// The resource a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audience {
    Arm,
    KeyVault,
    Databricks,
    Storage,
    LogAnalytics,
}

impl Audience {
    /// The `aud` claim the twin writes.
    pub fn claim(self) -> &'static str {
        match self {
            Audience::Arm => ARM_AUDIENCE,
            Audience::KeyVault => VAULT_AUDIENCE,
            Audience::Databricks => DATABRICKS_APP_ID,
            Audience::Storage => STORAGE_AUDIENCE,
            Audience::LogAnalytics => LOG_ANALYTICS_AUDIENCE,
        }
    }

    /// Whether an `aud` claim is one this resource accepts (trailing slash optional;
    /// ARM also takes the classic `management.core.windows.net` audience).
    pub fn accepts(self, aud: &str) -> bool {
        let aud = aud.trim_end_matches('/');
        match self {
            Audience::Arm => {
                aud.eq_ignore_ascii_case(ARM_AUDIENCE)
                    || aud.eq_ignore_ascii_case("https://management.core.windows.net")
                    || NATIONAL_ARM.iter().any(|n| aud.eq_ignore_ascii_case(n))
            }
            Audience::KeyVault => {
                aud.eq_ignore_ascii_case(VAULT_AUDIENCE)
                    || NATIONAL_VAULT.iter().any(|n| aud.eq_ignore_ascii_case(n))
            }
            other => aud.eq_ignore_ascii_case(other.claim()),
        }
    }

    /// Maps a resource identifier (a v1 `resource`, or a scope without `/.default`)
    /// to an audience. `base_url` is the twin's own URL, which is also its ARM URL.
    pub fn for_resource(resource: &str, base_url: &str) -> Option<Audience> {
        let r = resource.trim_end_matches('/');
        let is = |s: &str| r.eq_ignore_ascii_case(s.trim_end_matches('/'));
        if is(ARM_AUDIENCE)
            || is("https://management.core.windows.net")
            || is(base_url)
            || NATIONAL_ARM.iter().any(|n| is(n))
        {
            Some(Audience::Arm)
        } else if is(VAULT_AUDIENCE) || NATIONAL_VAULT.iter().any(|n| is(n)) {
            Some(Audience::KeyVault)
        } else if is(DATABRICKS_APP_ID) {
            Some(Audience::Databricks)
        } else if is(STORAGE_AUDIENCE) {
            Some(Audience::Storage)
        } else if is(LOG_ANALYTICS_AUDIENCE) || is("https://api.loganalytics.azure.com") {
            // Both hosts serve the API; tokens carry the classic audience.
            Some(Audience::LogAnalytics)
        } else {
            None
        }
    }

    /// Maps a v2 scope (`<resource>/.default`) to an audience.
    pub fn for_scope(scope: &str, base_url: &str) -> Option<Audience> {
        let resource = scope.strip_suffix(".default")?;
        if !resource.ends_with('/') {
            return None;
        }
        Audience::for_resource(resource, base_url)
    }
}

/// The claims the twin reads back from a token.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Claims {
    pub aud: String,
    pub iss: String,
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub tid: Option<String>,
    #[serde(default)]
    pub oid: Option<String>,
    pub exp: i64,
    #[serde(default)]
    pub nbf: Option<i64>,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenProblem {
    Malformed,
    BadSignature,
    Expired { exp: i64 },
    NotYetValid,
    WrongAudience { found: String },
    WrongIssuer { found: String },
    UnknownPrincipal,
}

/// The signing key and its public half.
pub(crate) struct Signer {
    key: EcdsaKeyPair,
    public: Vec<u8>,
    kid: String,
    rng: SystemRandom,
}

impl Signer {
    pub fn generate() -> Result<Self, String> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "cannot generate the token signing key".to_string())?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| "cannot load the token signing key".to_string())?;
        let public = key.public_key().as_ref().to_vec();
        let digest = ring::digest::digest(&ring::digest::SHA256, &public);
        let kid = B64URL.encode(&digest.as_ref()[..12]);
        Ok(Self {
            key,
            public,
            kid,
            rng,
        })
    }

    /// Signs `claims` as a compact JWS.
    pub fn sign(&self, claims: &Value) -> Result<String, String> {
        let header = json!({"typ": "JWT", "alg": "ES256", "kid": self.kid});
        let mut out = B64URL.encode(header.to_string());
        out.push('.');
        out.push_str(&B64URL.encode(claims.to_string()));
        let sig = self
            .key
            .sign(&self.rng, out.as_bytes())
            .map_err(|_| "cannot sign a token".to_string())?;
        out.push('.');
        out.push_str(&B64URL.encode(sig.as_ref()));
        Ok(out)
    }

    /// Checks the signature and decodes the claims (no time or audience checks).
    pub fn decode(&self, token: &str) -> Result<Claims, TokenProblem> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenProblem::Malformed);
        };
        let header: Value = B64URL
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenProblem::Malformed)?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256")
            || header.get("kid").and_then(Value::as_str) != Some(self.kid.as_str())
        {
            return Err(TokenProblem::BadSignature);
        }
        let sig = B64URL.decode(s).map_err(|_| TokenProblem::Malformed)?;
        let signed_len = h.len() + 1 + p.len();
        let signed = token.get(..signed_len).ok_or(TokenProblem::Malformed)?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.public)
            .verify(signed.as_bytes(), &sig)
            .map_err(|_| TokenProblem::BadSignature)?;
        let payload = B64URL.decode(p).map_err(|_| TokenProblem::Malformed)?;
        serde_json::from_slice(&payload).map_err(|_| TokenProblem::Malformed)
    }

    /// The JSON Web Key Set with the public key.
    pub fn jwks(&self) -> Value {
        // An uncompressed P-256 point is 0x04 || x (32 bytes) || y (32 bytes).
        let (x, y) = match self.public.get(1..65) {
            Some(xy) => (B64URL.encode(&xy[..32]), B64URL.encode(&xy[32..])),
            None => (String::new(), String::new()),
        };
        json!({"keys": [{
            "kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256",
            "kid": self.kid, "x": x, "y": y,
        }]})
    }
}

/// Verified-signature cache: token text → claims. Bounded; cleared when full.
#[derive(Default)]
pub(crate) struct TokenCache {
    map: Mutex<HashMap<Arc<str>, Arc<Claims>>>,
}

const CACHE_LIMIT: usize = 4096;

impl TokenCache {
    pub fn decode(&self, signer: &Signer, token: &str) -> Result<Arc<Claims>, TokenProblem> {
        if let Ok(map) = self.map.lock()
            && let Some(c) = map.get(token)
        {
            return Ok(c.clone());
        }
        let claims = Arc::new(signer.decode(token)?);
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= CACHE_LIMIT {
                map.clear();
            }
            map.insert(Arc::from(token), claims.clone());
        }
        Ok(claims)
    }
}

/// Checks the time, issuer and audience of decoded claims.
pub(crate) fn check_claims(
    claims: &Claims,
    want: Audience,
    tenant: &str,
    now: i64,
) -> Result<(), TokenProblem> {
    if !want.accepts(&claims.aud) {
        return Err(TokenProblem::WrongAudience {
            found: claims.aud.clone(),
        });
    }
    let issuer = format!("https://sts.windows.net/{tenant}/");
    if claims.iss != issuer || claims.tid.as_deref() != Some(tenant) {
        return Err(TokenProblem::WrongIssuer {
            found: claims.iss.clone(),
        });
    }
    if claims.exp <= now {
        return Err(TokenProblem::Expired { exp: claims.exp });
    }
    if claims.nbf.is_some_and(|nbf| nbf > now) {
        return Err(TokenProblem::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(aud: &str, exp: i64) -> Value {
        json!({"aud": aud, "iss": "https://sts.windows.net/t/", "tid": "t", "oid": "o", "exp": exp, "nbf": 0})
    }

    #[test]
    fn signed_tokens_verify_and_tampering_is_caught() {
        let s = Signer::generate().expect("key");
        let t = s.sign(&claims(ARM_AUDIENCE, 100)).expect("sign");
        let c = s.decode(&t).expect("valid");
        assert_eq!(c.aud, ARM_AUDIENCE);
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = B64URL.encode(claims(VAULT_AUDIENCE, 100).to_string());
        parts[1] = &forged;
        assert_eq!(
            s.decode(&parts.join(".")).err(),
            Some(TokenProblem::BadSignature)
        );
        let other = Signer::generate().expect("key");
        assert!(
            other.decode(&t).is_err(),
            "another twin's key must not verify"
        );
        assert_eq!(s.decode("abc").err(), Some(TokenProblem::Malformed));
    }

    #[test]
    fn claims_are_checked_for_audience_issuer_and_time() {
        let s = Signer::generate().expect("key");
        let c = s
            .decode(&s.sign(&claims(ARM_AUDIENCE, 100)).expect("sign"))
            .expect("valid");
        assert_eq!(check_claims(&c, Audience::Arm, "t", 50), Ok(()));
        assert_eq!(
            check_claims(&c, Audience::Arm, "t", 100),
            Err(TokenProblem::Expired { exp: 100 })
        );
        assert!(matches!(
            check_claims(&c, Audience::KeyVault, "t", 50),
            Err(TokenProblem::WrongAudience { .. })
        ));
        assert!(matches!(
            check_claims(&c, Audience::Arm, "u", 50),
            Err(TokenProblem::WrongIssuer { .. })
        ));
    }

    #[test]
    fn scopes_real_clients_send_map_to_audiences() {
        let base = "https://127.0.0.1:8443";
        for s in [
            "https://management.azure.com/.default",
            "https://management.core.windows.net//.default",
            "https://127.0.0.1:8443/.default",
            "https://127.0.0.1:8443//.default",
        ] {
            assert_eq!(Audience::for_scope(s, base), Some(Audience::Arm), "{s}");
        }
        assert_eq!(
            Audience::for_scope("https://vault.azure.net/.default", base),
            Some(Audience::KeyVault)
        );
        assert_eq!(
            Audience::for_scope("2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/.default", base),
            Some(Audience::Databricks)
        );
        assert_eq!(
            Audience::for_scope("https://storage.azure.com/.default", base),
            Some(Audience::Storage)
        );
        assert_eq!(
            Audience::for_scope("https://management.azure.com/", base),
            None
        );
        assert_eq!(
            Audience::for_scope("https://example.com/.default", base),
            None
        );
        assert_eq!(
            Audience::for_resource("https://management.azure.com/", base),
            Some(Audience::Arm)
        );
    }
}
