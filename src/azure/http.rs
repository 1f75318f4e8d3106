//! Sending one logical request: the `azure_core` pipeline, keyflip's retry loop, and
//! the mapping from HTTP answers to [`Error`].
//!
//! Every pipeline here is built with `RetryOptions::none()`; retrying is decided by
//! [`Sender::send`] from the operation's [`Operation::idempotent`] flag, so a
//! non-idempotent call (`regenerateKey`) goes out exactly once. Idempotent calls are
//! retried on 408/429/500/502/503/504 and on network errors, waiting as long as Azure
//! asks (`Retry-After`, `retry-after-ms`, `x-ms-retry-after-ms`) or with jittered
//! exponential backoff. Every request carries `x-ms-client-request-id` and a
//! `User-Agent` naming keyflip and its version (both set by the pipeline). Each answer
//! is logged with operation, target, status and request ids, never with a body, a
//! header value other than ids, or a URL query.
//!
//! Interruption (a signal, a daemon shutdown) ends every wait at once: a backoff
//! between attempts, a write budget, and an attempt that has not reached the network
//! yet (still getting its token). A [`Dispatch`] policy, last before the transport,
//! marks the moment a request may leave; after that the attempt runs to its answer,
//! so a write that may have happened is never abandoned unrecorded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use azure_core::Bytes;
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::headers::{CLIENT_REQUEST_ID, Headers};
use azure_core::http::policies::Policy;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::{
    ClientOptions, Context, HttpClient, Pipeline, PipelineSendOptions, Request, RetryOptions,
    UserAgentOptions,
};

use super::Error;
use super::budget::{self, Budgets, Class};
use super::cloud::transport;
use super::error::{Call, ServiceError, denial, request_id, retry_after};
use super::origin::{Destination, OriginPolicy};
use super::roles::Action;

/// What keyflip calls an operation, for logs, errors and retry decisions.
#[derive(Clone, Debug)]
pub(crate) struct Operation {
    pub name: &'static str,
    /// The RBAC action Azure checks, used to explain a 403 that does not say.
    pub action: Option<Action>,
    /// Safe to send twice. Only idempotent operations are retried.
    pub(crate) idempotent: bool,
    /// The answers worth retrying; [`RETRY_STATUSES`] for most operations.
    pub(crate) retry_on: &'static [u16],
}

/// Statuses Azure uses for "try again": timeout, throttling, server-side failures.
pub(crate) const RETRY_STATUSES: &[u16] = &[408, 429, 500, 502, 503, 504];

impl Operation {
    /// A call that changes nothing (a GET, or a POST action that only reads, such as
    /// `listKeys`): retried on [`RETRY_STATUSES`] and network errors.
    pub const fn read(name: &'static str, action: Action) -> Self {
        Operation {
            name,
            action: Some(action),
            idempotent: true,
            retry_on: RETRY_STATUSES,
        }
    }

    /// A write whose second sending leaves Azure as the first did (a PUT or PATCH of
    /// a whole value, a secret version with the same value): retried like a read.
    /// A write that is not safe to repeat (`regenerateKey`, a read-modify-write of a
    /// settings collection) is an `Operation` literal with `idempotent: false`.
    pub const fn write(name: &'static str, action: Action) -> Self {
        Operation {
            name,
            action: Some(action),
            idempotent: true,
            retry_on: RETRY_STATUSES,
        }
    }
}

/// How idempotent calls are retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Longer `Retry-After` requests are not waited out: the call fails with
    /// [`Error::Throttled`] carrying the wait, so the caller can schedule it.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Backoff before attempt `attempt + 1`, with ±25 % jitter so that several
    /// keyflip processes do not retry in lockstep.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let base = exp.min(self.max_backoff);
        let mut byte = [0u8; 1];
        let jitter =
            match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte) {
                Ok(()) => f64::from(byte[0]) / 255.0 * 0.5 + 0.75,
                Err(_) => 1.0,
            };
        base.mul_f64(jitter)
    }
}

/// An answer with a 2xx status.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: Headers,
    pub body: Bytes,
    pub call: Call,
}

