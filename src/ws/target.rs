//! Where a `ws://` or `wss://` URL leads, and the steps of connecting to it — the connection,
//! TLS for `wss://`, the WebSocket handshake — each failure with its kind (R40).

use std::io;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tokio::{TokioAdapter, client_async_with_config};
use async_tungstenite::tungstenite::Error as ProtocolError;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::error::UrlError;
use async_tungstenite::tungstenite::handshake::client::Request;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio::io::{AsyncRead, AsyncWrite};

use super::secure::MaybeTls;
use super::transport::Transport;
use super::{ConnectFailure, WsError};
use crate::Cause;

/// A WebSocket over a connection of type `S` (TCP by default), TLS over it for `wss://`.
pub(crate) type Socket<S> = WebSocketStream<TokioAdapter<Transport<MaybeTls<S>>>>;

/// The host and port a URL leads to (80 for `ws://`, 443 for `wss://` unless it says), and
/// whether TLS is needed.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
}

/// The TLS configuration for `wss://`: the default one unless set.
#[derive(Clone, Debug, Default)]
pub(crate) struct TlsChoice {
    #[cfg(feature = "tls")]
    pub(crate) config: Option<std::sync::Arc<rustls::ClientConfig>>,
}

fn failed(failure: ConnectFailure, cause: Cause) -> WsError {
    WsError::Connect { failure, cause }
}

impl Target {
    /// Read a URL: its request (for the handshake) and where it leads.
    pub(crate) fn parse(url: &str) -> Result<(Request, Target), WsError> {
        let request = url
            .into_client_request()
            .map_err(|e| failed(ConnectFailure::Url, Cause::new(e)))?;
        let uri = request.uri();
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") if cfg!(feature = "tls") => true,
            Some("wss") => {
                return Err(failed(
                    ConnectFailure::Url,
                    Cause::message("wss:// needs TLS: enable livecache's `tls` feature"),
                ));
            }
            _ => {
                let error = ProtocolError::Url(UrlError::UnsupportedUrlScheme);
                return Err(failed(ConnectFailure::Url, Cause::new(error)));
            }
        };
        let Some(host) = uri.host() else {
            let error = ProtocolError::Url(UrlError::NoHostName);
            return Err(failed(ConnectFailure::Url, Cause::new(error)));
        };
        // An IPv6 literal keeps its brackets in a URI, not in a socket address.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok((request, Target { host, port, tls }))
    }

    /// The connection failed to open: refused, or otherwise.
    pub(crate) fn unreachable(error: io::Error) -> WsError {
        let failure = if error.kind() == io::ErrorKind::ConnectionRefused {
            ConnectFailure::Refused
        } else {
            ConnectFailure::Connect
        };
        failed(failure, Cause::new(error))
    }

    /// TLS over `stream` for `wss://`; the stream itself for `ws://`.
    pub(crate) async fn secure<S>(&self, stream: S, tls: &TlsChoice) -> Result<MaybeTls<S>, WsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if !self.tls {
            return Ok(MaybeTls::Plain(stream));
        }
        #[cfg(feature = "tls")]
        {
            crate::tls::handshake(stream, &self.host, tls.config.as_ref())
                .await
                .map(|s| MaybeTls::Tls(Box::new(s)))
                .map_err(|e| {
                    let failure = if crate::tls::is_tls_error(&e)
                        || e.kind() == io::ErrorKind::InvalidInput
                    {
                        ConnectFailure::Tls
                    } else {
                        ConnectFailure::Connect
                    };
                    failed(failure, Cause::new(e))
                })
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = tls;
            Err(failed(
                ConnectFailure::Url,
                Cause::message("wss:// needs TLS: enable livecache's `tls` feature"),
            ))
        }
    }
}

/// The WebSocket handshake over `transport`.
pub(crate) async fn handshake<S>(
    request: Request,
    transport: Transport<MaybeTls<S>>,
    config: Option<WebSocketConfig>,
) -> Result<Socket<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match client_async_with_config(request, transport, config).await {
        Ok((socket, _response)) => Ok(socket),
        Err(ProtocolError::Http(response)) => {
            let status = response.status().as_u16();
            let error = ProtocolError::Http(response);
            Err(failed(ConnectFailure::Status(status), Cause::new(error)))
        }
        Err(ProtocolError::Io(io)) => Err(failed(ConnectFailure::Connect, Cause::new(io))),
        Err(other) => Err(failed(ConnectFailure::Handshake, Cause::new(other))),
    }
}
