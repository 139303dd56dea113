//! TLS for `https://` HTTP queries and `wss://` WebSockets (R40). Feature `tls`, on by default:
//! rustls on its `ring` provider, trusting Mozilla's roots (bundled through webpki-roots, so no
//! system certificate store is needed).
//!
//! Every connection uses [`default_client_config`] unless it is given its own
//! [`ClientConfig`]: `ws::Connect::tls` for a WebSocket, `ws::shared::SharedBuilder::tls` for a
//! shared connection, `http::HttpQuery::with_tls` for HTTP (and `http::client_builder` for a
//! `reqwest::Client` of your own). A private certificate
//! authority, a client certificate or another provider is a [`ClientConfig`] built with the
//! re-exported [`rustls`].
//!
//! ```
//! use std::sync::Arc;
//! use livecache::tls::rustls;
//!
//! // Trust one private root (a self-signed certificate in DER), and nothing else.
//! fn private_roots(root: rustls::pki_types::CertificateDer<'static>) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
//!     let mut roots = rustls::RootCertStore::empty();
//!     roots.add(root)?;
//!     let provider = Arc::new(rustls::crypto::ring::default_provider());
//!     let config = rustls::ClientConfig::builder_with_provider(provider)
//!         .with_safe_default_protocol_versions()?
//!         .with_root_certificates(roots)
//!         .with_no_client_auth();
//!     Ok(Arc::new(config))
//! }
//! ```

#[cfg(any(feature = "ws", feature = "http"))]
use std::io;
use std::sync::{Arc, OnceLock};

pub use rustls;
use rustls::ClientConfig;
#[cfg(feature = "ws")]
use rustls::pki_types::ServerName;
#[cfg(feature = "ws")]
use tokio::io::{AsyncRead, AsyncWrite};
#[cfg(feature = "ws")]
use tokio_rustls::TlsConnector;
#[cfg(feature = "ws")]
use tokio_rustls::client::TlsStream;

/// The configuration every `https://` and `wss://` connection uses unless given its own: the
/// `ring` provider, its safe default protocol versions (TLS 1.2 and 1.3), Mozilla's roots, no
/// client certificate. Built once, then shared.
///
/// ```
/// let config = livecache::tls::default_client_config()?;
/// assert!(config.alpn_protocols.is_empty());
/// # Ok::<(), livecache::tls::rustls::Error>(())
/// ```
pub fn default_client_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, rustls::Error>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// The TLS handshake over `stream` with the server `host` (its name is checked against the
/// certificate). An error is the rustls error (a certificate, the handshake) as an
/// [`io::Error`] of kind `InvalidData`, or an I/O error of the stream.
#[cfg(feature = "ws")]
pub(crate) async fn handshake<S>(
    stream: S,
    host: &str,
    config: Option<&Arc<ClientConfig>>,
) -> io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = match config {
        Some(config) => Arc::clone(config),
        None => {
            default_client_config().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        }
    };
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    TlsConnector::from(config).connect(name, stream).await
}

/// Whether `error` (or an error below it) is a rustls error: a certificate refused, a handshake
/// failed. An [`io::Error`] wrapping another error is looked into (its `source()` skips the
/// error it wraps).
#[cfg(any(feature = "ws", feature = "http"))]
pub(crate) fn is_tls_error(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| {
        let wrapped = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref());
        match wrapped {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        }
    })
    .any(|e| e.is::<rustls::Error>())
}