/// A pipeline for one audience, with keyflip's retry loop around it.
#[derive(Clone)]
pub(crate) struct Sender {
    pipeline: Pipeline,
    retry: RetryPolicy,
    audience: String,
    /// ARM senders only: every attempt waits for its subscription's budget.
    budgets: Option<Arc<Budgets>>,
    /// Ends this sender's waits (see the module docs).
    interrupt: CancellationToken,
}

/// Why a call stopped without an answer: the process is being interrupted. Carried
/// inside an `azure_core` error of kind `Other` (nothing retries it).
#[derive(Clone, Debug, thiserror::Error)]
#[error("interrupted before the request was sent")]
pub(crate) struct Interrupted;

fn interrupted() -> azure_core::Error {
    azure_core::Error::new(ErrorKind::Other, Interrupted)
}

/// Set once an attempt passes the last policy before the transport.
#[derive(Debug, Default)]
struct Dispatched(AtomicBool);

/// The per-try policy that marks an attempt as dispatched (see the module docs).
#[derive(Debug)]
struct Dispatch;

#[async_trait::async_trait]
impl Policy for Dispatch {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> azure_core::http::policies::PolicyResult {
        if let Some(flag) = ctx.value::<Arc<Dispatched>>() {
            flag.0.store(true, Ordering::SeqCst);
        }
        match next.split_first() {
            Some((first, rest)) => first.send(ctx, request, rest).await,
            None => Err(azure_core::Error::with_message(
                ErrorKind::Other,
                "the dispatch marker is the last policy of its pipeline",
            )),
        }
    }
}

/// Client options with keyflip's transport, its User-Agent, no SDK-level retry, and
/// the [`OriginPolicy`] that keeps the client's requests on `destination`.
pub(crate) fn client_options(
    http: &Arc<dyn HttpClient>,
    service: &'static str,
    destination: Destination,
) -> ClientOptions {
    ClientOptions {
        transport: Some(transport(http)),
        retry: RetryOptions::none(),
        user_agent: user_agent(),
        per_call_policies: vec![OriginPolicy::policy(service, destination)],
        ..Default::default()
    }
}

/// `keyflip-{version}` at the front of every SDK User-Agent (`azsdk-rust-…` follows),
/// so Azure's logs name keyflip even for requests the SDK crates build.
pub(crate) fn user_agent() -> UserAgentOptions {
    let id = format!("keyflip-{}", env!("CARGO_PKG_VERSION"));
    // The SDK panics on an application id over 24 characters or with characters
    // outside RFC 9110's token set; a long pre-release version falls back to the name.
    let valid = id.len() <= 24
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
    UserAgentOptions {
        application_id: Some(if valid { id } else { "keyflip".to_owned() }),
    }
}

/// Which service a sender talks to, and where its requests may go.
#[derive(Clone, Debug)]
pub(crate) struct Service {
    /// For messages: the service's name (`ARM`, `Blob`, …).
    pub name: &'static str,
    pub(crate) destination: Destination,
}

/// The one retry loop of every Azure call, ARM's and the SDK clients' (Key Vault):
/// `attempt` is tried; a failure `retryable` accepts (with the wait Azure asked for,
/// if it did) is tried again after that wait or a jittered backoff, but only for an
/// [`Operation::idempotent`] operation and at most [`RetryPolicy::max_attempts`]
/// times in all; a wait longer than [`RetryPolicy::max_retry_after`] is returned, not
/// slept. An interruption ends the wait at once.
pub(crate) async fn retrying<R, F, Fut>(
    op: &Operation,
    target: &str,
    (retry, interrupt): (&RetryPolicy, &CancellationToken),
    mut attempt: impl FnMut(u32) -> Fut,
    retryable: impl Fn(&F) -> Option<Option<Duration>>,
    error: impl Fn(F, u32) -> Error,
    interrupted: impl Fn(u32) -> Error,
) -> Result<R, Error>
where
    Fut: std::future::Future<Output = Result<R, F>>,
{
    let mut n = 0u32;
    loop {
        n += 1;
        let failure = match attempt(n).await {
            Ok(answer) => return Ok(answer),
            Err(failure) => failure,
        };
        let may_retry = op.idempotent && n < retry.max_attempts;
        let wait = match retryable(&failure) {
            Some(asked) if may_retry => asked.unwrap_or_else(|| retry.backoff(n)),
            _ => return Err(error(failure, n)),
        };
        if wait > retry.max_retry_after {
            return Err(error(failure, n));
        }
        tracing::info!(
            operation = op.name,
            target,
            attempt = n,
            wait_ms = wait.as_millis() as u64,
            "azure call will be retried"
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = interrupt.cancelled() => return Err(interrupted(n)),
        }
    }
}

