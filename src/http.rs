//! An HTTP query function on reqwest: RTK's `fetchBaseQuery`. Feature `http`, on by default;
//! `https://` with the `tls` feature, also on by default (`livecache::tls`).
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use livecache::{Api, http::HttpQuery};
//!
//! #[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
//! struct Message { id: u64, text: String }
//!
//! let http = HttpQuery::new("http://127.0.0.1:3000/")?;
//! let api = Api::builder().build();
//! let get_messages = api
//!     .query::<String, Vec<Message>>("getMessages")
//!     .query_fn(http.get_json(|channel: &String| format!("messages/{channel}")))
//!     .build()?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use reqwest::redirect::Policy;
use reqwest::{Client, Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;

use crate::runtime::BoxError;
/// The underlying error of an [`HttpError`] (R40); also [`livecache::Cause`](crate::Cause).
pub use crate::runtime::Cause;

/// The reqwest this module is built on, for a caller's own client ([`HttpQuery::with_client`])
/// and methods ([`HttpQuery::with_method`]) of the same version. Build a client from
/// [`client_builder`]: it comes with livecache's TLS configuration. (reqwest is built here
/// without a TLS provider of its own — rustls' default provider takes minutes to compile — so a
/// bare `reqwest::Client::builder().build()` panics when nothing else in the program enables one;
/// that is reqwest's behaviour.)
pub use reqwest;

/// A `reqwest::ClientBuilder` with livecache's TLS configuration
/// (`livecache::tls::default_client_config`, feature `tls`) — for a
/// client of your own with [`HttpQuery::with_client`]. Its redirect policy and timeout are
/// reqwest's defaults; set your own.
///
/// ```
/// let client = livecache::http::client_builder()?
///     .timeout(std::time::Duration::from_secs(5))
///     .build()?;
/// let http = livecache::http::HttpQuery::with_client(client, "https://example.com/api")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn client_builder() -> Result<reqwest::ClientBuilder, HttpError> {
    let builder = Client::builder();
    #[cfg(feature = "tls")]
    let builder = {
        let config = crate::tls::default_client_config().map_err(|e| HttpError::Tls {
            cause: Cause::new(e),
        })?;
        builder.tls_backend_preconfigured(rustls::ClientConfig::clone(&config))
    };
    Ok(builder)
}

/// The default request timeout (30 s).
///
/// ```
/// assert_eq!(livecache::http::DEFAULT_TIMEOUT, std::time::Duration::from_secs(30));
/// ```
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default limit on a response body's size (16 MiB); see [`HttpQuery::with_body_limit`].
///
/// ```
/// assert_eq!(livecache::http::DEFAULT_BODY_LIMIT, 16 * 1024 * 1024);
/// ```
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The most redirects one request follows (each within the base URL's origin).
///
/// ```
/// assert_eq!(livecache::http::MAX_REDIRECTS, 5);
/// ```
pub const MAX_REDIRECTS: usize = 5;

/// Why an HTTP query failed.
///
/// ```
/// let e = livecache::http::HttpError::Status { status: 404, body: "no such channel".into() };
/// assert_eq!(e.to_string(), "HTTP 404: no such channel");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The base URL or a path built from an argument is not a URL.
    #[error("bad URL: {0}")]
    Url(String),
    /// The client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
    /// The request failed before a response arrived: the connection was refused, could not be
    /// made, or broke (R40). The transport's error is the [`source`](std::error::Error::source).
    #[error("HTTP request failed ({failure}): {cause}")]
    Request {
        /// How it failed.
        failure: RequestFailure,
        /// The transport's error.
        #[source]
        cause: Cause,
    },
    /// TLS failed (a certificate, a handshake), or `https://` was asked of a build without the
    /// `tls` feature.
    #[error("HTTP TLS: {cause}")]
    Tls {
        /// The TLS error.
        #[source]
        cause: Cause,
    },
    /// A redirect was refused: it led to another origin (scheme, host or port) than the base
    /// URL's, or it was one more than [`MAX_REDIRECTS`]. Its target was never requested.
    #[error("HTTP redirect refused: {0}")]
    Redirect(String),
    /// No response within the timeout.
    #[error("HTTP request timed out")]
    Timeout {
        /// The transport's error.
        #[source]
        cause: Cause,
    },
    /// The response body is larger than the limit ([`HttpQuery::with_body_limit`], by default
    /// [`DEFAULT_BODY_LIMIT`]): its declared `Content-Length` is, or it went on past the limit.
    /// The body was not read further than the limit; the entry keeps the data it had.
    #[error("HTTP response body larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The server answered with an error status; the body is kept.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The response body, as text.
        body: String,
    },
    /// The body is not JSON of the expected type.
    #[error("HTTP response is not the expected JSON: {cause}")]
    Decode {
        /// The decoder's error (a `serde_json::Error`).
        #[source]
        cause: Cause,
    },
}

