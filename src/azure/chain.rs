//! `[credential] kind = "default"`: the chain Microsoft's SDKs call
//! `DefaultAzureCredential`, built by keyflip because `azure_identity` 1.0 has none.
//!
//! Links, in Microsoft's order (`DefaultAzureCredential` in
//! Azure/azure-sdk-for-python `sdk/identity/azure-identity/azure/identity/_credentials/default.py`
//! and the JavaScript, .NET and Java libraries; keyflip has no IDE or PowerShell links):
//!
//! 1. **environment**: `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET`,
//!    else `AZURE_CLIENT_CERTIFICATE_PATH` (a PEM with the private key);
//! 2. **workload identity**: `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` +
//!    `AZURE_FEDERATED_TOKEN_FILE`;
//! 3. **managed identity**: App Service form when `IDENTITY_ENDPOINT` and
//!    `IDENTITY_HEADER` are set, else the VM's IMDS (169.254.169.254), probed first
//!    with a one-second timeout as Microsoft's SDKs do, so a machine without IMDS moves
//!    on at once instead of retrying for a minute;
//! 4. **Azure CLI** (`az account get-access-token`).
//!
//! The same rules as Microsoft's `ChainedTokenCredential`: a link that is not set up
//! (variables missing, no endpoint answering, no identity assigned, `az` not logged in)
//! is *unavailable* and the next one is tried; a link that is set up but fails (Entra
//! ID refuses the secret) *stops* the chain with that error, so a broken service
//! principal never silently falls through to another identity. The first link that
//! gives a token is used for every later request. `AZURE_TOKEN_CREDENTIALS` narrows
//! the chain (`prod`: the first three; `dev`: the CLI; or one credential's name), as
//! in Microsoft's SDKs.
//!
//! What happened is observable: [`DefaultChain::chosen`] names the link in use
//! (`doctor` and the daemon's start-up log show it), each skipped or failed link's
//! reason is logged at debug, and the error when nothing worked lists every link.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};

/// The VM metadata endpoint that serves managed identity tokens.
pub(crate) const IMDS: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 169, 254)),
    80,
);

/// How long the IMDS probe waits for an answer (Microsoft's SDKs: one second).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The links of the chain, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Environment,
    WorkloadIdentity,
    ManagedIdentity,
    AzureCli,
}

impl LinkKind {
    pub const ALL: [LinkKind; 4] = [
        LinkKind::Environment,
        LinkKind::WorkloadIdentity,
        LinkKind::ManagedIdentity,
        LinkKind::AzureCli,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            LinkKind::Environment => "environment",
            LinkKind::WorkloadIdentity => "workload identity",
            LinkKind::ManagedIdentity => "managed identity",
            LinkKind::AzureCli => "Azure CLI",
        }
    }

    /// The links `AZURE_TOKEN_CREDENTIALS` keeps, or why its value is not one
    /// Microsoft's SDKs accept.
    pub(crate) fn selected_by(value: Option<&str>) -> Result<Vec<LinkKind>, String> {
        let Some(value) = value.map(|v| v.trim().to_ascii_lowercase()) else {
            return Ok(LinkKind::ALL.to_vec());
        };
        Ok(match value.as_str() {
            "" => LinkKind::ALL.to_vec(),
            "prod" => vec![
                LinkKind::Environment,
                LinkKind::WorkloadIdentity,
                LinkKind::ManagedIdentity,
            ],
            "dev" => vec![LinkKind::AzureCli],
            "environmentcredential" => vec![LinkKind::Environment],
            "workloadidentitycredential" => vec![LinkKind::WorkloadIdentity],
            "managedidentitycredential" => vec![LinkKind::ManagedIdentity],
            "azureclicredential" => vec![LinkKind::AzureCli],
            other => {
                return Err(format!(
                    "AZURE_TOKEN_CREDENTIALS={other} is not one keyflip knows; use prod, dev, EnvironmentCredential, WorkloadIdentityCredential, ManagedIdentityCredential or AzureCliCredential"
                ));
            }
        })
    }
}

/// How a link's token failure is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judge {
    /// Any failure stops the chain (a service principal that is set up).
    Stops,
    /// No answer, or 400 "no identity assigned", means unavailable (managed identity).
    ManagedIdentity,
    /// Every failure means unavailable (`az` missing or not logged in).
    Unavailable,
}

