//! Azure Resource Manager requests: URLs, JSON bodies, paging and long-running
//! operations, on top of [`Sender`].
//!
//! Promises: requests go only to the configured ARM origin (the sender's origin policy
//! refuses a `nextLink` or polling URL that points elsewhere, so the ARM token never
//! leaves it); pages are
//! followed until `nextLink` is absent, with a bound against loops; a long-running
//! operation is polled through `Azure-AsyncOperation` when present, else `Location`,
//! honouring `Retry-After`, until it ends or the caller's deadline passes.

use std::time::Duration;

use azure_core::http::{Method, Request};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

use super::Error;
use super::error::Call;
use super::http::{Answer, Operation, Sender, json};

/// Pages followed at most, so a service that loops its `nextLink` cannot hang keyflip.
const MAX_PAGES: usize = 1000;

pub(crate) struct Arm {
    sender: Sender,
    base: Url,
    /// Polling interval when Azure gives no `Retry-After`.
    lro_poll: Duration,
}

/// The body of a request.
pub(crate) enum Body<'a> {
    None,
    Json(&'a serde_json::Value),
}

impl Arm {
    pub fn new(sender: Sender, base: Url, lro_poll: Duration) -> Arm {
        Arm {
            sender,
            base,
            lro_poll,
        }
    }

    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    pub fn set_budgets(&mut self, budgets: std::sync::Arc<super::budget::Budgets>) {
        self.sender.set_budgets(budgets);
    }

    /// `{arm}{id}{suffix}?api-version=…`. `id` is a resource id (or any ARM path).
    pub fn url(&self, id: &str, suffix: &str, api_version: &str) -> Result<Url, Error> {
        let text = format!(
            "{}{}{}",
            self.base.as_str().trim_end_matches('/'),
            id.trim_end_matches('/'),
            suffix
        );
        let mut url = Url::parse(&text)
            .map_err(|e| Error::Invalid(format!("'{id}' does not make a valid ARM URL: {e}")))?;
        url.query_pairs_mut()
            .append_pair("api-version", api_version);
        Ok(url)
    }

    pub fn request(method: Method, url: &Url, body: &Body<'_>) -> Request {
        let mut request = Request::new(url.clone(), method);
        request.insert_header("accept", "application/json");
        match body {
            Body::None => {
                if matches!(method, Method::Post | Method::Put | Method::Patch) {
                    request.insert_header("content-length", "0");
                }
            }
            Body::Json(value) => {
                request.insert_header("content-type", "application/json");
                request.set_body(value.to_string());
            }
        }
        request
    }

    /// Sends with the operation's retry rules and returns the 2xx answer.
    pub async fn call(
        &self,
        op: &Operation,
        target: &str,
        method: Method,
        url: &Url,
        body: Body<'_>,
    ) -> Result<Answer, Error> {
        self.sender
            .send(op, target, || Self::request(method, url, &body))
            .await
    }

    /// GETs every page of a `{value: [...], nextLink}` list.
    pub async fn list<T: DeserializeOwned>(
        &self,
        op: &Operation,
        target: &str,
        first: Url,
        expected: &str,
    ) -> Result<Vec<T>, Error> {
        #[derive(Deserialize)]
        struct Page<T> {
            #[serde(default = "Vec::new")]
            value: Vec<T>,
            #[serde(rename = "nextLink")]
            next_link: Option<String>,
        }
        let mut items = Vec::new();
        let mut url = first;
        for _ in 0..MAX_PAGES {
            let answer = self.call(op, target, Method::Get, &url, Body::None).await?;
            let page: Page<T> = json(&answer, expected)?;
            items.extend(page.value);
            match page.next_link.filter(|l| !l.is_empty()) {
                None => return Ok(items),
                Some(link) => url = self.link(&answer.call, &link, "nextLink")?,
            }
        }
        Err(Error::BadResponse {
            call: Call {
                operation: op.name,
                target: target.to_owned(),
                request_id: None,
            }
            .into(),
            status: 200,
            detail: format!("more than {MAX_PAGES} pages; the service's nextLink seems to loop"),
        })
    }

    /// A URL Azure handed back (`nextLink`, `Location`), resolved against ARM. Where
    /// it may go is not decided here: the sender's origin policy refuses anything
    /// but ARM's own HTTPS origin, for every request this client makes.
    fn link(&self, call: &Call, link: &str, what: &str) -> Result<Url, Error> {
        self.base.join(link).map_err(|e| Error::BadResponse {
            call: call.clone().into(),
            status: 200,
            detail: format!("the {what} is not a URL: {e}"),
        })
    }

