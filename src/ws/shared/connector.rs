//! How a shared connection opens its transport: TCP by default, anything else (a simulated
//! network in tests) through the [`Connector`] trait.

use std::io;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Opens the byte stream a shared connection's WebSocket runs over. The default,
/// [`TcpConnector`], opens a TCP connection; a test can hand the connection a simulated stream
/// instead (turmoil's, an in-memory duplex).
///
/// ```
/// use livecache::ws::shared::Connector;
/// /// Connects to one fixed address, whatever the URL says.
/// struct Fixed(std::net::SocketAddr);
/// impl Connector for Fixed {
///     type Stream = tokio::net::TcpStream;
///     fn connect(&self, _host: &str, _port: u16) -> futures::future::BoxFuture<'static, std::io::Result<Self::Stream>> {
///         let addr = self.0;
///         Box::pin(async move { tokio::net::TcpStream::connect(addr).await })
///     }
/// }
/// ```
pub trait Connector: Send + Sync + 'static {
    /// The byte stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Open a stream to `host:port` (the URL's).
    fn connect(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Self::Stream>>;
}

/// Opens a TCP connection.
///
/// ```
/// use livecache::ws::shared::{Connector, TcpConnector};
/// let _connecting = TcpConnector.connect("127.0.0.1", 9);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Stream = TcpStream;

    fn connect(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<TcpStream>> {
        let host = host.to_owned();
        Box::pin(async move { TcpStream::connect((host.as_str(), port)).await })
    }
}