/// One link as built from the environment.
pub enum Link {
    /// Not set up here; the reason says what is missing.
    Unavailable { kind: LinkKind, why: String },
    /// Set up wrongly (an unreadable certificate): stops the chain with this error.
    Broken { kind: LinkKind, why: String },
    Ready {
        kind: LinkKind,
        /// What exactly it uses: "client secret for app 5f2d…", "App Service endpoint".
        detail: String,
        credential: Arc<dyn TokenCredential>,
        /// An endpoint that must answer first (IMDS).
        probe: Option<SocketAddr>,
        judge: Judge,
    },
}

impl Link {
    fn kind(&self) -> LinkKind {
        match self {
            Link::Unavailable { kind, .. }
            | Link::Broken { kind, .. }
            | Link::Ready { kind, .. } => *kind,
        }
    }
}

/// The default credential chain.
pub struct DefaultChain {
    links: Vec<Link>,
    chosen: OnceLock<usize>,
    /// Only one walk at a time: concurrent first requests wait for its choice.
    walk: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for DefaultChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefaultChain")
            .field("chosen", &self.chosen())
            .finish_non_exhaustive()
    }
}

impl DefaultChain {
    pub fn new(links: Vec<Link>) -> DefaultChain {
        DefaultChain {
            links,
            chosen: OnceLock::new(),
            walk: tokio::sync::Mutex::new(()),
        }
    }

    /// The link in use, e.g. "managed identity (App Service endpoint)", once one
    /// has given a token.
    pub fn chosen(&self) -> Option<String> {
        let i = *self.chosen.get()?;
        match self.links.get(i) {
            Some(Link::Ready { kind, detail, .. }) => Some(format!("{} ({detail})", kind.label())),
            _ => None,
        }
    }

    /// The links in order, for the start-up log: "environment: unavailable (...)".
    pub(crate) fn describe(&self) -> Vec<String> {
        self.links
            .iter()
            .map(|l| match l {
                Link::Unavailable { kind, why } => format!("{}: unavailable ({why})", kind.label()),
                Link::Broken { kind, why } => format!("{}: set up wrongly ({why})", kind.label()),
                Link::Ready { kind, detail, .. } => format!("{}: {detail}", kind.label()),
            })
            .collect()
    }
}

fn error_text(e: &azure_core::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Whether an error says the managed identity endpoint is absent or has no identity
/// for us (Microsoft's SDKs treat both as "unavailable").
fn managed_identity_absent(e: &azure_core::Error) -> bool {
    use azure_core::error::ErrorKind;
    if super::credential::is_network_failure(e) {
        return true;
    }
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(az) = err.downcast_ref::<azure_core::Error>()
            && let ErrorKind::HttpResponse { status, .. } = az.kind()
        {
            return u16::from(*status) == 400;
        }
        current = err.source();
    }
    false
}