/// How a request failed before a response arrived (R40).
///
/// ```
/// assert_eq!(livecache::http::RequestFailure::Refused.to_string(), "connection refused");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestFailure {
    /// Nothing listens at the address.
    Refused,
    /// The connection could not be made otherwise (DNS, unreachable, …).
    Connect,
    /// It broke or failed after connecting.
    Other,
}

impl fmt::Display for RequestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestFailure::Refused => "connection refused",
            RequestFailure::Connect => "could not connect",
            RequestFailure::Other => "transport error",
        })
    }
}

/// What an [`HttpError`] is, to match on (R40): one value per variant, and the request failure's
/// own kinds.
///
/// ```
/// use livecache::http::{HttpError, HttpErrorKind};
/// let e = HttpError::Status { status: 503, body: String::new() };
/// assert_eq!(e.kind(), HttpErrorKind::Status(503));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HttpErrorKind {
    /// [`HttpError::Url`].
    Url,
    /// [`HttpError::Client`].
    Client,
    /// [`HttpError::Request`], with how it failed.
    Request(RequestFailure),
    /// [`HttpError::Tls`].
    Tls,
    /// [`HttpError::Redirect`].
    RedirectRefused,
    /// [`HttpError::Timeout`].
    TimedOut,
    /// [`HttpError::BodyTooLarge`].
    BodyTooLarge,
    /// [`HttpError::Status`], with the status code.
    Status(u16),
    /// [`HttpError::Decode`].
    Decode,
}

impl HttpError {
    /// What this error is, to match on.
    ///
    /// ```
    /// use livecache::http::{HttpError, HttpErrorKind};
    /// assert_eq!(HttpError::Url("x".into()).kind(), HttpErrorKind::Url);
    /// ```
    pub fn kind(&self) -> HttpErrorKind {
        match self {
            HttpError::Url(_) => HttpErrorKind::Url,
            HttpError::Client(_) => HttpErrorKind::Client,
            HttpError::Request { failure, .. } => HttpErrorKind::Request(*failure),
            HttpError::Tls { .. } => HttpErrorKind::Tls,
            HttpError::Redirect(_) => HttpErrorKind::RedirectRefused,
            HttpError::Timeout { .. } => HttpErrorKind::TimedOut,
            HttpError::BodyTooLarge { .. } => HttpErrorKind::BodyTooLarge,
            HttpError::Status { status, .. } => HttpErrorKind::Status(*status),
            HttpError::Decode { .. } => HttpErrorKind::Decode,
        }
    }
}

/// What a response said besides its body: RTK's `meta` (status and headers).
///
/// ```
/// let meta = livecache::http::HttpMeta { status: 200, headers: vec![("etag".into(), "\"1\"".into())] };
/// assert_eq!(meta.header("ETag"), Some("\"1\""));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpMeta {
    /// The status code.
    pub status: u16,
    /// The headers (names lowercase), in the order received.
    pub headers: Vec<(String, String)>,
}