    /// POSTs an action that may run long (202 + `Azure-AsyncOperation`/`Location`) and
    /// waits until it ends, fails, or `deadline` passes.
    pub async fn post_long_running(
        &self,
        op: &Operation,
        target: &str,
        url: &Url,
        deadline: Duration,
    ) -> Result<(), Error> {
        let started = tokio::time::Instant::now();
        let first = self.call(op, target, Method::Post, url, Body::None).await?;
        if !matches!(first.status, 201 | 202) {
            return Ok(());
        }
        let header = |name: &'static str| {
            first
                .headers
                .get_optional_str(&azure_core::http::headers::HeaderName::from_static(name))
                .map(str::to_owned)
        };
        let (mode, link) = match (header("azure-asyncoperation"), header("location")) {
            (Some(link), _) => (Poll::AsyncOperation, link),
            (None, Some(link)) => (Poll::Location, link),
            (None, None) => {
                return Err(Error::BadResponse {
                    call: first.call.into(),
                    status: first.status,
                    detail: "HTTP 202 without Location or Azure-AsyncOperation, so there is nothing to poll".into(),
                });
            }
        };
        let poll_url = self.link(&first.call, &link, "polling URL")?;
        // A Location poll answers with the operation's own outcome, so its 500 is the
        // operation failing, not the poll; only throttling and unavailability are
        // retried there. An Azure-AsyncOperation poll reports the outcome in its body.
        let poll_op = Operation {
            name: "arm.pollOperation",
            action: op.action.clone(),
            idempotent: true,
            retry_on: match mode {
                Poll::Location => &[429, 503],
                Poll::AsyncOperation => super::http::RETRY_STATUSES,
            },
        };
        let mut wait = super::error::retry_after(&first.headers).unwrap_or(self.lro_poll);
        loop {
            let elapsed = started.elapsed();
            if elapsed >= deadline {
                return Err(Error::Deadline {
                    call: first.call.clone().into(),
                    waited: elapsed,
                });
            }
            // The operation was accepted; only the wait for its end is given up.
            tokio::select! {
                () = tokio::time::sleep(wait.min(deadline - elapsed)) => {}
                () = self.sender.interrupted() => {
                    return Err(Error::Interrupted {
                        call: first.call.clone().into(),
                        sent: true,
                    });
                }
            }
            if started.elapsed() >= deadline {
                continue;
            }
            let answer = match self
                .call(&poll_op, target, Method::Get, &poll_url, Body::None)
                .await
            {
                Ok(answer) => answer,
                // In Location mode the operation's own failure arrives as the poll's
                // error status.
                Err(
                    Error::Rejected {
                        call,
                        status,
                        code,
                        message,
                    }
                    | Error::Server {
                        call,
                        status,
                        code,
                        message,
                        ..
                    },
                ) if mode == Poll::Location => {
                    return Err(Error::OperationFailed {
                        call,
                        status: format!("HTTP {status}"),
                        code,
                        message,
                    });
                }
                Err(e) => return Err(e),
            };
            wait = super::error::retry_after(&answer.headers).unwrap_or(self.lro_poll);
            match mode {
                Poll::Location if answer.status == 202 => {}
                Poll::Location => return Ok(()),
                Poll::AsyncOperation => {
                    let status: OperationStatus = json(&answer, "an operation status object")?;
                    match status.status.as_str() {
                        s if s.eq_ignore_ascii_case("Succeeded") => return Ok(()),
                        s if s.eq_ignore_ascii_case("Failed")
                            || s.eq_ignore_ascii_case("Canceled") =>
                        {
                            let error = status.error.unwrap_or_default();
                            return Err(Error::OperationFailed {
                                call: answer.call.into(),
                                status: status.status,
                                code: error.code,
                                message: error.message,
                            });
                        }
                        _ => {}
                    }
                }
            }
            tracing::debug!(
                operation = op.name,
                target,
                wait_ms = wait.as_millis() as u64,
                "long-running operation still in progress"
            );
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Poll {
    AsyncOperation,
    Location,
}

#[derive(Deserialize)]
struct OperationStatus {
    status: String,
    error: Option<OperationError>,
}

#[derive(Deserialize, Default)]
struct OperationError {
    code: Option<String>,
    message: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use azure_core::http::HttpClient;

    use super::super::http::RetryPolicy;
    use super::super::mock::{Mock, ok, status};
    use super::super::roles::actions;
    use super::*;

    const RESYNC: Operation = Operation::read("test.resync", actions::ML_WORKSPACE_RESYNC_KEYS);

    fn arm(mock: &Arc<Mock>) -> Arm {
        let http: Arc<dyn HttpClient> = mock.clone();
        let retry = RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            max_retry_after: Duration::from_secs(1),
        };
        let sender = Sender::with_policies(
            &http,
            Vec::new(),
            "https://arm.test",
            super::super::http::Service {
                name: "ARM",
                destination: super::super::origin::Destination::origin_of(
                    &Url::parse("https://arm.test/").unwrap(),
                ),
            },
            retry,
        );
        Arm::new(
            sender,
            Url::parse("https://arm.test/").unwrap(),
            Duration::from_millis(5),
        )
    }

    async fn resync(arm: &Arm, deadline: Duration) -> Result<(), Error> {
        let url = arm
            .url("/subscriptions/s/x", "/resyncKeys", "2024-04-01")
            .unwrap();
        arm.post_long_running(&RESYNC, "/subscriptions/s/x", &url, deadline)
            .await
    }

    #[tokio::test]
    async fn location_is_polled_until_it_stops_answering_202() {
        let location = [
            ("location", "https://arm.test/ops/1?api-version=2024-04-01"),
            ("retry-after", "0"),
        ];
        let mock = Mock::new(vec![
            status(202, &location, ""),
            status(202, &location, ""),
            status(200, &[], ""),
        ]);
        resync(&arm(&mock), Duration::from_secs(5)).await.unwrap();
        let sent = mock.sent();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0].method, "POST");
        assert_eq!(
            sent[0].url,
            "https://arm.test/subscriptions/s/x/resyncKeys?api-version=2024-04-01"
        );
        assert!(
            sent[1..]
                .iter()
                .all(|s| s.method == "GET" && s.url == location[0].1)
        );
    }

    #[tokio::test]
    async fn async_operation_status_is_preferred_and_its_failure_reported() {
        let headers = [
            ("location", "https://arm.test/ops/loc"),
            ("azure-asyncoperation", "https://arm.test/ops/async"),
        ];
        let mock = Mock::new(vec![
            status(202, &headers, ""),
            ok(r#"{"status":"InProgress"}"#),
            ok(r#"{"status":"Failed","error":{"code":"KeyVaultUnreachable","message":"no"}}"#),
        ]);
        let err = resync(&arm(&mock), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::OperationFailed { status, code: Some(c), .. } if status == "Failed" && c == "KeyVaultUnreachable"),
            "{err}"
        );
        assert!(
            mock.sent()[1..]
                .iter()
                .all(|s| s.url == "https://arm.test/ops/async")
        );
    }

    #[tokio::test]
    async fn a_location_poll_that_fails_is_an_operation_failure() {
        let mock = Mock::new(vec![
            status(202, &[("location", "/ops/1")], ""),
            status(
                400,
                &[],
                r#"{"error":{"code":"ResyncFailed","message":"m"}}"#,
            ),
        ]);
        let err = resync(&arm(&mock), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::OperationFailed { .. }), "{err}");
    }

    #[tokio::test]
    async fn polling_gives_up_at_the_deadline() {
        let mut replies = vec![status(202, &[("location", "https://arm.test/ops/1")], "")];
        replies
            .extend((0..200).map(|_| status(202, &[("location", "https://arm.test/ops/1")], "")));
        let mock = Mock::new(replies);
        let err = resync(&arm(&mock), Duration::from_millis(60))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Deadline { .. }), "{err}");
        assert!(err.is_transient());
    }

    #[tokio::test]
    async fn links_to_other_hosts_are_refused() {
        let mock = Mock::new(vec![status(
            202,
            &[("location", "https://elsewhere.test/ops/1")],
            "",
        )]);
        let err = resync(&arm(&mock), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ForeignOrigin { .. }), "{err}");
        assert!(err.to_string().contains("https://elsewhere.test"), "{err}");
        assert_eq!(mock.sent().len(), 1);

        let mock = Mock::new(vec![ok(
            r#"{"value":[1],"nextLink":"https://elsewhere.test/next"}"#,
        )]);
        let url = Url::parse("https://arm.test/list").unwrap();
        let err = arm(&mock)
            .list::<u32>(&RESYNC, "t", url, "numbers")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ForeignOrigin { .. }), "{err}");
    }

    #[tokio::test]
    async fn lists_follow_next_link_to_the_end() {
        let mock = Mock::new(vec![
            ok(r#"{"value":[1,2],"nextLink":"https://arm.test/list?page=2"}"#),
            ok(r#"{"value":[3],"nextLink":null}"#),
        ]);
        let url = Url::parse("https://arm.test/list").unwrap();
        let items = arm(&mock)
            .list::<u32>(&RESYNC, "t", url, "numbers")
            .await
            .unwrap();
        assert_eq!(items, vec![1, 2, 3]);
    }
}