impl Sender {
    /// A sender whose requests carry a bearer token for `audience` and go only to
    /// `service`'s destination.
    pub fn bearer(
        http: &Arc<dyn HttpClient>,
        credential: Arc<dyn TokenCredential>,
        audience: &str,
        service: Service,
        retry: RetryPolicy,
    ) -> Sender {
        let scope = format!("{}/.default", audience.trim_end_matches('/'));
        let auth: Arc<dyn Policy> =
            Arc::new(BearerTokenAuthorizationPolicy::new(credential, [scope]));
        Self::with_policies(http, vec![auth], audience, service, retry)
    }

    /// A sender with the given per-try policies (e.g. SharedKey signing) and no token.
    pub(crate) fn with_policies(
        http: &Arc<dyn HttpClient>,
        mut per_try: Vec<Arc<dyn Policy>>,
        audience: &str,
        service: Service,
        retry: RetryPolicy,
    ) -> Sender {
        per_try.push(Arc::new(Dispatch));
        let pipeline = Pipeline::new(
            Some("keyflip"),
            Some(env!("CARGO_PKG_VERSION")),
            client_options(http, service.name, service.destination),
            Vec::new(),
            per_try,
            None,
        );
        Sender {
            pipeline,
            retry,
            audience: audience.to_owned(),
            budgets: None,
            interrupt: CancellationToken::new(),
        }
    }

    /// Makes `token` end this sender's waits.
    pub(crate) fn set_interrupt(&mut self, token: CancellationToken) {
        self.interrupt = token;
    }

    /// Resolves when this sender is interrupted.
    pub async fn interrupted(&self) {
        self.interrupt.cancelled().await;
    }

    /// Makes every attempt to a `/subscriptions/{id}/...` URL wait for that
    /// subscription's ARM budget (reads and writes).
    pub(crate) fn set_budgets(&mut self, budgets: Arc<Budgets>) {
        self.budgets = Some(budgets);
    }

    /// Sends the request `make` builds (rebuilt for each attempt) and returns the 2xx
    /// answer, or the error the last answer means.
    pub async fn send(
        &self,
        op: &Operation,
        target: &str,
        make: impl Fn() -> Request,
    ) -> Result<Answer, Error> {
        self.send_with(op, target, Context::new(), make).await
    }

    pub(crate) async fn send_with(
        &self,
        op: &Operation,
        target: &str,
        ctx: Context<'_>,
        make: impl Fn() -> Request,
    ) -> Result<Answer, Error> {
        retrying(
            op,
            target,
            (&self.retry, &self.interrupt),
            |_| self.send_once(op, target, &ctx, make()),
            |failure| match failure {
                Failure::Status {
                    status, headers, ..
                } if op.retry_on.contains(status) => Some(retry_after(headers)),
                Failure::Transport { error, .. }
                    if matches!(error.kind(), ErrorKind::Io | ErrorKind::Connection) =>
                {
                    Some(None)
                }
                _ => None,
            },
            |failure, attempt| self.error(op, failure, attempt),
            |attempt| {
                let call = Call {
                    operation: op.name,
                    target: target.to_owned(),
                    request_id: None,
                };
                self.error(
                    op,
                    Failure::Transport {
                        error: interrupted(),
                        call,
                    },
                    attempt,
                )
            },
        )
        .await
    }

