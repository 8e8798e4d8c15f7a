//! The HTTPS client `openidconnect` talks through: reqwest on rustls, trusting the system's CAs
//! and `ca_file` as well (merged, never instead), following no redirect (a token endpoint that
//! redirects is refused, not followed with the code), with timeouts, and reading at most
//! [`MAX_BODY`] of an answer.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use openidconnect::http as h;
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};

/// The most of an answer read (a discovery document or key set is a few KiB).
pub(super) const MAX_BODY: usize = 1024 * 1024;
/// Connecting, and the whole request.
const CONNECT: Duration = Duration::from_secs(5);
const WHOLE: Duration = Duration::from_secs(10);

/// Why a request to the provider failed, as one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct HttpError(String);

/// An error and its causes, on one line (reqwest's own `Display` leaves out why a connection
/// failed).
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// The client.
#[derive(Debug, Clone)]
pub(super) struct Client(reqwest::Client);

impl Client {
    /// A client trusting the system's CAs and `ca_file`'s certificates.
    ///
    /// # Errors
    /// `ca_file` cannot be read or holds no certificate (one line, naming the key).
    pub(super) fn new(ca_file: Option<&Path>) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT)
            .timeout(WHOLE)
            .user_agent(concat!("aupgate/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let fail = |problem: String| {
                format!(
                    "admin.oidc.ca_file {}: {problem} (fix: give the PEM file of the CA that signed the provider's certificate, or remove the key)",
                    path.display()
                )
            };
            let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail(chain(&e)))?;
            if certs.is_empty() {
                return Err(fail("it holds no certificate".into()));
            }
            builder = builder.tls_certs_merge(certs);
        }
        builder
            .build()
            .map(Self)
            .map_err(|e| format!("cannot make the HTTPS client: {}", chain(&e)))
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let request = reqwest::Request::try_from(request).map_err(|e| HttpError(chain(&e)))?;
        let url = request.url().clone();
        let fail = |e: reqwest::Error| HttpError(format!("{url}: {}", chain(&e)));
        let mut response = self.0.execute(request).await.map_err(fail)?;
        let mut answer = h::Response::builder().status(response.status());
        if let Some(headers) = answer.headers_mut() {
            *headers = std::mem::take(response.headers_mut());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(fail)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(HttpError(format!("{url}: the answer is over {MAX_BODY} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        answer.body(body).map_err(|e| HttpError(chain(&e)))
    }
}

impl<'c> AsyncHttpClient<'c> for Client {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}