impl HttpMeta {
    /// The first header named `name` (case-insensitive).
    ///
    /// ```
    /// let meta = livecache::http::HttpMeta { status: 200, headers: vec![] };
    /// assert_eq!(meta.header("content-type"), None);
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A base URL and a client: builds query functions that GET JSON.
///
/// ```
/// let http = livecache::http::HttpQuery::new("http://127.0.0.1:3000/api")?;
/// assert_eq!(http.base_url().as_str(), "http://127.0.0.1:3000/api/");
/// # Ok::<(), livecache::http::HttpError>(())
/// ```
#[derive(Clone)]
pub struct HttpQuery {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    client: Client,
    base: Url,
    body_limit: usize,
    method: Method,
    headers: HeaderMap,
}

impl HttpQuery {
    /// A query for `base_url` (a trailing `/` is added if missing, so paths join under it) with
    /// the default timeout.
    ///
    /// ```
    /// assert!(livecache::http::HttpQuery::new("not a url").is_err());
    /// ```
    pub fn new(base_url: &str) -> Result<HttpQuery, HttpError> {
        HttpQuery::with_timeout(base_url, DEFAULT_TIMEOUT)
    }

    /// A query for `base_url` whose requests time out after `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let http = livecache::http::HttpQuery::with_timeout("http://127.0.0.1:3000/", Duration::from_secs(2))?;
    /// # Ok::<(), livecache::http::HttpError>(())
    /// ```
    pub fn with_timeout(base_url: &str, timeout: Duration) -> Result<HttpQuery, HttpError> {
        HttpQuery::build(base_url, timeout, client_builder()?)
    }

    /// A query for `base_url` whose `https://` requests use `config` (R40; feature `tls`): a
    /// private certificate authority, a client certificate. The default timeout and the
    /// same-origin redirect policy apply as for [`HttpQuery::new`].
    ///
    /// ```
    /// let config = livecache::tls::default_client_config()?;
    /// let http = livecache::http::HttpQuery::with_tls("https://127.0.0.1:3443/", config)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "tls")]
    pub fn with_tls(
        base_url: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<HttpQuery, HttpError> {
        let builder =
            Client::builder().tls_backend_preconfigured(rustls::ClientConfig::clone(&config));
        HttpQuery::build(base_url, DEFAULT_TIMEOUT, builder)
    }

    fn build(
        base_url: &str,
        timeout: Duration,
        builder: reqwest::ClientBuilder,
    ) -> Result<HttpQuery, HttpError> {
        let base = base_of(base_url)?;
        if base.scheme() == "https" && !cfg!(feature = "tls") {
            return Err(HttpError::Tls {
                cause: Cause::message("https:// needs TLS: enable livecache's `tls` feature"),
            });
        }
        let client = builder
            .timeout(timeout)
            .redirect(same_origin_redirects(&base))
            .build()
            .map_err(|e| HttpError::Client(e.to_string()))?;
        Ok(HttpQuery::from_parts(client, base))
    }

    fn from_parts(client: Client, base: Url) -> HttpQuery {
        HttpQuery {
            inner: Arc::new(Inner {
                client,
                base,
                body_limit: DEFAULT_BODY_LIMIT,
                method: Method::GET,
                headers: HeaderMap::new(),
            }),
        }
    }

    /// A query for `base_url` through the caller's own `reqwest::Client` (R40): its timeouts,
    /// proxies, TLS roots and redirect policy apply (this crate's same-origin redirect policy and
    /// timeout do not; set them on the client). Paths still never leave the base URL's origin.
    ///
    /// ```
    /// let client = livecache::http::client_builder()?.build()?;
    /// let http = livecache::http::HttpQuery::with_client(client, "http://127.0.0.1:3000/api")?;
    /// assert_eq!(http.base_url().as_str(), "http://127.0.0.1:3000/api/");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_client(client: Client, base_url: &str) -> Result<HttpQuery, HttpError> {
        Ok(HttpQuery::from_parts(client, base_of(base_url)?))
    }