    /// One attempt, with no retry at all. `regenerateKey` uses this directly.
    pub(crate) async fn send_once(
        &self,
        op: &Operation,
        target: &str,
        ctx: &Context<'_>,
        mut request: Request,
    ) -> Result<Answer, Failure> {
        let stop = || Failure::Transport {
            error: interrupted(),
            call: Call {
                operation: op.name,
                target: target.to_owned(),
                request_id: None,
            },
        };
        // ARM calls wait for their subscription's budget: reads and writes, with the
        // Storage resource provider's own windows on top for its calls.
        let budgeted = self.budgets.as_ref().and_then(|budgets| {
            let path = request.url().path();
            let subscription = budget::subscription_of(path)?.to_owned();
            let class = if request.method() == azure_core::http::Method::Get {
                Class::ArmRead
            } else {
                Class::ArmWrite
            };
            Some((
                budgets,
                class,
                subscription,
                budget::is_storage_provider(path),
            ))
        });
        if let Some((budgets, class, subscription, storage)) = &budgeted
            && budget::is_deferrable()
        {
            if let Err(deferred) = budgets.acquire_now(*class, *storage, subscription) {
                return Err(Failure::Transport {
                    error: azure_core::Error::new(ErrorKind::Other, deferred),
                    call: Call {
                        operation: op.name,
                        target: target.to_owned(),
                        request_id: None,
                    },
                });
            }
        } else if let Some((budgets, class, subscription, storage)) = &budgeted {
            tokio::select! {
                () = budgets.acquire(*class, *storage, subscription) => {}
                () = self.interrupt.cancelled() => return Err(stop()),
            }
        }
        let started = Instant::now();
        let dispatched = Arc::new(Dispatched::default());
        let ctx = ctx.clone().with_value(dispatched.clone());
        let result = {
            let send = self.pipeline.send(
                &ctx,
                &mut request,
                Some(PipelineSendOptions {
                    skip_checks: true,
                    ..Default::default()
                }),
            );
            tokio::pin!(send);
            let mut keep_going = false;
            loop {
                tokio::select! {
                    result = &mut send => break result,
                    () = self.interrupt.cancelled(), if !keep_going => {
                        // Still getting a token: nothing has left, so stop. Once
                        // dispatched, the request may be on the wire: wait for its answer.
                        if !dispatched.0.load(Ordering::SeqCst) {
                            return Err(stop());
                        }
                        keep_going = true;
                    }
                }
            }
        };
        let client_request_id = request
            .headers()
            .get_optional_str(&CLIENT_REQUEST_ID)
            .map(str::to_owned);
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let mut call = Call {
            operation: op.name,
            target: target.to_owned(),
            request_id: None,
        };
        match result {
            Ok(raw) => {
                let (status, headers, body) = raw.deconstruct();
                let status = u16::from(status);
                call.request_id = request_id(&headers);
                if let Some((budgets, class, subscription, _)) = &budgeted {
                    heed_limits(budgets, *class, subscription, status, &headers);
                }
                tracing::debug!(
                    operation = op.name,
                    target,
                    status,
                    request_id = call.request_id.as_deref(),
                    client_request_id = client_request_id.as_deref(),
                    elapsed_ms,
                    "azure call answered"
                );
                let body = Bytes::from(body);
                if (200..300).contains(&status) {
                    Ok(Answer {
                        status,
                        headers,
                        body,
                        call,
                    })
                } else {
                    Err(Failure::Status {
                        status,
                        headers,
                        body,
                        call,
                    })
                }
            }
            Err(error) => {
                tracing::debug!(
                    operation = op.name,
                    target,
                    client_request_id = client_request_id.as_deref(),
                    elapsed_ms,
                    error = %error,
                    "azure call failed without an answer"
                );
                Err(Failure::Transport { error, call })
            }
        }
    }

    /// The error a failed attempt means.
    pub fn error(&self, op: &Operation, failure: Failure, attempts: u32) -> Error {
        match failure {
            Failure::Status {
                status,
                headers,
                body,
                call,
            } => status_error(op, &self.audience, call, status, &headers, &body, attempts),
            Failure::Transport { error, call } => match error.kind() {
                ErrorKind::Connection => Error::Network {
                    call: call.into(),
                    sent: false,
                    detail: error.to_string(),
                },
                ErrorKind::Io => Error::Network {
                    call: call.into(),
                    sent: true,
                    detail: error.to_string(),
                },
                ErrorKind::Credential => Error::credential(&self.audience, &error),
                _ if error.downcast_ref::<Interrupted>().is_some() => Error::Interrupted {
                    call: call.into(),
                    sent: false,
                },
                _ if error.downcast_ref::<budget::Deferred>().is_some() => {
                    Error::Deferred { call: call.into() }
                }
                _ => {
                    let fallback = format!("{call}: the request could not be made: {error}");
                    Error::refused(call, &error, fallback)
                }
            },
        }
    }
}