/// Whether the managed identity endpoint at `addr` answers HTTP within a second.
pub async fn probe(addr: SocketAddr) -> Result<(), String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        // No Metadata header: IMDS answers 400 at once, which proves it is there.
        let request = format!(
            "GET /metadata/identity/oauth2/token?api-version=2018-02-01 HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            addr.ip()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 12];
        let n = stream.read(&mut head).await?;
        Ok::<bool, std::io::Error>(head[..n].starts_with(b"HTTP/"))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(format!("{addr} answered, but not with HTTP")),
        Ok(Err(e)) => Err(format!("no managed identity endpoint at {addr}: {e}")),
        Err(_) => Err(format!(
            "no managed identity endpoint: {addr} did not answer within {}s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

#[async_trait::async_trait]
impl TokenCredential for DefaultChain {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        if let Some(Link::Ready { credential, .. }) =
            self.chosen.get().and_then(|i| self.links.get(*i))
        {
            return credential.get_token(scopes, options).await;
        }
        let _walking = self.walk.lock().await;
        if let Some(Link::Ready { credential, .. }) =
            self.chosen.get().and_then(|i| self.links.get(*i))
        {
            return credential.get_token(scopes, options).await;
        }
        let mut tried = Vec::new();
        for (i, link) in self.links.iter().enumerate() {
            let label = link.kind().label();
            match link {
                Link::Unavailable { why, .. } => {
                    tracing::debug!(link = label, reason = %why, "default credential chain: link unavailable");
                    tried.push(format!("{label}: unavailable ({why})"));
                }
                Link::Broken { why, .. } => {
                    tracing::debug!(link = label, reason = %why, "default credential chain: link set up wrongly; stopping");
                    tried.push(format!("{label}: {why}"));
                    return Err(azure_core::Error::with_message(
                        azure_core::error::ErrorKind::Credential,
                        stopped(&tried, label),
                    ));
                }
                Link::Ready {
                    credential,
                    probe: endpoint,
                    judge,
                    detail,
                    ..
                } => {
                    if let Some(addr) = endpoint
                        && let Err(why) = probe(*addr).await
                    {
                        tracing::debug!(link = label, reason = %why, "default credential chain: link unavailable");
                        tried.push(format!("{label}: unavailable ({why})"));
                        continue;
                    }
                    match credential.get_token(scopes, options.clone()).await {
                        Ok(token) => {
                            let _ = self.chosen.set(i);
                            tracing::info!(
                                credential = %format!("{label} ({detail})"),
                                "default credential chain: using {label}"
                            );
                            return Ok(token);
                        }
                        Err(e) => {
                            let why = error_text(&e);
                            let unavailable = match judge {
                                Judge::Stops => false,
                                Judge::Unavailable => true,
                                Judge::ManagedIdentity => managed_identity_absent(&e),
                            };
                            if unavailable {
                                tracing::debug!(link = label, reason = %why, "default credential chain: link unavailable");
                                tried.push(format!("{label}: unavailable ({why})"));
                                continue;
                            }
                            tracing::debug!(link = label, reason = %why, "default credential chain: link failed; stopping");
                            tried.push(format!("{label} ({detail}): {why}"));
                            let message = stopped(&tried, label);
                            return Err(azure_core::Error::with_error(
                                azure_core::error::ErrorKind::Credential,
                                e,
                                message,
                            ));
                        }
                    }
                }
            }
        }
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            format!(
                "the default credential chain found no credential: {}; set one up (docs/configuration.md, \"[credential]\") or choose a kind explicitly",
                tried.join("; ")
            ),
        ))
    }
}