    /// This query with requests of `method` (R40; GET by default): a query that reads through a
    /// POST, say. Its body is empty.
    ///
    /// ```
    /// let http = livecache::http::HttpQuery::new("http://127.0.0.1:3000/")?
    ///     .with_method(reqwest::Method::POST);
    /// # Ok::<(), livecache::http::HttpError>(())
    /// ```
    #[must_use]
    pub fn with_method(mut self, method: Method) -> HttpQuery {
        Arc::make_mut(&mut self.inner).method = method;
        self
    }

    /// This query with a header on every request (R40); an invalid name or value is an
    /// [`HttpError::Client`].
    ///
    /// ```
    /// let http = livecache::http::HttpQuery::new("http://127.0.0.1:3000/")?
    ///     .with_header("x-api-version", "2")?;
    /// assert!(livecache::http::HttpQuery::new("http://127.0.0.1:3000/")?.with_header("bad name", "x").is_err());
    /// # Ok::<(), livecache::http::HttpError>(())
    /// ```
    pub fn with_header(mut self, name: &str, value: &str) -> Result<HttpQuery, HttpError> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| HttpError::Client(format!("header name {name:?}: {e}")))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|e| HttpError::Client(format!("header value for {name}: {e}")))?;
        if name == AUTHORIZATION {
            value.set_sensitive(true);
        }
        Arc::make_mut(&mut self.inner).headers.insert(name, value);
        Ok(self)
    }

    /// This query with `Authorization: Bearer <token>` on every request (R40; the value is
    /// marked sensitive, so it is not printed in debug output).
    ///
    /// ```
    /// let http = livecache::http::HttpQuery::new("http://127.0.0.1:3000/")?.with_bearer_auth("s3cret")?;
    /// # Ok::<(), livecache::http::HttpError>(())
    /// ```
    pub fn with_bearer_auth(self, token: &str) -> Result<HttpQuery, HttpError> {
        self.with_header(AUTHORIZATION.as_str(), &format!("Bearer {token}"))
    }

    /// This query with response bodies limited to `bytes` (the default is
    /// [`DEFAULT_BODY_LIMIT`]). A body is read as it arrives and the request fails with
    /// [`HttpError::BodyTooLarge`] as soon as it would exceed the limit, or at once when its
    /// `Content-Length` does, so no more than `bytes` of it is ever held. The limit applies to
    /// error responses' bodies too.
    ///
    /// ```
    /// let http = livecache::http::HttpQuery::new("http://127.0.0.1:3000/")?.with_body_limit(64 * 1024);
    /// assert_eq!(http.body_limit(), 64 * 1024);
    /// # Ok::<(), livecache::http::HttpError>(())
    /// ```
    #[must_use]
    pub fn with_body_limit(mut self, bytes: usize) -> HttpQuery {
        Arc::make_mut(&mut self.inner).body_limit = bytes;
        self
    }

    /// The limit on a response body's size, in bytes.
    ///
    /// ```
    /// let http = livecache::http::HttpQuery::new("http://127.0.0.1:3000/")?;
    /// assert_eq!(http.body_limit(), livecache::http::DEFAULT_BODY_LIMIT);
    /// # Ok::<(), livecache::http::HttpError>(())
    /// ```
    pub fn body_limit(&self) -> usize {
        self.inner.body_limit
    }

    /// The base URL.
    ///
    /// ```
    /// let http = livecache::http::HttpQuery::new("http://127.0.0.1:3000")?;
    /// assert_eq!(http.base_url().path(), "/");
    /// # Ok::<(), livecache::http::HttpError>(())
    /// ```
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// GET `path(arg)` (relative to the base URL) and decode the JSON body as `T`: a query
    /// function for [`EndpointBuilder::query_fn`](crate::runtime::EndpointBuilder::query_fn). An error
    /// status is an [`HttpError::Status`] with the body. The path is resolved as a browser
    /// resolves a link (`../` goes up, `?` starts a query), so percent-encode argument text you
    /// put into it; a path naming another scheme, host or port is an [`HttpError::Url`], never
    /// requested. Likewise a redirect: one within the base URL's origin is followed (at most
    /// [`MAX_REDIRECTS`]), one to another scheme, host or port is an [`HttpError::Redirect`] and
    /// its target is never requested.
    ///
    /// ```
    /// let http = livecache::http::HttpQuery::new("http://127.0.0.1:3000/")?;
    /// let query = http.get_json::<u32, Vec<String>>(|id: &u32| format!("users/{id}/posts"));
    /// # Ok::<(), livecache::http::HttpError>(())
    /// ```
    pub fn get_json<A, T>(
        &self,
        path: impl Fn(&A) -> String + Send + Sync + 'static,
    ) -> impl Fn(A) -> BoxFuture<'static, Result<T, BoxError>> + Send + Sync + 'static
    where
        A: Send + 'static,
        T: DeserializeOwned + Send + 'static,
    {
        let get = self.get_json_with_meta::<A, T>(path);
        move |arg| get(arg).map(|r| r.map(|(data, _meta)| data)).boxed()
    }

    /// Like [`HttpQuery::get_json`], also returning the response's [`HttpMeta`]: a query
    /// function for [`EndpointBuilder::query_fn_with_meta`](crate::runtime::EndpointBuilder::query_fn_with_meta),
    /// so the lifecycle's `data_loaded` gets the status and headers.
    ///
    /// ```
    /// let http = livecache::http::HttpQuery::new("http://127.0.0.1:3000/")?;
    /// let query = http.get_json_with_meta::<String, Vec<String>>(|c: &String| format!("messages/{c}"));
    /// # Ok::<(), livecache::http::HttpError>(())
    /// ```
    pub fn get_json_with_meta<A, T>(
        &self,
        path: impl Fn(&A) -> String + Send + Sync + 'static,
    ) -> impl Fn(A) -> BoxFuture<'static, Result<(T, HttpMeta), BoxError>> + Send + Sync + 'static
    where
        A: Send + 'static,
        T: DeserializeOwned + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        move |arg| {
            let url = relative_url(&inner.base, &path(&arg));
            let inner = Arc::clone(&inner);
            async move {
                let url = url?;
                let request = inner
                    .client
                    .request(inner.method.clone(), url)
                    .headers(inner.headers.clone());
                Ok(fetch_json(request, inner.body_limit).await?)
            }
            .boxed()
        }
    }
}