/// What ARM says about the subscription's throttling bucket: the calls left in it
/// (`x-ms-ratelimit-remaining-subscription-writes`/`-reads`, on every answer), and on a
/// 429 how long to wait. Other tools may share the subscription, so Azure's count is
/// the truth where keyflip's own only knows keyflip's calls.
fn heed_limits(
    budgets: &Budgets,
    class: Class,
    subscription: &str,
    status: u16,
    headers: &Headers,
) {
    let name = match class {
        Class::ArmWrite => "x-ms-ratelimit-remaining-subscription-writes",
        _ => "x-ms-ratelimit-remaining-subscription-reads",
    };
    if let Some(left) = headers
        .get_optional_str(&azure_core::http::headers::HeaderName::from_static(name))
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        budgets.remaining(class, subscription, left);
    }
    if status == 429 {
        let wait = retry_after(headers).unwrap_or(Duration::from_secs(10));
        budgets.throttled(class, subscription, wait);
    }
}

/// One attempt's failure, before it is turned into an [`Error`].
pub(crate) enum Failure {
    Status {
        status: u16,
        headers: Headers,
        body: Bytes,
        call: Call,
    },
    Transport {
        error: azure_core::Error,
        call: Call,
    },
}

/// The error a non-2xx answer means.
pub(crate) fn status_error(
    op: &Operation,
    audience: &str,
    call: Call,
    status: u16,
    headers: &Headers,
    body: &[u8],
    attempts: u32,
) -> Error {
    let service = ServiceError::parse(body);
    match status {
        401 => Error::Unauthorized {
            call: call.into(),
            audience: audience.to_owned(),
            code: service.best_code(),
            message: service.message,
        },
        403 => Error::Forbidden {
            call: call.into(),
            denial: Box::new(denial(&service, op.action.as_ref())),
        },
        404 => Error::NotFound {
            call: call.into(),
            code: service.best_code(),
            message: service.message,
        },
        429 => Error::Throttled {
            call: call.into(),
            attempts,
            retry_after: retry_after(headers),
        },
        500..=599 => Error::Server {
            call: call.into(),
            status,
            code: service.best_code(),
            message: service.message,
            attempts,
        },
        _ => Error::Rejected {
            call: call.into(),
            status,
            code: service.best_code(),
            message: service.message,
        },
    }
}

/// Parses a 2xx JSON body into `T`, or a [`Error::BadResponse`] naming the call.
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    answer: &Answer,
    expected: &str,
) -> Result<T, Error> {
    serde_json::from_slice(&answer.body).map_err(|e| Error::BadResponse {
        call: answer.call.clone().into(),
        status: answer.status,
        detail: super::error::json_problem(&e, expected),
    })
}

#[cfg(test)]
mod tests {
    use super::super::mock::{Mock, Reply, ok, status};
    use super::super::roles::actions;
    use super::*;
    use azure_core::http::Method;

