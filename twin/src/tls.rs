//! TLS for the twin's one listener: a throw-away certificate authority and a leaf
//! certificate for `127.0.0.1`, `localhost` and the named clouds' login and ARM hosts, both generated at start with rcgen,
//! and a rustls server configuration on the ring provider offering HTTP/2 and
//! HTTP/1.1. Clients trust the CA (`ca.pem`); webpki refuses a CA certificate used
//! directly as a server certificate, hence the separate leaf.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The Entra ID and ARM hosts of Azure's named clouds. The leaf certificate names
/// them too, so a client configured for one of those clouds can be routed to the twin
/// (through a proxy, as keyflip's sovereign-cloud tests do) and check the cloud's real
/// host names over TLS. Harmless elsewhere: the CA is generated at every start and
/// only clients handed `ca.pem` trust it.
const CLOUD_HOSTS: [&str; 6] = [
    "login.microsoftonline.com",
    "management.azure.com",
    "login.microsoftonline.us",
    "management.usgovcloudapi.net",
    "login.chinacloudapi.cn",
    "management.chinacloudapi.cn",
];

/// The generated CA (PEM) and the server configuration.
pub(crate) struct Tls {
    pub ca_pem: String,
    pub config: Arc<ServerConfig>,
}

pub(crate) fn generate() -> Result<Tls, String> {
    let err = |what: &str, e: &dyn std::fmt::Display| format!("cannot {what}: {e}");
    let ca_key = KeyPair::generate().map_err(|e| err("generate the CA key", &e))?;
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| err("build the CA", &e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "keyflip-twin test CA");
    dn.push(DnType::OrganizationName, "keyflip-twin");
    ca_params.distinguished_name = dn;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| err("sign the CA", &e))?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().map_err(|e| err("generate the server key", &e))?;
    let mut names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    names.extend(CLOUD_HOSTS.iter().map(|h| (*h).to_string()));
    let mut leaf_params =
        CertificateParams::new(names).map_err(|e| err("build the server certificate", &e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "127.0.0.1");
    leaf_params.distinguished_name = dn;
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf_params
        .signed_by(&leaf_key, &issuer)
        .map_err(|e| err("sign the server certificate", &e))?;

    let chain = vec![
        leaf_cert.der().clone(),
        CertificateDer::from(ca_cert.der().to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("configure TLS", &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| err("load the server certificate", &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        ca_pem: ca_cert.pem(),
        config: Arc::new(config),
    })
}