/// `path` resolved against `base`, as a browser would; a path that names another scheme, host or
/// port (`http://elsewhere/…`, `//elsewhere/…`) is refused rather than requested.
fn relative_url(base: &Url, path: &str) -> Result<Url, HttpError> {
    let url = base.join(path).map_err(|e| HttpError::Url(e.to_string()))?;
    if url.origin() != base.origin() {
        return Err(HttpError::Url(format!(
            "{path:?} leaves the base URL's origin ({})",
            base.origin().ascii_serialization()
        )));
    }
    Ok(url)
}

/// The redirect policy: follow a redirect that stays within `base`'s origin (scheme, host and
/// port), at most [`MAX_REDIRECTS`] of them; refuse any other, so its target is never requested.
fn same_origin_redirects(base: &Url) -> Policy {
    let origin = base.origin();
    Policy::custom(move |attempt| {
        let target = attempt.url();
        if target.origin() != origin {
            let refused = RedirectRefused(format!(
                "{} redirects to {target}, outside the base URL's origin ({})",
                attempt.status().as_u16(),
                origin.ascii_serialization()
            ));
            attempt.error(refused)
        } else if attempt.previous().len() > MAX_REDIRECTS {
            let refused = RedirectRefused(format!(
                "more than {MAX_REDIRECTS} redirects (the last to {target})"
            ));
            attempt.error(refused)
        } else {
            attempt.follow()
        }
    })
}

