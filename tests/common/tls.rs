//! A TLS front for the loopback test servers: it terminates TLS with a self-signed certificate
//! for `127.0.0.1` and passes the bytes to a plain server behind it, so every HTTP and
//! WebSocket server of the tests can be reached as `https://` and `wss://` too.

use std::net::SocketAddr;
use std::sync::Arc;

use livecache::tls::rustls;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A TLS listener in front of `backend`, with the client configuration that trusts it.
pub struct TlsFront {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Trusts the front's certificate, and nothing else.
    pub trusted: Arc<rustls::ClientConfig>,
    serving: tokio::task::JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsFront {
    /// Listen on a loopback port; each connection's TLS is terminated and its bytes copied to and
    /// from a new connection to `backend`.
    pub async fn start(backend: SocketAddr) -> TlsFront {
        let issued = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("a self-signed certificate");
        let cert: CertificateDer<'static> = issued.cert.der().clone();
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.signing_key.serialize_der()));
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("the certificate and its key");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("a DER certificate");
        let trusted = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("a bound listener");
        let serving = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront {
            addr,
            trusted: Arc::new(trusted),
            serving,
        }
    }
}