    fn sender(mock: &Arc<Mock>) -> Sender {
        let http: Arc<dyn HttpClient> = mock.clone();
        Sender::with_policies(
            &http,
            Vec::new(),
            "https://management.azure.com",
            Service {
                name: "ARM",
                destination: Destination::origin_of(&url::Url::parse("https://arm.test/").unwrap()),
            },
            RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(2),
                max_retry_after: Duration::from_secs(5),
            },
        )
    }

    fn get() -> Request {
        Request::new("https://arm.test/x".parse().unwrap(), Method::Get)
    }

    const READ: Operation = Operation::read("test.read", actions::STORAGE_READ);
    const WRITE: Operation = Operation {
        name: "test.write",
        action: Some(actions::STORAGE_REGENERATE_KEY),
        idempotent: false,
        retry_on: RETRY_STATUSES,
    };

    #[tokio::test]
    async fn every_request_names_keyflip_and_carries_a_client_request_id() {
        let mock = Mock::new(vec![ok("{}"), ok("{}")]);
        let s = sender(&mock);
        s.send(&READ, "t", get).await.unwrap();
        s.send(&READ, "t", get).await.unwrap();
        let sent = mock.sent();
        let ua = sent[0].header("user-agent").unwrap();
        assert!(
            ua.contains(&format!("keyflip/{}", env!("CARGO_PKG_VERSION"))),
            "{ua}"
        );
        let ids: Vec<_> = sent
            .iter()
            .map(|s| s.header("x-ms-client-request-id").unwrap())
            .collect();
        assert_eq!(ids[0].len(), 36, "{ids:?}");
        assert_ne!(ids[0], ids[1]);
    }

    #[tokio::test]
    async fn idempotent_calls_are_retried_and_others_are_not() {
        let mock = Mock::new(vec![status(503, &[], ""), Reply::Io, ok("{}")]);
        assert_eq!(
            sender(&mock).send(&READ, "t", get).await.unwrap().status,
            200
        );
        assert_eq!(mock.sent().len(), 3);

        let mock = Mock::new(vec![
            status(
                500,
                &[],
                r#"{"error":{"code":"InternalError","message":"boom"}}"#,
            ),
            ok("{}"),
        ]);
        let err = sender(&mock).send(&WRITE, "t", get).await.err().unwrap();
        assert!(
            matches!(
                err,
                Error::Server {
                    status: 500,
                    attempts: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.is_transient());
        assert_eq!(mock.sent().len(), 1);
    }

    #[tokio::test]
    async fn retries_stop_after_the_last_attempt_with_the_last_answer() {
        let throttled = || {
            status(
                429,
                &[("retry-after", "0")],
                r#"{"error":{"code":"TooManyRequests","message":"slow down"}}"#,
            )
        };
        let mock = Mock::new(vec![throttled(), throttled(), throttled(), ok("{}")]);
        let err = sender(&mock).send(&READ, "t", get).await.err().unwrap();
        assert!(matches!(err, Error::Throttled { attempts: 3, .. }), "{err}");
        assert_eq!(mock.sent().len(), 3);
    }

    #[tokio::test]
    async fn a_wait_longer_than_allowed_is_returned_not_slept() {
        let mock = Mock::new(vec![status(429, &[("retry-after", "3600")], "")]);
        let err = sender(&mock).send(&READ, "t", get).await.err().unwrap();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
        assert_eq!(mock.sent().len(), 1);
    }

    #[tokio::test]
    async fn statuses_become_typed_errors() {
        let cases = [
            (401, "Unauthorized", false),
            (403, "Forbidden", false),
            (404, "NotFound", false),
            (409, "Rejected", false),
            (400, "Rejected", false),
        ];
        for (code, variant, transient) in cases {
            let mock = Mock::new(vec![status(
                code,
                &[("x-ms-request-id", "rid-1")],
                r#"{"error":{"code":"C","message":"M"}}"#,
            )]);
            let err = sender(&mock)
                .send(&READ, "/subscriptions/s/x", get)
                .await
                .err()
                .unwrap();
            assert!(format!("{err:?}").starts_with(variant), "{code}: {err:?}");
            assert_eq!(err.is_transient(), transient);
            assert_eq!(err.status(), Some(code));
            assert_eq!(err.call().unwrap().request_id.as_deref(), Some("rid-1"));
            assert!(
                err.to_string().contains("test.read /subscriptions/s/x"),
                "{err}"
            );
        }
    }

    /// The origin policy sits in the pipeline itself, so whatever URL a caller builds
    /// from an answer, nothing reaches the network unless it is the sender's origin.
    #[tokio::test]
    async fn requests_to_another_origin_never_reach_the_network() {
        for url in [
            "https://elsewhere.test/x",
            "http://arm.test/x",
            "https://arm.test:8443/x",
            "https://u:p@arm.test/x",
        ] {
            let mock = Mock::new(vec![ok("{}")]);
            let err = sender(&mock)
                .send(&READ, "t", || {
                    Request::new(url.parse().unwrap(), Method::Get)
                })
                .await
                .err()
                .unwrap();
            assert!(matches!(err, Error::ForeignOrigin { .. }), "{url}: {err}");
            assert!(!err.is_transient());
            assert!(err.to_string().contains("https://arm.test"), "{err}");
            assert!(mock.sent().is_empty(), "{url} was sent");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(1),
        };
        for (attempt, base) in [
            (1, 100u64),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (9, 1000),
        ] {
            let d = p.backoff(attempt).as_millis() as u64;
            assert!(
                d >= base * 3 / 4 && d <= base * 5 / 4,
                "attempt {attempt}: {d}ms not within 25% of {base}ms"
            );
        }
    }
}