/// Why the redirect policy stopped a request; becomes [`HttpError::Redirect`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RedirectRefused(String);

async fn fetch_json<T: DeserializeOwned>(
    request: RequestBuilder,
    limit: usize,
) -> Result<(T, HttpMeta), HttpError> {
    let response = request.send().await.map_err(request_error)?;
    let status = response.status();
    let meta = HttpMeta {
        status: status.as_u16(),
        headers: response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    let body = read_body(response, limit).await?;
    if !status.is_success() {
        return Err(HttpError::Status {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let data = serde_json::from_slice(&body).map_err(|e| HttpError::Decode {
        cause: Cause::new(e),
    })?;
    Ok((data, meta))
}

/// The response's body, read chunk by chunk: [`HttpError::BodyTooLarge`] as soon as it would
/// exceed `limit` bytes (or at once when its `Content-Length` does), so at most `limit` bytes are
/// ever held.
async fn read_body(mut response: Response, limit: usize) -> Result<Vec<u8>, HttpError> {
    let too_large = || HttpError::BodyTooLarge { limit };
    let declared = match response.content_length() {
        Some(length) => usize::try_from(length).map_err(|_| too_large())?,
        None => 0,
    };
    if declared > limit {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(declared);
    while let Some(chunk) = response.chunk().await.map_err(request_error)? {
        if chunk.len() > limit.saturating_sub(body.len()) {
            return Err(too_large());
        }
        // Grow by doubling, as `Vec` does, but never past the limit.
        let needed = body.len() + chunk.len();
        if needed > body.capacity() {
            let room = needed.max(body.capacity().saturating_mul(2)).min(limit);
            body.reserve_exact(room - body.len());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The base URL, with a trailing `/` added if missing (so paths join under it).
fn base_of(base_url: &str) -> Result<Url, HttpError> {
    let with_slash = if base_url.ends_with('/') {
        base_url.to_owned()
    } else {
        format!("{base_url}/")
    };
    Url::parse(&with_slash).map_err(|e| HttpError::Url(e.to_string()))
}

fn request_error(error: reqwest::Error) -> HttpError {
    if error.is_timeout() {
        HttpError::Timeout {
            cause: Cause::new(error),
        }
    } else if error.is_redirect() {
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            if let Some(refused) = cause.downcast_ref::<RedirectRefused>() {
                return HttpError::Redirect(refused.0.clone());
            }
            source = cause.source();
        }
        HttpError::Redirect(error.to_string())
    } else if is_tls(&error) {
        HttpError::Tls {
            cause: Cause::new(error),
        }
    } else {
        let failure = if refused(&error) {
            RequestFailure::Refused
        } else if error.is_connect() {
            RequestFailure::Connect
        } else {
            RequestFailure::Other
        };
        HttpError::Request {
            failure,
            cause: Cause::new(error),
        }
    }
}

/// The errors below `error`, nearest first.
fn causes(error: &reqwest::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(error), |e| e.source())
}

/// Whether the connection was refused (an I/O error of that kind below `error`).
fn refused(error: &reqwest::Error) -> bool {
    causes(error).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

/// Whether TLS failed: a rustls error below reqwest's (a certificate refused, a handshake
/// failed).
#[cfg(feature = "tls")]
fn is_tls(error: &reqwest::Error) -> bool {
    crate::tls::is_tls_error(error)
}

/// Whether TLS failed: without the `tls` feature there is no TLS to fail.
#[cfg(not(feature = "tls"))]
fn is_tls(_error: &reqwest::Error) -> bool {
    false
}

impl fmt::Debug for HttpQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpQuery")
            .field("base", &self.inner.base.as_str())
            .finish()
    }
}
