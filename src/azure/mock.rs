//! A scripted `HttpClient` for unit tests: answers requests from a queue and records
//! what was sent. Integration tests use keyflip-twin instead; this covers what needs
//! exact control of single answers (headers the twin does not log, deadlines).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use azure_core::error::{Error, ErrorKind};
use azure_core::http::headers::Headers;
use azure_core::http::{AsyncRawResponse, HttpClient, Request, StatusCode};

/// One scripted answer.
#[derive(Debug)]
pub(crate) enum Reply {
    Status(u16, Vec<(&'static str, String)>, String),
    Io,
}

pub(crate) fn ok(body: &str) -> Reply {
    Reply::Status(200, Vec::new(), body.to_owned())
}

pub(crate) fn status(status: u16, headers: &[(&'static str, &str)], body: &str) -> Reply {
    Reply::Status(
        status,
        headers.iter().map(|(n, v)| (*n, (*v).to_owned())).collect(),
        body.to_owned(),
    )
}

/// What was sent.
#[derive(Clone, Debug)]
pub(crate) struct Sent {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
}

impl Sent {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
pub(crate) struct Mock {
    replies: Mutex<VecDeque<Reply>>,
    sent: Mutex<Vec<Sent>>,
}

impl Mock {
    pub fn new(replies: Vec<Reply>) -> Arc<Mock> {
        Arc::new(Mock {
            replies: Mutex::new(replies.into()),
            sent: Mutex::new(Vec::new()),
        })
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait::async_trait]
impl HttpClient for Mock {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Sent {
                method: request.method().to_string(),
                url: request.url().to_string(),
                headers: request
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.as_str().to_owned(), v.as_str().to_owned()))
                    .collect(),
            });
        let next = self
            .replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        match next {
            Some(Reply::Status(status, headers, body)) => {
                let mut h = Headers::new();
                for (n, v) in headers {
                    h.insert(n, v);
                }
                Ok(AsyncRawResponse::from_bytes(
                    StatusCode::from(status),
                    h,
                    body,
                ))
            }
            Some(Reply::Io) => Err(Error::with_message(
                ErrorKind::Io,
                "connection reset (scripted)",
            )),
            None => Err(Error::with_message(
                ErrorKind::Other,
                "the mock has no more replies",
            )),
        }
    }
}

/// A credential that always returns the same token, for pipelines under test.
#[derive(Debug)]
pub(crate) struct FixedToken;

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for FixedToken {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        Ok(azure_core::credentials::AccessToken::new(
            "unit-test-token",
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}