fn stopped(tried: &[String], label: &str) -> String {
    format!(
        "the default credential chain stopped at {label}, which is set up but failed (later links are not tried, so keyflip never falls through to another identity): {}",
        tried.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use azure_core::error::ErrorKind;

    use super::*;

    /// A link's credential with a scripted answer. (A unit test of the chain's own
    /// rules; the links themselves are tested against the twin.)
    #[derive(Debug)]
    struct Scripted {
        calls: AtomicUsize,
        answer: fn() -> azure_core::Result<AccessToken>,
    }

    #[async_trait::async_trait]
    impl TokenCredential for Scripted {
        async fn get_token(
            &self,
            _: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            (self.answer)()
        }
    }

    fn ok() -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(
            "t",
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
    fn refused() -> azure_core::Result<AccessToken> {
        Err(azure_core::Error::with_message(
            ErrorKind::Credential,
            "AADSTS7000215: Invalid client secret",
        ))
    }
    fn no_identity() -> azure_core::Result<AccessToken> {
        Err(azure_core::Error::new(
            ErrorKind::HttpResponse {
                status: azure_core::http::StatusCode::BadRequest,
                error_code: None,
                raw_response: None,
            },
            "no identity assigned",
        ))
    }

    fn ready(
        kind: LinkKind,
        judge: Judge,
        answer: fn() -> azure_core::Result<AccessToken>,
    ) -> (Link, Arc<Scripted>) {
        let cred = Arc::new(Scripted {
            calls: AtomicUsize::new(0),
            answer,
        });
        (
            Link::Ready {
                kind,
                detail: "scripted".into(),
                credential: cred.clone(),
                probe: None,
                judge,
            },
            cred,
        )
    }

    #[tokio::test]
    async fn unavailable_links_are_skipped_and_the_first_token_wins_for_good() {
        let (mi, mi_cred) = ready(
            LinkKind::ManagedIdentity,
            Judge::ManagedIdentity,
            no_identity,
        );
        let (cli, cli_cred) = ready(LinkKind::AzureCli, Judge::Unavailable, ok);
        let chain = DefaultChain::new(vec![
            Link::Unavailable {
                kind: LinkKind::Environment,
                why: "AZURE_TENANT_ID is not set".into(),
            },
            mi,
            cli,
        ]);
        assert_eq!(chain.chosen(), None);
        chain.get_token(&["s/.default"], None).await.unwrap();
        assert_eq!(chain.chosen().as_deref(), Some("Azure CLI (scripted)"));
        chain.get_token(&["s/.default"], None).await.unwrap();
        assert_eq!(
            mi_cred.calls.load(Ordering::SeqCst),
            1,
            "not retried once chosen"
        );
        assert_eq!(cli_cred.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_link_that_is_set_up_but_refused_stops_the_chain() {
        let (env, _) = ready(LinkKind::Environment, Judge::Stops, refused);
        let (cli, cli_cred) = ready(LinkKind::AzureCli, Judge::Unavailable, ok);
        let chain = DefaultChain::new(vec![env, cli]);
        let e = chain.get_token(&["s/.default"], None).await.unwrap_err();
        let text = e.to_string();
        assert!(text.contains("stopped at environment"), "{text}");
        assert!(text.contains("AADSTS7000215"), "{text}");
        assert_eq!(
            cli_cred.calls.load(Ordering::SeqCst),
            0,
            "never falls through"
        );
        assert_eq!(chain.chosen(), None);

        let broken = DefaultChain::new(vec![
            Link::Broken {
                kind: LinkKind::Environment,
                why: "AZURE_CLIENT_CERTIFICATE_PASSWORD is set".into(),
            },
            ready(LinkKind::AzureCli, Judge::Unavailable, ok).0,
        ]);
        let text = broken
            .get_token(&["s/.default"], None)
            .await
            .unwrap_err()
            .to_string();
        assert!(text.contains("PASSWORD"), "{text}");
    }

    #[tokio::test]
    async fn nothing_available_lists_every_link() {
        let (mi, _) = ready(
            LinkKind::ManagedIdentity,
            Judge::ManagedIdentity,
            no_identity,
        );
        let chain = DefaultChain::new(vec![
            Link::Unavailable {
                kind: LinkKind::Environment,
                why: "AZURE_CLIENT_ID is not set".into(),
            },
            Link::Unavailable {
                kind: LinkKind::WorkloadIdentity,
                why: "AZURE_FEDERATED_TOKEN_FILE is not set".into(),
            },
            mi,
        ]);
        let text = chain
            .get_token(&["s/.default"], None)
            .await
            .unwrap_err()
            .to_string();
        for part in [
            "environment: unavailable",
            "workload identity: unavailable",
            "managed identity: unavailable",
            "no identity assigned",
        ] {
            assert!(text.contains(part), "{part} missing: {text}");
        }
    }

    #[tokio::test]
    async fn the_imds_probe_tells_an_endpoint_from_none() {
        // An address nothing listens on (a port just released) is unavailable at once.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let why = probe(closed).await.unwrap_err();
        assert!(why.contains(&closed.to_string()), "{why}");

        // Something answering HTTP is an endpoint.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        probe(addr).await.unwrap();

        // Something that accepts and says nothing times out within the second.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let started = std::time::Instant::now();
        assert!(probe(addr).await.unwrap_err().contains("did not answer"));
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(silent);
    }

    #[test]
    fn azure_token_credentials_narrows_the_chain() {
        assert_eq!(LinkKind::selected_by(None).unwrap().len(), 4);
        assert_eq!(
            LinkKind::selected_by(Some("prod")).unwrap(),
            [
                LinkKind::Environment,
                LinkKind::WorkloadIdentity,
                LinkKind::ManagedIdentity
            ]
        );
        assert_eq!(
            LinkKind::selected_by(Some("dev")).unwrap(),
            [LinkKind::AzureCli]
        );
        assert_eq!(
            LinkKind::selected_by(Some("ManagedIdentityCredential")).unwrap(),
            [LinkKind::ManagedIdentity]
        );
        assert!(
            LinkKind::selected_by(Some("vscode"))
                .unwrap_err()
                .contains("prod, dev")
        );
    }
}
